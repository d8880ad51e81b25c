//! The dashboard's event loop: one bounded feed channel in, a frame every
//! [`FRAME`], keys (q or Ctrl-C quit, p pause, w window, tab focus), and a terminal
//! that is restored on every way out (a guard on return and unwind, ratatui's panic hook
//! on panic).

use crate::model::{DashState, Feed, Meta};
use crate::ui;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

/// Time between frames.
pub const FRAME: Duration = Duration::from_millis(100);
/// Feed messages buffered between two frames before samples are dropped from the view.
pub const FEED_CAPACITY: usize = 65_536;

/// The producer side of the feed. Sending never blocks the caller's hot path: a full
/// channel drops the message and counts it.
#[derive(Debug, Clone)]
pub struct FeedSender {
    tx: SyncSender<Feed>,
    dropped: Arc<AtomicU64>,
}

impl FeedSender {
    /// Offers a message; drops (and counts) it when the view is behind or gone.
    pub fn offer(&self, feed: Feed) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(feed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends a message that must arrive (the verdict), waiting for room; returns at once
    /// if the dashboard is gone.
    pub fn deliver(&self, feed: Feed) {
        let _ = self.tx.send(feed);
    }
}

/// The dashboard's side of the feed.
#[derive(Debug)]
pub struct FeedReceiver {
    rx: Receiver<Feed>,
    dropped: Arc<AtomicU64>,
}

impl FeedReceiver {
    /// Applies every waiting message to `state`; false once every sender is gone.
    pub fn drain_into(&self, state: &mut DashState) -> bool {
        let alive = loop {
            match self.rx.try_recv() {
                Ok(f) => state.apply(f),
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        state.dropped = self.dropped.load(Ordering::Relaxed);
        alive
    }
}

/// A bounded feed.
pub fn feed_channel() -> (FeedSender, FeedReceiver) {
    let (tx, rx) = sync_channel(FEED_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    (FeedSender { tx, dropped: Arc::clone(&dropped) }, FeedReceiver { rx, dropped })
}

/// Restores the terminal when dropped, however the loop ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Redraw,
}

/// Applies one key to the state.
pub fn on_key(state: &mut DashState, code: KeyCode, modifiers: KeyModifiers) -> Action {
    match code {
        KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return Action::Quit,
        KeyCode::Char('p') => state.paused = !state.paused,
        KeyCode::Char('w') => state.window = state.window.next(),
        KeyCode::Tab => state.focus = state.focus.next(),
        _ => {}
    }
    Action::Redraw
}

/// Runs the dashboard on this thread until the user quits. `quit` is set when they do, so
/// a run in progress can stop its load and write what it measured.
pub fn run_app(meta: Meta, feed: FeedReceiver, quit: &AtomicBool) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let mut state = DashState::new(meta);
    loop {
        feed.drain_into(&mut state);
        state.tick(probes::now_ns());
        terminal.draw(|f| ui::draw(f, &state))?;
        let next_frame = Instant::now() + FRAME;
        while let Some(left) = next_frame.checked_duration_since(Instant::now()) {
            if !event::poll(left)? {
                break;
            }
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    if on_key(&mut state, k.code, k.modifiers) == Action::Quit {
                        quit.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    break;
                }
                Event::Resize(..) => break,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Panel, Progress, WindowSize};

    #[test]
    fn keys_drive_the_view() {
        let mut st = DashState::new(Meta::default());
        assert_eq!(on_key(&mut st, KeyCode::Char('w'), KeyModifiers::NONE), Action::Redraw);
        assert_eq!(st.window, WindowSize::OneMinute);
        on_key(&mut st, KeyCode::Char('p'), KeyModifiers::NONE);
        assert!(st.paused);
        on_key(&mut st, KeyCode::Tab, KeyModifiers::NONE);
        assert_eq!(st.focus, Panel::Hops);
        assert_eq!(on_key(&mut st, KeyCode::Char('c'), KeyModifiers::CONTROL), Action::Quit);
        assert_eq!(on_key(&mut st, KeyCode::Char('q'), KeyModifiers::NONE), Action::Quit);
    }

    #[test]
    fn a_full_feed_drops_instead_of_blocking_and_says_so() {
        let (tx, rx) = feed_channel();
        for _ in 0..FEED_CAPACITY + 10 {
            tx.offer(Feed::Progress(Progress::default()));
        }
        let mut st = DashState::new(Meta::default());
        assert!(rx.drain_into(&mut st));
        assert_eq!(st.dropped, 10);
        drop(tx);
        assert!(!rx.drain_into(&mut st), "a closed feed is reported");
    }
}

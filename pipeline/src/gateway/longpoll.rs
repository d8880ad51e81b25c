//! HTTP long-poll for clients that cannot hold a stream open (behind proxies that buffer,
//! serverless callers, batch readers): the gateway keeps the last `retain` updates, each
//! numbered, and a client asks for those after its cursor.
//!
//! `GET /poll?cursor=N&wait=S&max=M` (firehose) and `GET /sessions/{id}/poll?...` answer
//! at once when updates after `cursor` are retained, else wait up to `wait` seconds
//! (default 25, at most 60) for one, then answer with none. The answer is JSON:
//! `{"cursor": C, "missed": K, "updates": [...]}`; the client passes `C` next time. No
//! cursor means "from now on". `missed` counts updates (of any session) that had already
//! left retention when the client asked: its gap marker, as `lagged N` is the stream's.
//! Memory is bounded by `retain` shared updates, however many clients poll.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The longest a poll waits, whatever it asks.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a poll waits when it does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(25);
/// Updates one answer carries at most, unless it asks for fewer.
pub const MAX_PAGE: usize = 1000;

/// The retained updates: `(number, session, update)`, oldest first.
#[derive(Debug)]
pub struct Backlog {
    retain: usize,
    items: Mutex<VecDeque<(u64, u64, Arc<str>)>>,
    /// The number the next update gets; waiting polls watch it.
    next: watch::Sender<u64>,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Where the next poll starts.
    pub cursor: u64,
    /// Updates that left retention before they were asked for.
    pub missed: u64,
    pub updates: Vec<Arc<str>>,
}

impl Page {
    /// The answer's JSON (the updates are JSON already).
    pub fn to_json(&self) -> String {
        let mut out = format!(r#"{{"cursor":{},"missed":{},"updates":["#, self.cursor, self.missed);
        for (i, u) in self.updates.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(u);
        }
        out.push_str("]}");
        out
    }
}

impl Backlog {
    /// Keeps the last `retain` updates (at least one).
    pub fn new(retain: usize) -> Self {
        Self { retain: retain.max(1), items: Mutex::default(), next: watch::Sender::new(0) }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, u64, Arc<str>)>> {
        self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Retains `data`, forgetting the oldest beyond `retain`, and wakes waiting polls.
    pub fn push(&self, session: u64, data: &Arc<str>) {
        let n = *self.next.borrow();
        {
            let mut items = self.items();
            if items.len() >= self.retain {
                items.pop_front();
            }
            items.push_back((n, session, Arc::clone(data)));
        }
        self.next.send_replace(n + 1);
    }

    /// What is retained after `cursor` (from now when `None`) for `session` (all when
    /// `None`), at most `max` updates.
    pub fn read(&self, cursor: Option<u64>, session: Option<u64>, max: usize) -> Page {
        let items = self.items();
        let end = items.back().map_or(*self.next.borrow(), |(n, _, _)| n + 1);
        let from = cursor.unwrap_or(end).min(end);
        let oldest = items.front().map_or(end, |(n, _, _)| *n);
        let missed = oldest.saturating_sub(from);
        let start = from.max(oldest);
        let mut page = Page { cursor: end, missed, updates: Vec::new() };
        for (n, s, data) in items.iter().skip((start - oldest) as usize) {
            if page.updates.len() >= max.max(1) {
                page.cursor = *n;
                break;
            }
            if session.is_none_or(|want| want == *s) {
                page.updates.push(Arc::clone(data));
            }
        }
        page
    }

    /// [`Self::read`], waiting up to `wait` (or `shutdown`) for an update when there is none.
    pub async fn poll(
        &self,
        cursor: Option<u64>,
        session: Option<u64>,
        max: usize,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Page {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        // Subscribed before reading, so an update pushed in between still wakes the poll.
        let mut arrived = self.next.subscribe();
        let mut cursor = cursor;
        loop {
            let page = self.read(cursor, session, max);
            if !page.updates.is_empty() || page.missed > 0 {
                return page;
            }
            // Nothing for this client up to `page.cursor`: wait for more from there.
            cursor = Some(page.cursor);
            tokio::select! {
                changed = arrived.changed() => if changed.is_err() { return page },
                () = tokio::time::sleep_until(deadline) => return page,
                () = shutdown.cancelled() => return page,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(b: &Backlog, sessions: &[u64]) {
        for s in sessions {
            b.push(*s, &Arc::from(format!(r#"{{"session":{s}}}"#)));
        }
    }

    #[test]
    fn a_cursor_reads_what_came_after_it_per_session_and_pages() {
        let b = Backlog::new(10);
        assert_eq!(b.read(None, None, 10), Page { cursor: 0, missed: 0, updates: vec![] });
        pushed(&b, &[1, 2, 1, 3]);
        let all = b.read(Some(0), None, 10);
        assert_eq!((all.cursor, all.missed, all.updates.len()), (4, 0, 4));
        let ones = b.read(Some(1), Some(1), 10);
        assert_eq!((ones.cursor, ones.updates.len()), (4, 1));
        assert_eq!(&*ones.updates[0], r#"{"session":1}"#);
        let page = b.read(Some(0), None, 3);
        assert_eq!((page.cursor, page.updates.len()), (3, 3), "a full page stops where the next begins");
        assert!(b.read(None, None, 10).updates.is_empty(), "no cursor: from now on");
        assert_eq!(b.read(Some(99), None, 10).cursor, 4, "a cursor from the future is clamped");
        assert_eq!(b.read(Some(0), Some(2), 10).to_json(), r#"{"cursor":4,"missed":0,"updates":[{"session":2}]}"#);
    }

    #[test]
    fn retention_is_bounded_and_a_cursor_behind_it_is_told_what_it_missed() {
        let b = Backlog::new(3);
        pushed(&b, &[1, 1, 1, 1, 1]);
        let page = b.read(Some(0), None, 10);
        assert_eq!((page.cursor, page.missed, page.updates.len()), (5, 2, 3));
        assert_eq!(b.items().len(), 3);
    }

    #[tokio::test]
    async fn a_poll_waits_for_its_sessions_update_and_times_out_empty() {
        let b = Arc::new(Backlog::new(10));
        let cancel = CancellationToken::new();
        let waiting = {
            let (b, cancel) = (Arc::clone(&b), cancel.clone());
            tokio::spawn(async move { b.poll(Some(0), Some(7), 10, Duration::from_secs(30), &cancel).await })
        };
        tokio::task::yield_now().await;
        pushed(&b, &[3]); // another session's: the poll keeps waiting
        pushed(&b, &[7]);
        let page = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
        assert_eq!((page.cursor, page.updates.len()), (2, 1));
        let empty = b.poll(Some(2), None, 10, Duration::from_millis(20), &cancel).await;
        assert_eq!((empty.cursor, empty.updates.len()), (2, 0));
    }
}

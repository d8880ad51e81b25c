//! Which event ids the gateway has pushed, per run, so a redelivered event is counted as a
//! duplicate and never pushed to a client twice.
//!
//! Memory is bounded whatever comes in: a window of bits per run, and at most
//! [`Seen::MAX_RUNS`] runs (the least recently seen is forgotten). One id far ahead of the
//! rest cannot move a run's window (which would make every later id look old): the window
//! follows only once [`Seen::CONFIRM`] ids have arrived out there.

use crate::event::StoryEvent;
use std::collections::{BTreeSet, HashMap};

/// The event ids pushed, per run (see the module's notes).
#[derive(Debug, Default)]
pub struct Seen {
    runs: HashMap<u64, IdWindow>,
    /// Increases with every insert: which run was seen last.
    clock: u64,
}

/// Ids `[end - WINDOW, end)` of one run, one bit each at `id % WINDOW`, and ids further
/// ahead than the window, kept apart until enough of them say the run has moved on.
#[derive(Debug)]
pub struct IdWindow {
    end: u64,
    bits: Vec<u64>,
    ahead: BTreeSet<u64>,
    last_seen: u64,
}

impl Seen {
    /// Ids one run remembers in order (512 KiB of bits).
    pub const WINDOW: u64 = 1 << 22;
    /// Runs remembered at once.
    pub const MAX_RUNS: usize = 8;
    /// Ids further ahead than the window that move it there.
    pub const CONFIRM: usize = 64;

    /// Records `event`; false when it was pushed before.
    pub fn insert(&mut self, event: &StoryEvent) -> bool {
        self.clock += 1;
        // One lookup per event for a run already known; the rest only when a run begins.
        if let Some(w) = self.runs.get_mut(&event.run) {
            w.last_seen = self.clock;
            return w.insert(event.id);
        }
        if self.runs.len() >= Self::MAX_RUNS {
            let oldest = self.runs.iter().min_by_key(|(_, w)| w.last_seen).map(|(run, _)| *run);
            if let Some(run) = oldest {
                self.runs.remove(&run);
            }
        }
        let w = self.runs.entry(event.run).or_insert_with(|| IdWindow::starting_at(event.id));
        w.last_seen = self.clock;
        w.insert(event.id)
    }

    /// Runs remembered now.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

impl IdWindow {
    fn starting_at(id: u64) -> Self {
        let bits = vec![0; (Seen::WINDOW / 64) as usize];
        Self { end: id, bits, ahead: BTreeSet::new(), last_seen: 0 }
    }

    fn insert(&mut self, id: u64) -> bool {
        if id.saturating_add(Seen::WINDOW) < self.end {
            return false; // older than the window: redelivered long after
        }
        if id >= self.end.saturating_add(Seen::WINDOW) {
            let fresh = self.ahead.insert(id);
            if self.ahead.len() >= Seen::CONFIRM {
                self.follow_ahead();
            }
            return fresh;
        }
        if id >= self.end {
            self.slide_to(id);
        }
        self.mark(id)
    }

    /// Moves the window to the ids that arrived ahead of it, keeping them.
    fn follow_ahead(&mut self) {
        let ahead = std::mem::take(&mut self.ahead);
        if let Some(&last) = ahead.last() {
            self.slide_to(last);
        }
        for id in ahead {
            if id.saturating_add(Seen::WINDOW) >= self.end {
                self.mark(id);
            }
        }
    }

    /// Moves the window's end past `id`, clearing the slots of the ids that leave it.
    fn slide_to(&mut self, id: u64) {
        let end = id.saturating_add(1);
        let from = self.end.max(end.saturating_sub(Seen::WINDOW));
        if end - from >= Seen::WINDOW {
            self.bits.fill(0);
        } else {
            for old in from..end {
                let slot = old % Seen::WINDOW;
                self.bits[(slot / 64) as usize] &= !(1 << (slot % 64));
            }
        }
        self.end = end;
    }

    /// Sets `id`'s bit; false when it was set.
    fn mark(&mut self, id: u64) -> bool {
        let slot = id % Seen::WINDOW;
        let (word, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(run: u64, id: u64) -> StoryEvent {
        StoryEvent { run, id, session: id % 3, action: String::new(), beat: None, window: None, enrichment: None }
    }

    #[test]
    fn one_huge_id_does_not_make_the_rest_of_the_run_duplicates() {
        let mut s = Seen::default();
        for id in 0..10 {
            assert!(s.insert(&e(1, id)));
        }
        assert!(s.insert(&e(1, 1 << 40)));
        for id in 10..1000 {
            assert!(s.insert(&e(1, id)), "id {id} is new");
        }
        assert!(!s.insert(&e(1, 1 << 40)), "the far id is remembered too");
        assert!(!s.insert(&e(1, 500)));
    }

    #[test]
    fn a_run_that_really_moves_on_is_followed() {
        let mut s = Seen::default();
        assert!(s.insert(&e(1, 0)));
        let far = 100 * Seen::WINDOW;
        for id in far..far + Seen::CONFIRM as u64 + 10 {
            assert!(s.insert(&e(1, id)));
        }
        assert!(!s.insert(&e(1, far + 3)), "remembered across the move");
        assert!(!s.insert(&e(1, 0)), "now older than the window");
    }

    #[test]
    fn ids_at_the_top_of_the_range_neither_overflow_nor_repeat() {
        let mut s = Seen::default();
        for id in [u64::MAX - 1, u64::MAX, u64::MAX - 2] {
            assert!(s.insert(&e(1, id)), "{id}");
        }
        assert!(!s.insert(&e(1, u64::MAX)));
        assert!(!s.insert(&e(1, u64::MAX - 1)));
    }

    #[test]
    fn memory_stays_bounded_however_many_runs_arrive() {
        let mut s = Seen::default();
        assert!(s.insert(&e(7, 1)));
        for run in 1000..3000 {
            assert!(s.insert(&e(run, 1)));
            if run % 3 == 0 {
                assert!(!s.insert(&e(7, 1)), "a run in use stays remembered");
            }
        }
        assert_eq!(s.runs(), Seen::MAX_RUNS);
    }

    #[test]
    fn a_gateway_that_joins_a_run_late_starts_its_window_there() {
        let mut s = Seen::default();
        let first = 10 * Seen::WINDOW;
        assert!(s.insert(&e(1, first)));
        assert!(s.insert(&e(1, first + 1)));
        assert!(!s.insert(&e(1, first)));
    }
}

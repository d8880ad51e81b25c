//! Which event ids the gateway has pushed, per run, so a redelivered event is counted as a
//! duplicate and never pushed to a client twice.

use crate::event::StoryEvent;

/// The event ids pushed, per run: a window of the last [`Seen::WINDOW`] ids as a ring of
/// bits, so memory is bounded (512 KiB per run) whatever the run's length. Event ids are
/// unique within a run but need not arrive in order (HTTP ingress, several connector
/// tasks), so this is exact within the window; an id older than the window is taken as a
/// redelivery.
#[derive(Debug, Default)]
pub struct Seen(std::collections::HashMap<u64, IdWindow>);

/// Ids `[end - WINDOW, end)` of one run, one bit each at `id % WINDOW`.
#[derive(Debug)]
pub struct IdWindow {
    end: u64,
    bits: Vec<u64>,
}

impl Seen {
    /// Ids one run remembers.
    pub const WINDOW: u64 = 1 << 22;

    /// Records `event`; false when it was pushed before.
    pub fn insert(&mut self, event: &StoryEvent) -> bool {
        let w =
            self.0.entry(event.run).or_insert_with(|| IdWindow { end: 0, bits: vec![0; (Self::WINDOW / 64) as usize] });
        let id = event.id;
        if id + Self::WINDOW < w.end {
            return false; // older than the window: redelivered long after
        }
        if id >= w.end {
            // Slide: the slots of ids leaving the window are reused, so clear them.
            let from = w.end.max((id + 1).saturating_sub(Self::WINDOW));
            if id + 1 - from >= Self::WINDOW {
                w.bits.fill(0);
            } else {
                for old in from..=id {
                    let slot = old % Self::WINDOW;
                    w.bits[(slot / 64) as usize] &= !(1 << (slot % 64));
                }
            }
            w.end = id + 1;
        }
        let slot = id % Self::WINDOW;
        let (word, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
        let fresh = w.bits[word] & bit == 0;
        w.bits[word] |= bit;
        fresh
    }
}

//! Patterns (CEP-like), given as data: "`times` actions (whose text contains `contains`,
//! if given) within `within` in one session" emits the pattern's signal. Matches do not
//! overlap: after one, counting starts afresh.

use super::{Decision, Key, StreamJob};

impl StreamJob {
    pub(super) fn match_patterns(
        &mut self,
        key: Key,
        id: u64,
        action: &str,
        event_ms: u64,
        decisions: &mut Vec<Decision>,
    ) {
        for (i, p) in self.patterns.iter().enumerate() {
            if p.contains.as_deref().is_some_and(|c| !action.contains(c)) {
                continue;
            }
            let within = p.within.as_millis() as u64;
            let seen = self.progress.entry((key, i)).or_default();
            // Out-of-order arrivals are kept in event-time order (usually the back).
            let at = seen.partition_point(|&e| e <= (event_ms, id));
            seen.insert(at, (event_ms, id));
            while seen.back().zip(seen.front()).is_some_and(|(last, first)| last.0 - first.0 > within) {
                seen.pop_front();
            }
            if seen.len() >= p.times as usize {
                let matched: Vec<(u64, u64)> = seen.drain(..).collect();
                if let Ok(mut s) = self.stats.signals.lock() {
                    *s.entry(p.name.clone()).or_default() += 1;
                }
                decisions.push(Decision::Matched {
                    key,
                    pattern: p.name.clone(),
                    ids: matched.iter().map(|m| m.1).collect(),
                    first_ms: matched[0].0,
                    last_ms: matched[matched.len() - 1].0,
                });
            }
        }
        // Progress older than every pattern's span can no longer match.
        if self.progress.len() > 100_000 {
            let horizon = self
                .watermark_ms()
                .saturating_sub(self.patterns.iter().map(|p| p.within.as_millis() as u64).max().unwrap_or(0));
            self.progress.retain(|_, seen| seen.back().is_some_and(|last| last.0 >= horizon));
        }
    }
}

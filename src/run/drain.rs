//! The drain phase and the accounting. After the last send the run waits, up to the
//! scenario's `drain`, until every event sent is delivered or settled (dead-lettered or
//! filtered on purpose); then it counts each term.
//!
//! Live dead-letter counts include records a stage sent but never got out (one stopped
//! abruptly, say): once they alone would end the drain, the dead-letter topic is asked,
//! and from then on only what it holds counts. External stages whose `/metrics` the run
//! does not read dead-letter unseen, so for them the topic is read once a second.

use pipeline::KafkaSettings;
use std::time::{Duration, Instant};

/// What the drain sees at one look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Look {
    pub sent: u64,
    /// Delivered to the audience, and (HTTP source) refused by the gateway for good.
    pub delivered: u64,
    /// Dead-lettered, as the stages count it.
    pub dead_lettered_live: u64,
    /// Dead-lettered, as the topic holds it (last audit).
    pub audited: u64,
    pub filtered: u64,
}

/// What the drain does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Events are still in flight.
    Wait,
    /// Every event is delivered or settled.
    Done,
    /// The live counts say done: ask the topic before believing them.
    Confirm,
}

/// The drain rule: with `trust_live`, the stages' own dead-letter counts settle events
/// (or the topic's, if it holds more); without, only the topic's.
pub(super) fn next(look: &Look, trust_live: bool) -> Next {
    let audited = look.audited + look.filtered;
    let settled = if trust_live { (look.dead_lettered_live + look.filtered).max(audited) } else { audited };
    if look.delivered + settled < look.sent {
        Next::Wait
    } else if !trust_live || look.dead_lettered_live == 0 {
        Next::Done
    } else {
        Next::Confirm
    }
}

/// Waits until [`next`] says done, `until` passes, or `failed()` says a stage failed.
/// `look()` gives the live figures (its `audited` is filled in here).
pub(super) async fn drain(
    kafka: &KafkaSettings,
    (run, since): (u64, &std::collections::HashMap<i32, i64>),
    external: bool,
    until: Instant,
    look: impl Fn() -> Look,
    failed: impl Fn() -> bool,
) {
    let audit = || pipeline::runtime::audit_dead_letters(kafka, run, since, Duration::from_secs(5));
    let (mut audited, mut next_audit, mut trust_live) = (0, Instant::now(), true);
    while !failed() && Instant::now() < until {
        if (external || !trust_live) && Instant::now() >= next_audit {
            if let Ok(a) = audit().await {
                audited = a.ids.len() as u64;
            }
            next_audit = Instant::now() + Duration::from_secs(1);
        }
        let now = Look { audited, ..look() };
        match next(&now, trust_live) {
            Next::Wait => {}
            Next::Done => return,
            Next::Confirm => {
                match audit().await {
                    Ok(a) => {
                        let confirmed = Look { audited: a.ids.len() as u64, ..now };
                        if next(&confirmed, false) == Next::Done {
                            return;
                        }
                        (audited, trust_live) = (confirmed.audited, false);
                    }
                    Err(_) => return, // the final audit says what it can
                }
                next_audit = Instant::now() + Duration::from_secs(1);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The run's accounting: `sent = delivered + dead_lettered + filtered + lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Accounting {
    pub dead_lettered: u64,
    pub filtered: u64,
    pub lost: u64,
}

/// Counts each term: dead letters are the run's events the topic holds that the audience
/// never got (`in_topic` of them, `delivered_too` of which it did get). Terms that add up
/// to more than was sent are an accounting error, with the terms, never a `lost` of zero.
pub(super) fn account(
    sent: u64,
    delivered: u64,
    in_topic: u64,
    delivered_too: u64,
    filtered: u64,
) -> Result<Accounting, String> {
    let dead_lettered = in_topic - delivered_too.min(in_topic);
    let settled = delivered + dead_lettered + filtered;
    match sent.checked_sub(settled) {
        Some(lost) => Ok(Accounting { dead_lettered, filtered, lost }),
        None => Err(format!(
            "the accounting does not add up: delivered {delivered} + dead-lettered {dead_lettered} + filtered \
             {filtered} = {settled}, {} more than the {sent} sent",
            settled - sent
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(sent: u64, delivered: u64, dead_lettered_live: u64, audited: u64, filtered: u64) -> Look {
        Look { sent, delivered, dead_lettered_live, audited, filtered }
    }

    #[test]
    fn events_in_flight_keep_the_drain_waiting() {
        assert_eq!(next(&look(100, 90, 5, 0, 4), true), Next::Wait);
        assert_eq!(next(&look(100, 99, 0, 0, 0), true), Next::Wait);
    }

    #[test]
    fn everything_delivered_or_filtered_ends_it_at_once() {
        assert_eq!(next(&look(100, 96, 0, 0, 4), true), Next::Done);
    }

    #[test]
    fn live_dead_letters_are_confirmed_by_the_topic_before_they_end_it() {
        assert_eq!(next(&look(100, 95, 5, 0, 0), true), Next::Confirm);
        // The topic holds only three: without trusting the live count, two are in flight.
        assert_eq!(next(&look(100, 95, 5, 3, 0), false), Next::Wait);
        assert_eq!(next(&look(100, 95, 5, 5, 0), false), Next::Done);
    }

    #[test]
    fn the_topic_settles_what_the_live_counts_miss() {
        // External stages' dead letters show only in the topic.
        assert_eq!(next(&look(100, 97, 0, 3, 0), true), Next::Done);
    }

    #[test]
    fn every_event_sent_is_delivered_dead_lettered_filtered_or_lost() {
        let a = account(100, 90, 6, 1, 2).unwrap();
        assert_eq!(a, Accounting { dead_lettered: 5, filtered: 2, lost: 3 });
        assert_eq!(90 + a.dead_lettered + a.filtered + a.lost, 100);
        assert_eq!(account(10, 10, 0, 0, 0).unwrap().lost, 0);
    }

    #[test]
    fn terms_that_add_up_to_more_than_was_sent_are_an_error_not_a_zero() {
        let e = account(100, 98, 3, 0, 1).unwrap_err();
        assert!(e.contains("delivered 98 + dead-lettered 3 + filtered 1 = 102, 2 more than the 100 sent"), "{e}");
    }
}

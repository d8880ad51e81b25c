//! What each decision of the stream job writes: its audit record on `story.audit`, and the
//! signal or the late event's copy on the side outputs.

use super::Decision;
use crate::runtime::SideRecord;
use crate::topics;

impl Decision {
    /// The side-output records of this decision: its audit record, and the signal or the
    /// late event's copy.
    pub fn records(&self) -> Vec<SideRecord> {
        let (key, audit) = match self {
            Self::Fired { key, start_ms, end_ms, count } => (
                *key,
                serde_json::json!({
                    "run": key.0, "session": key.1, "decision": "window_fired",
                    "start_ms": start_ms, "end_ms": end_ms, "count": count,
                }),
            ),
            Self::Late { key, id, event_ms, watermark_ms } => (
                *key,
                serde_json::json!({
                    "run": key.0, "session": key.1, "decision": "late", "id": id,
                    "event_ms": event_ms, "watermark_ms": watermark_ms,
                }),
            ),
            Self::Matched { key, pattern, ids, first_ms, last_ms } => (
                *key,
                serde_json::json!({
                    "run": key.0, "session": key.1, "decision": "pattern", "pattern": pattern, "ids": ids,
                    "first_ms": first_ms, "last_ms": last_ms,
                }),
            ),
            Self::RuleApplied { rule, applied_ns } => {
                let audit = serde_json::json!({
                    "decision": "rule_applied", "rule": rule, "applied_ns": applied_ns,
                    "delay_ms": applied_ns.saturating_sub(rule.published_ns) as f64 / 1e6,
                });
                let value = audit.to_string().into_bytes();
                return vec![SideRecord {
                    topic: topics::AUDIT,
                    key: rule.name.clone().into_bytes(),
                    value,
                    partition: None,
                }];
            }
        };
        let k = crate::event::session_key(key.1).to_vec();
        let audit = audit.to_string().into_bytes();
        let mut out = vec![SideRecord { topic: topics::AUDIT, key: k.clone(), value: audit.clone(), partition: None }];
        match self {
            Self::Late { .. } => out.push(SideRecord { topic: topics::LATE, key: k, value: audit, partition: None }),
            Self::Matched { pattern, last_ms, ids, .. } => {
                let signal = serde_json::json!({
                    "run": key.0, "session": key.1, "signal": pattern, "at_ms": last_ms, "ids": ids,
                });
                let value = signal.to_string().into_bytes();
                out.push(SideRecord { topic: topics::SIGNALS, key: k, value, partition: None });
            }
            Self::Fired { .. } | Self::RuleApplied { .. } => {}
        }
        out
    }
}

//! The source table `story_actions`: the contract between whoever writes story actions
//! (the load generator's players, into SQLite or PostgreSQL) and the connector that
//! captures them. It sits beside [`crate::event`] rather than in the connector because the
//! PostgreSQL I/O and the players use it too, and they must not depend on a stage.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The source table.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS story_actions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run         INTEGER NOT NULL,
    event_id    INTEGER NOT NULL,
    session     INTEGER NOT NULL,
    intended_ns INTEGER NOT NULL,
    traceparent TEXT    NOT NULL,
    action      TEXT    NOT NULL
);
";

/// One story action as the players write it (borrowing their text) and as the connector
/// captures it (owning it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRow<'a> {
    pub run: u64,
    pub event_id: u64,
    pub session: u64,
    pub intended_ns: u64,
    pub traceparent: Cow<'a, str>,
    pub action: Cow<'a, str>,
}

/// The source table's columns a writer fills, in the order writers bind them.
pub const ACTION_COLUMNS: &str = "run, event_id, session, intended_ns, traceparent, action";

/// A captured row, owned.
pub type CapturedRow = ActionRow<'static>;

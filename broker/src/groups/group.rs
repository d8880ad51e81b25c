//! One group's state machine: its members, generation, leader and protocol, and the
//! transitions between Empty, PreparingRebalance, CompletingRebalance and Stable that
//! joins, leaves and expiries drive. [`super::Coordinator`] holds one per group id.

use super::{Committed, Joined, State, Synced};
use bytes::Bytes;
use kafka_protocol::ResponseError as E;
use std::collections::{BTreeMap, HashMap};
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Member {
    pub(super) id: String,
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) last_seen: Instant,
    pub(super) join: Option<oneshot::Sender<Joined>>,
    pub(super) sync: Option<oneshot::Sender<Synced>>,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) state: State,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: Vec<Member>,
    /// When the join phase ends for members that have not rejoined.
    pub(super) deadline: Option<Instant>,
    /// The initial rebalance delay of a group that was empty.
    pub(super) delay_until: Option<Instant>,
    pub(super) offsets: BTreeMap<(String, i32), Committed>,
}

impl Group {
    pub(super) fn new() -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            deadline: None,
            delay_until: None,
            offsets: BTreeMap::new(),
        }
    }

    pub(super) fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// The protocols every member supports, in `first`'s order of preference.
    pub(super) fn common_protocols<'a>(&'a self, first: &'a [(String, Bytes)]) -> Vec<&'a str> {
        first
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| self.members.iter().all(|m| m.protocols.iter().any(|(q, _)| q == p)))
            .collect()
    }

    pub(super) fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == State::Empty && !initial_delay.is_zero() {
            self.delay_until = Some(now + initial_delay);
        }
        self.state = State::PreparingRebalance;
        let timeout = self.members.iter().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        self.deadline = Some(now + timeout);
        for m in &mut self.members {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(Synced::error(E::RebalanceInProgress.code()));
            }
        }
    }

    pub(super) fn maybe_complete_join(&mut self, now: Instant) {
        let delayed = self.delay_until.is_some_and(|d| now < d);
        if self.state == State::PreparingRebalance && !delayed && self.members.iter().all(|m| m.join.is_some()) {
            self.complete_join(now);
        }
    }

    pub(super) fn complete_join(&mut self, now: Instant) {
        self.deadline = None;
        self.delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        // Each member votes for its most preferred protocol that all support.
        let candidates = self.common_protocols(&self.members[0].protocols);
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in &self.members {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p.as_str())) {
                *votes.entry(p.as_str()).or_default() += 1;
            }
        }
        let best = candidates.iter().map(|p| votes.get(p).copied().unwrap_or(0)).max().unwrap_or(0);
        let chosen = candidates.iter().find(|p| votes.get(**p).copied().unwrap_or(0) == best).map(|p| (*p).to_owned());
        self.protocol = chosen;
        if !self.leader.as_ref().is_some_and(|l| self.members.iter().any(|m| &m.id == l)) {
            self.leader = Some(self.members[0].id.clone());
        }
        self.state = State::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|m| {
                let meta = m.protocols.iter().find(|(p, _)| *p == protocol).map(|(_, b)| b.clone()).unwrap_or_default();
                (m.id.clone(), m.instance_id.clone(), meta)
            })
            .collect();
        for m in &mut self.members {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.join.take() {
                let _ = tx.send(Joined {
                    error: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader { all.clone() } else { Vec::new() },
                });
            }
        }
    }

    pub(super) fn remove(&mut self, id: &str) -> bool {
        let Some(i) = self.members.iter().position(|m| m.id == id) else { return false };
        let m = self.members.remove(i);
        if let Some(tx) = m.join {
            let _ = tx.send(Joined::error(E::UnknownMemberId.code(), id));
        }
        if let Some(tx) = m.sync {
            let _ = tx.send(Synced::error(E::UnknownMemberId.code()));
        }
        true
    }

    /// After members left or expired: rebalance the rest, or end the generation.
    pub(super) fn after_removal(&mut self, now: Instant) {
        if self.members.is_empty() {
            if self.state != State::Empty {
                self.complete_join(now);
            }
        } else {
            if self.state != State::PreparingRebalance {
                self.prepare_rebalance(now, Duration::ZERO);
            }
            self.maybe_complete_join(now);
        }
    }
}

//! The group coordinator, classic protocol: Kafka's group state machine (Empty,
//! PreparingRebalance, CompletingRebalance, Stable) with generations, a join phase that
//! waits for every known member (or the rebalance timeout), a sync phase that hands out the
//! leader's assignment, heartbeats that tell members to rejoin, and expiry of members whose
//! session timed out. Committed offsets belong to the group, not to its members, so they
//! survive every membership change.
//!
//! Joins and syncs park on a oneshot channel; the coordinator's lock is never held across
//! an await. [`Coordinator::tick`] runs the timers (session expiry, rebalance deadline).

mod group;

use bytes::Bytes;
use group::{Group, Member};
use kafka_protocol::ResponseError as E;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

/// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`, Kafka's defaults.
pub const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<i32> = 6_000..=1_800_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// The name DescribeGroups and ListGroups give.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// What a JoinGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol: for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl Joined {
    fn error(code: i16, member_id: &str) -> Self {
        Self { error: code, generation: -1, member_id: member_id.to_owned(), ..Self::default() }
    }
}

/// What a SyncGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl Synced {
    fn error(code: i16) -> Self {
        Self { error: code, ..Self::default() }
    }
}

/// A JoinGroup request's content.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

/// Committed offsets by topic: `(topic, [(partition, offset if any)])`.
pub type CommittedByTopic = Vec<(String, Vec<(i32, Option<Committed>)>)>;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Every group of the broker.
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicU64,
    initial_delay: Duration,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct Described {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// `(member id, instance id, client id, client host, metadata, assignment)`.
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

impl Coordinator {
    /// A coordinator whose empty groups wait `initial_delay` for more members before
    /// their first generation (Kafka's `group.initial.rebalance.delay.ms`).
    pub fn new(initial_delay: Duration) -> Self {
        Self { groups: Mutex::new(HashMap::new()), next_member: AtomicU64::new(1), initial_delay }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// JoinGroup: answered when the join phase completes (or at once on an error).
    pub async fn join(&self, r: JoinRequest) -> Joined {
        let rx = match self.start_join(r) {
            Ok(rx) => rx,
            Err(done) => return *done,
        };
        rx.await.unwrap_or_else(|_| Joined::error(E::UnknownMemberId.code(), ""))
    }

    fn start_join(&self, r: JoinRequest) -> Result<oneshot::Receiver<Joined>, Box<Joined>> {
        if !SESSION_TIMEOUT_MS.contains(&r.session_timeout_ms) {
            return Err(Box::new(Joined::error(E::InvalidSessionTimeout.code(), &r.member_id)));
        }
        if r.protocol_type.is_empty() || r.protocols.is_empty() {
            return Err(Box::new(Joined::error(E::InconsistentGroupProtocol.code(), &r.member_id)));
        }
        let now = Instant::now();
        let mut groups = self.lock();
        let g = groups.entry(r.group.clone()).or_insert_with(Group::new);
        if !g.members.is_empty()
            && (g.protocol_type.as_deref() != Some(r.protocol_type.as_str())
                || g.common_protocols(&r.protocols).is_empty())
        {
            return Err(Box::new(Joined::error(E::InconsistentGroupProtocol.code(), &r.member_id)));
        }
        let (tx, rx) = oneshot::channel();
        let rebalance_timeout =
            Duration::from_millis(u64::try_from(r.rebalance_timeout_ms.max(r.session_timeout_ms)).unwrap_or(0));
        let session_timeout = Duration::from_millis(u64::try_from(r.session_timeout_ms).unwrap_or(0));
        let id = if r.member_id.is_empty() {
            let n = self.next_member.fetch_add(1, Ordering::Relaxed);
            let id = format!("{}-{n:08x}", if r.client_id.is_empty() { "member" } else { &r.client_id });
            g.members.push(Member {
                id: id.clone(),
                instance_id: r.instance_id.clone(),
                client_id: r.client_id.clone(),
                client_host: r.client_host.clone(),
                session_timeout,
                rebalance_timeout,
                protocols: r.protocols.clone(),
                assignment: Bytes::new(),
                last_seen: now,
                join: None,
                sync: None,
            });
            id
        } else {
            r.member_id.clone()
        };
        g.protocol_type = Some(r.protocol_type.clone());
        let (state, generation, leader, protocol) = (g.state, g.generation, g.leader.clone(), g.protocol.clone());
        let protocol_type = g.protocol_type.clone();
        let Some(m) = g.member(&id) else {
            return Err(Box::new(Joined::error(E::UnknownMemberId.code(), &id)));
        };
        let unchanged = m.protocols == r.protocols;
        m.protocols = r.protocols;
        m.session_timeout = session_timeout;
        m.rebalance_timeout = rebalance_timeout;
        m.last_seen = now;
        let known_follower = !r.member_id.is_empty() && unchanged && leader.as_deref() != Some(id.as_str());
        if state == State::Stable && known_follower {
            // Nothing changed for a follower: it gets the current generation back.
            return Err(Box::new(Joined {
                error: 0,
                generation,
                protocol_type,
                protocol,
                leader: leader.unwrap_or_default(),
                member_id: id,
                members: Vec::new(),
            }));
        }
        if let Some(old) = m.join.replace(tx) {
            let _ = old.send(Joined::error(E::UnknownMemberId.code(), &id));
        }
        if state != State::PreparingRebalance {
            g.prepare_rebalance(now, self.initial_delay);
        }
        g.maybe_complete_join(now);
        Ok(rx)
    }

    /// SyncGroup: the leader's assignments go to every member; followers wait for them.
    pub async fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Synced {
        let rx = {
            let now = Instant::now();
            let mut groups = self.lock();
            let Some(g) = groups.get_mut(group) else { return Synced::error(E::UnknownMemberId.code()) };
            if protocol_type.is_some_and(|p| g.protocol_type.as_deref() != Some(p))
                || protocol.is_some_and(|p| g.protocol.as_deref() != Some(p))
            {
                return Synced::error(E::InconsistentGroupProtocol.code());
            }
            let (state, current, is_leader) = (g.state, g.generation, g.leader.as_deref() == Some(member_id));
            let (ptype, proto) = (g.protocol_type.clone(), g.protocol.clone());
            let Some(m) = g.member(member_id) else { return Synced::error(E::UnknownMemberId.code()) };
            if generation != current {
                return Synced::error(E::IllegalGeneration.code());
            }
            m.last_seen = now;
            match state {
                State::Empty => return Synced::error(E::UnknownMemberId.code()),
                State::PreparingRebalance => return Synced::error(E::RebalanceInProgress.code()),
                State::Stable => {
                    return Synced {
                        error: 0,
                        protocol_type: ptype,
                        protocol: proto,
                        assignment: m.assignment.clone(),
                    };
                }
                State::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            m.sync = Some(tx);
            if is_leader {
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                g.state = State::Stable;
                for m in &mut g.members {
                    m.assignment = given.remove(&m.id).unwrap_or_default();
                    if let Some(tx) = m.sync.take() {
                        let _ = tx.send(Synced {
                            error: 0,
                            protocol_type: ptype.clone(),
                            protocol: proto.clone(),
                            assignment: m.assignment.clone(),
                        });
                    }
                }
            }
            rx
        };
        rx.await.unwrap_or_else(|_| Synced::error(E::RebalanceInProgress.code()))
    }

    /// Heartbeat: keeps the member's session, and tells it when to rejoin.
    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else { return E::UnknownMemberId.code() };
        let (state, current) = (g.state, g.generation);
        let Some(m) = g.member(member_id) else { return E::UnknownMemberId.code() };
        m.last_seen = Instant::now();
        if generation != current {
            return E::IllegalGeneration.code();
        }
        if state == State::PreparingRebalance { E::RebalanceInProgress.code() } else { 0 }
    }

    /// LeaveGroup for each member named: its error code (0 when it left).
    pub fn leave(&self, group: &str, members: &[String]) -> Vec<i16> {
        let now = Instant::now();
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else { return vec![E::UnknownMemberId.code(); members.len()] };
        let codes: Vec<i16> = members.iter().map(|m| if g.remove(m) { 0 } else { E::UnknownMemberId.code() }).collect();
        if codes.contains(&0) {
            g.after_removal(now);
        }
        codes
    }

    /// OffsetCommit: the error code for the whole request (offsets are all or none).
    pub fn commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: Vec<((String, i32), Committed)>,
    ) -> i16 {
        let mut groups = self.lock();
        let g = groups.entry(group.to_owned()).or_insert_with(Group::new);
        let simple = generation < 0 && member_id.is_empty() && g.state == State::Empty;
        if !simple {
            let (state, current) = (g.state, g.generation);
            let Some(m) = g.member(member_id) else { return E::UnknownMemberId.code() };
            if generation != current {
                return E::IllegalGeneration.code();
            }
            if state == State::CompletingRebalance {
                return E::RebalanceInProgress.code();
            }
            m.last_seen = Instant::now();
        }
        g.offsets.extend(offsets);
        0
    }

    /// OffsetFetch: the committed offset of each partition asked for, or of every partition
    /// the group committed when `wanted` is `None`.
    pub fn committed(&self, group: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> CommittedByTopic {
        let groups = self.lock();
        let offsets = groups.get(group).map(|g| &g.offsets);
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(t, ps)| {
                    let found =
                        ps.into_iter().map(|p| (p, offsets.and_then(|o| o.get(&(t.clone(), p)).cloned()))).collect();
                    (t, found)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
                for ((t, p), c) in offsets.into_iter().flatten() {
                    by_topic.entry(t.clone()).or_default().push((*p, Some(c.clone())));
                }
                by_topic.into_iter().collect()
            }
        }
    }

    /// Drops committed offsets of a deleted topic.
    pub fn forget_topic(&self, topic: &str) {
        for g in self.lock().values_mut() {
            g.offsets.retain(|(t, _), _| t != topic);
        }
    }

    /// DescribeGroups of one group; `None` when it does not exist.
    pub fn describe(&self, group: &str) -> Option<Described> {
        let groups = self.lock();
        let g = groups.get(group)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(Described {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|m| {
                    let meta =
                        m.protocols.iter().find(|(p, _)| *p == protocol).map(|(_, b)| b.clone()).unwrap_or_default();
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        meta,
                        m.assignment.clone(),
                    )
                })
                .collect(),
        })
    }

    /// ListGroups: `(group, protocol type, state)`.
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.lock();
        let mut out: Vec<_> = groups
            .iter()
            .map(|(id, g)| (id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state.name()))
            .collect();
        out.sort();
        out
    }

    /// Runs the timers: members whose session expired leave; a join phase past its
    /// deadline completes without the members that did not rejoin.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for g in groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|m| m.join.is_none() && m.last_seen + m.session_timeout < now)
                .map(|m| m.id.clone())
                .collect();
            for id in &expired {
                g.remove(id);
            }
            if !expired.is_empty() {
                g.after_removal(now);
            }
            if g.state == State::PreparingRebalance && g.deadline.is_some_and(|d| now >= d) {
                let late: Vec<String> = g.members.iter().filter(|m| m.join.is_none()).map(|m| m.id.clone()).collect();
                for id in &late {
                    g.remove(id);
                }
                g.complete_join(now);
            } else {
                g.maybe_complete_join(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn join(group: &str, member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group: group.into(),
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| ((*p).to_owned(), Bytes::from_static(b"meta"))).collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_member_becomes_leader_of_generation_one_and_syncs_its_own_assignment() {
        let c = Coordinator::new(Duration::ZERO);
        let j = c.join(join("g", "", &["range"])).await;
        assert_eq!((j.error, j.generation, j.protocol.as_deref()), (0, 1, Some("range")));
        assert_eq!(j.leader, j.member_id);
        assert_eq!(j.members.len(), 1);
        let s = c.sync("g", 1, &j.member_id, None, None, vec![(j.member_id.clone(), Bytes::from_static(b"a"))]).await;
        assert_eq!((s.error, &s.assignment[..]), (0, &b"a"[..]));
        assert_eq!(c.heartbeat("g", 1, &j.member_id), 0);
        assert_eq!(c.describe("g").expect("exists").state, "Stable");
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_member_triggers_a_rebalance_that_waits_for_the_first_to_rejoin() {
        let c = Arc::new(Coordinator::new(Duration::ZERO));
        let a = c.join(join("g", "", &["range", "roundrobin"])).await;
        c.sync("g", 1, &a.member_id, None, None, vec![]).await;
        let c2 = c.clone();
        let b = tokio::spawn(async move { c2.join(join("g", "", &["roundrobin", "range"])).await });
        tokio::task::yield_now().await;
        // The first member learns of the rebalance from its heartbeat, then rejoins.
        assert_eq!(c.heartbeat("g", 1, &a.member_id), E::RebalanceInProgress.code());
        let a2 = c.join(join("g", &a.member_id, &["range", "roundrobin"])).await;
        let b = b.await.expect("joined");
        assert_eq!((a2.generation, b.generation), (2, 2));
        assert_eq!(a2.leader, a.member_id, "the leader stays the leader");
        assert_eq!((a2.members.len(), b.members.len()), (2, 0));
        // One vote each: the first candidate in the leader's order wins the tie.
        assert!(matches!(a2.protocol.as_deref(), Some("range" | "roundrobin")));
        // The follower waits for the leader's assignment.
        let c3 = c.clone();
        let bid = b.member_id.clone();
        let fs = tokio::spawn(async move { c3.sync("g", 2, &bid, None, None, vec![]).await });
        tokio::task::yield_now().await;
        let assignments =
            vec![(a.member_id.clone(), Bytes::from_static(b"0")), (b.member_id.clone(), Bytes::from_static(b"1"))];
        let ls = c.sync("g", 2, &a.member_id, None, None, assignments).await;
        assert_eq!(&ls.assignment[..], b"0");
        assert_eq!(&fs.await.expect("synced").assignment[..], b"1");
        // A stale generation is refused.
        assert_eq!(c.heartbeat("g", 1, &a.member_id), E::IllegalGeneration.code());
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_that_stops_heartbeating_expires_and_the_rest_rebalance() {
        let c = Arc::new(Coordinator::new(Duration::ZERO));
        let a = c.join(join("g", "", &["range"])).await;
        let c2 = c.clone();
        let b = tokio::spawn(async move { c2.join(join("g", "", &["range"])).await });
        tokio::task::yield_now().await;
        let a2 = c.join(join("g", &a.member_id, &["range"])).await;
        let b = b.await.expect("joined");
        let c3 = c.clone();
        let bid = b.member_id.clone();
        let fs = tokio::spawn(async move { c3.sync("g", 2, &bid, None, None, vec![]).await });
        tokio::task::yield_now().await;
        c.sync("g", 2, &a2.member_id, None, None, vec![]).await;
        fs.await.expect("synced");
        // b heartbeats; a goes silent past its 10 s session.
        for _ in 0..12 {
            tokio::time::advance(Duration::from_secs(1)).await;
            c.heartbeat("g", 2, &b.member_id);
            c.tick(Instant::now());
        }
        let d = c.describe("g").expect("exists");
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.state, "PreparingRebalance");
        assert_eq!(c.heartbeat("g", 2, &b.member_id), E::RebalanceInProgress.code());
        let b2 = c.join(join("g", &b.member_id, &["range"])).await;
        assert_eq!((b2.generation, b2.leader == b.member_id), (3, true));
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_outlive_the_members_that_committed_them() {
        let c = Coordinator::new(Duration::ZERO);
        let a = c.join(join("g", "", &["range"])).await;
        c.sync("g", 1, &a.member_id, None, None, vec![]).await;
        let at = |o| Committed { offset: o, leader_epoch: -1, metadata: None };
        assert_eq!(c.commit("g", 1, &a.member_id, vec![(("t".into(), 0), at(42))]), 0);
        assert_eq!(c.commit("g", 7, &a.member_id, vec![(("t".into(), 0), at(1))]), E::IllegalGeneration.code());
        assert_eq!(c.commit("g", 1, "nobody", vec![]), E::UnknownMemberId.code());
        assert_eq!(c.leave("g", std::slice::from_ref(&a.member_id)), vec![0]);
        assert_eq!(c.describe("g").expect("exists").state, "Empty");
        let got = c.committed("g", Some(vec![("t".into(), vec![0, 1])]));
        assert_eq!(got[0].1, vec![(0, Some(at(42))), (1, None)]);
        // An empty group accepts a simple (generation -1) commit.
        assert_eq!(c.commit("g", -1, "", vec![(("t".into(), 1), at(5))]), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn three_members_with_a_slow_one_complete_at_the_rebalance_deadline_without_it() {
        let c = Arc::new(Coordinator::new(Duration::ZERO));
        let a = c.join(join("g", "", &["range"])).await;
        c.sync("g", 1, &a.member_id, None, None, vec![]).await;
        let spawn_join = |member: String| {
            let c = c.clone();
            tokio::spawn(async move { c.join(join("g", &member, &["range"])).await })
        };
        let b = spawn_join(String::new());
        let d = spawn_join(String::new());
        tokio::task::yield_now().await;
        // a keeps heartbeating but never rejoins: at the rebalance timeout (30 s) the
        // others go on without it.
        for _ in 0..31 {
            tokio::time::advance(Duration::from_secs(1)).await;
            c.heartbeat("g", 1, &a.member_id);
            c.tick(Instant::now());
        }
        let (b, d) = (b.await.expect("joined"), d.await.expect("joined"));
        assert_eq!((b.generation, d.generation), (2, 2));
        assert_eq!(c.describe("g").expect("exists").members.len(), 2);
        assert_ne!(b.leader, a.member_id);
        assert!(b.leader == b.member_id || b.leader == d.member_id);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_joins_are_refused_with_their_codes() {
        let c = Coordinator::new(Duration::ZERO);
        let mut r = join("g", "", &["range"]);
        r.session_timeout_ms = 100;
        assert_eq!(c.join(r).await.error, E::InvalidSessionTimeout.code());
        assert_eq!(c.join(join("g", "ghost", &["range"])).await.error, E::UnknownMemberId.code());
        c.join(join("g", "", &["range"])).await;
        assert_eq!(c.join(join("g", "", &["sticky"])).await.error, E::InconsistentGroupProtocol.code());
    }
}

//! The stream job (Flink style). Event time is the load generator's intended send time; a
//! watermark trails the highest event time seen by a bounded out-of-orderness.
//!
//! - **Windows**: each session's actions are counted in event-time windows of `window`
//!   length starting every `slide` (tumbling when the two are equal, sliding when `slide`
//!   is shorter). Every beat goes on enriched with the count so far of the newest window it
//!   falls in. A window fires when the watermark passes its end: an event-time timer, as a
//!   `KeyedProcessFunction` registers one, emits its final count to `story.audit`.
//! - **Late events**: an event whose windows have all fired is late. It still goes on
//!   (marked late, counted in no window) and is copied to the side output `story.late`
//!   with its event time and the watermark it missed: never dropped, never silent.
//! - **Patterns** (CEP-like), given as data: "`times` actions (whose text contains
//!   `contains`, if given) within `within` in one session" emits the pattern's signal to
//!   `story.signals`. Matches do not overlap: after one, counting starts afresh.
//! - **Audit**: every decision (a window fired, an event was late, a pattern matched, a rule
//!   took effect) is one JSON record on `story.audit`, keyed by session (by rule name for
//!   rules).
//! - **Broadcast rules**: patterns also arrive on the compacted topic `story.rules` (keyed
//!   by name; a tombstone or `"enabled": false` removes one). Every instance reads the whole
//!   topic ([`follow_rules`]) and applies a change before its next event, without a
//!   restart; the moment a rule took effect is recorded beside the moment it was published.
//!
//! - **Async enrichment** ([`enrich`]): when configured, every beat then gets its
//!   session's profile from a database without blocking the stream; the stage runtime
//!   keeps up to the bound in flight and emits in order or as lookups complete.
//!
//! Here: the windows, the watermark and the stage's processing; `rules`, `patterns`,
//! `changelog` (the state's records) and `audit` (what each decision writes) beside it.
//!
//! State is per run and session, so one long-lived job serves run after run. The job is
//! driven only by the events it is given ([`StreamJob::observe`]): tests set time
//! explicitly and need no clock.

mod audit;
mod changelog;
pub mod config;
pub mod enrich;
mod patterns;
pub mod profiles;
mod rules;
mod stage;

pub use rules::{Rule, RuleApplied, RulePublisher, RuleSet, follow_rules};

use crate::event::Window;
use crate::runtime::SideRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The stage's name.
pub const NAME: &str = crate::topology::STREAMJOB;

/// A pattern to detect per session, as a scenario gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The signal emitted on a match (e.g. `binge`).
    pub name: String,
    /// Matching actions needed (at least 2).
    pub times: u32,
    /// The longest event-time span of one match.
    pub within: Duration,
    /// Only actions whose text contains this count; all do when `None`.
    pub contains: Option<String>,
}

/// Window and pattern settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamJobConfig {
    /// Window length.
    pub window: Duration,
    /// How often a window starts; equal to `window` for tumbling windows.
    pub slide: Duration,
    /// How far behind the highest event time the watermark trails.
    pub out_of_orderness: Duration,
    pub patterns: Vec<Pattern>,
    /// Keep each session's windows and pattern progress in `story.streamjob-changelog`, to
    /// rebuild them after a restart or when partitions move.
    pub changelog: bool,
}

impl Default for StreamJobConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(1),
            slide: Duration::from_secs(1),
            out_of_orderness: Duration::from_millis(200),
            patterns: Vec::new(),
            changelog: false,
        }
    }
}

/// What the job has decided so far, readable while it runs.
#[derive(Debug, Default)]
pub struct StreamJobStats {
    pub windows_fired: AtomicU64,
    pub late: AtomicU64,
    /// Matches per pattern name.
    pub signals: Mutex<BTreeMap<String, u64>>,
    pub audit_records: AtomicU64,
    /// Rule changes from `story.rules`, as they took effect here.
    pub rules: Mutex<Vec<RuleApplied>>,
    /// Sessions rebuilt from the changelog.
    pub restored: AtomicU64,
    /// Redelivered events the restored state already counted (passed on, not counted again).
    pub replayed: AtomicU64,
}

/// A session of a run.
type Key = (u64, u64);

/// What one event led to, besides its own window figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A window's final count (the watermark passed its end).
    Fired { key: Key, start_ms: u64, end_ms: u64, count: u64 },
    /// The event came after every window it falls in had fired.
    Late { key: Key, id: u64, event_ms: u64, watermark_ms: u64 },
    /// A pattern matched on these events.
    Matched { key: Key, pattern: String, ids: Vec<u64>, first_ms: u64, last_ms: u64 },
    /// A rule from `story.rules` took effect.
    RuleApplied { rule: Rule, applied_ns: u64 },
}

/// The job's state: open windows and their timers, pattern progress, the watermark.
#[derive(Debug)]
pub struct StreamJob {
    window_ms: u64,
    slide_ms: u64,
    out_of_order_ms: u64,
    patterns: Vec<Pattern>,
    max_event_ms: u64,
    /// Open windows: per session, count per window start.
    windows: HashMap<Key, BTreeMap<u64, u64>>,
    /// Event-time timers: (fire at, session, window start), fired in order.
    timers: BTreeSet<(u64, Key, u64)>,
    /// Per session and pattern: the (event ms, id) of matching actions not yet in a match.
    progress: HashMap<(Key, usize), VecDeque<(u64, u64)>>,
    /// Broadcast rules, when the job follows `story.rules`, and the version applied.
    rules: Option<(tokio::sync::watch::Receiver<RuleSet>, u64)>,
    /// The patterns the job was configured with (rules of the same name replace them).
    configured: Vec<Pattern>,
    /// Changelog bookkeeping: the input partition of each session, the partitions this
    /// instance owns, and the sessions touched since the last changelog records.
    partition_of: HashMap<Key, i32>,
    owned: BTreeSet<i32>,
    touched: BTreeSet<Key>,
    /// Per restored session, the input offset its changelog state already includes: a
    /// redelivered event at or below it is passed on but not counted again.
    restored_upto: HashMap<Key, i64>,
    /// Per session, the input offset of its last event counted.
    last_offset: HashMap<Key, i64>,
    /// Write the changelog (`story.streamjob-changelog`).
    changelog: bool,
    /// Async enrichment after the windows and patterns, when configured.
    enricher: Option<enrich::Enricher>,
    /// What handling one event reuses: its side records, its stamps, and (ordered
    /// enrichment) the signal of the event before it.
    side: Vec<SideRecord>,
    stamps: Vec<u8>,
    previous: Option<tokio::sync::oneshot::Receiver<()>>,
    pub stats: Arc<StreamJobStats>,
}

impl StreamJob {
    pub fn new(config: StreamJobConfig) -> Self {
        let window_ms = (config.window.as_millis() as u64).max(1);
        let slide_ms = (config.slide.as_millis() as u64).clamp(1, window_ms);
        Self {
            window_ms,
            slide_ms,
            out_of_order_ms: config.out_of_orderness.as_millis() as u64,
            configured: config.patterns.clone(),
            patterns: config.patterns,
            rules: None,
            max_event_ms: 0,
            windows: HashMap::new(),
            timers: BTreeSet::new(),
            progress: HashMap::new(),
            partition_of: HashMap::new(),
            owned: BTreeSet::new(),
            touched: BTreeSet::new(),
            restored_upto: HashMap::new(),
            last_offset: HashMap::new(),
            changelog: config.changelog,
            enricher: None,
            side: Vec::new(),
            stamps: Vec::with_capacity(512),
            previous: None,
            stats: Arc::default(),
        }
    }

    /// Enriches every beat asynchronously from a database (see [`enrich`]).
    #[must_use]
    pub fn with_enricher(mut self, enricher: enrich::Enricher) -> Self {
        self.enricher = Some(enricher);
        self
    }

    /// The watermark, ms since the epoch: no event with an earlier time is expected.
    pub fn watermark_ms(&self) -> u64 {
        self.max_event_ms.saturating_sub(self.out_of_order_ms)
    }

    /// Starts of the windows holding `t`, oldest first.
    fn windows_of(&self, t: u64) -> impl Iterator<Item = u64> + use<> {
        let (size, slide) = (self.window_ms, self.slide_ms);
        let newest = t - t % slide;
        // The first start after `t - size`, on the slide's grid.
        let oldest = (t + 1).saturating_sub(size).div_ceil(slide) * slide;
        (oldest..=newest).step_by(slide as usize)
    }

    /// Takes one action of `key` (run, session) at event time `event_ms` with id `id`:
    /// counts it in its windows, advances the watermark and fires what it passed, and
    /// checks the patterns. Returns the beat's window figures; `decisions` gets the rest.
    pub fn observe(&mut self, key: Key, id: u64, action: &str, event_ms: u64, decisions: &mut Vec<Decision>) -> Window {
        let watermark = self.watermark_ms();
        let mut newest = None;
        for start in self.windows_of(event_ms) {
            let end = start + self.window_ms;
            if end <= watermark {
                continue; // fired already
            }
            let count = self.windows.entry(key).or_default().entry(start).or_insert_with(|| {
                self.timers.insert((end, key, start));
                0
            });
            *count += 1;
            newest = Some(Window { start_ms: start, count: *count, late: false });
        }
        if self.changelog && newest.is_some() {
            self.touched.insert(key);
        }
        let window = newest.unwrap_or_else(|| {
            self.stats.late.fetch_add(1, Ordering::Relaxed);
            decisions.push(Decision::Late { key, id, event_ms, watermark_ms: watermark });
            Window { start_ms: event_ms - event_ms % self.slide_ms, count: 0, late: true }
        });
        if window.late {
            return window; // too late for patterns as well: their windows are closed
        }
        self.match_patterns(key, id, action, event_ms, decisions);
        self.max_event_ms = self.max_event_ms.max(event_ms);
        self.fire(decisions);
        window
    }

    /// Fires every window whose end the watermark has passed, in event-time order.
    fn fire(&mut self, decisions: &mut Vec<Decision>) {
        let watermark = self.watermark_ms();
        while let Some(&(end, key, start)) = self.timers.first() {
            if end > watermark {
                break;
            }
            self.timers.pop_first();
            let count = match self.windows.get_mut(&key) {
                Some(open) => {
                    let count = open.remove(&start).unwrap_or(0);
                    if open.is_empty() {
                        self.windows.remove(&key);
                    }
                    count
                }
                None => 0,
            };
            if self.changelog {
                self.touched.insert(key);
            }
            self.stats.windows_fired.fetch_add(1, Ordering::Relaxed);
            decisions.push(Decision::Fired { key, start_ms: start, end_ms: end, count });
        }
    }

    /// Open windows across all sessions.
    pub fn open_windows(&self) -> usize {
        self.windows.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::changelog::{KeyState, changelog_key};
    use super::*;
    use crate::{StoryEvent, topics};

    const S: Key = (1, 1);

    fn job(window_ms: u64, slide_ms: u64, patterns: Vec<Pattern>) -> StreamJob {
        StreamJob::new(StreamJobConfig {
            window: Duration::from_millis(window_ms),
            slide: Duration::from_millis(slide_ms),
            out_of_orderness: Duration::from_millis(200),
            patterns,
            changelog: true,
        })
    }

    /// Processes one beat of `session` at event time `ms`, read from offset `offset` of
    /// partition 0; returns its window figures and the side records.
    async fn process(j: &mut StreamJob, session: u64, ms: u64, offset: i64) -> (Option<Window>, Vec<SideRecord>) {
        let mut event = StoryEvent {
            run: 1,
            id: offset as u64,
            session,
            action: "go".into(),
            beat: Some(crate::event::Beat { number: 1, prompt: String::new(), text: String::new() }),
            window: None,
            enrichment: None,
        };
        let meta = stage::Meta { intended_ns: ms * 1_000_000, ingress_ns: ms * 1_000_000, partition: 0, offset };
        let mut side = Vec::new();
        j.process(&mut event, &meta, &mut side).unwrap();
        (event.window, side)
    }

    #[tokio::test]
    async fn an_event_a_day_ahead_is_refused_and_moves_no_watermark() {
        let mut j = job(1000, 1000, vec![]);
        process(&mut j, 1, 5_000, 0).await;
        let before = j.watermark_ms();
        let mut event = StoryEvent {
            run: 1,
            id: 1,
            session: 1,
            action: "go".into(),
            beat: Some(crate::event::Beat { number: 1, prompt: String::new(), text: String::new() }),
            window: None,
            enrichment: None,
        };
        let day = 86_400_000_000_000u64;
        let meta = stage::Meta { intended_ns: 5_000_000_000 + day, ingress_ns: 5_000_000_000, partition: 0, offset: 1 };
        let e = j.process(&mut event, &meta, &mut Vec::new()).unwrap_err();
        assert!(e.contains("86400s ahead"), "{e}");
        assert_eq!(j.watermark_ms(), before);
    }

    /// The audit decisions among side records, as (decision, session, count or ids).
    fn audited(side: &[SideRecord]) -> Vec<String> {
        side.iter()
            .filter(|r| r.topic == topics::AUDIT)
            .map(|r| {
                let a: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
                format!(
                    "{} {} {}",
                    a["decision"].as_str().unwrap(),
                    a["session"],
                    if a["count"].is_null() { &a["ids"] } else { &a["count"] }
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn window_state_survives_a_restart_from_the_changelog_and_a_replay_is_not_counted_twice() {
        let binge = Pattern { name: "binge".into(), times: 3, within: Duration::from_secs(2), contains: None };
        let mut a = job(1000, 1000, vec![binge.clone()]);
        let mut log: Vec<(i32, Vec<u8>, Vec<u8>)> = Vec::new();
        for (offset, (session, ms)) in [(1, 10_000), (1, 10_100), (2, 10_200)].into_iter().enumerate() {
            let (_, side) = process(&mut a, session, ms, offset as i64).await;
            let changes = side.into_iter().filter(|r| r.topic == topics::STREAMJOB_CHANGELOG);
            log.extend(changes.map(|r| (r.partition.unwrap(), r.key, r.value)));
        }
        assert_eq!(log.len(), 3, "one record per event, for its session");
        // The job stops abruptly: offset 2's outputs were written, its offset not committed.
        // The next instance rebuilds from the changelog, then is sent offset 2 again.
        let mut b = job(1000, 1000, vec![binge]);
        let restored = b.restore(&[0], log.iter().map(|(p, k, v)| (*p, &k[..], &v[..])));
        assert_eq!((restored, b.open_windows(), b.watermark_ms()), (2, 2, 10_000));
        let (window, side) = process(&mut b, 2, 10_200, 2).await;
        assert_eq!((window, side.len()), (None, 0), "a replay is passed on, not counted");
        assert_eq!(b.stats.replayed.load(Ordering::Relaxed), 1);
        // Session 1's third action completes both its window count and a binge begun before.
        let (window, side) = process(&mut b, 1, 10_300, 3).await;
        assert_eq!(window.map(|w| w.count), Some(3));
        assert_eq!(audited(&side), ["pattern 1 [0,1,3]"]);
        // The watermark passes 11_000: both sessions' windows fire with their whole counts.
        let (_, side) = process(&mut b, 1, 12_000, 4).await;
        assert_eq!(audited(&side), ["window_fired 1 3", "window_fired 2 1"]);
        // Session 2's record keeps its binge progress, no window.
        let change = |side: &[SideRecord], key| {
            side.iter().find(|r| r.topic == topics::STREAMJOB_CHANGELOG && r.key == changelog_key(key)).unwrap().clone()
        };
        let s2: KeyState = serde_json::from_slice(&change(&side, (1, 2)).value).unwrap();
        assert_eq!((s2.windows.len(), &s2.progress["binge"], s2.offset), (0, &vec![(10_200, 2)], Some(2)));
        // The partition moves away: its sessions are dropped with their timers.
        assert_eq!(b.restore(&[], std::iter::empty()), 0);
        assert_eq!(b.open_windows(), 0);
        // A session with nothing left open gets a tombstone, so a compacted log forgets it.
        let mut c = job(1000, 1000, vec![]);
        process(&mut c, 5, 10_000, 0).await;
        let (_, side) = process(&mut c, 6, 12_000, 1).await;
        assert!(change(&side, (1, 5)).value.is_empty(), "{side:?}");
    }

    /// Feeds (session, event ms) in order; returns each beat's window and every decision.
    fn feed(j: &mut StreamJob, input: &[(u64, u64)]) -> (Vec<Window>, Vec<Decision>) {
        let mut decisions = Vec::new();
        let windows = input
            .iter()
            .enumerate()
            .map(|(i, &(session, t))| j.observe((1, session), i as u64, "go north", t, &mut decisions))
            .collect();
        (windows, decisions)
    }

    fn fired(decisions: &[Decision]) -> Vec<(u64, u64, u64)> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Fired { key, start_ms, count, .. } => Some((key.1, *start_ms, *count)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tumbling_windows_count_per_session_and_fire_when_the_watermark_passes() {
        let mut j = job(1000, 1000, vec![]);
        let (w, d) = feed(&mut j, &[(1, 10_000), (1, 10_500), (2, 10_600), (1, 11_000), (1, 11_250)]);
        let counts: Vec<(u64, u64)> = w.iter().map(|w| (w.start_ms, w.count)).collect();
        assert_eq!(counts, [(10_000, 1), (10_000, 2), (10_000, 1), (11_000, 1), (11_000, 2)]);
        // 11_250 - 200 passes 11_000: both sessions' first windows fire, in order.
        assert_eq!(fired(&d), [(1, 10_000, 2), (2, 10_000, 1)]);
        assert_eq!(j.open_windows(), 1);
    }

    #[test]
    fn out_of_order_within_the_bound_counts_and_beyond_it_is_late_never_dropped() {
        let mut j = job(1000, 1000, vec![]);
        // Known answer: window [10_000, 11_000) gets 10_900 and the out-of-order 10_950
        // (watermark 10_900 then); 10_990 arrives after the watermark reached 11_100.
        let (w, d) = feed(&mut j, &[(1, 10_900), (1, 11_100), (1, 10_950), (1, 11_300), (1, 10_990)]);
        assert_eq!((w[2].start_ms, w[2].count, w[2].late), (10_000, 2, false));
        assert_eq!((w[4].start_ms, w[4].count, w[4].late), (10_000, 0, true));
        assert_eq!(fired(&d), [(1, 10_000, 2)]);
        assert!(d.contains(&Decision::Late { key: S, id: 4, event_ms: 10_990, watermark_ms: 11_100 }));
        assert_eq!(j.stats.late.load(Ordering::Relaxed), 1);
        // The late event's records: an audit record and its copy on the late side output.
        let late = d.iter().find(|d| matches!(d, Decision::Late { .. })).unwrap().records();
        let topics: Vec<&str> = late.iter().map(|r| r.topic).collect();
        assert_eq!(topics, [topics::AUDIT, topics::LATE]);
    }

    #[test]
    fn sliding_windows_hold_each_event_in_every_window_that_covers_it() {
        // 1 s windows every 250 ms: an event at 10_600 is in the windows starting at
        // 9_750, 10_000, 10_250 and 10_500.
        let mut j = job(1000, 250, vec![]);
        let (w, d) = feed(&mut j, &[(1, 10_600), (1, 10_700), (1, 12_000)]);
        assert_eq!((w[1].start_ms, w[1].count), (10_500, 2), "the newest window's count");
        // 12_000 - 200 = 11_800 passes the ends 10_750, 11_000, 11_250, 11_500 and 11_750.
        assert_eq!(fired(&d), [(1, 9_750, 2), (1, 10_000, 2), (1, 10_250, 2), (1, 10_500, 2)]);
        assert_eq!(j.windows_of(10_600).collect::<Vec<_>>(), [9_750, 10_000, 10_250, 10_500]);
    }

    #[test]
    fn a_pattern_from_data_matches_three_choices_within_two_seconds_without_overlap() {
        let binge = Pattern { name: "binge".into(), times: 3, within: Duration::from_secs(2), contains: None };
        let mut j = job(1000, 1000, vec![binge]);
        // Session 1: 3 within 2 s (match), then 2 more (no match yet), then one 3 s later.
        // Session 2: 3 spread over 5 s (no match).
        let input = [
            (1, 10_000),
            (2, 10_000),
            (1, 10_900),
            (1, 11_800),
            (2, 12_500),
            (1, 12_000),
            (1, 12_100),
            (2, 15_000),
            (1, 15_200),
        ];
        let (_, d) = feed(&mut j, &input);
        let matches: Vec<(u64, Vec<u64>)> = d
            .iter()
            .filter_map(|d| match d {
                Decision::Matched { key, ids, .. } => Some((key.1, ids.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(matches, [(1, vec![0, 2, 3])]);
        assert_eq!(j.stats.signals.lock().unwrap()["binge"], 1);
        let records = d.iter().find(|d| matches!(d, Decision::Matched { .. })).unwrap().records();
        assert_eq!(records[1].topic, topics::SIGNALS);
        let signal: serde_json::Value = serde_json::from_slice(&records[1].value).unwrap();
        assert_eq!((signal["signal"].as_str(), signal["at_ms"].as_u64()), (Some("binge"), Some(11_800)));
    }

    #[test]
    fn a_pattern_counts_only_the_actions_it_names() {
        let p =
            Pattern { name: "fights".into(), times: 2, within: Duration::from_secs(5), contains: Some("fight".into()) };
        let mut j = job(1000, 1000, vec![p]);
        let mut d = Vec::new();
        j.observe(S, 1, "fight the troll", 10_000, &mut d);
        j.observe(S, 2, "go north", 10_100, &mut d);
        assert!(d.is_empty());
        j.observe(S, 3, "fight again", 10_200, &mut d);
        assert!(matches!(&d[..], [Decision::Matched { ids, .. }] if *ids == [1, 3]));
    }

    #[test]
    fn runs_keep_separate_windows() {
        let mut j = job(1000, 1000, vec![]);
        let mut d = Vec::new();
        assert_eq!(j.observe((1, 5), 1, "a", 10_000, &mut d).count, 1);
        assert_eq!(j.observe((2, 5), 1, "a", 10_100, &mut d).count, 1);
    }

    #[test]
    fn a_broadcast_rule_replaces_or_removes_a_pattern_before_the_next_event_and_is_recorded() {
        let binge = Pattern { name: "binge".into(), times: 3, within: Duration::from_secs(2), contains: None };
        let (tx, rx) = tokio::sync::watch::channel(RuleSet::default());
        let mut j = job(1000, 1000, vec![binge.clone()]).with_rules(rx);
        let mut d = Vec::new();
        j.observe(S, 0, "a", 10_000, &mut d);
        j.observe(S, 1, "a", 10_100, &mut d);
        assert!(d.is_empty());
        // The rule makes two actions a binge; it takes effect before the next event.
        let rule = Rule::of(&Pattern { times: 2, ..binge }, true);
        tx.send_modify(|s| {
            s.version += 1;
            s.rules.insert(rule.name.clone(), rule.clone());
        });
        j.apply_rules(&mut d);
        assert!(matches!(&d[..], [Decision::RuleApplied { rule: r, .. }] if *r == rule));
        d.clear();
        j.observe(S, 2, "a", 10_200, &mut d);
        assert!(d.is_empty(), "progress starts afresh under the new rule");
        j.observe(S, 3, "a", 10_300, &mut d);
        assert!(matches!(&d[..], [Decision::Matched { ids, .. }] if *ids == [2, 3]));
        let applied = j.stats.rules.lock().unwrap().clone();
        assert_eq!(applied.len(), 1);
        assert!(applied[0].applied_ns >= applied[0].published_ns);
        // The same set again changes nothing; disabling the rule removes the pattern.
        d.clear();
        j.apply_rules(&mut d);
        assert!(d.is_empty());
        tx.send_modify(|s| {
            s.version += 1;
            s.rules
                .insert("binge".into(), Rule { enabled: false, published_ns: rule.published_ns + 1, ..rule.clone() });
        });
        j.apply_rules(&mut d);
        d.clear();
        for (id, t) in [(4, 10_400), (5, 10_500), (6, 10_600)] {
            j.observe(S, id, "a", t, &mut d);
        }
        assert!(!d.iter().any(|x| matches!(x, Decision::Matched { .. })), "{d:?}");
    }
}

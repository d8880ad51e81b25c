//! The run directory, written and read back: `result.json`, one interval log per latency
//! metric, and for a sweep `sweep.json` ([`SweepIndex`]) beside one run directory per
//! profile. Runs of the same profile are merged into one picture (histograms merged,
//! counts summed).

use crate::hlog::{Interval, Series, histogram_of};
use crate::result::{Objective, RunResult};
use crate::{END_TO_END_TAG, RESULT_FILE, SCHEDULE_LAG_TAG, SWEEP_FILE, WARMUP_TAG, bad, hlog_file, io_err};
use hdrhistogram::Histogram;
use probes::HopKind;
use probes::hops::HopSummary;
use std::path::{Path, PathBuf};

/// The interval logs of one run, in the `.hlog` encoding, as [`write_run`] files them.
#[derive(Debug, Clone, Default)]
pub struct RunLogs {
    pub end_to_end: Vec<u8>,
    /// End to end during warm-up, when it was recorded.
    pub warmup: Option<Vec<u8>>,
    pub schedule_lag: Vec<u8>,
    /// Per hop, by hop name.
    pub hops: Vec<(String, Vec<u8>)>,
}

/// Writes a run directory: `result.json` and the interval logs.
pub fn write_run(dir: &Path, result: &RunResult, logs: &RunLogs) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(result).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(RESULT_FILE), json + "\n")?;
    std::fs::write(dir.join(hlog_file(END_TO_END_TAG, false)), &logs.end_to_end)?;
    for (name, log) in &logs.hops {
        std::fs::write(dir.join(hlog_file(name, true)), log)?;
    }
    std::fs::write(dir.join(hlog_file(SCHEDULE_LAG_TAG, false)), &logs.schedule_lag)?;
    if let Some(w) = &logs.warmup {
        std::fs::write(dir.join(hlog_file(WARMUP_TAG, false)), w)?;
    }
    Ok(())
}

/// A sweep's index (`sweep.json`): which profiles ran, in which order, and where.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepIndex {
    pub scenario: String,
    #[serde(default)]
    pub description: String,
    pub profiles: Vec<SweepEntry>,
}

/// One profile of a sweep.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepEntry {
    pub name: String,
    /// Its run directory, under the sweep's.
    pub dir: Option<String>,
    pub passed: bool,
    /// A stage that failed during the run (its results were written all the same).
    #[serde(default)]
    pub failure: Option<String>,
}

impl SweepIndex {
    /// Writes `dir/sweep.json`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(SWEEP_FILE), json + "\n")
    }

    /// Reads `dir/sweep.json`, if there is one that parses.
    pub fn read(dir: &Path) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(SWEEP_FILE)).ok()?).ok()
    }
}

/// One run directory.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub result: RunResult,
    pub end_to_end: Series,
    /// End to end during warm-up (intervals from the start of the load).
    pub warmup: Series,
    /// Per hop, in path order.
    pub hops: Vec<Series>,
}

impl Run {
    /// Reads `dir/result.json` and its interval logs.
    pub fn load(dir: &Path) -> crate::Result<Self> {
        let path = dir.join(RESULT_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let result: RunResult =
            serde_json::from_str(&text).map_err(|e| bad(&path, format!("not a tailgate result: {e}")))?;
        let end_to_end = Series::read(&dir.join(hlog_file(END_TO_END_TAG, false)))?;
        let warmup = Series::read(&dir.join(hlog_file(WARMUP_TAG, false)))?;
        let hops =
            result.hops.iter().map(|h| Series::read(&dir.join(hlog_file(&h.name, true)))).collect::<Result<_, _>>()?;
        Ok(Self { dir: dir.to_owned(), result, end_to_end, warmup, hops })
    }
}

/// Whether `dir` holds a run's results.
pub fn is_run(dir: &Path) -> bool {
    dir.join(RESULT_FILE).is_file()
}

/// The run directories under `dirs`: each is a run directory, a sweep directory (whose
/// runs are taken in `sweep.json`'s order, else by name), or a directory of those (e.g.
/// repeated sweeps `base/1`, `base/2`, whose runs of one profile are then merged).
pub fn discover(dirs: &[PathBuf]) -> crate::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for dir in dirs {
        let before = found.len();
        collect(dir, 2, &mut found)?;
        if found.len() == before {
            return Err(bad(dir, "neither a run directory (no result.json) nor a sweep directory (no runs in it)"));
        }
    }
    Ok(found)
}

fn collect(dir: &Path, depth: u32, found: &mut Vec<PathBuf>) -> crate::Result<()> {
    if is_run(dir) {
        found.push(dir.to_owned());
        return Ok(());
    }
    if depth == 0 {
        return Ok(());
    }
    let listing = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => bad(dir, "no such directory"),
        _ => io_err(dir)(e),
    })?;
    let mut subdirs: Vec<PathBuf> = listing.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    if let Some(index) = SweepIndex::read(dir) {
        let order: Vec<String> = index.profiles.into_iter().filter_map(|p| p.dir).collect();
        let rank = |p: &PathBuf| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            order.iter().position(|o| *o == name).unwrap_or(usize::MAX)
        };
        subdirs.sort_by_key(rank);
    }
    for sub in subdirs {
        collect(&sub, depth - 1, found)?;
    }
    Ok(())
}

/// Loads every run under `dirs` (see [`discover`]).
pub fn load_all(dirs: &[PathBuf]) -> crate::Result<Vec<Run>> {
    discover(dirs)?.iter().map(|d| Run::load(d)).collect()
}

/// The runs of one profile, merged.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub runs: Vec<Run>,
    /// The merged result: statistics from merged histograms, counts summed, rates weighted
    /// by measured time, the SLA evaluated on the merge.
    pub result: RunResult,
    pub end_to_end: Histogram<u64>,
    /// (name, kind, merged histogram) in path order.
    pub hops: Vec<(String, HopKind, Histogram<u64>)>,
}

impl Profile {
    /// The interval series of a latency metric (`end_to_end` or a hop name) over all runs, each
    /// run's intervals in turn.
    pub fn series(&self, metric: &str) -> Series {
        Series { intervals: intervals_of(&self.runs, metric).cloned().collect() }
    }
}

/// The intervals of a latency metric (`end_to_end` or a hop name) over `runs`, each run's in
/// turn; a run without that metric contributes none.
fn intervals_of<'a>(runs: &'a [Run], metric: &'a str) -> impl Iterator<Item = &'a Interval> + 'a {
    runs.iter()
        .filter_map(move |run| {
            if metric == END_TO_END_TAG {
                Some(&run.end_to_end)
            } else {
                run.result.hops.iter().position(|h| h.name == metric).and_then(|i| run.hops.get(i))
            }
        })
        .flat_map(|s| &s.intervals)
}

/// The profile with the lowest end-to-end p99 among those meeting every objective.
pub fn best(profiles: &[Profile]) -> Option<&Profile> {
    profiles
        .iter()
        .filter(|p| p.result.sla.passed)
        .min_by(|a, b| a.result.end_to_end.p99_ms.total_cmp(&b.result.end_to_end.p99_ms))
}

/// Groups runs by profile (in first-seen order) and merges each group. `objectives` judge
/// every profile; `None` keeps the objectives each run was judged by.
pub fn by_profile(runs: Vec<Run>, objectives: Option<&[Objective]>) -> Vec<Profile> {
    let mut groups: Vec<(String, Vec<Run>)> = Vec::new();
    for run in runs {
        match groups.iter_mut().find(|(n, _)| *n == run.result.profile) {
            Some((_, g)) => g.push(run),
            None => groups.push((run.result.profile.clone(), vec![run])),
        }
    }
    groups.into_iter().map(|(name, runs)| merge_profile(name, runs, objectives)).collect()
}

fn merge_profile(name: String, runs: Vec<Run>, objectives: Option<&[Objective]>) -> Profile {
    let end_to_end = histogram_of(intervals_of(&runs, END_TO_END_TAG));
    let first = &runs[0].result;
    let hops: Vec<(String, HopKind, Histogram<u64>)> =
        first.hops.iter().map(|h| (h.name.clone(), h.kind, histogram_of(intervals_of(&runs, &h.name)))).collect();
    let mut result = first.clone();
    if runs.len() > 1 {
        let total_s: f64 = runs.iter().map(|r| r.result.duration_s).sum();
        result.duration_s = total_s;
        result.achieved_rate = if total_s > 0.0 {
            runs.iter().map(|r| r.result.achieved_rate * r.result.duration_s).sum::<f64>() / total_s
        } else {
            0.0
        };
        result.target_rate =
            runs.iter().map(|r| r.result.target_rate * r.result.duration_s).sum::<f64>() / total_s.max(f64::EPSILON);
        let mut c = crate::result::Counts::default();
        for r in &runs {
            let x = &r.result.counts;
            c.sent += x.sent;
            c.delivered += x.delivered;
            c.dead_lettered += x.dead_lettered;
            c.filtered += x.filtered;
            c.lost += x.lost;
            c.duplicates += x.duplicates;
            c.reordered += x.reordered;
            c.warmup_sent += x.warmup_sent;
        }
        result.counts = c;
        result.interrupted = runs.iter().any(|r| r.result.interrupted);
        result.schedule_lag = probes::Summary::default();
    }
    // Statistics come from the interval logs wherever the logs are there.
    if !end_to_end.is_empty() {
        result.end_to_end = probes::Summary::of(&end_to_end);
        for (h, (_, kind, hist)) in result.hops.iter_mut().zip(&hops) {
            *h = HopSummary { name: h.name.clone(), kind: *kind, stats: probes::Summary::of(hist) };
        }
    }
    let objectives: Vec<Objective> = match objectives {
        Some(o) => o.to_vec(),
        None => first.sla.objectives.iter().map(crate::result::ObjectiveResult::objective).collect(),
    };
    result.evaluate(&objectives);
    Profile { name, runs, result, end_to_end, hops }
}

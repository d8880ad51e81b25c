//! The report files: `report.html` (self-contained, charts inline), `summary.md` (for a
//! pull-request comment), `junit.xml` (one test case per objective per profile),
//! `report.json` (all of it as data) and the charts as SVG and PNG under `charts/`.

use crate::charts::{self, Frontier, Hops, OverTime, Percentiles};
use crate::frames;
use crate::result::{ObjectiveResult, RunResult};
use crate::runs::Profile;
use polars::prelude::DataFrame;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The files a report writes, relative to its directory.
pub const HTML: &str = "report.html";
pub const MARKDOWN: &str = "summary.md";
pub const JUNIT: &str = "junit.xml";
pub const JSON: &str = "report.json";
pub const CHARTS: &str = "charts";

/// A built report: its tables and verdict.
#[derive(Debug)]
pub struct Report {
    pub profiles: Vec<Profile>,
    pub seconds: DataFrame,
    pub table: DataFrame,
    pub hops: DataFrame,
    pub passed: bool,
    pub best: Option<String>,
}

/// Where a report went.
#[derive(Debug)]
pub struct Written {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

impl Report {
    /// Tables and verdict for merged `profiles`.
    pub fn build(profiles: Vec<Profile>) -> crate::Result<Self> {
        let sla_p99 = profiles.first().and_then(|p| {
            charts::end_to_end_limits(&objectives(&p.result)).iter().find(|l| (l.0 - 0.99).abs() < 1e-9).map(|l| l.1)
        });
        let seconds = frames::seconds(&profiles)?;
        let table = frames::profiles(&profiles, &seconds, sla_p99)?;
        let hops = frames::hops(&profiles)?;
        let passed = !profiles.is_empty() && profiles.iter().all(|p| p.result.sla.passed);
        let best = crate::runs::best(&profiles).map(|p| p.name.clone());
        Ok(Self { profiles, seconds, table, hops, passed, best })
    }

    /// The one-line verdict.
    pub fn verdict(&self) -> String {
        let failing: Vec<String> = self
            .profiles
            .iter()
            .filter(|p| !p.result.sla.passed)
            .map(|p| {
                let why: Vec<String> = p.result.sla.objectives.iter().filter(|o| !o.passed).map(describe).collect();
                format!("{} ({})", p.name, why.join("; "))
            })
            .collect();
        let best = self.best.as_ref().map_or_else(
            || " No profile meets every objective.".to_owned(),
            |b| {
                let p99 = self.profiles.iter().find(|p| p.name == *b).map_or(0.0, |p| p.result.end_to_end.p99_ms);
                format!(" Best profile: {b} (end-to-end p99 {p99:.2} ms).")
            },
        );
        if failing.is_empty() {
            format!(
                "PASS: {} meet{} every SLA objective.{best}",
                plural(self.profiles.len()),
                if self.profiles.len() == 1 { "s" } else { "" }
            )
        } else {
            format!(
                "FAIL: {} of {} miss the SLA: {}.{best}",
                failing.len(),
                plural(self.profiles.len()),
                failing.join(", ")
            )
        }
    }

    /// Writes every file into `dir`.
    pub fn write(&self, dir: &Path) -> crate::Result<Written> {
        let charts_dir = dir.join(CHARTS);
        std::fs::create_dir_all(&charts_dir).map_err(crate::io_err(&charts_dir))?;
        let limits =
            self.profiles.first().map(|p| charts::end_to_end_limits(&objectives(&p.result))).unwrap_or_default();
        let mut svgs: Vec<(String, String)> = Vec::new();
        let mut files = Vec::new();
        let mut draw = |chart: &dyn ChartDyn, title: &str| -> crate::Result<()> {
            let svg = chart.render(&charts_dir)?;
            files.push(charts_dir.join(format!("{}.png", chart.stem())));
            files.push(charts_dir.join(format!("{}.svg", chart.stem())));
            svgs.push((title.to_owned(), svg));
            Ok(())
        };
        draw(&Percentiles { profiles: &self.profiles, limits: limits.clone() }, "Percentile distribution")?;
        for p in &self.profiles {
            draw(
                &OverTime {
                    profile: &p.name,
                    seconds: &self.seconds,
                    limits: limits.clone(),
                    warmup_s: p.result.warmup_s,
                    faults: &p.result.faults,
                    target_per_s: &p.result.target_per_s,
                },
                &format!("Latency over time: {}", p.name),
            )?;
        }
        draw(&Hops { profiles: &self.profiles, hops: &self.hops, limits: limits.clone() }, "Per-hop breakdown")?;
        draw(&Frontier { profiles: &self.profiles, limits }, "Throughput and p99 across profiles")?;

        let mut write = |name: &str, text: String| -> crate::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(crate::io_err(&path))?;
            files.insert(0, path);
            Ok(())
        };
        write(JSON, serde_json::to_string_pretty(&self.json()).unwrap_or_default() + "\n")?;
        write(JUNIT, self.junit())?;
        write(MARKDOWN, self.markdown())?;
        write(HTML, self.html(&svgs))?;
        Ok(Written { dir: dir.to_owned(), files })
    }

    /// `report.json`.
    pub fn json(&self) -> serde_json::Value {
        let objectives: Vec<serde_json::Value> = self
            .profiles
            .iter()
            .flat_map(|p| {
                p.result.sla.objectives.iter().map(move |o| {
                    serde_json::json!({"profile": p.name, "metric": o.metric, "bound": o.objective().bound(),
                        "max": o.max, "min": o.min, "actual": o.actual, "passed": o.passed})
                })
            })
            .collect();
        let runs: Vec<serde_json::Value> = self
            .profiles
            .iter()
            .flat_map(|p| {
                p.runs.iter().map(|r| serde_json::json!({"profile": p.name, "dir": r.dir, "result": r.result}))
            })
            .collect();
        serde_json::json!({
            "tailgate_version": self.profiles.first().map(|p| p.result.tailgate_version.clone()),
            "scenario": self.profiles.first().map(|p| p.result.scenario.clone()),
            "verdict": {"passed": self.passed, "best_profile": self.best, "summary": self.verdict()},
            "profiles": frames::rows(&self.table),
            "objectives": objectives,
            "hops": frames::rows(&self.hops),
            "seconds": frames::rows(&self.seconds),
            "runs": runs,
        })
    }

    /// `junit.xml`: a test suite per profile, a test case per objective.
    pub fn junit(&self) -> String {
        let total: usize = self.profiles.iter().map(|p| p.result.sla.objectives.len()).sum();
        let failures: usize =
            self.profiles.iter().map(|p| p.result.sla.objectives.iter().filter(|o| !o.passed).count()).sum();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(x, "<testsuites name=\"tailgate\" tests=\"{total}\" failures=\"{failures}\" errors=\"0\">");
        for p in &self.profiles {
            let r = &p.result;
            let suite = format!("tailgate.{}.{}", r.scenario, p.name);
            let fails = r.sla.objectives.iter().filter(|o| !o.passed).count();
            let _ = writeln!(
                x,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\" errors=\"0\" skipped=\"0\" time=\"{:.3}\" timestamp=\"{}\">",
                esc(&suite),
                r.sla.objectives.len(),
                r.duration_s,
                esc(r.started_at.trim_end_matches('Z'))
            );
            let _ = writeln!(x, "    <properties>");
            for (k, v) in [
                ("broker", format!("{} {}", r.broker.kind, r.broker.version)),
                ("storage", r.broker.storage.clone()),
                ("achieved_rate", format!("{:.1}", r.achieved_rate)),
                ("runs", p.runs.len().to_string()),
            ] {
                let _ = writeln!(x, "      <property name=\"{k}\" value=\"{}\"/>", esc(&v));
            }
            let _ = writeln!(x, "    </properties>");
            for o in &r.sla.objectives {
                let name = format!("{} {}", o.metric, o.objective().bound());
                let _ = write!(x, "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"", esc(&suite), esc(&name));
                if o.passed {
                    let _ = writeln!(x, "/>");
                } else {
                    let _ = writeln!(x, ">");
                    let msg = describe(o);
                    let _ = writeln!(
                        x,
                        "      <failure message=\"{}\" type=\"SLA\">measured {}, limit {} (profile {}, {} {})</failure>",
                        esc(&msg),
                        o.actual.map_or("no value".into(), |a| format!("{a:.3}")),
                        esc(&o.objective().bound()),
                        esc(&p.name),
                        esc(&r.broker.kind),
                        esc(&r.broker.version)
                    );
                    let _ = writeln!(x, "    </testcase>");
                }
            }
            let _ = writeln!(x, "  </testsuite>");
        }
        x.push_str("</testsuites>\n");
        x
    }

    /// `summary.md`.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let scenario = self.profiles.first().map(|p| p.result.scenario.clone()).unwrap_or_default();
        let _ = writeln!(m, "## tailgate: `{scenario}`\n");
        let _ = writeln!(m, "**{}**\n", self.verdict());
        let _ = writeln!(
            m,
            "| profile | verdict | achieved/s | p50 ms | p99 ms | p99.9 ms | max ms | delivered | dead-lettered | lost | CPU s/1k events |"
        );
        let _ = writeln!(m, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for p in &self.profiles {
            let r = &p.result;
            let e = &r.end_to_end;
            let _ = writeln!(
                m,
                "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
                p.name,
                if r.sla.passed { "✅ pass" } else { "❌ fail" },
                r.achieved_rate,
                e.p50_ms,
                e.p99_ms,
                e.p999_ms,
                e.max_ms,
                r.counts.delivered,
                r.counts.dead_lettered,
                r.counts.lost,
                r.cpu.as_ref().map_or_else(|| "–".to_owned(), |c| format!("{:.3}", c.per_1k_events_s))
            );
        }
        let _ = writeln!(m, "\n| profile | objective | measured | limit | |\n| --- | --- | ---: | --- | --- |");
        for p in &self.profiles {
            for o in &p.result.sla.objectives {
                let _ = writeln!(
                    m,
                    "| {} | `{}` | {} | {} | {} |",
                    p.name,
                    o.metric,
                    o.actual.map_or("–".into(), |a| format!("{a:.3}")),
                    o.objective().bound(),
                    if o.passed { "pass" } else { "**FAIL**" }
                );
            }
        }
        if let Some(p) = self.profiles.first() {
            let b = &p.result.broker;
            let _ = writeln!(
                m,
                "\nBroker: {} {} ({}); machine: {} {} with {} CPUs. Figures from merged HdrHistograms.",
                b.kind, b.version, b.storage, p.result.machine.os, p.result.machine.arch, p.result.machine.cpus
            );
        }
        for p in &self.profiles {
            if let Some(f) = faults_applied(&p.result) {
                let _ = writeln!(m, "\n{}: {f}", p.name);
            }
        }
        m
    }

    fn html(&self, svgs: &[(String, String)]) -> String {
        let mut h = String::new();
        let scenario = self.profiles.first().map(|p| p.result.scenario.clone()).unwrap_or_default();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>tailgate report: {}</title><style>{CSS}</style></head><body>\n",
            esc(&scenario)
        );
        let _ = writeln!(h, "<h1>tailgate report: <code>{}</code></h1>", esc(&scenario));
        let class = if self.passed { "pass" } else { "fail" };
        let _ = writeln!(h, "<div class=\"verdict {class}\">{}</div>", esc(&self.verdict()));
        self.html_profiles(&mut h);
        self.html_objectives(&mut h);
        for (title, svg) in svgs {
            let _ = writeln!(h, "<h2>{}</h2><figure>{}</figure>", esc(title), strip_xml_declaration(svg));
        }
        self.html_hops(&mut h);
        self.html_faults(&mut h);
        self.html_footer(&mut h);
        h.push_str("</body></html>\n");
        h
    }

    /// The faults table: each fault, its window, what the events intended during it took,
    /// and how long the p99 took to come back under the bound.
    fn html_faults(&self, h: &mut String) {
        if self.profiles.iter().all(|p| p.result.faults.is_empty()) {
            return;
        }
        h.push_str(
            "<h2>Faults</h2><p>Shaded red on the latency-over-time charts. <i>During</i>: end-to-end latency of the events intended while the fault lasted (its first second, for an instant one). <i>Recovery</i>: from the fault's end until the per-second p99 was back under the bound.</p><table><tr><th>profile</th><th>fault</th><th>began s</th><th>ended s</th><th>events during</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>recovery s</th><th>bound ms</th></tr>",
        );
        let ms = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        for p in &self.profiles {
            for f in &p.result.faults {
                let d = f.during;
                let recovery = match (f.recovery_s, f.recovery_bound_ms) {
                    (Some(r), _) => format!("{r:.1}"),
                    (None, Some(_)) => "not before the end".into(),
                    (None, None) => "-".into(),
                };
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td><code>{}</code><br><small>{}</small></td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&p.name),
                    esc(&f.kind),
                    esc(&f.what),
                    f.began_at_s,
                    ms(f.ended_at_s, 1),
                    d.map_or("-".to_owned(), |d| d.count.to_string()),
                    ms(d.map(|d| d.p50_ms), 2),
                    ms(d.map(|d| d.p99_ms), 2),
                    ms(d.map(|d| d.max_ms), 2),
                    esc(&recovery),
                    ms(f.recovery_bound_ms, 0),
                );
            }
        }
        h.push_str("</table>\n");
    }

    /// The profiles table: verdict, rate, percentiles and counts per profile.
    fn html_profiles(&self, h: &mut String) {
        let _ = writeln!(
            h,
            "<h2>Profiles</h2><table><tr><th>profile</th><th>verdict</th><th>runs</th><th>achieved/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>worst second p99</th><th>seconds over SLA p99</th><th>sent</th><th>delivered</th><th>dead-lettered</th><th>lost</th><th>CPU s per 1k events</th><th>agent process CPU s</th></tr>"
        );
        let t = &self.table;
        let (names, f) = (frames::strings(t, "profile"), |c: &str| frames::floats(t, c));
        let cols = [
            "runs",
            "achieved_rate",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "worst_second_p99_ms",
            "seconds_over_sla",
            "sent",
            "delivered",
            "dead_lettered",
            "lost",
            "cpu_per_1k_s",
            "agent_cpu_s",
        ];
        let values: Vec<Vec<f64>> = cols.iter().map(|c| f(c)).collect();
        for (i, name) in names.iter().enumerate() {
            let passed = self.profiles.iter().find(|p| p.name == *name).is_some_and(|p| p.result.sla.passed);
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{}\">{}</td>",
                esc(name),
                if passed { "pass" } else { "fail" },
                if passed { "pass" } else { "FAIL" }
            );
            for (c, v) in cols.iter().zip(&values) {
                let v = v.get(i).copied().unwrap_or(f64::NAN);
                let text = if v.is_nan() {
                    "–".into()
                } else if c.ends_with("_ms") || *c == "achieved_rate" || *c == "agent_cpu_s" {
                    format!("{v:.2}")
                } else if *c == "cpu_per_1k_s" {
                    format!("{v:.3}")
                } else {
                    format!("{v:.0}")
                };
                let _ = write!(h, "<td class=\"n\">{text}</td>");
            }
            let _ = writeln!(h, "</tr>");
        }
        let _ = writeln!(h, "</table>");
    }

    /// Every objective of every profile, measured against its limit.
    fn html_objectives(&self, h: &mut String) {
        let _ = writeln!(
            h,
            "<h2>Objectives</h2><table><tr><th>profile</th><th>objective</th><th>measured</th><th>limit</th><th></th></tr>"
        );
        for p in &self.profiles {
            for o in &p.result.sla.objectives {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                    esc(&p.name),
                    esc(&o.metric),
                    o.actual.map_or("no value".into(), |a| format!("{a:.3}")),
                    esc(&o.objective().bound()),
                    if o.passed { "pass" } else { "fail" },
                    if o.passed { "pass" } else { "FAIL" }
                );
            }
        }
        let _ = writeln!(h, "</table>");
    }

    /// The hop breakdown: mean, share and percentiles per hop and profile.
    fn html_hops(&self, h: &mut String) {
        let _ = writeln!(
            h,
            "<h2>Hops</h2><p>Transit hops (~) are produce, broker and fetch between stages; the others are service time inside a stage. Hop means add up to the end-to-end mean.</p><table><tr><th>profile</th><th>hop</th><th>mean ms</th><th>share</th><th>p50 ms</th><th>p99 ms</th></tr>"
        );
        let (hp, hn) = (frames::strings(&self.hops, "profile"), frames::strings(&self.hops, "hop"));
        let (hm, hs, h50, h99) = (
            frames::floats(&self.hops, "mean_ms"),
            frames::floats(&self.hops, "share"),
            frames::floats(&self.hops, "p50_ms"),
            frames::floats(&self.hops, "p99_ms"),
        );
        let transit = self
            .hops
            .column("transit")
            .ok()
            .and_then(|c| c.bool().ok().map(|b| b.iter().map(|v| v.unwrap_or(false)).collect::<Vec<_>>()))
            .unwrap_or_default();
        for i in 0..hp.len() {
            let mark = if transit.get(i).copied().unwrap_or(false) { "~ " } else { "" };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{mark}{}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.1}%</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td></tr>",
                esc(&hp[i]),
                esc(&hn[i]),
                hm[i],
                hs[i] * 100.0,
                h50[i],
                h99[i]
            );
        }
        let _ = writeln!(h, "</table>");
    }

    /// Where the figures come from: broker, storage, settings, faults and machine.
    fn html_footer(&self, h: &mut String) {
        let _ = writeln!(h, "<footer><h2>Where these figures come from</h2>");
        for p in &self.profiles {
            let r = &p.result;
            let b = &r.broker;
            let _ = writeln!(
                h,
                "<p><b>{}</b>: broker {} {} at {} (storage: {}), {} partition(s) per topic; {} run(s) from {} ; load {:.0}/s target, {:.1}s measured after {:.1}s warm-up.<br>producer: <code>{}</code><br>consumer: <code>{}</code>{}{}</p>",
                esc(&p.name),
                esc(&b.kind),
                esc(&b.version),
                esc(&b.bootstrap),
                esc(&b.storage),
                b.partitions,
                p.runs.len(),
                esc(&r.started_at),
                r.target_rate,
                r.duration_s,
                r.warmup_s,
                esc(&settings(&b.producer)),
                esc(&settings(&b.consumer)),
                if b.topic.is_empty() {
                    String::new()
                } else {
                    format!("<br>topics: <code>{}</code>", esc(&settings(&b.topic)))
                },
                b.stages
                    .iter()
                    .map(|(s, c)| format!(
                        "<br>{} only: <code>{}</code>",
                        esc(s),
                        esc(&[settings(&c.producer), settings(&c.consumer)].join(" "))
                    ))
                    .collect::<String>()
            );
            if let Some(f) = faults_applied(r) {
                let _ = writeln!(h, "<p><b>{}</b>: {}</p>", esc(&p.name), esc(&f));
            }
        }
        if let Some(p) = self.profiles.first() {
            let m = &p.result.machine;
            let _ = writeln!(
                h,
                "<p>Machine: {} {} with {} CPUs. tailgate {}. Percentiles come from merged HdrHistograms (microsecond resolution), never from averaged percentiles.</p>",
                esc(&m.os),
                esc(&m.arch),
                m.cpus,
                esc(&p.result.tailgate_version)
            );
        }
        h.push_str("</footer>");
    }
}

/// Object-safe face of [`charts::Chart`] for the report's list of charts.
trait ChartDyn {
    fn render(&self, dir: &Path) -> crate::Result<String>;
    fn stem(&self) -> String;
}

impl<T: charts::Chart> ChartDyn for T {
    fn render(&self, dir: &Path) -> crate::Result<String> {
        charts::render(self, dir)
    }
    fn stem(&self) -> String {
        self.name()
    }
}

fn objectives(r: &RunResult) -> Vec<crate::result::Objective> {
    r.sla.objectives.iter().map(ObjectiveResult::objective).collect()
}

fn describe(o: &ObjectiveResult) -> String {
    match o.actual {
        Some(a) => format!("{} = {a:.3}, limit {}", o.metric, o.objective().bound()),
        None => format!("{}: no value, limit {}", o.metric, o.objective().bound()),
    }
}

fn plural(n: usize) -> String {
    if n == 1 { "the profile".into() } else { format!("{n} profiles") }
}

fn settings(m: &std::collections::BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

fn strip_xml_declaration(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

/// Escapes text for HTML and XML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}\
.verdict{padding:.8em 1em;border-radius:6px;font-weight:600}.verdict.pass{background:#e6f4ea;color:#1e6b34}.verdict.fail{background:#fde8e8;color:#9b1c1c}\
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .5em}th{background:#f5f5f5}\
td.n{text-align:right;font-variant-numeric:tabular-nums}td.pass{color:#1e6b34}td.fail{color:#9b1c1c;font-weight:600}\
figure{margin:0}figure svg{max-width:100%;height:auto}footer{margin-top:2em;font-size:.85em;color:#555}code{font-size:.9em}";

/// The faults a run applied and what the broker did, in one sentence; `None` without any.
fn faults_applied(r: &crate::result::RunResult) -> Option<String> {
    if r.faults.is_empty() {
        return None;
    }
    let list: Vec<String> =
        r.faults.iter().map(|f| format!("{} at {:.1}s ({})", f.kind, f.began_at_s, f.what)).collect();
    let effects = r.broker.faults.map_or(String::new(), |e| format!(" The broker {}.", e.describe()));
    Some(format!("faults applied: {}.{effects}", list.join("; ")))
}

//! Drawing one frame of the dashboard from a [`DashState`].

use crate::model::{DashState, Panel, WindowView};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table};

/// The smallest terminal the dashboard draws in.
pub const MIN_SIZE: (u16, u16) = (80, 24);

const BREACH: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);

fn block(title: &str, focused: bool) -> Block<'static> {
    let style = if focused { Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD) } else { Style::new() };
    Block::default().borders(Borders::ALL).border_style(style).title(Span::styled(format!(" {title} "), style))
}

fn secs(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s >= 60 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{s}s") }
}

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame<'_>, state: &DashState) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let msg = format!(
            "terminal too small: {}x{}, the dashboard needs {}x{}. Enlarge it, or press q to quit.",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        frame.render_widget(Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }), area);
        return;
    }
    let view = state.view();
    let hop_rows = u16::try_from(view.hops.len()).unwrap_or(20).clamp(3, 12);
    // On short terminals the counters panel gives up its spare line to the chart.
    let top_rows = if area.height < 30 { 7 } else { 8 };
    let [header, top, chart, bottom, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(top_rows),
        Constraint::Min(4),
        Constraint::Length(hop_rows + 3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, state);
    let [latency, throughput] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    draw_latency(frame, latency, state, &view);
    draw_throughput(frame, throughput, state, &view);
    draw_chart(frame, chart, state, &view);
    let [hops, histogram] = Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(bottom);
    draw_hops(frame, hops, state, &view);
    draw_histogram(frame, histogram, state, &view);
    draw_footer(frame, footer, state);
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, s: &DashState) {
    let elapsed = s.now_ns.saturating_sub(s.meta.started_ns);
    let time = match s.meta.planned {
        Some(p) => {
            let planned = u64::try_from(p.as_nanos()).unwrap_or(u64::MAX);
            format!("{} elapsed, {} left", secs(elapsed), secs(planned.saturating_sub(elapsed)))
        }
        None => format!("{} watching", secs(elapsed)),
    };
    let mut spans = vec![
        Span::styled(" tailgate ", Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            " {} · profile {} · {} · {time} · window {}",
            s.meta.title,
            s.meta.profile,
            s.meta.broker,
            s.window.label()
        )),
    ];
    if s.paused {
        spans.push(Span::styled(" PAUSED", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn ms(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

fn draw_latency(frame: &mut Frame<'_>, area: Rect, s: &DashState, v: &WindowView) {
    let e = &v.end_to_end;
    let style = if v.end_to_end_over.is_some() { BREACH } else { Style::new() };
    let header = Row::new(["ms", "p50", "p90", "p99", "p99.9", "max"]).style(Style::new().add_modifier(Modifier::DIM));
    let row = Row::new([
        Cell::from("e2e"),
        Cell::from(ms(e.p50)),
        Cell::from(ms(e.p90)),
        Cell::from(ms(e.p99)),
        Cell::from(ms(e.p999)),
        Cell::from(ms(e.max)),
    ])
    .style(style);
    let sla = match (&v.end_to_end_over, s.meta.budgets.iter().find(|b| b.metric.starts_with("end_to_end."))) {
        (Some(b), _) => Line::styled(format!("SLA BREACHED: {} > {}", b.metric, b.max), BREACH),
        (None, Some(b)) => Line::styled(format!("SLA ok: {} <= {}", b.metric, b.max), Style::new().fg(Color::Green)),
        (None, None) => Line::raw("no end-to-end objective"),
    };
    let widths = [
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    let inner = block(&format!("end to end, last {}", s.window.label()), s.focus == Panel::Latency);
    let table = Table::new([row], widths).header(header);
    let inner_area = inner.inner(area);
    frame.render_widget(inner, area);
    let [t, l] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner_area);
    frame.render_widget(table, t);
    frame.render_widget(Paragraph::new(vec![Line::raw(format!("{} events in the window", e.count)), sla]), l);
}

fn draw_throughput(frame: &mut Frame<'_>, area: Rect, s: &DashState, v: &WindowView) {
    let p = &s.progress;
    let in_flight = p.sent.saturating_sub(p.delivered + p.dead_lettered + p.filtered);
    let mut lines = vec![
        Line::raw(format!("sent {:>12}  per s {:>7.0}", p.sent, v.delivered_per_s)),
        Line::raw(format!("delivered {:>7}  in flight {:>5}", p.delivered, in_flight)),
    ];
    let dl_style = if p.dead_lettered > 0 { Style::new().fg(Color::Yellow) } else { Style::new() };
    lines.push(Line::styled(format!("dead-lettered {:>3}  duplicates {:>4}", p.dead_lettered, p.duplicates), dl_style));
    if p.filtered > 0 {
        lines.push(Line::raw(format!("filtered {:>8}", p.filtered)));
    }
    if let Some(lag) = p.schedule_lag_ms {
        lines.push(Line::raw(format!("schedule lag max {lag:.2} ms")));
    }
    if let Some(f) = s.faults.last() {
        let ago = s.now_ns.saturating_sub(f.began_ns) as f64 / 1e9;
        let state = f.ended_ns.map_or_else(
            || "going on".to_owned(),
            |e| format!("over after {:.1}s", e.saturating_sub(f.began_ns) as f64 / 1e9),
        );
        lines.push(Line::styled(format!("fault {} {ago:.0}s ago, {state}", f.kind), Style::new().fg(Color::Yellow)));
    }
    if !p.lags.is_empty() {
        let lags: Vec<String> = p.lags.iter().map(|l| format!("{} {}", l.stage, l.events)).collect();
        lines.push(Line::raw(format!("lag: {}", lags.join("  "))));
    }
    if s.dropped > 0 || s.unreadable > 0 {
        lines.push(Line::styled(
            format!("view dropped {} unreadable {}", s.dropped, s.unreadable),
            Style::new().fg(Color::Yellow),
        ));
    }
    frame.render_widget(Paragraph::new(lines).block(block("throughput", s.focus == Panel::Throughput)), area);
}

fn draw_chart(frame: &mut Frame<'_>, area: Rect, s: &DashState, v: &WindowView) {
    let p50: Vec<(f64, f64)> = v.series.iter().map(|&(t, p, _)| (t, p)).collect();
    let p99: Vec<(f64, f64)> = v.series.iter().map(|&(t, _, p)| (t, p)).collect();
    let sla = s.meta.budgets.iter().find(|b| b.metric.starts_with("end_to_end.")).map(|b| b.max);
    let top = p99.iter().map(|&(_, y)| y).chain(sla).fold(1.0_f64, f64::max) * 1.1;
    let sla_line: Vec<(f64, f64)> = sla.map(|m| vec![(-60.0, m), (0.0, m)]).unwrap_or_default();
    let mut datasets = vec![
        Dataset::default()
            .name("p50")
            .marker(symbols::Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Green))
            .data(&p50),
        Dataset::default()
            .name("p99")
            .marker(symbols::Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Magenta))
            .data(&p99),
    ];
    // Each fault of the last minute: a bar over its window (at least a column wide).
    let secs_ago = |ns: u64| -(s.now_ns.saturating_sub(ns) as f64 / 1e9);
    let bars: Vec<Vec<(f64, f64)>> = s
        .faults
        .iter()
        .filter(|f| secs_ago(f.ended_ns.unwrap_or(s.now_ns)) >= -60.0)
        .map(|f| {
            let (from, to) = (secs_ago(f.began_ns).max(-60.0), secs_ago(f.ended_ns.unwrap_or(s.now_ns)));
            let steps = (((to - from) * 4.0).ceil() as usize).max(1);
            (0..=steps)
                .flat_map(|i| {
                    let x = from + (to - from) * i as f64 / steps as f64;
                    [(x, 0.0), (x, top)]
                })
                .collect()
        })
        .collect();
    for (i, bar) in bars.iter().enumerate() {
        let name = if i == 0 { "fault" } else { "" };
        datasets.push(
            Dataset::default()
                .name(name)
                .marker(symbols::Marker::Dot)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(Color::Yellow))
                .data(bar),
        );
    }
    if !sla_line.is_empty() {
        datasets.push(
            Dataset::default()
                .name("SLA")
                .marker(symbols::Marker::Dot)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(Color::Red))
                .data(&sla_line),
        );
    }
    let chart = Chart::new(datasets)
        .block(block("end to end over the last minute (ms)", false))
        .x_axis(Axis::default().bounds([-60.0, 0.0]).labels(["-60s", "-30s", "now"]))
        .y_axis(Axis::default().bounds([0.0, top]).labels([
            "0".to_owned(),
            format!("{:.0}", top / 2.0),
            format!("{top:.0}"),
        ]));
    frame.render_widget(chart, area);
}

fn draw_hops(frame: &mut Frame<'_>, area: Rect, s: &DashState, v: &WindowView) {
    let header = Row::new(["hop", "kind", "p50", "p99", "share"]).style(Style::new().add_modifier(Modifier::DIM));
    let slowest = v.hops.iter().map(|h| h.stats.mean).fold(0.0_f64, f64::max);
    let rows = v.hops.iter().map(|h| {
        let bar = "█".repeat(((h.share * 12.0).round() as usize).min(12));
        let mut style = Style::new();
        if h.over.is_some() {
            style = BREACH;
        } else if slowest > 0.0 && h.stats.mean == slowest {
            style = style.add_modifier(Modifier::BOLD);
        }
        Row::new([
            Cell::from(h.name.clone()),
            Cell::from(if h.transit { "transit" } else { "service" }),
            Cell::from(ms(h.stats.p50)),
            Cell::from(ms(h.stats.p99)),
            Cell::from(format!("{bar} {:.0}%", h.share * 100.0)),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Min(18),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(17),
    ];
    let table =
        Table::new(rows, widths).header(header).block(block("where the time goes (ms)", s.focus == Panel::Hops));
    frame.render_widget(table, area);
}

fn draw_histogram(frame: &mut Frame<'_>, area: Rect, s: &DashState, v: &WindowView) {
    let rows = histogram_rows(&v.bins, usize::from(area.height.saturating_sub(2)));
    let peak = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let width = usize::from(area.width.saturating_sub(20)).max(4);
    let lines: Vec<Line<'_>> = rows
        .iter()
        .map(|(label, c)| {
            let n = (*c as usize * width).div_ceil(peak as usize);
            Line::raw(format!("{label} {:<width$} {c}", "▇".repeat(n.min(width))))
        })
        .collect();
    let title = format!("distribution, last {}", s.window.label());
    frame.render_widget(Paragraph::new(lines).block(block(&title, s.focus == Panel::Histogram)), area);
}

/// The rows the distribution panel has room for: from the first populated bin to the last,
/// and when they do not fit, the run of bins holding the most events, with every event
/// below it counted in its first row (`<= edge` holds them too) and every one above in a
/// last row of its own (`> edge`), so that no event leaves the panel.
fn histogram_rows(bins: &[(f64, u64)], rows: usize) -> Vec<(String, u64)> {
    let (Some(first), Some(last)) = (bins.iter().position(|b| b.1 > 0), bins.iter().rposition(|b| b.1 > 0)) else {
        return Vec::new();
    };
    let bins = &bins[first..=last];
    let label = |edge: f64| format!("<={:>6}", ms(edge));
    if bins.len() <= rows.max(1) {
        return bins.iter().map(|&(e, c)| (label(e), c)).collect();
    }
    let sum = |b: &[(f64, u64)]| b.iter().map(|x| x.1).sum::<u64>();
    // The run of `rows` bins holding the most events if it reaches the last bin (nothing
    // lies above it); otherwise a run of `rows - 1` and a row for what lies above.
    let best = |span: usize| (0..=bins.len() - span).max_by_key(|&s| (sum(&bins[s..s + span]), std::cmp::Reverse(s)));
    let rows = rows.max(2);
    let (start, span) = match best(rows) {
        Some(s) if s + rows == bins.len() => (s, rows),
        _ => (best(rows - 1).unwrap_or(0), rows - 1),
    };
    let mut out: Vec<(String, u64)> = bins[start..start + span].iter().map(|&(e, c)| (label(e), c)).collect();
    out[0].1 += sum(&bins[..start]);
    if start + span < bins.len() {
        out.push((format!(" >{:>6}", ms(bins[start + span - 1].0)), sum(&bins[start + span..])));
    }
    out
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, s: &DashState) {
    let line = if let Some(why) = &s.failure {
        Line::styled(format!(" RUN FAILED: {why} · q quit"), BREACH)
    } else if let Some(v) = &s.verdict {
        let (text, style) = if v.passed {
            ("PASS", Style::new().fg(Color::Black).bg(Color::Green).add_modifier(Modifier::BOLD))
        } else {
            ("FAIL", Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD))
        };
        let mut spans = vec![Span::styled(format!(" {text} "), style), Span::raw(" ")];
        spans.push(Span::raw(v.lines.join(" · ")));
        spans.push(Span::raw(" · q quit"));
        Line::from(spans)
    } else {
        Line::styled(
            format!(
                " q quit · p {} · w window ({}) · tab focus",
                if s.paused { "resume" } else { "pause" },
                s.window.label()
            ),
            Style::new().add_modifier(Modifier::DIM),
        )
    };
    frame.render_widget(Paragraph::new(line), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Budget, Feed, Meta, Progress, Sample, Verdict};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn state(e2e_ms: u64) -> DashState {
        let budgets = vec![Budget { metric: "end_to_end.p99_ms".into(), max: 50.0 }];
        let meta = Meta {
            title: "quickstart".into(),
            profile: "default".into(),
            broker: "tailgate 0.1.0 @ 127.0.0.1:9092".into(),
            started_ns: 100 * S,
            planned: Some(std::time::Duration::from_secs(35)),
            budgets,
            sink: "client".into(),
        };
        let mut st = DashState::new(meta);
        for i in 0..1000u64 {
            let intended = 110 * S + i * MS;
            let stamps = format!(
                "connector:{}:{},agent:{}:{}",
                intended + MS,
                intended + 2 * MS,
                intended + 3 * MS,
                intended + 4 * MS
            );
            st.apply(Feed::Sample(Sample { intended_ns: intended, received_ns: intended + e2e_ms * MS, stamps }));
        }
        st.apply(Feed::Progress(Progress {
            sent: 12_000,
            delivered: 11_990,
            dead_lettered: 3,
            filtered: 5,
            ..Progress::default()
        }));
        st.tick(112 * S);
        st
    }

    fn render(st: &DashState, w: u16, h: u16) -> Buffer {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, st)).unwrap();
        t.backend().buffer().clone()
    }

    fn text(b: &Buffer) -> String {
        let area = b.area;
        (0..area.height)
            .map(|y| (0..area.width).map(|x| b[(x, y)].symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn find(b: &Buffer, needle: &str) -> Option<(u16, u16)> {
        text(b)
            .lines()
            .enumerate()
            .find_map(|(y, l)| l.find(needle).map(|byte| (l[..byte].chars().count() as u16, y as u16)))
    }

    #[test]
    fn a_fault_is_marked_on_the_chart_and_named_until_it_is_over() {
        let mut st = state(20);
        let mark = |ended_ns| crate::model::FaultMark { kind: "broker_restart".into(), began_ns: 108 * S, ended_ns };
        st.apply(Feed::Fault(mark(None)));
        let t = text(&render(&st, 120, 40));
        assert!(t.contains("fault broker_restart 4s ago, going on"), "{t}");
        assert!(t.contains("fault"), "the chart's legend names the mark: {t}");
        // The same fault again, ended: one mark, updated.
        st.apply(Feed::Fault(mark(Some(109 * S))));
        assert_eq!(st.faults.len(), 1);
        let t = text(&render(&st, 120, 40));
        assert!(t.contains("fault broker_restart 4s ago, over after 1.0s"), "{t}");
    }

    #[test]
    fn shows_the_numbers_the_hops_and_the_header() {
        let st = state(20);
        let b = render(&st, 120, 40);
        let t = text(&b);
        for needle in [
            "quickstart",
            "profile default",
            "tailgate 0.1.0",
            "12s elapsed, 23s left",
            "window 10s",
            "e2e  20.",
            "1000 events",
            "SLA ok: end_to_end.p99_ms <= 50",
            "source->connector",
            "connector->agent",
            "agent->client",
            "sent        12000",
            "dead-lettered   3",
            "in flight     2", // neither delivered, dead-lettered nor filtered
            "filtered        5",
            "q quit",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
    }

    #[test]
    fn an_sla_breach_is_shown_in_red() {
        let st = state(80);
        let b = render(&st, 120, 40);
        let (x, y) = find(&b, "SLA BREACHED").unwrap_or_else(|| panic!("{}", text(&b)));
        assert_eq!(b[(x, y)].fg, Color::Red);
        let (x, y) = find(&b, "e2e ").unwrap();
        assert_eq!(b[(x, y)].fg, Color::Red, "the end-to-end row is highlighted");
    }

    #[test]
    fn a_small_terminal_is_told_so() {
        let b = render(&state(20), 60, 20);
        let t = text(&b);
        assert!(t.contains("terminal too small: 60x20"), "{t}");
        assert!(!t.contains("e2e "));
    }

    #[test]
    fn fits_80_by_24_and_shows_the_verdict_when_done() {
        let mut st = state(20);
        st.apply(Feed::Finished(Verdict { passed: true, lines: vec!["end_to_end.p99_ms = 20.0 <= 50".into()] }));
        let b = render(&st, 80, 24);
        let t = text(&b);
        assert!(t.contains(" PASS "), "{t}");
        assert!(t.contains("e2e  20."), "{t}");
        assert!(t.contains("sent        12000"), "{t}");
    }

    #[test]
    fn the_distribution_shows_where_the_events_are_and_loses_none() {
        // 1,800 events from 1 to 3 ms and one at a second: the old panel showed the
        // highest bins, empty but for the outlier.
        let edges = [
            1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 500.0, 700.0,
            1000.0,
        ];
        let mut bins: Vec<(f64, u64)> = edges.iter().map(|&e| (e, 0)).collect();
        bins[0].1 = 100;
        bins[1].1 = 800;
        bins[2].1 = 700;
        bins[3].1 = 200;
        bins[18].1 = 1;
        let rows = histogram_rows(&bins, 8);
        assert_eq!(rows.len(), 8);
        assert_eq!(rows[0], ("<=  1.00".to_owned(), 100));
        assert_eq!(rows[1].1, 800);
        assert_eq!(rows[7], (" > 10.00".to_owned(), 1), "{rows:?}");
        assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 1_801);
        // Room for every populated bin: all of them, from the first to the last.
        let all = histogram_rows(&bins, 40);
        assert_eq!((all.len(), all[0].1, all[18].1), (19, 100, 1));
        // Empty bins before the first event are not shown; a run in the middle keeps
        // what lies below it in its first row.
        let mut low = bins.clone();
        low[0].1 = 0;
        low[1].1 = 3;
        low[10].1 = 900;
        let rows = histogram_rows(&low, 4);
        assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 3 + 700 + 200 + 900 + 1);
        assert!(rows.last().unwrap().0.starts_with(" >"), "{rows:?}");
        assert!(histogram_rows(&[(1.0, 0)], 5).is_empty());
    }

    #[test]
    fn at_120_by_40_the_panel_shows_the_bulk_and_an_outlier_above_it() {
        let mut st = state(4);
        st.apply(Feed::Sample(Sample {
            intended_ns: 111 * S,
            received_ns: 111 * S + 1_000 * MS,
            stamps: String::new(),
        }));
        st.tick(112 * S);
        let t = text(&render(&st, 120, 40));
        let row = |label: &str| {
            t.lines().find_map(|l| l.split('│').find(|cell| cell.starts_with(label)).map(|c| c.trim_end().to_owned()))
        };
        let bulk = row("<=  5.00").unwrap_or_else(|| panic!("{t}"));
        assert!(bulk.ends_with(" 1000"), "the 1,000 events of 4 ms: {bulk}");
        let above = row(" > ").unwrap_or_else(|| panic!("{t}"));
        assert!(above.ends_with(" 1"), "the outlier, counted above the rows: {above}");
    }
}

//! The report's charts, drawn with plotters as SVG (embedded in the HTML) and PNG (beside
//! it). Text is drawn with a bundled font (DejaVu Sans), so PNGs look the same on any
//! machine and no system fonts are needed.

use crate::frames::{self, MEASURED, WARMUP};
use crate::result::Objective;
use crate::runs::Profile;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use polars::prelude::DataFrame;
use std::path::Path;
use std::sync::Once;

const FONT: &str = "sans-serif";
const SLA: RGBColor = RGBColor(200, 30, 30);
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(255, 187, 120),
];

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Ctx<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The legend box every chart draws.
fn legend<'a, DB: DrawingBackend + 'a>(chart: &mut Ctx<'a, DB>, position: SeriesLabelPosition, size: u32) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, size))
        .draw()?;
    Ok(())
}

/// An SLA bound as a dashed line from `a` to `b`, named in the legend.
fn sla_line<DB: DrawingBackend>(
    chart: &mut Ctx<'_, DB>,
    a: (f64, f64),
    b: (f64, f64),
    metric: &str,
    limit: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(DashedLineSeries::new([a, b], 6, 4, SLA.stroke_width(1)))?
        .label(format!("SLA {metric} <= {limit}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SLA));
    Ok(())
}

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        // The bundled font is a valid TrueType file; if it were not, text would be missing.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"));
    });
}

/// A chart drawn on any plotters backend.
pub trait Chart {
    /// File stem (`percentiles`, `over-time-balanced`...).
    fn name(&self) -> String;
    /// Pixel size.
    fn size(&self) -> (u32, u32) {
        (960, 480)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Draws `chart` as `dir/<name>.svg` and `dir/<name>.png`; returns the SVG text.
pub fn render(chart: &impl Chart, dir: &Path) -> crate::Result<String> {
    register_font();
    let err = |e: Box<dyn std::error::Error>| crate::Error::Chart { chart: chart.name(), reason: e.to_string() };
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, chart.size()).into_drawing_area();
        chart.draw(&area).map_err(err)?;
        area.present().map_err(|e| err(e.into()))?;
    }
    std::fs::write(dir.join(format!("{}.svg", chart.name())), &svg).map_err(crate::io_err(dir))?;
    let png = dir.join(format!("{}.png", chart.name()));
    let area = BitMapBackend::new(&png, chart.size()).into_drawing_area();
    chart.draw(&area).map_err(err)?;
    area.present().map_err(|e| err(e.into()))?;
    Ok(svg)
}

/// The bounds on end-to-end statistics (`end_to_end.p99_ms <= 50`): (quantile, limit ms).
pub fn end_to_end_limits(objectives: &[Objective]) -> Vec<(f64, f64, String)> {
    objectives
        .iter()
        .filter_map(|o| {
            let (series, stat) = crate::gate::latency_metric(&o.metric)?;
            let q = match stat {
                crate::hlog::Stat::Quantile(q) => q,
                _ => return None,
            };
            (series == crate::END_TO_END_TAG).then_some((q, o.max?, o.metric.clone()))
        })
        .collect()
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    if (x - x.round()).abs() > 1e-6 {
        String::new()
    } else if p < 99.0 {
        format!("{p:.0}%")
    } else {
        let digits = (x.round() as usize).saturating_sub(2);
        format!("{p:.digits$}%")
    }
}

fn sla_caption(limits: &[(f64, f64, String)]) -> String {
    limits.iter().map(|(_, m, metric)| format!("SLA {metric} <= {m} ms")).collect::<Vec<_>>().join(", ")
}

/// End-to-end latency by percentile, one curve per profile, on a log scale of 1/(1-q) as
/// HdrHistogram plots do; the SLA's bounds as dashed lines with a mark at their percentile.
#[derive(Debug)]
pub struct Percentiles<'a> {
    pub profiles: &'a [Profile],
    pub limits: Vec<(f64, f64, String)>,
}

impl Chart for Percentiles<'_> {
    fn name(&self) -> String {
        "percentiles".into()
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        area.fill(&WHITE)?;
        let curves: Vec<Vec<(f64, f64)>> = self
            .profiles
            .iter()
            .map(|p| {
                p.end_to_end
                    .iter_quantiles(8)
                    .map(|v| v.quantile_iterated_to())
                    .zip(p.end_to_end.iter_quantiles(8).map(|v| v.value_iterated_to() as f64 / 1000.0))
                    .filter(|(q, _)| *q < 1.0)
                    .map(|(q, v)| (-(1.0 - q).log10(), v))
                    .collect()
            })
            .collect();
        let count = self.profiles.iter().map(|p| p.end_to_end.len()).max().unwrap_or(1).max(10);
        let x_max = (count as f64).log10().ceil().max(2.0);
        let y_max =
            curves.iter().flatten().map(|(_, v)| *v).chain(self.limits.iter().map(|l| l.1)).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("End-to-end latency by percentile ({})", sla_caption(&self.limits)), (FONT, 18))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_labels((x_max as usize) * 2 + 1)
            .x_label_formatter(&|x| percentile_label(*x))
            .x_desc("percentile")
            .y_desc("ms")
            .label_style((FONT, 13))
            .draw()?;
        for (i, (p, curve)) in self.profiles.iter().zip(&curves).enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(curve.iter().copied(), c.stroke_width(2)))?
                .label(format!("{} (p99 {:.1} ms)", p.name, p.result.end_to_end.p99_ms))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        for (q, limit, _) in &self.limits {
            chart.draw_series(DashedLineSeries::new([(0.0, *limit), (x_max, *limit)], 6, 4, SLA.stroke_width(1)))?;
            let x = -(1.0 - q.min(0.999_999)).log10();
            chart.draw_series(std::iter::once(Circle::new((x, *limit), 4, SLA.filled())))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft, 13)?;
        Ok(())
    }
}

/// p50 and p99 per second for one profile, warm-up and faults shaded, SLA dashed; on the
/// right-hand axis, the target rate of each second and the rate delivered.
#[derive(Debug)]
pub struct OverTime<'a> {
    pub profile: &'a str,
    pub seconds: &'a DataFrame,
    pub limits: Vec<(f64, f64, String)>,
    pub warmup_s: f64,
    /// The faults the run applied: when each began and ended (absent: to the end).
    pub faults: &'a [crate::result::FaultRecord],
    /// Events due in each second since the load began (empty for results that lack it).
    pub target_per_s: &'a [f64],
}

impl Chart for OverTime<'_> {
    fn name(&self) -> String {
        format!("over-time-{}", self.profile)
    }
    fn size(&self) -> (u32, u32) {
        (960, 340)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        area.fill(&WHITE)?;
        let names = frames::strings(self.seconds, "profile");
        let phases = frames::strings(self.seconds, "phase");
        let (t, p50, p99, rate) = (
            frames::floats(self.seconds, "t_s"),
            frames::floats(self.seconds, "p50_ms"),
            frames::floats(self.seconds, "p99_ms"),
            frames::floats(self.seconds, "rate"),
        );
        let rows: Vec<usize> = (0..names.len()).filter(|&i| names[i] == self.profile).collect();
        let t_max = rows.iter().map(|&i| t[i] + 1.0).fold(self.warmup_s + 1.0, f64::max);
        // The measured seconds set the scale (warm-up starts cold and may spike; its points
        // are drawn at the top edge then), with headroom above the curves for the legend.
        let y_max = rows
            .iter()
            .filter(|&&i| phases[i] == MEASURED)
            .map(|&i| p99[i])
            .chain(self.limits.iter().map(|l| l.1))
            .fold(1.0, f64::max)
            * 1.45;
        let rate_max =
            rows.iter().map(|&i| rate[i]).chain(self.target_per_s.iter().copied()).fold(1.0, f64::max) * 1.45;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{}: end-to-end latency per second", self.profile), (FONT, 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..t_max, 0f64..y_max)?
            .set_secondary_coord(0f64..t_max, 0f64..rate_max);
        chart.configure_mesh().x_desc("seconds since the load began").y_desc("ms").label_style((FONT, 12)).draw()?;
        chart.configure_secondary_axes().y_desc("events/s").label_style((FONT, 12)).draw()?;
        // Rates first, faint, so that the latency curves stay on top.
        let faint = RGBColor(90, 90, 90);
        if !self.target_per_s.is_empty() {
            let steps = self.target_per_s.iter().enumerate().flat_map(|(s, r)| [(s as f64, *r), (s as f64 + 1.0, *r)]);
            chart
                .draw_secondary_series(DashedLineSeries::new(steps, 3, 3, faint.stroke_width(1)))?
                .label("target rate (right axis)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], faint.stroke_width(1)));
        }
        let delivered: Vec<(f64, f64)> = rows.iter().map(|&i| (t[i] + 0.5, rate[i])).collect();
        chart
            .draw_secondary_series(LineSeries::new(delivered, faint.mix(0.5).stroke_width(1)))?
            .label("delivered rate (right axis)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], faint.mix(0.5).stroke_width(1)));
        if self.warmup_s > 0.0 {
            let shade = RGBColor(200, 200, 200).mix(0.35).filled();
            chart
                .draw_series(std::iter::once(Rectangle::new([(0.0, 0.0), (self.warmup_s, y_max)], shade)))?
                .label("warm-up (not in the statistics)")
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], shade));
        }
        // Each fault's window, at least a quarter second wide so an instant one shows.
        let shade = RGBColor(220, 60, 40).mix(0.22).filled();
        for (i, f) in self.faults.iter().enumerate() {
            let end = f.ended_at_s.unwrap_or(t_max).max(f.began_at_s + 0.25);
            let band =
                chart.draw_series(std::iter::once(Rectangle::new([(f.began_at_s, 0.0), (end, y_max)], shade)))?;
            if i == 0 {
                band.label("fault").legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], shade));
            }
            let label = Text::new(f.kind.clone(), (f.began_at_s, y_max * 0.97), (FONT, 11).into_font().color(&BLACK));
            chart.draw_series(std::iter::once(label))?;
        }
        for (phase, style) in [(WARMUP, 0.45), (MEASURED, 1.0)] {
            let pts = |v: &[f64]| -> Vec<(f64, f64)> {
                rows.iter().filter(|&&i| phases[i] == phase).map(|&i| (t[i] + 0.5, v[i].min(y_max))).collect()
            };
            let (c50, c99) = (color(0).mix(style), color(1).mix(style));
            let s = chart.draw_series(LineSeries::new(pts(&p50), c50.stroke_width(2)))?;
            if phase == MEASURED {
                s.label("p50").legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c50.stroke_width(2)));
            }
            let s = chart.draw_series(LineSeries::new(pts(&p99), c99.stroke_width(2)))?;
            if phase == MEASURED {
                s.label("p99").legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c99.stroke_width(2)));
            }
        }
        for (_, limit, metric) in &self.limits {
            sla_line(&mut chart, (0.0, *limit), (t_max, *limit), metric, *limit)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, 12)?;
        Ok(())
    }
}

/// A capacity search: the end-to-end p99 of each step against its rate (filled: the rate
/// was sustained), the SLA's p99 bound dashed, the highest sustained rate marked.
#[derive(Debug)]
pub struct Capacity<'a> {
    /// (rate, p99 ms, sustained) of each step, in the order tried.
    pub points: &'a [(f64, f64, bool)],
    pub p99_bound_ms: Option<f64>,
    pub max_rate: Option<f64>,
    pub title: &'a str,
}

impl Chart for Capacity<'_> {
    fn name(&self) -> String {
        "capacity".into()
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        area.fill(&WHITE)?;
        let mut pts: Vec<(f64, f64, bool)> = self.points.to_vec();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let x_max = pts.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
        // Overloaded steps' p99 can be seconds; the scale stops at four times the bound so
        // that the sustained ones stay readable (points above are drawn at the top edge).
        let highest = pts.iter().map(|p| p.1).fold(1.0, f64::max);
        let y_max = self.p99_bound_ms.map_or(highest, |b| highest.min(4.0 * b).max(b)) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, (FONT, 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("target rate, events/s")
            .y_desc("end-to-end p99, ms")
            .label_style((FONT, 12))
            .draw()?;
        let c = color(1);
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1.min(y_max))), c.stroke_width(2)))?
            .label("p99 of each step (filled: sustained)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| {
            let style = if p.2 { c.filled() } else { WHITE.filled() };
            Circle::new((p.0, p.1.min(y_max)), 4, style)
        }))?;
        chart.draw_series(
            pts.iter().filter(|p| !p.2).map(|p| Circle::new((p.0, p.1.min(y_max)), 4, c.stroke_width(1))),
        )?;
        if let Some(b) = self.p99_bound_ms {
            sla_line(&mut chart, (0.0, b), (x_max, b), "end_to_end.p99_ms", b)?;
        }
        if let Some(m) = self.max_rate {
            let g = RGBColor(30, 130, 60);
            chart
                .draw_series(DashedLineSeries::new([(m, 0.0), (m, y_max)], 6, 4, g.stroke_width(2)))?
                .label(format!("highest sustained: {m:.0}/s"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], g.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft, 12)?;
        Ok(())
    }
}

/// Where the time goes: each profile's hop means stacked (they sum to its end-to-end mean),
/// with its end-to-end p99 marked and the SLA's p99 bound dashed.
#[derive(Debug)]
pub struct Hops<'a> {
    pub profiles: &'a [Profile],
    pub hops: &'a DataFrame,
    pub limits: Vec<(f64, f64, String)>,
}

impl Chart for Hops<'_> {
    fn name(&self) -> String {
        "hops".into()
    }
    fn size(&self) -> (u32, u32) {
        (960, 160 + 60 * self.profiles.len() as u32)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        area.fill(&WHITE)?;
        let (names, hops) = (frames::strings(self.hops, "profile"), frames::strings(self.hops, "hop"));
        let mean = frames::floats(self.hops, "mean_ms");
        let x_max = self
            .profiles
            .iter()
            .map(|p| p.result.end_to_end.p99_ms)
            .chain(self.limits.iter().map(|l| l.1))
            .chain(self.profiles.iter().map(|p| p.result.end_to_end.mean_ms))
            .fold(1.0, f64::max)
            * 1.15;
        let n = self.profiles.len();
        let mut chart = ChartBuilder::on(area)
            .caption("Where the time goes: mean per hop, stacked (▲ end-to-end p99)", (FONT, 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(140)
            .build_cartesian_2d(0f64..x_max, 0f64..n as f64)?;
        let labels: Vec<String> = self.profiles.iter().map(|p| p.name.clone()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n * 2 + 1)
            .y_label_formatter(&|y| {
                let i = (y - 0.5).round();
                if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc("ms")
            .label_style((FONT, 12))
            .draw()?;
        let mut hop_order: Vec<String> = Vec::new();
        for h in &hops {
            if !hop_order.contains(h) {
                hop_order.push(h.clone());
            }
        }
        for (k, hop) in hop_order.iter().enumerate() {
            let c = color(k);
            let mut bars = Vec::new();
            for (row, p) in self.profiles.iter().enumerate() {
                let before: f64 = (0..names.len())
                    .filter(|&i| {
                        names[i] == p.name && hop_order.iter().position(|h| *h == hops[i]).is_some_and(|j| j < k)
                    })
                    .map(|i| mean[i])
                    .sum();
                let own: f64 =
                    (0..names.len()).filter(|&i| names[i] == p.name && hops[i] == *hop).map(|i| mean[i]).sum();
                let y = row as f64;
                bars.push(Rectangle::new([(before, y + 0.2), (before + own, y + 0.8)], c.filled()));
            }
            chart
                .draw_series(bars)?
                .label(hop.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        }
        for (row, p) in self.profiles.iter().enumerate() {
            let y = row as f64 + 0.5;
            chart.draw_series(std::iter::once(TriangleMarker::new(
                (p.result.end_to_end.p99_ms, y),
                6,
                BLACK.filled(),
            )))?;
        }
        for (q, limit, metric) in &self.limits {
            if (*q - 0.99).abs() < 1e-9 {
                sla_line(&mut chart, (*limit, 0.0), (*limit, n as f64), metric, *limit)?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 11)?;
        Ok(())
    }
}

/// Achieved throughput against end-to-end p99, one point per profile: the frontier.
#[derive(Debug)]
pub struct Frontier<'a> {
    pub profiles: &'a [Profile],
    pub limits: Vec<(f64, f64, String)>,
}

impl Chart for Frontier<'_> {
    fn name(&self) -> String {
        "frontier".into()
    }
    fn size(&self) -> (u32, u32) {
        (640, 420)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        area.fill(&WHITE)?;
        let pts: Vec<(f64, f64)> =
            self.profiles.iter().map(|p| (p.result.achieved_rate, p.result.end_to_end.p99_ms)).collect();
        let (lo, hi) = pts.iter().fold((f64::INFINITY, 0f64), |(lo, hi), (x, _)| (lo.min(*x), hi.max(*x)));
        let pad = ((hi - lo) * 0.2).max(hi * 0.05).max(1.0);
        let (x0, x1) = ((lo - pad).max(0.0), hi + pad);
        let y_max = pts.iter().map(|p| p.1).chain(self.limits.iter().map(|l| l.1)).fold(1.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption("Throughput against end-to-end p99", (FONT, 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, 0f64..y_max)?;
        chart.configure_mesh().x_desc("achieved events/s").y_desc("p99 ms").label_style((FONT, 12)).draw()?;
        for (i, (p, pt)) in self.profiles.iter().zip(&pts).enumerate() {
            let c = color(i);
            let style = (FONT, 13).into_font().color(&c);
            chart.draw_series(std::iter::once(
                EmptyElement::at(*pt)
                    + Circle::new((0, 0), 6, c.filled())
                    + Text::new(p.name.clone(), (10, -16), style),
            ))?;
        }
        for (q, limit, metric) in &self.limits {
            if (*q - 0.99).abs() < 1e-9 {
                sla_line(&mut chart, (x0, *limit), (x1, *limit), metric, *limit)?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 12)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels_name_the_nines() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert_eq!(percentile_label(1.5), "");
    }
}

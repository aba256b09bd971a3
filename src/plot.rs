//! Plots (plotters): every figure is written twice, as `<stem>.png` and `<stem>.svg`. The PNG is
//! rendered with an embedded font (DejaVu Sans, `assets/fonts/`), so no system fonts are needed;
//! the SVG names the `sans-serif` family and leaves the text to the viewer.

use crate::output::SummaryRow;
use anyhow::{anyhow, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| ())
            .expect("embedded DejaVu Sans is a valid font");
    });
}

/// A figure that can be drawn on any plotters backend.
trait Figure {
    /// Canvas size \[px\].
    fn size(&self) -> (u32, u32);
    /// Draws the figure on `root` (already filled white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// `stem` with `.ext` appended (the stem may contain dots: `model.fit`).
pub fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The files a figure at `stem` is written to: `<stem>.png` and `<stem>.svg`.
pub fn outputs(stem: &Path) -> [PathBuf; 2] {
    [with_ext(stem, "png"), with_ext(stem, "svg")]
}

/// Draws `fig` into `<stem>.png` and `<stem>.svg` (see [`outputs`]).
fn render(stem: &Path, fig: &impl Figure) -> Result<()> {
    register_font();
    let [png, svg] = outputs(stem);
    draw_into(BitMapBackend::new(&png, fig.size()).into_drawing_area(), fig, &png)?;
    draw_into(SVGBackend::new(&svg, fig.size()).into_drawing_area(), fig, &svg)
}

/// Fills `root` white, draws `fig` on it and writes it out (to `path`, named in errors).
fn draw_into<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &impl Figure, path: &Path) -> Result<()> {
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    fig.draw(&root)?;
    root.present()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Draws the series legend in the upper-left corner.
fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

/// Grouped bars of TTFT p50/p99 for turn 1 and turns ≥ 2, one group per policy \[ms\], log scale,
/// into `<stem>.png` and `<stem>.svg`.
///
/// # Errors
/// Drawing or file errors.
pub fn ttft_by_policy(stem: &Path, rows: &[SummaryRow]) -> Result<()> {
    render(stem, &TtftByPolicy { rows })
}

struct TtftByPolicy<'a> {
    rows: &'a [SummaryRow],
}

impl Figure for TtftByPolicy<'_> {
    fn size(&self) -> (u32, u32) {
        (960, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let rows = self.rows;
        type Series = (&'static str, fn(&SummaryRow) -> f64, RGBColor);
        let series: [Series; 4] = [
            (
                "turn 1 p50",
                |s| s.get("ttft_turn1_p50_ms").unwrap_or(f64::NAN),
                RGBColor(31, 119, 180),
            ),
            (
                "turn 1 p99",
                |s| s.get("ttft_turn1_p99_ms").unwrap_or(f64::NAN),
                RGBColor(174, 199, 232),
            ),
            (
                "turn ≥2 p50",
                |s| s.get("ttft_turn2plus_p50_ms").unwrap_or(f64::NAN),
                RGBColor(214, 39, 40),
            ),
            (
                "turn ≥2 p99",
                |s| s.get("ttft_turn2plus_p99_ms").unwrap_or(f64::NAN),
                RGBColor(255, 152, 150),
            ),
        ];
        let max = rows
            .iter()
            .flat_map(|s| series.iter().map(move |(_, f, _)| f(s)))
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max);
        let min = rows
            .iter()
            .flat_map(|s| series.iter().map(move |(_, f, _)| f(s)))
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(max, f64::min);
        let n = rows.len().max(1);
        let floor = (min / 2.0).max(0.1);
        let mut chart = ChartBuilder::on(root)
            .caption("TTFT by policy", ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, (floor..max * 2.0).log_scale())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-9 && i >= 0.0 && (i as usize) < rows.len() {
                    rows[i as usize].policy.clone()
                } else {
                    String::new()
                }
            })
            .y_labels(12)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("TTFT [ms] (log)")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let width = 0.8 / series.len() as f64;
        for (k, (label, f, color)) in series.iter().enumerate() {
            let bars = rows.iter().enumerate().filter(|(_, s)| f(s).is_finite()).map(|(i, s)| {
                let x0 = i as f64 - 0.4 + k as f64 * width;
                Rectangle::new([(x0, floor), (x0 + width * 0.9, f(s).max(floor))], color.filled())
            });
            chart
                .draw_series(bars)
                .map_err(|e| anyhow!("{e}"))?
                .label(*label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        }
        draw_legend(&mut chart)
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Measured vs predicted time of every fitted sample, log–log, one colour per phase, with the
/// y = x line, into `<stem>.png` and `<stem>.svg`.
///
/// # Errors
/// Drawing or file errors.
pub fn calibration_fit(stem: &Path, c: &crate::calibrate::Calibration) -> Result<()> {
    render(stem, &CalibrationFit { c })
}

struct CalibrationFit<'a> {
    c: &'a crate::calibrate::Calibration,
}

impl Figure for CalibrationFit<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 760)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self.c;
        let pts: Vec<&crate::calibrate::FitPoint> = c
            .points
            .iter()
            .filter(|p| p.measured_ms > 0.0 && p.predicted_ms > 0.0)
            .collect();
        let lo = pts
            .iter()
            .flat_map(|p| [p.measured_ms, p.predicted_ms])
            .fold(f64::INFINITY, f64::min)
            .max(1e-3)
            / 1.5;
        let hi = pts
            .iter()
            .flat_map(|p| [p.measured_ms, p.predicted_ms])
            .fold(1.0f64, f64::max)
            * 1.5;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("calibration fit: {} on {}", c.file.model, c.file.gpu),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("measured [ms]")
            .y_desc("predicted [ms]")
            .x_labels(6)
            .y_labels(6)
            .max_light_lines(1)
            .x_label_formatter(&|v| fmt_ms(*v))
            .y_label_formatter(&|v| fmt_ms(*v))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.5)))
            .map_err(|e| anyhow!("{e}"))?
            .label("y = x")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
        let colors = [
            RGBColor(31, 119, 180),
            RGBColor(214, 39, 40),
            RGBColor(44, 160, 44),
            RGBColor(148, 103, 189),
        ];
        let mut phases: Vec<&str> = pts.iter().map(|p| p.phase.as_str()).collect();
        phases.sort_unstable();
        phases.dedup();
        for (k, ph) in phases.iter().enumerate() {
            let color = colors[k % colors.len()];
            let n = pts.iter().filter(|p| p.phase == *ph).count();
            chart
                .draw_series(
                    pts.iter()
                        .filter(|p| p.phase == *ph)
                        .map(|p| Circle::new((p.measured_ms, p.predicted_ms), 3, color.mix(0.6).filled())),
                )
                .map_err(|e| anyhow!("{e}"))?
                .label(format!("{ph} (n={n})"))
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        draw_legend(&mut chart)
    }
}

/// One sweep metric against the arrival rate: a line per policy (seed-averaged), crossovers marked
/// with black crosses, into `<stem>.png` and `<stem>.svg`. Latencies (`*_ms`) are drawn on a log
/// axis.
///
/// # Errors
/// Drawing or file errors.
pub fn sweep_metric(stem: &Path, rates: &[f64], m: &crate::sweep::MetricCurves) -> Result<()> {
    render(stem, &SweepMetric { rates, m })
}

struct SweepMetric<'a> {
    rates: &'a [f64],
    m: &'a crate::sweep::MetricCurves,
}

impl Figure for SweepMetric<'_> {
    fn size(&self) -> (u32, u32) {
        (960, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (rates, m) = (self.rates, self.m);
        let (metric, curves) = (m.metric.as_str(), &m.curves);
        let log = log_axis(metric);
        let y = |v: f64| axis_value(v, log);
        let (lo, hi) = axis_range(curves, log);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.08).max(if log { 0.05 } else { 1e-9 });
        let (lo, hi) = (if log { lo - pad } else { lo.min(0.0) }, hi + pad);
        let (x0, x1) = (
            rates.first().copied().unwrap_or(0.0),
            rates.last().copied().unwrap_or(1.0),
        );
        let xpad = ((x1 - x0) * 0.04).max(0.05);
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{metric} vs load"), ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(x0 - xpad..x1 + xpad, lo..hi)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("new conversations per second")
            .y_desc(if log {
                format!("{metric} (log)")
            } else {
                metric.to_string()
            })
            .y_label_formatter(&|v| if log { fmt_ms(10f64.powf(*v)) } else { format!("{v:.3}") })
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, (policy, curve)) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = rates
                .iter()
                .zip(curve)
                .filter(|(_, v)| v.is_finite())
                .map(|(&r, &v)| (r, y(v)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(policy.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .draw_series(
                m.crossings
                    .iter()
                    .map(|c| Cross::new((c.rate_per_s, y(c.value)), 7, BLACK.stroke_width(2))),
            )
            .map_err(|e| anyhow!("{e}"))?;
        draw_legend(&mut chart)
    }
}

/// A policy's sweep variants (rows, labelled by their swept `[key=value]` settings) against the
/// arrival rate (columns), each cell coloured by the seed-averaged `metric` on a blue (low) to
/// yellow (high) scale (log for `*_ms`) and labelled with its value; into `<stem>.png` and
/// `<stem>.svg`. The threshold and hysteresis heatmaps of DESIGN §5.
///
/// # Errors
/// Drawing or file errors.
pub fn sweep_heatmap(stem: &Path, h: &crate::sweep::Heatmap) -> Result<()> {
    render(stem, &SweepHeatmap { h })
}

struct SweepHeatmap<'a> {
    h: &'a crate::sweep::Heatmap,
}

impl Figure for SweepHeatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = self.h.rows.len() as u32;
        (960, (160 + 44 * rows).max(360))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let h = self.h;
        let (nx, ny) = (h.rates_per_s.len(), h.rows.len());
        let log = log_axis(&h.metric);
        let t = |v: f64| axis_value(v, log);
        let (lo, hi) = axis_range(&h.rows, log);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let label_width = h.rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(4) as u32;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{}: {} by setting and load", h.policy, h.metric),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size((label_width * 8 + 16).min(420))
            .build_cartesian_2d(0f64..nx as f64, 0f64..ny as f64)
            .map_err(|e| anyhow!("{e}"))?;
        let xs: Vec<String> = h.rates_per_s.iter().map(|r| format!("{r}")).collect();
        // First variant on top: row j is drawn at y = ny − 1 − j.
        let ys: Vec<String> = h.rows.iter().rev().map(|(l, _)| l.clone()).collect();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2 * nx + 1)
            .y_labels(2 * ny + 1)
            .x_label_formatter(&|v| cell_label(*v, &xs))
            .y_label_formatter(&|v| cell_label(*v, &ys))
            .x_desc("new conversations per second")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (j, (_, vals)) in h.rows.iter().enumerate() {
            for (i, &v) in vals.iter().enumerate() {
                let (x, y) = (i as f64, (ny - 1 - j) as f64);
                let fill = if v.is_finite() {
                    heat_color((t(v) - lo) / span)
                } else {
                    RGBColor(220, 220, 220)
                };
                let text = if v.is_finite() { fmt_value(v) } else { "–".into() };
                draw_cell(&mut chart, (x, y), fill, text, 0.3)?;
            }
        }
        Ok(())
    }
}

/// One cell of a grid chart (axes over cell indices): the unit square with lower-left corner
/// `(x, y)` filled with `fill`, and `text` in 12-px type `dx` cells from its left edge.
fn draw_cell<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    (x, y): (f64, f64),
    fill: RGBColor,
    text: String,
    dx: f64,
) -> Result<()> {
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(x, y), (x + 1.0, y + 1.0)],
            fill.filled(),
        )))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(std::iter::once(Text::new(
            text,
            (x + dx, y + 0.62),
            ("sans-serif", 12).into_font(),
        )))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Whether a sweep metric is drawn on a log axis: latencies (`*_ms`).
fn log_axis(metric: &str) -> bool {
    metric.ends_with("_ms")
}

/// A metric value on its axis: log10 (of at least 1 µs) on a log axis, else itself.
fn axis_value(v: f64, log: bool) -> f64 {
    if log {
        v.max(1e-3).log10()
    } else {
        v
    }
}

/// (min, max) on the axis of the finite values of named series; (∞, −∞) when there are none.
fn axis_range(series: &[(String, Vec<f64>)], log: bool) -> (f64, f64) {
    series
        .iter()
        .flat_map(|(_, vals)| vals.iter().copied())
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(axis_value(v, log)), b.max(axis_value(v, log)))
        })
}

/// The label of a cell axis at `v`: `axis[i]` at a cell centre `i + 0.5`, nothing elsewhere (the
/// axes of the heatmaps run over cell indices).
fn cell_label<T: ToString>(v: f64, axis: &[T]) -> String {
    let i = v.floor() as usize;
    if (v - i as f64 - 0.5).abs() < 1e-9 && i < axis.len() {
        axis[i].to_string()
    } else {
        String::new()
    }
}

/// A blue (0) → green → yellow (1) scale, light enough for black labels.
fn heat_color(f: f64) -> RGBColor {
    let f = f.clamp(0.0, 1.0);
    let stops = [(120.0, 160.0, 230.0), (130.0, 210.0, 150.0), (250.0, 230.0, 110.0)];
    let (a, b, u) = if f < 0.5 {
        (stops[0], stops[1], f * 2.0)
    } else {
        (stops[1], stops[2], (f - 0.5) * 2.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A metric value with 3 significant digits (no exponent for the ranges ppdsim prints).
fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The (L, m) routing map: one cell per (context, append) pair, green where the local route is
/// cheaper and orange where the remote one is, shaded by how much (|log₂ of the cost ratio|, up
/// to 2×), with the cost ratio written in each cell; into `<stem>.png` and `<stem>.svg`.
///
/// # Errors
/// Drawing or file errors.
pub fn routing_map(
    stem: &Path,
    title: &str,
    contexts: &[u32],
    appends: &[u32],
    cells: &[crate::routing_map::MapCell],
) -> Result<()> {
    render(
        stem,
        &RoutingMap {
            title,
            contexts,
            appends,
            cells,
        },
    )
}

struct RoutingMap<'a> {
    title: &'a str,
    contexts: &'a [u32],
    appends: &'a [u32],
    cells: &'a [crate::routing_map::MapCell],
}

impl Figure for RoutingMap<'_> {
    fn size(&self) -> (u32, u32) {
        (960, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (contexts, appends) = (self.contexts, self.appends);
        let (nx, ny) = (contexts.len(), appends.len());
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..nx as f64, 0f64..ny as f64)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2 * nx + 1)
            .y_labels(2 * ny + 1)
            .x_label_formatter(&|v| cell_label(*v, contexts))
            .y_label_formatter(&|v| cell_label(*v, appends))
            .x_desc("context L [tokens]")
            .y_desc("new tokens m")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for c in self.cells {
            let (Some(i), Some(j)) = (
                contexts.iter().position(|&l| l == c.context_tokens),
                appends.iter().position(|&m| m == c.append_tokens),
            ) else {
                continue;
            };
            let ratio = (c.local_cost_ms / c.remote_cost_ms).max(1e-9);
            let strength = ratio.log2().abs().min(1.0);
            let (r, g, b) = if c.route == crate::routing_map::MapRoute::Remote {
                (230.0, 120.0, 30.0)
            } else {
                (40.0, 160.0, 80.0)
            };
            let mix = |v: f64| (255.0 - (255.0 - v) * (0.25 + 0.75 * strength)) as u8;
            let fill = RGBColor(mix(r), mix(g), mix(b));
            draw_cell(&mut chart, (i as f64, j as f64), fill, format!("{ratio:.2}"), 0.28)?;
        }
        Ok(())
    }
}

//! Plots (plotters, PNG), rendered with an embedded font (DejaVu Sans, `assets/fonts/`) so no
//! system fonts are needed.

use crate::metrics::Summary;
use anyhow::{anyhow, Result};
use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use std::path::Path;
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

/// Grouped bars of TTFT p50/p99 for turn 1 and turns ≥ 2, one group per policy \[ms\], log scale.
///
/// # Errors
/// Drawing or file errors.
pub fn ttft_by_policy(path: &Path, summaries: &[Summary]) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    type Series = (&'static str, fn(&Summary) -> f64, RGBColor);
    let series: [Series; 4] = [
        ("turn 1 p50", |s| s.ttft_turn1.p50_ms, RGBColor(31, 119, 180)),
        ("turn 1 p99", |s| s.ttft_turn1.p99_ms, RGBColor(174, 199, 232)),
        ("turn ≥2 p50", |s| s.ttft_turn2plus.p50_ms, RGBColor(214, 39, 40)),
        ("turn ≥2 p99", |s| s.ttft_turn2plus.p99_ms, RGBColor(255, 152, 150)),
    ];
    let max = summaries
        .iter()
        .flat_map(|s| series.iter().map(move |(_, f, _)| f(s)))
        .fold(1.0f64, f64::max);
    let min = summaries
        .iter()
        .flat_map(|s| series.iter().map(move |(_, f, _)| f(s)))
        .filter(|v| *v > 0.0)
        .fold(max, f64::min);
    let n = summaries.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("TTFT by policy", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, ((min / 2.0).max(0.1)..max * 2.0).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-9 && i >= 0.0 && (i as usize) < summaries.len() {
                summaries[i as usize].policy.clone()
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
        let bars = summaries.iter().enumerate().map(|(i, s)| {
            let x0 = i as f64 - 0.4 + k as f64 * width;
            Rectangle::new(
                [(x0, (min / 2.0).max(0.1)), (x0 + width * 0.9, f(s).max(0.1))],
                color.filled(),
            )
        });
        chart
            .draw_series(bars)
            .map_err(|e| anyhow!("{e}"))?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    draw_legend(&mut chart)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
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
/// y = x line.
///
/// # Errors
/// Drawing or file errors.
pub fn calibration_fit(path: &Path, c: &crate::calibrate::Calibration) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (900, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
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
    let mut chart = ChartBuilder::on(&root)
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
    draw_legend(&mut chart)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// One sweep metric against the arrival rate: a line per policy (seed-averaged), crossovers marked
/// with black crosses. Latencies (`*_ms`) are drawn on a log axis.
///
/// # Errors
/// Drawing or file errors.
pub fn sweep_metric(path: &Path, rates: &[f64], m: &crate::sweep::MetricCurves) -> Result<()> {
    let (metric, curves) = (m.metric.as_str(), &m.curves);
    register_font();
    let log = metric.ends_with("_ms");
    let y = |v: f64| if log { v.max(1e-3).log10() } else { v };
    let ys: Vec<f64> = curves
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
        (a.min(y(v)), b.max(y(v)))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(if log { 0.05 } else { 1e-9 });
    let (lo, hi) = (if log { lo - pad } else { lo.min(0.0) }, hi + pad);
    let (x0, x1) = (
        rates.first().copied().unwrap_or(0.0),
        rates.last().copied().unwrap_or(1.0),
    );
    let xpad = ((x1 - x0) * 0.04).max(0.05);
    let root = BitMapBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
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
    draw_legend(&mut chart)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// The (L, m) routing map: one cell per (context, append) pair, green where the local route is
/// cheaper and orange where the remote one is, shaded by how much (|log₂ of the cost ratio|, up
/// to 2×), with the cost ratio written in each cell.
///
/// # Errors
/// Drawing or file errors.
pub fn routing_map(
    path: &Path,
    title: &str,
    contexts: &[u32],
    appends: &[u32],
    cells: &[crate::routing_map::MapCell],
) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (nx, ny) = (contexts.len(), appends.len());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..nx as f64, 0f64..ny as f64)
        .map_err(|e| anyhow!("{e}"))?;
    let label = |v: &f64, axis: &[u32]| {
        let i = v.floor() as usize;
        if (v - i as f64 - 0.5).abs() < 1e-9 && i < axis.len() {
            axis[i].to_string()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(2 * nx + 1)
        .y_labels(2 * ny + 1)
        .x_label_formatter(&|v| label(v, contexts))
        .y_label_formatter(&|v| label(v, appends))
        .x_desc("context L [tokens]")
        .y_desc("new tokens m")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for c in cells {
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
        let (x, y) = (i as f64, j as f64);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x, y), (x + 1.0, y + 1.0)],
                RGBColor(mix(r), mix(g), mix(b)).filled(),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{ratio:.2}"),
                (x + 0.28, y + 0.62),
                ("sans-serif", 12).into_font(),
            )))
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

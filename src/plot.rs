//! Plots (plotters): every figure is written twice, as `<stem>.png` and `<stem>.svg`. The PNG is
//! rendered with an embedded font (DejaVu Sans, `assets/fonts/`), so no system fonts are needed;
//! the SVG names the `sans-serif` family and leaves the text to the viewer.
//!
//! Style shared by every figure: the Okabe–Ito colour-blind-safe palette (Okabe & Ito, *Color
//! Universal Design*, 2008), a distinct marker and line dash per series on top of its colour,
//! legends in a panel beside the data, 1–2–5 ticks on log axes, titles and axis labels in words
//! with units.

use crate::output::SummaryRow;
use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
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

/// A figure drawn into a temporary directory beside its destination, put in place by
/// [`StagedFigure::commit`] (dropped uncommitted, it is removed and the destination untouched).
pub struct StagedFigure {
    _stage: crate::outdir::Staging,
    staged: PathBuf,
    dest: PathBuf,
}

impl StagedFigure {
    /// Draws a figure for `<dest>.png` and `<dest>.svg`: `draw` is given the temporary stem to
    /// draw at (it calls one of this module's figure functions).
    ///
    /// # Errors
    /// Creating the temporary directory; drawing errors.
    pub fn draw(dest: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        let stage = crate::outdir::Staging::beside(dest)?;
        let staged = stage.path().join("figure");
        draw(&staged)?;
        Ok(StagedFigure {
            _stage: stage,
            staged,
            dest: dest.to_path_buf(),
        })
    }

    /// Renames the PNG and the SVG into place; returns the PNG's path.
    ///
    /// # Errors
    /// Renaming errors.
    pub fn commit(self) -> Result<PathBuf> {
        let dest = outputs(&self.dest);
        for (tmp, to) in outputs(&self.staged).iter().zip(&dest) {
            std::fs::rename(tmp, to).with_context(|| format!("renaming onto {}", to.display()))?;
        }
        let [png, _] = dest;
        Ok(png)
    }
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

/// Maps any plotters error into anyhow.
fn pe<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

// ---- palette, markers, dashes -----------------------------------------------------------

/// Okabe–Ito colours, in the order series take them (with grey for its yellow). With 8 colours,
/// 5 markers and 4 dashes, series up to 40 apart never share all three.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(140, 140, 140), // grey (in place of Okabe–Ito's yellow, too pale on white)
];

/// Series `k`'s colour.
fn color(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

/// Series `k`'s marker: circle, triangle, square, diamond, cross, in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
    Cross,
}

fn marker(k: usize) -> Marker {
    [
        Marker::Circle,
        Marker::Triangle,
        Marker::Square,
        Marker::Diamond,
        Marker::Cross,
    ][k % 5]
}

/// Series `k`'s dash pattern in px (dash, gap): solid, dashed, dotted, long dash, in turn (the
/// cycle of 4 against the palette's 8 and the markers' 5 keeps neighbours apart).
fn dash(k: usize) -> Option<(u32, u32)> {
    [None, Some((9, 5)), Some((2, 4)), Some((16, 6))][k % 4]
}

/// Draws the line through `pts` in series `k`'s colour and dash, `width` px wide.
fn draw_line<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    k: usize,
    width: u32,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let style = color(k).stroke_width(width);
    draw_styled_line(chart, pts, style, dash(k))
}

/// Draws a line through `pts` with `style`, solid or with a (dash, gap) pattern in px.
fn draw_styled_line<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    style: ShapeStyle,
    pattern: Option<(u32, u32)>,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    if pts.len() < 2 {
        return Ok(());
    }
    match pattern {
        None => chart.draw_series(LineSeries::new(pts.to_vec(), style)).map_err(pe)?,
        Some((d, g)) => chart
            .draw_series(DashedLineSeries::new(pts.to_vec(), d, g, style))
            .map_err(pe)?,
    };
    Ok(())
}

/// Draws series `k`'s marker at every point of `pts` (`size` px).
fn draw_markers<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    k: usize,
    size: i32,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    draw_marker_kind(chart, pts, marker(k), color(k), size)
}

fn draw_marker_kind<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    m: Marker,
    c: RGBColor,
    size: i32,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let fill = c.filled();
    let s = size;
    match m {
        Marker::Circle => chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, s, fill)))
            .map_err(pe)?,
        Marker::Triangle => chart
            .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, s + 1, fill)))
            .map_err(pe)?,
        Marker::Square => chart
            .draw_series(
                pts.iter()
                    .map(|&p| EmptyElement::at(p) + Rectangle::new([(-s, -s), (s, s)], fill)),
            )
            .map_err(pe)?,
        Marker::Diamond => chart
            .draw_series(pts.iter().map(|&p| {
                let d = s + 1;
                EmptyElement::at(p) + Polygon::new(vec![(0, -d), (d, 0), (0, d), (-d, 0)], fill)
            }))
            .map_err(pe)?,
        Marker::Cross => chart
            .draw_series(pts.iter().map(|&p| Cross::new(p, s + 1, c.stroke_width(2))))
            .map_err(pe)?,
    };
    Ok(())
}

// ---- legend panel -----------------------------------------------------------------------

/// What a legend entry shows.
#[derive(Clone, Debug)]
enum Swatch {
    /// Series `k`'s line, dash and marker.
    Series(usize),
    /// Series `k`'s line and dash, no marker.
    Line(usize),
    /// A filled box of a colour.
    Box(RGBColor),
    /// A thin line of a colour with an optional dash pattern (reference lines).
    Reference(RGBColor, Option<(u32, u32)>),
    /// A marker of a colour.
    Mark(Marker, RGBColor),
}

/// Draws a legend (optional title, then one row per entry) in `area`, beside the data.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: Option<&str>,
    entries: &[(String, Swatch)],
) -> Result<()> {
    let font = ("sans-serif", 14).into_font();
    let text = TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 40;
    if let Some(t) = title {
        area.draw_text(
            t,
            &TextStyle::from(("sans-serif", 14).into_font().style(FontStyle::Normal))
                .pos(Pos::new(HPos::Left, VPos::Center)),
            (8, y),
        )
        .map_err(pe)?;
        y += 22;
    }
    for (label, sw) in entries {
        let (x0, x1) = (10, 42);
        match sw {
            Swatch::Series(k) | Swatch::Line(k) => {
                let c = color(*k);
                draw_pixel_segment(area, (x0, x1, y), c.stroke_width(2), dash(*k))?;
                if matches!(sw, Swatch::Series(_)) {
                    draw_pixel_marker(area, marker(*k), c, ((x0 + x1) / 2, y), 4)?;
                }
            }
            Swatch::Box(c) => area
                .draw(&Rectangle::new([(x0 + 6, y - 7), (x1 - 6, y + 7)], c.filled()))
                .map_err(pe)?,
            Swatch::Reference(c, pattern) => draw_pixel_segment(area, (x0, x1, y), c.stroke_width(2), *pattern)?,
            Swatch::Mark(m, c) => draw_pixel_marker(area, *m, *c, ((x0 + x1) / 2, y), 5)?,
        }
        area.draw_text(label, &text, (x1 + 8, y)).map_err(pe)?;
        y += 22;
    }
    Ok(())
}

/// A horizontal segment from `x0` to `x1` at `y` (pixels of `area`), solid or with a (dash,
/// gap) pattern in px.
fn draw_pixel_segment<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x0, x1, y): (i32, i32, i32),
    style: ShapeStyle,
    pattern: Option<(u32, u32)>,
) -> Result<()> {
    let (d, g) = pattern.map_or((x1 - x0, 0), |(d, g)| (d as i32, g as i32));
    let mut x = x0;
    while x < x1 {
        let e = (x + d.max(1)).min(x1);
        area.draw(&PathElement::new(vec![(x, y), (e, y)], style)).map_err(pe)?;
        x = e + g;
    }
    Ok(())
}

/// A marker at pixel `p` of `area`.
fn draw_pixel_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: Marker,
    c: RGBColor,
    p: (i32, i32),
    s: i32,
) -> Result<()> {
    let fill = c.filled();
    match m {
        Marker::Circle => area.draw(&Circle::new(p, s, fill)).map_err(pe)?,
        Marker::Triangle => area.draw(&TriangleMarker::new(p, s + 1, fill)).map_err(pe)?,
        Marker::Square => area
            .draw(&Rectangle::new([(p.0 - s, p.1 - s), (p.0 + s, p.1 + s)], fill))
            .map_err(pe)?,
        Marker::Diamond => area
            .draw(&Polygon::new(
                vec![
                    (p.0, p.1 - s - 1),
                    (p.0 + s + 1, p.1),
                    (p.0, p.1 + s + 1),
                    (p.0 - s - 1, p.1),
                ],
                fill,
            ))
            .map_err(pe)?,
        Marker::Cross => area.draw(&Cross::new(p, s + 1, c.stroke_width(2))).map_err(pe)?,
    }
    Ok(())
}

/// Splits `root` into the data area and a legend panel `legend_px` wide on its right.
fn with_legend_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    legend_px: u32,
) -> (DrawingArea<DB, Shift>, DrawingArea<DB, Shift>) {
    let (w, _) = root.dim_in_pixel();
    root.split_horizontally(w.saturating_sub(legend_px))
}

/// The width of a legend panel for these labels \[px\].
fn legend_width(labels: impl IntoIterator<Item = usize>) -> u32 {
    let chars = labels.into_iter().max().unwrap_or(8) as u32;
    (64 + 8 * chars).clamp(140, 640)
}

// ---- axes ---------------------------------------------------------------------------------

/// A log axis over `[lo, hi]` (lo > 0) whose labelled ticks are 1–2–5 per decade (1–10 when
/// that is too many, every other decade when still too many), light lines at 1…9 per decade.
#[derive(Clone, Debug)]
pub struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// The axis over `[lo, hi]`, widened to a span of at least 1.5× (positive `lo`).
    pub fn new(lo: f64, hi: f64) -> LogAxis {
        let lo = if lo > 0.0 && lo.is_finite() { lo } else { 1e-3 };
        let hi = if hi > lo * 1.5 && hi.is_finite() { hi } else { lo * 1.5 };
        LogAxis { lo, hi }
    }

    /// Padded to the data's `[min, max]` with a margin of `pad` (a factor, e.g. 1.3).
    pub fn around(min: f64, max: f64, pad: f64) -> LogAxis {
        LogAxis::new(min / pad, max * pad)
    }
}

/// The 1–2–5 ticks in `[lo, hi]` (at most `max`, thinned as [`LogAxis`] says).
pub fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    let max = max.max(2);
    for mantissas in [&[1.0, 2.0, 5.0][..], &[1.0][..]] {
        let t: Vec<f64> = (d0..=d1)
            .flat_map(|d| mantissas.iter().map(move |m| m * 10f64.powi(d)))
            .filter(within)
            .collect();
        if t.len() <= max {
            if t.len() >= 2 || mantissas.len() == 1 {
                return t;
            }
            // Under two 1–2–5 ticks (a span within one decade): 1–10.
            let fine: Vec<f64> = (d0..=d1)
                .flat_map(|d| (1..10).map(move |m| m as f64 * 10f64.powi(d)))
                .filter(within)
                .collect();
            return if fine.len() <= max { fine } else { t };
        }
    }
    // Every k-th decade.
    let decades: Vec<f64> = (d0..=d1).map(|d| 10f64.powi(d)).filter(within).collect();
    let k = decades.len().div_ceil(max);
    decades.into_iter().step_by(k.max(1)).collect()
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.lo.log10(), self.hi.log10());
        let x = v.max(self.lo * 1e-6).log10();
        let f = (x - a) / (b - a);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let bold = log_ticks(self.lo, self.hi, hint.max_num_points());
        if matches!(hint.weight(), KeyPointWeight::Bold) {
            return bold;
        }
        let (d0, d1) = (self.lo.log10().floor() as i32, self.hi.log10().ceil() as i32);
        let light: Vec<f64> = (d0..=d1)
            .flat_map(|d| (1..10).map(move |m| m as f64 * 10f64.powi(d)))
            .filter(|v| *v >= self.lo && *v <= self.hi)
            .collect();
        if light.len() <= hint.max_num_points() {
            light
        } else {
            bold
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// A tick label: at most 3 decimals, trailing zeros dropped, thousands as `k` from 10,000.
pub fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1e4 && (v / 1e3).fract().abs() < 1e-9 {
        return format!("{}k", fmt_tick(v / 1e3));
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// A linear range around `[min, max]` with 6% padding (including 0 when `from_zero`).
fn linear_range(min: f64, max: f64, from_zero: bool) -> Range<f64> {
    let (mut lo, mut hi) = if min.is_finite() && max.is_finite() {
        (min, max)
    } else {
        (0.0, 1.0)
    };
    if from_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
    let pad = span * 0.06;
    (if from_zero && lo >= 0.0 { lo } else { lo - pad })..hi + pad
}

/// (min, max) of the finite values (> 0 when `positive`); (∞, −∞) when none.
fn finite_range(vals: impl IntoIterator<Item = f64>, positive: bool) -> (f64, f64) {
    vals.into_iter()
        .filter(|v| v.is_finite() && (!positive || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
}

// ---- metric names -------------------------------------------------------------------------

/// How a `summary.csv` column reads on a figure: (title phrase, axis label with unit, whether it
/// is a latency drawn on a log axis). E.g. `ttft_turn2plus_p50_ms` → ("TTFT p50, turns ≥ 2",
/// "TTFT, turns ≥ 2 \[ms\]", true).
pub fn metric_label(metric: &str) -> (String, String, bool) {
    if let Some(rest) = metric.strip_suffix("_ms") {
        // <what>_<pXX> or <what>_mean
        // The statistic: `_mean` or `_pXX` (XX digits, `_` for a decimal point: `p99_9`).
        let pct = rest.rfind("_p").filter(|&i| {
            let tail = &rest[i + 2..];
            !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit() || c == '_')
        });
        let (what, stat) = if let Some(w) = rest.strip_suffix("_mean") {
            (w, "mean".to_string())
        } else if let Some(i) = pct {
            (&rest[..i], rest[i + 1..].replace('_', "."))
        } else {
            (rest, String::new())
        };
        let name = match what {
            "ttft_turn1" => "TTFT, turn 1",
            "ttft_turn2plus" => "TTFT, turns ≥ 2",
            "ttft" => "TTFT",
            "tpot" => "TPOT",
            "e2e" => "E2E latency",
            other => other,
        };
        let (head, tail) = name.split_once(',').map_or((name, ""), |(h, t)| (h, t));
        let title = format!(
            "{head} {stat}{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(",{tail}")
            }
        );
        let unit = if what == "tpot" { "ms/token" } else { "ms" };
        return (title.trim().to_string(), format!("{name} [{unit}]"), true);
    }
    let (title, axis) = match metric {
        "num_requests" => ("Requests completed", "requests"),
        "num_failed" => ("Requests failed", "requests"),
        "throughput_rps" => ("Throughput", "requests / s"),
        "output_tokens_per_s" => ("Output token rate", "tokens / s"),
        "slo_attainment" => ("SLO attainment", "fraction of requests meeting the SLO"),
        "goodput_rps" => ("Goodput", "requests meeting the SLO / s"),
        "kv_bytes_moved" => ("KV bytes moved", "bytes"),
        "local_cache_hit_rate" => ("Local prefix-cache hit rate", "fraction of prompt tokens"),
        "transferred_rate" => ("KV-transferred fraction", "fraction of prompt tokens"),
        "local_route_fraction_turn2plus" => ("Turns ≥ 2 served locally", "fraction of turns ≥ 2"),
        "mode_switches" => ("Hysteresis remote-mode entries", "entries"),
        "makespan_s" => ("Makespan", "s"),
        other => (other, other),
    };
    (title.to_string(), axis.to_string(), false)
}

/// An axis over category indices `0..n` (bars, heatmap cells), ticks at the integers.
#[derive(Clone, Debug)]
struct IndexAxis {
    lo: f64,
    hi: f64,
}

impl IndexAxis {
    /// Cells `0..n`, each centred on its index.
    fn cells(n: usize) -> IndexAxis {
        IndexAxis {
            lo: -0.5,
            hi: n.max(1) as f64 - 0.5,
        }
    }

    /// Integers `first..=last` with half a unit of margin.
    fn span(first: f64, last: f64) -> IndexAxis {
        IndexAxis {
            lo: first - 0.5,
            hi: last.max(first) + 0.5,
        }
    }
}

impl Ranged for IndexAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let (a, b) = (self.lo.ceil() as i64, self.hi.floor() as i64);
        let n = (b - a + 1).max(1) as usize;
        let step = n.div_ceil(hint.max_num_points().max(1)).max(1);
        (a..=b).step_by(step).map(|i| i as f64).collect()
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// One request's latencies, as `requests.csv` holds them (what the run figures need).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestLatency {
    /// Index of its policy in [`RunPlots::policies`].
    pub policy: usize,
    /// Turn (1-based).
    pub turn: u32,
    /// Whether it succeeded (failed requests have no latency to draw).
    pub ok: bool,
    /// TTFT \[ms\].
    pub ttft_ms: f64,
    /// TPOT \[ms/token\] (none with a single output token).
    pub tpot_ms: Option<f64>,
}

/// What `run`'s figures are drawn from (the run itself, or its files read back by `ppdsim plot`).
pub struct RunPlots<'a> {
    /// `summary.csv` rows.
    pub summary: &'a [SummaryRow],
    /// Policies, in scenario order.
    pub policies: &'a [String],
    /// Every request; `None` when there is no `requests.csv` to read them from: the figures that
    /// need them (`latency_cdf`, `ttft_by_turn` and its CSV) are then not drawn.
    pub requests: Option<&'a [RequestLatency]>,
    /// `timeline.csv`: the runs' timelines.
    pub timeline: &'a [crate::sim::PolicyTimeline],
    /// SLO targets (drawn as reference lines).
    pub slo: Option<crate::metrics::Slo>,
}

/// The latencies of a `requests.csv` (columns `policy`, `turn`, `status`, `ttft_ms`, `tpot_ms`;
/// others ignored) for the run figures; rows of a policy not in `policies` are skipped.
///
/// # Errors
/// Unreadable files, a missing column, or a field that does not parse (naming its line).
pub fn read_request_latencies(path: &Path, policies: &[String]) -> crate::error::InputResult<Vec<RequestLatency>> {
    use crate::error::InputError;
    let text = crate::input::read_text(path)?;
    let (header, records) = crate::input::csv_rows(path, &text)?;
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            InputError::file(
                path,
                format!("has no column `{name}`; give a requests.csv `ppdsim run` wrote"),
            )
        })
    };
    let (cp, ct, cs, cf, cpot) = (
        col("policy")?,
        col("turn")?,
        col("status")?,
        col("ttft_ms")?,
        col("tpot_ms")?,
    );
    let mut out = Vec::new();
    for (line, rec) in &records {
        let Some(policy) = policies.iter().position(|p| p == &rec[cp]) else {
            continue;
        };
        let bad = |what: &str, v: &str| InputError::line(path, *line, format!("{what} `{v}` is not a number"));
        let num = |c: usize, what: &str| -> crate::error::InputResult<f64> {
            rec[c].parse::<f64>().map_err(|_| bad(what, &rec[c]))
        };
        out.push(RequestLatency {
            policy,
            turn: rec[ct].parse().map_err(|_| bad("turn", &rec[ct]))?,
            ok: &rec[cs] == "ok",
            ttft_ms: if rec[cf].is_empty() {
                f64::NAN
            } else {
                num(cf, "ttft_ms")?
            },
            tpot_ms: if rec[cpot].is_empty() {
                None
            } else {
                Some(num(cpot, "tpot_ms")?)
            },
        });
    }
    Ok(out)
}

/// One row of `plots/ttft_by_turn.csv`: TTFT quartiles of one policy's successful requests of
/// one turn index.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TurnTtft {
    /// Policy.
    pub policy: String,
    /// Turn (1-based).
    pub turn: u32,
    /// Successful requests of that turn.
    pub num_requests: usize,
    /// TTFT 25th percentile \[ms\].
    pub ttft_p25_ms: f64,
    /// TTFT median \[ms\].
    pub ttft_p50_ms: f64,
    /// TTFT 75th percentile \[ms\].
    pub ttft_p75_ms: f64,
}

/// Turns drawn in `plots/ttft_by_turn`: those with at least this many requests for some policy.
pub const MIN_REQUESTS_PER_TURN: usize = 10;

/// TTFT quartiles per policy and turn index, for turns up to the last one with at least
/// [`MIN_REQUESTS_PER_TURN`] successful requests in some policy (at most 50 turns).
pub fn ttft_by_turn_table(d: &RunPlots) -> Vec<TurnTtft> {
    let mut by: std::collections::BTreeMap<(usize, u32), Vec<f64>> = Default::default();
    for r in d.requests.unwrap_or_default().iter().filter(|r| r.ok) {
        by.entry((r.policy, r.turn)).or_default().push(r.ttft_ms);
    }
    let last = by
        .iter()
        .filter(|(_, v)| v.len() >= MIN_REQUESTS_PER_TURN)
        .map(|((_, t), _)| *t)
        .max()
        .unwrap_or(1)
        .min(50);
    let mut out = Vec::new();
    for (p, name) in d.policies.iter().enumerate() {
        for turn in 1..=last {
            let Some(v) = by.get_mut(&(p, turn)) else { continue };
            v.sort_by(f64::total_cmp);
            let q = |x| crate::metrics::percentile_sorted(v, x);
            out.push(TurnTtft {
                policy: name.clone(),
                turn,
                num_requests: v.len(),
                ttft_p25_ms: q(25.0),
                ttft_p50_ms: q(50.0),
                ttft_p75_ms: q(75.0),
            });
        }
    }
    out
}

/// Draws every `run` figure into `plots/` of `dir`: `latency_by_policy` (TTFT turn 1 / turns
/// ≥ 2, TPOT and E2E, p50 and p99 bars per policy, SLO lines), `latency_cdf` (TTFT and TPOT CDFs
/// per policy), `ttft_by_turn` (median TTFT per turn index with the interquartile band; its data
/// in `ttft_by_turn.csv`) and `timeline_<policy>` per policy (per-instance queue, KV usage and
/// busy fraction over time), each as `.png` and `.svg`.
///
/// # Errors
/// Drawing or file errors.
pub fn run_figures(dir: &crate::outdir::OutputDir, d: &RunPlots) -> Result<()> {
    use rayon::prelude::*;
    let stem = |name: &str| dir.path(&format!("plots/{name}"));
    let table = ttft_by_turn_table(d);
    // Each figure is its own file: drawn in parallel.
    type Job<'j> = Box<dyn Fn() -> Result<()> + Send + Sync + 'j>;
    let mut jobs: Vec<Job> = vec![Box::new(|| render(&stem("latency_by_policy")?, &LatencyByPolicy { d }))];
    if d.requests.is_some() {
        jobs.push(Box::new(|| render(&stem("latency_cdf")?, &LatencyCdf { d })));
        jobs.push(Box::new(|| {
            render(&stem("ttft_by_turn")?, &TtftByTurn { d, table: &table })
        }));
    }
    for policy in d.policies {
        jobs.push(Box::new(move || {
            let samples: Vec<&crate::sim::TimelineSample> = d
                .timeline
                .iter()
                .filter(|t| &t.policy == policy)
                .flat_map(|t| &t.samples)
                .collect();
            if samples.is_empty() {
                return Ok(());
            }
            let name = format!("timeline_{}", crate::output::file_safe(policy));
            render(
                &stem(&name)?,
                &Timeline {
                    policy,
                    samples: &samples,
                },
            )
        }));
    }
    jobs.par_iter().try_for_each(|job| job())?;
    if d.requests.is_none() {
        return Ok(());
    }
    dir.write("plots/ttft_by_turn.csv", &crate::output::to_csv(&table)?)
}

/// A panel caption style.
fn caption_font() -> (&'static str, u32) {
    ("sans-serif", 18)
}

/// Draws a horizontal reference line at `y` across `[x0, x1]` (dashed, dark grey).
fn draw_hline<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    y: f64,
    (x0, x1): (f64, f64),
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    draw_styled_line(
        chart,
        &[(x0, y), (x1, y)],
        RGBColor(60, 60, 60).stroke_width(2),
        Some((8, 5)),
    )
}

struct LatencyByPolicy<'a> {
    d: &'a RunPlots<'a>,
}

impl Figure for LatencyByPolicy<'_> {
    fn size(&self) -> (u32, u32) {
        (1280, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let rows = self.d.summary;
        let (data, legend) = with_legend_panel(root, 230);
        let data = data
            .titled("Latency by policy (bars: p50 dark, p99 light)", ("sans-serif", 22))
            .map_err(pe)?;
        let panels = data.split_evenly((1, 3));
        // (panel title, unit, [(series label, column, palette index)], SLO value)
        type Panel<'s> = (&'s str, &'s str, Vec<(&'s str, String, usize)>, Option<f64>);
        let slo = self.d.slo;
        let specs: [Panel; 3] = [
            (
                "TTFT",
                "TTFT [ms]",
                vec![
                    ("turn 1", "ttft_turn1".into(), 0),
                    ("turns ≥ 2", "ttft_turn2plus".into(), 1),
                ],
                slo.map(|s| s.ttft_ms),
            ),
            (
                "TPOT",
                "TPOT [ms/token]",
                vec![("TPOT", "tpot".into(), 2)],
                slo.map(|s| s.tpot_ms),
            ),
            ("E2E latency", "E2E [ms]", vec![("E2E", "e2e".into(), 3)], None),
        ];
        let n = rows.len();
        for (area, (title, unit, series, slo_line)) in panels.iter().zip(&specs) {
            let values: Vec<f64> = rows
                .iter()
                .flat_map(|r| {
                    series
                        .iter()
                        .flat_map(move |(_, c, _)| [r.get(&format!("{c}_p50_ms")), r.get(&format!("{c}_p99_ms"))])
                })
                .flatten()
                .chain(*slo_line)
                .collect();
            let (lo, hi) = finite_range(values, true);
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 10.0) };
            let y = LogAxis::around(lo, hi, 1.6);
            let floor = y.lo;
            let mut chart = ChartBuilder::on(area)
                .caption(*title, caption_font())
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(62)
                .build_cartesian_2d(IndexAxis::cells(n), y)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&|x| rows.get(x.round() as usize).map_or(String::new(), |r| r.policy.clone()))
                .y_labels(10)
                .y_label_formatter(&|v| fmt_tick(*v))
                .y_desc(*unit)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(pe)?;
            let bars = series.len() * 2;
            let width = 0.8 / bars as f64;
            for (i, r) in rows.iter().enumerate() {
                for (s, (_, col, k)) in series.iter().enumerate() {
                    for (q, light) in [("p50", false), ("p99", true)] {
                        let Some(v) = r.get(&format!("{col}_{q}_ms")).filter(|v| v.is_finite() && *v > 0.0) else {
                            continue;
                        };
                        let slot = s * 2 + usize::from(light);
                        let x0 = i as f64 - 0.4 + slot as f64 * width;
                        let c = if light { color(*k).mix(0.4) } else { color(*k).to_rgba() };
                        chart
                            .draw_series(std::iter::once(Rectangle::new(
                                [(x0, floor), (x0 + width * 0.92, v)],
                                c.filled(),
                            )))
                            .map_err(pe)?;
                    }
                }
            }
            if let Some(v) = slo_line {
                draw_hline(&mut chart, *v, (-0.5, n as f64 - 0.5))?;
            }
        }
        let mut entries: Vec<(String, Swatch)> = Vec::new();
        for (_, _, series, _) in &specs {
            for (label, _, k) in series {
                entries.push((format!("{label} p50"), Swatch::Box(color(*k))));
                let light = color(*k).mix(0.4);
                let (r, g, b) = light.rgb();
                // The light shade as drawn over white.
                let a = light.alpha();
                let over = |c: u8| (255.0 - (255.0 - c as f64) * a).round() as u8;
                entries.push((format!("{label} p99"), Swatch::Box(RGBColor(over(r), over(g), over(b)))));
            }
        }
        if slo.is_some() {
            entries.push((
                "SLO target".into(),
                Swatch::Reference(RGBColor(60, 60, 60), Some((8, 5))),
            ));
        }
        draw_legend(&legend, None, &entries)
    }
}

/// At most `k` points of the empirical CDF of `v` (ascending): evenly spaced in rank.
fn cdf_points(v: &[f64], k: usize) -> Vec<(f64, f64)> {
    let n = v.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(k).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    if pts.last().map(|p| p.1) != Some(1.0) {
        pts.push((v[n - 1], 1.0));
    }
    pts
}

struct LatencyCdf<'a> {
    d: &'a RunPlots<'a>,
}

impl Figure for LatencyCdf<'_> {
    fn size(&self) -> (u32, u32) {
        (1280, 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let d = self.d;
        let names = d.policies;
        let (data, legend) = with_legend_panel(root, legend_width(names.iter().map(|n| n.chars().count())));
        let data = data.titled("Latency CDFs by policy", ("sans-serif", 22)).map_err(pe)?;
        let panels = data.split_evenly((1, 3));
        type Pick = fn(&RequestLatency) -> Option<f64>;
        let specs: [(&str, &str, Pick, Option<f64>); 3] = [
            (
                "TTFT, turn 1",
                "TTFT [ms] (log)",
                |r| (r.turn == 1).then_some(r.ttft_ms),
                d.slo.map(|s| s.ttft_ms),
            ),
            (
                "TTFT, turns ≥ 2",
                "TTFT [ms] (log)",
                |r| (r.turn >= 2).then_some(r.ttft_ms),
                d.slo.map(|s| s.ttft_ms),
            ),
            ("TPOT", "TPOT [ms/token] (log)", |r| r.tpot_ms, d.slo.map(|s| s.tpot_ms)),
        ];
        for (area, (title, xdesc, pick, slo)) in panels.iter().zip(&specs) {
            let per: Vec<Vec<f64>> = (0..names.len())
                .map(|p| {
                    let mut v: Vec<f64> = d
                        .requests
                        .unwrap_or_default()
                        .iter()
                        .filter(|r| r.ok && r.policy == p)
                        .filter_map(pick)
                        .filter(|v| v.is_finite() && *v > 0.0)
                        .collect();
                    v.sort_by(f64::total_cmp);
                    v
                })
                .collect();
            let (lo, hi) = finite_range(per.iter().flatten().copied().chain(*slo), true);
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 10.0) };
            let mut chart = ChartBuilder::on(area)
                .caption(*title, caption_font())
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(LogAxis::around(lo, hi, 1.15), 0f64..1.0)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_labels(8)
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_labels(6)
                .y_label_formatter(&|v| fmt_tick(*v))
                .x_desc(*xdesc)
                .y_desc("fraction of requests ≤ x")
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(pe)?;
            for (k, v) in per.iter().enumerate() {
                let pts = cdf_points(v, 400);
                draw_line(&mut chart, &pts, k, 2)?;
            }
            if let Some(s) = slo {
                draw_styled_line(
                    &mut chart,
                    &[(*s, 0.0), (*s, 1.0)],
                    RGBColor(60, 60, 60).stroke_width(2),
                    Some((8, 5)),
                )?;
            }
        }
        let mut entries: Vec<(String, Swatch)> = names
            .iter()
            .enumerate()
            .map(|(k, n)| (n.clone(), Swatch::Line(k)))
            .collect();
        if d.slo.is_some() {
            entries.push((
                "SLO target".into(),
                Swatch::Reference(RGBColor(60, 60, 60), Some((8, 5))),
            ));
        }
        draw_legend(&legend, Some("policy"), &entries)
    }
}

struct TtftByTurn<'a> {
    d: &'a RunPlots<'a>,
    table: &'a [TurnTtft],
}

impl Figure for TtftByTurn<'_> {
    fn size(&self) -> (u32, u32) {
        (1080, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let names = self.d.policies;
        let (data, legend) = with_legend_panel(root, legend_width(names.iter().map(|n| n.chars().count())));
        let t = self.table;
        let last = t.iter().map(|r| r.turn).max().unwrap_or(1) as f64;
        let slo = self.d.slo.map(|s| s.ttft_ms);
        let (lo, hi) = finite_range(t.iter().flat_map(|r| [r.ttft_p25_ms, r.ttft_p75_ms]).chain(slo), true);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 10.0) };
        let mut chart = ChartBuilder::on(&data)
            .caption(
                "TTFT by turn index (median; band: 25th–75th percentile)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(IndexAxis::span(1.0, last), LogAxis::around(lo, hi, 1.25))
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_labels(16)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_labels(10)
            .y_label_formatter(&|v| fmt_tick(*v))
            .x_desc("turn of the conversation")
            .y_desc("TTFT [ms] (log)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(pe)?;
        for (k, name) in names.iter().enumerate() {
            let rows: Vec<&TurnTtft> = t.iter().filter(|r| &r.policy == name).collect();
            if rows.is_empty() {
                continue;
            }
            let mut band: Vec<(f64, f64)> = rows.iter().map(|r| (r.turn as f64, r.ttft_p75_ms)).collect();
            band.extend(rows.iter().rev().map(|r| (r.turn as f64, r.ttft_p25_ms)));
            chart
                .draw_series(std::iter::once(Polygon::new(band, color(k).mix(0.14).filled())))
                .map_err(pe)?;
            let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.turn as f64, r.ttft_p50_ms)).collect();
            draw_line(&mut chart, &pts, k, 2)?;
            draw_markers(&mut chart, &pts, k, 4)?;
        }
        if let Some(s) = self.d.slo {
            draw_hline(&mut chart, s.ttft_ms, (0.5, last + 0.5))?;
        }
        let mut entries: Vec<(String, Swatch)> = names
            .iter()
            .enumerate()
            .map(|(k, n)| (n.clone(), Swatch::Series(k)))
            .collect();
        if self.d.slo.is_some() {
            entries.push((
                "SLO target".into(),
                Swatch::Reference(RGBColor(60, 60, 60), Some((8, 5))),
            ));
        }
        draw_legend(&legend, Some("policy"), &entries)
    }
}

struct Timeline<'a> {
    policy: &'a str,
    samples: &'a [&'a crate::sim::TimelineSample],
}

impl Figure for Timeline<'_> {
    fn size(&self) -> (u32, u32) {
        (1180, 860)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let mut instances: Vec<&str> = Vec::new();
        for s in self.samples {
            if !instances.contains(&&*s.instance) {
                instances.push(&s.instance);
            }
        }
        let (data, legend) = with_legend_panel(root, 160);
        let data = data
            .titled(&format!("{}: instances over time", self.policy), ("sans-serif", 22))
            .map_err(pe)?;
        let panels = data.split_evenly((3, 1));
        let t_end = self.samples.iter().map(|s| s.time_s).fold(0.0, f64::max).max(1e-3);
        type Pick = fn(&crate::sim::TimelineSample) -> f64;
        let specs: [(&str, &str, Pick, Option<f64>); 3] = [
            (
                "Waiting sequences (engine queue)",
                "sequences",
                |s| s.waiting as f64,
                None,
            ),
            ("KV cache in use", "% of capacity", |s| 100.0 * s.kv_usage, Some(100.0)),
            (
                "Busy (running iterations)",
                "% of interval",
                |s| 100.0 * s.busy_fraction,
                Some(100.0),
            ),
        ];
        for (area, (title, unit, pick, top)) in panels.iter().zip(&specs) {
            let max = self.samples.iter().map(|s| pick(s)).fold(0.0, f64::max);
            let hi = top.unwrap_or(max.max(1.0) * 1.08);
            let mut chart = ChartBuilder::on(area)
                .caption(*title, caption_font())
                .margin(8)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..t_end, 0f64..hi)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_labels(10)
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_labels(5)
                .y_label_formatter(&|v| fmt_tick(*v))
                .x_desc("time [s]")
                .y_desc(*unit)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(pe)?;
            for (k, inst) in instances.iter().enumerate() {
                let pts: Vec<(f64, f64)> = self
                    .samples
                    .iter()
                    .filter(|s| &*s.instance == *inst)
                    .map(|s| (s.time_s, pick(s)))
                    .collect();
                draw_line(&mut chart, &pts, k, 1)?;
            }
        }
        let entries: Vec<(String, Swatch)> = instances
            .iter()
            .enumerate()
            .map(|(k, n)| (n.to_string(), Swatch::Line(k)))
            .collect();
        draw_legend(&legend, Some("instance"), &entries)
    }
}

/// A reference level drawn across a sweep figure (an SLO target) with its legend label.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// Level in the metric's unit.
    pub value: f64,
    /// Legend label (e.g. `TTFT SLO 500 ms`).
    pub label: String,
}

/// One sweep metric against the arrival rate: a line per policy (seed mean; marker, colour and
/// dash per policy), a band over the seeds' min–max where there are several seeds, an optional
/// reference level (SLO), and each crossover marked on the curves and labelled with its rate;
/// latencies on a 1–2–5 log axis; into `<stem>.png` and `<stem>.svg`.
///
/// # Errors
/// Drawing or file errors.
pub fn sweep_metric(
    stem: &Path,
    rates: &[f64],
    m: &crate::sweep::MetricCurves,
    reference: Option<&Reference>,
) -> Result<()> {
    render(stem, &SweepMetric { rates, m, reference })
}

struct SweepMetric<'a> {
    rates: &'a [f64],
    m: &'a crate::sweep::MetricCurves,
    reference: Option<&'a Reference>,
}

impl Figure for SweepMetric<'_> {
    fn size(&self) -> (u32, u32) {
        let w = legend_width(
            self.m
                .curves
                .iter()
                .map(|(p, _)| crate::sweep::variant_label(p).chars().count()),
        );
        (820 + w, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (title, axis, log) = metric_label(&self.m.metric);
        let labels = self
            .m
            .curves
            .iter()
            .map(|(p, _)| crate::sweep::variant_label(p).chars().count());
        let (data, legend) = with_legend_panel(root, legend_width(labels));
        let (x0, x1) = (
            self.rates.first().copied().unwrap_or(0.0),
            self.rates.last().copied().unwrap_or(1.0),
        );
        let xpad = ((x1 - x0) * 0.04).max(0.05);
        let x = (x0 - xpad)..(x1 + xpad);
        let values = self
            .m
            .curves
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .chain(self.m.ranges.iter().flatten().flat_map(|&(a, b)| [a, b]))
            .chain(self.reference.map(|r| r.value));
        let caption = format!("{title} vs load");
        if log {
            let (lo, hi) = finite_range(values, true);
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 10.0) };
            let chart = ChartBuilder::on(&data)
                .caption(caption, ("sans-serif", 22))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d(x, LogAxis::around(lo, hi, 1.25))
                .map_err(pe)?;
            self.draw_on(chart, &format!("{axis} (log)"), true)?;
        } else {
            let (lo, hi) = finite_range(values, false);
            let y: RangedCoordf64 = linear_range(lo, hi, true).into();
            let chart = ChartBuilder::on(&data)
                .caption(caption, ("sans-serif", 22))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d(x, y)
                .map_err(pe)?;
            self.draw_on(chart, &axis, false)?;
        }
        let mut entries: Vec<(String, Swatch)> = self
            .m
            .curves
            .iter()
            .enumerate()
            .map(|(k, (p, _))| (crate::sweep::variant_label(p), Swatch::Series(k)))
            .collect();
        if self.m.ranges.iter().flatten().any(|(a, b)| b > a) {
            entries.push(("min–max over seeds".into(), Swatch::Box(RGBColor(220, 220, 220))));
        }
        if let Some(r) = self.reference {
            entries.push((r.label.clone(), Swatch::Reference(RGBColor(60, 60, 60), Some((8, 5)))));
        }
        if self.m.crossings.iter().any(|c| !c.both_saturated) {
            entries.push(("crossover (rate/s)".into(), Swatch::Mark(Marker::Diamond, BLACK)));
        }
        if self.m.crossings.iter().any(|c| c.both_saturated) {
            entries.push((
                "crossing where both saturate".into(),
                Swatch::Mark(Marker::Diamond, SATURATED_CROSSING),
            ));
        }
        draw_legend(&legend, Some("policy"), &entries)
    }
}

impl SweepMetric<'_> {
    /// Draws the curves on `chart`. On a log axis (`log`) each segment is drawn through points
    /// interpolated linearly in value, as the crossover analysis interpolates, so every
    /// crossover marker lies on both curves.
    fn draw_on<DB: DrawingBackend, Y>(
        &self,
        mut chart: ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>,
        ydesc: &str,
        log: bool,
    ) -> Result<()>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_labels(12)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_labels(10)
            .y_label_formatter(&|v| fmt_tick(*v))
            .x_desc("load [new conversations / s]")
            .y_desc(ydesc)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(pe)?;
        let rates = self.rates;
        // Bands first, so lines stay on top.
        for (k, range) in self.m.ranges.iter().enumerate() {
            let pts: Vec<(f64, (f64, f64))> = rates
                .iter()
                .zip(range)
                .filter(|(_, (a, b))| a.is_finite() && b.is_finite())
                .map(|(&r, &ab)| (r, ab))
                .collect();
            if pts.len() < 2 || pts.iter().all(|(_, (a, b))| b <= a) {
                continue;
            }
            let mut poly: Vec<(f64, f64)> = pts.iter().map(|&(r, (_, b))| (r, b)).collect();
            poly.extend(pts.iter().rev().map(|&(r, (a, _))| (r, a)));
            chart
                .draw_series(std::iter::once(Polygon::new(poly, color(k).mix(0.15).filled())))
                .map_err(pe)?;
        }
        for (k, (_, curve)) in self.m.curves.iter().enumerate() {
            let pts: Vec<(f64, f64)> = rates
                .iter()
                .zip(curve)
                .filter(|(_, v)| v.is_finite())
                .map(|(&r, &v)| (r, v))
                .collect();
            let line = if log { densify(&pts, 16) } else { pts.clone() };
            draw_line(&mut chart, &line, k, 2)?;
            draw_markers(&mut chart, &pts, k, 4)?;
        }
        if let Some(r) = self.reference {
            let (a, b) = (
                rates.first().copied().unwrap_or(0.0),
                rates.last().copied().unwrap_or(1.0),
            );
            draw_hline(&mut chart, r.value, (a, b))?;
        }
        // Crossovers: on the curves (the interpolated value), labelled with the rate; grey where
        // both policies miss the SLO-attainment target at the next rate (not a ranking).
        for (saturated, colour) in [(true, SATURATED_CROSSING), (false, BLACK)] {
            let pts: Vec<(f64, f64)> = self
                .m
                .crossings
                .iter()
                .filter(|c| c.both_saturated == saturated)
                .map(|c| (c.rate_per_s, c.value))
                .collect();
            draw_marker_kind(&mut chart, &pts, Marker::Diamond, colour, 5)?;
        }
        // Labels: the load of each crossing between two different base policies that is not a
        // crossing where both saturate (variants of one policy crossing each other, and
        // crossings in saturation, are marked but not labelled, to keep the figure legible).
        let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Bottom));
        let base = |p: &str| crate::sweep::variant_settings(p).0;
        chart
            .draw_series(
                self.m
                    .crossings
                    .iter()
                    .filter(|c| !c.both_saturated && base(&c.policy_a) != base(&c.policy_b))
                    .enumerate()
                    .map(|(k, c)| {
                        let text = format!("{}/s", fmt_tick((c.rate_per_s * 100.0).round() / 100.0));
                        // Labels alternate above and below their marker, so neighbours do not overlap.
                        let dy = if k % 2 == 0 { -5 } else { 19 };
                        EmptyElement::at((c.rate_per_s, c.value)) + Text::new(text, (7, dy), style.clone())
                    }),
            )
            .map_err(pe)?;
        Ok(())
    }
}

/// Colour of a crossover where both policies saturate ([`crate::sweep::Crossover::both_saturated`]).
const SATURATED_CROSSING: RGBColor = RGBColor(150, 150, 150);

/// `pts` with `n − 1` points inserted in every segment, linearly in both coordinates.
fn densify(pts: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len() * n);
    for w in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        for i in 0..n {
            let t = i as f64 / n as f64;
            out.push((x0 + (x1 - x0) * t, y0 + (y1 - y0) * t));
        }
    }
    out.extend(pts.last());
    out
}

/// Viridis (matplotlib's perceptually uniform, colour-blind-safe map) at `f` in \[0, 1\], from
/// five stops.
fn viridis(f: f64) -> RGBColor {
    let stops = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let f = if f.is_finite() { f.clamp(0.0, 1.0) } else { 0.0 } * 4.0;
    let i = (f.floor() as usize).min(3);
    let u = f - i as f64;
    let (a, b) = (stops[i], stops[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Black or white, whichever reads on `c`.
fn text_on(c: RGBColor) -> RGBColor {
    let l = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
    if l > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

/// A colour scale: value → position in \[0, 1\] (log for latencies) and back.
#[derive(Clone, Copy, Debug)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Scale {
    fn of(vals: impl IntoIterator<Item = f64>, log: bool) -> Scale {
        let (lo, hi) = finite_range(vals, log);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 1.0) };
        Scale { lo, hi, log }
    }

    fn at(&self, v: f64) -> f64 {
        let t = |x: f64| if self.log { x.ln() } else { x };
        if self.hi > self.lo {
            (t(v) - t(self.lo)) / (t(self.hi) - t(self.lo))
        } else {
            0.5
        }
    }
}

/// A vertical colour bar for `scale` in `area` with `unit` below it and 1–2–5 (log) or linear
/// ticks; `map` colours a position in \[0, 1\].
fn draw_colorbar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scale: Scale,
    unit: &str,
    map: fn(f64) -> RGBColor,
) -> Result<()> {
    let area = area.margin(50, 50, 10, 10);
    // The bar runs over positions f in [0, 1]; ticks sit at f = scale.at(value).
    let mut chart = ChartBuilder::on(&area)
        .y_label_area_size(0)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0f64..1.0, 0f64..1.0)
        .map_err(pe)?;
    let steps = 64;
    for i in 0..steps {
        let (a, b) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, a), (1.0, b)],
                map((a + b) / 2.0).filled(),
            )))
            .map_err(pe)?;
    }
    let (lo, hi) = (scale.lo, scale.hi);
    let log_labels = scale.log && log_ticks(lo, hi, 8).len() >= 2;
    let ticks: Vec<f64> = if hi <= lo {
        vec![lo]
    } else if log_labels {
        log_ticks(lo, hi, 8)
    } else {
        // Linear, or a log range too narrow for two 1–2–5 ticks: five evenly spaced values.
        (0..=4).map(|i| lo + (hi - lo) * i as f64 / 4.0).collect()
    };
    let style = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    chart
        .draw_series(ticks.into_iter().map(|t| {
            EmptyElement::at((1.0, scale.at(t)))
                + PathElement::new(vec![(0, 0), (5, 0)], BLACK)
                + Text::new(
                    if log_labels { fmt_tick(t) } else { fmt_value(t) },
                    (8, 0),
                    style.clone(),
                )
        }))
        .map_err(pe)?;
    let (_, h) = area.dim_in_pixel();
    area.draw_text(
        unit,
        &TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Top)),
        (0, h as i32 + 8),
    )
    .map_err(pe)?;
    Ok(())
}

/// A policy's sweep variants against the load, coloured by the seed-averaged `metric` (viridis;
/// log scale for latencies) with a colour bar, each cell labelled with its value. One varied
/// key: a row per value, a column per rate. Two varied keys with every combination present: one
/// panel per rate, the first key down and the second across (a real grid). Into `<stem>.png`
/// and `<stem>.svg`. The threshold and hysteresis heatmaps of DESIGN §5.
///
/// # Errors
/// Drawing or file errors.
pub fn sweep_heatmap(stem: &Path, h: &crate::sweep::Heatmap) -> Result<()> {
    render(
        stem,
        &SweepHeatmap {
            h,
            grid: two_key_grid(h),
        },
    )
}

/// Two keys: (key 1, its values, key 2, its values, row index of (i, j)).
type KeyGrid = (String, Vec<String>, String, Vec<String>, Vec<Vec<usize>>);

/// The two-key grid of a heatmap whose rows are every combination of two keys' values.
fn two_key_grid(h: &crate::sweep::Heatmap) -> Option<KeyGrid> {
    let parsed: Vec<Vec<(String, String)>> = h
        .rows
        .iter()
        .map(|(l, _)| {
            l.split(", ")
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect()
        })
        .collect();
    let keys: Vec<&String> = parsed.first()?.iter().map(|(k, _)| k).collect();
    if keys.len() != 2
        || parsed
            .iter()
            .any(|p| p.len() != 2 || p[0].0 != *keys[0] || p[1].0 != *keys[1])
    {
        return None;
    }
    let mut a: Vec<String> = Vec::new();
    let mut b: Vec<String> = Vec::new();
    for p in &parsed {
        if !a.contains(&p[0].1) {
            a.push(p[0].1.clone());
        }
        if !b.contains(&p[1].1) {
            b.push(p[1].1.clone());
        }
    }
    let mut idx = vec![vec![usize::MAX; b.len()]; a.len()];
    for (r, p) in parsed.iter().enumerate() {
        let i = a.iter().position(|v| *v == p[0].1)?;
        let j = b.iter().position(|v| *v == p[1].1)?;
        idx[i][j] = r;
    }
    if idx.iter().flatten().any(|&r| r == usize::MAX) {
        return None;
    }
    Some((keys[0].clone(), a, keys[1].clone(), b, idx))
}

struct SweepHeatmap<'a> {
    h: &'a crate::sweep::Heatmap,
    grid: Option<KeyGrid>,
}

impl Figure for SweepHeatmap<'_> {
    fn size(&self) -> (u32, u32) {
        match &self.grid {
            None => (1040, (170 + 40 * self.h.rows.len() as u32).max(380)),
            Some((_, a, _, b, _)) => {
                let n = self.h.rates_per_s.len() as u32;
                let cols = n.min(3);
                let rows = n.div_ceil(3);
                let pw = (110 + 56 * b.len() as u32).max(300);
                let ph = (110 + 34 * a.len() as u32).max(240);
                (cols * pw + 150, rows * ph + 60)
            }
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let h = self.h;
        let (title, axis, log) = metric_label(&h.metric);
        let scale = Scale::of(h.rows.iter().flat_map(|(_, v)| v.iter().copied()), log);
        let (data, bar) = with_legend_panel(root, 150);
        let data = data
            .titled(
                &format!("{}: {title} by setting and load", h.policy),
                ("sans-serif", 20),
            )
            .map_err(pe)?;
        match &self.grid {
            None => {
                let (nx, ny) = (h.rates_per_s.len(), h.rows.len());
                let label_width = h.rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(4) as u32;
                // First variant on top: row j is drawn at y = ny − 1 − j.
                let mut chart = grid_chart(
                    &data,
                    (nx, ny),
                    &GridLayout {
                        caption: None,
                        margin: 12,
                        y_label_px: (label_width * 8 + 16).min(420),
                        x_label: &|i| fmt_tick(h.rates_per_s[i]),
                        y_label: &|j| h.rows[ny - 1 - j].0.clone(),
                        x_desc: "load [new conversations / s]",
                        y_desc: "",
                        font: 13,
                    },
                )?;
                for (j, (_, vals)) in h.rows.iter().enumerate() {
                    for (i, &v) in vals.iter().enumerate() {
                        draw_heat_cell(&mut chart, (i as f64, (ny - 1 - j) as f64), v, scale)?;
                    }
                }
            }
            Some((k1, a, k2, b, idx)) => {
                let n = h.rates_per_s.len();
                let cols = n.min(3);
                let panels = data.split_evenly((n.div_ceil(3), cols));
                for (ri, (area, rate)) in panels.iter().zip(&h.rates_per_s).enumerate() {
                    let mut chart = grid_chart(
                        area,
                        (b.len(), a.len()),
                        &GridLayout {
                            caption: Some((format!("{} new conversations / s", fmt_tick(*rate)), caption_font().1)),
                            margin: 8,
                            y_label_px: 70,
                            x_label: &|i| b[i].clone(),
                            y_label: &|j| a[j].clone(),
                            x_desc: k2,
                            y_desc: k1,
                            font: 12,
                        },
                    )?;
                    for (i, row) in idx.iter().enumerate() {
                        for (j, &r) in row.iter().enumerate() {
                            draw_heat_cell(&mut chart, (j as f64, i as f64), h.rows[r].1[ri], scale)?;
                        }
                    }
                }
            }
        }
        draw_colorbar(&bar, scale, &axis, viridis)
    }
}

/// The labels and layout of a grid chart (heatmaps, the routing map): a cell per (column, row).
struct GridLayout<'l> {
    /// Caption above the grid (text, size in px), if any.
    caption: Option<(String, u32)>,
    /// Margin around the chart \[px\].
    margin: u32,
    /// Width of the row-label area \[px\].
    y_label_px: u32,
    /// Label of column `i` and of row `j` (row 0 at the bottom).
    x_label: &'l dyn Fn(usize) -> String,
    y_label: &'l dyn Fn(usize) -> String,
    /// Axis descriptions (the row one may be empty).
    x_desc: &'l str,
    y_desc: &'l str,
    /// Label font size \[px\].
    font: u32,
}

/// A chart of `nx` × `ny` unit cells centred on integer coordinates on `area`, with `layout`'s
/// labels and no mesh.
fn grid_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    (nx, ny): (usize, usize),
    layout: &GridLayout,
) -> Result<ChartContext<'a, DB, Cartesian2d<IndexAxis, IndexAxis>>> {
    let mut builder = ChartBuilder::on(area);
    if let Some((text, size)) = &layout.caption {
        builder.caption(text, ("sans-serif", *size));
    }
    let mut chart = builder
        .margin(layout.margin)
        .x_label_area_size(44)
        .y_label_area_size(layout.y_label_px)
        .build_cartesian_2d(IndexAxis::cells(nx), IndexAxis::cells(ny))
        .map_err(pe)?;
    let index = |v: &f64| v.round().max(0.0) as usize;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nx)
        .y_labels(ny)
        .x_label_formatter(&|v| {
            if index(v) < nx {
                (layout.x_label)(index(v))
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| {
            if index(v) < ny {
                (layout.y_label)(index(v))
            } else {
                String::new()
            }
        })
        .x_desc(layout.x_desc)
        .y_desc(layout.y_desc)
        .label_style(("sans-serif", layout.font))
        .draw()
        .map_err(pe)?;
    Ok(chart)
}

/// One heatmap cell centred on `(x, y)`: coloured by `v` on `scale`, labelled with its value
/// (grey with `–` where there is none).
fn draw_heat_cell<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<IndexAxis, IndexAxis>>,
    (x, y): (f64, f64),
    v: f64,
    scale: Scale,
) -> Result<()> {
    let fill = if v.is_finite() {
        viridis(scale.at(v))
    } else {
        RGBColor(215, 215, 215)
    };
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
            fill.filled(),
        )))
        .map_err(pe)?;
    let text = if v.is_finite() { fmt_value(v) } else { "–".into() };
    let ink = text_on(fill);
    let style = TextStyle::from(("sans-serif", 12).into_font())
        .color(&ink)
        .pos(Pos::new(HPos::Center, VPos::Center));
    chart
        .draw_series(std::iter::once(Text::new(text, (x, y), style)))
        .map_err(pe)?;
    Ok(())
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

/// A diverging blue (f = 0) – white (0.5) – red (1) map (ColorBrewer RdBu, colour-blind safe).
fn diverging(f: f64) -> RGBColor {
    let f = if f.is_finite() { f.clamp(0.0, 1.0) } else { 0.5 };
    let (blue, white, red) = ((33.0, 102.0, 172.0), (247.0, 247.0, 247.0), (178.0, 24.0, 43.0));
    let (a, b, u) = if f < 0.5 {
        (blue, white, f * 2.0)
    } else {
        (white, red, (f - 0.5) * 2.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The cost ratio at which the routing map's colours saturate (8×, either way).
pub const ROUTING_MAP_SATURATION: f64 = 8.0;

/// The (L, m) routing map: one cell per (context, append) pair coloured on a diverging scale by
/// local cost ÷ remote cost (blue: local cheaper, red: remote cheaper; log scale saturating at
/// [`ROUTING_MAP_SATURATION`]×) with a labelled colour bar, the ratio written in each cell and
/// the boundary from which remote wins drawn as a black line; into `<stem>.png` and `<stem>.svg`.
///
/// # Errors
/// Drawing or file errors.
pub fn routing_map(
    stem: &Path,
    title: &str,
    contexts: &[u32],
    appends: &[u32],
    cells: &[crate::routing_map::MapCell],
    crossovers: &[(u32, u32)],
) -> Result<()> {
    render(
        stem,
        &RoutingMap {
            title,
            contexts,
            appends,
            cells,
            crossovers,
        },
    )
}

struct RoutingMap<'a> {
    title: &'a str,
    contexts: &'a [u32],
    appends: &'a [u32],
    cells: &'a [crate::routing_map::MapCell],
    /// (context L, exact crossover m) of the contexts with a boundary
    /// ([`crate::routing_map::Boundary::crossover_append_tokens`]): labelled on the line.
    crossovers: &'a [(u32, u32)],
}

impl Figure for RoutingMap<'_> {
    fn size(&self) -> (u32, u32) {
        (1120, 760)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (contexts, appends) = (self.contexts, self.appends);
        let (nx, ny) = (contexts.len(), appends.len());
        let (data, side) = with_legend_panel(root, 190);
        let mut chart = grid_chart(
            &data,
            (nx, ny),
            &GridLayout {
                caption: Some((self.title.to_string(), 17)),
                margin: 14,
                y_label_px: 70,
                x_label: &|i| contexts[i].to_string(),
                y_label: &|j| appends[j].to_string(),
                x_desc: "cached context L [tokens]",
                y_desc: "new tokens m",
                font: 14,
            },
        )?;
        let scale = Scale {
            lo: 1.0 / ROUTING_MAP_SATURATION,
            hi: ROUTING_MAP_SATURATION,
            log: true,
        };
        // Per context: the first append index from which remote wins (ny: never).
        let mut remote_from = vec![ny; nx];
        for c in self.cells {
            let (Some(i), Some(j)) = (
                contexts.iter().position(|&l| l == c.context_tokens),
                appends.iter().position(|&m| m == c.append_tokens),
            ) else {
                continue;
            };
            let ratio = (c.local_cost_ms / c.remote_cost_ms).max(1e-9);
            let fill = diverging(scale.at(ratio.clamp(scale.lo, scale.hi)));
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(i as f64 - 0.5, j as f64 - 0.5), (i as f64 + 0.5, j as f64 + 0.5)],
                    fill.filled(),
                )))
                .map_err(pe)?;
            let ink = text_on(fill);
            let style = TextStyle::from(("sans-serif", 12).into_font())
                .color(&ink)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{ratio:.2}"),
                    (i as f64, j as f64),
                    style,
                )))
                .map_err(pe)?;
            if c.route == crate::routing_map::MapRoute::Remote {
                remote_from[i] = remote_from[i].min(j);
            }
        }
        // The boundary: a step line under the first remote cell of every column.
        let mut line: Vec<(f64, f64)> = Vec::new();
        for (i, &j) in remote_from.iter().enumerate() {
            let y = j as f64 - 0.5;
            line.push((i as f64 - 0.5, y));
            line.push((i as f64 + 0.5, y));
        }
        if remote_from.iter().any(|&j| j < ny) {
            chart
                .draw_series(std::iter::once(PathElement::new(line, BLACK.stroke_width(3))))
                .map_err(pe)?;
        }
        // Each column's exact crossover, on its boundary step (black on white, left of centre so
        // the cells' ratios stay readable).
        for &(l, x) in self.crossovers {
            let Some(i) = contexts.iter().position(|&c| c == l) else {
                continue;
            };
            if remote_from[i] >= ny {
                continue;
            }
            let (cx, cy) = (i as f64 - 0.25, remote_from[i] as f64 - 0.5);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(cx - 0.2, cy - 0.17), (cx + 0.2, cy + 0.17)],
                    WHITE.filled(),
                )))
                .map_err(pe)?;
            let style = TextStyle::from(("sans-serif", 12).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .draw_series(std::iter::once(Text::new(format!("m = {x}"), (cx, cy), style)))
                .map_err(pe)?;
        }
        let (top, bottom) = side.split_vertically(150);
        draw_legend(
            &top,
            None,
            &[
                ("local cheaper".into(), Swatch::Box(diverging(0.1))),
                ("remote cheaper".into(), Swatch::Box(diverging(0.9))),
                ("boundary (exact m)".into(), Swatch::Reference(BLACK, None)),
            ],
        )?;
        draw_colorbar(&bottom, scale, "local ÷ remote cost", diverging)
    }
}

/// Fit quality of one phase of a calibration.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseFit {
    /// Phase name.
    pub phase: String,
    /// Samples.
    pub n: usize,
    /// Coefficient of determination of predicted on measured times (1 − SS_res / SS_tot).
    pub r2: f64,
    /// Mean absolute percentage error \[%\].
    pub mape_pct: f64,
}

/// R² and MAPE of each phase's points (phases in name order; points with a non-positive
/// measurement are left out).
pub fn fit_stats(points: &[crate::calibrate::FitPoint]) -> Vec<PhaseFit> {
    let mut phases: Vec<&str> = points.iter().map(|p| p.phase.as_str()).collect();
    phases.sort_unstable();
    phases.dedup();
    phases
        .into_iter()
        .map(|ph| {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.phase == ph && p.measured_ms > 0.0 && p.predicted_ms.is_finite())
                .map(|p| (p.measured_ms, p.predicted_ms))
                .collect();
            let n = pts.len();
            let mean = pts.iter().map(|p| p.0).sum::<f64>() / n.max(1) as f64;
            let ss_tot: f64 = pts.iter().map(|p| (p.0 - mean).powi(2)).sum();
            let ss_res: f64 = pts.iter().map(|p| (p.1 - p.0).powi(2)).sum();
            PhaseFit {
                phase: ph.to_string(),
                n,
                r2: if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { f64::NAN },
                mape_pct: 100.0 * pts.iter().map(|p| ((p.1 - p.0) / p.0).abs()).sum::<f64>() / n.max(1) as f64,
            }
        })
        .collect()
}

/// A log–log chart on `area` for measured (x) against predicted (y) values spanning `values`
/// (padded by `pad`×; 1–10 when none is positive and finite), with its mesh, the optional
/// `caption`, the axis descriptions, the y = x line and dashed ±10% lines; returns the chart for
/// the caller's markers. [`identity_legend`] gives the lines' legend entries.
///
/// # Errors
/// Drawing errors.
fn measured_vs_predicted_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    values: impl IntoIterator<Item = f64>,
    pad: f64,
    caption: Option<&str>,
    (x_desc, y_desc): (&str, &str),
) -> Result<ChartContext<'a, DB, Cartesian2d<LogAxis, LogAxis>>> {
    let (lo, hi) = finite_range(values, true);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 10.0) };
    let axis = LogAxis::around(lo, hi, pad);
    let (a, b) = (axis.lo, axis.hi);
    let mut builder = ChartBuilder::on(area);
    if let Some(c) = caption {
        builder.caption(c, ("sans-serif", 16));
    }
    let mut chart = builder
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(axis.clone(), axis)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_labels(12)
        .y_labels(12)
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(pe)?;
    draw_styled_line(&mut chart, &[(a, a), (b, b)], BLACK.stroke_width(1), None)?;
    for f in [0.9, 1.1] {
        draw_styled_line(
            &mut chart,
            &[(a, a * f), (b, b * f)],
            IDENTITY_BAND.stroke_width(1),
            Some((6, 4)),
        )?;
    }
    Ok(chart)
}

/// Colour of the ±10% lines of [`measured_vs_predicted_chart`].
const IDENTITY_BAND: RGBColor = RGBColor(90, 90, 90);

/// Legend entries of the y = x and ±10% lines [`measured_vs_predicted_chart`] draws.
fn identity_legend() -> [(String, Swatch); 2] {
    [
        ("y = x".into(), Swatch::Reference(BLACK, None)),
        ("±10%".into(), Swatch::Reference(IDENTITY_BAND, Some((6, 4)))),
    ]
}

/// Measured vs predicted time of every fitted sample, log–log, one colour and marker per phase
/// (phases with fewer points drawn on top), the y = x line and ±10% lines, R² and MAPE per phase
/// on the figure, and a residual panel (predicted ÷ measured − 1, in %) below; into
/// `<stem>.png` and `<stem>.svg`.
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
        (1100, 1000)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self.c;
        let pts: Vec<&crate::calibrate::FitPoint> = c
            .points
            .iter()
            .filter(|p| p.measured_ms > 0.0 && p.predicted_ms > 0.0)
            .collect();
        let stats = fit_stats(&c.points);
        // Phases drawn largest first, so a small phase is not hidden under a large one.
        let mut order: Vec<usize> = (0..stats.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(stats[k].n));
        let (data, legend) = with_legend_panel(root, 300);
        let data = data
            .titled(
                &format!("Calibration fit: {} on {}", c.file.model, c.file.gpu),
                ("sans-serif", 22),
            )
            .map_err(pe)?;
        let (top, bottom) = data.split_vertically(620);
        let mut chart = measured_vs_predicted_chart(
            &top,
            pts.iter().flat_map(|p| [p.measured_ms, p.predicted_ms]),
            1.4,
            None,
            ("measured [ms] (log)", "predicted [ms] (log)"),
        )?;
        let (a, b) = {
            let r = chart.x_range();
            (r.start, r.end)
        };
        // Each phase's points (with its series index), largest phase first.
        let by_phase: Vec<(usize, Vec<&crate::calibrate::FitPoint>)> = order
            .iter()
            .map(|&k| (k, pts.iter().copied().filter(|p| p.phase == stats[k].phase).collect()))
            .collect();
        for (k, ps) in &by_phase {
            let p: Vec<(f64, f64)> = ps.iter().map(|p| (p.measured_ms, p.predicted_ms)).collect();
            draw_markers(&mut chart, &p, *k, 3)?;
        }
        let mut residual = ChartBuilder::on(&bottom)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(LogAxis::new(a, b), -40f64..40.0)
            .map_err(pe)?;
        residual
            .configure_mesh()
            .max_light_lines(1)
            .x_labels(12)
            .y_labels(9)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .x_desc("measured [ms] (log)")
            .y_desc("predicted ÷ measured − 1 [%]")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(pe)?;
        draw_styled_line(&mut residual, &[(a, 0.0), (b, 0.0)], BLACK.stroke_width(1), None)?;
        for f in [-10.0, 10.0] {
            draw_styled_line(
                &mut residual,
                &[(a, f), (b, f)],
                IDENTITY_BAND.stroke_width(1),
                Some((6, 4)),
            )?;
        }
        for (k, ps) in &by_phase {
            let p: Vec<(f64, f64)> = ps
                .iter()
                .map(|p| {
                    (
                        p.measured_ms,
                        (100.0 * (p.predicted_ms / p.measured_ms - 1.0)).clamp(-39.0, 39.0),
                    )
                })
                .collect();
            draw_markers(&mut residual, &p, *k, 2)?;
        }
        let mut entries: Vec<(String, Swatch)> = stats
            .iter()
            .enumerate()
            .map(|(k, s)| (format!("{} (n = {})", s.phase, s.n), Swatch::Mark(marker(k), color(k))))
            .collect();
        entries.extend(identity_legend());
        entries.push((String::new(), Swatch::Box(WHITE)));
        for s in &stats {
            entries.push((
                format!("{}: R² {:.4}, MAPE {:.1}%", s.phase, s.r2, s.mape_pct),
                Swatch::Box(WHITE),
            ));
        }
        draw_legend(&legend, Some("phase"), &entries)
    }
}

/// One configuration's points on the validation figure ([`validation_comprehensive`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationSeries {
    /// Configuration (`1P_3D`, …).
    pub config: String,
    /// (measured, predicted) turn-2 p50 TTFT of its points below the measured knee \[ms\].
    pub t2_p50_ms: Vec<(f64, f64)>,
    /// The same for turn-2 p99 TTFT \[ms\].
    pub t2_p99_ms: Vec<(f64, f64)>,
}

/// Median |error| of (measured, predicted) pairs \[%\], as `validate` computes its medians
/// (NaN when empty).
pub fn median_abs_error_pct(pts: &[(f64, f64)]) -> f64 {
    crate::validate::median(pts.iter().map(|&(m, p)| crate::validate::err(p, m).abs()))
}

/// The comprehensive validation rows as the figure draws them: per configuration (name order),
/// the points below the measured saturation knee whose measured and predicted values are both
/// positive and finite.
pub fn validation_series(rows: &[crate::validate::ComprehensiveRow]) -> Vec<ValidationSeries> {
    let mut configs: Vec<&str> = rows.iter().map(|r| r.config.as_str()).collect();
    configs.sort_unstable();
    configs.dedup();
    let ok = |m: f64, p: f64| m > 0.0 && p > 0.0 && m.is_finite() && p.is_finite();
    configs
        .into_iter()
        .map(|c| {
            let below: Vec<&crate::validate::ComprehensiveRow> =
                rows.iter().filter(|r| r.config == c && r.below_saturation).collect();
            let pick = |f: fn(&crate::validate::ComprehensiveRow) -> (f64, f64)| {
                below.iter().map(|r| f(r)).filter(|&(m, p)| ok(m, p)).collect()
            };
            ValidationSeries {
                config: c.to_string(),
                t2_p50_ms: pick(|r| (r.t2_p50_ttft_measured_ms, r.t2_p50_ttft_predicted_ms)),
                t2_p99_ms: pick(|r| (r.t2_p99_ttft_measured_ms, r.t2_p99_ttft_predicted_ms)),
            }
        })
        .collect()
}

/// Measured vs predicted turn-2 p50 (left) and p99 (right) TTFT of the comprehensive sweep's
/// points below the measured saturation knee, log–log, one colour and marker per configuration,
/// the y = x line and ±10% lines; the legend gives each configuration's points and median
/// |error| per panel (the figures `validate` prints as its medians below saturation). Into
/// `<stem>.png` and `<stem>.svg`.
///
/// # Errors
/// Drawing or file errors.
pub fn validation_comprehensive(stem: &Path, rows: &[crate::validate::ComprehensiveRow]) -> Result<()> {
    render(
        stem,
        &ValidationFigure {
            series: validation_series(rows),
        },
    )
}

struct ValidationFigure {
    series: Vec<ValidationSeries>,
}

impl Figure for ValidationFigure {
    fn size(&self) -> (u32, u32) {
        (1500, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (data, legend) = with_legend_panel(root, 330);
        let data = data
            .titled(
                "Validation: vllm-ppd comprehensive sweep, turn-2 TTFT below the measured knee",
                ("sans-serif", 22),
            )
            .map_err(pe)?;
        let (w, _) = data.dim_in_pixel();
        let (left, right) = data.split_horizontally(w / 2);
        type Pick = fn(&ValidationSeries) -> &Vec<(f64, f64)>;
        let panels: [(&DrawingArea<DB, Shift>, &str, Pick); 2] = [
            (&left, "turn-2 p50 TTFT", |s| &s.t2_p50_ms),
            (&right, "turn-2 p99 TTFT", |s| &s.t2_p99_ms),
        ];
        for (area, what, pick) in panels {
            let mut chart = measured_vs_predicted_chart(
                area,
                self.series
                    .iter()
                    .flat_map(|s| pick(s).iter().flat_map(|&(m, p)| [m, p])),
                1.3,
                Some(what),
                (
                    &format!("measured {what} [ms] (log)"),
                    &format!("predicted {what} [ms] (log)"),
                ),
            )?;
            for (k, s) in self.series.iter().enumerate() {
                draw_markers(&mut chart, pick(s), k, 3)?;
            }
        }
        let mut entries: Vec<(String, Swatch)> = self
            .series
            .iter()
            .enumerate()
            .map(|(k, s)| {
                (
                    format!(
                        "{} (n = {}): {}% / {}%",
                        s.config,
                        s.t2_p50_ms.len(),
                        crate::output::fmt_number(median_abs_error_pct(&s.t2_p50_ms), 1),
                        crate::output::fmt_number(median_abs_error_pct(&s.t2_p99_ms), 1)
                    ),
                    Swatch::Mark(marker(k), color(k)),
                )
            })
            .collect();
        entries.extend(identity_legend());
        draw_legend(&legend, Some("config: median |error| p50 / p99"), &entries)
    }
}

/// One setting kind of the interference study's core experiment on its figure
/// ([`validation_interference`]).
#[derive(Clone, Debug, PartialEq)]
pub struct InterferenceSeries {
    /// `decode only`, `+ 2 append-prefills`, `+ 1 full prefill`, ….
    pub label: String,
    /// (N decode requests, measured, predicted decode TPOT \[ms\]), by N.
    pub points: Vec<(f64, f64, f64)>,
}

/// The core experiment's settings with decode requests, one series per scenario: decode-only
/// first, then the append-prefill ones and the full-prefill ones by the number inserted; points
/// without a finite measured and predicted TPOT are left out.
pub fn interference_series(rows: &[crate::validate::InterferenceRow]) -> Vec<InterferenceSeries> {
    let mut kinds: Vec<(u8, u32, &str)> = rows
        .iter()
        .filter(|r| r.experiment == "core" && r.decode_count > 0)
        .map(|r| {
            let rank = match r.prefill_type.as_str() {
                "" => 0,
                "append" => 1,
                _ => 2,
            };
            (rank, r.prefill_count, r.prefill_type.as_str())
        })
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|(_, k, ty)| {
            let mut points: Vec<(f64, f64, f64)> = rows
                .iter()
                .filter(|r| {
                    r.experiment == "core" && r.decode_count > 0 && r.prefill_count == k && r.prefill_type == ty
                })
                .map(|r| {
                    (
                        r.decode_count as f64,
                        r.decode_tpot_measured_ms,
                        r.decode_tpot_predicted_ms,
                    )
                })
                .filter(|p| p.1.is_finite() && p.2.is_finite())
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let label = match (ty, k) {
                ("", _) => "decode only".to_string(),
                ("append", 1) => "+ 1 append-prefill".to_string(),
                ("append", k) => format!("+ {k} append-prefills"),
                (_, 1) => "+ 1 full prefill".to_string(),
                (_, k) => format!("+ {k} full prefills"),
            };
            InterferenceSeries { label, points }
        })
        .collect()
}

/// The interference study's core experiment: decode TPOT against the number N of decode
/// requests, measured (markers) and predicted (lines), one colour per setting kind (decode-only,
/// with 1, 2 or 4 append-prefills or full prefills inserted); into `<stem>.png` and
/// `<stem>.svg`.
///
/// # Errors
/// Drawing or file errors.
pub fn validation_interference(stem: &Path, rows: &[crate::validate::InterferenceRow]) -> Result<()> {
    render(
        stem,
        &InterferenceFigure {
            series: interference_series(rows),
        },
    )
}

struct InterferenceFigure {
    series: Vec<InterferenceSeries>,
}

impl Figure for InterferenceFigure {
    fn size(&self) -> (u32, u32) {
        (1100, 650)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (data, legend) = with_legend_panel(root, 280);
        let data = data
            .titled(
                "Validation: interference bursts on one H100 (shared 2,048-token prefix)",
                ("sans-serif", 20),
            )
            .map_err(pe)?;
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let n_max = pts().map(|p| p.0).fold(10.0, f64::max);
        let y_max = pts().flat_map(|p| [p.1, p.2]).fold(10.0, f64::max);
        let mut chart = ChartBuilder::on(&data)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..n_max * 1.04, 0f64..y_max * 1.08)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_labels(12)
            .y_labels(10)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .x_desc("decode requests N (sent at once)")
            .y_desc("decode TPOT [ms]")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(pe)?;
        for (k, s) in self.series.iter().enumerate() {
            let predicted: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.2)).collect();
            draw_line(&mut chart, &predicted, k, 2)?;
            let measured: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
            draw_markers(&mut chart, &measured, k, 3)?;
        }
        let entries: Vec<(String, Swatch)> = self
            .series
            .iter()
            .enumerate()
            .map(|(k, s)| (s.label.clone(), Swatch::Series(k)))
            .collect();
        draw_legend(&legend, Some("markers measured, lines predicted"), &entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_series_keep_points_below_the_knee_and_give_their_median_error() {
        let row = |config: &str, p50: (f64, f64), p99: (f64, f64), below: bool| crate::validate::ComprehensiveRow {
            config: config.into(),
            workload: "small_tiny".into(),
            qps: 1.0,
            measured_success_pct: 100.0,
            predicted_success_pct: 100.0,
            t1_p50_ttft_measured_ms: 1.0,
            t1_p50_ttft_predicted_ms: 1.0,
            t1_p99_ttft_measured_ms: 1.0,
            t1_p99_ttft_predicted_ms: 1.0,
            t2_p50_ttft_measured_ms: p50.0,
            t2_p50_ttft_predicted_ms: p50.1,
            t2_p99_ttft_measured_ms: p99.0,
            t2_p99_ttft_predicted_ms: p99.1,
            t1_mean_tpot_measured_ms: 8.0,
            t1_mean_tpot_predicted_ms: 8.0,
            t2_mean_tpot_measured_ms: 8.0,
            t2_mean_tpot_predicted_ms: 8.0,
            t2_p50_ttft_floor_pct: f64::NAN,
            t2_p99_ttft_floor_pct: f64::NAN,
            below_saturation: below,
            replay_past_knee: Vec::new(),
        };
        let rows = [
            row("1P_3pD", (100.0, 110.0), (200.0, 150.0), true),
            row("1P_3D", (100.0, 90.0), (200.0, 260.0), true),
            row("1P_3D", (50.0, 70.0), (80.0, 80.0), true),
            // Past the knee, and a point the replay could not predict: both left out.
            row("1P_3D", (900.0, 100.0), (2000.0, 100.0), false),
            row("1P_3D", (40.0, f64::NAN), (60.0, 60.0), true),
        ];
        let s = validation_series(&rows);
        assert_eq!(
            s.iter().map(|x| x.config.as_str()).collect::<Vec<_>>(),
            ["1P_3D", "1P_3pD"]
        );
        assert_eq!(s[0].t2_p50_ms, [(100.0, 90.0), (50.0, 70.0)]);
        assert_eq!(s[0].t2_p99_ms, [(200.0, 260.0), (80.0, 80.0), (60.0, 60.0)]);
        // |errors| 10% and 40% → median 25%; 30%, 0%, 0% → 0%; one point of 10% / 25%.
        let med = median_abs_error_pct;
        assert!((med(&s[0].t2_p50_ms) - 25.0).abs() < 1e-9);
        assert_eq!(med(&s[0].t2_p99_ms), 0.0);
        assert!((med(&s[1].t2_p50_ms) - 10.0).abs() < 1e-9);
        assert!((med(&s[1].t2_p99_ms) - 25.0).abs() < 1e-9);
    }

    #[test]
    fn interference_series_group_the_core_settings_by_kind_in_order_of_n() {
        let row = |experiment: &str, n: u32, k: u32, ty: &str, meas: f64, pred: f64| crate::validate::InterferenceRow {
            experiment: experiment.into(),
            scenario: String::new(),
            decode_count: n,
            prefill_count: k,
            prefill_type: ty.into(),
            append_tokens: 128,
            fitted: k == 0,
            decode_tpot_measured_ms: meas,
            decode_tpot_predicted_ms: pred,
            batch_time_measured_ms: 1.0,
            batch_time_predicted_ms: 1.0,
            prefill_ttft_measured_ms: f64::NAN,
            prefill_ttft_predicted_ms: f64::NAN,
        };
        let rows = [
            row("core", 20, 2, "full", 14.0, 11.0),
            row("core", 10, 2, "full", 12.0, 10.0),
            row("core", 10, 0, "", 11.0, 9.4),
            row("core", 10, 1, "append", 11.9, 9.6),
            // Left out: no decode requests, the sensitivity experiment, no prediction.
            row("core", 0, 1, "full", f64::NAN, f64::NAN),
            row("sensitivity", 64, 1, "append", 16.0, 15.0),
            row("core", 30, 0, "", 13.0, f64::NAN),
        ];
        let s = interference_series(&rows);
        let labels: Vec<&str> = s.iter().map(|x| x.label.as_str()).collect();
        assert_eq!(labels, ["decode only", "+ 1 append-prefill", "+ 2 full prefills"]);
        assert_eq!(s[0].points, [(10.0, 11.0, 9.4)]);
        assert_eq!(s[2].points, [(10.0, 12.0, 10.0), (20.0, 14.0, 11.0)]);
    }

    #[test]
    fn log_ticks_are_1_2_5_per_decade_and_thin_out() {
        assert_eq!(log_ticks(30.0, 2000.0, 12), [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]);
        // Too many for 1–2–5: decades only.
        assert_eq!(log_ticks(1.0, 1e6, 5).len(), 4);
        assert_eq!(log_ticks(1.0, 1e4, 6), [1.0, 10.0, 100.0, 1000.0, 10000.0]);
        // Within one decade: 1–9.
        assert_eq!(log_ticks(12.0, 45.0, 12), [20.0, 30.0, 40.0]);
    }

    #[test]
    fn tick_labels_drop_trailing_zeros() {
        assert_eq!(fmt_tick(25.0), "25");
        assert_eq!(fmt_tick(0.5), "0.5");
        assert_eq!(fmt_tick(12.125), "12.125");
        assert_eq!(fmt_tick(20000.0), "20k");
        assert_eq!(fmt_tick(-0.0), "0");
    }

    #[test]
    fn metric_labels_read_as_words_with_units() {
        assert_eq!(
            metric_label("ttft_turn2plus_p50_ms"),
            ("TTFT p50, turns ≥ 2".into(), "TTFT, turns ≥ 2 [ms]".into(), true)
        );
        assert_eq!(metric_label("tpot_p99_9_ms").0, "TPOT p99.9");
        assert_eq!(metric_label("tpot_p99_9_ms").1, "TPOT [ms/token]");
        assert_eq!(metric_label("slo_attainment").0, "SLO attainment");
        assert!(!metric_label("slo_attainment").2);
    }

    #[test]
    fn fit_stats_by_hand() {
        let p = |phase: &str, m: f64, pr: f64| crate::calibrate::FitPoint {
            phase: phase.into(),
            measured_ms: m,
            predicted_ms: pr,
            label: String::new(),
        };
        // Measured 1, 2, 3 (mean 2, SS_tot 2); predicted 1.1, 2, 2.7: SS_res 0.01 + 0 + 0.09.
        let s = fit_stats(&[
            p("decode", 1.0, 1.1),
            p("decode", 2.0, 2.0),
            p("decode", 3.0, 2.7),
            p("a", 4.0, 5.0),
        ]);
        assert_eq!(s[0].phase, "a");
        assert_eq!((s[1].phase.as_str(), s[1].n), ("decode", 3));
        assert!((s[1].r2 - (1.0 - 0.1 / 2.0)).abs() < 1e-12);
        assert!((s[1].mape_pct - 100.0 * (0.1 + 0.0 + 0.1) / 3.0).abs() < 1e-9);
        assert!((s[0].mape_pct - 25.0).abs() < 1e-12 && s[0].r2.is_nan());
    }

    /// Width and height of a PNG, from its IHDR chunk.
    fn png_size(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        (be(16), be(20))
    }

    #[test]
    fn sweep_figure_labels_crossovers_on_the_curves_with_units_and_slo() {
        let rates = [1.0, 2.0, 4.0];
        let curves = vec![
            ("pd".to_string(), vec![10.0, 30.0, 50.0]),
            ("ppd".to_string(), vec![20.0, 25.0, 30.0]),
        ];
        let crossings = crate::sweep::crossovers(&rates, &curves, "ttft_turn2plus_p50_ms");
        // d = pd − ppd = −10, +5: the crossing is at 1 + 10/15 = 1.667/s, value 10 + 20 × 2/3.
        assert_eq!(crossings.len(), 1);
        let m = crate::sweep::MetricCurves {
            metric: "ttft_turn2plus_p50_ms".into(),
            ranges: vec![vec![(9.0, 11.0), (28.0, 32.0), (45.0, 55.0)], vec![(20.0, 20.0); 3]],
            curves,
            crossings,
        };
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("f");
        let slo = Reference {
            value: 40.0,
            label: "TTFT SLO 40 ms".into(),
        };
        sweep_metric(&stem, &rates, &m, Some(&slo)).unwrap();
        let svg = std::fs::read_to_string(with_ext(&stem, "svg")).unwrap();
        for text in [
            "TTFT p50, turns ≥ 2 vs load",
            "TTFT, turns ≥ 2 [ms] (log)",
            "load [new conversations / s]",
            "TTFT SLO 40 ms",
            "1.67/s",
            "min–max over seeds",
            "crossover (rate/s)",
        ] {
            assert!(svg.contains(&format!(">\n{text}\n</text>")), "no {text:?}");
        }
        // 1–2–5 ticks on the log axis: 10, 20, 50 and nothing at half-decades.
        for tick in ["10", "20", "50"] {
            assert!(svg.contains(&format!(">\n{tick}\n</text>")), "no tick {tick}");
        }
        assert!(!svg.contains(">\n31.6\n</text>") && !svg.contains(">\n32\n</text>"));
        assert_eq!(png_size(&with_ext(&stem, "png")).1, 560);
    }

    #[test]
    fn calibration_figure_prints_r2_and_mape_per_phase() {
        let points: Vec<crate::calibrate::FitPoint> = [(1.0, 1.1), (2.0, 2.0), (3.0, 2.7)]
            .iter()
            .map(|&(m, p)| crate::calibrate::FitPoint {
                phase: "decode".into(),
                measured_ms: m,
                predicted_ms: p,
                label: String::new(),
            })
            .collect();
        let s = fit_stats(&points);
        let text = format!("decode: R² {:.4}, MAPE {:.1}%", s[0].r2, s[0].mape_pct);
        assert_eq!(text, "decode: R² 0.9500, MAPE 6.7%");
        // The figure carries that line (and the ±10% guides and the residual panel's axis).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-llama3.1-8b.json");
        let c = crate::calibrate::Calibration {
            file: crate::calibrate::model_file::CalibrationFile::load(&path).unwrap(),
            points,
        };
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("fit");
        calibration_fit(&stem, &c).unwrap();
        let svg = std::fs::read_to_string(with_ext(&stem, "svg")).unwrap();
        for t in [text.as_str(), "±10%", "predicted ÷ measured − 1 [%]", "decode (n = 3)"] {
            assert!(svg.contains(&format!(">\n{t}\n</text>")), "no {t:?}");
        }
        assert_eq!(png_size(&with_ext(&stem, "png")), (1100, 1000));
    }

    #[test]
    fn color_scales_end_where_they_should() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(diverging(0.5), RGBColor(247, 247, 247));
        assert_eq!(text_on(viridis(0.0)), WHITE);
        assert_eq!(text_on(viridis(1.0)), BLACK);
    }
}

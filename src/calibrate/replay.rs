//! Overheads identified by **replaying** loaded runs (simulation in the loop).
//!
//! Low-load request samples fix the *total* of each fixed overhead, but not where its work is
//! serialized: at low load a queue is always empty. The vllm-ppd comprehensive sweep (training
//! set: its `1P_*` configurations, 2 turns, Poisson starts in a 10 s window, 0.5–20 new
//! conversations/s) loads the PD handoff up to saturation, so its turn-1 and turn-2 TTFTs under
//! load identify how the handoff splits into
//!
//! * `pd_handoff_p_service_ms` — serialized work at the P instance (one queue per P),
//! * `pd_handoff_d_service_ms` — serialized work at D's API server (one queue per D/pD, shared
//!   with the requests D receives directly),
//! * the rest of `pd_handoff_ms` — latency (no queue),
//!
//! with the iteration model held fixed. The three parameters are fitted by Nelder–Mead (argmin)
//! on the mean of `|ln(predicted / measured)|` over turn-1 p50, turn-2 p50 and turn-2 p99 TTFT
//! of every point whose measured success rate is at least the knee criterion
//! ([`crate::validate::KNEE_MIN_SUCCESS_PCT`]), each point replayed [`REPLAYS`] times (common random
//! numbers: the same arrivals and placements at every evaluation, so the objective is a
//! deterministic function of the parameters). Each term is clamped at `ln 10` so a point far past
//! its knee cannot dominate.
//!
//! **Leave-one-configuration-out** cross-validation refits on all configurations but one and
//! reports the median |error| of turn-2 p50 TTFT below saturation on the one left out.

use crate::calibrate::model_file::{CalibrationFile, Coefficient};
use crate::validate::{self, ComprehensiveRow};
use argmin::core::{CostFunction, Executor};
use argmin::solver::neldermead::NelderMead;
use rayon::prelude::*;

/// Replays per point during the fit.
pub const REPLAYS: u64 = 3;

/// Nelder–Mead iterations per fit.
pub const MAX_ITERS: u64 = 40;

/// One measured comprehensive point: config, workload, QPS and the measured JSON.
pub type Point = (String, String, f64, serde_json::Value);

/// The three handoff parameters \[ms\].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandoffSplit {
    /// Whole handoff \[ms\].
    pub total_ms: f64,
    /// Serialized at P \[ms\].
    pub p_service_ms: f64,
    /// Serialized at D's API server \[ms\].
    pub d_service_ms: f64,
}

impl HandoffSplit {
    /// From an unconstrained optimiser vector: total ≥ 0, the shares clamped into `[0, total]`
    /// with `p + d ≤ total`; returns the split and how far `x` lay outside (a penalty).
    fn from_x(x: &[f64]) -> (Self, f64) {
        let total = x[0].max(0.0);
        let p = x[1].clamp(0.0, total);
        let d = x[2].clamp(0.0, total - p);
        let outside = (x[0] - total).abs() + (x[1] - p).abs() + (x[2] - d).abs();
        (
            HandoffSplit {
                total_ms: total,
                p_service_ms: p,
                d_service_ms: d,
            },
            outside,
        )
    }

    /// `cal` with this split as its overheads.
    pub fn apply(&self, cal: &CalibrationFile) -> CalibrationFile {
        let mut c = cal.clone();
        let coef = |name: &str, v: f64| Coefficient {
            name: name.into(),
            value: v,
            unit: "ms".into(),
            ci95_low: v,
            ci95_high: v,
            at_bound: false,
        };
        // Fitted by the replay: its value replaces the low-load fit's (whose interval no longer
        // applies; the leave-one-configuration-out folds show its spread instead).
        c.overheads.pd_handoff_ms = coef("pd_handoff_ms", self.total_ms);
        c.overheads.pd_handoff_p_service_ms = Some(coef("pd_handoff_p_service_ms", self.p_service_ms));
        c.overheads.pd_handoff_d_service_ms = Some(coef("pd_handoff_d_service_ms", self.d_service_ms));
        c
    }
}

/// The configurations of `points`, sorted, each once.
pub fn configs(points: &[Point]) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = points.iter().map(|p| p.0.as_str()).collect();
    set.into_iter().map(String::from).collect()
}

/// Simulates `points` with `cal` (`replays` each, in parallel); rows in input order.
pub fn simulate(points: &[Point], cal: &CalibrationFile, seed: u64, replays: u64) -> Vec<ComprehensiveRow> {
    points
        .par_iter()
        .filter_map(|(c, w, q, v)| validate::simulate_comprehensive_replays(c, w, *q, v, cal, seed, replays))
        .collect()
}

/// The objective: mean clamped |ln(pred/meas)| of turn-1 p50, turn-2 p50 and turn-2 p99 TTFT over
/// the rows measured at ≥ the knee's success rate.
pub fn objective(rows: &[ComprehensiveRow]) -> f64 {
    let cap = 10f64.ln();
    let mut sum = 0.0;
    let mut n = 0usize;
    for r in rows
        .iter()
        .filter(|r| r.measured_success_pct >= validate::KNEE_MIN_SUCCESS_PCT)
    {
        for (p, m) in [
            (r.t1_p50_ttft_predicted_ms, r.t1_p50_ttft_measured_ms),
            (r.t2_p50_ttft_predicted_ms, r.t2_p50_ttft_measured_ms),
            (r.t2_p99_ttft_predicted_ms, r.t2_p99_ttft_measured_ms),
        ] {
            if p.is_finite() && m > 0.0 {
                sum += if p > 0.0 { (p / m).ln().abs().min(cap) } else { cap };
                n += 1;
            }
        }
    }
    if n == 0 {
        f64::INFINITY
    } else {
        sum / n as f64
    }
}

/// Median |error| \[%\] of turn-2 p50 TTFT over rows below the measured saturation knee.
pub fn t2_p50_error_pct(rows: &[ComprehensiveRow]) -> f64 {
    let mut e: Vec<f64> = rows
        .iter()
        .filter(|r| r.below_saturation && r.t2_p50_ttft_measured_ms > 0.0 && r.t2_p50_ttft_predicted_ms.is_finite())
        .map(|r| 100.0 * ((r.t2_p50_ttft_predicted_ms - r.t2_p50_ttft_measured_ms) / r.t2_p50_ttft_measured_ms).abs())
        .collect();
    if e.is_empty() {
        return f64::NAN;
    }
    e.sort_by(f64::total_cmp);
    crate::metrics::percentile_sorted(&e, 50.0)
}

struct Problem<'a> {
    points: &'a [Point],
    cal: &'a CalibrationFile,
    seed: u64,
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, x: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        let (split, outside) = HandoffSplit::from_x(x);
        let rows = simulate(self.points, &split.apply(self.cal), self.seed, REPLAYS);
        Ok(objective(&rows) + outside * 0.01)
    }
}

/// Fits the handoff split to `points`, starting from `cal`'s values; returns the split and its
/// objective.
///
/// # Errors
/// When the optimiser fails (a non-finite objective everywhere).
pub fn fit(points: &[Point], cal: &CalibrationFile, seed: u64) -> anyhow::Result<(HandoffSplit, f64)> {
    let total = cal.overheads.pd_handoff_ms.value.max(1.0);
    let (p0, d0) = cal.pd_handoff_services_ms();
    let start = vec![total, p0.min(0.9 * total), d0.max(0.05 * total)];
    // Initial simplex: the start and one step of 25% of the total along each axis.
    let mut simplex = vec![start.clone()];
    for k in 0..3 {
        let mut v = start.clone();
        v[k] += if k == 0 { 0.25 * total } else { -0.25 * total };
        simplex.push(v);
    }
    let solver = NelderMead::new(simplex).with_sd_tolerance(1e-4)?;
    let res = Executor::new(Problem { points, cal, seed }, solver)
        .configure(|s| s.max_iters(MAX_ITERS))
        .run()?;
    let state = res.state();
    let best = state
        .best_param
        .clone()
        .ok_or_else(|| anyhow::anyhow!("replay fit found no parameters"))?;
    Ok((HandoffSplit::from_x(&best).0, state.best_cost))
}

/// One held-out configuration of the cross-validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Fold {
    /// The configuration left out.
    pub config: String,
    /// The split fitted on the others.
    pub split: HandoffSplit,
    /// Median |turn-2 p50 TTFT error| below saturation on the held-out config \[%\].
    pub held_out_t2_p50_pct: f64,
}

/// Leave-one-configuration-out cross-validation of [`fit`].
///
/// # Errors
/// As [`fit`].
pub fn leave_one_config_out(points: &[Point], cal: &CalibrationFile, seed: u64) -> anyhow::Result<Vec<Fold>> {
    let mut out = Vec::new();
    for c in &configs(points) {
        let train: Vec<Point> = points.iter().filter(|p| &p.0 != c).cloned().collect();
        let test: Vec<Point> = points.iter().filter(|p| &p.0 == c).cloned().collect();
        let (split, _) = fit(&train, cal, seed)?;
        let rows = simulate(&test, &split.apply(cal), seed, validate::COMPREHENSIVE_REPLICAS);
        out.push(Fold {
            config: c.clone(),
            split,
            held_out_t2_p50_pct: t2_p50_error_pct(&rows),
        });
    }
    Ok(out)
}

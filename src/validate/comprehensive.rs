//! Comprehensive sweep points (`comprehensive/<config>/*.json`)
//! The cluster comes from the config name (`1P_3D` → PD 1 P + 3 D, `1P_3pD` → PPD, `1P_2D_1pD` →
//! mixed pool, `4R` → replication); conversations start as the benchmark generates them —
//! `int(qps × 10)` exponential gaps at the point's QPS, keeping the arrivals inside a 10 s
//! window; two turns (context class small 128→128 / large 1024→1024, then the turn-2 type's
//! in→out, joined with `"\n"`; prompts at the token counts the engine sees,
//! [`comprehensive_real_tokens`]), no think time, exact output lengths; the client's 50-connection
//! pool and 120 s timeout; the calibrated overheads as FIFO work (one API-server queue per
//! instance, one proxy queue for PD handoffs). Points with no successful request measured are
//! skipped. Each point is replayed [`COMPREHENSIVE_REPLICAS`] times with independent arrivals and
//! router placements; each predicted statistic is its median over the replays. The summary gives,
//! per config, the median |error| below the measured saturation knee (with the run-to-run floor of
//! turn-2 p50 and p99 TTFT: each replay predicted by the median of the others), PD-vs-PPD winner
//! agreement by turn-2 p50 TTFT, measured vs predicted knees (with their floor: each replay's own
//! knee against the prediction), and the worst points.

use super::*;
use crate::calibrate::model_file::CalibrationFile;
use crate::cluster::Shape;
use crate::cost_model::LinearCostModel;
use crate::error::{InputError, InputResult};
use crate::policy::RouterConfig;
use crate::sim::workload::{LaterTurn, TimedConversation};
use crate::sim::Simulation;
use crate::time::{SimDuration, SimTime};
use crate::trace::Turn;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;
use std::path::Path;

/// Turn shapes of the vllm-ppd comprehensive protocol: context class → turn 1 (in, out).
pub fn comprehensive_turn1(context: &str) -> Option<(u32, u32)> {
    match context {
        "small" => Some((128, 128)),
        "large" => Some((1024, 1024)),
        _ => None,
    }
}

/// Tokens per nominal token of the comprehensive client's prompt text: it asks for a nominal
/// count and writes ≈ 0.75 words per token, which its seeded generator, re-run and counted with
/// cl100k_base (Llama 3's vocabulary extends it, so counts agree within a few %), turns into
/// ≈ 1.19 tokens per nominal one (docs/validation.md, "Real prompt lengths").
pub const COMPREHENSIVE_TOKENS_PER_NOMINAL: f64 = 1.19;

/// Tokens of the comprehensive client's prompt template around a turn-1 prompt (the same
/// re-generation; the turn-2 input is appended as bare text after the answer and `"\n"`).
pub const COMPREHENSIVE_TEMPLATE_TOKENS: u32 = 8;

/// The tokens the engine sees for a comprehensive prompt of `nominal` requested tokens: the
/// turn-1 prompt (`first`) with its template, or a turn-2 input.
pub fn comprehensive_real_tokens(nominal: u32, first: bool) -> u32 {
    let text = (COMPREHENSIVE_TOKENS_PER_NOMINAL * nominal as f64).round() as u32;
    if first {
        text + COMPREHENSIVE_TEMPLATE_TOKENS
    } else {
        text
    }
}

/// Turn-2 type → (in, out) of the vllm-ppd comprehensive protocol.
pub fn comprehensive_turn2(kind: &str) -> Option<(u32, u32)> {
    Some(match kind {
        "tiny" => (16, 32),
        "short_gen" => (32, 256),
        "long_gen" => (32, 512),
        "very_long_gen" => (64, 1024),
        "small_bal" => (64, 64),
        "mid_bal" => (128, 128),
        "mid_paste" => (256, 64),
        "big_paste" => (512, 64),
        "huge_paste" => (1024, 32),
        _ => return None,
    })
}

/// The 17 configurations of vllm-ppd's comprehensive benchmark (`GPU_CONFIGURATIONS` of its
/// `comprehensive_benchmark.py`): pure replica, pure disaggregated, and hybrids with replicas.
pub const VLLM_PPD_CONFIGURATIONS: [&str; 17] = [
    "4R",
    "1P_3D",
    "1P_2D_1pD",
    "1P_1D_2pD",
    "1P_3pD",
    "2P_2D",
    "2P_1D_1pD",
    "2P_2pD",
    "3P_1D",
    "3P_1pD",
    "1R_1P_2D",
    "1R_1P_1D_1pD",
    "1R_1P_2pD",
    "1R_2P_1D",
    "1R_2P_1pD",
    "2R_1P_1D",
    "2R_1P_1pD",
];

/// The cluster a vllm-ppd configuration name describes (`1P_3D`, `1P_3pD`, `1P_2D_1pD`, `4R`,
/// `2R_1P_1pD`, …; see [`Shape::parse`]) and the router its proxy runs there (`ppd`: R whole, D
/// via P, pD turn 1 via P and later turns direct); `None` for a name that is not a cluster with a
/// route.
pub fn deployment_for_config(name: &str) -> Option<(RouterConfig, Shape)> {
    let shape = Shape::parse(name)?;
    let router = RouterConfig::Ppd {
        name: Some(name.to_string()),
        clusters: Vec::new(),
    };
    router.check_on(&shape).ok()?;
    Some((router, shape))
}

/// One comprehensive point: measured and predicted. `Default` is all zeros (for building rows in
/// tests).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ComprehensiveRow {
    /// Configuration (`1P_3D`, …).
    pub config: String,
    /// Workload (`large_mid_bal`, …).
    pub workload: String,
    /// New conversations per second.
    pub qps: f64,
    /// Measured success rate \[%\].
    pub measured_success_pct: f64,
    /// Predicted success rate \[%\].
    pub predicted_success_pct: f64,
    /// Turn-1 p50 TTFT, measured / predicted \[ms\].
    pub t1_p50_ttft_measured_ms: f64,
    /// Predicted.
    pub t1_p50_ttft_predicted_ms: f64,
    /// Turn-1 p99 TTFT, measured \[ms\].
    pub t1_p99_ttft_measured_ms: f64,
    /// Predicted.
    pub t1_p99_ttft_predicted_ms: f64,
    /// Turn-2 p50 TTFT, measured \[ms\].
    pub t2_p50_ttft_measured_ms: f64,
    /// Predicted.
    pub t2_p50_ttft_predicted_ms: f64,
    /// Turn-2 p99 TTFT, measured \[ms\].
    pub t2_p99_ttft_measured_ms: f64,
    /// Predicted.
    pub t2_p99_ttft_predicted_ms: f64,
    /// Turn-1 mean TPOT, measured \[ms\].
    pub t1_mean_tpot_measured_ms: f64,
    /// Predicted.
    pub t1_mean_tpot_predicted_ms: f64,
    /// Turn-2 mean TPOT, measured \[ms\].
    pub t2_mean_tpot_measured_ms: f64,
    /// Predicted.
    pub t2_mean_tpot_predicted_ms: f64,
    /// Run-to-run noise floor of the turn-2 p50 TTFT \[%\]: the median, over the replays, of
    /// the |error| with which the median of the *other* replays predicts that replay's value —
    /// the error a model that is exactly the simulator would make against one run, from the
    /// randomness of arrivals and router placement alone (a lower bound: the simulator has no
    /// run-to-run noise of its service times). NaN with fewer than 3 replays.
    pub t2_p50_ttft_floor_pct: f64,
    /// The same floor for the turn-2 p99 TTFT \[%\].
    pub t2_p99_ttft_floor_pct: f64,
    /// Below the measured saturation knee (turn-1 p50 TTFT ≤ 1 s and every request succeeded).
    pub below_saturation: bool,
    /// Per replay, whether that replay alone is past the knee (turn-1 p50 TTFT > 1 s or fewer
    /// than [`KNEE_MIN_SUCCESS_PCT`] of its requests succeeding): the knees' run-to-run floor
    /// in [`comprehensive_summary`]. Not a CSV column.
    #[serde(skip)]
    pub replay_past_knee: Vec<bool>,
}

/// One comprehensive point (`v`, parsed from `path`, which errors name); `Ok(None)` for a point
/// with no successful request.
///
/// # Errors
/// Not a comprehensive file, an unknown workload or config name.
pub fn read_comprehensive(
    path: &Path,
    v: serde_json::Value,
) -> InputResult<Option<(String, String, f64, serde_json::Value)>> {
    let (Some(cfg), Some(w), Some(q)) = (v["config"].as_str(), v["workload"].as_str(), v["qps"].as_f64()) else {
        return Err(InputError::file(
            path,
            "not a vllm-ppd comprehensive point (expected config, workload, qps, turn1, turn2)",
        ));
    };
    if deployment_for_config(cfg).is_none() {
        return Err(InputError::key(
            path,
            "config",
            format!("`{cfg}` is not a vllm-ppd configuration name: give counts of pools joined by `_`, e.g. 1P_3D, 2P_1D_1pD, 1R_1P_2pD, 4R (P prefill, D decode, pD direct decode, R replica)"),
        ));
    }
    let (ctx, kind) = w.split_once('_').unwrap_or((w, ""));
    if comprehensive_turn1(ctx).is_none() || comprehensive_turn2(kind).is_none() {
        return Err(InputError::key(
            path,
            "workload",
            format!("`{w}` is not a comprehensive workload: give small_|large_ followed by tiny, short_gen, long_gen, very_long_gen, small_bal, mid_bal, mid_paste, big_paste or huge_paste"),
        ));
    }
    if v["success_rate"].as_f64().unwrap_or(0.0) <= 0.0 {
        return Ok(None);
    }
    Ok(Some((cfg.to_string(), w.to_string(), q, v)))
}

/// Independent replays per comprehensive point. Each draws its own Poisson arrivals and its own
/// router placement (the proxy hashes conversation content, so placement differs run to run) and
/// yields the statistics the benchmark computes from its one run; the prediction of each is their
/// median over the replays — the typical value of that statistic for one run. One replay alone
/// is one draw: in the mixed pools, where ≈ 48% of turn-2 requests take the PD path, one unlucky
/// placement moves a p50 from the direct path to the PD path.
pub const COMPREHENSIVE_REPLICAS: u64 = 9;

/// Simulates one comprehensive point (protocol in the module docs of [`crate::validate`]): the
/// median of each statistic over [`COMPREHENSIVE_REPLICAS`] replays.
pub fn simulate_comprehensive(
    config: &str,
    workload: &str,
    qps: f64,
    measured: &serde_json::Value,
    cal: &CalibrationFile,
    seed: u64,
) -> Option<ComprehensiveRow> {
    simulate_comprehensive_replays(config, workload, qps, measured, cal, seed, COMPREHENSIVE_REPLICAS)
}

/// [`simulate_comprehensive`] with `replicas` replays (the replay fit of the overheads uses
/// fewer, for speed).
pub fn simulate_comprehensive_replays(
    config: &str,
    workload: &str,
    qps: f64,
    measured: &serde_json::Value,
    cal: &CalibrationFile,
    seed: u64,
    replicas: u64,
) -> Option<ComprehensiveRow> {
    let (router, shape) = deployment_for_config(config)?;
    let (ctx, kind) = workload.split_once('_')?;
    let (t1_in, t1_out) = comprehensive_turn1(ctx)?;
    let (t2_in, t2_out) = comprehensive_turn2(kind)?;
    let mut cfg = vllm_ppd_config(config, router, shape, cal)?;
    cfg.affinity_miss_rate = crate::sim::COMPREHENSIVE_AFFINITY_MISS_RATE;
    cfg.limits.cache_answers = crate::sim::COMPREHENSIVE_CACHE_ANSWERS;
    let cost = LinearCostModel::new(cal.coefficients().ok()?);
    // Each replica: Poisson conversation starts at `qps` within a 10 s window (the benchmark's
    // generator) and its own router placement.
    let (t1_in, t2_in) = (
        comprehensive_real_tokens(t1_in, true),
        comprehensive_real_tokens(t2_in, false),
    );
    let conv = |n: usize, start: f64| TimedConversation {
        id: format!("{workload}-{n}").into(),
        start_at: SimTime::ZERO + SimDuration::from_secs_f64(start),
        turns: vec![
            Turn {
                user_tokens: t1_in,
                assistant_tokens: t1_out,
            },
            Turn {
                user_tokens: t2_in + 1,
                assistant_tokens: t2_out,
            },
        ]
        .into(),
        later_turns: LaterTurn::after_each([SimDuration::ZERO]),
        shared_prefix: None,
    };
    // Points are independent runs: their draws depend on the config and workload too.
    let point_seed = seed
        ^ crate::sim::splitmix64((qps * 1000.0) as u64)
        ^ crate::sim::fnv1a(format!("{config}/{workload}").as_bytes());
    // Per replica, the statistics the benchmark computes from its one run: success rate [%], p50
    // and p99 TTFT and mean TPOT [ms] of the successful requests of each turn.
    struct ReplicaStats {
        success_pct: f64,
        t1_p50: f64,
        t1_p99: f64,
        t2_p50: f64,
        t2_p99: f64,
        t1_tpot: f64,
        t2_tpot: f64,
    }
    let gap = Exp::new(qps).ok()?;
    let mut stats = Vec::new();
    for replica in 0..replicas {
        let mut rng = ChaCha8Rng::seed_from_u64(crate::sim::splitmix64(point_seed ^ replica));
        // The benchmark's generator (`run_benchmark_point_inner`): int(qps × 10) exponential
        // gaps, keeping the arrivals that fall inside the 10 s window — so at most qps × 10
        // conversations, and fewer when the gaps add up past 10 s.
        let mut t = 0.0;
        let mut convs = Vec::new();
        for _ in 0..(qps * 10.0) as usize {
            t += gap.sample(&mut rng);
            if t < 10.0 {
                convs.push(conv(convs.len(), t));
            }
        }
        if convs.is_empty() {
            convs.push(conv(0, 0.0));
        }
        cfg.routing_seed = crate::sim::splitmix64(point_seed.wrapping_add(replica) ^ 0x0005_EED0_0000_0000);
        let records = Simulation::new(cfg.clone(), &cost, convs).run().records;
        let ok = |turn: usize| {
            records
                .iter()
                .filter(move |x| x.turn == turn && x.status == crate::metrics::RequestStatus::Ok)
        };
        let ttft = |turn: usize| finite_stats(ok(turn).map(|x| x.ttft_ms));
        let (t1, t2) = (ttft(1), ttft(2));
        // Requests issued: every turn 1, and turn 2 of conversations whose turn 1 succeeded.
        let succeeded = records
            .iter()
            .filter(|x| x.status == crate::metrics::RequestStatus::Ok)
            .count();
        stats.push(ReplicaStats {
            success_pct: 100.0 * succeeded as f64 / records.len().max(1) as f64,
            t1_p50: t1.as_ref().map_or(f64::NAN, |s| s.p50_ms()),
            t1_p99: t1.as_ref().map_or(f64::NAN, |s| s.p99_ms()),
            t2_p50: t2.as_ref().map_or(f64::NAN, |s| s.p50_ms()),
            t2_p99: t2.as_ref().map_or(f64::NAN, |s| s.p99_ms()),
            t1_tpot: mean(ok(1).filter_map(|x| x.tpot_ms)),
            t2_tpot: mean(ok(2).filter_map(|x| x.tpot_ms)),
        });
    }
    // The prediction of each statistic: its median over the replays (NaN when none has it).
    let pred = |f: fn(&ReplicaStats) -> f64| median(stats.iter().map(f));
    // The run-to-run noise floor (see `ComprehensiveRow::t2_p50_ttft_floor_pct`): each replay
    // predicted by the median of the others.
    let floor = |f: fn(&ReplicaStats) -> f64| {
        if stats.len() < 3 {
            return f64::NAN;
        }
        median((0..stats.len()).map(|j| {
            let others = median(stats.iter().enumerate().filter(|(i, _)| *i != j).map(|(_, s)| f(s)));
            err(others, f(&stats[j])).abs()
        }))
    };
    let m = |turn: &str, key: &str| measured[turn][key].as_f64().unwrap_or(f64::NAN);
    let success = measured["success_rate"].as_f64().unwrap_or(0.0);
    Some(ComprehensiveRow {
        config: config.to_string(),
        workload: workload.to_string(),
        qps,
        measured_success_pct: success,
        predicted_success_pct: pred(|s| s.success_pct),
        t1_p50_ttft_measured_ms: m("turn1", "p50_ttft_ms"),
        t1_p50_ttft_predicted_ms: pred(|s| s.t1_p50),
        t1_p99_ttft_measured_ms: m("turn1", "p99_ttft_ms"),
        t1_p99_ttft_predicted_ms: pred(|s| s.t1_p99),
        t2_p50_ttft_measured_ms: m("turn2", "p50_ttft_ms"),
        t2_p50_ttft_predicted_ms: pred(|s| s.t2_p50),
        t2_p99_ttft_measured_ms: m("turn2", "p99_ttft_ms"),
        t2_p99_ttft_predicted_ms: pred(|s| s.t2_p99),
        t1_mean_tpot_measured_ms: m("turn1", "avg_tpot_ms"),
        t1_mean_tpot_predicted_ms: pred(|s| s.t1_tpot),
        t2_mean_tpot_measured_ms: m("turn2", "avg_tpot_ms"),
        t2_mean_tpot_predicted_ms: pred(|s| s.t2_tpot),
        t2_p50_ttft_floor_pct: floor(|s| s.t2_p50),
        t2_p99_ttft_floor_pct: floor(|s| s.t2_p99),
        below_saturation: success >= 100.0 && m("turn1", "p50_ttft_ms") <= 1000.0,
        replay_past_knee: stats.iter().map(|s| past_knee(s.t1_p50, s.success_pct)).collect(),
    })
}

/// A point where fewer requests than this succeed \[%\] is past the knee even when its turn-1 p50
/// TTFT (over the successful requests) stays below 1 s: the sweep's servers fall over under
/// overload ("Cannot connect to host", truncated responses) at 12–20 QPS. A single dropped
/// request ("Server disconnected", 99.2% success at 6 QPS) is not a knee.
pub const KNEE_MIN_SUCCESS_PCT: f64 = 90.0;

/// The saturation criterion of the knees: turn-1 p50 TTFT above 1 s (`t1_p50_ms` \[ms\]) or
/// fewer than [`KNEE_MIN_SUCCESS_PCT`] of the requests succeeding (`success_pct` \[%\]).
fn past_knee(t1_p50_ms: f64, success_pct: f64) -> bool {
    t1_p50_ms > 1000.0 || success_pct < KNEE_MIN_SUCCESS_PCT
}

/// The summary of a comprehensive validation: per config, median |error| below saturation of
/// turn-2 p50 and p99 TTFT (each with its run-to-run floor), turn-2 mean TPOT, turn-1 p50 TTFT
/// and turn-1 mean TPOT; PD-vs-PPD winner agreement by turn-2 p50 TTFT; and the
/// measured vs predicted saturation knee (first QPS whose turn-1 p50 TTFT exceeds 1 s, or where
/// fewer than [`KNEE_MIN_SUCCESS_PCT`] of the requests succeed) per config and workload — every
/// one with `all_knees`, else only those off by more than one QPS step, after the knees' floor
/// (the range and median, over the replays, of the knees within one step when that replay is
/// taken as the measurement).
pub fn comprehensive_summary(rows: &[ComprehensiveRow], all_knees: bool) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut s = String::new();
    let mut configs: Vec<&str> = rows.iter().map(|r| r.config.as_str()).collect();
    configs.sort_unstable();
    configs.dedup();
    let _ = writeln!(
        s,
        "median |error| below saturation (measured turn-1 p50 TTFT ≤ 1 s, all requests succeeded); (floor …): the\n  same for the simulator predicting its own independent runs (arrivals and router placement redrawn)"
    );
    let _ = writeln!(
        s,
        "  {:<12} {:>6} {:>12} {:>7} {:>12} {:>7} {:>13} {:>12} {:>13}",
        "config",
        "points",
        "T2 p50 TTFT",
        "(floor",
        "T2 p99 TTFT",
        "floor)",
        "T2 mean TPOT",
        "T1 p50 TTFT",
        "T1 mean TPOT"
    );
    for c in &configs {
        let sel: Vec<&ComprehensiveRow> = rows.iter().filter(|r| r.config == *c && r.below_saturation).collect();
        let e = |f: &dyn Fn(&ComprehensiveRow) -> (f64, f64)| {
            median(
                sel.iter()
                    .map(|r| f(r))
                    .filter(|(p, m)| p.is_finite() && m.is_finite() && *m > 0.0)
                    .map(|(p, m)| err(p, m).abs()),
            )
        };
        let floor = |f: fn(&ComprehensiveRow) -> f64| median(sel.iter().map(|r| f(r)));
        let _ = writeln!(
            s,
            "  {:<12} {:>6} {:>11.1}% {:>6.1}% {:>11.1}% {:>6.1}% {:>12.1}% {:>11.1}% {:>12.1}%",
            c,
            sel.len(),
            e(&|r| (r.t2_p50_ttft_predicted_ms, r.t2_p50_ttft_measured_ms)),
            floor(|r| r.t2_p50_ttft_floor_pct),
            e(&|r| (r.t2_p99_ttft_predicted_ms, r.t2_p99_ttft_measured_ms)),
            floor(|r| r.t2_p99_ttft_floor_pct),
            e(&|r| (r.t2_mean_tpot_predicted_ms, r.t2_mean_tpot_measured_ms)),
            e(&|r| (r.t1_p50_ttft_predicted_ms, r.t1_p50_ttft_measured_ms)),
            e(&|r| (r.t1_mean_tpot_predicted_ms, r.t1_mean_tpot_measured_ms)),
        );
    }
    s.push_str(&p99_bias_table(rows, &configs));
    // Winner agreement for every pair of configurations that differ only in D vs pD (same P and
    // R counts, same number of decode-side instances): which of the two has the lower turn-2 p50
    // TTFT at each (workload, QPS) both measured with every request successful.
    let key = |r: &ComprehensiveRow| (r.workload.clone(), (r.qps * 10.0) as i64);
    for (i, a) in configs.iter().enumerate() {
        for b in &configs[i + 1..] {
            let (Some(x), Some(y)) = (Shape::parse(a), Shape::parse(b)) else {
                continue;
            };
            if x.prefill != y.prefill
                || x.replica != y.replica
                || x.decode + x.direct_decode != y.decode + y.direct_decode
                || x.decode == y.decode
            {
                continue;
            }
            let side = |c: &str| -> BTreeMap<_, &ComprehensiveRow> {
                rows.iter()
                    .filter(|r| r.config == c && r.measured_success_pct >= 100.0)
                    .map(|r| (key(r), r))
                    .collect()
            };
            let (pa, pb) = (side(a), side(b));
            let (mut agree, mut total) = (0, 0);
            for (k, ra) in &pa {
                if let Some(rb) = pb.get(k) {
                    total += 1;
                    let measured = ra.t2_p50_ttft_measured_ms < rb.t2_p50_ttft_measured_ms;
                    let predicted = ra.t2_p50_ttft_predicted_ms < rb.t2_p50_ttft_predicted_ms;
                    agree += (measured == predicted) as usize;
                }
            }
            if total > 0 {
                let _ = writeln!(
                    s,
                    "{a} vs {b} winner by turn-2 p50 TTFT: {agree}/{total} points agree ({:.1}%)",
                    100.0 * agree as f64 / total as f64
                );
            }
        }
    }
    // Knees.
    let qps_levels = [0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0];
    let step = |q: f64| qps_levels.iter().position(|x| (x - q).abs() < 1e-9);
    let mut groups: BTreeMap<(String, String), Vec<&ComprehensiveRow>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.config.clone(), r.workload.clone()))
            .or_default()
            .push(r);
    }
    let (mut within, mut counted) = (0, 0);
    // The knees' run-to-run floor: each replay taken as the measurement, the knees within one
    // step of the prediction (summed over the groups, per replay).
    let replays = rows.iter().map(|r| r.replay_past_knee.len()).min().unwrap_or(0);
    let mut replay_within = vec![0usize; replays];
    let near = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => step(a).zip(step(b)).is_some_and(|(i, j)| i.abs_diff(j) <= 1),
        (Some(a), None) | (None, Some(a)) => a >= 20.0,
    };
    let mut knee_lines = Vec::new();
    for ((c, w), mut v) in groups {
        v.sort_by(|a, b| a.qps.total_cmp(&b.qps));
        // Configs whose points failed at every load (server errors) have no knee to compare.
        if v.len() < 3 {
            continue;
        }
        let mk = v
            .iter()
            .find(|r| past_knee(r.t1_p50_ttft_measured_ms, r.measured_success_pct))
            .map(|r| r.qps);
        let pk = v
            .iter()
            .find(|r| past_knee(r.t1_p50_ttft_predicted_ms, r.predicted_success_pct))
            .map(|r| r.qps);
        counted += 1;
        let ok = near(mk, pk);
        within += ok as usize;
        for (j, n) in replay_within.iter_mut().enumerate() {
            *n += near(v.iter().find(|r| r.replay_past_knee[j]).map(|r| r.qps), pk) as usize;
        }
        knee_lines.push(format!(
            "  {c:<12} {w:<22} measured {:>6} predicted {:>6}{}",
            mk.map_or("none".into(), |q| q.to_string()),
            pk.map_or("none".into(), |q| q.to_string()),
            if ok { "" } else { "  ✗" }
        ));
    }
    let _ = writeln!(
        s,
        "saturation knee (first QPS with turn-1 p50 TTFT > 1 s or < {KNEE_MIN_SUCCESS_PCT}% of requests succeeding) within one QPS step: {within}/{counted}"
    );
    if replays > 0 && counted > 0 {
        replay_within.sort_unstable();
        let r = &replay_within;
        let _ = writeln!(
            s,
            "  run-to-run floor: each of the {replays} replays taken as the measurement puts {}–{}/{counted} within one step (median {})",
            r[0],
            r[replays - 1],
            r[replays / 2]
        );
    }
    for l in knee_lines.iter().filter(|l| all_knees || l.ends_with('✗')) {
        let _ = writeln!(s, "{l}");
    }
    s
}

/// Load bands of [`p99_bias_table`]: (label, lowest, highest new conversations per second).
const LOAD_BANDS: [(&str, f64, f64); 3] = [("0.5–2/s", 0.5, 2.0), ("4–6/s", 4.0, 6.0), ("8–10/s", 8.0, 10.0)];

/// Where the turn-2 p99 TTFT misses lie: per configuration, the signed median error below
/// saturation by context class (the workload's `small_`/`large_` prefix: 128- or 1,024-token
/// turn-1 answers) and load band, with the points in each cell in brackets.
fn p99_bias_table(rows: &[ComprehensiveRow], configs: &[&str]) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "turn-2 p99 TTFT signed median error below saturation, by context and new conversations/s (points):\n",
    );
    let _ = write!(s, "  {:<12}", "config");
    for ctx in ["small", "large"] {
        for (band, _, _) in LOAD_BANDS {
            let _ = write!(s, " {:>14}", format!("{ctx} {band}"));
        }
    }
    s.push('\n');
    for c in configs {
        let _ = write!(s, "  {c:<12}");
        for ctx in ["small", "large"] {
            for (_, lo, hi) in LOAD_BANDS {
                let errs: Vec<f64> = rows
                    .iter()
                    .filter(|r| {
                        r.config == *c
                            && r.below_saturation
                            && r.workload.starts_with(ctx)
                            && (lo..=hi).contains(&r.qps)
                            && r.t2_p99_ttft_measured_ms > 0.0
                            && r.t2_p99_ttft_predicted_ms.is_finite()
                    })
                    .map(|r| err(r.t2_p99_ttft_predicted_ms, r.t2_p99_ttft_measured_ms))
                    .collect();
                let cell = if errs.is_empty() {
                    "–".to_string()
                } else {
                    format!("{:+.0}% ({})", median(errs.iter().copied()), errs.len())
                };
                let _ = write!(s, " {cell:>14}");
            }
        }
        s.push('\n');
    }
    s
}

/// One comprehensive point as a table line: turn-1 and turn-2 p50 and p99 TTFT and mean TPOT,
/// each measured / predicted \[ms\] with the signed error \[%\].
fn comprehensive_line(r: &ComprehensiveRow) -> String {
    let cell = |m: f64, p: f64| format!("{m:>7.1}/{p:>7.1} {:>+6.1}%", err(p, m));
    format!(
        "  {:<10} {:<20} {:>5} {} {} {} {} {} {}{}",
        r.config,
        r.workload,
        r.qps,
        cell(r.t1_p50_ttft_measured_ms, r.t1_p50_ttft_predicted_ms),
        cell(r.t1_p99_ttft_measured_ms, r.t1_p99_ttft_predicted_ms),
        cell(r.t1_mean_tpot_measured_ms, r.t1_mean_tpot_predicted_ms),
        cell(r.t2_p50_ttft_measured_ms, r.t2_p50_ttft_predicted_ms),
        cell(r.t2_p99_ttft_measured_ms, r.t2_p99_ttft_predicted_ms),
        cell(r.t2_mean_tpot_measured_ms, r.t2_mean_tpot_predicted_ms),
        if r.below_saturation { "" } else { "  saturated" }
    )
}

fn comprehensive_header() -> String {
    format!(
        "  {:<10} {:<20} {:>5} {:>23} {:>23} {:>23} {:>23} {:>23} {:>23}\n",
        "config",
        "workload",
        "qps",
        "T1 p50 TTFT ms (err)",
        "T1 p99 TTFT ms (err)",
        "T1 TPOT ms (err)",
        "T2 p50 TTFT ms (err)",
        "T2 p99 TTFT ms (err)",
        "T2 TPOT ms (err)"
    )
}

/// Every comprehensive point, measured / predicted with the error of turn-1 and turn-2 p50 and
/// p99 TTFT and mean TPOT \[ms\], one line each after a header, by config, workload and QPS;
/// points above the measured saturation knee are marked `saturated`.
pub fn comprehensive_table(rows: &[ComprehensiveRow]) -> String {
    let mut sorted: Vec<&ComprehensiveRow> = rows.iter().collect();
    sorted.sort_by(|a, b| by_point(a, b));
    comprehensive_lines(&sorted)
}

/// Order of points: config, workload, QPS.
fn by_point(a: &ComprehensiveRow, b: &ComprehensiveRow) -> std::cmp::Ordering {
    (&a.config, &a.workload)
        .cmp(&(&b.config, &b.workload))
        .then_with(|| a.qps.total_cmp(&b.qps))
}

/// The header and one [`comprehensive_line`] per row.
fn comprehensive_lines(rows: &[&ComprehensiveRow]) -> String {
    let mut s = comprehensive_header();
    for r in rows {
        s.push_str(&comprehensive_line(r));
        s.push('\n');
    }
    s
}

/// The `n` points below saturation with the largest |turn-2 p50 TTFT error|, largest first (ties
/// by config, workload, QPS), as [`comprehensive_table`] lines under a title.
pub fn comprehensive_worst(rows: &[ComprehensiveRow], n: usize) -> String {
    let abs_err = |r: &ComprehensiveRow| err(r.t2_p50_ttft_predicted_ms, r.t2_p50_ttft_measured_ms).abs();
    let mut sel: Vec<&ComprehensiveRow> = rows
        .iter()
        .filter(|r| r.below_saturation && abs_err(r).is_finite())
        .collect();
    sel.sort_by(|a, b| abs_err(b).total_cmp(&abs_err(a)).then_with(|| by_point(a, b)));
    sel.truncate(n);
    format!(
        "worst {} points below saturation by |turn-2 p50 TTFT error| (measured/predicted):\n{}",
        sel.len(),
        comprehensive_lines(&sel)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, qps: f64, p99_measured_ms: f64, p99_predicted_ms: f64, below: bool) -> ComprehensiveRow {
        ComprehensiveRow {
            config: "1P_3D".into(),
            workload: workload.into(),
            qps,
            t2_p99_ttft_measured_ms: p99_measured_ms,
            t2_p99_ttft_predicted_ms: p99_predicted_ms,
            below_saturation: below,
            ..Default::default()
        }
    }

    #[test]
    fn p99_bias_table_takes_signed_medians_by_context_and_load_below_saturation() {
        let rows = [
            row("small_tiny", 0.5, 100.0, 90.0, true),     // −10%
            row("small_mid_bal", 2.0, 100.0, 120.0, true), // +20%
            row("small_tiny", 6.0, 200.0, 150.0, true),    // −25%
            row("large_tiny", 8.0, 400.0, 200.0, true),    // −50%
            row("large_tiny", 10.0, 100.0, 10.0, false),   // saturated: left out
            row("large_tiny", 12.0, 100.0, 10.0, true),    // outside every band
        ];
        let text = p99_bias_table(&rows, &["1P_3D"]);
        let cells: Vec<String> = text
            .lines()
            .nth(2)
            .expect("one config line")
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        assert_eq!(
            cells,
            ["1P_3D", "+5% (2)", "-25% (1)", "–", "–", "–", "-50% (1)"],
            "{text}"
        );
    }
}

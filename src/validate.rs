//! `ppdsim validate`: run the simulator on measured points and compare.
//!
//! ## Comprehensive sweep points (`comprehensive/<config>/*.json`)
//! The cluster comes from the config name (`1P_3D` → PD 1 P + 3 D, `1P_3pD` → PPD, `1P_2D_1pD` →
//! mixed pool, `4R` → replication); conversations start as the benchmark generates them —
//! `int(qps × 10)` exponential gaps at the point's QPS, keeping the arrivals inside a 10 s
//! window; two turns (context class small 128→128 / large 1024→1024, then the turn-2 type's
//! in→out, joined with `"\n"`), no think time, exact output lengths; the client's 50-connection
//! pool and 120 s timeout; the calibrated overheads as FIFO work (one API-server queue per
//! instance, one proxy queue for PD handoffs). Points with no successful request measured are
//! skipped. Each point is replayed [`COMPREHENSIVE_REPLICAS`] times with independent arrivals and
//! router placements; each predicted statistic is its median over the replays. The summary gives,
//! per config, the median |error| below the measured saturation knee, PD-vs-PPD winner agreement
//! by turn-2 p50 TTFT, measured vs predicted knees, and the worst points.
//!
//! ## Low-QPS points (`*_v3_*.lowqps.json`, 4 GPUs)
//! For each point
//! (workload, target QPS, mode) the simulator replays the benchmark's protocol on the cluster the
//! mode names — `pd`: 2 P + 2 D, `ppd`: 2 P + 2 pD, `replication`: 4 replicas —
//!
//! * 10 conversations establish turn 1 in one concurrent burst at t = 0 (`t1_input → t1_output`);
//! * each conversation's turn 2 (`t2_input + 1` new tokens: the client joins turns with `"\n"`)
//!   arrives 40 s after its turn 1 finished plus the running sum of exponential gaps at the target
//!   QPS, so turn-2 requests arrive one at a time, as in the benchmark;
//! * outputs have exactly the stated lengths; no chat template.
//!
//! and reports, per point, measured vs predicted turn-1 p50 TTFT, turn-1 mean TPOT (measured value
//! derived from mean E2E and TTFT), turn-2 p50 TTFT and turn-2 mean TPOT, with the error, plus the
//! median absolute % error per metric and mode. The calibration's own low-QPS fit uses these
//! files, so on them this is a *held-in* accuracy check.

use crate::calibrate::model_file::CalibrationFile;
use crate::cost_model::LinearCostModel;
use crate::error::{InputError, InputResult};
use crate::hardware;
use crate::metrics::{LatencyStats, RequestRecord};
use crate::policy::PolicyConfig;
use crate::scenario::EngineSpec;
use crate::sim::workload::TimedConversation;
use crate::sim::{Pinning, SimConfig, Simulation, TransferMode};
use crate::time::{SimDuration, SimTime};
use crate::trace::Turn;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;
use std::path::Path;

/// A measured low-QPS point.
#[derive(Clone, Debug, PartialEq)]
pub struct LowQpsPoint {
    /// Workload (`L_a`, …).
    pub workload: String,
    /// `pd`, `ppd` or `replication`.
    pub mode: String,
    /// Target turn-2 rate \[requests/s\].
    pub qps: f64,
    /// Turn-1 input and output, turn-2 input and output \[tokens\].
    pub shape: [u32; 4],
    /// Measured turn-1 p50 TTFT \[ms\].
    pub t1_p50_ttft_ms: f64,
    /// Measured turn-1 mean TPOT \[ms\], derived as (mean E2E − mean TTFT) / (t1_output − 1).
    pub t1_mean_tpot_ms: f64,
    /// Measured turn-2 p50 TTFT \[ms\].
    pub t2_p50_ttft_ms: f64,
    /// Measured turn-2 mean TPOT \[ms\].
    pub t2_mean_tpot_ms: f64,
}

/// One row of the validation table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationRow {
    /// Workload.
    pub workload: String,
    /// Mode.
    pub mode: String,
    /// Target QPS.
    pub qps: f64,
    /// Metric name (`t1_p50_ttft_ms`, …).
    pub metric: String,
    /// Measured \[ms\].
    pub measured_ms: f64,
    /// Predicted \[ms\].
    pub predicted_ms: f64,
    /// (predicted − measured) / measured \[%\].
    pub error_pct: f64,
}

fn f(v: &serde_json::Value, k: &str, path: &Path, at: &str) -> InputResult<f64> {
    v.get(k)
        .and_then(|x| x.as_f64())
        .ok_or_else(|| InputError::key(path, &format!("{at}.{k}"), "missing or not a number"))
}

/// The points of a v3 low-QPS file (`v`, parsed from `path`, which errors name).
///
/// # Errors
/// A file of another schema, or missing fields.
pub fn read_lowqps(path: &Path, v: &serde_json::Value) -> InputResult<Vec<LowQpsPoint>> {
    let results = v.get("results").and_then(|r| r.as_array()).filter(|r| {
        r.iter()
            .all(|x| x.get("t1_input").is_some() && x.get("turn2_metrics").is_some())
    });
    let results = results.ok_or_else(|| InputError::file(path, "not a vllm-ppd v3 low-QPS file (expected results[] with t1_input and turn2_metrics); other schemas are not validated yet"))?;
    let mut out = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let at = format!("results[{i}]");
        let t1 = &r["turn1_metrics"];
        let t2 = &r["turn2_metrics"];
        if r.get("success_count").and_then(|x| x.as_f64()).unwrap_or(0.0) <= 0.0 {
            continue;
        }
        let shape = [
            f(r, "t1_input", path, &at)? as u32,
            f(r, "t1_output", path, &at)? as u32,
            f(r, "t2_input", path, &at)? as u32,
            f(r, "t2_output", path, &at)? as u32,
        ];
        out.push(LowQpsPoint {
            workload: r["workload"].as_str().unwrap_or("?").to_string(),
            mode: r["mode"].as_str().unwrap_or("?").to_string(),
            qps: f(r, "target_qps", path, &at)?,
            shape,
            t1_p50_ttft_ms: f(t1, "p50_ttft", path, &format!("{at}.turn1_metrics"))?,
            t1_mean_tpot_ms: (f(t1, "avg_e2e", path, &format!("{at}.turn1_metrics"))?
                - f(t1, "avg_ttft", path, &format!("{at}.turn1_metrics"))?)
                / (shape[1] as f64 - 1.0),
            t2_p50_ttft_ms: f(t2, "p50_ttft", path, &format!("{at}.turn2_metrics"))?,
            t2_mean_tpot_ms: f(t2, "avg_tpot", path, &format!("{at}.turn2_metrics"))?,
        });
    }
    Ok(out)
}

/// The cluster of a low-QPS `mode`: `pd` 2 P + 2 D, `ppd` 2 P + 2 pD, `replication` 4 replicas.
pub fn mode_policy(mode: &str) -> Option<PolicyConfig> {
    match mode {
        "pd" => Some(PolicyConfig::Pd {
            name: None,
            prefill_instances: 2,
            decode_instances: 2,
        }),
        "ppd" => Some(PolicyConfig::Ppd {
            name: None,
            prefill_instances: 2,
            decode_instances: 2,
        }),
        "replication" => Some(PolicyConfig::Replication {
            name: None,
            instances: 4,
        }),
        _ => None,
    }
}

/// The simulator configuration of the vllm-ppd deployment (vLLM V1 defaults,
/// `gpu_memory_utilization` 0.85, `max_model_len` 8192, the benchmark client's 50 connections and
/// 120 s timeout, serialized overheads) running `policy`; `None` if the calibration's model or
/// GPU is unknown.
pub fn vllm_ppd_config(policy: PolicyConfig, cal: &CalibrationFile) -> Option<SimConfig> {
    let model = hardware::model(&cal.model)?;
    let gpu = hardware::gpu(&cal.gpu)?;
    let (handoff_p_ms, handoff_d_ms) = cal.pd_handoff_services_ms();
    Some(SimConfig {
        policy,
        limits: EngineSpec::default().limits(model, gpu),
        kv_bytes_per_token: model.kv_bytes_per_token(),
        link_bandwidth_gbps: cal.kv_transfer.bandwidth_gbps,
        link_latency_ms: cal.kv_transfer.latency_ms,
        transfer: TransferMode::Full,
        request_overhead_ms: cal.overheads.request_overhead_ms.value,
        pd_handoff_ms: cal.overheads.pd_handoff_ms.value,
        pd_handoff_p_service_ms: handoff_p_ms,
        pd_handoff_d_service_ms: handoff_d_ms,
        pd_handoff_queue: crate::sim::HandoffQueue::PerPrefill,
        request_service_ms: cal.request_service_ms(),
        prompt_ms_per_token: cal.prompt_ms_per_token(),
        template_tokens_per_message: 0,
        serialized_overheads: true,
        client_max_connections: Some(50),
        request_timeout_s: Some(120.0),
        pinning: Pinning::Hash,
        max_model_len: Some(8192),
        affinity_miss_rate: 0.0,
        routing_seed: 0,
    })
}

/// Statistics of the finite values of `xs`; `None` when there are none.
fn finite_stats(xs: impl IntoIterator<Item = f64>) -> Option<LatencyStats> {
    let s = LatencyStats::of(xs.into_iter().filter(|x| x.is_finite()));
    (s.count > 0).then_some(s)
}

/// Median of the finite values of `xs` (NaN when none).
fn median(xs: impl IntoIterator<Item = f64>) -> f64 {
    finite_stats(xs).map_or(f64::NAN, |s| s.p50_ms())
}

/// Mean of the finite values of `xs` (NaN when none).
fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    finite_stats(xs).map_or(f64::NAN, |s| s.mean_ms)
}

/// Simulates one point; returns the rows of its four metrics.
pub fn simulate_point(p: &LowQpsPoint, cal: &CalibrationFile, seed: u64) -> Option<Vec<ValidationRow>> {
    let cfg = vllm_ppd_config(mode_policy(&p.mode)?, cal)?;
    let cost = LinearCostModel {
        coefficients: cal.coefficients().ok()?,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let gap = Exp::new(p.qps).ok()?;
    let mut offset = 40.0;
    let convs: Vec<TimedConversation> = (0..10)
        .map(|i| {
            offset += gap.sample(&mut rng);
            TimedConversation {
                id: format!("{}-{i}", p.workload),
                start_at: SimTime::ZERO,
                turns: vec![
                    Turn {
                        user_tokens: p.shape[0],
                        assistant_tokens: p.shape[1],
                    },
                    Turn {
                        user_tokens: p.shape[2] + 1,
                        assistant_tokens: p.shape[3],
                    },
                ],
                think_after: vec![SimDuration::from_secs_f64(offset)],
                not_before: vec![],
                shared_prefix: None,
            }
        })
        .collect();
    let r = Simulation::new(cfg, &cost, convs).run();
    let pick = |turn: usize| r.records.iter().filter(move |x| x.turn == turn);
    let pred = [
        ("t1_p50_ttft_ms", p.t1_p50_ttft_ms, median(pick(1).map(|x| x.ttft_ms))),
        (
            "t1_mean_tpot_ms",
            p.t1_mean_tpot_ms,
            mean(pick(1).filter_map(|x| x.tpot_ms)),
        ),
        ("t2_p50_ttft_ms", p.t2_p50_ttft_ms, median(pick(2).map(|x| x.ttft_ms))),
        (
            "t2_mean_tpot_ms",
            p.t2_mean_tpot_ms,
            mean(pick(2).filter_map(|x| x.tpot_ms)),
        ),
    ];
    Some(
        pred.iter()
            .map(|(m, meas, pr)| ValidationRow {
                workload: p.workload.clone(),
                mode: p.mode.clone(),
                qps: p.qps,
                metric: m.to_string(),
                measured_ms: *meas,
                predicted_ms: *pr,
                error_pct: 100.0 * (pr - meas) / meas,
            })
            .collect(),
    )
}

/// Median absolute % error of `rows` (NaN when empty).
pub fn median_abs_error_pct(rows: &[&ValidationRow]) -> f64 {
    median(rows.iter().map(|r| r.error_pct.abs()))
}

/// The per-point table (when `with_points`) and the summary, as text.
pub fn report(rows: &[ValidationRow], with_points: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if with_points {
        let _ = writeln!(
            s,
            "{:<7} {:<12} {:>5} {:<16} {:>11} {:>11} {:>8}",
            "wkld", "mode", "qps", "metric", "measured", "predicted", "error"
        );
        for r in rows {
            let _ = writeln!(
                s,
                "{:<7} {:<12} {:>5} {:<16} {:>8.1} ms {:>8.1} ms {:>+7.1}%",
                r.workload, r.mode, r.qps, r.metric, r.measured_ms, r.predicted_ms, r.error_pct
            );
        }
    }
    let _ = writeln!(s, "median |error| by metric and mode:");
    let mut modes: Vec<&str> = rows.iter().map(|r| r.mode.as_str()).collect();
    modes.sort_unstable();
    modes.dedup();
    for metric in ["t1_p50_ttft_ms", "t1_mean_tpot_ms", "t2_p50_ttft_ms", "t2_mean_tpot_ms"] {
        let mut line = format!("  {metric:<16}");
        for m in &modes {
            let sel: Vec<&ValidationRow> = rows.iter().filter(|r| r.metric == metric && r.mode == *m).collect();
            let _ = write!(line, "  {m}: {:>5.1}% (n={})", median_abs_error_pct(&sel), sel.len());
        }
        let _ = writeln!(s, "{line}");
    }
    s
}

/// Turn shapes of the vllm-ppd comprehensive protocol: context class → turn 1 (in, out).
pub fn comprehensive_turn1(context: &str) -> Option<(u32, u32)> {
    match context {
        "small" => Some((128, 128)),
        "large" => Some((1024, 1024)),
        _ => None,
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

/// The pools of a vllm-ppd config name: instances of each kind \[count\].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigPools {
    /// `P`: prefill.
    pub prefill: u32,
    /// `D`: decode (every turn via P).
    pub decode: u32,
    /// `pD`: direct decode (turns ≥ 2 prefilled there).
    pub direct_decode: u32,
    /// `R`: replica (prefill and decode).
    pub replica: u32,
}

/// Parses a vllm-ppd config name, counts of pools joined by `_` (`1P_2D_1pD`, `2R_1P_1pD`);
/// `None` for any other part.
pub fn config_pools(name: &str) -> Option<ConfigPools> {
    let mut n = ConfigPools::default();
    for part in name.split('_') {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        let k: u32 = digits.parse().ok()?;
        let pool = match &part[digits.len()..] {
            "P" => &mut n.prefill,
            "D" => &mut n.decode,
            "pD" => &mut n.direct_decode,
            "R" => &mut n.replica,
            _ => return None,
        };
        *pool += k;
    }
    Some(n)
}

/// The cluster a vllm-ppd config name describes (`1P_3D`, `1P_3pD`, `1P_2D_1pD`, `4R`, …).
pub fn policy_for_config(name: &str) -> Option<PolicyConfig> {
    let ConfigPools {
        prefill: p,
        decode: d,
        direct_decode: pd,
        replica: r,
    } = config_pools(name)?;
    let label = Some(name.to_string());
    if r > 0 && p > 0 && d + pd > 0 {
        // Hybrids: replicas beside a disaggregated group (`1R_1P_2D`, `2R_1P_1pD`, …).
        return Some(PolicyConfig::Mixed {
            name: label,
            replica_instances: r,
            prefill_instances: p,
            decode_instances: d,
            direct_decode_instances: pd,
        });
    }
    match (p, d, pd, r) {
        (0, 0, 0, r) if r > 0 => Some(PolicyConfig::Replication {
            name: label,
            instances: r,
        }),
        (p, d, 0, 0) if p > 0 && d > 0 => Some(PolicyConfig::Pd {
            name: label,
            prefill_instances: p,
            decode_instances: d,
        }),
        (p, 0, pd, 0) if p > 0 && pd > 0 => Some(PolicyConfig::Ppd {
            name: label,
            prefill_instances: p,
            decode_instances: pd,
        }),
        (p, d, pd, 0) if p > 0 && d > 0 && pd > 0 => Some(PolicyConfig::Mixed {
            name: label,
            replica_instances: 0,
            prefill_instances: p,
            decode_instances: d,
            direct_decode_instances: pd,
        }),
        _ => None,
    }
}

/// One comprehensive point: measured and predicted.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    /// Below the measured saturation knee (turn-1 p50 TTFT ≤ 1 s and every request succeeded).
    pub below_saturation: bool,
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
    if policy_for_config(cfg).is_none() {
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
    let policy = policy_for_config(config)?;
    let (ctx, kind) = workload.split_once('_')?;
    let (t1_in, t1_out) = comprehensive_turn1(ctx)?;
    let (t2_in, t2_out) = comprehensive_turn2(kind)?;
    let mut cfg = vllm_ppd_config(policy, cal)?;
    cfg.affinity_miss_rate = crate::sim::COMPREHENSIVE_AFFINITY_MISS_RATE;
    let cost = LinearCostModel {
        coefficients: cal.coefficients().ok()?,
    };
    // Each replica: Poisson conversation starts at `qps` within a 10 s window (the benchmark's
    // generator) and its own router placement.
    let conv = |n: usize, start: f64| TimedConversation {
        id: format!("{workload}-{n}"),
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
        ],
        think_after: vec![SimDuration::ZERO],
        not_before: vec![],
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
        below_saturation: success >= 100.0 && m("turn1", "p50_ttft_ms") <= 1000.0,
    })
}

fn err(pred: f64, meas: f64) -> f64 {
    100.0 * (pred - meas) / meas
}

/// A point where fewer requests than this succeed \[%\] is past the knee even when its turn-1 p50
/// TTFT (over the successful requests) stays below 1 s: the sweep's servers fall over under
/// overload ("Cannot connect to host", truncated responses) at 12–20 QPS. A single dropped
/// request ("Server disconnected", 99.2% success at 6 QPS) is not a knee.
pub const KNEE_MIN_SUCCESS_PCT: f64 = 90.0;

/// The summary of a comprehensive validation: per config, median |error| below saturation of
/// turn-2 p50 TTFT and turn-2 mean TPOT; PD-vs-PPD winner agreement by turn-2 p50 TTFT; and the
/// measured vs predicted saturation knee (first QPS whose turn-1 p50 TTFT exceeds 1 s, or where
/// fewer than [`KNEE_MIN_SUCCESS_PCT`] of the requests succeed) per config and workload — every
/// one with `all_knees`, else only those off by more than one QPS step.
pub fn comprehensive_summary(rows: &[ComprehensiveRow], all_knees: bool) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut s = String::new();
    let mut configs: Vec<&str> = rows.iter().map(|r| r.config.as_str()).collect();
    configs.sort_unstable();
    configs.dedup();
    let _ = writeln!(
        s,
        "median |error| below saturation (measured turn-1 p50 TTFT ≤ 1 s, all requests succeeded):"
    );
    let _ = writeln!(
        s,
        "  {:<12} {:>6} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "config", "points", "T2 p50 TTFT", "T2 p99 TTFT", "T2 mean TPOT", "T1 p50 TTFT", "T1 mean TPOT"
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
        let _ = writeln!(
            s,
            "  {:<12} {:>6} {:>13.1}% {:>13.1}% {:>13.1}% {:>13.1}% {:>13.1}%",
            c,
            sel.len(),
            e(&|r| (r.t2_p50_ttft_predicted_ms, r.t2_p50_ttft_measured_ms)),
            e(&|r| (r.t2_p99_ttft_predicted_ms, r.t2_p99_ttft_measured_ms)),
            e(&|r| (r.t2_mean_tpot_predicted_ms, r.t2_mean_tpot_measured_ms)),
            e(&|r| (r.t1_p50_ttft_predicted_ms, r.t1_p50_ttft_measured_ms)),
            e(&|r| (r.t1_mean_tpot_predicted_ms, r.t1_mean_tpot_measured_ms)),
        );
    }
    // Winner agreement for every pair of configurations that differ only in D vs pD (same P and
    // R counts, same number of decode-side instances): which of the two has the lower turn-2 p50
    // TTFT at each (workload, QPS) both measured with every request successful.
    let key = |r: &ComprehensiveRow| (r.workload.clone(), (r.qps * 10.0) as i64);
    for (i, a) in configs.iter().enumerate() {
        for b in &configs[i + 1..] {
            let (Some(x), Some(y)) = (config_pools(a), config_pools(b)) else {
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
    let mut knee_lines = Vec::new();
    for ((c, w), mut v) in groups {
        v.sort_by(|a, b| a.qps.total_cmp(&b.qps));
        // Configs whose points failed at every load (server errors) have no knee to compare.
        if v.len() < 3 {
            continue;
        }
        let mk = v
            .iter()
            .find(|r| r.t1_p50_ttft_measured_ms > 1000.0 || r.measured_success_pct < KNEE_MIN_SUCCESS_PCT)
            .map(|r| r.qps);
        let pk = v
            .iter()
            .find(|r| r.t1_p50_ttft_predicted_ms > 1000.0 || r.predicted_success_pct < KNEE_MIN_SUCCESS_PCT)
            .map(|r| r.qps);
        counted += 1;
        let ok = match (mk, pk) {
            (None, None) => true,
            (Some(a), Some(b)) => step(a).zip(step(b)).is_some_and(|(i, j)| i.abs_diff(j) <= 1),
            (Some(a), None) | (None, Some(a)) => a >= 20.0,
        };
        within += ok as usize;
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
    for l in knee_lines.iter().filter(|l| all_knees || l.ends_with('✗')) {
        let _ = writeln!(s, "{l}");
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

/// One interference setting: measured means over its trials and the prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InterferenceRow {
    /// Experiment (`core` or `sensitivity`).
    pub experiment: String,
    /// Scenario name.
    pub scenario: String,
    /// Decode requests N.
    pub decode_count: u32,
    /// Inserted prefill requests k.
    pub prefill_count: u32,
    /// `full`, `append` or empty.
    pub prefill_type: String,
    /// New tokens of each inserted append-prefill \[tokens\].
    pub append_tokens: u32,
    /// True for settings the calibration fitted (decode-only): held-in.
    pub fitted: bool,
    /// Mean TPOT of the decode requests, measured / predicted \[ms\].
    pub decode_tpot_measured_ms: f64,
    /// Predicted.
    pub decode_tpot_predicted_ms: f64,
    /// Time until all requests finished, measured / predicted \[ms\].
    pub batch_time_measured_ms: f64,
    /// Predicted.
    pub batch_time_predicted_ms: f64,
    /// Mean TTFT of the inserted prefills, measured / predicted \[ms\] (NaN without prefills).
    pub prefill_ttft_measured_ms: f64,
    /// Predicted.
    pub prefill_ttft_predicted_ms: f64,
}

/// Simulates each setting of an interference experiment (`v`, parsed from `path`, which errors
/// name) on one H100 (vLLM with prefix
/// caching, `gpu_memory_utilization` 0.90): N decode requests (the 2048-token prefix, pre-warmed
/// and shared, + 32 new tokens → 64 outputs) and k inserted requests — `full`: 1024 fresh tokens,
/// or `append`: the same shared prefix + L new tokens (128 in the core experiment, the swept
/// length in the sensitivity one) → 64 outputs — all sent at t = 0.
///
/// # Errors
/// A file of another schema or missing fields.
pub fn interference(path: &Path, v: &serde_json::Value, cal: &CalibrationFile) -> InputResult<Vec<InterferenceRow>> {
    use std::collections::BTreeMap;
    let experiment = v["experiment_type"].as_str().unwrap_or("?").to_string();
    let results = v["results"]
        .as_array()
        .ok_or_else(|| InputError::key(path, "results", "missing array"))?;
    let cfg_of = |k: &str, f: &str| v[k][f].as_f64().map(|x| x as u32);
    let (d_ctx, d_new, d_out) = (
        cfg_of("decode_config", "context").unwrap_or(2048),
        cfg_of("decode_config", "new_input").unwrap_or(32),
        cfg_of("decode_config", "output").unwrap_or(64),
    );
    let (f_in, f_out) = (
        cfg_of("full_prefill_config", "input").unwrap_or(1024),
        cfg_of("full_prefill_config", "output").unwrap_or(64),
    );
    let (a_ctx, a_in, a_out) = (
        cfg_of("append_prefill_config", "context").unwrap_or(2048),
        cfg_of("append_prefill_config", "input").unwrap_or(128),
        cfg_of("append_prefill_config", "output").unwrap_or(64),
    );
    // Group trials by setting; average the measured values.
    type Key = (String, u32, u32, String, u32);
    let mut groups: BTreeMap<Key, Vec<&serde_json::Value>> = BTreeMap::new();
    for r in results {
        let n = r["decode_count"].as_f64().unwrap_or(0.0) as u32;
        let k = r["prefill_count"].as_f64().unwrap_or(0.0) as u32;
        if n == 0 && k == 0 {
            continue;
        }
        let ty = r["prefill_type"].as_str().unwrap_or("").to_string();
        let len = r
            .get("append_input_length")
            .and_then(|x| x.as_f64())
            .map_or(a_in, |x| x as u32);
        groups
            .entry((r["scenario"].as_str().unwrap_or("?").to_string(), n, k, ty, len))
            .or_default()
            .push(r);
    }
    let cost = LinearCostModel {
        coefficients: cal.coefficients().map_err(|m| InputError::file(path, m))?,
    };
    let mut cfg = vllm_ppd_config(
        PolicyConfig::Replication {
            name: None,
            instances: 1,
        },
        cal,
    )
    .ok_or_else(|| InputError::file(path, "calibration model or GPU unknown"))?;
    cfg.client_max_connections = None;
    cfg.request_timeout_s = None;
    // The single-GPU server ran with gpu_memory_utilization 0.90.
    let spec = EngineSpec {
        gpu_memory_utilization: 0.90,
        ..EngineSpec::default()
    };
    cfg.limits = spec.limits(
        hardware::model(&cal.model).expect("checked"),
        hardware::gpu(&cal.gpu).expect("checked"),
    );
    let mut out = Vec::new();
    for ((scenario, n, k, ty, len), trials) in groups {
        let m = |key: &str| mean(trials.iter().filter_map(|t| t[key].as_f64()).filter(|x| *x > 0.0));
        let mut convs = Vec::new();
        let conv = |id: String, user: u32, out: u32, shared: bool| TimedConversation {
            id,
            start_at: SimTime::ZERO,
            turns: vec![Turn {
                user_tokens: user,
                assistant_tokens: out,
            }],
            think_after: vec![],
            not_before: vec![],
            shared_prefix: shared.then_some((0, d_ctx)),
        };
        for i in 0..n {
            convs.push(conv(format!("d{i}"), d_ctx + d_new, d_out, true));
        }
        for i in 0..k {
            convs.push(if ty == "full" {
                conv(format!("p{i}"), f_in, f_out, false)
            } else {
                conv(format!("p{i}"), a_ctx + len, a_out, true)
            });
        }
        let r = Simulation::new(cfg.clone(), &cost, convs).run();
        let decode: Vec<&RequestRecord> = r
            .records
            .iter()
            .filter(|x| x.conversation_id.starts_with('d'))
            .collect();
        let inserted: Vec<&RequestRecord> = r
            .records
            .iter()
            .filter(|x| x.conversation_id.starts_with('p'))
            .collect();
        out.push(InterferenceRow {
            experiment: experiment.clone(),
            scenario,
            decode_count: n,
            prefill_count: k,
            prefill_type: ty,
            append_tokens: len,
            fitted: k == 0,
            decode_tpot_measured_ms: m("decode_avg_tpot_ms"),
            decode_tpot_predicted_ms: mean(decode.iter().filter_map(|x| x.tpot_ms)),
            batch_time_measured_ms: m("batch_execution_time_ms"),
            batch_time_predicted_ms: r.records.iter().map(|x| x.completed_at_ms).fold(0.0, f64::max),
            prefill_ttft_measured_ms: m("prefill_ttft_ms"),
            prefill_ttft_predicted_ms: mean(inserted.iter().map(|x| x.ttft_ms)),
        });
    }
    Ok(out)
}

/// Summary of interference rows: median |error| of decode TPOT, batch time and inserted-prefill
/// TTFT over the settings with inserted prefills (validation) and over the decode-only ones
/// (fitted), per experiment.
pub fn interference_summary(rows: &[InterferenceRow]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "interference: median |error| (settings)");
    let mut exps: Vec<&str> = rows.iter().map(|r| r.experiment.as_str()).collect();
    exps.sort_unstable();
    exps.dedup();
    for e in exps {
        for fitted in [false, true] {
            let sel: Vec<&InterferenceRow> = rows
                .iter()
                .filter(|r| r.experiment == e && r.fitted == fitted)
                .collect();
            if sel.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "  {e:<12} {:<26} n={:<4} decode TPOT {:>5}%  batch time {:>5}%  prefill TTFT {:>5}%",
                if fitted {
                    "decode-only (fitted)"
                } else {
                    "with inserted prefills"
                },
                sel.len(),
                crate::output::fmt_number(
                    median(
                        sel.iter()
                            .map(|r| err(r.decode_tpot_predicted_ms, r.decode_tpot_measured_ms).abs())
                    ),
                    1
                ),
                crate::output::fmt_number(
                    median(
                        sel.iter()
                            .map(|r| err(r.batch_time_predicted_ms, r.batch_time_measured_ms).abs())
                    ),
                    1
                ),
                crate::output::fmt_number(
                    median(
                        sel.iter()
                            .map(|r| err(r.prefill_ttft_predicted_ms, r.prefill_ttft_measured_ms).abs())
                    ),
                    1
                ),
            );
        }
    }
    s
}

//! The interference study (`*interference*core_experiment*.json`): decode TPOT, batch time and
//! inserted-prefill TTFT, measured vs predicted.

use super::*;
use crate::calibrate::model_file::CalibrationFile;
use crate::cost_model::LinearCostModel;
use crate::error::{InputError, InputResult};
use crate::metrics::RequestRecord;
use crate::scenario::EngineSpec;
use crate::sim::workload::TimedConversation;
use crate::sim::Simulation;
use crate::time::SimTime;
use crate::trace::Turn;
use serde::Serialize;
use std::path::Path;

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
/// length in the sensitivity one) → 64 outputs — all sent at t = 0. When `cal` says so
/// ([`CalibrationFile::cascade_attention`]) the engine reads the shared prefix once per step
/// while every sequence of the batch holds it
/// ([`crate::sim::instance::EngineLimits::cascade_attention`]; the shipped model is fitted
/// without).
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
    let cost = LinearCostModel::new(cal.coefficients().map_err(|m| InputError::file(path, m))?);
    let (router, _) = crate::validate::mode_deployment("replication", 4).expect("a mode");
    let mut cfg = vllm_ppd_config(
        "replication",
        router,
        crate::cluster::Shape::parse("1R").expect("a shape"),
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
    cfg.limits = crate::validate::replay_limits(spec, cal).expect("known: vllm_ppd_config checked it");
    let mut out = Vec::new();
    for ((scenario, n, k, ty, len), trials) in groups {
        let m = |key: &str| mean(trials.iter().filter_map(|t| t[key].as_f64()).filter(|x| *x > 0.0));
        let mut convs = Vec::new();
        let conv = |id: String, user: u32, out: u32, shared: bool| TimedConversation {
            id: id.into(),
            start_at: SimTime::ZERO,
            turns: vec![Turn {
                user_tokens: user,
                assistant_tokens: out,
            }]
            .into(),
            later_turns: Box::new([]),
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

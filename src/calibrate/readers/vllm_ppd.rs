//! The vllm-ppd artifact's result files (Llama-3.1-8B, one H100 per instance, vLLM V1 fork).
//!
//! | file (schema) | format | used for |
//! |---|---|---|
//! | `interference/{core,sensitivity}_experiment.json` | `vllm-ppd-interference` | **decode iterations**: `decoding_only*` trials (N requests on a cached 2048-token prefix + 32 new, 64 outputs) give the TPOT of a batch of N at mean context 2080 + 31.5; single-request trials (`decode_count = 0`, one prefill) give batch-1 TPOTs. Trials mixing prefills into decodes are interference validation data. Trials with failed requests are dropped |
//! | `final/*_v3_*.lowqps.json` (4 GPU) | `vllm-ppd-lowqps-v3` | **request samples**: turn-2 p50 TTFT at ≤ 0.1 QPS, where a turn runs alone. `pd`: P prefill (P's cache holds the turn-1 prompt) + KV transfer of the whole prompt + D's 1-token step; `ppd`/`replication`: append-prefill on the instance holding the context. Turn-1 metrics come from 10-way bursts: not used |
//! | `*_2026010*.lowqps.json` (2 GPU) | `vllm-ppd-lowqps-2gpu` | **request samples** as above for W1–W4 (turn 2 of 512–8192 tokens); turn 1 is a short greeting, taken as 12 prompt + 20 answer tokens |
//! | `bandwidth_results.json` | `vllm-ppd-bandwidth` | **request samples**: each iteration is a whole P→D request with `max_tokens = 1` (P prefill + transfer + D step; 2-GPU, NCCL over sockets); its `kv_transfer_bytes` is a KV size statement |
//! | `comprehensive/<cfg>/*.json` | `vllm-ppd-comprehensive` | validation only (loaded points); `success_rate == 0` points are counted as dropped |
//! | `multi_turn_results.json` | `vllm-ppd-multi-turn` | validation only (non-streaming E2E of a 5-turn PD chat) |
//! | `benchmark_*.json` (single stream) | `vllm-ppd-single-stream` | validation only (whole-conversation wall times) |
//!
//! Prompt lengths of two-turn samples follow the vllm-ppd client: turn-2 prompt = turn-1 prompt +
//! turn-1 answer + `"\n"` (1 token) + turn-2 input; prefix-cache hits are whole blocks.

use super::{
    decode_batch, get_f64, FileSamples, Format, IterationSample, KvStatement, Phase, ReadOptions, RequestRoute,
    RequestSample,
};
use crate::cost_model::PrefillPart;
use crate::error::{InputError, InputResult};
use serde_json::Value;
use std::path::Path;

/// Detects a vllm-ppd schema.
pub fn detect(v: &Value) -> Option<Format> {
    let results = v.get("results").and_then(|r| r.as_array());
    if v.get("experiment_type").is_some() && results.is_some_and(|r| r.iter().all(|x| x.get("scenario").is_some())) {
        return Some(Format::VllmPpdInterference);
    }
    if let Some(r) = results {
        if !r.is_empty() && r.iter().all(|x| x.get("turn2_metrics").is_some()) {
            if r.iter().all(|x| x.get("t1_input").is_some()) {
                return Some(Format::VllmPpdLowqpsV3);
            }
            if r.iter().all(|x| x.get("input_tokens").is_some()) {
                return Some(Format::VllmPpdLowqps2gpu);
            }
        }
    }
    if ["config", "workload", "qps", "turn1", "turn2", "average"]
        .iter()
        .all(|k| v.get(k).is_some())
    {
        return Some(Format::VllmPpdComprehensive);
    }
    if v.as_array().is_some_and(|a| {
        !a.is_empty()
            && a.iter()
                .all(|e| e.get("target_tokens").is_some() && e.get("iterations").is_some())
    }) {
        return Some(Format::VllmPpdBandwidth);
    }
    if v.get("turns")
        .and_then(|t| t.as_array())
        .is_some_and(|t| t.iter().all(|x| x.get("kv_cache_size_mb").is_some()))
    {
        return Some(Format::VllmPpdMultiTurn);
    }
    if v.get("multi_run_results").is_some() {
        return Some(Format::VllmPpdSingleStream);
    }
    None
}

/// Reader name (and group) of comprehensive-sweep points: loaded runs the overheads' replay
/// fit simulates, not iteration samples.
pub const COMPREHENSIVE_READER: &str = "vllm-ppd-comprehensive";

fn base(reader: &'static str, group: &str, used_for: &str) -> FileSamples {
    FileSamples {
        reader,
        group: group.into(),
        model: Some("llama-3.1-8b".into()),
        gpu: Some("h100-sxm".into()),
        used_for: used_for.into(),
        ..Default::default()
    }
}

/// The serialized admission interval of a burst and its 95% CI half-width \[ms\], from
/// `(N, mean TTFT [ms])` ramps: a burst of N requests served one every `s` ms has a mean wait of
/// `s (N − 1) / 2`, so `s` is twice the least-squares slope. `None` with fewer than 3 ramps or a
/// non-positive slope.
pub fn ramp_service_ms(ramps: &[(f64, f64)]) -> Option<(f64, f64)> {
    if ramps.len() < 3 {
        return None;
    }
    let x: Vec<Vec<f64>> = ramps.iter().map(|r| vec![1.0, r.0]).collect();
    let y: Vec<f64> = ramps.iter().map(|r| r.1).collect();
    let (beta, half) = crate::calibrate::fit::ols_weighted(&x, &y, &vec![1.0; y.len()])?;
    (beta[1] > 0.0).then(|| (2.0 * beta[1], 2.0 * half[1]))
}

/// Mean number of requests decoding together when N requests, admitted `s` ms apart, each decode
/// for `d` ms: `(1/N) Σ_i Σ_j max(0, 1 − |i − j| s / d)`.
pub fn effective_batch(n: u32, d: f64, s: f64) -> f64 {
    if d <= 0.0 {
        return n as f64;
    }
    let nf = n as f64;
    let mut total = nf;
    for k in 1..n {
        let w = 1.0 - k as f64 * s / d;
        if w <= 0.0 {
            break;
        }
        total += 2.0 * (nf - k as f64) * w;
    }
    total / nf
}

/// Seed 003's 2-GPU workloads as the client sent them: `(greeting prompt, greeting answer,
/// turn-2 prompt)` in real Llama-3 tokens for a workload name (`W1_Chat_Balanced`, or its `W1`
/// prefix). The greeting `User: Hello, I am user <id>. Please acknowledge.\nAssistant:` is 27
/// tokens answered with 20; the turn-2 prompt asks for `input_tokens` "tokens" as `4 ×
/// input_tokens` characters of English, which Llama 3's BPE (it extends cl100k_base) encodes as
/// 0.65–0.78× the nominal count: W1 512 → 366, W2 4096 → 2690, W3 256 → 198, W4 8192 → 5347
/// (the same figures as `scenarios/seed003-w*.toml`). `None` for other names.
pub fn seed003_real_tokens(workload: &str) -> Option<(u32, u32, u32)> {
    let real = match workload.split('_').next()? {
        "W1" => 366,
        "W2" => 2690,
        "W3" => 198,
        "W4" => 5347,
        _ => return None,
    };
    Some((27, 20, real))
}

/// The prompt and answer lengths of one low-QPS result `r` (at `at` in `path`): `[turn-1 prompt,
/// turn-1 answer, turn-2 input]` \[tokens\] — the v3 files' `t1_input`, `t1_output`, `t2_input`,
/// or for the 2-GPU files (no `t1_input`) the greeting and the workload's real turn-2 length
/// ([`seed003_real_tokens`]).
///
/// # Errors
/// A missing or non-numeric length, or a 2-GPU workload that is not one of W1–W4.
pub fn lowqps_turn_tokens(path: &Path, r: &Value, at: &str) -> InputResult<[u32; 3]> {
    if r.get("t1_input").is_some() {
        return Ok([
            get_f64(path, r, "t1_input", at)? as u32,
            get_f64(path, r, "t1_output", at)? as u32,
            get_f64(path, r, "t2_input", at)? as u32,
        ]);
    }
    let w = r.get("workload").and_then(|w| w.as_str()).unwrap_or("?");
    let (greeting, answer, real) = seed003_real_tokens(w).ok_or_else(|| {
        InputError::key(
            path,
            &format!("{at}.workload"),
            format!("`{w}` is not one of seed 003's W1–W4 (their real token lengths are needed)"),
        )
    })?;
    Ok([greeting, answer, real])
}

/// A turn-2 request sample of a two-turn conversation measured alone. On a direct route the
/// instance's prefix cache holds turn 1's prompt and the part of its answer that re-tokenises the
/// same (`answer_mismatch_per_token`, see [`crate::sim::instance::reused_answer_tokens`]).
#[allow(clippy::too_many_arguments)]
pub fn two_turn_sample(
    route: RequestRoute,
    t1_prompt: u32,
    t1_answer: u32,
    t2_input: u32,
    block: u32,
    answer_mismatch_per_token: f64,
    ttft_ms: f64,
    label: String,
) -> RequestSample {
    let floor_block = |t: u32| (t / block) * block;
    let prompt = t1_prompt + t1_answer + 1 + t2_input;
    match route {
        RequestRoute::Direct => {
            // The instance holds turn 1's prompt and answer (minus the last sampled token, which
            // has no KV), up to the answer's first token that re-tokenises differently.
            let reused =
                crate::sim::instance::reused_answer_tokens(t1_answer.saturating_sub(1), answer_mismatch_per_token);
            let hit = floor_block((t1_prompt + reused).min(prompt - 1));
            RequestSample {
                route,
                steps: vec![PrefillPart {
                    num_new_tokens: prompt - hit,
                    num_cached_tokens: hit,
                }],
                kv_tokens: 0,
                measured_ttft_ms: ttft_ms,
                label,
            }
        }
        RequestRoute::Split => {
            // P's cache holds turn 1's prompt; D receives the whole prompt and computes its last token.
            let hit_p = floor_block(t1_prompt.min(prompt - 1));
            RequestSample {
                route,
                steps: vec![
                    PrefillPart {
                        num_new_tokens: prompt - hit_p,
                        num_cached_tokens: hit_p,
                    },
                    PrefillPart {
                        num_new_tokens: 1,
                        num_cached_tokens: prompt - 1,
                    },
                ],
                kv_tokens: prompt,
                measured_ttft_ms: ttft_ms,
                label,
            }
        }
    }
}

fn route_of(path: &Path, at: &str, mode: &str) -> InputResult<RequestRoute> {
    match mode {
        "pd" => Ok(RequestRoute::Split),
        "ppd" | "replication" => Ok(RequestRoute::Direct),
        other => Err(InputError::key(
            path,
            at,
            format!("unknown mode `{other}` (expected pd, ppd, replication)"),
        )),
    }
}

/// Reads a vllm-ppd file of schema `fmt`.
///
/// # Errors
/// Missing or non-numeric required fields, naming the JSON path.
pub fn read(path: &Path, v: &Value, fmt: Format, opts: &ReadOptions) -> InputResult<FileSamples> {
    let bs = opts.block_size;
    match fmt {
        Format::VllmPpdInterference => {
            let dc = v
                .get("decode_config")
                .ok_or_else(|| InputError::key(path, "decode_config", "missing"))?;
            let d_ctx =
                get_f64(path, dc, "context", "decode_config")? + get_f64(path, dc, "new_input", "decode_config")?;
            let d_out = get_f64(path, dc, "output", "decode_config")?;
            let fp = v
                .get("full_prefill_config")
                .ok_or_else(|| InputError::key(path, "full_prefill_config", "missing"))?;
            let ap = v
                .get("append_prefill_config")
                .ok_or_else(|| InputError::key(path, "append_prefill_config", "missing"))?;
            let mut out = base(
                "vllm-ppd-interference",
                "vllm-ppd-interference",
                "decode iterations (β0, β3, β4); mixed trials kept for validation",
            );
            let mut decode_only = Vec::new();
            for (i, r) in v["results"].as_array().expect("detected").iter().enumerate() {
                let at = format!("results[{i}]");
                let scenario = r["scenario"].as_str().unwrap_or("");
                let n = get_f64(path, r, "decode_count", &at)? as u32;
                let k = get_f64(path, r, "prefill_count", &at)? as u32;
                let ok_decodes = r.get("decode_success_count").and_then(|x| x.as_f64()).unwrap_or(0.0) as u32 == n;
                let ok_prefill = r.get("prefill_success").and_then(|x| x.as_bool()).unwrap_or(true);
                if scenario.starts_with("decoding_only") && n >= 1 {
                    if !ok_decodes {
                        out.num_dropped += 1;
                        continue;
                    }
                    let tpot = get_f64(path, r, "decode_avg_tpot_ms", &at)?;
                    if let Some(ttft) = r
                        .get("decode_avg_ttft_ms")
                        .and_then(|x| x.as_f64())
                        .filter(|t| *t > 0.0)
                    {
                        out.ramps.push((n as f64, ttft));
                    }
                    let mean_ctx = d_ctx + (d_out - 1.0) / 2.0;
                    decode_only.push((out.iterations.len(), n, tpot));
                    out.iterations.push(IterationSample {
                        phase: Phase::Decode,
                        batch: decode_batch(n, (n as f64 * mean_ctx).round() as u64),
                        measured_ms: tpot,
                        label: format!("vllm-ppd decode batch={n}"),
                    });
                } else if n == 0 && k == 1 {
                    let tpot = r.get("prefill_tpot_ms").and_then(|x| x.as_f64());
                    let Some(tpot) = tpot.filter(|_| ok_prefill) else {
                        out.num_dropped += 1;
                        continue;
                    };
                    let cfg = if r["prefill_type"].as_str() == Some("append") {
                        ap
                    } else {
                        fp
                    };
                    let ctx = cfg.get("context").and_then(|x| x.as_f64()).unwrap_or(0.0)
                        + get_f64(path, cfg, "input", "prefill_config")?;
                    let out_len = get_f64(path, cfg, "output", "prefill_config")?;
                    out.iterations.push(IterationSample {
                        phase: Phase::Decode,
                        batch: decode_batch(1, (ctx + (out_len - 1.0) / 2.0).round() as u64),
                        measured_ms: tpot,
                        label: "vllm-ppd decode batch=1".into(),
                    });
                } else if n > 0 || k > 0 {
                    out.num_validation += 1;
                }
            }
            if out.iterations.is_empty() {
                return Err(InputError::file(
                    path,
                    "no decode-only or single-request trials (expected `decoding_only*` scenarios)",
                ));
            }
            // The N requests of a trial are not admitted at once: the server takes them one per
            // `s` ms (the mean TTFT grows by s/2 per request), so a request decodes alongside fewer
            // than N others on average. Use that effective batch.
            if let Some((s, _)) = ramp_service_ms(&out.ramps) {
                let mean_ctx = d_ctx + (d_out - 1.0) / 2.0;
                for (idx, n, tpot) in decode_only {
                    let n_eff = effective_batch(n, (d_out - 1.0) * tpot, s);
                    let sample = &mut out.iterations[idx];
                    let b = n_eff.round().max(1.0) as u32;
                    sample.batch = decode_batch(b, (b as f64 * mean_ctx).round() as u64);
                    sample.label = format!("vllm-ppd decode N={n} (effective batch {b})");
                }
            }
            Ok(out)
        }
        Format::VllmPpdLowqpsV3 | Format::VllmPpdLowqps2gpu => {
            let v3 = fmt == Format::VllmPpdLowqpsV3;
            let mut out = if v3 {
                base(
                    "vllm-ppd-lowqps-v3",
                    "vllm-ppd-lowqps",
                    "request overhead, PD handoff, KV link (turn-2 p50 TTFT, 4 GPUs)",
                )
            } else {
                base(
                    "vllm-ppd-lowqps-2gpu",
                    "vllm-ppd-lowqps-2gpu",
                    "request overhead, PD handoff, KV link (turn-2 p50 TTFT, 2 GPUs)",
                )
            };
            for (i, r) in v["results"].as_array().expect("detected").iter().enumerate() {
                let at = format!("results[{i}]");
                let mode = r
                    .get("mode")
                    .and_then(|m| m.as_str())
                    .ok_or_else(|| InputError::key(path, &format!("{at}.mode"), "missing"))?;
                let route = route_of(path, &format!("{at}.mode"), mode)?;
                let success = r.get("success_count").and_then(|x| x.as_f64()).unwrap_or(0.0);
                let ttft = r["turn2_metrics"]
                    .get("p50_ttft")
                    .and_then(|x| x.as_f64())
                    .unwrap_or(0.0);
                if success <= 0.0 || ttft <= 0.0 {
                    out.num_dropped += 1;
                    continue;
                }
                let [t1_in, t1_out, t2_in] = lowqps_turn_tokens(path, r, &at)?;
                let label = format!(
                    "{} {} qps={}",
                    r.get("workload").and_then(|w| w.as_str()).unwrap_or("?"),
                    mode,
                    r.get("target_qps").and_then(|q| q.as_f64()).unwrap_or(0.0)
                );
                out.requests.push(two_turn_sample(
                    route,
                    t1_in,
                    t1_out,
                    t2_in,
                    bs,
                    opts.answer_mismatch_per_token,
                    ttft,
                    label,
                ));
            }
            out.lowqps_points = crate::validate::read_lowqps(path, v)?;
            Ok(out)
        }
        Format::VllmPpdBandwidth => {
            let mut out = base(
                "vllm-ppd-bandwidth",
                "vllm-ppd-bandwidth",
                "whole P→D requests with max_tokens = 1 (2 GPUs, NCCL over sockets); KV size check",
            );
            for (i, e) in v.as_array().expect("detected").iter().enumerate() {
                for (j, it) in e["iterations"]
                    .as_array()
                    .ok_or_else(|| InputError::key(path, &format!("[{i}].iterations"), "not an array"))?
                    .iter()
                    .enumerate()
                {
                    let at = format!("[{i}].iterations[{j}]");
                    let n = get_f64(path, it, "prompt_tokens", &at)? as u32;
                    let s = get_f64(path, it, "elapsed_time_s", &at)?;
                    let bytes = get_f64(path, it, "kv_transfer_bytes", &at)? as u64;
                    out.requests.push(RequestSample {
                        route: RequestRoute::Split,
                        steps: vec![
                            PrefillPart {
                                num_new_tokens: n,
                                num_cached_tokens: 0,
                            },
                            PrefillPart {
                                num_new_tokens: 1,
                                num_cached_tokens: n - 1,
                            },
                        ],
                        kv_tokens: n,
                        measured_ttft_ms: s * 1000.0,
                        label: format!("bandwidth {n} tokens #{}", j + 1),
                    });
                    out.kv_statements.push(KvStatement {
                        tokens: n as u64,
                        bytes,
                        tp: 1,
                        label: format!("bandwidth {n} tokens"),
                    });
                }
            }
            Ok(out)
        }
        Format::VllmPpdComprehensive => {
            let mut out = base(
                COMPREHENSIVE_READER,
                COMPREHENSIVE_READER,
                "loaded point: replayed to fit where the PD handoff's work is serialized",
            );
            if v.get("success_rate").and_then(|s| s.as_f64()).unwrap_or(0.0) <= 0.0 {
                out.num_dropped = 1;
            } else {
                out.loaded_points.push(v.clone());
            }
            Ok(out)
        }
        Format::VllmPpdMultiTurn => {
            let mut out = base(
                "vllm-ppd-multi-turn",
                "vllm-ppd-multi-turn",
                "validation only (non-streaming E2E of a 5-turn PD chat)",
            );
            out.num_validation = v["turns"].as_array().map_or(0, |t| t.len());
            Ok(out)
        }
        Format::VllmPpdSingleStream => {
            let mut out = base(
                "vllm-ppd-single-stream",
                "vllm-ppd-single-stream",
                "validation only (whole-conversation wall times)",
            );
            out.num_validation = v["multi_run_results"].as_array().map_or(0, |t| t.len());
            Ok(out)
        }
        _ => unreachable!("not a vllm-ppd format"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_batch_by_hand() {
        assert_eq!(effective_batch(1, 10.0, 5.0), 1.0);
        // Two requests 5 ms apart decoding 10 ms each overlap half the time: (2 + 2·1·0.5)/2 = 1.5.
        assert!((effective_batch(2, 10.0, 5.0) - 1.5).abs() < 1e-12);
        // Admitted further apart than they decode: never together.
        assert_eq!(effective_batch(3, 10.0, 20.0), 1.0);
        // Admitted at once: all N together.
        assert_eq!(effective_batch(50, 10.0, 0.0), 50.0);
    }

    #[test]
    fn ramp_service_is_twice_the_ttft_slope() {
        let (s, half) = ramp_service_ms(&[(10.0, 100.0), (20.0, 150.0), (30.0, 200.0)]).unwrap();
        assert!((s - 10.0).abs() < 1e-9 && half.abs() < 1e-9, "{s} ± {half}");
        assert_eq!(ramp_service_ms(&[(10.0, 100.0), (20.0, 150.0)]), None);
    }
}

//! Readers of real measurement files, chosen by content.
//!
//! | reader | recognised by | gives |
//! |---|---|---|
//! | `llmservingsim-layers` | CSV header `layer_name,input,kv_cache,tp_size,latency(ns)` (gzip or plain) | **prefill iterations**: for each token count N, `32 × Σ(per-layer ops) + embedding + final_layernorm + lm_head(1 token)` [ns → ms]; only `tp_size = 1` rows (one GPU per instance) |
//! | `vllm-ppd-interference` | JSON with `experiment_type` and `results[].scenario` | **decode iterations**: `decoding_only` trials (N decode requests, 2048-token cached prefix + 32 new, 64 outputs) → TPOT of a batch of N with mean context 2080 + 31.5; single-request trials (`decode_count = 0`, one prefill) → TPOT of a batch of 1. Trials with failed requests are dropped. Mixed prefill+decode trials are interference validation data, not fitting samples |
//! | `vllm-ppd-lowqps` | JSON with `results[].t1_input` and `turn2_metrics` (the `*_v3_*.lowqps.json` files) | **request samples**: turn-2 p50 TTFT at ≤ 0.1 QPS, where a turn runs alone: `pd` (P prefill + KV transfer + D first step + overheads) and `ppd`/`replication` (append-prefill on D + overhead). Turn-1 metrics of these files come from 10-way bursts and are not used |
//!
//! Anything else is refused with the file name and the list of expected formats.

use crate::error::{InputError, InputResult};
use flate2::read::GzDecoder;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// Phase of an iteration sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// A prefill forward pass (no decodes).
    Prefill,
    /// A decode step (no prefill).
    Decode,
}

impl Phase {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// One measured iteration: the regressors of [`crate::cost_model::IterationCoefficients::features`] and the time.
#[derive(Clone, Debug, PartialEq)]
pub struct IterationSample {
    /// Phase.
    pub phase: Phase,
    /// Prefill tokens `m` (cached `L` = 0 for the sources read here... see `cached`).
    pub num_new_tokens: u32,
    /// Cached tokens under the prefill \[tokens\].
    pub num_cached_tokens: u32,
    /// Decode sequences.
    pub num_decode_seqs: u32,
    /// Σ decode context \[tokens\].
    pub decode_context_tokens: f64,
    /// Measured time \[ms\].
    pub measured_ms: f64,
    /// Index of the source file.
    pub source: usize,
}

/// Route of a low-load request sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestRoute {
    /// P → KV transfer → D.
    Split,
    /// Straight to the instance holding the context.
    Direct,
}

/// A request measured alone: turn 2 of a two-turn conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSample {
    /// Route.
    pub route: RequestRoute,
    /// Turn-1 input tokens.
    pub t1_input: u32,
    /// Turn-1 output tokens.
    pub t1_output: u32,
    /// Turn-2 input tokens.
    pub t2_input: u32,
    /// Measured turn-2 p50 TTFT \[ms\].
    pub measured_ttft_ms: f64,
    /// Label (`L_a pd qps=0.05`).
    pub label: String,
    /// Index of the source file.
    pub source: usize,
}

/// What one file gave.
#[derive(Clone, Debug, Default)]
pub struct FileSamples {
    /// Reader name.
    pub reader: &'static str,
    /// Iteration samples.
    pub iterations: Vec<IterationSample>,
    /// Request samples.
    pub requests: Vec<RequestSample>,
    /// Dropped entries (failures).
    pub num_dropped: usize,
    /// What the samples are used for.
    pub used_for: String,
}

fn read_text(path: &Path) -> InputResult<String> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| InputError::file(path, format!("cannot read: {e}")))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| InputError::file(path, format!("corrupt gzip: {e}")))?;
        out
    } else {
        raw
    };
    String::from_utf8(bytes).map_err(|_| InputError::file(path, "not UTF-8 text"))
}

const EXPECTED: &str = "expected one of: LLMServingSim layers CSV (`layer_name,input,kv_cache,tp_size,latency(ns)`), \
vllm-ppd interference JSON (`experiment_type`, `results[].scenario`), vllm-ppd v3 low-QPS JSON (`results[].t1_input`, `turn2_metrics`)";

/// Reads `path` with the reader its content calls for.
///
/// # Errors
/// Unknown formats and malformed files, naming the file, the field and what was expected.
pub fn read(path: &Path, source: usize) -> InputResult<FileSamples> {
    let text = read_text(path)?;
    let first = text.lines().next().unwrap_or("").trim();
    if first == "layer_name,input,kv_cache,tp_size,latency(ns)" {
        return read_llmservingsim(path, &text, source);
    }
    let v: Value = serde_json::from_str(&text)
        .map_err(|_| InputError::file(path, format!("unknown measurement format; {EXPECTED}")))?;
    if v.get("experiment_type").is_some()
        && v.get("results")
            .and_then(|r| r.as_array())
            .is_some_and(|r| r.iter().all(|x| x.get("scenario").is_some()))
    {
        return read_interference(path, &v, source);
    }
    if v.get("results").and_then(|r| r.as_array()).is_some_and(|r| {
        !r.is_empty()
            && r.iter()
                .all(|x| x.get("t1_input").is_some() && x.get("turn2_metrics").is_some())
    }) {
        return read_lowqps(path, &v, source);
    }
    Err(InputError::file(
        path,
        format!("unknown measurement format; {EXPECTED}"),
    ))
}

fn read_llmservingsim(path: &Path, text: &str, source: usize) -> InputResult<FileSamples> {
    use std::collections::BTreeMap;
    const LAYER_OPS: [&str; 12] = [
        "input_layernorm",
        "q_proj",
        "k_proj",
        "v_proj",
        "rope",
        "attn",
        "o_proj",
        "post_layernorm",
        "gate_proj",
        "up_proj",
        "act_fn",
        "down_proj",
    ];
    const MODEL_OPS: [&str; 2] = ["embedding", "final_layernorm"];
    let mut by_n: BTreeMap<u32, BTreeMap<String, f64>> = BTreeMap::new();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let mut other_tp = 0usize;
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| InputError::line(path, i + 2, format!("bad CSV row: {e}")))?;
        let field = |k: usize, name: &str| {
            rec.get(k)
                .ok_or_else(|| InputError::line(path, i + 2, format!("missing column `{name}`")))
        };
        let num = |k: usize, name: &str| -> InputResult<f64> {
            field(k, name)?
                .trim()
                .parse::<f64>()
                .map_err(|_| InputError::line(path, i + 2, format!("column `{name}` is not a number")))
        };
        let layer = field(0, "layer_name")?.to_string();
        let n = num(1, "input")? as u32;
        let kv = num(2, "kv_cache")?;
        let tp = num(3, "tp_size")?;
        let ns = num(4, "latency(ns)")?;
        if tp != 1.0 {
            other_tp += 1;
            continue;
        }
        if kv != 0.0 {
            return Err(InputError::line(
                path,
                i + 2,
                "kv_cache != 0 rows are not supported (the profiler's v0 files have kv_cache = 0)",
            ));
        }
        by_n.entry(n).or_default().insert(layer, ns);
    }
    if by_n.is_empty() {
        return Err(InputError::file(
            path,
            format!("no tp_size = 1 rows ({other_tp} rows of other TP sizes); ppdsim calibrates one GPU per instance"),
        ));
    }
    let lm_head_1 = by_n.get(&1).and_then(|m| m.get("lm_head")).copied().ok_or_else(|| {
        InputError::file(
            path,
            "missing `lm_head` at input = 1 (needed: serving engines apply the LM head to the last token only)",
        )
    })?;
    let num_layers = crate::hardware::model("llama-3.1-8b").expect("built-in").num_layers as f64;
    let mut out = FileSamples {
        reader: "llmservingsim-layers",
        used_for: "prefill iterations (β0, β1, β2)".into(),
        ..Default::default()
    };
    for (&n, ops) in &by_n {
        let mut layer = 0.0;
        for op in LAYER_OPS {
            layer += ops
                .get(op)
                .copied()
                .ok_or_else(|| InputError::file(path, format!("input = {n}: missing op `{op}`")))?;
        }
        let mut model = lm_head_1;
        for op in MODEL_OPS {
            model += ops
                .get(op)
                .copied()
                .ok_or_else(|| InputError::file(path, format!("input = {n}: missing op `{op}`")))?;
        }
        let ms = (num_layers * layer + model) / 1e6;
        out.iterations.push(IterationSample {
            phase: Phase::Prefill,
            num_new_tokens: n,
            num_cached_tokens: 0,
            num_decode_seqs: 0,
            decode_context_tokens: 0.0,
            measured_ms: ms,
            source,
        });
    }
    Ok(out)
}

fn get_f64(path: &Path, v: &Value, key: &str, at: &str) -> InputResult<f64> {
    v.get(key)
        .and_then(|x| x.as_f64())
        .ok_or_else(|| InputError::key(path, &format!("{at}.{key}"), "missing or not a number"))
}

fn read_interference(path: &Path, v: &Value, source: usize) -> InputResult<FileSamples> {
    let dc = v
        .get("decode_config")
        .ok_or_else(|| InputError::key(path, "decode_config", "missing"))?;
    let d_ctx = get_f64(path, dc, "context", "decode_config")? + get_f64(path, dc, "new_input", "decode_config")?;
    let d_out = get_f64(path, dc, "output", "decode_config")?;
    let fp = v
        .get("full_prefill_config")
        .ok_or_else(|| InputError::key(path, "full_prefill_config", "missing"))?;
    let ap = v
        .get("append_prefill_config")
        .ok_or_else(|| InputError::key(path, "append_prefill_config", "missing"))?;
    let mut out = FileSamples {
        reader: "vllm-ppd-interference",
        used_for: "decode iterations (β0, β3, β4); mixed trials kept for validation".into(),
        ..Default::default()
    };
    for (i, r) in v["results"].as_array().expect("checked").iter().enumerate() {
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
            let mean_ctx = d_ctx + (d_out - 1.0) / 2.0;
            out.iterations.push(IterationSample {
                phase: Phase::Decode,
                num_new_tokens: 0,
                num_cached_tokens: 0,
                num_decode_seqs: n,
                decode_context_tokens: n as f64 * mean_ctx,
                measured_ms: tpot,
                source,
            });
        } else if n == 0 && k == 1 {
            if !ok_prefill {
                out.num_dropped += 1;
                continue;
            }
            let Some(tpot) = r.get("prefill_tpot_ms").and_then(|x| x.as_f64()) else {
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
                num_new_tokens: 0,
                num_cached_tokens: 0,
                num_decode_seqs: 1,
                decode_context_tokens: ctx + (out_len - 1.0) / 2.0,
                measured_ms: tpot,
                source,
            });
        }
    }
    if out.iterations.is_empty() {
        return Err(InputError::file(
            path,
            "no decode-only or single-request trials found (expected `decoding_only*` scenarios)",
        ));
    }
    Ok(out)
}

fn read_lowqps(path: &Path, v: &Value, source: usize) -> InputResult<FileSamples> {
    let mut out = FileSamples {
        reader: "vllm-ppd-lowqps",
        used_for: "request overhead, PD handoff, KV link bandwidth (turn-2 p50 TTFT)".into(),
        ..Default::default()
    };
    for (i, r) in v["results"].as_array().expect("checked").iter().enumerate() {
        let at = format!("results[{i}]");
        let mode = r
            .get("mode")
            .and_then(|m| m.as_str())
            .ok_or_else(|| InputError::key(path, &format!("{at}.mode"), "missing"))?;
        let route = match mode {
            "pd" => RequestRoute::Split,
            "ppd" | "replication" => RequestRoute::Direct,
            other => {
                return Err(InputError::key(
                    path,
                    &format!("{at}.mode"),
                    format!("unknown mode `{other}` (expected pd, ppd, replication)"),
                ))
            }
        };
        let t2 = &r["turn2_metrics"];
        let success = r.get("success_count").and_then(|x| x.as_f64()).unwrap_or(0.0);
        let ttft = t2.get("p50_ttft").and_then(|x| x.as_f64()).unwrap_or(0.0);
        if success <= 0.0 || ttft <= 0.0 {
            out.num_dropped += 1;
            continue;
        }
        out.requests.push(RequestSample {
            route,
            t1_input: get_f64(path, r, "t1_input", &at)? as u32,
            t1_output: get_f64(path, r, "t1_output", &at)? as u32,
            t2_input: get_f64(path, r, "t2_input", &at)? as u32,
            measured_ttft_ms: ttft,
            label: format!(
                "{} {} qps={}",
                r.get("workload").and_then(|w| w.as_str()).unwrap_or("?"),
                mode,
                r.get("target_qps").and_then(|q| q.as_f64()).unwrap_or(0.0)
            ),
            source,
        });
    }
    Ok(out)
}

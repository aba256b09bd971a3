//! LLMServingSim per-layer profile (`profiler/v0/perf_models/<GPU>/<model>/tp<N>/layers.csv`).
//!
//! Columns `layer_name,input,kv_cache,tp_size,latency(ns)`. For each token count N the forward pass
//! is `num_layers × Σ(12 per-layer ops) + embedding + final_layernorm + lm_head(N = 1)` [ns → ms]:
//! serving engines apply the LM head to each sequence's last token only, so the profile's
//! `lm_head(N)` is replaced by `lm_head(1)`. Only rows with `tp_size` equal to the calibrated TP
//! are used; `kv_cache` must be 0 (the v0 profiler measures no cached context). Each N gives one
//! prefill [`IterationSample`] of N new tokens.

use super::{col_f64, col_str, csv_rows, prefill_batch, FileSamples, IterationSample, Phase, ReadOptions};
use crate::cost_model::PrefillPart;
use crate::error::{InputError, InputResult};
use std::collections::BTreeMap;
use std::path::Path;

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

/// Reads the profile.
///
/// # Errors
/// Missing columns or ops, non-numeric cells, `kv_cache ≠ 0`, no rows at the calibrated TP.
pub fn read(path: &Path, text: &str, opts: &ReadOptions) -> InputResult<FileSamples> {
    let (header, rows) = csv_rows(path, text)?;
    let mut by_n: BTreeMap<u32, BTreeMap<String, f64>> = BTreeMap::new();
    let mut other_tp = 0usize;
    for row in &rows {
        let layer = col_str(path, &header, row, "layer_name")?.to_string();
        let n = col_f64(path, &header, row, "input")? as u32;
        let kv = col_f64(path, &header, row, "kv_cache")?;
        let tp = col_f64(path, &header, row, "tp_size")? as u32;
        let ns = col_f64(path, &header, row, "latency(ns)")?;
        if tp != opts.tp {
            other_tp += 1;
            continue;
        }
        if kv != 0.0 {
            return Err(InputError::line(
                path,
                row.0,
                "kv_cache != 0 rows are not supported (the v0 profiler writes kv_cache = 0)",
            ));
        }
        by_n.entry(n).or_default().insert(layer, ns);
    }
    if by_n.is_empty() {
        return Err(InputError::file(
            path,
            format!(
                "no tp_size = {} rows ({other_tp} rows of other TP sizes); pass --tp to match",
                opts.tp
            ),
        ));
    }
    let lm_head_1 = by_n.get(&1).and_then(|m| m.get("lm_head")).copied().ok_or_else(|| {
        InputError::file(
            path,
            "missing `lm_head` at input = 1 (engines apply the LM head to the last token only)",
        )
    })?;
    let mut out = FileSamples {
        reader: "llmservingsim-layers",
        group: "llmservingsim".into(),
        kernel_only: true,
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
        out.iterations.push(IterationSample {
            phase: Phase::Prefill,
            batch: prefill_batch(vec![PrefillPart {
                num_new_tokens: n,
                num_cached_tokens: 0,
            }]),
            measured_ms: (opts.model.num_layers as f64 * layer + model) / 1e6,
            label: format!("llmservingsim prefill N={n}"),
        });
    }
    Ok(out)
}

//! Vidur's profiling tables (`microsoft/vidur` `data/profiling/compute/<gpu>/<model>/`), composed
//! into forward passes of the model they profile.
//!
//! Files (each read on its own, composed once both are present):
//! * `mlp.csv` — per-layer op times \[ms, one layer, one GPU\] at `num_tokens` tokens in the batch,
//!   for TP degree `num_tensor_parallel_workers`; attention kernels are no-ops in it. A layer is
//!   `input_layernorm + attn_pre_proj + attn_rope + attn_post_proj + post_attention_layernorm +
//!   mlp_up_proj + mlp_act + mlp_down_proj + 2 × add` (two residual adds, as Vidur's
//!   `ExecutionTime` counts), medians; `emb` is counted once per forward pass.
//! * `attention.csv` (Vidur's layout: `batch_size, prefill_chunk_size, kv_cache_size, is_prefill,
//!   time_stats.attn_prefill.median, time_stats.attn_decode.median`, one layer) — prefill rows
//!   (`kv_cache_size` = the chunk's prefix + the chunk) and decode rows (`batch_size` sequences
//!   of `kv_cache_size` context each).
//!
//! A prefill of `m` tokens (batch 1) is `layers × (layer(m) + attn_prefill(m on 0 cached)) +
//! emb(m)`; a decode step of `b` sequences of `c` context is `layers × (layer(b) +
//! attn_decode(b, c)) + emb(b)`. Points between grid values are interpolated linearly in log
//! tokens / log batch / log context. Kernel times only (no scheduler or sampling), so the group
//! gets its own intercept in a combined fit. The files state the model shape (`n_embd`, `n_head`,
//! `n_kv_head`, and `n_expanded_embd` in `mlp.csv`); a shape other than the calibrated model's is
//! refused.

use super::{
    col_f64, col_str, csv_rows, decode_batch, prefill_batch, FileSamples, Format, IterationSample, KernelTable, Phase,
};
use crate::cost_model::PrefillPart;
use crate::error::{InputError, InputResult};
use crate::hardware::ModelSpec;
use std::path::Path;

/// Per-layer ops of `mlp.csv` summed into a layer (the `add` op twice).
const LAYER_OPS: [(&str, f64); 9] = [
    ("input_layernorm", 1.0),
    ("attn_pre_proj", 1.0),
    ("attn_rope", 1.0),
    ("attn_post_proj", 1.0),
    ("post_attention_layernorm", 1.0),
    ("mlp_up_proj", 1.0),
    ("mlp_act", 1.0),
    ("mlp_down_proj", 1.0),
    ("add", 2.0),
];

/// One row of Vidur's `mlp.csv`, reduced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MlpRow {
    /// TP degree.
    pub tp: f64,
    /// Tokens in the batch \[tokens\].
    pub num_tokens: f64,
    /// One layer without attention \[ms\].
    pub layer_ms: f64,
    /// Token embedding \[ms\].
    pub emb_ms: f64,
}

/// One row of Vidur's `attention.csv`, reduced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionRow {
    /// TP degree.
    pub tp: f64,
    /// Sequences (decode rows; 1 for prefill rows).
    pub batch: f64,
    /// New tokens of a prefill chunk (0 for decode rows) \[tokens\].
    pub chunk: f64,
    /// Tokens attended to, the current chunk or token included \[tokens\].
    pub kv: f64,
    /// Prefill (true) or decode row.
    pub prefill: bool,
    /// One layer's attention \[ms\].
    pub ms: f64,
}

/// Reads one table and checks its model shape against `model`.
///
/// # Errors
/// Missing columns, non-numeric cells, empty tables, a profiled shape other than `model`'s.
pub fn read(path: &Path, text: &str, fmt: Format, model: &ModelSpec) -> InputResult<FileSamples> {
    let (header, rows) = csv_rows(path, text)?;
    let Some(first) = rows.first() else {
        return Err(InputError::file(path, "table has no rows"));
    };
    let mut shape = vec![
        ("n_embd", model.hidden_size),
        ("n_head", model.num_attention_heads),
        ("n_kv_head", model.num_kv_heads),
    ];
    let short_head = col_str(path, &header, first, "n_q_head").is_ok();
    if short_head {
        shape[1].0 = "n_q_head";
    }
    if fmt == Format::VidurMlp {
        shape.push(("n_expanded_embd", model.ffn_size));
    }
    for (col, want) in &shape {
        let got = col_f64(path, &header, first, col)?;
        if got != *want as f64 {
            return Err(InputError::line(
                path,
                first.0,
                format!(
                    "profiles a model with {col} = {got}, but {} has {want}; calibrate with the --model this table was profiled for",
                    model.name
                ),
            ));
        }
    }
    let kernel = if fmt == Format::VidurMlp {
        let mut v = Vec::with_capacity(rows.len());
        for r in &rows {
            let med = |op: &str| col_f64(path, &header, r, &format!("time_stats.{op}.median"));
            let mut layer = 0.0;
            for (op, times) in LAYER_OPS {
                layer += times * med(op)?;
            }
            v.push(MlpRow {
                tp: col_f64(path, &header, r, "num_tensor_parallel_workers")?,
                num_tokens: col_f64(path, &header, r, "num_tokens")?,
                layer_ms: layer,
                emb_ms: med("emb")?,
            });
        }
        KernelTable::VidurMlp(v)
    } else {
        let mut v = Vec::with_capacity(rows.len());
        for r in &rows {
            let prefill = match col_str(path, &header, r, "is_prefill")? {
                "True" | "true" | "1" => true,
                "False" | "false" | "0" => false,
                other => {
                    return Err(InputError::line(
                        path,
                        r.0,
                        format!("is_prefill `{other}` is not True or False"),
                    ))
                }
            };
            let col = if prefill {
                "time_stats.attn_prefill.median"
            } else {
                "time_stats.attn_decode.median"
            };
            v.push(AttentionRow {
                tp: col_f64(path, &header, r, "num_tensor_parallel_workers")?,
                batch: col_f64(path, &header, r, "batch_size")?,
                chunk: col_f64(path, &header, r, "prefill_chunk_size")?,
                kv: col_f64(path, &header, r, "kv_cache_size")?,
                prefill,
                ms: col_f64(path, &header, r, col)?,
            });
        }
        KernelTable::VidurAttention(v)
    };
    Ok(FileSamples {
        reader: "vidur",
        group: "vidur".into(),
        kernel_only: true,
        model: Some(model.name.clone()),
        kernel: Some(kernel),
        used_for: "Vidur profile, composed into forward passes with the group's other Vidur table".into(),
        ..Default::default()
    })
}

/// [`super::interp_log`] of unsorted `(x, y)` points (sorted here, the first of equal x kept),
/// clamped to the ends; NaN when empty.
fn interp_log(mut pts: Vec<(f64, f64)>, x: f64) -> f64 {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts.dedup_by(|a, b| a.0 == b.0);
    super::interp_log(&pts, x, super::AboveGrid::Clamp)
}

/// Composes forward passes of `model` at TP degree `tp` from the group's Vidur tables (both are
/// needed; with one missing, nothing is composed).
pub fn compose(tables: &[&KernelTable], model: &ModelSpec, tp: u32) -> Vec<IterationSample> {
    let tp = tp as f64;
    let mut mlp: Vec<MlpRow> = Vec::new();
    let mut attn: Vec<AttentionRow> = Vec::new();
    for t in tables {
        match t {
            KernelTable::VidurMlp(v) => mlp.extend(v.iter().filter(|r| r.tp == tp)),
            KernelTable::VidurAttention(v) => attn.extend(v.iter().filter(|r| r.tp == tp)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if mlp.is_empty() || attn.is_empty() {
        return out;
    }
    let layers = model.num_layers as f64;
    let dense = |n: f64| {
        let layer = interp_log(mlp.iter().map(|r| (r.num_tokens, r.layer_ms)).collect(), n);
        let emb = interp_log(mlp.iter().map(|r| (r.num_tokens, r.emb_ms)).collect(), n);
        (layer, emb)
    };
    let max_tokens = mlp.iter().map(|r| r.num_tokens).fold(0.0, f64::max);
    // Prefill of m tokens on nothing cached: the prefill rows whose chunk is the whole context.
    let fresh: Vec<(f64, f64)> = attn
        .iter()
        .filter(|r| r.prefill && r.kv == r.chunk)
        .map(|r| (r.chunk, r.ms))
        .collect();
    if !fresh.is_empty() {
        for m in [
            1u32, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
        ] {
            let mf = m as f64;
            if mf > max_tokens {
                break;
            }
            let (layer, emb) = dense(mf);
            out.push(IterationSample {
                phase: Phase::Prefill,
                batch: prefill_batch(vec![PrefillPart {
                    num_new_tokens: m,
                    num_cached_tokens: 0,
                }]),
                measured_ms: layers * (layer + interp_log(fresh.clone(), mf)) + emb,
                label: format!("vidur prefill N={m}"),
            });
        }
    }
    let decode: Vec<&AttentionRow> = attn.iter().filter(|r| !r.prefill).collect();
    if !decode.is_empty() {
        let mut batches: Vec<f64> = decode.iter().map(|r| r.batch).collect();
        batches.sort_by(f64::total_cmp);
        batches.dedup();
        let max_kv = decode.iter().map(|r| r.kv).fold(0.0, f64::max);
        for b in [1u32, 2, 4, 8, 16, 32, 64, 128, 256] {
            let bf = b as f64;
            if bf > max_tokens || bf > *batches.last().expect("non-empty") {
                break;
            }
            for c in [128u64, 512, 1024, 2048, 4096] {
                if c as f64 > max_kv {
                    break;
                }
                let at_batch = |bb: f64| {
                    interp_log(
                        decode.iter().filter(|r| r.batch == bb).map(|r| (r.kv, r.ms)).collect(),
                        c as f64,
                    )
                };
                let a = interp_log(batches.iter().map(|&bb| (bb, at_batch(bb))).collect(), bf);
                let (layer, emb) = dense(bf);
                out.push(IterationSample {
                    phase: Phase::Decode,
                    batch: decode_batch(b, b as u64 * c),
                    measured_ms: layers * (layer + a) + emb,
                    label: format!("vidur decode batch={b} ctx={c}"),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composition_adds_layers_attention_and_one_embedding() {
        let model = crate::hardware::model("llama-2-7b").unwrap();
        let mlp = KernelTable::VidurMlp(vec![
            MlpRow {
                tp: 1.0,
                num_tokens: 1.0,
                layer_ms: 0.1,
                emb_ms: 0.01,
            },
            MlpRow {
                tp: 1.0,
                num_tokens: 4.0,
                layer_ms: 0.3,
                emb_ms: 0.03,
            },
            // Another TP degree: ignored at tp = 1.
            MlpRow {
                tp: 2.0,
                num_tokens: 1.0,
                layer_ms: 9.0,
                emb_ms: 9.0,
            },
        ]);
        let row = |prefill: bool, batch: f64, chunk: f64, kv: f64, ms: f64| AttentionRow {
            tp: 1.0,
            batch,
            chunk,
            kv,
            prefill,
            ms,
        };
        let attn = KernelTable::VidurAttention(vec![
            row(true, 1.0, 1.0, 1.0, 0.02),
            row(true, 1.0, 4.0, 4.0, 0.05),
            // A chunk on a cached prefix is not a fresh prefill.
            row(true, 1.0, 1.0, 4.0, 7.0),
            row(false, 1.0, 0.0, 128.0, 0.004),
            row(false, 2.0, 0.0, 128.0, 0.006),
        ]);
        let s = compose(&[&mlp, &attn], model, 1);
        let ms = |label: &str| s.iter().find(|x| x.label == label).unwrap().measured_ms;
        // 32 layers × (0.1 + 0.02) + 0.01.
        assert!((ms("vidur prefill N=1") - (32.0 * 0.12 + 0.01)).abs() < 1e-12);
        // m = 2 lies halfway in log between 1 and 4: layer 0.2, emb 0.02, attention 0.035.
        assert!((ms("vidur prefill N=2") - (32.0 * (0.2 + 0.035) + 0.02)).abs() < 1e-12);
        assert!(
            !s.iter().any(|x| x.label == "vidur prefill N=8"),
            "beyond the profiled tokens"
        );
        // Decode: batch 2 at 128 context.
        assert!((ms("vidur decode batch=2 ctx=128") - (32.0 * (0.2 + 0.006) + 0.02)).abs() < 1e-12);
        assert_eq!(s.iter().filter(|x| x.phase == Phase::Decode).count(), 2);
        // Without the attention table nothing is composed.
        assert!(compose(&[&mlp], model, 1).is_empty());
    }
}

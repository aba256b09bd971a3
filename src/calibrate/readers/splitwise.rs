//! SplitwiseSim `data/perf_model.csv` (DGX-A100 / DGX-H100 profiles).
//!
//! Columns used: `model`, `hardware`, `tensor_parallel` (filters), `prompt_size`, `batch_size`,
//! `token_size`, `prompt_time` [ms, prefill of the whole batch], `token_time` [ms per decode
//! iteration]. Rows are kept when `model`, `hardware` and `tensor_parallel` match the calibration's
//! model, GPU and `--tp` (`llama2-70b` ↔ `llama-2-70b`, `h100-80gb` ↔ `h100-sxm`, `a100-80gb` ↔
//! `a100-sxm-80gb`; the power-capped `h100-80gb-pcap` matches nothing). Each row gives a prefill
//! iteration of `batch_size` prompts of `prompt_size` tokens and a decode iteration of
//! `batch_size` sequences at mean context `prompt_size + token_size/2`.

use super::{
    col_f64, col_str, csv_rows, decode_batch, prefill_batch, FileSamples, IterationSample, Phase, ReadOptions,
};
use crate::cost_model::PrefillPart;
use crate::error::{InputError, InputResult};
use std::collections::BTreeSet;
use std::path::Path;

fn model_of(s: &str) -> Option<&'static str> {
    match s {
        "llama2-70b" => Some("llama-2-70b"),
        "bloom-176b" => Some("bloom-176b"),
        _ => None,
    }
}

fn gpu_of(s: &str) -> Option<&'static str> {
    match s {
        "h100-80gb" => Some("h100-sxm"),
        "a100-80gb" => Some("a100-sxm-80gb"),
        _ => None,
    }
}

/// Reads the rows matching the calibration's model, GPU and TP.
///
/// # Errors
/// Missing columns, non-numeric cells, or no matching rows (the message lists what the file has).
pub fn read(path: &Path, text: &str, opts: &ReadOptions) -> InputResult<FileSamples> {
    let (header, rows) = csv_rows(path, text)?;
    let mut out = FileSamples {
        reader: "splitwise",
        group: "splitwise".into(),
        model: Some(opts.model.name.clone()),
        gpu: Some(opts.gpu.clone()),
        used_for: "prefill and decode iterations".into(),
        ..Default::default()
    };
    let mut available = BTreeSet::new();
    for row in &rows {
        let model = col_str(path, &header, row, "model")?;
        let hw = col_str(path, &header, row, "hardware")?;
        let tp = col_f64(path, &header, row, "tensor_parallel")? as u32;
        available.insert(format!("{model}/{hw}/tp{tp}"));
        if model_of(model) != Some(opts.model.name.as_str()) || gpu_of(hw) != Some(opts.gpu.as_str()) || tp != opts.tp {
            continue;
        }
        let p = col_f64(path, &header, row, "prompt_size")? as u32;
        let b = col_f64(path, &header, row, "batch_size")? as u32;
        let t = col_f64(path, &header, row, "token_size")?;
        let prompt_ms = col_f64(path, &header, row, "prompt_time")?;
        let token_ms = col_f64(path, &header, row, "token_time")?;
        if prompt_ms <= 0.0 || token_ms <= 0.0 {
            out.num_dropped += 1;
            continue;
        }
        out.iterations.push(IterationSample {
            phase: Phase::Prefill,
            batch: prefill_batch(vec![
                PrefillPart {
                    num_new_tokens: p,
                    num_cached_tokens: 0
                };
                b as usize
            ]),
            measured_ms: prompt_ms,
            label: format!("splitwise prefill {b}x{p}"),
        });
        out.iterations.push(IterationSample {
            phase: Phase::Decode,
            batch: decode_batch(b, (b as f64 * (p as f64 + t / 2.0)).round() as u64),
            measured_ms: token_ms,
            label: format!("splitwise decode batch={b} ctx={:.0}", p as f64 + t / 2.0),
        });
    }
    if out.iterations.is_empty() {
        return Err(InputError::file(
            path,
            format!(
                "no rows for model `{}` on `{}` at TP {}; the file has {} (pass --model, --gpu and --tp to match)",
                opts.model.name,
                opts.gpu,
                opts.tp,
                available.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(out)
}

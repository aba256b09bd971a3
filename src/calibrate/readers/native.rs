//! ppdsim's native measurement schema: JSON lines, one sample per line.
//!
//! ```json
//! {"kind":"prefill","num_new_tokens":1024,"batch_size":1,"latency_ms":31.2,"model":"llama-3.1-8b","hardware":"h100-sxm","engine":"vLLM 0.13","source":"my lab"}
//! {"kind":"append_prefill","num_new_tokens":128,"num_cached_tokens":2048,"latency_ms":12.0, ...}
//! {"kind":"decode_step","batch_size":64,"context_tokens":2048,"latency_ms":17.4, ...}
//! {"kind":"kv_transfer","bytes":134217728,"latency_ms":1.1, ...}
//! ```
//!
//! * `latency_ms` \[ms\]: the time of one forward pass (prefill, append-prefill, decode step) of
//!   the given batch, or of one KV transfer. Not a TTFT: request-level timings include fixed
//!   overheads and belong in a request format.
//! * `prefill` / `append_prefill`: `num_new_tokens` per sequence, `num_cached_tokens` (default 0)
//!   per sequence, `batch_size` sequences (default 1).
//! * `decode_step`: `batch_size` sequences with mean `context_tokens` each.
//! * `kv_transfer`: `bytes`; optional `tokens` adds a KV size statement.
//! * `model`, `hardware`, `engine`, `source` (strings) are optional provenance; `model` and
//!   `hardware` use spec-table names. Unknown keys are refused.

use super::{decode_batch, prefill_batch, FileSamples, IterationSample, KvStatement, Phase, TransferSample};
use crate::cost_model::PrefillPart;
use crate::error::{InputError, InputResult};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Prefill,
    AppendPrefill,
    DecodeStep,
    KvTransfer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Line {
    kind: Kind,
    num_new_tokens: Option<u32>,
    num_cached_tokens: Option<u32>,
    batch_size: Option<u32>,
    context_tokens: Option<u64>,
    bytes: Option<u64>,
    tokens: Option<u64>,
    latency_ms: f64,
    model: Option<String>,
    hardware: Option<String>,
    engine: Option<String>,
    source: Option<String>,
}

/// Reads native JSON lines.
///
/// # Errors
/// A line that is not one of the four kinds, has unknown keys, lacks a field its kind needs, or
/// has a non-positive latency.
pub fn read(path: &Path, text: &str) -> InputResult<FileSamples> {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = FileSamples {
        reader: "native",
        group: format!("native:{name}"),
        used_for: "iterations / transfers as stated per line".into(),
        ..Default::default()
    };
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(l).map_err(|e| {
            InputError::line(path, i + 1, format!("not a native measurement ({e}); expected kind = prefill | append_prefill | decode_step | kv_transfer with latency_ms"))
        })?;
        let lat = line.latency_ms;
        if !(lat > 0.0 && lat.is_finite()) {
            return Err(InputError::line(path, i + 1, "latency_ms must be > 0"));
        }
        let iteration = line.kind != Kind::KvTransfer;
        if out.model.is_none() && out.iterations.is_empty() && (iteration || out.num_samples() == 0) {
            out.model = line.model.clone();
            out.gpu = line.hardware.clone();
        } else if iteration
            && (line.model.is_some() && line.model != out.model || line.hardware.is_some() && line.hardware != out.gpu)
        {
            // One model and GPU per file: a file's samples form one group, fitted together.
            return Err(InputError::line(
                path,
                i + 1,
                format!(
                    "model/hardware {}/{} differs from the earlier iteration lines' {}/{}: put iteration measurements of each model and GPU in their own file (KV-transfer lines may name another)",
                    line.model.as_deref().unwrap_or("?"),
                    line.hardware.as_deref().unwrap_or("?"),
                    out.model.as_deref().unwrap_or("(none)"),
                    out.gpu.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        if line.batch_size == Some(0) {
            return Err(InputError::line(path, i + 1, "batch_size must be >= 1"));
        }
        let need = |v: Option<u64>, key: &str| {
            v.ok_or_else(|| InputError::line(path, i + 1, format!("missing `{key}` for this kind")))
        };
        let label = format!("native line {}", i + 1);
        match line.kind {
            Kind::Prefill | Kind::AppendPrefill => {
                let m = need(line.num_new_tokens.map(u64::from), "num_new_tokens")? as u32;
                let c = if line.kind == Kind::AppendPrefill {
                    need(line.num_cached_tokens.map(u64::from), "num_cached_tokens")? as u32
                } else {
                    0
                };
                let b = line.batch_size.unwrap_or(1);
                out.iterations.push(IterationSample {
                    phase: Phase::Prefill,
                    batch: prefill_batch(vec![
                        PrefillPart {
                            num_new_tokens: m,
                            num_cached_tokens: c
                        };
                        b as usize
                    ]),
                    measured_ms: lat,
                    label,
                });
            }
            Kind::DecodeStep => {
                let b = need(line.batch_size.map(u64::from), "batch_size")? as u32;
                let c = need(line.context_tokens, "context_tokens")?;
                out.iterations.push(IterationSample {
                    phase: Phase::Decode,
                    batch: decode_batch(b, b as u64 * c),
                    measured_ms: lat,
                    label,
                });
            }
            Kind::KvTransfer => {
                let bytes = need(line.bytes, "bytes")?;
                out.transfers.push(TransferSample {
                    bytes,
                    measured_ms: lat,
                    label: label.clone(),
                });
                if let Some(t) = line.tokens {
                    out.kv_statements.push(KvStatement {
                        tokens: t,
                        bytes,
                        tp: 1,
                        label,
                    });
                }
            }
        }
    }
    if out.num_samples() == 0 {
        return Err(InputError::file(path, "no measurements"));
    }
    Ok(out)
}

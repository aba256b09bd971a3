//! Readers of real measurement files, chosen by content (or forced with `--format`).
//!
//! Every reader turns a file into samples of four kinds, says what each file was used for, and
//! counts what it dropped (failed runs, `success_rate == 0`):
//!
//! * [`IterationSample`] — the time of one forward pass of a known batch (profiled kernels or
//!   layers, decode TPOTs): fits the iteration model's coefficients;
//! * [`RequestSample`] — the TTFT of one request measured alone (low load), whose path of
//!   iterations is known: fits fixed overheads (and the link, for split routes);
//! * [`TransferSample`] — a measured KV transfer (bytes, ms): fits a link;
//! * [`KvStatement`] — a file's claim of how many KV bytes some tokens take: checked against the
//!   model's architecture.
//!
//! Loaded points (queueing, client limits) are **validation data, never fitting samples**: their
//! readers count them and fit nothing.
//!
//! | format (`--format`) | recognised by | module |
//! |---|---|---|
//! | `llmservingsim-layers` | CSV header `layer_name,input,kv_cache,tp_size,latency(ns)` | [`llmservingsim`] |
//! | `aiconfigurator-gemm`, `aiconfigurator-context-attention`, `aiconfigurator-generation-attention` | CSV headers `m,n,k,latency_ms` / `batch_size,isl,step,latency_ms` | [`aiconfigurator`] |
//! | `splitwise` | CSV header starting `model,hardware,prompt_size,batch_size,token_size` | [`splitwise`] |
//! | `kv-transfer-table` | CSV header starting `source_table,engine,model,gpu,tp_per_instance` | [`kv_transfer`] |
//! | `ppd-framework` | JSON `{config, results:[{test_case:{context_length, append_length, cache_rate}, metrics:{..}}]}` (seed 000) | [`ppd_framework`] |
//! | `vllm-ppd-*` | the vllm-ppd artifact's JSON schemas | [`vllm_ppd`] |
//! | `native` | JSON lines with `kind` ∈ `prefill`, `append_prefill`, `decode_step`, `kv_transfer` | [`native`] |

pub mod aiconfigurator;
pub mod kv_transfer;
pub mod llmservingsim;
pub mod native;
pub mod ppd_framework;
pub mod splitwise;
pub mod vidur;
pub mod vllm_ppd;

use crate::cost_model::{BatchShape, PrefillPart};
use crate::error::{InputError, InputResult};
use crate::hardware::ModelSpec;
use clap::ValueEnum;
use serde_json::Value;
use std::path::Path;

/// Phase of an iteration sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// One measured iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct IterationSample {
    /// Phase.
    pub phase: Phase,
    /// The batch.
    pub batch: BatchShape,
    /// Measured time \[ms\].
    pub measured_ms: f64,
    /// Short description for reports.
    pub label: String,
}

/// Route of a request sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestRoute {
    /// P → KV transfer → D.
    Split,
    /// Straight to the instance holding the context (or a single instance).
    Direct,
}

/// A request measured alone: TTFT = fixed overheads + the iterations on its path (+ transfer).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSample {
    /// Route.
    pub route: RequestRoute,
    /// Iterations before the first token, each one prefill part (P's then D's for split routes).
    pub steps: Vec<PrefillPart>,
    /// Tokens whose KV is transferred (split routes).
    pub kv_tokens: u32,
    /// Measured TTFT \[ms\].
    pub measured_ttft_ms: f64,
    /// Short description for reports.
    pub label: String,
}

/// A measured KV transfer.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferSample {
    /// Bytes moved \[B\].
    pub bytes: u64,
    /// Transfer time \[ms\].
    pub measured_ms: f64,
    /// Short description for reports.
    pub label: String,
}

/// A file's statement of KV size.
#[derive(Clone, Debug, PartialEq)]
pub struct KvStatement {
    /// Tokens.
    pub tokens: u64,
    /// Stated bytes for those tokens (whole instance, all TP ranks) \[B\].
    pub bytes: u64,
    /// Tensor-parallel degree of the instance (KV heads are replicated when TP > KV heads).
    pub tp: u32,
    /// Where it was stated.
    pub label: String,
}

/// One kernel table (AIConfigurator or Vidur), composed into forward passes once all of its group
/// are read.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelTable {
    /// `(m, n, k, ms)` GEMM timings.
    Gemm(Vec<(f64, f64, f64, f64)>),
    /// `(batch, isl, ms)` prefill attention per layer.
    ContextAttention(Vec<(f64, f64, f64)>),
    /// `(batch, context, ms)` decode attention per layer (context = isl + step).
    GenerationAttention(Vec<(f64, f64, f64)>),
    /// Vidur `mlp.csv`: per-layer dense ops by token count.
    VidurMlp(Vec<vidur::MlpRow>),
    /// Vidur `attention.csv`: per-layer prefill and decode attention.
    VidurAttention(Vec<vidur::AttentionRow>),
}

/// What one file gave.
#[derive(Clone, Debug, Default)]
pub struct FileSamples {
    /// Reader name.
    pub reader: &'static str,
    /// Group for per-source fits (files of one origin share it).
    pub group: String,
    /// Model the file states, as a spec-table name, when it states one.
    pub model: Option<String>,
    /// GPU the file states, as a spec-table name, when it states one.
    pub gpu: Option<String>,
    /// Iteration samples.
    pub iterations: Vec<IterationSample>,
    /// Request samples.
    pub requests: Vec<RequestSample>,
    /// Transfer samples.
    pub transfers: Vec<TransferSample>,
    /// KV size statements.
    pub kv_statements: Vec<KvStatement>,
    /// Burst ramps: `(requests sent at once, their mean TTFT \[ms\])` on one instance.
    pub ramps: Vec<(f64, f64)>,
    /// Kernel table (AIConfigurator).
    pub kernel: Option<KernelTable>,
    /// True when iteration samples are layer or kernel sums (no engine overhead per iteration):
    /// in the combined fit such a group gets its own intercept instead of sharing β0.
    pub kernel_only: bool,
    /// Loaded measured points (vllm-ppd comprehensive sweep JSON) that the overheads' replay fit
    /// simulates ([`crate::calibrate::replay`]).
    pub loaded_points: Vec<Value>,
    /// Low-QPS points (vllm-ppd v3 and 2-GPU files) that the overheads' replay fit simulates next
    /// to the loaded points.
    pub lowqps_points: Vec<crate::validate::LowQpsPoint>,
    /// Points kept as validation data (not fitted).
    pub num_validation: usize,
    /// Dropped entries (failures).
    pub num_dropped: usize,
    /// What the samples are used for.
    pub used_for: String,
}

impl FileSamples {
    /// Samples that enter a fit.
    pub fn num_samples(&self) -> usize {
        self.iterations.len() + self.requests.len() + self.transfers.len()
    }
}

/// Options readers need.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The model being calibrated (layer count for per-layer profiles, shapes for kernel tables).
    pub model: ModelSpec,
    /// The GPU being calibrated (spec name).
    pub gpu: String,
    /// Tensor-parallel degree of one instance.
    pub tp: u32,
    /// KV block size of the engine that produced request samples \[tokens\].
    pub block_size: u32,
    /// Per-token chance that a resent answer re-tokenises differently, which ends the next turn's
    /// prefix-cache hit there (see [`crate::sim::instance::EngineLimits::answer_mismatch_per_token`]): a
    /// direct turn-2 request sample recomputes the answer's unmatched tail.
    pub answer_mismatch_per_token: f64,
}

/// Formats `--format` can force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Detect from content.
    Auto,
    /// LLMServingSim per-layer profile CSV.
    LlmservingsimLayers,
    /// AIConfigurator GEMM table.
    AiconfiguratorGemm,
    /// AIConfigurator context (prefill) attention table.
    AiconfiguratorContextAttention,
    /// AIConfigurator generation (decode) attention table.
    AiconfiguratorGenerationAttention,
    /// SplitwiseSim perf_model.csv.
    Splitwise,
    /// Vidur compute profile `mlp.csv` (per-layer dense ops).
    VidurMlp,
    /// Vidur attention profile (`attention.csv` layout).
    VidurAttention,
    /// KV-transfer measurement table (Mooncake docs).
    KvTransferTable,
    /// Seed 000's P-PD framework result JSON.
    PpdFramework,
    /// vllm-ppd interference/sensitivity experiment.
    VllmPpdInterference,
    /// vllm-ppd v3 (4-GPU) low-QPS benchmark.
    VllmPpdLowqpsV3,
    /// vllm-ppd 2-GPU low-QPS benchmark.
    VllmPpdLowqps2gpu,
    /// vllm-ppd comprehensive sweep point (validation only).
    VllmPpdComprehensive,
    /// vllm-ppd bandwidth test (`bandwidth_results.json`).
    VllmPpdBandwidth,
    /// vllm-ppd 5-turn PD test (`multi_turn_results.json`, validation only).
    VllmPpdMultiTurn,
    /// vllm-ppd single-stream benchmark (validation only).
    VllmPpdSingleStream,
    /// Native measurement JSON lines.
    Native,
}

/// Expected formats, for error messages.
pub const EXPECTED: &str = "expected one of: LLMServingSim layers CSV (`layer_name,input,kv_cache,tp_size,latency(ns)`); \
AIConfigurator tables (`m,n,k,latency_ms` or `batch_size,isl,step,latency_ms`); SplitwiseSim perf_model.csv; \
Vidur profiles (`mlp.csv` with `time_stats.<op>.median` columns, or `attention.csv`); \
a KV-transfer table (`source_table,engine,model,gpu,...`); seed-000 P-PD framework JSON (`results[].test_case`); \
a vllm-ppd result JSON; native JSON lines (`{\"kind\":\"prefill\"|\"append_prefill\"|\"decode_step\"|\"kv_transfer\",...}`)";

pub use crate::input::read_text;

/// Detects the format of `text`.
pub fn detect(text: &str) -> Option<Format> {
    detect_text(text).or_else(|| detect_json(&serde_json::from_str(text).ok()?))
}

/// Detects the formats recognisable from their first line (CSV tables, native JSON lines).
fn detect_text(text: &str) -> Option<Format> {
    let first = text.lines().next().unwrap_or("").trim().trim_start_matches('\u{feff}');
    match first {
        "layer_name,input,kv_cache,tp_size,latency(ns)" => return Some(Format::LlmservingsimLayers),
        "m,n,k,latency_ms" => return Some(Format::AiconfiguratorGemm),
        "batch_size,isl,step,latency_ms" => {
            // Context tables have step = 0 everywhere; generation tables step ≥ 1.
            let gen = text
                .lines()
                .skip(1)
                .filter_map(|l| l.split(',').nth(2))
                .any(|s| s.trim() != "0");
            return Some(if gen {
                Format::AiconfiguratorGenerationAttention
            } else {
                Format::AiconfiguratorContextAttention
            });
        }
        _ => {}
    }
    let cols: Vec<&str> = first.split(',').map(str::trim).collect();
    if cols.contains(&"num_tokens") && cols.contains(&"time_stats.mlp_up_proj.median") {
        return Some(Format::VidurMlp);
    }
    if cols.contains(&"kv_cache_size") && cols.contains(&"time_stats.attn_decode.median") {
        return Some(Format::VidurAttention);
    }
    if first.starts_with("model,hardware,prompt_size,batch_size,token_size") {
        return Some(Format::Splitwise);
    }
    if first.starts_with("source_table,engine,model,gpu,tp_per_instance") {
        return Some(Format::KvTransferTable);
    }
    (first.starts_with('{') && first.contains("\"kind\"") && !text.trim_start().starts_with("{\n"))
        .then_some(Format::Native)
}

/// Detects the JSON document formats.
fn detect_json(v: &Value) -> Option<Format> {
    vllm_ppd::detect(v).or_else(|| ppd_framework::detect(v).then_some(Format::PpdFramework))
}

/// Reads `path` with the reader its content (or `format`) calls for. Most files give one
/// [`FileSamples`]; a table holding several independent setups gives one per setup.
///
/// # Errors
/// Unknown formats and malformed files, naming the file, the field and what was expected.
pub fn read(path: &Path, format: Format, opts: &ReadOptions) -> InputResult<Vec<FileSamples>> {
    let text = read_text(path)?;
    let unknown = || InputError::file(path, format!("unknown measurement format; {EXPECTED}"));
    // A JSON document is parsed once, for detection and reading alike.
    let mut parsed: Option<Value> = None;
    let fmt = match (format, detect_text(&text)) {
        (Format::Auto, Some(f)) => f,
        (Format::Auto, None) => {
            let v: Value = serde_json::from_str(&text).map_err(|_| unknown())?;
            let f = detect_json(&v).ok_or_else(unknown)?;
            parsed = Some(v);
            f
        }
        (f, _) => f,
    };
    let mut json = || match parsed.take() {
        Some(v) => Ok(v),
        None => {
            serde_json::from_str::<Value>(&text).map_err(|e| InputError::file(path, format!("not valid JSON: {e}")))
        }
    };
    let one = match fmt {
        Format::Auto => unreachable!(),
        Format::KvTransferTable => return kv_transfer::read(path, &text),
        Format::LlmservingsimLayers => llmservingsim::read(path, &text, opts),
        Format::AiconfiguratorGemm
        | Format::AiconfiguratorContextAttention
        | Format::AiconfiguratorGenerationAttention => aiconfigurator::read(path, &text, fmt),
        Format::Splitwise => splitwise::read(path, &text, opts),
        Format::VidurMlp | Format::VidurAttention => vidur::read(path, &text, fmt, &opts.model),
        Format::PpdFramework => ppd_framework::read(path, &json()?, opts),
        Format::Native => native::read(path, &text),
        f => vllm_ppd::read(path, &json()?, f, opts),
    };
    let one = one?;
    check_samples(path, &one)?;
    Ok(vec![one])
}

/// Refuses samples no measurement can produce: a time that is not finite and > 0, an empty batch
/// or a prefill chunk of 0 tokens, a transfer of 0 bytes. The error names the file and the sample.
fn check_samples(path: &Path, f: &FileSamples) -> InputResult<()> {
    let bad = |label: &str, what: String| {
        Err(InputError::file(
            path,
            format!("sample `{label}`: {what}; fix or remove it (measurements are checked before fitting)"),
        ))
    };
    let positive = |v: f64| v.is_finite() && v > 0.0;
    for s in &f.iterations {
        if !positive(s.measured_ms) {
            return bad(
                &s.label,
                format!("measured time {} ms is not a duration > 0", s.measured_ms),
            );
        }
        if s.batch.is_empty() || s.batch.prefill.iter().any(|p| p.num_new_tokens == 0) {
            return bad(&s.label, "the batch is empty (batch size or new tokens of 0)".into());
        }
    }
    for s in &f.requests {
        if !positive(s.measured_ttft_ms) {
            return bad(
                &s.label,
                format!("measured TTFT {} ms is not a duration > 0", s.measured_ttft_ms),
            );
        }
        if s.steps.iter().any(|p| p.num_new_tokens == 0) {
            return bad(&s.label, "a request computes 0 new tokens".into());
        }
    }
    for s in &f.transfers {
        if !positive(s.measured_ms) || s.bytes == 0 {
            return bad(
                &s.label,
                format!(
                    "a transfer of {} B in {} ms is not a measurement (bytes and time must be > 0)",
                    s.bytes, s.measured_ms
                ),
            );
        }
    }
    Ok(())
}

/// A floating-point field of a JSON object.
pub(crate) fn get_f64(path: &Path, v: &Value, key: &str, at: &str) -> InputResult<f64> {
    v.get(key)
        .and_then(|x| x.as_f64())
        .ok_or_else(|| InputError::key(path, &format!("{at}.{key}"), "missing or not a number"))
}

/// Prefill-only batch of `parts`.
pub fn prefill_batch(parts: Vec<PrefillPart>) -> BatchShape {
    BatchShape {
        prefill: parts,
        num_decode_seqs: 0,
        decode_context_tokens: 0,
    }
}

/// Decode-only batch.
pub fn decode_batch(n: u32, context_tokens: u64) -> BatchShape {
    BatchShape {
        prefill: vec![],
        num_decode_seqs: n,
        decode_context_tokens: context_tokens,
    }
}

pub(crate) use crate::input::{col_f64, col_str, csv_rows};

/// What [`interp_log`] returns above the largest x of its points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AboveGrid {
    /// The last point's y.
    Clamp,
    /// The last point's y scaled by x / its x (work proportional to size).
    Proportional,
}

/// Piecewise-linear interpolation in log x of `points` (sorted by x, distinct x) at `x`: the first
/// point's y below the smallest x, `above` beyond the largest; NaN when there are no points.
pub(crate) fn interp_log(points: &[(f64, f64)], x: f64, above: AboveGrid) -> f64 {
    let (Some(&(x_first, y_first)), Some(&(x_last, y_last))) = (points.first(), points.last()) else {
        return f64::NAN;
    };
    if x <= x_first {
        return y_first;
    }
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            let t = (x.ln() - x0.ln()) / (x1.ln() - x0.ln());
            return y0 + t * (y1 - y0);
        }
    }
    match above {
        AboveGrid::Clamp => y_last,
        AboveGrid::Proportional => y_last * x / x_last,
    }
}

/// Maps a model name as written in a file (HF id or short name) to a spec-table name.
pub fn model_name_from(text: &str) -> Option<String> {
    let t = text.to_ascii_lowercase().replace("llama2", "llama-2");
    let t = t.rsplit('/').next().unwrap_or(&t).to_string();
    // The longest spec name that prefixes the stated name (so `llama-2-70b` never matches `llama-2-7b`).
    crate::hardware::models()
        .iter()
        .filter(|m| {
            let hf = m.hf_id.to_ascii_lowercase();
            let hf_short = hf.rsplit('/').next().unwrap_or(&hf).to_string();
            let boundary =
                |name: &str| t == name || (t.starts_with(name) && t[name.len()..].starts_with(['-', '_', '.']));
            boundary(&m.name) || boundary(&hf_short)
        })
        .max_by_key(|m| m.name.len())
        .map(|m| m.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_interpolation_clamps_below_and_clamps_or_scales_above() {
        // (1, 1) → (100, 5): at x = 10, halfway in log x → 3.
        let pts = [(1.0, 1.0), (100.0, 5.0)];
        for above in [AboveGrid::Clamp, AboveGrid::Proportional] {
            assert!((interp_log(&pts, 10.0, above) - 3.0).abs() < 1e-12);
            assert_eq!(interp_log(&pts, 0.5, above), 1.0);
        }
        assert_eq!(interp_log(&pts, 400.0, AboveGrid::Clamp), 5.0);
        assert_eq!(interp_log(&pts, 400.0, AboveGrid::Proportional), 20.0);
        assert!(interp_log(&[], 1.0, AboveGrid::Clamp).is_nan());
    }
}

//! Checks of a fitted model against measured **kernel tables**: NVIDIA AIConfigurator's H100-SXM
//! GEMM and FlashAttention-3 tables under vLLM 0.24 for Llama-3.1-8B shapes
//! (`aiconfigurator-core==0.12.0`, Apache-2.0; copied in `calibration/reference/aiconfigurator/`
//! and compiled in). They apply to `llama-3.1-8b` on `h100-sxm` only.
//!
//! Each check compares one physical part of the iteration model with the same part composed from
//! the tables and prints the implied ratio `model / kernels`; a ratio beyond 2× either way is a
//! failed check, with the likely cause:
//!
//! * **decode, per sequence**: `β3 + β4·1,024` against the tables' marginal cost of one more
//!   1,024-token sequence in a batch of 64, `(T(64) − T(1)) / 63` — the per-sequence engine cost
//!   must not absorb what the kernels do not show;
//! * **decode step** of 64 × 1,024 tokens, whole;
//! * **prefill attention** of a 16,384-token prompt: `β2 · m · m/2` against 32 layers of the FA3
//!   context-attention table (eager attention, which materialises the score matrix, is 10–20×).

use super::model_file::PhysicsCheck;
use super::readers::{aiconfigurator, Format, KernelTable, Phase};
use crate::cost_model::IterationCoefficients;
use crate::hardware::{GpuSpec, ModelSpec};
use std::path::Path;

const GEMM: &str = include_str!("../../calibration/reference/aiconfigurator/gemm_bf16_h100_sxm_vllm0.24.csv");
const CONTEXT: &str =
    include_str!("../../calibration/reference/aiconfigurator/context_attention_llama31_8b_heads_h100_sxm_vllm0.24.csv");
const GENERATION: &str = include_str!(
    "../../calibration/reference/aiconfigurator/generation_attention_llama31_8b_heads_h100_sxm_vllm0.24.csv"
);

/// A ratio outside `[1/LIMIT, LIMIT]` fails.
pub const RATIO_LIMIT: f64 = 2.0;

fn tables() -> Vec<KernelTable> {
    [
        (GEMM, Format::AiconfiguratorGemm),
        (CONTEXT, Format::AiconfiguratorContextAttention),
        (GENERATION, Format::AiconfiguratorGenerationAttention),
    ]
    .into_iter()
    .filter_map(|(text, fmt)| {
        aiconfigurator::read(Path::new("aiconfigurator reference"), text, fmt)
            .ok()
            .and_then(|f| f.kernel)
    })
    .collect()
}

fn check(name: &str, model_ms: f64, kernel_ms: f64, cause: &str) -> PhysicsCheck {
    let ratio = model_ms / kernel_ms;
    let ok = (1.0 / RATIO_LIMIT..=RATIO_LIMIT).contains(&ratio);
    PhysicsCheck {
        check: format!("{name} vs AIConfigurator kernel tables (H100, vLLM 0.24): model / kernels ≤ {RATIO_LIMIT}×"),
        implied: ratio,
        limit: RATIO_LIMIT,
        unit: "×".into(),
        ok,
        message: if ok {
            format!("{model_ms:.3} ms vs {kernel_ms:.3} ms ({ratio:.2}×)")
        } else {
            format!("{model_ms:.3} ms vs {kernel_ms:.3} ms ({ratio:.2}×): {cause}")
        },
    }
}

/// FlashAttention's measured prefill-attention cost per query–key pair for `model` on `gpu`
/// \[ms\] — `Some` only for the compiled-in tables' pair (Llama-3.1-8B on H100 SXM): `layers ×` the
/// FA3 context-attention table's batch-1 latencies from 1,024 to 16,384 tokens, fitted as
/// `a·m + β2·m²/2` by weighted least squares (relative errors; `fit::fit_weighted_floor`, both
/// terms ≥ 0); returns `(β2, a [ms/token], rows fitted)`. The linear part is the kernel's
/// per-token work, which the prefill's dense cost β1 already carries.
pub fn flash_attention_beta2(model: &ModelSpec, gpu: &GpuSpec) -> Option<(f64, f64, usize)> {
    if model.name != "llama-3.1-8b" || gpu.name != "h100-sxm" {
        return None;
    }
    let t = tables();
    let refs: Vec<&KernelTable> = t.iter().collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for m in [
        1024.0, 1536.0, 2048.0, 3072.0, 4096.0, 6144.0, 8192.0, 10240.0, 12288.0, 16384.0,
    ] {
        if let Some(ms) = aiconfigurator::context_attention_ms(&refs, model, m) {
            x.push(vec![m, m * m / 2.0]);
            y.push(ms);
        }
    }
    if x.len() < 3 {
        return None;
    }
    let w: Vec<f64> = y.iter().map(|v: &f64| 1.0 / v).collect();
    let f = crate::calibrate::fit::fit_weighted_floor(&x, &y, &w, &[0.0, 0.0]);
    Some((f.beta[1], f.beta[0], x.len()))
}

/// The kernel-table checks of `c` (empty for another model or GPU than the tables').
pub fn kernel_checks(c: &IterationCoefficients, model: &ModelSpec, gpu: &GpuSpec) -> Vec<PhysicsCheck> {
    if model.name != "llama-3.1-8b" || gpu.name != "h100-sxm" {
        return Vec::new();
    }
    let t = tables();
    let refs: Vec<&KernelTable> = t.iter().collect();
    let composed = aiconfigurator::compose(&refs, model);
    let decode = |b: u32| {
        composed
            .iter()
            .find(|s| {
                s.phase == Phase::Decode
                    && s.batch.num_decode_seqs == b
                    && s.batch.decode_context_tokens == b as u64 * 1024
            })
            .map(|s| s.measured_ms)
    };
    let mut out = Vec::new();
    if let (Some(t1), Some(t64)) = (decode(1), decode(64)) {
        out.push(check(
            "decode cost per sequence at 1,024 context (β3 + 1,024·β4)",
            c.beta3_ms_per_seq + 1024.0 * c.beta4_ms_per_context_token,
            (t64 - t1) / 63.0,
            "the per-sequence cost exceeds what the kernels spend per sequence: it absorbs an effect of the fitted samples (cascade attention, client or API-server streaming) that running decodes do not pay",
        ));
        out.push(check(
            "decode step, 64 sequences × 1,024 context",
            c.predict_ms(&super::decode_64x1k()),
            t64,
            "the decode model does not describe the kernels the engine runs",
        ));
    }
    let m = 16_384.0;
    if let Some(attn) = aiconfigurator::context_attention_ms(&refs, model, m) {
        out.push(check(
            "prefill attention of a 16,384-token prompt (β2·m·m/2)",
            c.beta2_ms_per_token2 * m * m / 2.0,
            attn,
            "β2 is not FlashAttention's cost: eager attention (materialising the score matrix) was fitted; calibrate with --attention flash",
        ));
    }
    out
}

//! A model for a GPU with no measurements: the calibrated model of the same LLM on another GPU,
//! carried over by the roofline of `src/specs.toml`.
//!
//! Each iteration coefficient is bound by one resource, and the reference GPU's fit says how
//! efficiently the engine uses it (efficiency = roofline time ÷ fitted time). The target keeps
//! those efficiencies, so each coefficient scales by the ratio of the bounding resource:
//!
//! * β0 (weights read every iteration) and β4 (KV read per decode context token): memory-bound,
//!   × HBM bandwidth(reference) ÷ HBM bandwidth(target);
//! * β1 (dense GEMMs per token) and β2 (attention FLOPs per query–key pair): compute-bound,
//!   × dense BF16 peak(reference) ÷ dense BF16 peak(target);
//! * β3 (per-sequence engine work: sampling, scheduling, one query row): kept — host-side.
//!
//! At a tensor-parallel degree `tp` ≠ the reference's (`--tp`), each instance spans `tp` GPUs:
//! the four GPU-bound coefficients also scale by `tp(reference) ÷ tp` (Megatron-style sharding
//! splits the weights, the GEMMs, the attention heads and the KV cache evenly), and β1 gains the
//! all-reduces: two per layer, each of `hidden_size × dtype_bytes` per token, a ring moving
//! `2 (tp − 1) / tp` of it over each GPU's interconnect (`interconnect_gbps` of
//! `src/specs.toml`). All-reduce latency and imperfect overlap are not modelled: the estimate is
//! optimistic, and marked uncalibrated like every transfer. A reference at TP > 1 is carried only
//! to its own degree.
//!
//! Request overheads, the PD handoff and the KV link are software and network, not the GPU:
//! kept. The result is marked [`CalibrationFile::uncalibrated`]; `run`, `validate` and
//! `routing-map` say so whenever they use it.

use super::model_file::{CalibrationFile, Coefficient, SourceUse};
use super::{physics_checks, prefill_1k};
use crate::hardware::GpuSpec;

/// The model `reference` (read from the file named `reference_file`) carried to GPU `target`.
///
/// # Errors
/// The reference's model or GPU is not in the spec table, or its coefficients are invalid.
pub fn transfer(
    reference: &CalibrationFile,
    reference_file: &str,
    target: &GpuSpec,
    tp: u32,
) -> Result<CalibrationFile, String> {
    let from = crate::hardware::find_gpu(&reference.gpu)?;
    let model = crate::hardware::find_model(&reference.model)?;
    reference.coefficients()?;
    if !(1..=64).contains(&tp) {
        return Err(format!("--tp {tp} is not a tensor-parallel degree: use 1 to 64"));
    }
    if reference.tp != 1 && tp != reference.tp {
        return Err(format!(
            "the reference is a model at TP {}: it can be carried to another GPU at TP {} only (start from a TP 1 model to change the degree)",
            reference.tp, reference.tp
        ));
    }
    let shard = reference.tp as f64 / tp as f64;
    let mem = from.hbm_bandwidth_tbps / target.hbm_bandwidth_tbps * shard;
    let compute = from.peak_bf16_dense_tflops / target.peak_bf16_dense_tflops * shard;
    let all_reduce_ms = all_reduce_ms_per_token(model, target, tp) - all_reduce_ms_per_token(model, from, reference.tp);
    let scale = |name: &str| match name {
        "beta0_ms" | "beta4_ms_per_context_token" => mem,
        "beta1_ms_per_token" | "beta2_ms_per_token2" => compute,
        _ => 1.0,
    };
    let add = |name: &str| {
        if name == "beta1_ms_per_token" {
            all_reduce_ms
        } else {
            0.0
        }
    };
    let mut out = reference.clone();
    out.gpu = target.name.clone();
    out.tp = tp;
    out.engine = format!("{} (roofline estimate)", reference.engine);
    out.iteration.coefficients = reference
        .iteration
        .coefficients
        .iter()
        .map(|c| {
            let (k, a) = (scale(&c.name), add(&c.name));
            Coefficient {
                value: c.value * k + a,
                ci95_low: c.ci95_low * k + a,
                ci95_high: c.ci95_high * k + a,
                ..c.clone()
            }
        })
        .collect();
    out.iteration.kernel_group_intercepts.clear();
    out.iteration.attention_note = Some(format!(
        "β2 scaled with β1 by the dense BF16 peak ({} → {} TFLOP/s) from {reference_file}",
        from.peak_bf16_dense_tflops, target.peak_bf16_dense_tflops
    ));
    out.phases.clear();
    out.groups.clear();
    out.outliers.clear();
    out.replay = None;
    out.sources = vec![SourceUse {
        file: reference_file.to_string(),
        reader: "roofline".into(),
        num_samples: 0,
        num_dropped: 0,
        used_for: format!(
            "reference model on {}; coefficients scaled to {} by the roofline",
            from.name, target.name
        ),
    }];
    let coeffs = out.coefficients()?;
    let t1k = coeffs.predict_ms(&prefill_1k());
    out.physics = physics_checks(
        Some((t1k, t1k, coeffs.beta1_ms_per_token)),
        Some(&coeffs),
        Some((out.kv_transfer.bandwidth_gbps, out.kv_transfer.source.as_str())),
        &[],
        model,
        target,
        tp,
    );
    if tp == 1 {
        out.physics
            .extend(super::reference::kernel_checks(&coeffs, model, target));
    }
    let tp_note = if tp == reference.tp {
        String::new()
    } else {
        format!(
            "; TP {} → {tp}: × {shard:.3} in each, β1 + {all_reduce_ms:.2e} ms/token of all-reduce ({} GB/s interconnect; its latency not modelled)",
            reference.tp, target.interconnect_gbps
        )
    };
    out.uncalibrated = Some(format!(
        "not fitted to measurements of {}: a roofline transfer of {reference_file} ({}): β0, β4 × {mem:.3} (HBM {} → {} TB/s), β1, β2 × {compute:.3} (dense BF16 {} → {} TFLOP/s){tp_note}, β3, overheads and KV link kept",
        target.name,
        from.name,
        from.hbm_bandwidth_tbps,
        target.hbm_bandwidth_tbps,
        from.peak_bf16_dense_tflops,
        target.peak_bf16_dense_tflops
    ));
    Ok(out)
}

/// Tensor-parallel all-reduce time per token on `gpu` at degree `tp` \[ms/token\]: two
/// all-reduces per layer (after attention and after the MLP, Megatron-LM's scheme), each of
/// `hidden_size × dtype_bytes` bytes per token, of which a ring sends `2 (tp − 1) / tp` over
/// each GPU's interconnect at `interconnect_gbps`; 0 at TP 1.
pub fn all_reduce_ms_per_token(model: &crate::hardware::ModelSpec, gpu: &GpuSpec, tp: u32) -> f64 {
    let bytes = 2.0 * model.num_layers as f64 * model.hidden_size as f64 * model.dtype_bytes as f64;
    let ring = 2.0 * (tp as f64 - 1.0) / tp as f64;
    bytes * ring / (gpu.interconnect_gbps * 1e9) * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_scale_by_the_bounding_resource() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-llama3.1-8b.json");
        let h100 = CalibrationFile::load(&path).unwrap();
        let a100 = crate::hardware::find_gpu("a100-sxm-80gb").unwrap();
        let out = transfer(&h100, "h100-llama3.1-8b.json", a100, 1).unwrap();
        let (r, t) = (h100.coefficients().unwrap(), out.coefficients().unwrap());
        // H100 SXM 3.35 TB/s, 989 TFLOP/s; A100 SXM 80 GB 2.039 TB/s, 312 TFLOP/s.
        let (mem, flops) = (3.35 / 2.039, 989.0 / 312.0);
        assert!((t.beta0_ms - r.beta0_ms * mem).abs() < 1e-12);
        assert!((t.beta4_ms_per_context_token - r.beta4_ms_per_context_token * mem).abs() < 1e-15);
        assert!((t.beta1_ms_per_token - r.beta1_ms_per_token * flops).abs() < 1e-12);
        assert!((t.beta2_ms_per_token2 - r.beta2_ms_per_token2 * flops).abs() < 1e-18);
        assert_eq!(t.beta3_ms_per_seq, r.beta3_ms_per_seq);
        assert_eq!(out.gpu, "a100-sxm-80gb");
        assert!(out
            .uncalibrated
            .as_deref()
            .unwrap()
            .contains("not fitted to measurements of a100-sxm-80gb"));
        assert_eq!(out.overheads, h100.overheads);
        // Onto itself: the same coefficients.
        let h100_spec = crate::hardware::find_gpu("h100-sxm").unwrap();
        let same = transfer(&h100, "x", h100_spec, 1).unwrap();
        assert_eq!(same.coefficients().unwrap(), r);
    }

    #[test]
    fn tensor_parallelism_shards_the_gpu_terms_and_adds_the_all_reduces() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-llama3.1-8b.json");
        let h100 = CalibrationFile::load(&path).unwrap();
        let spec = crate::hardware::find_gpu("h100-sxm").unwrap();
        let tp2 = transfer(&h100, "x", spec, 2).unwrap();
        let (r, t) = (h100.coefficients().unwrap(), tp2.coefficients().unwrap());
        // Llama-3.1-8B: 32 layers × 2 all-reduces × 4,096 × 2 B = 524,288 B per token; a ring of 2
        // sends 2 × 1/2 of it over 450 GB/s NVLink: 1.165 µs = 1.165e-3 ms per token.
        let ar = 524_288.0 / 450e9 * 1e3;
        assert!(
            (all_reduce_ms_per_token(crate::hardware::find_model("llama-3.1-8b").unwrap(), spec, 2) - ar).abs() < 1e-15
        );
        assert!((t.beta0_ms - r.beta0_ms / 2.0).abs() < 1e-12);
        assert!((t.beta1_ms_per_token - (r.beta1_ms_per_token / 2.0 + ar)).abs() < 1e-12);
        assert!((t.beta2_ms_per_token2 - r.beta2_ms_per_token2 / 2.0).abs() < 1e-18);
        assert!((t.beta4_ms_per_context_token - r.beta4_ms_per_context_token / 2.0).abs() < 1e-15);
        assert_eq!((t.beta3_ms_per_seq, tp2.tp), (r.beta3_ms_per_seq, 2));
        assert!(tp2.uncalibrated.as_deref().unwrap().contains("TP 1 → 2"));
        // A TP-2 model is carried only at TP 2.
        let e = transfer(&tp2, "y", spec, 4).unwrap_err();
        assert!(e.contains("at TP 2 only"), "{e}");
        assert!(transfer(&h100, "x", spec, 0).is_err());
    }
}

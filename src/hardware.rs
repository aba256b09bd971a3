//! Model and GPU specifications (data, not scattered constants).
//!
//! The table lives in `src/specs.toml` (compiled in, as the JSON `build.rs` converts it to), one
//! entry per model and per GPU, each with the source of its numbers. Everything physical the
//! simulator derives — KV bytes per token, weight bytes, KV capacity of an instance, the lower
//! bounds used by physics checks — comes from here.

use serde::Deserialize;
use std::sync::OnceLock;

/// Architecture of a decoder-only transformer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Short name used in scenarios (`llama-3.1-8b`).
    pub name: String,
    /// Hugging Face model id.
    pub hf_id: String,
    /// Decoder layers.
    pub num_layers: u32,
    /// Hidden size \[elements\].
    pub hidden_size: u32,
    /// Query heads.
    pub num_attention_heads: u32,
    /// KV heads (GQA: fewer than query heads).
    pub num_kv_heads: u32,
    /// Head dimension \[elements\].
    pub head_dim: u32,
    /// FFN intermediate size \[elements\].
    pub ffn_size: u32,
    /// Vocabulary size \[tokens\].
    pub vocab_size: u32,
    /// Parameter count.
    pub num_params: u64,
    /// Bytes per weight and per KV element (bf16 = 2).
    pub dtype_bytes: u32,
    /// Where the numbers come from.
    pub source: String,
}

impl ModelSpec {
    /// KV-cache bytes per token \[B\]: `2 (K and V) × layers × kv_heads × head_dim × dtype_bytes`.
    /// Llama-3.1-8B: 2·32·8·128·2 = 131,072 B (GQA; an MHA formula would give 4× that).
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * self.num_layers as u64 * self.num_kv_heads as u64 * self.head_dim as u64 * self.dtype_bytes as u64
    }

    /// Weight bytes \[B\] = parameters × dtype bytes.
    pub fn weight_bytes(&self) -> u64 {
        self.num_params * self.dtype_bytes as u64
    }

    /// Dense FLOP per token of a forward pass ignoring attention over context \[FLOP\] = 2 × params.
    pub fn flop_per_token(&self) -> f64 {
        2.0 * self.num_params as f64
    }
}

/// A GPU's memory and peak rates.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// Short name used in scenarios (`h100-sxm`).
    pub name: String,
    /// HBM capacity \[GiB\].
    pub memory_gib: f64,
    /// HBM bandwidth [TB/s, 10^12 B/s].
    pub hbm_bandwidth_tbps: f64,
    /// Dense BF16 tensor-core peak [TFLOP/s].
    pub peak_bf16_dense_tflops: f64,
    /// GPU-to-GPU bandwidth per direction within a tensor-parallel group [GB/s, 10^9 B/s]
    /// (NVLink, or PCIe where the card has none).
    pub interconnect_gbps: f64,
    /// Datasheet reference.
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Specs {
    model: Vec<ModelSpec>,
    gpu: Vec<GpuSpec>,
}

/// The table of `src/specs.toml`, as the build script converted it to JSON (`build.rs`: the
/// same values, parsed in 17–30 µs instead of the 0.25–0.30 ms the TOML took at every start).
fn specs() -> &'static Specs {
    static SPECS: OnceLock<Specs> = OnceLock::new();
    SPECS.get_or_init(|| {
        serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/specs.json")))
            .expect("built-in src/specs.toml must match ModelSpec and GpuSpec")
    })
}

/// All known models.
pub fn models() -> &'static [ModelSpec] {
    &specs().model
}

/// All known GPUs.
pub fn gpus() -> &'static [GpuSpec] {
    &specs().gpu
}

/// The model called `name`, or `None`.
pub fn model(name: &str) -> Option<&'static ModelSpec> {
    models().iter().find(|m| m.name == name)
}

/// The GPU called `name`, or `None`.
pub fn gpu(name: &str) -> Option<&'static GpuSpec> {
    gpus().iter().find(|g| g.name == name)
}

/// The model called `name`, or a message listing the known ones.
///
/// # Errors
/// An unknown name.
pub fn find_model(name: &str) -> Result<&'static ModelSpec, String> {
    model(name).ok_or_else(|| format!("unknown model `{name}`; known: {}", model_names().join(", ")))
}

/// The GPU called `name`, or a message listing the known ones.
///
/// # Errors
/// An unknown name.
pub fn find_gpu(name: &str) -> Result<&'static GpuSpec, String> {
    gpu(name).ok_or_else(|| format!("unknown GPU `{name}`; known: {}", gpu_names().join(", ")))
}

/// Names of all models, for error messages.
pub fn model_names() -> Vec<&'static str> {
    models().iter().map(|m| m.name.as_str()).collect()
}

/// Names of all GPUs, for error messages.
pub fn gpu_names() -> Vec<&'static str> {
    gpus().iter().map(|g| g.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_kv_bytes_are_128_kib_per_token() {
        let m = model("llama-3.1-8b").unwrap();
        assert_eq!(m.kv_bytes_per_token(), 131_072);
        // Llama-2-7B is MHA: 4x the KV of Llama-3.1-8B.
        assert_eq!(model("llama-2-7b").unwrap().kv_bytes_per_token(), 4 * 131_072);
        assert_eq!(m.weight_bytes(), 16_060_522_496);
    }

    #[test]
    fn h100_decode_lower_bound_is_about_4_8_ms() {
        let m = model("llama-3.1-8b").unwrap();
        let g = gpu("h100-sxm").unwrap();
        let ms = m.weight_bytes() as f64 / (g.hbm_bandwidth_tbps * 1e12) * 1e3;
        assert!((ms - 4.794).abs() < 0.01, "{ms}");
    }
}

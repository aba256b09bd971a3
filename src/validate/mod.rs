//! `ppdsim validate`: run the simulator on measured points and compare, one module per dataset:
//! [`comprehensive`] (vllm-ppd's comprehensive sweep), [`low_qps`] (the v3 and 2-GPU low-QPS
//! files) and [`interference`](mod@interference) (the interference study). Their items are re-exported here.

use crate::calibrate::model_file::CalibrationFile;
use crate::cluster::Shape;

use crate::hardware;
use crate::metrics::LatencyStats;
use crate::policy::RouterConfig;
use crate::scenario::EngineSpec;
use crate::sim::instance::EngineLimits;
use crate::sim::{Pinning, SimConfig, TransferMode};

pub mod comprehensive;
pub mod interference;
pub mod low_qps;

pub use comprehensive::*;
pub use interference::*;
pub use low_qps::*;

/// The router and cluster of a low-QPS `mode` on `gpus` GPUs: on 4, `pd` on 2 P + 2 D, `ppd` on
/// 2 P + 2 pD, `replication` on 4 replicas; on 2, 1 P + 1 D, 1 P + 1 pD, 2 replicas.
pub fn mode_deployment(mode: &str, gpus: u32) -> Option<(RouterConfig, Shape)> {
    let (name, shape) = match (mode, gpus) {
        ("pd", 4) => ("pd", "2P_2D"),
        ("ppd", 4) => ("ppd", "2P_2pD"),
        ("replication", 4) => ("replication", "4R"),
        ("pd", 2) => ("pd", "1P_1D"),
        ("ppd", 2) => ("ppd", "1P_1pD"),
        ("replication", 2) => ("replication", "2R"),
        _ => return None,
    };
    let router = toml::from_str(&format!("kind = \"{name}\"")).expect("a router kind");
    Some((router, Shape::parse(shape).expect("a shape")))
}

/// The engine limits of a replayed vllm-ppd server: `spec`'s on one GPU of the calibration's
/// type, with the calibration's cascade-attention setting
/// ([`CalibrationFile::cascade_attention`]); `None` if its model or GPU is unknown.
pub(crate) fn replay_limits(spec: EngineSpec, cal: &CalibrationFile) -> Option<EngineLimits> {
    let limits = spec.limits(hardware::model(&cal.model)?, hardware::gpu(&cal.gpu)?, 1);
    Some(EngineLimits {
        cascade_attention: cal.cascade_attention(),
        ..limits
    })
}

/// The simulator configuration of the vllm-ppd deployment (vLLM V1 defaults,
/// `gpu_memory_utilization` 0.85, `max_model_len` 8192, the benchmark client's 50 connections and
/// 120 s timeout, serialized overheads) running `router` on a cluster of `shape`, named `name`
/// in outputs; `None` if the calibration's model or GPU is unknown.
pub fn vllm_ppd_config(name: &str, router: RouterConfig, shape: Shape, cal: &CalibrationFile) -> Option<SimConfig> {
    let model = hardware::model(&cal.model)?;
    let (handoff_p_ms, handoff_d_ms) = cal.pd_handoff_services_ms();
    Some(SimConfig {
        name: name.to_string(),
        router,
        shape,
        limits: replay_limits(
            EngineSpec {
                answer_mismatch_per_token: Some(cal.answer_mismatch_per_token()),
                ..EngineSpec::default()
            },
            cal,
        )?,
        kv_bytes_per_token: model.kv_bytes_per_token(),
        link_bandwidth_gbps: cal.kv_transfer.bandwidth_gbps,
        link_latency_ms: cal.kv_transfer.latency_ms,
        transfer: TransferMode::Full,
        prefill_waits_for_send: cal.prefill_waits_for_send(),
        kv_load_ms: cal.kv_load_ms(),
        request_overhead_ms: cal.overheads.request_overhead_ms.value,
        pd_handoff_ms: cal.overheads.pd_handoff_ms.value,
        pd_handoff_p_service_ms: handoff_p_ms,
        pd_handoff_d_service_ms: handoff_d_ms,
        pd_handoff_queue: cal.pd_handoff_queue(),
        request_service_ms: cal.request_service_ms(),
        overhead_service_cv: cal.overhead_service_cv(),
        prompt_ms_per_token: cal.prompt_ms_per_token(),
        template_tokens_per_message: 0,
        serialized_overheads: true,
        client_max_connections: Some(50),
        client_requeue_rate: cal.client_requeue_rate(),
        stream_ms_per_chunk: cal.stream_ms_per_chunk(),
        engine_admit_ms: cal.engine_admit_ms(),
        request_timeout_s: Some(120.0),
        pinning: Pinning::Hash,
        max_model_len: Some(8192),
        affinity_miss_rate: 0.0,
        routing_seed: 0,
        decode_runs: true,
    })
}

/// Statistics of the finite values of `xs`; `None` when there are none.
pub(crate) fn finite_stats(xs: impl IntoIterator<Item = f64>) -> Option<LatencyStats> {
    let s = LatencyStats::of(xs.into_iter().filter(|x| x.is_finite()));
    (s.count > 0).then_some(s)
}

/// Median of the finite values of `xs` (NaN when none).
pub(crate) fn median(xs: impl IntoIterator<Item = f64>) -> f64 {
    finite_stats(xs).map_or(f64::NAN, |s| s.p50_ms())
}

/// Mean of the finite values of `xs` (NaN when none).
pub(crate) fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    finite_stats(xs).map_or(f64::NAN, |s| s.mean_ms)
}

pub(crate) fn err(pred: f64, meas: f64) -> f64 {
    100.0 * (pred - meas) / meas
}

//! The calibrated model file (`calibration/*.json`), schema version 2.
//!
//! ```json
//! {
//!   "schema_version": 2, "model": "llama-3.1-8b", "gpu": "h100-sxm", "engine": "vLLM 0.13 (V1)",
//!   "iteration": { "formula": "...", "coefficients": [ {"name": "beta0_ms", "value": 7.9, "unit": "ms",
//!                   "ci95_low": 7.7, "ci95_high": 8.1, "at_bound": false }, ... ] },
//!   "overheads": { "request_overhead_ms": {..}, "pd_handoff_ms": {..} },
//!   "kv_transfer": { "bandwidth_gbps": 800.0, "latency_ms": 0.0, "source": "fitted" | "declared", "note": ".." },
//!   "phases": [ {"phase": "prefill", "num_samples": .., "r_squared": .., "rmse_ms": .., "mape_pct": .., "cv_mape_pct": ..} ],
//!   "sources": [ {"file": "..", "reader": "..", "num_samples": .., "used_for": ".."} ],
//!   "physics": [ {"check": "..", "implied": .., "limit": .., "unit": "..", "ok": true, "message": ".."} ],
//!   "groups": [ {"group": "llmservingsim", "prefill_1k_ms": 30.7, "decode_64x1k_ms": null, ...} ],
//!   "outliers": [ {"phase": "decode", "label": "..", "measured_ms": .., "predicted_ms": ..} ]
//! }
//! ```

use crate::cost_model::{IterationCoefficients, COEFFICIENT_NAMES};
use crate::error::{InputError, InputResult};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Current schema version.
pub const SCHEMA_VERSION: u32 = 2;

/// A fitted value with its 95% confidence interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coefficient {
    /// Name (`beta0_ms`, …).
    pub name: String,
    /// Point estimate.
    pub value: f64,
    /// Unit.
    pub unit: String,
    /// Lower end of the 95% confidence interval.
    pub ci95_low: f64,
    /// Upper end of the 95% confidence interval.
    pub ci95_high: f64,
    /// True when the non-negativity constraint is active (value pinned at 0).
    pub at_bound: bool,
}

/// The iteration-time model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterationFit {
    /// The formula, for readers.
    pub formula: String,
    /// β0..β4 in order.
    pub coefficients: Vec<Coefficient>,
    /// Per-iteration fixed cost of each kernel- or layer-profile source (`beta0_ms[<group>]`),
    /// fitted separately from the serving engine's β0 because such profiles lack engine overhead.
    pub kernel_group_intercepts: Vec<Coefficient>,
    /// How β2 (attention over context) was set when not by the fit (`--attention flash`), with the
    /// profiles' fitted value for comparison. Absent: β2 is the fitted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_note: Option<String>,
}

/// Fixed per-request overheads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overheads {
    /// Arrival at the client/proxy → request in the first engine's queue, plus the return path \[ms\].
    pub request_overhead_ms: Coefficient,
    /// Extra cost of the PD path: P's response returns to the proxy, the proxy sends to D \[ms\].
    pub pd_handoff_ms: Coefficient,
    /// The part of `request_overhead_ms` that an instance's API server does one request at a
    /// time \[ms\] (the rest is latency); fitted from burst TTFT ramps. Absent: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_service_ms: Option<Coefficient>,
    /// Serialized share of `pd_handoff_ms` done at the P instance, one handoff at a time per P
    /// \[ms\]; fitted by replaying loaded runs. Absent (older files): all of `pd_handoff_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pd_handoff_p_service_ms: Option<Coefficient>,
    /// Serialized share of `pd_handoff_ms` done at D's API server \[ms\]; fitted by replaying
    /// loaded runs. Absent (older files): 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pd_handoff_d_service_ms: Option<Coefficient>,
    /// Per prompt token, once per request at its entry (client, proxy and the first API server
    /// handling the prompt text; D's hop on a split route adds none) \[ms/token\]. Fitted with the
    /// other overheads from request TTFTs, then by the replay. Absent (older files): 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ms_per_token: Option<Coefficient>,
    /// Coefficient of variation of each serialized service (lognormal, see
    /// [`crate::sim::SimConfig::overhead_service_cv`]). Absent: 0, deterministic services (what
    /// `ppdsim calibrate` fits with; set it by hand or with `validate --overhead-service-cv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cv: Option<f64>,
    /// Fraction of the benchmark client's turns, sent the moment their previous turn ends, that
    /// lose its connection to a waiting request and queue ([`crate::sim::SimConfig::client_requeue_rate`]);
    /// the replays of vllm-ppd's measurements use it. Absent: 0 (set it with `calibrate
    /// --client-requeue-rate` or `validate --client-requeue-rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_requeue_rate: Option<f64>,
    /// Per output chunk an instance's API server streams \[ms\]
    /// ([`crate::sim::SimConfig::stream_ms_per_chunk`]). Absent: 0 (set it by hand or with
    /// `validate --stream-ms-per-chunk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_ms_per_chunk: Option<f64>,
    /// Engine time of a request's first admission on an instance \[ms\]
    /// ([`crate::sim::SimConfig::engine_admit_ms`]), held while the overheads were fitted.
    /// Absent: 0 (set it with `calibrate --engine-admit-ms` or `validate --engine-admit-ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_admit_ms: Option<f64>,
    /// Where `pd_handoff_p_service_ms` is done, as the replay that fitted it assumed
    /// ([`crate::sim::HandoffQueue`]): `prefill-engine`, `per-prefill` or `cluster`. Runs and
    /// validations use it unless a scenario or flag says otherwise. Absent (files without a
    /// replay fit, and those written before P's engine did it): `per-prefill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pd_handoff_queue: Option<crate::sim::HandoffQueue>,
}

/// KV-transfer parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvTransfer {
    /// Effective bandwidth [Gbit/s].
    pub bandwidth_gbps: f64,
    /// Fixed latency per transfer \[ms\] (folded into `pd_handoff_ms` when fitted).
    pub latency_ms: f64,
    /// `fitted` or `declared`.
    pub source: String,
    /// How the value was obtained.
    pub note: String,
    /// Whether P's engine waits for its KV sends ([`crate::sim::SimConfig::prefill_waits_for_send`]),
    /// as the replay that fitted the overheads assumed; runs and validations use it unless a
    /// scenario or flag says otherwise. Absent: `false` (the transfer runs beside the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_waits_for_send: Option<bool>,
    /// D's engine time to load a received request's KV \[ms\]
    /// ([`crate::sim::SimConfig::kv_load_ms`]), as the replay that fitted the overheads assumed;
    /// runs and validations use it unless a scenario or flag says otherwise. Absent: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<f64>,
}

/// Fit quality of one phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseFit {
    /// Phase (`prefill`, `decode`, `request-ttft`).
    pub phase: String,
    /// Samples.
    pub num_samples: usize,
    /// Coefficient of determination.
    pub r_squared: f64,
    /// Root-mean-square error \[ms\].
    pub rmse_ms: f64,
    /// Mean absolute percentage error \[%\].
    pub mape_pct: f64,
    /// 5-fold cross-validated MAPE \[%\] (folds by sample index mod 5).
    pub cv_mape_pct: f64,
}

/// One input file and what it contributed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceUse {
    /// File name as given (no absolute paths are written: only the file name).
    pub file: String,
    /// Reader that parsed it.
    pub reader: String,
    /// Samples used for fitting.
    pub num_samples: usize,
    /// Samples dropped (failed runs, zero success).
    pub num_dropped: usize,
    /// What the samples were used for.
    pub used_for: String,
}

/// A physics check of the fitted model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysicsCheck {
    /// What is checked.
    pub check: String,
    /// The figure the fit implies.
    pub implied: f64,
    /// The hardware limit.
    pub limit: f64,
    /// Unit of both.
    pub unit: String,
    /// True when physically possible.
    pub ok: bool,
    /// Explanation (the likely cause when not ok).
    pub message: String,
}

/// A calibrated model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    /// Schema version (1).
    pub schema_version: u32,
    /// Model name in the spec table.
    pub model: String,
    /// GPU name in the spec table.
    pub gpu: String,
    /// Tensor-parallel degree of the instances modelled: GPUs per instance (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub tp: u32,
    /// Serving engine the measurements came from.
    pub engine: String,
    /// Iteration model.
    pub iteration: IterationFit,
    /// Fixed overheads.
    pub overheads: Overheads,
    /// KV transfer.
    pub kv_transfer: KvTransfer,
    /// Per-token chance that an answer the client resends as text re-tokenises differently,
    /// ending the next turn's prefix-cache hit there (see
    /// [`crate::sim::instance::EngineLimits::answer_mismatch_per_token`]): the value the overheads were
    /// fitted with, and the default of runs using this file (absent: 0, answers reused whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_mismatch_per_token: Option<f64>,
    /// Whether the replays this model was fitted with priced cascade attention (a prefix every
    /// request of a batch shares read once, [`crate::sim::instance::EngineLimits::cascade_attention`];
    /// only the interference bursts have one): what `calibrate --cascade-attention` identified the
    /// admission work with, and the default of `validate` with this file. Absent: false (the
    /// shipped model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade_attention: Option<bool>,
    /// Fit quality per phase.
    pub phases: Vec<PhaseFit>,
    /// Inputs.
    pub sources: Vec<SourceUse>,
    /// Physics checks of the combined model.
    pub physics: Vec<PhysicsCheck>,
    /// Each source group fitted alone, with its predictions and physics checks.
    pub groups: Vec<GroupFit>,
    /// Samples the combined model fits worst (|relative residual| > 2 × the phase's MAPE, at most 5 per phase).
    pub outliers: Vec<Outlier>,
    /// The PD handoff's split fitted by replaying loaded runs, with its cross-validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayFit>,
    /// Set when the model was not fitted to measurements of its GPU (a roofline transfer, see
    /// [`crate::calibrate::roofline`]): what it was derived from and how. Every output that uses
    /// such a model says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncalibrated: Option<String>,
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

/// The overheads' replay fit ([`crate::calibrate::replay`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFit {
    /// Loaded points replayed.
    pub num_points: usize,
    /// Replays per point during the fit.
    pub replays_per_point: u64,
    /// Objective (mean clamped |ln(pred/meas)| of T1 p50, T2 p50, T2 p99 TTFT) before the fit.
    pub objective_before: f64,
    /// Objective after the fit.
    pub objective_after: f64,
    /// Fitted request overhead \[ms\] (`--replay-params handoff-and-request`; absent: the
    /// low-load fit's value was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_overhead_ms: Option<f64>,
    /// Fitted per-prompt-token cost, once per request \[ms/token\] (as `request_overhead_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ms_per_token: Option<f64>,
    /// Fitted whole PD handoff \[ms\].
    pub pd_handoff_ms: f64,
    /// Fitted serialized share at P \[ms\].
    pub pd_handoff_p_service_ms: f64,
    /// Fitted serialized share at D's API server \[ms\].
    pub pd_handoff_d_service_ms: f64,
    /// The per-sequence decode cost refitted to the loaded points' TPOTs before the overheads
    /// (absent: `--no-decode-refit`, or an older file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_refit: Option<DecodeRefitReport>,
    /// Median |turn-2 p50 TTFT error| below saturation per configuration, after the fit \[%\].
    pub t2_p50_error_pct_by_config: Vec<ConfigError>,
    /// Leave-one-configuration-out folds.
    pub leave_one_config_out: Vec<LocoFold>,
    /// The engine admission work the interference bursts identify with the rest of the fitted
    /// model held (absent: no interference core experiment among the inputs, or an older file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_admission: Option<BurstAdmissionReport>,
    /// How the engine admission work was identified when `calibrate` was not given it: one
    /// entry per pass, each the bursts' check after fitting the rest at its `held_ms` (empty:
    /// held with `--engine-admit-ms`, no bursts among the inputs, or an older file). The last
    /// entry is [`ReplayFit::burst_admission`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engine_admit_passes: Vec<BurstAdmissionReport>,
}

/// What the interference bursts' decode-only settings say each engine's admission work is
/// ([`crate::calibrate::replay::burst_admission`]); objectives are the mean |ln(pred/meas)| of
/// their decode TPOT and batch time (dimensionless: 0.05 ≈ 5% off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstAdmissionReport {
    /// The admission work minimising the objective \[ms\].
    pub admit_ms: f64,
    /// The objective there.
    pub objective: f64,
    /// The file's own admission work (`overheads.engine_admit_ms`, held in the fit) \[ms\].
    pub held_ms: f64,
    /// The objective at the held value.
    pub held_objective: f64,
    /// The objective with admission free.
    pub free_objective: f64,
}

/// β3 refitted by replaying the loaded points' turn-1 and turn-2 mean TPOT (β0 + β3 held).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeRefitReport {
    /// β3 of the regression on the decode samples \[ms per sequence\].
    pub beta3_regression_ms_per_seq: f64,
    /// β3 after the refit \[ms per sequence\] (the file's coefficient).
    pub beta3_ms_per_seq: f64,
    /// β0 after the refit \[ms\] (the file's coefficient).
    pub beta0_ms: f64,
    /// D's engine time to load a received request's KV, fitted with β3 \[ms\] (the file's
    /// `kv_transfer.load_ms`); absent when it was held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_load_ms: Option<f64>,
    /// Mean |ln(pred/meas)| of the TPOTs with the regression's β3.
    pub tpot_objective_before: f64,
    /// The same after the refit.
    pub tpot_objective_after: f64,
}

/// One configuration's error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigError {
    /// Configuration (`1P_3D`, …).
    pub config: String,
    /// Median |turn-2 p50 TTFT error| below saturation \[%\].
    pub t2_p50_error_pct: f64,
    /// The same points' run-to-run floor of turn-2 p50 TTFT \[%\]: the median over them of
    /// [`crate::validate::ComprehensiveRow::t2_p50_ttft_floor_pct`], the error of the simulator
    /// predicting its own independent runs (absent in files written before it was reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t2_p50_floor_pct: Option<f64>,
}

/// One fold of the leave-one-configuration-out cross-validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocoFold {
    /// The configuration held out.
    pub held_out: String,
    /// Request overhead fitted on the others \[ms\] (when the replay fits it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_overhead_ms: Option<f64>,
    /// Per-prompt-token cost fitted on the others \[ms/token\] (when the replay fits it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ms_per_token: Option<f64>,
    /// Whole handoff fitted on the others \[ms\].
    pub pd_handoff_ms: f64,
    /// P share fitted on the others \[ms\].
    pub pd_handoff_p_service_ms: f64,
    /// D share fitted on the others \[ms\].
    pub pd_handoff_d_service_ms: f64,
    /// β3 refitted on the others \[ms per sequence\] (with the decode refit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta3_ms_per_seq: Option<f64>,
    /// D's KV load refitted on the others \[ms\] (with the joint decode refit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_load_ms: Option<f64>,
    /// Median |turn-2 p50 TTFT error| below saturation on the held-out configuration \[%\].
    pub held_out_t2_p50_error_pct: f64,
}

/// One source group (files of one origin) fitted alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFit {
    /// Group name (`llmservingsim`, `vllm-ppd-interference`, …).
    pub group: String,
    /// Files in the group.
    pub files: Vec<String>,
    /// Model the group measured (spec name).
    pub model: String,
    /// GPU the group measured (spec name).
    pub gpu: String,
    /// Samples fitted.
    pub num_samples: usize,
    /// Predicted 1,024-token prefill iteration \[ms\] (iteration sources) or its marginal compute
    /// without fixed costs (request-only sources).
    pub prefill_1k_ms: Option<f64>,
    /// Predicted decode step of 64 sequences at 1,024 context tokens each \[ms\].
    pub decode_64x1k_ms: Option<f64>,
    /// Marginal prefill cost [µs/token] (β1, or the TTFT slope of request-only sources).
    pub marginal_prefill_us_per_token: Option<f64>,
    /// Link bandwidth fitted from transfer samples [Gbit/s].
    pub link_bandwidth_gbps: Option<f64>,
    /// Link latency fitted from transfer samples \[ms\].
    pub link_latency_ms: Option<f64>,
    /// Physics checks of this group alone.
    pub physics: Vec<PhysicsCheck>,
    /// True when the group entered the combined fit.
    pub used_in_combined: bool,
    /// Why it was or was not used.
    pub note: String,
}

/// A badly fitted sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Phase.
    pub phase: String,
    /// Sample label.
    pub label: String,
    /// Measured \[ms\].
    pub measured_ms: f64,
    /// Predicted \[ms\].
    pub predicted_ms: f64,
}

/// True when `path` holds a ppdsim calibration file (a JSON object with `schema_version` and
/// `iteration`, of any schema version). Used to decide whether `calibrate -o` may replace it.
pub fn looks_like_calibration(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v.get("schema_version").is_some() && v.get("iteration").is_some())
}

impl CalibrationFile {
    /// Reads and checks a model file.
    ///
    /// # Errors
    /// Unreadable file, invalid JSON, another schema version, missing or negative coefficients.
    pub fn load(path: &Path) -> InputResult<CalibrationFile> {
        crate::input::check_regular(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            InputError::file(
                path,
                format!("cannot read calibration: {e}; create it with `ppdsim calibrate`"),
            )
        })?;
        let f: CalibrationFile = serde_json::from_str(&text)
            .map_err(|e| InputError::file(path, format!("not a ppdsim calibration file: {e}")))?;
        if f.schema_version != SCHEMA_VERSION {
            return Err(InputError::key(
                path,
                "schema_version",
                format!(
                    "version {} is not supported (expected {SCHEMA_VERSION}); re-run `ppdsim calibrate`",
                    f.schema_version
                ),
            ));
        }
        // The optional overhead settings, each in its closed range (absent: 0).
        for (key, value, max, what) in [
            (
                "overheads.stream_ms_per_chunk",
                f.overheads.stream_ms_per_chunk,
                crate::scenario::MAX_STREAM_MS_PER_CHUNK,
                "a time per streamed token in ms",
            ),
            (
                "overheads.client_requeue_rate",
                f.overheads.client_requeue_rate,
                1.0,
                "a fraction",
            ),
            (
                "overheads.service_cv",
                f.overheads.service_cv,
                crate::scenario::MAX_SERVICE_CV,
                "a coefficient of variation",
            ),
            (
                "overheads.engine_admit_ms",
                f.overheads.engine_admit_ms,
                crate::scenario::MAX_ENGINE_ADMIT_MS,
                "a time per admitted request in ms",
            ),
            (
                "kv_transfer.load_ms",
                f.kv_transfer.load_ms,
                crate::scenario::MAX_KV_LOAD_MS,
                "a time per loaded request in ms",
            ),
        ] {
            if let Some(v) = value.filter(|v| !(0.0..=max).contains(v)) {
                return Err(InputError::key(
                    path,
                    key,
                    format!("{v} is not {what}: give a value in [0, {max}], or remove the key (0)"),
                ));
            }
        }
        if let Some(p) = f.answer_mismatch_per_token.filter(|p| !(0.0..1.0).contains(p)) {
            return Err(InputError::key(
                path,
                "answer_mismatch_per_token",
                format!("{p} is not a per-token probability: give a value in [0, 1), or re-run `ppdsim calibrate`"),
            ));
        }
        let c = f
            .coefficients()
            .map_err(|m| InputError::key(path, "iteration.coefficients", m))?;
        // Coefficients that break physics (all zero, a decode faster than reading the weights)
        // would simulate nonsense: refused with the check's message.
        if let (Some(model), Some(gpu)) = (crate::hardware::model(&f.model), crate::hardware::gpu(&f.gpu)) {
            let t1k = c.predict_ms(&crate::calibrate::prefill_1k());
            let checks = crate::calibrate::physics_checks(
                Some((t1k, t1k, c.beta1_ms_per_token)),
                Some(&c),
                None,
                &[],
                model,
                gpu,
                f.tp,
            );
            if let Some(bad) = checks.iter().find(|p| !p.ok) {
                return Err(InputError::key(
                    path,
                    "iteration.coefficients",
                    format!(
                        "are not physically possible — {}: implied {} {} vs limit {} (all-zero or hand-edited coefficients?); re-run `ppdsim calibrate`",
                        bad.check,
                        crate::scenario::fmt_num(bad.implied),
                        bad.unit,
                        crate::scenario::fmt_num(bad.limit)
                    ),
                ));
            }
        }
        Ok(f)
    }

    /// [`CalibrationFile::answer_mismatch_per_token`], 0 when the file has none.
    pub fn answer_mismatch_per_token(&self) -> f64 {
        self.answer_mismatch_per_token.unwrap_or(0.0)
    }

    /// Whether replays with this file price cascade attention
    /// ([`CalibrationFile::cascade_attention`]); false when the file does not say.
    pub fn cascade_attention(&self) -> bool {
        self.cascade_attention.unwrap_or(false)
    }

    /// Fraction of zero-think turns that requeue for a client connection in replays of vllm-ppd's
    /// measurements; 0 when the file has none.
    pub fn client_requeue_rate(&self) -> f64 {
        self.overheads.client_requeue_rate.unwrap_or(0.0)
    }

    /// Per output chunk an API server streams \[ms\]; 0 when the file has none.
    pub fn stream_ms_per_chunk(&self) -> f64 {
        self.overheads.stream_ms_per_chunk.unwrap_or(0.0)
    }

    /// Engine time of a request's first admission \[ms\]; 0 when the file has none.
    pub fn engine_admit_ms(&self) -> f64 {
        self.overheads.engine_admit_ms.unwrap_or(0.0)
    }

    /// Where P's share of the handoff is done ([`Overheads::pd_handoff_queue`]); `per-prefill`
    /// when the file does not say.
    pub fn pd_handoff_queue(&self) -> crate::sim::HandoffQueue {
        self.overheads
            .pd_handoff_queue
            .unwrap_or(crate::sim::HandoffQueue::PerPrefill)
    }

    /// Whether P's engine waits for its KV sends ([`KvTransfer::prefill_waits_for_send`]);
    /// `false` when the file does not say.
    pub fn prefill_waits_for_send(&self) -> bool {
        self.kv_transfer.prefill_waits_for_send.unwrap_or(false)
    }

    /// D's engine time to load a received request's KV ([`KvTransfer::load_ms`]) \[ms\]; 0
    /// when the file does not say.
    pub fn kv_load_ms(&self) -> f64 {
        self.kv_transfer.load_ms.unwrap_or(0.0)
    }

    /// Coefficient of variation of the serialized overhead services; 0 when the file has none.
    pub fn overhead_service_cv(&self) -> f64 {
        self.overheads.service_cv.unwrap_or(0.0)
    }

    /// Per-prompt-token overhead, once per request at its entry \[ms/token\]; 0 when the file
    /// has none.
    pub fn prompt_ms_per_token(&self) -> f64 {
        self.overheads.prompt_ms_per_token.as_ref().map_or(0.0, |c| c.value)
    }

    /// The serialized share of the request overhead \[ms\]: the fitted value capped at the
    /// overhead, or all of the overhead when the file has none.
    pub fn request_service_ms(&self) -> f64 {
        let overhead = self.overheads.request_overhead_ms.value;
        self.overheads
            .request_service_ms
            .as_ref()
            .map_or(overhead, |c| c.value.min(overhead))
    }

    /// The serialized shares of the PD handoff `(at P, at D)` \[ms\], capped so that together
    /// they do not exceed `pd_handoff_ms`; without fitted values all of it at P.
    pub fn pd_handoff_services_ms(&self) -> (f64, f64) {
        let total = self.overheads.pd_handoff_ms.value;
        let d = self
            .overheads
            .pd_handoff_d_service_ms
            .as_ref()
            .map_or(0.0, |c| c.value)
            .clamp(0.0, total);
        let p = self
            .overheads
            .pd_handoff_p_service_ms
            .as_ref()
            .map_or(total, |c| c.value)
            .clamp(0.0, total - d);
        (p, d)
    }

    /// The iteration coefficients by name.
    ///
    /// # Errors
    /// A missing, negative or non-finite coefficient.
    pub fn coefficients(&self) -> Result<IterationCoefficients, String> {
        let mut b = [0.0; 5];
        for (i, name) in COEFFICIENT_NAMES.iter().enumerate() {
            let c = self
                .iteration
                .coefficients
                .iter()
                .find(|c| c.name == *name)
                .ok_or_else(|| format!("missing coefficient `{name}`"))?;
            if !(c.value >= 0.0 && c.value.is_finite()) {
                return Err(format!("coefficient `{name}` = {} must be finite and >= 0", c.value));
            }
            b[i] = c.value;
        }
        Ok(IterationCoefficients::from_array(b))
    }
}

//! `ppdsim calibrate`: fit the iteration-time model, fixed overheads and KV link to real
//! measurements, check the result against physics, and compare independent sources.
//!
//! 1. **Read** every file with the reader its content calls for ([`readers`]); AIConfigurator
//!    kernel tables are composed into forward passes once all are read.
//! 2. **Per-group fits**: files of one origin form a group, fitted alone with only the
//!    coefficients its samples inform. Each group predicts a 1,024-token prefill and a decode
//!    step of 64 sequences × 1,024 context tokens, and passes or fails the physics checks of
//!    DESIGN §2 with its own model and GPU. Groups for another model or GPU than the one being
//!    calibrated, and groups failing a physics check, stay out of the combined fit (and say so).
//! 3. **Combined fit**, in two stages:
//!    * iteration model ([`crate::cost_model`]) by weighted non-negative least squares over every
//!      iteration sample, weights `1/measured` (minimises *relative* error);
//!    * fixed overheads and link: each request sample's residual `measured TTFT − Σ predicted
//!      iterations on its path` is regressed (NNLS) on `[1, split, split × GB transferred]`, giving
//!      `request_overhead_ms`, `pd_handoff_ms` and the link's ms/GB. Transfer samples, when
//!      present, fit `t = latency + bytes/bandwidth` directly instead. When the bandwidth term is
//!      pinned at zero or its interval includes zero, the bandwidth is not identifiable and the
//!      declared value is kept (and said so).
//! 4. **Statistics**: per phase R², RMSE, MAPE, 5-fold cross-validated MAPE; 95% confidence
//!    intervals of every coefficient; the worst-fitted samples.

pub mod fit;
pub mod model_file;
pub mod readers;
pub mod reference;
pub mod replay;
pub mod roofline;

use crate::cost_model::{BatchShape, IterationCoefficients, PrefillPart, COEFFICIENT_NAMES, COEFFICIENT_UNITS};
use crate::error::{InputError, InputResult};
use crate::hardware::{self, GpuSpec, ModelSpec};
use model_file::*;
use readers::{FileSamples, Format, IterationSample, Phase, ReadOptions, RequestRoute, RequestSample, TransferSample};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Options of a calibration run.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Model name in the spec table.
    pub model: String,
    /// GPU name in the spec table.
    pub gpu: String,
    /// Tensor-parallel degree of one instance.
    pub tp: u32,
    /// Engine label recorded in the file; empty: derived from the sources ([`engine_label`]).
    pub engine: String,
    /// KV block size used to compute prefix-cache hits of request samples \[tokens\].
    pub block_size: u32,
    /// Bandwidth used when the data cannot identify it [Gbit/s].
    pub declared_bandwidth_gbps: f64,
    /// Force one reader for every file.
    pub format: Format,
    /// Where β2 (attention over context) comes from.
    pub attention: AttentionModel,
    /// Fit the PD handoff's serialized shares by replaying loaded points given among the inputs.
    pub replay: bool,
    /// With `replay`: also run the leave-one-configuration-out cross-validation.
    pub loco: bool,
    /// Per-token chance that a resent answer re-tokenises differently (ends the next turn's
    /// prefix-cache hit there): used for the request samples and the replays, and recorded in the
    /// model file when > 0. Default 0 (answers reused whole; vllm-ppd's cache-info runs fit
    /// [`crate::scenario::FITTED_ANSWER_MISMATCH_PER_TOKEN`]).
    pub answer_mismatch_per_token: f64,
    /// Which overheads the replay fits.
    pub replay_params: replay::ReplayParams,
    /// With `replay`: first refit β3 to the loaded points' TPOTs ([`replay::fit_beta3`]).
    pub decode_refit: bool,
    /// Coefficient of variation of the serialized overhead services the replays draw
    /// ([`crate::sim::SimConfig::overhead_service_cv`]), recorded in the model file when > 0:
    /// the overheads' means are then fitted with variable services. Default 0 (deterministic).
    pub overhead_service_cv: f64,
    /// Fraction of the benchmark client's zero-think turns that requeue for a connection in the
    /// replays ([`crate::sim::SimConfig::client_requeue_rate`]), recorded in the model file when
    /// above 0. Default 0.
    pub client_requeue_rate: f64,
    /// Per output chunk an API server streams in the replays
    /// ([`crate::sim::SimConfig::stream_ms_per_chunk`]) \[ms\], recorded in the model file when
    /// above 0. Default 0 (tokens reach the client as their step ends).
    pub stream_ms_per_chunk: f64,
    /// Engine time of each request's first admission in the replays
    /// ([`crate::sim::SimConfig::engine_admit_ms`]) \[ms\], held at this value and recorded in
    /// the model file when above 0. Default `None`: identified from the interference bursts when
    /// the core experiment is among the inputs and the replay runs (see `replay_fit`), else 0.
    pub engine_admit_ms: Option<f64>,
    /// Whether the replays price cascade attention
    /// ([`crate::sim::instance::EngineLimits::cascade_attention`]): of the inputs only the
    /// interference bursts share a prefix, so it changes the admission work identified from them
    /// (and, through it, the rest). Recorded in the model file when true. Default false.
    pub cascade_attention: bool,
    /// Where P's share of the handoff is done in the replays ([`crate::sim::HandoffQueue`]),
    /// recorded in the model file when the replay fits the overheads. Default: P's engine.
    pub pd_handoff_queue: crate::sim::HandoffQueue,
    /// Whether P's engine waits for its KV sends in the replays
    /// ([`crate::sim::SimConfig::prefill_waits_for_send`]), recorded in the model file when on
    /// and the replay fits the overheads. Default off.
    pub prefill_waits_for_send: bool,
    /// D's engine time to load each received request's KV in the replays
    /// ([`crate::sim::SimConfig::kv_load_ms`]) \[ms\], recorded in the model file when above 0.
    /// `None` (the default): fitted with β3 by the decode refit
    /// ([`replay::fit_beta3_and_kv_load`]) when it runs, else 0.
    pub kv_load_ms: Option<f64>,
    /// Where the replay fit reports what it does: its message names the stage, its position
    /// counts the replays of every loaded point (each of the fits' objective evaluations is one).
    /// Hidden by default; `ppdsim calibrate` shows a spinner on stderr unless `--quiet`.
    pub progress: indicatif::ProgressBar,
}

/// Source of β2, the cost per query–key pair of prefill attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttentionModel {
    /// When a source's prefill profiles ran eager attention (LLMServingSim's HF profiler):
    /// `kernel-table` for the tables' model and GPU, `flash` elsewhere; `fitted` otherwise (kernel
    /// tables of FlashAttention, engine timings): the engine being modelled (vLLM) runs
    /// FlashAttention.
    #[default]
    Auto,
    /// The fitted value (right when the profiles ran the serving engine's attention kernels;
    /// eager attention when they are LLMServingSim's).
    Fitted,
    /// FlashAttention's cost: attention FLOPs per query–key pair (4 × layers × query heads ×
    /// head dim; FlashAttention, Dao et al. 2022, does no other O(n²) work) at the throughput β1
    /// implies for the dense part (2 × parameters FLOP per token). Use it when the prefill profiles
    /// ran eager attention (LLMServingSim's HF profiler materialises the score matrix: its fitted
    /// β2, 1.02e-5 ms, is 19× this 5.44e-7 ms on the shipped data) but the engine being modelled
    /// (vLLM) uses FlashAttention.
    Flash,
    /// FlashAttention 3's measured cost: the quadratic term of AIConfigurator's H100
    /// context-attention table (vLLM 0.24, compiled in), 6.94e-7 ms per pair for Llama-3.1-8B —
    /// the kernel runs below the GEMMs' throughput, so 1.28× `flash`'s FLOP count. Only for the
    /// tables' model and GPU (Llama-3.1-8B on H100 SXM); `auto` picks it there when the profiles
    /// ran eager attention.
    KernelTable,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            model: "llama-3.1-8b".into(),
            gpu: "h100-sxm".into(),
            tp: 1,
            engine: String::new(),
            block_size: 16,
            declared_bandwidth_gbps: 1200.0,
            attention: AttentionModel::Auto,
            format: Format::Auto,
            replay: true,
            loco: true,
            answer_mismatch_per_token: 0.0,
            replay_params: replay::ReplayParams::HandoffAndRequest,
            decode_refit: true,
            overhead_service_cv: 0.0,
            client_requeue_rate: 0.0,
            stream_ms_per_chunk: 0.0,
            engine_admit_ms: None,
            cascade_attention: false,
            pd_handoff_queue: crate::sim::HandoffQueue::PrefillEngine,
            prefill_waits_for_send: false,
            kv_load_ms: None,
            progress: indicatif::ProgressBar::hidden(),
        }
    }
}

/// A measured-vs-predicted point for reports and plots.
#[derive(Clone, Debug, PartialEq)]
pub struct FitPoint {
    /// Phase name.
    pub phase: String,
    /// Measured \[ms\].
    pub measured_ms: f64,
    /// Predicted \[ms\].
    pub predicted_ms: f64,
    /// Label.
    pub label: String,
}

/// Result of a calibration.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// The model file.
    pub file: CalibrationFile,
    /// Every point of the combined fit.
    pub points: Vec<FitPoint>,
}

/// Σm and Σm(L+m/2) over a request sample's path.
fn path_features(s: &RequestSample) -> (f64, f64) {
    s.steps.iter().fold((0.0, 0.0), |(m, attn), p| {
        let x = IterationCoefficients::features(&readers::prefill_batch(vec![*p]));
        (m + x[1], attn + x[2])
    })
}

/// Prompt length of a request sample \[tokens\] (its first step holds the whole prompt).
fn prompt_tokens(s: &RequestSample) -> u32 {
    s.steps.first().map_or(0, |p| p.num_new_tokens + p.num_cached_tokens)
}

fn path_compute(c: &IterationCoefficients, s: &RequestSample) -> f64 {
    s.steps
        .iter()
        .map(|p| c.predict_ms(&readers::prefill_batch(vec![*p])))
        .sum()
}

fn phase_fit(phase: &str, y: &[f64], pred: &[f64], cv_pred: &[f64]) -> PhaseFit {
    PhaseFit {
        phase: phase.into(),
        num_samples: y.len(),
        r_squared: fit::r_squared(y, pred),
        rmse_ms: fit::rmse(y, pred),
        mape_pct: fit::mape_pct(y, pred),
        cv_mape_pct: fit::mape_pct(y, cv_pred),
    }
}

fn coefficient(name: &str, unit: &str, value: f64, half: f64, at_bound: bool) -> Coefficient {
    Coefficient {
        name: name.into(),
        value,
        unit: unit.into(),
        ci95_low: (value - half).max(0.0),
        ci95_high: value + half,
        at_bound,
    }
}

/// Fit statistics, worst-fitted samples (|relative residual| > 2 × the phase's MAPE, at most 5)
/// and plot points of the samples `idx` of one phase.
fn phase_summary(
    name: &str,
    idx: &[usize],
    y: &[f64],
    pred: &[f64],
    cv: &[f64],
    label: &dyn Fn(usize) -> String,
) -> (PhaseFit, Vec<Outlier>, Vec<FitPoint>) {
    let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let pf = phase_fit(name, &pick(y), &pick(pred), &pick(cv));
    let mut worst: Vec<(f64, usize)> = idx
        .iter()
        .map(|&i| (((pred[i] - y[i]) / y[i]).abs(), i))
        .filter(|(r, _)| *r > 2.0 * pf.mape_pct / 100.0)
        .collect();
    worst.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let outliers = worst
        .into_iter()
        .take(5)
        .map(|(_, i)| Outlier {
            phase: name.into(),
            label: label(i),
            measured_ms: y[i],
            predicted_ms: pred[i],
        })
        .collect();
    let points = idx
        .iter()
        .map(|&i| FitPoint {
            phase: name.into(),
            measured_ms: y[i],
            predicted_ms: pred[i],
            label: label(i),
        })
        .collect();
    (pf, outliers, points)
}

/// K-fold (index mod k) out-of-fold predictions of a weighted NNLS fit.
fn cross_validated(x: &[Vec<f64>], y: &[f64], w: &[f64], k: usize, floors: &[f64]) -> Vec<f64> {
    let mut pred = vec![f64::NAN; y.len()];
    for fold in 0..k {
        let train: Vec<usize> = (0..y.len()).filter(|i| i % k != fold).collect();
        if train.len() < x[0].len() {
            return x.iter().map(|_| f64::NAN).collect();
        }
        let f = fit::fit_weighted_floor(
            &train.iter().map(|&i| x[i].clone()).collect::<Vec<_>>(),
            &train.iter().map(|&i| y[i]).collect::<Vec<_>>(),
            &train.iter().map(|&i| w[i]).collect::<Vec<_>>(),
            floors,
        );
        for i in (0..y.len()).filter(|i| i % k == fold) {
            pred[i] = fit::predict(&x[i], &f.beta);
        }
    }
    pred
}

/// Physical lower bounds of the five coefficients: β4 ≥ KV bytes per token / HBM bandwidth (a
/// decode step reads every context token's KV once); the others ≥ 0.
fn physical_floors(model: &ModelSpec, gpu: &GpuSpec, tp: u32) -> [f64; 5] {
    let kv_read_ms = model.kv_bytes_per_token() as f64 / tp as f64 / (gpu.hbm_bandwidth_tbps * 1e12) * 1e3;
    [0.0, 0.0, 0.0, 0.0, kv_read_ms]
}

/// Weighted NNLS restricted to `cols` of the 5 iteration features; other coefficients are 0.
fn fit_iterations(samples: &[&IterationSample], cols: &[usize], floors5: &[f64; 5]) -> (fit::FitResult, [f64; 5]) {
    let x: Vec<Vec<f64>> = samples
        .iter()
        .map(|s| {
            let f = IterationCoefficients::features(&s.batch);
            cols.iter().map(|&c| f[c]).collect()
        })
        .collect();
    let y: Vec<f64> = samples.iter().map(|s| s.measured_ms).collect();
    let w: Vec<f64> = y.iter().map(|v| 1.0 / v.max(1e-6)).collect();
    let floors: Vec<f64> = cols.iter().map(|&c| floors5[c]).collect();
    let f = fit::fit_weighted_floor(&x, &y, &w, &floors);
    let mut b = [0.0; 5];
    for (k, &c) in cols.iter().enumerate() {
        b[c] = f.beta[k];
    }
    (f, b)
}

fn informed_columns(samples: &[&IterationSample]) -> Vec<usize> {
    let mut cols = vec![0];
    if samples.iter().any(|s| s.phase == Phase::Prefill) {
        cols.extend([1, 2]);
    }
    if samples.iter().any(|s| s.phase == Phase::Decode) {
        cols.extend([3, 4]);
    }
    cols
}

/// One 1,024-token prefill without cache: the reference batch of the physics checks.
pub(crate) fn prefill_1k() -> BatchShape {
    readers::prefill_batch(vec![PrefillPart {
        num_new_tokens: 1024,
        num_cached_tokens: 0,
    }])
}

/// A decode step of 64 sequences × 1,024 context tokens: the reference batch of the checks.
pub(crate) fn decode_64x1k() -> BatchShape {
    readers::decode_batch(64, 64 * 1024)
}

/// Fits `t = latency + bytes / bandwidth`; returns (bandwidth Gbit/s, latency ms) when identifiable.
fn fit_link(transfers: &[&TransferSample]) -> Option<(f64, f64)> {
    if transfers.len() < 2 {
        return None;
    }
    let x: Vec<Vec<f64>> = transfers.iter().map(|t| vec![1.0, t.bytes as f64 / 1e9]).collect();
    let y: Vec<f64> = transfers.iter().map(|t| t.measured_ms).collect();
    let f = fit::fit_weighted(&x, &y, &vec![1.0; y.len()]);
    (f.beta[1] > 0.0).then(|| (8.0 * 1000.0 / f.beta[1], f.beta[0]))
}

/// Physics checks (DESIGN §2) of whatever a fit informs. `prefill_1k` is (predicted compute of a
/// 1,024-token prefill \[ms\], its slow end within the 95% CI \[ms\], marginal cost \[ms/token\]).
pub fn physics_checks(
    prefill_1k: Option<(f64, f64, f64)>,
    decode_coeffs: Option<&IterationCoefficients>,
    link_gbps: Option<(f64, &str)>,
    kv_statements: &[readers::KvStatement],
    model: &ModelSpec,
    gpu: &GpuSpec,
    tp: u32,
) -> Vec<PhysicsCheck> {
    let mut out = Vec::new();
    let tpf = tp as f64;
    if let Some((t1k, t1k_slow, b1)) = prefill_1k {
        let peak = gpu.peak_bf16_dense_tflops * tpf;
        // FLOP of a 1,024-token prefill: 2·params per token plus causal attention 4·layers·hidden·m·(m/2).
        let m = 1024.0;
        let flop =
            model.flop_per_token() * m + 4.0 * model.num_layers as f64 * model.hidden_size as f64 * m * (m / 2.0);
        let floor_ms = flop / (peak * 1e12) * 1e3;
        let implied = if t1k > 0.0 {
            flop / (t1k * 1e-3) / 1e12
        } else {
            f64::INFINITY
        };
        // Impossible only beyond the fit's uncertainty: even the slow end of its 95% CI beats the peak.
        let ok = t1k_slow >= floor_ms;
        out.push(PhysicsCheck {
            check: "1,024-token prefill compute implies ≤ peak FLOP/s".into(),
            implied,
            limit: peak,
            unit: "TFLOP/s".into(),
            ok,
            message: if ok && t1k >= floor_ms {
                format!("{t1k:.2} ms ≥ {floor_ms:.2} ms at peak ({:.0}% of peak; marginal {:.2} µs/token)", 100.0 * implied / peak, b1 * 1e3)
            } else if ok {
                format!("inconclusive: the point estimate {t1k:.2} ms is below the {floor_ms:.2} ms floor, but the 95% CI reaches {t1k_slow:.2} ms — these timings cannot resolve prefill cost (fixed overheads dominate)")
            } else {
                format!(
                    "{t1k:.3} ms for 1,024 new tokens needs {implied:.0} TFLOP/s, {:.1}× the {}'s peak (≥ {floor_ms:.2} ms): the appended tokens were probably served from the prefix cache, or prefill was hidden behind fixed overheads, so these timings do not measure prefill compute",
                    implied / peak,
                    gpu.name
                )
            },
        });
    }
    if let Some(c) = decode_coeffs {
        let floor_ms = model.weight_bytes() as f64 / tpf / (gpu.hbm_bandwidth_tbps * 1e12) * 1e3;
        let step1 = c.beta0_ms + c.beta3_ms_per_seq;
        out.push(PhysicsCheck {
            check: "batch-1 decode step (β0 + β3) ≥ weight bytes / HBM bandwidth".into(),
            implied: step1,
            limit: floor_ms,
            unit: "ms".into(),
            ok: step1 >= floor_ms,
            message: if step1 >= floor_ms {
                format!("{step1:.2} ms ≥ {floor_ms:.2} ms")
            } else {
                "a decode step faster than reading the weights once: check the TPOT unit, the model or the GPU".into()
            },
        });
        let kv_bw = if c.beta4_ms_per_context_token > 0.0 {
            model.kv_bytes_per_token() as f64 / tpf / (c.beta4_ms_per_context_token * 1e-3) / 1e12
        } else {
            0.0
        };
        out.push(PhysicsCheck {
            check: "decode KV read (β4) implies ≤ HBM bandwidth".into(),
            implied: kv_bw,
            limit: gpu.hbm_bandwidth_tbps,
            unit: "TB/s".into(),
            // β4's floor is exactly the HBM rate: allow rounding at the limit.
            ok: kv_bw <= gpu.hbm_bandwidth_tbps * (1.0 + 1e-9),
            message: if c.beta4_ms_per_context_token == 0.0 {
                "β4 pinned at 0: context length had no measurable effect in these samples".into()
            } else if kv_bw <= gpu.hbm_bandwidth_tbps * (1.0 + 1e-9) {
                format!("{kv_bw:.2} TB/s effective")
            } else {
                "KV reads faster than HBM: contexts were probably shorter than stated".into()
            },
        });
    }
    if let Some((gbps, source)) = link_gbps {
        // NVLink 4 (H100 SXM): 900 GB/s total per GPU, the fastest GPU interconnect in the table.
        let limit = 900.0 * 8.0 * tpf;
        out.push(PhysicsCheck {
            check: "KV link bandwidth ≤ NVLink 4 per-GPU total (900 GB/s × TP)".into(),
            implied: gbps,
            limit,
            unit: "Gbit/s".into(),
            ok: gbps <= limit,
            message: if gbps <= limit {
                format!("{:.1} GB/s ({source})", gbps / 8.0)
            } else {
                "faster than any GPU interconnect: transfers were probably not measured alone".into()
            },
        });
    }
    if !kv_statements.is_empty() {
        let expect = model.kv_bytes_per_token() as f64;
        // With TP above the KV-head count, each KV head is replicated on tp / kv_heads ranks.
        let replication = |tp: u32| (tp as f64 / model.num_kv_heads as f64).max(1.0);
        let worst = kv_statements
            .iter()
            .map(|k| k.bytes as f64 / k.tokens.max(1) as f64 / (expect * replication(k.tp)))
            .fold(1.0f64, |a, r| if (r.ln()).abs() > a.ln().abs() { r } else { a });
        let ok = (0.7..=1.5).contains(&worst);
        out.push(PhysicsCheck {
            check: "stated KV bytes per token match the model (2 × layers × KV heads × head dim × dtype, × KV-head replication when TP > KV heads)".into(),
            implied: worst * expect,
            limit: expect,
            unit: "B/token".into(),
            ok,
            message: if ok {
                format!("within {:.0}% of {} B/token", 100.0 * (worst - 1.0).abs(), expect)
            } else {
                format!("stated {:.0} B/token vs {} B/token for {}: the source probably used the wrong formula (MHA instead of GQA, wrong layer count or unit)", worst * expect, expect, model.name)
            },
        });
    }
    out
}

struct Loaded {
    file: String,
    samples: FileSamples,
}

fn fit_group(
    name: &str,
    files: &[&Loaded],
    opts: &CalibrateOptions,
    default_model: &ModelSpec,
    default_gpu: &GpuSpec,
) -> GroupFit {
    let model = files
        .iter()
        .find_map(|f| f.samples.model.clone())
        .and_then(|m| hardware::model(&m))
        .unwrap_or(default_model);
    let gpu = files
        .iter()
        .find_map(|f| f.samples.gpu.clone())
        .and_then(|g| hardware::gpu(&g))
        .unwrap_or(default_gpu);
    let iters: Vec<&IterationSample> = files.iter().flat_map(|f| f.samples.iterations.iter()).collect();
    let reqs: Vec<&RequestSample> = files.iter().flat_map(|f| f.samples.requests.iter()).collect();
    let transfers: Vec<&TransferSample> = files.iter().flat_map(|f| f.samples.transfers.iter()).collect();
    let kv: Vec<readers::KvStatement> = files
        .iter()
        .flat_map(|f| f.samples.kv_statements.iter().cloned())
        .collect();
    let mut g = GroupFit {
        group: name.into(),
        files: files.iter().map(|f| f.file.clone()).collect(),
        model: model.name.clone(),
        gpu: gpu.name.clone(),
        num_samples: iters.len() + reqs.len() + transfers.len(),
        prefill_1k_ms: None,
        decode_64x1k_ms: None,
        marginal_prefill_us_per_token: None,
        link_bandwidth_gbps: None,
        link_latency_ms: None,
        physics: vec![],
        used_in_combined: false,
        note: String::new(),
    };
    let mut marginal = None;
    let mut decode = None;
    if !iters.is_empty() {
        let cols = informed_columns(&iters);
        let (fr, b) = fit_iterations(&iters, &cols, &physical_floors(model, gpu, opts.tp));
        let c = IterationCoefficients::from_array(b);
        if cols.contains(&1) {
            let t = c.predict_ms(&prefill_1k());
            g.prefill_1k_ms = Some(t);
            let slow = t + fr.ci95_half_width[1] * 1024.0 + fr.ci95_half_width[2] * 1024.0 * 512.0;
            marginal = Some((t, slow, c.beta1_ms_per_token));
        }
        if cols.contains(&3) {
            g.decode_64x1k_ms = Some(c.predict_ms(&decode_64x1k()));
            decode = Some(c);
        }
    } else if !reqs.is_empty() {
        // TTFT = c0 + c_split·split + b1·Σm + b2·Σm(L+m/2) + c_gb·GB: the marginal prefill cost of this source alone.
        let kvb = model.kv_bytes_per_token() as f64;
        // Route and transfer columns only when both routes occur (otherwise they duplicate the intercept and Σm).
        let any_split =
            reqs.iter().any(|r| r.route == RequestRoute::Split) && reqs.iter().any(|r| r.route == RequestRoute::Direct);
        let x: Vec<Vec<f64>> = reqs
            .iter()
            .map(|r| {
                let (m, a) = path_features(r);
                let split = if r.route == RequestRoute::Split { 1.0 } else { 0.0 };
                let mut row = vec![1.0, m, a];
                if any_split {
                    row.extend([split, split * r.kv_tokens as f64 * kvb / 1e9]);
                }
                row
            })
            .collect();
        let y: Vec<f64> = reqs.iter().map(|r| r.measured_ttft_ms).collect();
        let f = fit::fit_weighted(&x, &y, &vec![1.0; y.len()]);
        let t = f.beta[1] * 1024.0 + f.beta[2] * 1024.0 * 512.0;
        g.prefill_1k_ms = Some(t);
        // The slow end uses the unconstrained fit's 95% CI: a slope pinned at 0 by noise (not by
        // physics) then stays inconclusive instead of failing.
        let slow = match fit::ols_weighted(&x, &y, &vec![1.0; y.len()]) {
            Some((b, h)) => (b[1] + h[1]).max(0.0) * 1024.0 + (b[2] + h[2]).max(0.0) * 1024.0 * 512.0,
            None => f64::INFINITY,
        };
        marginal = Some((t, slow.max(t), f.beta[1]));
    }
    g.marginal_prefill_us_per_token = marginal.map(|b| b.2 * 1e3);
    let link = fit_link(&transfers);
    if let Some((bw, lat)) = link {
        g.link_bandwidth_gbps = Some(bw);
        g.link_latency_ms = Some(lat);
    }
    g.physics = physics_checks(
        marginal,
        decode.as_ref(),
        link.map(|l| (l.0, "fitted from transfers")),
        &kv,
        model,
        gpu,
        opts.tp,
    );
    g
}

/// What produced the timings of each reader's files, in a fixed order (engine measurements
/// first), joined by `; `: the `engine` label of a calibration whose options name none.
pub fn engine_label<'a>(readers: impl IntoIterator<Item = &'a str>) -> String {
    const LABELS: [(&str, &str); 7] = [
        ("vllm-ppd", "vLLM 0.13 (V1), vllm-ppd fork"),
        ("llmservingsim", "LLMServingSim profiler v0 (HF eager)"),
        (
            "aiconfigurator",
            "AIConfigurator kernel tables (vLLM 0.24, FlashAttention-3)",
        ),
        ("vidur", "Vidur profiler tables"),
        ("splitwise", "SplitwiseSim performance model"),
        ("ppd-framework", "seed 000 P-PD framework"),
        ("native", "native measurements"),
    ];
    let used: Vec<&str> = readers.into_iter().collect();
    let parts: Vec<&str> = LABELS
        .iter()
        .filter(|(r, _)| used.iter().any(|u| u.starts_with(r)))
        .map(|(_, l)| *l)
        .collect();
    if parts.is_empty() {
        "unknown".into()
    } else {
        parts.join("; ")
    }
}

/// Fits a model to `paths`.
///
/// # Errors
/// Unreadable or unknown files; no usable iteration samples for the requested model and GPU;
/// unknown model or GPU names.
pub fn calibrate(paths: &[PathBuf], opts: &CalibrateOptions) -> InputResult<Calibration> {
    let model = hardware::find_model(&opts.model).map_err(|m| InputError::option("--model", m))?;
    let gpu = hardware::find_gpu(&opts.gpu).map_err(|m| InputError::option("--gpu", m))?;
    // FlashAttention 3's measured β2 (compiled-in tables), for `--attention kernel-table` or `auto`.
    let table_beta2 = reference::flash_attention_beta2(model, gpu);
    if opts.attention == AttentionModel::KernelTable && table_beta2.is_none() {
        return Err(InputError::option(
            "--attention",
            format!(
                "kernel-table: no FlashAttention kernel table for {} on {}: the compiled-in tables are Llama-3.1-8B on H100 SXM; use --attention flash",
                model.name, gpu.name
            ),
        ));
    }
    let bw = opts.declared_bandwidth_gbps;
    if !(bw.is_finite() && bw >= crate::scenario::limits::MIN_BANDWIDTH_GBPS) {
        return Err(InputError::option(
            "--declared-bandwidth-gbps",
            format!(
                "{bw} is not a bandwidth: give Gbit/s, finite and >= {} (NVLink 4: 7200)",
                crate::scenario::limits::MIN_BANDWIDTH_GBPS
            ),
        ));
    }
    let p = opts.answer_mismatch_per_token;
    if !(0.0..1.0).contains(&p) {
        return Err(InputError::option(
            "--answer-mismatch-per-token",
            format!("{p} is not a per-token probability: give a value in [0, 1) (vllm-ppd's cache-info runs: 0.0011)"),
        ));
    }
    let ropts = ReadOptions {
        model: model.clone(),
        gpu: gpu.name.clone(),
        tp: opts.tp,
        block_size: opts.block_size,
        answer_mismatch_per_token: opts.answer_mismatch_per_token,
    };
    // Directories are searched (sorted, recursively) for measurement files.
    let files = crate::input::expand_dirs(paths, |_| true)?;
    let mut loaded = Vec::new();
    for p in &files {
        for samples in readers::read(p, opts.format, &ropts)? {
            loaded.push(Loaded {
                file: p
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                samples,
            });
        }
    }
    // Compose kernel tables (AIConfigurator, Vidur; per group) into forward passes.
    let mut kernel_groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, l) in loaded.iter().enumerate() {
        if l.samples.kernel.is_some() {
            kernel_groups.entry(l.samples.group.clone()).or_default().push(i);
        }
    }
    for idx in kernel_groups.values() {
        let tables: Vec<&readers::KernelTable> = idx
            .iter()
            .map(|&i| loaded[i].samples.kernel.as_ref().unwrap())
            .collect();
        let vidur = tables.iter().any(|t| {
            matches!(
                t,
                readers::KernelTable::VidurMlp(_) | readers::KernelTable::VidurAttention(_)
            )
        });
        let composed = if vidur {
            readers::vidur::compose(&tables, model, opts.tp)
        } else {
            readers::aiconfigurator::compose(&tables, model)
        };
        let np = composed.iter().filter(|s| s.phase == Phase::Prefill).count();
        let nd = composed.len() - np;
        for &i in idx {
            loaded[i].samples.used_for =
                format!("kernel table; the group's tables composed into {np} prefill + {nd} decode forward passes");
        }
        loaded[idx[0]].samples.iterations.extend(composed);
    }
    // Loaded points (one file each, replayed below) are not fitted samples.
    let (point_files, sample_files): (Vec<&Loaded>, Vec<&Loaded>) = loaded
        .iter()
        .partition(|l| l.samples.reader == readers::vllm_ppd::COMPREHENSIVE_READER);
    let mut sources: Vec<SourceUse> = sample_files
        .iter()
        .map(|l| SourceUse {
            file: l.file.clone(),
            reader: l.samples.reader.into(),
            num_samples: l.samples.num_samples(),
            num_dropped: l.samples.num_dropped,
            used_for: if l.samples.num_validation > 0 {
                format!(
                    "{} ({} validation points)",
                    l.samples.used_for, l.samples.num_validation
                )
            } else {
                l.samples.used_for.clone()
            },
        })
        .collect();
    // ... and are listed as one source.
    if let Some(first) = point_files.first() {
        sources.push(SourceUse {
            file: "(comprehensive sweep points)".into(),
            reader: first.samples.reader.into(),
            num_samples: point_files.iter().map(|l| l.samples.loaded_points.len()).sum(),
            num_dropped: point_files.iter().map(|l| l.samples.num_dropped).sum(),
            used_for: first.samples.used_for.clone(),
        });
    }

    // Per-group fits.
    let mut by_group: BTreeMap<String, Vec<&Loaded>> = BTreeMap::new();
    for &l in &sample_files {
        by_group.entry(l.samples.group.clone()).or_default().push(l);
    }
    let mut groups = Vec::new();
    let mut combined_files: Vec<&Loaded> = Vec::new();
    for (name, files) in &by_group {
        let mut g = fit_group(name, files, opts, model, gpu);
        let matches = g.model == model.name && g.gpu == gpu.name;
        let physics_ok = g.physics.iter().all(|p| p.ok);
        let has_samples = g.num_samples > 0;
        g.used_in_combined = matches && physics_ok && has_samples;
        g.note = match (has_samples, matches, physics_ok) {
            (false, _, _) => "validation data only".into(),
            (_, false, _) => format!(
                "measured {} on {}, not {} on {}: fitted alone only",
                g.model, g.gpu, model.name, gpu.name
            ),
            (_, _, false) => "fails a physics check: excluded from the combined fit".into(),
            _ => "used in the combined fit".into(),
        };
        if g.used_in_combined {
            combined_files.extend(files.iter().copied());
        }
        groups.push(g);
    }

    // Combined stage 1: iteration model.
    let iters: Vec<&IterationSample> = combined_files
        .iter()
        .flat_map(|f| f.samples.iterations.iter())
        .collect();
    if !iters.iter().any(|s| s.phase == Phase::Prefill) || !iters.iter().any(|s| s.phase == Phase::Decode) {
        return Err(InputError {
            location: paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            message: format!(
                "the combined fit for {} on {} needs prefill iterations (e.g. an LLMServingSim layers CSV or AIConfigurator tables) and decode iterations (e.g. a vllm-ppd interference JSON) from sources that pass the physics checks; groups: {}",
                model.name,
                gpu.name,
                groups.iter().map(|g| format!("{} ({})", g.group, g.note)).collect::<Vec<_>>().join("; ")
            ),
        });
    }
    // Kernel/layer profiles lack the engine's per-iteration overhead: when an engine-timing source
    // is present, each such group gets its own intercept column instead of β0's.
    let iter_groups: Vec<(&IterationSample, &FileSamples)> = combined_files
        .iter()
        .flat_map(|f| f.samples.iterations.iter().map(move |s| (s, &f.samples)))
        .collect();
    let engine_present = iter_groups.iter().any(|(_, f)| !f.kernel_only);
    let mut kernel_names: Vec<String> = if engine_present {
        iter_groups
            .iter()
            .filter(|(_, f)| f.kernel_only)
            .map(|(_, f)| f.group.clone())
            .collect()
    } else {
        vec![]
    };
    kernel_names.sort();
    kernel_names.dedup();
    let ncol = 5 + kernel_names.len();
    let x: Vec<Vec<f64>> = iter_groups
        .iter()
        .map(|(s, f)| {
            let mut row = IterationCoefficients::features(&s.batch).to_vec();
            row.resize(ncol, 0.0);
            if let Some(k) = kernel_names.iter().position(|n| *n == f.group) {
                row[0] = 0.0;
                row[5 + k] = 1.0;
            }
            row
        })
        .collect();
    let y: Vec<f64> = iters.iter().map(|s| s.measured_ms).collect();
    let w: Vec<f64> = y.iter().map(|v| 1.0 / v.max(1e-6)).collect();
    let mut floors = physical_floors(model, gpu, opts.tp).to_vec();
    floors.resize(ncol, 0.0);
    let f = fit::fit_weighted_floor(&x, &y, &w, &floors);
    let b = [f.beta[0], f.beta[1], f.beta[2], f.beta[3], f.beta[4]];
    let mut coeffs = IterationCoefficients::from_array(b);
    let eager_profiles = loaded.iter().any(|l| l.samples.reader.starts_with("llmservingsim"));
    let (flash, from_table) = match opts.attention {
        AttentionModel::Flash => (true, false),
        AttentionModel::Fitted => (false, false),
        AttentionModel::KernelTable => (true, true),
        AttentionModel::Auto => (eager_profiles, eager_profiles && table_beta2.is_some()),
    };
    let attention_note = flash.then(|| {
        // FlashAttention's FLOP count at β1's rate, per instance (tensor parallelism divides
        // both FLOP counts alike, so it cancels).
        let flop_per_pair = 4.0 * model.num_layers as f64 * model.num_attention_heads as f64 * model.head_dim as f64;
        let ms_per_flop = coeffs.beta1_ms_per_token / model.flop_per_token();
        let flash_beta2 = flop_per_pair * ms_per_flop;
        let fitted = coeffs.beta2_ms_per_token2;
        match table_beta2.filter(|_| from_table) {
            Some((beta2, linear, rows)) => {
                coeffs.beta2_ms_per_token2 = beta2;
                format!(
                    "beta2 set to FlashAttention 3's measured cost (--attention kernel-table): AIConfigurator's H100 context-attention table (vLLM 0.24), batch 1, {rows} lengths from 1,024 to 16,384 tokens, fitted as a*m + beta2*m^2/2 = {linear:.3e} ms/token + {beta2:.4e} ms per pair ({:.2}x the FLOP count at beta1's rate, {flash_beta2:.4e}); the profiles' fitted value {fitted:.4e} describes their eager attention",
                    beta2 / flash_beta2
                )
            }
            None => {
                coeffs.beta2_ms_per_token2 = flash_beta2;
                format!(
                    "beta2 set to FlashAttention's cost (--attention flash): {flop_per_pair:.0} FLOP per query-key pair at the {:.0} TFLOP/s beta1 implies = {flash_beta2:.4e} ms; the profiles' fitted value {fitted:.4e} describes their eager attention",
                    1.0 / ms_per_flop / 1e9,
                )
            }
        }
    });
    let pred: Vec<f64> = x.iter().map(|xi| fit::predict(xi, &f.beta)).collect();
    let cv = cross_validated(&x, &y, &w, 5, &floors);
    let kernel_group_intercepts: Vec<Coefficient> = kernel_names
        .iter()
        .enumerate()
        .map(|(k, n)| {
            coefficient(
                &format!("beta0_ms[{n}]"),
                "ms",
                f.beta[5 + k],
                f.ci95_half_width[5 + k],
                f.at_bound[5 + k],
            )
        })
        .collect();
    let mut phases = Vec::new();
    let mut points = Vec::new();
    let mut outliers = Vec::new();
    let mut add_phase = |(pf, o, p): (PhaseFit, Vec<Outlier>, Vec<FitPoint>)| {
        phases.push(pf);
        outliers.extend(o);
        points.extend(p);
    };
    for ph in [Phase::Prefill, Phase::Decode] {
        let idx: Vec<usize> = (0..iters.len()).filter(|&i| iters[i].phase == ph).collect();
        add_phase(phase_summary(ph.name(), &idx, &y, &pred, &cv, &|i| {
            iters[i].label.clone()
        }));
    }
    let mut coefficients: Vec<Coefficient> = (0..5)
        .map(|j| {
            coefficient(
                COEFFICIENT_NAMES[j],
                COEFFICIENT_UNITS[j],
                f.beta[j],
                f.ci95_half_width[j],
                f.at_bound[j],
            )
        })
        .collect();
    if attention_note.is_some() {
        // Derived, not fitted: no interval.
        coefficients[2] = coefficient(
            COEFFICIENT_NAMES[2],
            COEFFICIENT_UNITS[2],
            coeffs.beta2_ms_per_token2,
            0.0,
            false,
        );
    }

    // Combined stage 2: overheads and link.
    let reqs: Vec<&RequestSample> = combined_files.iter().flat_map(|f| f.samples.requests.iter()).collect();
    let transfers: Vec<&TransferSample> = combined_files.iter().flat_map(|f| f.samples.transfers.iter()).collect();
    let kvb = model.kv_bytes_per_token() as f64;
    let direct_link = fit_link(&transfers);
    let fitted_link = direct_link.map(|(bw, lat)| KvTransfer {
        bandwidth_gbps: bw,
        latency_ms: lat,
        source: "fitted".into(),
        note: format!("fitted from {} transfer samples", transfers.len()),
        prefill_waits_for_send: None,
        load_ms: None,
    });
    let zero = |n: &str| coefficient(n, "ms", 0.0, 0.0, true);
    let (mut overheads, kv_transfer) = if reqs.is_empty() {
        (
            Overheads {
                request_overhead_ms: zero("request_overhead_ms"),
                pd_handoff_ms: zero("pd_handoff_ms"),
                pd_handoff_p_service_ms: None,
                pd_handoff_d_service_ms: None,
                request_service_ms: None,
                prompt_ms_per_token: None,
                service_cv: None,
                client_requeue_rate: None,
                stream_ms_per_chunk: None,
                engine_admit_ms: None,
                pd_handoff_queue: None,
            },
            fitted_link.unwrap_or_else(|| KvTransfer {
                bandwidth_gbps: opts.declared_bandwidth_gbps,
                latency_ms: 0.0,
                source: "declared".into(),
                note: "no request samples: overheads set to 0".into(),
                prefill_waits_for_send: None,
                load_ms: None,
            }),
        )
    } else {
        let mut rx = Vec::new();
        let mut ry = Vec::new();
        let mut computes = Vec::new();
        for s in &reqs {
            let compute = path_compute(&coeffs, s);
            let split = if s.route == RequestRoute::Split { 1.0 } else { 0.0 };
            let gb = split * s.kv_tokens as f64 * kvb / 1e9;
            // Paid once per request, at its entry (see `SimConfig::prompt_ms_per_token`).
            let prompt_hops = prompt_tokens(s) as f64;
            rx.push(if direct_link.is_some() {
                vec![1.0, split, prompt_hops]
            } else {
                vec![1.0, split, prompt_hops, gb]
            });
            // A directly fitted link's transfer time is part of the path.
            let xfer = direct_link.map_or(0.0, |(bw, lat)| split * (lat + gb * 8.0 * 1000.0 / bw));
            ry.push(s.measured_ttft_ms - compute - xfer);
            computes.push(compute + xfer);
        }
        let has_split = reqs.iter().any(|s| s.route == RequestRoute::Split);
        let ones = vec![1.0; ry.len()];
        let g = fit::fit_weighted(&rx, &ry, &ones);
        let rpred: Vec<f64> = rx
            .iter()
            .zip(&computes)
            .map(|(x, c)| c + fit::predict(x, &g.beta))
            .collect();
        let meas: Vec<f64> = reqs.iter().map(|s| s.measured_ttft_ms).collect();
        let cvr = cross_validated(&rx, &ry, &ones, 5, &vec![0.0; rx[0].len()]);
        let cvp: Vec<f64> = cvr.iter().zip(&computes).map(|(r, c)| r + c).collect();
        let idx: Vec<usize> = (0..reqs.len()).collect();
        add_phase(phase_summary("request-ttft", &idx, &meas, &rpred, &cvp, &|i| {
            reqs[i].label.clone()
        }));
        let kv = if let Some(link) = fitted_link {
            link
        } else {
            let ms_per_gb = g.beta[3];
            let identifiable = has_split && !g.at_bound[3] && ms_per_gb - g.ci95_half_width[3] > 0.0;
            if identifiable {
                KvTransfer { bandwidth_gbps: 8.0 * 1000.0 / ms_per_gb, latency_ms: 0.0, source: "fitted".into(), note: format!("{ms_per_gb:.3} ms/GB (95% CI ±{:.3}) from split-route TTFTs; fixed latency folded into pd_handoff_ms", g.ci95_half_width[3]), prefill_waits_for_send: None, load_ms: None }
            } else {
                KvTransfer {
                    bandwidth_gbps: opts.declared_bandwidth_gbps,
                    latency_ms: 0.0,
                    source: "declared".into(),
                    note: format!("not identifiable from these files (fitted {ms_per_gb:.3} ms/GB, 95% CI ±{:.3} includes 0: transfer time is hidden by fixed overheads); declared value used", g.ci95_half_width[3]),
                    prefill_waits_for_send: None,
                    load_ms: None,
                }
            }
        };
        (
            Overheads {
                request_overhead_ms: coefficient(
                    "request_overhead_ms",
                    "ms",
                    g.beta[0],
                    g.ci95_half_width[0],
                    g.at_bound[0],
                ),
                pd_handoff_ms: coefficient("pd_handoff_ms", "ms", g.beta[1], g.ci95_half_width[1], g.at_bound[1]),
                pd_handoff_p_service_ms: None,
                pd_handoff_d_service_ms: None,
                request_service_ms: None,
                service_cv: None,
                client_requeue_rate: None,
                stream_ms_per_chunk: None,
                engine_admit_ms: None,
                pd_handoff_queue: None,
                prompt_ms_per_token: Some(coefficient(
                    "prompt_ms_per_token",
                    "ms/token",
                    g.beta[2],
                    g.ci95_half_width[2],
                    g.at_bound[2],
                )),
            },
            kv,
        )
    };
    // Serialized request handling, from the burst TTFT ramps.
    let ramps: Vec<(f64, f64)> = combined_files
        .iter()
        .flat_map(|f| f.samples.ramps.iter().copied())
        .collect();
    if overheads.request_overhead_ms.value > 0.0 {
        if let Some((service, half)) = readers::vllm_ppd::ramp_service_ms(&ramps) {
            overheads.request_service_ms = Some(coefficient(
                "request_service_ms",
                "ms",
                service.min(overheads.request_overhead_ms.value),
                half,
                false,
            ));
        }
    }
    let kv_all: Vec<readers::KvStatement> = combined_files
        .iter()
        .flat_map(|f| f.samples.kv_statements.iter().cloned())
        .collect();
    let t1k = coeffs.predict_ms(&prefill_1k());
    let t1k_slow = t1k + f.ci95_half_width[1] * 1024.0 + f.ci95_half_width[2] * 1024.0 * 512.0;
    let mut file = CalibrationFile {
        schema_version: SCHEMA_VERSION,
        model: model.name.clone(),
        gpu: gpu.name.clone(),
        tp: opts.tp,
        engine: if opts.engine.is_empty() {
            engine_label(loaded.iter().map(|l| l.samples.reader))
        } else {
            opts.engine.clone()
        },
        iteration: IterationFit {
            formula: "t_iter_ms = beta0 + beta1*sum(m) + beta2*sum(m*(L+m/2)) + beta3*n_decode + beta4*sum(c)".into(),
            coefficients,
            kernel_group_intercepts,
            attention_note,
        },
        overheads,
        kv_transfer,
        answer_mismatch_per_token: (opts.answer_mismatch_per_token > 0.0).then_some(opts.answer_mismatch_per_token),
        cascade_attention: opts.cascade_attention.then_some(true),
        phases,
        sources,
        physics: Vec::new(),
        groups,
        outliers,
        replay: None,
        uncalibrated: None,
    };
    // Replay settings other than the defaults (0) are recorded: runs and validations use them.
    let recorded = |v: f64| (v > 0.0).then_some(v);
    file.overheads.service_cv = recorded(opts.overhead_service_cv);
    file.overheads.client_requeue_rate = recorded(opts.client_requeue_rate);
    file.overheads.stream_ms_per_chunk = recorded(opts.stream_ms_per_chunk);
    file.overheads.engine_admit_ms = recorded(opts.engine_admit_ms.unwrap_or(0.0));
    file.kv_transfer.load_ms = recorded(opts.kv_load_ms.unwrap_or(0.0));
    let replay_points: Vec<replay::Point> = loaded
        .iter()
        .flat_map(|l| l.samples.loaded_points.iter())
        .filter_map(validate_point)
        .collect();
    let lowqps_points: Vec<crate::validate::LowQpsPoint> = loaded
        .iter()
        .flat_map(|l| l.samples.lowqps_points.iter().cloned())
        .collect();
    if !replay_points.is_empty() && opts.replay {
        // The mechanism the fitted shares mean something with: recorded for runs and validations.
        file.overheads.pd_handoff_queue = Some(opts.pd_handoff_queue);
        file.kv_transfer.prefill_waits_for_send = opts.prefill_waits_for_send.then_some(true);
        let bursts = interference_core(paths);
        file.replay = Some(replay_fit(
            &mut file,
            &replay_points,
            &lowqps_points,
            bursts.as_ref().map(|(p, v)| (p.as_path(), v)),
            opts,
        )?);
    }
    // Checked once, on the final model (the replay's decode refit moves β0 and β3).
    let coeffs = file.coefficients().expect("fitted coefficients");
    file.physics = physics_checks(
        Some((t1k, t1k_slow, coeffs.beta1_ms_per_token)),
        Some(&coeffs),
        Some((file.kv_transfer.bandwidth_gbps, file.kv_transfer.source.as_str())),
        &kv_all,
        model,
        gpu,
        opts.tp,
    );
    if opts.tp == 1 {
        file.physics.extend(reference::kernel_checks(&coeffs, model, gpu));
    }
    Ok(Calibration { file, points })
}

/// A comprehensive point's (config, workload, QPS, JSON) when the replay fit uses it: a config
/// and workload it can simulate, and a measured success rate at or above the knee criterion (the
/// objective compares only those; points past the knee are slow to simulate and carry no TTFT
/// of the requests that failed).
fn validate_point(v: &serde_json::Value) -> Option<replay::Point> {
    let (c, w, q) = (v["config"].as_str()?, v["workload"].as_str()?, v["qps"].as_f64()?);
    crate::validate::deployment_for_config(c)?;
    if v["success_rate"].as_f64()? < crate::validate::KNEE_MIN_SUCCESS_PCT {
        return None;
    }
    Some((c.to_string(), w.to_string(), q, v.clone()))
}

/// The first of `paths` that [`readers::vllm_ppd::detect`] reads as a vllm-ppd interference
/// experiment of type `core`, parsed; `None` when there is none (files it cannot read are
/// skipped: their own readers have reported them).
fn interference_core(paths: &[PathBuf]) -> Option<(PathBuf, serde_json::Value)> {
    paths.iter().filter(|p| p.is_file()).find_map(|p| {
        let v: serde_json::Value = serde_json::from_str(&readers::read_text(p).ok()?).ok()?;
        (readers::vllm_ppd::detect(&v) == Some(readers::Format::VllmPpdInterference) && v["experiment_type"] == "core")
            .then(|| (p.clone(), v))
    })
}

/// Fits the overheads by replaying `points` and the low-QPS points (see [`replay`]), writes them
/// into `file`'s overheads, and returns the report (with leave-one-configuration-out folds when
/// `opts.loco`, and what the interference `bursts`, when given, say the engine's admission work
/// is with the fitted rest held). From `opts`: the parameters the replay fits, whether β3 is
/// refitted first (with D's KV load when `opts.kv_load_ms` does not hold it), the admission work
/// and where progress goes.
///
/// When `opts.engine_admit_ms` is `None` and `bursts` are given, the admission work is
/// identified by coordinate passes: β3, the load and the overheads are fitted at a held value
/// (first `file`'s, 0 unless recorded), [`replay::burst_admission`] finds the value the bursts
/// fit best with that rest, and the fit is redone from the same start at that value until
/// [`replay::admission_settled`] (at most [`replay::MAX_ADMISSION_PASSES`]); the passes are
/// reported in `engine_admit_passes`. Starting each pass from the same model makes the result
/// the one a held `opts.engine_admit_ms` at the final value gives.
fn replay_fit(
    file: &mut CalibrationFile,
    points: &[replay::Point],
    lowqps: &[crate::validate::LowQpsPoint],
    bursts: Option<(&std::path::Path, &serde_json::Value)>,
    opts: &CalibrateOptions,
) -> InputResult<ReplayFit> {
    let (loco, params, decode_refit) = (opts.loco, opts.replay_params, opts.decode_refit);
    let (fit_kv_load, progress) = (opts.kv_load_ms.is_none(), &opts.progress);
    let request_fitted = params == replay::ReplayParams::HandoffAndRequest;
    let fail = |e: anyhow::Error| InputError {
        location: "comprehensive points".into(),
        message: format!("replay fit failed: {e}"),
    };
    let kv_load_start = file.kv_load_ms();
    // Admission work is identified (not held) when it was not given and the bursts are here:
    // each pass fits the rest from the same start at the held value, then asks the bursts.
    let identify = opts.engine_admit_ms.is_none();
    let start = file.clone();
    let mut admit_passes = Vec::new();
    let (decode, before, fitted, objective) = loop {
        let decode = if decode_refit {
            progress.set_message(if fit_kv_load {
                "β3 and KV load from TPOTs"
            } else {
                "β3 from TPOTs"
            });
            let r = if fit_kv_load {
                replay::fit_beta3_and_kv_load(points, file, 0, progress)
            } else {
                replay::fit_beta3(points, file, 0, progress)
            }
            .map_err(fail)?;
            *file = replay::with_beta3(file, r.beta3);
            if let Some(l) = r.kv_load_ms {
                file.kv_transfer.load_ms = (l > 0.0).then_some(l);
            }
            Some(r)
        } else {
            None
        };
        let before = replay::combined_objective(
            &replay::simulate(points, file, 0, replay::REPLAYS),
            &replay::simulate_lowqps(lowqps, file, 0),
        );
        progress.set_message("overheads by replay");
        let (fitted, objective) = replay::fit(points, lowqps, file, 0, params, progress).map_err(fail)?;
        *file = fitted.apply(file);
        let Some((path, v)) = bursts.filter(|_| identify) else {
            break (decode, before, fitted, objective);
        };
        progress.set_message("engine admission work from the interference bursts");
        let check = replay::burst_admission(path, v, file).map_err(fail)?;
        let (held, next, settled) = (check.held_ms, check.admit_ms, replay::admission_settled(&check));
        admit_passes.push(check);
        if settled || admit_passes.len() == replay::MAX_ADMISSION_PASSES {
            break (decode, before, fitted, objective);
        }
        // Not settled means the best beats the held value by the tolerance: another value.
        assert_ne!(held, next, "an unsettled admission pass proposes the value it held");
        *file = start.clone();
        file.overheads.engine_admit_ms = (next > 0.0).then_some(next);
    };
    let rows = replay::simulate(points, file, 0, crate::validate::COMPREHENSIVE_REPLICAS);
    let configs = replay::configs(points);
    let by_config = configs
        .iter()
        .map(|c| {
            let mine: Vec<_> = rows.iter().filter(|r| &r.config == c).cloned().collect();
            ConfigError {
                config: c.clone(),
                t2_p50_error_pct: replay::t2_p50_error_pct(&mine),
                t2_p50_floor_pct: Some(replay::t2_p50_floor_pct(&mine)).filter(|x| x.is_finite()),
            }
        })
        .collect();
    let folds = if loco && configs.len() > 1 {
        replay::leave_one_config_out(
            points,
            lowqps,
            file,
            0,
            params,
            decode.map(|d| replay::DecodeStart {
                beta3_regression: d.beta3_regression,
                kv_load_ms: fit_kv_load.then_some(kv_load_start),
            }),
            progress,
        )
        .map_err(fail)?
        .into_iter()
        .map(|f| LocoFold {
            held_out: f.config,
            request_overhead_ms: request_fitted.then_some(f.fitted.request_overhead_ms),
            prompt_ms_per_token: request_fitted.then_some(f.fitted.prompt_ms_per_token),
            pd_handoff_ms: f.fitted.total_ms,
            pd_handoff_p_service_ms: f.fitted.p_service_ms,
            pd_handoff_d_service_ms: f.fitted.d_service_ms,
            beta3_ms_per_seq: f.beta3,
            kv_load_ms: f.kv_load_ms,
            held_out_t2_p50_error_pct: f.held_out_t2_p50_pct,
        })
        .collect()
    } else {
        Vec::new()
    };
    Ok(ReplayFit {
        num_points: points.len(),
        replays_per_point: replay::REPLAYS,
        objective_before: before,
        objective_after: objective,
        request_overhead_ms: request_fitted.then_some(fitted.request_overhead_ms),
        prompt_ms_per_token: request_fitted.then_some(fitted.prompt_ms_per_token),
        pd_handoff_ms: fitted.total_ms,
        pd_handoff_p_service_ms: fitted.p_service_ms,
        pd_handoff_d_service_ms: fitted.d_service_ms,
        decode_refit: decode.map(|d| crate::calibrate::model_file::DecodeRefitReport {
            beta3_regression_ms_per_seq: d.beta3_regression,
            beta3_ms_per_seq: d.beta3,
            beta0_ms: file.iteration.coefficients[0].value,
            kv_load_ms: d.kv_load_ms,
            tpot_objective_before: d.objective_before,
            tpot_objective_after: d.objective_after,
        }),
        t2_p50_error_pct_by_config: by_config,
        leave_one_config_out: folds,
        burst_admission: match admit_passes.last() {
            Some(last) => Some(last.clone()),
            None => bursts
                .map(|(path, v)| replay::burst_admission(path, v, file))
                .transpose()
                .map_err(fail)?,
        },
        engine_admit_passes: admit_passes,
    })
}

/// A human-readable report.
pub fn report(c: &Calibration) -> String {
    use std::fmt::Write;
    let f = &c.file;
    let mut s = String::new();
    let _ = writeln!(s, "calibration: {} on {} ({})", f.model, f.gpu, f.engine);
    let _ = writeln!(s, "sources:");
    for src in &f.sources {
        let _ = writeln!(
            s,
            "  {:<66} {:<24} {:>5} samples {:>3} dropped → {}",
            src.file, src.reader, src.num_samples, src.num_dropped, src.used_for
        );
    }
    let _ = writeln!(s, "each source group alone (1k prefill = one 1,024-token prefill iteration; decode = 64 sequences × 1,024 context):");
    let _ = writeln!(
        s,
        "  {:<34} {:>7} {:>13} {:>13} {:>15} {:>12}  physics / use",
        "group", "samples", "1k prefill ms", "decode ms", "marginal µs/tok", "link Gbit/s"
    );
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |x| format!("{x:.p$}"));
    for g in &f.groups {
        let failed: Vec<&PhysicsCheck> = g.physics.iter().filter(|p| !p.ok).collect();
        let _ = writeln!(
            s,
            "  {:<34} {:>7} {:>13} {:>13} {:>15} {:>12}  {} — {}",
            g.group,
            g.num_samples,
            opt(g.prefill_1k_ms, 2),
            opt(g.decode_64x1k_ms, 2),
            opt(g.marginal_prefill_us_per_token, 3),
            opt(g.link_bandwidth_gbps, 0),
            if failed.is_empty() { "ok" } else { "FAIL" },
            g.note
        );
        for p in failed {
            let _ = writeln!(
                s,
                "      [FAIL] {}: implied {:.3} {} vs limit {:.3} — {}",
                p.check, p.implied, p.unit, p.limit, p.message
            );
        }
    }
    let _ = writeln!(s, "combined iteration model: {}", f.iteration.formula);
    for co in &f.iteration.coefficients {
        let _ = writeln!(
            s,
            "  {:<28} {:>12.6e} {:<16} 95% CI [{:.6e}, {:.6e}]{}",
            co.name,
            co.value,
            co.unit,
            co.ci95_low,
            co.ci95_high,
            if co.at_bound { "  (at its lower bound)" } else { "" }
        );
    }
    if let Some(note) = &f.iteration.attention_note {
        let _ = writeln!(s, "  ({note})");
    }
    for co in f
        .iteration
        .kernel_group_intercepts
        .iter()
        .chain([&f.overheads.request_overhead_ms, &f.overheads.pd_handoff_ms])
        .chain(f.overheads.request_service_ms.as_ref())
        .chain(f.overheads.pd_handoff_p_service_ms.as_ref())
        .chain(f.overheads.pd_handoff_d_service_ms.as_ref())
        .chain(f.overheads.prompt_ms_per_token.as_ref())
    {
        let _ = writeln!(
            s,
            "  {:<28} {:>12.prec$} {:<16} 95% CI [{:.prec$}, {:.prec$}]{}",
            co.name,
            co.value,
            co.unit,
            co.ci95_low,
            co.ci95_high,
            if co.at_bound { "  (at its lower bound)" } else { "" },
            prec = if co.unit == "ms/token" { 5 } else { 3 }
        );
    }
    let _ = writeln!(
        s,
        "  kv link bandwidth            {:>12.1} Gbit/s, latency {:.3} ms ({}: {})",
        f.kv_transfer.bandwidth_gbps, f.kv_transfer.latency_ms, f.kv_transfer.source, f.kv_transfer.note
    );
    let _ = writeln!(s, "fit quality:");
    for p in &f.phases {
        let _ = writeln!(
            s,
            "  {:<14} n={:<5} R²={:.4}  RMSE={:.3} ms  MAPE={:.2}%  5-fold CV MAPE={:.2}%",
            p.phase, p.num_samples, p.r_squared, p.rmse_ms, p.mape_pct, p.cv_mape_pct
        );
    }
    if !f.outliers.is_empty() {
        let _ = writeln!(s, "worst-fitted samples:");
        for o in &f.outliers {
            let _ = writeln!(
                s,
                "  {:<14} {:<40} measured {:>9.2} ms, predicted {:>9.2} ms ({:+.1}%)",
                o.phase,
                o.label,
                o.measured_ms,
                o.predicted_ms,
                100.0 * (o.predicted_ms - o.measured_ms) / o.measured_ms
            );
        }
    }
    if let Some(r) = &f.replay {
        if let Some(d) = &r.decode_refit {
            let _ = writeln!(
                s,
                "per-sequence decode cost refitted to the {} loaded points' turn-1 and turn-2 mean TPOT (decodes without a shared prefix; β0 + β3 held): beta3 {:.4} → {:.4} ms/decode-seq, beta0 → {:.3} ms; TPOT mean |ln(pred/meas)| {:.4} → {:.4} (the decode fit quality above is the regression's, on the interference study's shared-prefix bursts)",
                r.num_points,
                d.beta3_regression_ms_per_seq,
                d.beta3_ms_per_seq,
                d.beta0_ms,
                d.tpot_objective_before,
                d.tpot_objective_after
            );
            if let Some(l) = d.kv_load_ms {
                let _ = writeln!(
                    s,
                    "  fitted with it: D's engine loads each received request's KV in {l:.2} ms ({:.0} µs per attention layer; vLLM's P2pNcclConnector start_load_kv receives and copies each layer in the worker before the step's forward pass; --kv-load-ms MS holds it)",
                    1000.0 * l / crate::hardware::model(&f.model).map_or(1, |m| m.num_layers) as f64
                );
            }
        }
        let _ = writeln!(
            s,
            "overheads fitted by replaying {} loaded points ({} replays each) and the low-QPS files (objective: mean over the campaigns of mean |ln(pred/meas)|, loaded points' T1 p50, T2 p50, T2 p99 TTFT, low-QPS T2 p50 TTFT; {:.3} → {:.3}):",
            r.num_points, r.replays_per_point, r.objective_before, r.objective_after
        );
        if f.stream_ms_per_chunk() > 0.0 {
            let _ = writeln!(
                s,
                "  with each API server streaming an output chunk in {:.2} ms (--stream-ms-per-chunk; recorded in the model file)",
                f.stream_ms_per_chunk()
            );
        }
        if f.engine_admit_ms() > 0.0 {
            let _ = writeln!(
                s,
                "  with each engine spending {:.2} ms on a request's first admission, in the step that first schedules it ({}; recorded in the model file)",
                f.engine_admit_ms(),
                if r.engine_admit_passes.is_empty() {
                    "--engine-admit-ms"
                } else {
                    "identified from the interference bursts, below"
                }
            );
        }
        // A load the decode refit fitted has its line above; a held one (--kv-load-ms) here.
        let load_fitted = r.decode_refit.as_ref().is_some_and(|d| d.kv_load_ms.is_some());
        if f.kv_load_ms() > 0.0 && !load_fitted {
            let _ = writeln!(
                s,
                "  with D's engine loading each received request's KV in {:.2} ms (--kv-load-ms; recorded in the model file)",
                f.kv_load_ms()
            );
        }
        if f.prefill_waits_for_send() {
            let _ = writeln!(
                s,
                "  with P's engine waiting for each split prompt's KV send at {:.0} Gbit/s (--prefill-waits-for-send; recorded in the model file)",
                f.kv_transfer.bandwidth_gbps
            );
        }
        if let (Some(req), Some(tok)) = (r.request_overhead_ms, r.prompt_ms_per_token) {
            let _ = writeln!(
                s,
                "  request_overhead_ms {req:.1}, prompt_ms_per_token {tok:.5} (once per request)"
            );
        }
        let p_share = match f.pd_handoff_queue() {
            crate::sim::HandoffQueue::PrefillEngine => "in P's engine per split prompt",
            crate::sim::HandoffQueue::PerPrefill => "serialized per P instance",
            crate::sim::HandoffQueue::Cluster => "serialized in one queue for all P instances",
        };
        let _ = writeln!(
            s,
            "  pd_handoff_ms {:.1} = {:.1} {p_share} + {:.1} serialized at D's API server + {:.1} latency",
            r.pd_handoff_ms,
            r.pd_handoff_p_service_ms,
            r.pd_handoff_d_service_ms,
            r.pd_handoff_ms - r.pd_handoff_p_service_ms - r.pd_handoff_d_service_ms
        );
        for c in &r.t2_p50_error_pct_by_config {
            let floor = c
                .t2_p50_floor_pct
                .map_or(String::new(), |f| format!(" (run-to-run floor {f:.1}%)"));
            let _ = writeln!(
                s,
                "  {:<12} turn-2 p50 TTFT median |error| below saturation {:>5.1}%{floor}",
                c.config, c.t2_p50_error_pct
            );
        }
        if !r.leave_one_config_out.is_empty() {
            let _ = writeln!(
                s,
                "leave-one-configuration-out cross-validation (fit on the others, predict the one held out):"
            );
            for fold in &r.leave_one_config_out {
                let request = match (fold.request_overhead_ms, fold.prompt_ms_per_token) {
                    (Some(req), Some(tok)) => format!("request {req:.1} ms, {:.2} µs/prompt token, ", tok * 1000.0),
                    _ => String::new(),
                };
                let request = match fold.kv_load_ms {
                    Some(l) => format!("D's KV load {l:.2} ms, {request}"),
                    None => request,
                };
                let request = match fold.beta3_ms_per_seq {
                    Some(b3) => format!("beta3 {b3:.4} ms, {request}"),
                    None => request,
                };
                // The held-out configuration's run-to-run floor (of the full fit's replays).
                let floor = r
                    .t2_p50_error_pct_by_config
                    .iter()
                    .find(|c| c.config == fold.held_out)
                    .and_then(|c| c.t2_p50_floor_pct)
                    .map_or(String::new(), |f| format!(" (floor {f:.1}%)"));
                let _ = writeln!(
                    s,
                    "  held out {:<12} fitted {request}handoff {:.1} ms (P {:.1}, D {:.1}) → turn-2 p50 TTFT median |error| {:>5.1}%{floor}",
                    fold.held_out,
                    fold.pd_handoff_ms,
                    fold.pd_handoff_p_service_ms,
                    fold.pd_handoff_d_service_ms,
                    fold.held_out_t2_p50_error_pct
                );
            }
        }
        if !r.engine_admit_passes.is_empty() {
            let cascade = if f.cascade_attention() {
                ", replayed with cascade attention"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "engine admission work identified from the interference bursts{cascade} (each pass fits the rest at the held value, then finds the bursts' best; their decode-only TPOT and batch time, mean |ln(pred/meas)|):"
            );
            for (k, b) in r.engine_admit_passes.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  pass {}: held {:.2} ms ({:.4}) → best {:.2} ms ({:.4})",
                    k + 1,
                    b.held_ms,
                    b.held_objective,
                    b.admit_ms,
                    b.objective
                );
            }
            let last = r.engine_admit_passes.last().expect("not empty");
            let _ = if replay::admission_settled(last) {
                writeln!(
                    s,
                    "  settled at {:.2} ms (its objective within {:.0}% of the best)",
                    last.held_ms,
                    100.0 * replay::ADMISSION_TOLERANCE
                )
            } else {
                writeln!(
                    s,
                    "  NOT settled; kept {:.2} ms after {} passes",
                    last.held_ms,
                    r.engine_admit_passes.len()
                )
            };
        } else if let Some(b) = &r.burst_admission {
            let _ = writeln!(
                s,
                "engine admission work the interference bursts identify with the rest held: {:.2} ms (their decode-only TPOT and batch time, mean |ln(pred/meas)| {:.4}; {:.4} at the held {:.2} ms, {:.4} with admission free)",
                b.admit_ms, b.objective, b.held_objective, b.held_ms, b.free_objective
            );
        }
    }
    let _ = writeln!(s, "physics checks of the combined model:");
    for p in &f.physics {
        let _ = writeln!(
            s,
            "  [{}] {}: implied {:.3} {} vs limit {:.3} — {}",
            if p.ok { " ok " } else { "FAIL" },
            p.check,
            p.implied,
            p.unit,
            p.limit,
            p.message
        );
    }
    s
}

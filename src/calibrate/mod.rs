//! `ppdsim calibrate`: fit the iteration-time model and the fixed overheads to real measurements.
//!
//! Two stages:
//! 1. **Iteration model** (see [`crate::cost_model`]): weighted non-negative least squares over
//!    every iteration sample (prefill forward passes, decode steps), weights `1/measured` so the
//!    fit minimises *relative* error across 1 ms and 60 ms samples alike.
//! 2. **Request overheads and KV link**: for each low-load request sample, the residual
//!    `measured TTFT − Σ predicted iteration times on its path` is regressed (NNLS) on
//!    `[1, split, split × GB transferred]`, giving `request_overhead_ms`, `pd_handoff_ms` and the
//!    link's ms/GB. When the bandwidth term is pinned at zero or its interval includes zero, the
//!    bandwidth is not identifiable from the data and the declared value is kept (and said so).
//!
//! Then the physics checks of DESIGN §2 run against the model and GPU tables.

pub mod fit;
pub mod model_file;
pub mod readers;

use crate::cost_model::{BatchShape, IterationCoefficients, PrefillPart, COEFFICIENT_NAMES, COEFFICIENT_UNITS};
use crate::error::{InputError, InputResult};
use crate::hardware;
use model_file::*;
use readers::{IterationSample, Phase, RequestRoute, RequestSample};
use std::path::PathBuf;

/// Options of a calibration run.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Model name in the spec table.
    pub model: String,
    /// GPU name in the spec table.
    pub gpu: String,
    /// Engine label recorded in the file.
    pub engine: String,
    /// KV block size used to compute prefix-cache hits of request samples \[tokens\].
    pub block_size: u32,
    /// Bandwidth used when the data cannot identify it [Gbit/s].
    pub declared_bandwidth_gbps: f64,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            model: "llama-3.1-8b".into(),
            gpu: "h100-sxm".into(),
            engine: "vLLM 0.13 (V1), vllm-ppd fork; LLMServingSim profiler v0 (HF eager)".into(),
            block_size: 16,
            declared_bandwidth_gbps: 1200.0,
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
    /// Every fitted point.
    pub points: Vec<FitPoint>,
}

fn iteration_batch(s: &IterationSample) -> BatchShape {
    BatchShape {
        prefill: if s.num_new_tokens > 0 {
            vec![PrefillPart {
                num_new_tokens: s.num_new_tokens,
                num_cached_tokens: s.num_cached_tokens,
            }]
        } else {
            vec![]
        },
        num_decode_seqs: s.num_decode_seqs,
        decode_context_tokens: 0,
    }
}

fn iteration_features(s: &IterationSample) -> Vec<f64> {
    let mut x = IterationCoefficients::features(&iteration_batch(s));
    x[4] = s.decode_context_tokens;
    x.to_vec()
}

/// Predicted compute on a request sample's path \[ms\] and the KV tokens it transfers.
fn request_compute(c: &IterationCoefficients, s: &RequestSample, bs: u32) -> (f64, u32) {
    let floor_block = |t: u32| (t / bs) * bs;
    // Turn-2 prompt = turn-1 prompt + turn-1 answer + "\n" + new input (vllm-ppd's client).
    let prompt = s.t1_input + s.t1_output + 1 + s.t2_input;
    let step = |m: u32, l: u32| {
        c.predict_ms(&BatchShape {
            prefill: vec![PrefillPart {
                num_new_tokens: m,
                num_cached_tokens: l,
            }],
            num_decode_seqs: 0,
            decode_context_tokens: 0,
        })
    };
    match s.route {
        RequestRoute::Direct => {
            let hit = floor_block((s.t1_input + s.t1_output - 1).min(prompt - 1));
            (step(prompt - hit, hit), 0)
        }
        RequestRoute::Split => {
            let hit_p = floor_block(s.t1_input.min(prompt - 1));
            (step(prompt - hit_p, hit_p) + step(1, prompt - 1), prompt)
        }
    }
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

/// K-fold (index mod k) out-of-fold predictions of a weighted NNLS fit.
fn cross_validated(x: &[Vec<f64>], y: &[f64], w: &[f64], k: usize) -> Vec<f64> {
    let mut pred = vec![0.0; y.len()];
    for fold in 0..k {
        let train: Vec<usize> = (0..y.len()).filter(|i| i % k != fold).collect();
        if train.len() < x[0].len() {
            return pred;
        }
        let f = fit::fit_weighted(
            &train.iter().map(|&i| x[i].clone()).collect::<Vec<_>>(),
            &train.iter().map(|&i| y[i]).collect::<Vec<_>>(),
            &train.iter().map(|&i| w[i]).collect::<Vec<_>>(),
        );
        for i in (0..y.len()).filter(|i| i % k == fold) {
            pred[i] = fit::predict(&x[i], &f.beta);
        }
    }
    pred
}

/// Fits a model to `paths`.
///
/// # Errors
/// Unreadable or unknown files; no iteration samples; unknown model or GPU names.
pub fn calibrate(paths: &[PathBuf], opts: &CalibrateOptions) -> InputResult<Calibration> {
    let model = hardware::model(&opts.model).ok_or_else(|| InputError {
        location: "--model".into(),
        message: format!(
            "unknown model `{}`; known: {}",
            opts.model,
            hardware::model_names().join(", ")
        ),
    })?;
    let gpu = hardware::gpu(&opts.gpu).ok_or_else(|| InputError {
        location: "--gpu".into(),
        message: format!(
            "unknown GPU `{}`; known: {}",
            opts.gpu,
            hardware::gpu_names().join(", ")
        ),
    })?;
    let mut iters = Vec::new();
    let mut reqs = Vec::new();
    let mut sources = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let fs = readers::read(p, i)?;
        sources.push(SourceUse {
            file: p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            reader: fs.reader.into(),
            num_samples: fs.iterations.len() + fs.requests.len(),
            num_dropped: fs.num_dropped,
            used_for: fs.used_for.clone(),
        });
        iters.extend(fs.iterations);
        reqs.extend(fs.requests);
    }
    let phases_present: Vec<Phase> = [Phase::Prefill, Phase::Decode]
        .into_iter()
        .filter(|ph| iters.iter().any(|s| s.phase == *ph))
        .collect();
    if phases_present.len() < 2 {
        return Err(InputError { location: paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "), message: "need both prefill samples (e.g. an LLMServingSim layers CSV) and decode samples (e.g. a vllm-ppd interference JSON)".into() });
    }

    // Stage 1: iteration model.
    let x: Vec<Vec<f64>> = iters.iter().map(iteration_features).collect();
    let y: Vec<f64> = iters.iter().map(|s| s.measured_ms).collect();
    let w: Vec<f64> = y.iter().map(|v| 1.0 / v.max(1e-6)).collect();
    let f = fit::fit_weighted(&x, &y, &w);
    let coeffs = IterationCoefficients::from_array([f.beta[0], f.beta[1], f.beta[2], f.beta[3], f.beta[4]]);
    let pred: Vec<f64> = x.iter().map(|xi| fit::predict(xi, &f.beta)).collect();
    let cv = cross_validated(&x, &y, &w, 5);
    let mut phases = Vec::new();
    let mut points = Vec::new();
    for ph in &phases_present {
        let idx: Vec<usize> = (0..iters.len()).filter(|&i| iters[i].phase == *ph).collect();
        let ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
        let ps: Vec<f64> = idx.iter().map(|&i| pred[i]).collect();
        let cs: Vec<f64> = idx.iter().map(|&i| cv[i]).collect();
        phases.push(phase_fit(ph.name(), &ys, &ps, &cs));
        for &i in &idx {
            let s = &iters[i];
            points.push(FitPoint {
                phase: ph.name().into(),
                measured_ms: y[i],
                predicted_ms: pred[i],
                label: format!(
                    "m={} n_decode={} ctx={:.0}",
                    s.num_new_tokens, s.num_decode_seqs, s.decode_context_tokens
                ),
            });
        }
    }
    let coefficients = (0..5)
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

    // Stage 2: overheads and link.
    let kvb = model.kv_bytes_per_token() as f64;
    let (overheads, kv_transfer) = if reqs.is_empty() {
        (
            Overheads {
                request_overhead_ms: coefficient("request_overhead_ms", "ms", 0.0, 0.0, true),
                pd_handoff_ms: coefficient("pd_handoff_ms", "ms", 0.0, 0.0, true),
            },
            KvTransfer {
                bandwidth_gbps: opts.declared_bandwidth_gbps,
                latency_ms: 0.0,
                source: "declared".into(),
                note: "no request samples given; overheads set to 0".into(),
            },
        )
    } else {
        let mut rx = Vec::new();
        let mut ry = Vec::new();
        let mut computes = Vec::new();
        for s in &reqs {
            let (compute, tokens) = request_compute(&coeffs, s, opts.block_size);
            let split = if s.route == RequestRoute::Split { 1.0 } else { 0.0 };
            rx.push(vec![1.0, split, split * tokens as f64 * kvb / 1e9]);
            ry.push(s.measured_ttft_ms - compute);
            computes.push(compute);
        }
        let has_split = reqs.iter().any(|s| s.route == RequestRoute::Split);
        let g = fit::fit_weighted(&rx, &ry, &vec![1.0; ry.len()]);
        let pred: Vec<f64> = rx
            .iter()
            .zip(&computes)
            .map(|(x, c)| c + fit::predict(x, &g.beta))
            .collect();
        let meas: Vec<f64> = reqs.iter().map(|s| s.measured_ttft_ms).collect();
        let cvr = cross_validated(&rx, &ry, &vec![1.0; ry.len()], 5);
        let cvp: Vec<f64> = cvr.iter().zip(&computes).map(|(r, c)| r + c).collect();
        phases.push(phase_fit("request-ttft", &meas, &pred, &cvp));
        for (i, s) in reqs.iter().enumerate() {
            points.push(FitPoint {
                phase: "request-ttft".into(),
                measured_ms: meas[i],
                predicted_ms: pred[i],
                label: s.label.clone(),
            });
        }
        let ms_per_gb = g.beta[2];
        let identifiable = has_split && !g.at_bound[2] && ms_per_gb - g.ci95_half_width[2] > 0.0;
        let kv = if identifiable {
            KvTransfer { bandwidth_gbps: 8.0 * 1000.0 / ms_per_gb, latency_ms: 0.0, source: "fitted".into(), note: format!("{ms_per_gb:.3} ms/GB (95% CI ±{:.3}) from turn-2 TTFTs of split routes; fixed latency folded into pd_handoff_ms", g.ci95_half_width[2]) }
        } else {
            KvTransfer {
                bandwidth_gbps: opts.declared_bandwidth_gbps,
                latency_ms: 0.0,
                source: "declared".into(),
                note: format!("not identifiable from these files (fitted {ms_per_gb:.3} ms/GB, 95% CI ±{:.3} includes 0: transfer time is hidden by fixed overheads); declared value used", g.ci95_half_width[2]),
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
            },
            kv,
        )
    };
    let physics = physics_checks(&coeffs, model, gpu, &kv_transfer);
    let file = CalibrationFile {
        schema_version: SCHEMA_VERSION,
        model: model.name.clone(),
        gpu: gpu.name.clone(),
        engine: opts.engine.clone(),
        iteration: IterationFit {
            formula: "t_iter_ms = beta0 + beta1*sum(m) + beta2*sum(m*(L+m/2)) + beta3*n_decode + beta4*sum(c)".into(),
            coefficients,
        },
        overheads,
        kv_transfer,
        phases,
        sources,
        physics,
    };
    Ok(Calibration { file, points })
}

/// Physics checks of DESIGN §2.
pub fn physics_checks(
    c: &IterationCoefficients,
    model: &hardware::ModelSpec,
    gpu: &hardware::GpuSpec,
    kv: &KvTransfer,
) -> Vec<PhysicsCheck> {
    let mut out = Vec::new();
    let peak = gpu.peak_bf16_dense_tflops;
    let implied_tflops = if c.beta1_ms_per_token > 0.0 {
        model.flop_per_token() / (c.beta1_ms_per_token * 1e-3) / 1e12
    } else {
        f64::INFINITY
    };
    out.push(PhysicsCheck {
        check: "marginal prefill cost (beta1) implies ≤ peak FLOP/s".into(),
        implied: implied_tflops,
        limit: peak,
        unit: "TFLOP/s".into(),
        ok: implied_tflops <= peak,
        message: if implied_tflops <= peak {
            format!("{:.1} µs/token = {:.0} TFLOP/s ({:.0}% of peak)", c.beta1_ms_per_token * 1e3, implied_tflops, 100.0 * implied_tflops / peak)
        } else {
            "faster than the GPU's peak: appended tokens were probably served from the prefix cache, or prefill was not measured alone".into()
        },
    });
    let floor_ms = model.weight_bytes() as f64 / (gpu.hbm_bandwidth_tbps * 1e12) * 1e3;
    let step1 = c.beta0_ms + c.beta3_ms_per_seq;
    out.push(PhysicsCheck {
        check: "batch-1 decode step (beta0 + beta3) ≥ weight bytes / HBM bandwidth".into(),
        implied: step1,
        limit: floor_ms,
        unit: "ms".into(),
        ok: step1 >= floor_ms,
        message: if step1 >= floor_ms {
            format!("{step1:.2} ms ≥ {floor_ms:.2} ms")
        } else {
            "a decode step faster than reading the weights once: check the unit of the TPOT column or the model/GPU"
                .into()
        },
    });
    let kv_bw = if c.beta4_ms_per_context_token > 0.0 {
        model.kv_bytes_per_token() as f64 / (c.beta4_ms_per_context_token * 1e-3) / 1e12
    } else {
        0.0
    };
    out.push(PhysicsCheck {
        check: "decode KV read (beta4) implies ≤ HBM bandwidth".into(),
        implied: kv_bw,
        limit: gpu.hbm_bandwidth_tbps,
        unit: "TB/s".into(),
        ok: kv_bw <= gpu.hbm_bandwidth_tbps,
        message: if c.beta4_ms_per_context_token == 0.0 {
            "beta4 pinned at 0: context length had no measurable effect in these samples".into()
        } else if kv_bw <= gpu.hbm_bandwidth_tbps {
            format!("{kv_bw:.2} TB/s effective")
        } else {
            "KV reads faster than HBM: contexts were probably shorter than stated".into()
        },
    });
    let nvlink_gbps = 900.0 * 8.0; // H100 SXM NVLink 4: 900 GB/s total bidirectional per GPU (datasheet).
    out.push(PhysicsCheck {
        check: "KV link bandwidth ≤ NVLink 4 per-GPU total (900 GB/s)".into(),
        implied: kv.bandwidth_gbps,
        limit: nvlink_gbps,
        unit: "Gbit/s".into(),
        ok: kv.bandwidth_gbps <= nvlink_gbps,
        message: format!("{} ({})", kv.source, kv.note),
    });
    out
}

/// A short human-readable report.
pub fn report(c: &Calibration) -> String {
    use std::fmt::Write;
    let f = &c.file;
    let mut s = String::new();
    let _ = writeln!(s, "calibration: {} on {} ({})", f.model, f.gpu, f.engine);
    let _ = writeln!(s, "sources:");
    for src in &f.sources {
        let _ = writeln!(
            s,
            "  {:<58} {:<22} {:>4} samples {:>3} dropped  → {}",
            src.file, src.reader, src.num_samples, src.num_dropped, src.used_for
        );
    }
    let _ = writeln!(s, "iteration model: {}", f.iteration.formula);
    for co in &f.iteration.coefficients {
        let _ = writeln!(
            s,
            "  {:<28} {:>12.6e} {:<16} 95% CI [{:.6e}, {:.6e}]{}",
            co.name,
            co.value,
            co.unit,
            co.ci95_low,
            co.ci95_high,
            if co.at_bound { "  (at bound 0)" } else { "" }
        );
    }
    for co in [&f.overheads.request_overhead_ms, &f.overheads.pd_handoff_ms] {
        let _ = writeln!(
            s,
            "  {:<28} {:>12.3} {:<16} 95% CI [{:.3}, {:.3}]{}",
            co.name,
            co.value,
            co.unit,
            co.ci95_low,
            co.ci95_high,
            if co.at_bound { "  (at bound 0)" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "  kv link bandwidth            {:>12.1} Gbit/s ({}: {})",
        f.kv_transfer.bandwidth_gbps, f.kv_transfer.source, f.kv_transfer.note
    );
    let _ = writeln!(s, "fit quality:");
    for p in &f.phases {
        let _ = writeln!(
            s,
            "  {:<14} n={:<5} R²={:.4}  RMSE={:.3} ms  MAPE={:.2}%  5-fold CV MAPE={:.2}%",
            p.phase, p.num_samples, p.r_squared, p.rmse_ms, p.mape_pct, p.cv_mape_pct
        );
    }
    let _ = writeln!(s, "physics checks:");
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

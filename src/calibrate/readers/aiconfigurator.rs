//! NVIDIA AIConfigurator kernel tables (H100-SXM, vLLM 0.24: GEMM and FlashAttention-3), composed
//! into forward passes of a model.
//!
//! Files (each read on its own, composed once all three are present):
//! * GEMM `m,n,k,latency_ms` — one `[m×k]·[k×n]` GEMM;
//! * context attention `batch_size,isl,step,latency_ms` (`step = 0`) — one layer's prefill attention;
//! * generation attention `batch_size,isl,step,latency_ms` — one layer's decode attention over
//!   `isl + step` context tokens per sequence.
//!
//! A forward pass of `m` tokens is, per layer, GEMM(m, (H + 2·KV)·d, hidden) for QKV, GEMM(m,
//! hidden, H·d) for O, GEMM(m, 2·ffn, hidden) for gate+up and GEMM(m, hidden, ffn) for down, plus
//! attention; then the LM head GEMM(#sequences, vocab, hidden). Shapes between grid points are
//! interpolated linearly in `n` and `k` (proportionally beyond the largest `n`), and linearly in
//! log `m` (GEMM) / log batch and log context (attention). Kernel times only: no scheduler,
//! sampling or HTTP overhead, so β0 from this source is a lower bound of a real engine's.
//! Prefill samples: batch 1, m ∈ {1 … 8192}; decode samples: batch ∈ {1 … 256} × context ∈
//! {128 … 8192}.

use super::{col_f64, csv_rows, decode_batch, prefill_batch, FileSamples, Format, IterationSample, KernelTable, Phase};
use crate::cost_model::PrefillPart;
use crate::error::{InputError, InputResult};
use crate::hardware::ModelSpec;
use std::path::Path;

/// Reads one table.
///
/// # Errors
/// Missing columns, non-numeric cells, empty tables.
pub fn read(path: &Path, text: &str, fmt: Format) -> InputResult<FileSamples> {
    let (header, rows) = csv_rows(path, text)?;
    if rows.is_empty() {
        return Err(InputError::file(path, "table has no rows"));
    }
    let kernel = match fmt {
        Format::AiconfiguratorGemm => {
            let mut v = Vec::new();
            for r in &rows {
                v.push((
                    col_f64(path, &header, r, "m")?,
                    col_f64(path, &header, r, "n")?,
                    col_f64(path, &header, r, "k")?,
                    col_f64(path, &header, r, "latency_ms")?,
                ));
            }
            KernelTable::Gemm(v)
        }
        Format::AiconfiguratorContextAttention => {
            let mut v = Vec::new();
            for r in &rows {
                v.push((
                    col_f64(path, &header, r, "batch_size")?,
                    col_f64(path, &header, r, "isl")?,
                    col_f64(path, &header, r, "latency_ms")?,
                ));
            }
            KernelTable::ContextAttention(v)
        }
        _ => {
            let mut v = Vec::new();
            for r in &rows {
                let ctx = col_f64(path, &header, r, "isl")? + col_f64(path, &header, r, "step")?;
                v.push((
                    col_f64(path, &header, r, "batch_size")?,
                    ctx,
                    col_f64(path, &header, r, "latency_ms")?,
                ));
            }
            KernelTable::GenerationAttention(v)
        }
    };
    Ok(FileSamples {
        reader: "aiconfigurator",
        group: "aiconfigurator".into(),
        kernel_only: true,
        model: Some("llama-3.1-8b".into()),
        gpu: Some("h100-sxm".into()),
        kernel: Some(kernel),
        used_for: "kernel table, composed into forward passes with the other AIConfigurator tables".into(),
        ..Default::default()
    })
}

/// [`super::interp_log`], extrapolated proportionally to `x` beyond the grid (work scales with x).
fn interp_log(points: &[(f64, f64)], x: f64) -> f64 {
    super::interp_log(points, x, super::AboveGrid::Proportional)
}

/// Linear interpolation in `v` between grid values `grid` (sorted) of a function `f`; proportional beyond.
fn interp_lin(grid: &[f64], v: f64, f: impl Fn(f64) -> f64) -> f64 {
    if let Some(&g) = grid.iter().find(|&&g| (g - v).abs() < 1e-9) {
        return f(g);
    }
    if v < grid[0] {
        return f(grid[0]) * v / grid[0];
    }
    for w in grid.windows(2) {
        if v < w[1] {
            let t = (v - w[0]) / (w[1] - w[0]);
            return f(w[0]) * (1.0 - t) + f(w[1]) * t;
        }
    }
    let last = *grid.last().unwrap();
    f(last) * v / last
}

struct Tables {
    gemm: Vec<(f64, f64, f64, f64)>,
    ctx: Vec<(f64, f64, f64)>,
    gen: Vec<(f64, f64, f64)>,
}

impl Tables {
    fn gemm_at(&self, m: f64, n: f64, k: f64) -> f64 {
        let mut ns: Vec<f64> = self.gemm.iter().map(|g| g.1).collect();
        ns.sort_by(f64::total_cmp);
        ns.dedup();
        let mut ks: Vec<f64> = self.gemm.iter().map(|g| g.2).collect();
        ks.sort_by(f64::total_cmp);
        ks.dedup();
        interp_lin(&ns, n, |nn| {
            interp_lin(&ks, k, |kk| {
                let mut pts: Vec<(f64, f64)> = self
                    .gemm
                    .iter()
                    .filter(|g| g.1 == nn && g.2 == kk)
                    .map(|g| (g.0, g.3))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                if pts.is_empty() {
                    f64::NAN
                } else {
                    interp_log(&pts, m)
                }
            })
        })
    }

    fn attn_at(table: &[(f64, f64, f64)], batch: f64, ctx: f64) -> f64 {
        let mut bs: Vec<f64> = table.iter().map(|t| t.0).collect();
        bs.sort_by(f64::total_cmp);
        bs.dedup();
        let per_batch = |b: f64| {
            let mut pts: Vec<(f64, f64)> = table.iter().filter(|t| t.0 == b).map(|t| (t.1, t.2)).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            interp_log(&pts, ctx)
        };
        let pts: Vec<(f64, f64)> = bs.iter().map(|&b| (b, per_batch(b))).collect();
        interp_log(&pts, batch)
    }

    fn linear_layers(&self, m: f64, model: &ModelSpec) -> f64 {
        let h = model.hidden_size as f64;
        let d = model.head_dim as f64;
        let qkv = (model.num_attention_heads as f64 + 2.0 * model.num_kv_heads as f64) * d;
        let f = model.ffn_size as f64;
        self.gemm_at(m, qkv, h)
            + self.gemm_at(m, h, model.num_attention_heads as f64 * d)
            + self.gemm_at(m, 2.0 * f, h)
            + self.gemm_at(m, h, f)
    }
}

/// Prefill attention of one prompt of `tokens` tokens over all layers \[ms\] from the
/// context-attention table (`None` without one).
pub fn context_attention_ms(tables: &[&KernelTable], model: &ModelSpec, tokens: f64) -> Option<f64> {
    let ctx: Vec<(f64, f64, f64)> = tables
        .iter()
        .flat_map(|k| match k {
            KernelTable::ContextAttention(v) => v.clone(),
            _ => Vec::new(),
        })
        .collect();
    (!ctx.is_empty()).then(|| model.num_layers as f64 * Tables::attn_at(&ctx, 1.0, tokens))
}

/// Composes forward passes from the three tables (any may be missing: then the phases it is
/// needed for are skipped).
pub fn compose(tables: &[&KernelTable], model: &ModelSpec) -> Vec<IterationSample> {
    let mut t = Tables {
        gemm: vec![],
        ctx: vec![],
        gen: vec![],
    };
    for k in tables {
        match k {
            KernelTable::Gemm(v) => t.gemm.extend(v.iter().copied()),
            KernelTable::ContextAttention(v) => t.ctx.extend(v.iter().copied()),
            KernelTable::GenerationAttention(v) => t.gen.extend(v.iter().copied()),
            KernelTable::VidurMlp(_) | KernelTable::VidurAttention(_) => {}
        }
    }
    let mut out = Vec::new();
    if t.gemm.is_empty() {
        return out;
    }
    let layers = model.num_layers as f64;
    let vocab = model.vocab_size as f64;
    let h = model.hidden_size as f64;
    if !t.ctx.is_empty() {
        for m in [
            1u32, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192,
        ] {
            let mf = m as f64;
            let ms =
                layers * (t.linear_layers(mf, model) + Tables::attn_at(&t.ctx, 1.0, mf)) + t.gemm_at(1.0, vocab, h);
            out.push(IterationSample {
                phase: Phase::Prefill,
                batch: prefill_batch(vec![PrefillPart {
                    num_new_tokens: m,
                    num_cached_tokens: 0,
                }]),
                measured_ms: ms,
                label: format!("aiconfigurator prefill N={m}"),
            });
        }
    }
    if !t.gen.is_empty() {
        for b in [1u32, 2, 4, 8, 16, 32, 64, 128, 256] {
            for c in [128u64, 512, 1024, 2048, 4096, 8192] {
                let bf = b as f64;
                let ms = layers * (t.linear_layers(bf, model) + Tables::attn_at(&t.gen, bf, c as f64))
                    + t.gemm_at(bf, vocab, h);
                out.push(IterationSample {
                    phase: Phase::Decode,
                    batch: decode_batch(b, b as u64 * c),
                    measured_ms: ms,
                    label: format!("aiconfigurator decode batch={b} ctx={c}"),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_is_linear_in_log_x_and_proportional_beyond() {
        let pts = [(1.0, 1.0), (100.0, 3.0)];
        assert!((interp_log(&pts, 10.0) - 2.0).abs() < 1e-12);
        assert_eq!(interp_log(&pts, 0.5), 1.0);
        assert!((interp_log(&pts, 200.0) - 6.0).abs() < 1e-12);
        assert!((interp_lin(&[10.0, 20.0], 15.0, |v| v * 2.0) - 30.0).abs() < 1e-12);
        assert!((interp_lin(&[10.0, 20.0], 40.0, |v| v) - 40.0).abs() < 1e-12);
    }
}

//! The (L, m) routing map from the cost model alone: for an append-prefill of `m` new tokens on a
//! context of `L` cached tokens, is it cheaper to run it on the decode instance that holds the
//! context (local, PPD) or on a prefill instance and ship the KV (remote, PD)? Seed 000's
//! research question, answered in closed form with the calibrated iteration model.
//!
//! One turn arrives at a decode instance D running `B` decode sequences of `C` context tokens
//! each; P is idle. Both routes pay the same request overhead, left out. With the iteration time
//! `t(batch)` of [`IterationCoefficients`] and chunked prefill (`token_budget` tokens per
//! iteration, the decodes' `B` tokens included):
//!
//! * **local**: D computes the `m` tokens in `⌈m / (budget − B)⌉` iterations, each also carrying
//!   the `B` decodes. TTFT = Σ those iterations. Each decode sequence is stalled by the
//!   iterations' extra time over a decode-only iteration: stall = Σ (t_iter − t_decode).
//! * **remote**: P computes the `m` tokens on the cached `L` (or all `L + m` when P does not hold
//!   the context), the KV of `L + m` tokens (full transfer, what vLLM's P2P NCCL connector sends)
//!   or of `m` (incremental) crosses the link at `latency + bytes / bandwidth`, the proxy hands
//!   off (`pd_handoff_ms`), and D computes the last prompt token within one iteration with its
//!   `B` decodes, which also loads the received KV (`kv_load_ms`,
//!   [`crate::sim::SimConfig::kv_load_ms`]). TTFT = the sum; stall = that iteration's extra time
//!   over a decode-only one.
//! * Each engine that takes the request spends `engine_admit_ms` admitting it, in the step that
//!   first schedules it ([`crate::sim::SimConfig::engine_admit_ms`]): D's on both routes (TTFT and
//!   stall), P's on the remote one (TTFT).
//!
//! The **cost** of a route is TTFT + B × stall: the delay it adds to the arriving turn plus the
//! delay it adds to every decode sharing D (request-milliseconds). The cheaper route wins; with
//! `B = 0` this is TTFT alone, and remote never wins while P holds the context (same GPU, plus a
//! transfer and a handoff).

use crate::cost_model::{BatchShape, IterationCoefficients, PrefillPart};
use crate::sim::TransferMode;
use serde::{Deserialize, Serialize};

/// Inputs of the map.
#[derive(Clone, Debug, PartialEq)]
pub struct MapParams {
    /// Iteration-time model.
    pub coefficients: IterationCoefficients,
    /// KV bytes per token \[B\].
    pub kv_bytes_per_token: u64,
    /// KV link bandwidth \[Gbit/s\].
    pub link_bandwidth_gbps: f64,
    /// KV link latency per transfer \[ms\].
    pub link_latency_ms: f64,
    /// Proxy handoff on the PD path \[ms\].
    pub pd_handoff_ms: f64,
    /// D's engine time to load the received KV, added to its step that computes the last prompt
    /// token \[ms\] ([`crate::sim::SimConfig::kv_load_ms`]).
    pub kv_load_ms: f64,
    /// Each engine's time to admit a request, added to the step that first schedules it: D's (or
    /// the pD's) on both routes, P's on the remote one \[ms\]
    /// ([`crate::sim::SimConfig::engine_admit_ms`]).
    pub engine_admit_ms: f64,
    /// What the link carries.
    pub transfer: TransferMode,
    /// Chunked-prefill token budget per iteration \[tokens\].
    pub token_budget: u32,
    /// Decode sequences running on D.
    pub decode_batch: u32,
    /// Context of each running decode sequence \[tokens\].
    pub decode_context_tokens: u32,
    /// Whether P's prefix cache holds the context (else P recomputes all `L + m`).
    pub p_holds_context: bool,
}

/// Everything a routing map is computed from: what `routing-map` builds from its options and
/// `--set KEY=VALUE` overrides, and writes (every value filled in) as `routing_map.resolved.toml`,
/// which `routing-map --config FILE` runs again as it is. Relative paths start at the file's
/// directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// Calibrated model file (coefficients, PD handoff, KV link).
    pub calibration: std::path::PathBuf,
    /// KV link bandwidth \[Gbit/s\] (absent: the calibration's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_gbps: Option<f64>,
    /// KV link latency per transfer \[ms\] (absent: the calibration's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// D's engine time to load the received KV \[ms\] (absent: the calibration's
    /// `kv_transfer.load_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_load_ms: Option<f64>,
    /// Each engine's time to admit a request \[ms\] (absent: the calibration's
    /// `overheads.engine_admit_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_admit_ms: Option<f64>,
    /// What the link carries (`full` or `incremental`).
    #[serde(default)]
    pub transfer: TransferMode,
    /// Decode sequences running on D.
    pub decode_batch: u32,
    /// Context of each running decode sequence \[tokens\].
    pub decode_context_tokens: u32,
    /// Chunked-prefill token budget per iteration \[tokens\].
    pub token_budget: u32,
    /// P does not hold the context and recomputes all `L + m` tokens.
    #[serde(default)]
    pub p_recomputes_context: bool,
    /// Context lengths L \[tokens\].
    pub context_tokens: Vec<u32>,
    /// Append lengths m \[tokens\].
    pub append_tokens: Vec<u32>,
}

impl MapConfig {
    /// Checks the domains; the message names the key and the fix.
    ///
    /// # Errors
    /// `(key, message)` of the first value out of its domain.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(b) = self.bandwidth_gbps {
            if !(b > 0.0 && b.is_finite()) {
                return Err(("bandwidth_gbps", "must be a number > 0".into()));
            }
        }
        if let Some(l) = self.latency_ms {
            if !(l >= 0.0 && l.is_finite()) {
                return Err(("latency_ms", "must be a number >= 0".into()));
            }
        }
        // Engine times added to a step, each within its scenario key's bound.
        for (key, value, max) in [
            ("kv_load_ms", self.kv_load_ms, crate::scenario::MAX_KV_LOAD_MS),
            (
                "engine_admit_ms",
                self.engine_admit_ms,
                crate::scenario::MAX_ENGINE_ADMIT_MS,
            ),
        ] {
            if value.is_some_and(|v| !(0.0..=max).contains(&v)) {
                return Err((key, format!("must be a time in ms, >= 0 and <= {max}")));
            }
        }
        if self.context_tokens.is_empty() {
            return Err(("context_tokens", "give a non-empty list".into()));
        }
        if self.append_tokens.is_empty() || self.append_tokens.contains(&0) {
            return Err(("append_tokens", "give a non-empty list; every m must be >= 1".into()));
        }
        if self.token_budget <= self.decode_batch {
            return Err((
                "token_budget",
                format!(
                    "must exceed decode_batch = {} (decodes take one token each)",
                    self.decode_batch
                ),
            ));
        }
        Ok(())
    }

    /// The plot title: every parameter that shapes the map (bandwidth as resolved).
    pub fn title(&self, bandwidth_gbps: f64) -> String {
        format!(
            "local / remote cost — {} decodes of {} tokens on D, link {} Gbit/s, {} transfer{}",
            self.decode_batch,
            self.decode_context_tokens,
            bandwidth_gbps,
            if matches!(self.transfer, TransferMode::Full) {
                "full"
            } else {
                "incremental"
            },
            if self.p_recomputes_context {
                ", P recomputes L"
            } else {
                ""
            }
        )
    }
}

/// Where a cell's append-prefill runs best.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapRoute {
    /// On the decode instance that holds the context (PPD).
    Local,
    /// On a prefill instance, then a KV transfer (PD).
    Remote,
}

/// One (L, m) cell of the map. Times in ms, request overhead excluded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapCell {
    /// Cached context `L` \[tokens\].
    pub context_tokens: u32,
    /// New tokens `m` \[tokens\].
    pub append_tokens: u32,
    /// Cache rate `L / (L + m)`.
    pub cache_rate: f64,
    /// Local route TTFT \[ms\].
    pub local_ttft_ms: f64,
    /// Remote route TTFT \[ms\].
    pub remote_ttft_ms: f64,
    /// Stall of each running decode under the local route \[ms\].
    pub local_decode_stall_ms: f64,
    /// Stall of each running decode under the remote route \[ms\].
    pub remote_decode_stall_ms: f64,
    /// Local cost, TTFT + B × stall \[ms\].
    pub local_cost_ms: f64,
    /// Remote cost \[ms\].
    pub remote_cost_ms: f64,
    /// The cheaper route (`local` on a tie).
    pub route: MapRoute,
}

/// Time of one iteration with `decodes` running decode sequences (of the map's decode context)
/// and an optional prefill chunk \[ms\].
fn iteration_ms(p: &MapParams, decodes: u32, chunk: Option<PrefillPart>) -> f64 {
    p.coefficients.predict_ms(&BatchShape {
        prefill: chunk.into_iter().collect(),
        num_decode_seqs: decodes,
        decode_context_tokens: decodes as u64 * p.decode_context_tokens as u64,
    })
}

/// (Σ iteration time, Σ extra over a decode-only iteration) of computing `m` tokens on `l`
/// cached, in chunks of the budget left by `decodes` running sequences \[ms\].
fn prefill_ms(p: &MapParams, l: u32, m: u32, decodes: u32) -> (f64, f64) {
    let per_iter = p.token_budget.saturating_sub(decodes).max(1);
    let decode_only = if decodes > 0 {
        iteration_ms(p, decodes, None)
    } else {
        0.0
    };
    let (mut done, mut total, mut extra) = (0u32, 0.0, 0.0);
    while done < m {
        let n = per_iter.min(m - done);
        let t = iteration_ms(
            p,
            decodes,
            Some(PrefillPart {
                num_new_tokens: n,
                num_cached_tokens: l + done,
            }),
        );
        total += t;
        extra += t - decode_only;
        done += n;
    }
    (total, extra)
}

/// The map's cell for context `l` and append `m` (`m ≥ 1`).
pub fn cell(p: &MapParams, l: u32, m: u32) -> MapCell {
    assert!(m >= 1, "an append-prefill has at least one new token");
    let b = p.decode_batch as f64;
    let a = p.engine_admit_ms;
    let (local_ttft, local_stall) = prefill_ms(p, l, m, p.decode_batch);
    // The pD admits the turn in its first chunk's step.
    let (local_ttft, local_stall) = (local_ttft + a, local_stall + a);
    let (p_time, _) = if p.p_holds_context {
        prefill_ms(p, l, m, 0)
    } else {
        prefill_ms(p, 0, l + m, 0)
    };
    let p_time = p_time + a;
    let tokens = match p.transfer {
        TransferMode::Full => l + m,
        TransferMode::Incremental => m,
    };
    let transfer_ms = crate::sim::link::transfer_ms(
        p.link_bandwidth_gbps,
        p.link_latency_ms,
        tokens as u64 * p.kv_bytes_per_token,
    );
    // D computes the last prompt token alongside its decodes, in the step that loads the KV.
    let (d_step, remote_stall) = prefill_ms(p, l + m - 1, 1, p.decode_batch);
    let (d_step, remote_stall) = (d_step + p.kv_load_ms + a, remote_stall + p.kv_load_ms + a);
    let remote_ttft = p_time + transfer_ms + p.pd_handoff_ms + d_step;
    let (local_cost, remote_cost) = (local_ttft + b * local_stall, remote_ttft + b * remote_stall);
    MapCell {
        context_tokens: l,
        append_tokens: m,
        cache_rate: l as f64 / (l + m) as f64,
        local_ttft_ms: local_ttft,
        remote_ttft_ms: remote_ttft,
        local_decode_stall_ms: if p.decode_batch > 0 { local_stall } else { 0.0 },
        remote_decode_stall_ms: if p.decode_batch > 0 { remote_stall } else { 0.0 },
        local_cost_ms: local_cost,
        remote_cost_ms: remote_cost,
        route: if remote_cost < local_cost {
            MapRoute::Remote
        } else {
            MapRoute::Local
        },
    }
}

/// Every cell of the grid, context-major (for each L, every m in order).
pub fn map(p: &MapParams, contexts: &[u32], appends: &[u32]) -> Vec<MapCell> {
    contexts
        .iter()
        .flat_map(|&l| appends.iter().map(move |&m| cell(p, l, m)))
        .collect()
}

/// For one context: the smallest `m` of the grid from which every larger `m` goes remote, and
/// the exact crossover inside the grid step below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boundary {
    /// Context `L` \[tokens\].
    pub context_tokens: u32,
    /// First `m` of the all-remote tail \[tokens\]; `None` when the largest `m` stays local.
    pub remote_from_append_tokens: Option<u32>,
    /// The exact crossover \[tokens\]: the smallest whole `m` above the grid's next smaller `m`
    /// (0 when there is none) from which every whole `m` up to `remote_from_append_tokens` goes
    /// remote ([`crossover`]); `None` with it (and in a `boundary.csv` of a version before it).
    #[serde(default)]
    pub crossover_append_tokens: Option<u32>,
}

/// The boundary per context, from `cells` as [`map`] returns them for `p`, with the exact
/// crossover of each ([`crossover`]).
pub fn boundary(p: &MapParams, cells: &[MapCell], contexts: &[u32]) -> Vec<Boundary> {
    contexts
        .iter()
        .map(|&l| {
            let row: Vec<&MapCell> = cells.iter().filter(|c| c.context_tokens == l).collect();
            let remote_from_append_tokens = match row.iter().rposition(|c| c.route == MapRoute::Local) {
                None => row.first().map(|c| c.append_tokens),
                Some(i) => row.get(i + 1).map(|c| c.append_tokens),
            };
            let crossover_append_tokens = remote_from_append_tokens.map(|m| {
                // The grid step below the boundary: the largest grid m under it.
                let below = row
                    .iter()
                    .map(|c| c.append_tokens)
                    .filter(|&x| x < m)
                    .max()
                    .unwrap_or(0);
                crossover(p, l, below, m)
            });
            Boundary {
                context_tokens: l,
                remote_from_append_tokens,
                crossover_append_tokens,
            }
        })
        .collect()
}

/// The smallest whole `m` in `(below, remote_from]` from which every whole `m` up to
/// `remote_from` goes remote on context `l` (`remote_from` itself must go remote): the
/// crossover a power-of-two grid only brackets. Walks down from `remote_from`, one cell per
/// token, so it is exact even where chunking makes the costs step (O(`remote_from − below`)
/// cells).
///
/// # Panics
/// If `remote_from` is not above `below` or does not go remote.
pub fn crossover(p: &MapParams, l: u32, below: u32, remote_from: u32) -> u32 {
    assert!(
        remote_from > below,
        "crossover search ({below}, {remote_from}] is empty"
    );
    assert_eq!(
        cell(p, l, remote_from).route,
        MapRoute::Remote,
        "the crossover search starts from a remote cell (L = {l}, m = {remote_from})"
    );
    let mut m = remote_from;
    while m - 1 > below && m > 1 && cell(p, l, m - 1).route == MapRoute::Remote {
        m -= 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(decode_batch: u32) -> MapParams {
        MapParams {
            // β0 10 ms, β1 0.02 ms/token, no attention, β3 0.1 ms/seq, β4 0.
            coefficients: IterationCoefficients::from_array([10.0, 0.02, 0.0, 0.1, 0.0]),
            kv_bytes_per_token: 131_072,
            // 131,072 B × 8 / 1,048,576 Gbit/s = 1 µs per token.
            link_bandwidth_gbps: 1_048_576.0 / 1_000.0 * 1.0,
            link_latency_ms: 1.0,
            pd_handoff_ms: 5.0,
            kv_load_ms: 0.0,
            engine_admit_ms: 0.0,
            transfer: TransferMode::Full,
            token_budget: 8192,
            decode_batch,
            decode_context_tokens: 1000,
            p_holds_context: true,
        }
    }

    #[test]
    fn admission_costs_d_on_both_routes_and_p_on_the_remote_one() {
        // a_cell_by_hand's cell with 2 ms of admission per engine. Local: TTFT 17 + 2 = 19, stall
        // 2 + 2 = 4 per decode, cost 19 + 50·4 = 219. Remote: P 12 + 2 = 14, link 2.1, handoff 5,
        // D's step 15.02 + 2 = 17.02 (stall 0.02 + 2 = 2.02): TTFT 38.12, cost 38.12 + 50·2.02 =
        // 139.12 → remote. With no decodes on D (no 0.1 ms × 50 in any step) only TTFT counts:
        // local 10 + 2 + 2 = 14, remote 14 + 2.1 + 5 + 10.02 + 2 = 33.12 → local.
        let admit = |decode_batch| {
            cell(
                &MapParams {
                    engine_admit_ms: 2.0,
                    ..params(decode_batch)
                },
                1000,
                100,
            )
        };
        let c = admit(50);
        assert!((c.local_ttft_ms - 19.0).abs() < 1e-9, "{c:?}");
        assert!((c.local_decode_stall_ms - 4.0).abs() < 1e-9, "{c:?}");
        assert!((c.local_cost_ms - 219.0).abs() < 1e-9, "{c:?}");
        assert!((c.remote_ttft_ms - 38.12).abs() < 1e-9, "{c:?}");
        assert!((c.remote_decode_stall_ms - 2.02).abs() < 1e-9, "{c:?}");
        assert!((c.remote_cost_ms - 139.12).abs() < 1e-9, "{c:?}");
        assert_eq!(c.route, MapRoute::Remote);
        let c = admit(0);
        assert!(
            (c.local_ttft_ms - 14.0).abs() < 1e-9 && (c.remote_ttft_ms - 33.12).abs() < 1e-9,
            "{c:?}"
        );
        assert_eq!(c.route, MapRoute::Local);
    }

    #[test]
    fn a_cell_by_hand() {
        // L = 1000, m = 100, B = 50 decodes.
        // local: one iteration 10 + 0.02·100 + 0.1·50 = 17 ms; decode-only 15 ms: stall 2 ms;
        //        cost 17 + 50·2 = 117.
        // remote: P 10 + 2 = 12; link 1 + 1,100 tokens × 131,072 B × 8 / 1.048576e12 bit/s
        //        = 1 + 1.1 = 2.1 ms; handoff 5; D step 10 + 0.02 + 5 = 15.02 (stall 0.02);
        //        TTFT 34.12; cost 34.12 + 50·0.02 = 35.12 → remote.
        let c = cell(&params(50), 1000, 100);
        assert!((c.local_ttft_ms - 17.0).abs() < 1e-9, "{c:?}");
        assert!((c.local_decode_stall_ms - 2.0).abs() < 1e-9);
        assert!((c.local_cost_ms - 117.0).abs() < 1e-9);
        assert!((c.remote_ttft_ms - 34.12).abs() < 1e-9, "{c:?}");
        assert!((c.remote_cost_ms - 35.12).abs() < 1e-9);
        assert_eq!(c.route, MapRoute::Remote);
        assert!((c.cache_rate - 1000.0 / 1100.0).abs() < 1e-12);
        // D loading the KV for 1.5 ms lengthens its step: TTFT 35.62, stall 1.52, cost
        // 35.62 + 50·1.52 = 111.62, still below local's 117; at 1.7 ms 35.82 + 50·1.72 = 121.82
        // → local.
        let held = |load| {
            cell(
                &MapParams {
                    kv_load_ms: load,
                    ..params(50)
                },
                1000,
                100,
            )
        };
        let c = held(1.5);
        assert!((c.remote_ttft_ms - 35.62).abs() < 1e-9, "{c:?}");
        assert!((c.remote_decode_stall_ms - 1.52).abs() < 1e-9);
        assert!((c.remote_cost_ms - 111.62).abs() < 1e-9);
        assert_eq!(c.route, MapRoute::Remote);
        let c = held(1.7);
        assert!((c.remote_cost_ms - 121.82).abs() < 1e-9, "{c:?}");
        assert_eq!(c.route, MapRoute::Local);
    }

    #[test]
    fn without_decodes_remote_never_wins_when_p_holds_the_context() {
        // Same GPU for both: remote adds a transfer, a handoff and D's own step.
        let p = params(0);
        let cells = map(&p, &[512, 4096, 16384], &[1, 64, 1024, 8192]);
        assert!(cells.iter().all(|c| c.route == MapRoute::Local));
        assert_eq!(
            boundary(&p, &cells, &[512]),
            [Boundary {
                context_tokens: 512,
                remote_from_append_tokens: None,
                crossover_append_tokens: None
            }]
        );
    }

    #[test]
    fn chunking_and_boundary() {
        // Budget 100 with B = 50: 50 prefill tokens per iteration, so m = 120 takes 3 iterations
        // (50 + 50 + 20): 3·(10 + 5) + 0.02·120 = 47.4 ms, stall 2.4 ms.
        let mut p = params(50);
        p.token_budget = 100;
        let c = cell(&p, 1000, 120);
        assert!((c.local_ttft_ms - 47.4).abs() < 1e-9, "{c:?}");
        assert!((c.local_decode_stall_ms - 2.4).abs() < 1e-9);
        // Boundary: local below, remote from the first m after the last local one.
        let cells = map(&params(50), &[1000], &[1, 2, 4, 8, 16, 32, 64, 128]);
        let routes: Vec<MapRoute> = cells.iter().map(|c| c.route).collect();
        let first_remote = routes.iter().position(|r| *r == MapRoute::Remote).unwrap();
        assert!(
            routes[first_remote..].iter().all(|r| *r == MapRoute::Remote),
            "{routes:?}"
        );
        // The exact crossover, by hand (one chunk, B = 50, L = 1000):
        //   local  = TTFT 10 + 0.02·m + 0.1·50 plus 50 × stall 0.02·m     = 15 + 1.02·m;
        //   remote = P 10 + 0.02·m, link 1 + (1000 + m)·0.001, handoff 5, D step 15.02, plus
        //            50 × stall 0.02                                        = 33.02 + 0.021·m.
        // Remote is cheaper once 0.999·m > 18.02, m > 18.04: from m = 19 (m = 18: local 33.36 <
        // remote 33.398; m = 19: 34.38 > 33.419). The grid brackets it in (16, 32].
        assert_eq!(cells[first_remote].append_tokens, 32);
        assert_eq!(
            boundary(&params(50), &cells, &[1000]),
            [Boundary {
                context_tokens: 1000,
                remote_from_append_tokens: Some(32),
                crossover_append_tokens: Some(19)
            }]
        );
        assert_eq!(cell(&params(50), 1000, 18).route, MapRoute::Local);
        assert_eq!(crossover(&params(50), 1000, 0, 19), 19);
        // A grid whose first m is already remote searches down to m = 1; a crossover on the
        // grid point itself stays there.
        let cells = map(&params(50), &[1000], &[64, 128]);
        assert_eq!(
            boundary(&params(50), &cells, &[1000])[0].crossover_append_tokens,
            Some(19)
        );
        assert_eq!(crossover(&params(50), 1000, 18, 64), 19);
        assert_eq!(crossover(&params(50), 1000, 19, 64), 20);
    }
}

//! Iteration-time cost model: how long one forward pass of a batch takes.
//!
//! Every GPU instance runs iterations. One iteration's batch holds prefill parts (append-prefill
//! when `num_cached_tokens > 0`), each computing `m_i` new tokens on top of `L_i` cached ones, and
//! decode sequences, each producing one token with a context of `c_j` tokens. The model
//! (DESIGN §3; DistServe's closed form extended with an append-prefill attention term) is
//!
//! ```text
//! t_iter = β0 + β1·Σm_i + β2·Σ m_i·(L_i + m_i/2) + β3·n_decode + β4·Σc_j          \[ms\]
//! ```
//!
//! * `β0` \[ms\]: fixed cost of a forward pass (weights read once, kernel launches);
//! * `β1` [ms/token]: dense (GEMM) cost per computed token, ≥ 2·params FLOP / peak FLOP/s;
//! * `β2` [ms/token²]: causal attention of new tokens over cached + earlier new tokens;
//! * `β3` [ms/sequence]: per-decode-sequence cost (sampling, one query row);
//! * `β4` [ms/context token]: reading a decode sequence's KV cache, ≥ kv_bytes / HBM bandwidth.
//!
//! It is linear in its coefficients, so `ppdsim calibrate` fits it by (non-negative) least squares.

use crate::time::SimDuration;
use serde::{Deserialize, Serialize};

/// One prefill or append-prefill chunk in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillPart {
    /// Tokens computed in this iteration (`m_i`).
    pub num_new_tokens: u32,
    /// Tokens of this sequence already in the KV cache before this chunk (`L_i`).
    pub num_cached_tokens: u32,
}

/// The shape of one iteration's batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchShape {
    /// Prefill and append-prefill chunks.
    pub prefill: Vec<PrefillPart>,
    /// Decode sequences producing one token each.
    pub num_decode_seqs: u32,
    /// Σ context tokens of the decode sequences (`Σc_j`) \[tokens\].
    pub decode_context_tokens: u64,
}

impl BatchShape {
    /// True when the batch holds no work.
    pub fn is_empty(&self) -> bool {
        self.prefill.is_empty() && self.num_decode_seqs == 0
    }

    /// Tokens processed in this iteration (prefill tokens + one per decode sequence).
    pub fn num_tokens(&self) -> u64 {
        self.prefill.iter().map(|p| p.num_new_tokens as u64).sum::<u64>() + self.num_decode_seqs as u64
    }
}

/// A model of iteration time.
pub trait CostModel: Send + Sync {
    /// Duration of one forward pass over `batch`.
    ///
    /// # Panics
    /// Implementations may panic on an empty batch (the simulator never runs one).
    fn step_time(&self, batch: &BatchShape) -> SimDuration;

    /// Duration of a decode-only iteration of `num_decode_seqs` sequences holding
    /// `decode_context_tokens` tokens of context: exactly [`CostModel::step_time`] of that batch
    /// (models may compute it without building the batch; decode runs call it once per step).
    fn decode_step_time(&self, num_decode_seqs: u32, decode_context_tokens: u64) -> SimDuration {
        self.step_time(&BatchShape {
            num_decode_seqs,
            decode_context_tokens,
            ..BatchShape::default()
        })
    }
}

/// The five coefficients of the linear iteration model (see the module docs for units).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterationCoefficients {
    /// β0 [ms per iteration].
    pub beta0_ms: f64,
    /// β1 [ms per computed prefill token].
    pub beta1_ms_per_token: f64,
    /// β2 [ms per token² of `m·(L + m/2)`].
    pub beta2_ms_per_token2: f64,
    /// β3 [ms per decode sequence].
    pub beta3_ms_per_seq: f64,
    /// β4 [ms per decode context token].
    pub beta4_ms_per_context_token: f64,
}

/// Names of the five coefficients in fit reports and model files, in feature order.
pub const COEFFICIENT_NAMES: [&str; 5] = [
    "beta0_ms",
    "beta1_ms_per_token",
    "beta2_ms_per_token2",
    "beta3_ms_per_seq",
    "beta4_ms_per_context_token",
];

/// Units of the five coefficients, in feature order.
pub const COEFFICIENT_UNITS: [&str; 5] = ["ms", "ms/token", "ms/token^2", "ms/decode-seq", "ms/context-token"];

impl IterationCoefficients {
    /// From `[β0, β1, β2, β3, β4]`.
    pub fn from_array(b: [f64; 5]) -> Self {
        IterationCoefficients {
            beta0_ms: b[0],
            beta1_ms_per_token: b[1],
            beta2_ms_per_token2: b[2],
            beta3_ms_per_seq: b[3],
            beta4_ms_per_context_token: b[4],
        }
    }

    /// As `[β0, β1, β2, β3, β4]`.
    pub fn to_array(&self) -> [f64; 5] {
        [
            self.beta0_ms,
            self.beta1_ms_per_token,
            self.beta2_ms_per_token2,
            self.beta3_ms_per_seq,
            self.beta4_ms_per_context_token,
        ]
    }

    /// The regressors `[1, Σm, Σm(L+m/2), n_decode, Σc]` of a batch.
    pub fn features(batch: &BatchShape) -> [f64; 5] {
        let mut sum_m = 0.0;
        let mut sum_attn = 0.0;
        for p in &batch.prefill {
            let m = p.num_new_tokens as f64;
            let l = p.num_cached_tokens as f64;
            sum_m += m;
            sum_attn += m * (l + m / 2.0);
        }
        [
            1.0,
            sum_m,
            sum_attn,
            batch.num_decode_seqs as f64,
            batch.decode_context_tokens as f64,
        ]
    }

    /// Predicted iteration time \[ms\].
    pub fn predict_ms(&self, batch: &BatchShape) -> f64 {
        let x = Self::features(batch);
        x.iter().zip(self.to_array()).map(|(x, b)| x * b).sum()
    }
}

/// The fitted linear model used by the simulator.
#[derive(Clone, Debug)]
pub struct LinearCostModel {
    /// Coefficients, all ≥ 0.
    pub coefficients: IterationCoefficients,
}

impl CostModel for LinearCostModel {
    fn step_time(&self, batch: &BatchShape) -> SimDuration {
        assert!(!batch.is_empty(), "cost model asked for the time of an empty batch");
        SimDuration::from_ms_f64(self.coefficients.predict_ms(batch).max(0.0))
    }

    fn decode_step_time(&self, num_decode_seqs: u32, decode_context_tokens: u64) -> SimDuration {
        assert!(num_decode_seqs > 0, "cost model asked for the time of an empty batch");
        let c = &self.coefficients;
        // `predict_ms`'s sum with the prefill features at zero, term by term in its order (adding
        // 0 × β is exact), so the result is bit-identical.
        let ms = c.beta0_ms
            + num_decode_seqs as f64 * c.beta3_ms_per_seq
            + decode_context_tokens as f64 * c.beta4_ms_per_context_token;
        SimDuration::from_ms_f64(ms.max(0.0))
    }
}

/// Every non-empty iteration takes the same time. For tests whose timings are computed by hand
/// (SplitwiseSim's `ConstantPerformanceModel` plays the same role).
#[derive(Clone, Copy, Debug)]
pub struct ConstantCostModel {
    /// Duration of every iteration \[ms\].
    pub step_ms: f64,
}

impl CostModel for ConstantCostModel {
    fn step_time(&self, batch: &BatchShape) -> SimDuration {
        assert!(!batch.is_empty(), "cost model asked for the time of an empty batch");
        SimDuration::from_ms_f64(self.step_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_step_time_is_step_time_of_the_decode_batch_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let c: [f64; 5] = std::array::from_fn(|_| rng.gen::<f64>() * 10f64.powi(rng.gen_range(-8..2)));
            let m = LinearCostModel {
                coefficients: IterationCoefficients::from_array(c),
            };
            let (n, ctx) = (rng.gen_range(1..512u32), rng.gen_range(0..4_000_000u64));
            let shape = BatchShape {
                num_decode_seqs: n,
                decode_context_tokens: ctx,
                ..BatchShape::default()
            };
            assert_eq!(m.decode_step_time(n, ctx), m.step_time(&shape), "{c:?} {n} {ctx}");
        }
    }

    #[test]
    fn linear_model_evaluates_each_term() {
        let c = IterationCoefficients::from_array([5.0, 0.02, 1e-6, 0.01, 7e-5]);
        let batch = BatchShape {
            prefill: vec![PrefillPart {
                num_new_tokens: 100,
                num_cached_tokens: 1000,
            }],
            num_decode_seqs: 10,
            decode_context_tokens: 20_000,
        };
        // 5 + 0.02*100 + 1e-6*100*(1000+50) + 0.01*10 + 7e-5*20000 = 5 + 2 + 0.105 + 0.1 + 1.4
        assert!((c.predict_ms(&batch) - 8.605).abs() < 1e-12);
        let m = LinearCostModel { coefficients: c };
        assert_eq!(m.step_time(&batch), SimDuration(8605));
    }
}

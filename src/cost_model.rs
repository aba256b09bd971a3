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
    /// (models may compute it without building the batch).
    ///
    /// # Panics
    /// If `num_decode_seqs` is 0 (an empty batch).
    fn decode_step_time(&self, num_decode_seqs: u32, decode_context_tokens: u64) -> SimDuration {
        assert!(num_decode_seqs > 0, "cost model asked for the time of an empty batch");
        match self.decode_step_cost(num_decode_seqs) {
            Some(cost) => cost.time(decode_context_tokens),
            None => self.step_time(&BatchShape {
                num_decode_seqs,
                decode_context_tokens,
                ..BatchShape::default()
            }),
        }
    }

    /// The decode-only iteration time of `num_decode_seqs` sequences as an exact affine function
    /// of their context, when the model has one: [`AffineDecodeCost::time`] must equal
    /// [`CostModel::step_time`] of every decode-only batch of that many sequences. Decode runs
    /// need it (their end is a closed-form sum, [`AffineDecodeCost::sum`]); `None` (the default)
    /// makes the simulator step such batches one iteration at a time.
    fn decode_step_cost(&self, _num_decode_seqs: u32) -> Option<AffineDecodeCost> {
        None
    }
}

/// Fractional bits of [`AffineDecodeCost`]'s fixed point: 2^-32 µs (2.3e-10 µs) resolution.
pub const DECODE_COST_FRAC_BITS: u32 = 32;

/// A decode-only iteration's time as an exact function of its batch's Σ context tokens `c`, in
/// integer fixed point: `time(c) = max(0, ⌊(offset + c·per_context_token) / 2^32⌋)` µs, where
/// `offset` holds the fixed cost plus ½ µs (so the floor rounds to the nearest µs, halves up, as
/// [`SimDuration::from_ms_f64`] does). Integer arithmetic makes the time of a run of decode steps
/// — contexts growing by one token per sequence per step — a closed-form sum
/// ([`AffineDecodeCost::sum`]) that equals the step-by-step sum bit for bit.
///
/// Source: the linear iteration model's decode terms (module docs) with β0, β3 and β4 each rounded
/// to 2^-32 µs: before the µs rounding a step time differs from the exact value by at most
/// (1 + n + c) × 2^-33 µs for n sequences and c context tokens (1.2 × 10^-3 µs at 10^7 tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffineDecodeCost {
    /// Fixed part plus ½ µs \[2^-32 µs\].
    pub offset: i128,
    /// Per context token \[2^-32 µs per token\].
    pub per_context_token: i128,
}

impl AffineDecodeCost {
    const ONE_US: i128 = 1 << DECODE_COST_FRAC_BITS;
    /// Runs up to this many steps are summed term by term (≈ 1 ns a term against a few hundred
    /// for the reduction's 128-bit divisions).
    const LOOP_STEPS: u64 = 256;

    /// Fixed point of `ms` milliseconds \[2^-32 µs\], rounded to nearest (halves away from
    /// zero, [`crate::time::round_half_away`]).
    pub(crate) fn fixed(ms: f64) -> i128 {
        assert!(ms.is_finite(), "cost model coefficient {ms} ms is not finite");
        crate::time::round_half_away(ms * 1000.0 * Self::ONE_US as f64) as i128
    }

    /// From the fixed part and the cost per context token, both in fixed point \[2^-32 µs,
    /// 2^-32 µs per token\]; adds the ½ µs that makes [`AffineDecodeCost::time`] round.
    pub fn from_fixed(fixed: i128, per_context_token: i128) -> Self {
        AffineDecodeCost {
            offset: fixed + Self::ONE_US / 2,
            per_context_token,
        }
    }

    /// From the fixed part \[ms\] and the cost per context token \[ms/token\].
    ///
    /// # Panics
    /// If either is not finite.
    pub fn from_ms(fixed_ms: f64, per_context_token_ms: f64) -> Self {
        Self::from_fixed(Self::fixed(fixed_ms), Self::fixed(per_context_token_ms))
    }

    /// Every step takes exactly `step`.
    pub fn constant(step: SimDuration) -> Self {
        Self::from_fixed(step.0 as i128 * Self::ONE_US, 0)
    }

    /// The same cost for a batch whose priced context is `tokens` fewer than the context given:
    /// `with_context_discount(d).time(ctx) == time(ctx − d)` exactly, for every `ctx ≥ d`
    /// (cascade attention reading a shared prefix once, [`crate::sim::instance::EngineLimits::cascade_attention`]).
    pub fn with_context_discount(&self, tokens: u64) -> Self {
        AffineDecodeCost {
            offset: self.offset - tokens as i128 * self.per_context_token,
            per_context_token: self.per_context_token,
        }
    }

    /// Numerator of `time(ctx)` \[2^-32 µs\].
    pub(crate) fn numerator(&self, ctx: u64) -> i128 {
        self.offset + ctx as i128 * self.per_context_token
    }

    /// Duration of a decode step whose batch holds `ctx` context tokens (≥ 0: clamped).
    pub fn time(&self, ctx: u64) -> SimDuration {
        SimDuration(self.numerator(ctx).max(0).div_euclid(Self::ONE_US) as u64)
    }

    /// `Σ_{j<k} time(ctx0 + j·step)`: the total time of `k` consecutive decode steps of a batch
    /// whose context starts at `ctx0` tokens and grows by `step` tokens per step (one per
    /// sequence), in O(log) integer operations; equal to the step-by-step sum.
    ///
    /// # Panics
    /// If a step of the `k` would be clamped at zero (its numerator negative): decode runs
    /// never plan such steps.
    pub fn sum(&self, ctx0: u64, step: u64, k: u64) -> SimDuration {
        if k == 0 {
            return SimDuration::ZERO;
        }
        let first = self.numerator(ctx0);
        let d = step as i128 * self.per_context_token;
        let last = first + (k as i128 - 1) * d;
        assert!(
            first >= 0 && last >= 0,
            "a decode run's step time would be negative (numerators {first}, {last})"
        );
        // Summed from the smaller end when the cost falls with context (a negative β4): the same
        // terms in the other order.
        let (b, a) = if d >= 0 { (first, d) } else { (last, -d) };
        // Short runs: the terms one by one (a shift each) beat the O(log) reduction's divisions,
        // in 64 bits, which hold every realistic step (2^64 × 2^-32 µs is 71 minutes); longer
        // steps take the reduction whatever the run's length.
        if k <= Self::LOOP_STEPS && u64::try_from(first.max(last)).is_ok() {
            let (mut num, a) = (b as u64, a as u64);
            let mut total = num >> DECODE_COST_FRAC_BITS;
            for _ in 1..k {
                num += a;
                total += num >> DECODE_COST_FRAC_BITS;
            }
            return SimDuration(total);
        }
        SimDuration(floor_sum(k as u128, Self::ONE_US as u128, a as u128, b as u128) as u64)
    }
}

/// `Σ_{i=0}^{n-1} ⌊(a·i + b) / m⌋` for `m > 0`, in O(log m) steps: the Euclid-like reduction
/// of the lattice-point count under a line (Graham, Knuth & Patashnik, *Concrete Mathematics*,
/// §3.5): whole multiples of `m` in `a` and `b` are summed directly, then the count of points
/// under the remaining line is the same sum with the roles of `a` and `m` swapped.
fn floor_sum(mut n: u128, mut m: u128, mut a: u128, mut b: u128) -> u128 {
    assert!(m > 0, "floor_sum modulus 0");
    if n == 0 {
        return 0;
    }
    let mut total = 0u128;
    loop {
        if a >= m {
            total += n * (n - 1) / 2 * (a / m);
            a %= m;
        }
        if b >= m {
            total += n * (b / m);
            b %= m;
        }
        // Now a, b < m: the largest term's numerator decides whether any floor is ≥ 1.
        let y_max = a * n + b;
        if y_max < m {
            return total;
        }
        // Count lattice points by columns of the transposed line.
        n = y_max / m;
        b = y_max % m;
        std::mem::swap(&mut m, &mut a);
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
    coefficients: IterationCoefficients,
    /// β0, β3 and β4 in [`AffineDecodeCost`]'s fixed point \[2^-32 µs, per sequence, per
    /// context token\], converted once.
    decode_fixed: [i128; 3],
}

impl LinearCostModel {
    /// The model of `coefficients`.
    ///
    /// # Panics
    /// If β0, β3 or β4 is not finite (model files are validated on load).
    pub fn new(coefficients: IterationCoefficients) -> Self {
        let c = &coefficients;
        LinearCostModel {
            decode_fixed: [
                AffineDecodeCost::fixed(c.beta0_ms),
                AffineDecodeCost::fixed(c.beta3_ms_per_seq),
                AffineDecodeCost::fixed(c.beta4_ms_per_context_token),
            ],
            coefficients,
        }
    }

    /// Its coefficients.
    pub fn coefficients(&self) -> &IterationCoefficients {
        &self.coefficients
    }
}

impl CostModel for LinearCostModel {
    /// Batches with prefill: [`IterationCoefficients::predict_ms`] rounded to the µs.
    /// Decode-only batches: [`LinearCostModel::decode_step_cost`]'s exact fixed point (within
    /// 1 µs of the former; equal but at a rounding tie).
    fn step_time(&self, batch: &BatchShape) -> SimDuration {
        assert!(!batch.is_empty(), "cost model asked for the time of an empty batch");
        if batch.prefill.is_empty() {
            return self.decode_step_time(batch.num_decode_seqs, batch.decode_context_tokens);
        }
        SimDuration::from_ms_f64(self.coefficients.predict_ms(batch).max(0.0))
    }

    /// `β0 + n·β3` fixed, `β4` per context token, each coefficient rounded to 2^-32 µs once.
    fn decode_step_cost(&self, num_decode_seqs: u32) -> Option<AffineDecodeCost> {
        let [b0, b3, b4] = self.decode_fixed;
        Some(AffineDecodeCost::from_fixed(b0 + num_decode_seqs as i128 * b3, b4))
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

    fn decode_step_cost(&self, _num_decode_seqs: u32) -> Option<AffineDecodeCost> {
        Some(AffineDecodeCost::constant(SimDuration::from_ms_f64(self.step_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::{Rng, SeedableRng};

    /// A linear model with each coefficient uniform in [0, 10^e) for a random e in `exponents`.
    fn random_model(rng: &mut impl Rng, exponents: std::ops::Range<i32>) -> (LinearCostModel, [f64; 5]) {
        let c: [f64; 5] = std::array::from_fn(|_| rng.gen::<f64>() * 10f64.powi(rng.gen_range(exponents.clone())));
        (LinearCostModel::new(IterationCoefficients::from_array(c)), c)
    }

    #[test]
    fn decode_step_time_is_the_float_model_within_a_rounding_tie() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let (m, c) = random_model(&mut rng, -8..2);
            let (n, ctx) = (rng.gen_range(1..512u32), rng.gen_range(0..4_000_000u64));
            let shape = BatchShape {
                num_decode_seqs: n,
                decode_context_tokens: ctx,
                ..BatchShape::default()
            };
            let t = m.decode_step_time(n, ctx);
            assert_eq!(t, m.step_time(&shape), "{c:?} {n} {ctx}");
            // The fixed point is the f64 model's value to < 1e-3 µs: the same µs but where the
            // value lies that close to a half.
            let us = m.coefficients().predict_ms(&shape) * 1000.0;
            if (us - us.floor() - 0.5).abs() > 1e-3 {
                assert_eq!(t, SimDuration::from_ms_f64(us / 1000.0), "{c:?} {n} {ctx}");
            } else {
                assert!((t.0 as f64 - us).abs() <= 0.501, "{c:?} {n} {ctx}: {} vs {us}", t.0);
            }
        }
    }

    #[test]
    fn decode_step_time_rounds_half_microseconds_up() {
        // 1,000 µs fixed (+ the half) and 0.25 µs per context token, exactly in fixed point.
        let one = 1i128 << DECODE_COST_FRAC_BITS;
        let cost = AffineDecodeCost {
            offset: 1000 * one + one / 2,
            per_context_token: one / 4,
        };
        assert_eq!(cost.time(0), SimDuration(1000));
        assert_eq!(cost.time(1), SimDuration(1000)); // 1,000.25
        assert_eq!(cost.time(2), SimDuration(1001)); // 1,000.5: half up
        assert_eq!(cost.time(3), SimDuration(1001)); // 1,000.75
        assert_eq!(cost.sum(0, 1, 4), SimDuration(4002));
        // ms in, the same: 1 ms and 2^-12 ms = 0.244140625 µs are exact binary fractions.
        let from_ms = AffineDecodeCost::from_ms(1.0, 1.0 / 4096.0);
        assert_eq!(from_ms.time(2), SimDuration(1000)); // 1,000.488…
        assert_eq!(from_ms.time(3), SimDuration(1001)); // 1,000.732…
        assert_eq!(AffineDecodeCost::constant(SimDuration(7)).time(123_456), SimDuration(7));
    }

    #[test]
    fn fixed_point_rounds_like_f64_round() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let scale = 1000.0 * (1u64 << DECODE_COST_FRAC_BITS) as f64;
        let halves = [0.5, -0.5, 2.5, -2.5, 1.0 - f64::EPSILON / 2.0];
        for ms in halves
            .iter()
            .map(|u| u / scale)
            .chain((0..20_000).map(|_| (rng.gen::<f64>() - 0.5) * 10f64.powi(rng.gen_range(-12..7))))
        {
            assert_eq!(AffineDecodeCost::fixed(ms), (ms * scale).round() as i128, "{ms}");
        }
    }

    #[test]
    fn floor_sum_counts_like_the_loop() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..5_000 {
            let n = rng.gen_range(0..300u128);
            let m = rng.gen_range(1..5_000u128);
            let (a, b) = (rng.gen_range(0..20_000u128), rng.gen_range(0..20_000u128));
            let brute: u128 = (0..n).map(|i| (a * i + b) / m).sum();
            assert_eq!(floor_sum(n, m, a, b), brute, "n {n} m {m} a {a} b {b}");
        }
        // By hand: ⌊0/3⌋ + ⌊2/3⌋ + ⌊4/3⌋ + ⌊6/3⌋ + ⌊8/3⌋ = 0 + 0 + 1 + 2 + 2.
        assert_eq!(floor_sum(5, 3, 2, 0), 5);
    }

    #[test]
    fn a_run_sum_is_the_step_by_step_sum_and_a_discount_shifts_its_context() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        for _ in 0..2_000 {
            let (m, c) = random_model(&mut rng, -7..2);
            let n = rng.gen_range(1..256u32);
            let ctx0 = rng.gen_range(0..2_000_000u64);
            // Both ways of summing: term by term (≤ 256 steps) and the O(log) reduction.
            let k = if rng.gen() {
                rng.gen_range(0..=AffineDecodeCost::LOOP_STEPS)
            } else {
                rng.gen_range(AffineDecodeCost::LOOP_STEPS + 1..3_000)
            };
            let cost = m.decode_step_cost(n).expect("linear");
            let steps: u64 = (0..k).map(|j| m.decode_step_time(n, ctx0 + j * n as u64).0).sum();
            assert_eq!(cost.sum(ctx0, n as u64, k), SimDuration(steps), "{c:?} {n} {ctx0} {k}");
            // A context discount (cascade attention) prices the context that many tokens less.
            let d = rng.gen_range(0..=ctx0);
            let shifted = cost.with_context_discount(d);
            assert_eq!(shifted.time(ctx0), cost.time(ctx0 - d), "{c:?} {n} {ctx0} {d}");
            assert_eq!(shifted.sum(ctx0, n as u64, k), cost.sum(ctx0 - d, n as u64, k));
        }
        // A cost falling with context (β4 < 0) sums from the other end.
        let falling = AffineDecodeCost::from_ms(10.0, -0.001);
        let steps: u64 = (0..100).map(|j| falling.time(1000 + 3 * j).0).sum();
        assert_eq!(falling.sum(1000, 3, 100), SimDuration(steps));
        // By hand: 10 ms − 1 µs × (1,000 + 3j) over j < 100 = 100 × 9,000 − 3 × 4,950 µs.
        assert_eq!(steps, 900_000 - 14_850);
        // Steps beyond 2^32 µs (71.6 min) leave the 64-bit loop for the reduction, rising and
        // falling: 80 min ± 1 µs per context token, 8 steps of 5 sequences from 1,000 tokens.
        for per_token_ms in [0.001, -0.001] {
            let huge = AffineDecodeCost::from_ms(4.8e6, per_token_ms);
            assert!(huge.time(1000).0 > 1 << 32);
            let steps: u64 = (0..8).map(|j| huge.time(1000 + 5 * j).0).sum();
            assert_eq!(huge.sum(1000, 5, 8), SimDuration(steps));
            // By hand: 8 × (4.8e9 ± 1,000) ± 5 × 28 µs.
            let sign = per_token_ms.signum() as i64;
            assert_eq!(steps as i64, 8 * (4_800_000_000 + sign * 1000) + sign * 140);
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
        let m = LinearCostModel::new(c);
        assert_eq!(m.step_time(&batch), SimDuration(8605));
    }
}

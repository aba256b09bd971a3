//! Simulated time: exact integer microseconds.
//!
//! [`SimTime`] is an instant and [`SimDuration`] a span, both whole microseconds \[µs\] held in a `u64`.
//! Integer time gives exact ordering and equality (no epsilon comparisons, no drift from repeated
//! `t += dt`), identical results on every platform, and ties that really are ties. Cost models
//! compute in `f64` milliseconds and convert at the edge with [`SimDuration::from_ms_f64`], which
//! rounds to the nearest microsecond (≤ 0.5 µs, far below GPU timing noise). Outputs report `f64`
//! milliseconds.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A simulated instant [µs since the simulation started].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct SimTime(pub u64);

/// A simulated span \[µs\].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct SimDuration(pub u64);

impl SimTime {
    /// The simulation start.
    pub const ZERO: SimTime = SimTime(0);

    /// This instant in milliseconds \[ms\].
    pub fn as_ms(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// This instant in seconds \[s\].
    pub fn as_secs(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// The span from `earlier` to `self`.
    ///
    /// # Panics
    /// If `earlier` is after `self` (a broken ordering invariant).
    pub fn since(self, earlier: SimTime) -> SimDuration {
        assert!(earlier <= self, "time went backwards: {earlier:?} > {self:?}");
        SimDuration(self.0 - earlier.0)
    }
}

/// `x.round()` (halves away from zero) without the libm call `f64::round` compiles to on
/// baseline x86-64: below 2⁵², `x − trunc(x)` is exact, so comparing it with ±0.5 decides as
/// `round` does; from 2⁵² on every double is an integer (returned as is, as are NaN and ±∞).
/// Shared by every hot-path rounding (durations, the decode cost's fixed point, CSV values).
pub fn round_half_away(x: f64) -> f64 {
    const EXACT: f64 = 4_503_599_627_370_496.0; // 2^52
    if x.abs() >= EXACT || x.is_nan() {
        return x;
    }
    let t = x as i64;
    let frac = x - t as f64;
    // The sign as `round` gives it: −0.0 for (−0.5, −0.0].
    ((t + (frac >= 0.5) as i64 - (frac <= -0.5) as i64) as f64).copysign(x)
}

/// `x.round() as u64` for a finite `x ≥ 0` (saturating).
fn round_nonneg(x: f64) -> u64 {
    round_half_away(x) as u64
}

impl SimDuration {
    /// The empty span.
    pub const ZERO: SimDuration = SimDuration(0);

    /// A span from milliseconds \[ms\], rounded to the nearest microsecond.
    ///
    /// # Panics
    /// If `ms` is negative or not finite (a cost model returned nonsense: a bug, not bad input).
    pub fn from_ms_f64(ms: f64) -> SimDuration {
        assert!(
            ms.is_finite() && ms >= 0.0,
            "duration must be finite and >= 0 ms, got {ms}"
        );
        SimDuration(round_nonneg(ms * 1000.0))
    }

    /// A span from seconds \[s\], rounded to the nearest microsecond.
    ///
    /// # Panics
    /// As [`SimDuration::from_ms_f64`].
    pub fn from_secs_f64(s: f64) -> SimDuration {
        Self::from_ms_f64(s * 1000.0)
    }

    /// This span in milliseconds \[ms\].
    pub fn as_ms(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Add<SimDuration> for SimTime {
    type Output = SimTime;
    fn add(self, rhs: SimDuration) -> SimTime {
        SimTime(self.0.checked_add(rhs.0).expect("simulated time overflow"))
    }
}

impl AddAssign<SimDuration> for SimTime {
    fn add_assign(&mut self, rhs: SimDuration) {
        *self = *self + rhs;
    }
}

impl Add for SimDuration {
    type Output = SimDuration;
    fn add(self, rhs: SimDuration) -> SimDuration {
        SimDuration(self.0 + rhs.0)
    }
}

impl Sub for SimTime {
    type Output = SimDuration;
    fn sub(self, rhs: SimTime) -> SimDuration {
        self.since(rhs)
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}s", self.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_microsecond() {
        assert_eq!(SimDuration::from_ms_f64(1.0004), SimDuration(1000));
        assert_eq!(SimDuration::from_ms_f64(1.0006), SimDuration(1001));
        assert_eq!(SimDuration::from_secs_f64(2.5), SimDuration(2_500_000));
        assert_eq!((SimTime(10) + SimDuration(5)).0, 15);
        assert_eq!(SimTime(15).since(SimTime(10)), SimDuration(5));
    }

    #[test]
    fn round_nonneg_is_f64_round() {
        use rand::{Rng, SeedableRng};
        let two52 = 4_503_599_627_370_496.0f64;
        let edges = [
            0.0,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            1e-300,
            two52 - 0.5,
            two52 - 1.5,
            two52,
            two52 + 2.0,
            1e19,
            1e30,
        ];
        for x in edges {
            assert_eq!(round_nonneg(x), x.round() as u64, "{x}");
            assert_eq!(round_half_away(-x).to_bits(), (-x).round().to_bits(), "{}", -x);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200_000 {
            let x = rng.gen::<f64>() * 10f64.powi(rng.gen_range(-3..20));
            assert_eq!(round_nonneg(x), x.round() as u64, "{x}");
            let half = (rng.gen_range(0..1u64 << 40) as f64) + 0.5;
            assert_eq!(round_nonneg(half), half.round() as u64, "{half}");
            assert_eq!(round_half_away(-half), (-half).round(), "{}", -half);
            assert_eq!(round_half_away(-x), (-x).round(), "{}", -x);
        }
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn since_panics_on_reversed_order() {
        let _ = SimTime(1).since(SimTime(2));
    }
}

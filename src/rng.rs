//! Named, independent random streams derived from one scenario seed.
//!
//! Every stream is a [`ChaCha8Rng`] (portable and reproducible across platforms and versions of
//! `rand`, unlike `StdRng`) seeded with the scenario seed and a distinct stream number, so that
//! drawing more numbers for one purpose (say, think times) never shifts another (arrivals).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One generator per purpose.
pub struct RngStreams {
    /// Conversation start times.
    pub arrivals: ChaCha8Rng,
    /// Think times between a turn's answer and the next turn.
    pub think: ChaCha8Rng,
    /// Which trace conversations are replayed.
    pub sampling: ChaCha8Rng,
}

impl RngStreams {
    /// Streams for `seed`; the same seed always gives the same streams.
    pub fn new(seed: u64) -> Self {
        let stream = |k: u64| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(k);
            r
        };
        RngStreams {
            arrivals: stream(1),
            think: stream(2),
            sampling: stream(3),
        }
    }
}

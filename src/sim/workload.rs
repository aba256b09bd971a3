//! Turning a trace into timed conversations.
//!
//! Conversations start by a Poisson process (exponential inter-arrival gaps at `rate_per_s`), each
//! replaying the next trace conversation (trace order, or a seeded shuffle). Turn `k+1` arrives a
//! think time after turn `k`'s last token; think times are drawn here, before simulation, so every
//! policy replays identical requests (common random numbers).

use crate::rng::RngStreams;
use crate::time::{SimDuration, SimTime};
use crate::trace::{Conversation, Turn};
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Exp};
use serde::{Deserialize, Serialize};

/// Conversation start process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ArrivalSpec {
    /// Poisson starts at `rate_per_s` new conversations per second.
    Poisson {
        /// Rate [conversations/s].
        rate_per_s: f64,
    },
    /// All conversations start at time 0 (a burst).
    Burst,
}

/// Think time between an answer's last token and the next turn's arrival.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ThinkTimeSpec {
    /// Exponential with mean `mean_s` \[s\].
    Exponential {
        /// Mean \[s\].
        mean_s: f64,
    },
    /// Always `value_s` \[s\] (0 = next turn immediately, as vllm-ppd's benchmark client).
    Constant {
        /// Value \[s\].
        value_s: f64,
    },
}

/// Which trace conversations are replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConversationOrder {
    /// The first `num_conversations` in file order.
    #[default]
    Trace,
    /// A seeded shuffle of the trace, then the first `num_conversations`.
    Shuffle,
}

/// One conversation ready to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedConversation {
    /// Trace id.
    pub id: String,
    /// When turn 1 arrives.
    pub start_at: SimTime,
    /// Turns.
    pub turns: Vec<Turn>,
    /// Think time after turn `k` (length `turns.len() − 1`).
    pub think_after: Vec<SimDuration>,
}

/// Builds the timed workload.
///
/// # Panics
/// If `num_conversations` exceeds the trace or a rate/mean is not positive (scenario validation
/// refuses both first).
pub fn generate(
    trace: &[Conversation],
    num_conversations: usize,
    order: ConversationOrder,
    arrival: &ArrivalSpec,
    think: &ThinkTimeSpec,
    rng: &mut RngStreams,
) -> Vec<TimedConversation> {
    assert!(num_conversations <= trace.len());
    let mut idx: Vec<usize> = (0..trace.len()).collect();
    if order == ConversationOrder::Shuffle {
        idx.shuffle(&mut rng.sampling);
    }
    let gap = match arrival {
        ArrivalSpec::Poisson { rate_per_s } => Some(Exp::new(*rate_per_s).expect("rate validated > 0")),
        ArrivalSpec::Burst => None,
    };
    let think_exp = match think {
        ThinkTimeSpec::Exponential { mean_s } => Some(Exp::new(1.0 / mean_s).expect("mean validated > 0")),
        ThinkTimeSpec::Constant { .. } => None,
    };
    let mut t = 0.0f64;
    let mut out = Vec::with_capacity(num_conversations);
    for (n, &i) in idx.iter().take(num_conversations).enumerate() {
        if let Some(g) = &gap {
            if n > 0 {
                t += g.sample(&mut rng.arrivals);
            }
        }
        let c = &trace[i];
        let think_after = (1..c.turns.len())
            .map(|_| {
                let s = match (&think_exp, think) {
                    (Some(e), _) => e.sample(&mut rng.think),
                    (None, ThinkTimeSpec::Constant { value_s }) => *value_s,
                    _ => unreachable!(),
                };
                SimDuration::from_secs_f64(s)
            })
            .collect();
        out.push(TimedConversation {
            id: c.id.clone(),
            start_at: SimTime::ZERO + SimDuration::from_secs_f64(t),
            turns: c.turns.clone(),
            think_after,
        });
    }
    out
}

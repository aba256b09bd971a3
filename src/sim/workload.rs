//! Turning a trace into timed conversations.
//!
//! Conversations start by a Poisson process (exponential inter-arrival gaps at `rate_per_s`), all
//! at once, or at the times the trace recorded (`arrival_s`, optionally sped up), each replaying
//! the next trace conversation (trace order, or a seeded shuffle). Turn `k+1` arrives a
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
    /// Each conversation starts at its trace `arrival_s` ÷ `speedup` (a recorded arrival process,
    /// e.g. Azure's or Vidur's request traces); needs a trace whose conversations all carry
    /// `arrival_s`, in trace order.
    Trace {
        /// Time compression: 2 replays the trace twice as fast (twice the load) \[×\].
        #[serde(default = "unit_speedup")]
        speedup: f64,
    },
    /// A measurement protocol with a setup phase (seed 003's `qps_benchmark.py`): every
    /// conversation's first turn is sent at time 0 (establishing the conversations), then each
    /// conversation's second turn is sent at `setup_s` + its arrival in a Poisson process of
    /// `rate_per_s` over `duration_s`; as many conversations as arrivals fall in the window, at
    /// most `rate_per_s × duration_s`. Later turns follow the think time.
    Setup {
        /// Rate of second-turn arrivals \[1/s\].
        rate_per_s: f64,
        /// Length of the measured window \[s\].
        duration_s: f64,
        /// Time allowed for the setup phase before the window opens \[s\].
        setup_s: f64,
    },
}

fn unit_speedup() -> f64 {
    1.0
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
    /// Trace id (shared by every run's records of the conversation).
    pub id: std::sync::Arc<str>,
    /// When turn 1 arrives.
    pub start_at: SimTime,
    /// Turns (shared with the trace conversation it replays and with every other replay of it).
    pub turns: std::sync::Arc<[Turn]>,
    /// When each turn after the first is sent (length `turns.len() − 1`: entry `k − 1` for
    /// turn `k + 1`).
    pub later_turns: Box<[LaterTurn]>,
    /// A prefix shared with other conversations and resident before the run (a warmed system
    /// prompt or document): `(key, tokens)`. Turn 1's user tokens include it.
    pub shared_prefix: Option<(u32, u32)>,
}

// 72 bytes on 64-bit targets: a fed run holds one per conversation, and each is written twice
// (in the batch the reader sends, then in the run's array). Two `Vec`s in place of
// `later_turns` made it 104 (Vidur's run: ≈ 80 more pages of memory to fault in).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<TimedConversation>() == 72);

/// When turn `k + 1` (k ≥ 1) of a conversation is sent: at the later of `think` after turn `k`'s
/// last token and `not_before`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaterTurn {
    /// Think time after turn `k`'s last token.
    pub think: SimDuration,
    /// Earliest send (a benchmark's scheduled send after a setup phase); [`SimTime::ZERO`]
    /// sets none.
    pub not_before: SimTime,
}

impl LaterTurn {
    /// Turns sent `think` after the previous answer each, with no earliest send.
    pub fn after_each(think: impl IntoIterator<Item = SimDuration>) -> Box<[LaterTurn]> {
        think
            .into_iter()
            .map(|think| LaterTurn {
                think,
                not_before: SimTime::ZERO,
            })
            .collect()
    }
}

/// The most conversations a per-conversation array is sized for up front (2²², ≈ 4.2 M): the
/// workload's, a fed run's (its simulation's, its feed's, its summary's first-turn columns). A
/// count above it still fits, the arrays growing past it; a huge count a trace or a window cuts
/// short reserves no more than this.
pub const MAX_RESERVED_CONVERSATIONS: usize = 1 << 22;

/// Builds the timed workload from `source` conversations: `count` of them (cycling through the
/// list when it is shorter), or, with `window_s`, as many as the arrival process starts within
/// the window (vllm-ppd's generator: Poisson starts for 10 s).
///
/// # Panics
/// If neither `count` nor `window_s` is given, `source` is empty, or a rate/mean is not positive
/// (scenario validation refuses all of these first).
pub fn generate(
    source: &[Conversation],
    count: Option<usize>,
    window_s: Option<f64>,
    order: ConversationOrder,
    arrival: &ArrivalSpec,
    think: &ThinkTimeSpec,
    rng: &mut RngStreams,
) -> Vec<TimedConversation> {
    let mut idx: Vec<usize> = (0..source.len()).collect();
    if order == ConversationOrder::Shuffle {
        idx.shuffle(&mut rng.sampling);
    }
    if let ArrivalSpec::Setup {
        rate_per_s,
        duration_s,
        setup_s,
    } = arrival
    {
        return setup_protocol(source, &idx, *rate_per_s, *duration_s, *setup_s, think, rng);
    }
    assert!(!source.is_empty() && (count.is_some() || window_s.is_some()));
    let gap = match arrival {
        ArrivalSpec::Poisson { rate_per_s } => Some(Exp::new(*rate_per_s).expect("rate validated > 0")),
        ArrivalSpec::Burst | ArrivalSpec::Trace { .. } => None,
        ArrivalSpec::Setup { .. } => unreachable!("handled above"),
    };
    let mut t = 0.0f64;
    // Sized once when the count decides (no copies as it grows; a window's count is a draw),
    // bounded so that a huge count cut short by a window reserves little.
    let mut out = Vec::with_capacity(
        count
            .filter(|_| window_s.is_none())
            .unwrap_or(0)
            .min(MAX_RESERVED_CONVERSATIONS),
    );
    for n in 0.. {
        let k = idx[n % idx.len()];
        let c = &source[k];
        // Conversation n's start.
        match (arrival, &gap) {
            // With a window the first start is a draw too (the benchmark's generator); otherwise it is at 0.
            (_, Some(g)) if n > 0 || window_s.is_some() => t += g.sample(&mut rng.arrivals),
            (ArrivalSpec::Trace { speedup }, _) => {
                t = c
                    .arrival_s
                    .expect("scenario validation requires arrival_s with trace arrivals")
                    / speedup
            }
            _ => {}
        }
        // Stop at the count; with a window, past it, or — without random starts (burst, recorded
        // times) — when the source is used up.
        match (count, window_s) {
            (Some(c), _) if n >= c => break,
            (None, Some(w)) if t >= w || (gap.is_none() && n >= source.len()) => break,
            _ => {}
        }
        out.push(timed(c, t, think, rng));
    }
    out
}

/// Conversation `c` started at `t` seconds, its think times drawn from `rng.think`
/// ([`think_times`]).
fn timed(c: &Conversation, t: f64, think: &ThinkTimeSpec, rng: &mut RngStreams) -> TimedConversation {
    TimedConversation {
        id: c.id.clone(),
        start_at: SimTime::ZERO + SimDuration::from_secs_f64(t),
        turns: c.turns.clone(),
        later_turns: LaterTurn::after_each(think_times(c, think, rng)),
        shared_prefix: None,
    }
}

/// [`generate`] one conversation at a time, for a replay of a trace's recorded arrivals
/// (`ArrivalSpec::Trace`, in trace order, no window): the same conversations, with the same
/// draws, as `generate` gives for them, each as its source conversation is read.
pub struct TraceReplay {
    /// The replay's speed-up \[×\]: a conversation starts at its `arrival_s` / `speedup`.
    speedup: f64,
    think: ThinkTimeSpec,
    rng: RngStreams,
}

impl TraceReplay {
    /// The replay at `speedup` \[×\] with think times `think`, drawing from `rng` as `generate`
    /// would.
    pub fn new(speedup: f64, think: &ThinkTimeSpec, rng: RngStreams) -> Self {
        TraceReplay {
            speedup,
            think: think.clone(),
            rng,
        }
    }

    /// The replay's speed-up \[×\].
    pub fn speedup(&self) -> f64 {
        self.speedup
    }

    /// The next conversation of the replay, `c`, which arrives at `arrival_s` \[s\] (its
    /// `arrival_s`, checked by the caller).
    ///
    /// # Panics
    /// If an exponential think time's mean is not positive (scenario validation refuses it first).
    pub fn next(&mut self, c: &Conversation, arrival_s: f64) -> TimedConversation {
        timed(c, arrival_s / self.speedup, &self.think, &mut self.rng)
    }
}

/// Think times after each turn but the last of `c`.
fn think_times(c: &Conversation, think: &ThinkTimeSpec, rng: &mut RngStreams) -> Vec<SimDuration> {
    let exp = match think {
        ThinkTimeSpec::Exponential { mean_s } => Some(Exp::new(1.0 / mean_s).expect("mean validated > 0")),
        ThinkTimeSpec::Constant { .. } => None,
    };
    (1..c.turns.len())
        .map(|_| {
            SimDuration::from_secs_f64(match (&exp, think) {
                (Some(e), _) => e.sample(&mut rng.think),
                (None, ThinkTimeSpec::Constant { value_s }) => *value_s,
                _ => unreachable!(),
            })
        })
        .collect()
}

/// The setup-phase protocol of [`ArrivalSpec::Setup`].
fn setup_protocol(
    source: &[Conversation],
    idx: &[usize],
    rate_per_s: f64,
    duration_s: f64,
    setup_s: f64,
    think: &ThinkTimeSpec,
    rng: &mut RngStreams,
) -> Vec<TimedConversation> {
    let gap = Exp::new(rate_per_s).expect("rate validated > 0");
    let cap = ((rate_per_s * duration_s) as usize).max(1);
    let mut arrivals = Vec::new();
    let mut t = 0.0f64;
    while arrivals.len() < cap {
        t += gap.sample(&mut rng.arrivals);
        if t >= duration_s {
            break;
        }
        arrivals.push(t);
    }
    if arrivals.is_empty() {
        // The benchmark sends one request when no arrival falls in the window.
        arrivals.push(0.0);
    }
    arrivals
        .iter()
        .enumerate()
        .map(|(n, &a)| {
            let k = idx[n % idx.len()];
            let c = &source[k];
            let mut later_turns = LaterTurn::after_each(think_times(c, think, rng));
            if let Some(first) = later_turns.first_mut() {
                first.not_before = SimTime::ZERO + SimDuration::from_secs_f64(setup_s + a);
            }
            TimedConversation {
                id: c.id.clone(),
                start_at: SimTime::ZERO,
                turns: c.turns.clone(),
                later_turns,
                shared_prefix: None,
            }
        })
        .collect()
}

/// Synthetic conversations, for the measurement protocols of the seeds and vllm-ppd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SyntheticSpec {
    /// Every conversation has these turns, `[user tokens, answer tokens]` each.
    Fixed {
        /// Turns.
        turns: Vec<[u32; 2]>,
    },
    /// Seed 000's grid: one conversation per (L, m) pair, turn 1 building a context of `L` tokens
    /// (`L − 1` user tokens and a 1-token answer), turn 2 appending `m` tokens and answering
    /// `output_tokens`.
    Grid {
        /// Context lengths `L` \[tokens\].
        context_tokens: Vec<u32>,
        /// Append lengths `m` \[tokens\].
        append_tokens: Vec<u32>,
        /// Turn-2 output length \[tokens\].
        output_tokens: u32,
    },
}

impl SyntheticSpec {
    /// The conversations this spec describes.
    pub fn conversations(&self) -> Vec<Conversation> {
        match self {
            SyntheticSpec::Fixed { turns } => vec![Conversation {
                id: "synthetic".into(),
                turns: turns
                    .iter()
                    .map(|t| Turn {
                        user_tokens: t[0],
                        assistant_tokens: t[1],
                    })
                    .collect(),
                arrival_s: None,
            }],
            SyntheticSpec::Grid {
                context_tokens,
                append_tokens,
                output_tokens,
            } => context_tokens
                .iter()
                .flat_map(|&l| {
                    append_tokens.iter().map(move |&m| Conversation {
                        id: format!("L{l}_m{m}").into(),
                        turns: [
                            Turn {
                                user_tokens: l.saturating_sub(1),
                                assistant_tokens: 1,
                            },
                            Turn {
                                user_tokens: m,
                                assistant_tokens: *output_tokens,
                            },
                        ]
                        .into(),
                        arrival_s: None,
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(ts: &[f64]) -> Vec<Conversation> {
        ts.iter()
            .enumerate()
            .map(|(i, &t)| Conversation {
                id: format!("c{i}").into(),
                turns: vec![
                    Turn {
                        user_tokens: 10,
                        assistant_tokens: 5,
                    };
                    2
                ]
                .into(),
                arrival_s: Some(t),
            })
            .collect()
    }

    #[test]
    fn a_workload_shares_the_trace_s_turns_and_ids_however_often_it_replays_them() {
        // 5 conversations from a trace of 2: conversations 0, 2, 4 replay trace conversation 0.
        let src = timed(&[0.0, 1.0]);
        let mut rng = RngStreams::new(1);
        let w = generate(
            &src,
            Some(5),
            None,
            ConversationOrder::Trace,
            &ArrivalSpec::Burst,
            &ThinkTimeSpec::Constant { value_s: 1.0 },
            &mut rng,
        );
        assert_eq!(w.len(), 5);
        for (n, c) in w.iter().enumerate() {
            let s = &src[n % 2];
            assert!(
                std::sync::Arc::ptr_eq(&c.turns, &s.turns),
                "conversation {n}'s turns are a copy"
            );
            assert!(std::sync::Arc::ptr_eq(&c.id, &s.id), "conversation {n}'s id is a copy");
            assert_eq!(
                *c.later_turns,
                LaterTurn::after_each([SimDuration::from_secs_f64(1.0)])[..]
            );
        }
        // The trace's own handle and the three replays of conversation 0.
        assert_eq!(std::sync::Arc::strong_count(&src[0].turns), 4);
    }

    #[test]
    fn trace_arrivals_are_the_recorded_times_sped_up() {
        let src = timed(&[0.0, 1.5, 3.0, 4.5]);
        let arrival = ArrivalSpec::Trace { speedup: 1.5 };
        let think = ThinkTimeSpec::Constant { value_s: 2.0 };
        let starts = |count: Option<usize>, window: Option<f64>| -> Vec<(String, SimTime)> {
            let mut rng = RngStreams::new(1);
            generate(
                &src,
                count,
                window,
                ConversationOrder::Trace,
                &arrival,
                &think,
                &mut rng,
            )
            .into_iter()
            .map(|c| (c.id.to_string(), c.start_at))
            .collect()
        };
        let at = |s: f64| SimTime::ZERO + SimDuration::from_secs_f64(s);
        // A count takes the first conversations at their times ÷ 1.5.
        assert_eq!(
            starts(Some(3), None),
            [("c0".into(), at(0.0)), ("c1".into(), at(1.0)), ("c2".into(), at(2.0))]
        );
        // A window keeps those starting before it; never more than the trace holds.
        assert_eq!(starts(None, Some(2.5)).len(), 3);
        assert_eq!(starts(None, Some(2.0)).len(), 2);
        assert_eq!(starts(None, Some(100.0)).len(), 4);
        // The think time still separates the turns.
        let mut rng = RngStreams::new(1);
        let w = generate(
            &src,
            Some(1),
            None,
            ConversationOrder::Trace,
            &arrival,
            &think,
            &mut rng,
        );
        assert_eq!(
            *w[0].later_turns,
            LaterTurn::after_each([SimDuration::from_secs_f64(2.0)])[..]
        );
    }
}

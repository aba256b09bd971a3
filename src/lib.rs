//! # ppdsim — where should a multi-turn append-prefill run?
//!
//! In multi-turn chat every new turn appends a few tokens (`m`) to a long cached context (`L`). Under
//! prefill/decode (PD) disaggregation that *append-prefill* can go to a prefill (P) instance, which
//! then ships the whole KV cache to a decode (D) instance, or stay on the D instance that already
//! holds the context (PPD), where it slows the decodes batched with it. ppdsim answers the question
//! with a cost model fitted to measured H100 timings ([`calibrate`]) and a deterministic
//! discrete-event simulation of a serving cluster ([`sim`]) replaying real multi-turn traces
//! ([`trace`]) under several routing policies ([`policy`]).
//!
//! ## Terms (used everywhere in code, outputs and docs)
//! * **turn k** of a conversation: a user message of `u_k` tokens and an assistant answer of `a_k` tokens.
//! * **context `L`**: tokens before this turn's new input, `Σ_{j<k}(u_j + a_j)` plus chat-template tokens.
//! * **append length `m`**: prompt tokens of this turn that must be computed on the serving instance.
//! * **cache rate `r`**: `L / (L + m)`; aggregate cache rate = Σ cached / Σ prompt tokens.
//! * **prefill** / **append-prefill**: computing KV for a prompt with nothing / `L` tokens cached.
//! * **decode step**: one forward pass producing one token for every running sequence.
//! * **chunked prefill**: prefills split over iterations so that each iteration holds at most
//!   `token_budget` tokens (decode tokens count one each).
//! * **KV transfer**: moving a sequence's KV cache from P to D, `bytes = tokens × kv_bytes_per_token`.
//! * **TTFT** = `first_token_at − arrived_at`; **TPOT** = `(completed_at − first_token_at) /
//!   (num_output_tokens − 1)` (undefined for one-token outputs); **E2E** = `completed_at − arrived_at`.
//!   See [`metrics`].
//!
//! ## Request path
//! ```text
//!  conversation source ──turn k──▶ router (policy) ──┬── split ──▶ P instance ──KV link──▶ D instance ──▶ done
//!   (Poisson starts,                                 └── local ──────────────────────────▶ D / R instance ─▶ done
//!    think time after                                                                            │
//!    each answer) ◀──────────────────────── next turn after think time ◀──────────────────────────┘
//! ```
#![warn(missing_docs)]

pub mod calibrate;
pub mod cli;
pub mod cluster;
pub mod commands;
pub(crate) mod cores;
pub mod cost_model;
pub mod error;
pub mod hardware;
pub mod input;
pub mod metrics;
pub mod outdir;
pub mod output;
pub mod plot;
pub mod policy;
pub(crate) mod prefault;
pub mod rng;
pub mod routing_map;
pub mod scenario;
pub mod sim;
pub mod sweep;
pub mod time;
pub mod trace;
pub mod validate;

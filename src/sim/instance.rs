//! A GPU instance: continuous batching with a chunked-prefill token budget, KV memory in blocks,
//! and a prefix cache.
//!
//! ## Scheduling (one iteration, vLLM-V1-like)
//! 1. Running sequences in admission order: a decode sequence takes 1 token of the budget; a
//!    sequence still prefilling takes `min(remaining prompt, budget left)` (chunked prefill).
//! 2. Waiting sequences are admitted first-come-first-served while the budget lasts, fewer than
//!    `max_num_seqs` run, and their KV fits. Admission looks up the conversation's prefix-cache
//!    entry and any shared prefix (a hit is whole blocks, at most `prompt − 1` tokens, since the
//!    last prompt token must be computed to sample from), evicting least-recently-used cache
//!    entries as needed. A sequence that does not fit waits (head-of-line, as vLLM's FCFS
//!    waiting queue).
//!
//! KV memory is counted in blocks. With `incremental_kv` (vLLM V1) a sequence holds blocks for the
//! tokens computed so far and gets more as it computes; when none can be had, the most recently
//! admitted running sequence is preempted (its KV freed, recomputed later). Otherwise each
//! sequence reserves its whole footprint (prompt + output) at admission and is never preempted.
//!
//! The iteration's duration comes from the cost model; its tokens appear at its end. The step that
//! finishes a prompt also samples the first output token. A sequence that finishes frees its
//! blocks and leaves `prompt + output − 1` tokens (prompt only for prefill-only sequences) in
//! the prefix cache.
//!
//! The running sequences past their prefill (always a prefix of the running list) are kept as
//! aggregates (`DecodePrefix`): a pass or step end in which all of them decode and their new
//! blocks fit costs O(1) for them, not a walk; anything else walks them, as above.

use super::prefix_cache::PrefixCache;
use crate::cost_model::{AffineDecodeCost, BatchShape, CostModel, PrefillPart, DECODE_COST_FRAC_BITS};
use crate::time::{SimDuration, SimTime};

/// The engine limits of one instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineLimits {
    /// Max tokens per iteration (chunked-prefill budget) \[tokens\].
    pub token_budget: u32,
    /// Max running sequences.
    pub max_num_seqs: u32,
    /// KV block size \[tokens\].
    pub block_size: u32,
    /// KV capacity \[blocks\].
    pub capacity_blocks: u64,
    /// Whether the next turn's prompt reuses the cached KV of this turn's answer. True when the
    /// client resends the answer as the same token IDs (chat APIs, token-level clients); false
    /// when it resends the answer's *text* and the re-tokenisation differs from the sampled
    /// tokens (sampled token sequences are often not the tokenizer's canonical encoding), so
    /// the prefix-cache hit stops at the end of the previous prompt.
    pub cache_answers: bool,
    /// Per-token probability that a sampled answer token is not what re-tokenising the answer's
    /// text gives back, so the next turn's prefix-cache match stops at the first such token:
    /// of an answer of `n` tokens the next turn reuses the expected first-mismatch position,
    /// `min(n, (1 − (1 − p)ⁿ) / p)` tokens (all `n` at p = 0), and recomputes the rest. vllm-ppd's
    /// cache-info runs fit p = 0.0011 (see `scenario::FITTED_ANSWER_MISMATCH_PER_TOKEN`;
    /// `docs/validation.md`). Ignored when `cache_answers` is false.
    pub answer_mismatch_per_token: f64,
    /// KV blocks are allocated as tokens are computed and a running sequence is preempted
    /// (recompute mode, vLLM V1's default) when a block cannot be had; when false each sequence
    /// reserves its whole footprint (prompt + output) at admission and is never preempted.
    pub incremental_kv: bool,
    /// Cascade attention (vLLM V1's FlashAttention backend, `use_cascade_attention` in
    /// `vllm/v1/attention/backends/flash_attn.py`): when every sequence of a step's batch starts
    /// with the same resident shared prefix of at least [`CASCADE_MIN_PREFIX_TOKENS`] tokens and
    /// the batch holds at least [`CASCADE_MIN_SEQS`] sequences, the decodes read that prefix's KV
    /// once for the whole batch instead of once each, so the step is priced with the prefix
    /// counted once in its decode context. vLLM's third check, the comparison with
    /// FlashDecoding's thread-block waves, is not modelled. A batch holding one sequence without
    /// the prefix turns it off for every sequence. False: every decode reads its whole context
    /// (what the shipped model is fitted with). Only conversations with a shared prefix (the
    /// interference replay's pinned prefix) are affected.
    pub cascade_attention: bool,
}

/// The shortest prefix common to a batch for which vLLM uses cascade attention \[tokens\]
/// (`use_cascade_attention`: a common prefix under 256 tokens never cascades).
pub const CASCADE_MIN_PREFIX_TOKENS: u32 = 256;

/// The fewest sequences a batch needs for vLLM to use cascade attention (`use_cascade_attention`:
/// fewer than 8 requests never cascade).
pub const CASCADE_MIN_SEQS: usize = 8;

/// Of an answer whose KV holds `n` tokens, how many the next turn's prompt reuses when each
/// sampled token re-tokenises differently with probability `p` (see
/// [`EngineLimits::answer_mismatch_per_token`]): the expected position of the first mismatch,
/// `(1 − (1 − p)ⁿ) / p`, rounded down, at most `n`; `n` when `p` is 0.
pub fn reused_answer_tokens(n: u32, p: f64) -> u32 {
    if p <= 0.0 || n == 0 {
        return n;
    }
    let expected = (1.0 - (1.0 - p).powi(n as i32)) / p;
    (expected.floor() as u32).min(n)
}

#[cfg(test)]
mod tests {
    use super::reused_answer_tokens;

    #[test]
    fn reused_answer_tokens_is_the_expected_first_mismatch() {
        assert_eq!(reused_answer_tokens(1024, 0.0), 1024);
        assert_eq!(reused_answer_tokens(0, 0.5), 0);
        // p = 0.5: (1 − 0.5³) / 0.5 = 1.75 → 1 of 3 tokens.
        assert_eq!(reused_answer_tokens(3, 0.5), 1);
        // The cache-info fit: (1 − 0.9989¹⁰²⁴) / 0.0011 = 614.5 → 614; 128 → 119.
        assert_eq!(reused_answer_tokens(1024, 0.0011), 614);
        assert_eq!(reused_answer_tokens(128, 0.0011), 119);
    }

    #[test]
    fn a_p_step_takes_the_handoffs_of_the_prompts_it_finishes() {
        use super::{EngineLimits, Instance, Role, Seq, SimDuration, SimTime};
        let limits = EngineLimits {
            token_budget: 100,
            max_num_seqs: 8,
            block_size: 16,
            capacity_blocks: 1_000,
            cache_answers: true,
            answer_mismatch_per_token: 0.0,
            incremental_kv: true,
            cascade_attention: false,
        };
        let seq = Seq::prefill_only_for_test;
        let mut p = Instance::new("P0".into(), Role::Prefill, limits);
        // A: 60 tokens (3 ms of handoff), B: 80 tokens (5 ms), C: 30 tokens (none).
        p.enqueue(seq(0, 60, 3_000));
        p.enqueue(seq(1, 80, 5_000));
        p.enqueue(seq(2, 30, 0));
        assert_eq!(p.pending_handoff_us(), 8_000);
        let cost = crate::cost_model::ConstantCostModel { step_ms: 10.0 };
        // Step 1 (budget 100): A whole and 40 of B's 80 tokens — only A's prompt ends: 10 + 3 ms.
        let end = p.try_start(SimTime::ZERO, &cost).expect("a step");
        assert_eq!(end, SimTime::ZERO + SimDuration(13_000));
        p.finish_step(end, &mut Vec::new());
        assert_eq!(p.pending_handoff_us(), 5_000);
        // Step 2: B's last 40 tokens and C's 30 — B's handoff only: 10 + 5 ms.
        let end2 = p.try_start(end, &cost).expect("a step");
        assert_eq!(end2, end + SimDuration(15_000));
        p.finish_step(end2, &mut Vec::new());
        assert_eq!(p.pending_handoff_us(), 0);
    }

    #[test]
    fn decodes_stepped_together_keep_their_blocks_contexts_and_completions() {
        use super::{EngineLimits, Instance, Role, Seq, SeqEvent, SimDuration, SimTime};
        let limits = EngineLimits {
            token_budget: 100,
            max_num_seqs: 8,
            block_size: 4,
            capacity_blocks: 1_000,
            cache_answers: true,
            answer_mismatch_per_token: 0.0,
            incremental_kv: true,
            cascade_attention: false,
        };
        let decode = |req: usize, prompt: u32, output: u32| Seq {
            prefill_only: false,
            num_output_tokens: output,
            ..Seq::prefill_only_for_test(req, prompt, 0)
        };
        let mut d = Instance::new("R0".into(), Role::Mixed, limits);
        // A: 6 prompt tokens, 5 outputs; B: 3 prompt tokens, 3 outputs.
        d.enqueue(decode(0, 6, 5));
        d.enqueue(decode(1, 3, 3));
        let cost = crate::cost_model::ConstantCostModel { step_ms: 10.0 };
        let mut now = SimTime::ZERO;
        let step = |d: &mut Instance, now: &mut SimTime| {
            let end = d.try_start(*now, &cost).expect("a step");
            assert_eq!(end, *now + SimDuration(10_000));
            let used = d.used_blocks();
            let mut events = Vec::new();
            d.finish_step(end, &mut events);
            *now = end;
            let completed: Vec<usize> = events
                .iter()
                .filter_map(|e| match e {
                    SeqEvent::Completed { req } => Some(*req),
                    _ => None,
                })
                .collect();
            (used, completed)
        };
        // Step 1, both prompts: blocks for 6 and 3 tokens (2 + 1); contexts 6 and 3 after.
        assert_eq!(step(&mut d, &mut now), (3, vec![]));
        assert_eq!(d.decoding_shape(), (2, 9));
        // Step 2 decodes both at positions 7 and 4: still 2 + 1 blocks.
        assert_eq!(step(&mut d, &mut now), (3, vec![]));
        assert_eq!(d.decoding_shape(), (2, 11));
        // Step 3 at positions 8 and 5: B crosses into its second block (2 + 2); B's third output.
        assert_eq!(step(&mut d, &mut now), (4, vec![1]));
        assert_eq!(d.decoding_shape(), (1, 8));
        let after_b = d.used_blocks();
        // Step 4 at position 9: A crosses into its third block; step 5 (position 10) does not.
        assert_eq!(step(&mut d, &mut now), (after_b + 1, vec![]));
        assert_eq!(d.decoding_shape(), (1, 9));
        assert_eq!(step(&mut d, &mut now), (after_b + 1, vec![0]));
        assert_eq!(d.decoding_shape(), (0, 0));
        assert!(d.try_start(now, &cost).is_none(), "nothing left to run");
        assert_eq!(now, SimTime::ZERO + SimDuration(50_000));
    }

    #[test]
    fn run_ends_and_the_search_for_an_event_agree_with_stepping() {
        use super::{AffineDecodeCost, DecodeRun, SimTime};
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
        for _ in 0..300 {
            // Rising costs, and one run in four falling with the context (a negative β4: the
            // search prices each step instead of stepping a 64-bit numerator); every step > 0.4 ms.
            let per_token_ms = rng.gen_range(0.0..2e-4);
            let per_token_ms = if rng.gen_range(0..4) == 0 {
                -per_token_ms / 100.0
            } else {
                per_token_ms
            };
            let cost = AffineDecodeCost::from_ms(rng.gen_range(3.0..12.0), per_token_ms);
            let (n, ctx0) = (rng.gen_range(1..200u64), rng.gen_range(0..500_000u64));
            let len = rng.gen_range(2..4_000usize);
            let start = SimTime(rng.gen_range(0..1_000_000));
            // Step ends one by one, as the step-by-step path computes them.
            let mut ends = vec![start];
            for k in 1..=len {
                let t = *ends.last().expect("start") + cost.time(ctx0 + (k as u64 - 1) * n);
                ends.push(t);
            }
            let finished = rng.gen_range(0..len);
            let run = DecodeRun {
                start,
                len,
                last_end: ends[len],
                cost,
                n,
                finished,
                finished_end: ends[finished],
                next_end: ends[finished + 1],
                started: finished,
                ctx0,
            };
            // With its next step started (and not the run's last, which only its event applies),
            // the run is settled exactly for events the search would not move it for.
            let started_run = DecodeRun {
                started: finished + 1,
                ..run.clone()
            };
            let next = ends[finished + 1];
            for at in [next, SimTime(next.0 - 1), SimTime(next.0 + 1)]
                .into_iter()
                .filter(|_| finished + 1 < len)
            {
                let moved = started_run.last_finished_before(at, |end, _| end <= at).0 > finished;
                assert_eq!(started_run.settled(|end, _| end <= at), !moved, "event at {at:?}");
            }
            for k in [0, 1, finished, finished + 1, len - 1, len, rng.gen_range(0..=len)] {
                assert_eq!(run.end(k.min(len)), ends[k.min(len)], "step {k} of {len}");
            }
            // An event at `at`: the steps ending before it are applied (never the run's last).
            for _ in 0..5 {
                let at = SimTime(rng.gen_range(start.0..ends[len].0 + 10_000));
                let (f, end_f) = run.last_finished_before(at, |end, step_start| {
                    assert!(step_start < end);
                    end < at
                });
                let want = (finished..len)
                    .take_while(|&j| j == finished || ends[j] < at)
                    .last()
                    .expect("finished");
                assert_eq!(
                    (f, end_f),
                    (want, ends[want]),
                    "event at {at:?}, len {len}, from {finished}"
                );
            }
        }
    }
}

/// Role of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Prefill only (P): computes prompts, emits KV.
    Prefill,
    /// Decode (D / pD): receives KV or runs append-prefills, then decodes.
    Decode,
    /// Mixed replica (R): prefill and decode.
    Mixed,
}

/// A request's presence on an instance.
#[derive(Clone, Debug)]
pub struct Seq {
    /// Request id.
    pub req: usize,
    /// Conversation index (prefix-cache key).
    pub conv: usize,
    /// Stop after the prompt (P side of a split route).
    pub prefill_only: bool,
    /// Prompt tokens \[tokens\].
    pub num_prompt_tokens: u32,
    /// Output tokens to produce (0 when `prefill_only`).
    pub num_output_tokens: u32,
    /// Prompt tokens whose KV arrives with the request (KV transfer), used up to `prompt − 1`.
    pub num_external_tokens: u32,
    /// A shared prefix this prompt starts with: (key, tokens).
    pub shared_prefix: Option<(u32, u32)>,
    /// Tokens of the hit served by the shared prefix (its blocks are not reserved) \[tokens\].
    pub num_shared_hit_tokens: u32,
    /// Output tokens to recompute after a preemption: every output sampled before it (their KV
    /// was freed, the last one's never written) \[tokens\].
    pub num_recompute_tokens: u32,
    /// Tokens with KV present (cached + transferred + computed) \[tokens\]. For a sequence of
    /// its instance's decode prefix this and the next two fields lag: the instance's
    /// `decode_truth` gives the true values (see `DecodePrefix`).
    pub num_computed_tokens: u32,
    /// Output tokens produced (lags in the decode prefix, as above) \[tokens\].
    pub num_generated: u32,
    /// KV blocks reserved (derived, not kept, in the decode prefix with incremental KV) \[blocks\].
    pub reserved_blocks: u64,
    /// When the sequence entered the waiting queue.
    pub enqueued_at: SimTime,
    /// When it was admitted (first scheduled).
    pub admitted_at: Option<SimTime>,
    /// Prompt tokens the iteration in flight computes for it, 0 for a decode token (meaningful
    /// for the first [`Instance`] `batch_len` running sequences).
    pub chunk: u32,
    /// Engine time the step that computes this prompt's last token takes on top of its cost
    /// model time: P's share of the PD handoff when P's engine does it
    /// ([`crate::sim::HandoffQueue::PrefillEngine`]), plus the prompt's KV send when P's engine
    /// waits for it ([`crate::sim::SimConfig::prefill_waits_for_send`]); 0 otherwise \[µs\].
    pub handoff_us: u64,
    /// Engine time the step that first schedules this sequence takes on top of its cost model
    /// time when the sequence uses KV received from P: D's worker loading it from the
    /// connector's buffer into the paged KV cache ([`crate::sim::SimConfig::kv_load_ms`]); 0
    /// otherwise or once charged \[µs\].
    pub kv_load_us: u64,
}

impl Seq {
    /// A prefill-only sequence of `prompt` tokens (request and conversation `req`), enqueued at 0,
    /// whose last prompt step takes `handoff_us` more \[µs\]: what unit tests queue on a P.
    #[cfg(test)]
    pub(crate) fn prefill_only_for_test(req: usize, prompt: u32, handoff_us: u64) -> Seq {
        Seq {
            req,
            conv: req,
            prefill_only: true,
            num_prompt_tokens: prompt,
            num_output_tokens: 0,
            num_external_tokens: 0,
            shared_prefix: None,
            num_shared_hit_tokens: 0,
            num_recompute_tokens: 0,
            num_computed_tokens: 0,
            num_generated: 0,
            reserved_blocks: 0,
            enqueued_at: SimTime::ZERO,
            admitted_at: None,
            chunk: 0,
            handoff_us,
            kv_load_us: 0,
        }
    }

    /// Tokens to compute before decoding: the prompt plus any recomputed outputs.
    fn prefill_target(&self) -> u32 {
        self.num_prompt_tokens + self.num_recompute_tokens
    }

    fn remaining_prefill(&self) -> u32 {
        self.prefill_target() - self.num_computed_tokens.min(self.prefill_target())
    }
}

/// A sequence's first admission (a preempted sequence's re-admission is not reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Request id.
    pub req: usize,
    /// Waiting time \[µs\].
    pub queue_delay: SimDuration,
    /// Prefix-cache hit \[tokens\].
    pub num_cached_tokens: u32,
    /// Transferred tokens used \[tokens\].
    pub num_transferred_tokens: u32,
}

/// Something that happened to a sequence at the end of an iteration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeqEvent {
    /// A prefill-only sequence finished its prompt.
    PrefillDone {
        /// Request id.
        req: usize,
    },
    /// The first output token was produced.
    FirstToken {
        /// Request id.
        req: usize,
    },
    /// The last output token was produced.
    Completed {
        /// Request id.
        req: usize,
    },
}

/// One GPU instance.
pub struct Instance {
    /// Name (`P0`, `D1`, `R3`).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Limits.
    pub limits: EngineLimits,
    /// Engine time of each sequence's first admission, added to the step that first schedules
    /// it; a re-admission after a preemption pays nothing ([`crate::sim::SimConfig::engine_admit_ms`])
    /// \[µs\].
    pub admit_us: u64,
    /// Prefix cache.
    pub cache: PrefixCache,
    waiting: std::collections::VecDeque<Seq>,
    running: Vec<Seq>,
    /// The iteration in flight runs `running[..batch_len]` (always a prefix: running sequences
    /// in admission order, then the ones it admitted), each with its [`Seq::chunk`].
    batch_len: usize,
    busy_until: Option<SimTime>,
    reserved_blocks: u64,
    /// Shared prefixes resident on this instance (key → tokens), pinned: never evicted.
    shared: std::collections::BTreeMap<u32, u32>,
    shared_blocks: u64,
    /// Total time spent in iterations \[µs\].
    pub busy_time: SimDuration,
    /// Iterations run.
    pub num_iterations: u64,
    /// Sequences preempted (their KV freed, recomputed later).
    pub num_preemptions: u64,
    admitted: Vec<Admission>,
    /// The decode run in flight, if the iteration in flight is the first of one.
    run: Option<DecodeRun>,
    /// Buffers reused by every iteration (no allocation per event): the batch shape
    /// [`Instance::try_start`] prices and the sequences [`Instance::finish_step`] retires.
    shape_scratch: BatchShape,
    done_scratch: Vec<usize>,
    /// Fewest outputs any decode sequence of the last [`Instance::try_start`]'s batch has left to
    /// produce (`u32::MAX` without decodes) \[tokens\]: with the shape's Σ context, what
    /// [`Instance::plan_decode_run`] needs.
    batch_min_outputs_left: u32,
    /// The decode prefix, kept across scheduling passes ([`DecodePrefix`]).
    decodes: DecodePrefix,
}

/// The running sequences past their prefill, `running[..len]` (the decodes are always a prefix of
/// the running sequences: prompts complete in admission order, since each takes the budget before
/// those admitted after it, and a preempted sequence comes back at the end), kept as aggregates so
/// that a step which decodes every one of them costs O(1), not a walk:
///
/// - their token counts lag: [`Seq::num_computed_tokens`] and [`Seq::num_generated`] of each lack
///   the same `lag` decode steps (a sequence joining the prefix has `lag` subtracted, wrapping),
///   added back by [`Instance::sync_decodes`] before anything reads or changes one of them;
/// - in incremental-KV mode their [`Seq::reserved_blocks`] are derived: blocks for their true
///   context plus `ahead` tokens (1 while a step that decodes them is in flight). A decode needs
///   a new block exactly at the steps that start with its context a multiple of the block size,
///   so each sits in one of `block_size` phase slots for as long as it decodes
///   (`phase_counts`, indexed by (context − `epoch`) mod block size), and a step's new blocks are
///   one slot's count, added to the instance's total;
/// - Σ context, the fewest outputs left (exact) and the count are kept as the prefix changes.
///
/// A scheduling pass whose decodes do not all fit in the token budget, or whose new blocks do not
/// fit without evicting or preempting, syncs them and takes the walk ([`Instance::try_start`]);
/// its step end walks too, and the aggregates are rebuilt from the sequences after either.
/// Debug builds check the aggregates against a walk after every pass and step end.
#[derive(Clone, Debug)]
struct DecodePrefix {
    /// Sequences in the prefix.
    len: usize,
    /// Decode steps applied to the prefix and not yet to its sequences' token counts \[steps\].
    lag: u32,
    /// Tokens beyond the true context whose KV blocks the prefix holds: 1 while a step that
    /// decodes every one of them is in flight, else 0 \[tokens\].
    ahead: u32,
    /// Decode steps of the whole prefix ended so far on this instance (the phase slots' origin)
    /// \[steps\].
    epoch: u64,
    /// Σ true context of the prefix \[tokens\].
    context_tokens: u64,
    /// Fewest outputs any of the prefix has left to produce (`u32::MAX` when empty) \[tokens\].
    min_outputs_left: u32,
    /// Prefix sequences per phase slot (length `block_size`).
    phase_counts: Vec<u32>,
    /// Whether the step in flight decodes the whole prefix through the aggregates (its end
    /// updates them in O(1)); false when it was scheduled by the walk with some decode left out.
    /// Read only while a step is in flight.
    lazy_step: bool,
}

impl DecodePrefix {
    /// A decode with `context` true context tokens \[tokens\] and `outputs_left` outputs to
    /// produce \[tokens\], in phase slot `slot`, joins the aggregates at the prefix's end.
    fn join(&mut self, slot: usize, context: u32, outputs_left: u32) {
        self.len += 1;
        self.context_tokens += context as u64;
        self.min_outputs_left = self.min_outputs_left.min(outputs_left);
        self.phase_counts[slot] += 1;
    }

    /// A finished decode with `context` true context tokens \[tokens\], in phase slot `slot`,
    /// leaves the aggregates (the caller recomputes the fewest outputs left).
    fn leave(&mut self, slot: usize, context: u32) {
        self.len -= 1;
        self.context_tokens -= context as u64;
        self.phase_counts[slot] -= 1;
    }
}

/// Blocks of `block_size` tokens a sequence needs for `tokens` tokens of KV, of which the first
/// `shared_hit` (whole blocks) live in a resident shared prefix \[blocks\].
fn private_blocks(block_size: u32, tokens: u32, shared_hit: u32) -> u64 {
    (tokens as u64).div_ceil(block_size as u64) - (shared_hit / block_size) as u64
}

/// Blocks sequence `s` needs beyond those it has reserved to hold `tokens` tokens of KV
/// \[blocks\]: `private_blocks(tokens) − reserved`, or 0. The common case — the tokens fit in the
/// reserved blocks plus the shared hit (whole blocks, so that sum is a multiple of
/// `block_size`) — costs a multiplication instead of a division.
#[inline]
fn extra_blocks(block_size: u32, s: &Seq, tokens: u32) -> u64 {
    debug_assert!(s.num_shared_hit_tokens.is_multiple_of(block_size));
    if tokens as u64 <= s.reserved_blocks * block_size as u64 + s.num_shared_hit_tokens as u64 {
        return 0;
    }
    private_blocks(block_size, tokens, s.num_shared_hit_tokens).saturating_sub(s.reserved_blocks)
}

/// Consecutive decode-only iterations of one batch, planned at once: every running sequence
/// decodes one token per step, nothing is admitted, no sequence finishes before the last step and
/// every step's KV blocks are free without evicting or preempting. Each step's time is the cost
/// model's for that step's batch (its contexts grow by one token per sequence per step), an exact
/// affine function of the context ([`AffineDecodeCost`]); so the run's end is a closed-form sum,
/// any step's end is O(1) from a neighbour's and O(log) from scratch, and both equal what the
/// step-by-step path computes. The simulator applies the steps to the sequences only when
/// something looks or changes ([`Instance::advance_run`], [`Instance::end_run`]), and only the
/// last is an event: the event count and the work grow with requests, not with tokens.
#[derive(Clone, Debug)]
pub struct DecodeRun {
    /// When its first step started.
    pub start: SimTime,
    /// Steps planned; the last one's end is the run's event.
    pub len: usize,
    /// End of the last step.
    last_end: SimTime,
    /// Step time as a function of the batch's context.
    cost: AffineDecodeCost,
    /// Running sequences (context growth per step) \[tokens\].
    n: u64,
    /// Step ends applied to the sequences (< `len`: the last is applied by the event).
    pub finished: usize,
    /// End of step `finished` (`start` when none).
    finished_end: SimTime,
    /// End of step `finished + 1`, the next to finish (kept so that an event before it, the
    /// common case, costs one comparison: [`DecodeRun::settled`]).
    next_end: SimTime,
    /// Steps started (KV blocks reserved, busy time and iteration count): `finished` or
    /// `finished + 1`.
    pub started: usize,
    /// Σ context tokens of the batch when the run started \[tokens\].
    ctx0: u64,
}

impl DecodeRun {
    /// True when an event leaves the run as it is: its next step has started and `before` (as
    /// [`DecodeRun::last_finished_before`] takes it) fails for that step's end — the search's first
    /// test, answered from the kept end.
    pub fn settled(&self, before: impl Fn(SimTime, SimTime) -> bool) -> bool {
        self.started == self.finished + 1 && !before(self.next_end, self.finished_end)
    }

    /// Steps walked one by one (an integer add and shift each) before
    /// [`DecodeRun::last_finished_before`] switches to a search over closed-form ends (a few
    /// hundred ns each): it pays from about a thousand steps on.
    const WALK_STEPS: usize = 1024;

    /// Duration of step `k` (1-based; its batch holds `ctx0 + (k − 1)·n` context tokens).
    fn step_time(&self, k: usize) -> SimDuration {
        self.cost.time(self.ctx0 + (k as u64 - 1) * self.n)
    }

    /// End of step `k` (`start` for 0): O(1) next to the applied steps and at the run's end,
    /// O(log) elsewhere.
    ///
    /// # Panics
    /// If `k` exceeds the run's length.
    pub fn end(&self, k: usize) -> SimTime {
        assert!(k <= self.len, "decode run step {k} of {}", self.len);
        match k {
            _ if k == self.finished => self.finished_end,
            _ if k == self.finished + 1 => self.finished_end + self.step_time(k),
            _ if k == self.len => self.last_end,
            _ if k + 1 == self.len => SimTime(self.last_end.0 - self.step_time(self.len).0),
            _ => self.start + self.cost.sum(self.ctx0, self.n, k as u64),
        }
    }

    /// When the scheduling pass that started step `k` (1-based) ran: the run's start for the
    /// first, the previous step's end after it.
    pub fn step_start(&self, k: usize) -> SimTime {
        self.end(k.saturating_sub(1))
    }

    /// When an API server that streams each step's `n` output chunks one after another, at
    /// `chunk_us` µs each, is free after this run's first `k` steps, given that it was free at
    /// `base` before step 1: the recursion F_j = max(F_{j−1}, end(j)) + n·chunk_us in closed form,
    /// max(max(base, end(1)) + k·n·chunk_us, end(k) + n·chunk_us) — exact, because the step
    /// times never shrink (contexts only grow), so end(j) − j·n·chunk_us is convex in j and its
    /// maximum over 1..=k is at an end.
    ///
    /// # Panics
    /// If `k` is 0 or exceeds the run's length.
    pub fn stream_free_after(&self, base: SimTime, k: usize, chunk_us: u64) -> SimTime {
        assert!(k >= 1 && k <= self.len, "decode run step {k} of {}", self.len);
        debug_assert!(self.step_time(1) <= self.step_time(self.len), "decode steps shrink");
        let per_step = self.n * chunk_us;
        let from_first = base.max(self.end(1)).0 + k as u64 * per_step;
        SimTime(from_first.max(self.end(k).0 + per_step))
    }

    /// The last step `f` (≥ `finished`, < `len`) such that `before(end of step j, its start)`
    /// holds for every step `j` in `finished + 1 ..= f` (`before` must be monotone: once false,
    /// false for every later step), with its end. `bound` is where `before` turns: it holds for
    /// every end before `bound` and fails for every end after it (an event's time; at `bound`
    /// itself `before` decides), so the walk compares integers and asks `before` only at
    /// `bound`. Walks a few steps, then gallops and bisects over closed-form ends: O(log)
    /// whatever the distance.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    pub fn last_finished_before(&self, bound: SimTime, before: impl Fn(SimTime, SimTime) -> bool) -> (usize, SimTime) {
        let last = self.len - 1;
        let (mut f, mut end_f) = (self.finished, self.finished_end);
        let walk = last.saturating_sub(f).min(Self::WALK_STEPS);
        // Step f + 1's time is ⌊numerator / 2^32⌋ ([`AffineDecodeCost::time`]), the numerator
        // growing by `d` a step: kept in 64 bits, as the run sum's loop does, while every
        // numerator of the walk fits and none falls (a shift and an add a step); otherwise each
        // step is priced.
        let d = self.n as i128 * self.cost.per_context_token;
        let first = self.cost.numerator(self.ctx0 + f as u64 * self.n);
        let walked = match (
            u64::try_from(first),
            u64::try_from(d),
            u64::try_from(first + walk as i128 * d),
        ) {
            (Ok(mut num), Ok(d), Ok(_)) => self.walk(f, end_f, walk, bound, &before, |_| {
                let step = SimDuration(num >> DECODE_COST_FRAC_BITS);
                num += d;
                step
            }),
            _ => self.walk(f, end_f, walk, bound, &before, |k| self.step_time(k)),
        };
        (f, end_f) = match walked {
            Walk::Decided(found) => return found,
            Walk::Walked(f, end_f) => (f, end_f),
        };
        if f >= last {
            return (f, end_f);
        }
        // Gallop: find hi with step hi failing (or past the last), then bisect (f, hi).
        let holds = |j: usize| {
            let end = self.end(j);
            before(end, SimTime(end.0 - self.step_time(j).0))
        };
        let mut width = 1;
        let mut hi = loop {
            let probe = f + width;
            if probe > last {
                break last + 1;
            }
            if !holds(probe) {
                break probe;
            }
            f = probe;
            width *= 2;
        };
        while hi - f > 1 {
            let mid = f + (hi - f) / 2;
            if holds(mid) {
                f = mid;
            } else {
                hi = mid;
            }
        }
        (f, self.end(f))
    }

    /// [`DecodeRun::last_finished_before`]'s walk: up to `walk` steps from step `f` (ended at
    /// `end_f`), step `k`'s duration from `step(k)` (called for k = f + 1, f + 2, … in turn).
    /// The steps ending before `bound` hold (a compare a step); at `bound` itself `before`
    /// decides, and the step after ends past it (every step takes time), so the walk ends there
    /// either way.
    fn walk(
        &self,
        mut f: usize,
        mut end_f: SimTime,
        walk: usize,
        bound: SimTime,
        before: &impl Fn(SimTime, SimTime) -> bool,
        mut step: impl FnMut(usize) -> SimDuration,
    ) -> Walk {
        for _ in 0..walk {
            // Unchecked in release (2^64 µs is 584,000 years); the assertion checks it in debug.
            let next = SimTime(end_f.0 + step(f + 1).0);
            debug_assert_eq!(next, end_f + self.step_time(f + 1));
            if next >= bound {
                let holds = next == bound && before(next, end_f);
                debug_assert_eq!(holds, before(next, end_f), "`bound` {bound:?} is where `before` turns");
                return Walk::Decided(if holds { (f + 1, next) } else { (f, end_f) });
            }
            debug_assert!(before(next, end_f), "`bound` {bound:?} is where `before` turns");
            (f, end_f) = (f + 1, next);
        }
        Walk::Walked(f, end_f)
    }
}

/// Where [`DecodeRun::walk`] stopped.
enum Walk {
    /// The last step before the event and its end: the search's answer.
    Decided((usize, SimTime)),
    /// Every step walked holds: the last one walked and its end, the search to go on from.
    Walked(usize, SimTime),
}

/// What ending a decode run early leaves ([`Instance::end_run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The step in flight is the run's last: its event stands.
    Unchanged,
    /// The step in flight ends at `at` (started by the scheduling pass at `pushed_at`): schedule
    /// its end; the run's event is cancelled.
    StepInFlight {
        /// End of the step in flight.
        at: SimTime,
        /// When it started.
        pushed_at: SimTime,
    },
    /// Between steps (a step ended now and the next has not started): the instance is idle and
    /// the run's event is cancelled.
    Idle,
}

impl Instance {
    /// An idle, empty instance.
    pub fn new(name: String, role: Role, limits: EngineLimits) -> Self {
        Instance {
            name,
            role,
            limits,
            admit_us: 0,
            cache: PrefixCache::new(limits.block_size),
            waiting: Default::default(),
            running: Vec::new(),
            batch_len: 0,
            busy_until: None,
            reserved_blocks: 0,
            shared: Default::default(),
            shared_blocks: 0,
            busy_time: SimDuration::ZERO,
            num_iterations: 0,
            num_preemptions: 0,
            admitted: Vec::new(),
            run: None,
            shape_scratch: BatchShape::default(),
            done_scratch: Vec::new(),
            batch_min_outputs_left: u32::MAX,
            decodes: DecodePrefix {
                len: 0,
                lag: 0,
                ahead: 0,
                epoch: 0,
                context_tokens: 0,
                min_outputs_left: u32::MAX,
                phase_counts: vec![0; limits.block_size as usize],
                lazy_step: false,
            },
        }
    }

    /// The decode run in flight.
    pub fn run(&self) -> Option<&DecodeRun> {
        self.run.as_ref()
    }

    /// Plans a decode run from the iteration [`Instance::try_start`] just started at `now`, when
    /// it qualifies ([`DecodeRun`]: a decode-only batch of every running sequence, an empty
    /// waiting queue), of at most `max_steps` steps; returns the run's end (its event's time), or
    /// `None` (the iteration stays a single step) when fewer than two steps qualify.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    pub fn plan_decode_run(&mut self, now: SimTime, cost: &dyn CostModel, max_steps: usize) -> Option<SimTime> {
        assert!(self.run.is_none(), "{}: a decode run is already in flight", self.name);
        let first_end = self.busy_until?;
        let n = self.running.len();
        if max_steps < 2
            || !self.waiting.is_empty()
            || n == 0
            || self.batch_len != n
            // The shape try_start just priced: no prefill chunk in the batch.
            || !self.shape_scratch.prefill.is_empty()
        {
            return None;
        }
        // Priced as try_start priced step 1: the shared prefix counted once under cascade
        // attention (the batch, hence the discount, is the same for every step of the run).
        let cost = cost
            .decode_step_cost(n as u32)?
            .with_context_discount(self.cascade_discount(n as u32));
        // Step k completes a sequence that had generated g of its `out` tokens when k = out − g;
        // the batch is every running sequence, each a decode, so try_start's walk saw them all.
        debug_assert_eq!(
            Some(self.batch_min_outputs_left),
            self.running
                .iter()
                .map(|s| s.num_output_tokens - self.decode_truth(s).1)
                .min(),
            "{}: the batch's fewest outputs left",
            self.name
        );
        debug_assert_eq!(self.decodes.len, n, "{}: a run's batch is the decode prefix", self.name);
        let mut steps = (self.batch_min_outputs_left as usize).min(max_steps);
        if self.limits.incremental_kv {
            // Step k needs blocks for c + k tokens; all of them must be free now (no eviction).
            let free = self.limits.capacity_blocks - self.used_blocks();
            let extra = |k: usize| -> u64 {
                self.running
                    .iter()
                    .map(|s| {
                        let (context, _, blocks) = self.decode_truth(s);
                        self.private_blocks(context + k as u32, s.num_shared_hit_tokens)
                            .saturating_sub(blocks)
                    })
                    .sum()
            };
            // Step 1 reserved every sequence's blocks for c + 1 tokens (try_start), so step k
            // adds at most ⌈(k − 1) / block⌉ blocks per sequence: when even that fits, the exact
            // sum (a division per sequence) is not needed.
            let bound = |k: usize| n as u64 * ((k as u64).saturating_sub(1)).div_ceil(self.limits.block_size as u64);
            debug_assert!(
                extra(steps) <= bound(steps),
                "{}: a decode run's blocks exceed their bound",
                self.name
            );
            if bound(steps) > free && extra(steps) > free {
                // The longest run whose blocks fit: extra(k) grows with k.
                let (mut lo, mut hi) = (1, steps);
                while lo < hi {
                    let mid = (lo + hi).div_ceil(2);
                    if extra(mid) <= free {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                steps = lo;
            }
        }
        if steps < 2 {
            return None;
        }
        // The decode-only shape try_start priced holds every running sequence's context.
        let ctx0 = self.shape_scratch.decode_context_tokens;
        debug_assert_eq!(
            ctx0,
            self.running.iter().map(|s| self.decode_truth(s).0 as u64).sum::<u64>(),
            "{}: the batch's context",
            self.name
        );
        let n64 = n as u64;
        // Steps 2..=steps hold ctx0 + n … ctx0 + (steps − 1)·n context tokens; the time is affine
        // in it, so the extremes bound every step.
        for ctx in [ctx0 + n64, ctx0 + (steps as u64 - 1) * n64] {
            assert!(
                cost.time(ctx).0 > 0,
                "{}: a decode step of zero time ({n} sequences, {ctx} context tokens)",
                self.name
            );
        }
        // Step 1 is the iteration `try_start` just priced: the same cost for the same batch.
        debug_assert_eq!(first_end, now + cost.time(ctx0), "{}: the run's first step", self.name);
        let last_end = now + cost.sum(ctx0, n64, steps as u64);
        self.run = Some(DecodeRun {
            start: now,
            len: steps,
            last_end,
            cost,
            n: n64,
            finished: 0,
            finished_end: now,
            next_end: first_end,
            started: 1,
            ctx0,
        });
        Some(last_end)
    }

    /// Applies the run's first `finish` step ends to the sequences (each decodes one more token)
    /// and starts its steps up to `start` (their KV blocks, busy time and iteration count), as the
    /// step-by-step path would have by then. `finish_end` is step `finish`'s end (the run's start
    /// for 0), as [`DecodeRun::last_finished_before`] returns it.
    ///
    /// # Panics
    /// Without a run, or if `finish` reaches the run's last step (its event applies it), or
    /// `start` is not `finish` or `finish + 1`, or either goes backwards.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    pub fn advance_run(&mut self, finish: usize, finish_end: SimTime, start: usize) {
        let run = self.run.as_mut().expect("advance_run without a decode run");
        assert!(
            finish < run.len && finish >= run.finished,
            "{}: run step {finish} out of order",
            self.name
        );
        assert!(
            start == finish || start == finish + 1,
            "{}: run steps started {start}, finished {finish}",
            self.name
        );
        debug_assert_eq!(finish_end, run.end(finish), "{}: step {finish}'s end", self.name);
        let start = start.max(run.started);
        let (from, to) = (run.started, start);
        let from_end = run.end(from);
        let done = finish - run.finished;
        run.finished = finish;
        run.finished_end = finish_end;
        run.next_end = run.end(finish + 1);
        run.started = start;
        if to > from {
            self.busy_time = self.busy_time + run.end(to).since(from_end);
            self.num_iterations += (to - from) as u64;
        }
        self.busy_until = (start > finish).then(|| run.end(start));
        // The run's batch is the whole decode prefix: its steps are the prefix's, applied to the
        // aggregates ([`DecodePrefix`]); step k starts after `epoch − finished + k − 1` of them.
        assert!(
            self.decodes.lazy_step,
            "{}: a decode run scheduled by the walk",
            self.name
        );
        let first_epoch = self.decodes.epoch - (finish - done) as u64;
        let blocks = self.prefix_blocks_for_steps(first_epoch + from as u64, (to - from) as u64);
        self.reserved_blocks += blocks;
        let d = &mut self.decodes;
        d.lag += done as u32;
        d.epoch += done as u64;
        d.context_tokens += done as u64 * d.len as u64;
        d.min_outputs_left -= done as u32;
        d.ahead = (start - finish) as u32;
        self.check_decodes();
        assert!(
            self.used_blocks() <= self.limits.capacity_blocks,
            "{}: a decode run overran the KV capacity",
            self.name
        );
    }

    /// Phase slot of a decode whose true context is `context` tokens (see [`DecodePrefix`]).
    fn phase_slot(&self, context: u32) -> usize {
        let bs = self.limits.block_size as u64;
        ((context as u64 % bs + bs - self.decodes.epoch % bs) % bs) as usize
    }

    /// Slot of the decodes that need a new KV block at the start of the step after `epoch`
    /// whole-prefix steps: those whose context is then a multiple of the block size.
    fn crossing_slot(&self, epoch: u64) -> usize {
        let bs = self.limits.block_size as u64;
        ((bs - epoch % bs) % bs) as usize
    }

    /// New KV blocks the prefix needs for `steps` steps started after `epoch` whole-prefix
    /// steps: every decode needs one per `block_size` steps, at its slot's turn.
    fn prefix_blocks_for_steps(&self, epoch: u64, steps: u64) -> u64 {
        if !self.limits.incremental_kv || self.decodes.len == 0 {
            return 0;
        }
        let bs = self.limits.block_size as u64;
        let mut blocks = steps / bs * self.decodes.len as u64;
        // The crossing slot falls by one (mod the block size) a step: one division, not two a
        // step.
        let mut slot = self.crossing_slot(epoch);
        for _ in 0..steps % bs {
            debug_assert!(slot < bs as usize);
            blocks += self.decodes.phase_counts[slot] as u64;
            slot = slot.checked_sub(1).unwrap_or(bs as usize - 1);
        }
        blocks
    }

    /// A prefix sequence's true (context, outputs generated, reserved blocks): its fields plus
    /// the prefix's lag, its blocks derived as [`DecodePrefix`] says (its fields as they are when
    /// the prefix neither lags nor holds blocks ahead: synced, or scheduled by the walk).
    fn decode_truth(&self, s: &Seq) -> (u32, u32, u64) {
        let (lag, ahead) = (self.decodes.lag, self.decodes.ahead);
        let context = s.num_computed_tokens.wrapping_add(lag);
        let blocks = if self.limits.incremental_kv && (lag, ahead) != (0, 0) {
            self.private_blocks(context + self.decodes.ahead, s.num_shared_hit_tokens)
        } else {
            s.reserved_blocks
        };
        (context, s.num_generated.wrapping_add(lag), blocks)
    }

    /// Writes the prefix's lag and derived blocks into its sequences (O(prefix)), after which
    /// every field of every running sequence is true.
    fn sync_decodes(&mut self) {
        if self.decodes.lag == 0 && self.decodes.ahead == 0 {
            return;
        }
        for k in 0..self.decodes.len {
            let (context, generated, blocks) = self.decode_truth(&self.running[k]);
            let s = &mut self.running[k];
            debug_assert!(blocks >= s.reserved_blocks, "{}: a decode's blocks shrink", self.name);
            s.num_computed_tokens = context;
            s.num_generated = generated;
            s.reserved_blocks = blocks;
        }
        self.decodes.lag = 0;
        debug_assert_eq!(
            self.running.iter().map(|s| s.reserved_blocks).sum::<u64>(),
            self.reserved_blocks,
            "{}: the reserved blocks' total",
            self.name
        );
    }

    /// Recomputes the prefix's aggregates from the sequences, whose fields must be true (no lag),
    /// after the walk scheduled a step (`in_flight`) or ended one. A step in flight that decodes
    /// the whole prefix holds its blocks ahead and ends through the aggregates
    /// ([`DecodePrefix::lazy_step`]); one that leaves a decode out ends by the walk.
    fn rebuild_decodes(&mut self, in_flight: bool) {
        assert_eq!(self.decodes.lag, 0, "{}: a rebuild of lagging decodes", self.name);
        let len = self
            .running
            .iter()
            .take_while(|s| !s.prefill_only && s.remaining_prefill() == 0)
            .count();
        let mut counts = std::mem::take(&mut self.decodes.phase_counts);
        let (context_tokens, min_left) = self.tally_decodes(len, &mut counts);
        let whole = in_flight && self.batch_len >= len;
        self.decodes = DecodePrefix {
            len,
            context_tokens,
            min_outputs_left: min_left,
            phase_counts: counts,
            lazy_step: whole,
            ahead: u32::from(whole && len > 0),
            ..self.decodes
        };
        self.check_decodes();
    }

    /// The first `len` running sequences' true Σ context \[tokens\] and fewest outputs left
    /// \[tokens\] (`u32::MAX` when `len` is 0), and their phase slots counted into `counts`
    /// (length `block_size`, zeroed first): the [`DecodePrefix`] aggregates, by a walk.
    fn tally_decodes(&self, len: usize, counts: &mut [u32]) -> (u64, u32) {
        counts.fill(0);
        let (mut context_tokens, mut min_left) = (0, u32::MAX);
        for s in &self.running[..len] {
            let (context, generated, _) = self.decode_truth(s);
            context_tokens += context as u64;
            min_left = min_left.min(s.num_output_tokens - generated);
            counts[self.phase_slot(context)] += 1;
        }
        (context_tokens, min_left)
    }

    /// Debug builds: the prefix's aggregates agree with a walk over the sequences, and no decode
    /// follows it.
    fn check_decodes(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let d = &self.decodes;
        let mut counts = vec![0; d.phase_counts.len()];
        let (context_tokens, min_left) = self.tally_decodes(d.len, &mut counts);
        for s in &self.running[..d.len] {
            let (context, _, blocks) = self.decode_truth(s);
            assert!(
                !s.prefill_only && context >= s.prefill_target(),
                "{}: a decode still prefilling",
                self.name
            );
            assert!(blocks >= s.reserved_blocks, "{}: a decode's blocks shrink", self.name);
        }
        assert_eq!(
            (context_tokens, min_left, &counts),
            (d.context_tokens, d.min_outputs_left, &d.phase_counts),
            "{}: the decode prefix's aggregates",
            self.name
        );
        for s in &self.running[d.len..] {
            assert!(
                s.prefill_only || s.remaining_prefill() > 0,
                "{}: decode request {} after a sequence still prefilling",
                self.name,
                s.req
            );
        }
        let reserved: u64 = self.running[..d.len]
            .iter()
            .map(|s| self.decode_truth(s).2)
            .chain(self.running[d.len..].iter().map(|s| s.reserved_blocks))
            .sum();
        assert_eq!(
            reserved, self.reserved_blocks,
            "{}: the reserved blocks' total",
            self.name
        );
    }

    /// Ends the decode run after what has been applied ([`Instance::advance_run`]): the
    /// instance continues step by step.
    ///
    /// # Panics
    /// Without a run.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    pub fn end_run(&mut self) -> RunEnd {
        // What the run applied is already the decode prefix's ([`Instance::advance_run`]).
        let run = self.run.take().expect("end_run without a decode run");
        if run.started == run.finished {
            self.batch_len = 0;
            self.busy_until = None;
            self.decodes.ahead = 0;
            self.check_decodes();
            RunEnd::Idle
        } else if run.started == run.len {
            RunEnd::Unchanged
        } else {
            RunEnd::StepInFlight {
                at: run.end(run.started),
                pushed_at: run.step_start(run.started),
            }
        }
    }

    /// True while an iteration is in flight.
    pub fn is_busy(&self) -> bool {
        self.busy_until.is_some()
    }

    /// True when nothing waits or runs.
    pub fn is_idle_and_empty(&self) -> bool {
        !self.is_busy() && self.waiting.is_empty() && self.running.is_empty()
    }

    /// Sequences waiting for admission.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences admitted (prefilling or decoding).
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Time spent in iterations up to `t` (an iteration in flight counts up to `t`, not to its
    /// end), for `t` not before the start of the iteration in flight \[µs\].
    pub fn busy_time_until(&self, t: SimTime) -> SimDuration {
        match self.busy_until {
            Some(end) if end > t => SimDuration(self.busy_time.0 - (end.0 - t.0)),
            _ => self.busy_time,
        }
    }

    /// The running sequences past their prefill (decoding): (count, Σ context tokens).
    pub fn decoding_shape(&self) -> (u32, u64) {
        // The decodes are the prefix ([`DecodePrefix`]), a run's finished steps included.
        (self.decodes.len as u32, self.decodes.context_tokens)
    }

    /// Prompt tokens still to compute, over the waiting and running sequences \[tokens\].
    pub fn pending_prefill_tokens(&self) -> u64 {
        // The decode prefix has none (and its token counts lag).
        self.waiting
            .iter()
            .chain(&self.running[self.decodes.len..])
            .map(|s| s.remaining_prefill() as u64)
            .sum()
    }

    /// Handoff engine time of the prompts still to compute, over the waiting and running
    /// sequences ([`Seq::handoff_us`]) \[µs\].
    pub fn pending_handoff_us(&self) -> u64 {
        self.waiting
            .iter()
            .chain(&self.running[self.decodes.len..])
            .filter(|s| s.remaining_prefill() > 0)
            .map(|s| s.handoff_us)
            .sum()
    }

    /// Sequences waiting plus running.
    pub fn num_seqs(&self) -> usize {
        self.waiting.len() + self.running.len()
    }

    /// KV blocks in use: reservations, cache entries and shared prefixes. Invariant: ≤ capacity.
    pub fn used_blocks(&self) -> u64 {
        self.reserved_blocks + self.cache.blocks() + self.shared_blocks
    }

    /// Makes the shared prefix `key` of `tokens` tokens resident (pinned), as a warm-up request
    /// would; evicts LRU cache entries for room.
    ///
    /// # Panics
    /// If the prefix cannot fit.
    pub fn warm_shared(&mut self, key: u32, tokens: u32) {
        let have = self.shared.get(&key).copied().unwrap_or(0);
        if have >= tokens {
            return;
        }
        let extra = self.blocks_for(tokens) - self.blocks_for(have);
        while self.used_blocks() + extra > self.limits.capacity_blocks && self.cache.evict_lru().is_some() {}
        assert!(
            self.used_blocks() + extra <= self.limits.capacity_blocks,
            "{}: shared prefix {key} of {tokens} tokens does not fit",
            self.name
        );
        self.shared.insert(key, tokens);
        self.shared_blocks += extra;
    }

    /// Prompt tokens `conv` would hit in this instance's prefix cache now \[tokens\].
    pub fn cached_tokens(&self, conv: usize) -> u32 {
        self.cache.cached_tokens(conv)
    }

    /// Adds a sequence to the waiting queue.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    pub fn enqueue(&mut self, seq: Seq) {
        self.waiting.push_back(seq);
    }

    fn blocks_for(&self, tokens: u32) -> u64 {
        self.cache.blocks_for(tokens)
    }

    /// Blocks a sequence needs for `tokens` tokens of KV, of which the first `shared_hit` (whole
    /// blocks) live in a resident shared prefix.
    fn private_blocks(&self, tokens: u32, shared_hit: u32) -> u64 {
        private_blocks(self.limits.block_size, tokens, shared_hit)
    }

    /// Frees `v`'s KV (its computed tokens stay findable in the prefix cache until evicted) and
    /// puts it back at the head of the waiting queue to be recomputed.
    fn preempt(&mut self, mut v: Seq) {
        self.reserved_blocks -= v.reserved_blocks;
        self.cache
            .insert_sharing(v.conv, v.num_computed_tokens, v.num_shared_hit_tokens);
        // Recompute the prompt and the outputs whose KV existed (all but the last sampled one).
        // vLLM's recompute re-prefills the prompt and every output sampled so far (the last one's
        // KV was not written yet), then samples the next token.
        v.num_recompute_tokens = v.num_generated;
        v.num_computed_tokens = 0;
        v.num_external_tokens = 0;
        v.reserved_blocks = 0;
        v.num_shared_hit_tokens = 0;
        self.num_preemptions += 1;
        self.waiting.push_front(v);
    }

    /// Tries to admit the head of the waiting queue with at most `budget` tokens this iteration;
    /// returns the tokens scheduled for it and the engine time its admission adds to the step:
    /// loading its received KV ([`Seq::kv_load_us`], charged at the first admission that uses
    /// transferred tokens) and the engine's admission work ([`Instance::admit_us`], at the first
    /// admission), or `None` when it does not fit.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn admit_head(&mut self, now: SimTime, budget: u32) -> Option<(u32, u64)> {
        let seq = self.waiting.front().expect("admit_head on an empty queue");
        let (conv, target, output, external) = (
            seq.conv,
            seq.prefill_target(),
            seq.num_output_tokens,
            seq.num_external_tokens,
        );
        let bs = self.limits.block_size;
        let max_hit = target.saturating_sub(1);
        let shared_hit = seq
            .shared_prefix
            .and_then(|(k, t)| self.shared.get(&k).map(|&have| have.min(t)))
            .map_or(0, |t| (t.min(max_hit) / bs) * bs);
        let full = self.private_blocks(target + output.saturating_sub(seq.num_generated), shared_hit);
        assert!(
            full <= self.limits.capacity_blocks,
            "{}: request {} needs {full} blocks > capacity (scenario validation should have refused it)",
            self.name,
            seq.req
        );
        let entry = self.cache.take(conv);
        let cached_raw = entry.map_or(0, |e| e.0);
        let hit = ((cached_raw.min(max_hit) / bs) * bs).max(shared_hit);
        let computed = hit.max(external.min(max_hit));
        let chunk = (target - computed).min(budget);
        // Reserve mode holds the whole footprint; incremental mode only what this iteration computes.
        let need = if self.limits.incremental_kv {
            self.private_blocks(computed + chunk, shared_hit)
        } else {
            full
        };
        while self.used_blocks() + need > self.limits.capacity_blocks {
            if self.cache.evict_lru().is_none() {
                break;
            }
        }
        if self.used_blocks() + need > self.limits.capacity_blocks {
            if let Some(e) = entry {
                self.cache.restore(conv, e);
            }
            return None;
        }
        let mut seq = self.waiting.pop_front().unwrap();
        // vLLM's connector loads received KV in the worker before the forward pass of the step
        // that first schedules the request (`start_load_kv`); a re-admission recomputes instead.
        let mut engine_us = if computed > hit {
            std::mem::take(&mut seq.kv_load_us)
        } else {
            0
        };
        if seq.admitted_at.is_none() {
            engine_us += self.admit_us;
            // Statistics of the first admission only (a preempted sequence is re-admitted).
            self.admitted.push(Admission {
                req: seq.req,
                queue_delay: now.since(seq.enqueued_at),
                num_cached_tokens: hit,
                num_transferred_tokens: computed - hit,
            });
        }
        seq.num_shared_hit_tokens = shared_hit;
        seq.num_computed_tokens = computed;
        seq.reserved_blocks = need;
        seq.admitted_at.get_or_insert(now);
        self.reserved_blocks += need;
        self.running.push(seq);
        Some((chunk, engine_us))
    }

    /// Starts an iteration if idle and there is work. Returns its end time.
    ///
    /// Running sequences are scheduled in admission order; in incremental-KV mode a sequence
    /// that needs a block when none is free (after evicting cached prefixes) preempts the most
    /// recently admitted running sequence, or itself when it is the last.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    pub fn try_start(&mut self, now: SimTime, cost: &dyn CostModel) -> Option<SimTime> {
        if self.is_busy() {
            return None;
        }
        let mut budget = self.limits.token_budget;
        let mut shape = std::mem::take(&mut self.shape_scratch);
        shape.prefill.clear();
        shape.num_decode_seqs = 0;
        shape.decode_context_tokens = 0;
        // Running sequences in admission order; preemption victims come from the back, so the
        // ones already scheduled (before `i`) keep their place.
        assert!(
            self.run.is_none(),
            "{}: a scheduling pass inside a decode run",
            self.name
        );
        let (cap, bs, incremental) = (
            self.limits.capacity_blocks,
            self.limits.block_size,
            self.limits.incremental_kv,
        );
        // What lets the loop below skip the capacity check of a sequence that needs no new block.
        assert!(
            self.used_blocks() <= cap,
            "{}: a scheduling pass starts with KV blocks {} over capacity {cap}",
            self.name,
            self.used_blocks()
        );
        // The decode prefix in O(1) ([`DecodePrefix`]) when every decode gets its token and the
        // blocks its step needs fit without evicting: then the walk below would neither evict
        // nor preempt before passing it (each sequence's check is within the sum's).
        let d = self.decodes.len;
        let prefix_blocks = self.prefix_blocks_for_steps(self.decodes.epoch, 1);
        let lazy = d as u32 <= budget && self.used_blocks() + prefix_blocks <= cap;
        let mut i;
        let mut min_outputs_left;
        if lazy {
            self.reserved_blocks += prefix_blocks;
            budget -= d as u32;
            shape.num_decode_seqs = d as u32;
            shape.decode_context_tokens = self.decodes.context_tokens;
            min_outputs_left = self.decodes.min_outputs_left;
            i = d;
        } else {
            // The walk reads and changes the sequences: their fields made true first.
            self.sync_decodes();
            min_outputs_left = u32::MAX;
            i = 0;
        }
        // Engine time of the handoffs of the prompts this step completes [µs].
        let mut handoff_us = 0;
        // Whether a sequence before `i` still has prompt to compute: none of the decodes may
        // follow one, so the decodes are a prefix of `running` ([`DecodePrefix`]).
        let mut prefilling_before = false;
        while i < self.running.len() && budget > 0 {
            let s = &self.running[i];
            let rem = s.remaining_prefill();
            debug_assert!(
                rem > 0 || !prefilling_before,
                "{}: decode request {} after a sequence still prefilling",
                self.name,
                s.req
            );
            prefilling_before |= rem > 0;
            let tokens = if rem > 0 { rem.min(budget) } else { 1 };
            // Most passes need no new block (a decode fills its last block 15 times in 16), and
            // then nothing below changes: the blocks in use are within capacity (asserted above,
            // and only eviction, preemption or a new block below changes them).
            let need = if incremental {
                extra_blocks(bs, s, s.num_computed_tokens + tokens)
            } else {
                0
            };
            if need > 0 {
                // `used_blocks()` without its decode-run term (no run is in flight).
                if self.reserved_blocks + self.cache.blocks() + self.shared_blocks + need > cap {
                    // Evict cached prefixes, then preempt from the back.
                    let mut self_preempted = false;
                    while self.used_blocks() + need > cap {
                        if self.cache.evict_lru().is_some() {
                            continue;
                        }
                        // The last running sequence goes — `i` itself when it is the last.
                        let victim = self.running.pop().expect("i < len");
                        self.preempt(victim);
                        if i == self.running.len() {
                            self_preempted = true;
                            break;
                        }
                    }
                    if self_preempted {
                        break;
                    }
                }
                self.running[i].reserved_blocks += need;
                self.reserved_blocks += need;
            }
            let s = &mut self.running[i];
            if rem > 0 {
                if tokens == rem {
                    handoff_us += s.handoff_us;
                }
                shape.prefill.push(PrefillPart {
                    num_new_tokens: tokens,
                    num_cached_tokens: s.num_computed_tokens,
                });
                s.chunk = tokens;
            } else {
                shape.num_decode_seqs += 1;
                shape.decode_context_tokens += s.num_computed_tokens as u64;
                min_outputs_left = min_outputs_left.min(s.num_output_tokens - s.num_generated);
                s.chunk = 0;
            }
            budget -= tokens;
            i += 1;
        }
        let mut admitted = 0;
        while budget > 0 && !self.waiting.is_empty() && (self.running.len() as u32) < self.limits.max_num_seqs {
            assert_eq!(
                self.running.len(),
                i + admitted,
                "{}: admissions follow every running sequence",
                self.name
            );
            let Some((chunk, engine_us)) = self.admit_head(now, budget) else {
                break;
            };
            handoff_us += engine_us;
            let s = self.running.last_mut().expect("just admitted");
            if chunk == s.remaining_prefill() {
                handoff_us += s.handoff_us;
            }
            debug_assert!(chunk > 0, "an admitted sequence always has a prompt token to compute");
            shape.prefill.push(PrefillPart {
                num_new_tokens: chunk,
                num_cached_tokens: s.num_computed_tokens,
            });
            s.chunk = chunk;
            budget -= chunk;
            admitted += 1;
        }
        // The running sequences the first loop reached, then every one admitted after them (the
        // queue is admitted from only with budget left, so after every running sequence).
        self.batch_len = i + admitted;
        self.batch_min_outputs_left = min_outputs_left;
        if lazy {
            self.decodes.ahead = u32::from(d > 0);
            self.decodes.lazy_step = true;
            self.check_decodes();
        } else {
            // The walk may have preempted decodes or left some out of the batch: the aggregates
            // anew, and the step's end walks too unless every decode is in the batch.
            self.rebuild_decodes(true);
        }
        assert!(
            self.used_blocks() <= self.limits.capacity_blocks,
            "{}: KV blocks {} exceed capacity {}",
            self.name,
            self.used_blocks(),
            self.limits.capacity_blocks
        );
        // Priced with the shared prefix counted once under cascade attention; the shape keeps
        // the batch's whole context (what plan_decode_run starts a run from).
        let cascade_tokens = self.cascade_discount(shape.num_decode_seqs);
        shape.decode_context_tokens -= cascade_tokens;
        let dt = (!shape.is_empty()).then(|| cost.step_time(&shape));
        shape.decode_context_tokens += cascade_tokens;
        self.shape_scratch = shape;
        let dt = dt? + SimDuration(handoff_us);
        let end = now + dt;
        self.busy_until = Some(end);
        self.busy_time = self.busy_time + dt;
        self.num_iterations += 1;
        Some(end)
    }

    /// Decode-context tokens cascade attention saves the batch `running[..batch_len]`, of which
    /// `decodes` decode: when [`EngineLimits::cascade_attention`] is on, the batch holds at least
    /// [`CASCADE_MIN_SEQS`] sequences and every one of them reads the same resident shared prefix,
    /// of which the shortest hit is at least [`CASCADE_MIN_PREFIX_TOKENS`] tokens, that prefix
    /// is read once instead of once per decode: (decodes − 1) × the common hit. Otherwise 0.
    fn cascade_discount(&self, decodes: u32) -> u64 {
        if !self.limits.cascade_attention || self.batch_len < CASCADE_MIN_SEQS || decodes < 2 {
            return 0;
        }
        let batch = &self.running[..self.batch_len];
        let Some((key, _)) = batch[0].shared_prefix else {
            return 0;
        };
        let mut common = u32::MAX;
        for s in batch {
            match s.shared_prefix {
                Some((k, _)) if k == key => common = common.min(s.num_shared_hit_tokens),
                _ => return 0,
            }
        }
        if common < CASCADE_MIN_PREFIX_TOKENS {
            return 0;
        }
        (decodes as u64 - 1) * common as u64
    }

    /// Admissions made by the last [`Instance::try_start`] (drained; the buffer is kept).
    pub fn drain_admissions(&mut self) -> std::vec::Drain<'_, Admission> {
        self.admitted.drain(..)
    }

    /// Ends the iteration in flight at `now`, appending to `events` what happened to its
    /// sequences in batch order; returns how many of them sampled a token for a client (every
    /// sequence that decoded or finished its prompt, prefill-only ones excepted): the chunks the
    /// API server streams for this step.
    ///
    /// # Panics
    /// If no iteration is in flight or `now` is not its end.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    pub fn finish_step(&mut self, now: SimTime, events: &mut Vec<SeqEvent>) -> u64 {
        assert_eq!(
            self.busy_until,
            Some(now),
            "{}: step end at {now} does not match the iteration in flight",
            self.name
        );
        self.busy_until = None;
        if let Some(run) = self.run.take() {
            // Its earlier steps are applied ([`Instance::advance_run`]); this is its last.
            assert_eq!(
                (run.finished + 1, run.started),
                (run.len, run.len),
                "{}: a decode run ends with its earlier steps applied",
                self.name
            );
        }
        let mut done = std::mem::take(&mut self.done_scratch);
        done.clear();
        let mut chunks = 0;
        let lazy = self.decodes.lazy_step;
        // The decode prefix through its aggregates: each decoded one token and sampled it.
        let d = if lazy { self.decodes.len } else { 0 };
        if d > 0 {
            let p = &mut self.decodes;
            p.lag += 1;
            p.epoch += 1;
            p.ahead = 0;
            p.context_tokens += d as u64;
            p.min_outputs_left -= 1;
            chunks += d as u64;
            if p.min_outputs_left == 0 {
                // Some decode produced its last token: the prefix synced, then walked.
                self.sync_decodes();
                let mut min_left = u32::MAX;
                for (i, s) in self.running[..d].iter().enumerate() {
                    let left = s.num_output_tokens - s.num_generated;
                    if left == 0 {
                        events.push(SeqEvent::Completed { req: s.req });
                        done.push(i);
                    } else {
                        min_left = min_left.min(left);
                    }
                }
                self.decodes.min_outputs_left = min_left;
            }
        }
        // Sequences whose prompt this step completed and that decode from now on.
        let mut joined = 0;
        for (i, s) in self.running[d..self.batch_len].iter_mut().enumerate() {
            let i = d + i;
            let chunk = s.chunk;
            if chunk > 0 {
                s.num_computed_tokens += chunk;
                assert!(s.num_computed_tokens <= s.prefill_target());
                if s.num_computed_tokens == s.prefill_target() {
                    if s.prefill_only {
                        events.push(SeqEvent::PrefillDone { req: s.req });
                        done.push(i);
                    } else {
                        // The step that completes the prompt (or a recompute) samples a token.
                        s.num_generated += 1;
                        chunks += 1;
                        if s.num_generated == 1 {
                            events.push(SeqEvent::FirstToken { req: s.req });
                        }
                        if s.num_generated == s.num_output_tokens {
                            events.push(SeqEvent::Completed { req: s.req });
                            done.push(i);
                        } else {
                            joined += 1;
                        }
                    }
                }
            } else {
                assert!(!lazy, "{}: a decode outside the decode prefix", self.name);
                s.num_computed_tokens += 1;
                s.num_generated += 1;
                chunks += 1;
                assert!(s.num_generated <= s.num_output_tokens);
                if s.num_generated == s.num_output_tokens {
                    events.push(SeqEvent::Completed { req: s.req });
                    done.push(i);
                }
            }
        }
        self.batch_len = 0;
        // `done` is ascending (the batch is walked in order); removed from the back.
        for &i in done.iter().rev() {
            let s = self.running.remove(i);
            assert!(
                s.prefill_only || s.num_computed_tokens == s.num_prompt_tokens + s.num_generated - 1,
                "{}: request {} finished with {} tokens of KV, not prompt {} + outputs {} − 1",
                self.name,
                s.req,
                s.num_computed_tokens,
                s.num_prompt_tokens,
                s.num_generated
            );
            self.reserved_blocks -= s.reserved_blocks;
            if i < d {
                // A decode of the prefix (synced above).
                let slot = self.phase_slot(s.num_computed_tokens);
                self.decodes.leave(slot, s.num_computed_tokens);
            }
            let keep = if s.prefill_only || !self.limits.cache_answers {
                s.num_prompt_tokens
            } else {
                s.num_prompt_tokens + reused_answer_tokens(s.num_generated - 1, self.limits.answer_mismatch_per_token)
            };
            self.cache.insert_sharing(s.conv, keep, s.num_shared_hit_tokens);
        }
        if lazy {
            // The prompts completed in admission order, so the new decodes follow the prefix;
            // they join it with its lag subtracted (wrapping: [`Instance::sync_decodes`] adds it).
            let (lag, first) = (self.decodes.lag, self.decodes.len);
            for k in first..first + joined {
                let s = &self.running[k];
                let (context, left) = (s.num_computed_tokens, s.num_output_tokens - s.num_generated);
                let slot = self.phase_slot(context);
                self.decodes.join(slot, context, left);
                let s = &mut self.running[k];
                s.num_computed_tokens = context.wrapping_sub(lag);
                s.num_generated = s.num_generated.wrapping_sub(lag);
                s.chunk = 0;
            }
            self.check_decodes();
        } else {
            self.rebuild_decodes(false);
        }
        self.done_scratch = done;
        assert!(self.used_blocks() <= self.limits.capacity_blocks);
        chunks
    }
}

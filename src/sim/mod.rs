//! The discrete-event simulation of one policy on one cluster.
//!
//! ```text
//!            arrival (+request overhead)                 KV link (FIFO per P)     +pd handoff
//! turn k ──▶ router ──split──▶ P instance: prefill ──────▶ transfer ───────────────▶ D instance: 1-token
//!              │                (P's prefix cache:                                  step, first token,
//!              │                 previous prompt)                                   decode ──▶ done
//!              └──local──▶ D/R instance: append-prefill on its prefix cache, decode ──────▶ done
//!                                                                                   │
//! turn k+1 arrives a think time after turn k's last token ◀─────────────────────────┘
//! ```
//!
//! * Time is integer microseconds ([`crate::time`]); the queue's same-time contract is in
//!   [`queue`]. After all events of a time are handled, idle instances with work start an iteration.
//! * Conversations are pinned to one D (or R) instance and one P instance by a fixed hash of the
//!   conversation index, salted by [`SimConfig::routing_seed`] (vllm-ppd's proxy hashes the
//!   prompt's first characters).
//! * Fixed overheads (calibrated): every request reaches its first instance `request_overhead_ms`
//!   after its arrival (client → proxy → engine, tokenisation, and the return path), of which
//!   `request_service_ms` is serialized work of that instance's API server. On a split route, D
//!   receives the request `pd_handoff_ms` after the KV transfer completes (the proxy waits for
//!   P's `max_tokens = 1` response before sending the request to D): serialized work at the P
//!   instance (`pd_handoff_p_service_ms`, done by P's engine in the step that finishes the
//!   prompt — before the transfer — or in a queue beside it: [`HandoffQueue`]), serialized work
//!   at D's API server
//!   (`pd_handoff_d_service_ms`), and latency for the rest. Each component queues only the
//!   requests that pass through it, so a cluster with more P instances hands off more requests
//!   per second.
//! * On a split route D finds the transferred KV for `prompt − 1` tokens and computes the last
//!   prompt token itself (vLLM recomputes it to sample the first token).
//! * KV transfers move the whole prompt's KV ([`TransferMode::Full`], what vllm-ppd's P2P NCCL
//!   connector does) or only the tokens D does not hold ([`TransferMode::Incremental`]).

pub mod instance;
pub mod link;
pub mod prefix_cache;
pub mod queue;
pub mod workload;

use crate::cluster::{PoolRole, Shape};
use crate::cost_model::{BatchShape, CostModel, PrefillPart};
use crate::metrics::{InstanceUsage, RequestRecord, RequestStatus, RouteKind};
use crate::policy::{Policy, RouteRequest, RouterConfig};
use crate::time::{SimDuration, SimTime};
use instance::{Admission, EngineLimits, Instance, Role, RunEnd, Seq, SeqEvent};
use link::KvLink;
use queue::{EventKey, EventQueue};
use serde::{Deserialize, Serialize};
use workload::{LaterTurn, TimedConversation};

/// How much KV a split route sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TransferMode {
    /// The whole prompt (`L + m` tokens).
    #[default]
    Full,
    /// Only prompt tokens the D instance does not hold when P's prefill ends.
    Incremental,
}

/// How conversations are pinned to decode-side (D, pD, R) instances, and requests to P instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Pinning {
    /// A fixed hash of the conversation (vllm-ppd's proxy hashes the prompt's first characters).
    #[default]
    Hash,
    /// Each new conversation goes to the decode-side instance with the fewest active
    /// conversations; each split request to the P instance with the fewest sequences.
    LeastLoaded,
}

/// Where the serialized share of the PD handoff (`pd_handoff_p_service_ms`) queues. No default
/// here: a model file records the one its overheads were fitted with (`per-prefill` when it does
/// not say), and `calibrate` fits with `prefill-engine` unless told otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HandoffQueue {
    /// P's engine does it (what the shipped model is fitted with): the step that computes a split prompt's last token
    /// takes `pd_handoff_p_service_ms` longer per such prompt, so P's handoffs and prefills
    /// share one server. What vllm-ppd's 1P_3D sweep shows: its one P saturates at 20–23
    /// requests/s with 272-token turn-2 prompts but at 11.6–12.1 with 1,280-token ones, a gap
    /// the prefill compute closes only if it adds to the handoff work rather than overlapping
    /// it (`docs/validation.md`, "P's handoff holds its engine").
    PrefillEngine,
    /// One queue per P instance beside its engine (a cluster with more P instances hands off
    /// more requests per second, and a P's handoffs overlap its prefills).
    PerPrefill,
    /// One queue for the whole cluster (a single proxy doing the work; what the v3 benchmark's
    /// 10-request turn-1 bursts on 2 P + 2 D fit about as well as P's engine).
    Cluster,
}

/// Everything the simulator needs besides the workload and the cost model.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Name of the run in outputs (the router's, the cluster's, or `router@cluster`).
    pub name: String,
    /// The routing rule.
    pub router: RouterConfig,
    /// The cluster's instance counts per role (instances numbered P, R, D, pD).
    pub shape: Shape,
    /// Per-instance engine limits.
    pub limits: EngineLimits,
    /// KV bytes per token \[B\].
    pub kv_bytes_per_token: u64,
    /// KV link bandwidth [Gbit/s].
    pub link_bandwidth_gbps: f64,
    /// KV link latency per transfer \[ms\].
    pub link_latency_ms: f64,
    /// Full or incremental KV transfer.
    pub transfer: TransferMode,
    /// P's engine waits until the KV of the prompts its step completes has been sent: the step
    /// lasts each such prompt's transfer longer (latency + bytes / bandwidth on P's link, one
    /// after another), and the KV is at D when the step ends. vLLM's `P2pNcclConnector` with
    /// `send_type = PUT_ASYNC` (what vllm-ppd ran) queues each layer's KV for a sender thread
    /// during the forward pass and, in `wait_for_save`, blocks the worker in
    /// `P2pNcclEngine::wait_for_sent` until that queue is empty. `false`: the transfer runs on
    /// P's link beside the engine, from the step's end. A candidate mechanism, off unless a
    /// model file or scenario turns it on (`docs/validation.md`, "P's engine waits for its KV
    /// sends").
    pub prefill_waits_for_send: bool,
    /// D's engine time to load a request's received KV into its paged KV cache, added to the
    /// step that first schedules the request (one request after another) \[ms\]. vLLM's
    /// `P2pNcclConnector` does it in the worker before the forward pass (`start_load_kv`: per
    /// request and attention layer, `P2pNcclEngine::recv_tensor` and an indexed copy into the
    /// request's blocks), so it holds every decode running on D. 0 (the default): the load is
    /// free. A candidate mechanism (`docs/validation.md`, "D's engine loads the received KV").
    pub kv_load_ms: f64,
    /// Engine time of a request's first admission on an instance, added to the step that first
    /// schedules it (every request, on P, D, pD and R; a re-admission after a preemption pays
    /// nothing) \[ms\]. vLLM V1's engine core adds each request in its busy loop, between two
    /// steps (building the request, hashing its prompt's blocks for the prefix cache, the
    /// scheduler's first lookup and allocation), so the work holds every sequence running there.
    /// 0 (the default): admission is free. A candidate mechanism for the interference bursts'
    /// decode TPOT (`docs/validation.md`, "The engine's admission work").
    pub engine_admit_ms: f64,
    /// Arrival → first instance \[ms\].
    pub request_overhead_ms: f64,
    /// KV transfer done → D's engine receives the request \[ms\]: the whole PD handoff (P's
    /// `max_tokens = 1` response back to the proxy, the proxy's request to D, D's API server),
    /// of which `pd_handoff_p_service_ms` and `pd_handoff_d_service_ms` are serialized work and
    /// the rest latency.
    pub pd_handoff_ms: f64,
    /// Serialized share of the handoff done at the P instance (its API server returning the
    /// response, its KV connector finishing the send): by P's engine, in the step that computes
    /// the prompt's last token ([`HandoffQueue::PrefillEngine`]), or one request at a time in a
    /// queue beside it \[ms\].
    pub pd_handoff_p_service_ms: f64,
    /// Where `pd_handoff_p_service_ms` is done: in P's engine, in a queue per P instance, or in
    /// one queue for the cluster.
    pub pd_handoff_queue: HandoffQueue,
    /// Serialized share of the handoff done by D's API server (tokenising and admitting the
    /// request to D), in the same per-instance queue as requests arriving at D directly \[ms\].
    pub pd_handoff_d_service_ms: f64,
    /// The serialized part of `request_overhead_ms` (≤ it) \[ms\]; the rest is latency.
    pub request_service_ms: f64,
    /// Coefficient of variation of each serialized overhead service (`request_service_ms`,
    /// `pd_handoff_p_service_ms`, `pd_handoff_d_service_ms`): each service time is lognormal with
    /// the configured mean and this CV, drawn per (conversation, turn, component) from
    /// `routing_seed` (so every policy sees the same draws). 0: deterministic services. The
    /// servers are Python processes (proxy, API servers) whose per-request work varies with
    /// garbage collection, event-loop contention and response sizes; M/G/1 queues wait
    /// (1 + CV²)/2 times longer than M/D/1 ones at the same load.
    pub overhead_service_cv: f64,
    /// Latency per prompt token, once per request at its entry (client, proxy and the first
    /// instance's API server handling the prompt text; D's hop after a KV transfer adds none)
    /// \[ms/token\].
    pub prompt_ms_per_token: f64,
    /// Chat-template tokens added per message \[tokens\].
    pub template_tokens_per_message: u32,
    /// When true, the serialized shares of the fixed overheads are work of FIFO servers — one API
    /// server per instance (`request_service_ms` of each request arriving there,
    /// `pd_handoff_d_service_ms` of each handoff to a D) and P's engine or a handoff server
    /// (`pd_handoff_p_service_ms`, [`HandoffQueue`]) — so bursts queue behind each other; when
    /// false every overhead is a pure delay.
    pub serialized_overheads: bool,
    /// The benchmark client's connection pool (vllm-ppd: `TCPConnector(limit=50)`): at most this
    /// many requests in flight; TTFT includes the wait for a connection. A turn sent the moment
    /// its previous turn ends (no think time) reuses that turn's connection. `None`: unlimited.
    pub client_max_connections: Option<u32>,
    /// Fraction of the turns sent the moment their previous turn ends that do not keep its
    /// connection: they lose it to the pool's oldest waiting request and queue behind every
    /// waiting one (FIFO), their TTFT holding that wait. Which turns is a fixed hash of
    /// (conversation, turn, `routing_seed`), so every policy sees the same ones. 0 (the default):
    /// every such turn keeps its connection. The candidate mechanism for vllm-ppd's
    /// comprehensive sweep, whose turn-2 p99 TTFT reaches the turn-1 pool waits (seconds) once
    /// the 50-connection pool is full while its turn-2 p50 stays at tens of ms: an aiohttp
    /// client whose woken waiter sometimes runs before the conversation sends its next turn
    /// (docs/validation.md; the replay fit does not ask for it). Only acts with
    /// `client_max_connections` and waiting requests.
    pub client_requeue_rate: f64,
    /// Per output chunk an instance's API server streams (detokenising and writing one token of
    /// one request) \[ms\]: the chunks of each engine step are handled one after another once the
    /// step ends and the server is free, and a token reaches the client when its step's chunks
    /// are done — so with N streams the client sees at most one token per N × this per request,
    /// whatever the GPU does (vLLM's API server is one Python process; its engine core runs on).
    /// TTFT and E2E are these delivery times; the next turn is sent at the delivered end. 0 (the
    /// default): tokens reach the client when their step ends. A candidate for the interference
    /// study's decode TPOT above ≈ 150 concurrent requests (0.3 ms fits it), not the default:
    /// seed 003's W1, ≈ 12 ms TPOT with ≈ 50–60 streams on one instance, bounds it at ≈ 0.2 ms
    /// (docs/validation.md).
    pub stream_ms_per_chunk: f64,
    /// Client timeout: a request whose E2E exceeds it counts as failed and its conversation
    /// stops (vllm-ppd: 120 s). `None`: no timeout.
    pub request_timeout_s: Option<f64>,
    /// Pinning rule.
    pub pinning: Pinning,
    /// Longest prompt + output an engine accepts (`--max-model-len`); longer requests are
    /// refused at once and end their conversation. `None`: no limit.
    pub max_model_len: Option<u32>,
    /// Fraction of turn-2+ requests the router fails to match to their conversation (0–1): the
    /// router treats such a turn as a new conversation's first turn — it re-pins the
    /// conversation by a fresh hash (or to the least-loaded instance) and routes the turn as a
    /// first turn (through P when the cluster has P instances). Which turns miss is a fixed hash
    /// of (conversation, turn), so runs stay deterministic. vllm-ppd's comprehensive benchmark:
    /// 2/9 (see [`COMPREHENSIVE_AFFINITY_MISS_RATE`]).
    pub affinity_miss_rate: f64,
    /// Salt of the router's hashes (pinning, re-pinning, affinity misses). A real router hashes
    /// conversation content, so two runs of one workload place conversations differently; a
    /// replay with another salt draws another placement. 0 is the default placement.
    pub routing_seed: u64,
    /// Plan runs of decode-only iterations at once ([`instance::DecodeRun`]: one event per run,
    /// not per iteration) instead of one event per iteration. Results are identical either way
    /// (tests check it on every shipped scenario and the property-test workloads); `false` is the
    /// step-by-step path (`ppdsim run --step-path`).
    pub decode_runs: bool,
}

/// Longest decode run planned at once \[steps\]: a run reaches its first completion (its
/// batch's fewest outputs left), a KV-block limit or this many steps, whichever comes first.
/// A run is planned in O(1) and cut short in O(log) ([`instance::DecodeRun`]), so planning it as
/// long as the batch allows costs nothing when an arrival interrupts it; the build before
/// 2026-12-03 started at 16 steps and doubled after each uninterrupted run, which added
/// 7,133 of the 56,200 events of Vidur's run (`scenarios/vidur-arxiv-qps2.toml`) and
/// identical results.
pub const MAX_DECODE_RUN_STEPS: usize = 4096;

/// Affinity-miss rate of the vllm-ppd comprehensive benchmark, derived from its code (not fitted):
/// the client draws each prompt's template from three (`User: … Assistant:`, `Question: …
/// Answer:`, `<|user|>…<|assistant|>`); the proxy (`comprehensive_proxy.py`) keys a conversation
/// on the text after the first `User:` when the prompt has one, else on its first 200
/// characters. A turn-1 prompt without `User:` (2 of 3 templates) whose turn-2 input uses the
/// `User:` template (1 of 3) therefore gets a new key: 2/3 × 1/3 = 2/9 of turn-2 requests are
/// routed as new conversations. (The turn-1 answer may also contain `User:`, which would raise
/// it; the measured turn-2 mean TTFTs imply 0.2–0.3.)
pub const COMPREHENSIVE_AFFINITY_MISS_RATE: f64 = 2.0 / 9.0;

/// Whether the vllm-ppd comprehensive benchmark's turn-2 prompts reuse the cached KV of the
/// turn-1 answer ([`crate::sim::instance::EngineLimits::cache_answers`]): no. Its direct turns
/// time as if the whole answer were recomputed — 1P_3pD's 16-token appends on ≈ 2,300-token
/// contexts (1,024-token answers) take 58–66 ms where a reused answer predicts ≈ 50 ms; with the
/// answer recomputed the 1P_3pD turn-2 p50 TTFT median error falls from 19.4% to 7.4% and every
/// `large_*` workload lies within ±7% (`docs/validation.md`). The client resends the answer as
/// text; with `ignore_eos = true` an answer that ran past the model's end-of-sequence holds tokens
/// its text drops, so the re-tokenised prompt diverges there (the cache-info runs of another
/// benchmark version kept 63–87% of their answers). Fitted by comparison, a binary mechanism
/// choice, not a tuned value.
pub const COMPREHENSIVE_CACHE_ANSWERS: bool = false;

/// An event (closed enum: the domain is fixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A conversation's first turn arrives.
    ConversationStart {
        /// Conversation index.
        conv: usize,
    },
    /// A turn arrives at the router.
    Arrival {
        /// Request id.
        req: usize,
    },
    /// A request reaches an instance's waiting queue.
    Enqueue {
        /// Instance index.
        inst: usize,
        /// Request id.
        req: usize,
    },
    /// An instance's iteration ends.
    StepDone {
        /// Instance index.
        inst: usize,
    },
    /// A request's KV has arrived at its D instance.
    KvTransferDone {
        /// Request id.
        req: usize,
    },
    /// A split request's handoff reaches D's API server (P's share and the latency are done).
    HandoffAtDecode {
        /// Request id.
        req: usize,
    },
    /// A completed request's last token reaches the client, after its API server streamed the
    /// chunks queued before it ([`SimConfig::stream_ms_per_chunk`] > 0 only).
    StreamEnd {
        /// Request id.
        req: usize,
    },
}

/// State of one request (a turn) during the run.
#[derive(Clone, Debug)]
struct Request {
    conv: usize,
    turn: usize,
    num_context_tokens: u32,
    num_user_tokens: u32,
    num_prompt_tokens: u32,
    num_output_tokens: u32,
    route: RouteKind,
    prefill_inst: Option<usize>,
    decode_inst: usize,
    arrived_at: SimTime,
    first_token_at: Option<SimTime>,
    /// Uncached prompt tokens this request added to its decode instance's local prefill backlog
    /// when routed local (0 on split routes) \[tokens\].
    backlog_tokens: u32,
    completed_at: Option<SimTime>,
    prefill_done_at: Option<SimTime>,
    kv_ready_at: Option<SimTime>,
    /// KV bytes sent from P to D: priced when P enqueues the prompt if P's engine waits for the
    /// send, when P's step ends otherwise \[B\].
    kv_bytes: u64,
    queue_delay: SimDuration,
    num_cached_tokens: Option<u32>,
    num_transferred_tokens: u32,
    timed_out: bool,
    rejected: bool,
    /// The slot of its conversation's next turn, or [`NO_REQUEST`]: a conversation's requests
    /// are chained in turn order until its records are emitted.
    next_in_conv: u32,
}

/// No request slot (the end of a conversation's chain).
const NO_REQUEST: u32 = u32::MAX;

/// 32 bytes (indices as `u32`): one per conversation of the workload, so a million of them is
/// 32 MB.
struct ConvState {
    /// Index of its next turn (0-based).
    next_turn: u32,
    context_tokens: u32,
    /// The D/R instance it is pinned to ([`ConvState::decode_inst`]).
    decode_inst: u32,
    /// The P instance it is pinned to, none without P instances ([`ConvState::prefill_inst`]).
    prefill_inst: Option<u32>,
    stopped: bool,
    /// The slots of its first and latest requests ([`NO_REQUEST`] before the first turn and
    /// after its records are emitted): the chain [`Request::next_in_conv`] runs between them.
    first_request: u32,
    last_request: u32,
}

// What the doc above promises: a field added or widened shows here.
const _: () = assert!(std::mem::size_of::<ConvState>() == 32);

impl ConvState {
    /// A conversation before its first turn, pinned to `decode_inst` (and `prefill_inst`).
    fn new(decode_inst: usize, prefill_inst: Option<usize>) -> Self {
        ConvState {
            next_turn: 0,
            context_tokens: 0,
            decode_inst: Self::packed(decode_inst),
            prefill_inst: prefill_inst.map(Self::packed),
            stopped: false,
            first_request: NO_REQUEST,
            last_request: NO_REQUEST,
        }
    }

    /// Pins it to `decode_inst` (and `prefill_inst`).
    fn pin(&mut self, decode_inst: usize, prefill_inst: Option<usize>) {
        self.decode_inst = Self::packed(decode_inst);
        self.prefill_inst = prefill_inst.map(Self::packed);
    }

    /// An instance index as stored.
    ///
    /// # Panics
    /// Past `u32::MAX` (a cluster is validated to at most
    /// [`crate::scenario::limits::MAX_INSTANCES`], 4,096 instances).
    fn packed(inst: usize) -> u32 {
        u32::try_from(inst).expect("an instance index fits in u32")
    }

    fn decode_inst(&self) -> usize {
        self.decode_inst as usize
    }

    fn prefill_inst(&self) -> Option<usize> {
        self.prefill_inst.map(|p| p as usize)
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct SimResult {
    /// One record per request, ordered by (conversation, turn).
    pub records: Vec<RequestRecord>,
    /// Per-instance usage.
    pub instances: Vec<InstanceUsage>,
    /// Hysteresis mode entries: how often a D instance entered remote mode (0 for rules
    /// without modes).
    pub mode_switches: u64,
    /// Events handled.
    pub num_events: u64,
    /// Request slots the run needed: the most requests held at once (each finished
    /// conversation's are freed once its records are emitted) \[requests\].
    pub request_slots: usize,
    /// Per-instance state on a fixed time grid (empty unless [`Simulation::with_timeline`]).
    pub timeline: Vec<TimelineSample>,
}

/// One instance's state at one point of the timeline grid (`run`'s `timeline.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineSample {
    /// Grid time since the start \[s\].
    pub time_s: f64,
    /// Instance name (`P0`, `D1`, `R0`; interned, as a [`crate::metrics::RequestRecord`]'s
    /// names are: a sample holds a pointer, and is as large as the raw sample it is made from,
    /// so [`Simulation::run`] converts the raw samples in place).
    #[serde(deserialize_with = "crate::metrics::interned")]
    pub instance: crate::metrics::Name,
    /// Sequences waiting for admission (the engine's queue).
    pub waiting: u32,
    /// Sequences admitted (prefilling or decoding).
    pub running: u32,
    /// Fraction of the KV capacity in use: reservations, prefix cache and shared prefixes (0–1).
    pub kv_usage: f64,
    /// Fraction of the grid interval ending here spent running iterations (0–1).
    pub busy_fraction: f64,
}

/// A run's timeline (`run`'s `timeline.csv` rows of one policy): its policy and its samples,
/// grid point by grid point, each point's instances in order.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyTimeline {
    /// Policy (router) name.
    pub policy: String,
    /// Its samples.
    pub samples: Vec<TimelineSample>,
}

/// The most grid points a timeline keeps per instance: past it the interval doubles and every
/// other point is dropped, so memory stays bounded however long the run.
pub const MAX_TIMELINE_POINTS: usize = 4096;

/// The most raw timeline samples reserved up front (1 MiB of them); a larger cluster's grow.
const MAX_RESERVED_TIMELINE_SAMPLES: usize = (1 << 20) / std::mem::size_of::<RawSample>();

/// A raw timeline sample: (grid time, instance name, waiting, running, used blocks, busy time up
/// to then). The samples are kept grid point by grid point, each point's instances in order, so
/// sample `j`'s instance is `j` modulo the instance count.
type RawSample = (SimTime, crate::metrics::Name, u32, u32, u64, SimDuration);

// A run's samples are made from its raw samples in their own allocation (`Vec`'s in-place
// `collect`), which needs the two the same size and alignment: no second array written, on
// the simulating thread, after the run (Vidur's run: 4,097 samples, ≈ 200 KB).
const _: () = assert!(
    std::mem::size_of::<RawSample>() == std::mem::size_of::<TimelineSample>()
        && std::mem::align_of::<RawSample>() == std::mem::align_of::<TimelineSample>()
);

/// The timeline being recorded: raw samples (cumulative busy time), thinned as it grows.
struct Timeline {
    interval: SimDuration,
    next: SimTime,
    /// Samples in grid order ([`RawSample`]).
    raw: Vec<RawSample>,
}

/// SplitMix64: a fixed, portable hash for pinning conversations to instances.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a of `bytes` (Fowler–Noll–Vo, offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3): a fixed, portable hash of names and texts (seeds of validation points,
/// fingerprints of sweeps).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// When `service_ms` of work arriving at `now` is done: behind the work already queued at a FIFO
/// server that is free at `*free` (then advanced), or at once without a server (a pure delay).
fn fifo_done(free: Option<&mut SimTime>, now: SimTime, service_ms: f64) -> SimTime {
    let d = SimDuration::from_ms_f64(service_ms);
    match free {
        Some(free) => {
            *free = (*free).max(now) + d;
            *free
        }
        None => now + d,
    }
}

/// A serialized overhead service whose time [`service_jitter`] draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceComponent {
    /// The request's handling at its first instance's API server (`request_service_ms`).
    RequestHandling = 0,
    /// P's share of a split request's handoff (`pd_handoff_p_service_ms`).
    PrefillHandoff = 1,
    /// D's share of it (`pd_handoff_d_service_ms`).
    DecodeHandoff = 2,
}

/// Factor (mean 1, coefficient of variation `cv`) of turn `turn` (1-based) of conversation `conv`'s
/// serialized overhead `component`: lognormal with σ² = ln(1 + cv²) and μ = −σ²/2, drawn from a
/// ChaCha8 stream keyed by (`seed`, conversation, turn, component), so a draw depends neither on
/// event order nor on the policy (every policy of a run sees the same services). Exactly 1 when
/// `cv` is 0.
pub fn service_jitter(cv: f64, seed: u64, conv: usize, turn: usize, component: ServiceComponent) -> f64 {
    assert!(cv.is_finite() && cv >= 0.0, "service CV {cv} is not ≥ 0");
    if cv == 0.0 {
        return 1.0;
    }
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(salted(conv as u64, seed));
    rng.set_stream(((turn as u64) << 2) | component as u64);
    let sigma2 = (1.0 + cv * cv).ln();
    rand_distr::LogNormal::new(-sigma2 / 2.0, sigma2.sqrt())
        .expect("a finite σ ≥ 0")
        .sample(&mut rng)
}

/// `x` salted with a router hash seed (identity for seed 0): the seed times the 64-bit golden
/// ratio, so small seeds give far-apart keys (a plain `x ^ seed` would only permute small `x`).
fn salted(x: u64, seed: u64) -> u64 {
    x ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A uniform draw in [0, 1) fixed by (`salt`, `seed`, conversation, turn): the same turn gets the
/// same draw in every policy's run (53 bits of a splitmix64 hash).
fn keyed_uniform(salt: u64, seed: u64, conv: usize, turn: usize) -> f64 {
    let h = splitmix64(splitmix64(salted(conv as u64 ^ salt, seed)) ^ turn as u64);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The (D/R instance, P instance) a hash `h` pins a conversation to on a cluster of `p` P and
/// `d` decode-side instances (instances are numbered P first).
fn hash_pin(h: u64, p: u32, d: u32) -> (usize, Option<usize>) {
    (
        p as usize + (h % d as u64) as usize,
        (p > 0).then(|| (splitmix64(h) % p as u64) as usize),
    )
}

/// One simulation.
pub struct Simulation<'a> {
    cfg: SimConfig,
    /// The iteration-time model of each instance (P first, then D/R).
    costs: Vec<&'a dyn CostModel>,
    /// Names every record of the run carries (interned: copied as a pointer, no count to update).
    policy_name: crate::metrics::Name,
    instance_names: Vec<crate::metrics::Name>,
    /// What an owned workload's conversation keeps in place of its id once its last record took
    /// it ([`Simulation::record_conversation_id`]): counted on this thread only.
    taken_id: std::sync::Arc<str>,
    policy: Box<dyn Policy>,
    queue: EventQueue<Event>,
    now: SimTime,
    instances: Vec<Instance>,
    links: Vec<KvLink>,
    num_prefill: usize,
    convs: std::borrow::Cow<'a, [TimedConversation]>,
    conv_state: Vec<ConvState>,
    requests: Vec<Request>,
    dirty: Vec<bool>,
    num_events: u64,
    /// When each instance's API server is free (serialized request handling).
    frontend_free_at: Vec<SimTime>,
    /// Per instance: uncached prompt tokens of the requests routed local to it whose first token
    /// is not out yet (the router's view of its prefill backlog) \[tokens\].
    local_backlog_tokens: Vec<u64>,
    /// Per instance: when its handoff server is free (P instances' serialized handoff share).
    handoff_free_at: Vec<SimTime>,
    in_flight: u32,
    connection_waiters: std::collections::VecDeque<usize>,
    active_convs: Vec<u32>,
    timeline: Option<Timeline>,
    /// Per instance: when its API server has streamed every chunk so far
    /// ([`SimConfig::stream_ms_per_chunk`]).
    stream_free_at: Vec<SimTime>,
    /// Per instance: `stream_free_at` when its decode run in flight was planned.
    run_stream_base: Vec<SimTime>,
    /// `stream_ms_per_chunk` in whole µs.
    stream_chunk_us: u64,
    /// Whether a request reaches its first instance's queue the instant it arrives
    /// ([`Simulation::request_handling`]): no request overhead, no per-prompt-token latency and no
    /// service that could keep an API server busy past now (Vidur's iteration model has none).
    instant_request_handling: bool,
    /// Per instance: [`SimConfig::kv_load_ms`] (or its pool's, [`Simulation::with_kv_load`]) in
    /// whole µs.
    kv_load_us: Vec<u64>,
    /// What the last finished iteration did to its sequences (a buffer kept between events).
    seq_events: Vec<SeqEvent>,
    /// Instances that may have a decode run (checked before each event; stale entries drop).
    with_runs: Vec<usize>,
    /// Conversations in start order, and how many of them have been queued (with a feed: empty,
    /// the order being the feed's).
    start_order: Vec<u32>,
    starts_queued: usize,
    /// Where conversations come from as they start ([`Simulation::fed`]); `None` when `convs`
    /// holds them all from the outset.
    feed: Option<Box<dyn FnMut() -> Option<TimedConversation> + 'a>>,
    /// Request slots free for reuse (their records were emitted).
    free_requests: Vec<usize>,
    /// Per conversation: finished (no turn in flight, none to come).
    conv_done: Vec<bool>,
    /// Conversations whose records were emitted: `0..next_record_conv`.
    next_record_conv: usize,
    /// Records emitted, when no sink takes them.
    records: Vec<RequestRecord>,
    /// Where records go as they are emitted, in (conversation, turn) order.
    record_sink: Option<Box<dyn FnMut(RequestRecord) + 'a>>,
    /// Who takes the per-conversation arrays at the end instead of this thread freeing them
    /// ([`Simulation::with_leftovers_to`]).
    leftovers_to: Option<Box<dyn FnOnce(Leftovers) + 'a>>,
}

/// The per-conversation arrays a finished run leaves (its owned workload, when fed, and each
/// conversation's state), for someone else to free: for a fed run of Vidur's 10,000
/// conversations, freeing them took ≈ 2% of the process's CPU samples (`perf record`, 10 runs,
/// 2026-12-07; a shared-handle release per conversation turn list), on the run's thread before
/// its results could go on. Dropping it frees them.
pub struct Leftovers {
    _convs: Vec<TimedConversation>,
    _conv_state: Vec<ConvState>,
    _conv_done: Vec<bool>,
}

impl<'a> Simulation<'a> {
    /// A simulation ready to run `convs` under `cfg`.
    ///
    /// # Panics
    /// If the policy configuration is invalid (validated with the scenario first).
    /// `convs` may be owned (a `Vec`) or borrowed (a slice shared by several simulations).
    pub fn new(
        cfg: SimConfig,
        cost: &'a dyn CostModel,
        convs: impl Into<std::borrow::Cow<'a, [TimedConversation]>>,
    ) -> Self {
        let convs = convs.into();
        cfg.router.validate().expect("router validated with the scenario");
        cfg.router
            .check_on(&cfg.shape)
            .expect("router and cluster validated with the scenario");
        let (p, d) = (cfg.shape.prefill, cfg.shape.decode_side());
        let mut instances = Vec::new();
        for i in 0..p {
            instances.push(Instance::new(format!("P{i}"), Role::Prefill, cfg.limits));
        }
        // Decode-side instances: the replicas first (R0, R1, …), then D and pD (D0, D1, …).
        let r = cfg.shape.replica;
        for i in 0..r {
            instances.push(Instance::new(format!("R{i}"), Role::Mixed, cfg.limits));
        }
        for i in 0..d - r {
            instances.push(Instance::new(format!("D{i}"), Role::Decode, cfg.limits));
        }
        let admit_us = SimDuration::from_ms_f64(cfg.engine_admit_ms).0;
        for inst in &mut instances {
            inst.admit_us = admit_us;
        }
        let links = (0..p)
            .map(|_| KvLink::new(cfg.link_bandwidth_gbps, cfg.link_latency_ms))
            .collect();
        // One initial key per conversation start ([`Simulation::queue_next_start`]).
        let mut queue = EventQueue::new();
        queue.reserve_initial(convs.len() as u64);
        assert!(convs.len() <= u32::MAX as usize, "at most 2^32 conversations");
        let mut start_order: Vec<u32> = (0..convs.len() as u32).collect();
        start_order.sort_by_key(|&c| (convs[c as usize].start_at, c));
        let conv_state = convs
            .iter()
            .enumerate()
            .map(|(c, _)| {
                let (decode_inst, prefill_inst) = hash_pin(splitmix64(salted(c as u64, cfg.routing_seed)), p, d);
                ConvState::new(decode_inst, prefill_inst)
            })
            .collect();
        let n = instances.len();
        let n_convs = convs.len();
        let stream_chunk_us = SimDuration::from_ms_f64(cfg.stream_ms_per_chunk).0;
        let kv_load_us = SimDuration::from_ms_f64(cfg.kv_load_ms).0;
        // Every API-server service is 0 ms (request handling's share is at most the overhead,
        // D's handoff share is its own key), so no server is ever free later than now.
        let instant_request_handling =
            cfg.request_overhead_ms == 0.0 && cfg.prompt_ms_per_token == 0.0 && cfg.pd_handoff_d_service_ms == 0.0;
        let mut sim = Simulation {
            policy_name: cfg.name.as_str().into(),
            instance_names: instances.iter().map(|i| i.name.as_str().into()).collect(),
            taken_id: "".into(),
            policy: cfg.router.build(),
            cfg,
            costs: vec![cost; n],
            queue,
            now: SimTime::ZERO,
            instances,
            links,
            num_prefill: p as usize,
            convs,
            conv_state,
            requests: Vec::new(),
            dirty: vec![false; n],
            num_events: 0,
            frontend_free_at: vec![SimTime::ZERO; n],
            local_backlog_tokens: vec![0; n],
            handoff_free_at: vec![SimTime::ZERO; n],
            in_flight: 0,
            connection_waiters: Default::default(),
            active_convs: vec![0; n],
            timeline: None,
            stream_free_at: vec![SimTime::ZERO; n],
            run_stream_base: vec![SimTime::ZERO; n],
            stream_chunk_us,
            instant_request_handling,
            kv_load_us: vec![kv_load_us; n],
            seq_events: Vec::new(),
            with_runs: Vec::new(),
            starts_queued: 0,
            start_order,
            free_requests: Vec::new(),
            conv_done: vec![false; n_convs],
            next_record_conv: 0,
            records: Vec::new(),
            record_sink: None,
            leftovers_to: None,
            feed: None,
        };
        sim.queue_next_start();
        sim
    }

    /// A simulation ready to run, under `cfg`, the conversations `feed` gives (room made for
    /// `expected` of them), in the order it gives them (their starts must not decrease): each is
    /// pulled when the one before it starts,
    /// so a run can begin while its workload is still being read. `feed` returning `None` ends
    /// the workload. Every output is the same as [`Simulation::new`]'s on the conversations fed,
    /// in that order: each start keeps the index it would have had there (the keys reserved for
    /// initial pushes are the most conversations a run takes, 2³², rather than their number, an
    /// offset common to every later push), and each conversation's pinning is drawn from its
    /// index as there.
    ///
    /// # Panics
    /// As [`Simulation::new`]; and, while running, if a start fed is earlier than the one before
    /// it.
    pub fn fed(
        cfg: SimConfig,
        cost: &'a dyn CostModel,
        expected: usize,
        feed: impl FnMut() -> Option<TimedConversation> + 'a,
    ) -> Self {
        let room = expected.min(workload::MAX_RESERVED_CONVERSATIONS);
        // Nothing is queued yet (no conversation), so the reservation can be made anew.
        let mut sim = Simulation::new(cfg, cost, Vec::with_capacity(room));
        sim.conv_state.reserve(room);
        sim.conv_done.reserve(room);
        sim.queue.reserve_initial(1 << 32);
        sim.feed = Some(Box::new(feed));
        sim.queue_next_start();
        sim
    }

    /// The spare capacity of the arrays a fed run fills as it goes (its conversations, their
    /// states, whether each is done; its timeline's samples), for
    /// [`crate::prefault::populate_in_background`].
    pub(crate) fn spare_spans(&self) -> Vec<crate::prefault::Span> {
        use crate::prefault::Span;
        let mut spans = vec![Span::spare(&self.conv_state), Span::spare(&self.conv_done)];
        if let Some(tl) = &self.timeline {
            spans.push(Span::spare(&tl.raw));
        }
        // A fed run owns its conversations (a borrowed workload is complete: no spare room).
        if let std::borrow::Cow::Owned(convs) = &self.convs {
            spans.push(Span::spare(convs));
        }
        spans
    }

    /// Takes the feed's next conversation into the workload: false when the feed has ended (or
    /// there is none).
    fn pull_conversation(&mut self) -> bool {
        let Some(conv) = self.feed.as_mut().and_then(|f| f()) else {
            return false;
        };
        let c = self.convs.len();
        assert!(c < 1 << 32, "at most 2^32 conversations");
        if let Some(prev) = self.convs.last() {
            assert!(
                prev.start_at <= conv.start_at,
                "conversation {c} fed out of start order"
            );
        }
        let (p, d) = (self.cfg.shape.prefill, self.cfg.shape.decode_side());
        let (decode_inst, prefill_inst) = hash_pin(splitmix64(salted(c as u64, self.cfg.routing_seed)), p, d);
        self.conv_state.push(ConvState::new(decode_inst, prefill_inst));
        self.conv_done.push(false);
        self.convs.to_mut().push(conv);
        true
    }

    /// Queues the start of the conversation after the ones queued so far (in start order, or
    /// the feed's next), with the key it would have had pushed at time zero; nothing once every
    /// conversation is queued. Each start is queued when the one before it is handled, so the
    /// queue holds the events in flight, not the whole workload.
    fn queue_next_start(&mut self) {
        let next = if self.feed.is_none() {
            self.start_order.get(self.starts_queued).map(|&c| c as usize)
        } else {
            (self.starts_queued < self.convs.len() || self.pull_conversation()).then_some(self.starts_queued)
        };
        if let Some(c) = next {
            self.queue
                .push_initial(self.convs[c].start_at, c as u64, Event::ConversationStart { conv: c });
            self.starts_queued += 1;
        }
    }

    /// Runs instances `range` (numbered P, R, D, pD: one pool of the cluster) on their own GPU:
    /// iteration times from `cost`, engine limits (KV capacity) `limits`. Heterogeneous clusters
    /// (prefill on one GPU type, decode on another) are built this way.
    ///
    /// # Panics
    /// If `range` is not within the cluster, or the run has started.
    pub fn with_pool(mut self, range: std::ops::Range<usize>, cost: &'a dyn CostModel, limits: EngineLimits) -> Self {
        assert!(range.end <= self.instances.len(), "pool {range:?} outside the cluster");
        for i in range {
            assert!(self.instances[i].is_idle_and_empty(), "pools are set before the run");
            self.costs[i] = cost;
            self.instances[i].limits = limits;
        }
        self
    }

    /// Instances `range` (a pool) load each received request's KV in `kv_load_ms` instead of
    /// [`SimConfig::kv_load_ms`] \[ms\] ([`crate::cluster::PoolSpec::kv_load_ms`]).
    ///
    /// # Panics
    /// If `range` leaves the cluster, an instance has started, or the time is not finite and ≥ 0
    /// (validated with the scenario).
    pub fn with_kv_load(mut self, range: std::ops::Range<usize>, kv_load_ms: f64) -> Self {
        assert!(range.end <= self.instances.len(), "pool {range:?} outside the cluster");
        assert!(
            kv_load_ms.is_finite() && kv_load_ms >= 0.0,
            "KV load {kv_load_ms} ms is not a time"
        );
        let us = SimDuration::from_ms_f64(kv_load_ms).0;
        for i in range {
            assert!(self.instances[i].is_idle_and_empty(), "pools are set before the run");
            self.kv_load_us[i] = us;
        }
        self
    }

    /// Also records every instance's queue, running batch, KV usage and busy fraction at
    /// multiples of `interval_s` (the interval doubles, and every other point is dropped, when a
    /// grid would exceed [`MAX_TIMELINE_POINTS`] points).
    ///
    /// # Panics
    /// If `interval_s` is not > 0 (validated with the scenario).
    pub fn with_timeline(mut self, interval_s: f64) -> Self {
        let interval = SimDuration::from_secs_f64(interval_s);
        assert!(interval.0 > 0, "timeline interval must be > 0");
        // Room for the most samples it keeps (a grid point past the thinning threshold), up to
        // [`MAX_RESERVED_TIMELINE_SAMPLES`]: they then never move as they grow, and a fed run's
        // helper can fault their pages in ahead ([`Simulation::spare_spans`]). Vidur's run's
        // simulating thread took ≈ 57 of its ≈ 155 page faults growing them by doubling.
        let most = (MAX_TIMELINE_POINTS + 1) * self.instances.len();
        self.timeline = Some(Timeline {
            interval,
            next: SimTime::ZERO + interval,
            raw: Vec::with_capacity(most.min(MAX_RESERVED_TIMELINE_SAMPLES)),
        });
        self
    }

    /// Samples the timeline at every grid point before `until` (strictly: the state then is the
    /// state after every event up to the grid point).
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn sample_timeline(&mut self, until: SimTime, inclusive: bool) {
        loop {
            let Some(tl) = self.timeline.as_ref() else {
                return;
            };
            if !(tl.next < until || (inclusive && tl.next == until)) {
                return;
            }
            let g = tl.next;
            // The state after every event up to g, and the scheduling passes at those times.
            self.advance_runs(g, |end: EventKey| end.at <= g, |step_end| step_end <= g);
            let tl = self.timeline.as_mut().expect("checked");
            for (k, i) in self.instances.iter().enumerate() {
                tl.raw.push((
                    g,
                    self.instance_names[k],
                    i.num_waiting() as u32,
                    i.num_running() as u32,
                    i.used_blocks(),
                    i.busy_time_until(g),
                ));
            }
            tl.next = g + tl.interval;
            if tl.raw.len() > MAX_TIMELINE_POINTS * self.instances.len() {
                // Keep the points at even multiples of the interval, then double it.
                let two = SimDuration(tl.interval.0 * 2);
                tl.raw.retain(|r| r.0 .0 % two.0 == 0);
                tl.interval = two;
                tl.next = SimTime((g.0 / two.0 + 1) * two.0);
            }
        }
    }

    /// Current simulated time.
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Instances (P first, then D/R).
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Handles the next event (and, if it was the last of its time, the scheduling pass).
    /// Returns the event, or `None` when the simulation is over.
    pub fn step(&mut self) -> Option<(SimTime, Event)> {
        let (key, ev) = self.queue.pop_keyed()?;
        let at = key.at;
        assert!(at >= self.now, "time went backwards: {at} < {}", self.now);
        self.sample_timeline(at, false);
        self.now = at;
        self.num_events += 1;
        // Decode runs catch up with every step end that comes before this event.
        self.advance_runs(at, |end: EventKey| end < key, |step_end| step_end < at);
        self.handle(ev);
        if self.queue.peek_time() != Some(self.now) {
            self.schedule_pass();
        }
        Some((at, ev))
    }

    /// Runs to the end and returns the records.
    ///
    /// # Panics
    /// If a request never completes (an invariant violation).
    pub fn run(mut self) -> SimResult {
        while self.step().is_some() {}
        self.finish()
    }

    fn mark(&mut self, inst: usize) {
        self.dirty[inst] = true;
    }

    /// Applies to every instance's decode run the step ends that `before` (given the key the
    /// step-by-step path would have given that end's event) says come first, and starts the steps
    /// after the ends that `started` (given the end's time) says the scheduling pass has reached.
    /// `before` holds for every end before `bound` and fails for every end after it
    /// ([`instance::DecodeRun::last_finished_before`]).
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn advance_runs(&mut self, bound: SimTime, before: impl Fn(EventKey) -> bool, started: impl Fn(SimTime) -> bool) {
        let mut k = 0;
        while k < self.with_runs.len() {
            let i = self.with_runs[k];
            let inst = &mut self.instances[i];
            let Some(run) = inst.run() else {
                // Its run ended (or was cut short) since.
                self.with_runs.swap_remove(k);
                continue;
            };
            k += 1;
            let before_event = |end, step_start| before(EventKey::step_end(end, step_start, i));
            if run.settled(before_event) {
                continue;
            }
            let (finish, finish_end) = run.last_finished_before(bound, before_event);
            let start = if finish > 0 && !started(finish_end) {
                finish
            } else {
                finish + 1
            };
            if (finish, start) != (run.finished, run.started) {
                inst.advance_run(finish, finish_end, start);
            }
        }
    }

    /// Advances instance `inst`'s API server over the chunks of the steps its decode run has
    /// finished ([`SimConfig::stream_ms_per_chunk`]; nothing when it is 0 or no step has ended).
    fn stream_run_steps(&mut self, inst: usize) {
        if self.stream_chunk_us == 0 {
            return;
        }
        if let Some(run) = self.instances[inst].run().filter(|r| r.finished > 0) {
            self.stream_free_at[inst] =
                run.stream_free_after(self.run_stream_base[inst], run.finished, self.stream_chunk_us);
        }
    }

    /// When the client sees the tokens of the step of instance `inst` that ended now, whose
    /// `chunks` outputs its API server sends after those queued before them (now when streaming
    /// costs nothing).
    fn stream_step(&mut self, inst: usize, chunks: u64) -> SimTime {
        if self.stream_chunk_us == 0 {
            return self.now;
        }
        let free = &mut self.stream_free_at[inst];
        *free = SimTime((*free).max(self.now).0 + chunks * self.stream_chunk_us);
        *free
    }

    /// Ends instance `inst`'s decode run before something changes it (a request enqueued, a
    /// shared prefix made resident): from the step in flight on it continues step by step.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn interrupt_run(&mut self, inst: usize) {
        let Some(run) = self.instances[inst].run() else {
            return;
        };
        let run_end = EventKey::step_end(run.end(run.len), run.step_start(run.len), inst);
        self.stream_run_steps(inst);
        match self.instances[inst].end_run() {
            RunEnd::Unchanged => {}
            end => {
                // The run's end event goes (its steps are rescheduled one by one).
                let (key, _) = self
                    .queue
                    .cancel_scheduled(inst)
                    .expect("a decode run's end is pending");
                assert_eq!(
                    key, run_end,
                    "{}: the pending end is the run's",
                    self.instances[inst].name
                );
                match end {
                    RunEnd::StepInFlight { at, pushed_at } => {
                        self.queue.push_scheduled(at, pushed_at, inst, Event::StepDone { inst });
                    }
                    _ => self.mark(inst),
                }
            }
        }
    }

    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn schedule_pass(&mut self) {
        for i in 0..self.instances.len() {
            if !self.dirty[i] {
                continue;
            }
            self.dirty[i] = false;
            if let Some(end) = self.instances[i].try_start(self.now, self.costs[i]) {
                assert!(end > self.now, "{}: an iteration of zero time", self.instances[i].name);
                let run_end = if self.cfg.decode_runs {
                    self.instances[i].plan_decode_run(self.now, self.costs[i], MAX_DECODE_RUN_STEPS)
                } else {
                    None
                };
                match run_end {
                    Some(run_end) => {
                        if !self.with_runs.contains(&i) {
                            self.with_runs.push(i);
                        }
                        self.run_stream_base[i] = self.stream_free_at[i];
                        let run = self.instances[i].run().expect("just planned");
                        let pushed_at = run.step_start(run.len);
                        self.queue
                            .push_scheduled(run_end, pushed_at, i, Event::StepDone { inst: i });
                    }
                    None => self.queue.push_scheduled(end, self.now, i, Event::StepDone { inst: i }),
                }
            }
            for a in self.instances[i].drain_admissions() {
                let Admission {
                    req,
                    queue_delay,
                    num_cached_tokens,
                    num_transferred_tokens,
                } = a;
                let r = &mut self.requests[req];
                r.queue_delay = r.queue_delay + queue_delay;
                // The first instance's hit (P's on a split route) is the request's.
                r.num_cached_tokens.get_or_insert(num_cached_tokens);
                r.num_transferred_tokens += num_transferred_tokens;
            }
        }
    }

    /// Whether the router fails to recognise turn `turn` (≥ 2) of `conv`: a fixed hash of the pair
    /// compared with [`SimConfig::affinity_miss_rate`].
    fn misses_affinity(&self, conv: usize, turn: usize) -> bool {
        if self.cfg.affinity_miss_rate <= 0.0 {
            return false;
        }
        keyed_uniform(0xAFF1_0000_0000_0000, self.cfg.routing_seed, conv, turn) < self.cfg.affinity_miss_rate
    }

    /// Whether turn `turn` (≥ 2) of `conv`, sent the moment its previous turn ended, loses that
    /// turn's connection to a waiting request ([`SimConfig::client_requeue_rate`]): a fixed hash
    /// of the pair, and only while some request waits for a connection.
    fn requeues(&self, conv: usize, turn: usize) -> bool {
        if self.cfg.client_requeue_rate <= 0.0 || self.connection_waiters.is_empty() {
            return false;
        }
        keyed_uniform(0x5EC0_0000_0000_0000, self.cfg.routing_seed, conv, turn) < self.cfg.client_requeue_rate
    }

    /// The decode-side instance with the fewest active conversations (lowest index on ties).
    fn least_loaded_decode(&self) -> usize {
        (self.num_prefill..self.instances.len())
            .min_by_key(|&i| (self.active_convs[i], i))
            .expect("≥ 1 decode instance")
    }

    /// Pins the conversation of request `req` (turn `turn`) anew, as the router does for a
    /// conversation it sees for the first time: a fresh hash, or the least-loaded instance.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn repin(&mut self, req: usize) {
        let (conv, turn, old) = {
            let r = &self.requests[req];
            (r.conv, r.turn, r.decode_inst)
        };
        let (p, d) = (self.cfg.shape.prefill, self.cfg.shape.decode_side());
        self.active_convs[old] -= 1;
        let (mut decode_inst, prefill_inst) = hash_pin(
            splitmix64(splitmix64(salted(conv as u64, self.cfg.routing_seed)) ^ ((turn as u64) << 40)),
            p,
            d,
        );
        if self.cfg.pinning == Pinning::LeastLoaded {
            decode_inst = self.least_loaded_decode();
        }
        self.active_convs[decode_inst] += 1;
        self.conv_state[conv].pin(decode_inst, prefill_inst);
        self.requests[req].decode_inst = decode_inst;
    }

    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn new_request(&mut self, conv: usize) -> usize {
        let tpl = self.cfg.template_tokens_per_message;
        let st = &mut self.conv_state[conv];
        let turn = self.convs[conv].turns[st.next_turn as usize];
        let user = turn.user_tokens + tpl;
        let req = Request {
            conv,
            turn: st.next_turn as usize + 1,
            num_context_tokens: st.context_tokens,
            num_user_tokens: user,
            num_prompt_tokens: st.context_tokens + user,
            num_output_tokens: turn.assistant_tokens,
            route: RouteKind::Local,
            prefill_inst: None,
            decode_inst: st.decode_inst(),
            arrived_at: self.now,
            first_token_at: None,
            backlog_tokens: 0,
            completed_at: None,
            prefill_done_at: None,
            kv_ready_at: None,
            kv_bytes: 0,
            queue_delay: SimDuration::ZERO,
            num_cached_tokens: None,
            num_transferred_tokens: 0,
            timed_out: false,
            rejected: false,
            next_in_conv: NO_REQUEST,
        };
        st.context_tokens += user + turn.assistant_tokens + tpl;
        st.next_turn += 1;
        let id = match self.free_requests.pop() {
            Some(id) => {
                self.requests[id] = req;
                id
            }
            None => {
                self.requests.push(req);
                self.requests.len() - 1
            }
        };
        let id32 = u32::try_from(id).expect("fewer than 2^32 − 1 requests in flight");
        assert_ne!(id32, NO_REQUEST, "request slot {id} is the chain's end marker");
        let st = &mut self.conv_state[conv];
        match st.last_request {
            NO_REQUEST => st.first_request = id32,
            last => self.requests[last as usize].next_in_conv = id32,
        }
        st.last_request = id32;
        id
    }

    /// Conversation `conv` has finished: emits the records of every finished conversation up to
    /// the first unfinished one, in (conversation, turn) order, and frees their request slots.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn conversation_done(&mut self, conv: usize) {
        assert!(!self.conv_done[conv], "conversation {conv} finished twice");
        self.conv_done[conv] = true;
        while self.next_record_conv < self.conv_done.len() && self.conv_done[self.next_record_conv] {
            let c = self.next_record_conv;
            let mut id = std::mem::replace(&mut self.conv_state[c].first_request, NO_REQUEST);
            self.conv_state[c].last_request = NO_REQUEST;
            while id != NO_REQUEST {
                let last = self.requests[id as usize].next_in_conv == NO_REQUEST;
                let conversation_id = self.record_conversation_id(c, last);
                let record = self.record_of(id as usize, conversation_id);
                match self.record_sink.as_mut() {
                    Some(sink) => sink(record),
                    None => self.records.push(record),
                }
                self.free_requests.push(id as usize);
                id = self.requests[id as usize].next_in_conv;
            }
            self.next_record_conv += 1;
        }
    }

    /// The id a record of conversation `conv` carries: a copy of the conversation's (a count up),
    /// or, for its `last` record when the workload is the simulation's own (a fed run's), the id
    /// itself, nothing reading it afterwards. A fed run's records go to a thread that formats and
    /// drops them: an id counted up here and down there would move its count's cache line between
    /// cores for every record (`perf annotate`, 2026-12-07: `record_of`, ≈ 6% of Vidur's run's
    /// thread, spent 55% of its cycles on the id's count and 20% on the names').
    fn record_conversation_id(&mut self, conv: usize, last: bool) -> std::sync::Arc<str> {
        match &mut self.convs {
            std::borrow::Cow::Owned(convs) if last => std::mem::replace(&mut convs[conv].id, self.taken_id.clone()),
            convs => convs[conv].id.clone(),
        }
    }

    /// Sends each request's record to `sink` as soon as its conversation and every earlier one
    /// have finished, in (conversation, turn) order, instead of returning them in
    /// [`SimResult::records`] (left empty): memory holds the requests in flight, not the run.
    pub fn with_record_sink(mut self, sink: impl FnMut(RequestRecord) + 'a) -> Self {
        self.record_sink = Some(Box::new(sink));
        self
    }

    /// Hands the run's per-conversation arrays ([`Leftovers`]) to `take` once the run is over,
    /// instead of freeing them before [`Simulation::run`] returns: the caller frees them where
    /// it costs nothing (another thread, after the results went on). A borrowed workload stays
    /// its owner's: the leftovers then hold no conversation.
    pub fn with_leftovers_to(mut self, take: impl FnOnce(Leftovers) + 'a) -> Self {
        self.leftovers_to = Some(Box::new(take));
        self
    }

    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn seq_for(&self, req: usize, prefill_only: bool, external: u32) -> Seq {
        let r = &self.requests[req];
        let mut handoff_us = if prefill_only && self.handoff_in_engine() {
            SimDuration::from_ms_f64(
                self.cfg.pd_handoff_p_service_ms * self.service_jitter(req, ServiceComponent::PrefillHandoff),
            )
            .0
        } else {
            0
        };
        if prefill_only && self.cfg.prefill_waits_for_send {
            // The send of the bytes the caller priced (`Request::kv_bytes`).
            let p = r.prefill_inst.expect("prefill-only sequence on a split route");
            handoff_us += self.links[p].transfer_time(r.kv_bytes).0;
        }
        let kv_load_us = if !prefill_only && external > 0 {
            self.kv_load_us[r.decode_inst]
        } else {
            0
        };
        Seq {
            handoff_us,
            kv_load_us,
            req,
            conv: r.conv,
            prefill_only,
            num_prompt_tokens: r.num_prompt_tokens,
            num_output_tokens: if prefill_only { 0 } else { r.num_output_tokens },
            num_external_tokens: external,
            shared_prefix: self.convs[r.conv].shared_prefix,
            num_shared_hit_tokens: 0,
            num_recompute_tokens: 0,
            num_computed_tokens: 0,
            num_generated: 0,
            reserved_blocks: 0,
            enqueued_at: self.now,
            admitted_at: None,
            chunk: 0,
        }
    }

    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn handle(&mut self, ev: Event) {
        match ev {
            Event::ConversationStart { conv } => {
                self.queue_next_start();
                if self.cfg.pinning == Pinning::LeastLoaded {
                    let (d, p) = (self.least_loaded_decode(), self.conv_state[conv].prefill_inst());
                    self.conv_state[conv].pin(d, p);
                }
                let d = self.conv_state[conv].decode_inst();
                self.active_convs[d] += 1;
                if let Some((key, tokens)) = self.convs[conv].shared_prefix {
                    self.interrupt_run(d);
                    self.instances[d].warm_shared(key, tokens);
                    if let Some(p) = self.conv_state[conv].prefill_inst() {
                        self.interrupt_run(p);
                        self.instances[p].warm_shared(key, tokens);
                    }
                }
                let req = self.new_request(conv);
                self.on_client_send(req);
            }
            Event::Arrival { req } => self.on_client_send(req),
            Event::Enqueue { inst, req } => {
                let r = &self.requests[req];
                let on_prefill = self.instances[inst].role == Role::Prefill;
                let external = if !on_prefill && r.route == RouteKind::Split {
                    r.num_prompt_tokens
                } else {
                    0
                };
                if on_prefill && self.cfg.prefill_waits_for_send {
                    // What P's step will wait to send (its Seq::handoff_us), priced now.
                    self.requests[req].kv_bytes = self.split_kv_bytes(req);
                }
                let seq = self.seq_for(req, on_prefill, external);
                self.interrupt_run(inst);
                self.instances[inst].enqueue(seq);
                self.mark(inst);
            }
            Event::StepDone { inst } => {
                if self.instances[inst].run().is_some() {
                    // The run's earlier steps streamed their chunks; the last is this event's.
                    self.stream_run_steps(inst);
                }
                let mut events = std::mem::take(&mut self.seq_events);
                events.clear();
                let chunks = self.instances[inst].finish_step(self.now, &mut events);
                let delivered = self.stream_step(inst, chunks);
                self.mark(inst);
                for e in events.drain(..) {
                    self.on_seq_event(e, delivered);
                }
                self.seq_events = events;
            }
            Event::StreamEnd { req } => self.turn_done(req),
            Event::KvTransferDone { req } => {
                let r = &mut self.requests[req];
                r.kv_ready_at = Some(self.now);
                let p = r.prefill_inst.expect("KV transfers start on P");
                let at = self.p_handoff(p, req);
                self.queue.push(at, Event::HandoffAtDecode { req });
            }
            Event::HandoffAtDecode { req } => {
                let inst = self.requests[req].decode_inst;
                let service =
                    self.cfg.pd_handoff_d_service_ms * self.service_jitter(req, ServiceComponent::DecodeHandoff);
                // The per-prompt-token latency was paid once, at the request's entry: the 2-GPU
                // re-run's PD − direct turn-2 TTFT gap stays 41–50 ms from 198- to 5,347-token
                // prompts (docs/validation.md), so D's hop adds none.
                let at = self.serve_at(inst, service);
                self.queue.push(at, Event::Enqueue { inst, req });
            }
        }
    }

    /// When a request that arrives now at instance `inst` reaches its queue: the serialized
    /// `request_service_ms` in the instance's API-server queue, then the rest of
    /// `request_overhead_ms` as latency (all of it a pure delay when overheads are not serialized).
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn request_handling(&mut self, inst: usize, req: usize) -> SimTime {
        if self.instant_request_handling {
            // What the general path gives: a 0 ms delay, or a 0 ms service at a server that is
            // never free later than now (its every service is 0 ms).
            debug_assert!(self.frontend_free_at[inst] <= self.now);
            return self.now;
        }
        let total = self.cfg.request_overhead_ms;
        let per_prompt = self.prompt_handling(req);
        if !self.cfg.serialized_overheads {
            return self.now + SimDuration::from_ms_f64(total) + per_prompt;
        }
        let service = self.cfg.request_service_ms.clamp(0.0, total);
        let drawn = service * self.service_jitter(req, ServiceComponent::RequestHandling);
        let served = self.serve_at(inst, drawn);
        served + SimDuration::from_ms_f64(total - service) + per_prompt
    }

    /// Factor of request `req`'s serialized overhead `component` ([`service_jitter`]).
    fn service_jitter(&self, req: usize, component: ServiceComponent) -> f64 {
        let r = &self.requests[req];
        service_jitter(
            self.cfg.overhead_service_cv,
            self.cfg.routing_seed,
            r.conv,
            r.turn,
            component,
        )
    }

    /// KV bytes a split request sends from P to its D: the whole prompt's, or (incremental
    /// transfer) what D's prefix cache lacks now \[B\].
    fn split_kv_bytes(&self, req: usize) -> u64 {
        let r = &self.requests[req];
        let tokens = match self.cfg.transfer {
            TransferMode::Full => r.num_prompt_tokens,
            TransferMode::Incremental => {
                r.num_prompt_tokens
                    - self.instances[r.decode_inst]
                        .cached_tokens(r.conv)
                        .min(r.num_prompt_tokens)
            }
        };
        tokens as u64 * self.cfg.kv_bytes_per_token
    }

    /// The request's per-prompt-token latency at its entry.
    fn prompt_handling(&self, req: usize) -> SimDuration {
        SimDuration::from_ms_f64(self.cfg.prompt_ms_per_token * self.requests[req].num_prompt_tokens as f64)
    }

    /// Whether P's share of the handoff is engine time on P (its prompts' [`Seq::handoff_us`]).
    fn handoff_in_engine(&self) -> bool {
        self.cfg.serialized_overheads && self.cfg.pd_handoff_queue == HandoffQueue::PrefillEngine
    }

    /// The handoff queue P instance `p`'s share waits in when it is not engine time: its own,
    /// or the cluster's one.
    fn handoff_queue(&self, p: usize) -> usize {
        match self.cfg.pd_handoff_queue {
            HandoffQueue::PerPrefill | HandoffQueue::PrefillEngine => p,
            HandoffQueue::Cluster => 0,
        }
    }

    /// When a split request whose KV arrived now (from P instance `p`) reaches D's API server:
    /// P's serialized share (one handoff at a time per P or per cluster when overheads are
    /// serialized; already spent in P's step when P's engine does it), then the handoff's
    /// latency (`pd_handoff_ms` less both serialized shares).
    fn p_handoff(&mut self, p: usize, req: usize) -> SimTime {
        let c = &self.cfg;
        let latency = SimDuration::from_ms_f64(
            (c.pd_handoff_ms - c.pd_handoff_p_service_ms - c.pd_handoff_d_service_ms).max(0.0),
        );
        if self.handoff_in_engine() {
            return self.now + latency;
        }
        let service = self.cfg.pd_handoff_p_service_ms * self.service_jitter(req, ServiceComponent::PrefillHandoff);
        let queue = self.handoff_queue(p);
        fifo_done(
            self.cfg
                .serialized_overheads
                .then_some(&mut self.handoff_free_at[queue]),
            self.now,
            service,
        ) + latency
    }

    /// The predicted (local, remote) cost of turn `req` \[ms\]: each route's TTFT plus `weight` ×
    /// the decodes running on its D × the stall the route adds to each, from the cost model and
    /// the live state (`None` without a P for the conversation). Local: D computes the tokens it
    /// does not cache after the prefill backlog already queued on it, in chunks of the token
    /// budget its decodes leave; each chunk's time over a decode-only step stalls every decode.
    /// Remote: P computes what it does not cache after its queued prefill work, the KV waits for
    /// and crosses the link, the handoff waits for P's handoff queue, and D computes the last
    /// prompt token in one step with its decodes (that step's extra is the stall). The request
    /// overhead, paid on both routes, is left out. The same closed form as `routing_map::cell`,
    /// with the queues, batch and caches of the moment.
    fn predicted_costs_ms(&self, req: usize, weight: f64) -> Option<(f64, f64)> {
        let r = &self.requests[req];
        let p = self.conv_state[r.conv].prefill_inst()?;
        let (d, prompt) = (r.decode_inst, r.num_prompt_tokens);
        let di = &self.instances[d];
        let (b, ctx) = di.decoding_shape();
        let step_on = |inst: usize, decodes: u32, chunk: Option<PrefillPart>| {
            let shape = BatchShape {
                prefill: chunk.into_iter().collect(),
                num_decode_seqs: decodes,
                decode_context_tokens: if decodes > 0 { ctx } else { 0 },
            };
            if shape.is_empty() {
                0.0
            } else {
                self.costs[inst].step_time(&shape).as_ms()
            }
        };
        // (Σ step time, Σ extra over a decode-only step of the last `own` tokens) of computing
        // `ahead` queued tokens then `own` on `cached`, with `decodes` sharing each step.
        let chunks = |inst: usize, ahead: u64, own: u32, cached: u32, decodes: u32| {
            let budget = self.instances[inst].limits.token_budget;
            let step = |decodes: u32, chunk: Option<PrefillPart>| step_on(inst, decodes, chunk);
            let per = budget.saturating_sub(decodes).max(1) as u64;
            let base = step(decodes, None);
            let (mut t, mut extra, mut done) = (0.0, 0.0, 0u64);
            let total = ahead + own as u64;
            while done < total {
                let n = per.min(total - done);
                let mine = (done + n).saturating_sub(ahead.max(done)).min(n) as u32;
                let chunk = PrefillPart {
                    num_new_tokens: n as u32,
                    num_cached_tokens: if mine > 0 {
                        cached + (done.saturating_sub(ahead)) as u32
                    } else {
                        0
                    },
                };
                let dt = step(decodes, Some(chunk));
                t += dt;
                if mine > 0 {
                    extra += dt - base;
                }
                done += n;
            }
            (t, extra)
        };
        let cached_d = di.cached_tokens(r.conv).min(prompt - 1);
        let (local_ttft, local_stall) = chunks(d, self.local_backlog_tokens[d], prompt - cached_d, cached_d, b);
        // Each engine that takes the request admits it once, in the step that first schedules it.
        let admit_ms = |inst: usize| SimDuration(self.instances[inst].admit_us).as_ms();
        let (local_ttft, local_stall) = (local_ttft + admit_ms(d), local_stall + admit_ms(d));
        let pi = &self.instances[p];
        let cached_p = pi.cached_tokens(r.conv).min(prompt - 1);
        let (p_time, _) = chunks(p, pi.pending_prefill_tokens(), prompt - cached_p, cached_p, 0);
        // The engine time the queued prompts hold P beyond their prefill (their handoffs when P's
        // engine does them, their KV sends when it waits for them; 0 otherwise) comes first too.
        let p_time = p_time + SimDuration(pi.pending_handoff_us()).as_ms() + admit_ms(p);
        let in_engine = self.handoff_in_engine();
        let c = &self.cfg;
        let kv_tokens = match c.transfer {
            TransferMode::Full => prompt,
            TransferMode::Incremental => prompt - cached_d,
        } as u64;
        let link = &self.links[p];
        let ready = self.now + SimDuration::from_ms_f64(p_time);
        let link_wait = link.free_at(ready).since(ready).as_ms();
        let transfer = link.transfer_time(kv_tokens * c.kv_bytes_per_token).as_ms();
        let handoff_wait = if !c.serialized_overheads || in_engine {
            0.0
        } else {
            self.handoff_free_at[self.handoff_queue(p)]
                .max(self.now)
                .since(self.now)
                .as_ms()
        };
        let step = |decodes: u32, chunk: Option<PrefillPart>| step_on(d, decodes, chunk);
        // D's step that computes the last prompt token also loads the received KV, holding its
        // running decodes as long.
        let last = step(
            b,
            Some(PrefillPart {
                num_new_tokens: 1,
                num_cached_tokens: prompt - 1,
            }),
        ) + SimDuration(self.kv_load_us[d]).as_ms()
            + admit_ms(d);
        let remote_stall = last - step(b, None);
        let remote_ttft = p_time + link_wait + transfer + handoff_wait + c.pd_handoff_ms + last;
        let bw = weight * b as f64;
        Some((local_ttft + bw * local_stall, remote_ttft + bw * remote_stall))
    }

    /// When `service_ms` of work arriving now at instance `inst`'s API server is done (FIFO when
    /// overheads are serialized, a pure delay otherwise).
    fn serve_at(&mut self, inst: usize, service_ms: f64) -> SimTime {
        fifo_done(
            self.cfg
                .serialized_overheads
                .then_some(&mut self.frontend_free_at[inst]),
            self.now,
            service_ms,
        )
    }

    /// The client sends a turn: it waits for a pooled connection first.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn on_client_send(&mut self, req: usize) {
        if let Some(limit) = self.cfg.client_max_connections {
            if self.in_flight >= limit {
                self.connection_waiters.push_back(req);
                return;
            }
        }
        self.in_flight += 1;
        self.on_arrival(req);
    }

    /// A finished (or refused) request returns its connection; the oldest waiting turn takes it.
    fn release_connection(&mut self) {
        self.in_flight -= 1;
        if let Some(next) = self.connection_waiters.pop_front() {
            self.in_flight += 1;
            self.on_arrival(next);
        }
    }

    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn on_arrival(&mut self, req: usize) {
        let r = &self.requests[req];
        if self
            .cfg
            .max_model_len
            .is_some_and(|max| r.num_prompt_tokens + r.num_output_tokens > max)
        {
            // The engine refuses it at once (HTTP 400); the client ends the conversation.
            let (conv, inst) = (r.conv, r.decode_inst);
            let r = &mut self.requests[req];
            r.rejected = true;
            r.first_token_at = Some(self.now);
            r.completed_at = Some(self.now);
            r.num_cached_tokens = Some(0);
            self.conv_state[conv].stopped = true;
            self.active_convs[inst] -= 1;
            self.release_connection();
            self.conversation_done(conv);
            return;
        }
        // The router may not recognise a later turn: it pins the conversation anew and routes
        // the turn as a first turn.
        let affinity_miss = r.turn >= 2 && self.misses_affinity(r.conv, r.turn);
        if affinity_miss {
            self.repin(req);
        }
        let r = &self.requests[req];
        let cached = self.instances[r.decode_inst].cached_tokens(r.conv);
        // The pinned instance's role fixes the route on R (whole) and D (via P); the router
        // decides on a pD.
        let route = match self.cfg.shape.role_of(r.decode_inst) {
            PoolRole::Replica => RouteKind::Local,
            PoolRole::Decode => RouteKind::Split,
            PoolRole::DirectDecode => self.policy.route(&RouteRequest {
                turn: if affinity_miss { 1 } else { r.turn },
                num_prompt_tokens: r.num_prompt_tokens,
                num_cached_on_decode: cached,
                decode_instance: r.decode_inst,
                decode_backlog_tokens: self.local_backlog_tokens[r.decode_inst],
                now_ms: self.now.as_ms(),
                predicted_costs_ms: match self.cfg.router.stall_weight() {
                    Some(w) if r.turn >= 2 && !affinity_miss => self.predicted_costs_ms(req, w),
                    _ => None,
                },
            }),
            PoolRole::Prefill => unreachable!("conversations are pinned to R, D or pD instances"),
        };
        let conv = r.conv;
        let first = match route {
            RouteKind::Split if self.cfg.pinning == Pinning::LeastLoaded => (0..self.num_prefill)
                .min_by_key(|&i| (self.instances[i].num_seqs(), i))
                .expect("split routes need a P instance"),
            RouteKind::Split => self.conv_state[conv]
                .prefill_inst()
                .expect("split routes need a P instance"),
            RouteKind::Local => r.decode_inst,
        };
        let r = &mut self.requests[req];
        r.route = route;
        match route {
            RouteKind::Split => r.prefill_inst = Some(first),
            RouteKind::Local => {
                r.backlog_tokens = r.num_prompt_tokens - cached.min(r.num_prompt_tokens);
                self.local_backlog_tokens[first] += r.backlog_tokens as u64;
            }
        }
        let at = self.request_handling(first, req);
        self.queue.push(at, Event::Enqueue { inst: first, req });
    }

    /// What a sequence event of the step that ended now does; its tokens reach the client at
    /// `delivered` (≥ now: [`SimConfig::stream_ms_per_chunk`]).
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn on_seq_event(&mut self, e: SeqEvent, delivered: SimTime) {
        match e {
            SeqEvent::PrefillDone { req } => {
                let p = self.requests[req]
                    .prefill_inst
                    .expect("prefill-only sequence on a split route");
                let (bytes, sent_from, done) = if self.cfg.prefill_waits_for_send {
                    // The step that ended now waited for the send (its Seq::handoff_us), of the
                    // bytes priced when P enqueued the prompt: the record's transfer is the
                    // send's duration, inside the step.
                    let bytes = self.requests[req].kv_bytes;
                    self.links[p].sent_by_engine(bytes);
                    let send = self.links[p].transfer_time(bytes);
                    (bytes, SimTime(self.now.0.saturating_sub(send.0)), self.now)
                } else {
                    let bytes = self.split_kv_bytes(req);
                    (bytes, self.now, self.links[p].submit(self.now, bytes))
                };
                let r = &mut self.requests[req];
                r.prefill_done_at = Some(sent_from);
                r.kv_bytes = bytes;
                self.queue.push(done, Event::KvTransferDone { req });
            }
            SeqEvent::FirstToken { req } => {
                let r = &mut self.requests[req];
                assert!(r.first_token_at.is_none(), "request {req} got two first tokens");
                r.first_token_at = Some(delivered);
                if r.route == RouteKind::Local {
                    let backlog = &mut self.local_backlog_tokens[r.decode_inst];
                    *backlog = backlog
                        .checked_sub(r.backlog_tokens as u64)
                        .expect("local prefill backlog never goes negative");
                }
            }
            SeqEvent::Completed { req } => {
                let r = &mut self.requests[req];
                assert!(r.completed_at.is_none(), "request {req} completed twice");
                r.completed_at = Some(delivered);
                if delivered > self.now {
                    self.queue.push(delivered, Event::StreamEnd { req });
                } else {
                    self.turn_done(req);
                }
            }
        }
    }

    /// The client has a turn's last token (now): it fails if it took too long, and the
    /// conversation ends or sends its next turn.
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn turn_done(&mut self, req: usize) {
        let r = &mut self.requests[req];
        if let Some(t) = self.cfg.request_timeout_s {
            r.timed_out = self.now.since(r.arrived_at) > SimDuration::from_secs_f64(t);
        }
        let (conv, timed_out, inst) = (r.conv, r.timed_out, r.decode_inst);
        let k = self.conv_state[conv].next_turn as usize;
        if timed_out || k == self.convs[conv].turns.len() {
            // A failed turn ends its conversation (the client does not send the next one).
            self.conv_state[conv].stopped = timed_out;
            self.active_convs[inst] -= 1;
            self.release_connection();
            self.conversation_done(conv);
        } else {
            let LaterTurn { think, not_before } = self.convs[conv].later_turns[k - 1];
            // A scheduled send later than the think time waits for it.
            let think = if self.now + think < not_before {
                not_before.since(self.now)
            } else {
                think
            };
            // The next turn is created now (its context is known) and arrives after the think time.
            let next = self.new_request(conv);
            if think == SimDuration::ZERO {
                if self.requeues(conv, k + 1) {
                    // It loses the connection to the oldest waiting request and queues.
                    self.release_connection();
                    self.on_client_send(next);
                } else {
                    // Sent at once, it keeps the connection its previous turn just
                    // released. aiohttp's connector code would queue it behind the pool's
                    // waiters (`connect` waits while any waiter is queued), but the
                    // comprehensive sweep's turn-2 TTFTs stay at tens of ms at loads where
                    // turn 1 waits seconds for a connection; replayed with that FIFO wait
                    // for every turn, PD-vs-PPD winner agreement falls from 144/144 to
                    // 130/144 and the knees from 66 to 64 of 70 (docs/validation.md).
                    self.on_arrival(next);
                }
            } else {
                self.release_connection();
                let at = self.now + think;
                self.requests[next].arrived_at = at;
                self.queue.push(at, Event::Arrival { req: next });
            }
        }
    }

    /// The record of request slot `id`, which has completed, carrying `conversation_id`
    /// ([`Simulation::record_conversation_id`]).
    ///
    /// # Panics
    /// If it never produced a token or never completed (broken invariants).
    #[cfg_attr(feature = "profile-functions", inline(never))]
    fn record_of(&self, id: usize, conversation_id: std::sync::Arc<str>) -> RequestRecord {
        let name = |i: usize| self.instance_names[i];
        let r = &self.requests[id];
        let first = r.first_token_at.unwrap_or_else(|| {
            panic!(
                "request {id} (conversation {}, turn {}) never produced a token",
                r.conv, r.turn
            )
        });
        let done = r.completed_at.unwrap_or_else(|| panic!("request {id} never completed"));
        assert!(
            r.arrived_at <= first && first <= done,
            "request {id}: arrived {} first {} done {}",
            r.arrived_at,
            first,
            done
        );
        let cached = r.num_cached_tokens.expect("admitted requests record their cache hit");
        // Prompt tokens computed on the first instance (on a split route D's 1-token step is
        // an engine detail, not recompute).
        let computed = match (r.rejected, r.route) {
            (true, _) => 0,
            (false, RouteKind::Split) => r.num_prompt_tokens - cached,
            (false, RouteKind::Local) => r.num_prompt_tokens - cached - r.num_transferred_tokens,
        };
        RequestRecord {
            policy: self.policy_name,
            conversation: r.conv,
            conversation_id,
            turn: r.turn,
            route: r.route,
            status: if r.rejected {
                RequestStatus::Rejected
            } else if r.timed_out {
                RequestStatus::Timeout
            } else {
                RequestStatus::Ok
            },
            prefill_instance: r.prefill_inst.map(name),
            decode_instance: name(r.decode_inst),
            arrived_at_ms: r.arrived_at.as_ms(),
            first_token_at_ms: first.as_ms(),
            completed_at_ms: done.as_ms(),
            ttft_ms: first.since(r.arrived_at).as_ms(),
            tpot_ms: (r.num_output_tokens > 1).then(|| done.since(first).as_ms() / (r.num_output_tokens - 1) as f64),
            e2e_ms: done.since(r.arrived_at).as_ms(),
            queue_delay_ms: r.queue_delay.as_ms(),
            kv_transfer_ms: match (r.prefill_done_at, r.kv_ready_at) {
                (Some(a), Some(b)) => b.since(a).as_ms(),
                _ => 0.0,
            },
            kv_transfer_bytes: r.kv_bytes,
            num_context_tokens: r.num_context_tokens,
            num_user_tokens: r.num_user_tokens,
            num_prompt_tokens: r.num_prompt_tokens,
            num_output_tokens: r.num_output_tokens,
            num_cached_tokens: cached,
            num_transferred_tokens: r.num_transferred_tokens,
            num_computed_tokens: computed,
        }
    }

    fn finish(mut self) -> SimResult {
        assert!(
            self.local_backlog_tokens.iter().all(|&b| b == 0),
            "every local request left the prefill backlog with its first token"
        );
        assert_eq!(
            self.next_record_conv,
            self.convs.len(),
            "every conversation finished and emitted its records"
        );
        let records = std::mem::take(&mut self.records);

        for (c, st) in self.conv_state.iter().enumerate() {
            assert!(
                st.stopped || st.next_turn as usize == self.convs[c].turns.len(),
                "conversation {c} did not finish"
            );
        }
        assert!(
            self.connection_waiters.is_empty() && self.in_flight == 0,
            "client connections leaked"
        );
        let makespan = self.now.as_ms().max(1e-9);
        self.sample_timeline(self.now, true);
        let timeline = self.timeline.take().map_or_else(Vec::new, |tl| {
            let mut prev_busy = vec![SimDuration::ZERO; self.instances.len()];
            let mut prev_t = vec![SimTime::ZERO; self.instances.len()];
            let n = self.instances.len();
            assert_eq!(tl.raw.len() % n, 0, "the timeline samples every instance at each point");
            tl.raw
                .into_iter()
                .enumerate()
                .map(|(j, (t, instance, waiting, running, blocks, busy))| {
                    let k = j % n;
                    debug_assert_eq!(instance, self.instance_names[k], "timeline sample {j}'s instance");
                    let span = (t.0 - prev_t[k].0) as f64;
                    let busy_fraction = (busy.0 - prev_busy[k].0) as f64 / span;
                    (prev_t[k], prev_busy[k]) = (t, busy);
                    let i = &self.instances[k];
                    TimelineSample {
                        time_s: t.as_secs(),
                        instance,
                        waiting,
                        running,
                        kv_usage: blocks as f64 / i.limits.capacity_blocks.max(1) as f64,
                        busy_fraction,
                    }
                })
                .collect()
        });
        let modes = self.policy.mode_stats(self.now.as_ms());
        let instances = self
            .instances
            .iter()
            .enumerate()
            .map(|(k, i)| {
                assert!(i.is_idle_and_empty(), "{} still holds work at the end", i.name);
                let (entries, remote_ms) = modes.iter().find(|m| m.0 == k).map_or((0, 0.0), |m| (m.1, m.2));
                InstanceUsage {
                    instance: i.name.clone(),
                    busy_fraction: i.busy_time.as_ms() / makespan,
                    num_iterations: i.num_iterations,
                    num_evicted_tokens: i.cache.num_evicted_tokens,
                    num_preemptions: i.num_preemptions,
                    remote_mode_entries: entries,
                    remote_mode_s: remote_ms / 1e3,
                }
            })
            .collect();
        let result = SimResult {
            records,
            instances,
            mode_switches: modes.iter().map(|m| m.1).sum(),
            num_events: self.num_events,
            request_slots: self.requests.len(),
            timeline,
        };
        if let Some(take) = self.leftovers_to.take() {
            let convs = match std::mem::replace(&mut self.convs, std::borrow::Cow::Borrowed(&[])) {
                std::borrow::Cow::Owned(convs) => convs,
                std::borrow::Cow::Borrowed(_) => Vec::new(),
            };
            take(Leftovers {
                _convs: convs,
                _conv_state: std::mem::take(&mut self.conv_state),
                _conv_done: std::mem::take(&mut self.conv_done),
            });
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost_model::ConstantCostModel;
    use crate::trace::Turn;

    /// The predictive router's configuration for vllm-ppd's 1 P + 1 pD with the shipped model,
    /// `edit` applied.
    fn predictive_1p_1pd(edit: impl FnOnce(&mut SimConfig)) -> SimConfig {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cal = crate::calibrate::model_file::CalibrationFile::load(&root.join("calibration/h100-llama3.1-8b.json"))
            .expect("the shipped model");
        let router = toml::from_str(r#"kind = "predictive""#).expect("a router");
        let shape = crate::cluster::Shape::parse("1P_1pD").expect("a shape");
        let mut cfg = crate::validate::vllm_ppd_config("predictive", router, shape, &cal).expect("known model");
        edit(&mut cfg);
        cfg
    }

    /// A one-turn conversation of `user` → `assistant` tokens starting at 0.
    fn one_turn(id: usize, user: u32, assistant: u32) -> TimedConversation {
        TimedConversation {
            id: format!("c{id}").into(),
            start_at: SimTime::ZERO,
            turns: vec![Turn {
                user_tokens: user,
                assistant_tokens: assistant,
            }]
            .into(),
            later_turns: Box::new([]),
            shared_prefix: None,
        }
    }

    #[test]
    fn the_predictive_router_counts_the_kv_sends_p_will_wait_for_ahead_of_a_turn() {
        // Predictive routing on 1 P + 1 pD with every step 10 ms, P's handoff share in a queue
        // beside its engine and P's engine waiting for its sends. A prompt of 10 tokens queued on
        // P whose send holds P 5 ms more: the turn's remote cost grows by those 5 ms (its 100
        // tokens and the 10 share one step, so P's prefill time does not move).
        let cfg = predictive_1p_1pd(|c| {
            c.pd_handoff_queue = HandoffQueue::PerPrefill;
            c.prefill_waits_for_send = true;
        });
        let cost = ConstantCostModel { step_ms: 10.0 };
        let mut sim = Simulation::new(cfg, &cost, vec![one_turn(0, 100, 3)]);
        let req = sim.new_request(0);
        let (_, before) = sim.predicted_costs_ms(req, 0.0).expect("a P for the conversation");
        sim.instances[0].enqueue(Seq::prefill_only_for_test(usize::MAX, 10, 5_000));
        let (_, after) = sim.predicted_costs_ms(req, 0.0).expect("a P for the conversation");
        assert!((after - before - 5.0).abs() < 1e-9, "{before} → {after}");
    }

    #[test]
    fn the_predictive_router_counts_d_s_kv_load_in_the_remote_ttft_and_stall() {
        // D loads a received request's KV in 7 ms, in the step that computes its last prompt
        // token: the remote route's TTFT grows by 7 ms and, with 2 decodes running on D and a
        // stall weight of 0.5, its cost by 7 × (1 + 0.5 × 2) = 14 ms. The local route is unchanged.
        let costs = |load_ms: f64, weight: f64| {
            let cfg = predictive_1p_1pd(|c| c.kv_load_ms = load_ms);
            let cost = ConstantCostModel { step_ms: 10.0 };
            let convs: Vec<_> = (0..3).map(|i| one_turn(i, 100, 50)).collect();
            let mut sim = Simulation::new(cfg, &cost, convs);
            // Two sequences decoding on the pD (instance 1).
            for conv in 1..3 {
                let r = sim.new_request(conv);
                let seq = sim.seq_for(r, false, 0);
                sim.instances[1].enqueue(seq);
            }
            let end = sim.instances[1].try_start(SimTime::ZERO, &cost).expect("a step");
            sim.instances[1].finish_step(end, &mut Vec::new());
            assert_eq!(sim.instances[1].decoding_shape().0, 2, "two decodes on D");
            let req = sim.new_request(0);
            sim.predicted_costs_ms(req, weight).expect("a P for the conversation")
        };
        let (local0, remote0) = costs(0.0, 0.5);
        let (local7, remote7) = costs(7.0, 0.5);
        assert_eq!(local0, local7);
        assert!((remote7 - remote0 - 14.0).abs() < 1e-9, "{remote0} → {remote7}");
        let (_, ttft0) = costs(0.0, 0.0);
        let (_, ttft7) = costs(7.0, 0.0);
        assert!((ttft7 - ttft0 - 7.0).abs() < 1e-9, "{ttft0} → {ttft7}");
    }

    #[test]
    fn a_run_hands_its_per_conversation_arrays_to_whoever_takes_its_leftovers() {
        // Three one-turn conversations on 1 P + 1 pD, the workload owned by the run (as a fed
        // run's is): the leftovers hold the three conversations and their states, each turn
        // list then shared by the test's copy and the leftovers only, and released when they are
        // dropped; the records are those of a run that frees them itself.
        let cost = ConstantCostModel { step_ms: 10.0 };
        let convs: Vec<_> = (0..3).map(|i| one_turn(i, 100, 5)).collect();
        let plain = Simulation::new(predictive_1p_1pd(|_| {}), &cost, convs.clone()).run();
        let mut left = None;
        let r = Simulation::new(predictive_1p_1pd(|_| {}), &cost, convs.clone())
            .with_leftovers_to(|l| left = Some(l))
            .run();
        assert_eq!(r.records, plain.records);
        let left = left.expect("the leftovers were handed over");
        assert_eq!(
            (left._convs.len(), left._conv_state.len(), left._conv_done.len()),
            (3, 3, 3)
        );
        assert!(left._conv_done.iter().all(|&d| d), "every conversation done");
        assert_eq!(std::sync::Arc::strong_count(&convs[1].turns), 2);
        drop(left);
        assert_eq!(std::sync::Arc::strong_count(&convs[1].turns), 1);
        // A borrowed workload stays its owner's: no conversation in the leftovers.
        let mut left = None;
        Simulation::new(predictive_1p_1pd(|_| {}), &cost, &convs[..])
            .with_leftovers_to(|l| left = Some(l))
            .run();
        let left = left.expect("the leftovers were handed over");
        assert_eq!((left._convs.len(), left._conv_state.len()), (0, 3));
    }

    #[test]
    fn a_request_reaches_its_queue_at_once_only_when_no_overhead_can_delay_it() {
        // The instant path needs every API-server service at 0 ms; a D handoff share, a request
        // overhead or a per-prompt-token latency each takes it away.
        let cost = ConstantCostModel { step_ms: 10.0 };
        let instant = |edit: fn(&mut SimConfig)| {
            let cfg = predictive_1p_1pd(|c| {
                c.request_overhead_ms = 0.0;
                c.request_service_ms = 0.0;
                c.prompt_ms_per_token = 0.0;
                c.pd_handoff_d_service_ms = 0.0;
                edit(c);
            });
            Simulation::new(cfg, &cost, vec![one_turn(0, 100, 3)]).instant_request_handling
        };
        assert!(instant(|_| {}));
        assert!(!instant(|c| c.request_overhead_ms = 1.0));
        assert!(!instant(|c| c.prompt_ms_per_token = 0.001));
        assert!(!instant(|c| c.pd_handoff_d_service_ms = 0.5));
        // Its records are the general path's with an overhead that rounds to 0 µs (which
        // takes the general path): a 10-conversation burst, queued at P and D alike.
        let records = |overhead_ms: f64| {
            let cfg = predictive_1p_1pd(|c| {
                c.request_overhead_ms = overhead_ms;
                c.request_service_ms = 0.0;
                c.prompt_ms_per_token = 0.0;
                c.pd_handoff_d_service_ms = 0.0;
            });
            let convs: Vec<_> = (0..10)
                .map(|i| one_turn(i, 100 + 50 * i as u32, 3 + i as u32))
                .collect();
            let sim = Simulation::new(cfg, &cost, convs);
            assert_eq!(sim.instant_request_handling, overhead_ms == 0.0);
            sim.run().records
        };
        let instant = records(0.0);
        assert_eq!(instant.len(), 10);
        assert!(instant.iter().all(|r| r.arrived_at_ms == 0.0));
        assert_eq!(instant, records(1e-6));
    }

    #[test]
    fn a_timeline_reserves_room_for_every_sample_it_keeps_and_offers_it_for_prefaulting() {
        // 1 P + 1 pD: two instances, so (4,096 + 1) × 2 samples fit without moving; the span
        // offered to the page-fault helper is that room, 48 bytes a sample.
        let cost = ConstantCostModel { step_ms: 10.0 };
        let sim = Simulation::new(predictive_1p_1pd(|_| {}), &cost, vec![one_turn(0, 100, 3)]);
        let plain = sim.spare_spans().len();
        let sim = sim.with_timeline(1.0);
        let raw = &sim.timeline.as_ref().expect("a timeline").raw;
        assert_eq!(std::mem::size_of::<RawSample>(), 48);
        assert_eq!(raw.capacity(), 2 * (MAX_TIMELINE_POINTS + 1));
        let spans = sim.spare_spans();
        assert_eq!(spans.len(), plain + 1);
        let room = 2 * (MAX_TIMELINE_POINTS + 1) * 48;
        assert_eq!(spans.iter().filter(|s| s.len_bytes() == room).count(), 1, "{spans:?}");
        // 8 instances would need 32,776 samples: 1 MiB of them (21,845) is reserved instead.
        let big = predictive_1p_1pd(|c| c.shape = crate::cluster::Shape::parse("1P_7pD").expect("a shape"));
        let sim = Simulation::new(big, &cost, vec![one_turn(0, 100, 3)]).with_timeline(1.0);
        let raw = &sim.timeline.as_ref().expect("a timeline").raw;
        assert_eq!(raw.capacity(), 21_845);
    }
}

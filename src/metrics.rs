//! Per-request records and per-run summaries.
//!
//! Definitions (used everywhere; all times in milliseconds \[ms\] in outputs):
//! * **TTFT** = `first_token_at − arrived_at`, where `arrived_at` is the turn's arrival at the
//!   router (the client's send time, so fixed request overheads are included).
//! * **TPOT** = `(completed_at − first_token_at) / (num_output_tokens − 1)`; undefined (empty in
//!   CSV, excluded from statistics) for one-token outputs. This is vllm-ppd's client definition,
//!   not simdistserve's `/n`.
//! * **E2E** = `completed_at − arrived_at`.
//! * **SLO attainment** = fraction of completed requests with TTFT ≤ `ttft_ms` and (TPOT undefined
//!   or TPOT ≤ `tpot_ms`).
//! * **goodput** [req/s] = requests meeting the SLO / makespan (one run's figure; a sweep also
//!   reports DistServe's goodput, the highest load meeting an SLO attainment target).
//! * **local prefix-cache hit rate** = Σ tokens served from the computing instance's own prefix
//!   cache / Σ prompt tokens; **transferred rate** = Σ prompt tokens whose KV arrived over a KV
//!   link and was used / Σ prompt tokens (seed 001 reports both).
//! * Percentiles interpolate linearly between order statistics (numpy's default, as vllm-ppd).

use serde::{Deserialize, Serialize};

/// `p`-th percentile (0–100) of an ascending sample, linear interpolation.
///
/// # Panics
/// On an empty sample.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of an empty sample");
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// `xs` sorted in [`f64::total_cmp`] order. Sorted as integers: the map from a double's bits to
/// the signed integer whose order is `total_cmp`'s (flip the magnitude bits of negatives) is its
/// own inverse, and a primitive sort needs no comparator call. Values equal under `total_cmp`
/// have the same bits, so the result is the one order there is.
pub fn sorted_total(xs: Vec<f64>) -> Vec<f64> {
    let key = |b: i64| b ^ ((((b >> 63) as u64) >> 1) as i64);
    let mut keys: Vec<i64> = xs.into_iter().map(|x| key(x.to_bits() as i64)).collect();
    keys.sort_unstable();
    keys.into_iter().map(|k| f64::from_bits(key(k) as u64)).collect()
}

/// The sorted union of two samples each sorted in [`f64::total_cmp`] order: what
/// [`sorted_total`] gives for their concatenation, in linear time.
pub fn merge_sorted(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if b[j].total_cmp(&a[i]).is_lt() {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// How a turn was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    /// Prefilled on a P instance, KV sent to a D instance, decoded there.
    Split,
    /// Prefilled (append-prefill) and decoded on one instance.
    Local,
}

/// Outcome of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestStatus {
    /// Completed within the client's timeout.
    Ok,
    /// Completed after the client's timeout: counted as failed, excluded from latency statistics.
    Timeout,
    /// Refused by the engine (prompt + output longer than `max_model_len`): failed.
    Rejected,
}

/// A policy's or an instance's name in a [`RequestRecord`]: interned (one copy per process, never
/// freed; `Copy`), so that a record is made, sent to another thread and dropped without updating
/// a count shared by the run's records (an `Arc<str>`'s count, updated on two cores, moved its
/// cache line between them with every record). Names are few: a scenario's policies and
/// instances.
pub type Name = internment::Intern<str>;

/// Reads a [`Name`] (`internment` deserializes interned sized values only).
pub(crate) fn interned<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
    let s: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
    Ok(Name::from(&*s))
}

/// Reads an optional [`Name`].
fn interned_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Name>, D::Error> {
    let s: Option<std::borrow::Cow<'de, str>> = Deserialize::deserialize(d)?;
    Ok(s.map(|s| Name::from(&*s)))
}

/// One row of `requests.csv`: a turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Policy name (interned: one copy per process, a record holds a pointer).
    #[serde(deserialize_with = "interned")]
    pub policy: Name,
    /// Conversation index in the run (0-based, arrival order).
    pub conversation: usize,
    /// Conversation id in the trace (shared with the workload).
    pub conversation_id: std::sync::Arc<str>,
    /// Turn number (1-based).
    pub turn: usize,
    /// Route taken.
    pub route: RouteKind,
    /// Outcome.
    pub status: RequestStatus,
    /// Prefill instance (`P0`, …) for split routes.
    #[serde(deserialize_with = "interned_option")]
    pub prefill_instance: Option<Name>,
    /// Instance that produced the tokens (`D0`, `R1`, …; interned as `policy` is).
    #[serde(deserialize_with = "interned")]
    pub decode_instance: Name,
    /// Arrival at the router \[ms\].
    pub arrived_at_ms: f64,
    /// First output token \[ms\].
    pub first_token_at_ms: f64,
    /// Last output token \[ms\].
    pub completed_at_ms: f64,
    /// TTFT \[ms\].
    pub ttft_ms: f64,
    /// TPOT [ms/token]; empty for one-token outputs.
    pub tpot_ms: Option<f64>,
    /// E2E \[ms\].
    pub e2e_ms: f64,
    /// Time spent waiting in instance queues before first being scheduled, summed over stages \[ms\].
    pub queue_delay_ms: f64,
    /// P prefill done → KV available at D (link queueing + transfer) \[ms\]; when P's engine
    /// waits for its sends ([`crate::sim::SimConfig::prefill_waits_for_send`]), the send's
    /// duration inside P's step; 0 for local routes.
    pub kv_transfer_ms: f64,
    /// Bytes sent over the KV link \[B\].
    pub kv_transfer_bytes: u64,
    /// Context before this turn's input, `L` (template tokens included) \[tokens\].
    pub num_context_tokens: u32,
    /// New user input `u_k` (template tokens included) \[tokens\].
    pub num_user_tokens: u32,
    /// Whole prompt `L + u_k` \[tokens\].
    pub num_prompt_tokens: u32,
    /// Output tokens \[tokens\].
    pub num_output_tokens: u32,
    /// Prompt tokens found in the computing instance's prefix cache (P's for split, D's for local) \[tokens\].
    pub num_cached_tokens: u32,
    /// Prompt tokens whose KV arrived over the link and was used by D \[tokens\].
    pub num_transferred_tokens: u32,
    /// Prompt tokens computed (prefill or append-prefill, including recompute) \[tokens\].
    pub num_computed_tokens: u32,
}

/// Header of `requests.csv`: [`RequestRecord`]'s field names in order.
pub const REQUEST_CSV_HEADER: &str = "policy,conversation,conversation_id,turn,route,status,prefill_instance,decode_instance,arrived_at_ms,first_token_at_ms,completed_at_ms,ttft_ms,tpot_ms,e2e_ms,queue_delay_ms,kv_transfer_ms,kv_transfer_bytes,num_context_tokens,num_user_tokens,num_prompt_tokens,num_output_tokens,num_cached_tokens,num_transferred_tokens,num_computed_tokens\n";

impl RequestRecord {
    /// Appends the record as one `requests.csv` row (newline-terminated): the bytes `csv`'s
    /// serde writer gives, with a NaN written as an empty field (as [`crate::output::to_csv`]
    /// does), without serde or a second pass. Text fields are quoted only when they hold a comma,
    /// a quote or a line break (quotes doubled), as `csv` does; millisecond values on the
    /// simulator's microsecond grid skip the float printer ([`push_ms`]). Tests check byte
    /// identity with the serde path on random records and on shipped runs.
    pub fn write_csv_row(&self, out: &mut Vec<u8>) {
        let mut ints = itoa::Buffer::new();
        push_text(out, &self.policy);
        out.push(b',');
        out.extend_from_slice(ints.format(self.conversation).as_bytes());
        out.push(b',');
        push_text(out, &self.conversation_id);
        out.push(b',');
        out.extend_from_slice(ints.format(self.turn).as_bytes());
        out.push(b',');
        out.extend_from_slice(match self.route {
            RouteKind::Split => b"split",
            RouteKind::Local => b"local",
        });
        out.push(b',');
        out.extend_from_slice(match self.status {
            RequestStatus::Ok => &b"ok"[..],
            RequestStatus::Timeout => b"timeout",
            RequestStatus::Rejected => b"rejected",
        });
        out.push(b',');
        if let Some(p) = &self.prefill_instance {
            push_text(out, p);
        }
        out.push(b',');
        push_text(out, &self.decode_instance);
        for v in [
            self.arrived_at_ms,
            self.first_token_at_ms,
            self.completed_at_ms,
            self.ttft_ms,
        ] {
            out.push(b',');
            push_ms(out, v);
        }
        out.push(b',');
        if let Some(v) = self.tpot_ms {
            push_ms(out, v);
        }
        for v in [self.e2e_ms, self.queue_delay_ms, self.kv_transfer_ms] {
            out.push(b',');
            push_ms(out, v);
        }
        out.push(b',');
        out.extend_from_slice(ints.format(self.kv_transfer_bytes).as_bytes());
        for v in [
            self.num_context_tokens,
            self.num_user_tokens,
            self.num_prompt_tokens,
            self.num_output_tokens,
            self.num_cached_tokens,
            self.num_transferred_tokens,
            self.num_computed_tokens,
        ] {
            out.push(b',');
            out.extend_from_slice(ints.format(v).as_bytes());
        }
        out.push(b'\n');
    }
}

/// A text field as `csv` writes it by default: quoted (quotes doubled) only when it holds a
/// comma, a quote, `\n` or `\r`.
pub(crate) fn push_text(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// `v` as `ryu` prints it (the shortest decimal that reads back as `v`), NaN as nothing. A value
/// `n / 1000` with |n| < 10¹⁵ (a millisecond value on the microsecond grid) is printed from the
/// integer `n`: its decimal has at most 15 significant digits, and two such decimals never read
/// back as the same double (`DBL_DIG` = 15), so the shortest decimal is `n / 1000` itself with
/// trailing zeros dropped — what `ryu` prints.
pub fn push_ms(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        return;
    }
    let n = crate::time::round_half_away(v * 1000.0);
    if n.abs() < 1e15 && n / 1000.0 == v && !(v == 0.0 && v.is_sign_negative()) {
        push_thousandths(out, n as i64);
        return;
    }
    out.extend_from_slice(shortest_decimal(&mut ShortestBuffers::default(), v));
}

/// The printers of [`shortest_decimal`].
#[derive(Default)]
pub(crate) struct ShortestBuffers {
    ryu: ryu::Buffer,
    zmij: zmij::Buffer,
}

/// `v` as `ryu` prints it: the shortest decimal that reads back as `v`. Within
/// 10⁻⁵ ≤ |v| < 10¹⁶, where both print the digits in fixed notation (`12.34`, `0.001234`,
/// `12340000000.0`), `zmij` prints it (the same shortest, correctly rounded digits; ≈ 290
/// instructions a value against `ryu`'s ≈ 730, by callgrind on Vidur's TPOTs); outside it `ryu`
/// does (`zmij` writes exponents as `e+16`, `ryu` as `e16`). A test checks the two agree on the
/// range.
pub(crate) fn shortest_decimal(b: &mut ShortestBuffers, v: f64) -> &[u8] {
    if (1e-5..1e16).contains(&v.abs()) {
        b.zmij.format_finite(v).as_bytes()
    } else {
        b.ryu.format(v).as_bytes()
    }
}

/// `n / 1000` in decimal with trailing zeros of the fraction dropped (at least one digit).
fn push_thousandths(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    let n = n.unsigned_abs();
    let mut ints = itoa::Buffer::new();
    out.extend_from_slice(ints.format(n / 1000).as_bytes());
    out.push(b'.');
    let frac = n % 1000;
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let keep = if frac.is_multiple_of(100) {
        1
    } else if frac.is_multiple_of(10) {
        2
    } else {
        3
    };
    out.extend_from_slice(&digits[..keep]);
}

/// The percentiles `summary.csv`, `summary.json` and `sweep.csv` report by default (vLLM's
/// `bench serve` prints the same set).
pub const DEFAULT_PERCENTILES: [f64; 4] = [50.0, 90.0, 95.0, 99.0];

/// The percentiles always reported whatever a scenario's `percentiles` says: the printed table,
/// the sweeps' default metrics and `validate` use them.
pub const REQUIRED_PERCENTILES: [f64; 2] = [50.0, 99.0];

/// The percentiles to report for a scenario's `percentiles` list: its entries with
/// [`REQUIRED_PERCENTILES`] added, ascending, without repeats. Entries are in (0, 100) (checked
/// when the scenario is loaded).
pub fn reported_percentiles(configured: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = configured.iter().chain(&REQUIRED_PERCENTILES).copied().collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The name part of percentile `p` in column and key names: `p50`, `p99_9` for 99.9.
pub fn percentile_label(p: f64) -> String {
    format!("p{p}").replace('.', "_")
}

/// Latency statistics of one metric \[ms\]: count, mean and the reported percentiles.
///
/// Serialises (`summary.json`) as `{"count", "mean_ms", "p50_ms", "p90_ms", …}`, one `pXX_ms` per
/// percentile (see [`percentile_label`]).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LatencyStats {
    /// Samples.
    pub count: usize,
    /// Mean \[ms\].
    pub mean_ms: f64,
    /// (percentile in (0, 100), value \[ms\]), ascending; always holds p50 and p99.
    pub percentiles_ms: Vec<(f64, f64)>,
}

impl LatencyStats {
    /// Statistics of `xs` \[ms\] at [`DEFAULT_PERCENTILES`].
    pub fn of(xs: impl IntoIterator<Item = f64>) -> Self {
        Self::at(xs, &DEFAULT_PERCENTILES)
    }

    /// Statistics of `xs` \[ms\] at `percentiles` plus [`REQUIRED_PERCENTILES`] (linear
    /// interpolation, as numpy's default); count 0 and every value 0 when `xs` is empty.
    pub fn at(xs: impl IntoIterator<Item = f64>, percentiles: &[f64]) -> Self {
        Self::of_sorted(&sorted_total(xs.into_iter().collect()), percentiles)
    }

    /// [`LatencyStats::at`] of a sample already sorted in [`f64::total_cmp`] order (the mean is
    /// summed in that order, so both give the same bits).
    ///
    /// # Panics
    /// If `sorted` is not sorted (debug builds).
    pub fn of_sorted(sorted: &[f64], percentiles: &[f64]) -> Self {
        debug_assert!(sorted.is_sorted_by(|a, b| a.total_cmp(b).is_le()));
        let ps = reported_percentiles(percentiles);
        if sorted.is_empty() {
            return LatencyStats {
                count: 0,
                mean_ms: 0.0,
                percentiles_ms: ps.iter().map(|&p| (p, 0.0)).collect(),
            };
        }
        LatencyStats {
            count: sorted.len(),
            mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
            percentiles_ms: ps.iter().map(|&p| (p, percentile_sorted(sorted, p))).collect(),
        }
    }

    /// The `p`-th percentile \[ms\]; NaN when `p` was not computed.
    pub fn p(&self, p: f64) -> f64 {
        self.percentiles_ms
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(f64::NAN, |&(_, v)| v)
    }

    /// Median \[ms\].
    pub fn p50_ms(&self) -> f64 {
        self.p(50.0)
    }

    /// 99th percentile \[ms\].
    pub fn p99_ms(&self) -> f64 {
        self.p(99.0)
    }
}

impl Serialize for LatencyStats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2 + self.percentiles_ms.len()))?;
        m.serialize_entry("count", &self.count)?;
        m.serialize_entry("mean_ms", &self.mean_ms)?;
        for (p, v) in &self.percentiles_ms {
            m.serialize_entry(&format!("{}_ms", percentile_label(*p)), v)?;
        }
        m.end()
    }
}

/// Busy fraction of one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceUsage {
    /// Instance name.
    pub instance: String,
    /// Fraction of the makespan spent running iterations.
    pub busy_fraction: f64,
    /// Iterations run.
    pub num_iterations: u64,
    /// Prefix-cache tokens evicted \[tokens\].
    pub num_evicted_tokens: u64,
    /// Sequences preempted (KV freed, recomputed later).
    pub num_preemptions: u64,
    /// Times this instance entered the adaptive policy's remote mode (hysteresis; 0 otherwise).
    pub remote_mode_entries: u64,
    /// Time it spent in remote mode \[s\].
    pub remote_mode_s: f64,
}

/// SLO targets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// TTFT target \[ms\].
    pub ttft_ms: f64,
    /// TPOT target [ms/token].
    pub tpot_ms: f64,
}

/// One policy's run summary (a row of `summary.csv`, an element of `summary.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Policy name.
    pub policy: String,
    /// Conversations replayed.
    pub num_conversations: usize,
    /// Requests (turns) that succeeded.
    pub num_requests: usize,
    /// Requests that failed (client timeout or refused by the engine).
    pub num_failed: usize,
    /// Of the failed requests, those the engine refused at once (prompt + output longer than
    /// `max_model_len`).
    pub num_rejected: usize,
    /// First token of the first request to the last completion \[s\].
    pub makespan_s: f64,
    /// TTFT of turn 1.
    pub ttft_turn1: LatencyStats,
    /// TTFT of turns ≥ 2.
    pub ttft_turn2plus: LatencyStats,
    /// TTFT of all turns.
    pub ttft_all: LatencyStats,
    /// TPOT of all turns with ≥ 2 output tokens.
    pub tpot_all: LatencyStats,
    /// TPOT of turns ≥ 2.
    pub tpot_turn2plus: LatencyStats,
    /// E2E of all turns.
    pub e2e_all: LatencyStats,
    /// Completed requests / makespan [req/s].
    pub throughput_rps: f64,
    /// Output tokens / makespan [tokens/s].
    pub output_tokens_per_s: f64,
    /// SLO attainment (0–1).
    pub slo_attainment: f64,
    /// Requests meeting the SLO / makespan [req/s].
    pub goodput_rps: f64,
    /// Bytes moved over KV links \[B\].
    pub kv_bytes_moved: u64,
    /// Local prefix-cache hit rate (0–1): Σ cached / Σ prompt tokens.
    pub local_cache_hit_rate: f64,
    /// Transferred rate (0–1): Σ transferred / Σ prompt tokens.
    pub transferred_rate: f64,
    /// Fraction of turns ≥ 2 served locally.
    pub local_route_fraction_turn2plus: f64,
    /// Hysteresis mode entries over all D instances (how often one entered remote mode; 0 for
    /// policies without modes); per instance, with the time spent in remote mode, in `instances`.
    pub mode_switches: u64,
    /// Per-instance usage.
    pub instances: Vec<InstanceUsage>,
}

impl Summary {
    /// Summarises `records` (one policy, in any order), latencies at `percentiles` (and p50,
    /// p99; see [`LatencyStats::at`]). Latency statistics cover successful requests only (as
    /// vllm-ppd's client computes them); see [`SummaryBuilder`].
    pub fn from_records(
        policy: &str,
        num_conversations: usize,
        records: &[RequestRecord],
        slo: &Slo,
        instances: Vec<InstanceUsage>,
        mode_switches: u64,
        percentiles: &[f64],
    ) -> Summary {
        let mut b = SummaryBuilder::new(*slo);
        for r in records {
            b.push(r);
        }
        b.finish(policy, num_conversations, instances, mode_switches, percentiles)
    }
}

/// A [`Summary`] built one record at a time, keeping only the latencies its percentiles need
/// (`8 B` × about six values per successful request) and running sums: a run streams its
/// records to disk and through this instead of holding them.
#[derive(Clone, Debug)]
pub struct SummaryBuilder {
    slo: Slo,
    num_failed: usize,
    num_rejected: usize,
    num_meeting_slo: usize,
    start_ms: f64,
    end_ms: f64,
    prompt_tokens: u64,
    cached_tokens: u64,
    transferred_tokens: u64,
    output_tokens: u64,
    kv_bytes: u64,
    num_later_local: usize,
    ttft_turn1: Vec<f64>,
    ttft_turn2plus: Vec<f64>,
    tpot_turn1: Vec<f64>,
    tpot_turn2plus: Vec<f64>,
    e2e_all: Vec<f64>,
}

impl SummaryBuilder {
    /// An empty summary against `slo`.
    pub fn new(slo: Slo) -> Self {
        SummaryBuilder {
            slo,
            num_failed: 0,
            num_rejected: 0,
            num_meeting_slo: 0,
            start_ms: f64::INFINITY,
            end_ms: f64::NEG_INFINITY,
            prompt_tokens: 0,
            cached_tokens: 0,
            transferred_tokens: 0,
            output_tokens: 0,
            kv_bytes: 0,
            num_later_local: 0,
            ttft_turn1: Vec::new(),
            ttft_turn2plus: Vec::new(),
            tpot_turn1: Vec::new(),
            tpot_turn2plus: Vec::new(),
            e2e_all: Vec::new(),
        }
    }

    /// Makes room for the requests of `conversations` first turns without a reallocation: their
    /// TTFT, TPOT and E2E columns (each conversation has one first turn, and each of its requests
    /// one E2E). A fed run reserves them up front so that their pages can be faulted in ahead
    /// ([`crate::prefault`]).
    pub(crate) fn reserve_first_turns(&mut self, conversations: usize) {
        for column in [&mut self.ttft_turn1, &mut self.tpot_turn1, &mut self.e2e_all] {
            column.reserve(conversations);
        }
    }

    /// The spare capacity of the columns [`SummaryBuilder::reserve_first_turns`] reserves.
    pub(crate) fn spare_spans(&self) -> [crate::prefault::Span; 3] {
        use crate::prefault::Span;
        [
            Span::spare(&self.ttft_turn1),
            Span::spare(&self.tpot_turn1),
            Span::spare(&self.e2e_all),
        ]
    }

    /// Adds one request.
    pub fn push(&mut self, r: &RequestRecord) {
        if r.status != RequestStatus::Ok {
            self.num_failed += 1;
            self.num_rejected += (r.status == RequestStatus::Rejected) as usize;
            return;
        }
        self.start_ms = self.start_ms.min(r.arrived_at_ms);
        self.end_ms = self.end_ms.max(r.completed_at_ms);
        let meets = r.ttft_ms <= self.slo.ttft_ms && r.tpot_ms.is_none_or(|t| t <= self.slo.tpot_ms);
        self.num_meeting_slo += meets as usize;
        self.prompt_tokens += r.num_prompt_tokens as u64;
        self.cached_tokens += r.num_cached_tokens as u64;
        self.transferred_tokens += r.num_transferred_tokens as u64;
        self.output_tokens += r.num_output_tokens as u64;
        self.kv_bytes += r.kv_transfer_bytes;
        self.e2e_all.push(r.e2e_ms);
        if r.turn == 1 {
            self.ttft_turn1.push(r.ttft_ms);
            self.tpot_turn1.extend(r.tpot_ms);
        } else {
            self.ttft_turn2plus.push(r.ttft_ms);
            self.tpot_turn2plus.extend(r.tpot_ms);
            self.num_later_local += (r.route == RouteKind::Local) as usize;
        }
    }

    /// The summary of the requests pushed.
    pub fn finish(
        self,
        policy: &str,
        num_conversations: usize,
        instances: Vec<InstanceUsage>,
        mode_switches: u64,
        percentiles: &[f64],
    ) -> Summary {
        // Each column is sorted once, the three kinds at once on the pool's threads (each sort
        // ≈ 1.3 M instructions for Vidur's 10,000 requests); the all-turn columns are merged
        // from the per-turn ones.
        let stats = |xs: &[f64]| LatencyStats::of_sorted(xs, percentiles);
        // The stats of the union of two sorted columns: when one is empty, the other's (not a
        // copy of it: on a one-turn workload the turn-1 columns are every request's).
        let union_stats = |a: &[f64], b: &[f64]| match (a.is_empty(), b.is_empty()) {
            (_, true) => stats(a),
            (true, false) => stats(b),
            (false, false) => stats(&merge_sorted(a, b)),
        };
        let ((ttft_turn1, ttft_turn2plus), ((tpot_turn1, tpot_turn2plus), e2e_all)) = rayon::join(
            || (sorted_total(self.ttft_turn1), sorted_total(self.ttft_turn2plus)),
            || {
                rayon::join(
                    || (sorted_total(self.tpot_turn1), sorted_total(self.tpot_turn2plus)),
                    || sorted_total(self.e2e_all),
                )
            },
        );
        // One E2E per successful request, one turn-2+ TTFT per later one.
        let (num_ok, num_later) = (e2e_all.len(), ttft_turn2plus.len());
        let makespan_s = if num_ok == 0 {
            0.0
        } else {
            (self.end_ms - self.start_ms) / 1000.0
        };
        let per_s = |x: f64| {
            if makespan_s > 0.0 {
                x / makespan_s
            } else {
                0.0
            }
        };
        let frac = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        Summary {
            policy: policy.to_string(),
            num_conversations,
            num_requests: num_ok,
            num_failed: self.num_failed,
            num_rejected: self.num_rejected,
            makespan_s,
            ttft_turn1: stats(&ttft_turn1),
            ttft_turn2plus: stats(&ttft_turn2plus),
            ttft_all: union_stats(&ttft_turn1, &ttft_turn2plus),
            tpot_all: union_stats(&tpot_turn1, &tpot_turn2plus),
            tpot_turn2plus: stats(&tpot_turn2plus),
            e2e_all: stats(&e2e_all),
            throughput_rps: per_s(num_ok as f64),
            output_tokens_per_s: per_s(self.output_tokens as f64),
            slo_attainment: frac(self.num_meeting_slo as u64, num_ok as u64),
            goodput_rps: per_s(self.num_meeting_slo as f64),
            kv_bytes_moved: self.kv_bytes,
            local_cache_hit_rate: frac(self.cached_tokens, self.prompt_tokens),
            transferred_rate: frac(self.transferred_tokens, self.prompt_tokens),
            local_route_fraction_turn2plus: frac(self.num_later_local as u64, num_later as u64),
            mode_switches,
            instances,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_row(r: &RequestRecord) -> Vec<u8> {
        crate::output::to_csv(std::slice::from_ref(r)).unwrap()
    }

    fn ms() -> impl Strategy<Value = f64> {
        prop_oneof![
            (0u64..2_000_000_000_000).prop_map(|us| us as f64 / 1000.0),
            (0u64..1_000_000_000_000_000).prop_map(|us| us as f64 / 1000.0),
            any::<f64>(),
            Just(f64::NAN),
            Just(-0.0),
            (-1e6f64..1e6),
            (0u64..1000).prop_map(|n| n as f64 * 1e-7),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-zA-Z0-9_ -]{1,12}", ".{0,8}", "[a,\"\r\n]{1,6}"]
    }

    prop_compose! {
        fn record()(
            policy in text(), conversation in any::<usize>(), conversation_id in text(),
            turn in any::<usize>(), split in any::<bool>(), status in 0u8..3,
            prefill in proptest::option::of(text()), decode in text(),
            t in proptest::collection::vec(ms(), 8), tpot in proptest::option::of(ms()),
            bytes in any::<u64>(), n in proptest::collection::vec(any::<u32>(), 7),
        ) -> RequestRecord {
            RequestRecord {
                policy: Name::from(policy.as_str()), conversation, conversation_id: conversation_id.into(), turn,
                route: if split { RouteKind::Split } else { RouteKind::Local },
                status: [RequestStatus::Ok, RequestStatus::Timeout, RequestStatus::Rejected][status as usize],
                prefill_instance: prefill.map(|p| Name::from(p.as_str())), decode_instance: Name::from(decode.as_str()),
                arrived_at_ms: t[0], first_token_at_ms: t[1], completed_at_ms: t[2], ttft_ms: t[3],
                tpot_ms: tpot, e2e_ms: t[4], queue_delay_ms: t[5], kv_transfer_ms: t[6],
                kv_transfer_bytes: bytes,
                num_context_tokens: n[0], num_user_tokens: n[1], num_prompt_tokens: n[2],
                num_output_tokens: n[3], num_cached_tokens: n[4], num_transferred_tokens: n[5],
                num_computed_tokens: n[6],
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn csv_row_writer_matches_the_serde_writer(r in record()) {
            let serde = serde_row(&r);
            let mut fast = REQUEST_CSV_HEADER.as_bytes().to_vec();
            r.write_csv_row(&mut fast);
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&serde));
        }

        #[test]
        fn integer_sort_and_merge_give_total_cmp_order(
            a in proptest::collection::vec(prop_oneof![any::<f64>(), Just(-0.0), Just(0.0), Just(f64::NAN), -5.0f64..5.0], 0..60),
            b in proptest::collection::vec(prop_oneof![any::<f64>(), Just(-0.0), -5.0f64..5.0], 0..60),
        ) {
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let mut want = a.clone();
            want.sort_by(f64::total_cmp);
            let sa = super::sorted_total(a.clone());
            prop_assert_eq!(bits(&sa), bits(&want));
            let sb = super::sorted_total(b.clone());
            let mut both: Vec<f64> = a.iter().chain(&b).copied().collect();
            both.sort_by(f64::total_cmp);
            prop_assert_eq!(bits(&super::merge_sorted(&sa, &sb)), bits(&both));
        }
    }

    #[test]
    fn a_row_reads_back_into_its_record_with_interned_names() {
        let mut r = RequestRecord {
            policy: Name::from("ppd, threshold"),
            conversation: 7,
            conversation_id: "c-7".into(),
            turn: 2,
            route: RouteKind::Split,
            status: RequestStatus::Timeout,
            prefill_instance: Some(Name::from("P1")),
            decode_instance: Name::from("D0"),
            arrived_at_ms: 1000.5,
            first_token_at_ms: 1100.25,
            completed_at_ms: 1500.0,
            ttft_ms: 99.75,
            tpot_ms: Some(4.0),
            e2e_ms: 499.5,
            queue_delay_ms: 0.0,
            kv_transfer_ms: 1.5,
            kv_transfer_bytes: 1 << 20,
            num_context_tokens: 300,
            num_user_tokens: 20,
            num_prompt_tokens: 320,
            num_output_tokens: 101,
            num_cached_tokens: 288,
            num_transferred_tokens: 0,
            num_computed_tokens: 32,
        };
        for prefill in [Some(Name::from("P1")), None] {
            r.prefill_instance = prefill;
            let mut text = REQUEST_CSV_HEADER.as_bytes().to_vec();
            r.write_csv_row(&mut text);
            let back: Vec<RequestRecord> = csv::Reader::from_reader(&text[..])
                .deserialize()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(back, [r.clone()]);
            // The names read are the process's interned copies, not new ones.
            assert!(std::ptr::eq(back[0].policy.as_ref(), r.policy.as_ref()));
            assert!(std::ptr::eq(
                back[0].decode_instance.as_ref(),
                Name::from("D0").as_ref()
            ));
        }
    }

    #[test]
    fn all_turn_latencies_cover_both_turn_columns_and_equal_turn_1_alone() {
        // An OK turn `turn` with the given TTFT and TPOT (E2E = TTFT + 10 × TPOT).
        let rec = |turn: usize, ttft_ms: f64, tpot_ms: f64| RequestRecord {
            policy: Name::from("pd"),
            conversation: turn,
            conversation_id: "c".into(),
            turn,
            route: RouteKind::Local,
            status: RequestStatus::Ok,
            prefill_instance: None,
            decode_instance: Name::from("D0"),
            arrived_at_ms: 0.0,
            first_token_at_ms: ttft_ms,
            completed_at_ms: ttft_ms + 10.0 * tpot_ms,
            ttft_ms,
            tpot_ms: Some(tpot_ms),
            e2e_ms: ttft_ms + 10.0 * tpot_ms,
            queue_delay_ms: 0.0,
            kv_transfer_ms: 0.0,
            kv_transfer_bytes: 0,
            num_context_tokens: 0,
            num_user_tokens: 8,
            num_prompt_tokens: 8,
            num_output_tokens: 11,
            num_cached_tokens: 0,
            num_transferred_tokens: 0,
            num_computed_tokens: 8,
        };
        let slo = Slo {
            ttft_ms: 1e9,
            tpot_ms: 1e9,
        };
        let summary = |records: &[RequestRecord]| Summary::from_records("pd", 3, records, &slo, vec![], 0, &[90.0]);
        // Turn 1 alone: the all-turn columns are the turn-1 ones. TTFT 30, 10, 20 → mean 20,
        // p50 20, p90 at rank 1.8 = 20 + 0.8 × 10 = 28; TPOT 3, 1, 2 → mean 2, p50 2.
        let one = summary(&[rec(1, 30.0, 3.0), rec(1, 10.0, 1.0), rec(1, 20.0, 2.0)]);
        assert_eq!(one.ttft_all, one.ttft_turn1);
        assert_eq!(
            (one.ttft_all.count, one.ttft_all.mean_ms, one.ttft_all.p50_ms()),
            (3, 20.0, 20.0)
        );
        assert!((one.ttft_all.p(90.0) - 28.0).abs() < 1e-12, "{}", one.ttft_all.p(90.0));
        assert_eq!(
            (one.tpot_all.count, one.tpot_all.mean_ms, one.tpot_all.p50_ms()),
            (3, 2.0, 2.0)
        );
        assert_eq!((one.ttft_turn2plus.count, one.tpot_turn2plus.count), (0, 0));
        // Both turns: TTFT 10, 30 (turn 1) and 20, 40 (turn 2) → all: 10, 20, 30, 40, mean 25,
        // p50 25; TPOT 1, 3 and 2, 4 → mean 2.5; E2E = TTFT + 10 × TPOT: 20, 60, 40, 80.
        let both = summary(&[
            rec(1, 10.0, 1.0),
            rec(2, 20.0, 2.0),
            rec(1, 30.0, 3.0),
            rec(2, 40.0, 4.0),
        ]);
        assert_eq!((both.ttft_turn1.count, both.ttft_turn2plus.count), (2, 2));
        assert_eq!(
            (both.ttft_all.count, both.ttft_all.mean_ms, both.ttft_all.p50_ms()),
            (4, 25.0, 25.0)
        );
        assert_eq!((both.tpot_all.count, both.tpot_all.mean_ms), (4, 2.5));
        assert_eq!((both.tpot_turn2plus.count, both.tpot_turn2plus.mean_ms), (2, 3.0));
        assert_eq!(
            (both.e2e_all.count, both.e2e_all.mean_ms, both.e2e_all.p50_ms()),
            (4, 50.0, 50.0)
        );
    }

    #[test]
    fn latency_stats_of_a_hand_computed_sample() {
        // Sorted: -0.0, 1, 2, 4, 10. Mean 17 / 5; p50 = 2; p90 at rank 3.6 = 4 + 0.6 × 6 = 7.6.
        let s = super::LatencyStats::at([10.0, 2.0, -0.0, 4.0, 1.0], &[90.0]);
        assert_eq!((s.count, s.mean_ms, s.p50_ms()), (5, 3.4, 2.0));
        assert!((s.p(90.0) - 7.6).abs() < 1e-12, "{}", s.p(90.0));
        // p99 at rank 3.96 = 4 + 0.96 × 6.
        assert!((s.p99_ms() - 9.76).abs() < 1e-12);
        assert_eq!(super::LatencyStats::at([], &[]).count, 0);
    }

    #[test]
    fn ms_values_print_as_ryu_does() {
        for (v, s) in [
            (0.0, "0.0"),
            (65.704, "65.704"),
            (12.5, "12.5"),
            (0.001, "0.001"),
            (1e12, "1000000000000.0"),
            (-3.25, "-3.25"),
            (-0.0, "-0.0"),
            (1e-7, "1e-7"),
            // Half-thousandths are off the grid and go to ryu, negative ones too.
            (0.0005, "0.0005"),
            (-0.0015, "-0.0015"),
            (-1.2345, "-1.2345"),
            (999_999_999_999.999_6, "999999999999.9996"),
            (f64::INFINITY, "inf"),
        ] {
            let mut out = Vec::new();
            push_ms(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), s);
        }
    }

    #[test]
    fn zmij_prints_as_ryu_does_in_its_fixed_notation_range() {
        // Random bit patterns with exponents across the range and its edges, and the ratios the
        // simulator prints (a TPOT: an E2E on the microsecond grid over a token count).
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut values: Vec<f64> = vec![1e-5, 1e16, 9_999_999_999_999_998.0, 1e-5 * (1.0 - f64::EPSILON)];
        for _ in 0..400_000 {
            let exp = rng.gen_range(1023 - 18..1023 + 54u64);
            values.push(f64::from_bits(exp << 52 | rng.gen_range(0..1u64 << 52)));
        }
        for _ in 0..100_000 {
            let us: u64 = rng.gen_range(1..10_000_000_000);
            values.push(us as f64 / 1000.0 / rng.gen_range(1..4096u32) as f64);
        }
        let mut b = ShortestBuffers::default();
        for v in values {
            for v in [v, -v] {
                let want = ryu::Buffer::new().format(v).to_owned();
                assert_eq!(std::str::from_utf8(shortest_decimal(&mut b, v)).unwrap(), want, "{v:e}");
            }
        }
    }

    #[test]
    fn values_on_the_microsecond_grid_print_as_ryu_does() {
        // Every fraction 0..1000 with 38 integer parts from 0 to 7·10¹⁴, both signs: below 10¹²
        // the integer fast path, above it ryu itself (ryu is the reference the fast path must
        // reproduce byte for byte).
        let mut ints = vec![0i64, 1, 9, 10, 99, 100, 12_345, 999_999];
        ints.extend(
            (0..15)
                .map(|e| 10i64.pow(e) - 1)
                .chain((0..15).map(|e| 7 * 10i64.pow(e))),
        );
        for int in ints {
            for frac in 0..1000 {
                for sign in [1, -1] {
                    let n = sign * (int * 1000 + frac);
                    let v = n as f64 / 1000.0;
                    if v == 0.0 && sign < 0 {
                        continue;
                    }
                    let mut out = Vec::new();
                    push_ms(&mut out, v);
                    assert_eq!(String::from_utf8(out).unwrap(), ryu::Buffer::new().format(v), "n = {n}");
                }
            }
        }
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&v, 50.0), 2.5);
        assert!((percentile_sorted(&v, 99.0) - 3.97).abs() < 1e-12);
        assert_eq!(percentile_sorted(&v, 0.0), 1.0);
        assert_eq!(percentile_sorted(&[7.0], 90.0), 7.0);
    }
}

//! `ppdsim run`'s fast path for trace replays: the run is fed its conversations while the trace
//! is read, so that reading the trace (inflating and parsing it: ≈ 3–5 ms of Vidur's 10,000
//! requests) overlaps the simulation instead of preceding it.
//!
//! It applies to a scenario with one run that replays a native trace at its recorded arrivals,
//! in trace order, for `num_conversations` conversations
//! ([`crate::scenario::ScenarioParts::fed_trace`]). Every conversation starts no earlier
//! than the one before it, so the simulation takes conversation `c` when conversation `c − 1`
//! starts ([`crate::sim::Simulation::fed`]) and waits for the reader only if it has not got that
//! far. Each conversation fed has passed the checks the simulation relies on (a recorded arrival
//! in order and within the simulated-time limit, a first prompt token, a KV footprint that fits
//! an instance). Once the run is over, the whole trace is checked exactly as
//! [`crate::scenario::LoadedScenario::load_with`] checks it, and the run's results stand only if
//! every check passes: then they are the results `load_with`'s path gives, byte for byte (the
//! conversations fed are the ones `workload::generate` builds, with the same draws, and the
//! simulation's events are keyed as there). On any failure (a bad line, a check, an unreadable
//! file) the fast path's results and files are dropped, and the caller takes the ordinary path,
//! which reports the error as it always has.

use crate::scenario::limits::MAX_ARRIVAL_S;
use crate::scenario::{first_prompt_tokens, kv_footprint_tokens};
use crate::sim::workload::{TimedConversation, TraceReplay};
use crate::trace::Conversation;

/// Regions of a trace's conversations, with their file lines, as the reader hands them over.
pub(crate) type Region = Vec<(Conversation, usize)>;

/// A whole trace as read: its conversations and their file lines.
pub(crate) type ReadTrace = (Vec<Conversation>, Vec<usize>);

/// The conversations of a trace being read, fed one at a time to a simulation.
pub(crate) struct TraceFeed {
    /// The reader's regions, in file order (the channel closes when it stops).
    regions: std::sync::mpsc::Receiver<Region>,
    /// What is left of the region being fed.
    region: std::vec::IntoIter<(Conversation, usize)>,
    replay: TraceReplay,
    /// Conversations to feed in all.
    count: usize,
    /// The last conversation fed's arrival \[s\].
    last_arrival_s: f64,
    /// Chat-template tokens per message \[tokens\].
    template_tokens_per_message: u64,
    /// One instance's KV capacity, which each conversation must fit \[tokens\].
    kv_capacity_tokens: u64,
    /// The conversations fed and their file lines; [`TraceFeed::finish`] adds the rest of the
    /// trace.
    convs: Vec<Conversation>,
    lines: Vec<usize>,
    /// Turns of the conversations fed (the run's requests).
    turns_fed: u64,
    /// A conversation failed the checks: nothing more is fed, and the run's results are void.
    refused: bool,
    bar: indicatif::ProgressBar,
    /// Turns fed that `bar`'s length does not count yet.
    unannounced_turns: u64,
}

impl TraceFeed {
    /// A feed of the first `count` conversations of the regions `regions` will receive, timed
    /// by `replay`, each checked against the engine's limits
    /// (`template_tokens_per_message`, `kv_capacity_tokens`); `bar`'s length grows by the
    /// turns of each conversation fed.
    pub(crate) fn new(
        regions: std::sync::mpsc::Receiver<Region>,
        count: usize,
        replay: TraceReplay,
        template_tokens_per_message: u64,
        kv_capacity_tokens: u64,
        bar: indicatif::ProgressBar,
    ) -> Self {
        TraceFeed {
            regions,
            region: Vec::new().into_iter(),
            replay,
            count,
            last_arrival_s: 0.0,
            template_tokens_per_message,
            kv_capacity_tokens,
            convs: Vec::with_capacity(count.min(crate::sim::workload::MAX_RESERVED_CONVERSATIONS)),
            lines: Vec::with_capacity(count.min(crate::sim::workload::MAX_RESERVED_CONVERSATIONS)),
            turns_fed: 0,
            refused: false,
            bar,
            unannounced_turns: 0,
        }
    }

    /// The next conversation of the run, waiting for the reader if need be: `None` once
    /// `count` were fed, when the trace ended first, or when a conversation fails a check the
    /// simulation relies on (then [`TraceFeed::finish`] gives `None`).
    pub(crate) fn next(&mut self) -> Option<TimedConversation> {
        if self.convs.len() == self.count || self.refused {
            return None;
        }
        let (c, line) = loop {
            if let Some(next) = self.region.next() {
                break next;
            }
            // The reader stopped: the trace ended (or failed) before `count` conversations.
            self.region = self.regions.recv().ok()?.into_iter();
        };
        let tpl = self.template_tokens_per_message;
        let arrival_s = c
            .arrival_s
            .filter(|&t| t >= self.last_arrival_s && t / self.replay.speedup() <= MAX_ARRIVAL_S);
        let (Some(arrival_s), true, true) = (
            arrival_s,
            first_prompt_tokens(&c, tpl) > 0,
            kv_footprint_tokens(&c, tpl) <= self.kv_capacity_tokens,
        ) else {
            self.refused = true;
            return None;
        };
        self.last_arrival_s = arrival_s;
        self.turns_fed += c.turns.len() as u64;
        // The bar's length grows a few thousand requests at a time (an update costs a lock);
        // `finish` adds the rest.
        self.unannounced_turns += c.turns.len() as u64;
        if self.unannounced_turns >= 4096 {
            self.bar.inc_length(std::mem::take(&mut self.unannounced_turns));
        }
        let timed = self.replay.next(&c, arrival_s);
        self.convs.push(c);
        self.lines.push(line);
        Some(timed)
    }

    /// The spare capacity of the arrays the feed fills as it goes (the conversations fed and
    /// their file lines), for [`crate::prefault::populate_in_background`].
    pub(crate) fn spare_spans(&self) -> [crate::prefault::Span; 2] {
        use crate::prefault::Span;
        [Span::spare(&self.convs), Span::spare(&self.lines)]
    }

    /// Conversations fed so far (until [`TraceFeed::finish`], `convs` holds only those).
    pub(crate) fn fed(&self) -> usize {
        self.convs.len()
    }

    /// Turns of the conversations fed (the run's requests).
    pub(crate) fn turns_fed(&self) -> u64 {
        self.turns_fed
    }

    /// After the run: the whole trace as read (the regions not fed taken too) with its file
    /// lines, or `None` when a conversation was refused. Whether the reader read the whole file
    /// is its own result ([`crate::trace::feed_trace`]).
    pub(crate) fn finish(mut self) -> Option<ReadTrace> {
        self.bar.inc_length(std::mem::take(&mut self.unannounced_turns));
        if self.refused {
            return None;
        }
        let rest = std::mem::replace(&mut self.region, Vec::new().into_iter());
        for (c, line) in rest.chain(self.regions.iter().flatten()) {
            self.convs.push(c);
            self.lines.push(line);
        }
        Some((self.convs, self.lines))
    }
}

/// Makes the calling thread one of a fed run's side threads (the trace reader, the
/// `requests.csv` writer, the page-fault helper): a lower scheduling priority (nice 10) and, with
/// `cores`, the CPUs the run does not keep ([`crate::cores`]). When they compete for the CPUs, the
/// run, which the others never hold up, gets the larger share (nice 10: on Vidur's run 1.3–1.6 ms
/// of the whole process's median, 61 runs interleaved, docs/performance.md, 2026-12-06,
/// evening). On Linux a thread is a task with its own nice value and
/// `setpriority(PRIO_PROCESS, 0, …)` sets the caller's (setpriority(2), NOTES); elsewhere it would
/// lower the whole process, so nothing is done. Neither needs privilege; a failure changes
/// nothing but the speed, and is ignored.
pub(crate) fn yield_to_run(cores: Option<&crate::cores::CoreSplit>) {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority reads no memory of ours; its arguments are plain integers.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
    if let Some(cores) = cores {
        cores.keep_side_thread_off_run();
    }
}

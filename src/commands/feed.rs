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

/// Regions of a trace's conversations, with their file lines, as the reader parses them.
pub(crate) type Region = Vec<(Conversation, usize)>;

/// A whole trace as read: its conversations and their file lines.
pub(crate) type ReadTrace = (Vec<Conversation>, Vec<usize>);

/// The trace reader's side of a fed run: it checks and times the run's conversations as the
/// reader parses them and sends them to the run a region at a time ([`FedConversations`]), and
/// keeps the whole trace read for the checks after the run. The timing (a conversation's start,
/// its think times, its shared id and turns counted up) is done on the reader's thread, not on
/// the run's, which is the critical path (≈ 3% of Vidur's run's thread, `perf`, 2026-12-07).
pub(crate) struct TraceFeeder {
    /// Where the run's conversations go; `None` once `count` were sent, one was refused or the
    /// run went away.
    to_run: Option<std::sync::mpsc::Sender<Vec<TimedConversation>>>,
    replay: TraceReplay,
    /// Conversations to feed in all, and fed so far.
    count: usize,
    fed: usize,
    /// The last conversation fed's arrival \[s\].
    last_arrival_s: f64,
    /// Chat-template tokens per message \[tokens\].
    template_tokens_per_message: u64,
    /// One instance's KV capacity, which each conversation must fit \[tokens\].
    kv_capacity_tokens: u64,
    /// The trace read so far and its file lines.
    convs: Vec<Conversation>,
    lines: Vec<usize>,
    /// A conversation failed the checks: nothing more is fed, and the run's results are void.
    refused: bool,
    bar: indicatif::ProgressBar,
    /// Turns fed that `bar`'s length does not count yet.
    unannounced_turns: u64,
}

impl TraceFeeder {
    /// A feeder of the first `count` conversations of the regions it takes to `to_run`, timed
    /// by `replay`, each checked against the engine's limits (`template_tokens_per_message`,
    /// `kv_capacity_tokens`); `bar`'s length grows by the turns of each conversation fed.
    pub(crate) fn new(
        to_run: std::sync::mpsc::Sender<Vec<TimedConversation>>,
        count: usize,
        replay: TraceReplay,
        template_tokens_per_message: u64,
        kv_capacity_tokens: u64,
        bar: indicatif::ProgressBar,
    ) -> Self {
        TraceFeeder {
            to_run: (count > 0).then_some(to_run),
            replay,
            count,
            fed: 0,
            last_arrival_s: 0.0,
            template_tokens_per_message,
            kv_capacity_tokens,
            convs: Vec::with_capacity(count.min(crate::sim::workload::MAX_RESERVED_CONVERSATIONS)),
            lines: Vec::with_capacity(count.min(crate::sim::workload::MAX_RESERVED_CONVERSATIONS)),
            refused: false,
            bar,
            unannounced_turns: 0,
        }
    }

    /// Takes a region the reader parsed: sends the run those of its conversations it is fed
    /// (up to the first that fails a check the simulation relies on: a recorded arrival in
    /// order and within the simulated-time limit, a first prompt token, a KV footprint that
    /// fits an instance), and keeps the whole region.
    pub(crate) fn take(&mut self, region: Region) {
        // Sized for the whole region at once: grown by doubling, the batch's copies faulted in
        // ≈ 90 pages of Vidur's run (`perf record -e page-faults`, 2026-12-07).
        let mut batch = Vec::with_capacity(if self.to_run.is_some() { region.len() } else { 0 });
        for (c, line) in region {
            if self.to_run.is_some() {
                match self.time(&c) {
                    Some(timed) => {
                        batch.push(timed);
                        if self.fed == self.count {
                            self.stop_feeding(&mut batch);
                        }
                    }
                    None => {
                        self.refused = true;
                        self.stop_feeding(&mut batch);
                    }
                }
            }
            self.convs.push(c);
            self.lines.push(line);
        }
        self.send(&mut batch);
    }

    /// Conversation `c` timed for the run, or `None` when it fails a check.
    fn time(&mut self, c: &Conversation) -> Option<TimedConversation> {
        let tpl = self.template_tokens_per_message;
        let arrival_s = c
            .arrival_s
            .filter(|&t| t >= self.last_arrival_s && t / self.replay.speedup() <= MAX_ARRIVAL_S)?;
        if first_prompt_tokens(c, tpl) == 0 || kv_footprint_tokens(c, tpl) > self.kv_capacity_tokens {
            return None;
        }
        self.last_arrival_s = arrival_s;
        self.fed += 1;
        // The bar's length grows a few thousand requests at a time (an update costs a lock);
        // `stop_feeding` adds the rest.
        self.unannounced_turns += c.turns.len() as u64;
        if self.unannounced_turns >= 4096 {
            self.bar.inc_length(std::mem::take(&mut self.unannounced_turns));
        }
        Some(self.replay.next(c, arrival_s))
    }

    /// Sends `batch` (emptied) to the run, if it is fed still and listens.
    fn send(&mut self, batch: &mut Vec<TimedConversation>) {
        if batch.is_empty() {
            return;
        }
        let batch = std::mem::take(batch);
        if let Some(to_run) = &self.to_run {
            if to_run.send(batch).is_err() {
                // The run failed: what it was sent no longer matters.
                self.to_run = None;
            }
        }
    }

    /// Sends the run its last conversations, `batch`, and closes its feed.
    fn stop_feeding(&mut self, batch: &mut Vec<TimedConversation>) {
        self.send(batch);
        self.to_run = None;
        self.bar.inc_length(std::mem::take(&mut self.unannounced_turns));
    }

    /// Once the reader stopped: the whole trace as read with its file lines, or `None` when a
    /// conversation was refused. Whether the reader read the whole file is its own result
    /// ([`crate::trace::feed_trace`]).
    pub(crate) fn finish(mut self) -> Option<ReadTrace> {
        self.stop_feeding(&mut Vec::new());
        (!self.refused).then_some((self.convs, self.lines))
    }
}

/// How long the run tries the feeder's channel before it waits on it, when it has a CPU of its
/// own ([`FedConversations::receive`]).
const SPIN_FOR_BATCH: std::time::Duration = std::time::Duration::from_micros(200);

/// The run's side of a fed run: the conversations the [`TraceFeeder`] sends, one at a time.
pub(crate) struct FedConversations {
    /// The feeder's batches, in trace order (the channel closes when it stops feeding).
    from_reader: std::sync::mpsc::Receiver<Vec<TimedConversation>>,
    /// What is left of the batch being fed.
    batch: std::vec::IntoIter<TimedConversation>,
    /// Conversations to feed in all.
    count: usize,
    /// Conversations fed so far, and their turns (the run's requests).
    fed: usize,
    turns_fed: u64,
    /// Try the channel in a loop before waiting on it ([`FedConversations::receive`]).
    spin: bool,
}

impl FedConversations {
    /// The first `count` conversations `from_reader` sends; with `spin`, the run's thread has
    /// a CPU to itself (the reader runs on another, [`crate::cores`]) and tries the channel in a
    /// loop before it waits on it.
    pub(crate) fn new(
        from_reader: std::sync::mpsc::Receiver<Vec<TimedConversation>>,
        count: usize,
        spin: bool,
    ) -> Self {
        FedConversations {
            from_reader,
            batch: Vec::new().into_iter(),
            count,
            fed: 0,
            turns_fed: 0,
            spin,
        }
    }

    /// The next conversation of the run, waiting for the reader if need be: `None` once
    /// `count` were fed, or when the feeder stopped first (the trace ended, or a conversation
    /// failed a check: then [`TraceFeeder::finish`] gives `None`).
    pub(crate) fn next(&mut self) -> Option<TimedConversation> {
        if self.fed == self.count {
            return None;
        }
        let timed = loop {
            if let Some(next) = self.batch.next() {
                break next;
            }
            self.batch = self.receive()?.into_iter();
        };
        self.fed += 1;
        self.turns_fed += timed.turns.len() as u64;
        Some(timed)
    }

    /// The feeder's next batch, or `None` once it stopped. With `spin`, a batch that comes
    /// within [`SPIN_FOR_BATCH`] is taken as it comes, by trying the channel in a loop; only
    /// then does the run wait on the channel, to be woken by the reader's next send. The run
    /// waits for the reader in ≈ 20 places of Vidur's run (futex calls on its thread, `perf
    /// record -e syscalls:sys_enter_futex`, 2026-12-07), and a wake-up costs the woken thread
    /// tens of µs on a virtual machine. Without a CPU of its own the run never spins: it would
    /// keep the reader it waits for from running (Vidur's run on one CPU: +1.8 ms median).
    fn receive(&mut self) -> Option<Vec<TimedConversation>> {
        if !self.spin {
            return self.from_reader.recv().ok();
        }
        let start = std::time::Instant::now();
        loop {
            match self.from_reader.try_recv() {
                Ok(batch) => return Some(batch),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) if start.elapsed() < SPIN_FOR_BATCH => {
                    std::hint::spin_loop();
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return self.from_reader.recv().ok(),
            }
        }
    }

    /// Conversations fed so far.
    pub(crate) fn fed(&self) -> usize {
        self.fed
    }

    /// Turns of the conversations fed (the run's requests).
    pub(crate) fn turns_fed(&self) -> u64 {
        self.turns_fed
    }
}

/// The nice value of a fed run's trace reader and page-fault helper ([`yield_to_run`]).
pub(crate) const SIDE_NICE: i32 = 10;

/// The nice value of a fed run's `requests.csv` writer: below the reader's, which the run waits
/// for when it falls behind (19 waits a run on Vidur's, 0–6 ms in all as the host allows, by a
/// temporary timer, 2026-12-07). Where the two share a CPU the reader then gets ≈ 88% of it
/// rather than half (CFS weights 110 and 15). Vidur's run against the writer at 10: −0.27,
/// −1.04, −0.50 and −0.78 ms median, four rounds of 100–150 paired runs (docs/performance.md).
pub(crate) const WRITER_NICE: i32 = 19;

/// Makes the calling thread one of a fed run's side threads (the trace reader, the
/// `requests.csv` writer, the page-fault helper): a lower scheduling priority (`nice`:
/// [`SIDE_NICE`] or [`WRITER_NICE`]) and, with `cores`, the CPUs the run does not keep
/// ([`crate::cores`]). When they compete for the CPUs, the run, which the others never hold up,
/// gets the larger share (nice 10: on Vidur's run 1.3–1.6 ms of the whole process's median, 61
/// runs interleaved, docs/performance.md, 2026-12-06, evening). On Linux a thread is a task with
/// its own nice value and `setpriority(PRIO_PROCESS, 0, …)` sets the caller's (setpriority(2),
/// NOTES); elsewhere it would lower the whole process, so nothing is done. Neither needs
/// privilege; a failure changes nothing but the speed, and is ignored.
pub(crate) fn yield_to_run(cores: Option<&crate::cores::CoreSplit>, nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority reads no memory of ours; its arguments are plain integers.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
    if let Some(cores) = cores {
        cores.keep_side_thread_off_run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::workload::ThinkTimeSpec;
    use crate::trace::Turn;

    /// Conversations `c0`, `c1`, … arriving at `arrivals` \[s\], each one turn of 10 + 5 tokens
    /// and the line after the previous one's.
    fn region(arrivals: &[f64], first: usize) -> Region {
        arrivals
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let turn = Turn {
                    user_tokens: 10,
                    assistant_tokens: 5,
                };
                let c = Conversation {
                    id: format!("c{}", first + i).into(),
                    turns: vec![turn; 1 + (first + i) % 2].into(),
                    arrival_s: Some(t),
                };
                (c, first + i + 1)
            })
            .collect()
    }

    /// A feeder of `count` conversations at 2× speed-up, constant 1 s think times, KV capacity
    /// 100 tokens; and the run's side, spinning for batches or not.
    fn feed(count: usize, spin: bool) -> (TraceFeeder, FedConversations) {
        let (tx, rx) = std::sync::mpsc::channel();
        let think = ThinkTimeSpec::Constant { value_s: 1.0 };
        let replay = TraceReplay::new(2.0, &think, crate::rng::RngStreams::new(7));
        let feeder = TraceFeeder::new(tx, count, replay, 0, 100, indicatif::ProgressBar::hidden());
        (feeder, FedConversations::new(rx, count, spin))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_side_thread_takes_its_nice_value_and_leaves_the_callers() {
        // SAFETY: getpriority reads no memory of ours.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        let (reader, writer) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                yield_to_run(None, SIDE_NICE);
                nice()
            });
            let writer = s.spawn(|| {
                yield_to_run(None, WRITER_NICE);
                nice()
            });
            (reader.join().unwrap(), writer.join().unwrap())
        });
        // Raising a nice value needs no privilege, so the writer always gets 19; a test run
        // under `nice` above 10 keeps its value for the reader unless it may lower it (root).
        assert_eq!(writer, 19);
        assert!(
            reader == 10 || (before > 10 && reader == before),
            "reader at {reader}, from {before}"
        );
        assert_eq!(nice(), before, "the calling thread keeps its own");
    }

    #[test]
    fn the_run_gets_its_count_timed_and_the_reader_keeps_the_whole_trace() {
        let (mut feeder, mut run) = feed(3, false);
        feeder.take(region(&[0.0, 1.0], 0));
        feeder.take(region(&[3.0, 4.0, 5.0], 2));
        let got: Vec<_> = std::iter::from_fn(|| run.next()).collect();
        let ids: Vec<&str> = got.iter().map(|c| &*c.id).collect();
        assert_eq!(ids, ["c0", "c1", "c2"]);
        // Arrivals at 2× speed-up: 0, 0.5 and 1.5 s.
        let starts: Vec<f64> = got.iter().map(|c| c.start_at.as_ms()).collect();
        assert_eq!(starts, [0.0, 500.0, 1500.0]);
        // c1 has two turns: one think time of 1 s.
        assert_eq!(
            got[1].later_turns.iter().map(|t| t.think.as_ms()).collect::<Vec<_>>(),
            [1000.0]
        );
        assert_eq!((run.fed(), run.turns_fed()), (3, 1 + 2 + 1));
        let (convs, lines) = feeder.finish().expect("nothing refused");
        assert_eq!(convs.len(), 5);
        assert_eq!(lines, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_refused_conversation_ends_the_feed_and_voids_the_trace() {
        // c2 arrives before c1: the run gets c0 and c1, then the end of its feed.
        let (mut feeder, mut run) = feed(10, true);
        feeder.take(region(&[0.0, 2.0, 1.0, 3.0], 0));
        assert_eq!(run.next().map(|c| c.id), Some("c0".into()));
        assert_eq!(run.next().map(|c| c.id), Some("c1".into()));
        assert!(run.next().is_none());
        assert_eq!(run.fed(), 2);
        assert!(feeder.finish().is_none());

        // A trace shorter than the count: the feed ends with it, and the trace stands.
        let (mut feeder, mut run) = feed(10, false);
        feeder.take(region(&[0.0, 1.0], 0));
        let trace = feeder.finish();
        assert_eq!(std::iter::from_fn(|| run.next()).count(), 2);
        assert_eq!(trace.map(|(c, _)| c.len()), Some(2));
    }
}

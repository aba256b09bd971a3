//! `ppdsim run`: simulate every policy of a scenario on identical requests and write its results.

use crate::cli::*;
use crate::commands::*;
use crate::cost_model::LinearCostModel;
use crate::error::EXIT_OK;
use crate::metrics::Summary;
use crate::outdir::{OutputDir, Stale};
use crate::output;
use crate::rng::RngStreams;
use crate::scenario::{LoadedScenario, ScenarioParts};
use crate::sim::workload::ArrivalSpec;
use crate::sim::{workload, Simulation};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Results of one scenario run.
pub struct RunResults {
    /// One summary per policy, in scenario order.
    pub summaries: Vec<Summary>,
    /// Every request's latencies for the run figures (policy = index in `summaries`), policy by
    /// policy, when asked for.
    pub latencies: Vec<crate::plot::RequestLatency>,
    /// Per-instance timelines (`run` only; empty in sweeps), run by run.
    pub timeline: Vec<crate::sim::PolicyTimeline>,
    /// `timeline.csv`'s bytes for [`RunResults::timeline`] ([`output::timeline_csv`]; empty in
    /// sweeps), each run's rows formatted as it finished.
    pub timeline_csv: Vec<u8>,
    /// Runs whose setup phase (`arrival.kind = "setup"`) was still running when the measured
    /// window opened at `setup_s`: (policy, when its last setup turn completed \[s\]). Their setup
    /// work delays the measured turns, which the benchmark's protocol (setup, then the window)
    /// does not do.
    pub setup_overruns: Vec<(String, f64)>,
    /// Wall time spent building the workload from the trace (think times, starts).
    pub workload: std::time::Duration,
    /// Each run's wall times and events, in scenario order (`ppdsim run --timings`).
    pub run_timings: Vec<RunTiming>,
}

impl RunResults {
    /// Events the simulations handled, summed over the runs (with decode runs, far fewer than
    /// iterations; not part of any output file, so both paths write identical files).
    pub fn num_events(&self) -> u64 {
        self.run_timings.iter().map(|t| t.num_events).sum()
    }
}

/// Wall times of one run of `simulate_with` (runs on different threads overlap).
#[derive(Clone, Debug)]
pub struct RunTiming {
    /// The run's policy name (as in `summary.csv`).
    pub policy: String,
    /// Simulating, its `requests.csv` rows formatted meanwhile. When another thread formats
    /// them, it writes the last of them while `summarize` runs (a wait for it after that counts
    /// in neither); otherwise they are written before the simulation counts as done.
    pub simulate: std::time::Duration,
    /// Events the simulation handled.
    pub num_events: u64,
    /// Its summary (percentile sorts) and its `timeline.csv` rows.
    pub summarize: std::time::Duration,
}

/// Puts the runs' `requests.csv` rows in run order with as little copying as it can. Each run
/// writes through its own sink ([`RowSink`]). Once every earlier run's rows are in
/// `requests.csv`, the merger hands the run over: it copies what the run's part file holds (if
/// the run has written any) to the end of `requests.csv` and points the sink at `requests.csv`,
/// where the run's later rows go directly. A run handed over before its first row (run 0, handed
/// over as the merger starts, and every run that starts after its predecessor ends) never has a
/// part, so only the rows a run writes while an earlier one is still running are written twice. Copied with `std::io::copy`
/// (Linux's in-kernel `copy_file_range`), not through a file opened in append mode, which that
/// call refuses; every handle on `requests.csv` is a clone of one open file, so they share its
/// end.
struct PartMerge {
    /// Runs finished (their rows all written to their sinks, which are closed).
    finished: Vec<bool>,
    /// Runs whose rows are all in `requests.csv`: `0..next`.
    next: usize,
    /// Run `next` is handed over already.
    handed_over: bool,
    csv: Option<std::fs::File>,
    error: Option<anyhow::Error>,
}

/// The staging-directory name of run `k`'s part of `requests.csv`.
fn part_name(k: usize) -> String {
    format!(".requests.part-{k}.csv")
}

/// Where one run's `requests.csv` rows are written (see [`PartMerge`]). Its state is locked
/// for each write and for the hand-over; a file is open only while its run writes, so at most
/// one per running run and one for the merger, however many runs a scenario has.
struct RowSink {
    /// The run's part file, created at its first write unless it is handed over before.
    part: PathBuf,
    state: std::sync::Mutex<SinkState>,
}

enum SinkState {
    /// No row written yet and no file open.
    Idle,
    /// Writing to the run's part file.
    Part(std::fs::File),
    /// Handed over: writing to `requests.csv`.
    Csv(std::fs::File),
    /// The run finished and closed its file; `in_part`: its rows wait in its part file.
    Closed { in_part: bool },
}

impl RowSink {
    fn new(part: PathBuf) -> Self {
        RowSink {
            part,
            state: std::sync::Mutex::new(SinkState::Idle),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, SinkState>> {
        // Only a bug panics with the lock held (writes and copies return errors); the panicking
        // thread's join reports it.
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("a thread panicked writing requests.csv"))
    }

    /// Appends `bytes` to the run's file: `requests.csv` once handed over, else its part
    /// (created now if this is the first write).
    fn write(&self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let mut state = self.lock()?;
        if let SinkState::Idle = *state {
            *state = SinkState::Part(std::fs::File::create(&self.part)?);
        }
        match &mut *state {
            SinkState::Part(f) | SinkState::Csv(f) => f.write_all(bytes)?,
            SinkState::Idle | SinkState::Closed { .. } => {
                panic!("{}: a row written after its run closed", self.part.display())
            }
        }
        Ok(())
    }

    /// The run wrote its last row: its file closes.
    fn close(&self) -> Result<()> {
        let mut state = self.lock()?;
        *state = match std::mem::replace(&mut *state, SinkState::Idle) {
            SinkState::Idle | SinkState::Csv(_) => SinkState::Closed { in_part: false },
            SinkState::Part(_) => SinkState::Closed { in_part: true },
            SinkState::Closed { .. } => panic!("{}: a run closed twice", self.part.display()),
        };
        Ok(())
    }
}

impl PartMerge {
    fn new(runs: usize) -> Self {
        PartMerge {
            finished: vec![false; runs],
            next: 0,
            handed_over: false,
            csv: None,
            error: None,
        }
    }

    /// Run `k` finished (`None`: no run yet, as the merger starts): merges every run now next in
    /// line and hands the first unfinished one over.
    fn run_finished(&mut self, k: Option<usize>, sinks: &[RowSink], dir: &OutputDir) {
        if let Some(k) = k {
            self.finished[k] = true;
        }
        while self.error.is_none() && self.next < self.finished.len() {
            if !self.handed_over {
                if let Err(e) = self.hand_over(&sinks[self.next], dir) {
                    self.error = Some(e);
                    return;
                }
                self.handed_over = true;
            }
            if !self.finished[self.next] {
                return;
            }
            self.next += 1;
            self.handed_over = false;
        }
    }

    /// Puts what `sink`'s run has written at the end of `requests.csv` (created at the first
    /// hand-over) and, if the run still writes, points it at `requests.csv`.
    fn hand_over(&mut self, sink: &RowSink, dir: &OutputDir) -> Result<()> {
        if self.csv.is_none() {
            self.csv = Some(std::fs::File::create(dir.path("requests.csv")?)?);
        }
        let csv = self.csv.as_mut().expect("just created");
        let mut state = sink.lock()?;
        match *state {
            SinkState::Idle => {
                *state = SinkState::Csv(csv.try_clone()?);
                return Ok(());
            }
            SinkState::Closed { in_part: false } => return Ok(()),
            SinkState::Csv(_) => panic!("{}: a run handed over twice", sink.part.display()),
            SinkState::Part(_) | SinkState::Closed { in_part: true } => {}
        }
        drop(state);
        // The part as it stands is copied without the lock, so a running run goes on writing;
        // what it wrote meanwhile follows with the lock held, then its sink switches.
        let mut rows = std::fs::File::open(&sink.part)?;
        std::io::copy(&mut rows, csv)?;
        let mut state = sink.lock()?;
        std::io::copy(&mut rows, csv)?;
        if let SinkState::Part(_) = *state {
            *state = SinkState::Csv(csv.try_clone()?);
        }
        drop(state);
        std::fs::remove_file(&sink.part)?;
        Ok(())
    }
}

/// `requests.csv` rows of one run, streamed to its sink as the simulator emits them (formatted in
/// chunks, `NaN` fields emptied as [`output::to_csv`] does).
struct RequestRows<'a> {
    out: &'a RowSink,
    /// Rows formatted since the last write (the only buffer: written whole); the first run's
    /// starts with the header.
    chunk: Vec<u8>,
    error: Option<anyhow::Error>,
}

impl RequestRows<'_> {
    /// Bytes formatted before a write: the buffer is reused, so its pages are faulted in once
    /// (≈ 3–5 µs a page on the development machine, [`crate::prefault`]). For Vidur's 1.5 MB
    /// `requests.csv` the writer's thread took 8–36 page faults with 128 KiB (12 writes) and
    /// 231–260 with 1 MiB (2 writes), by `perf record -e page-faults` (2026-12-06).
    const CHUNK: usize = 128 << 10;

    fn push(&mut self, r: &crate::metrics::RequestRecord) {
        r.write_csv_row(&mut self.chunk);
        if self.chunk.len() >= Self::CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.error.is_none() && !self.chunk.is_empty() {
            if let Err(e) = self.out.write(&self.chunk) {
                self.error = Some(e);
            }
        }
        self.chunk.clear();
    }

    /// Writes the last rows and closes the run's file.
    fn finish(mut self) -> Result<()> {
        self.flush();
        let closed = self.out.close();
        self.error.map_or(closed, Err)
    }
}

/// Requests a run simulates between two advances of the progress bar (an atomic update each).
const PROGRESS_EVERY: u64 = 4096;

/// Records per batch sent to a run's `requests.csv` formatting thread: small, so that the rows
/// left to format when the simulation ends are few (Vidur's run waited 0.76 ms for its last batch
/// with 4,096-record batches, 0.22 ms with 256), with up to [`ROWS_IN_FLIGHT`] batches queued.
const ROW_BATCH: usize = 256;

/// How often a run's `requests.csv` formatting thread looks for a batch when it has none: the
/// end of a run waits up to this (and the timer's slack) for the thread to see its last batch.
const ROW_POLL: std::time::Duration = std::time::Duration::from_micros(50);

/// Row batches a run's `requests.csv` formatting thread may have queued before the run waits.
const ROWS_IN_FLIGHT: usize = 16;

/// Empty row batches a run sets aside before it starts, for when the formatting thread has none
/// to hand back: one per [`ROW_BATCH`] conversations, up to [`ROWS_IN_FLIGHT`]. A fed run has
/// their pages faulted in by its page-fault helper ([`crate::prefault`]); a batch is 256
/// records of 192 bytes, 12 pages. Beside a fed run's trace reader the formatting thread gets
/// little of its CPU (it runs at [`crate::commands::feed::WRITER_NICE`]), and Vidur's run wrote
/// ≈ 140 of its ≈ 190 page faults into new batches when the formatting thread made the run 4
/// spare batches (`perf record -e page-faults --call-graph dwarf`, 2026-12-07).
fn row_batch_stock(num_conversations: usize) -> usize {
    num_conversations.div_ceil(ROW_BATCH).clamp(1, ROWS_IN_FLIGHT)
}

/// Simulates every run of a loaded scenario (in parallel; results in scenario order and
/// independent of the thread count), into `sinks`: advancing its bar by the requests simulated
/// ([`PROGRESS_EVERY`] at a time); with the per-instance timelines when asked; streaming
/// `requests.csv` into its folder when given (the records are never all held: each run keeps the
/// requests in flight and the latencies its summary needs) and keeping every request's latencies
/// for the figures when asked.
///
/// # Errors
/// Writing `requests.csv`.
pub(crate) fn simulate_with(sc: &LoadedScenario, sinks: RunSinks<'_>) -> Result<RunResults> {
    let w = &sc.resolved.workload;
    let workload_start = std::time::Instant::now();
    let mut rng = RngStreams::new(sc.resolved.seed);
    let convs = workload::generate(
        &sc.trace,
        w.num_conversations,
        w.window_s,
        w.order,
        &w.arrival,
        &w.think_time,
        &mut rng,
    );
    let workload_time = workload_start.elapsed();
    simulate_workload(sc, Workload::Built(convs), workload_time, sinks)
}

/// What a simulation keeps or writes besides each run's summary ([`simulate_with`]).
pub(crate) struct RunSinks<'o> {
    /// Advanced by the requests simulated; its length is set to every run's requests.
    pub bar: indicatif::ProgressBar,
    /// Keep the per-instance timelines (on the scenario's `timeline_interval_s` grid).
    pub timeline: bool,
    /// The results folder to stream `requests.csv` into.
    pub requests: Option<&'o OutputDir>,
    /// Keep every request's latencies for the figures.
    pub latencies: bool,
}

impl<'o> RunSinks<'o> {
    /// `ppdsim run`'s: a bar unless `quiet`, the timelines, `requests.csv` into `staged` when
    /// `requests`, and the latencies when `plots` draws them.
    fn of_run(staged: &'o OutputDir, quiet: bool, requests: bool, plots: bool) -> Self {
        RunSinks {
            bar: progress_bar(quiet, 0, "requests simulated"),
            timeline: true,
            requests: requests.then_some(staged),
            latencies: plots,
        }
    }

    /// Nothing kept or written but the summaries (a sweep's points).
    pub(crate) fn summaries_only() -> RunSinks<'static> {
        RunSinks {
            bar: indicatif::ProgressBar::hidden(),
            timeline: false,
            requests: None,
            latencies: false,
        }
    }
}

/// What `simulate_fed` read of a trace while its run simulated.
pub struct FedTrace {
    /// The trace's conversations, as `read_trace_lines` reads them.
    pub convs: Vec<crate::trace::Conversation>,
    /// Each conversation's 1-based file line.
    pub lines: Vec<usize>,
    /// The trace passed every check [`crate::scenario::LoadedScenario::load_with`] makes of a
    /// trace (made by the reader once it had read it: [`crate::scenario::WholeTraceCheck`]).
    pub checks_passed: bool,
    /// Wall time the reading took (alongside the simulation).
    pub read: std::time::Duration,
    /// The run's `scenario.resolved.toml`, made by the reader once the checks passed
    /// ([`crate::scenario::WholeTraceCheck::making_resolved_toml_for`]).
    pub resolved_toml: Option<String>,
}

/// [`simulate_with`] for a scenario of one run loaded by
/// [`ScenarioParts::load_for_feed`] (its trace not read yet): `reader` reads the trace on a
/// thread of its own, at a lower priority than the run's, and its conversations are fed to the
/// run as they are parsed
/// ([`crate::commands::feed`]). With the trace read, the caller checks it
/// ([`LoadedScenario::accept_fed_trace`]) before it uses the results. `None` when the trace did
/// not read or a conversation failed a check the simulation needs: the results are void, and
/// the ordinary path reports the error.
///
/// # Errors
/// Writing `requests.csv`.
pub(crate) fn simulate_fed(
    sc: &LoadedScenario,
    reader: TraceReader,
    check: crate::scenario::WholeTraceCheck,
    sinks: RunSinks<'_>,
) -> Result<Option<(RunResults, FedTrace)>> {
    let w = &sc.resolved.workload;
    let ArrivalSpec::Trace { speedup } = w.arrival else {
        unreachable!("fed_trace takes only trace arrivals")
    };
    let count = w
        .num_conversations
        .expect("fed_trace takes only a number of conversations");
    assert_eq!(sc.deployments().len(), 1, "a trace is fed to one run");
    let (tx, rx) = std::sync::mpsc::channel();
    let feeder = crate::commands::feed::TraceFeeder::new(
        tx,
        count,
        workload::TraceReplay::new(speedup, &w.think_time, RngStreams::new(sc.resolved.seed)),
        w.template_tokens_per_message as u64,
        sc.kv_capacity_tokens,
        sinks.bar.clone(),
    );
    // On 2 or 3 CPUs the run keeps the one this thread is on and the reader, the writer and the
    // page-fault helper take the others ([`crate::cores`]); then the run may spin for the
    // reader's next batch.
    let cores = crate::cores::CoreSplit::for_fed_run();
    let slot = FedSlot {
        feed: std::sync::Mutex::new(Some(crate::commands::feed::FedConversations::new(
            rx,
            count,
            cores.is_some(),
        ))),
        cores,
    };
    // The reader, started as soon as the trace's path was known, gets its feeder now: the
    // regions it parsed meanwhile go to the run first.
    let TraceReader {
        feeder: feeder_tx,
        thread,
    } = reader;
    let _ = feeder_tx.send((Box::new(feeder), cores, Box::new(check)));
    let results = simulate_workload(sc, Workload::Fed(&slot), std::time::Duration::ZERO, sinks);
    let read = thread.join().expect("the trace reader panicked");
    let results = results?;
    Ok(match (read.ok, read.trace) {
        (true, Some((convs, lines))) => Some((
            results,
            FedTrace {
                convs,
                lines,
                checks_passed: read.checks_passed,
                read: read.time,
                resolved_toml: read.resolved_toml,
            },
        )),
        _ => None,
    })
}

/// A fed run's trace reader: a thread of its own, started by [`TraceReader::start`] as soon as
/// the trace's path is known (before the scenario's calibration and checks, the output folder
/// and the run's set-up: on Vidur's run `--timings` gives 0.06–0.08 ms for the calibration and
/// 0.1–0.3 ms for the output folder), so that the run, which
/// takes its first conversation at once, seldom waits for it. It reads and parses the trace
/// without a feeder, keeping the regions, until [`simulate_fed`] sends it one; the regions kept
/// then go to the run first. It stops reading when the feeder's sender goes (the fed path
/// failed before its run: nothing waits for its regions).
pub(crate) struct TraceReader {
    feeder: std::sync::mpsc::Sender<FeederHandOver>,
    thread: std::thread::JoinHandle<ReadOutcome>,
}

impl TraceReader {
    /// Starts reading `trace_path` on a thread of its own, at a lower priority than the run's
    /// ([`crate::commands::feed::yield_to_run`]; the run is the critical path, and on two cores
    /// the reader and the `requests.csv` writer share the other one).
    pub(crate) fn start(trace_path: PathBuf) -> Self {
        let (feeder_tx, feeder_rx) = std::sync::mpsc::channel::<FeederHandOver>();
        let thread = std::thread::spawn(move || {
            crate::commands::feed::yield_to_run(None, crate::commands::feed::SIDE_NICE);
            let start = std::time::Instant::now();
            let mut feed = ReaderFeed::Waiting(Vec::new());
            // The whole trace is read, for the checks after the run, even when the run stopped;
            // the reading stops only when no run will ever come.
            let ok = crate::trace::feed_trace(&trace_path, |region| {
                if let ReaderFeed::Waiting(_) = feed {
                    match feeder_rx.try_recv() {
                        Ok(sent) => feed.attach(sent),
                        Err(std::sync::mpsc::TryRecvError::Empty) => {}
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
                    }
                }
                feed.take(region);
                true
            });
            // The reading's time, not the wait for a run that comes after it.
            let time = start.elapsed();
            if let ReaderFeed::Waiting(_) = feed {
                if let Ok(sent) = feeder_rx.recv() {
                    feed.attach(sent);
                }
            }
            let (trace, checks_passed, resolved_toml) = match feed {
                ReaderFeed::Feeding(feeder, check) => {
                    let trace = feeder.finish();
                    // The checks after the run, made here while it may still be simulating.
                    let passed = ok && trace.as_ref().is_some_and(|(convs, lines)| check.passes(convs, lines));
                    (trace, passed, passed.then(|| check.resolved_toml()).flatten())
                }
                ReaderFeed::Waiting(_) => (None, false, None),
            };
            ReadOutcome {
                ok,
                trace,
                checks_passed,
                time,
                resolved_toml,
            }
        });
        TraceReader {
            feeder: feeder_tx,
            thread,
        }
    }
}

/// What a run sends its [`TraceReader`]: the feeder, the run's CPUs and the checks to make of
/// the whole trace once read. The feeder is boxed: a channel allocates its
/// slots 31 at a time, zeroed, and a feeder is 1,136 bytes: ≈ 35 KB for one feeder (11 page
/// faults on the main thread, `perf record -e page-faults`, 2026-12-07).
type FeederHandOver = (
    Box<crate::commands::feed::TraceFeeder>,
    Option<crate::cores::CoreSplit>,
    Box<crate::scenario::WholeTraceCheck>,
);

/// What a [`TraceReader`] does with the regions it parses: keeps them until its run sends it a
/// feeder, then feeds them.
enum ReaderFeed {
    Waiting(Vec<crate::commands::feed::Region>),
    Feeding(
        Box<crate::commands::feed::TraceFeeder>,
        Box<crate::scenario::WholeTraceCheck>,
    ),
}

impl ReaderFeed {
    /// Takes the feeder the run sent, off the run's CPU when it has one, and feeds it the
    /// regions kept.
    fn attach(&mut self, (mut feeder, cores, check): FeederHandOver) {
        if let Some(cores) = &cores {
            cores.keep_side_thread_off_run();
        }
        if let ReaderFeed::Waiting(kept) = self {
            for region in kept.drain(..) {
                feeder.take(region);
            }
        }
        *self = ReaderFeed::Feeding(feeder, check);
    }

    /// Feeds `region`, or keeps it until a feeder comes.
    fn take(&mut self, region: crate::commands::feed::Region) {
        match self {
            ReaderFeed::Waiting(kept) => kept.push(region),
            ReaderFeed::Feeding(feeder, _) => feeder.take(region),
        }
    }
}

/// How a fed run's trace reading went.
struct ReadOutcome {
    /// The whole file read ([`crate::trace::feed_trace`]).
    ok: bool,
    /// What was read, unless a conversation fed was refused ([`crate::commands::feed::TraceFeeder::finish`]).
    trace: Option<crate::commands::feed::ReadTrace>,
    /// The whole trace read and passed the checks the run sent (false when no run came).
    checks_passed: bool,
    /// Wall time of the reading, from the reader's start to the trace's end (not the wait for
    /// the run after it).
    time: std::time::Duration,
    /// The run's `scenario.resolved.toml`, when the checks passed and the run asked for it.
    resolved_toml: Option<String>,
}

/// A fed run's conversations, for the run to take.
struct FedSlot {
    feed: std::sync::Mutex<Option<crate::commands::feed::FedConversations>>,
    /// The run's CPU and its side threads' ([`crate::cores`]), on a machine of 2 or 3 CPUs.
    cores: Option<crate::cores::CoreSplit>,
}

/// Where the runs' conversations come from.
enum Workload<'f> {
    /// Built before the runs, shared by all of them.
    Built(Vec<workload::TimedConversation>),
    /// Fed to the one run as its trace is read.
    Fed(&'f FedSlot),
}

/// One run's conversations ([`Workload`]): the workload shared by every run, or the feed (the
/// trace it read stays with the reader).
enum RunSource<'w> {
    Built(&'w [workload::TimedConversation]),
    Fed(Box<crate::commands::feed::FedConversations>),
}

impl RunSource<'_> {
    /// The conversations the run was given: the workload's, or as many as it was fed.
    fn num_conversations(&self) -> usize {
        match self {
            RunSource::Built(convs) => convs.len(),
            RunSource::Fed(feed) => feed.fed(),
        }
    }
}

/// [`simulate_with`]'s runs of the conversations `workload` (built in `workload_time`).
fn simulate_workload(
    sc: &LoadedScenario,
    workload: Workload<'_>,
    workload_time: std::time::Duration,
    sinks: RunSinks<'_>,
) -> Result<RunResults> {
    let RunSinks {
        bar,
        timeline,
        requests,
        latencies,
    } = sinks;
    let w = &sc.resolved.workload;
    let cost = LinearCostModel::new(sc.calibration.coefficients().expect("validated on load"));
    // Per cluster, per pool: its own cost model when it is off the scenario's GPU and model file.
    let pool_costs: Vec<Vec<Option<LinearCostModel>>> = sc
        .clusters
        .iter()
        .map(|c| {
            c.pools
                .iter()
                .map(|p| {
                    p.model
                        .as_ref()
                        .map(|p| LinearCostModel::new(p.calibration.coefficients().expect("validated on load")))
                })
                .collect()
        })
        .collect();
    let deployments = sc.deployments();
    // Every turn of every conversation is one request of each run (a failed turn included); a
    // feed lengthens the bar as it goes.
    let built_requests_per_run: u64 = match &workload {
        Workload::Built(convs) => convs.iter().map(|c| c.turns.len() as u64).sum(),
        Workload::Fed(_) => 0,
    };
    bar.set_length(built_requests_per_run * deployments.len() as u64);
    // Fewer runs than threads: a core would idle, so each run's rows are formatted on a thread
    // of their own (with every core simulating, formatting inline costs nothing extra).
    let offload = deployments.len() < rayon::current_num_threads();
    // Each run's rows go to its part file until the merger hands it over to requests.csv.
    let sinks: Vec<RowSink> = match requests {
        Some(dir) => (0..deployments.len())
            .map(|k| Ok(RowSink::new(dir.path(&part_name(k))?)))
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let run_one = |k: usize, d: &crate::scenario::Deployment| -> Result<_> {
        let rows = sinks.get(k).map(|out| RequestRows {
            out,
            chunk: {
                // Room for a whole chunk and the row that crosses it: no copies as it fills.
                let mut chunk = Vec::with_capacity(RequestRows::CHUNK + (64 << 10));
                if k == 0 {
                    chunk.extend_from_slice(crate::metrics::REQUEST_CSV_HEADER.as_bytes());
                }
                chunk
            },
            error: None,
        });
        let mut summary = crate::metrics::SummaryBuilder::new(sc.resolved.slo);
        let mut lat = Vec::new();
        // Setup-phase turns run but are not measured.
        let setup = w.setup_turns as usize;
        let mut setup_end_ms = 0.0f64;
        // Requests this run has simulated (the bar hears of them PROGRESS_EVERY at a time).
        let mut simulated = 0u64;
        // A fed run's CPUs, on a machine of 2 or 3 ([`crate::cores`]).
        let cores = match &workload {
            Workload::Built(_) => None,
            Workload::Fed(slot) => slot.cores,
        };
        // This run's conversations: the shared workload, or the feed (taken by the one run).
        let mut source = match &workload {
            Workload::Built(convs) => RunSource::Built(convs),
            Workload::Fed(slot) => RunSource::Fed(Box::new(
                slot.feed.lock().expect("a run panicked").take().expect("one fed run"),
            )),
        };
        // The run's per-conversation arrays, freed on the pool once its results went on
        // ([`crate::sim::Leftovers`]).
        let mut leftovers = None;
        // The run, each record passed to `emit` after `summary` and the latencies take theirs; a
        // fed run's page-fault helper also faults in `spare`. Returns the run's results and its
        // conversation count.
        let mut simulate = |summary: &mut crate::metrics::SummaryBuilder,
                            emit: &mut dyn FnMut(crate::metrics::RequestRecord),
                            spare: Vec<crate::prefault::Span>| {
            let (sim, spans) = match &mut source {
                RunSource::Built(convs) => (Simulation::new(sc.sim_config(d), &cost, &convs[..]), None),
                RunSource::Fed(feed) => {
                    let expected = w.num_conversations.unwrap_or(0);
                    // The arrays the run fills, one slot per conversation, are faulted in by
                    // another thread while it starts ([`crate::prefault`]; Vidur's run took
                    // ≈ 590 page faults on its own thread before, ≈ 3–5 µs each): the
                    // simulation's and, without setup turns (then every first turn is measured),
                    // the summary's first-turn columns (the simulation's own are added once it
                    // is set up). The trace's arrays are the reader's, filled on its thread.
                    let mut spans = Vec::new();
                    if setup == 0 {
                        summary.reserve_first_turns(expected.min(workload::MAX_RESERVED_CONVERSATIONS));
                        spans.extend(summary.spare_spans());
                    }
                    let sim = Simulation::fed(sc.sim_config(d), &cost, expected, || feed.next());
                    (sim, Some(spans))
                }
            };
            let mut sim = sim.with_leftovers_to(|l| leftovers = Some(l)).with_record_sink(|r| {
                simulated += 1;
                if simulated.is_multiple_of(PROGRESS_EVERY) {
                    bar.inc(PROGRESS_EVERY);
                }
                if r.turn > setup {
                    summary.push(&r);
                } else {
                    setup_end_ms = setup_end_ms.max(r.completed_at_ms);
                }
                if latencies {
                    lat.push(crate::plot::RequestLatency {
                        policy: k,
                        turn: r.turn as u32,
                        ok: r.status == crate::metrics::RequestStatus::Ok,
                        ttft_ms: r.ttft_ms,
                        tpot_ms: r.tpot_ms,
                    });
                }
                emit(r);
            });
            for (pool, cost) in sc.clusters[d.cluster].pools.iter().zip(&pool_costs[d.cluster]) {
                if let (Some(model), Some(cost)) = (&pool.model, cost) {
                    sim = sim.with_pool(pool.instances.clone(), cost, model.limits);
                }
                sim = sim.with_kv_load(
                    pool.instances.clone(),
                    pool.spec.kv_load_ms.expect("resolved with the scenario"),
                );
            }
            let sim = if timeline {
                sim.with_timeline(sc.resolved.timeline_interval_s)
            } else {
                sim
            };
            if let Some(mut spans) = spans {
                spans.extend(sim.spare_spans());
                spans.extend(spare);
                crate::prefault::populate_in_background(spans, cores);
            }
            (sim.run(), source.num_conversations())
        };
        // A fed run keeps its CPU until its rows are written ([`crate::cores`]).
        let pin = cores.as_ref().map(crate::cores::CoreSplit::pin_run);
        let simulate_start = std::time::Instant::now();
        // What follows the simulation: the summary's sorts and the timeline's rows (its policy
        // is the summary's) at once, on two threads when one is free (for Vidur's run 4.4 M and
        // 2.4 M instructions that would otherwise follow each other on the way to the files).
        // With the rows offloaded it runs while the writer formats the last rows, not after.
        let summarize =
            |r: crate::sim::SimResult, summary: crate::metrics::SummaryBuilder, num_conversations: usize| {
                let simulate_time = simulate_start.elapsed();
                let (instances, mode_switches) = (r.instances, r.mode_switches);
                let summarize_start = std::time::Instant::now();
                let (s, timeline_rows) = rayon::join(
                    || {
                        summary.finish(
                            &d.name,
                            num_conversations,
                            instances,
                            mode_switches,
                            &sc.resolved.percentiles,
                        )
                    },
                    || {
                        // The first run's rows start the file, with its header: they are then
                        // `timeline.csv` as they are, not copied after it (≈ 30 page faults of a
                        // fresh buffer on Vidur's run).
                        let mut rows = if k == 0 && timeline {
                            output::timeline_csv_header()
                        } else {
                            Vec::new()
                        };
                        output::push_timeline_rows(&mut rows, &d.name, &r.timeline);
                        rows
                    },
                );
                let timing = RunTiming {
                    policy: d.name.clone(),
                    simulate: simulate_time,
                    num_events: r.num_events,
                    summarize: summarize_start.elapsed(),
                };
                (s, r.timeline, timeline_rows, timing)
            };
        let (s, timeline, timeline_rows, timing) = match rows {
            None => {
                let (r, n) = simulate(&mut summary, &mut |_| {}, Vec::new());
                summarize(r, summary, n)
            }
            Some(mut rows) if !offload => {
                let (r, n) = simulate(&mut summary, &mut |r| rows.push(&r), Vec::new());
                rows.finish()?;
                summarize(r, summary, n)
            }
            // A core would idle: the rows go, in batches and in emission order, to a thread that
            // formats and writes them while the simulation goes on (the same bytes), drops the
            // records and sends each batch back, empty, for the simulation to refill. A record
            // has no count its two threads would both update: its names are interned and its
            // conversation id is, on a fed run, the one the simulation no longer holds
            // (`Simulation::record_conversation_id`).
            Some(mut rows) => std::thread::scope(|ts| -> Result<_> {
                type Batch = Vec<crate::metrics::RequestRecord>;
                let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(ROWS_IN_FLIGHT);
                let (done_tx, done_rx) = std::sync::mpsc::channel::<Batch>();
                let fed = matches!(workload, Workload::Fed(_));
                let writer = ts.spawn(move || {
                    // Beside a fed run's trace reader, the writer too yields to the run, and
                    // to the reader.
                    if fed {
                        crate::commands::feed::yield_to_run(cores.as_ref(), crate::commands::feed::WRITER_NICE);
                    }
                    // The writer looks for batches every ROW_POLL rather than waiting on the
                    // channel: a send to a waiting receiver wakes it, a system call (and, on a
                    // virtual machine, an interrupt to the other CPU) paid on the run's thread.
                    let next_batch = || loop {
                        match rx.try_recv() {
                            Ok(batch) => return Some(batch),
                            Err(std::sync::mpsc::TryRecvError::Empty) => std::thread::sleep(ROW_POLL),
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                        }
                    };
                    while let Some(mut batch) = next_batch() {
                        for r in &batch {
                            rows.push(r);
                        }
                        batch.clear();
                        // The simulation may have ended: its batches are then dropped here.
                        let _ = done_tx.send(batch);
                    }
                    rows.finish()
                });
                let mut batch = Vec::with_capacity(ROW_BATCH);
                // Batches for when the writer has handed none back, in the order their pages
                // are faulted in.
                let stock: Vec<Batch> = (0..row_batch_stock(w.num_conversations.unwrap_or(0)))
                    .map(|_| Vec::with_capacity(ROW_BATCH))
                    .collect();
                let spare = stock.iter().map(crate::prefault::Span::spare).collect();
                let mut stock = stock.into_iter();
                let (r, n) = simulate(
                    &mut summary,
                    &mut |r| {
                        batch.push(r);
                        if batch.len() == ROW_BATCH {
                            let next = match done_rx.try_recv() {
                                Ok(emptied) => {
                                    assert!(emptied.is_empty(), "the writer sent back a batch with records");
                                    emptied
                                }
                                Err(_) => stock.next().unwrap_or_else(|| Vec::with_capacity(ROW_BATCH)),
                            };
                            // The receiver only goes away by panicking, which the join reports.
                            let _ = tx.send(std::mem::replace(&mut batch, next));
                        }
                    },
                    spare,
                );
                if !batch.is_empty() {
                    let _ = tx.send(batch);
                }
                drop(tx);
                let done = summarize(r, summary, n);
                writer.join().expect("the requests.csv writer panicked")?;
                Ok(done)
            })?,
        };
        drop(pin);
        rayon::spawn(move || drop(leftovers));
        let requests_per_run = match &source {
            RunSource::Built(_) => built_requests_per_run,
            RunSource::Fed(feed) => feed.turns_fed(),
        };
        // The rest of the run's requests, turns its conversations did not reach included.
        assert!(
            simulated <= requests_per_run,
            "{}: {simulated} requests of {requests_per_run} turns",
            d.name
        );
        bar.inc(requests_per_run - simulated / PROGRESS_EVERY * PROGRESS_EVERY);
        let overrun = match w.arrival {
            ArrivalSpec::Setup { setup_s, .. } if setup > 0 && setup_end_ms > setup_s * 1000.0 => {
                Some((d.name.clone(), setup_end_ms / 1000.0))
            }
            _ => None,
        };
        Ok((s, lat, timeline, timeline_rows, timing, overrun))
    };
    // Runs in scenario order, each taken by the first free thread (a FIFO scope; rayon's halving
    // split of a parallel iterator would pair runs 0–1 and 2–3 on two threads whatever they
    // cost). A run writes its rows into requests.csv itself once every earlier run's are there;
    // what it wrote before is copied in then, while the other runs simulate.
    let slots: Vec<std::sync::Mutex<Option<Result<_>>>> = deployments.iter().map(|_| Default::default()).collect();
    let merge = std::thread::scope(|ts| {
        // The hand-overs and copies are done by a thread of their own, in run order, so a core
        // that finishes a run starts the next instead of copying an earlier run's rows.
        let (tx, merger) = match requests {
            Some(dir) => {
                let (tx, rx) = std::sync::mpsc::channel::<usize>();
                let (runs, sinks) = (deployments.len(), &sinks);
                let merger = ts.spawn(move || {
                    let mut merge = PartMerge::new(runs);
                    merge.run_finished(None, sinks, dir);
                    for k in rx {
                        merge.run_finished(Some(k), sinks, dir);
                    }
                    merge
                });
                (Some(tx), Some(merger))
            }
            None => (None, None),
        };
        rayon::scope_fifo(|scope| {
            for (k, d) in deployments.iter().enumerate() {
                let (slots, run_one, tx) = (&slots, &run_one, tx.clone());
                scope.spawn_fifo(move |_| {
                    let r = run_one(k, d);
                    let ok = r.is_ok();
                    *slots[k].lock().expect("a run panicked") = Some(r);
                    if let (true, Some(tx)) = (ok, tx) {
                        // The merger only goes away by panicking, which its join reports.
                        let _ = tx.send(k);
                    }
                });
            }
        });
        drop(tx);
        merger.map(|m| m.join().expect("the requests.csv merger panicked"))
    });
    let results = slots
        .into_iter()
        .map(|s| s.into_inner().expect("a run panicked").expect("every run ran"));
    bar.finish_and_clear();
    let mut out = RunResults {
        summaries: Vec::new(),
        latencies: Vec::new(),
        timeline: Vec::new(),
        timeline_csv: Vec::new(),
        setup_overruns: Vec::new(),
        workload: workload_time,
        run_timings: Vec::new(),
    };
    for res in results {
        let (s, l, t, t_rows, timing, overrun) = res?;
        out.run_timings.push(timing);
        out.setup_overruns.extend(overrun);
        if !t.is_empty() {
            out.timeline.push(crate::sim::PolicyTimeline {
                policy: s.policy.clone(),
                samples: t,
            });
        }
        // The first run's rows hold the header (`summarize`).
        if out.timeline_csv.is_empty() {
            out.timeline_csv = t_rows;
        } else {
            out.timeline_csv.extend_from_slice(&t_rows);
        }
        out.summaries.push(s);
        out.latencies.extend(l);
    }
    if let Some(merge) = merge {
        if let Some(e) = merge.error {
            return Err(e);
        }
        assert_eq!(merge.next, deployments.len(), "every run's rows are in requests.csv");
    }
    // The workload (an allocation or more per conversation) is freed on the pool: 0.40–0.61 ms
    // for Vidur's 10,000 conversations (timed), off the caller's way.
    if let Workload::Built(convs) = workload {
        rayon::spawn(move || drop(convs));
    }
    Ok(out)
}

/// Warns (stderr, even with `-q`) about runs whose setup phase overran the window's opening.
pub(crate) fn warn_setup_overruns(sc: &LoadedScenario, overruns: &[(String, f64)]) {
    if let (ArrivalSpec::Setup { setup_s, .. }, false) = (&sc.resolved.workload.arrival, overruns.is_empty()) {
        let list: Vec<String> = overruns.iter().map(|(p, t)| format!("{p} until {t:.1} s")).collect();
        eprintln!(
            "warning: the setup phase was still running when the measured window opened at setup_s = {setup_s} s ({}): its work delays the measured turns; raise `arrival.setup_s` above those times",
            list.join(", ")
        );
    }
}

/// Which optional files `run` writes, and whether it prints its phases' times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunOutputs {
    /// The figures in `plots/`.
    pub plots: bool,
    /// `requests.csv`.
    pub requests: bool,
    /// `--timings`: the table of [`timings_table`] on stderr.
    pub timings: bool,
    /// Feed a single-run trace replay its conversations as the trace is read
    /// ([`crate::commands::feed`]; `--read-trace-first` turns it off).
    pub feed_trace: bool,
}

/// The instants between the phases of [`exec_run`], in order.
struct PhaseMarks {
    started: std::time::Instant,
    loaded: std::time::Instant,
    staged: std::time::Instant,
    simulated: std::time::Instant,
    files_written: std::time::Instant,
    figures_drawn: std::time::Instant,
    committed: std::time::Instant,
    reported: std::time::Instant,
}

/// `ppdsim run --timings`' table: the wall time of each phase of the command in milliseconds,
/// in order, then the total. The phases are consecutive, so their rows add up to the total (to
/// the printed rounding); the process's start (before the command line is parsed) and exit are
/// not in it. Each run's simulation and summary are listed under "runs": on several threads
/// they overlap, so they add up to more than the row above them.
fn timings_table(load: &crate::scenario::LoadTimings, res: &RunResults, m: &PhaseMarks, plots: bool) -> String {
    use std::fmt::Write;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    // Load's own phases; the rest of load_with (reading and checking the scenario, the
    // clusters) is the scenario's row.
    let load_ms = ms(m.loaded - m.started);
    let (trace_ms, calibration_ms) = (ms(load.trace), ms(load.calibration));
    let simulate_with_ms = ms(m.simulated - m.staged);
    let workload_ms = ms(res.workload);
    let mut out = String::from("timings [ms, wall]:\n");
    let row = |out: &mut String, label: &str, value: f64, note: &str| {
        let _ = writeln!(out, "  {label:<24} {value:>9.2}{note}");
    };
    // A fed trace is read beside the run: its row goes under the runs, out of the sum.
    let fed = load.trace_fed;
    let sequential_trace_ms = if fed { 0.0 } else { trace_ms };
    row(&mut out, "scenario", load_ms - sequential_trace_ms - calibration_ms, "");
    if !fed {
        row(&mut out, "trace", trace_ms, "");
    }
    row(&mut out, "calibration", calibration_ms, "");
    row(&mut out, "output folder", ms(m.staged - m.loaded), "");
    let note = if fed { " (built as the run takes it)" } else { "" };
    row(&mut out, "workload", workload_ms, note);
    let (runs, threads) = (res.run_timings.len(), rayon::current_num_threads());
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let note = format!(" ({runs} run{} on {threads} thread{})", plural(runs), plural(threads));
    row(&mut out, "runs", simulate_with_ms - workload_ms, &note);
    if fed {
        let _ = writeln!(out, "    trace read and fed to the run meanwhile: {trace_ms:.2}");
    }
    for t in &res.run_timings {
        let _ = writeln!(
            out,
            "    {}: simulation {:.2} ({} events), summary and timeline {:.2}",
            t.policy,
            ms(t.simulate),
            t.num_events,
            ms(t.summarize)
        );
    }
    row(&mut out, "files", ms(m.files_written - m.simulated), "");
    let note = if plots { "" } else { " (--no-plots)" };
    row(&mut out, "figures", ms(m.figures_drawn - m.files_written), note);
    row(&mut out, "commit", ms(m.committed - m.figures_drawn), "");
    row(&mut out, "report", ms(m.reported - m.committed), "");
    let note = " (the process's start and exit not included)";
    row(&mut out, "total", ms(m.reported - m.started), note);
    out
}

pub(crate) fn exec_run(
    scenario: &Path,
    set: &[String],
    output: Option<PathBuf>,
    flags: WriteFlags,
    outputs: RunOutputs,
    decode_runs: bool,
) -> Result<i32> {
    let WriteFlags { quiet, force } = flags;
    let RunOutputs {
        plots,
        requests,
        timings,
        feed_trace,
    } = outputs;
    let started = std::time::Instant::now();
    // The thread pool starts while the scenario and its trace are read (its first use, the
    // trace's parse, would otherwise wait for its threads).
    rayon::spawn(|| {});
    let dest_of = |name: &str| output.clone().unwrap_or_else(|| Path::new("output").join(name));
    let parts = ScenarioParts::read(scenario, set)?;
    // A trace replay of one run is fed its conversations as the trace is read, when its results
    // folder's parent exists (staging then makes no folder the ordinary path would not have
    // made before refusing a bad trace); anything else, and any error on that path, takes the
    // ordinary one, which reports the error.
    let fed_trace = parts
        .fed_trace()
        .filter(|_| feed_trace && crate::outdir::parent_exists(&dest_of(parts.name())));
    let (parts, fed) = match fed_trace {
        None => (Some(parts), None),
        Some(trace_path) => {
            let reader = TraceReader::start(trace_path.clone());
            let fed = parts.load_for_feed(scenario).and_then(|mut sc| {
                sc.decode_runs = decode_runs;
                let dest = dest_of(&sc.resolved.name);
                let loaded = std::time::Instant::now();
                let staged = OutputDir::create(&dest, force, "run").ok()?;
                let t0 = std::time::Instant::now();
                let sinks = RunSinks::of_run(&staged, quiet, requests, plots);
                let check = sc
                    .whole_trace_check(scenario, &trace_path)
                    .making_resolved_toml_for(&dest);
                let (res, mut trace) = simulate_fed(&sc, reader, check, sinks).ok()??;
                sc.load_timings = crate::scenario::LoadTimings {
                    trace: trace.read,
                    calibration: sc.load_timings.calibration,
                    trace_fed: true,
                };
                let resolved_toml = trace.resolved_toml.take();
                sc.accept_fed_trace(trace)
                    .then_some((sc, dest, staged, res, loaded, t0, resolved_toml))
            });
            (None, fed)
        }
    };
    let (sc, dest, staged, res, loaded, t0, fed_resolved_toml) = match fed {
        Some(fed) => fed,
        None => {
            // The scenario file is read again only when the feed was tried and failed.
            let parts = match parts {
                Some(parts) => parts,
                None => ScenarioParts::read(scenario, set)?,
            };
            let mut sc = parts.load(scenario)?;
            let loaded = std::time::Instant::now();
            sc.decode_runs = decode_runs;
            let dest = dest_of(&sc.resolved.name);
            // Refuse a bad destination before simulating.
            let staged = OutputDir::create(&dest, force, "run")?;
            let t0 = std::time::Instant::now();
            let res = simulate_with(&sc, RunSinks::of_run(&staged, quiet, requests, plots))?;
            (sc, dest, staged, res, loaded, t0, None)
        }
    };
    let simulated = std::time::Instant::now();
    warn_setup_overruns(&sc, &res.setup_overruns);
    let name_of = |p: &Path| {
        p.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
    };
    let run = output::RunInfo {
        ppdsim_version: env!("CARGO_PKG_VERSION").into(),
        scenario: sc.resolved.name.clone(),
        seed: sc.resolved.seed,
        model: sc.resolved.model.clone(),
        gpu: sc.resolved.gpu.clone(),
        calibration: name_of(&sc.resolved.calibration),
        calibration_uncalibrated: {
            let notes: Vec<String> = sc
                .uncalibrated()
                .into_iter()
                .map(|(f, why)| format!("{}: {why}", name_of(&f)))
                .collect();
            (!notes.is_empty()).then(|| notes.join("; "))
        },
        trace: sc
            .resolved
            .workload
            .trace
            .as_deref()
            .map_or("synthetic".into(), name_of),
        num_conversations: res.summaries.first().map_or(0, |s| s.num_conversations),
    };
    let rows = output::write_summaries(&staged, &run, &res.summaries)?;
    debug_assert_eq!(res.timeline_csv, output::timeline_csv(&res.timeline));
    staged.write("timeline.csv", &res.timeline_csv)?;
    let resolved_toml = match fed_resolved_toml {
        // A fed run's reader made it while the run went on.
        Some(toml) => {
            debug_assert_eq!(toml, sc.resolved_toml_in(&dest));
            toml
        }
        None => sc.resolved_toml_in(&dest),
    };
    staged.write("scenario.resolved.toml", resolved_toml.as_bytes())?;
    let files_written = std::time::Instant::now();
    if plots {
        let policies: Vec<String> = res.summaries.iter().map(|s| s.policy.clone()).collect();
        crate::plot::run_figures(
            &staged,
            &crate::plot::RunPlots {
                summary: &rows,
                policies: &policies,
                // Drawn from the run's own latencies, with or without requests.csv.
                requests: Some(&res.latencies),
                timeline: &res.timeline,
                slo: Some(sc.resolved.slo),
            },
        )?;
    }
    let figures_drawn = std::time::Instant::now();
    staged.commit(Stale::Remove)?;
    let committed = std::time::Instant::now();
    // Said even with --quiet: every figure of this run rests on them.
    for (file, why) in sc.uncalibrated() {
        eprintln!("warning: {} is UNCALIBRATED — {why}", file.display());
    }
    if !quiet {
        println!(
            "scenario {}: {} conversations, {} runs (routers × clusters), seed {}, KV capacity {} tokens/instance",
            sc.resolved.name,
            res.summaries.first().map_or(0, |s| s.num_conversations),
            res.summaries.len(),
            sc.resolved.seed,
            sc.kv_capacity_tokens
        );
        print!("{}", output::summary_table(&res.summaries));
        eprint!(
            "{}",
            output::rejection_warnings(&res.summaries, sc.resolved.engine.max_model_len)
        );
        println!(
            "wrote {} ({:.2} s, {} events)",
            dest.display(),
            t0.elapsed().as_secs_f64(),
            res.num_events()
        );
    }
    if timings {
        let marks = PhaseMarks {
            started,
            loaded,
            staged: t0,
            simulated,
            files_written,
            figures_drawn,
            committed,
            reported: std::time::Instant::now(),
        };
        eprint!("{}", timings_table(&sc.load_timings, &res, &marks, plots));
    }
    // Freed on the pool, off the way to the exit (one or more allocations per trace line and
    // per summary column: 3.4 M instructions for Vidur's run by callgrind).
    rayon::spawn(move || drop((sc, res)));
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::{part_name, row_batch_stock, PartMerge, RowSink};
    use crate::outdir::OutputDir;
    use std::path::PathBuf;

    /// A staging directory `ppdsim-part-merge-NAME-PID` under the temporary directory and a sink
    /// for each of `runs` runs; the caller removes the directory.
    fn staging(name: &str, runs: usize) -> (PathBuf, OutputDir, Vec<RowSink>) {
        let dest = std::env::temp_dir().join(format!("ppdsim-part-merge-{name}-{}", std::process::id()));
        let dir = OutputDir::create(&dest, false, "run").expect("staging");
        let sinks = (0..runs)
            .map(|k| RowSink::new(dir.path(&part_name(k)).unwrap()))
            .collect();
        (dest, dir, sinks)
    }

    #[test]
    fn a_run_sets_aside_a_row_batch_per_256_conversations_up_to_the_batches_in_flight() {
        // Vidur's 10,000 conversations would fill 40 batches: 16 (ROWS_IN_FLIGHT) are set aside.
        assert_eq!(row_batch_stock(10_000), 16);
        assert_eq!(row_batch_stock(4096), 16);
        assert_eq!(row_batch_stock(257), 2);
        assert_eq!(row_batch_stock(256), 1);
        // A count the scenario leaves to the trace (0 here) still gets one.
        assert_eq!(row_batch_stock(0), 1);
    }

    #[test]
    fn rows_merge_in_run_order_whatever_order_the_runs_finish() {
        let (dest, dir, sinks) = staging("order", 5);
        let part = |k: usize| &sinks[k].part;
        let write = |k: usize, text: &str| sinks[k].write(text.as_bytes()).unwrap();
        let close = |k: usize| sinks[k].close().unwrap();
        let is_part = |k: usize| part(k).exists();
        let mut merge = PartMerge::new(5);
        // The merger starts: run 0 writes to requests.csv from its first row, with no part.
        merge.run_finished(None, &sinks, &dir);
        assert_eq!((merge.next, merge.handed_over), (0, true));
        write(0, "header\n");
        assert!(!is_part(0) && dir.path("requests.csv").unwrap().exists());
        // Runs 1–3 run beside it: each gets a part at its first row (run 4 has not started).
        write(1, "b1\n");
        write(2, "c\n");
        write(3, "d1\n");
        assert!(is_part(1) && is_part(2) && is_part(3) && !is_part(4));
        // Run 2 finishes first: nothing can be merged before run 0.
        close(2);
        merge.run_finished(Some(2), &sinks, &dir);
        assert_eq!(merge.next, 0);
        write(0, "a\n");
        close(0);
        // Run 0 done: run 1's rows so far are copied, its next rows go to requests.csv.
        merge.run_finished(Some(0), &sinks, &dir);
        assert_eq!((merge.next, merge.handed_over), (1, true));
        assert!(!is_part(1) && is_part(2) && is_part(3));
        write(1, "b2\n");
        write(3, "d2\n");
        close(1);
        // Run 1 releases finished run 2 (its whole part copied) and hands running run 3 over.
        merge.run_finished(Some(1), &sinks, &dir);
        assert_eq!((merge.next, merge.handed_over), (3, true));
        assert!(!is_part(2) && !is_part(3));
        write(3, "d3\n");
        close(3);
        // Run 3 done: run 4, not started, is handed over before its first row and never has a part.
        merge.run_finished(Some(3), &sinks, &dir);
        assert_eq!((merge.next, merge.handed_over), (4, true));
        write(4, "e\n");
        assert!(!is_part(4));
        close(4);
        merge.run_finished(Some(4), &sinks, &dir);
        assert_eq!(merge.next, 5);
        assert!(merge.error.is_none());
        drop(merge);
        let csv = std::fs::read_to_string(dir.path("requests.csv").unwrap()).unwrap();
        assert_eq!(csv, "header\na\nb1\nb2\nc\nd1\nd2\nd3\ne\n");
        drop(dir);
        let _ = std::fs::remove_dir_all(&dest);
    }

    #[test]
    fn runs_that_finished_before_the_merger_started_are_merged_whole() {
        let (dest, dir, sinks) = staging("finished", 2);
        let part = |k: usize| &sinks[k].part;
        for (k, text) in ["header\na\n", "b\n"].iter().enumerate() {
            sinks[k].write(text.as_bytes()).unwrap();
            sinks[k].close().unwrap();
        }
        let mut merge = PartMerge::new(2);
        merge.run_finished(Some(1), &sinks, &dir);
        merge.run_finished(Some(0), &sinks, &dir);
        assert_eq!(merge.next, 2);
        assert!(merge.error.is_none());
        drop(merge);
        let csv = std::fs::read_to_string(dir.path("requests.csv").unwrap()).unwrap();
        assert_eq!(csv, "header\na\nb\n");
        assert!(!part(0).exists() && !part(1).exists());
        drop(dir);
        let _ = std::fs::remove_dir_all(&dest);
    }

    #[test]
    fn the_progress_bar_counts_every_request_of_every_run() {
        // The default scenario's 5 runs of 1,000 ShareGPT conversations (4,118 turns): every turn
        // is a request of each run, counted 4,096 at a time and the rest at each run's end.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/default.toml");
        let sc = crate::scenario::LoadedScenario::load(&path).expect("loads");
        let turns: u64 = sc.trace.iter().take(1000).map(|c| c.turns.len() as u64).sum();
        assert!(
            turns > super::PROGRESS_EVERY,
            "both ways of advancing the bar are taken"
        );
        let bar = indicatif::ProgressBar::hidden();
        let res = super::simulate_with(
            &sc,
            super::RunSinks {
                bar: bar.clone(),
                ..super::RunSinks::summaries_only()
            },
        )
        .expect("simulates");
        let runs = res.summaries.len() as u64;
        assert_eq!(runs, 5);
        assert_eq!(bar.length(), Some(runs * turns));
        assert_eq!(bar.position(), runs * turns);
        // Every request was simulated to an end, succeeded or failed: the bar counted them all.
        let ended: usize = res.summaries.iter().map(|s| s.num_requests + s.num_failed).sum();
        assert_eq!(ended as u64, runs * turns);
    }
}

#[cfg(test)]
mod trace_reader_tests {
    use super::TraceReader;
    use crate::commands::feed::{FedConversations, TraceFeeder};

    /// Vidur's shipped trace: 10,000 one-turn conversations `vidur-1`, `vidur-2`, ….
    fn vidur() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/vidur-arxiv-qps2-10000.jsonl.gz")
    }

    /// A feeder of `count` conversations (speed-up 1, no think time, any KV footprint).
    fn feeder(count: usize) -> (TraceFeeder, FedConversations) {
        let (tx, rx) = std::sync::mpsc::channel();
        let think = crate::sim::workload::ThinkTimeSpec::Constant { value_s: 0.0 };
        let replay = crate::sim::workload::TraceReplay::new(1.0, &think, crate::rng::RngStreams::new(1));
        let feeder = TraceFeeder::new(tx, count, replay, 0, u64::MAX, indicatif::ProgressBar::hidden());
        (feeder, FedConversations::new(rx, count, false))
    }

    /// The checks of Vidur's scenario, made of a whole trace.
    fn vidur_check() -> crate::scenario::WholeTraceCheck {
        let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/vidur-arxiv-qps2.toml");
        let sc = crate::scenario::LoadedScenario::load(&scenario).expect("the shipped scenario loads");
        sc.whole_trace_check(&scenario, &vidur())
    }

    #[test]
    fn the_whole_trace_check_makes_the_resolved_toml_only_when_asked() {
        let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/vidur-arxiv-qps2.toml");
        let sc = crate::scenario::LoadedScenario::load(&scenario).expect("the shipped scenario loads");
        assert_eq!(vidur_check().resolved_toml(), None);
        // Paths relative to the output folder, two levels below the repository here.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("output/some-run");
        let toml = vidur_check().making_resolved_toml_for(&dir).resolved_toml();
        assert_eq!(toml.as_deref(), Some(sc.resolved_toml_in(&dir).as_str()));
        let toml = toml.expect("made");
        assert!(
            toml.contains("trace = \"../../traces/vidur-arxiv-qps2-10000.jsonl.gz\""),
            "{toml}"
        );
    }

    #[test]
    fn the_whole_trace_check_refuses_what_loading_the_scenario_refuses() {
        let check = vidur_check();
        let convs = crate::trace::read_trace(&vidur()).unwrap();
        let lines: Vec<usize> = (1..=convs.len()).collect();
        assert!(check.passes(&convs, &lines));
        // Repeated ids, no conversation, or fewer than the scenario's 10,000: refused.
        let mut repeated = convs.clone();
        repeated[9_999].id = repeated[0].id.clone();
        assert!(!check.passes(&repeated, &lines));
        assert!(!check.passes(&[], &[]));
        assert!(!check.passes(&convs[..9_999], &lines[..9_999]));
    }

    #[test]
    fn regions_read_before_the_feeder_comes_go_to_the_run_first() {
        let reader = TraceReader::start(vidur());
        // Most or all of the trace is read before the feeder is sent.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (f, mut run) = feeder(3);
        reader
            .feeder
            .send((Box::new(f), None, Box::new(vidur_check())))
            .unwrap();
        let ids: Vec<String> = std::iter::from_fn(|| run.next()).map(|c| c.id.to_string()).collect();
        assert_eq!(ids, ["vidur-1", "vidur-2", "vidur-3"]);
        let read = reader.thread.join().unwrap();
        // The reader checked the whole trace, as loading the scenario does.
        assert!(read.ok && read.checks_passed);
        let (convs, lines) = read.trace.expect("nothing refused");
        assert_eq!((convs.len(), lines.len(), lines[9999]), (10_000, 10_000, 10_000));
    }

    #[test]
    fn a_reader_whose_run_never_comes_stops_and_keeps_nothing() {
        let reader = TraceReader::start(vidur());
        drop(reader.feeder);
        let read = reader.thread.join().unwrap();
        // It stopped at its first region (the sender was gone long before the trace's end).
        assert!(!read.ok && read.trace.is_none());
    }
}

//! The command line (clap derive). Every subcommand's doc comment is its `--help`.
//!
//! Exit codes: 0 success; 1 unexpected error; 2 usage error; 3 invalid input file (scenario,
//! trace, measurements) or a failed `--strict` physics check.

use crate::calibrate::CalibrateOptions;
use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// ppdsim: should a multi-turn append-prefill run on the prefill machine (and pay a KV transfer)
/// or stay on the decode machine that holds the context? Fits a cost model to measured GPU
/// timings and replays multi-turn traces through PD, PPD, replication and adaptive routing.
///
/// Exit codes: 0 ok, 1 error, 2 usage, 3 invalid input file or failed --strict check.
#[derive(Parser, Debug)]
#[command(name = "ppdsim", version, about, long_about)]
pub struct Cli {
    /// Subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Simulate every router of a scenario on each of its clusters, on identical requests; print
    /// a table per run and
    /// write requests.csv, summary.csv, summary.json, timeline.csv, scenario.resolved.toml and
    /// plots/ (latency_by_policy, latency_cdf, ttft_by_turn with its CSV, timeline_POLICY; PNG
    /// and SVG).
    Run {
        /// Scenario TOML (e.g. scenarios/default.toml).
        scenario: PathBuf,
        /// Override a key of the file, validated exactly as if written there: dotted
        /// (`workload.arrival.rate_per_s=8`, `router.1.max_local_append_tokens=64` for the second
        /// router), repeatable; the value is TOML (`[1, 2]`, `{ kind = "burst" }`) or a string.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Output directory [default: output/NAME, NAME from the scenario].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Quiet and force.
        #[command(flatten)]
        flags: WriteFlags,
        /// Write the CSV and JSON files only, no plots (`ppdsim plot DIR` draws them later):
        /// for batch runs and benchmarks, where drawing can take longer than simulating.
        #[arg(long)]
        no_plots: bool,
        /// Write no requests.csv (a row per request: 1.8 GB for a million 3-turn conversations ×
        /// 4 policies); the summaries, timeline and figures are the same. `ppdsim plot DIR` then
        /// leaves the latency CDFs and TTFT-by-turn figures as the run drew them.
        #[arg(long)]
        no_requests: bool,
        /// Simulate every decode iteration as its own event instead of planning decode-only runs
        /// of iterations at once: identical results, slower (for checking and profiling).
        #[arg(long)]
        step_path: bool,
        /// Read the whole trace before simulating. Without it, a scenario of one run that
        /// replays a trace at its recorded arrivals (`arrival.kind = "trace"`) is fed the
        /// conversations as the trace is read, its reading overlapping the simulation (on 2 or 3
        /// CPUs the simulation then keeps one to itself): identical files either way (for
        /// checking and timing that path, or on a machine shared with other busy work).
        #[arg(long)]
        read_trace_first: bool,
        /// Print to stderr, after the run, how long each phase took in wall milliseconds
        /// (reading the scenario, the trace and the calibration; building the workload; each
        /// run's simulation and summary; writing the files and figures; the commit), even with
        /// --quiet: what bounds a run's speed, without a profiler.
        #[arg(long)]
        timings: bool,
    },
    /// Run a scenario over a grid — arrival rates × seeds × router-parameter values (a sweep
    /// TOML: `scenario`, `rates_per_s`, optional `seeds`, `metrics`, `[[vary]]`) — in parallel;
    /// print the seed-averaged curves and where policies cross; write sweep.csv,
    /// crossovers.csv, goodput.csv (DistServe's goodput: the highest rate meeting the SLO
    /// attainment target, and per GPU), sweep.resolved.toml, plots/METRIC.{png,svg} and, for each
    /// varied router, plots/heatmap_ROUTER_METRIC.{png,svg} (its settings × load).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Sweep {
        /// `merge`: combine the shards of a sharded sweep.
        #[command(subcommand)]
        action: Option<SweepAction>,
        /// Sweep TOML (e.g. sweeps/default-load.toml).
        #[arg(required = true)]
        sweep: Option<PathBuf>,
        /// Run only slice I of N (I from 0 to N−1; points k with k mod N = I, in grid order) into
        /// its own directory [default: output/sweep-STEM/shard-I-of-N]; `ppdsim sweep merge`
        /// combines the N directories into exactly what one unsharded run writes.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Simulate every decode iteration as its own event (as `run --step-path`): identical
        /// results, slower.
        #[arg(long)]
        step_path: bool,
        /// Override a key of the file, validated exactly as if written there: dotted
        /// (`workload.arrival.rate_per_s=8`, `router.1.max_local_append_tokens=64` for the second
        /// router), repeatable; the value is TOML (`[1, 2]`, `{ kind = "burst" }`) or a string.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run a grid larger than the ceiling of 10,000 runs (the size is printed before starting).
        #[arg(long)]
        yes: bool,
        /// Output directory [default: output/sweep-STEM, STEM from the sweep file name].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write the CSV files only, no plots (`ppdsim plot DIR` draws them later). A shard
        /// draws none either way.
        #[arg(long)]
        no_plots: bool,
        /// Quiet and force.
        #[command(flatten)]
        flags: WriteFlags,
    },
    /// The (L, m) routing map from the cost model alone: for each context L and append m, the
    /// cost (TTFT + running decodes × their stall) of prefilling on the decode instance (local)
    /// vs on a prefill instance with a KV transfer (remote), and the m from which remote wins
    /// (on the grid, and the exact crossover token by token inside the grid step below it).
    /// Writes routing_map.csv, boundary.csv, routing_map.resolved.toml (which `--config` runs
    /// again as it is) and plots/routing_map.{png,svg}.
    RoutingMap {
        /// Calibrated model (coefficients, PD handoff, KV link).
        #[arg(short, long, default_value = "calibration/h100-llama3.1-8b.json")]
        calibration: PathBuf,
        /// Take every parameter from a TOML file instead of the options (the keys of
        /// `routing_map.resolved.toml`; its relative paths start at the file's directory).
        #[arg(long, value_name = "FILE", conflicts_with_all = [
            "calibration", "bandwidth_gbps", "latency_ms", "transfer", "decode_batch",
            "decode_context_tokens", "token_budget", "p_recomputes_context", "context_tokens",
            "append_tokens",
        ])]
        config: Option<PathBuf>,
        /// Override a parameter, validated exactly as if written in the file: a key of
        /// `routing_map.resolved.toml` (`decode_batch=64`, `context_tokens=[1024, 8192]`,
        /// `transfer=incremental`), repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Link, load and transfer options.
        #[command(flatten)]
        options: MapOptions,
        /// Context lengths L in tokens, comma-separated (default: seed 000's grid).
        #[arg(long, value_delimiter = ',', default_values_t = [512, 1024, 2048, 4096, 8192, 16384])]
        context_tokens: Vec<u32>,
        /// Append lengths m in tokens, comma-separated (default: seed 000's grid).
        #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048])]
        append_tokens: Vec<u32>,
        /// Output directory [default: output/routing-map].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Quiet and force.
        #[command(flatten)]
        flags: WriteFlags,
    },
    /// Fit the iteration-time model, fixed overheads and KV link to measurement files (format
    /// detected from content), fit each source group alone and compare them, check everything
    /// against physics, and write the model JSON and a measured-vs-predicted plot
    /// (`<output stem>.fit.png` and `.fit.svg`).
    Calibrate {
        /// Measurement files: LLMServingSim layers CSV(.gz), AIConfigurator kernel tables,
        /// SplitwiseSim perf_model.csv, KV-transfer tables, seed-000 P-PD framework JSON,
        /// vllm-ppd result JSON, native JSON lines (see `--format`).
        #[arg(required_unless_present = "roofline_from")]
        files: Vec<PathBuf>,
        /// Write a model for `--gpu`, which has no measurements, from the calibrated model of the
        /// same LLM on another GPU, scaled by the roofline of src/specs.toml (memory-bound
        /// coefficients by HBM bandwidth, compute-bound ones by dense BF16 peak; the reference's
        /// efficiencies kept; with `--tp`, sharded over that many GPUs plus the all-reduces over
        /// their interconnect). The model is marked uncalibrated and every output using it says so.
        #[arg(long, value_name = "MODEL_JSON", conflicts_with = "files")]
        roofline_from: Option<PathBuf>,
        /// Output model file (replaced only when it is a ppdsim calibration, or with --force; never
        /// one of the inputs).
        #[arg(short, long, default_value = "output/calibration/model.json")]
        output: PathBuf,
        /// Replace the output files even when they are not ppdsim's.
        #[arg(long)]
        force: bool,
        /// Print nothing but errors (no report, no progress).
        #[arg(short, long)]
        quiet: bool,
        /// Model name in the spec table.
        #[arg(long, default_value = "llama-3.1-8b")]
        model: String,
        /// GPU name in the spec table.
        #[arg(long, default_value = "h100-sxm")]
        gpu: String,
        /// Tensor-parallel degree of one instance.
        #[arg(long, default_value_t = 1)]
        tp: u32,
        /// KV link bandwidth used when the data cannot identify it [Gbit/s].
        #[arg(long, default_value_t = 1200.0)]
        declared_bandwidth_gbps: f64,
        /// Force one reader for every file instead of detecting it from content.
        #[arg(long, value_enum, default_value = "auto")]
        format: crate::calibrate::readers::Format,
        /// Where β2 (prefill attention over context) comes from: `kernel-table` — FlashAttention
        /// 3's measured cost (AIConfigurator's H100 table; Llama-3.1-8B on H100 SXM only), `flash`
        /// — FlashAttention's FLOP cost at the throughput β1 implies (vLLM runs FlashAttention),
        /// `fitted` — the profiles' own (eager attention for LLMServingSim's), or `auto` —
        /// kernel-table (else flash) when a source's profiles ran eager attention, fitted
        /// otherwise.
        #[arg(long, value_enum, default_value = "auto")]
        attention: crate::calibrate::AttentionModel,
        /// Exit with code 3 when a physics check fails (the model file is not written).
        #[arg(long)]
        strict: bool,
        /// Do not replay loaded points (vllm-ppd comprehensive files or directories among the
        /// inputs) to fit where the PD handoff's work is serialized.
        #[arg(long)]
        no_replay: bool,
        /// Replay fit without its leave-one-configuration-out cross-validation (5× faster).
        #[arg(long)]
        no_cross_validation: bool,
        /// Keep the regression's per-sequence decode cost β3 instead of refitting it (β0 + β3
        /// held) to the loaded points' turn-1 and turn-2 mean TPOT before the overheads.
        #[arg(long)]
        no_decode_refit: bool,
        /// Per-token chance that an answer the client resends as text re-tokenises differently,
        /// which ends the next turn's prefix-cache hit there (the rest of the answer is
        /// recomputed): direct turn-2 request samples and the replays recompute the answer's
        /// unmatched tail. 0 (the default) reuses answers whole; vllm-ppd's cache-info runs fit
        /// 0.0011 (docs/validation.md). Recorded in the model file when > 0; `validate` uses it.
        #[arg(long, value_name = "P", default_value_t = 0.0)]
        answer_mismatch_per_token: f64,
        /// Which overheads the replay of loaded points and low-QPS files fits: `handoff-and-request`
        /// (the PD handoff's whole and serialized shares, the request overhead and its
        /// per-prompt-token part) or `handoff` (the handoff's three only).
        #[arg(long, value_enum, default_value = "handoff-and-request")]
        replay_params: crate::calibrate::replay::ReplayParams,
        /// Coefficient of variation of the serialized overhead services (lognormal, keyed draws;
        /// `validate --overhead-service-cv`) with which the replays fit the overheads' means;
        /// recorded in the model file when > 0, where `run` and `validate` use it. Default 0:
        /// deterministic services.
        #[arg(long, value_name = "CV", value_parser = parse_service_cv, default_value_t = 0.0)]
        overhead_service_cv: f64,
        /// Fraction (0–1) of the vllm-ppd client's turns, sent the moment their previous turn
        /// ends, that lose its connection to a waiting request and queue behind the waiting ones,
        /// with which the replays fit the overheads; recorded in the model file when > 0, where
        /// `validate` uses it. Default 0 (docs/validation.md: the turn-2 p99 candidate).
        #[arg(long, value_name = "R", value_parser = parse_fraction, default_value_t = 0.0)]
        client_requeue_rate: f64,
        /// Per output chunk each API server streams (a step's tokens reach the client once the
        /// server has sent them), in ms, with which the replays fit β3 and the overheads;
        /// recorded in the model file when > 0, where `run` and `validate` use it. Default 0
        /// (docs/validation.md: 0.3 ms fits the interference bursts, seed 003's W1 rules it out).
        #[arg(long, value_name = "MS", value_parser = parse_stream_ms, default_value_t = 0.0)]
        stream_ms_per_chunk: f64,
        /// Hold each engine's admission work (engine time of a request's first admission,
        /// added to the step that first schedules it) at this many ms while the replays fit β3,
        /// D's KV load and the overheads. Without it the work is identified: the rest is fitted
        /// at a held value (from 0), the interference bursts say which value fits them with that
        /// rest, and the fit is redone there until the held value fits the bursts within 2% of
        /// their best (at most 4 passes; 0 when the bursts are not among the inputs). Recorded in
        /// the model file when > 0, where `run` and `validate` use it (docs/validation.md,
        /// "Current model: the admission work identified from the bursts").
        #[arg(long, value_name = "MS", value_parser = parse_engine_admit_ms)]
        engine_admit_ms: Option<f64>,
        /// Replay the interference bursts with cascade attention (a prefix every request of a
        /// batch shares read once, ≥ 256 tokens and ≥ 8 requests) while the admission work is
        /// identified from them; recorded in the model file, where `validate` uses it. The
        /// shipped model is fitted without it (docs/validation.md, the sensitivity).
        #[arg(long)]
        cascade_attention: bool,
        /// Where P's share of the PD handoff is done in the replays that fit the overheads:
        /// `prefill-engine` (P's engine, in the step that finishes each split prompt),
        /// `per-prefill` (a queue beside each P's engine) or `cluster` (one queue for all);
        /// recorded in the model file, where `run` and `validate` use it.
        #[arg(long, value_name = "MODE", value_enum, default_value_t = crate::sim::HandoffQueue::PrefillEngine)]
        pd_handoff_queue: crate::sim::HandoffQueue,
        /// Replay with P's engine waiting for the KV sends of the prompts each step completes
        /// (vLLM's P2pNcclConnector with PUT_ASYNC blocks in `wait_for_save`): each split
        /// prompt's transfer at the KV link's bandwidth lengthens P's step. Recorded in the model
        /// file, where `run` and `validate` use it. Default: the transfer runs beside P's engine.
        #[arg(long)]
        prefill_waits_for_send: bool,
        /// Hold D's engine time to load each received request's KV into its paged cache (in the
        /// step that first schedules it: vLLM's P2pNcclConnector `start_load_kv`) at this many
        /// ms in the replays, instead of fitting it with β3 to the loaded points' TPOTs (the
        /// default; 0 without the decode refit). Recorded in the model file when > 0, where `run`
        /// and `validate` use it.
        #[arg(long, value_name = "MS", value_parser = parse_kv_load_ms)]
        kv_load_ms: Option<f64>,
    },
    /// Redraw the plots of a results directory from its CSV files, without simulating: a `run`
    /// directory (summary.csv, requests.csv, timeline.csv), a `sweep` directory (sweep.csv; metrics and heatmaps as listed
    /// in its sweep.resolved.toml) or a `routing-map` directory (routing_map.csv). Every plot is
    /// written as PNG and SVG into RESULTS_DIR/plots, each file replaced whole.
    Plot {
        /// A directory written by `ppdsim run`, `sweep` or `routing-map`.
        results_dir: PathBuf,
        /// Quiet and force (`--force` draws into a directory without a ppdsim manifest).
        #[command(flatten)]
        flags: WriteFlags,
    },
    /// Run the simulator on measured points and print measured vs predicted latency with the
    /// error, point by point, then summaries. Supported (detected from content; directories are
    /// searched): vllm-ppd comprehensive sweep points (turn-1 and turn-2 p50/p99 TTFT and mean
    /// TPOT per point; median error below saturation per config with the run-to-run floor of
    /// the p50 and p99 (the simulator predicting its own replays), PD-vs-PPD winner agreement,
    /// saturation knees and their floor, the 10 worst points), low-QPS files (v3 on 4 GPUs, seed 003's 2-GPU
    /// re-run) and interference experiments (decode TPOT, batch time and inserted-prefill TTFT per
    /// setting). With `-o FILE`: the tables as CSV, and figures of the comprehensive points'
    /// measured vs predicted turn-2 TTFT and of the interference bursts' decode TPOT (PNG and
    /// SVG).
    Validate {
        /// Measured files or directories.
        #[arg(required = true)]
        measured: Vec<PathBuf>,
        /// Calibrated model to simulate with.
        #[arg(short, long, default_value = "calibration/h100-llama3.1-8b.json")]
        calibration: PathBuf,
        /// Also write the tables as CSV: the low-QPS table to FILE, the comprehensive one to
        /// FILE.comprehensive.csv (extension replaced), the interference one to
        /// FILE.interference.csv; and as figures (PNG and SVG) beside them, the comprehensive
        /// points' measured-vs-predicted turn-2 p50 and p99 TTFT below the knee per
        /// configuration (FILE.comprehensive.png) and the interference study's decode TPOT
        /// against the burst's size per setting kind (FILE.interference.png).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the CSV files and figures even when they are not ppdsim's validation tables
        /// (or beside one).
        #[arg(long)]
        force: bool,
        /// Print nothing but errors and the warning that the model is uncalibrated; needs
        /// `-o FILE`, whose tables and figures are then the output.
        #[arg(short, long)]
        quiet: bool,
        /// Seed of the replays: arrival gaps and, for comprehensive points, router placements.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replay with this coefficient of variation of the serialized overhead services
        /// (lognormal, mean as calibrated) instead of the calibration's (absent: 0,
        /// deterministic): the sensitivity of the tails to service-time variability.
        #[arg(long, value_name = "CV", value_parser = parse_service_cv)]
        overhead_service_cv: Option<f64>,
        /// Replay with this fraction (0–1) of the client's zero-think turns losing their
        /// connection to a waiting request (queued behind the waiting ones) instead of the
        /// calibration's (absent: 0): the sensitivity of turn-2 tails to the client's pool.
        #[arg(long, value_name = "R", value_parser = parse_fraction)]
        client_requeue_rate: Option<f64>,
        /// Replay with each API server streaming its output chunks at this many ms each (a
        /// step's tokens reach the client once the server has sent them) instead of the
        /// calibration's (absent: 0, tokens arrive as their step ends): the sensitivity of the
        /// interference bursts' TPOT to the server's streaming.
        #[arg(long, value_name = "MS", value_parser = parse_stream_ms)]
        stream_ms_per_chunk: Option<f64>,
        /// Replay with each engine spending this long on each request's first admission, in the
        /// step that first schedules it (ms), instead of the calibration's
        /// (`overheads.engine_admit_ms`, absent: 0): the sensitivity of the interference bursts'
        /// TPOT and of loaded TTFTs to the engine's per-request work.
        #[arg(long, value_name = "MS", value_parser = parse_engine_admit_ms)]
        engine_admit_ms: Option<f64>,
        /// Replay with P's share of the PD handoff done here instead of where the calibration's
        /// replay fit put it: `prefill-engine`, `per-prefill` or `cluster` (the sensitivity of the
        /// PD path's saturation to the mechanism).
        #[arg(long, value_name = "MODE", value_enum)]
        pd_handoff_queue: Option<crate::sim::HandoffQueue>,
        /// Replay with P's engine waiting (`true`) or not (`false`) for the KV sends of the
        /// prompts each step completes, instead of what the calibration's replay fit assumed
        /// (`kv_transfer.prefill_waits_for_send`; false for the shipped model): the sensitivity
        /// of the PD path's saturation to the send.
        #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
        prefill_waits_for_send: Option<bool>,
        /// Replay with this KV link bandwidth instead of the calibration's [Gbit/s] (≥ 0.001;
        /// NVLink 4: 7200): with `--prefill-waits-for-send true`, the rate P's engine sends at.
        #[arg(long, value_name = "GBPS", value_parser = parse_bandwidth)]
        kv_bandwidth_gbps: Option<f64>,
        /// Replay with D's engine spending this long loading each received request's KV, in the
        /// step that first schedules it (ms), instead of the calibration's
        /// (`kv_transfer.load_ms`: 2.27 for the shipped model, 0 for files without it): the
        /// sensitivity of the PD path's TTFT and TPOT to the load.
        #[arg(long, value_name = "MS", value_parser = parse_kv_load_ms)]
        kv_load_ms: Option<f64>,
        /// Replay the interference bursts with cascade attention: while every request of a step
        /// shares the resident prefix (≥ 256 tokens, ≥ 8 requests: vLLM's thresholds) the decodes
        /// read it once instead of once each. The shipped model is fitted without it; this is
        /// the sensitivity of the bursts to the mechanism (docs/validation.md). Other datasets
        /// share no prefix and do not change.
        #[arg(long)]
        cascade_attention: bool,
        /// Print only the summaries (and the 10 worst comprehensive points), not every point.
        #[arg(long)]
        summary_only: bool,
    },
    /// Trace tools.
    Trace {
        /// Trace subcommand.
        #[command(subcommand)]
        command: TraceCommand,
    },
}

/// Flags of the commands that write a results directory.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct WriteFlags {
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write into an existing directory that holds files ppdsim did not write (they are never
    /// replaced or deleted; see README → Outputs).
    #[arg(long)]
    pub force: bool,
}

/// Sweep subcommands.
#[derive(Subcommand, Debug)]
pub enum SweepAction {
    /// Combine the N shard directories of a sweep run with `--shard I/N` (in any order) into the
    /// files one unsharded run writes: sweep.csv, crossovers.csv, goodput.csv,
    /// sweep.resolved.toml and the plots. Missing, duplicate or mismatched shards are refused,
    /// naming them.
    Merge {
        /// Shard directories (each holds shard.json, sweep.csv and sweep.resolved.toml).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Output directory [default: output/sweep-STEM, STEM from the shards' sweep name].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write the CSV files only, no plots (`ppdsim plot DIR` draws them later).
        #[arg(long)]
        no_plots: bool,
        /// Quiet and force.
        #[command(flatten)]
        flags: WriteFlags,
    },
}

/// Trace subcommands.
#[derive(Subcommand, Debug)]
pub enum TraceCommand {
    /// Convert a dataset into the native trace (JSONL, one conversation per line; gzip-compressed
    /// when the output name ends in `.gz`).
    Import {
        /// Source format.
        format: ImportFormat,
        /// Source file (may be gzip-compressed).
        file: PathBuf,
        /// Output trace (replaced only when it is a native trace, or with --force; never the input).
        #[arg(short, long)]
        output: PathBuf,
        /// Replace the output even when it is not a native trace.
        #[arg(long)]
        force: bool,
        /// Print nothing but errors.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print statistics of a native trace (JSON).
    Stats {
        /// Native trace.
        trace: PathBuf,
    },
}

/// Importable formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ImportFormat {
    /// ShareGPT JSON (`[{"id", "conversations": [{"from", "value"}]}]`), tokenised with cl100k_base.
    Sharegpt,
    /// Mooncake (FAST'25) JSON lines (`{"timestamp", "input_length", "output_length",
    /// "hash_ids"}`); conversations rebuilt from shared 512-token prefix blocks.
    Mooncake,
    /// Azure LLM inference trace 2023 CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`): one
    /// one-turn conversation per request, with its arrival time.
    Azure,
    /// Vidur request-trace CSV (`num_prefill_tokens,num_decode_tokens[,arrived_at]`): one
    /// one-turn conversation per request, with its arrival time when the trace has one.
    Vidur,
}

/// Link, load and transfer options of `routing-map`.
#[derive(clap::Args, Debug)]
pub struct MapOptions {
    /// KV link bandwidth [Gbit/s] (default: the calibration's).
    #[arg(long)]
    pub bandwidth_gbps: Option<f64>,
    /// KV link latency per transfer, in ms (default: the calibration's).
    #[arg(long)]
    pub latency_ms: Option<f64>,
    /// D's engine time to load the received KV, in ms, added to its step that computes the last
    /// prompt token (default: the calibration's `kv_transfer.load_ms`).
    #[arg(long, value_name = "MS", value_parser = parse_kv_load_ms)]
    pub kv_load_ms: Option<f64>,
    /// Each engine's time to admit a request, in ms: D's (or the pD's) on both routes, P's on the
    /// remote one (default: the calibration's `overheads.engine_admit_ms`).
    #[arg(long, value_name = "MS", value_parser = parse_engine_admit_ms)]
    pub engine_admit_ms: Option<f64>,
    /// What the link carries: the whole prompt (vLLM's P2P NCCL connector) or only the new
    /// tokens.
    #[arg(long, value_enum, default_value = "full")]
    pub transfer: crate::sim::TransferMode,
    /// Decode sequences running on the decode instance.
    #[arg(long, default_value_t = 32)]
    pub decode_batch: u32,
    /// Context of each running decode sequence, in tokens.
    #[arg(long, default_value_t = 2048)]
    pub decode_context_tokens: u32,
    /// Chunked-prefill token budget per iteration, in tokens (vLLM V1 default).
    #[arg(long, default_value_t = 8192)]
    pub token_budget: u32,
    /// P does not hold the context in its prefix cache and recomputes all L + m tokens.
    #[arg(long)]
    pub p_recomputes_context: bool,
}

/// Runs a parsed command line; returns the exit code.
///
/// # Errors
/// Any failure; [`crate::error::InputError`]s map to exit code 3 in `main`.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run {
            scenario,
            set,
            output,
            flags,
            no_plots,
            no_requests,
            step_path,
            read_trace_first,
            timings,
        } => crate::commands::run::exec_run(
            &scenario,
            &set,
            output,
            flags,
            crate::commands::run::RunOutputs {
                plots: !no_plots,
                requests: !no_requests,
                timings,
                feed_trace: !read_trace_first,
            },
            !step_path,
        ),
        Command::Sweep {
            action:
                Some(SweepAction::Merge {
                    dirs,
                    output,
                    no_plots,
                    flags,
                }),
            ..
        } => crate::commands::sweep::exec_sweep_merge(&dirs, output, flags, !no_plots),
        Command::Sweep {
            action: None,
            sweep,
            set,
            output,
            flags,
            yes,
            shard,
            step_path,
            no_plots,
        } => crate::commands::sweep::exec_sweep(
            &sweep.expect("clap requires the sweep file"),
            &set,
            output,
            flags,
            crate::commands::sweep::SweepOptions {
                yes,
                shard: shard.as_deref(),
                decode_runs: !step_path,
                plots: !no_plots,
            },
        ),
        Command::RoutingMap {
            calibration,
            config,
            set,
            options,
            context_tokens,
            append_tokens,
            output,
            flags,
        } => {
            let cfg = match &config {
                Some(file) => crate::commands::routing_map::map_config_from_file(file, &set)?,
                None => crate::commands::routing_map::map_config_from_options(
                    calibration,
                    options,
                    context_tokens,
                    append_tokens,
                    &set,
                )?,
            };
            crate::commands::routing_map::exec_routing_map(&cfg, output, flags)
        }
        Command::Calibrate {
            roofline_from: Some(reference),
            output,
            gpu,
            tp,
            force,
            quiet,
            ..
        } => crate::commands::calibrate::exec_roofline(&reference, &gpu, tp, &output, force, quiet),
        Command::Calibrate {
            files,
            output,
            model,
            gpu,
            tp,
            declared_bandwidth_gbps,
            format,
            attention,
            strict,
            force,
            quiet,
            no_replay,
            no_cross_validation,
            no_decode_refit,
            answer_mismatch_per_token,
            replay_params,
            overhead_service_cv,
            client_requeue_rate,
            stream_ms_per_chunk,
            engine_admit_ms,
            cascade_attention,
            pd_handoff_queue,
            prefill_waits_for_send,
            kv_load_ms,
            roofline_from: None,
        } => crate::commands::calibrate::exec_calibrate(
            &files,
            &output,
            CalibrateOptions {
                model,
                gpu,
                tp,
                declared_bandwidth_gbps,
                format,
                attention,
                replay: !no_replay,
                loco: !no_cross_validation,
                decode_refit: !no_decode_refit,
                answer_mismatch_per_token,
                replay_params,
                overhead_service_cv,
                client_requeue_rate,
                stream_ms_per_chunk,
                engine_admit_ms,
                cascade_attention,
                pd_handoff_queue,
                prefill_waits_for_send,
                kv_load_ms,
                ..Default::default()
            },
            strict,
            force,
            quiet,
        ),
        Command::Validate {
            measured,
            calibration,
            output,
            seed,
            overhead_service_cv,
            client_requeue_rate,
            stream_ms_per_chunk,
            engine_admit_ms,
            pd_handoff_queue,
            prefill_waits_for_send,
            kv_bandwidth_gbps,
            kv_load_ms,
            cascade_attention,
            summary_only,
            force,
            quiet,
        } => crate::commands::validate::exec_validate(
            &measured,
            &calibration,
            output,
            seed,
            crate::commands::validate::ReplayOverrides {
                overhead_service_cv,
                client_requeue_rate,
                stream_ms_per_chunk,
                engine_admit_ms,
                pd_handoff_queue,
                prefill_waits_for_send,
                kv_bandwidth_gbps,
                kv_load_ms,
                cascade_attention,
            },
            !summary_only,
            WriteFlags { quiet, force },
        ),
        Command::Plot { results_dir, flags } => crate::commands::plot::exec_plot(&results_dir, flags),
        Command::Trace { command } => crate::commands::trace::exec_trace(command),
    }
}

/// A number in [0, `max`] (`what` and `example` word the errors).
fn parse_in_range(s: &str, max: f64, what: &str, example: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=max).contains(&v) => Ok(v),
        Ok(_) => Err(format!("{s} is out of range: give {what} in [0, {max}]")),
        Err(_) => Err(format!("`{s}` is not a number: give {what} such as {example}")),
    }
}

/// `--kv-load-ms`: ms in [0, 1000].
fn parse_kv_load_ms(s: &str) -> Result<f64, String> {
    parse_in_range(s, crate::scenario::MAX_KV_LOAD_MS, "ms per loaded request", "2.5")
}

/// `--engine-admit-ms`: ms in [0, 1000].
fn parse_engine_admit_ms(s: &str) -> Result<f64, String> {
    parse_in_range(s, crate::scenario::MAX_ENGINE_ADMIT_MS, "ms per admitted request", "4")
}

/// `--stream-ms-per-chunk`: ms in [0, 100].
fn parse_stream_ms(s: &str) -> Result<f64, String> {
    parse_in_range(
        s,
        crate::scenario::MAX_STREAM_MS_PER_CHUNK,
        "ms per streamed token",
        "0.19",
    )
}

/// `--kv-bandwidth-gbps`: Gbit/s, finite and at least the scenarios' floor.
fn parse_bandwidth(s: &str) -> Result<f64, String> {
    let min = crate::scenario::limits::MIN_BANDWIDTH_GBPS;
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= min => Ok(v),
        Ok(_) => Err(format!(
            "{s} is out of range: give Gbit/s, finite and >= {min} (NVLink 4: 7200)"
        )),
        Err(_) => Err(format!("`{s}` is not a number: give Gbit/s such as 400")),
    }
}

/// `--client-requeue-rate`: a fraction in [0, 1].
fn parse_fraction(s: &str) -> Result<f64, String> {
    parse_in_range(s, 1.0, "a fraction", "0.02")
}

/// `--overhead-service-cv`: a coefficient of variation in [0, 10] (0: deterministic services).
fn parse_service_cv(s: &str) -> Result<f64, String> {
    parse_in_range(s, crate::scenario::MAX_SERVICE_CV, "a coefficient of variation", "0.5")
}

//! The command line (clap derive). Every subcommand's doc comment is its `--help`.
//!
//! Exit codes: 0 success; 1 unexpected error; 2 usage error; 3 invalid input file (scenario,
//! trace, measurements) or a failed `--strict` physics check.

use crate::calibrate::readers::Format;
use crate::calibrate::{self, CalibrateOptions};
use crate::cost_model::LinearCostModel;
use crate::error::{InputError, EXIT_INVALID_INPUT, EXIT_OK};
use crate::metrics::Summary;
use crate::outdir::{self, OutputDir, Stale};
use crate::output;
use crate::rng::RngStreams;
use crate::scenario::LoadedScenario;
use crate::sim::{workload, Simulation};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

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
    /// Simulate every policy of a scenario on identical requests; print a table per policy and
    /// write requests.csv, summary.csv, summary.json, timeline.csv, scenario.resolved.toml and
    /// plots/ (latency_by_policy, latency_cdf, ttft_by_turn with its CSV, timeline_POLICY; PNG
    /// and SVG).
    Run {
        /// Scenario TOML (e.g. scenarios/default.toml).
        scenario: PathBuf,
        /// Override a key of the file, validated exactly as if written there: dotted
        /// (`workload.arrival.rate_per_s=8`, `policy.1.max_local_append_tokens=64` for the second
        /// policy), repeatable; the value is TOML (`[1, 2]`, `{ kind = "burst" }`) or a string.
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
    },
    /// Run a scenario over a grid — arrival rates × seeds × policy-parameter values (a sweep
    /// TOML: `scenario`, `rates_per_s`, optional `seeds`, `metrics`, `[[vary]]`) — in parallel;
    /// print the seed-averaged curves and where policies cross; write sweep.csv,
    /// crossovers.csv, goodput.csv (DistServe's goodput: the highest rate meeting the SLO
    /// attainment target, and per GPU), sweep.resolved.toml, plots/METRIC.{png,svg} and, for each
    /// varied policy, plots/heatmap_POLICY_METRIC.{png,svg} (its settings × load).
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
        /// Override a key of the file, validated exactly as if written there: dotted
        /// (`workload.arrival.rate_per_s=8`, `policy.1.max_local_append_tokens=64` for the second
        /// policy), repeatable; the value is TOML (`[1, 2]`, `{ kind = "burst" }`) or a string.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run a grid larger than the ceiling of 10,000 runs (the size is printed before starting).
        #[arg(long)]
        yes: bool,
        /// Output directory [default: output/sweep-STEM, STEM from the sweep file name].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Quiet and force.
        #[command(flatten)]
        flags: WriteFlags,
    },
    /// The (L, m) routing map from the cost model alone: for each context L and append m, the
    /// cost (TTFT + running decodes × their stall) of prefilling on the decode instance (local)
    /// vs on a prefill instance with a KV transfer (remote), and the m from which remote wins.
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
        /// Write into an existing directory that holds files ppdsim did not write (they are
        /// never replaced or deleted; see README → Outputs).
        #[arg(long)]
        force: bool,
    },
    /// Fit the iteration-time model, fixed overheads and KV link to measurement files (format
    /// detected from content), fit each source group alone and compare them, check everything
    /// against physics, and write the model JSON and a measured-vs-predicted plot
    /// (`<output stem>.fit.png` and `.fit.svg`).
    Calibrate {
        /// Measurement files: LLMServingSim layers CSV(.gz), AIConfigurator kernel tables,
        /// SplitwiseSim perf_model.csv, KV-transfer tables, seed-000 P-PD framework JSON,
        /// vllm-ppd result JSON, native JSON lines (see `--format`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output model file (replaced only when it is a ppdsim calibration, or with --force; never
        /// one of the inputs).
        #[arg(short, long, default_value = "output/calibration/model.json")]
        output: PathBuf,
        /// Replace the output files even when they are not ppdsim's.
        #[arg(long)]
        force: bool,
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
        /// Where β2 (prefill attention over context) comes from: `flash` — FlashAttention's FLOP
        /// cost at the throughput β1 implies (vLLM runs FlashAttention), `fitted` — the profiles'
        /// own (eager attention for LLMServingSim's), or `auto` — flash when a source's profiles
        /// ran eager attention, fitted otherwise.
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
    },
    /// Redraw the plots of a results directory from its CSV files, without simulating: a `run`
    /// directory (summary.csv, requests.csv, timeline.csv), a `sweep` directory (sweep.csv; metrics and heatmaps as listed
    /// in its sweep.resolved.toml) or a `routing-map` directory (routing_map.csv). Every plot is
    /// written as PNG and SVG into RESULTS_DIR/plots, each file replaced whole.
    Plot {
        /// A directory written by `ppdsim run`, `sweep` or `routing-map`.
        results_dir: PathBuf,
        /// Draw into a directory without a ppdsim manifest (files ppdsim did not write are never
        /// replaced).
        #[arg(long)]
        force: bool,
    },
    /// Run the simulator on measured points and print measured vs predicted latency with the
    /// error, point by point, then summaries. Supported (detected from content; directories are
    /// searched): vllm-ppd comprehensive sweep points (turn-1 and turn-2 p50/p99 TTFT and mean
    /// TPOT per point; median error below saturation per config, PD-vs-PPD winner agreement,
    /// saturation knees, the 10 worst points), v3 low-QPS files and interference experiments
    /// (decode TPOT, batch time and inserted-prefill TTFT per setting).
    Validate {
        /// Measured files or directories.
        #[arg(required = true)]
        measured: Vec<PathBuf>,
        /// Calibrated model to simulate with.
        #[arg(short, long, default_value = "calibration/h100-llama3.1-8b.json")]
        calibration: PathBuf,
        /// Also write the tables as CSV: the low-QPS table to FILE, the comprehensive one to
        /// FILE.comprehensive.csv (extension replaced), the interference one to
        /// FILE.interference.csv.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the CSV files even when they are not ppdsim's validation tables.
        #[arg(long)]
        force: bool,
        /// Seed of the replays: arrival gaps and, for comprehensive points, router placements.
        #[arg(long, default_value_t = 0)]
        seed: u64,
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

/// Results of one scenario run.
pub struct RunResults {
    /// One summary per policy, in scenario order.
    pub summaries: Vec<Summary>,
    /// All records, policy by policy.
    pub records: Vec<crate::metrics::RequestRecord>,
    /// Per-instance timelines (`run` only; empty in sweeps): (policy, sample), policy by policy.
    pub timeline: Vec<(String, crate::sim::TimelineSample)>,
}

/// Simulates every policy of a loaded scenario (in parallel; results in scenario order and
/// independent of the thread count), with a progress bar over the policies.
pub fn simulate(sc: &LoadedScenario) -> RunResults {
    simulate_with(
        sc,
        progress_bar(false, sc.resolved.policy.len() as u64, "policies simulated"),
        true,
    )
}

/// [`simulate`], advancing `bar` once per policy; with the per-instance timelines when
/// `timeline` (on the scenario's `timeline_interval_s` grid).
fn simulate_with(sc: &LoadedScenario, bar: indicatif::ProgressBar, timeline: bool) -> RunResults {
    let w = &sc.resolved.workload;
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
    let cost = LinearCostModel {
        coefficients: sc.calibration.coefficients().expect("validated on load"),
    };
    let results: Vec<_> = sc
        .resolved
        .policy
        .par_iter()
        .map(|p| {
            let sim = Simulation::new(sc.sim_config(p), &cost, convs.clone());
            let sim = if timeline {
                sim.with_timeline(sc.resolved.timeline_interval_s)
            } else {
                sim
            };
            let r = sim.run();
            bar.inc(1);
            // Setup-phase turns run but are not measured.
            let setup = w.setup_turns as usize;
            let measured: std::borrow::Cow<[_]> = if setup == 0 {
                (&r.records[..]).into()
            } else {
                r.records.iter().filter(|x| x.turn > setup).cloned().collect()
            };
            let s = Summary::from_records(
                &p.name(),
                convs.len(),
                &measured,
                &sc.resolved.slo,
                r.instances,
                r.mode_switches,
                &sc.resolved.percentiles,
            );
            (s, r.records, r.timeline)
        })
        .collect();
    bar.finish_and_clear();
    let mut out = RunResults {
        summaries: Vec::new(),
        records: Vec::new(),
        timeline: Vec::new(),
    };
    for (s, r, t) in results {
        out.timeline.extend(t.into_iter().map(|x| (s.policy.clone(), x)));
        out.summaries.push(s);
        out.records.extend(r);
    }
    out
}

fn exec_run(scenario: &Path, set: &[String], output: Option<PathBuf>, flags: WriteFlags, plots: bool) -> Result<i32> {
    let WriteFlags { quiet, force } = flags;
    let sc = LoadedScenario::load_with(scenario, set)?;
    let dest = output.unwrap_or_else(|| Path::new("output").join(&sc.resolved.name));
    // Refuse a bad destination before simulating.
    let staged = OutputDir::create(&dest, force, "run")?;
    let t0 = std::time::Instant::now();
    let res = simulate(&sc);
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
        trace: sc
            .resolved
            .workload
            .trace
            .as_deref()
            .map_or("synthetic".into(), name_of),
        num_conversations: res.summaries.first().map_or(0, |s| s.num_conversations),
    };
    let rows = output::write_results(&staged, &run, &res.records, &res.summaries)?;
    staged.write("timeline.csv", &output::timeline_csv(&res.timeline)?)?;
    staged.write("scenario.resolved.toml", sc.resolved_toml_in(&dest).as_bytes())?;
    if plots {
        let policies: Vec<String> = res.summaries.iter().map(|s| s.policy.clone()).collect();
        let requests = crate::plot::request_latencies(&res.records, &policies);
        let stem = staged.path("plots/latency_by_policy")?;
        crate::plot::run_figures(
            stem.parent().expect("under plots/"),
            &crate::plot::RunPlots {
                summary: &rows,
                policies: &policies,
                requests: &requests,
                timeline: &res.timeline,
                slo: Some(sc.resolved.slo),
            },
        )?;
    }
    staged.commit(Stale::Remove)?;
    if !quiet {
        println!(
            "scenario {}: {} conversations, {} policies, seed {}, KV capacity {} tokens/instance",
            sc.resolved.name,
            res.summaries.first().map_or(0, |s| s.num_conversations),
            sc.resolved.policy.len(),
            sc.resolved.seed,
            sc.kv_capacity_tokens
        );
        print!("{}", output::summary_table(&res.summaries));
        eprint!(
            "{}",
            output::rejection_warnings(&res.summaries, sc.resolved.engine.max_model_len)
        );
        println!("wrote {} ({:.2} s)", dest.display(), t0.elapsed().as_secs_f64());
    }
    Ok(EXIT_OK)
}

/// Most runs (points × policies) a sweep starts without `--yes`.
pub const MAX_SWEEP_RUNS: usize = 10_000;

fn exec_sweep(
    path: &Path,
    set: &[String],
    output: Option<PathBuf>,
    quiet: bool,
    force: bool,
    yes: bool,
    shard: Option<&str>,
) -> Result<i32> {
    use crate::sweep::{self, SweepRow};
    let sw = sweep::LoadedSweep::load_with(path, set)?;
    let shard = shard
        .map(|s| sweep::Shard::parse(s).map_err(|m| InputError::option("--shard", m)))
        .transpose()?;
    let stem = path
        .file_stem()
        .map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
    let dest = output.unwrap_or_else(|| {
        let base = Path::new("output").join(format!("sweep-{stem}"));
        match shard {
            Some(s) => base.join(format!("shard-{}-of-{}", s.index, s.count)),
            None => base,
        }
    });
    let staged = OutputDir::create(&dest, force, if shard.is_some() { "sweep shard" } else { "sweep" })?;
    let t0 = std::time::Instant::now();
    let rates = &sw.spec.rates_per_s;
    let grid = sw.grid();
    let points: Vec<(usize, (f64, u64))> = grid
        .iter()
        .copied()
        .enumerate()
        .filter(|(k, _)| shard.is_none_or(|s| s.owns(*k)))
        .collect();
    let runs = points.len() * sw.policies.len();
    if !quiet {
        eprintln!(
            "sweep {stem}: {} rates × {} seeds × {} policies = {} runs{}",
            rates.len(),
            sw.spec.seeds.len(),
            sw.policies.len(),
            grid.len() * sw.policies.len(),
            shard.map_or(String::new(), |s| format!(
                "; shard {}/{} runs {runs} of them",
                s.index, s.count
            ))
        );
    }
    if runs > MAX_SWEEP_RUNS && !yes {
        return Err(InputError::file(
            path,
            format!("the grid has {runs} runs, more than the {MAX_SWEEP_RUNS} a sweep starts without confirmation; shrink it, shard it or pass --yes"),
        )
        .into());
    }
    let bar = progress_bar(quiet, points.len() as u64, "sweep points");
    let rows: Vec<SweepRow> = points
        .par_iter()
        .map(|&(_, (rate_per_s, seed))| {
            let res = simulate_with(&sw.point(rate_per_s, seed), indicatif::ProgressBar::hidden(), false);
            bar.inc(1);
            res.summaries
                .iter()
                .map(|s| SweepRow {
                    rate_per_s,
                    seed,
                    summary: s.into(),
                })
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect();
    bar.finish_and_clear();
    if let Some(s) = shard {
        staged.write("sweep.csv", &sweep::to_csv(&rows)?)?;
        staged.write("sweep.resolved.toml", sw.resolved_toml_in(&dest)?.as_bytes())?;
        let info = sweep::ShardInfo {
            sweep: stem.clone(),
            shard: s.index,
            of: s.count,
            grid_points: grid.len(),
            points: points.len(),
            fingerprint: sw.fingerprint()?,
        };
        staged.write("shard.json", &serde_json::to_vec_pretty(&info)?)?;
        staged.commit(Stale::Remove)?;
        if !quiet {
            println!(
                "wrote shard {}/{} ({} of {} points) to {} ({:.2} s); combine the shards with `ppdsim sweep merge`",
                s.index,
                s.count,
                points.len(),
                grid.len(),
                dest.display(),
                t0.elapsed().as_secs_f64()
            );
        }
        return Ok(EXIT_OK);
    }
    let text = write_sweep_results(&staged, &sw, &stem, &rows, &dest)?;
    staged.commit(Stale::Remove)?;
    if !quiet {
        print!("{text}");
        println!("wrote {} ({:.2} s)", dest.display(), t0.elapsed().as_secs_f64());
    }
    Ok(EXIT_OK)
}

/// A progress bar on stderr with a label, the count and an ETA (hidden when `quiet`).
fn progress_bar(quiet: bool, len: u64, label: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed} elapsed, ETA {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    bar
}

/// Analyses a whole sweep's rows (grid order) and writes every result file of an unsharded run
/// into `staged`; returns the text to print.
fn write_sweep_results(
    staged: &OutputDir,
    sw: &crate::sweep::LoadedSweep,
    stem: &str,
    rows: &[crate::sweep::SweepRow],
    dest: &Path,
) -> Result<String> {
    use crate::sweep;
    let rates = &sw.spec.rates_per_s;
    let mut all_crossings = Vec::new();
    let mut text = format!(
        "sweep {}: {} rates × {} seed{} × {} policies = {} runs of {}\n",
        stem,
        rates.len(),
        sw.spec.seeds.len(),
        if sw.spec.seeds.len() == 1 { "" } else { "s" },
        sw.policies.len(),
        sw.grid().len() * sw.policies.len(),
        sw.scenario.resolved.name
    );
    let curves = sweep::analyse(rows, rates, &sw.spec.metrics);
    for m in &curves {
        text.push('\n');
        text.push_str(&m.table(rates));
        all_crossings.extend(m.crossings.iter().cloned());
    }
    draw_sweep_plots(staged, &sw.spec, &curves, Some(sw.scenario.resolved.slo))?;
    let gpus: Vec<(String, u32)> = sw
        .policies
        .iter()
        .map(|p| {
            let (prefill, decode) = p.cluster();
            (p.name(), prefill + decode)
        })
        .collect();
    let target = sw
        .spec
        .slo_attainment_target
        .unwrap_or(sweep::DEFAULT_SLO_ATTAINMENT_TARGET);
    let goodputs = sweep::goodput(rows, rates, target, &gpus);
    text.push('\n');
    text.push_str(&sweep::goodput_table(&goodputs, rates));
    staged.write("goodput.csv", &output::to_csv(&goodputs)?)?;
    staged.write("sweep.csv", &sweep::to_csv(rows)?)?;
    staged.write("crossovers.csv", &sweep::crossovers_csv(&all_crossings)?)?;
    staged.write("sweep.resolved.toml", sw.resolved_toml_in(dest)?.as_bytes())?;
    Ok(text)
}

/// `ppdsim sweep merge` (see [`SweepAction::Merge`]).
fn exec_sweep_merge(dirs: &[PathBuf], output: Option<PathBuf>, quiet: bool, force: bool) -> Result<i32> {
    use crate::sweep;
    let shards = dirs
        .iter()
        .map(|d| sweep::read_shard(d))
        .collect::<crate::error::InputResult<Vec<_>>>()?;
    let (sw, rows) = sweep::merge_shards(&shards)?;
    let stem = shards[0].info.sweep.clone();
    let dest = output.unwrap_or_else(|| Path::new("output").join(format!("sweep-{stem}")));
    let staged = OutputDir::create(&dest, force, "sweep")?;
    let text = write_sweep_results(&staged, &sw, &stem, &rows, &dest)?;
    staged.commit(Stale::Remove)?;
    if !quiet {
        print!("{text}");
        println!("merged {} shards into {}", shards.len(), dest.display());
    }
    Ok(EXIT_OK)
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

/// Draws a sweep's metric-vs-load plots and its heatmaps into `plots/` of `dir`; `slo` (the
/// scenario's) and the sweep's SLO-attainment target are drawn as reference lines on the metrics
/// they bound.
fn draw_sweep_plots(
    dir: &OutputDir,
    spec: &crate::sweep::SweepSpec,
    curves: &[crate::sweep::MetricCurves],
    slo: Option<crate::metrics::Slo>,
) -> Result<()> {
    use crate::plot::Reference;
    for m in curves {
        let reference = if m.metric.starts_with("ttft_") {
            slo.map(|s| Reference {
                value: s.ttft_ms,
                label: format!("TTFT SLO {} ms", s.ttft_ms),
            })
        } else if m.metric.starts_with("tpot_") {
            slo.map(|s| Reference {
                value: s.tpot_ms,
                label: format!("TPOT SLO {} ms", s.tpot_ms),
            })
        } else if m.metric == "slo_attainment" {
            spec.slo_attainment_target.map(|t| Reference {
                value: t,
                label: format!("attainment target {t}"),
            })
        } else {
            None
        };
        crate::plot::sweep_metric(
            &dir.path(&format!("plots/{}", m.metric))?,
            &spec.rates_per_s,
            m,
            reference.as_ref(),
        )?;
    }
    for h in crate::sweep::heatmaps(spec, curves) {
        crate::plot::sweep_heatmap(&dir.path(&format!("plots/{}", h.file_stem()))?, &h)?;
    }
    Ok(())
}

/// The map's parameters from the command-line options, with `--set` overrides applied (checked
/// exactly as in a `--config` file).
fn map_config_from_options(
    calibration: PathBuf,
    o: MapOptions,
    context_tokens: Vec<u32>,
    append_tokens: Vec<u32>,
    set: &[String],
) -> Result<crate::routing_map::MapConfig> {
    let cfg = crate::routing_map::MapConfig {
        calibration,
        bandwidth_gbps: o.bandwidth_gbps,
        latency_ms: o.latency_ms,
        transfer: o.transfer,
        decode_batch: o.decode_batch,
        decode_context_tokens: o.decode_context_tokens,
        token_budget: o.token_budget,
        p_recomputes_context: o.p_recomputes_context,
        context_tokens,
        append_tokens,
    };
    if set.is_empty() {
        return check_map_config(cfg, None);
    }
    let origin = Path::new("routing-map options");
    let text = crate::input::apply_overrides(origin, &toml::to_string(&cfg)?, set)?;
    let cfg = crate::input::parse_toml(origin, "routing-map parameters", &text, set)?;
    check_map_config(cfg, None)
}

/// The map's parameters from a TOML file (`routing_map.resolved.toml` or one written by hand),
/// with `--set` overrides; the calibration path is relative to the file's directory.
fn map_config_from_file(file: &Path, set: &[String]) -> Result<crate::routing_map::MapConfig> {
    let what = "routing-map parameters";
    let text = crate::input::read_toml_text(file, what, set)?;
    let mut cfg: crate::routing_map::MapConfig = crate::input::parse_toml(file, what, &text, set)?;
    let dir = file.parent().unwrap_or(Path::new(""));
    cfg.calibration = dir.join(&cfg.calibration);
    check_map_config(cfg, Some(file))
}

/// `cfg` when its values are in their domains; else an error naming the option (or the key of
/// `file`) and the fix.
fn check_map_config(cfg: crate::routing_map::MapConfig, file: Option<&Path>) -> Result<crate::routing_map::MapConfig> {
    match (cfg.check(), file) {
        (Ok(()), _) => Ok(cfg),
        (Err((key, m)), Some(f)) => Err(InputError::key(f, key, m).into()),
        (Err((key, m)), None) => Err(InputError::option(&format!("--{}", key.replace('_', "-")), &m).into()),
    }
}

fn exec_routing_map(cfg: &crate::routing_map::MapConfig, output: Option<PathBuf>, force: bool) -> Result<i32> {
    use crate::routing_map::{boundary, map, MapParams, MapRoute};
    let calibration = cfg.calibration.as_path();
    let (contexts, appends) = (&cfg.context_tokens[..], &cfg.append_tokens[..]);
    let cal = crate::calibrate::model_file::CalibrationFile::load(calibration)?;
    let model = crate::hardware::model(&cal.model)
        .ok_or_else(|| InputError::key(calibration, "model", format!("unknown model `{}`", cal.model)))?;
    let bandwidth_gbps = cfg.bandwidth_gbps.unwrap_or(cal.kv_transfer.bandwidth_gbps);
    let latency_ms = cfg.latency_ms.unwrap_or(cal.kv_transfer.latency_ms);
    let p = MapParams {
        coefficients: cal.coefficients().map_err(|m| InputError::file(calibration, m))?,
        kv_bytes_per_token: model.kv_bytes_per_token(),
        link_bandwidth_gbps: bandwidth_gbps,
        link_latency_ms: latency_ms,
        pd_handoff_ms: cal.overheads.pd_handoff_ms.value,
        transfer: cfg.transfer,
        token_budget: cfg.token_budget,
        decode_batch: cfg.decode_batch,
        decode_context_tokens: cfg.decode_context_tokens,
        p_holds_context: !cfg.p_recomputes_context,
    };
    let cells = map(&p, contexts, appends);
    let edge = boundary(&cells, contexts);
    let dest = output.unwrap_or_else(|| Path::new("output").join("routing-map"));
    let staged = OutputDir::create(&dest, force, "routing-map")?;
    staged.write("routing_map.csv", &output::to_csv(&cells)?)?;
    staged.write("boundary.csv", &output::to_csv(&edge)?)?;
    let title = cfg.title(bandwidth_gbps);
    // Every value filled in; the calibration relative to the results directory, so the file
    // re-runs from there as it is (outputs hold no absolute paths).
    let resolved = crate::routing_map::MapConfig {
        calibration: crate::scenario::relative_path(calibration, &dest),
        bandwidth_gbps: Some(bandwidth_gbps),
        latency_ms: Some(latency_ms),
        ..cfg.clone()
    };
    staged.write("routing_map.resolved.toml", toml::to_string(&resolved)?.as_bytes())?;
    crate::plot::routing_map(&staged.path("plots/routing_map")?, &title, contexts, appends, &cells)?;
    staged.commit(Stale::Remove)?;
    println!("{title}");
    println!("route per (m, L): L = local (append-prefill on D), R = remote (P prefill + KV transfer)");
    print!("  {:>6} |", "m \\ L");
    for l in contexts {
        print!(" {l:>6}");
    }
    println!();
    // `map` is context-major: the cell of (context i, append j) is at i × |appends| + j.
    for (j, m) in appends.iter().enumerate() {
        print!("  {m:>6} |");
        for i in 0..contexts.len() {
            let route = cells[i * appends.len() + j].route;
            print!(" {:>6}", if route == MapRoute::Remote { "R" } else { "L" });
        }
        println!();
    }
    for b in &edge {
        match b.remote_from_append_tokens {
            Some(m) => println!("  L = {}: remote from m = {m}", b.context_tokens),
            None => println!(
                "  L = {}: local for every m up to {}",
                b.context_tokens,
                appends.iter().max().expect("non-empty")
            ),
        }
    }
    println!("wrote {}", dest.display());
    Ok(EXIT_OK)
}

fn exec_calibrate(files: &[PathBuf], output: &Path, opts: CalibrateOptions, strict: bool, force: bool) -> Result<i32> {
    // Check every destination before fitting: never an input, never a file ppdsim did not write.
    let plot = output.with_extension("fit");
    let plot_files = crate::plot::outputs(&plot);
    let mut outs: Vec<&Path> = vec![output];
    outs.extend(plot_files.iter().map(|p| p.as_path()));
    outdir::refuse_input_as_output(&outs, files)?;
    let is_model = |p: &Path| crate::calibrate::model_file::looks_like_calibration(p);
    outdir::check_replaceable(output, force, "calibration model", &is_model)?;
    // The plots beside a model ppdsim wrote are ppdsim's too.
    let model_is_ours = is_model(output);
    for pf in &plot_files {
        outdir::check_replaceable(pf, force, "calibration plot", &|_| model_is_ours)?;
    }
    let c = calibrate::calibrate(files, &opts)?;
    print!("{}", calibrate::report(&c));
    let failed = c.file.physics.iter().filter(|p| !p.ok).count()
        + c.file
            .groups
            .iter()
            .flat_map(|g| g.physics.iter())
            .filter(|p| !p.ok)
            .count();
    if strict && failed > 0 {
        eprintln!("error: {failed} physics check(s) failed; model not written (--strict)");
        return Ok(EXIT_INVALID_INPUT);
    }
    let mut json = serde_json::to_vec_pretty(&c.file)?;
    json.push(b'\n');
    // The plots are drawn into a temporary directory beside them, then renamed into place.
    let stage = outdir::Staging::beside(&plot)?;
    let staged_plot = stage.path().join("fit");
    crate::plot::calibration_fit(&staged_plot, &c)?;
    outdir::write_atomic(output, &json)?;
    for (tmp, dest) in crate::plot::outputs(&staged_plot).iter().zip(&plot_files) {
        std::fs::rename(tmp, dest).with_context(|| format!("renaming onto {}", dest.display()))?;
    }
    println!(
        "wrote {} and {} (.svg beside it)",
        output.display(),
        crate::plot::with_ext(&plot, "png").display()
    );
    Ok(EXIT_OK)
}

fn collect_json(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(crate::input::expand_dirs(paths, |f| {
        f.extension().is_some_and(|x| x == "json")
    })?)
}

/// An input error about the measured paths as a whole.
fn no_points(measured: &[PathBuf], message: &str) -> InputError {
    InputError {
        location: measured
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        message: message.into(),
    }
}

const UNSUPPORTED: &str =
    "not a supported measured file: expected a vllm-ppd comprehensive point, v3 low-QPS file or interference experiment";

fn exec_validate(
    measured: &[PathBuf],
    calibration: &Path,
    output: Option<PathBuf>,
    seed: u64,
    print_points: bool,
    force: bool,
) -> Result<i32> {
    let cal = crate::calibrate::model_file::CalibrationFile::load(calibration)?;
    let files = collect_json(measured)?;
    let csv_paths = output.as_ref().map(|out| {
        [
            out.clone(),
            out.with_extension("comprehensive.csv"),
            out.with_extension("interference.csv"),
        ]
    });
    if let Some(paths) = &csv_paths {
        let mut inputs = files.clone();
        inputs.push(calibration.to_path_buf());
        outdir::refuse_input_as_output(&paths.iter().map(|p| p.as_path()).collect::<Vec<_>>(), &inputs)?;
    }
    // CSV tables to write once everything is computed: (path, bytes).
    let mut pending: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    if files.is_empty() {
        return Err(no_points(measured, "no JSON files found").into());
    }
    let mut points = Vec::new();
    let mut comprehensive = Vec::new();
    let mut skipped_failed = 0usize;
    let mut skipped_other = 0usize;
    let mut interference = Vec::new();
    for f in &files {
        // Chosen by content; files of other schemas inside a searched directory are skipped.
        let v = crate::calibrate::readers::read_text(f)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        match v.as_ref().and_then(crate::calibrate::readers::vllm_ppd::detect) {
            Some(Format::VllmPpdLowqpsV3) => {
                points.extend(crate::validate::read_lowqps(f, v.as_ref().expect("detected"))?)
            }
            Some(Format::VllmPpdInterference) => {
                interference.extend(crate::validate::interference(f, v.as_ref().expect("detected"), &cal)?)
            }
            Some(Format::VllmPpdComprehensive) => match crate::validate::read_comprehensive(f, v.expect("detected"))? {
                Some(p) => comprehensive.push(p),
                None => skipped_failed += 1,
            },
            _ if measured.iter().any(|m| m == f) => return Err(InputError::file(f, UNSUPPORTED).into()),
            _ => skipped_other += 1,
        }
    }
    if skipped_other > 0 {
        eprintln!("note: {skipped_other} JSON files of other schemas skipped");
    }
    if !points.is_empty() {
        let rows: Vec<crate::validate::ValidationRow> = points
            .par_iter()
            .filter_map(|p| crate::validate::simulate_point(p, &cal, seed))
            .flatten()
            .collect();
        print!("{}", crate::validate::report(&rows, print_points));
        if let Some(paths) = &csv_paths {
            pending.push((paths[0].clone(), output::to_csv(&rows)?));
        }
    }
    if !comprehensive.is_empty() {
        let bar = progress_bar(false, comprehensive.len() as u64, "comprehensive points");
        let rows: Vec<crate::validate::ComprehensiveRow> = comprehensive
            .par_iter()
            .filter_map(|(c, w, q, v)| {
                let r = crate::validate::simulate_comprehensive(c, w, *q, v, &cal, seed);
                bar.inc(1);
                r
            })
            .collect();
        bar.finish_and_clear();
        if rows.is_empty() {
            return Err(no_points(measured, "no comprehensive point could be simulated").into());
        }
        println!(
            "{} comprehensive points simulated, {skipped_failed} skipped (no successful request measured)",
            rows.len()
        );
        if print_points {
            print!("{}", crate::validate::comprehensive_table(&rows));
        }
        print!("{}", crate::validate::comprehensive_summary(&rows, print_points));
        print!("{}", crate::validate::comprehensive_worst(&rows, 10));
        if let Some(paths) = &csv_paths {
            pending.push((paths[1].clone(), output::to_csv(&rows)?));
        }
    }
    if !interference.is_empty() {
        if print_points {
            for r in &interference {
                let n = output::fmt_number;
                println!(
                    "{:<12} {:<44} N={:<3} k={} decode TPOT {:>6}/{:>6} ms  batch {:>7}/{:>7} ms  prefill TTFT {:>7}/{:>7} ms",
                    r.experiment,
                    r.scenario,
                    r.decode_count,
                    r.prefill_count,
                    n(r.decode_tpot_measured_ms, 2),
                    n(r.decode_tpot_predicted_ms, 2),
                    n(r.batch_time_measured_ms, 0),
                    n(r.batch_time_predicted_ms, 0),
                    n(r.prefill_ttft_measured_ms, 1),
                    n(r.prefill_ttft_predicted_ms, 1)
                );
            }
        }
        print!("{}", crate::validate::interference_summary(&interference));
        if let Some(paths) = &csv_paths {
            pending.push((paths[2].clone(), output::to_csv(&interference)?));
        }
    }
    if points.is_empty() && comprehensive.is_empty() && interference.is_empty() {
        return Err(no_points(measured, UNSUPPORTED).into());
    }
    // Every table is checked before any is written: a refusal writes nothing.
    for (p, bytes) in &pending {
        outdir::check_replaceable(p, force, "validation table", &|q| outdir::same_first_line(q, bytes))?;
    }
    for (p, bytes) in &pending {
        outdir::write_atomic(p, bytes)?;
        println!("wrote {}", p.display());
    }
    Ok(EXIT_OK)
}

/// Native traces need unique ids: the second and later uses of a source id get `~2`, `~3`, …
/// (skipping any name the source already uses); returns how many were renamed.
fn make_ids_unique(convs: &mut [crate::trace::Conversation]) -> usize {
    use std::collections::HashSet;
    let original: HashSet<String> = convs.iter().map(|c| c.id.clone()).collect();
    let mut used: HashSet<String> = HashSet::with_capacity(convs.len());
    let mut renamed = 0;
    for c in convs.iter_mut() {
        if used.insert(c.id.clone()) {
            continue;
        }
        let id = (2..)
            .map(|n| format!("{}~{n}", c.id))
            .find(|cand| !original.contains(cand) && !used.contains(cand))
            .expect("some suffix is free");
        used.insert(id.clone());
        c.id = id;
        renamed += 1;
    }
    renamed
}

/// Writes an imported trace to `output` atomically and its import report (JSON) to stderr.
fn write_imported(
    output: &Path,
    mut convs: Vec<crate::trace::Conversation>,
    report: &impl serde::Serialize,
) -> Result<()> {
    let renamed = make_ids_unique(&mut convs);
    if renamed > 0 {
        eprintln!("note: {renamed} conversations had an id used before; renamed `id~N`");
    }
    let mut buf = Vec::new();
    crate::trace::write_trace(&mut buf, &convs)?;
    if output.extension().is_some_and(|e| e == "gz") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&buf)?;
        buf = gz.finish()?;
    }
    outdir::write_atomic(output, &buf)?;
    // As `trace stats`: the machine-readable report on stdout, the human summary (printed by the
    // caller) and notes on stderr.
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}

fn exec_trace(cmd: TraceCommand) -> Result<i32> {
    if let TraceCommand::Import {
        file, output, force, ..
    } = &cmd
    {
        // Before reading: never over the input, never over a file that is not a native trace.
        outdir::refuse_input_as_output(&[output.as_path()], std::slice::from_ref(file))?;
        outdir::check_replaceable(output, *force, "native trace", &crate::trace::looks_like_native_trace)?;
    }
    match cmd {
        TraceCommand::Import {
            format: format @ (ImportFormat::Azure | ImportFormat::Vidur),
            file,
            output,
            ..
        } => {
            let (convs, report) = match format {
                ImportFormat::Azure => crate::trace::requests::import_azure(&file)?,
                _ => crate::trace::requests::import_vidur(&file)?,
            };
            if convs.is_empty() {
                return Err(InputError::file(&file, "no request with at least one prompt and one output token").into());
            }
            write_imported(&output, convs, &report)?;
            eprintln!(
                "read {} requests, wrote {} one-turn conversations to {}{}; {} without output and {} without prompt dropped",
                report.rows_read,
                report.conversations_written,
                output.display(),
                match report.span_s {
                    Some(s) => format!(" with arrival times over {s:.1} s"),
                    None => " without arrival times".into(),
                },
                report.rows_without_output,
                report.rows_without_prompt
            );
            Ok(EXIT_OK)
        }
        TraceCommand::Import {
            format: ImportFormat::Mooncake,
            file,
            output,
            ..
        } => {
            let (convs, report) = crate::trace::mooncake::import(&file)?;
            if convs.is_empty() {
                return Err(
                    InputError::file(&file, "no request with at least one output token: nothing to write").into(),
                );
            }
            write_imported(&output, convs, &report)?;
            eprintln!(
                "read {} requests, wrote {} conversations ({} with ≥ 2 turns, up to {} turns) to {}; {} continuations, {} branches started anew, {} turns with negative new input taken as 0 (up to {} tokens)",
                report.requests_read,
                report.conversations_written,
                report.multi_turn_conversations,
                report.max_turns,
                output.display(),
                report.continuations,
                report.branches,
                report.clamped_turns,
                report.max_clamped_tokens
            );
            Ok(EXIT_OK)
        }
        TraceCommand::Import {
            format: ImportFormat::Sharegpt,
            file,
            output,
            ..
        } => {
            let (convs, report) = crate::trace::sharegpt::import(&file)?;
            if convs.is_empty() {
                return Err(InputError::file(&file, "no usable conversation found").into());
            }
            write_imported(&output, convs, &report)?;
            eprintln!(
                "read {} conversations, wrote {} to {}, skipped {} (malformed {}, without turns {}){}",
                report.elements_read,
                report.conversations_written,
                output.display(),
                report.elements_malformed + report.conversations_without_turns,
                report.elements_malformed,
                report.conversations_without_turns,
                if report.truncated_tail {
                    "; the file is truncated: its last, partial conversation was dropped"
                } else {
                    ""
                }
            );
            Ok(EXIT_OK)
        }
        TraceCommand::Stats { trace } => {
            let convs = crate::trace::read_trace(&trace)?;
            println!("{}", serde_json::to_string_pretty(&crate::trace::stats(&convs))?);
            Ok(EXIT_OK)
        }
    }
}

/// Runs a parsed command line; returns the exit code.
///
/// # Errors
/// Any failure; [`InputError`]s map to exit code 3 in `main`.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run {
            scenario,
            set,
            output,
            flags,
            no_plots,
        } => exec_run(&scenario, &set, output, flags, !no_plots),
        Command::Sweep {
            action: Some(SweepAction::Merge { dirs, output, flags }),
            ..
        } => exec_sweep_merge(&dirs, output, flags.quiet, flags.force),
        Command::Sweep {
            action: None,
            sweep,
            set,
            output,
            flags,
            yes,
            shard,
        } => exec_sweep(
            &sweep.expect("clap requires the sweep file"),
            &set,
            output,
            flags.quiet,
            flags.force,
            yes,
            shard.as_deref(),
        ),
        Command::RoutingMap {
            calibration,
            config,
            set,
            options,
            context_tokens,
            append_tokens,
            output,
            force,
        } => {
            let cfg = match &config {
                Some(file) => map_config_from_file(file, &set)?,
                None => map_config_from_options(calibration, options, context_tokens, append_tokens, &set)?,
            };
            exec_routing_map(&cfg, output, force)
        }
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
            no_replay,
            no_cross_validation,
        } => exec_calibrate(
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
                ..Default::default()
            },
            strict,
            force,
        ),
        Command::Validate {
            measured,
            calibration,
            output,
            seed,
            summary_only,
            force,
        } => exec_validate(&measured, &calibration, output, seed, !summary_only, force),
        Command::Plot { results_dir, force } => exec_plot(&results_dir, force),
        Command::Trace { command } => exec_trace(command),
    }
}

/// The `[slo]` of a scenario file, read as plain TOML (no other key is checked or resolved);
/// `None` when the file is missing or has no valid `[slo]`.
fn scenario_slo(path: &Path) -> Option<crate::metrics::Slo> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: toml::Table = toml::from_str(&text).ok()?;
    doc.get("slo")?.clone().try_into().ok()
}

/// Redraws the plots of a results directory (see [`Command::Plot`]). The plots are drawn into a
/// staging directory inside it and each file is renamed into place, so a failure leaves the old
/// plots whole; only files the directory's manifest lists (or new ones) are replaced.
fn exec_plot(dir: &Path, force: bool) -> Result<i32> {
    let staged = OutputDir::open_existing(dir, force, "plot")?;
    let mut drawn = Vec::new();
    let summary = dir.join("summary.csv");
    if summary.is_file() {
        let rows = output::read_summary_csv(&summary)?;
        if rows.is_empty() {
            return Err(InputError::file(&summary, "holds no rows: nothing to plot; re-run the scenario").into());
        }
        let policies: Vec<String> = rows.iter().map(|r| r.policy.clone()).collect();
        let requests_csv = dir.join("requests.csv");
        let requests = if requests_csv.is_file() {
            crate::plot::read_request_latencies(&requests_csv, &policies)?
        } else {
            Vec::new()
        };
        let timeline_csv = dir.join("timeline.csv");
        let timeline = if timeline_csv.is_file() {
            output::read_timeline_csv(&timeline_csv)?
        } else {
            Vec::new()
        };
        let plots = staged.path("plots/latency_by_policy")?;
        crate::plot::run_figures(
            plots.parent().expect("under plots/"),
            &crate::plot::RunPlots {
                summary: &rows,
                policies: &policies,
                requests: &requests,
                timeline: &timeline,
                slo: scenario_slo(&dir.join("scenario.resolved.toml")),
            },
        )?;
        drawn.push("run");
    }
    let sweep_csv = dir.join("sweep.csv");
    if sweep_csv.is_file() {
        let rows = crate::sweep::read_csv(&sweep_csv)?;
        if rows.is_empty() {
            return Err(InputError::file(&sweep_csv, "holds no rows: nothing to plot; re-run the sweep").into());
        }
        let resolved = dir.join("sweep.resolved.toml");
        let spec: crate::sweep::SweepSpec = if resolved.is_file() {
            crate::input::read_toml(&resolved, "resolved sweep")?
        } else {
            // Without the resolved sweep: the rates of the rows, the default metrics, no heatmaps.
            let mut rates: Vec<f64> = rows.iter().map(|r| r.rate_per_s).collect();
            rates.sort_by(f64::total_cmp);
            rates.dedup();
            crate::sweep::SweepSpec {
                scenario: PathBuf::new(),
                rates_per_s: rates,
                seeds: Vec::new(),
                metrics: crate::sweep::DEFAULT_METRICS.iter().map(|m| m.to_string()).collect(),
                slo_attainment_target: None,
                vary: Vec::new(),
            }
        };
        let curves = crate::sweep::analyse(&rows, &spec.rates_per_s, &spec.metrics);
        let slo = resolved
            .is_file()
            .then(|| scenario_slo(&dir.join(&spec.scenario)))
            .flatten();
        draw_sweep_plots(&staged, &spec, &curves, slo)?;
        drawn.push("sweep");
    }
    let map_csv = dir.join("routing_map.csv");
    if map_csv.is_file() {
        let cells: Vec<crate::routing_map::MapCell> = crate::input::read_csv(&map_csv)?;
        let mut contexts: Vec<u32> = Vec::new();
        let mut appends: Vec<u32> = Vec::new();
        for c in &cells {
            if !contexts.contains(&c.context_tokens) {
                contexts.push(c.context_tokens);
            }
            if !appends.contains(&c.append_tokens) {
                appends.push(c.append_tokens);
            }
        }
        let resolved = dir.join("routing_map.resolved.toml");
        let title = if resolved.is_file() {
            let cfg = crate::input::read_toml::<crate::routing_map::MapConfig>(&resolved, "resolved routing map")?;
            cfg.title(cfg.bandwidth_gbps.unwrap_or(f64::NAN))
        } else {
            "local / remote cost".to_string()
        };
        crate::plot::routing_map(&staged.path("plots/routing_map")?, &title, &contexts, &appends, &cells)?;
        drawn.push("routing map");
    }
    if drawn.is_empty() {
        return Err(InputError::file(
            dir,
            "holds no summary.csv, sweep.csv or routing_map.csv; give a directory written by `ppdsim run`, `sweep` or `routing-map`",
        )
        .into());
    }
    let plots = dir.join("plots");
    let n = staged.commit(Stale::Keep)?;
    println!("redrew {} ({n} files) in {}", drawn.join(", "), plots.display());
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_get_a_suffix_no_other_conversation_uses() {
        let mut convs: Vec<crate::trace::Conversation> = ["x", "x", "x~2", "y", "x"]
            .iter()
            .map(|id| crate::trace::Conversation {
                id: id.to_string(),
                turns: vec![],
                arrival_s: None,
            })
            .collect();
        assert_eq!(make_ids_unique(&mut convs), 2);
        let ids: Vec<&str> = convs.iter().map(|c| c.id.as_str()).collect();
        // `x~2` is taken by the source, so the second `x` becomes `x~3`, the third `x~4`.
        assert_eq!(ids, ["x", "x~3", "x~2", "y", "x~4"]);
    }
}

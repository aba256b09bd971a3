//! `ppdsim run`: simulate every policy of a scenario on identical requests and write its results.

use crate::cli::*;
use crate::commands::*;
use crate::cost_model::LinearCostModel;
use crate::error::EXIT_OK;
use crate::metrics::Summary;
use crate::outdir::{OutputDir, Stale};
use crate::output;
use crate::rng::RngStreams;
use crate::scenario::LoadedScenario;
use crate::sim::{workload, Simulation};
use anyhow::Result;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

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
        progress_bar(false, sc.deployments().len() as u64, "runs simulated"),
        true,
    )
}

/// [`simulate`], advancing `bar` once per policy; with the per-instance timelines when
/// `timeline` (on the scenario's `timeline_interval_s` grid).
pub(crate) fn simulate_with(sc: &LoadedScenario, bar: indicatif::ProgressBar, timeline: bool) -> RunResults {
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
    // Per cluster, per pool: its own cost model when it is off the scenario's GPU and model file.
    let pool_costs: Vec<Vec<Option<LinearCostModel>>> = sc
        .clusters
        .iter()
        .map(|c| {
            c.pools
                .iter()
                .map(|(_, _, p)| {
                    p.as_ref().map(|p| LinearCostModel {
                        coefficients: p.calibration.coefficients().expect("validated on load"),
                    })
                })
                .collect()
        })
        .collect();
    let results: Vec<_> = sc
        .deployments()
        .par_iter()
        .map(|d| {
            let mut sim = Simulation::new(sc.sim_config(d), &cost, convs.clone());
            for ((_, range, pool), cost) in sc.clusters[d.cluster].pools.iter().zip(&pool_costs[d.cluster]) {
                if let (Some(pool), Some(cost)) = (pool, cost) {
                    sim = sim.with_pool(range.clone(), cost, pool.limits);
                }
            }
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
                &d.name,
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

pub(crate) fn exec_run(
    scenario: &Path,
    set: &[String],
    output: Option<PathBuf>,
    flags: WriteFlags,
    plots: bool,
    decode_runs: bool,
) -> Result<i32> {
    let WriteFlags { quiet, force } = flags;
    let mut sc = LoadedScenario::load_with(scenario, set)?;
    sc.decode_runs = decode_runs;
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
    let rows = output::write_results(&staged, &run, &res.records, &res.summaries)?;
    staged.write("timeline.csv", &output::timeline_csv(&res.timeline)?)?;
    staged.write("scenario.resolved.toml", sc.resolved_toml_in(&dest).as_bytes())?;
    if plots {
        let policies: Vec<String> = res.summaries.iter().map(|s| s.policy.clone()).collect();
        let requests = crate::plot::request_latencies(&res.records, &policies);
        crate::plot::run_figures(
            &staged,
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
        println!("wrote {} ({:.2} s)", dest.display(), t0.elapsed().as_secs_f64());
    }
    Ok(EXIT_OK)
}

//! `ppdsim sweep` and `ppdsim sweep merge`: a grid of loads, seeds and policy settings, its curves, crossovers, goodput and plots.

use crate::commands::run::{simulate_with, RunSinks};
use crate::commands::*;
use crate::error::{InputError, EXIT_OK};
use crate::outdir::{OutputDir, Stale};
use crate::output;
use anyhow::Result;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Most runs (points × policies) a sweep starts without `--yes`.
pub const MAX_SWEEP_RUNS: usize = 10_000;

/// What `ppdsim sweep` does besides its grid: the command line's switches.
pub(crate) struct SweepOptions<'a> {
    /// Run a grid larger than [`MAX_SWEEP_RUNS`].
    pub yes: bool,
    /// `--shard I/N`, unparsed.
    pub shard: Option<&'a str>,
    /// Plan decode-only stretches as one event (false: `--step-path`).
    pub decode_runs: bool,
    /// Draw the plots (an unsharded run only; false: `--no-plots`).
    pub plots: bool,
}

pub(crate) fn exec_sweep(
    path: &Path,
    set: &[String],
    output: Option<PathBuf>,
    flags: crate::cli::WriteFlags,
    opts: SweepOptions<'_>,
) -> Result<i32> {
    use crate::sweep::{self, SweepRow};
    let crate::cli::WriteFlags { quiet, force } = flags;
    let SweepOptions {
        yes,
        shard,
        decode_runs,
        plots,
    } = opts;
    let mut sw = sweep::LoadedSweep::load_with(path, set)?;
    sw.scenario.decode_runs = decode_runs;
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
    let per_point = sw.deployments().len();
    let runs = points.len() * per_point;
    if !quiet {
        eprintln!(
            "sweep {stem}: {} rates × {} seeds × {} policies = {} runs{}",
            rates.len(),
            sw.spec.seeds.len(),
            per_point,
            grid.len() * per_point,
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
    let per_point: Vec<(Vec<SweepRow>, Vec<String>)> = points
        .par_iter()
        .map(|&(_, (rate_per_s, seed))| {
            let res = simulate_with(&sw.point(rate_per_s, seed), RunSinks::summaries_only())
                .expect("a sweep point writes no file");
            bar.inc(1);
            let overruns = res
                .setup_overruns
                .iter()
                .map(|(p, t)| format!("{p} at {rate_per_s}/s seed {seed} (until {t:.1} s)"))
                .collect();
            let rows = res
                .summaries
                .iter()
                .map(|s| SweepRow {
                    rate_per_s,
                    seed,
                    summary: s.into(),
                })
                .collect::<Vec<_>>();
            (rows, overruns)
        })
        .collect();
    bar.finish_and_clear();
    let overruns: Vec<String> = per_point.iter().flat_map(|p| p.1.iter().cloned()).collect();
    if let (Some(first), crate::sim::workload::ArrivalSpec::Setup { setup_s, .. }) =
        (overruns.first(), &sw.scenario.resolved.workload.arrival)
    {
        eprintln!(
            "warning: in {} runs the setup phase was still running when the measured window opened at setup_s = {setup_s} s (first: {first}): its work delays the measured turns; raise `arrival.setup_s` in the scenario",
            overruns.len()
        );
    }
    let rows: Vec<SweepRow> = per_point.into_iter().flat_map(|p| p.0).collect();
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
    let text = write_sweep_results(&staged, &sw, &stem, &rows, &dest, plots)?;
    staged.commit(Stale::Remove)?;
    if !quiet {
        print!("{text}");
        println!("wrote {} ({:.2} s)", dest.display(), t0.elapsed().as_secs_f64());
    }
    Ok(EXIT_OK)
}

/// Analyses a whole sweep's rows (grid order) and writes every result file of an unsharded run
/// into `staged` (the plots only with `plots`); returns the text to print.
pub(crate) fn write_sweep_results(
    staged: &OutputDir,
    sw: &crate::sweep::LoadedSweep,
    stem: &str,
    rows: &[crate::sweep::SweepRow],
    dest: &Path,
    plots: bool,
) -> Result<String> {
    use crate::sweep;
    let rates = &sw.spec.rates_per_s;
    let mut all_crossings = Vec::new();
    let deployments = sw.deployments();
    let mut text = format!(
        "sweep {}: {} rates × {} seed{} × {} policies = {} runs of {}\n",
        stem,
        rates.len(),
        sw.spec.seeds.len(),
        if sw.spec.seeds.len() == 1 { "" } else { "s" },
        deployments.len(),
        sw.grid().len() * deployments.len(),
        sw.scenario.resolved.name
    );
    let target = sw.spec.attainment_target();
    let curves = sweep::analyse_marked(rows, &sw.spec);
    for m in &curves {
        text.push('\n');
        text.push_str(&m.table(rates));
        all_crossings.extend(m.crossings.iter().cloned());
    }
    if plots {
        draw_sweep_plots(staged, &sw.spec, &curves, Some(sw.scenario.resolved.slo))?;
    }
    let gpus: Vec<(String, u32)> = deployments
        .iter()
        .map(|d| (d.name.clone(), sw.scenario.clusters[d.cluster].gpus()))
        .collect();
    let goodputs = sweep::goodput(rows, rates, target, &gpus);
    text.push('\n');
    text.push_str(&sweep::goodput_table(&goodputs, rates));
    staged.write("goodput.csv", &output::to_csv(&goodputs)?)?;
    staged.write("sweep.csv", &sweep::to_csv(rows)?)?;
    staged.write("crossovers.csv", &sweep::crossovers_csv(&all_crossings)?)?;
    staged.write("sweep.resolved.toml", sw.resolved_toml_in(dest)?.as_bytes())?;
    Ok(text)
}

/// `ppdsim sweep merge` (see [`crate::cli::SweepAction::Merge`]).
pub(crate) fn exec_sweep_merge(
    dirs: &[PathBuf],
    output: Option<PathBuf>,
    flags: crate::cli::WriteFlags,
    plots: bool,
) -> Result<i32> {
    use crate::sweep;
    let crate::cli::WriteFlags { quiet, force } = flags;
    let shards = dirs
        .iter()
        .map(|d| sweep::read_shard(d))
        .collect::<crate::error::InputResult<Vec<_>>>()?;
    let (sw, rows) = sweep::merge_shards(&shards)?;
    let stem = shards[0].info.sweep.clone();
    let dest = output.unwrap_or_else(|| Path::new("output").join(format!("sweep-{stem}")));
    let staged = OutputDir::create(&dest, force, "sweep")?;
    let text = write_sweep_results(&staged, &sw, &stem, &rows, &dest, plots)?;
    staged.commit(Stale::Remove)?;
    if !quiet {
        print!("{text}");
        println!("merged {} shards into {}", shards.len(), dest.display());
    }
    Ok(EXIT_OK)
}

/// Draws a sweep's metric-vs-load plots and its heatmaps into `plots/` of `dir`; `slo` (the
/// scenario's) and the sweep's SLO-attainment target are drawn as reference lines on the metrics
/// they bound.
pub(crate) fn draw_sweep_plots(
    dir: &OutputDir,
    spec: &crate::sweep::SweepSpec,
    curves: &[crate::sweep::MetricCurves],
    slo: Option<crate::metrics::Slo>,
) -> Result<()> {
    use crate::plot::Reference;
    use rayon::prelude::*;
    // Figures are independent files: drawn in parallel (the sweep's serial tail otherwise).
    curves.par_iter().try_for_each(|m| -> Result<()> {
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
        )
    })?;
    crate::sweep::heatmaps(spec, curves)
        .par_iter()
        .try_for_each(|h| crate::plot::sweep_heatmap(&dir.path(&format!("plots/{}", h.file_stem()))?, h))?;
    Ok(())
}

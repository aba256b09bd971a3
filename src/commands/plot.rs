//! `ppdsim plot`: redraw a results directory's plots from its CSV files.

use crate::commands::sweep::draw_sweep_plots;
use crate::error::{InputError, EXIT_OK};
use crate::outdir::{OutputDir, Stale};
use crate::output;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The `[slo]` of a scenario file, read as plain TOML (no other key is checked or resolved);
/// `None` when the file is missing or has no valid `[slo]`.
pub(crate) fn scenario_slo(path: &Path) -> Option<crate::metrics::Slo> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: toml::Table = toml::from_str(&text).ok()?;
    doc.get("slo")?.clone().try_into().ok()
}

/// Redraws the plots of a results directory (see [`crate::cli::Command::Plot`]). The plots are drawn into a
/// staging directory inside it and each file is renamed into place, so a failure leaves the old
/// plots whole; only files the directory's manifest lists (or new ones) are replaced.
pub(crate) fn exec_plot(dir: &Path, flags: crate::cli::WriteFlags) -> Result<i32> {
    let crate::cli::WriteFlags { quiet, force } = flags;
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
            Some(crate::plot::read_request_latencies(&requests_csv, &policies)?)
        } else {
            if !quiet {
                eprintln!(
                    "note: {} has no requests.csv (`run --no-requests`): latency_cdf and ttft_by_turn need a row per request and are left as they are",
                    dir.display()
                );
            }
            None
        };
        let timeline_csv = dir.join("timeline.csv");
        let timeline = if timeline_csv.is_file() {
            output::read_timeline_csv(&timeline_csv)?
        } else {
            Vec::new()
        };
        crate::plot::run_figures(
            &staged,
            &crate::plot::RunPlots {
                summary: &rows,
                policies: &policies,
                requests: requests.as_deref(),
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
        let curves = crate::sweep::analyse_marked(&rows, &spec);
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
        // The exact crossovers from boundary.csv (a directory of an older version has none).
        let boundary = dir.join("boundary.csv");
        let crossovers: Vec<(u32, u32)> = if boundary.is_file() {
            crate::input::read_csv::<crate::routing_map::Boundary>(&boundary)?
                .into_iter()
                .filter_map(|b| b.crossover_append_tokens.map(|x| (b.context_tokens, x)))
                .collect()
        } else {
            Vec::new()
        };
        crate::plot::routing_map(
            &staged.path("plots/routing_map")?,
            &title,
            &contexts,
            &appends,
            &cells,
            &crossovers,
        )?;
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
    if quiet {
        return Ok(EXIT_OK);
    }
    println!("redrew {} ({n} files) in {}", drawn.join(", "), plots.display());
    Ok(EXIT_OK)
}

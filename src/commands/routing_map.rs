//! `ppdsim routing-map`: the (L, m) local/remote map from the cost model alone.

use crate::cli::*;
use crate::error::{InputError, EXIT_OK};
use crate::outdir::{OutputDir, Stale};
use crate::output;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The map's parameters from the command-line options, with `--set` overrides applied (checked
/// exactly as in a `--config` file).
pub(crate) fn map_config_from_options(
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
        kv_load_ms: o.kv_load_ms,
        engine_admit_ms: o.engine_admit_ms,
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
    let original = toml::to_string(&cfg)?;
    let text = crate::input::apply_overrides(origin, &original, set)?;
    let cfg = crate::input::parse_toml(origin, "routing-map parameters", &original, &text, set)?;
    check_map_config(cfg, None)
}

/// The map's parameters from a TOML file (`routing_map.resolved.toml` or one written by hand),
/// with `--set` overrides; the calibration path is relative to the file's directory.
pub(crate) fn map_config_from_file(file: &Path, set: &[String]) -> Result<crate::routing_map::MapConfig> {
    let mut cfg: crate::routing_map::MapConfig = crate::input::read_toml_with(file, "routing-map parameters", set)?;
    let dir = file.parent().unwrap_or(Path::new(""));
    cfg.calibration = dir.join(&cfg.calibration);
    check_map_config(cfg, Some(file))
}

/// `cfg` when its values are in their domains; else an error naming the option (or the key of
/// `file`) and the fix.
pub(crate) fn check_map_config(
    cfg: crate::routing_map::MapConfig,
    file: Option<&Path>,
) -> Result<crate::routing_map::MapConfig> {
    match (cfg.check(), file) {
        (Ok(()), _) => Ok(cfg),
        (Err((key, m)), Some(f)) => Err(InputError::key(f, key, m).into()),
        (Err((key, m)), None) => Err(InputError::option(&format!("--{}", key.replace('_', "-")), &m).into()),
    }
}

pub(crate) fn exec_routing_map(
    cfg: &crate::routing_map::MapConfig,
    output: Option<PathBuf>,
    flags: crate::cli::WriteFlags,
) -> Result<i32> {
    use crate::routing_map::{boundary, map, MapParams, MapRoute};
    let crate::cli::WriteFlags { quiet, force } = flags;
    let calibration = cfg.calibration.as_path();
    let (contexts, appends) = (&cfg.context_tokens[..], &cfg.append_tokens[..]);
    let cal = crate::calibrate::model_file::CalibrationFile::load(calibration)?;
    let model = crate::hardware::model(&cal.model)
        .ok_or_else(|| InputError::key(calibration, "model", format!("unknown model `{}`", cal.model)))?;
    let bandwidth_gbps = cfg.bandwidth_gbps.unwrap_or(cal.kv_transfer.bandwidth_gbps);
    let latency_ms = cfg.latency_ms.unwrap_or(cal.kv_transfer.latency_ms);
    let kv_load_ms = cfg.kv_load_ms.unwrap_or(cal.kv_load_ms());
    let engine_admit_ms = cfg.engine_admit_ms.unwrap_or(cal.engine_admit_ms());
    let p = MapParams {
        coefficients: cal.coefficients().map_err(|m| InputError::file(calibration, m))?,
        kv_bytes_per_token: model.kv_bytes_per_token(),
        link_bandwidth_gbps: bandwidth_gbps,
        link_latency_ms: latency_ms,
        pd_handoff_ms: cal.overheads.pd_handoff_ms.value,
        kv_load_ms,
        engine_admit_ms,
        transfer: cfg.transfer,
        token_budget: cfg.token_budget,
        decode_batch: cfg.decode_batch,
        decode_context_tokens: cfg.decode_context_tokens,
        p_holds_context: !cfg.p_recomputes_context,
    };
    let cells = map(&p, contexts, appends);
    let edge = boundary(&p, &cells, contexts);
    let dest = output.unwrap_or_else(|| Path::new("output").join("routing-map"));
    let staged = OutputDir::create(&dest, force, "routing-map")?;
    staged.write("routing_map.csv", &output::to_csv(&cells)?)?;
    staged.write("boundary.csv", &output::to_csv(&edge)?)?;
    let mut title = cfg.title(bandwidth_gbps);
    if let Some(why) = &cal.uncalibrated {
        title.push_str(" [UNCALIBRATED model]");
        eprintln!("warning: {} is UNCALIBRATED — {why}", calibration.display());
    }
    // Every value filled in; the calibration relative to the results directory, so the file
    // re-runs from there as it is (outputs hold no absolute paths).
    let resolved = crate::routing_map::MapConfig {
        calibration: crate::scenario::relative_path(calibration, &dest),
        bandwidth_gbps: Some(bandwidth_gbps),
        latency_ms: Some(latency_ms),
        kv_load_ms: Some(kv_load_ms),
        engine_admit_ms: Some(engine_admit_ms),
        ..cfg.clone()
    };
    staged.write("routing_map.resolved.toml", toml::to_string(&resolved)?.as_bytes())?;
    let crossovers: Vec<(u32, u32)> = edge
        .iter()
        .filter_map(|b| b.crossover_append_tokens.map(|x| (b.context_tokens, x)))
        .collect();
    crate::plot::routing_map(
        &staged.path("plots/routing_map")?,
        &title,
        contexts,
        appends,
        &cells,
        &crossovers,
    )?;
    staged.commit(Stale::Remove)?;
    if quiet {
        return Ok(EXIT_OK);
    }
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
        match (b.remote_from_append_tokens, b.crossover_append_tokens) {
            (Some(m), Some(x)) if x < m => println!(
                "  L = {}: remote from m = {x} (on the grid: from m = {m})",
                b.context_tokens
            ),
            (Some(m), _) => println!("  L = {}: remote from m = {m}", b.context_tokens),
            (None, _) => println!(
                "  L = {}: local for every m up to {}",
                b.context_tokens,
                appends.iter().max().expect("non-empty")
            ),
        }
    }
    println!("wrote {}", dest.display());
    Ok(EXIT_OK)
}

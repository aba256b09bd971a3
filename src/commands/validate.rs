//! `ppdsim validate`: replay measured points and compare.

use crate::calibrate::readers::Format;
use crate::commands::*;
use crate::error::{InputError, EXIT_OK};
use crate::outdir;
use crate::output;
use anyhow::Result;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

pub(crate) fn collect_json(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(crate::input::expand_dirs(paths, |f| {
        f.extension().is_some_and(|x| x == "json")
    })?)
}

/// An input error about the measured paths as a whole.
pub(crate) fn no_points(measured: &[PathBuf], message: &str) -> InputError {
    InputError {
        location: measured
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        message: message.into(),
    }
}

pub(crate) const UNSUPPORTED: &str =
    "not a supported measured file: expected a vllm-ppd comprehensive point, low-QPS file (v3 or 2-GPU) or interference experiment";

/// Replay settings `validate` takes from its flags instead of the calibration file.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayOverrides {
    /// `--overhead-service-cv`.
    pub overhead_service_cv: Option<f64>,
    /// `--client-requeue-rate` (a fraction).
    pub client_requeue_rate: Option<f64>,
    /// `--stream-ms-per-chunk` \[ms\].
    pub stream_ms_per_chunk: Option<f64>,
    /// `--engine-admit-ms`: the engine's time per first admission \[ms\].
    pub engine_admit_ms: Option<f64>,
    /// `--pd-handoff-queue`.
    pub pd_handoff_queue: Option<crate::sim::HandoffQueue>,
    /// `--prefill-waits-for-send`.
    pub prefill_waits_for_send: Option<bool>,
    /// `--kv-bandwidth-gbps` \[Gbit/s\].
    pub kv_bandwidth_gbps: Option<f64>,
    /// `--kv-load-ms` \[ms\].
    pub kv_load_ms: Option<f64>,
    /// `--cascade-attention`: the interference replay's engine reads a prefix every sequence of
    /// its batch shares once per step.
    pub cascade_attention: bool,
}

pub(crate) fn exec_validate(
    measured: &[PathBuf],
    calibration: &Path,
    output: Option<PathBuf>,
    seed: u64,
    overrides: ReplayOverrides,
    print_points: bool,
    flags: crate::cli::WriteFlags,
) -> Result<i32> {
    let crate::cli::WriteFlags { quiet, force } = flags;
    if quiet && output.is_none() {
        return Err(InputError::option(
            "--quiet",
            "with nothing printed and no -o FILE, validate would have no output: add -o FILE (the tables as CSV and the figures)",
        )
        .into());
    }
    // The tables on stdout, unless --quiet (the files written with -o are the same).
    let say = |text: &str| {
        if !quiet {
            print!("{text}");
        }
    };
    let mut cal = crate::calibrate::model_file::CalibrationFile::load(calibration)?;
    if let Some(cv) = overrides.overhead_service_cv {
        cal.overheads.service_cv = Some(cv);
    }
    if let Some(r) = overrides.client_requeue_rate {
        cal.overheads.client_requeue_rate = Some(r);
    }
    if let Some(a) = overrides.engine_admit_ms {
        cal.overheads.engine_admit_ms = Some(a);
    }
    if let Some(c) = overrides.stream_ms_per_chunk {
        cal.overheads.stream_ms_per_chunk = Some(c);
    }
    if let Some(q) = overrides.pd_handoff_queue {
        cal.overheads.pd_handoff_queue = Some(q);
    }
    if let Some(w) = overrides.prefill_waits_for_send {
        cal.kv_transfer.prefill_waits_for_send = Some(w);
    }
    if let Some(l) = overrides.kv_load_ms {
        cal.kv_transfer.load_ms = Some(l);
    }
    if overrides.cascade_attention {
        cal.cascade_attention = Some(true);
    }
    if let Some(bw) = overrides.kv_bandwidth_gbps {
        cal.kv_transfer.bandwidth_gbps = bw;
    }
    if let Some(why) = &cal.uncalibrated {
        // Said even with --quiet (on stderr then): every figure rests on the model.
        let line = format!("UNCALIBRATED model {} — {why}", calibration.display());
        if quiet {
            eprintln!("warning: {line}");
        } else {
            println!("{line}");
        }
    }
    let files = collect_json(measured)?;
    let csv_paths = output.as_ref().map(|out| {
        [
            out.clone(),
            out.with_extension("comprehensive.csv"),
            out.with_extension("interference.csv"),
        ]
    });
    // Each dataset's figure goes beside its table (stems): FILE.comprehensive.{png,svg} and
    // FILE.interference.{png,svg}.
    let figure_stems = output
        .as_ref()
        .map(|out| [out.with_extension("comprehensive"), out.with_extension("interference")]);
    if let Some(paths) = &csv_paths {
        let mut inputs = files.clone();
        inputs.push(calibration.to_path_buf());
        let figures: Vec<PathBuf> = figure_stems
            .iter()
            .flatten()
            .flat_map(|s| crate::plot::outputs(s))
            .collect();
        let mut outs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        outs.extend(figures.iter().map(|p| p.as_path()));
        outdir::refuse_input_as_output(&outs, &inputs)?;
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
    let mut comprehensive_rows = Vec::new();
    for f in &files {
        // Chosen by content; files of other schemas inside a searched directory are skipped.
        let v = crate::calibrate::readers::read_text(f)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        match v.as_ref().and_then(crate::calibrate::readers::vllm_ppd::detect) {
            Some(Format::VllmPpdLowqpsV3 | Format::VllmPpdLowqps2gpu) => {
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
        say(&crate::validate::report(&rows, print_points));
        if let Some(paths) = &csv_paths {
            pending.push((paths[0].clone(), output::to_csv(&rows)?));
        }
    }
    if !comprehensive.is_empty() {
        let bar = progress_bar(quiet, comprehensive.len() as u64, "comprehensive points");
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
        say(&format!(
            "{} comprehensive points simulated, {skipped_failed} skipped (no successful request measured)\n",
            rows.len()
        ));
        if print_points {
            say(&crate::validate::comprehensive_table(&rows));
        }
        say(&crate::validate::comprehensive_summary(&rows, print_points));
        say(&crate::validate::comprehensive_worst(&rows, 10));
        if let Some(paths) = &csv_paths {
            pending.push((paths[1].clone(), output::to_csv(&rows)?));
        }
        comprehensive_rows = rows;
    }
    if !interference.is_empty() {
        if print_points {
            for r in &interference {
                let n = output::fmt_number;
                say(&format!(
                    "{:<12} {:<44} N={:<3} k={} decode TPOT {:>6}/{:>6} ms  batch {:>7}/{:>7} ms  prefill TTFT {:>7}/{:>7} ms\n",
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
                ));
            }
        }
        say(&crate::validate::interference_summary(&interference));
        if let Some(paths) = &csv_paths {
            pending.push((paths[2].clone(), output::to_csv(&interference)?));
        }
    }
    if points.is_empty() && comprehensive.is_empty() && interference.is_empty() {
        return Err(no_points(measured, UNSUPPORTED).into());
    }
    // Every table and figure is checked, and every figure drawn, before anything is written: a
    // refusal or a drawing error writes nothing.
    let ours = |p: &Path, bytes: &[u8]| {
        outdir::same_first_line(p, bytes) || outdir::same_first_line(p, &header_before_floors(bytes))
    };
    for (p, bytes) in &pending {
        outdir::check_replaceable(p, force, "validation table", &|q| ours(q, bytes))?;
    }
    let mut figures = Vec::new();
    if let (Some([comprehensive_stem, interference_stem]), Some(paths)) = (&figure_stems, &csv_paths) {
        type Draw<'a> = Box<dyn FnOnce(&Path) -> Result<()> + 'a>;
        let comprehensive_figure: Option<Draw> = (!comprehensive_rows.is_empty())
            .then(|| Box::new(|s: &Path| crate::plot::validation_comprehensive(s, &comprehensive_rows)) as Draw);
        let interference_figure: Option<Draw> = interference
            .iter()
            .any(|r| r.experiment == "core")
            .then(|| Box::new(|s: &Path| crate::plot::validation_interference(s, &interference)) as Draw);
        for (stem, table, draw) in [
            (comprehensive_stem, &paths[1], comprehensive_figure),
            (interference_stem, &paths[2], interference_figure),
        ] {
            let Some(draw) = draw else { continue };
            // A figure beside a table ppdsim wrote is ppdsim's too.
            let (_, bytes) = pending.iter().find(|(p, _)| p == table).expect("its table is queued");
            let table_is_ours = ours(table, bytes);
            for f in crate::plot::outputs(stem) {
                outdir::check_replaceable(&f, force, "validation figure", &|_| table_is_ours)?;
            }
            figures.push(crate::plot::StagedFigure::draw(stem, draw)?);
        }
    }
    for (p, bytes) in &pending {
        outdir::write_atomic(p, bytes)?;
        say(&format!("wrote {}\n", p.display()));
    }
    for f in figures {
        let written = f.commit()?;
        say(&format!("wrote {} (.svg beside it)\n", written.display()));
    }
    Ok(EXIT_OK)
}

/// The comprehensive table's header as ppdsim wrote it before the run-to-run floor columns (a
/// table written by that version is still ppdsim's to replace); other tables' unchanged.
fn header_before_floors(table: &[u8]) -> Vec<u8> {
    let header = table.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(header)
        .replace(",t2_p50_ttft_floor_pct,t2_p99_ttft_floor_pct", "")
        .into_bytes()
}

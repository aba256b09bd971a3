//! `ppdsim calibrate`: fit the cost model to measurement files and write it with its fit plot.

use crate::calibrate::{self, CalibrateOptions};
use crate::error::{EXIT_INVALID_INPUT, EXIT_OK};
use crate::outdir;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub(crate) fn exec_calibrate(
    files: &[PathBuf],
    output: &Path,
    opts: CalibrateOptions,
    strict: bool,
    force: bool,
    quiet: bool,
) -> Result<i32> {
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
    // The replay fit takes minutes: a spinner names its stage and counts the replays.
    let mut opts = opts;
    if !quiet {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} calibrate: {msg}, {pos} replays ({elapsed})")
        {
            bar.set_style(style);
        }
        bar.set_message("reading the measurements");
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        opts.progress = bar;
    }
    let c = calibrate::calibrate(files, &opts);
    opts.progress.finish_and_clear();
    let c = c?;
    if !quiet {
        print!("{}", calibrate::report(&c));
    }
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
    // The plots are drawn beside their place first: a drawing error writes nothing.
    let figure = crate::plot::StagedFigure::draw(&plot, |stem| crate::plot::calibration_fit(stem, &c))?;
    outdir::write_atomic(output, &json)?;
    figure.commit()?;
    if quiet {
        return Ok(EXIT_OK);
    }
    println!(
        "wrote {} and {} (.svg beside it)",
        output.display(),
        crate::plot::with_ext(&plot, "png").display()
    );
    Ok(EXIT_OK)
}

/// `ppdsim calibrate --roofline-from REFERENCE --gpu GPU -o OUTPUT`: the reference model carried
/// to `gpu` by the roofline ([`crate::calibrate::roofline`]), written atomically (never over the
/// reference, nor over a file that is not a calibration model without `--force`).
pub(crate) fn exec_roofline(
    reference: &Path,
    gpu: &str,
    tp: u32,
    output: &Path,
    force: bool,
    quiet: bool,
) -> Result<i32> {
    use crate::calibrate::model_file::CalibrationFile;
    use crate::error::InputError;
    outdir::refuse_input_as_output(&[output], &[reference.to_path_buf()])?;
    outdir::check_replaceable(
        output,
        force,
        "calibration model",
        &crate::calibrate::model_file::looks_like_calibration,
    )?;
    let target = crate::hardware::find_gpu(gpu).map_err(|m| InputError::option("--gpu", &m))?;
    let cal = CalibrationFile::load(reference)?;
    let name = reference
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let model =
        crate::calibrate::roofline::transfer(&cal, &name, target, tp).map_err(|m| InputError::file(reference, m))?;
    let mut json = serde_json::to_vec_pretty(&model)?;
    json.push(b'\n');
    outdir::write_atomic(output, &json)?;
    if quiet {
        return Ok(EXIT_OK);
    }
    let c = model.coefficients().expect("transferred coefficients are valid");
    println!(
        "{} on {}: β0 {:.3} ms, β1 {:.5} ms/token, β2 {:.3e} ms/token², β3 {:.4} ms/seq, β4 {:.3e} ms/context-token",
        model.model,
        model.gpu,
        c.beta0_ms,
        c.beta1_ms_per_token,
        c.beta2_ms_per_token2,
        c.beta3_ms_per_seq,
        c.beta4_ms_per_context_token
    );
    for p in &model.physics {
        println!("  [{}] {}", if p.ok { " ok " } else { "FAIL" }, p.check);
    }
    println!("UNCALIBRATED: {}", model.uncalibrated.as_deref().unwrap_or(""));
    println!("wrote {}", output.display());
    Ok(EXIT_OK)
}

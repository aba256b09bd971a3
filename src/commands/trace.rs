//! `ppdsim trace import` and `ppdsim trace stats`.

use crate::cli::*;
use crate::error::{InputError, EXIT_OK};
use crate::outdir;
use anyhow::Result;
use std::path::Path;

/// Native traces need unique ids: the second and later uses of a source id get `~2`, `~3`, …
/// (skipping any name the source already uses); returns how many were renamed.
pub(crate) fn make_ids_unique(convs: &mut [crate::trace::Conversation]) -> usize {
    use std::collections::HashSet;
    let original: HashSet<std::sync::Arc<str>> = convs.iter().map(|c| c.id.clone()).collect();
    let mut used: HashSet<std::sync::Arc<str>> = HashSet::with_capacity(convs.len());
    let mut renamed = 0;
    for c in convs.iter_mut() {
        if used.insert(c.id.clone()) {
            continue;
        }
        let id = (2..)
            .map(|n| format!("{}~{n}", c.id))
            .find(|cand| !original.contains(cand.as_str()) && !used.contains(cand.as_str()))
            .expect("some suffix is free");
        c.id = id.into();
        used.insert(c.id.clone());
        renamed += 1;
    }
    renamed
}

/// Writes an imported trace to `output` atomically, then (unless `quiet`) its import report as
/// JSON on stdout and `summary`, the caller's one line for people, on stderr.
pub(crate) fn write_imported(
    output: &Path,
    mut convs: Vec<crate::trace::Conversation>,
    report: &impl serde::Serialize,
    summary: impl FnOnce() -> String,
    quiet: bool,
) -> Result<()> {
    let renamed = make_ids_unique(&mut convs);
    if renamed > 0 && !quiet {
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
    // As `trace stats`: the machine-readable report on stdout, the human summary and notes on
    // stderr.
    if !quiet {
        println!("{}", serde_json::to_string_pretty(report)?);
        eprintln!("{}", summary());
    }
    Ok(())
}

pub(crate) fn exec_trace(cmd: TraceCommand) -> Result<i32> {
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
            quiet,
            ..
        } => {
            let (convs, report) = match format {
                ImportFormat::Azure => crate::trace::requests::import_azure(&file)?,
                _ => crate::trace::requests::import_vidur(&file)?,
            };
            if convs.is_empty() {
                return Err(InputError::file(&file, "no request with at least one prompt and one output token").into());
            }
            let summary = || {
                format!(
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
                )
            };
            write_imported(&output, convs, &report, summary, quiet)?;
            Ok(EXIT_OK)
        }
        TraceCommand::Import {
            format: ImportFormat::Mooncake,
            file,
            output,
            quiet,
            ..
        } => {
            let (convs, report) = crate::trace::mooncake::import(&file)?;
            if convs.is_empty() {
                return Err(
                    InputError::file(&file, "no request with at least one output token: nothing to write").into(),
                );
            }
            let summary = || {
                format!(
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
                )
            };
            write_imported(&output, convs, &report, summary, quiet)?;
            Ok(EXIT_OK)
        }
        TraceCommand::Import {
            format: ImportFormat::Sharegpt,
            file,
            output,
            quiet,
            ..
        } => {
            let (convs, report) = crate::trace::sharegpt::import(&file)?;
            if convs.is_empty() {
                return Err(InputError::file(&file, "no usable conversation found").into());
            }
            let summary = || {
                format!(
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
                )
            };
            write_imported(&output, convs, &report, summary, quiet)?;
            Ok(EXIT_OK)
        }
        TraceCommand::Stats { trace } => {
            let convs = crate::trace::read_trace(&trace)?;
            println!("{}", serde_json::to_string_pretty(&crate::trace::stats(&convs))?);
            Ok(EXIT_OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_get_a_suffix_no_other_conversation_uses() {
        let mut convs: Vec<crate::trace::Conversation> = ["x", "x", "x~2", "y", "x"]
            .iter()
            .map(|id| crate::trace::Conversation {
                id: (*id).into(),
                turns: [].into(),
                arrival_s: None,
            })
            .collect();
        assert_eq!(make_ids_unique(&mut convs), 2);
        let ids: Vec<&str> = convs.iter().map(|c| &*c.id).collect();
        // `x~2` is taken by the source, so the second `x` becomes `x~3`, the third `x~4`.
        assert_eq!(ids, ["x", "x~3", "x~2", "y", "x~4"]);
    }
}

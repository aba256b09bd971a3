//! Per-request traces (no conversation structure) → one-turn native conversations that keep
//! their arrival times.
//!
//! * **Azure** LLM inference trace 2023 (Splitwise, ISCA 2024; `Azure/AzurePublicDataset`
//!   `data/AzureLLMInferenceTrace_{conv,code}.csv`, CC-BY 4.0): CSV `TIMESTAMP,ContextTokens,
//!   GeneratedTokens`, timestamps `YYYY-MM-DD HH:MM:SS[.fraction]` (no time zone; up to 7
//!   fraction digits, 100 ns), CRLF line ends.
//! * **Vidur** request traces (`microsoft/vidur` `data/processed_traces/*.csv`, MIT, and the
//!   request lists Vidur's generators export): CSV with `num_prefill_tokens`,
//!   `num_decode_tokens` and, when the trace is timed, `arrived_at` \[s\]; other columns
//!   (`num_total_tokens`, `pd_ratio`) are ignored.
//!
//! Each request becomes a one-turn conversation: `user_tokens` = the prompt tokens (the whole
//! prompt, chat template included: replay with `template_tokens_per_message = 0`),
//! `assistant_tokens` = the output tokens, `arrival_s` = its time from the earliest request (none
//! for an untimed Vidur trace). Requests with no output token are dropped and counted.
//! Conversations are written in arrival order (ties keep file order); ids are
//! `<format>-<data row>` (1-based, the row in the file).
//!
//! Both files may be gzip-compressed.

use super::{Conversation, Turn};
use crate::error::{InputError, InputResult};
use serde::Serialize;
use std::path::Path;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RequestsReport {
    /// Data rows read.
    pub rows_read: usize,
    /// Rows with 0 output tokens, dropped.
    pub rows_without_output: usize,
    /// Rows with 0 prompt tokens (a request with nothing to prefill cannot be served), dropped.
    pub rows_without_prompt: usize,
    /// Conversations (one per request) written.
    pub conversations_written: usize,
    /// First to last arrival \[s\]; `None` for an untimed trace.
    pub span_s: Option<f64>,
}

/// One request of a per-request trace.
struct Request {
    /// 1-based data row.
    row: usize,
    /// Arrival in the source's clock \[100 ns ticks\]; `None` when untimed.
    at_ticks: Option<i64>,
    prompt_tokens: u32,
    output_tokens: u32,
}

/// Ticks (100 ns) per second: the resolution of Azure's timestamps.
const TICKS_PER_S: f64 = 1e7;

/// Reads an Azure LLM inference trace (rules in the module docs).
///
/// # Errors
/// An [`InputError`] naming the file (and the line, for a bad row) for unreadable files, a
/// missing column, a malformed timestamp or count, and a file without requests.
pub fn import_azure(path: &Path) -> InputResult<(Vec<Conversation>, RequestsReport)> {
    let expected = "an Azure LLM inference trace has the header TIMESTAMP,ContextTokens,GeneratedTokens";
    let (cols, rows) = read_csv(path, &["TIMESTAMP", "ContextTokens", "GeneratedTokens"], &[], expected)?;
    let mut reqs = Vec::with_capacity(rows.len());
    for (row, (line, rec)) in (1..).zip(rows) {
        let field = |k: usize| rec.get(cols[k].expect("required column")).unwrap_or("");
        let at = parse_timestamp(field(0)).ok_or_else(|| {
            InputError::line(
                path,
                line,
                format!("TIMESTAMP `{}` is not `YYYY-MM-DD HH:MM:SS[.fraction]`", field(0)),
            )
        })?;
        reqs.push(Request {
            row,
            at_ticks: Some(at),
            prompt_tokens: parse_count(path, line, "ContextTokens", field(1))?,
            output_tokens: parse_count(path, line, "GeneratedTokens", field(2))?,
        });
    }
    finish(path, "azure", reqs)
}

/// Reads a Vidur request trace (rules in the module docs).
///
/// # Errors
/// An [`InputError`] naming the file (and the line, for a bad row) for unreadable files, a
/// missing column, a malformed or negative number, and a file without requests.
pub fn import_vidur(path: &Path) -> InputResult<(Vec<Conversation>, RequestsReport)> {
    let expected =
        "a Vidur request trace has the columns num_prefill_tokens,num_decode_tokens and optionally arrived_at";
    let (cols, rows) = read_csv(
        path,
        &["num_prefill_tokens", "num_decode_tokens"],
        &["arrived_at"],
        expected,
    )?;
    let mut reqs = Vec::with_capacity(rows.len());
    for (row, (line, rec)) in (1..).zip(rows) {
        let field = |k: usize| cols[k].map(|c| rec.get(c).unwrap_or(""));
        let at_ticks = match field(2) {
            Some(v) => {
                let s: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s >= 0.0 && s.is_finite())
                    .ok_or_else(|| {
                        InputError::line(path, line, format!("arrived_at `{v}` is not a number of seconds >= 0"))
                    })?;
                Some((s * TICKS_PER_S).round() as i64)
            }
            None => None,
        };
        reqs.push(Request {
            row,
            at_ticks,
            prompt_tokens: parse_count(path, line, "num_prefill_tokens", field(0).expect("required"))?,
            output_tokens: parse_count(path, line, "num_decode_tokens", field(1).expect("required"))?,
        });
    }
    finish(path, "vidur", reqs)
}

/// A per-request CSV: the column index of each required then optional name, and its records
/// (with their file lines).
type Table = (Vec<Option<usize>>, Vec<crate::input::CsvRow>);

fn read_csv(path: &Path, required: &[&str], optional: &[&str], expected: &str) -> InputResult<Table> {
    let text = crate::input::read_text(path)?;
    let (header, rows) = crate::input::csv_rows(path, &text)?;
    let mut cols = Vec::new();
    for name in required {
        let c = crate::input::find_col(&header, name)
            .ok_or_else(|| InputError::file(path, format!("no column `{name}` in the header; {expected}")))?;
        cols.push(Some(c));
    }
    cols.extend(optional.iter().map(|n| crate::input::find_col(&header, n)));
    Ok((cols, rows))
}

fn parse_count(path: &Path, line: usize, column: &str, t: &str) -> InputResult<u32> {
    t.parse::<u32>()
        .ok()
        .or_else(|| {
            // Some exports write counts as floats (`374.0`).
            t.parse::<f64>()
                .ok()
                .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x <= u32::MAX as f64)
                .map(|x| x as u32)
        })
        .ok_or_else(|| {
            InputError::line(
                path,
                line,
                format!("{column} `{t}` is not a token count (an integer >= 0)"),
            )
        })
}

/// Orders the requests by arrival, drops those without output and writes one conversation each.
fn finish(path: &Path, format: &str, mut reqs: Vec<Request>) -> InputResult<(Vec<Conversation>, RequestsReport)> {
    if reqs.is_empty() {
        return Err(InputError::file(path, "no requests in the file"));
    }
    let mut report = RequestsReport {
        rows_read: reqs.len(),
        ..Default::default()
    };
    let t0 = reqs.iter().filter_map(|r| r.at_ticks).min();
    let t1 = reqs.iter().filter_map(|r| r.at_ticks).max();
    report.span_s = t0.zip(t1).map(|(a, b)| (b - a) as f64 / TICKS_PER_S);
    // Stable: equal times keep file order.
    reqs.sort_by_key(|r| r.at_ticks);
    let mut convs = Vec::with_capacity(reqs.len());
    for r in reqs {
        if r.output_tokens == 0 {
            report.rows_without_output += 1;
            continue;
        }
        if r.prompt_tokens == 0 {
            report.rows_without_prompt += 1;
            continue;
        }
        convs.push(Conversation {
            id: format!("{format}-{}", r.row).into(),
            turns: [Turn {
                user_tokens: r.prompt_tokens,
                assistant_tokens: r.output_tokens,
            }]
            .into(),
            arrival_s: r.at_ticks.zip(t0).map(|(t, t0)| (t - t0) as f64 / TICKS_PER_S),
        });
    }
    report.conversations_written = convs.len();
    Ok((convs, report))
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` (or `T` between date and time) → 100 ns ticks since
/// 1970-01-01 00:00:00 (the zone, unknown, cancels in differences); `None` when malformed or out
/// of range. Parsed by chrono; fraction digits below 100 ns are truncated.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let t = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())?
        .and_utc();
    t.timestamp()
        .checked_mul(10_000_000)?
        .checked_add((t.timestamp_subsec_nanos() / 100) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_100ns_ticks() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_timestamp("1970-01-02 00:00:01.5"),
            Some((86_400 + 1) * 10_000_000 + 5_000_000)
        );
        // 2000-03-01 is 11,017 days after the epoch (2000 is a leap year).
        assert_eq!(parse_timestamp("2000-03-01 00:00:00"), Some(11_017 * 864_000_000_000));
        let a = parse_timestamp("2023-11-16 18:15:46.6805900").unwrap();
        let b = parse_timestamp("2023-11-16 18:15:50.9951690").unwrap();
        assert_eq!(b - a, 43_145_790); // 4.314579 s, as Vidur's processed copy has it
                                       // Past midnight and past a month end.
        let c = parse_timestamp("2023-11-30 23:59:59.9999999").unwrap();
        let d = parse_timestamp("2023-12-01 00:00:00").unwrap();
        assert_eq!(d - c, 1);
        for bad in [
            "2023-11-16",
            "2023-13-01 00:00:00",
            "2023-02-29 00:00:00",
            "2023-11-16 24:00:00",
            "2023-11-16 18:15:46.68x",
            "16/11/2023 18:15:46",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        assert!(parse_timestamp("2024-02-29 00:00:00").is_some());
    }
}

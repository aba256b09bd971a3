//! Multi-turn conversation traces.
//!
//! ## Native trace format (`*.jsonl`)
//! One conversation per line, a JSON object:
//! ```json
//! {"id":"wNBG8Gp_80","turns":[{"user_tokens":12,"assistant_tokens":301},{"user_tokens":9,"assistant_tokens":250}]}
//! ```
//! * `id` (string): the source conversation id, unique in the file;
//! * `turns` (non-empty array): in order, each with `user_tokens` (≥ 0, the new user input `u_k`)
//!   and `assistant_tokens` (≥ 1, the answer `a_k`) \[tokens\];
//! * `arrival_s` (optional number ≥ 0): when turn 1 arrived in the source, in seconds from the
//!   trace's first arrival — replayed by `arrival = { kind = "trace" }`; traces without it take
//!   their arrivals from the scenario.
//!
//! Token counts are of message *content*; chat-template tokens are added by the simulator
//! (`template_tokens_per_message` in the scenario). Blank lines are ignored; the file may be
//! gzip-compressed (`*.jsonl.gz`). Importers ([`sharegpt`], [`mooncake`], [`requests`]) write
//! this format.

pub mod mooncake;
pub mod requests;
pub mod sharegpt;

use crate::error::{InputError, InputResult};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// One turn: the user's new input and the assistant's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// New user-input tokens of this turn (`u_k`) \[tokens\].
    pub user_tokens: u32,
    /// Assistant answer tokens (`a_k`) \[tokens\], ≥ 1.
    pub assistant_tokens: u32,
}

/// A conversation: turns in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// Source id.
    pub id: String,
    /// Turns, at least one.
    pub turns: Vec<Turn>,
    /// When turn 1 arrived in the source, from the trace's first arrival \[s\]; `None` when the
    /// source has no timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_s: Option<f64>,
}

/// Reads a native trace (plain or gzip).
///
/// # Errors
/// An [`InputError`] naming the file and line for unreadable files, malformed JSON, unknown keys,
/// empty `turns`, a zero `assistant_tokens` or an `arrival_s` that is negative or not finite, and
/// for a trace without conversations.
pub fn read_trace(path: &Path) -> InputResult<Vec<Conversation>> {
    read_trace_lines(path).map(|(c, _)| c)
}

/// [`read_trace`], with the 1-based file line of each conversation.
///
/// # Errors
/// As [`read_trace`], and a conversation id that an earlier line already used.
pub fn read_trace_lines(path: &Path) -> InputResult<(Vec<Conversation>, Vec<usize>)> {
    use rayon::prelude::*;
    let bytes = crate::input::read_bytes(path, crate::input::OnTruncation::Error)?;
    crate::input::check_line_lengths(path, &bytes)?;
    // Lines parsed in place (no copy per line); a final newline ends the last line.
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let all_lines: Vec<&[u8]> = crate::input::split_lines(text).collect();
    // Parsed in chunks on every thread; each chunk stops at its first bad line, and the chunks'
    // results are taken in file order, so the error reported is the first bad line's whatever
    // the thread count.
    const CHUNK_LINES: usize = 2048;
    let chunks: Vec<InputResult<Vec<(Conversation, usize)>>> = all_lines
        .par_chunks(CHUNK_LINES)
        .enumerate()
        .map(|(c, chunk)| {
            let mut out = Vec::with_capacity(chunk.len());
            for (j, line) in chunk.iter().enumerate() {
                let line_no = c * CHUNK_LINES + j + 1;
                if let Some(conv) = parse_trace_line(path, line_no, line)? {
                    out.push((conv, line_no));
                }
            }
            Ok(out)
        })
        .collect();
    let mut out = Vec::with_capacity(all_lines.len());
    let mut lines = Vec::with_capacity(all_lines.len());
    for chunk in chunks {
        for (conv, line) in chunk? {
            out.push(conv);
            lines.push(line);
        }
    }
    if out.is_empty() {
        return Err(InputError::file(path, "trace holds no conversations"));
    }
    // Ids are checked once all lines parse (a line's syntax error comes first, as it is read).
    let mut seen: rustc_hash::FxHashMap<&str, usize> = Default::default();
    seen.reserve(out.len());
    for (conv, &line) in out.iter().zip(&lines) {
        if let Some(first) = seen.insert(&conv.id, line) {
            return Err(InputError::line(
                path,
                line,
                format!(
                    "conversation id `{}` is already used on line {first}; ids must be unique (they name the conversations in requests.csv)",
                    conv.id
                ),
            ));
        }
    }
    Ok((out, lines))
}

/// One line of a native trace (1-based `line_no`): its conversation, or `None` for a blank line.
///
/// # Errors
/// Invalid UTF-8 or JSON, an empty `turns`, a zero `assistant_tokens` or a bad `arrival_s`,
/// naming the file and line.
fn parse_trace_line(path: &Path, line_no: usize, line: &[u8]) -> InputResult<Option<Conversation>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line)
        .map_err(|_| InputError::line(path, line_no, "cannot read: stream did not contain valid UTF-8"))?;
    if line.trim().is_empty() {
        return Ok(None);
    }
    let conv: Conversation = serde_json::from_str(line).map_err(|e| {
        InputError::line(
            path,
            line_no,
            format!("not a native trace line ({e}); expected {{\"id\":\"..\",\"turns\":[{{\"user_tokens\":N,\"assistant_tokens\":N}},..]}}"),
        )
    })?;
    if conv.turns.is_empty() {
        return Err(InputError::line(
            path,
            line_no,
            "conversation has no turns; remove the line or add turns",
        ));
    }
    if let Some(k) = conv.turns.iter().position(|t| t.assistant_tokens == 0) {
        return Err(InputError::line(
            path,
            line_no,
            format!("turn {} has assistant_tokens = 0; every answer needs ≥ 1 token", k + 1),
        ));
    }
    if conv.arrival_s.is_some_and(|t| !(t >= 0.0 && t.is_finite())) {
        return Err(InputError::line(
            path,
            line_no,
            "arrival_s must be a number of seconds >= 0 (from the trace's first arrival)",
        ));
    }
    Ok(Some(conv))
}

/// True when the file at `path` starts like a native trace (plain or gzip): its first non-blank
/// line is a conversation object. Used to decide whether an import may replace it.
pub fn looks_like_native_trace(path: &Path) -> bool {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    if f.take(1 << 20).read_to_end(&mut head).is_err() {
        return false;
    }
    let text = if head.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // A prefix of a gzip stream decodes up to where it was cut.
        let _ = flate2::read::GzDecoder::new(&head[..])
            .take(1 << 20)
            .read_to_end(&mut out);
        out
    } else {
        head
    };
    text.split(|&b| b == b'\n')
        .find(|l| !l.iter().all(|b| b.is_ascii_whitespace()))
        .is_some_and(|l| serde_json::from_slice::<Conversation>(l).is_ok())
}

/// Serialises conversations as native JSONL (one per line, trailing newline).
pub fn write_trace<W: Write>(mut w: W, convs: &[Conversation]) -> std::io::Result<()> {
    for c in convs {
        serde_json::to_writer(&mut w, c)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Summary statistics of a trace.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TraceStats {
    /// Conversations.
    pub num_conversations: usize,
    /// Turns over all conversations.
    pub num_turns: usize,
    /// Turns per conversation: mean, p50, p90, p99, max.
    pub turns_per_conversation: Quantiles,
    /// User tokens per turn.
    pub user_tokens: Quantiles,
    /// Assistant tokens per turn.
    pub assistant_tokens: Quantiles,
    /// Context `L` before each turn ≥ 2 (content tokens only, no template).
    pub context_tokens_turn2plus: Quantiles,
    /// Per-turn cache rate `L/(L+u)` for turns ≥ 2 (perfect prefix cache).
    pub cache_rate_turn2plus: Quantiles,
    /// The arrival process, when every conversation has `arrival_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrivals: Option<ArrivalStats>,
}

/// The arrival process recorded in a trace.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct ArrivalStats {
    /// Last minus first arrival \[s\].
    pub span_s: f64,
    /// Conversations per second over the span (n / span) [1/s].
    pub mean_rate_per_s: f64,
    /// Gaps between consecutive arrivals (sorted) \[ms\].
    pub interarrival_ms: Quantiles,
    /// Coefficient of variation of the gaps (standard deviation / mean; 1 for Poisson).
    pub interarrival_cv: f64,
}

/// Mean and percentiles of a sample (in the sample's unit: tokens, turns or a rate).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Default)]
pub struct Quantiles {
    /// Mean.
    pub mean: f64,
    /// Median (linear interpolation).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Quantiles {
    /// Statistics of `xs` (all zero for an empty sample).
    pub fn of(xs: &[f64]) -> Quantiles {
        if xs.is_empty() {
            return Quantiles::default();
        }
        let mut v = xs.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        Quantiles {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: crate::metrics::percentile_sorted(&v, 50.0),
            p90: crate::metrics::percentile_sorted(&v, 90.0),
            p99: crate::metrics::percentile_sorted(&v, 99.0),
            max: *v.last().unwrap(),
        }
    }
}

/// Computes [`TraceStats`].
pub fn stats(convs: &[Conversation]) -> TraceStats {
    let mut tpc = Vec::new();
    let mut u = Vec::new();
    let mut a = Vec::new();
    let mut ctx = Vec::new();
    let mut rate = Vec::new();
    for c in convs {
        tpc.push(c.turns.len() as f64);
        let mut l = 0u64;
        for (k, t) in c.turns.iter().enumerate() {
            u.push(t.user_tokens as f64);
            a.push(t.assistant_tokens as f64);
            if k > 0 {
                ctx.push(l as f64);
                rate.push(l as f64 / (l + t.user_tokens as u64) as f64);
            }
            l += (t.user_tokens + t.assistant_tokens) as u64;
        }
    }
    let arrivals = convs
        .iter()
        .map(|c| c.arrival_s)
        .collect::<Option<Vec<f64>>>()
        .and_then(|mut t| {
            if t.len() < 2 {
                return None;
            }
            t.sort_by(f64::total_cmp);
            let gaps: Vec<f64> = t.windows(2).map(|w| (w[1] - w[0]) * 1e3).collect();
            let span_s = t[t.len() - 1] - t[0];
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            Some(ArrivalStats {
                span_s,
                mean_rate_per_s: if span_s > 0.0 {
                    t.len() as f64 / span_s
                } else {
                    f64::INFINITY
                },
                interarrival_ms: Quantiles::of(&gaps),
                interarrival_cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
            })
        });
    TraceStats {
        num_conversations: convs.len(),
        num_turns: u.len(),
        turns_per_conversation: Quantiles::of(&tpc),
        user_tokens: Quantiles::of(&u),
        assistant_tokens: Quantiles::of(&a),
        context_tokens_turn2plus: Quantiles::of(&ctx),
        cache_rate_turn2plus: Quantiles::of(&rate),
        arrivals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        f
    }

    #[test]
    fn reads_lines_in_place_with_their_numbers() {
        // CRLF endings, a blank line (line 2) and no final newline.
        let f = write(
            b"{\"id\":\"a\",\"turns\":[{\"user_tokens\":3,\"assistant_tokens\":4}]}\r\n\r\n{\"id\":\"b\",\"turns\":[{\"user_tokens\":5,\"assistant_tokens\":6}],\"arrival_s\":1.5}",
        );
        let (convs, lines) = read_trace_lines(f.path()).expect("valid");
        assert_eq!(lines, vec![1, 3]);
        assert_eq!((convs[0].id.as_str(), convs[1].id.as_str()), ("a", "b"));
        assert_eq!(
            convs[1].turns,
            vec![Turn {
                user_tokens: 5,
                assistant_tokens: 6
            }]
        );
        assert_eq!(convs[1].arrival_s, Some(1.5));
    }

    #[test]
    fn names_the_line_of_bad_utf8_and_of_a_repeated_id() {
        let line = b"{\"id\":\"a\",\"turns\":[{\"user_tokens\":3,\"assistant_tokens\":4}]}\n";
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"{\"id\":\"\xff\"}\n");
        let err = read_trace_lines(write(&bytes).path())
            .expect_err("bad UTF-8")
            .to_string();
        assert!(err.contains(":2: ") && err.contains("UTF-8"), "{err}");
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\n");
        bytes.extend_from_slice(line);
        let err = read_trace_lines(write(&bytes).path())
            .expect_err("repeated id")
            .to_string();
        assert!(err.contains(":3: ") && err.contains("already used on line 1"), "{err}");
    }

    #[test]
    fn a_long_trace_parsed_in_chunks_keeps_its_order_and_reports_its_first_bad_line() {
        // 10,000 lines: several parse chunks, taken by any thread in any order.
        let line =
            |i: usize| format!("{{\"id\":\"c{i}\",\"turns\":[{{\"user_tokens\":{i},\"assistant_tokens\":1}}]}}\n");
        let good: Vec<String> = (0..10_000).map(line).collect();
        let (convs, lines) = read_trace_lines(write(good.concat().as_bytes()).path()).expect("valid");
        assert_eq!(convs.len(), 10_000);
        for (k, (c, &l)) in convs.iter().zip(&lines).enumerate() {
            assert_eq!(
                (c.id.as_str(), c.turns[0].user_tokens, l),
                (format!("c{k}").as_str(), k as u32, k + 1)
            );
        }
        // Bad lines in two chunks (7,001 in the fourth, 3,001 in the second): the earlier is named.
        let mut bad = good.clone();
        bad[7_000] = "{\"id\":\"x\",\"turns\":[]}\n".into();
        bad[3_000] = "{\"id\":\"y\"\n".into();
        let err = read_trace_lines(write(bad.concat().as_bytes()).path())
            .expect_err("bad lines")
            .to_string();
        assert!(
            err.contains(":3001: ") && err.contains("not a native trace line"),
            "{err}"
        );
        bad[3_000] = good[3_000].clone();
        let err = read_trace_lines(write(bad.concat().as_bytes()).path())
            .expect_err("bad line")
            .to_string();
        assert!(err.contains(":7001: ") && err.contains("has no turns"), "{err}");
    }
}

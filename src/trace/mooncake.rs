//! Mooncake (Kimi, FAST'25) request traces → native conversations.
//!
//! Input: JSON lines `{"timestamp": ms, "input_length": N, "output_length": N, "hash_ids": [..]}`
//! (gzip or plain), one request per line in arrival order, where `hash_ids` are prefix-block
//! hashes of 512 tokens: two requests sharing the id at position i share their first (i+1)·512
//! prompt tokens. The trace has no session id, so conversations are rebuilt from the prefix
//! structure a multi-turn chat leaves:
//!
//! * a request **continues** the most recent earlier request whose complete blocks
//!   (`input_length / 512` of them, at least 2 — every request of the conversation trace starts
//!   with a shared system-prompt block) are a prefix of its `hash_ids`, the longest such prefix
//!   winning;
//! * a request that already has a continuation is not continued again: a later request sharing
//!   its prefix starts a new conversation (a branch; counted);
//! * a continuation's new user input is `input_length − (previous prompt + previous
//!   output_length)`, the previous prompt as the simulator will see it (its `input_length` unless
//!   an earlier clamp raised it); when negative (the resent history is shorter than the previous
//!   prompt plus answer) it is taken as 0 and counted, so the simulator's prompt overstates the
//!   real one by that much;
//! * turn 1's user input is the whole `input_length`; answers are `output_length` (≥ 1).
//!
//! A conversation's `arrival_s` is its first request's timestamp minus the trace's earliest, in
//! seconds (replayed by `arrival = { kind = "trace" }`); the times of later turns are not kept —
//! the scenario's think time separates them. Conversations are written in the order of their first
//! request.

use super::{Conversation, Turn};
use crate::error::{InputError, InputResult};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Block size of Mooncake's `hash_ids` \[tokens\].
pub const BLOCK_TOKENS: u32 = 512;

/// One request line.
#[derive(Deserialize)]
struct Row {
    /// Arrival \[ms\].
    timestamp: u64,
    input_length: u32,
    output_length: u32,
    hash_ids: Vec<u64>,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MooncakeReport {
    /// Requests read.
    pub requests_read: usize,
    /// Requests with `output_length = 0`, dropped.
    pub requests_without_output: usize,
    /// Requests that continue an earlier one (turns ≥ 2).
    pub continuations: usize,
    /// Requests sharing a prefix with a request that already had a continuation: new conversations.
    pub branches: usize,
    /// Continuations whose new input came out negative and was taken as 0.
    pub clamped_turns: usize,
    /// Largest such shortfall \[tokens\].
    pub max_clamped_tokens: u32,
    /// Conversations written.
    pub conversations_written: usize,
    /// Conversations with at least 2 turns.
    pub multi_turn_conversations: usize,
    /// Longest conversation \[turns\].
    pub max_turns: usize,
}

/// Reads a Mooncake trace and rebuilds its conversations (rules in the module docs).
///
/// # Errors
/// An [`InputError`] naming the file and line for unreadable files and malformed lines, and for
/// a file without requests.
pub fn import(path: &Path) -> InputResult<(Vec<Conversation>, MooncakeReport)> {
    let text = crate::input::read_text(path)?;
    let mut report = MooncakeReport::default();
    // The conversations' turns grow as continuations are found; each becomes a Conversation at
    // the end, named after the line of its first request (`ids`).
    let (mut turns, mut ids): (Vec<Vec<Turn>>, Vec<usize>) = (Vec::new(), Vec::new());
    // A request written as a turn.
    struct Kept {
        /// Index of its conversation in `turns`.
        conv: usize,
        /// Its prompt as the simulator will see it \[tokens\].
        prompt_tokens: u64,
        /// Its answer \[tokens\].
        answer_tokens: u32,
        /// Whether a later request already continues it.
        continued: bool,
    }
    let mut kept: Vec<Kept> = Vec::new();
    // Timestamp of each conversation's first request \[ms\].
    let mut starts_ms: Vec<u64> = Vec::new();
    // Complete-block prefix of a kept request → its index in `kept` (the latest wins).
    let mut by_prefix: HashMap<Vec<u64>, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Row = serde_json::from_str(line).map_err(|e| {
            InputError::line(
                path,
                i + 1,
                format!("not a Mooncake request ({e}); expected {{\"timestamp\":ms,\"input_length\":N,\"output_length\":N,\"hash_ids\":[..]}}"),
            )
        })?;
        report.requests_read += 1;
        if r.output_length == 0 {
            report.requests_without_output += 1;
            continue;
        }
        let parent = (2..=r.hash_ids.len())
            .rev()
            .find_map(|k| by_prefix.get(&r.hash_ids[..k]).copied());
        let continued = match parent {
            Some(p) if kept[p].continued => {
                report.branches += 1;
                None
            }
            other => other,
        };
        match continued {
            Some(p) => {
                kept[p].continued = true;
                let c = kept[p].conv;
                let history = kept[p].prompt_tokens + kept[p].answer_tokens as u64;
                let user = r.input_length as i64 - history as i64;
                if user < 0 {
                    report.clamped_turns += 1;
                    report.max_clamped_tokens = report.max_clamped_tokens.max((-user) as u32);
                }
                report.continuations += 1;
                let user = user.max(0) as u32;
                turns[c].push(Turn {
                    user_tokens: user,
                    assistant_tokens: r.output_length,
                });
                kept.push(Kept {
                    conv: c,
                    prompt_tokens: history + user as u64,
                    answer_tokens: r.output_length,
                    continued: false,
                });
            }
            None => {
                ids.push(i + 1);
                turns.push(vec![Turn {
                    user_tokens: r.input_length,
                    assistant_tokens: r.output_length,
                }]);
                starts_ms.push(r.timestamp);
                kept.push(Kept {
                    conv: turns.len() - 1,
                    prompt_tokens: r.input_length as u64,
                    answer_tokens: r.output_length,
                    continued: false,
                });
            }
        }
        let full = (r.input_length / BLOCK_TOKENS) as usize;
        if full >= 2 && full <= r.hash_ids.len() {
            by_prefix.insert(r.hash_ids[..full].to_vec(), kept.len() - 1);
        }
    }
    if report.requests_read == 0 {
        return Err(InputError::file(path, "no requests in the file"));
    }
    let t0 = starts_ms.iter().copied().min().unwrap_or(0);
    let convs: Vec<Conversation> = turns
        .into_iter()
        .zip(ids)
        .zip(&starts_ms)
        .map(|((turns, i), t)| Conversation {
            id: format!("mooncake-{i}").into(),
            turns: turns.into(),
            arrival_s: Some((t - t0) as f64 / 1e3),
        })
        .collect();
    report.conversations_written = convs.len();
    report.multi_turn_conversations = convs.iter().filter(|c| c.turns.len() >= 2).count();
    report.max_turns = convs.iter().map(|c| c.turns.len()).max().unwrap_or(0);
    Ok((convs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_branches_and_clamps() {
        // A: 1,100 tokens (2 full blocks, key [0, 1]) → 100-token answer.
        // B: 1,600 tokens starting with A's [0, 1]: continues A, new input 1,600 − 1,200 = 400;
        //    its key is [0, 1, 3] (3 full blocks).
        // C: starts with [0, 1] too, but A already continues in B: a branch, a new conversation.
        // D: starts with B's [0, 1, 3], 1,650 tokens < B's 1,600 + 80: new input −30 → 0.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let rows = [
            r#"{"timestamp":0,"input_length":1100,"output_length":100,"hash_ids":[0,1,2]}"#,
            r#"{"timestamp":0,"input_length":1600,"output_length":80,"hash_ids":[0,1,3,5]}"#,
            r#"{"timestamp":3000,"input_length":1200,"output_length":10,"hash_ids":[0,1,2,9]}"#,
            r#"{"timestamp":6000,"input_length":1650,"output_length":7,"hash_ids":[0,1,3,4]}"#,
        ];
        std::fs::write(&path, rows.join("\n")).unwrap();
        let (convs, report) = import(&path).unwrap();
        let t = |u, a| Turn {
            user_tokens: u,
            assistant_tokens: a,
        };
        assert_eq!(convs.len(), 2);
        assert_eq!(&*convs[0].id, "mooncake-1");
        assert_eq!(*convs[0].turns, [t(1100, 100), t(400, 80), t(0, 7)]);
        assert_eq!(&*convs[1].id, "mooncake-3");
        assert_eq!(*convs[1].turns, [t(1200, 10)]);
        assert_eq!(
            (
                report.continuations,
                report.branches,
                report.clamped_turns,
                report.max_clamped_tokens
            ),
            (2, 1, 1, 30)
        );
        // A malformed line is refused with its number.
        std::fs::write(&path, format!("{}\n{{\"timestamp\":1}}\n", rows[0])).unwrap();
        let e = import(&path).unwrap_err().to_string();
        assert!(e.contains(":2") && e.contains("not a Mooncake request"), "{e}");
    }
}

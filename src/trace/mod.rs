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
    /// Source id (shared, not copied, by the workloads and records made from it).
    pub id: std::sync::Arc<str>,
    /// Turns, at least one (shared, not copied, by the workloads made from it).
    pub turns: std::sync::Arc<[Turn]>,
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
/// The text is parsed in regions of whole lines (`REGION_BYTES`, 64 KiB) on every thread of the pool;
/// a gzip trace's regions are handed out as they are inflated, so parsing overlaps the
/// decompression. Whatever the thread count or the region size, the result is the same, and so
/// is the error: a corrupt gzip stream first, then the first over-long line, then the first bad
/// line.
///
/// # Errors
/// As [`read_trace`], and a conversation id that an earlier line already used.
pub fn read_trace_lines(path: &Path) -> InputResult<(Vec<Conversation>, Vec<usize>)> {
    read_trace_lines_in(path, REGION_BYTES)
}

/// Bytes of trace text a parsing task takes (extended to the end of its last line): large
/// enough that a task outweighs its hand-over, small enough that the first regions are parsed
/// while the rest of a gzip stream is still being inflated (≈ 1 MB inflates in ≈ 2 ms).
const REGION_BYTES: usize = 64 << 10;

/// [`read_trace_lines`] with regions of `region_bytes` (tests vary it).
fn read_trace_lines_in(path: &Path, region_bytes: usize) -> InputResult<(Vec<Conversation>, Vec<usize>)> {
    let raw = crate::input::read_raw(path)?;
    let regions = if crate::input::is_gzip(&raw) {
        match parse_gzip_regions(path, &raw, region_bytes)? {
            Some(regions) => regions,
            // The trailer's size was not the stream's (several members, ≥ 4 GiB, a corrupt
            // trailer): inflated whole, then parsed.
            None => {
                let text = crate::input::gunzip(path, &raw, crate::input::OnTruncation::Error)?;
                parse_text_regions(path, &text, region_bytes)
            }
        }
    } else {
        parse_text_regions(path, &raw, region_bytes)
    };
    let (out, lines) = join_regions(regions)?;
    check_whole_trace(path, &out, &lines)?;
    Ok((out, lines))
}

/// [`read_trace_lines`]' checks of a whole trace `path` once every line parsed: it holds
/// conversations (`convs`, on file lines `lines`), and their ids are unique.
///
/// # Errors
/// No conversation, naming the file; a repeated id, naming its line and the first one's.
pub(crate) fn check_whole_trace(path: &Path, convs: &[Conversation], lines: &[usize]) -> InputResult<()> {
    if convs.is_empty() {
        return Err(InputError::file(path, "trace holds no conversations"));
    }
    // Ids are checked once all lines parse (a line's syntax error comes first, as it is read).
    // First by a set of their 64-bit hashes (9 bytes a slot against the map's 25: on Vidur's
    // 10,000 ids 36 pages of memory to fault in instead of 100); only when two hashes are equal
    // does the map compare the ids themselves, to name the repeat and its first line.
    let mut hashes: rustc_hash::FxHashSet<u64> = Default::default();
    hashes.reserve(convs.len());
    let hash = |id: &str| {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        id.hash(&mut h);
        h.finish()
    };
    if convs.iter().all(|c| hashes.insert(hash(&c.id))) {
        return Ok(());
    }
    let mut seen: rustc_hash::FxHashMap<&str, usize> = Default::default();
    seen.reserve(convs.len());
    for (conv, &line) in convs.iter().zip(lines) {
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
    Ok(())
}

/// Reads the native trace `path` on the calling thread, a region of whole lines at a time
/// (the first ≈ 4 KiB, each next one twice as large up to ≈ 64 KiB, as a gzip stream inflates:
/// a run fed with them waits for a few dozen lines, not a thousand, before it starts), and
/// hands each region's conversations with
/// their 1-based file lines, in file order, to `sink` as soon as it is parsed: a run fed with
/// them starts while the rest is read (`ppdsim run`'s fast path, [`crate::commands::feed`]).
///
/// Returns true when the whole file read and `sink` took every region: the conversations handed
/// over are then exactly those [`read_trace_lines`] gives, before its checks of the whole
/// (non-empty, unique ids). Returns false, having stopped, at the first region that does not
/// read (unreadable file, corrupt gzip, a bad or over-long line) or that `sink` refuses:
/// `read_trace_lines` reports the error.
pub fn feed_trace(path: &Path, sink: impl FnMut(Vec<(Conversation, usize)>) -> bool) -> bool {
    feed_trace_in(path, FIRST_FED_REGION_BYTES, REGION_BYTES, sink)
}

/// Bytes of trace text in the first region [`feed_trace`] hands over: ≈ 40 of Vidur's lines
/// against ≈ 650 in a whole [`REGION_BYTES`] region. With a temporary timer around the feed's
/// receive, Vidur's run waited 0.001–0.39 ms for its first conversation in five of six runs
/// (4.3 ms in one, the reader thread held up), against 0.55–1.7 ms for all of its waits
/// together with 64 KiB regions throughout, in five of six runs (3.1 ms in one; the first wait
/// not timed apart; 2026-12-06).
const FIRST_FED_REGION_BYTES: usize = 4 << 10;

/// [`feed_trace`] with a first region of `first_region_bytes`, each next one twice as large up
/// to `region_bytes` (tests vary both).
fn feed_trace_in(
    path: &Path,
    first_region_bytes: usize,
    region_bytes: usize,
    mut sink: impl FnMut(Vec<(Conversation, usize)>) -> bool,
) -> bool {
    use std::io::Read;
    let Ok(raw) = crate::input::read_raw(path) else {
        return false;
    };
    let mut next_line = 1usize;
    // Parses `text` (whole lines, the last one's newline excluded or not) from `next_line` on
    // and hands it over; false to stop.
    let mut hand = |text: &[u8], next_line: &mut usize| -> bool {
        let newlines = memchr::memchr_iter(b'\n', text).count();
        let region = parse_region(path, *next_line, text, newlines + 1);
        *next_line += newlines;
        region.too_long.is_none() && region.error.is_none() && sink(region.convs)
    };
    // The size of the next region: doubling from the first up to `region_bytes`.
    let max_size = region_bytes.max(1);
    let mut size = first_region_bytes.clamp(1, max_size);
    let grow = |size: &mut usize| *size = (*size * 2).min(max_size);
    if !crate::input::is_gzip(&raw) {
        let mut rest = &raw[..];
        while !rest.is_empty() {
            let (region, tail) = rest.split_at(region_end(rest, size));
            if !hand(region, &mut next_line) {
                return false;
            }
            rest = tail;
            grow(&mut size);
        }
        return true;
    }
    // The first gzip member, as `parse_gzip_regions` and `input::gunzip` read it.
    let mut decoder = flate2::read::GzDecoder::new(&raw[..]);
    // `buf[..len]` is text not handed over yet; the rest of `buf` is room already zeroed, so
    // that only its growth is zero-filled (re-zeroing every region before inflating into it was
    // ≈ 1.1 M instructions of Vidur's ≈ 1 MB trace).
    let (mut buf, mut len) = (Vec::<u8>::new(), 0);
    loop {
        // `buf[..len]` holds the start of a line (no newline): at least a region more is inflated.
        let start = len;
        let want = start + size.max(start);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut filled = start;
        while filled < want {
            match decoder.read(&mut buf[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if filled < want {
            return filled == 0 || hand(&buf[..filled], &mut next_line);
        }
        len = filled;
        if let Some(nl) = memchr::memrchr(b'\n', &buf[start..filled]) {
            let end = start + nl + 1;
            if !hand(&buf[..end], &mut next_line) {
                return false;
            }
            buf.copy_within(end..filled, 0);
            len = filled - end;
            grow(&mut size);
        }
    }
}

/// What one region of whole lines of a trace holds.
#[derive(Default)]
struct Region {
    /// Its first line longer than [`crate::input::MAX_LINE_BYTES`].
    too_long: Option<InputError>,
    /// Its conversations with their file lines, up to its first bad line.
    convs: Vec<(Conversation, usize)>,
    /// Its first bad line's error.
    error: Option<InputError>,
}

/// Parses the region `text` of a trace, whose first line is the file's line `first_line`:
/// every line of it, the last one's newline excluded (a file's final newline ends its last line
/// rather than starting an empty one). `lines` (its line count, or one more) sizes its list.
fn parse_region(path: &Path, first_line: usize, text: &[u8], lines: usize) -> Region {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let mut region = Region {
        convs: Vec::with_capacity(lines),
        ..Region::default()
    };
    if let Err(e) = crate::input::check_line_lengths_from(path, first_line, text) {
        region.too_long = Some(e);
        return region;
    }
    for (j, line) in crate::input::split_lines(text).enumerate() {
        let line_no = first_line + j;
        match parse_trace_line(path, line_no, line) {
            Ok(Some(conv)) => region.convs.push((conv, line_no)),
            Ok(None) => {}
            Err(e) => {
                region.error = Some(e);
                break;
            }
        }
    }
    region
}

/// Hands regions of whole lines, in file order, to parsing tasks of a rayon scope.
struct RegionTasks<'s> {
    path: &'s Path,
    /// The next region's first line (1-based).
    next_line: usize,
    /// Regions handed out so far.
    count: usize,
    results: std::sync::mpsc::Sender<(usize, Region)>,
}

impl<'s> RegionTasks<'s> {
    /// Spawns the parsing of `text`, the file's next lines: it ends with a newline unless it
    /// ends the file.
    fn hand(&mut self, scope: &rayon::Scope<'s>, text: &'s [u8]) {
        let (path, first_line, k, tx) = (self.path, self.next_line, self.count, self.results.clone());
        let newlines = memchr::memchr_iter(b'\n', text).count();
        self.next_line += newlines;
        self.count += 1;
        scope.spawn(move |_| {
            // The receiver lives until every task of the scope is done.
            let _ = tx.send((k, parse_region(path, first_line, text, newlines + 1)));
        });
    }
}

/// Runs `hand_out` in a rayon scope with the tasks it hands the regions of `path`'s text to;
/// returns what it returns and the regions parsed, in file order.
fn parse_in_regions<'s, T: Send>(
    path: &'s Path,
    hand_out: impl FnOnce(&rayon::Scope<'s>, &mut RegionTasks<'s>) -> T + Send,
) -> (T, Vec<Region>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = rayon::scope(|scope| {
        let mut tasks = RegionTasks {
            path,
            next_line: 1,
            count: 0,
            results: tx,
        };
        hand_out(scope, &mut tasks)
    });
    let mut regions: Vec<(usize, Region)> = rx.into_iter().collect();
    regions.sort_unstable_by_key(|&(k, _)| k);
    assert!(
        regions.iter().enumerate().all(|(i, &(k, _))| i == k),
        "every region handed out is parsed once"
    );
    (out, regions.into_iter().map(|(_, r)| r).collect())
}

/// The regions of `text` (a whole trace file's text) parsed on the pool, in file order.
fn parse_text_regions(path: &Path, text: &[u8], region_bytes: usize) -> Vec<Region> {
    let ((), regions) = parse_in_regions(path, |scope, tasks| {
        let mut rest = text;
        loop {
            let (region, tail) = rest.split_at(region_end(rest, region_bytes));
            tasks.hand(scope, region);
            if tail.is_empty() {
                return;
            }
            rest = tail;
        }
    });
    regions
}

/// Where the region that starts `text` ends: after the last newline of its first
/// `region_bytes` bytes, else (a line longer than that) after the first newline past them, or
/// at the end of `text`.
fn region_end(text: &[u8], region_bytes: usize) -> usize {
    if text.len() <= region_bytes {
        return text.len();
    }
    match memchr::memrchr(b'\n', &text[..region_bytes]) {
        Some(nl) => nl + 1,
        None => memchr::memchr(b'\n', &text[region_bytes..]).map_or(text.len(), |nl| region_bytes + nl + 1),
    }
}

/// Inflates the gzip trace `raw` into a buffer of the size its trailer declares and parses it
/// region by region on the pool while the rest inflates. `None` when the stream does not fill
/// that buffer exactly to its end (the caller inflates it whole instead).
///
/// # Errors
/// A corrupt or truncated stream, naming the file.
fn parse_gzip_regions(path: &Path, raw: &[u8], region_bytes: usize) -> InputResult<Option<Vec<Region>>> {
    use std::io::Read;
    let size = crate::input::gzip_size_hint(raw);
    if size == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; size];
    let mut decoder = flate2::read::GzDecoder::new(raw);
    // Reads into `into` until it is full or the stream ends; the bytes read.
    let mut inflate = |into: &mut [u8]| -> std::io::Result<usize> {
        let mut n = 0;
        while n < into.len() {
            match decoder.read(&mut into[n..]) {
                Ok(0) => break,
                Ok(m) => n += m,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    };
    // Whether the stream fits the buffer: inflated to its end and handed out.
    let (fits, regions) = parse_in_regions(path, |scope, tasks| -> std::io::Result<bool> {
        // `rest` is the buffer not yet handed out; its first `filled` bytes are inflated.
        let mut rest: &mut [u8] = &mut buf[..];
        let mut filled = 0usize;
        loop {
            // At least as much again as is pending: a long line takes O(log) reads.
            let want = filled.saturating_add(region_bytes.max(filled)).min(rest.len());
            let got = inflate(&mut rest[filled..want])?;
            filled += got;
            if filled < want || filled == rest.len() {
                // The stream or the buffer ended: a stream that goes on past the buffer is
                // inflated whole instead.
                if filled == rest.len() && inflate(&mut [0u8; 1])? > 0 {
                    return Ok(false);
                }
                if filled > 0 {
                    tasks.hand(scope, &std::mem::take(&mut rest)[..filled]);
                }
                return Ok(true);
            }
            // Whole lines go; the last one, still being inflated, stays. The bytes before this
            // read hold no newline (they would have gone), so only the new ones are searched.
            if let Some(nl) = memchr::memrchr(b'\n', &rest[filled - got..filled]) {
                let end = filled - got + nl + 1;
                let (region, tail) = std::mem::take(&mut rest).split_at_mut(end);
                tasks.hand(scope, region);
                rest = tail;
                filled -= end;
            }
        }
    });
    match fits {
        Err(e) => Err(crate::input::gzip_error(path, &e)),
        Ok(false) => Ok(None),
        Ok(true) => Ok(Some(regions)),
    }
}

/// The conversations and their lines, or the first over-long line of any region, else the
/// first bad line.
fn join_regions(mut regions: Vec<Region>) -> InputResult<(Vec<Conversation>, Vec<usize>)> {
    if let Some(e) = regions.iter_mut().find_map(|r| r.too_long.take()) {
        return Err(e);
    }
    let total = regions.iter().map(|r| r.convs.len()).sum();
    let (mut out, mut lines) = (Vec::with_capacity(total), Vec::with_capacity(total));
    for r in regions {
        if let Some(e) = r.error {
            return Err(e);
        }
        for (conv, line) in r.convs {
            out.push(conv);
            lines.push(line);
        }
    }
    Ok((out, lines))
}

/// A native trace line as [`parse_trace_line`] reads it: [`Conversation`]'s fields and serde
/// errors (its name included), with the id borrowed from the line (when it holds no escape) and
/// the turns gathered on the stack, so that each becomes its shared `Arc` in one allocation —
/// where deserialising [`Conversation`] itself allocates a `String` and a growing `Vec` and then
/// copies each into its `Arc` (≈ 520 instructions a line more, by callgrind on
/// `ppdsim trace stats` of Vidur's 10,000-line trace).
#[derive(Deserialize)]
#[serde(rename = "Conversation", deny_unknown_fields)]
struct TraceLine<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    turns: TurnList,
    #[serde(default)]
    arrival_s: Option<f64>,
}

impl TraceLine<'_> {
    fn into_conversation(self) -> Conversation {
        Conversation {
            id: self.id.as_ref().into(),
            turns: self.turns.0,
            arrival_s: self.arrival_s,
        }
    }
}

/// A JSON array of turns read into an `Arc<[Turn]>` through a stack buffer of
/// [`TurnList::STACK_TURNS`] (longer conversations spill to a `Vec` first).
struct TurnList(std::sync::Arc<[Turn]>);

impl TurnList {
    /// Turns gathered on the stack: more than almost any conversation holds (ShareGPT's average
    /// is 4.4).
    const STACK_TURNS: usize = 16;
}

impl<'de> Deserialize<'de> for TurnList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Turns;
        impl<'de> serde::de::Visitor<'de> for Turns {
            type Value = TurnList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                // What serde's `Vec` says, so errors read as they did.
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TurnList, A::Error> {
                let none = Turn {
                    user_tokens: 0,
                    assistant_tokens: 0,
                };
                let mut stack = [none; TurnList::STACK_TURNS];
                let mut n = 0;
                while n < TurnList::STACK_TURNS {
                    match seq.next_element::<Turn>()? {
                        Some(t) => stack[n] = t,
                        None => return Ok(TurnList(stack[..n].into())),
                    }
                    n += 1;
                }
                let mut all = stack.to_vec();
                while let Some(t) = seq.next_element::<Turn>()? {
                    all.push(t);
                }
                Ok(TurnList(all.into()))
            }
        }
        d.deserialize_seq(Turns)
    }
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
    let conv: Conversation = serde_json::from_str::<TraceLine>(line).map(TraceLine::into_conversation).map_err(|e| {
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
        assert_eq!((&*convs[0].id, &*convs[1].id), ("a", "b"));
        assert_eq!(
            *convs[1].turns,
            [Turn {
                user_tokens: 5,
                assistant_tokens: 6
            }]
        );
        assert_eq!(convs[1].arrival_s, Some(1.5));
    }

    #[test]
    fn a_line_reads_as_the_derived_conversation_does_values_and_errors_alike() {
        let turns = |n: usize| -> String {
            (0..n)
                .map(|i| format!(r#"{{"user_tokens":{i},"assistant_tokens":{}}}"#, i + 1))
                .collect::<Vec<_>>()
                .join(",")
        };
        let lines = [
            // An id with escapes (not borrowable), no turns past the stack, exactly the stack,
            // and a spill past it.
            format!(r#"{{"id":"a\"b\u00e9","turns":[{}]}}"#, turns(1)),
            format!(
                r#"{{"id":"s","turns":[{}],"arrival_s":2.5}}"#,
                turns(TurnList::STACK_TURNS)
            ),
            format!(
                r#"{{"arrival_s":0,"turns":[{}],"id":"long"}}"#,
                turns(2 * TurnList::STACK_TURNS + 3)
            ),
            // Errors: in a spilled list, the list's type, a missing and an unknown field, a
            // repeated one, the struct's own name.
            format!(
                r#"{{"id":"e","turns":[{},{{"user_tokens":1}}]}}"#,
                turns(TurnList::STACK_TURNS + 1)
            ),
            r#"{"id":"e","turns":{"user_tokens":1}}"#.into(),
            r#"{"turns":[]}"#.into(),
            r#"{"id":"e","turns":[],"extra":1}"#.into(),
            r#"{"id":"e","id":"f","turns":[]}"#.into(),
            "[1]".into(),
        ];
        for line in &lines {
            let derived = serde_json::from_str::<Conversation>(line).map_err(|e| e.to_string());
            let read = serde_json::from_str::<TraceLine>(line)
                .map(TraceLine::into_conversation)
                .map_err(|e| e.to_string());
            assert_eq!(read, derived, "{line}");
        }
        let long = serde_json::from_str::<TraceLine>(&lines[2])
            .expect("valid")
            .into_conversation();
        assert_eq!((long.turns.len(), long.turns[34].user_tokens), (35, 34));
        assert_eq!(
            &*serde_json::from_str::<TraceLine>(&lines[0]).expect("valid").id,
            "a\"b\u{e9}"
        );
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

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(bytes).expect("compress");
        z.finish().expect("compress")
    }

    /// Region sizes from one line per region to the whole file in one.
    const REGION_SIZES: [usize; 6] = [1, 7, 100, 4096, REGION_BYTES, usize::MAX];

    /// `stored` read as a trace at every region size, each result (or error, its file name
    /// removed) checked equal to the one-region read; that result.
    fn read_in_regions(stored: &[u8]) -> Result<(Vec<Conversation>, Vec<usize>), String> {
        let f = write(stored);
        let read = |region_bytes| {
            read_trace_lines_in(f.path(), region_bytes)
                .map_err(|e| e.to_string().replace(&f.path().display().to_string(), "FILE"))
        };
        let whole = read(usize::MAX);
        for size in REGION_SIZES {
            assert_eq!(read(size), whole, "regions of {size} bytes");
        }
        whole
    }

    #[test]
    fn a_fed_trace_stops_at_its_first_bad_region_or_when_the_sink_refuses() {
        let line =
            |i: usize| format!("{{\"id\":\"c{i}\",\"turns\":[{{\"user_tokens\":{i},\"assistant_tokens\":3}}]}}\n");
        let mut text: String = (1..=300).map(line).collect();
        text.push_str("{\"id\":\"bad\"\n");
        text.extend((302..=400).map(line));
        for stored in [text.clone().into_bytes(), gzip(text.as_bytes())] {
            let f = write(&stored);
            // Regions of ≈ 1 KB: the bad line 301 is in a later region than line 1.
            let mut lines = Vec::new();
            let fed = feed_trace_in(f.path(), 1024, 1024, |region| {
                lines.extend(region.iter().map(|&(_, l)| l));
                true
            });
            assert!(!fed, "a bad line fails the feed");
            assert!(
                !lines.is_empty() && lines.len() < 300,
                "{} lines fed before it",
                lines.len()
            );
            assert_eq!(
                lines,
                (1..=lines.len()).collect::<Vec<_>>(),
                "in file order, from line 1"
            );
            let mut regions = 0;
            assert!(!feed_trace_in(f.path(), 1024, 1024, |_| {
                regions += 1;
                false
            }));
            assert_eq!(regions, 1, "a refused region stops the feed");
        }
        assert!(!feed_trace(Path::new("no/such/trace.jsonl"), |_| true));
    }

    #[test]
    fn a_fed_trace_hands_over_a_small_first_region_then_regions_doubling_to_the_limit() {
        // Lines of exactly 80 bytes (JSON padded with spaces): a region ends at the last newline
        // of its size, so a first region of 160 bytes holds 2 lines and the next ones 4, 8,
        // then 16 (1,280 bytes) each.
        let line = |i: usize| {
            let l = format!("{{\"id\":\"c{i:05}\",\"turns\":[{{\"user_tokens\":1,\"assistant_tokens\":1}}]}}");
            format!("{l:<79}\n")
        };
        let text: String = (0..200).map(line).collect();
        assert_eq!(text.len(), 200 * 80);
        for stored in [text.clone().into_bytes(), gzip(text.as_bytes())] {
            let f = write(&stored);
            let mut sizes = Vec::new();
            assert!(feed_trace_in(f.path(), 160, 1280, |region| {
                sizes.push(region.len());
                true
            }));
            let mut expected = vec![2, 4, 8];
            expected.extend([16; 11]);
            expected.push(10);
            assert_eq!(sizes, expected);
        }
    }

    #[test]
    fn a_long_trace_parsed_in_regions_keeps_its_order_and_reports_its_first_bad_line() {
        // 10,000 lines: many regions, taken by any thread in any order, plain and gzip (whose
        // regions are parsed while the rest inflates).
        let line =
            |i: usize| format!("{{\"id\":\"c{i}\",\"turns\":[{{\"user_tokens\":{i},\"assistant_tokens\":1}}]}}\n");
        let good: Vec<String> = (0..10_000).map(line).collect();
        let text = good.concat();
        for stored in [text.as_bytes().to_vec(), gzip(text.as_bytes())] {
            let (convs, lines) = read_in_regions(&stored).expect("valid");
            assert_eq!(convs.len(), 10_000);
            for (k, (c, &l)) in convs.iter().zip(&lines).enumerate() {
                assert_eq!(
                    (&*c.id, c.turns[0].user_tokens, l),
                    (format!("c{k}").as_str(), k as u32, k + 1)
                );
            }
        }
        // Bad lines 7,001 and 3,001 (in different regions): the earlier is named.
        let mut bad = good.clone();
        bad[7_000] = "{\"id\":\"x\",\"turns\":[]}\n".into();
        bad[3_000] = "{\"id\":\"y\"\n".into();
        for stored in [bad.concat().into_bytes(), gzip(bad.concat().as_bytes())] {
            let err = read_in_regions(&stored).expect_err("bad lines");
            assert!(
                err.contains(":3001: ") && err.contains("not a native trace line"),
                "{err}"
            );
        }
        bad[3_000] = good[3_000].clone();
        for stored in [bad.concat().into_bytes(), gzip(bad.concat().as_bytes())] {
            let err = read_in_regions(&stored).expect_err("bad line");
            assert!(err.contains(":7001: ") && err.contains("has no turns"), "{err}");
        }
    }

    #[test]
    fn an_over_long_line_is_named_before_an_earlier_bad_line_and_a_corrupt_stream_before_both() {
        // Line 2 is bad JSON, line 3 one byte over the limit: the length check covers the
        // whole file before any line is parsed.
        let mut text = b"{\"id\":\"a\",\"turns\":[{\"user_tokens\":3,\"assistant_tokens\":4}]}\n{\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', crate::input::MAX_LINE_BYTES + 1));
        text.push(b'\n');
        let compressed = gzip(&text);
        for stored in [&text, &compressed] {
            let err = read_in_regions(stored).expect_err("over-long line");
            assert!(
                err.contains(":3: ") && err.contains("longer than the 16 MiB limit"),
                "{err}"
            );
        }
        // Cut short, the stream is corrupt whatever its lines say.
        let err = read_in_regions(&compressed[..compressed.len() - 9]).expect_err("truncated");
        assert!(err.contains("corrupt gzip"), "{err}");
    }

    #[test]
    fn a_gzip_trailer_that_misstates_the_size_reads_as_inflating_whole_does() {
        // Two gzip members: the trailer's size is the second's, and only the first member is
        // read (what inflating whole reads), whether it is longer or shorter than the second.
        let line = |id: &str, u: u32| {
            format!("{{\"id\":\"{id}\",\"turns\":[{{\"user_tokens\":{u},\"assistant_tokens\":2}}]}}\n")
        };
        let long: String = (0..300).map(|i| line(&format!("l{i}"), i)).collect();
        let short = line("s", 1);
        for (first, second) in [(&long, &short), (&short, &long)] {
            let mut stored = gzip(first.as_bytes());
            stored.extend(gzip(second.as_bytes()));
            let expected = read_in_regions(first.as_bytes()).expect("valid");
            assert_eq!(read_in_regions(&stored).expect("valid"), expected);
            let whole =
                crate::input::gunzip(Path::new("t"), &stored, crate::input::OnTruncation::Error).expect("inflates");
            assert_eq!(whole, first.as_bytes(), "inflating whole reads the first member");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, failure_persistence: None, ..Default::default() })]
        /// Any mix of good, blank, CRLF-ended and bad lines, with or without a final newline,
        /// plain or gzip: every region size gives what one region gives.
        #[test]
        fn any_trace_reads_the_same_in_regions_of_any_size(
            kinds in proptest::collection::vec(0u8..6, 0..60),
            final_newline in proptest::bool::ANY,
            compressed in proptest::bool::ANY,
            region_bytes in 1usize..300,
            first_region_bytes in 1usize..300,
        ) {
            let mut text = String::new();
            for (i, k) in kinds.iter().enumerate() {
                let line = match k {
                    0 | 1 => format!("{{\"id\":\"c{i}\",\"turns\":[{{\"user_tokens\":{i},\"assistant_tokens\":3}}]}}"),
                    2 => format!("{{\"id\":\"c{i}\",\"turns\":[{{\"user_tokens\":1,\"assistant_tokens\":2}}],\"arrival_s\":{i}.5}}\r"),
                    3 => String::new(),
                    4 => "  ".into(),
                    _ => format!("{{\"id\":\"c{i}\""),
                };
                text.push_str(&line);
                if i + 1 < kinds.len() || final_newline {
                    text.push('\n');
                }
            }
            let stored = if compressed { gzip(text.as_bytes()) } else { text.into_bytes() };
            let f = write(&stored);
            let read = |size| read_trace_lines_in(f.path(), size).map_err(|e| e.to_string());
            let whole = read(usize::MAX);
            proptest::prop_assert_eq!(read(region_bytes), whole.clone());
            // Fed region by region (the first of any size, the next ones doubling up to
            // `region_bytes`): the same conversations and lines when the trace reads, and no
            // success when it does not.
            let (mut convs, mut lines) = (Vec::new(), Vec::new());
            let fed = feed_trace_in(f.path(), first_region_bytes, region_bytes, |region| {
                for (c, line) in region {
                    convs.push(c);
                    lines.push(line);
                }
                true
            });
            let fed = (fed && check_whole_trace(f.path(), &convs, &lines).is_ok()).then_some((convs, lines));
            proptest::prop_assert_eq!(fed, whole.ok());
        }
    }
}

//! Reading input files, shared by the calibration readers and the trace importers: gzip detected
//! from the magic bytes, and CSV tables whose rows carry the file line they start on.

use crate::error::{InputError, InputResult};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What a gzip stream that ends early means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTruncation {
    /// An error (a measurement file cut short is not a measurement file).
    Error,
    /// Keep what was decoded before the cut (a trace importer then reports what it lost).
    KeepPrefix,
}

/// Longest line (or CSV record) accepted in a text input \[bytes\]: 16 MiB. Longer lines are
/// refused with the file and line (a file of binary zeros, say, has one endless line).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Refuses anything but a regular file (a FIFO without writer would block forever, `/dev/zero`
/// would fill memory), naming the path.
///
/// # Errors
/// A missing path or one that is not a regular file.
pub fn check_regular(path: &Path) -> InputResult<()> {
    let meta = std::fs::metadata(path).map_err(|e| InputError::file(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(InputError::file(
            path,
            "not a regular file (a directory, FIFO or device); give a file",
        ));
    }
    Ok(())
}

/// The lines of `text` split at `\n`, exactly as `text.split(|&b| b == b'\n')` gives them (a
/// final newline yields a last empty line), found with `memchr` (a vectorised scan rather than
/// a byte-by-byte closure).
pub fn split_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
    let mut start = 0;
    std::iter::from_fn(move || {
        let end = ends.next()?;
        let line = &text[start..end];
        start = end + 1;
        Some(line)
    })
}

/// Refuses `text` when one of its lines is longer than [`MAX_LINE_BYTES`], naming the line.
///
/// # Errors
/// The first over-long line.
pub fn check_line_lengths(path: &Path, text: &[u8]) -> InputResult<()> {
    check_line_lengths_from(path, 1, text)
}

/// [`check_line_lengths`] for a part of a file whose first line is the file's line `first_line`
/// (1-based).
///
/// # Errors
/// The part's first over-long line, numbered in the file.
pub fn check_line_lengths_from(path: &Path, first_line: usize, text: &[u8]) -> InputResult<()> {
    for (i, line) in split_lines(text).enumerate() {
        if line.len() > MAX_LINE_BYTES {
            return Err(InputError::line(
                path,
                first_line + i,
                format!(
                    "line of {} bytes is longer than the {} MiB limit; is this a text file of the expected format?",
                    line.len(),
                    MAX_LINE_BYTES >> 20
                ),
            ));
        }
    }
    Ok(())
}

/// The input files `paths` name: a file as given, a directory searched recursively for the files
/// `keep` accepts (hidden names, `.…`, skipped), sorted by path within each directory given.
///
/// # Errors
/// A directory that cannot be listed, naming it.
pub fn expand_dirs(paths: &[PathBuf], keep: impl Fn(&Path) -> bool) -> InputResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if !p.is_dir() {
            files.push(p.clone());
            continue;
        }
        let mut stack = vec![p.clone()];
        let mut found = Vec::new();
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| InputError::file(&d, format!("cannot list: {e}")))?;
            for e in entries.flatten() {
                let q = e.path();
                if q.is_dir() {
                    stack.push(q);
                } else if !e.file_name().to_string_lossy().starts_with('.') && keep(&q) {
                    found.push(q);
                }
            }
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Reads `path` (gzip or plain, detected from the magic bytes) into memory.
///
/// # Errors
/// An [`InputError`] naming the file when it cannot be read or its gzip stream is corrupt (or
/// truncated, with [`OnTruncation::Error`]).
pub fn read_bytes(path: &Path, truncation: OnTruncation) -> InputResult<Vec<u8>> {
    let raw = read_raw(path)?;
    if !is_gzip(&raw) {
        return Ok(raw);
    }
    gunzip(path, &raw, truncation)
}

/// The bytes of the regular file `path`, as stored (not decompressed).
///
/// # Errors
/// A path that is not a regular file or cannot be read, naming it.
pub fn read_raw(path: &Path) -> InputResult<Vec<u8>> {
    check_regular(path)?;
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| InputError::file(path, format!("cannot read: {e}")))?;
    Ok(raw)
}

/// True when `raw` starts with gzip's magic bytes (RFC 1952).
pub fn is_gzip(raw: &[u8]) -> bool {
    raw.starts_with(&[0x1f, 0x8b])
}

/// The decompressed size the gzip stream `raw` declares: its trailer's ISIZE (the last member's
/// size mod 2³², RFC 1952), bounded by 64 × the stream's size and by 1 GiB so that a corrupt
/// or crafted trailer cannot reserve much. A size hint, not a promise \[bytes\].
pub fn gzip_size_hint(raw: &[u8]) -> usize {
    raw.last_chunk::<4>()
        .map_or(0, |b| u32::from_le_bytes(*b) as usize)
        .min(raw.len().saturating_mul(64))
        .min(1 << 30)
}

/// Decompresses the gzip stream `raw` read from `path`.
///
/// # Errors
/// A corrupt stream (or a truncated one, with [`OnTruncation::Error`]), naming the file.
pub fn gunzip(path: &Path, raw: &[u8], truncation: OnTruncation) -> InputResult<Vec<u8>> {
    // Sized from the trailer: no copies as the output grows.
    let mut out = Vec::with_capacity(gzip_size_hint(raw));
    match flate2::read::GzDecoder::new(raw).read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && truncation == OnTruncation::KeepPrefix => Ok(out),
        Err(e) => Err(gzip_error(path, &e)),
    }
}

/// The error for a gzip stream of `path` that failed to decode with `e`.
pub fn gzip_error(path: &Path, e: &std::io::Error) -> InputError {
    InputError::file(path, format!("corrupt gzip: {e}"))
}

/// Reads `path` (gzip or plain) as UTF-8 text; a truncated gzip stream is an error.
///
/// # Errors
/// Unreadable, corrupt or truncated gzip, not UTF-8.
pub fn read_text(path: &Path) -> InputResult<String> {
    let bytes = read_bytes(path, OnTruncation::Error)?;
    check_line_lengths(path, &bytes)?;
    String::from_utf8(bytes).map_err(|_| InputError::file(path, "not UTF-8 text"))
}

/// A CSV record with the 1-based file line it starts on.
pub type CsvRow = (usize, csv::StringRecord);

/// Parses CSV text (fields trimmed) into its header and records, mapping errors to the file and
/// line. Line numbers are the file's, CRLF line ends and skipped blank lines included.
///
/// # Errors
/// A malformed header or record, naming its line.
pub fn csv_rows(path: &Path, text: &str) -> InputResult<(Vec<String>, Vec<CsvRow>)> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| InputError::line(path, 1, format!("bad CSV header: {e}")))?
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut lines = LineCounter::new(text.as_bytes());
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| lines.line_at(p.byte()));
            InputError::line(path, line, format!("bad CSV row: {e}"))
        })?;
        let line = rec.position().map_or(0, |p| lines.line_at(p.byte()));
        rows.push((line, rec));
    }
    Ok((header, rows))
}

/// Reads a CSV file (plain or gzip) whose header names the fields of `T`, one `T` per record.
///
/// # Errors
/// Unreadable files and records that do not deserialize, naming the file and line.
pub fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> InputResult<Vec<T>> {
    let text = read_text(path)?;
    let (header, rows) = csv_rows(path, &text)?;
    let header = csv::StringRecord::from(header);
    rows.iter()
        .map(|(line, rec)| {
            rec.deserialize(Some(&header))
                .map_err(|e| InputError::line(path, *line, e.to_string()))
        })
        .collect()
}

/// Reads a TOML file into `T`; `what` names it in errors (`sweep`, `resolved routing map`).
///
/// # Errors
/// Unreadable files and TOML that does not deserialize into `T`.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> InputResult<T> {
    read_toml_with(path, what, &[])
}

/// Reads a TOML file with command-line overrides applied (`KEY=VALUE`, see [`apply_overrides`]),
/// then deserialises it exactly as the file alone would be (same checks, same messages).
///
/// # Errors
/// As [`read_toml`], and an override naming no table, indexing outside an array or without `=`.
pub fn read_toml_with<T: serde::de::DeserializeOwned>(path: &Path, what: &str, overrides: &[String]) -> InputResult<T> {
    let original = read_file_text(path, what)?;
    parse_toml(
        path,
        what,
        &original,
        &apply_overrides(path, &original, overrides)?,
        overrides,
    )
}

/// The text of the file `path` (a `what` in messages).
///
/// # Errors
/// Not a regular file, unreadable, not UTF-8.
pub fn read_file_text(path: &Path, what: &str) -> InputResult<String> {
    check_regular(path)?;
    std::fs::read_to_string(path).map_err(|e| InputError::file(path, format!("cannot read {what}: {e}")))
}

/// Deserialises `text`: the TOML `original` read from `path` with `overrides` applied by
/// [`apply_overrides`] (`original` and `overrides` are used in messages only).
///
/// # Errors
/// TOML that does not deserialize into `T`, naming the file (and the overrides). When
/// `original` deserializes and an override alone makes it fail, the error names that `--set`
/// and gives the deserializer's message without a location: a line of the document rewritten
/// with the overrides would point at no line of the user's file.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    original: &str,
    text: &str,
    overrides: &[String],
) -> InputResult<T> {
    toml::from_str(text).map_err(|e| {
        if let Some(blamed) = blame_override::<T>(path, what, original, overrides) {
            return blamed;
        }
        let via = if overrides.is_empty() {
            String::new()
        } else {
            format!(" (with --set {})", overrides.join(" --set "))
        };
        InputError::file(path, format!("invalid {what}{via}: {}", e.to_string().trim_end()))
    })
}

/// The first of `overrides` that alone makes `original` (which deserializes as `T`) fail to,
/// as an error naming that `--set` with the deserializer's message; `None` when `original`
/// itself fails or no single override does.
pub fn blame_override<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    original: &str,
    overrides: &[String],
) -> Option<InputError> {
    if overrides.is_empty() || toml::from_str::<T>(original).is_err() {
        return None;
    }
    overrides.iter().find_map(|o| {
        let one = apply_overrides(path, original, std::slice::from_ref(o)).ok()?;
        let e = toml::from_str::<T>(&one).err()?;
        Some(InputError::file(
            path,
            format!(
                "invalid {what} with --set {o}: {} (valid without it)",
                e.message().trim_end()
            ),
        ))
    })
}

/// `text` (TOML) with each `KEY=VALUE` of `overrides` set: `KEY` is dotted (`workload.arrival.rate_per_s`,
/// `router.1.max_local_append_tokens` for the second `[[router]]`), missing tables are created,
/// `VALUE` is a TOML value (`4.0`, `[1, 2]`, `{ kind = "burst" }`, `"text"`) or else a string.
///
/// # Errors
/// An override without `=`, or whose path crosses a value that is not a table or array, or
/// indexes outside an array.
pub fn apply_overrides(path: &Path, text: &str, overrides: &[String]) -> InputResult<String> {
    if overrides.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: toml::Value = toml::from_str(text)
        .map_err(|e| InputError::file(path, format!("invalid TOML: {}", e.to_string().trim_end())))?;
    for o in overrides {
        let bad = |m: &str| InputError::option(&format!("--set {o}"), m);
        let (key, raw) = o
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE (e.g. workload.arrival.rate_per_s=8)"))?;
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        let parts: Vec<&str> = key.trim().split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty key component"));
        }
        let mut at = &mut doc;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            at = match at {
                toml::Value::Table(t) => {
                    if last {
                        t.insert(part.to_string(), value.clone());
                        break;
                    }
                    t.entry(part.to_string())
                        .or_insert_with(|| toml::Value::Table(Default::default()))
                }
                toml::Value::Array(a) => {
                    let k: usize = part.parse().map_err(|_| {
                        bad(&format!(
                            "`{part}` indexes an array: give a number from 0 to {}",
                            a.len().saturating_sub(1)
                        ))
                    })?;
                    let n = a.len();
                    let slot = a
                        .get_mut(k)
                        .ok_or_else(|| bad(&format!("index {k} is outside the array of {n}")))?;
                    if last {
                        *slot = value.clone();
                        break;
                    }
                    slot
                }
                _ => return Err(bad(&format!("`{}` is a value, not a table", parts[..i].join(".")))),
            };
        }
    }
    Ok(toml::to_string(&doc).expect("a TOML value serialises"))
}

/// File lines of byte offsets given in increasing order (linear in the file, not quadratic).
struct LineCounter<'a> {
    bytes: &'a [u8],
    /// Offset counted up to, and the line there.
    at: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineCounter { bytes, at: 0, line: 1 }
    }

    /// The line of the record starting at `byte`. The csv crate can place a record's start on
    /// the line end before it (after `\r\n`, or on skipped blank lines), so line ends are
    /// skipped first.
    fn line_at(&mut self, byte: u64) -> usize {
        let mut at = (byte as usize).min(self.bytes.len());
        while at < self.bytes.len() && matches!(self.bytes[at], b'\r' | b'\n') {
            at += 1;
        }
        if at < self.at {
            (self.at, self.line) = (0, 1);
        }
        self.line += self.bytes[self.at..at].iter().filter(|&&b| b == b'\n').count();
        self.at = at;
        self.line
    }
}

/// Index of column `name` in `header`, if any.
pub fn find_col(header: &[String], name: &str) -> Option<usize> {
    header.iter().position(|h| h == name)
}

/// Index of column `name`.
///
/// # Errors
/// The column is missing.
pub fn col_index(path: &Path, header: &[String], name: &str) -> InputResult<usize> {
    find_col(header, name).ok_or_else(|| InputError::file(path, format!("missing column `{name}`")))
}

/// Column `name` of a CSV row as text.
///
/// # Errors
/// The column is missing from the header or the row.
pub fn col_str<'a>(path: &Path, header: &[String], row: &'a CsvRow, name: &str) -> InputResult<&'a str> {
    let idx = col_index(path, header, name)?;
    row.1
        .get(idx)
        .ok_or_else(|| InputError::line(path, row.0, format!("missing column `{name}`")))
}

/// Column `name` of a CSV row as f64 (a measurement table's unit: counts in tokens or
/// sequences, sizes in bytes, times in the column's own unit, e.g. `latency_ms`).
///
/// Every numeric column of a measurement table is a count, a size or a duration: it must be finite
/// and ≥ 0, and a latency or time (a column named `*latency*` or `*time*`) must be > 0.
///
/// # Errors
/// The column is missing, not a number, or outside that domain (naming the file line).
pub fn col_f64(path: &Path, header: &[String], row: &CsvRow, name: &str) -> InputResult<f64> {
    let v = col_str(path, header, row, name)?
        .parse::<f64>()
        .map_err(|_| InputError::line(path, row.0, format!("column `{name}` is not a number")))?;
    let timing = name.contains("latency") || name.contains("time");
    if !v.is_finite() || v < 0.0 || (timing && v <= 0.0) {
        return Err(InputError::line(
            path,
            row.0,
            format!(
                "column `{name}` = {v} is not a {}: fix or remove the row",
                if timing {
                    "measured time > 0"
                } else {
                    "finite count or size >= 0"
                }
            ),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_is_split_at_newlines() {
        for text in [&b""[..], b"\n", b"a", b"a\n", b"\n\nab\r\n\ncd", b"x\ny\n\n"] {
            let want: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            assert_eq!(split_lines(text).collect::<Vec<_>>(), want, "{text:?}");
        }
        assert_eq!(split_lines(b"ab\ncd\n").collect::<Vec<_>>(), [&b"ab"[..], b"cd", b""]);
    }

    #[test]
    fn csv_rows_carry_file_lines_with_crlf_and_blank_lines() {
        let p = Path::new("t.csv");
        for (text, want) in [
            ("a,b\r\n1,2\r\n3,4", vec![2, 3]),
            ("a,b\n1,2\n\n3,4\n", vec![2, 4]),
            ("a,b\n\n\n1,2\n3,4", vec![4, 5]),
        ] {
            let (h, rows) = csv_rows(p, text).unwrap();
            assert_eq!(h, ["a", "b"]);
            assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), want, "{text:?}");
        }
        let e = col_f64(p, &["a".into()], &(7, csv::StringRecord::from(vec!["x"])), "a").unwrap_err();
        assert_eq!(e.to_string(), "t.csv:7: column `a` is not a number");
    }

    #[test]
    fn truncated_gzip_is_an_error_or_its_prefix() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).unwrap();
        let full = gz.finish().unwrap();
        let p = dir.path().join("cut.gz");
        std::fs::write(&p, &full[..full.len() / 2]).unwrap();
        assert!(read_bytes(&p, OnTruncation::Error)
            .unwrap_err()
            .to_string()
            .contains("corrupt gzip"));
        let prefix = read_bytes(&p, OnTruncation::KeepPrefix).unwrap();
        assert!(!prefix.is_empty() && prefix.len() < body.len() && body.starts_with(&prefix));
        let whole = dir.path().join("whole.gz");
        std::fs::write(&whole, &full).unwrap();
        assert_eq!(read_bytes(&whole, OnTruncation::Error).unwrap(), body);
    }
}

//! Writing results: CSV and JSON from serde row structs, into an [`OutputDir`] (all-or-nothing,
//! never over a file ppdsim did not write; see [`crate::outdir`]). Outputs hold no timestamps
//! and no absolute paths (golden files stay stable).

use crate::metrics::{percentile_label, LatencyStats, Summary};
use crate::outdir::OutputDir;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Serialises rows as CSV (header from the struct's field names).
///
/// A value that does not exist (a statistic over no request, a prediction that could not be made:
/// `NaN`) is written as an empty field, never as `NaN`.
///
/// # Errors
/// Serialisation errors.
pub fn to_csv<T: Serialize>(rows: &[T]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    let bytes = w.into_inner().context("flushing CSV")?;
    Ok(blank_nan_fields(&bytes))
}

/// `csv` (as `csv::Writer` writes it) with every field that is exactly `NaN` emptied; fields are
/// parsed, so a quoted text holding commas or newlines is left whole.
pub fn blank_nan_fields(csv: &[u8]) -> Vec<u8> {
    // No `NaN` anywhere (the usual case): nothing to parse.
    if !csv.windows(3).any(|w| w == b"NaN") {
        return csv.to_vec();
    }
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv);
    let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
    let mut rec = csv::ByteRecord::new();
    while r
        .read_byte_record(&mut rec)
        .expect("CSV written by csv::Writer reads back")
    {
        let out: csv::ByteRecord = rec.iter().map(|f| if f == b"NaN" { &b""[..] } else { f }).collect();
        w.write_byte_record(&out).expect("writing to memory cannot fail");
    }
    w.into_inner().expect("flushing to memory cannot fail")
}

/// A value of a `summary.csv` column: a count (written as an integer) or a measure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell {
    /// A count (requests, bytes, switches).
    Int(u64),
    /// A measure in the column's unit (NaN: does not exist, written as an empty field).
    Num(f64),
}

impl Cell {
    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Cell::Int(v) => v as f64,
            Cell::Num(v) => v,
        }
    }
}

impl Serialize for Cell {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Cell::Int(v) => s.serialize_u64(*v),
            Cell::Num(v) => s.serialize_f64(*v),
        }
    }
}

/// The integer (count) columns of `summary.csv`; every other column but `policy` is a float.
const INT_COLUMNS: [&str; 4] = ["num_requests", "num_failed", "kv_bytes_moved", "mode_switches"];

/// A flat row of `summary.csv` (one per policy): `policy`, then named columns in a fixed order —
/// `num_requests`, `num_failed`, `ttft_turn1_pXX_ms`…, `ttft_turn2plus_pXX_ms`…, `ttft_mean_ms`,
/// `tpot_pXX_ms`…, `e2e_pXX_ms`…, `throughput_rps`, `output_tokens_per_s`, `slo_attainment`,
/// `goodput_rps`, `kv_bytes_moved` \[B\], `local_cache_hit_rate`, `transferred_rate`,
/// `local_route_fraction_turn2plus`, `mode_switches`, `makespan_s` — with one `pXX` column per
/// reported percentile (the scenario's `percentiles`; see [`crate::metrics::percentile_label`]).
/// Serialises as a CSV record (no header: see [`SummaryRow::header`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SummaryRow {
    /// Policy.
    pub policy: String,
    /// (column name, value), in column order.
    pub columns: Vec<(String, Cell)>,
}

impl SummaryRow {
    /// The value of column `name` as a float (`None`: no such column).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c.as_f64())
    }

    /// A row of `policy` at `percentiles` with every column 0 (tests build rows from it).
    #[cfg(test)]
    pub fn zeros(policy: &str, percentiles: &[f64]) -> SummaryRow {
        let columns = SummaryRow::column_names(percentiles)
            .into_iter()
            .map(|n| {
                let cell = if INT_COLUMNS.contains(&n.as_str()) {
                    Cell::Int(0)
                } else {
                    Cell::Num(0.0)
                };
                (n, cell)
            })
            .collect();
        SummaryRow {
            policy: policy.to_string(),
            columns,
        }
    }

    /// `self` with column `name` set to `v` (a count column takes `v` rounded).
    ///
    /// # Panics
    /// When there is no column `name` (a caller's bug).
    #[cfg(test)]
    pub fn with(mut self, name: &str, v: f64) -> SummaryRow {
        let (_, cell) = self
            .columns
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no summary column `{name}`"));
        *cell = match cell {
            Cell::Int(_) => Cell::Int(v.round() as u64),
            Cell::Num(_) => Cell::Num(v),
        };
        self
    }

    /// The CSV header: `policy`, then the column names.
    pub fn header(&self) -> Vec<String> {
        std::iter::once("policy".to_string())
            .chain(self.columns.iter().map(|(n, _)| n.clone()))
            .collect()
    }

    /// The numeric column names (all but `policy`) of a summary at `percentiles` (p50 and p99
    /// are always added; see [`crate::metrics::reported_percentiles`]).
    pub fn column_names(percentiles: &[f64]) -> Vec<String> {
        let slo = crate::metrics::Slo {
            ttft_ms: 1.0,
            tpot_ms: 1.0,
        };
        let empty = Summary::from_records("", 0, &[], &slo, vec![], 0, percentiles);
        SummaryRow::from(&empty).columns.into_iter().map(|(n, _)| n).collect()
    }

    /// A row read back from CSV: `header` is `policy` + column names, `fields` the values (an
    /// empty field is NaN, a value that does not exist).
    ///
    /// # Errors
    /// A field that is not a number (a count column: not a non-negative integer), naming it.
    pub fn parse(header: &[String], fields: &[&str]) -> std::result::Result<SummaryRow, String> {
        assert_eq!(header.len(), fields.len(), "CSV records have the header's length");
        let mut row = SummaryRow {
            policy: fields.first().map_or(String::new(), |p| p.to_string()),
            columns: Vec::with_capacity(header.len().saturating_sub(1)),
        };
        for (name, f) in header.iter().zip(fields).skip(1) {
            let cell = if INT_COLUMNS.contains(&name.as_str()) {
                Cell::Int(f.parse().map_err(|e| format!("{name} `{f}`: {e}"))?)
            } else if f.is_empty() {
                Cell::Num(f64::NAN)
            } else {
                Cell::Num(f.parse().map_err(|e| format!("{name} `{f}`: {e}"))?)
            };
            row.columns.push((name.clone(), cell));
        }
        Ok(row)
    }
}

impl Serialize for SummaryRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(1 + self.columns.len()))?;
        seq.serialize_element(&self.policy)?;
        for (_, c) in &self.columns {
            seq.serialize_element(c)?;
        }
        seq.end()
    }
}

impl From<&Summary> for SummaryRow {
    fn from(s: &Summary) -> Self {
        let mut columns: Vec<(String, Cell)> = vec![
            ("num_requests".into(), Cell::Int(s.num_requests as u64)),
            ("num_failed".into(), Cell::Int(s.num_failed as u64)),
        ];
        let mut stats = |prefix: &str, l: &LatencyStats| {
            for &(p, v) in &l.percentiles_ms {
                columns.push((format!("{prefix}_{}_ms", percentile_label(p)), Cell::Num(v)));
            }
        };
        stats("ttft_turn1", &s.ttft_turn1);
        stats("ttft_turn2plus", &s.ttft_turn2plus);
        columns.push(("ttft_mean_ms".into(), Cell::Num(s.ttft_all.mean_ms)));
        let mut stats = |prefix: &str, l: &LatencyStats| {
            for &(p, v) in &l.percentiles_ms {
                columns.push((format!("{prefix}_{}_ms", percentile_label(p)), Cell::Num(v)));
            }
        };
        stats("tpot", &s.tpot_all);
        stats("e2e", &s.e2e_all);
        for (name, cell) in [
            ("throughput_rps", Cell::Num(s.throughput_rps)),
            ("output_tokens_per_s", Cell::Num(s.output_tokens_per_s)),
            ("slo_attainment", Cell::Num(s.slo_attainment)),
            ("goodput_rps", Cell::Num(s.goodput_rps)),
            ("kv_bytes_moved", Cell::Int(s.kv_bytes_moved)),
            ("local_cache_hit_rate", Cell::Num(s.local_cache_hit_rate)),
            ("transferred_rate", Cell::Num(s.transferred_rate)),
            (
                "local_route_fraction_turn2plus",
                Cell::Num(s.local_route_fraction_turn2plus),
            ),
            ("mode_switches", Cell::Int(s.mode_switches)),
            ("makespan_s", Cell::Num(s.makespan_s)),
        ] {
            columns.push((name.into(), cell));
        }
        SummaryRow {
            policy: s.policy.clone(),
            columns,
        }
    }
}

/// `summary.csv`: the header of the rows (all alike) and a line per row.
///
/// # Errors
/// Serialisation errors.
pub fn summary_csv(rows: &[SummaryRow]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    if let Some(first) = rows.first() {
        w.write_record(first.header())?;
    }
    for r in rows {
        debug_assert_eq!(r.header(), rows[0].header(), "summary rows share their columns");
        w.serialize(r)?;
    }
    let bytes = w.into_inner().context("flushing CSV")?;
    Ok(blank_nan_fields(&bytes))
}

/// Reads a `summary.csv` written by [`summary_csv`] back into rows.
///
/// # Errors
/// Unreadable files, a header without `policy` first, or a field that does not parse (naming
/// its line).
pub fn read_summary_csv(path: &std::path::Path) -> crate::error::InputResult<Vec<SummaryRow>> {
    use crate::error::InputError;
    let text = crate::input::read_text(path)?;
    let (header, records) = crate::input::csv_rows(path, &text)?;
    if header.first().map(String::as_str) != Some("policy") {
        return Err(InputError::file(
            path,
            "is not a summary.csv (its first column is not `policy`); give a file `ppdsim run` wrote",
        ));
    }
    records
        .iter()
        .map(|(line, rec)| {
            let fields: Vec<&str> = rec.iter().collect();
            SummaryRow::parse(&header, &fields).map_err(|m| InputError::line(path, *line, m))
        })
        .collect()
}

/// `timeline.csv`: `policy,time_s,instance,waiting,running,kv_usage,busy_fraction`, one line
/// per instance and grid point (see [`crate::sim::TimelineSample`]): [`timeline_csv_header`],
/// then each row as [`push_timeline_rows`] formats it.
pub fn timeline_csv(timelines: &[crate::sim::PolicyTimeline]) -> Vec<u8> {
    let mut out = timeline_csv_header();
    for t in timelines {
        push_timeline_rows(&mut out, &t.policy, &t.samples);
    }
    out
}

/// The header line of `timeline.csv` (newline included).
pub fn timeline_csv_header() -> Vec<u8> {
    let mut out = TIMELINE_HEADER.join(",").into_bytes();
    out.push(b'\n');
    out
}

/// Appends to `out` the `timeline.csv` lines of `samples`, all of policy `policy`.
///
/// Formatted directly (text fields quoted as the `csv` crate quotes them, numbers by `itoa` and
/// `metrics::shortest_decimal` as its serializer prints them): the same bytes as
/// serializing each row with `csv`, for ≈ 1,000 instructions a row (Vidur's 2,379 rows: 2.39 M
/// by callgrind; 5.33 M with `ryu` for the three floats).
pub fn push_timeline_rows(out: &mut Vec<u8>, policy: &str, samples: &[crate::sim::TimelineSample]) {
    use crate::metrics::{push_text, shortest_decimal};
    out.reserve(samples.len() * TIMELINE_ROW_BYTES);
    let (mut ints, mut floats) = (itoa::Buffer::new(), crate::metrics::ShortestBuffers::default());
    for s in samples {
        push_text(out, policy);
        out.push(b',');
        out.extend_from_slice(shortest_decimal(&mut floats, s.time_s));
        out.push(b',');
        push_text(out, &s.instance);
        out.push(b',');
        out.extend_from_slice(ints.format(s.waiting).as_bytes());
        out.push(b',');
        out.extend_from_slice(ints.format(s.running).as_bytes());
        out.push(b',');
        out.extend_from_slice(shortest_decimal(&mut floats, s.kv_usage));
        out.push(b',');
        out.extend_from_slice(shortest_decimal(&mut floats, s.busy_fraction));
        out.push(b'\n');
    }
}

/// Bytes reserved per `timeline.csv` line (a capacity hint set above the shipped scenarios'
/// average line, 42–54 bytes, so the buffer is not regrown) \[bytes\].
const TIMELINE_ROW_BYTES: usize = 64;

const TIMELINE_HEADER: [&str; 7] = [
    "policy",
    "time_s",
    "instance",
    "waiting",
    "running",
    "kv_usage",
    "busy_fraction",
];

/// Reads a `timeline.csv` written by [`timeline_csv`]: its runs, one per stretch of rows of a
/// policy.
///
/// # Errors
/// Unreadable files, another header, or a row that does not parse (naming its line).
pub fn read_timeline_csv(path: &std::path::Path) -> crate::error::InputResult<Vec<crate::sim::PolicyTimeline>> {
    use crate::error::InputError;
    let text = crate::input::read_text(path)?;
    let (header, records) = crate::input::csv_rows(path, &text)?;
    if header != TIMELINE_HEADER {
        return Err(InputError::file(
            path,
            format!(
                "is not a timeline.csv (expected the header {}); re-run the scenario",
                TIMELINE_HEADER.join(",")
            ),
        ));
    }
    let inner = csv::StringRecord::from(TIMELINE_HEADER[1..].to_vec());
    let mut timelines: Vec<crate::sim::PolicyTimeline> = Vec::new();
    for (line, rec) in &records {
        let rest: csv::StringRecord = rec.iter().skip(1).collect();
        let s: crate::sim::TimelineSample = rest
            .deserialize(Some(&inner))
            .map_err(|e| InputError::line(path, *line, e.to_string()))?;
        match timelines.last_mut() {
            Some(t) if t.policy == rec[0] => t.samples.push(s),
            _ => timelines.push(crate::sim::PolicyTimeline {
                policy: rec[0].to_string(),
                samples: vec![s],
            }),
        }
    }
    Ok(timelines)
}

/// `v` with `prec` decimals for a text table, or `–` when it does not exist (NaN, ±∞): printed
/// tables, like the CSV files, never show `NaN`.
pub fn fmt_number(v: f64, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:.prec$}")
    } else {
        "–".to_string()
    }
}

/// `name` with every character but ASCII letters, digits, `-` and `_` replaced by `_` (a file
/// stem from a policy name).
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Width of a text table's policy column: the longest name, at least 12 characters.
pub fn policy_column_width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names.into_iter().map(|n| n.chars().count()).max().unwrap_or(0).max(12)
}

/// Human-readable table of summaries (what `ppdsim run` prints).
pub fn summary_table(summaries: &[Summary]) -> String {
    use std::fmt::Write;
    let w = policy_column_width(summaries.iter().map(|m| m.policy.as_str()));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<w$} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10} {:>7} {:>10} {:>7} {:>6}",
        "policy",
        "reqs",
        "failed",
        "T1 p50",
        "T1 p99",
        "T2+ p50",
        "T2+ p99",
        "TPOT p50",
        "TPOT p99",
        "E2E p50",
        "req/s",
        "KV moved",
        "cache",
        "SLO"
    );
    let _ = writeln!(
        s,
        "{:<w$} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10} {:>7} {:>10} {:>7} {:>6}",
        "", "", "", "TTFT ms", "TTFT ms", "TTFT ms", "TTFT ms", "ms", "ms", "ms", "", "GB", "hit", "att."
    );
    // A statistic over no request (e.g. turns ≥ 2 of a single-turn trace) prints as `–`.
    let ms = |l: &crate::metrics::LatencyStats, v: f64, prec: usize| {
        if l.count == 0 {
            "–".to_string()
        } else {
            format!("{v:.prec$}")
        }
    };
    for m in summaries {
        let _ = writeln!(
            s,
            "{:<w$} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10.1} {:>7.3} {:>10.2} {:>6.1}% {:>5.1}%",
            m.policy,
            m.num_requests,
            m.num_failed,
            ms(&m.ttft_turn1, m.ttft_turn1.p50_ms(), 1),
            ms(&m.ttft_turn1, m.ttft_turn1.p99_ms(), 1),
            ms(&m.ttft_turn2plus, m.ttft_turn2plus.p50_ms(), 1),
            ms(&m.ttft_turn2plus, m.ttft_turn2plus.p99_ms(), 1),
            ms(&m.tpot_all, m.tpot_all.p50_ms(), 2),
            ms(&m.tpot_all, m.tpot_all.p99_ms(), 2),
            m.e2e_all.p50_ms(),
            m.throughput_rps,
            m.kv_bytes_moved as f64 / 1e9,
            100.0 * m.local_cache_hit_rate,
            100.0 * m.slo_attainment
        );
    }
    s
}

/// One warning line per policy some of whose requests the engine refused (`max_model_len`).
pub fn rejection_warnings(summaries: &[Summary], max_model_len: Option<u32>) -> String {
    let mut s = String::new();
    for m in summaries.iter().filter(|m| m.num_rejected > 0) {
        s.push_str(&format!(
            "warning: {}: {} requests refused by engine.max_model_len = {} (prompt + output longer); each ended its conversation\n",
            m.policy,
            m.num_rejected,
            max_model_len.map_or("?".into(), |v| v.to_string())
        ));
    }
    s
}

/// What a run was: written at the top of `summary.json` (no timestamps, no absolute paths).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// ppdsim's version.
    pub ppdsim_version: String,
    /// Scenario name.
    pub scenario: String,
    /// Seed of every random stream.
    pub seed: u64,
    /// Model and GPU.
    pub model: String,
    /// GPU.
    pub gpu: String,
    /// Calibration file (name only).
    pub calibration: String,
    /// Set when the calibration was not fitted to measurements of its GPU (a roofline estimate):
    /// what it was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_uncalibrated: Option<String>,
    /// Trace file (name only), or `synthetic`.
    pub trace: String,
    /// Conversations replayed.
    pub num_conversations: usize,
}

/// Writes `summary.csv` and `summary.json` into `dir` (`requests.csv` is the caller's); returns
/// the summary rows.
///
/// # Errors
/// I/O and serialization errors.
pub fn write_summaries(dir: &OutputDir, run: &RunInfo, summaries: &[Summary]) -> Result<Vec<SummaryRow>> {
    let rows: Vec<SummaryRow> = summaries.iter().map(SummaryRow::from).collect();
    dir.write("summary.csv", &summary_csv(&rows)?)?;
    #[derive(Serialize)]
    struct SummaryFile<'a> {
        run: &'a RunInfo,
        policies: &'a [Summary],
    }
    let mut json = serde_json::to_vec_pretty(&SummaryFile {
        run,
        policies: summaries,
    })?;
    json.push(b'\n');
    dir.write("summary.json", &json)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_fields_are_emptied_and_quoted_text_is_left_whole() {
        // A line-wise split on commas would empty the `NaN` inside the quoted name.
        let csv = b"policy,p50_ms\n\"x,NaN,y\",NaN\nb,1.5\nNaN,NaN\n";
        assert_eq!(
            String::from_utf8(blank_nan_fields(csv)).unwrap(),
            "policy,p50_ms\n\"x,NaN,y\",\nb,1.5\n,\n"
        );
        // Without any `NaN` the text comes back as it is (quoting included).
        let plain = b"policy,p50_ms\n\"x,y\",1.5\n";
        assert_eq!(blank_nan_fields(plain), plain);
    }

    #[test]
    fn timeline_rows_are_the_bytes_the_csv_serializer_writes() {
        use crate::sim::{PolicyTimeline, TimelineSample};
        let sample = |time_s: f64, instance: &str, kv_usage: f64, busy_fraction: f64| TimelineSample {
            time_s,
            instance: instance.into(),
            waiting: 7,
            running: 4_000_000_000,
            kv_usage,
            busy_fraction,
        };
        let rows = vec![
            ("pd".to_string(), sample(2.0, "R0", 0.159390724874201, 1.0)),
            ("a,b".into(), sample(0.25, "D\"1\"", 1e-7, 0.0)),
            ("line\nbreak".into(), sample(1e21, "P0", f64::NAN, f64::INFINITY)),
            ("".into(), sample(-0.0, "cr\r", -1.5e300, 123456.789)),
        ];
        // The oracle: each row serialized by the csv crate, as timeline.csv once was written.
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        w.write_record(TIMELINE_HEADER).unwrap();
        for (policy, s) in &rows {
            w.serialize((policy, s)).unwrap();
        }
        let expected = w.into_inner().unwrap();
        // Each row a run's timeline of one sample.
        let timelines: Vec<PolicyTimeline> = rows
            .iter()
            .map(|(policy, s)| PolicyTimeline {
                policy: policy.clone(),
                samples: vec![s.clone()],
            })
            .collect();
        assert_eq!(
            String::from_utf8(timeline_csv(&timelines)).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        // And what that is, by hand, for the first two rows.
        let text = String::from_utf8(timeline_csv(&timelines[..2])).unwrap();
        assert_eq!(
            text,
            "policy,time_s,instance,waiting,running,kv_usage,busy_fraction\n\
             pd,2.0,R0,7,4000000000,0.159390724874201,1.0\n\
             \"a,b\",0.25,\"D\"\"1\"\"\",7,4000000000,1e-7,0.0\n"
        );
    }

    #[test]
    fn a_timeline_csv_reads_back_into_its_runs_timelines_with_interned_instances() {
        use crate::sim::{PolicyTimeline, TimelineSample};
        let sample = |time_s: f64, instance: &str, running: u32| TimelineSample {
            time_s,
            instance: instance.into(),
            waiting: 0,
            running,
            kv_usage: 0.5,
            busy_fraction: 0.25,
        };
        // Two runs of two instances, the first at two grid points and the second at one; the
        // second run's policy name needs quoting.
        let timelines = vec![
            PolicyTimeline {
                policy: "1P_1D".into(),
                samples: vec![
                    sample(1.0, "P0", 1),
                    sample(1.0, "D0", 2),
                    sample(2.0, "P0", 3),
                    sample(2.0, "D0", 4),
                ],
            },
            PolicyTimeline {
                policy: "ppd,t=64".into(),
                samples: vec![sample(1.0, "P0", 5), sample(1.0, "D0", 6)],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeline.csv");
        std::fs::write(&path, timeline_csv(&timelines)).unwrap();
        let back = read_timeline_csv(&path).unwrap();
        assert_eq!(back, timelines);
        // The instance names read back are the process's interned copies.
        assert!(std::ptr::eq(
            back[1].samples[1].instance.as_ref(),
            crate::metrics::Name::from("D0").as_ref()
        ));
    }
}

//! Writing results: CSV and JSON from serde row structs, into an [`OutputDir`] (all-or-nothing,
//! never over a file ppdsim did not write; see [`crate::outdir`]). Outputs hold no timestamps
//! and no absolute paths (golden files stay stable).

use crate::metrics::{RequestRecord, Summary};
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

/// A flat row of `summary.csv` (one per policy).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// Policy.
    pub policy: String,
    /// Requests that succeeded.
    pub num_requests: usize,
    /// Requests that failed (timeout, refused).
    pub num_failed: usize,
    /// TTFT p50, turn 1 \[ms\].
    pub ttft_turn1_p50_ms: f64,
    /// TTFT p99, turn 1 \[ms\].
    pub ttft_turn1_p99_ms: f64,
    /// TTFT p50, turns ≥ 2 \[ms\].
    pub ttft_turn2plus_p50_ms: f64,
    /// TTFT p99, turns ≥ 2 \[ms\].
    pub ttft_turn2plus_p99_ms: f64,
    /// TTFT mean, all \[ms\].
    pub ttft_mean_ms: f64,
    /// TPOT p50 \[ms\].
    pub tpot_p50_ms: f64,
    /// TPOT p99 \[ms\].
    pub tpot_p99_ms: f64,
    /// E2E p50 \[ms\].
    pub e2e_p50_ms: f64,
    /// E2E p99 \[ms\].
    pub e2e_p99_ms: f64,
    /// Throughput [req/s].
    pub throughput_rps: f64,
    /// Output tokens per second [tokens/s].
    pub output_tokens_per_s: f64,
    /// SLO attainment (0–1).
    pub slo_attainment: f64,
    /// Goodput [req/s].
    pub goodput_rps: f64,
    /// KV bytes moved \[B\].
    pub kv_bytes_moved: u64,
    /// Local prefix-cache hit rate (0–1).
    pub local_cache_hit_rate: f64,
    /// Transferred rate (0–1).
    pub transferred_rate: f64,
    /// Turns ≥ 2 served locally (0–1).
    pub local_route_fraction_turn2plus: f64,
    /// Mode switches.
    pub mode_switches: u64,
    /// Makespan \[s\].
    pub makespan_s: f64,
}

impl From<&Summary> for SummaryRow {
    fn from(s: &Summary) -> Self {
        SummaryRow {
            policy: s.policy.clone(),
            num_requests: s.num_requests,
            num_failed: s.num_failed,
            ttft_turn1_p50_ms: s.ttft_turn1.p50_ms,
            ttft_turn1_p99_ms: s.ttft_turn1.p99_ms,
            ttft_turn2plus_p50_ms: s.ttft_turn2plus.p50_ms,
            ttft_turn2plus_p99_ms: s.ttft_turn2plus.p99_ms,
            ttft_mean_ms: s.ttft_all.mean_ms,
            tpot_p50_ms: s.tpot_all.p50_ms,
            tpot_p99_ms: s.tpot_all.p99_ms,
            e2e_p50_ms: s.e2e_all.p50_ms,
            e2e_p99_ms: s.e2e_all.p99_ms,
            throughput_rps: s.throughput_rps,
            output_tokens_per_s: s.output_tokens_per_s,
            slo_attainment: s.slo_attainment,
            goodput_rps: s.goodput_rps,
            kv_bytes_moved: s.kv_bytes_moved,
            local_cache_hit_rate: s.local_cache_hit_rate,
            transferred_rate: s.transferred_rate,
            local_route_fraction_turn2plus: s.local_route_fraction_turn2plus,
            mode_switches: s.mode_switches,
            makespan_s: s.makespan_s,
        }
    }
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
            ms(&m.ttft_turn1, m.ttft_turn1.p50_ms, 1),
            ms(&m.ttft_turn1, m.ttft_turn1.p99_ms, 1),
            ms(&m.ttft_turn2plus, m.ttft_turn2plus.p50_ms, 1),
            ms(&m.ttft_turn2plus, m.ttft_turn2plus.p99_ms, 1),
            ms(&m.tpot_all, m.tpot_all.p50_ms, 2),
            ms(&m.tpot_all, m.tpot_all.p99_ms, 2),
            m.e2e_all.p50_ms,
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
    /// Trace file (name only), or `synthetic`.
    pub trace: String,
    /// Conversations replayed.
    pub num_conversations: usize,
}

/// Writes `requests.csv`, `summary.csv` and `summary.json` (`{run, policies}`) into `dir`;
/// returns the `summary.csv` rows.
///
/// # Errors
/// Serialisation or I/O errors.
pub fn write_results(
    dir: &OutputDir,
    run: &RunInfo,
    records: &[RequestRecord],
    summaries: &[Summary],
) -> Result<Vec<SummaryRow>> {
    dir.write("requests.csv", &to_csv(records)?)?;
    let rows: Vec<SummaryRow> = summaries.iter().map(SummaryRow::from).collect();
    dir.write("summary.csv", &to_csv(&rows)?)?;
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
    }
}

//! Writing results: CSV and JSON from serde row structs, all-or-nothing.
//!
//! A run's files are written into a temporary sibling directory which is renamed over the
//! destination only when every file is complete, so an error never leaves half-written output.
//! Outputs hold no timestamps and no absolute paths (golden files stay stable).

use crate::metrics::{RequestRecord, Summary};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A directory being written; [`StagedDir::commit`] moves it into place.
pub struct StagedDir {
    tmp: PathBuf,
    dest: PathBuf,
}

impl StagedDir {
    /// Starts writing what will become `dest`.
    ///
    /// # Errors
    /// When the parent directory cannot be created.
    pub fn new(dest: &Path) -> Result<Self> {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(StagedDir {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Path of `rel` inside the staging directory (parents created).
    ///
    /// # Errors
    /// When a parent directory cannot be created.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.tmp.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(p)
    }

    /// Writes `bytes` to `rel`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(rel)?;
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
    }

    /// Replaces `dest` with the staged directory.
    ///
    /// # Errors
    /// I/O errors (the staged directory is left for inspection).
    pub fn commit(self) -> Result<()> {
        if self.dest.exists() {
            std::fs::remove_dir_all(&self.dest).with_context(|| format!("removing old {}", self.dest.display()))?;
        }
        std::fs::rename(&self.tmp, &self.dest).with_context(|| format!("moving results into {}", self.dest.display()))
    }
}

impl StagedDir {
    /// Moves every file of the staged subdirectory `sub` into the existing directory `dest`, each
    /// by one rename (replacing a file of the same name whole), and discards the rest of the
    /// staging directory; returns how many files moved. Files of `dest` that `sub` does not hold
    /// are left alone.
    ///
    /// # Errors
    /// I/O errors (files already moved stay moved; each is complete).
    pub fn commit_files_into(self, dest: &Path, sub: &str) -> Result<usize> {
        let from = self.tmp.join(sub);
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&from)
            .with_context(|| format!("listing {}", from.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", from.display()))?;
        names.sort();
        for n in &names {
            let target = dest.join(n);
            std::fs::rename(from.join(n), &target)
                .with_context(|| format!("moving {} into place", target.display()))?;
        }
        Ok(names.len())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        // Only reached with the staging directory still present on error paths.
        if self.tmp.exists() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Serialises rows as CSV (header from the struct's field names).
///
/// # Errors
/// Serialisation errors.
pub fn to_csv<T: Serialize>(rows: &[T]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner().context("flushing CSV")
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
        "{:<w$} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10} {:>7} {:>10} {:>7} {:>6}",
        "policy",
        "reqs",
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
        "{:<w$} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10} {:>7} {:>10} {:>7} {:>6}",
        "", "", "TTFT ms", "TTFT ms", "TTFT ms", "TTFT ms", "ms", "ms", "ms", "", "GB", "hit", "att."
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
            "{:<w$} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10.1} {:>7.3} {:>10.2} {:>6.1}% {:>5.1}%",
            m.policy,
            m.num_requests,
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

/// Writes `requests.csv`, `summary.csv` and `summary.json` into `dir`; returns the `summary.csv`
/// rows.
///
/// # Errors
/// Serialisation or I/O errors.
pub fn write_results(dir: &StagedDir, records: &[RequestRecord], summaries: &[Summary]) -> Result<Vec<SummaryRow>> {
    dir.write("requests.csv", &to_csv(records)?)?;
    let rows: Vec<SummaryRow> = summaries.iter().map(SummaryRow::from).collect();
    dir.write("summary.csv", &to_csv(&rows)?)?;
    let mut json = serde_json::to_vec_pretty(summaries)?;
    json.push(b'\n');
    dir.write("summary.json", &json)?;
    Ok(rows)
}

//! `ppdsim sweep`: a grid of runs — conversation arrival rate × seed × policy variants — and the
//! loads at which one policy's curve crosses another's.
//!
//! A sweep file names a base scenario and the grid:
//!
//! ```toml
//! scenario = "../scenarios/default.toml"   # relative to the sweep file
//! rates_per_s = [2.0, 4.0, 6.0, 8.0]      # Poisson conversation starts, strictly ascending
//! seeds = [42, 43]                        # default: the scenario's seed
//! metrics = ["ttft_turn2plus_p50_ms"]     # summary.csv columns to compare (default: five)
//! slo_attainment_target = 0.9             # for the goodput (default 0.9)
//!
//! [[vary]]                                # any router key, e.g. a threshold or hysteresis level
//! router = "adaptive"
//! key = "max_local_append_tokens"         # dotted for nested keys: "hysteresis.high_backlog_tokens"
//! values = [128, 512, 2048]
//! ```
//!
//! Each `[[vary]]` replaces the named router by one variant per value, named
//! `NAME[KEY=VALUE]`; several `[[vary]]` on one router multiply. Every (rate, seed) point runs
//! every router variant on each of its clusters on identical requests, exactly as `ppdsim run`
//! would on the scenario with that rate and seed (a variant of a router on several clusters is
//! named `NAME[KEY=VALUE]@CLUSTER`). Points run in parallel; rows come out in grid order (rate,
//! then seed, then run) whatever the thread count.
//!
//! A **crossover** of two policies on a metric is a load where the difference of their
//! seed-averaged curves changes sign: inside a segment it is interpolated linearly; a difference
//! that touches zero and comes back with the same sign is not a crossover. Curves within
//! [`TIE_TOLERANCE`] of each other at a rate count as equal there, so two practically identical
//! policies do not "cross" on noise.
//!
//! A policy's **goodput** ([`goodput`]) is DistServe's: the highest load at which its
//! seed-averaged SLO attainment is still at least `slo_attainment_target` (default 0.9), and that
//! load per GPU.

use crate::error::{InputError, InputResult};
use crate::output::SummaryRow;
use crate::policy::RouterConfig;
use crate::scenario::Deployment;
use crate::scenario::LoadedScenario;
use crate::sim::workload::ArrivalSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A sweep file as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Base scenario, relative to the sweep file.
    pub scenario: PathBuf,
    /// Poisson rates of new conversations, strictly ascending \[1/s\].
    pub rates_per_s: Vec<f64>,
    /// Seeds (default: the scenario's seed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// `summary.csv` columns to compare and plot (default: [`DEFAULT_METRICS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// SLO attainment a policy must reach for its goodput (DistServe's definition; default
    /// [`DEFAULT_SLO_ATTAINMENT_TARGET`]) (0–1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_attainment_target: Option<f64>,
    /// Policy parameter grids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vary: Vec<Vary>,
}

/// SLO attainment target of the goodput when the sweep file names none (DistServe's 90%).
pub const DEFAULT_SLO_ATTAINMENT_TARGET: f64 = 0.9;

impl SweepSpec {
    /// The SLO attainment target (fraction, (0, 1]): the file's, else
    /// [`DEFAULT_SLO_ATTAINMENT_TARGET`].
    pub fn attainment_target(&self) -> f64 {
        self.slo_attainment_target.unwrap_or(DEFAULT_SLO_ATTAINMENT_TARGET)
    }
}

/// One router key swept over values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vary {
    /// Name of a router of the scenario (its `name`, else its kind).
    pub router: String,
    /// Key of that router's table; dotted for nested tables (`hysteresis.low_backlog_tokens`).
    pub key: String,
    /// Values, in order.
    pub values: Vec<toml::Value>,
}

/// Relative difference below which two curves are equal at a rate: |a − b| ≤ 0.5% of
/// max(|a|, |b|).
pub const TIE_TOLERANCE: f64 = 0.005;

/// Metrics compared when the sweep file names none.
pub const DEFAULT_METRICS: [&str; 5] = [
    "ttft_turn1_p50_ms",
    "ttft_turn2plus_p50_ms",
    "ttft_turn2plus_p99_ms",
    "tpot_p50_ms",
    "goodput_rps",
];

/// A loaded, checked sweep: the base scenario, the grid and the expanded policy list.
pub struct LoadedSweep {
    /// The sweep with defaults filled in (seeds, metrics).
    pub spec: SweepSpec,
    /// The base scenario.
    pub scenario: LoadedScenario,
    /// Routers of every point: the scenario's, with `[[vary]]` expansions in place.
    pub routers: Vec<RouterConfig>,
    /// The base scenario's file, as reached from the current directory.
    pub scenario_path: PathBuf,
}

/// One row of `sweep.csv`: the point and one policy's summary.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    /// Arrival rate \[1/s\].
    pub rate_per_s: f64,
    /// Seed.
    pub seed: u64,
    /// Summary of one policy at this point.
    pub summary: SummaryRow,
}

/// Where two policies' seed-averaged curves of one metric cross.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Crossover {
    /// Metric (a `summary.csv` column).
    pub metric: String,
    /// First policy (grid order).
    pub policy_a: String,
    /// Second policy.
    pub policy_b: String,
    /// Load of the crossing \[1/s\].
    pub rate_per_s: f64,
    /// Metric value of both curves there (linear interpolation; the metric's unit).
    pub value: f64,
    /// The policy whose metric is lower below the crossing.
    pub lower_below: String,
    /// Both policies' seed-averaged SLO attainment is below the sweep's target at the first grid
    /// rate at or above the crossing: both are saturated there, so the crossing is a tie in
    /// saturation rather than one policy overtaking the other ([`mark_saturated`]).
    pub both_saturated: bool,
}

/// The numeric `summary.csv` columns at `percentiles` (a scenario's `percentiles`), in order
/// (every column but `policy`).
pub fn metric_names(percentiles: &[f64]) -> Vec<String> {
    SummaryRow::column_names(percentiles)
}

impl LoadedSweep {
    /// Reads and checks a sweep file and its scenario.
    ///
    /// # Errors
    /// An [`InputError`] naming the file and key: syntax, unknown keys, rates not strictly
    /// ascending or not > 0, an unknown metric, a `[[vary]]` naming no policy of the scenario, a key
    /// the policy does not have or a value it refuses.
    pub fn load(path: &Path) -> InputResult<LoadedSweep> {
        Self::load_with(path, &[])
    }

    /// [`LoadedSweep::load`] with `--set KEY=VALUE` overrides of the sweep file's keys.
    ///
    /// # Errors
    /// As [`LoadedSweep::load`].
    pub fn load_with(path: &Path, overrides: &[String]) -> InputResult<LoadedSweep> {
        let original = crate::input::read_file_text(path, "sweep")?;
        let text = crate::input::apply_overrides(path, &original, overrides)?;
        let mut spec: SweepSpec = crate::input::parse_toml(path, "sweep", &original, &text, overrides)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let scenario_path = base.join(&spec.scenario);
        if !scenario_path.is_file() {
            return Err(InputError::key(
                path,
                "scenario",
                format!(
                    "{} not found (paths are relative to the sweep file)",
                    scenario_path.display()
                ),
            ));
        }
        let scenario = LoadedScenario::load(&scenario_path)?;
        if spec.rates_per_s.is_empty() {
            return Err(InputError::key(path, "rates_per_s", "empty; list at least one rate"));
        }
        let min_rate = crate::scenario::limits::MIN_RATE_PER_S;
        if let Some(bad) = spec.rates_per_s.iter().find(|r| !(r.is_finite() && **r >= min_rate)) {
            return Err(InputError::key(
                path,
                "rates_per_s",
                format!(
                    "{} is not a rate of new conversations per second >= {min_rate}",
                    crate::scenario::fmt_num(*bad)
                ),
            ));
        }
        // An explicitly empty list is a mistake, not a request for the default.
        // (An empty `rates_per_s` is refused above.)
        let raw: toml::Table = crate::input::parse_toml(path, "sweep", &original, &text, overrides)?;
        for key in ["seeds", "metrics"] {
            if raw.get(key).and_then(|v| v.as_array()).is_some_and(|a| a.is_empty()) {
                return Err(InputError::key(
                    path,
                    key,
                    "is an empty list; list at least one value or remove the key for the default",
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = spec.seeds.iter().find(|s| !seen.insert(**s)) {
            return Err(InputError::key(
                path,
                "seeds",
                format!("seed {dup} is listed twice: each seed gives one run per point; list distinct seeds"),
            ));
        }
        if spec.rates_per_s.windows(2).any(|w| w[1] <= w[0]) {
            return Err(InputError::key(path, "rates_per_s", "must be strictly ascending"));
        }
        if spec.seeds.is_empty() {
            spec.seeds = vec![scenario.resolved.seed];
        }
        if spec.metrics.is_empty() {
            spec.metrics = DEFAULT_METRICS.iter().map(|m| m.to_string()).collect();
        }
        let target = *spec.slo_attainment_target.get_or_insert(DEFAULT_SLO_ATTAINMENT_TARGET);
        if !(target > 0.0 && target <= 1.0) {
            return Err(InputError::key(
                path,
                "slo_attainment_target",
                format!("{target} is not a fraction in (0, 1]; DistServe uses 0.9"),
            ));
        }
        let known = metric_names(&scenario.resolved.percentiles);
        for (i, m) in spec.metrics.iter().enumerate() {
            if !known.contains(m) {
                return Err(InputError::key(
                    path,
                    &format!("metrics[{i}]"),
                    format!("unknown metric `{m}`; one of: {}", known.join(", ")),
                ));
            }
        }
        // (base name, router) pairs; each [[vary]] replaces the routers whose base name matches.
        let mut routers: Vec<(String, RouterConfig)> =
            scenario.resolved.router.iter().map(|p| (p.name(), p.clone())).collect();
        for (i, v) in spec.vary.iter().enumerate() {
            let at = |k: &str| format!("vary[{i}].{k}");
            if !routers.iter().any(|(b, _)| *b == v.router) {
                let names: Vec<&str> = routers.iter().map(|(b, _)| b.as_str()).collect();
                return Err(InputError::key(
                    path,
                    &at("router"),
                    format!("no router `{}` in the scenario; one of: {}", v.router, names.join(", ")),
                ));
            }
            if v.values.is_empty() {
                return Err(InputError::key(path, &at("values"), "empty; list at least one value"));
            }
            let mut next = Vec::new();
            for (b, p) in routers {
                if b != v.router {
                    next.push((b, p));
                    continue;
                }
                for value in &v.values {
                    let variant = with_key(&p, &v.key, value).map_err(|m| InputError::key(path, &at("key"), m))?;
                    variant
                        .validate()
                        .map_err(|m| InputError::key(path, &at("values"), m))?;
                    next.push((b.clone(), variant));
                }
            }
            routers = next;
        }
        let routers: Vec<RouterConfig> = routers.into_iter().map(|(_, p)| p).collect();
        let mut names = std::collections::BTreeSet::new();
        let clusters: Vec<String> = scenario.clusters.iter().map(|c| c.name.clone()).collect();
        for d in crate::scenario::deployments(&routers, &clusters) {
            if !names.insert(d.name.clone()) {
                return Err(InputError::key(
                    path,
                    "vary",
                    format!("two variants are both named `{}`; list each value once", d.name),
                ));
            }
        }
        Ok(LoadedSweep {
            spec,
            scenario,
            routers,
            scenario_path,
        })
    }

    /// The runs of every point: each router variant on each of its clusters.
    pub fn deployments(&self) -> Vec<Deployment> {
        let clusters: Vec<String> = self.scenario.clusters.iter().map(|c| c.name.clone()).collect();
        crate::scenario::deployments(&self.routers, &clusters)
    }

    /// The scenario of one grid point: the base scenario with this rate, seed and policy list.
    pub fn point(&self, rate_per_s: f64, seed: u64) -> LoadedScenario {
        let mut sc = self.scenario.clone();
        // The rate replaces the scenario's arrival rate; a setup-phase protocol keeps its shape.
        sc.resolved.workload.arrival = match sc.resolved.workload.arrival {
            ArrivalSpec::Setup {
                duration_s, setup_s, ..
            } => ArrivalSpec::Setup {
                rate_per_s,
                duration_s,
                setup_s,
            },
            _ => ArrivalSpec::Poisson { rate_per_s },
        };
        sc.resolved.seed = seed;
        sc.resolved.router = self.routers.clone();
        sc
    }
}

/// `router` with `key` (dotted for nested tables) set to `value` and `[key=value]` appended to
/// its name.
///
/// # Errors
/// A message when the router has no such key or refuses the value.
fn with_key(policy: &RouterConfig, key: &str, value: &toml::Value) -> Result<RouterConfig, String> {
    let mut table = toml::Value::try_from(policy).map_err(|e| e.to_string())?;
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) || matches!(parts[0], "kind" | "name" | "clusters") {
        return Err(format!(
            "`{key}` cannot be swept; name a numeric or table key of the router"
        ));
    }
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut cur = &mut table;
    for (i, part) in parents.iter().enumerate() {
        cur = cur
            .get_mut(*part)
            .filter(|v| v.is_table())
            .ok_or_else(|| format!("router has no table `{}` to set `{key}` in", parts[..=i].join(".")))?;
    }
    cur.as_table_mut()
        .expect("checked to be a table")
        .insert(last.to_string(), value.clone());
    let name = format!("{}[{key}={value}]", policy.name());
    table
        .as_table_mut()
        .expect("routers serialize to tables")
        .insert("name".into(), toml::Value::String(name));
    table
        .try_into()
        .map_err(|e: toml::de::Error| format!("`{key} = {value}`: {}", e.to_string().trim_end()))
}

/// One metric of a sweep: its seed-averaged curves and their crossovers.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricCurves {
    /// The metric (a `summary.csv` column).
    pub metric: String,
    /// (policy, seed-averaged value per rate), policies in the order of their first row; NaN
    /// where no seed has a finite value.
    pub curves: Vec<(String, Vec<f64>)>,
    /// Per curve (same order), the (min, max) over seeds at each rate; NaN where no seed has a
    /// finite value.
    pub ranges: Vec<Vec<(f64, f64)>>,
    /// Where the curves cross.
    pub crossings: Vec<Crossover>,
}

/// The curves and crossovers of each of `metrics` over the grid `rows` (rates in `rates`).
pub fn analyse(rows: &[SweepRow], rates: &[f64], metrics: &[String]) -> Vec<MetricCurves> {
    let mut policies: Vec<&str> = Vec::new();
    for r in rows {
        if !policies.contains(&r.summary.policy.as_str()) {
            policies.push(&r.summary.policy);
        }
    }
    metrics
        .iter()
        .map(|metric| {
            // Per policy and rate: (mean, min, max) over the seeds.
            let stats: Vec<Vec<(f64, f64, f64)>> = policies
                .iter()
                .map(|&policy| {
                    rates
                        .iter()
                        .map(|&rate| {
                            let vals: Vec<f64> = rows
                                .iter()
                                .filter(|r| r.rate_per_s == rate && r.summary.policy == policy)
                                .filter_map(|r| r.summary.get(metric))
                                .filter(|v| v.is_finite())
                                .collect();
                            if vals.is_empty() {
                                (f64::NAN, f64::NAN, f64::NAN)
                            } else {
                                (
                                    vals.iter().sum::<f64>() / vals.len() as f64,
                                    vals.iter().copied().fold(f64::INFINITY, f64::min),
                                    vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                                )
                            }
                        })
                        .collect()
                })
                .collect();
            let curves: Vec<(String, Vec<f64>)> = policies
                .iter()
                .zip(&stats)
                .map(|(p, s)| (p.to_string(), s.iter().map(|t| t.0).collect()))
                .collect();
            let crossings = crossovers(rates, &curves, metric);
            MetricCurves {
                metric: metric.clone(),
                curves,
                ranges: stats.iter().map(|s| s.iter().map(|t| (t.1, t.2)).collect()).collect(),
                crossings,
            }
        })
        .collect()
}

impl MetricCurves {
    /// The curves as a text table — a row per policy (variants named by their swept keys' last
    /// dotted component: `adaptive max_local_append_tokens=64 high_backlog_tokens=1024`), a
    /// column per rate, so its width grows with the rates, not the names — and one line per
    /// crossover.
    pub fn table(&self, rates: &[f64]) -> String {
        use std::fmt::Write;
        let label = variant_label;
        let labels: Vec<String> = self.curves.iter().map(|(p, _)| label(p)).collect();
        let w = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(10);
        let (title, _, _) = crate::plot::metric_label(&self.metric);
        let mut s = format!(
            "{} — {title}, mean over seeds; columns: new conversations/s\n  {:<w$}",
            self.metric, "policy"
        );
        for r in rates {
            let _ = write!(s, " {:>9}", crate::plot::fmt_tick(*r));
        }
        for (l, (_, c)) in labels.iter().zip(&self.curves) {
            let _ = write!(s, "\n  {l:<w$}");
            for v in c {
                let _ = write!(s, " {:>9}", crate::output::fmt_number(*v, 3));
            }
        }
        s.push('\n');
        for c in &self.crossings {
            let above = if c.lower_below == c.policy_a {
                &c.policy_b
            } else {
                &c.policy_a
            };
            let _ = writeln!(
                s,
                "  crossover at {:.3}/s ({} = {:.3})\n      lower below: {}\n      lower above: {}",
                c.rate_per_s,
                self.metric,
                c.value,
                label(&c.lower_below),
                label(above)
            );
            if c.both_saturated {
                let next = rates[next_rate_index(rates, c.rate_per_s)];
                let _ = writeln!(
                    s,
                    "      both miss the SLO-attainment target at {}/s, the next grid rate: they cross where both saturate, not a ranking",
                    crate::plot::fmt_tick(next)
                );
            }
        }
        s
    }
}

/// Crossovers of every pair of `curves` (each a value per entry of `rates`) on `metric`, pairs
/// in curve order, crossings in rate order. Points where either curve is NaN are skipped.
pub fn crossovers(rates: &[f64], curves: &[(String, Vec<f64>)], metric: &str) -> Vec<Crossover> {
    let mut out = Vec::new();
    for (i, (a, ya)) in curves.iter().enumerate() {
        for (b, yb) in &curves[i + 1..] {
            // (index, a − b) of the points where both are finite.
            let d: Vec<(usize, f64)> = (0..rates.len())
                .filter(|&k| ya[k].is_finite() && yb[k].is_finite())
                .map(|k| {
                    let diff = ya[k] - yb[k];
                    let tie = diff.abs() <= TIE_TOLERANCE * ya[k].abs().max(yb[k].abs());
                    (k, if tie { 0.0 } else { diff })
                })
                .collect();
            let mut last: Option<(usize, f64)> = None; // last point with a nonzero difference
            let mut first_zero: Option<usize> = None; // first zero after it
            for &(k, dk) in &d {
                if dk == 0.0 {
                    first_zero.get_or_insert(k);
                    continue;
                }
                if let Some((j, dj)) = last {
                    if dj.signum() != dk.signum() {
                        let (rate, value) = match first_zero {
                            Some(z) => (rates[z], ya[z]),
                            None => {
                                let t = dj / (dj - dk);
                                (rates[j] + t * (rates[k] - rates[j]), ya[j] + t * (ya[k] - ya[j]))
                            }
                        };
                        out.push(Crossover {
                            metric: metric.to_string(),
                            policy_a: a.clone(),
                            policy_b: b.clone(),
                            rate_per_s: rate,
                            value,
                            lower_below: if dj < 0.0 { a.clone() } else { b.clone() },
                            both_saturated: false,
                        });
                    }
                }
                last = Some((k, dk));
                first_zero = None;
            }
        }
    }
    out
}

/// Each policy's seed-averaged SLO attainment per rate (fraction 0–1; NaN where no seed has one).
fn attainment_curves(rows: &[SweepRow], rates: &[f64]) -> Vec<(String, Vec<f64>)> {
    analyse(rows, rates, &["slo_attainment".to_string()]).remove(0).curves
}

/// Index of the first grid rate at or above `rate` (the last when none is): where a crossing's
/// saturation is judged.
fn next_rate_index(rates: &[f64], rate: f64) -> usize {
    rates.iter().position(|&r| r >= rate).unwrap_or(rates.len() - 1)
}

/// Sets [`Crossover::both_saturated`] on every crossing of `curves`: both policies' seed-averaged
/// SLO attainment over `rows` (a rate without a value counts as missing) is below `target` at
/// the first grid rate at or above the crossing.
pub fn mark_saturated(curves: &mut [MetricCurves], rows: &[SweepRow], rates: &[f64], target: f64) {
    let attainment = attainment_curves(rows, rates);
    let misses = |policy: &str, k: usize| {
        attainment
            .iter()
            .find(|(p, _)| p == policy)
            .is_none_or(|(_, a)| !(a[k].is_finite() && a[k] >= target))
    };
    for c in curves.iter_mut().flat_map(|m| m.crossings.iter_mut()) {
        let k = next_rate_index(rates, c.rate_per_s);
        c.both_saturated = misses(&c.policy_a, k) && misses(&c.policy_b, k);
    }
}

/// [`analyse`] of `spec`'s rates and metrics, with the crossings where both policies saturate
/// marked ([`mark_saturated`] at `spec`'s attainment target): what `sweep` prints and plots.
pub fn analyse_marked(rows: &[SweepRow], spec: &SweepSpec) -> Vec<MetricCurves> {
    let mut curves = analyse(rows, &spec.rates_per_s, &spec.metrics);
    mark_saturated(&mut curves, rows, &spec.rates_per_s, spec.attainment_target());
    curves
}

/// `crossovers.csv`: one line per crossover, the header even when there is none.
///
/// # Errors
/// CSV serialisation errors.
pub fn crossovers_csv(crossings: &[Crossover]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    w.write_record([
        "metric",
        "policy_a",
        "policy_b",
        "rate_per_s",
        "value",
        "lower_below",
        "both_saturated",
    ])?;
    for c in crossings {
        w.serialize(c)?;
    }
    Ok(w.into_inner()?)
}

/// `sweep.csv`: header `rate_per_s,seed,` + the `summary.csv` columns, one line per row.
///
/// # Errors
/// CSV serialisation errors.
pub fn to_csv(rows: &[SweepRow]) -> anyhow::Result<Vec<u8>> {
    let mut header = vec!["rate_per_s".to_string(), "seed".to_string()];
    header.extend(rows.first().map(|r| r.summary.header()).unwrap_or_default());
    // Swept parameters get their own columns (`base_policy`, then `swept.KEY` per key, in order
    // of first appearance): the variant `adaptive[max_local_append_tokens=64]` has base policy
    // `adaptive` and `swept.max_local_append_tokens` 64; other rows leave them empty.
    let mut keys: Vec<String> = Vec::new();
    for r in rows {
        for (k, _) in variant_settings(&r.summary.policy).1 {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    if !keys.is_empty() {
        header.push("base_policy".into());
        header.extend(keys.iter().map(|k| format!("swept.{k}")));
    }
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    w.write_record(&header)?;
    for r in rows {
        if keys.is_empty() {
            w.serialize((r.rate_per_s, r.seed, &r.summary))?;
        } else {
            let (base, settings) = variant_settings(&r.summary.policy);
            let extra: Vec<String> = std::iter::once(base)
                .chain(keys.iter().map(|k| {
                    settings
                        .iter()
                        .find(|(sk, _)| sk == k)
                        .map_or(String::new(), |(_, v)| v.clone())
                }))
                .collect();
            w.serialize((r.rate_per_s, r.seed, &r.summary, extra))?;
        }
    }
    Ok(crate::output::blank_nan_fields(&w.into_inner()?))
}

/// A variant name `BASE[K1=V1][K2=V2]` split into `BASE` and its `(K, V)` settings (a name
/// without settings is its own base).
pub fn variant_settings(name: &str) -> (String, Vec<(String, String)>) {
    let (Some(open), Some(close)) = (name.find('['), name.rfind(']')) else {
        return (name.to_string(), Vec::new());
    };
    let mut settings = Vec::new();
    for group in name[open..=close].split(']').filter(|g| !g.is_empty()) {
        if let Some((k, v)) = group.trim_start_matches('[').split_once('=') {
            settings.push((k.to_string(), v.to_string()));
        }
    }
    // A variant on one of several clusters keeps its `@CLUSTER` in the base name.
    (format!("{}{}", &name[..open], &name[close + 1..]), settings)
}

/// A variant name for people: `adaptive[a.b=1][c=2]` reads `adaptive b=1 c=2` (each swept key
/// by its last dotted component; used in tables and legends).
pub fn variant_label(name: &str) -> String {
    let (base, settings) = variant_settings(name);
    let mut s = base;
    for (k, v) in settings {
        s.push_str(&format!(" {}={v}", k.rsplit('.').next().unwrap_or(&k)));
    }
    s
}

/// One swept policy's variants against the load for one metric (a threshold or hysteresis
/// heatmap): a row per variant, a column per rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// The policy the `[[vary]]` entries name.
    pub policy: String,
    /// The metric (a `summary.csv` column).
    pub metric: String,
    /// Column loads \[1/s\].
    pub rates_per_s: Vec<f64>,
    /// (the variant's swept settings, `KEY=VALUE, …`; its seed-averaged value per rate), in grid
    /// order.
    pub rows: Vec<(String, Vec<f64>)>,
}

/// The heatmaps of a sweep: for each policy that `spec` varies and that has at least two
/// variants in `curves`, one per metric. A variant is a curve named `POLICY[KEY=VALUE]…`.
pub fn heatmaps(spec: &SweepSpec, curves: &[MetricCurves]) -> Vec<Heatmap> {
    let mut bases: Vec<&str> = Vec::new();
    for v in &spec.vary {
        if !bases.contains(&v.router.as_str()) {
            bases.push(&v.router);
        }
    }
    let mut out = Vec::new();
    for base in bases {
        let prefix = format!("{base}[");
        for m in curves {
            let rows: Vec<(String, Vec<f64>)> = m
                .curves
                .iter()
                .filter_map(|(name, values)| {
                    let settings = name.strip_prefix(&prefix)?.strip_suffix(']')?;
                    Some((settings.split("][").collect::<Vec<_>>().join(", "), values.clone()))
                })
                .collect();
            if rows.len() >= 2 {
                out.push(Heatmap {
                    policy: base.to_string(),
                    metric: m.metric.clone(),
                    rates_per_s: spec.rates_per_s.clone(),
                    rows,
                });
            }
        }
    }
    out
}

impl Heatmap {
    /// The plot's file stem under `plots/`: `heatmap_<policy>_<metric>`, with every character
    /// other than ASCII letters, digits, `-` and `_` replaced by `_`.
    pub fn file_stem(&self) -> String {
        format!("heatmap_{}_{}", crate::output::file_safe(&self.policy), self.metric)
    }
}

/// Where a goodput lies relative to the swept rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodputBound {
    /// Interpolated between the last rate meeting the target and the first missing it.
    Interpolated,
    /// Every swept rate meets the target: the goodput is at least the highest rate.
    AtLeastMaxRate,
    /// The lowest swept rate already misses the target: the goodput is below it (value NaN).
    BelowMinRate,
}

/// A policy's goodput in DistServe's sense (Zhong et al., OSDI 2024): the highest load at which its
/// seed-averaged SLO attainment is still at least the target, and that load per GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Goodput {
    /// Policy (variant) name.
    pub policy: String,
    /// GPUs of its cluster (one per instance).
    pub gpus: u32,
    /// SLO attainment target (0–1].
    pub slo_attainment_target: f64,
    /// Goodput in new conversations per second \[1/s\] (NaN below the grid).
    pub goodput_conversations_per_s: f64,
    /// The same per GPU \[1/s\].
    pub goodput_per_gpu: f64,
    /// Exact (interpolated) or a bound of the grid.
    pub bound: GoodputBound,
}

/// The goodput of every policy of `rows` (grid `rates`, strictly ascending): scanning the
/// seed-averaged SLO attainment curve from the lowest rate, the load where it first falls below
/// `target` (linear interpolation inside that segment; a rate without a value counts as missing
/// the target). `gpus` gives each policy's GPU count (a policy it omits counts 1).
pub fn goodput(rows: &[SweepRow], rates: &[f64], target: f64, gpus: &[(String, u32)]) -> Vec<Goodput> {
    let curves = attainment_curves(rows, rates);
    curves
        .into_iter()
        .map(|(policy, att)| {
            let meets = |a: f64| a.is_finite() && a >= target;
            let (value, bound) = match att.iter().position(|&a| !meets(a)) {
                Some(0) => (f64::NAN, GoodputBound::BelowMinRate),
                None => (*rates.last().expect("a sweep has rates"), GoodputBound::AtLeastMaxRate),
                Some(i) => {
                    let (r0, r1, a0, a1) = (rates[i - 1], rates[i], att[i - 1], att[i]);
                    let v = if a1.is_finite() && a0 > a1 {
                        r0 + (a0 - target) / (a0 - a1) * (r1 - r0)
                    } else {
                        r0
                    };
                    (v, GoodputBound::Interpolated)
                }
            };
            let g = gpus.iter().find(|(p, _)| *p == policy).map_or(1, |&(_, n)| n.max(1));
            Goodput {
                policy,
                gpus: g,
                slo_attainment_target: target,
                goodput_conversations_per_s: value,
                goodput_per_gpu: value / g as f64,
                bound,
            }
        })
        .collect()
}

/// The goodput table as text: a line per policy, bounds shown as `≥` / `<`.
pub fn goodput_table(goodputs: &[Goodput], rates: &[f64]) -> String {
    use std::fmt::Write;
    let labels: Vec<String> = goodputs.iter().map(|g| variant_label(&g.policy)).collect();
    let w = crate::output::policy_column_width(labels.iter().map(String::as_str));
    let target = goodputs
        .first()
        .map_or(DEFAULT_SLO_ATTAINMENT_TARGET, |g| g.slo_attainment_target);
    let mut s = format!(
        "goodput (DistServe): highest load with >= {:.0}% SLO attainment (seed mean), and per GPU\n",
        100.0 * target
    );
    let _ = writeln!(
        s,
        "  {:<w$} {:>5} {:>12} {:>12}",
        "policy", "GPUs", "conv/s", "conv/s/GPU"
    );
    for (g, label) in goodputs.iter().zip(&labels) {
        let (a, b) = match g.bound {
            GoodputBound::Interpolated => (
                format!("{:.2}", g.goodput_conversations_per_s),
                format!("{:.3}", g.goodput_per_gpu),
            ),
            GoodputBound::AtLeastMaxRate => (
                format!(">= {:.2}", g.goodput_conversations_per_s),
                format!(">= {:.3}", g.goodput_per_gpu),
            ),
            GoodputBound::BelowMinRate => {
                let lo = rates.first().copied().unwrap_or(0.0);
                (format!("< {lo:.2}"), format!("< {:.3}", lo / g.gpus as f64))
            }
        };
        let _ = writeln!(s, "  {label:<w$} {:>5} {a:>12} {b:>12}", g.gpus);
    }
    s
}

/// Reads a `sweep.csv` written by [`to_csv`] back into rows.
///
/// # Errors
/// Unreadable files, a header that is not `rate_per_s,seed,` + the `summary.csv` columns, or a
/// row that does not parse (naming its line).
pub fn read_csv(path: &Path) -> InputResult<Vec<SweepRow>> {
    let text = crate::input::read_text(path)?;
    let (header, records) = crate::input::csv_rows(path, &text)?;
    // The summary columns end where the swept-parameter columns (`base_policy`, `swept.KEY`…,
    // which repeat what the policy name says, not read back) begin.
    let end = header.iter().position(|h| h == "base_policy").unwrap_or(header.len());
    let swept_ok = header[end..].iter().skip(1).all(|h| h.starts_with("swept."));
    // The percentiles the file reports, from its `ttft_turn1_pXX_ms` columns.
    let percentiles: Vec<f64> = header
        .iter()
        .filter_map(|h| {
            h.strip_prefix("ttft_turn1_p")?
                .strip_suffix("_ms")?
                .replace('_', ".")
                .parse()
                .ok()
        })
        .collect();
    let mut want = vec!["rate_per_s".to_string(), "seed".to_string(), "policy".to_string()];
    want.extend(SummaryRow::column_names(&percentiles));
    if header[..end] != want[..] || !swept_ok {
        return Err(InputError::file(
            path,
            format!(
                "header is not a sweep.csv of this ppdsim version (expected {} columns: {}…); re-run the sweep",
                want.len(),
                want[..4].join(",")
            ),
        ));
    }
    let summary_header = &header[2..end];
    let mut rows = Vec::new();
    for (line, rec) in &records {
        let bad = |what: String| InputError::line(path, *line, what);
        let rate_per_s: f64 = rec[0]
            .parse()
            .map_err(|e| bad(format!("rate_per_s `{}`: {e}", &rec[0])))?;
        let seed: u64 = rec[1].parse().map_err(|e| bad(format!("seed `{}`: {e}", &rec[1])))?;
        // `csv_rows` gives every record the header's length.
        let fields: Vec<&str> = rec.iter().skip(2).take(end - 2).collect();
        let summary = SummaryRow::parse(summary_header, &fields).map_err(bad)?;
        rows.push(SweepRow {
            rate_per_s,
            seed,
            summary,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(name: &str, v: &[f64]) -> (String, Vec<f64>) {
        (name.to_string(), v.to_vec())
    }

    #[test]
    fn crossing_inside_a_segment_is_interpolated() {
        // d = a − b = −10, +5, +20: the sign changes between rates 1 and 2 at t = 10/15.
        let rates = [1.0, 2.0, 4.0];
        let c = crossovers(
            &rates,
            &[curve("a", &[10.0, 30.0, 50.0]), curve("b", &[20.0, 25.0, 30.0])],
            "m",
        );
        assert_eq!(c.len(), 1);
        assert!((c[0].rate_per_s - (1.0 + 2.0 / 3.0)).abs() < 1e-12);
        assert!((c[0].value - (10.0 + 20.0 * 2.0 / 3.0)).abs() < 1e-12);
        assert_eq!(
            (
                c[0].policy_a.as_str(),
                c[0].policy_b.as_str(),
                c[0].lower_below.as_str()
            ),
            ("a", "b", "a")
        );
    }

    #[test]
    fn touching_ties_and_gaps_are_handled() {
        let rates = [1.0, 2.0, 3.0, 4.0];
        let b = curve("b", &[2.0, 2.0, 2.0, 2.0]);
        // Touches at rate 2 and turns back: no crossover.
        assert!(crossovers(&rates, &[curve("a", &[1.0, 2.0, 1.0, 1.0]), b.clone()], "m").is_empty());
        // Meets at rate 2 and goes on to the other side: the crossover is at rate 2 exactly.
        let c = crossovers(&rates, &[curve("a", &[1.0, 2.0, 3.0, 3.0]), b.clone()], "m");
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].rate_per_s, c[0].value), (2.0, 2.0));
        // Within 0.5%: a tie, so 1.999 → 2.009 (0.45% above) is not a crossing of 2.0.
        assert!(crossovers(&rates, &[curve("a", &[1.999, 2.009, 1.999, 2.009]), b.clone()], "m").is_empty());
        // A NaN point is skipped: the sign change spans rates 1 → 3.
        let c = crossovers(&rates, &[curve("a", &[1.0, f64::NAN, 3.0, 3.0]), b], "m");
        assert_eq!(c.len(), 1);
        assert!((c[0].rate_per_s - 2.0).abs() < 1e-12);
        // Three curves: every pair once, in curve order.
        let three = [
            curve("x", &[1.0, 3.0, 3.0, 3.0]),
            curve("y", &[2.0, 2.0, 2.0, 2.0]),
            curve("z", &[5.0; 4]),
        ];
        let c = crossovers(&rates, &three, "m");
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].policy_a.as_str(), c[0].policy_b.as_str()), ("x", "y"));
    }

    #[test]
    fn with_key_sets_plain_and_nested_keys_and_names_the_variant() {
        let p = RouterConfig::Adaptive {
            name: None,
            clusters: vec![],
            max_local_append_tokens: 512,
            min_cache_rate: 0.0,
            hysteresis: Some(crate::policy::Hysteresis {
                high_backlog_tokens: 4096,
                low_backlog_tokens: 1024,
            }),
        };
        let v = with_key(&p, "max_local_append_tokens", &toml::Value::Integer(64)).unwrap();
        assert_eq!(v.name(), "adaptive[max_local_append_tokens=64]");
        assert!(matches!(
            v,
            RouterConfig::Adaptive {
                max_local_append_tokens: 64,
                ..
            }
        ));
        let v = with_key(&p, "hysteresis.low_backlog_tokens", &toml::Value::Integer(2048)).unwrap();
        assert!(matches!(
            v,
            RouterConfig::Adaptive {
                hysteresis: Some(crate::policy::Hysteresis {
                    low_backlog_tokens: 2048,
                    high_backlog_tokens: 4096
                }),
                ..
            }
        ));
        let e = with_key(&p, "threshold", &toml::Value::Integer(1)).unwrap_err();
        assert!(e.contains("threshold"), "{e}");
        let e = with_key(&p, "max_local_append_tokens", &toml::Value::String("many".into())).unwrap_err();
        assert!(e.contains("max_local_append_tokens"), "{e}");
        assert!(with_key(&p, "kind", &toml::Value::String("pd".into())).is_err());
        let pd = RouterConfig::Pd {
            name: None,
            clusters: vec![],
        };
        assert!(with_key(&pd, "clusters", &toml::Value::Integer(1))
            .unwrap_err()
            .contains("cannot be swept"));
        assert!(with_key(&pd, "hysteresis.low_backlog_tokens", &toml::Value::Integer(1))
            .unwrap_err()
            .contains("no table `hysteresis`"));
    }

    #[test]
    fn variant_names_parse_with_and_without_a_cluster() {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(variant_settings("pd"), ("pd".into(), vec![]));
        assert_eq!(
            variant_settings("adaptive[a.b=1][c=2]"),
            ("adaptive".into(), vec![kv("a.b", "1"), kv("c", "2")])
        );
        assert_eq!(
            variant_settings("adaptive[c=2]@2P_2pD"),
            ("adaptive@2P_2pD".into(), vec![kv("c", "2")])
        );
        assert_eq!(variant_label("adaptive[a.b=1]@4R"), "adaptive@4R b=1");
    }

    #[test]
    fn metric_columns_are_the_numeric_summary_columns() {
        let names = metric_names(&crate::metrics::DEFAULT_PERCENTILES);
        assert_eq!(names.first().map(String::as_str), Some("num_requests"));
        assert!(!names.contains(&"policy".to_string()));
        // One column per default percentile, in order, for each latency.
        let ttft2: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with("ttft_turn2plus_"))
            .collect();
        assert_eq!(
            ttft2,
            [
                "ttft_turn2plus_p50_ms",
                "ttft_turn2plus_p90_ms",
                "ttft_turn2plus_p95_ms",
                "ttft_turn2plus_p99_ms"
            ]
        );
        // p50 and p99 are always there; 99.9 is named p99_9.
        let odd = metric_names(&[99.9, 75.0]);
        let tpot: Vec<&str> = odd
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with("tpot_"))
            .collect();
        assert_eq!(tpot, ["tpot_p50_ms", "tpot_p75_ms", "tpot_p99_ms", "tpot_p99_9_ms"]);
        let row = SummaryRow::zeros("x", &crate::metrics::DEFAULT_PERCENTILES)
            .with("tpot_p50_ms", 12.5)
            .with("kv_bytes_moved", 7.0);
        assert_eq!(row.get("tpot_p50_ms"), Some(12.5));
        assert_eq!(row.get("kv_bytes_moved"), Some(7.0));
        assert_eq!(row.get("policy"), None);
    }

    #[test]
    fn heatmaps_take_the_varied_policys_variants_in_grid_order() {
        let spec = SweepSpec {
            scenario: PathBuf::new(),
            rates_per_s: vec![1.0, 2.0],
            seeds: vec![],
            metrics: vec!["m".into()],
            slo_attainment_target: None,
            vary: vec![
                Vary {
                    router: "adaptive".into(),
                    key: "a".into(),
                    values: vec![toml::Value::Integer(1), toml::Value::Integer(2)],
                },
                Vary {
                    router: "adaptive".into(),
                    key: "hysteresis.high".into(),
                    values: vec![toml::Value::Integer(5)],
                },
                Vary {
                    router: "solo".into(),
                    key: "a".into(),
                    values: vec![toml::Value::Integer(1)],
                },
            ],
        };
        let m = MetricCurves {
            metric: "m".into(),
            curves: vec![
                curve("pd", &[1.0, 2.0]),
                curve("adaptive[a=1][hysteresis.high=5]", &[3.0, 4.0]),
                curve("adaptive[a=2][hysteresis.high=5]", &[5.0, f64::NAN]),
                curve("solo[a=1]", &[6.0, 7.0]),
            ],
            ranges: vec![],
            crossings: vec![],
        };
        let h = heatmaps(&spec, &[m]);
        // `solo` has one variant: no heatmap; `pd` is not varied.
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].policy.as_str(), h[0].metric.as_str()), ("adaptive", "m"));
        assert_eq!(h[0].rates_per_s, [1.0, 2.0]);
        assert_eq!(h[0].rows[0], ("a=1, hysteresis.high=5".to_string(), vec![3.0, 4.0]));
        assert_eq!(h[0].rows[1].0, "a=2, hysteresis.high=5");
        assert!(h[0].rows[1].1[1].is_nan());
        let odd = Heatmap {
            policy: "my policy/2".into(),
            ..h[0].clone()
        };
        assert_eq!(odd.file_stem(), "heatmap_my_policy_2_m");
    }

    #[test]
    fn sweep_csv_reads_back_what_to_csv_wrote() {
        let row = |rate: f64, seed: u64, policy: &str, ttft: f64| SweepRow {
            rate_per_s: rate,
            seed,
            summary: SummaryRow::zeros(policy, &[50.0, 99.9])
                .with("num_requests", 40.0)
                .with("ttft_turn2plus_p50_ms", ttft)
                .with("tpot_p99_ms", f64::NAN)
                .with("kv_bytes_moved", 123_456_789_012.0)
                .with("goodput_rps", 0.1 + 0.2),
        };
        let rows = vec![row(0.5, 7, "pd", 111.758), row(0.5, 7, "adaptive[a=1]", 47.03)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.csv");
        std::fs::write(&path, to_csv(&rows).unwrap()).unwrap();
        let back = read_csv(&path).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!((a.rate_per_s, a.seed), (b.rate_per_s, b.seed));
            assert!(b.summary.get("tpot_p99_ms").unwrap().is_nan());
            assert_eq!(b.summary.get("kv_bytes_moved"), Some(123_456_789_012.0));
            let x = a.summary.clone().with("tpot_p99_ms", 0.0);
            let y = b.summary.clone().with("tpot_p99_ms", 0.0);
            // Floats round-trip exactly (shortest representation), 0.1 + 0.2 included.
            assert_eq!(x, y);
        }
        // A foreign CSV and a broken row are refused naming the file (and the line).
        std::fs::write(&path, "rate,seed\n1,2\n").unwrap();
        assert!(read_csv(&path).unwrap_err().to_string().contains("re-run the sweep"));
        let mut text = String::from_utf8(to_csv(&rows).unwrap()).unwrap();
        text = text.replacen("0.5,7,pd", "fast,7,pd", 1);
        std::fs::write(&path, text).unwrap();
        let e = read_csv(&path).unwrap_err().to_string();
        // The file, line 2 (`path:2:`) and the bad field.
        assert!(e.contains("sweep.csv:2: rate_per_s `fast`"), "{e}");
    }

    #[test]
    fn crossings_where_both_policies_miss_the_attainment_target_are_marked() {
        // TTFT p50: a below b at 1 and 2/s, above from 4/s. Attainment at 4/s: a 0.5, b 0.2 in
        // the first sweep (both saturated), b 0.95 in the second (a ranking).
        let rates = [1.0, 2.0, 4.0];
        let rows_with = |b_at_4: f64| {
            let mut rows = Vec::new();
            for (policy, ttft, att) in [
                ("a", [10.0, 20.0, 900.0], [1.0, 1.0, 0.5]),
                ("b", [30.0, 40.0, 800.0], [1.0, 1.0, b_at_4]),
            ] {
                for k in 0..3 {
                    rows.push(SweepRow {
                        rate_per_s: rates[k],
                        seed: 1,
                        summary: SummaryRow::zeros(policy, &crate::metrics::DEFAULT_PERCENTILES)
                            .with("slo_attainment", att[k])
                            .with("ttft_turn2plus_p50_ms", ttft[k]),
                    });
                }
            }
            rows
        };
        let metric = ["ttft_turn2plus_p50_ms".to_string()];
        for (b_at_4, saturated) in [(0.2, true), (0.95, false)] {
            let rows = rows_with(b_at_4);
            let mut curves = analyse(&rows, &rates, &metric);
            assert_eq!(curves[0].crossings.len(), 1);
            mark_saturated(&mut curves, &rows, &rates, 0.9);
            assert_eq!(curves[0].crossings[0].both_saturated, saturated, "b at 4/s: {b_at_4}");
            assert_eq!(
                curves[0]
                    .table(&rates)
                    .contains("both miss the SLO-attainment target at 4/s"),
                saturated
            );
            let csv = String::from_utf8(crossovers_csv(&curves[0].crossings).unwrap()).unwrap();
            assert!(csv.lines().next().unwrap().ends_with(",both_saturated"), "{csv}");
            assert!(csv.lines().nth(1).unwrap().ends_with(&format!(",{saturated}")), "{csv}");
        }
    }

    #[test]
    fn goodput_is_where_slo_attainment_first_falls_below_the_target() {
        let rates = [1.0, 2.0, 4.0];
        let mut rows = Vec::new();
        // (policy, attainment per rate, seed 1), then seed 2 for `a` to check the seed mean.
        for (policy, att, seed) in [
            ("a", [1.0, 0.96, 0.5], 1),
            ("a", [1.0, 0.94, 0.5], 2),
            ("b", [0.99, 0.95, 0.91], 1),
            ("c", [0.8, 0.9, 1.0], 1),
            ("d", [0.95, 0.9, 0.2], 1),
        ] {
            for (r, a) in rates.iter().zip(att) {
                rows.push(SweepRow {
                    rate_per_s: *r,
                    seed,
                    summary: SummaryRow::zeros(policy, &crate::metrics::DEFAULT_PERCENTILES).with("slo_attainment", a),
                });
            }
        }
        let g = goodput(&rows, &rates, 0.9, &[("a".into(), 4), ("b".into(), 2)]);
        // a: mean 1.0, 0.95, 0.5 → crosses 0.9 between 2 and 4 at 2 + (0.05 / 0.45) × 2.
        assert_eq!(g[0].bound, GoodputBound::Interpolated);
        assert!((g[0].goodput_conversations_per_s - (2.0 + 0.05 / 0.45 * 2.0)).abs() < 1e-12);
        assert!((g[0].goodput_per_gpu - g[0].goodput_conversations_per_s / 4.0).abs() < 1e-12);
        // b never misses: at least the highest rate; 2 GPUs.
        assert_eq!(
            (g[1].bound, g[1].goodput_conversations_per_s, g[1].goodput_per_gpu),
            (GoodputBound::AtLeastMaxRate, 4.0, 2.0)
        );
        // c misses at the lowest rate (a later recovery does not count).
        assert_eq!(g[2].bound, GoodputBound::BelowMinRate);
        assert!(g[2].goodput_conversations_per_s.is_nan());
        // d: exactly at the target counts as meeting it; then 0.2 at 4/s.
        assert!((g[3].goodput_conversations_per_s - (2.0 + 0.0 / 0.7 * 2.0)).abs() < 1e-12);
        assert_eq!(g[3].gpus, 1);
        let t = goodput_table(&g, &rates);
        assert!(
            t.contains(">= 4.00") && t.contains("< 1.00") && t.contains(">= 90%"),
            "{t}"
        );
    }
}

/// One slice of a sharded sweep: the grid points `k` (in grid order, rate then seed) with
/// `k mod count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This slice, `0 ≤ index < count`.
    pub index: usize,
    /// Number of slices.
    pub count: usize,
}

impl Shard {
    /// Parses `I/N` (I from 0 to N − 1; Slurm's `SLURM_ARRAY_TASK_ID` and Kubernetes'
    /// `JOB_COMPLETION_INDEX` count from 0).
    ///
    /// # Errors
    /// Not of the form `I/N`, N = 0, or I ≥ N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}` is not a shard: give I/N with 0 ≤ I < N, e.g. 0/4 for the first of four");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether grid point `k` belongs to this slice.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

/// `shard.json` of a shard directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// The sweep's name (file stem).
    pub sweep: String,
    /// This shard's index.
    pub shard: usize,
    /// Number of shards.
    pub of: usize,
    /// Points of the whole grid.
    pub grid_points: usize,
    /// Points this shard ran.
    pub points: usize,
    /// Fingerprint of the sweep and its resolved scenario (FNV-1a of both TOMLs, scenario path
    /// left out): shards of one sweep agree on it.
    pub fingerprint: String,
}

/// A shard directory as read back.
pub struct ShardDir {
    /// The directory.
    pub dir: PathBuf,
    /// Its `shard.json`.
    pub info: ShardInfo,
    /// Its `sweep.csv` rows.
    pub rows: Vec<SweepRow>,
}

impl LoadedSweep {
    /// The grid's points `(rate, seed)` in grid order (rate, then seed).
    pub fn grid(&self) -> Vec<(f64, u64)> {
        self.spec
            .rates_per_s
            .iter()
            .flat_map(|&r| self.spec.seeds.iter().map(move |&s| (r, s)))
            .collect()
    }

    /// The resolved sweep as TOML for a file in directory `dir` (its scenario path relative to
    /// `dir`, so it re-runs as it is).
    ///
    /// # Errors
    /// Serialisation errors.
    pub fn resolved_toml_in(&self, dir: &Path) -> Result<String, toml::ser::Error> {
        let mut spec = self.spec.clone();
        spec.scenario = crate::scenario::relative_path(&self.scenario_path, dir);
        toml::to_string(&spec)
    }

    /// Fingerprint of the grid and the resolved scenario (no paths): equal for shards of one sweep.
    ///
    /// # Errors
    /// Serialisation errors.
    pub fn fingerprint(&self) -> Result<String, toml::ser::Error> {
        let mut spec = self.spec.clone();
        spec.scenario = PathBuf::new();
        let mut sc = self.scenario.resolved.clone();
        sc.calibration = PathBuf::new();
        sc.workload.trace = sc.workload.trace.as_ref().map(|_| PathBuf::new());
        let text = format!("{}\n{}", toml::to_string(&spec)?, toml::to_string(&sc)?);
        Ok(format!("{:016x}", crate::sim::fnv1a(text.as_bytes())))
    }
}

/// Reads a shard directory written by `ppdsim sweep --shard I/N`.
///
/// # Errors
/// A directory without `shard.json` or with unreadable files, naming them.
pub fn read_shard(dir: &Path) -> InputResult<ShardDir> {
    let info_path = dir.join("shard.json");
    if !info_path.is_file() {
        return Err(InputError::file(
            dir,
            "holds no shard.json: not a directory written by `ppdsim sweep --shard I/N`",
        ));
    }
    let text =
        std::fs::read_to_string(&info_path).map_err(|e| InputError::file(&info_path, format!("cannot read: {e}")))?;
    let info: ShardInfo = serde_json::from_str(&text)
        .map_err(|e| InputError::file(&info_path, format!("not a shard description: {e}")))?;
    let rows = read_csv(&dir.join("sweep.csv"))?;
    Ok(ShardDir {
        dir: dir.to_path_buf(),
        info,
        rows,
    })
}

/// Checks that `shards` are the N slices of one sweep, each once, and interleaves their rows back
/// into grid order; returns the sweep (loaded from the first shard's `sweep.resolved.toml`) and
/// the rows an unsharded run gives.
///
/// # Errors
/// Shards of different sweeps or shard counts, a missing or duplicate shard, or rows that do not
/// match the grid, naming the directories.
pub fn merge_shards(shards: &[ShardDir]) -> InputResult<(LoadedSweep, Vec<SweepRow>)> {
    let first = &shards[0];
    let names = |v: &[&ShardDir]| {
        v.iter()
            .map(|s| s.dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for s in shards {
        if s.info.of != first.info.of
            || s.info.fingerprint != first.info.fingerprint
            || s.info.sweep != first.info.sweep
        {
            return Err(InputError::file(
                &s.dir,
                format!(
                    "is shard {}/{} of sweep `{}` ({}), but {} is shard {}/{} of sweep `{}` ({}): merge the shards of one sweep",
                    s.info.shard, s.info.of, s.info.sweep, s.info.fingerprint,
                    first.dir.display(), first.info.shard, first.info.of, first.info.sweep, first.info.fingerprint
                ),
            ));
        }
    }
    let n = first.info.of;
    let mut by_index: Vec<Vec<&ShardDir>> = vec![Vec::new(); n];
    for s in shards {
        by_index[s.info.shard].push(s);
    }
    if let Some(i) = by_index.iter().position(|v| v.len() > 1) {
        return Err(InputError {
            location: names(&by_index[i]),
            message: format!("shard {i}/{n} is given more than once; give each shard's directory once"),
        });
    }
    let missing: Vec<String> = (0..n)
        .filter(|&i| by_index[i].is_empty())
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(InputError {
            location: names(&shards.iter().collect::<Vec<_>>()),
            message: format!(
                "shards {} are missing: run `ppdsim sweep FILE --shard I/N` for each and give all {n} directories",
                missing.join(", ")
            ),
        });
    }
    let sw = LoadedSweep::load(&first.dir.join("sweep.resolved.toml"))?;
    if sw
        .fingerprint()
        .map_err(|e| InputError::file(&first.dir, e.to_string()))?
        != first.info.fingerprint
    {
        return Err(InputError::file(
            &first.dir,
            "its sweep.resolved.toml (or the scenario it names) changed since the shard ran: re-run the shards",
        ));
    }
    let grid = sw.grid();
    let per_point = sw.deployments().len();
    let mut cursors: Vec<std::slice::Iter<SweepRow>> = by_index.iter().map(|v| v[0].rows.iter()).collect();
    let mut rows = Vec::with_capacity(grid.len() * per_point);
    for (k, &(rate, seed)) in grid.iter().enumerate() {
        for _ in 0..per_point {
            let row = cursors[k % n].next().filter(|r| r.rate_per_s == rate && r.seed == seed).ok_or_else(|| {
                InputError::file(
                    &by_index[k % n][0].dir.join("sweep.csv"),
                    format!("has no row for grid point {k} (rate {rate}/s, seed {seed}): the shard is incomplete or from another grid; re-run it"),
                )
            })?;
            rows.push(row.clone());
        }
    }
    if let Some(i) = (0..n).find(|&i| cursors[i].next().is_some()) {
        return Err(InputError::file(
            &by_index[i][0].dir.join("sweep.csv"),
            "holds more rows than its slice of the grid: it is from another grid; re-run it",
        ));
    }
    Ok((sw, rows))
}

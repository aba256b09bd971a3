//! Routers: where each turn's prefill runs.
//!
//! A router (the routing policy) is declared apart from the clusters it runs on (see
//! [`crate::cluster`]). The simulator pins each conversation to an R, D or pD instance (a hash of
//! the conversation, as vllm-ppd's proxy does) and the pinned instance's role fixes what a turn
//! may do: on an R it is served whole, on a D it is always **split** (prefill on P, KV transfer,
//! decode on D). Only on a pD does the router choose, per turn: **split**, or **local**
//! (append-prefill and decode on the pD, reusing its prefix cache). So routers stay small and
//! testable on a hand-built [`RouteRequest`].
//!
//! * [`RouterConfig::Pd`]: always split.
//! * [`RouterConfig::Ppd`]: turn 1 split, later turns local — vllm-ppd's proxy (on a cluster
//!   with D and pD pools, its "mixed" configurations).
//! * [`RouterConfig::Replication`]: always local, turn 1 included (a pD then prefills turn 1
//!   itself); on a cluster of R pools, replication.
//! * [`RouterConfig::Adaptive`]: turn 1 split; later turns local iff the tokens the pD must
//!   compute `m < max_local_append_tokens` and the cache rate `r = L/(L+m) > min_cache_rate`
//!   (the static rules of Dynamo — m < 2048, r > 0.3 — and vllm-ppd — new input < 512 — are
//!   instances of it). With [`Hysteresis`], each pD also has a load mode: when the uncached
//!   prompt tokens routed local to it whose first token is not out yet (its *local prefill
//!   backlog*) reach `high_backlog_tokens`, its later turns are all split until the backlog falls
//!   to `low_backlog_tokens` — two switching levels, so a backlog hovering near one level does
//!   not flip the route turn by turn.
//! * [`RouterConfig::Predictive`]: turn 1 split; each later turn goes where the calibrated cost
//!   model predicts the lower cost — its TTFT plus `stall_weight` × the stall it adds to every
//!   decode already running on the pD — given the instances' current queues, running batches,
//!   prefix caches and KV link (the simulator computes both predictions: see
//!   [`RouteRequest::predicted_costs_ms`]).

use crate::cluster::Shape;
use crate::metrics::RouteKind;
use serde::{Deserialize, Serialize};

/// A router as written in a scenario's `[[router]]` table. Every kind also takes `name`
/// (display name, default the kind) and `clusters` (names of the `[[cluster]]`s it runs on,
/// default all).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RouterConfig {
    /// PD disaggregation: every turn prefilled on P.
    Pd {
        /// Display name (default `pd`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Clusters it runs on (default all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        clusters: Vec<String>,
    },
    /// PPD (vllm-ppd's proxy): turn 1 on P, turns ≥ 2 appended on the pD that holds the
    /// conversation.
    Ppd {
        /// Display name (default `ppd`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Clusters it runs on (default all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        clusters: Vec<String>,
    },
    /// Every turn where the conversation is pinned: replication on R pools.
    Replication {
        /// Display name (default `replication`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Clusters it runs on (default all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        clusters: Vec<String>,
    },
    /// Static threshold rule on `m` and `r` for turns ≥ 2.
    Adaptive {
        /// Display name (default `adaptive`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Clusters it runs on (default all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        clusters: Vec<String>,
        /// Serve locally only if the tokens to compute on the pD are fewer than this \[tokens\].
        max_local_append_tokens: u32,
        /// Serve locally only if the cache rate `L/(L+m)` exceeds this (0–1).
        #[serde(default)]
        min_cache_rate: f64,
        /// Load-adaptive switching levels on the pD's local prefill backlog (none: the static
        /// rule).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hysteresis: Option<Hysteresis>,
    },
    /// Turns ≥ 2 where the cost model predicts the lower cost, TTFT + `stall_weight` × the
    /// stall added to the pD's running decodes (request-milliseconds), from the live state.
    Predictive {
        /// Display name (default `predictive`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Clusters it runs on (default all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        clusters: Vec<String>,
        /// Weight of the stall a route adds to each running decode, against the turn's own TTFT
        /// (1: every request-millisecond counts alike; 0: TTFT alone) \[dimensionless\].
        #[serde(default = "default_stall_weight")]
        stall_weight: f64,
    },
}

fn default_stall_weight() -> f64 {
    1.0
}

/// Two switching levels on a pD instance's *local prefill backlog*: the prompt tokens not in its
/// prefix cache of the turns routed local to it whose first token is not out yet \[tokens\].
/// A pD enters *remote mode* (turns ≥ 2 split, whatever the static rule says) when a turn arrives
/// with the backlog ≥ `high_backlog_tokens`, and leaves it when a turn arrives with the backlog ≤
/// `low_backlog_tokens`. The gap between the levels is the hysteresis: none of Dynamo's, llm-d's
/// or vllm-ppd's static rules has one, so a backlog near their threshold flips the route turn by
/// turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hysteresis {
    /// Enter remote mode at this backlog or above \[tokens\].
    pub high_backlog_tokens: u64,
    /// Leave remote mode at this backlog or below \[tokens\]; < `high_backlog_tokens`.
    pub low_backlog_tokens: u64,
}

impl RouterConfig {
    /// The kind as written (`pd`, `ppd`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            RouterConfig::Pd { .. } => "pd",
            RouterConfig::Ppd { .. } => "ppd",
            RouterConfig::Replication { .. } => "replication",
            RouterConfig::Adaptive { .. } => "adaptive",
            RouterConfig::Predictive { .. } => "predictive",
        }
    }

    /// Display name used in outputs: `name`, else the kind.
    pub fn name(&self) -> String {
        self.name_field().clone().unwrap_or_else(|| self.kind().into())
    }

    fn name_field(&self) -> &Option<String> {
        match self {
            RouterConfig::Pd { name, .. }
            | RouterConfig::Ppd { name, .. }
            | RouterConfig::Replication { name, .. }
            | RouterConfig::Adaptive { name, .. }
            | RouterConfig::Predictive { name, .. } => name,
        }
    }

    /// The clusters it runs on (empty: all).
    pub fn clusters(&self) -> &[String] {
        match self {
            RouterConfig::Pd { clusters, .. }
            | RouterConfig::Ppd { clusters, .. }
            | RouterConfig::Replication { clusters, .. }
            | RouterConfig::Adaptive { clusters, .. }
            | RouterConfig::Predictive { clusters, .. } => clusters,
        }
    }

    /// False for a router that never splits on a pD (replication): it needs no P pool there.
    pub fn may_split(&self) -> bool {
        !matches!(self, RouterConfig::Replication { .. })
    }

    /// The weight of the decodes' stall when the router routes on predicted costs (the
    /// simulator then fills [`RouteRequest::predicted_costs_ms`]); `None` for the other rules.
    pub fn stall_weight(&self) -> Option<f64> {
        match *self {
            RouterConfig::Predictive { stall_weight, .. } => Some(stall_weight),
            _ => None,
        }
    }

    /// Checks the router's own keys; the message names the offending key and the fix.
    ///
    /// # Errors
    /// A message for an out-of-range `min_cache_rate` or `stall_weight`, or hysteresis levels
    /// not ordered low < high.
    pub fn validate(&self) -> Result<(), String> {
        if let RouterConfig::Predictive { stall_weight, .. } = self {
            if !(stall_weight.is_finite() && *stall_weight >= 0.0 && *stall_weight <= 1e6) {
                return Err(format!(
                    "router `{}`: stall_weight must be a number in [0, 1e6] (1 weighs a decode's stall like the turn's TTFT), got {stall_weight}",
                    self.name()
                ));
            }
        }
        if let RouterConfig::Adaptive {
            min_cache_rate,
            hysteresis,
            ..
        } = self
        {
            if !(0.0..1.0).contains(min_cache_rate) {
                return Err(format!(
                    "router `{}`: min_cache_rate must be in [0, 1), got {min_cache_rate}",
                    self.name()
                ));
            }
            if let Some(h) = hysteresis {
                if h.low_backlog_tokens >= h.high_backlog_tokens {
                    return Err(format!(
                        "router `{}`: hysteresis.low_backlog_tokens ({}) must be below hysteresis.high_backlog_tokens ({}); equal levels are the static rule without hysteresis",
                        self.name(),
                        h.low_backlog_tokens,
                        h.high_backlog_tokens
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that the router has a route on every instance of a cluster of `shape` (the
    /// cluster's own check, [`Shape::check`], included).
    ///
    /// # Errors
    /// A message naming what is missing: a pD pool needs a P pool unless the router never
    /// splits (turn 1 goes via P).
    pub fn check_on(&self, shape: &Shape) -> Result<(), String> {
        shape.check()?;
        if shape.direct_decode > 0 && shape.prefill == 0 && self.may_split() {
            return Err(format!(
                "router `{}` sends turns via P but the cluster `{}` has no prefill pool: add one, or run kind = \"replication\" there",
                self.name(),
                shape.name()
            ));
        }
        Ok(())
    }

    /// Builds the routing rule.
    pub fn build(&self) -> Box<dyn Policy> {
        match *self {
            RouterConfig::Pd { .. } => Box::new(AlwaysSplit),
            RouterConfig::Ppd { .. } => Box::new(SplitFirstTurn),
            RouterConfig::Replication { .. } => Box::new(AlwaysLocal),
            RouterConfig::Predictive { .. } => Box::new(CheaperPredicted),
            RouterConfig::Adaptive {
                max_local_append_tokens,
                min_cache_rate,
                hysteresis,
                ..
            } => {
                let rule = StaticThreshold {
                    max_local_append_tokens,
                    min_cache_rate,
                };
                match hysteresis {
                    None => Box::new(rule),
                    Some(levels) => Box::new(Hysteretic {
                        rule,
                        levels,
                        remote: Default::default(),
                        stats: Default::default(),
                    }),
                }
            }
        }
    }
}

/// What the router knows about an arriving turn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteRequest {
    /// Turn number (1-based).
    pub turn: usize,
    /// Prompt tokens `L + u` \[tokens\].
    pub num_prompt_tokens: u32,
    /// Prompt tokens cached on the conversation's D/R instance right now \[tokens\].
    pub num_cached_on_decode: u32,
    /// Index of the conversation's decode instance (the simulator numbers P instances first).
    pub decode_instance: usize,
    /// Local prefill backlog of that instance: uncached prompt tokens of the turns routed local
    /// to it whose first token is not out yet \[tokens\].
    pub decode_backlog_tokens: u64,
    /// When the turn arrives \[ms since the simulation start\] (for mode statistics only).
    pub now_ms: f64,
    /// For a [`RouterConfig::Predictive`] router and a turn ≥ 2: the predicted (local, remote)
    /// cost \[ms\], each the route's TTFT plus `stall_weight` × running decodes × the stall it
    /// adds to each (request-milliseconds), from the cost model and the instances' live state;
    /// `None` otherwise.
    pub predicted_costs_ms: Option<(f64, f64)>,
}

/// A routing rule.
pub trait Policy: Send {
    /// Split or local for this turn. Must not depend on anything but its arguments and the
    /// policy's own state (determinism).
    fn route(&mut self, req: &RouteRequest) -> RouteKind;

    /// Per decode instance that ever entered a load mode: `(instance, entries into remote mode,
    /// time in it [ms] up to end_ms)`. Empty for rules without modes.
    fn mode_stats(&self, _end_ms: f64) -> Vec<(usize, u64, f64)> {
        Vec::new()
    }
}

struct AlwaysSplit;
impl Policy for AlwaysSplit {
    fn route(&mut self, _: &RouteRequest) -> RouteKind {
        RouteKind::Split
    }
}

struct AlwaysLocal;
impl Policy for AlwaysLocal {
    fn route(&mut self, _: &RouteRequest) -> RouteKind {
        RouteKind::Local
    }
}

/// Turn 1 split; later turns on the route with the lower predicted cost (local on a tie or
/// without a prediction).
struct CheaperPredicted;
impl Policy for CheaperPredicted {
    fn route(&mut self, req: &RouteRequest) -> RouteKind {
        match (req.turn, req.predicted_costs_ms) {
            (1, _) => RouteKind::Split,
            (_, Some((local, remote))) if remote < local => RouteKind::Split,
            _ => RouteKind::Local,
        }
    }
}

struct SplitFirstTurn;
impl Policy for SplitFirstTurn {
    fn route(&mut self, req: &RouteRequest) -> RouteKind {
        if req.turn == 1 {
            RouteKind::Split
        } else {
            RouteKind::Local
        }
    }
}

/// The static rule: local iff `m < max_local_append_tokens` and `r > min_cache_rate`.
struct StaticThreshold {
    max_local_append_tokens: u32,
    min_cache_rate: f64,
}

impl Policy for StaticThreshold {
    fn route(&mut self, req: &RouteRequest) -> RouteKind {
        if req.turn == 1 {
            return RouteKind::Split;
        }
        let cached = req.num_cached_on_decode.min(req.num_prompt_tokens);
        let m = req.num_prompt_tokens - cached;
        let r = cached as f64 / req.num_prompt_tokens.max(1) as f64;
        if m < self.max_local_append_tokens && r > self.min_cache_rate {
            RouteKind::Local
        } else {
            RouteKind::Split
        }
    }
}

/// [`StaticThreshold`] plus a remote mode per D instance, entered at the high backlog level and
/// left at the low one ([`Hysteresis`]).
struct Hysteretic {
    rule: StaticThreshold,
    levels: Hysteresis,
    /// Decode instances in remote mode (ordered: deterministic).
    remote: std::collections::BTreeSet<usize>,
    /// Per instance: (entries into remote mode, ms spent there in closed intervals, when the
    /// open one began).
    stats: std::collections::BTreeMap<usize, (u64, f64, Option<f64>)>,
}

impl Policy for Hysteretic {
    fn route(&mut self, req: &RouteRequest) -> RouteKind {
        if req.turn == 1 {
            return RouteKind::Split;
        }
        let backlog = req.decode_backlog_tokens;
        let d = req.decode_instance;
        if backlog >= self.levels.high_backlog_tokens {
            if self.remote.insert(d) {
                let e = self.stats.entry(d).or_insert((0, 0.0, None));
                e.0 += 1;
                e.2 = Some(req.now_ms);
            }
        } else if backlog <= self.levels.low_backlog_tokens && self.remote.remove(&d) {
            let e = self.stats.get_mut(&d).expect("entered before leaving");
            e.1 += req.now_ms - e.2.take().expect("in remote mode");
        }
        if self.remote.contains(&req.decode_instance) {
            RouteKind::Split
        } else {
            self.rule.route(req)
        }
    }

    fn mode_stats(&self, end_ms: f64) -> Vec<(usize, u64, f64)> {
        self.stats
            .iter()
            .map(|(&d, &(n, ms, open))| (d, n, ms + open.map_or(0.0, |t| end_ms - t)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(turn: usize, prompt: u32, cached: u32) -> RouteRequest {
        RouteRequest {
            turn,
            num_prompt_tokens: prompt,
            num_cached_on_decode: cached,
            decode_instance: 1,
            decode_backlog_tokens: 0,
            now_ms: 0.0,
            predicted_costs_ms: None,
        }
    }

    fn router(text: &str) -> RouterConfig {
        toml::from_str(text).expect("router parses")
    }

    #[test]
    fn fixed_routers_route_as_documented() {
        let pd = router(r#"kind = "pd""#);
        let ppd = router(r#"kind = "ppd""#);
        let rep = router(r#"kind = "replication""#);
        assert_eq!(pd.build().route(&req(2, 1000, 900)), RouteKind::Split);
        assert_eq!(ppd.build().route(&req(1, 100, 0)), RouteKind::Split);
        assert_eq!(ppd.build().route(&req(2, 1000, 0)), RouteKind::Local);
        assert_eq!(rep.build().route(&req(1, 100, 0)), RouteKind::Local);
        assert_eq!(
            (pd.name(), rep.may_split(), ppd.may_split()),
            ("pd".into(), false, true)
        );
        // A pD pool needs P unless the router never splits; a D pool always needs P.
        let pd_only = Shape::parse("2pD").unwrap();
        assert!(rep.check_on(&pd_only).is_ok());
        let e = ppd.check_on(&pd_only).unwrap_err();
        assert!(e.contains("no prefill pool"), "{e}");
        assert!(rep.check_on(&Shape::parse("1R_2D").unwrap()).is_err());
        let named = router("kind = \"pd\"\nname = \"x\"\nclusters = [\"2P_2D\"]");
        assert_eq!(
            (named.name(), named.clusters()),
            ("x".into(), &["2P_2D".to_string()][..])
        );
        assert!(toml::from_str::<RouterConfig>("kind = \"pd\"\nprefill_instances = 2").is_err());
    }

    #[test]
    fn predictive_takes_the_cheaper_prediction() {
        let cfg = router(r#"kind = "predictive""#);
        assert_eq!((cfg.name(), cfg.stall_weight()), ("predictive".into(), Some(1.0)));
        let mut p = cfg.build();
        let with = |turn, costs| RouteRequest {
            predicted_costs_ms: costs,
            ..req(turn, 1000, 900)
        };
        assert_eq!(p.route(&with(1, Some((1.0, 9.0)))), RouteKind::Split);
        assert_eq!(p.route(&with(2, Some((30.0, 29.9)))), RouteKind::Split);
        assert_eq!(p.route(&with(2, Some((30.0, 30.0)))), RouteKind::Local);
        assert_eq!(p.route(&with(2, None)), RouteKind::Local);
        let bad = router("kind = \"predictive\"\nstall_weight = -1.0");
        assert!(bad.validate().unwrap_err().contains("stall_weight"));
    }

    #[test]
    fn static_threshold_uses_m_and_r() {
        let mut p = RouterConfig::Adaptive {
            name: None,
            clusters: vec![],
            max_local_append_tokens: 512,
            min_cache_rate: 0.3,
            hysteresis: None,
        }
        .build();
        assert_eq!(p.route(&req(1, 10, 0)), RouteKind::Split);
        // m = 100 < 512, r = 0.9 > 0.3
        assert_eq!(p.route(&req(2, 1000, 900)), RouteKind::Local);
        // m = 512 is not < 512
        assert_eq!(p.route(&req(2, 1000, 488)), RouteKind::Split);
        // m = 100 but r = 100/200 = 0.5 ok; m=150, r=50/200=0.25 <= 0.3
        assert_eq!(p.route(&req(2, 200, 100)), RouteKind::Local);
        assert_eq!(p.route(&req(2, 200, 50)), RouteKind::Split);
    }

    #[test]
    fn validate_rejects_bad_keys() {
        assert!(RouterConfig::Adaptive {
            name: None,
            clusters: vec![],
            max_local_append_tokens: 1,
            min_cache_rate: 1.5,
            hysteresis: None,
        }
        .validate()
        .is_err());
        let levels = |low, high| RouterConfig::Adaptive {
            name: None,
            clusters: vec![],
            max_local_append_tokens: 1,
            min_cache_rate: 0.0,
            hysteresis: Some(Hysteresis {
                high_backlog_tokens: high,
                low_backlog_tokens: low,
            }),
        };
        assert!(levels(1024, 4096).validate().is_ok());
        let e = levels(4096, 4096).validate().unwrap_err();
        assert!(e.contains("hysteresis.low_backlog_tokens (4096) must be below"), "{e}");
        assert!(levels(5000, 4096).validate().is_err());
    }

    #[test]
    fn hysteresis_switches_at_high_and_back_at_low_per_instance() {
        let mut p = RouterConfig::Adaptive {
            name: None,
            clusters: vec![],
            max_local_append_tokens: 512,
            min_cache_rate: 0.3,
            hysteresis: Some(Hysteresis {
                high_backlog_tokens: 4096,
                low_backlog_tokens: 1024,
            }),
        }
        .build();
        // m = 100, r = 0.9: the static rule alone says local every time.
        let at = |inst: usize, backlog: u64| RouteRequest {
            decode_instance: inst,
            decode_backlog_tokens: backlog,
            ..req(2, 1000, 900)
        };
        // One turn a second (now_ms = 1000 × index).
        let routes: Vec<RouteKind> = [0, 5000, 3000, 1500, 1024, 3000, 4095, 4096]
            .iter()
            .enumerate()
            .map(|(k, &b)| {
                p.route(&RouteRequest {
                    now_ms: 1000.0 * k as f64,
                    ..at(1, b)
                })
            })
            .collect();
        use RouteKind::{Local as L, Split as S};
        // 5000 ≥ high: remote; 3000 and 1500 are between the levels: stay remote; 1024 ≤ low:
        // local again; 3000 and 4095 < high: stay local; 4096: remote.
        assert_eq!(routes, [L, S, S, S, L, L, L, S]);
        // Instance 1 entered remote mode twice: at 1 s (left at 4 s: 3 s) and at 7 s (still in it
        // at the end, 10 s: 3 s more).
        assert_eq!(p.mode_stats(10_000.0), [(1, 2, 6000.0)]);
        // Instance 2 has its own mode: local at 3000 while instance 1 is remote.
        assert_eq!(p.route(&at(2, 3000)), L);
        assert_eq!(p.route(&at(1, 3000)), S);
        // Turn 1 is split and the static rule still applies in local mode (m = 600 ≥ 512).
        assert_eq!(p.route(&RouteRequest { turn: 1, ..at(2, 0) }), S);
        assert_eq!(
            p.route(&RouteRequest {
                num_cached_on_decode: 400,
                ..at(2, 0)
            }),
            S
        );
    }
}

//! Clusters as pools of instances, declared apart from the routers that run on them.
//!
//! A pool has a **role** — `prefill` (P), `decode` (D), `direct-decode` (pD: a D that also runs
//! append-prefills) or `replica` (R: both phases) — a count, and optionally its own `gpu`, `tp`
//! and `calibration`. The roles fix what a route may do, as vllm-ppd's proxy does it: a
//! conversation is pinned by hash over the R, D and pD slots together; on an R it is served
//! whole; on a D every turn is prefilled on P and its KV shipped; on a pD the router decides per
//! turn (PPD: turn 1 via P, later turns direct). A cluster's **shape** is its counts per role,
//! written as vllm-ppd names its configurations (`1R_1P_2D`, `2P_1D_1pD`, `4R`; see
//! [`Shape::parse`]).
//!
//! Instances are numbered P first (pools in the order written), then R, D and pD pools.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a pool's instances do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolRole {
    /// P: prefill only; ships the KV cache to a D or pD.
    Prefill,
    /// R: a whole vLLM engine serving its conversations' every turn (no P involved).
    Replica,
    /// D: decode only; every turn of its conversations is prefilled on P.
    Decode,
    /// pD: decode, and append-prefills of turns ≥ 2 when the router sends them direct.
    DirectDecode,
}

impl PoolRole {
    /// The roles in instance order (P, R, D, pD).
    pub const ORDER: [PoolRole; 4] = [
        PoolRole::Prefill,
        PoolRole::Replica,
        PoolRole::Decode,
        PoolRole::DirectDecode,
    ];

    /// vllm-ppd's letter for the role in configuration names (`P`, `R`, `D`, `pD`).
    pub fn letter(self) -> &'static str {
        match self {
            PoolRole::Prefill => "P",
            PoolRole::Replica => "R",
            PoolRole::Decode => "D",
            PoolRole::DirectDecode => "pD",
        }
    }
}

/// A cluster's instance counts per role \[instances\].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Shape {
    /// `P`: prefill.
    pub prefill: u32,
    /// `R`: replica (prefill and decode).
    pub replica: u32,
    /// `D`: decode (every turn via P).
    pub decode: u32,
    /// `pD`: direct decode (the router may send turns ≥ 2 there direct).
    pub direct_decode: u32,
}

impl Shape {
    /// Parses a vllm-ppd configuration name: counts of pools joined by `_` (`1P_2D_1pD`,
    /// `2R_1P_1pD`, `4R`); a role may repeat (its counts add). `None` for any other part or a
    /// count of 0.
    pub fn parse(name: &str) -> Option<Shape> {
        let mut n = Shape::default();
        for part in name.split('_') {
            let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
            let k: u32 = digits.parse().ok().filter(|&k| k > 0)?;
            let role = PoolRole::ORDER
                .into_iter()
                .find(|r| r.letter() == &part[digits.len()..])?;
            *n.count_mut(role) = n.count(role).checked_add(k)?;
        }
        Some(n)
    }

    /// The instances of `role`.
    pub fn count(&self, role: PoolRole) -> u32 {
        match role {
            PoolRole::Prefill => self.prefill,
            PoolRole::Replica => self.replica,
            PoolRole::Decode => self.decode,
            PoolRole::DirectDecode => self.direct_decode,
        }
    }

    fn count_mut(&mut self, role: PoolRole) -> &mut u32 {
        match role {
            PoolRole::Prefill => &mut self.prefill,
            PoolRole::Replica => &mut self.replica,
            PoolRole::Decode => &mut self.decode,
            PoolRole::DirectDecode => &mut self.direct_decode,
        }
    }

    /// The vllm-ppd name, roles in its order R, P, D, pD (`1R_1P_1D_1pD`, `2P_2pD`, `4R`).
    pub fn name(&self) -> String {
        [
            PoolRole::Replica,
            PoolRole::Prefill,
            PoolRole::Decode,
            PoolRole::DirectDecode,
        ]
        .into_iter()
        .filter(|&r| self.count(r) > 0)
        .map(|r| format!("{}{}", self.count(r), r.letter()))
        .collect::<Vec<_>>()
        .join("_")
    }

    /// Instances a conversation can be pinned to: R + D + pD.
    pub fn decode_side(&self) -> u32 {
        self.replica + self.decode + self.direct_decode
    }

    /// All instances \[instances\].
    pub fn total(&self) -> u64 {
        self.prefill as u64 + self.decode_side() as u64
    }

    /// The role of instance `i` (numbered P, R, D, pD).
    ///
    /// # Panics
    /// If `i` is not an instance of the cluster.
    pub fn role_of(&self, i: usize) -> PoolRole {
        let mut end = 0usize;
        for role in PoolRole::ORDER {
            end += self.count(role) as usize;
            if i < end {
                return role;
            }
        }
        panic!("instance {i} is outside a {}-instance cluster", self.total())
    }

    /// The cluster's own consistency: at least one instance a conversation can be pinned to, a P
    /// pool when there are D pools (their every turn goes via P), at most
    /// [`crate::scenario::limits::MAX_INSTANCES`] instances.
    ///
    /// # Errors
    /// A message saying what to add or change.
    pub fn check(&self) -> Result<(), String> {
        let max = crate::scenario::limits::MAX_INSTANCES;
        if self.total() > max as u64 {
            return Err(format!(
                "{} instances; at most {max} per cluster are supported",
                self.total()
            ));
        }
        if self.decode_side() == 0 {
            return Err(
                "no instance to pin conversations to: add a pool with role \"decode\", \"direct-decode\" or \"replica\""
                    .into(),
            );
        }
        if self.decode > 0 && self.prefill == 0 {
            return Err(format!(
                "{} decode (D) instances but no prefill pool: a D takes every turn via P; add a pool with role \"prefill\", or make them \"direct-decode\" or \"replica\"",
                self.decode
            ));
        }
        Ok(())
    }
}

/// One pool of a cluster, as written in `[[cluster.pool]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// `prefill`, `decode`, `direct-decode` or `replica`.
    pub role: PoolRole,
    /// Instances in the pool (≥ 1).
    pub count: u32,
    /// GPU name from the spec table (default: the scenario's `gpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// Tensor-parallel degree: GPUs per instance (default 1). Its model file must be for this
    /// degree (`ppdsim calibrate … --tp N`, or `--roofline-from REF --gpu G --tp N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp: Option<u32>,
    /// Model file for the pool's GPU and TP degree, relative to the scenario file (default: the
    /// scenario's `calibration`; required when `gpu` or `tp` differ from the scenario's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<PathBuf>,
    /// Engine time of the pool's instances to load a request's received KV, added to the step that
    /// first schedules it \[ms\] ([`crate::sim::SimConfig::kv_load_ms`]; only D and pD instances
    /// receive KV). Default: the scenario's `[kv_link] load_ms` when it sets one, else the pool's
    /// model file's `kv_transfer.load_ms` (the load is work of the pool's own GPU and host), else
    /// the scenario calibration's. Filled in by resolution, so `scenario.resolved.toml` states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_load_ms: Option<f64>,
}

impl PoolSpec {
    /// A pool of `count` instances of `role` on the scenario's GPU and model file.
    pub fn plain(role: PoolRole, count: u32) -> PoolSpec {
        PoolSpec {
            role,
            count,
            gpu: None,
            tp: None,
            calibration: None,
            kv_load_ms: None,
        }
    }
}

/// A cluster as written in `[[cluster]]`: a `shape` (`"2P_2pD"`, every pool on the scenario's
/// GPU and model file) or a list of `[[cluster.pool]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Name in outputs and in routers' `clusters` lists (default: the shape's name, `2P_2pD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// vllm-ppd configuration name (`1P_3D`, `2P_2pD`, `1R_1P_2D`, `4R`); exclusive with `pool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// The pools, each with a role, a count and optionally its own GPU, TP and model file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pool: Vec<PoolSpec>,
}

impl ClusterSpec {
    /// The pools in instance order (P, R, D, pD; pools of one role in the order written).
    ///
    /// # Errors
    /// A message (relative to the cluster's table) for both or neither of `shape` and `pool`,
    /// an unknown shape, or a pool of 0 instances.
    pub fn pools(&self) -> Result<Vec<PoolSpec>, String> {
        let mut pools = match (&self.shape, self.pool.is_empty()) {
            (Some(_), false) => {
                return Err("give either `shape` or `[[cluster.pool]]` tables, not both".into());
            }
            (None, true) => {
                return Err(
                    "no pools: give `shape = \"2P_2pD\"` (counts of P, D, pD, R joined by `_`) or `[[cluster.pool]]` tables with `role` and `count`"
                        .into(),
                );
            }
            (Some(s), true) => {
                let shape = Shape::parse(s).ok_or_else(|| {
                    format!(
                        "shape `{s}` is not a cluster shape: counts of pools joined by `_`, e.g. 1P_3D, 2P_1D_1pD, 1R_1P_2pD, 4R (P prefill, D decode, pD direct decode, R replica)"
                    )
                })?;
                PoolRole::ORDER
                    .into_iter()
                    .filter(|&r| shape.count(r) > 0)
                    .map(|r| PoolSpec::plain(r, shape.count(r)))
                    .collect()
            }
            (None, false) => self.pool.clone(),
        };
        if let Some(i) = self.pool.iter().position(|p| p.count == 0) {
            return Err(format!("pool[{i}].count is 0: a pool has at least one instance"));
        }
        pools.sort_by_key(|p| p.role);
        Ok(pools)
    }

    /// The counts per role.
    ///
    /// # Errors
    /// As [`ClusterSpec::pools`].
    pub fn shape(&self) -> Result<Shape, String> {
        let mut s = Shape::default();
        for p in self.pools()? {
            let c = s.count_mut(p.role);
            *c = c.checked_add(p.count).ok_or("more than 2^32 instances of one role")?;
        }
        Ok(s)
    }

    /// The display name: `name`, else the shape's name.
    ///
    /// # Errors
    /// As [`ClusterSpec::pools`].
    pub fn display_name(&self) -> Result<String, String> {
        match &self.name {
            Some(n) => Ok(n.clone()),
            None => Ok(self.shape()?.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_print_as_vllm_ppd_names() {
        for name in ["4R", "1P_3D", "1P_2D_1pD", "2P_2pD", "1R_1P_1D_1pD", "2R_1P_1pD"] {
            assert_eq!(Shape::parse(name).unwrap().name(), name);
        }
        let s = Shape::parse("1R_1P_2D").unwrap();
        assert_eq!(
            (
                s.replica,
                s.prefill,
                s.decode,
                s.direct_decode,
                s.decode_side(),
                s.total()
            ),
            (1, 1, 2, 0, 3, 4)
        );
        // P first, then R, D, pD.
        let roles: Vec<PoolRole> = (0..4).map(|i| s.role_of(i)).collect();
        assert_eq!(
            roles,
            [PoolRole::Prefill, PoolRole::Replica, PoolRole::Decode, PoolRole::Decode]
        );
        assert_eq!(Shape::parse("1P_1P_1D").unwrap().prefill, 2);
        for bad in ["2X", "P_1D", "0P_1D", "1P__1D", ""] {
            assert!(Shape::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn cluster_checks_name_what_is_missing() {
        assert!(Shape::parse("2P").unwrap().check().unwrap_err().contains("no instance"));
        assert!(Shape::parse("2D")
            .unwrap()
            .check()
            .unwrap_err()
            .contains("no prefill pool"));
        assert!(Shape::parse("2pD").unwrap().check().is_ok());
        assert!(Shape::parse("4096R_1P_1D")
            .unwrap()
            .check()
            .unwrap_err()
            .contains("4098"));
    }

    #[test]
    fn pools_come_in_instance_order_and_exclude_shape() {
        let c: ClusterSpec = toml::from_str(
            r#"
            [[pool]]
            role = "direct-decode"
            count = 2
            gpu = "h20"
            [[pool]]
            role = "prefill"
            count = 1
            "#,
        )
        .unwrap();
        let roles: Vec<_> = c.pools().unwrap().iter().map(|p| (p.role, p.count)).collect();
        assert_eq!(roles, [(PoolRole::Prefill, 1), (PoolRole::DirectDecode, 2)]);
        assert_eq!(c.display_name().unwrap(), "1P_2pD");
        let both = ClusterSpec {
            shape: Some("1P_1D".into()),
            ..c.clone()
        };
        assert!(both.pools().unwrap_err().contains("not both"));
        let zero = ClusterSpec {
            pool: vec![PoolSpec::plain(PoolRole::Replica, 0)],
            ..c
        };
        assert!(zero.pools().unwrap_err().contains("pool[0].count is 0"));
    }
}

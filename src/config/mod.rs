//! The validated configuration model (pure, no I/O).
//!
//! `IPAddressPool` and `L2Advertisement` objects (see [`crate::crd`]) are turned into
//! a [`Config`]: typed pools with parsed prefixes and typed advertisements with parsed
//! selectors. Invalid objects are reported as [`ConfigError`]s and left out; every
//! valid object is kept, so one typo never takes down service for everyone.
//!
//! The allocator ([`crate::allocator`]) consumes [`Pool`]s and the election
//! ([`crate::election`]) consumes [`L2Adv`]s.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::selector::{Labels, Selector};

/// A validated IP address pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// `metadata.name` of the IPAddressPool.
    pub name: String,
    /// `metadata.labels` (for `ipAddressPoolSelectors`).
    pub labels: Labels,
    /// Every address entry as a list of prefixes, in configured order. A range `a-b`
    /// is summarized into the minimal list of CIDRs covering exactly `a..=b`; host bits
    /// of a CIDR are masked (`10.0.0.5/24` becomes `10.0.0.0/24`, as MetalLB does).
    pub cidrs: Vec<IpNet>,
    /// `spec.autoAssign` (default true).
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`: skip IPv4 addresses ending in `.0` or `.255`.
    pub avoid_buggy_ips: bool,
    /// `spec.serviceAllocation`, if present.
    pub allocation: Option<ServiceAllocation>,
}

/// `spec.serviceAllocation` of a pool: which Services may use it, and its priority.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// Lower is preferred; 0 (unset) is used last.
    pub priority: i32,
    /// Explicit namespace names.
    pub namespaces: Vec<String>,
    /// Namespace label selectors (OR), unioned with `namespaces`.
    pub namespace_selectors: Vec<Selector>,
    /// Service label selectors (OR). A present-but-empty `serviceAllocation: {}` is
    /// represented as one selector that matches everything (MetalLB fix #2714).
    pub service_selectors: Vec<Selector>,
}

/// A validated L2Advertisement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L2Adv {
    /// `metadata.name`.
    pub name: String,
    /// `spec.ipAddressPools`: pools selected by name.
    pub ip_address_pools: Vec<String>,
    /// `spec.ipAddressPoolSelectors`: pools selected by label (OR).
    /// When both this and `ip_address_pools` are empty the ad applies to all pools.
    pub ip_address_pool_selectors: Vec<Selector>,
    /// `spec.nodeSelectors` (OR). Empty: all nodes.
    pub node_selectors: Vec<Selector>,
    /// `spec.interfaces`. Empty: all (non-excluded) interfaces.
    pub interfaces: Vec<String>,
    /// `spec.serviceSelectors` (OR). Empty: all Services.
    pub service_selectors: Vec<Selector>,
    /// `spec.preferredNodeSelectors`: (weight 1..=100, preference).
    pub preferred_node_selectors: Vec<(i32, Selector)>,
}

/// The whole validated configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Valid pools by name.
    pub pools: BTreeMap<String, Pool>,
    /// Valid L2 advertisements, sorted by name.
    pub l2_advertisements: Vec<L2Adv>,
}

/// Arguments of `ferrolb validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// Manifest files (YAML, several documents per file allowed; `-` reads stdin).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<std::path::PathBuf>,
}

/// Runs `ferrolb validate`; returns the process exit code.
pub fn run_validate(_args: ValidateArgs) -> anyhow::Result<i32> {
    anyhow::bail!("`ferrolb validate` is not there yet")
}

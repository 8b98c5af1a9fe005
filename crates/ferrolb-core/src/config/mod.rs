//! The validated configuration model (pure, no I/O).
//!
//! `IPAddressPool` and `L2Advertisement` objects (see [`crate::crd`]) are turned into
//! a [`Config`]: typed pools with parsed prefixes and typed advertisements with parsed
//! selectors. Invalid objects are reported as [`ConfigError`]s; every valid object is
//! kept, so one typo never takes down service for everyone, and a pool edited into an
//! invalid spec is *frozen* on its last valid one, so a typo never costs an IP either.
//!
//! Three entry points, one rule set (see [`validate()`](validate) for the rules):
//! - [`validate`]: the objects alone (`ferrolb validate`, offline);
//! - [`decide`]: the controller's decision, using each pool's published last valid spec
//!   (`status.lastValidSpec`), so a restart decides the same;
//! - [`follow`]: the speakers' view: the controller's published verdicts where they cover a
//!   pool's current generation, [`decide`] for the rest.
//!
//! Modules: [`address`] (CIDR / range parsing and summarization), [`error`] (typed
//! errors and warnings), [`manifest`] (multi-document YAML → typed objects), and
//! [`check_sources`], the report of `ferrolb validate`.
//!
//! The allocator ([`crate::allocator`]) consumes [`Pool`]s and the election
//! ([`crate::election`]) consumes [`L2Adv`]s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::selector::{Labels, Selector};

pub mod address;
mod decide;
pub mod error;
pub mod manifest;
mod report;
mod validate;

pub use decide::{
    decide, follow, published_verdict, Decision, PoolDecision, PoolState, Verdict, FROZEN_REASON,
    INVALID_REASON, VALID_CONDITION, VALID_REASON,
};
pub use error::{ConfigError, ConfigWarning, ObjectKind, Problem, Warning};
pub use report::{check_sources, Report};
pub use validate::{validate, Validated};

/// A validated IP address pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// `metadata.name` of the IPAddressPool; shared with the Service views it contains
    /// (one allocation per pool, not per Service).
    pub name: Arc<str>,
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
    /// The pool's current spec is invalid and this is its last valid one: the Services
    /// holding its IPs keep them (and stay announced), but no new IP is handed out from it.
    pub frozen: bool,
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

/// Number of addresses of each family in a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// IPv4 addresses.
    pub ipv4: u128,
    /// IPv6 addresses (saturating at `u128::MAX` for `::/0`).
    pub ipv6: u128,
}

impl Pool {
    /// True when `ip` is inside one of the pool's prefixes (ignores `avoid_buggy_ips`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|n| n.contains(&ip))
    }

    /// True when `ip` may be handed out from this pool: inside it and, with
    /// `avoid_buggy_ips`, not an IPv4 address ending in `.0` or `.255`.
    pub fn is_usable(&self, ip: IpAddr) -> bool {
        self.contains(ip) && !(self.avoid_buggy_ips && address::is_buggy(ip))
    }

    /// True when the pool has at least one IPv4 prefix.
    pub fn has_ipv4(&self) -> bool {
        self.cidrs.iter().any(|n| n.addr().is_ipv4())
    }

    /// True when the pool has at least one IPv6 prefix.
    pub fn has_ipv6(&self) -> bool {
        self.cidrs.iter().any(|n| n.addr().is_ipv6())
    }

    /// How many addresses the pool can hand out per family (usable addresses only:
    /// with `avoid_buggy_ips`, `.0` / `.255` are not counted). Validated pools have no
    /// overlapping prefixes, so this is exact.
    pub fn capacity(&self) -> Capacity {
        let mut c = Capacity::default();
        for n in &self.cidrs {
            let mut size = address::net_size(n);
            if self.avoid_buggy_ips {
                size -= address::buggy_count(n);
            }
            match n {
                IpNet::V4(_) => c.ipv4 += size,
                IpNet::V6(_) => c.ipv6 = c.ipv6.saturating_add(size),
            }
        }
        c
    }
}

impl L2Adv {
    /// True when this advertisement applies to `pool`: listed by name, matched by a
    /// pool selector, or both lists empty (all pools).
    pub fn selects_pool(&self, pool: &Pool) -> bool {
        (self.ip_address_pools.is_empty() && self.ip_address_pool_selectors.is_empty())
            || self.ip_address_pools.iter().any(|p| **p == *pool.name)
            || self
                .ip_address_pool_selectors
                .iter()
                .any(|s| s.matches(&pool.labels))
    }
}

impl Config {
    /// The pool containing `ip`, if any (validated pools do not overlap).
    pub fn pool_containing(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.values().find(|p| p.contains(ip))
    }

    /// The advertisements that apply to `pool`, in name order.
    pub fn ads_for_pool<'a>(&'a self, pool: &'a Pool) -> impl Iterator<Item = &'a L2Adv> + 'a {
        self.l2_advertisements
            .iter()
            .filter(move |a| a.selects_pool(pool))
    }
}

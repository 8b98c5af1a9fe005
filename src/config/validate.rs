//! `IPAddressPool`s + `L2Advertisement`s → [`Config`] + errors (pure).
//!
//! Each object is first checked on its own (names, addresses, selectors, …); an object
//! with any error is left out and every error is reported. Then the individually valid
//! objects are considered in **precedence order** to resolve conflicts between objects
//! (duplicate names, pools with overlapping addresses): the first one is kept, the later
//! one is rejected with an error naming both. Precedence:
//!
//! 1. a pool whose prefixes are unchanged from the previous accepted config
//!    ([`validate_with_previous`]) beats one that changed, so editing a pool into an
//!    overlap rejects the edited pool, not its neighbour;
//! 2. older `metadata.creationTimestamp` first (objects without one come last), so a new
//!    pool that overlaps an existing one never takes the existing one down;
//! 3. then by name, namespace and position in the input.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use super::address::parse_entry;
use super::error::{ConfigError, ConfigWarning, ObjectKind, Problem, Warning};
use super::{Config, L2Adv, Pool, ServiceAllocation};
use crate::crd::{IPAddressPool, L2Advertisement};
use crate::selector::{Requirement, Selector};

/// The outcome of validation: the config made of every valid object, and what was wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validated {
    /// Every valid pool and advertisement.
    pub config: Config,
    /// One entry per problem; objects with errors are not in `config`.
    pub errors: Vec<ConfigError>,
    /// Valid but suspicious configuration (does not affect `config`).
    pub warnings: Vec<ConfigWarning>,
}

impl Validated {
    /// True when there are no errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Validates pools and advertisements together. See the module docs for how conflicts
/// are resolved.
pub fn validate(pools: &[IPAddressPool], ads: &[L2Advertisement]) -> Validated {
    validate_with_previous(pools, ads, &Config::default())
}

/// Like [`validate`], but pools whose prefixes equal those of the same-named pool in
/// `previous` win conflicts (the controller passes its last accepted config).
pub fn validate_with_previous(
    pools: &[IPAddressPool],
    ads: &[L2Advertisement],
    previous: &Config,
) -> Validated {
    let mut out = Validated::default();
    let pool_index = accept_pools(pools, previous, &mut out);
    let ad_index = accept_ads(ads, &mut out);
    warn(pools, &pool_index, &ad_index, &mut out);
    out
}

/// Collects errors of one object.
struct Errs<'a> {
    kind: ObjectKind,
    name: &'a str,
    index: usize,
    list: Vec<ConfigError>,
}

impl Errs<'_> {
    fn push(&mut self, field: impl Into<String>, problem: Problem) {
        self.list.push(ConfigError {
            kind: self.kind,
            name: self.name.to_string(),
            index: self.index,
            field: field.into(),
            problem,
        });
    }
}

/// Precedence key (see module docs); smaller wins: unchanged before changed, with a
/// creation timestamp before without, older first, then name, namespace, input position.
type Rank = (bool, bool, Option<Time>, String, String, usize);

fn rank(meta: &ObjectMeta, index: usize, changed: bool) -> Rank {
    let ts = meta.creation_timestamp.clone();
    (
        changed,
        ts.is_none(),
        ts,
        meta.name.clone().unwrap_or_default(),
        meta.namespace.clone().unwrap_or_default(),
        index,
    )
}

// ---------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------

/// Order-insensitive form of a selector, for duplicate detection.
fn canonical(s: &Selector) -> Selector {
    let mut reqs: Vec<Requirement> = s
        .requirements
        .iter()
        .map(|r| match r {
            Requirement::In(k, v) => {
                let mut v = v.clone();
                v.sort();
                Requirement::In(k.clone(), v)
            }
            Requirement::NotIn(k, v) => {
                let mut v = v.clone();
                v.sort();
                Requirement::NotIn(k.clone(), v)
            }
            other => other.clone(),
        })
        .collect();
    reqs.sort();
    reqs.dedup();
    Selector {
        match_labels: s.match_labels.clone(),
        requirements: reqs,
    }
}

fn selector_text(s: &Selector) -> String {
    if s.is_everything() {
        "{}".to_string()
    } else {
        s.to_string()
    }
}

/// Parses a list of selectors at `field`, reporting invalid and duplicate ones.
fn selectors(list: &[LabelSelector], field: &str, errs: &mut Errs) -> Vec<Selector> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<Selector, usize> = BTreeMap::new();
    for (i, ls) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match Selector::parse(ls) {
            Err(e) => errs.push(f, Problem::InvalidSelector(e)),
            Ok(s) => {
                if let Some(first) = seen.get(&canonical(&s)) {
                    errs.push(
                        f,
                        Problem::DuplicateSelector {
                            selector: selector_text(&s),
                            first_field: format!("{field}[{first}]"),
                        },
                    );
                } else {
                    seen.insert(canonical(&s), i);
                    out.push(s);
                }
            }
        }
    }
    out
}

/// Checks a list of names at `field`: no empty value, no duplicate.
fn names(list: &[String], field: &str, errs: &mut Errs, dup: impl Fn(&str, String) -> Problem) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, n) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if n.is_empty() {
            errs.push(f, Problem::EmptyValue);
        } else if let Some(first) = seen.get(n.as_str()) {
            errs.push(f, dup(n, format!("{field}[{first}]")));
        } else {
            seen.insert(n, i);
        }
    }
}

// ---------------------------------------------------------------------------
// Address intervals
// ---------------------------------------------------------------------------

/// A prefix as a closed interval, keyed by family so v4 and v6 never compare.
fn interval(net: &IpNet) -> (u8, u128, u128) {
    let n = |ip: IpAddr| match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    let fam = if net.addr().is_ipv4() { 4 } else { 6 };
    (fam, n(net.network()), n(net.broadcast()))
}

/// Disjoint set of accepted intervals with their owner, for overlap queries in
/// `O(log n)`.
#[derive(Default)]
struct Intervals<T> {
    by_start: BTreeMap<(u8, u128), (u128, T)>,
}

impl<T> Intervals<T> {
    /// The accepted interval overlapping `net`, if any (the set is disjoint, so the
    /// last interval starting at or before `net`'s end is the only candidate).
    fn overlapping(&self, net: &IpNet) -> Option<&T> {
        let (fam, s, e) = interval(net);
        let ((f, _), (end, owner)) = self.by_start.range(..=(fam, e)).next_back()?;
        (*f == fam && *end >= s).then_some(owner)
    }

    fn insert(&mut self, net: &IpNet, owner: T) {
        let (fam, s, e) = interval(net);
        self.by_start.insert((fam, s), (e, owner));
    }
}

// ---------------------------------------------------------------------------
// Pools
// ---------------------------------------------------------------------------

/// A pool that passed its own checks; `entries[i]` is the `spec.addresses` index of
/// `pool.cidrs[i]`.
struct PoolCandidate {
    index: usize,
    pool: Pool,
    entries: Vec<usize>,
}

fn check_pool(index: usize, obj: &IPAddressPool) -> Result<PoolCandidate, Vec<ConfigError>> {
    let name = obj.metadata.name.as_deref().unwrap_or("");
    let mut errs = Errs {
        kind: ObjectKind::IPAddressPool,
        name,
        index,
        list: Vec::new(),
    };
    if name.is_empty() {
        errs.push("metadata.name", Problem::MissingName);
    }
    let spec = &obj.spec;
    if spec.addresses.is_empty() {
        errs.push("spec.addresses", Problem::NoAddresses);
    }
    let mut cidrs = Vec::new();
    let mut entries = Vec::new();
    let mut own: Intervals<(usize, IpNet)> = Intervals::default();
    for (i, entry) in spec.addresses.iter().enumerate() {
        let field = format!("spec.addresses[{i}]");
        let nets = match parse_entry(entry) {
            Ok(n) => n,
            Err(e) => {
                errs.push(field, e.into());
                continue;
            }
        };
        // Prefixes of one summarized range never overlap each other, so only check
        // against earlier entries; report at most one overlap per entry.
        if let Some((other, other_net, net)) = nets
            .iter()
            .find_map(|n| own.overlapping(n).map(|(o, on)| (*o, *on, *n)))
        {
            errs.push(
                field,
                Problem::OverlapInPool {
                    prefix: net,
                    other_prefix: other_net,
                    other_field: format!("spec.addresses[{other}]"),
                },
            );
            continue;
        }
        for n in nets {
            own.insert(&n, (i, n));
            cidrs.push(n);
            entries.push(i);
        }
    }

    let allocation = spec.service_allocation.as_ref().map(|sa| {
        let f = "spec.serviceAllocation";
        names(
            &sa.namespaces,
            &format!("{f}.namespaces"),
            &mut errs,
            |n, first_field| Problem::DuplicateNamespace {
                namespace: n.to_string(),
                first_field,
            },
        );
        let namespace_selectors = selectors(
            &sa.namespace_selectors,
            &format!("{f}.namespaceSelectors"),
            &mut errs,
        );
        let mut service_selectors = selectors(
            &sa.service_selectors,
            &format!("{f}.serviceSelectors"),
            &mut errs,
        );
        if sa.namespaces.is_empty()
            && sa.namespace_selectors.is_empty()
            && sa.service_selectors.is_empty()
        {
            // MetalLB #2714: a present-but-empty serviceAllocation pins every Service.
            service_selectors = vec![Selector::everything()];
        }
        ServiceAllocation {
            priority: sa.priority.unwrap_or(0),
            namespaces: sa.namespaces.clone(),
            namespace_selectors,
            service_selectors,
        }
    });

    if !errs.list.is_empty() {
        return Err(errs.list);
    }
    Ok(PoolCandidate {
        index,
        pool: Pool {
            name: name.to_string(),
            labels: obj.metadata.labels.clone().unwrap_or_default(),
            cidrs,
            auto_assign: spec.auto_assign,
            avoid_buggy_ips: spec.avoid_buggy_ips,
            allocation,
        },
        entries,
    })
}

/// Accepts pools into `out.config`; returns the input index of each accepted pool.
fn accept_pools(
    pools: &[IPAddressPool],
    previous: &Config,
    out: &mut Validated,
) -> BTreeMap<String, usize> {
    let mut accepted = BTreeMap::new();
    let mut candidates = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        match check_pool(i, p) {
            Ok(c) => candidates.push(c),
            Err(e) => out.errors.extend(e),
        }
    }
    candidates.sort_by_cached_key(|c| {
        let changed = previous
            .pools
            .get(&c.pool.name)
            .is_none_or(|prev| prev.cidrs != c.pool.cidrs);
        rank(&pools[c.index].metadata, c.index, changed)
    });

    let mut taken: Intervals<(String, usize, IpNet)> = Intervals::default();
    for c in candidates {
        let name = c.pool.name.clone();
        let mut errs = Errs {
            kind: ObjectKind::IPAddressPool,
            name: &name,
            index: c.index,
            list: Vec::new(),
        };
        if out.config.pools.contains_key(&name) {
            errs.push(
                "metadata.name",
                Problem::DuplicateName {
                    kind: ObjectKind::IPAddressPool,
                    name: name.clone(),
                },
            );
        } else {
            let mut reported = BTreeSet::new();
            for (net, entry) in c.pool.cidrs.iter().zip(&c.entries) {
                if reported.contains(entry) {
                    continue;
                }
                if let Some((other, other_entry, other_net)) = taken.overlapping(net) {
                    reported.insert(*entry);
                    errs.push(
                        format!("spec.addresses[{entry}]"),
                        Problem::OverlapAcrossPools {
                            prefix: *net,
                            other_pool: other.clone(),
                            other_prefix: *other_net,
                            other_field: format!("spec.addresses[{other_entry}]"),
                        },
                    );
                }
            }
        }
        if errs.list.is_empty() {
            for (net, entry) in c.pool.cidrs.iter().zip(&c.entries) {
                taken.insert(net, (name.clone(), *entry, *net));
            }
            accepted.insert(name.clone(), c.index);
            out.config.pools.insert(name.clone(), c.pool);
        } else {
            out.errors.extend(errs.list);
        }
    }
    accepted
}

// ---------------------------------------------------------------------------
// L2Advertisements
// ---------------------------------------------------------------------------

fn check_ad(index: usize, obj: &L2Advertisement) -> Result<L2Adv, Vec<ConfigError>> {
    let name = obj.metadata.name.as_deref().unwrap_or("");
    let mut errs = Errs {
        kind: ObjectKind::L2Advertisement,
        name,
        index,
        list: Vec::new(),
    };
    if name.is_empty() {
        errs.push("metadata.name", Problem::MissingName);
    }
    let spec = &obj.spec;
    names(
        &spec.ip_address_pools,
        "spec.ipAddressPools",
        &mut errs,
        |n, first_field| Problem::DuplicatePoolName {
            pool: n.to_string(),
            first_field,
        },
    );
    let ip_address_pool_selectors = selectors(
        &spec.ip_address_pool_selectors,
        "spec.ipAddressPoolSelectors",
        &mut errs,
    );
    let node_selectors = selectors(&spec.node_selectors, "spec.nodeSelectors", &mut errs);
    let service_selectors = selectors(&spec.service_selectors, "spec.serviceSelectors", &mut errs);
    for (i, itf) in spec.interfaces.iter().enumerate() {
        if itf.is_empty() {
            errs.push(format!("spec.interfaces[{i}]"), Problem::EmptyValue);
        }
    }
    let mut preferred = Vec::new();
    for (i, p) in spec.preferred_node_selectors.iter().enumerate() {
        let f = format!("spec.preferredNodeSelectors[{i}]");
        if !(1..=100).contains(&p.weight) {
            errs.push(
                format!("{f}.weight"),
                Problem::WeightOutOfRange { weight: p.weight },
            );
        }
        match Selector::parse(&p.preference) {
            Ok(s) => preferred.push((p.weight, s)),
            Err(e) => errs.push(format!("{f}.preference"), Problem::InvalidSelector(e)),
        }
    }
    if !errs.list.is_empty() {
        return Err(errs.list);
    }
    let mut interfaces = Vec::new();
    for itf in &spec.interfaces {
        if !interfaces.contains(itf) {
            interfaces.push(itf.clone());
        }
    }
    Ok(L2Adv {
        name: name.to_string(),
        ip_address_pools: spec.ip_address_pools.clone(),
        ip_address_pool_selectors,
        node_selectors,
        interfaces,
        service_selectors,
        preferred_node_selectors: preferred,
    })
}

/// Accepts advertisements into `out.config`; returns the input index of each accepted one.
fn accept_ads(ads: &[L2Advertisement], out: &mut Validated) -> BTreeMap<String, usize> {
    let mut candidates = Vec::new();
    for (i, a) in ads.iter().enumerate() {
        match check_ad(i, a) {
            Ok(ad) => candidates.push((i, ad)),
            Err(e) => out.errors.extend(e),
        }
    }
    candidates.sort_by_cached_key(|(i, _)| rank(&ads[*i].metadata, *i, false));
    let mut accepted = BTreeMap::new();
    for (i, ad) in candidates {
        if !accepted.contains_key(&ad.name) {
            accepted.insert(ad.name.clone(), i);
            out.config.l2_advertisements.push(ad);
        } else {
            out.errors.push(ConfigError {
                kind: ObjectKind::L2Advertisement,
                name: ad.name.clone(),
                index: i,
                field: "metadata.name".into(),
                problem: Problem::DuplicateName {
                    kind: ObjectKind::L2Advertisement,
                    name: ad.name,
                },
            });
        }
    }
    out.config
        .l2_advertisements
        .sort_by(|a, b| a.name.cmp(&b.name));
    accepted
}

// ---------------------------------------------------------------------------
// Warnings
// ---------------------------------------------------------------------------

fn warn(
    pools: &[IPAddressPool],
    pool_index: &BTreeMap<String, usize>,
    ad_index: &BTreeMap<String, usize>,
    out: &mut Validated,
) {
    let input_pool_names: BTreeSet<&str> = pools
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    for ad in &out.config.l2_advertisements {
        let index = ad_index.get(&ad.name).copied().unwrap_or_default();
        for (i, p) in ad.ip_address_pools.iter().enumerate() {
            // A pool that exists but was rejected has its own error already.
            if !input_pool_names.contains(p.as_str()) {
                out.warnings.push(ConfigWarning {
                    kind: ObjectKind::L2Advertisement,
                    name: ad.name.clone(),
                    index,
                    field: format!("spec.ipAddressPools[{i}]"),
                    warning: Warning::UnknownPool { pool: p.clone() },
                });
            }
        }
    }
    for pool in out.config.pools.values() {
        if !out
            .config
            .l2_advertisements
            .iter()
            .any(|ad| ad.selects_pool(pool))
        {
            let index = pool_index.get(&pool.name).copied().unwrap_or_default();
            out.warnings.push(ConfigWarning {
                kind: ObjectKind::IPAddressPool,
                name: pool.name.clone(),
                index,
                field: String::new(),
                warning: Warning::NotAdvertised,
            });
        }
    }
}

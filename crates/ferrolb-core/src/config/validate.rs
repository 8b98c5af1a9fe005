//! `IPAddressPool`s + `L2Advertisement`s → [`Config`] + errors (pure).
//!
//! Each object is first checked on its own (names, addresses, selectors, …); every error
//! is reported. Then the pools are placed in **precedence order** so that the addresses in
//! force never overlap, and duplicate names keep one object.
//!
//! A pool's past is its `status.lastValidSpec` (the spec in force, published by the
//! controller; see [`super::decide`]). [`validate`] ignores it (`ferrolb validate`, a fresh
//! start); [`super::decide`] and [`super::follow`] use it:
//!
//! 1. **standing** pools first: unchanged since their last valid spec, or invalid now and
//!    therefore *frozen* on their last valid spec (its Services keep their IPs, nothing new
//!    is handed out from it); then
//! 2. **moving** pools (new, or edited into a valid spec): a moving pool may only take
//!    addresses that no other pool holds, including the last valid spec of another moving
//!    pool that has not moved yet; this is repeated until no more pool can move, so a pool
//!    shrinking and another growing into the freed room in one edit both succeed. A pool
//!    that cannot move gets an overlap error and stays frozen on its last valid spec (or is
//!    left out when it never had one).
//!
//! Within each step: older `metadata.creationTimestamp` first (objects without one come
//! last), then name, namespace and position in the input. So an edit can never take the
//! addresses of a pool that serves them, a bad edit never costs an IP, and the outcome is a
//! function of the objects alone (no memory of earlier runs): a restart decides the same.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use super::address::parse_entry;
use super::error::{ConfigError, ConfigWarning, ObjectKind, Problem, Warning};
use super::{Config, L2Adv, Pool, PoolDecision, PoolState, ServiceAllocation};
use crate::crd::{IPAddressPool, IPAddressPoolSpec, L2Advertisement};
use crate::selector::{Requirement, Selector};

/// JSON path of the published last valid spec, for messages about it.
pub(super) const LAST_VALID_ROOT: &str = "status.lastValidSpec";

/// The outcome of validation: the config made of every valid object, and what was wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validated {
    /// Every pool and advertisement in force (frozen pools included, flagged).
    pub config: Config,
    /// One entry per problem; objects with errors are not in `config` (a frozen pool is,
    /// with its last valid spec).
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

/// Validates pools and advertisements together, ignoring any pool's past (what
/// `ferrolb validate` reports). See the module docs for how conflicts are resolved.
pub fn validate(pools: &[IPAddressPool], ads: &[L2Advertisement]) -> Validated {
    let past = vec![Past::default(); pools.len()];
    resolve(pools, ads, &past).0
}

/// What is known of one input pool's past.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Past<'a> {
    /// Its last valid spec (`status.lastValidSpec`).
    pub last_valid: Option<&'a IPAddressPoolSpec>,
    /// A published verdict about its current generation, followed as is.
    pub pin: Option<Pin<'a>>,
}

/// A published verdict (see [`super::follow`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Pin<'a> {
    /// Valid: this spec is in force.
    Accepted(&'a IPAddressPoolSpec),
    /// Invalid: this last valid spec (if any) stays in force.
    Frozen(Option<&'a IPAddressPoolSpec>),
}

/// The configuration in force and the decision about each input pool (input order).
pub(super) fn resolve(
    pools: &[IPAddressPool],
    ads: &[L2Advertisement],
    past: &[Past],
) -> (Validated, Vec<PoolDecision>) {
    let mut out = Validated::default();
    let (pool_index, decisions) = resolve_pools(pools, past, &mut out);
    let ad_index = accept_ads(ads, &mut out);
    warn(pools, &pool_index, &ad_index, &mut out);
    (out, decisions)
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

/// Precedence key (see module docs); smaller wins: with a creation timestamp before
/// without, older first, then name, namespace, input position.
type Rank = (bool, Option<Time>, String, String, usize);

fn rank(meta: &ObjectMeta, index: usize) -> Rank {
    let ts = meta.creation_timestamp.clone();
    (
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

/// A pool spec that passed its own checks; `entries[i]` is the `addresses` index of
/// `pool.cidrs[i]`, `root` the JSON path of the spec (`spec` or `status.lastValidSpec`).
#[derive(Clone, Debug)]
struct PoolCandidate {
    pool: Pool,
    entries: Vec<usize>,
    root: &'static str,
    spec: IPAddressPoolSpec,
}

impl PoolCandidate {
    fn field(&self, entry: usize) -> String {
        format!("{}.addresses[{entry}]", self.root)
    }
}

fn check_pool(
    index: usize,
    meta: &ObjectMeta,
    spec: &IPAddressPoolSpec,
    root: &'static str,
) -> Result<PoolCandidate, Vec<ConfigError>> {
    let name = meta.name.as_deref().unwrap_or("");
    let mut errs = Errs {
        kind: ObjectKind::IPAddressPool,
        name,
        index,
        list: Vec::new(),
    };
    if name.is_empty() {
        errs.push("metadata.name", Problem::MissingName);
    }
    if spec.addresses.is_empty() {
        errs.push(format!("{root}.addresses"), Problem::NoAddresses);
    }
    let mut cidrs = Vec::new();
    let mut entries = Vec::new();
    let mut own: Intervals<(usize, IpNet)> = Intervals::default();
    for (i, entry) in spec.addresses.iter().enumerate() {
        let field = format!("{root}.addresses[{i}]");
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
                    other_field: format!("{root}.addresses[{other}]"),
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
        let f = format!("{root}.serviceAllocation");
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
        pool: Pool {
            name: name.into(),
            labels: meta.labels.clone().unwrap_or_default(),
            cidrs,
            auto_assign: spec.auto_assign,
            avoid_buggy_ips: spec.avoid_buggy_ips,
            allocation,
            frozen: false,
        },
        entries,
        root,
        spec: spec.clone(),
    })
}

/// Who holds an accepted interval: pool name, field of the entry, prefix.
type Holder = (String, String, IpNet);

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    let (fa, sa, ea) = interval(a);
    let (fb, sb, eb) = interval(b);
    fa == fb && sa <= eb && sb <= ea
}

/// The overlaps of `c` with the addresses in force (`taken`) and with `others` (pools not
/// placed yet whose addresses are reserved): one error per entry of `c`, naming the first
/// holder found.
fn conflicts(
    c: &PoolCandidate,
    taken: &Intervals<Holder>,
    others: &[&PoolCandidate],
) -> Vec<(String, Problem)> {
    let mut out = Vec::new();
    let mut reported = BTreeSet::new();
    for (net, entry) in c.pool.cidrs.iter().zip(&c.entries) {
        if reported.contains(entry) {
            continue;
        }
        let holder = taken.overlapping(net).cloned().or_else(|| {
            others.iter().find_map(|o| {
                o.pool
                    .cidrs
                    .iter()
                    .zip(&o.entries)
                    .find(|(on, _)| overlaps(net, on))
                    .map(|(on, oe)| (o.pool.name.to_string(), o.field(*oe), *on))
            })
        });
        if let Some((other_pool, other_field, other_prefix)) = holder {
            reported.insert(*entry);
            out.push((
                c.field(*entry),
                Problem::OverlapAcrossPools {
                    prefix: *net,
                    other_pool,
                    other_prefix,
                    other_field,
                },
            ));
        }
    }
    out
}

/// Places pools into `out.config` (see the module docs); returns the input index of each
/// pool in force and the decision about every input pool.
fn resolve_pools(
    pools: &[IPAddressPool],
    past: &[Past],
    out: &mut Validated,
) -> (BTreeMap<String, usize>, Vec<PoolDecision>) {
    let mut decisions: Vec<PoolDecision> = pools
        .iter()
        .enumerate()
        .map(|(index, p)| PoolDecision {
            index,
            name: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone(),
            generation: p.metadata.generation,
            state: PoolState::Rejected,
            in_force: None,
        })
        .collect();
    let mut current: Vec<Option<PoolCandidate>> = Vec::with_capacity(pools.len());
    let mut last: Vec<Option<PoolCandidate>> = Vec::with_capacity(pools.len());
    let mut pinned: Vec<Option<(Option<PoolCandidate>, PoolState)>> = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        match check_pool(i, &p.metadata, &p.spec, "spec") {
            Ok(c) => current.push(Some(c)),
            Err(e) => {
                out.errors.extend(e);
                current.push(None);
            }
        }
        let pa = past.get(i).copied().unwrap_or_default();
        let check = |s: &IPAddressPoolSpec| check_pool(i, &p.metadata, s, LAST_VALID_ROOT).ok();
        last.push(pa.last_valid.and_then(check));
        pinned.push(match pa.pin {
            Some(Pin::Accepted(s)) => check(s).map(|c| (Some(c), PoolState::Accepted)),
            Some(Pin::Frozen(s)) => Some(match s.and_then(check) {
                Some(c) => (Some(c), PoolState::Frozen),
                None => (None, PoolState::Rejected),
            }),
            None => None,
        });
    }
    let mut order: Vec<usize> = (0..pools.len()).collect();
    order.sort_by_cached_key(|&i| rank(&pools[i].metadata, i));

    // One object per name: the first (in precedence order) that could be in force.
    let mut names = BTreeSet::new();
    let mut live = Vec::new();
    for &i in &order {
        let could = current[i].is_some()
            || last[i].is_some()
            || pinned[i].as_ref().is_some_and(|(c, _)| c.is_some());
        if !could {
            continue;
        }
        let name = decisions[i].name.clone();
        if names.insert(name.clone()) {
            live.push(i);
        } else if current[i].is_some() {
            out.errors.push(ConfigError {
                kind: ObjectKind::IPAddressPool,
                name: name.clone(),
                index: i,
                field: "metadata.name".into(),
                problem: Problem::DuplicateName {
                    kind: ObjectKind::IPAddressPool,
                    name,
                },
            });
        }
    }

    let mut taken: Intervals<Holder> = Intervals::default();
    let mut in_force: BTreeMap<String, usize> = BTreeMap::new();
    let mut place = |i: usize,
                     c: &PoolCandidate,
                     state: PoolState,
                     taken: &mut Intervals<Holder>,
                     out: &mut Validated| {
        for (net, entry) in c.pool.cidrs.iter().zip(&c.entries) {
            taken.insert(net, (c.pool.name.to_string(), c.field(*entry), *net));
        }
        let mut pool = c.pool.clone();
        pool.frozen = state == PoolState::Frozen;
        in_force.insert(pool.name.to_string(), i);
        out.config.pools.insert(pool.name.to_string(), pool);
        decisions[i].state = state;
        decisions[i].in_force = Some(c.spec.clone());
    };
    let reject = |i: usize, errs: Vec<(String, Problem)>, out: &mut Validated| {
        for (field, problem) in errs {
            out.errors.push(ConfigError {
                kind: ObjectKind::IPAddressPool,
                name: pools[i].metadata.name.clone().unwrap_or_default(),
                index: i,
                field,
                problem,
            });
        }
    };

    // 1. Standing pools: a published verdict, unchanged since the last valid spec, or
    //    invalid now and frozen on it.
    let mut moving = Vec::new();
    for &i in &live {
        let standing = match (&pinned[i], &current[i], &last[i]) {
            (Some((Some(c), state)), _, _) => Some((c, *state)),
            (Some((None, _)), _, _) => None,
            (None, Some(c), Some(l)) if c.pool == l.pool => Some((c, PoolState::Accepted)),
            (None, Some(_), _) => {
                moving.push(i);
                None
            }
            (None, None, Some(l)) => Some((l, PoolState::Frozen)),
            (None, None, None) => None,
        };
        if let Some((c, state)) = standing {
            let errs = conflicts(c, &taken, &[]);
            if errs.is_empty() {
                place(i, c, state, &mut taken, out);
            } else {
                reject(i, errs, out);
            }
        }
    }

    // 2. Moving pools, until none can move any more.
    loop {
        let mut moved = false;
        let mut k = 0;
        while k < moving.len() {
            let i = moving[k];
            let c = current[i].as_ref().expect("moving pools are valid");
            let reserved: Vec<&PoolCandidate> = moving
                .iter()
                .filter(|&&j| j != i)
                .filter_map(|&j| last[j].as_ref())
                .collect();
            if conflicts(c, &taken, &reserved).is_empty() {
                place(i, c, PoolState::Accepted, &mut taken, out);
                moving.remove(k);
                moved = true;
            } else {
                k += 1;
            }
        }
        if !moved {
            break;
        }
    }
    // The ones left: an overlap error each, frozen on their last valid spec if they have one.
    let stuck: Vec<(usize, Vec<(String, Problem)>)> = moving
        .iter()
        .map(|&i| {
            let reserved: Vec<&PoolCandidate> = moving
                .iter()
                .filter(|&&j| j != i)
                .filter_map(|&j| last[j].as_ref())
                .collect();
            let c = current[i].as_ref().expect("moving pools are valid");
            (i, conflicts(c, &taken, &reserved))
        })
        .collect();
    for (i, errs) in stuck {
        reject(i, errs, out);
        if let Some(l) = &last[i] {
            let errs = conflicts(l, &taken, &[]);
            if errs.is_empty() {
                place(i, l, PoolState::Frozen, &mut taken, out);
            } else {
                reject(i, errs, out);
            }
        }
    }
    out.errors.sort_by_key(|e| e.index);
    (in_force, decisions)
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
    candidates.sort_by_cached_key(|(i, _)| rank(&ads[*i].metadata, *i));
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
            let index = pool_index.get(&*pool.name).copied().unwrap_or_default();
            out.warnings.push(ConfigWarning {
                kind: ObjectKind::IPAddressPool,
                name: pool.name.to_string(),
                index,
                field: String::new(),
                warning: Warning::NotAdvertised,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        IPAddressPoolSpec, L2AdvertisementSpec, PreferredNodeSelector, ServiceAllocationSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    fn pool(name: &str, addrs: &[&str]) -> IPAddressPool {
        IPAddressPool::new(
            name,
            IPAddressPoolSpec {
                addresses: addrs.iter().map(|s| s.to_string()).collect(),
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        )
    }

    fn created(mut p: IPAddressPool, secs: i64) -> IPAddressPool {
        p.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap(),
        ));
        p
    }

    fn ad(name: &str, spec: L2AdvertisementSpec) -> L2Advertisement {
        L2Advertisement::new(name, spec)
    }

    fn labels(k: &str, v: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some([(k.to_string(), v.to_string())].into()),
            match_expressions: None,
        }
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(values.iter().map(|s| s.to_string()).collect()),
            }]),
        }
    }

    fn messages(v: &Validated) -> Vec<String> {
        v.errors.iter().map(|e| e.to_string()).collect()
    }

    fn one_error(pools: &[IPAddressPool], ads: &[L2Advertisement]) -> String {
        let v = validate(pools, ads);
        assert_eq!(v.errors.len(), 1, "{:#?}", messages(&v));
        v.errors[0].to_string()
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn valid_config_is_typed() {
        let mut p = pool(
            "first-pool",
            &[
                "192.168.10.0/24",
                "192.168.9.1-192.168.9.5",
                "fc00:f853:0ccd:e799::/124",
            ],
        );
        p.metadata.labels = Some([("zone".to_string(), "a".to_string())].into());
        p.spec.avoid_buggy_ips = true;
        p.spec.service_allocation = Some(ServiceAllocationSpec {
            priority: Some(50),
            namespaces: vec!["namespace-a".into(), "namespace-b".into()],
            namespace_selectors: vec![labels("foo", "bar")],
            service_selectors: vec![expr("app", "In", &["bar"])],
        });
        let a = ad(
            "example",
            L2AdvertisementSpec {
                ip_address_pools: vec!["first-pool".into()],
                node_selectors: vec![
                    labels("kubernetes.io/hostname", "NodeA"),
                    labels("kubernetes.io/hostname", "NodeB"),
                ],
                interfaces: vec!["eth0".into(), "eth1".into(), "eth0".into()],
                service_selectors: vec![labels("tier", "frontend")],
                preferred_node_selectors: vec![PreferredNodeSelector {
                    weight: 100,
                    preference: labels("node-role", "edge"),
                }],
                ..Default::default()
            },
        );
        let v = validate(&[p], &[a, ad("empty", Default::default())]);
        assert!(v.is_ok(), "{:?}", messages(&v));
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        let p = &v.config.pools["first-pool"];
        assert_eq!(
            p.cidrs,
            [
                n("192.168.10.0/24"),
                n("192.168.9.1/32"),
                n("192.168.9.2/31"),
                n("192.168.9.4/31"),
                n("fc00:f853:ccd:e799::/124")
            ]
        );
        assert!(p.auto_assign && p.avoid_buggy_ips);
        assert_eq!(p.labels["zone"], "a");
        let alloc = p.allocation.as_ref().unwrap();
        assert_eq!(alloc.priority, 50);
        assert_eq!(alloc.namespaces, ["namespace-a", "namespace-b"]);
        assert_eq!(
            alloc.namespace_selectors,
            [Selector::from_labels([("foo", "bar")])]
        );
        assert_eq!(alloc.service_selectors.len(), 1);
        let names: Vec<_> = v
            .config
            .l2_advertisements
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, ["empty", "example"], "sorted by name");
        let ex = &v.config.l2_advertisements[1];
        assert_eq!(
            ex.interfaces,
            ["eth0", "eth1"],
            "duplicate interfaces folded"
        );
        assert_eq!(ex.node_selectors.len(), 2);
        assert_eq!(ex.preferred_node_selectors[0].0, 100);
        assert!(ex.selects_pool(p));
        assert!(
            v.config.l2_advertisements[0].selects_pool(p),
            "empty ad selects all pools"
        );
    }

    #[test]
    fn empty_service_allocation_pins_every_service() {
        let mut p = pool("pinned", &["10.0.0.0/30"]);
        p.spec.service_allocation = Some(ServiceAllocationSpec::default());
        let v = validate(&[p], &[]);
        let alloc = v.config.pools["pinned"].allocation.clone().unwrap();
        assert_eq!(alloc.priority, 0);
        assert_eq!(alloc.service_selectors, [Selector::everything()]);
        let mut p = pool("prio-only", &["10.0.1.0/30"]);
        p.spec.service_allocation = Some(ServiceAllocationSpec {
            priority: Some(3),
            ..Default::default()
        });
        let v = validate(&[p], &[]);
        let alloc = v.config.pools["prio-only"].allocation.clone().unwrap();
        assert_eq!(
            (alloc.priority, alloc.service_selectors),
            (3, vec![Selector::everything()])
        );
    }

    #[test]
    fn invalid_cidr() {
        assert_eq!(
            one_error(&[pool("p", &["10.0.0.0/24", "100.200.300.400/24"])], &[]),
            r#"IPAddressPool "p": spec.addresses[1]: invalid CIDR "100.200.300.400/24": "100.200.300.400" is not an IP address"#
        );
    }

    #[test]
    fn prefix_too_long() {
        assert_eq!(
            one_error(&[pool("p", &["10.0.0.0/24", "10.0.1.0/33"])], &[]),
            r#"IPAddressPool "p": spec.addresses[1]: invalid CIDR "10.0.1.0/33": prefix length 33 is longer than 32, the maximum for IPv4"#
        );
    }

    #[test]
    fn reversed_range() {
        assert_eq!(
            one_error(&[pool("p", &["1.2.3.10-1.2.3.1"])], &[]),
            r#"IPAddressPool "p": spec.addresses[0]: invalid IP range "1.2.3.10-1.2.3.1": start IP "1.2.3.10" is after the end IP "1.2.3.1""#
        );
    }

    #[test]
    fn mixed_family_range() {
        assert_eq!(
            one_error(&[pool("p", &["10.0.0.1 - fc00::1"])], &[]),
            r#"IPAddressPool "p": spec.addresses[0]: invalid IP range "10.0.0.1 - fc00::1": start "10.0.0.1" and end "fc00::1" are not of the same IP family"#
        );
    }

    #[test]
    fn empty_addresses() {
        assert_eq!(
            one_error(&[pool("p", &[])], &[]),
            r#"IPAddressPool "p": spec.addresses: no addresses defined: a pool needs at least one CIDR or range"#
        );
    }

    #[test]
    fn missing_names() {
        let mut p = pool("x", &["10.0.0.0/24"]);
        p.metadata.name = None;
        let mut a = ad("y", Default::default());
        a.metadata.name = Some(String::new());
        let v = validate(&[p], &[a]);
        assert_eq!(
            messages(&v),
            [
                r#"IPAddressPool "": metadata.name: name is missing"#,
                r#"L2Advertisement "": metadata.name: name is missing"#
            ]
        );
    }

    #[test]
    fn every_error_of_an_object_is_reported() {
        let mut p = pool("p", &["10.0.0.0/33", "10.0.0.5", "10.1.0.0/16"]);
        p.spec.service_allocation = Some(ServiceAllocationSpec {
            namespaces: vec!["a".into(), "a".into()],
            ..Default::default()
        });
        let v = validate(&[p], &[]);
        let fields: Vec<_> = v.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.addresses[0]",
                "spec.addresses[1]",
                "spec.serviceAllocation.namespaces[1]"
            ]
        );
        assert!(
            v.config.pools.is_empty(),
            "a pool with errors is left out entirely"
        );
    }

    #[test]
    fn duplicate_pool_names_keep_the_first() {
        let mut a = pool("p", &["10.0.0.0/24"]);
        a.metadata.namespace = Some("metallb-system".into());
        let mut b = pool("p", &["10.0.1.0/24"]);
        b.metadata.namespace = Some("other".into());
        for input in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
            let v = validate(&input, &[]);
            assert_eq!(
                messages(&v),
                [
                    r#"IPAddressPool "p": metadata.name: duplicate definition of IPAddressPool "p" (the first one is kept)"#
                ]
            );
            assert_eq!(
                v.config.pools["p"].cidrs,
                [n("10.0.0.0/24")],
                "namespace order decides"
            );
            let rejected = &input[v.errors[0].index];
            assert_eq!(rejected.metadata.namespace.as_deref(), Some("other"));
        }
    }

    #[test]
    fn duplicate_ad_names_keep_the_first() {
        let mut a = ad("ad", Default::default());
        a.metadata.namespace = Some("a".into());
        let mut b = ad(
            "ad",
            L2AdvertisementSpec {
                interfaces: vec!["eth9".into()],
                ..Default::default()
            },
        );
        b.metadata.namespace = Some("b".into());
        let v = validate(&[], &[b, a]);
        assert_eq!(
            messages(&v),
            [
                r#"L2Advertisement "ad": metadata.name: duplicate definition of L2Advertisement "ad" (the first one is kept)"#
            ]
        );
        assert_eq!(v.errors[0].index, 0);
        assert!(v.config.l2_advertisements[0].interfaces.is_empty());
    }

    #[test]
    fn overlap_across_pools_names_both_and_keeps_one() {
        let a = pool("alpha", &["10.0.0.0/8"]);
        let b = pool("beta", &["192.168.0.0/24", "10.0.0.0/16"]);
        for input in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
            let v = validate(&input, &[]);
            assert_eq!(
                messages(&v),
                [
                    r#"IPAddressPool "beta": spec.addresses[1]: CIDR "10.0.0.0/16" overlaps with CIDR "10.0.0.0/8" of IPAddressPool "alpha" (spec.addresses[0]), which is kept"#
                ]
            );
            assert_eq!(v.config.pools.keys().collect::<Vec<_>>(), ["alpha"]);
        }
    }

    #[test]
    fn overlap_with_range_entries() {
        let a = pool("a", &["200.0.0.100-200.0.0.120"]);
        let b = pool("b", &["200.0.0.120/32"]);
        assert_eq!(
            one_error(&[a, b], &[]),
            r#"IPAddressPool "b": spec.addresses[0]: CIDR "200.0.0.120/32" overlaps with CIDR "200.0.0.120/32" of IPAddressPool "a" (spec.addresses[0]), which is kept"#
        );
        // v4 and v6 never overlap, adjacent ranges do not overlap.
        let v = validate(
            &[
                pool("a", &["10.0.0.0-10.0.0.9", "::a00:0/120"]),
                pool("b", &["10.0.0.10-10.0.0.20", "::ffff:10.0.0.0/120"]),
            ],
            &[],
        );
        assert!(v.is_ok(), "{:?}", messages(&v));
    }

    #[test]
    fn older_pool_wins_an_overlap() {
        let old = created(pool("zeta", &["10.0.0.0/24"]), 0);
        let new = created(pool("alpha", &["10.0.0.128/25"]), 60);
        let v = validate(&[new.clone(), old.clone()], &[]);
        assert_eq!(v.config.pools.keys().collect::<Vec<_>>(), ["zeta"]);
        assert_eq!(v.errors[0].name, "alpha");
        // No timestamp sorts after any timestamp.
        let untimed = pool("aaa", &["10.0.0.0/30"]);
        let v = validate(&[untimed, old], &[]);
        assert_eq!(v.config.pools.keys().collect::<Vec<_>>(), ["zeta"]);
    }

    #[test]
    fn overlap_within_pool() {
        assert_eq!(
            one_error(&[pool("p", &["10.0.0.0/8", "10.0.0.0/16"])], &[]),
            r#"IPAddressPool "p": spec.addresses[1]: CIDR "10.0.0.0/16" overlaps with CIDR "10.0.0.0/8" at spec.addresses[0] of the same pool"#
        );
        assert_eq!(
            one_error(&[pool("p", &["10.0.0.1-10.0.0.5", "10.0.0.4/32"])], &[]),
            r#"IPAddressPool "p": spec.addresses[1]: CIDR "10.0.0.4/32" overlaps with CIDR "10.0.0.4/31" at spec.addresses[0] of the same pool"#
        );
    }

    #[test]
    fn duplicate_namespaces_and_empty_namespace() {
        let mut p = pool("p", &["10.0.0.0/24"]);
        p.spec.service_allocation = Some(ServiceAllocationSpec {
            namespaces: vec!["a".into(), "b".into(), "a".into(), "".into()],
            ..Default::default()
        });
        assert_eq!(
            messages(&validate(&[p], &[])),
            [
                r#"IPAddressPool "p": spec.serviceAllocation.namespaces[2]: duplicate namespace "a" (already at spec.serviceAllocation.namespaces[0])"#,
                r#"IPAddressPool "p": spec.serviceAllocation.namespaces[3]: empty value "" is not allowed"#
            ]
        );
    }

    #[test]
    fn duplicate_selectors_ignore_order() {
        let two = |a: (&str, &[&str]), b: (&str, &[&str])| LabelSelector {
            match_labels: None,
            match_expressions: Some(
                [a, b]
                    .iter()
                    .map(|(k, vs)| LabelSelectorRequirement {
                        key: k.to_string(),
                        operator: "In".into(),
                        values: Some(vs.iter().map(|s| s.to_string()).collect()),
                    })
                    .collect(),
            ),
        };
        let mut p = pool("p", &["10.0.0.0/24"]);
        p.spec.service_allocation = Some(ServiceAllocationSpec {
            service_selectors: vec![
                two(("app", &["x", "y"]), ("tier", &["t"])),
                labels("other", "1"),
                two(("tier", &["t"]), ("app", &["y", "x"])),
            ],
            namespace_selectors: vec![LabelSelector::default(), LabelSelector::default()],
            ..Default::default()
        });
        assert_eq!(
            messages(&validate(&[p], &[])),
            [
                r#"IPAddressPool "p": spec.serviceAllocation.namespaceSelectors[1]: duplicate label selector "{}" (same as spec.serviceAllocation.namespaceSelectors[0])"#,
                r#"IPAddressPool "p": spec.serviceAllocation.serviceSelectors[2]: duplicate label selector "tier in (t),app in (y,x)" (same as spec.serviceAllocation.serviceSelectors[0])"#
            ]
        );
    }

    #[test]
    fn invalid_selectors() {
        let mut p = pool("p", &["10.0.0.0/24"]);
        p.spec.service_allocation = Some(ServiceAllocationSpec {
            service_selectors: vec![expr("app", "Equals", &["x"])],
            ..Default::default()
        });
        assert_eq!(
            one_error(&[p], &[]),
            r#"IPAddressPool "p": spec.serviceAllocation.serviceSelectors[0]: invalid label selector: unknown operator "Equals" for key "app" (expected In, NotIn, Exists or DoesNotExist)"#
        );
        let a = ad(
            "a",
            L2AdvertisementSpec {
                node_selectors: vec![expr("k", "In", &[])],
                ..Default::default()
            },
        );
        assert_eq!(
            one_error(&[], &[a]),
            r#"L2Advertisement "a": spec.nodeSelectors[0]: invalid label selector: operator In for key "k" needs at least one value"#
        );
    }

    #[test]
    fn ad_duplicate_pool_names_and_selectors() {
        let a = ad(
            "a",
            L2AdvertisementSpec {
                ip_address_pools: vec!["p".into(), "q".into(), "p".into()],
                ip_address_pool_selectors: vec![labels("x", "1"), labels("x", "1")],
                service_selectors: vec![labels("s", "1"), labels("s", "2"), labels("s", "1")],
                interfaces: vec!["".into()],
                ..Default::default()
            },
        );
        assert_eq!(
            messages(&validate(&[pool("p", &["10.0.0.0/30"])], &[a])),
            [
                r#"L2Advertisement "a": spec.ipAddressPools[2]: duplicate pool name "p" (already at spec.ipAddressPools[0])"#,
                r#"L2Advertisement "a": spec.ipAddressPoolSelectors[1]: duplicate label selector "x=1" (same as spec.ipAddressPoolSelectors[0])"#,
                r#"L2Advertisement "a": spec.serviceSelectors[2]: duplicate label selector "s=1" (same as spec.serviceSelectors[0])"#,
                r#"L2Advertisement "a": spec.interfaces[0]: empty value "" is not allowed"#,
            ]
        );
    }

    #[test]
    fn weight_out_of_range() {
        let pref = |weight| PreferredNodeSelector {
            weight,
            preference: labels("r", "edge"),
        };
        let a = ad(
            "a",
            L2AdvertisementSpec {
                preferred_node_selectors: vec![pref(0), pref(1), pref(100), pref(101)],
                ..Default::default()
            },
        );
        assert_eq!(
            messages(&validate(&[], &[a])),
            [
                r#"L2Advertisement "a": spec.preferredNodeSelectors[0].weight: weight 0 is out of range: must be between 1 and 100"#,
                r#"L2Advertisement "a": spec.preferredNodeSelectors[3].weight: weight 101 is out of range: must be between 1 and 100"#
            ]
        );
        let a = ad(
            "b",
            L2AdvertisementSpec {
                preferred_node_selectors: vec![PreferredNodeSelector {
                    weight: 5,
                    preference: expr("k", "Exists", &["v"]),
                }],
                ..Default::default()
            },
        );
        assert_eq!(
            one_error(&[], &[a]),
            r#"L2Advertisement "b": spec.preferredNodeSelectors[0].preference: invalid label selector: operator Exists for key "k" must not have values"#
        );
    }

    #[test]
    fn a_bad_object_never_discards_good_ones() {
        let pools = [
            pool("good-1", &["10.0.0.0/24"]),
            pool("typo", &["10.0.1.0/240"]),
            pool("good-2", &["fc00::/120", "10.0.2.1-10.0.2.9"]),
            pool("overlapper", &["10.0.0.128/25"]),
        ];
        let ads = [
            ad(
                "bad",
                L2AdvertisementSpec {
                    preferred_node_selectors: vec![PreferredNodeSelector {
                        weight: 0,
                        preference: LabelSelector::default(),
                    }],
                    ..Default::default()
                },
            ),
            ad("good", Default::default()),
        ];
        let v = validate(&pools, &ads);
        assert_eq!(v.errors.len(), 3, "{:#?}", messages(&v));
        let bad: BTreeSet<_> = v.errors.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(bad, ["bad", "overlapper", "typo"].into());
        assert_eq!(
            v.config.pools.keys().collect::<Vec<_>>(),
            ["good-1", "good-2"]
        );
        assert_eq!(v.config.l2_advertisements.len(), 1);
    }

    #[test]
    fn warnings_for_unknown_pools_and_unadvertised_pools() {
        let mut labelled = pool("labelled", &["10.0.1.0/24"]);
        labelled.metadata.labels = Some([("adv".to_string(), "yes".to_string())].into());
        let pools = [
            pool("named", &["10.0.0.0/24"]),
            labelled,
            pool("orphan", &["10.0.2.0/24"]),
            pool("rejected", &["10.0.0.0/33"]),
        ];
        let ads = [
            ad(
                "by-name",
                L2AdvertisementSpec {
                    ip_address_pools: vec!["named".into(), "ghost".into(), "rejected".into()],
                    ..Default::default()
                },
            ),
            ad(
                "by-label",
                L2AdvertisementSpec {
                    ip_address_pool_selectors: vec![labels("adv", "yes")],
                    ..Default::default()
                },
            ),
        ];
        let v = validate(&pools, &ads);
        let w: Vec<_> = v.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            w,
            [
                r#"L2Advertisement "by-name": spec.ipAddressPools[1]: pool "ghost" does not exist (ignored)"#,
                r#"IPAddressPool "orphan": no L2Advertisement selects this pool: its IPs are assigned to Services but never announced"#
            ]
        );
        assert_eq!(v.warnings[1].index, 2);
    }

    #[test]
    fn pool_helpers() {
        let mut p = pool("t", &["1.2.3.0/24", "2.3.4.128/25"]);
        let v = validate(std::slice::from_ref(&p), &[]);
        let c = v.config.pools["t"].capacity();
        assert_eq!((c.ipv4, c.ipv6), (384, 0));
        p.spec.avoid_buggy_ips = true;
        let v = validate(&[p], &[]);
        let pool = &v.config.pools["t"];
        assert_eq!(pool.capacity().ipv4, 381);
        assert!(pool.contains("1.2.3.0".parse().unwrap()));
        assert!(!pool.is_usable("1.2.3.0".parse().unwrap()));
        assert!(!pool.is_usable("2.3.4.255".parse().unwrap()));
        assert!(pool.is_usable("1.2.3.254".parse().unwrap()));
        assert!(!pool.contains("2.3.4.127".parse().unwrap()));
        assert!(pool.has_ipv4() && !pool.has_ipv6());

        let mut p = pool_of(&["1.2.3.0/31", "1000::/127"]);
        p.spec.avoid_buggy_ips = true;
        let v = validate(&[p], &[]);
        let c = v.config.pools["d"].capacity();
        assert_eq!((c.ipv4, c.ipv6), (1, 2));
        assert_eq!(
            v.config
                .pool_containing("1000::1".parse().unwrap())
                .map(|p| &*p.name),
            Some("d")
        );
        assert!(v
            .config
            .pool_containing("1000::2".parse().unwrap())
            .is_none());
        let v = validate(&[pool_of(&["1000::/64"])], &[]);
        assert_eq!(v.config.pools["d"].capacity().ipv6, 1 << 64);
    }

    fn pool_of(addrs: &[&str]) -> IPAddressPool {
        pool("d", addrs)
    }

    fn arb_entry() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u8..4, 0u8..=255, 16u8..=34).prop_map(|(b, c, l)| format!("10.{b}.{c}.0/{l}")),
            (0u8..4, 0u8..=255, 0u8..=255).prop_map(|(b, x, y)| format!(
                "10.{b}.{}.{} - 10.{b}.{}.{}",
                x / 4,
                x,
                y / 4,
                y
            )),
            (0u16..8, 112u8..=129).prop_map(|(h, l)| format!("fc00::{h:x}00/{l}")),
            "[ -~]{0,12}",
        ]
    }

    proptest! {
        /// Whatever the input: no panic; every input pool is either accepted or has an
        /// error; accepted pools are pairwise disjoint.
        #[test]
        fn accepted_pools_are_disjoint_and_nothing_is_lost(
            specs in prop::collection::vec(
                ("[a-e]", prop::collection::vec(arb_entry(), 0..4)), 0..6)
        ) {
            let pools: Vec<IPAddressPool> = specs
                .iter()
                .map(|(name, addrs)| {
                    let a: Vec<&str> = addrs.iter().map(String::as_str).collect();
                    pool(name, &a)
                })
                .collect();
            let v = validate(&pools, &[]);
            for (i, p) in pools.iter().enumerate() {
                let name = p.metadata.name.clone().unwrap();
                let has_error = v.errors.iter().any(|e| e.index == i);
                let accepted = v.config.pools.get(&name).is_some_and(|a| {
                    a.cidrs.len() >= p.spec.addresses.len()
                });
                prop_assert!(has_error || accepted, "pool {i} neither accepted nor rejected");
            }
            let all: Vec<(&str, IpNet)> = v
                .config
                .pools
                .values()
                .flat_map(|p| p.cidrs.iter().map(move |c| (&*p.name, *c)))
                .collect();
            for (i, (pa, a)) in all.iter().enumerate() {
                for (pb, b) in &all[i + 1..] {
                    prop_assert!(
                        !(a.contains(&b.network()) || b.contains(&a.network())),
                        "{pa}:{a} overlaps {pb}:{b}"
                    );
                }
            }
        }
    }
}

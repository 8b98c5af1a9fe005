//! Which nodes may announce a Service's IPs (MetalLB reference §4.8), with reasons.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::config::{Config, L2Adv, Pool};

use super::model::{NodeInfo, ServiceView};

/// Options that change eligibility or election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElectionOptions {
    /// `--revertive`: an IP always goes to the best-ranked candidate (MetalLB behaviour),
    /// even when its current owner is still alive and eligible.
    pub revertive: bool,
    /// `--ignore-exclude-lb`: do not honour [`super::EXCLUDE_LB_LABEL`].
    pub ignore_exclude_lb: bool,
}

/// Why something is not announced (by anyone, or by a given node). The
/// [`Reason::as_str`] forms are stable and meant for logs, metrics and events; the ones
/// MetalLB also has use MetalLB's spelling.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The Service's IPs are not all inside one configured pool.
    IpNotInPool,
    /// No L2Advertisement covers the pool and matches the Service (service level), or
    /// none of those selects this node (node level).
    NoMatchingAdvertisement,
    /// The Service has a sharing key and an applicable L2Advertisement has `serviceSelectors`.
    SharedIpWithServiceSelector,
    /// The Service has no serving endpoint anywhere: nobody announces.
    NoServingEndpoints,
    /// No node is eligible for the Service.
    NoEligibleNode,
    /// Node level: the Node has `NetworkUnavailable=True`.
    NetworkUnavailable,
    /// Node level: the Node carries the exclude-from-external-load-balancers label.
    ExcludedFromLoadBalancers,
    /// Node level: the node's speaker is not alive.
    SpeakerNotAlive,
    /// Node level: `externalTrafficPolicy: Local` and the node hosts no serving endpoint.
    NoLocalEndpoint,
    /// Node level: the node is unknown (no Node object, or a duplicated name).
    UnknownNode,
    /// Another Service with the same key was given; duplicates are never announced.
    DuplicateService,
    /// The IP is shared with other Services and the node elected for it is not eligible
    /// for this Service (e.g. hosts none of its `Local` endpoints). See the module rules.
    SharedIpOwnerNotEligible,
    /// The node is eligible but another node owns the IP.
    NotOwner {
        /// The owner.
        owner: String,
    },
}

impl Reason {
    /// Stable camelCase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::IpNotInPool => "ipNotInPool",
            Reason::NoMatchingAdvertisement => "noMatchingAdvertisement",
            Reason::SharedIpWithServiceSelector => "sharedIPWithServiceSelector",
            Reason::NoServingEndpoints => "noServingEndpoints",
            Reason::NoEligibleNode => "noEligibleNode",
            Reason::NetworkUnavailable => "networkUnavailable",
            Reason::ExcludedFromLoadBalancers => "excludedFromLoadBalancers",
            Reason::SpeakerNotAlive => "speakerNotAlive",
            Reason::NoLocalEndpoint => "noLocalEndpoint",
            Reason::UnknownNode => "unknownNode",
            Reason::DuplicateService => "duplicateService",
            Reason::SharedIpOwnerNotEligible => "sharedIPOwnerNotEligible",
            Reason::NotOwner { .. } => "notOwner",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotOwner { owner } => write!(f, "notOwner (owner {owner})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The interfaces an IP is announced on, on one node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interfaces {
    /// Every (non-excluded) interface.
    All,
    /// Only these interfaces.
    Named(BTreeSet<String>),
}

impl Interfaces {
    /// The interfaces of one advertisement (`interfaces` empty ⇒ all).
    pub fn of_ad(ad: &L2Adv) -> Self {
        if ad.interfaces.is_empty() {
            Interfaces::All
        } else {
            Interfaces::Named(ad.interfaces.iter().cloned().collect())
        }
    }

    /// Union: anything with [`Interfaces::All`] gives `All`.
    pub fn union(&self, other: &Interfaces) -> Interfaces {
        match (self, other) {
            (Interfaces::Named(a), Interfaces::Named(b)) => {
                Interfaces::Named(a.union(b).cloned().collect())
            }
            _ => Interfaces::All,
        }
    }

    /// True when `name` may be used.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Interfaces::All => true,
            Interfaces::Named(set) => set.contains(name),
        }
    }
}

/// True when the advertisement applies to `pool` (by name, by label, or to all pools).
pub fn ad_covers_pool(ad: &L2Adv, pool: &Pool) -> bool {
    if ad.ip_address_pools.is_empty() && ad.ip_address_pool_selectors.is_empty() {
        return true;
    }
    ad.ip_address_pools.iter().any(|p| **p == *pool.name)
        || ad
            .ip_address_pool_selectors
            .iter()
            .any(|s| s.matches(&pool.labels))
}

/// True when the advertisement's `serviceSelectors` admit the Service (empty ⇒ all).
pub fn ad_selects_service(ad: &L2Adv, svc: &ServiceView) -> bool {
    ad.service_selectors.is_empty() || ad.service_selectors.iter().any(|s| s.matches(&svc.labels))
}

/// True when the advertisement's `nodeSelectors` admit the node (empty ⇒ all).
pub fn ad_selects_node(ad: &L2Adv, node: &NodeInfo) -> bool {
    ad.node_selectors.is_empty() || ad.node_selectors.iter().any(|s| s.matches(&node.labels))
}

/// MetalLB's `adsForService`: the ads covering the Service's pool, filtered only by
/// `serviceSelectors` (never by node, so every speaker sees the same list). In config order.
pub fn ads_for_service<'c>(config: &'c Config, svc: &ServiceView) -> Vec<&'c L2Adv> {
    let Some(pool) = svc.pool.as_ref().and_then(|p| config.pools.get(&**p)) else {
        return Vec::new();
    };
    config
        .l2_advertisements
        .iter()
        .filter(|ad| ad_covers_pool(ad, pool) && ad_selects_service(ad, svc))
        .collect()
}

/// Node-level health checks that do not depend on the Service.
pub fn node_health(node: &NodeInfo, opts: &ElectionOptions) -> Result<(), Reason> {
    if !node.speaker_alive {
        return Err(Reason::SpeakerNotAlive);
    }
    if node.network_unavailable {
        return Err(Reason::NetworkUnavailable);
    }
    if !opts.ignore_exclude_lb && node.excluded_from_lb() {
        return Err(Reason::ExcludedFromLoadBalancers);
    }
    Ok(())
}

/// Preferred-node score of `node` over `ads`: for every ad whose `nodeSelectors` admit
/// the node, the weights of its matching `preferredNodeSelectors` are added.
pub fn preferred_score<'a>(ads: impl IntoIterator<Item = &'a L2Adv>, node: &NodeInfo) -> i64 {
    ads.into_iter()
        .filter(|ad| ad_selects_node(ad, node))
        .flat_map(|ad| ad.preferred_node_selectors.iter())
        .filter(|(_, sel)| sel.matches(&node.labels))
        .map(|(w, _)| i64::from(*w))
        .sum()
}

/// Interfaces to announce on from `node`: union over the ads selecting it; `None` when no
/// ad selects the node.
pub fn interfaces_for<'a>(
    ads: impl IntoIterator<Item = &'a L2Adv>,
    node: &NodeInfo,
) -> Option<Interfaces> {
    ads.into_iter()
        .filter(|ad| ad_selects_node(ad, node))
        .map(Interfaces::of_ad)
        .reduce(|a, b| a.union(&b))
}

/// One node that may announce a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Node name (the [`NodeInfo`]'s, shared).
    pub node: Arc<str>,
    /// Preferred-node score (sum of weights, see [`preferred_score`]).
    pub score: i64,
    /// Interfaces to announce on.
    pub interfaces: Interfaces,
}

/// The eligible nodes of one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCandidates {
    /// Names of the ads that apply to the Service (see [`ads_for_service`]).
    pub ads: Vec<String>,
    /// Eligible nodes by name (never empty).
    pub candidates: BTreeMap<Arc<str>, Candidate>,
}

/// Service-level checks, in MetalLB's order: pool, serving endpoints, ads, shared IP with
/// service selectors. Returns the applicable ads.
pub fn service_ads<'c>(config: &'c Config, svc: &ServiceView) -> Result<Vec<&'c L2Adv>, Reason> {
    if svc
        .pool
        .as_ref()
        .is_none_or(|p| !config.pools.contains_key(&**p))
    {
        return Err(Reason::IpNotInPool);
    }
    if !svc.has_serving_endpoint {
        return Err(Reason::NoServingEndpoints);
    }
    let ads = ads_for_service(config, svc);
    if ads.is_empty() {
        return Err(Reason::NoMatchingAdvertisement);
    }
    if svc.sharing_key.is_some() && ads.iter().any(|a| !a.service_selectors.is_empty()) {
        return Err(Reason::SharedIpWithServiceSelector);
    }
    Ok(ads)
}

/// Why `node` may not announce `svc` given the applicable `ads` (`None`: it may), and
/// the interfaces it would use.
pub fn node_candidacy(
    svc: &ServiceView,
    ads: &[&L2Adv],
    node: &NodeInfo,
    opts: &ElectionOptions,
) -> Result<Candidate, Reason> {
    let interfaces =
        interfaces_for(ads.iter().copied(), node).ok_or(Reason::NoMatchingAdvertisement)?;
    node_health(node, opts)?;
    if svc.etp_local && !svc.serving_endpoint_nodes.contains(&node.name) {
        return Err(Reason::NoLocalEndpoint);
    }
    Ok(Candidate {
        node: node.name.clone(),
        score: preferred_score(ads.iter().copied(), node),
        interfaces,
    })
}

/// All eligible nodes of `svc`, or the service-level reason nobody may announce it.
/// `nodes` must have unique names (see [`super::elect_all`] for how duplicates are handled).
pub fn service_candidates<'n>(
    config: &Config,
    svc: &ServiceView,
    nodes: impl IntoIterator<Item = &'n NodeInfo>,
    opts: &ElectionOptions,
) -> Result<ServiceCandidates, Reason> {
    let ads = service_ads(config, svc)?;
    let candidates: BTreeMap<Arc<str>, Candidate> = nodes
        .into_iter()
        .filter_map(|n| node_candidacy(svc, &ads, n, opts).ok())
        .map(|c| (c.node.clone(), c))
        .collect();
    if candidates.is_empty() {
        return Err(Reason::NoEligibleNode);
    }
    Ok(ServiceCandidates {
        ads: ads.iter().map(|a| a.name.clone()).collect(),
        candidates,
    })
}

//! Owner election per IP: MetalLB's ranking, made sticky, and the whole-cluster map.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{Config, L2Adv};

use super::eligibility::{
    interfaces_for, node_candidacy, node_health, preferred_score, service_ads, Candidate,
    ElectionOptions, Interfaces, Reason,
};
use super::model::{NodeInfo, ServiceView};

/// The IP string MetalLB hashes: Go's `net.IP.String()` (dotted IPv4, RFC 5952 IPv6,
/// IPv4-mapped IPv6 printed as IPv4).
pub fn go_ip_string(ip: IpAddr) -> String {
    super::model::canonical_ip(ip).to_string()
}

/// `SHA-256(node + "#" + ip)`, MetalLB's tie-breaker.
pub fn election_hash(node: &str, ip: IpAddr) -> [u8; 32] {
    hash_with(node, &go_ip_string(ip))
}

fn hash_with(node: &str, ip: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(b"#");
    h.update(ip.as_bytes());
    h.finalize().into()
}

/// The best-ranked candidate (one hash per candidate).
fn best_ranked(anchor: IpAddr, candidates: &[Candidate]) -> Option<&Candidate> {
    let a = go_ip_string(anchor);
    candidates
        .iter()
        .map(|c| {
            (
                (std::cmp::Reverse(c.score), hash_with(&c.node, &a), &c.node),
                c,
            )
        })
        .min_by(|x, y| x.0.cmp(&y.0))
        .map(|(_, c)| c)
}

/// Sorts candidates in MetalLB order for hash key `anchor`: score descending, then
/// `SHA-256(node#anchor)` ascending (bytewise), then name (only for equal hashes).
pub fn rank_candidates(anchor: IpAddr, candidates: &mut [Candidate]) {
    let a = go_ip_string(anchor);
    candidates.sort_by_cached_key(|c| {
        (
            std::cmp::Reverse(c.score),
            hash_with(&c.node, &a),
            c.node.clone(),
        )
    });
}

/// Compares two candidates in rank order (see [`rank_candidates`]).
pub fn rank_cmp(anchor: IpAddr, a: &Candidate, b: &Candidate) -> Ordering {
    b.score
        .cmp(&a.score)
        .then_with(|| election_hash(&a.node, anchor).cmp(&election_hash(&b.node, anchor)))
        .then_with(|| a.node.cmp(&b.node))
}

/// Elects the owner of one IP among `candidates` (any order).
///
/// * Sticky (default): a `current_owner` that is still among the candidates keeps the IP.
/// * Otherwise, or with `revertive`, the best-ranked candidate (MetalLB's choice) wins.
/// * No candidates: nobody.
pub fn elect<'a>(
    anchor: IpAddr,
    candidates: &'a [Candidate],
    current_owner: Option<&str>,
    revertive: bool,
) -> Option<&'a Candidate> {
    if !revertive {
        if let Some(cur) = current_owner {
            if let Some(c) = candidates.iter().find(|c| *c.node == *cur) {
                return Some(c);
            }
        }
    }
    best_ranked(anchor, candidates)
}

/// Who announces one IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// The owner node: the [`NodeInfo`]'s name, shared (one allocation per node, however
    /// many IPs it owns).
    pub node: Arc<str>,
    /// Interfaces the owner announces the IP on (union over the announced Services).
    pub interfaces: Interfaces,
    /// Keys (`namespace/name`) of the Services announced through this IP; shared with the
    /// copies the speaker keeps of what it announces.
    pub services: NameSet,
    /// The IP string hashed for this IP (see the module rules on anchors).
    pub anchor: IpAddr,
    /// True when the owner was kept by stickiness although another candidate ranks first.
    pub sticky: bool,
}

/// Names (Service keys, node names), sorted and without duplicates, in one shared slice
/// of shared strings: an IP is nearly always announced for one Service and a Service
/// served from a few nodes, so a set costs one small allocation, a copy none, and a name
/// taken from its owner (the speaker's index) none.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct NameSet(Arc<[Arc<str>]>);

impl NameSet {
    /// Whether `key` is one of the keys.
    pub fn contains(&self, key: &str) -> bool {
        self.0.binary_search_by(|k| (**k).cmp(key)).is_ok()
    }

    /// The keys, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<str>> {
        self.0.iter()
    }

    /// The keys of `self` that are not in `other`, in order.
    pub fn difference<'a>(&'a self, other: &'a NameSet) -> impl Iterator<Item = &'a Arc<str>> {
        self.iter().filter(move |k| !other.contains(k))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many copies of this allocation exist (an owner that shares its sets can drop
    /// those it alone holds).
    pub fn copies(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Whether `a` and `b` are the same allocation (one is a copy of the other).
    pub fn ptr_eq(a: &NameSet, b: &NameSet) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<K: Into<Arc<str>>> FromIterator<K> for NameSet {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        let mut keys: Vec<Arc<str>> = iter.into_iter().map(Into::into).collect();
        keys.sort_unstable();
        keys.dedup();
        NameSet(keys.into())
    }
}

impl<'a> IntoIterator for &'a NameSet {
    type Item = &'a Arc<str>;
    type IntoIter = std::slice::Iter<'a, Arc<str>>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for NameSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The outcome of [`elect_all`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Election {
    /// The desired owner of every announced IP.
    pub owners: BTreeMap<IpAddr, Ownership>,
    /// Service IPs nobody announces for that Service, with the reason, keyed by
    /// (service key, IP). An IP can be announced for some sharing Services and not others.
    pub not_announced: BTreeMap<(String, IpAddr), Reason>,
}

impl Election {
    /// The IPs `node` must announce, with their ownership.
    pub fn announced_by<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (IpAddr, &'a Ownership)> + 'a {
        self.owners
            .iter()
            .filter(move |(_, o)| *o.node == *node)
            .map(|(ip, o)| (*ip, o))
    }

    /// Owner node names by IP (the `current` input of the next [`elect_all`]).
    pub fn owner_map(&self) -> BTreeMap<IpAddr, Arc<str>> {
        self.owners
            .iter()
            .map(|(ip, o)| (*ip, o.node.clone()))
            .collect()
    }

    /// Why `node` does not announce `svc`'s `ip` (`Ok` = it does), for logs and status.
    /// Node-level reasons (e.g. [`Reason::ExcludedFromLoadBalancers`]) are given in
    /// preference to [`Reason::NotOwner`] so an operator sees why a node is out.
    pub fn decision_for(
        &self,
        config: &Config,
        svc: &ServiceView,
        ip: IpAddr,
        node: &NodeInfo,
        opts: &ElectionOptions,
    ) -> Result<&Ownership, Reason> {
        if let Some(r) = self.not_announced.get(&(svc.key.to_string(), ip)) {
            return Err(r.clone());
        }
        let Some(own) = self
            .owners
            .get(&ip)
            .filter(|o| o.services.contains(&svc.key))
        else {
            return Err(Reason::NoEligibleNode);
        };
        if own.node == node.name {
            return Ok(own);
        }
        let ads = service_ads(config, svc)?;
        node_candidacy(svc, &ads, node, opts)?;
        Err(Reason::NotOwner {
            owner: own.node.to_string(),
        })
    }
}

/// Computes the desired owner of every IP of every Service, deterministically (the result
/// does not depend on the order of `services` or `nodes`). `services` is read once, by
/// reference (no view is copied).
///
/// `current` holds the present owner of each IP (from owner records); it only matters in
/// sticky mode. Rules (see the module documentation): duplicated Service keys and
/// duplicated node names are ignored (reasons [`Reason::DuplicateService`] /
/// node unknown); the candidate set of a shared IP is the set of nodes eligible for the
/// largest number of its announceable Services (their intersection when it is non-empty).
pub fn elect_all<'s>(
    config: &Config,
    services: impl IntoIterator<Item = &'s ServiceView>,
    nodes: &[NodeInfo],
    current: &BTreeMap<IpAddr, Arc<str>>,
    opts: &ElectionOptions,
) -> Election {
    let mut out = Election::default();

    // Unique nodes by name, sorted by name; a duplicated name is dropped entirely.
    let mut by_name: BTreeMap<&str, Option<&NodeInfo>> = BTreeMap::new();
    for n in nodes {
        by_name
            .entry(&*n.name)
            .and_modify(|e| *e = None)
            .or_insert(Some(n));
    }
    let nodes: Vec<&NodeInfo> = by_name.values().filter_map(|n| *n).collect();
    let index_of = |name: &str| nodes.binary_search_by(|n| (*n.name).cmp(name)).ok();

    // Unique services by key; a duplicated key is never announced.
    let mut by_key: BTreeMap<&str, Vec<&ServiceView>> = BTreeMap::new();
    for s in services {
        by_key.entry(&s.key).or_default().push(s);
    }
    let mut svcs: Vec<&ServiceView> = Vec::new();
    for (key, list) in &by_key {
        if list.len() > 1 {
            for s in list {
                for ip in &s.ips {
                    out.not_announced
                        .insert((key.to_string(), *ip), Reason::DuplicateService);
                }
            }
        } else {
            svcs.push(list[0]);
        }
    }

    // Per-service eligible nodes. A node's candidacy depends on the Service only through
    // its applicable ads and its `Local` endpoints: it is computed once per list of ads.
    let mut tables: Vec<AdsTable> = Vec::new();
    let mut evals: BTreeMap<&str, Eval> = BTreeMap::new();
    for s in &svcs {
        let ads = match service_ads(config, s) {
            Ok(ads) => ads,
            Err(r) => {
                for ip in &s.ips {
                    out.not_announced
                        .insert((s.key.to_string(), *ip), r.clone());
                }
                continue;
            }
        };
        let table = match tables.iter().position(|t| same_ads(&t.ads, &ads)) {
            Some(t) => t,
            None => {
                tables.push(AdsTable::new(ads, &nodes, opts));
                tables.len() - 1
            }
        };
        let local = s.etp_local.then(|| {
            s.serving_endpoint_nodes
                .iter()
                .filter_map(|n| index_of(n))
                .filter(|i| tables[table].nodes[*i].is_some())
                .collect::<Vec<usize>>()
        });
        let eval = Eval { table, local };
        if eval.eligible(&tables).is_empty() {
            for ip in &s.ips {
                out.not_announced
                    .insert((s.key.to_string(), *ip), Reason::NoEligibleNode);
            }
            continue;
        }
        evals.insert(&s.key, eval);
    }

    // Services by IP (all valid ones, for the anchor; svcs is sorted by key).
    let mut by_ip: BTreeMap<IpAddr, Vec<&ServiceView>> = BTreeMap::new();
    for s in &svcs {
        for ip in &s.ips {
            by_ip.entry(*ip).or_default().push(s);
        }
    }

    // in IP order, collected at the end: a tree built at once has its nodes full
    let mut owners: Vec<(IpAddr, Ownership)> = Vec::with_capacity(by_ip.len());
    for (ip, sharers) in &by_ip {
        let anchor = anchor_ip(*ip, sharers);
        let announceable: Vec<(&ServiceView, &Eval)> = sharers
            .iter()
            .filter_map(|s| evals.get(&*s.key).map(|e| (*s, e)))
            .collect();
        let cur = current.get(ip).and_then(|c| index_of(c));
        let (winner, best) = match announceable.as_slice() {
            [] => continue,
            // One Service: its eligible nodes, scored by its ads.
            [(_, e)] => {
                let table = &tables[e.table];
                let cands = e.eligible(&tables);
                // the best score first, then the least hash among those with it: only
                // they are hashed
                let score = |i: &usize| table.nodes[*i].as_ref().map_or(0, |n| n.score);
                let top = cands.iter().map(score).max();
                let a = go_ip_string(anchor);
                let best = cands
                    .iter()
                    .filter(|i| Some(score(i)) == top)
                    .min_by_key(|i| hash_with(&nodes[**i].name, &a))
                    .copied()
                    .expect("an evaluated Service has an eligible node");
                let kept = cur.filter(|c| !opts.revertive && cands.binary_search(c).is_ok());
                (kept.unwrap_or(best), best)
            }
            // A shared IP: the nodes eligible for the most of its Services, scored by the
            // ads of all of them.
            many => {
                let mut coverage = vec![0usize; nodes.len()];
                for (_, e) in many {
                    for i in e.eligible(&tables) {
                        coverage[*i] += 1;
                    }
                }
                let max = coverage.iter().copied().max().unwrap_or(0);
                let mut ads: Vec<&L2Adv> = Vec::new();
                for (_, e) in many {
                    for a in &tables[e.table].ads {
                        if !ads.iter().any(|x| x.name == a.name) {
                            ads.push(a);
                        }
                    }
                }
                let candidates: Vec<Candidate> = nodes
                    .iter()
                    .zip(&coverage)
                    .filter(|(_, c)| **c == max)
                    .map(|(n, _)| Candidate {
                        node: n.name.clone(),
                        score: preferred_score(ads.iter().copied(), n),
                        interfaces: interfaces_for(ads.iter().copied(), n)
                            .unwrap_or(Interfaces::All),
                    })
                    .collect();
                let cur = cur.map(|c| &*nodes[c].name);
                let Some(winner) = elect(anchor, &candidates, cur, opts.revertive) else {
                    continue;
                };
                let best = if opts.revertive {
                    Some(winner)
                } else {
                    best_ranked(anchor, &candidates)
                };
                let index = |c: &Candidate| index_of(&c.node).expect("a candidate is a node");
                (index(winner), best.map_or(index(winner), index))
            }
        };
        let mut services = Vec::new();
        let mut interfaces: Option<Interfaces> = None;
        for (s, e) in &announceable {
            let eligible = e.eligible(&tables).binary_search(&winner).is_ok();
            match tables[e.table].nodes[winner].as_ref().filter(|_| eligible) {
                Some(n) => {
                    services.push(s.key.clone());
                    interfaces = Some(match interfaces {
                        None => n.interfaces.clone(),
                        Some(i) => i.union(&n.interfaces),
                    });
                }
                None => {
                    out.not_announced
                        .insert((s.key.to_string(), *ip), Reason::SharedIpOwnerNotEligible);
                }
            }
        }
        owners.push((
            *ip,
            Ownership {
                node: nodes[winner].name.clone(),
                interfaces: interfaces.unwrap_or(Interfaces::All),
                services: services.into_iter().collect(),
                anchor,
                sticky: best != winner,
            },
        ));
    }
    out.owners = owners.into_iter().collect();
    out
}

/// A node's candidacy for every Service with one list of applicable ads, but for
/// `externalTrafficPolicy: Local` (what [`node_candidacy`] gives).
struct NodeCandidacy {
    /// Preferred-node score over the ads, each name counted once (as an IP's candidates
    /// are scored).
    score: i64,
    /// Interfaces to announce on.
    interfaces: Interfaces,
}

/// The candidacy of every node (by index in the name-sorted nodes; `None`: not eligible)
/// for one list of applicable ads.
struct AdsTable<'c> {
    ads: Vec<&'c L2Adv>,
    nodes: Vec<Option<NodeCandidacy>>,
    /// Indices of the eligible nodes, ascending.
    eligible: Vec<usize>,
}

impl<'c> AdsTable<'c> {
    fn new(ads: Vec<&'c L2Adv>, nodes: &[&NodeInfo], opts: &ElectionOptions) -> Self {
        let mut named: Vec<&L2Adv> = Vec::new();
        for a in &ads {
            if !named.iter().any(|x| x.name == a.name) {
                named.push(a);
            }
        }
        let candidacy: Vec<Option<NodeCandidacy>> = nodes
            .iter()
            .map(|n| {
                let interfaces = interfaces_for(ads.iter().copied(), n)?;
                node_health(n, opts).ok()?;
                Some(NodeCandidacy {
                    score: preferred_score(named.iter().copied(), n),
                    interfaces,
                })
            })
            .collect();
        let eligible = (0..nodes.len())
            .filter(|i| candidacy[*i].is_some())
            .collect();
        AdsTable {
            ads,
            nodes: candidacy,
            eligible,
        }
    }
}

/// Whether two lists hold the same ads of one configuration, in the same order.
fn same_ads(a: &[&L2Adv], b: &[&L2Adv]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| std::ptr::eq(*x, *y))
}

/// One announceable Service: its table of ads, and its eligible nodes when they are not
/// all of the table's (`Local` policy: the eligible nodes hosting a serving endpoint).
struct Eval {
    table: usize,
    local: Option<Vec<usize>>,
}

impl Eval {
    /// The eligible nodes, ascending.
    fn eligible<'a>(&'a self, tables: &'a [AdsTable]) -> &'a [usize] {
        self.local
            .as_deref()
            .unwrap_or(&tables[self.table].eligible)
    }
}

/// The IP hashed for `ip`, given the Services carrying it (sorted by key): `ip` itself when
/// it is the first ingress IP of any of them (always the case for single-IP Services),
/// otherwise the first ingress IP of the first Service by key (the IPv4 of a dual-stack
/// Service, so both its IPs land on one node exactly as in MetalLB).
pub fn anchor_ip(ip: IpAddr, sharers: &[&ServiceView]) -> IpAddr {
    if sharers.iter().any(|s| s.first_ip() == Some(ip)) {
        return ip;
    }
    sharers.first().and_then(|s| s.first_ip()).unwrap_or(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_set_is_sorted_and_shared() {
        let k: NameSet = ["ns/b", "ns/a", "ns/b"].into_iter().collect();
        assert_eq!(k.len(), 2);
        assert_eq!(k.iter().map(|s| &**s).collect::<Vec<_>>(), ["ns/a", "ns/b"]);
        assert!(k.contains("ns/a") && k.contains("ns/b") && !k.contains("ns/c"));
        let a: NameSet = ["ns/a"].into_iter().collect();
        assert_eq!(k.difference(&a).map(|s| &**s).collect::<Vec<_>>(), ["ns/b"]);
        assert_eq!(a.difference(&k).count(), 0);
        assert_eq!(format!("{k:?}"), r#"{"ns/a", "ns/b"}"#);
        let copy = k.clone();
        assert!(NameSet::ptr_eq(&k, &copy) && !NameSet::ptr_eq(&k, &a));
        assert!(NameSet::default().is_empty());
    }

    #[test]
    fn owners_share_their_nodes_name() {
        let pool = crate::config::Pool {
            name: "p".into(),
            labels: Default::default(),
            cidrs: vec!["10.0.0.0/24".parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            frozen: false,
        };
        let cfg = Config {
            pools: [("p".to_string(), pool)].into(),
            l2_advertisements: vec![L2Adv {
                name: "all".into(),
                ..Default::default()
            }],
        };
        let nodes = vec![NodeInfo::new("a"), NodeInfo::new("b")];
        let svcs: Vec<ServiceView> = (1..=20)
            .map(|i| {
                ServiceView::new(
                    format!("ns/s{i}"),
                    vec![format!("10.0.0.{i}").parse().unwrap()],
                    Some("p"),
                )
            })
            .collect();
        // current owners named by allocations of their own (as decoded from claims)
        let current: BTreeMap<IpAddr, Arc<str>> = svcs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.ips[0], Arc::from(["a", "b"][i % 2])))
            .collect();
        let e = elect_all(&cfg, &svcs, &nodes, &current, &ElectionOptions::default());
        assert_eq!(e.owners.len(), 20);
        assert!(e.owners.values().any(|o| &*o.node == "a"));
        assert!(e.owners.values().any(|o| &*o.node == "b"));
        for o in e.owners.values() {
            let node = nodes.iter().find(|n| n.name == o.node).unwrap();
            assert!(Arc::ptr_eq(&o.node, &node.name), "{o:?}");
        }
    }
}

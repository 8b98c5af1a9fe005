//! The whole-cluster election against a reference: [`elect_all`] computes each node's
//! candidacy once per list of advertisements and elects a Service's IP from those; the
//! reference below is the election written plainly — every Service's candidates from
//! [`service_candidates`], every IP's candidates scored again from its Services' ads,
//! ranked with [`rank_cmp`] — and over random clusters (duplicated node names and Service
//! keys, shared IPs, `Local` policies, node and Service selectors, preferred nodes,
//! interfaces, unhealthy and excluded nodes, sticky and revertive owners) both give the same
//! result.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_core::config::{Config, L2Adv, Pool};
use ferrolb_core::election::*;
use ferrolb_core::selector::Selector;
use proptest::prelude::*;

/// The election as the rules state it (see [`elect_all`]'s documentation).
fn reference_elect_all<'s>(
    config: &Config,
    services: impl IntoIterator<Item = &'s ServiceView>,
    nodes: &[NodeInfo],
    current: &BTreeMap<IpAddr, Arc<str>>,
    opts: &ElectionOptions,
) -> Election {
    let mut out = Election::default();

    // Unique nodes by name; a duplicated name is dropped entirely.
    let mut by_name: BTreeMap<&str, Option<&NodeInfo>> = BTreeMap::new();
    for n in nodes {
        by_name
            .entry(&*n.name)
            .and_modify(|e| *e = None)
            .or_insert(Some(n));
    }
    let nodes: Vec<&NodeInfo> = by_name.values().filter_map(|n| *n).collect();

    // Unique services by key; a duplicated key is never announced.
    let mut by_key: BTreeMap<&str, Vec<&ServiceView>> = BTreeMap::new();
    for s in services {
        by_key.entry(&*s.key).or_default().push(s);
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

    // Per-service candidates and ads.
    struct Eval<'c> {
        cands: ServiceCandidates,
        ads: Vec<&'c L2Adv>,
    }
    let mut evals: BTreeMap<&str, Eval> = BTreeMap::new();
    for s in &svcs {
        match service_candidates(config, s, nodes.iter().copied(), opts) {
            Ok(cands) => {
                let ads = service_ads(config, s).unwrap_or_default();
                evals.insert(&*s.key, Eval { cands, ads });
            }
            Err(r) => {
                for ip in &s.ips {
                    out.not_announced
                        .insert((s.key.to_string(), *ip), r.clone());
                }
            }
        }
    }

    // Services by IP (all valid ones, for the anchor; svcs is sorted by key).
    let mut by_ip: BTreeMap<IpAddr, Vec<&ServiceView>> = BTreeMap::new();
    for s in &svcs {
        for ip in &s.ips {
            by_ip.entry(*ip).or_default().push(s);
        }
    }

    for (ip, sharers) in &by_ip {
        let anchor = anchor_ip(*ip, sharers);
        let announceable: Vec<(&ServiceView, &Eval)> = sharers
            .iter()
            .filter_map(|s| evals.get(&*s.key).map(|e| (*s, e)))
            .collect();
        if announceable.is_empty() {
            continue;
        }
        // Coverage: for how many announceable sharers each node is eligible.
        let mut coverage: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, e) in &announceable {
            for n in e.cands.candidates.keys() {
                *coverage.entry(&**n).or_default() += 1;
            }
        }
        let max = coverage.values().copied().max().unwrap_or(0);
        // Ads of all announceable sharers (deduplicated by name) score the nodes.
        let mut ads: Vec<&L2Adv> = Vec::new();
        for (_, e) in &announceable {
            for a in &e.ads {
                if !ads.iter().any(|x| x.name == a.name) {
                    ads.push(a);
                }
            }
        }
        let candidates: Vec<Candidate> = nodes
            .iter()
            .filter(|n| coverage.get(&*n.name) == Some(&max))
            .map(|n| Candidate {
                node: n.name.clone(),
                score: preferred_score(ads.iter().copied(), n),
                interfaces: interfaces_for(ads.iter().copied(), n).unwrap_or(Interfaces::All),
            })
            .collect();
        let cur = current.get(ip).map(|c| &**c);
        let Some(winner) = elect(anchor, &candidates, cur, opts.revertive) else {
            continue;
        };
        let best = if opts.revertive {
            Some(winner)
        } else {
            candidates.iter().min_by(|a, b| rank_cmp(anchor, a, b))
        };
        let mut services = Vec::new();
        let mut interfaces: Option<Interfaces> = None;
        for (s, e) in &announceable {
            match e.cands.candidates.get(&winner.node) {
                Some(c) => {
                    services.push(s.key.clone());
                    interfaces = Some(match interfaces {
                        None => c.interfaces.clone(),
                        Some(i) => i.union(&c.interfaces),
                    });
                }
                None => {
                    out.not_announced
                        .insert((s.key.to_string(), *ip), Reason::SharedIpOwnerNotEligible);
                }
            }
        }
        out.owners.insert(
            *ip,
            Ownership {
                node: winner.node.clone(),
                interfaces: interfaces.unwrap_or(Interfaces::All),
                services: services.into_iter().collect(),
                anchor,
                sticky: best.is_some_and(|b| b.node != winner.node),
            },
        );
    }
    out
}

const NODES: usize = 6;
const IPS: usize = 6;

fn ip(i: usize) -> IpAddr {
    if i % 3 == 2 {
        format!("fd00::{}", i + 1).parse().unwrap()
    } else {
        format!("10.20.30.{}", i + 1).parse().unwrap()
    }
}

#[derive(Clone, Debug)]
struct N {
    /// Index of the name: two nodes may share one.
    name: usize,
    lb: bool,
    zone_a: bool,
    alive: bool,
    network_unavailable: bool,
    excluded: bool,
}

#[derive(Clone, Debug)]
struct S {
    key: usize,
    ips: Vec<usize>,
    endpoints: BTreeSet<usize>,
    local: bool,
    sharing: Option<u8>,
    front: bool,
    pool: u8,
}

fn node_strategy() -> impl Strategy<Value = N> {
    (
        0..NODES + 1,
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(name, lb, zone_a, alive, network_unavailable, excluded)| N {
                name,
                lb,
                zone_a,
                alive,
                network_unavailable,
                excluded,
            },
        )
}

fn svc_strategy() -> impl Strategy<Value = S> {
    (
        0..12usize,
        prop::collection::vec(0..IPS, 1..3),
        prop::collection::btree_set(0..NODES + 1, 0..4),
        any::<bool>(),
        prop::option::of(0..2u8),
        any::<bool>(),
        prop::sample::select(vec![0u8, 0, 0, 1, 2]),
    )
        .prop_map(|(key, ips, endpoints, local, sharing, front, pool)| S {
            key,
            ips,
            endpoints,
            local,
            sharing,
            front,
            pool,
        })
}

fn node(n: &N) -> NodeInfo {
    let mut info =
        NodeInfo::new(format!("n{}", n.name)).with_label("lb", if n.lb { "yes" } else { "no" });
    if n.zone_a {
        info.labels.insert("zone".into(), "a".into());
    }
    if n.excluded {
        info.labels.insert(EXCLUDE_LB_LABEL.into(), String::new());
    }
    info.speaker_alive = n.alive;
    info.network_unavailable = n.network_unavailable;
    info
}

fn view(s: &S) -> ServiceView {
    let mut ips: Vec<IpAddr> = Vec::new();
    for k in &s.ips {
        if !ips.contains(&ip(*k)) {
            ips.push(ip(*k));
        }
    }
    let pool = ["default", "other", "missing"][usize::from(s.pool)];
    let mut v = ServiceView::new(format!("ns/s{}", s.key), ips, Some(pool));
    v.etp_local = s.local;
    v.sharing_key = s.sharing.map(|k| format!("k{k}"));
    v.serving_endpoint_nodes = s.endpoints.iter().map(|n| format!("n{n}")).collect();
    v.has_serving_endpoint = !s.endpoints.is_empty();
    if s.front {
        v.labels.insert("tier", "front");
    }
    v
}

/// A pool over 10.20.30.0/24 and fd00::/64, labelled `tier` when given.
pub(crate) fn pool(name: &str, tier: Option<&str>) -> Pool {
    Pool {
        name: name.into(),
        labels: tier
            .map(|t| [("tier".to_string(), t.to_string())].into())
            .unwrap_or_default(),
        cidrs: vec![
            "10.20.30.0/24".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
        ],
        auto_assign: true,
        avoid_buggy_ips: false,
        allocation: None,
        frozen: false,
    }
}

/// Advertisements: `which` picks a subset of five, some with the same name.
fn config(which: u8) -> Config {
    let all = [
        L2Adv {
            name: "lb".into(),
            node_selectors: vec![Selector::from_labels([("lb", "yes")])],
            preferred_node_selectors: vec![(50, Selector::from_labels([("zone", "a")]))],
            ..Default::default()
        },
        L2Adv {
            name: "front".into(),
            service_selectors: vec![Selector::from_labels([("tier", "front")])],
            interfaces: vec!["eth1".into()],
            preferred_node_selectors: vec![(20, Selector::from_labels([("lb", "no")]))],
            ..Default::default()
        },
        L2Adv {
            name: "other-pool".into(),
            ip_address_pools: vec!["other".into()],
            interfaces: vec!["eth2".into()],
            node_selectors: vec![Selector::from_labels([("zone", "a")])],
            ..Default::default()
        },
        L2Adv {
            name: "by-label".into(),
            ip_address_pool_selectors: vec![Selector::from_labels([("tier", "gold")])],
            interfaces: vec!["eth3".into(), "eth1".into()],
            preferred_node_selectors: vec![
                (5, Selector::from_labels([("zone", "a")])),
                (7, Selector::from_labels([("lb", "yes")])),
            ],
            ..Default::default()
        },
        L2Adv {
            name: "lb".into(),
            interfaces: vec!["eth4".into()],
            preferred_node_selectors: vec![(9, Selector::from_labels([("lb", "no")]))],
            ..Default::default()
        },
    ];
    let mut pools = BTreeMap::new();
    pools.insert("default".to_string(), pool("default", None));
    pools.insert("other".to_string(), pool("other", Some("gold")));
    Config {
        pools,
        l2_advertisements: all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| which & (1 << i) != 0)
            .map(|(_, a)| a)
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn the_election_equals_the_reference(
        ns in prop::collection::vec(node_strategy(), 0..NODES + 2),
        ss in prop::collection::vec(svc_strategy(), 0..14),
        which in 0..32u8,
        current in prop::collection::btree_map(0..IPS, 0..NODES + 1, 0..IPS),
        revertive in any::<bool>(),
        ignore_exclude_lb in any::<bool>(),
    ) {
        let cfg = config(which);
        let nodes: Vec<NodeInfo> = ns.iter().map(node).collect();
        let views: Vec<ServiceView> = ss.iter().map(view).collect();
        let current: BTreeMap<IpAddr, Arc<str>> =
            current.into_iter().map(|(i, n)| (ip(i), format!("n{n}").into())).collect();
        let opts = ElectionOptions { revertive, ignore_exclude_lb };
        let want = reference_elect_all(&cfg, &views, &nodes, &current, &opts);
        prop_assert_eq!(elect_all(&cfg, &views, &nodes, &current, &opts), want);
    }
}

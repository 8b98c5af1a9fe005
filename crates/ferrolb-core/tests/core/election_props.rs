//! Property tests of the whole-cluster election over random sequences of node joins,
//! leaves and eligibility changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_core::config::{Config, L2Adv, Pool};
use ferrolb_core::election::*;
use ferrolb_core::selector::Selector;
use proptest::prelude::*;

const NODES: usize = 5;
const IPS: u8 = 10;

#[derive(Clone, Debug)]
enum Ev {
    Leave(usize),
    Join(usize),
    NetworkUnavailable(usize, bool),
    Exclude(usize, bool),
    Selected(usize, bool),
    Endpoints(usize, BTreeSet<usize>),
}

fn ev() -> impl Strategy<Value = Ev> {
    let n = 0..NODES;
    prop_oneof![
        n.clone().prop_map(Ev::Leave),
        n.clone().prop_map(Ev::Join),
        (n.clone(), any::<bool>()).prop_map(|(i, b)| Ev::NetworkUnavailable(i, b)),
        (n.clone(), any::<bool>()).prop_map(|(i, b)| Ev::Exclude(i, b)),
        (n.clone(), any::<bool>()).prop_map(|(i, b)| Ev::Selected(i, b)),
        (0..16usize, prop::collection::btree_set(0..NODES, 0..4))
            .prop_map(|(s, e)| Ev::Endpoints(s, e)),
    ]
}

/// Service templates: (ip index, local?, sharing). Services 0..16 over 10 IPs, some shared.
fn services(spec: &[(u8, bool)], eps: &[BTreeSet<usize>]) -> Vec<ServiceView> {
    spec.iter()
        .enumerate()
        .map(|(i, (ipi, local))| {
            let ip: IpAddr = format!("10.20.30.{}", ipi + 1).parse().unwrap();
            let mut s = ServiceView::new(format!("ns/s{i}"), vec![ip], Some("default"));
            s.sharing_key = Some("k".into());
            s.etp_local = *local;
            s.serving_endpoint_nodes = eps[i].iter().map(|n| format!("n{n}")).collect();
            s.has_serving_endpoint = !eps[i].is_empty();
            s
        })
        .collect()
}

fn config() -> Config {
    let mut pools = BTreeMap::new();
    pools.insert(
        "default".to_string(),
        Pool {
            name: "default".into(),
            labels: Default::default(),
            cidrs: vec!["10.20.30.0/24".parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            frozen: false,
        },
    );
    Config {
        pools,
        l2_advertisements: vec![L2Adv {
            name: "lb".into(),
            node_selectors: vec![Selector::from_labels([("lb", "yes")])],
            preferred_node_selectors: vec![(50, Selector::from_labels([("zone", "a")]))],
            ..Default::default()
        }],
    }
}

/// Independent oracle: is node `n` eligible for service `s`?
fn oracle_eligible(n: &NodeInfo, s: &ServiceView) -> bool {
    n.speaker_alive
        && !n.network_unavailable
        && !n.labels.contains_key(EXCLUDE_LB_LABEL)
        && n.labels.get("lb").map(String::as_str) == Some("yes")
        && s.has_serving_endpoint
        && (!s.etp_local || s.serving_endpoint_nodes.contains(&n.name))
}

/// Oracle candidate set of an IP: nodes eligible for the most announceable sharers.
fn oracle_candidates(ip: IpAddr, nodes: &[NodeInfo], svcs: &[ServiceView]) -> BTreeSet<Arc<str>> {
    let sharers: Vec<&ServiceView> = svcs.iter().filter(|s| s.ips.contains(&ip)).collect();
    let count = |n: &NodeInfo| sharers.iter().filter(|s| oracle_eligible(n, s)).count();
    let max = nodes.iter().map(count).max().unwrap_or(0);
    if max == 0 {
        return BTreeSet::new();
    }
    nodes
        .iter()
        .filter(|n| count(n) == max)
        .map(|n| n.name.clone())
        .collect()
}

fn initial_nodes(zone_a: &[bool]) -> Vec<NodeInfo> {
    (0..NODES)
        .map(|i| {
            let mut n = NodeInfo::new(format!("n{i}")).with_label("lb", "yes");
            if zone_a[i] {
                n.labels.insert("zone".into(), "a".into());
            }
            n
        })
        .collect()
}

fn apply(e: &Ev, nodes: &mut [NodeInfo], eps: &mut [BTreeSet<usize>]) {
    match e {
        Ev::Leave(i) => nodes[*i].speaker_alive = false,
        Ev::Join(i) => nodes[*i].speaker_alive = true,
        Ev::NetworkUnavailable(i, b) => nodes[*i].network_unavailable = *b,
        Ev::Exclude(i, b) => {
            if *b {
                nodes[*i].labels.insert(EXCLUDE_LB_LABEL.into(), "".into());
            } else {
                nodes[*i].labels.remove(EXCLUDE_LB_LABEL);
            }
        }
        Ev::Selected(i, b) => {
            nodes[*i]
                .labels
                .insert("lb".into(), if *b { "yes" } else { "no" }.into());
        }
        Ev::Endpoints(s, set) => eps[*s] = set.clone(),
    }
}

fn spec_strategy() -> impl Strategy<Value = (Vec<(u8, bool)>, Vec<BTreeSet<usize>>)> {
    (
        prop::collection::vec((0..IPS, any::<bool>()), 16),
        prop::collection::vec(prop::collection::btree_set(0..NODES, 0..5), 16),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Non-revertive: every step has at most one owner per IP, owners are eligible, every
    /// IP with an eligible node is owned, and an IP moves only when its owner left or
    /// became ineligible. Results do not depend on input order.
    #[test]
    fn sticky_election_moves_only_on_owner_loss(
        (spec, mut eps) in spec_strategy(),
        zone_a in prop::collection::vec(any::<bool>(), NODES),
        events in prop::collection::vec(ev(), 1..40),
    ) {
        let cfg = config();
        let opts = ElectionOptions::default();
        let mut nodes = initial_nodes(&zone_a);
        let mut owners: BTreeMap<IpAddr, Arc<str>> = BTreeMap::new();
        for e in std::iter::once(None).chain(events.iter().map(Some)) {
            if let Some(e) = e {
                apply(e, &mut nodes, &mut eps);
            }
            let svcs = services(&spec, &eps);
            let res = elect_all(&cfg, &svcs, &nodes, &owners, &opts);

            // Order independence (every speaker sees reflector contents in its own order).
            let mut rn = nodes.clone();
            rn.reverse();
            let mut rs = svcs.clone();
            rs.rotate_left(svcs.len() / 3);
            prop_assert_eq!(&res, &elect_all(&cfg, &rs, &rn, &owners, &opts));

            // At most one announcer per IP across the nodes' own views.
            let mut seen = BTreeSet::new();
            for n in &nodes {
                for (ip, _) in res.announced_by(&n.name) {
                    prop_assert!(seen.insert(ip), "{} announced twice", ip);
                }
            }

            for i in 0..IPS {
                let ip: IpAddr = format!("10.20.30.{}", i + 1).parse().unwrap();
                let cands = oracle_candidates(ip, &nodes, &svcs);
                let got = res.owners.get(&ip).map(|o| o.node.clone());
                match &got {
                    Some(o) => prop_assert!(cands.contains(o), "{} owned by ineligible {}", ip, o),
                    None => prop_assert!(cands.is_empty(), "{} unowned, candidates {:?}", ip, cands),
                }
                if let Some(prev) = owners.get(&ip) {
                    if cands.contains(prev) {
                        prop_assert_eq!(got.as_ref(), Some(prev), "{} moved from live eligible owner", ip);
                    }
                }
                // Every Service whose own eligible set contains the owner is served by it.
                if let Some(o) = res.owners.get(&ip) {
                    for s in svcs.iter().filter(|s| s.ips.contains(&ip)) {
                        let n = nodes.iter().find(|n| n.name == o.node).unwrap();
                        prop_assert_eq!(o.services.contains(&s.key), oracle_eligible(n, s));
                    }
                }
            }
            owners = res.owner_map();
        }
    }

    /// Revertive: the owner never depends on history (MetalLB's stateless behaviour), and
    /// with a single unshared Service it is the first of MetalLB's ranking.
    #[test]
    fn revertive_election_is_history_free(
        (spec, mut eps) in spec_strategy(),
        zone_a in prop::collection::vec(any::<bool>(), NODES),
        events in prop::collection::vec(ev(), 1..20),
    ) {
        let cfg = config();
        let opts = ElectionOptions { revertive: true, ..Default::default() };
        let mut nodes = initial_nodes(&zone_a);
        let mut owners = BTreeMap::new();
        for e in &events {
            apply(e, &mut nodes, &mut eps);
            let svcs = services(&spec, &eps);
            let res = elect_all(&cfg, &svcs, &nodes, &owners, &opts);
            prop_assert_eq!(&res, &elect_all(&cfg, &svcs, &nodes, &BTreeMap::new(), &opts));
            for (ip, o) in &res.owners {
                let cands = oracle_candidates(*ip, &nodes, &svcs);
                let best = cands
                    .iter()
                    .map(|n| {
                        let zone = nodes.iter().find(|x| &x.name == n).unwrap().labels.contains_key("zone");
                        (std::cmp::Reverse(if zone { 50 } else { 0 }), election_hash(n, *ip), n.clone())
                    })
                    .min()
                    .unwrap();
                prop_assert_eq!(&o.node, &best.2);
            }
            owners = res.owner_map();
        }
    }
}

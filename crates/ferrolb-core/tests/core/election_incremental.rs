//! Model test of the incremental election: over random sequences of changes to Service
//! views (endpoints, IPs, policy, sharing, duplicated keys, appearing and vanishing), current
//! owners, nodes and the configuration, [`IncrementalElection::elect`] returns after every
//! step exactly what [`elect_all`] returns for the same inputs, and re-elects everything
//! only when the configuration or the nodes changed. The same holds when it is told only
//! the keys whose views changed ([`Views::Changed`], what a speaker's index gives it), with
//! the same scope; and when it is told besides only the IPs whose owner changed
//! ([`Owners::Changed`], what a speaker's claim book gives it), with the same scope and
//! the same IPs re-elected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_core::config::{Config, L2Adv};
use ferrolb_core::election::*;
use ferrolb_core::selector::Selector;
use proptest::prelude::*;

const NODES: usize = 4;
const SERVICES: usize = 10;
const IPS: usize = 8;

fn ip(i: usize) -> IpAddr {
    if i % 4 == 3 {
        format!("fd00::{}", i + 1).parse().unwrap()
    } else {
        format!("10.20.30.{}", i + 1).parse().unwrap()
    }
}

#[derive(Clone, Debug)]
enum Ev {
    /// Service s: serving endpoints on these nodes.
    Endpoints(usize, BTreeSet<usize>),
    /// Service s: these ingress IPs (empty: the Service is gone).
    Ips(usize, Vec<usize>),
    Local(usize, bool),
    /// Service s: sharing key (None: none).
    Sharing(usize, Option<u8>),
    /// Service s: a second view with the same key (true) or not.
    Duplicate(usize, bool),
    /// Service s: the label a selector looks at.
    Label(usize, bool),
    /// The current owner of IP i.
    Current(usize, Option<usize>),
    /// The current owners become the last result's owners (the claims follow).
    Adopt,
    /// Views in another order.
    Rotate(usize),
    NodeAlive(usize, bool),
    NodeSelected(usize, bool),
    /// Which of two configurations.
    Config(bool),
    Revertive(bool),
}

fn ev() -> impl Strategy<Value = Ev> {
    let s = 0..SERVICES;
    let n = 0..NODES;
    prop_oneof![
        4 => (s.clone(), prop::collection::btree_set(0..NODES, 0..4)).prop_map(|(s, e)| Ev::Endpoints(s, e)),
        3 => (s.clone(), prop::collection::vec(0..IPS, 0..3)).prop_map(|(s, i)| Ev::Ips(s, i)),
        1 => (s.clone(), any::<bool>()).prop_map(|(s, b)| Ev::Local(s, b)),
        1 => (s.clone(), prop::option::of(0..2u8)).prop_map(|(s, k)| Ev::Sharing(s, k)),
        1 => (s.clone(), any::<bool>()).prop_map(|(s, b)| Ev::Duplicate(s, b)),
        1 => (s.clone(), any::<bool>()).prop_map(|(s, b)| Ev::Label(s, b)),
        2 => (0..IPS, prop::option::of(n.clone())).prop_map(|(i, o)| Ev::Current(i, o)),
        2 => Just(Ev::Adopt),
        1 => (0..SERVICES).prop_map(Ev::Rotate),
        1 => (n.clone(), any::<bool>()).prop_map(|(i, b)| Ev::NodeAlive(i, b)),
        1 => (n, any::<bool>()).prop_map(|(i, b)| Ev::NodeSelected(i, b)),
        1 => any::<bool>().prop_map(Ev::Config),
        1 => any::<bool>().prop_map(Ev::Revertive),
    ]
}

/// One Service's inputs.
#[derive(Clone, Debug)]
struct Svc {
    ips: Vec<usize>,
    endpoints: BTreeSet<usize>,
    local: bool,
    sharing: Option<u8>,
    duplicate: bool,
    label: bool,
}

fn view(i: usize, s: &Svc) -> ServiceView {
    let mut ips: Vec<IpAddr> = Vec::new();
    for k in &s.ips {
        if !ips.contains(&ip(*k)) {
            ips.push(ip(*k));
        }
    }
    let mut v = ServiceView::new(format!("ns/s{i}"), ips, Some("default"));
    v.etp_local = s.local;
    v.sharing_key = s.sharing.map(|k| format!("k{k}"));
    v.serving_endpoint_nodes = s.endpoints.iter().map(|n| format!("n{n}")).collect();
    v.has_serving_endpoint = !s.endpoints.is_empty();
    if s.label {
        v.labels.insert("tier", "front");
    }
    v
}

fn views(svcs: &[Svc], rotate: usize) -> Vec<ServiceView> {
    let mut out = Vec::new();
    for (i, s) in svcs.iter().enumerate() {
        if s.ips.is_empty() {
            continue;
        }
        out.push(view(i, s));
        if s.duplicate {
            let mut d = view(i, s);
            d.has_serving_endpoint = !d.has_serving_endpoint;
            out.push(d);
        }
    }
    let n = out.len();
    if n > 0 {
        out.rotate_left(rotate % n);
    }
    out
}

fn config(second: bool) -> Config {
    let mut pools = BTreeMap::new();
    pools.insert(
        "default".to_string(),
        crate::election_reference::pool("default", None),
    );
    let mut ads = vec![L2Adv {
        name: "lb".into(),
        node_selectors: vec![Selector::from_labels([("lb", "yes")])],
        preferred_node_selectors: vec![(50, Selector::from_labels([("zone", "a")]))],
        ..Default::default()
    }];
    if second {
        ads.push(L2Adv {
            name: "front".into(),
            service_selectors: vec![Selector::from_labels([("tier", "front")])],
            interfaces: vec!["eth1".into()],
            ..Default::default()
        });
    }
    Config {
        pools,
        l2_advertisements: ads,
    }
}

fn nodes(alive: &[bool], selected: &[bool]) -> Vec<NodeInfo> {
    (0..NODES)
        .map(|i| {
            let mut n = NodeInfo::new(format!("n{i}"))
                .with_label("lb", if selected[i] { "yes" } else { "no" });
            if i % 2 == 0 {
                n.labels.insert("zone".into(), "a".into());
            }
            n.speaker_alive = alive[i];
            n
        })
        .collect()
}

fn svc_strategy() -> impl Strategy<Value = Svc> {
    (
        prop::collection::vec(0..IPS, 0..3),
        prop::collection::btree_set(0..NODES, 0..4),
        any::<bool>(),
        prop::option::of(0..2u8),
    )
        .prop_map(|(ips, endpoints, local, sharing)| Svc {
            ips,
            endpoints,
            local,
            sharing,
            duplicate: false,
            label: false,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_election_equals_the_full_one_after_every_change(
        mut svcs in prop::collection::vec(svc_strategy(), SERVICES),
        events in prop::collection::vec(ev(), 1..60),
    ) {
        let mut alive = [true; NODES];
        let mut selected = [true; NODES];
        let mut second = false;
        let mut opts = ElectionOptions::default();
        let mut current: BTreeMap<IpAddr, Arc<str>> = BTreeMap::new();
        let mut rotate = 0;
        let mut inc = IncrementalElection::new();
        // Told only what changed (plus the key an event touched, changed or not).
        let mut by_changes = IncrementalElection::new();
        // Told besides only the IPs whose owner changed (plus the IP an event touched).
        let mut by_owner_changes = IncrementalElection::new();
        let mut owners_before: BTreeMap<IpAddr, Arc<str>> = BTreeMap::new();
        let mut before: BTreeMap<Arc<str>, Vec<ServiceView>> = BTreeMap::new();
        let mut last = Election::default();
        for e in std::iter::once(None).chain(events.iter().map(Some)) {
            let mut re_elects_all = e.is_none();
            match e {
                None => {}
                Some(Ev::Endpoints(s, set)) => svcs[*s].endpoints = set.clone(),
                Some(Ev::Ips(s, ips)) => svcs[*s].ips = ips.clone(),
                Some(Ev::Local(s, b)) => svcs[*s].local = *b,
                Some(Ev::Sharing(s, k)) => svcs[*s].sharing = *k,
                Some(Ev::Duplicate(s, b)) => svcs[*s].duplicate = *b,
                Some(Ev::Label(s, b)) => svcs[*s].label = *b,
                Some(Ev::Current(i, o)) => match o {
                    Some(n) => { current.insert(ip(*i), format!("n{n}").into()); }
                    None => { current.remove(&ip(*i)); }
                },
                Some(Ev::Adopt) => current = last.owner_map(),
                Some(Ev::Rotate(r)) => rotate = *r,
                Some(Ev::NodeAlive(i, b)) => {
                    re_elects_all = alive[*i] != *b;
                    alive[*i] = *b;
                }
                Some(Ev::NodeSelected(i, b)) => {
                    re_elects_all = selected[*i] != *b;
                    selected[*i] = *b;
                }
                Some(Ev::Config(b)) => {
                    re_elects_all = second != *b;
                    second = *b;
                }
                Some(Ev::Revertive(b)) => {
                    re_elects_all = opts.revertive != *b;
                    opts.revertive = *b;
                }
            }
            let cfg = config(second);
            let vs = views(&svcs, rotate);
            let mut ns = nodes(&alive, &selected);
            ns.rotate_left(rotate % NODES);
            let full = elect_all(&cfg, &vs, &ns, &current, &opts);
            let got = inc.elect(&cfg, &vs, &ns, &current, &opts).clone();
            prop_assert_eq!(&got, &full, "after {:?}", e);
            let mut now: BTreeMap<Arc<str>, Vec<ServiceView>> = BTreeMap::new();
            for v in &vs {
                now.entry(v.key.clone()).or_default().push(v.clone());
            }
            let mut changed: BTreeMap<Arc<str>, Vec<ServiceView>> = now
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for k in before.keys().filter(|k| !now.contains_key(*k)) {
                changed.insert(k.clone(), Vec::new());
            }
            if let Some(
                Ev::Endpoints(s, _) | Ev::Ips(s, _) | Ev::Local(s, _) | Ev::Sharing(s, _)
                | Ev::Duplicate(s, _) | Ev::Label(s, _),
            ) = e
            {
                let k: Arc<str> = format!("ns/s{s}").into();
                let v = now.get(&k).cloned().unwrap_or_default();
                changed.insert(k, v);
            }
            let got2 = by_changes
                .elect_views(&cfg, Views::Changed(&changed), &ns, Owners::All(&current), &opts)
                .clone();
            prop_assert_eq!(&got2, &full, "told the changes only, after {:?}", e);
            prop_assert_eq!(by_changes.scope(), inc.scope(), "after {:?}", e);
            let mut moved: BTreeSet<IpAddr> = owners_before
                .keys()
                .chain(current.keys())
                .filter(|i| owners_before.get(*i) != current.get(*i))
                .copied()
                .collect();
            if let Some(Ev::Current(i, _)) = e {
                moved.insert(ip(*i));
            }
            let owners = Owners::Changed { all: &current, changed: &moved };
            let got3 = by_owner_changes
                .elect_views(&cfg, Views::Changed(&changed), &ns, owners, &opts)
                .clone();
            prop_assert_eq!(&got3, &full, "told the changed owners only, after {:?}", e);
            prop_assert_eq!(by_owner_changes.scope(), inc.scope(), "after {:?}", e);
            prop_assert_eq!(by_owner_changes.reelected(), inc.reelected(), "after {:?}", e);
            owners_before.clone_from(&current);
            before = now;
            if re_elects_all {
                prop_assert_eq!(inc.scope(), Scope::Full);
            } else {
                prop_assert!(matches!(inc.scope(), Scope::Ips(_)), "{:?} re-elected everything", e);
            }
            last = full;
        }
    }
}

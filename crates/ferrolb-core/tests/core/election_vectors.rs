//! Table tests of eligibility and election: MetalLB's vectors (reference §4.2, §6.1),
//! stickiness, shared IPs, ETP Local, selectors, exclude label, preference weights.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_core::config::{Config, L2Adv, Pool};
use ferrolb_core::election::*;
use ferrolb_core::selector::Selector;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(name: &str, cidrs: &[&str]) -> Pool {
    Pool {
        name: name.into(),
        labels: Default::default(),
        cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        allocation: None,
        frozen: false,
    }
}

fn config(ads: Vec<L2Adv>) -> Config {
    let mut pools = BTreeMap::new();
    pools.insert(
        "default".into(),
        pool("default", &["10.20.30.0/24", "10.0.0.0/16"]),
    );
    pools.insert(
        "v6".into(),
        pool("v6", &["2001:db8::/64", "192.168.0.0/24"]),
    );
    Config {
        pools,
        l2_advertisements: ads,
    }
}

fn ad(name: &str) -> L2Adv {
    L2Adv {
        name: name.into(),
        ..Default::default()
    }
}

fn sel(k: &str, v: &str) -> Selector {
    Selector::from_labels([(k, v)])
}

fn svc(key: &str, ips: &[&str]) -> ServiceView {
    let ips: Vec<IpAddr> = ips.iter().map(|s| ip(s)).collect();
    let mut s = ServiceView::new(key, ips, None);
    s.pool = Some("default".into());
    s
}

fn local(mut s: ServiceView, nodes: &[&str]) -> ServiceView {
    s.etp_local = true;
    s.serving_endpoint_nodes = nodes.iter().map(|n| n.to_string()).collect();
    s.has_serving_endpoint = !nodes.is_empty();
    s
}

fn nodes(names: &[&str]) -> Vec<NodeInfo> {
    names.iter().map(|n| NodeInfo::new(*n)).collect()
}

fn cand(node: &str, score: i64) -> Candidate {
    Candidate {
        node: node.into(),
        score,
        interfaces: Interfaces::All,
    }
}

fn owner(e: &Election, a: &str) -> Option<String> {
    e.owners.get(&ip(a)).map(|o| o.node.to_string())
}

fn run(cfg: &Config, svcs: &[ServiceView], ns: &[NodeInfo]) -> Election {
    elect_all(cfg, svcs, ns, &BTreeMap::new(), &ElectionOptions::default())
}

// ---- §4.2 sort vectors -------------------------------------------------------------

#[test]
fn hash_prefixes_match_reference() {
    assert_eq!(
        hex::encode(&election_hash("node-b", ip("10.0.0.1"))[..4]),
        "2acae885"
    );
    assert_eq!(
        hex::encode(&election_hash("node-a", ip("10.0.0.1"))[..4]),
        "dd41591f"
    );
    assert_eq!(
        hex::encode(&election_hash("node-c", ip("10.0.0.1"))[..4]),
        "f949561f"
    );
}

#[test]
fn sort_vectors_from_reference() {
    type Case = (
        &'static str,
        &'static [(&'static str, i64)],
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            "10.0.0.1",
            &[("node-a", 0), ("node-b", 0), ("node-c", 0)],
            &["node-b", "node-a", "node-c"],
        ),
        (
            "10.0.0.2",
            &[("node-a", 0), ("node-b", 0), ("node-c", 0)],
            &["node-b", "node-c", "node-a"],
        ),
        (
            "10.20.30.1",
            &[
                ("edge-a", 100),
                ("edge-b", 0),
                ("worker-a", 0),
                ("worker-b", 0),
            ],
            &["edge-a", "edge-b", "worker-a", "worker-b"],
        ),
        (
            "10.20.30.1",
            &[("node-a", 100), ("node-b", 100)],
            &["node-b", "node-a"],
        ),
        (
            "10.20.30.1",
            &[("edge-a", 100), ("edge-b", 100), ("worker-a", 0)],
            &["edge-b", "edge-a", "worker-a"],
        ),
        (
            "10.20.30.1",
            &[("iris1", 0), ("iris2", 0)],
            &["iris2", "iris1"],
        ),
        (
            "10.20.30.2",
            &[("iris1", 0), ("iris2", 0)],
            &["iris1", "iris2"],
        ),
        (
            "10.20.30.3",
            &[("iris1", 0), ("iris2", 0)],
            &["iris1", "iris2"],
        ),
    ];
    for (a, cs, want) in cases {
        // Input order must not matter: try the given order and its reverse.
        for rev in [false, true] {
            let mut v: Vec<Candidate> = cs.iter().map(|(n, s)| cand(n, *s)).collect();
            if rev {
                v.reverse();
            }
            let winner = elect(ip(a), &v, None, false).unwrap().node.to_string();
            rank_candidates(ip(a), &mut v);
            let got: Vec<&str> = v.iter().map(|c| &*c.node).collect();
            assert_eq!(&got, want, "ip {a}");
            assert_eq!(winner, want[0], "ip {a}");
        }
    }
}

#[test]
fn ipv6_and_mapped_addresses_hash_as_go_prints_them() {
    assert_eq!(
        go_ip_string(ip("2001:db8:0:0:1:0:0:1")),
        "2001:db8::1:0:0:1"
    );
    assert_eq!(
        go_ip_string(ip("2001:db8:0:1:1:1:1:1")),
        "2001:db8:0:1:1:1:1:1"
    );
    assert_eq!(go_ip_string(ip("::ffff:10.0.0.1")), "10.0.0.1");
    assert_eq!(
        election_hash("node-b", ip("::ffff:10.0.0.1")),
        election_hash("node-b", ip("10.0.0.1"))
    );
}

// ---- TestShouldAnnounceEPSlices-style (iris1/iris2, ETP Local) ----------------------

#[test]
fn etp_local_endpoint_cases() {
    let cfg = config(vec![ad("all")]);
    let ns = nodes(&["iris1", "iris2"]);
    // (desc, services, expected owners)
    type Case = (
        &'static str,
        Vec<ServiceView>,
        Vec<(&'static str, Option<&'static str>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "both endpoints on iris1",
            vec![local(svc("ns/a", &["10.20.30.1"]), &["iris1"])],
            vec![("10.20.30.1", Some("iris1"))],
        ),
        (
            "endpoints on both, hash picks iris2",
            vec![local(svc("ns/a", &["10.20.30.1"]), &["iris1", "iris2"])],
            vec![("10.20.30.1", Some("iris2"))],
        ),
        (
            "no serving endpoint: nobody",
            vec![local(svc("ns/a", &["10.20.30.1"]), &[])],
            vec![("10.20.30.1", None)],
        ),
        (
            "iris2's endpoint not ready: iris1",
            vec![local(svc("ns/a", &["10.20.30.1"]), &["iris1"])],
            vec![("10.20.30.1", Some("iris1"))],
        ),
        (
            "two services on both nodes split by hash",
            vec![
                local(svc("ns/a", &["10.20.30.1"]), &["iris1", "iris2"]),
                local(svc("ns/b", &["10.20.30.2"]), &["iris1", "iris2"]),
            ],
            vec![("10.20.30.1", Some("iris2")), ("10.20.30.2", Some("iris1"))],
        ),
        (
            "second service has its only endpoint on iris2",
            vec![
                local(svc("ns/a", &["10.20.30.1"]), &["iris1", "iris2"]),
                local(svc("ns/b", &["10.20.30.2"]), &["iris2"]),
            ],
            vec![("10.20.30.1", Some("iris2")), ("10.20.30.2", Some("iris2"))],
        ),
        (
            "endpoints only on an unknown node",
            vec![local(svc("ns/a", &["10.20.30.1"]), &["iris9"])],
            vec![("10.20.30.1", None)],
        ),
    ];
    for (desc, svcs, want) in cases {
        let e = run(&cfg, &svcs, &ns);
        for (a, o) in want {
            assert_eq!(owner(&e, a).as_deref(), o, "{desc}: {a}");
        }
    }
    let e = run(&cfg, &[local(svc("ns/a", &["10.20.30.1"]), &[])], &ns);
    assert_eq!(
        e.not_announced.get(&("ns/a".to_string(), ip("10.20.30.1"))),
        Some(&Reason::NoServingEndpoints)
    );
    let e = run(
        &cfg,
        &[local(svc("ns/a", &["10.20.30.1"]), &["iris9"])],
        &ns,
    );
    assert_eq!(
        e.not_announced.get(&("ns/a".to_string(), ip("10.20.30.1"))),
        Some(&Reason::NoEligibleNode)
    );
}

#[test]
fn cluster_policy_needs_an_endpoint_somewhere_but_not_locally() {
    let cfg = config(vec![ad("all")]);
    let ns = nodes(&["iris1", "iris2"]);
    let mut s = svc("ns/a", &["10.20.30.1"]);
    s.serving_endpoint_nodes = ["iris1"].into_iter().collect();
    // Cluster policy: locality irrelevant, hash picks iris2.
    assert_eq!(
        owner(&run(&cfg, &[s.clone()], &ns), "10.20.30.1").as_deref(),
        Some("iris2")
    );
    s.has_serving_endpoint = false;
    s.serving_endpoint_nodes = NameSet::default();
    let e = run(&cfg, &[s], &ns);
    assert!(e.owners.is_empty());
}

// ---- TestShouldAnnounceFromNodes-style ----------------------------------------------

#[test]
fn node_selectors_exclude_label_and_ignore_flag() {
    let two = || {
        vec![
            NodeInfo::new("iris1").with_label("kubernetes.io/hostname", "iris1"),
            NodeInfo::new("iris2").with_label("kubernetes.io/hostname", "iris2"),
        ]
    };
    let only = |n: &str| {
        let mut a = ad(&format!("only-{n}"));
        a.node_selectors = vec![sel("kubernetes.io/hostname", n)];
        a
    };
    let s = svc("ns/a", &["10.20.30.1"]); // hash prefers iris2
    let opts = ElectionOptions::default();
    let ign = ElectionOptions {
        ignore_exclude_lb: true,
        ..Default::default()
    };
    let excl = |mut n: NodeInfo| {
        n.labels.insert(EXCLUDE_LB_LABEL.into(), "".into());
        n
    };
    type Case = (
        &'static str,
        Vec<L2Adv>,
        Vec<NodeInfo>,
        bool,
        ServiceView,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "no selector",
            vec![ad("all")],
            two(),
            false,
            s.clone(),
            Some("iris2"),
        ),
        (
            "selector on iris1",
            vec![only("iris1")],
            two(),
            false,
            s.clone(),
            Some("iris1"),
        ),
        (
            "split ads select both",
            vec![only("iris1"), only("iris2")],
            two(),
            false,
            s.clone(),
            Some("iris2"),
        ),
        (
            "selector matches nobody",
            vec![only("iris9")],
            two(),
            false,
            s.clone(),
            None,
        ),
        ("no ads at all", vec![], two(), false, s.clone(), None),
        (
            "exclude label on iris2",
            vec![ad("all")],
            vec![two()[0].clone(), excl(two()[1].clone())],
            false,
            s.clone(),
            Some("iris1"),
        ),
        (
            "exclude label on both",
            vec![ad("all")],
            two().into_iter().map(excl).collect(),
            false,
            s.clone(),
            None,
        ),
        (
            "exclude label on both, ignored",
            vec![ad("all")],
            two().into_iter().map(excl).collect(),
            true,
            s.clone(),
            Some("iris2"),
        ),
        (
            "ETP Local, endpoint on iris2, selector iris1",
            vec![only("iris1")],
            two(),
            false,
            local(s.clone(), &["iris2"]),
            None,
        ),
        (
            "ETP Local, endpoint on iris1, ads split",
            vec![only("iris1"), only("iris2")],
            two(),
            false,
            local(s.clone(), &["iris1"]),
            Some("iris1"),
        ),
        (
            "network unavailable on iris2",
            vec![ad("all")],
            {
                let mut v = two();
                v[1].network_unavailable = true;
                v
            },
            false,
            s.clone(),
            Some("iris1"),
        ),
        (
            "speaker dead on iris2",
            vec![ad("all")],
            {
                let mut v = two();
                v[1].speaker_alive = false;
                v
            },
            false,
            s.clone(),
            Some("iris1"),
        ),
    ];
    for (desc, ads, ns, ignore, s, want) in cases {
        let cfg = config(ads);
        let o = if ignore { ign } else { opts };
        let e = elect_all(&cfg, &[s], &ns, &BTreeMap::new(), &o);
        assert_eq!(owner(&e, "10.20.30.1").as_deref(), want, "{desc}");
    }
}

#[test]
fn node_reasons_are_reported() {
    let mut a = ad("only-iris1");
    a.node_selectors = vec![sel("zone", "a")];
    let cfg = config(vec![a]);
    let s = svc("ns/a", &["10.20.30.1"]);
    let n1 = NodeInfo::new("iris1").with_label("zone", "a");
    let n2 = NodeInfo::new("iris2").with_label("zone", "a");
    let n3 = NodeInfo::new("iris3");
    let mut n4 = NodeInfo::new("iris4").with_label("zone", "a");
    n4.labels.insert(EXCLUDE_LB_LABEL.into(), "true".into());
    let mut n5 = NodeInfo::new("iris5").with_label("zone", "a");
    n5.network_unavailable = true;
    let mut n6 = NodeInfo::new("iris6").with_label("zone", "a");
    n6.speaker_alive = false;
    let all = vec![
        n1.clone(),
        n2.clone(),
        n3.clone(),
        n4.clone(),
        n5.clone(),
        n6.clone(),
    ];
    let opts = ElectionOptions::default();
    let e = elect_all(
        &cfg,
        std::slice::from_ref(&s),
        &all,
        &BTreeMap::new(),
        &opts,
    );
    let own = owner(&e, "10.20.30.1").unwrap();
    assert!(own == "iris1" || own == "iris2");
    let loser = if own == "iris1" { &n2 } else { &n1 };
    let t = ip("10.20.30.1");
    assert!(e
        .decision_for(&cfg, &s, t, if own == "iris1" { &n1 } else { &n2 }, &opts)
        .is_ok());
    assert_eq!(
        e.decision_for(&cfg, &s, t, loser, &opts).unwrap_err(),
        Reason::NotOwner { owner: own.clone() }
    );
    assert_eq!(
        e.decision_for(&cfg, &s, t, &n3, &opts).unwrap_err(),
        Reason::NoMatchingAdvertisement
    );
    assert_eq!(
        e.decision_for(&cfg, &s, t, &n4, &opts).unwrap_err(),
        Reason::ExcludedFromLoadBalancers
    );
    assert_eq!(
        e.decision_for(&cfg, &s, t, &n5, &opts).unwrap_err(),
        Reason::NetworkUnavailable
    );
    assert_eq!(
        e.decision_for(&cfg, &s, t, &n6, &opts).unwrap_err(),
        Reason::SpeakerNotAlive
    );
    assert_eq!(Reason::NotOwner { owner: "x".into() }.as_str(), "notOwner");
    assert_eq!(
        Reason::SharedIpWithServiceSelector.to_string(),
        "sharedIPWithServiceSelector"
    );
}

// ---- TestClusterPolicy --------------------------------------------------------------

#[test]
fn cluster_policy_whole_slash_24_two_speakers() {
    let cfg = config(vec![ad("all")]);
    let ns = nodes(&["iris1", "iris2"]);
    let mut svcs = Vec::new();
    for i in 1..=255u8 {
        let a = format!("10.20.30.{i}");
        let mut s1 = svc(&format!("ns/a{i}"), &[&a]);
        let mut s2 = svc(&format!("ns/b{i}"), &[&a]);
        s1.sharing_key = Some("k".into());
        s2.sharing_key = Some("k".into());
        svcs.push(s1);
        svcs.push(s2);
    }
    let e = run(&cfg, &svcs, &ns);
    let mut wins: BTreeMap<String, usize> = BTreeMap::new();
    for i in 1..=255u8 {
        let a = ip(&format!("10.20.30.{i}"));
        let o = e.owners.get(&a).expect("every IP announced");
        // Both sharing services are answered by the single owner.
        assert_eq!(o.services.len(), 2);
        // The owner is what a single-service election (MetalLB per Service) picks.
        let single = run(&cfg, &[svc("x/y", &[&a.to_string()])], &ns);
        assert_eq!(single.owners[&a].node, o.node);
        *wins.entry(o.node.to_string()).or_default() += 1;
        // Exactly one of the two speakers announces.
        let announcing: Vec<&str> = ["iris1", "iris2"]
            .into_iter()
            .filter(|n| e.announced_by(n).any(|(x, _)| x == a))
            .collect();
        assert_eq!(announcing.len(), 1);
    }
    assert_eq!(wins.len(), 2, "both speakers win some IPs: {wins:?}");
    assert_eq!(owner(&e, "10.20.30.1").as_deref(), Some("iris2"));
    assert_eq!(owner(&e, "10.20.30.2").as_deref(), Some("iris1"));
    assert_eq!(owner(&e, "10.20.30.3").as_deref(), Some("iris1"));
}

// ---- preferred node scores -----------------------------------------------------------

#[test]
fn preferred_scores_sum_within_and_across_ads() {
    // TestPreferredScoresFor: a = 70 + 30 = 100, b = 50.
    let mut ad1 = ad("ad1");
    ad1.preferred_node_selectors = vec![(70, sel("name", "a")), (50, sel("name", "b"))];
    let mut ad2 = ad("ad2");
    ad2.preferred_node_selectors = vec![(30, sel("tier", "edge"))];
    let a = NodeInfo::new("a")
        .with_label("name", "a")
        .with_label("tier", "edge");
    let b = NodeInfo::new("b").with_label("name", "b");
    let c = NodeInfo::new("c");
    assert_eq!(preferred_score([&ad1, &ad2], &a), 100);
    assert_eq!(preferred_score([&ad1, &ad2], &b), 50);
    assert_eq!(preferred_score([&ad1, &ad2], &c), 0);
    // Only nodes inside the ad's own nodeSelectors get its weights.
    let mut ad3 = ad2.clone();
    ad3.node_selectors = vec![sel("name", "b")];
    assert_eq!(preferred_score([&ad1, &ad3], &a), 70);

    let cfg = config(vec![ad1, ad2]);
    // Whatever the hash says, the highest score wins every IP.
    for i in 1..=20u8 {
        let e = run(
            &cfg,
            &[svc("ns/s", &[&format!("10.20.30.{i}")])],
            &[a.clone(), b.clone(), c.clone()],
        );
        assert_eq!(owner(&e, &format!("10.20.30.{i}")).as_deref(), Some("a"));
    }
    // The preferred node fails: the next score (b) takes over, not the hash.
    let mut dead_a = a.clone();
    dead_a.speaker_alive = false;
    for i in 1..=20u8 {
        let e = run(
            &cfg,
            &[svc("ns/s", &[&format!("10.20.30.{i}")])],
            &[dead_a.clone(), b.clone(), c.clone()],
        );
        assert_eq!(owner(&e, &format!("10.20.30.{i}")).as_deref(), Some("b"));
    }
}

#[test]
fn split_brain_with_mixed_ads_ignores_non_matching_ads_weight() {
    // ad-web applies to app=web and slightly prefers node-a; ad-db applies only to
    // app=db and prefers node-b with weight 1000: it must not count for the web Service.
    let mut web = ad("ad-web");
    web.service_selectors = vec![sel("app", "web")];
    web.preferred_node_selectors = vec![(10, sel("name", "node-a"))];
    let mut db = ad("ad-db");
    db.service_selectors = vec![sel("app", "db")];
    db.preferred_node_selectors = vec![(1000, sel("name", "node-b"))];
    let cfg = config(vec![web, db]);
    let ns = vec![
        NodeInfo::new("node-a").with_label("name", "node-a"),
        NodeInfo::new("node-b").with_label("name", "node-b"),
    ];
    for i in 1..=30u8 {
        let a = format!("10.20.30.{i}");
        let mut s = svc("ns/web", &[&a]);
        s.labels.insert("app", "web");
        let mut d = svc("ns/db", &[&format!("10.0.1.{i}")]);
        d.labels.insert("app", "db");
        let mut other = svc("ns/other", &[&format!("10.0.2.{i}")]);
        other.labels.insert("app", "other");
        // Every node computes the same answer (input order irrelevant).
        let e1 = run(&cfg, &[s.clone(), d.clone(), other.clone()], &ns);
        let e2 = run(&cfg, &[other, d, s], &[ns[1].clone(), ns[0].clone()]);
        assert_eq!(e1, e2);
        assert_eq!(owner(&e1, &a).as_deref(), Some("node-a"));
        assert_eq!(
            owner(&e1, &format!("10.0.1.{i}")).as_deref(),
            Some("node-b")
        );
        assert_eq!(owner(&e1, &format!("10.0.2.{i}")), None);
        assert_eq!(
            e1.not_announced
                .get(&("ns/other".into(), ip(&format!("10.0.2.{i}")))),
            Some(&Reason::NoMatchingAdvertisement)
        );
    }
}

// ---- service selectors and sharing --------------------------------------------------

#[test]
fn shared_ip_with_service_selector_is_not_announced() {
    let mut a = ad("sel");
    a.service_selectors = vec![sel("app", "web")];
    let cfg = config(vec![a, ad("all")]);
    let mut s = svc("ns/web", &["10.20.30.5"]);
    s.labels.insert("app", "web");
    s.sharing_key = Some("k".into());
    let e = run(&cfg, &[s.clone()], &nodes(&["n1", "n2"]));
    assert!(e.owners.is_empty());
    assert_eq!(
        e.not_announced[&("ns/web".into(), ip("10.20.30.5"))],
        Reason::SharedIpWithServiceSelector
    );
    // Same Service without the sharing key is announced.
    s.sharing_key = None;
    assert!(run(&cfg, &[s.clone()], &nodes(&["n1", "n2"]))
        .owners
        .contains_key(&ip("10.20.30.5")));
    // A non-matching selector ad does not count (it is not an ad for this Service).
    s.sharing_key = Some("k".into());
    s.labels.insert("app", "db");
    assert!(run(&cfg, &[s], &nodes(&["n1", "n2"]))
        .owners
        .contains_key(&ip("10.20.30.5")));
}

#[test]
fn pool_coverage_by_name_and_label() {
    let mut by_name = ad("by-name");
    by_name.ip_address_pools = vec!["v6".into()];
    let mut by_label = ad("by-label");
    by_label.ip_address_pool_selectors = vec![sel("tier", "gold")];
    let mut cfg = config(vec![by_name, by_label]);
    let ns = nodes(&["n1"]);
    let mut v6 = svc("ns/v6", &["2001:db8::5"]);
    v6.pool = Some("v6".into());
    let d = svc("ns/d", &["10.20.30.9"]);
    let e = run(&cfg, &[v6.clone(), d.clone()], &ns);
    assert!(e.owners.contains_key(&ip("2001:db8::5")));
    assert_eq!(
        e.not_announced[&("ns/d".into(), ip("10.20.30.9"))],
        Reason::NoMatchingAdvertisement
    );
    cfg.pools
        .get_mut("default")
        .unwrap()
        .labels
        .insert("tier".into(), "gold".into());
    assert!(run(&cfg, &[d], &ns).owners.contains_key(&ip("10.20.30.9")));
    // An IP outside every pool is never announced.
    let mut out = svc("ns/out", &["172.16.0.1"]);
    out.pool = pool_for_ips(&cfg, &out.ips);
    assert_eq!(out.pool, None);
    let e = run(&cfg, &[out], &ns);
    assert!(e.owners.is_empty());
    assert_eq!(
        e.not_announced[&("ns/out".into(), ip("172.16.0.1"))],
        Reason::IpNotInPool
    );
}

#[test]
fn interfaces_are_the_union_and_all_wins() {
    let mut e0 = ad("eno1");
    e0.interfaces = vec!["eno1".into()];
    let mut e1 = ad("ens18");
    e1.interfaces = vec!["ens18".into()];
    let mut only_b = ad("only-b");
    only_b.interfaces = vec!["eth9".into()];
    only_b.node_selectors = vec![sel("name", "b")];
    let ns = vec![NodeInfo::new("a").with_label("name", "a")];
    let s = svc("ns/s", &["10.20.30.1"]);
    let e = run(
        &config(vec![e0.clone(), e1.clone(), only_b.clone()]),
        std::slice::from_ref(&s),
        &ns,
    );
    let want: BTreeSet<String> = ["eno1".to_string(), "ens18".to_string()].into();
    assert_eq!(
        e.owners[&ip("10.20.30.1")].interfaces,
        Interfaces::Named(want)
    );
    assert!(e.owners[&ip("10.20.30.1")].interfaces.allows("eno1"));
    assert!(!e.owners[&ip("10.20.30.1")].interfaces.allows("eth9"));
    let e = run(&config(vec![e0, e1, ad("all")]), &[s], &ns);
    assert_eq!(e.owners[&ip("10.20.30.1")].interfaces, Interfaces::All);
}

// ---- per-IP election ------------------------------------------------------------------

#[test]
fn shared_ip_etp_local_uses_intersection_then_max_coverage() {
    let cfg = config(vec![ad("all")]);
    let ns = nodes(&["n1", "n2", "n3", "n4"]);
    let a = "10.20.30.7";
    let mk = |k: &str, eps: &[&str]| {
        let mut s = local(svc(k, &[a]), eps);
        s.sharing_key = Some("k".into());
        s
    };
    // Intersection {n2, n3}.
    let e = run(
        &cfg,
        &[
            mk("ns/a", &["n1", "n2", "n3"]),
            mk("ns/b", &["n2", "n3", "n4"]),
        ],
        &ns,
    );
    let o = &e.owners[&ip(a)];
    assert!(&*o.node == "n2" || &*o.node == "n3");
    assert_eq!(o.services.len(), 2);
    // Disjoint: a node serving two of three Services wins; the third is reported.
    let e = run(
        &cfg,
        &[
            mk("ns/a", &["n1"]),
            mk("ns/b", &["n1", "n4"]),
            mk("ns/c", &["n3"]),
        ],
        &ns,
    );
    let o = &e.owners[&ip(a)];
    assert_eq!(&*o.node, "n1");
    assert_eq!(
        o.services.iter().map(|k| &**k).collect::<Vec<_>>(),
        ["ns/a", "ns/b"]
    );
    assert_eq!(
        e.not_announced[&("ns/c".into(), ip(a))],
        Reason::SharedIpOwnerNotEligible
    );
    // A sharer with no endpoints at all does not veto the others.
    let e = run(&cfg, &[mk("ns/a", &["n4"]), mk("ns/b", &[])], &ns);
    assert_eq!(&*e.owners[&ip(a)].node, "n4");
    assert_eq!(
        e.not_announced[&("ns/b".into(), ip(a))],
        Reason::NoServingEndpoints
    );
}

#[test]
fn dual_stack_service_ips_follow_the_first_ip_like_metallb() {
    let mut all = ad("all");
    all.ip_address_pools = vec![];
    let cfg = config(vec![all]);
    let ns = nodes(&["node-a", "node-b", "node-c", "node-d"]);
    let mut agree = 0;
    for i in 1..=40u8 {
        let v4 = format!("192.168.0.{i}");
        let v6 = format!("2001:db8::{i:x}");
        let mut s = svc("ns/ds", &[&v4, &v6]);
        s.pool = Some("v6".into());
        let e = run(&cfg, std::slice::from_ref(&s), &ns);
        assert_eq!(e.owners[&ip(&v4)].node, e.owners[&ip(&v6)].node);
        assert_eq!(e.owners[&ip(&v6)].anchor, ip(&v4));
        // The v6 owner equals MetalLB's per-service winner (hash of the first IP).
        let mut c: Vec<Candidate> = ns.iter().map(|n| cand(&n.name, 0)).collect();
        rank_candidates(ip(&v4), &mut c);
        assert_eq!(e.owners[&ip(&v6)].node, c[0].node);
        // A v6-only election would often differ; make sure the anchor matters.
        rank_candidates(ip(&v6), &mut c);
        if c[0].node == e.owners[&ip(&v6)].node {
            agree += 1;
        }
    }
    assert!(agree < 40, "anchor never mattered in 40 IPs");
}

#[test]
fn anchor_prefers_the_ip_itself() {
    let ds = svc("ns/a", &["10.20.30.1", "2001:db8::1"]);
    let v6 = svc("ns/b", &["2001:db8::1"]);
    assert_eq!(anchor_ip(ip("2001:db8::1"), &[&ds]), ip("10.20.30.1"));
    assert_eq!(anchor_ip(ip("2001:db8::1"), &[&ds, &v6]), ip("2001:db8::1"));
    assert_eq!(anchor_ip(ip("10.20.30.1"), &[&ds]), ip("10.20.30.1"));
}

// ---- stickiness -------------------------------------------------------------------------

#[test]
fn sticky_owner_survives_joins_and_returns_revertive_does_not() {
    let cfg = config(vec![ad("all")]);
    let a = "10.0.0.1"; // order node-b, node-a, node-c
    let s = svc("ns/s", &[a]);
    let sticky = ElectionOptions::default();
    let revert = ElectionOptions {
        revertive: true,
        ..Default::default()
    };
    // Start without node-b: node-a wins.
    let e0 = elect_all(
        &cfg,
        std::slice::from_ref(&s),
        &nodes(&["node-a", "node-c"]),
        &BTreeMap::new(),
        &sticky,
    );
    assert_eq!(owner(&e0, a).as_deref(), Some("node-a"));
    // node-b joins (it ranks first): sticky keeps node-a, revertive moves.
    let all = nodes(&["node-a", "node-b", "node-c"]);
    let e1 = elect_all(
        &cfg,
        std::slice::from_ref(&s),
        &all,
        &e0.owner_map(),
        &sticky,
    );
    assert_eq!(owner(&e1, a).as_deref(), Some("node-a"));
    assert!(e1.owners[&ip(a)].sticky);
    let r1 = elect_all(
        &cfg,
        std::slice::from_ref(&s),
        &all,
        &e0.owner_map(),
        &revert,
    );
    assert_eq!(owner(&r1, a).as_deref(), Some("node-b"));
    assert!(!r1.owners[&ip(a)].sticky);
    // node-a dies: best-ranked survivor node-b takes over.
    let mut dead = all.clone();
    dead[0].speaker_alive = false;
    let e2 = elect_all(
        &cfg,
        std::slice::from_ref(&s),
        &dead,
        &e1.owner_map(),
        &sticky,
    );
    assert_eq!(owner(&e2, a).as_deref(), Some("node-b"));
    // node-a returns: stays on node-b.
    let e3 = elect_all(
        &cfg,
        std::slice::from_ref(&s),
        &all,
        &e2.owner_map(),
        &sticky,
    );
    assert_eq!(owner(&e3, a).as_deref(), Some("node-b"));
    // A higher-preference node joining does not steal in sticky mode either.
    let mut pref = ad("pref");
    pref.preferred_node_selectors = vec![(100, sel("edge", "yes"))];
    let cfg2 = config(vec![pref]);
    let mut with_edge = all.clone();
    with_edge.push(NodeInfo::new("edge").with_label("edge", "yes"));
    let e4 = elect_all(
        &cfg2,
        std::slice::from_ref(&s),
        &with_edge,
        &e3.owner_map(),
        &sticky,
    );
    assert_eq!(owner(&e4, a).as_deref(), Some("node-b"));
    let r4 = elect_all(
        &cfg2,
        std::slice::from_ref(&s),
        &with_edge,
        &e3.owner_map(),
        &revert,
    );
    assert_eq!(owner(&r4, a).as_deref(), Some("edge"));
    // An owner that becomes ineligible (ETP Local endpoint gone) loses the IP.
    let l = local(svc("ns/s", &[a]), &["node-a", "node-c"]);
    let cur: BTreeMap<IpAddr, Arc<str>> = [(ip(a), "node-b".into())].into();
    let e5 = elect_all(&cfg, &[l], &all, &cur, &sticky);
    assert_eq!(owner(&e5, a).as_deref(), Some("node-a"));
    // A current owner that is unknown is simply ignored.
    let cur: BTreeMap<IpAddr, Arc<str>> = [(ip(a), "ghost".into())].into();
    let e6 = elect_all(&cfg, std::slice::from_ref(&s), &all, &cur, &sticky);
    assert_eq!(owner(&e6, a).as_deref(), Some("node-b"));
}

#[test]
fn elect_with_no_candidates_is_nobody() {
    assert!(elect(ip("10.0.0.1"), &[], Some("x"), false).is_none());
}

// ---- spread --------------------------------------------------------------------------

#[test]
fn three_nodes_300_ips_spread_evenly() {
    let cfg = config(vec![ad("all")]);
    let ns = nodes(&["node-a", "node-b", "node-c"]);
    let svcs: Vec<ServiceView> = (0..300u32)
        .map(|i| {
            let a = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)) + i);
            svc(&format!("ns/s{i}"), &[&a.to_string()])
        })
        .collect();
    let e = run(&cfg, &svcs, &ns);
    assert_eq!(e.owners.len(), 300);
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for o in e.owners.values() {
        *count.entry(&*o.node).or_default() += 1;
    }
    for (n, c) in &count {
        assert!(*c <= 120, "{n} owns {c} of 300 (> 40%): {count:?}");
    }
    assert_eq!(count.len(), 3);
    // When node-a fails its IPs spread over both survivors; nothing else moves.
    let mut dead = ns.clone();
    dead[0].speaker_alive = false;
    let e2 = elect_all(
        &cfg,
        &svcs,
        &dead,
        &e.owner_map(),
        &ElectionOptions::default(),
    );
    let mut to: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, o) in &e.owners {
        let n2 = &e2.owners[a].node;
        if &*o.node == "node-a" {
            *to.entry(&**n2).or_default() += 1;
        } else {
            assert_eq!(&o.node, n2, "{a} moved although its owner is alive");
        }
    }
    assert_eq!(
        to.len(),
        2,
        "failed node's IPs go to both survivors: {to:?}"
    );
}

#[test]
fn duplicates_are_not_trusted() {
    let cfg = config(vec![ad("all")]);
    let s = svc("ns/s", &["10.20.30.1"]);
    let e = run(&cfg, &[s.clone(), s.clone()], &nodes(&["n1"]));
    assert!(e.owners.is_empty());
    assert_eq!(
        e.not_announced[&("ns/s".into(), ip("10.20.30.1"))],
        Reason::DuplicateService
    );
    // A duplicated node name is dropped, the other node serves.
    let e = run(&cfg, &[s], &nodes(&["n1", "n1", "n2"]));
    assert_eq!(owner(&e, "10.20.30.1").as_deref(), Some("n2"));
}

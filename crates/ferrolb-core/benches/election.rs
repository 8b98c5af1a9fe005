//! Cost of the whole-cluster election (every speaker runs it on every relevant change).
//!
//! `cargo bench --bench election` (`elect_all`: the whole election from scratch;
//! `incremental_full_pass`: a whole re-election by the speaker's incremental election;
//! `elect_all_equal_scores`: the whole election with no preferred nodes, so every eligible
//! node of an IP is ranked by its hash)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ferrolb_core::config::{Config, L2Adv, Pool};
use ferrolb_core::election::{
    elect_all, ElectionOptions, IncrementalElection, NodeInfo, Owners, ServiceView, Views,
};
use ferrolb_core::selector::Selector;

fn setup(nodes: usize, services: usize) -> (Config, Vec<ServiceView>, Vec<NodeInfo>) {
    let mut pools = BTreeMap::new();
    pools.insert(
        "default".to_string(),
        Pool {
            name: "default".into(),
            labels: Default::default(),
            cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            frozen: false,
        },
    );
    let cfg = Config {
        pools,
        l2_advertisements: vec![L2Adv {
            name: "all".into(),
            preferred_node_selectors: vec![(10, Selector::from_labels([("zone", "a")]))],
            ..Default::default()
        }],
    };
    let ns: Vec<NodeInfo> = (0..nodes)
        .map(|i| {
            NodeInfo::new(format!("node-{i}"))
                .with_label("zone", if i % 3 == 0 { "a" } else { "b" })
        })
        .collect();
    let svcs: Vec<ServiceView> = (0..services)
        .map(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0001u32 + i as u32));
            let mut s = ServiceView::new(format!("ns/s{i}"), vec![ip], Some("default"));
            if i % 4 == 0 {
                s.etp_local = true;
                s.serving_endpoint_nodes = (0..3)
                    .map(|k| format!("node-{}", (i + k) % nodes))
                    .collect();
            }
            s
        })
        .collect();
    (cfg, svcs, ns)
}

fn bench(c: &mut Criterion) {
    for (group, sizes, preferred) in [
        (
            "elect_all",
            &[(3, 300), (10, 1_000), (100, 1_000), (100, 10_000)][..],
            true,
        ),
        (
            "elect_all_equal_scores",
            &[(100, 1_000), (100, 10_000)][..],
            false,
        ),
    ] {
        elect_all_group(c, group, sizes, preferred);
    }
}

fn elect_all_group(c: &mut Criterion, group: &str, sizes: &[(usize, usize)], preferred: bool) {
    let mut g = c.benchmark_group(group);
    g.sample_size(20);
    for &(nodes, services) in sizes {
        let (mut cfg, svcs, ns) = setup(nodes, services);
        if !preferred {
            cfg.l2_advertisements[0].preferred_node_selectors.clear();
        }
        let first = elect_all(
            &cfg,
            &svcs,
            &ns,
            &BTreeMap::new(),
            &ElectionOptions::default(),
        );
        let current = first.owner_map();
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{nodes}n_{services}s")),
            &(),
            |b, _| {
                b.iter(|| {
                    elect_all(
                        black_box(&cfg),
                        black_box(&svcs),
                        black_box(&ns),
                        black_box(&current),
                        &ElectionOptions::default(),
                    )
                })
            },
        );
    }
    g.finish();
}

/// A whole re-election by the speaker's incremental election: what a change of the live
/// peers costs (every node view rebuilt, every IP elected again). The peer `node-1` dies and
/// comes back in turn, so every call is a full pass.
fn full_pass(c: &mut Criterion) {
    let mut g = c.benchmark_group("incremental_full_pass");
    g.sample_size(10);
    for (nodes, services) in [(100, 1_000), (100, 10_000)] {
        let (cfg, svcs, ns) = setup(nodes, services);
        let mut down = ns.clone();
        down[1].speaker_alive = false;
        let current =
            elect_all(&cfg, &svcs, &ns, &BTreeMap::new(), &Default::default()).owner_map();
        let mut inc = IncrementalElection::new();
        let opts = ElectionOptions::default();
        inc.elect_views(&cfg, Views::All(&svcs), &ns, Owners::All(&current), &opts);
        let mut flip = false;
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{nodes}n_{services}s")),
            &(),
            |b, _| {
                b.iter(|| {
                    flip = !flip;
                    let nodes = if flip { &down } else { &ns };
                    let changed = BTreeMap::new();
                    let e = inc.elect_views(
                        black_box(&cfg),
                        Views::Changed(&changed),
                        black_box(nodes),
                        Owners::All(&current),
                        &opts,
                    );
                    black_box(e.owner_map().len())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench, full_pass);
criterion_main!(benches);

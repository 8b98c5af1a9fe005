//! What the speaker keeps per VIP in its per-IP counters and in its index, counted by this
//! binary's allocator (its only test: nothing else allocates meanwhile). Each bound sits
//! just above what the code holds: a table that goes back to a block, a hash entry or a
//! key per entry fails it.

use std::net::IpAddr;

use counting::held;
use ferrolb::dataplane::metrics::{IpCounts, IpLabel};
use ferrolb::speaker::index::Index;
use ferrolb::speaker::slim::{SlimService, SlimSlice};
use ferrolb::telemetry::{IpLabelValue, Mirrored};
use kube::runtime::watcher::Event;
use prometheus_client::metrics::counter::Counter;
use serde_json::json;

/// The counting allocator of `ferrolb-core`'s `dense` test.
#[path = "../../ferrolb-core/tests/counting/mod.rs"]
mod counting;

const N: usize = 10_000;

fn ip(i: usize) -> IpAddr {
    IpAddr::from((0x0a00_0000u32 + u32::try_from(i).unwrap()).to_be_bytes())
}

/// Bytes per entry that `fill` holds in what it returns.
fn per_entry<T>(fill: impl FnOnce() -> T) -> (usize, T) {
    let base = held();
    let t = fill();
    ((held() - base) / N, t)
}

#[test]
fn the_speakers_tables_hold_few_bytes_per_vip() {
    // the gratuitous counters, each IP counted twice in the order the start-up announces
    // them: a count in one table, against a family's label set, hash entry and counter
    let (ours, counts) = per_entry(|| {
        let c = IpCounts::default();
        for i in (0..N).chain(0..N) {
            c.inc(ip(i));
        }
        c
    });
    let (family, mirrored) = per_entry(|| {
        let f: Mirrored<IpLabel, Counter> = Mirrored::default();
        for i in (0..N).chain(0..N) {
            f.get_or_create(&IpLabel {
                ip: IpLabelValue(ip(i)),
            })
            .inc();
        }
        f
    });
    assert_eq!(counts.get(ip(N - 1)), Some(2));
    eprintln!("gratuitous counters: {ours} bytes per IP, {family} as a family");
    assert!(ours <= 32, "{ours} bytes per IP");
    assert!(ours * 2 < family, "{ours} against {family} bytes per IP");
    drop((counts, mirrored));

    // the index: N LoadBalancer Services (a label, an IP) with one slice each, on 100 nodes
    let services: Vec<SlimService> = (0..N)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i:05}"), "namespace": "bench",
                             "uid": format!("6f1c2a4e-0000-4000-8000-{i:012}"),
                             "resourceVersion": format!("{}", 100_000 + i),
                             "labels": {"app": "bench"}},
                "spec": {"type": "LoadBalancer"},
                "status": {"loadBalancer": {"ingress": [{"ip": ip(i).to_string()}]}}
            }))
            .unwrap()
        })
        .collect();
    let slices: Vec<SlimSlice> = (0..N)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i:05}-x7k2p"), "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": format!("svc-{i:05}")}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.0.1"], "conditions": {"ready": true},
                               "nodeName": format!("node-{}", i % 100)}]
            }))
            .unwrap()
        })
        .collect();
    let (index, ix) = per_entry(|| {
        let mut ix = Index::new(None);
        for s in &services {
            ix.service(Event::Apply(s.clone()));
        }
        for s in &slices {
            ix.slice(Event::Apply(s.clone()));
        }
        // the changes handed over (the loop's first pass)
        drop(ix.changes(&Default::default()));
        ix
    });
    assert_eq!(ix.len(), (N, N, 0));
    eprintln!("index: {index} bytes per Service");
    assert!(index <= 380, "{index} bytes per Service");
}

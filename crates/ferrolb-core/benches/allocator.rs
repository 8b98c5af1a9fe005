//! Allocator benchmarks (criterion). See docs/BENCHMARKS.md, section "Allocator".

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ferrolb_core::allocator::{Allocator, Family, ServiceKey, ServiceRequest};
use ferrolb_core::config::{Pool, ServiceAllocation};
use ferrolb_core::selector::{Labels, Selector};

fn pool(name: &str, cidr: &str) -> Pool {
    Pool {
        name: name.into(),
        labels: Labels::new(),
        cidrs: vec![cidr.parse().unwrap()],
        auto_assign: true,
        avoid_buggy_ips: false,
        allocation: None,
        frozen: false,
    }
}

fn req(ns: &str, i: usize) -> ServiceRequest {
    ServiceRequest {
        key: ServiceKey::new(ns, format!("svc-{i}")),
        cluster_families: vec![Family::V4],
        ..Default::default()
    }
}

/// An allocator over one pool with `n` Services allocated.
fn filled(cidr: &str, n: usize) -> Allocator {
    let mut a = Allocator::new(vec![pool("p", cidr)]);
    for i in 0..n {
        a.ensure(&req("fill", i)).expect("room");
    }
    a
}

fn bench_100k_slash8(c: &mut Criterion) {
    let reqs: Vec<ServiceRequest> = (0..100_000).map(|i| req("default", i)).collect();
    let mut g = c.benchmark_group("allocator");
    g.sample_size(10);
    g.bench_function("100k services from one /8", |b| {
        b.iter_batched(
            || Allocator::new(vec![pool("big", "10.0.0.0/8")]),
            |mut a| {
                for r in &reqs {
                    black_box(a.ensure(r).unwrap());
                }
                a
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_last_free_slash16(c: &mut Criterion) {
    let mut a = filled("10.1.0.0/16", 65_535);
    let last = req("default", 0);
    let mut g = c.benchmark_group("allocator");
    g.bench_function(
        "last free IP of a /16 with 65535 used (ensure+release)",
        |b| {
            b.iter(|| {
                let got = a.ensure(&last).unwrap();
                assert_eq!(got.ips[0].to_string(), "10.1.255.255");
                a.release(&last.key);
            })
        },
    );
    g.finish();
}

fn bench_100_pools(c: &mut Criterion) {
    // 100 pinned pools: pool i serves label app=a<i%50> at priority 1 + i/50, so every
    // Service matches two pools and has to rank them; plus one catch-all auto pool.
    let mut pools: Vec<Pool> = (0..100usize)
        .map(|i| {
            let mut p = pool(
                &format!("pool-{i:03}"),
                &format!("10.{}.{}.0/24", 2 + i / 250, i % 250),
            );
            p.allocation = Some(ServiceAllocation {
                priority: 1 + (i / 50) as i32,
                namespaces: vec![],
                namespace_selectors: vec![],
                service_selectors: vec![Selector::from_labels([("app", format!("a{}", i % 50))])],
            });
            p
        })
        .collect();
    pools.push(pool("fallback", "172.16.0.0/16"));
    let reqs: Vec<ServiceRequest> = (0..10_000)
        .map(|i| {
            let mut r = req("default", i);
            r.labels.insert("app".into(), format!("a{}", i % 50));
            r
        })
        .collect();
    let mut g = c.benchmark_group("allocator");
    g.sample_size(10);
    g.bench_function("10k services across 100 pools with selectors", |b| {
        b.iter_batched(
            || Allocator::new(pools.clone()),
            |mut a| {
                for r in &reqs {
                    black_box(a.ensure(r).unwrap());
                }
                a
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_fill_levels(c: &mut Criterion) {
    let mut g = c.benchmark_group("allocator single allocation (ensure+release) in a /16");
    for pct in [10usize, 50, 99] {
        let mut a = filled("10.1.0.0/16", 65_536 * pct / 100);
        let r = req("default", 0);
        g.bench_function(format!("{pct}% full"), |b| {
            b.iter(|| {
                black_box(a.ensure(&r).unwrap());
                a.release(&r.key);
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_100k_slash8,
    bench_last_free_slash16,
    bench_100_pools,
    bench_fill_levels
);
criterion_main!(benches);

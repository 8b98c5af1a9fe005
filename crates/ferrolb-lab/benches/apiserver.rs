//! Embedded API server costs: store operations, kube-rs round trips over HTTP, and the latency
//! from a write to the watch event reaching a client.
//!
//! `cargo bench --bench apiserver`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ferrolb_lab::apiserver::patch::PatchKind;
use ferrolb_lab::apiserver::query::parse_label_selector;
use ferrolb_lab::apiserver::store::{Filter, Store, Sub, WriteOptions};
use ferrolb_lab::apiserver::ApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn store_ops(c: &mut Criterion) {
    let store = Store::new(10_000);
    let def = store.registry_find("", "v1", "services").unwrap();
    let o = WriteOptions::default();
    for i in 0..1000 {
        let labels = json!({"app": format!("a{}", i % 10)});
        store
            .create(
                &def,
                "default",
                json!({"metadata": {"name": format!("s{i}"), "labels": labels},
                       "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
                &o,
            )
            .unwrap();
    }
    let mut n = 0u64;
    c.bench_function("store/status merge patch (1000 services)", |b| {
        b.iter(|| {
            n += 1;
            let body = serde_json::to_vec(&json!({"status": {"loadBalancer": {"ingress": [{"ip": format!("192.0.2.{}", n % 250)}]}}})).unwrap();
            store
                .patch(&def, "default", "s500", PatchKind::Merge, &body, Sub::Status, &o)
                .unwrap()
        })
    });
    let filter = Filter {
        labels: parse_label_selector("app=a3").unwrap(),
        ..Default::default()
    };
    c.bench_function("store/list by label (100 of 1000)", |b| {
        b.iter(|| store.list(&def, &filter).0.len())
    });
}

fn http_ops(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, svcs) = rt.block_on(async {
        let server = ApiServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = kube::Client::try_from(server.admin_config()).unwrap();
        let svcs: Api<Service> = Api::namespaced(client, "default");
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}))
        .unwrap();
        svcs.create(&PostParams::default(), &svc).await.unwrap();
        (server, svcs)
    });
    c.bench_function("http/kube-rs get service", |b| {
        b.iter(|| rt.block_on(svcs.get("web")).unwrap())
    });
    let mut n = 0u64;
    c.bench_function("http/kube-rs patch_status service", |b| {
        b.iter(|| {
            n += 1;
            let p = json!({"status": {"loadBalancer": {"ingress": [{"ip": format!("192.0.2.{}", n % 250)}]}}});
            rt.block_on(svcs.patch_status("web", &PatchParams::default(), &Patch::Merge(p)))
                .unwrap()
        })
    });
    // Write → watch event at the client.
    let mut stream = rt.block_on(async {
        svcs.watch(&WatchParams::default().timeout(290), "0")
            .await
            .unwrap()
            .boxed()
    });
    rt.block_on(async { stream.next().await }); // the synthetic ADDED
    c.bench_function("http/write to watch event latency", |b| {
        b.iter(|| {
            n += 1;
            let p = json!({"metadata": {"labels": {"n": n.to_string()}}});
            rt.block_on(async {
                svcs.patch("web", &PatchParams::default(), &Patch::Merge(p))
                    .await
                    .unwrap();
                loop {
                    match stream.next().await.unwrap().unwrap() {
                        WatchEvent::Modified(_) => break,
                        _ => continue,
                    }
                }
            })
        })
    });
    rt.block_on(server.shutdown()).unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(50);
    targets = store_ops, http_ops
}
criterion_main!(benches);

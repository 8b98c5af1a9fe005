//! API effects of one leadership session against kube-fake-client (no watch support:
//! the watch streams are fed from channels, as a watcher would deliver them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb::controller::leader::Leadership;
use ferrolb::controller::metrics::Metrics;
use ferrolb::controller::shell::{lead, Inputs, Settings};
use ferrolb::controller::writer::Writer;
use ferrolb::crd::{IPAddressPool, IPAddressPoolSpec, L2Advertisement};
use futures::channel::mpsc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

type Tx<K> = mpsc::UnboundedSender<watcher::Result<Event<K>>>;

fn chan<K: Send + 'static>() -> (
    Tx<K>,
    futures::stream::BoxStream<'static, watcher::Result<Event<K>>>,
) {
    let (tx, rx) = mpsc::unbounded();
    (tx, rx.boxed())
}

fn initial<K>(tx: &Tx<K>, objs: Vec<K>) {
    tx.unbounded_send(Ok(Event::Init)).unwrap();
    for o in objs {
        tx.unbounded_send(Ok(Event::InitApply(o))).unwrap();
    }
    tx.unbounded_send(Ok(Event::InitDone)).unwrap();
}

fn pool() -> IPAddressPool {
    let mut p = IPAddressPool::new(
        "p",
        IPAddressPoolSpec {
            addresses: vec!["192.168.30.0/30".into()],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    p.metadata.namespace = Some("metallb-system".into());
    p
}

fn svc(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                 "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

/// The senders behind a session's watch streams; dropping them ends the streams.
type Streams = (
    Tx<Service>,
    Tx<IPAddressPool>,
    Tx<L2Advertisement>,
    Tx<Namespace>,
);

/// Starts one leadership session whose watches deliver Service `a` as the API server
/// holds it, [`pool`], and no advertisements or Namespaces.
async fn start(
    client: &kube::Client,
    writer: Writer,
    metrics: &Metrics,
) -> (tokio::task::JoinHandle<anyhow::Result<()>>, Streams) {
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let (stx, services) = chan::<Service>();
    let (ptx, pools) = chan::<IPAddressPool>();
    let (atx, l2ads) = chan::<L2Advertisement>();
    let (ntx, namespaces) = chan::<Namespace>();
    initial(&stx, vec![svcs.get("a").await.unwrap()]);
    initial(&ptx, vec![pool()]);
    initial(&atx, vec![]);
    initial(&ntx, vec![]);
    let session = tokio::spawn(lead(
        client.clone(),
        Settings {
            namespace: "metallb-system".into(),
            lb_class: None,
        },
        Inputs {
            services,
            pools,
            l2ads,
            namespaces,
        },
        writer,
        metrics.clone(),
    ));
    (session, (stx, ptx, atx, ntx))
}

#[tokio::test]
async fn conflict_is_retried_with_backoff_and_status_lands() {
    let conflicts = Arc::new(AtomicUsize::new(0));
    let c2 = conflicts.clone();
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<IPAddressPool>()
        .with_resource::<L2Advertisement>()
        .with_status_subresource::<Service>()
        .with_object(pool())
        .with_object(svc("a"))
        .with_interceptor_funcs(kube_fake_client::interceptor::Funcs::new().patch_status(
            move |ctx| {
                // The first Service status write hits a 409, as if the Service changed.
                if ctx.name == "a" && c2.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(kube_fake_client::Error::Conflict("changed".into()));
                }
                Ok(None)
            },
        ))
        .build()
        .await
        .unwrap();
    let metrics = Metrics::default();
    let writer = Writer::new(
        client.clone(),
        "test",
        Leadership::always(),
        metrics.clone(),
        "metallb-system",
    );
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let (session, streams) = start(&client, writer, &metrics).await;
    let t0 = Instant::now();
    loop {
        let a = svcs.get("a").await.unwrap();
        let ips: Vec<String> = a
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect();
        if ips == ["192.168.30.0"] {
            assert_eq!(
                a.metadata.annotations.unwrap()["metallb.io/ip-allocated-from-pool"],
                "p"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "status never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        conflicts.load(Ordering::SeqCst) >= 2,
        "retried after the 409"
    );
    assert_eq!(metrics.reconcile_errors.get(), 1);
    assert_eq!(metrics.writes("service_status"), 2);
    // Pool status (coalesced) reaches the fake API too.
    let pools_api: Api<IPAddressPool> = Api::namespaced(client.clone(), "metallb-system");
    let t0 = Instant::now();
    loop {
        if let Some(s) = pools_api.get("p").await.unwrap().status {
            if s.assigned_ipv4 == 1 {
                assert_eq!(s.available_ipv4, 3);
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "pool status never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    session.abort();
    drop(streams);
}

#[tokio::test]
async fn a_replica_that_is_not_leader_writes_nothing() {
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<IPAddressPool>()
        .with_resource::<L2Advertisement>()
        .with_status_subresource::<Service>()
        .with_object(pool())
        .with_object(svc("a"))
        .build()
        .await
        .unwrap();
    let metrics = Metrics::default();
    let writer = Writer::new(
        client.clone(),
        "test",
        Leadership::new(), // never leads
        metrics.clone(),
        "metallb-system",
    );
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let (session, streams) = start(&client, writer, &metrics).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    if session.is_finished() {
        panic!("session ended: {:?}", session.await);
    }
    assert!(metrics.reconciles.get() >= 1, "it did reconcile");
    assert!(svcs
        .get("a")
        .await
        .unwrap()
        .status
        .is_none_or(|s| s.load_balancer.is_none_or(|l| l.ingress.is_none())));
    assert_eq!(
        metrics.writes("service_status") + metrics.writes("event"),
        0
    );
    session.abort();
    drop(streams);
}

/// A pool status the API server keeps failing (e.g. broken custom-resource status
/// handling): each retry waits twice as long as the previous one, other objects' statuses
/// are still written, and readiness turns 503 once the failures have lasted long enough;
/// the first write that lands makes it ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pool_status_backs_off_and_makes_the_controller_unready() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    let attempts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let broken = Arc::new(AtomicBool::new(true));
    let (a2, b2) = (attempts.clone(), broken.clone());
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<IPAddressPool>()
        .with_resource::<L2Advertisement>()
        .with_status_subresource::<Service>()
        .with_object(pool())
        .with_object(svc("a"))
        .with_interceptor_funcs(kube_fake_client::interceptor::Funcs::new().patch_status(
            move |ctx| {
                if ctx.name == "p" {
                    a2.lock().unwrap().push(Instant::now());
                    if b2.load(Ordering::SeqCst) {
                        return Err(kube_fake_client::Error::Internal("status broken".into()));
                    }
                }
                Ok(None)
            },
        ))
        .build()
        .await
        .unwrap();
    let metrics = Metrics::default();
    let health =
        ferrolb::telemetry::Health::default().with_unready_after(Duration::from_millis(1500));
    health.set_ready(true);
    let writer = Writer::new(
        client.clone(),
        "test",
        Leadership::always(),
        metrics.clone(),
        "metallb-system",
    )
    .with_health(&health);
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let (session, streams) = start(&client, writer, &metrics).await;
    // The Service status lands although the pool status keeps failing.
    let t0 = Instant::now();
    while svcs
        .get("a")
        .await
        .unwrap()
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .is_none()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "service status never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let seen = attempts.lock().unwrap().clone();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("pool status attempts: {}, gaps {gaps:?}", seen.len());
    assert!(
        (4..=9).contains(&seen.len()),
        "{} attempts in ~5 s",
        seen.len()
    );
    for w in gaps.windows(2) {
        assert!(
            w[1] + Duration::from_millis(50) >= w[0],
            "gaps shrink: {gaps:?}"
        );
    }
    let last = *gaps.last().unwrap();
    assert!(
        last >= Duration::from_millis(1600) && last >= gaps[0] * 3,
        "no growing backoff: {gaps:?}"
    );
    let why = health.readiness(Instant::now()).unwrap_err();
    assert!(why.contains("pool status writes failing"), "{why}");
    assert!(!health.is_ready());
    // The API server heals: the next retry lands and the controller is ready again.
    broken.store(false, Ordering::SeqCst);
    let t1 = Instant::now();
    while !health.is_ready() {
        assert!(t1.elapsed() < Duration::from_secs(8), "still unready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pools_api: Api<IPAddressPool> = Api::namespaced(client.clone(), "metallb-system");
    let st = pools_api.get("p").await.unwrap().status.unwrap();
    assert_eq!(st.assigned_ipv4, 1);
    assert!(st.last_valid_spec.is_some());
    session.abort();
    drop(streams);
}

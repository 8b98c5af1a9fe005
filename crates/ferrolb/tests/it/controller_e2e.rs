//! The real controller (`run_with` + kube-runtime watches) against the embedded API
//! server (`ferrolb_lab::apiserver`), which supports watch.

use std::time::{Duration, Instant};

use ferrolb::controller::metrics::Metrics;
use ferrolb::controller::{run_with, shell::Inputs, Args};
use ferrolb::crd::{IPAddressPool, IPAddressPoolSpec};
use ferrolb::telemetry::Health;
use ferrolb_lab::apiserver::{ApiServer, RunningServer};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

const NS: &str = "metallb-system";

async fn server() -> (RunningServer, kube::Client) {
    ferrolb::controller::install_crypto_provider();
    let srv = ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cfg = kube::Config::new(srv.url().parse().unwrap());
    let client = kube::Client::try_from(cfg).unwrap();
    for ns in ["default", NS] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        // The server may already have it (it creates `default`).
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &n)
            .await;
    }
    (srv, client)
}

fn args(identity: &str, extra: &[&str]) -> Args {
    use clap::Parser;
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }
    let mut v = vec![
        "x",
        "--namespace",
        NS,
        "--pod-name",
        identity,
        "--leader-election-lease-duration",
        "3s",
        "--leader-election-renew-period",
        "500ms",
        "--leader-election-retry-period",
        "200ms",
    ];
    v.extend_from_slice(extra);
    T::try_parse_from(v).unwrap().a
}

struct Replica {
    metrics: Metrics,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(client: &kube::Client, identity: &str, extra: &[&str]) -> Replica {
    let metrics = Metrics::default();
    let (tx, rx) = watch::channel(false);
    let c = client.clone();
    let a = args(identity, extra);
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        let c2 = c.clone();
        run_with(c, &a, m, Health::default(), rx, move || {
            Inputs::watch(&c2, NS)
        })
        .await
    });
    Replica {
        metrics,
        shutdown: tx,
        task,
    }
}

impl Replica {
    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
    fn writes(&self) -> u64 {
        ["service_status", "event", "pool_status"]
            .iter()
            .map(|k| self.metrics.writes(k))
            .sum()
    }
}

async fn create_pool(client: &kube::Client, name: &str, addresses: &[&str]) {
    let mut p = IPAddressPool::new(
        name,
        IPAddressPoolSpec {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    p.metadata.namespace = Some(NS.into());
    Api::<IPAddressPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
}

async fn create_svc(client: &kube::Client, name: &str, class: Option<&str>) {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "loadBalancerClass": class,
            "ports": [{"port": 80, "protocol": "TCP"}]
        }
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

async fn ingress(client: &kube::Client, name: &str) -> Vec<String> {
    let s = Api::<Service>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .unwrap();
    s.status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect()
}

async fn eventually<F, Fut>(what: &str, limit: Duration, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn events(client: &kube::Client, ns: &str, about: &str, reason: &str) -> usize {
    Api::<K8sEvent>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(about)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_events_pool_status_invalid_pool_pending_retry_and_rest() {
    let (srv, client) = server().await;
    create_pool(&client, "p", &["192.168.10.0/31"]).await;
    create_pool(&client, "bad", &["10.0.0.0/33"]).await;
    create_svc(&client, "a", None).await;
    create_svc(&client, "other-class", Some("someone-else")).await;
    let r = start(&client, "c1", &[]);

    // Allocation: status + annotation + IPAllocated Event.
    eventually("a has an IP", Duration::from_secs(10), || async {
        !ingress(&client, "a").await.is_empty()
    })
    .await;
    assert_eq!(ingress(&client, "a").await, ["192.168.10.0"]);
    let a = Api::<Service>::namespaced(client.clone(), "default")
        .get("a")
        .await
        .unwrap();
    assert_eq!(
        a.metadata.annotations.unwrap()["metallb.io/ip-allocated-from-pool"],
        "p"
    );
    eventually("IPAllocated event", Duration::from_secs(5), || async {
        events(&client, "default", "a", "IPAllocated").await == 1
    })
    .await;
    assert!(ingress(&client, "other-class").await.is_empty());

    // Invalid pool: Valid=False condition naming the value, Warning Event, ignored.
    let pools = Api::<IPAddressPool>::namespaced(client.clone(), NS);
    eventually("bad pool condition", Duration::from_secs(5), || async {
        let p = pools.get("bad").await.unwrap();
        p.status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Valid" && c.status == "False" && c.message.contains("10.0.0.0/33")
            })
        })
    })
    .await;
    // The Event is published by the recorder after the status write: wait for it too.
    eventually(
        "InvalidConfiguration event",
        Duration::from_secs(5),
        || async { events(&client, NS, "bad", "InvalidConfiguration").await == 1 },
    )
    .await;
    // Valid pool counters, coalesced.
    eventually("pool p status", Duration::from_secs(5), || async {
        let p = pools.get("p").await.unwrap();
        p.status
            .is_some_and(|s| s.assigned_ipv4 == 1 && s.available_ipv4 == 1)
    })
    .await;

    // b takes the last IP, c stays pending with one AllocationFailed.
    create_svc(&client, "b", None).await;
    eventually("b has an IP", Duration::from_secs(5), || async {
        ingress(&client, "b").await == ["192.168.10.1"]
    })
    .await;
    create_svc(&client, "c", None).await;
    eventually("AllocationFailed for c", Duration::from_secs(5), || async {
        events(&client, "default", "c", "AllocationFailed").await == 1
    })
    .await;

    // At rest: nothing written for 2 s (lease renewals aside).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = r.writes();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.writes(), before, "a controller at rest must not write");

    // Deleting a frees 192.168.10.0 for the pending c.
    Api::<Service>::namespaced(client.clone(), "default")
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    eventually("c gets a's IP", Duration::from_secs(5), || async {
        ingress(&client, "c").await == ["192.168.10.0"]
    })
    .await;

    // b stops being a LoadBalancer: released and cleared.
    Api::<Service>::namespaced(client.clone(), "default")
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
        )
        .await
        .unwrap();
    eventually("b cleared", Duration::from_secs(5), || async {
        ingress(&client, "b").await.is_empty()
    })
    .await;
    assert_eq!(events(&client, "default", "c", "AllocationFailed").await, 1);
    r.stop().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_handover_keeps_every_ip_and_the_new_leader_writes_nothing() {
    let (srv, client) = server().await;
    create_pool(&client, "p", &["192.168.20.0/28"]).await;
    for i in 0..8 {
        create_svc(&client, &format!("s{i}"), None).await;
    }
    let a = start(&client, "replica-a", &[]);
    eventually("all have IPs", Duration::from_secs(10), || async {
        for i in 0..8 {
            if ingress(&client, &format!("s{i}")).await.is_empty() {
                return false;
            }
        }
        true
    })
    .await;
    let mut before = Vec::new();
    for i in 0..8 {
        before.push(ingress(&client, &format!("s{i}")).await);
    }
    let b = start(&client, "replica-b", &[]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(b.writes(), 0, "the standby writes nothing");
    assert_eq!(b.metrics.leader.get(), 0);

    // SIGTERM on a: b takes over quickly.
    let t0 = Instant::now();
    a.stop().await;
    let bm = b.metrics.clone();
    eventually("b leads", Duration::from_secs(3), || {
        let bm = bm.clone();
        async move { bm.leader.get() == 1 }
    })
    .await;
    let handover = t0.elapsed();
    assert!(
        handover < Duration::from_millis(1800),
        "handover took {handover:?}"
    );
    // b rebuilt from statuses: same IPs; a new Service gets a fresh one.
    create_svc(&client, "late", None).await;
    eventually("late gets an IP", Duration::from_secs(5), || async {
        !ingress(&client, "late").await.is_empty()
    })
    .await;
    let late = ingress(&client, "late").await;
    for (i, want) in before.iter().enumerate() {
        assert_eq!(&ingress(&client, &format!("s{i}")).await, want);
        assert_ne!(&late, want, "late stole s{i}'s IP");
    }
    assert_eq!(
        b.metrics.writes("service_status"),
        1,
        "the new leader only wrote the new Service"
    );
    b.stop().await;
    srv.shutdown().await.unwrap();
}

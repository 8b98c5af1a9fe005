//! The real controller (`run_with` + kube-runtime watches) against the embedded API
//! server (`ferrolb_lab::apiserver`), which supports watch. The controller runs as its
//! ServiceAccount with the RBAC objects of `deploy/ferrolb.yaml`; the test sets up as the
//! admin.

use std::time::{Duration, Instant};

use ferrolb::controller::metrics::Metrics;
use ferrolb::controller::{run_with, shell::Inputs, Args};
use ferrolb::crd::{IPAddressPool, IPAddressPoolSpec};
use ferrolb::telemetry::Health;
use ferrolb_lab::apiserver::{ApiServer, RunningServer};
use ferrolb_lab::harness::{
    apply_objects, rbac_documents, CONTROLLER_SA, DEPLOY_MANIFEST, SPEAKER_SA,
};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

const NS: &str = "metallb-system";

/// The server with the namespaces and deploy/ferrolb.yaml's RBAC objects; an admin client
/// (for the test) and one acting as the controller's ServiceAccount (for the controller).
async fn server() -> (RunningServer, kube::Client, kube::Client) {
    ferrolb::controller::install_crypto_provider();
    let srv = ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = kube::Client::try_from(srv.admin_config()).unwrap();
    for ns in ["default", NS] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        // The server may already have it (it creates `default`).
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &n)
            .await;
    }
    apply_objects(&client, rbac_documents(DEPLOY_MANIFEST).unwrap())
        .await
        .unwrap();
    let controller =
        kube::Client::try_from(srv.service_account_config(NS, CONTROLLER_SA).unwrap()).unwrap();
    (srv, client, controller)
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

/// How long a step may take before the test fails: generous, because [`eventually`] returns
/// as soon as the condition holds and a loaded machine (CI's two cores) can be slow.
const WAIT: Duration = Duration::from_secs(20);

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
    let (srv, client, controller) = server().await;
    create_pool(&client, "p", &["192.168.10.0/31"]).await;
    // Invalid, but not refused by the CRD's rules (they have no order on IPv6 addresses).
    create_pool(&client, "bad", &["fc00::9-fc00::1"]).await;
    create_svc(&client, "a", None).await;
    create_svc(&client, "other-class", Some("someone-else")).await;
    let r = start(&controller, "c1", &[]);

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
    eventually("IPAllocated event", WAIT, || async {
        events(&client, "default", "a", "IPAllocated").await == 1
    })
    .await;
    assert!(ingress(&client, "other-class").await.is_empty());

    // Invalid pool: Valid=False condition naming the value, Warning Event, ignored.
    let pools = Api::<IPAddressPool>::namespaced(client.clone(), NS);
    eventually("bad pool condition", WAIT, || async {
        let p = pools.get("bad").await.unwrap();
        p.status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Valid" && c.status == "False" && c.message.contains("fc00::9-fc00::1")
            })
        })
    })
    .await;
    // The Event is published by the recorder after the status write: wait for it too.
    eventually("InvalidConfiguration event", WAIT, || async {
        events(&client, NS, "bad", "InvalidConfiguration").await == 1
    })
    .await;
    // Valid pool counters, coalesced.
    eventually("pool p status", WAIT, || async {
        let p = pools.get("p").await.unwrap();
        p.status
            .is_some_and(|s| s.assigned_ipv4 == 1 && s.available_ipv4 == 1)
    })
    .await;

    // b takes the last IP, c stays pending with one AllocationFailed.
    create_svc(&client, "b", None).await;
    eventually("b has an IP", WAIT, || async {
        ingress(&client, "b").await == ["192.168.10.1"]
    })
    .await;
    create_svc(&client, "c", None).await;
    eventually("AllocationFailed for c", WAIT, || async {
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
    eventually("c gets a's IP", WAIT, || async {
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
    eventually("b cleared", WAIT, || async {
        ingress(&client, "b").await.is_empty()
    })
    .await;
    assert_eq!(events(&client, "default", "c", "AllocationFailed").await, 1);
    r.stop().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_handover_keeps_every_ip_and_the_new_leader_writes_nothing() {
    let (srv, client, controller) = server().await;
    create_pool(&client, "p", &["192.168.20.0/28"]).await;
    for i in 0..8 {
        create_svc(&client, &format!("s{i}"), None).await;
    }
    let a = start(&controller, "replica-a", &[]);
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
    let b = start(&controller, "replica-b", &[]);
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
    eventually("late gets an IP", WAIT, || async {
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

async fn pool_status(client: &kube::Client, name: &str) -> ferrolb::crd::IPAddressPoolStatus {
    Api::<IPAddressPool>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

fn valid_condition(
    st: &ferrolb::crd::IPAddressPoolStatus,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    st.conditions.iter().find(|c| c.type_ == "Valid").cloned()
}

/// A pool edited into an invalid spec is frozen: its Service keeps its IP, a new Service
/// gets none from it, its condition and a Warning Event name the field, and all of this
/// holds across a controller restart (the last valid spec is read back from the status),
/// even with another pool's status mangled by hand. Fixing the spec thaws it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_freezes_the_pool_across_restarts() {
    let (srv, client, controller) = server().await;
    let pools = Api::<IPAddressPool>::namespaced(client.clone(), NS);
    create_pool(&client, "default", &["192.0.2.100/30"]).await;
    create_svc(&client, "a", None).await;
    let r1 = start(&controller, "c1", &[]);
    eventually("a has an IP", Duration::from_secs(10), || async {
        ingress(&client, "a").await == ["192.0.2.100"]
    })
    .await;
    eventually("lastValidSpec published", WAIT, || async {
        let st = pool_status(&client, "default").await;
        valid_condition(&st).is_some_and(|c| c.status == "True")
            && st
                .last_valid_spec
                .is_some_and(|s| s.addresses == ["192.0.2.100/30"])
    })
    .await;

    // A typo the CRD's rules catch is refused by the API server, naming the field.
    let refused = pools
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"addresses": ["192.0.2.100/30", "10.0.0.1/33"]}})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(r#"spec.addresses[1]: Invalid value"#)
            && refused.contains("prefix length 33 is longer than 32"),
        "{refused}"
    );
    // One they leave to the controller freezes the pool.
    pools
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"addresses": ["192.0.2.100/30", "fc00::9-fc00::1"]}})),
        )
        .await
        .unwrap();
    let field = r#"spec.addresses[1]: invalid IP range "fc00::9-fc00::1""#;
    eventually("Frozen condition", WAIT, || async {
        let st = pool_status(&client, "default").await;
        valid_condition(&st).is_some_and(|c| {
            c.status == "False"
                && c.reason == "Frozen"
                && c.message.contains(field)
                && c.observed_generation == Some(2)
        })
    })
    .await;
    eventually("Warning Event naming the field", WAIT, || async {
        Api::<K8sEvent>::namespaced(client.clone(), NS)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidConfiguration")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains(field))
            })
    })
    .await;
    let st = pool_status(&client, "default").await;
    assert_eq!(st.last_valid_spec.unwrap().addresses, ["192.0.2.100/30"]);
    assert_eq!(st.assigned_ipv4, 1, "the frozen pool still counts its IP");
    assert_eq!(ingress(&client, "a").await, ["192.0.2.100"]);
    // Nothing new from a frozen pool.
    create_svc(&client, "b", None).await;
    eventually("AllocationFailed for b", WAIT, || async {
        events(&client, "default", "b", "AllocationFailed").await == 1
    })
    .await;
    assert!(ingress(&client, "b").await.is_empty());

    // Another writer leaves another pool a status of its own (schema-valid, as the API server
    // enforces, but not what this controller would write: odd counters, an unknown verdict, no
    // last valid spec); then the controller restarts.
    create_pool(&client, "other", &["198.51.100.0/30"]).await;
    r1.stop().await;
    pools
        .patch_status(
            "other",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"assignedIPv4": 99, "conditions": [{"type": "Valid",
                "status": "Unknown", "reason": "WrittenByHand", "message": "",
                "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}),
            ),
        )
        .await
        .unwrap();
    let r2 = start(&controller, "c2", &[]);
    // b gets an IP from "other" (so the pool watch works), a keeps its IP, still frozen.
    eventually(
        "b served by the other pool",
        Duration::from_secs(10),
        || async { ingress(&client, "b").await == ["198.51.100.0"] },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(ingress(&client, "a").await, ["192.0.2.100"]);
    let st = pool_status(&client, "default").await;
    assert_eq!(valid_condition(&st).unwrap().reason, "Frozen");
    assert_eq!(st.last_valid_spec.unwrap().addresses, ["192.0.2.100/30"]);
    // The pool's status is written after b's (and retried with backoff if the write fails), so
    // under load it may land after the second above.
    eventually("the mangled status rewritten", WAIT, || async {
        pool_status(&client, "other").await.assigned_ipv4 == 1
    })
    .await;

    // The fix thaws it: the new spec is in force, a keeps its IP.
    pools
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"addresses": ["192.0.2.100/30", "192.0.2.104/30"]}})),
        )
        .await
        .unwrap();
    eventually("Accepted again", WAIT, || async {
        let st = pool_status(&client, "default").await;
        let accepted = valid_condition(&st)
            .is_some_and(|c| c.status == "True" && c.observed_generation == Some(3));
        accepted && st.last_valid_spec.is_some_and(|s| s.addresses.len() == 2)
    })
    .await;
    assert_eq!(ingress(&client, "a").await, ["192.0.2.100"]);
    r2.stop().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_key_secret_with_the_deployed_permissions() {
    use ferrolb::controller::secret::{ensure_heartbeat_key, KeyOutcome};
    use k8s_openapi::api::core::v1::Secret;
    let (srv, client, controller) = server().await;
    // The controller creates the key once, then finds it.
    assert_eq!(
        ensure_heartbeat_key(controller.clone(), NS).await.unwrap(),
        KeyOutcome::Created
    );
    assert_eq!(
        ensure_heartbeat_key(controller.clone(), NS).await.unwrap(),
        KeyOutcome::Present
    );
    // Every speaker reads it with its own ServiceAccount.
    let speaker =
        kube::Client::try_from(srv.service_account_config(NS, SPEAKER_SA).unwrap()).unwrap();
    let key =
        ferrolb::speaker::heartbeat::load_key(&Api::<Secret>::namespaced(speaker.clone(), NS))
            .await
            .unwrap();
    assert!(key.is_some(), "the speaker reads the heartbeat key");
    // Neither may read another Secret, and the speaker may not create one.
    let other: Secret =
        serde_json::from_value(json!({"metadata": {"name": "other"}, "stringData": {"a": "b"}}))
            .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    for c in [&controller, &speaker] {
        let e = Api::<Secret>::namespaced((*c).clone(), NS)
            .get("other")
            .await
            .unwrap_err();
        assert!(matches!(e, kube::Error::Api(ref s) if s.code == 403), "{e}");
    }
    let e = Api::<Secret>::namespaced(speaker, NS)
        .create(&PostParams::default(), &other)
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 403), "{e}");
    srv.shutdown().await.unwrap();
}

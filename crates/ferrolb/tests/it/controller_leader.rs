//! Leader election of the controller against an in-memory API (kube-fake-client).

use std::time::{Duration, Instant};

use ferrolb::controller::leader::{run_elector, LeaderConfig, Leadership};
use ferrolb::controller::metrics::Metrics;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

fn cfg(identity: &str) -> LeaderConfig {
    LeaderConfig {
        namespace: "metallb-system".into(),
        lease_name: "ferrolb-controller".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        renew_period: Duration::from_millis(300),
        retry_period: Duration::from_millis(200),
    }
}

struct Replica {
    leadership: Leadership,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(client: kube::Client, identity: &str) -> Replica {
    let leadership = Leadership::new();
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(run_elector(
        client,
        cfg(identity),
        leadership.clone(),
        rx,
        Metrics::default(),
    ));
    Replica {
        leadership,
        shutdown,
        task,
    }
}

async fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

async fn holder(client: &kube::Client) -> String {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "metallb-system");
    leases
        .get("ferrolb-controller")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap_or_default()
}

#[tokio::test]
async fn only_one_leader_and_handover_on_shutdown_within_about_a_second() {
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    let a = start(client.clone(), "replica-a");
    wait_until("a leads", Duration::from_secs(5), || {
        a.leadership.is_leader()
    })
    .await;
    let b = start(client.clone(), "replica-b");
    // b stays standby while a renews.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(a.leadership.is_leader());
    assert!(!b.leadership.is_leader(), "two leaders at once");
    assert_eq!(holder(&client).await, "replica-a");

    // SIGTERM on a: it stops writing at once and releases the lease.
    let t0 = Instant::now();
    a.shutdown.send(true).unwrap();
    a.task.await.unwrap();
    assert!(!a.leadership.is_leader());
    wait_until("b leads", Duration::from_secs(3), || {
        b.leadership.is_leader()
    })
    .await;
    let handover = t0.elapsed();
    assert!(
        handover < Duration::from_millis(1600),
        "handover took {handover:?}"
    );
    assert_eq!(holder(&client).await, "replica-b");
    b.shutdown.send(true).unwrap();
    b.task.await.unwrap();
}

#[tokio::test]
async fn a_leader_that_loses_the_lease_stops_writing() {
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    let a = start(client.clone(), "replica-a");
    wait_until("a leads", Duration::from_secs(5), || {
        a.leadership.is_leader()
    })
    .await;
    // Someone else takes the lease (e.g. after a network partition healed).
    let leases: Api<Lease> = Api::namespaced(client.clone(), "metallb-system");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    leases
        .patch(
            "ferrolb-controller",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 15}
            })),
        )
        .await
        .unwrap();
    // At the next renewal attempt (renew period 300 ms) a notices and stops.
    let took = wait_until("a stops leading", Duration::from_secs(2), || {
        !a.leadership.is_leader()
    })
    .await;
    assert!(took < Duration::from_millis(800), "took {took:?}");
    // It does not release a lease it does not hold.
    a.shutdown.send(true).unwrap();
    a.task.await.unwrap();
    assert_eq!(holder(&client).await, "intruder");
}

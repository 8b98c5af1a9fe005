//! The embedded API server against kube-rs runtime machinery: raw watches, 410 Gone,
//! `watcher` + `reflector`, kube-leader-election Leases, the events Recorder, watch lifetimes.

use std::time::Duration;

use ferrolb_lab::apiserver::{ApiServer, RunningServer};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use serde_json::json;
use tokio::time::timeout;

async fn start_with(b: ApiServer) -> RunningServer {
    b.start_at("127.0.0.1:0".parse().unwrap())
        .await
        .expect("server starts")
}

fn client(server: &RunningServer) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = server.admin_config();
    Client::try_from(config).expect("client")
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()},
        "data": {"v": "0"}
    }))
    .unwrap()
}

const STEP: Duration = Duration::from_secs(5);

/// Next non-bookmark watch event as (type, name).
async fn next_event<S>(s: &mut S) -> (String, String)
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    loop {
        let ev = timeout(STEP, s.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("no error");
        return match ev {
            WatchEvent::Added(o) => ("ADDED".into(), o.name_any()),
            WatchEvent::Modified(o) => ("MODIFIED".into(), o.name_any()),
            WatchEvent::Deleted(o) => ("DELETED".into(), o.name_any()),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("unexpected error event {e:?}"),
        };
    }
}

#[tokio::test]
async fn watch_from_resource_version_sees_changes_in_order() {
    let server = start_with(ApiServer::new()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    cms.create(&PostParams::default(), &cm("before", &[]))
        .await
        .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    // Another namespace is not part of this watch.
    let other: Api<ConfigMap> = Api::namespaced(client(&server), "kube-system");
    other
        .create(&PostParams::default(), &cm("elsewhere", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();
    assert_eq!(next_event(&mut stream).await, ("ADDED".into(), "a".into()));
    assert_eq!(
        next_event(&mut stream).await,
        ("MODIFIED".into(), "a".into())
    );
    assert_eq!(
        next_event(&mut stream).await,
        ("DELETED".into(), "a".into())
    );
    assert_eq!(next_event(&mut stream).await, ("ADDED".into(), "b".into()));

    // resourceVersion "0": the current objects first, as synthetic ADDED events.
    let mut from_zero = cms
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = vec![
        next_event(&mut from_zero).await,
        next_event(&mut from_zero).await,
    ];
    names.sort();
    assert_eq!(
        names,
        [
            ("ADDED".to_string(), "b".to_string()),
            ("ADDED".into(), "before".into())
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_with_selector_turns_relabels_into_added_and_deleted() {
    let server = start_with(ApiServer::new()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let rv = cms
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let mut s = cms
        .watch(&WatchParams::default().labels("app=web").timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let relabel = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    cms.patch("x", &PatchParams::default(), &relabel(Some("web")))
        .await
        .unwrap();
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    cms.patch("x", &PatchParams::default(), &relabel(Some("db")))
        .await
        .unwrap();
    cms.patch("x", &PatchParams::default(), &relabel(None))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("y", &[("app", "web")]))
        .await
        .unwrap();
    assert_eq!(next_event(&mut s).await, ("ADDED".into(), "x".into()));
    assert_eq!(next_event(&mut s).await, ("MODIFIED".into(), "x".into()));
    assert_eq!(next_event(&mut s).await, ("DELETED".into(), "x".into()));
    assert_eq!(next_event(&mut s).await, ("ADDED".into(), "y".into()));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_resource_version_is_410_gone() {
    let server = start_with(ApiServer::new().history_limit(3)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let first = cms
        .create(&PostParams::default(), &cm("c0", &[]))
        .await
        .unwrap();
    for i in 1..10 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let mut s = cms
        .watch(
            &WatchParams::default().timeout(30),
            &first.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match timeout(STEP, s.next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(
        timeout(STEP, s.next()).await.unwrap().is_none(),
        "the stream ends after the error"
    );
    // A recent version still works.
    let recent = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut ok = cms
        .watch(&WatchParams::default().timeout(30), &recent)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("new", &[]))
        .await
        .unwrap();
    assert_eq!(next_event(&mut ok).await, ("ADDED".into(), "new".into()));
    // An exact list at an old version is gone too.
    let lp = ListParams::default()
        .at(&first.resource_version().unwrap())
        .matching(kube::api::VersionMatch::Exact);
    match cms.list(&lp).await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!(s.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watcher_and_reflector_converge_under_churn() {
    // A tiny history: a watcher falling behind gets 410 and relists.
    let server = start_with(
        ApiServer::new()
            .history_limit(4)
            .bookmark_interval(Duration::from_millis(200)),
    )
    .await;
    let c = client(&server);
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let (reader, writer) = reflector::store::<Service>();
    let stream = reflector(writer, watcher(svcs.clone(), watcher::Config::default()))
        .applied_objects()
        .for_each(|_| async {});
    let task = tokio::spawn(stream);
    timeout(STEP, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    let svc = |name: &str| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})).unwrap()
    };
    for i in 0..20 {
        svcs.create(&PostParams::default(), &svc(&format!("s{i}")))
            .await
            .unwrap();
    }
    for i in 0..20 {
        svcs.patch_status(
            &format!("s{i}"),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": format!("192.0.2.{i}")}]}}}),
            ),
        )
        .await
        .unwrap();
    }
    for i in (0..20).step_by(3) {
        svcs.delete(&format!("s{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let want: Vec<(String, Option<String>)> = {
        let mut v: Vec<_> = svcs
            .list(&ListParams::default())
            .await
            .unwrap()
            .iter()
            .map(|s| (s.name_any(), s.resource_version()))
            .collect();
        v.sort();
        v
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut have: Vec<_> = reader
            .state()
            .iter()
            .map(|s| (s.name_any(), s.resource_version()))
            .collect();
        have.sort();
        if have == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector did not converge: {have:?} vs {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s5 = reader
        .state()
        .into_iter()
        .find(|s| s.name_any() == "s5")
        .unwrap();
    assert_eq!(
        s5.status
            .clone()
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.5")
    );
    task.abort();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_bookmark() {
    let server = start_with(ApiServer::new()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("i{i}"), &[]))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let cfg = watcher::Config::default().streaming_lists();
    let task = tokio::spawn(reflector(writer, watcher(cms.clone(), cfg)).for_each(|_| async {}));
    timeout(STEP, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state().len(), 3);
    task.abort();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn lease_lock_acquire_renew_and_handover() {
    let server = start_with(ApiServer::new()).await;
    let lock = |id: &str, ttl: u64| {
        LeaseLock::new(
            client(&server),
            "kube-system",
            LeaseLockParams {
                holder_id: id.into(),
                lease_name: "ferrolb-controller".into(),
                lease_ttl: Duration::from_secs(ttl),
            },
        )
    };
    let a = lock("a", 2);
    let b = lock("b", 2);
    assert!(matches!(
        a.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::Acquired(_)
    ));
    assert!(matches!(
        b.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::NotAcquired(_)
    ));
    let renewed = match a.try_acquire_or_renew().await.unwrap() {
        LeaseLockResult::Acquired(l) => l,
        other => panic!("a should renew, got {other:?}"),
    };
    assert_eq!(
        renewed.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("a")
    );
    // Graceful handover: the library releases by writing an empty holder with a 1 s duration.
    a.step_down().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let l = match b.try_acquire_or_renew().await.unwrap() {
        LeaseLockResult::Acquired(l) => l,
        other => panic!("b should acquire after step-down, got {other:?}"),
    };
    assert_eq!(
        l.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("b")
    );
    assert_eq!(l.spec.as_ref().unwrap().lease_transitions, Some(1));
    assert!(matches!(
        a.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::NotAcquired(_)
    ));
    // Expiry: b stops renewing, a takes over after the TTL.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let l = match a.try_acquire_or_renew().await.unwrap() {
        LeaseLockResult::Acquired(l) => l,
        other => panic!("a should acquire an expired lease, got {other:?}"),
    };
    assert_eq!(
        l.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("a")
    );
    assert_eq!(l.spec.as_ref().unwrap().lease_transitions, Some(2));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn recorder_publishes_events_k8s_io_events() {
    let server = start_with(ApiServer::new()).await;
    let c = client(&server);
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer"}}),
    )
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let recorder = Recorder::new(
        c.clone(),
        Reporter {
            controller: "ferrolb-controller".into(),
            instance: Some("ferrolb-controller-0".into()),
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "IPAllocated".into(),
        note: Some("Assigned IP [\"192.0.2.10\"]".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    let reference = svc.object_ref(&());
    recorder.publish(&ev, &reference).await.unwrap();
    // The same event again becomes a series (a merge patch on the same Event).
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(c.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1, "{:?}", list.items);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("IPAllocated"));
    assert_eq!(e.regarding.as_ref().unwrap().name.as_deref(), Some("web"));
    assert_eq!(
        e.reporting_controller.as_deref(),
        Some("ferrolb-controller")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watches_end_on_timeout_disconnect_and_shutdown() {
    let server = start_with(ApiServer::new()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    // timeoutSeconds is honoured.
    let started = tokio::time::Instant::now();
    let s = cms
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    let n = timeout(STEP, s.try_collect::<Vec<_>>())
        .await
        .expect("ends in time")
        .unwrap();
    assert!(n.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A client that goes away releases its watch.
    let s = cms
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    let wait_for = |n: usize| {
        let store = server.store();
        async move {
            let deadline = tokio::time::Instant::now() + STEP;
            while store.active_watches() != n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "active watches stuck at {}",
                    store.active_watches()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(1).await;
    drop(s);
    wait_for(0).await;

    // Shutdown ends open watches (and does not wait for their timeout).
    let mut s = cms
        .watch(&WatchParams::default().timeout(200), "0")
        .await
        .unwrap()
        .boxed();
    wait_for(1).await;
    let store = server.store();
    timeout(STEP, server.shutdown())
        .await
        .expect("shutdown is prompt")
        .unwrap();
    assert!(timeout(STEP, s.next())
        .await
        .expect("stream ends")
        .is_none_or(|r| r.is_err()));
    assert_eq!(store.active_watches(), 0);
}

#[tokio::test]
async fn bookmarks_are_sent_when_allowed() {
    let server = start_with(ApiServer::new().bookmark_interval(Duration::from_millis(100))).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let rv = cms
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let mut s = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            }
            .timeout(30),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    match timeout(STEP, s.next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, rv);
            assert_eq!(b.types.kind, "ConfigMap");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflector_recovers_across_api_server_restart() {
    let first = start_with(ApiServer::new()).await;
    let addr = first.addr;
    let store = first.store();
    let cms: Api<ConfigMap> = Api::namespaced(client(&first), "default");
    cms.create(&PostParams::default(), &cm("old", &[]))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let task = tokio::spawn(
        reflector(writer, watcher(cms.clone(), watcher::Config::default())).for_each(|_| async {}),
    );
    timeout(STEP, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    let token = first.admin_token().to_string();
    first.shutdown().await.unwrap();

    // While the server is away, the objects change (through another server on the same store)
    // and the history the watcher would resume from is dropped.
    let side = start_with(ApiServer::new().store(store.clone()).admin_token(&token)).await;
    let side_cms: Api<ConfigMap> = Api::namespaced(client(&side), "default");
    side_cms
        .delete("old", &DeleteParams::default())
        .await
        .unwrap();
    side_cms
        .create(&PostParams::default(), &cm("new", &[]))
        .await
        .unwrap();
    side.shutdown().await.unwrap();
    store.compact(store.resource_version());

    // Back on the same address: the watcher resumes, gets 410 Gone, relists and converges.
    let again = ApiServer::new()
        .store(store)
        .admin_token(&token)
        .start_at(addr)
        .await
        .expect("same address again");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
        if names == ["new"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector stuck at {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        again.metrics().watch_gone.get() >= 1,
        "the resumed watch got 410 Gone"
    );
    task.abort();
    again.shutdown().await.unwrap();
}

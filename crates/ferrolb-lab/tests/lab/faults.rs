//! Faults on demand: chosen requests fail with 403, 409, 422, 429 or 500, or answer late, for a
//! number of requests or for a while; through the Rust API and the admin endpoint.

use std::time::{Duration, Instant};

use ferrolb_lab::apiserver::faults::{FaultSpec, RemoteFaults};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;

use super::support::start;

fn status_of(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn forbidden_for_one_object_only() {
    let (server, c) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    cms.create(&PostParams::default(), &cm("secret-ish"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("open"))
        .await
        .unwrap();
    server
        .faults()
        .add(
            FaultSpec::fail(403)
                .verb("get")
                .resource("configmaps")
                .name("secret-ish"),
        )
        .unwrap();
    let (code, reason, msg) = status_of(cms.get("secret-ish").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        msg,
        "configmaps \"secret-ish\" is forbidden: User \"kubernetes-admin\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    assert!(cms.get("open").await.is_ok(), "other objects are served");
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        2,
        "other verbs too"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn conflict_for_the_next_update_then_normal_service() {
    let (server, c) = start().await;
    let leases: Api<Lease> = Api::namespaced(c, "default");
    let l: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}))
            .unwrap();
    let l = leases.create(&PostParams::default(), &l).await.unwrap();
    let faults = server.faults();
    faults
        .add(
            FaultSpec::fail(409)
                .verb("update")
                .resource("leases")
                .times(1),
        )
        .unwrap();
    let (code, reason, msg) = status_of(
        leases
            .replace("l", &PostParams::default(), &l)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        msg.starts_with("Operation cannot be fulfilled on leases.coordination.k8s.io \"l\""),
        "{msg}"
    );
    assert!(faults.list().is_empty(), "a one-shot fault is spent");
    leases
        .replace("l", &PostParams::default(), &l)
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_for_creates_in_one_namespace() {
    let (server, c) = start().await;
    server
        .faults()
        .add(
            FaultSpec::fail(422)
                .verb("create")
                .resource("services")
                .namespace("blocked"),
        )
        .unwrap();
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]}}))
    .unwrap();
    let blocked: Api<Service> = Api::namespaced(c.clone(), "blocked");
    let (code, reason, msg) = status_of(
        blocked
            .create(&PostParams::default(), &svc)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        msg.starts_with("Service \"\" is invalid: metadata: Invalid value"),
        "{msg}"
    );
    let open: Api<Service> = Api::namespaced(c, "default");
    open.create(&PostParams::default(), &svc).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn too_many_requests_carry_retry_after() {
    let (server, c) = start().await;
    let id = server
        .faults()
        .add(FaultSpec::fail(429).resource("configmaps").retry_after(7))
        .unwrap();
    // kube's client retries 429 by itself: look at the raw answer with retries off.
    let raw = super::support::client_without_retries(&server).await;
    let req = http::Request::get("/api/v1/namespaces/default/configmaps")
        .body(kube::client::Body::from(Vec::new()))
        .unwrap();
    let resp = raw.send(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(
        body["message"],
        "Too many requests, please try again later."
    );
    assert_eq!(body["details"]["retryAfterSeconds"], 7);
    assert!(server.faults().remove(id));
    // The default client waits as told and gets its answer once the fault is spent.
    server
        .faults()
        .add(
            FaultSpec::fail(429)
                .resource("configmaps")
                .retry_after(1)
                .times(2),
        )
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let t = Instant::now();
    assert_eq!(status_of(cms.get("x").await.unwrap_err()).0, 404);
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn internal_errors_for_a_while_on_a_subresource() {
    let (server, c) = start().await;
    let svcs: Api<Service> = Api::namespaced(c, "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}))
    .unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    server
        .faults()
        .add(
            FaultSpec::fail(500)
                .resource("services")
                .subresource("status")
                .lasting(Duration::from_millis(400)),
        )
        .unwrap();
    let status =
        Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}));
    let (code, reason, msg) = status_of(
        svcs.patch_status("web", &PatchParams::default(), &status)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (
            500,
            "InternalError",
            "Internal error occurred: injected fault"
        )
    );
    // The main resource is not affected.
    svcs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    svcs.patch_status("web", &PatchParams::default(), &status)
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn delayed_answers_arrive_late_and_only_for_matching_requests() {
    let (server, c) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    server
        .faults()
        .add(
            FaultSpec::delay(Duration::from_millis(300))
                .verb("get")
                .resource("configmaps")
                .times(2),
        )
        .unwrap();
    let t = Instant::now();
    cms.get("a").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    cms.list(&ListParams::default()).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "lists are not delayed: {:?}",
        t.elapsed()
    );
    // A delayed write still happens, after the delay.
    server
        .faults()
        .add(
            FaultSpec::delay(Duration::from_millis(300))
                .verb("create")
                .times(1),
        )
        .unwrap();
    let t = Instant::now();
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(cms.get_opt("b").await.unwrap().is_some());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_endpoint_adds_lists_and_removes_faults() {
    let (server, c) = start().await;
    let remote = RemoteFaults::new(c.clone());
    let id = remote
        .add(&FaultSpec::fail(500).verb("list").resource("configmaps"))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    assert_eq!(
        status_of(cms.list(&ListParams::default()).await.unwrap_err()).0,
        500
    );
    assert_eq!(
        status_of(cms.list(&ListParams::default()).await.unwrap_err()).0,
        500
    );
    let listed = remote.list().await.unwrap();
    assert_eq!((listed.len(), listed[0].id, listed[0].hits), (1, id, 2));
    assert_eq!(
        server.faults().list(),
        listed,
        "the same faults as the Rust API sees"
    );
    remote.remove(id).await.unwrap();
    cms.list(&ListParams::default()).await.unwrap();
    remote.add(&FaultSpec::fail(403)).await.unwrap();
    assert_eq!(status_of(cms.get("x").await.unwrap_err()).0, 403);
    remote.clear().await.unwrap();
    assert_eq!(status_of(cms.get("x").await.unwrap_err()).0, 404);
    assert!(
        remote.add(&FaultSpec::fail(404)).await.is_err(),
        "unknown codes are refused"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflector_recovers_from_failing_lists_and_watches() {
    let (server, c) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}")))
            .await
            .unwrap();
    }
    let f = server.faults();
    f.add(
        FaultSpec::fail(429)
            .verb("list")
            .resource("configmaps")
            .times(2),
    )
    .unwrap();
    f.add(
        FaultSpec::fail(500)
            .verb("watch")
            .resource("configmaps")
            .times(2),
    )
    .unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(cms.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    let t = Instant::now();
    while !f.list().is_empty() || reader.state().len() != 3 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "faults not all hit: {:?}",
            f.list()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // After failed lists and failed watches, the watch that finally started sees new objects.
    cms.create(&PostParams::default(), &cm("late"))
        .await
        .unwrap();
    while reader.state().len() != 4 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "reflector never saw the new object"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    server.shutdown().await.unwrap();
}

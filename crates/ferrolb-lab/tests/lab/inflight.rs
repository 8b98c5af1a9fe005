//! Requests in flight beyond the server's bounds are refused with 429, as kube-apiserver
//! refuses them; watches and `system:masters` are never refused.

use std::time::Duration;

use ferrolb_lab::apiserver::faults::FaultSpec;
use ferrolb_lab::apiserver::inflight::{Kind, Limits, REFUSAL_BODY};
use ferrolb_lab::apiserver::metrics::DroppedLabels;
use ferrolb_lab::apiserver::ApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, PostParams, WatchParams};
use kube::Client;
use serde_json::json;

use super::support::start_with;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn create_request(name: &str) -> http::Request<Vec<u8>> {
    http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&cm(name)).unwrap())
        .unwrap()
}

#[tokio::test]
async fn beyond_the_bound_requests_get_429_with_retry_after_and_watches_and_masters_never() {
    let (server, admin) = start_with(ApiServer::new().in_flight_limits(Limits {
        read_only: 2,
        mutating: 1,
    }))
    .await;
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "default"}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
    let mut config = server.service_account_config("default", "app").unwrap();
    config.default_retry = false;
    let app = Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(app.clone(), "default");

    // watches hold no seat: more of them than the read-only bound, and reads still pass
    let mut watches = Vec::new();
    for _ in 0..3 {
        watches.push(
            cms.watch(&WatchParams::default(), "0")
                .await
                .unwrap()
                .boxed(),
        );
    }
    cms.list(&ListParams::default()).await.unwrap();

    // one slow create fills the mutating bound
    server
        .faults()
        .add(
            FaultSpec::delay(Duration::from_millis(500))
                .verb("create")
                .resource("configmaps")
                .name("")
                .times(1),
        )
        .unwrap();
    let slow = {
        let cms = cms.clone();
        tokio::spawn(async move { cms.create(&PostParams::default(), &cm("slow")).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refused = app
        .send(create_request("second").map(Into::into))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = refused.into_body().collect_bytes().await.unwrap();
    assert_eq!(body, REFUSAL_BODY.as_bytes(), "kube-apiserver's plain text");
    // kube's client sees an API error with the code
    match cms.create(&PostParams::default(), &cm("third")).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 429),
        other => panic!("expected a 429, got {other:?}"),
    }
    // the read-only bound is separate, and the admin (system:masters) is never refused
    cms.get_opt("slow").await.unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &cm("by-admin"))
        .await
        .unwrap();
    // once the slow create is answered, its seat is free again
    slow.await.unwrap().unwrap();
    cms.create(&PostParams::default(), &cm("after"))
        .await
        .unwrap();

    let dropped = |kind: &str| {
        server
            .metrics()
            .dropped_requests
            .get_or_create(&DroppedLabels {
                request_kind: kind.into(),
            })
            .get()
    };
    assert_eq!((dropped("mutating"), dropped("readOnly")), (2, 0));
    assert_eq!(server.in_flight().peak(Kind::Mutating), 1);
    drop(watches);
    server.shutdown().await.unwrap();
}

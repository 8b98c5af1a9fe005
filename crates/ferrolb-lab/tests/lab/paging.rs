//! Paged lists as a real server serves them: `limit`/`continue` from one consistent snapshot,
//! 410 Expired once that snapshot is out of the retained history, exact reads of past versions,
//! and kube-runtime's watcher (which pages with limit=500 by default) converging through it all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_lab::apiserver::faults::FaultSpec;
use ferrolb_lab::apiserver::metrics::RequestLabels;
use ferrolb_lab::apiserver::{ApiServer, RunningServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

use super::support::start_with as start;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "x"}}, "data": {"v": v}}),
    )
    .unwrap()
}

fn view(items: &[ConfigMap]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|c| (c.name_any(), c.data.as_ref().unwrap()["v"].clone()))
        .collect()
}

#[tokio::test]
async fn later_pages_show_the_first_pages_snapshot() {
    let (server, c) = start(ApiServer::new()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    for i in 0..25 {
        cms.create(&PostParams::default(), &cm(&format!("c{i:02}"), "0"))
            .await
            .unwrap();
    }
    let before = view(&cms.list(&ListParams::default()).await.unwrap().items);
    let first = cms.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.metadata.remaining_item_count, Some(15));
    let rv = first.metadata.resource_version.clone().unwrap();
    // The world changes between pages: an object of a later page is changed, one deleted, one
    // added; none of it shows in the rest of this list.
    cms.patch(
        "c15",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    cms.delete("c20", &DeleteParams::default()).await.unwrap();
    cms.create(&PostParams::default(), &cm("c99", "0"))
        .await
        .unwrap();
    let mut all = first.items.clone();
    let mut token = first.metadata.continue_.clone();
    let mut pages = 1;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = cms
            .list(&ListParams::default().limit(10).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(rv.as_str()),
            "every page is the snapshot"
        );
        all.extend(page.items);
        token = page.metadata.continue_;
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(view(&all), before);
    // A fresh list sees the changes.
    let now = view(
        &cms.list(&ListParams::default().limit(100))
            .await
            .unwrap()
            .items,
    );
    assert_eq!(now["c15"], "1");
    assert!(!now.contains_key("c20") && now.contains_key("c99"));
    // Selectors are applied before the limit; no remaining count is promised with them.
    let sel = cms
        .list(&ListParams::default().labels("app=x").limit(5))
        .await
        .unwrap();
    assert_eq!(sel.items.len(), 5);
    assert!(sel.metadata.continue_.is_some() && sel.metadata.remaining_item_count.is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_continue_is_410_and_a_bad_one_400() {
    let (server, c) = start(ApiServer::new().history_limit(5)).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    for i in 0..6 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), "0"))
            .await
            .unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    // Still within the history: fine.
    cms.list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    for i in 0..6 {
        cms.patch(
            &format!("c{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "1"}})),
        )
        .await
        .unwrap();
    }
    match cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(
                s.message
                    .starts_with("The provided continue parameter is too old"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
    match cms
        .list(&ListParams::default().continue_token("garbage"))
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!(s.code, 400),
        other => panic!("expected 400, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn exact_lists_read_past_versions_from_history() {
    let (server, c) = start(ApiServer::new()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    cms.create(&PostParams::default(), &cm("a", "0"))
        .await
        .unwrap();
    let then = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &cm("b", "0"))
        .await
        .unwrap();
    let old = cms
        .list(
            &ListParams::default()
                .at(&then)
                .matching(VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(
        old.metadata.resource_version.as_deref(),
        Some(then.as_str())
    );
    assert_eq!(
        view(&old.items),
        BTreeMap::from([("a".to_string(), "0".to_string())])
    );
    // A version the server has not reached: 504 (which kube's client would retry; ask once).
    let cms: Api<ConfigMap> = Api::namespaced(
        super::support::client_without_retries(&server).await,
        "default",
    );
    let future = (then.parse::<u64>().unwrap() + 100).to_string();
    match cms
        .list(
            &ListParams::default()
                .at(&future)
                .matching(VersionMatch::Exact),
        )
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (504, "Timeout")),
        other => panic!("expected 504, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn kubectl_style_table_lists_page_too() {
    let (server, c) = start(ApiServer::new()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), "0"))
            .await
            .unwrap();
    }
    let req = http::Request::get("/api/v1/namespaces/default/configmaps?limit=2")
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let t: serde_json::Value = c.request(req).await.unwrap();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["rows"].as_array().unwrap().len(), 2);
    assert!(t["metadata"]["continue"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    server.shutdown().await.unwrap();
}

fn list_answers(server: &RunningServer, code: u16) -> u64 {
    server
        .metrics()
        .requests
        .get_or_create(&RequestLabels {
            verb: "list".into(),
            resource: "/configmaps".into(),
            code: code.to_string(),
        })
        .get()
}

/// kube-runtime's watcher pages (here 7 objects a page), and when churn outruns the history
/// between two pages it gets 410 and relists; its store ends equal to the server's.
#[tokio::test]
async fn watcher_pages_through_churn_and_relists_on_expired_continue() {
    let (server, c) = start(ApiServer::new().history_limit(40)).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for i in 0..60 {
        cms.create(&PostParams::default(), &cm(&format!("c{i:02}"), "0"))
            .await
            .unwrap();
    }
    // Pages answer late, so the writer below outruns the history between pages.
    server
        .faults()
        .add(
            FaultSpec::delay(Duration::from_millis(40))
                .verb("list")
                .resource("configmaps")
                .lasting(Duration::from_secs(3)),
        )
        .unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().page_size(7)),
    )
    .default_backoff()
    .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    let churn = {
        let cms = cms.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let mut n = 0u32;
            while t.elapsed() < Duration::from_secs(3) {
                let name = format!("c{:02}", n % 60);
                cms.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"v": n.to_string()}})),
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        })
    };
    let writes = churn.await.unwrap();
    assert!(writes > 100, "only {writes} writes");
    let want = view(&cms.list(&ListParams::default()).await.unwrap().items);
    let t = Instant::now();
    loop {
        let got: Vec<ConfigMap> = reader
            .state()
            .iter()
            .map(|a: &Arc<ConfigMap>| (**a).clone())
            .collect();
        if view(&got) == want {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "watcher store never matched the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(list_answers(&server, 200) > 9, "the watcher paged");
    assert!(
        list_answers(&server, 410) >= 1,
        "churn outran a continue token at least once"
    );
    task.abort();
    server.shutdown().await.unwrap();
}

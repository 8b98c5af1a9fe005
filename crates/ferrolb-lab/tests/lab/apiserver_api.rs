//! The embedded API server against the real kube-rs client: CRUD, status subresources,
//! preconditions, patches, server-side apply, selectors, discovery, errors and persistence.

use std::collections::BTreeMap;

use ferrolb_lab::apiserver::{ApiServer, RunningServer};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::ResourceExt;
use serde_json::json;

async fn start() -> RunningServer {
    super::support::start().await.0
}

use super::support::client;

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn lb_service(name: &str, labels: &[(&str, &str)]) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }))
    .unwrap()
}

fn pools_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool"),
        "ipaddresspools",
    )
}

#[tokio::test]
async fn core_service_crud() {
    let server = start().await;
    let svcs: Api<Service> = Api::namespaced(client(&server).await, "default");
    let created = svcs
        .create(&PostParams::default(), &lb_service("web", &[]))
        .await
        .unwrap();
    assert_eq!(created.name_any(), "web");
    assert_eq!(created.namespace().as_deref(), Some("default"));
    assert!(created.uid().is_some_and(|u| u.len() == 36));
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    // Defaulting as a real API server: a cluster IP and families the allocator can read.
    let spec = created.spec.clone().unwrap();
    assert!(spec.cluster_ip.is_some());
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));

    let got = svcs.get("web").await.unwrap();
    assert_eq!(got.uid(), created.uid());
    let list = svcs.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rv1);

    let mut changed = got.clone();
    changed.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    let replaced = svcs
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        replaced.spec.unwrap().external_traffic_policy.as_deref(),
        Some("Local")
    );

    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api_error(svcs.get("web").await.unwrap_err()),
        (404, "NotFound".into())
    );
    assert_eq!(
        api_error(
            svcs.delete("web", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .0,
        404
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cluster_scoped_nodes_and_namespaces() {
    let server = start().await;
    let c = client(&server).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}
    }))
    .unwrap();
    let n = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert!(n.namespace().is_none());
    // Nodes keep the status they are registered with (kubelet-style registration).
    assert_eq!(n.status.unwrap().addresses.unwrap()[0].address, "192.0.2.1");
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c);
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn custom_resource_crud_and_crd_registration() {
    let server = start().await;
    let c = client(&server).await;
    // Built-in metallb.io kind.
    let pools: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), "metallb-system", &pools_resource());
    let mut pool = DynamicObject::new("lab", &pools_resource());
    pool.data = json!({"spec": {"addresses": ["192.0.2.10-192.0.2.20"]}});
    let created = pools.create(&PostParams::default(), &pool).await.unwrap();
    assert_eq!(
        created.data["spec"]["addresses"][0],
        "192.0.2.10-192.0.2.20"
    );
    let got = pools.get("lab").await.unwrap();
    assert_eq!(got.types.as_ref().unwrap().kind, "IPAddressPool");
    assert_eq!(
        got.types.as_ref().unwrap().api_version,
        "metallb.io/v1beta1"
    );
    pools.delete("lab", &DeleteParams::default()).await.unwrap();
    assert!(pools.get_opt("lab").await.unwrap().is_none());

    // A CRD created through the API serves its kind; deleting it removes kind and objects.
    let crds: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let mut crd = DynamicObject::new(
        "widgets.example.com",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crd.data = json!({"spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{"name": "v1", "served": true, "storage": true,
                      "subresources": {"status": {}}, "schema": {"openAPIV3Schema": {
                          "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
    }});
    let crd = crds.create(&PostParams::default(), &crd).await.unwrap();
    assert_eq!(crd.data["status"]["conditions"][1]["type"], "Established");
    let wr = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &wr);
    let mut w = DynamicObject::new("w1", &wr);
    w.data = json!({"spec": {"size": 3}});
    widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(widgets.get("w1").await.unwrap_err()).0, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_subresource_is_isolated_from_spec() {
    let server = start().await;
    let svcs: Api<Service> = Api::namespaced(client(&server).await, "default");
    let mut svc = lb_service("web", &[]);
    svc.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.99"}]}}))
            .unwrap(),
    );
    let created = svcs.create(&PostParams::default(), &svc).await.unwrap();
    assert!(
        created
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_none(),
        "status sent on create is dropped for Services"
    );

    // The status endpoint changes status (and metadata), never spec.
    let mut with_status = created.clone();
    with_status.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    with_status.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}))
            .unwrap(),
    );
    with_status
        .annotations_mut()
        .insert("metallb.io/ip-allocated-from-pool".into(), "lab".into());
    let after = svcs
        .replace_status("web", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(
        after
            .status
            .as_ref()
            .unwrap()
            .load_balancer
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.10")
    );
    assert_eq!(
        after
            .spec
            .as_ref()
            .unwrap()
            .external_traffic_policy
            .as_deref(),
        Some("Cluster")
    );
    assert_eq!(
        after.annotations()["metallb.io/ip-allocated-from-pool"],
        "lab"
    );
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );

    // The main resource ignores status.
    let mut main = after.clone();
    main.status = None;
    main.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    let after2 = svcs
        .replace("web", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(
        after2
            .spec
            .as_ref()
            .unwrap()
            .external_traffic_policy
            .as_deref(),
        Some("Local")
    );
    assert!(after2
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .is_some());

    // Status patches (merge and apply) only touch status.
    let after3 = svcs
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"externalTrafficPolicy": "Cluster"},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.11"}]}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        after3
            .spec
            .as_ref()
            .unwrap()
            .external_traffic_policy
            .as_deref(),
        Some("Local")
    );
    assert_eq!(
        after3
            .status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.11")
    );
    let after4 = svcs
        .patch_status(
            "web",
            &PatchParams::apply("ferrolb-controller").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.12"}]}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        after4
            .status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.12")
    );

    // Custom resources: the status endpoint changes status only (labels ignored).
    let c = client(&server).await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metallb.io", "v1beta1", "ServiceL2Status"),
        "servicel2statuses",
    );
    let st: Api<DynamicObject> = Api::namespaced_with(c, "metallb-system", &ar);
    let mut o = DynamicObject::new("l2-web", &ar);
    o.data = json!({"spec": {}, "status": {"node": "ignored-on-create"}});
    let o = st.create(&PostParams::default(), &o).await.unwrap();
    assert!(o.data.get("status").is_none());
    let o = st
        .patch_status(
            "l2-web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"x": "y"}}, "status": {"node": "node-1"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(o.data["status"]["node"], "node-1");
    assert!(o.labels().is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn stale_resource_version_conflicts() {
    let server = start().await;
    let svcs: Api<Service> = Api::namespaced(client(&server).await, "default");
    let v1 = svcs
        .create(&PostParams::default(), &lb_service("web", &[]))
        .await
        .unwrap();
    assert_eq!(
        api_error(
            svcs.create(&PostParams::default(), &lb_service("web", &[]))
                .await
                .unwrap_err()
        ),
        (409, "AlreadyExists".into())
    );
    let mut a = v1.clone();
    a.labels_mut().insert("a".into(), "1".into());
    svcs.replace("web", &PostParams::default(), &a)
        .await
        .unwrap();
    // Second writer still holds v1's resourceVersion.
    let mut b = v1.clone();
    b.labels_mut().insert("b".into(), "1".into());
    assert_eq!(
        api_error(
            svcs.replace("web", &PostParams::default(), &b)
                .await
                .unwrap_err()
        ),
        (409, "Conflict".into())
    );
    // A merge patch carrying a stale resourceVersion is a precondition too.
    let stale =
        json!({"metadata": {"resourceVersion": v1.resource_version(), "labels": {"c": "1"}}});
    assert_eq!(
        api_error(
            svcs.patch("web", &PatchParams::default(), &Patch::Merge(stale))
                .await
                .unwrap_err()
        )
        .0,
        409
    );
    let now = svcs.get("web").await.unwrap();
    assert_eq!(now.labels().len(), 1, "{:?}", now.labels());
    // Delete preconditions.
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: v1.resource_version(),
            uid: None,
        }),
        ..Default::default()
    };
    assert_eq!(api_error(svcs.delete("web", &dp).await.unwrap_err()).0, 409);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn generate_name_gives_unique_names() {
    let server = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "lease-"}})).unwrap();
    let a = cms.create(&PostParams::default(), &cm).await.unwrap();
    let b = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(a.name_any().starts_with("lease-") && a.name_any().len() == "lease-".len() + 5);
    assert_ne!(a.name_any(), b.name_any());
    let none: ConfigMap = serde_json::from_value(json!({"metadata": {}})).unwrap();
    assert_eq!(
        api_error(cms.create(&PostParams::default(), &none).await.unwrap_err()),
        (422, "Invalid".into())
    );
    let upper: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "Bad/Name"}})).unwrap();
    assert_eq!(
        api_error(
            cms.create(&PostParams::default(), &upper)
                .await
                .unwrap_err()
        )
        .0,
        422
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let server = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let p = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.data.unwrap(),
        BTreeMap::from([("b".into(), "2".into()), ("c".into(), "3".into())])
    );
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/b", "value": "20"}
    ]))
    .unwrap();
    let p = cms
        .patch("c", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(p.data.as_ref().unwrap()["b"], "20");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/b", "value": "2"}])).unwrap();
    assert_eq!(
        api_error(
            cms.patch("c", &PatchParams::default(), &Patch::Json::<()>(failing))
                .await
                .unwrap_err()
        )
        .0,
        422
    );
    let p = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"d": "4"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap().len(), 3);
    // A patch that changes nothing keeps the resourceVersion.
    let before = cms.get("c").await.unwrap();
    let same = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"d": "4"}})),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version(), before.resource_version());
    assert_eq!(
        api_error(
            cms.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
                .await
                .unwrap_err()
        )
        .0,
        404
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_side_apply_creates_then_updates() {
    let server = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let pp = PatchParams::apply("ferrolb-test").force();
    let doc = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied", "labels": {"x": "1"}}, "data": {"a": "1"}});
    let created = cms
        .patch("applied", &pp, &Patch::Apply(&doc))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap()["a"], "1");
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("ferrolb-test"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let doc2 = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied"}, "data": {"a": "2", "b": "3"}});
    let updated = cms
        .patch("applied", &pp, &Patch::Apply(&doc2))
        .await
        .unwrap();
    assert_eq!(updated.uid(), created.uid());
    assert_eq!(updated.data.as_ref().unwrap()["a"], "2");
    assert_eq!(updated.data.as_ref().unwrap()["b"], "3");
    assert_eq!(updated.labels()["x"], "1", "apply is a merge here");
    // Applying to the wrong name in the body is rejected.
    let wrong = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}});
    assert_eq!(
        api_error(
            cms.patch("applied2", &pp, &Patch::Apply(&wrong))
                .await
                .unwrap_err()
        )
        .0,
        400
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn label_and_field_selectors() {
    let server = start().await;
    let c = client(&server).await;
    let labels: [(&str, &[(&str, &str)]); 4] = [
        ("a", &[("app", "web"), ("tier", "fe")]),
        ("b", &[("app", "web"), ("tier", "be")]),
        ("c", &[("app", "db")]),
        ("d", &[]),
    ];
    for ns in ["default", "other"] {
        let svcs: Api<Service> = Api::namespaced(c.clone(), ns);
        for (name, l) in &labels {
            svcs.create(&PostParams::default(), &lb_service(name, l))
                .await
                .unwrap();
        }
    }
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let names = |l: &[Service]| -> Vec<String> { l.iter().map(|s| s.name_any()).collect() };
    let sel = |s: &'static str| ListParams::default().labels(s);
    assert_eq!(
        names(&svcs.list(&sel("app=web")).await.unwrap().items),
        ["a", "b"]
    );
    assert_eq!(
        names(&svcs.list(&sel("app!=web")).await.unwrap().items),
        ["c", "d"]
    );
    assert_eq!(
        names(
            &svcs
                .list(&sel("app in (web,db),tier notin (be)"))
                .await
                .unwrap()
                .items
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(&svcs.list(&sel("tier")).await.unwrap().items),
        ["a", "b"]
    );
    assert_eq!(names(&svcs.list(&sel("!app")).await.unwrap().items), ["d"]);
    assert_eq!(
        api_error(svcs.list(&sel("app in (web")).await.unwrap_err()).0,
        400
    );

    let fs = ListParams::default().fields("metadata.name=b");
    assert_eq!(names(&svcs.list(&fs).await.unwrap().items), ["b"]);
    let all: Api<Service> = Api::all(c.clone());
    let everywhere = all
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(everywhere.items.len(), 2);
    let in_other = all
        .list(
            &ListParams::default()
                .fields("metadata.namespace=other")
                .labels("app=db"),
        )
        .await
        .unwrap();
    assert_eq!(names(&in_other.items), ["c"]);
    assert_eq!(in_other.items[0].namespace().as_deref(), Some("other"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn discovery_finds_every_kind() {
    let server = start().await;
    let d = kube::Discovery::new(client(&server).await)
        .run()
        .await
        .expect("discovery runs");
    let mut kinds = Vec::new();
    for g in d.groups() {
        for (ar, caps) in g.recommended_resources() {
            kinds.push((ar.group.clone(), ar.kind.clone(), caps.scope.clone()));
        }
    }
    let has = |g: &str, k: &str| kinds.iter().any(|(gg, kk, _)| gg == g && kk == k);
    for (g, k) in [
        ("", "Service"),
        ("", "Node"),
        ("events.k8s.io", "Event"),
        ("coordination.k8s.io", "Lease"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("metallb.io", "IPAddressPool"),
        ("metallb.io", "L2Advertisement"),
        ("metallb.io", "ServiceL2Status"),
    ] {
        assert!(has(g, k), "{g}/{k} missing from {kinds:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_and_bad_bodies_get_status_objects() {
    let server = start().await;
    let c = client(&server).await;
    for path in [
        "/apis/nope.io/v1/things",
        "/api/v1/namespaces/default/widgets",
        "/random/path",
        "/api/v1/nodes/n/frobnicate",
        "/api/v1/services/x",
    ] {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        let e = c.request::<serde_json::Value>(req).await.unwrap_err();
        assert_eq!(api_error(e), (404, "NotFound".into()), "{path}");
    }
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap();
    assert_eq!(
        api_error(c.request::<serde_json::Value>(req).await.unwrap_err()),
        (400, "BadRequest".into())
    );
    let req = http::Request::patch("/api/v1/namespaces/default/configmaps/x")
        .header("content-type", "text/plain")
        .body(b"{}".to_vec())
        .unwrap();
    assert_eq!(
        api_error(c.request::<serde_json::Value>(req).await.unwrap_err()).0,
        415
    );
    // A kind mismatch between body and path.
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"kind": "Secret", "metadata": {"name": "x"}})).unwrap())
        .unwrap();
    assert_eq!(
        api_error(c.request::<serde_json::Value>(req).await.unwrap_err()).0,
        400
    );
    let req = http::Request::get("/version").body(Vec::new()).unwrap();
    let v: serde_json::Value = c.request(req).await.unwrap();
    assert_eq!(v["major"], "1");
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = c.request_text(req).await.unwrap();
    assert!(
        text.contains(
            r#"ferrolb_apiserver_requests_total{verb="create",resource="/configmaps",code="400"} 2"#
        ),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_survives_restart_with_monotonic_versions() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let server = ApiServer::with_state_file(&state)
        .start_at("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let svcs: Api<Service> = Api::namespaced(client(&server).await, "default");
    let created = svcs
        .create(&PostParams::default(), &lb_service("web", &[]))
        .await
        .unwrap();
    let with_status = svcs
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}})),
        )
        .await
        .unwrap();
    let rv_before: u64 = svcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();
    server.shutdown().await.unwrap();
    assert!(state.exists());

    let server = ApiServer::with_state_file(&state)
        .start_at("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let svcs: Api<Service> = Api::namespaced(client(&server).await, "default");
    let got = svcs.get("web").await.unwrap();
    assert_eq!(got.uid(), created.uid());
    assert_eq!(got.resource_version(), with_status.resource_version());
    assert_eq!(
        got.status
            .clone()
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.10")
    );
    let mut m = got.clone();
    m.labels_mut().insert("after".into(), "restart".into());
    let updated = svcs
        .replace("web", &PostParams::default(), &m)
        .await
        .unwrap();
    let rv_after: u64 = updated.resource_version().unwrap().parse().unwrap();
    assert!(rv_after > rv_before, "{rv_after} > {rv_before}");
    server.shutdown().await.unwrap();

    // In-process restart sharing the store, without a file.
    let first = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&first).await, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "keep"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let store = first.store();
    let first_token = first.admin_token().to_string();
    first.shutdown().await.unwrap();
    let second = ApiServer::new()
        .store(store)
        .admin_token(first_token)
        .start_at("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client(&second).await, "default");
    assert!(cms.get_opt("keep").await.unwrap().is_some());
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn corrupt_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, b"{ not json").unwrap();
    let e = ApiServer::with_state_file(&state)
        .start_at("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("parsing API server state"),
        "{e:#}"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        b"{ not json",
        "nothing is lost"
    );
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let server = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "f", "finalizers": ["ferrolb.io/release"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let terminating = cms.get("f").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    // Deleting again changes nothing.
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        cms.get("f").await.unwrap().resource_version(),
        terminating.resource_version()
    );
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("f").await.unwrap().is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn kubectl_style_table_output() {
    let server = start().await;
    let c = client(&server).await;
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    svcs.create(&PostParams::default(), &lb_service("web", &[]))
        .await
        .unwrap();
    svcs.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}})),
    )
    .await
    .unwrap();
    let req = http::Request::get("/api/v1/namespaces/default/services")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let t: serde_json::Value = c.request(req).await.unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let ext = cols.iter().position(|c| *c == "External-IP").unwrap();
    assert_eq!(t["rows"][0]["cells"][0], "web");
    assert_eq!(t["rows"][0]["cells"][ext], "192.0.2.10");
    assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "default");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ferrolb_crds_and_shipped_examples_apply() {
    use ferrolb_core::crd::{IPAddressPool, L2Advertisement};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let server = start().await;
    let c = client(&server).await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in ferrolb_core::crd::all_crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    // Apply the examples the way `kubectl apply --server-side -f examples/` does.
    for file in [
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/ipaddresspool.yaml"
        ),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/l2advertisement.yaml"
        ),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let obj: DynamicObject = serde::Deserialize::deserialize(doc).unwrap();
            let tm = obj.types.clone().unwrap();
            let (group, version) = tm.api_version.split_once('/').unwrap();
            let plural = format!("{}s", tm.kind.to_ascii_lowercase());
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, &tm.kind),
                &plural,
            );
            let api: Api<DynamicObject> =
                Api::namespaced_with(c.clone(), obj.namespace().as_deref().unwrap(), &ar);
            api.patch(
                &obj.name_any(),
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap();
        }
    }
    let pools: Api<IPAddressPool> = Api::namespaced(c.clone(), "metallb-system");
    let pool = pools.get("default").await.unwrap();
    assert_eq!(pool.spec.addresses, ["192.0.2.100-192.0.2.120"]);
    let l2: Api<L2Advertisement> = Api::namespaced(c, "metallb-system");
    assert_eq!(
        l2.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    server.shutdown().await.unwrap();
}

/// Annotations are bounded as kube-apiserver bounds them: 256 KiB for keys and values
/// together, on every kind; the object one byte under the limit is stored.
#[tokio::test]
async fn annotations_over_256_kib_are_refused() {
    let server = start().await;
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let key = "example.com/big";
    let with = |value_len: usize| -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "big", "annotations": {key: "x".repeat(value_len)}}
        }))
        .unwrap()
    };
    let limit = 256 * 1024;
    let err = cms
        .create(&PostParams::default(), &with(limit - key.len() + 1))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("metadata.annotations: Too long"),
        "{}",
        s.message
    );
    cms.create(&PostParams::default(), &with(limit - key.len()))
        .await
        .unwrap();
    // a patch that grows them past the limit is refused too
    let grow = json!({"metadata": {"annotations": {"example.com/more": "y"}}});
    assert_eq!(
        api_error(
            cms.patch("big", &PatchParams::default(), &Patch::Merge(grow))
                .await
                .unwrap_err()
        ),
        (422, "Invalid".into())
    );
    server.shutdown().await.unwrap();
}

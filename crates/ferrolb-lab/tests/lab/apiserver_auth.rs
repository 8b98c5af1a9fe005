//! Authentication and RBAC of the embedded API server over HTTP: 401 without a valid token,
//! TokenRequest, the exact 403 Status of kube-apiserver, the permissions of
//! `deploy/ferrolb.yaml` as a ServiceAccount sees them, impersonation and access reviews, the
//! request record, and tokens across a restart. With `kubectl` present, `kubectl auth can-i
//! --as=…`, `kubectl create token` and `kubectl auth whoami` answer.

use std::process::Command;

use ferrolb_lab::apiserver::{ApiServer, RunningServer};
use ferrolb_lab::harness::{apply_objects, rbac_documents, DEPLOY_MANIFEST};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "metallb-system";
const SPEAKER: &str = "system:serviceaccount:metallb-system:ferrolb-speaker";

async fn start(b: ApiServer) -> RunningServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    b.start_at("127.0.0.1:0".parse().unwrap())
        .await
        .expect("server starts")
}

fn admin(server: &RunningServer) -> Client {
    Client::try_from(server.admin_config()).unwrap()
}

fn as_token(server: &RunningServer, token: &str) -> Client {
    let mut c = kube::Config::new(server.url().parse().unwrap());
    c.auth_info.token = Some(token.to_string().into());
    Client::try_from(c).unwrap()
}

/// One HTTP/1.0 request; (status code, JSON body).
async fn raw(
    server: &RunningServer,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("{method} {path} HTTP/1.0\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Applies the RBAC objects of `deploy/ferrolb.yaml` and the namespace they live in.
async fn apply_deploy_rbac(c: &Client) {
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    let _ = Api::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await;
    apply_objects(c, rbac_documents(DEPLOY_MANIFEST).unwrap())
        .await
        .unwrap();
}

async fn token_for(c: &Client, sa: &str) -> String {
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(c.clone(), NS)
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap()
}

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn no_or_bad_token_is_401_except_for_public_endpoints() {
    let server = start(ApiServer::new()).await;
    let (c, body) = raw(&server, "GET", "/api/v1/services", None).await;
    assert_eq!(c, 401);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    assert_eq!(raw(&server, "GET", "/api", Some("wrong")).await.0, 401);
    assert_eq!(raw(&server, "GET", "/version", None).await.0, 200);
    assert_eq!(raw(&server, "GET", "/healthz", None).await.0, 200);
    // The kube client without credentials gets the same.
    let anon = Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let e = Api::<Service>::all(anon)
        .list(&Default::default())
        .await
        .unwrap_err();
    assert_eq!(code(e), 401);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn deploy_permissions_hold_for_the_speakers_service_account() {
    let server = start(ApiServer::new()).await;
    let c = admin(&server);
    apply_deploy_rbac(&c).await;
    let token = token_for(&c, "ferrolb-speaker").await;
    let speaker = as_token(&server, &token);

    // Allowed: the cluster-wide reads of its ClusterRole; its Role in its namespace.
    Api::<Service>::all(speaker.clone())
        .list(&Default::default())
        .await
        .unwrap();
    // The heartbeat key: get by name is allowed (404 while absent, not 403) …
    let secrets = Api::<Secret>::namespaced(speaker.clone(), NS);
    assert!(secrets
        .get_opt("ferrolb-heartbeat-key")
        .await
        .unwrap()
        .is_none());
    // … any other Secret, listing Secrets, and the key elsewhere are not.
    assert_eq!(code(secrets.get("other").await.unwrap_err()), 403);
    assert_eq!(
        code(secrets.list(&Default::default()).await.unwrap_err()),
        403
    );
    let e = Api::<Secret>::namespaced(speaker.clone(), "default")
        .get("ferrolb-heartbeat-key")
        .await
        .unwrap_err();
    assert_eq!(code(e), 403);
    // The speaker never writes Services.
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "x"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}))
    .unwrap();
    let e = Api::<Service>::namespaced(speaker.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap_err();
    assert_eq!(code(e), 403);

    // The Status body, exactly as kube-apiserver writes it.
    Api::<Service>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let (status, body) = raw(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/services/x/status",
        Some(&token),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("services \"x\" is forbidden: User \"{SPEAKER}\" cannot patch resource \"services/status\" in API group \"\" in the namespace \"default\""),
               "reason": "Forbidden", "details": {"name": "x", "kind": "services"}, "code": 403})
    );
    // The controller may create the key, and both may then read it.
    let ctl = as_token(&server, &token_for(&c, "ferrolb-controller").await);
    let key: Secret = serde_json::from_value(json!({"metadata": {"name": "ferrolb-heartbeat-key"},
        "data": {"key": "AAECAwQFBgcICQoLDA0ODw=="}}))
    .unwrap();
    Api::<Secret>::namespaced(ctl.clone(), NS)
        .create(&PostParams::default(), &key)
        .await
        .unwrap();
    assert!(secrets
        .get_opt("ferrolb-heartbeat-key")
        .await
        .unwrap()
        .is_some());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cluster_scope_denial_message_for_a_list_across_namespaces() {
    let server = start(ApiServer::new()).await;
    let c = admin(&server);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "ferrolb-speaker"}})).unwrap();
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), NS)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    // No binding at all: denied, with the message of the example in kube-apiserver's shape.
    let token = server.service_account_token(NS, "ferrolb-speaker").unwrap();
    let (status, body) = raw(&server, "GET", "/api/v1/services", Some(&token)).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        format!("services is forbidden: User \"{SPEAKER}\" cannot list resource \"services\" in API group \"\" at the cluster scope")
    );
    assert_eq!(body["details"], json!({"kind": "services"}));
    // A ClusterRole bound by a RoleBinding grants in that namespace only.
    let ar = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "rbac.authorization.k8s.io",
            "v1",
            kind,
        ))
    };
    let cr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "svc-reader"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}]}))
    .unwrap();
    Api::all_with(c.clone(), &ar("ClusterRole"))
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    let rb: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "svc-reader", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "svc-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "ferrolb-speaker", "namespace": NS}]}))
    .unwrap();
    Api::namespaced_with(c.clone(), "default", &ar("RoleBinding"))
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    let sa_client = as_token(&server, &token);
    Api::<Service>::namespaced(sa_client.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap();
    let e = Api::<Service>::namespaced(sa_client.clone(), "kube-system")
        .list(&Default::default())
        .await
        .unwrap_err();
    assert_eq!(code(e), 403);
    assert_eq!(
        raw(&server, "GET", "/api/v1/services", Some(&token))
            .await
            .0,
        403
    );
    // Deleting the ServiceAccount invalidates its tokens.
    Api::<ServiceAccount>::namespaced(c.clone(), NS)
        .delete("ferrolb-speaker", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(raw(&server, "GET", "/apis", Some(&token)).await.0, 401);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn impersonated_access_reviews_and_the_request_record() {
    let server = start(ApiServer::new().record_requests(true)).await;
    let c = admin(&server);
    apply_deploy_rbac(&c).await;
    let mut cfg = server.admin_config();
    cfg.auth_info.impersonate = Some(SPEAKER.into());
    let as_speaker = Client::try_from(cfg).unwrap();
    let review = |verb: &str, resource: &str, name: Option<&str>, ns: Option<&str>| {
        SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some(resource.into()),
                    name: name.map(Into::into),
                    namespace: ns.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(as_speaker.clone());
    let ask = async |verb: &str, resource: &str, name: Option<&str>, ns: Option<&str>| {
        api.create(&PostParams::default(), &review(verb, resource, name, ns))
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    };
    assert!(ask("list", "services", None, None).await);
    assert!(!ask("patch", "services", Some("x"), Some("default")).await);
    assert!(ask("get", "secrets", Some("ferrolb-heartbeat-key"), Some(NS)).await);
    assert!(!ask("get", "secrets", Some("other"), Some(NS)).await);

    // Every request is on record, with the impersonated user and the object's coordinates.
    let _ = Api::<Secret>::namespaced(as_speaker, NS)
        .get("nope")
        .await
        .unwrap_err();
    let events = server.audit_events();
    let denied = events
        .iter()
        .find(|e| e.effective_user() == SPEAKER && e.verb == "get" && e.response_status.code == 403)
        .expect("the denied get is recorded");
    let o = denied.object_ref.as_ref().unwrap();
    assert_eq!(
        (
            o.resource.as_str(),
            o.namespace.as_str(),
            o.name.as_str(),
            o.api_group.as_str()
        ),
        ("secrets", NS, "nope", "")
    );
    assert_eq!(denied.user.username, "kubernetes-admin");
    assert!(events.iter().any(|e| e.verb == "create"
        && e.object_ref
            .as_ref()
            .is_some_and(|o| o.resource == "selfsubjectaccessreviews")
        && e.response_status.code == 201));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn service_account_tokens_survive_a_restart_with_the_same_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let pki = dir.path().join("pki");
    let first = start(ApiServer::with_state_file(&state).pki_dir(&pki)).await;
    let admin_token = std::fs::read_to_string(pki.join("admin-token")).unwrap();
    assert_eq!(first.admin_token(), admin_token);
    let c = admin(&first);
    apply_deploy_rbac(&c).await;
    let token = token_for(&c, "ferrolb-speaker").await;
    first.shutdown().await.unwrap();
    let second = start(ApiServer::with_state_file(&state).pki_dir(&pki)).await;
    Api::<Service>::all(as_token(&second, &token))
        .list(&Default::default())
        .await
        .unwrap();
    second.shutdown().await.unwrap();
    // Another admin token means another signing key: the old tokens are refused.
    let third = start(ApiServer::with_state_file(&state)).await;
    assert_eq!(raw(&third, "GET", "/apis", Some(&token)).await.0, 401);
    third.shutdown().await.unwrap();
}

/// `kubectl` if present; a missing one skips locally and fails under `CI=true`.
fn kubectl_or_skip(test: &str) -> bool {
    let ok = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = format!("{test}: `kubectl` is not available");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg}; CI=true, so this is a failure"
        );
        eprintln!("SKIPPED {msg}");
    }
    ok
}

/// Runs kubectl with its own kubeconfig and discovery cache.
fn kubectl_at(
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
    args: &[String],
) -> std::process::Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .unwrap()
}

/// A typo in a pool is refused by `kubectl apply` itself, the error naming the entry's field
/// and saying what is wrong, and the pool keeps its last applied addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_refuses_a_typo_in_a_pool_naming_the_field() {
    if !kubectl_or_skip("kubectl_apply_refuses_a_typo_in_a_pool_naming_the_field") {
        return;
    }
    let server = start(ApiServer::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    let crds = dir.path().join("crds.yaml");
    std::fs::write(&crds, ferrolb_core::crd::all_crds_yaml().unwrap()).unwrap();
    let kubectl = |args: Vec<String>| {
        let kc = kc.clone();
        let cache = dir.path().join("cache");
        async move {
            tokio::task::spawn_blocking(move || {
                let o = kubectl_at(&kc, &cache, &args);
                (
                    o.status.success(),
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    ),
                )
            })
            .await
            .unwrap()
        }
    };
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let pool = |addresses: &str| {
        let path = dir.path().join("pool.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
                 metadata: {{name: default, namespace: {NS}}}\nspec:\n  addresses: {addresses}\n"
            ),
        )
        .unwrap();
        vec!["apply".into(), "-f".into(), path.display().to_string()]
    };
    let (ok, out) = kubectl(vec![
        "apply".into(),
        "-f".into(),
        crds.display().to_string(),
    ])
    .await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(words(&format!("create namespace {NS}"))).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(pool("[192.0.2.0/24]")).await;
    assert!(ok, "{out}");
    for (typo, field, what) in [
        (
            "[192.0.2.0/24, 10.0.0.1/33]",
            "spec.addresses[1]",
            "prefix length 33 is longer than 32, the maximum for IPv4",
        ),
        (
            "[192.0.2.0/24, 192.0.2.300/32]",
            "spec.addresses[1]",
            r#""192.0.2.300" is not an IP address"#,
        ),
        (
            "[192.0.2.20-192.0.2.10]",
            "spec.addresses[0]",
            r#"start IP "192.0.2.20" is after the end IP "192.0.2.10""#,
        ),
        (
            "[192.0.2.0]",
            "spec.addresses[0]",
            "(write a single address as 192.0.2.0/32)",
        ),
    ] {
        let (ok, out) = kubectl(pool(typo)).await;
        assert!(!ok, "{typo} applied: {out}");
        assert!(
            out.contains(r#"The IPAddressPool "default" is invalid"#)
                && out.contains(&format!("{field}: Invalid value"))
                && out.contains(what),
            "{typo}: {out}"
        );
    }
    let (ok, out) = kubectl(words(&format!(
        "get ipaddresspool default -n {NS} -o jsonpath={{.spec.addresses}}"
    )))
    .await;
    assert!(ok && out.trim() == r#"["192.0.2.0/24"]"#, "{out}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_create_token_and_whoami() {
    if !kubectl_or_skip("kubectl_auth_can_i_create_token_and_whoami") {
        return;
    }
    let server = start(ApiServer::new()).await;
    apply_deploy_rbac(&admin(&server)).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    let kubectl = |args: Vec<String>| {
        let kc = kc.clone();
        let cache = dir.path().join("cache");
        async move {
            tokio::task::spawn_blocking(move || {
                let o = kubectl_at(&kc, &cache, &args);
                (
                    o.status.code(),
                    String::from_utf8_lossy(&o.stdout).trim().to_string(),
                    String::from_utf8_lossy(&o.stderr).to_string(),
                )
            })
            .await
            .unwrap()
        }
    };
    let can_i = |rest: &[&str]| {
        let mut a: Vec<String> = vec!["auth".into(), "can-i".into(), format!("--as={SPEAKER}")];
        a.extend(rest.iter().map(|s| s.to_string()));
        kubectl(a)
    };
    let (rc, out, err) = can_i(&["list", "services", "--all-namespaces"]).await;
    assert_eq!((rc, out.as_str()), (Some(0), "yes"), "{err}");
    let (rc, out, _) = can_i(&["patch", "services/status", "-n", "default"]).await;
    assert_eq!((rc, out.as_str()), (Some(1), "no"));
    let (rc, out, err) = can_i(&["get", "secret/ferrolb-heartbeat-key", "-n", NS]).await;
    assert_eq!((rc, out.as_str()), (Some(0), "yes"), "{err}");
    let (_, out, _) = can_i(&["list", "secrets", "-n", NS]).await;
    assert_eq!(out, "no");
    let (_, out, _) = can_i(&["create", "leases.coordination.k8s.io", "-n", NS]).await;
    assert_eq!(out, "yes");

    // A ServiceAccount token from kubectl, and who it is.
    let (rc, token, err) = kubectl(
        ["create", "token", "ferrolb-controller", "-n", NS]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
    .await;
    assert_eq!(rc, Some(0), "{err}");
    let (rc, out, err) = kubectl(
        [
            "auth",
            "whoami",
            "--token",
            &token,
            "-o",
            "jsonpath={.status.userInfo.username}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert_eq!(rc, Some(0), "{err}");
    assert_eq!(
        out,
        "system:serviceaccount:metallb-system:ferrolb-controller"
    );
    server.shutdown().await.unwrap();
}

/// What a newcomer types first, with kubectl's client-side validation on: the CRDs and the
/// examples apply, a namespace is created (kubectl sends it as protobuf), and get, describe and
/// events answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomers_kubectl_session() {
    if !kubectl_or_skip("a_newcomers_kubectl_session") {
        return;
    }
    let server = start(ApiServer::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    let crds = dir.path().join("crds.yaml");
    std::fs::write(&crds, ferrolb_core::crd::all_crds_yaml().unwrap()).unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let run = |args: Vec<String>| {
        let kc = kc.clone();
        let cache = dir.path().join("cache");
        async move {
            tokio::task::spawn_blocking(move || {
                let o = kubectl_at(&kc, &cache, &args);
                let out = String::from_utf8_lossy(&o.stdout).to_string();
                let err = String::from_utf8_lossy(&o.stderr).to_string();
                assert!(o.status.success(), "kubectl {args:?}: {out}{err}");
                out
            })
            .await
            .unwrap()
        }
    };
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    run(vec![
        "apply".into(),
        "-f".into(),
        crds.display().to_string(),
    ])
    .await;
    let out = run(words(&format!("create namespace {NS}"))).await;
    assert!(out.contains(&format!("namespace/{NS} created")), "{out}");
    let out = run(vec!["apply".into(), "-f".into(), examples.into()]).await;
    assert!(out.contains("ipaddresspool.metallb.io/"), "{out}");
    let out = run(words("get svc -A")).await;
    assert!(out.contains("LoadBalancer"), "{out}");
    let out = run(words(&format!("describe ipaddresspool -n {NS}"))).await;
    assert!(out.contains("Kind:         IPAddressPool"), "{out}");
    run(words("get events -A")).await;
    server.shutdown().await.unwrap();
}

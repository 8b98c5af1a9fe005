//! The HTTP shell: path routing, query parameters, verbs, JSON responses.
//!
//! One catch-all axum handler parses Kubernetes REST paths itself, so any path it does not know
//! becomes a Kubernetes `Status` 404 and nothing can panic on odd input.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::auth::Auth;
use super::authz::MASTERS;
use super::error::ApiError;
use super::faults::{self, Effect, Faults, RequestAttrs};
use super::inflight::{self, InFlight};
use super::metrics::{DroppedLabels, Metrics, RequestLabels};
use super::paging;
use super::patch::PatchKind;
use super::query::{parse_label_selector, FieldSelector};
use super::resources::{
    api_group, api_group_list, api_resource_list, openapi_v3_doc, openapi_v3_index, ResourceDef,
};
use super::store::{Filter, Store, Sub, WriteOptions};
use super::table::{table, wants_table};
use super::validation::FieldValidation;
use super::watch::{self as watchmod, as_version, WatchRequest};

/// Default watch timeout when the client sends no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Largest accepted request body.
const MAX_BODY: usize = 16 << 20;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct App {
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Registry holding `metrics`, served at `/metrics`.
    pub registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    /// The object store.
    pub store: Arc<Store>,
    /// Flips to `true` on shutdown; open watches end.
    pub shutdown: watch::Receiver<bool>,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Authentication, authorization and request recording.
    pub auth: Arc<Auth>,
    /// Faults injected by tests.
    pub faults: Arc<Faults>,
    /// Requests in flight, against their bounds.
    pub in_flight: Arc<InFlight>,
}

/// The axum router serving the whole API.
pub fn router(app: App) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.code, &e.status());
    if let Some(s) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(s));
    }
    resp
}

/// The parsed resource part of a path.
struct Target {
    def: ResourceDef,
    /// Namespace from the path (`None` for cluster-scoped paths).
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

type Query = HashMap<String, String>;

/// What a request turned out to be, for metrics and logs.
#[derive(Default)]
struct ReqInfo {
    verb: &'static str,
    resource: String,
    /// The authenticated user, once authentication has set it (faults match on it).
    user: Option<String>,
}

async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: Query = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut info = ReqInfo {
        verb: "other",
        resource: String::new(),
        user: None,
    };
    // Authenticate and authorize first, as kube-apiserver's filters do; the endpoints of
    // authentication and authorization themselves are served by `auth`. Faults injected by tests
    // apply to admitted requests, matched on the user who sent them.
    let adm = app
        .auth
        .admit(&app.store, method.as_str(), uri.path(), &query, &headers);
    info.user = Some(adm.acting().name.clone());
    // The in-flight bound applies once the request is authenticated (an unauthenticated one
    // gets its 401 first) and before it is authorized, as in kube-apiserver's filter chain.
    let kind = match &adm.denied {
        Some(e) if e.code == 401 => None,
        _ => inflight::classify(&adm.attrs, adm.acting().groups.iter().any(|g| g == MASTERS)),
    };
    let seat = kind.map(|k| (k, app.in_flight.try_acquire(k)));
    let resp = match (&adm.denied, &seat) {
        (_, Some((k, None))) => {
            app.metrics
                .dropped_requests
                .get_or_create(&DroppedLabels {
                    request_kind: k.label().into(),
                })
                .inc();
            tracing::info!(path = %uri.path(), verb = %adm.attrs.verb, request_kind = k.label(), "too many requests in flight");
            inflight::refusal()
        }
        (Some(e), _) => error_response(e),
        (None, _) => match app.auth.serve(&app.store, &adm, &content_type, &body) {
            Some(r) => r.map_or_else(|e| error_response(&e), |(c, v)| json_response(c, &v)),
            None => {
                let attrs = if app.faults.is_empty() {
                    None
                } else {
                    request_attrs(&app, &method, uri.path(), &query, info.user.clone())
                };
                let effect = attrs.as_ref().and_then(|a| app.faults.decide(a));
                if let Some(Effect::Delay { millis }) = effect {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                }
                let failure = effect
                    .as_ref()
                    .zip(attrs.as_ref())
                    .and_then(|(e, a)| faults::error_for(e, a));
                match failure {
                    Some(e) => {
                        if let Some(a) = &attrs {
                            info.verb = a.verb;
                            info.resource = format!("{}/{}", a.group, a.resource);
                        }
                        tracing::info!(path = %uri.path(), code = e.code, "injected fault");
                        error_response(&e)
                    }
                    None => {
                        match route(&app, &method, uri.path(), &query, &headers, body, &mut info) {
                            Ok(r) => r,
                            Err(e) => error_response(&e),
                        }
                    }
                }
            }
        },
    };
    drop(seat);
    let code = resp.status().as_u16();
    app.auth.record(&adm, &uri.to_string(), code);
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: info.verb.to_string(),
            resource: info.resource.clone(),
            code: code.to_string(),
        })
        .inc();
    tracing::debug!(%method, path = %uri.path(), query = uri.query().unwrap_or(""), content_type, verb = info.verb, status = code, "request");
    resp
}

fn route(
    app: &App,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
    info: &mut ReqInfo,
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if matches!(
        segs.as_slice(),
        [] | ["version"] | ["api", ..] | ["apis", ..] | ["openapi", ..]
    ) {
        info.verb = "discovery";
    }
    let get_only = |v: Value| -> Result<Response, ApiError> {
        if method == Method::GET {
            Ok(json_response(200, &v))
        } else {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource: {method}"
            )))
        }
    };
    match segs.as_slice() {
        [] => get_only(json!({"paths": ["/api", "/api/v1", "/apis", "/version", "/healthz"]})),
        ["version"] => get_only(json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-ferrolb-lab",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "n/a", "compiler": "rustc", "platform": "linux/amd64"
        })),
        ["metrics"] => {
            app.metrics
                .resource_version
                .set(app.store.resource_version());
            app.metrics.watches.set(app.store.active_watches() as i64);
            let mut body = String::new();
            {
                let reg = app.registry.lock().unwrap_or_else(|p| p.into_inner());
                prometheus_client::encoding::text::encode(&mut body, &reg)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            Ok(Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Body::from(body))
                .unwrap_or_else(|_| Response::new(Body::empty())))
        }
        ["ferrolb-lab", "faults", rest @ ..] => {
            let (code, v) = app.faults.admin(method.as_str(), rest, &body)?;
            Ok(json_response(code, &v))
        }
        ["healthz"] | ["livez"] | ["readyz"] => Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("ok"))
            .unwrap_or_else(|_| Response::new(Body::empty()))),
        // A minimal OpenAPI v3: enough for kubectl to see that the server validates fields
        // itself (`fieldValidation`), so `kubectl apply` works without `--validate=false`.
        ["openapi", "v3"] => get_only(openapi_v3_index(&app.store.registry())),
        ["openapi", "v3", "api", "v1"] => get_only(openapi_v3_doc(&app.store.registry(), "", "v1")),
        ["openapi", "v3", "apis", group, version] => {
            let reg = app.store.registry();
            if reg.has_group_version(group, version) {
                get_only(openapi_v3_doc(&reg, group, version))
            } else {
                Err(ApiError::no_route())
            }
        }
        ["api"] => get_only(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
        })),
        ["api", "v1"] => get_only(api_resource_list(&app.store.registry(), "", "v1")),
        ["api", "v1", rest @ ..] => resource(app, method, "", "v1", rest, q, headers, body, info),
        ["apis"] => get_only(api_group_list(&app.store.registry())),
        ["apis", group] => {
            let reg = app.store.registry();
            match reg.groups().into_iter().find(|(g, _)| g == group) {
                Some((g, vs)) => get_only(api_group(&g, &vs)),
                None => Err(ApiError::no_route()),
            }
        }
        ["apis", group, version] => {
            let reg = app.store.registry();
            if reg.has_group_version(group, version) {
                get_only(api_resource_list(&reg, group, version))
            } else {
                Err(ApiError::no_route())
            }
        }
        ["apis", group, version, rest @ ..] => {
            resource(app, method, group, version, rest, q, headers, body, info)
        }
        _ => Err(ApiError::no_route()),
    }
}

fn parse_target(app: &App, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let def = app
        .store
        .registry_find(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    if namespace.is_some() && !def.namespaced {
        return Err(ApiError::no_route());
    }
    if namespace.is_none() && def.namespaced && name.is_some() {
        return Err(ApiError::no_route());
    }
    let status = match sub {
        None => false,
        Some("status") if def.status.has_subresource() => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    Ok(Target {
        def,
        namespace,
        name,
        status,
    })
}

/// The Kubernetes verb of a request to a resource path.
fn verb_of(method: &Method, named: bool, q: &Query) -> &'static str {
    match (method.clone(), named) {
        (Method::GET, true) => "get",
        (Method::GET, false) if flag(q, "watch") => "watch",
        (Method::GET, false) => "list",
        (Method::POST, _) => "create",
        (Method::PUT, _) => "update",
        (Method::PATCH, _) => "patch",
        (Method::DELETE, true) => "delete",
        (Method::DELETE, false) => "deletecollection",
        _ => "other",
    }
}

/// What faults match a request on; `None` for paths that are not resources.
fn request_attrs(
    app: &App,
    method: &Method,
    path: &str,
    q: &Query,
    user: Option<String>,
) -> Option<RequestAttrs> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let t = parse_target(app, group, version, rest).ok()?;
    Some(RequestAttrs {
        user,
        verb: verb_of(method, t.name.is_some(), q),
        group: t.def.group.clone(),
        resource: t.def.plural.clone(),
        kind: t.def.kind.clone(),
        subresource: if t.status {
            "status".into()
        } else {
            String::new()
        },
        namespace: t.namespace.clone().unwrap_or_default(),
        name: t.name.clone().unwrap_or_default(),
    })
}

fn flag(q: &Query, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

fn filter(t: &Target, q: &Query) -> Result<Filter, ApiError> {
    let labels = match q.get("labelSelector") {
        Some(s) => parse_label_selector(s)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        None => Default::default(),
    };
    let fields = match q.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s).map_err(ApiError::bad_request)?,
        None => Default::default(),
    };
    Ok(Filter {
        namespace: t.namespace.clone(),
        labels,
        fields,
    })
}

fn write_options(q: &Query) -> WriteOptions {
    WriteOptions {
        field_manager: q.get("fieldManager").filter(|s| !s.is_empty()).cloned(),
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        force: flag(q, "force"),
        field_validation: q
            .get("fieldValidation")
            .and_then(|v| FieldValidation::parse(v))
            .unwrap_or_default(),
        warnings: Default::default(),
    }
}

/// Adds one `Warning: 299 - "…"` header per warning.
fn with_warnings(mut resp: Response, warnings: Vec<String>) -> Response {
    for w in warnings {
        let v = format!("299 - {}", serde_json::to_string(&w).unwrap_or_default());
        if let Ok(v) = header::HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(json_err) => serde_norway::from_slice(body).map_err(|_| {
            ApiError::bad_request(format!("the request body is not valid JSON: {json_err}"))
        })?,
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
fn resource(
    app: &App,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
    info: &mut ReqInfo,
) -> Result<Response, ApiError> {
    info.verb = "other";
    let t = parse_target(app, group, version, rest)?;
    info.resource = t.def.storage_key();
    info.verb = verb_of(method, t.name.is_some(), q);
    let store = &app.store;
    let def = &t.def;
    let ns = t.namespace.as_deref().unwrap_or("");
    let sub = if t.status { Sub::Status } else { Sub::Main };
    let out = |code: u16, v: &Value| json_response(code, &as_version(def, v));
    let as_table = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(wants_table);
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut body = body;
    if (ct.contains("protobuf") || ct.contains("cbor"))
        && matches!(*method, Method::POST | Method::PUT | Method::PATCH)
    {
        // kubectl sends some creates only as protobuf (`kubectl create namespace`): the kinds
        // `proto` knows are decoded; any other body is 415 (clients then retry with JSON).
        let decoded = (ct.contains("protobuf") && *method == Method::POST)
            .then(|| super::proto::decode_body(&body))
            .flatten();
        match decoded {
            Some(v) => body = Bytes::from(v.to_string()),
            None => return Err(ApiError::unsupported_media_type(ct)),
        }
    }
    let opts = write_options(q);
    let resp = match (method.clone(), &t.name) {
        (Method::GET, Some(name)) => {
            let obj = store.get(def, ns, name)?;
            if as_table {
                Ok(json_response(200, &table(def, [&*obj], None, true)))
            } else {
                Ok(out(200, &obj))
            }
        }
        (Method::GET, None) if flag(q, "watch") => watch(app, &t, q, as_table),
        (Method::GET, None) => list(store, &t, q, as_table),
        (Method::POST, None) => {
            if def.namespaced && t.namespace.is_none() {
                return Err(ApiError::method_not_allowed(
                    "create needs a namespace in the path",
                ));
            }
            let obj = parse_body(&body)?;
            Ok(out(201, &store.create(def, ns, obj, &opts)?))
        }
        (Method::PUT, Some(name)) => {
            let obj = parse_body(&body)?;
            Ok(out(200, &store.update(def, ns, name, obj, sub, &opts)?))
        }
        (Method::PATCH, Some(name)) => {
            let kind = PatchKind::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let (obj, created) = store.patch(def, ns, name, kind, &body, sub, &opts)?;
            Ok(out(if created { 201 } else { 200 }, &obj))
        }
        (Method::DELETE, Some(name)) => {
            let opts = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                parse_body(&body)?
            };
            let dry_run = flag(q, "dryRun")
                || q.get("dryRun").is_some_and(|v| v == "All")
                || opts["dryRun"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == "All"));
            let pre = opts.get("preconditions");
            Ok(out(200, &store.delete(def, ns, name, pre, dry_run)?))
        }
        (Method::DELETE, None) => {
            let f = filter(&t, q)?;
            let items: Vec<Value> = store
                .delete_collection(def, &f, q.get("dryRun").is_some_and(|v| v == "All"))
                .iter()
                .map(|o| as_version(def, o))
                .collect();
            Ok(json_response(
                200,
                &json!({
                    "kind": def.list_kind(), "apiVersion": def.api_version(),
                    "metadata": {"resourceVersion": store.resource_version().to_string()},
                    "items": items,
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {method}"
        ))),
    };
    resp.map(|r| with_warnings(r, opts.warnings.take()))
}

fn parse_rv_param(q: &Query) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
    }
}

fn list(store: &Store, t: &Target, q: &Query, as_table: bool) -> Result<Response, ApiError> {
    let f = filter(t, q)?;
    let want = parse_rv_param(q)?;
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {s:?}")))?,
        ),
    }
    .filter(|l| *l > 0)
    .map(|l| l as usize);
    let token = q.get("continue").filter(|s| !s.is_empty());
    // A continued list reads the first page's snapshot; `resourceVersionMatch=Exact` reads the
    // asked version; anything else reads the current state.
    let (at, after) = match token {
        Some(tok) => {
            if q.get("resourceVersion").is_some_and(|s| !s.is_empty()) {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let c = paging::decode(tok, t.def.namespaced)?;
            (Some(c.rv), Some(c.after))
        }
        None => match (want, q.get("resourceVersionMatch").map(String::as_str)) {
            (Some(w), Some("Exact")) => {
                let current = store.resource_version();
                if w > current {
                    return Err(ApiError::too_large_resource_version(w, current));
                }
                (Some(w), None)
            }
            _ => (None, None),
        },
    };
    let (objects, rv) = store.list_at(&t.def, at).map_err(|e| match token {
        Some(_) if e.code == 410 => ApiError::expired_continue(),
        _ => e,
    })?;
    let page = paging::page(&objects, rv, after.as_ref(), limit, |o| f.matches(o));
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = &page.next {
        meta["continue"] = json!(next);
        let selected = ["labelSelector", "fieldSelector"]
            .iter()
            .any(|k| q.get(*k).is_some_and(|s| !s.is_empty()));
        if !selected {
            meta["remainingItemCount"] = json!(page.remaining);
        }
    }
    if as_table {
        let mut tbl = table(&t.def, page.items.iter().map(|o| &**o), Some(rv), true);
        tbl["metadata"] = meta;
        return Ok(json_response(200, &tbl));
    }
    let items: Vec<Value> = page.items.iter().map(|o| as_version(&t.def, o)).collect();
    Ok(json_response(
        200,
        &json!({
            "kind": t.def.list_kind(),
            "apiVersion": t.def.api_version(),
            "metadata": meta,
            "items": items,
        }),
    ))
}

fn watch(app: &App, t: &Target, q: &Query, as_table: bool) -> Result<Response, ApiError> {
    let filter = filter(t, q)?;
    let from = parse_rv_param(q)?.filter(|rv| *rv != 0);
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let req = WatchRequest {
        def: t.def.clone(),
        filter,
        from,
        send_initial_events: flag(q, "sendInitialEvents"),
        bookmarks: flag(q, "allowWatchBookmarks"),
        timeout,
        bookmark_interval: app.bookmark_interval,
        table: as_table,
    };
    let s = watchmod::stream(
        app.store.clone(),
        req,
        app.shutdown.clone(),
        app.metrics.clone(),
    );
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(s))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn app() -> App {
        let metrics = Arc::new(Metrics::default());
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        App {
            metrics,
            registry: Arc::new(std::sync::Mutex::new(registry)),
            store: Arc::new(Store::new(100)),
            shutdown: watch::channel(false).1,
            bookmark_interval: Duration::from_secs(10),
            auth: Arc::new(Auth::new(
                super::super::auth::Tokens::new("t"),
                super::super::audit::Audit::off(),
            )),
            faults: Default::default(),
            in_flight: Default::default(),
        }
    }

    const SEGMENTS: &[&str] = &[
        "api",
        "apis",
        "v1",
        "v1beta1",
        "namespaces",
        "default",
        "services",
        "status",
        "finalize",
        "metallb.io",
        "ipaddresspools",
        "nodes",
        "x",
        "",
        "..",
        "%2F",
        "openapi",
        "v3",
        "version",
        "metrics",
        "events.k8s.io",
        "events",
    ];

    fn methods() -> impl Strategy<Value = Method> {
        prop::sample::select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ])
    }

    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..48),
            Just(br#"{"metadata": {"name": "x"}}"#.to_vec()),
            Just(br#"{"metadata": {"name": "x", "resourceVersion": "abc"}, "status": 5}"#.to_vec()),
            Just(br#"{"metadata": "nope"}"#.to_vec()),
            Just(br#"[{"op": "remove", "path": "/metadata"}]"#.to_vec()),
            Just(br#"{"metadata": {"generateName": "A"}}"#.to_vec()),
            Just(b"null".to_vec()),
        ]
    }

    fn queries() -> impl Strategy<Value = Query> {
        let keys = prop::sample::select(vec![
            "watch",
            "resourceVersion",
            "labelSelector",
            "fieldSelector",
            "timeoutSeconds",
            "dryRun",
            "fieldManager",
            "resourceVersionMatch",
        ]);
        let vals = prop_oneof![
            Just("1".to_string()),
            Just("true".to_string()),
            Just("0".to_string()),
            Just("All".to_string()),
            Just("Exact".to_string()),
            "[ -~]{0,12}",
        ];
        prop::collection::hash_map(keys.prop_map(str::to_string), vals, 0..4)
    }

    proptest! {
        /// Whatever arrives, the server answers (an object, a list, a stream or a Status) and
        /// never panics.
        #[test]
        fn router_never_panics(
            method in methods(),
            segs in prop::collection::vec(prop::sample::select(SEGMENTS), 0..7),
            q in queries(),
            body in bodies(),
            ct in prop::sample::select(vec![
                "application/json", "application/merge-patch+json", "application/json-patch+json",
                "application/apply-patch+yaml", "application/strategic-merge-patch+json", "",
            ]),
        ) {
            let app = app();
            let path = format!("/{}", segs.join("/"));
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            let mut info = ReqInfo::default();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _guard = rt.enter();
            match route(&app, &method, &path, &q, &headers, Bytes::from(body), &mut info) {
                Ok(r) => prop_assert!(r.status().as_u16() < 300, "{path}: {}", r.status()),
                Err(e) => {
                    prop_assert!((400..600).contains(&e.code));
                    prop_assert_eq!(&e.status()["kind"], "Status");
                }
            }
        }
    }
}

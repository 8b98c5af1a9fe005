//! Authentication, impersonation and authorization of every request, as kube-apiserver does it
//! with bearer tokens and `--authorization-mode=RBAC`; and the endpoints that belong to them.
//!
//! **Users.** A request carries `Authorization: Bearer <token>`:
//! * the admin token ([`Tokens::admin`]; in the kubeconfig of [`super::RunningServer`], or the
//!   file `admin-token` of `ferrolb lab apiserver --pki-dir`) authenticates as
//!   `kubernetes-admin` in the group `system:masters`, which may do anything;
//! * a ServiceAccount token authenticates as `system:serviceaccount:<ns>:<name>` with the groups
//!   `system:serviceaccounts`, `system:serviceaccounts:<ns>`, `system:authenticated`. Tokens are
//!   issued by the TokenRequest subresource (`POST …/serviceaccounts/<name>/token`, what
//!   `kubectl create token` calls), signed with a key derived from the admin token (so they
//!   survive restarts of a server given the same admin token), bound to the ServiceAccount's
//!   uid (deleting the ServiceAccount invalidates them) and expire after
//!   `spec.expirationSeconds` (default 1 h, at least 10 min).
//!
//! A request without credentials is `system:anonymous` only for `/healthz`, `/livez`,
//! `/readyz` and `/version` (kube-apiserver with anonymous access limited to those); elsewhere,
//! and with an unknown or expired token, it is 401 Unauthorized.
//!
//! **Impersonation** (`Impersonate-User`, `Impersonate-Group`: `kubectl --as`, `--as-group`)
//! is authorized with the `impersonate` verb on `users`, `groups` or `serviceaccounts`.
//!
//! **Authorization.** Every request is decided by [`super::authz::authorize`] against the
//! Roles, ClusterRoles, RoleBindings and ClusterRoleBindings stored in the server; a denial is
//! 403 with kube-apiserver's Status. The server creates kube-apiserver's bootstrap roles that
//! matter here when absent ([`bootstrap`]): `cluster-admin` for `system:masters`,
//! `system:discovery`, `system:basic-user` (self reviews) and `system:public-info-viewer`.
//!
//! **Endpoints** served here: SelfSubjectAccessReview, SubjectAccessReview,
//! LocalSubjectAccessReview and SelfSubjectRulesReview (`kubectl auth can-i [--list] [--as]`),
//! SelfSubjectReview (`kubectl auth whoami`) and TokenRequest (`kubectl create token`).

use std::collections::HashMap;
use std::io::Read as _;

use axum::http::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::audit::{Audit, AuditEvent};
use super::authz::{
    authorize, forbidden_message, request_attributes, split_service_account, Decision, Policy,
    PolicyRule, RequestAttributes, UserInfo, AUTHENTICATED, MASTERS, UNAUTHENTICATED,
};
use super::error::ApiError;
use super::store::{Filter, Store, WriteOptions};
use ferrolb_core::election::membership::hmac_sha256;

/// User name of the admin token.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// User name of requests without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// Paths served to requests without credentials.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];
/// Prefix of ServiceAccount tokens.
const SA_TOKEN_PREFIX: &str = "flbsa";
/// TokenRequest defaults and bounds (kube-apiserver's).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const MIN_TOKEN_SECONDS: i64 = 600;
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The admin token and the key ServiceAccount tokens are signed with.
#[derive(Clone)]
pub struct Tokens {
    admin: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

/// What a valid ServiceAccount token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Expiry, Unix seconds.
    pub expires: i64,
}

/// A fresh random token (64 hex digits).
pub fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

impl Tokens {
    /// Tokens for the admin token `admin`.
    pub fn new(admin: impl Into<String>) -> Self {
        let admin = admin.into();
        let mut h = Sha256::new();
        h.update(b"ferrolb-lab service account token key\0");
        h.update(admin.as_bytes());
        Tokens {
            key: h.finalize().to_vec(),
            admin,
        }
    }

    /// The admin token.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    fn mac(&self, payload: &str) -> String {
        hex::encode(hmac_sha256(&self.key, payload.as_bytes()))
    }

    /// A token for the ServiceAccount `namespace/name` with `uid`, valid until `expires`.
    pub fn issue(&self, namespace: &str, name: &str, uid: &str, expires: i64) -> String {
        let payload = format!("{namespace}:{name}:{uid}:{expires}");
        format!(
            "{SA_TOKEN_PREFIX}.{}.{}",
            hex::encode(&payload),
            self.mac(&payload)
        )
    }

    /// The claims of a ServiceAccount token signed by this key and not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let mut parts = token.split('.');
        let (Some(SA_TOKEN_PREFIX), Some(p), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let payload = String::from_utf8(hex::decode(p).ok()?).ok()?;
        let want = self.mac(&payload);
        // Constant time: a mismatch position must not show in the timing.
        if want.len() != mac.len()
            || want
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return None;
        }
        let mut f = payload.splitn(4, ':');
        let c = Claims {
            namespace: f.next()?.to_string(),
            name: f.next()?.to_string(),
            uid: f.next()?.to_string(),
            expires: f.next()?.parse().ok()?,
        };
        (c.expires > now).then_some(c)
    }
}

/// The server's authentication state and request recorder.
#[derive(Debug)]
pub struct Auth {
    /// Token checking and issuing.
    pub tokens: Tokens,
    /// Where requests are recorded.
    pub audit: Audit,
}

/// The admin user.
pub fn admin_user() -> UserInfo {
    UserInfo {
        name: ADMIN_USER.into(),
        groups: vec![MASTERS.into(), AUTHENTICATED.into()],
    }
}

fn anonymous() -> UserInfo {
    UserInfo {
        name: ANONYMOUS_USER.into(),
        groups: vec![UNAUTHENTICATED.into()],
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The parsed RBAC objects of `store`.
pub fn load_policy(store: &Store) -> Policy {
    let objects = |plural: &str| {
        store
            .registry_find(RBAC_GROUP, "v1", plural)
            .map(|d| store.list(&d, &Filter::default()).0)
            .unwrap_or_default()
    };
    let (r, cr, rb, crb) = (
        objects("roles"),
        objects("clusterroles"),
        objects("rolebindings"),
        objects("clusterrolebindings"),
    );
    Policy::from_objects(
        r.iter().map(|v| &**v),
        cr.iter().map(|v| &**v),
        rb.iter().map(|v| &**v),
        crb.iter().map(|v| &**v),
    )
}

/// kube-apiserver's 403 for `a` by `user` (`reason`: the authorizer's, may be empty).
pub fn forbidden(user: &UserInfo, a: &RequestAttributes, reason: &str) -> ApiError {
    let mut msg = forbidden_message(user, a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    ApiError::forbidden(&a.api_group, &a.resource, &a.name, &msg)
}

/// The outcome of checking one request.
#[derive(Debug)]
pub struct Admission {
    /// Who sent it (`system:anonymous` without credentials).
    pub user: UserInfo,
    /// Who it acts as, when it impersonates.
    pub impersonated: Option<UserInfo>,
    /// What it asks for.
    pub attrs: RequestAttributes,
    /// Why it is refused (401, 403, or 400 for malformed impersonation); `None`: go ahead.
    pub denied: Option<ApiError>,
}

impl Admission {
    /// The user the request acts as.
    pub fn acting(&self) -> &UserInfo {
        self.impersonated.as_ref().unwrap_or(&self.user)
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

impl Auth {
    /// Authentication with `tokens`, recording into `audit`.
    pub fn new(tokens: Tokens, audit: Audit) -> Self {
        Auth { tokens, audit }
    }

    /// The user a bearer token authenticates as; `Ok(None)` without credentials.
    pub fn authenticate(
        &self,
        store: &Store,
        headers: &HeaderMap,
    ) -> Result<Option<UserInfo>, ApiError> {
        let Some(h) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        let Some((scheme, token)) = h.trim().split_once(' ') else {
            return Err(ApiError::unauthorized());
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized());
        }
        let token = token.trim();
        if token.len() == self.tokens.admin.len()
            && token
                .bytes()
                .zip(self.tokens.admin.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        {
            return Ok(Some(admin_user()));
        }
        let c = self
            .tokens
            .verify(token, now_unix())
            .ok_or_else(ApiError::unauthorized)?;
        // Bound to the ServiceAccount object: gone or recreated means invalid.
        let sa = store
            .registry_find("", "v1", "serviceaccounts")
            .and_then(|d| store.get(&d, &c.namespace, &c.name).ok())
            .ok_or_else(ApiError::unauthorized)?;
        if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(c.uid.as_str()) {
            return Err(ApiError::unauthorized());
        }
        Ok(Some(UserInfo::service_account(&c.namespace, &c.name)))
    }

    /// Authenticates, applies impersonation and authorizes one request.
    pub fn admit(
        &self,
        store: &Store,
        method: &str,
        path: &str,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Admission {
        let attrs = request_attributes(method, path, query);
        let mut adm = Admission {
            user: anonymous(),
            impersonated: None,
            attrs,
            denied: None,
        };
        match self.authenticate(store, headers) {
            Ok(Some(u)) => adm.user = u,
            Ok(None) if PUBLIC_PATHS.contains(&path) => {}
            Ok(None) | Err(_) => {
                adm.denied = Some(ApiError::unauthorized());
                return adm;
            }
        }
        let mut policy: Option<Policy> = None;
        let mut decide = |user: &UserInfo, a: &RequestAttributes| {
            if user.groups.iter().any(|g| g == MASTERS) {
                return Decision::Allow(String::new());
            }
            authorize(policy.get_or_insert_with(|| load_policy(store)), user, a)
        };
        match impersonation(&adm.user, headers, &mut decide) {
            Ok(imp) => adm.impersonated = imp,
            Err(e) => {
                adm.denied = Some(e);
                return adm;
            }
        }
        if let Decision::Deny(reason) = decide(adm.acting(), &adm.attrs) {
            adm.denied = Some(forbidden(adm.acting(), &adm.attrs, &reason));
        }
        adm
    }

    /// Records a finished request.
    pub fn record(&self, adm: &Admission, request_uri: &str, code: u16) {
        if self.audit.enabled() {
            self.audit.record(AuditEvent::new(
                &adm.user,
                adm.impersonated.as_ref(),
                &adm.attrs,
                request_uri,
                code,
            ));
        }
    }

    /// Serves the admitted request when it is one of the endpoints this module owns: the
    /// access reviews, SelfSubjectReview and TokenRequest. `None`: not one of them.
    pub fn serve(
        &self,
        store: &Store,
        adm: &Admission,
        content_type: &str,
        body: &[u8],
    ) -> Option<Result<(u16, Value), ApiError>> {
        let a = &adm.attrs;
        if !a.resource_request || a.verb != "create" || a.api_version != "v1" {
            return None;
        }
        let parse = || -> Result<Value, ApiError> {
            if content_type.contains("protobuf") {
                // kubectl's typed clients send these kinds as protobuf only.
                return super::proto::decode_body(body).ok_or_else(|| {
                    ApiError::bad_request("the protobuf request body could not be decoded")
                });
            }
            if content_type.contains("cbor") {
                return Err(ApiError::unsupported_media_type(content_type));
            }
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            })?;
            if v.is_object() {
                Ok(v)
            } else {
                Err(ApiError::bad_request(
                    "the request body must be a JSON object",
                ))
            }
        };
        let r = match (
            a.api_group.as_str(),
            a.resource.as_str(),
            a.subresource.as_str(),
            a.namespace.is_empty(),
        ) {
            ("authorization.k8s.io", "selfsubjectaccessreviews", "", true) => {
                parse().and_then(|b| access_review(store, adm.acting(), b, None))
            }
            ("authorization.k8s.io", "subjectaccessreviews", "", true) => parse().and_then(|b| {
                let u = review_user(&b)?;
                access_review(store, &u, b, None)
            }),
            ("authorization.k8s.io", "localsubjectaccessreviews", "", false) => {
                parse().and_then(|b| {
                    let u = review_user(&b)?;
                    access_review(store, &u, b, Some(&a.namespace))
                })
            }
            ("authorization.k8s.io", "selfsubjectrulesreviews", "", true) => {
                parse().map(|b| rules_review(store, adm.acting(), b))
            }
            ("authentication.k8s.io", "selfsubjectreviews", "", true) => {
                parse().map(|b| self_review(adm.acting(), b))
            }
            ("", "serviceaccounts", "token", false) => {
                parse().and_then(|b| self.token_request(store, &a.namespace, &a.name, b))
            }
            _ => return None,
        };
        Some(r.map(|v| (201, v)))
    }

    /// TokenRequest: a token for the ServiceAccount `namespace/name`.
    fn token_request(
        &self,
        store: &Store,
        namespace: &str,
        name: &str,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        let def = store
            .registry_find("", "v1", "serviceaccounts")
            .ok_or_else(ApiError::no_route)?;
        let sa = store.get(&def, namespace, name)?;
        let uid = sa
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let seconds = body
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_TOKEN_SECONDS);
        if seconds < MIN_TOKEN_SECONDS {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                name,
                format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
            ));
        }
        let now = now_unix();
        let expires = now.saturating_add(seconds);
        let token = self.tokens.issue(namespace, name, uid, expires);
        body["apiVersion"] = json!("authentication.k8s.io/v1");
        body["kind"] = json!("TokenRequest");
        body["metadata"] =
            json!({"name": name, "namespace": namespace, "creationTimestamp": rfc3339(now)});
        body["spec"]["expirationSeconds"] = json!(seconds);
        if !body["spec"]["audiences"].is_array() {
            body["spec"]["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"]);
        }
        body["status"] = json!({"token": token, "expirationTimestamp": rfc3339(expires)});
        Ok(body)
    }
}

/// Applies `Impersonate-User` / `Impersonate-Group`: checks the `impersonate` permission of
/// `user` for each, and returns who the request then acts as.
fn impersonation(
    user: &UserInfo,
    headers: &HeaderMap,
    decide: &mut impl FnMut(&UserInfo, &RequestAttributes) -> Decision,
) -> Result<Option<UserInfo>, ApiError> {
    let name = header_values(headers, "impersonate-user");
    let groups = header_values(headers, "impersonate-group");
    let unsupported = headers.keys().any(|k| {
        let k = k.as_str();
        k == "impersonate-uid" || k.starts_with("impersonate-extra-")
    });
    if name.is_empty() {
        if !groups.is_empty() || unsupported {
            return Err(ApiError::bad_request(
                "requested impersonation without a user (Impersonate-User)",
            ));
        }
        return Ok(None);
    }
    if unsupported {
        return Err(ApiError::bad_request(
            "Impersonate-Uid and Impersonate-Extra-* are not supported by this API server",
        ));
    }
    if name.len() > 1 {
        return Err(ApiError::bad_request(
            "Impersonate-User may be given only once",
        ));
    }
    let name = name[0].to_string();
    let sa = split_service_account(&name);
    let mut checks = vec![match sa {
        Some((ns, n)) => RequestAttributes::resource("impersonate", "", "serviceaccounts", ns, n),
        None => RequestAttributes::resource("impersonate", "", "users", "", &name),
    }];
    for g in &groups {
        checks.push(RequestAttributes::resource(
            "impersonate",
            "",
            "groups",
            "",
            g,
        ));
    }
    for a in &checks {
        if let Decision::Deny(reason) = decide(user, a) {
            return Err(forbidden(user, a, &reason));
        }
    }
    let mut out = match (sa, groups.is_empty()) {
        (Some((ns, n)), true) => UserInfo::service_account(ns, n),
        _ => UserInfo {
            name: name.clone(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        },
    };
    if name != ANONYMOUS_USER && !out.groups.iter().any(|g| g == AUTHENTICATED) {
        out.groups.push(AUTHENTICATED.into());
    }
    Ok(Some(out))
}

/// The user a (Local)SubjectAccessReview asks about.
fn review_user(body: &Value) -> Result<UserInfo, ApiError> {
    let name = body
        .pointer("/spec/user")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let groups: Vec<String> = body
        .pointer("/spec/groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if name.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "",
            "SubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified",
        ));
    }
    Ok(UserInfo { name, groups })
}

/// Answers an access review for `user`; `namespace` forces the namespace (Local reviews).
fn access_review(
    store: &Store,
    user: &UserInfo,
    mut body: Value,
    namespace: Option<&str>,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let attrs = if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let ns = s(r, "namespace");
        if let Some(forced) = namespace {
            if !ns.is_empty() && ns != forced {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match the namespace of the request ({forced})"
                )));
            }
        }
        RequestAttributes {
            verb: s(r, "verb"),
            resource_request: true,
            api_group: s(r, "group"),
            api_version: s(r, "version"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            namespace: namespace.map(str::to_string).unwrap_or(ns),
            name: s(r, "name"),
            path: String::new(),
        }
    } else if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        RequestAttributes {
            verb: s(n, "verb"),
            path: s(n, "path"),
            ..Default::default()
        }
    } else {
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "",
            "spec.resourceAttributes: Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    };
    let decision = if user.groups.iter().any(|g| g == MASTERS) {
        Decision::Allow(String::new())
    } else {
        authorize(&load_policy(store), user, &attrs)
    };
    body["status"] = match decision {
        Decision::Allow(r) if r.is_empty() => json!({"allowed": true}),
        Decision::Allow(r) => json!({"allowed": true, "reason": r}),
        Decision::Deny(r) if r.is_empty() => json!({"allowed": false}),
        Decision::Deny(r) => json!({"allowed": false, "reason": r}),
    };
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    Ok(body)
}

/// SelfSubjectRulesReview: the rules that apply to `user` in `spec.namespace`.
fn rules_review(store: &Store, user: &UserInfo, mut body: Value) -> Value {
    let ns = body
        .pointer("/spec/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (rules, errors) = load_policy(store).rules_for(user, &ns);
    let (nonres, res): (Vec<&PolicyRule>, Vec<&PolicyRule>) =
        rules.iter().partition(|r| !r.non_resource_urls.is_empty());
    let strip = |r: &PolicyRule, non_resource: bool| {
        let mut r = r.clone();
        if non_resource {
            r.api_groups.clear();
            r.resources.clear();
            r.resource_names.clear();
        } else {
            r.non_resource_urls.clear();
        }
        r.to_json()
    };
    let mut status = json!({
        "resourceRules": res.iter().map(|r| strip(r, false)).collect::<Vec<_>>(),
        "nonResourceRules": nonres.iter().map(|r| strip(r, true)).collect::<Vec<_>>(),
        "incomplete": false,
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    body["status"] = status;
    body
}

/// SelfSubjectReview: who the request authenticated as.
fn self_review(user: &UserInfo, mut body: Value) -> Value {
    body["apiVersion"] = json!("authentication.k8s.io/v1");
    body["kind"] = json!("SelfSubjectReview");
    body["metadata"] = json!({"creationTimestamp": rfc3339(now_unix())});
    body["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
    body
}

/// The bootstrap ClusterRoles and ClusterRoleBindings kube-apiserver creates, as far as this
/// server needs them: cluster-admin (for `system:masters`), discovery, self reviews and the
/// public health and version endpoints.
fn bootstrap_objects() -> Vec<(&'static str, Value)> {
    let meta = |name: &str| {
        json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
               "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    let role = |name: &str, rules: Value| {
        (
            "clusterroles",
            json!({"metadata": meta(name), "rules": rules}),
        )
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": g}))
            .collect();
        (
            "clusterrolebindings",
            json!({"metadata": meta(name),
                   "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
                   "subjects": subjects}),
        )
    };
    vec![
        role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                        "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
                    "verbs": ["create"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
        ),
        binding("cluster-admin", &[MASTERS]),
        binding("system:discovery", &[AUTHENTICATED]),
        binding("system:basic-user", &[AUTHENTICATED]),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED, UNAUTHENTICATED],
        ),
    ]
}

/// Creates the bootstrap roles and bindings that are absent (existing ones are left alone).
pub fn bootstrap(store: &Store) {
    for (plural, obj) in bootstrap_objects() {
        let Some(def) = store.registry_find(RBAC_GROUP, "v1", plural) else {
            continue;
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if store.get(&def, "", name).is_err() {
            if let Err(e) = store.create(&def, "", obj.clone(), &WriteOptions::default()) {
                tracing::warn!(error = %e, name, "creating a bootstrap RBAC object failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn store_with_sa() -> (Store, String) {
        let store = Store::new(100);
        bootstrap(&store);
        let def = store.registry_find("", "v1", "serviceaccounts").unwrap();
        let sa = store
            .create(
                &def,
                "default",
                json!({"metadata": {"name": "bot"}}),
                &WriteOptions::default(),
            )
            .unwrap();
        let uid = sa["metadata"]["uid"].as_str().unwrap().to_string();
        (store, uid)
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn tokens_verify_only_when_signed_unexpired_and_intact() {
        let t = Tokens::new("admin-secret");
        let tok = t.issue("ns", "sa", "uid-1", 1_000);
        assert_eq!(
            t.verify(&tok, 999),
            Some(Claims {
                namespace: "ns".into(),
                name: "sa".into(),
                uid: "uid-1".into(),
                expires: 1_000
            })
        );
        assert_eq!(t.verify(&tok, 1_000), None, "expired");
        assert_eq!(Tokens::new("other").verify(&tok, 0), None, "other key");
        let mut forged = tok.clone();
        forged.replace_range(7..9, "00");
        assert_eq!(t.verify(&forged, 0), None);
        assert_eq!(t.verify("garbage", 0), None);
        assert_eq!(t.verify("flbsa.zz.zz", 0), None);
    }

    #[test]
    fn authentication_admin_service_account_anonymous_and_401() {
        let (store, uid) = store_with_sa();
        let auth = Auth::new(Tokens::new("admin-secret"), Audit::off());
        let q = HashMap::new();
        let admit = |h: &HeaderMap, path: &str| auth.admit(&store, "GET", path, &q, h);

        let a = admit(&bearer("admin-secret"), "/api/v1/secrets");
        assert_eq!(a.user.name, ADMIN_USER);
        assert!(a.denied.is_none());

        let tok = auth.tokens.issue("default", "bot", &uid, now_unix() + 60);
        let a = admit(&bearer(&tok), "/api/v1/secrets");
        assert_eq!(a.user.name, "system:serviceaccount:default:bot");
        let e = a.denied.unwrap();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        // Discovery is granted to every authenticated user by the bootstrap roles.
        assert!(admit(&bearer(&tok), "/apis").denied.is_none());

        // A token of a ServiceAccount with another uid (deleted and recreated) is refused.
        let stale = auth
            .tokens
            .issue("default", "bot", "old-uid", now_unix() + 60);
        assert_eq!(admit(&bearer(&stale), "/apis").denied.unwrap().code, 401);
        assert_eq!(admit(&bearer("nope"), "/version").denied.unwrap().code, 401);

        // No credentials: only the public endpoints.
        let none = HeaderMap::new();
        let a = admit(&none, "/version");
        assert_eq!(a.user.name, ANONYMOUS_USER);
        assert!(a.denied.is_none());
        let e = admit(&none, "/api/v1/services").denied.unwrap();
        assert_eq!(e.status()["reason"], "Unauthorized");
        assert_eq!(e.code, 401);
    }

    #[test]
    fn forbidden_status_is_kube_apiservers() {
        let u = UserInfo::service_account("metallb-system", "ferrolb-speaker");
        let a = RequestAttributes::resource("list", "", "services", "", "");
        let s = forbidden(&u, &a, "").status();
        assert_eq!(
            s,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "services is forbidden: User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot list resource \"services\" in API group \"\" at the cluster scope",
                "reason": "Forbidden", "details": {"kind": "services"}, "code": 403
            })
        );
        let a = RequestAttributes::resource(
            "patch",
            "metallb.io",
            "ipaddresspools/status",
            "metallb-system",
            "default",
        );
        let s = forbidden(&u, &a, "").status();
        assert_eq!(
            s["message"],
            "ipaddresspools.metallb.io \"default\" is forbidden: User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot patch resource \"ipaddresspools/status\" in API group \"metallb.io\" in the namespace \"metallb-system\""
        );
        assert_eq!(
            s["details"],
            json!({"name": "default", "group": "metallb.io", "kind": "ipaddresspools"})
        );
        let nr = RequestAttributes {
            verb: "get".into(),
            path: "/metrics".into(),
            ..Default::default()
        };
        let s = forbidden(&u, &nr, "").status();
        assert_eq!(
            s["message"],
            "forbidden: User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot get path \"/metrics\""
        );
        assert_eq!(s["details"], json!({}));
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb() {
        let (store, uid) = store_with_sa();
        let auth = Auth::new(Tokens::new("admin-secret"), Audit::off());
        let q = HashMap::new();
        let mut h = bearer("admin-secret");
        h.insert(
            "impersonate-user",
            HeaderValue::from_static("system:serviceaccount:default:bot"),
        );
        let a = auth.admit(&store, "GET", "/api/v1/nodes", &q, &h);
        let acting = a.acting().clone();
        assert_eq!(acting, UserInfo::service_account("default", "bot"));
        assert_eq!(
            a.denied.unwrap().code,
            403,
            "the impersonated user is checked"
        );
        // A ServiceAccount may not impersonate.
        let tok = auth.tokens.issue("default", "bot", &uid, now_unix() + 60);
        let mut h = bearer(&tok);
        h.insert(
            "impersonate-user",
            HeaderValue::from_static("kubernetes-admin"),
        );
        let e = auth.admit(&store, "GET", "/apis", &q, &h).denied.unwrap();
        assert_eq!(
            e.message,
            "users \"kubernetes-admin\" is forbidden: User \"system:serviceaccount:default:bot\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        // Groups without a user are malformed.
        let mut h = bearer("admin-secret");
        h.insert("impersonate-group", HeaderValue::from_static("g"));
        assert_eq!(
            auth.admit(&store, "GET", "/apis", &q, &h)
                .denied
                .unwrap()
                .code,
            400
        );
    }

    #[test]
    fn token_request_and_reviews() {
        let (store, _) = store_with_sa();
        let auth = Auth::new(Tokens::new("admin-secret"), Audit::off());
        let q = HashMap::new();
        let h = bearer("admin-secret");
        let post = |path: &str, h: &HeaderMap, body: Value| {
            let adm = auth.admit(&store, "POST", path, &q, h);
            assert!(adm.denied.is_none(), "{:?}", adm.denied);
            auth.serve(
                &store,
                &adm,
                "application/json",
                &serde_json::to_vec(&body).unwrap(),
            )
            .expect("served here")
        };
        let (code, tr) = post(
            "/api/v1/namespaces/default/serviceaccounts/bot/token",
            &h,
            json!({"spec": {"expirationSeconds": 3600}}),
        )
        .unwrap();
        assert_eq!(code, 201);
        assert_eq!(tr["kind"], "TokenRequest");
        let tok = tr["status"]["token"].as_str().unwrap().to_string();
        assert!(tr["status"]["expirationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        let e = post(
            "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            &h,
            json!({}),
        )
        .unwrap_err();
        assert_eq!(e.code, 404);
        let e = post(
            "/api/v1/namespaces/default/serviceaccounts/bot/token",
            &h,
            json!({"spec": {"expirationSeconds": 60}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 422);

        // The ServiceAccount asks what it may do.
        let sa = bearer(&tok);
        let ssar = |verb: &str, resource: &str| {
            post(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                &sa,
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                       "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "group": "authorization.k8s.io"}}}),
            )
            .unwrap()
            .1["status"]["allowed"]
                .as_bool()
                .unwrap()
        };
        assert!(ssar("create", "selfsubjectaccessreviews"));
        assert!(!ssar("create", "subjectaccessreviews"));
        let (_, who) = post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &sa,
            json!({}),
        )
        .unwrap();
        assert_eq!(
            who["status"]["userInfo"]["username"],
            "system:serviceaccount:default:bot"
        );
        // Only the admin may review others.
        let adm = auth.admit(
            &store,
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            &q,
            &sa,
        );
        assert_eq!(adm.denied.unwrap().code, 403);
        let (_, sar) = post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            &h,
            json!({"spec": {"user": "system:serviceaccount:default:bot",
                            "groups": ["system:authenticated"],
                            "nonResourceAttributes": {"path": "/apis", "verb": "get"}}}),
        )
        .unwrap();
        assert_eq!(sar["status"]["allowed"], true);
        assert!(sar["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("system:discovery"));
        let (_, rules) = post(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            &sa,
            json!({"spec": {"namespace": "default"}}),
        )
        .unwrap();
        assert!(rules["status"]["nonResourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["nonResourceURLs"]
                .as_array()
                .unwrap()
                .contains(&json!("/apis"))));
    }
}

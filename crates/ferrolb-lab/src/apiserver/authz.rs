//! Pure RBAC: what a request asks for ([`request_attributes`], as kube-apiserver's
//! RequestInfo resolver reads it from the path) and whether the Roles, ClusterRoles,
//! RoleBindings and ClusterRoleBindings allow it ([`authorize`], as kube-apiserver's RBAC
//! authorizer decides it).
//!
//! Reproduced: verbs (with `*`), API groups, resources and `*/subresource`, `resourceNames`,
//! non-resource URLs (with a trailing `*`), namespace vs cluster scope (a ClusterRole bound by a
//! RoleBinding applies only in that namespace; cluster-scope requests see ClusterRoleBindings
//! only), subjects of kind User, Group and ServiceAccount, `list`/`watch` narrowed to one name by
//! a `metadata.name` field selector, and the denial message kube-apiserver writes. Not
//! reproduced: aggregated ClusterRoles (`aggregationRule`), privilege-escalation checks on
//! writes of RBAC objects (`escalate`, `bind`), webhook / node / ABAC authorizers.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// Who makes a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:<ns>:<name>`, `kubernetes-admin`, `system:anonymous`, …
    pub name: String,
    /// Groups, e.g. `system:serviceaccounts`, `system:authenticated`.
    pub groups: Vec<String>,
}

/// Group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group of requests without credentials.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// Group whose members may do anything (kube-apiserver's privileged group).
pub const MASTERS: &str = "system:masters";
/// Prefix of ServiceAccount user names.
pub const SA_PREFIX: &str = "system:serviceaccount:";

impl UserInfo {
    /// The user a ServiceAccount's token authenticates as, with the groups kube-apiserver gives it.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo {
            name: format!("{SA_PREFIX}{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }

    /// `(namespace, name)` when this is a ServiceAccount's user name.
    pub fn as_service_account(&self) -> Option<(&str, &str)> {
        split_service_account(&self.name)
    }
}

/// `(namespace, name)` of a `system:serviceaccount:<ns>:<name>` user name.
pub fn split_service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(SA_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// What a request asks to do (kube-apiserver's `authorizer.Attributes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `impersonate`; for non-resource requests the lower-case HTTP method.
    pub verb: String,
    /// A request for an API object (otherwise a non-resource path such as `/version`).
    pub resource_request: bool,
    /// API group (`""` for the core group).
    pub api_group: String,
    pub api_version: String,
    /// Resource (plural), e.g. `services`.
    pub resource: String,
    /// Subresource, e.g. `status`; empty for the object itself.
    pub subresource: String,
    /// Namespace; empty for cluster-scoped requests (and lists across all namespaces).
    pub namespace: String,
    /// Object name; empty for collections.
    pub name: String,
    /// The request path.
    pub path: String,
}

impl RequestAttributes {
    /// A resource request (for reviews and impersonation checks).
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        RequestAttributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }
    }
}

/// Whether `watch=` asks for a watch (the same test the HTTP shell routes by).
pub fn is_watch(query: &HashMap<String, String>) -> bool {
    matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
}

/// The name a field selector pins with `metadata.name=X` / `metadata.name==X`.
fn field_selector_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let v = term.trim().strip_prefix("metadata.name")?;
        let v = v.strip_prefix("==").or_else(|| v.strip_prefix('='))?;
        (!v.is_empty() && !v.contains('/') && v != "." && v != "..").then_some(v)
    })
}

/// Reads what a request asks for from its method, path and query, as kube-apiserver does:
/// `/api/v1/…` and `/apis/<group>/<version>/…` with a resource are resource requests,
/// everything else (discovery, `/version`, `/metrics`) is a non-resource request.
pub fn request_attributes(
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
) -> RequestAttributes {
    let non_resource = RequestAttributes {
        verb: method.to_ascii_lowercase(),
        path: path.to_string(),
        ..Default::default()
    };
    // Empty segments are dropped the same way the HTTP shell drops them when routing.
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, mut rest) = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest.to_vec()),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest.to_vec()),
        _ => return non_resource,
    };
    let mut a = RequestAttributes {
        verb: match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string(),
        resource_request: true,
        api_group: group.to_string(),
        api_version: version.to_string(),
        path: path.to_string(),
        ..Default::default()
    };
    if rest[0] == "namespaces" && rest.len() > 1 {
        a.namespace = rest[1].to_string();
        // `/namespaces/<ns>/<resource>/…`, but `/namespaces/<ns>/status` is the Namespace's own.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = rest[2..].to_vec();
        }
    }
    a.resource = rest[0].to_string();
    if rest.len() >= 2 {
        a.name = rest[1].to_string();
    }
    if rest.len() >= 3 {
        a.subresource = rest[2].to_string();
    }
    if a.name.is_empty() && a.verb == "get" {
        a.verb = if is_watch(query) { "watch" } else { "list" }.into();
        if let Some(n) = query
            .get("fieldSelector")
            .and_then(|s| field_selector_name(s))
        {
            a.name = n.to_string();
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    a
}

/// One RBAC policy rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// True when this rule allows the request (kube-apiserver's `RuleAllows`).
    pub fn allows(&self, a: &RequestAttributes) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        if !a.resource_request {
            return verb
                && self.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || *u == a.path
                        || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
                });
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        verb && self
            .api_groups
            .iter()
            .any(|g| g == "*" || *g == a.api_group)
            && self.resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!a.subresource.is_empty()
                        && r.strip_prefix("*/") == Some(a.subresource.as_str()))
            })
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }

    fn from_json(v: &Value) -> Self {
        let list = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        PolicyRule {
            verbs: list("verbs"),
            api_groups: list("apiGroups"),
            resources: list("resources"),
            resource_names: list("resourceNames"),
            non_resource_urls: list("nonResourceURLs"),
        }
    }

    /// The rule as JSON (`rbac.authorization.k8s.io/v1 PolicyRule`).
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("verbs".into(), serde_json::json!(self.verbs));
        for (k, v) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), serde_json::json!(v));
            }
        }
        Value::Object(m)
    }
}

/// A subject of a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    pub name: String,
    /// For ServiceAccounts (defaults to the binding's namespace).
    pub namespace: String,
}

/// A RoleBinding (namespace set) or ClusterRoleBinding (namespace empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    /// `Role` or `ClusterRole`.
    pub role_kind: String,
    pub role_name: String,
    pub subjects: Vec<Subject>,
}

impl Binding {
    fn from_json(v: &Value) -> Option<Self> {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let subjects = v
            .get("subjects")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| Subject {
                        kind: x["kind"].as_str().unwrap_or("").into(),
                        name: x["name"].as_str().unwrap_or("").into(),
                        namespace: x["namespace"].as_str().unwrap_or("").into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Binding {
            namespace: s("/metadata/namespace"),
            name: v.pointer("/metadata/name")?.as_str()?.to_string(),
            role_kind: s("/roleRef/kind"),
            role_name: s("/roleRef/name"),
            subjects,
        })
    }

    /// The first subject matching `user`, described as kube-apiserver does in its reasons.
    fn subject_for(&self, user: &UserInfo) -> Option<String> {
        self.subjects.iter().find_map(|s| match s.kind.as_str() {
            "User" if s.name == user.name => Some(format!("User {:?}", s.name)),
            "Group" if user.groups.contains(&s.name) => Some(format!("Group {:?}", s.name)),
            "ServiceAccount" => {
                let ns = if s.namespace.is_empty() {
                    &self.namespace
                } else {
                    &s.namespace
                };
                (user.name == format!("{SA_PREFIX}{ns}:{}", s.name))
                    .then(|| format!("ServiceAccount \"{}/{ns}\"", s.name))
            }
            _ => None,
        })
    }

    fn kind(&self) -> &'static str {
        if self.namespace.is_empty() {
            "ClusterRoleBinding"
        } else {
            "RoleBinding"
        }
    }
}

/// Every RBAC object the server holds, parsed.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `(namespace, name)` → rules.
    pub roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    /// name → rules.
    pub cluster_roles: BTreeMap<String, Vec<PolicyRule>>,
    pub role_bindings: Vec<Binding>,
    pub cluster_role_bindings: Vec<Binding>,
}

fn rules_of(v: &Value) -> Vec<PolicyRule> {
    v.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(PolicyRule::from_json).collect())
        .unwrap_or_default()
}

fn name_of(v: &Value) -> (String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

impl Policy {
    /// Builds the policy from the stored objects of each kind.
    pub fn from_objects<'a>(
        roles: impl IntoIterator<Item = &'a Value>,
        cluster_roles: impl IntoIterator<Item = &'a Value>,
        role_bindings: impl IntoIterator<Item = &'a Value>,
        cluster_role_bindings: impl IntoIterator<Item = &'a Value>,
    ) -> Self {
        Policy {
            roles: roles
                .into_iter()
                .map(|r| (name_of(r), rules_of(r)))
                .collect(),
            cluster_roles: cluster_roles
                .into_iter()
                .map(|r| (name_of(r).1, rules_of(r)))
                .collect(),
            role_bindings: role_bindings
                .into_iter()
                .filter_map(Binding::from_json)
                .collect(),
            cluster_role_bindings: cluster_role_bindings
                .into_iter()
                .filter_map(Binding::from_json)
                .collect(),
        }
    }

    /// The bindings that can apply to a request in `namespace` (ClusterRoleBindings, then
    /// the namespace's RoleBindings), with the rules of the role each refers to, or the
    /// error kube-apiserver reports when that role does not exist.
    fn visit<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a Binding, Result<&'a [PolicyRule], String>)> + 'a {
        let namespaced = self
            .role_bindings
            .iter()
            .filter(move |b| !namespace.is_empty() && b.namespace == namespace);
        self.cluster_role_bindings
            .iter()
            .chain(namespaced)
            .map(move |b| {
                let rules = match b.role_kind.as_str() {
                    "ClusterRole" => self.cluster_roles.get(&b.role_name).ok_or_else(|| {
                        format!(
                            "clusterrole.rbac.authorization.k8s.io {:?} not found",
                            b.role_name
                        )
                    }),
                    "Role" if !b.namespace.is_empty() => self
                        .roles
                        .get(&(b.namespace.clone(), b.role_name.clone()))
                        .ok_or_else(|| {
                            format!("role.rbac.authorization.k8s.io {:?} not found", b.role_name)
                        }),
                    other => Err(format!("unsupported roleRef kind {other:?}")),
                };
                (b, rules.map(Vec::as_slice))
            })
    }

    /// Every rule that applies to `user` in `namespace` (all namespaces' view when empty: the
    /// cluster-wide rules only), for SelfSubjectRulesReview; and the errors met.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (b, r) in self.visit(namespace) {
            if b.subject_for(user).is_none() {
                continue;
            }
            match r {
                Ok(r) => rules.extend(r.iter().cloned()),
                Err(e) => errors.push(e),
            }
        }
        (rules, errors)
    }
}

/// The outcome of [`authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the reason names the binding, as kube-apiserver's does.
    Allow(String),
    /// Denied; the reason is empty, or lists bindings whose role is missing (`RBAC: …`).
    Deny(String),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Decides a request as kube-apiserver with `--authorization-mode=RBAC` does: members of
/// `system:masters` may do anything; everyone else needs a rule of a role bound to them
/// (a ClusterRoleBinding anywhere, a RoleBinding in the request's namespace).
pub fn authorize(policy: &Policy, user: &UserInfo, a: &RequestAttributes) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Decision::Allow(format!("member of the privileged group {MASTERS:?}"));
    }
    let mut errors = Vec::new();
    for (b, rules) in policy.visit(&a.namespace) {
        let Some(subject) = b.subject_for(user) else {
            continue;
        };
        match rules {
            Ok(rules) => {
                if rules.iter().any(|r| r.allows(a)) {
                    let binding = if b.namespace.is_empty() {
                        b.name.clone()
                    } else {
                        format!("{}/{}", b.name, b.namespace)
                    };
                    return Decision::Allow(format!(
                        "RBAC: allowed by {} {binding:?} of {} {:?} to {subject}",
                        b.kind(),
                        b.role_kind,
                        b.role_name
                    ));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Decision::Deny(match errors.len() {
        0 => String::new(),
        1 => format!("RBAC: {}", errors[0]),
        _ => format!("RBAC: [{}]", errors.join(", ")),
    })
}

/// kube-apiserver's denial message for `a` by `user` (`forbiddenMessage`), without the
/// resource prefix the Status adds.
pub fn forbidden_message(user: &UserInfo, a: &RequestAttributes) -> String {
    if !a.resource_request {
        return format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path);
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    if a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            user.name, a.verb, a.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            user.name, a.verb, a.api_group, a.namespace
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn attrs(method: &str, path: &str, query: &[(&str, &str)]) -> RequestAttributes {
        request_attributes(method, path, &q(query))
    }

    #[test]
    fn request_attributes_read_paths_like_kube_apiserver() {
        let a = attrs("GET", "/api/v1/services", &[]);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "services", "")
        );
        assert!(a.resource_request);
        let a = attrs("GET", "/api/v1/services", &[("watch", "1")]);
        assert_eq!(a.verb, "watch");
        let a = attrs(
            "PATCH",
            "/api/v1/namespaces/default/services/web/status",
            &[],
        );
        assert_eq!(
            (
                a.verb.as_str(),
                a.api_group.as_str(),
                a.resource.as_str(),
                a.subresource.as_str(),
                a.namespace.as_str(),
                a.name.as_str()
            ),
            ("patch", "", "services", "status", "default", "web")
        );
        let a = attrs(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/metallb-system/leases",
            &[("fieldSelector", "metadata.name=ferrolb-controller")],
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str(), a.name.as_str()),
            ("list", "coordination.k8s.io", "ferrolb-controller")
        );
        let a = attrs("DELETE", "/api/v1/namespaces/x/configmaps", &[]);
        assert_eq!(a.verb, "deletecollection");
        let a = attrs(
            "POST",
            "/api/v1/namespaces/ns/serviceaccounts/sa/token",
            &[],
        );
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.subresource.as_str()),
            ("create", "serviceaccounts", "token")
        );
        // A Namespace object is in its own namespace; its status is its subresource.
        let a = attrs("GET", "/api/v1/namespaces/foo", &[]);
        assert_eq!(
            (a.resource.as_str(), a.namespace.as_str(), a.name.as_str()),
            ("namespaces", "foo", "foo")
        );
        let a = attrs("PUT", "/api/v1/namespaces/foo/status", &[]);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("namespaces", "foo", "status")
        );
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/metallb.io/v1beta1",
            "/version",
            "/",
        ] {
            let a = attrs("GET", p, &[]);
            assert!(!a.resource_request, "{p}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", p));
        }
    }

    fn policy() -> Policy {
        let roles = [json!({
            "metadata": {"name": "ferrolb-speaker", "namespace": "metallb-system"},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ferrolb-heartbeat-key"], "verbs": ["get"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
            ]
        })];
        let cluster_roles = [
            json!({"metadata": {"name": "speaker"}, "rules": [
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            ]}),
            json!({"metadata": {"name": "status-writer"}, "rules": [
                {"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]},
            ]}),
            json!({"metadata": {"name": "discovery"}, "rules": [
                {"nonResourceURLs": ["/api", "/api/*", "/version"], "verbs": ["get"]},
            ]}),
        ];
        let sa = json!([{"kind": "ServiceAccount", "name": "ferrolb-speaker", "namespace": "metallb-system"}]);
        let role_bindings = [
            json!({"metadata": {"name": "ferrolb-speaker", "namespace": "metallb-system"},
                   "roleRef": {"kind": "Role", "name": "ferrolb-speaker"}, "subjects": sa}),
            // A ClusterRole bound in one namespace only.
            json!({"metadata": {"name": "status", "namespace": "team-a"},
                   "roleRef": {"kind": "ClusterRole", "name": "status-writer"},
                   "subjects": [{"kind": "ServiceAccount", "name": "ferrolb-speaker", "namespace": "metallb-system"}]}),
            // Subject namespace defaults to the binding's.
            json!({"metadata": {"name": "local", "namespace": "metallb-system"},
                   "roleRef": {"kind": "ClusterRole", "name": "status-writer"},
                   "subjects": [{"kind": "ServiceAccount", "name": "other"}]}),
            json!({"metadata": {"name": "dangling", "namespace": "metallb-system"},
                   "roleRef": {"kind": "Role", "name": "gone"}, "subjects": sa}),
        ];
        let cluster_role_bindings = [
            json!({"metadata": {"name": "speaker"}, "roleRef": {"kind": "ClusterRole", "name": "speaker"}, "subjects": sa}),
            json!({"metadata": {"name": "discovery"}, "roleRef": {"kind": "ClusterRole", "name": "discovery"},
                   "subjects": [{"kind": "Group", "name": AUTHENTICATED}]}),
        ];
        Policy::from_objects(
            &roles,
            &cluster_roles,
            &role_bindings,
            &cluster_role_bindings,
        )
    }

    fn speaker() -> UserInfo {
        UserInfo::service_account("metallb-system", "ferrolb-speaker")
    }

    fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> RequestAttributes {
        RequestAttributes::resource(verb, group, resource, ns, name)
    }

    #[test]
    fn rbac_decisions() {
        let p = policy();
        let u = speaker();
        let ok = |a: RequestAttributes| authorize(&p, &u, &a).allowed();
        // resourceNames: that Secret only, and never a collection.
        assert!(ok(res(
            "get",
            "",
            "secrets",
            "metallb-system",
            "ferrolb-heartbeat-key"
        )));
        assert!(!ok(res("get", "", "secrets", "metallb-system", "other")));
        assert!(!ok(res("list", "", "secrets", "metallb-system", "")));
        // A Role applies in its namespace only.
        assert!(!ok(res(
            "get",
            "",
            "secrets",
            "default",
            "ferrolb-heartbeat-key"
        )));
        // `*` verbs.
        for v in [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ] {
            assert!(
                ok(res(
                    v,
                    "coordination.k8s.io",
                    "leases",
                    "metallb-system",
                    "x"
                )),
                "{v}"
            );
        }
        // Group must match.
        assert!(!ok(res("get", "", "leases", "metallb-system", "x")));
        // Cluster-wide read from a ClusterRoleBinding, in every namespace and at cluster scope.
        assert!(ok(res("list", "", "nodes", "", "")));
        assert!(!ok(res("delete", "", "nodes", "", "n1")));
        // A ClusterRole bound by a RoleBinding: only in that namespace; `*/status` matches
        // every status subresource but not the object.
        assert!(ok(res("patch", "", "services/status", "team-a", "web")));
        assert!(!ok(res("patch", "", "services/status", "team-b", "web")));
        assert!(!ok(res("patch", "", "services/status", "", "")));
        assert!(!ok(res("patch", "", "services", "team-a", "web")));
        // The ServiceAccount subject without namespace means the binding's namespace.
        let other = UserInfo::service_account("metallb-system", "other");
        assert!(authorize(
            &p,
            &other,
            &res("patch", "", "pods/status", "metallb-system", "x")
        )
        .allowed());
        let elsewhere = UserInfo::service_account("default", "other");
        assert!(!authorize(
            &p,
            &elsewhere,
            &res("patch", "", "pods/status", "metallb-system", "x")
        )
        .allowed());
        // Non-resource URLs through a group binding, with prefix wildcards.
        let nr = |path: &str| RequestAttributes {
            verb: "get".into(),
            path: path.into(),
            ..Default::default()
        };
        assert!(ok(nr("/api/v1")));
        assert!(ok(nr("/version")));
        assert!(!ok(nr("/metrics")));
        // The privileged group may do anything.
        let admin = UserInfo {
            name: "kubernetes-admin".into(),
            groups: vec![MASTERS.into()],
        };
        assert!(authorize(&p, &admin, &nr("/metrics")).allowed());
        // Nobody else gets anything.
        let stranger = UserInfo::service_account("x", "y");
        assert_eq!(
            authorize(&p, &stranger, &res("list", "", "nodes", "", "")),
            Decision::Deny(String::new())
        );
    }

    #[test]
    fn denial_reasons_and_messages_match_kube_apiserver() {
        let p = policy();
        let u = speaker();
        // The dangling RoleBinding is reported for requests in its namespace.
        assert_eq!(
            authorize(&p, &u, &res("get", "", "configmaps", "metallb-system", "x")),
            Decision::Deny("RBAC: role.rbac.authorization.k8s.io \"gone\" not found".into())
        );
        assert_eq!(
            forbidden_message(&u, &res("list", "", "services", "", "")),
            "User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot list resource \"services\" in API group \"\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(&u, &res("patch", "", "services/status", "default", "web")),
            "User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot patch resource \"services/status\" in API group \"\" in the namespace \"default\""
        );
        let nr = RequestAttributes {
            verb: "get".into(),
            path: "/metrics".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&u, &nr),
            "User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot get path \"/metrics\""
        );
        match authorize(&p, &u, &res("get", "", "secrets", "metallb-system", "ferrolb-heartbeat-key")) {
            Decision::Allow(r) => assert_eq!(
                r,
                "RBAC: allowed by RoleBinding \"ferrolb-speaker/metallb-system\" of Role \"ferrolb-speaker\" to ServiceAccount \"ferrolb-speaker/metallb-system\""
            ),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn rules_for_lists_what_applies_in_a_namespace() {
        let p = policy();
        let (rules, errors) = p.rules_for(&speaker(), "metallb-system");
        assert!(rules.iter().any(|r| r.resources == ["secrets"]));
        assert!(rules.iter().any(|r| r.resources == ["nodes"]));
        assert_eq!(errors.len(), 1);
        let (rules, errors) = p.rules_for(&speaker(), "");
        assert!(!rules.iter().any(|r| r.resources == ["secrets"]));
        assert!(errors.is_empty());
    }

    #[test]
    fn service_account_names() {
        assert_eq!(
            split_service_account("system:serviceaccount:metallb-system:ferrolb-speaker"),
            Some(("metallb-system", "ferrolb-speaker"))
        );
        assert_eq!(split_service_account("system:serviceaccount:a"), None);
        assert_eq!(split_service_account("admin"), None);
        let u = UserInfo::service_account("ns", "sa");
        assert_eq!(u.as_service_account(), Some(("ns", "sa")));
        assert!(u.groups.contains(&"system:serviceaccounts:ns".to_string()));
        assert!(u.groups.contains(&AUTHENTICATED.to_string()));
    }
}

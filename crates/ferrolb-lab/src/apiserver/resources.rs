//! The resource table: which kinds the server serves, and how.
//!
//! Built-in kinds are one line each in [`BUILTIN`]. CustomResourceDefinitions created through the API
//! add their kinds at run time ([`Registry::register_crd`]).

use serde_json::{json, Value};

/// How a kind treats its `status` stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMode {
    /// No status subresource: `status` is an ordinary field.
    None,
    /// Built-in kind with a `status` subresource: writes to the main resource keep the stored status;
    /// writes to `/status` keep the stored spec but take metadata (labels, annotations) from the
    /// request, as the real API server does for Services and Nodes. `reset_on_create` drops any
    /// status sent on create (Services do that, Nodes do not).
    Builtin {
        /// Drop `status` from the body of a create.
        reset_on_create: bool,
    },
    /// Custom resource with `subresources.status`: `/status` changes `status` only, create drops it.
    Custom,
}

impl StatusMode {
    /// True when the kind has a `/status` subresource.
    pub fn has_subresource(self) -> bool {
        !matches!(self, StatusMode::None)
    }
}

/// One served resource (a group/version/plural triple).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version within the group, e.g. `v1beta1`.
    pub version: String,
    /// Lower-case plural used in paths, e.g. `services`.
    pub plural: String,
    /// Lower-case singular name.
    pub singular: String,
    /// `kind` of the objects.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Status subresource behaviour.
    pub status: StatusMode,
    /// `kubectl` short names.
    pub short_names: Vec<String>,
    /// Defined by a CustomResourceDefinition object (removed again with it).
    pub from_crd: bool,
}

impl ResourceDef {
    /// `apiVersion` of objects of this resource, e.g. `v1` or `metallb.io/v1beta1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key shared by all versions of one resource: `group/plural`.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// `kind` of the list type, e.g. `ServiceList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// Scope column of [`BUILTIN`].
#[derive(Clone, Copy)]
enum Scope {
    Namespaced,
    Cluster,
}
use Scope::{Cluster, Namespaced};

/// Status column of [`BUILTIN`].
const NO: StatusMode = StatusMode::None;
const KEEP: StatusMode = StatusMode::Builtin {
    reset_on_create: false,
};
const RESET: StatusMode = StatusMode::Builtin {
    reset_on_create: true,
};
const CUSTOM: StatusMode = StatusMode::Custom;

/// One row of [`BUILTIN`]: group, version, plural, kind, scope, status mode, short names.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Scope,
    StatusMode,
    &'static [&'static str],
);

/// The built-in kinds. Adding a kind is one line.
#[rustfmt::skip]
const BUILTIN: &[Row] = &[
    ("", "v1", "namespaces", "Namespace", Cluster, KEEP, &["ns"]),
    ("", "v1", "nodes", "Node", Cluster, KEEP, &["no"]),
    ("", "v1", "services", "Service", Namespaced, RESET, &["svc"]),
    ("", "v1", "endpoints", "Endpoints", Namespaced, NO, &["ep"]),
    ("", "v1", "pods", "Pod", Namespaced, KEEP, &["po"]),
    ("", "v1", "secrets", "Secret", Namespaced, NO, &[]),
    ("", "v1", "configmaps", "ConfigMap", Namespaced, NO, &["cm"]),
    ("", "v1", "serviceaccounts", "ServiceAccount", Namespaced, NO, &["sa"]),
    ("", "v1", "events", "Event", Namespaced, NO, &["ev"]),
    ("events.k8s.io", "v1", "events", "Event", Namespaced, NO, &["ev"]),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", Namespaced, NO, &[]),
    ("coordination.k8s.io", "v1", "leases", "Lease", Namespaced, NO, &[]),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", Namespaced, NO, &[]),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", Namespaced, NO, &[]),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", Cluster, NO, &[]),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", Cluster, NO, &[]),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", Cluster, KEEP, &["crd", "crds"]),
    ("metallb.io", "v1beta1", "ipaddresspools", "IPAddressPool", Namespaced, CUSTOM, &[]),
    ("metallb.io", "v1beta1", "l2advertisements", "L2Advertisement", Namespaced, CUSTOM, &[]),
    ("metallb.io", "v1beta1", "servicel2statuses", "ServiceL2Status", Namespaced, CUSTOM, &[]),
    ("metallb.io", "v1beta1", "configurationstates", "ConfigurationState", Namespaced, CUSTOM, &[]),
];

/// The set of served resources.
#[derive(Clone, Debug)]
pub struct Registry {
    defs: Vec<ResourceDef>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// The built-in kinds only.
    pub fn builtin() -> Self {
        let defs = BUILTIN
            .iter()
            .map(
                |&(group, version, plural, kind, scope, status, short)| ResourceDef {
                    group: group.into(),
                    version: version.into(),
                    plural: plural.into(),
                    singular: kind.to_ascii_lowercase(),
                    kind: kind.into(),
                    namespaced: matches!(scope, Scope::Namespaced),
                    status,
                    short_names: short.iter().map(|s| s.to_string()).collect(),
                    from_crd: false,
                },
            )
            .collect();
        Registry { defs }
    }

    /// All served resources.
    pub fn all(&self) -> &[ResourceDef] {
        &self.defs
    }

    /// The resource served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// Resource by storage key, any version (the first registered one).
    pub fn by_storage_key(&self, key: &str) -> Option<&ResourceDef> {
        self.defs.iter().find(|d| d.storage_key() == key)
    }

    /// Groups (excluding core) with their versions, in registration order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in self.defs.iter().filter(|d| !d.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, vs)) => {
                    if !vs.contains(&d.version) {
                        vs.push(d.version.clone())
                    }
                }
                None => out.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        out
    }

    /// True when `group/version` is served.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.defs
            .iter()
            .any(|d| d.group == group && d.version == version)
    }

    /// Adds the kinds a CustomResourceDefinition object defines (versions already served are kept).
    /// Returns an error message when the CRD is malformed.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        for def in crd_defs(crd)? {
            if self.find(&def.group, &def.version, &def.plural).is_none() {
                self.defs.push(def);
            }
        }
        Ok(())
    }

    /// Removes the kinds a deleted CustomResourceDefinition defined (built-in kinds stay).
    pub fn unregister_crd(&mut self, crd: &Value) {
        if let Ok(defs) = crd_defs(crd) {
            self.defs.retain(|d| {
                !(d.from_crd
                    && defs
                        .iter()
                        .any(|n| n.group == d.group && n.plural == d.plural))
            });
        }
    }
}

/// The resources a CRD object defines, one per served version.
pub fn crd_defs(crd: &Value) -> Result<Vec<ResourceDef>, String> {
    let spec = crd
        .get("spec")
        .ok_or("CustomResourceDefinition without spec")?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let group = s(spec.get("group")).ok_or("spec.group is required")?;
    let names = spec.get("names").ok_or("spec.names is required")?;
    let plural = s(names.get("plural")).ok_or("spec.names.plural is required")?;
    let kind = s(names.get("kind")).ok_or("spec.names.kind is required")?;
    let singular = s(names.get("singular")).unwrap_or_else(|| kind.to_ascii_lowercase());
    let short_names: Vec<String> = names
        .get("shortNames")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| s(Some(v))).collect())
        .unwrap_or_default();
    let namespaced = match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
                "spec.scope must be Namespaced or Cluster, got {other:?}"
            ))
        }
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("spec.versions must be a non-empty list")?;
    let mut out = Vec::new();
    for v in versions {
        let name = s(v.get("name")).ok_or("spec.versions[].name is required")?;
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let status = if v.pointer("/subresources/status").is_some() {
            StatusMode::Custom
        } else {
            StatusMode::None
        };
        out.push(ResourceDef {
            group: group.clone(),
            version: name,
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced,
            status,
            short_names: short_names.clone(),
            from_crd: true,
        });
    }
    Ok(out)
}

/// `APIResourceList` for one group/version.
pub fn api_resource_list(reg: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for d in reg
        .all()
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        resources.push(json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": d.short_names,
        }));
        if d.status.has_subresource() {
            resources.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    })
}

/// `APIGroup` JSON for one group.
pub fn api_group(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `APIGroupList` for `/apis`.
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(g, vs)| {
            let mut v = api_group(g, vs);
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            v
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/openapi/v3`: one entry per served group/version.
pub fn openapi_v3_index(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1"}),
    );
    for (g, vs) in reg.groups() {
        for v in vs {
            paths.insert(
                format!("apis/{g}/{v}"),
                json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}")}),
            );
        }
    }
    json!({ "paths": paths })
}

/// A schema-less OpenAPI v3 document for one group/version: the object paths with their
/// group/version/kind and the `fieldValidation` parameter (which is what kubectl looks for).
pub fn openapi_v3_doc(reg: &Registry, group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for d in reg
        .all()
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{prefix}/{}/{{name}}", d.plural)
        };
        let op = json!({
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": d.kind},
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "OK"}}
        });
        paths.insert(path, json!({"patch": op, "put": op}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (ferrolb lab)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_is_consistent() {
        let r = Registry::builtin();
        let svc = r.find("", "v1", "services").unwrap();
        assert_eq!(svc.kind, "Service");
        assert!(svc.namespaced);
        assert_eq!(svc.api_version(), "v1");
        let pools = r.find("metallb.io", "v1beta1", "ipaddresspools").unwrap();
        assert_eq!(pools.api_version(), "metallb.io/v1beta1");
        assert_eq!(pools.storage_key(), "metallb.io/ipaddresspools");
        assert!(!r.find("", "v1", "nodes").unwrap().namespaced);
        assert!(r.find("", "v1", "nosuch").is_none());
        // No duplicate group/version/plural.
        for (i, a) in r.all().iter().enumerate() {
            for b in &r.all()[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{a:?}"
                );
            }
        }
    }

    #[test]
    fn crd_registration_adds_and_removes_kinds() {
        let crd = json!({
            "spec": {
                "group": "example.com",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "scope": "Cluster",
                "versions": [
                    {"name": "v1", "served": true, "subresources": {"status": {}}},
                    {"name": "v2", "served": true},
                    {"name": "v0", "served": false}
                ]
            }
        });
        let mut r = Registry::builtin();
        r.register_crd(&crd).unwrap();
        let w = r.find("example.com", "v1", "widgets").unwrap();
        assert!(!w.namespaced);
        assert_eq!(w.status, StatusMode::Custom);
        assert_eq!(
            r.find("example.com", "v2", "widgets").unwrap().status,
            StatusMode::None
        );
        assert!(r.find("example.com", "v0", "widgets").is_none());
        assert!(r
            .groups()
            .contains(&("example.com".into(), vec!["v1".into(), "v2".into()])));
        r.unregister_crd(&crd);
        assert!(r.find("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn malformed_crds_are_rejected_with_reason() {
        let mut r = Registry::builtin();
        assert!(r.register_crd(&json!({})).unwrap_err().contains("spec"));
        let no_scope = json!({"spec": {"group": "g", "names": {"plural": "p", "kind": "K"},
            "versions": [{"name": "v1"}]}});
        assert!(r.register_crd(&no_scope).unwrap_err().contains("scope"));
    }

    #[test]
    fn discovery_documents_list_status_subresources() {
        let r = Registry::builtin();
        let l = api_resource_list(&r, "", "v1");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"services"));
        assert!(names.contains(&"services/status"));
        assert!(!names.contains(&"configmaps/status"));
        let groups = api_group_list(&r);
        assert!(groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "metallb.io"
                && g["preferredVersion"]["groupVersion"] == "metallb.io/v1beta1"));
    }
}

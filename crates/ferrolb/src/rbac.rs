//! The Kubernetes API permissions each component needs, in one place.
//!
//! This table is the single source of truth for `deploy/rbac.yaml`: a test renders it and
//! fails when the checked-in manifest differs (regenerate with
//! `FERROLB_BLESS=1 cargo test --test it deploy`). Whoever adds an API call to the controller or
//! the speaker adds the permission here, and nowhere else; whoever removes the last use of
//! one removes it here, so the deployed Roles never grant more than the code uses.

use std::fmt::Write as _;

use crate::speaker::heartbeat::KEY_SECRET;

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A ClusterRole (objects in every namespace, or cluster-scoped kinds).
    Cluster,
    /// A Role in ferrolb's own namespace (`metallb-system`).
    Namespace,
}

/// One RBAC policy rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub scope: Scope,
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Only these objects (`resourceNames`); empty: every object. Kubernetes cannot restrict
    /// `create`, `list`, `watch` or `deletecollection` by name (the name is not part of the
    /// request it authorizes), so a rule with names grants only `get`, `update`, `patch`,
    /// `delete`.
    pub resource_names: &'static [&'static str],
    /// Why the component needs it (rendered as a comment).
    pub why: &'static str,
    /// Verbs of this rule that a short end-to-end run (allocate, fail over, hand over,
    /// delete, restart) may not call, as a named constant whose comment says why. The
    /// least-privilege test accepts these unused, and no other.
    pub exceptions: &'static [&'static str],
}

/// Informers (kube-runtime watchers and reflectors) list, then watch; nothing reads a
/// single object of these kinds.
const WATCH: &[&str] = &["list", "watch"];
/// Both components publish each Event through a fresh kube `Recorder` (its series cache
/// would only hold memory: Events are emitted on change), which therefore always creates
/// and never patches a series.
const EVENTS: &[&str] = &["create"];

/// What `ferrolb controller` calls.
pub const CONTROLLER: &[Rule] = &[
    Rule {
        scope: Scope::Cluster,
        api_group: "",
        resources: &["services", "namespaces"],
        verbs: WATCH,
        resource_names: &[],
        why: "watch LoadBalancer Services; namespace labels select pools",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "",
        resources: &["services/status"],
        verbs: &["patch"],
        resource_names: &[],
        why: "write status.loadBalancer.ingress and annotation metallb.io/ip-allocated-from-pool",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: EVENTS,
        resource_names: &[],
        why: "IPAllocated / AllocationFailed / ClearAssignment Events",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "metallb.io",
        resources: &["ipaddresspools", "l2advertisements"],
        verbs: WATCH,
        resource_names: &[],
        why: "the configuration",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "metallb.io",
        resources: &["ipaddresspools/status"],
        verbs: &["patch"],
        resource_names: &[],
        why: "pool usage counters and validity conditions",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "patch"],
        resource_names: &[],
        why: "leader election (Lease ferrolb-controller; its name is a flag, so not restricted by resourceNames): read, create, renew and release by patch",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "",
        resources: &["secrets"],
        verbs: &["get"],
        resource_names: &[KEY_SECRET],
        why: "read the speakers' heartbeat key Secret (only that Secret)",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "",
        resources: &["secrets"],
        verbs: &["create"],
        resource_names: &[],
        why: "create the heartbeat key Secret when absent (create cannot be restricted by resourceNames: the name is in the body, not the request path)",
        exceptions: &[],
    },
];

/// What `ferrolb speaker` calls.
pub const SPEAKER: &[Rule] = &[
    Rule {
        scope: Scope::Cluster,
        api_group: "",
        resources: &["services", "nodes"],
        verbs: WATCH,
        resource_names: &[],
        why: "allocated IPs; node labels, conditions and exclusion label",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: WATCH,
        resource_names: &[],
        why: "serving endpoints (externalTrafficPolicy: Local); the slices of a Service turned LoadBalancer, listed by its name label",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: EVENTS,
        resource_names: &[],
        why: "nodeAssigned / announceFailed / duplicate-responder Events",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "metallb.io",
        resources: &["ipaddresspools", "l2advertisements"],
        verbs: WATCH,
        resource_names: &[],
        why: "the configuration",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "metallb.io",
        resources: &["servicel2statuses"],
        verbs: &["list", "watch", "create", "delete"],
        resource_names: &[],
        why: "ServiceL2Status: who announces which Service (created and deleted by the owner)",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "metallb.io",
        resources: &["servicel2statuses/status"],
        verbs: &["patch"],
        resource_names: &[],
        why: "ServiceL2Status status (node, interfaces)",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        resource_names: &[],
        why: "own node Lease ferrolb-speaker-<node> (get, create, patch), the peers' (list, watch, get) and the per-IP owner records ferrolb-ip-<ip> (create, update, delete)",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "",
        resources: &["secrets"],
        verbs: &["get"],
        resource_names: &[KEY_SECRET],
        why: "the heartbeat HMAC key (only that Secret; without it heartbeats never start)",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Namespace,
        api_group: "",
        resources: &["configmaps"],
        verbs: &["create", "patch"],
        resource_names: &[],
        why: "own state ConfigMap ferrolb-speaker-<node>, what `ferrolb explain` shows (create cannot be restricted by resourceNames, and the node names are not known in advance)",
        exceptions: &[],
    },
];

/// What `ferrolb explain` reads (get and list only). Shipped as the optional ClusterRole
/// `ferrolb-explain` ([`render_explain`], `deploy/explain/clusterrole.yaml`): the
/// namespaced kinds are read in ferrolb's namespace only, but a ClusterRole bound with a
/// ClusterRoleBinding is the simplest thing to hand a user.
pub const EXPLAIN: &[Rule] = &[
    Rule {
        scope: Scope::Cluster,
        api_group: "",
        resources: &["services", "nodes"],
        verbs: &["list"],
        resource_names: &[],
        why: "LoadBalancer Services and their IPs; node labels and conditions",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: &["list"],
        resource_names: &[],
        why: "ready and serving endpoints per node (externalTrafficPolicy: Local)",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["list"],
        resource_names: &[],
        why: "the controller's Events: why a Service has no IP",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "metallb.io",
        resources: &["ipaddresspools", "l2advertisements", "servicel2statuses"],
        verbs: &["list"],
        resource_names: &[],
        why: "the configuration (in ferrolb's namespace) and who announces what",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["list"],
        resource_names: &[],
        why: "speaker node Leases, per-IP owner records (in ferrolb's namespace)",
        exceptions: &[],
    },
    Rule {
        scope: Scope::Cluster,
        api_group: "",
        resources: &["configmaps"],
        verbs: &["list"],
        resource_names: &[],
        why: "the speakers' published state (ConfigMaps ferrolb-speaker-<node> in ferrolb's namespace)",
        exceptions: &[],
    },
];

/// Name of the optional ClusterRole for `ferrolb explain`.
pub const EXPLAIN_ROLE: &str = "ferrolb-explain";

/// The optional ClusterRole of `ferrolb explain` (bind it yourself, see the comment).
pub fn render_explain() -> String {
    let mut out = format!(
        "# GENERATED from crates/ferrolb/src/rbac.rs — do not edit; regenerate with\n\
         #   FERROLB_BLESS=1 cargo test --test it deploy\n\
         # Optional: what `ferrolb explain` reads (list only, nothing is written).\n\
         # Not part of deploy/kustomization.yaml. Apply it, then bind it to a user or group:\n\
         #   kubectl apply -f deploy/explain/clusterrole.yaml\n\
         #   kubectl create clusterrolebinding {EXPLAIN_ROLE}-alice --clusterrole={EXPLAIN_ROLE} --user=alice\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {EXPLAIN_ROLE}\n  labels:\n    app.kubernetes.io/part-of: ferrolb\nrules:\n"
    );
    for r in EXPLAIN {
        let _ = write!(
            out,
            "  # {}\n  - apiGroups: [\"{}\"]\n    resources: [{}]\n    verbs: [{}]\n",
            r.why,
            r.api_group,
            quoted(r.resources),
            quoted(r.verbs)
        );
    }
    out
}

/// Renders the ServiceAccounts, (Cluster)Roles and bindings as multi-document YAML.
pub fn render(namespace: &str) -> String {
    let mut out = String::from(
        "# GENERATED from crates/ferrolb/src/rbac.rs — do not edit; regenerate with\n\
         #   FERROLB_BLESS=1 cargo test --test it deploy\n",
    );
    for (component, rules) in [("controller", CONTROLLER), ("speaker", SPEAKER)] {
        let name = format!("ferrolb-{component}");
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        );
        for scope in [Scope::Cluster, Scope::Namespace] {
            let (kind, binding, meta) = match scope {
                Scope::Cluster => (
                    "ClusterRole",
                    "ClusterRoleBinding",
                    format!("  name: {namespace}:{name}\n"),
                ),
                Scope::Namespace => (
                    "Role",
                    "RoleBinding",
                    format!("  name: {name}\n  namespace: {namespace}\n"),
                ),
            };
            let _ = write!(
                out,
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n{meta}rules:\n"
            );
            for r in rules.iter().filter(|r| r.scope == scope) {
                let _ = write!(
                    out,
                    "  # {}\n  - apiGroups: [\"{}\"]\n    resources: [{}]\n",
                    r.why,
                    r.api_group,
                    quoted(r.resources),
                );
                if !r.resource_names.is_empty() {
                    let _ = writeln!(out, "    resourceNames: [{}]", quoted(r.resource_names));
                }
                let _ = writeln!(out, "    verbs: [{}]", quoted(r.verbs));
            }
            let _ = write!(
                out,
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: {binding}\nmetadata:\n{meta}\
                 roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: {kind}\n  name: {}\n\
                 subjects:\n  - kind: ServiceAccount\n    name: {name}\n    namespace: {namespace}\n",
                meta.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("  name: ")
            );
        }
    }
    out
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when `component`'s rules allow `verb` on `resource` of `api_group` in `scope`, for
/// every object (rules restricted by `resourceNames` do not count).
pub fn allows(rules: &[Rule], scope: Scope, api_group: &str, resource: &str, verb: &str) -> bool {
    allows_named(rules, scope, api_group, resource, verb, None)
}

/// Like [`allows`], for the object `name` (`None`: a request without a name, such as list,
/// watch or create).
pub fn allows_named(
    rules: &[Rule],
    scope: Scope,
    api_group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
) -> bool {
    rules.iter().any(|r| {
        (r.scope == scope || r.scope == Scope::Cluster)
            && r.api_group == api_group
            && r.resources.contains(&resource)
            && r.verbs.contains(&verb)
            && (r.resource_names.is_empty() || name.is_some_and(|n| r.resource_names.contains(&n)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_privilege_shape() {
        // The speaker never writes Services; the controller writes Services only through the
        // status subresource.
        for verb in ["create", "update", "patch", "delete"] {
            assert!(!allows(SPEAKER, Scope::Cluster, "", "services", verb));
            assert!(!allows(
                SPEAKER,
                Scope::Cluster,
                "",
                "services/status",
                verb
            ));
        }
        // Secrets: both read the heartbeat key and no other Secret, nowhere else, and never
        // list or watch them; only the controller creates (the key, when absent).
        for rules in [CONTROLLER, SPEAKER] {
            let secret =
                |verb, name| allows_named(rules, Scope::Namespace, "", "secrets", verb, name);
            assert!(secret("get", Some(KEY_SECRET)));
            assert!(!secret("get", Some("other")));
            assert!(!secret("get", None));
            for verb in ["list", "watch", "update", "patch", "delete"] {
                assert!(
                    !secret(verb, None) && !secret(verb, Some(KEY_SECRET)),
                    "{verb}"
                );
            }
            assert!(!allows_named(
                rules,
                Scope::Cluster,
                "",
                "secrets",
                "get",
                Some(KEY_SECRET)
            ));
        }
        assert!(allows(
            CONTROLLER,
            Scope::Namespace,
            "",
            "secrets",
            "create"
        ));
        assert!(!allows(SPEAKER, Scope::Namespace, "", "secrets", "create"));
        // Names are only used where Kubernetes honours them.
        for r in CONTROLLER.iter().chain(SPEAKER) {
            if !r.resource_names.is_empty() {
                assert!(
                    r.verbs
                        .iter()
                        .all(|v| ["get", "update", "patch", "delete"].contains(v)),
                    "{r:?}: resourceNames cannot restrict these verbs"
                );
            }
        }
        assert!(!allows(CONTROLLER, Scope::Cluster, "", "services", "patch"));
        // Nothing may delete Services or Nodes.
        for rules in [CONTROLLER, SPEAKER] {
            assert!(!allows(rules, Scope::Cluster, "", "services", "delete"));
            assert!(!allows(rules, Scope::Cluster, "", "nodes", "update"));
        }
        assert!(allows(
            CONTROLLER,
            Scope::Cluster,
            "",
            "services/status",
            "patch"
        ));
    }

    #[test]
    fn render_parses_as_yaml_documents() {
        let y = render("metallb-system");
        let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&y)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_norway::Value| !v.is_null())
            .collect();
        // 2 components × (ServiceAccount + 2 roles + 2 bindings)
        assert_eq!(docs.len(), 10);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "ClusterRoleBinding").count(),
            2
        );
        for d in &docs {
            if d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding" {
                assert_eq!(d["roleRef"]["name"], d["metadata"]["name"]);
            }
        }
    }
}

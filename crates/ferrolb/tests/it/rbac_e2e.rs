//! Least privilege, both ways, with the real components in the lab (root required, like
//! `e2e`; the scenarios share its lock).
//!
//! The lab's API server authorizes every request with the RBAC objects of
//! `deploy/ferrolb.yaml` and records it (user, verb, group, resource, subresource, namespace,
//! name, code). [`every_call_is_granted_and_every_grant_is_used`] runs a short scenario
//! (allocate, crash failover, graceful handover, delete, controller restart) and compares each
//! component's calls with its Roles: no call denied, and every verb of every rule called —
//! except the verbs a rule of `crates/ferrolb/src/rbac.rs` lists as `exceptions`, each
//! explained next to it. [`dropping_any_needed_rule_is_denied`] removes each rule in turn from
//! the deployed Roles, restarts the component and shows the denial in the record.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferrolb::rbac::{Rule, Scope, CONTROLLER, SPEAKER};
use ferrolb_lab::apiserver::audit::AuditEvent;
use ferrolb_lab::apiserver::authz::{Policy, PolicyRule, RequestAttributes};
use ferrolb_lab::harness::{
    rbac_documents, service_account_user, Lab, ServiceSpec, CONTROLLER_SA, DEPLOY_MANIFEST,
    SPEAKER_SA, SYSTEM_NAMESPACE,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::e2e::{
    apply_quickstart, dump, index_of, lab, quickstart_web, served, wait_heartbeats, wait_takeover,
};

/// A component: its ServiceAccount and its permission table.
struct Component {
    sa: &'static str,
    table: &'static [Rule],
}

const COMPONENTS: [Component; 2] = [
    Component {
        sa: CONTROLLER_SA,
        table: CONTROLLER,
    },
    Component {
        sa: SPEAKER_SA,
        table: SPEAKER,
    },
];

/// The attributes of a recorded resource request.
fn attrs(e: &AuditEvent) -> Option<RequestAttributes> {
    let o = e.object_ref.as_ref()?;
    Some(RequestAttributes {
        verb: e.verb.clone(),
        resource_request: true,
        api_group: o.api_group.clone(),
        api_version: o.api_version.clone(),
        resource: o.resource.clone(),
        subresource: o.subresource.clone(),
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        path: String::new(),
    })
}

fn describe(a: &RequestAttributes) -> String {
    let sub = if a.subresource.is_empty() {
        String::new()
    } else {
        format!("/{}", a.subresource)
    };
    format!(
        "{} {}/{}{sub} ns={:?} name={:?}",
        a.verb, a.api_group, a.resource, a.namespace, a.name
    )
}

/// One verb on one resource of one deployed rule: (scope, rule, verb, resource).
type Grant = (Scope, PolicyRule, String, String);

/// The deployed grants of `sa`: the rules of its ClusterRole and its Role in
/// deploy/ferrolb.yaml, one entry per verb and resource.
fn deployed_grants(sa: &str) -> Vec<Grant> {
    let docs = rbac_documents(DEPLOY_MANIFEST).unwrap();
    let of = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let policy = Policy::from_objects(
        of("Role"),
        of("ClusterRole"),
        of("RoleBinding"),
        of("ClusterRoleBinding"),
    );
    let mut out = Vec::new();
    let cluster = policy
        .cluster_roles
        .get(&format!("{SYSTEM_NAMESPACE}:{sa}"))
        .unwrap_or_else(|| panic!("ClusterRole of {sa} missing"));
    let ns = policy
        .roles
        .get(&(SYSTEM_NAMESPACE.to_string(), sa.to_string()))
        .unwrap_or_else(|| panic!("Role of {sa} missing"));
    for (scope, rules) in [(Scope::Cluster, cluster), (Scope::Namespace, ns)] {
        for r in rules {
            for verb in &r.verbs {
                for res in &r.resources {
                    out.push((scope, r.clone(), verb.clone(), res.clone()));
                }
            }
        }
    }
    out
}

/// True when the single grant allows the call.
fn grant_allows(g: &Grant, a: &RequestAttributes) -> bool {
    let (scope, rule, verb, resource) = g;
    let one = PolicyRule {
        verbs: vec![verb.clone()],
        resources: vec![resource.clone()],
        ..rule.clone()
    };
    (*scope == Scope::Cluster || a.namespace == SYSTEM_NAMESPACE) && one.allows(a)
}

/// The rule of the permission table a deployed grant comes from.
fn table_rule<'a>(table: &'a [Rule], g: &Grant) -> &'a Rule {
    let (scope, rule, _, resource) = g;
    table
        .iter()
        .find(|r| {
            r.scope == *scope
                && rule.api_groups == [r.api_group]
                && r.resources.contains(&resource.as_str())
                && rule.resource_names == r.resource_names
        })
        .unwrap_or_else(|| panic!("{g:?} is not in the permission table"))
}

/// Waits until the controller leads.
fn wait_leader(lab: &Lab, within: Duration) {
    let t = Instant::now();
    while ferrolb_lab::harness::metric_value(
        &lab.controller_metrics().unwrap_or_default(),
        "ferrolb_controller_leader",
    ) != Some(1.0)
    {
        assert!(t.elapsed() < within, "controller not leading{}", dump(lab));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Number of Leases whose name starts with `prefix` in the system namespace.
fn leases(lab: &Lab, prefix: &'static str) -> usize {
    let client = lab.client();
    lab.block_on(async move {
        Api::<Lease>::namespaced(client, SYSTEM_NAMESPACE)
            .list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|l| l.metadata.name.as_deref().unwrap_or("").starts_with(prefix))
                    .count()
            })
            .unwrap_or(usize::MAX)
    })
}

#[test]
fn every_call_is_granted_and_every_grant_is_used() {
    let Some((_g, mut lab)) = lab("every_call_is_granted", 3) else {
        return;
    };
    wait_heartbeats(&lab, Duration::from_secs(10));
    let ip = quickstart_web(&mut lab);
    let owner = served(&lab, ip, Duration::from_secs(15));
    // Crash failover, then the crashed speaker comes back.
    let idx = index_of(&owner);
    let t = lab.signal_speaker(idx, libc::SIGKILL).unwrap();
    let second = wait_takeover(
        &lab,
        ip,
        &owner,
        t,
        Duration::from_secs(8),
        Duration::from_millis(10),
        "crash",
    );
    lab.reap_speaker(idx, Duration::from_secs(2));
    lab.start_speaker(idx).unwrap();
    // Graceful handover, then back.
    let idx2 = index_of(&second);
    let t = lab.signal_speaker(idx2, libc::SIGTERM).unwrap();
    wait_takeover(
        &lab,
        ip,
        &second,
        t,
        Duration::from_secs(5),
        Duration::from_millis(10),
        "SIGTERM",
    );
    lab.reap_speaker(idx2, Duration::from_secs(3));
    lab.start_speaker(idx2).unwrap();
    // Deleting the Service: the owner withdraws and removes its records.
    lab.delete_service("default", "web").unwrap();
    let t = Instant::now();
    while leases(&lab, "ferrolb-ip-") != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "claim not removed{}",
            dump(&lab)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A controller restart: the leader releases its Lease, the next one takes it.
    wait_leader(&lab, Duration::from_secs(10));
    lab.stop_controller(libc::SIGTERM);
    lab.start_controller().unwrap();
    wait_leader(&lab, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));

    // A newcomer's kubectl, with the lab's admin kubeconfig, asks the same server.
    kubectl_can_i(&lab);

    let events = lab.audit_events().unwrap();
    let mut report = String::new();
    for c in COMPONENTS {
        let user = service_account_user(c.sa);
        let calls: Vec<(RequestAttributes, u16)> = events
            .iter()
            // The component's own calls (not kubectl's impersonating it).
            .filter(|e| e.user.username == user && e.impersonated_user.is_none())
            .filter_map(|e| Some((attrs(e)?, e.response_status.code)))
            .collect();
        assert!(!calls.is_empty(), "{user} made no calls");
        let grants = deployed_grants(c.sa);
        // Every call granted: nothing denied, and each call allowed by one deployed grant.
        let denied: BTreeSet<String> = calls
            .iter()
            .filter(|(a, code)| *code == 403 || !grants.iter().any(|g| grant_allows(g, a)))
            .map(|(a, code)| format!("{} -> {code}", describe(a)))
            .collect();
        if !denied.is_empty() {
            report.push_str(&format!(
                "\n{user}: calls not granted:\n  {}",
                denied.iter().cloned().collect::<Vec<_>>().join("\n  ")
            ));
        }
        // Every grant used, unless the permission table explains why not.
        let mut unused = Vec::new();
        for g in &grants {
            let used = calls.iter().any(|(a, _)| grant_allows(g, a));
            let excused = table_rule(c.table, g).exceptions.contains(&g.2.as_str());
            if used && excused {
                eprintln!(
                    "{user}: {} {} is listed as an exception but was used",
                    g.2, g.3
                );
            }
            if !used && !excused {
                unused.push(format!("{:?} {} {:?} {}", g.0, g.2, g.1.api_groups, g.3));
            }
        }
        if !unused.is_empty() {
            report.push_str(&format!(
                "\n{user}: granted but never called:\n  {}",
                unused.join("\n  ")
            ));
        }
        let distinct: BTreeSet<String> = calls.iter().map(|(a, _)| describe(a)).collect();
        eprintln!("{user}: {} calls, {} distinct", calls.len(), distinct.len());
    }
    assert!(
        report.is_empty(),
        "least privilege violated:{report}{}",
        dump(&lab)
    );
}

/// `kubectl auth can-i --as=<speaker>` from the control-plane namespace answers by the deployed
/// Roles (when kubectl is installed; under `CI=true` it must be).
fn kubectl_can_i(lab: &Lab) {
    let present = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl missing; CI=true, so this is a failure"
        );
        eprintln!("SKIPPED kubectl auth can-i: `kubectl` is not available");
        return;
    }
    let kc = lab.kubeconfig.display().to_string();
    let speaker = format!("--as={}", service_account_user(SPEAKER_SA));
    for (args, want) in [
        (
            vec![
                "get",
                "secret/ferrolb-heartbeat-key",
                "-n",
                SYSTEM_NAMESPACE,
            ],
            "yes",
        ),
        (vec!["list", "secrets", "-n", SYSTEM_NAMESPACE], "no"),
        (vec!["patch", "services/status", "-n", "default"], "no"),
    ] {
        let mut argv = vec!["kubectl", "--kubeconfig", &kc, "--cache-dir"];
        let cache = lab.dir.join("kubectl-cache").display().to_string();
        argv.push(&cache);
        argv.extend(["auth", "can-i", &speaker]);
        argv.extend(args.iter().copied());
        let out = lab.ctl_ns().output(&argv).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The deployed (Cluster)Role a rule of `sa`'s table lives in, and that role without it.
fn role_without(sa: &str, rule: &Rule) -> (serde_json::Value, serde_json::Value) {
    let (kind, name) = match rule.scope {
        Scope::Cluster => ("ClusterRole", format!("{SYSTEM_NAMESPACE}:{sa}")),
        Scope::Namespace => ("Role", sa.to_string()),
    };
    let role = rbac_documents(DEPLOY_MANIFEST)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{kind} {name} missing from deploy/ferrolb.yaml"));
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let is_it = |r: &serde_json::Value| {
        strs(&r["apiGroups"]) == [rule.api_group]
            && strs(&r["resources"]) == rule.resources
            && strs(&r["verbs"]) == rule.verbs
            && strs(&r["resourceNames"]) == rule.resource_names
    };
    let mut without = role.clone();
    let rules = without["rules"].as_array_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| !is_it(r));
    assert_eq!(
        rules.len() + 1,
        before,
        "{rule:?} not found once in {kind} {name}"
    );
    (role, without)
}

/// True when `e` is a denial of `user` that `rule` would have allowed.
fn denied_by_missing(e: &AuditEvent, user: &str, rule: &Rule) -> bool {
    let Some(a) = attrs(e) else { return false };
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    e.effective_user() == user
        && e.response_status.code == 403
        && a.api_group == rule.api_group
        && rule.resources.contains(&combined.as_str())
        && rule.verbs.contains(&a.verb.as_str())
        && (rule.scope == Scope::Cluster || a.namespace == SYSTEM_NAMESPACE)
        && (rule.resource_names.is_empty() || rule.resource_names.contains(&a.name.as_str()))
}

fn restart_speakers(lab: &mut Lab) {
    for i in 0..lab.cfg.nodes {
        lab.signal_speaker(i, libc::SIGKILL);
        lab.reap_speaker(i, Duration::from_secs(2));
        lab.start_speaker(i).unwrap();
    }
}

fn restart_controller(lab: &mut Lab) {
    lab.stop_controller(libc::SIGKILL);
    lab.start_controller().unwrap();
}

#[test]
fn dropping_any_needed_rule_is_denied() {
    let Some((_g, mut lab)) = lab("dropping_any_needed_rule", 2) else {
        return;
    };
    wait_heartbeats(&lab, Duration::from_secs(10));
    apply_quickstart(&lab);
    let started = Instant::now();
    // Speakers' rules first, while the controller allocates; the controller's Secret
    // creation last (it needs the key deleted).
    let mut cases: Vec<(&Component, &Rule)> = Vec::new();
    for c in [&COMPONENTS[1], &COMPONENTS[0]] {
        for r in c.table {
            cases.push((c, r));
        }
    }
    let is_key_create = |r: &Rule| r.resources == ["secrets"] && r.verbs == ["create"];
    cases.sort_by_key(|(_, r)| is_key_create(r));
    let mut failures = Vec::new();
    for (n, (c, rule)) in cases.iter().enumerate() {
        let user = service_account_user(c.sa);
        let (role, without) = role_without(c.sa, rule);
        let seen = lab.audit_events().unwrap().len();
        lab.apply_values(vec![without]).unwrap();
        if is_key_create(rule) {
            let client = lab.client();
            lab.block_on(async move {
                Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, SYSTEM_NAMESPACE)
                    .delete("ferrolb-heartbeat-key", &Default::default())
                    .await
                    .map(|_| ())
            })
            .unwrap();
        }
        // Running watches keep their permission (as in Kubernetes): restart the component.
        if c.sa == CONTROLLER_SA {
            restart_controller(&mut lab);
        } else {
            restart_speakers(&mut lab);
        }
        // What the component does with a new Service: allocate, write statuses and Events,
        // claim and announce.
        lab.create_service(&ServiceSpec::new(&format!("drop{n}")))
            .unwrap();
        let t = Instant::now();
        let denial = loop {
            let events = lab.audit_events().unwrap();
            if let Some(e) = events[seen..]
                .iter()
                .find(|e| denied_by_missing(e, &user, rule))
            {
                break Some(attrs(e).map(|a| describe(&a)).unwrap_or_default());
            }
            if t.elapsed() > Duration::from_secs(10) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        match denial {
            Some(d) => eprintln!(
                "without {:?} {:?} of {}: denied {d} after {:?}",
                rule.resources,
                rule.verbs,
                c.sa,
                t.elapsed()
            ),
            None => failures.push(format!(
                "{}: {:?} {:?} {:?}",
                c.sa, rule.scope, rule.resources, rule.verbs
            )),
        }
        lab.apply_values(vec![role]).unwrap();
    }
    eprintln!(
        "{} rules dropped one at a time in {:?}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "rules the components never missed (not needed, or the scenario lacks their call):\n  {}{}",
        failures.join("\n  "),
        dump(&lab)
    );
}

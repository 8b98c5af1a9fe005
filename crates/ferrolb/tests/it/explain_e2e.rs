//! `ferrolb explain` against the lab (root required, like `e2e`; the scenarios share its
//! lock): the real controller and speakers, the real binary, the strict API server.
//!
//! [`explain_gives_every_static_reason_in_one_cluster`] sets many situations up in one
//! 4-node cluster at once (excluded node, NetworkUnavailable node, node selector, interface
//! filter, Local Service, no endpoints, no advertisement, another class, pool exhausted, no
//! pool matching, requested IP taken, sharing rules, invalid and frozen pools) and checks
//! them all; it runs the
//! command as a ServiceAccount bound only to `deploy/explain/clusterrole.yaml` and
//! checks that the server refused none of its requests.
//! [`explain_gives_the_runtime_reasons`] covers what only running speakers tell: a
//! duplicate responder, a killed speaker, blocked heartbeats and the fencing they cause.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrolb_lab::harness::{api_url, node_name, service_account_user, Lab, ServiceSpec};
use serde_json::Value;

use crate::e2e::{
    apply_quickstart, dump, edit_pool, index_of, lab, pool_status, served, wait_heartbeats, write,
};

const EXPLAINER: &str = "explainer";

/// Runs `ferrolb explain --output json` (plus `args`) with `kubeconfig` from the control
/// host; returns the JSON, the exit status and stderr.
fn explain_json(lab: &Lab, kubeconfig: &Path, args: &[&str]) -> (Value, bool, String) {
    let out = explain_raw(lab, kubeconfig, &[&["--output", "json"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (v, out.status.success(), stderr)
}

fn explain_raw(lab: &Lab, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let kc = kubeconfig.display().to_string();
    let mut argv = vec![
        env!("CARGO_BIN_EXE_ferrolb"),
        "explain",
        "--kubeconfig",
        &kc,
        "--skew",
        "100ms",
    ];
    argv.extend_from_slice(args);
    lab.ctl_ns().output(&argv).unwrap()
}

fn explain_text(lab: &Lab, kubeconfig: &Path) -> String {
    String::from_utf8_lossy(&explain_raw(lab, kubeconfig, &[]).stdout).to_string()
}

fn service<'a>(e: &'a Value, name: &str) -> Option<&'a Value> {
    e["services"].as_array()?.iter().find(|s| s["name"] == name)
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

/// The reason code of `node` for the first IP of `svc` ("announces" when it does).
fn node_code<'a>(e: &'a Value, svc: &str, node: &str) -> &'a str {
    service(e, svc)
        .and_then(|s| s["ips"][0]["nodes"].as_array())
        .and_then(|ns| ns.iter().find(|n| n["node"] == node))
        .map_or("?", |n| {
            if n["announces"] == true {
                "announces"
            } else {
                code(&n["reason"])
            }
        })
}

fn node_notes(e: &Value, svc: &str, node: &str) -> Vec<String> {
    service(e, svc)
        .and_then(|s| s["ips"][0]["nodes"].as_array())
        .and_then(|ns| ns.iter().find(|n| n["node"] == node))
        .and_then(|n| n["notes"].as_array())
        .map(|a| a.iter().map(|w| code(w).to_string()).collect())
        .unwrap_or_default()
}

fn announcer(e: &Value, svc: &str) -> Option<String> {
    service(e, svc)?["ips"][0]["announcedBy"]["node"]
        .as_str()
        .map(str::to_string)
}

fn service_reason<'a>(e: &'a Value, svc: &str) -> &'a str {
    service(e, svc).map_or("?", |s| code(&s["reason"]))
}

fn speaker_problems(e: &Value, node: &str) -> Vec<String> {
    e["speakers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["node"] == node))
        .and_then(|s| s["problems"].as_array())
        .map(|a| a.iter().map(|w| code(w).to_string()).collect())
        .unwrap_or_default()
}

/// Polls the explanation until `check` finds nothing wrong; panics with the last text
/// output, the mismatches and the logs after `within`.
fn until_explained(
    lab: &Lab,
    kubeconfig: &Path,
    within: Duration,
    check: impl Fn(&Value) -> Vec<String>,
) -> Value {
    let t = Instant::now();
    loop {
        let (e, ok, stderr) = explain_json(lab, kubeconfig, &[]);
        assert!(ok, "ferrolb explain failed: {stderr}");
        let wrong = check(&e);
        if wrong.is_empty() {
            return e;
        }
        if t.elapsed() > within {
            panic!(
                "explanation still wrong after {within:?}:\n  {}\n{}{}",
                wrong.join("\n  "),
                explain_text(lab, kubeconfig),
                dump(lab)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn expect(wrong: &mut Vec<String>, what: &str, have: &str, want: &[&str]) {
    if !want.contains(&have) {
        wrong.push(format!("{what}: {have:?}, want one of {want:?}"));
    }
}

/// A kubeconfig of the ServiceAccount `explainer`, bound only to the shipped ClusterRole.
fn explainer_kubeconfig(lab: &Lab) -> PathBuf {
    let role = std::fs::read_to_string(
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("deploy/explain/clusterrole.yaml"),
    )
    .unwrap();
    let binding = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {EXPLAINER}, namespace: metallb-system}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: ferrolb-explain-test}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {}}}\n\
         subjects:\n- {{kind: ServiceAccount, name: {EXPLAINER}, namespace: metallb-system}}\n",
        ferrolb::rbac::EXPLAIN_ROLE
    );
    lab.apply_file(&write(lab, "explain-role.yaml", &role))
        .unwrap();
    lab.apply_file(&write(lab, "explain-binding.yaml", &binding))
        .unwrap();
    let token = lab.service_account_token(EXPLAINER).unwrap();
    let pki = ferrolb_lab::apiserver::tls::Pki::load_or_create(&lab.dir.join("pki"), &[]).unwrap();
    write(
        lab,
        "kubeconfig-explainer",
        &ferrolb_lab::apiserver::kubeconfig_yaml(&api_url(), Some(&pki.ca_pem), &token),
    )
}

fn spec(name: &str, annotations: &[(&str, &str)]) -> ServiceSpec {
    let mut s = ServiceSpec::new(name);
    for (k, v) in annotations {
        s.annotations.insert(k.to_string(), v.to_string());
    }
    s
}

#[test]
fn explain_gives_every_static_reason_in_one_cluster() {
    let Some((_g, mut lab)) = lab("explain_static", 4) else {
        return;
    };
    let config = "\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: default, namespace: metallb-system}
spec: {addresses: [192.0.2.100-192.0.2.110]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: tiny, namespace: metallb-system}
spec: {addresses: [192.0.2.120/32], autoAssign: false}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: ifpool, namespace: metallb-system}
spec: {addresses: [192.0.2.130/32], autoAssign: false}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lonely, namespace: metallb-system}
spec: {addresses: [192.0.2.140/32], autoAssign: false}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: broken, namespace: metallb-system}
spec: {addresses: [\"fc00::9-fc00::1\"], autoAssign: false}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: main, namespace: metallb-system}
spec:
  ipAddressPools: [default, tiny]
  nodeSelectors:
  - matchExpressions:
    - {key: kubernetes.io/hostname, operator: In, values: [node-1, node-2, node-3]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: ifaces, namespace: metallb-system}
spec: {ipAddressPools: [ifpool], interfaces: [eth7]}
---
apiVersion: v1
kind: Node
metadata:
  name: node-3
  labels: {node.kubernetes.io/exclude-from-external-load-balancers: \"true\"}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/other
  ports: [{port: 80}]
";
    lab.apply_file(&write(&lab, "explain-config.yaml", config))
        .unwrap();
    // node-4: NetworkUnavailable=True
    let client = lab.client();
    lab.block_on(async move {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        nodes
            .patch_status(
                "node-4",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"status": {"conditions": [
                    {"type": "NetworkUnavailable", "status": "True", "reason": "Test",
                     "message": "set by the test"}]}})),
            )
            .await
    })
    .unwrap();

    // A pool that was valid, then edited into an invalid shape the CRD rules let through
    // (they cannot order IPv6 addresses): frozen.
    let freeze = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
                  metadata: {name: freeze, namespace: metallb-system}\n\
                  spec: {addresses: [192.0.2.160/32], autoAssign: false}\n";
    lab.apply_file(&write(&lab, "explain-freeze.yaml", freeze))
        .unwrap();
    let t = Instant::now();
    while pool_status(&lab, "freeze").last_valid_spec.is_none() {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", dump(&lab));
        std::thread::sleep(Duration::from_millis(100));
    }
    edit_pool(
        &lab,
        "freeze",
        serde_json::json!({"addresses": ["fc00::19-fc00::11"]}),
    )
    .unwrap();

    lab.create_service(&ServiceSpec::new("web")).unwrap();
    let web = lab
        .wait_for_ips("default", "web", 1, Duration::from_secs(20))
        .unwrap()[0];
    let mut local = ServiceSpec::new("local");
    local.external_traffic_policy = "Local";
    local.endpoint_nodes = Some(vec![0]);
    lab.create_service(&local).unwrap();
    let mut noeps = ServiceSpec::new("noeps");
    noeps.endpoint_nodes = Some(vec![]);
    lab.create_service(&noeps).unwrap();
    lab.create_service(&spec("ifsvc", &[("metallb.io/address-pool", "ifpool")]))
        .unwrap();
    lab.create_service(&spec("lonely", &[("metallb.io/address-pool", "lonely")]))
        .unwrap();
    lab.create_service(&spec("full1", &[("metallb.io/address-pool", "tiny")]))
        .unwrap();
    let shared = [
        ("metallb.io/allow-shared-ip", "a"),
        ("metallb.io/loadBalancerIPs", "192.0.2.105"),
    ];
    lab.create_service(&spec("sharea", &shared)).unwrap();
    for s in ["full1", "sharea"] {
        lab.wait_for_ips("default", s, 1, Duration::from_secs(20))
            .unwrap();
    }
    lab.create_service(&spec("full2", &[("metallb.io/address-pool", "tiny")]))
        .unwrap();
    lab.create_service(&spec("nopool", &[("metallb.io/address-pool", "broken")]))
        .unwrap();
    lab.create_service(&spec("frozen", &[("metallb.io/address-pool", "freeze")]))
        .unwrap();
    let web_s = web.to_string();
    lab.create_service(&spec("taken", &[("metallb.io/loadBalancerIPs", &web_s)]))
        .unwrap();
    lab.create_service(&spec(
        "shareb",
        &[
            ("metallb.io/allow-shared-ip", "b"),
            ("metallb.io/loadBalancerIPs", "192.0.2.105"),
        ],
    ))
    .unwrap();
    let owner = served(&lab, web, Duration::from_secs(15));

    let kc = explainer_kubeconfig(&lab);
    let started = lab.audit_events().unwrap().len();
    until_explained(&lab, &kc, Duration::from_secs(30), |e| {
        let mut w = Vec::new();
        // web: one of node-1/2 announces; node-3 excluded; node-4 not selected
        let a = announcer(e, "web").unwrap_or_default();
        expect(&mut w, "web announcer", &a, &[&owner]);
        let other = if a == "node-1" { "node-2" } else { "node-1" };
        expect(
            &mut w,
            "web other",
            node_code(e, "web", other),
            &["notOwner"],
        );
        expect(
            &mut w,
            "web node-3",
            node_code(e, "web", "node-3"),
            &["excludedFromLoadBalancers"],
        );
        expect(
            &mut w,
            "web node-4",
            node_code(e, "web", "node-4"),
            &["nodeSelector"],
        );
        let by = &service(e, "web").map_or(Value::Null, |s| s["ips"][0]["announcedBy"].clone());
        let mac = lab.node_mac(index_of(&owner));
        expect(
            &mut w,
            "web MAC",
            by["interfaces"][0]["mac"].as_str().unwrap_or(""),
            &[&mac],
        );
        expect(
            &mut w,
            "web interface",
            by["interfaces"][0]["name"].as_str().unwrap_or(""),
            &["eth0"],
        );
        if by["since"].as_str().is_none() {
            w.push("web: no since".into());
        }
        // Local with its only endpoint on node-1
        expect(
            &mut w,
            "local node-1",
            node_code(e, "local", "node-1"),
            &["announces"],
        );
        expect(
            &mut w,
            "local node-2",
            node_code(e, "local", "node-2"),
            &["noLocalEndpoint"],
        );
        // interface filter, on the pool whose advertisement selects every node
        let ia = announcer(e, "ifsvc").unwrap_or_default();
        expect(&mut w, "ifsvc announcer", &ia, &["node-1", "node-2"]);
        if !node_notes(e, "ifsvc", &ia).contains(&"interfaceFilter".to_string()) {
            w.push(format!("ifsvc: no interfaceFilter note on {ia}"));
        }
        expect(
            &mut w,
            "ifsvc",
            service_reason(e, "ifsvc"),
            &["interfaceFilter"],
        );
        expect(
            &mut w,
            "ifsvc node-4",
            node_code(e, "ifsvc", "node-4"),
            &["networkUnavailable"],
        );
        expect(
            &mut w,
            "ifsvc node-3",
            node_code(e, "ifsvc", "node-3"),
            &["excludedFromLoadBalancers"],
        );
        // nobody announces
        expect(
            &mut w,
            "noeps",
            service_reason(e, "noeps"),
            &["noServingEndpoints"],
        );
        expect(
            &mut w,
            "lonely",
            service_reason(e, "lonely"),
            &["noMatchingAdvertisement"],
        );
        expect(
            &mut w,
            "other",
            service_reason(e, "other"),
            &["loadBalancerClass"],
        );
        // no IP
        expect(
            &mut w,
            "full2",
            service_reason(e, "full2"),
            &["poolExhausted"],
        );
        expect(
            &mut w,
            "taken",
            service_reason(e, "taken"),
            &["requestedIPTaken"],
        );
        expect(
            &mut w,
            "shareb",
            service_reason(e, "shareb"),
            &["sharingRules"],
        );
        expect(
            &mut w,
            "nopool",
            service_reason(e, "nopool"),
            &["noPoolMatches"],
        );
        expect(
            &mut w,
            "frozen",
            service_reason(e, "frozen"),
            &["invalidPool"],
        );
        let problems = e["configProblems"].to_string();
        if !problems.contains("broken") {
            w.push(format!("no problem reported for pool broken: {problems}"));
        }
        w
    });

    // The text form says the same, in words.
    let text = explain_text(&lab, &kc);
    for want in [
        "Service default/web: announced",
        &format!("announced by {owner} on eth0 ("),
        "excludedFromLoadBalancers: Node node-3 has label node.kubernetes.io/exclude-from-external-load-balancers",
        "Service default/other: not handled by ferrolb",
        "Service default/full2: no external IP",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    // One Service, one namespace.
    let (one, ok, _) = explain_json(&lab, &kc, &["-n", "default", "web"]);
    assert!(ok);
    assert_eq!(one["services"].as_array().unwrap().len(), 1);
    let (_, ok, stderr) = explain_json(&lab, &kc, &["-n", "default", "nosuch"]);
    assert!(!ok && stderr.contains("no LoadBalancer Service default/nosuch"));
    eprintln!("{text}");

    // Least privilege: the explainer, bound only to the shipped ClusterRole, was refused nothing.
    let user = service_account_user(EXPLAINER);
    let calls: Vec<_> = lab.audit_events().unwrap()[started..]
        .iter()
        .filter(|e| e.user.username == user)
        .map(|e| {
            (
                e.verb.clone(),
                e.request_uri.clone(),
                e.response_status.code,
            )
        })
        .collect();
    assert!(calls.len() >= 8, "{calls:?}");
    let refused: Vec<_> = calls.iter().filter(|c| c.2 >= 400).collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert!(calls.iter().all(|c| c.0 == "list"), "{calls:?}");
}

#[test]
fn explain_gives_the_runtime_reasons() {
    let Some((_g, mut lab)) = lab("explain_runtime", 3) else {
        return;
    };
    apply_quickstart(&lab);
    wait_heartbeats(&lab, Duration::from_secs(20));
    lab.create_service(&ServiceSpec::new("web")).unwrap();
    let ip = lab
        .wait_for_ips("default", "web", 1, Duration::from_secs(20))
        .unwrap()[0];
    let owner = served(&lab, ip, Duration::from_secs(15));
    let kc = lab.kubeconfig.clone();

    // Another station claims the VIP: the owner reports a duplicate responder.
    let ip_s = ip.to_string();
    lab.client_ns()
        .sh(&format!(
            "ip addr add {ip_s}/32 dev eth0 && arping -U -c 2 -I eth0 {ip_s}; ip addr del {ip_s}/32 dev eth0"
        ))
        .unwrap();
    until_explained(&lab, &kc, Duration::from_secs(10), |e| {
        let d = &service(e, "web").map_or(Value::Null, |s| s["ips"][0]["duplicates"].clone());
        match d.as_array().and_then(|a| a.first()) {
            Some(d) if d["seenBy"] == owner.as_str() => vec![],
            _ => vec![format!("no duplicate seen by {owner}: {d}")],
        }
    });

    // Kill one other speaker; cut the heartbeats into the last one (it then hears nobody:
    // no quorum, fenced).
    let others: Vec<usize> = (0..3).filter(|i| node_name(*i) != owner).collect();
    let (dead, deaf) = (others[0], others[1]);
    lab.signal_speaker(dead, libc::SIGKILL);
    let rules = write(
        &lab,
        "deaf.nft",
        "table inet ferrolb_explain {\n  chain input {\n    type filter hook input priority 0;\n    udp dport 7947 drop\n  }\n}\n",
    );
    lab.node_ns(deaf)
        .run(&["nft", "-f", &rules.display().to_string()])
        .unwrap();
    let (dead, deaf) = (node_name(dead), node_name(deaf));
    until_explained(&lab, &kc, Duration::from_secs(20), |e| {
        let mut w = Vec::new();
        expect(
            &mut w,
            "announcer",
            &announcer(e, "web").unwrap_or_default(),
            &[&owner],
        );
        expect(
            &mut w,
            "dead node",
            node_code(e, "web", &dead),
            &["speakerNotRunning"],
        );
        expect(
            &mut w,
            "deaf node",
            node_code(e, "web", &deaf),
            &["speakerFenced"],
        );
        let p = speaker_problems(e, &deaf);
        if !p.contains(&"heartbeatsNotFlowing".to_string()) {
            w.push(format!("{deaf}: no heartbeatsNotFlowing in {p:?}"));
        }
        w
    });
    let text = explain_text(&lab, &kc);
    eprintln!("{text}");
    for want in [
        format!("{dead}: NOT RUNNING"),
        format!("{deaf}: running, FENCED"),
        format!("{deaf} hears no heartbeat from"),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
}

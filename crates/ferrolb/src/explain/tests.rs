//! One test per reason `ferrolb explain` gives, on hand-built cluster objects.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::core::{classify_allocation_failure, explain, Explanation, Inputs, Options};
use crate::allocator::{AllocError, ServiceKey};
use crate::speaker::state::{
    state_object, AnnouncedIp, Duplicate, Nic, SpeakerState, SPEAKER_STATE_ANNOTATION,
};

const NOW: i64 = 1_800_000_000;
const IP: &str = "192.0.2.10";

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn ts(secs_ago: i64) -> String {
    Timestamp::from_second(NOW - secs_ago).unwrap().to_string()
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
}

fn state(node: &str, peers: &[&str], announcing: &[&str]) -> SpeakerState {
    SpeakerState {
        may_announce: true,
        heartbeats: true,
        member_count: peers.len(),
        not_heard: vec![],
        interfaces: vec![Nic {
            name: "eth0".into(),
            mac: format!("02:00:00:00:00:0{}", &node[1..]),
        }],
        announcing: announcing
            .iter()
            .map(|ip| AnnouncedIp {
                ip: ip.to_string(),
                interfaces: vec![],
                since: ts(60),
            })
            .collect(),
        announcing_total: announcing.len(),
        duplicates: vec![],
        truncated: false,
    }
}

fn node_lease(node: &str, renewed_ago: i64, st: Option<&SpeakerState>) -> Value {
    let mut l = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": format!("ferrolb-speaker-{node}"), "namespace": "metallb-system"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 2,
                 "renewTime": Timestamp::from_second(NOW - renewed_ago).unwrap().strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string()}
    });
    if let Some(st) = st {
        l["metadata"]["annotations"] = json!({SPEAKER_STATE_ANNOTATION: st.to_json()});
    }
    l
}

fn claim(ip: &str, holder: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": format!("ferrolb-ip-{ip}"), "namespace": "metallb-system", "resourceVersion": "1"},
        "spec": {"holderIdentity": holder, "leaseTransitions": 1}})
}

fn service(name: &str, ip: Option<&str>) -> Value {
    let mut s = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
    if let Some(ip) = ip {
        s["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    s
}

fn slice(svc: &str, node: &str, ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": format!("{svc}-{node}"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": node, "conditions": {"ready": ready}}]})
}

fn pool(name: &str, cidr: &str) -> Value {
    json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": "metallb-system"}, "spec": {"addresses": [cidr]}})
}

fn ad(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec})
}

/// Three nodes, every speaker running and hearing the others, one pool, one
/// advertisement for everything, `default/web` on 192.0.2.10 announced by n1.
struct World {
    nodes: Vec<Value>,
    states: Vec<(String, i64, Option<SpeakerState>)>,
    services: Vec<Value>,
    slices: Vec<Value>,
    pools: Vec<Value>,
    ads: Vec<Value>,
    claims: Vec<Value>,
    events: Vec<Value>,
    /// Nodes whose speaker is of an earlier version: its state is an annotation of its
    /// node Lease, not a ConfigMap.
    legacy: Vec<String>,
    /// An annotation an earlier speaker left on a node's Lease (beside its ConfigMap).
    leftover: Vec<(String, SpeakerState)>,
}

impl World {
    fn new() -> Self {
        World {
            nodes: ["n1", "n2", "n3"].iter().map(|n| node(n)).collect(),
            states: vec![
                ("n1".into(), 0, Some(state("n1", &["n2", "n3"], &[IP]))),
                ("n2".into(), 0, Some(state("n2", &["n1", "n3"], &[]))),
                ("n3".into(), 0, Some(state("n3", &["n1", "n2"], &[]))),
            ],
            services: vec![service("web", Some(IP))],
            slices: vec![slice("web", "n1", true)],
            pools: vec![pool("default", "192.0.2.0/24")],
            ads: vec![ad("all", json!({}))],
            claims: vec![claim(IP, "n1")],
            events: vec![],
            legacy: vec![],
            leftover: vec![],
        }
    }

    fn state_mut(&mut self, node: &str) -> &mut SpeakerState {
        self.states
            .iter_mut()
            .find(|s| s.0 == node)
            .and_then(|s| s.2.as_mut())
            .unwrap()
    }

    fn explain(&self) -> Explanation {
        self.explain_with(Options::default())
    }

    fn explain_with(&self, mut opts: Options) -> Explanation {
        opts.skew = Duration::from_secs(1);
        let inputs = Inputs {
            services: self.services.iter().cloned().map(from).collect(),
            slices: self.slices.iter().cloned().map(from).collect(),
            nodes: self.nodes.iter().cloned().map(from).collect(),
            pools: self.pools.iter().cloned().map(from).collect(),
            ads: self.ads.iter().cloned().map(from).collect(),
            statuses: vec![],
            leases: self
                .states
                .iter()
                .map(|(n, ago, st)| {
                    let leftover = self.leftover.iter().find(|l| &l.0 == n).map(|l| &l.1);
                    let on_lease = st.as_ref().filter(|_| self.legacy.contains(n));
                    from(node_lease(n, *ago, on_lease.or(leftover)))
                })
                .chain(self.claims.iter().cloned().map(from))
                .collect(),
            states: self
                .states
                .iter()
                .filter(|(n, _, _)| !self.legacy.contains(n))
                .filter_map(|(n, _, st)| Some(state_object(n, &st.as_ref()?.to_json(), None)))
                .collect(),
            events: self.events.iter().cloned().map(from).collect(),
        };
        explain(&inputs, &opts, Timestamp::from_second(NOW).unwrap())
    }
}

/// (code of the IP's reason, or "announced by <node>"; node → reason code) for `svc`.
fn verdicts(e: &Explanation, svc: &str) -> (String, Vec<(String, String)>) {
    let s = e.services.iter().find(|s| s.name == svc).unwrap();
    let ip = &s.ips[0];
    let head = match &ip.announced_by {
        Some(a) => format!("announced by {}", a.node),
        None => ip.reason.as_ref().unwrap().code.clone(),
    };
    let nodes = ip
        .nodes
        .iter()
        .map(|n| {
            (
                n.node.clone(),
                n.reason
                    .as_ref()
                    .map_or("announces".to_string(), |r| r.code.clone()),
            )
        })
        .collect();
    (head, nodes)
}

fn node_code(e: &Explanation, svc: &str, node: &str) -> String {
    verdicts(e, svc)
        .1
        .into_iter()
        .find(|(n, _)| n == node)
        .unwrap()
        .1
}

fn notes(e: &Explanation, svc: &str, node: &str) -> Vec<String> {
    let s = e.services.iter().find(|s| s.name == svc).unwrap();
    s.ips[0]
        .nodes
        .iter()
        .find(|n| n.node == node)
        .unwrap()
        .notes
        .iter()
        .map(|n| n.code.clone())
        .collect()
}

#[test]
fn announced_ip_names_its_pool_node_interface_mac_and_since() {
    let e = World::new().explain();
    let s = &e.services[0];
    assert_eq!(s.state, "announced");
    let ip = &s.ips[0];
    assert_eq!(ip.pool.as_deref(), Some("default"));
    let a = ip.announced_by.as_ref().unwrap();
    assert_eq!(a.node, "n1");
    assert_eq!(a.interfaces[0].name, "eth0");
    assert_eq!(a.interfaces[0].mac.as_deref(), Some("02:00:00:00:00:01"));
    assert_eq!(a.since.as_deref(), Some(ts(60).as_str()));
    assert_eq!(node_code(&e, "web", "n2"), "notOwner");
    assert_eq!(node_code(&e, "web", "n3"), "notOwner");
    assert!(e
        .speakers
        .iter()
        .all(|s| s.running && s.problems.is_empty()));
}

/// A speaker announcing more IPs than its state lists: the announcer of an unlisted IP is
/// its owner-record holder, and its interface comes from the filter.
#[test]
fn announcer_of_an_ip_the_state_does_not_list() {
    let mut w = World::new();
    let st = w.state_mut("n1");
    st.announcing.clear();
    st.announcing_total = 1_000;
    let e = w.explain();
    let a = e.services[0].ips[0].announced_by.as_ref().unwrap();
    assert_eq!(a.node, "n1");
    assert_eq!(node_code(&e, "web", "n2"), "notOwner");
    // a state that lists every IP and not this one: n1 does not answer for it
    w.state_mut("n1").announcing_total = 0;
    assert!(w.explain().services[0].ips[0].announced_by.is_none());
}

#[test]
fn excluded_node() {
    let mut w = World::new();
    w.nodes[2]["metadata"]["labels"]["node.kubernetes.io/exclude-from-external-load-balancers"] =
        json!("");
    assert_eq!(
        node_code(&w.explain(), "web", "n3"),
        "excludedFromLoadBalancers"
    );
    // honoured unless the speakers ignore it
    let mut o = Options::default();
    o.election.ignore_exclude_lb = true;
    assert_eq!(node_code(&w.explain_with(o), "web", "n3"), "notOwner");
}

#[test]
fn network_unavailable_node() {
    let mut w = World::new();
    w.nodes[1]["status"] =
        json!({"conditions": [{"type": "NetworkUnavailable", "status": "True"}]});
    assert_eq!(node_code(&w.explain(), "web", "n2"), "networkUnavailable");
}

#[test]
fn node_selector_leaves_a_node_out() {
    let mut w = World::new();
    w.ads = vec![ad(
        "some",
        json!({"nodeSelectors": [{"matchExpressions": [{"key": "kubernetes.io/hostname",
            "operator": "In", "values": ["n1", "n3"]}]}]}),
    )];
    let e = w.explain();
    assert_eq!(node_code(&e, "web", "n2"), "nodeSelector");
    assert_eq!(node_code(&e, "web", "n3"), "notOwner");
}

#[test]
fn no_advertisement_for_the_pool() {
    let mut w = World::new();
    w.pools.push(pool("other", "198.51.100.0/24"));
    w.ads = vec![ad("other-only", json!({"ipAddressPools": ["other"]}))];
    w.state_mut("n1").announcing.clear();
    let e = w.explain();
    let (head, nodes) = verdicts(&e, "web");
    assert_eq!(head, "noMatchingAdvertisement");
    assert!(nodes.iter().all(|(_, c)| c == "noMatchingAdvertisement"));
    assert_eq!(e.services[0].state, "notAnnounced");
}

#[test]
fn local_policy_without_a_local_endpoint() {
    let mut w = World::new();
    w.services[0]["spec"]["externalTrafficPolicy"] = json!("Local");
    w.slices.push(slice("web", "n3", false)); // not ready: does not count
    let e = w.explain();
    assert_eq!(node_code(&e, "web", "n2"), "noLocalEndpoint");
    assert_eq!(node_code(&e, "web", "n3"), "noLocalEndpoint");
    assert_eq!(node_code(&e, "web", "n1"), "announces");
}

#[test]
fn no_serving_endpoint_anywhere() {
    let mut w = World::new();
    w.slices = vec![slice("web", "n1", false)];
    w.state_mut("n1").announcing.clear();
    let (head, _) = verdicts(&w.explain(), "web");
    assert_eq!(head, "noServingEndpoints");
}

#[test]
fn interface_filter_matching_no_interface() {
    let mut w = World::new();
    w.ads = vec![ad("eth9-only", json!({"interfaces": ["eth9"]}))];
    w.state_mut("n1").announcing[0].interfaces = vec!["eth9".into()];
    let e = w.explain();
    let a = e.services[0].ips[0].announced_by.as_ref().unwrap();
    assert!(a.interfaces.is_empty(), "{a:?}");
    // answering on no interface is not answering
    assert_eq!(e.services[0].state, "notAnnounced");
    assert_eq!(
        e.services[0].ips[0].reason.as_ref().unwrap().code,
        "interfaceFilter"
    );
    assert_eq!(notes(&e, "web", "n1"), ["interfaceFilter"]);
    assert_eq!(notes(&e, "web", "n2"), ["interfaceFilter"]);
}

#[test]
fn speaker_not_running_expired_missing_or_released() {
    let mut w = World::new();
    w.states[1].1 = 30; // n2 renewed 30 s ago
    w.states.remove(2); // n3 never ran
    let e = w.explain();
    assert_eq!(node_code(&e, "web", "n2"), "speakerNotRunning");
    assert_eq!(node_code(&e, "web", "n3"), "speakerNotRunning");
    let n2 = e.speakers.iter().find(|s| s.node == "n2").unwrap();
    assert!(!n2.running);
    assert!(n2.problems[0].message.contains("30.0 s ago"), "{n2:?}");
    // released
    let mut w = World::new();
    let mut l = node_lease("n2", 0, None);
    l["spec"]["holderIdentity"] = json!("");
    w.states.remove(1);
    w.claims.push(l);
    assert_eq!(node_code(&w.explain(), "web", "n2"), "speakerNotRunning");
}

#[test]
fn owner_not_running_hands_over() {
    let mut w = World::new();
    w.states[0].1 = 30;
    let e = w.explain();
    // the claim still names n1, but n1 is gone: nobody answers until the elected node claims
    let (head, nodes) = verdicts(&e, "web");
    assert_eq!(head, "takingOver");
    assert!(nodes.iter().any(|(_, c)| c == "takingOver"), "{nodes:?}");
    assert_eq!(node_code(&e, "web", "n1"), "speakerNotRunning");
}

#[test]
fn fenced_speaker_without_quorum() {
    let mut w = World::new();
    let st = w.state_mut("n2");
    st.may_announce = false;
    st.not_heard = vec!["n1".into(), "n3".into()];
    let e = w.explain();
    assert_eq!(node_code(&e, "web", "n2"), "speakerFenced");
    let n2 = e.speakers.iter().find(|s| s.node == "n2").unwrap();
    assert!(
        n2.problems[0].message.contains("0 of its 2 peers"),
        "{n2:?}"
    );
}

#[test]
fn the_state_of_a_speaker_of_an_earlier_version_is_read_from_its_lease() {
    let mut w = World::new();
    w.state_mut("n2").may_announce = false;
    w.legacy.push("n2".into());
    let e = w.explain();
    assert_eq!(node_code(&e, "web", "n2"), "speakerFenced");
    // a ConfigMap written since wins over the annotation left on the Lease
    let mut w = World::new();
    let mut old = w.state_mut("n2").clone();
    old.may_announce = false;
    w.leftover.push(("n2".into(), old));
    let e = w.explain();
    assert_ne!(node_code(&e, "web", "n2"), "speakerFenced");
    assert_eq!(
        node_code(&e, "web", "n2"),
        node_code(&World::new().explain(), "web", "n2")
    );
}

#[test]
fn heartbeats_not_flowing_between_two_nodes() {
    let mut w = World::new();
    w.state_mut("n2").not_heard.push("n3".into());
    w.state_mut("n3").not_heard.push("n2".into());
    let e = w.explain();
    assert_eq!(notes(&e, "web", "n2"), ["heartbeatsNotFlowing"]);
    assert_eq!(notes(&e, "web", "n3"), ["heartbeatsNotFlowing"]);
    assert!(notes(&e, "web", "n1").is_empty());
    let n3 = e.speakers.iter().find(|s| s.node == "n3").unwrap();
    assert!(
        n3.problems[0]
            .message
            .contains("n3 hears no heartbeat from n2")
            && n3.problems[0]
                .message
                .contains("n2 hears no heartbeat from n3"),
        "{n3:?}"
    );
}

#[test]
fn another_load_balancer_class() {
    let mut w = World::new();
    let mut s = service("elsewhere", Some("192.0.2.20"));
    s["spec"]["loadBalancerClass"] = json!("example.com/other");
    w.services.push(s);
    let e = w.explain();
    let s = e.services.iter().find(|s| s.name == "elsewhere").unwrap();
    assert_eq!(s.state, "notOurs");
    assert_eq!(s.reason.as_ref().unwrap().code, "loadBalancerClass");
}

#[test]
fn duplicate_responder_is_reported() {
    let mut w = World::new();
    w.state_mut("n1").duplicates.push(Duplicate {
        ip: IP.into(),
        interface: "eth0".into(),
        mac: "02:de:ad:be:ef:01".into(),
        first_seen: ts(5),
    });
    let e = w.explain();
    let d = &e.services[0].ips[0].duplicates;
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].seen_by.as_str(), d[0].mac.as_str()),
        ("n1", "02:de:ad:be:ef:01")
    );
    assert!(super::render::text(&e).contains("DUPLICATE RESPONDER: MAC 02:de:ad:be:ef:01"));
}

fn failure(e: AllocError) -> String {
    format!("Failed to allocate IP for \"default/pending\": {e}")
}

fn pending_with(note: &str, pool_status: Option<Value>) -> String {
    let mut w = World::new();
    w.services.push(service("pending", None));
    if let Some(st) = pool_status {
        w.pools[0]["status"] = st;
    }
    w.events.push(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "pending.1", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "ferrolb", "reportingInstance": "c",
        "action": "Allocate", "reason": "AllocationFailed", "type": "Warning", "note": note,
        "regarding": {"kind": "Service", "namespace": "default", "name": "pending"}}));
    let e = w.explain();
    let s = e.services.iter().find(|s| s.name == "pending").unwrap();
    assert_eq!(s.state, "noIP");
    s.reason.as_ref().unwrap().code.clone()
}

#[test]
fn service_without_ip_explained_by_the_controller_event() {
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let key = ServiceKey::parse("default/web").unwrap();
    let full =
        json!({"assignedIPv4": 256, "assignedIPv6": 0, "availableIPv4": 0, "availableIPv6": 0});
    assert_eq!(
        pending_with(
            &failure(AllocError::NoAvailableIpsInPool("default".into())),
            None
        ),
        "poolExhausted"
    );
    assert_eq!(
        pending_with(&failure(AllocError::NoAvailableIps), Some(full)),
        "poolExhausted"
    );
    assert_eq!(
        pending_with(&failure(AllocError::NoAvailableIps), None),
        "noPoolMatches"
    );
    assert_eq!(
        pending_with(&failure(AllocError::NoPools), None),
        "noPoolMatches"
    );
    assert_eq!(
        pending_with(&failure(AllocError::UnknownPool("x".into())), None),
        "noPoolMatches"
    );
    assert_eq!(
        pending_with(
            &failure(AllocError::IpInUse {
                ip,
                by: key.clone()
            }),
            None
        ),
        "requestedIPTaken"
    );
    assert_eq!(
        pending_with(
            &failure(AllocError::SharingKeyMismatch {
                requested: "a".into(),
                existing: "b".into(),
                ip
            }),
            None
        ),
        "sharingRules"
    );
    assert_eq!(
        pending_with(&failure(AllocError::PoolFrozen("default".into())), None),
        "invalidPool"
    );
    // classification alone, for every sharing rule
    for e in [
        AllocError::BackendKeyMismatch {
            requested: "a".into(),
            existing: "b".into(),
            ip,
        },
        AllocError::PortInUse {
            protocol: crate::allocator::Protocol::Tcp,
            port: 80,
            ip,
        },
    ] {
        assert_eq!(
            classify_allocation_failure(&failure(e), &[]).code,
            "sharingRules"
        );
    }
}

#[test]
fn service_without_ip_and_without_event() {
    let mut w = World::new();
    w.services.push(service("pending", None));
    let e = w.explain();
    let s = e.services.iter().find(|s| s.name == "pending").unwrap();
    assert_eq!(s.reason.as_ref().unwrap().code, "noControllerVerdict");
}

#[test]
fn invalid_pool_is_a_configuration_problem() {
    let mut w = World::new();
    w.pools.push(pool("broken", "10.0.0.1/33"));
    let e = w.explain();
    assert!(
        e.config_problems.iter().any(|p| p.contains("broken")),
        "{:?}",
        e.config_problems
    );
}

#[test]
fn one_service_or_one_namespace() {
    let mut w = World::new();
    let mut other = service("api", Some("192.0.2.11"));
    other["metadata"]["namespace"] = json!("prod");
    w.services.push(other);
    let only = |ns: &str, name: Option<&str>| Options {
        only: Some((ns.into(), name.map(str::to_string))),
        ..Default::default()
    };
    let names = |e: Explanation| e.services.into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names(w.explain_with(only("prod", None))), ["api"]);
    assert_eq!(names(w.explain_with(only("default", Some("web")))), ["web"]);
    assert_eq!(names(w.explain()), ["web", "api"]);
}

#[test]
fn json_field_names_are_stable() {
    let e = World::new().explain();
    let v: Value = serde_json::from_str(&super::render::json(&e)).unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), ["configProblems", "services", "speakers"]);
    assert_eq!(
        keys(&v["services"][0]),
        ["ips", "name", "namespace", "reason", "state"]
    );
    let ip = &v["services"][0]["ips"][0];
    assert_eq!(
        keys(ip),
        ["announcedBy", "duplicates", "ip", "nodes", "pool", "reason"]
    );
    assert_eq!(keys(&ip["announcedBy"]), ["interfaces", "node", "since"]);
    assert_eq!(keys(&ip["announcedBy"]["interfaces"][0]), ["mac", "name"]);
    assert_eq!(
        keys(&ip["nodes"][1]),
        ["announces", "node", "notes", "reason"]
    );
    assert_eq!(keys(&ip["nodes"][1]["reason"]), ["code", "message"]);
    assert_eq!(
        keys(&v["speakers"][0]),
        ["mayAnnounce", "node", "problems", "running"]
    );
}

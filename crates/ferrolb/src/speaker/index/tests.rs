use super::*;
use crate::election::{service_view, SERVICE_NAME_LABEL};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::json;

/// A configuration with one pool `p` of `cidr` (the speaker's other tests use it too).
pub(in crate::speaker) fn config(cidr: &str) -> Config {
    let mut c = Config::default();
    c.pools.insert(
        "p".into(),
        crate::config::Pool {
            name: "p".into(),
            labels: Default::default(),
            cidrs: vec![cidr.parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            frozen: false,
        },
    );
    c
}

fn service(name: &str, ty: &str, class: Option<&str>, ips: &[&str], label: bool) -> Service {
    let mut spec = json!({"type": ty});
    if let Some(c) = class {
        spec["loadBalancerClass"] = json!(c);
    }
    let mut meta = json!({"name": name, "namespace": "ns", "uid": format!("u-{name}"),
        "annotations": {"metallb.io/allow-shared-ip": "k"}});
    if label {
        meta["labels"] = json!({"tier": "front"});
    }
    serde_json::from_value(json!({
        "metadata": meta,
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()}}
    }))
    .unwrap()
}

fn lb(name: &str, ip: &str) -> Service {
    service(name, "LoadBalancer", None, &[ip], false)
}

/// A slice of Service `svc` with one endpoint per `(node, ready)` (`""`: no node).
fn slice(name: &str, svc: &str, eps: &[(&str, bool)]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": eps.iter().map(|(n, ready)| {
            let mut e = json!({"addresses": ["10.0.0.1"], "conditions": {"ready": ready}});
            if !n.is_empty() { e["nodeName"] = json!(n); }
            e
        }).collect::<Vec<_>>()
    }))
    .unwrap()
}

fn node(name: &str, label: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"zone": label}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
                   "images": [{"names": ["a:b"], "sizeBytes": 1}]}
    }))
    .unwrap()
}

fn put_svc(ix: &mut Index, s: &Service) -> bool {
    ix.service(Event::Apply(SlimService::of(s)))
}

fn put_slice(ix: &mut Index, s: &EndpointSlice) -> bool {
    ix.slice(Event::Apply(SlimSlice::of(s)))
}

fn nodes_of(v: &ServiceView) -> Vec<&str> {
    v.serving_endpoint_nodes.iter().map(|n| &**n).collect()
}

#[test]
fn a_slice_before_its_service_counts_once_the_service_comes() {
    let c = config("192.168.1.0/24");
    let mut ix = Index::new(None);
    ix.changes(&c);
    assert!(!put_slice(&mut ix, &slice("web-1", "web", &[("n1", true)])));
    assert!(ix.changes(&c).is_empty());
    assert!(put_svc(&mut ix, &lb("web", "192.168.1.10")));
    let ch = ix.changes(&c);
    let v = &ch["ns/web"][0];
    assert_eq!(nodes_of(v), ["n1"]);
    assert_eq!(v.pool.as_deref(), Some("p"));
    assert_eq!(v.sharing_key.as_deref(), Some("k"));
    // Nothing changed since.
    assert!(ix.changes(&c).is_empty());
}

#[test]
fn a_service_becoming_or_ceasing_to_be_announceable() {
    let c = config("192.168.1.0/24");
    let mut ix = Index::new(None);
    ix.changes(&c);
    put_slice(&mut ix, &slice("web-1", "web", &[("n1", true)]));
    // ClusterIP: not kept, no wake.
    assert!(!put_svc(
        &mut ix,
        &service("web", "ClusterIP", None, &[], false)
    ));
    assert!(ix.changes(&c).is_empty() && ix.len().0 == 0);
    // Becomes a LoadBalancer with an IP.
    assert!(put_svc(&mut ix, &lb("web", "192.168.1.10")));
    assert_eq!(ix.changes(&c)["ns/web"].len(), 1);
    // A resourceVersion bump alone wakes nothing.
    let mut bumped = lb("web", "192.168.1.10");
    bumped.metadata.resource_version = Some("9".into());
    assert!(!put_svc(&mut ix, &bumped));
    assert!(ix.changes(&c).is_empty());
    // Moves to another class: gone.
    assert!(put_svc(
        &mut ix,
        &service(
            "web",
            "LoadBalancer",
            Some("other"),
            &["192.168.1.10"],
            false
        )
    ));
    assert_eq!(ix.changes(&c)["ns/web"], Vec::<ServiceView>::new());
    assert!(ix.view("ns/web", &c).is_none());
    // Back to ours, then back to ClusterIP.
    assert!(put_svc(&mut ix, &lb("web", "192.168.1.10")));
    assert_eq!(ix.changes(&c)["ns/web"].len(), 1);
    assert!(put_svc(
        &mut ix,
        &service("web", "ClusterIP", None, &[], false)
    ));
    assert!(ix.changes(&c)["ns/web"].is_empty());
    // Changes to a Service that is not ours do not wake.
    assert!(!put_svc(
        &mut ix,
        &service("web", "NodePort", None, &[], true)
    ));
    assert!(!put_slice(&mut ix, &slice("web-1", "web", &[("n2", true)])));
    assert!(ix.changes(&c).is_empty());
}

#[test]
fn a_relist_drops_what_it_did_not_list() {
    let c = config("192.168.1.0/24");
    let mut ix = Index::new(None);
    put_svc(&mut ix, &lb("a", "192.168.1.1"));
    put_svc(&mut ix, &lb("b", "192.168.1.2"));
    put_slice(&mut ix, &slice("a-1", "a", &[("n1", true)]));
    put_slice(&mut ix, &slice("a-2", "a", &[("n2", true)]));
    ix.node(Event::Apply(SlimNode::of(&node("n1", "x"))));
    ix.node(Event::Apply(SlimNode::of(&node("n2", "x"))));
    ix.changes(&c);
    assert!(!ix.synced());
    // Relist: b and a-2 and n2 are gone.
    assert!(!ix.service(Event::Init));
    assert!(!ix.service(Event::InitApply(SlimService::of(&lb("a", "192.168.1.1")))));
    assert!(ix.service(Event::InitDone));
    ix.slice(Event::Init);
    ix.slice(Event::InitApply(SlimSlice::of(&slice(
        "a-1",
        "a",
        &[("n1", true)],
    ))));
    ix.slice(Event::InitDone);
    ix.node(Event::Init);
    ix.node(Event::InitApply(SlimNode::of(&node("n1", "x"))));
    ix.node(Event::InitDone);
    assert!(ix.synced());
    let ch = ix.changes(&c);
    assert_eq!(
        ch.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["ns/a", "ns/b"]
    );
    assert_eq!(nodes_of(&ch["ns/a"][0]), ["n1"]);
    assert!(ch["ns/b"].is_empty());
    assert_eq!(ix.len(), (1, 1, 1));
    assert!(ix.node_named("n2").is_none());
    // Interned names no longer used are let go.
    assert!(ix.names.iter().all(|n| &**n == "n1"));
}

#[test]
fn a_node_deleted_or_relabelled_wakes_a_heartbeat_does_not() {
    let mut ix = Index::new(None);
    assert!(ix.node(Event::Apply(SlimNode::of(&node("n1", "a")))));
    assert!(ix.take_nodes_changed());
    let mut beat = node("n1", "a");
    beat.metadata.resource_version = Some("2".into());
    beat.status.as_mut().unwrap().images = None;
    assert!(!ix.node(Event::Apply(SlimNode::of(&beat))));
    assert!(!ix.take_nodes_changed());
    assert!(ix.node(Event::Apply(SlimNode::of(&node("n1", "b")))));
    assert_eq!(
        ix.node_named("n1")
            .unwrap()
            .metadata
            .labels
            .as_ref()
            .unwrap()["zone"],
        "b"
    );
    assert!(ix.node(Event::Delete(SlimNode::of(&node("n1", "b")))));
    assert!(ix.take_nodes_changed());
    assert!(ix.node_named("n1").is_none() && ix.nodes().count() == 0);
    assert!(!ix.node(Event::Delete(SlimNode::of(&node("n1", "b")))));
}

#[test]
fn a_slice_moving_to_another_service_changes_both() {
    let c = config("192.168.1.0/24");
    let mut ix = Index::new(None);
    put_svc(&mut ix, &lb("a", "192.168.1.1"));
    put_svc(&mut ix, &lb("b", "192.168.1.2"));
    put_slice(&mut ix, &slice("s", "a", &[("n1", true), ("", true)]));
    let ch = ix.changes(&c);
    assert!(ch["ns/a"][0].has_serving_endpoint && !ch["ns/b"][0].has_serving_endpoint);
    assert!(put_slice(&mut ix, &slice("s", "b", &[("n1", true)])));
    let ch = ix.changes(&c);
    assert_eq!(
        ch.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["ns/a", "ns/b"]
    );
    assert!(!ch["ns/a"][0].has_serving_endpoint);
    assert_eq!(nodes_of(&ch["ns/b"][0]), ["n1"]);
    // Its endpoints stop serving: no longer kept, b changes.
    assert!(put_slice(&mut ix, &slice("s", "b", &[("n1", false)])));
    assert_eq!(ix.len().1, 0);
    assert!(!ix.changes(&c)["ns/b"][0].has_serving_endpoint);
    // Deleting a slice that is not kept: nothing.
    assert!(!ix.slice(Event::Delete(SlimSlice::of(&slice("s", "b", &[])))));
}

#[test]
fn a_configuration_change_rebuilds_every_view() {
    let (c1, c2) = (config("192.168.1.0/24"), config("192.168.0.0/16"));
    let mut ix = Index::new(None);
    put_svc(&mut ix, &lb("a", "192.168.1.1"));
    put_svc(&mut ix, &lb("b", "192.168.2.1"));
    assert_eq!(ix.changes(&c1).len(), 2);
    assert!(ix.changes(&c1).is_empty());
    let ch = ix.changes(&c2);
    assert_eq!(ch.len(), 2);
    assert_eq!(ch["ns/b"][0].pool.as_deref(), Some("p"));
}

#[test]
fn views_of_listed_objects_are_the_rule_s() {
    let c = config("192.168.1.0/24");
    let svcs = [lb("a", "192.168.1.1"), lb("b", "192.168.1.2")];
    let slices = [
        slice("a-1", "a", &[("n1", true)]),
        slice("x", "zz", &[("n2", true)]),
    ];
    let arc = |v: &[Service]| v.iter().cloned().map(Arc::new).collect::<Vec<_>>();
    let sl: Vec<_> = slices.iter().cloned().map(Arc::new).collect();
    let got = views_of(&c, &arc(&svcs), &sl, None);
    let want: Vec<ServiceView> = svcs
        .iter()
        .map(|s| service_view(s, &slices, &c).unwrap())
        .collect();
    assert_eq!(got, want);
}

/// One random event of the model test.
#[derive(Clone, Debug)]
enum Step {
    /// Service i: type LoadBalancer?, class (0: ours), IPs, label.
    Service(usize, bool, u8, Vec<usize>, bool),
    DeleteService(usize),
    /// Slice i of Service j, endpoints (node index 0..3, 3: none; ready).
    Slice(usize, usize, Vec<(usize, bool)>),
    DeleteSlice(usize),
    Node(usize, bool),
    DeleteNode(usize),
    /// Relist Services, keeping those with these indices.
    RelistServices(Vec<usize>),
    /// Relist slices, keeping those with these indices.
    RelistSlices(Vec<usize>),
    Config(bool),
    /// The shell takes the Services whose slices are wanted and reads them now (the answer
    /// is applied at the next `Answer`, the watch's events in between).
    Read,
    /// The reads taken so far are answered.
    Answer,
}

const IPS: [&str; 4] = ["192.168.1.1", "192.168.1.2", "192.168.2.1", "bad"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4usize, prop::bool::weighted(0.8), 0..3u8, prop::collection::vec(0..4usize, 0..3), any::<bool>())
            .prop_map(|(i, l, c, ips, lab)| Step::Service(i, l, c, ips, lab)),
        1 => (0..4usize).prop_map(Step::DeleteService),
        5 => (0..6usize, 0..4usize, prop::collection::vec((0..4usize, any::<bool>()), 0..4))
            .prop_map(|(i, j, e)| Step::Slice(i, j, e)),
        1 => (0..6usize).prop_map(Step::DeleteSlice),
        1 => (0..3usize, any::<bool>()).prop_map(|(i, b)| Step::Node(i, b)),
        1 => (0..3usize).prop_map(Step::DeleteNode),
        1 => prop::collection::vec(0..4usize, 0..4).prop_map(Step::RelistServices),
        1 => prop::collection::vec(0..6usize, 0..6).prop_map(Step::RelistSlices),
        1 => any::<bool>().prop_map(Step::Config),
        2 => Just(Step::Read),
        2 => Just(Step::Answer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After any sequence of events, the views handed over by `changes` (applied to what
    /// was handed over before), and every view the index gives, equal `service_view`
    /// computed from scratch over the objects applied, but for the Services whose slices
    /// are being read (read when the shell gets to them, answered later, the watch's events
    /// arriving in between); a change of a view always woke the loop. At the end every read
    /// is answered, and every view is the rule's.
    #[test]
    fn the_index_holds_the_rule_s_view_of_every_service(steps in prop::collection::vec(step(), 1..40)) {
        let mut ix = Index::new(None);
        let mut svcs: BTreeMap<usize, Service> = BTreeMap::new();
        let mut slices: BTreeMap<usize, EndpointSlice> = BTreeMap::new();
        let mut nodes: BTreeMap<usize, Node> = BTreeMap::new();
        let mut second = false;
        let mut held: BTreeMap<Arc<str>, ServiceView> = BTreeMap::new();
        let mut expected_before: BTreeMap<Arc<str>, ServiceView> = BTreeMap::new();
        let mut reads: Vec<(SliceRead, Vec<SlimSlice>)> = Vec::new();
        let last = steps.len() - 1;
        let mut steps = steps.clone();
        steps.extend([Step::Read, Step::Answer]);
        for (n, st) in steps.iter().enumerate() {
            let woke = match st.clone() {
                Step::Service(i, is_lb, class, ips, label) => {
                    let ips: Vec<&str> = ips.iter().map(|k| IPS[*k]).collect();
                    let class = ["", "x", "y"][class as usize];
                    let s = service(
                        &format!("s{i}"),
                        if is_lb { "LoadBalancer" } else { "ClusterIP" },
                        (!class.is_empty()).then_some(class),
                        &ips,
                        label,
                    );
                    svcs.insert(i, s.clone());
                    put_svc(&mut ix, &s)
                }
                Step::DeleteService(i) => match svcs.remove(&i) {
                    Some(s) => ix.service(Event::Delete(SlimService::of(&s))),
                    None => false,
                },
                Step::Slice(i, j, eps) => {
                    let names = ["n0", "n1", "n2", ""];
                    let eps: Vec<(&str, bool)> = eps.iter().map(|(n, r)| (names[*n], *r)).collect();
                    let s = slice(&format!("e{i}"), &format!("s{j}"), &eps);
                    slices.insert(i, s.clone());
                    put_slice(&mut ix, &s)
                }
                Step::DeleteSlice(i) => match slices.remove(&i) {
                    Some(s) => ix.slice(Event::Delete(SlimSlice::of(&s))),
                    None => false,
                },
                Step::Node(i, b) => {
                    let n = node(&format!("n{i}"), if b { "a" } else { "b" });
                    nodes.insert(i, n.clone());
                    ix.node(Event::Apply(SlimNode::of(&n)))
                }
                Step::DeleteNode(i) => match nodes.remove(&i) {
                    Some(n) => ix.node(Event::Delete(SlimNode::of(&n))),
                    None => false,
                },
                Step::RelistServices(keep) => {
                    svcs.retain(|i, _| keep.contains(i));
                    ix.service(Event::Init);
                    for s in svcs.values() {
                        ix.service(Event::InitApply(SlimService::of(s)));
                    }
                    ix.service(Event::InitDone)
                }
                Step::RelistSlices(keep) => {
                    slices.retain(|i, _| keep.contains(i));
                    ix.slice(Event::Init);
                    for s in slices.values() {
                        ix.slice(Event::InitApply(SlimSlice::of(s)));
                    }
                    ix.slice(Event::InitDone)
                }
                Step::Config(b) => {
                    second = b;
                    false
                }
                Step::Read => {
                    for r in ix.take_wanted() {
                        prop_assert_eq!(format!("{}/{}", r.namespace, r.name), &*r.key);
                        let found = listed(slices.values(), &r.namespace, &r.name);
                        reads.push((r, found));
                    }
                    false
                }
                Step::Answer => {
                    let mut woke = false;
                    for (r, found) in reads.drain(..) {
                        woke |= ix.fetched(&r, found);
                    }
                    woke
                }
            };
            let c = config(if second { "192.168.0.0/16" } else { "192.168.1.0/24" });
            let all_slices: Vec<&EndpointSlice> = slices.values().collect();
            let expected: BTreeMap<Arc<str>, ServiceView> = svcs
                .values()
                .filter(|s| s.spec.as_ref().unwrap().load_balancer_class.is_none())
                .filter_map(|s| service_view(s, all_slices.iter().copied(), &c).ok())
                .map(|v| (v.key.clone(), v))
                .collect();
            let pending: BTreeSet<Arc<str>> = ix.wanted.keys().chain(ix.fetching.keys()).cloned().collect();
            let settled = |m: &BTreeMap<Arc<str>, ServiceView>| -> BTreeMap<Arc<str>, ServiceView> {
                m.iter().filter(|(k, _)| !pending.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            if !matches!(st, Step::Config(_)) && settled(&expected) != settled(&expected_before) {
                prop_assert!(woke, "{:?} changed a view without waking the loop", st);
            }
            for (k, vs) in ix.changes(&c) {
                prop_assert!(vs.len() <= 1);
                match vs.into_iter().next() {
                    Some(v) => { held.insert(k, v); }
                    None => { held.remove(&k); }
                }
            }
            prop_assert_eq!(settled(&held), settled(&expected), "after {:?}", st);
            let views: BTreeMap<Arc<str>, ServiceView> =
                ix.views(&c).into_iter().map(|v| (v.key.clone(), v)).collect();
            prop_assert_eq!(settled(&views), settled(&expected));
            if n == last + 2 {
                prop_assert!(pending.is_empty(), "every read answered");
            }
            for n in nodes.values() {
                let name = n.metadata.name.as_deref().unwrap();
                prop_assert_eq!(
                    ix.node_named(name).map(|n| (*n).clone()),
                    Some(SlimNode::of(n).into_node())
                );
            }
            prop_assert_eq!(ix.nodes().count(), nodes.len());
            expected_before = expected;
        }
    }
}

/// The slices of Service `ns/name` among `slices`, as a list by its name label gives them.
fn listed<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ns: &str,
    name: &str,
) -> Vec<SlimSlice> {
    slices
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(name)
        })
        .map(SlimSlice::of)
        .collect()
}

/// The Services listed (the index then keeps only LoadBalancers' slices).
fn services_listed(ix: &mut Index, svcs: &[Service]) {
    ix.service(Event::Init);
    for s in svcs {
        ix.service(Event::InitApply(SlimService::of(s)));
    }
    ix.service(Event::InitDone);
}

#[test]
fn once_the_services_are_listed_only_loadbalancers_slices_are_kept() {
    let c = config("192.168.1.0/24");
    let mut ix = Index::new(None);
    // slices listed before the Services: kept until the Services are in
    put_slice(&mut ix, &slice("db-1", "db", &[("n1", true)]));
    put_slice(&mut ix, &slice("web-1", "web", &[("n1", true)]));
    put_slice(&mut ix, &slice("pending-1", "pending", &[("n2", true)]));
    assert_eq!(ix.len().1, 3);
    services_listed(
        &mut ix,
        &[
            service("db", "ClusterIP", None, &[], false),
            lb("web", "192.168.1.10"),
            // a LoadBalancer without its IP yet (not announceable): its slices are kept
            service("pending", "LoadBalancer", None, &[], false),
        ],
    );
    assert_eq!(ix.len(), (1, 2, 0), "db's slice dropped");
    assert!(!ix.has_wanted());
    // later slices of a ClusterIP Service are not kept, nor do they wake the loop
    assert!(!put_slice(&mut ix, &slice("db-2", "db", &[("n3", true)])));
    assert_eq!(ix.len().1, 2);
    // the pending LoadBalancer gets its IP: its view has its endpoints, nothing to read
    assert!(put_svc(&mut ix, &lb("pending", "192.168.1.11")));
    assert!(!ix.has_wanted());
    assert_eq!(nodes_of(&ix.view("ns/pending", &c).unwrap()), ["n2"]);
    // web stops being a LoadBalancer: its slices go
    put_svc(&mut ix, &service("web", "ClusterIP", None, &[], false));
    assert_eq!(ix.len(), (1, 1, 0));
}

/// A Service turning LoadBalancer after the Services were listed has its slices read; the
/// read's copies of slices the watch changed or deleted meanwhile are not applied, the
/// others are; a read answered after the Service stopped being one is ignored; a failed
/// read is wanted again.
#[test]
fn a_service_turning_loadbalancer_later_has_its_slices_read() {
    let c = config("192.168.1.0/24");
    let mut ix = Index::new(None);
    services_listed(&mut ix, &[service("web", "ClusterIP", None, &[], false)]);
    let old = [
        slice("web-1", "web", &[("n1", true)]),
        slice("web-2", "web", &[("n2", true)]),
        slice("web-3", "web", &[("n3", true)]),
    ];
    for s in &old {
        assert!(!put_slice(&mut ix, s));
    }
    assert_eq!(ix.len().1, 0, "a ClusterIP Service's slices are not kept");
    ix.changes(&c);
    assert!(put_svc(&mut ix, &lb("web", "192.168.1.10")));
    assert!(ix.has_wanted());
    let reads = ix.take_wanted();
    assert_eq!(reads.len(), 1);
    let r = &reads[0];
    assert_eq!((&*r.namespace, &*r.name, &*r.key), ("ns", "web", "ns/web"));
    assert!(!ix.has_wanted());
    // while the read is under way the watch changes web-1 and deletes web-2
    assert!(put_slice(&mut ix, &slice("web-1", "web", &[("n4", true)])));
    ix.slice(Event::Delete(SlimSlice::of(&old[1])));
    // the read answers with what it saw before those
    let mut read = listed(&old, "ns", "web");
    read.push(SlimSlice::of(&slice("other-1", "other", &[("n9", true)])));
    assert!(ix.fetched(r, read));
    assert_eq!(nodes_of(&ix.changes(&c)["ns/web"][0]), ["n3", "n4"]);
    assert_eq!(ix.len().1, 2, "web-1 (the watch's) and web-3");
    // nothing pending: what the watch does from now on is not remembered
    assert!(ix.touched.is_empty());

    // web flaps to ClusterIP and back: a read under way when it stopped is ignored
    put_svc(&mut ix, &service("web", "ClusterIP", None, &[], false));
    assert_eq!(ix.len().1, 0);
    put_svc(&mut ix, &lb("web", "192.168.1.10"));
    let wanted = ix.take_wanted();
    assert_eq!(wanted.len(), 1);
    put_svc(&mut ix, &service("web", "ClusterIP", None, &[], false));
    assert!(!ix.fetched(&wanted[0], listed(&old, "ns", "web")));
    assert_eq!(ix.len().1, 0);

    // a failed read is wanted again
    put_svc(&mut ix, &lb("web", "192.168.1.10"));
    let failed = ix.take_wanted();
    assert_eq!(failed.len(), 1);
    ix.fetch_failed(&failed[0]);
    assert!(ix.has_wanted());
    let again = ix.take_wanted();
    assert_eq!(again.len(), 1);
    // an answer to the failed read, late, is not taken for the new one's
    assert!(!ix.fetched(&failed[0], vec![]));
    assert!(ix.fetched(&again[0], listed(&old, "ns", "web")));
    assert_eq!(
        nodes_of(&ix.view("ns/web", &c).unwrap()),
        ["n1", "n2", "n3"]
    );
}

#[test]
fn a_clusterip_service_turning_loadbalancer_gets_the_endpoints_of_all_its_slices() {
    let c = config("192.168.1.0/24");
    let mut ix = Index::new(None);
    ix.changes(&c);
    assert!(!put_svc(
        &mut ix,
        &service("web", "ClusterIP", None, &[], false)
    ));
    // Three slices while it is not ours, one of them later emptied, one deleted.
    put_slice(
        &mut ix,
        &slice("web-1", "web", &[("n1", true), ("n2", false)]),
    );
    put_slice(&mut ix, &slice("web-2", "web", &[("n3", true)]));
    put_slice(&mut ix, &slice("web-3", "web", &[("n4", true)]));
    put_slice(&mut ix, &slice("web-2", "web", &[("n3", false)]));
    ix.slice(Event::Delete(SlimSlice::of(&slice("web-3", "web", &[]))));
    put_slice(&mut ix, &slice("web-4", "web", &[("n5", true), ("", true)]));
    assert!(ix.changes(&c).is_empty());
    assert!(put_svc(&mut ix, &lb("web", "192.168.1.10")));
    let ch = ix.changes(&c);
    let v = &ch["ns/web"][0];
    assert_eq!(nodes_of(v), ["n1", "n5"]);
    assert!(v.has_serving_endpoint);
    assert_eq!(ix.view("ns/web", &c).as_ref(), Some(v));
}

#[test]
fn a_view_shares_its_services_labels_with_the_index() {
    let mut ix = Index::new(None);
    let c = config("192.168.1.0/24");
    put_svc(
        &mut ix,
        &service("a", "LoadBalancer", None, &["192.168.1.1"], true),
    );
    put_slice(&mut ix, &slice("a-1", "a", &[("n1", true)]));
    let views = ix.changes(&c);
    let v = &views["ns/a"][0];
    assert_eq!(v.labels.get("tier"), Some("front"));
    let kept = ix.service_of("ns", "a").unwrap();
    let held = kept.facts.labels.shared().unwrap();
    assert!(Arc::ptr_eq(v.labels.shared().unwrap(), held));
    assert!(Arc::ptr_eq(
        ix.view("ns/a", &c).unwrap().labels.shared().unwrap(),
        held
    ));
}

#[test]
fn a_view_and_its_change_share_the_indexs_service_key() {
    let mut ix = Index::new(None);
    let c = config("192.168.1.0/24");
    put_svc(
        &mut ix,
        &service("a", "LoadBalancer", None, &["192.168.1.1"], false),
    );
    put_slice(&mut ix, &slice("a-1", "a", &[("n1", true)]));
    let held = ix.groups.get_key_value("ns/a").unwrap().0.clone();
    // the kept Service's own key (the one its table finds it by) is that allocation too,
    // and stays it across an update
    assert!(Arc::ptr_eq(
        ix.service_of("ns", "a").unwrap().facts.key(),
        &held
    ));
    put_svc(
        &mut ix,
        &service("a", "LoadBalancer", None, &["192.168.1.1"], true),
    );
    let kept = ix.service_of("ns", "a").unwrap();
    assert!(kept.facts.labels.contains_key("tier"));
    assert!(Arc::ptr_eq(kept.facts.key(), &held));
    let views = ix.changes(&c);
    let (k, vs) = views.iter().next().unwrap();
    assert_eq!(&**k, "ns/a");
    assert!(Arc::ptr_eq(k, &held) && Arc::ptr_eq(&vs[0].key, &held));
    // the configuration is the same: only what changed, still the index's key
    put_slice(&mut ix, &slice("a-1", "a", &[("n2", true)]));
    let views = ix.changes(&c);
    let (k, vs) = views.iter().next().unwrap();
    assert!(Arc::ptr_eq(k, &held) && Arc::ptr_eq(&vs[0].key, &held));
    assert!(Arc::ptr_eq(&ix.view("ns/a", &c).unwrap().key, &held));
    // and its serving nodes are the index's interned names
    let n2 = vs[0].serving_endpoint_nodes.iter().next().unwrap();
    assert_eq!(&**n2, "n2");
    assert!(Arc::ptr_eq(n2, ix.names.get("n2").unwrap()));
}

#[test]
fn services_served_from_the_same_nodes_share_one_set() {
    let mut ix = Index::new(None);
    let c = config("192.168.1.0/24");
    for (svc, ip) in [
        ("a", "192.168.1.1"),
        ("b", "192.168.1.2"),
        ("c", "192.168.1.3"),
    ] {
        put_svc(&mut ix, &service(svc, "LoadBalancer", None, &[ip], false));
    }
    put_slice(&mut ix, &slice("a-1", "a", &[("n1", true), ("n2", true)]));
    put_slice(&mut ix, &slice("b-1", "b", &[("n2", true), ("n1", true)]));
    // c: two slices whose union is the same nodes
    put_slice(&mut ix, &slice("c-1", "c", &[("n1", true)]));
    put_slice(&mut ix, &slice("c-2", "c", &[("n2", true), ("n3", false)]));
    let views = ix.changes(&c);
    let set = |k: &str| views[k][0].serving_endpoint_nodes.clone();
    assert_eq!(nodes_of(&views["ns/a"][0]), ["n1", "n2"]);
    assert!(NameSet::ptr_eq(&set("ns/a"), &set("ns/b")));
    assert!(NameSet::ptr_eq(&set("ns/a"), &set("ns/c")));
    assert!(NameSet::ptr_eq(
        &set("ns/a"),
        &ix.view("ns/b", &c).unwrap().serving_endpoint_nodes
    ));
    // b moves: its own set, a keeps the shared one
    put_slice(&mut ix, &slice("b-1", "b", &[("n3", true)]));
    let moved = ix.changes(&c);
    assert_eq!(nodes_of(&moved["ns/b"][0]), ["n3"]);
    assert_eq!(nodes_of(&ix.view("ns/a", &c).unwrap()), ["n1", "n2"]);
    // sets no one holds go: churn leaves the table bounded
    drop((views, moved));
    for i in 0..500 {
        put_slice(&mut ix, &slice("b-1", "b", &[(&format!("m{i}"), true)]));
    }
    assert!(ix.node_sets.len() <= 2 * 64 + 4, "{}", ix.node_sets.len());
    assert_eq!(nodes_of(&ix.view("ns/b", &c).unwrap()), ["m499"]);
}

#[test]
fn the_elections_nodes_and_owners_share_the_indexs_node_names() {
    let mut ix = Index::new(None);
    let c = config("192.168.1.0/24");
    let mut c = c;
    c.l2_advertisements.push(crate::config::L2Adv {
        name: "all".into(),
        ..Default::default()
    });
    ix.node(Event::Apply(SlimNode::of(&node("n1", "a"))));
    ix.node(Event::Apply(SlimNode::of(&node("n2", "a"))));
    for i in 1..=10 {
        let name = format!("s{i}");
        put_svc(
            &mut ix,
            &service(
                &name,
                "LoadBalancer",
                None,
                &[&format!("192.168.1.{i}")],
                false,
            ),
        );
        put_slice(
            &mut ix,
            &slice(&format!("{name}-1"), &name, &[("n1", true)]),
        );
    }
    let live = crate::speaker::plan::Live {
        may: true,
        alive: ["n2".to_string()].into(),
        ..Default::default()
    };
    let infos = crate::speaker::plan::node_infos(ix.named_nodes(), "n1", true, &live);
    assert_eq!(infos.len(), 2);
    let views = ix.views(&c);
    let served_from = views[0]
        .serving_endpoint_nodes
        .iter()
        .next()
        .unwrap()
        .clone();
    let n1 = infos.iter().find(|n| &*n.name == "n1").unwrap();
    // the Node's name is the endpoints' interned name
    assert!(Arc::ptr_eq(&n1.name, &served_from));
    let e = crate::election::elect_all(&c, &views, &infos, &BTreeMap::new(), &Default::default());
    assert_eq!(e.owners.len(), 10);
    for o in e.owners.values() {
        let info = infos.iter().find(|n| n.name == o.node).unwrap();
        assert!(Arc::ptr_eq(&o.node, &info.name), "{o:?}");
    }
    // infos made again (a Node changed) hold the same allocations
    let again = crate::speaker::plan::node_infos(ix.named_nodes(), "n1", true, &live);
    assert!(again
        .iter()
        .zip(&infos)
        .all(|(a, b)| Arc::ptr_eq(&a.name, &b.name)));
}

#[test]
fn views_share_their_pools_name_with_the_configuration() {
    let mut ix = Index::new(None);
    let c = config("192.168.1.0/24");
    for i in 1..=3 {
        put_svc(
            &mut ix,
            &service(
                &format!("s{i}"),
                "LoadBalancer",
                None,
                &[&format!("192.168.1.{i}")],
                false,
            ),
        );
    }
    let name = &c.pools["p"].name;
    let views = ix.views(&c);
    assert_eq!(views.len(), 3);
    for v in views.iter().chain(ix.changes(&c).values().flatten()) {
        assert!(Arc::ptr_eq(v.pool.as_ref().unwrap(), name), "{}", v.key);
    }
}

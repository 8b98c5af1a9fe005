//! The speaker's projections of Services, EndpointSlices and Nodes: only what it reads
//! (pure), and which changes can alter an announcement.
//!
//! Every speaker watches every Service, EndpointSlice and Node of the cluster. Whole
//! objects carry much it never reads (managedFields, the last-applied annotation, every
//! port, every endpoint's addresses and targetRef, a Node's `status.images`, capacity and
//! heartbeat conditions). The reflectors ([`super::start_reflectors`]) store these
//! projections instead, so the caches cost a fraction of the memory, and the election code
//! still works on plain `k8s_openapi` values (the same code paths as without slimming).
//!
//! Kept, because the speaker reads it (election [`crate::election::service_view`],
//! [`crate::election::NodeInfo::from_node`], heartbeat targets
//! [`super::heartbeat::node_address`], Event `regarding`):
//! - Service: name, namespace, uid, resourceVersion, `spec.type`,
//!   `spec.loadBalancerClass`; for a LoadBalancer Service also its labels (advertisement
//!   `serviceSelectors`), the `allow-shared-ip` annotations, `spec.externalTrafficPolicy`
//!   and the IPs of `status.loadBalancer.ingress`. Only the Services this speaker can
//!   announce ([`announceable`]) are stored at all: a Service that becomes announceable
//!   arrives whole in its next watch event, one that stops being so leaves the store;
//! - EndpointSlice: name, namespace, uid, resourceVersion, the `kubernetes.io/service-name`
//!   label, and per node hosting a serving endpoint one endpoint with that `nodeName`
//!   (plus one without a node when a serving endpoint has none);
//! - Node: name, uid, resourceVersion, labels, the `NetworkUnavailable` conditions (type and
//!   status) and the `InternalIP` addresses.
//!
//! A change whose projection is unchanged cannot change a decision, nor can a change to a
//! Service that is not, and was not, announceable by this speaker, or to the EndpointSlice
//! of such a Service: [`service_matters`], [`slice_matters`], [`node_matters`] say when the
//! speaker's loop must run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeCondition, NodeStatus, Service,
    ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::election::{LEGACY_SHARED_IP_ANNOTATION, SERVICE_NAME_LABEL, SHARED_IP_ANNOTATION};

/// The identity fields every projection keeps.
fn identity(meta: &mut ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        ..ObjectMeta::default()
    }
}

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// Reduces `svc` in place to the fields the speaker reads (see the module docs).
pub fn slim_service(svc: &mut Service) {
    let lb = is_load_balancer(svc);
    let mut meta = identity(&mut svc.metadata);
    let spec = svc.spec.take().unwrap_or_default();
    if !lb {
        svc.metadata = meta;
        svc.spec = Some(ServiceSpec {
            type_: spec.type_,
            load_balancer_class: spec.load_balancer_class,
            ..ServiceSpec::default()
        });
        svc.status = None;
        return;
    }
    meta.labels = svc.metadata.labels.take().filter(|l| !l.is_empty());
    meta.annotations = svc.metadata.annotations.take().and_then(|a| {
        let kept: BTreeMap<String, String> = a
            .into_iter()
            .filter(|(k, _)| k == SHARED_IP_ANNOTATION || k == LEGACY_SHARED_IP_ANNOTATION)
            .collect();
        (!kept.is_empty()).then_some(kept)
    });
    svc.metadata = meta;
    svc.spec = Some(ServiceSpec {
        type_: spec.type_,
        load_balancer_class: spec.load_balancer_class,
        external_traffic_policy: spec.external_traffic_policy,
        ..ServiceSpec::default()
    });
    svc.status = svc.status.take().map(|st| ServiceStatus {
        load_balancer: st.load_balancer.map(|lb| LoadBalancerStatus {
            ingress: lb.ingress.map(|ing| {
                ing.into_iter()
                    .filter(|i| i.ip.is_some())
                    .map(|i| LoadBalancerIngress {
                        ip: i.ip,
                        ..LoadBalancerIngress::default()
                    })
                    .collect()
            }),
        }),
        conditions: None,
    });
}

/// Reduces `slice` in place to its Service and the nodes of its serving endpoints.
pub fn slim_slice(slice: &mut EndpointSlice) {
    let mut meta = identity(&mut slice.metadata);
    meta.labels = slice.metadata.labels.take().and_then(|l| {
        let name = l.get(SERVICE_NAME_LABEL)?.clone();
        Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), name)]))
    });
    slice.metadata = meta;
    let mut nodes = std::collections::BTreeSet::new();
    let mut nodeless = false;
    for ep in slice
        .endpoints
        .take()
        .into_iter()
        .flatten()
        .filter(crate::election::endpoint_can_serve)
    {
        match ep.node_name.filter(|n| !n.is_empty()) {
            Some(n) => {
                nodes.insert(n);
            }
            None => nodeless = true,
        }
    }
    slice.endpoints = Some(
        nodes
            .into_iter()
            .map(Some)
            .chain(nodeless.then_some(None))
            .map(|node_name| Endpoint {
                node_name,
                ..Endpoint::default()
            })
            .collect(),
    );
    slice.ports = None;
}

/// Reduces `node` in place to its name, labels, `NetworkUnavailable` conditions and
/// `InternalIP` addresses.
pub fn slim_node(node: &mut Node) {
    let mut meta = identity(&mut node.metadata);
    meta.labels = node.metadata.labels.take().filter(|l| !l.is_empty());
    node.metadata = meta;
    node.spec = None;
    node.status = node.status.take().map(|st| NodeStatus {
        conditions: st.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == "NetworkUnavailable")
                .map(|c| NodeCondition {
                    type_: c.type_,
                    status: c.status,
                    ..NodeCondition::default()
                })
                .collect()
        }),
        addresses: st.addresses.map(|a| {
            a.into_iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| NodeAddress {
                    type_: a.type_,
                    address: a.address,
                })
                .collect()
        }),
        ..NodeStatus::default()
    });
}

/// `a` and `b` are equal but for their resourceVersion.
fn same<K: kube::Resource + Clone + PartialEq>(a: &K, b: &K) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.meta_mut().resource_version = None;
    b.meta_mut().resource_version = None;
    a == b
}

fn changed<K: kube::Resource + Clone + PartialEq>(old: Option<&K>, new: Option<&K>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => !same(a, b),
        (None, None) => false,
        _ => true,
    }
}

/// Whether this speaker (handling `lb_class`) can announce `svc`: a LoadBalancer Service of
/// its class with an ingress IP.
pub fn announceable(svc: &Service, lb_class: Option<&str>) -> bool {
    let class = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref());
    is_load_balancer(svc)
        && class == lb_class
        && svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_some_and(|i| {
                i.iter()
                    .any(|i| i.ip.as_deref().is_some_and(|ip| !ip.is_empty()))
            })
}

/// Whether the change of a (slim) Service from `old` to `new` (`None`: absent) can change
/// what the speaker announces.
pub fn service_matters(
    old: Option<&Service>,
    new: Option<&Service>,
    lb_class: Option<&str>,
) -> bool {
    let counts = |s: Option<&Service>| s.is_some_and(|s| announceable(s, lb_class));
    (counts(old) || counts(new)) && changed(old, new)
}

/// Whether the change of a (slim) EndpointSlice from `old` to `new` can change what the
/// speaker announces, given whether its Service (`owner`, as now stored) is announceable.
pub fn slice_matters(
    old: Option<&EndpointSlice>,
    new: Option<&EndpointSlice>,
    owner: Option<&Service>,
    lb_class: Option<&str>,
) -> bool {
    owner.is_some_and(|s| announceable(s, lb_class)) && changed(old, new)
}

/// The Service an EndpointSlice belongs to: (namespace, name).
pub fn slice_owner(slice: &EndpointSlice) -> Option<(String, String)> {
    let ns = slice.metadata.namespace.clone()?;
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some((ns, name))
}

/// Whether the change of a (slim) Node from `old` to `new` can change what the speaker
/// does (eligibility, labels, heartbeat address, existence).
pub fn node_matters(old: Option<&Node>, new: Option<&Node>) -> bool {
    changed(old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::election::{service_view, NodeInfo};
    use proptest::prelude::*;
    use serde_json::json;

    fn full_service(ty: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                    "metallb.io/allow-shared-ip": "k",
                    "metallb.io/loadBalancerIPs": "192.168.1.10"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {
                "type": ty, "clusterIP": "10.96.0.7", "externalTrafficPolicy": "Local",
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.168.1.10", "ipMode": "VIP"}, {"hostname": "lb.example"}
            ]}}
        }))
        .unwrap()
    }

    fn full_slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "resourceVersion": "7",
                "labels": {"kubernetes.io/service-name": "web",
                           "endpointslice.kubernetes.io/managed-by": "x"},
                "managedFields": [{"manager": "kube-controller-manager"}]},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    }

    fn full_node() -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "resourceVersion": "9", "labels": {"zone": "a"},
                         "annotations": {"x": "y"}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"},
                    {"type": "NetworkUnavailable", "status": "True", "reason": "NoRoute"}
                ],
                "addresses": [{"type": "Hostname", "address": "n1"},
                              {"type": "InternalIP", "address": "192.0.2.5"}],
                "images": [{"names": ["a:b"], "sizeBytes": 1}]
            }
        }))
        .unwrap()
    }

    fn config() -> Config {
        let mut c = Config::default();
        c.pools.insert(
            "p".into(),
            crate::config::Pool {
                name: "p".into(),
                labels: Default::default(),
                cidrs: vec!["192.168.1.0/24".parse().unwrap()],
                auto_assign: true,
                avoid_buggy_ips: false,
                allocation: None,
                frozen: false,
            },
        );
        c
    }

    #[test]
    fn load_balancer_service_keeps_what_the_election_reads() {
        let a = full_service("LoadBalancer");
        let mut b = a.clone();
        slim_service(&mut b);
        assert!(b.metadata.managed_fields.is_none());
        assert_eq!(
            b.metadata
                .annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["metallb.io/allow-shared-ip"]
        );
        assert!(b.spec.as_ref().unwrap().ports.is_none());
        let sl = full_slice(json!([{"addresses": ["10.0.0.1"], "nodeName": "n1"}]));
        let c = config();
        assert_eq!(
            service_view(&a, [&sl], &c).unwrap(),
            service_view(&b, [&sl], &c).unwrap()
        );
        assert!(announceable(&b, None));
        assert!(!announceable(&b, Some("other")));
        // Idempotent.
        let mut again = b.clone();
        slim_service(&mut again);
        assert_eq!(again, b);
    }

    #[test]
    fn other_services_keep_only_their_identity_and_type() {
        let mut s = full_service("ClusterIP");
        slim_service(&mut s);
        assert!(s.metadata.labels.is_none() && s.metadata.annotations.is_none());
        assert!(s.status.is_none());
        assert_eq!(s.spec.unwrap().type_.as_deref(), Some("ClusterIP"));
    }

    #[test]
    fn slice_keeps_one_endpoint_per_serving_node() {
        let mut s = full_slice(json!([
            {"addresses": ["10.0.0.1"], "nodeName": "n2", "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "nodeName": "n1"},
            {"addresses": ["10.0.0.3"], "nodeName": "n2"},
            {"addresses": ["10.0.0.4"], "nodeName": "n3", "conditions": {"ready": false}},
            {"addresses": ["10.0.0.5"], "nodeName": "n4", "conditions": {"ready": false, "serving": true}},
            {"addresses": ["10.0.0.6"]}
        ]));
        slim_slice(&mut s);
        let nodes: Vec<Option<&str>> = s
            .endpoints
            .iter()
            .flatten()
            .map(|e| e.node_name.as_deref())
            .collect();
        assert_eq!(nodes, [Some("n1"), Some("n2"), Some("n4"), None]);
        assert!(s.ports.is_none() && s.metadata.managed_fields.is_none());
        assert_eq!(s.metadata.labels.unwrap().len(), 1);
    }

    #[test]
    fn node_keeps_eligibility_labels_and_internal_address() {
        let a = full_node();
        let mut b = a.clone();
        slim_node(&mut b);
        assert_eq!(NodeInfo::from_node(&a, true), NodeInfo::from_node(&b, true));
        assert_eq!(
            super::super::heartbeat::node_address(&a, 7947),
            super::super::heartbeat::node_address(&b, 7947)
        );
        let st = b.status.as_ref().unwrap();
        assert!(st.images.is_none() && st.capacity.is_none());
        assert_eq!(st.conditions.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn heartbeat_of_a_node_does_not_matter_a_label_does() {
        let mut old = full_node();
        slim_node(&mut old);
        let mut beat = full_node();
        beat.metadata.resource_version = Some("10".into());
        beat.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_heartbeat_time = None;
        slim_node(&mut beat);
        assert!(!node_matters(Some(&old), Some(&beat)));
        let mut relabelled = full_node();
        relabelled.metadata.labels = None;
        slim_node(&mut relabelled);
        assert!(node_matters(Some(&old), Some(&relabelled)));
        assert!(node_matters(Some(&old), None));
    }

    #[test]
    fn only_announceable_services_and_their_slices_matter() {
        let mut lb = full_service("LoadBalancer");
        slim_service(&mut lb);
        let mut cip = full_service("ClusterIP");
        slim_service(&mut cip);
        // A ClusterIP Service changing or going away: nothing to do.
        let mut cip2 = cip.clone();
        cip2.metadata.uid = Some("u-2".into());
        assert!(!service_matters(Some(&cip), Some(&cip2), None));
        assert!(!service_matters(Some(&cip), None, None));
        // Becoming or ceasing to be a LoadBalancer does.
        assert!(service_matters(Some(&cip), Some(&lb), None));
        assert!(service_matters(Some(&lb), Some(&cip), None));
        // A resourceVersion bump alone does not.
        let mut bump = lb.clone();
        bump.metadata.resource_version = Some("43".into());
        assert!(!service_matters(Some(&lb), Some(&bump), None));
        // Another class's Service does not.
        let mut other = lb.clone();
        other.spec.as_mut().unwrap().load_balancer_class = Some("x".into());
        let mut other2 = other.clone();
        other2.metadata.labels = None;
        assert!(!service_matters(Some(&other), Some(&other2), None));

        let mut a = full_slice(json!([{"addresses": ["10.0.0.1"], "nodeName": "n1"}]));
        slim_slice(&mut a);
        let mut moved = full_slice(json!([{"addresses": ["10.0.0.9"], "nodeName": "n2"}]));
        slim_slice(&mut moved);
        let mut same_node = full_slice(json!([{"addresses": ["10.0.0.9"], "nodeName": "n1"}]));
        slim_slice(&mut same_node);
        assert_eq!(slice_owner(&a), Some(("shop".into(), "web".into())));
        assert!(slice_matters(Some(&a), Some(&moved), Some(&lb), None));
        assert!(!slice_matters(Some(&a), Some(&same_node), Some(&lb), None));
        assert!(!slice_matters(Some(&a), Some(&moved), Some(&cip), None));
        assert!(!slice_matters(Some(&a), Some(&moved), None, None));
        assert!(slice_matters(Some(&a), None, Some(&lb), None));
    }

    prop_compose! {
        fn arb_endpoints()(eps in prop::collection::vec((
            prop::option::of(prop::sample::select(vec!["n1", "n2", "n3", ""])),
            prop::option::of(prop::option::of(any::<bool>())),
            prop::option::of(any::<bool>()),
        ), 0..6)) -> serde_json::Value {
            serde_json::Value::Array(eps.into_iter().map(|(node, ready, serving)| {
                let mut e = json!({"addresses": ["10.0.0.1"]});
                if let Some(n) = node { e["nodeName"] = json!(n); }
                if let Some(r) = ready {
                    e["conditions"] = json!({"ready": r, "serving": serving});
                }
                e
            }).collect())
        }
    }

    proptest! {
        /// The election's view of a Service is the same with slim objects, and a slice change
        /// that does not matter leaves that view as it was.
        #[test]
        fn slimming_never_changes_the_view(
            a in arb_endpoints(),
            b in arb_endpoints(),
            ty in prop::sample::select(vec!["LoadBalancer", "ClusterIP"]),
        ) {
            let c = config();
            let svc = full_service(ty);
            let mut slim_svc = svc.clone();
            slim_service(&mut slim_svc);
            let (sa, sb) = (full_slice(a), full_slice(b));
            let (mut ta, mut tb) = (sa.clone(), sb.clone());
            slim_slice(&mut ta);
            slim_slice(&mut tb);
            let view = |s: &Service, sl: &EndpointSlice| service_view(s, [sl], &c).ok();
            prop_assert_eq!(view(&svc, &sa), view(&slim_svc, &ta));
            prop_assert_eq!(view(&svc, &sb), view(&slim_svc, &tb));
            if !slice_matters(Some(&ta), Some(&tb), Some(&slim_svc), None) {
                prop_assert_eq!(view(&svc, &sa), view(&svc, &sb));
            }
        }
    }
}

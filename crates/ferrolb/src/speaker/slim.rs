//! What the speaker decodes of Services, EndpointSlices and Nodes (pure), and which
//! changes can alter an announcement.
//!
//! Every speaker watches every Service, EndpointSlice and Node of the cluster. Whole
//! objects carry much it never reads (managedFields, the last-applied annotation, every
//! port, every endpoint's addresses and targetRef, a Node's `status.images`, capacity and
//! heartbeat conditions). The watches decode each object straight into one of the small
//! types here ([`SlimService`], [`SlimSlice`], [`SlimNode`]: same API group, version and
//! resource as the real kind), so what the speaker does not read is skipped by the decoder
//! instead of being allocated and dropped, and the index ([`super::index`]) keeps only
//! these. A `k8s_openapi` object converts through the same decoder (`of`).
//!
//! Kept, because the speaker reads it (the view rule [`crate::election::view_of`],
//! [`crate::election::NodeInfo::from_node`], heartbeat targets
//! [`super::heartbeat::node_address`], Event `regarding`):
//! - Service: name, namespace, uid, resourceVersion, `spec.loadBalancerClass` and
//!   [`ServiceFacts`]: whether `spec.type` is LoadBalancer, its labels (advertisement
//!   `serviceSelectors`), the sharing key (`allow-shared-ip` annotations),
//!   `spec.externalTrafficPolicy`, the IPs of `status.loadBalancer.ingress`. Only the
//!   Services this speaker can announce ([`announceable`]) are kept at all;
//! - EndpointSlice: name, namespace, its Service (the `kubernetes.io/service-name` label),
//!   the nodes hosting a serving endpoint, and whether a serving endpoint has no node;
//! - Node: name, uid, resourceVersion, labels, the `NetworkUnavailable` conditions (type and
//!   status) and the `InternalIP` addresses, as a `Node`.
//!
//! A change whose kept part is unchanged cannot change a decision, nor can a change to a
//! Service that is not, and was not, announceable by this speaker, or to the EndpointSlice
//! of such a Service: [`service_matters`], [`node_matters`] and the index say when the
//! speaker's loop must run.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeStatus, ObjectReference, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::election::{conditions_serve, sharing_key_of, ServiceFacts, SERVICE_NAME_LABEL};
use crate::selector::LabelSet;

/// Implements `k8s_openapi::Resource` (hence `kube::Resource`) for a slim type with the
/// real kind's group, version and resource, so `Api<$slim>` watches the real objects.
macro_rules! slim_resource {
    ($slim:ty, $full:ty) => {
        impl k8s_openapi::Resource for $slim {
            const API_VERSION: &'static str = <$full as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$full as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$full as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$full as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$full as k8s_openapi::Resource>::Scope;
        }
        impl k8s_openapi::Metadata for $slim {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `metadata` as decoded: every other field (managedFields, ownerReferences, …) is skipped.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct MetaIn {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

impl MetaIn {
    /// The identity fields every slim type keeps.
    fn identity(&mut self) -> ObjectMeta {
        ObjectMeta {
            name: self.name.take(),
            namespace: self.namespace.take(),
            uid: self.uid.take(),
            resource_version: self.resource_version.take(),
            ..ObjectMeta::default()
        }
    }
}

/// A Service as the speaker keeps it (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "ServiceIn")]
pub struct SlimService {
    /// Name, namespace, uid, resourceVersion.
    pub metadata: ObjectMeta,
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// What the view rule reads.
    pub facts: ServiceFacts,
}
slim_resource!(SlimService, Service);

#[derive(Deserialize, Default)]
#[serde(default)]
struct ServiceIn {
    metadata: MetaIn,
    spec: Option<ServiceSpecIn>,
    status: Option<ServiceStatusIn>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ServiceSpecIn {
    #[serde(rename = "type")]
    type_: Option<String>,
    load_balancer_class: Option<String>,
    external_traffic_policy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ServiceStatusIn {
    load_balancer: Option<LoadBalancerIn>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoadBalancerIn {
    ingress: Option<Vec<IngressIn>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IngressIn {
    ip: Option<String>,
}

impl From<ServiceIn> for SlimService {
    fn from(mut s: ServiceIn) -> Self {
        let spec = s.spec.unwrap_or_default();
        let mut facts = ServiceFacts::named(
            s.metadata.namespace.as_deref().unwrap_or_default(),
            s.metadata.name.as_deref().unwrap_or_default(),
        );
        facts.load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
        facts.ingress = s
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.filter(|ip| !ip.is_empty()))
            .collect();
        facts.labels = s
            .metadata
            .labels
            .as_ref()
            .map(LabelSet::from)
            .unwrap_or_default();
        facts.etp_local = spec.external_traffic_policy.as_deref() == Some("Local");
        facts.sharing_key = s.metadata.annotations.as_ref().and_then(sharing_key_of);
        SlimService {
            metadata: s.metadata.identity(),
            class: spec.load_balancer_class,
            facts,
        }
    }
}

impl SlimService {
    /// `svc` as the watch would have decoded it.
    pub fn of(svc: &Service) -> Self {
        reencode(svc)
    }

    /// `namespace/name`.
    pub fn key(&self) -> &Arc<str> {
        self.facts.key()
    }
}

/// What the index keeps of an announceable Service: its [`SlimService`] less the
/// `ObjectMeta` (a few hundred bytes even when nearly empty); name and namespace are those
/// of its facts, uid, resourceVersion and `spec.loadBalancerClass` share one allocation
/// (96 bytes in all, boxed by the index: `kept_service_is_96_bytes`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeptService {
    /// `metadata.uid`, `metadata.resourceVersion` and `spec.loadBalancerClass`, packed
    /// ([`crate::packed`]: for each, `0` when absent, or `1` and the text); read by
    /// [`KeptService::uid`], [`KeptService::resource_version`] and [`KeptService::class`].
    identity: Box<str>,
    /// What the view rule reads.
    pub facts: ServiceFacts,
}

impl From<SlimService> for KeptService {
    fn from(s: SlimService) -> Self {
        let mut kept = KeptService {
            identity: Box::default(),
            facts: s.facts,
        };
        kept.set_identity(
            s.metadata.uid.as_deref(),
            s.metadata.resource_version.as_deref(),
            s.class.as_deref(),
        );
        kept
    }
}

impl KeptService {
    /// `svc` as the index keeps it.
    pub fn of(svc: &Service) -> Self {
        SlimService::of(svc).into()
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> Option<&str> {
        self.identity_part(0)
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(&self) -> Option<&str> {
        self.identity_part(1)
    }

    /// `spec.loadBalancerClass`.
    pub fn class(&self) -> Option<&str> {
        self.identity_part(2)
    }

    /// Sets `metadata.uid`, `metadata.resourceVersion` and `spec.loadBalancerClass`.
    pub fn set_identity(
        &mut self,
        uid: Option<&str>,
        resource_version: Option<&str>,
        class: Option<&str>,
    ) {
        let mut t = String::new();
        for part in [uid, resource_version, class] {
            crate::packed::push_number(&mut t, usize::from(part.is_some()));
            if let Some(p) = part {
                crate::packed::push(&mut t, p);
            }
        }
        self.identity = t.into_boxed_str();
    }

    /// Part `i` of the identity (0: uid, 1: resourceVersion, 2: class).
    fn identity_part(&self, i: usize) -> Option<&str> {
        let mut it = crate::packed::Unpack::new(&self.identity);
        let mut part = None;
        for _ in 0..=i {
            part = match it.number() {
                0 => None,
                _ => it.next(),
            };
        }
        part
    }

    /// The Service as an Event's `regarding`: the reference `kube::Resource::object_ref`
    /// makes of the Service it was kept from.
    pub fn object_ref(&self) -> ObjectReference {
        let slim = SlimService {
            metadata: ObjectMeta {
                name: Some(self.facts.name().to_string()),
                namespace: Some(self.facts.namespace().to_string()),
                uid: self.uid().map(str::to_string),
                resource_version: self.resource_version().map(str::to_string),
                ..ObjectMeta::default()
            },
            ..SlimService::default()
        };
        kube::Resource::object_ref(&slim, &())
    }
}

/// An EndpointSlice as the speaker keeps it (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "SliceIn")]
pub struct SlimSlice {
    /// Name, namespace, resourceVersion.
    pub metadata: ObjectMeta,
    /// The `kubernetes.io/service-name` label.
    pub service: Option<String>,
    /// Nodes hosting a serving endpoint, sorted, without duplicates.
    pub nodes: Vec<String>,
    /// A serving endpoint has no `nodeName`.
    pub nodeless: bool,
}
slim_resource!(SlimSlice, EndpointSlice);

#[derive(Deserialize, Default)]
#[serde(default)]
struct SliceIn {
    metadata: MetaIn,
    endpoints: Option<Vec<EndpointIn>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EndpointIn {
    node_name: Option<String>,
    conditions: Option<ConditionsIn>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConditionsIn {
    ready: Option<bool>,
    serving: Option<bool>,
}

impl From<SliceIn> for SlimSlice {
    fn from(mut s: SliceIn) -> Self {
        let mut nodes = Vec::new();
        let mut nodeless = false;
        for ep in s.endpoints.into_iter().flatten() {
            if !conditions_serve(ep.conditions.map(|c| (c.ready, c.serving))) {
                continue;
            }
            match ep.node_name.filter(|n| !n.is_empty()) {
                Some(n) => nodes.push(n),
                None => nodeless = true,
            }
        }
        nodes.sort_unstable();
        nodes.dedup();
        SlimSlice {
            service: s
                .metadata
                .labels
                .take()
                .and_then(|mut l| l.remove(SERVICE_NAME_LABEL)),
            metadata: s.metadata.identity(),
            nodes,
            nodeless,
        }
    }
}

impl SlimSlice {
    /// `slice` as the watch would have decoded it.
    pub fn of(slice: &EndpointSlice) -> Self {
        reencode(slice)
    }
}

/// A Node as the speaker keeps it: a `Node` holding only what it reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "NodeIn")]
pub struct SlimNode {
    /// Name, uid, resourceVersion, labels.
    pub metadata: ObjectMeta,
    /// `NetworkUnavailable` conditions and `InternalIP` addresses.
    pub status: Option<NodeStatus>,
}
slim_resource!(SlimNode, Node);

#[derive(Deserialize, Default)]
#[serde(default)]
struct NodeIn {
    metadata: MetaIn,
    status: Option<NodeStatusIn>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NodeStatusIn {
    conditions: Option<Vec<TypedIn>>,
    addresses: Option<Vec<TypedIn>>,
}

/// A condition (`type`, `status`) or an address (`type`, `address`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct TypedIn {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    address: String,
}

impl From<NodeIn> for SlimNode {
    fn from(mut n: NodeIn) -> Self {
        let mut metadata = n.metadata.identity();
        metadata.labels = n.metadata.labels.take().filter(|l| !l.is_empty());
        SlimNode {
            metadata,
            status: n.status.map(|st| NodeStatus {
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
            }),
        }
    }
}

impl SlimNode {
    /// `node` as the watch would have decoded it.
    pub fn of(node: &Node) -> Self {
        reencode(node)
    }

    /// As a `Node` (for [`crate::election::NodeInfo::from_node`] and
    /// [`super::heartbeat::node_address`]).
    pub fn into_node(self) -> Node {
        Node {
            metadata: self.metadata,
            spec: None,
            status: self.status,
        }
    }
}

/// `obj` decoded as `T` (the decoder of the watch).
fn reencode<S: serde::Serialize, T: serde::de::DeserializeOwned + Default>(obj: &S) -> T {
    serde_json::to_value(obj)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Whether this speaker (handling `lb_class`) can announce `svc`: a LoadBalancer Service of
/// its class with an ingress IP.
pub fn announceable(svc: &KeptService, lb_class: Option<&str>) -> bool {
    svc.facts.load_balancer && svc.class() == lb_class && !svc.facts.ingress.is_empty()
}

/// Whether the change of a Service from `old` to `new` (`None`: absent) can change what the
/// speaker announces: one of them is announceable and they differ in more than their
/// resourceVersion.
pub fn service_matters(
    old: Option<&KeptService>,
    new: Option<&KeptService>,
    lb_class: Option<&str>,
) -> bool {
    let counts = |s: Option<&KeptService>| s.is_some_and(|s| announceable(s, lb_class));
    let same = |a: &KeptService, b: &KeptService| {
        a.facts == b.facts && a.class() == b.class() && a.uid() == b.uid()
    };
    (counts(old) || counts(new))
        && match (old, new) {
            (Some(a), Some(b)) => !same(a, b),
            (None, None) => false,
            _ => true,
        }
}

/// Whether the change of a (slim) Node from `old` to `new` can change what the speaker
/// does (eligibility, labels, heartbeat address, existence).
pub fn node_matters(old: Option<&Node>, new: Option<&Node>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => {
            a.metadata.name != b.metadata.name
                || a.metadata.uid != b.metadata.uid
                || a.metadata.labels != b.metadata.labels
                || a.status != b.status
        }
        (None, None) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::election::{service_view, view_of, NodeInfo};
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
        crate::speaker::index::tests::config("192.168.1.0/24")
    }

    /// The view rule over slim objects.
    fn slim_view(
        s: &SlimService,
        sl: &SlimSlice,
        c: &Config,
    ) -> Option<crate::election::ServiceView> {
        let eps = sl
            .nodes
            .iter()
            .map(|n| Some(n.as_str()))
            .chain(sl.nodeless.then_some(None));
        view_of(&s.facts, eps, c).ok()
    }

    #[test]
    fn load_balancer_service_keeps_what_the_election_reads() {
        let a = full_service("LoadBalancer");
        let b = SlimService::of(&a);
        assert_eq!(b.metadata.uid.as_deref(), Some("u-1"));
        assert!(b.metadata.managed_fields.is_none() && b.metadata.annotations.is_none());
        assert_eq!(b.facts.sharing_key.as_deref(), Some("k"));
        assert!(b.facts.ingress.iter().eq(["192.168.1.10"]));
        let sl = full_slice(json!([{"addresses": ["10.0.0.1"], "nodeName": "n1"}]));
        let c = config();
        assert_eq!(
            service_view(&a, [&sl], &c).ok(),
            slim_view(&b, &SlimSlice::of(&sl), &c)
        );
        assert!(service_view(&a, [&sl], &c).is_ok());
        let kept = KeptService::from(b.clone());
        assert!(announceable(&kept, None));
        assert!(!announceable(&kept, Some("other")));
        assert_eq!(kept.facts, b.facts);
        assert_eq!(kept.object_ref(), kube::Resource::object_ref(&b, &()));
        // uid, resourceVersion and class, each present or not, read back as kept
        let mut k = kept.clone();
        for (uid, rv, class) in [
            (None, None, None),
            (Some(""), None, Some("")),
            (None, Some("7"), None),
            (Some("u:1"), Some(""), Some("c:1")),
            (Some("1:é"), Some("12"), Some("example.com/lb")),
        ] {
            k.set_identity(uid, rv, class);
            assert_eq!((k.uid(), k.resource_version(), k.class()), (uid, rv, class));
        }
        let none = KeptService::default();
        assert_eq!(
            (none.uid(), none.resource_version(), none.class()),
            (None, None, None)
        );
    }

    /// What the index boxes per Service: 96 bytes (a size class of its own in jemalloc, where
    /// the 128 it was with the class beside the packed identity took the next one).
    #[test]
    fn kept_service_is_96_bytes() {
        assert!(std::mem::size_of::<KeptService>() <= 96);
    }

    #[test]
    fn other_services_are_not_announceable() {
        let s = KeptService::of(&full_service("ClusterIP"));
        assert!(!s.facts.load_balancer && !announceable(&s, None));
        let mut no_ip = full_service("LoadBalancer");
        no_ip.status = None;
        assert!(!announceable(&KeptService::of(&no_ip), None));
    }

    #[test]
    fn slice_keeps_the_nodes_of_its_serving_endpoints() {
        let s = SlimSlice::of(&full_slice(json!([
            {"addresses": ["10.0.0.1"], "nodeName": "n2", "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "nodeName": "n1"},
            {"addresses": ["10.0.0.3"], "nodeName": "n2"},
            {"addresses": ["10.0.0.4"], "nodeName": "n3", "conditions": {"ready": false}},
            {"addresses": ["10.0.0.5"], "nodeName": "n4", "conditions": {"ready": false, "serving": true}},
            {"addresses": ["10.0.0.6"]}
        ])));
        assert_eq!(s.nodes, ["n1", "n2", "n4"]);
        assert!(s.nodeless);
        assert_eq!(s.service.as_deref(), Some("web"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
        assert!(s.metadata.labels.is_none() && s.metadata.managed_fields.is_none());
    }

    #[test]
    fn node_keeps_eligibility_labels_and_internal_address() {
        let a = full_node();
        let b = SlimNode::of(&a).into_node();
        assert_eq!(NodeInfo::from_node(&a, true), NodeInfo::from_node(&b, true));
        assert_eq!(
            super::super::heartbeat::node_address(&a, 7947),
            super::super::heartbeat::node_address(&b, 7947)
        );
        let st = b.status.as_ref().unwrap();
        assert!(st.images.is_none() && st.capacity.is_none());
        assert_eq!(st.conditions.as_ref().unwrap().len(), 1);
        assert!(b.metadata.annotations.is_none());
    }

    #[test]
    fn heartbeat_of_a_node_does_not_matter_a_label_does() {
        let old = SlimNode::of(&full_node()).into_node();
        let mut beat = full_node();
        beat.metadata.resource_version = Some("10".into());
        beat.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_heartbeat_time = None;
        let beat = SlimNode::of(&beat).into_node();
        assert!(!node_matters(Some(&old), Some(&beat)));
        let mut relabelled = full_node();
        relabelled.metadata.labels = None;
        let relabelled = SlimNode::of(&relabelled).into_node();
        assert!(node_matters(Some(&old), Some(&relabelled)));
        assert!(node_matters(Some(&old), None));
    }

    #[test]
    fn only_announceable_services_matter() {
        let lb = KeptService::of(&full_service("LoadBalancer"));
        let cip = KeptService::of(&full_service("ClusterIP"));
        // A ClusterIP Service changing or going away: nothing to do.
        let mut cip2 = cip.clone();
        cip2.set_identity(Some("u-2"), cip.resource_version(), cip.class());
        assert!(!service_matters(Some(&cip), Some(&cip2), None));
        assert!(!service_matters(Some(&cip), None, None));
        // Becoming or ceasing to be a LoadBalancer does.
        assert!(service_matters(Some(&cip), Some(&lb), None));
        assert!(service_matters(Some(&lb), Some(&cip), None));
        // A resourceVersion bump alone does not.
        let mut bump = lb.clone();
        bump.set_identity(lb.uid(), Some("43"), lb.class());
        assert_eq!(
            (bump.uid(), bump.resource_version()),
            (Some("u-1"), Some("43"))
        );
        assert!(!service_matters(Some(&lb), Some(&bump), None));
        // A label does.
        let mut relabelled = lb.clone();
        relabelled.facts.labels = Default::default();
        assert!(service_matters(Some(&lb), Some(&relabelled), None));
        // Another class's Service does not.
        let mut other = lb.clone();
        other.set_identity(lb.uid(), lb.resource_version(), Some("x"));
        let mut other2 = other.clone();
        other2.facts.labels = Default::default();
        assert!(!service_matters(Some(&other), Some(&other2), None));
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
        /// The view rule gives the same view over the slim objects as over the whole ones.
        #[test]
        fn slimming_never_changes_the_view(
            a in arb_endpoints(),
            ty in prop::sample::select(vec!["LoadBalancer", "ClusterIP"]),
            ingress in prop::collection::vec(
                prop::sample::select(vec!["192.168.1.10", "192.168.2.1", "", " 192.168.1.11", "x", "::ffff:192.168.1.10"]),
                0..3),
        ) {
            let c = config();
            let mut svc = full_service(ty);
            svc.status.as_mut().unwrap().load_balancer.as_mut().unwrap().ingress = Some(
                ingress.iter().map(|ip| k8s_openapi::api::core::v1::LoadBalancerIngress {
                    ip: Some(ip.to_string()), ..Default::default()
                }).collect());
            let sa = full_slice(a);
            prop_assert_eq!(
                service_view(&svc, [&sa], &c).ok(),
                slim_view(&SlimService::of(&svc), &SlimSlice::of(&sa), &c)
            );
        }
    }
}

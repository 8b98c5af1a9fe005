//! The controller's projection of a Service: only what it reads (pure).
//!
//! The controller keeps every Service of the cluster in its reflector cache. A full
//! `k8s_openapi` Service carries much it never looks at (managedFields, the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, selectors, port
//! names and target ports, session affinity, …). [`slim_service`] drops all of that as
//! objects arrive, so the cache costs a fraction of the memory and the reconcile code
//! still works on plain `Service` values (the same code paths as without slimming).
//!
//! Kept, because the controller reads it:
//! - `metadata`: name, namespace, uid, resourceVersion (Event `regarding`, the status
//!   patch precondition), labels (pool `serviceSelectors`), annotations with a MetalLB
//!   prefix (requested IPs / pool / sharing key, the pool annotation it writes, the
//!   deprecated-prefix warning);
//! - `spec`: type, loadBalancerClass, loadBalancerIP, clusterIP(s), ipFamilyPolicy,
//!   each port's protocol and port (sharing rules), externalTrafficPolicy and — only
//!   when it is `Local` — the selector (sharing requires the same backends);
//! - `status.loadBalancer.ingress` (ip and hostname: the entry count matters).

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::allocator::{LEGACY_PREFIX, PREFIX};

/// Whether an annotation key is one the controller reads or writes.
pub fn is_metallb_annotation(key: &str) -> bool {
    key.starts_with(PREFIX) || key.starts_with(LEGACY_PREFIX)
}

/// Reduces `svc` in place to the fields the controller reads (see the module docs).
pub fn slim_service(svc: &mut Service) {
    let meta = std::mem::take(&mut svc.metadata);
    let annotations = meta.annotations.and_then(|a| {
        let kept: std::collections::BTreeMap<String, String> = a
            .into_iter()
            .filter(|(k, _)| is_metallb_annotation(k))
            .collect();
        (!kept.is_empty()).then_some(kept)
    });
    svc.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels.filter(|l| !l.is_empty()),
        annotations,
        ..ObjectMeta::default()
    };
    svc.spec = svc.spec.take().map(slim_spec);
    svc.status = svc.status.take().map(|st| ServiceStatus {
        load_balancer: st.load_balancer.map(|lb| LoadBalancerStatus {
            ingress: lb.ingress.map(|ing| {
                ing.into_iter()
                    .map(|i| LoadBalancerIngress {
                        ip: i.ip,
                        hostname: i.hostname,
                        ..LoadBalancerIngress::default()
                    })
                    .collect()
            }),
        }),
        conditions: None,
    });
}

fn slim_spec(spec: ServiceSpec) -> ServiceSpec {
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    ServiceSpec {
        type_: spec.type_,
        load_balancer_class: spec.load_balancer_class,
        load_balancer_ip: spec.load_balancer_ip,
        cluster_ip: spec.cluster_ip,
        cluster_ips: spec.cluster_ips,
        ip_family_policy: spec.ip_family_policy,
        ports: spec.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| ServicePort {
                    port: p.port,
                    protocol: p.protocol,
                    ..ServicePort::default()
                })
                .collect()
        }),
        selector: if local { spec.selector } else { None },
        external_traffic_policy: spec.external_traffic_policy,
        ..ServiceSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::{legacy_annotations, ServiceRequest};
    use crate::controller::core::Core;
    use crate::controller::status::{self, DesiredStatus};
    use crate::selector::Labels;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn full() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                    "metallb.io/loadBalancerIPs": "192.168.1.10",
                    "metallb.universe.tf/allow-shared-ip": "k",
                    "metallb.io/ip-allocated-from-pool": "p",
                    "other.example/x": "y"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"]
            },
            "spec": {
                "type": "LoadBalancer", "loadBalancerClass": "c",
                "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::7"],
                "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack",
                "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                "healthCheckNodePort": 31000,
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}
                ]
            },
            "status": {
                "loadBalancer": {"ingress": [
                    {"ip": "192.168.1.10", "ipMode": "VIP", "ports": [{"port": 80, "protocol": "TCP"}]},
                    {"hostname": "lb.example"}
                ]},
                "conditions": [{"type": "x", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "r", "message": "m"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn drops_what_the_controller_never_reads() {
        let mut s = full();
        slim_service(&mut s);
        assert!(s.metadata.managed_fields.is_none());
        assert!(s.metadata.finalizers.is_none());
        assert!(s.metadata.creation_timestamp.is_none());
        let ann = s.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            ann.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "metallb.io/ip-allocated-from-pool",
                "metallb.io/loadBalancerIPs",
                "metallb.universe.tf/allow-shared-ip"
            ]
        );
        let spec = s.spec.as_ref().unwrap();
        assert!(spec.session_affinity.is_none() && spec.health_check_node_port.is_none());
        assert!(spec.ip_families.is_none());
        let p = &spec.ports.as_ref().unwrap()[0];
        assert_eq!((p.port, p.protocol.as_deref()), (80, Some("TCP")));
        assert!(p.name.is_none() && p.target_port.is_none() && p.node_port.is_none());
        let st = s.status.as_ref().unwrap();
        assert!(st.conditions.is_none());
        let ing = st.load_balancer.as_ref().unwrap().ingress.as_ref().unwrap();
        assert_eq!(ing.len(), 2);
        assert!(ing[0].ports.is_none() && ing[0].ip_mode.is_none());
        assert_eq!(ing[1].hostname.as_deref(), Some("lb.example"));
    }

    #[test]
    fn selector_kept_only_for_local_traffic_policy() {
        let mut local = full();
        slim_service(&mut local);
        assert!(local.spec.unwrap().selector.is_some());
        let mut cluster = full();
        cluster.spec.as_mut().unwrap().external_traffic_policy = Some("Cluster".into());
        slim_service(&mut cluster);
        assert!(cluster.spec.unwrap().selector.is_none());
    }

    #[test]
    fn empty_annotation_map_becomes_none() {
        let mut s = full();
        s.metadata.annotations = Some(BTreeMap::from([("a/b".to_string(), "c".to_string())]));
        slim_service(&mut s);
        assert!(s.metadata.annotations.is_none());
    }

    /// Everything the controller derives from a Service is the same before and after.
    fn same_view(a: &Service, b: &Service) {
        let ns = Labels::from([("team".to_string(), "a".to_string())]);
        assert_eq!(
            format!("{:?}", ServiceRequest::from_service(a, &ns)),
            format!("{:?}", ServiceRequest::from_service(b, &ns))
        );
        assert_eq!(legacy_annotations(a), legacy_annotations(b));
        assert_eq!(status::current_ingress(a), status::current_ingress(b));
        assert_eq!(status::current_pool(a), status::current_pool(b));
        for d in [
            DesiredStatus::cleared(),
            DesiredStatus {
                ips: vec!["192.168.1.10".parse().unwrap()],
                pool: Some("p".into()),
            },
        ] {
            assert_eq!(status::status_patch(a, &d), status::status_patch(b, &d));
        }
        // The reconcile core decides the same (status patch, Events, outcome).
        let pool = crate::config::Pool {
            name: "p".into(),
            labels: Labels::new(),
            cidrs: vec![
                "192.168.1.0/24".parse().unwrap(),
                "fd00::/120".parse().unwrap(),
            ],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            frozen: false,
        };
        for class in [None, Some("c".to_string())] {
            let mut ca = Core::new(vec![pool.clone()], class.clone());
            let mut cb = Core::new(vec![pool.clone()], class);
            assert_eq!(
                format!("{:?}", ca.reconcile(a)),
                format!("{:?}", cb.reconcile(b))
            );
        }
        assert_eq!(a.metadata.uid, b.metadata.uid);
        assert_eq!(a.metadata.resource_version, b.metadata.resource_version);
        assert_eq!(
            a.spec.as_ref().map(|s| &s.type_),
            b.spec.as_ref().map(|s| &s.type_)
        );
        assert_eq!(
            a.spec.as_ref().map(|s| &s.load_balancer_class),
            b.spec.as_ref().map(|s| &s.load_balancer_class)
        );
    }

    #[test]
    fn controller_view_unchanged_on_a_full_service() {
        let a = full();
        let mut b = a.clone();
        slim_service(&mut b);
        same_view(&a, &b);
        // Idempotent.
        let mut c = b.clone();
        slim_service(&mut c);
        assert_eq!(b, c);
    }

    fn opt<T: std::fmt::Debug + Clone>(
        s: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = Option<T>> {
        prop::option::of(s)
    }

    prop_compose! {
        fn arb_service()(
            ty in opt(prop::sample::select(vec!["LoadBalancer", "ClusterIP", "NodePort", ""])),
            class in opt(prop::sample::select(vec!["", "c", "other"])),
            spec_ip in opt(prop::sample::select(vec!["192.168.1.5", "fd00::5", "junk", ""])),
            ann in prop::collection::btree_map(
                prop::sample::select(vec![
                    "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs",
                    "metallb.io/address-pool", "metallb.universe.tf/address-pool",
                    "metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip",
                    "metallb.io/ip-allocated-from-pool", "example.com/x",
                    "kubectl.kubernetes.io/last-applied-configuration",
                ]).prop_map(String::from),
                prop::sample::select(vec!["192.168.1.5", "192.168.1.5,fd00::5", "p", "", "x y"])
                    .prop_map(String::from),
                0..5),
            labels in prop::collection::btree_map("[a-c]", "[x-z]", 0..3),
            cluster in opt(prop::sample::select(vec!["10.96.0.1", "None", "fd00::1", "bad"])),
            policy in opt(prop::sample::select(vec!["SingleStack", "PreferDualStack", "RequireDualStack", "Weird"])),
            etp in opt(prop::sample::select(vec!["Local", "Cluster"])),
            selector in prop::collection::btree_map("[a-c]", "[x-z]", 0..3),
            ports in prop::collection::vec((0i32..70000, opt(prop::sample::select(vec!["TCP", "UDP", "SCTP", "ICMP"])), opt("[a-z]{1,4}")), 0..4),
            ingress in prop::collection::vec((opt(prop::sample::select(vec!["192.168.1.5", "fd00::5", "nonsense"])), opt(Just("h.example"))), 0..3),
        ) -> Service {
            let mut s = Service::default();
            s.metadata.name = Some("s".into());
            s.metadata.namespace = Some("n".into());
            s.metadata.uid = Some("u".into());
            s.metadata.resource_version = Some("7".into());
            s.metadata.labels = Some(labels);
            s.metadata.annotations = Some(ann);
            s.spec = Some(ServiceSpec {
                type_: ty.map(String::from),
                load_balancer_class: class.map(String::from),
                load_balancer_ip: spec_ip.map(String::from),
                cluster_ip: cluster.map(String::from),
                cluster_ips: cluster.map(|c| vec![c.to_string()]),
                ip_family_policy: policy.map(String::from),
                external_traffic_policy: etp.map(String::from),
                selector: Some(selector),
                session_affinity: Some("ClientIP".into()),
                ports: Some(ports.into_iter().map(|(port, proto, name)| ServicePort {
                    port,
                    protocol: proto.map(String::from),
                    name,
                    ..Default::default()
                }).collect()),
                ..Default::default()
            });
            s.status = Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(ingress.into_iter().map(|(ip, h)| LoadBalancerIngress {
                        ip: ip.map(String::from),
                        hostname: h.map(String::from),
                        ip_mode: Some("VIP".into()),
                        ..Default::default()
                    }).collect()),
                }),
                conditions: None,
            });
            s
        }
    }

    proptest! {
        #[test]
        fn slimming_never_changes_the_controller_view(a in arb_service()) {
            let mut b = a.clone();
            slim_service(&mut b);
            same_view(&a, &b);
        }
    }
}

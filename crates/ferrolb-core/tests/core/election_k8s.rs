//! Conversions from Kubernetes objects into the election's input types.

use std::collections::BTreeMap;

use ferrolb_core::config::{Config, Pool};
use ferrolb_core::election::*;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeCondition, NodeStatus, Service, ServiceSpec,
    ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn cfg() -> Config {
    let mut pools = BTreeMap::new();
    pools.insert(
        "p".to_string(),
        Pool {
            name: "p".into(),
            labels: Default::default(),
            cidrs: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            frozen: false,
        },
    );
    pools.insert(
        "q".to_string(),
        Pool {
            name: "q".into(),
            labels: Default::default(),
            cidrs: vec!["10.1.0.0/24".parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            frozen: false,
        },
    );
    Config {
        pools,
        l2_advertisements: vec![],
    }
}

fn service(ips: &[&str], etp: &str, ann: &[(&str, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            annotations: Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            external_traffic_policy: Some(etp.into()),
            ..Default::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    ips.iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }),
    }
}

fn ep(node: Option<&str>, ready: Option<bool>, serving: Option<bool>) -> Endpoint {
    Endpoint {
        addresses: vec!["192.0.2.1".into()],
        conditions: Some(EndpointConditions {
            ready,
            serving,
            terminating: None,
        }),
        node_name: node.map(str::to_string),
        ..Default::default()
    }
}

fn slice(ns: &str, svc: &str, eps: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(format!("{svc}-x")),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(eps),
        ports: None,
    }
}

#[test]
fn endpoint_serving_rule() {
    assert!(endpoint_can_serve(&ep(Some("n"), None, None)));
    assert!(endpoint_can_serve(&ep(Some("n"), Some(true), None)));
    assert!(!endpoint_can_serve(&ep(Some("n"), Some(false), None)));
    assert!(!endpoint_can_serve(&ep(
        Some("n"),
        Some(false),
        Some(false)
    )));
    // Terminating but still serving counts.
    assert!(endpoint_can_serve(&ep(Some("n"), Some(false), Some(true))));
    let mut no_cond = ep(Some("n"), None, None);
    no_cond.conditions = None;
    assert!(endpoint_can_serve(&no_cond));
}

#[test]
fn service_view_from_objects() {
    let svc = service(
        &["10.0.0.5", "fd00::5"],
        "Local",
        &[
            (SHARED_IP_ANNOTATION, "new"),
            (LEGACY_SHARED_IP_ANNOTATION, "old"),
        ],
    );
    let slices = vec![
        slice(
            "shop",
            "web",
            vec![
                ep(Some("n1"), Some(true), None),
                ep(Some("n2"), Some(false), None),
                ep(Some("n3"), Some(false), Some(true)),
            ],
        ),
        slice("shop", "web", vec![ep(Some("n4"), None, None)]),
        // Other Service, same namespace; same Service name in another namespace.
        slice("shop", "db", vec![ep(Some("n5"), Some(true), None)]),
        slice("other", "web", vec![ep(Some("n6"), Some(true), None)]),
    ];
    let v = service_view(&svc, &slices, &cfg()).unwrap();
    assert_eq!(&*v.key, "shop/web");
    assert_eq!(
        v.ips,
        vec![
            "10.0.0.5".parse::<std::net::IpAddr>().unwrap(),
            "fd00::5".parse().unwrap()
        ]
    );
    assert_eq!(v.pool.as_deref(), Some("p"));
    assert!(v.etp_local);
    assert_eq!(v.sharing_key.as_deref(), Some("new"));
    assert_eq!(
        v.serving_endpoint_nodes,
        ["n1", "n3", "n4"].into_iter().collect()
    );
    assert!(v.has_serving_endpoint);
    assert_eq!(v.labels.get("app"), Some("web"));

    // Legacy annotation alone; Cluster policy; no slices.
    let v = service_view(
        &service(
            &["10.0.0.6"],
            "Cluster",
            &[(LEGACY_SHARED_IP_ANNOTATION, "old")],
        ),
        &[],
        &cfg(),
    )
    .unwrap();
    assert_eq!(v.sharing_key.as_deref(), Some("old"));
    assert!(!v.etp_local);
    assert!(!v.has_serving_endpoint);

    // An endpoint without nodeName still makes the Service servable.
    let v = service_view(
        &service(&["10.0.0.6"], "Cluster", &[]),
        &[slice("shop", "web", vec![ep(None, Some(true), None)])],
        &cfg(),
    )
    .unwrap();
    assert!(v.has_serving_endpoint);
    assert!(v.serving_endpoint_nodes.is_empty());
}

#[test]
fn service_view_pool_and_errors() {
    // IPs in two different pools: no pool.
    let v = service_view(
        &service(&["10.0.0.1", "10.1.0.1"], "Cluster", &[]),
        &[],
        &cfg(),
    )
    .unwrap();
    assert_eq!(v.pool, None);
    let v = service_view(&service(&["10.1.0.1"], "Cluster", &[]), &[], &cfg()).unwrap();
    assert_eq!(v.pool.as_deref(), Some("q"));
    // Mapped IPv6 is canonicalised, duplicates dropped.
    let v = service_view(
        &service(&["::ffff:10.0.0.1", "10.0.0.1"], "Cluster", &[]),
        &[],
        &cfg(),
    )
    .unwrap();
    assert_eq!(v.ips, vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]);

    assert_eq!(
        service_view(&service(&["not-an-ip"], "Cluster", &[]), &[], &cfg()),
        Err(ViewError::InvalidIngressIp("not-an-ip".into()))
    );
    assert_eq!(
        service_view(&service(&[], "Cluster", &[]), &[], &cfg()),
        Err(ViewError::NoIngressIp)
    );
    let mut np = service(&["10.0.0.1"], "Cluster", &[]);
    np.spec.as_mut().unwrap().type_ = Some("NodePort".into());
    assert_eq!(
        service_view(&np, &[], &cfg()),
        Err(ViewError::NotLoadBalancer)
    );
    np.spec = None;
    assert_eq!(
        service_view(&np, &[], &cfg()),
        Err(ViewError::NotLoadBalancer)
    );
    let mut anon = service(&["10.0.0.1"], "Cluster", &[]);
    anon.metadata.namespace = None;
    assert_eq!(
        service_view(&anon, &[], &cfg()),
        Err(ViewError::MissingName)
    );
    let mut empty_status = service(&["10.0.0.1"], "Cluster", &[]);
    empty_status.status = None;
    assert_eq!(
        service_view(&empty_status, &[], &cfg()),
        Err(ViewError::NoIngressIp)
    );
}

#[test]
fn node_info_from_node() {
    let mk = |conds: Vec<(&str, &str)>, labels: &[(&str, &str)]| Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(
                conds
                    .into_iter()
                    .map(|(t, s)| NodeCondition {
                        type_: t.into(),
                        status: s.into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
    };
    let n = NodeInfo::from_node(
        &mk(
            vec![("Ready", "True"), ("NetworkUnavailable", "False")],
            &[],
        ),
        true,
    )
    .unwrap();
    assert!(!n.network_unavailable);
    assert!(n.speaker_alive);
    assert!(!n.excluded_from_lb());
    let n = NodeInfo::from_node(
        &mk(
            vec![("NetworkUnavailable", "True")],
            &[(EXCLUDE_LB_LABEL, "")],
        ),
        false,
    )
    .unwrap();
    assert!(n.network_unavailable);
    assert!(!n.speaker_alive);
    assert!(n.excluded_from_lb());
    let mut anon = mk(vec![], &[]);
    anon.metadata.name = None;
    assert_eq!(NodeInfo::from_node(&anon, true), None);
    anon.status = None;
    anon.metadata.name = Some("n2".into());
    assert!(
        !NodeInfo::from_node(&anon, true)
            .unwrap()
            .network_unavailable
    );
}

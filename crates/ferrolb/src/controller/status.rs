//! What the controller writes on a Service, computed purely: the desired
//! `status.loadBalancer.ingress` and `metallb.io/ip-allocated-from-pool` annotation,
//! compared with what the Service already carries, turned into a merge patch only
//! when something differs.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

/// Annotation naming the pool an IP came from (written by the controller).
pub const POOL_ANNOTATION: &str = "metallb.io/ip-allocated-from-pool";

/// What the controller wants on a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredStatus {
    /// `status.loadBalancer.ingress[].ip`, in order. Empty: no IP.
    pub ips: Vec<IpAddr>,
    /// Value of [`POOL_ANNOTATION`]; `None` removes it.
    pub pool: Option<String>,
}

impl DesiredStatus {
    /// No IP, no annotation.
    pub fn cleared() -> Self {
        Self {
            ips: Vec::new(),
            pool: None,
        }
    }
}

/// The ingress IP strings currently in the Service status (hostnames and empty entries
/// skipped: [`crate::service::ingress_ips`]).
pub fn current_ingress(svc: &Service) -> Vec<String> {
    crate::service::ingress_ips(svc)
        .map(str::to_string)
        .collect()
}

/// The current value of [`POOL_ANNOTATION`].
pub fn current_pool(svc: &Service) -> Option<&str> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POOL_ANNOTATION))
        .map(String::as_str)
}

/// Whether the current status equals `desired` (IP order matters: the L2 election
/// hashes the first IP). IPs are compared parsed, so `fc00::1` equals `fc00:0::1`.
pub fn status_matches(svc: &Service, desired: &DesiredStatus) -> bool {
    let entries = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map_or(0, Vec::len);
    let cur = current_ingress(svc);
    entries == desired.ips.len()
        && cur.len() == desired.ips.len()
        && cur
            .iter()
            .zip(&desired.ips)
            .all(|(c, d)| c.trim().parse::<IpAddr>().ok() == Some(*d))
        && current_pool(svc) == desired.pool.as_deref()
}

/// The merge patch for the `status` subresource turning the Service into `desired`,
/// or `None` when it already is. The patch carries `metadata.resourceVersion`, so a
/// Service changed since it was read yields 409 Conflict instead of a stale write.
pub fn status_patch(svc: &Service, desired: &DesiredStatus) -> Option<Value> {
    if status_matches(svc, desired) {
        return None;
    }
    let ingress: Value = if desired.ips.is_empty() {
        Value::Null
    } else {
        Value::Array(
            desired
                .ips
                .iter()
                .map(|ip| json!({ "ip": ip.to_string() }))
                .collect(),
        )
    };
    let mut meta = json!({ "annotations": { POOL_ANNOTATION: desired.pool } });
    if let Some(rv) = &svc.metadata.resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    Some(json!({
        "metadata": meta,
        "status": { "loadBalancer": { "ingress": ingress } }
    }))
}

/// MetalLB's `IPAllocated` message: `Assigned IP ["192.168.100.5"]`.
pub fn assigned_message(ips: &[IpAddr]) -> String {
    let list: Vec<String> = ips.iter().map(|i| format!("{:?}", i.to_string())).collect();
    format!("Assigned IP [{}]", list.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};

    fn svc(ips: &[&str], pool: Option<&str>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("a".into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.resource_version = Some("7".into());
        if let Some(p) = pool {
            s.metadata.annotations = Some([(POOL_ANNOTATION.to_string(), p.to_string())].into());
        }
        if !ips.is_empty() {
            s.status = Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ips.iter()
                            .map(|i| LoadBalancerIngress {
                                ip: Some(i.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            });
        }
        s
    }

    fn want(ips: &[&str], pool: Option<&str>) -> DesiredStatus {
        DesiredStatus {
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            pool: pool.map(str::to_string),
        }
    }

    #[test]
    fn no_patch_when_equal() {
        let s = svc(&["10.0.0.1", "fc00::1"], Some("p"));
        assert!(status_patch(&s, &want(&["10.0.0.1", "fc00:0::1"], Some("p"))).is_none());
        assert!(status_patch(&svc(&[], None), &DesiredStatus::cleared()).is_none());
    }

    #[test]
    fn patch_sets_ips_annotation_and_precondition() {
        let s = svc(&[], None);
        let p = status_patch(&s, &want(&["10.0.0.1"], Some("p"))).unwrap();
        assert_eq!(
            p,
            json!({
                "metadata": {"resourceVersion": "7", "annotations": {POOL_ANNOTATION: "p"}},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
            })
        );
    }

    #[test]
    fn patch_on_order_pool_or_ip_change_and_clear() {
        let s = svc(&["10.0.0.1", "fc00::1"], Some("p"));
        assert!(status_patch(&s, &want(&["fc00::1", "10.0.0.1"], Some("p"))).is_some());
        assert!(status_patch(&s, &want(&["10.0.0.1", "fc00::1"], Some("q"))).is_some());
        assert!(status_patch(&s, &want(&["10.0.0.2", "fc00::1"], Some("p"))).is_some());
        let clear = status_patch(&s, &DesiredStatus::cleared()).unwrap();
        assert_eq!(clear["status"]["loadBalancer"]["ingress"], Value::Null);
        assert_eq!(
            clear["metadata"]["annotations"][POOL_ANNOTATION],
            Value::Null
        );
    }

    #[test]
    fn garbage_in_status_is_replaced() {
        let s = svc(&["not-an-ip"], Some("p"));
        assert!(status_patch(&s, &want(&["10.0.0.1"], Some("p"))).is_some());
        assert!(status_patch(&s, &DesiredStatus::cleared()).is_some());
    }

    #[test]
    fn message_format_matches_metallb() {
        let ips: Vec<IpAddr> = vec!["192.168.100.5".parse().unwrap()];
        assert_eq!(assigned_message(&ips), r#"Assigned IP ["192.168.100.5"]"#);
    }
}

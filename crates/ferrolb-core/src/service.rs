//! What several parts of ferrolb read of a Service object the same way.

use k8s_openapi::api::core::v1::Service;

/// The `ip` of each `status.loadBalancer.ingress` entry, in order, as written (entries
/// without one — hostname-only — and empty ones left out). Callers parse as they need.
pub fn ingress_ips(svc: &Service) -> impl Iterator<Item = &str> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().filter(|ip| !ip.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_ips_in_order_without_hostnames_or_empty_entries() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.1"}, {"hostname": "lb.example"}, {"ip": ""}, {"ip": "2001:db8::1"}
            ]}}
        }))
        .unwrap();
        assert_eq!(
            ingress_ips(&svc).collect::<Vec<_>>(),
            ["192.0.2.1", "2001:db8::1"]
        );
        assert_eq!(ingress_ips(&Service::default()).count(), 0);
    }
}

//! Kind-specific defaulting done by a real API server on create and update: Service cluster IPs,
//! IP families and node ports, Namespace phase, CRD conditions. Pure functions on JSON values.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Map, Value};

/// Service cluster-IP range for IPv4 (`10.96.0.0/12`, as kubeadm).
const V4_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const V4_SIZE: u32 = 1 << 20;
/// Service cluster-IP range for IPv6 (`fd00:10:96::/112`).
const V6_BASE: u128 = 0xfd00_0010_0096_0000_0000_0000_0000_0000;
const V6_SIZE: u128 = 1 << 16;
/// NodePort range.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Applies create-time defaults. `existing` are the other objects of the same resource.
pub fn on_create<'a>(
    group: &str,
    plural: &str,
    obj: &mut Value,
    existing: impl Iterator<Item = &'a Value> + Clone,
) {
    match (group, plural) {
        ("", "services") => default_service(obj, None, existing),
        ("", "namespaces") => {
            obj["status"] = json!({"phase": "Active"});
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
            obj["status"] = json!({
                "acceptedNames": names,
                "storedVersions": obj.pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>())
                    .unwrap_or_default(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                ]
            });
        }
        _ => {}
    }
}

/// Applies update-time defaults: immutable allocated fields the request left out are carried
/// over from `old`, then create-time defaults fill any remaining gaps.
pub fn on_update<'a>(
    group: &str,
    plural: &str,
    old: &Value,
    obj: &mut Value,
    existing: impl Iterator<Item = &'a Value> + Clone,
) {
    if (group, plural) == ("", "services") {
        default_service(obj, Some(old), existing);
    }
}

fn default_service<'a>(
    obj: &mut Value,
    old: Option<&Value>,
    existing: impl Iterator<Item = &'a Value> + Clone,
) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let old_spec = old.and_then(|o| o.get("spec")).and_then(Value::as_object);
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let set_default = |spec: &mut Map<String, Value>, k: &str, v: Value| {
        if spec.get(k).is_none_or(Value::is_null) {
            spec.insert(k.into(), v);
        }
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return;
    }
    if let Some(old_spec) = old_spec {
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old_spec.get(k) {
                set_default(spec, k, v.clone());
            }
        }
    }
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    let policy = spec["ipFamilyPolicy"]
        .as_str()
        .unwrap_or("SingleStack")
        .to_string();
    // Families: explicit, else from the given cluster IPs, else from the policy.
    let given_ips: Vec<String> = match spec.get("clusterIPs").and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        None => spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
    };
    let headless = given_ips.first().is_some_and(|ip| ip == "None");
    let mut families: Vec<String> = match spec.get("ipFamilies").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ if !given_ips.is_empty() && !headless => given_ips
            .iter()
            .map(|ip| family_of(ip).to_string())
            .collect(),
        _ => vec!["IPv4".into()],
    };
    if policy != "SingleStack" && families.len() == 1 {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(other.into());
    }
    if policy == "SingleStack" {
        families.truncate(1);
    }
    spec.insert("ipFamilies".into(), json!(families));
    if headless {
        spec.insert("clusterIP".into(), json!("None"));
        spec.insert("clusterIPs".into(), json!(["None"]));
    } else {
        let mut used: BTreeSet<String> = BTreeSet::new();
        // Only scan the other Services when something has to be allocated.
        let needs_ips = given_ips.len() < families.len();
        for o in existing.clone().filter(|_| needs_ips) {
            for ip in o
                .pointer("/spec/clusterIPs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = ip.as_str() {
                    used.insert(s.to_string());
                }
            }
        }
        let mut ips = given_ips.clone();
        for fam in families.iter().skip(ips.len()) {
            if let Some(ip) = allocate_ip(fam, &used) {
                used.insert(ip.clone());
                ips.push(ip);
            }
        }
        if let Some(first) = ips.first() {
            spec.insert("clusterIP".into(), json!(first));
        }
        spec.insert("clusterIPs".into(), json!(ips));
    }
    // Ports: protocol, targetPort, node ports.
    let wants_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer"
            && spec
                .get("allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false));
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty == "LoadBalancer" || ty == "NodePort" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    let mut used_ports: BTreeSet<u64> = BTreeSet::new();
    let needs_ports = wants_node_ports
        && spec
            .get("ports")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.get("nodePort").is_none_or(Value::is_null))
            });
    for o in existing.filter(|_| needs_ports) {
        for p in o
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                used_ports.insert(n);
            }
        }
    }
    let old_ports: Vec<Value> = old_spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            if p.get("protocol").is_none_or(Value::is_null) {
                p.insert("protocol".into(), json!("TCP"));
            }
            if p.get("targetPort").is_none_or(Value::is_null) {
                if let Some(port) = p.get("port").cloned() {
                    p.insert("targetPort".into(), port);
                }
            }
            if wants_node_ports && p.get("nodePort").is_none_or(Value::is_null) {
                let reuse = old_ports
                    .iter()
                    .find(|o| {
                        o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                    })
                    .and_then(|o| o.get("nodePort"))
                    .and_then(Value::as_u64);
                let n =
                    reuse.or_else(|| NODE_PORTS.map(u64::from).find(|n| !used_ports.contains(n)));
                if let Some(n) = n {
                    used_ports.insert(n);
                    p.insert("nodePort".into(), json!(n));
                }
            }
        }
    }
}

fn family_of(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn allocate_ip(family: &str, used: &BTreeSet<String>) -> Option<String> {
    if family == "IPv6" {
        (1..V6_SIZE - 1)
            .map(|i| Ipv6Addr::from(V6_BASE + i).to_string())
            .find(|ip| !used.contains(ip))
    } else {
        (1..V4_SIZE - 1)
            .map(|i| Ipv4Addr::from(V4_BASE + i).to_string())
            .find(|ip| !used.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "s"}, "spec": spec})
    }

    #[test]
    fn service_gets_cluster_ip_family_and_node_ports() {
        let mut a = svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        on_create("", "services", &mut a, std::iter::empty());
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(a["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(a["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(a["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(a["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(a["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(a["spec"]["ports"][0]["targetPort"], 80);
        let mut b = svc(
            json!({"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack",
            "ports": [{"port": 80}]}),
        );
        on_create("", "services", &mut b, [&a].into_iter());
        assert_eq!(
            b["spec"]["clusterIPs"],
            json!(["10.96.0.2", "fd00:10:96::1"])
        );
        assert_eq!(b["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(b["spec"]["ports"][0]["nodePort"], 30001);
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut a = svc(json!({"type": "LoadBalancer", "ipFamilies": ["IPv6"],
            "externalTrafficPolicy": "Local", "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 53, "protocol": "UDP"}]}));
        on_create("", "services", &mut a, std::iter::empty());
        assert_eq!(a["spec"]["clusterIP"], "fd00:10:96::1");
        assert_eq!(a["spec"]["externalTrafficPolicy"], "Local");
        assert!(a["spec"]["ports"][0].get("nodePort").is_none());
        let mut h = svc(json!({"clusterIP": "None"}));
        on_create("", "services", &mut h, std::iter::empty());
        assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
        let mut e = svc(json!({"type": "ExternalName", "externalName": "x"}));
        on_create("", "services", &mut e, std::iter::empty());
        assert!(e["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn update_keeps_allocated_fields() {
        let mut a = svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        on_create("", "services", &mut a, std::iter::empty());
        let mut n = svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        on_update("", "services", &a, &mut n, std::iter::empty());
        assert_eq!(n["spec"]["clusterIP"], a["spec"]["clusterIP"]);
        assert_eq!(n["spec"]["ports"][0]["nodePort"], 30000);
    }

    #[test]
    fn namespaces_and_crds() {
        let mut ns = json!({"metadata": {"name": "x"}});
        on_create("", "namespaces", &mut ns, std::iter::empty());
        assert_eq!(ns["status"]["phase"], "Active");
        let mut crd = json!({"spec": {"names": {"kind": "W"}, "versions": [{"name": "v1", "storage": true}]}});
        on_create(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            &mut crd,
            std::iter::empty(),
        );
        assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
        assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
    }
}

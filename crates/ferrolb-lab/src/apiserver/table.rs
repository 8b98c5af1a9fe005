//! Server-side printing (`meta.k8s.io/v1 Table`) so `kubectl get` shows the usual columns, e.g.
//! a Service's EXTERNAL-IP. Columns are data: one entry per kind in [`columns`].

use serde_json::{json, Value};

use super::resources::ResourceDef;

/// True when the `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A cell extractor.
type Cell = fn(&Value) -> Value;

/// One column: header, type, priority (1 = only with `-o wide`), extractor.
struct Column {
    name: &'static str,
    ty: &'static str,
    priority: u8,
    cell: Cell,
}

const fn col(name: &'static str, priority: u8, cell: Cell) -> Column {
    Column {
        name,
        ty: "string",
        priority,
        cell,
    }
}

fn s(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => json!(s),
        Some(Value::Null) | None => json!("<none>"),
        Some(other) => json!(other.to_string()),
    }
}

fn name(o: &Value) -> Value {
    s(o.pointer("/metadata/name"))
}

fn age(o: &Value) -> Value {
    let created = o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    match created {
        Some(t) => {
            let secs = k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second();
            json!(human_duration(secs))
        }
        None => json!("<unknown>"),
    }
}

/// kubectl's human-readable durations (`45s`, `5m30s`, `3h`, `2d4h`, …).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        match secs % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn join_strings(v: Option<&Value>) -> Value {
    match v.and_then(Value::as_array) {
        Some(a) if !a.is_empty() => json!(a
            .iter()
            .map(|x| x
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| x.to_string()))
            .collect::<Vec<_>>()
            .join(",")),
        _ => json!("<none>"),
    }
}

fn svc_external_ip(o: &Value) -> Value {
    let ips: Vec<String> = o
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("ip").or_else(|| i.get("hostname")))
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if !ips.is_empty() {
        json!(ips.join(","))
    } else if o.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer") {
        json!("<pending>")
    } else {
        json!("<none>")
    }
}

fn svc_ports(o: &Value) -> Value {
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p.get("port").map(|v| v.to_string()).unwrap_or_default();
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort") {
                Some(n) => format!("{port}:{n}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    if ports.is_empty() {
        json!("<none>")
    } else {
        json!(ports.join(","))
    }
}

fn selector(o: &Value) -> Value {
    match o.pointer("/spec/selector").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => json!(m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(",")),
        _ => json!("<none>"),
    }
}

fn node_status(o: &Value) -> Value {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"].as_str().unwrap_or("Unknown").to_string());
    json!(match ready.as_deref() {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    })
}

fn node_internal_ip(o: &Value) -> Value {
    let ips: Vec<&str> = o
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "InternalIP")
        .filter_map(|a| a["address"].as_str())
        .collect();
    if ips.is_empty() {
        json!("<none>")
    } else {
        json!(ips.join(","))
    }
}

fn event_object(o: &Value) -> Value {
    let r = o.get("regarding").or_else(|| o.get("involvedObject"));
    match r {
        Some(r) => json!(format!(
            "{}/{}",
            r["kind"].as_str().unwrap_or("").to_ascii_lowercase(),
            r["name"].as_str().unwrap_or("")
        )),
        None => json!("<none>"),
    }
}

fn event_message(o: &Value) -> Value {
    s(o.get("note").or_else(|| o.get("message")))
}

fn bool_or(o: Option<&Value>, default: bool) -> Value {
    json!(o.and_then(Value::as_bool).unwrap_or(default).to_string())
}

/// The columns of a kind; every kind gets NAME … AGE.
fn columns(def: &ResourceDef) -> Vec<Column> {
    let mut cols = vec![col("Name", 0, name)];
    let extra: Vec<Column> = match (def.group.as_str(), def.plural.as_str()) {
        ("", "services") => vec![
            col("Type", 0, |o| s(o.pointer("/spec/type"))),
            col("Cluster-IP", 0, |o| s(o.pointer("/spec/clusterIP"))),
            col("External-IP", 0, svc_external_ip),
            col("Port(s)", 0, svc_ports),
            col("Age", 0, age),
            col("Selector", 1, selector),
        ],
        ("", "nodes") => vec![
            col("Status", 0, node_status),
            col("Age", 0, age),
            col("Version", 0, |o| {
                s(o.pointer("/status/nodeInfo/kubeletVersion"))
            }),
            col("Internal-IP", 1, node_internal_ip),
        ],
        ("", "namespaces") => vec![
            col("Status", 0, |o| s(o.pointer("/status/phase"))),
            col("Age", 0, age),
        ],
        ("coordination.k8s.io", "leases") => vec![
            col("Holder", 0, |o| s(o.pointer("/spec/holderIdentity"))),
            col("Age", 0, age),
        ],
        ("", "events") | ("events.k8s.io", "events") => vec![
            col("Type", 0, |o| s(o.get("type"))),
            col("Reason", 0, |o| s(o.get("reason"))),
            col("Object", 0, event_object),
            col("Message", 0, event_message),
            col("Age", 0, age),
        ],
        ("discovery.k8s.io", "endpointslices") => vec![
            col("AddressType", 0, |o| s(o.get("addressType"))),
            col("Endpoints", 0, |o| {
                let addrs: Vec<Value> = o
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                    .collect();
                join_strings(Some(&Value::Array(addrs)))
            }),
            col("Age", 0, age),
        ],
        ("metallb.io", "ipaddresspools") => vec![
            col("Auto Assign", 0, |o| {
                bool_or(o.pointer("/spec/autoAssign"), true)
            }),
            col("Avoid Buggy IPs", 0, |o| {
                bool_or(o.pointer("/spec/avoidBuggyIPs"), false)
            }),
            col("Addresses", 0, |o| {
                join_strings(o.pointer("/spec/addresses"))
            }),
            col("Age", 0, age),
        ],
        ("metallb.io", "l2advertisements") => vec![
            col("IPAddressPools", 0, |o| {
                join_strings(o.pointer("/spec/ipAddressPools"))
            }),
            col("Interfaces", 0, |o| {
                join_strings(o.pointer("/spec/interfaces"))
            }),
            col("Age", 0, age),
        ],
        ("metallb.io", "servicel2statuses") => vec![
            col("Allocated Node", 0, |o| s(o.pointer("/status/node"))),
            col("Service Name", 0, |o| s(o.pointer("/status/serviceName"))),
            col("Service Namespace", 0, |o| {
                s(o.pointer("/status/serviceNamespace"))
            }),
            col("Age", 0, age),
        ],
        _ => vec![col("Age", 0, age)],
    };
    cols.extend(extra);
    cols
}

fn partial_metadata(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A Table of `objects`. `headers` = false leaves out the column definitions (watch events
/// after the first).
pub fn table<'a>(
    def: &ResourceDef,
    objects: impl IntoIterator<Item = &'a Value>,
    resource_version: Option<u64>,
    headers: bool,
) -> Value {
    let cols = columns(def);
    let defs: Vec<Value> = if headers {
        cols.iter()
            .map(|c| {
                json!({"name": c.name, "type": c.ty, "format": if c.name == "Name" { "name" } else { "" },
                       "description": "", "priority": c.priority})
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|o| {
            json!({
                "cells": cols.iter().map(|c| (c.cell)(o)).collect::<Vec<_>>(),
                "object": partial_metadata(o),
            })
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::Registry;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(-5), "<invalid>");
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(330), "5m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 600), "3h10m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(100 * 86400), "100d");
        assert_eq!(human_duration(3 * 365 * 86400), "3y");
    }

    #[test]
    fn service_rows_show_external_ips_and_ports() {
        let reg = Registry::builtin();
        let def = reg.find("", "v1", "services").unwrap();
        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1",
                     "ports": [{"port": 80, "nodePort": 30000, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
        let pending = json!({"metadata": {"name": "p"}, "spec": {"type": "LoadBalancer"}});
        let t = table(def, [&svc, &pending], Some(7), true);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert_eq!(t["columnDefinitions"][3]["name"], "External-IP");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "LoadBalancer",
                "10.96.0.1",
                "192.0.2.10",
                "80:30000/TCP",
                "<unknown>",
                "<none>"
            ])
        );
        assert_eq!(t["rows"][1]["cells"][3], "<pending>");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "default");
        assert!(table(def, [&svc], None, false)["columnDefinitions"]
            .as_array()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn accept_headers() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }
}

//! Custom resources are validated as kube-apiserver validates them: every schema constraint and
//! CEL rule of ferrolb's CRDs is found by walking the CRDs themselves, violated once, and must
//! be rejected with 422 Invalid and a cause naming the field; valid objects are accepted.

use kube::api::{Api, PostParams};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

const NS: &str = "metallb-system";

use super::support::start;

/// A raw request: status code, JSON body and the `Warning` headers.
async fn call(
    c: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&Value>,
) -> (u16, Value, Vec<String>) {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(Body::from(bytes))
        .unwrap();
    let resp = c.send(req).await.expect("request sent");
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (code, v, warnings)
}

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

fn collection(plural: &str) -> String {
    format!("/apis/metallb.io/v1beta1/namespaces/{NS}/{plural}")
}

/// The causes of a 422 as `(field, reason)`.
fn causes(status: &Value) -> Vec<(String, String)> {
    status["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or_default().to_string(),
                        c["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    First,
}

fn path_str(p: &[Seg]) -> String {
    let mut s = String::new();
    for seg in p {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::First => s.push_str("[0]"),
        }
    }
    s
}

/// The smallest value the schema accepts (required fields, minimum counts and bounds).
fn minimal(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("object") => {
            let mut m = serde_json::Map::new();
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                m.insert(r.into(), minimal(&schema["properties"][r]));
            }
            Value::Object(m)
        }
        Some("array") => {
            let n = schema["minItems"].as_u64().unwrap_or(0) as usize;
            Value::Array(vec![minimal(&schema["items"]); n])
        }
        Some("integer") => json!(schema["minimum"].as_f64().unwrap_or(0.0).max(0.0) as i64),
        Some("number") => json!(0),
        Some("boolean") => json!(false),
        Some("string") if schema["format"] == "date-time" => json!("2024-01-01T00:00:00Z"),
        Some("string") if address_rule(schema).is_some() => json!("192.0.2.0/28"),
        _ => json!("x"),
    }
}

/// Which of the `spec.addresses` entry rules (`crd::address_rules`) the string schema's first
/// CEL rule is, if any.
fn address_rule(schema: &Value) -> Option<usize> {
    let first = schema["x-kubernetes-validations"][0]["rule"].as_str()?;
    ferrolb_core::crd::address_rules()
        .iter()
        .position(|(rule, _)| rule == first)
}

/// The schema node at `path`.
fn node<'a>(schema: &'a Value, path: &[Seg]) -> &'a Value {
    path.iter().fold(schema, |s, seg| match seg {
        Seg::Key(k) => &s["properties"][k],
        Seg::First => &s["items"],
    })
}

/// Makes every container on `path` exist in `v` (minimal values), returning the value there.
fn materialize<'a>(schema: &Value, v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    let Some((seg, rest)) = path.split_first() else {
        return v;
    };
    match seg {
        Seg::Key(k) => {
            let child = &schema["properties"][k];
            let m = v.as_object_mut().expect("object on the path");
            let next = m.entry(k.clone()).or_insert_with(|| minimal(child));
            materialize(child, next, rest)
        }
        Seg::First => {
            let a = v.as_array_mut().expect("array on the path");
            if a.is_empty() {
                a.push(minimal(&schema["items"]));
            }
            materialize(&schema["items"], &mut a[0], rest)
        }
    }
}

/// How to violate one constraint.
#[derive(Clone, Debug)]
enum Violation {
    /// Leave out a required field.
    Missing,
    /// Put this value there.
    Set(Value),
    /// Set the value, then change it (transition rule).
    Change(Value, Value),
    /// Two list items with the same map keys.
    DuplicateKeys,
}

#[derive(Clone, Debug)]
struct Case {
    path: Vec<Seg>,
    violation: Violation,
    /// Expected cause field and reason.
    field: String,
    reason: &'static str,
    what: String,
}

/// A value of a type other than the schema's.
fn wrong_type(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("string") => json!(5),
        Some("array") | Some("object") | Some("integer") | Some("boolean") | Some("number") => {
            json!("wrong")
        }
        _ => json!(null),
    }
}

/// Every constraint of `schema`, as the cases violating it.
fn cases(schema: &Value, path: Vec<Seg>, out: &mut Vec<Case>) {
    let p = path_str(&path);
    let with = |seg: &str| {
        let mut q = path.clone();
        q.push(Seg::Key(seg.into()));
        q
    };
    if !path.is_empty() && schema.get("type").is_some() {
        out.push(Case {
            path: path.clone(),
            violation: Violation::Set(wrong_type(schema)),
            field: p.clone(),
            reason: "FieldValueTypeInvalid",
            what: format!("type {}", schema["type"]),
        });
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        let r = r.as_str().unwrap();
        out.push(Case {
            path: with(r),
            violation: Violation::Missing,
            field: path_str(&with(r)),
            reason: "FieldValueRequired",
            what: "required".into(),
        });
    }
    if let Some(min) = schema["minItems"].as_u64().filter(|m| *m > 0) {
        out.push(Case {
            path: path.clone(),
            violation: Violation::Set(Value::Array(vec![
                minimal(&schema["items"]);
                min as usize - 1
            ])),
            field: p.clone(),
            reason: "FieldValueInvalid",
            what: format!("minItems {min}"),
        });
    }
    if let Some(max) = schema["maxItems"].as_u64() {
        out.push(Case {
            path: path.clone(),
            violation: Violation::Set(Value::Array(vec![
                minimal(&schema["items"]);
                max as usize + 1
            ])),
            field: p.clone(),
            reason: "FieldValueTooMany",
            what: format!("maxItems {max}"),
        });
    }
    if let Some(max) = schema["maxLength"].as_u64() {
        out.push(Case {
            path: path.clone(),
            violation: Violation::Set(json!("1".repeat(max as usize + 1))),
            field: p.clone(),
            reason: "FieldValueTooLong",
            what: format!("maxLength {max}"),
        });
    }
    if let Some(min) = schema["minimum"].as_f64() {
        out.push(Case {
            path: path.clone(),
            violation: Violation::Set(json!(min as i64 - 1)),
            field: p.clone(),
            reason: "FieldValueInvalid",
            what: format!("minimum {min}"),
        });
    }
    if let Some(max) = schema["maximum"].as_f64() {
        out.push(Case {
            path: path.clone(),
            violation: Violation::Set(json!(max as i64 + 1)),
            field: p.clone(),
            reason: "FieldValueInvalid",
            what: format!("maximum {max}"),
        });
    }
    match schema["format"].as_str() {
        Some("int32") => out.push(Case {
            path: path.clone(),
            violation: Violation::Set(json!(2_147_483_648u64)),
            field: p.clone(),
            reason: "FieldValueInvalid",
            what: "format int32".into(),
        }),
        Some("int64") => out.push(Case {
            path: path.clone(),
            violation: Violation::Set(json!(9_223_372_036_854_775_808u64)),
            field: p.clone(),
            reason: "FieldValueInvalid",
            what: "format int64".into(),
        }),
        Some("date-time") => out.push(Case {
            path: path.clone(),
            violation: Violation::Set(json!("yesterday")),
            field: p.clone(),
            reason: "FieldValueTypeInvalid",
            what: "format date-time".into(),
        }),
        _ => {}
    }
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let r = rule["rule"].as_str().unwrap();
        let rules = ferrolb_core::crd::address_rules();
        let (violation, what) = if r == rules[0].0 {
            (
                Violation::Set(json!("10.0.0.0/33")),
                "CEL address: CIDR".into(),
            )
        } else if r == rules[1].0 {
            (
                Violation::Set(json!("10.0.0.9-10.0.0.1")),
                "CEL address: range".into(),
            )
        } else {
            assert_eq!(
                r, "self == oldSelf",
                "a new CEL rule needs a violating case here: {r}"
            );
            (
                Violation::Change(json!("before"), json!("after")),
                format!("CEL {r}"),
            )
        };
        out.push(Case {
            path: path.clone(),
            violation,
            field: p.clone(),
            reason: "FieldValueInvalid",
            what,
        });
    }
    if schema["x-kubernetes-list-type"] == "map" {
        let mut q = path.clone();
        q.push(Seg::First);
        out.push(Case {
            path: path.clone(),
            violation: Violation::DuplicateKeys,
            field: format!("{p}[1]"),
            reason: "FieldValueDuplicate",
            what: "list-type map".into(),
        });
    }
    if let Some(props) = schema["properties"].as_object() {
        for k in props.keys() {
            cases(&props[k], with(k), out);
        }
    }
    if schema.get("items").is_some() {
        let mut q = path.clone();
        q.push(Seg::First);
        cases(&schema["items"], q, out);
    }
}

/// Applies `case` to a valid object of the CRD and returns the server's answer.
async fn attempt(c: &Client, plural: &str, schema: &Value, case: &Case, n: usize) -> (u16, Value) {
    let name = format!("case-{n}");
    let mut obj = minimal(schema);
    obj["metadata"] = json!({"name": name});
    let in_status = matches!(case.path.first(), Some(Seg::Key(k)) if k == "status");
    let (parent_path, last) = case.path.split_at(case.path.len() - 1);
    {
        let target = materialize(
            schema,
            &mut obj,
            if matches!(case.violation, Violation::Missing) {
                parent_path
            } else {
                &case.path
            },
        );
        match &case.violation {
            Violation::Missing => {
                let Seg::Key(k) = &last[0] else {
                    unreachable!()
                };
                target.as_object_mut().unwrap().remove(k);
            }
            Violation::Set(v) | Violation::Change(v, _) => *target = v.clone(),
            Violation::DuplicateKeys => {
                let item = minimal(&node(schema, &case.path)["items"]);
                *target = json!([item.clone(), item]);
            }
        }
    }
    let url = collection(plural);
    if !in_status {
        return {
            let (code, body, _) = call(c, "POST", &url, JSON, Some(&obj)).await;
            (code, body)
        };
    }
    let status = obj.as_object_mut().unwrap().remove("status").unwrap();
    let (code, body, _) = call(c, "POST", &url, JSON, Some(&obj)).await;
    assert_eq!(code, 201, "{}: base object refused: {body}", case.what);
    let status_url = format!("{url}/{name}/status");
    let (code, body, _) = call(
        c,
        "PATCH",
        &status_url,
        MERGE,
        Some(&json!({"status": status})),
    )
    .await;
    let Violation::Change(_, after) = &case.violation else {
        return (code, body);
    };
    assert_eq!(
        code, 200,
        "{}: first status write refused: {body}",
        case.what
    );
    let mut changed = json!({});
    *materialize(schema, &mut changed, &case.path) = after.clone();
    let (code, body, _) = call(c, "PATCH", &status_url, MERGE, Some(&changed)).await;
    (code, body)
}

fn schema_of(plural: &str) -> Value {
    let crd = ferrolb_core::crd::all_crds()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn every_crd_constraint_and_cel_rule_is_enforced_with_field_paths() {
    let (server, c) = start().await;
    let mut total = 0;
    let mut seen = Vec::new();
    for (kind, plural) in [
        ("IPAddressPool", "ipaddresspools"),
        ("L2Advertisement", "l2advertisements"),
        ("ServiceL2Status", "servicel2statuses"),
    ] {
        let schema = schema_of(plural);
        // A minimal valid object (with a minimal valid status) is accepted.
        let mut ok = minimal(&schema);
        ok["metadata"] = json!({"name": "valid"});
        let status = ok.as_object_mut().unwrap().remove("status");
        let (code, body, _) = call(&c, "POST", &collection(plural), JSON, Some(&ok)).await;
        assert_eq!(code, 201, "{kind}: {body}");
        if let Some(st) = status {
            let url = format!("{}/valid/status", collection(plural));
            let (code, body, _) =
                call(&c, "PATCH", &url, MERGE, Some(&json!({"status": st}))).await;
            assert_eq!(code, 200, "{kind} status: {body}");
        }

        let mut all = Vec::new();
        cases(&schema, Vec::new(), &mut all);
        for (n, case) in all.iter().enumerate() {
            let (code, body) = attempt(&c, plural, &schema, case, total + n).await;
            assert_eq!(code, 422, "{kind} {} at {}: {body}", case.what, case.field);
            assert_eq!(body["reason"], "Invalid");
            assert_eq!(body["details"]["kind"], kind);
            assert_eq!(body["details"]["group"], "metallb.io");
            let msg = body["message"].as_str().unwrap();
            assert!(
                msg.starts_with(&format!(
                    "{kind}.metallb.io \"case-{}\" is invalid: ",
                    total + n
                )),
                "{msg}"
            );
            let got = causes(&body);
            assert!(
                got.contains(&(case.field.clone(), case.reason.to_string())),
                "{kind} {}: expected cause {} {}, got {got:?} ({msg})",
                case.what,
                case.field,
                case.reason
            );
            seen.push(format!("{kind} {} {}", case.field, case.what));
        }
        total += all.len();
    }
    // The walk found the constraints the CRDs are known to carry.
    for expected in [
        "IPAddressPool spec required",
        "IPAddressPool spec.addresses required",
        "IPAddressPool spec.addresses minItems 1",
        "IPAddressPool spec.addresses maxItems 1000",
        "IPAddressPool spec.addresses[0] maxLength 128",
        "IPAddressPool spec.addresses[0] CEL address: CIDR",
        "IPAddressPool spec.addresses[0] CEL address: range",
        "IPAddressPool status.lastValidSpec.addresses[0] CEL address: range",
        "IPAddressPool spec.serviceAllocation.priority format int32",
        "IPAddressPool spec.serviceAllocation.namespaceSelectors[0].matchExpressions[0].operator required",
        "IPAddressPool status.assignedIPv4 format int64",
        "IPAddressPool status.conditions[0].lastTransitionTime format date-time",
        "IPAddressPool status.conditions[1] list-type map",
        "L2Advertisement spec.preferredNodeSelectors[0].weight minimum 1",
        "L2Advertisement spec.preferredNodeSelectors[0].weight maximum 100",
        "L2Advertisement spec.preferredNodeSelectors[0].preference required",
        "ServiceL2Status status.node CEL self == oldSelf",
        "ServiceL2Status status.serviceName CEL self == oldSelf",
        "ServiceL2Status status.serviceNamespace CEL self == oldSelf",
        "ServiceL2Status status.interfaces[0].name required",
    ] {
        assert!(seen.iter().any(|s| s == expected), "no case for {expected}: {seen:#?}");
    }
    assert!(total > 60, "only {total} cases");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn validation_applies_to_every_write_verb_and_the_status_subresource() {
    let (server, c) = start().await;
    let url = collection("ipaddresspools");
    let good = json!({"metadata": {"name": "p"}, "spec": {"addresses": ["192.0.2.0/28"]}});
    let (code, created, _) = call(&c, "POST", &url, JSON, Some(&good)).await;
    assert_eq!(code, 201);
    assert_eq!(
        created["spec"]["autoAssign"], true,
        "schema default applied"
    );
    let obj = format!("{url}/p");
    let too_few = |field: &str| (field.to_string(), "FieldValueInvalid".to_string());

    let mut bad = created.clone();
    bad["spec"]["addresses"] = json!([]);
    let (code, body, _) = call(&c, "PUT", &obj, JSON, Some(&bad)).await;
    assert_eq!(
        (code, causes(&body)),
        (422, vec![too_few("spec.addresses")]),
        "update"
    );
    assert_eq!(
        body["message"],
        "IPAddressPool.metallb.io \"p\" is invalid: spec.addresses: Invalid value: 0: spec.addresses in body should have at least 1 items"
    );
    for (ct, patch) in [
        (MERGE, json!({"spec": {"addresses": []}})),
        (
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/addresses", "value": []}]),
        ),
    ] {
        let (code, body, _) = call(&c, "PATCH", &obj, ct, Some(&patch)).await;
        assert_eq!(
            (code, causes(&body)),
            (422, vec![too_few("spec.addresses")]),
            "{ct}"
        );
    }
    let apply = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "p"}, "spec": {"addresses": []}});
    let (code, body, _) = call(
        &c,
        "PATCH",
        &format!("{obj}?fieldManager=t&force=true"),
        "application/apply-patch+yaml",
        Some(&apply),
    )
    .await;
    assert_eq!(
        (code, causes(&body)),
        (422, vec![too_few("spec.addresses")]),
        "apply"
    );
    let fresh = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "q"}, "spec": {"addresses": []}});
    let (code, _, _) = call(
        &c,
        "PATCH",
        &format!("{url}/q?fieldManager=t"),
        "application/apply-patch+yaml",
        Some(&fresh),
    )
    .await;
    assert_eq!(code, 422, "apply that creates");
    let (code, _, _) = call(&c, "POST", &format!("{url}?dryRun=All"), JSON, Some(&fresh)).await;
    assert_eq!(code, 422, "dry run validates too");

    // Status subresource: PUT and PATCH are validated against the status schema.
    let (code, body, _) = call(
        &c,
        "PATCH",
        &format!("{obj}/status"),
        MERGE,
        Some(&json!({"status": {"assignedIPv4": "three"}})),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let got = causes(&body);
    assert!(
        got.contains(&("status.assignedIPv4".into(), "FieldValueTypeInvalid".into())),
        "{got:?}"
    );
    // The counters are optional (a status written by another version may lack them), so a
    // merge patch of one field is checked for that field alone.
    assert_eq!(got.len(), 1, "{got:?}");
    let mut with_status = created.clone();
    with_status["status"] = json!({"assignedIPv4": 1, "assignedIPv6": 0, "availableIPv4": 15, "availableIPv6": 0,
        "conditions": [{"type": "Valid", "status": "True", "reason": "Valid", "message": "",
                        "lastTransitionTime": "not a time"}]});
    let (code, body, _) = call(
        &c,
        "PUT",
        &format!("{obj}/status"),
        JSON,
        Some(&with_status),
    )
    .await;
    assert_eq!(
        (code, causes(&body)),
        (
            422,
            vec![(
                "status.conditions[0].lastTransitionTime".into(),
                "FieldValueTypeInvalid".into()
            )]
        )
    );
    with_status["status"]["conditions"][0]["lastTransitionTime"] = json!("2024-05-01T10:00:00Z");
    let (code, body, _) = call(
        &c,
        "PUT",
        &format!("{obj}/status"),
        JSON,
        Some(&with_status),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["assignedIPv4"], 1);

    // A valid change still goes through, and nothing invalid was stored on the way.
    let (code, body, _) = call(
        &c,
        "PATCH",
        &obj,
        MERGE,
        Some(&json!({"spec": {"addresses": ["192.0.2.0/27"]}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let pools: Api<ferrolb_core::crd::IPAddressPool> = Api::namespaced(c.clone(), NS);
    assert_eq!(
        pools.get("p").await.unwrap().spec.addresses,
        ["192.0.2.0/27"]
    );
    assert!(pools.get_opt("q").await.unwrap().is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn servicel2status_identity_is_immutable_through_every_status_write() {
    let (server, c) = start().await;
    let url = collection("servicel2statuses");
    let (code, _, _) = call(
        &c,
        "POST",
        &url,
        JSON,
        Some(&json!({"metadata": {"name": "l2-a"}})),
    )
    .await;
    assert_eq!(code, 201);
    let st = format!("{url}/l2-a/status");
    let first =
        json!({"status": {"node": "n1", "serviceName": "web", "serviceNamespace": "default"}});
    let (code, obj, _) = call(&c, "PATCH", &st, MERGE, Some(&first)).await;
    assert_eq!(
        code, 200,
        "setting the fields the first time is no transition"
    );
    // Unchanged identity, other fields changing: fine.
    let (code, obj2, _) = call(
        &c,
        "PATCH",
        &st,
        MERGE,
        Some(&json!({"status": {"ips": ["192.0.2.1"]}})),
    )
    .await;
    assert_eq!(code, 200, "{obj2}");
    let (code, body, _) = call(
        &c,
        "PATCH",
        &st,
        MERGE,
        Some(&json!({"status": {"node": "n2"}})),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "ServiceL2Status.metallb.io \"l2-a\" is invalid: status.node: Invalid value: \"n2\": Value is immutable"
    );
    let mut put = obj.clone();
    put["status"]["serviceName"] = json!("other");
    put["metadata"]["resourceVersion"] = obj2["metadata"]["resourceVersion"].clone();
    let (code, body, _) = call(&c, "PUT", &st, JSON, Some(&put)).await;
    assert_eq!(
        (code, causes(&body)),
        (
            422,
            vec![("status.serviceName".into(), "FieldValueInvalid".into())]
        )
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_fields_are_pruned_warned_or_refused() {
    let (server, c) = start().await;
    let url = collection("l2advertisements");
    let with_extra = |name: &str| json!({"metadata": {"name": name}, "spec": {"interfaces": ["eth0"], "interface": "typo"}});
    // Default (Warn): pruned, with a warning naming the field.
    let (code, body, warnings) = call(&c, "POST", &url, JSON, Some(&with_extra("warned"))).await;
    assert_eq!(code, 201);
    assert!(body["spec"].get("interface").is_none());
    assert_eq!(warnings, [r#"299 - "unknown field \"spec.interface\"""#]);
    // Ignore: pruned silently.
    let (code, body, warnings) = call(
        &c,
        "POST",
        &format!("{url}?fieldValidation=Ignore"),
        JSON,
        Some(&with_extra("ignored")),
    )
    .await;
    assert_eq!(code, 201);
    assert!(body["spec"].get("interface").is_none() && warnings.is_empty());
    // Strict (kubectl's default): refused.
    let (code, body, _) = call(
        &c,
        "POST",
        &format!("{url}?fieldValidation=Strict"),
        JSON,
        Some(&with_extra("strict")),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "L2Advertisement in version \"v1beta1\" cannot be handled as a L2Advertisement: strict decoding error: unknown field \"spec.interface\""
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn stored_crds_are_enforced_and_bad_cel_rules_refused() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let (server, c) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let mut bad: Value = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object",
                    "x-kubernetes-validations": [{"rule": "self.size >", "message": "m"}],
                    "properties": {"size": {"type": "integer", "maximum": 5}}}}}}}]}});
    let (code, body, _) = call(
        &c,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        JSON,
        Some(&bad),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        causes(&body)[0].0,
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
    );
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"][0]["rule"] = json!("self.size != 4");
    let crd: CustomResourceDefinition = serde_json::from_value(bad).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let w = "/apis/example.com/v1/namespaces/default/widgets";
    let (code, _, _) = call(
        &c,
        "POST",
        w,
        JSON,
        Some(&json!({"metadata": {"name": "a"}, "spec": {"size": 3}})),
    )
    .await;
    assert_eq!(code, 201);
    let (code, body, _) = call(
        &c,
        "POST",
        w,
        JSON,
        Some(&json!({"metadata": {"name": "b"}, "spec": {"size": 4}})),
    )
    .await;
    assert_eq!(
        (code, causes(&body)),
        (422, vec![("spec".into(), "FieldValueInvalid".into())])
    );
    let (code, body, _) = call(
        &c,
        "POST",
        w,
        JSON,
        Some(&json!({"metadata": {"name": "c"}, "spec": {"size": 6}})),
    )
    .await;
    assert_eq!(
        (code, causes(&body)),
        (422, vec![("spec.size".into(), "FieldValueInvalid".into())])
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_shipped_example_is_valid() {
    let (server, c) = start().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut applied = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
            if obj["apiVersion"] != "metallb.io/v1beta1" {
                continue;
            }
            let kind = obj["kind"].as_str().unwrap();
            let plural = format!("{}s", kind.to_ascii_lowercase());
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = obj["metadata"]["name"].as_str().unwrap();
            let url = format!("/apis/metallb.io/v1beta1/namespaces/{ns}/{plural}/{name}?fieldManager=kubectl&force=true&fieldValidation=Strict");
            let (code, body, _) = call(
                &c,
                "PATCH",
                &url,
                "application/apply-patch+yaml",
                Some(&obj),
            )
            .await;
            assert!(code == 200 || code == 201, "{}: {body}", path.display());
            applied += 1;
        }
    }
    assert!(
        applied >= 5,
        "only {applied} metallb.io objects in examples/"
    );
    server.shutdown().await.unwrap();
}

//! Patch formats: JSON merge patch, strategic merge patch (treated as a merge patch), RFC 6902
//! JSON patch and server-side apply (a merge that creates the object when absent).

use serde_json::Value;

use super::error::ApiError;

/// The patch format, from the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`: lists of the well-known Kubernetes fields
    /// (`ports`, `containers`, `conditions`, …) merge by their merge key, `$patch: delete|replace`,
    /// `$setElementOrder/…` and `$deleteFromPrimitiveList/…` are honoured, other lists replace.
    Strategic,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/apply-patch+yaml` (server-side apply, as a merge).
    Apply,
}

impl PatchKind {
    /// Maps a `Content-Type` (parameters ignored) to a patch kind.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

/// A parsed patch body.
#[derive(Clone, Debug)]
pub enum ParsedPatch {
    /// Merge-style patch document (merge, apply).
    Merge(Value),
    /// Strategic merge patch document.
    Strategic(Value),
    /// JSON patch operations.
    Json(json_patch::Patch),
}

/// Parses a patch body; malformed bodies are 400 errors.
pub fn parse(kind: PatchKind, body: &[u8]) -> Result<ParsedPatch, ApiError> {
    match kind {
        PatchKind::Merge => Ok(ParsedPatch::Merge(parse_json(body)?)),
        PatchKind::Strategic => {
            let v = parse_json(body)?;
            if !v.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            Ok(ParsedPatch::Strategic(v))
        }
        PatchKind::Apply => {
            let v = match serde_json::from_slice::<Value>(body) {
                Ok(v) => v,
                Err(_) => serde_norway::from_slice::<Value>(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
            };
            if !v.is_object() {
                return Err(ApiError::bad_request(
                    "apply patch must be a YAML or JSON object",
                ));
            }
            Ok(ParsedPatch::Merge(v))
        }
        PatchKind::Json => serde_json::from_slice::<json_patch::Patch>(body)
            .map(ParsedPatch::Json)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}"))),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Removes strategic-merge directives (`$patch`, `$retainKeys`, `$setElementOrder/…`,
/// `$deleteFromPrimitiveList/…`) so the rest can be applied as a merge patch.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Merge key of the list fields that strategic merge patch merges element-wise
/// (`patchMergeKey` in the Kubernetes API types), by field name.
fn merge_key(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "ports" => &["port", "containerPort"],
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "conditions" | "addresses" => &["type"],
        "ownerReferences" => &["uid"],
        "hostAliases" => &["ip"],
        "topologySpreadConstraints" => &["topologyKey"],
        _ => return None,
    })
}

/// Primitive lists that strategic merge patch merges as sets.
fn is_primitive_merge_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Applies a strategic merge patch to `doc`.
fn strategic_merge(doc: &mut Value, patch: &Value) {
    let Some(pm) = patch.as_object() else {
        *doc = strip(patch);
        return;
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = strip(patch);
            return;
        }
        Some("delete") => {
            *doc = Value::Object(Default::default());
            return;
        }
        _ => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Default::default());
    }
    let Some(dm) = doc.as_object_mut() else {
        return;
    };
    for (k, pv) in pm {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            dm.remove(k);
            continue;
        }
        if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
            dm.remove(k);
            continue;
        }
        match (merge_key(k), pv, dm.get_mut(k)) {
            (Some(keys), Value::Array(items), Some(Value::Array(existing))) => {
                merge_list(existing, items, keys);
            }
            (None, Value::Array(items), Some(Value::Array(existing)))
                if is_primitive_merge_list(k) =>
            {
                for i in items {
                    if !existing.contains(i) {
                        existing.push(i.clone());
                    }
                }
            }
            (_, Value::Object(_), Some(dv @ Value::Object(_))) => strategic_merge(dv, pv),
            _ => {
                let mut v = pv.clone();
                if let (Some(_), Value::Array(a)) = (merge_key(k), &mut v) {
                    // A new list: elements marked for deletion have nothing to delete.
                    a.retain(|e| e.get("$patch").and_then(Value::as_str) != Some("delete"));
                }
                strip_directives(&mut v);
                dm.insert(k.clone(), v);
            }
        }
    }
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(existing)), Some(del)) = (dm.get_mut(field), pv.as_array()) {
                existing.retain(|e| !del.contains(e));
            }
        }
    }
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            if let (Some(Value::Array(existing)), Some(order)) = (dm.get_mut(field), pv.as_array())
            {
                reorder(existing, order, merge_key(field).unwrap_or(&[]));
            }
        }
    }
}

fn key_of<'a>(v: &'a Value, keys: &[&'static str]) -> Option<(&'static str, &'a Value)> {
    keys.iter().find_map(|k| v.get(*k).map(|x| (*k, x)))
}

fn same_key(a: &Value, b: &Value, keys: &[&'static str]) -> bool {
    match (key_of(a, keys), key_of(b, keys)) {
        (Some((ka, va)), Some((kb, vb))) => ka == kb && va == vb,
        _ => false,
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], keys: &[&'static str]) {
    for item in items {
        if !item.is_object() {
            if !existing.contains(item) {
                existing.push(item.clone());
            }
            continue;
        }
        let pos = existing.iter().position(|e| same_key(e, item, keys));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item),
            (None, false) => existing.push(strip(item)),
        }
    }
}

fn reorder(existing: &mut Vec<Value>, order: &[Value], keys: &[&'static str]) {
    let mut rest = std::mem::take(existing);
    for o in order {
        let pos = if o.is_object() {
            rest.iter().position(|e| same_key(e, o, keys))
        } else {
            rest.iter().position(|e| e == o)
        };
        if let Some(i) = pos {
            existing.push(rest.remove(i));
        }
    }
    existing.extend(rest);
}

/// A copy of `v` without strategic-merge directives.
fn strip(v: &Value) -> Value {
    let mut v = v.clone();
    strip_directives(&mut v);
    v
}

/// Applies a parsed patch to `doc` in place. JSON patch failures (a failed `test`, a missing
/// path) are 422 errors and leave `doc` unchanged.
pub fn apply(doc: &mut Value, patch: &ParsedPatch) -> Result<(), ApiError> {
    match patch {
        ParsedPatch::Merge(p) => {
            json_patch::merge(doc, p);
            Ok(())
        }
        ParsedPatch::Strategic(p) => {
            strategic_merge(doc, p);
            Ok(())
        }
        ParsedPatch::Json(p) => json_patch::patch(doc, p).map_err(|e| ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("the JSON patch could not be applied: {e}"),
            details: None,
            causes: Vec::new(),
            retry_after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml"),
            Some(PatchKind::Apply)
        );
        assert_eq!(PatchKind::from_content_type("application/json"), None);
    }

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut d = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let p = parse(PatchKind::Merge, br#"{"b": {"c": null, "e": 5}, "l": [3]}"#).unwrap();
        apply(&mut d, &p).unwrap();
        assert_eq!(d, json!({"a": 1, "b": {"d": 3, "e": 5}, "l": [3]}));
    }

    fn smp(doc: Value, patch: &str) -> Value {
        let mut d = doc;
        apply(
            &mut d,
            &parse(PatchKind::Strategic, patch.as_bytes()).unwrap(),
        )
        .unwrap();
        d
    }

    #[test]
    fn strategic_patch_merges_lists_by_key() {
        // What `kubectl apply` sends when port 80 becomes 81.
        let d = smp(
            json!({"spec": {"ports": [{"port": 80, "nodePort": 30000}], "type": "LoadBalancer"}}),
            r#"{"spec": {"$setElementOrder/ports": [{"port": 81}],
                "ports": [{"port": 81}, {"$patch": "delete", "port": 80}]}}"#,
        );
        assert_eq!(
            d,
            json!({"spec": {"ports": [{"port": 81}], "type": "LoadBalancer"}})
        );
        // Changing one port keeps the others and their server-set fields.
        let d = smp(
            json!({"spec": {"ports": [{"port": 80, "nodePort": 1}, {"port": 443, "nodePort": 2}]}}),
            r#"{"spec": {"$setElementOrder/ports": [{"port": 443}, {"port": 80}],
                "ports": [{"port": 80, "targetPort": 8080}]}}"#,
        );
        assert_eq!(
            d,
            json!({"spec": {"ports": [{"port": 443, "nodePort": 2},
                {"port": 80, "nodePort": 1, "targetPort": 8080}]}})
        );
        // Lists without a merge key are replaced; maps merge; null deletes.
        let d = smp(
            json!({"spec": {"loadBalancerSourceRanges": ["a", "b"], "selector": {"a": "1", "b": "2"}}}),
            r#"{"spec": {"loadBalancerSourceRanges": ["c"], "selector": {"a": null, "c": "3"}}}"#,
        );
        assert_eq!(
            d,
            json!({"spec": {"loadBalancerSourceRanges": ["c"], "selector": {"b": "2", "c": "3"}}})
        );
    }

    #[test]
    fn strategic_patch_directives() {
        let d = smp(
            json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"x": {"y": 1, "z": 2}}}),
            r#"{"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
                "spec": {"x": {"$patch": "replace", "w": 3}}}"#,
        );
        assert_eq!(
            d,
            json!({"metadata": {"finalizers": ["b", "c"]}, "spec": {"x": {"w": 3}}})
        );
        let d = smp(
            json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}]}}),
            r#"{"status": {"conditions": [{"type": "A", "status": "True"}]}}"#,
        );
        assert_eq!(
            d,
            json!({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}]}})
        );
        assert_eq!(parse(PatchKind::Strategic, b"[1]").unwrap_err().code, 400);
    }

    #[test]
    fn json_patch_and_its_failures() {
        let mut d = json!({"a": [1]});
        let p = parse(
            PatchKind::Json,
            br#"[{"op": "add", "path": "/a/-", "value": 2}, {"op": "replace", "path": "/b", "value": 1}]"#,
        )
        .unwrap();
        let before = d.clone();
        let e = apply(&mut d, &p).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(d, before, "a failed JSON patch changes nothing");
        let p = parse(
            PatchKind::Json,
            br#"[{"op": "add", "path": "/a/-", "value": 2}]"#,
        )
        .unwrap();
        apply(&mut d, &p).unwrap();
        assert_eq!(d, json!({"a": [1, 2]}));
    }

    #[test]
    fn apply_accepts_yaml_and_json() {
        let p = parse(PatchKind::Apply, b"metadata:\n  name: x\nspec:\n  a: 1\n").unwrap();
        let mut d = json!({});
        apply(&mut d, &p).unwrap();
        assert_eq!(d, json!({"metadata": {"name": "x"}, "spec": {"a": 1}}));
        assert!(parse(PatchKind::Apply, br#"{"a": 1}"#).is_ok());
        assert_eq!(parse(PatchKind::Apply, b"- 1\n").unwrap_err().code, 400);
    }

    #[test]
    fn malformed_bodies_are_400() {
        for k in [PatchKind::Merge, PatchKind::Strategic, PatchKind::Json] {
            assert_eq!(parse(k, b"{nope").unwrap_err().code, 400);
        }
        assert_eq!(
            parse(PatchKind::Apply, b": : :\n\t-").unwrap_err().code,
            400
        );
    }
}

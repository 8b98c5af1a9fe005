//! Patch formats: JSON merge patch, strategic merge patch (treated as a merge patch), RFC 6902
//! JSON patch and server-side apply (a merge that creates the object when absent).

use serde_json::Value;

use super::error::ApiError;

/// The patch format, from the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`: applied as a merge patch after dropping `$`
    /// directives (lists are replaced, not merged by key).
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
    /// Merge-style patch document (merge, strategic, apply).
    Merge(Value),
    /// JSON patch operations.
    Json(json_patch::Patch),
}

/// Parses a patch body; malformed bodies are 400 errors.
pub fn parse(kind: PatchKind, body: &[u8]) -> Result<ParsedPatch, ApiError> {
    match kind {
        PatchKind::Merge => Ok(ParsedPatch::Merge(parse_json(body)?)),
        PatchKind::Strategic => {
            let mut v = parse_json(body)?;
            strip_directives(&mut v);
            Ok(ParsedPatch::Merge(v))
        }
        PatchKind::Apply => {
            let v = match serde_json::from_slice::<Value>(body) {
                Ok(v) => v,
                Err(_) => serde_yaml::from_slice::<Value>(body)
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

/// Applies a parsed patch to `doc` in place. JSON patch failures (a failed `test`, a missing
/// path) are 422 errors and leave `doc` unchanged.
pub fn apply(doc: &mut Value, patch: &ParsedPatch) -> Result<(), ApiError> {
    match patch {
        ParsedPatch::Merge(p) => {
            json_patch::merge(doc, p);
            Ok(())
        }
        ParsedPatch::Json(p) => json_patch::patch(doc, p).map_err(|e| ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("the JSON patch could not be applied: {e}"),
            details: None,
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

    #[test]
    fn strategic_patch_drops_directives() {
        let mut d = json!({"spec": {"ports": [{"port": 80}]}});
        let p = parse(
            PatchKind::Strategic,
            br#"{"spec": {"$setElementOrder/ports": [{"port": 81}], "ports": [{"port": 81, "$patch": "replace"}]}}"#,
        )
        .unwrap();
        apply(&mut d, &p).unwrap();
        assert_eq!(d, json!({"spec": {"ports": [{"port": 81}]}}));
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
        assert_eq!(parse(PatchKind::Apply, b": : :\n\t-").unwrap_err().code, 400);
    }
}

//! Kubernetes-style errors: every failure becomes a `Status` object with a code and reason.

use serde_json::{json, Value};

use super::validation::FieldError;

/// An API error, rendered as a `meta/v1 Status`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, …).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details.name` / `details.kind` when the error concerns one object.
    /// Boxed: errors travel in `Result`s on every request path, and this keeps them small.
    pub details: Option<Box<(String, String, String)>>,
    /// `details.causes`: one entry per invalid field.
    pub causes: Vec<Cause>,
    /// `Retry-After` header and `details.retryAfterSeconds` (429, some 500s).
    pub retry_after: Option<u32>,
}

/// One entry of `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: String,
    /// The field error without its field: `Invalid value: 0: …`.
    pub message: String,
    /// Field path, e.g. `spec.addresses[0]`.
    pub field: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    fn with_details(mut self, group: &str, plural: &str, name: &str) -> Self {
        self.details = Some(Box::new((group.into(), plural.into(), name.into())));
        self
    }

    /// 404 for an object.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(group, plural, name)
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(group, plural, name)
    }

    /// 409 Conflict on a stale resourceVersion or failed precondition.
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
        )
        .with_details(group, plural, name)
    }

    /// 401 Unauthorized: no valid credentials.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden for `resource` of `group` (object `name`, may be empty), with
    /// kube-apiserver's message prefix (`services is forbidden: …`, `forbidden: …` without a
    /// resource).
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let message = match (resource, name) {
            ("", _) => format!("forbidden: {why}"),
            (r, "") => format!("{} is forbidden: {why}", qualified(group, r)),
            (r, n) => format!("{} \"{n}\" is forbidden: {why}", qualified(group, r)),
        };
        Self::new(403, "Forbidden", message).with_details(group, resource, name)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 Invalid.
    pub fn invalid(group: &str, plural: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message).with_details(group, plural, name)
    }

    /// 422 Invalid listing field errors, as kube-apiserver's `NewInvalid`: the message is
    /// `Kind.group "name" is invalid: <errors>` and every error is a cause.
    pub fn invalid_fields(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let message = match list.as_slice() {
            [] => format!("{qualified} \"{name}\" is invalid"),
            [one] => format!("{qualified} \"{name}\" is invalid: {one}"),
            many => format!("{qualified} \"{name}\" is invalid: [{}]", many.join(", ")),
        };
        let mut e = Self::new(422, "Invalid", message).with_details(group, kind, name);
        e.causes = errs
            .iter()
            .map(|f| Cause {
                reason: f.kind.reason().to_string(),
                message: f.body(),
                field: f.field.clone(),
            })
            .collect();
        e
    }

    /// 403 Forbidden about `plural` (and object `name`, if any) with the full message.
    pub fn denied(group: &str, plural: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message).with_details(group, plural, name)
    }

    /// 429 TooManyRequests (set [`ApiError::retry_after`] for the `Retry-After` header).
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"),
        )
    }

    /// 410 Gone / Expired: the requested resourceVersion is no longer retained.
    pub fn gone(rv: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({oldest})"),
        )
    }

    /// 410 Gone / Expired for a `continue` token whose snapshot is no longer retained.
    pub fn expired_continue() -> Self {
        Self::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    }

    /// 504 Timeout for a list at a resourceVersion the server has not reached.
    pub fn too_large_resource_version(rv: u64, current: u64) -> Self {
        Self::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {rv}, current: {current}"),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((group, kind, name)) = self.details.as_deref() {
            // Empty fields are omitted, as in kube-apiserver's `StatusDetails`.
            let d: serde_json::Map<String, Value> =
                [("name", name), ("group", group), ("kind", kind)]
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
            v["details"] = Value::Object(d);
        }
        if !self.causes.is_empty() {
            v["details"]["causes"] = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
        }
        if let Some(s) = self.retry_after {
            v["details"]["retryAfterSeconds"] = json!(s);
        }
        v
    }
}

fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_objects_carry_code_reason_and_details() {
        let s = ApiError::not_found("metallb.io", "ipaddresspools", "p").status();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "ipaddresspools.metallb.io \"p\" not found");
        assert_eq!(s["details"]["name"], "p");
        let c = ApiError::conflict("", "services", "s", "x").status();
        assert_eq!(c["code"], 409);
        assert_eq!(c["reason"], "Conflict");
        assert_eq!(ApiError::gone(1, 5).status()["code"], 410);
        assert!(ApiError::no_route().status().get("details").is_none());
    }
}

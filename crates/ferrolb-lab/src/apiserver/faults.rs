//! Faults on demand: tests make chosen requests fail (403, 409, 422, 429 with `Retry-After`,
//! 500) or answer late, for a number of requests or for a while, because a real API server
//! refuses and fails requests that this one would otherwise always serve.
//!
//! A fault matches requests by user, verb, API group, resource, subresource, namespace and name
//! (unset fields match anything). The first live fault matching a request decides it. In-process
//! tests use [`Faults`] through [`super::RunningServer::faults`]; the lab harness, whose API
//! server is a separate process, uses the admin endpoint `/ferrolb-lab/faults` (GET lists, POST
//! adds a [`FaultSpec`], DELETE clears, DELETE `/ferrolb-lab/faults/{id}` removes one) or
//! [`RemoteFaults`].
//!
//! ```no_run
//! # async fn demo(server: &ferrolb_lab::apiserver::RunningServer) {
//! use ferrolb_lab::apiserver::faults::FaultSpec;
//! // The next two Lease updates fail with 500, then the server behaves again.
//! server.faults().add(FaultSpec::fail(500).verb("update").resource("leases").times(2)).unwrap();
//! # }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::validation::{ErrorType, FieldError};

/// HTTP codes a fault may answer with.
pub const FAIL_CODES: &[u16] = &[403, 409, 422, 429, 500];

/// Which requests a fault applies to; unset fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Authenticated user name (`system:serviceaccount:<ns>:<name>`); requests without an
    /// authenticated user never match a fault that names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// API group (`""` for the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Resource (plural), e.g. `leases`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Subresource, e.g. `status`; `""` matches only requests to the main resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// Namespace; `""` matches only cluster-scoped and all-namespace requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object name; `""` matches only collection requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What a fault does to a request it matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Effect {
    /// Answer with this error instead of serving the request.
    Fail {
        /// 403, 409, 422, 429 or 500.
        code: u16,
        /// `Retry-After` seconds (429 defaults to 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<u32>,
        /// Replaces the detail of the error message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Wait this long, then serve the request normally.
    Delay {
        /// Milliseconds.
        millis: u64,
    },
}

/// A fault as added: what it matches, what it does, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// Requests it applies to.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// What happens to them.
    pub effect: Effect,
    /// Only the first `times` matching requests (unset: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Only for this many milliseconds after it is added (unset: until removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_millis: Option<u64>,
}

impl FaultSpec {
    /// Matching requests fail with `code`.
    pub fn fail(code: u16) -> Self {
        FaultSpec {
            matches: Match::default(),
            effect: Effect::Fail {
                code,
                retry_after_seconds: None,
                message: None,
            },
            times: None,
            duration_millis: None,
        }
    }

    /// Matching requests are served `d` late.
    pub fn delay(d: Duration) -> Self {
        FaultSpec {
            matches: Match::default(),
            effect: Effect::Delay {
                millis: d.as_millis() as u64,
            },
            times: None,
            duration_millis: None,
        }
    }

    /// Only requests of this user.
    pub fn user(mut self, u: &str) -> Self {
        self.matches.user = Some(u.into());
        self
    }

    /// Only this verb.
    pub fn verb(mut self, v: &str) -> Self {
        self.matches.verb = Some(v.into());
        self
    }

    /// Only this API group.
    pub fn group(mut self, g: &str) -> Self {
        self.matches.group = Some(g.into());
        self
    }

    /// Only this resource (plural).
    pub fn resource(mut self, r: &str) -> Self {
        self.matches.resource = Some(r.into());
        self
    }

    /// Only this subresource (`""`: only the main resource).
    pub fn subresource(mut self, s: &str) -> Self {
        self.matches.subresource = Some(s.into());
        self
    }

    /// Only this namespace.
    pub fn namespace(mut self, n: &str) -> Self {
        self.matches.namespace = Some(n.into());
        self
    }

    /// Only this object.
    pub fn name(mut self, n: &str) -> Self {
        self.matches.name = Some(n.into());
        self
    }

    /// Only the first `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Only for `d` from now.
    pub fn lasting(mut self, d: Duration) -> Self {
        self.duration_millis = Some(d.as_millis() as u64);
        self
    }

    /// `Retry-After` of a failure.
    pub fn retry_after(mut self, secs: u32) -> Self {
        if let Effect::Fail {
            retry_after_seconds,
            ..
        } = &mut self.effect
        {
            *retry_after_seconds = Some(secs);
        }
        self
    }

    /// Detail of a failure's message.
    pub fn message(mut self, m: &str) -> Self {
        if let Effect::Fail { message, .. } = &mut self.effect {
            *message = Some(m.into());
        }
        self
    }

    fn check(&self) -> Result<(), String> {
        match &self.effect {
            Effect::Fail { code, .. } if !FAIL_CODES.contains(code) => Err(format!(
                "a fault fails with one of {FAIL_CODES:?}, not {code}"
            )),
            _ if self.times == Some(0) => Err("times must be at least 1".into()),
            _ => Ok(()),
        }
    }
}

/// The attributes of a request that faults match on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestAttrs {
    /// Authenticated user, if any.
    pub user: Option<String>,
    /// Kubernetes verb.
    pub verb: &'static str,
    /// API group.
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Kind of the resource (for error bodies).
    pub kind: String,
    /// Subresource (`""`: none).
    pub subresource: String,
    /// Namespace (`""`: none).
    pub namespace: String,
    /// Object name (`""`: a collection).
    pub name: String,
}

impl Match {
    /// True when `r` is one of the requests this matches.
    pub fn matches(&self, r: &RequestAttrs) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let user_ok = match (&self.user, &r.user) {
            (None, _) => true,
            (Some(w), Some(u)) => w == u,
            (Some(_), None) => false,
        };
        user_ok
            && eq(&self.verb, r.verb)
            && eq(&self.group, &r.group)
            && eq(&self.resource, &r.resource)
            && eq(&self.subresource, &r.subresource)
            && eq(&self.namespace, &r.namespace)
            && eq(&self.name, &r.name)
    }
}

/// One live fault.
#[derive(Clone, Debug)]
pub struct Active {
    /// Its id.
    pub id: u64,
    /// What was asked.
    pub spec: FaultSpec,
    /// When it was added.
    pub added: Instant,
    /// Requests it decided so far.
    pub hits: u32,
}

impl Active {
    fn expired(&self, now: Instant) -> bool {
        self.spec
            .duration_millis
            .is_some_and(|ms| now.duration_since(self.added) >= Duration::from_millis(ms))
            || self.spec.times.is_some_and(|n| self.hits >= n)
    }
}

/// Pure decision: the effect of the first live fault matching `r` (counting the hit), after
/// dropping faults that ran out of requests or time.
pub fn decide(faults: &mut Vec<Active>, r: &RequestAttrs, now: Instant) -> Option<Effect> {
    faults.retain(|f| !f.expired(now));
    let f = faults.iter_mut().find(|f| f.spec.matches.matches(r))?;
    f.hits += 1;
    let effect = f.spec.effect.clone();
    faults.retain(|f| !f.expired(now));
    Some(effect)
}

/// The error a failing fault answers `r` with, shaped like the real server's.
pub fn error_for(effect: &Effect, r: &RequestAttrs) -> Option<ApiError> {
    let Effect::Fail {
        code,
        retry_after_seconds,
        message,
    } = effect
    else {
        return None;
    };
    let detail = message.clone();
    let resource = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    let mut e = match code {
        403 => {
            let user = r.user.as_deref().unwrap_or("system:anonymous");
            let qualified = if r.group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{}", r.group)
            };
            let subject = if r.name.is_empty() {
                format!("{qualified} is forbidden")
            } else {
                format!("{qualified} \"{}\" is forbidden", r.name)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", r.namespace)
            };
            let why = detail.unwrap_or_else(|| {
                format!(
                    "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                    r.verb, r.group
                )
            });
            ApiError::denied(&r.group, &r.resource, &r.name, format!("{subject}: {why}"))
        }
        409 => ApiError::conflict(
            &r.group,
            &r.resource,
            &r.name,
            &detail.unwrap_or_else(|| {
                "the object has been modified; please apply your changes to the latest version and try again".into()
            }),
        ),
        422 => ApiError::invalid_fields(
            &r.group,
            &r.kind,
            &r.name,
            &[FieldError {
                kind: ErrorType::Invalid,
                field: "metadata".into(),
                value: None,
                detail: detail.unwrap_or_else(|| "rejected by an injected fault".into()),
            }],
        ),
        429 => {
            let mut e = ApiError::too_many_requests(
                detail.unwrap_or_else(|| "Too many requests, please try again later.".into()),
            );
            e.retry_after = Some(retry_after_seconds.unwrap_or(1));
            return Some(e);
        }
        _ => ApiError::internal(format!(
            "Internal error occurred: {}",
            detail.unwrap_or_else(|| "injected fault".into())
        )),
    };
    if retry_after_seconds.is_some() {
        e.retry_after = *retry_after_seconds;
    }
    Some(e)
}

/// The faults of one server.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<(u64, Vec<Active>)>,
}

/// A live fault as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStatus {
    /// Id (for removal).
    pub id: u64,
    /// The fault.
    pub spec: FaultSpec,
    /// Requests it decided so far.
    pub hits: u32,
}

impl Faults {
    /// Adds a fault; returns its id.
    pub fn add(&self, spec: FaultSpec) -> Result<u64, String> {
        spec.check()?;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        let id = s.0;
        s.1.push(Active {
            id,
            spec,
            added: Instant::now(),
            hits: 0,
        });
        Ok(id)
    }

    /// Removes one fault; false when it is gone already.
    pub fn remove(&self, id: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.1.len();
        s.1.retain(|f| f.id != id);
        s.1.len() != before
    }

    /// True when no fault is set (requests skip matching then).
    pub fn is_empty(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .is_empty()
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }

    /// The live faults.
    pub fn list(&self) -> Vec<FaultStatus> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        s.1.retain(|f| !f.expired(now));
        s.1.iter()
            .map(|f| FaultStatus {
                id: f.id,
                spec: f.spec.clone(),
                hits: f.hits,
            })
            .collect()
    }

    /// What happens to request `r` (see [`decide`]).
    pub fn decide(&self, r: &RequestAttrs) -> Option<Effect> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.1.is_empty() {
            return None;
        }
        decide(&mut s.1, r, Instant::now())
    }

    /// Serves the admin endpoint: `rest` is the path after `/ferrolb-lab/faults`.
    pub fn admin(
        &self,
        method: &str,
        rest: &[&str],
        body: &[u8],
    ) -> Result<(u16, Value), ApiError> {
        match (method, rest) {
            ("GET", []) => Ok((200, json!({"items": self.list()}))),
            ("POST", []) => {
                let spec: FaultSpec = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid fault: {e}")))?;
                let id = self.add(spec.clone()).map_err(ApiError::bad_request)?;
                Ok((201, json!(FaultStatus { id, spec, hits: 0 })))
            }
            ("DELETE", []) => {
                self.clear();
                Ok((200, json!({"items": []})))
            }
            ("DELETE", [id]) => {
                let id: u64 = id
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid fault id {id:?}")))?;
                if self.remove(id) {
                    Ok((200, json!({"id": id})))
                } else {
                    Err(ApiError::no_route())
                }
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "the fault endpoint does not allow {method} here"
            ))),
        }
    }
}

/// Path of the admin endpoint.
pub const ADMIN_PATH: &str = "/ferrolb-lab/faults";

/// The admin endpoint of a server in another process, through a client of it.
#[derive(Clone)]
pub struct RemoteFaults {
    client: kube::Client,
}

impl RemoteFaults {
    /// Uses `client` (connected to the lab API server).
    pub fn new(client: kube::Client) -> Self {
        RemoteFaults { client }
    }

    async fn call(&self, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body)?;
        Ok(self.client.request::<Value>(req).await?)
    }

    /// Adds a fault; returns its id.
    pub async fn add(&self, spec: &FaultSpec) -> anyhow::Result<u64> {
        let v = self
            .call("POST", ADMIN_PATH, serde_json::to_vec(spec)?)
            .await?;
        v["id"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no id in the answer: {v}"))
    }

    /// Removes one fault.
    pub async fn remove(&self, id: u64) -> anyhow::Result<()> {
        self.call("DELETE", &format!("{ADMIN_PATH}/{id}"), Vec::new())
            .await
            .map(|_| ())
    }

    /// Removes every fault.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.call("DELETE", ADMIN_PATH, Vec::new())
            .await
            .map(|_| ())
    }

    /// The live faults.
    pub async fn list(&self) -> anyhow::Result<Vec<FaultStatus>> {
        let v = self.call("GET", ADMIN_PATH, Vec::new()).await?;
        Ok(serde_json::from_value(v["items"].clone())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(verb: &'static str, resource: &str, name: &str) -> RequestAttrs {
        RequestAttrs {
            user: Some("system:serviceaccount:metallb-system:speaker".into()),
            verb,
            group: "coordination.k8s.io".into(),
            resource: resource.into(),
            kind: "Lease".into(),
            subresource: String::new(),
            namespace: "metallb-system".into(),
            name: name.into(),
        }
    }

    fn active(spec: FaultSpec, id: u64, added: Instant) -> Active {
        Active {
            id,
            spec,
            added,
            hits: 0,
        }
    }

    #[test]
    fn unset_fields_match_anything_and_set_ones_must_agree() {
        let r = req("update", "leases", "n1");
        assert!(Match::default().matches(&r));
        assert!(FaultSpec::fail(500)
            .verb("update")
            .resource("leases")
            .matches
            .matches(&r));
        assert!(!FaultSpec::fail(500).verb("get").matches.matches(&r));
        assert!(!FaultSpec::fail(500).name("n2").matches.matches(&r));
        assert!(!FaultSpec::fail(500)
            .subresource("status")
            .matches
            .matches(&r));
        assert!(FaultSpec::fail(500).subresource("").matches.matches(&r));
        assert!(!FaultSpec::fail(500).group("").matches.matches(&r));
        assert!(!FaultSpec::fail(500)
            .namespace("default")
            .matches
            .matches(&r));
        let speaker = "system:serviceaccount:metallb-system:speaker";
        assert!(FaultSpec::fail(500).user(speaker).matches.matches(&r));
        assert!(!FaultSpec::fail(500).user("admin").matches.matches(&r));
        let anonymous = RequestAttrs { user: None, ..r };
        assert!(!FaultSpec::fail(500)
            .user(speaker)
            .matches
            .matches(&anonymous));
    }

    #[test]
    fn counted_faults_end_after_their_requests() {
        let t0 = Instant::now();
        let mut fs = vec![active(FaultSpec::fail(409).times(2), 1, t0)];
        let r = req("update", "leases", "n1");
        assert!(decide(&mut fs, &r, t0).is_some());
        assert!(decide(&mut fs, &r, t0).is_some());
        assert!(fs.is_empty(), "spent faults are dropped");
        assert_eq!(decide(&mut fs, &r, t0), None);
    }

    #[test]
    fn timed_faults_end_after_their_duration() {
        let t0 = Instant::now();
        let mut fs = vec![active(
            FaultSpec::fail(500).lasting(Duration::from_secs(2)),
            1,
            t0,
        )];
        let r = req("get", "leases", "n1");
        assert!(decide(&mut fs, &r, t0 + Duration::from_secs(1)).is_some());
        assert_eq!(decide(&mut fs, &r, t0 + Duration::from_secs(2)), None);
        assert!(fs.is_empty());
    }

    #[test]
    fn first_matching_fault_decides_and_only_it_counts() {
        let t0 = Instant::now();
        let mut fs = vec![
            active(FaultSpec::fail(403).verb("create").times(1), 1, t0),
            active(FaultSpec::delay(Duration::from_millis(50)).times(1), 2, t0),
            active(FaultSpec::fail(500), 3, t0),
        ];
        let r = req("update", "leases", "n1");
        assert_eq!(decide(&mut fs, &r, t0), Some(Effect::Delay { millis: 50 }));
        assert!(matches!(
            decide(&mut fs, &r, t0),
            Some(Effect::Fail { code: 500, .. })
        ));
        assert_eq!(
            fs.iter().map(|f| (f.id, f.hits)).collect::<Vec<_>>(),
            [(1, 0), (3, 1)]
        );
    }

    #[test]
    fn errors_look_like_the_real_servers() {
        let r = req("update", "leases", "n1");
        let e = error_for(&FaultSpec::fail(403).effect, &r).unwrap();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(e.message, "leases.coordination.k8s.io \"n1\" is forbidden: User \"system:serviceaccount:metallb-system:speaker\" cannot update resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"metallb-system\"");
        let e = error_for(&FaultSpec::fail(409).effect, &r).unwrap();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        assert!(e
            .message
            .starts_with("Operation cannot be fulfilled on leases.coordination.k8s.io \"n1\""));
        let e = error_for(&FaultSpec::fail(422).message("spec.x: bad").effect, &r).unwrap();
        assert_eq!((e.code, e.reason, e.causes.len()), (422, "Invalid", 1));
        assert!(e
            .message
            .starts_with("Lease.coordination.k8s.io \"n1\" is invalid: "));
        let e = error_for(&FaultSpec::fail(429).effect, &r).unwrap();
        assert_eq!(
            (e.code, e.reason, e.retry_after),
            (429, "TooManyRequests", Some(1))
        );
        assert_eq!(e.status()["details"]["retryAfterSeconds"], 1);
        let e = error_for(&FaultSpec::fail(500).retry_after(3).effect, &r).unwrap();
        assert_eq!(
            (e.code, e.reason, e.retry_after),
            (500, "InternalError", Some(3))
        );
        assert_eq!(
            error_for(&FaultSpec::delay(Duration::ZERO).effect, &r),
            None
        );
        let list = RequestAttrs {
            name: String::new(),
            namespace: String::new(),
            verb: "list",
            ..r
        };
        let e = error_for(&FaultSpec::fail(403).effect, &list).unwrap();
        assert!(e
            .message
            .starts_with("leases.coordination.k8s.io is forbidden: "));
        assert!(e.message.ends_with("at the cluster scope"));
    }

    #[test]
    fn only_known_codes_and_positive_counts_are_accepted() {
        let f = Faults::default();
        assert!(f.add(FaultSpec::fail(418)).is_err());
        assert!(f.add(FaultSpec::fail(500).times(0)).is_err());
        let id = f.add(FaultSpec::fail(500)).unwrap();
        assert_eq!(f.list().len(), 1);
        assert!(f.remove(id));
        assert!(!f.remove(id));
    }

    #[test]
    fn specs_round_trip_through_the_admin_json() {
        let spec = FaultSpec::fail(429)
            .verb("patch")
            .resource("services")
            .subresource("status")
            .retry_after(2)
            .times(3)
            .lasting(Duration::from_secs(5));
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            v,
            json!({"match": {"verb": "patch", "resource": "services", "subresource": "status"},
                   "effect": {"fail": {"code": 429, "retryAfterSeconds": 2}},
                   "times": 3, "durationMillis": 5000})
        );
        assert_eq!(serde_json::from_value::<FaultSpec>(v).unwrap(), spec);
        let f = Faults::default();
        let (code, added) = f
            .admin("POST", &[], br#"{"effect": {"delay": {"millis": 10}}}"#)
            .unwrap();
        assert_eq!(code, 201);
        assert_eq!(
            f.admin("GET", &[], b"").unwrap().1["items"][0]["id"],
            added["id"]
        );
        assert_eq!(
            f.admin("POST", &[], br#"{"effect": {"explode": {}}}"#)
                .unwrap_err()
                .code,
            400
        );
        let id = added["id"].to_string();
        assert_eq!(f.admin("DELETE", &[id.as_str()], b"").unwrap().0, 200);
        assert_eq!(
            f.admin("DELETE", &[id.as_str()], b"").unwrap_err().code,
            404
        );
    }
}

//! Request recording in the shape of kube-apiserver's audit log (`audit.k8s.io/v1` Events at
//! level Metadata, one JSON object per line): who (user, impersonated user), what (verb, API
//! group, resource, subresource, namespace, name) and the response code. Kept in memory
//! ([`super::ApiServer::record_requests`]) and/or appended to a file
//! ([`super::ApiServer::audit_log`], `ferrolb lab apiserver --audit-log`), so tests can compare
//! what each component did with what its Roles grant.

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::authz::{RequestAttributes, UserInfo};

/// `authentication.k8s.io/v1 UserInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditUser {
    pub username: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl From<&UserInfo> for AuditUser {
    fn from(u: &UserInfo) -> Self {
        AuditUser {
            username: u.name.clone(),
            groups: u.groups.clone(),
        }
    }
}

/// `audit.k8s.io/v1 ObjectReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The response code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseStatus {
    pub code: u16,
}

/// One recorded request (`audit.k8s.io/v1 Event`, the fields this server fills).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub kind: String,
    pub api_version: String,
    pub level: String,
    pub stage: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    /// The authenticated user (`system:anonymous` without credentials).
    pub user: AuditUser,
    /// Who the request acted as, when it impersonated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<AuditUser>,
    /// The object, for resource requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRef>,
    pub response_status: ResponseStatus,
}

impl AuditEvent {
    /// A record of a request by `user` (acting as `impersonated`) with attributes `a`.
    pub fn new(
        user: &UserInfo,
        impersonated: Option<&UserInfo>,
        a: &RequestAttributes,
        request_uri: &str,
        code: u16,
    ) -> Self {
        AuditEvent {
            kind: "Event".into(),
            api_version: "audit.k8s.io/v1".into(),
            level: "Metadata".into(),
            stage: if a.verb == "watch" && code < 300 {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            }
            .into(),
            request_uri: request_uri.into(),
            verb: a.verb.clone(),
            user: user.into(),
            impersonated_user: impersonated.map(Into::into),
            object_ref: a.resource_request.then(|| ObjectRef {
                resource: a.resource.clone(),
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                api_group: a.api_group.clone(),
                api_version: a.api_version.clone(),
                subresource: a.subresource.clone(),
            }),
            response_status: ResponseStatus { code },
        }
    }

    /// The user the request acted as (the impersonated one, if any).
    pub fn effective_user(&self) -> &str {
        self.impersonated_user
            .as_ref()
            .map_or(&self.user.username, |u| &u.username)
    }
}

/// Where records go.
#[derive(Debug, Default)]
pub struct Audit {
    memory: Option<Mutex<Vec<AuditEvent>>>,
    file: Option<Mutex<std::fs::File>>,
}

impl Audit {
    /// Records nowhere.
    pub fn off() -> Self {
        Audit::default()
    }

    /// Records in memory (`in_memory`) and/or appends to `file`.
    pub fn new(in_memory: bool, file: Option<&Path>) -> std::io::Result<Self> {
        let file = match file {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Audit {
            memory: in_memory.then(|| Mutex::new(Vec::new())),
            file,
        })
    }

    /// True when records are kept anywhere.
    pub fn enabled(&self) -> bool {
        self.memory.is_some() || self.file.is_some()
    }

    /// Records one event.
    pub fn record(&self, ev: AuditEvent) {
        if let Some(f) = &self.file {
            if let Ok(mut line) = serde_json::to_vec(&ev) {
                line.push(b'\n');
                // One write per line (O_APPEND): readers never see half a record.
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = f.write_all(&line) {
                    tracing::warn!(error = %e, "writing the audit log failed");
                }
            }
        }
        if let Some(m) = &self.memory {
            m.lock().unwrap_or_else(|p| p.into_inner()).push(ev);
        }
    }

    /// The events recorded in memory so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.memory
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }
}

/// Reads an audit log file written by [`Audit`] (lines that do not parse are skipped).
pub fn read_log(path: &Path) -> std::io::Result<Vec<AuditEvent>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_a_file_in_kube_apiserver_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::new(true, Some(&path)).unwrap();
        let u = UserInfo::service_account("metallb-system", "ferrolb-speaker");
        let a = RequestAttributes::resource("patch", "", "services/status", "default", "web");
        audit.record(AuditEvent::new(
            &u,
            None,
            &a,
            "/api/v1/namespaces/default/services/web/status",
            403,
        ));
        let v: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(
            v["user"]["username"],
            "system:serviceaccount:metallb-system:ferrolb-speaker"
        );
        assert_eq!(v["objectRef"]["subresource"], "status");
        assert_eq!(v["responseStatus"]["code"], 403);
        assert_eq!(read_log(&path).unwrap(), audit.events());
        assert_eq!(audit.events()[0].effective_user(), u.name);
    }
}

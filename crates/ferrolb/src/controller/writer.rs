//! The only place the controller writes to the API (shell). Every write first checks
//! [`Leadership::is_leader`], is counted in `ferrolb_controller_api_writes_total`, and
//! reports 409 Conflict distinctly so the caller retries with backoff. Status writes feed
//! readiness (see [`Writer::with_health`]): per kind (Service status, pool status), a write
//! the API server failed starts a streak of failures, an answered one ends it.

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::Value;

use super::leader::Leadership;
use super::metrics::Metrics;
use crate::crd::IPAddressPool;
use crate::telemetry::{Check, Health};

/// `reportingController` of the Events.
pub const REPORTER: &str = "ferrolb-controller";

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Normal event.
    Normal,
    /// Warning event.
    Warning,
}

/// An Event the core wants emitted about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Normal or Warning.
    pub severity: Severity,
    /// MetalLB reason (`IPAllocated`, `AllocationFailed`, …).
    pub reason: String,
    /// Human-readable message.
    pub note: String,
    /// events.k8s.io `action` (what the controller did).
    pub action: String,
}

impl PlannedEvent {
    /// A Normal event.
    pub fn normal(reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self {
            severity: Severity::Normal,
            reason: reason.into(),
            note: note.into(),
            action: action.into(),
        }
    }
    /// A Warning event.
    pub fn warning(reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            reason: reason.into(),
            note: note.into(),
            action: action.into(),
        }
    }
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This replica is not (or no longer) the leader.
    #[error("not the leader; write skipped")]
    NotLeader,
    /// The object changed since it was read (409); retry after the new version.
    #[error("conflict writing {0}: the object changed since it was read")]
    Conflict(String),
    /// The object is gone (404).
    #[error("{0} not found")]
    NotFound(String),
    /// Any other API error.
    #[error("API error writing {what}: {source}")]
    Api {
        /// What was written.
        what: String,
        /// The error.
        #[source]
        source: Box<kube::Error>,
    },
}

fn classify(what: String, e: kube::Error) -> WriteError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => WriteError::Conflict(what),
        kube::Error::Api(s) if s.code == 404 => WriteError::NotFound(what),
        _ => WriteError::Api {
            what,
            source: Box::new(e),
        },
    }
}

/// Writes Service status, pool status and Events, only while leading.
#[derive(Clone)]
pub struct Writer {
    client: kube::Client,
    reporter: Reporter,
    leadership: Leadership,
    metrics: Metrics,
    pool_namespace: String,
    service_writes: Check,
    pool_writes: Check,
    session: Check,
}

impl Writer {
    /// A writer for `client`; `instance` is this replica's identity.
    pub fn new(
        client: kube::Client,
        instance: &str,
        leadership: Leadership,
        metrics: Metrics,
        pool_namespace: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: Some(instance.into()),
        };
        Self {
            reporter,
            client,
            leadership,
            metrics,
            pool_namespace: pool_namespace.into(),
            service_writes: Check::default(),
            pool_writes: Check::default(),
            session: Check::default(),
        }
    }

    /// Reports to `health`: the checks `service status writes` and `pool status writes`
    /// fail while writes of that kind keep failing, `leadership session` while sessions
    /// keep failing before they are up ([`Writer::session_up`]).
    pub fn with_health(mut self, health: &Health) -> Self {
        self.service_writes = health.check("service status writes");
        self.pool_writes = health.check("pool status writes");
        self.session = health.check("leadership session");
        self
    }

    /// A leadership session is up (its state rebuilt): ends a streak of failed sessions.
    pub fn session_up(&self) {
        self.session.ok();
    }

    /// A leadership session failed.
    pub fn session_failed(&self) {
        self.session.failed();
    }

    /// Not leading any more: nothing of this replica is failing.
    pub fn standing_by(&self) {
        for c in [&self.session, &self.service_writes, &self.pool_writes] {
            c.ok();
        }
    }

    fn gate(&self) -> Result<(), WriteError> {
        if self.leadership.is_leader() {
            Ok(())
        } else {
            Err(WriteError::NotLeader)
        }
    }

    /// Feeds `check`: the API server took the write (or answered 404 / 409), or failed it.
    fn record<T>(check: &Check, r: Result<T, WriteError>) -> Result<T, WriteError> {
        match &r {
            Ok(_) | Err(WriteError::Conflict(_) | WriteError::NotFound(_)) => check.ok(),
            Err(WriteError::Api { .. }) => check.failed(),
            Err(WriteError::NotLeader) => {}
        }
        r
    }

    /// Merge-patches the `status` subresource of a Service (status + annotation).
    pub async fn patch_service_status(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Service, WriteError> {
        self.gate()?;
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        self.metrics.count_write("service_status");
        let r = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| classify(format!("Service {ns}/{name}"), e));
        Self::record(&self.service_writes, r)
    }

    /// Merge-patches the `status` subresource of an IPAddressPool.
    pub async fn patch_pool_status(&self, name: &str, patch: &Value) -> Result<(), WriteError> {
        self.gate()?;
        let api: Api<IPAddressPool> = Api::namespaced(self.client.clone(), &self.pool_namespace);
        self.metrics.count_write("pool_status");
        let r = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|e| classify(format!("IPAddressPool {name}"), e));
        Self::record(&self.pool_writes, r)
    }

    /// Publishes an Event about `regarding`.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        ev: &PlannedEvent,
    ) -> Result<(), WriteError> {
        self.gate()?;
        self.metrics.count_write("event");
        let event = Event {
            type_: match ev.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: ev.reason.clone(),
            note: Some(ev.note.clone()),
            action: ev.action.clone(),
            secondary: None,
        };
        let what = format!(
            "Event {} about {}/{}",
            ev.reason,
            regarding.namespace.as_deref().unwrap_or(""),
            regarding.name.as_deref().unwrap_or("")
        );
        // A fresh Recorder per Event: the controller only emits on change, so kube's
        // per-key series cache would only hold memory (about 2 KiB per Service).
        Recorder::new(self.client.clone(), self.reporter.clone())
            .publish(&event, regarding)
            .await
            .map_err(|e| classify(what, e))
    }
}

//! Prometheus metrics of the embedded API server, served at its own `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `ferrolb_apiserver_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `discovery` or `other`.
    pub verb: String,
    /// `group/plural`, empty for non-resource paths.
    pub resource: String,
    /// HTTP status code.
    pub code: String,
}

/// Labels of `ferrolb_apiserver_dropped_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    /// `readOnly` or `mutating`, as kube-apiserver's `apiserver_dropped_requests_total`.
    pub request_kind: String,
}

/// The server's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by verb, resource and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests refused with 429 because too many were in flight, by kind.
    pub dropped_requests: Family<DroppedLabels, Counter>,
    /// Watch events written to clients.
    pub watch_events: Counter,
    /// Watches ended with 410 Gone.
    pub watch_gone: Counter,
    /// State-file writes, and failed writes.
    pub persist_writes: Counter,
    /// Failed state-file writes.
    pub persist_errors: Counter,
    /// Open watch streams.
    pub watches: Gauge,
    /// Latest resourceVersion.
    pub resource_version: Gauge<u64, AtomicU64>,
}

impl Metrics {
    /// Registers every metric in `reg` (prefix `ferrolb_apiserver`).
    pub fn register(&self, reg: &mut Registry) {
        let reg = reg.sub_registry_with_prefix("ferrolb_apiserver");
        reg.register(
            "requests",
            "API requests by verb, resource and code",
            self.requests.clone(),
        );
        reg.register(
            "dropped_requests",
            "Requests refused with 429 because too many were in flight, by kind",
            self.dropped_requests.clone(),
        );
        reg.register(
            "watch_events",
            "Watch events sent to clients",
            self.watch_events.clone(),
        );
        reg.register(
            "watch_gone",
            "Watches ended with 410 Gone (resourceVersion too old)",
            self.watch_gone.clone(),
        );
        reg.register(
            "persist_writes",
            "State file writes",
            self.persist_writes.clone(),
        );
        reg.register(
            "persist_errors",
            "Failed state file writes",
            self.persist_errors.clone(),
        );
        reg.register("watches", "Open watch streams", self.watches.clone());
        reg.register(
            "resource_version",
            "Latest resourceVersion",
            self.resource_version.clone(),
        );
    }
}

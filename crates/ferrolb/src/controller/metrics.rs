//! Prometheus metrics of the controller (prometheus-client).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ferrolb_allocator_addresses_total` | gauge | `pool`, `family` (`ipv4`/`ipv6`): capacity |
//! | `ferrolb_allocator_addresses_in_use_total` | gauge | `pool`, `family`: distinct IPs in use |
//! | `ferrolb_controller_reconciles_total` | counter | – |
//! | `ferrolb_controller_reconcile_errors_total` | counter | – |
//! | `ferrolb_controller_reconcile_duration_seconds` | histogram | – |
//! | `ferrolb_controller_leader` | gauge | – (1 while this replica leads) |
//! | `ferrolb_controller_api_writes_total` | counter | `kind`: what was written |
//! | `ferrolb_controller_pending_services` | gauge | – (Services waiting for an IP) |

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the per-pool allocator gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Labels of the API write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `service_status`, `event`, `pool_status`.
    pub kind: String,
}

/// Every controller metric. Cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Capacity per pool and family.
    pub addresses_total: Family<PoolLabels, Gauge>,
    /// Distinct addresses in use per pool and family.
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that ended in an error (API error, conflict …).
    pub reconcile_errors: Counter,
    /// Reconcile duration in seconds.
    pub reconcile_duration: Histogram,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// Writes sent to the API server, by kind.
    pub api_writes: Family<WriteLabels, Counter>,
    /// Services currently waiting for an IP.
    pub pending: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            addresses_total: Family::default(),
            addresses_in_use: Family::default(),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            leader: Gauge::default(),
            api_writes: Family::default(),
            pending: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in a fresh registry.
    pub fn new_registered() -> (Self, Arc<Mutex<Registry>>) {
        let m = Self::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        (m, Arc::new(Mutex::new(reg)))
    }

    /// Registers every metric in `reg`.
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "ferrolb_allocator_addresses_total",
            "Number of usable addresses per pool and family (capacity, clamped to i64)",
            self.addresses_total.clone(),
        );
        reg.register(
            "ferrolb_allocator_addresses_in_use_total",
            "Number of distinct addresses in use per pool and family",
            self.addresses_in_use.clone(),
        );
        reg.register(
            "ferrolb_controller_reconciles",
            "Service reconciles run",
            self.reconciles.clone(),
        );
        reg.register(
            "ferrolb_controller_reconcile_errors",
            "Service reconciles that failed and will be retried",
            self.reconcile_errors.clone(),
        );
        reg.register(
            "ferrolb_controller_reconcile_duration_seconds",
            "Duration of one Service reconcile",
            self.reconcile_duration.clone(),
        );
        reg.register(
            "ferrolb_controller_leader",
            "1 while this replica holds the leader lease, else 0",
            self.leader.clone(),
        );
        reg.register(
            "ferrolb_controller_api_writes",
            "Writes sent to the Kubernetes API, by kind",
            self.api_writes.clone(),
        );
        reg.register(
            "ferrolb_controller_pending_services",
            "LoadBalancer Services waiting for an IP",
            self.pending.clone(),
        );
    }

    /// Counts one API write of `kind`.
    pub fn count_write(&self, kind: &str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Total API writes of `kind` so far.
    pub fn writes(&self, kind: &str) -> u64 {
        self.api_writes
            .get(&WriteLabels {
                kind: kind.to_string(),
            })
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// Sets the per-pool gauges of one pool.
    pub fn set_pool(&self, pool: &str, family: &str, total: i64, in_use: i64) {
        let l = PoolLabels {
            pool: pool.to_string(),
            family: family.to_string(),
        };
        self.addresses_total.get_or_create(&l).set(total);
        self.addresses_in_use.get_or_create(&l).set(in_use);
    }

    /// Removes the per-pool gauges of a pool that no longer exists.
    pub fn remove_pool(&self, pool: &str) {
        for family in ["ipv4", "ipv6"] {
            let l = PoolLabels {
                pool: pool.to_string(),
                family: family.to_string(),
            };
            self.addresses_total.remove(&l);
            self.addresses_in_use.remove(&l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_expected_names() {
        let (m, reg) = Metrics::new_registered();
        m.set_pool("default", "ipv4", 256, 3);
        m.reconciles.inc();
        m.leader.set(1);
        m.count_write("event");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg.lock().unwrap()).unwrap();
        for needle in [
            "ferrolb_allocator_addresses_total{pool=\"default\",family=\"ipv4\"} 256",
            "ferrolb_allocator_addresses_in_use_total{pool=\"default\",family=\"ipv4\"} 3",
            "ferrolb_controller_reconciles_total 1",
            "ferrolb_controller_leader 1",
            "ferrolb_controller_api_writes_total{kind=\"event\"} 1",
            "ferrolb_controller_reconcile_duration_seconds_bucket",
        ] {
            assert!(out.contains(needle), "missing {needle} in\n{out}");
        }
        m.remove_pool("default");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg.lock().unwrap()).unwrap();
        assert!(!out.contains("pool=\"default\""), "{out}");
        assert_eq!(m.writes("event"), 1);
    }
}

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
//! | `ferrolb_config_frozen_pools`, `ferrolb_config_errors` | gauge | – (see [`ConfigMetrics`]) |
//!
//! MetalLB's controller series are views of the same values: `metallb_allocator_*` of the
//! pool figures ([`PoolFigures::metallb_series`]), `metallb_k8s_client_updates_total` /
//! `…_update_errors_total` of the reconcile counters, `metallb_k8s_client_config_*` of
//! [`ConfigMetrics`]. The pool and configuration series exist on the leader only: a replica
//! that stops leading drops them ([`Metrics::standing_by`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::allocator::PoolCapacity;
use crate::telemetry::{ConfigMetrics, ConfigState};

/// One pool's capacity and use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolFigures {
    /// Usable addresses per family (clamped to i64).
    pub capacity: PoolCapacity,
    /// Distinct IPv4 addresses in use.
    pub in_use_v4: i64,
    /// Distinct IPv6 addresses in use.
    pub in_use_v6: i64,
}

impl PoolFigures {
    /// MetalLB's six allocator series of this pool, `(name, value)`: capacity and use, for
    /// both families together (saturating at `i64::MAX`, MetalLB's `MaxInt64` for huge IPv6
    /// pools) and per family.
    pub fn metallb_series(&self) -> [(&'static str, i64); 6] {
        let c = &self.capacity;
        [
            ("metallb_allocator_addresses_total", c.total()),
            ("metallb_allocator_ipv4_addresses_total", c.v4),
            ("metallb_allocator_ipv6_addresses_total", c.v6),
            (
                "metallb_allocator_addresses_in_use_total",
                self.in_use_v4.saturating_add(self.in_use_v6),
            ),
            (
                "metallb_allocator_ipv4_addresses_in_use_total",
                self.in_use_v4,
            ),
            (
                "metallb_allocator_ipv6_addresses_in_use_total",
                self.in_use_v6,
            ),
        ]
    }
}

const METALLB_POOL_HELP: [&str; 6] = [
    "Number of usable IP addresses, per pool",
    "Number of usable IPv4 addresses, per pool",
    "Number of usable IPv6 addresses, per pool",
    "Number of IP addresses in use, per pool",
    "Number of IPv4 addresses in use, per pool",
    "Number of IPv6 addresses in use, per pool",
];

/// The per-pool figures, exported as ferrolb's `{pool, family}` gauges and MetalLB's
/// `{pool}` gauges. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PoolGauges {
    pools: Arc<Mutex<BTreeMap<String, PoolFigures>>>,
}

impl PoolGauges {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolFigures>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The figures of `pool`, if exported.
    pub fn get(&self, pool: &str) -> Option<PoolFigures> {
        self.lock().get(pool).copied()
    }
}

impl Collector for PoolGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = self.lock();
        if pools.is_empty() {
            return Ok(());
        }
        for (name, help, of) in [
            (
                "ferrolb_allocator_addresses_total",
                "Number of usable addresses per pool and family (capacity, clamped to i64)",
                (|f: &PoolFigures| (f.capacity.v4, f.capacity.v6))
                    as fn(&PoolFigures) -> (i64, i64),
            ),
            (
                "ferrolb_allocator_addresses_in_use_total",
                "Number of distinct addresses in use per pool and family",
                |f: &PoolFigures| (f.in_use_v4, f.in_use_v6),
            ),
        ] {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (pool, f) in pools.iter() {
                let (v4, v6) = of(f);
                for (family, v) in [("ipv4", v4), ("ipv6", v6)] {
                    e.encode_family(&[("pool", pool.as_str()), ("family", family)])?
                        .encode_gauge(&v)?;
                }
            }
        }
        for (i, help) in METALLB_POOL_HELP.iter().enumerate() {
            let name = PoolFigures::default().metallb_series()[i].0;
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (pool, f) in pools.iter() {
                e.encode_family(&[("pool", pool.as_str())])?
                    .encode_gauge(&f.metallb_series()[i].1)?;
            }
        }
        Ok(())
    }
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
    /// Capacity and use per pool.
    pub pools: PoolGauges,
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
    /// The configuration in force (leader only) and MetalLB's `k8s_client` series.
    pub config: ConfigMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            pools: PoolGauges::default(),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            leader: Gauge::default(),
            api_writes: Family::default(),
            pending: Gauge::default(),
            config: ConfigMetrics::new(ConfigState::Standby),
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
        reg.register_collector(Box::new(self.pools.clone()));
        self.config
            .register(reg, &self.reconciles, &self.reconcile_errors);
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

    /// Sets the figures of one pool.
    pub fn set_pool(&self, pool: &str, figures: PoolFigures) {
        self.pools.lock().insert(pool.to_string(), figures);
    }

    /// Removes the figures of a pool that no longer exists.
    pub fn remove_pool(&self, pool: &str) {
        self.pools.lock().remove(pool);
    }

    /// A leadership session begins: in charge of the configuration, none loaded yet.
    pub fn leading(&self) {
        self.config.set(ConfigState::NotLoaded);
    }

    /// A leadership session ended: the leader-only series (pools, pending Services,
    /// configuration) are dropped, so only the leader exports them.
    pub fn standing_by(&self) {
        self.pools.lock().clear();
        self.pending.set(0);
        self.config.set(ConfigState::Standby);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(reg: &Arc<Mutex<Registry>>) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg.lock().unwrap()).unwrap();
        out
    }

    #[test]
    fn encodes_expected_names() {
        let (m, reg) = Metrics::new_registered();
        m.set_pool(
            "default",
            PoolFigures {
                capacity: PoolCapacity { v4: 256, v6: 16 },
                in_use_v4: 3,
                in_use_v6: 1,
            },
        );
        m.reconciles.inc();
        m.leader.set(1);
        m.count_write("event");
        let out = encode(&reg);
        for needle in [
            "ferrolb_allocator_addresses_total{pool=\"default\",family=\"ipv4\"} 256",
            "ferrolb_allocator_addresses_total{pool=\"default\",family=\"ipv6\"} 16",
            "ferrolb_allocator_addresses_in_use_total{pool=\"default\",family=\"ipv4\"} 3",
            "metallb_allocator_addresses_total{pool=\"default\"} 272",
            "metallb_allocator_ipv4_addresses_total{pool=\"default\"} 256",
            "metallb_allocator_ipv6_addresses_total{pool=\"default\"} 16",
            "metallb_allocator_addresses_in_use_total{pool=\"default\"} 4",
            "metallb_allocator_ipv4_addresses_in_use_total{pool=\"default\"} 3",
            "metallb_allocator_ipv6_addresses_in_use_total{pool=\"default\"} 1",
            "# TYPE metallb_allocator_addresses_total gauge",
            "ferrolb_controller_reconciles_total 1",
            "metallb_k8s_client_updates_total 1",
            "metallb_k8s_client_update_errors_total 0",
            "ferrolb_controller_leader 1",
            "ferrolb_controller_api_writes_total{kind=\"event\"} 1",
            "ferrolb_controller_reconcile_duration_seconds_bucket",
        ] {
            assert!(out.contains(needle), "missing {needle} in\n{out}");
        }
        // A standby exports no configuration series (MetalLB's alerts on them would fire).
        assert!(!out.contains("config_loaded_bool"), "{out}");
        m.leading();
        assert!(encode(&reg).contains("metallb_k8s_client_config_loaded_bool 0"));
        m.config.loaded(1, 1);
        assert!(encode(&reg).contains("metallb_k8s_client_config_stale_bool 1"));
        m.remove_pool("default");
        let out = encode(&reg);
        assert!(!out.contains("pool=\"default\""), "{out}");
        assert_eq!(m.writes("event"), 1);
        m.set_pool("p", PoolFigures::default());
        m.pending.set(2);
        m.standing_by();
        let out = encode(&reg);
        assert!(!out.contains("pool=\"p\""), "{out}");
        assert!(
            out.contains("ferrolb_controller_pending_services 0"),
            "{out}"
        );
        assert!(!out.contains("config_loaded_bool"), "{out}");
    }

    #[test]
    fn a_huge_ipv6_pool_saturates_as_metallb() {
        let f = PoolFigures {
            capacity: PoolCapacity {
                v4: 256,
                v6: i64::MAX,
            },
            in_use_v4: 1,
            in_use_v6: 2,
        };
        let s = f.metallb_series();
        assert_eq!(s[0], ("metallb_allocator_addresses_total", i64::MAX));
        assert_eq!(s[2], ("metallb_allocator_ipv6_addresses_total", i64::MAX));
        assert_eq!(s[3], ("metallb_allocator_addresses_in_use_total", 3));
    }
}

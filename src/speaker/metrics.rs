//! Speaker metrics (prometheus-client), registered under the `ferrolb_speaker` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the `announced` gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnnouncedLabels {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The announced IP.
    pub ip: String,
    /// This node.
    pub node: String,
}

/// Labels of the ownership-change counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// `acquired` (this node started owning an IP) or `released` (it stopped).
    pub direction: String,
}

/// Every counter the speaker shell updates.
#[derive(Debug)]
pub struct Metrics {
    /// 1 per (service, ip) this node announces (MetalLB's `metallb_speaker_announced`).
    pub announced: Family<AnnouncedLabels, Gauge>,
    /// Ownership changes seen by this node, by direction.
    pub ownership_changes: Family<ChangeLabels, Counter>,
    /// Failed or refused renewals of this node's Lease.
    pub lease_renew_failures: Counter,
    /// Claim writes lost to another node (optimistic-concurrency conflicts).
    pub claim_conflicts: Counter,
    /// Failed API writes (claims, ServiceL2Status, events), retried with backoff.
    pub api_errors: Counter,
    /// Times this node withdrew everything because its Lease renewals failed.
    pub fenced: Counter,
    /// Seconds from noticing an owner's loss (its Lease expired or released) to this node's
    /// first gratuitous announcement for the IP.
    pub failover_seconds: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `reg` (prefix `ferrolb_speaker`).
    pub fn new(reg: &mut Registry) -> Self {
        let m = Self {
            announced: Family::default(),
            ownership_changes: Family::default(),
            lease_renew_failures: Counter::default(),
            claim_conflicts: Counter::default(),
            api_errors: Counter::default(),
            fenced: Counter::default(),
            failover_seconds: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0,
            ]),
        };
        let r = reg.sub_registry_with_prefix("ferrolb_speaker");
        r.register(
            "announced",
            "1 while this node announces the IP for the Service",
            m.announced.clone(),
        );
        r.register(
            "ownership_changes",
            "IPs this node started (acquired) or stopped (released) owning",
            m.ownership_changes.clone(),
        );
        r.register(
            "lease_renew_failures",
            "Failed renewals of this node's Lease",
            m.lease_renew_failures.clone(),
        );
        r.register(
            "claim_conflicts",
            "Ownership claims lost to another node (409 Conflict / AlreadyExists)",
            m.claim_conflicts.clone(),
        );
        r.register(
            "api_errors",
            "Failed API writes, retried with backoff",
            m.api_errors.clone(),
        );
        r.register(
            "fenced",
            "Times every announcement was withdrawn because the Lease could not be renewed",
            m.fenced.clone(),
        );
        r.register(
            "failover_seconds",
            "From noticing an IP's previous owner is gone to this node's first gratuitous packet",
            m.failover_seconds.clone(),
        );
        m
    }

    /// Counts an ownership change.
    pub fn change(&self, acquired: bool) {
        let direction = if acquired { "acquired" } else { "released" };
        self.ownership_changes
            .get_or_create(&ChangeLabels {
                direction: direction.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_and_encoded() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        m.change(true);
        m.lease_renew_failures.inc();
        m.failover_seconds.observe(0.3);
        m.announced
            .get_or_create(&AnnouncedLabels {
                service: "ns/a".into(),
                ip: "10.0.0.1".into(),
                node: "n1".into(),
            })
            .set(1);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("ferrolb_speaker_ownership_changes_total{direction=\"acquired\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_speaker_lease_renew_failures_total 1"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_speaker_failover_seconds_count 1"),
            "{out}"
        );
        assert!(
            out.contains(
                "ferrolb_speaker_announced{service=\"ns/a\",ip=\"10.0.0.1\",node=\"n1\"} 1"
            ),
            "{out}"
        );
    }
}

//! Speaker metrics (prometheus-client), registered under the `ferrolb_speaker` prefix, with
//! MetalLB's speaker series as views of the same values: `metallb_speaker_announced`
//! (of [`Metrics::announced`]), `metallb_k8s_client_updates_total` (of
//! [`Metrics::reconciles`]), `metallb_k8s_client_update_errors_total` (of
//! [`Metrics::api_errors`]) and the configuration series of [`ConfigMetrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use crate::telemetry::{ConfigMetrics, ConfigState, IpLabelValue, Mirrored, SeriesName};

/// Labels of the `announced` gauge ([`Metrics::announced_labels`]): a series per announced
/// (Service, IP), so no string of its own — the Service's key and the node's name are
/// shared allocations, the IP an address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnnouncedLabels {
    /// `namespace/name` of the Service.
    pub service: Arc<str>,
    /// The announced IP.
    pub ip: IpLabelValue,
    /// This node.
    pub node: Arc<str>,
}

/// Labels of the ownership-change counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// `acquired` (this node started owning an IP) or `released` (it stopped).
    pub direction: String,
}

/// Labels of the received-heartbeat counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeartbeatLabels {
    /// `ok`, or why it was dropped: `malformed`, `forged`, `stale`, `replayed`, `own`.
    pub result: String,
}

/// Every counter the speaker shell updates.
#[derive(Debug)]
pub struct Metrics {
    /// 1 per (service, ip) this node announces; also MetalLB's `metallb_speaker_announced`
    /// (with `protocol="layer2"`).
    pub announced: Mirrored<AnnouncedLabels, Gauge>,
    /// Reconcile passes run.
    pub reconciles: Counter,
    /// The configuration in force (frozen pools, errors) and MetalLB's `k8s_client` series.
    pub config: ConfigMetrics,
    /// Ownership changes seen by this node, by direction.
    pub ownership_changes: Family<ChangeLabels, Counter>,
    /// Failed or refused renewals of this node's Lease.
    pub lease_renew_failures: Counter,
    /// Claim writes lost to another node (optimistic-concurrency conflicts).
    pub claim_conflicts: Counter,
    /// Failed API writes (claims, ServiceL2Status, events), retried with backoff.
    pub api_errors: Counter,
    /// Events not written because too many were waiting ([`super::events::EVENT_QUEUE`]).
    pub events_dropped: Counter,
    /// Times this node withdrew everything because its Lease renewals failed.
    pub fenced: Counter,
    /// Seconds from noticing an owner's loss (its Lease expired or released) to this node's
    /// first gratuitous announcement for the IP.
    pub failover_seconds: Histogram,
    pub heartbeats_sent: Counter,
    /// Heartbeat bytes sent (UDP payload).
    pub heartbeat_bytes_sent: Counter,
    /// Heartbeat bytes received (UDP payload, accepted or not).
    pub heartbeat_bytes_received: Counter,
    /// Heartbeats that could not be sent.
    pub heartbeat_send_errors: Counter,
    /// Heartbeats received, by result (accepted, or why dropped).
    pub heartbeats_received: Family<HeartbeatLabels, Counter>,
    /// Peers heard within the fence time.
    pub peers_heard: Gauge,
    /// 1 while this node may announce (Lease fresh, or heartbeat quorum).
    pub may_announce: Gauge,
    /// Silence of a peer before each heartbeat accepted from it (how close the fence and
    /// death times came to firing).
    pub heartbeat_gap_seconds: Histogram,
    /// Time between the send times of two successive successful renewals of this node's
    /// Lease (how close the renew deadline came to firing).
    pub lease_renew_gap_seconds: Histogram,
    /// The node name of the `announced` series (one allocation for all of them).
    node: OnceLock<Arc<str>>,
}

impl Metrics {
    /// Creates the metrics and registers them in `reg` (prefix `ferrolb_speaker`).
    pub fn new(reg: &mut Registry) -> Self {
        let m = Self {
            announced: Mirrored::default(),
            reconciles: Counter::default(),
            config: ConfigMetrics::new(ConfigState::NotLoaded),
            ownership_changes: Family::default(),
            lease_renew_failures: Counter::default(),
            claim_conflicts: Counter::default(),
            api_errors: Counter::default(),
            events_dropped: Counter::default(),
            fenced: Counter::default(),
            failover_seconds: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0,
            ]),
            heartbeats_sent: Counter::default(),
            heartbeat_bytes_sent: Counter::default(),
            heartbeat_bytes_received: Counter::default(),
            heartbeat_send_errors: Counter::default(),
            heartbeats_received: Family::default(),
            peers_heard: Gauge::default(),
            may_announce: Gauge::default(),
            heartbeat_gap_seconds: Histogram::new([
                0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 1.0, 2.0,
            ]),
            lease_renew_gap_seconds: Histogram::new([0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0]),
            node: OnceLock::new(),
        };
        m.announced.register(
            reg,
            SeriesName {
                name: "ferrolb_speaker_announced",
                help: "1 while this node announces the IP for the Service",
            },
            SeriesName {
                name: "metallb_speaker_announced",
                help: "Services being announced from this node. This is desired state, \
                       it does not guarantee that the routing protocols have converged.",
            },
            &[("protocol", "layer2")],
        );
        m.config.register(reg, &m.reconciles, &m.api_errors);
        let r = reg.sub_registry_with_prefix("ferrolb_speaker");
        r.register("reconciles", "Reconcile passes run", m.reconciles.clone());
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
            "events_dropped",
            "Events not written because too many were waiting to be",
            m.events_dropped.clone(),
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
        r.register(
            "heartbeats_sent",
            "Heartbeats sent to peers",
            m.heartbeats_sent.clone(),
        );
        r.register(
            "heartbeat_sent_bytes",
            "Heartbeat UDP payload bytes sent",
            m.heartbeat_bytes_sent.clone(),
        );
        r.register(
            "heartbeat_received_bytes",
            "Heartbeat UDP payload bytes received",
            m.heartbeat_bytes_received.clone(),
        );
        r.register(
            "heartbeat_send_errors",
            "Heartbeats that could not be sent",
            m.heartbeat_send_errors.clone(),
        );
        r.register(
            "heartbeats_received",
            "Heartbeats received: result=ok, or dropped as malformed, forged, stale, replayed, own",
            m.heartbeats_received.clone(),
        );
        r.register(
            "peers_heard",
            "Peers heard within the fence time",
            m.peers_heard.clone(),
        );
        r.register(
            "may_announce",
            "1 while this node may announce (Lease fresh or heartbeat quorum)",
            m.may_announce.clone(),
        );
        r.register(
            "heartbeat_gap_seconds",
            "Silence of a peer before each heartbeat accepted from it",
            m.heartbeat_gap_seconds.clone(),
        );
        r.register(
            "lease_renew_gap_seconds",
            "Time between two successive successful renewals of this node's Lease",
            m.lease_renew_gap_seconds.clone(),
        );
        m
    }

    /// Counts one received heartbeat by result.
    pub fn heartbeat_received(&self, result: &str) {
        self.heartbeats_received
            .get_or_create(&HeartbeatLabels {
                result: result.to_string(),
            })
            .inc();
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

    /// The labels of the `announced` series of `service` and `ip` on `node`: the Service's
    /// key as given (the caller's allocation), the node's name one allocation kept here
    /// for every series (a node's speaker has one name).
    pub fn announced_labels(&self, service: &Arc<str>, ip: IpAddr, node: &str) -> AnnouncedLabels {
        let kept = self.node.get_or_init(|| node.into());
        AnnouncedLabels {
            service: service.clone(),
            ip: IpLabelValue(ip),
            node: if **kept == *node {
                kept.clone()
            } else {
                node.into()
            },
        }
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
        m.heartbeat_received("forged");
        m.heartbeat_gap_seconds.observe(0.12);
        m.lease_renew_gap_seconds.observe(0.31);
        let key: Arc<str> = "ns/a".into();
        let labels = m.announced_labels(&key, "10.0.0.1".parse().unwrap(), "n1");
        m.announced.get_or_create(&labels).set(1);
        // the Service's key is the caller's allocation, the node's name one for all series
        let other = m.announced_labels(&"ns/b".into(), "fd00::1".parse().unwrap(), "n1");
        m.announced.get_or_create(&other).set(1);
        assert!(Arc::ptr_eq(&labels.service, &key));
        assert!(Arc::ptr_eq(&labels.node, &other.node));
        assert_eq!(&*m.announced_labels(&key, other.ip.0, "n2").node, "n2");
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
            out.contains("ferrolb_speaker_heartbeats_received_total{result=\"forged\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_speaker_heartbeat_gap_seconds_bucket{le=\"0.1\"} 0")
                && out.contains("ferrolb_speaker_heartbeat_gap_seconds_bucket{le=\"0.15\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_speaker_lease_renew_gap_seconds_bucket{le=\"0.4\"} 1"),
            "{out}"
        );
        assert!(
            out.contains(
                "ferrolb_speaker_announced{service=\"ns/a\",ip=\"10.0.0.1\",node=\"n1\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "metallb_speaker_announced{service=\"ns/a\",ip=\"10.0.0.1\",node=\"n1\",protocol=\"layer2\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "ferrolb_speaker_announced{service=\"ns/b\",ip=\"fd00::1\",node=\"n1\"} 1"
            ),
            "{out}"
        );
        m.reconciles.inc();
        m.api_errors.inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for needle in [
            "ferrolb_speaker_reconciles_total 1",
            "metallb_k8s_client_updates_total 1",
            "metallb_k8s_client_update_errors_total 1",
            "metallb_k8s_client_config_loaded_bool 0",
            "metallb_k8s_client_config_stale_bool 0",
        ] {
            assert!(out.contains(needle), "missing {needle} in\n{out}");
        }
    }
}

//! Speaker metrics (prometheus-client), registered under the `ferrolb_speaker` prefix, with
//! MetalLB's speaker series as views of the same values: `metallb_speaker_announced` (of
//! the speaker's [`Announcements`], as `ferrolb_speaker_announced`),
//! `metallb_k8s_client_updates_total` (of [`Metrics::reconciles`]),
//! `metallb_k8s_client_update_errors_total` (of [`Metrics::api_errors`]) and the
//! configuration series of [`ConfigMetrics`].

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::plan::Announced;
use crate::telemetry::{encode_mirrored, ConfigMetrics, ConfigState, IpLabelValue, SeriesName};

/// IP → what the dataplane answers for it now: the speaker's own table of what it
/// announces, which the `announced` series are read from at scrape time
/// ([`Metrics::show_announced`]), so a series holds nothing of its own. Cheap to clone (the
/// clones are the one table).
#[derive(Clone, Debug, Default)]
pub struct Announcements {
    ips: Arc<RwLock<BTreeMap<IpAddr, Announced>>>,
}

impl Announcements {
    /// The table, to read.
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<IpAddr, Announced>> {
        self.ips.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The table, to change (the `announced` series follow).
    pub fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<IpAddr, Announced>> {
        self.ips.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node and the table the `announced` series are read from (unset: no series).
type AnnouncedSource = Arc<OnceLock<(Arc<str>, Announcements)>>;

/// Labels of the `announced` gauge: a series per announced (Service, IP), made at scrape
/// time from the [`Announcements`] (the Service's key and the node's name shared, the IP
/// an address).
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
    /// 1 per (service, ip) this node announces (`ferrolb_speaker_announced`, and MetalLB's
    /// `metallb_speaker_announced` with `protocol="layer2"`): read from the speaker's
    /// table at scrape time ([`Self::show_announced`]).
    announced: AnnouncedSource,
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
    /// Of [`Metrics::heartbeats_sent`], those sent to the heartbeat group (one datagram for
    /// every peer on the segment).
    pub heartbeats_sent_group: Counter,
    /// Peers heard on the heartbeat group lately (sent to by unicast every second interval
    /// only).
    pub heartbeat_group_peers: Gauge,
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
    /// 1 while the peers' node Leases are watched, 0 while that watch is paused (this node
    /// hears every member).
    pub peer_lease_watch: Gauge,
    /// Silence of a peer before each heartbeat accepted from it (how close the fence and
    /// death times came to firing).
    pub heartbeat_gap_seconds: Histogram,
    /// Time between the send times of two successive successful renewals of this node's
    /// Lease (how close the renew deadline came to firing).
    pub lease_renew_gap_seconds: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `reg` (prefix `ferrolb_speaker`).
    pub fn new(reg: &mut Registry) -> Self {
        let m = Self {
            announced: AnnouncedSource::default(),
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
            heartbeats_sent_group: Counter::default(),
            heartbeat_group_peers: Gauge::default(),
            heartbeat_bytes_sent: Counter::default(),
            heartbeat_bytes_received: Counter::default(),
            heartbeat_send_errors: Counter::default(),
            heartbeats_received: Family::default(),
            peers_heard: Gauge::default(),
            may_announce: Gauge::default(),
            peer_lease_watch: Gauge::default(),
            heartbeat_gap_seconds: Histogram::new([
                0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 1.0, 2.0,
            ]),
            lease_renew_gap_seconds: Histogram::new([0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0]),
        };
        // the peers' node Leases are watched from the start
        m.peer_lease_watch.set(1);
        let one = Gauge::default();
        one.set(1);
        reg.register_collector(Box::new(AnnouncedCollector {
            source: m.announced.clone(),
            one,
        }));
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
            "heartbeats_sent_group",
            "Of the heartbeats sent, those sent to the heartbeat multicast group",
            m.heartbeats_sent_group.clone(),
        );
        r.register(
            "heartbeat_group_peers",
            "Peers heard on the heartbeat multicast group lately (unicast to them every second interval only)",
            m.heartbeat_group_peers.clone(),
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
            "peer_lease_watch",
            "1 while the peers' node Leases are watched, 0 while paused (every member heard)",
            m.peer_lease_watch.clone(),
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

    /// Shows `table` as the `announced` series of `node` from now on. The first call
    /// wins: a speaker has one node and one table.
    pub fn show_announced(&self, node: &str, table: &Announcements) {
        let _ = self.announced.set((node.into(), table.clone()));
    }
}

/// The names of the `announced` series: ferrolb's, MetalLB's and the labels MetalLB's adds.
const ANNOUNCED_SERIES: (SeriesName, SeriesName, &[(&str, &str)]) = (
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

/// The `announced` series, encoded from the [`Announcements`] at scrape time: a series per
/// (Service, IP), each of value 1, ordered by IP and Service.
#[derive(Debug)]
struct AnnouncedCollector {
    source: AnnouncedSource,
    /// The value of every series.
    one: Gauge,
}

impl Collector for AnnouncedCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((node, table)) = self.source.get() else {
            return Ok(());
        };
        let ips = table.read();
        encode_mirrored(
            encoder,
            ANNOUNCED_SERIES,
            ips.values().all(|a| a.services.is_empty()),
            |series| {
                for (ip, a) in ips.iter() {
                    for s in a.services.iter() {
                        let labels = AnnouncedLabels {
                            service: s.clone(),
                            ip: IpLabelValue(*ip),
                            node: node.clone(),
                        };
                        series(&labels, &self.one)?;
                    }
                }
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::{Interfaces, NameSet};
    use crate::telemetry::Mirrored;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn announced(services: &[&str]) -> Announced {
        Announced {
            interfaces: Interfaces::All,
            services: services.iter().copied().collect::<NameSet>(),
        }
    }

    fn encoded(reg: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, reg).unwrap();
        out
    }

    /// The `announced` series read from the speaker's table are, line for line, those a
    /// family holding a gauge set to 1 per (Service, IP) encodes — and follow the table.
    #[test]
    fn announced_series_are_the_families_read_from_the_table() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        let table = Announcements::default();
        m.show_announced("n1", &table);
        let mut family_reg = Registry::default();
        let family: Mirrored<AnnouncedLabels, Gauge> = Mirrored::default();
        let (ours, metallb, extra) = ANNOUNCED_SERIES;
        family.register(&mut family_reg, ours, metallb, extra);
        let node: Arc<str> = "n1".into();
        let lines = |out: &str| {
            let mut v: Vec<String> = out
                .lines()
                .filter(|l| l.contains("_announced"))
                .map(str::to_string)
                .collect();
            v.sort();
            v
        };
        let steps: [(&str, &[&str]); 5] = [
            ("10.0.0.2", &["ns/a"]),
            ("fd00::1", &["ns/b", "ns/c"]),
            ("10.0.0.1", &["other/x"]),
            ("fd00::1", &["ns/c"]),
            ("10.0.0.2", &[]),
        ];
        // nothing announced: no series and no descriptor, as an empty family
        assert!(lines(&encoded(&reg)).is_empty());
        for (i, (at, services)) in steps.into_iter().enumerate() {
            let prev = table.write().remove(&ip(at));
            for s in prev.iter().flat_map(|a| a.services.iter()) {
                family.remove(&AnnouncedLabels {
                    service: s.clone(),
                    ip: IpLabelValue(ip(at)),
                    node: node.clone(),
                });
            }
            if !services.is_empty() {
                table.write().insert(ip(at), announced(services));
            }
            for s in services {
                family
                    .get_or_create(&AnnouncedLabels {
                        service: (*s).into(),
                        ip: IpLabelValue(ip(at)),
                        node: node.clone(),
                    })
                    .set(1);
            }
            let (ours, theirs) = (lines(&encoded(&reg)), lines(&encoded(&family_reg)));
            assert_eq!(ours, theirs, "step {i}");
            assert!(!ours.is_empty());
        }
        assert!(encoded(&reg).contains(
            "metallb_speaker_announced{service=\"ns/c\",ip=\"fd00::1\",node=\"n1\",protocol=\"layer2\"} 1"
        ));
    }

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
        let table = Announcements::default();
        m.show_announced("n1", &table);
        m.show_announced("n2", &Announcements::default());
        table.write().insert(ip("10.0.0.1"), announced(&["ns/a"]));
        table.write().insert(ip("fd00::1"), announced(&["ns/b"]));
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

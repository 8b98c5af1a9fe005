//! Dataplane counters (prometheus-client) under `ferrolb_layer2_`; the request, response and
//! gratuitous counters are also exported under MetalLB's names (`metallb_layer2_*`, see
//! [`crate::telemetry::Mirrored`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::logic::DropReason;
use crate::dense::Dense;
use crate::telemetry::{encode_mirrored, IpLabelValue, Mirrored, SeriesName};

/// Label set `{ip}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpLabel {
    /// The owned IP.
    pub ip: IpLabelValue,
}

/// Label set `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A [`DropReason::as_str`] value.
    pub reason: String,
}

/// The names of the gratuitous counters: ferrolb's and MetalLB's.
const GRATUITOUS_SERIES: (SeriesName, SeriesName) = (
    SeriesName {
        name: "ferrolb_layer2_gratuitous_sent",
        help: "Gratuitous ARP and unsolicited neighbor advertisement frames sent",
    },
    SeriesName {
        name: "metallb_layer2_gratuitous_sent",
        help: "Number of gratuitous layer2 packets sent for owned IPs",
    },
);

/// Counters by IP address in one table (IP → count), exported as a
/// `Mirrored<IpLabel, Counter>` family is, series for series and byte for byte, but holding
/// no block, hash entry or label set per IP: a count is 8 bytes in a B-tree rebuilt with
/// full nodes as it grows ([`crate::dense::due`]; IPs are announced in ascending order at
/// start-up). A series stays once made, as a family's does. Cloning shares the table.
#[derive(Clone, Debug, Default)]
pub struct IpCounts {
    table: Arc<RwLock<CountTable>>,
}

#[derive(Debug, Default)]
struct CountTable {
    counts: BTreeMap<IpAddr, AtomicU64>,
    /// Entries when last rebuilt dense.
    dense_at: usize,
}

impl IpCounts {
    /// Adds one to the count of `ip` (made at zero when absent). Counting an IP already
    /// there shares the table with other counters and with scrapes (a read lock).
    pub fn inc(&self, ip: IpAddr) {
        {
            let t = self.table.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = t.counts.get(&ip) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        t.counts
            .entry(ip)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
        let size = t.counts.len();
        if crate::dense::due(t.dense_at, size) {
            t.counts.make_dense();
            t.dense_at = size;
        }
    }

    /// The count of `ip` (None: never counted).
    pub fn get(&self, ip: IpAddr) -> Option<u64> {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        t.counts.get(&ip).map(|c| c.load(Ordering::Relaxed))
    }

    /// Registers the counters in `reg` under `ours` and under `metallb` (a series per IP,
    /// labelled `{ip}`, in IP order).
    pub fn register(&self, reg: &mut Registry, ours: SeriesName, metallb: SeriesName) {
        reg.register_collector(Box::new(IpCountsCollector {
            counts: self.clone(),
            names: (ours, metallb),
        }));
    }
}

#[derive(Debug)]
struct IpCountsCollector {
    counts: IpCounts,
    names: (SeriesName, SeriesName),
}

impl Collector for IpCountsCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.counts.table.read().unwrap_or_else(|p| p.into_inner());
        // each series is encoded as this counter holding its count
        let value = Counter::<u64>::default();
        encode_mirrored(
            encoder,
            (self.names.0, self.names.1, &[]),
            t.counts.is_empty(),
            |series| {
                for (ip, n) in &t.counts {
                    value
                        .inner()
                        .store(n.load(Ordering::Relaxed), Ordering::Relaxed);
                    series(&Metrics::ip(*ip), &value)?;
                }
                Ok(())
            },
        )
    }
}

/// The dataplane's counters. Cloning shares the underlying values.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// ARP requests / NS received for an owned IP.
    pub requests_received: Mirrored<IpLabel, Counter>,
    /// ARP replies / NAs sent.
    pub responses_sent: Mirrored<IpLabel, Counter>,
    /// Gratuitous ARP / unsolicited NA frames sent (a count per IP ever announced).
    pub gratuitous_sent: IpCounts,
    /// Echo replies sent (optional ping answering).
    pub echo_replies_sent: Family<IpLabel, Counter>,
    /// Frames not answered, by reason.
    pub drops: Family<ReasonLabel, Counter>,
    /// Frames from another station claiming an owned IP.
    pub duplicate_responders: Family<IpLabel, Counter>,
    /// Frames that could not be sent.
    pub send_errors: Counter,
    /// Events dropped because the consumer did not keep up.
    pub events_dropped: Counter,
}

impl Metrics {
    /// Registers every counter in `registry` (names prefixed `ferrolb_layer2_`, and MetalLB's
    /// `metallb_layer2_requests_received`, `…_responses_sent`, `…_gratuitous_sent`).
    pub fn register(&self, registry: &mut Registry) {
        for (family, ours, metallb) in [
            (
                &self.requests_received,
                SeriesName {
                    name: "ferrolb_layer2_requests_received",
                    help: "ARP requests and neighbor solicitations received for an owned IP",
                },
                SeriesName {
                    name: "metallb_layer2_requests_received",
                    help: "Number of layer2 requests received for owned IPs",
                },
            ),
            (
                &self.responses_sent,
                SeriesName {
                    name: "ferrolb_layer2_responses_sent",
                    help: "ARP replies and neighbor advertisements sent",
                },
                SeriesName {
                    name: "metallb_layer2_responses_sent",
                    help: "Number of layer2 responses sent for owned IPs",
                },
            ),
        ] {
            family.register(registry, ours, metallb, &[]);
        }
        let (ours, metallb) = GRATUITOUS_SERIES;
        self.gratuitous_sent.register(registry, ours, metallb);
        let r = registry.sub_registry_with_prefix("ferrolb_layer2");
        r.register(
            "echo_replies_sent",
            "ICMP/ICMPv6 echo replies sent for owned IPs",
            self.echo_replies_sent.clone(),
        );
        r.register(
            "drops",
            "Received frames not answered, by reason",
            self.drops.clone(),
        );
        r.register(
            "duplicate_responders",
            "Frames from another station claiming an IP this node owns",
            self.duplicate_responders.clone(),
        );
        r.register(
            "send_errors",
            "Frames the kernel refused to send",
            self.send_errors.clone(),
        );
        r.register(
            "events_dropped",
            "Dataplane events dropped because the consumer was too slow",
            self.events_dropped.clone(),
        );
    }

    pub(crate) fn ip(ip: IpAddr) -> IpLabel {
        IpLabel {
            ip: IpLabelValue(ip),
        }
    }

    pub(crate) fn drop(&self, r: DropReason) {
        self.drops_by(r, 1);
    }

    /// Counts `n` frames dropped for `r`.
    pub(crate) fn drops_by(&self, r: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        self.drops
            .get_or_create(&ReasonLabel {
                reason: r.as_str().into(),
            })
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_and_labels_render() {
        let m = Metrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.drop(DropReason::NotOwned);
        m.drop(DropReason::NotOwned);
        m.responses_sent
            .get_or_create(&Metrics::ip("10.0.0.1".parse().unwrap()))
            .inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("ferrolb_layer2_drops_total{reason=\"not_owned\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_layer2_responses_sent_total{ip=\"10.0.0.1\"} 1"),
            "{out}"
        );
        assert!(out.contains("ferrolb_layer2_send_errors_total 0"), "{out}");
        // The same count under MetalLB's name (no `_total`: untyped, as MetalLB exposes it).
        assert!(
            out.contains("metallb_layer2_responses_sent{ip=\"10.0.0.1\"} 1"),
            "{out}"
        );
        m.gratuitous_sent.inc("2001:db8::1".parse().unwrap());
        m.gratuitous_sent.inc("2001:db8::1".parse().unwrap());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("metallb_layer2_gratuitous_sent{ip=\"2001:db8::1\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_layer2_gratuitous_sent_total{ip=\"2001:db8::1\"} 2"),
            "{out}"
        );
    }

    fn encoded(reg: &Registry) -> Vec<String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, reg).unwrap();
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// The gratuitous counters read from the table are the family they replace: after every
    /// step (IPv4 and IPv6 IPs counted once or more, in any order, new IPs and old ones),
    /// the exposition's lines equal byte for byte those of a `Mirrored<IpLabel, Counter>`
    /// registered under the same names and counted alike; nothing at all before the first
    /// count.
    #[test]
    fn gratuitous_series_are_the_family_read_from_the_table() {
        let counts = IpCounts::default();
        let family: Mirrored<IpLabel, Counter> = Mirrored::default();
        let (mut ours_reg, mut family_reg) = (Registry::default(), Registry::default());
        let (ours, metallb) = GRATUITOUS_SERIES;
        counts.register(&mut ours_reg, ours, metallb);
        family.register(&mut family_reg, ours, metallb, &[]);
        assert!(encoded(&ours_reg).iter().all(|l| l == "# EOF"));
        assert_eq!(encoded(&ours_reg), encoded(&family_reg));
        let steps = [
            "10.0.0.2",
            "fd00::1",
            "10.0.0.2",
            "10.0.0.1",
            "fd00::1",
            "192.168.1.7",
            "::1",
            "10.0.0.1",
        ];
        for (i, at) in steps.into_iter().enumerate() {
            let ip: IpAddr = at.parse().unwrap();
            counts.inc(ip);
            family.get_or_create(&Metrics::ip(ip)).inc();
            assert_eq!(
                counts.get(ip),
                Some(family.get(&Metrics::ip(ip)).unwrap().get())
            );
            assert_eq!(encoded(&ours_reg), encoded(&family_reg), "step {i}");
        }
        // many IPs, counted past the table's rebuilds, still read the same
        for i in 0..2_000u32 {
            let ip = IpAddr::from((0x0a01_0000 + i).to_be_bytes());
            for _ in 0..=(i % 3) {
                counts.inc(ip);
                family.get_or_create(&Metrics::ip(ip)).inc();
            }
        }
        assert_eq!(encoded(&ours_reg), encoded(&family_reg));
        assert_eq!(counts.get("10.1.7.205".parse().unwrap()), Some(3));
        assert_eq!(counts.get("10.9.9.9".parse().unwrap()), None);
        assert!(encoded(&ours_reg)
            .contains(&"metallb_layer2_gratuitous_sent{ip=\"fd00::1\"} 2".to_string()));
    }
}

//! Dataplane counters (prometheus-client) under `ferrolb_layer2_`; the request, response and
//! gratuitous counters are also exported under MetalLB's names (`metallb_layer2_*`, see
//! [`crate::telemetry::Mirrored`]).

use std::net::IpAddr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::logic::DropReason;
use crate::telemetry::{IpLabelValue, Mirrored, SeriesName};

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

/// The dataplane's counters. Cloning shares the underlying values.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// ARP requests / NS received for an owned IP.
    pub requests_received: Mirrored<IpLabel, Counter>,
    /// ARP replies / NAs sent.
    pub responses_sent: Mirrored<IpLabel, Counter>,
    /// Gratuitous ARP / unsolicited NA frames sent.
    pub gratuitous_sent: Mirrored<IpLabel, Counter>,
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
            (
                &self.gratuitous_sent,
                SeriesName {
                    name: "ferrolb_layer2_gratuitous_sent",
                    help: "Gratuitous ARP and unsolicited neighbor advertisement frames sent",
                },
                SeriesName {
                    name: "metallb_layer2_gratuitous_sent",
                    help: "Number of gratuitous layer2 packets sent for owned IPs",
                },
            ),
        ] {
            family.register(registry, ours, metallb, &[]);
        }
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
        m.gratuitous_sent
            .get_or_create(&Metrics::ip("2001:db8::1".parse().unwrap()))
            .inc_by(2);
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
}

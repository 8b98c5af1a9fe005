//! Responder decisions (pure): given a received frame, the interface it arrived on and
//! the owned set, what to send and what to count.
//!
//! Behaviour:
//! * ARP request whose target is owned on the interface ⇒ unicast ARP reply to the
//!   requester, sender = interface MAC + VIP; ARP probes (sender IP 0.0.0.0) are answered
//!   too (that defends the VIP). Requests whose Ethernet destination is neither broadcast
//!   nor our MAC, ARP replies, and targets not owned are dropped and counted.
//! * Neighbor Solicitation (multicast to the solicited-node group, or unicast NUD probe
//!   to the VIP) for an owned target ⇒ NA with S=1, O=1, TLLA = interface MAC, to the NS
//!   source; a DAD probe (source `::`) ⇒ NA to ff02::1 with S=0, O=1.
//! * While an IP is owned, an ARP reply / gratuitous ARP / ARP from that IP, or an NA for
//!   it, carrying another MAC ⇒ [`Verdict::Duplicate`].
//! * Optional: ICMP / ICMPv6 echo requests to an owned IP ⇒ echo reply.

use std::net::{IpAddr, Ipv4Addr};

use crate::wire::{self, Inbound, Mac, VlanId};

use super::owned::Owned;

/// The interface a frame arrived on.
#[derive(Debug, Clone, Copy)]
pub struct IfaceCtx<'a> {
    /// Interface name (matched against interface filters).
    pub name: &'a str,
    /// Interface MAC (used in every reply).
    pub mac: Mac,
    /// MACs of all this node's interfaces: frames from them are never duplicates.
    pub local_macs: &'a [Mac],
    /// Answer echo requests.
    pub echo: bool,
}

/// What kind of reply was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// ARP reply.
    Arp,
    /// Neighbor Advertisement.
    Ndp,
    /// ICMP / ICMPv6 echo reply.
    Echo,
}

/// Why a frame was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Does not parse (truncated, bad checksum, invalid NDP, …).
    Malformed,
    /// Well-formed but of a kind the responder does not handle.
    Unsupported,
    /// ARP reply not indicating a duplicate.
    ArpReply,
    /// Neighbor Advertisement not indicating a duplicate.
    Advertisement,
    /// Gratuitous ARP for an address we do not own.
    Gratuitous,
    /// Ethernet destination neither broadcast/multicast (as the protocol requires) nor our MAC.
    EthDst,
    /// IP destination does not fit the request (e.g. NS to an unrelated address).
    IpDst,
    /// Target not owned on this interface.
    NotOwned,
    /// Sent by this node itself.
    OwnFrame,
    /// Echo request while ping answering is off.
    EchoDisabled,
}

impl DropReason {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unsupported => "unsupported",
            Self::ArpReply => "arp_reply",
            Self::Advertisement => "advertisement",
            Self::Gratuitous => "gratuitous",
            Self::EthDst => "eth_dst",
            Self::IpDst => "ip_dst",
            Self::NotOwned => "not_owned",
            Self::OwnFrame => "own_frame",
            Self::EchoDisabled => "echo_disabled",
        }
    }
}

/// The decision for one frame. `F` is the reply frame: an owned `Vec<u8>` from
/// [`decide`], or `()` from [`decide_into`] (the frame is then in the caller's buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<F = Vec<u8>> {
    /// Send `frame` on the interface.
    Reply {
        /// The owned IP answered for.
        ip: IpAddr,
        /// Kind of reply.
        kind: ReplyKind,
        /// The complete Ethernet frame.
        frame: F,
    },
    /// Another station claims an IP we own.
    Duplicate {
        /// The contested IP.
        ip: IpAddr,
        /// The other station's MAC.
        their_mac: Mac,
    },
    /// Nothing to send.
    Drop(DropReason),
}

impl<F> Verdict<F> {
    /// The same verdict with the reply frame replaced by `frame` (other variants unchanged).
    pub fn with_frame<G>(self, frame: G) -> Verdict<G> {
        match self {
            Verdict::Reply { ip, kind, .. } => Verdict::Reply { ip, kind, frame },
            Verdict::Duplicate { ip, their_mac } => Verdict::Duplicate { ip, their_mac },
            Verdict::Drop(r) => Verdict::Drop(r),
        }
    }
}

/// Room for the largest fixed-size reply (an NA with a VLAN tag is 90 bytes).
const FIXED_REPLY_ROOM: usize = 128;

/// Emits a fixed-size reply into `out` (resized to the frame); `Malformed` if emitting
/// fails, which cannot happen for ARP/NDP frames but is never a panic.
fn emit_into(
    out: &mut Vec<u8>,
    emit: impl FnOnce(&mut [u8]) -> Result<usize, wire::WireError>,
) -> Result<(), DropReason> {
    out.clear();
    out.resize(FIXED_REPLY_ROOM, 0);
    match emit(out) {
        Ok(n) => {
            out.truncate(n);
            Ok(())
        }
        Err(_) => {
            out.clear();
            Err(DropReason::Malformed)
        }
    }
}

fn claims(ctx: &IfaceCtx<'_>, mac: Mac) -> bool {
    mac != ctx.mac && !ctx.local_macs.contains(&mac)
}

/// Decides what to do with a received frame.
pub fn decide(frame: &[u8], ctx: &IfaceCtx<'_>, owned: &Owned) -> Verdict {
    let mut out = Vec::new();
    let v = decide_into(frame, ctx, owned, &mut out);
    v.with_frame(out)
}

/// [`decide`] writing the reply frame into `out` (cleared first; on
/// [`Verdict::Reply`] it holds exactly the frame). Reusing `out` across calls avoids an
/// allocation per ARP / NDP reply.
pub fn decide_into(
    frame: &[u8],
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
    out: &mut Vec<u8>,
) -> Verdict<()> {
    out.clear();
    let inbound = match wire::parse_inbound(frame) {
        Ok(i) => i,
        Err(_) => return Verdict::Drop(DropReason::Malformed),
    };
    let owned_here = |ip: IpAddr| owned.allowed(ip, ctx.name);
    match inbound {
        Inbound::ArpRequest {
            vlan,
            eth_src,
            eth_dst,
            sender_mac,
            sender_ip,
            target_ip,
            ..
        } => {
            if eth_src == ctx.mac {
                return Verdict::Drop(DropReason::OwnFrame);
            }
            if let Some(v) = duplicate_v4(ctx, owned, sender_ip, sender_mac) {
                return v;
            }
            if sender_ip == target_ip && !sender_ip.is_unspecified() {
                return Verdict::Drop(DropReason::Gratuitous);
            }
            if !eth_dst.is_broadcast() && eth_dst != ctx.mac {
                return Verdict::Drop(DropReason::EthDst);
            }
            if !owned_here(target_ip.into()) {
                return Verdict::Drop(DropReason::NotOwned);
            }
            if let Err(r) = emit_into(out, |b| {
                wire::arp_reply_into(b, vlan, ctx.mac, target_ip, sender_mac, sender_ip)
            }) {
                return Verdict::Drop(r);
            }
            Verdict::Reply {
                ip: target_ip.into(),
                kind: ReplyKind::Arp,
                frame: (),
            }
        }
        Inbound::ArpReply {
            sender_mac,
            sender_ip,
            eth_src,
            ..
        } => {
            if eth_src == ctx.mac {
                return Verdict::Drop(DropReason::OwnFrame);
            }
            duplicate_v4(ctx, owned, sender_ip, sender_mac)
                .unwrap_or(Verdict::Drop(DropReason::ArpReply))
        }
        Inbound::NeighborSolicitation {
            vlan,
            eth_src,
            eth_dst,
            src_ip,
            dst_ip,
            target,
            source_lla,
        } => {
            if eth_src == ctx.mac {
                return Verdict::Drop(DropReason::OwnFrame);
            }
            let their = source_lla.unwrap_or(eth_src);
            if owned_here(src_ip.into()) && claims(ctx, their) {
                return Verdict::Duplicate {
                    ip: src_ip.into(),
                    their_mac: their,
                };
            }
            if !eth_dst.is_multicast() && eth_dst != ctx.mac {
                return Verdict::Drop(DropReason::EthDst);
            }
            if dst_ip != wire::solicited_node_multicast(target) && dst_ip != target {
                return Verdict::Drop(DropReason::IpDst);
            }
            if !owned_here(target.into()) {
                return Verdict::Drop(DropReason::NotOwned);
            }
            // A DAD probe (source ::) is answered to all-nodes with S=0 (unsolicited).
            let (dst_ip, dst_mac, solicited) = if src_ip.is_unspecified() {
                (
                    wire::ALL_NODES,
                    wire::ipv6_multicast_mac(wire::ALL_NODES),
                    false,
                )
            } else {
                (src_ip, their, true)
            };
            if let Err(r) = emit_into(out, |b| {
                wire::neighbor_advertisement_into(
                    b, vlan, ctx.mac, target, dst_ip, dst_mac, target, solicited, true,
                )
            }) {
                return Verdict::Drop(r);
            }
            Verdict::Reply {
                ip: target.into(),
                kind: ReplyKind::Ndp,
                frame: (),
            }
        }
        Inbound::NeighborAdvertisement {
            eth_src,
            target,
            target_lla,
            ..
        } => {
            if eth_src == ctx.mac {
                return Verdict::Drop(DropReason::OwnFrame);
            }
            let their = target_lla.unwrap_or(eth_src);
            if owned_here(target.into()) && claims(ctx, their) {
                Verdict::Duplicate {
                    ip: target.into(),
                    their_mac: their,
                }
            } else {
                Verdict::Drop(DropReason::Advertisement)
            }
        }
        Inbound::EchoRequestV4 {
            vlan,
            eth_src,
            eth_dst,
            src_ip,
            dst_ip,
            ident,
            seq,
            data,
        } => frame_into(
            echo(ctx, owned, vlan, eth_src, eth_dst, dst_ip.into(), |v| {
                wire::echo_reply_v4(v, ctx.mac, eth_src, dst_ip, src_ip, ident, seq, data)
            }),
            out,
        ),
        Inbound::EchoRequestV6 {
            vlan,
            eth_src,
            eth_dst,
            src_ip,
            dst_ip,
            ident,
            seq,
            data,
        } => frame_into(
            echo(ctx, owned, vlan, eth_src, eth_dst, dst_ip.into(), |v| {
                wire::echo_reply_v6(v, ctx.mac, eth_src, dst_ip, src_ip, ident, seq, data)
            }),
            out,
        ),
        Inbound::Other => Verdict::Drop(DropReason::Unsupported),
    }
}

fn duplicate_v4(
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
    sender_ip: Ipv4Addr,
    sender_mac: Mac,
) -> Option<Verdict<()>> {
    (owned.allowed(sender_ip.into(), ctx.name) && claims(ctx, sender_mac)).then_some(
        Verdict::Duplicate {
            ip: sender_ip.into(),
            their_mac: sender_mac,
        },
    )
}

/// Moves the reply frame of `v` into `out`.
fn frame_into(v: Verdict, out: &mut Vec<u8>) -> Verdict<()> {
    match v {
        Verdict::Reply { ip, kind, frame } => {
            *out = frame;
            Verdict::Reply {
                ip,
                kind,
                frame: (),
            }
        }
        other => other.with_frame(()),
    }
}

fn echo(
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
    vlan: Option<VlanId>,
    eth_src: Mac,
    eth_dst: Mac,
    dst: IpAddr,
    build: impl FnOnce(Option<VlanId>) -> Result<Vec<u8>, wire::WireError>,
) -> Verdict {
    if !ctx.echo {
        return Verdict::Drop(DropReason::EchoDisabled);
    }
    if eth_src == ctx.mac {
        return Verdict::Drop(DropReason::OwnFrame);
    }
    if eth_dst != ctx.mac {
        return Verdict::Drop(DropReason::EthDst);
    }
    if !owned.allowed(dst, ctx.name) {
        return Verdict::Drop(DropReason::NotOwned);
    }
    // Echo replies carry the request's data (any size): the one reply that allocates.
    match build(vlan) {
        Ok(frame) => Verdict::Reply {
            ip: dst,
            kind: ReplyKind::Echo,
            frame,
        },
        Err(_) => Verdict::Drop(DropReason::Malformed),
    }
}

/// The frames of one announcement burst for `ip` from `mac`: for IPv4 a gratuitous ARP
/// request and a gratuitous ARP reply; for IPv6 one unsolicited NA (S=0, O=1) to ff02::1.
pub fn announcement(ip: IpAddr, mac: Mac) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(v4) => vec![
            wire::gratuitous_arp_request(None, mac, v4),
            wire::gratuitous_arp_reply(None, mac, v4),
        ],
        IpAddr::V6(v6) => vec![wire::unsolicited_neighbor_advertisement(None, mac, v6, v6)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::owned::InterfaceFilter;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    const OUR: Mac = Mac([0x02, 0, 0, 0, 0, 0xaa]);
    const OTHER_LOCAL: Mac = Mac([0x02, 0, 0, 0, 0, 0xbb]);
    const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    const ROGUE: Mac = Mac([0x02, 0, 0, 0, 0, 0x66]);
    const LOCALS: [Mac; 2] = [OUR, OTHER_LOCAL];

    fn ctx(echo: bool) -> IfaceCtx<'static> {
        IfaceCtx {
            name: "eth0",
            mac: OUR,
            local_macs: &LOCALS,
            echo,
        }
    }
    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    fn owned() -> Owned {
        let mut o = Owned::default();
        o.announce("10.0.0.100".parse().unwrap(), InterfaceFilter::All);
        o.announce("fd00::100".parse().unwrap(), InterfaceFilter::All);
        o.announce(
            "10.0.0.101".parse().unwrap(),
            InterfaceFilter::named(["eth1"]),
        );
        o.announce(
            "fd00::101".parse().unwrap(),
            InterfaceFilter::named(["eth1"]),
        );
        o
    }
    fn drop(r: DropReason) -> Verdict {
        Verdict::Drop(r)
    }
    fn arp_req(src: Mac, dst: Mac, sip: &str, tip: &str) -> Vec<u8> {
        let mut f = wire::arp_request(None, src, v4(sip), v4(tip));
        f[..6].copy_from_slice(&dst.0);
        f
    }
    fn reply_frame(v: Verdict) -> Vec<u8> {
        match v {
            Verdict::Reply { frame, .. } => frame,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn arp_request_for_owned_ip_gets_unicast_reply_with_our_mac() {
        let f = wire::arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100"));
        let v = decide(&f, &ctx(false), &owned());
        let expected = wire::arp_reply(None, OUR, v4("10.0.0.100"), CLIENT, v4("10.0.0.1"));
        assert_eq!(
            v,
            Verdict::Reply {
                ip: "10.0.0.100".parse().unwrap(),
                kind: ReplyKind::Arp,
                frame: expected.clone()
            }
        );
        match wire::parse_inbound(&expected).unwrap() {
            Inbound::ArpReply {
                eth_dst,
                eth_src,
                sender_mac,
                sender_ip,
                target_mac,
                target_ip,
                ..
            } => {
                assert_eq!((eth_dst, eth_src, sender_mac), (CLIENT, OUR, OUR));
                assert_eq!(
                    (sender_ip, target_mac, target_ip),
                    (v4("10.0.0.100"), CLIENT, v4("10.0.0.1"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arp_probe_from_zero_address_is_answered() {
        let f = wire::arp_request(None, CLIENT, Ipv4Addr::UNSPECIFIED, v4("10.0.0.100"));
        let frame = reply_frame(decide(&f, &ctx(false), &owned()));
        assert_eq!(
            frame,
            wire::arp_reply(None, OUR, v4("10.0.0.100"), CLIENT, Ipv4Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn arp_unicast_to_us_answered_other_unicast_dropped() {
        let o = owned();
        let to_us = arp_req(CLIENT, OUR, "10.0.0.1", "10.0.0.100");
        assert!(matches!(
            decide(&to_us, &ctx(false), &o),
            Verdict::Reply { .. }
        ));
        let to_other = arp_req(CLIENT, ROGUE, "10.0.0.1", "10.0.0.100");
        assert_eq!(decide(&to_other, &ctx(false), &o), drop(DropReason::EthDst));
    }

    #[test]
    fn arp_not_owned_or_not_on_this_interface_dropped() {
        let o = owned();
        for tip in ["10.0.0.99", "10.0.0.101"] {
            let f = wire::arp_request(None, CLIENT, v4("10.0.0.1"), v4(tip));
            assert_eq!(
                decide(&f, &ctx(false), &o),
                drop(DropReason::NotOwned),
                "{tip}"
            );
        }
        let eth1 = IfaceCtx {
            name: "eth1",
            ..ctx(false)
        };
        let f = wire::arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.101"));
        assert!(matches!(decide(&f, &eth1, &o), Verdict::Reply { .. }));
    }

    #[test]
    fn arp_replies_dropped_unless_duplicate() {
        let o = owned();
        let normal = wire::arp_reply(None, CLIENT, v4("10.0.0.1"), OUR, v4("10.0.0.100"));
        assert_eq!(decide(&normal, &ctx(false), &o), drop(DropReason::ArpReply));
        let dup = wire::arp_reply(None, ROGUE, v4("10.0.0.100"), CLIENT, v4("10.0.0.1"));
        assert_eq!(
            decide(&dup, &ctx(false), &o),
            Verdict::Duplicate {
                ip: "10.0.0.100".parse().unwrap(),
                their_mac: ROGUE
            }
        );
        // From another interface of ours: not a duplicate.
        let ours = wire::arp_reply(None, OTHER_LOCAL, v4("10.0.0.100"), CLIENT, v4("10.0.0.1"));
        assert_eq!(decide(&ours, &ctx(false), &o), drop(DropReason::ArpReply));
        // Our own frame looped back.
        let own = wire::gratuitous_arp_reply(None, OUR, v4("10.0.0.100"));
        assert_eq!(decide(&own, &ctx(false), &o), drop(DropReason::OwnFrame));
    }

    #[test]
    fn gratuitous_arp_from_other_mac_for_owned_ip_is_duplicate() {
        let o = owned();
        for f in [
            wire::gratuitous_arp_request(None, ROGUE, v4("10.0.0.100")),
            wire::gratuitous_arp_reply(None, ROGUE, v4("10.0.0.100")),
        ] {
            assert_eq!(
                decide(&f, &ctx(false), &o),
                Verdict::Duplicate {
                    ip: "10.0.0.100".parse().unwrap(),
                    their_mac: ROGUE
                }
            );
        }
        let other = wire::gratuitous_arp_request(None, ROGUE, v4("10.0.0.7"));
        assert_eq!(
            decide(&other, &ctx(false), &o),
            drop(DropReason::Gratuitous)
        );
        // Owned only on eth1: not a duplicate seen on eth0.
        let elsewhere = wire::gratuitous_arp_request(None, ROGUE, v4("10.0.0.101"));
        assert_eq!(
            decide(&elsewhere, &ctx(false), &o),
            drop(DropReason::Gratuitous)
        );
    }

    fn parse_na(
        frame: &[u8],
    ) -> (
        Mac,
        Ipv6Addr,
        Ipv6Addr,
        Ipv6Addr,
        Option<Mac>,
        wire::NaFlags,
    ) {
        match wire::parse_inbound(frame).unwrap() {
            Inbound::NeighborAdvertisement {
                eth_dst,
                src_ip,
                dst_ip,
                target,
                target_lla,
                flags,
                ..
            } => (eth_dst, src_ip, dst_ip, target, target_lla, flags),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multicast_ns_answered_with_solicited_override_na() {
        let f = wire::neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::100"));
        let v = decide(&f, &ctx(false), &owned());
        let frame = reply_frame(v);
        let (eth_dst, src, dst, target, tlla, flags) = parse_na(&frame);
        assert_eq!(eth_dst, CLIENT);
        assert_eq!(
            (src, dst, target),
            (v6("fd00::100"), v6("fd00::1"), v6("fd00::100"))
        );
        assert_eq!(tlla, Some(OUR));
        assert!(flags.solicited && flags.override_ && !flags.router);
    }

    fn unicast_ns(src_ip: &str, dst_ip: &str, target: &str, with_slla: bool) -> Vec<u8> {
        wire::FrameRepr {
            src: CLIENT,
            dst: OUR,
            vlan: None,
            payload: wire::PayloadRepr::Icmpv6 {
                src: v6(src_ip),
                dst: v6(dst_ip),
                hop_limit: 255,
                icmp: wire::Icmpv6Repr::Ndisc(wire::NdiscRepr::NeighborSolicit {
                    target: v6(target),
                    lla: with_slla.then_some(CLIENT),
                }),
            },
        }
        .to_vec()
        .unwrap()
    }

    #[test]
    fn unicast_nud_probe_answered_even_without_slla() {
        for slla in [true, false] {
            let f = unicast_ns("fd00::1", "fd00::100", "fd00::100", slla);
            let frame = reply_frame(decide(&f, &ctx(false), &owned()));
            let (eth_dst, _, dst, _, tlla, flags) = parse_na(&frame);
            assert_eq!((eth_dst, dst, tlla), (CLIENT, v6("fd00::1"), Some(OUR)));
            assert!(flags.solicited && flags.override_);
        }
        // Unicast NS to some other address about our VIP: not ours to answer.
        let f = unicast_ns("fd00::1", "fd00::5", "fd00::100", true);
        assert_eq!(decide(&f, &ctx(false), &owned()), drop(DropReason::IpDst));
    }

    #[test]
    fn dad_probe_answered_to_all_nodes_with_s0_o1() {
        let f = wire::neighbor_solicitation(None, CLIENT, Ipv6Addr::UNSPECIFIED, v6("fd00::100"));
        let frame = reply_frame(decide(&f, &ctx(false), &owned()));
        let (eth_dst, _, dst, target, tlla, flags) = parse_na(&frame);
        assert_eq!(eth_dst, Mac([0x33, 0x33, 0, 0, 0, 1]));
        assert_eq!(
            (dst, target, tlla),
            (v6("ff02::1"), v6("fd00::100"), Some(OUR))
        );
        assert!(!flags.solicited && flags.override_);
    }

    #[test]
    fn ns_not_owned_dropped_and_na_duplicates_detected() {
        let o = owned();
        let f = wire::neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::99"));
        assert_eq!(decide(&f, &ctx(false), &o), drop(DropReason::NotOwned));
        let f = wire::neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::101"));
        assert_eq!(decide(&f, &ctx(false), &o), drop(DropReason::NotOwned));
        let rogue =
            wire::unsolicited_neighbor_advertisement(None, ROGUE, v6("fd00::100"), v6("fd00::100"));
        assert_eq!(
            decide(&rogue, &ctx(false), &o),
            Verdict::Duplicate {
                ip: "fd00::100".parse().unwrap(),
                their_mac: ROGUE
            }
        );
        let unrelated =
            wire::unsolicited_neighbor_advertisement(None, ROGUE, v6("fd00::5"), v6("fd00::5"));
        assert_eq!(
            decide(&unrelated, &ctx(false), &o),
            drop(DropReason::Advertisement)
        );
        let own =
            wire::unsolicited_neighbor_advertisement(None, OUR, v6("fd00::100"), v6("fd00::100"));
        assert_eq!(decide(&own, &ctx(false), &o), drop(DropReason::OwnFrame));
        // Another node soliciting *from* our VIP also uses it.
        let ns_from_vip = wire::neighbor_solicitation(None, ROGUE, v6("fd00::100"), v6("fd00::1"));
        assert_eq!(
            decide(&ns_from_vip, &ctx(false), &o),
            Verdict::Duplicate {
                ip: "fd00::100".parse().unwrap(),
                their_mac: ROGUE
            }
        );
    }

    fn echo_v4(dst_mac: Mac, dst: &str) -> Vec<u8> {
        wire::FrameRepr {
            src: CLIENT,
            dst: dst_mac,
            vlan: None,
            payload: wire::PayloadRepr::Icmpv4 {
                src: v4("10.0.0.1"),
                dst: v4(dst),
                ttl: 64,
                icmp: wire::Icmpv4Repr::EchoRequest {
                    ident: 7,
                    seq: 9,
                    data: b"ping!",
                },
            },
        }
        .to_vec()
        .unwrap()
    }
    fn echo_v6(dst_mac: Mac, dst: &str) -> Vec<u8> {
        wire::FrameRepr {
            src: CLIENT,
            dst: dst_mac,
            vlan: None,
            payload: wire::PayloadRepr::Icmpv6 {
                src: v6("fd00::1"),
                dst: v6(dst),
                hop_limit: 64,
                icmp: wire::Icmpv6Repr::EchoRequest {
                    ident: 7,
                    seq: 9,
                    data: b"ping!",
                },
            },
        }
        .to_vec()
        .unwrap()
    }

    #[test]
    fn echo_only_when_enabled_owned_and_unicast_to_us() {
        let o = owned();
        let req = echo_v4(OUR, "10.0.0.100");
        assert_eq!(
            decide(&req, &ctx(false), &o),
            drop(DropReason::EchoDisabled)
        );
        let frame = reply_frame(decide(&req, &ctx(true), &o));
        assert_eq!(
            frame,
            wire::echo_reply_v4(
                None,
                OUR,
                CLIENT,
                v4("10.0.0.100"),
                v4("10.0.0.1"),
                7,
                9,
                b"ping!"
            )
            .unwrap()
        );
        assert_eq!(
            decide(&echo_v4(ROGUE, "10.0.0.100"), &ctx(true), &o),
            drop(DropReason::EthDst)
        );
        assert_eq!(
            decide(&echo_v4(OUR, "10.0.0.2"), &ctx(true), &o),
            drop(DropReason::NotOwned)
        );
        let frame6 = reply_frame(decide(&echo_v6(OUR, "fd00::100"), &ctx(true), &o));
        assert_eq!(
            frame6,
            wire::echo_reply_v6(
                None,
                OUR,
                CLIENT,
                v6("fd00::100"),
                v6("fd00::1"),
                7,
                9,
                b"ping!"
            )
            .unwrap()
        );
    }

    #[test]
    fn replies_keep_the_vlan_tag() {
        let vlan = VlanId::new(100);
        let f = wire::arp_request(vlan, CLIENT, v4("10.0.0.1"), v4("10.0.0.100"));
        let frame = reply_frame(decide(&f, &ctx(false), &owned()));
        assert_eq!(wire::parse_inbound(&frame).unwrap().vlan(), vlan);
        let f = wire::neighbor_solicitation(vlan, CLIENT, v6("fd00::1"), v6("fd00::100"));
        let frame = reply_frame(decide(&f, &ctx(false), &owned()));
        assert_eq!(wire::parse_inbound(&frame).unwrap().vlan(), vlan);
    }

    #[test]
    fn announcement_frames() {
        let a = announcement("10.0.0.100".parse().unwrap(), OUR);
        assert_eq!(a.len(), 2);
        for f in &a {
            match wire::parse_inbound(f).unwrap() {
                Inbound::ArpRequest {
                    sender_ip,
                    target_ip,
                    sender_mac,
                    eth_dst,
                    ..
                }
                | Inbound::ArpReply {
                    sender_ip,
                    target_ip,
                    sender_mac,
                    eth_dst,
                    ..
                } => {
                    assert_eq!((sender_ip, target_ip), (v4("10.0.0.100"), v4("10.0.0.100")));
                    assert_eq!((sender_mac, eth_dst), (OUR, Mac::BROADCAST));
                }
                other => panic!("{other:?}"),
            }
        }
        let a6 = announcement("fd00::100".parse().unwrap(), OUR);
        assert_eq!(a6.len(), 1);
        let (_, _, dst, target, tlla, flags) = parse_na(&a6[0]);
        assert_eq!(
            (dst, target, tlla),
            (v6("ff02::1"), v6("fd00::100"), Some(OUR))
        );
        assert!(!flags.solicited && flags.override_);
    }

    #[test]
    fn malformed_and_unsupported() {
        let o = owned();
        assert_eq!(decide(&[], &ctx(true), &o), drop(DropReason::Malformed));
        let mut f = wire::arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100"));
        f[14 + 4] = 7; // hlen 7
        assert_eq!(decide(&f, &ctx(true), &o), drop(DropReason::Malformed));
        let mut ns = wire::neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::100"));
        ns[14 + 7] = 64; // hop limit ≠ 255
        assert_eq!(decide(&ns, &ctx(true), &o), drop(DropReason::Malformed));
        let mut lldp = f.clone();
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(decide(&lldp, &ctx(true), &o), drop(DropReason::Unsupported));
    }

    /// `decide_into` with one reused, dirty buffer gives exactly `decide`'s verdicts and
    /// frames, and leaves the buffer empty when there is nothing to send.
    fn assert_into_matches(frames: &[Vec<u8>], out: &mut Vec<u8>) {
        let o = owned();
        for f in frames {
            let want = decide(f, &ctx(true), &o);
            let got = decide_into(f, &ctx(true), &o, out);
            match &want {
                Verdict::Reply { frame, .. } => assert_eq!(out, frame),
                _ => assert!(out.is_empty(), "buffer not cleared: {out:?}"),
            }
            assert_eq!(got.with_frame(out.clone()), want);
        }
    }

    #[test]
    fn decide_into_reuses_a_buffer_and_matches_decide() {
        let mut dad = wire::neighbor_solicitation(None, CLIENT, v6("::"), v6("fd00::100"));
        let frames = vec![
            wire::arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100")),
            wire::neighbor_solicitation(VlanId::new(7), CLIENT, v6("fd00::1"), v6("fd00::100")),
            wire::arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.99")),
            std::mem::take(&mut dad),
            wire::arp_request(VlanId::new(7), CLIENT, v4("10.0.0.1"), v4("10.0.0.100")),
            wire::arp_reply(None, ROGUE, v4("10.0.0.100"), CLIENT, v4("10.0.0.1")),
            echo_v4(OUR, "10.0.0.100"),
            vec![0xff; 3],
            echo_v6(OUR, "fd00::100"),
            wire::arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100")),
        ];
        // Start from a large buffer full of garbage: nothing of it may leak into a reply.
        let mut out = vec![0xee; 4096];
        assert_into_matches(&frames, &mut out);
        // Every reply kind appears.
        let kinds: Vec<_> = frames
            .iter()
            .filter_map(|f| match decide(f, &ctx(true), &owned()) {
                Verdict::Reply { kind, .. } => Some(kind),
                _ => None,
            })
            .collect();
        use ReplyKind::{Arp, Echo, Ndp};
        assert_eq!(kinds, [Arp, Ndp, Ndp, Arp, Echo, Echo, Arp]);
        // ARP / NDP replies reuse the buffer's allocation.
        let cap = out.capacity();
        let ptr = out.as_ptr();
        decide_into(&frames[1], &ctx(true), &owned(), &mut out);
        decide_into(&frames[0], &ctx(true), &owned(), &mut out);
        assert_eq!((out.capacity(), out.as_ptr()), (cap, ptr));
    }

    #[test]
    fn with_frame_keeps_everything_but_the_frame() {
        let ip: IpAddr = v4("10.0.0.100").into();
        let r: Verdict<()> = Verdict::Reply {
            ip,
            kind: ReplyKind::Ndp,
            frame: (),
        };
        assert_eq!(
            r.with_frame(vec![1u8]),
            Verdict::Reply {
                ip,
                kind: ReplyKind::Ndp,
                frame: vec![1u8]
            }
        );
        let d: Verdict<()> = Verdict::Duplicate {
            ip,
            their_mac: ROGUE,
        };
        assert_eq!(
            d.with_frame(vec![1u8]),
            Verdict::Duplicate {
                ip,
                their_mac: ROGUE
            }
        );
        assert_eq!(
            Verdict::<()>::Drop(DropReason::IpDst).with_frame(vec![1u8]),
            drop(DropReason::IpDst)
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_replies_only_for_owned_ips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let o = owned();
            if let Verdict::Reply { ip, .. } = decide(&bytes, &ctx(true), &o) {
                prop_assert!(o.allowed(ip, "eth0"));
            }
        }

        #[test]
        fn decide_into_matches_decide_on_any_bytes(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..8),
            junk in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut out = junk;
            assert_into_matches(&frames, &mut out);
        }

        #[test]
        fn mutated_requests_never_panic(pos in 0usize..60, val in any::<u8>()) {
            let o = owned();
            for mut f in [
                wire::arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100")),
                wire::neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::100")),
            ] {
                let p = pos % f.len();
                f[p] = val;
                if let Verdict::Reply { ip, frame, .. } = decide(&f, &ctx(true), &o) {
                    prop_assert!(o.allowed(ip, "eth0"));
                    prop_assert!(wire::parse_inbound(&frame).is_ok());
                }
            }
        }
    }
}

//! Responder decisions (pure): given a received frame, the interface it arrived on and
//! the owned set, what to send and what to count. One function per message kind:
//!
//! * [`on_arp_request`]: a request whose target is owned on the interface ⇒ unicast ARP reply
//!   to the requester, sender = interface MAC + VIP; ARP probes (sender IP 0.0.0.0) are
//!   answered too (that defends the VIP). Requests whose Ethernet destination is neither
//!   broadcast nor our MAC, and targets not owned, are dropped and counted.
//! * [`on_neighbor_solicitation`]: an NS (multicast to the solicited-node group, or unicast NUD
//!   probe to the VIP) for an owned target ⇒ NA with S=1, O=1, TLLA = interface MAC, to the NS
//!   source; a DAD probe (source `::`) ⇒ NA to ff02::1 with S=0, O=1.
//! * While an IP is owned, an ARP reply / gratuitous ARP / ARP from that IP ([`on_arp_request`],
//!   [`on_arp_reply`]), an NS from it or an NA for it ([`on_neighbor_solicitation`],
//!   [`on_neighbor_advertisement`]) carrying another MAC ⇒ [`Verdict::Duplicate`].
//! * Optional: ICMP / ICMPv6 echo requests to an owned IP ⇒ echo reply ([`on_echo_request_v4`],
//!   [`on_echo_request_v6`]).
//!
//! Each returns a [`Verdict`] whose reply is a [`FrameRepr`]; [`decide_into`] emits it into the
//! caller's reused buffer, so answering allocates nothing once the buffer has grown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{
    self, Advertisement, ArpMessage, ArpOperation, ArpRepr, EchoRequest, EthernetFrame, FrameRepr,
    Icmpv4Repr, Icmpv6Repr, Inbound, Mac, NaFlags, NdiscRepr, PayloadRepr, Solicitation,
};

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

impl IfaceCtx<'_> {
    /// Whether `ip` is owned and may be answered for on this interface.
    fn owns(&self, owned: &Owned, ip: impl Into<IpAddr>) -> bool {
        owned.allowed(ip.into(), self.name)
    }

    /// Whether a frame naming `mac` as the holder of an address comes from another station.
    fn is_foreign(&self, mac: Mac) -> bool {
        mac != self.mac && !self.local_macs.contains(&mac)
    }
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
    /// Never seen: the kernel found the receive ring full (counted from its statistics).
    RingFull,
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
            Self::RingFull => "ring_full",
        }
    }
}

/// The decision for one frame. `F` is the reply frame: a [`FrameRepr`] from the per-message
/// functions, an owned `Vec<u8>` from [`decide`], or `()` from [`decide_into`] (the frame is
/// then in the caller's buffer).
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

/// Decides what to do with a received frame.
pub fn decide(frame: &[u8], ctx: &IfaceCtx<'_>, owned: &Owned) -> Verdict {
    let mut out = Vec::new();
    let v = decide_into(frame, ctx, owned, &mut out);
    v.with_frame(out)
}

/// [`decide`] writing the reply frame into `out` (cleared first; on
/// [`Verdict::Reply`] it holds exactly the frame). Reusing `out` across calls avoids an
/// allocation per reply.
pub fn decide_into(
    frame: &[u8],
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
    out: &mut Vec<u8>,
) -> Verdict<()> {
    out.clear();
    match wire::parse_inbound(frame) {
        Ok(inbound) => emit_reply(respond(inbound, ctx, owned), out),
        Err(_) => Verdict::Drop(DropReason::Malformed),
    }
}

/// The decision for a classified frame: dispatches to the function of its message kind.
pub fn respond<'a>(
    inbound: Inbound<'a>,
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
) -> Verdict<FrameRepr<'a>> {
    match inbound {
        Inbound::ArpRequest(m) => on_arp_request(&m, ctx, owned),
        Inbound::ArpReply(m) => on_arp_reply(&m, ctx, owned),
        Inbound::NeighborSolicitation(m) => on_neighbor_solicitation(&m, ctx, owned),
        Inbound::NeighborAdvertisement(m) => on_neighbor_advertisement(&m, ctx, owned),
        Inbound::EchoRequestV4(m) => on_echo_request_v4(&m, ctx, owned),
        Inbound::EchoRequestV6(m) => on_echo_request_v6(&m, ctx, owned),
        Inbound::Other => Verdict::Drop(DropReason::Unsupported),
    }
}

/// Emits the reply of `verdict` into `out` (resized to the frame; its allocation is reused).
/// Emitting cannot fail for a frame built from a received one, but if it did the verdict
/// becomes `Malformed`, never a panic.
fn emit_reply(verdict: Verdict<FrameRepr<'_>>, out: &mut Vec<u8>) -> Verdict<()> {
    let Verdict::Reply { ip, kind, frame } = verdict else {
        return verdict.with_frame(());
    };
    out.resize(frame.buffer_len(), 0);
    match frame.emit(&mut EthernetFrame::new_unchecked(&mut out[..])) {
        Ok(_) => Verdict::Reply {
            ip,
            kind,
            frame: (),
        },
        Err(_) => {
            out.clear();
            Verdict::Drop(DropReason::Malformed)
        }
    }
}

/// `Duplicate` when another station's ARP packet claims `sender_ip`, an address we own here.
fn arp_duplicate<F>(m: &ArpMessage, ctx: &IfaceCtx<'_>, owned: &Owned) -> Option<Verdict<F>> {
    (ctx.owns(owned, m.sender_ip) && ctx.is_foreign(m.sender_mac)).then_some(Verdict::Duplicate {
        ip: m.sender_ip.into(),
        their_mac: m.sender_mac,
    })
}

/// An ARP request: answered when its target is owned here, a duplicate when it comes from an
/// address we own (gratuitous or not), otherwise dropped.
pub fn on_arp_request(
    m: &ArpMessage,
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
) -> Verdict<FrameRepr<'static>> {
    if m.eth_src == ctx.mac {
        return Verdict::Drop(DropReason::OwnFrame);
    }
    if let Some(dup) = arp_duplicate(m, ctx, owned) {
        return dup;
    }
    if m.sender_ip == m.target_ip && !m.sender_ip.is_unspecified() {
        return Verdict::Drop(DropReason::Gratuitous);
    }
    if !m.eth_dst.is_broadcast() && m.eth_dst != ctx.mac {
        return Verdict::Drop(DropReason::EthDst);
    }
    if !ctx.owns(owned, m.target_ip) {
        return Verdict::Drop(DropReason::NotOwned);
    }
    Verdict::Reply {
        ip: m.target_ip.into(),
        kind: ReplyKind::Arp,
        frame: FrameRepr {
            src: ctx.mac,
            dst: m.sender_mac,
            vlan: m.vlan,
            payload: PayloadRepr::Arp(ArpRepr {
                operation: ArpOperation::Reply,
                sender_mac: ctx.mac,
                sender_ip: m.target_ip,
                target_mac: m.sender_mac,
                target_ip: m.sender_ip,
            }),
        },
    }
}

/// An ARP reply: never answered; a duplicate when another station claims an address we own.
pub fn on_arp_reply<F>(m: &ArpMessage, ctx: &IfaceCtx<'_>, owned: &Owned) -> Verdict<F> {
    if m.eth_src == ctx.mac {
        return Verdict::Drop(DropReason::OwnFrame);
    }
    arp_duplicate(m, ctx, owned).unwrap_or(Verdict::Drop(DropReason::ArpReply))
}

/// A Neighbor Solicitation: answered with a Neighbor Advertisement when its target is owned
/// here; a duplicate when it comes from an address we own.
pub fn on_neighbor_solicitation(
    m: &Solicitation,
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
) -> Verdict<FrameRepr<'static>> {
    if m.eth_src == ctx.mac {
        return Verdict::Drop(DropReason::OwnFrame);
    }
    let their = m.source_lla.unwrap_or(m.eth_src);
    if ctx.owns(owned, m.src_ip) && ctx.is_foreign(their) {
        return Verdict::Duplicate {
            ip: m.src_ip.into(),
            their_mac: their,
        };
    }
    if !m.eth_dst.is_multicast() && m.eth_dst != ctx.mac {
        return Verdict::Drop(DropReason::EthDst);
    }
    if m.dst_ip != wire::solicited_node_multicast(m.target) && m.dst_ip != m.target {
        return Verdict::Drop(DropReason::IpDst);
    }
    if !ctx.owns(owned, m.target) {
        return Verdict::Drop(DropReason::NotOwned);
    }
    // A DAD probe (source ::) is answered to all-nodes with S=0 (unsolicited).
    let dad = m.src_ip.is_unspecified();
    let (dst_ip, dst_mac) = if dad {
        (wire::ALL_NODES, wire::ipv6_multicast_mac(wire::ALL_NODES))
    } else {
        (m.src_ip, their)
    };
    Verdict::Reply {
        ip: m.target.into(),
        kind: ReplyKind::Ndp,
        frame: FrameRepr {
            vlan: m.vlan,
            ..neighbor_advertisement(
                ctx.mac,
                m.target,
                dst_ip,
                dst_mac,
                NaFlags {
                    router: false,
                    solicited: !dad,
                    override_: true,
                },
            )
        },
    }
}

/// A Neighbor Advertisement: never answered; a duplicate when another station advertises an
/// address we own.
pub fn on_neighbor_advertisement<F>(
    m: &Advertisement,
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
) -> Verdict<F> {
    if m.eth_src == ctx.mac {
        return Verdict::Drop(DropReason::OwnFrame);
    }
    let their = m.target_lla.unwrap_or(m.eth_src);
    if ctx.owns(owned, m.target) && ctx.is_foreign(their) {
        Verdict::Duplicate {
            ip: m.target.into(),
            their_mac: their,
        }
    } else {
        Verdict::Drop(DropReason::Advertisement)
    }
}

/// Why an echo request to `dst` is not answered, if it is not.
fn echo_refusal<A: Copy + Into<IpAddr>>(
    m: &EchoRequest<'_, A>,
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
) -> Option<DropReason> {
    if !ctx.echo {
        Some(DropReason::EchoDisabled)
    } else if m.eth_src == ctx.mac {
        Some(DropReason::OwnFrame)
    } else if m.eth_dst != ctx.mac {
        Some(DropReason::EthDst)
    } else if !ctx.owns(owned, m.dst_ip) {
        Some(DropReason::NotOwned)
    } else {
        None
    }
}

/// An ICMP echo request: answered (same identifier, sequence and data) when echo answering is
/// on and it is sent to our MAC and an owned address.
pub fn on_echo_request_v4<'a>(
    m: &EchoRequest<'a, Ipv4Addr>,
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
) -> Verdict<FrameRepr<'a>> {
    if let Some(r) = echo_refusal(m, ctx, owned) {
        return Verdict::Drop(r);
    }
    Verdict::Reply {
        ip: m.dst_ip.into(),
        kind: ReplyKind::Echo,
        frame: FrameRepr {
            src: ctx.mac,
            dst: m.eth_src,
            vlan: m.vlan,
            payload: PayloadRepr::Icmpv4 {
                src: m.dst_ip,
                dst: m.src_ip,
                ttl: wire::DEFAULT_HOP_LIMIT,
                icmp: Icmpv4Repr::EchoReply {
                    ident: m.ident,
                    seq: m.seq,
                    data: m.data,
                },
            },
        },
    }
}

/// An ICMPv6 echo request: as [`on_echo_request_v4`].
pub fn on_echo_request_v6<'a>(
    m: &EchoRequest<'a, Ipv6Addr>,
    ctx: &IfaceCtx<'_>,
    owned: &Owned,
) -> Verdict<FrameRepr<'a>> {
    if let Some(r) = echo_refusal(m, ctx, owned) {
        return Verdict::Drop(r);
    }
    Verdict::Reply {
        ip: m.dst_ip.into(),
        kind: ReplyKind::Echo,
        frame: FrameRepr {
            src: ctx.mac,
            dst: m.eth_src,
            vlan: m.vlan,
            payload: PayloadRepr::Icmpv6 {
                src: m.dst_ip,
                dst: m.src_ip,
                hop_limit: wire::DEFAULT_HOP_LIMIT,
                icmp: Icmpv6Repr::EchoReply {
                    ident: m.ident,
                    seq: m.seq,
                    data: m.data,
                },
            },
        },
    }
}

/// A Neighbor Advertisement for `target` (also its IPv6 source) from `mac`, untagged, with a
/// Target Link-Layer Address option = `mac`.
fn neighbor_advertisement(
    mac: Mac,
    target: Ipv6Addr,
    dst_ip: Ipv6Addr,
    dst_mac: Mac,
    flags: NaFlags,
) -> FrameRepr<'static> {
    FrameRepr {
        src: mac,
        dst: dst_mac,
        vlan: None,
        payload: PayloadRepr::Icmpv6 {
            src: target,
            dst: dst_ip,
            hop_limit: wire::NDP_HOP_LIMIT,
            icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags,
                target,
                lla: Some(mac),
            }),
        },
    }
}

/// A gratuitous ARP of `operation` for `ip` from `mac`, as MetalLB sends it: sender IP = target
/// IP = `ip`, target hardware address and Ethernet destination broadcast.
fn gratuitous_arp(operation: ArpOperation, mac: Mac, ip: Ipv4Addr) -> FrameRepr<'static> {
    FrameRepr {
        src: mac,
        dst: Mac::BROADCAST,
        vlan: None,
        payload: PayloadRepr::Arp(ArpRepr {
            operation,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: Mac::BROADCAST,
            target_ip: ip,
        }),
    }
}

/// The frames of one announcement burst for `ip` from `mac`: for IPv4 a gratuitous ARP
/// request and a gratuitous ARP reply; for IPv6 one unsolicited NA (S=0, O=1) to ff02::1.
pub fn announcement(ip: IpAddr, mac: Mac) -> Vec<Vec<u8>> {
    let frames = match ip {
        IpAddr::V4(v4) => vec![
            gratuitous_arp(ArpOperation::Request, mac, v4),
            gratuitous_arp(ArpOperation::Reply, mac, v4),
        ],
        IpAddr::V6(v6) => vec![neighbor_advertisement(
            mac,
            v6,
            wire::ALL_NODES,
            wire::ipv6_multicast_mac(wire::ALL_NODES),
            NaFlags {
                router: false,
                solicited: false,
                override_: true,
            },
        )],
    };
    // ARP and NA frames have a fixed size far below any length limit: emitting cannot fail.
    frames.iter().filter_map(|f| f.to_vec().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::owned::InterfaceFilter;
    use crate::wire::VlanId;
    use proptest::prelude::*;

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
        let mut f = arp_request(None, src, v4(sip), v4(tip));
        f[..6].copy_from_slice(&dst.0);
        f
    }
    fn bytes(f: FrameRepr<'_>) -> Vec<u8> {
        f.to_vec().unwrap()
    }
    /// Broadcast ARP request "who has `tip`? tell `sip`" from `src`.
    fn arp_request(vlan: Option<VlanId>, src: Mac, sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
        bytes(FrameRepr {
            src,
            dst: Mac::BROADCAST,
            vlan,
            payload: PayloadRepr::Arp(ArpRepr {
                operation: ArpOperation::Request,
                sender_mac: src,
                sender_ip: sip,
                target_mac: Mac::ZERO,
                target_ip: tip,
            }),
        })
    }
    /// ARP reply "`sip` is at `src`" to `dst` / `tip`.
    fn arp_reply(
        vlan: Option<VlanId>,
        src: Mac,
        sip: Ipv4Addr,
        dst: Mac,
        tip: Ipv4Addr,
    ) -> Vec<u8> {
        bytes(FrameRepr {
            src,
            dst,
            vlan,
            payload: PayloadRepr::Arp(ArpRepr {
                operation: ArpOperation::Reply,
                sender_mac: src,
                sender_ip: sip,
                target_mac: dst,
                target_ip: tip,
            }),
        })
    }
    fn gratuitous(op: ArpOperation, mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
        bytes(gratuitous_arp(op, mac, ip))
    }
    /// NS for `target` from `src_ip` to its solicited-node group; SLLA unless a DAD probe.
    fn neighbor_solicitation(
        vlan: Option<VlanId>,
        src: Mac,
        src_ip: Ipv6Addr,
        target: Ipv6Addr,
    ) -> Vec<u8> {
        bytes(FrameRepr {
            src,
            dst: wire::solicited_node_multicast_mac(target),
            vlan,
            payload: PayloadRepr::Icmpv6 {
                src: src_ip,
                dst: wire::solicited_node_multicast(target),
                hop_limit: wire::NDP_HOP_LIMIT,
                icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target,
                    lla: (!src_ip.is_unspecified()).then_some(src),
                }),
            },
        })
    }
    fn reply_frame(v: Verdict) -> Vec<u8> {
        match v {
            Verdict::Reply { frame, .. } => frame,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    // The per-message functions, called directly on classified messages.

    fn arp_msg(eth_src: Mac, eth_dst: Mac, sender_ip: &str, target_ip: &str) -> ArpMessage {
        ArpMessage {
            vlan: None,
            eth_src,
            eth_dst,
            sender_mac: eth_src,
            sender_ip: v4(sender_ip),
            target_mac: Mac::ZERO,
            target_ip: v4(target_ip),
        }
    }

    #[test]
    fn on_arp_request_answers_with_the_reply_repr() {
        let m = ArpMessage {
            vlan: VlanId::new(5),
            ..arp_msg(CLIENT, Mac::BROADCAST, "10.0.0.1", "10.0.0.100")
        };
        assert_eq!(
            on_arp_request(&m, &ctx(false), &owned()),
            Verdict::Reply {
                ip: "10.0.0.100".parse().unwrap(),
                kind: ReplyKind::Arp,
                frame: FrameRepr {
                    src: OUR,
                    dst: CLIENT,
                    vlan: VlanId::new(5),
                    payload: PayloadRepr::Arp(ArpRepr {
                        operation: ArpOperation::Reply,
                        sender_mac: OUR,
                        sender_ip: v4("10.0.0.100"),
                        target_mac: CLIENT,
                        target_ip: v4("10.0.0.1"),
                    }),
                },
            }
        );
    }

    #[test]
    fn on_arp_request_drops_and_duplicates() {
        let (c, o) = (ctx(false), owned());
        let b = Mac::BROADCAST;
        let dup = Verdict::Duplicate {
            ip: "10.0.0.100".parse().unwrap(),
            their_mac: ROGUE,
        };
        let cases = [
            // Our own request looped back, even one that would be a duplicate.
            (
                arp_msg(OUR, b, "10.0.0.100", "10.0.0.1"),
                drop_r(DropReason::OwnFrame),
            ),
            // Another station using an owned address as sender: gratuitous or not.
            (arp_msg(ROGUE, b, "10.0.0.100", "10.0.0.100"), dup.clone()),
            (arp_msg(ROGUE, b, "10.0.0.100", "10.0.0.1"), dup),
            // ... but not from another interface of this node.
            (
                arp_msg(OTHER_LOCAL, b, "10.0.0.100", "10.0.0.100"),
                drop_r(DropReason::Gratuitous),
            ),
            (
                arp_msg(ROGUE, b, "10.0.0.7", "10.0.0.7"),
                drop_r(DropReason::Gratuitous),
            ),
            (
                arp_msg(CLIENT, ROGUE, "10.0.0.1", "10.0.0.100"),
                drop_r(DropReason::EthDst),
            ),
            (
                arp_msg(CLIENT, b, "10.0.0.1", "10.0.0.99"),
                drop_r(DropReason::NotOwned),
            ),
            (
                arp_msg(CLIENT, b, "10.0.0.1", "10.0.0.101"),
                drop_r(DropReason::NotOwned),
            ),
        ];
        for (m, want) in cases {
            assert_eq!(on_arp_request(&m, &c, &o), want, "{m:?}");
        }
        // A probe (sender 0.0.0.0) and a request unicast to us are answered.
        for m in [
            arp_msg(CLIENT, b, "0.0.0.0", "10.0.0.100"),
            arp_msg(CLIENT, OUR, "10.0.0.1", "10.0.0.100"),
        ] {
            assert!(
                matches!(on_arp_request(&m, &c, &o), Verdict::Reply { .. }),
                "{m:?}"
            );
        }
    }

    #[test]
    fn on_arp_reply_only_reports_duplicates() {
        let (c, o) = (ctx(false), owned());
        let reply = |src, sip| ArpMessage {
            target_mac: OUR,
            ..arp_msg(src, OUR, sip, "10.0.0.1")
        };
        let cases: [(ArpMessage, Verdict<()>); 4] = [
            (
                reply(OUR, "10.0.0.100"),
                Verdict::Drop(DropReason::OwnFrame),
            ),
            (
                reply(ROGUE, "10.0.0.100"),
                Verdict::Duplicate {
                    ip: "10.0.0.100".parse().unwrap(),
                    their_mac: ROGUE,
                },
            ),
            (
                reply(OTHER_LOCAL, "10.0.0.100"),
                Verdict::Drop(DropReason::ArpReply),
            ),
            (
                reply(ROGUE, "10.0.0.101"),
                Verdict::Drop(DropReason::ArpReply),
            ),
        ];
        for (m, want) in cases {
            assert_eq!(on_arp_reply(&m, &c, &o), want, "{m:?}");
        }
    }

    fn solicitation(src_ip: &str, dst_ip: &str, target: &str, lla: Option<Mac>) -> Solicitation {
        Solicitation {
            vlan: None,
            eth_src: CLIENT,
            eth_dst: wire::solicited_node_multicast_mac(v6(target)),
            src_ip: v6(src_ip),
            dst_ip: v6(dst_ip),
            target: v6(target),
            source_lla: lla,
        }
    }

    fn na_repr(
        vlan: Option<VlanId>,
        dst: Mac,
        dst_ip: &str,
        solicited: bool,
    ) -> FrameRepr<'static> {
        FrameRepr {
            src: OUR,
            dst,
            vlan,
            payload: PayloadRepr::Icmpv6 {
                src: v6("fd00::100"),
                dst: v6(dst_ip),
                hop_limit: 255,
                icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                    flags: NaFlags {
                        router: false,
                        solicited,
                        override_: true,
                    },
                    target: v6("fd00::100"),
                    lla: Some(OUR),
                }),
            },
        }
    }

    #[test]
    fn on_neighbor_solicitation_answers_with_the_na_repr() {
        let (c, o) = (ctx(false), owned());
        let group = "ff02::1:ff00:100";
        let reply = |frame| Verdict::Reply {
            ip: "fd00::100".parse().unwrap(),
            kind: ReplyKind::Ndp,
            frame,
        };
        // Solicited: to the NS source, at its SLLA (else its Ethernet source), tag kept.
        let m = Solicitation {
            vlan: VlanId::new(9),
            ..solicitation("fd00::1", group, "fd00::100", Some(ROGUE))
        };
        assert_eq!(
            on_neighbor_solicitation(&m, &c, &o),
            reply(na_repr(VlanId::new(9), ROGUE, "fd00::1", true))
        );
        let m = solicitation("fd00::1", group, "fd00::100", None);
        assert_eq!(
            on_neighbor_solicitation(&m, &c, &o),
            reply(na_repr(None, CLIENT, "fd00::1", true))
        );
        // DAD probe: to all-nodes, S=0.
        let m = solicitation("::", group, "fd00::100", None);
        assert_eq!(
            on_neighbor_solicitation(&m, &c, &o),
            reply(na_repr(
                None,
                Mac([0x33, 0x33, 0, 0, 0, 1]),
                "ff02::1",
                false
            ))
        );
    }

    #[test]
    fn on_neighbor_solicitation_drops_and_duplicates() {
        let (c, o) = (ctx(false), owned());
        let group = "ff02::1:ff00:100";
        let cases = [
            (
                Solicitation {
                    eth_src: OUR,
                    ..solicitation("fd00::1", group, "fd00::100", None)
                },
                drop_r(DropReason::OwnFrame),
            ),
            (
                solicitation("fd00::100", "ff02::1:ff00:1", "fd00::1", Some(ROGUE)),
                Verdict::Duplicate {
                    ip: "fd00::100".parse().unwrap(),
                    their_mac: ROGUE,
                },
            ),
            (
                solicitation("fd00::100", "ff02::1:ff00:1", "fd00::1", Some(OTHER_LOCAL)),
                drop_r(DropReason::NotOwned),
            ),
            (
                Solicitation {
                    eth_dst: ROGUE,
                    ..solicitation("fd00::1", group, "fd00::100", None)
                },
                drop_r(DropReason::EthDst),
            ),
            (
                solicitation("fd00::1", "fd00::5", "fd00::100", None),
                drop_r(DropReason::IpDst),
            ),
            (
                solicitation("fd00::1", "ff02::1:ff00:99", "fd00::99", None),
                drop_r(DropReason::NotOwned),
            ),
            (
                solicitation("fd00::1", "ff02::1:ff00:101", "fd00::101", None),
                drop_r(DropReason::NotOwned),
            ),
        ];
        for (m, want) in cases {
            assert_eq!(on_neighbor_solicitation(&m, &c, &o), want, "{m:?}");
        }
    }

    #[test]
    fn on_neighbor_advertisement_only_reports_duplicates() {
        let (c, o) = (ctx(false), owned());
        let na = |eth_src, target: &str, tlla| Advertisement {
            vlan: None,
            eth_src,
            eth_dst: Mac([0x33, 0x33, 0, 0, 0, 1]),
            src_ip: v6(target),
            dst_ip: v6("ff02::1"),
            target: v6(target),
            target_lla: tlla,
            flags: NaFlags {
                router: false,
                solicited: false,
                override_: true,
            },
        };
        let dup = |mac| Verdict::Duplicate {
            ip: "fd00::100".parse().unwrap(),
            their_mac: mac,
        };
        let cases: [(Advertisement, Verdict<()>); 6] = [
            (
                na(OUR, "fd00::100", Some(OUR)),
                Verdict::Drop(DropReason::OwnFrame),
            ),
            (na(CLIENT, "fd00::100", Some(ROGUE)), dup(ROGUE)),
            // Without a TLLA option the Ethernet source is the claimant.
            (na(ROGUE, "fd00::100", None), dup(ROGUE)),
            (
                na(CLIENT, "fd00::100", Some(OTHER_LOCAL)),
                Verdict::Drop(DropReason::Advertisement),
            ),
            (
                na(ROGUE, "fd00::5", Some(ROGUE)),
                Verdict::Drop(DropReason::Advertisement),
            ),
            (
                na(ROGUE, "fd00::101", Some(ROGUE)),
                Verdict::Drop(DropReason::Advertisement),
            ),
        ];
        for (m, want) in cases {
            assert_eq!(on_neighbor_advertisement(&m, &c, &o), want, "{m:?}");
        }
    }

    #[test]
    fn on_echo_request_echoes_the_request_without_copying_it() {
        let o = owned();
        let data = b"ping!".to_vec();
        let m4 = EchoRequest {
            vlan: VlanId::new(3),
            eth_src: CLIENT,
            eth_dst: OUR,
            src_ip: v4("10.0.0.1"),
            dst_ip: v4("10.0.0.100"),
            ident: 7,
            seq: 9,
            data: &data,
        };
        let Verdict::Reply { ip, kind, frame } = on_echo_request_v4(&m4, &ctx(true), &o) else {
            panic!("no reply");
        };
        assert_eq!((ip, kind), ("10.0.0.100".parse().unwrap(), ReplyKind::Echo));
        assert_eq!(
            (frame.src, frame.dst, frame.vlan),
            (OUR, CLIENT, VlanId::new(3))
        );
        let PayloadRepr::Icmpv4 {
            src,
            dst,
            ttl,
            icmp:
                Icmpv4Repr::EchoReply {
                    ident,
                    seq,
                    data: d,
                },
        } = frame.payload
        else {
            panic!("{frame:?}");
        };
        assert_eq!(
            (src, dst, ttl, ident, seq),
            (m4.dst_ip, m4.src_ip, 64, 7, 9)
        );
        assert!(std::ptr::eq(d, &data[..]));

        let m6 = EchoRequest {
            vlan: None,
            eth_src: CLIENT,
            eth_dst: OUR,
            src_ip: v6("fd00::1"),
            dst_ip: v6("fd00::100"),
            ident: 1,
            seq: 2,
            data: &data,
        };
        let Verdict::Reply { frame, .. } = on_echo_request_v6(&m6, &ctx(true), &o) else {
            panic!("no reply");
        };
        assert_eq!(
            frame.payload,
            PayloadRepr::Icmpv6 {
                src: m6.dst_ip,
                dst: m6.src_ip,
                hop_limit: 64,
                icmp: Icmpv6Repr::EchoReply {
                    ident: 1,
                    seq: 2,
                    data: &data
                },
            }
        );
    }

    #[test]
    fn on_echo_request_refusals_in_order() {
        let o = owned();
        let base = EchoRequest {
            vlan: None,
            eth_src: CLIENT,
            eth_dst: OUR,
            src_ip: v4("10.0.0.1"),
            dst_ip: v4("10.0.0.100"),
            ident: 7,
            seq: 9,
            data: b"",
        };
        let cases = [
            // Disabled wins over everything, even our own frame.
            (
                EchoRequest {
                    eth_src: OUR,
                    ..base
                },
                false,
                DropReason::EchoDisabled,
            ),
            (
                EchoRequest {
                    eth_src: OUR,
                    ..base
                },
                true,
                DropReason::OwnFrame,
            ),
            (
                EchoRequest {
                    eth_dst: Mac::BROADCAST,
                    ..base
                },
                true,
                DropReason::EthDst,
            ),
            (
                EchoRequest {
                    dst_ip: v4("10.0.0.101"),
                    ..base
                },
                true,
                DropReason::NotOwned,
            ),
        ];
        for (m, echo, want) in cases {
            assert_eq!(
                on_echo_request_v4(&m, &ctx(echo), &o),
                Verdict::Drop(want),
                "{m:?}"
            );
        }
    }

    #[test]
    fn respond_drops_other_frames_as_unsupported() {
        assert_eq!(
            respond(Inbound::Other, &ctx(true), &owned()),
            drop_r(DropReason::Unsupported)
        );
    }

    fn drop_r(r: DropReason) -> Verdict<FrameRepr<'static>> {
        Verdict::Drop(r)
    }

    // Whole frames through `decide`.

    #[test]
    fn arp_request_for_owned_ip_gets_unicast_reply_with_our_mac() {
        let f = arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100"));
        let v = decide(&f, &ctx(false), &owned());
        let expected = arp_reply(None, OUR, v4("10.0.0.100"), CLIENT, v4("10.0.0.1"));
        assert_eq!(
            v,
            Verdict::Reply {
                ip: "10.0.0.100".parse().unwrap(),
                kind: ReplyKind::Arp,
                frame: expected.clone()
            }
        );
        match wire::parse_inbound(&expected).unwrap() {
            Inbound::ArpReply(ArpMessage {
                eth_dst,
                eth_src,
                sender_mac,
                sender_ip,
                target_mac,
                target_ip,
                ..
            }) => {
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
        let f = arp_request(None, CLIENT, Ipv4Addr::UNSPECIFIED, v4("10.0.0.100"));
        let frame = reply_frame(decide(&f, &ctx(false), &owned()));
        assert_eq!(
            frame,
            arp_reply(None, OUR, v4("10.0.0.100"), CLIENT, Ipv4Addr::UNSPECIFIED)
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
            let f = arp_request(None, CLIENT, v4("10.0.0.1"), v4(tip));
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
        let f = arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.101"));
        assert!(matches!(decide(&f, &eth1, &o), Verdict::Reply { .. }));
    }

    #[test]
    fn arp_replies_dropped_unless_duplicate() {
        let o = owned();
        let normal = arp_reply(None, CLIENT, v4("10.0.0.1"), OUR, v4("10.0.0.100"));
        assert_eq!(decide(&normal, &ctx(false), &o), drop(DropReason::ArpReply));
        let dup = arp_reply(None, ROGUE, v4("10.0.0.100"), CLIENT, v4("10.0.0.1"));
        assert_eq!(
            decide(&dup, &ctx(false), &o),
            Verdict::Duplicate {
                ip: "10.0.0.100".parse().unwrap(),
                their_mac: ROGUE
            }
        );
        // From another interface of ours: not a duplicate.
        let ours = arp_reply(None, OTHER_LOCAL, v4("10.0.0.100"), CLIENT, v4("10.0.0.1"));
        assert_eq!(decide(&ours, &ctx(false), &o), drop(DropReason::ArpReply));
        // Our own frame looped back.
        let own = gratuitous(ArpOperation::Reply, OUR, v4("10.0.0.100"));
        assert_eq!(decide(&own, &ctx(false), &o), drop(DropReason::OwnFrame));
    }

    #[test]
    fn gratuitous_arp_from_other_mac_for_owned_ip_is_duplicate() {
        let o = owned();
        for f in [
            gratuitous(ArpOperation::Request, ROGUE, v4("10.0.0.100")),
            gratuitous(ArpOperation::Reply, ROGUE, v4("10.0.0.100")),
        ] {
            assert_eq!(
                decide(&f, &ctx(false), &o),
                Verdict::Duplicate {
                    ip: "10.0.0.100".parse().unwrap(),
                    their_mac: ROGUE
                }
            );
        }
        let other = gratuitous(ArpOperation::Request, ROGUE, v4("10.0.0.7"));
        assert_eq!(
            decide(&other, &ctx(false), &o),
            drop(DropReason::Gratuitous)
        );
        // Owned only on eth1: not a duplicate seen on eth0.
        let elsewhere = gratuitous(ArpOperation::Request, ROGUE, v4("10.0.0.101"));
        assert_eq!(
            decide(&elsewhere, &ctx(false), &o),
            drop(DropReason::Gratuitous)
        );
    }

    fn parse_na(frame: &[u8]) -> (Mac, Ipv6Addr, Ipv6Addr, Ipv6Addr, Option<Mac>, NaFlags) {
        match wire::parse_inbound(frame).unwrap() {
            Inbound::NeighborAdvertisement(m) => (
                m.eth_dst,
                m.src_ip,
                m.dst_ip,
                m.target,
                m.target_lla,
                m.flags,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multicast_ns_answered_with_solicited_override_na() {
        let f = neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::100"));
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
        FrameRepr {
            src: CLIENT,
            dst: OUR,
            vlan: None,
            payload: PayloadRepr::Icmpv6 {
                src: v6(src_ip),
                dst: v6(dst_ip),
                hop_limit: 255,
                icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
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
        let f = neighbor_solicitation(None, CLIENT, Ipv6Addr::UNSPECIFIED, v6("fd00::100"));
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
        let f = neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::99"));
        assert_eq!(decide(&f, &ctx(false), &o), drop(DropReason::NotOwned));
        let f = neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::101"));
        assert_eq!(decide(&f, &ctx(false), &o), drop(DropReason::NotOwned));
        let rogue = announcement(v6("fd00::100").into(), ROGUE).remove(0);
        assert_eq!(
            decide(&rogue, &ctx(false), &o),
            Verdict::Duplicate {
                ip: "fd00::100".parse().unwrap(),
                their_mac: ROGUE
            }
        );
        let unrelated = announcement(v6("fd00::5").into(), ROGUE).remove(0);
        assert_eq!(
            decide(&unrelated, &ctx(false), &o),
            drop(DropReason::Advertisement)
        );
        let own = announcement(v6("fd00::100").into(), OUR).remove(0);
        assert_eq!(decide(&own, &ctx(false), &o), drop(DropReason::OwnFrame));
        // Another node soliciting *from* our VIP also uses it.
        let ns_from_vip = neighbor_solicitation(None, ROGUE, v6("fd00::100"), v6("fd00::1"));
        assert_eq!(
            decide(&ns_from_vip, &ctx(false), &o),
            Verdict::Duplicate {
                ip: "fd00::100".parse().unwrap(),
                their_mac: ROGUE
            }
        );
    }

    fn echo_v4(dst_mac: Mac, dst: &str) -> Vec<u8> {
        FrameRepr {
            src: CLIENT,
            dst: dst_mac,
            vlan: None,
            payload: PayloadRepr::Icmpv4 {
                src: v4("10.0.0.1"),
                dst: v4(dst),
                ttl: 64,
                icmp: Icmpv4Repr::EchoRequest {
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
        FrameRepr {
            src: CLIENT,
            dst: dst_mac,
            vlan: None,
            payload: PayloadRepr::Icmpv6 {
                src: v6("fd00::1"),
                dst: v6(dst),
                hop_limit: 64,
                icmp: Icmpv6Repr::EchoRequest {
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
            bytes(FrameRepr {
                src: OUR,
                dst: CLIENT,
                vlan: None,
                payload: PayloadRepr::Icmpv4 {
                    src: v4("10.0.0.100"),
                    dst: v4("10.0.0.1"),
                    ttl: 64,
                    icmp: Icmpv4Repr::EchoReply {
                        ident: 7,
                        seq: 9,
                        data: b"ping!"
                    },
                },
            })
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
            bytes(FrameRepr {
                src: OUR,
                dst: CLIENT,
                vlan: None,
                payload: PayloadRepr::Icmpv6 {
                    src: v6("fd00::100"),
                    dst: v6("fd00::1"),
                    hop_limit: 64,
                    icmp: Icmpv6Repr::EchoReply {
                        ident: 7,
                        seq: 9,
                        data: b"ping!"
                    },
                },
            })
        );
    }

    #[test]
    fn replies_keep_the_vlan_tag() {
        let vlan = VlanId::new(100);
        let f = arp_request(vlan, CLIENT, v4("10.0.0.1"), v4("10.0.0.100"));
        let frame = reply_frame(decide(&f, &ctx(false), &owned()));
        assert_eq!(wire::parse_inbound(&frame).unwrap().vlan(), vlan);
        let f = neighbor_solicitation(vlan, CLIENT, v6("fd00::1"), v6("fd00::100"));
        let frame = reply_frame(decide(&f, &ctx(false), &owned()));
        assert_eq!(wire::parse_inbound(&frame).unwrap().vlan(), vlan);
    }

    #[test]
    fn announcement_frames() {
        let a = announcement("10.0.0.100".parse().unwrap(), OUR);
        assert_eq!(a.len(), 2);
        for f in &a {
            match wire::parse_inbound(f).unwrap() {
                Inbound::ArpRequest(ArpMessage {
                    sender_ip,
                    target_ip,
                    sender_mac,
                    eth_dst,
                    ..
                })
                | Inbound::ArpReply(ArpMessage {
                    sender_ip,
                    target_ip,
                    sender_mac,
                    eth_dst,
                    ..
                }) => {
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
        let mut f = arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100"));
        f[14 + 4] = 7; // hlen 7
        assert_eq!(decide(&f, &ctx(true), &o), drop(DropReason::Malformed));
        let mut ns = neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::100"));
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
        let mut dad = neighbor_solicitation(None, CLIENT, v6("::"), v6("fd00::100"));
        let frames = vec![
            arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100")),
            neighbor_solicitation(VlanId::new(7), CLIENT, v6("fd00::1"), v6("fd00::100")),
            arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.99")),
            std::mem::take(&mut dad),
            arp_request(VlanId::new(7), CLIENT, v4("10.0.0.1"), v4("10.0.0.100")),
            arp_reply(None, ROGUE, v4("10.0.0.100"), CLIENT, v4("10.0.0.1")),
            echo_v4(OUR, "10.0.0.100"),
            vec![0xff; 3],
            echo_v6(OUR, "fd00::100"),
            arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100")),
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
        // Every reply (ARP, NDP, and echo replies of any size that fits) reuses the buffer's
        // allocation.
        let cap = out.capacity();
        let ptr = out.as_ptr();
        for i in [1, 0, 6, 8] {
            assert!(matches!(
                decide_into(&frames[i], &ctx(true), &owned(), &mut out),
                Verdict::Reply { .. }
            ));
            assert_eq!((out.capacity(), out.as_ptr()), (cap, ptr), "frame {i}");
        }
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
                arp_request(None, CLIENT, v4("10.0.0.1"), v4("10.0.0.100")),
                neighbor_solicitation(None, CLIENT, v6("fd00::1"), v6("fd00::100")),
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

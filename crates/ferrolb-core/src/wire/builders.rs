//! Whole frames: [`FrameRepr`] (parse / emit a complete Ethernet frame) and the builders the
//! dataplane sends (ARP replies, gratuitous ARP, Neighbor Advertisements, echo replies).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ethernet::{EtherType, EthernetFrame, EthernetRepr};
use super::icmpv4::Icmpv4Repr;
use super::icmpv6::Icmpv6Repr;
use super::ipv4::{Ipv4Packet, Ipv4Repr, PROTO_ICMP};
use super::ipv6::{Ipv6Packet, Ipv6Repr, NEXT_HEADER_ICMPV6};
use super::ndp::{NaFlags, NdiscRepr};
use super::types::{ipv6_multicast_mac, solicited_node_multicast, solicited_node_multicast_mac};
use super::{ArpOperation, ArpRepr, Mac, VlanId, WireError};

/// Minimum Ethernet frame length without FCS; shorter frames are zero-padded (as the
/// Go `mdlayher/ethernet` library MetalLB uses does). Tagged frames get 4 more bytes so the
/// frame still meets the minimum when a switch strips the tag.
pub const MIN_FRAME_LEN: usize = 60;
/// Hop limit of IPv6 echo replies and TTL of IPv4 echo replies.
pub const DEFAULT_HOP_LIMIT: u8 = 64;
/// Hop limit every NDP message carries (RFC 4861 §7.1).
pub const NDP_HOP_LIMIT: u8 = 255;

/// ff02::1, all-nodes multicast.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// What an Ethernet frame carries, as far as ferrolb models it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadRepr<'a> {
    /// ARP (Ethernet/IPv4).
    Arp(ArpRepr),
    /// ICMP echo over IPv4.
    Icmpv4 {
        /// IPv4 source.
        src: Ipv4Addr,
        /// IPv4 destination.
        dst: Ipv4Addr,
        /// Time to live.
        ttl: u8,
        /// The ICMP message.
        icmp: Icmpv4Repr<'a>,
    },
    /// ICMPv6 (echo, NS, NA) directly after the IPv6 header.
    Icmpv6 {
        /// IPv6 source.
        src: Ipv6Addr,
        /// IPv6 destination.
        dst: Ipv6Addr,
        /// Hop limit.
        hop_limit: u8,
        /// The ICMPv6 message.
        icmp: Icmpv6Repr<'a>,
    },
}

impl PayloadRepr<'_> {
    fn ethertype(&self) -> EtherType {
        match self {
            PayloadRepr::Arp(_) => EtherType::ARP,
            PayloadRepr::Icmpv4 { .. } => EtherType::IPV4,
            PayloadRepr::Icmpv6 { .. } => EtherType::IPV6,
        }
    }

    fn len(&self) -> usize {
        match self {
            PayloadRepr::Arp(a) => a.buffer_len(),
            PayloadRepr::Icmpv4 { icmp, .. } => super::ipv4::HEADER_LEN + icmp.buffer_len(),
            PayloadRepr::Icmpv6 { icmp, .. } => super::ipv6::HEADER_LEN + icmp.buffer_len(),
        }
    }
}

/// A complete Ethernet frame of a kind ferrolb parses and emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRepr<'a> {
    /// Ethernet source.
    pub src: Mac,
    /// Ethernet destination.
    pub dst: Mac,
    /// 802.1Q VLAN id, `None` when untagged.
    pub vlan: Option<VlanId>,
    /// The payload.
    pub payload: PayloadRepr<'a>,
}

impl<'a> FrameRepr<'a> {
    /// Parses a whole frame. Structural checks only (lengths, formats, checksums, NDP option
    /// rules); the semantic NDP checks (hop limit, DAD rules) live in [`super::parse_inbound`].
    /// Frames that are well-formed but of a kind not modelled give
    /// [`WireError::UnsupportedEtherType`], [`WireError::UnsupportedProtocol`],
    /// [`WireError::UnsupportedIcmpType`] or [`WireError::Ipv4Fragment`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let frame = EthernetFrame::new_checked(bytes)?;
        let eth = EthernetRepr::parse(&frame)?;
        let body = &bytes[frame.header_len()..];
        let payload = match eth.ethertype {
            EtherType::ARP => PayloadRepr::Arp(ArpRepr::parse(body)?),
            EtherType::IPV4 => {
                let p = Ipv4Packet::new_checked(body)?;
                let ip = Ipv4Repr::parse(&p)?;
                if ip.protocol != PROTO_ICMP {
                    return Err(WireError::UnsupportedProtocol(ip.protocol));
                }
                let start = p.header_len();
                let msg = &body[start..start + ip.payload_len];
                PayloadRepr::Icmpv4 {
                    src: ip.src,
                    dst: ip.dst,
                    ttl: ip.ttl,
                    icmp: Icmpv4Repr::parse(msg)?,
                }
            }
            EtherType::IPV6 => {
                let p = Ipv6Packet::new_checked(body)?;
                let ip = Ipv6Repr::parse(&p)?;
                if ip.next_header != NEXT_HEADER_ICMPV6 {
                    return Err(WireError::UnsupportedProtocol(ip.next_header));
                }
                let msg = &body[super::ipv6::HEADER_LEN..super::ipv6::HEADER_LEN + ip.payload_len];
                PayloadRepr::Icmpv6 {
                    src: ip.src,
                    dst: ip.dst,
                    hop_limit: ip.hop_limit,
                    icmp: Icmpv6Repr::parse(&ip.src, &ip.dst, msg)?,
                }
            }
            EtherType(other) => return Err(WireError::UnsupportedEtherType(other)),
        };
        Ok(FrameRepr {
            src: eth.src,
            dst: eth.dst,
            vlan: eth.vlan,
            payload,
        })
    }

    fn ethernet(&self) -> EthernetRepr {
        EthernetRepr {
            src: self.src,
            dst: self.dst,
            vlan: self.vlan,
            ethertype: self.payload.ethertype(),
        }
    }

    /// Length of the emitted frame, padding included.
    pub fn buffer_len(&self) -> usize {
        let eth = self.ethernet();
        let min = MIN_FRAME_LEN + (eth.header_len() - super::ethernet::HEADER_LEN);
        (eth.header_len() + self.payload.len()).max(min)
    }

    /// Writes the frame (checksums filled, zero padding) into `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let total = self.buffer_len();
        if buf.len() < total {
            return Err(WireError::BufferTooSmall {
                needed: total,
                got: buf.len(),
            });
        }
        let eth = self.ethernet();
        eth.emit(buf)?;
        let hl = eth.header_len();
        let end = hl + self.payload.len();
        let body = &mut buf[hl..end];
        match self.payload {
            PayloadRepr::Arp(a) => a.emit(body)?,
            PayloadRepr::Icmpv4 {
                src,
                dst,
                ttl,
                icmp,
            } => {
                let ip = Ipv4Repr {
                    src,
                    dst,
                    protocol: PROTO_ICMP,
                    ttl,
                    payload_len: icmp.buffer_len(),
                };
                ip.emit(body)?;
                icmp.emit(&mut body[ip.header_len()..])?;
            }
            PayloadRepr::Icmpv6 {
                src,
                dst,
                hop_limit,
                icmp,
            } => {
                let ip = Ipv6Repr {
                    src,
                    dst,
                    next_header: NEXT_HEADER_ICMPV6,
                    payload_len: icmp.buffer_len(),
                    hop_limit,
                };
                ip.emit(body)?;
                icmp.emit(&src, &dst, &mut body[ip.header_len()..])?;
            }
        }
        buf[end..total].fill(0);
        Ok(total)
    }

    /// Emits into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.buffer_len()];
        let n = self.emit(&mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// ARP reply to `requester`: sender = `our_mac` + `vip`, unicast to the requester.
    pub fn arp_reply(
        vlan: Option<VlanId>,
        our_mac: Mac,
        vip: Ipv4Addr,
        requester_mac: Mac,
        requester_ip: Ipv4Addr,
    ) -> FrameRepr<'static> {
        FrameRepr {
            src: our_mac,
            dst: requester_mac,
            vlan,
            payload: PayloadRepr::Arp(ArpRepr {
                operation: ArpOperation::Reply,
                sender_mac: our_mac,
                sender_ip: vip,
                target_mac: requester_mac,
                target_ip: requester_ip,
            }),
        }
    }

    /// Gratuitous ARP of `operation` for `vip`, as MetalLB sends it: sender IP = target IP = VIP,
    /// target HW = ff:ff:ff:ff:ff:ff, Ethernet broadcast.
    pub fn gratuitous_arp(
        vlan: Option<VlanId>,
        operation: ArpOperation,
        our_mac: Mac,
        vip: Ipv4Addr,
    ) -> FrameRepr<'static> {
        FrameRepr {
            src: our_mac,
            dst: Mac::BROADCAST,
            vlan,
            payload: PayloadRepr::Arp(ArpRepr {
                operation,
                sender_mac: our_mac,
                sender_ip: vip,
                target_mac: Mac::BROADCAST,
                target_ip: vip,
            }),
        }
    }

    /// Neighbor Advertisement for `target` with a Target Link-Layer Address option = `our_mac`.
    #[allow(clippy::too_many_arguments)]
    pub fn neighbor_advertisement(
        vlan: Option<VlanId>,
        our_mac: Mac,
        src_ip: Ipv6Addr,
        dst_ip: Ipv6Addr,
        dst_mac: Mac,
        target: Ipv6Addr,
        solicited: bool,
        override_: bool,
    ) -> FrameRepr<'static> {
        FrameRepr {
            src: our_mac,
            dst: dst_mac,
            vlan,
            payload: PayloadRepr::Icmpv6 {
                src: src_ip,
                dst: dst_ip,
                hop_limit: NDP_HOP_LIMIT,
                icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                    flags: NaFlags {
                        router: false,
                        solicited,
                        override_,
                    },
                    target,
                    lla: Some(our_mac),
                }),
            },
        }
    }
}

/// Emits a frame whose size is bounded by construction (ARP, NDP); only echo frames with
/// caller-supplied data can exceed the IP length fields, and those use the fallible path.
fn fixed(frame: FrameRepr<'_>) -> Vec<u8> {
    frame
        .to_vec()
        .expect("fixed-size ARP/NDP frames always fit a buffer of their own buffer_len")
}

/// ARP reply for `vip` (sender = `our_mac`), unicast to the requester.
pub fn arp_reply(
    vlan: Option<VlanId>,
    our_mac: Mac,
    vip: Ipv4Addr,
    requester_mac: Mac,
    requester_ip: Ipv4Addr,
) -> Vec<u8> {
    fixed(FrameRepr::arp_reply(
        vlan,
        our_mac,
        vip,
        requester_mac,
        requester_ip,
    ))
}

/// Writes an ARP reply into `buf` (at least [`MIN_FRAME_LEN`] + 4 bytes); returns its length.
pub fn arp_reply_into(
    buf: &mut [u8],
    vlan: Option<VlanId>,
    our_mac: Mac,
    vip: Ipv4Addr,
    requester_mac: Mac,
    requester_ip: Ipv4Addr,
) -> Result<usize, WireError> {
    FrameRepr::arp_reply(vlan, our_mac, vip, requester_mac, requester_ip).emit(buf)
}

/// Broadcast ARP request "who has `target_ip`? tell `sender_ip`" (tests, benchmarks, probes).
pub fn arp_request(
    vlan: Option<VlanId>,
    our_mac: Mac,
    sender_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    fixed(FrameRepr {
        src: our_mac,
        dst: Mac::BROADCAST,
        vlan,
        payload: PayloadRepr::Arp(ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: our_mac,
            sender_ip,
            target_mac: Mac::ZERO,
            target_ip,
        }),
    })
}

/// Gratuitous ARP request for `vip` (sender IP = target IP = VIP, target HW broadcast, Ethernet broadcast).
pub fn gratuitous_arp_request(vlan: Option<VlanId>, our_mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    fixed(FrameRepr::gratuitous_arp(
        vlan,
        ArpOperation::Request,
        our_mac,
        vip,
    ))
}

/// Gratuitous ARP reply for `vip` (same addresses as [`gratuitous_arp_request`], operation 2).
pub fn gratuitous_arp_reply(vlan: Option<VlanId>, our_mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    fixed(FrameRepr::gratuitous_arp(
        vlan,
        ArpOperation::Reply,
        our_mac,
        vip,
    ))
}

/// Neighbor Advertisement for `target` from `src_ip` (the interface's link-local address or
/// the VIP) to `dst_ip`/`dst_mac`, hop limit 255, Target Link-Layer Address = `our_mac`.
#[allow(clippy::too_many_arguments)]
pub fn neighbor_advertisement(
    vlan: Option<VlanId>,
    our_mac: Mac,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    dst_mac: Mac,
    target: Ipv6Addr,
    solicited: bool,
    override_: bool,
) -> Vec<u8> {
    fixed(FrameRepr::neighbor_advertisement(
        vlan, our_mac, src_ip, dst_ip, dst_mac, target, solicited, override_,
    ))
}

/// Writes a Neighbor Advertisement (see [`neighbor_advertisement`]) into `buf`; returns its length.
#[allow(clippy::too_many_arguments)]
pub fn neighbor_advertisement_into(
    buf: &mut [u8],
    vlan: Option<VlanId>,
    our_mac: Mac,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    dst_mac: Mac,
    target: Ipv6Addr,
    solicited: bool,
    override_: bool,
) -> Result<usize, WireError> {
    FrameRepr::neighbor_advertisement(
        vlan, our_mac, src_ip, dst_ip, dst_mac, target, solicited, override_,
    )
    .emit(buf)
}

/// Unsolicited Neighbor Advertisement announcing `target`: to ff02::1 / 33:33:00:00:00:01,
/// S=0, O=1, TLLA = `our_mac`.
pub fn unsolicited_neighbor_advertisement(
    vlan: Option<VlanId>,
    our_mac: Mac,
    src_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    neighbor_advertisement(
        vlan,
        our_mac,
        src_ip,
        ALL_NODES,
        ipv6_multicast_mac(ALL_NODES),
        target,
        false,
        true,
    )
}

/// Multicast Neighbor Solicitation for `target` to its solicited-node group (tests, probes).
/// With `src_ip` = `::` it is a DAD probe and carries no Source Link-Layer Address option.
pub fn neighbor_solicitation(
    vlan: Option<VlanId>,
    our_mac: Mac,
    src_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    let dst = solicited_node_multicast(target);
    fixed(FrameRepr {
        src: our_mac,
        dst: solicited_node_multicast_mac(target),
        vlan,
        payload: PayloadRepr::Icmpv6 {
            src: src_ip,
            dst,
            hop_limit: NDP_HOP_LIMIT,
            icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target,
                lla: (!src_ip.is_unspecified()).then_some(our_mac),
            }),
        },
    })
}

/// ICMPv4 echo reply from `src_ip` (the VIP) to `dst_ip`/`dst_mac`, echoing `ident`, `seq`, `data`.
#[allow(clippy::too_many_arguments)]
pub fn echo_reply_v4(
    vlan: Option<VlanId>,
    our_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Result<Vec<u8>, WireError> {
    FrameRepr {
        src: our_mac,
        dst: dst_mac,
        vlan,
        payload: PayloadRepr::Icmpv4 {
            src: src_ip,
            dst: dst_ip,
            ttl: DEFAULT_HOP_LIMIT,
            icmp: Icmpv4Repr::EchoReply { ident, seq, data },
        },
    }
    .to_vec()
}

/// ICMPv6 echo reply from `src_ip` (the VIP) to `dst_ip`/`dst_mac`, echoing `ident`, `seq`, `data`.
#[allow(clippy::too_many_arguments)]
pub fn echo_reply_v6(
    vlan: Option<VlanId>,
    our_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Result<Vec<u8>, WireError> {
    FrameRepr {
        src: our_mac,
        dst: dst_mac,
        vlan,
        payload: PayloadRepr::Icmpv6 {
            src: src_ip,
            dst: dst_ip,
            hop_limit: DEFAULT_HOP_LIMIT,
            icmp: Icmpv6Repr::EchoReply { ident, seq, data },
        },
    }
    .to_vec()
}

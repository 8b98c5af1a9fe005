//! Classification of a received frame into what the dataplane acts on.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::builders::{FrameRepr, PayloadRepr, NDP_HOP_LIMIT};
use super::icmpv4::Icmpv4Repr;
use super::icmpv6::Icmpv6Repr;
use super::ndp::{NaFlags, NdiscRepr};
use super::types::solicited_node_multicast;
use super::{ArpOperation, Mac, VlanId, WireError};

/// A received frame, classified. `vlan` is the 802.1Q id the frame arrived with; replies
/// must carry the same tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inbound<'a> {
    /// ARP request (including probes with sender IP 0.0.0.0 and gratuitous requests).
    ArpRequest {
        /// 802.1Q VLAN id.
        vlan: Option<VlanId>,
        /// Ethernet source.
        eth_src: Mac,
        /// Ethernet destination.
        eth_dst: Mac,
        /// ARP sender hardware address.
        sender_mac: Mac,
        /// ARP sender protocol address.
        sender_ip: Ipv4Addr,
        /// ARP target hardware address (usually 00:00:00:00:00:00).
        target_mac: Mac,
        /// Address being resolved.
        target_ip: Ipv4Addr,
    },
    /// ARP reply (including gratuitous replies).
    ArpReply {
        /// 802.1Q VLAN id.
        vlan: Option<VlanId>,
        /// Ethernet source.
        eth_src: Mac,
        /// Ethernet destination.
        eth_dst: Mac,
        /// ARP sender hardware address (who claims `sender_ip`).
        sender_mac: Mac,
        /// ARP sender protocol address.
        sender_ip: Ipv4Addr,
        /// ARP target hardware address.
        target_mac: Mac,
        /// ARP target protocol address.
        target_ip: Ipv4Addr,
    },
    /// Neighbor Solicitation (validated per RFC 4861 §7.1.1).
    NeighborSolicitation {
        /// 802.1Q VLAN id.
        vlan: Option<VlanId>,
        /// Ethernet source.
        eth_src: Mac,
        /// Ethernet destination.
        eth_dst: Mac,
        /// IPv6 source (`::` for duplicate address detection).
        src_ip: Ipv6Addr,
        /// IPv6 destination (solicited-node group, or the target itself for a unicast NUD probe).
        dst_ip: Ipv6Addr,
        /// Address being resolved.
        target: Ipv6Addr,
        /// Source Link-Layer Address option.
        source_lla: Option<Mac>,
    },
    /// Neighbor Advertisement (validated per RFC 4861 §7.1.2).
    NeighborAdvertisement {
        /// 802.1Q VLAN id.
        vlan: Option<VlanId>,
        /// Ethernet source.
        eth_src: Mac,
        /// Ethernet destination.
        eth_dst: Mac,
        /// IPv6 source.
        src_ip: Ipv6Addr,
        /// IPv6 destination.
        dst_ip: Ipv6Addr,
        /// Address advertised.
        target: Ipv6Addr,
        /// Target Link-Layer Address option.
        target_lla: Option<Mac>,
        /// R/S/O flags.
        flags: NaFlags,
    },
    /// ICMPv4 echo request.
    EchoRequestV4 {
        /// 802.1Q VLAN id.
        vlan: Option<VlanId>,
        /// Ethernet source.
        eth_src: Mac,
        /// Ethernet destination.
        eth_dst: Mac,
        /// IPv4 source.
        src_ip: Ipv4Addr,
        /// IPv4 destination.
        dst_ip: Ipv4Addr,
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Data to echo.
        data: &'a [u8],
    },
    /// ICMPv6 echo request.
    EchoRequestV6 {
        /// 802.1Q VLAN id.
        vlan: Option<VlanId>,
        /// Ethernet source.
        eth_src: Mac,
        /// Ethernet destination.
        eth_dst: Mac,
        /// IPv6 source.
        src_ip: Ipv6Addr,
        /// IPv6 destination.
        dst_ip: Ipv6Addr,
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Data to echo.
        data: &'a [u8],
    },
    /// A well-formed frame of a kind the dataplane does not act on (other EtherTypes, stacked
    /// VLAN tags, non-ICMP IP, IPv4 fragments, IPv6 extension headers, other ICMP types, echo replies).
    Other,
}

impl Inbound<'_> {
    /// The 802.1Q VLAN id of the frame (`None` for untagged frames and for [`Inbound::Other`]).
    pub fn vlan(&self) -> Option<VlanId> {
        match self {
            Inbound::ArpRequest { vlan, .. }
            | Inbound::ArpReply { vlan, .. }
            | Inbound::NeighborSolicitation { vlan, .. }
            | Inbound::NeighborAdvertisement { vlan, .. }
            | Inbound::EchoRequestV4 { vlan, .. }
            | Inbound::EchoRequestV6 { vlan, .. } => *vlan,
            Inbound::Other => None,
        }
    }
}

/// Parses and classifies a received Ethernet frame.
///
/// Malformed frames (truncated, bad checksums, unsupported ARP formats, NDP with hop limit ≠ 255,
/// zero-length options, DAD solicitations with an SLLA option, …) are typed errors; well-formed
/// frames the dataplane does not act on are [`Inbound::Other`]. Never panics.
pub fn parse_inbound(frame: &[u8]) -> Result<Inbound<'_>, WireError> {
    let f = match FrameRepr::parse(frame) {
        Ok(f) => f,
        Err(
            WireError::UnsupportedEtherType(_)
            | WireError::UnsupportedProtocol(_)
            | WireError::UnsupportedIcmpType(_)
            | WireError::Ipv4Fragment,
        ) => return Ok(Inbound::Other),
        Err(e) => return Err(e),
    };
    let (vlan, eth_src, eth_dst) = (f.vlan, f.src, f.dst);
    Ok(match f.payload {
        PayloadRepr::Arp(a) => match a.operation {
            ArpOperation::Request => Inbound::ArpRequest {
                vlan,
                eth_src,
                eth_dst,
                sender_mac: a.sender_mac,
                sender_ip: a.sender_ip,
                target_mac: a.target_mac,
                target_ip: a.target_ip,
            },
            ArpOperation::Reply => Inbound::ArpReply {
                vlan,
                eth_src,
                eth_dst,
                sender_mac: a.sender_mac,
                sender_ip: a.sender_ip,
                target_mac: a.target_mac,
                target_ip: a.target_ip,
            },
        },
        PayloadRepr::Icmpv4 { src, dst, icmp, .. } => match icmp {
            Icmpv4Repr::EchoRequest { ident, seq, data } => Inbound::EchoRequestV4 {
                vlan,
                eth_src,
                eth_dst,
                src_ip: src,
                dst_ip: dst,
                ident,
                seq,
                data,
            },
            Icmpv4Repr::EchoReply { .. } => Inbound::Other,
        },
        PayloadRepr::Icmpv6 {
            src,
            dst,
            hop_limit,
            icmp,
        } => {
            if src.is_multicast() {
                return Err(WireError::MulticastSource);
            }
            match icmp {
                Icmpv6Repr::EchoRequest { ident, seq, data } => Inbound::EchoRequestV6 {
                    vlan,
                    eth_src,
                    eth_dst,
                    src_ip: src,
                    dst_ip: dst,
                    ident,
                    seq,
                    data,
                },
                Icmpv6Repr::EchoReply { .. } => Inbound::Other,
                Icmpv6Repr::Ndisc(nd) => {
                    if hop_limit != NDP_HOP_LIMIT {
                        return Err(WireError::BadHopLimit(hop_limit));
                    }
                    match nd {
                        NdiscRepr::NeighborSolicit { target, lla } => {
                            if src.is_unspecified() {
                                if lla.is_some() {
                                    return Err(WireError::DadWithSourceLla);
                                }
                                if dst != solicited_node_multicast(target) {
                                    return Err(WireError::DadNotToSolicitedNode);
                                }
                            }
                            Inbound::NeighborSolicitation {
                                vlan,
                                eth_src,
                                eth_dst,
                                src_ip: src,
                                dst_ip: dst,
                                target,
                                source_lla: lla,
                            }
                        }
                        NdiscRepr::NeighborAdvert { flags, target, lla } => {
                            if dst.is_multicast() && flags.solicited {
                                return Err(WireError::SolicitedNaToMulticast);
                            }
                            Inbound::NeighborAdvertisement {
                                vlan,
                                eth_src,
                                eth_dst,
                                src_ip: src,
                                dst_ip: dst,
                                target,
                                target_lla: lla,
                                flags,
                            }
                        }
                    }
                }
            }
        }
    })
}

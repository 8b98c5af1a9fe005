//! Classification of a received frame into what the dataplane acts on.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::frame::{FrameRepr, PayloadRepr, NDP_HOP_LIMIT};
use super::icmpv4::Icmpv4Repr;
use super::icmpv6::Icmpv6Repr;
use super::ndp::{NaFlags, NdiscRepr};
use super::types::solicited_node_multicast;
use super::{ArpOperation, ArpRepr, Mac, VlanId, WireError};

/// A received ARP packet (request or reply) with the Ethernet header it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpMessage {
    /// 802.1Q VLAN id.
    pub vlan: Option<VlanId>,
    /// Ethernet source.
    pub eth_src: Mac,
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// ARP sender hardware address (who claims `sender_ip`).
    pub sender_mac: Mac,
    /// ARP sender protocol address (0.0.0.0 in an ARP probe).
    pub sender_ip: Ipv4Addr,
    /// ARP target hardware address (usually 00:00:00:00:00:00 in a request).
    pub target_mac: Mac,
    /// ARP target protocol address (the address being resolved, in a request).
    pub target_ip: Ipv4Addr,
}

/// A received Neighbor Solicitation, validated per RFC 4861 §7.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Solicitation {
    /// 802.1Q VLAN id.
    pub vlan: Option<VlanId>,
    /// Ethernet source.
    pub eth_src: Mac,
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// IPv6 source (`::` for duplicate address detection).
    pub src_ip: Ipv6Addr,
    /// IPv6 destination (solicited-node group, or the target itself for a unicast NUD probe).
    pub dst_ip: Ipv6Addr,
    /// Address being resolved.
    pub target: Ipv6Addr,
    /// Source Link-Layer Address option.
    pub source_lla: Option<Mac>,
}

/// A received Neighbor Advertisement, validated per RFC 4861 §7.1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Advertisement {
    /// 802.1Q VLAN id.
    pub vlan: Option<VlanId>,
    /// Ethernet source.
    pub eth_src: Mac,
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// IPv6 source.
    pub src_ip: Ipv6Addr,
    /// IPv6 destination.
    pub dst_ip: Ipv6Addr,
    /// Address advertised.
    pub target: Ipv6Addr,
    /// Target Link-Layer Address option.
    pub target_lla: Option<Mac>,
    /// R/S/O flags.
    pub flags: NaFlags,
}

/// A received ICMP (`A` = [`Ipv4Addr`]) or ICMPv6 (`A` = [`Ipv6Addr`]) echo request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EchoRequest<'a, A> {
    /// 802.1Q VLAN id.
    pub vlan: Option<VlanId>,
    /// Ethernet source.
    pub eth_src: Mac,
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// IP source.
    pub src_ip: A,
    /// IP destination.
    pub dst_ip: A,
    /// Identifier.
    pub ident: u16,
    /// Sequence number.
    pub seq: u16,
    /// Data to echo.
    pub data: &'a [u8],
}

/// A received frame, classified. `vlan` is the 802.1Q id the frame arrived with; replies
/// must carry the same tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inbound<'a> {
    /// ARP request (including probes with sender IP 0.0.0.0 and gratuitous requests).
    ArpRequest(ArpMessage),
    /// ARP reply (including gratuitous replies).
    ArpReply(ArpMessage),
    /// Neighbor Solicitation.
    NeighborSolicitation(Solicitation),
    /// Neighbor Advertisement.
    NeighborAdvertisement(Advertisement),
    /// ICMPv4 echo request.
    EchoRequestV4(EchoRequest<'a, Ipv4Addr>),
    /// ICMPv6 echo request.
    EchoRequestV6(EchoRequest<'a, Ipv6Addr>),
    /// A well-formed frame of a kind the dataplane does not act on (other EtherTypes, stacked
    /// VLAN tags, non-ICMP IP, IPv4 fragments, IPv6 extension headers, other ICMP types, echo replies).
    Other,
}

impl Inbound<'_> {
    /// The 802.1Q VLAN id of the frame (`None` for untagged frames and for [`Inbound::Other`]).
    pub fn vlan(&self) -> Option<VlanId> {
        match self {
            Inbound::ArpRequest(m) | Inbound::ArpReply(m) => m.vlan,
            Inbound::NeighborSolicitation(m) => m.vlan,
            Inbound::NeighborAdvertisement(m) => m.vlan,
            Inbound::EchoRequestV4(m) => m.vlan,
            Inbound::EchoRequestV6(m) => m.vlan,
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
        PayloadRepr::Arp(a) => {
            let message = |a: ArpRepr| ArpMessage {
                vlan,
                eth_src,
                eth_dst,
                sender_mac: a.sender_mac,
                sender_ip: a.sender_ip,
                target_mac: a.target_mac,
                target_ip: a.target_ip,
            };
            match a.operation {
                ArpOperation::Request => Inbound::ArpRequest(message(a)),
                ArpOperation::Reply => Inbound::ArpReply(message(a)),
            }
        }
        PayloadRepr::Icmpv4 { src, dst, icmp, .. } => match icmp {
            Icmpv4Repr::EchoRequest { ident, seq, data } => Inbound::EchoRequestV4(EchoRequest {
                vlan,
                eth_src,
                eth_dst,
                src_ip: src,
                dst_ip: dst,
                ident,
                seq,
                data,
            }),
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
                Icmpv6Repr::EchoRequest { ident, seq, data } => {
                    Inbound::EchoRequestV6(EchoRequest {
                        vlan,
                        eth_src,
                        eth_dst,
                        src_ip: src,
                        dst_ip: dst,
                        ident,
                        seq,
                        data,
                    })
                }
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
                            Inbound::NeighborSolicitation(Solicitation {
                                vlan,
                                eth_src,
                                eth_dst,
                                src_ip: src,
                                dst_ip: dst,
                                target,
                                source_lla: lla,
                            })
                        }
                        NdiscRepr::NeighborAdvert { flags, target, lla } => {
                            if dst.is_multicast() && flags.solicited {
                                return Err(WireError::SolicitedNaToMulticast);
                            }
                            Inbound::NeighborAdvertisement(Advertisement {
                                vlan,
                                eth_src,
                                eth_dst,
                                src_ip: src,
                                dst_ip: dst,
                                target,
                                target_lla: lla,
                                flags,
                            })
                        }
                    }
                }
            }
        }
    })
}

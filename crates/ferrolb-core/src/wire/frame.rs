//! Whole frames: [`FrameRepr`] parses and emits a complete Ethernet frame of every kind the
//! dataplane receives or sends (ARP, ICMP echo, ICMPv6 echo and NS / NA), 802.1Q tag included.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ethernet::{EtherType, EthernetFrame, EthernetRepr};
use super::icmpv4::Icmpv4Repr;
use super::icmpv6::Icmpv6Repr;
use super::ipv4::{Ipv4Packet, Ipv4Repr, PROTO_ICMP};
use super::ipv6::{Ipv6Packet, Ipv6Repr, NEXT_HEADER_ICMPV6};
use super::{ArpPacket, ArpRepr, Mac, VlanId, WireError};

/// Minimum Ethernet frame length without FCS; shorter frames are zero-padded (as the
/// Go `mdlayher/ethernet` library MetalLB uses does). Tagged frames get 4 more bytes so the
/// frame still meets the minimum when a switch strips the tag.
pub const MIN_FRAME_LEN: usize = 60;
/// Hop limit of IPv6 echo replies and TTL of IPv4 echo replies the dataplane sends.
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

    /// Writes the frame (checksums filled, zero padding up to [`FrameRepr::buffer_len`]) into
    /// `frame`, a view over a buffer of at least that many bytes; returns the frame length.
    ///
    /// ```
    /// # use std::net::Ipv4Addr;
    /// # use ferrolb_core::wire::{ArpOperation, ArpRepr, EthernetFrame, FrameRepr, Mac, PayloadRepr};
    /// let mac = Mac([2, 0, 0, 0, 0, 1]);
    /// let vip = Ipv4Addr::new(192, 168, 1, 240);
    /// let repr = FrameRepr {
    ///     src: mac,
    ///     dst: Mac::BROADCAST,
    ///     vlan: None,
    ///     payload: PayloadRepr::Arp(ArpRepr {
    ///         operation: ArpOperation::Request,
    ///         sender_mac: mac,
    ///         sender_ip: vip,
    ///         target_mac: Mac::BROADCAST,
    ///         target_ip: vip,
    ///     }),
    /// };
    /// let mut buf = [0u8; 64];
    /// let n = repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..])).unwrap();
    /// assert_eq!(n, 60);
    /// assert_eq!(FrameRepr::parse(&buf[..n]), Ok(repr));
    /// ```
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut EthernetFrame<T>,
    ) -> Result<usize, WireError> {
        let total = self.buffer_len();
        let got = frame.frame_len();
        if got < total {
            return Err(WireError::BufferTooSmall { needed: total, got });
        }
        let eth = self.ethernet();
        eth.emit(frame)?;
        let body_len = self.payload.len();
        let (body, padding) =
            frame.payload_mut()[..total - eth.header_len()].split_at_mut(body_len);
        match self.payload {
            PayloadRepr::Arp(a) => a.emit(&mut ArpPacket::new_unchecked(body))?,
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
                let (header, msg) = body.split_at_mut(ip.header_len());
                ip.emit(&mut Ipv4Packet::new_unchecked(header))?;
                icmp.emit(msg)?;
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
                let (header, msg) = body.split_at_mut(ip.header_len());
                ip.emit(&mut Ipv6Packet::new_unchecked(header))?;
                icmp.emit(&src, &dst, msg)?;
            }
        }
        padding.fill(0);
        Ok(total)
    }

    /// Emits into a new vector of exactly [`FrameRepr::buffer_len`] bytes.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut EthernetFrame::new_unchecked(&mut v[..]))?;
        Ok(v)
    }
}

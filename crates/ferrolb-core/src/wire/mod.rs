//! Pure, zero-copy parsing and emitting of the frames the L2 dataplane speaks:
//! Ethernet II (with one optional 802.1Q tag), ARP (Ethernet/IPv4), IPv6, ICMPv6
//! (Neighbor Solicitation / Advertisement, echo), and IPv4 + ICMPv4 echo.
//!
//! Layout follows smoltcp's `wire`: per protocol a `…Packet<T: AsRef<[u8]>>` view with a checked
//! constructor and field accessors, and a `…Repr` with `parse` and `emit`; a frame is sent by
//! filling in its [`FrameRepr`] and emitting it into a view over the caller's buffer
//! (`repr.emit(&mut EthernetFrame::new_unchecked(&mut buf))`), so a reply needs no allocation.
//! [`parse_inbound`] classifies a received frame into an [`Inbound`]. Nothing here does I/O,
//! allocates while parsing, or panics on input.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ndp;

mod frame;
mod inbound;
mod types;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr};
pub use frame::{
    FrameRepr, PayloadRepr, ALL_NODES, DEFAULT_HOP_LIMIT, MIN_FRAME_LEN, NDP_HOP_LIMIT,
};
pub use icmpv4::Icmpv4Repr;
pub use icmpv6::Icmpv6Repr;
pub use inbound::{parse_inbound, Advertisement, ArpMessage, EchoRequest, Inbound, Solicitation};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use ndp::{NaFlags, NdiscRepr};
pub use types::{
    ipv6_multicast_mac, solicited_node_multicast, solicited_node_multicast_mac, Mac, MacParseError,
    VlanId,
};

/// Why a frame could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the `layer` is complete.
    #[error("truncated {layer}: need {needed} bytes, have {got}")]
    Truncated {
        /// Protocol layer being read.
        layer: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// ARP for anything other than Ethernet/IPv4.
    #[error("unsupported ARP format htype={htype} ptype={ptype:#06x} hlen={hlen} plen={plen}")]
    UnsupportedArpFormat {
        /// Hardware type.
        htype: u16,
        /// Protocol type.
        ptype: u16,
        /// Hardware address length.
        hlen: u8,
        /// Protocol address length.
        plen: u8,
    },
    /// ARP operation other than request (1) or reply (2).
    #[error("unknown ARP operation {0}")]
    UnknownArpOperation(u16),
    /// IP version field does not match the EtherType.
    #[error("bad IP version {0}")]
    BadIpVersion(u8),
    /// EtherType this module does not model (after at most one 802.1Q tag).
    #[error("unsupported EtherType {0:#06x}")]
    UnsupportedEtherType(u16),
    /// IP protocol / IPv6 next header other than ICMP / ICMPv6.
    #[error("unsupported IP protocol {0}")]
    UnsupportedProtocol(u8),
    /// IPv4 IHL below 5.
    #[error("bad IPv4 header length {0}")]
    BadIpv4HeaderLength(usize),
    /// IPv4 total length smaller than its header.
    #[error("bad IPv4 total length {0}")]
    BadIpv4TotalLength(u16),
    /// IPv4 header checksum mismatch.
    #[error("bad IPv4 header checksum")]
    BadIpv4Checksum,
    /// IPv4 fragment (not reassembled).
    #[error("IPv4 fragment")]
    Ipv4Fragment,
    /// ICMP or ICMPv6 checksum mismatch.
    #[error("bad ICMP checksum")]
    BadIcmpChecksum,
    /// Non-zero code where the message requires 0.
    #[error("bad ICMP code {code} for type {msg_type}")]
    BadIcmpCode {
        /// Message type.
        msg_type: u8,
        /// Code found.
        code: u8,
    },
    /// ICMP / ICMPv6 message type this module does not model.
    #[error("unsupported ICMP type {0}")]
    UnsupportedIcmpType(u8),
    /// NDP message whose hop limit is not 255 (RFC 4861 §7.1: may have crossed a router).
    #[error("NDP hop limit {0}, must be 255")]
    BadHopLimit(u8),
    /// NDP option with length 0 (RFC 4861 §4.6: must be silently discarded).
    #[error("NDP option with length 0")]
    ZeroLengthOption,
    /// Link-layer address option whose length (in 8-byte units) is not 1 on Ethernet.
    #[error("link-layer address option of length {0} (units of 8 bytes), expected 1")]
    BadLinkLayerOption(u8),
    /// NDP target address is multicast.
    #[error("NDP target is a multicast address")]
    MulticastTarget,
    /// IPv6 source address is multicast.
    #[error("IPv6 source is a multicast address")]
    MulticastSource,
    /// DAD solicitation (source `::`) that carries a Source Link-Layer Address option.
    #[error("NS from the unspecified address carries a source link-layer address option")]
    DadWithSourceLla,
    /// DAD solicitation (source `::`) not sent to a solicited-node multicast address.
    #[error("NS from the unspecified address not sent to a solicited-node multicast address")]
    DadNotToSolicitedNode,
    /// NA with S=1 sent to a multicast address.
    #[error("solicited NA sent to a multicast address")]
    SolicitedNaToMulticast,
    /// The caller's buffer is too small for the frame.
    #[error("buffer too small: need {needed} bytes, have {got}")]
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// Payload too large for the IP length field.
    #[error("payload of {0} bytes does not fit the IP length field")]
    PayloadTooLarge(usize),
}

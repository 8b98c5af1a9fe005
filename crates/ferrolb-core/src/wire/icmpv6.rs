//! ICMPv6 (RFC 4443): checksum over the IPv6 pseudo-header, echo, and NDP via [`super::ndp`].

use std::net::Ipv6Addr;

use super::ipv6::NEXT_HEADER_ICMPV6;
use super::ndp::{NdiscRepr, TYPE_NEIGHBOR_ADVERT, TYPE_NEIGHBOR_SOLICIT};
use super::{checksum, WireError};

/// Type of an echo request.
pub const TYPE_ECHO_REQUEST: u8 = 128;
/// Type of an echo reply.
pub const TYPE_ECHO_REPLY: u8 = 129;
/// Length of the echo header.
pub const ECHO_HEADER_LEN: usize = 8;

/// Sums `msg` with the IPv6 pseudo-header; 0xffff when the embedded checksum is right.
fn folded_sum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    // An ICMPv6 message longer than u32::MAX cannot exist; saturate instead of panicking.
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    let pseudo = checksum::ipv6_pseudo_header(src, dst, NEXT_HEADER_ICMPV6, len);
    checksum::fold(checksum::combine(pseudo, checksum::sum(msg)))
}

/// Whether the checksum of the ICMPv6 message `msg` (the IPv6 payload) is correct.
pub fn verify_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> bool {
    msg.len() >= 4 && folded_sum(src, dst, msg) == 0xffff
}

/// Computes and stores the checksum of `msg` (whose checksum field may hold anything).
/// Does nothing if `msg` is shorter than 4 bytes.
pub fn fill_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &mut [u8]) {
    if msg.len() < 4 {
        return;
    }
    msg[2] = 0;
    msg[3] = 0;
    let c = !folded_sum(src, dst, msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
}

/// A parsed ICMPv6 message ferrolb understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv6Repr<'a> {
    /// Echo request (128).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Data to echo back.
        data: &'a [u8],
    },
    /// Echo reply (129).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Echoed data.
        data: &'a [u8],
    },
    /// Neighbor Solicitation / Advertisement.
    Ndisc(NdiscRepr),
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses the ICMPv6 message `msg` (the whole IPv6 payload) sent from `src` to `dst`,
    /// verifying the checksum first.
    pub fn parse(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &'a [u8]) -> Result<Self, WireError> {
        if msg.len() < 4 {
            return Err(WireError::Truncated {
                layer: "icmpv6",
                needed: 4,
                got: msg.len(),
            });
        }
        if !verify_checksum(src, dst, msg) {
            return Err(WireError::BadIcmpChecksum);
        }
        let (msg_type, code) = (msg[0], msg[1]);
        match msg_type {
            TYPE_ECHO_REQUEST | TYPE_ECHO_REPLY => {
                if msg.len() < ECHO_HEADER_LEN {
                    return Err(WireError::Truncated {
                        layer: "icmpv6 echo",
                        needed: ECHO_HEADER_LEN,
                        got: msg.len(),
                    });
                }
                if code != 0 {
                    return Err(WireError::BadIcmpCode { msg_type, code });
                }
                let ident = u16::from_be_bytes([msg[4], msg[5]]);
                let seq = u16::from_be_bytes([msg[6], msg[7]]);
                let data = &msg[ECHO_HEADER_LEN..];
                Ok(if msg_type == TYPE_ECHO_REQUEST {
                    Icmpv6Repr::EchoRequest { ident, seq, data }
                } else {
                    Icmpv6Repr::EchoReply { ident, seq, data }
                })
            }
            TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT => {
                Ok(Icmpv6Repr::Ndisc(NdiscRepr::parse(msg)?))
            }
            other => Err(WireError::UnsupportedIcmpType(other)),
        }
    }

    /// Bytes [`Icmpv6Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => {
                ECHO_HEADER_LEN + data.len()
            }
            Icmpv6Repr::Ndisc(n) => n.buffer_len(),
        }
    }

    /// Writes the message, checksum included, at the start of `buf`.
    pub fn emit(&self, src: &Ipv6Addr, dst: &Ipv6Addr, buf: &mut [u8]) -> Result<(), WireError> {
        let need = self.buffer_len();
        if buf.len() < need {
            return Err(WireError::BufferTooSmall {
                needed: need,
                got: buf.len(),
            });
        }
        let buf = &mut buf[..need];
        match *self {
            Icmpv6Repr::EchoRequest { ident, seq, data }
            | Icmpv6Repr::EchoReply { ident, seq, data } => {
                buf[0] = if matches!(self, Icmpv6Repr::EchoRequest { .. }) {
                    TYPE_ECHO_REQUEST
                } else {
                    TYPE_ECHO_REPLY
                };
                buf[1] = 0;
                buf[4..6].copy_from_slice(&ident.to_be_bytes());
                buf[6..8].copy_from_slice(&seq.to_be_bytes());
                buf[8..].copy_from_slice(data);
            }
            Icmpv6Repr::Ndisc(n) => n.emit(buf)?,
        }
        fill_checksum(src, dst, buf);
        Ok(())
    }
}

//! ICMPv4 echo request / reply (RFC 792), the only ICMP messages ferrolb answers.

use super::{checksum, WireError};

/// Length of the echo header (type, code, checksum, identifier, sequence).
pub const ECHO_HEADER_LEN: usize = 8;
/// Type of an echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Type of an echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;

/// A parsed ICMPv4 echo message borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Repr<'a> {
    /// Echo request (type 8).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Data to echo back.
        data: &'a [u8],
    },
    /// Echo reply (type 0).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Echoed data.
        data: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses an ICMPv4 message (the whole IPv4 payload). Verifies the checksum; only echo
    /// request/reply with code 0 are accepted.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.len() < ECHO_HEADER_LEN {
            return Err(WireError::Truncated {
                layer: "icmpv4",
                needed: ECHO_HEADER_LEN,
                got: bytes.len(),
            });
        }
        if checksum::fold(checksum::sum(bytes)) != 0xffff {
            return Err(WireError::BadIcmpChecksum);
        }
        let (msg_type, code) = (bytes[0], bytes[1]);
        let ident = u16::from_be_bytes([bytes[4], bytes[5]]);
        let seq = u16::from_be_bytes([bytes[6], bytes[7]]);
        let data = &bytes[ECHO_HEADER_LEN..];
        match (msg_type, code) {
            (TYPE_ECHO_REQUEST, 0) => Ok(Icmpv4Repr::EchoRequest { ident, seq, data }),
            (TYPE_ECHO_REPLY, 0) => Ok(Icmpv4Repr::EchoReply { ident, seq, data }),
            (TYPE_ECHO_REQUEST | TYPE_ECHO_REPLY, _) => {
                Err(WireError::BadIcmpCode { msg_type, code })
            }
            _ => Err(WireError::UnsupportedIcmpType(msg_type)),
        }
    }

    /// Bytes [`Icmpv4Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => {
                ECHO_HEADER_LEN + data.len()
            }
        }
    }

    /// Writes the message with its checksum at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let need = self.buffer_len();
        if buf.len() < need {
            return Err(WireError::BufferTooSmall {
                needed: need,
                got: buf.len(),
            });
        }
        let (t, ident, seq, data) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq, data } => (TYPE_ECHO_REQUEST, ident, seq, data),
            Icmpv4Repr::EchoReply { ident, seq, data } => (TYPE_ECHO_REPLY, ident, seq, data),
        };
        let buf = &mut buf[..need];
        buf[0] = t;
        buf[1] = 0;
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..6].copy_from_slice(&ident.to_be_bytes());
        buf[6..8].copy_from_slice(&seq.to_be_bytes());
        buf[8..].copy_from_slice(data);
        let c = checksum::checksum(buf);
        buf[2..4].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo request id 1 seq 1 with data "abcd", checksum by hand:
    /// 0x0800 + 0x0001 + 0x0001 + 0x6162 + 0x6364 = 0xccc8, checksum = !0xccc8 = 0x3337.
    const REQUEST: [u8; 12] = [
        0x08, 0x00, 0x33, 0x37, 0x00, 0x01, 0x00, 0x01, b'a', b'b', b'c', b'd',
    ];

    #[test]
    fn checksum_known_answer() {
        let r = Icmpv4Repr::parse(&REQUEST).unwrap();
        assert_eq!(
            r,
            Icmpv4Repr::EchoRequest {
                ident: 1,
                seq: 1,
                data: b"abcd"
            }
        );
        let mut out = [0u8; 12];
        r.emit(&mut out).unwrap();
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn errors() {
        let mut bad = REQUEST;
        bad[3] ^= 0xff;
        assert_eq!(Icmpv4Repr::parse(&bad), Err(WireError::BadIcmpChecksum));
        assert!(matches!(
            Icmpv4Repr::parse(&REQUEST[..7]),
            Err(WireError::Truncated { .. })
        ));
        // Destination unreachable with a valid checksum.
        let mut unreach = [3u8, 1, 0, 0, 0, 0, 0, 0];
        let c = checksum::checksum(&unreach);
        unreach[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            Icmpv4Repr::parse(&unreach),
            Err(WireError::UnsupportedIcmpType(3))
        );
    }
}

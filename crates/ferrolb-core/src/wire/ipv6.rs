//! IPv6 fixed header (RFC 8200). Extension headers are not walked: callers treat any
//! `next_header` other than the one they expect as "not for us".

use std::net::Ipv6Addr;

use super::WireError;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;

mod field {
    use std::ops::Range;
    pub const VER_TC_FL: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// A view of an IPv6 packet, read by its accessors and written by [`Ipv6Repr::emit`].
/// Accessors never panic on a view made by `new_checked`.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after checking version and payload length. Bytes past the payload
    /// (Ethernet padding) are allowed and ignored.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks version and lengths.
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: "ipv6",
                needed: HEADER_LEN,
                got: len,
            });
        }
        if self.version() != 6 {
            return Err(WireError::BadIpVersion(self.version()));
        }
        let need = HEADER_LEN + usize::from(self.payload_len());
        if len < need {
            return Err(WireError::Truncated {
                layer: "ipv6",
                needed: need,
                got: len,
            });
        }
        Ok(())
    }

    fn addr_at(&self, r: std::ops::Range<usize>) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[r]);
        Ipv6Addr::from(a)
    }

    /// IP version (6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = &self.buffer.as_ref()[field::VER_TC_FL];
        (b[0] << 4) | (b[1] >> 4)
    }
    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FL];
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }
    /// Payload length field.
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        u16::from_be_bytes([b[0], b[1]])
    }
    /// Next header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        self.addr_at(field::SRC)
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        self.addr_at(field::DST)
    }
    /// The payload, bounded by the payload length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

/// High-level representation of the IPv6 fixed header (emitted with traffic class and flow label 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    pub next_header: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Parses a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Self, WireError> {
        p.check()?;
        Ok(Ipv6Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
        })
    }

    /// Header length emitted.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `packet` (a view over a buffer of at least [`HEADER_LEN`] bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Ipv6Packet<T>,
    ) -> Result<(), WireError> {
        let len = u16::try_from(self.payload_len)
            .map_err(|_| WireError::PayloadTooLarge(self.payload_len))?;
        let buf = packet.buffer.as_mut();
        if buf.len() < HEADER_LEN {
            return Err(WireError::BufferTooSmall {
                needed: HEADER_LEN,
                got: buf.len(),
            });
        }
        buf[field::VER_TC_FL].copy_from_slice(&[0x60, 0, 0, 0]);
        buf[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
        buf[field::NEXT_HEADER] = self.next_header;
        buf[field::HOP_LIMIT] = self.hop_limit;
        buf[field::SRC].copy_from_slice(&self.src.octets());
        buf[field::DST].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut v = vec![
            0x6a, 0xb1, 0x23, 0x45, // version 6, tc 0xab, flow 0x12345
            0x00, 0x04, // payload length 4
            58, 255, // ICMPv6, hop limit
        ];
        v.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(&"ff02::1:ff00:a".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(&[1, 2, 3, 4, 0, 0]); // payload + 2 bytes padding
        v
    }

    #[test]
    fn parses_fields() {
        let v = header();
        let p = Ipv6Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xab);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        let r = Ipv6Repr::parse(&p).unwrap();
        assert_eq!(r.src, "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(r.dst, "ff02::1:ff00:a".parse::<Ipv6Addr>().unwrap());
        assert_eq!(r.next_header, 58);
        assert_eq!(r.hop_limit, 255);
        assert_eq!(r.payload_len, 4);
    }

    #[test]
    fn errors() {
        let v = header();
        assert!(matches!(
            Ipv6Packet::new_checked(&v[..39]),
            Err(WireError::Truncated { needed: 40, .. })
        ));
        assert!(matches!(
            Ipv6Packet::new_checked(&v[..43]),
            Err(WireError::Truncated { needed: 44, .. })
        ));
        let mut w = v;
        w[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&w[..]).err(),
            Some(WireError::BadIpVersion(4))
        );
    }

    #[test]
    fn emit_checks_room_and_length() {
        let r = Ipv6Repr {
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1:ff00:a".parse().unwrap(),
            next_header: 58,
            payload_len: 4,
            hop_limit: 255,
        };
        let mut buf = [0u8; 40];
        r.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        let mut v = buf.to_vec();
        v.extend_from_slice(&[1, 2, 3, 4]);
        let p = Ipv6Packet::new_checked(&v[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), Ok(r));
        assert!(matches!(
            r.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..39])),
            Err(WireError::BufferTooSmall {
                needed: 40,
                got: 39
            })
        ));
        let huge = Ipv6Repr {
            payload_len: 65536,
            ..r
        };
        assert_eq!(
            huge.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..])),
            Err(WireError::PayloadTooLarge(65536))
        );
    }
}

//! IPv4 header (RFC 791), just enough to answer ICMP echo.

use std::net::Ipv4Addr;

use super::{checksum, WireError};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// A view of an IPv4 packet, read by its accessors and written by [`Ipv4Repr::emit`].
/// Accessors never panic on a view made by `new_checked`.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after checking version, header length and total length.
    /// Bytes past the total length (Ethernet padding) are allowed and ignored.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks the length fields against the buffer.
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: "ipv4",
                needed: HEADER_LEN,
                got: len,
            });
        }
        if self.version() != 4 {
            return Err(WireError::BadIpVersion(self.version()));
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::BadIpv4HeaderLength(hl));
        }
        let total = usize::from(self.total_len());
        if total < hl {
            return Err(WireError::BadIpv4TotalLength(self.total_len()));
        }
        if len < total {
            return Err(WireError::Truncated {
                layer: "ipv4",
                needed: total,
                got: len,
            });
        }
        Ok(())
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// IP version (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// Total length field.
    pub fn total_len(&self) -> u16 {
        self.u16_at(field::TOTAL_LEN)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }
    /// More-fragments flag.
    pub fn more_fragments(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & 0x2000 != 0
    }
    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.u16_at(field::FLAGS_FRAG) & 0x1fff
    }
    /// Whether this packet is a fragment (MF set or non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.frag_offset() != 0
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    /// Protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }
    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    /// Whether the header checksum is valid.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.buffer.as_ref()[..self.header_len()])) == 0xffff
    }
    /// The payload, bounded by the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

/// High-level representation of an IPv4 header (emitted without options, DF set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number of the payload.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Parses and validates (checksum, no fragments) a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self, WireError> {
        p.check()?;
        if !p.verify_checksum() {
            return Err(WireError::BadIpv4Checksum);
        }
        if p.is_fragment() {
            return Err(WireError::Ipv4Fragment);
        }
        Ok(Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            payload_len: p.payload().len(),
        })
    }

    /// Header length emitted.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header, checksum included, into `packet` (a view over a buffer of at least
    /// [`HEADER_LEN`] bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Ipv4Packet<T>,
    ) -> Result<(), WireError> {
        let total = HEADER_LEN + self.payload_len;
        let total16 = u16::try_from(total).map_err(|_| WireError::PayloadTooLarge(total))?;
        let buf = packet.buffer.as_mut();
        if buf.len() < HEADER_LEN {
            return Err(WireError::BufferTooSmall {
                needed: HEADER_LEN,
                got: buf.len(),
            });
        }
        buf[field::VER_IHL] = 0x45;
        buf[1] = 0;
        buf[field::TOTAL_LEN].copy_from_slice(&total16.to_be_bytes());
        buf[field::IDENT].copy_from_slice(&[0, 0]);
        buf[field::FLAGS_FRAG].copy_from_slice(&0x4000u16.to_be_bytes());
        buf[field::TTL] = self.ttl;
        buf[field::PROTOCOL] = self.protocol;
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        buf[field::SRC].copy_from_slice(&self.src.octets());
        buf[field::DST].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(&buf[..HEADER_LEN]);
        buf[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The well-known header from the Wikipedia "IPv4 header checksum" example: checksum 0xb861.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn packet() -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.resize(0x73, 0xee);
        v
    }

    #[test]
    fn checksum_known_answer() {
        let mut h = HEADER;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum::checksum(&h), 0xb861);
        let v = packet();
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert!(p.verify_checksum());
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(r.src, Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(r.dst, Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(r.protocol, 17);
        assert_eq!(r.payload_len, 0x73 - 20);
    }

    #[test]
    fn emit_reproduces_known_header() {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 199),
            protocol: 17,
            ttl: 64,
            payload_len: 0x73 - 20,
        };
        let mut buf = [0u8; 20];
        r.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, HEADER);
        let mut short = [0u8; 19];
        assert!(matches!(
            r.emit(&mut Ipv4Packet::new_unchecked(&mut short[..])),
            Err(WireError::BufferTooSmall {
                needed: 20,
                got: 19
            })
        ));
    }

    #[test]
    fn bad_checksum_is_error() {
        let mut v = packet();
        v[11] ^= 1;
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadIpv4Checksum));
    }

    #[test]
    fn length_errors() {
        let v = packet();
        assert!(matches!(
            Ipv4Packet::new_checked(&v[..0x72]),
            Err(WireError::Truncated { .. })
        ));
        let mut w = v.clone();
        w[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&w[..]).err(),
            Some(WireError::BadIpv4HeaderLength(16))
        );
        let mut w = v.clone();
        w[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&w[..]).err(),
            Some(WireError::BadIpVersion(6))
        );
        let mut w = v.clone();
        w[2] = 0;
        w[3] = 10;
        assert_eq!(
            Ipv4Packet::new_checked(&w[..]).err(),
            Some(WireError::BadIpv4TotalLength(10))
        );
        let mut w = v;
        w[0] = 0x4f; // 60-byte header
        assert!(Ipv4Packet::new_checked(&w[..]).is_ok());
    }

    #[test]
    fn fragments_are_rejected() {
        let mut v = packet();
        v[6] = 0x20; // MF
        v[10] = 0;
        v[11] = 0;
        let c = checksum::checksum(&v[..20]);
        v[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::Ipv4Fragment));
    }
}

//! ARP for Ethernet / IPv4 only (RFC 826): htype 1, ptype 0x0800, hlen 6, plen 4.
//!
//! ```text
//! | htype (2) | ptype (2) | hlen (1) | plen (1) | oper (2) |
//! | sender hw (6) | sender ip (4) | target hw (6) | target ip (4) |   = 28 bytes
//! ```

use std::net::Ipv4Addr;

use super::{Mac, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type IPv4.
pub const PTYPE_IPV4: u16 = 0x0800;

mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1: request.
    Request,
    /// 2: reply.
    Reply,
}

impl ArpOperation {
    /// Wire value.
    pub const fn code(self) -> u16 {
        match self {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
        }
    }
}

/// A read/write view of an ARP packet. Accessors never panic on a view made by `new_checked`.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checks: accessors may panic if it is shorter than [`PACKET_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps a buffer after checking its length and the Ethernet/IPv4 format fields.
    /// Trailing bytes (Ethernet padding) are allowed and ignored.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks length and format (htype 1 / ptype 0x0800 / hlen 6 / plen 4).
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        // The fixed part (up to plen) must be present to even read the format.
        if len < 8 {
            return Err(WireError::Truncated {
                layer: "arp",
                needed: 8,
                got: len,
            });
        }
        let (htype, ptype, hlen, plen) = (self.htype(), self.ptype(), self.hlen(), self.plen());
        if htype != HTYPE_ETHERNET || ptype != PTYPE_IPV4 || hlen != 6 || plen != 4 {
            return Err(WireError::UnsupportedArpFormat {
                htype,
                ptype,
                hlen,
                plen,
            });
        }
        if len < PACKET_LEN {
            return Err(WireError::Truncated {
                layer: "arp",
                needed: PACKET_LEN,
                got: len,
            });
        }
        Ok(())
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn mac_at(&self, r: std::ops::Range<usize>) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[r]);
        Mac(m)
    }

    fn ip_at(&self, r: std::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Hardware type.
    pub fn htype(&self) -> u16 {
        self.u16_at(field::HTYPE)
    }
    /// Protocol type.
    pub fn ptype(&self) -> u16 {
        self.u16_at(field::PTYPE)
    }
    /// Hardware address length.
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    /// Protocol address length.
    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }
    /// Raw operation code.
    pub fn oper(&self) -> u16 {
        self.u16_at(field::OPER)
    }
    /// Sender hardware address.
    pub fn sender_mac(&self) -> Mac {
        self.mac_at(field::SHA)
    }
    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.ip_at(field::SPA)
    }
    /// Target hardware address.
    pub fn target_mac(&self) -> Mac {
        self.mac_at(field::THA)
    }
    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        self.ip_at(field::TPA)
    }
}

/// The setters write into a view made by [`ArpPacket::new_unchecked`] over at least
/// [`PACKET_LEN`] bytes (what [`ArpRepr::emit`] checks); they panic on a shorter buffer.
impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the Ethernet/IPv4 format: htype 1, ptype 0x0800, hlen 6, plen 4.
    pub fn set_format(&mut self) {
        let b = self.buffer.as_mut();
        b[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }
    /// Sets the operation code.
    pub fn set_oper(&mut self, oper: u16) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&oper.to_be_bytes());
    }
    /// Sets the sender hardware and protocol addresses.
    pub fn set_sender(&mut self, mac: Mac, ip: Ipv4Addr) {
        let b = self.buffer.as_mut();
        b[field::SHA].copy_from_slice(&mac.0);
        b[field::SPA].copy_from_slice(&ip.octets());
    }
    /// Sets the target hardware and protocol addresses.
    pub fn set_target(&mut self, mac: Mac, ip: Ipv4Addr) {
        let b = self.buffer.as_mut();
        b[field::THA].copy_from_slice(&mac.0);
        b[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// High-level representation of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request or reply.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address (0.0.0.0 in an ARP probe).
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses an ARP packet (format checked, unknown operations are an error).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let p = ArpPacket::new_checked(bytes)?;
        let operation = match p.oper() {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => return Err(WireError::UnknownArpOperation(other)),
        };
        Ok(ArpRepr {
            operation,
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        })
    }

    /// Bytes [`ArpRepr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet into `packet` (a view over a buffer of at least [`PACKET_LEN`] bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut ArpPacket<T>,
    ) -> Result<(), WireError> {
        let got = packet.buffer.as_ref().len();
        if got < PACKET_LEN {
            return Err(WireError::BufferTooSmall {
                needed: PACKET_LEN,
                got,
            });
        }
        packet.set_format();
        packet.set_oper(self.operation.code());
        packet.set_sender(self.sender_mac, self.sender_ip);
        packet.set_target(self.target_mac, self.target_ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ARP request "who has 192.168.1.1? tell 192.168.1.100", as RFC 826 lays it out.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, // htype Ethernet
        0x08, 0x00, // ptype IPv4
        0x06, 0x04, // hlen, plen
        0x00, 0x01, // request
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // sha
        192, 168, 1, 100, // spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha (unknown)
        192, 168, 1, 1, // tpa
    ];

    #[test]
    fn parses_request() {
        let r = ArpRepr::parse(&REQUEST).unwrap();
        assert_eq!(
            r,
            ArpRepr {
                operation: ArpOperation::Request,
                sender_mac: Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                sender_ip: Ipv4Addr::new(192, 168, 1, 100),
                target_mac: Mac::ZERO,
                target_ip: Ipv4Addr::new(192, 168, 1, 1),
            }
        );
        let mut out = [0u8; 28];
        r.emit(&mut ArpPacket::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, REQUEST);
        let mut short = [0u8; 27];
        assert_eq!(
            r.emit(&mut ArpPacket::new_unchecked(&mut short[..])),
            Err(WireError::BufferTooSmall {
                needed: 28,
                got: 27
            })
        );
    }

    #[test]
    fn padding_is_ignored() {
        let mut padded = REQUEST.to_vec();
        padded.extend_from_slice(&[0u8; 18]);
        assert_eq!(ArpRepr::parse(&padded), ArpRepr::parse(&REQUEST));
    }

    #[test]
    fn rejects_other_formats() {
        let cases: [(usize, u8); 5] = [(1, 6), (2, 0x86), (3, 0xdd), (4, 8), (5, 16)];
        for (idx, val) in cases {
            let mut p = REQUEST;
            p[idx] = val;
            assert!(
                matches!(
                    ArpRepr::parse(&p),
                    Err(WireError::UnsupportedArpFormat { .. })
                ),
                "byte {idx}"
            );
        }
    }

    #[test]
    fn rejects_unknown_operation() {
        let mut p = REQUEST;
        p[7] = 3; // RARP request
        assert_eq!(ArpRepr::parse(&p), Err(WireError::UnknownArpOperation(3)));
    }

    #[test]
    fn truncated_is_error() {
        for n in 0..PACKET_LEN {
            assert!(
                matches!(
                    ArpRepr::parse(&REQUEST[..n]),
                    Err(WireError::Truncated { .. })
                ),
                "len {n}"
            );
        }
    }
}

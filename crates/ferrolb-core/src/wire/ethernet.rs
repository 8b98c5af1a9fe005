//! Ethernet II frames, optionally carrying one IEEE 802.1Q VLAN tag.
//!
//! ```text
//! untagged: | dst (6) | src (6) | ethertype (2) | payload ...
//! tagged:   | dst (6) | src (6) | 0x8100 (2) | TCI: PCP(3) DEI(1) VID(12) | ethertype (2) | payload ...
//! ```

use super::{Mac, VlanId, WireError};

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of one 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;

/// EtherType values this crate cares about; any other value is carried as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4, 0x0800.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP, 0x0806.
    pub const ARP: EtherType = EtherType(0x0806);
    /// IEEE 802.1Q customer VLAN tag, 0x8100.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IEEE 802.1ad service VLAN tag (QinQ), 0x88a8.
    pub const QINQ: EtherType = EtherType(0x88a8);
    /// IPv6, 0x86dd.
    pub const IPV6: EtherType = EtherType(0x86dd);
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const TCI: Range<usize> = 14..16;
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
}

/// A read/write view of an Ethernet II frame in a byte buffer.
///
/// Accessors never panic on a view made by [`EthernetFrame::new_checked`].
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking its length: accessors may panic if it is too short.
    /// Use only for buffers sized by [`EthernetRepr::header_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer after checking that it holds a full header (including the VLAN tag if present).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the whole header.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: "ethernet",
                needed: HEADER_LEN,
                got: len,
            });
        }
        let need = self.header_len();
        if len < need {
            return Err(WireError::Truncated {
                layer: "802.1q",
                needed: need,
                got: len,
            });
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the whole buffer (header, payload and any padding).
    pub fn frame_len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    fn mac_at(&self, r: std::ops::Range<usize>) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[r]);
        Mac(m)
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Destination MAC address.
    pub fn dst(&self) -> Mac {
        self.mac_at(field::DST)
    }

    /// Source MAC address.
    pub fn src(&self) -> Mac {
        self.mac_at(field::SRC)
    }

    /// The EtherType right after the addresses (0x8100 for a tagged frame).
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType(self.u16_at(field::ETHERTYPE))
    }

    /// Whether the frame carries an 802.1Q tag.
    pub fn is_tagged(&self) -> bool {
        self.outer_ethertype() == EtherType::VLAN
    }

    /// The 802.1Q Tag Control Information (PCP, DEI, VID), if tagged.
    pub fn tci(&self) -> Option<u16> {
        self.is_tagged().then(|| self.u16_at(field::TCI))
    }

    /// The VLAN id of the 802.1Q tag, if tagged.
    pub fn vlan(&self) -> Option<VlanId> {
        self.tci().map(VlanId::from_tci)
    }

    /// The EtherType of the payload (the inner one for a tagged frame).
    pub fn ethertype(&self) -> EtherType {
        if self.is_tagged() {
            EtherType(self.u16_at(field::INNER_ETHERTYPE))
        } else {
            self.outer_ethertype()
        }
    }

    /// Header length: 14, or 18 with an 802.1Q tag.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The payload (everything after the header, including any Ethernet padding).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// The setters write into a view made by [`EthernetFrame::new_unchecked`] over a buffer of at
/// least [`EthernetRepr::header_len`] bytes (what [`EthernetRepr::emit`] checks); they panic on a
/// shorter one.
impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac.0);
    }

    /// Sets the source MAC address.
    pub fn set_src(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac.0);
    }

    /// Writes the type fields: an 802.1Q tag (PCP 0, DEI 0) when `vlan` is set, then `ethertype`.
    pub fn set_ethertype(&mut self, vlan: Option<VlanId>, ethertype: EtherType) {
        let buf = self.buffer.as_mut();
        match vlan {
            Some(v) => {
                buf[field::ETHERTYPE].copy_from_slice(&EtherType::VLAN.0.to_be_bytes());
                buf[field::TCI].copy_from_slice(&v.get().to_be_bytes());
                buf[field::INNER_ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
            }
            None => buf[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes()),
        }
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// High-level representation of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Source MAC.
    pub src: Mac,
    /// Destination MAC.
    pub dst: Mac,
    /// VLAN id of the 802.1Q tag, `None` for an untagged frame.
    pub vlan: Option<VlanId>,
    /// EtherType of the payload (inner EtherType when tagged).
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Parses the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self, WireError> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src: frame.src(),
            dst: frame.dst(),
            vlan: frame.vlan(),
            ethertype: frame.ethertype(),
        })
    }

    /// Header length this representation emits.
    pub const fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header into `frame` (a view over a buffer of at least
    /// [`EthernetRepr::header_len`] bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut EthernetFrame<T>,
    ) -> Result<(), WireError> {
        let need = self.header_len();
        let got = frame.frame_len();
        if got < need {
            return Err(WireError::BufferTooSmall { needed: need, got });
        }
        frame.set_dst(self.dst);
        frame.set_src(self.src);
        frame.set_ethertype(self.vlan, self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb,
    ];

    const TAGGED: [u8; 20] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x0a, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x64, // PCP 5, DEI 0, VID 100
        0x86, 0xdd, // IPv6
        0xaa, 0xbb,
    ];

    #[test]
    fn parses_untagged() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        let r = EthernetRepr::parse(&f).unwrap();
        assert_eq!(r.dst, Mac::BROADCAST);
        assert_eq!(r.src, Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(r.vlan, None);
        assert_eq!(r.ethertype, EtherType::ARP);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn parses_tagged_and_masks_pcp() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        let r = EthernetRepr::parse(&f).unwrap();
        assert_eq!(r.vlan, VlanId::new(100));
        assert_eq!(f.tci(), Some(0xa064));
        assert_eq!(r.ethertype, EtherType::IPV6);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn truncated_headers_are_errors() {
        for n in 0..HEADER_LEN {
            assert!(matches!(
                EthernetFrame::new_checked(&UNTAGGED[..n]),
                Err(WireError::Truncated {
                    layer: "ethernet",
                    ..
                })
            ));
        }
        for n in HEADER_LEN..HEADER_LEN + VLAN_TAG_LEN {
            assert!(matches!(
                EthernetFrame::new_checked(&TAGGED[..n]),
                Err(WireError::Truncated {
                    layer: "802.1q",
                    ..
                })
            ));
        }
    }

    #[test]
    fn emit_matches_vectors() {
        let mut buf = [0u8; 18];
        let r = EthernetRepr {
            src: Mac([2, 0, 0, 0, 0, 1]),
            dst: Mac([0x33, 0x33, 0xff, 0, 0, 0x0a]),
            vlan: VlanId::new(100),
            ethertype: EtherType::IPV6,
        };
        r.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
            .unwrap();
        // Emitted tags carry PCP 0.
        let mut expected = TAGGED;
        expected[14] = 0x00;
        assert_eq!(&buf[..], &expected[..18]);
        let mut small = [0u8; 17];
        assert!(matches!(
            r.emit(&mut EthernetFrame::new_unchecked(&mut small[..])),
            Err(WireError::BufferTooSmall {
                needed: 18,
                got: 17
            })
        ));
    }
}

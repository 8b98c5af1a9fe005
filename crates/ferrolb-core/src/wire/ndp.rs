//! Neighbor Discovery (RFC 4861 §4.3, §4.4, §4.6.1): Neighbor Solicitation and Neighbor
//! Advertisement with Source/Target Link-Layer Address options.
//!
//! ```text
//! | type (1) | code (1) | checksum (2) | flags+reserved (4) | target (16) | options ...
//! option: | type (1) | length in 8-byte units (1) | data ... |
//! ```

use std::net::Ipv6Addr;

use super::{Mac, WireError};

/// ICMPv6 type of a Neighbor Solicitation.
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement.
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Length of an NS/NA message without options.
pub const MESSAGE_LEN: usize = 24;
/// Option type: Source Link-Layer Address.
pub const OPT_SOURCE_LLA: u8 = 1;
/// Option type: Target Link-Layer Address.
pub const OPT_TARGET_LLA: u8 = 2;
/// Length of a link-layer address option for Ethernet.
pub const LLA_OPTION_LEN: usize = 8;

/// Flags of a Neighbor Advertisement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NaFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a solicitation.
    pub solicited: bool,
    /// O: override an existing cache entry.
    pub override_: bool,
}

impl NaFlags {
    fn from_byte(b: u8) -> Self {
        NaFlags {
            router: b & 0x80 != 0,
            solicited: b & 0x40 != 0,
            override_: b & 0x20 != 0,
        }
    }

    fn to_byte(self) -> u8 {
        (u8::from(self.router) << 7)
            | (u8::from(self.solicited) << 6)
            | (u8::from(self.override_) << 5)
    }
}

/// One raw option: type and data (the bytes after the type/length pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    /// Option type.
    pub kind: u8,
    /// Length field in 8-byte units (never 0).
    pub len_units: u8,
    /// Option data (`len_units * 8 - 2` bytes).
    pub data: &'a [u8],
}

/// Iterator over NDP options; yields an error (and then stops) on a zero-length or truncated option.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> OptionIter<'a> {
    /// Iterates over the options in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        OptionIter {
            rest: bytes,
            failed: false,
        }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<RawOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let fail = |s: &mut Self, e| {
            s.failed = true;
            Some(Err(e))
        };
        let [kind, len_units, ..] = *self.rest else {
            return fail(
                self,
                WireError::Truncated {
                    layer: "ndp option",
                    needed: 2,
                    got: self.rest.len(),
                },
            );
        };
        if len_units == 0 {
            return fail(self, WireError::ZeroLengthOption);
        }
        let len = usize::from(len_units) * 8;
        if self.rest.len() < len {
            return fail(
                self,
                WireError::Truncated {
                    layer: "ndp option",
                    needed: len,
                    got: self.rest.len(),
                },
            );
        }
        let (opt, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(Ok(RawOption {
            kind,
            len_units,
            data: &opt[2..],
        }))
    }
}

/// Finds the first link-layer address option of type `kind`, validating every option's length.
/// Unknown options are skipped (RFC 4861 §4.6).
fn find_lla(options: &[u8], kind: u8) -> Result<Option<Mac>, WireError> {
    let mut found = None;
    for opt in OptionIter::new(options) {
        let opt = opt?;
        if opt.kind == kind && found.is_none() {
            if opt.len_units != 1 {
                return Err(WireError::BadLinkLayerOption(opt.len_units));
            }
            let mut m = [0u8; 6];
            m.copy_from_slice(&opt.data[..6]);
            found = Some(Mac(m));
        }
    }
    Ok(found)
}

/// A parsed NS or NA message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NdiscRepr {
    /// Neighbor Solicitation.
    NeighborSolicit {
        /// Address being resolved.
        target: Ipv6Addr,
        /// Source Link-Layer Address option, if present.
        lla: Option<Mac>,
    },
    /// Neighbor Advertisement.
    NeighborAdvert {
        /// R/S/O flags.
        flags: NaFlags,
        /// Address advertised.
        target: Ipv6Addr,
        /// Target Link-Layer Address option, if present.
        lla: Option<Mac>,
    },
}

impl NdiscRepr {
    /// Parses an NS/NA from a whole ICMPv6 message whose checksum the caller has verified.
    /// Checks code 0, minimum length, non-multicast target and option lengths (RFC 4861 §7.1).
    pub fn parse(msg: &[u8]) -> Result<Self, WireError> {
        if msg.len() < MESSAGE_LEN {
            return Err(WireError::Truncated {
                layer: "ndp",
                needed: MESSAGE_LEN,
                got: msg.len(),
            });
        }
        let (msg_type, code) = (msg[0], msg[1]);
        if msg_type != TYPE_NEIGHBOR_SOLICIT && msg_type != TYPE_NEIGHBOR_ADVERT {
            return Err(WireError::UnsupportedIcmpType(msg_type));
        }
        if code != 0 {
            return Err(WireError::BadIcmpCode { msg_type, code });
        }
        let mut t = [0u8; 16];
        t.copy_from_slice(&msg[8..24]);
        let target = Ipv6Addr::from(t);
        if target.is_multicast() {
            return Err(WireError::MulticastTarget);
        }
        let options = &msg[MESSAGE_LEN..];
        if msg_type == TYPE_NEIGHBOR_SOLICIT {
            Ok(NdiscRepr::NeighborSolicit {
                target,
                lla: find_lla(options, OPT_SOURCE_LLA)?,
            })
        } else {
            Ok(NdiscRepr::NeighborAdvert {
                flags: NaFlags::from_byte(msg[4]),
                target,
                lla: find_lla(options, OPT_TARGET_LLA)?,
            })
        }
    }

    /// The target address.
    pub fn target(&self) -> Ipv6Addr {
        match self {
            NdiscRepr::NeighborSolicit { target, .. }
            | NdiscRepr::NeighborAdvert { target, .. } => *target,
        }
    }

    /// Bytes [`NdiscRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let lla = match self {
            NdiscRepr::NeighborSolicit { lla, .. } | NdiscRepr::NeighborAdvert { lla, .. } => lla,
        };
        MESSAGE_LEN + if lla.is_some() { LLA_OPTION_LEN } else { 0 }
    }

    /// Writes the message with a zero checksum (the ICMPv6 layer fills it in).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let need = self.buffer_len();
        if buf.len() < need {
            return Err(WireError::BufferTooSmall {
                needed: need,
                got: buf.len(),
            });
        }
        let (msg_type, flags, target, opt, lla) = match *self {
            NdiscRepr::NeighborSolicit { target, lla } => {
                (TYPE_NEIGHBOR_SOLICIT, 0, target, OPT_SOURCE_LLA, lla)
            }
            NdiscRepr::NeighborAdvert { flags, target, lla } => (
                TYPE_NEIGHBOR_ADVERT,
                flags.to_byte(),
                target,
                OPT_TARGET_LLA,
                lla,
            ),
        };
        buf[0] = msg_type;
        buf[1] = 0;
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..8].copy_from_slice(&[flags, 0, 0, 0]);
        buf[8..24].copy_from_slice(&target.octets());
        if let Some(mac) = lla {
            buf[24] = opt;
            buf[25] = 1;
            buf[26..32].copy_from_slice(&mac.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(options: &[u8]) -> Vec<u8> {
        let mut v = vec![135, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&"2001:db8::10".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(options);
        v
    }

    const SLLA: [u8; 8] = [1, 1, 0x52, 0x54, 0, 0xaa, 0xbb, 0xcc];

    #[test]
    fn ns_with_slla() {
        let r = NdiscRepr::parse(&ns(&SLLA)).unwrap();
        assert_eq!(
            r,
            NdiscRepr::NeighborSolicit {
                target: "2001:db8::10".parse().unwrap(),
                lla: Some(Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])),
            }
        );
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out).unwrap();
        assert_eq!(out, ns(&SLLA));
    }

    #[test]
    fn unknown_options_are_skipped() {
        // A nonce option (type 14, RFC 3971) of 8 bytes, then SLLA.
        let mut opts = vec![14, 1, 1, 2, 3, 4, 5, 6];
        opts.extend_from_slice(&SLLA);
        let r = NdiscRepr::parse(&ns(&opts)).unwrap();
        assert!(matches!(r, NdiscRepr::NeighborSolicit { lla: Some(_), .. }));
        // A TLLA in an NS is not the SLLA.
        let mut tlla = SLLA;
        tlla[0] = 2;
        let r = NdiscRepr::parse(&ns(&tlla)).unwrap();
        assert!(matches!(r, NdiscRepr::NeighborSolicit { lla: None, .. }));
    }

    #[test]
    fn zero_length_option_is_error() {
        let mut opts = SLLA.to_vec();
        opts.extend_from_slice(&[14, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            NdiscRepr::parse(&ns(&opts)),
            Err(WireError::ZeroLengthOption)
        );
    }

    #[test]
    fn truncated_option_is_error() {
        assert!(matches!(
            NdiscRepr::parse(&ns(&SLLA[..7])),
            Err(WireError::Truncated {
                layer: "ndp option",
                ..
            })
        ));
        assert!(matches!(
            NdiscRepr::parse(&ns(&SLLA[..1])),
            Err(WireError::Truncated {
                layer: "ndp option",
                ..
            })
        ));
    }

    #[test]
    fn wrong_lla_length_is_error() {
        let mut opts = vec![1, 2];
        opts.extend_from_slice(&[0; 14]);
        assert_eq!(
            NdiscRepr::parse(&ns(&opts)),
            Err(WireError::BadLinkLayerOption(2))
        );
    }

    #[test]
    fn multicast_target_and_code_are_errors() {
        let mut v = ns(&SLLA);
        v[8] = 0xff;
        assert_eq!(NdiscRepr::parse(&v), Err(WireError::MulticastTarget));
        let mut v = ns(&SLLA);
        v[1] = 1;
        assert_eq!(
            NdiscRepr::parse(&v),
            Err(WireError::BadIcmpCode {
                msg_type: 135,
                code: 1
            })
        );
        assert!(matches!(
            NdiscRepr::parse(&ns(&[])[..23]),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn na_flags() {
        for b in 0..8u8 {
            let f = NaFlags::from_byte(b << 5);
            assert_eq!(f.to_byte(), b << 5);
        }
        let f = NaFlags::from_byte(0x60);
        assert!(f.solicited && f.override_ && !f.router);
    }
}

//! Small address types: [`Mac`], [`VlanId`], and IPv6 multicast mappings.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Mac::BROADCAST
    }
    /// Whether the group bit is set (multicast or broadcast).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
    /// Whether this is a unicast address (group bit clear).
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Self {
        Mac(b)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(m: Mac) -> Self {
        m.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

/// Error parsing a [`Mac`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets separated by ':' or '-'")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;

    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (case-insensitive, two digits per octet).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for o in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

/// An IEEE 802.1Q VLAN identifier, 0..=4095 (0 = priority-tagged frame without a VLAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanId(u16);

impl VlanId {
    /// Largest VLAN id.
    pub const MAX: u16 = 4095;

    /// A VLAN id, or `None` when `id` exceeds 12 bits.
    pub const fn new(id: u16) -> Option<VlanId> {
        if id <= Self::MAX {
            Some(VlanId(id))
        } else {
            None
        }
    }

    /// The VLAN id carried in a Tag Control Information field (PCP and DEI dropped).
    pub const fn from_tci(tci: u16) -> VlanId {
        VlanId(tci & 0x0fff)
    }

    /// The numeric id.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The solicited-node multicast address of `ip` (RFC 4291 §2.7.1): `ff02::1:ffXX:XXXX`
/// with the low 24 bits of `ip`.
pub fn solicited_node_multicast(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address of an IPv6 multicast group (RFC 2464 §7): `33:33` + low 32 bits.
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The Ethernet address of the solicited-node group of `ip`: `33:33:ff:XX:XX:XX`.
pub fn solicited_node_multicast_mac(ip: Ipv6Addr) -> Mac {
    ipv6_multicast_mac(solicited_node_multicast(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_display_and_parse() {
        let m = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x0a]);
        assert_eq!(m.to_string(), "02:42:ac:11:00:0a");
        assert_eq!("02:42:AC:11:00:0a".parse::<Mac>(), Ok(m));
        assert_eq!("02-42-ac-11-00-0a".parse::<Mac>(), Ok(m));
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:0a:01",
            "2:42:ac:11:00:0a",
            "02:42:ac:11:00:0g",
            "02:42-ac:11:00:0a",
            "+2:42:ac:11:00:0a",
            "02:42:ac:11:00:0a:",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert!(Mac::BROADCAST.is_broadcast() && Mac::BROADCAST.is_multicast());
        assert!(m.is_unicast());
        assert_eq!(format!("{m:?}"), "Mac(02:42:ac:11:00:0a)");
    }

    #[test]
    fn vlan_ids() {
        assert_eq!(VlanId::new(4095).map(VlanId::get), Some(4095));
        assert_eq!(VlanId::new(4096), None);
        assert_eq!(VlanId::from_tci(0xe00a).get(), 10);
    }

    #[test]
    fn solicited_node() {
        let ip: Ipv6Addr = "2001:db8::1:800:200e:8c6c".parse().unwrap();
        // RFC 4291 §2.7.1 example style: low 24 bits 0e:8c:6c.
        assert_eq!(
            solicited_node_multicast(ip),
            "ff02::1:ff0e:8c6c".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            solicited_node_multicast_mac(ip),
            Mac([0x33, 0x33, 0xff, 0x0e, 0x8c, 0x6c])
        );
        assert_eq!(
            ipv6_multicast_mac("ff02::1".parse().unwrap()),
            Mac([0x33, 0x33, 0, 0, 0, 1])
        );
    }
}

//! Address spaces: per-CIDR sets of used addresses as merged intervals over a u128
//! index space, so that "lowest free address" is one B-tree lookup whatever the size
//! of the CIDR (a /64 is never enumerated).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::request::Family;

/// An address as a number (IPv4 in the low 32 bits).
pub(crate) fn raw(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(*a) as u128,
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// The address of a number in a family.
pub(crate) fn ip_of(family: Family, raw: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(raw as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(raw)),
    }
}

/// A set of u128 values stored as disjoint, non-adjacent inclusive intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    /// start → end (inclusive); intervals never touch (adjacent ones are merged).
    map: BTreeMap<u128, u128>,
}

impl IntervalSet {
    /// True when `x` is in the set.
    pub(crate) fn contains(&self, x: u128) -> bool {
        self.map
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &e)| e >= x)
    }

    /// Adds `x`; false if it was already there.
    pub(crate) fn insert(&mut self, x: u128) -> bool {
        if self.contains(x) {
            return false;
        }
        let mut start = x;
        let mut end = x;
        if let Some(prev) = x.checked_sub(1) {
            if let Some((&s, &e)) = self.map.range(..=prev).next_back() {
                if e == prev {
                    start = s;
                }
            }
        }
        if let Some(next) = x.checked_add(1) {
            if let Some(e) = self.map.remove(&next) {
                end = e;
            }
        }
        self.map.insert(start, end);
        true
    }

    /// Removes `x`; false if it was not there.
    pub(crate) fn remove(&mut self, x: u128) -> bool {
        let (s, e) = match self.map.range(..=x).next_back() {
            Some((&s, &e)) if e >= x => (s, e),
            _ => return false,
        };
        self.map.remove(&s);
        if s < x {
            self.map.insert(s, x - 1);
        }
        if x < e {
            self.map.insert(x + 1, e);
        }
        true
    }

    /// The lowest value in `lo..=hi` that is not in the set.
    pub(crate) fn first_absent(&self, lo: u128, hi: u128) -> Option<u128> {
        if lo > hi {
            return None;
        }
        let x = match self.map.range(..=lo).next_back() {
            Some((_, &e)) if e >= lo => e.checked_add(1)?,
            _ => lo,
        };
        (x <= hi).then_some(x)
    }

    /// Number of intervals (for tests).
    #[cfg(test)]
    pub(crate) fn intervals(&self) -> usize {
        self.map.len()
    }
}

/// Index of a usable IPv4 address when `.0` and `.255` are skipped: each /24 holds
/// 254 consecutive indices, so usable addresses form one contiguous index range.
fn buggy_index(a: u128) -> Option<u128> {
    let octet = a & 0xff;
    (1..=254)
        .contains(&octet)
        .then(|| (a >> 8) * 254 + octet - 1)
}

fn buggy_raw(i: u128) -> u128 {
    ((i / 254) << 8) | (i % 254 + 1)
}

/// One CIDR of a pool with its used addresses.
#[derive(Clone, Debug)]
pub(crate) struct CidrSpace {
    /// Address family.
    pub(crate) family: Family,
    /// First address (network), as a number.
    pub(crate) start: u128,
    /// Last address, as a number.
    pub(crate) end: u128,
    /// Number of host bits.
    pub(crate) host_bits: u8,
    /// IPv4 with avoidBuggyIPs: indices skip `.0` and `.255`.
    buggy: bool,
    /// Usable index range (inclusive), `None` when nothing is usable.
    range: Option<(u128, u128)>,
    /// Used indices.
    used: IntervalSet,
}

impl CidrSpace {
    /// A CIDR with nothing used.
    pub(crate) fn new(net: &IpNet, avoid_buggy_ips: bool) -> Self {
        let (family, start, end) = match net {
            IpNet::V4(n) => (
                Family::V4,
                u32::from(n.network()) as u128,
                u32::from(n.broadcast()) as u128,
            ),
            IpNet::V6(n) => (
                Family::V6,
                u128::from(n.network()),
                u128::from(n.broadcast()),
            ),
        };
        let host_bits = net.max_prefix_len() - net.prefix_len();
        let buggy = avoid_buggy_ips && family == Family::V4;
        let range = if buggy {
            let first = match start & 0xff {
                0 => start + 1,
                255 => start + 2,
                _ => start,
            };
            let last = match end & 0xff {
                255 => end.checked_sub(1),
                0 => end.checked_sub(2),
                _ => Some(end),
            };
            match last {
                Some(last) if first <= last => buggy_index(first).zip(buggy_index(last)),
                _ => None,
            }
        } else {
            Some((start, end))
        };
        CidrSpace {
            family,
            start,
            end,
            host_bits,
            buggy,
            range,
            used: IntervalSet::default(),
        }
    }

    /// True when `ip` is inside the CIDR and usable (not skipped by avoidBuggyIPs).
    pub(crate) fn usable(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family && self.index(raw(ip)).is_some()
    }

    /// True when `ip` is inside the CIDR (usable or not).
    pub(crate) fn covers(&self, ip: &IpAddr) -> bool {
        let r = raw(ip);
        Family::of(ip) == self.family && self.start <= r && r <= self.end
    }

    fn index(&self, r: u128) -> Option<u128> {
        if r < self.start || r > self.end {
            return None;
        }
        if self.buggy {
            buggy_index(r)
        } else {
            Some(r)
        }
    }

    fn raw_of(&self, i: u128) -> u128 {
        if self.buggy {
            buggy_raw(i)
        } else {
            i
        }
    }

    /// Marks `ip` used (no-op when outside or unusable).
    pub(crate) fn mark(&mut self, ip: &IpAddr) {
        if Family::of(ip) == self.family {
            if let Some(i) = self.index(raw(ip)) {
                self.used.insert(i);
            }
        }
    }

    /// Marks `ip` free.
    pub(crate) fn unmark(&mut self, ip: &IpAddr) {
        if Family::of(ip) == self.family {
            if let Some(i) = self.index(raw(ip)) {
                self.used.remove(i);
            }
        }
    }

    /// The lowest usable unused address.
    pub(crate) fn first_free(&self) -> Option<IpAddr> {
        let (lo, hi) = self.range?;
        let i = self.used.first_absent(lo, hi)?;
        Some(ip_of(self.family, self.raw_of(i)))
    }

    /// Number of usable addresses; `None` when the CIDR has ≥ 62 host bits (MetalLB
    /// reports those as `i64::MAX`).
    pub(crate) fn capacity(&self) -> Option<u128> {
        if self.host_bits >= 62 {
            return None;
        }
        Some(self.range.map_or(0, |(lo, hi)| hi - lo + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn intervals_merge_and_split() {
        let mut s = IntervalSet::default();
        assert!(s.insert(5));
        assert!(s.insert(7));
        assert_eq!(s.intervals(), 2);
        assert!(s.insert(6));
        assert_eq!(s.intervals(), 1);
        assert!(!s.insert(6));
        assert_eq!(s.first_absent(5, 10), Some(8));
        assert_eq!(s.first_absent(0, 10), Some(0));
        assert_eq!(s.first_absent(5, 7), None);
        assert!(s.remove(6));
        assert!(!s.remove(6));
        assert_eq!(s.intervals(), 2);
        assert_eq!(s.first_absent(5, 10), Some(6));
        assert!(s.insert(u128::MAX));
        assert_eq!(s.first_absent(u128::MAX, u128::MAX), None);
        assert!(s.insert(0));
        assert_eq!(s.first_absent(0, 3), Some(1));
    }

    #[test]
    fn buggy_space_skips_0_and_255() {
        let c = CidrSpace::new(&"1.2.3.0/23".parse().unwrap(), true);
        assert_eq!(c.capacity(), Some(508));
        assert_eq!(c.first_free(), Some("1.2.2.1".parse().unwrap()));
        let mut c = CidrSpace::new(&"1.2.3.254/31".parse().unwrap(), true);
        assert_eq!(c.capacity(), Some(1));
        c.mark(&"1.2.3.254".parse().unwrap());
        assert_eq!(c.first_free(), None);
        let c = CidrSpace::new(&"1.2.3.255/32".parse().unwrap(), true);
        assert_eq!(c.capacity(), Some(0));
        assert_eq!(c.first_free(), None);
        let c = CidrSpace::new(&"1.2.3.255/32".parse().unwrap(), false);
        assert_eq!(c.first_free(), Some("1.2.3.255".parse().unwrap()));
        // IPv6 is never affected.
        let c = CidrSpace::new(&"1000::/120".parse().unwrap(), true);
        assert_eq!(c.capacity(), Some(256));
        let c = CidrSpace::new(&"::/0".parse().unwrap(), false);
        assert_eq!(c.capacity(), None);
        assert_eq!(c.first_free(), Some("::".parse().unwrap()));
    }

    proptest! {
        /// The interval set behaves like a BTreeSet and first_absent like a linear scan.
        #[test]
        fn interval_set_matches_model(ops in proptest::collection::vec((any::<bool>(), 0u128..64), 0..200),
                                       lo in 0u128..64, len in 0u128..64) {
            let mut s = IntervalSet::default();
            let mut m = BTreeSet::new();
            for (ins, x) in ops {
                if ins { prop_assert_eq!(s.insert(x), m.insert(x)); }
                else { prop_assert_eq!(s.remove(x), m.remove(&x)); }
            }
            for x in 0..64 { prop_assert_eq!(s.contains(x), m.contains(&x)); }
            let hi = lo + len;
            prop_assert_eq!(s.first_absent(lo, hi), (lo..=hi).find(|x| !m.contains(x)));
            // intervals are maximal: count equals number of runs
            let runs = m.iter().filter(|x| **x == 0 || !m.contains(&(**x - 1))).count();
            prop_assert_eq!(s.intervals(), runs);
        }

        /// Buggy-IP index mapping is a monotonic bijection onto usable addresses.
        #[test]
        fn buggy_mapping_roundtrips(a in 0u128..(1u128 << 32)) {
            match buggy_index(a) {
                Some(i) => { prop_assert_eq!(buggy_raw(i), a); prop_assert_eq!(buggy_index(a + 1).unwrap_or(i + 1), i + 1); }
                None => prop_assert!(a & 0xff == 0 || a & 0xff == 255),
            }
        }
    }
}

//! Address entries of `IPAddressPool.spec.addresses`: a CIDR or a range `a-b`.
//!
//! Parsing follows MetalLB (`internal/config/config.go: ParseCIDR`):
//! * no `-`: a CIDR; host bits are masked (`10.0.0.5/24` is `10.0.0.0/24`); surrounding
//!   whitespace is an error, as in MetalLB;
//! * with `-`: split on the first `-`, both sides trimmed and parsed as addresses of the
//!   same family, start ≤ end; the range is summarized into the minimal list of CIDRs
//!   covering exactly `start..=end`.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

/// Why an address entry is invalid. The `Display` text quotes the entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not a valid `address/prefix-length`.
    #[error("invalid CIDR {value:?}: {reason}")]
    InvalidCidr {
        /// The entry as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// One side of a range is not an IP address.
    #[error("invalid IP range {value:?}: {side} {ip:?} is not an IP address")]
    InvalidRangeIp {
        /// The entry as written.
        value: String,
        /// `start` or `end`.
        side: &'static str,
        /// The offending (trimmed) side.
        ip: String,
    },
    /// `start > end`.
    #[error("invalid IP range {value:?}: start IP \"{start}\" is after the end IP \"{end}\"")]
    ReversedRange {
        /// The entry as written.
        value: String,
        /// Parsed start.
        start: IpAddr,
        /// Parsed end.
        end: IpAddr,
    },
    /// `start` and `end` are of different families.
    #[error("invalid IP range {value:?}: start \"{start}\" and end \"{end}\" are not of the same IP family")]
    MixedFamilyRange {
        /// The entry as written.
        value: String,
        /// Parsed start.
        start: IpAddr,
        /// Parsed end.
        end: IpAddr,
    },
}

fn cidr_err(value: &str, reason: impl Into<String>) -> AddressError {
    AddressError::InvalidCidr {
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses a CIDR, masking host bits. Errors explain what is wrong.
pub fn parse_cidr(value: &str) -> Result<IpNet, AddressError> {
    if value.trim() != value {
        return Err(cidr_err(value, "leading or trailing whitespace"));
    }
    let Some((addr, len)) = value.split_once('/') else {
        let hint = match value.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => format!(" (write a single address as {value}/32)"),
            Ok(IpAddr::V6(_)) => format!(" (write a single address as {value}/128)"),
            Err(_) => String::new(),
        };
        return Err(cidr_err(value, format!("missing \"/prefix-length\"{hint}")));
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| cidr_err(value, format!("{addr:?} is not an IP address")))?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(cidr_err(
            value,
            format!("prefix length {len:?} is not a number between 0 and {max}"),
        ));
    }
    let len: u8 = match len.parse::<u32>() {
        Ok(n) if n <= u32::from(max) => n as u8,
        _ => {
            return Err(cidr_err(
                value,
                format!("prefix length {len} is longer than {max}, the maximum for {family}"),
            ))
        }
    };
    let net = IpNet::new(ip, len).map_err(|e| cidr_err(value, e.to_string()))?;
    Ok(net.trunc())
}

/// Summarizes `start..=end` (same family, `start <= end`) into the minimal list of
/// CIDRs, in ascending order.
pub fn summarize_range(start: IpAddr, end: IpAddr) -> Vec<IpNet> {
    match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
            Ipv4Subnets::new(s, e, 0).map(IpNet::V4).collect()
        }
        (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
            Ipv6Subnets::new(s, e, 0).map(IpNet::V6).collect()
        }
        _ => Vec::new(),
    }
}

/// Parses a range `a-b` (whitespace around both sides allowed).
pub fn parse_range(value: &str) -> Result<Vec<IpNet>, AddressError> {
    let (a, b) = value.split_once('-').unwrap_or((value, ""));
    let (a, b) = (a.trim(), b.trim());
    let parse = |side: &'static str, s: &str| {
        s.parse::<IpAddr>()
            .map_err(|_| AddressError::InvalidRangeIp {
                value: value.to_string(),
                side,
                ip: s.to_string(),
            })
    };
    let start = parse("start", a)?;
    let end = parse("end", b)?;
    if start.is_ipv4() != end.is_ipv4() {
        return Err(AddressError::MixedFamilyRange {
            value: value.to_string(),
            start,
            end,
        });
    }
    if start > end {
        return Err(AddressError::ReversedRange {
            value: value.to_string(),
            start,
            end,
        });
    }
    Ok(summarize_range(start, end))
}

/// Parses one address entry (CIDR or range) into its prefixes.
pub fn parse_entry(value: &str) -> Result<Vec<IpNet>, AddressError> {
    if value.contains('-') {
        parse_range(value)
    } else {
        parse_cidr(value).map(|n| vec![n])
    }
}

/// Number of addresses in `net` (saturating at `u128::MAX` for `::/0`).
pub fn net_size(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// True when `ip` is an IPv4 address ending in `.0` or `.255` (MetalLB's "buggy IPs").
pub fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// Number of "buggy" addresses (IPv4 `.0` / `.255`) inside `net`.
pub fn buggy_count(net: &IpNet) -> u128 {
    match net {
        IpNet::V6(_) => 0,
        IpNet::V4(n) => {
            if n.prefix_len() <= 24 {
                2 * (1u128 << (24 - n.prefix_len()))
            } else {
                let (first, last) = (n.network(), n.broadcast());
                let mut c = u128::from(is_buggy(first.into()));
                if last != first {
                    c += u128::from(is_buggy(last.into()));
                }
                c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn cidrs_parse_and_mask_host_bits() {
        assert_eq!(parse_entry("10.0.0.0/24").unwrap(), nets(&["10.0.0.0/24"]));
        assert_eq!(parse_entry("10.0.0.5/24").unwrap(), nets(&["10.0.0.0/24"]));
        assert_eq!(parse_entry("fc00::/124").unwrap(), nets(&["fc00::/124"]));
        assert_eq!(parse_entry("1.2.3.4/32").unwrap(), nets(&["1.2.3.4/32"]));
        assert_eq!(parse_entry("fc00::1/128").unwrap(), nets(&["fc00::1/128"]));
        assert_eq!(
            parse_entry("fc00:f853:0ccd:e799::/124").unwrap(),
            nets(&["fc00:f853:ccd:e799::/124"])
        );
    }

    #[test]
    fn cidr_errors_explain() {
        let msg = |s: &str| parse_entry(s).unwrap_err().to_string();
        assert_eq!(
            msg("10.0.0.0/33"),
            r#"invalid CIDR "10.0.0.0/33": prefix length 33 is longer than 32, the maximum for IPv4"#
        );
        assert_eq!(
            msg("fc00::/129"),
            r#"invalid CIDR "fc00::/129": prefix length 129 is longer than 128, the maximum for IPv6"#
        );
        assert_eq!(
            msg("100.200.300.400/24"),
            r#"invalid CIDR "100.200.300.400/24": "100.200.300.400" is not an IP address"#
        );
        assert_eq!(
            msg("10.0.0.1"),
            r#"invalid CIDR "10.0.0.1": missing "/prefix-length" (write a single address as 10.0.0.1/32)"#
        );
        assert_eq!(
            msg("10.0.0.0/x"),
            r#"invalid CIDR "10.0.0.0/x": prefix length "x" is not a number between 0 and 32"#
        );
        assert_eq!(
            msg(" 10.0.0.0/24"),
            r#"invalid CIDR " 10.0.0.0/24": leading or trailing whitespace"#
        );
        assert!(msg("").starts_with(r#"invalid CIDR "": missing"#));
        assert!(msg("10.0.0.0/99999999999999").contains("longer than 32"));
    }

    #[test]
    fn ranges_summarize_like_metallb() {
        assert_eq!(
            parse_entry("192.168.1.240-192.168.1.250").unwrap(),
            nets(&["192.168.1.240/29", "192.168.1.248/31", "192.168.1.250/32"])
        );
        assert_eq!(
            parse_entry("200.0.0.100 - 200.0.0.120").unwrap(),
            nets(&[
                "200.0.0.100/30",
                "200.0.0.104/29",
                "200.0.0.112/29",
                "200.0.0.120/32"
            ])
        );
        assert_eq!(
            parse_entry("192.168.9.1-192.168.9.1").unwrap(),
            nets(&["192.168.9.1/32"])
        );
        assert_eq!(
            parse_entry("fc00::-fc00::ff").unwrap(),
            nets(&["fc00::/120"])
        );
        assert_eq!(
            parse_entry("0.0.0.0-255.255.255.255").unwrap(),
            nets(&["0.0.0.0/0"])
        );
        assert_eq!(
            parse_entry("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").unwrap(),
            nets(&["::/0"])
        );
    }

    #[test]
    fn range_errors_explain() {
        let msg = |s: &str| parse_entry(s).unwrap_err().to_string();
        assert_eq!(
            msg("1.2.3.10-1.2.3.1"),
            r#"invalid IP range "1.2.3.10-1.2.3.1": start IP "1.2.3.10" is after the end IP "1.2.3.1""#
        );
        assert_eq!(
            msg("10.0.0.1-fc00::1"),
            r#"invalid IP range "10.0.0.1-fc00::1": start "10.0.0.1" and end "fc00::1" are not of the same IP family"#
        );
        assert_eq!(
            msg("10.0.0.1-"),
            r#"invalid IP range "10.0.0.1-": end "" is not an IP address"#
        );
        assert_eq!(
            msg("10.0.0.0/24-10.0.1.0/24"),
            r#"invalid IP range "10.0.0.0/24-10.0.1.0/24": start "10.0.0.0/24" is not an IP address"#
        );
    }

    #[test]
    fn sizes_and_buggy_counts() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(net_size(&n("1.2.3.0/24")), 256);
        assert_eq!(net_size(&n("0.0.0.0/0")), 1 << 32);
        assert_eq!(net_size(&n("::/0")), u128::MAX);
        assert_eq!(net_size(&n("1000::/64")), 1 << 64);
        assert_eq!(buggy_count(&n("1.2.3.0/24")), 2);
        assert_eq!(buggy_count(&n("1.2.0.0/16")), 512);
        assert_eq!(buggy_count(&n("2.3.4.128/25")), 1);
        assert_eq!(buggy_count(&n("1.2.3.0/31")), 1);
        assert_eq!(buggy_count(&n("1.2.3.0/32")), 1);
        assert_eq!(buggy_count(&n("1.2.3.4/30")), 0);
        assert_eq!(buggy_count(&n("1000::/120")), 0);
    }

    fn to_u128(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v),
        }
    }

    /// The CIDR list is sorted, contiguous, starts at `a`, ends at `b`, and every
    /// prefix is maximal (merging with a neighbour would not be aligned or would
    /// overshoot), i.e. it covers exactly `[a, b]` with the minimal number of CIDRs.
    fn check_exact_cover(a: IpAddr, b: IpAddr) {
        let nets = summarize_range(a, b);
        assert!(!nets.is_empty());
        let mut next = Some(to_u128(a));
        for n in &nets {
            let first = to_u128(n.network());
            assert_eq!(Some(first), next, "gap or overlap before {n}");
            assert_eq!(n.trunc(), *n, "{n} not masked");
            let last = to_u128(n.broadcast());
            // Maximality: the parent prefix either is not aligned at `first`
            // or would reach past `b`.
            if n.prefix_len() > 0 {
                let parent = IpNet::new(n.network(), n.prefix_len() - 1).unwrap().trunc();
                assert!(
                    to_u128(parent.network()) != first || to_u128(parent.broadcast()) > to_u128(b),
                    "{n} could be merged into {parent}"
                );
            }
            next = last.checked_add(1);
        }
        assert_eq!(to_u128(nets.last().unwrap().broadcast()), to_u128(b));
    }

    proptest! {
        #[test]
        fn v4_range_summary_covers_exactly(x: u32, y: u32) {
            let (a, b) = (x.min(y), x.max(y));
            check_exact_cover(Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into());
        }

        #[test]
        fn v4_small_range_summary_covers_exactly(x: u32, len in 0u32..600) {
            let a = x.min(u32::MAX - len);
            check_exact_cover(Ipv4Addr::from(a).into(), Ipv4Addr::from(a + len).into());
        }

        #[test]
        fn v6_range_summary_covers_exactly(x: u128, y: u128) {
            let (a, b) = (x.min(y), x.max(y));
            check_exact_cover(Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into());
        }

        #[test]
        fn range_text_roundtrip_membership(x: u32, len in 0u32..2000, probe: u32) {
            let a = x.min(u32::MAX - len);
            let (sa, sb) = (Ipv4Addr::from(a), Ipv4Addr::from(a + len));
            let nets = parse_entry(&format!("{sa} - {sb}")).unwrap();
            let p = Ipv4Addr::from(a.wrapping_add(probe % (len + 2000)).wrapping_sub(1000));
            let inside = (a..=a + len).contains(&u32::from(p));
            prop_assert_eq!(nets.iter().any(|n| n.contains(&IpAddr::from(p))), inside);
        }
    }
}

//! RFC 1071 Internet checksum helpers (ones' complement sum of 16-bit words).

use std::net::Ipv6Addr;

/// Ones' complement sum (not yet inverted, not yet folded) of `data`, big-endian 16-bit words;
/// an odd trailing byte is padded with a zero byte.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // fold early so that arbitrarily long inputs can never overflow
        if acc > 0xffff_0000 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a 32-bit accumulator into 16 bits (end-around carry), without inverting.
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Adds two partial sums.
pub fn combine(a: u32, b: u32) -> u32 {
    u32::from(fold(a)) + u32::from(fold(b))
}

/// The Internet checksum of `data`: the inverted folded sum, ready to be stored in a header.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer packet.
pub fn ipv6_pseudo_header(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, length: u32) -> u32 {
    let mut acc = sum(&src.octets());
    acc = combine(acc, sum(&dst.octets()));
    acc = combine(acc, sum(&length.to_be_bytes()));
    combine(acc, u32::from(next_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn data_including_its_checksum_sums_to_ffff() {
        let mut data = vec![0x45, 0x00, 0x00, 0x54, 0xab, 0xcd, 0x00, 0x00];
        let c = checksum(&data);
        data.extend_from_slice(&c.to_be_bytes());
        assert_eq!(fold(sum(&data)), 0xffff);
    }

    #[test]
    fn long_input_does_not_overflow() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(fold(sum(&data)), 0xffff);
    }
}

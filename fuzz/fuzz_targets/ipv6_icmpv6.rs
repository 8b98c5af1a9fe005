#![no_main]
//! IPv6 header + ICMPv6 (echo, NS, NA). The first byte selects whether the ICMPv6 checksum is
//! fixed up before parsing so the fuzzer reaches the message parsers.

use ferrolb_wire_fuzz::wire::{icmpv6, Icmpv6Repr, Ipv6Packet, Ipv6Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    if mode & 1 == 1 {
        if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
            let (src, dst, len) = (p.src(), p.dst(), usize::from(p.payload_len()));
            icmpv6::fill_checksum(&src, &dst, &mut data[40..40 + len]);
        }
    }
    let Ok(p) = Ipv6Packet::new_checked(&data[..]) else {
        return;
    };
    let _ = (p.traffic_class(), p.flow_label());
    let ip = Ipv6Repr::parse(&p).expect("checked packet parses");
    let mut again = vec![0u8; ip.header_len() + ip.payload_len];
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut again[..]))
        .expect("sized buffer");
    again[ip.header_len()..].copy_from_slice(p.payload());
    let reparsed = Ipv6Packet::new_checked(&again[..]).expect("emitted packet checks");
    assert_eq!(Ipv6Repr::parse(&reparsed), Ok(ip));
    if let Ok(icmp) = Icmpv6Repr::parse(&ip.src, &ip.dst, p.payload()) {
        let mut buf = vec![0u8; icmp.buffer_len()];
        icmp.emit(&ip.src, &ip.dst, &mut buf).expect("sized buffer");
        assert_eq!(Icmpv6Repr::parse(&ip.src, &ip.dst, &buf), Ok(icmp));
    }
});

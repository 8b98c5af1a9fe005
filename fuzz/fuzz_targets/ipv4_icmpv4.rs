#![no_main]
//! IPv4 header + ICMPv4 echo. The first byte selects whether checksums are fixed up before
//! parsing, so the fuzzer also reaches the code behind the checksum checks.

use ferrolb_wire_fuzz::wire::{checksum, Icmpv4Repr, Ipv4Packet, Ipv4Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    if mode & 1 == 1 && data.len() >= 20 {
        let hl = usize::from(data[0] & 0x0f) * 4;
        if hl >= 20 && hl <= data.len() {
            data[10] = 0;
            data[11] = 0;
            let c = checksum::checksum(&data[..hl]);
            data[10..12].copy_from_slice(&c.to_be_bytes());
            if mode & 2 == 2 && data.len() >= hl + 4 {
                let total = usize::from(u16::from_be_bytes([data[2], data[3]])).min(data.len());
                if total >= hl + 4 {
                    data[hl + 2] = 0;
                    data[hl + 3] = 0;
                    let c = checksum::checksum(&data[hl..total]);
                    data[hl + 2..hl + 4].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
    }
    let Ok(p) = Ipv4Packet::new_checked(&data[..]) else {
        return;
    };
    let _ = (p.ident(), p.is_fragment(), p.payload().len());
    let Ok(ip) = Ipv4Repr::parse(&p) else {
        return;
    };
    let mut again = vec![0u8; ip.header_len() + ip.payload_len];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut again[..]))
        .expect("sized buffer");
    again[ip.header_len()..].copy_from_slice(p.payload());
    let reparsed = Ipv4Packet::new_checked(&again[..]).expect("emitted packet checks");
    assert_eq!(Ipv4Repr::parse(&reparsed), Ok(ip));
    if let Ok(icmp) = Icmpv4Repr::parse(p.payload()) {
        let mut buf = vec![0u8; icmp.buffer_len()];
        icmp.emit(&mut buf).expect("sized buffer");
        assert_eq!(Icmpv4Repr::parse(&buf), Ok(icmp));
    }
});

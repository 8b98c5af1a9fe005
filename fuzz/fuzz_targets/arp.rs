#![no_main]
//! ARP parser: never panics; anything it accepts re-emits to the same repr.

use ferrolb_wire_fuzz::wire::{ArpPacket, ArpRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ArpPacket::new_checked(data) {
        let _ = (p.oper(), p.sender_mac(), p.target_ip());
    }
    if let Ok(repr) = ArpRepr::parse(data) {
        let mut buf = [0u8; 28];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]))
            .expect("28-byte buffer");
        assert_eq!(ArpRepr::parse(&buf), Ok(repr));
        assert_eq!(&buf[..], &data[..28]);
    }
});

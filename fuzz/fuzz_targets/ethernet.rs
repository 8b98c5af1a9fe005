#![no_main]
//! Ethernet / 802.1Q header view and repr: never panic; parse → emit → parse is stable.

use ferrolb_wire_fuzz::wire::{EthernetFrame, EthernetRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return;
    };
    let _ = (frame.tci(), frame.outer_ethertype(), frame.payload().len());
    let repr = EthernetRepr::parse(&frame).expect("checked frame parses");
    let mut buf = vec![0u8; repr.header_len()];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
        .expect("sized buffer");
    let again = EthernetRepr::parse(&EthernetFrame::new_checked(&buf[..]).expect("emitted header checks"))
        .expect("emitted header parses");
    // Re-emission drops PCP/DEI but keeps everything the repr models; a double tag stays a
    // single tag whose inner EtherType is 0x8100.
    assert_eq!(again, repr);
});

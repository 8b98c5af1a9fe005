#![no_main]
//! The dataplane entry point: whole frames. Anything `FrameRepr` accepts must re-emit to a
//! frame that parses to the same repr, also when emitted into a larger, dirty buffer (as
//! the dataplane reuses its send buffers).

use ferrolb_wire_fuzz::wire::{parse_inbound, EthernetFrame, FrameRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_inbound(data);
    if let Ok(repr) = FrameRepr::parse(data) {
        let bytes = repr.to_vec().expect("parsed frames re-emit");
        assert_eq!(FrameRepr::parse(&bytes), Ok(repr));
        let mut reused = vec![0xa5u8; bytes.len() + 37];
        let n = repr
            .emit(&mut EthernetFrame::new_unchecked(&mut reused[..]))
            .expect("larger buffer");
        assert_eq!(&reused[..n], &bytes[..]);
    }
});

#![no_main]
//! NS / NA message and option parsing without the checksum in the way.

use ferrolb_wire_fuzz::wire::{ndp::OptionIter, NdiscRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for opt in OptionIter::new(data) {
        if let Ok(o) = opt {
            assert_eq!(o.data.len() + 2, usize::from(o.len_units) * 8);
        }
    }
    if let Ok(nd) = NdiscRepr::parse(data) {
        let mut buf = vec![0u8; nd.buffer_len()];
        nd.emit(&mut buf).expect("sized buffer");
        assert_eq!(NdiscRepr::parse(&buf), Ok(nd));
    }
});

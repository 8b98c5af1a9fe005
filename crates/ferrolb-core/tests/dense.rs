//! Tables rebuilt dense ([`ferrolb_core::dense::Dense`]) take fewer bytes than the same
//! tables filled key after key, counted by this binary's allocator (its only test: nothing
//! else allocates meanwhile).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use counting::held;
use ferrolb_core::dense::Dense;

mod counting;

fn ip(i: u32) -> IpAddr {
    IpAddr::from((0x0a00_0000u32 + i).to_be_bytes())
}

/// Bytes `fill` holds in the table it returns, then once the table is rebuilt dense.
fn bytes<T: Dense>(fill: impl FnOnce() -> T) -> (usize, usize) {
    let base = held();
    let mut table = fill();
    let filled = held() - base;
    table.make_dense();
    let dense = held() - base;
    drop(table);
    eprintln!("{filled} bytes filled, {dense} dense");
    (filled, dense)
}

#[test]
fn tables_filled_in_key_order_take_about_half_less_once_dense() {
    const N: u32 = 10_000;
    // the shape of a per-IP table: an address and a record of a few words
    let (filled, dense) = bytes(|| {
        let mut m = BTreeMap::new();
        for i in 0..N {
            m.insert(ip(i), [u64::from(i); 4]);
        }
        m
    });
    assert!(
        dense * 10 < filled * 7,
        "map: {filled} bytes filled, {dense} dense"
    );
    let (filled, dense) = bytes(|| {
        let mut s = BTreeSet::new();
        for i in 0..N {
            s.insert((format!("ns/s{i:05}").into_boxed_str(), ip(i)));
        }
        s
    });
    // the strings are the same ones: only the nodes shrink
    let strings = N as usize * "ns/s00000".len();
    assert!(
        (dense - strings) * 10 < (filled - strings) * 7,
        "set: {filled} bytes filled, {dense} dense"
    );
    // a table filled in random order is not made larger
    let (filled, dense) = bytes(|| {
        let mut m = BTreeMap::new();
        for i in 0..N {
            m.insert(ip(i.wrapping_mul(2_654_435_761) % N), i);
        }
        m
    });
    assert!(
        dense <= filled,
        "random order: {filled} bytes filled, {dense} dense"
    );
}

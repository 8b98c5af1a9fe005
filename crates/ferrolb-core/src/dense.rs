//! B-trees rebuilt with full nodes.
//!
//! A `BTreeMap` filled by inserting keys in ascending order — how a speaker's per-IP
//! tables fill at start-up, one IP after the other — splits each full node so that the
//! left one keeps 6 of its 11 slots and never gets more: such a table uses about 55 % of
//! its nodes for good, and the nodes are most of what a table of small entries costs. The
//! same entries collected at once from sorted order fill every node ([`Dense::make_dense`]).
//! Contents and order are unchanged; later inserts split full nodes again where they land.

use std::collections::{BTreeMap, BTreeSet};

/// A table that can be rebuilt with full nodes.
pub trait Dense {
    /// Rebuilds the table from its entries in order, every node full (but the last of each
    /// level). Costs one pass over the entries and a vector of them for the time of it.
    fn make_dense(&mut self);
}

impl<K: Ord, V> Dense for BTreeMap<K, V> {
    fn make_dense(&mut self) {
        // `FromIterator` sorts (already sorted: one linear pass) and builds bottom-up,
        // each node filled before the next is started.
        *self = std::mem::take(self).into_iter().collect();
    }
}

impl<K: Ord> Dense for BTreeSet<K> {
    fn make_dense(&mut self) {
        *self = std::mem::take(self).into_iter().collect();
    }
}

/// Whether tables of `size` entries, `at` when last rebuilt dense, are due again: they grew
/// or shrank by more than an eighth of that (and by more than 64 entries). Rebuilding at
/// these points costs a constant number of entry moves per insert, and a table at rest is
/// never rebuilt.
pub fn due(at: usize, size: usize) -> bool {
    size.abs_diff(at) > at / 8 + 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The tables are rebuilt once they filled, and again only after they grew or shrank
    /// by an eighth: a table at rest is not rebuilt at every look.
    #[test]
    fn tables_are_rebuilt_dense_after_they_grew() {
        assert!(!due(0, 0) && !due(0, 64));
        assert!(due(0, 65));
        assert!(due(0, 10_000));
        assert!(!due(10_000, 10_000) && !due(10_000, 11_314));
        assert!(due(10_000, 11_315) && due(10_000, 8_685));
        assert!(!due(10_000, 8_686));
    }

    proptest! {
        /// A rebuilt table holds the same entries in the same order.
        #[test]
        fn a_dense_table_reads_as_before(keys in prop::collection::vec(any::<u16>(), 0..300)) {
            let map: BTreeMap<u16, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
            let mut dense = map.clone();
            dense.make_dense();
            prop_assert!(dense.iter().eq(map.iter()));
            let set: BTreeSet<u16> = keys.iter().copied().collect();
            let mut dense = set.clone();
            dense.make_dense();
            prop_assert!(dense.iter().eq(set.iter()));
        }
    }
}

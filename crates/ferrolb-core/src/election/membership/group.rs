//! Heartbeats on a multicast group: half the datagrams a node sends where its peers share a
//! link with it.
//!
//! Every node must hear every peer once per interval. Sent one by one, that is one datagram
//! per peer per interval; where the nodes share an L2 segment, one datagram to a multicast
//! group reaches all of them. A node alternates ([`to_group`]): on even ticks it sends one
//! heartbeat to the group, and by unicast only to the peers it has not heard on the group
//! within [`GroupReach::window`] (another subnet, a speaker that does not use the group, a
//! switch that stopped forwarding it); on odd ticks it sends to every peer by unicast. A peer
//! on the group hears the node every interval, as before, from half the datagrams.
//!
//! Whatever happens to the group — dropped by a switch, filtered on one node, lost one way
//! only — every peer still hears every node at least every second interval (the odd ticks),
//! which [`GroupReach::new`] requires to be well within the fence time; and two nodes that
//! stop hearing each other on the group are back to unicast at every tick within
//! [`GroupReach::window`]. Only a node that hears a peer on the group while that peer does
//! not hear it there keeps the two-interval gap (it cannot know). Nothing here judges
//! liveness: the group only carries heartbeats, and [`super::MeshRules`] judges them
//! wherever they came from.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::mesh::MeshTiming;

/// Whether tick `k` (1, 2, …: one per interval) sends to the group: the even ones.
pub fn to_group(k: u64) -> bool {
    k % 2 == 0
}

/// Which peers this node has heard on the heartbeat group, and when last.
#[derive(Debug, Clone)]
pub struct GroupReach {
    window: Duration,
    heard: BTreeMap<String, Instant>,
}

impl GroupReach {
    /// Group heartbeats under `timing`, or `None` when its fence time is under two and a
    /// half intervals: a peer that stops receiving the group hears a node only every second
    /// interval, and that gap (plus scheduling slack) must not make it silent.
    pub fn new(timing: MeshTiming) -> Option<Self> {
        (timing.fence_after * 2 >= timing.interval * 5).then(|| GroupReach {
            window: timing.interval * 5 / 2,
            heard: BTreeMap::new(),
        })
    }

    /// How long a peer heard on the group counts as sharing it: two and a half intervals
    /// (its group heartbeats come every second interval; one of them may be lost).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records a heartbeat of `node` that arrived on the group at `at`.
    pub fn heard(&mut self, node: &str, at: Instant) {
        match self.heard.get_mut(node) {
            Some(t) => *t = (*t).max(at),
            None => {
                self.heard.insert(node.to_string(), at);
            }
        }
    }

    /// Whether `node` was heard on the group within [`GroupReach::window`] before `now`:
    /// this node's even ticks then reach it on the group, and need no unicast.
    pub fn shares(&self, node: &str, now: Instant) -> bool {
        self.heard
            .get(node)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.window)
    }

    /// How many peers share the group at `now`.
    pub fn sharing(&self, now: Instant) -> usize {
        self.heard
            .values()
            .filter(|t| now.saturating_duration_since(**t) < self.window)
            .count()
    }

    /// Forgets the peers `keep` refuses (no longer members).
    pub fn retain(&mut self, keep: &dyn Fn(&str) -> bool) {
        self.heard.retain(|n, _| keep(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn even_ticks_go_to_the_group() {
        assert_eq!(
            (1..=6).map(to_group).collect::<Vec<_>>(),
            [false, true, false, true, false, true]
        );
    }

    #[test]
    fn the_group_needs_a_fence_time_of_two_and_a_half_intervals() {
        let t = |i, f, d| MeshTiming::new(ms(i), ms(f), ms(d), Duration::from_secs(30)).unwrap();
        assert!(GroupReach::new(MeshTiming::default()).is_some());
        assert_eq!(
            GroupReach::new(MeshTiming::default()).unwrap().window(),
            ms(250)
        );
        assert!(GroupReach::new(t(100, 250, 500)).is_some());
        assert!(GroupReach::new(t(100, 240, 480)).is_none());
        assert!(GroupReach::new(t(150, 300, 600)).is_none());
        assert!(GroupReach::new(t(200, 400, 800)).is_none());
    }

    #[test]
    fn a_peer_shares_the_group_for_the_window_after_it_was_heard_there() {
        let t0 = Instant::now();
        let mut g = GroupReach::new(MeshTiming::default()).unwrap();
        assert!(!g.shares("b", t0));
        g.heard("b", t0 + ms(10));
        // an older arrival read later does not move it back
        g.heard("b", t0);
        assert!(g.shares("b", t0 + ms(259)));
        assert!(!g.shares("b", t0 + ms(260)));
        assert_eq!(g.sharing(t0 + ms(100)), 1);
        g.heard("c", t0 + ms(100));
        assert_eq!(g.sharing(t0 + ms(300)), 1);
        g.retain(&|n| n != "c");
        assert_eq!(g.sharing(t0 + ms(300)), 0);
        assert!(!g.shares("a", t0 + ms(10)), "never heard");
    }
}

//! The heartbeat schedule with a multicast group ([`to_group`], [`GroupReach`]), simulated at
//! millisecond resolution: nodes on their own phases, each link with its own delay, the
//! group failing for any choice of directions at any time (and coming back). Whatever the
//! group does, every node hears every peer at least every second interval; two nodes that
//! hear each other on the group, or stopped hearing each other there for a window, every
//! interval; and on a working group a node sends about half the datagrams of unicast alone.

use std::time::{Duration, Instant};

use ferrolb_core::election::membership::{to_group, GroupReach, MeshTiming};
use proptest::prelude::*;

const I: u64 = 100;
const SIM_MS: u64 = 6_000;

/// One run: `n` nodes with tick phases `phase`, link delays `delay[s][r]` (ms), and the group
/// from `s` to `r` lost during `cut[s][r]` (`[from, to)` in ms).
#[derive(Debug, Clone)]
struct World {
    n: usize,
    phase: Vec<u64>,
    delay: Vec<Vec<u64>>,
    cut: Vec<Vec<Option<(u64, u64)>>>,
}

#[derive(Debug, Default)]
struct Outcome {
    /// Every arrival at `r` from `s`: (time, gap since the previous arrival from `s`).
    arrivals: Vec<Vec<Vec<(u64, u64)>>>,
    /// Datagrams each node sent (a group datagram counts once).
    sent: Vec<u64>,
}

fn group_works(w: &World, s: usize, r: usize, t: u64) -> bool {
    !w.cut[s][r].is_some_and(|(a, b)| (a..b).contains(&t))
}

fn run(w: &World) -> Outcome {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut reach: Vec<GroupReach> = (0..w.n)
        .map(|_| GroupReach::new(MeshTiming::default()).unwrap())
        .collect();
    let names: Vec<String> = (0..w.n).map(|i| format!("n{i}")).collect();
    let mut out = Outcome {
        arrivals: vec![vec![Vec::new(); w.n]; w.n],
        sent: vec![0; w.n],
    };
    let mut last: Vec<Vec<Option<u64>>> = vec![vec![None; w.n]; w.n];
    // (arrival ms, from, to, via the group)
    let mut in_flight: Vec<(u64, usize, usize, bool)> = Vec::new();
    for t in 0..SIM_MS {
        // what was sent with no delay at the end of the last millisecond arrives now
        in_flight.sort();
        let due: Vec<_> = in_flight.iter().copied().filter(|a| a.0 <= t).collect();
        in_flight.retain(|a| a.0 > t);
        for (_, s, r, group) in due {
            if group {
                reach[r].heard(&names[s], at(t));
            }
            let gap = last[s][r].map_or(0, |p| t - p);
            last[s][r] = Some(t);
            out.arrivals[s][r].push((t, gap));
        }
        for (s, own) in reach.iter().enumerate() {
            if t < w.phase[s] || (t - w.phase[s]) % I != 0 {
                continue;
            }
            let k = (t - w.phase[s]) / I + 1;
            let peers = (0..w.n).filter(|&r| r != s);
            if to_group(k) {
                out.sent[s] += 1;
                for r in peers.clone() {
                    if group_works(w, s, r, t) {
                        in_flight.push((t + w.delay[s][r], s, r, true));
                    }
                }
                for r in peers {
                    if !own.shares(&names[r], at(t)) {
                        out.sent[s] += 1;
                        in_flight.push((t + w.delay[s][r], s, r, false));
                    }
                }
            } else {
                for r in peers {
                    out.sent[s] += 1;
                    in_flight.push((t + w.delay[s][r], s, r, false));
                }
            }
        }
    }
    out
}

fn world() -> impl Strategy<Value = World> {
    (3usize..7).prop_flat_map(|n| {
        let cut = proptest::option::weighted(0.4, (0u64..4_000, 200u64..3_000))
            .prop_map(|c| c.map(|(a, len)| (a, a + len)));
        (
            proptest::collection::vec(0u64..I, n),
            proptest::collection::vec(proptest::collection::vec(0u64..3, n), n),
            proptest::collection::vec(proptest::collection::vec(cut, n), n),
        )
            .prop_map(move |(phase, delay, cut)| World {
                n,
                phase,
                delay,
                cut,
            })
    })
}

/// Slack for the links' delays (up to 2 ms each way of a comparison).
const JITTER: u64 = 3;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_peer_is_heard_every_second_interval_whatever_the_group_does(w in world()) {
        let out = run(&w);
        let fence = MeshTiming::default().fence_after.as_millis() as u64;
        for s in 0..w.n {
            for r in (0..w.n).filter(|&r| r != s) {
                let arr = &out.arrivals[s][r];
                prop_assert!(!arr.is_empty());
                let worst = arr.iter().skip(1).map(|a| a.1).max().unwrap_or(0);
                prop_assert!(worst <= 2 * I + JITTER, "n{r} heard n{s} after a gap of {worst} ms");
                prop_assert!(worst < fence);
            }
        }
    }

    #[test]
    fn nodes_that_hear_each_other_on_the_group_or_lost_it_both_ways_hear_each_other_every_interval(w in world()) {
        let out = run(&w);
        // a window after a change of the group, and the tick that follows (an arrival is
        // judged by the gap before it: no change of the group within that gap)
        let settle = 250 + I + JITTER;
        for s in 0..w.n {
            for r in (0..w.n).filter(|&r| r != s) {
                // spans during which the group works the same way in both directions
                let (c1, c2) = (w.cut[s][r], w.cut[r][s]);
                let changes: Vec<u64> = [c1, c2].iter().flatten().flat_map(|c| [c.0, c.1]).collect();
                let steady = |t: u64| {
                    group_works(&w, s, r, t) == group_works(&w, r, s, t)
                        && changes.iter().all(|&c| t < c || t >= c + settle)
                        && t >= 3 * I + settle
                };
                for &(t, gap) in out.arrivals[s][r].iter().skip(1) {
                    if steady(t) {
                        prop_assert!(gap <= I + JITTER, "n{r} heard n{s} at {t} ms after {gap} ms (cuts {c1:?} {c2:?})");
                    }
                }
            }
        }
    }
}

#[test]
fn on_a_working_group_a_node_sends_about_half_the_datagrams() {
    for n in [3, 10, 40] {
        let w = World {
            n,
            phase: (0..n as u64).map(|i| i * I / n as u64).collect(),
            delay: vec![vec![1; n]; n],
            cut: vec![vec![None; n]; n],
        };
        let out = run(&w);
        let ticks = SIM_MS / I;
        let unicast_only = ticks * (n as u64 - 1);
        // every two ticks: one to the group and one to each peer, instead of two to each
        // peer; the first ticks (before the peers were heard on the group) unicast to all
        let ideal = ticks / 2 * n as u64;
        for (s, &sent) in out.sent.iter().enumerate() {
            assert!(
                sent >= ideal && sent <= ideal + 2 * (n as u64 - 1),
                "n={n}: node {s} sent {sent}, not about {ideal} (unicast alone: {unicast_only})"
            );
        }
    }
}

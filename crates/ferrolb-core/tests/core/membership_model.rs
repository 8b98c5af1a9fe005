//! Model check of the peer-liveness protocol (docs/ARCHITECTURE.md, *Peer liveness*).
//!
//! A discrete-time simulation (50 ms ticks) of N speakers, the API server, the claim
//! records and the network, in which every decision is taken by the **real** pure code:
//! [`MeshRules::evaluate`] (members, permission, alive peers), [`LeaseClock`] (own Lease
//! freshness, peers' Lease rule) and [`decide_claim`] (claims), with the speaker shell's
//! sequencing around them (fence ⇒ withdraw everything, and re-assert each claim with an
//! optimistic-concurrency write before answering again; optimistic-concurrency claim
//! writes; a fresh read of a Lease-judged holder's Lease before taking over).
//!
//! Faults: speaker crashes and restarts, a node's link going down (no heartbeats, no API),
//! two-sided partitions (the API server on either side), API server outages, and one
//! node losing only its API access. Invariant, checked at **every tick**: no IP is ever
//! announced by two nodes at once — not even by two nodes on either side of a partition
//! (so an owner cut off from its peers has stopped before its successor starts). After
//! every scenario the faults are healed and exactly one announcer per IP must emerge (so
//! the invariant is not met vacuously).
//! Non-transitive partitions (A hears B, B hears C, A does not hear C) are outside the
//! model: see the architecture document.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrolb_core::election::membership::{MeshRules, MeshTiming, OwnInput, PeerInput};
use ferrolb_core::election::{decide_claim, ClaimAction, HolderState, LeaseClock, OwnerRecord};
use proptest::prelude::*;

const TICK: Duration = Duration::from_millis(50);
const IPS: usize = 2;
/// Lease renewal every 6 ticks (300 ms).
const RENEW_EVERY: u64 = 6;
/// Heartbeat every 2 ticks (100 ms).
const HB_EVERY: u64 = 2;
const REAP_AFTER: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
enum Ev {
    Crash(usize),
    Restart(usize),
    NicDown(usize),
    NicUp(usize),
    /// Nodes whose bit is set go to side 1; the API server to side `api_side`.
    Split {
        mask: u8,
        api_side: u8,
    },
    Heal,
    ApiDown,
    ApiUp,
    ApiCut(usize),
    ApiRestore(usize),
}

#[derive(Clone, Debug, Default)]
struct Node {
    up: bool,
    synced: bool,
    phase: u64,
    last_renewed: Option<Instant>,
    lease_was_fresh: bool,
    /// Peers' Leases as observed: (resourceVersion, when it was seen changing — restarted
    /// after an observation gap, when it really changed).
    observed: BTreeMap<usize, (u64, Instant, Instant)>,
    reaped: BTreeSet<String>,
    last_heard: BTreeMap<usize, Instant>,
    /// Claim records as read: ip → (record, version).
    view: BTreeMap<usize, (OwnerRecord, u64)>,
    needs_confirm: bool,
    announcing: BTreeSet<usize>,
    permitted_since: Option<Instant>,
    /// Tick the speaker (re)started at, and the tick its heartbeat key loads (heartbeats
    /// flow from then on; before, the Lease rules apply).
    started_at: u64,
    key_at: u64,
    /// Times this node lost its permission (fenced).
    fences: u32,
}

/// Key-load delay of a speaker starting at tick `t` (0 to 400 ms, pseudo-random).
fn key_delay(i: usize, t: u64) -> u64 {
    (((i as u64 + 3) * 2654435761) ^ ((t + 11) * 40503)) % 9
}

struct World {
    n: usize,
    t: u64,
    base: Instant,
    rules: MeshRules,
    clock: LeaseClock,
    api_up: bool,
    api_side: u8,
    side: Vec<u8>,
    nic: Vec<bool>,
    api_cut: Vec<bool>,
    lease_rv: Vec<u64>,
    records: BTreeMap<usize, (OwnerRecord, u64)>,
    nodes: Vec<Node>,
    sent: Vec<usize>,
}

fn name(i: usize) -> String {
    format!("n{i}")
}

fn index(s: &str) -> usize {
    s[1..].parse().unwrap()
}

/// MetalLB-like ranking: a fixed pseudo-random order of nodes per IP.
fn rank(ip: usize, node: usize) -> u64 {
    (((node as u64 + 1) * 2654435761) ^ ((ip as u64 + 7) * 40503)) % 1009
}

impl World {
    fn new(n: usize, rules: MeshRules) -> Self {
        let mut w = World {
            n,
            t: 0,
            base: Instant::now(),
            rules,
            clock: LeaseClock::new(
                Duration::from_millis(2000),
                Duration::from_millis(1200),
                Duration::from_millis(300),
            )
            .unwrap(),
            api_up: true,
            api_side: 0,
            side: vec![0; n],
            nic: vec![true; n],
            api_cut: vec![false; n],
            lease_rv: vec![0; n],
            records: BTreeMap::new(),
            nodes: Vec::new(),
            sent: Vec::new(),
        };
        for i in 0..n {
            w.nodes.push(Node {
                up: true,
                phase: (i as u64 * 5) % RENEW_EVERY,
                key_at: key_delay(i, 0),
                ..Default::default()
            });
        }
        w
    }

    fn now(&self) -> Instant {
        self.base + TICK * self.t as u32
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.nic[a] && self.nic[b] && self.side[a] == self.side[b]
    }

    fn api(&self, i: usize) -> bool {
        self.api_up && self.nic[i] && !self.api_cut[i] && self.side[i] == self.api_side
    }

    fn apply(&mut self, ev: &Ev) {
        match *ev {
            Ev::Crash(i) => {
                let phase = self.nodes[i].phase;
                self.nodes[i] = Node {
                    phase,
                    ..Default::default()
                };
            }
            Ev::Restart(i) => {
                if !self.nodes[i].up {
                    let nd = &mut self.nodes[i];
                    nd.up = true;
                    nd.started_at = self.t;
                    nd.key_at = self.t + key_delay(i, self.t);
                }
            }
            Ev::NicDown(i) => self.nic[i] = false,
            Ev::NicUp(i) => self.nic[i] = true,
            Ev::Split { mask, api_side } => {
                for i in 0..self.n {
                    self.side[i] = (mask >> i) & 1;
                }
                self.api_side = api_side;
            }
            Ev::Heal => {
                self.side = vec![0; self.n];
                self.api_side = 0;
                self.nic = vec![true; self.n];
                self.api_cut = vec![false; self.n];
                self.api_up = true;
            }
            Ev::ApiDown => self.api_up = false,
            Ev::ApiUp => self.api_up = true,
            Ev::ApiCut(i) => self.api_cut[i] = true,
            Ev::ApiRestore(i) => self.api_cut[i] = false,
        }
    }

    fn announcers(&self, ip: usize) -> Vec<usize> {
        (0..self.n)
            .filter(|i| self.nodes[*i].up && self.nodes[*i].announcing.contains(&ip))
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        for ip in 0..IPS {
            let a = self.announcers(ip);
            for x in &a {
                for y in &a {
                    if x < y {
                        return Err(format!(
                            "t={}ms: n{x} and n{y} both announce ip{ip} (they {} each other)",
                            self.t * 50,
                            if self.linked(*x, *y) {
                                "hear"
                            } else {
                                "do not hear"
                            }
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
        self.t += 1;
        let now = self.now();
        // 1. heartbeats sent last tick arrive
        let sent = std::mem::take(&mut self.sent);
        for from in sent {
            for to in 0..self.n {
                if to != from
                    && self.nodes[to].up
                    && self.t > self.nodes[to].key_at
                    && self.linked(from, to)
                {
                    self.nodes[to].last_heard.insert(from, now);
                }
            }
        }
        // 2. Lease renewals (request sent and committed now)
        for i in 0..self.n {
            let nd = &self.nodes[i];
            if nd.up && nd.synced && (self.t + nd.phase) % RENEW_EVERY == 0 && self.api(i) {
                self.lease_rv[i] += 1;
                self.nodes[i].last_renewed = Some(now);
            }
        }
        // 3. watches: Leases and claim records reach nodes that see the API server
        for i in 0..self.n {
            if !self.nodes[i].up || !self.api(i) {
                continue;
            }
            self.nodes[i].synced = true;
            for k in 0..self.n {
                if k == i || self.lease_rv[k] == 0 {
                    continue;
                }
                let rv = self.lease_rv[k];
                let o = self.nodes[i].observed.entry(k).or_insert((rv, now, now));
                if o.0 != rv {
                    *o = (rv, now, now);
                }
            }
            self.nodes[i].view = self.records.clone();
        }
        // 4. every speaker's pass (rotating order: claim races go either way)
        for k in 0..self.n {
            let i = (k + self.t as usize) % self.n;
            if self.nodes[i].up && self.nodes[i].synced {
                self.pass(i, now);
            }
        }
        // 5. heartbeats go out
        for i in 0..self.n {
            let nd = &self.nodes[i];
            if nd.up && self.t >= nd.key_at && (self.t + nd.phase) % HB_EVERY == 0 {
                self.sent.push(i);
            }
        }
        self.check()
    }

    fn pass(&mut self, i: usize, now: Instant) {
        let clock = self.clock;
        let api = self.api(i);
        let me = name(i);
        let nd = &mut self.nodes[i];
        let lease_fresh = clock.may_announce(nd.last_renewed, now);
        if lease_fresh && !nd.lease_was_fresh && nd.last_renewed.is_some() {
            for o in nd.observed.values_mut() {
                o.1 = o.1.max(now);
            }
        }
        nd.lease_was_fresh = lease_fresh;
        let peers: BTreeMap<String, PeerInput> = nd
            .observed
            .iter()
            .map(|(k, (_, at, really))| {
                (
                    name(*k),
                    PeerInput {
                        last_heard: nd.last_heard.get(k).copied(),
                        lease_alive: clock.peer_alive(*at, now),
                        lease_held_since: Some(*really),
                    },
                )
            })
            .collect();
        let mesh_enabled = self.t >= nd.key_at;
        let since = if mesh_enabled {
            nd.key_at
        } else {
            nd.started_at
        };
        let own = OwnInput {
            lease_fresh,
            renewed_ever: nd.last_renewed.is_some(),
            mesh_enabled,
            heard_any: !nd.last_heard.is_empty(),
            reap_after: REAP_AFTER,
            permitted_since: nd.permitted_since,
            heartbeats_since: Some(self.base + TICK * since as u32),
        };
        let live = self.rules.evaluate(&peers, own, &nd.reaped, now);
        if nd.permitted_since.is_some() && !live.may {
            nd.fences += 1;
        }
        nd.permitted_since = live.permitted_since;
        nd.reaped = live.reaped.clone();
        let may = live.may;
        if !may {
            nd.announcing.clear();
            nd.needs_confirm = true;
        }
        let mut want = BTreeSet::new();
        let mut writes = Vec::new();
        for ip in 0..IPS {
            let rec = nd.view.get(&ip).map(|(r, _)| r.clone());
            let holder = rec
                .as_ref()
                .map(|r| r.holder.clone())
                .filter(|h| !h.is_empty());
            let candidate = |n: &String| {
                if *n == me {
                    may
                } else {
                    live.alive.contains(n)
                }
            };
            let desired = match &holder {
                Some(h) if candidate(h) => Some(h.clone()),
                _ => (0..self.n)
                    .map(name)
                    .filter(|n| candidate(n))
                    .min_by_key(|n| rank(ip, index(n))),
            };
            let state = match &holder {
                None => HolderState::Gone,
                Some(h) if *h == me => HolderState::Alive,
                Some(h) if live.alive.contains(h) => HolderState::Alive,
                Some(_) => HolderState::Gone,
            };
            match decide_claim(&me, desired.as_deref(), rec.as_ref(), state, may) {
                ClaimAction::Announce => {
                    want.insert(ip);
                }
                ClaimAction::Claim { record } => {
                    let confirm = holder
                        .clone()
                        .filter(|h| state == HolderState::Gone && !live.by_heartbeat.contains(h));
                    writes.push((ip, Some(record), confirm));
                }
                ClaimAction::Release { record } => {
                    nd.announcing.remove(&ip);
                    writes.push((ip, record, None));
                }
                ClaimAction::Idle | ClaimAction::WaitForHolder => {}
            }
        }
        // after a fence, re-assert each record (a write with the version just read) before
        // answering again: a peer claiming it concurrently then loses with a conflict
        if may && nd.needs_confirm && !want.is_empty() {
            if api {
                want.retain(|ip| match self.records.get_mut(ip) {
                    Some((r, v)) if r.holder == me => {
                        *v += 1;
                        true
                    }
                    _ => false,
                });
                nd.view = self.records.clone();
                nd.needs_confirm = false;
            } else {
                want.clear();
            }
        } else if may {
            nd.needs_confirm = false;
        }
        if may && api {
            for (ip, record, confirm) in writes {
                if let Some(h) = confirm {
                    let k = index(&h);
                    let seen = nd.observed.get(&k).map(|o| o.0);
                    if seen != Some(self.lease_rv[k]) {
                        nd.observed.insert(k, (self.lease_rv[k], now, now));
                        continue; // renewed after all
                    }
                }
                let version = nd.view.get(&ip).map(|(_, v)| *v);
                let current = self.records.get(&ip).map(|(_, v)| *v);
                if version != current {
                    continue; // 409: someone wrote first
                }
                match record {
                    Some(r) => {
                        let v = current.unwrap_or(0) + 1;
                        if r.holder == me {
                            want.insert(ip);
                        }
                        self.records.insert(ip, (r.clone(), v));
                        nd.view.insert(ip, (r, v));
                    }
                    None => {
                        self.records.remove(&ip);
                        nd.view.remove(&ip);
                    }
                }
            }
        }
        nd.announcing = want;
    }

    fn run(&mut self, ticks: u64) -> Result<(), String> {
        for _ in 0..ticks {
            self.step()?;
        }
        Ok(())
    }

    fn owners(&self) -> Vec<Vec<usize>> {
        (0..IPS).map(|ip| self.announcers(ip)).collect()
    }
}

fn rules() -> MeshRules {
    MeshRules {
        timing: MeshTiming::default(),
    }
}

/// Runs a scenario; checks the invariant at every tick, then heals and expects one owner
/// per IP within 10 s.
fn scenario(n: usize, rules: MeshRules, events: &[(Ev, u64)]) -> Result<(), String> {
    let mut w = World::new(n, rules);
    w.run(60)?;
    for (ev, wait) in events {
        if let Ev::Crash(i)
        | Ev::Restart(i)
        | Ev::NicDown(i)
        | Ev::NicUp(i)
        | Ev::ApiCut(i)
        | Ev::ApiRestore(i) = ev
        {
            if *i >= n {
                continue;
            }
        }
        w.apply(ev);
        w.run(*wait)?;
    }
    w.apply(&Ev::Heal);
    for i in 0..n {
        w.apply(&Ev::Restart(i));
    }
    w.run(200)?;
    for (ip, a) in w.owners().iter().enumerate() {
        if a.len() != 1 {
            return Err(format!("after healing, ip{ip} is announced by {a:?}"));
        }
    }
    Ok(())
}

fn event(n: usize) -> impl Strategy<Value = Ev> {
    let i = 0..n;
    prop_oneof![
        i.clone().prop_map(Ev::Crash),
        i.clone().prop_map(Ev::Restart),
        i.clone().prop_map(Ev::NicDown),
        i.clone().prop_map(Ev::NicUp),
        (any::<u8>(), 0u8..2).prop_map(|(mask, api_side)| Ev::Split { mask, api_side }),
        Just(Ev::Heal),
        Just(Ev::ApiDown),
        Just(Ev::ApiUp),
        i.clone().prop_map(Ev::ApiCut),
        i.prop_map(Ev::ApiRestore),
    ]
}

fn events() -> impl Strategy<Value = (usize, Vec<(Ev, u64)>)> {
    (1usize..=5).prop_flat_map(|n| {
        (
            Just(n),
            proptest::collection::vec((event(n), 1u64..=80), 1..20),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Any interleaving of crashes, restarts, link cuts, partitions, API outages and heals:
    /// never two announcers of one IP; one owner per IP once healed.
    #[test]
    fn at_most_one_announcer_per_ip_at_every_instant((n, evs) in events()) {
        if let Err(e) = scenario(n, rules(), &evs) {
            prop_assert!(false, "{e}\nn={n} events={evs:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A cluster whose speakers start at about the same time (within 500 ms: a DaemonSet
    /// created at once, the lab) never fences anyone: no VIP is announced and then
    /// withdrawn again while the membership grows. Then one owner per IP.
    #[test]
    fn a_healthy_start_never_fences(
        (n, offsets) in (1usize..=5).prop_flat_map(|n| (Just(n), proptest::collection::vec(0u64..=10, n)))
    ) {
        let mut w = World::new(n, rules());
        for nd in &mut w.nodes {
            nd.up = false;
        }
        for t in 0..=10 {
            for (i, o) in offsets.iter().enumerate() {
                if *o == t {
                    w.apply(&Ev::Restart(i));
                }
            }
            w.step().unwrap();
        }
        w.run(200).unwrap();
        let fences: Vec<u32> = w.nodes.iter().map(|nd| nd.fences).collect();
        prop_assert!(fences.iter().all(|f| *f == 0), "fences {fences:?}, n={n} offsets={offsets:?}");
        for (ip, a) in w.owners().iter().enumerate() {
            prop_assert_eq!(a.len(), 1, "ip{} announced by {:?}", ip, a);
        }
    }
}

#[test]
fn api_outage_of_five_minutes_changes_nothing() {
    for n in 1..=5 {
        let mut w = World::new(n, rules());
        w.run(60).unwrap();
        let before = w.owners();
        assert!(before.iter().all(|a| a.len() == 1), "{before:?}");
        w.apply(&Ev::ApiDown);
        for _ in 0..6000 {
            w.step().unwrap();
            assert_eq!(w.owners(), before, "n={n} t={}ms", w.t * 50);
        }
        w.apply(&Ev::ApiUp);
        for _ in 0..200 {
            w.step().unwrap();
            assert_eq!(w.owners(), before, "after the API returned, n={n}");
        }
    }
}

/// Ticks from `ev` until some node other than `old` announces `ip`.
fn takeover_ticks(n: usize, ev: impl Fn(usize) -> Ev) -> u64 {
    let mut w = World::new(n, rules());
    w.run(60).unwrap();
    let old = w.owners()[0][0];
    w.apply(&ev(old));
    for t in 1..2000 {
        w.step().unwrap();
        if w.announcers(0).iter().any(|a| *a != old) {
            return t;
        }
    }
    panic!("no takeover, n={n}");
}

#[test]
fn crash_or_link_cut_fails_over_in_under_a_second_with_three_or_more_nodes() {
    for n in 3..=5 {
        let crash = takeover_ticks(n, Ev::Crash);
        let cut = takeover_ticks(n, Ev::NicDown);
        // dead_after (600 ms) + at most one heartbeat period + a tick of evaluation
        assert!(
            crash * 50 <= 750,
            "n={n}: crash takeover after {}ms",
            crash * 50
        );
        assert!(
            cut * 50 <= 750,
            "n={n}: link-cut takeover after {}ms",
            cut * 50
        );
        assert!(crash * 50 >= 500, "n={n}: too early ({}ms)", crash * 50);
    }
}

#[test]
fn two_nodes_fail_over_at_lease_speed() {
    // the Lease duration (2 s), counted from the crashed node's last renewal (up to one
    // renewal period before the crash), plus at most a renewal period and a claim write
    let mut w = World::new(2, rules());
    w.run(60).unwrap();
    let old = w.owners()[0][0];
    let renewed = w.nodes[old].last_renewed.unwrap();
    w.apply(&Ev::Crash(old));
    while !w.announcers(0).iter().any(|a| *a != old) {
        w.step().unwrap();
        assert!(w.t < 60 + 200, "no takeover");
    }
    let t = (w.now() - renewed).as_millis();
    assert!(
        (2000..=2500).contains(&t),
        "2-node takeover {t}ms after the crashed node's last renewal"
    );
    // the partitioned owner of a 2-node cluster keeps the IP while it reaches the API
    let mut w = World::new(2, rules());
    w.run(60).unwrap();
    let before = w.owners();
    let owner = before[0][0];
    let other = 1 - owner;
    w.apply(&Ev::Split {
        mask: 1 << other,
        api_side: 0,
    });
    if w.side[owner] != w.api_side {
        w.api_side = w.side[owner];
    }
    w.run(400).unwrap();
    assert_eq!(w.announcers(0), vec![owner]);
}

#[test]
fn sequential_crashes_shrink_the_membership_simultaneous_majority_loss_does_not() {
    // One crash, then (after the dead member is reaped, 20 s) the owner's crash: the last
    // node takes over on the two-node rules (Lease witness).
    let mut w = World::new(3, rules());
    w.run(60).unwrap();
    let owner = w.owners()[0][0];
    let first = (0..3).find(|i| *i != owner).unwrap();
    let survivor = (0..3).find(|i| *i != owner && *i != first).unwrap();
    w.apply(&Ev::Crash(first));
    w.run(25 * 20).unwrap();
    assert_eq!(w.announcers(0), vec![owner]);
    w.apply(&Ev::Crash(owner));
    let mut t = 0;
    while !w.announcers(0).contains(&survivor) {
        w.step().unwrap();
        t += 1;
        assert!(t < 200, "survivor never took over");
    }
    assert!(t * 50 <= 2500, "after {}ms", t * 50);
    // Two of three at once: the survivor cannot tell this from being cut off from a
    // majority that still announces, so it stays silent.
    let mut w = World::new(3, rules());
    w.run(60).unwrap();
    let owner = w.owners()[0][0];
    let other = (0..3).find(|i| *i != owner).unwrap();
    w.apply(&Ev::Crash(owner));
    w.apply(&Ev::Crash(other));
    w.run(40 * 20).unwrap();
    assert!(w.owners().iter().all(|a| a.is_empty()));
}

#[test]
fn the_check_finds_the_overlap_when_the_margin_is_removed() {
    // fence after == death time: the cut-off owner still answers when its successor starts.
    let bad = MeshRules {
        timing: MeshTiming {
            interval: Duration::from_millis(100),
            fence_after: Duration::from_millis(600),
            dead_after: Duration::from_millis(600),
            max_clock_skew: Duration::from_secs(30),
        },
    };
    // cut the owner's link at each phase of the heartbeat and renewal cycles
    let found = (60..72).any(|warm| {
        let mut w = World::new(3, bad);
        w.run(warm).unwrap();
        let o = w.owners()[0][0];
        w.apply(&Ev::NicDown(o));
        w.run(60).is_err()
    });
    assert!(found, "the model check cannot see a broken margin");
}

#[test]
fn a_node_back_from_a_long_isolation_does_not_reap_the_majority() {
    // n2 alone with the API server for 25 s (longer than the reaping time), the majority
    // without it; on heal n2 hears a quorum again (first n0 and n4, a tick before n1 and
    // n3) and must not take the majority's silence during the isolation for death.
    for api_down_too in [false, true] {
        let mut evs = vec![(
            Ev::Split {
                mask: 1 << 2,
                api_side: 1,
            },
            if api_down_too { 200 } else { 500 },
        )];
        if api_down_too {
            evs.push((Ev::ApiDown, 100));
            evs.push((Ev::ApiUp, 200));
        }
        scenario(5, rules(), &evs).unwrap();
    }
}

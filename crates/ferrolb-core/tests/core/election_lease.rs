//! Lease timing, fencing, and the owner-record claim protocol: table tests, proptests and
//! an exhaustive model check of the claim protocol over crashes, partitions, restarts and
//! arbitrary (disagreeing) election views.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use ferrolb_core::election::*;
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn quiet_renewals_keep_the_lease_fresh_and_a_failure_is_retried_at_the_retry_period() {
    let t0 = Instant::now();
    for (d, r, p) in [
        (2000, 1200, 300),
        (2000, 1500, 500),
        (3000, 1000, 500),
        (15000, 10000, 2000),
    ] {
        let c = LeaseClock::new(ms(d), ms(r), ms(p)).unwrap();
        let quiet = c.quiet_period();
        assert!(
            quiet >= c.retry_period() && quiet < c.renew_deadline(),
            "{c:?}"
        );
        assert_eq!(c.next_renewal(t0, true, false), t0 + c.retry_period());
        assert_eq!(c.next_renewal(t0, false, false), t0 + c.retry_period());
        assert_eq!(c.next_renewal(t0, false, true), t0 + c.retry_period());
        assert_eq!(c.next_renewal(t0, true, true), t0 + quiet);
        // renewing at the quiet period, the Lease is fresh until the next renewal is sent
        assert!(c.may_announce(Some(t0), c.next_renewal(t0, true, true)));
    }
    assert_eq!(LeaseClock::default().quiet_period(), ms(900));
}

#[test]
fn lease_clock_validation() {
    assert!(LeaseClock::new(ms(2000), ms(1500), ms(500)).is_ok());
    assert_eq!(
        LeaseClock::new(ms(2000), ms(1200), ms(300)).unwrap(),
        LeaseClock::default()
    );
    assert!(matches!(
        LeaseClock::new(ms(2000), ms(2000), ms(500)),
        Err(LeaseClockError::DeadlineTooLong { .. })
    ));
    assert!(matches!(
        LeaseClock::new(ms(2000), ms(1800), ms(500)),
        Err(LeaseClockError::DeadlineTooLong { .. })
    ));
    assert!(LeaseClock::new(ms(2000), ms(1750), ms(500)).is_ok());
    assert!(matches!(
        LeaseClock::new(ms(2000), ms(1500), ms(800)),
        Err(LeaseClockError::RetryTooLong { .. })
    ));
    assert!(matches!(
        LeaseClock::new(ms(2000), ms(1500), ms(0)),
        Err(LeaseClockError::RetryTooLong { .. })
    ));
    assert!(LeaseClock::new(Duration::MAX, Duration::MAX, ms(1)).is_err());
    assert!(matches!(
        LeaseClock::new(Duration::MAX, ms(1500), ms(500)),
        Err(LeaseClockError::LeaseTooLong(_))
    ));
    assert!(LeaseClock::new(MAX_LEASE_DURATION, ms(1500), ms(500)).is_ok());
    let c = LeaseClock::default();
    assert_eq!(
        (c.lease_duration(), c.renew_deadline(), c.retry_period()),
        (ms(2000), ms(1200), ms(300))
    );
    assert_eq!(
        (c.lease_duration(), c.renew_deadline(), c.retry_period()),
        (
            DEFAULT_LEASE_DURATION,
            DEFAULT_RENEW_DEADLINE,
            DEFAULT_RETRY_PERIOD
        )
    );
}

#[test]
fn may_announce_and_peer_alive_boundaries() {
    let c = LeaseClock::default();
    let t0 = Instant::now();
    assert!(!c.may_announce(None, t0));
    assert!(c.may_announce(Some(t0), t0));
    assert!(c.may_announce(Some(t0), t0 + ms(1199)));
    assert!(!c.may_announce(Some(t0), t0 + ms(1200)));
    // A renewal "in the future" (clock read races) is fine.
    assert!(c.may_announce(Some(t0 + ms(10)), t0));
    assert!(c.peer_alive(t0, t0 + ms(1999)));
    assert!(!c.peer_alive(t0, t0 + ms(2000)));
    assert_eq!(c.fence_at(t0), t0 + ms(1200));
    assert_eq!(c.peer_expires_at(t0), t0 + ms(2000));
}

proptest! {
    /// Whatever the timings (valid ones) and whenever the observer saw the renewal
    /// (no earlier than it was sent), the holder stops announcing at least
    /// MIN_FENCE_MARGIN before the observer considers it dead.
    #[test]
    fn holder_fences_before_peers_expire_it(
        lease in 300u64..30_000, deadline_frac in 0.0f64..1.0, send in 0u64..10_000,
        delay in 0u64..5_000, probe in 0u64..40_000,
    ) {
        let lease_d = ms(lease);
        let max_deadline = lease - 250;
        let deadline = ((max_deadline as f64) * deadline_frac) as u64;
        prop_assume!(deadline >= 2);
        let c = LeaseClock::new(lease_d, ms(deadline), ms(deadline / 2)).unwrap();
        let base = Instant::now();
        let sent = base + ms(send);
        let observed = sent + ms(delay);
        prop_assert!(c.fence_at(sent) + MIN_FENCE_MARGIN <= c.peer_expires_at(observed));
        let now = base + ms(probe);
        // Never: the observer thinks the holder is dead while it may still announce.
        prop_assert!(c.peer_alive(observed, now) || !c.may_announce(Some(sent), now));
    }
}

#[test]
fn fence_requires_a_fresh_read_after_acquisition() {
    let c = LeaseClock::default();
    let t0 = Instant::now();
    let mut f = Fence::new(c);
    // the Lease rule: permitted while the own Lease is fresh
    let lease_rule = |f: &mut Fence, now: Instant| {
        let fresh = f.lease_fresh(now);
        f.permission(fresh, now);
    };
    lease_rule(&mut f, t0);
    assert!(!f.may_announce() && !f.needs_read());
    f.renewed(t0);
    lease_rule(&mut f, t0);
    assert!(!f.may_announce(), "records not read yet");
    assert!(f.needs_read());
    f.records_read(t0 - ms(1)); // started before acquisition: does not count
    assert!(!f.may_announce());
    f.records_read(t0 + ms(5));
    assert!(f.may_announce() && !f.needs_read());
    // Steady renewals keep it going without re-reads.
    f.renewed(t0 + ms(300));
    f.renewed(t0 + ms(600));
    lease_rule(&mut f, t0 + ms(1799));
    assert!(f.may_announce());
    assert_eq!(f.deadline(), Some(t0 + ms(1800)));
    lease_rule(&mut f, t0 + ms(1800));
    assert!(!f.may_announce() && !f.needs_read());
    // Lapse, then renewal succeeds again: a re-read is required.
    f.renewed(t0 + ms(4000));
    lease_rule(&mut f, t0 + ms(4001));
    assert!(!f.may_announce() && f.needs_read());
    f.records_read(t0 + ms(4002));
    assert!(f.may_announce());
    // An old renewal completing late does not move the deadline backwards.
    f.renewed(t0 + ms(3000));
    assert_eq!(f.deadline(), Some(t0 + ms(5200)));
    assert_eq!(f.last_renewed(), Some(t0 + ms(4000)));
    // Another rule (a lost heartbeat quorum) withdraws permission with the Lease fresh:
    // the same re-read is required when it returns.
    f.permission(false, t0 + ms(4100));
    assert!(!f.may_announce());
    f.permission(true, t0 + ms(4200));
    assert!(f.needs_read());
    f.records_read(t0 + ms(4150));
    assert!(f.needs_read(), "read during the lapse does not count");
    f.records_read(t0 + ms(4200));
    assert!(f.may_announce());
    f.release();
    assert!(!f.may_announce() && !f.needs_read());
    assert_eq!(f.deadline(), None);
    assert_eq!(f, Fence::new(c));
}

fn rec(h: &str, e: u64) -> OwnerRecord {
    OwnerRecord {
        holder: h.into(),
        epoch: e,
    }
}

#[test]
fn claim_decision_table() {
    use ClaimAction::*;
    use HolderState::*;
    let r = |h, e| Some(rec(h, e));
    type Case = (
        Option<&'static str>,
        Option<OwnerRecord>,
        HolderState,
        bool,
        ClaimAction,
    );
    let cases: Vec<Case> = vec![
        // fenced: never anything
        (Some("me"), r("me", 3), Alive, false, Idle),
        (Some("me"), None, Gone, false, Idle),
        // holder and desired
        (Some("me"), r("me", 3), Alive, true, Announce),
        // holder, not desired: hand over / delete
        (
            Some("b"),
            r("me", 3),
            Alive,
            true,
            Release {
                record: Some(rec("b", 4)),
            },
        ),
        (None, r("me", 3), Alive, true, Release { record: None }),
        // desired, no record: create
        (
            Some("me"),
            None,
            Gone,
            true,
            Claim {
                record: rec("me", 1),
            },
        ),
        // desired, holder gone / unresponsive: claim; alive: wait
        (
            Some("me"),
            r("b", 7),
            Gone,
            true,
            Claim {
                record: rec("me", 8),
            },
        ),
        (
            Some("me"),
            r("b", 7),
            Unresponsive,
            true,
            Claim {
                record: rec("me", 8),
            },
        ),
        (Some("me"), r("b", 7), Alive, true, WaitForHolder),
        // neither
        (Some("b"), r("b", 7), Alive, true, Idle),
        (Some("c"), r("b", 7), Gone, true, Idle),
        (None, None, Gone, true, Idle),
    ];
    for (i, (desired, record, holder, may, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            decide_claim("me", desired, record.as_ref(), holder, may),
            want,
            "case {i}"
        );
    }
}

// ---- exhaustive model check of the claim protocol ---------------------------------------

/// Bounds of one model-check run.
#[derive(Clone, Copy)]
struct Bounds {
    nodes: usize,
    max_version: u8,
    crashes: u8,
    partitions: u8,
}

/// The instant every [`Fence`] event of the model happens at: the model is untimed (the
/// Lease rule's timing is the `fenced` / `expired` flags), and a read at the instant
/// permission returns counts, as in the speaker, where both happen in one pass.
fn instant() -> Instant {
    static T: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T.get_or_init(Instant::now)
}

fn new_fence() -> Fence {
    Fence::new(LeaseClock::default())
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct NodeSt {
    up: bool,
    connected: bool,
    /// Lease renewal deadline passed without renewal.
    fenced: bool,
    /// The speaker's gate: permission (the Lease rule, fed by `fenced`) and whether the
    /// records were confirmed since it was regained.
    fence: Fence,
    announcing: bool,
    /// Others consider this node's Lease expired.
    expired: bool,
    /// Cached record: (version, holder).
    view: (u8, Option<u8>),
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct St {
    record: (u8, Option<u8>),
    nodes: Vec<NodeSt>,
    crashes: u8,
    partitions: u8,
}

fn name(i: u8) -> String {
    format!("n{i}")
}

fn to_record(h: Option<u8>, version: u8) -> Option<OwnerRecord> {
    h.map(|h| rec(&name(h), u64::from(version)))
}

fn successors(s: &St, b: Bounds) -> Vec<St> {
    let mut out = Vec::new();
    for i in 0..b.nodes {
        let n = s.nodes[i];
        let mut push = |f: &dyn Fn(&mut St)| {
            let mut t = s.clone();
            f(&mut t);
            out.push(t);
        };
        if n.up && s.crashes < b.crashes {
            // Crash: the process dies, its sockets close.
            push(&|t| {
                t.crashes += 1;
                t.nodes[i].up = false;
                t.nodes[i].announcing = false;
                t.nodes[i].fenced = true;
            });
        }
        if !n.up {
            // Restart (possibly before the Lease expired in others' eyes).
            push(&|t| {
                t.nodes[i] = NodeSt {
                    up: true,
                    connected: true,
                    fenced: true,
                    fence: new_fence(),
                    announcing: false,
                    expired: t.nodes[i].expired,
                    view: (0, None),
                };
            });
        }
        if n.up && n.connected && s.partitions < b.partitions {
            push(&|t| {
                t.partitions += 1;
                t.nodes[i].connected = false;
            });
        }
        if !n.connected {
            push(&|t| t.nodes[i].connected = true);
        }
        if n.up && n.connected {
            // Successful renewal: the Lease rule permits again (after a lapse the gate
            // wants the records confirmed).
            push(&|t| {
                let nd = &mut t.nodes[i];
                nd.fenced = false;
                nd.expired = false;
                nd.fence.renewed(instant());
                nd.fence.permission(true, instant());
            });
            // A watch event or list updates the view (no confirmation: that is the pass's).
            push(&|t| {
                t.nodes[i].view = t.record;
            });
        }
        if n.up && !n.connected && !n.fenced {
            // Renew deadline passes: withdraw everything.
            push(&|t| {
                t.nodes[i].fenced = true;
                t.nodes[i].announcing = false;
                t.nodes[i].fence.permission(false, instant());
            });
        }
        if !n.expired && (!n.up || n.fenced) {
            // Others see the Lease expire — only possible after the holder fenced or died
            // (renew_deadline + margin <= lease_duration, proptest above).
            push(&|t| t.nodes[i].expired = true);
        }
        if n.up {
            // A speaker pass, with ANY desired owner: election views may disagree arbitrarily.
            for d in 0..=b.nodes as u8 {
                let desired = if (d as usize) < b.nodes {
                    Some(name(d))
                } else {
                    None
                };
                out.push(pass(s, i, desired.as_deref(), b));
            }
        }
    }
    out
}

/// One pass of speaker `i` (one IP) with the speaker's sequencing: the claim rule with the
/// Lease rule's permission; an IP to announce is confirmed first (a fresh read and a write
/// of the version read) while the [`Fence`] wants the records re-read, and a view naming
/// this node as holder of nothing marks them read; a claim won is announced at once.
fn pass(s: &St, i: usize, desired: Option<&str>, b: Bounds) -> St {
    let n = s.nodes[i];
    let me = name(i as u8);
    let (ver, holder) = n.view;
    let record = to_record(holder, ver);
    let hs = match holder {
        Some(h) if s.nodes[h as usize].expired => HolderState::Gone,
        Some(_) => HolderState::Alive,
        None => HolderState::Gone,
    };
    let permitted = !n.fenced;
    assert_eq!(permitted, n.fence.may_announce() || n.fence.needs_read());
    let needs_read = n.fence.needs_read();
    let action = decide_claim(&me, desired, record.as_ref(), hs, permitted);
    let mut t = s.clone();
    let cas_ok = n.connected && s.record == n.view && s.record.0 < b.max_version;
    let parse = |r: &OwnerRecord| r.holder[1..].parse::<u8>().unwrap();
    let me_i = Some(i as u8);
    let nd = &mut t.nodes[i];
    match &action {
        ClaimAction::Announce if !needs_read => nd.announcing = true,
        ClaimAction::Announce => {
            // confirm: a fresh read, and a write of the version read if it still names us
            nd.announcing = false;
            if n.connected {
                if s.record.1 != me_i {
                    nd.view = s.record;
                    nd.fence.records_read(instant());
                } else if s.record.0 < b.max_version {
                    t.record = (s.record.0 + 1, me_i);
                    let nd = &mut t.nodes[i];
                    nd.view = t.record;
                    nd.fence.records_read(instant());
                    nd.announcing = true;
                }
            }
        }
        ClaimAction::Idle | ClaimAction::WaitForHolder => nd.announcing = false,
        ClaimAction::Claim { record } => {
            nd.announcing = false;
            if cas_ok {
                t.record = (s.record.0 + 1, Some(parse(record)));
                let nd = &mut t.nodes[i];
                nd.view = t.record;
                nd.announcing = t.record.1 == me_i;
            }
        }
        ClaimAction::Release { record } => {
            nd.announcing = false;
            if cas_ok {
                t.record = (s.record.0 + 1, record.as_ref().map(parse));
                t.nodes[i].view = t.record;
            }
        }
    }
    if permitted && needs_read && action != ClaimAction::Announce && holder != me_i {
        t.nodes[i].fence.records_read(instant());
    }
    t
}

fn check_claim_protocol(b: Bounds) -> usize {
    let init = St {
        record: (0, None),
        nodes: vec![
            NodeSt {
                up: true,
                connected: true,
                fenced: true,
                fence: new_fence(),
                announcing: false,
                expired: false,
                view: (0, None),
            };
            b.nodes
        ],
        crashes: 0,
        partitions: 0,
    };
    let mut seen: HashSet<St> = HashSet::new();
    let mut q = VecDeque::new();
    seen.insert(init.clone());
    q.push_back(init);
    let mut announced_after_takeover = false;
    let mut announced = false;
    while let Some(s) = q.pop_front() {
        let announcers: Vec<usize> = (0..b.nodes).filter(|&i| s.nodes[i].announcing).collect();
        assert!(announcers.len() <= 1, "two announcers: {s:?}");
        for &i in &announcers {
            assert!(s.nodes[i].up);
            // An announcer is the holder of the real record.
            assert_eq!(
                s.record.1,
                Some(i as u8),
                "announcer is not the holder: {s:?}"
            );
            announced = true;
            if s.record.0 >= 2 {
                announced_after_takeover = true;
            }
        }
        for t in successors(&s, b) {
            if seen.insert(t.clone()) {
                q.push_back(t);
            }
        }
    }
    // Non-vacuity: the protocol does announce, also after an ownership change.
    assert!(announced && announced_after_takeover);
    seen.len()
}

#[test]
fn claim_protocol_never_has_two_announcers() {
    // Three nodes with arbitrary disagreeing views, one crash (and restart), one
    // partition (and heal), up to two record writes.
    let n = check_claim_protocol(Bounds {
        nodes: 3,
        max_version: 2,
        crashes: 1,
        partitions: 1,
    });
    eprintln!("claim protocol, 3 nodes: {n} states");
    assert!(n > 10_000, "explored only {n} states");
    // Two nodes with two partitions and more writes.
    let n = check_claim_protocol(Bounds {
        nodes: 2,
        max_version: 4,
        crashes: 1,
        partitions: 2,
    });
    eprintln!("claim protocol, 2 nodes: {n} states");
    assert!(n > 1_000, "explored only {n} states");
}

/// Larger spaces (≈1.2 M and more states, minutes in debug builds):
/// `cargo test --release --test core election_lease -- --ignored --nocapture`.
#[test]
#[ignore]
fn claim_protocol_never_has_two_announcers_deep() {
    for b in [
        Bounds {
            nodes: 3,
            max_version: 4,
            crashes: 1,
            partitions: 1,
        },
        Bounds {
            nodes: 2,
            max_version: 6,
            crashes: 1,
            partitions: 2,
        },
    ] {
        let n = check_claim_protocol(b);
        eprintln!(
            "claim protocol, {} nodes, {} writes: {n} states",
            b.nodes, b.max_version
        );
    }
}

//! The mesh rules: what this node has heard from its peers ([`PeerTable`]) and whether it
//! may announce ([`MeshRules`]), given the members it knows, their heartbeats and Leases.
//! The rules, their timers and their safety argument are written out in
//! `docs/ARCHITECTURE.md`, section *Peer liveness*; the model test
//! `crates/ferrolb-core/tests/core/membership_model.rs` checks them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::heartbeat::{Heartbeat, HmacKey, Reject, ReplayWindow};

/// Smallest allowed gap `dead_after − interval − fence_after`: time for the fenced owner's
/// timer, its withdrawal and scheduling slack.
pub const MIN_MESH_MARGIN: Duration = Duration::from_millis(100);

/// Heartbeat timers (each node measures them on its own monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshTiming {
    /// Heartbeat period (default 100 ms).
    pub interval: Duration,
    /// A node that has not heard from enough peers for this long stops announcing
    /// (default 300 ms: three heartbeats).
    pub fence_after: Duration,
    /// A peer not heard for this long is dead (default 600 ms: six heartbeats).
    pub dead_after: Duration,
    /// Heartbeats whose send time differs from the receiver's wall clock by more than this
    /// are dropped as stale (default 30 s).
    pub max_clock_skew: Duration,
}

impl Default for MeshTiming {
    fn default() -> Self {
        MeshTiming {
            interval: Duration::from_millis(100),
            fence_after: Duration::from_millis(300),
            dead_after: Duration::from_millis(600),
            max_clock_skew: Duration::from_secs(30),
        }
    }
}

/// Invalid [`MeshTiming`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshTimingError {
    /// The interval is zero or does not fit twice into `fence_after` (a single lost
    /// heartbeat must not fence).
    #[error("heartbeat interval {interval:?} must be non-zero and at most half of the fence time {fence_after:?}")]
    Interval {
        /// Given interval.
        interval: Duration,
        /// Given fence time.
        fence_after: Duration,
    },
    /// `dead_after < fence_after + interval + MIN_MESH_MARGIN`, or `dead_after < 2 ·
    /// fence_after`: a member cut off from everybody that finds a majority again before its
    /// own fence time never withdraws, and a node that lost it from sight when it was cut off,
    /// then lost its own majority a moment later, must not call it dead before fencing itself
    /// (the model check finds the overlap at 200 / 400 / 700 ms).
    #[error("peer death time {dead_after:?} must be at least fence time {fence_after:?} + interval {interval:?} + {MIN_MESH_MARGIN:?}, and at least twice the fence time")]
    Margin {
        /// Given interval.
        interval: Duration,
        /// Given fence time.
        fence_after: Duration,
        /// Given death time.
        dead_after: Duration,
    },
}

impl MeshTiming {
    /// Validated timers.
    pub fn new(
        interval: Duration,
        fence_after: Duration,
        dead_after: Duration,
        max_clock_skew: Duration,
    ) -> Result<Self, MeshTimingError> {
        if interval.is_zero() || interval.saturating_mul(2) > fence_after {
            return Err(MeshTimingError::Interval {
                interval,
                fence_after,
            });
        }
        if fence_after
            .saturating_add(interval)
            .saturating_add(MIN_MESH_MARGIN)
            > dead_after
            || fence_after.saturating_mul(2) > dead_after
        {
            return Err(MeshTimingError::Margin {
                interval,
                fence_after,
                dead_after,
            });
        }
        Ok(MeshTiming {
            interval,
            fence_after,
            dead_after,
            max_clock_skew,
        })
    }
}

#[derive(Debug, Clone)]
struct Heard {
    window: ReplayWindow,
    at: Instant,
    flags: u8,
    /// Silence before the last accepted heartbeat (None: the first one).
    gap: Option<Duration>,
}

/// What this node has heard from its peers (pure: instants are passed in).
#[derive(Debug, Clone)]
pub struct PeerTable {
    me: String,
    timing: MeshTiming,
    peers: BTreeMap<String, Heard>,
}

impl PeerTable {
    /// An empty table for node `me`.
    pub fn new(me: &str, timing: MeshTiming) -> Self {
        PeerTable {
            me: me.to_string(),
            timing,
            peers: BTreeMap::new(),
        }
    }

    /// The timers.
    pub fn timing(&self) -> MeshTiming {
        self.timing
    }

    /// Authenticates and records one datagram received at `now` (monotonic) /
    /// `now_unix_ms` (wall clock). Returns the sender and whether it was silent for at
    /// least `fence_after` before (or never heard): a liveness change worth a new pass.
    pub fn receive(
        &mut self,
        buf: &[u8],
        key: &HmacKey,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<(String, bool), Reject> {
        let hb = Heartbeat::decode(buf, key)?;
        if hb.node == self.me {
            return Err(Reject::OwnNode);
        }
        let skew = self.timing.max_clock_skew.as_millis() as u64;
        if hb.sent_unix_ms.abs_diff(now_unix_ms) > skew {
            return Err(Reject::Stale);
        }
        let fence = self.timing.fence_after;
        match self.peers.get_mut(&hb.node) {
            Some(h) => {
                let restart_ok = now.saturating_duration_since(h.at) > self.timing.max_clock_skew;
                h.window.accept(hb.incarnation, hb.seq, restart_ok)?;
                let gap = now.saturating_duration_since(h.at);
                let was_silent = gap >= fence;
                h.gap = Some(gap);
                h.at = h.at.max(now);
                h.flags = hb.flags;
                Ok((hb.node, was_silent))
            }
            None => {
                self.peers.insert(
                    hb.node.clone(),
                    Heard {
                        window: ReplayWindow::first(hb.incarnation, hb.seq),
                        at: now,
                        flags: hb.flags,
                        gap: None,
                    },
                );
                Ok((hb.node, true))
            }
        }
    }

    /// When `node` was last heard (valid heartbeat), if ever.
    pub fn last_heard(&self, node: &str) -> Option<Instant> {
        self.peers.get(node).map(|h| h.at)
    }

    /// How long `node` had been silent before its last accepted heartbeat (None: unknown,
    /// or that was the first one).
    pub fn last_gap(&self, node: &str) -> Option<Duration> {
        self.peers.get(node).and_then(|h| h.gap)
    }

    /// Whether anyone was ever heard.
    pub fn heard_any(&self) -> bool {
        !self.peers.is_empty()
    }

    /// The flags of `node`'s last heartbeat.
    pub fn flags(&self, node: &str) -> Option<u8> {
        self.peers.get(node).map(|h| h.flags)
    }

    /// Forgets nodes for which `keep` is false (no longer members).
    pub fn retain(&mut self, keep: &dyn Fn(&str) -> bool) {
        self.peers.retain(|n, _| keep(n));
    }

    /// A peer's state at `now` in [`PeerTable::signature`]: 2 heard within `fence_after`,
    /// 1 within `dead_after`, 0 silent for longer.
    fn state(&self, h: &Heard, now: Instant) -> u8 {
        let age = now.saturating_duration_since(h.at);
        if age < self.timing.fence_after {
            2
        } else if age < self.timing.dead_after {
            1
        } else {
            0
        }
    }

    /// A summary that changes exactly when some peer crosses `fence_after` or `dead_after`
    /// of silence at `now` (the shell wakes the speaker when it changes).
    pub fn signature(&self, now: Instant) -> Vec<(String, u8)> {
        self.peers
            .iter()
            .map(|(n, h)| (n.clone(), self.state(h, now)))
            .collect()
    }

    /// Brings `sig`, a previous [`PeerTable::signature`] (or empty), up to date for `now`
    /// and says what changed. Allocates nothing while the set of peers stays the same (a
    /// new or forgotten peer rebuilds `sig`): the shell calls it on every heartbeat period.
    pub fn update_signature(&self, now: Instant, sig: &mut Vec<(String, u8)>) -> SignatureChange {
        let same_peers = sig.len() == self.peers.len()
            && sig.iter().zip(self.peers.keys()).all(|((a, _), b)| a == b);
        let mut change = SignatureChange::default();
        if same_peers {
            for ((_, old), h) in sig.iter_mut().zip(self.peers.values()) {
                let s = self.state(h, now);
                change.changed |= s != *old;
                change.went_silent |= s < *old;
                change.heard += usize::from(s == 2);
                *old = s;
            }
            return change;
        }
        let new = self.signature(now);
        change.changed = true;
        change.heard = new.iter().filter(|(_, s)| *s == 2).count();
        // both sorted by name
        change.went_silent = new.iter().any(|(n, s)| {
            sig.binary_search_by(|(m, _)| m.as_str().cmp(n))
                .is_ok_and(|i| sig[i].1 > *s)
        });
        *sig = new;
        change
    }

    /// The next instant after `now` at which [`PeerTable::signature`] may change without
    /// any new heartbeat.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|h| {
                [
                    h.at + self.timing.fence_after,
                    h.at + self.timing.dead_after,
                ]
            })
            .filter(|t| *t > now)
            .min()
    }
}

/// What [`PeerTable::update_signature`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureChange {
    /// The signature differs from the previous one (a peer crossed a threshold, or was
    /// first heard, or forgotten).
    pub changed: bool,
    /// A peer in both is in a lower state than before (went silent, or died).
    pub went_silent: bool,
    /// Peers heard within `fence_after` (state 2).
    pub heard: usize,
}

/// What one node knows about one peer, for [`MeshRules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView {
    /// When a valid heartbeat was last heard from it (None: never since this node started).
    pub last_heard: Option<Instant>,
    /// The Lease rule ([`super::LeaseClock::peer_alive`]): its node Lease changed within
    /// the lease duration, as this node observed it.
    pub lease_alive: bool,
    /// When its node Lease was last really seen changing (or first read), if it holds it
    /// ([`PeerInput::lease_held_since`]).
    pub lease_changed: Option<Instant>,
}

/// Why a node may announce ([`MeshRules::evaluate`]; None in [`Liveness::grant`]: it may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Heartbeats are off: its own Lease is fresh (the Lease rules).
    Lease,
    /// It is the only member.
    Alone,
    /// Two members: it hears its peer.
    Peer,
    /// Two members: its own Lease is fresh (the API server breaks the tie).
    PairLease,
    /// Three or more members: it hears every one of them, whatever the API server does.
    All,
    /// Three or more members: it hears a majority and its own Lease is fresh.
    Majority,
    /// Three or more members, no majority heard: its own Lease is fresh and every member it
    /// does not hear is [`MeshRules::witness_dead`] (the API server as witness).
    Witness,
}

/// The "may I announce" and "is that peer alive" rules, combining heartbeats and Leases.
///
/// Members are this node plus its peers (nodes whose speaker Lease is held). With `n`
/// members:
/// * `n = 1`: this node may announce (nobody else can).
/// * `n = 2`: it may announce while it hears its peer within `fence_after`, **or** its own
///   Lease is fresh (the API server is the tie-breaking witness). A peer is dead when it
///   was not heard for `dead_after` **and** its Lease is stale: two-node failover runs at
///   Lease speed, and never two announcers (a node cut from both peer and API fences at
///   the earlier of its two deadlines, each shorter than the matching death time).
/// * `n ≥ 3`: it may announce while it hears **every** member within `fence_after`
///   (whatever the API server does), or hears a **majority** and its own Lease is fresh,
///   or — the **witness** rule — its own Lease is fresh and every member it does not hear
///   is [`MeshRules::witness_dead`]: silent, Lease expired, and both stopped together, the
///   way a crash or a power loss stops them. A majority that cannot reach the API server
///   and does not hear everybody therefore withdraws by its renew deadline, before any
///   witness can see its Leases expire: the side that reaches the API server wins.
///   A peer heard at least once is dead when silent for `dead_after` (under the witness
///   rule: when silent for `dead_after` and witness-dead, judged by its Lease; for a lease
///   duration after a new grant or after the membership grew: when its Lease expired too);
///   a peer never heard is judged by its Lease.
/// * Until the first heartbeat from anyone arrives, a node of a 1- or 2-member cluster uses
///   its Lease as above; with 3 or more members it may not announce (a restarted node cut
///   off from its peers but not from the API server must not take over on Lease expiry
///   while the others keep announcing — the model check found this).
///   Peers never heard are judged by their Leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshRules {
    /// Timers.
    pub timing: MeshTiming,
}

impl MeshRules {
    /// Length of the start-up window ([`MeshRules::evaluate`]): two death times, so every
    /// peer that is up has been heard several times before it ends.
    pub fn startup_window(&self) -> Duration {
        self.timing.dead_after * 2
    }

    /// A node that was not permitted and started listening for heartbeats less than
    /// [`MeshRules::startup_window`] ago is *starting*.
    fn starting(&self, own: &OwnInput, now: Instant) -> bool {
        own.permitted_since.is_none()
            && own
                .heartbeats_since
                .is_some_and(|s| now.saturating_duration_since(s) < self.startup_window())
    }

    /// How long a grant period must have lasted before this node announces on a
    /// [`Grant::Majority`] or [`Grant::All`]: the fence time plus a heartbeat interval (grant
    /// periods begun in the start-up window excepted: they begin hearing everybody). A node
    /// regaining a majority may be hearing a member that the other side still counted a
    /// moment ago; that side, still permitted, may take this node's IPs on its silence until
    /// it notices, within `fence_after` (the model check found the overlap when this node
    /// re-asserted its claims at once). Hearing everybody again is no proof either: a peer
    /// may not have heard this node yet (its heartbeats come an interval apart) and call it
    /// dead meanwhile, `dead_after` after it last heard it (the model check found that
    /// overlap with a heartbeat interval of 150 ms): the wait lets the peer's takeover come
    /// first, and this node's re-assertion of the claim then loses.
    pub fn settle_time(&self) -> Duration {
        self.timing.fence_after + self.timing.interval
    }

    /// Whether a peer was heard within `fence_after` at `now`.
    pub fn hears(&self, p: &PeerView, now: Instant) -> bool {
        p.last_heard
            .is_some_and(|t| now.saturating_duration_since(t) < self.timing.fence_after)
    }

    /// Whether `heard` peers plus this node form a majority of `members`.
    pub fn quorum(members: usize, heard: usize) -> bool {
        members <= 1 || (heard + 1) * 2 > members
    }

    /// Is `p` dead to the witness rule? Its Lease expired in this node's eyes, and its
    /// heartbeats and its Lease stopped together — the last heartbeat heard and the last
    /// change of its Lease seen lie less than a lease duration apart — after this node had
    /// been listening for a lease duration.
    ///
    /// * Heard while its Lease had already expired: it was alive without the API server, so
    ///   its side may still announce (with a membership that does not know this node);
    /// * its Lease still changing a lease duration after it fell silent: it was alive and
    ///   cut off from this node, and its side may have stopped counting this node (reaped);
    /// * its Lease seen changing only within a lease duration of this node's start: that
    ///   may be the first read of a Lease that stopped changing long before, from a node
    ///   whose side never learnt about this one.
    ///
    /// In each case it is not dead to the witness (it stays a reason not to announce). The
    /// rule is off unless `reap_after` exceeds twice the lease duration.
    pub fn witness_dead(&self, p: &PeerView, own: &OwnInput) -> bool {
        let l = own.lease_duration;
        let (Some(heard), Some(changed), Some(since)) =
            (p.last_heard, p.lease_changed, own.heartbeats_since)
        else {
            return false;
        };
        own.reap_after > l * 2
            && !p.lease_alive
            && heard.saturating_duration_since(changed) < l
            && changed.saturating_duration_since(heard) < l
            && changed.saturating_duration_since(since) >= l
    }

    /// Why this node may announce at `now` given its members' views (heartbeats enabled),
    /// before the start-up window and the first renewal are considered.
    pub fn grant(&self, peers: &[PeerView], own: &OwnInput, now: Instant) -> Option<Grant> {
        let n = peers.len() + 1;
        let fresh = own.lease_fresh;
        if !own.heard_any {
            return match n {
                1 => Some(Grant::Alone),
                2 if fresh => Some(Grant::PairLease),
                _ => None,
            };
        }
        let heard = peers.iter().filter(|p| self.hears(p, now)).count();
        match n {
            1 => Some(Grant::Alone),
            2 if heard == 1 => Some(Grant::Peer),
            2 if fresh => Some(Grant::PairLease),
            2 => None,
            _ if heard == n - 1 => Some(Grant::All),
            _ if fresh && Self::quorum(n, heard) => Some(Grant::Majority),
            _ if fresh
                && peers
                    .iter()
                    .all(|p| self.hears(p, now) || self.witness_dead(p, own)) =>
            {
                Some(Grant::Witness)
            }
            _ => None,
        }
    }

    /// Is `p` alive at `now` in this node's eyes, in a cluster of `members` (self included),
    /// outside the witness rule?
    pub fn peer_alive(&self, members: usize, p: &PeerView, heard_any: bool, now: Instant) -> bool {
        let Some(t) = p.last_heard.filter(|_| heard_any) else {
            return p.lease_alive;
        };
        let hb = now.saturating_duration_since(t) < self.timing.dead_after;
        if members == 2 {
            hb || p.lease_alive
        } else {
            hb
        }
    }
}

/// What one node knows about one peer, for [`MeshRules::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInput {
    /// When a valid heartbeat was last heard from it.
    pub last_heard: Option<Instant>,
    /// The Lease rule says alive.
    pub lease_alive: bool,
    /// When its Lease was last seen changing (really changing: not the grace restart after
    /// an API outage), if it holds its Lease (None: released or absent — not a member).
    pub lease_held_since: Option<Instant>,
}

/// What a node knows about itself, for [`MeshRules::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnInput {
    /// Its own Lease was renewed within the renew deadline.
    pub lease_fresh: bool,
    /// It renewed its Lease at least once since it started (its caches are in sync).
    pub renewed_ever: bool,
    /// Heartbeats are enabled (key loaded).
    pub mesh_enabled: bool,
    /// Some heartbeat was ever received.
    pub heard_any: bool,
    /// The node Lease duration ([`super::LeaseClock::lease_duration`]): the window of
    /// [`MeshRules::witness_dead`].
    pub lease_duration: Duration,
    /// Members whose Lease has not changed, and who were not heard, for this long stop
    /// counting — only while `lease_fresh` (this node sees the API server) and this node
    /// has heard a majority of the full membership since then and has been permitted for
    /// this long. A reaped member counts again once its Lease is seen changing.
    /// Must exceed twice the lease duration (the witness rule relies on it).
    pub reap_after: Duration,
    /// Start of this node's current grant period, as returned by the previous evaluation
    /// ([`Liveness::permitted_since`]); None when it had no grant.
    pub permitted_since: Option<Instant>,
    /// When this node started listening for heartbeats: the instant its key was loaded, or
    /// the speaker's start while the key is not loaded yet. None: heartbeats are not
    /// configured (Lease rules only, no start-up window).
    pub heartbeats_since: Option<Instant>,
    /// How many peers the previous evaluation counted as members
    /// ([`Judgement::member_count`], [`Liveness::members`]);
    /// None: no evaluation yet (the first one sets the baseline, it does not grow).
    pub members_before: Option<usize>,
    /// When this node's membership last grew, as returned by the previous evaluation
    /// ([`Liveness::grew_at`]); None: never.
    pub grew_at: Option<Instant>,
}

/// One node's view of liveness at an instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// This node may announce.
    pub may: bool,
    /// Why it may (None: it may not).
    pub grant: Option<Grant>,
    /// Peers that count as members (quorum denominator, heartbeat targets).
    pub members: Vec<String>,
    /// Members alive in this node's eyes.
    pub alive: std::collections::BTreeSet<String>,
    /// Members judged by their heartbeats (their silence alone proves death; no fresh
    /// read of their Lease before taking their IPs over). Empty under the witness rule.
    pub by_heartbeat: std::collections::BTreeSet<String>,
    /// Start of the current grant period (None: no grant). Pass it back in
    /// [`OwnInput::permitted_since`]. It may be set while `may` is false: a majority grant
    /// younger than [`MeshRules::settle_time`].
    pub permitted_since: Option<Instant>,
    /// Members reaped (dead for `reap_after`); pass back to the next evaluation: a reaped
    /// member stays out until its Lease is seen changing again.
    pub reaped: std::collections::BTreeSet<String>,
    /// When the membership last grew (a member appeared, or a reaped one came back); pass
    /// back in [`OwnInput::grew_at`], and `members.len()` in [`OwnInput::members_before`].
    pub grew_at: Option<Instant>,
    /// A reaped member is heard (within `fence_after`): only its Lease seen changing counts
    /// it again, so a caller that paused its watch of the peers' Leases resumes it, as for
    /// a node heard that is no member ([`super::LeaseWatchGate`]).
    pub reaped_heard: bool,
}

impl Liveness {
    /// Whether this node may renew its Lease at the quiet period
    /// ([`crate::election::LeaseClock::quiet_period`]) rather than every retry period: it
    /// may announce because it hears every member of three or more ([`Grant::All`]), a
    /// grant that holds whatever its Lease does. Every other grant needs its own Lease fresh
    /// at once (two members, a majority, the witness) or is the Lease rule itself.
    pub fn renews_quietly(&self) -> bool {
        self.may && self.grant == Some(Grant::All)
    }
}

impl MeshRules {
    /// The whole liveness evaluation of one node: members, permission, alive peers.
    /// With heartbeats disabled these are the Lease rules (permission = own Lease fresh,
    /// peers judged by their Leases).
    ///
    /// **Start-up window.** A starting node ([`MeshRules::startup_window`] after its
    /// heartbeats start, not yet permitted) is permitted early only when it hears every
    /// member it knows and knows at least two peers (a restart into a running cluster);
    /// otherwise it waits for the window to end. Without the window, the nodes of a cluster
    /// starting at once would be permitted on the one- or two-member rules before the other
    /// members' Leases and heartbeats reach them, announce, and be fenced a moment later
    /// when more members appear unheard — a flap of every VIP they took. With it, members
    /// that start within the window of each other are heard before anyone announces, and a
    /// node hearing `k ≥ 2` peers keeps its quorum while up to `k` new ones appear unheard.
    ///
    /// `peers` is keyed by node name, owned or borrowed. [`MeshRules::judge`] gives the
    /// same decisions without copying a name.
    pub fn evaluate<K: AsRef<str> + Ord>(
        &self,
        peers: &BTreeMap<K, PeerInput>,
        own: OwnInput,
        reaped_before: &std::collections::BTreeSet<String>,
        now: Instant,
    ) -> Liveness {
        let peers: Vec<(&str, PeerInput)> = peers.iter().map(|(n, p)| (n.as_ref(), *p)).collect();
        self.judge(&peers, own, reaped_before, now).named(&peers)
    }

    /// [`MeshRules::evaluate`] for `peers` given as a list (names unique, in any order),
    /// each peer's verdict in the list's order: a caller evaluating every pass compares
    /// the verdicts with what it kept and copies names only when they changed.
    pub fn judge<K: AsRef<str>>(
        &self,
        peers: &[(K, PeerInput)],
        own: OwnInput,
        reaped_before: &std::collections::BTreeSet<String>,
        now: Instant,
    ) -> Judgement {
        let starting = self.starting(&own, now);
        if !own.mesh_enabled {
            let may = own.lease_fresh && !starting;
            let verdicts: Vec<Verdict> = peers
                .iter()
                .map(|(_, p)| Verdict {
                    member: p.lease_held_since.is_some(),
                    alive: p.lease_alive,
                    ..Verdict::default()
                })
                .collect();
            return Judgement {
                may,
                grant: may.then_some(Grant::Lease),
                grew_at: Self::grew_at(peers, &verdicts, &own, reaped_before, now),
                peers: verdicts,
                permitted_since: may.then(|| own.permitted_since.unwrap_or(now)),
                reaped_heard: false,
            };
        }
        let view = |p: &PeerInput| PeerView {
            last_heard: p.last_heard,
            lease_alive: p.lease_alive,
            lease_changed: p.lease_held_since,
        };
        // Reaping shrinks the membership, so only a node holding a quorum of the full
        // membership may do it (a minority reaping the majority would then take over while
        // the majority keeps announcing — the model check found this).
        let held: Vec<PeerView> = peers
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.lease_held_since.is_some())
            .map(view)
            .collect();
        // ... and only once it has heard that quorum since the member's silence became
        // long enough: a node cut off a moment before still hears its peers for
        // `fence_after`, and one that reaped then (shrinking to two members, announcing on
        // its own Lease) while a peer on the other side saw the member come back and kept
        // counting it, announced while that peer took its IPs on its silence (the model
        // check found this).
        let full_quorum_since = |since: Instant| {
            own.heard_any
                && Self::quorum(
                    held.len() + 1,
                    held.iter()
                        .filter(|p| self.hears(p, now) && p.last_heard.is_some_and(|t| t >= since))
                        .count(),
                )
        };
        // Silence proves death only while this node could hear: it must itself have been
        // permitted (hearing a majority) for the whole reaping time. A node returning from
        // a long isolation would otherwise reap the members of the majority it was cut off
        // from, the moment it hears a quorum again, and take their IPs while they still
        // answer (the model check found this).
        let quorum_for_long = own
            .permitted_since
            .is_some_and(|s| now.saturating_duration_since(s) >= own.reap_after);
        let mut verdicts: Vec<Verdict> = peers
            .iter()
            .map(|(name, p)| {
                // when its silence became long enough to reap it
                let dead_from = p.lease_held_since.and_then(|t| {
                    p.last_heard
                        .map_or(t, |h| h.max(t))
                        .checked_add(own.reap_after)
                });
                let lease_old = p
                    .lease_held_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= own.reap_after);
                let dead_long = dead_from.is_some_and(|d| now >= d);
                // A reaped member comes back only when its Lease is seen changing, never on
                // being heard alone: every node that sees the API server sees that change,
                // while a heartbeat may reach this node only. A node that counted a member
                // back on hearing it, while another node cut off from both of them never
                // learnt, held a majority of three with it, and took the other node's IPs on
                // its silence while that node announced on the two-member rule with its own
                // Lease fresh (the model check found this).
                let reaped = (lease_old && reaped_before.contains(name.as_ref()))
                    || (dead_long
                        && own.lease_fresh
                        && quorum_for_long
                        && dead_from.is_some_and(full_quorum_since));
                Verdict {
                    member: p.lease_held_since.is_some() && !reaped,
                    reaped,
                    ..Verdict::default()
                }
            })
            .collect();
        let views: Vec<PeerView> = peers
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| v.member)
            .map(|((_, p), _)| view(p))
            .collect();
        let n = views.len() + 1;
        let hears_all =
            views.len() >= 2 && own.heard_any && views.iter().all(|v| self.hears(v, now));
        let grant = (own.renewed_ever && (!starting || hears_all))
            .then(|| self.grant(&views, &own, now))
            .flatten();
        let witness = grant == Some(Grant::Witness);
        // Silence counts only while this node itself could hear: a node returning from
        // isolation (fenced) must not take a peer's silence during that isolation for its
        // death — it waits `dead_after` from regaining permission to hear it.
        let since = grant.map(|_| own.permitted_since.unwrap_or(now));
        // A grant period begun in the start-up window began hearing everybody: neither the
        // settling nor the Lease wait below (members appearing unheard right after it must
        // not fence this node, and a crash right after a cluster starts is taken over at
        // heartbeat speed).
        let regained = since.is_some_and(|s| {
            own.heartbeats_since
                .is_none_or(|h| s.saturating_duration_since(h) >= self.startup_window())
        });
        let settling = matches!(grant, Some(Grant::Majority | Grant::All))
            && regained
            && since.is_some_and(|s| now.saturating_duration_since(s) < self.settle_time());
        let may = grant.is_some() && !settling;
        // During the first lease duration of a grant period (begun after the start-up
        // window) a silent member must also have an expired Lease: this node may just have
        // regained the API server, and a witness that saw its Lease expire keeps announcing
        // until its own renew deadline, which the Lease expiry (restarted at the regain)
        // outlasts (the model check found the takeover after `dead_after` overlapping it).
        //
        // The same for a lease duration after this node's membership grew (a member
        // appeared, or a reaped one came back): a member that has not seen it grow yet
        // still judges by the smaller membership — with two members, it announces on its
        // own Lease alone — until its renew deadline, or until it sees the new Lease. A
        // node that judged it by its silence took its IPs after `dead_after` while it still
        // announced (the model check found this when a reaped member came back just as
        // another lost its link).
        let grew_at = Self::grew_at(peers, &verdicts, &own, reaped_before, now);
        let grown = grew_at.is_some_and(|g| now.saturating_duration_since(g) < own.lease_duration);
        let young = grown
            || (regained
                && since.is_some_and(|s| now.saturating_duration_since(s) < own.lease_duration));
        for (verdict, v) in verdicts.iter_mut().filter(|v| v.member).zip(&views) {
            verdict.alive = if witness {
                // Judged by the Lease (a fresh read before any takeover), and only once
                // silent for the death time: a member that heard everybody without the API
                // server stops within `fence_after` of losing this node.
                let silent = v
                    .last_heard
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.timing.dead_after);
                !(silent && self.witness_dead(v, &own))
            } else {
                let judged = PeerView {
                    last_heard: v.last_heard.map(|t| since.map_or(t, |s| t.max(s))),
                    ..*v
                };
                self.peer_alive(n, &judged, own.heard_any, now) || (young && v.lease_alive)
            };
            verdict.by_heartbeat =
                !witness && !young && own.heard_any && v.last_heard.is_some() && n != 2;
        }
        let reaped_heard = peers
            .iter()
            .zip(&verdicts)
            .any(|((_, p), v)| v.reaped && self.hears(&view(p), now));
        Judgement {
            may,
            grant,
            peers: verdicts,
            permitted_since: since,
            grew_at,
            reaped_heard,
        }
    }

    /// When the membership judged in `verdicts` (of `peers`) last grew: `now` if it counts
    /// more members than the previous evaluation, or one that was reaped before; else as
    /// before.
    fn grew_at<K: AsRef<str>>(
        peers: &[(K, PeerInput)],
        verdicts: &[Verdict],
        own: &OwnInput,
        reaped_before: &std::collections::BTreeSet<String>,
        now: Instant,
    ) -> Option<Instant> {
        let members = verdicts.iter().filter(|v| v.member).count();
        let more = own.members_before.is_some_and(|b| members > b);
        let back = peers
            .iter()
            .zip(verdicts)
            .any(|((n, _), v)| v.member && reaped_before.contains(n.as_ref()));
        if more || back {
            Some(now)
        } else {
            own.grew_at
        }
    }
}

/// One peer's part of a [`Judgement`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// It counts as a member ([`Liveness::members`]).
    pub member: bool,
    /// A member alive in this node's eyes ([`Liveness::alive`]).
    pub alive: bool,
    /// A member judged by its heartbeats ([`Liveness::by_heartbeat`]).
    pub by_heartbeat: bool,
    /// Reaped ([`Liveness::reaped`]).
    pub reaped: bool,
}

/// [`Liveness`] with each peer's part as a [`Verdict`], in the order of the peers judged
/// ([`MeshRules::judge`]), naming nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    /// This node may announce.
    pub may: bool,
    /// Why it may (None: it may not).
    pub grant: Option<Grant>,
    /// The verdict on each peer, in the order judged.
    pub peers: Vec<Verdict>,
    /// [`Liveness::permitted_since`].
    pub permitted_since: Option<Instant>,
    /// [`Liveness::grew_at`].
    pub grew_at: Option<Instant>,
    /// [`Liveness::reaped_heard`].
    pub reaped_heard: bool,
}

impl Judgement {
    /// The names, from `peers` (the list judged), of the peers whose verdict passes `pick`,
    /// in the list's order.
    pub fn names<'a, K: AsRef<str> + 'a>(
        &'a self,
        peers: &'a [(K, PeerInput)],
        pick: fn(&Verdict) -> bool,
    ) -> impl Iterator<Item = &'a str> + Clone + 'a {
        peers
            .iter()
            .zip(&self.peers)
            .filter(move |(_, v)| pick(v))
            .map(|((n, _), _)| n.as_ref())
    }

    /// The [`Liveness`] this judgement of `peers` (the list judged) is.
    pub fn named<K: AsRef<str>>(&self, peers: &[(K, PeerInput)]) -> Liveness {
        let owned = |pick: fn(&Verdict) -> bool| self.names(peers, pick).map(str::to_string);
        Liveness {
            may: self.may,
            grant: self.grant,
            members: owned(|v| v.member).collect(),
            alive: owned(|v| v.alive).collect(),
            by_heartbeat: owned(|v| v.by_heartbeat).collect(),
            permitted_since: self.permitted_since,
            reaped: owned(|v| v.reaped).collect(),
            grew_at: self.grew_at,
            reaped_heard: self.reaped_heard,
        }
    }

    /// How many peers it counts as members (pass back in [`OwnInput::members_before`]).
    pub fn member_count(&self) -> usize {
        self.peers.iter().filter(|v| v.member).count()
    }

    /// [`Liveness::renews_quietly`].
    pub fn renews_quietly(&self) -> bool {
        self.may && self.grant == Some(Grant::All)
    }
}

#[cfg(test)]
mod tests {
    use super::super::heartbeat::tests::{hb, key};
    use super::*;

    /// The rules with the default timers.
    fn rules() -> MeshRules {
        MeshRules {
            timing: MeshTiming::default(),
        }
    }

    /// A peer heard 20 ms before `t0` whose Lease is held (for the last 100 ms).
    fn healthy(t0: Instant) -> PeerInput {
        PeerInput {
            last_heard: Some(t0 - Duration::from_millis(20)),
            lease_alive: true,
            lease_held_since: Some(t0 - Duration::from_millis(100)),
        }
    }

    /// A node in steady state at `t0`: own Lease fresh, heartbeats running for a minute,
    /// 2 s Leases, members reaped after 20 s.
    fn steady(t0: Instant) -> OwnInput {
        OwnInput {
            lease_fresh: true,
            renewed_ever: true,
            mesh_enabled: true,
            heard_any: true,
            lease_duration: Duration::from_secs(2),
            reap_after: Duration::from_secs(20),
            permitted_since: None,
            heartbeats_since: Some(t0 - Duration::from_secs(60)),
            members_before: None,
            grew_at: None,
        }
    }

    #[test]
    fn table_accepts_once_and_tracks_silence() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let wall = 1_700_000_000_500;
        let mut t = PeerTable::new("node-1", MeshTiming::default());
        let b1 = hb(1).encode(&key());
        assert_eq!(
            t.receive(&b1, &key(), t0, wall),
            Ok(("node-2".into(), true))
        );
        assert_eq!(t.receive(&b1, &key(), ms(10), wall), Err(Reject::Replayed));
        let b2 = hb(2).encode(&key());
        assert_eq!(
            t.receive(&b2, &key(), ms(100), wall),
            Ok(("node-2".into(), false))
        );
        assert_eq!(t.last_heard("node-2"), Some(ms(100)));
        assert_eq!(t.last_gap("node-2"), Some(Duration::from_millis(100)));
        assert_eq!(t.signature(ms(350)), vec![("node-2".into(), 2)]);
        assert_eq!(t.signature(ms(400)), vec![("node-2".into(), 1)]);
        assert_eq!(t.signature(ms(700)), vec![("node-2".into(), 0)]);
        assert_eq!(t.next_change(ms(350)), Some(ms(400)));
        assert_eq!(t.next_change(ms(400)), Some(ms(700)));
        assert_eq!(t.next_change(ms(700)), None);
        // back after silence: a change
        let b3 = hb(3).encode(&key());
        assert_eq!(
            t.receive(&b3, &key(), ms(800), wall),
            Ok(("node-2".into(), true))
        );
        // own reflection, clock skew
        let mut own = hb(9);
        own.node = "node-1".into();
        assert_eq!(
            t.receive(&own.encode(&key()), &key(), ms(900), wall),
            Err(Reject::OwnNode)
        );
        let b4 = hb(4).encode(&key());
        assert_eq!(
            t.receive(&b4, &key(), ms(900), wall + 30_001),
            Err(Reject::Stale)
        );
        assert_eq!(
            t.receive(&b4, &key(), ms(900), wall + 30_000).map(|r| r.1),
            Ok(false)
        );
        t.retain(&|n| n != "node-2");
        assert!(!t.heard_any());
    }

    #[test]
    fn update_signature_follows_signature_and_reports_changes() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let wall = 1_700_000_000_500;
        let mut t = PeerTable::new("node-1", MeshTiming::default());
        let mut sig = Vec::new();
        // nothing heard: nothing changes
        assert_eq!(t.update_signature(t0, &mut sig), SignatureChange::default());
        t.receive(&hb(1).encode(&key()), &key(), t0, wall).unwrap();
        let mut other = hb(1);
        other.node = "node-0".into();
        t.receive(&other.encode(&key()), &key(), ms(100), wall)
            .unwrap();
        // new peers: rebuilt
        let c = t.update_signature(ms(100), &mut sig);
        assert_eq!(
            c,
            SignatureChange {
                changed: true,
                went_silent: false,
                heard: 2
            }
        );
        assert_eq!(sig, t.signature(ms(100)));
        // nobody crossed a threshold: unchanged, nothing reallocated
        let at = sig.as_ptr();
        let c = t.update_signature(ms(200), &mut sig);
        assert_eq!((c.changed, c.heard), (false, 2));
        assert_eq!(sig.as_ptr(), at);
        // node-2 crosses the fence time, then the death time; node-0 a step later
        let steps = [
            (300, true, true, 1),
            (350, false, false, 1),
            (400, true, true, 0),
            (600, true, true, 0),
            (700, true, true, 0),
            (800, false, false, 0),
        ];
        for (m, changed, went_silent, heard) in steps {
            let c = t.update_signature(ms(m), &mut sig);
            assert_eq!(
                c,
                SignatureChange {
                    changed,
                    went_silent,
                    heard
                },
                "at {m} ms"
            );
            assert_eq!(sig, t.signature(ms(m)), "at {m} ms");
        }
        assert_eq!(sig.as_ptr(), at);
        // heard again: a change, not a silence
        t.receive(&hb(2).encode(&key()), &key(), ms(900), wall)
            .unwrap();
        let c = t.update_signature(ms(900), &mut sig);
        assert_eq!((c.changed, c.went_silent, c.heard), (true, false, 1));
        assert_eq!(sig, t.signature(ms(900)));
        // a forgotten peer rebuilds the signature; the remaining one kept its state
        t.retain(&|n| n != "node-0");
        let c = t.update_signature(ms(900), &mut sig);
        assert_eq!((c.changed, c.went_silent, c.heard), (true, false, 1));
        assert_eq!(sig, vec![("node-2".to_string(), 2)]);
        // a rebuild that also sees a silence says so
        let mut stale = vec![("node-2".to_string(), 2), ("node-3".to_string(), 2)];
        let c = t.update_signature(ms(1250), &mut stale);
        assert_eq!((c.changed, c.went_silent, c.heard), (true, true, 0));
        assert_eq!(stale, vec![("node-2".to_string(), 1)]);
    }

    #[test]
    fn timing_validation() {
        let d = MeshTiming::default();
        assert_eq!(
            MeshTiming::new(d.interval, d.fence_after, d.dead_after, d.max_clock_skew),
            Ok(d)
        );
        let ms = Duration::from_millis;
        assert!(MeshTiming::new(ms(0), ms(300), ms(600), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(200), ms(300), ms(600), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(100), ms(300), ms(599), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(100), ms(200), ms(400), d.max_clock_skew).is_ok());
        // the margin alone is not enough: the death time is at least twice the fence time
        assert!(MeshTiming::new(ms(100), ms(250), ms(450), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(200), ms(400), ms(700), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(150), ms(400), ms(650), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(200), ms(400), ms(800), d.max_clock_skew).is_ok());
    }

    #[test]
    fn startup_window_waits_to_hear_every_member() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let r = rules();
        let ms = Duration::from_millis;
        let peer = |heard: Option<u64>| PeerInput {
            last_heard: heard.map(|ago| t0 - ms(ago)),
            lease_alive: true,
            lease_held_since: Some(t0 - ms(1_000)),
        };
        let starting = OwnInput {
            lease_fresh: true,
            renewed_ever: true,
            mesh_enabled: true,
            heard_any: false,
            lease_duration: Duration::from_secs(2),
            reap_after: Duration::from_secs(20),
            permitted_since: None,
            heartbeats_since: Some(t0 - ms(100)),
            members_before: None,
            grew_at: None,
        };
        let eval = |peers: &[(&str, Option<u64>)], own: OwnInput, at: Instant| {
            let peers: BTreeMap<String, PeerInput> = peers
                .iter()
                .map(|(n, h)| (n.to_string(), peer(*h)))
                .collect();
            r.evaluate(&peers, own, &Default::default(), at)
        };
        // Alone, or with one unheard peer, the 1- and 2-member rules would permit at once;
        // in the window they do not (a third member may be about to appear).
        assert!(!eval(&[], starting, t0).may);
        assert!(!eval(&[("b", None)], starting, t0).may);
        let key_missing = OwnInput {
            mesh_enabled: false,
            ..starting
        };
        assert!(!eval(&[("b", None)], key_missing, t0).may);
        // Hearing the one peer known is not enough: two more appearing unheard would take
        // the quorum away (1 + 1 of 4).
        let heard = OwnInput {
            heard_any: true,
            ..starting
        };
        assert!(!eval(&[("b", Some(50))], heard, t0).may);
        // Hearing every member known, two or more, permits at once, and as many members
        // again appearing unheard leave the quorum intact (the flap the window prevents).
        let l = eval(&[("b", Some(50)), ("c", Some(20))], heard, t0);
        assert!(l.may);
        let after = OwnInput {
            permitted_since: l.permitted_since,
            ..heard
        };
        let grown = [("b", Some(50)), ("c", Some(20)), ("d", None), ("e", None)];
        assert!(eval(&grown, after, t0).may);
        // Hearing only some of them waits.
        assert!(!eval(&[("b", Some(50)), ("c", None)], heard, t0).may);
        // Once the window is over the usual rules apply: alone, or 2 members on the Lease.
        let end = t0 - ms(100) + r.startup_window();
        assert!(!eval(&[], starting, end - ms(1)).may);
        assert!(eval(&[], starting, end).may);
        assert!(eval(&[("b", None)], starting, end).may);
        assert!(eval(&[("b", None)], key_missing, end).may);
        // Not configured (no heartbeats at all): no window.
        let lease_only = OwnInput {
            heartbeats_since: None,
            ..key_missing
        };
        assert!(eval(&[("b", None)], lease_only, t0).may);
        // A node already permitted is not starting (a fence later is not a restart).
        let permitted = OwnInput {
            permitted_since: Some(t0 - ms(50)),
            ..key_missing
        };
        assert!(eval(&[("b", None)], permitted, t0).may);
    }

    #[test]
    fn evaluate_members_reaping_and_modes() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let r = rules();
        let p = |heard: Option<u64>, lease_alive: bool, held: Option<u64>| PeerInput {
            last_heard: heard.map(|ago| t0 - Duration::from_millis(ago)),
            lease_alive,
            lease_held_since: held.map(|ago| t0 - Duration::from_millis(ago)),
        };
        let own = OwnInput {
            permitted_since: Some(t0 - Duration::from_secs(30)),
            heartbeats_since: None,
            ..steady(t0)
        };
        let peers = BTreeMap::from([
            ("a".to_string(), p(Some(50), true, Some(100))),
            ("b".to_string(), p(Some(900), false, Some(5_000))),
            ("c".to_string(), p(Some(80), true, Some(200))),
            ("gone".to_string(), p(None, false, None)),
            (
                "long-dead".to_string(),
                p(Some(30_000), false, Some(30_000)),
            ),
        ]);
        let l = r.evaluate(&peers, own, &Default::default(), t0);
        // hears a and c: 3 of 5 — quorum of the full membership, so long-dead is reaped
        assert_eq!(
            l.members,
            vec!["a".to_string(), "b".to_string(), "c".to_string()]
        );
        assert!(l.may);
        assert_eq!(l.alive, ["a".to_string(), "c".to_string()].into());
        assert_eq!(
            l.by_heartbeat,
            ["a".to_string(), "b".to_string(), "c".to_string()].into()
        );
        assert_eq!(l.permitted_since, own.permitted_since);
        // permitted for less than the reaping time: its own silence may have hidden them
        let recent = OwnInput {
            permitted_since: Some(t0 - Duration::from_secs(10)),
            ..own
        };
        let l = r.evaluate(&peers, recent, &Default::default(), t0);
        assert!(l.reaped.is_empty());
        assert_eq!(l.members.len(), 4);
        // just back from isolation: b's silence (900 ms) started before we could hear again
        let l = r.evaluate(
            &peers,
            OwnInput {
                permitted_since: None,
                ..own
            },
            &Default::default(),
            t0,
        );
        // (long-dead too: not reaped yet, and its silence is not ours to judge either)
        assert_eq!(l.permitted_since, Some(t0));
        assert_eq!(
            l.alive,
            ["a", "b", "c", "long-dead"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        let later = OwnInput {
            permitted_since: Some(t0),
            ..own
        };
        let mut fresh = peers.clone();
        for n in ["a", "c"] {
            fresh.get_mut(n).unwrap().last_heard = Some(t0 + Duration::from_millis(550));
        }
        let l = r.evaluate(
            &fresh,
            later,
            &Default::default(),
            t0 + Duration::from_millis(599),
        );
        assert!(l.alive.contains("b"));
        let l = r.evaluate(
            &fresh,
            later,
            &Default::default(),
            t0 + Duration::from_millis(600),
        );
        assert!(!l.alive.contains("b"));
        // without API access nobody is reaped, and a majority that does not hear everybody
        // (b is silent) may not announce: a witness may be taking b's side
        let l = r.evaluate(
            &peers,
            OwnInput {
                lease_fresh: false,
                ..own
            },
            &Default::default(),
            t0,
        );
        assert_eq!(l.members.len(), 4);
        assert!(!l.may);
        // ... unless it hears every member (the API server down, everybody up) — members
        // reaped before it lost the API server do not count
        let mut all = peers.clone();
        all.get_mut("b").unwrap().last_heard = Some(t0 - Duration::from_millis(10));
        let no_api = OwnInput {
            lease_fresh: false,
            ..own
        };
        let l = r.evaluate(&all, no_api, &Default::default(), t0);
        assert_eq!(l.grant, None, "long-dead is a member it does not hear");
        let reaped: std::collections::BTreeSet<String> = ["long-dead".to_string()].into();
        let l = r.evaluate(&all, no_api, &reaped, t0);
        assert_eq!(l.grant, Some(Grant::All));
        assert_eq!(l.alive.len(), 3);
        // a minority never reaps: without c we hear 2 of 5
        let mut minority = peers.clone();
        minority.get_mut("c").unwrap().last_heard = Some(t0 - Duration::from_secs(5));
        let l = r.evaluate(&minority, own, &Default::default(), t0);
        assert_eq!(l.members.len(), 4);
        assert!(!l.may);
        // ... but one reaped before stays reaped (until its Lease is seen changing again)
        let before: std::collections::BTreeSet<String> = ["long-dead".to_string()].into();
        let l = r.evaluate(&minority, own, &before, t0);
        assert_eq!(l.members.len(), 3);
        assert_eq!(l.reaped, before);
        assert!(!l.reaped_heard);
        // heard alone, it stays out (a node cut off from it cannot know it is back), and
        // says so: a paused Lease watch must resume to see its Lease change
        minority.get_mut("long-dead").unwrap().last_heard = Some(t0 - Duration::from_millis(20));
        let l = r.evaluate(&minority, own, &before, t0);
        assert_eq!(l.members.len(), 3);
        assert_eq!(l.reaped, before);
        assert!(l.reaped_heard);
        assert_eq!(l.grew_at, None);
        minority.get_mut("long-dead").unwrap().lease_held_since = Some(t0);
        let l = r.evaluate(&minority, own, &before, t0);
        assert_eq!(l.members.len(), 4);
        assert!(l.reaped.is_empty());
        assert!(!l.reaped_heard);
        assert_eq!(
            l.grew_at,
            Some(t0),
            "a reaped member back grows the membership"
        );
        // never renewed since start: no permission whatever else holds
        let l = r.evaluate(
            &peers,
            OwnInput {
                renewed_ever: false,
                ..own
            },
            &Default::default(),
            t0,
        );
        assert!(!l.may);
        // heartbeats disabled: Lease rules
        let l = r.evaluate(
            &peers,
            OwnInput {
                mesh_enabled: false,
                ..own
            },
            &Default::default(),
            t0,
        );
        assert!(l.may);
        assert_eq!(l.alive, ["a".to_string(), "c".to_string()].into());
        assert!(l.by_heartbeat.is_empty());
    }

    #[test]
    fn rules_by_cluster_size() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let r = rules();
        let long_ago = Some(t0 - Duration::from_secs(60));
        let heard = PeerView {
            last_heard: Some(t0),
            lease_alive: true,
            lease_changed: Some(t0),
        };
        let silent = PeerView {
            last_heard: Some(t0 - Duration::from_secs(1)),
            lease_alive: true,
            lease_changed: Some(t0 - Duration::from_millis(1200)),
        };
        let never = PeerView {
            last_heard: None,
            lease_alive: false,
            lease_changed: long_ago,
        };
        let own = |fresh: bool, heard_any: bool| OwnInput {
            lease_fresh: fresh,
            renewed_ever: true,
            mesh_enabled: true,
            heard_any,
            lease_duration: Duration::from_secs(2),
            reap_after: Duration::from_secs(20),
            permitted_since: None,
            heartbeats_since: long_ago,
            members_before: None,
            grew_at: None,
        };
        let g = |peers: &[PeerView], fresh: bool, heard_any: bool| {
            r.grant(peers, &own(fresh, heard_any), t0)
        };
        // single node: always, even without its Lease
        assert_eq!(g(&[], false, true), Some(Grant::Alone));
        // two nodes: peer or Lease witness
        assert_eq!(g(&[heard], false, true), Some(Grant::Peer));
        assert_eq!(g(&[silent], true, true), Some(Grant::PairLease));
        assert_eq!(g(&[silent], false, true), None);
        // a silent peer with a fresh Lease is alive in a 2-node cluster, not in 3
        assert!(r.peer_alive(2, &silent, true, t0));
        assert!(!r.peer_alive(3, &silent, true, t0));
        // three nodes: everybody heard needs no API server; a majority does
        assert_eq!(g(&[heard, heard], false, true), Some(Grant::All));
        assert_eq!(g(&[heard, silent], true, true), Some(Grant::Majority));
        assert_eq!(g(&[heard, silent], false, true), None);
        // a minority whose unheard members still hold fresh Leases: nothing
        assert_eq!(g(&[silent, silent], true, true), None);
        // four nodes: need 2 peers (and the API server), or all 3
        assert_eq!(g(&[heard, silent, silent], true, true), None);
        assert_eq!(
            g(&[heard, heard, silent], true, true),
            Some(Grant::Majority)
        );
        assert_eq!(g(&[heard, heard, silent], false, true), None);
        assert_eq!(g(&[heard, heard, heard], false, true), Some(Grant::All));
        // nothing heard yet: two nodes use the Lease witness, three or more wait for quorum
        assert_eq!(g(&[never], true, false), Some(Grant::PairLease));
        assert_eq!(g(&[never], false, false), None);
        assert_eq!(g(&[never, never], true, false), None);
        assert!(!r.peer_alive(3, &never, true, t0));
        let lease_only = PeerView {
            last_heard: None,
            lease_alive: true,
            lease_changed: long_ago,
        };
        assert!(r.peer_alive(3, &lease_only, true, t0));
        assert!(r.peer_alive(3, &silent, false, t0));
    }

    /// A peer that crashed (or lost power) at `t0 - ago_ms`: last heartbeat then, last
    /// Lease change seen `renew_before_ms` earlier, Lease expired by now.
    fn crashed(t0: Instant, ago_ms: u64, renew_before_ms: u64) -> PeerView {
        let heard = t0 - Duration::from_millis(ago_ms);
        PeerView {
            last_heard: Some(heard),
            lease_alive: false,
            lease_changed: Some(heard - Duration::from_millis(renew_before_ms)),
        }
    }

    #[test]
    fn witness_needs_its_own_lease_and_every_unheard_member_stopped_like_a_crash() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let ms = Duration::from_millis;
        let r = rules();
        let own = steady(t0);
        let heard = PeerView {
            last_heard: Some(t0 - ms(50)),
            lease_alive: true,
            lease_changed: Some(t0 - ms(200)),
        };
        // 3 nodes, 2 lost at once 2.1 s ago: the survivor may announce on its own Lease
        let dead = crashed(t0, 2100, 250);
        assert!(r.witness_dead(&dead, &own));
        assert_eq!(r.grant(&[dead, dead], &own, t0), Some(Grant::Witness));
        // ... not without its own Lease (it may be the one cut off from everything)
        let stale = OwnInput {
            lease_fresh: false,
            ..own
        };
        assert_eq!(r.grant(&[dead, dead], &stale, t0), None);
        // ... not while one of them still has a fresh Lease (alive, cut off from us)
        let cut = PeerView {
            lease_alive: true,
            ..dead
        };
        assert!(!r.witness_dead(&cut, &own));
        assert_eq!(r.grant(&[dead, cut], &own, t0), None);
        // 5 nodes, 3 lost: the two survivors hear each other, no majority, witness
        assert_eq!(
            r.grant(&[heard, dead, dead, dead], &own, t0),
            Some(Grant::Witness)
        );
        // heard while its Lease had expired: it ran without the API server; its side may
        // still announce on "everybody heard" with a membership that does not know us
        let no_api = PeerView {
            last_heard: Some(t0 - ms(400)),
            lease_alive: false,
            lease_changed: Some(t0 - ms(400) - ms(2000)),
        };
        assert!(!r.witness_dead(&no_api, &own));
        assert_eq!(r.grant(&[dead, no_api], &own, t0), None);
        // its Lease changed a lease duration after it fell silent: it was alive and cut off
        // from us (its side may have reaped us)
        let renewed_after = PeerView {
            last_heard: Some(t0 - ms(30_000)),
            lease_alive: false,
            lease_changed: Some(t0 - ms(30_000) + ms(2000)),
        };
        assert!(!r.witness_dead(&renewed_after, &own));
        let just_under = PeerView {
            lease_changed: Some(t0 - ms(30_000) + ms(1999)),
            ..renewed_after
        };
        assert!(r.witness_dead(&just_under, &own));
        // its Lease seen only within a lease duration of our start (a first read)
        let young = OwnInput {
            heartbeats_since: Some(t0 - ms(2100) - ms(250) - ms(1999)),
            ..own
        };
        assert!(!r.witness_dead(&dead, &young));
        let older = OwnInput {
            heartbeats_since: Some(t0 - ms(2100) - ms(250) - ms(2000)),
            ..own
        };
        assert!(r.witness_dead(&dead, &older));
        // never heard: not dead to the witness
        let never = PeerView {
            last_heard: None,
            ..dead
        };
        assert!(!r.witness_dead(&never, &own));
        // a reaping time that does not exceed two lease durations disables the rule
        let short_reap = OwnInput {
            reap_after: Duration::from_secs(4),
            ..own
        };
        assert!(!r.witness_dead(&dead, &short_reap));
        // two members: the two-node rules, not the witness
        assert_eq!(r.grant(&[dead], &own, t0), Some(Grant::PairLease));
    }

    #[test]
    fn under_the_witness_rule_the_dead_are_judged_by_lease_after_the_death_time() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let ms = Duration::from_millis;
        let r = rules();
        let own = steady(t0);
        let input = |v: PeerView| PeerInput {
            last_heard: v.last_heard,
            lease_alive: v.lease_alive,
            lease_held_since: v.lease_changed,
        };
        let peers = BTreeMap::from([
            ("a".to_string(), input(crashed(t0, 2100, 100))),
            ("b".to_string(), input(crashed(t0, 2000, 300))),
            ("c".to_string(), healthy(t0)),
            ("d".to_string(), healthy(t0)),
            ("e".to_string(), input(crashed(t0, 2050, 200))),
        ]);
        // 6 members, 3 heard: no majority; a, b, e crashed
        let l = r.evaluate(&peers, own, &Default::default(), t0);
        assert_eq!(l.grant, Some(Grant::Witness));
        assert_eq!(l.permitted_since, Some(t0));
        assert_eq!(l.alive, ["c", "d"].map(String::from).into_iter().collect());
        assert!(
            l.by_heartbeat.is_empty(),
            "a fresh Lease read before every takeover"
        );
        // silent for less than the death time: still alive to the witness (a member that
        // heard everybody without the API server fences within fence_after)
        let mut recent = peers.clone();
        let e = recent.get_mut("e").unwrap();
        e.last_heard = Some(t0 - ms(400));
        e.lease_held_since = Some(t0 - ms(400) - ms(1900));
        let l = r.evaluate(&recent, own, &Default::default(), t0);
        assert_eq!(l.grant, Some(Grant::Witness));
        assert!(l.alive.contains("e"));
        let l = r.evaluate(&recent, own, &Default::default(), t0 + ms(200));
        assert!(!l.alive.contains("e"));
        // the same views with a majority heard: heartbeat judgement as before
        let mut majority = peers.clone();
        majority.get_mut("e").unwrap().last_heard = Some(t0 - ms(10));
        let settled = OwnInput {
            permitted_since: Some(t0 - Duration::from_secs(30)),
            ..own
        };
        let l = r.evaluate(&majority, settled, &Default::default(), t0);
        assert_eq!(l.grant, Some(Grant::Majority));
        assert!(l.by_heartbeat.contains("a"));
        // ... except during the first lease duration of a permission period (this node may
        // have just regained the API server while a witness still announces): a silent
        // member must also have an expired Lease, and gets a fresh read before a takeover
        let mut regained = majority.clone();
        regained.get_mut("a").unwrap().lease_alive = true;
        let young = OwnInput {
            permitted_since: Some(t0 - ms(1999)),
            ..own
        };
        let l = r.evaluate(&regained, young, &Default::default(), t0);
        assert_eq!(l.grant, Some(Grant::Majority));
        assert!(l.alive.contains("a"));
        assert!(l.by_heartbeat.is_empty());
        regained.get_mut("a").unwrap().lease_alive = false;
        let l = r.evaluate(&regained, young, &Default::default(), t0);
        assert!(!l.alive.contains("a"));
        let l = r.evaluate(&majority, settled, &Default::default(), t0);
        assert!(!l.alive.contains("a"));
        // without the API server the survivors withdraw
        let l = r.evaluate(
            &peers,
            OwnInput {
                lease_fresh: false,
                ..own
            },
            &Default::default(),
            t0,
        );
        assert!(!l.may);
    }

    #[test]
    fn a_regained_grant_settles_before_announcing() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let ms = Duration::from_millis;
        let r = rules();
        assert_eq!(r.settle_time(), ms(400));
        let peers = BTreeMap::from([
            ("a".to_string(), healthy(t0)),
            (
                "b".to_string(),
                PeerInput {
                    last_heard: Some(t0 - ms(5_000)),
                    lease_alive: true,
                    lease_held_since: Some(t0 - ms(100)),
                },
            ),
        ]);
        let own = steady(t0);
        // back from a fence with a majority (not everybody): the grant starts, no permission
        let l = r.evaluate(&peers, own, &Default::default(), t0);
        assert_eq!(l.grant, Some(Grant::Majority));
        assert!(!l.may);
        assert_eq!(l.permitted_since, Some(t0));
        let own = OwnInput {
            permitted_since: l.permitted_since,
            ..own
        };
        let at = |d: u64| {
            let mut p = peers.clone();
            p.get_mut("a").unwrap().last_heard = Some(t0 + ms(d) - ms(20));
            r.evaluate(&p, own, &Default::default(), t0 + ms(d)).may
        };
        assert!(!at(399));
        assert!(at(400));
        // hearing everybody again settles as well: a peer may not have heard this node yet
        let mut all = peers.clone();
        all.get_mut("b").unwrap().last_heard = Some(t0 - ms(20));
        let l = r.evaluate(
            &all,
            OwnInput {
                permitted_since: None,
                ..own
            },
            &Default::default(),
            t0,
        );
        assert_eq!(l.grant, Some(Grant::All));
        assert!(!l.may);
        assert_eq!(l.permitted_since, Some(t0));
        let later = |d: u64| {
            let mut p = all.clone();
            for peer in p.values_mut() {
                peer.last_heard = Some(t0 + ms(d) - ms(20));
            }
            r.evaluate(&p, own, &Default::default(), t0 + ms(d)).may
        };
        assert!(!later(399));
        assert!(later(400));
        // nor a grant period begun in the start-up window (it began hearing everybody)
        let started = OwnInput {
            heartbeats_since: Some(t0 - ms(100)),
            ..own
        };
        assert!(r.evaluate(&peers, started, &Default::default(), t0).may);
    }

    #[test]
    fn reaping_needs_a_quorum_heard_since_the_member_fell_silent_for_long() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let ms = Duration::from_millis;
        let r = rules();
        let own = OwnInput {
            permitted_since: Some(t0 - Duration::from_secs(60)),
            ..steady(t0)
        };
        // x fell silent, its Lease unchanged, 20 s before t0: its reaping time is t0
        let x = PeerInput {
            last_heard: Some(t0 - ms(20_000)),
            lease_alive: false,
            lease_held_since: Some(t0 - ms(20_200)),
        };
        let peer = |heard_ago: u64| PeerInput {
            last_heard: Some(t0 - ms(heard_ago)),
            lease_alive: true,
            lease_held_since: Some(t0 - ms(100)),
        };
        let at = |b_heard_ago: u64, now: Instant| {
            let peers =
                BTreeMap::from([("b".to_string(), peer(b_heard_ago)), ("x".to_string(), x)]);
            r.evaluate(&peers, own, &Default::default(), now)
        };
        // b heard at t0 (within the fence time): x is reaped, two members remain
        let l = at(0, t0);
        assert_eq!(l.reaped, ["x".to_string()].into());
        assert_eq!(l.members, ["b".to_string()]);
        // b last heard 50 ms before x's reaping time, still within the fence time: this
        // node may just have been cut off, and b's side may have seen x back
        let l = at(50, t0);
        assert!(l.reaped.is_empty());
        assert_eq!(l.members.len(), 2);
        assert_eq!(l.grant, Some(Grant::Majority));
        // ... still not 200 ms later (b heard 250 ms before)
        let l = at(50, t0 + ms(200));
        assert!(l.reaped.is_empty());
        // heard again after it: reaped
        let peers = BTreeMap::from([("b".to_string(), peer(0)), ("x".to_string(), x)]);
        let l = r.evaluate(&peers, own, &Default::default(), t0 + ms(100));
        assert_eq!(l.reaped, ["x".to_string()].into());
    }

    #[test]
    fn after_the_membership_grew_silent_members_are_judged_by_their_leases_for_a_lease_duration() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let ms = Duration::from_millis;
        let r = rules();
        let settled = OwnInput {
            permitted_since: Some(t0 - Duration::from_secs(60)),
            members_before: Some(1),
            ..steady(t0)
        };
        // a silent for 700 ms, its Lease still alive; c heard; two peers where there was one
        // (c appeared): a majority, but a may not know c yet and announce on the two-member
        // rule until its renew deadline — alive while its Lease is, not judged by heartbeats
        let silent = PeerInput {
            last_heard: Some(t0 - ms(700)),
            lease_alive: true,
            lease_held_since: Some(t0 - ms(800)),
        };
        let peers = BTreeMap::from([("a".to_string(), silent), ("c".to_string(), healthy(t0))]);
        let l = r.evaluate(&peers, settled, &Default::default(), t0);
        assert_eq!(l.grant, Some(Grant::Majority));
        assert!(
            l.may,
            "the growing side keeps announcing: no settling, no withdrawal"
        );
        assert_eq!(l.grew_at, Some(t0));
        assert_eq!(l.alive, ["a", "c"].map(String::from).into_iter().collect());
        assert!(l.by_heartbeat.is_empty());
        // passed back: the same for a lease duration after the growth ...
        let grown = OwnInput {
            members_before: Some(2),
            grew_at: Some(t0),
            ..settled
        };
        let judge = |after: u64, lease_alive: bool| {
            let mut p = peers.clone();
            p.get_mut("a").unwrap().lease_alive = lease_alive;
            p.get_mut("c").unwrap().last_heard = Some(t0 + ms(after) - ms(20));
            r.evaluate(&p, grown, &Default::default(), t0 + ms(after))
        };
        let l = judge(1999, true);
        assert_eq!(l.grew_at, Some(t0));
        assert!(l.alive.contains("a"));
        assert!(l.by_heartbeat.is_empty());
        // ... dead once its Lease expired too
        assert!(!judge(1999, false).alive.contains("a"));
        // ... and by heartbeats again a lease duration after the growth
        let l = judge(2000, true);
        assert!(!l.alive.contains("a"));
        assert_eq!(
            l.by_heartbeat,
            ["a", "c"].map(String::from).into_iter().collect()
        );
        // the same membership without growth: by heartbeats at once
        let same = OwnInput {
            members_before: Some(2),
            ..settled
        };
        let l = r.evaluate(&peers, same, &Default::default(), t0);
        assert_eq!(l.grew_at, None);
        assert!(!l.alive.contains("a"));
        // nor is the first evaluation a growth
        let first = OwnInput {
            members_before: None,
            ..settled
        };
        assert_eq!(
            r.evaluate(&peers, first, &Default::default(), t0).grew_at,
            None
        );
        // a shrinking membership does not grow it
        let shrunk = OwnInput {
            members_before: Some(3),
            ..settled
        };
        assert_eq!(
            r.evaluate(&peers, shrunk, &Default::default(), t0).grew_at,
            None
        );
    }
}

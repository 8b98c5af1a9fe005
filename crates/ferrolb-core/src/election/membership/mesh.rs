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
    /// `dead_after < fence_after + interval + MIN_MESH_MARGIN`.
    #[error("peer death time {dead_after:?} must be at least fence time {fence_after:?} + interval {interval:?} + {MIN_MESH_MARGIN:?}")]
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
                let was_silent = now.saturating_duration_since(h.at) >= fence;
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

    /// A summary that changes exactly when some peer crosses `fence_after` or `dead_after`
    /// of silence at `now` (the shell wakes the speaker when it changes).
    pub fn signature(&self, now: Instant) -> Vec<(String, u8)> {
        self.peers
            .iter()
            .map(|(n, h)| {
                let age = now.saturating_duration_since(h.at);
                let state = if age < self.timing.fence_after {
                    2
                } else if age < self.timing.dead_after {
                    1
                } else {
                    0
                };
                (n.clone(), state)
            })
            .collect()
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

/// What one node knows about one peer, for [`MeshRules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView {
    /// When a valid heartbeat was last heard from it (None: never since this node started).
    pub last_heard: Option<Instant>,
    /// The Lease rule ([`super::LeaseClock::peer_alive`]): its node Lease changed within
    /// the lease duration, as this node observed it.
    pub lease_alive: bool,
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
/// * `n ≥ 3`: it may announce while it hears a majority (`heard + 1 > n / 2`) within
///   `fence_after`, whatever the API server does. A peer heard at least once is dead when
///   silent for `dead_after`; a peer never heard is judged by its Lease.
/// * Until the first heartbeat from anyone arrives, a node of a 1- or 2-member cluster uses
///   its Lease as above; with 3 or more members it may not announce (a restarted node cut
///   off from its peers but not from the API server must not take over on Lease expiry
///   while the majority, on heartbeats, keeps announcing — the model check found this).
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

    /// Whether a peer was heard within `fence_after` at `now`.
    pub fn hears(&self, p: &PeerView, now: Instant) -> bool {
        p.last_heard
            .is_some_and(|t| now.saturating_duration_since(t) < self.timing.fence_after)
    }

    /// Whether `heard` peers plus this node form a majority of `members`.
    pub fn quorum(members: usize, heard: usize) -> bool {
        members <= 1 || (heard + 1) * 2 > members
    }

    /// May this node announce at `now`? `heard_any`: some heartbeat was ever received.
    pub fn may_announce(
        &self,
        peers: &[PeerView],
        own_lease_fresh: bool,
        heard_any: bool,
        now: Instant,
    ) -> bool {
        let n = peers.len() + 1;
        if !heard_any {
            return n == 1 || (n == 2 && own_lease_fresh);
        }
        let heard = peers.iter().filter(|p| self.hears(p, now)).count();
        match n {
            1 => true,
            2 => heard == 1 || own_lease_fresh,
            _ => Self::quorum(n, heard),
        }
    }

    /// Is `p` alive at `now` in this node's eyes, in a cluster of `members` (self included)?
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
    /// Members whose Lease has not changed, and who were not heard, for this long stop
    /// counting — only while `lease_fresh` (this node sees the API server) and this node
    /// hears a majority of the full membership and has been permitted for this long.
    pub reap_after: Duration,
    /// Start of this node's current permission period, as returned by the previous
    /// evaluation ([`Liveness::permitted_since`]); None when it was not permitted.
    pub permitted_since: Option<Instant>,
    /// When this node started listening for heartbeats: the instant its key was loaded, or
    /// the speaker's start while the key is not loaded yet. None: heartbeats are not
    /// configured (Lease rules only, no start-up window).
    pub heartbeats_since: Option<Instant>,
}

/// One node's view of liveness at an instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// This node may announce.
    pub may: bool,
    /// Peers that count as members (quorum denominator, heartbeat targets).
    pub members: Vec<String>,
    /// Members alive in this node's eyes.
    pub alive: std::collections::BTreeSet<String>,
    /// Members judged by their heartbeats (their silence alone proves death; no fresh
    /// read of their Lease before taking their IPs over).
    pub by_heartbeat: std::collections::BTreeSet<String>,
    /// Start of the current permission period (None: not permitted). Pass it back in
    /// [`OwnInput::permitted_since`].
    pub permitted_since: Option<Instant>,
    /// Members reaped (dead for `reap_after`); pass back to the next evaluation: a reaped
    /// member stays out until it is heard or renews its Lease again.
    pub reaped: std::collections::BTreeSet<String>,
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
    pub fn evaluate(
        &self,
        peers: &BTreeMap<String, PeerInput>,
        own: OwnInput,
        reaped_before: &std::collections::BTreeSet<String>,
        now: Instant,
    ) -> Liveness {
        let starting = self.starting(&own, now);
        if !own.mesh_enabled {
            return Liveness {
                may: own.lease_fresh && !starting,
                members: peers
                    .iter()
                    .filter(|(_, p)| p.lease_held_since.is_some())
                    .map(|(n, _)| n.clone())
                    .collect(),
                alive: peers
                    .iter()
                    .filter(|(_, p)| p.lease_alive)
                    .map(|(n, _)| n.clone())
                    .collect(),
                by_heartbeat: Default::default(),
                permitted_since: (own.lease_fresh && !starting)
                    .then(|| own.permitted_since.unwrap_or(now)),
                reaped: Default::default(),
            };
        }
        // Reaping shrinks the membership, so only a node holding a quorum of the full
        // membership may do it (a minority reaping the majority would then take over while
        // the majority keeps announcing — the model check found this).
        let held: Vec<PeerView> = peers
            .values()
            .filter(|p| p.lease_held_since.is_some())
            .map(|p| PeerView {
                last_heard: p.last_heard,
                lease_alive: p.lease_alive,
            })
            .collect();
        let full_quorum = own.heard_any
            && Self::quorum(
                held.len() + 1,
                held.iter().filter(|p| self.hears(p, now)).count(),
            );
        // Silence proves death only while this node could hear: it must itself have been
        // permitted (hearing a majority) for the whole reaping time. A node returning from
        // a long isolation would otherwise reap the members of the majority it was cut off
        // from, the moment it hears a quorum again, and take their IPs while they still
        // answer (the model check found this).
        let quorum_for_long = own
            .permitted_since
            .is_some_and(|s| now.saturating_duration_since(s) >= own.reap_after);
        let reaped: std::collections::BTreeSet<String> = peers
            .iter()
            .filter(|(name, p)| {
                let dead_long = p
                    .last_heard
                    .is_none_or(|t| now.saturating_duration_since(t) >= own.reap_after)
                    && p.lease_held_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= own.reap_after);
                dead_long
                    && ((own.lease_fresh && full_quorum && quorum_for_long)
                        || reaped_before.contains(*name))
            })
            .map(|(n, _)| n.clone())
            .collect();
        let members: Vec<(&String, &PeerInput)> = peers
            .iter()
            .filter(|(n, p)| p.lease_held_since.is_some() && !reaped.contains(*n))
            .collect();
        let n = members.len() + 1;
        let views: Vec<PeerView> = members
            .iter()
            .map(|(_, p)| PeerView {
                last_heard: p.last_heard,
                lease_alive: p.lease_alive,
            })
            .collect();
        let hears_all =
            views.len() >= 2 && own.heard_any && views.iter().all(|v| self.hears(v, now));
        let may = own.renewed_ever
            && (!starting || hears_all)
            && self.may_announce(&views, own.lease_fresh, own.heard_any, now);
        // Silence counts only while this node itself could hear: a node returning from
        // isolation (fenced) must not take a peer's silence during that isolation for its
        // death — it waits `dead_after` from regaining permission to hear it.
        let since = may.then(|| own.permitted_since.unwrap_or(now));
        let mut alive = std::collections::BTreeSet::new();
        let mut by_heartbeat = std::collections::BTreeSet::new();
        for ((name, _), v) in members.iter().zip(&views) {
            let judged = PeerView {
                last_heard: v.last_heard.map(|t| since.map_or(t, |s| t.max(s))),
                ..*v
            };
            if self.peer_alive(n, &judged, own.heard_any, now) {
                alive.insert((*name).clone());
            }
            if own.heard_any && v.last_heard.is_some() && n != 2 {
                by_heartbeat.insert((*name).clone());
            }
        }
        Liveness {
            may,
            members: members.into_iter().map(|(n, _)| n.clone()).collect(),
            alive,
            by_heartbeat,
            permitted_since: since,
            reaped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::heartbeat::tests::{hb, key};
    use super::*;

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
    fn timing_validation() {
        let d = MeshTiming::default();
        assert_eq!(
            MeshTiming::new(d.interval, d.fence_after, d.dead_after, d.max_clock_skew),
            Ok(d)
        );
        let ms = Duration::from_millis;
        assert!(MeshTiming::new(ms(0), ms(300), ms(600), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(200), ms(300), ms(600), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(100), ms(300), ms(499), d.max_clock_skew).is_err());
        assert!(MeshTiming::new(ms(100), ms(300), ms(500), d.max_clock_skew).is_ok());
    }

    #[test]
    fn startup_window_waits_to_hear_every_member() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let r = MeshRules {
            timing: MeshTiming::default(),
        };
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
            reap_after: Duration::from_secs(20),
            permitted_since: None,
            heartbeats_since: Some(t0 - ms(100)),
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
        let r = MeshRules {
            timing: MeshTiming::default(),
        };
        let p = |heard: Option<u64>, lease_alive: bool, held: Option<u64>| PeerInput {
            last_heard: heard.map(|ago| t0 - Duration::from_millis(ago)),
            lease_alive,
            lease_held_since: held.map(|ago| t0 - Duration::from_millis(ago)),
        };
        let own = OwnInput {
            lease_fresh: true,
            renewed_ever: true,
            mesh_enabled: true,
            heard_any: true,
            reap_after: Duration::from_secs(20),
            permitted_since: Some(t0 - Duration::from_secs(30)),
            heartbeats_since: None,
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
        // without API access nobody is reaped (still a quorum: 3 of 5)
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
        assert!(l.may);
        // a minority never reaps: without c we hear 2 of 5
        let mut minority = peers.clone();
        minority.get_mut("c").unwrap().last_heard = Some(t0 - Duration::from_secs(5));
        let l = r.evaluate(&minority, own, &Default::default(), t0);
        assert_eq!(l.members.len(), 4);
        assert!(!l.may);
        // ... but one reaped before stays reaped (until heard or renewed again)
        let before: std::collections::BTreeSet<String> = ["long-dead".to_string()].into();
        let l = r.evaluate(&minority, own, &before, t0);
        assert_eq!(l.members.len(), 3);
        assert_eq!(l.reaped, before);
        minority.get_mut("long-dead").unwrap().lease_held_since = Some(t0);
        let l = r.evaluate(&minority, own, &before, t0);
        assert_eq!(l.members.len(), 4);
        assert!(l.reaped.is_empty());
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
        let t0 = Instant::now();
        let r = MeshRules {
            timing: MeshTiming::default(),
        };
        let heard = PeerView {
            last_heard: Some(t0),
            lease_alive: true,
        };
        let silent = PeerView {
            last_heard: Some(t0 - Duration::from_secs(1)),
            lease_alive: true,
        };
        let never = PeerView {
            last_heard: None,
            lease_alive: false,
        };
        // single node: always, even without its Lease
        assert!(r.may_announce(&[], false, true, t0));
        // two nodes: peer or Lease witness
        assert!(r.may_announce(&[heard], false, true, t0));
        assert!(r.may_announce(&[silent], true, true, t0));
        assert!(!r.may_announce(&[silent], false, true, t0));
        // a silent peer with a fresh Lease is alive in a 2-node cluster, not in 3
        assert!(r.peer_alive(2, &silent, true, t0));
        assert!(!r.peer_alive(3, &silent, true, t0));
        // three nodes: majority, Lease irrelevant
        assert!(r.may_announce(&[heard, silent], false, true, t0));
        assert!(!r.may_announce(&[silent, silent], true, true, t0));
        // four nodes: need 2 peers
        assert!(!r.may_announce(&[heard, silent, silent], true, true, t0));
        assert!(r.may_announce(&[heard, heard, silent], false, true, t0));
        // nothing heard yet: two nodes use the Lease witness, three or more wait for quorum
        assert!(r.may_announce(&[never], true, false, t0));
        assert!(!r.may_announce(&[never], false, false, t0));
        assert!(!r.may_announce(&[never, never], true, false, t0));
        assert!(!r.peer_alive(3, &never, true, t0));
        let lease_only = PeerView {
            last_heard: None,
            lease_alive: true,
        };
        assert!(r.peer_alive(3, &lease_only, true, t0));
        assert!(r.peer_alive(3, &silent, false, t0));
    }
}

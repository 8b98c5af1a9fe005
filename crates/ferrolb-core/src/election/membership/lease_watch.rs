//! When a speaker watches its peers' node Leases.
//!
//! Every speaker renews its node Lease about once a second, so on a cluster of `N` nodes
//! every speaker watching every node Lease receives `N` events a second, and the API server
//! sends `N²`. The rules read a peer's Lease only when that peer is not heard (the witness,
//! two members, a member never heard, a grant just regained, the reaping of the dead): while
//! this node hears every member of three or more ([`super::Liveness::renews_quietly`]) and
//! no node it does not count as a member, no decision reads them. [`LeaseWatchGate`] pauses
//! the watch once that has lasted a hold time, and resumes it the moment it stops.
//!
//! While paused, the peers' Lease clocks carry no information: the caller restarts them at
//! every evaluation (and at the resume), as after an outage of its own API access, so that no
//! peer is judged by a Lease it could not see change. A resumed watch lists the Leases again:
//! those that changed meanwhile restart their clocks by changing; those that did not are
//! judged from the resume on (a Lease-judged death comes at most a relist later than with
//! the watch running, never earlier). A node heard that is not a member (a speaker that just
//! started: its Lease is new) resumes the watch, so membership is never frozen behind it.

use std::time::{Duration, Instant};

/// What [`LeaseWatchGate::update`] asks of the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchChange {
    /// Nothing to do.
    Unchanged,
    /// Stop watching the peers' node Leases.
    Pause,
    /// Watch them again (a fresh list, then the changes); restart the peers' Lease clocks.
    Resume,
}

/// Whether this node watches its peers' node Leases (pure: instants are passed in).
#[derive(Debug, Clone)]
pub struct LeaseWatchGate {
    hold: Duration,
    /// Since when the watch could pause (hearing every member, no stranger); None when it
    /// could not at the last update.
    calm_since: Option<Instant>,
    watching: bool,
}

impl LeaseWatchGate {
    /// A gate that pauses the watch once this node has heard every member and no stranger
    /// for `hold` (a lease duration in the speaker), watching until then.
    pub fn new(hold: Duration) -> Self {
        LeaseWatchGate {
            hold,
            calm_since: None,
            watching: true,
        }
    }

    /// Whether the watch runs.
    pub fn watching(&self) -> bool {
        self.watching
    }

    /// The evaluation at `now` said whether this node renews quietly (`quiet`:
    /// [`super::Liveness::renews_quietly`], it hears every member of three or more) and
    /// whether it hears a node that is not a member (`strangers`). Resumes at once when
    /// either condition fails; pauses once both have held for the hold time.
    pub fn update(&mut self, quiet: bool, strangers: bool, now: Instant) -> WatchChange {
        if !quiet || strangers {
            self.calm_since = None;
            if self.watching {
                return WatchChange::Unchanged;
            }
            self.watching = true;
            return WatchChange::Resume;
        }
        let since = *self.calm_since.get_or_insert(now);
        if self.watching && now.saturating_duration_since(since) >= self.hold {
            self.watching = false;
            return WatchChange::Pause;
        }
        WatchChange::Unchanged
    }

    /// When the watch pauses if nothing changes before (None: paused already, or not
    /// calm): the caller evaluates again then.
    pub fn pause_at(&self) -> Option<Instant> {
        match (self.watching, self.calm_since) {
            (true, Some(since)) => Some(since + self.hold),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(2);

    #[test]
    fn the_watch_pauses_after_the_hold_and_resumes_at_the_first_doubt() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = LeaseWatchGate::new(HOLD);
        assert!(g.watching());
        assert_eq!(g.pause_at(), None);
        assert_eq!(g.update(true, false, at(0)), WatchChange::Unchanged);
        assert_eq!(g.pause_at(), Some(at(2000)));
        assert_eq!(g.update(true, false, at(1999)), WatchChange::Unchanged);
        assert!(g.watching());
        assert_eq!(g.update(true, false, at(2000)), WatchChange::Pause);
        assert!(!g.watching());
        assert_eq!(g.pause_at(), None);
        assert_eq!(g.update(true, false, at(5000)), WatchChange::Unchanged);
        // a member falls silent: back at once
        assert_eq!(g.update(false, false, at(5100)), WatchChange::Resume);
        assert!(g.watching());
        assert_eq!(g.update(false, false, at(5200)), WatchChange::Unchanged);
        // heard again: the hold starts over
        assert_eq!(g.update(true, false, at(5300)), WatchChange::Unchanged);
        assert_eq!(g.pause_at(), Some(at(7300)));
        assert_eq!(g.update(true, false, at(7300)), WatchChange::Pause);
        // a stranger is heard: back at once, and no pause while it is one
        assert_eq!(g.update(true, true, at(8000)), WatchChange::Resume);
        assert_eq!(g.update(true, true, at(20_000)), WatchChange::Unchanged);
        assert!(g.watching());
        assert_eq!(g.pause_at(), None);
    }

    #[test]
    fn a_doubt_within_the_hold_starts_it_over() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = LeaseWatchGate::new(HOLD);
        g.update(true, false, at(0));
        g.update(false, false, at(1500));
        g.update(true, false, at(1600));
        assert_eq!(g.update(true, false, at(3000)), WatchChange::Unchanged);
        assert!(g.watching());
        assert_eq!(g.update(true, false, at(3600)), WatchChange::Pause);
    }
}

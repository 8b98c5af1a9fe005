//! Node liveness: this speaker's own Lease (renewal loop + fencing) and the peers' Leases.
//!
//! Every speaker holds the Lease `ferrolb-speaker-<node>` in the speaker namespace and
//! renews it every retry period, or every quiet period while it hears every member of three
//! or more ([`crate::election::LeaseClock::next_renewal`]): that is the only steady-state API
//! write, independent of the number of IPs and Services. Peers are judged on **their own monotonic clock**: a peer
//! is alive while its Lease has changed within the lease duration since they last observed
//! a change (client-go's `observedTime` rule), so wall-clock skew between nodes is harmless.
//!
//! Fencing: [`OwnLease`] publishes when the last renewal that succeeded was *sent*
//! ([`Renewals`]); the speaker's [`crate::election::Fence`] withdraws everything once that
//! is older than the renew deadline (shorter than the lease duration), before any peer can
//! consider its Lease expired.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use std::time::Instant;
use tokio::sync::watch;

use super::metrics::Metrics;
use super::watched::LeaseFacts;
use crate::election::LeaseClock;

/// Plain renewals of live peers' node Leases held back from the speaker loop by the Lease
/// watch task ([`QuietRenewals`]): Lease name → what it showed and when it was seen. The loop
/// folds them into its [`PeerTracker`] before it next reads liveness
/// (`Speaker::absorb_renewals`).
pub type HeldRenewals = Arc<std::sync::Mutex<HashMap<String, (LeaseFacts, Instant)>>>;

/// Decides, in the Lease watch task, which node-Lease events the loop must see at once. A
/// renewal by the same holder within `within` of that Lease's previous event only moves the
/// peer's expiry later: it is held ([`HeldRenewals`]) instead of waking the loop, which
/// reads it before its next liveness decision and whose expiry timer brings it to read it
/// before the peer could be judged dead. A new holder, a release, a first sight or a peer
/// heard again after `within` goes to the loop at once. On a 100-node cluster that is 330
/// events a second that no longer wake the loop.
#[derive(Debug)]
pub struct QuietRenewals {
    last: HashMap<String, (String, Instant)>,
    within: Duration,
}

impl QuietRenewals {
    /// A filter holding renewals that come within `within` of the previous one.
    pub fn new(within: Duration) -> Self {
        Self {
            last: HashMap::new(),
            within,
        }
    }

    /// Whether the Lease event `f` seen at `now` is a plain renewal to hold (false: the loop
    /// must see it now). Only node Leases are held; claims always go to the loop.
    pub fn hold(&mut self, f: &LeaseFacts, now: Instant) -> bool {
        if node_of_lease(&f.name).is_none() {
            return false;
        }
        let prev = self.last.insert(f.name.clone(), (f.holder.clone(), now));
        !f.holder.is_empty()
            && prev.is_some_and(|(h, t)| {
                h == f.holder && now.saturating_duration_since(t) < self.within
            })
    }

    /// Forgets the Lease `name` (deleted): its next event goes to the loop.
    pub fn forget(&mut self, name: &str) {
        self.last.remove(name);
    }
}

/// Prefix of every speaker node Lease name.
pub const NODE_LEASE_PREFIX: &str = "ferrolb-speaker-";

/// Name of the Lease held by the speaker of `node`.
pub fn node_lease_name(node: &str) -> String {
    format!("{NODE_LEASE_PREFIX}{node}")
}

/// The node a speaker Lease belongs to, if `name` is one.
pub fn node_of_lease(name: &str) -> Option<&str> {
    name.strip_prefix(NODE_LEASE_PREFIX)
        .filter(|n| !n.is_empty())
}

/// What identifies one renewal of a Lease: any change means its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseMark {
    /// `spec.holderIdentity` (empty: released).
    pub holder: String,
    /// `metadata.resourceVersion` (changes on every write).
    pub resource_version: String,
}

impl LeaseMark {
    /// Extracts the mark of a Lease.
    pub fn of(lease: &Lease) -> Self {
        Self {
            holder: lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone)]
struct Observed {
    mark: LeaseMark,
    /// The Lease is held by the node it is named after (`mark.holder == node`), kept so
    /// the per-event scans below compare no strings.
    held: bool,
    /// When the Lease was seen changing, restarted after an observation gap.
    changed_at: Instant,
    /// When the Lease was really seen changing (never restarted).
    renewed_at: Instant,
    /// When the peer was first seen dead (for the failover histogram).
    dead_since: Option<Instant>,
}

/// Peer liveness from observed Lease changes (pure: time is passed in).
#[derive(Debug, Clone)]
pub struct PeerTracker {
    lease_duration: Duration,
    peers: BTreeMap<String, Observed>,
}

impl PeerTracker {
    /// A tracker judging peers dead after `lease_duration` without change.
    pub fn new(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            peers: BTreeMap::new(),
        }
    }

    /// Records the current content of `node`'s Lease as seen at `now`. Returns true when it
    /// changed (a renewal, a release or a new holder).
    pub fn observe(&mut self, node: &str, mark: LeaseMark, now: Instant) -> bool {
        let held = mark.holder == node;
        match self.peers.get_mut(node) {
            Some(o) if o.mark == mark => false,
            Some(o) => {
                o.mark = mark;
                o.held = held;
                o.changed_at = now;
                o.renewed_at = now;
                o.dead_since = None;
                true
            }
            None => {
                self.peers.insert(
                    node.to_string(),
                    Observed {
                        mark,
                        held,
                        changed_at: now,
                        renewed_at: now,
                        dead_since: None,
                    },
                );
                true
            }
        }
    }

    /// Keeps only the nodes in `present` (Leases deleted ⇒ peer gone).
    pub fn retain(&mut self, present: &dyn Fn(&str) -> bool) {
        self.peers.retain(|n, _| present(n));
    }

    /// Whether `node`'s speaker is alive at `now`: its Lease is held by it and changed less
    /// than the lease duration ago.
    pub fn is_alive(&self, node: &str, now: Instant) -> bool {
        self.peers.get(node).is_some_and(|o| self.alive_at(o, now))
    }

    fn alive_at(&self, o: &Observed, now: Instant) -> bool {
        o.held && now.saturating_duration_since(o.changed_at) < self.lease_duration
    }

    /// When `node`'s Lease was last really seen changing (not moved by
    /// [`PeerTracker::restart_clocks`]), if `node` holds it (not released).
    pub fn held_since(&self, node: &str) -> Option<Instant> {
        self.peers
            .get(node)
            .filter(|o| o.held)
            .map(|o| o.renewed_at)
    }

    /// Every node with a speaker Lease (held or released), in name order, with whether it
    /// is alive at `now` ([`Self::is_alive`]) and since when it holds its Lease
    /// ([`Self::held_since`]); no name is copied.
    pub fn peers(
        &self,
        now: Instant,
    ) -> impl Iterator<Item = (&str, bool, Option<Instant>)> + Clone {
        self.peers.iter().map(move |(n, o)| {
            (
                n.as_str(),
                self.alive_at(o, now),
                o.held.then_some(o.renewed_at),
            )
        })
    }

    /// Every node with a speaker Lease (held or released).
    pub fn nodes(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    /// Nodes whose Lease is held by themselves (members of the cluster, alive or not).
    pub fn held(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, o)| o.held)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// This node could not observe the API server until `now` (its own Lease lapsed):
    /// Leases that did not change meanwhile say nothing about their holders, so every
    /// peer's silence is counted from `now` again. Without this, a relist after an API
    /// outage finds every peer's Lease unchanged for the outage's length and declares them
    /// all dead before they can renew.
    pub fn restart_clocks(&mut self, now: Instant) {
        for o in self.peers.values_mut() {
            if o.changed_at < now {
                o.changed_at = now;
                o.dead_since = None;
            }
        }
    }

    /// The resourceVersion last observed on `node`'s Lease.
    pub fn resource_version(&self, node: &str) -> Option<&str> {
        self.peers
            .get(node)
            .map(|o| o.mark.resource_version.as_str())
    }

    /// All nodes alive at `now`.
    pub fn alive(&self, now: Instant) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, o)| self.alive_at(o, now))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The next instant at which a currently alive peer will be considered dead (to arm a
    /// timer). Runs on every peer renewal: one pass over the peers, no map look-ups.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .filter(|o| self.alive_at(o, now))
            .map(|o| o.changed_at + self.lease_duration)
            .min()
    }

    /// Marks peers that are dead at `now` with the time their death was first noticed, and
    /// returns that time for `node` (the start of a failover).
    pub fn note_deaths(&mut self, now: Instant) {
        let d = self.lease_duration;
        for o in self.peers.values_mut() {
            let alive = o.held && now.saturating_duration_since(o.changed_at) < d;
            if !alive && o.dead_since.is_none() {
                o.dead_since = Some(now);
            }
        }
    }

    /// When `node` was first noticed dead (None while alive or unknown).
    pub fn dead_since(&self, node: &str) -> Option<Instant> {
        self.peers.get(node).and_then(|o| o.dead_since)
    }
}

/// Send time of this node's last successful Lease renewal (None: not renewed yet, or
/// released), as published by [`OwnLease`] for the speaker's [`crate::election::Fence`].
pub type Renewals = watch::Receiver<Option<Instant>>;

/// Shell: keeps this node's Lease renewed and publishes its renewals ([`Renewals`]).
pub struct OwnLease {
    lock: LeaseLock,
    timing: LeaseClock,
    /// The Lease API (reads).
    api: kube::Api<Lease>,
    /// The same Lease API, answers decoded slim (renewals).
    slim: kube::Api<super::watched::SlimLease>,
    node: String,
    /// `spec.leaseDurationSeconds` written on renewal.
    ttl_secs: u64,
    /// Send time of the last successful renewal (None: released).
    renewed: watch::Sender<Option<Instant>>,
    metrics: Arc<Metrics>,
    /// The Lease as this node's last successful write left it (None: not written yet, or
    /// the last attempt failed: the next one reads the Lease first).
    written: std::sync::Mutex<Option<Written>>,
}

/// How one acquire-or-renew attempt ended (errors apart).
enum Attempt {
    /// This node holds its Lease (renewed or acquired).
    Held,
    /// Another identity holds it (named).
    NotHeld(String),
}

/// What a renewal needs of the Lease it writes over.
#[derive(Debug, Clone)]
struct Written {
    resource_version: Option<String>,
    /// The Lease carries the state annotation of an earlier speaker (the renewal removes
    /// it: the state now has a ConfigMap of its own, [`super::publish`]).
    legacy_state: bool,
}

impl Written {
    fn of(lease: &Lease) -> Self {
        Self {
            resource_version: lease.metadata.resource_version.clone(),
            legacy_state: lease
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(super::state::SPEAKER_STATE_ANNOTATION)),
        }
    }
}

impl OwnLease {
    /// Prepares the Lease `ferrolb-speaker-<node>` in `namespace`, held with identity `node`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        node: &str,
        timing: LeaseClock,
        metrics: Arc<Metrics>,
    ) -> (Self, Renewals) {
        // leaseDurationSeconds is informative only (peers use their own clock and flag);
        // round up so it never reads shorter than reality.
        let ttl_secs = timing.lease_duration().as_secs_f64().ceil() as u64;
        let lock = LeaseLock::new(
            client.clone(),
            namespace,
            LeaseLockParams {
                lease_name: node_lease_name(node),
                holder_id: node.to_string(),
                lease_ttl: Duration::from_secs(ttl_secs),
            },
        );
        let (tx, rx) = watch::channel(None);
        (
            Self {
                lock,
                timing,
                api: kube::Api::namespaced(client.clone(), namespace),
                slim: kube::Api::namespaced(client, namespace),
                node: node.to_string(),
                ttl_secs,
                renewed: tx,
                metrics,
                written: std::sync::Mutex::new(None),
            },
            rx,
        )
    }

    /// Acquire or renew. A renewal of a Lease this node holds is one merge patch of
    /// `renewTime` (removing an earlier speaker's state annotation if the Lease carries
    /// one: nothing but liveness travels with the renewals), conditional on the
    /// resourceVersion of the Lease as this node last wrote it, so a Lease another writer
    /// changed since is not renewed blindly (409; the next attempt reads again). In steady
    /// state that is the renewal's only request: the Lease is read only when this node has
    /// not written it yet, or after a failed or timed-out attempt (the cache is taken
    /// before the write, so any failure leaves it empty). Everything else (create, acquire
    /// an expired or released Lease, or leave another holder alone) is
    /// [`LeaseLock::try_acquire_or_renew`]'s.
    async fn try_renew(&self) -> Result<Attempt, kube_leader_election::Error> {
        let name = node_lease_name(&self.node);
        let cached = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let base = match cached {
            Some(w) => w,
            None => {
                let current = self
                    .api
                    .get_opt(&name)
                    .await
                    .map_err(kube_leader_election::Error::GetLease)?;
                match current.filter(|l| LeaseMark::of(l).holder == self.node) {
                    Some(l) => Written::of(&l),
                    None => {
                        return Ok(match self.lock.try_acquire_or_renew().await? {
                            LeaseLockResult::Acquired(l) => {
                                self.remember(Written::of(&l));
                                Attempt::Held
                            }
                            LeaseLockResult::NotAcquired(l) => {
                                Attempt::NotHeld(LeaseMark::of(&l).holder)
                            }
                        });
                    }
                }
            }
        };
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let mut patch = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": name, "resourceVersion": base.resource_version },
            "spec": { "renewTime": now, "leaseDurationSeconds": self.ttl_secs },
        });
        if base.legacy_state {
            patch["metadata"]["annotations"] =
                serde_json::json!({ super::state::SPEAKER_STATE_ANNOTATION: null });
        }
        let params = kube::api::PatchParams {
            field_manager: Some(self.node.clone()),
            ..Default::default()
        };
        // the answer decoded slim: only its resourceVersion is kept
        let facts = self
            .slim
            .patch(&name, &params, &kube::api::Patch::Merge(&patch))
            .await
            .map_err(kube_leader_election::Error::RenewLease)?
            .facts();
        self.remember(Written {
            resource_version: Some(facts.resource_version).filter(|v| !v.is_empty()),
            legacy_state: false,
        });
        Ok(Attempt::Held)
    }

    /// Keeps what the next renewal is conditioned on: the Lease as this node just wrote it.
    fn remember(&self, written: Written) {
        // without a resourceVersion the patch would be unconditional: read again instead
        let written = Some(written).filter(|w| w.resource_version.is_some());
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = written;
    }

    /// One acquire-or-renew attempt (in steady state one write, see
    /// [`OwnLease::try_renew`]), bounded by twice the retry period
    /// so a hung request still leaves time for another before the renew deadline. Returns
    /// whether we hold the Lease; on success the published renewal moves forward to the
    /// attempt's send time.
    pub async fn renew_once(&self) -> bool {
        let sent = Instant::now();
        let limit = (self.timing.retry_period() * 2).min(self.timing.renew_deadline());
        let res = tokio::time::timeout(limit, self.try_renew()).await;
        match res {
            Ok(Ok(Attempt::Held)) => {
                if let Some(gap) = self
                    .renewed
                    .borrow()
                    .map(|t| sent.saturating_duration_since(t))
                {
                    self.metrics
                        .lease_renew_gap_seconds
                        .observe(gap.as_secs_f64());
                }
                // a renewal completing late never moves the published time backwards
                self.renewed.send_if_modified(|t| {
                    let newer = t.is_none_or(|t| t < sent);
                    if newer {
                        *t = Some(sent);
                    }
                    newer
                });
                true
            }
            Ok(Ok(Attempt::NotHeld(holder))) => {
                // Our own Lease held by someone else: a released Lease within its
                // (1 s) release period, or a misconfigured second speaker on this node.
                tracing::info!(holder = ?holder, "node lease not acquired yet");
                self.metrics.lease_renew_failures.inc();
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "node lease renewal failed");
                self.metrics.lease_renew_failures.inc();
                false
            }
            Err(_) => {
                tracing::warn!(timeout = ?limit, "node lease renewal timed out");
                self.metrics.lease_renew_failures.inc();
                false
            }
        }
    }

    /// Renews every retry period — every quiet period while `quiet` says this node hears
    /// every member of three or more ([`LeaseClock::next_renewal`]) — until `stop` fires,
    /// then releases the Lease (empty holder) so peers take over at once. The caller must
    /// have withdrawn every announcement first. When `quiet` turns false a renewal due by
    /// the retry period goes out at once.
    pub async fn run(self, mut quiet: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        // (send time, succeeded) of the last attempt
        let mut last: Option<(Instant, bool)> = None;
        let mut quiet_open = true;
        loop {
            let due = last.map_or_else(Instant::now, |(at, ok)| {
                self.timing
                    .next_renewal(at, ok, quiet_open && *quiet.borrow())
            });
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {
                    let at = Instant::now();
                    let ok = self.renew_once().await;
                    last = Some((at, ok));
                }
                r = quiet.changed(), if quiet_open => {
                    // the speaker loop is gone: every retry period from now on
                    quiet_open = r.is_ok();
                }
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() { break; }
                }
            }
        }
        self.release().await;
    }

    /// Releases the Lease: the fence closes first (we answer nothing any more), then the
    /// holder is emptied.
    pub async fn release(&self) {
        self.renewed.send_replace(None);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match tokio::time::timeout(self.timing.lease_duration(), self.lock.step_down()).await {
            Ok(Ok(())) => tracing::info!("node lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release node lease"),
            Err(_) => tracing::warn!("releasing node lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, holder: &str, rv: &str) -> LeaseFacts {
        LeaseFacts {
            name: name.into(),
            resource_version: rv.into(),
            holder: holder.into(),
            transitions: 0,
        }
    }

    #[test]
    fn only_plain_renewals_of_a_recently_seen_holder_are_held() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = QuietRenewals::new(ms(1000));
        let a = "ferrolb-speaker-a";
        assert!(
            !q.hold(&facts(a, "a", "1"), t0),
            "first sight goes to the loop"
        );
        assert!(
            q.hold(&facts(a, "a", "2"), t0 + ms(300)),
            "a renewal is held"
        );
        assert!(q.hold(&facts(a, "a", "3"), t0 + ms(600)));
        assert!(
            !q.hold(&facts(a, "a", "4"), t0 + ms(1700)),
            "heard again after a silence"
        );
        assert!(!q.hold(&facts(a, "", "5"), t0 + ms(1800)), "a release");
        assert!(!q.hold(&facts(a, "b", "6"), t0 + ms(1900)), "a new holder");
        assert!(q.hold(&facts(a, "b", "7"), t0 + ms(2000)));
        q.forget(a);
        assert!(
            !q.hold(&facts(a, "b", "8"), t0 + ms(2100)),
            "deleted, then seen again"
        );
        let claim = "ferrolb-ip-10-0-0-1";
        assert!(!q.hold(&facts(claim, "a", "1"), t0));
        assert!(
            !q.hold(&facts(claim, "a", "2"), t0 + ms(1)),
            "claims always go to the loop"
        );
    }

    fn mark(holder: &str, rv: &str) -> LeaseMark {
        LeaseMark {
            holder: holder.into(),
            resource_version: rv.into(),
        }
    }

    #[test]
    fn names() {
        assert_eq!(node_lease_name("n1"), "ferrolb-speaker-n1");
        assert_eq!(node_of_lease("ferrolb-speaker-n1"), Some("n1"));
        assert_eq!(node_of_lease("ferrolb-speaker-"), None);
        assert_eq!(node_of_lease("ferrolb-ip-10.0.0.1"), None);
    }

    #[test]
    fn peer_dies_lease_duration_after_last_observed_change() {
        let t0 = Instant::now();
        let d = Duration::from_secs(2);
        let mut tr = PeerTracker::new(d);
        assert!(!tr.is_alive("a", t0));
        assert!(tr.observe("a", mark("a", "1"), t0));
        assert!(tr.is_alive("a", t0 + Duration::from_millis(1999)));
        assert!(!tr.is_alive("a", t0 + d));
        // same content re-observed (relist) is not a renewal
        assert!(!tr.observe("a", mark("a", "1"), t0 + Duration::from_secs(1)));
        assert!(!tr.is_alive("a", t0 + d));
        // a renewal extends
        assert!(tr.observe("a", mark("a", "2"), t0 + Duration::from_secs(1)));
        assert!(tr.is_alive("a", t0 + d));
        assert_eq!(tr.next_expiry(t0 + d), Some(t0 + Duration::from_secs(3)));
        assert_eq!(tr.alive(t0 + d), vec!["a".to_string()]);
    }

    #[test]
    fn clocks_restart_after_an_observation_gap() {
        let t0 = Instant::now();
        let d = Duration::from_secs(2);
        let mut tr = PeerTracker::new(d);
        tr.observe("a", mark("a", "1"), t0);
        tr.observe("b", mark("", "1"), t0);
        let back = t0 + Duration::from_secs(300);
        assert!(!tr.is_alive("a", back));
        tr.restart_clocks(back);
        // an unchanged Lease relisted after the outage is not a death
        assert!(!tr.observe("a", mark("a", "1"), back));
        assert!(tr.is_alive("a", back + Duration::from_millis(1999)));
        assert!(!tr.is_alive("a", back + d));
        // released stays released; membership is who holds their Lease
        assert!(!tr.is_alive("b", back));
        assert_eq!(tr.held(), vec!["a".to_string()]);
        assert_eq!(tr.held_since("a"), Some(t0));
        assert_eq!(tr.held_since("b"), None);
    }

    #[test]
    fn released_or_foreign_holder_is_dead() {
        let t0 = Instant::now();
        let mut tr = PeerTracker::new(Duration::from_secs(2));
        tr.observe("a", mark("", "5"), t0);
        assert!(!tr.is_alive("a", t0));
        tr.observe("b", mark("someone-else", "5"), t0);
        assert!(!tr.is_alive("b", t0));
        assert_eq!(tr.next_expiry(t0), None);
    }

    #[test]
    fn death_time_recorded_once() {
        let t0 = Instant::now();
        let mut tr = PeerTracker::new(Duration::from_secs(2));
        tr.observe("a", mark("a", "1"), t0);
        tr.note_deaths(t0 + Duration::from_secs(1));
        assert_eq!(tr.dead_since("a"), None);
        tr.note_deaths(t0 + Duration::from_secs(3));
        tr.note_deaths(t0 + Duration::from_secs(4));
        assert_eq!(tr.dead_since("a"), Some(t0 + Duration::from_secs(3)));
        tr.observe("a", mark("a", "2"), t0 + Duration::from_secs(5));
        assert_eq!(tr.dead_since("a"), None);
        tr.retain(&|n| n != "a");
        assert!(!tr.is_alive("a", t0 + Duration::from_secs(5)));
    }
}

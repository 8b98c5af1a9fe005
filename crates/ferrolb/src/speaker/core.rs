//! The speaker's shell: gathers a snapshot from the index of Services, EndpointSlices and
//! Nodes ([`super::index`]), the claims and peer Lease marks kept per Lease event
//! ([`Speaker::lease_event`]), the own-Lease renewals and the heartbeat table, asks the
//! pure planner ([`super::plan`]) what to do, and does it
//! (claim reads and writes, the dataplane, ServiceL2Status writes, Events).
//!
//! [`Speaker::reconcile`] is one pass: liveness, then [`Planner::plan_changed`], the
//! withdrawals it asks for, the confirmations and claim writes (a won claim is announced in
//! the same pass), the dataplane, the ServiceL2Status objects. Nothing is written at steady
//! state. It returns when it next needs to run even if nothing changes (a peer's Lease
//! expiring, the fencing deadline, a hand-over timeout, a retry after an API error).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use super::announcer::{Announcer, DuplicateResponder};
use super::claims::{ClaimApi, ClaimBook, WriteOutcome};
use super::config_view::build_config;
use super::events::{EventSink, Pending};
use super::heartbeat::{node_address, Mesh};
use super::liveness::{node_lease_name, node_of_lease, LeaseMark, PeerTracker, Renewals};
use super::metrics::{Announcements, Metrics};
use super::plan::{
    self, Announced, Changed, ClaimWrite, Confirmed, Live, Planner, Snapshot, Timers, Written,
};
use super::status::{SharedStatuses, StatusApi, StatusWrite};
use super::watched::{LeaseEvent, LeaseFacts, LeaseWatch, Synced};
use crate::config::Config;
use crate::crd::{IPAddressPool, L2Advertisement};
use crate::election::membership::{
    Judgement, LeaseWatchGate, MeshRules, OwnInput, PeerInput, Verdict, WatchChange,
};
use crate::election::{
    ElectionOptions, Fence, LeaseClock, NodeInfo, Ownership, ServiceView, Views,
};

/// Heartbeat targets (node, address) and this node's own heartbeat address.
type HeartbeatTargets = (
    Vec<(String, std::net::SocketAddr)>,
    Option<std::net::SocketAddr>,
);

/// What the speaker reads, kept up to date by one watch per kind.
#[derive(Clone)]
pub struct Stores {
    /// Services, EndpointSlices (all namespaces) and Nodes, compact and per key.
    pub index: super::index::SharedIndex,
    /// IPAddressPools (speaker namespace).
    pub pools: Store<IPAddressPool>,
    /// L2Advertisements (speaker namespace).
    pub ads: Store<L2Advertisement>,
    /// The Lease watch (speaker namespace: node Leases and IP claims) has sent its first
    /// list; its events reach the speaker through [`Speaker::lease_event`] (nothing of
    /// them is stored here).
    pub leases: Synced,
    /// ServiceL2Statuses (speaker namespace), kept per event.
    pub statuses: SharedStatuses,
    /// Plain renewals of live peers' node Leases the Lease watch held back from
    /// [`Speaker::lease_event`] (folded in by [`Speaker::absorb_renewals`]).
    pub held: super::liveness::HeldRenewals,
}

/// Fixed settings of a speaker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node.
    pub node: String,
    /// `--lb-class`.
    pub lb_class: Option<String>,
    /// `--revertive`, `--ignore-exclude-lb`.
    pub options: ElectionOptions,
    /// Lease timing.
    pub clock: LeaseClock,
}

/// API clients of the speaker.
#[derive(Clone)]
pub struct Clients {
    /// Claim Leases.
    pub claims: ClaimApi,
    /// ServiceL2Status objects.
    pub status: StatusApi,
    pub events: EventSink,
    /// Node Leases (fresh reads before taking over from a silent peer).
    pub leases: Api<Lease>,
}

/// A member whose Lease has not changed (and who was not heard) for this many lease
/// durations, while this node's own Lease is fresh, no longer counts towards the quorum.
const REAP_AFTER_LEASES: u32 = 10;

/// The speaker: its inputs, its outputs, and the state between passes.
pub struct Speaker<A: Announcer> {
    /// Node name, class, election options, Lease timing.
    settings: Settings,
    /// Reflector stores: where every snapshot is read from.
    stores: Stores,
    /// API clients the plans are executed with.
    clients: Clients,
    /// The dataplane: IPs answered for.
    announcer: A,
    /// Speaker metrics.
    metrics: Arc<Metrics>,
    /// Send time of this node's last successful Lease renewal, published by the Lease task.
    renewals: Renewals,
    /// Node → when its Lease was last seen changing (the peers' Lease liveness).
    tracker: PeerTracker,
    /// IP → what the dataplane answers for it now (what the announcer was told); the
    /// `announced` series are read from it.
    announced: Announcements,
    /// The claims as the Lease watch shows them, with our own writes it has not shown yet.
    claims: ClaimBook,
    /// During a Lease relist: the names listed so far.
    lease_relist: Option<BTreeSet<String>>,
    /// IP → when the failover that gave it to us began, until it is announced (failover
    /// histogram only).
    loss_at: BTreeMap<IpAddr, Instant>,
    /// The decisions' own state: hand-over waits, backoffs, status and Event memories.
    planner: Planner,
    /// Configuration errors last logged (logged again only when they change).
    config_errors: Vec<String>,
    /// The configuration of the last pass and the pool and advertisement objects it was
    /// built from (the stores' own, so none of them can be freed and its address reused).
    config_from: Option<ConfigFrom>,
    /// Heartbeat table and targets shared with the heartbeat task (None: Lease rules only).
    mesh: Option<Mesh>,
    /// Tells the Lease task whether it may renew at the quiet period
    /// ([`crate::election::membership::Liveness::renews_quietly`]; None: never).
    quiet: Option<tokio::sync::watch::Sender<bool>>,
    /// When the peers' node Leases are watched, and the switch of that watch (None: always
    /// watched).
    lease_watch: Option<(LeaseWatchGate, tokio::sync::watch::Sender<bool>)>,
    /// Liveness of the last evaluation (its permission period and reaped members feed the next).
    live: Live,
    /// This node's Lease was fresh at the last evaluation (stale → fresh restarts peers' clocks).
    lease_was_fresh: bool,
    /// What this node publishes on its Lease for `ferrolb explain` (None: nothing).
    board: Option<super::state::SharedBoard>,
    /// The instant of the last pass (its timers are re-armed from it, see [`Self::rearm`]).
    last_pass: Option<Instant>,
    /// How many entries the per-IP tables held when they were last rebuilt dense
    /// ([`Self::make_dense`]; 0 at first).
    dense_at: usize,
    /// The election's view of the nodes ([`plan::node_infos`]), rebuilt only when a Node,
    /// this node's permission or the set of live peers changed.
    nodes: Vec<NodeInfo>,
    /// `nodes` must be rebuilt (permission or live peers changed).
    nodes_stale: bool,
    /// What the heartbeat targets were last made from (heartbeats on, the members, the
    /// index's [`super::index::Index::node_generation`]): while it holds, they are current.
    targets_from: Option<(bool, Vec<String>, u64)>,
}

/// A configuration and the pool and advertisement objects it was built from.
type ConfigFrom = (Vec<Arc<IPAddressPool>>, Vec<Arc<L2Advertisement>>, Config);

/// The parts of a liveness judgement that differ from what the speaker keeps, as owned
/// names (None: unchanged).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LivenessChanges {
    /// The members, when they differ from those the heartbeat targets were made from.
    pub members: Option<Vec<String>>,
    /// [`Live::alive`], when it changed.
    pub alive: Option<BTreeSet<String>>,
    /// [`Live::by_heartbeat`], when it changed.
    pub by_heartbeat: Option<BTreeSet<String>>,
    /// [`Live::reaped`], when it changed.
    pub reaped: Option<BTreeSet<String>>,
}

/// What of judgement `j` of `peers` (sorted by name) differs from `live` and from the
/// `members` kept (None: none kept); copies the names of what changed only.
pub fn liveness_changes(
    j: &Judgement,
    peers: &[(&str, PeerInput)],
    live: &Live,
    members: Option<&[String]>,
) -> LivenessChanges {
    fn set(
        j: &Judgement,
        peers: &[(&str, PeerInput)],
        kept: &BTreeSet<String>,
        pick: fn(&Verdict) -> bool,
    ) -> Option<BTreeSet<String>> {
        let names = j.names(peers, pick);
        (!names.clone().eq(kept.iter().map(String::as_str)))
            .then(|| names.map(str::to_string).collect())
    }
    let now_members = j.names(peers, |v| v.member);
    let same_members =
        members.is_some_and(|m| now_members.clone().eq(m.iter().map(String::as_str)));
    LivenessChanges {
        members: (!same_members).then(|| now_members.map(str::to_string).collect()),
        alive: set(j, peers, &live.alive, |v| v.alive),
        by_heartbeat: set(j, peers, &live.by_heartbeat, |v| v.by_heartbeat),
        reaped: set(j, peers, &live.reaped, |v| v.reaped),
    }
}

/// Whether two lists of a store's objects are the same objects, in the same order.
fn same_objects<K>(a: &[Arc<K>], b: &[Arc<K>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

impl<A: Announcer> Speaker<A> {
    /// A speaker that has announced nothing yet.
    pub fn new(
        settings: Settings,
        stores: Stores,
        clients: Clients,
        announcer: A,
        metrics: Arc<Metrics>,
        renewals: Renewals,
    ) -> Self {
        let announced = Announcements::default();
        metrics.show_announced(&settings.node, &announced);
        Self {
            tracker: PeerTracker::new(settings.clock.lease_duration()),
            planner: Planner::new(&settings.node, settings.options, settings.clock),
            settings,
            stores,
            clients,
            announcer,
            metrics,
            renewals,
            announced,
            claims: ClaimBook::default(),
            lease_relist: None,
            loss_at: BTreeMap::new(),
            config_errors: Vec::new(),
            config_from: None,
            mesh: None,
            quiet: None,
            lease_watch: None,
            live: Live::default(),
            lease_was_fresh: false,
            board: None,
            last_pass: None,
            dense_at: 0,
            nodes: Vec::new(),
            nodes_stale: true,
            targets_from: None,
        }
    }

    /// Reports permission, heard peers and announcements to `board` after every pass.
    pub fn with_board(mut self, board: super::state::SharedBoard) -> Self {
        self.board = Some(board);
        self
    }

    /// Tells the board the liveness the last pass evaluated (announcements are told one at
    /// a time as they change: [`Self::tell_board`]).
    fn publish_state(&self, now: Instant) {
        let Some(board) = &self.board else {
            return;
        };
        let me = self.settings.node.as_str();
        // the tracker's peers come sorted by name: the lists are compared with the board's
        // as they are, and copied only when they differ
        let members = self
            .tracker
            .peers(now)
            .filter(|(n, _, held)| held.is_some() && *n != me)
            .map(|(n, _, _)| n);
        let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
        match &self.mesh {
            Some(m) => {
                let st = m.lock();
                let dead_after = m.rules.timing.dead_after;
                let heard = self.tracker.peers(now).map(|(n, _, _)| n).filter(|n| {
                    st.table
                        .last_heard(n)
                        .is_some_and(|t| now.saturating_duration_since(t) < dead_after)
                });
                b.set_liveness(self.live.may, st.enabled, heard, members);
            }
            None => b.set_liveness(self.live.may, false, std::iter::empty(), members),
        }
    }

    /// Tells the board that `ip` is now announced with `a` (None: withdrawn).
    fn tell_board(&self, ip: IpAddr, a: Option<&Announced>) {
        if let Some(board) = &self.board {
            let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
            match a {
                Some(a) => b.announce(ip, a, k8s_openapi::jiff::Timestamp::now()),
                None => b.withdraw(ip),
            }
        }
    }

    /// Uses heartbeats (from [`super::heartbeat`]) for liveness and fencing, on top of the
    /// node Leases (rules: [`crate::election::membership::MeshRules`]).
    pub fn with_mesh(mut self, mesh: Mesh) -> Self {
        self.mesh = Some(mesh);
        self
    }

    /// Publishes on `quiet` after every pass whether this node's Lease task may renew at
    /// the quiet period ([`crate::election::LeaseClock::next_renewal`]).
    pub fn with_quiet_renewals(mut self, quiet: tokio::sync::watch::Sender<bool>) -> Self {
        self.quiet = Some(quiet);
        self
    }

    /// Pauses the watch of the peers' node Leases through `switch` (false: paused) while
    /// no decision reads them, and resumes it when one may
    /// ([`crate::election::membership::LeaseWatchGate`], held for a lease duration).
    pub fn with_lease_watch(mut self, switch: tokio::sync::watch::Sender<bool>) -> Self {
        let hold = self.settings.clock.lease_duration();
        self.lease_watch = Some((LeaseWatchGate::new(hold), switch));
        self
    }

    /// While the peers' node Lease watch is paused, their Lease clocks restart at `now`
    /// before every liveness decision: nothing unseen says anything about the peers.
    fn hold_clocks_while_paused(&mut self, now: Instant) {
        if !self.watches_peer_leases() {
            self.tracker.restart_clocks(now);
        }
    }

    /// Whether the peers' node Leases are watched (false while the watch is paused).
    pub fn watches_peer_leases(&self) -> bool {
        self.lease_watch.as_ref().is_none_or(|(g, _)| g.watching())
    }

    /// Whether this node may announce at `now` (Lease fresh, or heartbeat quorum).
    pub fn may_announce(&mut self, now: Instant) -> bool {
        self.absorb_renewals();
        self.hold_clocks_while_paused(now);
        let (peers, own, rules) = self.inputs(now);
        rules.judge(&peers, own, &self.live.reaped, now).may
    }

    /// Folds the peers' renewals the Lease watch held back ([`Stores::held`]) into the
    /// tracker, each as seen when it arrived. Runs before every liveness decision.
    pub fn absorb_renewals(&mut self) {
        let held = std::mem::take(&mut *self.stores.held.lock().unwrap_or_else(|p| p.into_inner()));
        for (name, (f, seen)) in held {
            if let Some(node) = node_of_lease(&name) {
                self.tracker.observe(node, f.mark(), seen);
            }
        }
    }

    /// Whether the last pass found that this node may announce (what it acted upon).
    pub fn permitted(&self) -> bool {
        self.live.may
    }

    /// The inputs of the liveness rules at `now` (rules:
    /// [`crate::election::membership::MeshRules::judge`]): each peer's, sorted by name (the
    /// names are the tracker's: none is copied), this node's, and the rules.
    fn inputs(&self, now: Instant) -> (Vec<(&str, PeerInput)>, OwnInput, MeshRules) {
        // Heartbeats already queued count: after a stall of this process, peers that kept
        // sending must not be judged silent because the heartbeat task has not run yet.
        if let Some(m) = &self.mesh {
            m.drain();
        }
        let fence = self.fence();
        let clock = self.settings.clock;
        let me = self.settings.node.as_str();
        let state = self.mesh.as_ref().map(|m| m.lock());
        let table = state.as_ref().map(|st| &st.table);
        let index = self.index();
        let peers: Vec<(&str, PeerInput)> = self
            .tracker
            .peers(now)
            .filter(|(n, _, _)| *n != me)
            .map(|(n, lease_alive, held_since)| {
                let input = PeerInput {
                    last_heard: table.and_then(|t| t.last_heard(n)),
                    lease_alive,
                    // a member holds its Lease and its Node still exists (a deleted
                    // node's crashed speaker never releases its Lease)
                    lease_held_since: held_since.filter(|_| index.has_node(n)),
                };
                (n, input)
            })
            .collect();
        let own = OwnInput {
            lease_fresh: fence.lease_fresh(now),
            renewed_ever: fence.last_renewed().is_some(),
            mesh_enabled: state.as_ref().is_some_and(|st| st.enabled),
            heard_any: table.is_some_and(|t| t.heard_any()),
            lease_duration: clock.lease_duration(),
            reap_after: clock.lease_duration() * REAP_AFTER_LEASES,
            permitted_since: self.live.permitted_since,
            heartbeats_since: state.as_ref().map(|st| st.since),
            members_before: self.live.members,
            grew_at: self.live.grew_at,
        };
        let rules = match &self.mesh {
            Some(m) => m.rules,
            None => MeshRules {
                timing: Default::default(),
            },
        };
        (peers, own, rules)
    }

    /// The heartbeat targets: every member with an address (none without heartbeats), and
    /// this node's own heartbeat address; None when they are those of the last call (same
    /// members, no Node changed since). `members` None: the members of the last call.
    fn heartbeat_targets(
        &mut self,
        members: Option<Vec<String>>,
        mesh_enabled: bool,
    ) -> Option<HeartbeatTargets> {
        let generation = self.index().node_generation();
        let members = match (members, self.targets_from.take()) {
            (None, Some((on, m, g))) if on == mesh_enabled && g == generation => {
                self.targets_from = Some((on, m, g));
                return None;
            }
            (Some(m), _) | (None, Some((_, m, _))) => m,
            (None, None) => Vec::new(),
        };
        let targets = if mesh_enabled {
            let port = self
                .mesh
                .as_ref()
                .map_or(super::heartbeat::DEFAULT_PORT, |m| m.port);
            let index = self.index();
            let own = index
                .node_named(&self.settings.node)
                .and_then(|n| node_address(&n, port));
            let to = members
                .iter()
                .filter_map(|m| {
                    let node = index.node_named(m)?;
                    Some((m.clone(), node_address(&node, port)?))
                })
                .collect();
            (to, own)
        } else {
            (Vec::new(), None)
        };
        self.targets_from = Some((mesh_enabled, members, generation));
        Some(targets)
    }

    /// Evaluates liveness for this pass (and restarts the peers' Lease clocks after an
    /// observation gap), publishes the heartbeat targets. A pass whose peers keep their
    /// verdicts copies no name: the sets of [`Live`] and the members are replaced only when
    /// they change.
    fn refresh_liveness(&mut self, now: Instant) {
        let fence = self.fence();
        let lease_fresh = fence.lease_fresh(now);
        if lease_fresh && !self.lease_was_fresh && fence.last_renewed().is_some() {
            self.tracker.restart_clocks(now);
        }
        self.lease_was_fresh = lease_fresh;
        let (j, mesh_enabled, changed) = {
            let (peers, own, rules) = self.inputs(now);
            let j = rules.judge(&peers, own, &self.live.reaped, now);
            let changed = liveness_changes(&j, &peers, &self.live, self.targets_members());
            (j, own.mesh_enabled, changed)
        };
        if let Some(q) = &self.quiet {
            let quiet = j.renews_quietly();
            q.send_if_modified(|was| std::mem::replace(was, quiet) != quiet);
        }
        let targets = self.heartbeat_targets(changed.members, mesh_enabled);
        if let Some(b) = changed.by_heartbeat {
            self.live.by_heartbeat = b;
        }
        if let Some(alive) = changed.alive {
            for gone in self.live.alive.difference(&alive) {
                tracing::info!(peer = %gone, heartbeats = self.live.by_heartbeat.contains(gone), "peer dead");
            }
            for back in alive.difference(&self.live.alive) {
                tracing::info!(peer = %back, "peer alive");
            }
            self.live.alive = alive;
            self.nodes_stale = true;
        }
        if let Some(reaped) = changed.reaped {
            for r in reaped.difference(&self.live.reaped) {
                tracing::warn!(peer = %r, "dead for long: no longer counted towards the quorum");
            }
            self.live.reaped = reaped;
        }
        if j.may != self.live.may {
            tracing::info!(may_announce = j.may, "permission changed");
            self.nodes_stale = true;
        }
        self.live.may = j.may;
        self.live.permitted_since = j.permitted_since;
        self.live.grew_at = j.grew_at;
        self.live.members = Some(j.member_count());
        // a node heard that is no member (a speaker just started: its Lease is new to us), or
        // a reaped member heard again (only its Lease, seen changing, brings it back)
        let strangers = std::cell::Cell::new(j.reaped_heard);
        if let Some(m) = &self.mesh {
            let mut st = m.lock();
            st.may_announce = j.may;
            if let Some((targets, own)) = targets {
                st.set_targets(targets);
                st.own = own;
            }
            let tracker = &self.tracker;
            st.table.retain(&|n| {
                let member = tracker.held_since(n).is_some();
                strangers.set(strangers.get() || !member);
                member
            });
            if let Some(g) = st.group.as_mut() {
                g.retain(&|n| tracker.held_since(n).is_some());
            }
        }
        self.metrics.may_announce.set(i64::from(j.may));
        self.gate_lease_watch(j.renews_quietly(), strangers.get(), now);
    }

    /// Pauses or resumes the peers' node Lease watch as the gate says after an evaluation
    /// at `now`. On resume the peers' Lease clocks restart: nothing was seen meanwhile.
    fn gate_lease_watch(&mut self, quiet: bool, strangers: bool, now: Instant) {
        let Some((gate, switch)) = &mut self.lease_watch else {
            return;
        };
        match gate.update(quiet, strangers, now) {
            WatchChange::Unchanged => return,
            WatchChange::Pause => {
                tracing::info!("hearing every member: the peers' node Lease watch pauses");
            }
            WatchChange::Resume => {
                tracing::info!(strangers, "the peers' node Lease watch resumes");
                self.tracker.restart_clocks(now);
            }
        }
        let on = gate.watching();
        switch.send_replace(on);
        self.metrics.peer_lease_watch.set(i64::from(on));
    }

    /// The members the heartbeat targets were last made from (None: never made).
    fn targets_members(&self) -> Option<&[String]> {
        self.targets_from.as_ref().map(|(_, m, _)| m.as_slice())
    }

    /// This node's fence with the latest renewal the Lease task published.
    fn fence(&self) -> Fence {
        self.planner.fence(*self.renewals.borrow())
    }

    /// The IPs currently announced.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.announced.read().keys().copied().collect()
    }

    /// Records one observed Lease (as a watch event would). See [`Self::lease_event`].
    pub fn observe_lease(&mut self, lease: &Lease, now: Instant) -> bool {
        self.lease_event(watcher::Event::Apply(LeaseFacts::of(lease)), now)
    }

    /// Applies one Lease watch event: node Lease marks to the peers' liveness, claims to
    /// the claims. Returns true when a pass is needed: a claim changed, a peer came alive,
    /// released or deleted its Lease, a relist completed. Plain renewals of live peers need
    /// no pass (they only move its timers, see [`Self::rearm`]).
    pub fn lease_event(&mut self, ev: watcher::Event<LeaseFacts>, now: Instant) -> bool {
        self.lease_event_from((LeaseWatch::All, ev), now)
    }

    /// [`Self::lease_event`] for an event of one of the Lease watches: a list concerns only
    /// the Leases of its watch.
    pub fn lease_event_from(&mut self, (from, ev): LeaseEvent, now: Instant) -> bool {
        self.absorb_renewals();
        let nodes = from != LeaseWatch::Claims;
        let claims = from != LeaseWatch::Nodes;
        match ev {
            watcher::Event::Apply(f) => self.lease_seen(f, now),
            watcher::Event::InitApply(f) => {
                if let Some(seen) = &mut self.lease_relist {
                    seen.insert(f.name.clone());
                }
                self.lease_seen(f, now);
                false
            }
            watcher::Event::Delete(f) => match node_of_lease(&f.name) {
                Some(node) => {
                    self.tracker.retain(&|n| n != node);
                    true
                }
                None => f
                    .claim()
                    .is_some_and(|(ip, _)| self.claims.observe(ip, None)),
            },
            watcher::Event::Init => {
                if nodes {
                    self.lease_relist = Some(BTreeSet::new());
                }
                if claims {
                    self.claims.begin_relist();
                }
                false
            }
            watcher::Event::InitDone => {
                if nodes {
                    if let Some(seen) = self.lease_relist.take() {
                        self.tracker.retain(&|n| seen.contains(&node_lease_name(n)));
                    }
                }
                if claims {
                    self.claims.end_relist();
                }
                true
            }
        }
    }

    fn lease_seen(&mut self, f: LeaseFacts, now: Instant) -> bool {
        match node_of_lease(&f.name) {
            Some(node) => {
                let was = self.tracker.is_alive(node, now);
                self.tracker.observe(node, f.mark(), now);
                was != self.tracker.is_alive(node, now)
            }
            None => match f.claim() {
                Some((ip, c)) => self.claims.observe(ip, Some(c)),
                None => false,
            },
        }
    }

    /// The index (a poisoned lock still holds consistent data: every update is one call).
    fn index(&self) -> std::sync::MutexGuard<'_, super::index::Index> {
        self.stores.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The snapshot's inputs other than the claims: the configuration, the views of the
    /// Services changed since the last pass (all of them when the configuration changed);
    /// brings the node views (`self.nodes`) up to date.
    fn gather(&mut self, may: bool) -> (Config, BTreeMap<Arc<str>, Vec<ServiceView>>) {
        let config = self.config();
        let mut index = self.stores.index.lock().unwrap_or_else(|p| p.into_inner());
        let changes = index.changes(&config);
        if index.take_nodes_changed() || self.nodes_stale {
            self.nodes =
                plan::node_infos(index.named_nodes(), &self.settings.node, may, &self.live);
            self.nodes_stale = false;
        }
        drop(index);
        (config, changes)
    }

    /// The validated configuration (its errors logged when they change).
    /// The configuration from the pool and advertisement stores: built again only when one
    /// of their objects changed, came or went since the last call (a store holds a new
    /// object for every change).
    fn config(&mut self) -> Config {
        let pools = self.stores.pools.state();
        let ads = self.stores.ads.state();
        if let Some((p, a, config)) = &self.config_from {
            if same_objects(p, &pools) && same_objects(a, &ads) {
                return config.clone();
            }
        }
        let (config, errors) = build_config(
            &pools.iter().map(|p| (**p).clone()).collect::<Vec<_>>(),
            &ads.iter().map(|a| (**a).clone()).collect::<Vec<_>>(),
        );
        let frozen = config.pools.values().filter(|p| p.frozen).count();
        self.metrics.config.loaded(frozen, errors.len());
        if errors != self.config_errors {
            for e in &errors {
                tracing::warn!(error = %e, "configuration object ignored");
            }
            self.config_errors = errors;
        }
        self.config_from = Some((pools, ads, config.clone()));
        config
    }

    fn withdraw(&mut self, ip: IpAddr) {
        let gone = self.announced.write().remove(&ip);
        if let Some(a) = gone {
            self.planner.note_announced(ip, Some(&a), None);
            self.tell_board(ip, None);
            self.announcer.withdraw(ip);
            self.metrics.change(false);
            tracing::info!(%ip, "withdrawn");
        }
    }

    /// Withdraws every announcement at once (fencing, shutdown).
    pub fn withdraw_all(&mut self) {
        let ips: Vec<IpAddr> = self.announced.read().keys().copied().collect();
        for ip in ips {
            self.withdraw(ip);
        }
    }

    /// One pass. Returns the instant at which the next pass is due even without changes.
    pub async fn reconcile(&mut self, now: Instant) -> Option<Instant> {
        self.metrics.reconciles.inc();
        self.last_pass = Some(now);
        self.absorb_renewals();
        self.hold_clocks_while_paused(now);
        self.tracker.note_deaths(now);
        self.refresh_liveness(now);
        let may = self.live.may;
        let (config, changes) = self.gather(may);
        let changed_claims = self.claims.take_changed();
        let plan = self.planner.plan_changed(
            &Snapshot {
                config: &config,
                views: Views::Changed(&changes),
                nodes: &self.nodes,
                claims: self.claims.claims(),
                live: &self.live,
                renewed: *self.renewals.borrow(),
                now,
            },
            &Changed {
                claims: &changed_claims,
                holders: self.claims.holders(),
                by_holder: self.claims.by_holder(),
            },
        );
        let count = self.announced.read().len();
        if plan.fenced && count > 0 {
            tracing::warn!(
                count,
                heartbeats = self.mesh.as_ref().is_some_and(|m| m.lock().enabled),
                "fenced (no heartbeat quorum / node lease not renewed in time): withdrawing everything"
            );
            self.metrics.fenced.inc();
            self.withdraw_all();
        }
        for ip in &plan.withdraw_first {
            self.withdraw(*ip);
        }
        let mut announce = plan.announce;
        if plan.confirm {
            self.confirm_claims(&mut announce, now).await;
        }
        let writes = self.planner.writes_due(plan.writes, now);
        if !writes.is_empty() {
            let won = self.write_claims(writes, &plan.owners, now).await;
            announce.extend(won);
        }
        self.apply_dataplane(&announce, plan.scope.as_ref(), now);
        // before the status writes: their temporaries then reuse the nodes freed
        self.make_dense_when_grown();
        if may {
            self.sync_status(now).await;
        }
        self.publish_state(now);
        self.next_wakeup(now, may)
    }

    /// Rebuilds the per-IP tables dense ([`Self::make_dense`]) when their entries grew or
    /// shrank by more than an eighth since the last rebuild: the start-up fills them IP
    /// after IP, which leaves each table's nodes about half used. The rebuilds' cost, one
    /// pass over the entries, is amortised over the changes that made them due.
    fn make_dense_when_grown(&mut self) {
        let size = self.announced.read().len()
            + self.claims.claims().len()
            + self
                .stores
                .statuses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len();
        if crate::dense::due(self.dense_at, size) {
            self.make_dense();
            self.dense_at = size;
        }
    }

    /// Rebuilds every table holding an entry per announced IP or Service with full B-tree
    /// nodes ([`crate::dense::Dense`]): what the speaker announces, the claims, the
    /// planner's and the election's tables, the ServiceL2Status book, the published
    /// state, the dataplane's owned IPs. Every decision reads them as before.
    fn make_dense(&mut self) {
        use crate::dense::Dense;
        self.announced.write().make_dense();
        self.claims.make_dense();
        self.planner.make_dense();
        self.stores
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .make_dense();
        if let Some(board) = &self.board {
            board.lock().unwrap_or_else(|p| p.into_inner()).make_dense();
        }
        self.announcer.make_dense();
    }

    /// Re-asserts each claim of `announce` with a write carrying the resourceVersion just
    /// read: a peer that judged us dead and claims concurrently then loses with a conflict
    /// (a plain read would let both of us announce until the watches catch up). Stops at
    /// the first API failure.
    async fn confirm_claims(&mut self, announce: &mut BTreeMap<IpAddr, Ownership>, now: Instant) {
        let mut outcomes = Vec::new();
        for ip in announce.keys().copied().collect::<Vec<_>>() {
            let o = self.confirm_one(ip).await;
            match &o {
                Confirmed::Held(c) => {
                    let base = self.claims.watched_rv(ip);
                    self.claims.wrote(ip, base, Some(c.clone()));
                }
                Confirmed::Changed(fresh) => {
                    tracing::info!(%ip, "claim changed while fenced; not announcing");
                    let base = self.claims.watched_rv(ip);
                    self.claims.wrote(ip, base, fresh.clone());
                }
                Confirmed::Retry => {}
                Confirmed::Failed => {
                    outcomes.push((ip, o));
                    break;
                }
            }
            outcomes.push((ip, o));
        }
        self.planner.confirmed(announce, &outcomes, now);
    }

    async fn confirm_one(&self, ip: IpAddr) -> Confirmed {
        let me = self.settings.node.as_str();
        let fresh = match self.clients.claims.get(ip).await {
            Ok(Some(c)) if *c.holder == *me => {
                match self.clients.claims.write(ip, Some(&c), &c.record()).await {
                    Ok(WriteOutcome::Won(c2)) => return Confirmed::Held(c2),
                    Ok(WriteOutcome::Lost) => self.clients.claims.get(ip).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        match fresh {
            // re-read after a lost race names us again: try on the next pass
            Ok(Some(c)) if *c.holder == *me => Confirmed::Retry,
            Ok(fresh) => Confirmed::Changed(fresh),
            Err(e) => {
                tracing::warn!(%ip, error = %e, "cannot confirm claim");
                self.metrics.api_errors.inc();
                Confirmed::Failed
            }
        }
    }

    /// Performs the claim writes (after a fresh read of each silent holder's Lease, when
    /// asked); returns the IPs won that this node must announce now.
    async fn write_claims(
        &mut self,
        writes: Vec<ClaimWrite>,
        owners: &BTreeMap<IpAddr, Ownership>,
        now: Instant,
    ) -> BTreeMap<IpAddr, Ownership> {
        // Confirm silent holders with a fresh read of their node Lease: a watch that lags
        // must not make us take over from a speaker that is in fact renewing.
        let mut outcomes = Vec::new();
        let mut ready = Vec::new();
        for w in writes {
            if let Some(h) = &w.confirm_dead {
                match self.clients.leases.get_opt(&node_lease_name(h)).await {
                    Ok(Some(l)) => {
                        let mark = LeaseMark::of(&l);
                        if Some(mark.resource_version.as_str()) != self.tracker.resource_version(h)
                        {
                            tracing::info!(holder = %h, "holder renewed after all; not taking over");
                            self.tracker.observe(h, mark, Instant::now());
                            outcomes.push((w, Written::HolderAlive));
                            continue;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read peer lease");
                        self.metrics.api_errors.inc();
                        self.planner.lease_read_failed(now);
                        return BTreeMap::new();
                    }
                }
            }
            ready.push(w);
        }
        let api = self.clients.claims.clone();
        let results: Vec<(ClaimWrite, Result<WriteOutcome, kube::Error>)> =
            futures::stream::iter(ready.into_iter().map(|w| {
                let api = api.clone();
                async move {
                    let r = match &w.record {
                        Some(rec) => api.write(w.ip, w.expected.as_ref(), rec).await,
                        None => match &w.expected {
                            Some(c) => api.delete(w.ip, c).await.map(|_| WriteOutcome::Lost),
                            None => Ok(WriteOutcome::Lost),
                        },
                    };
                    (w, r)
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        for (w, r) in results {
            let base = w.expected.as_ref().map(|c| c.resource_version.clone());
            let outcome = match (r, &w.record) {
                (Ok(WriteOutcome::Won(c)), Some(rec)) => {
                    tracing::info!(ip = %w.ip, holder = %rec.holder, epoch = rec.epoch, "claim written");
                    if rec.holder == self.settings.node {
                        let prev = w.expected.as_ref().map(|c| &*c.holder).unwrap_or("");
                        let lost = if prev.is_empty() {
                            // released (graceful hand-over) or new: the loss is what woke us
                            w.expected.as_ref().map(|_| now)
                        } else {
                            Some(self.tracker.dead_since(prev).unwrap_or(now))
                        };
                        if let Some(t) = lost {
                            self.loss_at.insert(w.ip, t);
                        }
                    }
                    self.claims.wrote(w.ip, base, Some(c.clone()));
                    Written::Won(c)
                }
                (Ok(_), None) => {
                    tracing::info!(ip = %w.ip, "claim deleted");
                    self.claims.wrote(w.ip, base, None);
                    Written::Deleted
                }
                (Ok(_), Some(_)) => {
                    tracing::info!(ip = %w.ip, "claim lost to another node");
                    self.metrics.claim_conflicts.inc();
                    Written::Lost
                }
                (Err(e), _) => {
                    tracing::warn!(ip = %w.ip, error = %e, "claim write failed; retrying");
                    self.metrics.api_errors.inc();
                    Written::Failed
                }
            };
            outcomes.push((w, outcome));
        }
        self.planner.claims_written(owners, &outcomes, now)
    }

    /// Brings the dataplane in line with `target` (and the announced-IP metrics, the
    /// failover histogram and the Events).
    /// `target` covers the IPs of `scope` (None: every IP); the others stay as they are.
    fn apply_dataplane(
        &mut self,
        target: &BTreeMap<IpAddr, Ownership>,
        scope: Option<&BTreeSet<IpAddr>>,
        now: Instant,
    ) {
        let target: BTreeMap<IpAddr, Announced> = target
            .iter()
            .map(|(ip, o)| (*ip, Announced::from(o)))
            .collect();
        let (gone, changes) =
            plan::dataplane_changes_within(&self.announced.read(), &target, scope);
        for ip in gone {
            self.withdraw(ip);
        }
        for ch in changes {
            let missing = if ch.calls_dataplane() {
                let report = self.announcer.announce(ch.ip, &ch.want.interfaces);
                if ch.fresh() {
                    self.metrics.change(true);
                    if let Some(t) = self.loss_at.remove(&ch.ip) {
                        let at = Instant::now().max(now);
                        self.metrics
                            .failover_seconds
                            .observe(at.saturating_duration_since(t).as_secs_f64());
                    }
                    tracing::info!(ip = %ch.ip, services = ?ch.want.services, "announcing");
                }
                report.missing
            } else {
                Vec::new()
            };
            let pending = self.planner.announce_events(ch.ip, &ch.want, &missing);
            self.spawn_events(pending);
            self.planner
                .note_announced(ch.ip, ch.prev.as_ref(), Some(&ch.want));
            self.tell_board(ch.ip, Some(&ch.want));
            self.announced.write().insert(ch.ip, ch.want);
        }
        self.loss_at.clear();
    }

    /// Interfaces appeared or vanished on this node: re-check `announceFailed` for every
    /// announced IP (the dataplane itself starts answering on a new interface by itself).
    pub fn interfaces_changed(&mut self) {
        let all: Vec<(IpAddr, Announced)> = self
            .announced
            .read()
            .iter()
            .map(|(i, a)| (*i, a.clone()))
            .collect();
        for (ip, a) in all {
            let missing = self.announcer.missing(&a.interfaces);
            let pending = self.planner.announce_events(ip, &a, &missing);
            self.spawn_events(pending);
        }
    }

    /// Turns a duplicate-responder report from the dataplane into a Warning on the
    /// Services of the IP (once per other MAC).
    pub fn duplicate_responder(&mut self, d: &DuplicateResponder) {
        let Some(a) = self.announced.read().get(&d.ip).cloned() else {
            return;
        };
        tracing::warn!(ip = %d.ip, interface = %d.interface, their_mac = %d.their_mac, our_mac = %d.our_mac,
            "another host answers for an IP this node owns");
        let msg = format!(
            "another host ({}) answers for {} on interface {} of node {:?} (ours: {})",
            d.their_mac, d.ip, d.interface, self.settings.node, d.our_mac
        );
        let pending = self.planner.duplicate_events(&a, &msg);
        self.spawn_events(pending);
    }

    fn spawn_events(&self, pending: Vec<Pending>) {
        for ev in pending {
            let Some(reference) = self
                .index()
                .service_of(&ev.service.namespace, &ev.service.name)
                .map(|s| s.object_ref())
            else {
                continue;
            };
            if !self.clients.events.send(ev, reference) {
                self.metrics.events_dropped.inc();
            }
        }
    }

    /// Writes the ServiceL2Status objects the planner asks for, all at once: each failure
    /// backs off that object alone.
    async fn sync_status(&mut self, now: Instant) {
        let writes = {
            let mut book = self
                .stores
                .statuses
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let changed = book.take_changed();
            self.planner.status_changed(
                &self.announced.read(),
                &book,
                changed,
                &self.live.alive,
                now,
            )
        };
        let api = self.clients.status.clone();
        let results: Vec<(StatusWrite, Result<(), kube::Error>)> =
            futures::stream::iter(writes.into_iter().map(|w| {
                let api = api.clone();
                async move {
                    let r = api.apply(&w).await;
                    (w, r)
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        for (w, r) in results {
            if let Err(e) = &r {
                tracing::warn!(target = ?plan::StatusTarget::of(&w), error = %e,
                    "ServiceL2Status write failed; retrying this object with backoff");
                self.metrics.api_errors.inc();
            }
            self.planner.status_written(w, r.is_ok(), now);
        }
    }

    /// When the next pass is due without any change, given the Lease renewals (own and
    /// peers') seen since the last pass: its timers as computed at its instant, the fencing
    /// deadline and the peers' expiries moved by those renewals. Renewals change no
    /// decision, so they cost this (O(peers)) instead of a pass.
    pub fn rearm(&mut self) -> Option<Instant> {
        self.absorb_renewals();
        self.next_wakeup(self.last_pass?, self.live.may)
    }

    fn next_wakeup(&self, now: Instant, may: bool) -> Option<Instant> {
        let fence = if may && !self.announced.read().is_empty() {
            self.fence().deadline()
        } else {
            None
        };
        // end of the start-up window (permission may come then without any event)
        let startup = self
            .mesh
            .as_ref()
            .filter(|_| !may)
            .map(|m| m.lock().since + m.rules.startup_window());
        self.planner.next_wakeup(
            now,
            Timers {
                // while the peers' Leases are not watched their clocks do not run; the
                // pause itself is due then
                peer_expiry: match &self.lease_watch {
                    Some((gate, _)) if !gate.watching() => None,
                    Some((gate, _)) => [self.tracker.next_expiry(now), gate.pause_at()]
                        .into_iter()
                        .flatten()
                        .min(),
                    None => self.tracker.next_expiry(now),
                },
                fence,
                startup,
            },
        )
    }

    /// Graceful stop: withdraw everything, then hand every claim we hold to the node the
    /// election picks without us (or release it), so successors start at once.
    pub async fn shutdown(&mut self) {
        let now = Instant::now();
        self.withdraw_all();
        let config = self.config();
        let (views, nodes) = {
            let index = self.index();
            (
                index.views(&config),
                plan::node_infos(index.named_nodes(), &self.settings.node, false, &self.live),
            )
        };
        let handovers = plan::handovers(
            &self.settings.node,
            &self.settings.options,
            &Snapshot {
                config: &config,
                views: Views::All(&views),
                nodes: &nodes,
                claims: self.claims.claims(),
                live: &self.live,
                renewed: *self.renewals.borrow(),
                now,
            },
        );
        let api = self.clients.claims.clone();
        let results = futures::stream::iter(handovers.into_iter().map(|(ip, c, rec)| {
            let api = api.clone();
            async move { (ip, rec.holder.clone(), api.write(ip, Some(&c), &rec).await) }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
        for (ip, to, r) in results {
            match r {
                Ok(_) => tracing::info!(%ip, successor = %to, "claim handed over"),
                Err(e) => tracing::warn!(%ip, error = %e, "cannot hand claim over"),
            }
        }
        // Our ServiceL2Status objects go with us.
        let ours: Vec<_> = self
            .stores
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all()
            .map(|o| o.existing.clone())
            .filter(|e| e.node == self.settings.node)
            .collect();
        for e in ours {
            {
                let _ = self
                    .clients
                    .status
                    .apply(&StatusWrite::Delete {
                        name: e.name,
                        resource_version: e.resource_version,
                    })
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 100 peers heard 20 ms ago, holding their Leases for a second.
    fn peers(t0: Instant) -> Vec<(String, PeerInput)> {
        (0..100)
            .map(|i| {
                let input = PeerInput {
                    last_heard: Some(t0 - Duration::from_millis(20)),
                    lease_alive: true,
                    lease_held_since: Some(t0 - Duration::from_secs(1)),
                };
                (format!("node-{i:03}"), input)
            })
            .collect()
    }

    /// Permitted for a minute, its Lease fresh.
    fn own(t0: Instant) -> OwnInput {
        OwnInput {
            lease_fresh: true,
            renewed_ever: true,
            mesh_enabled: true,
            heard_any: true,
            lease_duration: Duration::from_secs(2),
            reap_after: Duration::from_secs(20),
            permitted_since: Some(t0 - Duration::from_secs(60)),
            heartbeats_since: Some(t0 - Duration::from_secs(120)),
            members_before: None,
            grew_at: None,
        }
    }

    /// The judgement of `peers` and what of it differs from `live` and `members`.
    fn changes(
        peers: &[(String, PeerInput)],
        live: &Live,
        members: Option<&[String]>,
        now: Instant,
    ) -> (Judgement, LivenessChanges) {
        let rules = MeshRules {
            timing: Default::default(),
        };
        let refs: Vec<(&str, PeerInput)> = peers.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        let j = rules.judge(&refs, own(now), &live.reaped, now);
        let c = liveness_changes(&j, &refs, live, members);
        (j, c)
    }

    /// A pass whose peers keep their verdicts copies no peer name; one peer's death
    /// replaces the alive set alone, and the sets then match what the rules name.
    #[test]
    fn liveness_is_copied_only_when_a_verdict_changes() {
        let t0 = Instant::now();
        let mut ps = peers(t0);
        let rules = MeshRules {
            timing: Default::default(),
        };
        // first pass: nothing kept yet, everything is copied
        let (j, c) = changes(&ps, &Live::default(), None, t0);
        assert!(j.may);
        let named = rules.evaluate(
            &ps.iter().cloned().collect::<BTreeMap<_, _>>(),
            own(t0),
            &BTreeSet::new(),
            t0,
        );
        assert_eq!(c.members.as_ref(), Some(&named.members));
        assert_eq!(c.alive.as_ref(), Some(&named.alive));
        assert_eq!(c.by_heartbeat.as_ref(), Some(&named.by_heartbeat));
        assert_eq!(c.reaped, None, "nobody reaped, as kept");
        let live = Live {
            may: j.may,
            alive: c.alive.unwrap(),
            by_heartbeat: c.by_heartbeat.unwrap(),
            permitted_since: j.permitted_since,
            reaped: BTreeSet::new(),
            ..Live::default()
        };
        let members = c.members.unwrap();
        // the next passes at rest: nothing changed, nothing copied
        let (_, c) = changes(&ps, &live, Some(&members), t0 + Duration::from_millis(50));
        assert_eq!(c, LivenessChanges::default());
        // node-042 falls silent: only the alive set changes, without it
        ps[42].1.last_heard = Some(t0 - Duration::from_secs(5));
        let (_, c) = changes(&ps, &live, Some(&members), t0 + Duration::from_millis(100));
        let mut alive = live.alive.clone();
        alive.remove("node-042");
        assert_eq!(
            c,
            LivenessChanges {
                alive: Some(alive),
                ..Default::default()
            }
        );
        // it releases its Lease: no longer a member either
        ps[42].1.lease_held_since = None;
        let (_, c) = changes(&ps, &live, Some(&members), t0 + Duration::from_millis(150));
        assert_eq!(c.members.map(|m| m.len()), Some(99));
    }
}

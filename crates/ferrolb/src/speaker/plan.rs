//! The speaker's functional core: from a snapshot of what this node knows (configuration,
//! nodes, Service views, claims, liveness, what it announces now) to what it must do
//! (claims to write or confirm, IPs to announce and withdraw, ServiceL2Status writes,
//! Events, when to run again). No I/O and no clock reads: the shell ([`super::core`])
//! gathers the snapshot, executes the plan, and reports the outcomes back.
//!
//! One pass, in the order the shell runs it:
//! 1. [`Planner::plan_changed`]: the election ([`elect_all`], re-electing only the IPs whose
//!    inputs changed since the last pass: [`IncrementalElection`]) and the claim rules
//!    ([`decide_claim`]) for the IPs whose decision can have changed ([`Planner::plan_claims`]:
//!    for every IP, the same decisions) → a [`ClaimPlan`] (withdraw everything when fenced;
//!    withdraw before handing a claim over; announce what this node holds; confirm held
//!    claims after a loss of permission; claim writes);
//! 2. [`Planner::confirmed`] and [`Planner::claims_written`]: what the confirmations and
//!    writes mean for the IPs to announce (a won claim is announced in the same pass);
//! 3. [`dataplane_changes_within`]: the announce / withdraw calls that turn what is announced
//!    into what should be (for the IPs the plan decided), [`Planner::announce_events`] the
//!    Events they cause (on change only), [`Planner::note_announced`] the index of what is
//!    announced;
//! 4. [`Planner::status_changed`] (for the Services whose announcement or objects changed;
//!    [`Planner::status_writes`]: for all) / [`Planner::status_written`]: ServiceL2Status
//!    objects;
//! 5. [`Planner::next_wakeup`]: the instant the next pass is due without any event.
//!
//! Failover never waits for an informational write: claim traffic (writes, confirmations,
//! the fresh Lease read before a takeover) has its own backoff, and every ServiceL2Status
//! object has its own — a failing status write delays neither a takeover nor the status of
//! any other Service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

use super::claims::{is_orphan, Claim};
use super::events::{self, EventMemory, Pending};
use super::status::{self, desired_status, Existing, StatusBook, StatusWrite, Units};
use crate::allocator::ServiceKey;
use crate::config::Config;
use crate::crd::MetalLBServiceL2Status;
use crate::dense::Dense;
use crate::election::{
    decide_claim, elect_all, ClaimAction, ElectionOptions, Fence, HolderState, IncrementalElection,
    Interfaces, LeaseClock, NameSet, NodeInfo, OwnerRecord, Owners, Ownership, Scope, ServiceView,
    Views,
};

/// What this node answers for one IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// Interfaces it answers on.
    pub interfaces: Interfaces,
    /// Keys (`namespace/name`) of the Services the IP is announced for (shared with the
    /// election's [`Ownership`] it comes from).
    pub services: NameSet,
}

impl From<&Ownership> for Announced {
    fn from(o: &Ownership) -> Self {
        Announced {
            interfaces: o.interfaces.clone(),
            services: o.services.clone(),
        }
    }
}

/// Retry delay after an API error: 100 ms doubling to 5 s, reset by a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    delay: Duration,
    until: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: Self::MIN,
            until: None,
        }
    }
}

impl Backoff {
    /// First delay.
    pub const MIN: Duration = Duration::from_millis(100);
    /// Longest delay.
    pub const MAX: Duration = Duration::from_secs(5);

    /// A write failed at `now`: wait, and wait longer next time.
    pub fn failed(&mut self, now: Instant) {
        self.until = Some(now + self.delay);
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    /// A write succeeded: no more waiting.
    pub fn ok(&mut self) {
        *self = Self::default();
    }

    /// Whether a write may be tried at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| now >= u)
    }

    /// When the current wait ends (None: not waiting).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// Liveness as evaluated at the start of a pass
/// ([`crate::election::membership::MeshRules::evaluate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// This node may announce.
    pub may: bool,
    /// Peers alive in this node's eyes.
    pub alive: BTreeSet<String>,
    /// Peers judged by their heartbeats (no fresh API read of their Lease before a takeover).
    pub by_heartbeat: BTreeSet<String>,
    /// Start of the current permission period.
    pub permitted_since: Option<Instant>,
    /// Members reaped (dead for 10 lease durations, seen from a quorum).
    pub reaped: BTreeSet<String>,
    /// How many members the last evaluation counted (None: none yet).
    pub members: Option<usize>,
    /// When the membership last grew.
    pub grew_at: Option<Instant>,
}

/// Everything one pass decides from, gathered by the shell.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The validated pools and advertisements.
    pub config: &'a Config,
    /// The views of the Services of our class, with their endpoints: all of them, or those
    /// changed since the last plan ([`super::index::Index::changes`]).
    pub views: Views<'a>,
    /// The nodes, with their speakers' liveness ([`node_infos`]).
    pub nodes: &'a [NodeInfo],
    /// The claims: the store, overlaid with our own writes it has not shown yet.
    pub claims: &'a BTreeMap<IpAddr, Claim>,
    /// Liveness of this node and its peers.
    pub live: &'a Live,
    /// Send time of this node's last successful Lease renewal (None: not yet, or released).
    pub renewed: Option<Instant>,
    /// The instant of the pass.
    pub now: Instant,
}

/// What changed in the claims since the last pass, with the claims' indexes (from
/// [`super::claims::ClaimBook`]): the input of [`Planner::plan_changed`].
#[derive(Debug, Clone, Copy)]
pub struct Changed<'a> {
    /// IPs whose claim changed since the last pass.
    pub claims: &'a BTreeSet<IpAddr>,
    /// The holder of every held claim ([`holders`] of the snapshot's claims).
    pub holders: &'a BTreeMap<IpAddr, Arc<str>>,
    /// Holder → the IPs it holds.
    pub by_holder: &'a BTreeMap<Arc<str>, BTreeSet<IpAddr>>,
}

/// One claim write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimWrite {
    /// The IP.
    pub ip: IpAddr,
    /// The claim as read (the write's precondition; None: it must not exist).
    pub expected: Option<Claim>,
    /// The record to write; None: delete the claim.
    pub record: Option<OwnerRecord>,
    /// Holder being replaced, whose node Lease must be confirmed expired by a fresh read
    /// first (it was judged dead by its Lease, which a lagging watch could fake).
    pub confirm_dead: Option<String>,
}

/// What to do about claims in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimPlan {
    /// This node may not announce: withdraw everything.
    pub fenced: bool,
    /// The IPs this plan decides (None: every IP). An IP outside it keeps its decision of
    /// the last pass.
    pub scope: Option<BTreeSet<IpAddr>>,
    /// The election's owner of every elected IP ([`Planner::plan_claims`]), of every IP
    /// written ([`Planner::plan_changed`]).
    pub owners: BTreeMap<IpAddr, Ownership>,
    /// IPs (of the scope) this node holds and should announce.
    pub announce: BTreeMap<IpAddr, Ownership>,
    /// IPs to withdraw at once, before their claim is handed over.
    pub withdraw_first: Vec<IpAddr>,
    /// Re-assert the claims of `announce` before announcing them (this node started, or
    /// lost its permission, since it last read the claims: its view may be stale).
    pub confirm: bool,
    /// Claim writes, in IP order (empty while claim writes back off).
    pub writes: Vec<ClaimWrite>,
}

/// The outcome of confirming one held claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// Re-asserted; the claim now reads like this.
    Held(Claim),
    /// A concurrent write got in between and a re-read still names us: try next pass.
    Retry,
    /// Someone else holds it now (or nobody): do not announce.
    Changed(Option<Claim>),
    /// The API failed.
    Failed,
}

/// The outcome of one claim write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Our write went through; the claim now reads like this.
    Won(Claim),
    /// The claim was deleted (or already gone).
    Deleted,
    /// Someone wrote first.
    Lost,
    /// The holder renewed its Lease after all (fresh read): nothing written.
    HolderAlive,
    /// The API failed.
    Failed,
}

/// One IP whose announcement must change (see [`dataplane_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The IP.
    pub ip: IpAddr,
    /// What is announced now (None: nothing).
    pub prev: Option<Announced>,
    /// What should be.
    pub want: Announced,
}

impl Change {
    /// The IP was not announced: a takeover (or a new IP).
    pub fn fresh(&self) -> bool {
        self.prev.is_none()
    }

    /// The dataplane must be told (new IP, or other interfaces); otherwise only the
    /// Services behind the IP changed.
    pub fn calls_dataplane(&self) -> bool {
        self.prev
            .as_ref()
            .is_none_or(|p| p.interfaces != self.want.interfaces)
    }
}

/// The object a ServiceL2Status write is about: a Service (create) or an object (update,
/// delete). Each backs off on its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatusTarget {
    /// A Service without an object of ours yet.
    Service(ServiceKey),
    /// An existing object, by name.
    Object(String),
}

impl StatusTarget {
    /// What `w` writes to.
    pub fn of(w: &StatusWrite) -> Self {
        match w {
            StatusWrite::Create { service, .. } => StatusTarget::Service(service.clone()),
            StatusWrite::Update { name, .. } | StatusWrite::Delete { name, .. } => {
                StatusTarget::Object(name.clone())
            }
        }
    }
}

/// ServiceL2Status writes that succeeded but that the store has not shown yet (so they are
/// not repeated meanwhile).
#[derive(Debug, Default, Clone)]
struct StatusMemo {
    /// Service → when we created its object (forgotten once the store shows it, or after 10 s).
    created: BTreeMap<ServiceKey, Instant>,
    /// Object name → the status we last wrote to it.
    updated: BTreeMap<String, MetalLBServiceL2Status>,
    /// Objects we deleted.
    deleted: BTreeSet<String>,
}

/// How long a created ServiceL2Status is not created again while the store does not show it.
const CREATED_MEMO: Duration = Duration::from_secs(10);

/// Instants a pass must be re-run at, known to the shell (see [`Planner::next_wakeup`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timers {
    /// The next instant a live peer's Lease expires in this node's eyes.
    pub peer_expiry: Option<Instant>,
    /// This node's fencing deadline (its Lease renewal's), while it announces.
    pub fence: Option<Instant>,
    /// End of the heartbeat start-up window, while not permitted.
    pub startup: Option<Instant>,
}

/// The speaker's pure state between passes.
#[derive(Debug)]
pub struct Planner {
    /// This node's name.
    me: String,
    /// `--revertive`, `--ignore-exclude-lb`.
    options: ElectionOptions,
    /// Lease timings (hand-over timeout).
    clock: LeaseClock,
    /// IP → when this node, desired as its owner, started waiting for the live holder to
    /// hand it over (it claims anyway after the hand-over timeout).
    waiting: BTreeMap<IpAddr, Instant>,
    /// This node's renewals, its permission, and whether it confirmed the claims since the
    /// permission was (re)gained (before that, its view may be stale: not announced from).
    fence: Fence,
    /// Claim writes, confirmations and the fresh Lease reads before a takeover back off
    /// together after an API error (never because of a status or Event write).
    claim_backoff: Backoff,
    /// ServiceL2Status target → its own backoff after a failed write.
    status_backoff: BTreeMap<StatusTarget, Backoff>,
    /// ServiceL2Status writes done but not yet visible in the store.
    status_memo: StatusMemo,
    /// (Service, Event reason) → the last message said (Events go out on change only).
    events: EventMemory,
    /// The last election and its inputs: a pass re-elects only the IPs whose inputs changed.
    election: IncrementalElection,
    /// IPs the last pass planned a write or a withdrawal for (decided again until done).
    pending: BTreeSet<IpAddr>,
    /// Permission and claim-backoff verdict of the last pass (a change decides every IP).
    last_gate: Option<(bool, bool)>,
    /// Peers alive at the last pass.
    last_alive: BTreeSet<String>,
    /// Peers judged by heartbeats at the last pass.
    last_by_heartbeat: BTreeSet<String>,
    /// (Service as in [`Announced::services`], IP announced for it): each Service's IPs
    /// in order, held in the set's nodes (most Services have one IP: no block of its own).
    services_of: BTreeSet<(Arc<str>, IpAddr)>,
    /// Services whose desired ServiceL2Status may have changed since the last status plan.
    status_dirty: BTreeSet<ServiceKey>,
    /// Peers alive at the last status plan (None: none yet, the first plans everything).
    status_alive: Option<BTreeSet<String>>,
    /// Objects updated or deleted since the last status plan (their memories go if they
    /// vanished meanwhile).
    status_touched: BTreeSet<String>,
}

impl Planner {
    /// Rebuilds the tables that hold an entry per announced IP or Service (the election's,
    /// the Services' IPs, the Event memory) with full B-tree nodes ([`Dense`]); every
    /// decision reads them as before.
    pub fn make_dense(&mut self) {
        self.election.make_dense();
        self.services_of.make_dense();
        self.events.make_dense();
        self.pending.make_dense();
    }

    /// The state of a speaker that has done nothing yet.
    pub fn new(me: &str, options: ElectionOptions, clock: LeaseClock) -> Self {
        Planner {
            me: me.to_string(),
            options,
            clock,
            waiting: BTreeMap::new(),
            fence: Fence::new(clock),
            claim_backoff: Backoff::default(),
            status_backoff: BTreeMap::new(),
            status_memo: StatusMemo::default(),
            events: EventMemory::default(),
            election: IncrementalElection::new(),
            pending: BTreeSet::new(),
            last_gate: None,
            last_alive: BTreeSet::new(),
            last_by_heartbeat: BTreeSet::new(),
            services_of: BTreeSet::new(),
            status_dirty: BTreeSet::new(),
            status_alive: None,
            status_touched: BTreeSet::new(),
        }
    }

    /// What the last [`Planner::plan_claims`] re-elected.
    pub fn election_scope(&self) -> Scope {
        self.election.scope()
    }

    /// The fence, with the renewal published last (`renewed`) taken into account.
    pub fn fence(&self, renewed: Option<Instant>) -> Fence {
        let mut f = self.fence;
        follow(&mut f, renewed);
        f
    }

    /// The claim rules for every IP (step 1 of a pass). [`Planner::plan_changed`] gives the
    /// same decisions from the IPs that can have changed only.
    pub fn plan_claims(&mut self, s: &Snapshot) -> ClaimPlan {
        let current = holders(s.claims);
        let held_by_me = current.values().any(|h| **h == *self.me);
        let mut plan = self.plan(s, Owners::All(&current), None, held_by_me);
        plan.owners = self.election.result().owners.clone();
        plan
    }

    /// [`Planner::plan_claims`] over the IPs whose decision can have changed since the last
    /// pass (`changed` says what changed in the claims): those the election re-elected,
    /// those whose claim changed, those waiting for a hand-over, those whose write or
    /// withdrawal the last pass planned, those held by a node whose liveness changed; all of
    /// them when this node's permission, its need to re-read the claims or its claim
    /// backoff changed. The plan's `scope` names the IPs it decided (None: all); `owners`
    /// holds the owners of the IPs it writes.
    pub fn plan_changed(&mut self, s: &Snapshot, changed: &Changed) -> ClaimPlan {
        let held_by_me = changed.by_holder.contains_key(self.me.as_str());
        let owners = Owners::Changed {
            all: changed.holders,
            changed: changed.claims,
        };
        self.plan(s, owners, Some(changed), held_by_me)
    }

    fn plan(
        &mut self,
        s: &Snapshot,
        current: Owners,
        changed: Option<&Changed>,
        held_by_me: bool,
    ) -> ClaimPlan {
        let may = s.live.may;
        let now = s.now;
        follow(&mut self.fence, s.renewed);
        self.fence.permission(may, now);
        let mut incremental = std::mem::take(&mut self.election);
        incremental.elect_views(s.config, s.views, s.nodes, current, &self.options);
        let allows = self.claim_backoff.allows(now);
        let scope = match changed {
            Some(ch)
                if self.last_gate == Some((may, allows))
                    && !self.fence.needs_read()
                    && incremental.reelected().is_some() =>
            {
                Some(self.scope_of(&incremental, ch, s.live))
            }
            _ => None,
        };
        self.last_gate = Some((may, allows));
        // copied only when they changed (most passes: peers' liveness is stable)
        if self.last_alive != s.live.alive {
            self.last_alive.clone_from(&s.live.alive);
        }
        if self.last_by_heartbeat != s.live.by_heartbeat {
            self.last_by_heartbeat.clone_from(&s.live.by_heartbeat);
        }
        let election = incremental.result();
        let mut plan = ClaimPlan {
            fenced: !may,
            ..Default::default()
        };
        match &scope {
            None => {
                let ips: BTreeSet<IpAddr> = election
                    .owners
                    .keys()
                    .chain(s.claims.keys())
                    .copied()
                    .collect();
                for ip in ips {
                    self.decide(ip, &incremental, s, &mut plan);
                }
                self.waiting
                    .retain(|ip, _| election.owners.contains_key(ip));
            }
            Some(ips) => {
                for ip in ips {
                    self.decide(*ip, &incremental, s, &mut plan);
                    if !election.owners.contains_key(ip) {
                        self.waiting.remove(ip);
                    }
                }
            }
        }
        self.pending = plan
            .writes
            .iter()
            .map(|w| w.ip)
            .chain(plan.withdraw_first.iter().copied())
            .collect();
        // After start-up or a fence our view of the claims may be stale: re-assert the ones
        // we would announce first. A view naming us as holder of nothing cannot mislead us.
        if self.fence.needs_read() {
            if !plan.announce.is_empty() {
                plan.confirm = true;
            } else if !held_by_me {
                self.fence.records_read(now);
            }
        }
        if !may || !allows {
            plan.writes.clear();
        }
        plan.owners = plan
            .writes
            .iter()
            .filter_map(|w| Some((w.ip, election.owners.get(&w.ip)?.clone())))
            .collect();
        plan.scope = scope;
        self.election = incremental;
        plan
    }

    /// The IPs whose decision can have changed (see [`Planner::plan_changed`]).
    fn scope_of(
        &self,
        election: &IncrementalElection,
        ch: &Changed,
        live: &Live,
    ) -> BTreeSet<IpAddr> {
        let mut ips: BTreeSet<IpAddr> = election.reelected().cloned().unwrap_or_default();
        ips.extend(ch.claims.iter().copied());
        ips.extend(self.waiting.keys().copied());
        ips.extend(self.pending.iter().copied());
        let nodes = live.alive.symmetric_difference(&self.last_alive).chain(
            live.by_heartbeat
                .symmetric_difference(&self.last_by_heartbeat),
        );
        for n in nodes {
            ips.extend(ch.by_holder.get(n.as_str()).into_iter().flatten().copied());
        }
        ips
    }

    /// The claim rules for one IP, into `plan`.
    fn decide(
        &mut self,
        ip: IpAddr,
        election: &IncrementalElection,
        s: &Snapshot,
        plan: &mut ClaimPlan,
    ) {
        let me = self.me.as_str();
        let may = s.live.may;
        let now = s.now;
        let own = election.result().owners.get(&ip);
        let desired = own.map(|o| &*o.node);
        let claim = s.claims.get(&ip);
        let alive = |n: &str| s.live.alive.contains(n);
        if let Some(c) = claim {
            if *c.holder != *me && is_orphan(election.carries(&ip), c, &alive) {
                if may {
                    plan.writes.push(ClaimWrite {
                        ip,
                        expected: Some(c.clone()),
                        record: None,
                        confirm_dead: None,
                    });
                }
                return;
            }
        }
        let holder_state = match claim.map(|c| &*c.holder) {
            None | Some("") => HolderState::Gone,
            Some(h) if h == me => HolderState::Alive,
            Some(h) if alive(h) => {
                if desired == Some(me) {
                    let since = *self.waiting.entry(ip).or_insert(now);
                    if now.saturating_duration_since(since) >= self.clock.handover_timeout() {
                        HolderState::Unresponsive
                    } else {
                        HolderState::Alive
                    }
                } else {
                    HolderState::Alive
                }
            }
            Some(_) => HolderState::Gone,
        };
        if holder_state != HolderState::Alive || desired != Some(me) {
            self.waiting.remove(&ip);
        }
        let record = claim.map(Claim::record);
        match decide_claim(me, desired, record.as_ref(), holder_state, may) {
            ClaimAction::Announce => {
                if let Some(o) = own {
                    plan.announce.insert(ip, o.clone());
                }
            }
            ClaimAction::Claim { record } => {
                let prev = claim
                    .map(|c| c.holder.to_string())
                    .filter(|h| !h.is_empty());
                plan.writes.push(ClaimWrite {
                    ip,
                    expected: claim.cloned(),
                    record: Some(record),
                    // A holder judged by its heartbeats is confirmed dead by their
                    // silence; one judged by its Lease gets a fresh read first.
                    confirm_dead: prev
                        .filter(|_| holder_state == HolderState::Gone)
                        .filter(|h| !s.live.by_heartbeat.contains(h)),
                });
            }
            ClaimAction::Release { record } => {
                // Stop answering before the record names anyone else.
                plan.withdraw_first.push(ip);
                if let Some(c) = claim {
                    plan.writes.push(ClaimWrite {
                        ip,
                        expected: Some(c.clone()),
                        record,
                        confirm_dead: None,
                    });
                }
            }
            ClaimAction::WaitForHolder | ClaimAction::Idle => {}
        }
    }

    /// Applies the outcomes of the confirmations (in the order tried; the shell stops at
    /// the first failure) to the IPs to announce: only re-asserted claims stay; a failure
    /// withdraws everything and backs claim traffic off. `now` is the pass's instant (when
    /// the confirmations started).
    pub fn confirmed(
        &mut self,
        announce: &mut BTreeMap<IpAddr, Ownership>,
        outcomes: &[(IpAddr, Confirmed)],
        now: Instant,
    ) {
        let mut retry = false;
        for (ip, o) in outcomes {
            match o {
                Confirmed::Held(_) => {}
                Confirmed::Retry => {
                    announce.remove(ip);
                    retry = true;
                }
                Confirmed::Changed(_) => {
                    announce.remove(ip);
                }
                Confirmed::Failed => {
                    self.claim_backoff.failed(now);
                    announce.clear();
                    return;
                }
            }
        }
        if !retry {
            self.fence.records_read(now);
        }
    }

    /// The claim writes to perform now: `planned` unless a failure since planning (a
    /// confirmation) made claim traffic back off.
    pub fn writes_due(&self, planned: Vec<ClaimWrite>, now: Instant) -> Vec<ClaimWrite> {
        if self.claim_backoff.allows(now) {
            planned
        } else {
            Vec::new()
        }
    }

    /// A fresh read before a takeover failed: claim traffic backs off (nothing written).
    pub fn lease_read_failed(&mut self, now: Instant) {
        self.claim_backoff.failed(now);
    }

    /// Applies the outcomes of the claim writes: returns the IPs this node won and must
    /// announce now (with their ownership from `owners`); any failure backs claim traffic
    /// off, a pass without failures ends the backoff.
    pub fn claims_written(
        &mut self,
        owners: &BTreeMap<IpAddr, Ownership>,
        outcomes: &[(ClaimWrite, Written)],
        now: Instant,
    ) -> BTreeMap<IpAddr, Ownership> {
        let mut won = BTreeMap::new();
        let mut failed = false;
        for (w, o) in outcomes {
            match (o, &w.record) {
                (Written::Won(_), Some(rec)) if rec.holder == self.me => {
                    if let Some(own) = owners.get(&w.ip) {
                        won.insert(w.ip, own.clone());
                    }
                }
                (Written::Failed, _) => failed = true,
                _ => {}
            }
        }
        if failed {
            self.claim_backoff.failed(now);
        } else {
            self.claim_backoff.ok();
        }
        won
    }

    /// The Events announcing `ip` as `a` causes (`missing`: requested interfaces that do
    /// not exist here), each only when it differs from the last one said.
    pub fn announce_events(
        &mut self,
        ip: IpAddr,
        a: &Announced,
        missing: &[String],
    ) -> Vec<Pending> {
        let ifs: Vec<String> = match &a.interfaces {
            Interfaces::All => Vec::new(),
            Interfaces::Named(n) => n.iter().cloned().collect(),
        };
        let mut pending = Vec::new();
        for s in a.services.iter() {
            let msg = events::node_assigned_message(&self.me, &ifs);
            pending.extend(
                self.events
                    .note(s, false, events::Reason::NodeAssigned, msg),
            );
            if missing.is_empty() {
                self.events.clear(s, events::Reason::AnnounceFailed);
            } else {
                let msg = events::announce_failed_message(&ip.to_string(), &self.me, missing);
                pending.extend(
                    self.events
                        .note(s, true, events::Reason::AnnounceFailed, msg),
                );
            }
        }
        pending
    }

    /// The Warning for another MAC answering for an IP announced as `a` (once per message).
    pub fn duplicate_events(&mut self, a: &Announced, message: &str) -> Vec<Pending> {
        let mut pending = Vec::new();
        for s in a.services.iter() {
            pending.extend(self.events.note(
                s,
                true,
                events::Reason::DuplicateResponder,
                message.to_string(),
            ));
        }
        pending
    }

    /// `ip`'s announcement changed from `prev` to `now` (None: not announced): keeps the
    /// index of the announced Services, forgets what was said about a Service no longer
    /// announced, and marks the Services whose ServiceL2Status may change.
    pub fn note_announced(
        &mut self,
        ip: IpAddr,
        prev: Option<&Announced>,
        now: Option<&Announced>,
    ) {
        let empty = NameSet::default();
        let before = prev.map_or(&empty, |a| &a.services);
        let after = now.map_or(&empty, |a| &a.services);
        for s in before.difference(after) {
            if self.services_of.remove(&(s.clone(), ip)) && self.ips_of(s).next().is_none() {
                self.events.forget(s);
            }
        }
        for s in after {
            self.services_of.insert((s.clone(), ip));
        }
        self.status_dirty.extend(
            before
                .iter()
                .chain(after)
                .filter_map(|s| ServiceKey::parse(s)),
        );
    }

    /// [`Planner::status_writes`] for the parts that can have changed since the last call:
    /// the Services whose announcement changed ([`Planner::note_announced`]), the parts
    /// whose objects changed (`changed`, from the [`super::status::StatusBook`]), those of the
    /// objects of peers whose liveness changed, and those with a write remembered or backing
    /// off. The first call plans everything.
    pub fn status_changed(
        &mut self,
        announced: &BTreeMap<IpAddr, Announced>,
        book: &StatusBook,
        mut changed: Units,
        alive: &BTreeSet<String>,
        now: Instant,
    ) -> Vec<StatusWrite> {
        let is_alive = |n: &str| alive.contains(n);
        // The peers alive at the last status plan, when they changed (copied only then:
        // on most passes peers' liveness is stable).
        let last_alive = match &self.status_alive {
            None => {
                self.status_alive = Some(alive.clone());
                self.status_dirty.clear();
                let existing: Vec<Existing> = book.all().map(|o| o.existing).collect();
                return self.status_writes(announced, &existing, &is_alive, now);
            }
            Some(last) if last == alive => None,
            Some(_) => self.status_alive.replace(alive.clone()),
        };
        let memo = &mut self.status_memo;
        let touched = std::mem::take(&mut self.status_touched);
        for n in changed.gone.iter().chain(&touched) {
            if !book.contains(n) {
                memo.deleted.remove(n);
                memo.updated.remove(n);
            }
        }
        changed.services.append(&mut self.status_dirty);
        changed.services.extend(memo.created.keys().cloned());
        for t in self.status_backoff.keys() {
            match t {
                StatusTarget::Service(k) => {
                    changed.services.insert(k.clone());
                }
                StatusTarget::Object(n) => book.add_object(n, &mut changed),
            }
        }
        for n in last_alive
            .iter()
            .flat_map(|last| alive.symmetric_difference(last))
        {
            book.add_node(n, &mut changed);
        }
        let desired: BTreeMap<ServiceKey, MetalLBServiceL2Status> = changed
            .services
            .iter()
            .filter_map(|k| Some((k.clone(), self.desired_status(k, announced)?)))
            .collect();
        // by name: an object can be reached both by its Service and by its name
        let existing: BTreeMap<String, Existing> = changed
            .services
            .iter()
            .flat_map(|k| book.of_service(k))
            .chain(changed.names.iter().filter_map(|n| book.get(n)))
            .map(|e| (e.name.clone(), e))
            .collect();
        let existing: Vec<Existing> = existing.into_values().collect();
        let me = self.me.clone();
        let mine = |k: &ServiceKey| book.of_service(k).any(|e| e.node == me);
        self.status_plan(&desired, &existing, &mine, &is_alive, now)
    }

    /// The IPs announced for `service`, in order.
    fn ips_of<'a>(&'a self, service: &Arc<str>) -> impl Iterator<Item = IpAddr> + 'a {
        let first = (service.clone(), IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let service = service.clone();
        self.services_of
            .range(first..)
            .take_while(move |(s, _)| *s == service)
            .map(|(_, ip)| *ip)
    }

    /// The status this node should publish for `service` from the index of what it
    /// announces (None: it does not announce it).
    fn desired_status(
        &self,
        service: &ServiceKey,
        announced: &BTreeMap<IpAddr, Announced>,
    ) -> Option<MetalLBServiceL2Status> {
        let ips: Vec<IpAddr> = self.ips_of(&service.to_string().into()).collect();
        if ips.is_empty() {
            return None;
        }
        let mut ifs = BTreeSet::new();
        let mut texts = BTreeSet::new();
        for ip in &ips {
            if let Some(Interfaces::Named(n)) = announced.get(ip).map(|a| &a.interfaces) {
                ifs.extend(n.iter().cloned());
            }
            texts.insert(ip.to_string());
        }
        Some(desired_status(&self.me, service, &ifs, &texts))
    }

    /// The ServiceL2Status writes due at `now`, making the objects match what this node
    /// announces: none already done and not yet in the store, none for an object whose
    /// own backoff runs.
    pub fn status_writes(
        &mut self,
        announced: &BTreeMap<IpAddr, Announced>,
        existing: &[Existing],
        alive: &dyn Fn(&str) -> bool,
        now: Instant,
    ) -> Vec<StatusWrite> {
        let desired = desired_statuses(&self.me, announced);
        let names: BTreeSet<&str> = existing.iter().map(|e| e.name.as_str()).collect();
        let memo = &mut self.status_memo;
        memo.deleted.retain(|n| names.contains(n.as_str()));
        memo.updated.retain(|n, _| names.contains(n.as_str()));
        let mine: BTreeSet<&ServiceKey> = existing
            .iter()
            .filter(|e| e.node == self.me)
            .filter_map(|e| e.service.as_ref())
            .collect();
        self.status_plan(&desired, existing, &|k| mine.contains(k), alive, now)
    }

    /// [`status::plan`] for `desired` and `existing`, less the writes done and not yet
    /// shown, and those of objects backing off (`mine`: whether an object of ours about
    /// the Service exists).
    fn status_plan(
        &mut self,
        desired: &BTreeMap<ServiceKey, MetalLBServiceL2Status>,
        existing: &[Existing],
        mine: &dyn Fn(&ServiceKey) -> bool,
        alive: &dyn Fn(&str) -> bool,
        now: Instant,
    ) -> Vec<StatusWrite> {
        let memo = &mut self.status_memo;
        memo.created
            .retain(|k, t| !mine(k) && now.saturating_duration_since(*t) < CREATED_MEMO);
        let planned = status::plan(&self.me, desired, existing, alive);
        let targets: BTreeSet<StatusTarget> = planned.iter().map(StatusTarget::of).collect();
        self.status_backoff.retain(|t, _| targets.contains(t));
        planned
            .into_iter()
            .filter(|w| match w {
                StatusWrite::Create { service, .. } => !memo.created.contains_key(service),
                StatusWrite::Update { name, status } => memo.updated.get(name) != Some(status),
                StatusWrite::Delete { name, .. } => !memo.deleted.contains(name),
            })
            .filter(|w| {
                self.status_backoff
                    .get(&StatusTarget::of(w))
                    .is_none_or(|b| b.allows(now))
            })
            .collect()
    }

    /// Records the outcome of one ServiceL2Status write: a success is remembered until the
    /// store shows it, a failure backs that object (only) off.
    pub fn status_written(&mut self, w: StatusWrite, ok: bool, now: Instant) {
        let target = StatusTarget::of(&w);
        if !ok {
            self.status_backoff.entry(target).or_default().failed(now);
            return;
        }
        self.status_backoff.remove(&target);
        match w {
            StatusWrite::Create { service, .. } => {
                self.status_memo.created.insert(service, now);
            }
            StatusWrite::Update { name, status } => {
                self.status_touched.insert(name.clone());
                self.status_memo.updated.insert(name, status);
            }
            StatusWrite::Delete { name, .. } => {
                self.status_touched.insert(name.clone());
                self.status_memo.deleted.insert(name);
            }
        }
    }

    /// When the next pass is due even if nothing changes: a live peer's Lease expiring,
    /// the fencing deadline, a hand-over timeout, the end of the start-up window, the end
    /// of a backoff (claims, or any one ServiceL2Status object).
    pub fn next_wakeup(&self, now: Instant, timers: Timers) -> Option<Instant> {
        let handover = self
            .waiting
            .values()
            .map(|t| *t + self.clock.handover_timeout())
            .min();
        let status = self
            .status_backoff
            .values()
            .filter_map(Backoff::until)
            .min();
        [
            timers.peer_expiry,
            timers.fence,
            handover,
            timers.startup,
            self.claim_backoff.until(),
            status,
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
    }
}

/// Takes the Lease task's last published renewal into `fence` (None: released).
fn follow(fence: &mut Fence, renewed: Option<Instant>) {
    match renewed {
        Some(t) => fence.renewed(t),
        None => fence.release(),
    }
}

/// The holder of every held claim (the election's `current` owners).
pub fn holders(claims: &BTreeMap<IpAddr, Claim>) -> BTreeMap<IpAddr, Arc<str>> {
    claims
        .iter()
        .filter(|(_, c)| !c.holder.is_empty())
        .map(|(ip, c)| (*ip, c.holder.clone()))
        .collect()
}

/// Graceful stop: every claim `me` holds, with the record handing it to the node the
/// election picks without `me` (empty holder: released), so successors start at once.
/// `s.nodes` must show `me` dead; `s.views` are taken as every view there is.
pub fn handovers(
    me: &str,
    options: &ElectionOptions,
    s: &Snapshot,
) -> Vec<(IpAddr, Claim, OwnerRecord)> {
    let views: Vec<ServiceView> = match s.views {
        Views::All(v) => v.to_vec(),
        Views::Changed(c) => c.values().flatten().cloned().collect(),
    };
    let election = elect_all(s.config, &views, s.nodes, &holders(s.claims), options);
    s.claims
        .iter()
        .filter(|(_, c)| *c.holder == *me)
        .map(|(ip, c)| {
            let to = election.owners.get(ip).map(|o| o.node.to_string());
            let rec = OwnerRecord {
                holder: to.unwrap_or_default(),
                epoch: c.record().epoch + 1,
            };
            (*ip, c.clone(), rec)
        })
        .collect()
}

/// The election's view of the nodes (each by its name, as the index holds it: the
/// election's owners share that allocation): this node's speaker is alive when it `may`
/// announce, a peer's when `live` says so.
pub fn node_infos<'a>(
    nodes: impl IntoIterator<Item = (&'a Arc<str>, &'a Node)>,
    me: &str,
    may: bool,
    live: &Live,
) -> Vec<NodeInfo> {
    nodes
        .into_iter()
        .filter_map(|(key, n)| {
            let name = n.metadata.name.as_deref()?;
            let alive = if name == me {
                may
            } else {
                live.alive.contains(name)
            };
            let mut info = NodeInfo::from_node(n, alive)?;
            info.share_name(key);
            Some(info)
        })
        .collect()
}

/// The announce / withdraw calls that turn `announced` into `target`: IPs to withdraw,
/// then the IPs whose announcement changes (new, other interfaces, other Services).
pub fn dataplane_changes(
    announced: &BTreeMap<IpAddr, Announced>,
    target: &BTreeMap<IpAddr, Announced>,
) -> (Vec<IpAddr>, Vec<Change>) {
    dataplane_changes_within(announced, target, None)
}

/// [`dataplane_changes`] when `target` covers only the IPs of `scope` (None: every IP):
/// the IPs outside it stay as they are.
pub fn dataplane_changes_within(
    announced: &BTreeMap<IpAddr, Announced>,
    target: &BTreeMap<IpAddr, Announced>,
    scope: Option<&BTreeSet<IpAddr>>,
) -> (Vec<IpAddr>, Vec<Change>) {
    let gone = match scope {
        None => announced
            .keys()
            .filter(|ip| !target.contains_key(ip))
            .copied()
            .collect(),
        Some(ips) => ips
            .iter()
            .filter(|ip| announced.contains_key(ip) && !target.contains_key(ip))
            .copied()
            .collect(),
    };
    let changes = target
        .iter()
        .filter(|(ip, want)| announced.get(ip) != Some(want))
        .map(|(ip, want)| Change {
            ip: *ip,
            prev: announced.get(ip).cloned(),
            want: want.clone(),
        })
        .collect();
    (gone, changes)
}

/// The status this node should publish for each Service it announces: the union of the
/// interfaces and IPs it announces the Service's IPs on.
pub fn desired_statuses(
    me: &str,
    announced: &BTreeMap<IpAddr, Announced>,
) -> BTreeMap<ServiceKey, MetalLBServiceL2Status> {
    let mut sets: BTreeMap<ServiceKey, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for (ip, a) in announced {
        for s in a.services.iter() {
            let Some(key) = ServiceKey::parse(s) else {
                continue;
            };
            let e = sets.entry(key).or_default();
            if let Interfaces::Named(n) = &a.interfaces {
                e.0.extend(n.iter().cloned());
            }
            e.1.insert(ip.to_string());
        }
    }
    sets.iter()
        .map(|(k, (ifs, ips))| (k.clone(), desired_status(me, k, ifs, ips)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IPAddressPool, IPAddressPoolSpec, L2Advertisement, L2AdvertisementSpec};
    use proptest::prelude::*;

    const ME: &str = "me";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(interfaces: &[&str]) -> Config {
        let pool = IPAddressPool::new(
            "pool",
            IPAddressPoolSpec {
                addresses: vec!["10.0.0.0/24".into()],
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        let ad = L2Advertisement::new(
            "l2",
            L2AdvertisementSpec {
                interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        let (c, errors) = super::super::config_view::build_config(&[pool], &[ad]);
        assert!(errors.is_empty(), "{errors:?}");
        c
    }

    fn view(key: &str, ips: &[&str]) -> ServiceView {
        ServiceView::new(key, ips.iter().map(|s| ip(s)).collect(), Some("pool"))
    }

    fn claim(holder: &str, rv: &str) -> Claim {
        Claim {
            holder: holder.into(),
            resource_version: rv.into(),
            transitions: 1,
        }
    }

    fn rec(holder: &str, epoch: u64) -> OwnerRecord {
        OwnerRecord {
            holder: holder.into(),
            epoch,
        }
    }

    /// A world of one Service (10.0.0.1) and the given nodes; `alive` peers are alive.
    struct World {
        config: Config,
        views: Vec<ServiceView>,
        nodes: Vec<NodeInfo>,
        claims: BTreeMap<IpAddr, Claim>,
        live: Live,
    }

    impl World {
        fn new(nodes: &[&str], alive: &[&str]) -> Self {
            let live = Live {
                may: true,
                alive: alive.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            World {
                config: config(&[]),
                views: vec![view("default/web", &["10.0.0.1"])],
                nodes: nodes
                    .iter()
                    .map(|n| {
                        let mut i = NodeInfo::new(*n);
                        i.speaker_alive = *n == ME || live.alive.contains(*n);
                        i
                    })
                    .collect(),
                claims: BTreeMap::new(),
                live,
            }
        }

        fn claimed(mut self, ipv: &str, c: Claim) -> Self {
            self.claims.insert(ip(ipv), c);
            self
        }

        fn snapshot(&self, now: Instant) -> Snapshot<'_> {
            Snapshot {
                config: &self.config,
                views: Views::All(&self.views),
                nodes: &self.nodes,
                claims: &self.claims,
                live: &self.live,
                renewed: Some(now),
                now,
            }
        }
    }

    fn planner() -> Planner {
        Planner::new(ME, ElectionOptions::default(), LeaseClock::default())
    }

    fn announced(ifs: Interfaces, services: &[&str]) -> Announced {
        Announced {
            interfaces: ifs,
            services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// One change to the world of the equivalence property.
    #[derive(Debug, Clone)]
    enum Step {
        Endpoints(usize, bool),
        Ips(usize, Vec<usize>),
        Claim(usize, Option<usize>),
        Alive(usize, bool),
        Unavailable(usize, bool),
        ByHeartbeat(usize, bool),
        May(bool),
        Released(bool),
        Wait(u64),
    }

    const NODES: [&str; 4] = [ME, "b", "c", "ghost"];

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..4usize, any::<bool>()).prop_map(|(i, b)| Step::Endpoints(i, b)),
            (0..4usize, prop::collection::vec(0..6usize, 0..3)).prop_map(|(i, v)| Step::Ips(i, v)),
            (0..6usize, prop::option::of(0..5usize)).prop_map(|(i, h)| Step::Claim(i, h)),
            (1..4usize, any::<bool>()).prop_map(|(i, b)| Step::Alive(i, b)),
            (0..3usize, any::<bool>()).prop_map(|(i, b)| Step::Unavailable(i, b)),
            (1..4usize, any::<bool>()).prop_map(|(i, b)| Step::ByHeartbeat(i, b)),
            any::<bool>().prop_map(Step::May),
            prop::bool::weighted(0.1).prop_map(Step::Released),
            (0..9000u64).prop_map(Step::Wait),
        ]
    }

    fn nth_ip(i: usize) -> IpAddr {
        ip(&format!("10.0.0.{}", i + 1))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Over any sequence of changes (and outcomes of the writes and confirmations), the
        /// plan over what changed decides what the plan over every IP decides: the same
        /// writes, withdrawals, confirmation, the same announcements once laid over the
        /// previous ones, the same next wake-up.
        #[test]
        fn the_plan_over_what_changed_equals_the_plan_over_everything(
            steps in prop::collection::vec((step(), 0..4u8), 1..40)
        ) {
            let mut w = World::new(&[ME, "b", "c"], &["b", "c"]);
            w.views = (0..4)
                .map(|i| view(&format!("default/s{i}"), &[&format!("10.0.0.{}", i + 1)]))
                .collect();
            let mut full = planner();
            let mut part = planner();
            let mut book = super::super::claims::ClaimBook::default();
            let mut shown: BTreeMap<IpAddr, Announced> = BTreeMap::new();
            let mut released = false;
            let mut rv = 100u64;
            let t0 = Instant::now();
            let mut now = t0;
            for (st, outcome) in steps {
                match st {
                    Step::Endpoints(i, b) => w.views[i].has_serving_endpoint = b,
                    Step::Ips(i, v) => w.views[i].ips = v.into_iter().map(nth_ip).collect(),
                    Step::Claim(i, h) => {
                        rv += 1;
                        match h {
                            Some(h) => {
                                let holder = [ME, "b", "c", "ghost", ""][h];
                                w.claims.insert(nth_ip(i), claim(holder, &rv.to_string()));
                            }
                            None => {
                                w.claims.remove(&nth_ip(i));
                            }
                        }
                    }
                    Step::Alive(i, b) => {
                        if b {
                            w.live.alive.insert(NODES[i].into());
                        } else {
                            w.live.alive.remove(NODES[i]);
                        }
                    }
                    Step::Unavailable(i, b) => w.nodes[i].network_unavailable = b,
                    Step::ByHeartbeat(i, b) => {
                        if b {
                            w.live.by_heartbeat.insert(NODES[i].into());
                        } else {
                            w.live.by_heartbeat.remove(NODES[i]);
                        }
                    }
                    Step::May(b) => w.live.may = b,
                    Step::Released(b) => released = b,
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                }
                // the nodes as the shell builds them (a ghost has a Lease but no Node)
                for n in &mut w.nodes {
                    n.speaker_alive = if &*n.name == ME { w.live.may } else { w.live.alive.contains(&*n.name) };
                }
                for (ip, c) in &w.claims {
                    book.observe(*ip, Some(c.clone()));
                }
                let gone: Vec<IpAddr> = book.claims().keys().filter(|i| !w.claims.contains_key(i)).copied().collect();
                for ip in gone {
                    book.observe(ip, None);
                }
                prop_assert_eq!(book.claims(), &w.claims);
                let mut snap = w.snapshot(now);
                if released {
                    snap.renewed = None;
                }
                let a = full.plan_claims(&snap);
                let changed = book.take_changed();
                let b = part.plan_changed(&snap, &Changed {
                    claims: &changed,
                    holders: book.holders(),
                    by_holder: book.by_holder(),
                });
                prop_assert_eq!(a.fenced, b.fenced);
                prop_assert_eq!(a.confirm, b.confirm);
                prop_assert_eq!(&a.writes, &b.writes);
                prop_assert_eq!(&a.withdraw_first, &b.withdraw_first);
                for wr in &b.writes {
                    prop_assert_eq!(a.owners.get(&wr.ip), b.owners.get(&wr.ip));
                }
                // outcomes, the same for both
                let mut ann_a = a.announce.clone();
                let mut ann_b = b.announce.clone();
                if a.confirm {
                    let o: Vec<(IpAddr, Confirmed)> = ann_a.keys().map(|ip| {
                        let c = match outcome { 0 => Confirmed::Retry, 1 => Confirmed::Failed,
                            _ => Confirmed::Held(claim(ME, "1")) };
                        (*ip, c)
                    }).collect();
                    full.confirmed(&mut ann_a, &o, now);
                    part.confirmed(&mut ann_b, &o, now);
                }
                let writes = full.writes_due(a.writes.clone(), now);
                prop_assert_eq!(&writes, &part.writes_due(b.writes.clone(), now));
                let outs: Vec<(ClaimWrite, Written)> = writes.iter().map(|wr| {
                    let o = match (outcome, &wr.record) {
                        (0, Some(r)) => Written::Won(claim(&r.holder, "1")),
                        (0, None) => Written::Deleted,
                        (1, _) => Written::Lost,
                        (2, _) => Written::Failed,
                        _ => Written::HolderAlive,
                    };
                    (wr.clone(), o)
                }).collect();
                ann_a.extend(full.claims_written(&a.owners, &outs, now));
                ann_b.extend(part.claims_written(&b.owners, &outs, now));
                // won claims show in the next pass (as the overlay would)
                for (wr, o) in &outs {
                    match (o, &wr.record) {
                        (Written::Won(_), Some(r)) => {
                            rv += 1;
                            w.claims.insert(wr.ip, Claim { holder: r.holder.as_str().into(),
                                resource_version: rv.to_string().into(),
                                transitions: i32::try_from(r.epoch).unwrap() });
                        }
                        (Written::Deleted, _) => {
                            w.claims.remove(&wr.ip);
                        }
                        _ => {}
                    }
                }
                // what the dataplane shows: everything re-decided, or the scope laid over
                let as_shown = |m: &BTreeMap<IpAddr, Ownership>| -> BTreeMap<IpAddr, Announced> {
                    m.iter().map(|(i, o)| (*i, Announced::from(o))).collect()
                };
                if a.fenced {
                    shown.clear();
                }
                for ip in &a.withdraw_first {
                    shown.remove(ip);
                }
                let target = as_shown(&ann_b);
                let (gone, changes) = dataplane_changes_within(&shown, &target, b.scope.as_ref());
                for ip in gone {
                    shown.remove(&ip);
                }
                for ch in changes {
                    shown.insert(ch.ip, ch.want);
                }
                prop_assert_eq!(&shown, &as_shown(&ann_a));
                prop_assert_eq!(full.next_wakeup(now, Timers::default()), part.next_wakeup(now, Timers::default()));
            }
        }
    }

    #[test]
    fn the_plan_over_what_changed_sees_a_holder_without_a_node_die() {
        // a claim on an IP no Service carries, held by a live speaker whose Node is gone:
        // nothing to do until that speaker dies, then it is garbage
        let mut w =
            World::new(&[ME, "b"], &["b", "ghost"]).claimed("10.0.0.9", claim("ghost", "3"));
        let mut book = super::super::claims::ClaimBook::default();
        book.observe(ip("10.0.0.9"), Some(claim("ghost", "3")));
        let mut p = planner();
        let t0 = Instant::now();
        let mut pass = |w: &World, book: &mut super::super::claims::ClaimBook| {
            let changed = book.take_changed();
            p.plan_changed(
                &w.snapshot(t0),
                &Changed {
                    claims: &changed,
                    holders: book.holders(),
                    by_holder: book.by_holder(),
                },
            )
        };
        assert!(pass(&w, &mut book).writes.is_empty());
        let quiet = pass(&w, &mut book);
        assert_eq!(
            quiet.scope,
            Some(BTreeSet::new()),
            "nothing changed, nothing decided"
        );
        w.live.alive.remove("ghost");
        let plan = pass(&w, &mut book);
        assert_eq!(plan.scope, Some(BTreeSet::from([ip("10.0.0.9")])));
        assert_eq!(plan.writes.len(), 1);
        assert_eq!(plan.writes[0].record, None);
    }

    /// One change to the world of the status equivalence property.
    #[derive(Debug, Clone)]
    enum StatusStep {
        Announce(usize, Option<(Vec<usize>, bool)>),
        Object(usize, Option<(usize, Option<usize>, bool)>),
        Alive(usize, bool),
        Wait(u64),
    }

    fn status_step() -> impl Strategy<Value = StatusStep> {
        prop_oneof![
            (
                0..4usize,
                prop::option::of((prop::collection::vec(0..3usize, 0..3), any::<bool>()))
            )
                .prop_map(|(i, a)| StatusStep::Announce(i, a)),
            (
                0..5usize,
                prop::option::of((0..3usize, prop::option::of(0..3usize), any::<bool>()))
            )
                .prop_map(|(i, o)| StatusStep::Object(i, o)),
            (1..3usize, any::<bool>()).prop_map(|(i, b)| StatusStep::Alive(i, b)),
            (0..12_000u64).prop_map(StatusStep::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Over any sequence of announcements, objects, peer liveness and write outcomes, the
        /// status plan over what changed equals the plan over everything.
        #[test]
        fn the_status_plan_over_what_changed_equals_the_plan_over_everything(
            steps in prop::collection::vec((status_step(), any::<u8>()), 1..40)
        ) {
            use super::super::status::Observed;
            let svc = |i: usize| format!("default/s{i}");
            let mut full = planner();
            let mut part = planner();
            let mut announced: BTreeMap<IpAddr, Announced> = BTreeMap::new();
            let mut book = StatusBook::default();
            let mut alive: BTreeSet<String> = ["b".to_string()].into();
            let t0 = Instant::now();
            let mut now = t0;
            for (st, outcome) in steps {
                match st {
                    StatusStep::Announce(i, a) => {
                        let new = a.map(|(svcs, named)| Announced {
                            interfaces: if named {
                                Interfaces::Named([format!("eth{i}")].into())
                            } else {
                                Interfaces::All
                            },
                            services: svcs.into_iter().map(svc).collect(),
                        });
                        let prev = announced.get(&nth_ip(i)).cloned();
                        part.note_announced(nth_ip(i), prev.as_ref(), new.as_ref());
                        match new {
                            Some(n) => announced.insert(nth_ip(i), n),
                            None => announced.remove(&nth_ip(i)),
                        };
                    }
                    StatusStep::Object(i, o) => {
                        let name = format!("l2-{i}");
                        let obj = o.map(|(node, service, current)| {
                            let service = service.and_then(|s| ServiceKey::parse(&svc(s)));
                            let status = match (&service, current) {
                                (Some(k), true) => desired_status(ME, k, &BTreeSet::new(),
                                    &["10.0.0.1".to_string()].into()),
                                _ => MetalLBServiceL2Status::default(),
                            };
                            Observed {
                                existing: Existing {
                                    name: name.clone(),
                                    resource_version: format!("{outcome}"),
                                    node: [ME, "b", "c"][node].to_string(),
                                    service,
                                    status,
                                },
                                owner_uids: Vec::new(),
                            }
                        });
                        book.observe(name, obj);
                    }
                    StatusStep::Alive(i, b) => {
                        let n = ["", "b", "c"][i].to_string();
                        if b { alive.insert(n); } else { alive.remove(&n); }
                    }
                    StatusStep::Wait(ms) => now += Duration::from_millis(ms),
                }
                let existing: Vec<Existing> = book.all().map(|o| o.existing.clone()).collect();
                let is_alive = |n: &str| alive.contains(n);
                let mut a = full.status_writes(&announced, &existing, &is_alive, now);
                let changed = book.take_changed();
                let mut b = part.status_changed(&announced, &book, changed, &alive, now);
                let order = |w: &StatusWrite| format!("{w:?}");
                a.sort_by_key(order);
                b.sort_by_key(order);
                prop_assert_eq!(&a, &b);
                for (k, w) in a.into_iter().enumerate() {
                    let ok = (outcome >> (k % 8)) & 1 == 1;
                    full.status_written(w.clone(), ok, now);
                    part.status_written(w, ok, now);
                }
                prop_assert_eq!(full.next_wakeup(now, Timers::default()), part.next_wakeup(now, Timers::default()));
                // the planner's index reads as each announced Service's IPs, in order
                let mut want: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
                for (ip, a) in &announced {
                    for s in a.services.iter() {
                        want.entry(s.to_string()).or_default().push(*ip);
                    }
                }
                let got: BTreeMap<String, Vec<IpAddr>> = want
                    .keys()
                    .map(|s| (s.clone(), part.ips_of(&s.as_str().into()).collect()))
                    .collect();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(part.services_of.len(), want.values().map(Vec::len).sum::<usize>());
            }
        }
    }

    /// A pass for one Service's change, on a node announcing many IPs, decides, announces,
    /// withdraws and writes the status of that Service's IP alone: what it touches does not
    /// grow with the IPs the node owns.
    #[test]
    fn one_services_change_is_planned_alone_whatever_the_ips_owned() {
        use super::super::status::Observed;
        const N: usize = 2_000;
        let key = |i: usize| format!("default/s{i}");
        let ip_of = |i: usize| IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8 + 1]);
        let mut w = World::new(&[ME, "b"], &["b"]);
        w.views = (0..N)
            .map(|i| view(&key(i), &[&ip_of(i).to_string()]))
            .collect();
        let mut book = super::super::claims::ClaimBook::default();
        for i in 0..N {
            book.observe(ip_of(i), Some(claim(ME, "1")));
        }
        w.claims = book.claims().clone();
        let t0 = Instant::now();
        let mut p = planner();
        let plan = p.plan_changed(
            &w.snapshot(t0),
            &Changed {
                claims: &book.take_changed(),
                holders: book.holders(),
                by_holder: book.by_holder(),
            },
        );
        assert_eq!(plan.scope, None, "the first pass decides everything");
        assert!(plan.confirm, "held claims are confirmed once at start-up");
        let mut target: BTreeMap<IpAddr, Announced> = plan
            .announce
            .iter()
            .map(|(ip, o)| (*ip, Announced::from(o)))
            .collect();
        assert_eq!(target.len(), N);
        p.confirmed(
            &mut plan.announce.clone(),
            &target
                .keys()
                .map(|ip| (*ip, Confirmed::Held(claim(ME, "1"))))
                .collect::<Vec<_>>(),
            t0,
        );
        let mut announced = BTreeMap::new();
        for (ip, a) in &target {
            p.note_announced(*ip, None, Some(a));
            announced.insert(*ip, a.clone());
        }
        // the store shows every Service's status as this node would write it
        let mut statuses = StatusBook::default();
        for i in 0..N {
            let service = ServiceKey::parse(&key(i));
            let status = desired_status(
                ME,
                service.as_ref().unwrap(),
                &BTreeSet::new(),
                &[ip_of(i).to_string()].into(),
            );
            let existing = Existing {
                name: format!("l2-{i}"),
                resource_version: "1".into(),
                node: ME.into(),
                service,
                status,
            };
            statuses.observe(
                existing.name.clone(),
                Some(Observed {
                    existing,
                    owner_uids: Vec::new(),
                }),
            );
        }
        let changed = statuses.take_changed();
        let alive = w.live.alive.clone();
        assert_eq!(
            p.status_changed(&announced, &statuses, changed, &alive, t0),
            vec![]
        );

        // Service 7 loses its endpoints: only its IP is decided, withdrawn, and its
        // status object deleted.
        let t1 = t0 + Duration::from_millis(10);
        w.views[7].has_serving_endpoint = false;
        let changes: BTreeMap<Arc<str>, Vec<ServiceView>> =
            [(w.views[7].key.clone(), vec![w.views[7].clone()])].into();
        let snap = Snapshot {
            views: Views::Changed(&changes),
            ..w.snapshot(t1)
        };
        let plan = p.plan_changed(
            &snap,
            &Changed {
                claims: &book.take_changed(),
                holders: book.holders(),
                by_holder: book.by_holder(),
            },
        );
        assert_eq!(plan.scope, Some([ip_of(7)].into()));
        assert!(plan.announce.is_empty() && !plan.confirm);
        assert!(
            plan.writes.iter().all(|c| c.ip == ip_of(7)),
            "{:?}",
            plan.writes
        );
        assert!(plan.withdraw_first.iter().all(|ip| *ip == ip_of(7)));
        target.clear();
        let (gone, changes) = dataplane_changes_within(&announced, &target, plan.scope.as_ref());
        assert_eq!((gone, changes), (vec![ip_of(7)], vec![]));
        let prev = announced.remove(&ip_of(7));
        p.note_announced(ip_of(7), prev.as_ref(), None);
        let writes = p.status_changed(&announced, &statuses, Units::default(), &alive, t1);
        assert_eq!(
            writes,
            vec![StatusWrite::Delete {
                name: "l2-7".into(),
                resource_version: "1".into()
            }]
        );
    }

    #[test]
    fn a_pass_re_elects_only_the_ips_whose_inputs_changed() {
        let mut w = World::new(&[ME, "b"], &["b"]);
        w.views = (1..=50)
            .map(|i| view(&format!("default/s{i}"), &[&format!("10.0.0.{i}")]))
            .collect();
        let mut p = planner();
        let t0 = Instant::now();
        let first = p.plan_claims(&w.snapshot(t0));
        assert_eq!(p.election_scope(), Scope::Full);
        // nothing changed: nothing re-elected, the same plan
        assert_eq!(p.plan_claims(&w.snapshot(t0)), first);
        assert_eq!(p.election_scope(), Scope::Ips(0));
        // one Service loses its endpoints: its IP only
        w.views[6].has_serving_endpoint = false;
        let plan = p.plan_claims(&w.snapshot(t0));
        assert_eq!(p.election_scope(), Scope::Ips(1));
        assert!(!plan.owners.contains_key(&ip("10.0.0.7")));
        assert_eq!(plan.owners.len(), 49);
        // a claim appears: its IP only
        w.claims.insert(ip("10.0.0.9"), claim("b", "4"));
        p.plan_claims(&w.snapshot(t0));
        assert_eq!(p.election_scope(), Scope::Ips(1));
        // a node's speaker dies: everything
        w.live.alive.clear();
        w.nodes[1].speaker_alive = false;
        p.plan_claims(&w.snapshot(t0));
        assert_eq!(p.election_scope(), Scope::Full);
    }

    #[test]
    fn new_ip_is_claimed_then_announced_once_the_claim_is_won() {
        let w = World::new(&[ME], &[]);
        let mut p = planner();
        let t0 = Instant::now();
        let plan = p.plan_claims(&w.snapshot(t0));
        assert!(!plan.fenced && !plan.confirm);
        assert!(plan.announce.is_empty(), "not before the claim is ours");
        assert_eq!(
            plan.writes,
            vec![ClaimWrite {
                ip: ip("10.0.0.1"),
                expected: None,
                record: Some(rec(ME, 1)),
                confirm_dead: None,
            }]
        );
        let out = vec![(plan.writes[0].clone(), Written::Won(claim(ME, "1")))];
        let won = p.claims_written(&plan.owners, &out, t0);
        assert_eq!(
            won.keys().copied().collect::<Vec<_>>(),
            vec![ip("10.0.0.1")]
        );
        assert!(won[&ip("10.0.0.1")].services.contains("default/web"));
        // the next pass reads the claim: announce, nothing to write
        let w = w.claimed("10.0.0.1", claim(ME, "1"));
        let plan = p.plan_claims(&w.snapshot(t0 + ms(5)));
        assert!(plan.writes.is_empty());
        assert!(plan.announce.contains_key(&ip("10.0.0.1")));
    }

    #[test]
    fn takeover_from_a_dead_peer_reads_its_lease_first_unless_judged_by_heartbeats() {
        let w = World::new(&[ME, "b"], &[]).claimed("10.0.0.1", claim("b", "7"));
        let mut p = planner();
        let t0 = Instant::now();
        let plan = p.plan_claims(&w.snapshot(t0));
        assert_eq!(plan.writes.len(), 1);
        let wr = &plan.writes[0];
        assert_eq!(wr.expected, Some(claim("b", "7")));
        assert_eq!(wr.record, Some(rec(ME, 2)));
        assert_eq!(wr.confirm_dead.as_deref(), Some("b"));
        // judged dead by its heartbeats' silence: no Lease read
        let mut w = w;
        w.live.by_heartbeat.insert("b".into());
        let plan = p.plan_claims(&w.snapshot(t0));
        assert_eq!(plan.writes[0].confirm_dead, None);
        // the fresh read shows it renewed: nothing announced, no backoff
        let out = vec![(plan.writes[0].clone(), Written::HolderAlive)];
        assert!(p.claims_written(&plan.owners, &out, t0).is_empty());
        assert!(p.plan_claims(&w.snapshot(t0)).writes.len() == 1);
    }

    #[test]
    fn sticky_owner_keeps_its_ip_and_the_others_stay_quiet() {
        // b holds the claim and is alive: whatever the ranking, it keeps the IP
        let w = World::new(&[ME, "b"], &["b"]).claimed("10.0.0.1", claim("b", "3"));
        let mut p = planner();
        let plan = p.plan_claims(&w.snapshot(Instant::now()));
        assert_eq!(&*plan.owners[&ip("10.0.0.1")].node, "b");
        assert!(plan.announce.is_empty() && plan.writes.is_empty());
        // and when we hold it, we keep it with b alive and eligible
        let w = World::new(&[ME, "b"], &["b"]).claimed("10.0.0.1", claim(ME, "3"));
        let plan = p.plan_claims(&w.snapshot(Instant::now()));
        assert_eq!(&*plan.owners[&ip("10.0.0.1")].node, ME);
        assert!(plan.announce.contains_key(&ip("10.0.0.1")));
        assert!(plan.writes.is_empty());
    }

    #[test]
    fn loss_of_permission_withdraws_and_held_claims_are_confirmed_after() {
        let mut w = World::new(&[ME], &[]).claimed("10.0.0.1", claim(ME, "3"));
        let mut p = planner();
        let t0 = Instant::now();
        w.live.may = false;
        w.nodes[0].speaker_alive = false;
        let plan = p.plan_claims(&w.snapshot(t0));
        assert!(plan.fenced);
        assert!(plan.announce.is_empty() && plan.writes.is_empty() && !plan.confirm);
        // permission back: announce only after re-asserting the claim
        w.live.may = true;
        w.nodes[0].speaker_alive = true;
        let plan = p.plan_claims(&w.snapshot(t0 + ms(10)));
        assert!(!plan.fenced && plan.confirm);
        let mut announce = plan.announce.clone();
        // a confirmation started before the permission returned would not count
        let mut early = plan.announce.clone();
        let held = [(ip("10.0.0.1"), Confirmed::Held(claim(ME, "4")))];
        p.confirmed(&mut early, &held, t0);
        assert!(p.fence(Some(t0)).needs_read());
        p.confirmed(&mut announce, &held, t0 + ms(10));
        assert!(announce.contains_key(&ip("10.0.0.1")));
        let plan = p.plan_claims(&w.snapshot(t0 + ms(20)));
        assert!(!plan.confirm, "confirmed once is enough");
    }

    #[test]
    fn held_claims_are_confirmed_at_start_up_but_a_view_naming_us_nowhere_is_not() {
        let t0 = Instant::now();
        // nothing of ours in the view: no confirmation, the view counts as read
        let mut p = planner();
        let w = World::new(&[ME, "b"], &["b"]).claimed("10.0.0.1", claim("b", "3"));
        let plan = p.plan_claims(&w.snapshot(t0));
        assert!(!plan.confirm);
        assert!(p.fence(Some(t0)).may_announce());
        // a fresh speaker finding a claim of its own confirms it before announcing
        let mut p = planner();
        let w = World::new(&[ME], &[]).claimed("10.0.0.1", claim(ME, "3"));
        let plan = p.plan_claims(&w.snapshot(t0));
        assert!(plan.confirm && plan.announce.contains_key(&ip("10.0.0.1")));
        assert!(p.fence(Some(t0)).needs_read());
        // a claim of ours we do not want to announce (being handed over) keeps the view
        // unread: it would be announced from if the election changed its mind
        let mut p = planner();
        let mut w = World::new(&[ME, "b"], &["b"]).claimed("10.0.0.1", claim(ME, "3"));
        w.nodes[0].network_unavailable = true;
        let plan = p.plan_claims(&w.snapshot(t0));
        assert!(!plan.confirm && plan.announce.is_empty());
        assert!(p.fence(Some(t0)).needs_read());
        w.nodes[0].network_unavailable = false;
        assert!(p.plan_claims(&w.snapshot(t0)).confirm);
    }

    #[test]
    fn confirmation_outcomes() {
        let w = World::new(&[ME], &[]).claimed("10.0.0.1", claim(ME, "3"));
        let t0 = Instant::now();
        let fresh = || {
            let mut p = planner();
            let plan = p.plan_claims(&w.snapshot(t0));
            assert!(plan.confirm);
            (p, plan)
        };
        // re-asserted: announced, read
        let (mut p, plan) = fresh();
        let mut a = plan.announce.clone();
        p.confirmed(
            &mut a,
            &[(ip("10.0.0.1"), Confirmed::Held(claim(ME, "4")))],
            t0,
        );
        assert!(a.contains_key(&ip("10.0.0.1")) && p.fence(Some(t0)).may_announce());
        // changed while fenced: not announced, no further confirmation
        let (mut p, plan) = fresh();
        let mut a = plan.announce.clone();
        p.confirmed(&mut a, &[(ip("10.0.0.1"), Confirmed::Changed(None))], t0);
        assert!(a.is_empty() && p.fence(Some(t0)).may_announce());
        // a lost race whose re-read names us again: retry next pass
        let (mut p, plan) = fresh();
        let mut a = plan.announce.clone();
        p.confirmed(&mut a, &[(ip("10.0.0.1"), Confirmed::Retry)], t0);
        assert!(a.is_empty() && p.fence(Some(t0)).needs_read());
        assert!(p.plan_claims(&w.snapshot(t0 + ms(1))).confirm);
        // the API fails: withdraw everything, claim traffic backs off
        let (mut p, plan) = fresh();
        let mut a = plan.announce.clone();
        a.insert(ip("10.0.0.7"), plan.announce[&ip("10.0.0.1")].clone());
        p.confirmed(&mut a, &[(ip("10.0.0.1"), Confirmed::Failed)], t0);
        assert!(a.is_empty() && p.fence(Some(t0)).needs_read());
        let w2 = World::new(&[ME], &[]);
        let planned = planner().plan_claims(&w2.snapshot(t0)).writes;
        assert_eq!(planned.len(), 1);
        assert!(p.writes_due(planned.clone(), t0).is_empty());
        assert_eq!(p.writes_due(planned, t0 + ms(100)).len(), 1);
        assert!(p.plan_claims(&w2.snapshot(t0 + ms(50))).writes.is_empty());
        assert_eq!(p.plan_claims(&w2.snapshot(t0 + ms(100))).writes.len(), 1);
    }

    #[test]
    fn holder_not_desired_withdraws_first_then_hands_over() {
        // we hold the IP but are no longer eligible (NetworkUnavailable): b is desired
        let mut w = World::new(&[ME, "b"], &["b"]).claimed("10.0.0.1", claim(ME, "4"));
        w.nodes[0].network_unavailable = true;
        let mut p = planner();
        let plan = p.plan_claims(&w.snapshot(Instant::now()));
        assert_eq!(plan.withdraw_first, vec![ip("10.0.0.1")]);
        assert!(plan.announce.is_empty());
        assert_eq!(
            plan.writes,
            vec![ClaimWrite {
                ip: ip("10.0.0.1"),
                expected: Some(claim(ME, "4")),
                record: Some(rec("b", 2)),
                confirm_dead: None,
            }]
        );
    }

    #[test]
    fn live_holder_that_does_not_hand_over_is_overruled_after_the_timeout() {
        // b holds and is alive but ineligible: we are desired and wait for it to hand over
        let mut w = World::new(&[ME, "b"], &["b"]).claimed("10.0.0.1", claim("b", "4"));
        w.nodes[1].network_unavailable = true;
        let mut p = planner();
        let t0 = Instant::now();
        let timeout = LeaseClock::default().handover_timeout();
        let plan = p.plan_claims(&w.snapshot(t0));
        assert!(plan.writes.is_empty() && plan.announce.is_empty());
        assert_eq!(p.next_wakeup(t0, Timers::default()), Some(t0 + timeout));
        let plan = p.plan_claims(&w.snapshot(t0 + timeout - ms(1)));
        assert!(plan.writes.is_empty());
        let plan = p.plan_claims(&w.snapshot(t0 + timeout));
        assert_eq!(
            plan.writes,
            vec![ClaimWrite {
                ip: ip("10.0.0.1"),
                expected: Some(claim("b", "4")),
                record: Some(rec(ME, 2)),
                // alive: no Lease read would show it dead
                confirm_dead: None,
            }]
        );
    }

    #[test]
    fn claim_conflict_is_not_announced_and_does_not_back_off() {
        let w = World::new(&[ME], &[]);
        let mut p = planner();
        let t0 = Instant::now();
        let plan = p.plan_claims(&w.snapshot(t0));
        let out = vec![(plan.writes[0].clone(), Written::Lost)];
        assert!(p.claims_written(&plan.owners, &out, t0).is_empty());
        assert_eq!(p.next_wakeup(t0, Timers::default()), None);
        assert_eq!(p.plan_claims(&w.snapshot(t0)).writes.len(), 1);
    }

    #[test]
    fn orphan_claims_of_dead_holders_are_deleted() {
        let w = World::new(&[ME], &[])
            .claimed("10.0.0.9", claim("gone", "2"))
            .claimed("10.0.0.8", claim("b", "2"));
        let mut w = w;
        w.live.alive.insert("b".into());
        let mut p = planner();
        let plan = p.plan_claims(&w.snapshot(Instant::now()));
        let deletes: Vec<_> = plan.writes.iter().filter(|w| w.record.is_none()).collect();
        assert_eq!(deletes.len(), 1, "{:?}", plan.writes);
        assert_eq!(deletes[0].ip, ip("10.0.0.9"));
    }

    #[test]
    fn failed_claim_write_backs_off_claims_only() {
        let w = World::new(&[ME], &[]);
        let mut p = planner();
        let t0 = Instant::now();
        let plan = p.plan_claims(&w.snapshot(t0));
        let out = vec![(plan.writes[0].clone(), Written::Failed)];
        assert!(p.claims_written(&plan.owners, &out, t0).is_empty());
        assert!(p.plan_claims(&w.snapshot(t0 + ms(50))).writes.is_empty());
        assert_eq!(p.next_wakeup(t0, Timers::default()), Some(t0 + ms(100)));
        assert_eq!(p.plan_claims(&w.snapshot(t0 + ms(100))).writes.len(), 1);
        // status writes are not held back by it
        let ann = BTreeMap::from([(ip("10.0.0.1"), announced(Interfaces::All, &["default/web"]))]);
        assert_eq!(p.status_writes(&ann, &[], &|_| true, t0 + ms(50)).len(), 1);
    }

    #[test]
    fn failed_status_write_backs_off_that_object_alone_and_never_claims() {
        let w = World::new(&[ME], &[]);
        let mut p = planner();
        let t0 = Instant::now();
        let ann = BTreeMap::from([
            (ip("10.0.0.1"), announced(Interfaces::All, &["default/a"])),
            (ip("10.0.0.2"), announced(Interfaces::All, &["default/b"])),
        ]);
        let writes = p.status_writes(&ann, &[], &|_| true, t0);
        assert_eq!(writes.len(), 2);
        // a's write fails, b's succeeds
        for wr in writes {
            let is_a = matches!(&wr, StatusWrite::Create { service, .. } if service.name == "a");
            p.status_written(wr, !is_a, t0);
        }
        // claims are not held back by a status failure
        assert_eq!(p.plan_claims(&w.snapshot(t0)).writes.len(), 1);
        // a waits for its backoff, b is not written again (done, store not caught up)
        assert!(p
            .status_writes(&ann, &[], &|_| true, t0 + ms(50))
            .is_empty());
        assert_eq!(p.next_wakeup(t0, Timers::default()), Some(t0 + ms(100)));
        let again = p.status_writes(&ann, &[], &|_| true, t0 + ms(100));
        assert_eq!(again.len(), 1);
        assert!(matches!(&again[0], StatusWrite::Create { service, .. } if service.name == "a"));
        // failing again doubles a's wait; a success ends it
        p.status_written(again[0].clone(), false, t0 + ms(100));
        assert!(p
            .status_writes(&ann, &[], &|_| true, t0 + ms(299))
            .is_empty());
        let third = p.status_writes(&ann, &[], &|_| true, t0 + ms(300));
        assert_eq!(third.len(), 1);
        p.status_written(third[0].clone(), true, t0 + ms(300));
        assert_eq!(p.next_wakeup(t0 + ms(300), Timers::default()), None);
    }

    #[test]
    fn status_written_only_on_change() {
        let mut p = planner();
        let t0 = Instant::now();
        let ann = BTreeMap::from([(ip("10.0.0.1"), announced(Interfaces::All, &["default/a"]))]);
        let w = p.status_writes(&ann, &[], &|_| true, t0);
        assert_eq!(w.len(), 1);
        let StatusWrite::Create { status, .. } = w[0].clone() else {
            panic!("{w:?}")
        };
        p.status_written(w[0].clone(), true, t0);
        // the store shows the object with that status: nothing to write, pass after pass
        let existing = vec![Existing {
            name: "l2-1".into(),
            resource_version: "1".into(),
            node: ME.into(),
            service: ServiceKey::parse("default/a"),
            status: status.clone(),
        }];
        for i in 0..3 {
            assert!(p
                .status_writes(&ann, &existing, &|_| true, t0 + ms(i))
                .is_empty());
        }
        // the interfaces change: one update, not repeated before the store shows it
        let ann2 = BTreeMap::from([(
            ip("10.0.0.1"),
            announced(
                Interfaces::Named(["eth0".to_string()].into()),
                &["default/a"],
            ),
        )]);
        let w = p.status_writes(&ann2, &existing, &|_| true, t0);
        assert_eq!(w.len(), 1);
        assert!(matches!(&w[0], StatusWrite::Update { name, .. } if name == "l2-1"));
        p.status_written(w[0].clone(), true, t0);
        assert!(p.status_writes(&ann2, &existing, &|_| true, t0).is_empty());
        // not announced any more: delete it
        let w = p.status_writes(&BTreeMap::new(), &existing, &|_| true, t0);
        assert!(matches!(&w[..], [StatusWrite::Delete { name, .. }] if name == "l2-1"));
    }

    #[test]
    fn events_only_on_change() {
        let mut p = planner();
        let a = announced(
            Interfaces::Named(["eth9".to_string()].into()),
            &["default/a"],
        );
        let first = p.announce_events(ip("10.0.0.1"), &a, &["eth9".into()]);
        let reasons: Vec<&str> = first.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            vec![events::NODE_ASSIGNED, events::ANNOUNCE_FAILED]
        );
        assert!(p
            .announce_events(ip("10.0.0.1"), &a, &["eth9".into()])
            .is_empty());
        // the interface appears: nothing new to say; it vanishes again: said again
        assert!(p.announce_events(ip("10.0.0.1"), &a, &[]).is_empty());
        let again = p.announce_events(ip("10.0.0.1"), &a, &["eth9".into()]);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].reason, events::ANNOUNCE_FAILED);
        // duplicate responders: once per message
        assert_eq!(p.duplicate_events(&a, "mac x").len(), 1);
        assert!(p.duplicate_events(&a, "mac x").is_empty());
        // a Service no longer announced is forgotten: said again when it returns; one
        // still announced for another IP is not
        p.note_announced(ip("10.0.0.1"), None, Some(&a));
        p.note_announced(ip("10.0.0.2"), None, Some(&a));
        p.note_announced(ip("10.0.0.1"), Some(&a), None);
        assert!(p.announce_events(ip("10.0.0.1"), &a, &[]).is_empty());
        p.note_announced(ip("10.0.0.2"), Some(&a), None);
        assert_eq!(p.announce_events(ip("10.0.0.1"), &a, &[]).len(), 1);
    }

    #[test]
    fn dataplane_changes_are_minimal() {
        let all = announced(Interfaces::All, &["default/a"]);
        let eth0 = announced(
            Interfaces::Named(["eth0".to_string()].into()),
            &["default/a"],
        );
        let shared = announced(Interfaces::All, &["default/a", "default/b"]);
        let now = BTreeMap::from([
            (ip("10.0.0.1"), all.clone()),
            (ip("10.0.0.2"), all.clone()),
            (ip("10.0.0.3"), all.clone()),
            (ip("10.0.0.4"), shared.clone()),
        ]);
        let target = BTreeMap::from([
            (ip("10.0.0.1"), all.clone()),
            (ip("10.0.0.2"), eth0.clone()),
            (ip("10.0.0.4"), all.clone()),
            (ip("10.0.0.5"), all.clone()),
        ]);
        let (gone, changes) = dataplane_changes(&now, &target);
        assert_eq!(gone, vec![ip("10.0.0.3")]);
        let by_ip: BTreeMap<IpAddr, &Change> = changes.iter().map(|c| (c.ip, c)).collect();
        assert_eq!(by_ip.len(), 3);
        assert!(by_ip[&ip("10.0.0.2")].calls_dataplane() && !by_ip[&ip("10.0.0.2")].fresh());
        assert!(!by_ip[&ip("10.0.0.4")].calls_dataplane());
        let c = by_ip[&ip("10.0.0.4")];
        let dropped: Vec<&str> = (c.prev.as_ref().unwrap().services)
            .difference(&c.want.services)
            .map(|k| &**k)
            .collect();
        assert_eq!(dropped, vec!["default/b"]);
        assert!(by_ip[&ip("10.0.0.5")].fresh() && by_ip[&ip("10.0.0.5")].calls_dataplane());
        assert_eq!(dataplane_changes(&target, &target), (vec![], vec![]));
    }

    #[test]
    fn next_wakeup_is_the_earliest_future_timer() {
        let p = planner();
        let t0 = Instant::now();
        let timers = Timers {
            peer_expiry: Some(t0 + ms(700)),
            fence: Some(t0 + ms(300)),
            startup: Some(t0 - ms(1)),
        };
        assert_eq!(p.next_wakeup(t0, timers), Some(t0 + ms(300)));
        assert_eq!(p.next_wakeup(t0, Timers::default()), None);
    }

    #[test]
    fn graceful_handover_names_the_successor() {
        let mut w = World::new(&[ME, "b"], &["b"]).claimed("10.0.0.1", claim(ME, "4"));
        w.nodes[0].speaker_alive = false;
        let h = handovers(ME, &ElectionOptions::default(), &w.snapshot(Instant::now()));
        assert_eq!(h, vec![(ip("10.0.0.1"), claim(ME, "4"), rec("b", 2))]);
        // alone: released (empty holder)
        let mut w = World::new(&[ME], &[]).claimed("10.0.0.1", claim(ME, "4"));
        w.nodes[0].speaker_alive = false;
        let h = handovers(ME, &ElectionOptions::default(), &w.snapshot(Instant::now()));
        assert_eq!(h[0].2, rec("", 2));
    }

    #[test]
    fn desired_status_unions_interfaces_and_ips() {
        let ann = BTreeMap::from([
            (
                ip("10.0.0.1"),
                announced(Interfaces::Named(["eth0".to_string()].into()), &["ns/a"]),
            ),
            (
                ip("fd00::1"),
                announced(Interfaces::Named(["eth1".to_string()].into()), &["ns/a"]),
            ),
        ]);
        let d = desired_statuses(ME, &ann);
        let st = &d[&ServiceKey::new("ns", "a")];
        assert_eq!(st.ips, vec!["10.0.0.1".to_string(), "fd00::1".to_string()]);
        let ifs: Vec<&str> = st.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(ifs, vec!["eth0", "eth1"]);
    }

    #[test]
    fn what_is_announced_shares_the_elections_service_keys() {
        let o = Ownership {
            node: "me".into(),
            interfaces: Interfaces::All,
            services: ["ns/a", "ns/b"].into_iter().collect(),
            anchor: ip("10.0.0.1"),
            sticky: false,
        };
        let a = Announced::from(&o);
        assert!(NameSet::ptr_eq(&a.services, &o.services));
        assert_eq!(a.interfaces, Interfaces::All);
    }
}

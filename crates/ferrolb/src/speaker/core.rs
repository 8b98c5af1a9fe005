//! The speaker loop body: from the reflectors' stores to dataplane calls and API writes.
//!
//! [`Speaker::reconcile`] is one pass: it rebuilds the election inputs from the stores,
//! runs the pure election ([`elect_all`]) and claim rules ([`decide_claim`]) for every IP,
//! performs the few writes they ask for (claims, ServiceL2Status, events — none at steady
//! state), and brings the dataplane in line. It returns when it next needs to run even if
//! nothing changes (a peer's Lease expiring, the fencing deadline, a hand-over timeout, a
//! retry after an API error).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use super::announcer::{Announcer, DuplicateResponder};
use super::claims::{is_orphan, Claim, ClaimApi, WriteOutcome};
use super::config_view::build_config;
use super::events::{self, EventMemory, EventSink, Pending};
use super::heartbeat::{node_address, Mesh};
use super::liveness::{node_lease_name, node_of_lease, Fence, LeaseMark, PeerTracker};
use super::metrics::{AnnouncedLabels, Metrics};
use super::status::{self, desired_status, Existing, ServiceKey, StatusApi, StatusWrite};
use crate::crd::{IPAddressPool, L2Advertisement, MetalLBServiceL2Status, ServiceL2Status};
use crate::election::membership::{MeshRules, OwnInput, PeerInput};
use crate::election::{
    decide_claim, elect_all, service_view, ClaimAction, ElectionOptions, HolderState, Interfaces,
    LeaseClock, NodeInfo, OwnerRecord, Ownership, ServiceView, SERVICE_NAME_LABEL,
};

/// The reflector stores the speaker reads (one watch per kind).
#[derive(Clone)]
pub struct Stores {
    /// Services (all namespaces).
    pub services: Store<Service>,
    /// EndpointSlices (all namespaces).
    pub slices: Store<EndpointSlice>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// IPAddressPools (speaker namespace).
    pub pools: Store<IPAddressPool>,
    /// L2Advertisements (speaker namespace).
    pub ads: Store<L2Advertisement>,
    /// Leases (speaker namespace): node Leases and IP claims.
    pub leases: Store<Lease>,
    /// ServiceL2Statuses (speaker namespace).
    pub statuses: Store<ServiceL2Status>,
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
    /// Events.
    pub events: EventSink,
    /// Node Leases (fresh reads before taking over from a silent peer).
    pub leases: Api<Lease>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Announced {
    interfaces: Interfaces,
    services: BTreeSet<String>,
}

/// A claim we wrote that the store has not shown yet.
#[derive(Debug, Clone)]
struct Overlay {
    /// resourceVersion the store showed when we wrote (None: absent).
    base: Option<String>,
    /// What we wrote (None: deleted).
    claim: Option<Claim>,
}

#[derive(Debug, Default)]
struct StatusMemo {
    created: BTreeMap<ServiceKey, Instant>,
    updated: BTreeMap<String, MetalLBServiceL2Status>,
    deleted: BTreeSet<String>,
}

#[derive(Debug)]
struct Backoff {
    delay: Duration,
    until: Option<Instant>,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    fn failed(&mut self, now: Instant) {
        self.until = Some(now + self.delay);
        self.delay = (self.delay * 2).min(Self::MAX);
    }
    fn ok(&mut self) {
        self.delay = Self::MIN;
        self.until = None;
    }
    fn allows(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| now >= u)
    }
}

/// One pending claim write.
struct ClaimWrite {
    ip: IpAddr,
    expected: Option<Claim>,
    /// None: delete the claim.
    record: Option<OwnerRecord>,
    /// Holder being replaced, when its Lease has to be confirmed expired first.
    confirm_dead: Option<String>,
}

/// Liveness as evaluated at the start of a pass.
#[derive(Debug, Clone, Default)]
struct Live {
    /// This node may announce.
    may: bool,
    /// Peers alive in this node's eyes.
    alive: BTreeSet<String>,
    /// Peers judged by their heartbeats (no fresh API read of their Lease before a takeover).
    by_heartbeat: BTreeSet<String>,
    /// Start of the current permission period.
    permitted_since: Option<Instant>,
    /// Members reaped (dead for 10 lease durations, seen from a quorum).
    reaped: BTreeSet<String>,
}

/// A member whose Lease has not changed (and who was not heard) for this many lease
/// durations, while this node's own Lease is fresh, no longer counts towards the quorum.
const REAP_AFTER_LEASES: u32 = 10;

/// The speaker's state between passes.
pub struct Speaker<A: Announcer> {
    settings: Settings,
    stores: Stores,
    clients: Clients,
    announcer: A,
    metrics: Arc<Metrics>,
    fence: watch::Receiver<Fence>,
    tracker: PeerTracker,
    announced: BTreeMap<IpAddr, Announced>,
    overlay: BTreeMap<IpAddr, Overlay>,
    waiting: BTreeMap<IpAddr, Instant>,
    loss_at: BTreeMap<IpAddr, Instant>,
    memory: EventMemory,
    status_memo: StatusMemo,
    needs_confirm: bool,
    needs_confirm_retry: bool,
    backoff: Backoff,
    config_errors: Vec<String>,
    mesh: Option<Mesh>,
    live: Live,
    lease_was_fresh: bool,
}

impl<A: Announcer> Speaker<A> {
    /// A speaker that has announced nothing yet.
    pub fn new(
        settings: Settings,
        stores: Stores,
        clients: Clients,
        announcer: A,
        metrics: Arc<Metrics>,
        fence: watch::Receiver<Fence>,
    ) -> Self {
        Self {
            tracker: PeerTracker::new(settings.clock.lease_duration()),
            settings,
            stores,
            clients,
            announcer,
            metrics,
            fence,
            announced: BTreeMap::new(),
            overlay: BTreeMap::new(),
            waiting: BTreeMap::new(),
            loss_at: BTreeMap::new(),
            memory: EventMemory::default(),
            status_memo: StatusMemo::default(),
            needs_confirm: false,
            needs_confirm_retry: false,
            backoff: Backoff {
                delay: Backoff::MIN,
                until: None,
            },
            config_errors: Vec::new(),
            mesh: None,
            live: Live::default(),
            lease_was_fresh: false,
        }
    }

    /// Uses heartbeats (from [`super::heartbeat`]) for liveness and fencing, on top of the
    /// node Leases (rules: [`crate::election::membership::MeshRules`]).
    pub fn with_mesh(mut self, mesh: Mesh) -> Self {
        self.mesh = Some(mesh);
        self
    }

    /// Whether this node may announce at `now` (Lease fresh, or heartbeat quorum).
    pub fn may_announce(&self, now: Instant) -> bool {
        self.evaluate(now).0.may
    }

    /// Liveness of this node and its peers at `now` (rules:
    /// [`crate::election::membership::MeshRules::evaluate`]), plus the heartbeat targets.
    fn evaluate(&self, now: Instant) -> (Live, Vec<(String, std::net::SocketAddr)>) {
        let f = *self.fence.borrow();
        let clock = self.settings.clock;
        let me = self.settings.node.as_str();
        let state = self.mesh.as_ref().map(|m| m.lock());
        let table = state.as_ref().map(|st| &st.table);
        let peers: BTreeMap<String, PeerInput> = self
            .tracker
            .nodes()
            .into_iter()
            .filter(|n| n != me)
            .map(|n| {
                let input = PeerInput {
                    last_heard: table.and_then(|t| t.last_heard(&n)),
                    lease_alive: self.tracker.is_alive(&n, now),
                    // a member holds its Lease and its Node still exists (a deleted
                    // node's crashed speaker never releases its Lease)
                    lease_held_since: self
                        .tracker
                        .held_since(&n)
                        .filter(|_| self.stores.nodes.get(&ObjectRef::new(&n)).is_some()),
                };
                (n, input)
            })
            .collect();
        let own = OwnInput {
            lease_fresh: clock.may_announce(f.last_renewed, now),
            renewed_ever: f.last_renewed.is_some(),
            mesh_enabled: state.as_ref().is_some_and(|st| st.enabled),
            heard_any: table.is_some_and(|t| t.heard_any()),
            lease_duration: clock.lease_duration(),
            reap_after: clock.lease_duration() * REAP_AFTER_LEASES,
            permitted_since: self.live.permitted_since,
            heartbeats_since: state.as_ref().map(|st| st.since),
        };
        let (rules, port) = match &self.mesh {
            Some(m) => (m.rules, m.port),
            None => (
                MeshRules {
                    timing: Default::default(),
                },
                super::heartbeat::DEFAULT_PORT,
            ),
        };
        let l = rules.evaluate(&peers, own, &self.live.reaped, now);
        let targets = if own.mesh_enabled {
            l.members
                .iter()
                .filter_map(|m| {
                    let node = self.stores.nodes.get(&ObjectRef::new(m))?;
                    Some((m.clone(), node_address(&node, port)?))
                })
                .collect()
        } else {
            Vec::new()
        };
        (
            Live {
                may: l.may,
                alive: l.alive,
                by_heartbeat: l.by_heartbeat,
                permitted_since: l.permitted_since,
                reaped: l.reaped,
            },
            targets,
        )
    }

    /// Evaluates liveness for this pass (and restarts the peers' Lease clocks after an
    /// observation gap), publishes the heartbeat targets.
    fn refresh_liveness(&mut self, now: Instant) {
        let f = *self.fence.borrow();
        let lease_fresh = self.settings.clock.may_announce(f.last_renewed, now);
        if lease_fresh && !self.lease_was_fresh && f.last_renewed.is_some() {
            self.tracker.restart_clocks(now);
        }
        self.lease_was_fresh = lease_fresh;
        let (live, targets) = self.evaluate(now);
        if let Some(m) = &self.mesh {
            let mut st = m.lock();
            st.may_announce = live.may;
            if st.targets != targets {
                st.targets = targets;
            }
            let members: BTreeSet<String> = self.tracker.held().into_iter().collect();
            st.table.retain(&|n| members.contains(n));
        }
        self.metrics.may_announce.set(i64::from(live.may));
        for gone in self.live.alive.difference(&live.alive) {
            tracing::info!(peer = %gone, heartbeats = live.by_heartbeat.contains(gone), "peer dead");
        }
        for r in live.reaped.difference(&self.live.reaped) {
            tracing::warn!(peer = %r, "dead for long: no longer counted towards the quorum");
        }
        for back in live.alive.difference(&self.live.alive) {
            tracing::info!(peer = %back, "peer alive");
        }
        if live.may != self.live.may {
            tracing::info!(may_announce = live.may, "permission changed");
        }
        self.live = live;
    }

    /// The IPs currently announced.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.announced.keys().copied().collect()
    }

    /// Records one observed Lease (from the watch). Returns true when a full pass is
    /// needed: a claim changed, or a peer came alive / released its Lease. Plain renewals of
    /// live peers need no pass (that would cost O(Services) work per renewal).
    pub fn observe_lease(&mut self, lease: &Lease, now: Instant) -> bool {
        let Some(name) = lease.metadata.name.as_deref() else {
            return false;
        };
        match node_of_lease(name) {
            Some(node) => {
                let was = self.tracker.is_alive(node, now);
                self.tracker.observe(node, LeaseMark::of(lease), now);
                was != self.tracker.is_alive(node, now)
            }
            None => name.starts_with(super::claims::CLAIM_PREFIX),
        }
    }

    fn sync_tracker(&mut self, now: Instant) {
        let leases = self.stores.leases.state();
        let mut present = BTreeSet::new();
        for l in &leases {
            if let Some(node) = l.metadata.name.as_deref().and_then(node_of_lease) {
                self.tracker.observe(node, LeaseMark::of(l), now);
                present.insert(node.to_string());
            }
        }
        self.tracker.retain(&|n| present.contains(n));
        self.tracker.note_deaths(now);
    }

    /// Effective claims: the store, overlaid with our own writes it has not shown yet.
    fn claims(&mut self) -> BTreeMap<IpAddr, Claim> {
        let mut out: BTreeMap<IpAddr, Claim> = self
            .stores
            .leases
            .state()
            .iter()
            .filter_map(|l| Claim::from_lease(l))
            .collect();
        self.overlay.retain(|ip, ov| {
            let store_rv = out.get(ip).map(|c| c.resource_version.clone());
            if store_rv != ov.base {
                return false; // the store moved on (our write, or someone else's)
            }
            match &ov.claim {
                Some(c) => out.insert(*ip, c.clone()),
                None => out.remove(ip),
            };
            true
        });
        out
    }

    fn views(&self, config: &crate::config::Config) -> Vec<ServiceView> {
        let mut slices: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for s in self.stores.slices.state() {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            if let Some(svc) = s.labels().get(SERVICE_NAME_LABEL).cloned() {
                slices.entry((ns, svc)).or_default().push(s);
            }
        }
        let empty = Vec::new();
        self.stores
            .services
            .state()
            .iter()
            .filter(|s| {
                let class = s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.load_balancer_class.as_deref());
                class == self.settings.lb_class.as_deref()
            })
            .filter_map(|s| {
                let key = (
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.name_any(),
                );
                let sl = slices.get(&key).unwrap_or(&empty);
                service_view(s, sl.iter().map(|a| a.as_ref()), config).ok()
            })
            .collect()
    }

    fn nodes(&self, _now: Instant, may: bool) -> Vec<NodeInfo> {
        self.stores
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                let name = n.metadata.name.as_deref()?;
                let alive = if name == self.settings.node {
                    may
                } else {
                    self.live.alive.contains(name)
                };
                NodeInfo::from_node(n, alive)
            })
            .collect()
    }

    fn withdraw(&mut self, ip: IpAddr) {
        if let Some(a) = self.announced.remove(&ip) {
            self.announcer.withdraw(ip);
            self.metrics.change(false);
            for s in &a.services {
                self.metrics.announced.remove(&AnnouncedLabels {
                    service: s.clone(),
                    ip: ip.to_string(),
                    node: self.settings.node.clone(),
                });
            }
            tracing::info!(%ip, "withdrawn");
        }
    }

    /// The validated configuration from the pool and advertisement stores.
    fn current_config(&self) -> (crate::config::Config, Vec<String>) {
        let pools: Vec<_> = self
            .stores
            .pools
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let ads: Vec<_> = self
            .stores
            .ads
            .state()
            .iter()
            .map(|a| (**a).clone())
            .collect();
        build_config(&pools, &ads)
    }

    /// Withdraws every announcement at once (fencing, shutdown).
    pub fn withdraw_all(&mut self) {
        let ips: Vec<IpAddr> = self.announced.keys().copied().collect();
        for ip in ips {
            self.withdraw(ip);
        }
    }

    /// One pass. Returns the instant at which the next pass is due even without changes.
    pub async fn reconcile(&mut self, now: Instant) -> Option<Instant> {
        self.sync_tracker(now);
        self.refresh_liveness(now);
        let may = self.live.may;
        if !may {
            if !self.announced.is_empty() {
                tracing::warn!(
                    count = self.announced.len(),
                    heartbeats = self.mesh.as_ref().is_some_and(|m| m.lock().enabled),
                    "fenced (no heartbeat quorum / node lease not renewed in time): withdrawing everything"
                );
                self.metrics.fenced.inc();
                self.withdraw_all();
            }
            self.needs_confirm = true;
        }

        let (config, errors) = self.current_config();
        if errors != self.config_errors {
            for e in &errors {
                tracing::warn!(error = %e, "configuration object ignored");
            }
            self.config_errors = errors;
        }
        let views = self.views(&config);
        let nodes = self.nodes(now, may);
        let claims = self.claims();
        let current: BTreeMap<IpAddr, String> = claims
            .iter()
            .filter(|(_, c)| !c.holder.is_empty())
            .map(|(ip, c)| (*ip, c.holder.clone()))
            .collect();
        let election = elect_all(&config, &views, &nodes, &current, &self.settings.options);
        let allocated: BTreeSet<IpAddr> =
            views.iter().flat_map(|v| v.ips.iter().copied()).collect();

        let me = self.settings.node.clone();
        let mut to_announce: BTreeMap<IpAddr, Ownership> = BTreeMap::new();
        let mut writes: Vec<ClaimWrite> = Vec::new();
        let ips: BTreeSet<IpAddr> = election
            .owners
            .keys()
            .chain(claims.keys())
            .copied()
            .collect();
        for ip in ips {
            let own = election.owners.get(&ip);
            let desired = own.map(|o| o.node.as_str());
            let claim = claims.get(&ip);
            if let Some(c) = claim {
                let alive = |n: &str| self.live.alive.contains(n);
                if c.holder != me && is_orphan(allocated.contains(&ip), c, &alive) {
                    if may {
                        writes.push(ClaimWrite {
                            ip,
                            expected: Some(c.clone()),
                            record: None,
                            confirm_dead: None,
                        });
                    }
                    continue;
                }
            }
            let holder_state = match claim.map(|c| c.holder.as_str()) {
                None | Some("") => HolderState::Gone,
                Some(h) if h == me => HolderState::Alive,
                Some(h) if self.live.alive.contains(h) => {
                    if desired == Some(me.as_str()) {
                        let since = *self.waiting.entry(ip).or_insert(now);
                        if now.saturating_duration_since(since)
                            >= self.settings.clock.handover_timeout()
                        {
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
            if holder_state != HolderState::Alive || desired != Some(me.as_str()) {
                self.waiting.remove(&ip);
            }
            let record = claim.map(Claim::record);
            match decide_claim(&me, desired, record.as_ref(), holder_state, may) {
                ClaimAction::Announce => {
                    if let Some(o) = own {
                        to_announce.insert(ip, o.clone());
                    }
                }
                ClaimAction::Claim { record } => {
                    let prev = claim.map(|c| c.holder.clone()).filter(|h| !h.is_empty());
                    writes.push(ClaimWrite {
                        ip,
                        expected: claim.cloned(),
                        record: Some(record),
                        // A holder judged by its heartbeats is confirmed dead by their
                        // silence; one judged by its Lease gets a fresh read first.
                        confirm_dead: prev
                            .filter(|_| holder_state == HolderState::Gone)
                            .filter(|h| !self.live.by_heartbeat.contains(h)),
                    });
                }
                ClaimAction::Release { record } => {
                    // Stop answering before the record names anyone else.
                    self.withdraw(ip);
                    if let Some(c) = claim {
                        writes.push(ClaimWrite {
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
        self.waiting
            .retain(|ip, _| election.owners.contains_key(ip));

        // After fencing our view of the claims may be stale: re-assert them before answering.
        if may && self.needs_confirm && !to_announce.is_empty() {
            self.confirm_claims(&mut to_announce, now).await;
        } else if may {
            self.needs_confirm = false;
        }

        if may && self.backoff.allows(now) && !writes.is_empty() {
            self.write_claims(writes, &election.owners, &mut to_announce, now)
                .await;
        }

        self.apply_dataplane(&to_announce, now);
        if may && self.backoff.allows(now) {
            self.sync_status(now).await;
        }
        self.memory.retain(&|s| {
            self.announced
                .values()
                .any(|a| a.services.contains(&s.to_string()))
        });
        self.next_wakeup(now, may)
    }

    async fn confirm_claims(
        &mut self,
        to_announce: &mut BTreeMap<IpAddr, Ownership>,
        now: Instant,
    ) {
        // Re-assert each claim with a write carrying the resourceVersion just read: a peer
        // that judged us dead and claims concurrently then loses with a conflict (a plain
        // read would let both of us announce until the watches catch up).
        let ips: Vec<IpAddr> = to_announce.keys().copied().collect();
        for ip in ips {
            let fresh = match self.clients.claims.get(ip).await {
                Ok(Some(c)) if c.holder == self.settings.node => {
                    match self.clients.claims.write(ip, Some(&c), &c.record()).await {
                        Ok(WriteOutcome::Won(c2)) => {
                            self.overlay.insert(
                                ip,
                                Overlay {
                                    base: self.store_rv(ip),
                                    claim: Some(c2),
                                },
                            );
                            continue;
                        }
                        Ok(WriteOutcome::Lost) => self.clients.claims.get(ip).await,
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match fresh {
                Ok(Some(c)) if c.holder == self.settings.node => {
                    // re-read after a lost race names us again: try on the next pass
                    to_announce.remove(&ip);
                    self.needs_confirm_retry = true;
                }
                Ok(fresh) => {
                    tracing::info!(%ip, "claim changed while fenced; not announcing");
                    to_announce.remove(&ip);
                    let base = self.store_rv(ip);
                    self.overlay.insert(ip, Overlay { base, claim: fresh });
                }
                Err(e) => {
                    tracing::warn!(%ip, error = %e, "cannot confirm claim");
                    self.metrics.api_errors.inc();
                    self.backoff.failed(now);
                    to_announce.clear();
                    return;
                }
            }
        }
        self.needs_confirm = std::mem::take(&mut self.needs_confirm_retry);
    }

    /// resourceVersion of `ip`'s claim in the store.
    fn store_rv(&self, ip: IpAddr) -> Option<String> {
        let name = super::claims::claim_name(ip);
        self.stores
            .leases
            .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|l| l.metadata.resource_version.clone())
    }

    async fn write_claims(
        &mut self,
        writes: Vec<ClaimWrite>,
        owners: &BTreeMap<IpAddr, Ownership>,
        to_announce: &mut BTreeMap<IpAddr, Ownership>,
        now: Instant,
    ) {
        // Confirm silent holders with a fresh read of their node Lease: a watch that lags
        // must not make us take over from a speaker that is in fact renewing.
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
                            continue;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read peer lease");
                        self.metrics.api_errors.inc();
                        self.backoff.failed(now);
                        return;
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
        let mut failed = false;
        for (w, r) in results {
            let base = w.expected.as_ref().map(|c| c.resource_version.clone());
            match (r, &w.record) {
                (Ok(WriteOutcome::Won(c)), Some(rec)) => {
                    tracing::info!(ip = %w.ip, holder = %rec.holder, epoch = rec.epoch, "claim written");
                    if rec.holder == self.settings.node {
                        if let Some(o) = owners.get(&w.ip) {
                            to_announce.insert(w.ip, o.clone());
                        }
                        let prev = w.expected.as_ref().map(|c| c.holder.as_str()).unwrap_or("");
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
                    self.overlay.insert(
                        w.ip,
                        Overlay {
                            base,
                            claim: Some(c),
                        },
                    );
                }
                (Ok(_), None) => {
                    tracing::info!(ip = %w.ip, "claim deleted");
                    self.overlay.insert(w.ip, Overlay { base, claim: None });
                }
                (Ok(_), Some(_)) => {
                    tracing::info!(ip = %w.ip, "claim lost to another node");
                    self.metrics.claim_conflicts.inc();
                }
                (Err(e), _) => {
                    tracing::warn!(ip = %w.ip, error = %e, "claim write failed; retrying");
                    self.metrics.api_errors.inc();
                    failed = true;
                }
            }
        }
        if failed {
            self.backoff.failed(now);
        } else {
            self.backoff.ok();
        }
    }

    fn apply_dataplane(&mut self, to_announce: &BTreeMap<IpAddr, Ownership>, now: Instant) {
        let gone: Vec<IpAddr> = self
            .announced
            .keys()
            .filter(|ip| !to_announce.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            self.withdraw(ip);
        }
        for (ip, own) in to_announce {
            let want = Announced {
                interfaces: own.interfaces.clone(),
                services: own.services.clone(),
            };
            let prev = self.announced.get(ip).cloned();
            if prev.as_ref() == Some(&want) {
                continue;
            }
            let fresh = prev.is_none();
            if prev
                .as_ref()
                .is_none_or(|p| p.interfaces != want.interfaces)
            {
                let report = self.announcer.announce(*ip, &want.interfaces);
                if fresh {
                    self.metrics.change(true);
                    if let Some(t) = self.loss_at.remove(ip) {
                        let at = Instant::now().max(now);
                        self.metrics
                            .failover_seconds
                            .observe(at.saturating_duration_since(t).as_secs_f64());
                    }
                    tracing::info!(%ip, services = ?want.services, "announcing");
                }
                self.note_announce_events(*ip, &want, &report.missing);
            } else {
                self.note_announce_events(*ip, &want, &[]);
            }
            if let Some(p) = prev {
                for s in p.services.difference(&want.services) {
                    self.metrics.announced.remove(&AnnouncedLabels {
                        service: s.clone(),
                        ip: ip.to_string(),
                        node: self.settings.node.clone(),
                    });
                }
            }
            for s in &want.services {
                self.metrics
                    .announced
                    .get_or_create(&AnnouncedLabels {
                        service: s.clone(),
                        ip: ip.to_string(),
                        node: self.settings.node.clone(),
                    })
                    .set(1);
            }
            self.announced.insert(*ip, want);
        }
        self.loss_at.clear();
    }

    fn note_announce_events(&mut self, ip: IpAddr, a: &Announced, missing: &[String]) {
        let ifs: Vec<String> = match &a.interfaces {
            Interfaces::All => Vec::new(),
            Interfaces::Named(n) => n.iter().cloned().collect(),
        };
        let mut pending = Vec::new();
        for s in &a.services {
            let Some(key) = ServiceKey::parse(s) else {
                continue;
            };
            let msg = events::node_assigned_message(&self.settings.node, &ifs);
            pending.extend(self.memory.note(&key, false, events::NODE_ASSIGNED, msg));
            if missing.is_empty() {
                self.memory.clear(&key, events::ANNOUNCE_FAILED);
            } else {
                let msg =
                    events::announce_failed_message(&ip.to_string(), &self.settings.node, missing);
                pending.extend(self.memory.note(&key, true, events::ANNOUNCE_FAILED, msg));
            }
        }
        self.spawn_events(pending);
    }

    /// Interfaces appeared or vanished on this node: re-check `announceFailed` for every
    /// announced IP (the dataplane itself starts answering on a new interface by itself).
    pub fn interfaces_changed(&mut self) {
        let all: Vec<(IpAddr, Announced)> = self
            .announced
            .iter()
            .map(|(i, a)| (*i, a.clone()))
            .collect();
        for (ip, a) in all {
            let missing = self.announcer.missing(&a.interfaces);
            self.note_announce_events(ip, &a, &missing);
        }
    }

    /// Turns a duplicate-responder report from the dataplane into a Warning on the
    /// Services of the IP (once per other MAC).
    pub fn duplicate_responder(&mut self, d: &DuplicateResponder) {
        let Some(a) = self.announced.get(&d.ip) else {
            return;
        };
        tracing::warn!(ip = %d.ip, interface = %d.interface, their_mac = %d.their_mac, our_mac = %d.our_mac,
            "another host answers for an IP this node owns");
        let msg = format!(
            "another host ({}) answers for {} on interface {} of node {:?} (ours: {})",
            d.their_mac, d.ip, d.interface, self.settings.node, d.our_mac
        );
        let mut pending = Vec::new();
        for s in a.services.clone() {
            if let Some(key) = ServiceKey::parse(&s) {
                pending.extend(self.memory.note(
                    &key,
                    true,
                    events::DUPLICATE_RESPONDER,
                    msg.clone(),
                ));
            }
        }
        self.spawn_events(pending);
    }

    fn spawn_events(&self, pending: Vec<Pending>) {
        for ev in pending {
            let Some(svc) = self
                .stores
                .services
                .get(&ObjectRef::new(&ev.service.name).within(&ev.service.namespace))
            else {
                continue;
            };
            let reference = svc.object_ref(&());
            let sink = self.clients.events.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = sink.publish(&ev, &reference).await {
                    tracing::warn!(error = %e, reason = ev.reason, "cannot publish event");
                    metrics.api_errors.inc();
                }
            });
        }
    }

    async fn sync_status(&mut self, now: Instant) {
        let mut desired_sets: BTreeMap<ServiceKey, (BTreeSet<String>, BTreeSet<String>)> =
            BTreeMap::new();
        for (ip, a) in &self.announced {
            for s in &a.services {
                let Some(key) = ServiceKey::parse(s) else {
                    continue;
                };
                let e = desired_sets.entry(key).or_default();
                if let Interfaces::Named(n) = &a.interfaces {
                    e.0.extend(n.iter().cloned());
                }
                e.1.insert(ip.to_string());
            }
        }
        let desired: BTreeMap<ServiceKey, MetalLBServiceL2Status> = desired_sets
            .iter()
            .map(|(k, (ifs, ips))| (k.clone(), desired_status(&self.settings.node, k, ifs, ips)))
            .collect();
        let existing: Vec<Existing> = self
            .stores
            .statuses
            .state()
            .iter()
            .map(|o| Existing::of(o))
            .collect();
        let names: BTreeSet<String> = existing.iter().map(|e| e.name.clone()).collect();
        let memo = &mut self.status_memo;
        memo.deleted.retain(|n| names.contains(n));
        memo.updated.retain(|n, _| names.contains(n));
        let mine: BTreeSet<ServiceKey> = existing
            .iter()
            .filter(|e| e.node == self.settings.node)
            .filter_map(|e| e.service.clone())
            .collect();
        memo.created.retain(|k, t| {
            !mine.contains(k) && now.saturating_duration_since(*t) < Duration::from_secs(10)
        });
        let alive = |n: &str| self.live.alive.contains(n);
        let plan = status::plan(&self.settings.node, &desired, &existing, &alive);
        let mut failed = false;
        for w in plan {
            let skip = match &w {
                StatusWrite::Create { service, .. } => {
                    self.status_memo.created.contains_key(service)
                }
                StatusWrite::Update { name, status } => {
                    self.status_memo.updated.get(name) == Some(status)
                }
                StatusWrite::Delete { name, .. } => self.status_memo.deleted.contains(name),
            };
            if skip {
                continue;
            }
            match self.clients.status.apply(&w).await {
                Ok(()) => match w {
                    StatusWrite::Create { service, .. } => {
                        self.status_memo.created.insert(service, now);
                    }
                    StatusWrite::Update { name, status } => {
                        self.status_memo.updated.insert(name, status);
                    }
                    StatusWrite::Delete { name, .. } => {
                        self.status_memo.deleted.insert(name);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "ServiceL2Status write failed; retrying");
                    self.metrics.api_errors.inc();
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.backoff.failed(now);
        }
    }

    fn next_wakeup(&self, now: Instant, may: bool) -> Option<Instant> {
        let f = *self.fence.borrow();
        let fence = if may && !self.announced.is_empty() {
            f.last_renewed.map(|t| self.settings.clock.fence_at(t))
        } else {
            None
        };
        let handover = self
            .waiting
            .values()
            .map(|t| *t + self.settings.clock.handover_timeout())
            .min();
        // end of the start-up window (permission may come then without any event)
        let startup = self
            .mesh
            .as_ref()
            .filter(|_| !may)
            .map(|m| m.lock().since + m.rules.startup_window());
        [
            self.tracker.next_expiry(now),
            fence,
            handover,
            startup,
            self.backoff.until,
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
    }

    /// Graceful stop: withdraw everything, then hand every claim we hold to the node the
    /// election picks without us (or release it), so successors start at once.
    pub async fn shutdown(&mut self) {
        let now = Instant::now();
        self.withdraw_all();
        let (config, _) = self.current_config();
        let views = self.views(&config);
        let nodes = self.nodes(now, false);
        let claims = self.claims();
        let current: BTreeMap<IpAddr, String> = claims
            .iter()
            .filter(|(_, c)| !c.holder.is_empty())
            .map(|(ip, c)| (*ip, c.holder.clone()))
            .collect();
        let election = elect_all(&config, &views, &nodes, &current, &self.settings.options);
        let mine: Vec<(IpAddr, Claim)> = claims
            .into_iter()
            .filter(|(_, c)| c.holder == self.settings.node)
            .collect();
        let api = self.clients.claims.clone();
        let results = futures::stream::iter(mine.into_iter().map(|(ip, c)| {
            let api = api.clone();
            let to = election.owners.get(&ip).map(|o| o.node.clone());
            async move {
                let rec = OwnerRecord {
                    holder: to.unwrap_or_default(),
                    epoch: c.record().epoch + 1,
                };
                (ip, rec.holder.clone(), api.write(ip, Some(&c), &rec).await)
            }
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
        for e in self.stores.statuses.state().iter().map(|o| Existing::of(o)) {
            if e.node == self.settings.node {
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

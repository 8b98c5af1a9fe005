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
use super::liveness::{node_lease_name, node_of_lease, Fence, LeaseMark, PeerTracker};
use super::metrics::{AnnouncedLabels, Metrics};
use super::status::{self, desired_status, Existing, ServiceKey, StatusApi, StatusWrite};
use crate::crd::{IPAddressPool, L2Advertisement, MetalLBServiceL2Status, ServiceL2Status};
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
    backoff: Backoff,
    config_errors: Vec<String>,
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
            backoff: Backoff {
                delay: Backoff::MIN,
                until: None,
            },
            config_errors: Vec::new(),
        }
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

    fn may_announce(&self, now: Instant) -> bool {
        let f = *self.fence.borrow();
        self.settings.clock.may_announce(f.last_renewed, now)
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

    fn nodes(&self, now: Instant, may: bool) -> Vec<NodeInfo> {
        self.stores
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                let name = n.metadata.name.as_deref()?;
                let alive = if name == self.settings.node {
                    may
                } else {
                    self.tracker.is_alive(name, now)
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
        let may = self.may_announce(now);
        if !may {
            if !self.announced.is_empty() {
                tracing::warn!(
                    count = self.announced.len(),
                    "node lease not renewed within the renew deadline: withdrawing everything"
                );
                self.metrics.fenced.inc();
                self.withdraw_all();
            }
            self.needs_confirm = true;
        }

        let (config, errors) = build_config(
            &self
                .stores
                .pools
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect::<Vec<_>>(),
            &self
                .stores
                .ads
                .state()
                .iter()
                .map(|a| (**a).clone())
                .collect::<Vec<_>>(),
        );
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
                let alive = |n: &str| self.tracker.is_alive(n, now);
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
                Some(h) if self.tracker.is_alive(h, now) => {
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
                        confirm_dead: prev.filter(|_| holder_state == HolderState::Gone),
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

        // After fencing our view of the claims may be stale: re-read before answering again.
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
        let ips: Vec<IpAddr> = to_announce.keys().copied().collect();
        for ip in ips {
            match self.clients.claims.get(ip).await {
                Ok(Some(c)) if c.holder == self.settings.node => {}
                Ok(fresh) => {
                    tracing::info!(%ip, "claim changed while fenced; not announcing");
                    to_announce.remove(&ip);
                    let name = super::claims::claim_name(ip);
                    let base = self
                        .stores
                        .leases
                        .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
                        .and_then(|l| l.metadata.resource_version.clone());
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
        self.needs_confirm = false;
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
        let alive = |n: &str| self.tracker.is_alive(n, now);
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
        [
            self.tracker.next_expiry(now),
            fence,
            handover,
            self.backoff.until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Graceful stop: withdraw everything, then hand every claim we hold to the node the
    /// election picks without us (or release it), so successors start at once.
    pub async fn shutdown(&mut self) {
        let now = Instant::now();
        self.withdraw_all();
        let (config, _) = build_config(
            &self
                .stores
                .pools
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect::<Vec<_>>(),
            &self
                .stores
                .ads
                .state()
                .iter()
                .map(|a| (**a).clone())
                .collect::<Vec<_>>(),
        );
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

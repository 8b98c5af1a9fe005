//! The thin kube shell around [`super::core::Core`].
//!
//! One leadership session ([`lead`]):
//! 1. read Namespace labels (the Namespace watch's initial list), LIST pools and
//!    advertisements, validate them, take every Service from the Service watch's
//!    initial list (its reflector store of slim projections, see [`super::slim`]) and
//!    rebuild the allocator from the Services' statuses, before reconciling anything;
//! 2. run a kube-runtime `Controller` over the rest of the Service watch, with one
//!    re-check of every listed Service, plus targeted re-reconciles (`reconcile_on`)
//!    for pending Services that can use freed room, Services cleared by a config
//!    change and the Services of a Namespace whose labels changed;
//! 3. watch pools + advertisements (decide again on change, see [`crate::config::decide`]:
//!    an invalid pool is frozen on its last valid spec, or ignored when it never had one;
//!    either way a `Valid=False` condition and a Warning Event name the field), Namespaces
//!    (labels), and write pool statuses coalesced (at most one pass per
//!    [`POOL_STATUS_COALESCE`]), each pool's failed write retried with its own backoff
//!    ([`super::backoff`]). The pool status publishes the decision (`lastValidSpec`, the
//!    verdict): the speakers follow it, and the next session (or a restart) reads it back.
//!
//! Deletions release IPs as they arrive; after every (re)list, Services the core still
//! tracks but the cluster no longer has are released too (a watch gap loses no IP).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{future, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::backoff::{self, Retries};
use super::core::{service_key, Core, Outcome};
use super::metrics::Metrics;
use super::pools::{self, PoolVerdict};
use super::slim::slim_service;
use super::writer::{PlannedEvent, WriteError, Writer};
use crate::allocator::ServiceKey;
use crate::config::{self, Config, Decision, ObjectKind, Pool, PoolDecision, PoolState};
use crate::crd::{IPAddressPool, IPAddressPoolSpec, L2Advertisement};

/// Pool status writes are coalesced over this window.
pub const POOL_STATUS_COALESCE: Duration = Duration::from_millis(250);

/// Reconciles of Services running at once.
pub const CONCURRENCY: u16 = 32;

/// A stream of watch events for `K`.
pub type EventStream<K> = BoxStream<'static, watcher::Result<Event<K>>>;

/// The watch streams a session consumes. [`Inputs::watch`] gives the real ones; tests
/// may feed their own.
pub struct Inputs {
    /// Every Service in the cluster.
    pub services: EventStream<Service>,
    /// IPAddressPools of the controller namespace.
    pub pools: EventStream<IPAddressPool>,
    /// L2Advertisements of the controller namespace.
    pub l2ads: EventStream<L2Advertisement>,
    /// Every Namespace (labels feed `namespaceSelectors`).
    pub namespaces: EventStream<Namespace>,
}

impl Inputs {
    /// kube-runtime watchers with the default backoff.
    pub fn watch(client: &kube::Client, namespace: &str) -> Self {
        fn w<K>(api: Api<K>) -> EventStream<K>
        where
            K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        {
            watcher::watcher(api, watcher::Config::default())
                .backoff(crate::runtime::watch_backoff())
                .boxed()
        }
        Self {
            services: w(Api::all(client.clone())),
            pools: w(Api::namespaced(client.clone(), namespace)),
            l2ads: w(Api::namespaced(client.clone(), namespace)),
            namespaces: w(Api::all(client.clone())),
        }
    }
}

/// What a session needs to know.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of pools and advertisements.
    pub namespace: String,
    /// `--lb-class` (`None`: Services without a class).
    pub lb_class: Option<String>,
}

impl Settings {
    /// The settings the flags describe (`--lb-class=` means no class, as for the speaker).
    pub fn new(args: &super::Args) -> Self {
        Self {
            namespace: args.namespace.clone(),
            lb_class: crate::class::from_flag(args.lb_class.as_deref()),
        }
    }
}

/// Errors of one Service reconcile (drive the retry policy).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// State shared by the tasks of one session.
pub struct Ctx {
    core: Mutex<Core>,
    writer: Writer,
    metrics: Metrics,
    services: Store<Service>,
    retry_tx: mpsc::UnboundedSender<ObjectRef<Service>>,
    pools_dirty: Notify,
    /// The decision about each pool (by name) with its errors, for the status writer.
    pool_decisions: Mutex<BTreeMap<String, (PoolDecision, String)>>,
    failures: Mutex<HashMap<ServiceKey, u32>>,
}

impl Ctx {
    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn retry(&self, keys: impl IntoIterator<Item = ServiceKey>) {
        for k in keys {
            let _ = self
                .retry_tx
                .unbounded_send(ObjectRef::new(&k.name).within(&k.namespace));
        }
    }

    fn deleted(&self, key: &ServiceKey) {
        let retry = {
            let mut core = self.lock();
            let r = core.deleted(key);
            self.metrics.pending.set(core.pending_len() as i64);
            r
        };
        tracing::debug!(service = %key, retry = retry.len(), "service deleted, IP released");
        self.retry(retry);
        self.pools_dirty.notify_one();
    }

    /// After a (re)list: release Services the core tracks that no longer exist.
    fn sweep(&self) {
        let tracked = self.lock().tracked();
        for key in tracked {
            let r = ObjectRef::new(&key.name).within(&key.namespace);
            if self.services.get(&r).is_none() {
                self.deleted(&key);
            }
        }
    }
}

/// Lists every object of `api`, page by page.
pub async fn list_all<K>(api: &Api<K>) -> kube::Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        out.extend(page.items);
        match next {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

/// The last valid spec this session decided for each pool (by uid). The session reads
/// what it decided even before its status write lands (or when it fails), so it never
/// falls back to an older published spec.
pub type Decided = BTreeMap<String, IPAddressPoolSpec>;

/// Decides the configuration (see [`config::decide`]) from the pools and advertisements,
/// each pool's past being its published `status.lastValidSpec` or, newer, what this session
/// decided (`decided`), which is then updated.
pub fn decide_objects(
    pools: &[IPAddressPool],
    ads: &[L2Advertisement],
    decided: &mut Decided,
) -> Decision {
    let with_past: Vec<IPAddressPool> = pools
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(spec) = p.metadata.uid.as_ref().and_then(|u| decided.get(u)) {
                p.status
                    .get_or_insert_with(Default::default)
                    .last_valid_spec = Some(spec.clone());
            }
            p
        })
        .collect();
    let d = config::decide(&with_past, ads);
    decided.retain(|uid, _| pools.iter().any(|p| p.metadata.uid.as_ref() == Some(uid)));
    for pd in &d.pools {
        if let (Some(uid), Some(spec)) = (&pd.uid, &pd.in_force) {
            decided.insert(uid.clone(), spec.clone());
        }
    }
    d
}

/// The decision about each pool by name, with its errors.
fn pool_decisions(d: &Decision) -> BTreeMap<String, (PoolDecision, String)> {
    d.pools
        .iter()
        .filter(|pd| !pd.name.is_empty())
        .map(|pd| (pd.name.clone(), (pd.clone(), d.pool_message(pd.index))))
        .collect()
}

/// The errors of each invalid L2Advertisement, by name.
fn ad_errors(d: &Decision) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for e in &d.validated.errors {
        if e.kind == ObjectKind::L2Advertisement {
            let entry = out.entry(e.name.clone()).or_default();
            if !entry.is_empty() {
                entry.push_str("; ");
            }
            entry.push_str(&e.to_string());
        }
    }
    out
}

fn pool_list(c: &Config) -> Vec<Pool> {
    c.pools.values().cloned().collect()
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let t0 = Instant::now();
    ctx.metrics.reconciles.inc();
    let key = service_key(&svc);
    let (plan, retry) = {
        let mut core = ctx.lock();
        // Deleted (or replaced) since this reconcile was queued: nothing to do, the
        // deletion released it.
        let current = ctx.services.get(&ObjectRef::from_obj(&*svc));
        if current.map(|c| c.metadata.uid.clone()) != Some(svc.metadata.uid.clone()) {
            return Ok(Action::await_change());
        }
        let plan = core.reconcile(&svc);
        let retry = core.retry_candidates();
        ctx.metrics.pending.set(core.pending_len() as i64);
        (plan, retry)
    };
    ctx.retry(retry);
    if plan.status.is_some() || plan.outcome == Outcome::Released {
        ctx.pools_dirty.notify_one();
    }
    let res = execute(&ctx, &svc, &key, &plan).await;
    ctx.metrics
        .reconcile_duration
        .observe(t0.elapsed().as_secs_f64());
    match res {
        Ok(()) => {
            ctx.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            Ok(Action::await_change())
        }
        Err(WriteError::NotLeader) | Err(WriteError::NotFound(_)) => Ok(Action::await_change()),
        Err(e) => {
            ctx.lock().write_failed(&key);
            Err(e.into())
        }
    }
}

async fn execute(
    ctx: &Ctx,
    svc: &Service,
    key: &ServiceKey,
    plan: &super::core::Plan,
) -> Result<(), WriteError> {
    if let Some(patch) = &plan.status {
        ctx.writer
            .patch_service_status(&key.namespace, &key.name, patch)
            .await?;
        tracing::info!(service = %key, outcome = ?plan.outcome, "updated service status");
    }
    let regarding = svc.object_ref(&());
    for ev in &plan.events {
        if let Err(e) = ctx.writer.publish(&regarding, ev).await {
            if matches!(e, WriteError::NotLeader) {
                return Err(e);
            }
            tracing::warn!(service = %key, reason = %ev.reason, error = %e, "could not publish event");
        }
    }
    Ok(())
}

fn error_policy(svc: Arc<Service>, err: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.reconcile_errors.inc();
    let key = service_key(&svc);
    let attempt = {
        let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff::delay(attempt);
    tracing::warn!(service = %key, error = %err, attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs one leadership session until an input stream ends or fails for good.
/// Dropping the future stops everything at once (in-flight writes included).
pub async fn lead(
    client: kube::Client,
    settings: Settings,
    inputs: Inputs,
    writer: Writer,
    metrics: Metrics,
) -> anyhow::Result<()> {
    // 1. Initial state, before any reconcile: Namespace labels from the Namespace
    //    watch's initial list, pools / advertisements / Services listed.
    let t0 = Instant::now();
    let Inputs {
        services,
        pools: pool_events,
        l2ads,
        namespaces,
    } = inputs;
    let mut namespaces = namespaces;
    let mut ns_labels: HashMap<String, crate::selector::Labels> = HashMap::new();
    loop {
        match namespaces.next().await {
            Some(Ok(Event::Init)) => ns_labels.clear(),
            Some(Ok(Event::InitApply(n) | Event::Apply(n))) => {
                let name = n.name_any();
                ns_labels.insert(name, n.metadata.labels.unwrap_or_default());
            }
            Some(Ok(Event::Delete(n))) => {
                ns_labels.remove(&n.name_any());
            }
            Some(Ok(Event::InitDone)) => break,
            Some(Err(e)) => tracing::warn!(error = %e, "namespace list failed (retrying)"),
            None => anyhow::bail!("namespace watch ended before its initial list"),
        }
    }
    let pool_api: Api<IPAddressPool> = Api::namespaced(client.clone(), &settings.namespace);
    let ad_api: Api<L2Advertisement> = Api::namespaced(client.clone(), &settings.namespace);
    let pools = list_all(&pool_api).await?;
    let ads = list_all(&ad_api).await?;
    let mut decided = Decided::new();
    let decision = decide_objects(&pools, &ads, &mut decided);
    drop((pools, ads));
    let cfg = decision.config().clone();
    let invalid_pools = decision
        .pools
        .iter()
        .filter(|p| p.state != PoolState::Accepted)
        .count();
    for pd in decision
        .pools
        .iter()
        .filter(|p| p.state != PoolState::Accepted)
    {
        tracing::warn!(pool = %pd.name, state = ?pd.state, error = %decision.pool_message(pd.index),
            "invalid IPAddressPool");
    }

    // Every Service, from the Service watch's own initial list (no second LIST): the
    // reflector store holds slim projections once it is done.
    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let mut svc_events = services
        .map_ok(|ev| ev.modify(slim_service))
        .reflect(svc_writer)
        .boxed();
    loop {
        match svc_events.next().await {
            Some(Ok(Event::InitDone)) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "service list failed (retrying)"),
            None => anyhow::bail!("service watch ended before its initial list"),
        }
    }
    let listed = svc_reader.state();
    let core = Core::rebuild(
        pool_list(&cfg),
        settings.lb_class.clone(),
        ns_labels,
        listed.iter().map(|s| &**s),
    );
    tracing::info!(
        services = listed.len(),
        pools = cfg.pools.len(),
        invalid_pools,
        pending = core.pending_len(),
        took = ?t0.elapsed(),
        "allocator rebuilt from existing Service statuses"
    );
    metrics.pending.set(core.pending_len() as i64);
    writer.session_up();

    // 2. Shared state.
    let (retry_tx, retry_rx) = mpsc::unbounded();
    let ctx = Arc::new(Ctx {
        core: Mutex::new(core),
        writer: writer.clone(),
        metrics: metrics.clone(),
        services: svc_reader.clone(),
        retry_tx,
        pools_dirty: Notify::new(),
        pool_decisions: Mutex::new(pool_decisions(&decision)),
        failures: Mutex::new(HashMap::new()),
    });
    ctx.pools_dirty.notify_one();
    // Re-check every listed Service once (the watch has already delivered them).
    ctx.retry(listed.iter().map(|s| service_key(s)));
    drop(listed);

    let (pool_reader, pool_writer) = reflector::store::<IPAddressPool>();

    // 3. Services: the rest of the watch (reflector + deletion tap) → Controller.
    let tap_ctx = ctx.clone();
    let svc_stream = svc_events
        .inspect_ok(move |ev| match ev {
            Event::Delete(s) => tap_ctx.deleted(&service_key(s)),
            Event::InitDone => tap_ctx.sweep(),
            _ => {}
        })
        .applied_objects();
    let controller = Controller::for_stream(svc_stream, svc_reader.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .reconcile_on(retry_rx)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
            future::ready(())
        });

    let config_task = run_config(
        ctx.clone(),
        pool_events,
        l2ads,
        pool_writer,
        decided,
        settings.namespace.clone(),
    );
    let pool_status_task = run_pool_status(ctx.clone(), pool_reader);
    let ns_task = run_namespaces(ctx.clone(), namespaces);

    tokio::select! {
        _ = controller => anyhow::bail!("Service watch ended"),
        r = config_task => r,
        r = pool_status_task => r,
        r = ns_task => r,
    }
}

enum ConfigEvent {
    Pool(Event<IPAddressPool>),
    Ad(Event<L2Advertisement>),
}

async fn run_config(
    ctx: Arc<Ctx>,
    pools: EventStream<IPAddressPool>,
    ads: EventStream<L2Advertisement>,
    pool_writer: reflector::store::Writer<IPAddressPool>,
    mut decided: Decided,
    namespace: String,
) -> anyhow::Result<()> {
    let (ad_reader, ad_writer) = reflector::store::<L2Advertisement>();
    let pool_reader = pool_writer.as_reader();
    let pools = pools
        .map_ok(|ev| ev.modify(|p| p.metadata.managed_fields = None))
        .reflect(pool_writer)
        .map_ok(ConfigEvent::Pool);
    let ads = ads.reflect(ad_writer).map_ok(ConfigEvent::Ad);
    let mut merged = futures::stream::select(pools, ads);
    let (mut pools_ready, mut ads_ready) = (false, false);
    let mut warned_ads: BTreeMap<String, String> = BTreeMap::new();
    while let Some(ev) = merged.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "pool/advertisement watch error (retrying)");
                continue;
            }
        };
        match &ev {
            ConfigEvent::Pool(Event::InitDone) => pools_ready = true,
            ConfigEvent::Ad(Event::InitDone) => ads_ready = true,
            ConfigEvent::Pool(Event::Init | Event::InitApply(_))
            | ConfigEvent::Ad(Event::Init | Event::InitApply(_)) => continue,
            _ => {}
        }
        if !(pools_ready && ads_ready) {
            continue;
        }
        let pool_objs: Vec<IPAddressPool> =
            pool_reader.state().iter().map(|p| (**p).clone()).collect();
        let ad_objs: Vec<L2Advertisement> =
            ad_reader.state().iter().map(|a| (**a).clone()).collect();
        let decision = decide_objects(&pool_objs, &ad_objs, &mut decided);
        let cfg = decision.config();
        let verdicts = pool_decisions(&decision);
        let ad_errors = ad_errors(&decision);
        let frozen = cfg.pools.values().filter(|p| p.frozen).count();
        ctx.metrics
            .config
            .loaded(frozen, decision.validated.errors.len());
        let changed = {
            let mut core = ctx.lock();
            let r = core.set_pools(pool_list(cfg));
            ctx.metrics.pending.set(core.pending_len() as i64);
            r
        };
        if let Some(keys) = changed {
            tracing::info!(
                pools = cfg.pools.len(),
                frozen = cfg.pools.values().filter(|p| p.frozen).count(),
                reconcile = keys.len(),
                "pool configuration changed"
            );
            ctx.retry(keys);
        }
        {
            let mut known = ctx.pool_decisions.lock().unwrap_or_else(|p| p.into_inner());
            for (name, (pd, msg)) in &verdicts {
                let before = known.get(name).map(|(d, m)| (d.state, m));
                if pd.state != PoolState::Accepted && before != Some((pd.state, msg)) {
                    match pd.state {
                        PoolState::Frozen => tracing::warn!(pool = %name, error = %msg,
                            "invalid IPAddressPool frozen: its last valid spec stays in force"),
                        _ => {
                            tracing::warn!(pool = %name, error = %msg, "invalid IPAddressPool ignored")
                        }
                    }
                }
            }
            *known = verdicts;
        }
        ctx.pools_dirty.notify_one();
        // Invalid advertisements: a Warning Event when the message changes.
        for ad in &ad_objs {
            let name = ad.name_any();
            match ad_errors.get(&name) {
                Some(msg) if warned_ads.get(&name) != Some(msg) => {
                    tracing::warn!(l2advertisement = %name, error = %msg, "invalid L2Advertisement ignored");
                    let ev = PlannedEvent::warning("InvalidConfiguration", "Validate", msg.clone());
                    let regarding = object_ref(ad, &namespace);
                    if ctx.writer.publish(&regarding, &ev).await.is_ok() {
                        warned_ads.insert(name, msg.clone());
                    }
                }
                Some(_) => {}
                None => {
                    warned_ads.remove(&name);
                }
            }
        }
    }
    anyhow::bail!("pool/advertisement watch ended")
}

fn object_ref<K: Resource<DynamicType = ()>>(o: &K, namespace: &str) -> ObjectReference {
    let mut r = o.object_ref(&());
    if r.namespace.is_none() {
        r.namespace = Some(namespace.to_string());
    }
    r
}

async fn run_pool_status(ctx: Arc<Ctx>, pools: Store<IPAddressPool>) -> anyhow::Result<()> {
    let mut warned: BTreeMap<String, String> = BTreeMap::new();
    let mut written: BTreeMap<String, crate::crd::IPAddressPoolStatus> = BTreeMap::new();
    let mut retries: Retries<String> = Retries::default();
    let mut known_metrics: Vec<String> = Vec::new();
    loop {
        match retries.next_due() {
            Some(at) => {
                tokio::select! {
                    _ = ctx.pools_dirty.notified() => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => ctx.pools_dirty.notified().await,
        }
        tokio::time::sleep(POOL_STATUS_COALESCE).await;
        let (counts, capacities) = {
            let core = ctx.lock();
            let counts = core.pool_counts();
            let caps: BTreeMap<String, _> = counts
                .keys()
                .filter_map(|n| Some((n.clone(), core.allocator().pool_capacity(n)?)))
                .collect();
            (counts, caps)
        };
        let decisions = ctx
            .pool_decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Metrics.
        for gone in known_metrics.iter().filter(|n| !counts.contains_key(*n)) {
            ctx.metrics.remove_pool(gone);
        }
        for (name, c) in &counts {
            let cap = capacities.get(name).copied().unwrap_or_default();
            ctx.metrics.set_pool(
                name,
                super::metrics::PoolFigures {
                    capacity: cap,
                    in_use_v4: c.assigned_v4,
                    in_use_v6: c.assigned_v6,
                },
            );
        }
        known_metrics = counts.keys().cloned().collect();
        // Statuses and Warning Events, each pool on its own backoff.
        let now = k8s_openapi::jiff::Timestamp::now();
        for pool in pools.state() {
            let name = pool.name_any();
            let Some((decision, errors)) = decisions.get(&name) else {
                continue; // not decided yet
            };
            if decision.uid.is_some() && decision.uid != pool.metadata.uid {
                continue; // decided about an object since replaced
            }
            if !retries.due(&name, Instant::now()) {
                continue;
            }
            let verdict = PoolVerdict::new(decision, errors.clone(), counts.get(&name).copied());
            let want = pools::desired_status(&pool, &verdict, now);
            let mut result = Ok(());
            if !written
                .get(&name)
                .is_some_and(|w| pools::status_equal(w, &want))
            {
                result = match pools::status_patch(&pool, &verdict, now) {
                    Some(patch) => ctx.writer.patch_pool_status(&name, &patch).await,
                    None => Ok(()),
                };
                if result.is_ok() {
                    written.insert(name.clone(), want);
                }
            }
            let message = verdict.message();
            if result.is_ok() && !message.is_empty() && warned.get(&name) != Some(&message) {
                let ev = PlannedEvent::warning("InvalidConfiguration", "Validate", message.clone());
                result = ctx.writer.publish(&pool.object_ref(&()), &ev).await;
                if result.is_ok() {
                    warned.insert(name.clone(), message);
                }
            } else if message.is_empty() {
                warned.remove(&name);
            }
            match result {
                Ok(()) | Err(WriteError::NotFound(_)) => retries.succeeded(&name),
                Err(WriteError::NotLeader) => {}
                Err(e) => {
                    let retry_in = retries.failed(&name, Instant::now());
                    tracing::warn!(pool = %name, error = %e, failures = retries.failures(&name),
                        ?retry_in, "could not write pool status");
                }
            }
        }
        let present: std::collections::BTreeSet<String> =
            pools.state().iter().map(|p| p.name_any()).collect();
        written.retain(|n, _| present.contains(n));
        warned.retain(|n, _| present.contains(n));
        retries.retain(|n| present.contains(n));
    }
}

async fn run_namespaces(ctx: Arc<Ctx>, namespaces: EventStream<Namespace>) -> anyhow::Result<()> {
    let mut events = namespaces;
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "namespace watch error (retrying)");
                continue;
            }
        };
        match ev {
            Event::Apply(ns) | Event::InitApply(ns) => {
                let name = ns.name_any();
                let changed = ctx
                    .lock()
                    .set_namespace_labels(&name, ns.metadata.labels.unwrap_or_default());
                if changed {
                    let keys: Vec<ServiceKey> = ctx
                        .services
                        .state()
                        .iter()
                        .filter(|s| s.namespace().as_deref() == Some(name.as_str()))
                        .map(|s| service_key(s))
                        .collect();
                    tracing::debug!(namespace = %name, services = keys.len(), "namespace labels changed");
                    ctx.retry(keys);
                }
            }
            Event::Delete(ns) => ctx.lock().remove_namespace(&ns.name_any()),
            Event::Init | Event::InitDone => {}
        }
    }
    anyhow::bail!("namespace watch ended")
}

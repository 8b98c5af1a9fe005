//! The speaker (DaemonSet, host network): for every allocated IP exactly one node owns it
//! and answers ARP / NDP for it. A thin shell around the pure election
//! ([`crate::election`]) and the dataplane ([`crate::dataplane`]).
//!
//! | module | what |
//! |---|---|
//! | [`args`] | flags, lease timing |
//! | [`liveness`] | own node Lease (renewal, fencing, release), peers' liveness |
//! | [`heartbeat`] | UDP heartbeats to peers (port 7947), authenticated; rules in [`crate::election::membership`] |
//! | [`claims`] | per-IP owner records (claim Leases) with optimistic concurrency |
//! | [`plan`] | pure core: snapshot → claims to write / confirm, IPs to announce / withdraw, statuses, events, next wakeup |
//! | [`core`] | shell: one reconcile pass — gathers the snapshot from the stores, executes the plan |
//! | [`slim`] | pure: what is decoded of Services, EndpointSlices, Nodes; which changes matter |
//! | [`index`] | pure: those three kinds kept compact, per key; the views of the changed Services |
//! | [`status`] | ServiceL2Status objects |
//! | [`state`], [`publish`] | what the speaker publishes about itself for `ferrolb explain` (a ConfigMap, written on change) |
//! | [`watched`] | the Lease and ServiceL2Status watches, kept per event (no whole objects) |
//! | [`events`] | Events on Services, on change only |
//! | [`metrics`] | speaker metrics |
//! | [`announcer`] | the dataplane as a trait (real one, or a recorder for tests) |
//!
//! API traffic at steady state: one Lease renewal per node per `--retry-period` (one write,
//! [`liveness::OwnLease`]), nothing else; heartbeats go directly between speakers (see docs/ARCHITECTURE.md,
//! *Peer liveness*). Claims, ServiceL2Status, Events and the published state are written only
//! on change; a Service turned LoadBalancer after the first list has its EndpointSlices read
//! once ([`index`] keeps only LoadBalancers' slices).

pub mod announcer;
pub mod args;
pub mod claims;
pub mod config_view;
pub mod core;
pub mod events;
pub mod heartbeat;
pub mod index;
pub mod liveness;
pub mod metrics;
pub mod plan;
pub mod publish;
pub mod slim;
pub mod state;
pub mod status;
pub mod watched;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch, Notify};

pub use args::Args;

use self::announcer::{Announcer, DuplicateResponder};
use self::core::{Clients, Settings, Speaker, Stores};
use self::index::{Index, SharedIndex};
use self::liveness::{OwnLease, Renewals};
use self::metrics::Metrics;
use crate::crd::{IPAddressPool, L2Advertisement, ServiceL2Status};
use crate::election::{ElectionOptions, LeaseClock};

/// Runs `ferrolb speaker` until SIGTERM / SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let clock = args.timing()?;
    let client = crate::runtime::make_client(args.kubeconfig.as_deref()).await?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));

    let excludes = match &args.exclude_interfaces {
        Some(p) => crate::dataplane::iface::ExcludeList::new(p)
            .map_err(|e| anyhow::anyhow!("invalid --exclude-interfaces: {e}"))?,
        None => Default::default(),
    };
    let (dataplane, mut dp_events) = crate::dataplane::Dataplane::start(crate::dataplane::Config {
        excludes,
        backoff: args.garp_schedule.clone(),
        refresh: args.garp_refresh,
        answer_ping: args.answer_ping,
        ..Default::default()
    })
    .await?;
    dataplane.metrics().register(&mut registry);

    let health = crate::telemetry::Health::default();
    let registry = Arc::new(Mutex::new(registry));
    let (addr, _server) =
        crate::telemetry::serve(args.metrics_addr, registry.clone(), health.clone()).await?;
    tracing::info!(%addr, node = %args.node_name, namespace = %args.namespace, "speaker starting");

    let board = state::SharedBoard::default();
    let (dup_tx, dup_rx) = mpsc::channel(256);
    let dup_board = board.clone();
    let (iface_tx, iface_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(ev) = dp_events.recv().await {
            match ev {
                crate::dataplane::Event::DuplicateResponder {
                    ip,
                    our_mac,
                    their_mac,
                    interface,
                } => {
                    let d = DuplicateResponder {
                        ip,
                        interface,
                        their_mac: their_mac.to_string(),
                        our_mac: our_mac.to_string(),
                    };
                    dup_board
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .duplicate(&d, k8s_openapi::jiff::Timestamp::now());
                    let _ = dup_tx.send(d).await;
                }
                _ => {
                    let _ = iface_tx.try_send(());
                }
            }
        }
    });

    let lb_class = crate::class::from_flag(args.lb_class.as_deref());
    let (stores, wake, lease_rx, peer_leases) =
        start_reflectors(client.clone(), &args.namespace, lb_class, clock);
    let (own, renewals) = OwnLease::new(
        client.clone(),
        &args.namespace,
        &args.node_name,
        clock,
        metrics.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (quiet_tx, quiet_rx) = watch::channel(false);
    let lease_task = tokio::spawn(own.run(quiet_rx, stop_rx.clone()));
    let publisher = publish::StatePublisher::new(
        client.clone(),
        &args.namespace,
        &args.node_name,
        state_renderer(board.clone(), dataplane.interfaces_reader()),
        metrics.clone(),
    )
    .with_owner(status::pod_owner(
        args.pod_name.as_deref(),
        args.pod_uid.as_deref(),
    ));
    tokio::spawn(publisher.run(publish::PERIOD, stop_rx.clone()));

    let settings = settings(&args, clock);
    let clients = Clients {
        claims: claims::ClaimApi::new(client.clone(), &args.namespace),
        status: status::StatusApi::new(client.clone(), &args.namespace).with_owner(
            status::pod_owner(args.pod_name.as_deref(), args.pod_uid.as_deref()),
        ),
        events: events::EventSink::new(client.clone(), &args.node_name, metrics.api_errors.clone()),
        leases: Api::namespaced(client.clone(), &args.namespace),
    };
    wait_ready(&stores).await;
    tracing::info!("caches synced");
    adopt_statuses(&clients.status, &stores, &args.node_name);
    health.set_ready(true);
    let mut speaker = Speaker::new(
        settings,
        stores,
        clients,
        dataplane,
        metrics.clone(),
        renewals.clone(),
    )
    .with_board(board)
    .with_quiet_renewals(quiet_tx);
    if !args.no_heartbeats {
        speaker = speaker.with_lease_watch(peer_leases);
    }
    let mut hb_task = None;
    if !args.no_heartbeats {
        let timing = args.mesh_timing()?;
        let socket = heartbeat::bind(args.heartbeat_addr).map_err(|e| {
            anyhow::anyhow!("cannot bind heartbeat socket {}: {e}", args.heartbeat_addr)
        })?;
        // a socket bound to one address receives nothing sent to the group
        let group = args.heartbeat_group.0.filter(|g| {
            let any = args.heartbeat_addr.ip().is_unspecified();
            if !any {
                tracing::warn!(group = %g, addr = %args.heartbeat_addr, "heartbeat group unused: --heartbeat-addr is not a wildcard address");
            }
            any
        });
        let mesh = heartbeat::Mesh::new(&args.node_name, timing, args.heartbeat_addr.port())
            .with_group(group);
        speaker = speaker.with_mesh(mesh.clone());
        hb_task = Some(tokio::spawn(heartbeat::run(
            heartbeat::HeartbeatConfig {
                node: args.node_name.clone(),
                bind: args.heartbeat_addr,
                namespace: args.namespace.clone(),
            },
            socket,
            Api::namespaced(client.clone(), &args.namespace),
            mesh,
            wake.clone(),
            metrics.clone(),
            stop_rx.clone(),
        )));
    } else {
        tracing::warn!("heartbeats disabled: Lease rules only");
    }
    let signal = crate::runtime::shutdown_signal();
    drive(
        &mut speaker,
        Inputs {
            wake: wake.clone(),
            lease_rx,
            renewals,
            dup_rx,
            iface_rx,
        },
        clock,
        signal,
    )
    .await;

    tracing::info!("shutting down: withdrawing, handing claims over, releasing the lease");
    health.set_ready(false);
    speaker.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = lease_task.await;
    if let Some(t) = hb_task {
        let _ = t.await;
    }
    Ok(())
}

/// The published state ([`state::SpeakerState`]) of `board`, with the responder's interfaces.
fn state_renderer(
    board: state::SharedBoard,
    interfaces: impl Fn() -> Vec<crate::dataplane::InterfaceInfo> + Send + Sync + 'static,
) -> publish::StateRenderer {
    Arc::new(move || {
        let nics = interfaces()
            .into_iter()
            .map(|i| state::Nic {
                name: i.name,
                mac: i.mac.to_string(),
            })
            .collect();
        board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state(nics, k8s_openapi::jiff::Timestamp::now())
            .to_json()
    })
}

/// Gives this node's ServiceL2Status objects left by a previous Pod to this speaker's Pod
/// (in the background; a failure only delays their garbage collection: the old owner's
/// deletion removes them and the speaker creates them anew).
fn adopt_statuses(api: &status::StatusApi, stores: &Stores, node: &str) {
    let Some(owner) = api.owner() else {
        tracing::info!("POD_NAME / POD_UID unknown: ServiceL2Status objects get no owner");
        return;
    };
    let names = {
        let book = stores.statuses.lock().unwrap_or_else(|p| p.into_inner());
        status::to_adopt(node, owner, book.all())
    };
    if names.is_empty() {
        return;
    }
    let api = api.clone();
    tokio::spawn(async move {
        for name in names {
            match api.adopt(&name).await {
                Ok(()) => tracing::debug!(%name, "ServiceL2Status adopted by this Pod"),
                Err(e) => tracing::warn!(%name, error = %e, "cannot adopt ServiceL2Status"),
            }
        }
    });
}

/// Event sources of the speaker loop.
pub struct Inputs {
    /// Any store changed (except plain Lease renewals).
    pub wake: Arc<Notify>,
    /// Every Lease event (node Leases and claims), reduced.
    pub lease_rx: mpsc::UnboundedReceiver<watched::LeaseEvent>,
    /// This node's own-Lease renewals.
    pub renewals: Renewals,
    /// Duplicate responders from the dataplane.
    pub dup_rx: mpsc::Receiver<DuplicateResponder>,
    /// Interfaces came or went.
    pub iface_rx: mpsc::Receiver<()>,
}

/// Runs passes whenever something relevant changes, until `stop` completes. Bursts of
/// changes are coalesced (5 ms). Plain renewals of live peers do not reach the loop at all
/// (the Lease watch holds them, [`liveness::QuietRenewals`]; each pass folds them in first),
/// this node's own renewals only move the fencing deadline ([`Speaker::rearm`]), so a
/// speaker at rest runs one pass per lease duration or so: when the oldest renewal the loop
/// has folded in would expire.
pub async fn drive<A: Announcer>(
    speaker: &mut Speaker<A>,
    mut inputs: Inputs,
    clock: LeaseClock,
    stop: impl std::future::Future<Output = ()>,
) {
    let _ = clock; // permission now comes from the speaker (Lease and heartbeat rules)
    tokio::pin!(stop);
    let mut dirty = true;
    let mut next: Option<Instant> = None;
    let mut may = false;
    loop {
        if dirty {
            tokio::time::sleep(Duration::from_millis(5)).await;
            while let Ok(ev) = inputs.lease_rx.try_recv() {
                speaker.lease_event_from(ev, Instant::now());
            }
            next = speaker.reconcile(Instant::now()).await;
            may = speaker.permitted();
            dirty = false;
        }
        let deadline = next
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(60));
        tokio::select! {
            _ = &mut stop => break,
            _ = inputs.wake.notified() => dirty = true,
            Some(ev) = inputs.lease_rx.recv() => {
                if speaker.lease_event_from(ev, Instant::now()) { dirty = true; } else { next = speaker.rearm(); }
            }
            r = inputs.renewals.changed() => {
                if r.is_err() { break; }
                let now_may = speaker.may_announce(Instant::now());
                if now_may != may { dirty = true; } else { next = speaker.rearm(); }
            }
            Some(d) = inputs.dup_rx.recv() => speaker.duplicate_responder(&d),
            Some(()) = inputs.iface_rx.recv() => speaker.interfaces_changed(),
            _ = tokio::time::sleep_until(deadline) => dirty = true,
        }
    }
}

fn reflect<K>(api: Api<K>, config: watcher::Config, wake: Arc<Notify>) -> Store<K>
where
    K: watched::Watchable,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, config).backoff(crate::runtime::watch_backoff()),
    );
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => {}
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying with backoff")
                }
            }
        }
    });
    reader
}

/// A watch of `K` (a slim type of [`slim`]) feeding `index` through `apply`, which says
/// whether the change can alter a decision: only then is the loop woken (a relist wakes it
/// once, when the new list is in place). `wanted` is told when the index wants some
/// Service's slices read ([`Index::take_wanted`]).
fn watch_into<K>(
    api: Api<K>,
    index: SharedIndex,
    wake: Arc<Notify>,
    apply: fn(&mut Index, watcher::Event<K>) -> bool,
    wanted: Option<Arc<Notify>>,
) where
    K: watched::Watchable,
{
    watched::spawn_watch(api, move |ev| {
        let mut ix = index.lock().unwrap_or_else(|p| p.into_inner());
        // Decided once the index holds the change, so a pass it wakes sees it.
        if apply(&mut ix, ev) {
            wake.notify_one();
        }
        if let Some(w) = wanted.as_ref().filter(|_| ix.has_wanted()) {
            w.notify_one();
        }
        true
    });
}

/// Reads the slices of the Services the index wants them for (Services that became
/// LoadBalancers after the Services were listed: their slices were not kept), one list by
/// the `kubernetes.io/service-name` label each, whenever `wanted` is told; a failed read is
/// retried with backoff (100 ms doubling to 30 s). Wakes the loop when a view changed.
fn read_wanted_slices(client: Client, index: SharedIndex, wanted: Arc<Notify>, wake: Arc<Notify>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            wanted.notified().await;
            loop {
                let batch = index
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take_wanted();
                if batch.is_empty() {
                    break;
                }
                for read in batch {
                    let api = Api::<slim::SlimSlice>::namespaced(client.clone(), &read.namespace);
                    let lp = kube::api::ListParams::default().labels(&format!(
                        "{}={}",
                        crate::election::SERVICE_NAME_LABEL,
                        read.name
                    ));
                    let key = read.key.clone();
                    let failed = {
                        let listed = api.list(&lp).await;
                        let mut ix = index.lock().unwrap_or_else(|p| p.into_inner());
                        match listed {
                            Ok(list) => {
                                tracing::debug!(service = %key, slices = list.items.len(), "read the slices of a new LoadBalancer");
                                if ix.fetched(&read, list.items) {
                                    wake.notify_one();
                                }
                                None
                            }
                            Err(e) => {
                                ix.fetch_failed(&read);
                                Some(e)
                            }
                        }
                    };
                    match failed {
                        None => backoff = Duration::from_millis(100),
                        Some(e) => {
                            tracing::warn!(error = %e, service = %key, "reading the slices of a new LoadBalancer failed; retrying with backoff");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
        }
    });
}

/// Starts one watch per kind; returns the stores, the change notifier and the Lease event
/// channel. Services, EndpointSlices and Nodes are decoded as the slim types of [`slim`]
/// into the [`index`] (Services only while this speaker, handling `lb_class`, can announce
/// them), and only their changes that can alter an announcement of this speaker wake the
/// loop.
///
/// A peer's renewal coming within half a lease duration of its previous one is held for the
/// loop to fold in (a live peer's renewal only moves its expiry later). The node Leases and
/// the claims are two watches; the last value returned switches the node Lease watch
/// (false: paused, [`Speaker::with_lease_watch`]).
pub fn start_reflectors(
    client: Client,
    namespace: &str,
    lb_class: Option<String>,
    clock: LeaseClock,
) -> (
    Stores,
    Arc<Notify>,
    mpsc::UnboundedReceiver<watched::LeaseEvent>,
    watch::Sender<bool>,
) {
    let wake = Arc::new(Notify::new());
    let (ltx, lrx) = mpsc::unbounded_channel();
    let cfg = watcher::Config::default;
    let index = Index::shared(lb_class);
    let wanted = Arc::new(Notify::new());
    read_wanted_slices(client.clone(), index.clone(), wanted.clone(), wake.clone());
    watch_into(
        Api::<slim::SlimService>::all(client.clone()),
        index.clone(),
        wake.clone(),
        Index::service,
        Some(wanted),
    );
    watch_into(
        Api::<slim::SlimSlice>::all(client.clone()),
        index.clone(),
        wake.clone(),
        Index::slice,
        None,
    );
    watch_into(
        Api::<slim::SlimNode>::all(client.clone()),
        index.clone(),
        wake.clone(),
        Index::node,
        None,
    );
    let stores = Stores {
        index,
        pools: reflect(
            Api::<IPAddressPool>::namespaced(client.clone(), namespace),
            cfg(),
            wake.clone(),
        ),
        ads: reflect(
            Api::<L2Advertisement>::namespaced(client.clone(), namespace),
            cfg(),
            wake.clone(),
        ),
        leases: watched::Synced::default(),
        statuses: status::SharedStatuses::default(),
        held: liveness::HeldRenewals::default(),
    };
    let (node_leases, claims) = (watched::Synced::default(), watched::Synced::default());
    let (switch, wanted) = watch::channel(true);
    watched::watch_node_leases(
        Api::<watched::SlimLease>::namespaced(client.clone(), namespace),
        ltx.clone(),
        node_leases.clone(),
        // peers hearing everybody renew every quiet period (900 ms by default): held too,
        // with room for latency, and still well within the lease duration
        liveness::QuietRenewals::new(clock.lease_duration() * 3 / 4),
        stores.held.clone(),
        wanted,
    );
    watched::watch_claims(
        Api::<watched::SlimLease>::namespaced(client.clone(), namespace),
        ltx,
        claims.clone(),
    );
    let both = stores.leases.clone();
    tokio::spawn(async move {
        node_leases.wait().await;
        claims.wait().await;
        both.set();
    });
    watched::watch_statuses(
        Api::<ServiceL2Status>::namespaced(client, namespace),
        stores.statuses.clone(),
        wake.clone(),
    );
    (stores, wake, lrx, switch)
}

/// Waits until every store has its initial list.
pub async fn wait_ready(s: &Stores) {
    let index = async {
        while !s.index.lock().unwrap_or_else(|p| p.into_inner()).synced() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = futures::join!(
        index,
        s.pools.wait_until_ready(),
        s.ads.wait_until_ready(),
        s.leases.wait(),
        statuses_synced(&s.statuses),
    );
}

/// Waits until the ServiceL2Status watch has delivered its first list.
async fn statuses_synced(book: &status::SharedStatuses) {
    while !book.lock().unwrap_or_else(|p| p.into_inner()).synced() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The speaker's settings from its flags. `--lb-class` is read as the controller reads it
/// ([`crate::class::from_flag`]): `--lb-class=` means no class.
pub fn settings(args: &Args, clock: LeaseClock) -> Settings {
    Settings {
        node: args.node_name.clone(),
        lb_class: crate::class::from_flag(args.lb_class.as_deref()),
        options: ElectionOptions {
            revertive: args.revertive,
            ignore_exclude_lb: args.ignore_exclude_lb,
        },
        clock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[derive(Parser)]
    struct ControllerCli {
        #[command(flatten)]
        args: crate::controller::Args,
    }

    /// The class the speaker and the controller use for the same flags (asserted equal).
    fn lb_class(flags: &[&str]) -> Option<String> {
        let mut argv = vec!["x", "--node-name", "n"];
        argv.extend_from_slice(flags);
        let a = Cli::try_parse_from(argv).unwrap().args;
        let speaker = settings(&a, a.timing().unwrap()).lb_class;
        let c = ControllerCli::try_parse_from(std::iter::once("x").chain(flags.iter().copied()))
            .unwrap()
            .args;
        let controller = crate::controller::shell::Settings::new(&c).lb_class;
        assert_eq!(speaker, controller, "they disagree on {flags:?}");
        speaker
    }

    #[test]
    fn lb_class_is_read_as_the_controller_reads_it() {
        if std::env::var_os("FERROLB_LB_CLASS").is_some() {
            return; // the environment decides for both
        }
        assert_eq!(lb_class(&[]), None);
        assert_eq!(lb_class(&["--lb-class="]), None);
        assert_eq!(lb_class(&["--lb-class", ""]), None);
        assert_eq!(lb_class(&["--lb-class=ferrolb"]), Some("ferrolb".into()));
    }
}

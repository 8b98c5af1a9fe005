//! The speaker loop against an in-memory API (kube-fake-client) and a recording dataplane.
//! kube-fake-client has no watch: each speaker's reflector stores are refilled from the API
//! before every pass (a relist), which is what a watch converges to.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb::crd::{
    IPAddressPool, IPAddressPoolSpec, L2Advertisement, L2AdvertisementSpec, ServiceL2Status,
};
use ferrolb::election::{ElectionOptions, LeaseClock};
use ferrolb::speaker::announcer::{Call, RecordingAnnouncer};
use ferrolb::speaker::claims::{claim_name, Claim, ClaimApi, WriteOutcome};
use ferrolb::speaker::core::{Clients, Settings, Speaker, Stores};
use ferrolb::speaker::events::EventSink;
use ferrolb::speaker::index::{Index, SharedIndex};
use ferrolb::speaker::liveness::{node_lease_name, HeldRenewals, OwnLease};
use ferrolb::speaker::metrics::Metrics;
use ferrolb::speaker::status::{Observed, SharedStatuses, StatusApi};
use ferrolb::speaker::watched::{LeaseFacts, Synced};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector::{store, store::Writer};
use kube::runtime::watcher;
use kube::Client;
use kube_fake_client::{interceptor, ClientBuilder};
use serde_json::json;
use tokio::sync::watch;

const NS: &str = "metallb-system";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn fake_client() -> Client {
    fake_client_failing_status_of(None).await
}

/// A fake API server whose ServiceL2Status status writes fail (500) for the Service named
/// `failing` (an API server with broken custom-resource status handling).
async fn fake_client_failing_status_of(failing: Option<&'static str>) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    static N: AtomicU32 = AtomicU32::new(0);
    let funcs = interceptor::Funcs::new().patch_status(move |ctx| {
        let svc = ctx.patch["status"]["serviceName"].as_str();
        if failing.is_some() && svc == failing {
            return Err(kube_fake_client::Error::Internal(
                "status handling broken".into(),
            ));
        }
        Ok(None)
    });
    ClientBuilder::new()
        .with_resource::<IPAddressPool>()
        .with_resource::<L2Advertisement>()
        .with_resource::<ServiceL2Status>()
        .with_status_subresource::<Service>()
        .with_interceptor_funcs(funcs.create(|ctx| {
            // kube-fake-client does not implement generateName: emulate it.
            let meta = &ctx.object["metadata"];
            if meta.get("name").is_none_or(|n| n.is_null()) {
                if let Some(prefix) = meta.get("generateName").and_then(|g| g.as_str()) {
                    let mut obj: ServiceL2Status = serde_json::from_value(ctx.object.clone())
                        .map_err(|e| kube_fake_client::Error::Internal(e.to_string()))?;
                    obj.metadata.name =
                        Some(format!("{prefix}{:05}", N.fetch_add(1, Ordering::SeqCst)));
                    let created = ctx.client.create(ctx.namespace, &obj, ctx.params)?;
                    return Ok(Some(serde_json::to_value(created).unwrap()));
                }
            }
            Ok(None)
        }))
        .build()
        .await
        .unwrap()
}

struct Writers {
    index: SharedIndex,
    pools: Writer<IPAddressPool>,
    ads: Writer<L2Advertisement>,
    /// The speaker's ServiceL2Status book (its watch's writer side).
    statuses: SharedStatuses,
    /// Peers' renewals the Lease watch held back from the loop.
    held: HeldRenewals,
}

fn stores() -> (Stores, Writers) {
    let index = Index::shared(None);
    let (pools, wp) = store();
    let (ads, wa) = store();
    let statuses = SharedStatuses::default();
    let held = HeldRenewals::default();
    (
        Stores {
            index: index.clone(),
            pools,
            ads,
            leases: Synced::done(),
            statuses: statuses.clone(),
            held: held.clone(),
        },
        Writers {
            index,
            pools: wp,
            ads: wa,
            statuses,
            held,
        },
    )
}

async fn relist<K>(w: &mut Writer<K>, api: Api<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let items = api.list(&ListParams::default()).await.unwrap().items;
    w.apply_watcher_event(&watcher::Event::Init);
    for o in items {
        w.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
}

/// A relist of the slim kind `K` into the index (as the speaker's watch decodes it).
async fn relist_into<K>(
    index: &SharedIndex,
    api: Api<K>,
    apply: fn(&mut Index, watcher::Event<K>) -> bool,
) where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let items = api.list(&ListParams::default()).await.unwrap().items;
    let mut ix = index.lock().unwrap();
    apply(&mut ix, watcher::Event::Init);
    for o in items {
        apply(&mut ix, watcher::Event::InitApply(o));
    }
    apply(&mut ix, watcher::Event::InitDone);
}

/// One speaker: its stores, its dataplane, its Lease renewals.
struct Node_ {
    name: String,
    client: Client,
    writers: Writers,
    speaker: Speaker<RecordingAnnouncer>,
    dp: RecordingAnnouncer,
    renewed: watch::Sender<Option<Instant>>,
}

fn clock() -> LeaseClock {
    LeaseClock::new(
        Duration::from_secs(2),
        Duration::from_millis(1200),
        Duration::from_millis(300),
    )
    .unwrap()
}

impl Node_ {
    fn new(client: &Client, name: &str, dp: RecordingAnnouncer) -> Self {
        let (st, writers) = stores();
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut reg));
        let (renewed, renewals) = watch::channel(None);
        let speaker = Speaker::new(
            Settings {
                node: name.into(),
                lb_class: None,
                options: ElectionOptions::default(),
                clock: clock(),
            },
            st,
            Clients {
                claims: ClaimApi::new(client.clone(), NS),
                status: StatusApi::new(client.clone(), NS),
                events: EventSink::new(client.clone(), name, metrics.api_errors.clone()),
                leases: Api::namespaced(client.clone(), NS),
            },
            dp.clone(),
            metrics,
            renewals,
        );
        Self {
            name: name.into(),
            client: client.clone(),
            writers,
            speaker,
            dp,
            renewed,
        }
    }

    /// Relists everything, marks the own Lease renewed at `renewed` (None: fenced), runs a pass.
    async fn pass(&mut self, now: Instant, renewed: Option<Instant>) {
        let c = &self.client;
        relist_into(&self.writers.index, Api::all(c.clone()), Index::service).await;
        relist_into(&self.writers.index, Api::all(c.clone()), Index::slice).await;
        relist_into(&self.writers.index, Api::all(c.clone()), Index::node).await;
        relist(&mut self.writers.pools, Api::namespaced(c.clone(), NS)).await;
        relist(&mut self.writers.ads, Api::namespaced(c.clone(), NS)).await;
        // the Lease and ServiceL2Status watches' relists, event by event
        let leases: Vec<Lease> = Api::namespaced(c.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        self.speaker.lease_event(watcher::Event::Init, now);
        for l in &leases {
            self.speaker
                .lease_event(watcher::Event::InitApply(LeaseFacts::of(l)), now);
        }
        self.speaker.lease_event(watcher::Event::InitDone, now);
        let objs: Vec<ServiceL2Status> = Api::namespaced(c.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        {
            let mut book = self.writers.statuses.lock().unwrap();
            book.apply(watcher::Event::Init);
            for o in &objs {
                book.apply(watcher::Event::InitApply(Observed::of(o)));
            }
            book.apply(watcher::Event::InitDone);
        }
        self.renewed.send_replace(renewed);
        self.speaker.reconcile(now).await;
    }

    /// The speaker reports to `board` what it publishes about itself.
    fn with_board(mut self, board: ferrolb::speaker::state::SharedBoard) -> Self {
        self.speaker = self.speaker.with_board(board);
        self
    }

    fn announced(&self) -> BTreeSet<IpAddr> {
        self.dp.announced()
    }
}

async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(&PostParams::default(), obj).await.unwrap()
}

/// Writes (or renews) the node Lease of `node`, as its speaker would.
async fn renew_node_lease(client: &Client, node: &str) {
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    let name = node_lease_name(node);
    let spec = LeaseSpec {
        holder_identity: Some(node.into()),
        renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        lease_duration_seconds: Some(2),
        ..Default::default()
    };
    match api.get_opt(&name).await.unwrap() {
        Some(mut l) => {
            l.spec = Some(spec);
            api.replace(&name, &PostParams::default(), &l)
                .await
                .unwrap();
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(NS.into()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            create(&api, &l).await;
        }
    }
}

async fn setup(client: &Client, nodes: &[&str], interfaces: &[&str]) {
    for n in nodes {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
        create(&Api::all(client.clone()), &node).await;
        renew_node_lease(client, n).await;
    }
    let mut pool = IPAddressPool::new(
        "pool",
        IPAddressPoolSpec {
            addresses: vec!["10.0.0.0/24".into()],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    pool.metadata.namespace = Some(NS.into());
    create(&Api::namespaced(client.clone(), NS), &pool).await;
    let mut ad = L2Advertisement::new(
        "l2",
        L2AdvertisementSpec {
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    ad.metadata.namespace = Some(NS.into());
    create(&Api::namespaced(client.clone(), NS), &ad).await;
}

async fn remove_service(client: &Client, name: &str) {
    Api::<Service>::namespaced(client.clone(), "default")
        .delete(name, &Default::default())
        .await
        .unwrap();
}

async fn add_service(client: &Client, name: &str, lb_ip: &str) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": lb_ip}]}}
    }))
    .unwrap();
    create(&Api::namespaced(client.clone(), "default"), &svc).await;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "nodeName": "node-a"}]
    }))
    .unwrap();
    create(&Api::namespaced(client.clone(), "default"), &slice).await;
}

async fn claim_holder(client: &Client, ipv: IpAddr) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    api.get_opt(&claim_name(ipv))
        .await
        .unwrap()
        .and_then(|l| Claim::from_lease(&l))
        .map(|(_, c)| c.holder.to_string())
}

async fn statuses(client: &Client) -> Vec<ServiceL2Status> {
    Api::<ServiceL2Status>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

async fn events(client: &Client, reason: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    tokio::time::sleep(Duration::from_millis(100)).await; // events are published by tasks
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// node-a and node-b, the Service `web` at 10.0.0.1, one round at the returned instant; the
/// index of the node that announces it.
async fn two_nodes_with_web() -> (Client, Vec<Node_>, Instant, usize) {
    let client = fake_client().await;
    setup(&client, &["node-a", "node-b"], &[]).await;
    add_service(&client, "web", "10.0.0.1").await;
    let mut nodes: Vec<Node_> = ["node-a", "node-b"]
        .iter()
        .map(|n| Node_::new(&client, n, RecordingAnnouncer::new()))
        .collect();
    let t0 = Instant::now();
    round(&mut nodes, t0).await;
    let owner = nodes
        .iter()
        .position(|n| n.announced().contains(&ip("10.0.0.1")))
        .expect("an owner");
    (client, nodes, t0, owner)
}

/// Runs a pass on every node at `now`, all renewed at `now`.
async fn round(nodes: &mut [Node_], now: Instant) {
    for n in nodes.iter_mut() {
        n.pass(now, Some(now)).await;
    }
    // a second pass lets claim winners' stores catch up and losers observe the claim
    for n in nodes.iter_mut() {
        n.pass(now, Some(now)).await;
    }
}

#[tokio::test]
async fn one_owner_status_and_events_written_once() {
    let client = fake_client().await;
    setup(&client, &["node-a", "node-b", "node-c"], &[]).await;
    add_service(&client, "web", "10.0.0.1").await;
    let mut nodes: Vec<Node_> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| Node_::new(&client, n, RecordingAnnouncer::new()))
        .collect();
    let t0 = Instant::now();
    round(&mut nodes, t0).await;

    // MetalLB's choice for 10.0.0.1 among node-a/b/c is node-b (reference §4.2)
    let owners: Vec<&str> = nodes
        .iter()
        .filter(|n| n.announced().contains(&ip("10.0.0.1")))
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(owners, vec!["node-b"]);
    assert_eq!(
        claim_holder(&client, ip("10.0.0.1")).await.as_deref(),
        Some("node-b")
    );

    let st = statuses(&client).await;
    assert_eq!(st.len(), 1, "{st:?}");
    let labels = st[0].metadata.labels.clone().unwrap();
    assert_eq!(labels["metallb.io/node"], "node-b");
    assert_eq!(labels["metallb.io/service-name"], "web");
    assert_eq!(labels["metallb.io/service-namespace"], "default");
    assert!(st[0].metadata.name.as_deref().unwrap().starts_with("l2-"));
    let status = st[0].status.clone().unwrap();
    assert_eq!(status.node, "node-b");
    assert_eq!(status.ips, vec!["10.0.0.1".to_string()]);
    assert_eq!(events(&client, "nodeAssigned").await.len(), 1);

    // steady state: more passes write nothing and call the dataplane no more
    let claim_rv = Api::<Lease>::namespaced(client.clone(), NS)
        .get(&claim_name(ip("10.0.0.1")))
        .await
        .unwrap()
        .metadata
        .resource_version;
    let st_rv = st[0].metadata.resource_version.clone();
    for n in &nodes {
        n.dp.take_calls();
    }
    for i in 1..5 {
        round(&mut nodes, t0 + Duration::from_millis(100 * i)).await;
    }
    for n in &nodes {
        assert_eq!(n.dp.take_calls(), vec![], "{}", n.name);
    }
    let after = Api::<Lease>::namespaced(client.clone(), NS)
        .get(&claim_name(ip("10.0.0.1")))
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(claim_rv, after);
    let st2 = statuses(&client).await;
    assert_eq!(st2.len(), 1);
    assert_eq!(st2[0].metadata.resource_version, st_rv);
    assert_eq!(events(&client, "nodeAssigned").await.len(), 1);
}

#[tokio::test]
async fn crash_failover_is_sticky_and_fenced_owner_goes_quiet() {
    let client = fake_client().await;
    setup(&client, &["node-a", "node-b", "node-c"], &[]).await;
    add_service(&client, "web", "10.0.0.1").await;
    let mut nodes: Vec<Node_> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| Node_::new(&client, n, RecordingAnnouncer::new()))
        .collect();
    let t0 = Instant::now();
    round(&mut nodes, t0).await;
    assert!(nodes[1].announced().contains(&ip("10.0.0.1")));

    // node-b can no longer renew: at the renew deadline it withdraws, while its Lease is
    // still valid in everyone else's eyes (nobody has taken over yet).
    let t_fence = t0 + Duration::from_millis(1200);
    nodes[1].pass(t_fence, Some(t0)).await;
    assert!(nodes[1].announced().is_empty());
    assert_eq!(
        nodes[1].dp.take_calls().last(),
        Some(&Call::Withdraw(ip("10.0.0.1")))
    );
    renew_node_lease(&client, "node-a").await;
    renew_node_lease(&client, "node-c").await;
    for i in [0, 2] {
        nodes[i].pass(t_fence, Some(t_fence)).await;
        assert!(
            nodes[i].announced().is_empty(),
            "{} took over too early",
            nodes[i].name
        );
    }
    // the claim still names node-b: a fenced node writes nothing
    assert_eq!(
        claim_holder(&client, ip("10.0.0.1")).await.as_deref(),
        Some("node-b")
    );

    // lease duration after the last observed renewal: node-b is dead, the next in MetalLB's
    // order (node-a) claims and announces; node-c stays quiet.
    let t_dead = t0 + Duration::from_millis(2001);
    renew_node_lease(&client, "node-a").await;
    renew_node_lease(&client, "node-c").await;
    for i in [0, 2] {
        nodes[i].pass(t_dead, Some(t_dead)).await;
    }
    for i in [0, 2] {
        nodes[i].pass(t_dead, Some(t_dead)).await;
    }
    assert_eq!(
        claim_holder(&client, ip("10.0.0.1")).await.as_deref(),
        Some("node-a")
    );
    assert!(nodes[0].announced().contains(&ip("10.0.0.1")));
    assert!(nodes[2].announced().is_empty());

    // node-b comes back: sticky, the IP stays on node-a.
    for n in ["node-a", "node-b", "node-c"] {
        renew_node_lease(&client, n).await;
    }
    let t_back = t0 + Duration::from_secs(3);
    round(&mut nodes, t_back).await;
    let owners: Vec<&str> = nodes
        .iter()
        .filter(|n| n.announced().contains(&ip("10.0.0.1")))
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(owners, vec!["node-a"]);
    let st = statuses(&client).await;
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0].status.as_ref().unwrap().node, "node-a");
}

#[tokio::test]
async fn restart_within_lease_duration_keeps_ips() {
    let (client, mut nodes, t0, owner) = two_nodes_with_web().await;
    // restart: a brand-new speaker process (empty state) for the owner node
    let name = nodes[owner].name.clone();
    let rv = |c: Option<Claim>| c.map(|c| c.resource_version);
    let claims = ClaimApi::new(client.clone(), NS);
    let before = rv(claims.get(ip("10.0.0.1")).await.unwrap());
    nodes[owner] = Node_::new(&client, &name, RecordingAnnouncer::new());
    let t1 = t0 + Duration::from_millis(800);
    round(&mut nodes, t1).await;
    // the restarted speaker re-asserted its claim before announcing from its fresh cache
    assert_ne!(rv(claims.get(ip("10.0.0.1")).await.unwrap()), before);
    assert!(nodes[owner].announced().contains(&ip("10.0.0.1")));
    assert!(nodes[1 - owner].announced().is_empty());
    assert_eq!(claim_holder(&client, ip("10.0.0.1")).await, Some(name));
    assert_eq!(statuses(&client).await.len(), 1);
}

#[tokio::test]
async fn graceful_shutdown_hands_over_at_once() {
    let (client, mut nodes, t0, owner) = two_nodes_with_web().await;
    let other = 1 - owner;
    nodes[owner].speaker.shutdown().await;
    assert!(nodes[owner].announced().is_empty());
    let succ = nodes[other].name.clone();
    assert_eq!(claim_holder(&client, ip("10.0.0.1")).await, Some(succ));
    // the successor announces on its next pass, long before any lease could expire
    nodes[other]
        .pass(t0 + Duration::from_millis(10), Some(t0))
        .await;
    assert!(nodes[other].announced().contains(&ip("10.0.0.1")));
}

#[tokio::test]
async fn ip_outside_every_pool_is_never_announced() {
    let client = fake_client().await;
    setup(&client, &["node-a"], &[]).await;
    add_service(&client, "stray", "192.168.77.7").await;
    let mut n = Node_::new(&client, "node-a", RecordingAnnouncer::new());
    let t0 = Instant::now();
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().is_empty());
    assert_eq!(claim_holder(&client, ip("192.168.77.7")).await, None);
    assert!(statuses(&client).await.is_empty());
}

#[tokio::test]
async fn missing_interface_gives_one_event_and_no_crash() {
    let client = fake_client().await;
    setup(&client, &["node-a"], &["eth9"]).await;
    add_service(&client, "web", "10.0.0.1").await;
    let dp = RecordingAnnouncer::with_interfaces(&["eth0"]);
    let mut n = Node_::new(&client, "node-a", dp.clone());
    let t0 = Instant::now();
    for i in 0..4 {
        n.pass(t0 + Duration::from_millis(i), Some(t0)).await;
    }
    let failed = events(&client, "announceFailed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].note.as_deref().unwrap().contains("eth9"));
    let st = statuses(&client).await;
    assert_eq!(st[0].status.as_ref().unwrap().interfaces[0].name, "eth9");
    // the interface appears: no new failure event
    dp.set_interfaces(&["eth0", "eth9"]);
    n.speaker.interfaces_changed();
    assert_eq!(events(&client, "announceFailed").await.len(), 1);
}

/// Sets (true) or removes the exclude-from-load-balancers label of Node `name`.
async fn exclude_node(client: &Client, name: &str, excluded: bool) {
    let api: Api<Node> = Api::all(client.clone());
    let mut node = api.get(name).await.unwrap();
    let labels = node.metadata.labels.get_or_insert_with(Default::default);
    if excluded {
        labels.insert(ferrolb::election::EXCLUDE_LB_LABEL.into(), String::new());
    } else {
        labels.remove(ferrolb::election::EXCLUDE_LB_LABEL);
    }
    api.replace(name, &PostParams::default(), &node)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_node_change_reaches_the_next_election() {
    // The speaker keeps its node views between passes: a Node change must still reach them.
    let (client, mut n, t0) = node_a_with_web().await;
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().contains(&ip("10.0.0.1")));
    exclude_node(&client, "node-a", true).await;
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().is_empty(), "an excluded node withdraws");
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().is_empty());
    exclude_node(&client, "node-a", false).await;
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().contains(&ip("10.0.0.1")), "announced again");
}

/// What the speaker publishes about its announcements follows each one as it is made (the
/// speaker tells the board each change, not its whole map each pass): an IP keeps its
/// `since` while it stays announced; a withdrawn one, or all of them when fenced, leave.
#[tokio::test]
async fn the_published_state_follows_each_announcement() {
    let (client, n, t0) = node_a_with_web().await;
    let board = ferrolb::speaker::state::SharedBoard::default();
    let mut n = n.with_board(board.clone());
    let state = || {
        let s = board
            .lock()
            .unwrap()
            .state(vec![], k8s_openapi::jiff::Timestamp::now());
        let ips: Vec<(String, String)> = s
            .announcing
            .iter()
            .map(|a| (a.ip.clone(), a.since.clone()))
            .collect();
        (s.may_announce, ips)
    };
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    let (may, ips) = state();
    assert!(may);
    assert_eq!(ips.len(), 1);
    assert_eq!(ips[0].0, "10.0.0.1");
    // `since` has second precision: a later announcement gets a later one
    tokio::time::sleep(Duration::from_millis(1100)).await;
    add_service(&client, "api", "10.0.0.2").await;
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    let (_, both) = state();
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both[0], ips[0], "10.0.0.1 keeps its since");
    assert_eq!(both[1].0, "10.0.0.2");
    assert_ne!(both[1].1, ips[0].1);
    remove_service(&client, "web").await;
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    assert_eq!(state().1, both[1..], "the withdrawn IP left");
    // fenced: every IP withdrawn, and the state says so
    let late = t0 + Duration::from_secs(5);
    n.pass(late, Some(t0)).await;
    assert!(n.announced().is_empty());
    assert_eq!(state(), (false, vec![]));
}

#[tokio::test]
async fn service_removal_withdraws_and_cleans_up() {
    let (client, mut n, t0) = node_a_with_web().await;
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().contains(&ip("10.0.0.1")));
    assert_eq!(statuses(&client).await.len(), 1);
    remove_service(&client, "web").await;
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().is_empty());
    assert!(statuses(&client).await.is_empty());
    assert_eq!(claim_holder(&client, ip("10.0.0.1")).await, None);
}

#[tokio::test]
async fn concurrent_claims_have_exactly_one_winner() {
    let client = fake_client().await;
    let a = ClaimApi::new(client.clone(), NS);
    let b = ClaimApi::new(client.clone(), NS);
    let rec = |h: &str, e| ferrolb::election::OwnerRecord {
        holder: h.into(),
        epoch: e,
    };
    let ipv = ip("10.0.0.42");
    let (rec_a, rec_b) = (rec("a", 1), rec("b", 1));
    let (ra, rb) = tokio::join!(a.write(ipv, None, &rec_a), b.write(ipv, None, &rec_b));
    let won: Vec<bool> = [ra.unwrap(), rb.unwrap()]
        .iter()
        .map(|r| matches!(r, WriteOutcome::Won(_)))
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    // both now try to replace the same version: one wins, the stale one loses
    let cur = a.get(ipv).await.unwrap().unwrap();
    let first = a.write(ipv, Some(&cur), &rec("a", 2)).await.unwrap();
    let second = b.write(ipv, Some(&cur), &rec("b", 2)).await.unwrap();
    assert!(matches!(first, WriteOutcome::Won(_)));
    assert_eq!(second, WriteOutcome::Lost);
    let now = a.get(ipv).await.unwrap().unwrap();
    assert_eq!(&*now.holder, "a");
    assert_eq!(now.record().epoch, 2);
}

#[tokio::test]
async fn own_lease_renews_and_releases() {
    let client = fake_client().await;
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut reg));
    let (own, renewals) = OwnLease::new(client.clone(), NS, "node-a", clock(), metrics);
    let before = Instant::now();
    assert!(own.renew_once().await);
    let f = *renewals.borrow();
    assert!(f.unwrap() >= before);
    assert!(clock().may_announce(f, Instant::now()));
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    let l = api.get("ferrolb-speaker-node-a").await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("node-a"));
    let rv1 = api
        .get("ferrolb-speaker-node-a")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert!(own.renew_once().await);
    let rv2 = api
        .get("ferrolb-speaker-node-a")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_ne!(rv1, rv2, "a renewal is a write peers can observe");
    own.release().await;
    assert_eq!(*renewals.borrow(), None);
    let l = api.get("ferrolb-speaker-node-a").await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some(""));
}

/// Nothing but liveness travels with the renewals: a Lease carrying the state annotation
/// an earlier speaker published on it loses it at the first renewal, in the renewal's own
/// patch (one write per renewal, as without it).
#[tokio::test]
async fn a_renewal_removes_the_state_an_earlier_speaker_left_on_the_lease() {
    use ferrolb::speaker::state::SPEAKER_STATE_ANNOTATION;
    let client = fake_client().await;
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    let old: Lease = serde_json::from_value(json!({
        "metadata": {"name": "ferrolb-speaker-node-a",
                     "annotations": {SPEAKER_STATE_ANNOTATION: "{\"mayAnnounce\":true}",
                                     "kept": "yes"}},
        "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 2,
                 "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                     k8s_openapi::jiff::Timestamp::now())}
    }))
    .unwrap();
    api.create(&PostParams::default(), &old).await.unwrap();
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut reg));
    let (own, _renewals) = OwnLease::new(client.clone(), NS, "node-a", clock(), metrics);
    let read = || async {
        let l = api.get("ferrolb-speaker-node-a").await.unwrap();
        let ann = l.metadata.annotations.unwrap_or_default();
        let rv: u64 = l.metadata.resource_version.unwrap().parse().unwrap();
        (ann, rv)
    };
    let (_, rv0) = read().await;
    assert!(own.renew_once().await);
    let (ann, rv1) = read().await;
    assert!(!ann.contains_key(SPEAKER_STATE_ANNOTATION), "{ann:?}");
    assert_eq!(ann.get("kept").map(String::as_str), Some("yes"));
    assert!(own.renew_once().await);
    let (ann, rv2) = read().await;
    assert!(!ann.contains_key(SPEAKER_STATE_ANNOTATION));
    // one write per renewal, the one that removed the annotation included
    assert_eq!((rv1 - rv0, rv2 - rv1), (1, 1), "{rv0} {rv1} {rv2}");
}

/// The published state has a ConfigMap of its own, written when the state changes and
/// only then (at most once per period), owned by the speaker's Pod; a failing write is
/// retried with backoff and the state lands once the API server takes it.
#[tokio::test]
async fn the_state_is_published_in_its_configmap_on_change_only() {
    use ferrolb::speaker::publish::StatePublisher;
    use ferrolb::speaker::state::{state_selector, STATE_KEY};
    use ferrolb_lab::apiserver::faults::FaultSpec;
    use k8s_openapi::api::core::v1::ConfigMap;

    let (srv, client) = recording_server().await;
    let writes = || {
        audited(&srv, "configmaps", None)
            .into_iter()
            .filter(|(verb, _)| !matches!(verb.as_str(), "get" | "list" | "watch"))
            .collect::<Vec<_>>()
    };
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut reg));
    let published = Arc::new(std::sync::Mutex::new("A".to_string()));
    let p = published.clone();
    let owner = ferrolb::speaker::status::pod_owner(Some("speaker-x"), Some("uid-1"));
    let publisher = StatePublisher::new(
        client.clone(),
        NS,
        "node-a",
        Arc::new(move || p.lock().unwrap().clone()),
        metrics.clone(),
    )
    .with_owner(owner);
    let (stop_tx, stop_rx) = watch::channel(false);
    let period = Duration::from_millis(50);
    let task = tokio::spawn(publisher.run(period, stop_rx));
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let data = || async {
        api.get_opt("ferrolb-speaker-node-a")
            .await
            .unwrap()
            .and_then(|cm| cm.data)
            .and_then(|d| d.get(STATE_KEY).cloned())
    };
    wait_until(|| async { data().await.as_deref() == Some("A") }).await;
    // ten periods unchanged: no further write (a patch that found nothing, then the create)
    tokio::time::sleep(period * 10).await;
    assert_eq!(
        writes(),
        vec![("patch".to_string(), 404), ("create".to_string(), 201)]
    );
    let cm = api.get("ferrolb-speaker-node-a").await.unwrap();
    assert_eq!(cm.metadata.owner_references.unwrap()[0].name, "speaker-x");
    let listed = api
        .list(&ListParams::default().labels(&state_selector()))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    // a change is one patch
    *published.lock().unwrap() = "B".into();
    wait_until(|| async { data().await.as_deref() == Some("B") }).await;
    tokio::time::sleep(period * 4).await;
    assert_eq!(writes().len(), 3);
    assert_eq!(writes()[2], ("patch".to_string(), 200));
    // the API server refuses twice: retried, and the state lands
    srv.faults()
        .add(
            FaultSpec::fail(500)
                .verb("patch")
                .resource("configmaps")
                .times(2),
        )
        .unwrap();
    *published.lock().unwrap() = "C".into();
    wait_until(|| async { data().await.as_deref() == Some("C") }).await;
    let w = writes();
    assert_eq!(
        w[3..],
        [
            ("patch".to_string(), 500),
            ("patch".to_string(), 500),
            ("patch".to_string(), 200)
        ],
        "{w:?}"
    );
    stop_tx.send(true).unwrap();
    assert_eq!(task.await.unwrap().as_deref(), Some("C"));
}

/// Status writes are informational: a ServiceL2Status write that keeps failing delays
/// neither a takeover nor the status of any other Service.
#[tokio::test]
async fn failing_status_writes_delay_neither_failover_nor_other_statuses() {
    let client = fake_client_failing_status_of(Some("bad")).await;
    setup(&client, &["node-a", "node-b"], &[]).await;
    add_service(&client, "web", "10.0.0.1").await;
    add_service(&client, "bad", "10.0.0.2").await;
    add_service(&client, "ok", "10.0.0.3").await;
    // node-b owns web; node-a owns bad (whose status never gets written) and ok
    let claims = ClaimApi::new(client.clone(), NS);
    let rec = |h: &str| ferrolb::election::OwnerRecord {
        holder: h.into(),
        epoch: 1,
    };
    for (ipv, holder) in [
        ("10.0.0.1", "node-b"),
        ("10.0.0.2", "node-a"),
        ("10.0.0.3", "node-a"),
    ] {
        claims.write(ip(ipv), None, &rec(holder)).await.unwrap();
    }
    let mut a = Node_::new(&client, "node-a", RecordingAnnouncer::new());
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    a.pass(t0, Some(t0)).await;
    let want: BTreeSet<IpAddr> = [ip("10.0.0.2"), ip("10.0.0.3")].into();
    assert_eq!(a.announced(), want);
    // bad's status failed; ok's was still written
    let written = |st: &[ServiceL2Status], svc: &str| {
        st.iter().any(|o| {
            o.status
                .as_ref()
                .is_some_and(|s| s.service_name == svc && s.node == "node-a")
        })
    };
    let st = statuses(&client).await;
    assert!(!written(&st, "bad"), "{st:?}");
    assert!(written(&st, "ok"), "{st:?}");
    // bad keeps failing at every retry while node-b renews, then node-b crashes (its last
    // renewal seen at t0 + 1.5 s)
    for t in [100, 300, 700, 1500] {
        renew_node_lease(&client, "node-b").await;
        a.pass(t0 + ms(t), Some(t0 + ms(t))).await;
    }
    a.pass(t0 + ms(3100), Some(t0 + ms(3100))).await;
    assert!(
        !a.announced().contains(&ip("10.0.0.1")),
        "node-b still alive"
    );
    // the first pass after node-b's Lease expires takes web over at once
    let t_dead = t0 + ms(3501);
    a.pass(t_dead, Some(t_dead)).await;
    assert!(a.announced().contains(&ip("10.0.0.1")));
    assert_eq!(
        claim_holder(&client, ip("10.0.0.1")).await.as_deref(),
        Some("node-a")
    );
    a.pass(t_dead + ms(1), Some(t_dead)).await;
    let st = statuses(&client).await;
    assert!(written(&st, "web"), "{st:?}");
    assert!(!written(&st, "bad"), "{st:?}");
}

/// A heartbeat mesh for `node` with `timing`, listening on a loopback socket with a test
/// key: the mesh, the key its peers sign with, and the address they send to.
fn listening_mesh(
    node: &str,
    timing: ferrolb::election::membership::MeshTiming,
) -> (
    ferrolb::speaker::heartbeat::Mesh,
    ferrolb::election::membership::HmacKey,
    std::net::SocketAddr,
) {
    use ferrolb::speaker::heartbeat::{bind, Mesh};
    let key = ferrolb::election::membership::HmacKey::new(&[7u8; 32]).unwrap();
    let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let to = socket.local_addr().unwrap();
    let mesh = Mesh::new(node, timing, to.port());
    let mut reg = prometheus_client::registry::Registry::default();
    mesh.listen(
        &socket,
        key.clone(),
        Arc::new(Metrics::new(&mut reg)),
        Arc::new(tokio::sync::Notify::new()),
    )
    .unwrap();
    (mesh, key, to)
}

/// A sender of the peers' heartbeats to `to`, signed with `key`: each call sends one
/// heartbeat from each node named, with the next sequence number.
fn peer_heartbeats(
    key: ferrolb::election::membership::HmacKey,
    to: std::net::SocketAddr,
) -> impl FnMut(&[&str]) {
    let peers = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seq = 0;
    move |nodes: &[&str]| {
        seq += 1;
        let sent_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for node in nodes {
            let hb = ferrolb::election::membership::Heartbeat {
                node: node.to_string(),
                incarnation: 1_700_000_000_000,
                seq,
                sent_unix_ms,
                flags: 0,
            };
            peers.send_to(&hb.encode(&key), to).unwrap();
        }
    }
}

/// After a stall of the speaker's process longer than the fence time, heartbeats its peers
/// kept sending meanwhile sit unread on the socket: the speaker reads them before judging
/// anyone silent, so it keeps its permission (it used to fence itself until the heartbeat
/// task ran).
#[tokio::test]
async fn heartbeats_queued_during_a_stall_are_read_before_judging() {
    use ferrolb::election::membership::MeshTiming;

    let client = fake_client().await;
    setup(&client, &["node-a", "node-b", "node-c"], &[]).await;
    let timing = MeshTiming::default();
    let (mesh, key, to) = listening_mesh("node-a", timing);
    let mut a = Node_::new(&client, "node-a", RecordingAnnouncer::new());
    let (quiet_tx, quiet) = tokio::sync::watch::channel(false);
    a.speaker = a
        .speaker
        .with_mesh(mesh.clone())
        .with_quiet_renewals(quiet_tx);

    // Peers b and c, sending signed heartbeats to node-a (nothing else reads its socket).
    let mut send = peer_heartbeats(key, to);
    let mut send_both = || send(&["node-b", "node-c"]);

    send_both();
    // The heartbeat task reads them.
    while mesh.drain() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    a.pass(t0, Some(t0)).await;
    assert!(
        a.speaker.may_announce(Instant::now()),
        "hears both peers, Lease fresh"
    );
    assert!(
        *quiet.borrow(),
        "hears every member of three: its Lease renewals may slow to the quiet period"
    );

    // The process stalls longer than the fence time; the peers keep sending meanwhile.
    let stall = timing.fence_after + Duration::from_millis(150);
    let until = Instant::now() + stall;
    while Instant::now() < until {
        send_both();
        std::thread::sleep(timing.interval);
    }
    // The first evaluation after the stall hears both peers: no fence.
    assert!(
        a.speaker.may_announce(Instant::now()),
        "judged the peers silent with their heartbeats queued"
    );
    // Without new heartbeats, silence is judged as before.
    std::thread::sleep(stall);
    assert!(!a.speaker.may_announce(Instant::now()), "fenced on silence");
    let now = Instant::now();
    a.pass(now, Some(now)).await;
    assert!(
        !*quiet.borrow(),
        "its peers silent, it needs its Lease fresh: renewals every retry period"
    );
}

/// A speaker hearing every member of three pauses its watch of the peers' node Leases once
/// that has lasted a lease duration, and resumes it as soon as a member falls silent or a
/// node that is no member is heard; paused for longer than a lease duration, it keeps its
/// permission.
#[tokio::test]
async fn the_peers_lease_watch_pauses_while_every_member_is_heard() {
    use ferrolb::election::membership::MeshTiming;
    use ferrolb::speaker::heartbeat::Mesh;

    let client = fake_client().await;
    setup(&client, &["node-a", "node-b", "node-c"], &[]).await;
    let timing = MeshTiming::default();
    let (mesh, key, to) = listening_mesh("node-a", timing);
    let mut a = Node_::new(&client, "node-a", RecordingAnnouncer::new());
    let (switch, watched) = tokio::sync::watch::channel(true);
    a.speaker = a.speaker.with_mesh(mesh.clone()).with_lease_watch(switch);

    let mut send = peer_heartbeats(key, to);
    // Heartbeats every interval for `dur`, a pass (Leases relisted, unchanged) after each.
    async fn heard_for(
        a: &mut Node_,
        mesh: &Mesh,
        send: &mut impl FnMut(&[&str]),
        nodes: &[&str],
        dur: Duration,
    ) {
        let until = Instant::now() + dur;
        while Instant::now() < until {
            send(nodes);
            tokio::time::sleep(Duration::from_millis(100)).await;
            mesh.drain();
            let now = Instant::now();
            a.pass(now, Some(now)).await;
        }
    }

    let both = ["node-b", "node-c"];
    let t0 = Instant::now();
    heard_for(&mut a, &mesh, &mut send, &both, Duration::from_millis(1500)).await;
    assert!(
        *watched.borrow(),
        "paused before hearing everybody for a lease duration"
    );
    assert!(a.speaker.watches_peer_leases());
    heard_for(&mut a, &mesh, &mut send, &both, Duration::from_millis(900)).await;
    assert!(
        !*watched.borrow(),
        "every member heard for a lease duration: paused"
    );
    assert!(!a.speaker.watches_peer_leases());
    // Paused for longer than a lease duration (the test relists the peers' Leases
    // unchanged, as they look to a watch that saw none of their renewals).
    heard_for(&mut a, &mesh, &mut send, &both, Duration::from_millis(2300)).await;
    assert!(!*watched.borrow());
    let now = Instant::now();
    assert!(a.speaker.may_announce(now));
    assert!(t0.elapsed() > Duration::from_secs(4));

    // node-c falls silent: resumed once it is judged silent (the fence time)
    heard_for(&mut a, &mesh, &mut send, &["node-b"], timing.fence_after).await;
    heard_for(
        &mut a,
        &mesh,
        &mut send,
        &["node-b"],
        Duration::from_millis(200),
    )
    .await;
    assert!(*watched.borrow(), "a member silent: the watch resumes");
    assert!(
        a.speaker.may_announce(Instant::now()),
        "a majority, own Lease fresh"
    );

    // back to everybody: paused again a lease duration later
    heard_for(&mut a, &mesh, &mut send, &both, Duration::from_millis(2300)).await;
    assert!(!*watched.borrow(), "paused again");
    // a node that is no member (a new speaker: its Lease is not known yet) is heard
    heard_for(
        &mut a,
        &mesh,
        &mut send,
        &["node-b", "node-c", "node-d"],
        Duration::from_millis(150),
    )
    .await;
    assert!(*watched.borrow(), "a stranger heard: the watch resumes");
}

/// The heartbeat targets follow the members and their Nodes' InternalIPs: a changed address,
/// a member gone, a member come (its Node unchanged) are in the targets after the next pass; a pass with neither
/// a member nor a Node changed leaves the very same targets (not made again).
#[tokio::test]
async fn heartbeat_targets_follow_members_and_node_addresses() {
    let ms = |m: u64| Duration::from_millis(m);
    use ferrolb::election::membership::{HmacKey, MeshTiming};
    use ferrolb::speaker::heartbeat::{bind, Mesh};

    let client = fake_client().await;
    setup(&client, &["node-a"], &[]).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let with_ip = |name: &str, addr: &str| -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": addr}]}
        }))
        .unwrap()
    };
    for (n, addr) in [("node-b", "192.0.2.2"), ("node-c", "192.0.2.3")] {
        create(&nodes, &with_ip(n, addr)).await;
        renew_node_lease(&client, n).await;
    }
    // a Node without a speaker yet: not a member
    create(&nodes, &with_ip("node-d", "2001:db8::4")).await;
    let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mesh = Mesh::new("node-a", MeshTiming::default(), 7947);
    let mut reg = prometheus_client::registry::Registry::default();
    mesh.listen(
        &socket,
        HmacKey::new(&[7u8; 32]).unwrap(),
        Arc::new(Metrics::new(&mut reg)),
        Arc::new(tokio::sync::Notify::new()),
    )
    .unwrap();
    let mut a = Node_::new(&client, "node-a", RecordingAnnouncer::new());
    a.speaker = a.speaker.with_mesh(mesh.clone());
    let targets = || {
        let t = mesh.lock().targets.clone();
        let v: Vec<(String, String)> = t.iter().map(|(n, a)| (n.clone(), a.to_string())).collect();
        (t, v)
    };
    let pair = |n: &str, a: &str| (n.to_string(), a.to_string());

    let t0 = Instant::now();
    a.pass(t0, Some(t0)).await;
    let (first, v) = targets();
    assert_eq!(
        v,
        vec![
            pair("node-b", "192.0.2.2:7947"),
            pair("node-c", "192.0.2.3:7947")
        ],
        "every member with an InternalIP but itself (node-a has none)"
    );
    a.pass(t0 + ms(10), Some(t0)).await;
    assert!(
        Arc::ptr_eq(&first, &targets().0),
        "nothing changed: the same targets"
    );

    // node-b's address changes
    let mut b = nodes.get("node-b").await.unwrap();
    b.status = with_ip("node-b", "192.0.2.12").status;
    nodes
        .replace_status("node-b", &PostParams::default(), &b)
        .await
        .unwrap();
    a.pass(t0 + ms(20), Some(t0)).await;
    assert_eq!(
        targets().1,
        vec![
            pair("node-b", "192.0.2.12:7947"),
            pair("node-c", "192.0.2.3:7947")
        ]
    );

    // node-c's speaker goes (its Lease deleted; its Node stays)
    Api::<Lease>::namespaced(client.clone(), NS)
        .delete(&node_lease_name("node-c"), &Default::default())
        .await
        .unwrap();
    a.pass(t0 + ms(30), Some(t0)).await;
    assert_eq!(targets().1, vec![pair("node-b", "192.0.2.12:7947")]);

    // node-d's speaker starts on a Node that was there all along
    renew_node_lease(&client, "node-d").await;
    a.pass(t0 + ms(40), Some(t0)).await;
    assert_eq!(
        targets().1,
        vec![
            pair("node-b", "192.0.2.12:7947"),
            pair("node-d", "[2001:db8::4]:7947")
        ]
    );
}

/// A change of the pools reaches the next pass, and only the next: the IP leaves the pool,
/// it is withdrawn and stays so while nothing changes; it comes back into it, it is
/// announced again.
#[tokio::test]
async fn a_pool_change_reaches_the_next_pass() {
    let (client, mut n, t0) = node_a_with_web().await;
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), NS);
    let set_pool = |addrs: &'static str| {
        let pools = pools.clone();
        async move {
            let mut p = pools.get("pool").await.unwrap();
            p.spec.addresses = vec![addrs.into()];
            pools
                .replace("pool", &PostParams::default(), &p)
                .await
                .unwrap();
        }
    };
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().contains(&ip("10.0.0.1")));

    set_pool("10.9.0.0/24").await;
    n.pass(t0 + Duration::from_millis(10), Some(t0)).await;
    assert!(n.announced().is_empty(), "10.0.0.1 is in no pool");
    n.pass(t0 + Duration::from_millis(20), Some(t0)).await;
    assert!(n.announced().is_empty());

    set_pool("10.0.0.0/24").await;
    n.pass(t0 + Duration::from_millis(30), Some(t0)).await;
    n.pass(t0 + Duration::from_millis(40), Some(t0)).await;
    assert!(n.announced().contains(&ip("10.0.0.1")), "back in its pool");
}

/// A speaker at rest runs no pass: its own Lease renewals only move the fencing deadline
/// its next pass is due at ([`Speaker::rearm`]); once they stop, that deadline comes and
/// the pass it runs withdraws.
#[tokio::test]
async fn renewals_move_the_fencing_deadline_without_a_pass() {
    let (client, mut n, t0) = node_a_with_web().await;
    n.pass(t0, Some(t0)).await;
    n.pass(t0, Some(t0)).await;
    assert!(n.announced().contains(&ip("10.0.0.1")));
    n.dp.take_calls();
    let due = n
        .speaker
        .rearm()
        .expect("announcing: the fencing deadline is due");
    assert!(due > t0);
    // each renewal (published by the Lease task, then seen in the Lease watch) moves it
    // by as much, and calls nothing
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    for k in 1..=5u64 {
        let r = t0 + Duration::from_millis(300 * k);
        n.renewed.send_replace(Some(r));
        renew_node_lease(&client, "node-a").await;
        let own = leases.get(&node_lease_name("node-a")).await.unwrap();
        assert!(!n.speaker.observe_lease(&own, r), "a renewal needs no pass");
        assert_eq!(n.speaker.rearm(), Some(due + (r - t0)));
    }
    assert_eq!(n.dp.take_calls(), vec![]);
    // renewals stop: the pass due at the deadline finds the Lease stale and withdraws
    let last = t0 + Duration::from_millis(1500);
    let due = n.speaker.rearm().unwrap();
    n.pass(due, Some(last)).await;
    assert!(n.announced().is_empty());
}

/// A renewal writes only over the Lease it read: when another writer changes the Lease
/// between the renewal's read and its write, the write is refused (409) instead of renewing
/// over a change it never saw, and the next attempt reads again and renews.
#[tokio::test]
async fn a_renewal_does_not_write_over_a_lease_changed_since_it_read_it() {
    use ferrolb_lab::apiserver::faults::FaultSpec;
    use kube::api::{Patch, PatchParams};

    let (srv, client) = recording_server().await;
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut reg));
    let (own, _renewals) = OwnLease::new(client.clone(), NS, "node-a", clock(), metrics);
    assert!(own.renew_once().await, "created");
    assert!(own.renew_once().await, "renewed");
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    let name = node_lease_name("node-a");
    let renew_time = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let before = renew_time(&api.get(&name).await.unwrap());
    // the next renewal's write arrives 300 ms late (within its 600 ms bound); meanwhile
    // another writer changes the Lease
    srv.faults()
        .add(
            FaultSpec::delay(Duration::from_millis(300))
                .verb("patch")
                .resource("leases")
                .times(1),
        )
        .unwrap();
    let other = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let change = json!({"metadata": {"labels": {"changed-by": "another-writer"}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&change))
            .await
            .unwrap();
    };
    let (renewed, ()) = tokio::join!(own.renew_once(), other);
    assert!(!renewed, "renewed over a change it never read");
    let now = api.get(&name).await.unwrap();
    assert_eq!(renew_time(&now), before, "the late write changed nothing");
    assert_eq!(now.metadata.labels.unwrap()["changed-by"], "another-writer");
    // the next attempt reads the changed Lease and renews it
    assert!(own.renew_once().await);
    assert_ne!(renew_time(&api.get(&name).await.unwrap()), before);
}

/// The Lease watch's events alone keep the claims: the echo of this speaker's own claim
/// write changes nothing (no pass), a claim written by another node does (a pass), the
/// same event twice only once; a relist that no longer lists a claim forgets it.
#[tokio::test]
async fn claim_events_wake_a_pass_only_when_the_claim_changes() {
    use ferrolb::speaker::watched::LeaseFacts;
    let (client, mut n, t0) = node_a_with_web().await;
    // the first pass writes the claim (and announces it): its echo needs no pass
    n.pass(t0, Some(t0)).await;
    assert_eq!(
        claim_holder(&client, ip("10.0.0.1")).await.as_deref(),
        Some("node-a")
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let mut own = leases.get(&claim_name(ip("10.0.0.1"))).await.unwrap();
    let echo = watcher::Event::Apply(LeaseFacts::of(&own));
    assert!(!n.speaker.lease_event(echo, t0), "our own write");
    // another node takes it over
    own.spec.as_mut().unwrap().holder_identity = Some("node-b".into());
    let theirs = leases
        .replace(&claim_name(ip("10.0.0.1")), &PostParams::default(), &own)
        .await
        .unwrap();
    let ev = || watcher::Event::Apply(LeaseFacts::of(&theirs));
    assert!(n.speaker.lease_event(ev(), t0));
    assert!(!n.speaker.lease_event(ev(), t0), "seen already");
    // a relist without it: gone
    assert!(!n.speaker.lease_event(watcher::Event::Init, t0));
    assert!(n.speaker.lease_event(watcher::Event::InitDone, t0));
    assert!(!n
        .speaker
        .lease_event(watcher::Event::Delete(LeaseFacts::of(&theirs)), t0));
}

/// In steady state a renewal is one API request: a merge patch conditioned on the
/// resourceVersion the previous write returned. The Lease is read again only after a
/// failed write (here: a conflict with another writer), and `run` renews once per retry
/// period. Counted from the embedded server's request records.
#[tokio::test]
async fn a_steady_state_renewal_is_one_request_per_retry_period() {
    use kube::api::{Patch, PatchParams};

    let (srv, client) = recording_server().await;
    let name = node_lease_name("node-a");
    // (verb, code) of every request on this node's Lease from the `from`-th on
    let requests = |from: usize| -> Vec<(String, u16)> {
        audited(&srv, "leases", Some(&name))
            .into_iter()
            .skip(from)
            .collect()
    };
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut reg));
    let (own, mut renewals) = OwnLease::new(client.clone(), NS, "node-a", clock(), metrics);
    assert!(own.renew_once().await, "created");
    let mut seen = requests(0).len();
    let patch = || ("patch".to_string(), 200);
    // steady state: one patch per renewal
    for k in 0..10 {
        assert!(own.renew_once().await);
        assert_eq!(requests(seen), vec![patch()], "renewal {k}");
        seen += 1;
    }
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    // another writer changes the Lease: the next renewal is refused, the one after reads
    // the Lease again and renews, and the next is one patch again
    let change = json!({"metadata": {"labels": {"changed-by": "another-writer"}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    seen = requests(0).len();
    assert!(!own.renew_once().await);
    assert_eq!(requests(seen), vec![("patch".to_string(), 409)]);
    seen += 1;
    assert!(own.renew_once().await);
    assert_eq!(requests(seen), vec![("get".to_string(), 200), patch()]);
    seen += 2;
    assert!(own.renew_once().await);
    assert_eq!(requests(seen), vec![patch()]);
    // the renewal loop: one patch per retry period
    let (stop_tx, stop_rx) = watch::channel(false);
    let (quiet_tx, quiet_rx) = watch::channel(false);
    let task = tokio::spawn(own.run(quiet_rx, stop_rx));
    let period = clock().retry_period();
    // the first tick renews at once; count from the renewal after it
    renewals.changed().await.unwrap();
    renewals.changed().await.unwrap();
    let (from, t0) = (requests(0).len(), Instant::now());
    tokio::time::sleep(period * 10).await;
    let window = requests(from);
    let periods = t0.elapsed().as_millis() / period.as_millis();
    assert!(
        window.iter().all(|r| *r == patch()),
        "only renewal patches: {window:?}"
    );
    // at most one per period (the interval delays a late tick, it never adds one; plus the
    // one in flight), and renewing all along
    assert!(
        (periods as usize / 2..=periods as usize + 1).contains(&window.len()),
        "{} requests in {periods} retry periods",
        window.len()
    );
    // hearing every member: one patch per quiet period (900 ms), a third as many
    let quiet = clock().quiet_period();
    assert_eq!(quiet, Duration::from_millis(900));
    quiet_tx.send_replace(true);
    renewals.borrow_and_update();
    renewals.changed().await.unwrap();
    let (from, t0) = (requests(0).len(), Instant::now());
    tokio::time::sleep(quiet * 6).await;
    let n = requests(from).len();
    let quiets = t0.elapsed().as_millis() / quiet.as_millis();
    assert!(
        (quiets as usize - 1..=quiets as usize + 1).contains(&n),
        "{n} renewals in {quiets} quiet periods"
    );
    // a member falls silent right after a renewal: the next one goes out a retry period
    // after it, not a quiet period
    renewals.borrow_and_update();
    renewals.changed().await.unwrap();
    let t0 = Instant::now();
    quiet_tx.send_replace(false);
    renewals.changed().await.unwrap();
    assert!(
        t0.elapsed() < period * 2,
        "renewed {:?} after leaving the quiet period",
        t0.elapsed()
    );
    let _ = stop_tx.send(true);
    task.await.unwrap();
}

/// While the heartbeat key Secret is missing the speaker reads it again with backoff, not at
/// a fixed rate (a hundred speakers waiting for a controller that is down would poll the API
/// server four times a second each), and picks the key up once it is created. Counted from
/// the embedded server's request records.
#[tokio::test]
async fn a_missing_heartbeat_key_is_read_again_with_backoff() {
    use ferrolb::speaker::heartbeat::{wait_for_key, KEY_SECRET};
    use k8s_openapi::api::core::v1::Secret;

    let (srv, client) = recording_server().await;
    let reads = || {
        audited(&srv, "secrets", Some(KEY_SECRET))
            .iter()
            .filter(|(verb, _)| verb == "get")
            .count()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let (stop_tx, mut stop) = watch::channel(false);
    let s = secrets.clone();
    let task = tokio::spawn(async move { wait_for_key(&s, &mut stop).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    // 100 ms doubling: reads at 0, 0.1, 0.3, 0.7, 1.5, 3.1 s; a fixed 250 ms period makes 12
    let n = reads();
    assert!((3..=6).contains(&n), "{n} reads of the missing key in 3 s");
    let key: Secret = serde_json::from_value(json!({
        "metadata": {"name": KEY_SECRET},
        "data": {"key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &key).await.unwrap();
    // the longest wait is 5 s
    let got = tokio::time::timeout(Duration::from_secs(7), task)
        .await
        .expect("key picked up within the longest backoff")
        .unwrap();
    assert!(got.is_some());
    drop(stop_tx);
}

/// The embedded API server (recording every request, for counting a speaker's calls), an
/// admin client, and the speaker namespace.
/// Polls `f` every 10 ms until it holds (5 s at most).
async fn wait_until<F, Fut>(f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "condition not met in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (verb, response code) of every request the recording server saw on `resource` (only
/// the object `name`, when given), in order.
fn audited(
    srv: &ferrolb_lab::apiserver::RunningServer,
    resource: &str,
    name: Option<&str>,
) -> Vec<(String, u16)> {
    srv.audit_events()
        .into_iter()
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == resource && name.is_none_or(|n| o.name == n))
        })
        .map(|e| (e.verb, e.response_status.code))
        .collect()
}

async fn recording_server() -> (ferrolb_lab::apiserver::RunningServer, Client) {
    use k8s_openapi::api::core::v1::Namespace;
    ferrolb::controller::install_crypto_provider();
    let srv = ferrolb_lab::apiserver::ApiServer::new()
        .record_requests(true)
        .start_at("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::try_from(srv.admin_config()).unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    (srv, client)
}

/// The fake cluster with one node `node-a` and the Service `web` at 10.0.0.1: its client,
/// node-a's speaker (no pass run yet) and the instant of its first pass.
async fn node_a_with_web() -> (Client, Node_, Instant) {
    let client = fake_client().await;
    setup(&client, &["node-a"], &[]).await;
    add_service(&client, "web", "10.0.0.1").await;
    let n = Node_::new(&client, "node-a", RecordingAnnouncer::new());
    (client, n, Instant::now())
}

/// A speaker coming to announce hundreds of IPs at once writes one `nodeAssigned` Event for
/// each, and stays within an API server's bound on mutating requests in flight: here 8, with
/// every Event write taking 20 ms (a loaded kube-apiserver). Written each on its own task the
/// Events were all in flight at once and most were refused with 429.
#[tokio::test]
async fn announcing_hundreds_of_ips_stays_within_the_servers_in_flight_bound() {
    use ferrolb::speaker::events::EVENT_WRITES_IN_FLIGHT;
    use ferrolb_lab::apiserver::faults::FaultSpec;
    use ferrolb_lab::apiserver::inflight::{Kind, Limits};
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use kube::api::{Patch, PatchParams};

    const SERVICES: usize = 250;
    ferrolb::controller::install_crypto_provider();
    let srv = ferrolb_lab::apiserver::ApiServer::new()
        .record_requests(true)
        .in_flight_limits(Limits {
            mutating: 8,
            ..Limits::default()
        })
        .start_at("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // the admin (system:masters) is never refused; the speaker runs as a ServiceAccount
    let admin = Client::try_from(srv.admin_config()).unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    create(&Api::all(admin.clone()), &ns).await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "speaker"}})).unwrap();
    create(&Api::namespaced(admin.clone(), NS), &sa).await;
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "speaker"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "speaker", "namespace": NS}],
    }))
    .unwrap();
    create(&Api::all(admin.clone()), &crb).await;
    setup(&admin, &["node-a"], &[]).await;
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    for i in 1..=SERVICES {
        let (name, lb_ip) = (format!("web{i}"), format!("10.0.0.{i}"));
        add_service(&admin, &name, &lb_ip).await;
        // a real API server keeps the status of a create out: the controller's write
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": lb_ip}]}}});
        services
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    srv.faults()
        .add(
            FaultSpec::delay(Duration::from_millis(20))
                .verb("create")
                .resource("events"),
        )
        .unwrap();
    let speaker = Client::try_from(srv.service_account_config(NS, "speaker").unwrap()).unwrap();
    let mut n = Node_::new(&speaker, "node-a", RecordingAnnouncer::new());
    let t0 = Instant::now();
    round(std::slice::from_mut(&mut n), t0).await;
    assert_eq!(n.announced().len(), SERVICES);

    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    let written = loop {
        let written = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("nodeAssigned"))
            .count();
        if written >= SERVICES || Instant::now() > deadline {
            break written;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refused: Vec<String> = srv
        .audit_events()
        .into_iter()
        .filter(|e| e.response_status.code == 429)
        .map(|e| format!("{} {}", e.verb, e.request_uri))
        .collect();
    assert!(
        refused.is_empty(),
        "{} requests refused for too many in flight, first: {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(written, SERVICES, "one nodeAssigned Event per Service");
    // the Event writes filled their share and no more (the other writes are not delayed)
    let peak = srv.in_flight().peak(Kind::Mutating);
    eprintln!("mutating requests in flight at most: {peak}");
    assert!(
        (EVENT_WRITES_IN_FLIGHT..=8).contains(&peak),
        "{peak} mutating requests in flight at most"
    );
    srv.shutdown().await.unwrap();
}

/// A peer's renewal that the Lease watch held back from the loop (a live peer's plain
/// renewal wakes nothing) still counts: the pass folds it in before judging the peer, so the
/// peer's IP is not taken over when the renewals the loop itself saw grow old.
#[tokio::test]
async fn a_renewal_held_back_from_the_loop_keeps_its_peer_alive() {
    let (_, mut nodes, t0, owner) = two_nodes_with_web().await;
    let other = 1 - owner;
    let owner_lease = node_lease_name(&nodes[owner].name);
    // the owner renews 1.5 s later; the other node's watch holds that renewal back
    let held = LeaseFacts {
        name: owner_lease.clone(),
        resource_version: "renewed-later".into(),
        holder: nodes[owner].name.clone(),
        transitions: 0,
    };
    let seen = t0 + Duration::from_millis(1500);
    nodes[other]
        .writers
        .held
        .lock()
        .unwrap()
        .insert(owner_lease, (held, seen));
    // past the lease duration (2 s) from the last renewal the loop saw, within it from the
    // held one
    let n = &mut nodes[other];
    for later in [
        t0 + Duration::from_millis(2500),
        t0 + Duration::from_millis(2600),
    ] {
        n.renewed.send_replace(Some(later));
        n.speaker.reconcile(later).await;
    }
    assert!(
        !n.announced().contains(&ip("10.0.0.1")),
        "took over from a peer whose renewal it holds"
    );
    assert!(n.writers.held.lock().unwrap().is_empty(), "folded in");
}

/// node-c's speaker appears (its Node and Lease) just as node-b, holding IPs, falls silent:
/// node-b may not have seen node-c yet and keep announcing on the two-member rule with its
/// own Lease, so for a lease duration after its membership grew node-a judges node-b by its
/// Lease too (renewed throughout: alive), and by its heartbeats again after that — the
/// speaker passes the instant of the growth from one evaluation to the next.
#[tokio::test]
async fn after_the_membership_grew_a_silent_member_is_judged_by_its_lease_for_a_lease_duration() {
    use ferrolb::election::membership::MeshTiming;

    let client = fake_client().await;
    setup(&client, &["node-a", "node-b"], &[]).await;
    let ips: Vec<String> = (1..=8).map(|i| format!("10.0.0.{i}")).collect();
    for (k, lb) in ips.iter().enumerate() {
        add_service(&client, &format!("web{k}"), lb).await;
    }
    let (mesh, key, to) = listening_mesh("node-a", MeshTiming::default());
    let mut a = Node_::new(&client, "node-a", RecordingAnnouncer::new());
    a.speaker = a.speaker.with_mesh(mesh.clone());
    let mut b = Node_::new(&client, "node-b", RecordingAnnouncer::new());
    let mut send = peer_heartbeats(key, to);
    // node-b heard, its Lease renewing, past node-a's start-up window: the IPs are shared
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1600) {
        send(&["node-b"]);
        renew_node_lease(&client, "node-b").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        mesh.drain();
        let now = Instant::now();
        a.pass(now, Some(now)).await;
        b.pass(now, Some(now)).await;
    }
    let mut held_by_b = BTreeSet::new();
    for lb in &ips {
        if claim_holder(&client, ip(lb)).await.as_deref() == Some("node-b") {
            held_by_b.insert(ip(lb));
        }
    }
    assert!(!held_by_b.is_empty(), "node-b holds none of {ips:?}");
    assert!(a.speaker.permitted());
    assert!(a.announced().is_disjoint(&held_by_b));
    // node-c appears and is heard; node-b falls silent, its Lease still renewing
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-c"}})).unwrap();
    create(&Api::all(client.clone()), &node).await;
    renew_node_lease(&client, "node-c").await;
    let grew = Instant::now();
    let mut taken = None;
    while grew.elapsed() < Duration::from_millis(3000) {
        send(&["node-c"]);
        renew_node_lease(&client, "node-b").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        mesh.drain();
        let now = Instant::now();
        a.pass(now, Some(now)).await;
        assert!(a.speaker.permitted(), "a majority, its Lease fresh");
        if taken.is_none() && !a.announced().is_disjoint(&held_by_b) {
            taken = Some(grew.elapsed());
        }
    }
    let taken = taken.expect("node-a never took node-b's IPs on its silence");
    assert!(
        taken >= Duration::from_millis(1900),
        "node-b's IPs taken {taken:?} after the growth, within a lease duration"
    );
}

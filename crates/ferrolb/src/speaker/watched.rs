//! The speaker's Lease and ServiceL2Status watches, kept per event: no reflector store
//! holds these objects whole (a node Lease carries the speaker-state annotation, up to
//! 16 KiB, and managedFields). Leases are watched as [`SlimLease`], which decodes only
//! the fields the speaker reads (the annotation is skipped over, never allocated). Each
//! Lease event is reduced to its [`LeaseFacts`] and sent to
//! the speaker loop (node Lease marks for the peers' liveness, claims for the
//! [`super::claims::ClaimBook`]); each ServiceL2Status event to its
//! [`super::status::Observed`] and applied to the shared [`super::status::StatusBook`].
//!
//! The node Leases and the IP claims are two watches, told apart by the claims' label
//! ([`super::claims::MANAGED_BY`], [`LeaseWatch::selector`]): the claims are always watched,
//! the node Leases only while a decision may read them
//! ([`crate::election::membership::LeaseWatchGate`]): at rest on a healthy cluster of `N`
//! nodes that is `N` watch events a second fewer for every speaker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::borrow::Cow;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::{mpsc, Notify};

use super::claims::{ip_of_claim_name, Claim};
use super::liveness::LeaseMark;
use super::status::{Observed, SharedStatuses};
use crate::crd::ServiceL2Status;

/// What the speaker reads of a Lease (node Lease or claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `spec.holderIdentity` (empty: released).
    pub holder: String,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
}

impl LeaseFacts {
    /// Reads a Lease.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            name: lease.metadata.name.clone().unwrap_or_default(),
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        }
    }

    /// The mark of a node Lease (what changes on every renewal).
    pub fn mark(&self) -> LeaseMark {
        LeaseMark {
            holder: self.holder.clone(),
            resource_version: self.resource_version.clone(),
        }
    }

    /// The claim it records, if it is a claim Lease.
    pub fn claim(&self) -> Option<(std::net::IpAddr, Claim)> {
        let ip = ip_of_claim_name(&self.name)?;
        Some((
            ip,
            Claim {
                holder: self.holder.as_str().into(),
                resource_version: self.resource_version.as_str().into(),
                transitions: self.transitions,
            },
        ))
    }
}

/// A Lease as the speaker's watch decodes it: name, namespace, resourceVersion, holder and
/// transitions; every other field (annotations, managedFields, times) is skipped over.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(from = "RawLease")]
pub struct SlimLease {
    metadata: ObjectMeta,
    facts: LeaseFacts,
}

#[derive(serde::Deserialize)]
struct RawLease {
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: Option<RawSpec>,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    holder_identity: Option<String>,
    lease_transitions: Option<i32>,
}

impl From<RawLease> for SlimLease {
    fn from(r: RawLease) -> Self {
        let facts = LeaseFacts {
            name: r.metadata.name.clone().unwrap_or_default(),
            resource_version: r.metadata.resource_version.clone().unwrap_or_default(),
            holder: r
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            transitions: r.spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        };
        SlimLease {
            metadata: ObjectMeta {
                name: r.metadata.name,
                namespace: r.metadata.namespace,
                resource_version: r.metadata.resource_version,
                ..Default::default()
            },
            facts,
        }
    }
}

impl SlimLease {
    /// What the speaker keeps of it.
    pub fn facts(self) -> LeaseFacts {
        self.facts
    }
}

impl kube::Resource for SlimLease {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        <Lease as kube::Resource>::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        <Lease as kube::Resource>::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        <Lease as kube::Resource>::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        <Lease as kube::Resource>::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Which Lease watch an event comes from: a list (`Init` … `InitDone`) concerns only the
/// Leases of its watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseWatch {
    /// The peers' node Leases (every Lease of the namespace but the claims; paused while
    /// no decision needs them, [`crate::election::membership::LeaseWatchGate`]).
    Nodes,
    /// The IP claims (label [`super::claims::MANAGED_BY`]).
    Claims,
    /// One watch of both (the tests' events).
    All,
}

impl LeaseWatch {
    /// The label selector of this watch's Leases (None: every Lease of the namespace).
    pub fn selector(self) -> Option<String> {
        let (k, v) = super::claims::MANAGED_BY;
        match self {
            LeaseWatch::Nodes => Some(format!("{k}!={v}")),
            LeaseWatch::Claims => Some(format!("{k}={v}")),
            LeaseWatch::All => None,
        }
    }
}

/// One Lease watch event, reduced, with the watch it comes from.
pub type LeaseEvent = (LeaseWatch, watcher::Event<LeaseFacts>);

/// Set once a watch has delivered its first complete list.
#[derive(Debug, Clone, Default)]
pub struct Synced(Arc<(AtomicBool, Notify)>);

impl Synced {
    /// Already synced (tests feed their events by hand).
    pub fn done() -> Self {
        let s = Self::default();
        s.set();
        s
    }

    /// The first list is complete.
    pub fn set(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }

    /// Waits until [`Synced::set`].
    pub async fn wait(&self) {
        loop {
            let n = self.0 .1.notified();
            if self.0 .0.load(Ordering::SeqCst) {
                return;
            }
            n.await;
        }
    }
}

/// What kube's watcher needs of a watched type (cluster-wide kinds and slim projections alike).
pub trait Watchable:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watchable for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Runs a watch of `api` (with [`crate::runtime::watch_backoff`]) in its own task, handing each event
/// to `on_event` until it returns false; a failed watch is logged and retried. The one
/// event loop of the speaker's watches (Leases, ServiceL2Statuses, the index's kinds).
pub fn spawn_watch<K>(api: Api<K>, on_event: impl FnMut(watcher::Event<K>) -> bool + Send + 'static)
where
    K: Watchable,
{
    spawn_gated_watch(api, watcher::Config::default(), None, on_event);
}

/// [`spawn_watch`] with `config`, watching only while `wanted` (if any) is true: the watch
/// is dropped when it turns false (its request ends) and started again, with a fresh list,
/// when it turns true.
pub fn spawn_gated_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    mut wanted: Option<tokio::sync::watch::Receiver<bool>>,
    mut on_event: impl FnMut(watcher::Event<K>) -> bool + Send + 'static,
) where
    K: Watchable,
{
    tokio::spawn(async move {
        loop {
            if let Some(w) = &mut wanted {
                if w.wait_for(|on| *on).await.is_err() {
                    return;
                }
            }
            let stream =
                watcher(api.clone(), config.clone()).backoff(crate::runtime::watch_backoff());
            futures::pin_mut!(stream);
            loop {
                let off = async {
                    match &mut wanted {
                        Some(w) => w.wait_for(|on| !*on).await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                };
                let ev = tokio::select! {
                    ev = stream.next() => ev,
                    r = off => {
                        if r.is_err() {
                            return;
                        }
                        tracing::debug!(kind = %K::kind(&()), "watch paused");
                        break;
                    }
                };
                match ev {
                    None => return,
                    Some(Ok(ev)) => {
                        if !on_event(ev) {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying with backoff")
                    }
                }
            }
        }
    });
}

/// Watches the node Leases of `api` (every Lease but the claims) while `wanted` says so,
/// sends each event reduced to [`LeaseFacts`] to `tx`; sets `synced` after the first
/// complete list (whose events are then all in the channel). Each time the watch resumes it
/// lists the Leases again (`Init` … `InitDone`).
///
/// Plain renewals of live peers' node Leases that `quiet` holds go into `held` instead
/// ([`super::liveness::QuietRenewals`]).
pub fn watch_node_leases(
    api: Api<SlimLease>,
    tx: mpsc::UnboundedSender<LeaseEvent>,
    synced: Synced,
    mut quiet: super::liveness::QuietRenewals,
    held: super::liveness::HeldRenewals,
    wanted: tokio::sync::watch::Receiver<bool>,
) {
    let config = watcher::Config {
        label_selector: LeaseWatch::Nodes.selector(),
        ..Default::default()
    };
    spawn_gated_watch(api, config, Some(wanted), move |ev| {
        let done = matches!(ev, watcher::Event::InitDone);
        let ev = reduce(ev, SlimLease::facts);
        match &ev {
            watcher::Event::Apply(f) => {
                let now = std::time::Instant::now();
                if quiet.hold(f, now) {
                    held.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(f.name.clone(), (f.clone(), now));
                    return true;
                }
            }
            watcher::Event::Delete(f) => quiet.forget(&f.name),
            _ => {}
        }
        if tx.send((LeaseWatch::Nodes, ev)).is_err() {
            return false;
        }
        if done {
            synced.set();
        }
        true
    });
}

/// Watches the IP claims of `api` (never paused), sends each event reduced to
/// [`LeaseFacts`] to `tx`; sets `synced` after the first complete list.
pub fn watch_claims(api: Api<SlimLease>, tx: mpsc::UnboundedSender<LeaseEvent>, synced: Synced) {
    let config = watcher::Config {
        label_selector: LeaseWatch::Claims.selector(),
        ..Default::default()
    };
    spawn_gated_watch(api, config, None, move |ev| {
        let done = matches!(ev, watcher::Event::InitDone);
        if tx
            .send((LeaseWatch::Claims, reduce(ev, SlimLease::facts)))
            .is_err()
        {
            return false;
        }
        if done {
            synced.set();
        }
        true
    });
}

/// Watches the ServiceL2Status objects of `api` into `book`, waking `wake` on each change
/// (and once after each complete list).
pub fn watch_statuses(api: Api<ServiceL2Status>, book: SharedStatuses, wake: Arc<Notify>) {
    spawn_watch(api, move |ev| {
        let quiet = matches!(ev, watcher::Event::Init | watcher::Event::InitApply(_));
        book.lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(reduce(ev, |o| Observed::of(&o)));
        if !quiet {
            wake.notify_one();
        }
        true
    });
}

/// `ev` with its object reduced by `f`.
pub fn reduce<K, T>(ev: watcher::Event<K>, f: impl Fn(K) -> T) -> watcher::Event<T> {
    match ev {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn facts_of_a_claim_and_of_a_node_lease() {
        let lease = |name: &str| Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some("7".into()),
                annotations: Some([("big".to_string(), "x".repeat(1000))].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("n1".into()),
                lease_transitions: Some(3),
                ..Default::default()
            }),
        };
        let f = LeaseFacts::of(&lease("ferrolb-ip-10.0.0.1"));
        let (ip, c) = f.claim().unwrap();
        assert_eq!(ip, "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(
            Some((ip, c)),
            Claim::from_lease(&lease("ferrolb-ip-10.0.0.1"))
        );
        let node = LeaseFacts::of(&lease("ferrolb-speaker-n1"));
        assert_eq!(node.claim(), None);
        assert_eq!(node.mark(), LeaseMark::of(&lease("ferrolb-speaker-n1")));
    }

    #[test]
    fn a_slim_lease_reads_what_a_whole_one_says() {
        let json = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ferrolb-ip-10.0.0.7", "namespace": "ns", "resourceVersion": "42",
                "annotations": {"ferrolb.io/speaker-state": "x".repeat(16 * 1024)},
                "managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"holderIdentity": "n2", "leaseTransitions": 5, "leaseDurationSeconds": 15,
                "renewTime": "2026-01-01T00:00:00.000000Z"}
        });
        let whole: Lease = serde_json::from_value(json.clone()).unwrap();
        let slim: SlimLease = serde_json::from_value(json).unwrap();
        assert_eq!(
            kube::Resource::meta(&slim).resource_version.as_deref(),
            Some("42")
        );
        assert_eq!(kube::Resource::meta(&slim).annotations, None);
        assert_eq!(slim.facts(), LeaseFacts::of(&whole));
        // a Lease with no spec at all
        let bare: SlimLease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ferrolb-speaker-n1"}}))
        .unwrap();
        assert_eq!(bare.facts().holder, "");
        assert_eq!(
            <SlimLease as kube::Resource>::url_path(&(), Some("ns")),
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
        );
    }

    #[tokio::test]
    async fn synced_wakes_waiters_and_stays_set() {
        let s = Synced::default();
        let t = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        tokio::task::yield_now().await;
        s.set();
        t.await.unwrap();
        Synced::done().wait().await;
        s.wait().await;
    }
}

//! The controller's functional core: given the allocator, a Service, its Namespace's
//! labels and the pools, decide the Service's status, the Events to emit and whether
//! it waits for capacity. No I/O: the shell ([`super::shell`]) feeds it watch events and
//! executes the returned [`Plan`].
//!
//! Rules (MetalLB's, with its defects fixed):
//! - only `type: LoadBalancer` Services of our class (`--lb-class`, or no class when
//!   unset or empty, see [`crate::class`]) are handled; one of our class that stops being
//!   a LoadBalancer is released and, if we had given it an IP, its status is cleared; a
//!   Service of another class is never written to, whatever annotations it carries (another
//!   MetalLB-compatible controller writes the same ones);
//! - status and annotation are written only when they differ;
//! - Events are emitted on change only: `IPAllocated` when the IPs change,
//!   `AllocationFailed` / `LoadBalancerFailed` when the error message changes,
//!   `ClearAssignment` when a previous IP had to go, `deprecatedAnnotation` once per
//!   Service and only together with another write;
//! - a malformed Service never loses the IP it holds; it gets a Warning and waits for
//!   a fix;
//! - a Service that cannot get an IP is remembered as pending and retried only when
//!   capacity it can use appears ([`Core::retry_candidates`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use super::pools::PoolCounts;
use super::status::{self, DesiredStatus};
use super::writer::PlannedEvent;
use crate::allocator::{
    legacy_annotations, Allocator, Change, Family, FamilyPolicy, ServiceKey, ServiceRequest,
};
use crate::config::Pool;
use crate::selector::Labels;

/// Event reasons (MetalLB's).
pub mod reason {
    /// IPs assigned.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// No IP could be assigned.
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    /// A previous IP had to be dropped.
    pub const CLEAR_ASSIGNMENT: &str = "ClearAssignment";
    /// The Service's request is malformed.
    pub const LOAD_BALANCER_FAILED: &str = "LoadBalancerFailed";
    /// Legacy `metallb.universe.tf/*` annotations are in use.
    pub const DEPRECATED_ANNOTATION: &str = "deprecatedAnnotation";
}

/// What happened to a Service in one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not ours (other type or class) and nothing to clean up.
    Ignored,
    /// Not ours any more: released, status cleared if we had set it.
    Released,
    /// Has its IPs.
    Assigned,
    /// Waiting for capacity (or for a request that can be satisfied).
    Pending,
    /// Its request is malformed; it keeps whatever it had.
    Invalid,
}

/// What the shell must do after a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Merge patch for the Service's `status` subresource; `None`: nothing to write.
    pub status: Option<serde_json::Value>,
    /// Events about the Service, in order.
    pub events: Vec<PlannedEvent>,
    /// What happened.
    pub outcome: Outcome,
}

impl Plan {
    fn new(outcome: Outcome) -> Self {
        Self {
            status: None,
            events: Vec::new(),
            outcome,
        }
    }

    /// Whether the plan writes anything.
    pub fn writes(&self) -> bool {
        self.status.is_some() || !self.events.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
struct Memo {
    warned_deprecated: bool,
    last_failure: Option<String>,
    clear_note: Option<String>,
}

impl Memo {
    fn is_empty(&self) -> bool {
        !self.warned_deprecated && self.last_failure.is_none() && self.clear_note.is_none()
    }
}

/// The controller state: allocator, namespace labels, pending Services and what was
/// already reported per Service.
#[derive(Debug)]
pub struct Core {
    alloc: Allocator,
    pools: Vec<Pool>,
    lb_class: Option<String>,
    ns_labels: HashMap<String, Labels>,
    memo: HashMap<ServiceKey, Memo>,
    pending: BTreeMap<ServiceKey, ServiceRequest>,
}

/// The key of a Service (namespace defaults to `default`).
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether a Service is one this controller handles: `type: LoadBalancer` and
/// `spec.loadBalancerClass` equal to `lb_class` (both absent counts as equal).
pub fn handles(svc: &Service, lb_class: Option<&str>) -> bool {
    crate::class::handles(svc, lb_class)
}

/// A request that only keeps the IPs a Service already has, used at start-up for a
/// Service whose annotations are malformed, so its IP is not handed to someone else.
fn keep_request(svc: &Service, ns_labels: &Labels) -> ServiceRequest {
    let current: Vec<IpAddr> = status::current_ingress(svc)
        .iter()
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut families: Vec<Family> = Vec::new();
    for ip in &current {
        if !families.contains(&Family::of(ip)) {
            families.push(Family::of(ip));
        }
    }
    ServiceRequest {
        key: service_key(svc),
        labels: svc.metadata.labels.clone().unwrap_or_default(),
        namespace_labels: ns_labels.clone(),
        family_policy: if families.len() > 1 {
            FamilyPolicy::RequireDualStack
        } else {
            FamilyPolicy::SingleStack
        },
        cluster_families: families,
        current_ips: current,
        ..Default::default()
    }
}

impl Core {
    /// A core with no assignment yet.
    pub fn new(pools: Vec<Pool>, lb_class: Option<String>) -> Self {
        Self {
            alloc: Allocator::new(pools.clone()),
            pools,
            lb_class: crate::class::from_flag(lb_class.as_deref()),
            ns_labels: HashMap::new(),
            memo: HashMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Start-up: rebuilds the allocator from every Service's status (already-assigned
    /// Services first, whatever the order of `services`), so a restart or leader change
    /// moves no IP and lets no pending Service steal one. Nothing is written here; the
    /// reconciles that follow find statuses already matching.
    pub fn rebuild<'a>(
        pools: Vec<Pool>,
        lb_class: Option<String>,
        ns_labels: HashMap<String, Labels>,
        services: impl IntoIterator<Item = &'a Service>,
    ) -> Self {
        let lb_class = crate::class::from_flag(lb_class.as_deref());
        let empty = Labels::new();
        let reqs: Vec<ServiceRequest> = services
            .into_iter()
            .filter(|s| handles(s, lb_class.as_deref()))
            .map(|s| {
                let labels = s
                    .metadata
                    .namespace
                    .as_ref()
                    .and_then(|n| ns_labels.get(n))
                    .unwrap_or(&empty);
                ServiceRequest::from_service(s, labels).unwrap_or_else(|_| keep_request(s, labels))
            })
            .collect();
        let (alloc, results) = Allocator::rebuild(pools.clone(), reqs.clone());
        let mut pending = BTreeMap::new();
        let by_key: HashMap<&ServiceKey, &ServiceRequest> =
            reqs.iter().map(|r| (&r.key, r)).collect();
        for (key, res) in results {
            if res.is_err() {
                if let Some(r) = by_key.get(&key) {
                    pending.insert(key.clone(), (*r).clone());
                }
            }
        }
        Self {
            alloc,
            pools,
            lb_class,
            ns_labels,
            memo: HashMap::new(),
            pending,
        }
    }

    /// The allocator (read-only).
    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    /// The `--lb-class` this core filters on.
    pub fn lb_class(&self) -> Option<&str> {
        self.lb_class.as_deref()
    }

    /// Number of Services waiting for an IP.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a Service is pending.
    pub fn is_pending(&self, key: &ServiceKey) -> bool {
        self.pending.contains_key(key)
    }

    /// Every Service the core tracks (assigned or pending), for the sweep after a
    /// relist: those no longer in the cluster are passed to [`Core::deleted`].
    pub fn tracked(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self
            .alloc
            .snapshot()
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        keys.extend(self.pending.keys().cloned());
        keys.sort();
        keys.dedup();
        keys
    }

    /// Records a Namespace's labels; true when they changed (the shell then
    /// re-reconciles the Services of that Namespace).
    pub fn set_namespace_labels(&mut self, ns: &str, labels: Labels) -> bool {
        if self.ns_labels.get(ns) == Some(&labels) {
            return false;
        }
        self.ns_labels.insert(ns.to_string(), labels);
        true
    }

    /// Forgets a deleted Namespace.
    pub fn remove_namespace(&mut self, ns: &str) {
        self.ns_labels.remove(ns);
    }

    /// Replaces the pools. Returns `None` when they did not change, else the Services
    /// to reconcile: those whose IP left every pool (they get a `ClearAssignment`
    /// Event and a new IP if possible) and the pending ones that can use new room.
    pub fn set_pools(&mut self, pools: Vec<Pool>) -> Option<Vec<ServiceKey>> {
        if pools == self.pools {
            return None;
        }
        self.pools = pools.clone();
        let cleared = self.alloc.set_pools(pools);
        let mut keys = Vec::new();
        for c in cleared {
            let note = format!(
                "current IP for {:?} not allowed by config, will attempt for new IP assignment: {}",
                c.key.to_string(),
                c.reason
            );
            self.memo.entry(c.key.clone()).or_default().clear_note = Some(note);
            keys.push(c.key);
        }
        keys.extend(self.retry_candidates());
        keys.sort();
        keys.dedup();
        Some(keys)
    }

    /// A Service was deleted: releases its IPs and returns the pending Services that
    /// can use the room.
    pub fn deleted(&mut self, key: &ServiceKey) -> Vec<ServiceKey> {
        self.alloc.release(key);
        self.pending.remove(key);
        self.memo.remove(key);
        self.retry_candidates()
    }

    /// Pending Services that may get an IP from pools that gained room since the last
    /// call (deletions, releases, config changes). Only those are retried.
    pub fn retry_candidates(&mut self) -> Vec<ServiceKey> {
        let freed = self.alloc.take_freed();
        if freed.is_empty() || self.pending.is_empty() {
            return Vec::new();
        }
        self.pending
            .iter()
            .filter(|(_, r)| freed.iter().any(|p| self.alloc.could_use(r, p)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A write of the last plan for `key` failed: forget what was reported so the
    /// retry reports it again.
    pub fn write_failed(&mut self, key: &ServiceKey) {
        if let Some(m) = self.memo.get_mut(key) {
            m.last_failure = None;
            m.warned_deprecated = false;
        }
    }

    /// Counters of every configured pool.
    pub fn pool_counts(&self) -> BTreeMap<String, PoolCounts> {
        self.alloc
            .pool_names()
            .into_iter()
            .filter_map(|name| {
                let c = self.alloc.pool_counters(&name)?;
                Some((
                    name,
                    PoolCounts {
                        assigned_v4: c.assigned_v4,
                        assigned_v6: c.assigned_v6,
                        available_v4: c.available_v4,
                        available_v6: c.available_v6,
                    },
                ))
            })
            .collect()
    }

    /// Reconciles one Service: mutates the allocator and returns what to write.
    pub fn reconcile(&mut self, svc: &Service) -> Plan {
        let key = service_key(svc);
        if key.name.is_empty() {
            return Plan::new(Outcome::Ignored);
        }
        if !handles(svc, self.lb_class.as_deref()) {
            return self.release_foreign(svc, &key);
        }
        let empty = Labels::new();
        let ns_labels = self.ns_labels.get(&key.namespace).unwrap_or(&empty);
        let req = match ServiceRequest::from_service(svc, ns_labels) {
            Ok(r) => r,
            Err(e) => return self.invalid(svc, &key, e.to_string()),
        };
        let mut plan = match self.alloc.ensure(&req) {
            Ok(a) => {
                self.pending.remove(&key);
                let mut plan = Plan::new(Outcome::Assigned);
                let memo = self.memo.entry(key.clone()).or_default();
                memo.last_failure = None;
                let clear_note = memo.clear_note.take();
                if let Change::Reallocated {
                    reason,
                    previous_ips,
                } = &a.change
                {
                    let prev: Vec<String> = previous_ips
                        .iter()
                        .map(|i| format!("{:?}", i.to_string()))
                        .collect();
                    let note = match clear_note {
                        Some(n) => n,
                        None => format!(
                            "previous IP [{}] of {:?} released, will attempt for new IP assignment: {reason}",
                            prev.join(" "),
                            key.to_string()
                        ),
                    };
                    plan.events.push(PlannedEvent::normal(
                        reason::CLEAR_ASSIGNMENT,
                        "Release",
                        note,
                    ));
                } else if let Some(note) = clear_note {
                    if !a.ips.is_empty() && status::current_ingress(svc).is_empty() {
                        plan.events.push(PlannedEvent::normal(
                            reason::CLEAR_ASSIGNMENT,
                            "Release",
                            note,
                        ));
                    }
                }
                let desired = DesiredStatus {
                    ips: a.ips.clone(),
                    pool: Some(a.pool.clone()),
                };
                let current: Vec<Option<IpAddr>> = status::current_ingress(svc)
                    .iter()
                    .map(|s| s.trim().parse().ok())
                    .collect();
                let ips_changed = current.len() != a.ips.len()
                    || current.iter().zip(&a.ips).any(|(c, d)| *c != Some(*d));
                if ips_changed {
                    let note = match &a.change {
                        Change::AddedFamily { ip } => {
                            format!("Assigned additional IP {:?}", ip.to_string())
                        }
                        _ => status::assigned_message(&a.ips),
                    };
                    plan.events
                        .push(PlannedEvent::normal(reason::IP_ALLOCATED, "Allocate", note));
                }
                plan.status = status::status_patch(svc, &desired);
                plan
            }
            Err(e) => {
                let msg = format!("Failed to allocate IP for {:?}: {e}", key.to_string());
                let mut plan = Plan::new(Outcome::Pending);
                let memo = self.memo.entry(key.clone()).or_default();
                if let Some(note) = memo.clear_note.take() {
                    plan.events.push(PlannedEvent::normal(
                        reason::CLEAR_ASSIGNMENT,
                        "Release",
                        note,
                    ));
                }
                if memo.last_failure.as_deref() != Some(msg.as_str()) {
                    plan.events.push(PlannedEvent::warning(
                        reason::ALLOCATION_FAILED,
                        "Allocate",
                        msg.clone(),
                    ));
                    memo.last_failure = Some(msg);
                }
                self.pending.insert(key.clone(), req);
                plan.status = status::status_patch(svc, &DesiredStatus::cleared());
                plan
            }
        };
        self.finish(svc, &key, &mut plan);
        plan
    }

    /// Malformed request: Warning on change, keep whatever the Service holds.
    fn invalid(&mut self, svc: &Service, key: &ServiceKey, err: String) -> Plan {
        let mut plan = Plan::new(Outcome::Invalid);
        let memo = self.memo.entry(key.clone()).or_default();
        if memo.last_failure.as_deref() != Some(err.as_str()) {
            plan.events.push(PlannedEvent::warning(
                reason::LOAD_BALANCER_FAILED,
                "Allocate",
                err.clone(),
            ));
            memo.last_failure = Some(err);
        }
        // Keep an assignment it holds; a new Service waits (not retried on capacity:
        // only a fix of the Service helps).
        if self.alloc.assigned(key).is_none() {
            self.pending.remove(key);
        }
        self.finish(svc, key, &mut plan);
        plan
    }

    /// The Service is not (or no longer) ours: release it. What we wrote is cleared only
    /// from a Service of our class that stopped being a LoadBalancer; a Service of another
    /// class belongs to another controller, which writes the same status and annotation.
    fn release_foreign(&mut self, svc: &Service, key: &ServiceKey) -> Plan {
        let released = self.alloc.release(key);
        self.pending.remove(key);
        self.memo.remove(key);
        if !crate::class::matches(crate::class::of(svc), self.lb_class.as_deref()) {
            if released.is_some() {
                tracing::debug!(service = %key, "released: its loadBalancerClass is not ours");
                return Plan::new(Outcome::Released);
            }
            return Plan::new(Outcome::Ignored);
        }
        let ours = released.is_some() || status::current_pool(svc).is_some();
        if !ours {
            return Plan::new(Outcome::Ignored);
        }
        let mut plan = Plan::new(Outcome::Released);
        plan.status = status::status_patch(svc, &DesiredStatus::cleared());
        if let Some(r) = released {
            let why = "the Service is no longer of type LoadBalancer";
            let ips: Vec<String> = r
                .ips
                .iter()
                .map(|i| format!("{:?}", i.to_string()))
                .collect();
            plan.events.push(PlannedEvent::normal(
                reason::CLEAR_ASSIGNMENT,
                "Release",
                format!("released [{}]: {why}", ips.join(" ")),
            ));
        }
        plan
    }

    /// Adds the one-time `deprecatedAnnotation` Warning to a plan that writes anyway;
    /// drops empty memos.
    fn finish(&mut self, svc: &Service, key: &ServiceKey, plan: &mut Plan) {
        if plan.writes() {
            let legacy = legacy_annotations(svc);
            if !legacy.is_empty() {
                let memo = self.memo.entry(key.clone()).or_default();
                if !memo.warned_deprecated {
                    memo.warned_deprecated = true;
                    plan.events.push(PlannedEvent::warning(
                        reason::DEPRECATED_ANNOTATION,
                        "Allocate",
                        format!("Service uses deprecated annotation {}", legacy.join(", ")),
                    ));
                }
            }
        }
        if self.memo.get(key).is_some_and(Memo::is_empty) {
            self.memo.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pool;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use serde_json::Value;

    fn pool(name: &str, cidrs: &[&str]) -> Pool {
        Pool {
            name: name.into(),
            labels: Labels::new(),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            frozen: false,
        }
    }

    fn lb(name: &str) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("default".into());
        s.metadata.uid = Some(format!("uid-{name}"));
        s.metadata.resource_version = Some("1".into());
        s.spec = Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            cluster_ip: Some("10.96.0.10".into()),
            cluster_ips: Some(vec!["10.96.0.10".into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        s
    }

    fn annotate(s: &mut Service, k: &str, v: &str) {
        s.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
    }

    /// Applies a plan's status patch like the API server would (JSON merge patch).
    fn apply(s: &mut Service, plan: &Plan) {
        if let Some(p) = &plan.status {
            let mut v = serde_json::to_value(&*s).unwrap();
            let mut p = p.clone();
            p["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            json_patch::merge(&mut v, &p);
            *s = serde_json::from_value(v).unwrap();
        }
    }

    fn ips(s: &Service) -> Vec<String> {
        status::current_ingress(s)
    }

    fn reasons(p: &Plan) -> Vec<&str> {
        p.events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn allocates_writes_status_and_annotation_then_is_quiet() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/30"])], None);
        let mut s = lb("a");
        let plan = core.reconcile(&s);
        assert_eq!(plan.outcome, Outcome::Assigned);
        let patch = plan.status.clone().unwrap();
        assert_eq!(
            patch["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.168.1.0"
        );
        assert_eq!(
            patch["metadata"]["annotations"][status::POOL_ANNOTATION],
            "p"
        );
        assert_eq!(patch["metadata"]["resourceVersion"], "1");
        assert_eq!(reasons(&plan), ["IPAllocated"]);
        assert_eq!(plan.events[0].note, r#"Assigned IP ["192.168.1.0"]"#);
        apply(&mut s, &plan);
        // A second reconcile (e.g. the watch event of our own write) writes nothing.
        let again = core.reconcile(&s);
        assert!(!again.writes(), "{again:?}");
        assert_eq!(again.outcome, Outcome::Assigned);
    }

    #[test]
    fn failure_event_once_per_distinct_message_and_pending() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/32"])], None);
        let mut a = lb("a");
        let pa = core.reconcile(&a);
        apply(&mut a, &pa);
        let b = lb("b");
        let pb = core.reconcile(&b);
        assert_eq!(pb.outcome, Outcome::Pending);
        assert_eq!(reasons(&pb), ["AllocationFailed"]);
        assert!(pb.events[0]
            .note
            .contains(r#"Failed to allocate IP for "default/b""#));
        assert!(
            pb.events[0].note.contains("no available IPs"),
            "{}",
            pb.events[0].note
        );
        assert!(pb.status.is_none(), "nothing to clear");
        assert!(core.is_pending(&service_key(&b)));
        // Same failure again: no event.
        assert!(!core.reconcile(&b).writes());
        // Deleting a frees the IP: exactly b is retried, and then gets it.
        let retry = core.deleted(&service_key(&a));
        assert_eq!(retry, vec![service_key(&b)]);
        let pb2 = core.reconcile(&b);
        assert_eq!(pb2.outcome, Outcome::Assigned);
        assert_eq!(reasons(&pb2), ["IPAllocated"]);
        assert_eq!(core.pending_len(), 0);
    }

    #[test]
    fn unrelated_release_does_not_retry_pending_that_cannot_use_it() {
        let mut core = Core::new(
            vec![pool("p", &["192.168.1.0/32"]), {
                let mut q = pool("q", &["10.0.0.0/32"]);
                q.auto_assign = false;
                q
            }],
            None,
        );
        let mut a = lb("a");
        let pa = core.reconcile(&a);
        apply(&mut a, &pa);
        let mut wants_q = lb("wq");
        annotate(&mut wants_q, "metallb.io/address-pool", "q");
        let mut c = lb("c");
        annotate(&mut c, "metallb.io/address-pool", "q");
        let pc = core.reconcile(&c);
        apply(&mut c, &pc);
        assert_eq!(core.reconcile(&wants_q).outcome, Outcome::Pending);
        // a leaves pool p: wq (pinned to q) cannot use it.
        assert!(core.deleted(&service_key(&a)).is_empty());
        // c leaves pool q: wq is retried.
        assert_eq!(core.deleted(&service_key(&c)), vec![service_key(&wants_q)]);
    }

    #[test]
    fn restart_rebuild_keeps_every_ip_whatever_the_order() {
        let pools = vec![pool("p", &["192.168.1.0/29"])];
        let mut core = Core::new(pools.clone(), None);
        let mut svcs: Vec<Service> = (0..6).map(|i| lb(&format!("s{i}"))).collect();
        for s in &mut svcs {
            let p = core.reconcile(s);
            apply(s, &p);
        }
        // One Service released, a new pending one created before the restart.
        svcs.remove(2);
        svcs.push(lb("newcomer"));
        let before: Vec<Vec<String>> = svcs.iter().map(ips).collect();
        for order in [false, true] {
            let mut list = svcs.clone();
            if order {
                list.reverse(); // the newcomer comes first: it must not steal
            }
            let mut c2 = Core::rebuild(pools.clone(), None, HashMap::new(), &list);
            for (s, want) in svcs.iter().zip(&before) {
                let plan = c2.reconcile(s);
                if want.is_empty() {
                    // The newcomer gets the freed address, not anyone else's.
                    assert_eq!(plan.outcome, Outcome::Assigned);
                    let got = plan.status.as_ref().unwrap()["status"]["loadBalancer"]["ingress"][0]
                        ["ip"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    assert_eq!(got, "192.168.1.2");
                } else {
                    assert!(
                        !plan.writes(),
                        "{} changed after restart: {plan:?}",
                        s.metadata.name.as_deref().unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn lb_class_filtering() {
        let pools = vec![pool("p", &["192.168.1.0/30"])];
        let mut none = Core::new(pools.clone(), None);
        let mut ours = Core::new(pools, Some("ferrolb".into()));
        let plain = lb("plain");
        let mut classed = lb("classed");
        classed.spec.as_mut().unwrap().load_balancer_class = Some("ferrolb".into());
        let mut other = lb("other");
        other.spec.as_mut().unwrap().load_balancer_class = Some("someone-else".into());
        assert_eq!(none.reconcile(&plain).outcome, Outcome::Assigned);
        assert_eq!(none.reconcile(&classed).outcome, Outcome::Ignored);
        assert_eq!(none.reconcile(&other).outcome, Outcome::Ignored);
        assert!(!none.reconcile(&other).writes());
        assert_eq!(ours.reconcile(&plain).outcome, Outcome::Ignored);
        assert_eq!(ours.reconcile(&classed).outcome, Outcome::Assigned);
        assert_eq!(ours.reconcile(&other).outcome, Outcome::Ignored);
    }

    #[test]
    fn type_change_releases_and_clears_and_foreign_status_is_left_alone() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/32"])], None);
        let mut a = lb("a");
        let p = core.reconcile(&a);
        apply(&mut a, &p);
        let pending = lb("b");
        assert_eq!(core.reconcile(&pending).outcome, Outcome::Pending);
        a.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let p = core.reconcile(&a);
        assert_eq!(p.outcome, Outcome::Released);
        assert_eq!(reasons(&p), ["ClearAssignment"]);
        let patch = p.status.clone().unwrap();
        assert_eq!(patch["status"]["loadBalancer"]["ingress"], Value::Null);
        assert_eq!(
            patch["metadata"]["annotations"][status::POOL_ANNOTATION],
            Value::Null
        );
        apply(&mut a, &p);
        assert!(ips(&a).is_empty());
        assert!(!core.reconcile(&a).writes(), "released once, then quiet");
        // The freed IP goes to the pending Service (the shell asks after each reconcile).
        assert_eq!(core.retry_candidates(), vec![service_key(&pending)]);
        assert_eq!(core.reconcile(&pending).outcome, Outcome::Assigned);
        // A Service of another class carrying someone else's status is not touched.
        let mut foreign = lb("foreign");
        foreign.spec.as_mut().unwrap().load_balancer_class = Some("other".into());
        foreign.status = Some(Default::default());
        assert!(!core.reconcile(&foreign).writes());
    }

    #[test]
    fn a_foreign_class_service_with_the_pool_annotation_is_never_touched() {
        // Another MetalLB-compatible controller (class "other") gave it an IP and wrote the
        // same annotation we write.
        let mut foreign = lb("foreign");
        foreign.spec.as_mut().unwrap().load_balancer_class = Some("other".into());
        annotate(&mut foreign, status::POOL_ANNOTATION, "their-pool");
        let mut theirs = lb("theirs");
        let given = Core::new(vec![pool("x", &["10.1.0.0/32"])], None).reconcile(&theirs);
        apply(&mut theirs, &given);
        foreign.status = theirs.status.clone();
        assert_eq!(ips(&foreign), ["10.1.0.0"]);
        for ours in [None, Some("ferrolb".to_string())] {
            let mut core = Core::new(vec![pool("p", &["192.168.1.0/30"])], ours.clone());
            let p = core.reconcile(&foreign);
            assert!(!p.writes(), "{ours:?}: {p:?}");
            assert_eq!(p.outcome, Outcome::Ignored);
            // Also when it stops being a LoadBalancer, and after a restart.
            let mut cluster_ip = foreign.clone();
            cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
            assert!(!core.reconcile(&cluster_ip).writes());
            let mut c2 = Core::rebuild(
                vec![pool("p", &["192.168.1.0/30"])],
                ours.clone(),
                HashMap::new(),
                [&foreign, &cluster_ip],
            );
            assert!(!c2.reconcile(&foreign).writes());
            assert!(!c2.reconcile(&cluster_ip).writes());
        }
        // Of our class, the same annotation on a Service that left LoadBalancer is ours
        // to clear (after a restart nothing is in memory).
        let mut ex = lb("ex");
        annotate(&mut ex, status::POOL_ANNOTATION, "p");
        ex.status = theirs.status.clone();
        ex.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/30"])], None);
        let p = core.reconcile(&ex);
        assert_eq!(p.outcome, Outcome::Released);
        assert!(p.status.is_some());
    }

    #[test]
    fn an_empty_lb_class_means_no_class() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/30"])], Some(String::new()));
        assert_eq!(core.lb_class(), None);
        assert_eq!(core.reconcile(&lb("plain")).outcome, Outcome::Assigned);
    }

    #[test]
    fn type_change_makes_pending_service_retry_candidate() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/32"])], None);
        let mut a = lb("a");
        let p = core.reconcile(&a);
        apply(&mut a, &p);
        let b = lb("b");
        core.reconcile(&b);
        a.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        core.reconcile(&a);
        assert_eq!(core.retry_candidates(), vec![service_key(&b)]);
    }

    #[test]
    fn malformed_request_keeps_its_ip_and_warns_once() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/30"])], None);
        let mut a = lb("a");
        let p = core.reconcile(&a);
        apply(&mut a, &p);
        annotate(&mut a, "metallb.io/loadBalancerIPs", "not-an-ip");
        let p = core.reconcile(&a);
        assert_eq!(p.outcome, Outcome::Invalid);
        assert_eq!(reasons(&p), ["LoadBalancerFailed"]);
        assert!(p.status.is_none(), "the IP is kept");
        assert!(!core.reconcile(&a).writes(), "warned once");
        // Its IP is still reserved: another Service does not get it.
        let b = lb("b");
        let pb = core.reconcile(&b);
        assert_ne!(
            pb.status.unwrap()["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.168.1.0"
        );
        // Garbage everywhere never panics.
        let mut junk = Service::default();
        junk.metadata.name = Some("junk".into());
        junk.spec = Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            cluster_ip: Some("nonsense".into()),
            ip_family_policy: Some("Weird".into()),
            ..Default::default()
        });
        assert_eq!(core.reconcile(&junk).outcome, Outcome::Invalid);
        let mut no_cluster_ip = lb("nocip");
        no_cluster_ip.spec.as_mut().unwrap().cluster_ip = None;
        no_cluster_ip.spec.as_mut().unwrap().cluster_ips = None;
        let p = core.reconcile(&no_cluster_ip);
        assert!(matches!(p.outcome, Outcome::Pending | Outcome::Invalid));
        assert!(core.reconcile(&Service::default()).events.is_empty());
    }

    #[test]
    fn deprecated_annotation_warned_once_and_only_with_a_write() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/30"])], None);
        let mut a = lb("a");
        annotate(&mut a, "metallb.universe.tf/allow-shared-ip", "k");
        let p = core.reconcile(&a);
        assert_eq!(reasons(&p), ["IPAllocated", "deprecatedAnnotation"]);
        assert!(p.events[1]
            .note
            .contains("metallb.universe.tf/allow-shared-ip"));
        apply(&mut a, &p);
        assert!(!core.reconcile(&a).writes());
        // A later change writes again but does not repeat the warning.
        annotate(&mut a, "metallb.io/loadBalancerIPs", "192.168.1.3");
        let p = core.reconcile(&a);
        assert_eq!(reasons(&p), ["ClearAssignment", "IPAllocated"]);
        // After a restart, a Service at rest is not warned again (nothing written).
        apply(&mut a, &p);
        let mut c2 = Core::rebuild(
            vec![pool("p", &["192.168.1.0/30"])],
            None,
            HashMap::new(),
            std::slice::from_ref(&a),
        );
        assert!(!c2.reconcile(&a).writes());
    }

    #[test]
    fn pool_shrink_clears_and_reassigns_with_clear_assignment_event() {
        let both = || {
            vec![
                pool("first", &["10.0.0.0/30"]),
                pool("p", &["192.168.1.0/30"]),
            ]
        };
        let mut core = Core::new(both(), None);
        let mut a = lb("a");
        let p = core.reconcile(&a);
        apply(&mut a, &p);
        assert_eq!(ips(&a), ["10.0.0.0"], "equal priority: first pool by name");
        // Same pools again: nothing to do.
        assert!(core.set_pools(both()).is_none());
        // "first" disappears: a is cleared and re-assigned from p.
        let keys = core
            .set_pools(vec![pool("p", &["192.168.1.0/30"])])
            .unwrap();
        assert_eq!(keys, vec![service_key(&a)]);
        let p = core.reconcile(&a);
        assert_eq!(p.outcome, Outcome::Assigned);
        assert_eq!(reasons(&p), ["ClearAssignment", "IPAllocated"]);
        assert!(
            p.events[0].note.contains("not allowed by config"),
            "{}",
            p.events[0].note
        );
        apply(&mut a, &p);
        assert_eq!(ips(&a), ["192.168.1.0"]);
        assert!(!core.reconcile(&a).writes());
    }

    #[test]
    fn a_frozen_pool_keeps_its_services_and_gives_out_nothing() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/30"])], None);
        let mut a = lb("a");
        let p = core.reconcile(&a);
        apply(&mut a, &p);
        let mut frozen = pool("p", &["192.168.1.0/30"]);
        frozen.frozen = true;
        // Freezing changes the pools, but clears no Service.
        assert_eq!(core.set_pools(vec![frozen.clone()]), Some(vec![]));
        assert!(
            !core.reconcile(&a).writes(),
            "a keeps its IP, nothing written"
        );
        let b = lb("b");
        let pb = core.reconcile(&b);
        assert_eq!(pb.outcome, Outcome::Pending);
        // After a restart too.
        let mut c2 = Core::rebuild(vec![frozen], None, HashMap::new(), [&a, &b]);
        assert!(!c2.reconcile(&a).writes());
        assert_eq!(c2.reconcile(&b).outcome, Outcome::Pending);
        // Thawed: b is retried and served.
        let keys = c2.set_pools(vec![pool("p", &["192.168.1.0/30"])]).unwrap();
        assert_eq!(keys, vec![service_key(&b)]);
        assert_eq!(c2.reconcile(&b).outcome, Outcome::Assigned);
    }

    #[test]
    fn pool_counts_follow_allocations() {
        let mut core = Core::new(vec![pool("p", &["192.168.1.0/30"])], None);
        let mut a = lb("a");
        let p = core.reconcile(&a);
        apply(&mut a, &p);
        let c = core.pool_counts()["p"];
        assert_eq!((c.assigned_v4, c.available_v4), (1, 3));
        core.deleted(&service_key(&a));
        assert_eq!(core.pool_counts()["p"].assigned_v4, 0);
        assert_eq!(core.tracked(), Vec::<ServiceKey>::new());
    }
}

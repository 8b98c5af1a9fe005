//! The controller's functional core: given the allocator, a Service, its Namespace's
//! labels and the pools, decide the Service's status, the Events to emit and whether
//! it waits for capacity. No I/O: the shell ([`super::shell`]) feeds it watch events and
//! executes the returned [`Plan`].
//!
//! Rules (MetalLB's, with its defects fixed):
//! - only `type: LoadBalancer` Services of our class (`--lb-class`, or no class when
//!   unset) are handled; one that stops qualifying is released and, if we had given
//!   it an IP, its status is cleared;
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
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return false;
    }
    let class = spec.load_balancer_class.as_deref().filter(|c| !c.is_empty());
    class == lb_class.filter(|c| !c.is_empty())
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
            lb_class: lb_class.filter(|c| !c.is_empty()),
            ns_labels: HashMap::new(),
            memo: HashMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Start-up: rebuilds the allocator from every Service's status (already-assigned
    /// Services first, whatever the order of `services`), so a restart or leader change
    /// moves no IP and lets no pending Service steal one. Nothing is written here; the
    /// reconciles that follow find statuses already matching.
    pub fn rebuild(
        pools: Vec<Pool>,
        lb_class: Option<String>,
        ns_labels: HashMap<String, Labels>,
        services: &[Service],
    ) -> Self {
        let lb_class = lb_class.filter(|c| !c.is_empty());
        let empty = Labels::new();
        let reqs: Vec<ServiceRequest> = services
            .iter()
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
                if let Change::Reallocated { reason, .. } = &a.change {
                    plan.events.push(PlannedEvent::normal(
                        reason::CLEAR_ASSIGNMENT,
                        "Release",
                        format!(
                            "current IP for {:?} not allowed by config, will attempt for new IP assignment: {reason}",
                            key.to_string()
                        ),
                    ));
                } else if let Some(note) = clear_note {
                    if !a.ips.is_empty() && status::current_ingress(svc).is_empty() {
                        plan.events
                            .push(PlannedEvent::normal(reason::CLEAR_ASSIGNMENT, "Release", note));
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
                let ips_changed =
                    current.len() != a.ips.len() || current.iter().zip(&a.ips).any(|(c, d)| *c != Some(*d));
                if ips_changed {
                    let note = match &a.change {
                        Change::AddedFamily { ip } => format!("Assigned additional IP {:?}", ip.to_string()),
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
                    plan.events
                        .push(PlannedEvent::normal(reason::CLEAR_ASSIGNMENT, "Release", note));
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

    /// The Service is not (or no longer) ours: release, clear what we wrote.
    fn release_foreign(&mut self, svc: &Service, key: &ServiceKey) -> Plan {
        let released = self.alloc.release(key);
        self.pending.remove(key);
        self.memo.remove(key);
        let ours = released.is_some() || status::current_pool(svc).is_some();
        if !ours {
            return Plan::new(Outcome::Ignored);
        }
        let mut plan = Plan::new(Outcome::Released);
        plan.status = status::status_patch(svc, &DesiredStatus::cleared());
        if let Some(r) = released {
            let why = if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
                "the Service is no longer of type LoadBalancer".to_string()
            } else {
                format!(
                    "the Service's loadBalancerClass is not {}",
                    self.lb_class
                        .as_deref()
                        .map_or("unset".to_string(), |c| format!("{c:?}"))
                )
            };
            let ips: Vec<String> = r.ips.iter().map(|i| format!("{:?}", i.to_string())).collect();
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

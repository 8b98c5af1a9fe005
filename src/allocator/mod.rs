//! IP allocation for LoadBalancer Services (pure: no I/O, no tokio, no kube client).
//!
//! Semantics follow MetalLB (`internal/allocator`, reference §2–3):
//! pinned pools (`serviceAllocation` matching the Service) by priority (lower first,
//! 0 last; equal priorities by name), then `autoAssign` pools without `serviceAllocation`
//! by name; `autoAssign: false` pools only on request; `avoidBuggyIPs`; dual-stack IPs
//! from one pool; IP sharing with equal sharing key, equal backend key and disjoint ports;
//! lowest free address first within a pool, CIDRs in configured order.
//!
//! Deltas from MetalLB (defects there): equal-priority pools are ordered by name, an
//! existing valid assignment never moves, a release reports which pools gained room
//! (see [`Allocator::take_freed`], [`Allocator::could_use`]) so only pending Services
//! that can use it need a retry, and [`Allocator::rebuild`] is independent of the order
//! in which Services arrive.
//!
//! Complexity: allocation and release are O(log n) in the number of used addresses
//! (per-CIDR sets of used intervals over a u128 index space; IPv6 /64 pools are never
//! enumerated).

mod error;
mod request;

use std::collections::BTreeSet;
use std::net::IpAddr;

pub use error::AllocError;
pub use request::{
    check_requested_ips, legacy_annotations, Family, FamilyPolicy, Protocol, RequestError,
    ServiceKey, ServiceRequest, ANNOTATION_ADDRESS_POOL, ANNOTATION_ALLOW_SHARED_IP,
    ANNOTATION_IP_ALLOCATED_FROM_POOL, ANNOTATION_LOAD_BALANCER_IPS, LEGACY_PREFIX, PREFIX,
};

use crate::config::Pool;

/// What happened to a Service's IPs in [`Allocator::ensure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The Service keeps the IPs it had (in memory or in its status).
    Unchanged,
    /// The Service had no IP and got one (or two).
    Allocated,
    /// The Service's previous IPs were no longer valid and it got new ones.
    /// `reason` is for the `ClearAssignment` Event.
    Reallocated {
        /// Why the previous IPs were dropped.
        reason: String,
        /// The dropped IPs.
        previous_ips: Vec<IpAddr>,
    },
    /// PreferDualStack: the Service kept its IP and got one of the other family
    /// from the same pool (appended to `ips`).
    AddedFamily {
        /// The added IP.
        ip: IpAddr,
    },
}

/// The result of a successful [`Allocator::ensure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The IPs to write to `status.loadBalancer.ingress`, in order.
    pub ips: Vec<IpAddr>,
    /// The pool they come from (for `metallb.io/ip-allocated-from-pool`).
    pub pool: String,
    /// What changed.
    pub change: Change,
}

/// A Service whose assignment was dropped by [`Allocator::set_pools`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleared {
    /// The Service.
    pub key: ServiceKey,
    /// The IPs it lost.
    pub ips: Vec<IpAddr>,
    /// The pool they were assigned from.
    pub pool: String,
    /// Why (for the `ClearAssignment` Event).
    pub reason: String,
}

/// What [`Allocator::release`] freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// The IPs the Service held.
    pub ips: Vec<IpAddr>,
    /// Their pool.
    pub pool: String,
    /// The subset no longer used by any Service.
    pub freed_ips: Vec<IpAddr>,
}

/// Per-pool counters, as in `IPAddressPool.status` (a shared IP counts once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// Distinct IPv4 addresses in use.
    pub assigned_v4: i64,
    /// Distinct IPv6 addresses in use.
    pub assigned_v6: i64,
    /// IPv4 capacity minus `assigned_v4`.
    pub available_v4: i64,
    /// IPv6 capacity minus `assigned_v6` (capacity of a CIDR with ≥ 62 host bits is `i64::MAX`).
    pub available_v6: i64,
}

/// Usable addresses of a pool per family (after `avoidBuggyIPs`), clamped like MetalLB:
/// any CIDR with ≥ 62 host bits makes the family's capacity `i64::MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCapacity {
    /// IPv4 capacity.
    pub v4: i64,
    /// IPv6 capacity.
    pub v6: i64,
}

impl PoolCapacity {
    /// Both families together (saturating).
    pub fn total(&self) -> i64 {
        self.v4.saturating_add(self.v6)
    }
}

/// The allocator state: pools plus every Service's assignment.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    _todo: (),
}

/// Per-Service results of [`Allocator::rebuild`], sorted by key.
pub type RebuildResults = Vec<(ServiceKey, Result<Assignment, AllocError>)>;

impl Allocator {
    /// An allocator over `pools` with no assignment.
    pub fn new(_pools: Vec<Pool>) -> Self {
        todo!("implementation in progress")
    }

    /// Replaces the pools. Assignments whose IPs are still inside a pool that allows the
    /// Service are kept (moving to a renamed/split pool); the others are dropped and
    /// returned, sorted by key.
    pub fn set_pools(&mut self, _pools: Vec<Pool>) -> Vec<Cleared> {
        todo!()
    }

    /// Gives `req` an assignment: keeps a valid existing one (in memory, else from
    /// `req.current_ips`), otherwise allocates. On error the Service holds nothing.
    pub fn ensure(&mut self, _req: &ServiceRequest) -> Result<Assignment, AllocError> {
        todo!()
    }

    /// Forgets the Service (deleted, or no longer a LoadBalancer).
    pub fn release(&mut self, _key: &ServiceKey) -> Option<Released> {
        todo!()
    }

    /// Rebuilds the state after a restart from every Service (with `current_ips` from
    /// their statuses): valid existing assignments are adopted first, then the rest is
    /// allocated in key order. The result does not depend on the iteration order.
    pub fn rebuild(
        _pools: Vec<Pool>,
        _reqs: impl IntoIterator<Item = ServiceRequest>,
    ) -> (Allocator, RebuildResults) {
        todo!()
    }

    /// True when `req` (currently pending) might get an IP from `pool` — use it with
    /// [`Allocator::take_freed`] to retry only the pending Services that can use freed room.
    pub fn could_use(&self, _req: &ServiceRequest, _pool: &str) -> bool {
        todo!()
    }

    /// Names of pools that gained room (an IP freed, a tenant left a shared IP, or a
    /// config change) since the last call.
    pub fn take_freed(&mut self) -> BTreeSet<String> {
        todo!()
    }

    /// Counters of a pool, `None` if it does not exist.
    pub fn pool_counters(&self, _pool: &str) -> Option<PoolCounters> {
        todo!()
    }

    /// Capacity of a pool, `None` if it does not exist.
    pub fn pool_capacity(&self, _pool: &str) -> Option<PoolCapacity> {
        todo!()
    }

    /// Names of the configured pools, sorted.
    pub fn pool_names(&self) -> Vec<String> {
        todo!()
    }

    /// The IPs and pool of a Service, if it has an assignment.
    pub fn assigned(&self, _key: &ServiceKey) -> Option<(&[IpAddr], &str)> {
        todo!()
    }

    /// Every assignment, sorted by key.
    pub fn snapshot(&self) -> Vec<(ServiceKey, Vec<IpAddr>, String)> {
        todo!()
    }
}

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
//! in which Services arrive. A frozen pool ([`Pool::frozen`]: its spec became invalid and
//! its last valid one is kept) keeps every assignment it has, in memory or in a Service's
//! status, and gives out nothing new.
//!
//! Complexity: allocation and release are O(log n) in the number of used addresses
//! (per-CIDR sets of used intervals over a u128 index space; IPv6 /64 pools are never
//! enumerated).

mod error;
mod pool;
mod request;
mod space;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub use error::AllocError;
pub use request::{
    check_requested_ips, legacy_annotations, Family, FamilyPolicy, Protocol, RequestError,
    ServiceKey, ServiceRequest, ANNOTATION_ADDRESS_POOL, ANNOTATION_ALLOW_SHARED_IP,
    ANNOTATION_IP_ALLOCATED_FROM_POOL, ANNOTATION_LOAD_BALANCER_IPS, LEGACY_PREFIX, PREFIX,
};

use crate::config::Pool;

use pool::{fam_idx, Lookup, PoolState};

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

/// A Service's assignment as held in memory.
#[derive(Clone, Debug)]
struct Held {
    /// The request it was made for (`current_ips` cleared).
    req: ServiceRequest,
    /// Its IPs, in status order.
    ips: Vec<IpAddr>,
    /// Index of its pool in `Allocator::pools`.
    pool: usize,
}

/// Who uses one IP.
#[derive(Clone, Debug)]
struct IpUse {
    /// Pool whose counters include this IP.
    pool: usize,
    /// Sharing key of every tenant (all equal).
    sharing: Option<String>,
    /// Backend key of every tenant (all equal).
    backend: String,
    /// Tenants and their ports, sorted by key. A Vec, not a map: an IP has one tenant,
    /// or a few when shared, and a one-entry map costs ~800 bytes per IP.
    tenants: Vec<(ServiceKey, PortSet)>,
}

/// A Service's distinct (protocol, port) pairs, sorted.
type PortSet = Box<[(Protocol, u16)]>;

impl IpUse {
    /// Adds or replaces a tenant's ports.
    fn insert_tenant(&mut self, key: &ServiceKey, ports: PortSet) {
        match self.tenants.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(i) => self.tenants[i].1 = ports,
            Err(i) => self.tenants.insert(i, (key.clone(), ports)),
        }
    }

    /// Removes a tenant (no-op when absent).
    fn remove_tenant(&mut self, key: &ServiceKey) {
        if let Ok(i) = self.tenants.binary_search_by(|(k, _)| k.cmp(key)) {
            self.tenants.remove(i);
        }
    }
}

/// The allocator state: pools plus every Service's assignment.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    /// Pools sorted by name.
    pools: Vec<PoolState>,
    /// Name → index in `pools`.
    by_name: BTreeMap<String, usize>,
    /// Address → covering CIDRs.
    lookup: Lookup,
    /// Pools with `serviceAllocation` and `autoAssign`, by (priority, 0 last; name).
    pinned: Vec<usize>,
    /// Pools without `serviceAllocation`, with `autoAssign`, by name.
    auto: Vec<usize>,
    /// Assignments.
    services: BTreeMap<ServiceKey, Held>,
    /// IPs in use.
    ips: BTreeMap<IpAddr, IpUse>,
    /// (sharing key, backend key) → IPs whose tenants have them (for auto sharing).
    shareable: BTreeMap<(String, String), BTreeSet<IpAddr>>,
    /// Pools that gained room since the last `take_freed`.
    freed: BTreeSet<String>,
}

/// Per-Service results of [`Allocator::rebuild`], sorted by key.
pub type RebuildResults = Vec<(ServiceKey, Result<Assignment, AllocError>)>;

/// The family sets to try, in order, for a request.
fn family_plan(req: &ServiceRequest) -> Result<Vec<Vec<Family>>, AllocError> {
    match req.cluster_families.as_slice() {
        [] => Err(AllocError::NoClusterIps),
        [_] if req.family_policy == FamilyPolicy::RequireDualStack => {
            Err(AllocError::NotEnoughClusterIps)
        }
        [f] => Ok(vec![vec![*f]]),
        [primary, ..] => {
            let dual = vec![Family::V4, Family::V6];
            if req.family_policy == FamilyPolicy::PreferDualStack {
                Ok(vec![dual, vec![*primary], vec![primary.other()]])
            } else {
                Ok(vec![dual])
            }
        }
    }
}

/// True when a set of IPs has a family set the Service accepts.
fn families_ok(plan: &[Vec<Family>], ips: &[IpAddr]) -> bool {
    let mut fams: Vec<Family> = ips.iter().map(Family::of).collect();
    fams.sort();
    plan.iter().any(|p| {
        let mut p = p.clone();
        p.sort();
        p == fams
    })
}

/// `req` without `current_ips` (what an assignment depends on).
fn normalized(req: &ServiceRequest) -> ServiceRequest {
    ServiceRequest {
        current_ips: Vec::new(),
        ..req.clone()
    }
}

impl Allocator {
    /// An allocator over `pools` with no assignment. Pools with a duplicate name are
    /// ignored (the first one wins).
    pub fn new(pools: Vec<Pool>) -> Self {
        let mut a = Allocator::default();
        a.install_pools(pools);
        a
    }

    fn install_pools(&mut self, pools: Vec<Pool>) {
        let mut by_name = BTreeMap::new();
        let mut list: Vec<Pool> = Vec::new();
        for p in pools {
            // Validated configurations never repeat a name (validation reports it), so a
            // duplicate can only come from a direct caller: the first one wins, as documented.
            if by_name.contains_key(&p.name) {
                continue;
            }
            by_name.insert(p.name.clone(), ());
            list.push(p);
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        self.pools = list.into_iter().map(PoolState::new).collect();
        self.by_name = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pool.name.to_string(), i))
            .collect();
        self.lookup = Lookup::new(&self.pools);
        let mut pinned: Vec<usize> = (0..self.pools.len())
            .filter(|&i| {
                let p = &self.pools[i].pool;
                p.allocation.is_some() && p.auto_assign && !p.frozen
            })
            .collect();
        pinned.sort_by(|&a, &b| {
            self.pools[a]
                .pinned_rank()
                .cmp(&self.pools[b].pinned_rank())
        });
        self.pinned = pinned;
        self.auto = (0..self.pools.len())
            .filter(|&i| {
                let p = &self.pools[i].pool;
                p.allocation.is_none() && p.auto_assign && !p.frozen
            })
            .collect();
        self.services.clear();
        self.ips.clear();
        self.shareable.clear();
    }

    /// Replaces the pools. Assignments whose IPs are still inside one pool that allows
    /// the Service are kept (moving to a renamed/split pool); the others are dropped and
    /// returned, sorted by key. Every new pool is reported by [`Allocator::take_freed`].
    pub fn set_pools(&mut self, pools: Vec<Pool>) -> Vec<Cleared> {
        let old = std::mem::take(&mut self.services);
        let old_names: Vec<String> = self.pools.iter().map(|p| p.pool.name.to_string()).collect();
        self.install_pools(pools);
        let mut cleared = Vec::new();
        for (key, held) in old {
            let verdict = family_plan(&held.req)
                .map_err(|e| e.to_string())
                .and_then(|plan| self.validate_current(&held.req, &plan, &held.ips));
            match verdict {
                Ok(p) => self.commit(&held.req, held.ips, p),
                Err(e) => {
                    let pool = old_names[held.pool].clone();
                    self.freed.insert(pool.clone());
                    cleared.push(Cleared {
                        key,
                        ips: held.ips,
                        pool,
                        reason: e,
                    });
                }
            }
        }
        self.freed.extend(self.by_name.keys().cloned());
        cleared
    }

    /// Gives `req` an assignment: keeps a valid existing one (in memory, else from
    /// `req.current_ips`), otherwise allocates. On error the Service holds nothing.
    pub fn ensure(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        let result = self.ensure_inner(req);
        if result.is_err() {
            self.release_internal(&req.key);
        }
        result
    }

    fn ensure_inner(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        let plan = family_plan(req)?;
        if !req.requested_ips.is_empty() {
            check_requested_ips(&req.requested_ips).map_err(AllocError::InvalidIps)?;
            if !families_ok(&plan, &req.requested_ips) {
                return Err(AllocError::FamilyMismatch);
            }
        }
        if self.pools.is_empty() {
            return Err(AllocError::NoPools);
        }
        let norm = normalized(req);
        let (current, held) = match self.services.get(&req.key) {
            Some(h) => (h.ips.clone(), Some(h.req == norm)),
            None => (req.current_ips.clone(), None),
        };
        let mut reason = None;
        if !current.is_empty() {
            let verdict = if held == Some(true) {
                // Same request as when assigned; set_pools revalidates on config change.
                Ok(self.services[&req.key].pool)
            } else {
                self.validate_current(req, &plan, &current)
            };
            match verdict {
                Ok(p) => {
                    if held != Some(true) {
                        self.release_internal(&req.key);
                        self.commit(&norm, current.clone(), p);
                    }
                    return Ok(self.maybe_add_family(req, current, p));
                }
                Err(r) => reason = Some(r),
            }
        }
        self.release_internal(&req.key);
        let (ips, p) = self.allocate(req, &plan)?;
        self.commit(&norm, ips.clone(), p);
        let change = match reason {
            Some(reason) => Change::Reallocated {
                reason,
                previous_ips: current,
            },
            None => Change::Allocated,
        };
        Ok(Assignment {
            ips,
            pool: self.pools[p].pool.name.to_string(),
            change,
        })
    }

    /// PreferDualStack with one IP: try the other family from the same pool.
    fn maybe_add_family(&mut self, req: &ServiceRequest, ips: Vec<IpAddr>, p: usize) -> Assignment {
        let pool = self.pools[p].pool.name.to_string();
        let wants_both = req.family_policy == FamilyPolicy::PreferDualStack
            && !self.pools[p].pool.frozen
            && req.cluster_families.len() == 2
            && req.requested_ips.is_empty();
        if let ([only], true) = (ips.as_slice(), wants_both) {
            let missing = Family::of(only).other();
            if let Some(ip) = self.find_in_pool(p, missing, req) {
                let norm = normalized(req);
                self.add_tenant(&norm, ip, p);
                let h = self.services.get_mut(&req.key).expect("just committed");
                h.ips.push(ip);
                return Assignment {
                    ips: h.ips.clone(),
                    pool,
                    change: Change::AddedFamily { ip },
                };
            }
        }
        Assignment {
            ips,
            pool,
            change: Change::Unchanged,
        }
    }

    /// Checks IPs a Service already has; `Err` is the reason to drop them.
    fn validate_current(
        &self,
        req: &ServiceRequest,
        plan: &[Vec<Family>],
        current: &[IpAddr],
    ) -> Result<usize, String> {
        if check_requested_ips(current).is_err() || !families_ok(plan, current) {
            return Err(format!(
                "IPs {current:?} do not match the Service's IP families"
            ));
        }
        if !req.requested_ips.is_empty() {
            let want: BTreeSet<_> = req.requested_ips.iter().collect();
            let have: BTreeSet<_> = current.iter().collect();
            if want != have {
                return Err(format!(
                    "requested IPs {:?} differ from current IPs {current:?}",
                    req.requested_ips
                ));
            }
        }
        let p = self
            .locate(current, req, false)
            .map_err(|e| e.to_string())?;
        if let Some(want) = &req.requested_pool {
            if **want != *self.pools[p].pool.name {
                return Err(format!(
                    "pool {want:?} requested but the IPs are from pool {:?}",
                    self.pools[p].pool.name
                ));
            }
        }
        self.check_sharing_all(current, req)
            .map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// The pool holding all of `ips` that allows `req`.
    fn locate(
        &self,
        ips: &[IpAddr],
        req: &ServiceRequest,
        requested: bool,
    ) -> Result<usize, AllocError> {
        let mut found: Vec<usize> = Vec::new();
        for ip in ips {
            let not_allowed = || {
                if requested {
                    AllocError::RequestedIpNotAllowed {
                        ip: *ip,
                        service: req.key.clone(),
                    }
                } else {
                    AllocError::IpNotAllowed {
                        ip: *ip,
                        service: req.key.clone(),
                    }
                }
            };
            let mut cands: Vec<usize> = self
                .lookup
                .covering(ip)
                .into_iter()
                .map(|(p, _)| p)
                .filter(|&p| self.pools[p].usable(ip))
                .collect();
            cands.sort_unstable();
            cands.dedup();
            if requested {
                if let Some(want) = &req.requested_pool {
                    let Some(&w) = self.by_name.get(want) else {
                        return Err(AllocError::UnknownPool(want.clone()));
                    };
                    if !cands.contains(&w) {
                        return Err(AllocError::RequestedIpNotInPool {
                            ip: *ip,
                            pool: want.clone(),
                        });
                    }
                    if !self.pools[w].allows(req) {
                        return Err(AllocError::PoolNotAllowed {
                            pool: want.clone(),
                            service: req.key.clone(),
                        });
                    }
                    cands = vec![w];
                }
            }
            cands.retain(|&p| self.pools[p].allows(req));
            let p = *cands.first().ok_or_else(not_allowed)?;
            found.push(p);
        }
        found.dedup();
        match found.as_slice() {
            [p] => Ok(*p),
            [] => Err(AllocError::NoAvailableIps),
            _ => Err(AllocError::SplitPools {
                ips: ips.to_vec(),
                pools: found
                    .iter()
                    .map(|&p| self.pools[p].pool.name.to_string())
                    .collect(),
            }),
        }
    }

    /// Whether `req` may use `ip` given the other Services on it.
    fn check_sharing(&self, ip: &IpAddr, req: &ServiceRequest) -> Result<(), AllocError> {
        let Some(u) = self.ips.get(ip) else {
            return Ok(());
        };
        let mut others = u.tenants.iter().filter(|(k, _)| *k != req.key).peekable();
        let Some((first, _)) = others.peek() else {
            return Ok(());
        };
        let (mine, theirs) = match (&req.sharing_key, &u.sharing) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(AllocError::IpInUse {
                    ip: *ip,
                    by: first.clone(),
                })
            }
        };
        if mine != theirs {
            return Err(AllocError::SharingKeyMismatch {
                requested: mine.clone(),
                existing: theirs.clone(),
                ip: *ip,
            });
        }
        if req.backend_key != u.backend {
            return Err(AllocError::BackendKeyMismatch {
                requested: req.backend_key.clone(),
                existing: u.backend.clone(),
                ip: *ip,
            });
        }
        for (_, ports) in others {
            if let Some(&(protocol, port)) =
                req.ports.iter().find(|p| ports.binary_search(p).is_ok())
            {
                return Err(AllocError::PortInUse {
                    protocol,
                    port,
                    ip: *ip,
                });
            }
        }
        Ok(())
    }

    fn check_sharing_all(&self, ips: &[IpAddr], req: &ServiceRequest) -> Result<(), AllocError> {
        ips.iter().try_for_each(|ip| self.check_sharing(ip, req))
    }

    /// Lowest usable address of family `f` in pool `p` that `req` may take: CIDRs in
    /// configured order; within a CIDR the lowest of (first free, first shareable).
    fn find_in_pool(&self, p: usize, f: Family, req: &ServiceRequest) -> Option<IpAddr> {
        let share_set = req
            .sharing_key
            .as_ref()
            .and_then(|k| self.shareable.get(&(k.clone(), req.backend_key.clone())));
        for c in self.pools[p].cidrs.iter().filter(|c| c.family == f) {
            let free = c.first_free();
            let shared = share_set.and_then(|set| {
                let lo = space::ip_of(f, c.start);
                let hi = space::ip_of(f, c.end);
                set.range(lo..=hi)
                    .take_while(|ip| free.is_none_or(|fr| **ip < fr))
                    .find(|ip| c.usable(ip) && self.check_sharing(ip, req).is_ok())
                    .copied()
            });
            if let Some(ip) = shared.or(free) {
                return Some(ip);
            }
        }
        None
    }

    /// All families of `fams` from pool `p`, or `None`.
    fn alloc_from_pool(
        &self,
        p: usize,
        fams: &[Family],
        req: &ServiceRequest,
    ) -> Option<Vec<IpAddr>> {
        if !fams.iter().all(|f| self.pools[p].has_family(*f)) {
            return None;
        }
        fams.iter().map(|f| self.find_in_pool(p, *f, req)).collect()
    }

    /// Fresh allocation (the Service holds nothing).
    fn allocate(
        &self,
        req: &ServiceRequest,
        plan: &[Vec<Family>],
    ) -> Result<(Vec<IpAddr>, usize), AllocError> {
        if !req.requested_ips.is_empty() {
            let p = self.locate(&req.requested_ips, req, true)?;
            self.not_frozen(p)?;
            self.check_sharing_all(&req.requested_ips, req)?;
            return Ok((req.requested_ips.clone(), p));
        }
        if let Some(name) = &req.requested_pool {
            let &p = self
                .by_name
                .get(name)
                .ok_or_else(|| AllocError::UnknownPool(name.clone()))?;
            self.not_frozen(p)?;
            if !self.pools[p].allows(req) {
                return Err(AllocError::PoolNotAllowed {
                    pool: name.clone(),
                    service: req.key.clone(),
                });
            }
            for fams in plan {
                if let Some(ips) = self.alloc_from_pool(p, fams, req) {
                    return Ok((ips, p));
                }
            }
            return Err(AllocError::NoAvailableIpsInPool(name.clone()));
        }
        let pinned: Vec<usize> = self
            .pinned
            .iter()
            .copied()
            .filter(|&p| self.pools[p].allows(req))
            .collect();
        for tier in [&pinned, &self.auto] {
            for fams in plan {
                for &p in tier.iter() {
                    if let Some(ips) = self.alloc_from_pool(p, fams, req) {
                        return Ok((ips, p));
                    }
                }
            }
        }
        Err(AllocError::NoAvailableIps)
    }

    /// A frozen pool gives out nothing new.
    fn not_frozen(&self, p: usize) -> Result<(), AllocError> {
        let pool = &self.pools[p].pool;
        if pool.frozen {
            return Err(AllocError::PoolFrozen(pool.name.to_string()));
        }
        Ok(())
    }

    /// Records an assignment (the Service must hold nothing).
    fn commit(&mut self, req: &ServiceRequest, ips: Vec<IpAddr>, p: usize) {
        for ip in &ips {
            self.add_tenant(req, *ip, p);
        }
        self.services.insert(
            req.key.clone(),
            Held {
                req: normalized(req),
                ips,
                pool: p,
            },
        );
    }

    fn add_tenant(&mut self, req: &ServiceRequest, ip: IpAddr, p: usize) {
        let new = !self.ips.contains_key(&ip);
        let u = self.ips.entry(ip).or_insert_with(|| IpUse {
            pool: p,
            sharing: req.sharing_key.clone(),
            backend: req.backend_key.clone(),
            tenants: Vec::new(),
        });
        u.insert_tenant(&req.key, req.port_set());
        if u.tenants.len() == 1 {
            // Sole tenant: the IP takes its keys (it may have changed its sharing key).
            if let Some(k) = u.sharing.take() {
                if let Some(set) = self.shareable.get_mut(&(k, u.backend.clone())) {
                    set.remove(&ip);
                }
            }
            u.sharing = req.sharing_key.clone();
            u.backend = req.backend_key.clone();
            if let Some(k) = &u.sharing {
                self.shareable
                    .entry((k.clone(), u.backend.clone()))
                    .or_default()
                    .insert(ip);
            }
        }
        if new {
            for (cp, cc) in self.lookup.covering(&ip) {
                self.pools[cp].cidrs[cc].mark(&ip);
            }
            self.pools[p].assigned[fam_idx(Family::of(&ip))] += 1;
        }
    }

    /// Drops a Service's assignment; returns (ips, pool, fully freed ips).
    fn release_internal(&mut self, key: &ServiceKey) -> Option<Released> {
        let held = self.services.remove(key)?;
        let mut freed_ips = Vec::new();
        for ip in &held.ips {
            let Some(u) = self.ips.get_mut(ip) else {
                continue;
            };
            u.remove_tenant(key);
            if !u.tenants.is_empty() {
                continue;
            }
            let u = self.ips.remove(ip).expect("present");
            if let Some(k) = u.sharing {
                let sk = (k, u.backend);
                if let Some(set) = self.shareable.get_mut(&sk) {
                    set.remove(ip);
                    if set.is_empty() {
                        self.shareable.remove(&sk);
                    }
                }
            }
            for (cp, cc) in self.lookup.covering(ip) {
                self.pools[cp].cidrs[cc].unmark(ip);
            }
            let slot = &mut self.pools[u.pool].assigned[fam_idx(Family::of(ip))];
            *slot = slot.saturating_sub(1);
            freed_ips.push(*ip);
        }
        let pool = self.pools[held.pool].pool.name.to_string();
        self.freed.insert(pool.clone());
        Some(Released {
            ips: held.ips,
            pool,
            freed_ips,
        })
    }

    /// Forgets the Service (deleted, or no longer a LoadBalancer).
    pub fn release(&mut self, key: &ServiceKey) -> Option<Released> {
        self.release_internal(key)
    }

    /// Rebuilds the state after a restart from every Service (with `current_ips` from
    /// their statuses): valid existing assignments are adopted first (most IPs first,
    /// then by key), then every Service is ensured in key order (adopted ones first).
    /// The result does not depend on the iteration order. With duplicate keys the
    /// request that sorts first (by its debug form) wins.
    pub fn rebuild(
        pools: Vec<Pool>,
        reqs: impl IntoIterator<Item = ServiceRequest>,
    ) -> (Allocator, RebuildResults) {
        let mut a = Allocator::new(pools);
        let mut reqs: Vec<ServiceRequest> = reqs.into_iter().collect();
        reqs.sort_by(|x, y| {
            x.key
                .cmp(&y.key)
                .then_with(|| format!("{x:?}").cmp(&format!("{y:?}")))
        });
        reqs.dedup_by(|x, y| x.key == y.key);
        let mut adopt_order: Vec<&ServiceRequest> =
            reqs.iter().filter(|r| !r.current_ips.is_empty()).collect();
        adopt_order.sort_by(|x, y| {
            y.current_ips
                .len()
                .cmp(&x.current_ips.len())
                .then_with(|| x.key.cmp(&y.key))
        });
        let mut adopted = BTreeSet::new();
        for r in adopt_order {
            let Ok(plan) = family_plan(r) else { continue };
            if !r.requested_ips.is_empty()
                && (check_requested_ips(&r.requested_ips).is_err()
                    || !families_ok(&plan, &r.requested_ips))
            {
                continue;
            }
            if let Ok(p) = a.validate_current(r, &plan, &r.current_ips) {
                a.commit(&normalized(r), r.current_ips.clone(), p);
                adopted.insert(r.key.clone());
            }
        }
        let mut results = BTreeMap::new();
        let (first, rest): (Vec<_>, Vec<_>) = reqs.iter().partition(|r| adopted.contains(&r.key));
        for r in first.into_iter().chain(rest) {
            results.insert(r.key.clone(), a.ensure(r));
        }
        a.freed.clear();
        (a, results.into_iter().collect())
    }

    /// True when `req` (currently pending) might get an IP from `pool` — use it with
    /// [`Allocator::take_freed`] to retry only the pending Services that can use freed room.
    pub fn could_use(&self, req: &ServiceRequest, pool: &str) -> bool {
        let Some(&p) = self.by_name.get(pool) else {
            return false;
        };
        let ps = &self.pools[p];
        if ps.pool.frozen {
            return false;
        }
        if let Some(want) = &req.requested_pool {
            if want != pool {
                return false;
            }
        }
        if !req.requested_ips.is_empty() {
            return req.requested_ips.iter().any(|ip| ps.covers(ip)) && ps.allows(req);
        }
        ps.allows(req) && (ps.pool.auto_assign || req.requested_pool.is_some())
    }

    /// Names of pools that gained room (an IP freed, a tenant left a shared IP, or a
    /// config change) since the last call.
    pub fn take_freed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.freed)
    }

    /// Counters of a pool, `None` if it does not exist.
    pub fn pool_counters(&self, pool: &str) -> Option<PoolCounters> {
        self.by_name.get(pool).map(|&p| self.pools[p].counters())
    }

    /// Capacity of a pool, `None` if it does not exist.
    pub fn pool_capacity(&self, pool: &str) -> Option<PoolCapacity> {
        self.by_name.get(pool).map(|&p| self.pools[p].capacity())
    }

    /// Names of the configured pools, sorted.
    pub fn pool_names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// The IPs and pool of a Service, if it has an assignment.
    pub fn assigned(&self, key: &ServiceKey) -> Option<(&[IpAddr], &str)> {
        self.services
            .get(key)
            .map(|h| (h.ips.as_slice(), &*self.pools[h.pool].pool.name))
    }

    /// The Services holding `ip`, sorted.
    pub fn services_on(&self, ip: &IpAddr) -> Vec<ServiceKey> {
        self.ips
            .get(ip)
            .map(|u| u.tenants.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default()
    }

    /// Every assignment, sorted by key.
    pub fn snapshot(&self) -> Vec<(ServiceKey, Vec<IpAddr>, String)> {
        self.services
            .iter()
            .map(|(k, h)| {
                (
                    k.clone(),
                    h.ips.clone(),
                    self.pools[h.pool].pool.name.to_string(),
                )
            })
            .collect()
    }

    /// Number of Services with an assignment.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True when no Service has an assignment.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

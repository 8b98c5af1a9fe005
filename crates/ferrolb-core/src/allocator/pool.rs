//! Pools as the allocator sees them: eligibility, candidate order, CIDR spaces,
//! counters, and a lookup from address to the CIDRs covering it.

use std::net::IpAddr;

use crate::config::Pool;

use super::request::{Family, ServiceRequest};
use super::space::{raw, CidrSpace};
use super::{PoolCapacity, PoolCounters};

/// One pool with its address spaces and counters.
#[derive(Clone, Debug)]
pub(crate) struct PoolState {
    /// The configured pool.
    pub(crate) pool: Pool,
    /// One space per CIDR, in configured order.
    pub(crate) cidrs: Vec<CidrSpace>,
    /// Distinct addresses in use, per family (index 0 = v4, 1 = v6).
    pub(crate) assigned: [u64; 2],
}

pub(crate) fn fam_idx(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl PoolState {
    pub(crate) fn new(pool: Pool) -> Self {
        let cidrs = pool
            .cidrs
            .iter()
            .map(|n| CidrSpace::new(n, pool.avoid_buggy_ips))
            .collect();
        PoolState {
            pool,
            cidrs,
            assigned: [0, 0],
        }
    }

    /// MetalLB `isPoolCompatibleWithService`: namespace (names ∪ selectors, when any)
    /// AND service selectors (when any).
    pub(crate) fn allows(&self, req: &ServiceRequest) -> bool {
        let Some(a) = &self.pool.allocation else {
            return true;
        };
        let ns_ok = (a.namespaces.is_empty() && a.namespace_selectors.is_empty())
            || a.namespaces.contains(&req.key.namespace)
            || a.namespace_selectors
                .iter()
                .any(|s| s.matches(&req.namespace_labels));
        let svc_ok = a.service_selectors.is_empty()
            || a.service_selectors.iter().any(|s| s.matches(&req.labels));
        ns_ok && svc_ok
    }

    /// True when the pool has a CIDR of family `f`.
    pub(crate) fn has_family(&self, f: Family) -> bool {
        self.cidrs.iter().any(|c| c.family == f)
    }

    /// True when `ip` is a usable address of the pool.
    pub(crate) fn usable(&self, ip: &IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.usable(ip))
    }

    /// True when `ip` is inside one of the pool's CIDRs (usable or not).
    pub(crate) fn covers(&self, ip: &IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.covers(ip))
    }

    /// Capacity per family, clamped like MetalLB.
    pub(crate) fn capacity(&self) -> PoolCapacity {
        let mut caps = [Some(0u128), Some(0u128)];
        for c in &self.cidrs {
            let slot = &mut caps[fam_idx(c.family)];
            *slot = match (*slot, c.capacity()) {
                (Some(a), Some(b)) => a.checked_add(b),
                _ => None,
            };
        }
        let clamp = |c: Option<u128>| c.map_or(i64::MAX, |c| i64::try_from(c).unwrap_or(i64::MAX));
        PoolCapacity {
            v4: clamp(caps[0]),
            v6: clamp(caps[1]),
        }
    }

    pub(crate) fn counters(&self) -> PoolCounters {
        let cap = self.capacity();
        let a4 = i64::try_from(self.assigned[0]).unwrap_or(i64::MAX);
        let a6 = i64::try_from(self.assigned[1]).unwrap_or(i64::MAX);
        PoolCounters {
            assigned_v4: a4,
            assigned_v6: a6,
            available_v4: cap.v4.saturating_sub(a4).max(0),
            available_v6: cap.v6.saturating_sub(a6).max(0),
        }
    }

    /// Sort key for pinned pools: priority ascending with 0 (unset) last, then name.
    pub(crate) fn pinned_rank(&self) -> (i64, &str) {
        let p = self.pool.allocation.as_ref().map_or(0, |a| a.priority);
        (if p == 0 { i64::MAX } else { p as i64 }, &self.pool.name)
    }
}

/// Address → covering (pool, cidr) pairs. Validated configs never overlap, but the
/// allocator stays correct when they do: a used address is marked in every CIDR covering it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lookup {
    /// (family, start, end, pool, cidr), sorted by (family, start).
    entries: Vec<(Family, u128, u128, usize, usize)>,
    /// Running maximum of (family, end) over `entries[..=i]`.
    max_end: Vec<(Family, u128)>,
}

impl Lookup {
    pub(crate) fn new(pools: &[PoolState]) -> Self {
        let mut entries: Vec<_> = pools
            .iter()
            .enumerate()
            .flat_map(|(p, ps)| {
                ps.cidrs
                    .iter()
                    .enumerate()
                    .map(move |(c, cs)| (cs.family, cs.start, cs.end, p, c))
            })
            .collect();
        entries.sort();
        let mut max_end = Vec::with_capacity(entries.len());
        let mut m: Option<(Family, u128)> = None;
        for e in &entries {
            let cur = (e.0, e.2);
            m = Some(m.map_or(cur, |m| m.max(cur)));
            max_end.extend(m);
        }
        Lookup { entries, max_end }
    }

    /// Every (pool, cidr) whose range contains `ip`.
    pub(crate) fn covering(&self, ip: &IpAddr) -> Vec<(usize, usize)> {
        let key = (Family::of(ip), raw(ip));
        let pos = self.entries.partition_point(|e| (e.0, e.1) <= key);
        let mut out = Vec::new();
        for i in (0..pos).rev() {
            if self.max_end[i] < key {
                break;
            }
            let e = &self.entries[i];
            if e.0 == key.0 && e.2 >= key.1 {
                out.push((e.3, e.4));
            }
        }
        out
    }
}

//! Per-IP owner records ("claims") and the rules for changing them.
//!
//! The owner of each IP is recorded in a Lease named `ferrolb-ip-<ip>` in the speaker
//! namespace, `spec.holderIdentity` = owning node. Unlike the node Leases it is **never
//! renewed**: liveness comes from the owner's node Lease, so a claim is written only when
//! ownership changes. Every write carries the resourceVersion the writer last saw (create
//! fails with AlreadyExists, replace with Conflict if anyone wrote in between), so two nodes
//! can never both win the same claim.
//!
//! The rules for who writes what are the election's ([`crate::election::decide_claim`]):
//! a claim's `spec.leaseTransitions` is the record's epoch. This module adds the names, the
//! API calls, and garbage collection of claims whose IP no longer exists ([`is_orphan`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use crate::election::OwnerRecord;

/// Prefix of every claim Lease name.
pub const CLAIM_PREFIX: &str = "ferrolb-ip-";
/// Annotation carrying the IP in its usual text form.
pub const IP_ANNOTATION: &str = "ferrolb.io/ip";
/// Label marking objects written by the speaker.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ferrolb-speaker");

/// Name of the claim Lease for `ip`: dotted IPv4, or the 8 IPv6 groups (uncompressed hex)
/// joined by `-` (a valid DNS subdomain, unique, no `::` ambiguity).
pub fn claim_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{CLAIM_PREFIX}{v4}"),
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("{CLAIM_PREFIX}{}", groups.join("-"))
        }
    }
}

/// The IP a claim Lease name stands for (inverse of [`claim_name`]).
pub fn ip_of_claim_name(name: &str) -> Option<IpAddr> {
    let rest = name.strip_prefix(CLAIM_PREFIX)?;
    if rest.contains('.') {
        return rest.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
    }
    let parts: Vec<&str> = rest.split('-').collect();
    if parts.len() != 8 {
        return None;
    }
    let mut seg = [0u16; 8];
    for (s, p) in seg.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 4 || p.starts_with('+') {
            return None;
        }
        *s = u16::from_str_radix(p, 16).ok()?;
    }
    let ip = IpAddr::V6(std::net::Ipv6Addr::from(seg));
    // only the canonical spelling maps back (no "0001" aliases)
    (claim_name(ip) == name).then_some(ip)
}

/// The current content of a claim as the API server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Owning node; empty when released.
    pub holder: String,
    /// resourceVersion to use as the write precondition.
    pub resource_version: String,
    /// `spec.leaseTransitions` (incremented on every change of holder).
    pub transitions: i32,
}

impl Claim {
    /// The election's view of this claim.
    pub fn record(&self) -> OwnerRecord {
        OwnerRecord {
            holder: self.holder.clone(),
            epoch: u64::try_from(self.transitions).unwrap_or(0),
        }
    }

    /// Reads a claim Lease; `None` when `lease` is not a claim.
    pub fn from_lease(lease: &Lease) -> Option<(IpAddr, Claim)> {
        let name = lease.metadata.name.as_deref()?;
        let ip = ip_of_claim_name(name)?;
        let spec = lease.spec.as_ref();
        Some((
            ip,
            Claim {
                holder: spec
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_default(),
                resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
                transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
            },
        ))
    }
}

/// Whether a claim is garbage: its IP belongs to no Service, and its holder is gone
/// (empty, or its speaker is dead). A live holder deletes its own claim through the
/// election's `Release` rule; this covers holders that died meanwhile.
pub fn is_orphan(allocated: bool, claim: &Claim, alive: &dyn Fn(&str) -> bool) -> bool {
    !allocated && (claim.holder.is_empty() || !alive(&claim.holder))
}

/// Outcome of a claim write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Our write went through; the claim now reads like this.
    Won(Claim),
    /// Someone wrote first (409): our view was stale; the reflector will bring the news.
    Lost,
}

/// Shell: reads and writes claim Leases with resourceVersion preconditions.
#[derive(Clone)]
pub struct ClaimApi {
    api: Api<Lease>,
}

impl ClaimApi {
    /// Claims live in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// A fresh (non-cached) read of a claim.
    pub async fn get(&self, ip: IpAddr) -> Result<Option<Claim>, kube::Error> {
        Ok(self
            .api
            .get_opt(&claim_name(ip))
            .await?
            .and_then(|l| Claim::from_lease(&l).map(|(_, c)| c)))
    }

    /// Writes `record` as `ip`'s claim, provided the claim still is `expected` (None: it
    /// must not exist yet).
    pub async fn write(
        &self,
        ip: IpAddr,
        expected: Option<&Claim>,
        record: &OwnerRecord,
    ) -> Result<WriteOutcome, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(claim_name(ip)),
                resource_version: expected.map(|c| c.resource_version.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_string(),
                    MANAGED_BY.1.to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    IP_ANNOTATION.to_string(),
                    ip.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(record.holder.clone()),
                acquire_time: Some(now),
                lease_transitions: Some(i32::try_from(record.epoch).unwrap_or(i32::MAX)),
                ..Default::default()
            }),
        };
        let res = match expected {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => {
                self.api
                    .replace(&claim_name(ip), &PostParams::default(), &lease)
                    .await
            }
        };
        match res {
            Ok(l) => Ok(Claim::from_lease(&l)
                .map(|(_, c)| WriteOutcome::Won(c))
                .unwrap_or(WriteOutcome::Lost)),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(WriteOutcome::Lost),
            Err(e) => Err(e),
        }
    }

    /// Deletes `ip`'s claim if it still is `expected`. Already gone or changed: Ok.
    pub async fn delete(&self, ip: IpAddr, expected: &Claim) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(expected.resource_version.clone()),
                uid: None,
            }),
            ..Default::default()
        };
        match self.api.delete(&claim_name(ip), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claim(holder: &str) -> Claim {
        Claim {
            holder: holder.into(),
            resource_version: "1".into(),
            transitions: 0,
        }
    }

    #[test]
    fn names_round_trip() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(claim_name(v4), "ferrolb-ip-10.0.0.1");
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(claim_name(v6), "ferrolb-ip-fd00-0-0-0-0-0-0-1");
        let end: IpAddr = "fd00::".parse().unwrap();
        assert_eq!(claim_name(end), "ferrolb-ip-fd00-0-0-0-0-0-0-0");
        for ip in [v4, v6, end] {
            assert_eq!(ip_of_claim_name(&claim_name(ip)), Some(ip));
        }
        for bad in [
            "ferrolb-ip-",
            "ferrolb-speaker-n1",
            "ferrolb-ip-1-2-3",
            "ferrolb-ip-fd00-0-0-0-0-0-0-0001",
            "ferrolb-ip-10.0.0",
            "ferrolb-ip-g-0-0-0-0-0-0-0",
        ] {
            assert_eq!(ip_of_claim_name(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_ip_name_round_trips(b in any::<[u8; 16]>(), v4 in any::<u32>()) {
            let v6 = IpAddr::V6(std::net::Ipv6Addr::from(b));
            prop_assert_eq!(ip_of_claim_name(&claim_name(v6)), Some(v6));
            let v4 = IpAddr::V4(std::net::Ipv4Addr::from(v4));
            prop_assert_eq!(ip_of_claim_name(&claim_name(v4)), Some(v4));
        }
        #[test]
        fn claim_names_never_panic(s in ".*") {
            let _ = ip_of_claim_name(&format!("{CLAIM_PREFIX}{s}"));
        }
    }

    #[test]
    fn orphans() {
        let alive = |n: &str| n == "a";
        assert!(!is_orphan(true, &claim(""), &alive));
        assert!(!is_orphan(false, &claim("a"), &alive));
        assert!(is_orphan(false, &claim("dead"), &alive));
        assert!(is_orphan(false, &claim(""), &alive));
        assert_eq!(
            claim("a").record(),
            OwnerRecord {
                holder: "a".into(),
                epoch: 0
            }
        );
    }
}

//! Per-IP owner records ("claims") and the rules for changing them.
//!
//! The owner of each IP is recorded in a Lease named `ferrolb-ip-<ip>` in the speaker
//! namespace, `spec.holderIdentity` = owning node. Unlike the node Leases it is **never
//! renewed**: liveness comes from the owner's node Lease, so a claim is written only when
//! ownership changes. Every write carries the resourceVersion the writer last saw (create
//! fails with AlreadyExists, replace with Conflict if anyone wrote in between), so two nodes
//! can never both win the same claim.
//!
//! Rules (pure, [`decide`]); "desired" is the election's choice, computed with the current
//! holder as the sticky incumbent:
//! * a node announces an IP only while the claim names it **and** it is the desired owner
//!   **and** its own Lease is fresh (fencing);
//! * the desired owner writes the claim when it is absent, released (empty holder), or held
//!   by a node whose Lease has expired in its eyes (confirmed by a fresh read of that Lease);
//! * a holder that is no longer desired first withdraws, then hands the claim over (writes the
//!   successor, or an empty holder when it does not know one); a live holder is never
//!   overwritten by anyone else;
//! * a holder with no eligible node at all (e.g. no endpoints) keeps the claim but stays
//!   silent, so the IP returns to it when endpoints do;
//! * a claim whose IP no longer belongs to any Service is deleted by its holder (or by
//!   anyone, if the holder is dead or empty).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

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

/// What this node must do about one IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The claim names us and we are the desired owner: answer for it.
    Announce,
    /// Write the claim for us (create, or replace an empty / dead holder's).
    Claim {
        /// The dead holder being replaced (empty/None: nothing to confirm).
        takeover_from: Option<String>,
    },
    /// We are desired but a live node still holds the claim: wait for its hand-over.
    Wait,
    /// We hold it but another node is desired: stop answering, then write `to` (or release).
    HandOff {
        /// The successor, if the election has one.
        to: Option<String>,
    },
    /// We hold it but nobody is eligible (no endpoints, …): stay silent, keep the claim.
    Hold,
    /// The IP is gone: delete its claim.
    Delete,
    /// Nothing for us.
    Idle,
}

/// The rule table described in the module docs.
pub fn decide(
    me: &str,
    allocated: bool,
    desired: Option<&str>,
    claim: Option<&Claim>,
    alive: &dyn Fn(&str) -> bool,
) -> Step {
    let holder = claim.map(|c| c.holder.as_str()).filter(|h| !h.is_empty());
    if !allocated {
        return match (claim, holder) {
            (None, _) => Step::Idle,
            (Some(_), Some(h)) if h != me && alive(h) => Step::Idle,
            (Some(_), _) => Step::Delete,
        };
    }
    match (desired, holder) {
        (Some(d), Some(h)) if d == me && h == me => Step::Announce,
        (Some(d), None) if d == me => Step::Claim {
            takeover_from: None,
        },
        (Some(d), Some(h)) if d == me => {
            if alive(h) {
                Step::Wait
            } else {
                Step::Claim {
                    takeover_from: Some(h.to_string()),
                }
            }
        }
        (Some(d), Some(h)) if h == me => Step::HandOff {
            to: Some(d.to_string()),
        },
        (None, Some(h)) if h == me => Step::Hold,
        _ => Step::Idle,
    }
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

    /// Sets the holder of `ip`'s claim to `holder` (empty: release), provided the claim
    /// still is `expected` (None: it must not exist yet).
    pub async fn write(
        &self,
        ip: IpAddr,
        expected: Option<&Claim>,
        holder: &str,
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
                holder_identity: Some(holder.to_string()),
                acquire_time: Some(now),
                lease_transitions: Some(expected.map_or(0, |c| c.transitions + 1)),
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
    fn rule_table() {
        let alive = |n: &str| n == "a" || n == "b";
        use Step::*;
        let cases: Vec<(bool, Option<&str>, Option<super::Claim>, Step)> = vec![
            // allocated, desired me
            (
                true,
                Some("a"),
                None,
                Claim {
                    takeover_from: None,
                },
            ),
            (
                true,
                Some("a"),
                Some(claim("")),
                Claim {
                    takeover_from: None,
                },
            ),
            (true, Some("a"), Some(claim("a")), Announce),
            (true, Some("a"), Some(claim("b")), Wait),
            (
                true,
                Some("a"),
                Some(claim("dead")),
                Claim {
                    takeover_from: Some("dead".into()),
                },
            ),
            // allocated, someone else desired
            (
                true,
                Some("b"),
                Some(claim("a")),
                HandOff {
                    to: Some("b".into()),
                },
            ),
            (true, Some("b"), Some(claim("b")), Idle),
            (true, Some("b"), None, Idle),
            (true, Some("b"), Some(claim("dead")), Idle),
            // nobody eligible
            (true, None, Some(claim("a")), Hold),
            (true, None, Some(claim("b")), Idle),
            (true, None, None, Idle),
            // IP gone
            (false, None, None, Idle),
            (false, None, Some(claim("a")), Delete),
            (false, None, Some(claim("")), Delete),
            (false, None, Some(claim("dead")), Delete),
            (false, None, Some(claim("b")), Idle),
        ];
        for (allocated, desired, c, want) in cases {
            assert_eq!(
                decide("a", allocated, desired, c.as_ref(), &alive),
                want,
                "allocated={allocated} desired={desired:?} claim={c:?}"
            );
        }
    }

    proptest! {
        /// Whatever the views, only the claim's holder may announce, and nobody overwrites a
        /// live holder other than itself.
        #[test]
        fn only_holder_announces_and_live_holders_are_respected(
            me in 0usize..4, holder in proptest::option::of(0usize..5), desired in proptest::option::of(0usize..4),
            allocated in any::<bool>(), alive_mask in any::<[bool; 5]>(),
        ) {
            let names = ["n0", "n1", "n2", "n3", ""];
            let me = names[me];
            let c = holder.map(|h| claim(names[h]));
            let alive = |n: &str| names.iter().position(|x| *x == n).is_some_and(|i| alive_mask[i] && !n.is_empty());
            let step = decide(me, allocated, desired.map(|d| names[d]), c.as_ref(), &alive);
            let h = c.as_ref().map(|c| c.holder.as_str()).unwrap_or("");
            if step == Step::Announce { prop_assert_eq!(h, me); }
            if let Step::Claim { .. } = step {
                prop_assert!(h.is_empty() || !alive(h));
            }
            if let Step::HandOff { .. } = step { prop_assert_eq!(h, me); }
            if step == Step::Delete { prop_assert!(h.is_empty() || h == me || !alive(h)); }
        }
    }
}

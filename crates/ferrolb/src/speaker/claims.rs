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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use crate::dense::Dense;
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
    /// Owning node; empty when released. In a [`ClaimBook`], one allocation per holder
    /// shared by every claim it holds.
    pub holder: Arc<str>,
    /// resourceVersion to use as the write precondition (boxed: a claim is 40 bytes, and
    /// the claim book's node of eleven 640).
    pub resource_version: Box<str>,
    /// `spec.leaseTransitions` (incremented on every change of holder).
    pub transitions: i32,
}

impl Claim {
    /// The election's view of this claim.
    pub fn record(&self) -> OwnerRecord {
        OwnerRecord {
            holder: self.holder.to_string(),
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
                    .and_then(|s| s.holder_identity.as_deref())
                    .unwrap_or_default()
                    .into(),
                resource_version: lease
                    .metadata
                    .resource_version
                    .clone()
                    .unwrap_or_default()
                    .into(),
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

/// Our own claim write the watch has not shown yet (laid over the watched claims).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Overlay {
    /// resourceVersion the watch showed when we wrote (None: absent).
    base: Option<Box<str>>,
    /// What we wrote (None: deleted).
    claim: Option<Claim>,
}

/// The claims, kept per watch event: what the watch shows, overlaid with our own writes it
/// has not shown yet (an overlay goes as soon as the watch shows any other
/// resourceVersion than the one it was written over). Remembers the IPs whose effective
/// claim changed until [`ClaimBook::take_changed`], and indexes the holders, so a pass reads
/// only what changed.
///
/// What the watch shows is kept apart only for the IPs with an overlay: elsewhere it is the
/// effective claim (one copy per IP, not two).
#[derive(Debug, Default, Clone)]
pub struct ClaimBook {
    /// For the IPs in `overlay`: what the watch shows (None: absent).
    shadowed: BTreeMap<IpAddr, Option<Claim>>,
    /// Our writes the watch has not shown yet.
    overlay: BTreeMap<IpAddr, Overlay>,
    /// What the watch shows with `overlay` laid over it.
    effective: BTreeMap<IpAddr, Claim>,
    /// The holder of every held effective claim (the claim's allocation).
    holders: BTreeMap<IpAddr, Arc<str>>,
    /// Holder → the IPs it holds; its keys are the one allocation of each holder's name
    /// that the effective claims and `holders` share.
    by_holder: BTreeMap<Arc<str>, BTreeSet<IpAddr>>,
    /// IPs whose effective claim changed since the last [`ClaimBook::take_changed`].
    changed: BTreeSet<IpAddr>,
    /// During a relist: the IPs listed so far (the others are gone at its end).
    relist: Option<BTreeSet<IpAddr>>,
}

impl ClaimBook {
    /// Rebuilds the per-IP tables with full B-tree nodes ([`Dense`]); the claims read the
    /// same.
    pub fn make_dense(&mut self) {
        self.shadowed.make_dense();
        self.overlay.make_dense();
        self.effective.make_dense();
        self.holders.make_dense();
        for ips in self.by_holder.values_mut() {
            ips.make_dense();
        }
    }

    /// The watch shows `claim` for `ip` (None: deleted). Returns whether the effective
    /// claim changed.
    pub fn observe(&mut self, ip: IpAddr, claim: Option<Claim>) -> bool {
        if let Some(seen) = &mut self.relist {
            if claim.is_some() {
                seen.insert(ip);
            }
        }
        let rv = claim.as_ref().map(|c| &c.resource_version);
        if self.overlay.get(&ip).is_some_and(|o| o.base.as_ref() != rv) {
            self.overlay.remove(&ip);
            self.shadowed.remove(&ip);
        }
        match self.overlay.get(&ip) {
            Some(o) => {
                let now = o.claim.clone();
                self.shadowed.insert(ip, claim);
                self.refresh(ip, now)
            }
            None => self.refresh(ip, claim),
        }
    }

    /// A relist starts: claims it does not list are gone when it ends.
    pub fn begin_relist(&mut self) {
        self.relist = Some(BTreeSet::new());
    }

    /// The relist is complete: forgets the claims it did not list. Returns whether an
    /// effective claim changed.
    pub fn end_relist(&mut self) -> bool {
        let Some(seen) = self.relist.take() else {
            return false;
        };
        let gone: Vec<IpAddr> = self.watched_ips().filter(|ip| !seen.contains(ip)).collect();
        let mut changed = false;
        for ip in gone {
            changed |= self.observe(ip, None);
        }
        changed
    }

    /// We wrote `claim` (None: deleted) over the claim of resourceVersion `base` (None:
    /// absent): laid over the watched claim until the watch shows another resourceVersion.
    pub fn wrote(&mut self, ip: IpAddr, base: Option<Box<str>>, claim: Option<Claim>) {
        if self.watched(ip).map(|c| &c.resource_version) == base.as_ref() {
            if !self.overlay.contains_key(&ip) {
                self.shadowed.insert(ip, self.effective.get(&ip).cloned());
            }
            self.overlay.insert(
                ip,
                Overlay {
                    base,
                    claim: claim.clone(),
                },
            );
            self.refresh(ip, claim);
        } else if self.overlay.remove(&ip).is_some() {
            // the watch moved on already (our write, or someone else's)
            let watched = self.shadowed.remove(&ip).flatten();
            self.refresh(ip, watched);
        }
    }

    /// resourceVersion of `ip`'s claim as the watch shows it.
    pub fn watched_rv(&self, ip: IpAddr) -> Option<Box<str>> {
        self.watched(ip).map(|c| c.resource_version.clone())
    }

    /// What the watch shows for `ip`.
    fn watched(&self, ip: IpAddr) -> Option<&Claim> {
        match self.shadowed.get(&ip) {
            Some(c) => c.as_ref(),
            None => self.effective.get(&ip),
        }
    }

    /// Every IP the watch shows a claim for.
    fn watched_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let plain = self
            .effective
            .keys()
            .filter(|ip| !self.shadowed.contains_key(ip));
        let shadowed = self
            .shadowed
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(ip, _)| ip);
        plain.chain(shadowed).copied()
    }

    /// The effective claims.
    pub fn claims(&self) -> &BTreeMap<IpAddr, Claim> {
        &self.effective
    }

    /// The holder of every held effective claim.
    pub fn holders(&self) -> &BTreeMap<IpAddr, Arc<str>> {
        &self.holders
    }

    /// Holder → the IPs it holds.
    pub fn by_holder(&self) -> &BTreeMap<Arc<str>, BTreeSet<IpAddr>> {
        &self.by_holder
    }

    /// The IPs whose effective claim changed since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<IpAddr> {
        std::mem::take(&mut self.changed)
    }

    /// Makes `now` `ip`'s effective claim, keeping the indexes in step; true when it changed.
    fn refresh(&mut self, ip: IpAddr, now: Option<Claim>) -> bool {
        if self.effective.get(&ip) == now.as_ref() {
            return false;
        }
        if let Some(h) = self.holders.remove(&ip) {
            if let Some(set) = self.by_holder.get_mut(&h) {
                set.remove(&ip);
                if set.is_empty() {
                    self.by_holder.remove(&h);
                }
            }
        }
        match now {
            Some(mut c) => {
                if !c.holder.is_empty() {
                    // the holder's one allocation, if it holds other claims already
                    if let Some((name, _)) = self.by_holder.get_key_value(&*c.holder) {
                        c.holder = name.clone();
                    }
                    self.holders.insert(ip, c.holder.clone());
                    self.by_holder
                        .entry(c.holder.clone())
                        .or_default()
                        .insert(ip);
                }
                self.effective.insert(ip, c);
            }
            None => {
                self.effective.remove(&ip);
            }
        }
        self.changed.insert(ip);
        true
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
                resource_version: expected.map(|c| c.resource_version.to_string()),
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
                resource_version: Some(expected.resource_version.to_string()),
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

    /// A claim is 40 bytes (its resourceVersion boxed, not a `String`): the claim book's
    /// B-tree node of eleven claims is 640 bytes, where 48-byte claims made it 736 (and
    /// jemalloc's next size class, 768).
    #[test]
    fn a_claim_is_40_bytes() {
        assert!(std::mem::size_of::<Claim>() <= 40);
    }

    fn claim(holder: &str) -> Claim {
        Claim {
            holder: holder.into(),
            resource_version: "1".into(),
            transitions: 0,
        }
    }

    fn c(holder: &str, rv: &str) -> Claim {
        Claim {
            holder: holder.into(),
            resource_version: rv.into(),
            transitions: 1,
        }
    }

    #[test]
    fn book_lays_our_writes_over_the_watch_until_it_moves_on() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut b = ClaimBook::default();
        assert!(b.observe(ip, Some(c("a", "1"))));
        assert_eq!(b.take_changed(), BTreeSet::from([ip]));
        // our write over rv 1, not shown yet: it is the effective claim
        b.wrote(ip, Some("1".into()), Some(c("me", "2")));
        assert_eq!(b.claims()[&ip], c("me", "2"));
        assert_eq!(b.by_holder()["me"], BTreeSet::from([ip]));
        assert!(!b.by_holder().contains_key("a"));
        assert_eq!(b.take_changed(), BTreeSet::from([ip]));
        // the watch shows our write: nothing changes
        assert!(!b.observe(ip, Some(c("me", "2"))));
        assert!(b.take_changed().is_empty());
        // a delete over rv 2, then someone else's write shows: theirs counts
        b.wrote(ip, Some("2".into()), None);
        assert!(b.claims().is_empty() && b.holders().is_empty());
        assert!(b.observe(ip, Some(c("b", "3"))));
        assert_eq!(b.claims()[&ip], c("b", "3"));
        // a write over a resourceVersion the watch no longer shows is not laid over
        b.wrote(ip, Some("2".into()), Some(c("me", "4")));
        assert_eq!(b.claims()[&ip], c("b", "3"));
        assert_eq!(b.watched_rv(ip).as_deref(), Some("3"));
    }

    #[test]
    fn book_relist_forgets_what_it_does_not_list() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let z: IpAddr = "10.0.0.2".parse().unwrap();
        let mut b = ClaimBook::default();
        b.observe(a, Some(c("x", "1")));
        b.observe(z, Some(c("y", "1")));
        b.take_changed();
        b.begin_relist();
        assert!(!b.observe(a, Some(c("x", "1"))));
        // z is still there until the relist ends
        assert!(b.claims().contains_key(&z));
        assert!(b.end_relist());
        assert_eq!(b.claims().keys().copied().collect::<Vec<_>>(), vec![a]);
        assert_eq!(b.take_changed(), BTreeSet::from([z]));
        assert!(!b.by_holder().contains_key("y"));
    }

    /// The book as first written: the watched claims all kept apart from the effective ones
    /// (the model the book must agree with).
    #[derive(Default)]
    struct TwoCopies {
        watched: BTreeMap<IpAddr, Claim>,
        overlay: BTreeMap<IpAddr, Overlay>,
        relist: Option<BTreeSet<IpAddr>>,
    }

    impl TwoCopies {
        fn observe(&mut self, ip: IpAddr, claim: Option<Claim>) {
            if let (Some(seen), true) = (&mut self.relist, claim.is_some()) {
                seen.insert(ip);
            }
            let rv = claim.as_ref().map(|c| c.resource_version.clone());
            match claim {
                Some(c) => self.watched.insert(ip, c),
                None => self.watched.remove(&ip),
            };
            if self.overlay.get(&ip).is_some_and(|o| o.base != rv) {
                self.overlay.remove(&ip);
            }
        }
        fn end_relist(&mut self) {
            if let Some(seen) = self.relist.take() {
                let gone: Vec<IpAddr> = self
                    .watched
                    .keys()
                    .filter(|ip| !seen.contains(ip))
                    .copied()
                    .collect();
                for ip in gone {
                    self.observe(ip, None);
                }
            }
        }
        fn wrote(&mut self, ip: IpAddr, base: Option<Box<str>>, claim: Option<Claim>) {
            if self.watched.get(&ip).map(|c| &c.resource_version) == base.as_ref() {
                self.overlay.insert(ip, Overlay { base, claim });
            } else {
                self.overlay.remove(&ip);
            }
        }
        fn effective(&self) -> BTreeMap<IpAddr, Claim> {
            let ips: BTreeSet<&IpAddr> = self.watched.keys().chain(self.overlay.keys()).collect();
            ips.into_iter()
                .filter_map(|ip| {
                    let c = match self.overlay.get(ip) {
                        Some(o) => o.claim.clone(),
                        None => self.watched.get(ip).cloned(),
                    };
                    Some((*ip, c?))
                })
                .collect()
        }
    }

    /// One step on a book: (kind, IP, holder, resourceVersion, base).
    fn step() -> impl Strategy<Value = (u8, u8, u8, u8, Option<u8>)> {
        (0u8..6, 0u8..3, 0u8..3, 0u8..4, proptest::option::of(0u8..4))
    }

    proptest! {
        #[test]
        fn the_book_agrees_with_two_copies_of_the_claims(steps in proptest::collection::vec(step(), 0..40)) {
            let mut b = ClaimBook::default();
            let mut m = TwoCopies::default();
            let mut changed = BTreeSet::new();
            let mut last = BTreeMap::new();
            for (kind, ip, holder, rv, base) in steps {
                let ip = IpAddr::from([10, 0, 0, ip]);
                let claim = Some(c(["", "a", "me"][holder as usize], &rv.to_string()));
                let base = base.map(|v| v.to_string().into_boxed_str());
                match kind {
                    0 | 1 => {
                        b.observe(ip, claim.clone());
                        m.observe(ip, claim);
                    }
                    2 => {
                        b.observe(ip, None);
                        m.observe(ip, None);
                    }
                    3 => {
                        b.wrote(ip, base.clone(), claim.clone());
                        m.wrote(ip, base, claim);
                    }
                    4 => {
                        b.wrote(ip, base.clone(), None);
                        m.wrote(ip, base, None);
                    }
                    _ => {
                        if m.relist.is_some() {
                            b.end_relist();
                            m.end_relist();
                        } else {
                            b.begin_relist();
                            m.relist = Some(BTreeSet::new());
                        }
                    }
                }
                let want = m.effective();
                prop_assert_eq!(b.claims(), &want);
                for i in 0..3u8 {
                    let ip = IpAddr::from([10, 0, 0, i]);
                    prop_assert_eq!(b.watched_rv(ip), m.watched.get(&ip).map(|c| c.resource_version.clone()));
                    if last.get(&ip) != want.get(&ip) {
                        changed.insert(ip);
                    }
                }
                let holders: BTreeMap<IpAddr, Arc<str>> = want
                    .iter()
                    .filter(|(_, c)| !c.holder.is_empty())
                    .map(|(ip, c)| (*ip, c.holder.clone()))
                    .collect();
                prop_assert_eq!(b.holders(), &holders);
                let mut by_holder: BTreeMap<Arc<str>, BTreeSet<IpAddr>> = BTreeMap::new();
                for (ip, h) in &holders {
                    by_holder.entry(h.clone()).or_default().insert(*ip);
                }
                prop_assert_eq!(b.by_holder(), &by_holder);
                last = want;
            }
            prop_assert_eq!(b.take_changed(), changed);
        }
    }

    #[test]
    fn claims_of_one_holder_share_its_name() {
        let (x, y, z) = (
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 3]),
        );
        let mut b = ClaimBook::default();
        // each claim decoded on its own (as the watch does): three allocations of "a"
        b.observe(x, Some(c("a", "1")));
        b.observe(y, Some(c("a", "2")));
        b.wrote(z, None, Some(c("a", "3")));
        let name = b.by_holder().keys().next().unwrap().clone();
        for ip in [x, y, z] {
            assert!(Arc::ptr_eq(&b.claims()[&ip].holder, &name), "{ip}");
            assert!(Arc::ptr_eq(&b.holders()[&ip], &name), "{ip}");
        }
        // a claim handed to another holder and back shares again
        b.observe(y, Some(c("b", "4")));
        b.observe(y, Some(c("a", "5")));
        assert!(Arc::ptr_eq(&b.claims()[&y].holder, &name));
        assert!(Arc::ptr_eq(&b.holders()[&y], &name));
        assert_eq!(b.by_holder()["a"], BTreeSet::from([x, y, z]));
        assert!(!b.by_holder().contains_key("b"));
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

//! [`elect_all`] over a sequence of inputs, re-electing only the IPs whose inputs changed.
//!
//! The owner of an IP, and the reasons recorded for `(service, IP)`, depend on the
//! configuration, the options, the nodes, the IP's current owner, and the views of the
//! Services carrying the IP (with every view sharing a key with one of them: duplicated
//! keys are never announced). So when only Service views and current owners change, the
//! IPs that can change are those carried before or after by a changed view, and those
//! whose current owner changed; all of them are re-elected together with every Service
//! carrying one of them, and the rest of the previous result is kept. A change to the
//! configuration, the options or the nodes re-elects everything. The result is always the
//! one [`elect_all`] returns for the same inputs (property test
//! `election_incremental` in the core tests).
//!
//! A pass told only what changed ([`Views::Changed`], [`Owners::Changed`]) costs what
//! changed: the previous views and owners are updated in place for the changed keys and
//! IPs, and nothing walks or copies the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::dense::Dense;

use super::elect::{elect_all, Election};
use super::eligibility::ElectionOptions;
use super::model::{NodeInfo, ServiceView};

/// What the last [`IncrementalElection::elect`] re-elected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Nothing yet.
    #[default]
    None,
    /// Every IP (first call, or the configuration, options or nodes changed).
    Full,
    /// Only this many IPs (0: the previous result was kept as it was).
    Ips(usize),
}

/// The inputs that, when changed, re-elect everything.
#[derive(Clone, Debug, PartialEq)]
struct Base {
    config: Config,
    opts: ElectionOptions,
    /// Sorted by name (the election does not depend on their order).
    nodes: Vec<NodeInfo>,
}

/// The previous election and its inputs (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct IncrementalElection {
    /// Configuration, options and nodes of the last call.
    base: Option<Base>,
    /// The views of the last call by key (more than one: a duplicated key), in input order;
    /// one is held in the table's node (no allocation of its own).
    views: BTreeMap<Arc<str>, KeyViews>,
    /// IP → keys of the views carrying it (most IPs have one: held inline, no allocation).
    by_ip: BTreeMap<IpAddr, Keys>,
    /// The current owners of the last call.
    current: BTreeMap<IpAddr, Arc<str>>,
    /// The last result.
    result: Election,
    /// What the last call re-elected.
    scope: Scope,
    /// The IPs the last call re-elected (empty after a full election: see [`Self::reelected`]).
    reelected: BTreeSet<IpAddr>,
}

impl IncrementalElection {
    /// Nothing elected yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the last call re-elected.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The last result.
    pub fn result(&self) -> &Election {
        &self.result
    }

    /// The IPs the last call re-elected: `None` when it re-elected everything (first call,
    /// or the configuration, options or nodes changed). Every other IP kept its owner and
    /// its allocation.
    pub fn reelected(&self) -> Option<&BTreeSet<IpAddr>> {
        match self.scope {
            Scope::Ips(_) => Some(&self.reelected),
            Scope::None | Scope::Full => None,
        }
    }

    /// Whether a Service view of the last call carries `ip` (the IP is allocated).
    pub fn carries(&self, ip: &IpAddr) -> bool {
        self.by_ip.contains_key(ip)
    }

    /// Equals `elect_all(config, services, nodes, current, opts)`, re-electing only the IPs
    /// whose inputs changed since the last call.
    pub fn elect(
        &mut self,
        config: &Config,
        services: &[ServiceView],
        nodes: &[NodeInfo],
        current: &BTreeMap<IpAddr, Arc<str>>,
        opts: &ElectionOptions,
    ) -> &Election {
        self.elect_views(
            config,
            Views::All(services),
            nodes,
            Owners::All(current),
            opts,
        )
    }

    /// Equals [`elect_all`] over the Service views `views` describes (see [`Views`]) and the
    /// current owners `owners` describes (see [`Owners`]), re-electing only the IPs whose
    /// inputs changed since the last call. With [`Views::Changed`] and [`Owners::Changed`]
    /// no pass walks the views or the owners that did not change.
    pub fn elect_views(
        &mut self,
        config: &Config,
        views: Views,
        nodes: &[NodeInfo],
        owners: Owners,
        opts: &ElectionOptions,
    ) -> &Election {
        let changes = match views {
            Views::All(services) => self.changes_from_all(services),
            Views::Changed(changed) => changed
                .iter()
                .filter(|(k, vs)| self.views_of(k) != vs.as_slice())
                .map(|(k, vs)| (k.clone(), vs.clone()))
                .collect(),
        };
        let current = owners.all();
        let mut sorted: Vec<&NodeInfo> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let same_base = self.base.as_ref().is_some_and(|b| {
            b.opts == *opts
                && b.nodes.len() == sorted.len()
                && b.nodes.iter().zip(&sorted).all(|(x, y)| x == *y)
                && b.config == *config
        });
        if !same_base {
            for (k, vs) in changes {
                self.replace(k, vs);
            }
            self.result = elect_all(
                config,
                self.views.values().flat_map(KeyViews::as_slice),
                nodes,
                current,
                opts,
            );
            // Everything is re-elected: copying every owner costs no more than that.
            self.current = current.clone();
            self.base = Some(Base {
                config: config.clone(),
                opts: *opts,
                nodes: sorted.into_iter().cloned().collect(),
            });
            self.scope = Scope::Full;
            self.reelected.clear();
            return &self.result;
        }

        // IPs whose current owner changed, brought up to date in place.
        let moved: Vec<IpAddr> = match owners {
            Owners::All(all) => changed_keys(&self.current, all).into_iter().collect(),
            Owners::Changed { changed, .. } => changed
                .iter()
                .filter(|ip| self.current.get(ip) != current.get(ip))
                .copied()
                .collect(),
        };
        for ip in &moved {
            match current.get(ip) {
                Some(o) => {
                    self.current.insert(*ip, o.clone());
                }
                None => {
                    self.current.remove(ip);
                }
            }
        }
        // IPs to re-elect: carried by a changed view before or after, or whose current
        // owner changed.
        let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
        for (k, vs) in &changes {
            for v in self.views_of(k).iter().chain(vs) {
                ips.extend(v.ips.iter().copied());
            }
        }
        ips.extend(moved);
        // Keys carrying those IPs before the change (their reasons may go).
        let mut keys: BTreeSet<Arc<str>> = BTreeSet::new();
        for ip in &ips {
            keys.extend(
                self.by_ip
                    .get(ip)
                    .map(Keys::as_slice)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        // Bring the views and the IP index up to date.
        for (k, vs) in changes {
            self.replace(k, vs);
        }
        if ips.is_empty() {
            self.scope = Scope::Ips(0);
            self.reelected.clear();
            return &self.result;
        }
        // Every view carrying one of the IPs now, with every view of the same key.
        let mut carrying: BTreeSet<&Arc<str>> = BTreeSet::new();
        for ip in &ips {
            carrying.extend(self.by_ip.get(ip).map(Keys::as_slice).into_iter().flatten());
        }
        let subset: Vec<ServiceView> = carrying
            .iter()
            .flat_map(|k| self.views_of(k).iter().cloned())
            .collect();
        keys.extend(carrying.into_iter().cloned());
        let mut part = elect_all(config, &subset, nodes, current, opts);

        for ip in &ips {
            self.result.owners.remove(ip);
            if let Some(o) = part.owners.remove(ip) {
                self.result.owners.insert(*ip, o);
            }
            for k in &keys {
                let entry = (k.to_string(), *ip);
                self.result.not_announced.remove(&entry);
                if let Some(r) = part.not_announced.remove(&entry) {
                    self.result.not_announced.insert(entry, r);
                }
            }
        }
        self.scope = Scope::Ips(ips.len());
        self.reelected = ips;
        &self.result
    }

    /// Rebuilds its tables (views, IP index, current owners, the result) with full
    /// B-tree nodes ([`Dense`]); what it holds and returns is unchanged.
    pub fn make_dense(&mut self) {
        self.views.make_dense();
        self.by_ip.make_dense();
        self.current.make_dense();
        self.result.owners.make_dense();
        self.result.not_announced.make_dense();
    }

    /// The views of the last call, by key.
    pub fn views(&self) -> impl Iterator<Item = &ServiceView> {
        self.views.values().flat_map(KeyViews::as_slice)
    }

    /// The views of `key` as of the last call (empty: none).
    fn views_of(&self, key: &str) -> &[ServiceView] {
        self.views.get(key).map(KeyViews::as_slice).unwrap_or(&[])
    }

    /// The keys whose views in `services` differ from the last call's, with their views now
    /// (empty: gone).
    fn changes_from_all(&self, services: &[ServiceView]) -> Vec<(Arc<str>, Vec<ServiceView>)> {
        let mut fresh: BTreeMap<&Arc<str>, Vec<&ServiceView>> = BTreeMap::new();
        for s in services {
            fresh.entry(&s.key).or_default().push(s);
        }
        let mut out: Vec<(Arc<str>, Vec<ServiceView>)> = fresh
            .iter()
            .filter(|(k, vs)| {
                let old = self.views_of(k);
                old.len() != vs.len() || old.iter().zip(vs.iter()).any(|(a, b)| a != *b)
            })
            .map(|(k, vs)| ((*k).clone(), vs.iter().map(|v| (*v).clone()).collect()))
            .collect();
        out.extend(
            self.views
                .keys()
                .filter(|k| !fresh.contains_key(k))
                .map(|k| (k.clone(), Vec::new())),
        );
        out
    }

    /// Sets the views of `key` (empty: none), keeping the IP index in step.
    fn replace(&mut self, key: Arc<str>, views: Vec<ServiceView>) {
        let old = self.views.remove(&key);
        for v in old.iter().flat_map(KeyViews::as_slice) {
            for ip in &v.ips {
                if self.by_ip.get_mut(ip).is_some_and(|keys| keys.remove(&key)) {
                    self.by_ip.remove(ip);
                }
            }
        }
        if views.is_empty() {
            return;
        }
        for v in &views {
            for ip in &v.ips {
                match self.by_ip.get_mut(ip) {
                    Some(keys) => keys.insert(&key),
                    None => {
                        self.by_ip.insert(*ip, Keys::One(key.clone()));
                    }
                }
            }
        }
        self.views.insert(key, KeyViews::from(views));
    }
}

/// The views of one key: nearly always one, held inline (in the table's node, no
/// allocation of its own); more (a duplicated key) in a vector.
#[derive(Clone, Debug, PartialEq)]
enum KeyViews {
    One(ServiceView),
    Many(Vec<ServiceView>),
}

impl KeyViews {
    /// The views, in input order.
    fn as_slice(&self) -> &[ServiceView] {
        match self {
            KeyViews::One(v) => std::slice::from_ref(v),
            KeyViews::Many(v) => v,
        }
    }
}

impl From<Vec<ServiceView>> for KeyViews {
    fn from(mut views: Vec<ServiceView>) -> Self {
        match views.len() {
            1 => KeyViews::One(views.pop().expect("one view")),
            _ => KeyViews::Many(views),
        }
    }
}

/// The keys of the views carrying one IP, sorted, without duplicates, never empty: nearly
/// always one, held inline (no allocation of its own); more (a shared IP, a duplicated key)
/// in a vector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Keys {
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Keys {
    /// The keys, in order.
    fn as_slice(&self) -> &[Arc<str>] {
        match self {
            Keys::One(k) => std::slice::from_ref(k),
            Keys::Many(v) => v,
        }
    }

    /// Adds `key` (already there: nothing).
    fn insert(&mut self, key: &Arc<str>) {
        match self {
            Keys::One(k) if k == key => {}
            Keys::One(k) => {
                let mut v = vec![k.clone(), key.clone()];
                v.sort_unstable();
                *self = Keys::Many(v);
            }
            Keys::Many(v) => {
                if let Err(i) = v.binary_search(key) {
                    v.insert(i, key.clone());
                }
            }
        }
    }

    /// Removes `key`; returns whether none is left (the caller drops the entry).
    fn remove(&mut self, key: &Arc<str>) -> bool {
        match self {
            Keys::One(k) => k == key,
            Keys::Many(v) => {
                if let Ok(i) = v.binary_search(key) {
                    v.remove(i);
                }
                match v.len() {
                    0 => true,
                    1 => {
                        *self = Keys::One(v[0].clone());
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

/// The Service views of one [`IncrementalElection::elect_views`] call.
#[derive(Clone, Copy, Debug)]
pub enum Views<'a> {
    /// Every view (more than one per key: a duplicated key).
    All(&'a [ServiceView]),
    /// Only the keys whose views may have changed since the last call, with their views
    /// now (empty: none); every other key keeps its views.
    Changed(&'a BTreeMap<Arc<str>, Vec<ServiceView>>),
}

/// The current owners of one [`IncrementalElection::elect_views`] call.
#[derive(Clone, Copy, Debug)]
pub enum Owners<'a> {
    /// The owner of every IP.
    All(&'a BTreeMap<IpAddr, Arc<str>>),
    /// The owner of every IP (`all`), of which only the IPs of `changed` may differ from
    /// the last call's: the others are not compared.
    Changed {
        /// The owner of every IP (looked up only for the IPs re-elected).
        all: &'a BTreeMap<IpAddr, Arc<str>>,
        /// Every IP whose owner may differ from the last call's (more do no harm).
        changed: &'a BTreeSet<IpAddr>,
    },
}

impl<'a> Owners<'a> {
    /// The owner of every IP.
    pub fn all(&self) -> &'a BTreeMap<IpAddr, Arc<str>> {
        match *self {
            Owners::All(all) | Owners::Changed { all, .. } => all,
        }
    }
}

/// Keys whose value differs between `a` and `b` (present in one only, or different).
fn changed_keys(
    a: &BTreeMap<IpAddr, Arc<str>>,
    b: &BTreeMap<IpAddr, Arc<str>>,
) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let (mut x, mut y) = (a.iter().peekable(), b.iter().peekable());
    loop {
        match (x.peek(), y.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                out.insert(**k);
                x.next();
            }
            (None, Some((k, _))) => {
                out.insert(**k);
                y.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.insert(**ka);
                    x.next();
                }
                std::cmp::Ordering::Greater => {
                    out.insert(**kb);
                    y.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        out.insert(**ka);
                    }
                    x.next();
                    y.next();
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn changed_keys_finds_added_removed_and_changed() {
        let a: BTreeMap<IpAddr, Arc<str>> = [(ip("10.0.0.1"), "a"), (ip("10.0.0.2"), "b")]
            .into_iter()
            .map(|(k, v)| (k, Arc::from(v)))
            .collect();
        let b: BTreeMap<IpAddr, Arc<str>> = [(ip("10.0.0.2"), "c"), (ip("10.0.0.3"), "d")]
            .into_iter()
            .map(|(k, v)| (k, Arc::from(v)))
            .collect();
        assert_eq!(
            changed_keys(&a, &b),
            [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")].into()
        );
        assert!(changed_keys(&a, &a).is_empty());
    }

    #[test]
    fn an_ips_keys_are_a_sorted_set_held_inline_when_one() {
        let k = |s: &str| -> Arc<str> { s.into() };
        let mut keys = Keys::One(k("ns/b"));
        keys.insert(&k("ns/b"));
        assert_eq!(keys, Keys::One(k("ns/b")));
        keys.insert(&k("ns/c"));
        keys.insert(&k("ns/a"));
        assert_eq!(keys.as_slice(), [k("ns/a"), k("ns/b"), k("ns/c")]);
        assert!(!keys.remove(&k("ns/b")));
        assert!(!keys.remove(&k("ns/x")));
        assert!(!keys.remove(&k("ns/a")));
        // back to one: inline again
        assert_eq!(keys, Keys::One(k("ns/c")));
        assert!(!keys.remove(&k("ns/x")) && keys.as_slice() == [k("ns/c")]);
        assert!(keys.remove(&k("ns/c")));
        assert!(std::mem::size_of::<Keys>() <= 32);
    }

    /// A key's one view is held inline, no larger than the view itself (its node holds
    /// it where a vector's block held it before); a duplicated key's views stay in order.
    #[test]
    fn a_keys_views_are_held_inline_when_one() {
        let v = |i: u8| ServiceView::new("ns/a", vec![ip(&format!("10.0.0.{i}"))], None);
        let one = KeyViews::from(vec![v(1)]);
        assert!(matches!(one, KeyViews::One(_)));
        assert_eq!(one.as_slice(), [v(1)]);
        let two = KeyViews::from(vec![v(2), v(1)]);
        assert_eq!(two.as_slice(), [v(2), v(1)]);
        assert!(KeyViews::from(Vec::new()).as_slice().is_empty());
        assert_eq!(
            std::mem::size_of::<KeyViews>(),
            std::mem::size_of::<ServiceView>()
        );
        let mut inc = IncrementalElection::new();
        let views = [v(1), v(2), v(3)];
        inc.elect(
            &Config::default(),
            &views,
            &[NodeInfo::new("a")],
            &BTreeMap::new(),
            &ElectionOptions::default(),
        );
        assert!(inc.views().eq(views.iter()));
    }

    #[test]
    fn one_changed_view_re_elects_only_its_ips() {
        let cfg = Config::default();
        let nodes = vec![NodeInfo::new("a"), NodeInfo::new("b")];
        let mut svcs: Vec<ServiceView> = (1..=20)
            .map(|i| ServiceView::new(format!("ns/s{i}"), vec![ip(&format!("10.0.0.{i}"))], None))
            .collect();
        let opts = ElectionOptions::default();
        let cur = BTreeMap::new();
        let mut inc = IncrementalElection::new();
        inc.elect(&cfg, &svcs, &nodes, &cur, &opts);
        assert_eq!(inc.scope(), Scope::Full);
        inc.elect(&cfg, &svcs, &nodes, &cur, &opts);
        assert_eq!(inc.scope(), Scope::Ips(0));
        svcs[3].has_serving_endpoint = false;
        svcs[7].ips = vec![ip("10.0.0.99")];
        let got = inc.elect(&cfg, &svcs, &nodes, &cur, &opts).clone();
        // s4's IP, s8's old and new IP
        assert_eq!(inc.scope(), Scope::Ips(3));
        let want: BTreeSet<IpAddr> = [ip("10.0.0.4"), ip("10.0.0.8"), ip("10.0.0.99")].into();
        assert_eq!(inc.reelected(), Some(&want));
        assert!(inc.carries(&ip("10.0.0.99")) && !inc.carries(&ip("10.0.0.8")));
        assert_eq!(got, elect_all(&cfg, &svcs, &nodes, &cur, &opts));
        let mut fewer = nodes.clone();
        fewer.pop();
        inc.elect(&cfg, &svcs, &fewer, &cur, &opts);
        assert_eq!(inc.scope(), Scope::Full);
        assert_eq!(inc.reelected(), None);
    }
}

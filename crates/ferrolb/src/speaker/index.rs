//! The speaker's index of Services, EndpointSlices and Nodes (pure): fed by the watch
//! events of the three kinds ([`Index::service`], [`Index::slice`], [`Index::node`]), it
//! keeps only what the decisions read, in compact form, and says which Service keys
//! changed since the last pass, so a pass costs O(changed keys), not O(Services).
//!
//! - a Service is kept only while this speaker can announce it
//!   ([`super::slim::announceable`]), as its [`SlimService`];
//! - an EndpointSlice is its Service's key, the nodes of its serving endpoints (node names
//!   interned: one allocation per node, whatever the number of slices) and whether a
//!   serving endpoint has no node; a slice without serving endpoint contributes nothing to
//!   a view and is not kept, nor, once the Services are listed, the slice of a Service that
//!   is not of type LoadBalancer (most of a cluster's slices). A Service that becomes a
//!   LoadBalancer after that has its slices read once ([`Index::take_wanted`],
//!   [`Index::fetched`]: the shell lists them by their `kubernetes.io/service-name` label);
//!   a slice the watch changed meanwhile keeps the watch's version;
//! - a Node is the slim `Node` of [`SlimNode`].
//!
//! Each change that can alter a view marks its Service's key; [`Index::changes`] hands the
//! views of the marked keys over (all keys when the configuration changed, since a view's
//! pool depends on it) to the incremental election
//! ([`crate::election::IncrementalElection::elect_views`]). A view is built by the one
//! rule, [`crate::election::view_of`]. The event handlers return whether the loop must
//! run: a change to a Service this speaker cannot announce, to its slices, or to a Node
//! field it does not read, does not wake it.
//!
//! A relist (`Init`, `InitApply`…, `InitDone`) applies the listed objects as they come and,
//! at `InitDone`, drops the objects it did not list.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::Event;

use super::slim::{
    announceable, node_matters, service_matters, KeptService, SlimNode, SlimService, SlimSlice,
};
use crate::config::Config;
use crate::election::{view_of, NameSet, ServiceView};

/// The index shared by the watch tasks and the speaker loop.
pub type SharedIndex = Arc<Mutex<Index>>;

/// The nodes of one EndpointSlice's serving endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoints {
    /// Interned by the index (slices on the same nodes share one set, and so do the views
    /// made from them).
    nodes: NameSet,
    /// A serving endpoint without `nodeName`.
    nodeless: bool,
}

impl Endpoints {
    /// Every serving endpoint as the view rule takes them (`None`: no node), the nodes'
    /// names shared with the index.
    fn serving(&self) -> impl Iterator<Item = Option<Arc<str>>> + '_ {
        self.nodes
            .iter()
            .map(|n| Some(n.clone()))
            .chain(self.nodeless.then_some(None))
    }
}

/// The slices of one Service with a serving endpoint: (slice key, endpoints).
type Slices = Box<[(Arc<str>, Endpoints)]>;

/// A read of one Service's EndpointSlices for the shell to make: a list in `namespace` by
/// the label `kubernetes.io/service-name=<name>` ([`Index::take_wanted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceRead {
    pub namespace: String,
    pub name: String,
    /// `namespace/name`.
    pub key: Arc<str>,
    /// Which read of that Service's slices this is.
    id: u64,
}

/// A kept Service, found in the index's table by its key (`namespace/name`).
#[derive(Debug)]
struct Kept(Box<KeptService>);

impl Kept {
    /// `namespace/name`, the index's allocation.
    fn key(&self) -> &Arc<str> {
        self.0.facts.key()
    }
}

impl std::borrow::Borrow<str> for Kept {
    fn borrow(&self) -> &str {
        self.key()
    }
}

impl std::hash::Hash for Kept {
    /// As its key's text (so the table finds it by a `&str`).
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (**self.key()).hash(h);
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Kept {}

/// What storing an object gives: its key (None: it has none) and whether the change matters.
type Put = (Option<Arc<str>>, bool);

/// The three watched kinds (relist bookkeeping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Service = 0,
    Slice = 1,
    Node = 2,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Index {
    /// `--lb-class` of this speaker.
    lb_class: Option<String>,
    /// The Services, while announceable, found by `namespace/name` (their facts' key: the
    /// table keeps a pointer per slot and no key of its own).
    services: HashSet<Kept>,
    /// `namespace/slice name` → the key of its Service.
    slices: HashMap<Arc<str>, Arc<str>>,
    /// Service key → its slices (slice key, endpoints); most Services have one (a boxed
    /// slice: exactly the room the slices take, and a table slot 8 bytes smaller than a
    /// vector's).
    groups: HashMap<Arc<str>, Slices>,
    /// Node name → the slim Node.
    nodes: BTreeMap<Arc<str>, Arc<Node>>,
    /// Interned node names (of Nodes and of endpoints).
    names: HashSet<Arc<str>>,
    /// Interned sets of serving nodes (of slices and of views), and how many there were
    /// after the last sweep of those no one else holds.
    node_sets: HashSet<NameSet>,
    node_sets_swept: usize,
    /// Service keys whose view may have changed since the last [`Index::changes`].
    dirty: BTreeSet<Arc<str>>,
    /// A Node changed since the last [`Index::take_nodes_changed`].
    nodes_changed: bool,
    /// Counts the changes of Nodes in what the speaker reads ([`Index::node_generation`]).
    node_generation: u64,
    /// The configuration of the last [`Index::changes`].
    config: Option<Config>,
    /// Per kind, during a relist: the keys listed so far.
    relist: [Option<HashSet<Arc<str>>>; 3],
    /// Per kind: the first list is in.
    synced: [bool; 3],
    /// Keys of the Services of type LoadBalancer that are not in `services` (an
    /// announceable Service is one): only the slices of these and of `services` are kept
    /// once the Services are listed ([`Index::is_lb`]).
    lb_unkept: HashSet<Arc<str>>,
    /// Services that became LoadBalancers after the Services were listed, whose slices
    /// must be read ([`Index::take_wanted`]).
    wanted: BTreeMap<Arc<str>, u64>,
    /// Services whose slices are being read ([`Index::fetched`]).
    fetching: BTreeMap<Arc<str>, (u64, u64)>,
    /// Reads handed out (each read's number: an answer to an earlier read is ignored).
    reads: u64,
    /// While a read is wanted or under way: each slice the watch changed or deleted, with
    /// the number of the change (counted in `changes`). A read (wanted and under way with
    /// the count when it was wanted) does not apply its copy of a slice changed since: the
    /// watch's is as new or newer.
    touched: HashMap<Arc<str>, u64>,
    /// Slice changes counted while a read was wanted or under way (and relists begun).
    changes: u64,
    /// The count when the slices' relist under way began.
    slice_relist_from: Option<u64>,
}

impl Index {
    /// An empty index for a speaker handling `lb_class`.
    pub fn new(lb_class: Option<String>) -> Self {
        Index {
            lb_class,
            ..Index::default()
        }
    }

    /// An empty index behind a lock.
    pub fn shared(lb_class: Option<String>) -> SharedIndex {
        Arc::new(Mutex::new(Self::new(lb_class)))
    }

    /// Applies one Service watch event; returns whether the loop must run.
    pub fn service(&mut self, ev: Event<SlimService>) -> bool {
        self.event(Kind::Service, ev, Self::put_service, |ix, key| {
            ix.remove_service(key)
        })
    }

    /// Applies one EndpointSlice watch event; returns whether the loop must run.
    pub fn slice(&mut self, ev: Event<SlimSlice>) -> bool {
        self.event(Kind::Slice, ev, Self::put_slice, |ix, key| {
            ix.remove_slice(key)
        })
    }

    /// Applies one Node watch event; returns whether the loop must run.
    pub fn node(&mut self, ev: Event<SlimNode>) -> bool {
        self.event(Kind::Node, ev, Self::put_node, |ix, key| {
            ix.remove_node(key)
        })
    }

    /// Every kind has had its first list.
    pub fn synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// The views of the Service keys that may have changed since the last call (empty:
    /// the Service is gone, or has no view), by key; every key when `config` differs from
    /// the last call's. Each view equals [`crate::election::service_view`] of the stored
    /// objects. Keys are the index's own: the views and the election share them.
    pub fn changes(&mut self, config: &Config) -> BTreeMap<Arc<str>, Vec<ServiceView>> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out = BTreeMap::new();
        if self.config.as_ref() != Some(config) {
            self.config = Some(config.clone());
            for k in self.services.iter().map(Kept::key).chain(dirty.iter()) {
                out.insert(k.clone(), self.view(k, config).into_iter().collect());
            }
        } else {
            for k in dirty {
                let v = self.view(&k, config).into_iter().collect();
                out.insert(k, v);
            }
        }
        out
    }

    /// Whether a Node changed (in what the speaker reads) since the last call.
    pub fn take_nodes_changed(&mut self) -> bool {
        std::mem::take(&mut self.nodes_changed)
    }

    /// A number that changes whenever a Node changes in what the speaker reads (its
    /// addresses, labels, conditions), comes or goes: what is derived from the Nodes alone
    /// is still current while it stays the same.
    pub fn node_generation(&self) -> u64 {
        self.node_generation
    }

    /// The view of the Service `key` (`namespace/name`), if it is announceable and has one;
    /// its key is the index's (one allocation per Service, whatever holds it).
    pub fn view(&self, key: &str, config: &Config) -> Option<ServiceView> {
        let svc = self.services.get(key)?;
        let key = svc.key();
        let serving = self
            .groups
            .get(key)
            .into_iter()
            .flatten()
            .flat_map(|(_, e)| e.serving());
        let mut view = view_of(&svc.0.facts, serving, config).ok()?;
        view.key = key.clone();
        if let Some(shared) = self.node_sets.get(&view.serving_endpoint_nodes) {
            view.serving_endpoint_nodes = shared.clone();
        }
        Some(view)
    }

    /// Every view, in key order.
    pub fn views(&self, config: &Config) -> Vec<ServiceView> {
        let keys: BTreeSet<&Arc<str>> = self.services.iter().map(Kept::key).collect();
        keys.into_iter()
            .filter_map(|k| self.view(k, config))
            .collect()
    }

    /// The announceable Service `namespace/name`.
    pub fn service_of(&self, namespace: &str, name: &str) -> Option<&KeptService> {
        self.services
            .get(format!("{namespace}/{name}").as_str())
            .map(|s| &*s.0)
    }

    /// The Node `name`.
    pub fn node_named(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(name).cloned()
    }

    /// Whether a Node is named `name`.
    pub fn has_node(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    /// Every Node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().map(|n| &**n)
    }

    /// The kept Nodes with their interned names (the allocation the views' serving nodes
    /// share).
    pub fn named_nodes(&self) -> impl Iterator<Item = (&Arc<str>, &Node)> {
        self.nodes.iter().map(|(k, n)| (k, &**n))
    }

    /// How many Services (announceable), slices (with a serving endpoint) and Nodes are kept.
    pub fn len(&self) -> (usize, usize, usize) {
        (self.services.len(), self.slices.len(), self.nodes.len())
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }

    fn event<T: kube::Resource>(
        &mut self,
        kind: Kind,
        ev: Event<T>,
        put: fn(&mut Self, T) -> Put,
        remove: fn(&mut Self, &str) -> bool,
    ) -> bool {
        match ev {
            Event::Apply(o) => put(self, o).1,
            Event::Delete(o) => remove(self, &key_of::<T>(kind, &o)),
            Event::Init => {
                self.relist[kind as usize] = Some(HashSet::new());
                if kind == Kind::Slice {
                    self.changes += 1;
                    self.slice_relist_from = Some(self.changes);
                }
                false
            }
            Event::InitApply(o) => {
                let (key, _) = put(self, o);
                if let (Some(k), Some(seen)) = (key, &mut self.relist[kind as usize]) {
                    seen.insert(k);
                }
                false
            }
            Event::InitDone => {
                if let Some(from) = self
                    .slice_relist_from
                    .take()
                    .filter(|_| kind == Kind::Slice)
                {
                    // the relist stored every slice of the Services wanted before it began
                    // (and dropped those it did not list, kept or not): their reads are
                    // done, an answer still under way would be older
                    self.wanted.retain(|_, since| *since >= from);
                    self.fetching.retain(|_, (since, _)| *since >= from);
                    if self.wanted.is_empty() && self.fetching.is_empty() {
                        self.touched = HashMap::new();
                    }
                }
                if let Some(seen) = self.relist[kind as usize].take() {
                    let gone: Vec<Arc<str>> = match kind {
                        Kind::Service => self
                            .services
                            .iter()
                            .map(Kept::key)
                            .chain(self.lb_unkept.iter())
                            .cloned()
                            .collect::<HashSet<_>>()
                            .into_iter()
                            .collect(),
                        Kind::Slice => self.slices.keys().cloned().collect(),
                        Kind::Node => self.nodes.keys().cloned().collect(),
                    };
                    for k in gone.into_iter().filter(|k| !seen.contains(k)) {
                        remove(self, &k);
                    }
                }
                if kind == Kind::Service && !self.synced[kind as usize] {
                    self.drop_foreign_slices();
                }
                self.synced[kind as usize] = true;
                self.names.retain(|n| Arc::strong_count(n) > 1);
                self.node_sets.retain(|n| n.copies() > 1);
                true
            }
        }
    }

    /// The interned `name`.
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(n.clone());
        n
    }

    /// The interned `nodes`. Sets no one else holds any more are dropped whenever the
    /// table has doubled since the last sweep.
    fn intern_nodes(&mut self, nodes: NameSet) -> NameSet {
        if let Some(n) = self.node_sets.get(&nodes) {
            return n.clone();
        }
        if self.node_sets.len() >= 2 * self.node_sets_swept.max(64) {
            self.node_sets.retain(|n| n.copies() > 1);
            self.node_sets_swept = self.node_sets.len();
        }
        self.node_sets.insert(nodes.clone());
        nodes
    }

    /// The Service key `key` as already held (or a new one).
    fn service_key(&self, key: &str) -> Arc<str> {
        self.known_key(key).unwrap_or_else(|| Arc::from(key))
    }

    /// The Service key `key` as already held.
    fn known_key(&self, key: &str) -> Option<Arc<str>> {
        self.services
            .get(key)
            .map(|s| s.key().clone())
            .or_else(|| self.lb_unkept.get(key).cloned())
            .or_else(|| self.groups.get_key_value(key).map(|(k, _)| k.clone()))
    }

    /// Stores `s` (or drops it when not announceable); returns its key as listed and
    /// whether the change matters.
    fn put_service(&mut self, s: SlimService) -> Put {
        if s.facts.namespace().is_empty() || s.facts.name().is_empty() {
            return (None, false);
        }
        let key = self.known_key(s.key()).unwrap_or_else(|| s.key().clone());
        let load_balancer = s.facts.load_balancer;
        self.note_type(&key, load_balancer);
        let class = self.lb_class.as_deref();
        let mut s = KeptService::from(s);
        s.facts.share_key(&key);
        let new = announceable(&s, class).then_some(s);
        let old = self.services.get(&*key).map(|s| &*s.0);
        let matters = service_matters(old, new.as_ref(), class);
        match new {
            Some(s) => {
                self.services.replace(Kept(Box::new(s)));
                self.lb_unkept.remove(&key);
            }
            None => {
                self.services.remove(&*key);
                if load_balancer {
                    self.lb_unkept.insert(key.clone());
                }
            }
        }
        if matters {
            self.dirty.insert(key.clone());
        }
        (Some(key), matters)
    }

    fn remove_service(&mut self, key: &str) -> bool {
        if let Some(k) = self.known_key(key).filter(|k| self.is_lb(k)) {
            self.note_type(&k, false);
        }
        match self.services.take(key) {
            Some(s) => {
                self.dirty.insert(s.key().clone());
                true
            }
            None => false,
        }
    }

    /// Stores `s` under its Service (or drops it when it has no serving endpoint or no
    /// Service); returns its key as listed and whether the change matters.
    fn put_slice(&mut self, s: SlimSlice) -> Put {
        let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) else {
            return (None, false);
        };
        let skey = format!("{ns}/{name}");
        let owner = s
            .service
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(|svc| format!("{ns}/{svc}"));
        // a read under way must not bring back an older copy (under whatever Service)
        self.touch(&Arc::from(skey.as_str()));
        // once the Services are listed, a slice of a Service that is not a LoadBalancer is
        // not kept
        let owner = owner.filter(|o| !self.synced[Kind::Service as usize] || self.is_lb(o));
        let eps = match owner {
            Some(o) if !s.nodes.is_empty() || s.nodeless => Some((
                o,
                Endpoints {
                    nodes: {
                        let nodes: NameSet = s.nodes.iter().map(|n| self.intern(n)).collect();
                        self.intern_nodes(nodes)
                    },
                    nodeless: s.nodeless,
                },
            )),
            _ => None,
        };
        let old = self.slices.get_key_value(skey.as_str()).map(|(k, o)| {
            let e = self
                .groups
                .get(o)
                .and_then(|g| g.iter().find(|(sk, _)| sk == k))
                .map(|(_, e)| e.clone());
            (k.clone(), o.clone(), e)
        });
        let unchanged = match (&old, &eps) {
            (Some((_, o, e)), Some((no, ne))) => **o == **no && e.as_ref() == Some(ne),
            (None, None) => true,
            _ => false,
        };
        let key = old
            .as_ref()
            .map(|(k, _, _)| k.clone())
            .unwrap_or_else(|| Arc::from(skey.as_str()));
        if unchanged {
            return (Some(key), false);
        }
        let mut matters = self.remove_slice(&key);
        if let Some((o, e)) = eps {
            let o = self.service_key(&o);
            match self.groups.entry(o.clone()) {
                Entry::Occupied(mut g) => {
                    let mut v = std::mem::take(g.get_mut()).into_vec();
                    v.push((key.clone(), e));
                    *g.get_mut() = v.into_boxed_slice();
                }
                Entry::Vacant(g) => {
                    g.insert(Box::new([(key.clone(), e)]));
                }
            }
            self.slices.insert(key.clone(), o.clone());
            if self.services.contains(&*o) {
                self.dirty.insert(o);
                matters = true;
            }
        }
        (Some(key), matters)
    }

    fn remove_slice(&mut self, key: &str) -> bool {
        self.touch(&Arc::from(key));
        self.forget_slice(key)
    }

    /// Drops the slice `key`; returns whether its Service's view changed.
    fn forget_slice(&mut self, key: &str) -> bool {
        let Some(owner) = self.slices.remove(key) else {
            return false;
        };
        if let Some(g) = self.groups.get_mut(&owner) {
            let mut v = std::mem::take(g).into_vec();
            v.retain(|(k, _)| &**k != key);
            if v.is_empty() {
                self.groups.remove(&owner);
            } else {
                *g = v.into_boxed_slice();
            }
        }
        if self.services.contains(&*owner) {
            self.dirty.insert(owner);
            true
        } else {
            false
        }
    }

    /// Records that the watch changed the slice `key` while a read of slices is wanted or
    /// under way (whatever Service it belongs to, or belonged to: a read of a Service it
    /// left shows it as older).
    fn touch(&mut self, key: &Arc<str>) {
        if !self.wanted.is_empty() || !self.fetching.is_empty() {
            self.changes += 1;
            self.touched.insert(key.clone(), self.changes);
        }
    }

    /// Whether the Service `key` is of type LoadBalancer (announceable or not).
    fn is_lb(&self, key: &str) -> bool {
        self.services.contains(key) || self.lb_unkept.contains(key)
    }

    /// Records whether the Service `key` is of type LoadBalancer (false: it is gone). Once
    /// the Services are listed, one that stops being one loses its slices, and one that
    /// becomes one has its slices read.
    fn note_type(&mut self, key: &Arc<str>, load_balancer: bool) {
        let was = self.is_lb(key);
        if load_balancer && !was {
            self.lb_unkept.insert(key.clone());
            if self.synced[Kind::Service as usize] {
                self.wanted.insert(key.clone(), self.changes);
            }
        } else if !load_balancer && was {
            self.lb_unkept.remove(key);
            self.wanted.remove(key);
            self.fetching.remove(key);
            if !self.synced[Kind::Service as usize] {
                return;
            }
            let slices: Vec<Arc<str>> = self
                .groups
                .get(key)
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect();
            for k in slices {
                self.forget_slice(&k);
            }
        }
    }

    /// Drops the slices of the Services that are not LoadBalancers (the Services just
    /// listed: until then every slice was kept).
    fn drop_foreign_slices(&mut self) {
        let foreign: Vec<Arc<str>> = self
            .slices
            .iter()
            .filter(|(_, owner)| !self.is_lb(owner))
            .map(|(k, _)| k.clone())
            .collect();
        for k in foreign {
            self.forget_slice(&k);
        }
        // the tables had room for every slice of the cluster
        self.slices.shrink_to_fit();
        self.groups.shrink_to_fit();
    }

    /// The reads of slices to make now: each Service whose slices are wanted is then being
    /// read until [`Index::fetched`] or [`Index::fetch_failed`] with its read.
    pub fn take_wanted(&mut self) -> Vec<SliceRead> {
        let wanted = std::mem::take(&mut self.wanted);
        wanted
            .into_iter()
            .filter_map(|(key, since)| {
                let (ns, name) = key.split_once('/')?;
                self.reads += 1;
                let read = SliceRead {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    key: key.clone(),
                    id: self.reads,
                };
                self.fetching.insert(key, (since, read.id));
                Some(read)
            })
            .collect()
    }

    /// Whether some Service's slices must be read.
    pub fn has_wanted(&self) -> bool {
        !self.wanted.is_empty()
    }

    /// Applies the slices `read` found (listed by the Service's name label), except those
    /// the watch changed since the read was wanted; nothing when the Service stopped being
    /// a LoadBalancer, is wanted again, or a later read of it was handed out. Returns
    /// whether the loop must run.
    pub fn fetched(&mut self, read: &SliceRead, slices: Vec<SlimSlice>) -> bool {
        let Some(since) = self.take_read(read) else {
            return false;
        };
        let key = read.key.clone();
        let mut matters = false;
        if self.is_lb(&key) && !self.wanted.contains_key(&key) {
            for s in slices {
                let owner = match (&s.metadata.namespace, &s.service) {
                    (Some(ns), Some(svc)) => format!("{ns}/{svc}"),
                    _ => continue,
                };
                let skey = format!(
                    "{}/{}",
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    s.metadata.name.as_deref().unwrap_or_default()
                );
                let changed_since = self.touched.get(skey.as_str()).is_some_and(|c| *c > since);
                if *owner != *key || changed_since {
                    continue;
                }
                matters |= self.put_slice(s).1;
            }
        }
        if self.wanted.is_empty() && self.fetching.is_empty() {
            self.touched = HashMap::new();
        }
        matters
    }

    /// `read` failed: its Service's slices are wanted again.
    pub fn fetch_failed(&mut self, read: &SliceRead) {
        if let Some(since) = self.take_read(read) {
            if self.is_lb(&read.key) {
                self.wanted.insert(read.key.clone(), since);
            }
        }
    }

    /// Ends `read` if it is the one under way for its Service; returns when it was wanted.
    fn take_read(&mut self, read: &SliceRead) -> Option<u64> {
        match self.fetching.get(&read.key) {
            Some((since, id)) if *id == read.id => {
                let since = *since;
                self.fetching.remove(&read.key);
                Some(since)
            }
            _ => None,
        }
    }

    fn put_node(&mut self, n: SlimNode) -> Put {
        let Some(name) = n.metadata.name.clone().filter(|n| !n.is_empty()) else {
            return (None, false);
        };
        let node = n.into_node();
        let matters = node_matters(self.nodes.get(name.as_str()).map(|n| &**n), Some(&node));
        let key = self.intern(&name);
        self.nodes.insert(key.clone(), Arc::new(node));
        self.nodes_changed |= matters;
        self.node_generation += u64::from(matters);
        (Some(key), matters)
    }

    fn remove_node(&mut self, name: &str) -> bool {
        let gone = self.nodes.remove(name).is_some();
        self.nodes_changed |= gone;
        self.node_generation += u64::from(gone);
        gone
    }
}

/// The index key of a watched object (Services and slices: `namespace/name`, Nodes: name).
fn key_of<T: kube::Resource>(kind: Kind, o: &T) -> String {
    let m = o.meta();
    let name = m.name.as_deref().unwrap_or_default();
    match kind {
        Kind::Node => name.to_string(),
        Kind::Service | Kind::Slice => {
            format!("{}/{name}", m.namespace.as_deref().unwrap_or_default())
        }
    }
}

/// The views of `services` with their `slices` (whole objects, e.g. listed) for a speaker
/// handling `lb_class`, in key order: what a speaker's index holds for them.
pub fn views_of(
    config: &Config,
    services: &[Arc<k8s_openapi::api::core::v1::Service>],
    slices: &[Arc<k8s_openapi::api::discovery::v1::EndpointSlice>],
    lb_class: Option<&str>,
) -> Vec<ServiceView> {
    let mut ix = Index::new(lb_class.map(str::to_string));
    for s in services {
        ix.service(Event::Apply(SlimService::of(s)));
    }
    for s in slices {
        ix.slice(Event::Apply(SlimSlice::of(s)));
    }
    ix.views(config)
}

#[cfg(test)]
pub(super) mod tests;

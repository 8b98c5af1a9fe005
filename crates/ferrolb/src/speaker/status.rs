//! ServiceL2Status objects (MetalLB-compatible observability): one per Service this node
//! announces, in the speaker namespace, named `l2-xxxxx` (generateName), labelled
//! `metallb.io/node`, `metallb.io/service-name`, `metallb.io/service-namespace`.
//!
//! [`plan`] is pure: from what this node should report and what exists, it lists the
//! writes. Writes happen only on change; nothing is written at steady state.
//!
//! When the speaker knows its Pod (name and UID from the downward API), the objects it
//! creates carry an ownerReference to that Pod, as MetalLB's do, so Kubernetes' garbage
//! collector deletes them with the Pod; at start-up the speaker adopts its node's objects
//! that its previous Pod (or an older version) left ([`to_adopt`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::ResourceExt;

use crate::allocator::ServiceKey;
use crate::crd::{InterfaceInfo, MetalLBServiceL2Status, ServiceL2Status, ServiceL2StatusSpec};
use crate::dense::Dense;

/// Label with the announcing node.
pub const NODE_LABEL: &str = "metallb.io/node";
/// Label with the Service name.
pub const SERVICE_NAME_LABEL: &str = "metallb.io/service-name";
/// Label with the Service namespace.
pub const SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";

/// What one existing ServiceL2Status says (as read from the store).
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    /// Object name.
    pub name: String,
    /// resourceVersion (precondition of deletes).
    pub resource_version: String,
    /// Node from the label (or status).
    pub node: String,
    /// Service from the labels (or status).
    pub service: Option<ServiceKey>,
    /// Current status.
    pub status: MetalLBServiceL2Status,
}

impl Existing {
    /// Reads a ServiceL2Status object.
    pub fn of(obj: &ServiceL2Status) -> Self {
        let labels = obj.labels();
        let status = obj.status.clone().unwrap_or_default();
        let node = labels
            .get(NODE_LABEL)
            .cloned()
            .unwrap_or_else(|| status.node.clone());
        let svc_name = labels
            .get(SERVICE_NAME_LABEL)
            .cloned()
            .unwrap_or_else(|| status.service_name.clone());
        let svc_ns = labels
            .get(SERVICE_NAMESPACE_LABEL)
            .cloned()
            .unwrap_or_else(|| status.service_namespace.clone());
        Self {
            name: obj.name_any(),
            resource_version: obj.resource_version().unwrap_or_default(),
            node,
            service: ServiceKey::parse(&format!("{svc_ns}/{svc_name}")),
            status,
        }
    }
}

/// The status this node should publish for `service`.
pub fn desired_status(
    node: &str,
    service: &ServiceKey,
    interfaces: &BTreeSet<String>,
    ips: &BTreeSet<String>,
) -> MetalLBServiceL2Status {
    MetalLBServiceL2Status {
        node: node.into(),
        service_name: service.name.clone(),
        service_namespace: service.namespace.clone(),
        interfaces: interfaces
            .iter()
            .map(|n| InterfaceInfo { name: n.clone() })
            .collect(),
        ips: ips.iter().cloned().collect(),
    }
}

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusWrite {
    /// Create an object for the Service, then set its status.
    Create {
        /// The Service.
        service: ServiceKey,
        /// Its status.
        status: MetalLBServiceL2Status,
    },
    /// Replace the status of an existing object of ours.
    Update {
        /// Object name.
        name: String,
        /// New status.
        status: MetalLBServiceL2Status,
    },
    /// Delete an object (if unchanged since read).
    Delete {
        /// Object name.
        name: String,
        /// resourceVersion read.
        resource_version: String,
    },
}

/// The writes that make the objects match `desired` (this node's announced Services).
///
/// * ours and desired: keep one (update its status if different), delete duplicates;
/// * ours and not desired: delete (we stopped announcing, or the Service is gone);
/// * another node's, when that node's speaker is dead (`alive` false): delete — a live
///   speaker cleans its own objects, a dead one cannot.
pub fn plan(
    me: &str,
    desired: &BTreeMap<ServiceKey, MetalLBServiceL2Status>,
    existing: &[Existing],
    alive: &dyn Fn(&str) -> bool,
) -> Vec<StatusWrite> {
    let mut out = Vec::new();
    let mut mine: BTreeMap<&ServiceKey, Vec<&Existing>> = BTreeMap::new();
    let mut sorted: Vec<&Existing> = existing.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for e in sorted {
        let delete = || StatusWrite::Delete {
            name: e.name.clone(),
            resource_version: e.resource_version.clone(),
        };
        if e.node != me {
            if !alive(&e.node) {
                out.push(delete());
            }
            continue;
        }
        match &e.service {
            Some(s) if desired.contains_key(s) => mine.entry(s).or_default().push(e),
            _ => out.push(delete()),
        }
    }
    for (svc, status) in desired {
        match mine.get(svc).map(Vec::as_slice) {
            None | Some([]) => out.push(StatusWrite::Create {
                service: svc.clone(),
                status: status.clone(),
            }),
            Some([keep, dups @ ..]) => {
                if keep.status != *status {
                    out.push(StatusWrite::Update {
                        name: keep.name.clone(),
                        status: status.clone(),
                    });
                }
                for d in dups {
                    out.push(StatusWrite::Delete {
                        name: d.name.clone(),
                        resource_version: d.resource_version.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The ownerReference to the speaker's Pod, when both its name and UID are known (and
/// non-empty). No `controller` / `blockOwnerDeletion` flags, as MetalLB's.
pub fn pod_owner(name: Option<&str>, uid: Option<&str>) -> Option<OwnerReference> {
    let name = name.filter(|n| !n.is_empty())?;
    let uid = uid.filter(|u| !u.is_empty())?;
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: name.into(),
        uid: uid.into(),
        ..Default::default()
    })
}

/// Names of this node's objects (`me`) not owned by `owner`: left by the node's previous
/// speaker Pod or by a version that set no owner. Sorted.
pub fn to_adopt<O: std::borrow::Borrow<Observed>>(
    me: &str,
    owner: &OwnerReference,
    objects: impl IntoIterator<Item = O>,
) -> Vec<String> {
    let mut out: Vec<String> = objects
        .into_iter()
        .filter(|o| o.borrow().existing.node == me)
        .filter(|o| !o.borrow().owner_uids.contains(&owner.uid))
        .map(|o| o.borrow().existing.name.clone())
        .collect();
    out.sort();
    out
}

/// What the speaker keeps of one ServiceL2Status object.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// What it says.
    pub existing: Existing,
    /// UIDs of its owners (adoption, see [`to_adopt`]).
    pub owner_uids: Vec<String>,
}

impl Observed {
    /// Reads a ServiceL2Status object.
    pub fn of(obj: &ServiceL2Status) -> Self {
        Self {
            existing: Existing::of(obj),
            owner_uids: obj
                .owner_references()
                .iter()
                .map(|r| r.uid.clone())
                .collect(),
        }
    }
}

/// Parts of the ServiceL2Status plan: a Service (its desired status and every object
/// about it) or, for an object about no Service, that object alone. [`plan`] decides each
/// part from that part's inputs only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Units {
    /// Services.
    pub services: BTreeSet<ServiceKey>,
    /// Objects about no Service (or gone), by name.
    pub names: BTreeSet<String>,
    /// Objects that vanished (their write memories go).
    pub gone: BTreeSet<String>,
}

impl Units {
    fn add(&mut self, e: &Existing) {
        match &e.service {
            Some(k) => {
                self.services.insert(k.clone());
            }
            None => {
                self.names.insert(e.name.clone());
            }
        }
    }
}

/// An object as the book keeps it: everything [`Observed`] holds but its name, in one
/// allocation ([`crate::packed`]): resourceVersion, node, Service (a count, then namespace
/// and name), which of the status's node, Service name and namespace repeat the node and
/// the Service's name and namespace (bits 1, 2, 4 of a number: as the speaker writes them,
/// all three), then those that do not, interfaces and IPs (each a count, then the strings),
/// the owners' UIDs (likewise).
fn pack(o: &Observed) -> Box<str> {
    use crate::packed::{push, push_number};
    let Observed {
        existing:
            Existing {
                name: _,
                resource_version,
                node,
                service,
                status:
                    MetalLBServiceL2Status {
                        node: status_node,
                        service_name,
                        service_namespace,
                        interfaces,
                        ips,
                    },
            },
        owner_uids,
    } = o;
    let mut t = String::new();
    push(&mut t, resource_version);
    push(&mut t, node);
    push_number(&mut t, usize::from(service.is_some()));
    if let Some(k) = service {
        push(&mut t, &k.namespace);
        push(&mut t, &k.name);
    }
    let repeated = [
        Some(node) == Some(status_node),
        service.as_ref().map(|k| &k.name) == Some(service_name),
        service.as_ref().map(|k| &k.namespace) == Some(service_namespace),
    ];
    let bits = repeated
        .iter()
        .enumerate()
        .map(|(i, r)| usize::from(*r) << i)
        .sum();
    push_number(&mut t, bits);
    for (s, repeated) in [status_node, service_name, service_namespace]
        .into_iter()
        .zip(repeated)
    {
        if !repeated {
            push(&mut t, s);
        }
    }
    push_number(&mut t, interfaces.len());
    for InterfaceInfo { name } in interfaces {
        push(&mut t, name);
    }
    push_number(&mut t, ips.len());
    for ip in ips {
        push(&mut t, ip);
    }
    push_number(&mut t, owner_uids.len());
    for uid in owner_uids {
        push(&mut t, uid);
    }
    t.into_boxed_str()
}

/// The object `name` that [`pack`] made `text` of.
fn unpack(name: &str, text: &str) -> Observed {
    let mut it = crate::packed::Unpack::new(text);
    let next = |it: &mut crate::packed::Unpack| it.next().unwrap_or_default().to_string();
    let resource_version = next(&mut it);
    let node = next(&mut it);
    let service = match it.number() {
        0 => None,
        _ => Some(ServiceKey::new(next(&mut it), next(&mut it))),
    };
    let bits = it.number();
    let mut part = |i: usize, repeats: Option<&String>| match repeats {
        Some(s) if bits & (1 << i) != 0 => s.clone(),
        _ => next(&mut it),
    };
    let status_node = part(0, Some(&node));
    let service_name = part(1, service.as_ref().map(|k| &k.name));
    let service_namespace = part(2, service.as_ref().map(|k| &k.namespace));
    let n = it.number();
    let interfaces = (0..n)
        .map(|_| InterfaceInfo {
            name: next(&mut it),
        })
        .collect();
    let n = it.number();
    let ips = (0..n).map(|_| next(&mut it)).collect();
    let n = it.number();
    let owner_uids = (0..n).map(|_| next(&mut it)).collect();
    Observed {
        existing: Existing {
            name: name.to_string(),
            resource_version,
            node,
            service,
            status: MetalLBServiceL2Status {
                node: status_node,
                service_name,
                service_namespace,
                interfaces,
                ips,
            },
        },
        owner_uids,
    }
}

/// A Service as the book's by-Service index keys it (namespace and name packed).
fn service_index_key(k: &ServiceKey) -> Box<str> {
    let mut t = String::new();
    crate::packed::push(&mut t, &k.namespace);
    crate::packed::push(&mut t, &k.name);
    t.into_boxed_str()
}

/// The ServiceL2Status objects of the namespace, kept per watch event (never the whole
/// objects), indexed by Service and node, with the parts ([`Units`]) whose objects changed
/// since the last [`StatusBook::take_changed`]. Objects are read back as [`Observed`] /
/// [`Existing`] values (made on each read; the planner reads the few that changed).
#[derive(Debug, Default)]
pub struct StatusBook {
    /// Name → what the object says ([`pack`]: one allocation per object, where its fields
    /// took about a dozen). The name is one allocation, shared by the two indexes.
    objects: BTreeMap<Arc<str>, Box<str>>,
    /// (Service as [`service_index_key`] makes it, name of one of its objects): a
    /// Service's objects in order of name, held in the set's nodes (no block per Service).
    by_service: BTreeSet<(Box<str>, Arc<str>)>,
    by_node: BTreeMap<String, BTreeSet<Arc<str>>>,
    changed: Units,
    /// During a relist: the names listed so far.
    relist: Option<BTreeSet<String>>,
    /// The first list is complete.
    synced: bool,
}

impl StatusBook {
    /// Rebuilds the tables with full B-tree nodes ([`Dense`]); the objects read the same.
    pub fn make_dense(&mut self) {
        self.objects.make_dense();
        self.by_service.make_dense();
        for names in self.by_node.values_mut() {
            names.make_dense();
        }
    }

    /// Applies one watch event.
    pub fn apply(&mut self, ev: kube::runtime::watcher::Event<Observed>) {
        use kube::runtime::watcher::Event;
        match ev {
            Event::Apply(o) => self.observe(o.existing.name.clone(), Some(o)),
            Event::Delete(o) => self.observe(o.existing.name.clone(), None),
            Event::Init => self.relist = Some(BTreeSet::new()),
            Event::InitApply(o) => {
                if let Some(seen) = &mut self.relist {
                    seen.insert(o.existing.name.clone());
                }
                self.observe(o.existing.name.clone(), Some(o));
            }
            Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let gone: Vec<String> = self
                        .objects
                        .keys()
                        .filter(|n| !seen.contains(&***n))
                        .map(|n| n.to_string())
                        .collect();
                    for n in gone {
                        self.observe(n, None);
                    }
                }
                self.synced = true;
            }
        }
    }

    /// Object `name` now reads `obj` (None: gone).
    pub fn observe(&mut self, name: String, obj: Option<Observed>) {
        let packed = obj.as_ref().map(pack);
        if self.objects.get(name.as_str()) == packed.as_ref() {
            return;
        }
        let name: Arc<str> = match self.objects.remove_entry(name.as_str()) {
            Some((key, old)) => {
                self.forget(&key, &unpack(&key, &old).existing);
                key
            }
            None => name.into(),
        };
        match (obj, packed) {
            (Some(o), Some(packed)) => {
                self.changed.add(&o.existing);
                self.by_node
                    .entry(o.existing.node.clone())
                    .or_default()
                    .insert(name.clone());
                if let Some(k) = &o.existing.service {
                    self.by_service.insert((service_index_key(k), name.clone()));
                }
                self.objects.insert(name, packed);
            }
            _ => {
                self.changed.gone.insert(name.to_string());
            }
        }
    }

    /// Object `name`, which read `old`, is no longer indexed.
    fn forget(&mut self, name: &Arc<str>, old: &Existing) {
        self.changed.add(old);
        unindex(&mut self.by_node, &old.node, name);
        if let Some(k) = &old.service {
            self.by_service
                .remove(&(service_index_key(k), name.clone()));
        }
    }

    /// Whether the first list is complete.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The parts whose objects changed since the last call.
    pub fn take_changed(&mut self) -> Units {
        std::mem::take(&mut self.changed)
    }

    /// Every object.
    pub fn all(&self) -> impl Iterator<Item = Observed> + '_ {
        self.objects.iter().map(|(n, o)| unpack(n, o))
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Whether object `name` is known.
    pub fn contains(&self, name: &str) -> bool {
        self.objects.contains_key(name)
    }

    /// Object `name`.
    pub fn get(&self, name: &str) -> Option<Existing> {
        self.objects
            .get_key_value(name)
            .map(|(n, o)| unpack(n, o).existing)
    }

    /// The objects about `service`, by name.
    pub fn of_service<'a>(&'a self, service: &ServiceKey) -> impl Iterator<Item = Existing> + 'a {
        let k = service_index_key(service);
        let first = (k.clone(), Arc::from(""));
        self.by_service
            .range(first..)
            .take_while(move |(s, _)| *s == k)
            .filter_map(|(_, n)| self.get(n))
    }

    /// Adds the parts of `node`'s objects to `units`.
    pub fn add_node(&self, node: &str, units: &mut Units) {
        for n in self.by_node.get(node).into_iter().flatten() {
            if let Some(e) = self.get(n) {
                units.add(&e);
            }
        }
    }

    /// Adds the part of object `name` to `units` (its name if it is not known).
    pub fn add_object(&self, name: &str, units: &mut Units) {
        match self.get(name) {
            Some(e) => units.add(&e),
            None => {
                units.names.insert(name.to_string());
            }
        }
    }
}

fn unindex<K: Ord>(index: &mut BTreeMap<K, BTreeSet<Arc<str>>>, key: &K, name: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(name);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The ServiceL2Status objects shared between their watch (writer) and the speaker.
pub type SharedStatuses = std::sync::Arc<std::sync::Mutex<StatusBook>>;

/// Shell: performs [`StatusWrite`]s.
#[derive(Clone)]
pub struct StatusApi {
    api: Api<ServiceL2Status>,
    owner: Option<OwnerReference>,
}

impl StatusApi {
    /// Objects live in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            owner: None,
        }
    }

    /// Objects created from now on are owned by `owner` (the speaker's Pod).
    pub fn with_owner(mut self, owner: Option<OwnerReference>) -> Self {
        self.owner = owner;
        self
    }

    /// The owner set with [`StatusApi::with_owner`].
    pub fn owner(&self) -> Option<&OwnerReference> {
        self.owner.as_ref()
    }

    /// Makes the speaker's Pod the only owner of object `name` (see [`to_adopt`]). A
    /// vanished object is not an error.
    pub async fn adopt(&self, name: &str) -> Result<(), kube::Error> {
        let Some(owner) = &self.owner else {
            return Ok(());
        };
        let body = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
        match self
            .api
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Performs one write. Deleting something already gone or changed is not an error.
    pub async fn apply(&self, w: &StatusWrite) -> Result<(), kube::Error> {
        match w {
            StatusWrite::Create { service, status } => {
                let mut obj = ServiceL2Status::new("", ServiceL2StatusSpec {});
                obj.metadata.name = None;
                obj.metadata.generate_name = Some("l2-".into());
                obj.metadata.labels = Some(BTreeMap::from([
                    (NODE_LABEL.to_string(), status.node.clone()),
                    (SERVICE_NAME_LABEL.to_string(), service.name.clone()),
                    (
                        SERVICE_NAMESPACE_LABEL.to_string(),
                        service.namespace.clone(),
                    ),
                ]));
                obj.metadata.owner_references = self.owner.clone().map(|o| vec![o]);
                // The status subresource ignores status on create: set it afterwards.
                let created = self.api.create(&PostParams::default(), &obj).await?;
                self.patch_status(&created.name_any(), status).await
            }
            StatusWrite::Update { name, status } => self.patch_status(name, status).await,
            StatusWrite::Delete {
                name,
                resource_version,
            } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: Some(resource_version.clone()),
                        uid: None,
                    }),
                    ..Default::default()
                };
                match self.api.delete(name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn patch_status(
        &self,
        name: &str,
        status: &MetalLBServiceL2Status,
    ) -> Result<(), kube::Error> {
        // Replace lists wholesale (merge patch replaces arrays); send empty lists explicitly
        // so a cleared interface list is cleared on the server too.
        let body = serde_json::json!({
            "status": {
                "node": status.node,
                "serviceName": status.service_name,
                "serviceNamespace": status.service_namespace,
                "interfaces": status.interfaces,
                "ips": status.ips,
            }
        });
        self.api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::parse(s).unwrap()
    }

    fn existing(name: &str, node: &str, svc: &str, ips: &[&str]) -> Existing {
        let k = key(svc);
        Existing {
            name: name.into(),
            resource_version: format!("rv-{name}"),
            node: node.into(),
            status: desired_status(
                node,
                &k,
                &BTreeSet::new(),
                &ips.iter().map(|s| s.to_string()).collect(),
            ),
            service: Some(k),
        }
    }

    fn want(svc: &str, ips: &[&str]) -> (ServiceKey, MetalLBServiceL2Status) {
        let k = key(svc);
        let st = desired_status(
            "a",
            &k,
            &BTreeSet::new(),
            &ips.iter().map(|s| s.to_string()).collect(),
        );
        (k, st)
    }

    #[test]
    fn service_keys() {
        assert_eq!(key("ns/a").to_string(), "ns/a");
        assert_eq!(ServiceKey::parse("nsa"), None);
        assert_eq!(ServiceKey::parse("/a"), None);
    }

    #[test]
    fn steady_state_writes_nothing() {
        let desired = BTreeMap::from([want("ns/s1", &["10.0.0.1"])]);
        let ex = vec![
            existing("l2-a", "a", "ns/s1", &["10.0.0.1"]),
            existing("l2-b", "b", "ns/s2", &["10.0.0.2"]),
        ];
        assert_eq!(plan("a", &desired, &ex, &|_| true), vec![]);
    }

    #[test]
    fn create_update_delete_and_dedupe() {
        let desired = BTreeMap::from([want("ns/new", &["10.0.0.3"]), want("ns/s1", &["10.0.0.9"])]);
        let ex = vec![
            existing("l2-1", "a", "ns/s1", &["10.0.0.1"]),
            existing("l2-2", "a", "ns/s1", &["10.0.0.1"]),
            existing("l2-3", "a", "ns/gone", &["10.0.0.4"]),
            existing("l2-4", "dead", "ns/x", &["10.0.0.5"]),
            existing("l2-5", "live", "ns/y", &["10.0.0.6"]),
        ];
        let p = plan("a", &desired, &ex, &|n| n != "dead");
        let del = |n: &str| StatusWrite::Delete {
            name: n.into(),
            resource_version: format!("rv-{n}"),
        };
        assert!(p.contains(&del("l2-3")), "{p:?}");
        assert!(p.contains(&del("l2-4")), "{p:?}");
        assert!(p.contains(&del("l2-2")), "{p:?}");
        assert!(p.contains(&StatusWrite::Update {
            name: "l2-1".into(),
            status: want("ns/s1", &["10.0.0.9"]).1
        }));
        assert!(p.contains(&StatusWrite::Create {
            service: key("ns/new"),
            status: want("ns/new", &["10.0.0.3"]).1
        }));
        assert_eq!(p.len(), 5, "{p:?}");
    }

    #[test]
    fn the_pod_owns_the_objects_when_known() {
        assert_eq!(pod_owner(Some("p"), None), None);
        assert_eq!(pod_owner(None, Some("u")), None);
        assert_eq!(pod_owner(Some("p"), Some("")), None);
        let o = pod_owner(Some("ferrolb-speaker-x"), Some("uid-1")).unwrap();
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "name": "ferrolb-speaker-x", "uid": "uid-1"})
        );
        let obj = |name: &str, node: &str, owner: Option<&str>| {
            let mut s = ServiceL2Status::new(name, ServiceL2StatusSpec {});
            s.metadata.labels = Some(BTreeMap::from([(NODE_LABEL.to_string(), node.into())]));
            s.metadata.owner_references = owner.map(|u| {
                vec![OwnerReference {
                    uid: u.into(),
                    ..o.clone()
                }]
            });
            s
        };
        let objs = [
            obj("l2-mine", "a", Some("uid-1")),
            obj("l2-old-pod", "a", Some("uid-0")),
            obj("l2-no-owner", "a", None),
            obj("l2-other-node", "b", None),
        ];
        let seen: Vec<Observed> = objs.iter().map(Observed::of).collect();
        assert_eq!(to_adopt("a", &o, &seen), vec!["l2-no-owner", "l2-old-pod"]);
    }

    #[test]
    fn reads_objects_by_labels() {
        let mut obj = ServiceL2Status::new("l2-x", ServiceL2StatusSpec {});
        obj.metadata.labels = Some(BTreeMap::from([
            (NODE_LABEL.to_string(), "n1".to_string()),
            (SERVICE_NAME_LABEL.to_string(), "web".to_string()),
            (SERVICE_NAMESPACE_LABEL.to_string(), "prod".to_string()),
        ]));
        let e = Existing::of(&obj);
        assert_eq!(e.node, "n1");
        assert_eq!(e.service, Some(key("prod/web")));
        assert_eq!(e.status, MetalLBServiceL2Status::default());
    }

    /// An object as the speaker writes it (the status names the object's node and Service)
    /// is packed with each name once: the status's three repeat nothing.
    #[test]
    fn the_status_names_the_object_repeats_are_packed_once() {
        let o = Observed {
            existing: Existing {
                name: "l2-svc-0042".into(),
                resource_version: "12345".into(),
                node: "node-0".into(),
                service: Some(ServiceKey::new("bench", "svc-0042")),
                status: MetalLBServiceL2Status {
                    node: "node-0".into(),
                    service_name: "svc-0042".into(),
                    service_namespace: "bench".into(),
                    interfaces: vec![InterfaceInfo {
                        name: "eth0".into(),
                    }],
                    ips: vec!["10.0.0.42".into()],
                },
            },
            owner_uids: vec!["6f1c2a4e-0000-4000-8000-000000000042".into()],
        };
        let packed = pack(&o);
        for name in ["node-0", "svc-0042", "bench"] {
            assert_eq!(packed.matches(name).count(), 1, "{name} in {packed}");
        }
        assert_eq!(unpack("l2-svc-0042", &packed), o);
    }

    #[test]
    fn book_keeps_objects_per_event_and_names_the_parts_that_changed() {
        use kube::runtime::watcher::Event;
        let obj = |name: &str, node: &str, svc: Option<&str>| Observed {
            existing: Existing {
                name: name.into(),
                resource_version: "1".into(),
                node: node.into(),
                service: svc.map(key),
                status: MetalLBServiceL2Status::default(),
            },
            owner_uids: vec!["uid-0".into()],
        };
        let mut b = StatusBook::default();
        b.apply(Event::Init);
        b.apply(Event::InitApply(obj("l2-1", "a", Some("ns/s1"))));
        b.apply(Event::InitApply(obj("l2-2", "b", None)));
        assert!(!b.synced());
        b.apply(Event::InitDone);
        assert!(b.synced());
        let ch = b.take_changed();
        assert_eq!(ch.services, BTreeSet::from([key("ns/s1")]));
        assert_eq!(ch.names, BTreeSet::from(["l2-2".to_string()]));
        // the same object again changes nothing
        b.apply(Event::Apply(obj("l2-1", "a", Some("ns/s1"))));
        assert_eq!(b.take_changed(), Units::default());
        // moved to another Service: both Services changed
        b.apply(Event::Apply(obj("l2-1", "a", Some("ns/s2"))));
        let ch = b.take_changed();
        assert_eq!(ch.services, BTreeSet::from([key("ns/s1"), key("ns/s2")]));
        assert_eq!(b.of_service(&key("ns/s1")).count(), 0);
        assert_eq!(b.of_service(&key("ns/s2")).count(), 1);
        // a node's objects
        let mut u = Units::default();
        b.add_node("b", &mut u);
        assert_eq!(u.names, BTreeSet::from(["l2-2".to_string()]));
        // a relist that does not list l2-2: gone
        b.apply(Event::Init);
        b.apply(Event::InitApply(obj("l2-1", "a", Some("ns/s2"))));
        assert!(b.get("l2-2").is_some(), "kept until the relist is complete");
        b.apply(Event::InitDone);
        assert!(b.get("l2-2").is_none());
        let ch = b.take_changed();
        assert_eq!(ch.gone, BTreeSet::from(["l2-2".to_string()]));
        assert_eq!(ch.names, BTreeSet::from(["l2-2".to_string()]));
        let owner = pod_owner(Some("p"), Some("uid-1")).unwrap();
        assert_eq!(to_adopt("a", &owner, b.all()), vec!["l2-1"]);
        // several objects about one Service (one per node), in name order, each removable
        for (name, node) in [("l2-9", "c"), ("l2-3", "d"), ("l2-5", "e")] {
            b.apply(Event::Apply(obj(name, node, Some("ns/s2"))));
        }
        b.apply(Event::Apply(obj("l2-3", "d", Some("ns/s2"))));
        let names = |b: &StatusBook| -> Vec<String> {
            b.of_service(&key("ns/s2"))
                .map(|e| e.name.clone())
                .collect()
        };
        assert_eq!(names(&b), ["l2-1", "l2-3", "l2-5", "l2-9"]);
        b.apply(Event::Delete(obj("l2-5", "e", Some("ns/s2"))));
        b.apply(Event::Apply(obj("l2-1", "a", None)));
        assert_eq!(names(&b), ["l2-3", "l2-9"]);
        b.apply(Event::Delete(obj("l2-3", "d", Some("ns/s2"))));
        b.apply(Event::Delete(obj("l2-9", "c", Some("ns/s2"))));
        assert_eq!(b.of_service(&key("ns/s2")).count(), 0);
        assert!(b.by_service.is_empty());
        assert!(b.by_node.keys().eq(["a"].iter()), "empty node sets go");
        // an object's name is held once, by the table and both indexes, across updates
        b.apply(Event::Apply(obj("l2-7", "c", Some("ns/s3"))));
        b.apply(Event::Apply(obj("l2-7", "d", Some("ns/s3"))));
        let held = b.objects.get_key_value("l2-7").unwrap().0;
        let (service, name) = b.by_service.first().unwrap();
        assert_eq!(*service, service_index_key(&key("ns/s3")));
        assert!(Arc::ptr_eq(held, name));
        assert!(Arc::ptr_eq(held, b.by_node["d"].first().unwrap()));
        assert!(!b.by_node.contains_key("c"));
    }

    proptest::proptest! {
        /// What the book keeps of an object reads back as the object, whatever its strings
        /// (empty, digits, the packing's separator), counts and Service.
        #[test]
        fn an_object_reads_back_as_kept(
            strs in proptest::collection::vec("[a1:0é/-]{0,4}", 9),
            service in proptest::option::of(("[a:1]{0,3}", "[b:2]{0,3}")),
            interfaces in proptest::collection::vec("[e:0]{0,3}", 0..3),
            ips in proptest::collection::vec("[1.:]{0,4}", 0..3),
            owner_uids in proptest::collection::vec("[u:9]{0,3}", 0..3),
            repeated in 0..8usize,
        ) {
            let mut o = Observed {
                existing: Existing {
                    name: strs[0].clone(),
                    resource_version: strs[1].clone(),
                    node: strs[2].clone(),
                    service: service.map(|(ns, n)| ServiceKey::new(ns, n)),
                    status: MetalLBServiceL2Status {
                        node: strs[3].clone(),
                        service_name: strs[4].clone(),
                        service_namespace: strs[5].clone(),
                        interfaces: interfaces.into_iter().map(|name| InterfaceInfo { name }).collect(),
                        ips,
                    },
                },
                owner_uids,
            };
            // the status's node, Service name and namespace as the speaker writes them:
            // the object's node and Service
            let (node, service) = (o.existing.node.clone(), o.existing.service.clone());
            let st = &mut o.existing.status;
            if repeated & 1 != 0 {
                st.node = node;
            }
            if let (Some(k), true) = (&service, repeated & 2 != 0) {
                st.service_name = k.name.clone();
            }
            if let (Some(k), true) = (&service, repeated & 4 != 0) {
                st.service_namespace = k.namespace.clone();
            }
            proptest::prop_assert_eq!(unpack(&o.existing.name, &pack(&o)), o.clone());
            let mut b = StatusBook::default();
            b.observe(o.existing.name.clone(), Some(o.clone()));
            proptest::prop_assert_eq!(b.all().collect::<Vec<_>>(), vec![o.clone()]);
            proptest::prop_assert_eq!(b.get(&o.existing.name), Some(o.existing.clone()));
            if let Some(k) = &o.existing.service {
                proptest::prop_assert_eq!(b.of_service(k).collect::<Vec<_>>(), vec![o.existing.clone()]);
            }
        }
    }
}

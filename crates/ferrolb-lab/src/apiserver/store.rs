//! The object store: objects as JSON, one global resourceVersion counter, a bounded history of
//! watch events, and snapshots for persistence.
//!
//! All mutations take one short `std::sync::Mutex` critical section (pure CPU, no `.await`), so
//! every read-modify-write (update, patch, apply) is atomic. Watchers are woken through a
//! `tokio::sync::watch` channel carrying the latest resourceVersion and read the history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use super::defaults;
use super::error::ApiError;
use super::patch::{self, ParsedPatch, PatchKind};
use super::query::{labels_of, FieldSelector};
use super::resources::{crd_defs, Registry, ResourceDef, StatusMode};
use super::validation::{FieldValidation, Schemas};
use ferrolb_core::selector::Selector;

/// Storage key of CustomResourceDefinitions.
const CRD_KEY: &str = "apiextensions.k8s.io/customresourcedefinitions";
/// Namespaces present in a fresh store.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];
/// Default number of watch events kept for watches resuming from an older resourceVersion.
pub const DEFAULT_HISTORY: usize = 10_000;

/// `(namespace or "", name)`.
pub type Key = (String, String);

/// Type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object deleted (the object is its last state, with the deletion's resourceVersion).
    Deleted,
}

/// One change, as kept in the history.
#[derive(Clone, Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Storage key of the resource (`group/plural`).
    pub resource: String,
    /// What happened.
    pub kind: EventKind,
    /// The object after the change (for deletes: the last state).
    pub object: Arc<Value>,
    /// The object before the change (modifications and deletes), so watches with selectors can
    /// turn "stopped matching" into DELETED and "started matching" into ADDED.
    pub prev: Option<Arc<Value>>,
}

/// Which part of an object a write targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    /// The object itself (status changes are ignored for kinds with a status subresource).
    Main,
    /// The `/status` subresource.
    Status,
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `?fieldManager=`.
    pub field_manager: Option<String>,
    /// `?dryRun=All`: validate and return the result without storing it.
    pub dry_run: bool,
    /// `?force=true` for server-side apply (accepted; there are no ownership conflicts here).
    pub force: bool,
    /// `?fieldValidation=`: what unknown fields of a custom resource cause.
    pub field_validation: FieldValidation,
    /// Warnings for the `Warning` response header (unknown fields dropped).
    pub warnings: Warnings,
}

/// Warnings collected while a write is processed.
#[derive(Clone, Debug, Default)]
pub struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// Adds one.
    pub fn push(&self, w: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(w);
    }

    /// All collected so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A list filter: namespace (None = all), label and field selectors.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this namespace (`None`: all namespaces or cluster-scoped).
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: Selector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Filter {
    /// True when `obj` passes the namespace, label and field selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str()) {
                return false;
            }
        }
        (self.labels.is_everything() || self.labels.matches(&labels_of(obj)))
            && self.fields.matches(obj)
    }
}

/// Serialized store contents (the persistence format).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The last resourceVersion handed out.
    pub resource_version: u64,
    /// Every object with its storage key.
    pub objects: Vec<StoredObject>,
}

/// One object in a [`Snapshot`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredObject {
    /// Storage key `group/plural`.
    pub resource: String,
    /// The object.
    pub object: Value,
}

struct Inner {
    rv: u64,
    registry: Registry,
    schemas: Schemas,
    objects: HashMap<String, BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    seq: u64,
    /// Changes made since the last call to `take_changes` (for the persister and notifications).
    changed: bool,
}

/// The in-memory object store shared by all requests.
pub struct Store {
    inner: Mutex<Inner>,
    latest: watch::Sender<u64>,
    dirty: Notify,
    watches: AtomicUsize,
    entropy: u128,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}

/// The current time as RFC 3339 with second precision (`metav1.Time`).
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Object names: DNS-subdomain-like (lower-case alphanumerics, `-`, `.`), at most 253 bytes.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Everything except metadata and status: a change here bumps `metadata.generation`.
fn spec_part(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "kind" | "apiVersion")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The object without the fields that change on every write (for no-op detection).
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    o
}

fn parse_rv(s: &str) -> Option<u64> {
    s.parse().ok()
}

impl Store {
    /// An empty store (plus the usual namespaces) keeping `history_limit` watch events.
    pub fn new(history_limit: usize) -> Self {
        let store = Self::with_inner(Inner {
            rv: 0,
            registry: Registry::builtin(),
            schemas: Schemas::builtin(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            seq: 0,
            changed: false,
        });
        let ns_def = store
            .registry_find("", "v1", "namespaces")
            .expect("namespaces are built in");
        for ns in INITIAL_NAMESPACES {
            let _ = store.create(
                &ns_def,
                "",
                json!({"metadata": {"name": ns}}),
                &WriteOptions::default(),
            );
        }
        store
    }

    /// A store holding a snapshot's objects. resourceVersions continue after the snapshot's;
    /// watches from older versions get 410 Gone (the history is not persisted).
    pub fn from_snapshot(snap: Snapshot, history_limit: usize) -> Self {
        let mut registry = Registry::builtin();
        let mut schemas = Schemas::builtin();
        let mut rv = snap.resource_version;
        let mut objects: HashMap<String, BTreeMap<Key, Arc<Value>>> = HashMap::new();
        for so in snap.objects {
            if so.resource == CRD_KEY {
                if let Err(e) = registry.register_crd(&so.object) {
                    tracing::warn!(error = %e, "ignoring malformed stored CRD");
                }
                schemas.register_crd(&so.object);
            }
            let ns = meta_str(&so.object, "namespace").unwrap_or("").to_string();
            let Some(name) = meta_str(&so.object, "name").map(str::to_string) else {
                tracing::warn!(resource = %so.resource, "ignoring stored object without a name");
                continue;
            };
            if let Some(orv) = meta_str(&so.object, "resourceVersion").and_then(parse_rv) {
                rv = rv.max(orv);
            }
            objects
                .entry(so.resource)
                .or_default()
                .insert((ns, name), Arc::new(so.object));
        }
        Self::with_inner(Inner {
            rv,
            registry,
            schemas,
            objects,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: rv,
            seq: 0,
            changed: false,
        })
    }

    fn with_inner(inner: Inner) -> Self {
        let rv = inner.rv;
        let entropy = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ (std::process::id() as u128) << 64;
        Store {
            inner: Mutex::new(inner),
            latest: watch::channel(rv).0,
            dirty: Notify::new(),
            watches: AtomicUsize::new(0),
            entropy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write (writes are built
        // before they are inserted), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// All objects, for persistence.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let mut objects = Vec::new();
        let mut keys: Vec<&String> = inner.objects.keys().collect();
        keys.sort();
        for k in keys {
            for obj in inner.objects[k].values() {
                objects.push(StoredObject {
                    resource: k.clone(),
                    object: (**obj).clone(),
                });
            }
        }
        Snapshot {
            resource_version: inner.rv,
            objects,
        }
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Number of watch streams currently open.
    pub fn active_watches(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }

    pub(crate) fn watch_opened(&self) {
        self.watches.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn watch_closed(&self) {
        self.watches.fetch_sub(1, Ordering::SeqCst);
    }

    /// A receiver woken with the latest resourceVersion after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Resolves once the store changed since the last time it resolved (for the persister).
    pub async fn changed(&self) {
        self.dirty.notified().await
    }

    /// The resource served at `group/version/plural`.
    pub fn registry_find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
        self.lock().registry.find(group, version, plural).cloned()
    }

    /// A copy of the resource table (for discovery).
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// Drops history up to and including `rv` (tests use it to provoke 410 Gone).
    pub fn compact(&self, rv: u64) {
        let mut inner = self.lock();
        while inner.history.front().is_some_and(|e| e.rv <= rv) {
            inner.history.pop_front();
        }
        inner.compacted = inner.compacted.max(rv.min(inner.rv));
    }

    /// Reads one object.
    pub fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let inner = self.lock();
        inner
            .objects
            .get(&def.storage_key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    /// Lists objects passing `filter`, with the store's resourceVersion at that moment.
    pub fn list(&self, def: &ResourceDef, filter: &Filter) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(&def.storage_key())
            .map(|m| m.values().filter(|o| filter.matches(o)).cloned().collect())
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// The objects of `def` as they were at resourceVersion `at` (`None` or a version not older
    /// than the store: as they are now), rebuilt by undoing the retained history; with the
    /// version they are read at. 410 Gone when `at` is older than the retained history.
    pub fn list_at(
        &self,
        def: &ResourceDef,
        at: Option<u64>,
    ) -> Result<(BTreeMap<Key, Arc<Value>>, u64), ApiError> {
        let inner = self.lock();
        let resource = def.storage_key();
        let mut objects = inner.objects.get(&resource).cloned().unwrap_or_default();
        let Some(at) = at.filter(|a| *a < inner.rv) else {
            return Ok((objects, inner.rv));
        };
        if at < inner.compacted {
            return Err(ApiError::gone(at, inner.compacted));
        }
        let start = inner.history.partition_point(|e| e.rv <= at);
        for e in inner.history.range(start..).rev() {
            if e.resource != resource {
                continue;
            }
            let key = (
                meta_str(&e.object, "namespace").unwrap_or("").to_string(),
                meta_str(&e.object, "name").unwrap_or("").to_string(),
            );
            match (&e.kind, &e.prev) {
                (EventKind::Added, _) | (_, None) => objects.remove(&key),
                (_, Some(prev)) => objects.insert(key, prev.clone()),
            };
        }
        Ok((objects, at))
    }

    /// Events of `resource` after `rv`, and the store's resourceVersion they run up to.
    /// `Err` (410) when events after `rv` are no longer retained.
    pub fn events_since(
        &self,
        resource: &str,
        rv: u64,
    ) -> Result<(Vec<Arc<Event>>, u64), ApiError> {
        let inner = self.lock();
        if rv < inner.compacted {
            return Err(ApiError::gone(rv, inner.compacted));
        }
        let start = inner.history.partition_point(|e| e.rv <= rv);
        let events = inner
            .history
            .range(start..)
            .filter(|e| e.resource == resource)
            .cloned()
            .collect();
        Ok((events, inner.rv.max(rv)))
    }

    /// Creates an object (`generateName` supported). `ns` is `""` for cluster-scoped kinds.
    pub fn create(
        &self,
        def: &ResourceDef,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let out = inner.create(def, ns, body, opts, self.entropy)?;
        self.finish(inner);
        Ok(out)
    }

    /// Replaces an object (PUT) or its status. A non-empty `metadata.resourceVersion` in `body`
    /// must match the stored one (409 Conflict otherwise).
    pub fn update(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: Value,
        sub: Sub,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let old = inner.current(def, ns, name)?;
        let out = inner.update(def, ns, name, &old, body, sub, opts, "Update")?;
        self.finish(inner);
        Ok(out)
    }

    /// Patches an object or its status. Server-side apply creates the object when absent
    /// (the returned flag is true then).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        sub: Sub,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let parsed = patch::parse(kind, body)?;
        if kind == PatchKind::Apply && opts.field_manager.as_deref().unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut inner = self.lock();
        let old = match inner.current(def, ns, name) {
            Ok(o) => o,
            Err(e) if kind == PatchKind::Apply && sub == Sub::Main && e.code == 404 => {
                let ParsedPatch::Merge(mut obj) = parsed else {
                    unreachable!("apply patches parse as merge documents")
                };
                strip_nulls(&mut obj);
                match meta_str(&obj, "name") {
                    Some(n) if n != name => {
                        return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )))
                    }
                    _ => {
                        meta_mut(&mut obj).insert("name".into(), json!(name));
                    }
                }
                let out = inner.create_op(def, ns, obj, opts, self.entropy, "Apply")?;
                self.finish(inner);
                return Ok((out, true));
            }
            Err(e) => return Err(e),
        };
        let mut candidate = (*old).clone();
        patch::apply(&mut candidate, &parsed)?;
        let op = if kind == PatchKind::Apply {
            "Apply"
        } else {
            "Update"
        };
        let out = inner.update(def, ns, name, &old, candidate, sub, opts, op)?;
        self.finish(inner);
        Ok((out, false))
    }

    /// Deletes an object. `preconditions` are DeleteOptions' `{uid, resourceVersion}`.
    pub fn delete(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        preconditions: Option<&Value>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let old = inner.current(def, ns, name)?;
        if let Some(p) = preconditions {
            for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = p.get(field).and_then(Value::as_str) {
                    let have = meta_str(&old, field).unwrap_or("");
                    if want != have {
                        return Err(ApiError::conflict(
                            &def.group,
                            &def.plural,
                            name,
                            &format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"),
                        ));
                    }
                }
            }
        }
        if dry_run {
            return Ok((*old).clone());
        }
        let out = inner.delete(def, ns, name);
        self.finish(inner);
        Ok(out)
    }

    /// Deletes every object passing `filter`; returns them.
    pub fn delete_collection(
        &self,
        def: &ResourceDef,
        filter: &Filter,
        dry_run: bool,
    ) -> Vec<Value> {
        let mut inner = self.lock();
        let keys: Vec<Key> = inner
            .objects
            .get(&def.storage_key())
            .map(|m| {
                m.iter()
                    .filter(|(_, o)| filter.matches(o))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        if dry_run {
            let m = &inner.objects[&def.storage_key()];
            return keys.iter().map(|k| (*m[k]).clone()).collect();
        }
        let out = keys
            .iter()
            .map(|(ns, name)| inner.delete(def, ns, name))
            .collect();
        self.finish(inner);
        out
    }

    /// Releases the lock and wakes watchers and the persister if anything changed.
    fn finish(&self, mut inner: MutexGuard<'_, Inner>) {
        let changed = std::mem::take(&mut inner.changed);
        let rv = inner.rv;
        drop(inner);
        if changed {
            self.latest.send_replace(rv);
            self.dirty.notify_one();
        }
    }
}

/// Merge-patch semantics for an object created by apply: `null` means "absent".
fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, v| !v.is_null());
        m.values_mut().for_each(strip_nulls);
    }
}

impl Inner {
    fn current(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.objects
            .get(&def.storage_key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    fn next_random(&mut self, entropy: u128) -> [u8; 32] {
        self.seq += 1;
        let mut h = Sha256::new();
        h.update(entropy.to_le_bytes());
        h.update(self.seq.to_le_bytes());
        h.update(self.rv.to_le_bytes());
        h.finalize().into()
    }

    fn uid(&mut self, entropy: u128) -> String {
        let mut b = self.next_random(entropy);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(&b[..16]);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
        entropy: u128,
    ) -> Result<Value, ApiError> {
        self.create_op(def, ns, body, opts, entropy, "Update")
    }

    fn create_op(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
        entropy: u128,
        operation: &str,
    ) -> Result<Value, ApiError> {
        check_type(def, &obj)?;
        let key = def.storage_key();
        // Name or generateName.
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => {
                let prefix = meta_str(&obj, "generateName").unwrap_or("").to_string();
                if prefix.is_empty() {
                    return Err(ApiError::invalid(
                        &def.group,
                        &def.plural,
                        "",
                        format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", def.kind),
                    ));
                }
                loop {
                    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                    let r = self.next_random(entropy);
                    let suffix: String = r[..5]
                        .iter()
                        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                        .collect();
                    let candidate = format!("{prefix}{suffix}");
                    let taken = self
                        .objects
                        .get(&key)
                        .is_some_and(|m| m.contains_key(&(ns.to_string(), candidate.clone())));
                    if !taken {
                        break candidate;
                    }
                }
            }
        };
        // RBAC objects only need to be valid path segments (`system:discovery`).
        let rbac_name = def.group == "rbac.authorization.k8s.io"
            && !matches!(name.as_str(), "" | "." | "..")
            && !name.contains(['/', '%']);
        if !valid_name(&name) && !rbac_name {
            return Err(ApiError::invalid(
                &def.group,
                &def.plural,
                &name,
                format!("{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'", def.kind),
            ));
        }
        check_namespace(def, ns, &obj)?;
        if self
            .objects
            .get(&key)
            .is_some_and(|m| m.contains_key(&(ns.to_string(), name.clone())))
        {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        if key == CRD_KEY {
            crd_defs(&obj).map_err(|e| ApiError::invalid(&def.group, &def.plural, &name, e))?;
        }
        if matches!(
            def.status,
            StatusMode::Custom
                | StatusMode::Builtin {
                    reset_on_create: true
                }
        ) {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        set_type(def, &mut obj);
        let uid = self.uid(entropy);
        let now = now_rfc3339();
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            if def.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(now));
            m.insert("generation".into(), json!(1));
            m.remove("deletionTimestamp");
            m.remove("managedFields");
            m.remove("resourceVersion");
        }
        if let Some(manager) = &opts.field_manager {
            record_manager(&mut obj, manager, operation, &def.api_version(), None);
        }
        {
            let existing = self.objects.get(&key);
            defaults::on_create(
                &def.group,
                &def.plural,
                &mut obj,
                existing.into_iter().flat_map(|m| m.values().map(|a| &**a)),
            );
        }
        admit(&self.schemas, def, &name, &mut obj, None, opts)?;
        if opts.dry_run {
            return Ok(obj);
        }
        if key == CRD_KEY {
            let _ = self.registry.register_crd(&obj);
            self.schemas.register_crd(&obj);
        }
        Ok(self.commit(&key, (ns.to_string(), name), EventKind::Added, obj, None))
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        old: &Arc<Value>,
        new: Value,
        sub: Sub,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Value, ApiError> {
        check_type(def, &new)?;
        if let Some(n) = meta_str(&new, "name") {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        check_namespace(def, ns, &new)?;
        let current_rv = meta_str(old, "resourceVersion").unwrap_or("");
        if let Some(want) = meta_str(&new, "resourceVersion").filter(|s| !s.is_empty()) {
            if want != current_rv {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        let take_status = |target: &mut Value, from: &Value| match from.get("status") {
            Some(s) => {
                target["status"] = s.clone();
            }
            None => {
                if let Some(o) = target.as_object_mut() {
                    o.remove("status");
                }
            }
        };
        let mut out = match (sub, def.status) {
            (Sub::Main, StatusMode::None) => new,
            (Sub::Main, _) => {
                let mut n = new;
                take_status(&mut n, old);
                n
            }
            (Sub::Status, StatusMode::Builtin { .. }) => {
                let mut n = (**old).clone();
                if let Some(m) = new.get("metadata") {
                    n["metadata"] = m.clone();
                }
                take_status(&mut n, &new);
                n
            }
            (Sub::Status, StatusMode::Custom) => {
                let mut n = (**old).clone();
                take_status(&mut n, &new);
                n
            }
            (Sub::Status, StatusMode::None) => return Err(ApiError::no_route()),
        };
        if !out.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        // System metadata is owned by the server.
        {
            let old_meta = meta(old).cloned().unwrap_or_default();
            let m = meta_mut(&mut out);
            for f in [
                "uid",
                "creationTimestamp",
                "name",
                "namespace",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            if !m.contains_key("managedFields") {
                if let Some(v) = old_meta.get("managedFields") {
                    m.insert("managedFields".into(), v.clone());
                }
            }
        }
        set_type(def, &mut out);
        {
            let key = def.storage_key();
            let existing = self.objects.get(&key);
            defaults::on_update(
                &def.group,
                &def.plural,
                old,
                &mut out,
                existing.into_iter().flat_map(|m| m.values().map(|a| &**a)),
            );
        }
        admit(&self.schemas, def, name, &mut out, Some(old), opts)?;
        if spec_part(&out) != spec_part(old) {
            let g = meta(old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut out).insert("generation".into(), json!(g + 1));
        }
        if def.storage_key() == CRD_KEY {
            crd_defs(&out).map_err(|e| ApiError::invalid(&def.group, &def.plural, name, e))?;
        }
        if comparable(&out) == comparable(old) {
            // No-op: no new resourceVersion, no watch event (as the real API server).
            return Ok((**old).clone());
        }
        if let Some(manager) = &opts.field_manager {
            let subresource = (sub == Sub::Status).then_some("status");
            record_manager(
                &mut out,
                manager,
                operation,
                &def.api_version(),
                subresource,
            );
        }
        if opts.dry_run {
            return Ok(out);
        }
        if def.storage_key() == CRD_KEY {
            let _ = self.registry.register_crd(&out);
            self.schemas.register_crd(&out);
        }
        if meta(&out).is_some_and(|m| m.contains_key("deletionTimestamp")) && !has_finalizers(&out)
        {
            // The last finalizer of a terminating object is gone: now it really is deleted.
            return Ok(self.commit(
                &def.storage_key(),
                (ns.to_string(), name.to_string()),
                EventKind::Deleted,
                out,
                Some(old.clone()),
            ));
        }
        Ok(self.commit(
            &def.storage_key(),
            (ns.to_string(), name.to_string()),
            EventKind::Modified,
            out,
            Some(old.clone()),
        ))
    }

    /// Deletes an object: objects with finalizers only get a `deletionTimestamp` (they go once
    /// the last finalizer is removed), others are removed at once.
    fn delete(&mut self, def: &ResourceDef, ns: &str, name: &str) -> Value {
        let key = def.storage_key();
        let k = (ns.to_string(), name.to_string());
        let Some(old) = self.objects.get(&key).and_then(|m| m.get(&k)).cloned() else {
            return Value::Null;
        };
        if !has_finalizers(&old) {
            return self.remove(def, ns, name);
        }
        if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return (*old).clone();
        }
        let mut out = (*old).clone();
        let m = meta_mut(&mut out);
        m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        self.commit(&key, k, EventKind::Modified, out, Some(old))
    }

    fn remove(&mut self, def: &ResourceDef, ns: &str, name: &str) -> Value {
        let key = def.storage_key();
        let k = (ns.to_string(), name.to_string());
        let Some(old) = self.objects.get(&key).and_then(|m| m.get(&k)).cloned() else {
            return Value::Null;
        };
        let out = self.commit(
            &key,
            k,
            EventKind::Deleted,
            (*old).clone(),
            Some(old.clone()),
        );
        if key == CRD_KEY {
            // The custom resources go with their definition.
            if let Ok(defs) = crd_defs(&old) {
                if let Some(d) = defs.first() {
                    self.remove_all(&d.storage_key(), |_| true);
                }
            }
            self.registry.unregister_crd(&old);
            self.schemas.unregister_crd(&old);
        }
        if key == "/namespaces" {
            // Namespace deletion removes its contents (no Terminating phase here).
            let namespaced: Vec<String> = self
                .objects
                .keys()
                .filter(|k| {
                    self.registry
                        .by_storage_key(k)
                        .is_some_and(|d| d.namespaced)
                })
                .cloned()
                .collect();
            for r in namespaced {
                self.remove_all(&r, |(o_ns, _)| o_ns == name);
            }
        }
        out
    }

    fn remove_all(&mut self, key: &str, pred: impl Fn(&Key) -> bool) {
        let keys: Vec<Key> = self
            .objects
            .get(key)
            .map(|m| m.keys().filter(|k| pred(k)).cloned().collect())
            .unwrap_or_default();
        for k in keys {
            if let Some(old) = self.objects.get(key).and_then(|m| m.get(&k)).cloned() {
                self.commit(key, k, EventKind::Deleted, (*old).clone(), Some(old));
            }
        }
    }

    /// Assigns the next resourceVersion, stores (or removes) the object and records the event.
    fn commit(
        &mut self,
        resource: &str,
        key: Key,
        kind: EventKind,
        mut obj: Value,
        prev: Option<Arc<Value>>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let arc = Arc::new(obj);
        let map = self.objects.entry(resource.to_string()).or_default();
        if kind == EventKind::Deleted {
            map.remove(&key);
        } else {
            map.insert(key, arc.clone());
        }
        self.history.push_back(Arc::new(Event {
            rv,
            resource: resource.to_string(),
            kind,
            object: arc.clone(),
            prev,
        }));
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        self.changed = true;
        (*arc).clone()
    }
}

/// Custom-resource admission (pruning, schema defaults, schema and CEL validation) and the
/// CEL rules of CRD objects themselves.
fn admit(
    schemas: &Schemas,
    def: &ResourceDef,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    if let Some(e) = super::validation::check_annotations_size(obj) {
        return Err(ApiError::invalid_fields(&def.group, &def.kind, name, &[e]));
    }
    if def.storage_key() == CRD_KEY {
        let errs = Schemas::check_crd(obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid_fields(&def.group, &def.kind, name, &errs));
        }
    }
    let Some(schema) = schemas.get(&def.storage_key(), &def.version) else {
        return Ok(());
    };
    let a = schema.admit(obj, old);
    if !a.pruned.is_empty() {
        let unknown: Vec<String> = a
            .pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        match opts.field_validation {
            FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                    unknown.join(", "),
                    kind = def.kind,
                    v = def.version,
                )))
            }
            FieldValidation::Warn => unknown.into_iter().for_each(|w| opts.warnings.push(w)),
            FieldValidation::Ignore => {}
        }
    }
    if a.errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_fields(
            &def.group, &def.kind, name, &a.errors,
        ))
    }
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// Rejects a body whose `kind` / `apiVersion` name another type.
fn check_type(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let Some(o) = obj.as_object() else {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    };
    if let Some(k) = o.get("kind").and_then(Value::as_str) {
        if k != def.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({k}) does not match the resource ({})",
                def.kind
            )));
        }
    }
    if let Some(av) = o.get("apiVersion").and_then(Value::as_str) {
        let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        if group != def.group {
            return Err(ApiError::bad_request(format!(
                "the apiVersion of the object ({av}) does not match the resource ({})",
                def.api_version()
            )));
        }
    }
    if o.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Rejects a body whose namespace differs from the request's.
fn check_namespace(def: &ResourceDef, ns: &str, obj: &Value) -> Result<(), ApiError> {
    if def.namespaced {
        if let Some(n) = meta_str(obj, "namespace").filter(|n| !n.is_empty()) {
            if n != ns {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
                )));
            }
        }
    }
    Ok(())
}

fn set_type(def: &ResourceDef, obj: &mut Value) {
    obj["kind"] = json!(def.kind);
    obj["apiVersion"] = json!(def.api_version());
}

/// Records `manager` in `metadata.managedFields` (one entry per manager, operation and
/// subresource; the field set itself is not tracked).
fn record_manager(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let m = meta_mut(obj);
    let mut entries: Vec<Value> = m
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| {
        !(e["manager"] == manager
            && e["operation"] == operation
            && e.get("subresource").and_then(Value::as_str) == subresource)
    });
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    });
    if let Some(s) = subresource {
        entry["subresource"] = json!(s);
    }
    entries.push(entry);
    m.insert("managedFields".into(), Value::Array(entries));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn cms(store: &Store) -> ResourceDef {
        store.registry_find("", "v1", "configmaps").unwrap()
    }

    #[derive(Clone, Debug)]
    enum Op {
        Create(u8),
        Update(u8, u8),
        Patch(u8, u8),
        Delete(u8),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                (0u8..4).prop_map(Op::Create),
                (0u8..4, 0u8..3).prop_map(|(n, v)| Op::Update(n, v)),
                (0u8..4, 0u8..3).prop_map(|(n, v)| Op::Patch(n, v)),
                (0u8..4).prop_map(Op::Delete),
            ],
            0..40,
        )
    }

    proptest! {
        /// Replaying the history from the start rebuilds exactly the listed state; versions
        /// only grow; the store agrees with a plain map model.
        #[test]
        fn history_replay_equals_state(ops in ops()) {
            let store = Store::new(10_000);
            let def = cms(&store);
            let start = store.resource_version();
            let mut model: BTreeMap<String, String> = BTreeMap::new();
            let o = WriteOptions::default();
            for op in ops {
                match op {
                    Op::Create(n) => {
                        let name = format!("c{n}");
                        let r = store.create(&def, "default", json!({"metadata": {"name": name}, "data": {"v": "0"}}), &o);
                        prop_assert_eq!(r.is_ok(), !model.contains_key(&name));
                        model.entry(name).or_insert_with(|| "0".into());
                    }
                    Op::Update(n, v) => {
                        let name = format!("c{n}");
                        let r = store.update(&def, "default", &name, json!({"metadata": {"name": name}, "data": {"v": v.to_string()}}), Sub::Main, &o);
                        prop_assert_eq!(r.is_ok(), model.contains_key(&name));
                        if let Some(m) = model.get_mut(&name) { *m = v.to_string(); }
                    }
                    Op::Patch(n, v) => {
                        let name = format!("c{n}");
                        let body = serde_json::to_vec(&json!({"data": {"v": v.to_string()}})).unwrap();
                        let r = store.patch(&def, "default", &name, PatchKind::Merge, &body, Sub::Main, &o);
                        prop_assert_eq!(r.is_ok(), model.contains_key(&name));
                        if let Some(m) = model.get_mut(&name) { *m = v.to_string(); }
                    }
                    Op::Delete(n) => {
                        let name = format!("c{n}");
                        let r = store.delete(&def, "default", &name, None, false);
                        prop_assert_eq!(r.is_ok(), model.remove(&name).is_some());
                    }
                }
            }
            let (items, rv) = store.list(&def, &Filter::default());
            let listed: BTreeMap<String, (String, String)> = items.iter().map(|o| (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                (o["data"]["v"].as_str().unwrap().to_string(), o["metadata"]["resourceVersion"].as_str().unwrap().to_string()),
            )).collect();
            let model_view: BTreeMap<String, String> = listed.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
            prop_assert_eq!(&model_view, &model);

            let (events, upto) = store.events_since(&def.storage_key(), start).unwrap();
            prop_assert_eq!(upto, rv);
            let mut replay: BTreeMap<String, (String, String)> = BTreeMap::new();
            let mut last = start;
            for e in events {
                prop_assert!(e.rv > last);
                last = e.rv;
                let name = e.object["metadata"]["name"].as_str().unwrap().to_string();
                prop_assert_eq!(e.object["metadata"]["resourceVersion"].as_str().unwrap(), e.rv.to_string());
                match e.kind {
                    EventKind::Added | EventKind::Modified => {
                        replay.insert(name, (e.object["data"]["v"].as_str().unwrap().to_string(), e.rv.to_string()));
                    }
                    EventKind::Deleted => { replay.remove(&name); }
                }
            }
            prop_assert_eq!(replay, listed);
        }
    }

    proptest! {
        /// The state rebuilt at any past resourceVersion equals what a list returned then.
        #[test]
        fn list_at_a_past_version_equals_the_list_of_that_time(ops in ops()) {
            let store = Store::new(10_000);
            let def = cms(&store);
            let o = WriteOptions::default();
            let mut seen = vec![store.list_at(&def, None).unwrap()];
            for op in ops {
                let _ = match op {
                    Op::Create(n) => store.create(&def, "default", json!({"metadata": {"name": format!("c{n}")}}), &o).map(|_| ()),
                    Op::Update(n, v) | Op::Patch(n, v) => store.update(&def, "default", &format!("c{n}"), json!({"metadata": {"name": format!("c{n}")}, "data": {"v": v.to_string()}}), Sub::Main, &o).map(|_| ()),
                    Op::Delete(n) => store.delete(&def, "default", &format!("c{n}"), None, false).map(|_| ()),
                };
                // Writes to another resource are in the history too and must be skipped.
                let ns = store.registry_find("", "v1", "namespaces").unwrap();
                let _ = store.create(&ns, "", json!({"metadata": {"generateName": "n-"}}), &o);
                seen.push(store.list_at(&def, None).unwrap());
            }
            for (then, rv) in seen {
                let (now, at) = store.list_at(&def, Some(rv)).unwrap();
                prop_assert_eq!(at, rv);
                prop_assert_eq!(now, then);
            }
        }
    }

    #[test]
    fn list_at_a_compacted_version_is_gone() {
        let store = Store::new(2);
        let def = cms(&store);
        let o = WriteOptions::default();
        let first = store.resource_version();
        for i in 0..4 {
            store
                .create(
                    &def,
                    "default",
                    json!({"metadata": {"name": format!("c{i}")}}),
                    &o,
                )
                .unwrap();
        }
        assert_eq!(store.list_at(&def, Some(first)).unwrap_err().code, 410);
        let recent = store.resource_version() - 2;
        assert_eq!(store.list_at(&def, Some(recent)).unwrap().0.len(), 2);
    }

    #[test]
    fn snapshot_round_trip_keeps_objects_and_continues_versions() {
        let store = Store::new(10);
        let def = cms(&store);
        let o = WriteOptions::default();
        store
            .create(&def, "default", json!({"metadata": {"name": "a"}}), &o)
            .unwrap();
        let snap = store.snapshot();
        let restored = Store::from_snapshot(
            serde_json::from_slice(&serde_json::to_vec(&snap).unwrap()).unwrap(),
            10,
        );
        assert_eq!(restored.snapshot(), snap);
        let rv = restored.resource_version();
        assert!(
            restored.events_since(&def.storage_key(), rv - 1).is_err(),
            "older history is gone"
        );
        assert!(restored.events_since(&def.storage_key(), rv).is_ok());
        let b = restored
            .create(&def, "default", json!({"metadata": {"name": "b"}}), &o)
            .unwrap();
        assert_eq!(b["metadata"]["resourceVersion"], (rv + 1).to_string());
    }

    #[test]
    fn history_is_bounded() {
        let store = Store::new(3);
        let def = cms(&store);
        let o = WriteOptions::default();
        for i in 0..10 {
            store
                .create(
                    &def,
                    "default",
                    json!({"metadata": {"name": format!("c{i}")}}),
                    &o,
                )
                .unwrap();
        }
        let rv = store.resource_version();
        assert_eq!(
            store
                .events_since(&def.storage_key(), rv - 3)
                .unwrap()
                .0
                .len(),
            3
        );
        assert_eq!(
            store
                .events_since(&def.storage_key(), rv - 4)
                .unwrap_err()
                .code,
            410
        );
    }

    #[test]
    fn namespace_deletion_removes_its_objects() {
        let store = Store::new(100);
        let def = cms(&store);
        let ns = store.registry_find("", "v1", "namespaces").unwrap();
        let o = WriteOptions::default();
        store
            .create(&ns, "", json!({"metadata": {"name": "gone"}}), &o)
            .unwrap();
        store
            .create(&def, "gone", json!({"metadata": {"name": "a"}}), &o)
            .unwrap();
        store
            .create(&def, "default", json!({"metadata": {"name": "b"}}), &o)
            .unwrap();
        store.delete(&ns, "", "gone", None, false).unwrap();
        let (items, _) = store.list(&def, &Filter::default());
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["namespace"], "default");
    }
}

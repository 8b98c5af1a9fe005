//! Pure input types of the election: what a speaker knows about nodes and Services.
//!
//! These are plain values built from Kubernetes objects by pure conversion functions
//! ([`NodeInfo::from_node`], [`service_view`]); the election never sees a client.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use super::elect::NameSet;
use crate::config::Config;
use crate::packed::Strings;
use crate::selector::{LabelSet, Labels};

/// Node label that removes a node from load-balancer duty (presence, any value).
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Service annotation carrying the IP sharing key.
pub const SHARED_IP_ANNOTATION: &str = "metallb.io/allow-shared-ip";
/// Legacy spelling of [`SHARED_IP_ANNOTATION`] (the new prefix wins when both are set).
pub const LEGACY_SHARED_IP_ANNOTATION: &str = "metallb.universe.tf/allow-shared-ip";
/// EndpointSlice label naming the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the election needs to know about one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`; shared with every owner the election names (one allocation per
    /// node, not per IP).
    pub name: Arc<str>,
    /// `metadata.labels`.
    pub labels: Labels,
    /// The Node has condition `NetworkUnavailable=True`.
    pub network_unavailable: bool,
    /// The node's speaker is alive (its Lease is fresh, or its heartbeats are heard).
    pub speaker_alive: bool,
}

impl NodeInfo {
    /// A healthy node with a live speaker and no labels.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        NodeInfo {
            name: name.into(),
            labels: Labels::new(),
            network_unavailable: false,
            speaker_alive: true,
        }
    }

    /// Builder helper: the same node with one more label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Converts a `Node`. Returns `None` when the object has no name (nothing to elect).
    /// `speaker_alive` comes from the liveness layer (Leases / heartbeats), not from the Node.
    pub fn from_node(node: &Node, speaker_alive: bool) -> Option<Self> {
        let name = node.metadata.name.clone().filter(|n| !n.is_empty())?;
        let network_unavailable = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
            });
        Some(NodeInfo {
            name: name.into(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            network_unavailable,
            speaker_alive,
        })
    }

    /// Holds `name` (the caller's allocation of the same text) as its name, so the owners
    /// elected from it share it; a different text is ignored.
    pub fn share_name(&mut self, name: &Arc<str>) {
        if *self.name == **name {
            self.name = name.clone();
        }
    }

    /// The node carries [`EXCLUDE_LB_LABEL`].
    pub fn excluded_from_lb(&self) -> bool {
        self.labels.contains_key(EXCLUDE_LB_LABEL)
    }
}

/// What the election needs to know about one LoadBalancer Service with ingress IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// `namespace/name`; shared with every table keyed by the Service (one allocation
    /// per Service in a speaker).
    pub key: Arc<str>,
    /// `metadata.labels` (for L2Advertisement `serviceSelectors`), shared with the
    /// [`ServiceFacts`] it was made from: a view is copied on every election, its labels
    /// are not.
    pub labels: LabelSet,
    /// `status.loadBalancer.ingress[].ip` in ingress order (never empty, no duplicates).
    pub ips: Vec<IpAddr>,
    /// The pool containing **all** of `ips`; `None` when no single pool does
    /// (such a Service is never announced, reason [`crate::election::Reason::IpNotInPool`]);
    /// the configuration's name of the pool, shared.
    pub pool: Option<Arc<str>>,
    /// `spec.externalTrafficPolicy: Local`.
    pub etp_local: bool,
    /// The `allow-shared-ip` sharing key, if any.
    pub sharing_key: Option<String>,
    /// Nodes hosting at least one serving endpoint of the Service.
    pub serving_endpoint_nodes: NameSet,
    /// At least one serving endpoint exists anywhere (also counts endpoints without `nodeName`).
    pub has_serving_endpoint: bool,
}

impl ServiceView {
    /// A Cluster-policy Service with the given IPs, a serving endpoint, no labels and
    /// no pool (set `pool` yourself). Handy for tests and benchmarks.
    pub fn new(key: impl Into<Arc<str>>, ips: Vec<IpAddr>, pool: Option<&str>) -> Self {
        ServiceView {
            key: key.into(),
            labels: LabelSet::new(),
            ips,
            pool: pool.map(Arc::from),
            etp_local: false,
            sharing_key: None,
            serving_endpoint_nodes: NameSet::default(),
            has_serving_endpoint: true,
        }
    }

    /// The first ingress IP: the IP MetalLB hashes for the whole Service.
    pub fn first_ip(&self) -> Option<IpAddr> {
        self.ips.first().copied()
    }
}

/// Why a Service could not be turned into a [`ServiceView`]. None of these is an error of
/// ferrolb's; the speaker simply has nothing to announce for such a Service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The object has no name or namespace.
    #[error("service has no name or namespace")]
    MissingName,
    /// `spec.type` is not `LoadBalancer`.
    #[error("service is not of type LoadBalancer")]
    NotLoadBalancer,
    /// `status.loadBalancer.ingress` holds no IP.
    #[error("service has no ingress IP")]
    NoIngressIp,
    /// An ingress entry is not a valid IP address.
    #[error("invalid ingress IP {0:?}")]
    InvalidIngressIp(String),
}

/// MetalLB's `EndpointCanServe`: `conditions.ready` nil or true, or `conditions.serving` true.
pub fn endpoint_can_serve(ep: &Endpoint) -> bool {
    conditions_serve(ep.conditions.as_ref().map(|c| (c.ready, c.serving)))
}

/// [`endpoint_can_serve`] on an endpoint's `conditions` as `(ready, serving)` (`None`: no
/// conditions at all).
pub fn conditions_serve(conditions: Option<(Option<bool>, Option<bool>)>) -> bool {
    match conditions {
        None => true,
        Some((ready, serving)) => ready.unwrap_or(true) || serving == Some(true),
    }
}

/// The name of the pool containing every one of `ips` (the first such pool by name).
pub fn pool_for_ips(config: &Config, ips: &[IpAddr]) -> Option<Arc<str>> {
    if ips.is_empty() {
        return None;
    }
    config
        .pools
        .values()
        .find(|p| ips.iter().all(|ip| p.cidrs.iter().any(|c| c.contains(ip))))
        .map(|p| p.name.clone())
}

/// The sharing key of a Service: `metallb.io/allow-shared-ip`, else the legacy key.
pub fn sharing_key(svc: &Service) -> Option<String> {
    sharing_key_of(svc.metadata.annotations.as_ref()?)
}

/// [`sharing_key`] from a Service's annotations.
pub fn sharing_key_of(ann: &std::collections::BTreeMap<String, String>) -> Option<String> {
    ann.get(SHARED_IP_ANNOTATION)
        .or_else(|| ann.get(LEGACY_SHARED_IP_ANNOTATION))
        .filter(|k| !k.is_empty())
        .cloned()
}

/// Everything [`service_view`] reads of a Service: the compact form a speaker keeps
/// ([`ServiceFacts::of`] takes it from a `Service`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFacts {
    /// `metadata.namespace` and `metadata.name` as `namespace/name`, the key of its view
    /// ([`ServiceFacts::namespace`], [`ServiceFacts::name`] read the parts).
    key: Arc<str>,
    /// The namespace's length in `key` (a namespace is a DNS label: at most 63 bytes).
    namespace_len: u32,
    /// `spec.type` is `LoadBalancer`.
    pub load_balancer: bool,
    /// `status.loadBalancer.ingress[].ip` as written (empty entries and hostname-only
    /// entries left out), in one allocation.
    pub ingress: Strings,
    /// `metadata.labels` (shared by the views made from these facts).
    pub labels: LabelSet,
    /// `spec.externalTrafficPolicy: Local`.
    pub etp_local: bool,
    /// The sharing key ([`sharing_key`]).
    pub sharing_key: Option<String>,
}

impl Default for ServiceFacts {
    /// No namespace, no name, nothing else.
    fn default() -> Self {
        Self::named("", "")
    }
}

impl ServiceFacts {
    /// What [`service_view`] reads of `svc`.
    pub fn of(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        ServiceFacts {
            load_balancer: spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"),
            ingress: crate::service::ingress_ips(svc).collect(),
            labels: svc
                .metadata
                .labels
                .as_ref()
                .map(LabelSet::from)
                .unwrap_or_default(),
            etp_local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
            sharing_key: sharing_key(svc),
            ..Self::named(
                svc.metadata.namespace.as_deref().unwrap_or_default(),
                svc.metadata.name.as_deref().unwrap_or_default(),
            )
        }
    }

    /// The Service `namespace`/`name`: not a LoadBalancer, no ingress, no labels.
    pub fn named(namespace: &str, name: &str) -> Self {
        ServiceFacts {
            key: format!("{namespace}/{name}").into(),
            namespace_len: u32::try_from(namespace.len()).expect("a namespace of under 4 GiB"),
            load_balancer: false,
            ingress: Strings::default(),
            labels: LabelSet::new(),
            etp_local: false,
            sharing_key: None,
        }
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        &self.key[..self.namespace_len as usize]
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.key[self.namespace_len as usize + 1..]
    }

    /// `namespace/name`: the key of its [`ServiceView`], which shares it.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// Holds `key` (the caller's allocation of the same text) as its key, so the views
    /// made from these facts share it; a different text is ignored.
    pub fn share_key(&mut self, key: &Arc<str>) {
        if *self.key == **key {
            self.key = key.clone();
        }
    }
}

/// Builds the [`ServiceView`] of `svc`. `slices` may contain slices of any Service: only
/// those in the Service's namespace labelled `kubernetes.io/service-name=<name>` are used.
/// The pool is looked up in `config`. (The rule itself: [`view_of`].)
pub fn service_view<'a>(
    svc: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    config: &Config,
) -> Result<ServiceView, ViewError> {
    let facts = ServiceFacts::of(svc);
    let (ns, name) = (facts.namespace(), facts.name());
    let serving = slices
        .into_iter()
        .filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(ns)
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(name)
        })
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|e| endpoint_can_serve(e))
        .map(|e| e.node_name.as_deref());
    view_of(&facts, serving, config)
}

/// The rule behind every [`ServiceView`]: the view of the Service `svc` whose serving
/// endpoints (those [`endpoint_can_serve`] accepts) run on the nodes `serving` yields, one
/// item per endpoint (`None` or empty: an endpoint without `nodeName`). The pool is looked
/// up in `config`. Node names come as `&str`s or as the caller's own `Arc<str>`s (then the
/// view shares them).
pub fn view_of<N: AsRef<str> + Into<Arc<str>>>(
    svc: &ServiceFacts,
    serving: impl IntoIterator<Item = Option<N>>,
    config: &Config,
) -> Result<ServiceView, ViewError> {
    if svc.namespace().is_empty() || svc.name().is_empty() {
        return Err(ViewError::MissingName);
    }
    if !svc.load_balancer {
        return Err(ViewError::NotLoadBalancer);
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for raw in svc.ingress.iter().filter(|s| !s.is_empty()) {
        let ip: IpAddr = raw
            .trim()
            .parse()
            .map_err(|_| ViewError::InvalidIngressIp(raw.to_string()))?;
        let ip = canonical_ip(ip);
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(ViewError::NoIngressIp);
    }
    let mut nodes: Vec<N> = Vec::new();
    let mut has_serving_endpoint = false;
    for node in serving {
        has_serving_endpoint = true;
        if let Some(n) = node.filter(|n| !n.as_ref().is_empty()) {
            nodes.push(n);
        }
    }
    nodes.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
    nodes.dedup_by(|a, b| a.as_ref() == b.as_ref());
    let serving_endpoint_nodes: NameSet = nodes.into_iter().collect();
    Ok(ServiceView {
        key: svc.key.clone(),
        labels: svc.labels.clone(),
        pool: pool_for_ips(config, &ips),
        ips,
        etp_local: svc.etp_local,
        sharing_key: svc.sharing_key.clone(),
        serving_endpoint_nodes,
        has_serving_endpoint,
    })
}

/// IPv4-mapped IPv6 addresses are IPv4 addresses (as Go's `net.IP` treats them).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

//! What the allocator needs to know about one Service, and how it is read from a
//! Kubernetes `Service` object (pure parsing, no I/O).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use crate::selector::Labels;

/// New annotation prefix.
pub const PREFIX: &str = "metallb.io/";
/// Legacy annotation prefix (deprecated since MetalLB v0.14.9, still honoured).
pub const LEGACY_PREFIX: &str = "metallb.universe.tf/";
/// Requested IPs, comma separated (1 IP, or 2 IPs of different families).
pub const ANNOTATION_LOAD_BALANCER_IPS: &str = "loadBalancerIPs";
/// Requested pool name.
pub const ANNOTATION_ADDRESS_POOL: &str = "address-pool";
/// IP sharing key.
pub const ANNOTATION_ALLOW_SHARED_IP: &str = "allow-shared-ip";
/// Written by the controller: the pool the IPs came from.
pub const ANNOTATION_IP_ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";

/// Identity of a Service: `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ServiceKey {
    /// Builds a key from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FamilyPolicy {
    /// One family (default when unset).
    #[default]
    SingleStack,
    /// Both families when possible, else one.
    PreferDualStack,
    /// Both families or nothing.
    RequireDualStack,
}

/// A port protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// Everything the allocator needs to know about one LoadBalancer Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRequest {
    /// `namespace/name`.
    pub key: ServiceKey,
    /// `metadata.labels` (matched by pools' `serviceSelectors`).
    pub labels: Labels,
    /// Labels of the Service's Namespace (matched by pools' `namespaceSelectors`).
    pub namespace_labels: Labels,
    /// Families of `spec.clusterIPs`, in order (the first is the primary family).
    pub cluster_families: Vec<Family>,
    /// `spec.ipFamilyPolicy`.
    pub family_policy: FamilyPolicy,
    /// Requested IPs (`metallb.io/loadBalancerIPs` or `spec.loadBalancerIP`), in order.
    pub requested_ips: Vec<IpAddr>,
    /// Requested pool (`metallb.io/address-pool`).
    pub requested_pool: Option<String>,
    /// Sharing key (`metallb.io/allow-shared-ip`).
    pub sharing_key: Option<String>,
    /// Backend key: canonical `k=v,k=v` selector when `externalTrafficPolicy: Local`,
    /// empty for `Cluster`. Services sharing an IP must have equal backend keys.
    pub backend_key: String,
    /// `spec.ports` as (protocol, port).
    pub ports: Vec<(Protocol, u16)>,
    /// IPs currently in `status.loadBalancer.ingress`, in order.
    pub current_ips: Vec<IpAddr>,
}

/// Why a Service could not be turned into a [`ServiceRequest`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `metadata.name` is missing.
    #[error("the Service has no name")]
    MissingName,
    /// Annotation and `spec.loadBalancerIP` both set.
    #[error("service can not have both metallb.io/loadBalancerIPs and svc.Spec.LoadBalancerIP")]
    BothIpSources,
    /// A requested IP does not parse.
    #[error("invalid requested loadbalancer IPs: {0:?} is not an IP address")]
    InvalidIp(String),
    /// More than two requested IPs, or two of the same family.
    #[error("invalid requested loadbalancer IPs: {0}")]
    InvalidIpSet(String),
    /// A port is out of range or has an unknown protocol.
    #[error("invalid port: {0}")]
    InvalidPort(String),
    /// `spec.ipFamilyPolicy` has an unknown value.
    #[error("unknown ipFamilyPolicy {0:?}")]
    InvalidFamilyPolicy(String),
    /// A cluster IP does not parse.
    #[error("invalid clusterIP {0:?}")]
    InvalidClusterIp(String),
}

/// Reads an annotation honouring both prefixes (`metallb.io/` wins); empty values count as absent.
fn annotation<'a>(svc: &'a Service, suffix: &str) -> Option<&'a str> {
    let ann = svc.metadata.annotations.as_ref()?;
    let get = |prefix: &str| {
        ann.get(&format!("{prefix}{suffix}"))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    };
    get(PREFIX).or_else(|| get(LEGACY_PREFIX))
}

/// Checks a list of requested IPs: at most two, of different families.
pub fn check_requested_ips(ips: &[IpAddr]) -> Result<(), String> {
    match ips {
        [] | [_] => Ok(()),
        [a, b] if Family::of(a) != Family::of(b) => Ok(()),
        [a, b] => Err(format!(
            "{a} and {b} are both {}; at most one IP per family",
            Family::of(a)
        )),
        _ => Err(format!(
            "{} IPs requested; at most 2 (one IPv4, one IPv6)",
            ips.len()
        )),
    }
}

/// Parses the requested IPs of a Service (annotation or `spec.loadBalancerIP`).
fn requested_ips(svc: &Service) -> Result<Vec<IpAddr>, RequestError> {
    let ann = annotation(svc, ANNOTATION_LOAD_BALANCER_IPS);
    let spec_ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let raw: Vec<&str> = match (ann, spec_ip) {
        (Some(_), Some(_)) => return Err(RequestError::BothIpSources),
        (Some(a), None) => a.split(',').map(str::trim).collect(),
        (None, Some(s)) => vec![s],
        (None, None) => return Ok(Vec::new()),
    };
    let ips = raw
        .into_iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| RequestError::InvalidIp(s.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_requested_ips(&ips).map_err(RequestError::InvalidIpSet)?;
    Ok(ips)
}

impl ServiceRequest {
    /// Reads a Service (pure parsing). `namespace_labels` are the labels of its Namespace.
    ///
    /// Unparseable `status.loadBalancer.ingress` entries (hostnames, garbage) are ignored:
    /// the Service is then simply treated as having no IP of that kind.
    pub fn from_service(svc: &Service, namespace_labels: &Labels) -> Result<Self, RequestError> {
        let name = svc
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(RequestError::MissingName)?;
        let namespace = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let spec = svc.spec.clone().unwrap_or_default();

        let mut cluster_families = Vec::new();
        let cluster_ips: Vec<String> = match &spec.cluster_ips {
            Some(v) if !v.is_empty() => v.clone(),
            _ => spec.cluster_ip.iter().cloned().collect(),
        };
        for ip in cluster_ips {
            let ip = ip.trim();
            if ip.is_empty() || ip == "None" {
                continue;
            }
            let parsed: IpAddr = ip
                .parse()
                .map_err(|_| RequestError::InvalidClusterIp(ip.to_string()))?;
            let fam = Family::of(&parsed);
            if !cluster_families.contains(&fam) {
                cluster_families.push(fam);
            }
        }

        let family_policy = match spec.ip_family_policy.as_deref() {
            None | Some("") | Some("SingleStack") => FamilyPolicy::SingleStack,
            Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
            Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
            Some(other) => return Err(RequestError::InvalidFamilyPolicy(other.to_string())),
        };

        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            let proto = match p.protocol.as_deref() {
                None | Some("") | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                Some(other) => {
                    return Err(RequestError::InvalidPort(format!(
                        "unknown protocol {other:?}"
                    )))
                }
            };
            let port = u16::try_from(p.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| RequestError::InvalidPort(format!("{} is out of range", p.port)))?;
            ports.push((proto, port));
        }

        let backend_key = if spec.external_traffic_policy.as_deref() == Some("Local") {
            spec.selector
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        };

        let current_ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref().and_then(|s| s.trim().parse().ok()))
            .collect();

        Ok(ServiceRequest {
            key: ServiceKey { namespace, name },
            labels: svc.metadata.labels.clone().unwrap_or_default(),
            namespace_labels: namespace_labels.clone(),
            cluster_families,
            family_policy,
            requested_ips: requested_ips(svc)?,
            requested_pool: annotation(svc, ANNOTATION_ADDRESS_POOL).map(str::to_string),
            sharing_key: annotation(svc, ANNOTATION_ALLOW_SHARED_IP).map(str::to_string),
            backend_key,
            ports,
            current_ips,
        })
    }

    /// The distinct (protocol, port) pairs of the Service.
    pub(crate) fn port_set(&self) -> BTreeSet<(Protocol, u16)> {
        self.ports.iter().copied().collect()
    }
}

/// The legacy `metallb.universe.tf/*` annotation keys present on a Service, sorted.
/// The controller emits one `deprecatedAnnotation` Warning Event for them.
pub fn legacy_annotations(svc: &Service) -> Vec<String> {
    svc.metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(LEGACY_PREFIX))
        .cloned()
        .collect()
}

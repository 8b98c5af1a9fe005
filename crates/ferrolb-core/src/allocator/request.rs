//! What the allocator needs to know about one Service, and how it is read from a
//! Kubernetes `Service` object (pure parsing, no I/O).

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

    /// Parses `namespace/name` (both parts non-empty), the inverse of its `Display`.
    pub fn parse(key: &str) -> Option<Self> {
        let (ns, name) = key.split_once('/')?;
        (!ns.is_empty() && !name.is_empty()).then(|| Self::new(ns, name))
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

        let current_ips = crate::service::ingress_ips(svc)
            .filter_map(|s| s.trim().parse().ok())
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

    /// The distinct (protocol, port) pairs of the Service, sorted (binary-searchable).
    pub(crate) fn port_set(&self) -> Box<[(Protocol, u16)]> {
        let mut v = self.ports.clone();
        v.sort_unstable();
        v.dedup();
        v.into_boxed_slice()
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use std::collections::BTreeMap;

    #[test]
    fn service_keys_parse_back() {
        let k = ServiceKey::new("ns", "a");
        assert_eq!(ServiceKey::parse(&k.to_string()), Some(k));
        for bad in ["nsa", "/a", "ns/", ""] {
            assert_eq!(ServiceKey::parse(bad), None, "{bad}");
        }
    }

    fn svc(annotations: &[(&str, &str)], spec: ServiceSpec) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("shop".into());
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s.spec = Some(spec);
        s
    }

    fn base_spec() -> ServiceSpec {
        ServiceSpec {
            type_: Some("LoadBalancer".into()),
            cluster_ips: Some(vec!["10.96.0.10".into()]),
            ..Default::default()
        }
    }

    fn parse(s: &Service) -> Result<ServiceRequest, RequestError> {
        ServiceRequest::from_service(s, &Labels::new())
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn annotations_new_prefix_wins_over_legacy() {
        let s = svc(
            &[
                ("metallb.universe.tf/loadBalancerIPs", "1.1.1.1"),
                ("metallb.io/loadBalancerIPs", " 2.2.2.2 , 2000::2 "),
                ("metallb.universe.tf/address-pool", "old"),
                ("metallb.universe.tf/allow-shared-ip", "k"),
            ],
            base_spec(),
        );
        let r = parse(&s).unwrap();
        assert_eq!(r.key.to_string(), "shop/web");
        assert_eq!(r.requested_ips, ips(&["2.2.2.2", "2000::2"]));
        assert_eq!(r.requested_pool.as_deref(), Some("old"));
        assert_eq!(r.sharing_key.as_deref(), Some("k"));
        assert_eq!(
            legacy_annotations(&s),
            vec![
                "metallb.universe.tf/address-pool",
                "metallb.universe.tf/allow-shared-ip",
                "metallb.universe.tf/loadBalancerIPs"
            ]
        );
        let s = svc(&[("metallb.io/address-pool", "new")], base_spec());
        assert!(legacy_annotations(&s).is_empty());
    }

    #[test]
    fn requested_ip_errors() {
        let mut spec = base_spec();
        spec.load_balancer_ip = Some("1.2.3.1".into());
        assert_eq!(
            parse(&svc(&[], spec.clone())).unwrap().requested_ips,
            ips(&["1.2.3.1"])
        );
        let both = svc(&[("metallb.io/loadBalancerIPs", "1.2.3.1")], spec);
        assert_eq!(parse(&both), Err(RequestError::BothIpSources));
        let same_family = svc(
            &[("metallb.io/loadBalancerIPs", "1.2.3.1,1.2.3.2")],
            base_spec(),
        );
        assert!(matches!(
            parse(&same_family),
            Err(RequestError::InvalidIpSet(_))
        ));
        let three = svc(
            &[("metallb.io/loadBalancerIPs", "1.2.3.1,::1,::2")],
            base_spec(),
        );
        assert!(matches!(parse(&three), Err(RequestError::InvalidIpSet(_))));
        let junk = svc(&[("metallb.io/loadBalancerIPs", "1.2.3.1,")], base_spec());
        assert_eq!(parse(&junk), Err(RequestError::InvalidIp(String::new())));
        let junk = svc(&[("metallb.io/loadBalancerIPs", "banana")], base_spec());
        assert_eq!(parse(&junk), Err(RequestError::InvalidIp("banana".into())));
    }

    #[test]
    fn spec_fields() {
        let mut spec = base_spec();
        spec.cluster_ips = Some(vec!["fd00::10".into(), "10.96.0.10".into()]);
        spec.ip_family_policy = Some("PreferDualStack".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.selector = Some(BTreeMap::from([
            ("tier".to_string(), "web".to_string()),
            ("app".to_string(), "shop".to_string()),
        ]));
        spec.ports = Some(vec![
            ServicePort {
                port: 80,
                ..Default::default()
            },
            ServicePort {
                port: 53,
                protocol: Some("UDP".into()),
                ..Default::default()
            },
        ]);
        let mut s = svc(&[], spec.clone());
        s.metadata.labels = Some(BTreeMap::from([("team".to_string(), "a".to_string())]));
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    LoadBalancerIngress {
                        ip: Some("5.5.5.5".into()),
                        ..Default::default()
                    },
                    LoadBalancerIngress {
                        hostname: Some("lb.example".into()),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        });
        let ns = Labels::from([("env".to_string(), "prod".to_string())]);
        let r = ServiceRequest::from_service(&s, &ns).unwrap();
        assert_eq!(r.cluster_families, vec![Family::V6, Family::V4]);
        assert_eq!(r.family_policy, FamilyPolicy::PreferDualStack);
        assert_eq!(r.backend_key, "app=shop,tier=web");
        assert_eq!(r.ports, vec![(Protocol::Tcp, 80), (Protocol::Udp, 53)]);
        assert_eq!(r.current_ips, ips(&["5.5.5.5"]));
        assert_eq!(r.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(r.namespace_labels, ns);
        assert!(r.requested_ips.is_empty());

        // Cluster policy: empty backend key; legacy clusterIP field; no policy = SingleStack.
        spec.external_traffic_policy = Some("Cluster".into());
        spec.cluster_ips = None;
        spec.cluster_ip = Some("10.0.0.1".into());
        spec.ip_family_policy = None;
        let r = parse(&svc(&[], spec.clone())).unwrap();
        assert_eq!(r.backend_key, "");
        assert_eq!(r.cluster_families, vec![Family::V4]);
        assert_eq!(r.family_policy, FamilyPolicy::SingleStack);

        spec.cluster_ip = Some("None".into());
        assert!(parse(&svc(&[], spec.clone()))
            .unwrap()
            .cluster_families
            .is_empty());
        spec.cluster_ip = Some("nope".into());
        assert!(matches!(
            parse(&svc(&[], spec.clone())),
            Err(RequestError::InvalidClusterIp(_))
        ));
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let mut spec = base_spec();
        spec.ip_family_policy = Some("Sometimes".into());
        assert!(matches!(
            parse(&svc(&[], spec)),
            Err(RequestError::InvalidFamilyPolicy(_))
        ));
        for (port, proto) in [(0, "TCP"), (70000, "TCP"), (-1, "UDP"), (80, "ICMP")] {
            let mut spec = base_spec();
            spec.ports = Some(vec![ServicePort {
                port,
                protocol: Some(proto.into()),
                ..Default::default()
            }]);
            assert!(matches!(
                parse(&svc(&[], spec)),
                Err(RequestError::InvalidPort(_))
            ));
        }
        let mut s = svc(&[], base_spec());
        s.metadata.name = None;
        assert_eq!(parse(&s), Err(RequestError::MissingName));
        // No spec at all: parses, with no family (the allocator reports that).
        let mut s = svc(&[], base_spec());
        s.spec = None;
        assert!(parse(&s).unwrap().cluster_families.is_empty());
    }
}

//! Typed allocation errors, with messages MetalLB users recognise.

use std::net::IpAddr;

use super::request::{Protocol, ServiceKey};

/// Why a Service could not get (or keep) an IP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// No pool is configured at all.
    #[error("no available IPs: no IPAddressPool is configured")]
    NoPools,
    /// No candidate pool had room.
    #[error("no available IPs")]
    NoAvailableIps,
    /// The requested (or only eligible) pool is full.
    #[error("no available IPs in pool {0:?}")]
    NoAvailableIpsInPool(String),
    /// `metallb.io/address-pool` names a pool that does not exist.
    #[error("unknown pool {0:?}")]
    UnknownPool(String),
    /// The requested pool (or the pool of a requested IP) is frozen.
    #[error("pool {0:?} is frozen: its spec is invalid (see its Valid condition); it keeps the IPs it has given out but gives out no new one")]
    PoolFrozen(String),
    /// The requested pool's `serviceAllocation` excludes this Service.
    #[error("pool {pool:?} does not allow {service}")]
    PoolNotAllowed {
        /// Pool name.
        pool: String,
        /// The Service.
        service: ServiceKey,
    },
    /// A requested IP is outside every pool that allows the Service.
    #[error("requested IP {ip} is not in any pool allowed for {service}")]
    RequestedIpNotAllowed {
        /// The IP.
        ip: IpAddr,
        /// The Service.
        service: ServiceKey,
    },
    /// A requested IP is not in the requested pool.
    #[error("requested IP {ip} is not in requested pool {pool:?}")]
    RequestedIpNotInPool {
        /// The IP.
        ip: IpAddr,
        /// Pool name.
        pool: String,
    },
    /// An IP the Service already has is outside every pool that allows it.
    #[error("IP {ip} is not in any pool allowed for {service}")]
    IpNotAllowed {
        /// The IP.
        ip: IpAddr,
        /// The Service.
        service: ServiceKey,
    },
    /// The IPs of a dual-stack request are in different pools.
    #[error(
        "IPs {ips:?} are in different pools ({pools:?}); both families must come from one pool"
    )]
    SplitPools {
        /// The IPs.
        ips: Vec<IpAddr>,
        /// The pools holding them.
        pools: Vec<String>,
    },
    /// More than two IPs, or two of one family.
    #[error("invalid requested loadbalancer IPs: {0}")]
    InvalidIps(String),
    /// Requested IP families differ from the Service's clusterIP families.
    #[error("requested IPs do not match the Service's IP families")]
    FamilyMismatch,
    /// The Service has no usable clusterIP, so its family is unknown.
    #[error("the Service has no clusterIPs, its IP family is unknown")]
    NoClusterIps,
    /// `RequireDualStack` with a single clusterIP.
    #[error("Service requires dual stack but not enough clusterips")]
    NotEnoughClusterIps,
    /// The IP is used by a Service and one of the two does not allow sharing.
    #[error("IP {ip} is already in use by {by} and sharing is not allowed (both Services need the same metallb.io/allow-shared-ip)")]
    IpInUse {
        /// The IP.
        ip: IpAddr,
        /// One Service holding it.
        by: ServiceKey,
    },
    /// Sharing keys differ.
    #[error("sharing key {requested:?} does not match {existing:?} (IP {ip})")]
    SharingKeyMismatch {
        /// The new Service's key.
        requested: String,
        /// The key of the Services on the IP.
        existing: String,
        /// The IP.
        ip: IpAddr,
    },
    /// Backend keys (externalTrafficPolicy / selector) differ.
    #[error("backend key {requested:?} does not match {existing:?} (IP {ip}); Services sharing an IP need the same externalTrafficPolicy and, for Local, the same selector")]
    BackendKeyMismatch {
        /// The new Service's backend key.
        requested: String,
        /// The backend key of the Services on the IP.
        existing: String,
        /// The IP.
        ip: IpAddr,
    },
    /// A (protocol, port) is already used on the shared IP.
    #[error("port {protocol}/{port} is already in use on {ip}")]
    PortInUse {
        protocol: Protocol,
        port: u16,
        /// The IP.
        ip: IpAddr,
    },
}

//! ferrolb: a Layer-2 bare-metal LoadBalancer for Kubernetes that speaks MetalLB's L2 API.
//!
//! The pure modules live in the `ferrolb-core` crate and are re-exported here under their
//! usual names; this crate holds the shells around them:
//!
//! | module | kind | what it does |
//! |---|---|---|
//! | [`selector`] | pure | Kubernetes label selectors, validated and matched |
//! | [`class`] | pure | `loadBalancerClass`: which Services an installation handles |
//! | [`crd`] | types | `metallb.io/v1beta1` CRDs: IPAddressPool, L2Advertisement, ServiceL2Status |
//! | [`config`] | pure | pools + advertisements → validated, typed configuration (or errors) |
//! | [`allocator`] | pure | which external IP(s) each LoadBalancer Service gets |
//! | [`election`] | pure | which node announces each IP |
//! | [`wire`] | pure | zero-copy Ethernet / ARP / IPv6 / ICMPv6-NDP parse and emit |
//! | [`dataplane`] | shell | raw packet sockets answering ARP/NDP, gratuitous announcements |
//! | [`controller`] | shell | kube-runtime controller wrapping the allocator |
//! | [`speaker`] | shell | per-node speaker wiring election to the dataplane |
//! | [`explain`] | core + shell | `ferrolb explain`: why an external IP is (not) reachable |
//! | [`rbac`] | table | the API permissions each component needs (source of deploy/rbac.yaml) |
//! | [`telemetry`] | shell | logging setup and the Prometheus / health HTTP endpoint |
//! | [`runtime`] | shell | kube client builder, flag durations, shutdown signal (both components) |

pub use ferrolb_core::{
    allocator, class, config, crd, dense, election, packed, selector, service, wire,
};

pub mod cli;
pub mod controller;
pub mod dataplane;
pub mod explain;
pub mod rbac;
pub mod runtime;
pub mod speaker;
pub mod telemetry;
pub mod validate;

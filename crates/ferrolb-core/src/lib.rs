//! ferrolb's pure core: everything that decides, and nothing that does I/O.
//!
//! This crate depends on neither tokio nor a Kubernetes client, so the compiler keeps it pure:
//! every function here is a function of its arguments, unit- and property-testable without a
//! runtime, a socket or an API server. The `ferrolb` crate is the shell that feeds it.
//!
//! | module | what it does |
//! |---|---|
//! | [`selector`] | Kubernetes label selectors, validated and matched |
//! | [`class`] | `loadBalancerClass`: which Services an installation handles |
//! | [`crd`] | `metallb.io/v1beta1` CRDs: IPAddressPool, L2Advertisement, ServiceL2Status |
//! | [`config`] | pools + advertisements → validated, typed configuration (or errors) |
//! | [`allocator`] | which external IP(s) each LoadBalancer Service gets |
//! | [`election`] | which node announces each IP; Lease timing; peer-liveness rules |
//! | [`wire`] | zero-copy Ethernet / ARP / IPv6 / ICMPv6-NDP parse and emit |
//! | [`packed`] | several strings in one allocation, for tables held by the thousand |

pub mod allocator;
pub mod class;
pub mod config;
pub mod crd;
pub mod dense;
pub mod election;
pub mod packed;
pub mod selector;
pub mod service;
pub mod wire;

//! Typed validation errors and warnings. Their `Display` names the object kind, the
//! object, the field, and quotes the bad value, e.g.
//! `IPAddressPool "p": spec.addresses[1]: invalid CIDR "10.0.0.0/33": prefix length 33 is longer than 32, the maximum for IPv4`.

use std::fmt;

use ipnet::IpNet;

use super::address::AddressError;
use crate::selector::SelectorError;

/// The kind of configuration object a diagnostic is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `metallb.io/v1beta1` IPAddressPool.
    IPAddressPool,
    /// `metallb.io/v1beta1` L2Advertisement.
    L2Advertisement,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::IPAddressPool => "IPAddressPool",
            ObjectKind::L2Advertisement => "L2Advertisement",
        })
    }
}

/// What is wrong with one field of one object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `metadata.name` is missing or empty.
    #[error("name is missing")]
    MissingName,
    /// Another object of the same kind and name takes precedence.
    #[error("duplicate definition of {kind} {name:?} (the first one is kept)")]
    DuplicateName {
        /// Kind of both objects.
        kind: ObjectKind,
        /// The shared name.
        name: String,
    },
    /// An address entry does not parse.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// `spec.addresses` is empty.
    #[error("no addresses defined: a pool needs at least one CIDR or range")]
    NoAddresses,
    /// Two entries of the same pool overlap.
    #[error(
        "CIDR \"{prefix}\" overlaps with CIDR \"{other_prefix}\" at {other_field} of the same pool"
    )]
    OverlapInPool {
        /// The prefix of this entry.
        prefix: IpNet,
        /// The earlier prefix it overlaps.
        other_prefix: IpNet,
        /// Field of the earlier entry, e.g. `spec.addresses[0]`.
        other_field: String,
    },
    /// An entry overlaps an address of another (kept) pool.
    #[error("CIDR \"{prefix}\" overlaps with CIDR \"{other_prefix}\" of IPAddressPool {other_pool:?} ({other_field}), which is kept")]
    OverlapAcrossPools {
        /// The prefix of this entry.
        prefix: IpNet,
        /// The other pool's name.
        other_pool: String,
        /// The other pool's prefix.
        other_prefix: IpNet,
        /// Field of the other pool's entry.
        other_field: String,
    },
    /// The same namespace is listed twice.
    #[error("duplicate namespace {namespace:?} (already at {first_field})")]
    DuplicateNamespace {
        /// The namespace.
        namespace: String,
        /// Where it was first listed.
        first_field: String,
    },
    /// The same label selector is listed twice.
    #[error("duplicate label selector \"{selector}\" (same as {first_field})")]
    DuplicateSelector {
        /// The selector in `kubectl` form (`{}` matches everything).
        selector: String,
        /// Where it was first listed.
        first_field: String,
    },
    /// A label selector is invalid.
    #[error("invalid label selector: {0}")]
    InvalidSelector(SelectorError),
    /// The same pool name is listed twice in an L2Advertisement.
    #[error("duplicate pool name {pool:?} (already at {first_field})")]
    DuplicatePoolName {
        /// The pool name.
        pool: String,
        /// Where it was first listed.
        first_field: String,
    },
    /// A list entry that must be a non-empty string is empty.
    #[error("empty value \"\" is not allowed")]
    EmptyValue,
    /// `preferredNodeSelectors[].weight` outside 1..=100.
    #[error("weight {weight} is out of range: must be between 1 and 100")]
    WeightOutOfRange {
        /// The weight given.
        weight: i32,
    },
}

/// A validation error: one field of one object. The object is left out of the
/// [`super::Config`]; every other valid object is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// `metadata.name` (empty when missing).
    pub name: String,
    /// Position of the object in the slice given to [`super::validate`].
    pub index: usize,
    /// JSON path of the field, e.g. `spec.addresses[1]`.
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?}: {}: {}",
            self.kind, self.name, self.field, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

/// Something valid but probably not what the user wants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    /// An L2Advertisement names a pool that does not exist (MetalLB ignores it silently).
    #[error("pool {pool:?} does not exist (ignored)")]
    UnknownPool {
        /// The missing pool name.
        pool: String,
    },
    /// No L2Advertisement selects a pool: its IPs are handed out but never announced.
    #[error("no L2Advertisement selects this pool: its IPs are assigned to Services but never announced")]
    NotAdvertised,
}

/// A warning about one object (never makes an object invalid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// `metadata.name`.
    pub name: String,
    /// Position of the object in the slice given to [`super::validate`].
    pub index: usize,
    /// JSON path of the field, or empty when about the whole object.
    pub field: String,
    /// What looks wrong.
    pub warning: Warning,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: ", self.kind, self.name)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.warning)
    }
}

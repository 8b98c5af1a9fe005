//! Turns the IPAddressPool / L2Advertisement objects into the validated [`Config`] the
//! election consumes, with the controller's own validation ([`crate::config::validate`]).
//! Invalid objects are reported and left out: one typo never stops the others.

use crate::config::Config;
use crate::crd::{IPAddressPool, L2Advertisement};

/// Builds the configuration; returns it with one message per problem.
pub fn build_config(pools: &[IPAddressPool], ads: &[L2Advertisement]) -> (Config, Vec<String>) {
    let v = crate::config::validate(pools, ads);
    (v.config, v.errors.iter().map(|e| e.to_string()).collect())
}

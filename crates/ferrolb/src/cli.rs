//! Command-line interface (clap). Each subcommand's arguments live in its own module
//! (`controller::Args`, `speaker::Args`, `lab::Args`, …); this file only assembles them.

use clap::{Parser, Subcommand};

use crate::telemetry::LogArgs;

/// ferrolb: Layer-2 LoadBalancer for bare-metal Kubernetes, compatible with MetalLB's L2 API.
///
/// On clusters without a cloud load balancer, Services of `type: LoadBalancer` stay
/// `<pending>`. ferrolb gives them an external IP from your IPAddressPools (controller)
/// and makes exactly one node answer ARP/NDP for that IP on the LAN (speaker).
#[derive(Debug, Parser)]
#[command(name = "ferrolb", version, propagate_version = true)]
#[cfg_attr(feature = "lab", command(after_help = LAB_HINT))]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Said under `--help` by a build that has the lab in it (the image's binary does not).
#[cfg(feature = "lab")]
const LAB_HINT: &str =
    "Start with `ferrolb lab` (as root) to watch the whole thing work in network \
namespaces on this machine, no cluster needed.";

/// Subcommands. Parsed once at start-up, so variant size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Allocate external IPs for LoadBalancer Services (run as a 2-replica Deployment; one is leader).
    Controller(crate::controller::Args),
    /// Answer ARP/NDP for the IPs this node owns (run as a DaemonSet with host networking).
    Speaker(crate::speaker::Args),
    /// Print every CustomResourceDefinition ferrolb serves, as YAML (`ferrolb crds | kubectl apply -f -`).
    Crds,
    /// Explain why a Service's external IP is (not) reachable: pool, announcing node, and
    /// for every other node why it does not announce (read-only).
    Explain(crate::explain::Args),
    /// Check IPAddressPool / L2Advertisement manifests offline, with the controller's own validation.
    Validate(crate::validate::ValidateArgs),
    /// Run a complete demo on this machine: namespaces as nodes, a client, failover measured (root).
    #[cfg(feature = "lab")]
    Lab(ferrolb_lab::Args),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn help_points_to_the_lab_only_when_it_is_built_in() {
        for help in [
            Cli::command().render_help().to_string(),
            Cli::command().render_long_help().to_string(),
        ] {
            assert_eq!(
                help.contains("ferrolb lab"),
                cfg!(feature = "lab"),
                "{help}"
            );
        }
    }
}

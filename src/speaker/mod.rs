//! The speaker (DaemonSet, host network): for every allocated IP exactly one node owns it
//! and answers ARP / NDP for it. Thin shell around the pure election ([`crate::election`])
//! and the dataplane ([`crate::dataplane`]).

pub mod announcer;
pub mod args;
pub mod claims;
pub mod config_view;
pub mod core;
pub mod events;
pub mod liveness;
pub mod metrics;
pub mod status;

pub use args::Args;

/// Runs `ferrolb speaker`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`ferrolb speaker` is not there yet")
}

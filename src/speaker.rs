//! See lib.rs module table. (placeholder until its issue lands)

/// Command-line arguments of `ferrolb speaker`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

/// Runs `ferrolb speaker`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`ferrolb speaker` is not there yet")
}

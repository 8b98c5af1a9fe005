//! See lib.rs module table. (placeholder until its issue lands)

/// Command-line arguments of `ferrolb controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

/// Runs `ferrolb controller`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`ferrolb controller` is not there yet")
}

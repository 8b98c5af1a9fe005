//! See lib.rs module table. (placeholder until its issue lands)

/// Command-line arguments of `ferrolb lab`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

/// Runs `ferrolb lab`.
pub async fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("`ferrolb lab` is not there yet")
}

pub mod apiserver;
pub mod netns;

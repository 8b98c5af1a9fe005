//! `ferrolb controller`: gives `type: LoadBalancer` Services an external IP.
//!
//! Functional core, thin shell:
//!
//! | module | kind | what it does |
//! |---|---|---|
//! | [`args`] | – | command-line flags |
//! | [`leader`] | shell | Lease-based leader election, the "may I write" flag |
//! | [`metrics`] | – | Prometheus metrics |
//!
//! Only the leader writes; see [`leader`].

pub mod args;
pub mod core;
pub mod leader;
pub mod metrics;
pub mod pools;
pub mod status;
pub mod writer;

pub use args::Args;

/// Installs the rustls crypto provider (ring) once per process. Real kube clients
/// panic without one when several providers are compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a kube client from `--kubeconfig` (one or several files joined with `:`),
/// else in-cluster configuration, else `~/.kube/config`.
pub async fn make_client(kubeconfig: Option<&str>) -> anyhow::Result<kube::Client> {
    install_crypto_provider();
    let config = match kubeconfig.filter(|k| !k.trim().is_empty()) {
        Some(paths) => {
            let mut merged: Option<kube::config::Kubeconfig> = None;
            for p in paths.split(':').filter(|p| !p.is_empty()) {
                let kc = kube::config::Kubeconfig::read_from(p)
                    .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {p}: {e}"))?;
                merged = Some(match merged {
                    None => kc,
                    Some(m) => m.merge(kc)?,
                });
            }
            let kc = merged.ok_or_else(|| anyhow::anyhow!("--kubeconfig is empty"))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("invalid kubeconfig {paths}: {e}"))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("cannot find the API server (no in-cluster config, no ~/.kube/config): {e}")
        })?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Runs `ferrolb controller`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    args.check()?;
    let _client = make_client(args.kubeconfig.as_deref()).await?;
    anyhow::bail!("`ferrolb controller` is not there yet")
}

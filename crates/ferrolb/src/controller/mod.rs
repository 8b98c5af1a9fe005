//! `ferrolb controller`: gives `type: LoadBalancer` Services an external IP.
//!
//! Functional core, thin shell:
//!
//! | module | kind | what it does |
//! |---|---|---|
//! | [`args`] | – | command-line flags |
//! | [`core`] | pure | one Service → status patch, Events, pending (wraps the allocator) |
//! | [`status`] | pure | Service status/annotation diff → merge patch |
//! | [`pools`] | pure | IPAddressPool status (counters, `Valid` condition) diff |
//! | [`slim`] | pure | the cached projection of a Service (only the fields read) |
//! | [`shell`] | shell | watches, start-up rebuild, kube-runtime Controller, pool status writer |
//! | [`writer`] | shell | the only API writes: leader-gated, counted, feeding readiness |
//! | [`backoff`] | pure | per-object retry delays of failed writes |
//! | [`leader`] | shell | Lease-based leader election, the "may I write" flag |
//! | [`metrics`] | – | Prometheus metrics |
//!
//! Process: [`run`] serves metrics, runs the election, and for each period of
//! leadership runs one [`shell::lead`] session (LIST + rebuild, then watch and
//! reconcile). Losing the lease drops the session at once; SIGTERM stops writes,
//! releases the Lease and exits.
//!
//! Readiness (`/readyz`): 200 once started; 503 while a leader's Service status writes, or
//! its pool status writes, have kept failing (no success of that kind) for
//! [`crate::telemetry::UNREADY_AFTER`], or while its leadership sessions have kept failing
//! before coming up for as long. A standby is ready.

pub mod args;
pub mod backoff;
pub mod core;
pub mod leader;
pub mod metrics;
pub mod pools;
pub mod secret;
pub mod shell;
pub mod slim;
pub mod status;
pub mod writer;

pub use args::Args;

use tokio::sync::watch;

pub use crate::runtime::{install_crypto_provider, make_client};

/// Runs `ferrolb controller` until SIGTERM / SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    args.check()?;
    let client = make_client(args.kubeconfig.as_deref()).await?;
    let (metrics, registry) = metrics::Metrics::new_registered();
    let health = crate::telemetry::Health::default();
    let (addr, _server) =
        crate::telemetry::serve(args.metrics_addr, registry, health.clone()).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::runtime::shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    // The speakers' heartbeat key: created once when absent.
    tokio::spawn(secret::ensure_heartbeat_key_loop(
        client.clone(),
        args.namespace.clone(),
    ));
    let client2 = client.clone();
    let ns = args.namespace.clone();
    run_with(client, &args, metrics, health, shutdown_rx, move || {
        shell::Inputs::watch(&client2, &ns)
    })
    .await
}

/// The controller with an existing client, until `shutdown` turns true.
/// `inputs` builds the watch streams of each leadership session.
pub async fn run_with(
    client: kube::Client,
    args: &Args,
    metrics: metrics::Metrics,
    health: crate::telemetry::Health,
    mut shutdown: watch::Receiver<bool>,
    inputs: impl Fn() -> shell::Inputs,
) -> anyhow::Result<()> {
    args.check()?;
    let identity = args.identity();
    let (leadership, elector) = if args.no_leader_election {
        metrics.leader.set(1);
        (leader::Leadership::always(), None)
    } else {
        let leadership = leader::Leadership::new();
        let cfg = leader::LeaderConfig {
            namespace: args.namespace.clone(),
            lease_name: args.leader_election_lease_name.clone(),
            identity: identity.clone(),
            lease_duration: args.leader_election_lease_duration,
            renew_period: args.leader_election_renew_period,
            retry_period: args.leader_election_retry_period,
        };
        let task = tokio::spawn(leader::run_elector(
            client.clone(),
            cfg,
            leadership.clone(),
            shutdown.clone(),
            metrics.clone(),
        ));
        (leadership, Some(task))
    };
    let writer = writer::Writer::new(
        client.clone(),
        &identity,
        leadership.clone(),
        metrics.clone(),
        &args.namespace,
    )
    .with_health(&health);
    let settings = shell::Settings::new(args);
    health.set_ready(true);
    tracing::info!(%identity, namespace = %args.namespace, lb_class = ?settings.lb_class, "controller started");
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => break,
            _ = leadership.until_leading() => {}
        }
        tracing::info!("leading: rebuilding state and reconciling");
        metrics.leading();
        let session = shell::lead(
            client.clone(),
            settings.clone(),
            inputs(),
            writer.clone(),
            metrics.clone(),
        );
        let failed = tokio::select! {
            r = session => {
                match r {
                    Ok(()) => tracing::warn!("session ended"),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "session failed; restarting"),
                }
                writer.session_failed();
                true
            }
            _ = leadership.until_lost() => {
                tracing::warn!("not leading any more; stopped all writes");
                writer.standing_by();
                false
            }
            _ = shutdown.wait_for(|v| *v) => break,
        };
        metrics.standing_by();
        if failed {
            tokio::select! {
                _ = shutdown.wait_for(|v| *v) => break,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
    health.set_ready(false);
    if let Some(task) = elector {
        // The elector saw `shutdown` too: it stops writes and releases the Lease.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    Ok(())
}

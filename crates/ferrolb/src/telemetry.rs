//! Logging set-up and the HTTP endpoint serving Prometheus metrics and health probes.
//!
//! Every long-running component owns a [`prometheus_client::registry::Registry`],
//! registers its counters in it, and hands it to [`serve`], which exposes
//! `/metrics` (Prometheus text format), `/healthz` (process alive) and `/readyz`
//! (the component's own readiness flag, see [`Health`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Logging flags shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FERROLB_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log level or filter: error, warn, info, debug, trace, or a tracing filter such as
    /// `info,ferrolb::dataplane=debug`.
    #[arg(long, global = true, default_value = "info", env = "FERROLB_LOG_LEVEL")]
    pub log_level: String,
}

/// Installs the global tracing subscriber. Safe to call once per process.
pub fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    res.map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))
}

/// Readiness shared between a component and its `/readyz` endpoint.
#[derive(Clone, Debug, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the component ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Mutex<Registry>>,
    health: Health,
}

/// Builds the router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(registry: Arc<Mutex<Registry>>, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, health })
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    let res = {
        let reg = st.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut body, &reg)
    };
    match res {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    if st.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the metrics/health router on `addr` until the task is dropped.
/// Returns the bound address (useful with port 0 in tests).
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    health: Health,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(registry, health);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok((bound, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_probes() {
        let mut reg = Registry::default();
        let c: Counter = Counter::default();
        reg.register("ferrolb_test_events", "test counter", c.clone());
        c.inc_by(3);
        let health = Health::default();
        let (addr, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Mutex::new(reg)),
            health.clone(),
        )
        .await
        .unwrap();
        let m = get(addr, "/metrics").await;
        assert!(m.contains("ferrolb_test_events_total 3"), "{m}");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        task.abort();
    }
}

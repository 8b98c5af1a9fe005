//! Logging set-up and the HTTP endpoint serving Prometheus metrics and health probes.
//!
//! Every long-running component owns a [`prometheus_client::registry::Registry`],
//! registers its counters in it, and hands it to [`serve`], which exposes
//! `/metrics` (Prometheus text format), `/healthz` (process alive) and `/readyz`
//! (the component's readiness, see [`Health`]).
//!
//! Logs go to stderr, coloured only when stderr is a terminal (and `NO_COLOR` is unset),
//! so log files and collectors never see ANSI escapes.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Whether text logs are coloured: only on a terminal, and never with `NO_COLOR` set to
/// a non-empty value (<https://no-color.org>).
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global tracing subscriber. Safe to call once per process.
pub fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", args.log_level))?;
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let res = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    res.map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))
}

/// How long a [`Check`] may keep failing (no success since its first failure) before
/// `/readyz` answers 503.
pub const UNREADY_AFTER: Duration = Duration::from_secs(30);

/// Whether a check failing since `since` still counts as healthy at `now`: never failing,
/// or failing for less than `limit`.
pub fn check_healthy(since: Option<Instant>, now: Instant, limit: Duration) -> bool {
    since.is_none_or(|t| now.saturating_duration_since(t) < limit)
}

/// Something readiness depends on that can keep failing (status writes, a session). A
/// failure starts a streak, a success ends it; `/readyz` turns 503 once a streak is
/// [`UNREADY_AFTER`] old. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Check {
    since: Arc<Mutex<Option<Instant>>>,
}

impl Check {
    /// A success: the streak (if any) ends.
    pub fn ok(&self) {
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A failure: starts a streak unless one is running.
    pub fn failed(&self) {
        self.since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Instant::now);
    }

    /// When the current streak of failures started.
    pub fn failing_since(&self) -> Option<Instant> {
        *self.since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Readiness shared between a component and its `/readyz` endpoint: its own flag, and
/// every [`Check`] it registered healthy (see [`check_healthy`]).
#[derive(Clone, Debug)]
pub struct Health {
    ready: Arc<AtomicBool>,
    checks: Arc<Mutex<Vec<(&'static str, Check)>>>,
    unready_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            ready: Arc::default(),
            checks: Arc::default(),
            unready_after: UNREADY_AFTER,
        }
    }
}

impl Health {
    /// The same, with streaks of failures unhealthy after `d` instead of [`UNREADY_AFTER`].
    pub fn with_unready_after(mut self, d: Duration) -> Self {
        self.unready_after = d;
        self
    }

    /// Marks the component ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Registers a check named `name` (shown in the `/readyz` answer while it fails).
    pub fn check(&self, name: &'static str) -> Check {
        let c = Check::default();
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, c.clone()));
        c
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err("not ready".into());
        }
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        for (name, c) in checks.iter() {
            let since = c.failing_since();
            if !check_healthy(since, now, self.unready_after) {
                let secs = since.map_or(0, |t| now.saturating_duration_since(t).as_secs());
                return Err(format!("not ready: {name} failing for {secs}s"));
            }
        }
        Ok(())
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.readiness(Instant::now()).is_ok()
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
    match st.health.readiness(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
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
        // A check failing for too long makes it unready, with the reason.
        let writes = health.check("pool status writes");
        writes.failed();
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        *writes.since.lock().unwrap() = Some(Instant::now() - UNREADY_AFTER);
        let r = get(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(
            r.contains("not ready: pool status writes failing for 30s"),
            "{r}"
        );
        writes.ok();
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        task.abort();
    }

    #[test]
    fn a_check_is_unhealthy_only_after_a_long_streak() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        assert!(check_healthy(None, t0, limit));
        assert!(check_healthy(Some(t0), t0 + Duration::from_secs(29), limit));
        assert!(!check_healthy(Some(t0), t0 + limit, limit));
        // A clock that went backwards never makes it unhealthy.
        assert!(check_healthy(Some(t0 + limit), t0, limit));
        // A streak keeps its start: later failures do not move it; a success ends it.
        let c = Check::default();
        c.failed();
        let first = c.failing_since().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        c.failed();
        assert_eq!(c.failing_since(), Some(first));
        c.ok();
        assert_eq!(c.failing_since(), None);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None), "a pipe or a log file: no escapes");
    }
}

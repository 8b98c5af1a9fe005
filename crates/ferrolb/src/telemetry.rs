//! Logging set-up and the HTTP endpoint serving Prometheus metrics and health probes.
//!
//! Every long-running component owns a [`prometheus_client::registry::Registry`],
//! registers its counters in it, and hands it to [`serve`], which exposes
//! `/metrics` (Prometheus text format), `/healthz` (process alive) and `/readyz`
//! (the component's readiness, see [`Health`]).
//!
//! Logs go to stderr, coloured only when stderr is a terminal (and `NO_COLOR` is unset),
//! so log files and collectors never see ANSI escapes.
//!
//! MetalLB's series (`metallb_*`) are exported next to ferrolb's own, from the same values:
//! [`Mirrored`] keeps a labelled family once and encodes it under both names,
//! [`ConfigMetrics`] holds the configuration facts both components report. OpenMetrics
//! requires a counter's samples to end in `_total`; MetalLB's counters without that suffix
//! (`metallb_layer2_requests_received` …) keep their exact name and are typed `unknown`,
//! which `rate()` and `increase()` treat like a counter.

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
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
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

/// A metric kind that also has a MetalLB-compatible encoding.
pub trait MetalLbEncoding: EncodeMetric + TypedMetric {
    /// The OpenMetrics type under MetalLB's name.
    const METALLB_TYPE: MetricType;
    /// Encodes the value under MetalLB's name (no suffix added).
    fn encode_metallb(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error>;
}

impl MetalLbEncoding for Counter {
    const METALLB_TYPE: MetricType = MetricType::Unknown;
    fn encode_metallb(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }
}

impl MetalLbEncoding for Gauge {
    const METALLB_TYPE: MetricType = MetricType::Gauge;
    fn encode_metallb(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.encode(encoder)
    }
}

/// A label set with constant labels appended.
struct WithLabels<'a, S>(&'a S, &'a [(&'static str, &'static str)]);

impl<S: EncodeLabelSet> EncodeLabelSet for WithLabels<'_, S> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)?;
        self.1.encode(encoder)
    }
}

/// An IP address as a label value: written as its text (`IpAddr`'s `Display`), kept as
/// the address, so a series per IP holds no string for it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct IpLabelValue(pub std::net::IpAddr);

impl prometheus_client::encoding::EncodeLabelValue for IpLabelValue {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{}", self.0)
    }
}

/// Name and help of one exported series.
#[derive(Clone, Copy, Debug)]
pub struct SeriesName {
    /// Full metric name (counters get `_total` appended on the wire).
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
}

/// A family of metrics (one per label set) kept once and exported twice: under ferrolb's name
/// and under MetalLB's, with constant labels MetalLB has and ferrolb does not (e.g.
/// `protocol="layer2"`). The API follows [`prometheus_client::metrics::family::Family`];
/// handles returned by [`Mirrored::get_or_create`] share the value. Cheap to clone.
#[derive(Debug)]
pub struct Mirrored<S, M> {
    metrics: Arc<std::sync::RwLock<std::collections::HashMap<S, M>>>,
}

impl<S, M> Clone for Mirrored<S, M> {
    fn clone(&self) -> Self {
        Self {
            metrics: self.metrics.clone(),
        }
    }
}

impl<S, M> Default for Mirrored<S, M> {
    fn default() -> Self {
        Self {
            metrics: Arc::default(),
        }
    }
}

impl<S, M> Mirrored<S, M>
where
    S: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    M: MetalLbEncoding + Clone + Default + std::fmt::Debug + Send + Sync + 'static,
{
    /// The metric of `labels`, created at zero when absent (a shared handle).
    pub fn get_or_create(&self, labels: &S) -> M {
        if let Some(m) = self.get(labels) {
            return m;
        }
        let mut w = self.metrics.write().unwrap_or_else(|p| p.into_inner());
        w.entry(labels.clone()).or_default().clone()
    }

    /// The metric of `labels`, if it exists.
    pub fn get(&self, labels: &S) -> Option<M> {
        let r = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        r.get(labels).cloned()
    }

    /// Removes the metric of `labels` (both names stop showing it). Returns whether it existed.
    pub fn remove(&self, labels: &S) -> bool {
        let mut w = self.metrics.write().unwrap_or_else(|p| p.into_inner());
        w.remove(labels).is_some()
    }

    /// Registers the family in `reg` under `ours` and under `metallb` (with `extra` labels).
    pub fn register(
        &self,
        reg: &mut Registry,
        ours: SeriesName,
        metallb: SeriesName,
        extra: &'static [(&'static str, &'static str)],
    ) {
        reg.register_collector(Box::new(MirroredCollector {
            family: self.clone(),
            ours,
            metallb,
            extra,
        }));
    }
}

#[derive(Debug)]
struct MirroredCollector<S, M> {
    family: Mirrored<S, M>,
    ours: SeriesName,
    metallb: SeriesName,
    extra: &'static [(&'static str, &'static str)],
}

impl<S, M> Collector for MirroredCollector<S, M>
where
    S: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    M: MetalLbEncoding + Clone + Default + std::fmt::Debug + Send + Sync + 'static,
{
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self
            .family
            .metrics
            .read()
            .unwrap_or_else(|p| p.into_inner());
        encode_mirrored(
            encoder,
            (self.ours, self.metallb, self.extra),
            map.is_empty(),
            |series| {
                for (labels, m) in map.iter() {
                    series(labels, m)?;
                }
                Ok(())
            },
        )
    }
}

/// Encodes one series of a family (labels, value): what [`encode_mirrored`] hands its caller.
pub type Series<'a, S, M> = dyn FnMut(&S, &M) -> Result<(), std::fmt::Error> + 'a;

/// Encodes a family under ferrolb's name and under MetalLB's (with `extra` labels), as
/// [`Mirrored`] does: `each` calls its argument once per series, the same series in the same
/// order each time it is called (twice: once per name). Nothing at all, not even the
/// descriptors, when `empty` (as an empty `Family`). For collectors whose series are read at
/// scrape time from a table kept anyway.
pub fn encode_mirrored<S, M, F>(
    mut encoder: DescriptorEncoder,
    (ours, metallb, extra): (
        SeriesName,
        SeriesName,
        &'static [(&'static str, &'static str)],
    ),
    empty: bool,
    mut each: F,
) -> Result<(), std::fmt::Error>
where
    S: EncodeLabelSet,
    M: MetalLbEncoding,
    F: FnMut(&mut Series<'_, S, M>) -> Result<(), std::fmt::Error>,
{
    if empty {
        return Ok(());
    }
    {
        let mut e = encoder.encode_descriptor(ours.name, ours.help, None, M::TYPE)?;
        each(&mut |labels, m| m.encode(e.encode_family(labels)?))?;
    }
    let mut e = encoder.encode_descriptor(metallb.name, metallb.help, None, M::METALLB_TYPE)?;
    each(&mut |labels, m| m.encode_metallb(e.encode_family(&WithLabels(labels, extra))?))
}

/// What a component knows about its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigState {
    /// Not in charge of any configuration (a controller replica that is not leading):
    /// the configuration series are not exported.
    Standby,
    /// In charge, no configuration computed yet.
    NotLoaded,
    /// Configuration in force.
    Loaded {
        /// Pools held on their last valid spec because their current spec is invalid.
        frozen_pools: usize,
        /// Errors in the pool and advertisement objects (invalid objects are ignored or,
        /// for pools that were valid before, frozen).
        errors: usize,
    },
}

impl ConfigState {
    /// `(loaded, stale, frozen_pools, errors)`: MetalLB's `config_loaded_bool` and
    /// `config_stale_bool` (stale while a pool is frozen: an invalid edit is held back and
    /// the last valid spec serves), and ferrolb's gauges. `None` while on standby.
    pub fn values(self) -> Option<(i64, i64, i64, i64)> {
        match self {
            ConfigState::Standby => None,
            ConfigState::NotLoaded => Some((0, 0, 0, 0)),
            ConfigState::Loaded {
                frozen_pools,
                errors,
            } => Some((
                1,
                i64::from(frozen_pools > 0),
                frozen_pools as i64,
                errors as i64,
            )),
        }
    }
}

/// Configuration facts and MetalLB's `metallb_k8s_client_*` series, shared by the
/// controller and the speaker. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConfigMetrics {
    state: Arc<Mutex<ConfigState>>,
}

impl ConfigMetrics {
    /// Starting in `state`.
    pub fn new(state: ConfigState) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Sets the state.
    pub fn set(&self, state: ConfigState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The configuration in force has `frozen_pools` frozen pools and `errors` errors.
    pub fn loaded(&self, frozen_pools: usize, errors: usize) {
        self.set(ConfigState::Loaded {
            frozen_pools,
            errors,
        });
    }

    /// The current state.
    pub fn state(&self) -> ConfigState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the configuration series, and MetalLB's update counters as views of the
    /// component's own: `updates` (its reconcile passes) and `update_errors` (the failed ones).
    pub fn register(&self, reg: &mut Registry, updates: &Counter, update_errors: &Counter) {
        reg.register(
            "metallb_k8s_client_updates",
            "Number of k8s object updates that have been processed.",
            updates.clone(),
        );
        reg.register(
            "metallb_k8s_client_update_errors",
            "Number of k8s object updates that failed for some reason.",
            update_errors.clone(),
        );
        reg.register_collector(Box::new(self.clone()));
    }
}

impl Collector for ConfigMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((loaded, stale, frozen, errors)) = self.state().values() else {
            return Ok(());
        };
        for (name, help, v) in [
            (
                "metallb_k8s_client_config_loaded_bool",
                "1 if the MetalLB configuration was successfully loaded at least once.",
                loaded,
            ),
            (
                "metallb_k8s_client_config_stale_bool",
                "1 if running on a stale configuration: an IPAddressPool is frozen on its last valid spec.",
                stale,
            ),
            (
                "ferrolb_config_frozen_pools",
                "IPAddressPools whose current spec is invalid, held on their last valid spec",
                frozen,
            ),
            (
                "ferrolb_config_errors",
                "Errors in IPAddressPool and L2Advertisement objects (invalid objects ignored or frozen)",
                errors,
            ),
        ] {
            let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge(v).encode(e)?;
        }
        Ok(())
    }
}

struct ConstGauge(i64);

impl ConstGauge {
    fn encode(&self, mut e: MetricEncoder) -> Result<(), std::fmt::Error> {
        e.encode_gauge(&self.0)
    }
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

    fn encode(reg: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, reg).unwrap();
        out
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
    struct Ip {
        ip: String,
    }

    #[test]
    fn a_mirrored_family_is_one_value_under_two_names() {
        let mut reg = Registry::default();
        let c: Mirrored<Ip, Counter> = Mirrored::default();
        c.register(
            &mut reg,
            SeriesName {
                name: "ferrolb_x_sent",
                help: "ours",
            },
            SeriesName {
                name: "metallb_x_sent",
                help: "theirs",
            },
            &[],
        );
        let g: Mirrored<Ip, Gauge> = Mirrored::default();
        g.register(
            &mut reg,
            SeriesName {
                name: "ferrolb_y",
                help: "ours",
            },
            SeriesName {
                name: "metallb_y",
                help: "theirs",
            },
            &[("protocol", "layer2")],
        );
        // Empty families show nothing, as an empty Family.
        assert!(!encode(&reg).contains("_x_sent"), "{}", encode(&reg));
        let l = Ip {
            ip: "10.0.0.1".into(),
        };
        let handle = c.get_or_create(&l);
        handle.inc();
        c.get_or_create(&l).inc();
        g.get_or_create(&l).set(1);
        let out = encode(&reg);
        for needle in [
            "# TYPE ferrolb_x_sent counter",
            "ferrolb_x_sent_total{ip=\"10.0.0.1\"} 2",
            "# TYPE metallb_x_sent unknown",
            "metallb_x_sent{ip=\"10.0.0.1\"} 2",
            "# TYPE metallb_y gauge",
            "ferrolb_y{ip=\"10.0.0.1\"} 1",
            "metallb_y{ip=\"10.0.0.1\",protocol=\"layer2\"} 1",
        ] {
            assert!(out.contains(needle), "missing {needle} in\n{out}");
        }
        assert!(!out.contains("metallb_x_sent_total"), "{out}");
        assert!(g.remove(&l));
        assert!(!g.remove(&l));
        let out = encode(&reg);
        assert!(!out.contains("_y{"), "removed from both names:\n{out}");
        assert_eq!(c.get(&l).map(|c| c.get()), Some(2));
    }

    #[test]
    fn configuration_series_follow_the_state() {
        let mut reg = Registry::default();
        let cfg = ConfigMetrics::new(ConfigState::Standby);
        let (updates, errors) = (Counter::default(), Counter::default());
        cfg.register(&mut reg, &updates, &errors);
        updates.inc_by(3);
        let out = encode(&reg);
        assert!(out.contains("metallb_k8s_client_updates_total 3"), "{out}");
        assert!(
            out.contains("metallb_k8s_client_update_errors_total 0"),
            "{out}"
        );
        assert!(
            !out.contains("config_loaded_bool"),
            "standby: absent\n{out}"
        );
        cfg.set(ConfigState::NotLoaded);
        let out = encode(&reg);
        assert!(
            out.contains("metallb_k8s_client_config_loaded_bool 0"),
            "{out}"
        );
        assert!(
            out.contains("metallb_k8s_client_config_stale_bool 0"),
            "{out}"
        );
        cfg.loaded(0, 1);
        let out = encode(&reg);
        assert!(
            out.contains("metallb_k8s_client_config_loaded_bool 1"),
            "{out}"
        );
        assert!(
            out.contains("metallb_k8s_client_config_stale_bool 0"),
            "{out}"
        );
        assert!(out.contains("ferrolb_config_errors 1"), "{out}");
        cfg.loaded(2, 2);
        let out = encode(&reg);
        assert!(
            out.contains("metallb_k8s_client_config_stale_bool 1"),
            "{out}"
        );
        assert!(out.contains("ferrolb_config_frozen_pools 2"), "{out}");
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

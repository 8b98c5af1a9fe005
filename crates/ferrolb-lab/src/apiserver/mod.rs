//! Embedded in-memory Kubernetes API server for the lab and end-to-end tests.
//!
//! It serves over plain HTTP the part of the Kubernetes REST API ferrolb uses (see
//! [`resources`] for the kinds), with the semantics kube-rs relies on: get, list, watch (from a
//! resourceVersion, BOOKMARKs, 410 Gone), create (`generateName`), replace with resourceVersion
//! preconditions, merge / strategic / JSON patch, server-side apply (as a merge recording the
//! field manager), delete, deletecollection, label and field selectors, `status` subresources and
//! discovery; paged lists read from one snapshot ([`paging`]); custom resources validated against
//! their CRD's schema and CEL rules ([`validation`]); and faults on demand ([`faults`]). The real
//! `ferrolb controller` and `ferrolb speaker` run against it through the kubeconfig from
//! [`RunningServer::kubeconfig_yaml`]. docs/ARCHITECTURE.md lists what it does not reproduce.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use ferrolb_lab::apiserver::ApiServer;
//! let server = ApiServer::with_state_file("/tmp/lab-state.json")
//!     .start_at("127.0.0.1:0".parse()?)
//!     .await?;
//! server.write_kubeconfig("/tmp/lab.kubeconfig")?;
//! // ... run clients ...
//! server.shutdown().await?; // flushes the state file
//! # Ok(()) }
//! ```
//!
//! Persistence: with a state file, every change is written (coalesced, atomically via rename)
//! shortly after it happens and on shutdown; a restarted server keeps its objects, uids and
//! resourceVersions, and continues the resourceVersion sequence. The watch history is not
//! persisted: watches resuming from a version older than the restart get 410 Gone and relist.

pub mod defaults;
pub mod error;
pub mod faults;
pub mod http;
pub mod metrics;
pub mod paging;
pub mod patch;
pub mod query;
pub mod resources;
pub mod store;
pub mod table;
pub mod validation;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;

pub use error::ApiError;
pub use store::{Snapshot, Store, DEFAULT_HISTORY};

/// How long the persister waits to coalesce a burst of changes into one write.
const PERSIST_COALESCE: Duration = Duration::from_millis(20);

/// Builder and entry point of the embedded API server.
#[derive(Clone, Debug)]
pub struct ApiServer {
    state_file: Option<PathBuf>,
    history_limit: usize,
    bookmark_interval: Duration,
    store: Option<Arc<Store>>,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiServer {
    /// An in-memory server without persistence.
    pub fn new() -> Self {
        ApiServer {
            state_file: None,
            history_limit: DEFAULT_HISTORY,
            bookmark_interval: Duration::from_secs(10),
            store: None,
        }
    }

    /// Starts an in-memory server on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> anyhow::Result<RunningServer> {
        Self::new().start_at(addr).await
    }

    /// A server persisting its objects in `path` (loaded on start when it exists).
    pub fn with_state_file(path: impl Into<PathBuf>) -> Self {
        Self::new().state_file(path)
    }

    /// Sets the state file.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Number of watch events kept for resuming watches (default [`DEFAULT_HISTORY`]).
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history_limit = n;
        self
    }

    /// Interval of BOOKMARK events on watches that allow them (default 10 s).
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// Serves an existing store (e.g. the one of a previous [`RunningServer`], to restart in the
    /// same process without a state file). Takes precedence over the state file's contents.
    pub fn store(mut self, store: Arc<Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Binds `addr` and starts serving.
    pub async fn start_at(self, addr: SocketAddr) -> anyhow::Result<RunningServer> {
        let store = match (self.store, &self.state_file) {
            (Some(s), _) => s,
            (None, Some(path)) => Arc::new(load_state(path, self.history_limit)?),
            (None, None) => Arc::new(Store::new(self.history_limit)),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the API server to {addr}"))?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);
        let metrics = Arc::new(metrics::Metrics::default());
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let faults = Arc::new(faults::Faults::default());
        let app = http::App {
            faults: faults.clone(),
            metrics: metrics.clone(),
            registry: Arc::new(std::sync::Mutex::new(registry)),
            store: store.clone(),
            shutdown: shutdown_rx.clone(),
            bookmark_interval: self.bookmark_interval,
        };
        let mut srv_shutdown = shutdown_rx.clone();
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, http::router(app))
                .with_graceful_shutdown(async move {
                    let _ = srv_shutdown.wait_for(|v| *v).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "API server stopped with an error");
            }
        });
        let persister = self.state_file.clone().map(|path| {
            let store = store.clone();
            let metrics = metrics.clone();
            let mut stop = shutdown_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = store.changed() => {}
                        _ = stop.wait_for(|v| *v) => return,
                    }
                    tokio::time::sleep(PERSIST_COALESCE).await;
                    metrics.persist_writes.inc();
                    if let Err(e) = save_state(&store, &path).await {
                        metrics.persist_errors.inc();
                        tracing::error!(error = %e, path = %path.display(), "writing the API server state failed");
                    }
                }
            })
        });
        tracing::info!(%addr, state_file = ?self.state_file, "embedded API server listening");
        Ok(RunningServer {
            addr,
            faults,
            metrics,
            store,
            state_file: self.state_file,
            shutdown: shutdown_tx,
            server,
            persister,
        })
    }
}

/// A running API server. Dropping it without [`RunningServer::shutdown`] leaves the server task
/// running until the runtime ends.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    faults: Arc<faults::Faults>,
    metrics: Arc<metrics::Metrics>,
    store: Arc<Store>,
    state_file: Option<PathBuf>,
    shutdown: tokio_watch::Sender<bool>,
    server: JoinHandle<()>,
    persister: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The object store (share it with [`ApiServer::store`] to restart in-process).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Faults injected into this server's answers (also at `/ferrolb-lab/faults`).
    pub fn faults(&self) -> Arc<faults::Faults> {
        self.faults.clone()
    }

    /// The server's metrics (also served at `/metrics`).
    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        self.metrics.clone()
    }

    /// Number of open watch streams.
    pub fn active_watches(&self) -> usize {
        self.store.active_watches()
    }

    /// A kubeconfig pointing at this server.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// Writes [`RunningServer::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.kubeconfig_yaml())
            .with_context(|| format!("writing kubeconfig {}", path.display()))
    }

    /// Stops serving: open watches end, in-flight requests finish, the state file is flushed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        if let Some(p) = self.persister {
            let _ = p.await;
        }
        let r = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        if r.is_err() {
            tracing::warn!("API server did not stop within 5 s");
        }
        if let Some(path) = &self.state_file {
            save_state(&self.store, path).await?;
        }
        Ok(())
    }
}

/// A kubeconfig for an API server at `server_url` (plain HTTP, no credentials).
pub fn kubeconfig_yaml(server_url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferrolb-lab
  cluster:
    server: {server_url}
contexts:
- name: ferrolb-lab
  context:
    cluster: ferrolb-lab
    user: ferrolb-lab
    namespace: default
current-context: ferrolb-lab
users:
- name: ferrolb-lab
  user: {{}}
"
    )
}

/// Loads a state file; a missing file gives an empty store.
pub fn load_state(path: &Path, history_limit: usize) -> anyhow::Result<Store> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let snap: Snapshot = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing API server state {}", path.display()))?;
            tracing::info!(path = %path.display(), objects = snap.objects.len(), resource_version = snap.resource_version, "loaded API server state");
            Ok(Store::from_snapshot(snap, history_limit))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::new(history_limit)),
        Err(e) => Err(e).with_context(|| format!("reading API server state {}", path.display())),
    }
}

/// Writes the store to `path` atomically (temporary file + rename).
pub async fn save_state(store: &Store, path: &Path) -> anyhow::Result<()> {
    let snap = store.snapshot();
    let bytes = serde_json::to_vec(&snap)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    tokio::fs::write(&tmp, &bytes)
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Runs the server as its own process until SIGINT / SIGTERM, then flushes the state file.
pub async fn run_standalone(addr: SocketAddr, state_file: Option<PathBuf>) -> anyhow::Result<()> {
    let builder = match state_file {
        Some(p) => ApiServer::with_state_file(p),
        None => ApiServer::new(),
    };
    let server = builder.start_at(addr).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("API server shutting down");
    server.shutdown().await
}

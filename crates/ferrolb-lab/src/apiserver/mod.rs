//! Embedded in-memory Kubernetes API server for the lab and end-to-end tests.
//!
//! It serves over plain HTTP the part of the Kubernetes REST API ferrolb uses (see
//! [`resources`] for the kinds), with the semantics kube-rs relies on: get, list, watch (from a
//! resourceVersion, BOOKMARKs, 410 Gone), create (`generateName`), replace with resourceVersion
//! preconditions, merge / strategic / JSON patch, server-side apply (as a merge recording the
//! field manager), delete, deletecollection, label and field selectors, `status` subresources and
//! discovery; paged lists read from one snapshot ([`paging`]); bounded requests in flight
//! ([`inflight`]); custom resources validated against
//! their CRD's schema and CEL rules ([`validation`]); and faults on demand ([`faults`]). The real
//! `ferrolb controller` and `ferrolb speaker` run against it through the kubeconfig from
//! [`RunningServer::kubeconfig_yaml`]. docs/ARCHITECTURE.md lists what it does not reproduce.
//!
//! Every request is authenticated by bearer token and authorized by RBAC against the Roles,
//! ClusterRoles and bindings stored in the server, as kube-apiserver does ([`auth`]): the
//! kubeconfig of [`RunningServer::kubeconfig_yaml`] carries the admin token, and
//! [`RunningServer::service_account_kubeconfig`] (or `kubectl create token`) gives a
//! ServiceAccount's. Requests can be recorded ([`audit`]).
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

pub mod audit;
pub mod auth;
pub mod authz;
pub mod defaults;
pub mod error;
pub mod faults;
pub mod http;
pub mod inflight;
pub mod metrics;
pub mod paging;
pub mod patch;
pub mod proto;
pub mod query;
pub mod resources;
pub mod store;
pub mod table;
pub mod tls;
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
    pki: Option<tls::Pki>,
    pki_dir: Option<PathBuf>,
    admin_token: Option<String>,
    audit_log: Option<PathBuf>,
    record_requests: bool,
    in_flight: inflight::Limits,
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
            pki: None,
            pki_dir: None,
            admin_token: None,
            audit_log: None,
            record_requests: false,
            in_flight: inflight::Limits::default(),
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

    /// The admin token, instead of the PKI's. ServiceAccount tokens are signed with a key
    /// derived from it, so a server restarted with the same admin token accepts them again.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// The CA, serving certificate and admin token (default: new ones for every start).
    pub fn pki(mut self, pki: tls::Pki) -> Self {
        self.pki = Some(pki);
        self
    }

    /// Keeps the CA, serving certificate and admin token in `dir` ([`tls::Pki::load_or_create`]),
    /// so a restarted server keeps them.
    pub fn pki_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pki_dir = Some(dir.into());
        self
    }

    /// Appends every request to `path` as kube-apiserver audit events (JSON lines).
    pub fn audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// Keeps every request in memory ([`RunningServer::audit_events`]).
    pub fn record_requests(mut self, on: bool) -> Self {
        self.record_requests = on;
        self
    }

    /// Bounds on the requests in flight (default: kube-apiserver's, 400 read-only and 200
    /// mutating); beyond them requests are refused with 429 ([`inflight`]).
    pub fn in_flight_limits(mut self, limits: inflight::Limits) -> Self {
        self.in_flight = limits;
        self
    }

    /// Binds `addr` and starts serving.
    pub async fn start_at(self, addr: SocketAddr) -> anyhow::Result<RunningServer> {
        let store = match (self.store, &self.state_file) {
            (Some(s), _) => s,
            (None, Some(path)) => Arc::new(load_state(path, self.history_limit)?),
            (None, None) => Arc::new(Store::new(self.history_limit)),
        };
        auth::bootstrap(&store);
        let pki = match (self.pki, &self.pki_dir) {
            (Some(p), _) => p,
            (None, Some(dir)) => tls::Pki::load_or_create(dir, &[addr.ip()])?,
            (None, None) => tls::Pki::generate(&[addr.ip()])?,
        };
        let tokens = auth::Tokens::new(
            self.admin_token
                .clone()
                .unwrap_or_else(|| pki.admin_token.clone()),
        );
        let audit = audit::Audit::new(self.record_requests, self.audit_log.as_deref())
            .context("opening the audit log")?;
        let auth = Arc::new(auth::Auth::new(tokens, audit));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the API server to {addr}"))?;
        let addr = listener.local_addr()?;
        let listener = tls::DualListener::new(listener, pki.server_config()?)?;
        let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);
        let metrics = Arc::new(metrics::Metrics::default());
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let faults = Arc::new(faults::Faults::default());
        let in_flight = Arc::new(inflight::InFlight::new(self.in_flight));
        let app = http::App {
            faults: faults.clone(),
            metrics: metrics.clone(),
            registry: Arc::new(std::sync::Mutex::new(registry)),
            store: store.clone(),
            shutdown: shutdown_rx.clone(),
            bookmark_interval: self.bookmark_interval,
            auth: auth.clone(),
            in_flight: in_flight.clone(),
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
            auth,
            pki,
            faults,
            in_flight,
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
    auth: Arc<auth::Auth>,
    pki: tls::Pki,
    faults: Arc<faults::Faults>,
    in_flight: Arc<inflight::InFlight>,
    metrics: Arc<metrics::Metrics>,
    store: Arc<Store>,
    state_file: Option<PathBuf>,
    shutdown: tokio_watch::Sender<bool>,
    server: JoinHandle<()>,
    persister: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// `http://ADDR` (the same port also serves TLS).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://ADDR`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA, serving certificate and admin token.
    pub fn pki(&self) -> &tls::Pki {
        &self.pki
    }

    /// The object store (share it with [`ApiServer::store`] to restart in-process).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Faults injected into this server's answers (also at `/ferrolb-lab/faults`).
    pub fn faults(&self) -> Arc<faults::Faults> {
        self.faults.clone()
    }

    /// The requests in flight: their bounds, the current and the peak counts.
    pub fn in_flight(&self) -> Arc<inflight::InFlight> {
        self.in_flight.clone()
    }

    /// The server's metrics (also served at `/metrics`).
    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        self.metrics.clone()
    }

    /// Number of open watch streams.
    pub fn active_watches(&self) -> usize {
        self.store.active_watches()
    }

    /// A kubeconfig for this server over HTTPS, as the admin (usable by kubectl, which sends
    /// credentials only over TLS).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(
            &self.https_url(),
            Some(&self.pki.ca_pem),
            self.admin_token(),
        )
    }

    /// The admin token (user `kubernetes-admin`, group `system:masters`).
    pub fn admin_token(&self) -> &str {
        self.auth.tokens.admin()
    }

    /// A kube client configuration for this server, as the admin.
    pub fn admin_config(&self) -> kube::Config {
        let mut c = kube::Config::new(self.url().parse().expect("the server URL parses"));
        c.auth_info.token = Some(self.admin_token().to_string().into());
        c
    }

    /// A token for the ServiceAccount `namespace/name` (which must exist), valid for a day:
    /// what a TokenRequest would return.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        let def = self
            .store
            .registry_find("", "v1", "serviceaccounts")
            .context("serviceaccounts are built in")?;
        let sa = self.store.get(&def, namespace, name)?;
        let uid = sa
            .pointer("/metadata/uid")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64
            + 86_400;
        Ok(self.auth.tokens.issue(namespace, name, uid, expires))
    }

    /// A kube client configuration acting as the ServiceAccount `namespace/name`.
    pub fn service_account_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<kube::Config> {
        let mut c = kube::Config::new(self.url().parse()?);
        c.auth_info.token = Some(self.service_account_token(namespace, name)?.into());
        c.default_namespace = namespace.to_string();
        Ok(c)
    }

    /// A kubeconfig (HTTPS) acting as the ServiceAccount `namespace/name`.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        Ok(kubeconfig_yaml(
            &self.https_url(),
            Some(&self.pki.ca_pem),
            &self.service_account_token(namespace, name)?,
        ))
    }

    /// The requests recorded so far (with [`ApiServer::record_requests`]).
    pub fn audit_events(&self) -> Vec<audit::AuditEvent> {
        self.auth.audit.events()
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

/// A kubeconfig for an API server at `server_url` authenticating with the bearer `token`,
/// trusting the CA `ca_pem` for `https://` URLs.
pub fn kubeconfig_yaml(server_url: &str, ca_pem: Option<&str>, token: &str) -> String {
    use base64::Engine as _;
    let ca = ca_pem
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferrolb-lab
  cluster:
    server: {server_url}{ca}
contexts:
- name: ferrolb-lab
  context:
    cluster: ferrolb-lab
    user: ferrolb-lab
    namespace: default
current-context: ferrolb-lab
users:
- name: ferrolb-lab
  user:
    token: {token}
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

/// Runs the server (configured by `builder`) as its own process on `addr` until SIGINT /
/// SIGTERM, then flushes the state file.
pub async fn run_standalone(builder: ApiServer, addr: SocketAddr) -> anyhow::Result<()> {
    let server = builder.start_at(addr).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("API server shutting down");
    server.shutdown().await
}

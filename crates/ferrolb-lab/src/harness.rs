//! The lab harness: one switched LAN of network namespaces running a whole ferrolb cluster.
//!
//! ```text
//!   client (192.0.2.2, 2001:db8::2)          ctl (192.0.2.1, 2001:db8::1)
//!        │                                     │  embedded API server :6443, ferrolb controller
//!   ─────┴──────────── switch (bridge br0) ────┴───────────────────────────
//!        │                  │                  │
//!   node-1 (.11)       node-2 (.12)       node-3 (.13)    each: ferrolb speaker,
//!                                                          backend :8080, "kube-proxy" DNAT :80→:8080
//! ```
//!
//! Everything is a real process: the API server (`ferrolb lab apiserver`), the controller and
//! one speaker per node run as separate `ferrolb` processes inside their namespaces, talk to
//! each other over the LAN, and answer the client's kernel with raw packets. The harness is
//! used by `ferrolb lab` and by the end-to-end tests; it removes every namespace and process
//! it created when dropped.
//!
//! Permissions are the ones users install: the harness applies the ServiceAccounts, Roles,
//! ClusterRoles and bindings of `deploy/ferrolb.yaml` ([`DEPLOY_MANIFEST`]) as the admin, and
//! runs the controller and every speaker with a token of its own ServiceAccount (kubeconfigs
//! `kubeconfig-controller`, `kubeconfig-speaker`), which the API server authorizes by RBAC.
//! The API server records every request in `audit.log` ([`Lab::audit_events`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use super::netns::{format_mac, HostId, HostSpec, Netns, Network};

/// Namespace ferrolb's own objects live in (as MetalLB's).
pub const SYSTEM_NAMESPACE: &str = "metallb-system";
/// The API server's address on the LAN.
pub const API_ADDR: &str = "192.0.2.1:6443";
/// Port the per-node backends listen on; the "kube-proxy" rule redirects :80 there.
pub const BACKEND_PORT: u16 = 8080;
/// Field manager used for objects the lab applies.
const MANAGER: &str = "ferrolb-lab";
/// The install manifest users apply (`deploy/ferrolb.yaml`); the lab takes the RBAC objects
/// from it.
pub const DEPLOY_MANIFEST: &str = include_str!("../../../deploy/ferrolb.yaml");
/// ServiceAccount of the controller (in [`SYSTEM_NAMESPACE`]).
pub const CONTROLLER_SA: &str = "ferrolb-controller";
/// ServiceAccount of the speakers (in [`SYSTEM_NAMESPACE`]).
pub const SPEAKER_SA: &str = "ferrolb-speaker";
/// Kinds taken from [`DEPLOY_MANIFEST`].
const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
];
/// Lifetime of the components' tokens (the lab never refreshes them).
const TOKEN_SECONDS: i64 = 7 * 86_400;

/// The API server's URL on the LAN (HTTPS, as kubectl requires to send credentials).
pub fn api_url() -> String {
    format!("https://{API_ADDR}")
}

/// The user name a ServiceAccount of [`SYSTEM_NAMESPACE`] authenticates as.
pub fn service_account_user(sa: &str) -> String {
    format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{sa}")
}

/// Applies objects through `client` (server-side apply, field manager `ferrolb-lab`) and
/// returns `Kind/name` of each. Objects without a namespace get `metallb-system` when they
/// are metallb.io kinds, `default` otherwise (cluster-scoped kinds get none).
pub async fn apply_objects(
    client: &kube::Client,
    docs: Vec<serde_json::Value>,
) -> Result<Vec<String>> {
    let mut applied = Vec::new();
    for doc in docs {
        let obj: DynamicObject = serde_json::from_value(doc)?;
        let types = obj
            .types
            .clone()
            .context("object without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let ar = ApiResource::from_gvk(&gvk);
        let name = obj.metadata.name.clone().context("object without a name")?;
        let ns = obj.metadata.namespace.clone().unwrap_or_else(|| {
            if gvk.group == "metallb.io" {
                SYSTEM_NAMESPACE
            } else {
                "default"
            }
            .to_string()
        });
        let cluster_scoped = matches!(
            (gvk.group.as_str(), gvk.kind.as_str()),
            ("", "Node" | "Namespace")
                | ("apiextensions.k8s.io", _)
                | (
                    "rbac.authorization.k8s.io",
                    "ClusterRole" | "ClusterRoleBinding"
                )
        );
        let api: Api<DynamicObject> = if cluster_scoped {
            Api::all_with(client.clone(), &ar)
        } else {
            Api::namespaced_with(client.clone(), &ns, &ar)
        };
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying {} {ns}/{name}", gvk.kind))?;
        applied.push(format!("{}/{name}", gvk.kind));
    }
    Ok(applied)
}

/// The RBAC documents of a manifest (ServiceAccounts, Roles, ClusterRoles, bindings).
pub fn rbac_documents(manifest: &str) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for d in serde_norway::Deserializer::from_str(manifest) {
        let v: serde_json::Value =
            serde::Deserialize::deserialize(d).context("parsing the manifest")?;
        if v["kind"].as_str().is_some_and(|k| RBAC_KINDS.contains(&k)) {
            out.push(v);
        }
    }
    Ok(out)
}

/// What to build.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Number of nodes (each runs a speaker).
    pub nodes: usize,
    /// The `ferrolb` binary to run for the API server, controller, speakers and backends.
    pub exe: PathBuf,
    /// Extra arguments for every speaker (e.g. timing flags).
    pub speaker_args: Vec<String>,
    /// Extra arguments for the controller.
    pub controller_args: Vec<String>,
    /// Log filter for the ferrolb processes.
    pub log_level: String,
}

impl LabConfig {
    /// `nodes` nodes running the current executable.
    pub fn new(nodes: usize) -> Result<Self> {
        Ok(Self {
            nodes,
            exe: std::env::current_exe().context("locating the ferrolb binary")?,
            speaker_args: Vec::new(),
            controller_args: Vec::new(),
            log_level: "info".into(),
        })
    }
}

/// A process the lab started, with its output in a log file. Killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    fn spawn(
        ns: &Netns,
        name: &str,
        argv: &[String],
        env: &[(&str, String)],
        dir: &Path,
    ) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        // Append: a restarted process keeps its predecessor's log (post-mortems).
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut cmd = ns.command(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.into(),
            log,
            child,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit; kills it after that.
    pub fn wait(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options of a LoadBalancer Service the lab creates.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    /// `SingleStack` IPv4 by default; `ipv6`/`dual` switch families.
    pub families: Vec<&'static str>,
    /// `Cluster` or `Local`.
    pub external_traffic_policy: &'static str,
    /// Nodes (0-based) hosting a ready endpoint; `None` = every node.
    pub endpoint_nodes: Option<Vec<usize>>,
    /// Extra annotations (e.g. `metallb.io/allow-shared-ip`).
    pub annotations: BTreeMap<String, String>,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    /// TCP port.
    pub port: u16,
    /// `spec.type`: `LoadBalancer` by default.
    pub type_: &'static str,
}

impl ServiceSpec {
    /// An IPv4 Service `default/<name>` on TCP/80, endpoints on every node.
    pub fn new(name: &str) -> Self {
        Self {
            namespace: "default".into(),
            name: name.into(),
            families: vec!["IPv4"],
            external_traffic_policy: "Cluster",
            endpoint_nodes: None,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            port: 80,
            type_: "LoadBalancer",
        }
    }
}

/// A running lab.
pub struct Lab {
    pub cfg: LabConfig,
    /// Logs, kubeconfig and API server state.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    apiserver: Option<Proc>,
    controller: Option<Proc>,
    speakers: Vec<Option<Proc>>,
    /// UID of each speaker's Pod object (registered like a DaemonSet's Pod).
    speaker_pod_uids: Vec<String>,
    backends: Vec<Option<Proc>>,
    client: kube::Client,
    rt: tokio::runtime::Runtime,
    next_cluster_ip: u32,
    ctl: HostId,
    client_host: HostId,
    nodes: Vec<HostId>,
    _tmp: Option<tempfile::TempDir>,
    // Last: namespaces go after every process in them.
    net: Network,
}

/// Node `i`'s (0-based) name.
pub fn node_name(i: usize) -> String {
    format!("node-{}", i + 1)
}

/// The name of node `i`'s speaker Pod (in the `metallb-system` namespace).
pub fn speaker_pod_name(i: usize) -> String {
    format!("ferrolb-speaker-{}", node_name(i))
}

impl Lab {
    /// Builds the network, starts the API server, registers namespaces and nodes, starts the
    /// backends, the controller and the speakers.
    pub fn start(cfg: LabConfig) -> Result<Lab> {
        Self::start_with(cfg, |_| {})
    }

    /// Like [`Lab::start`], calling `progress` with a line for each step.
    pub fn start_with(cfg: LabConfig, progress: impl Fn(&str)) -> Result<Lab> {
        if cfg.nodes == 0 || cfg.nodes > 200 {
            bail!("--nodes must be between 1 and 200 (got {})", cfg.nodes);
        }
        // kube's TLS stack needs a process-wide crypto provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::Builder::new().prefix("ferrolb-lab-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut net = Network::new()?;
        let ctl = net.add_host("ctl", HostSpec::v4v6("192.0.2.1/24", "2001:db8::1/64"))?;
        let client_host =
            net.add_host("client", HostSpec::v4v6("192.0.2.2/24", "2001:db8::2/64"))?;
        let mut nodes = Vec::new();
        for i in 0..cfg.nodes {
            let h = net.add_host(
                &node_name(i),
                HostSpec::v4v6(
                    &format!("192.0.2.{}/24", 11 + i),
                    &format!("2001:db8::{:x}/64", 0x11 + i),
                ),
            )?;
            nodes.push(h);
        }
        progress(&format!(
            "network: switch {}, client, ctl and {} nodes on 192.0.2.0/24 + 2001:db8::/64",
            net.switch().name(),
            cfg.nodes
        ));
        let kubeconfig = dir.join("kubeconfig");
        let pki = super::apiserver::tls::Pki::load_or_create(&dir.join("pki"), &[])
            .context("creating the API server's CA and admin token")?;
        std::fs::write(
            &kubeconfig,
            super::apiserver::kubeconfig_yaml(&api_url(), Some(&pki.ca_pem), &pki.admin_token),
        )?;
        let rt = ferrolb_netns::in_netns(Some(&net.host(ctl).ns.path()), || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        })?;
        let client = {
            let kc = kubeconfig.clone();
            rt.block_on(rt.spawn(async move {
                let config = kube::Config::from_custom_kubeconfig(
                    kube::config::Kubeconfig::read_from(&kc)?,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await?;
                anyhow::Ok(kube::Client::try_from(config)?)
            }))??
        };
        let mut lab = Lab {
            cfg,
            dir,
            kubeconfig,
            apiserver: None,
            controller: None,
            speakers: Vec::new(),
            speaker_pod_uids: Vec::new(),
            backends: Vec::new(),
            client,
            rt,
            next_cluster_ip: 10,
            ctl,
            client_host,
            nodes,
            _tmp: Some(tmp),
            net,
        };
        lab.start_apiserver()?;
        progress(&format!(
            "API server: {} (admin kubeconfig {})",
            api_url(),
            lab.kubeconfig.display()
        ));
        lab.register_cluster()?;
        progress("registered namespaces default + metallb-system and the Node objects");
        let applied = lab.apply_rbac(DEPLOY_MANIFEST)?;
        progress(&format!(
            "applied the {} RBAC objects of deploy/ferrolb.yaml; controller and speakers get their ServiceAccount's token",
            applied.len()
        ));
        for i in 0..lab.cfg.nodes {
            lab.start_backend(i)?;
        }
        progress(
            "each node: backend :8080 answering with its name, nftables :80 → :8080 (kube-proxy)",
        );
        lab.start_controller()?;
        for i in 0..lab.cfg.nodes {
            lab.speakers.push(None);
            lab.start_speaker(i)?;
        }
        progress(&format!(
            "started ferrolb controller and {} speakers",
            lab.cfg.nodes
        ));
        Ok(lab)
    }

    /// Keeps the work directory (logs, kubeconfig) after the lab ends.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(t) = self._tmp.take() {
            let _ = t.keep();
        }
        self.dir.clone()
    }

    /// Runs `fut` on the lab's runtime, inside the control-plane namespace (so its sockets
    /// reach the API server).
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt
            .block_on(self.rt.spawn(fut))
            .expect("lab task panicked")
    }

    /// A kube client connected to the lab's API server (use it inside [`Lab::block_on`]).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The client namespace.
    pub fn client_ns(&self) -> &Netns {
        &self.net.host(self.client_host).ns
    }

    /// The control-plane namespace.
    pub fn ctl_ns(&self) -> &Netns {
        &self.net.host(self.ctl).ns
    }

    /// Node `i`'s namespace.
    pub fn node_ns(&self, i: usize) -> &Netns {
        &self.net.host(self.nodes[i]).ns
    }

    /// Node `i`'s MAC on the LAN.
    pub fn node_mac(&self, i: usize) -> String {
        self.net.host(self.nodes[i]).mac_string()
    }

    /// The node whose interface has `mac`.
    pub fn node_by_mac(&self, mac: &str) -> Option<usize> {
        let mac = mac.to_ascii_lowercase();
        (0..self.cfg.nodes).find(|i| self.node_mac(*i) == mac)
    }

    /// The kubeconfig of a component's ServiceAccount.
    pub fn component_kubeconfig(&self, sa: &str) -> PathBuf {
        self.dir
            .join(format!("kubeconfig-{}", sa.trim_start_matches("ferrolb-")))
    }

    fn env(&self, node: Option<usize>) -> Vec<(&'static str, String)> {
        let sa = if node.is_some() {
            SPEAKER_SA
        } else {
            CONTROLLER_SA
        };
        let mut env = vec![
            (
                "KUBECONFIG",
                self.component_kubeconfig(sa).display().to_string(),
            ),
            ("POD_NAMESPACE", SYSTEM_NAMESPACE.to_string()),
            ("FERROLB_LOG_LEVEL", self.cfg.log_level.clone()),
            ("RUST_BACKTRACE", "1".to_string()),
        ];
        match node {
            Some(i) => {
                env.push(("NODE_NAME", node_name(i)));
                env.push(("POD_NAME", speaker_pod_name(i)));
                if let Some(uid) = self.speaker_pod_uids.get(i) {
                    env.push(("POD_UID", uid.clone()));
                }
            }
            None => env.push(("POD_NAME", "ferrolb-controller-lab".to_string())),
        }
        env
    }

    fn exe(&self) -> String {
        self.cfg.exe.display().to_string()
    }

    /// Starts (or restarts) the API server process; its objects survive restarts.
    pub fn start_apiserver(&mut self) -> Result<()> {
        let argv = vec![
            self.exe(),
            "lab".into(),
            "apiserver".into(),
            "--listen".into(),
            API_ADDR.into(),
            "--state-file".into(),
            self.dir.join("apiserver-state.json").display().to_string(),
            "--pki-dir".into(),
            self.dir.join("pki").display().to_string(),
            "--audit-log".into(),
            self.audit_log().display().to_string(),
        ];
        let p = Proc::spawn(
            self.ctl_ns(),
            "apiserver",
            &argv,
            &self.env(None),
            &self.dir,
        )?;
        self.apiserver = Some(p);
        let client = self.client();
        let ok = self.block_on(async move {
            for _ in 0..200 {
                // A plain TCP probe first, so the client does not log connection errors.
                let up = tokio::net::TcpStream::connect(API_ADDR).await.is_ok();
                if up && client.apiserver_version().await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        });
        if !ok {
            let tail = self
                .apiserver
                .as_ref()
                .map(|p| p.log_tail(20))
                .unwrap_or_default();
            bail!("the embedded API server did not come up:\n{tail}");
        }
        Ok(())
    }

    /// Where the API server records every request.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// Every request the API server recorded so far (all its runs).
    pub fn audit_events(&self) -> Result<Vec<super::apiserver::audit::AuditEvent>> {
        super::apiserver::audit::read_log(&self.audit_log())
            .with_context(|| format!("reading {}", self.audit_log().display()))
    }

    /// Applies the RBAC objects of `manifest` (as the admin) and writes the controller's and
    /// the speakers' kubeconfigs with a fresh token of their ServiceAccount.
    pub fn apply_rbac(&self, manifest: &str) -> Result<Vec<String>> {
        let applied = self.apply_values(rbac_documents(manifest)?)?;
        let pki = super::apiserver::tls::Pki::load_or_create(&self.dir.join("pki"), &[])?;
        for sa in [CONTROLLER_SA, SPEAKER_SA] {
            let token = self.service_account_token(sa)?;
            std::fs::write(
                self.component_kubeconfig(sa),
                super::apiserver::kubeconfig_yaml(&api_url(), Some(&pki.ca_pem), &token),
            )?;
        }
        Ok(applied)
    }

    /// A token of the ServiceAccount `sa` of [`SYSTEM_NAMESPACE`] (a TokenRequest, as
    /// `kubectl create token` makes).
    pub fn service_account_token(&self, sa: &str) -> Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let client = self.client();
        let sa = sa.to_string();
        self.block_on(async move {
            let api: Api<ServiceAccount> = Api::namespaced(client, SYSTEM_NAMESPACE);
            let tr = TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(TOKEN_SECONDS),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let out = api
                .create_token_request(&sa, &PostParams::default(), &tr)
                .await
                .with_context(|| format!("requesting a token for ServiceAccount {sa}"))?;
            anyhow::Ok(
                out.status
                    .and_then(|s| s.token)
                    .context("TokenRequest without a token")?,
            )
        })
    }

    /// Stops the API server (SIGTERM; it flushes its state file).
    pub fn stop_apiserver(&mut self) {
        if let Some(p) = self.apiserver.take() {
            p.signal(libc::SIGTERM);
            let _ = p.wait(Duration::from_secs(5));
        }
    }

    /// Starts (or restarts) the controller.
    pub fn start_controller(&mut self) -> Result<()> {
        let mut argv = vec![
            self.exe(),
            "controller".into(),
            "--metrics-addr".into(),
            "192.0.2.1:7472".into(),
        ];
        argv.extend(self.cfg.controller_args.iter().cloned());
        let p = Proc::spawn(
            self.ctl_ns(),
            "controller",
            &argv,
            &self.env(None),
            &self.dir,
        )?;
        self.controller = Some(p);
        Ok(())
    }

    /// Stops the controller with `sig` and waits for it to exit.
    pub fn stop_controller(&mut self, sig: i32) {
        if let Some(p) = self.controller.take() {
            p.signal(sig);
            let _ = p.wait(Duration::from_secs(5));
        }
    }

    /// Starts node `i`'s speaker (again).
    pub fn start_speaker(&mut self, i: usize) -> Result<()> {
        let mut argv = vec![
            self.exe(),
            "speaker".into(),
            "--metrics-addr".into(),
            "0.0.0.0:7473".into(),
        ];
        argv.extend(self.cfg.speaker_args.iter().cloned());
        let name = format!("speaker-{}", node_name(i));
        let p = Proc::spawn(self.node_ns(i), &name, &argv, &self.env(Some(i)), &self.dir)?;
        self.speakers[i] = Some(p);
        Ok(())
    }

    /// Sends `sig` to node `i`'s speaker; returns the instant the signal was sent.
    /// With SIGKILL the process is reaped at once; with others, the caller decides.
    pub fn signal_speaker(&mut self, i: usize, sig: i32) -> Option<Instant> {
        let p = self.speakers[i].as_ref()?;
        let t = Instant::now();
        p.signal(sig);
        Some(t)
    }

    /// Waits for node `i`'s speaker to exit (after a signal) and forgets it.
    pub fn reap_speaker(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        self.speakers[i].take()?.wait(timeout)
    }

    /// Whether node `i`'s speaker process is running.
    pub fn speaker_running(&mut self, i: usize) -> bool {
        self.speakers[i].as_mut().is_some_and(|p| p.is_running())
    }

    /// The tail of a component's log (`apiserver`, `controller`, `speaker-node-1`, …).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn start_backend(&mut self, i: usize) -> Result<()> {
        let argv = vec![
            self.exe(),
            "lab".into(),
            "backend".into(),
            "--name".into(),
            node_name(i),
            "--listen".into(),
            format!("[::]:{BACKEND_PORT}"),
        ];
        let p = Proc::spawn(
            self.node_ns(i),
            &format!("backend-{}", node_name(i)),
            &argv,
            &self.env(Some(i)),
            &self.dir,
        )?;
        // kube-proxy emulation: traffic for any address arriving at the node on :80 goes to
        // the local backend (kube-proxy DNATs Service IPs in PREROUTING the same way).
        let rules = format!(
            "table inet ferrolb_lab {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    tcp dport 80 redirect to :{BACKEND_PORT}\n  }}\n}}\n"
        );
        let path = self.dir.join(format!("nft-{}.conf", node_name(i)));
        std::fs::write(&path, rules)?;
        self.node_ns(i)
            .run(&["nft", "-f", &path.display().to_string()])?;
        while self.backends.len() <= i {
            self.backends.push(None);
        }
        self.backends[i] = Some(p);
        Ok(())
    }

    /// Power loss of `nodes`, all at once: their LAN links go down, then every process on
    /// them (speaker, backend) is killed. Returns the instant the last link went down.
    pub fn power_off(&mut self, nodes: &[usize]) -> Result<Instant> {
        for i in nodes {
            self.set_link(*i, false)?;
        }
        let t = Instant::now();
        for i in nodes {
            let procs = [
                self.speakers.get_mut(*i).and_then(Option::take),
                self.backends.get_mut(*i).and_then(Option::take),
            ];
            for p in procs.into_iter().flatten() {
                p.signal(libc::SIGKILL);
                let _ = p.wait(Duration::from_secs(2));
            }
        }
        Ok(t)
    }

    /// Takes node `i`'s LAN link down (partition) or up again.
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        let port = &self.net.host(self.nodes[i]).switch_port;
        self.net
            .switch()
            .run(&["ip", "link", "set", port, if up { "up" } else { "down" }])?;
        Ok(())
    }

    fn register_cluster(&mut self) -> Result<()> {
        let client = self.client();
        let nodes: Vec<(String, String, String)> = (0..self.cfg.nodes)
            .map(|i| {
                (
                    node_name(i),
                    format!("192.0.2.{}", 11 + i),
                    format!("2001:db8::{:x}", 0x11 + i),
                )
            })
            .collect();
        self.block_on(async move {
            let nss: Api<Namespace> = Api::all(client.clone());
            for ns in ["default", SYSTEM_NAMESPACE, "kube-system"] {
                let obj: Namespace = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}
                }))?;
                nss.patch(
                    ns,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&obj),
                )
                .await
                .with_context(|| format!("creating namespace {ns}"))?;
            }
            let api: Api<Node> = Api::all(client.clone());
            for (name, v4, v6) in nodes {
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {
                        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
                }))?;
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&node),
                )
                .await
                .with_context(|| format!("creating node {name}"))?;
                let status = json!({"status": {
                    "addresses": [
                        {"type": "InternalIP", "address": v4},
                        {"type": "InternalIP", "address": v6},
                        {"type": "Hostname", "address": name}],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "lastHeartbeatTime": null, "lastTransitionTime": null}]
                }});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .with_context(|| format!("setting node {name} status"))?;
            }
            anyhow::Ok(())
        })?;
        // The speakers' Pod objects, as a DaemonSet would create them: each speaker learns
        // its Pod's name and UID from the environment (the downward API in a cluster).
        let client = self.client();
        let pods: Vec<(String, String)> = (0..self.cfg.nodes)
            .map(|i| (speaker_pod_name(i), node_name(i)))
            .collect();
        self.speaker_pod_uids = self.block_on(async move {
            let api: Api<Pod> = Api::namespaced(client, SYSTEM_NAMESPACE);
            let mut uids = Vec::new();
            for (name, node) in pods {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {
                        "app.kubernetes.io/name": "ferrolb",
                        "app.kubernetes.io/component": "speaker"}},
                    "spec": {"nodeName": node, "hostNetwork": true,
                             "containers": [{"name": "speaker", "image": "ferrolb"}]},
                }))?;
                let pod = api
                    .patch(
                        &name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(&pod),
                    )
                    .await
                    .with_context(|| format!("creating pod {name}"))?;
                uids.push(pod.metadata.uid.unwrap_or_default());
            }
            anyhow::Ok(uids)
        })?;
        Ok(())
    }

    /// The UID of node `i`'s speaker Pod object.
    pub fn speaker_pod_uid(&self, i: usize) -> Option<&str> {
        self.speaker_pod_uids.get(i).map(String::as_str)
    }

    /// Applies every document of a YAML file (server-side apply, like `kubectl apply
    /// --server-side`). Objects without a namespace get `metallb-system` when they are
    /// metallb.io kinds, `default` otherwise.
    pub fn apply_file(&self, path: &Path) -> Result<Vec<String>> {
        self.apply_file_filtered(path, |_| true)
    }

    /// Like [`Lab::apply_file`], applying only the documents whose API group passes `keep`
    /// (`""` for the core group).
    pub fn apply_file_filtered(
        &self,
        path: &Path,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut docs = Vec::new();
        for d in serde_norway::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(d)
                .with_context(|| format!("parsing {}", path.display()))?;
            let group = v["apiVersion"]
                .as_str()
                .and_then(|av| av.rsplit_once('/').map(|(g, _)| g.to_string()))
                .unwrap_or_default();
            if !v.is_null() && keep(&group) {
                docs.push(v);
            }
        }
        self.apply_values(docs)
    }

    /// Applies objects (server-side apply, as the admin); namespaces defaulted as in
    /// [`Lab::apply_file`].
    pub fn apply_values(&self, docs: Vec<serde_json::Value>) -> Result<Vec<String>> {
        let client = self.client();
        self.block_on(async move { apply_objects(&client, docs).await })
    }

    /// Creates a LoadBalancer Service and an EndpointSlice for it (what the Deployment and
    /// the EndpointSlice controller would produce on a real cluster).
    pub fn create_service(&mut self, spec: &ServiceSpec) -> Result<()> {
        let mut cluster_ips = Vec::new();
        self.next_cluster_ip += 1;
        for f in &spec.families {
            cluster_ips.push(match *f {
                "IPv6" => format!("fd00:96::{:x}", self.next_cluster_ip),
                _ => format!(
                    "10.96.{}.{}",
                    self.next_cluster_ip / 250,
                    self.next_cluster_ip % 250
                ),
            });
        }
        let policy = if spec.families.len() > 1 {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        let mut labels = spec.labels.clone();
        labels
            .entry("app".into())
            .or_insert_with(|| spec.name.clone());
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": spec.name, "namespace": spec.namespace,
                         "annotations": spec.annotations, "labels": labels},
            "spec": {
                "type": spec.type_,
                "selector": {"app": spec.name},
                "ports": [{"name": "http", "port": spec.port, "protocol": "TCP", "targetPort": BACKEND_PORT}],
                "clusterIP": cluster_ips[0],
                "clusterIPs": cluster_ips,
                "ipFamilies": spec.families,
                "ipFamilyPolicy": policy,
            }
        }))?;
        let mut svc = svc;
        if spec.type_ != "ClusterIP" {
            // kube-apiserver refuses the field on a ClusterIP Service
            svc.spec.as_mut().unwrap().external_traffic_policy =
                Some(spec.external_traffic_policy.into());
        }
        let ep_nodes: Vec<usize> = spec
            .endpoint_nodes
            .clone()
            .unwrap_or_else(|| (0..self.cfg.nodes).collect());
        let mut slices = Vec::new();
        for fam in &spec.families {
            let endpoints: Vec<serde_json::Value> = ep_nodes
                .iter()
                .map(|i| {
                    let addr = if *fam == "IPv6" {
                        format!("fd00:244::{:x}", 0x11 + i)
                    } else {
                        format!("10.244.{}.10", i + 1)
                    };
                    json!({"addresses": [addr], "conditions": {"ready": true, "serving": true, "terminating": false},
                           "nodeName": node_name(*i)})
                })
                .collect();
            let slice: EndpointSlice = serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{}-{}", spec.name, fam.to_ascii_lowercase()),
                             "namespace": spec.namespace,
                             "labels": {"kubernetes.io/service-name": spec.name,
                                        "endpointslice.kubernetes.io/managed-by": "ferrolb-lab"}},
                "addressType": fam,
                "endpoints": endpoints,
                "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
            }))?;
            slices.push(slice);
        }
        let client = self.client();
        let ns = spec.namespace.clone();
        self.block_on(async move {
            let nss: Api<Namespace> = Api::all(client.clone());
            let nsobj: Namespace =
                serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}))?;
            nss.patch(
                &ns,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&nsobj),
            )
            .await?;
            let eps: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
            for s in slices {
                eps.create(&PostParams::default(), &s)
                    .await
                    .context("creating EndpointSlice")?;
            }
            let svcs: Api<Service> = Api::namespaced(client, &ns);
            svcs.create(&PostParams::default(), &svc)
                .await
                .context("creating Service")?;
            anyhow::Ok(())
        })
    }

    /// Deletes a Service and its EndpointSlices.
    pub fn delete_service(&self, namespace: &str, name: &str) -> Result<()> {
        let client = self.client();
        let (ns, name) = (namespace.to_string(), name.to_string());
        self.block_on(async move {
            let eps: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
            for fam in ["ipv4", "ipv6"] {
                let _ = eps
                    .delete(&format!("{name}-{fam}"), &Default::default())
                    .await;
            }
            let svcs: Api<Service> = Api::namespaced(client, &ns);
            svcs.delete(&name, &Default::default()).await?;
            anyhow::Ok(())
        })
    }

    /// Reads a Service's `status.loadBalancer.ingress` IPs.
    pub fn service_ips(&self, namespace: &str, name: &str) -> Result<Vec<IpAddr>> {
        let client = self.client();
        let (ns, name) = (namespace.to_string(), name.to_string());
        self.block_on(async move {
            let svcs: Api<Service> = Api::namespaced(client, &ns);
            let svc = svcs.get(&name).await?;
            Ok(svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip.and_then(|ip| ip.parse().ok()))
                .collect())
        })
    }

    /// Waits until the Service has `count` external IPs.
    pub fn wait_for_ips(
        &self,
        namespace: &str,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<IpAddr>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(ips) = self.service_ips(namespace, name) {
                if ips.len() >= count {
                    return Ok(ips);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "Service {namespace}/{name} got no EXTERNAL-IP within {timeout:?}; controller log:\n{}",
                    self.log_tail("controller", 15)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One HTTP request from the client namespace to `ip:80`; the answering node's name.
    pub fn request(&self, ip: IpAddr, timeout: Duration) -> Result<String> {
        let addr = SocketAddr::new(ip, 80);
        let body = self
            .client_ns()
            .enter(move || super::probe::http_get(addr, timeout).map_err(std::io::Error::other))?;
        super::backend::node_from_body(&body)
            .map(str::to_string)
            .context("empty answer")
    }

    /// Runs the real `curl` in the client namespace.
    pub fn curl(&self, ip: IpAddr) -> Result<String> {
        let url = match ip {
            IpAddr::V4(a) => format!("http://{a}/"),
            IpAddr::V6(a) => format!("http://[{a}]/"),
        };
        self.client_ns()
            .run(&["curl", "-sS", "--max-time", "3", &url])
    }

    /// The client's neighbour entry for `ip`: (MAC, state), e.g. ("02:..", "REACHABLE").
    pub fn client_neighbor(&self, ip: IpAddr) -> Option<(String, String)> {
        let out = self
            .client_ns()
            .run(&["ip", "neigh", "show", &ip.to_string(), "dev", "eth0"])
            .ok()?;
        let line = out.lines().next()?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let mac = words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|p| words.get(p + 1))?;
        Some((mac.to_string(), words.last()?.to_string()))
    }

    /// Which node the client's kernel resolves `ip` to, after making it ask afresh.
    pub fn resolve_owner(&self, ip: IpAddr) -> Option<usize> {
        let _ =
            self.client_ns()
                .run(&["ip", "neigh", "flush", "to", &ip.to_string(), "dev", "eth0"]);
        let _ = self.request(ip, Duration::from_secs(2));
        self.client_neighbor(ip)
            .and_then(|(mac, _)| self.node_by_mac(&mac))
    }

    /// Fetches node `i`'s speaker metrics text.
    pub fn speaker_metrics(&self, i: usize) -> Result<String> {
        self.scrape(format!("192.0.2.{}:7473", 11 + i).parse()?)
    }

    /// Fetches the controller's metrics text.
    pub fn controller_metrics(&self) -> Result<String> {
        self.scrape("192.0.2.1:7472".parse()?)
    }

    /// `GET /metrics` from `addr`, from the control-plane namespace (response with headers).
    fn scrape(&self, addr: SocketAddr) -> Result<String> {
        self.ctl_ns()
            .enter(move || {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })
            .map_err(Into::into)
    }

    /// One sample of node `i`'s speaker metrics, e.g.
    /// `ferrolb_speaker_heartbeats_received_total{result="ok"}`; `None` when absent.
    pub fn speaker_metric(&self, i: usize, series: &str) -> Option<f64> {
        metric_value(&self.speaker_metrics(i).ok()?, series)
    }

    /// A human-readable description of node `i`.
    pub fn describe_node(&self, i: usize) -> String {
        format!(
            "{} ({})",
            node_name(i),
            format_mac(self.net.host(self.nodes[i]).mac)
        )
    }
}

/// The value of `series` (name with its labels, as printed) in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let v = rest.strip_prefix(' ')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Speakers first (they withdraw), then controller, API server and backends; the
        // runtime and the namespaces go with the remaining fields.
        for s in self.speakers.iter_mut() {
            if let Some(p) = s.take() {
                p.signal(libc::SIGTERM);
                let _ = p.wait(Duration::from_millis(500));
            }
        }
        self.controller.take();
        self.apiserver.take();
        self.backends.clear();
    }
}

//! `ferrolb lab`: a whole ferrolb cluster on one machine, in network namespaces.
//!
//! [`harness`] builds the LAN and runs the real processes, [`scenario`] is the demo the CLI
//! runs (curl through the VIP, failover measured), [`apiserver`] is the embedded Kubernetes
//! API server, [`backend`] the per-node HTTP backend, [`probe`] the client's request loop,
//! [`plot`] the SVG timeline, [`netns`] the namespace primitives shared with the tests.

pub mod apiserver;
pub mod backend;
pub mod harness;
pub mod netns;
pub mod plot;
pub mod probe;
pub mod scenario;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `ferrolb lab`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Run a complete ferrolb demo on this machine (root required)",
    long_about = "Builds a LAN of network namespaces — a switch, a client \"laptop\", a control-plane \
namespace running an embedded Kubernetes API server and the ferrolb controller, and N nodes each running \
a ferrolb speaker, an HTTP backend and a kube-proxy-like DNAT — then applies examples/ipaddresspool.yaml \
and examples/l2advertisement.yaml, creates a LoadBalancer Service, curls its EXTERNAL-IP from the client, \
kills the owner's speaker and measures how long until the client is served by another node, then does \
the same with a graceful (SIGTERM) handover. Nothing touches the host's own interfaces or routes; \
everything is removed at the end, also on Ctrl-C or failure."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<LabCommand>,
    #[command(flatten)]
    pub demo: scenario::DemoArgs,
}

/// Internal processes the lab starts (hidden from `--help`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LabCommand {
    /// Run the embedded Kubernetes API server.
    #[command(hide = true)]
    Apiserver {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Keep objects in this JSON file across restarts.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Directory keeping the CA, the serving certificate and the admin bearer token
        /// (`ca.crt`, `server.crt`, `server.key`, `admin-token`; created when missing).
        /// Without it they are new and lost on every start.
        #[arg(long)]
        pki_dir: Option<PathBuf>,
        /// Append every request to this file as audit events (JSON lines).
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Bound on read-only requests in flight (kube-apiserver's flag and default).
        #[arg(long, default_value_t = apiserver::inflight::DEFAULT_READ_ONLY)]
        max_requests_inflight: usize,
        /// Bound on mutating requests in flight (kube-apiserver's flag and default).
        #[arg(long, default_value_t = apiserver::inflight::DEFAULT_MUTATING)]
        max_mutating_requests_inflight: usize,
    },
    /// Run a backend that answers every HTTP request with its name.
    #[command(hide = true)]
    Backend {
        /// Name to answer with (the node's name).
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long, default_value = "[::]:8080")]
        listen: SocketAddr,
    },
}

/// Runs `ferrolb lab` (synchronously: the lab owns its runtimes); returns the exit code.
pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.command {
        Some(LabCommand::Apiserver {
            listen,
            state_file,
            pki_dir,
            audit_log,
            max_requests_inflight,
            max_mutating_requests_inflight,
        }) => {
            let mut b = apiserver::ApiServer::new().in_flight_limits(apiserver::inflight::Limits {
                read_only: max_requests_inflight,
                mutating: max_mutating_requests_inflight,
            });
            if let Some(p) = state_file {
                b = b.state_file(p);
            }
            if let Some(p) = pki_dir {
                b = b.pki_dir(p);
            }
            if let Some(p) = audit_log {
                b = b.audit_log(p);
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(apiserver::run_standalone(b, listen))?;
            Ok(0)
        }
        Some(LabCommand::Backend { name, listen }) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(backend::serve(name, listen))?;
            Ok(0)
        }
        None => scenario::run(args.demo),
    }
}

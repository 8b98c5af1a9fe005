//! `ferrolb explain`: why a Service's external IP is (not) reachable, in one command.
//!
//! The shell reads the cluster through the user's kubeconfig (get and list only; the
//! permissions are [`crate::rbac::EXPLAIN`], shipped as `deploy/explain/clusterrole.yaml`),
//! [`core::explain`] computes the answer with the speakers' own eligibility and election
//! code, and [`render`] prints it as text or JSON.

pub mod core;
pub mod render;
#[cfg(test)]
mod tests;

use std::time::Duration;

use clap::{Args as ClapArgs, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use crate::crd::{IPAddressPool, L2Advertisement, ServiceL2Status};
use crate::election::ElectionOptions;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts (stable field names).
    Json,
}

/// `ferrolb explain [-n NAMESPACE] [SERVICE] | -A`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// The Service to explain (in --namespace, default "default"); without it, every
    /// LoadBalancer Service of the namespace (or of all namespaces with -A).
    pub service: Option<String>,
    /// Namespace of the Service(s).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace (the default without a Service name and without -n).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Kubeconfig file(s) (several joined with `:`); default: in-cluster or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<String>,
    /// Namespace ferrolb runs in (pools, advertisements, Leases, ServiceL2Statuses).
    #[arg(long, default_value = "metallb-system")]
    pub system_namespace: String,
    /// The speakers' --lb-class (Services of this class are ferrolb's).
    #[arg(long, env = "FERROLB_LB_CLASS")]
    pub lb_class: Option<String>,
    /// The speakers run with --ignore-exclude-lb.
    #[arg(long)]
    pub ignore_exclude_lb: bool,
    /// The speakers run with --revertive.
    #[arg(long)]
    pub revertive: bool,
    /// Clock skew tolerated between this machine and the speakers when judging whether a
    /// speaker's Lease is renewed in time.
    #[arg(long, default_value = "2s", value_parser = crate::runtime::parse_duration)]
    pub skew: Duration,
}

impl Args {
    fn only(&self) -> Option<(String, Option<String>)> {
        match (&self.service, &self.namespace, self.all_namespaces) {
            (Some(s), ns, _) => Some((
                ns.clone().unwrap_or_else(|| "default".into()),
                Some(s.clone()),
            )),
            (None, Some(ns), false) => Some((ns.clone(), None)),
            _ => None,
        }
    }
}

/// Reads everything [`core::explain`] needs (get and list only).
pub async fn gather(client: kube::Client, system_ns: &str) -> anyhow::Result<core::Inputs> {
    let lp = ListParams::default();
    let all = |what: &'static str, e: kube::Error| anyhow::anyhow!("cannot list {what}: {e}");
    Ok(core::Inputs {
        services: Api::<Service>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| all("services", e))?
            .items,
        slices: Api::<EndpointSlice>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| all("endpointslices", e))?
            .items,
        nodes: Api::<Node>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| all("nodes", e))?
            .items,
        pools: Api::<IPAddressPool>::namespaced(client.clone(), system_ns)
            .list(&lp)
            .await
            .map_err(|e| all("ipaddresspools", e))?
            .items,
        ads: Api::<L2Advertisement>::namespaced(client.clone(), system_ns)
            .list(&lp)
            .await
            .map_err(|e| all("l2advertisements", e))?
            .items,
        statuses: Api::<ServiceL2Status>::namespaced(client.clone(), system_ns)
            .list(&lp)
            .await
            .map_err(|e| all("servicel2statuses", e))?
            .items,
        leases: Api::<Lease>::namespaced(client.clone(), system_ns)
            .list(&lp)
            .await
            .map_err(|e| all("leases", e))?
            .items,
        states: Api::<ConfigMap>::namespaced(client.clone(), system_ns)
            .list(&ListParams::default().labels(&crate::speaker::state::state_selector()))
            .await
            .map_err(|e| all("configmaps", e))?
            .items,
        events: Api::<Event>::all(client)
            .list(&lp)
            .await
            .map_err(|e| all("events", e))?
            .items,
    })
}

/// Runs `ferrolb explain`; returns the exit code (0, or 1 when the named Service is not
/// a LoadBalancer Service).
pub async fn run(args: Args) -> anyhow::Result<i32> {
    let client = crate::runtime::make_client(args.kubeconfig.as_deref()).await?;
    let inputs = gather(client, &args.system_namespace).await?;
    let opts = core::Options {
        lb_class: crate::class::from_flag(args.lb_class.as_deref()),
        election: ElectionOptions {
            revertive: args.revertive,
            ignore_exclude_lb: args.ignore_exclude_lb,
        },
        skew: args.skew,
        only: args.only(),
    };
    let e = core::explain(&inputs, &opts, k8s_openapi::jiff::Timestamp::now());
    match args.output {
        Output::Text => print!("{}", render::text(&e)),
        Output::Json => print!("{}", render::json(&e)),
    }
    if let Some((ns, Some(name))) = &opts.only {
        if e.services.is_empty() {
            eprintln!("ferrolb: no LoadBalancer Service {ns}/{name}");
            return Ok(1);
        }
    }
    Ok(0)
}

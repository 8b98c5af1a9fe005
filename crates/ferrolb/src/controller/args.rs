//! Command-line arguments of `ferrolb controller`.

use std::net::SocketAddr;
use std::time::Duration;

/// Command-line arguments of `ferrolb controller`.
///
/// The controller gives `type: LoadBalancer` Services an external IP taken from the
/// IPAddressPools of its namespace and writes it to `status.loadBalancer.ingress`.
/// Run it as a Deployment with 2 replicas: they elect a leader through a Lease and
/// only the leader writes.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Namespace where the IPAddressPools and L2Advertisements live, and where the
    /// leader-election Lease is kept. MetalLB's default, so its manifests apply as-is.
    #[arg(long, env = "POD_NAMESPACE", default_value = "metallb-system")]
    pub namespace: String,

    /// Handle only Services whose `spec.loadBalancerClass` is exactly this value.
    /// Without the flag, only Services that have no class are handled (as MetalLB).
    #[arg(long, env = "FERROLB_LB_CLASS", value_name = "CLASS")]
    pub lb_class: Option<String>,

    /// Address serving Prometheus `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "FERROLB_METRICS_ADDR",
        default_value = "0.0.0.0:7472",
        value_name = "ADDR:PORT"
    )]
    pub metrics_addr: SocketAddr,

    /// Kubeconfig file(s) to reach the API server (several joined with `:`).
    /// Without it: the in-cluster service account, else `~/.kube/config`.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<String>,

    /// Name of the Lease (in `--namespace`) used to elect the one replica that writes.
    #[arg(long, default_value = "ferrolb-controller", value_name = "NAME")]
    pub leader_election_lease_name: String,

    /// How long the Lease stays valid without renewal; a crashed leader is replaced
    /// after at most this long. Units: ms, s, m (e.g. `15s`).
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_election_lease_duration: Duration,

    /// How often the leader renews the Lease. Must be well below the lease duration.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_election_renew_period: Duration,

    /// How often a standby replica checks whether the Lease is free. A leader that
    /// shuts down releases the Lease, so a standby takes over within about 1 s plus this.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_election_retry_period: Duration,

    /// Identity of this replica in the Lease (`holderIdentity`). Set it from the Pod
    /// name with the downward API; defaults to the host name.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// Do not elect a leader: this process always writes. Only for a single replica
    /// (development, the lab); two replicas without election would fight.
    #[arg(long)]
    pub no_leader_election: bool,
}

pub use crate::runtime::parse_duration;

impl Args {
    /// Checks relations between flags.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.no_leader_election
            && self.leader_election_renew_period >= self.leader_election_lease_duration
        {
            anyhow::bail!(
                "--leader-election-renew-period ({:?}) must be shorter than --leader-election-lease-duration ({:?})",
                self.leader_election_renew_period,
                self.leader_election_lease_duration
            );
        }
        if self.leader_election_lease_duration < Duration::from_secs(1) {
            anyhow::bail!("--leader-election-lease-duration must be at least 1s");
        }
        Ok(())
    }

    /// This replica's identity in the Lease: `--pod-name`, else the host name.
    pub fn identity(&self) -> String {
        if let Some(p) = self.pod_name.as_ref().filter(|p| !p.is_empty()) {
            return p.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("ferrolb-controller-{}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let t = T::try_parse_from(["x"]).unwrap();
        assert_eq!(t.a.metrics_addr.to_string(), "0.0.0.0:7472");
        assert_eq!(t.a.leader_election_lease_name, "ferrolb-controller");
        assert!(t.a.check().is_ok());
        let t = T::try_parse_from([
            "x",
            "--namespace",
            "lb",
            "--lb-class",
            "ferrolb",
            "--leader-election-lease-duration",
            "2s",
            "--leader-election-renew-period",
            "3s",
            "--pod-name",
            "p1",
        ])
        .unwrap();
        assert_eq!(t.a.namespace, "lb");
        assert_eq!(t.a.lb_class.as_deref(), Some("ferrolb"));
        assert_eq!(t.a.identity(), "p1");
        assert!(t.a.check().is_err(), "renew >= lease must be rejected");
    }
}

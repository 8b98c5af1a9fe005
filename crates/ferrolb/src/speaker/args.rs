//! `ferrolb speaker` command-line flags and the lease timing they configure.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use crate::election::membership::{MeshTiming, MeshTimingError};
use crate::election::{
    LeaseClock, LeaseClockError, DEFAULT_LEASE_DURATION, DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
};
use crate::runtime::{flag_default, parse_duration};

static LEASE_DURATION: OnceLock<String> = OnceLock::new();
static RENEW_DEADLINE: OnceLock<String> = OnceLock::new();
static RETRY_PERIOD: OnceLock<String> = OnceLock::new();

/// Command-line arguments of `ferrolb speaker`.
///
/// The speaker runs on every node (DaemonSet, `hostNetwork: true`). For every external IP
/// the controller allocated, exactly one node "owns" it and answers ARP / NDP for it.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Name of the Kubernetes Node this speaker runs on. In a DaemonSet set it from the
    /// downward API: `env: NODE_NAME` with `fieldRef: {fieldPath: spec.nodeName}`.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,

    /// Namespace holding the speakers' Leases, the L2Advertisements / IPAddressPools and the
    /// ServiceL2Status objects. Usually the namespace the speaker pod runs in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "metallb-system")]
    pub namespace: String,

    /// Only handle Services whose `spec.loadBalancerClass` equals this value. Without the
    /// flag, only Services that have no loadBalancerClass are handled (as MetalLB does).
    #[arg(long, env = "FERROLB_LB_CLASS")]
    pub lb_class: Option<String>,

    /// Announce from nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`
    /// too. kubeadm and Talos put that label on control-plane nodes, so single-node clusters
    /// usually need this flag.
    #[arg(long, env = "FERROLB_IGNORE_EXCLUDE_LB")]
    pub ignore_exclude_lb: bool,

    /// Move an IP back to its preferred node as soon as that node returns (MetalLB's
    /// behaviour). By default ownership is sticky: an IP stays on its current node while that
    /// node is alive and eligible, so a node coming back does not break connections twice.
    #[arg(long, env = "FERROLB_REVERTIVE")]
    pub revertive: bool,

    /// Address for `/metrics`, `/healthz` and `/readyz`. The speaker uses the host network,
    /// so this port is opened on every node: 7473 is used by neither kubelet (10248, 10250,
    /// 10255) nor kube-proxy (10249, 10256) nor MetalLB's speaker (7472, 7946, 9120).
    /// Only MetalLB's optional FRR mode exports metrics on 7473, so do not run both on one node.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    pub metrics_addr: SocketAddr,

    /// Name of this speaker's Pod (downward API: `fieldRef: {fieldPath: metadata.name}`).
    /// With --pod-uid, the ServiceL2Status objects this speaker writes are owned by its Pod,
    /// so Kubernetes deletes them with it.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// UID of this speaker's Pod (downward API: `fieldRef: {fieldPath: metadata.uid}`).
    #[arg(long, env = "POD_UID", value_name = "UID")]
    pub pod_uid: Option<String>,

    /// Kubeconfig file(s) to reach the API server (several joined with `:`). Without it the
    /// in-cluster service account is used (or `~/.kube/config`).
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<String>,

    /// How long a speaker's node Lease stays valid after its last renewal. When a speaker
    /// crashes, the others take over its IPs this long after they last saw it renew, so this
    /// bounds crash failover (plus a few milliseconds for the claim and the first gratuitous
    /// packet). Accepts `2s`, `1500ms`, `1.5s`.
    #[arg(long, env = "FERROLB_LEASE_DURATION", default_value = flag_default(&LEASE_DURATION, DEFAULT_LEASE_DURATION), value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// Fencing: if this speaker could not renew its Lease for this long (on its own clock), it
    /// stops answering for every IP. Must be shorter than --lease-duration, so that a speaker cut
    /// off from the API server has gone quiet before anyone else may take its IPs over.
    #[arg(long, env = "FERROLB_RENEW_DEADLINE", default_value = flag_default(&RENEW_DEADLINE, DEFAULT_RENEW_DEADLINE), value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// How often the speaker renews its Lease (one API write each time; this is the only
    /// steady-state write, whatever the number of Services). Several attempts must fit into
    /// --renew-deadline so one slow request does not fence the node.
    #[arg(long, env = "FERROLB_RETRY_PERIOD", default_value = flag_default(&RETRY_PERIOD, DEFAULT_RETRY_PERIOD), value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Interfaces never used for answering: regular expressions on the interface name, comma
    /// separated (e.g. `^docker.*,^veth.*`). Replaces the built-in list, which is MetalLB's:
    /// ^docker.*, ^cbr.*, ^dummy.*, ^virbr.*, ^lxcbr.*, ^veth.*, ^lo$, ^cali.*, ^tunl.*,
    /// ^flannel.*, ^kube-ipvs.*, ^cni.*, ^nodelocaldns.*, ^lxc.*.
    #[arg(long, env = "FERROLB_EXCLUDE_INTERFACES", value_delimiter = ',')]
    pub exclude_interfaces: Option<Vec<String>>,

    /// When this node takes over an IP it sends gratuitous ARP / unsolicited NA at once, then
    /// again at these offsets from the takeover (comma separated). The default covers ~5 s
    /// with backoff so clients and switches that missed the first packet still learn the
    /// new MAC (Linux ignores a second update within ~1 s, hence 1.1 s and later).
    #[arg(
        long,
        env = "FERROLB_GARP_SCHEDULE",
        value_delimiter = ',',
        value_parser = parse_duration,
        default_value = "100ms,500ms,1100ms,2200ms,4400ms"
    )]
    pub garp_schedule: Vec<Duration>,

    /// Also re-send the gratuitous announcement for every owned IP at this interval, forever
    /// (for switches whose MAC tables age out faster than clients' ARP caches). Off by default.
    #[arg(long, env = "FERROLB_GARP_REFRESH", value_parser = parse_duration)]
    pub garp_refresh: Option<Duration>,

    /// Answer ICMP echo (ping) sent to owned IPs, so `ping <EXTERNAL-IP>` works. Off by
    /// default, as in MetalLB where only Service ports answer.
    #[arg(long, env = "FERROLB_ANSWER_PING")]
    pub answer_ping: bool,

    /// UDP address for speaker-to-speaker heartbeats. Every speaker must use the same port:
    /// peers are reached at their Node InternalIP on it. 7947 is used by nothing in
    /// Kubernetes or MetalLB (whose memberlist uses 7946). Heartbeats are signed with the key
    /// in the Secret `ferrolb-heartbeat-key` (created by the controller).
    #[arg(long, env = "FERROLB_HEARTBEAT_ADDR", default_value = "[::]:7947")]
    pub heartbeat_addr: SocketAddr,

    /// Disable heartbeats: liveness and fencing then rest on the node Leases alone
    /// (failover after --lease-duration, and an API server outage longer than
    /// --renew-deadline withdraws every IP).
    #[arg(long, env = "FERROLB_NO_HEARTBEATS")]
    pub no_heartbeats: bool,

    /// IPv4 multicast group for heartbeats (`none`: unicast only). Every second heartbeat
    /// goes to the group — one datagram for every peer on the node's segment — instead of to
    /// each peer; peers not heard on the group (another subnet, a switch that drops it) get
    /// unicast every interval. Used when the node's heartbeat address is IPv4,
    /// --heartbeat-addr a wildcard address and --fence-after at least 2.5 ×
    /// --heartbeat-interval.
    #[arg(long, env = "FERROLB_HEARTBEAT_GROUP", default_value = "239.255.79.47", value_parser = parse_group)]
    pub heartbeat_group: HeartbeatGroup,

    /// Interval between heartbeats to each peer.
    #[arg(long, env = "FERROLB_HEARTBEAT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A speaker that has not heard a majority of its peers (with 2 nodes: its peer, or its
    /// own fresh Lease) for this long stops answering for every IP.
    #[arg(long, env = "FERROLB_FENCE_AFTER", default_value = "300ms", value_parser = parse_duration)]
    pub fence_after: Duration,

    /// A peer not heard for this long is dead and its IPs are taken over. Must be at least
    /// --fence-after + --heartbeat-interval + 100ms, so a cut-off owner is silent first, and
    /// at least twice --fence-after.
    #[arg(long, env = "FERROLB_PEER_DEAD_AFTER", default_value = "600ms", value_parser = parse_duration)]
    pub peer_dead_after: Duration,
}

/// The heartbeat multicast group, if any (`--heartbeat-group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatGroup(pub Option<Ipv4Addr>);

/// Parses `--heartbeat-group`: an IPv4 multicast address, or `none`.
fn parse_group(s: &str) -> Result<HeartbeatGroup, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(HeartbeatGroup(None));
    }
    let ip: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?} is neither an IPv4 multicast address nor `none`"))?;
    if !ip.is_multicast() {
        return Err(format!("{ip} is not a multicast address (224.0.0.0/4)"));
    }
    Ok(HeartbeatGroup(Some(ip)))
}

impl Args {
    /// The lease timing these flags describe, validated by the election's rules
    /// (`renew_deadline + 250 ms <= lease_duration`, `2 * retry_period <= renew_deadline`).
    /// Defaults: [`LeaseClock::default`] (2 s / 1.2 s / 300 ms; raise all three together for
    /// large clusters).
    pub fn timing(&self) -> Result<LeaseClock, LeaseClockError> {
        LeaseClock::new(self.lease_duration, self.renew_deadline, self.retry_period)
    }

    /// The heartbeat timers these flags describe, validated
    /// (`2 * interval <= fence_after`, `fence_after + interval + 100 ms <= peer_dead_after`).
    pub fn mesh_timing(&self) -> Result<MeshTiming, MeshTimingError> {
        MeshTiming::new(
            self.heartbeat_interval,
            self.fence_after,
            self.peer_dead_after,
            Duration::from_secs(30),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn defaults_are_safe_and_fast() {
        let cli = Cli::try_parse_from(["x", "--node-name", "n1"]).unwrap();
        let t = cli.args.timing().unwrap();
        // the flags default to the election's one set of Lease defaults
        assert_eq!(t, LeaseClock::default());
        assert_eq!(t.renew_deadline(), Duration::from_millis(1200));
        assert_eq!(t.retry_period(), Duration::from_millis(300));
        // crash failover budget from the issue: lease duration + 500 ms <= 3 s
        assert!(t.lease_duration() + Duration::from_millis(500) <= Duration::from_secs(3));
        assert_eq!(cli.args.namespace, "metallb-system");
        assert_eq!(cli.args.metrics_addr.port(), 7473);
        assert_eq!(cli.args.heartbeat_addr.port(), 7947);
        assert_eq!(
            cli.args.heartbeat_group,
            HeartbeatGroup(Some(crate::speaker::heartbeat::DEFAULT_GROUP))
        );
        let m = cli.args.mesh_timing().unwrap();
        // crash failover budget of the heartbeat issue: ≤ 1 s including claim + GARP
        assert!(m.dead_after + Duration::from_millis(300) <= Duration::from_secs(1));
        assert_eq!(
            cli.args.garp_schedule,
            crate::dataplane::schedule::DEFAULT_BACKOFF.to_vec()
        );
    }

    #[test]
    fn the_heartbeat_group_is_a_multicast_address_or_none() {
        let parse = |v: &str| {
            Cli::try_parse_from(["x", "--node-name", "n1", "--heartbeat-group", v])
                .map(|c| c.args.heartbeat_group)
        };
        assert_eq!(parse("none").unwrap(), HeartbeatGroup(None));
        assert_eq!(
            parse("224.0.0.120").unwrap(),
            HeartbeatGroup(Some(Ipv4Addr::new(224, 0, 0, 120)))
        );
        for bad in ["10.0.0.1", "ff02::1", "group"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("multicast"), "{bad}: {e}");
        }
    }

    /// The docs quote the Lease defaults; they must be the constants the flags come from.
    #[test]
    fn documented_lease_defaults_are_the_constants() {
        let doc = |name: &str| {
            std::fs::read_to_string(format!("{}/../../docs/{name}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
        };
        let conf = doc("CONFIGURATION.md");
        let defaults = [
            ("--lease-duration", DEFAULT_LEASE_DURATION),
            ("--renew-deadline", DEFAULT_RENEW_DEADLINE),
            ("--retry-period", DEFAULT_RETRY_PERIOD),
        ];
        for (flag, d) in defaults {
            let row = conf
                .lines()
                .find(|l| l.starts_with(&format!("| `{flag}` |")))
                .unwrap_or_else(|| panic!("{flag} not in CONFIGURATION.md"));
            let want = format!("| `{}` |", crate::runtime::format_duration(d));
            assert!(row.contains(&want), "{row:?} lacks {want}");
        }
        // ARCHITECTURE.md: "2 s / 1.2 s / 300 ms"
        let human = |d: Duration| {
            if d < Duration::from_secs(1) {
                format!("{} ms", d.as_millis())
            } else {
                format!("{} s", d.as_secs_f64())
            }
        };
        let triple = defaults.map(|(_, d)| human(d)).join(" / ");
        assert!(doc("ARCHITECTURE.md").contains(&triple), "{triple}");
    }

    /// Every speaker flag has its row in CONFIGURATION.md, the heartbeat timers with the
    /// defaults the flags take, and the tuning quoted there for large clusters is accepted.
    #[test]
    fn every_flag_is_documented_and_the_heartbeat_tuning_is_valid() {
        let conf = std::fs::read_to_string(format!(
            "{}/../../docs/CONFIGURATION.md",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let rows: Vec<&str> = conf.lines().filter(|l| l.starts_with("| `--")).collect();
        let cmd = <Cli as clap::CommandFactory>::command();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let flag = format!("`--{long}`");
            assert!(
                rows.iter()
                    .any(|r| r.split(" | ").next().unwrap().contains(&flag)),
                "{flag} has no row in CONFIGURATION.md"
            );
        }
        let m = MeshTiming::default();
        for (flag, d) in [
            ("--heartbeat-interval", m.interval),
            ("--fence-after", m.fence_after),
            ("--peer-dead-after", m.dead_after),
        ] {
            let row = rows
                .iter()
                .find(|l| l.starts_with(&format!("| `{flag}` |")))
                .unwrap();
            let want = format!("| `{}` |", crate::runtime::format_duration(d));
            assert!(row.contains(&want), "{row:?} lacks {want}");
        }
        let tuned = "--heartbeat-interval=200ms --fence-after=400ms --peer-dead-after=800ms";
        assert!(conf.contains(tuned));
        let cli = Cli::try_parse_from(
            ["x", "--node-name", "n"]
                .into_iter()
                .chain(tuned.split(' ')),
        )
        .unwrap();
        let t = cli.args.mesh_timing().unwrap();
        assert!(t.dead_after < Duration::from_secs(1));
    }

    #[test]
    fn node_name_is_required() {
        // NODE_NAME may be set in the environment of whoever runs the tests
        if std::env::var_os("NODE_NAME").is_none() {
            assert!(Cli::try_parse_from(["x"]).is_err());
        }
    }

    #[test]
    fn unsafe_timings_rejected() {
        let cli = Cli::try_parse_from([
            "x",
            "--node-name",
            "n",
            "--lease-duration",
            "1s",
            "--renew-deadline",
            "1s",
        ])
        .unwrap();
        assert!(cli.args.timing().is_err());
        let cli = Cli::try_parse_from(["x", "--node-name", "n", "--retry-period", "1s"]).unwrap();
        assert!(cli.args.timing().is_err());
    }

    #[test]
    fn exclude_list_and_schedule_parse() {
        let cli = Cli::try_parse_from([
            "x",
            "--node-name",
            "n",
            "--exclude-interfaces",
            "^docker.*,^veth.*",
            "--garp-schedule",
            "100ms,1s",
        ])
        .unwrap();
        assert_eq!(
            cli.args.exclude_interfaces,
            Some(vec!["^docker.*".to_string(), "^veth.*".to_string()])
        );
        assert_eq!(
            cli.args.garp_schedule,
            vec![Duration::from_millis(100), Duration::from_secs(1)]
        );
    }
}

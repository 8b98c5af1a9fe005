//! Speaker scale benchmark (a bench binary, not criterion: it measures one large
//! end-to-end run).
//!
//! The embedded API server runs in this process; `ferrolb speaker` runs as a child process
//! (so its RSS and CPU are its own). Both live in a throwaway network namespace whose only
//! interfaces are a veth pair `eth0`/`eth1`, so the speaker's dataplane opens its socket and ring there
//! and nothing is announced on the machine's own network. Steps:
//! 1. the API server is loaded with N Nodes shaped like real ones (conditions, addresses,
//!    50 images), S Services of which L are LoadBalancer with an IP in the pool, one
//!    EndpointSlice per Service (3 endpoints), one IPAddressPool and one L2Advertisement
//!    (32 concurrent clients); the load rate is reported;
//!    With `BENCH_PEERS` on (the default), the other N−1 nodes' speaker Leases exist and are
//!    renewed every retry period (300 ms) as their speakers would: `renewTime` patched,
//!    holder; each peer's published state (N−1 members, all heard, its share of the L IPs)
//!    is in its state ConfigMap, written once, as a speaker at rest leaves it
//!    (`BENCH_PEER_STATE=lease`: as a `ferrolb.io/speaker-state` annotation of the Lease
//!    instead, where speakers before the state ConfigMap kept it — on a real cluster every
//!    speaker watching the node Leases receives each of those renewals whole; a speaker
//!    hearing every member pauses that watch, and the idle line says whether it did). The L2Advertisement's nodeSelectors then pick `node-0` only, so it still owns
//!    all L IPs; `BENCH_PEERS=0` leaves the peers out (and the selector: node-0 is then
//!    the only live node);
//!    with peers, they also exchange heartbeats with the speaker, as on a real cluster
//!    (`BENCH_HEARTBEATS=0`: not, and the speaker runs with `--no-heartbeats`, the set-up
//!    before heartbeats were measured): the bench creates the key Secret the controller
//!    would, the veth's far end `eth1` moves into a second namespace holding every peer's
//!    InternalIP (eth0 also gets node-0's), and one thread of this process sends each
//!    peer's signed heartbeat (its own incarnation, increasing sequence numbers, the flag
//!    of a peer that may announce) to node-0 every 100 ms, each peer on its own phase of
//!    the interval (`BENCH_HB_SPREAD=0`: all in one burst per interval), from a socket on
//!    that peer's address that also reads what node-0 sends it; every other heartbeat of a
//!    peer goes to the multicast group 239.255.79.47 instead, and also unicast while node-0
//!    is not heard on the group (a socket joined to it reads node-0's there), as speakers
//!    with the group send (`BENCH_HB_GROUP=0`: unicast only, as speakers before it);
//! 2. one speaker (node `node-0`, the only node it may announce from, so it owns all L IPs)
//!    starts (with heartbeats, it announces once it has heard every member): time until it
//!    announces every IP;
//! 3. at rest: RSS, CPU (from `/proc/<pid>/stat`) and the API writes of the speaker over an
//!    idle window (the speaker runs as its ServiceAccount with the RBAC of
//!    deploy/ferrolb.yaml; its writes are counted from the server's request records); with
//!    heartbeats, the rates the speaker sent (of them to the group, when it counts those),
//!    accepted and dropped (its `ferrolb_speaker_heartbeats_*` counters) and those the
//!    peers sent (of them to the group) and read (of them on the group);
//! 4. churn: `BENCH_RATE` changes per second, in turn an endpoint change on a LoadBalancer
//!    Service, one on a ClusterIP Service, and a Node status heartbeat (`BENCH_CHURN`,
//!    default `lb,clusterip,node`: the kinds taken in turn; `lb` alone measures the LB
//!    changes only; with no ClusterIP Service, `clusterip` writes a Node status instead,
//!    counted as one): CPU, the passes the speaker ran, CPU per LB change above the idle
//!    cost (all the window's work above idle, over the LB changes), and API writes;
//! 5. latency: an LB Service's endpoints go away and come back (`BENCH_SAMPLES` times),
//!    each change written once the previous decision is 200 ms old (`BENCH_CHANGE_GAP_MS`):
//!    time from the API write's return to the decision, seen on the wire: from the far end
//!    of the veth (`eth1`, in the peers' namespace or beside `eth0`), a packet socket sends
//!    an ARP request for the Service's IP every 1 ms, each from its own sender address (so
//!    each reply, addressed to it, names the request it answers). The announce is seen at
//!    the send of the first request answered, the withdrawal at the send of the first
//!    request after the last answered one (concluded once 200 ms of requests after it went
//!    unanswered): each at most one period, plus the responder's reply time, after the
//!    dataplane changed. The probe costs the speaker one ARP reply a millisecond whatever
//!    the number of VIPs. `BENCH_PROBE=metrics` polls the speaker's `/metrics` every 2 ms
//!    for the Service's `announced` series instead (the figure of earlier runs; a scrape's
//!    cost grows with the VIPs — 3 MB at 10 000 — and delays the speaker it observes);
//!    `BENCH_PROBE=arp,metrics`: both, in turn, each with its own samples.
//!
//! Every speaker binary named in `BENCH_EXES` (`label=path,label=path`; default: this
//! build) runs steps 2–5 in turn against the same loaded server, so a baseline and a change
//! are compared in one run. `BENCH_SERVICES` may list several counts (`1000,10000`): steps
//! 2–5 run at each, in increasing order, ClusterIP Services (and their EndpointSlices) added
//! in between, the same L LoadBalancer Services throughout — so the per-change cost at two
//! cluster sizes with the same VIPs comes from one run.
//!
//! Run: `cargo bench --bench speaker_scale` (env `BENCH_NODES`, `BENCH_SERVICES`,
//! `BENCH_LB`, `BENCH_IDLE_SECS`, `BENCH_CHURN_SECS`, `BENCH_RATE`, `BENCH_CHURN`, `BENCH_SAMPLES`,
//! `BENCH_EXES`, `BENCH_PEERS`, `BENCH_HEARTBEATS`, `BENCH_HB_SPREAD`,
//! `BENCH_HB_GROUP=0`: the peers never use the heartbeat group (unicast every interval, as
//! speakers before the group; by default they alternate group and unicast),
//! `BENCH_HB_INTERVAL_MS` (100): the heartbeat interval of the peers and the speaker, whose
//! fence and death thresholds stay 3 and 6 intervals,
//! `BENCH_SETTLE_SECS` (5): the wait after the last IP before measuring at rest,
//! `BENCH_SETTLE_QUIET=1`: then also until the speaker's writes are down to its renewals and
//! its CPU under a tenth of a core (2 s windows),
//! `BENCH_PEER_STATE` (`configmap`; `lease`: on the peers' Leases; `0`: nowhere),
//! `BENCH_PEER_NAPI=0`: the peers' end of the veth receives inside the speaker's sends (by
//! default it receives on a kernel thread of its own, as the peers' nodes would on theirs),
//! `BENCH_QUIET_RENEWALS=0`: heartbeating peers renew every retry period rather
//! than every quiet period, `BENCH_PEER_LISTS=1`: their annotations carry the full peer lists
//! older speakers published, `BENCH_SMAPS=1`: the speaker's resident memory by mapping at rest,
//! `BENCH_PROBE` (`arp`): how step 5 sees the decision, `BENCH_CHANGE_GAP_MS` (200): the
//! least time from a decision seen to the next change, 0 for back to back). Needs root
//! (network namespaces); without it the bench is skipped (it fails under `CI=true`).

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    cpu_secs, env_num, loadavg, metric, scrape, start_server, status_kib, stop, wait_for, NS,
};
use ferrolb::controller::secret::key_secret;
use ferrolb::crd::L2Advertisement;
use ferrolb::dataplane::bpf::FilterOptions;
use ferrolb::dataplane::sys::{PacketSocket, RecvBatch};
use ferrolb::election::membership::{
    to_group, GroupReach, Heartbeat, HmacKey, MeshTiming, FLAG_MAY_ANNOUNCE,
};
use ferrolb::election::LeaseClock;
use ferrolb::speaker::liveness::node_lease_name;
use ferrolb::speaker::state::{
    state_object, AnnouncedIp, Nic, SpeakerState, SPEAKER_STATE_ANNOTATION,
};
use ferrolb::wire::{self, ArpOperation, ArpRepr, FrameRepr, Inbound, Mac, PayloadRepr};
use ferrolb_lab::apiserver::patch::PatchKind;
use ferrolb_lab::apiserver::store::{Sub, WriteOptions};
use ferrolb_lab::apiserver::Store;
use ferrolb_lab::harness::SPEAKER_SA;
use ferrolb_lab::netns::{privileged_or_skip, Netns};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const SPEAKER_METRICS: &str = "127.0.0.1:7473";

/// The speakers' default retry period: how often each peer renews its Lease.
const RETRY_PERIOD: Duration = Duration::from_millis(300);

/// Number of `ferrolb_speaker_announced` series at 1, and whether `service` is one of them.
fn announced(text: &str, service: Option<&str>) -> (usize, bool) {
    let mut n = 0;
    let mut found = false;
    for l in text.lines() {
        if l.starts_with("ferrolb_speaker_announced{") && l.ends_with(" 1") {
            n += 1;
            if service.is_some_and(|s| l.contains(&format!("service=\"{s}\""))) {
                found = true;
            }
        }
    }
    (n, found)
}

/// The InternalIP of node `i` (where its speaker receives heartbeats).
fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 254, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

fn node_json(i: usize) -> Value {
    let images: Vec<Value> = (0..50)
        .map(|k| {
            json!({"names": [
                format!("registry.example.com/team-{k}/app-{k}@sha256:{:064x}", k * 7919 + i),
                format!("registry.example.com/team-{k}/app-{k}:v1.{k}.{i}")
            ], "sizeBytes": 10_000_000 + k * 1_000})
        })
        .collect();
    let cond = |t: &str, s: &str, r: &str| {
        json!({"type": t, "status": s, "reason": r, "message": format!("kubelet says {r}"),
               "lastHeartbeatTime": "2026-01-01T00:00:00Z",
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    };
    json!({
        "metadata": {"name": format!("node-{i}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i}"), "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": format!("z{}", i % 3),
            "node.kubernetes.io/instance-type": "m5.xlarge"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"podCIDR": format!("10.244.{}.0/24", i % 256),
                 "podCIDRs": [format!("10.244.{}.0/24", i % 256)]},
        "status": {
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                cond("NetworkUnavailable", "False", "RouteCreated"),
                cond("Ready", "True", "KubeletReady"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(i).to_string()},
                {"type": "Hostname", "address": format!("node-{i}")}
            ],
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "3900m", "memory": "15Gi", "pods": "110", "ephemeral-storage": "90Gi"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": format!("{i:032x}"),
                "bootID": format!("{i:032x}"), "kernelVersion": "6.1.0", "osImage": "Debian 12",
                "containerRuntimeVersion": "containerd://1.7.0", "kubeletVersion": "v1.30.0",
                "kubeProxyVersion": "v1.30.0", "operatingSystem": "linux", "architecture": "amd64"},
            "images": images
        }
    })
}

fn lb_ip(i: usize) -> String {
    format!("172.20.{}.{}", i / 250, 1 + i % 250)
}

fn service_json(i: usize, lb: bool) -> Value {
    json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "default",
            "labels": {"app": format!("app-{i}"), "team": format!("t{}", i % 10)},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                format!("{{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{{\"name\":\"svc-{i}\"}},\"spec\":{{\"ports\":[{{\"port\":80}}]}}}}")}},
        "spec": {"type": if lb { "LoadBalancer" } else { "ClusterIP" },
            "clusterIP": format!("10.96.{}.{}", i / 250, 1 + i % 250),
            "clusterIPs": [format!("10.96.{}.{}", i / 250, 1 + i % 250)],
            "selector": {"app": format!("app-{i}")}, "sessionAffinity": "None",
            // 10 000 LoadBalancer Services cannot all have node ports (2 768 in the default
            // range): without them, as many L2 setups run.
            "allocateLoadBalancerNodePorts": if lb { Some(false) } else { None },
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                      {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}]}
    })
}

/// The EndpointSlice of Service `i`: 3 endpoints on nodes chosen from `i` and `gen`; with
/// `serving == false` every endpoint is not ready.
fn slice_json(i: usize, nodes: usize, gen: usize, serving: bool) -> Value {
    let eps: Vec<Value> = (0..3)
        .map(|k| {
            json!({"addresses": [format!("10.244.{}.{}", (i + k) % 256, 1 + (gen + k) % 250)],
                   "conditions": {"ready": serving, "serving": serving, "terminating": false},
                   "nodeName": format!("node-{}", (i + gen + k) % nodes),
                   "targetRef": {"kind": "Pod", "namespace": "default",
                                 "name": format!("app-{i}-{gen}-{k}"), "uid": format!("{i:08x}-{gen}-{k}")}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": format!("svc-{i}"),
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "metrics", "port": 9090, "protocol": "TCP"}]
    })
}

/// How the latency step sees the speaker's decision (`BENCH_PROBE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// ARP requests for the Service's IP on the wire (`arp`, the default).
    Arp,
    /// The speaker's `/metrics`, polled every 2 ms for the Service's `announced` series
    /// (`metrics`; the figure of the earlier sessions, whose cost grows with the VIPs).
    Metrics,
}

/// What one change of the churn step writes (`BENCH_CHURN`, a list taken in turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Churn {
    /// An endpoint change on a LoadBalancer Service (`lb`): the only kind that can move an
    /// announcement, one pass each.
    Lb,
    /// An endpoint change on a ClusterIP Service (`clusterip`; a Node status heartbeat
    /// instead when every Service is a LoadBalancer, counted as such).
    ClusterIp,
    /// A Node status heartbeat (`node`): a field the speaker does not read.
    Node,
}

impl Churn {
    fn label(self) -> &'static str {
        match self {
            Churn::Lb => "LB endpoints",
            Churn::ClusterIp => "ClusterIP endpoints",
            Churn::Node => "Node status",
        }
    }
}

/// Period of the ARP probe's requests.
const ARP_PROBE_PERIOD: Duration = Duration::from_millis(1);
/// A withdrawal is seen once the requests of this long after the last answered one went
/// unanswered.
const ARP_PROBE_HOLD: Duration = Duration::from_millis(200);
/// The ARP probe's sender addresses: request `k` comes from `base + 1 + k % ARP_PROBE_IPS`,
/// so each reply (whose target is the request's sender) names the request it answers.
const ARP_PROBE_BASE: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 0);
const ARP_PROBE_IPS: u64 = 65_534;

/// Attaches an XDP program passing every frame to `eth1` in `lan` and makes its NAPI
/// threaded, so that frames sent to it are received by a kernel thread rather than inside
/// the sender's system call. Returns the link (detached when dropped).
fn receive_on_a_thread(lan: &Netns) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let ifindex: u32 = lan
        .run(&["cat", "/sys/class/net/eth1/ifindex"])
        .map_err(std::io::Error::other)?
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    let link = ferrolb_netns::in_netns(Some(&lan.path()), move || {
        // r0 = XDP_PASS; exit
        let insns: [u64; 2] = [0x0000_0002_0000_00b7, 0x0000_0000_0000_0095];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        let put32 =
            |a: &mut [u8], at: usize, v: u32| a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        let put64 =
            |a: &mut [u8], at: usize, v: u64| a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        const BPF_PROG_TYPE_XDP: u32 = 6;
        const BPF_XDP: u32 = 37;
        put32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put32(&mut attr, 4, insns.len() as u32);
        put64(&mut attr, 8, insns.as_ptr() as u64);
        put64(&mut attr, 16, license.as_ptr() as u64);
        put32(&mut attr, 68, BPF_XDP); // expected_attach_type
                                       // SAFETY: BPF_PROG_LOAD with a union bpf_attr of 128 bytes whose pointers outlive it.
        let prog = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()) };
        if prog < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just returned, owned here.
        let prog = unsafe { std::os::fd::OwnedFd::from_raw_fd(prog as i32) };
        let mut attr = [0u8; 64];
        put32(&mut attr, 0, std::os::fd::AsRawFd::as_raw_fd(&prog) as u32);
        put32(&mut attr, 4, ifindex);
        put32(&mut attr, 8, BPF_XDP);
        // SAFETY: BPF_LINK_CREATE with a union bpf_attr of 64 bytes.
        let link = unsafe { libc::syscall(libc::SYS_bpf, 28, attr.as_ptr(), attr.len()) };
        if link < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(link as i32) })
    })?;
    lan.sh("echo 1 > /sys/class/net/eth1/threaded")
        .map_err(std::io::Error::other)?;
    Ok(link)
}

/// The far end of the veth (`eth1`): where the ARP probe sends from.
#[derive(Debug, Clone)]
struct FarEnd {
    netns: PathBuf,
    ifindex: u32,
    mac: Mac,
}

/// What the ARP probe saw of one change: the send time of the first request that saw the
/// new state (an announced IP: the first request answered; a withdrawn one: the first
/// request after the last answered one, none answered after it).
struct ArpProbe {
    sock: PacketSocket,
    mac: Mac,
    /// Requests sent so far (their sequence numbers).
    seq: u64,
    rx: RecvBatch,
}

impl ArpProbe {
    /// A packet socket on the far end of the veth (the responder's filter: ARP in, nothing
    /// this host sends).
    fn open(far: &FarEnd) -> Self {
        let ifindex = far.ifindex;
        let sock = ferrolb_netns::in_netns(Some(&far.netns), move || {
            PacketSocket::open(ifindex, FilterOptions::default())
        })
        .expect("packet socket on eth1");
        // each reply names its request, also across the wrap of the sender addresses
        for (k, first) in [(0, 0), (5, 3), (ARP_PROBE_IPS + 2, ARP_PROBE_IPS - 1)] {
            assert_eq!(Self::seq_of(Self::sender(k), first), Some(k));
        }
        ArpProbe {
            sock,
            mac: far.mac,
            seq: 0,
            rx: RecvBatch::new(64, 256),
        }
    }

    fn sender(seq: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(ARP_PROBE_BASE) + 1 + (seq % ARP_PROBE_IPS) as u32)
    }

    /// The sequence number, at or after `first`, of the request sent from `ip`.
    fn seq_of(ip: Ipv4Addr, first: u64) -> Option<u64> {
        let off = u64::from(u32::from(ip).checked_sub(u32::from(ARP_PROBE_BASE) + 1)?);
        (off < ARP_PROBE_IPS)
            .then(|| first + (off + ARP_PROBE_IPS - first % ARP_PROBE_IPS) % ARP_PROBE_IPS)
    }

    /// Sends "who has `vip`?" every [`ARP_PROBE_PERIOD`] until the answers show `answered`,
    /// and returns the send time of the first request that saw it (see [`ArpProbe`]): the
    /// decision came at most one period (and the responder's reply time) before it. A
    /// withdrawal is concluded [`ARP_PROBE_HOLD`] after that request, no answer since.
    fn observe(&mut self, vip: Ipv4Addr, answered: bool) -> Instant {
        let first = self.seq;
        let mut sent: Vec<Instant> = Vec::new();
        // withdrawal: the first request after the last answered one
        let mut since = first;
        let t0 = Instant::now();
        let mut next = t0;
        loop {
            let now = Instant::now();
            assert!(
                now - t0 < Duration::from_secs(30),
                "no decision for {vip} (answered: {answered})"
            );
            if now >= next {
                let req = FrameRepr {
                    src: self.mac,
                    dst: Mac::BROADCAST,
                    vlan: None,
                    payload: PayloadRepr::Arp(ArpRepr {
                        operation: ArpOperation::Request,
                        sender_mac: self.mac,
                        sender_ip: Self::sender(self.seq),
                        target_mac: Mac::ZERO,
                        target_ip: vip,
                    }),
                }
                .to_vec()
                .expect("an ARP request fits its own buffer");
                self.sock.send(&req).expect("send the ARP probe");
                sent.push(Instant::now());
                self.seq += 1;
                next = (next + ARP_PROBE_PERIOD).max(now);
            }
            // the answered requests of this observation, in order
            while self.sock.recv_batch(&mut self.rx, false).unwrap_or(0) > 0 {
                for f in self.rx.frames() {
                    let Ok(Inbound::ArpReply(m)) = wire::parse_inbound(f) else {
                        continue;
                    };
                    let Some(k) = Self::seq_of(m.target_ip, first) else {
                        continue;
                    };
                    if m.sender_ip != vip || k >= self.seq {
                        continue;
                    }
                    if answered {
                        return sent[(k - first) as usize];
                    }
                    since = since.max(k + 1);
                }
            }
            if !answered && since < self.seq {
                let at = sent[(since - first) as usize];
                if at.elapsed() >= ARP_PROBE_HOLD {
                    return at;
                }
            }
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Sizes {
    nodes: usize,
    /// Service counts to measure at, increasing.
    services: Vec<usize>,
    lb: usize,
    peers: bool,
    /// The peers also exchange heartbeats with the speaker (which runs with heartbeats on).
    heartbeats: bool,
    /// The peers' heartbeats are spread over the interval (else sent in one burst).
    hb_spread: bool,
    /// The peers use the heartbeat group (every other tick), else unicast only.
    hb_group: bool,
    /// The heartbeat interval of the peers and of the speaker (whose fence and death
    /// thresholds keep the default ratios to it: 3 and 6 intervals).
    hb_interval: Duration,
    /// Where the peers' published state is.
    peer_state: PeerState,
    /// The peers renew as speakers hearing every member do: every quiet period (with
    /// heartbeats only; else every retry period).
    quiet_renewals: bool,
    /// The peers' annotations also list every peer heard and every member, as speakers
    /// before the compact state published them (the bytes each renewal carried).
    peer_lists: bool,
    /// Print the speaker's resident memory by mapping at rest.
    smaps: bool,
    /// Wait after the last IP is announced before measuring at rest.
    settle: Duration,
    /// Then also wait until the speaker's API writes are down to its renewals.
    settle_quiet: bool,
    idle: u64,
    churn: u64,
    rate: u64,
    /// The kinds of change the churn step writes, in turn.
    churn_kinds: Vec<Churn>,
    samples: usize,
    /// How the latency step sees the decision: each probe in turn, its own samples.
    probes: Vec<Probe>,
    /// The least time between a decision seen and the next change written.
    change_gap: Duration,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets a smoke run
    // (a few objects, short windows) that proves the bench still works.
    let smoke = !std::env::args().any(|a| a == "--bench");
    if !privileged_or_skip("speaker_scale") {
        return;
    }
    let sizes = Sizes {
        nodes: env_num("BENCH_NODES", if smoke { 3 } else { 10 }) as usize,
        services: match std::env::var("BENCH_SERVICES") {
            Ok(v) if !v.is_empty() => v
                .split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("BENCH_SERVICES: a count or counts, 1000,10000")
                })
                .collect(),
            _ if smoke => vec![20, 30],
            _ => vec![1000],
        },
        lb: env_num("BENCH_LB", if smoke { 3 } else { 100 }) as usize,
        peers: env_num("BENCH_PEERS", 1) != 0,
        heartbeats: env_num("BENCH_PEERS", 1) != 0 && env_num("BENCH_HEARTBEATS", 1) != 0,
        hb_spread: env_num("BENCH_HB_SPREAD", 1) != 0,
        hb_group: env_num("BENCH_HB_GROUP", 1) != 0,
        hb_interval: Duration::from_millis(env_num(
            "BENCH_HB_INTERVAL_MS",
            MeshTiming::default().interval.as_millis() as u64,
        )),
        peer_state: match std::env::var("BENCH_PEER_STATE").as_deref() {
            Err(_) | Ok("configmap") => PeerState::ConfigMap,
            Ok("lease") | Ok("1") => PeerState::Lease,
            Ok("0") | Ok("none") => PeerState::Nowhere,
            Ok(other) => panic!("BENCH_PEER_STATE: configmap, lease or 0, not {other:?}"),
        },
        quiet_renewals: env_num("BENCH_QUIET_RENEWALS", 1) != 0,
        peer_lists: env_num("BENCH_PEER_LISTS", 0) != 0,
        smaps: env_num("BENCH_SMAPS", 0) != 0,
        settle: Duration::from_secs(env_num("BENCH_SETTLE_SECS", if smoke { 1 } else { 5 })),
        settle_quiet: env_num("BENCH_SETTLE_QUIET", 0) != 0,
        idle: env_num("BENCH_IDLE_SECS", if smoke { 1 } else { 20 }),
        churn: env_num("BENCH_CHURN_SECS", if smoke { 1 } else { 20 }),
        rate: env_num("BENCH_RATE", 20),
        churn_kinds: std::env::var("BENCH_CHURN")
            .unwrap_or_else(|_| "lb,clusterip,node".into())
            .split(',')
            .map(|k| match k.trim() {
                "lb" => Churn::Lb,
                "clusterip" => Churn::ClusterIp,
                "node" => Churn::Node,
                other => panic!("BENCH_CHURN: a list of lb, clusterip, node, not {other:?}"),
            })
            .collect(),
        samples: env_num("BENCH_SAMPLES", if smoke { 2 } else { 20 }) as usize,
        probes: std::env::var("BENCH_PROBE")
            .unwrap_or_else(|_| "arp".into())
            .split(',')
            .map(|p| match p.trim() {
                "arp" => Probe::Arp,
                "metrics" => Probe::Metrics,
                other => panic!("BENCH_PROBE: arp, metrics or arp,metrics, not {other:?}"),
            })
            .collect(),
        change_gap: Duration::from_millis(env_num("BENCH_CHANGE_GAP_MS", 200)),
    };
    let mut sizes = sizes;
    sizes.services.sort();
    assert!(sizes.lb <= sizes.services[0] && sizes.lb < 250 * 250);
    let exes: Vec<(String, String)> = match std::env::var("BENCH_EXES") {
        Ok(v) if !v.is_empty() => v
            .split(',')
            .map(|p| {
                let (l, e) = p.split_once('=').expect("BENCH_EXES: label=path,…");
                (l.to_string(), e.to_string())
            })
            .collect(),
        _ => vec![("this build".into(), env!("CARGO_BIN_EXE_ferrolb").into())],
    };
    let ns = Netns::create(&format!("flbscale{}", std::process::id())).unwrap();
    ns.sh("ip link add eth0 type veth peer name eth1 && ip addr add 10.254.0.2/16 dev eth0 && ip link set eth1 up && ip link set eth0 up")
        .unwrap();
    // With heartbeats, the far end of the veth is the LAN of the peers: eth1 moves into a
    // namespace of its own holding every peer's InternalIP, and eth0 also gets node-0's.
    let lan = sizes.heartbeats.then(|| {
        let lan = Netns::create(&format!("flbpeers{}", std::process::id())).unwrap();
        ns.sh(&format!(
            "ip link set eth1 netns {} && ip addr add {}/16 dev eth0",
            lan.name(),
            node_ip(0)
        ))
        .unwrap();
        let mut script = String::from("set -e; ip link set eth1 up");
        for i in 1..sizes.nodes {
            script += &format!("; ip addr add {}/16 dev eth1", node_ip(i));
        }
        lan.sh(&script).unwrap();
        lan
    });
    let lan_path = lan.as_ref().map(Netns::path);
    // The peers' side of the veth receives on a kernel thread of its own (threaded NAPI,
    // which a veth offers once an XDP program is attached: one that passes everything), as
    // each peer's node would receive on its own CPUs; otherwise the kernel runs the peers'
    // whole receive path inside the speaker's `sendmmsg`, and bills it to the speaker.
    // `BENCH_PEER_NAPI=0`: not.
    let _peer_napi = match &lan {
        Some(lan) if env_num("BENCH_PEER_NAPI", 1) != 0 => match receive_on_a_thread(lan) {
            Ok(link) => Some(link),
            Err(e) => {
                println!("note: the peers receive inside the speaker's sends ({e})");
                None
            }
        },
        _ => None,
    };
    // The ARP probe sends from eth1, wherever it is (the peers' LAN, or beside eth0).
    let far = {
        let at = lan.as_ref().unwrap_or(&ns);
        let read = |f: &str| {
            at.run(&["cat", &format!("/sys/class/net/eth1/{f}")])
                .unwrap()
        };
        FarEnd {
            netns: at.path(),
            ifindex: read("ifindex").trim().parse().unwrap(),
            mac: read("address").trim().parse().unwrap(),
        }
    };
    // Everything below runs on threads inside the namespace; the speaker inherits it.
    ferrolb_netns::in_netns(Some(&ns.path()), move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(run(sizes, exes, lan_path, far));
        Ok(())
    })
    .unwrap();
    drop(lan);
    drop(ns);
}

/// The published state of the speaker of node `i`, as one of a cluster of `nodes` nodes
/// with `lb` IPs spread evenly publishes it (heartbeats on: every other node heard and a
/// member).
fn peer_state(i: usize, nodes: usize, lb: usize) -> SpeakerState {
    let share = lb / nodes.max(1);
    SpeakerState {
        may_announce: true,
        heartbeats: true,
        member_count: nodes.saturating_sub(1),
        not_heard: vec![],
        interfaces: vec![Nic {
            name: "eth0".into(),
            mac: format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
        }],
        announcing: (0..share.min(ferrolb::speaker::state::PUBLISHED_IPS))
            .map(|k| AnnouncedIp {
                ip: lb_ip(i * share + k),
                interfaces: vec![],
                since: "2026-01-01T00:00:00Z".into(),
            })
            .collect(),
        announcing_total: share,
        duplicates: vec![],
        truncated: false,
    }
}

/// Where the peers' published state is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerState {
    /// In their state ConfigMaps (written once: at rest it does not change).
    ConfigMap,
    /// As an annotation of their node Leases (speakers before the state ConfigMap).
    Lease,
    /// Nowhere.
    Nowhere,
}

fn micro_now() -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap()
}

/// The speakers of nodes 1..N: their Leases, renewed every `period` (spread evenly over it,
/// as independent speakers are) until dropped. Written straight into the server's
/// store: the bench's own HTTP clients would add their TLS cost to the machine, not to the
/// speaker's watch, which receives them as any other write.
struct Peers {
    stop: Arc<AtomicBool>,
    renewals: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Bytes of one peer's annotation and of its whole Lease (JSON).
    annotation: usize,
    lease: usize,
}

impl Peers {
    fn start(
        store: Arc<Store>,
        (nodes, lb): (usize, usize),
        placed: PeerState,
        peer_lists: bool,
        period: Duration,
    ) -> Self {
        let def = store
            .registry_find("coordination.k8s.io", "v1", "leases")
            .unwrap();
        let cm_def = store.registry_find("", "v1", "configmaps").unwrap();
        let (mut annotation, mut lease) = (0, 0);
        for i in 1..nodes {
            let node = format!("node-{i}");
            let mut state = peer_state(i, nodes, lb).to_json();
            if peer_lists {
                let others: Vec<String> = (0..nodes)
                    .filter(|&k| k != i)
                    .map(|k| format!("node-{k}"))
                    .collect();
                let mut v: Value = serde_json::from_str(&state).unwrap();
                v["heard"] = json!(others);
                v["members"] = json!(others);
                state = v.to_string();
            }
            let annotations = if placed == PeerState::Lease {
                json!({SPEAKER_STATE_ANNOTATION: state})
            } else {
                json!({})
            };
            if placed == PeerState::ConfigMap {
                let cm = serde_json::to_value(state_object(&node, &state, None)).unwrap();
                store
                    .create(&cm_def, NS, cm, &WriteOptions::default())
                    .unwrap();
            }
            let body = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node_lease_name(&node), "namespace": NS,
                             "annotations": annotations},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": 2,
                         "acquireTime": micro_now(), "renewTime": micro_now(),
                         "leaseTransitions": 0}
            });
            let opts = WriteOptions {
                field_manager: Some(node),
                ..Default::default()
            };
            let out = store.create(&def, NS, body, &opts).unwrap();
            annotation = if placed == PeerState::Nowhere {
                0
            } else {
                state.len()
            };
            lease = out.to_string().len();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let renewals = Arc::new(AtomicU64::new(0));
        let (st, rn) = (stop.clone(), renewals.clone());
        let thread = (nodes > 1).then(|| {
            std::thread::spawn(move || {
                let step = period / (nodes as u32 - 1);
                let mut next = Instant::now();
                let mut k = 0usize;
                while !st.load(Ordering::Relaxed) {
                    next += step;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let node = format!("node-{}", 1 + k % (nodes - 1));
                    k += 1;
                    // a speaker's renewal: renewTime and the duration (the state only
                    // when it changed, which a speaker at rest does not)
                    let patch = json!({"spec": {"renewTime": micro_now(),
                                                "leaseDurationSeconds": 2}});
                    let opts = WriteOptions {
                        field_manager: Some(node.clone()),
                        ..Default::default()
                    };
                    store
                        .patch(
                            &def,
                            NS,
                            &node_lease_name(&node),
                            PatchKind::Merge,
                            patch.to_string().as_bytes(),
                            Sub::Main,
                            &opts,
                        )
                        .unwrap();
                    rn.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        Peers {
            stop,
            renewals,
            thread,
            annotation,
            lease,
        }
    }

    fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The heartbeats' IPv4 multicast group (the speaker's default `--heartbeat-group`), on the
/// heartbeat port.
const HEARTBEAT_GROUP: Ipv4Addr = ferrolb::speaker::heartbeat::DEFAULT_GROUP;

/// Where a speaker sends its heartbeat of tick `tick` (1, 2, 3, …; one a heartbeat
/// interval): `(to the group, unicast to the speaker)`. `heard_on_group`: whether it heard
/// the speaker on the group lately ([`GroupReach::shares`]); None: it does not use the group.
/// An even tick goes to the group, and also (a heartbeat of its own) unicast to a speaker not
/// heard there; an odd tick, and every tick without the group, unicast.
fn tick_sends(tick: u64, heard_on_group: Option<bool>) -> (bool, bool) {
    match heard_on_group {
        Some(heard) if to_group(tick) => (true, !heard),
        _ => (false, true),
    }
}

/// The heartbeats of the speakers of nodes 1..N, as speakers of the alternating protocol
/// send them to node-0. Each peer, from a UDP socket bound to its InternalIP:7947 in the
/// peers' namespace (multicast from its own address, TTL 1, no loop), sends a signed
/// heartbeat every interval (spread evenly over it, as independent speakers are; a healthy
/// peer's flags, its own incarnation and increasing sequence numbers): on its even ticks to
/// the group [`HEARTBEAT_GROUP`], plus unicast to node-0 (its next sequence number) unless
/// node-0 was heard on the group lately ([`GroupReach`]); on its odd ticks unicast to
/// node-0 ([`tick_sends`]). So a speaker on the group hears every peer every interval, one
/// that is not (an older one) every interval by unicast. A socket bound to the group's
/// address, joined to it on the peers' interface, reads what node-0 sends the group; each
/// peer's socket reads whatever node-0 sends it, as a live speaker would (no ICMP
/// unreachable in reply). Without the group (`BENCH_HB_GROUP=0`), every tick unicast, as
/// speakers before the group. One thread of this process, so none of it is charged to the
/// speaker.
struct HeartbeatPeers {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 4]>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the peers sent and read so far.
#[derive(Debug, Clone, Copy, Default)]
struct PeerCounts {
    /// Heartbeats sent, unicast and to the group.
    sent: u64,
    /// Of them, to the group.
    to_group: u64,
    /// Datagrams node-0 sent to the peers' own addresses.
    read: u64,
    /// Valid heartbeats of node-0 read on the group.
    read_group: u64,
}

impl HeartbeatPeers {
    /// `spread`: each peer on its own phase of the interval (as independent speakers are);
    /// otherwise all of them back to back at the start of each interval. `group`: the peers
    /// use the multicast group.
    fn start(
        lan: PathBuf,
        nodes: usize,
        key: HmacKey,
        interval: Duration,
        spread: bool,
        group: bool,
    ) -> Self {
        // the protocol's ticks: without the group, or not hearing node-0 there, unicast each
        // tick; hearing it, the group and unicast in turn
        for (tick, heard, sends) in [
            (1, None, (false, true)),
            (2, None, (false, true)),
            (1, Some(false), (false, true)),
            (2, Some(false), (true, true)),
            (3, Some(true), (false, true)),
            (4, Some(true), (true, false)),
        ] {
            assert_eq!(
                tick_sends(tick, heard),
                sends,
                "tick {tick}, heard {heard:?}"
            );
        }
        let port = ferrolb::speaker::heartbeat::DEFAULT_PORT;
        let (sockets, group_sock) = ferrolb_netns::in_netns(Some(&lan), move || {
            let sockets = (1..nodes)
                .map(|i| {
                    let s = UdpSocket::bind(SocketAddr::from((node_ip(i), port)))?;
                    s.set_nonblocking(true)?;
                    if group {
                        socket2::SockRef::from(&s).set_multicast_if_v4(&node_ip(i))?;
                        s.set_multicast_ttl_v4(1)?;
                        s.set_multicast_loop_v4(false)?;
                    }
                    Ok((format!("node-{i}"), s))
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            let group_sock = match (group, nodes > 1) {
                (true, true) => {
                    let s = UdpSocket::bind(SocketAddr::from((HEARTBEAT_GROUP, port)))?;
                    s.join_multicast_v4(&HEARTBEAT_GROUP, &node_ip(1))?;
                    s.set_nonblocking(true)?;
                    Some(s)
                }
                _ => None,
            };
            Ok((sockets, group_sock))
        })
        .unwrap();
        let to = SocketAddr::from((node_ip(0), port));
        let to_group = SocketAddr::from((HEARTBEAT_GROUP, port));
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        let (st, c) = (stop.clone(), counts.clone());
        let thread = (!sockets.is_empty()).then(|| {
            std::thread::spawn(move || {
                let [sent, sent_group, read, read_group] = &*c;
                let unix_ms = || {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64
                };
                let incarnation = unix_ms();
                let mut seq = vec![0u64; sockets.len()];
                let n = sockets.len();
                let step = interval / n as u32;
                let t0 = Instant::now();
                let mut buf = [0u8; 512];
                // when node-0 was last heard on the group, judged as speakers judge it (the
                // peers' fence time is three intervals, as the speaker's)
                let timing = MeshTiming {
                    interval,
                    fence_after: interval * 3,
                    ..MeshTiming::default()
                };
                let mut reach = GroupReach::new(timing).expect("a fence time of three intervals");
                let mut k = 0usize;
                while !st.load(Ordering::Relaxed) {
                    let p = k % n;
                    let round = interval * (k / n) as u32;
                    let next = t0
                        + if spread {
                            round + step * p as u32
                        } else {
                            round
                        };
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let tick = (k / n) as u64 + 1;
                    k += 1;
                    if let Some(g) = &group_sock {
                        while let Ok(len) = g.recv(&mut buf) {
                            if Heartbeat::decode(&buf[..len], &key)
                                .is_ok_and(|h| h.node == "node-0")
                            {
                                reach.heard("node-0", Instant::now());
                                read_group.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let heard = group_sock
                        .as_ref()
                        .map(|_| reach.shares("node-0", Instant::now()));
                    let (node, sock) = &sockets[p];
                    let (multicast, unicast) = tick_sends(tick, heard);
                    for (dest, send) in [(to_group, multicast), (to, unicast)] {
                        if !send {
                            continue;
                        }
                        seq[p] += 1;
                        let msg = Heartbeat {
                            node: node.clone(),
                            incarnation,
                            seq: seq[p],
                            sent_unix_ms: unix_ms(),
                            flags: FLAG_MAY_ANNOUNCE,
                        }
                        .encode(&key);
                        if sock.send_to(&msg, dest).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                            if dest == to_group {
                                sent_group.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    while sock.recv_from(&mut buf).is_ok() {
                        read.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        });
        HeartbeatPeers {
            stop,
            counts,
            thread,
        }
    }

    /// What the peers sent and read so far.
    fn counts(&self) -> PeerCounts {
        let [sent, to_group, read, read_group] =
            self.counts.each_ref().map(|c| c.load(Ordering::Relaxed));
        PeerCounts {
            sent,
            to_group,
            read,
            read_group,
        }
    }
}

impl Drop for HeartbeatPeers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The speaker's heartbeat counters in `/metrics` text.
#[derive(Debug, Clone, Copy)]
struct SpeakerHeartbeats {
    sent: f64,
    /// Sent to the group (None: a speaker without the series, from before the group).
    sent_group: Option<f64>,
    accepted: f64,
    dropped: f64,
}

fn speaker_heartbeats(text: &str) -> SpeakerHeartbeats {
    const SENT_GROUP: &str = "ferrolb_speaker_heartbeats_sent_group_total";
    let received = metric(text, "ferrolb_speaker_heartbeats_received_total");
    let accepted = metric(
        text,
        "ferrolb_speaker_heartbeats_received_total{result=\"ok\"}",
    );
    SpeakerHeartbeats {
        sent: metric(text, "ferrolb_speaker_heartbeats_sent_total"),
        sent_group: text
            .lines()
            .any(|l| l.starts_with(SENT_GROUP))
            .then(|| metric(text, SENT_GROUP)),
        accepted,
        dropped: received - accepted,
    }
}

/// Creates Services `from..to` (those below `lb` LoadBalancer with an IP), each with its
/// EndpointSlice, 32 at a time; returns the number of objects written.
async fn load_services(
    svcs: &Api<Service>,
    slices: &Api<EndpointSlice>,
    nodes: usize,
    lb: usize,
    from: usize,
    to: usize,
) -> u64 {
    let objects = AtomicU64::new(0);
    let objects = &objects;
    futures::stream::iter(from..to)
        .for_each_concurrent(32, |i| {
            let (svcs, slices) = (svcs.clone(), slices.clone());
            let is_lb = i < lb;
            async move {
                let s: Service = serde_json::from_value(service_json(i, is_lb)).unwrap();
                svcs.create(&PostParams::default(), &s).await.unwrap();
                if is_lb {
                    let st = json!({"status": {"loadBalancer": {"ingress": [{"ip": lb_ip(i), "ipMode": "VIP"}]}}});
                    svcs.patch_status(&format!("svc-{i}"), &PatchParams::default(), &Patch::Merge(&st))
                        .await
                        .unwrap();
                }
                let sl: EndpointSlice = serde_json::from_value(slice_json(i, nodes, 0, true)).unwrap();
                slices.create(&PostParams::default(), &sl).await.unwrap();
                objects.fetch_add(2, Ordering::Relaxed);
            }
        })
        .await;
    objects.load(Ordering::Relaxed)
}

async fn run(z: Sizes, exes: Vec<(String, String)>, lan: Option<PathBuf>, far: FarEnd) {
    let bench = start_server("172.20.0.0/16", true).await;
    let client = bench.client.clone();
    // The speaker acts as its own ServiceAccount, with deploy/ferrolb.yaml's RBAC: the
    // request records then tell its writes from the bench's.
    let kc = bench.component_kubeconfig(SPEAKER_SA).await;
    // With live peers, only node-0 may announce: it owns every IP, as alone.
    let selector = if z.peers {
        json!([{"matchLabels": {"kubernetes.io/hostname": "node-0"}}])
    } else {
        json!([])
    };
    let ad: L2Advertisement = serde_json::from_value(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "bench", "namespace": NS},
        "spec": {"nodeSelectors": selector}
    }))
    .unwrap();
    Api::<L2Advertisement>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &ad)
        .await
        .unwrap();

    // 1. Load.
    let nodes: Api<Node> = Api::all(client.clone());
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let t0 = Instant::now();
    futures::stream::iter(0..z.nodes)
        .for_each_concurrent(32, |i| {
            let nodes = nodes.clone();
            async move {
                let n: Node = serde_json::from_value(node_json(i)).unwrap();
                nodes.create(&PostParams::default(), &n).await.unwrap();
            }
        })
        .await;
    let node_time = t0.elapsed();
    // peers hearing every member renew every quiet period
    let renew_every = if z.heartbeats && z.quiet_renewals {
        LeaseClock::default().quiet_period()
    } else {
        RETRY_PERIOD
    };
    let peers = z.peers.then(|| {
        Peers::start(
            bench.srv.store(),
            (z.nodes, z.lb),
            z.peer_state,
            z.peer_lists,
            renew_every,
        )
    });
    // The heartbeat key every speaker reads (on a cluster, the controller creates it).
    let interval = z.hb_interval;
    let hb_peers = match (&lan, z.heartbeats) {
        (Some(lan), true) => {
            let key: Vec<u8> = (0..32u8)
                .map(|b| b.wrapping_mul(37).wrapping_add(11))
                .collect();
            let mut secret: Secret = key_secret(key.clone());
            secret.metadata.namespace = Some(NS.into());
            Api::<Secret>::namespaced(client.clone(), NS)
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
            Some(HeartbeatPeers::start(
                lan.clone(),
                z.nodes,
                HmacKey::new(&key).unwrap(),
                interval,
                z.hb_spread,
                z.hb_group,
            ))
        }
        _ => None,
    };

    let writes = || bench.writes_by(SPEAKER_SA);
    let requests = || bench.requests_by(SPEAKER_SA);
    let mut gen = 1usize;
    let mut loaded = 0usize;
    for &services in &z.services {
        let t0 = Instant::now();
        let n_objects = load_services(&svcs, &slices, z.nodes, z.lb, loaded, services).await
            + if loaded == 0 { z.nodes as u64 } else { 0 };
        let load = t0.elapsed()
            + if loaded == 0 {
                node_time
            } else {
                Duration::ZERO
            };
        let status_writes = z.lb.saturating_sub(loaded);
        loaded = services;

        println!(
            "## speaker_scale (N = {} Nodes, S = {services} Services, L = {} LoadBalancer)",
            z.nodes, z.lb
        );
        println!(
            "API server load: {n_objects} objects (+{status_writes} status writes) in {load:.2?} = {:.0} objects/s (32 clients)",
            n_objects as f64 / load.as_secs_f64()
        );
        match &peers {
            Some(p) => println!(
                "peers: {} node Leases renewed every {renew_every:?} ({:.0} watch events/s), each Lease {} bytes; a {}-byte published state {}; only node-0 selected; {}",
                z.nodes - 1,
                (z.nodes - 1) as f64 / renew_every.as_secs_f64(),
                p.lease,
                p.annotation,
                match z.peer_state {
                    PeerState::ConfigMap => "in each peer's ConfigMap",
                    PeerState::Lease => "annotated on each Lease",
                    PeerState::Nowhere => "nowhere",
                },
                if hb_peers.is_some() {
                    format!(
                        "heartbeats: each peer sends one every {interval:?} ({:.0}/s to the speaker{}{}) and reads the speaker's",
                        (z.nodes - 1) as f64 / interval.as_secs_f64(),
                        if z.hb_group {
                            format!(", every other one to the group {HEARTBEAT_GROUP}, unicast as well while the speaker is not heard there")
                        } else {
                            ", unicast only".into()
                        },
                        if z.hb_spread { "" } else { ", all peers in one burst per interval" }
                    )
                } else {
                    "no heartbeats (the speaker runs with --no-heartbeats)".into()
                }
            ),
            None => println!("peers: none (node-0 the only live node)"),
        }

        for (label, exe) in &exes {
            // 2. Start. With peers but without their heartbeats, Lease rules only: a speaker
            // with heartbeats on that hears none of its peers' would not announce (without
            // the key Secret it would also read it with backoff, which a speaker of a real
            // cluster, key present, does not).
            let mut args = vec![
                "--log-level",
                "warn",
                "speaker",
                "--kubeconfig",
                &kc,
                "--namespace",
                NS,
                "--metrics-addr",
                SPEAKER_METRICS,
            ];
            if z.peers && hb_peers.is_none() {
                args.push("--no-heartbeats");
            }
            let (hb_interval, fence_after, dead_after) = (
                format!("{}ms", interval.as_millis()),
                format!("{}ms", (interval * 3).as_millis()),
                format!("{}ms", (interval * 6).as_millis()),
            );
            if interval != MeshTiming::default().interval {
                args.extend([
                    "--heartbeat-interval",
                    &hb_interval,
                    "--fence-after",
                    &fence_after,
                    "--peer-dead-after",
                    &dead_after,
                ]);
            }
            let mut child = Command::new(exe)
                .args(args)
                .env("NODE_NAME", "node-0")
                .env("POD_NAME", "speaker-bench")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn ferrolb speaker");
            let pid = child.id();
            let lb = z.lb;
            let t1 = Instant::now();
            tokio::task::spawn_blocking(move || {
                wait_for("every IP announced", Duration::from_secs(600), || {
                    announced(&scrape(SPEAKER_METRICS), None).0 >= lb
                })
            })
            .await
            .unwrap();
            let all_up = t1.elapsed();

            // 3. At rest (past the start-up writes: claims and statuses settle).
            tokio::time::sleep(z.settle).await;
            if z.settle_quiet {
                // until 2 s pass with no more writes than renewals and under a tenth of a
                // core (work that writes nothing, such as a whole re-election after a peer
                // came back, is not rest either; at most 10 minutes)
                let t = Instant::now();
                loop {
                    let (w, c) = (writes(), cpu_secs(pid));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let busy = (cpu_secs(pid) - c) / 2.0;
                    if (writes() - w <= 8 && busy < 0.1) || t.elapsed() > Duration::from_secs(600) {
                        break;
                    }
                }
                println!(
                    "writes settled:                          {:.1?} after the settle time",
                    t.elapsed()
                );
            }
            let rss_rest = status_kib(pid, "VmRSS:");
            // open sockets and files: each idle pooled API connection keeps TLS state and
            // buffers
            let fds_rest = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
            let smaps = z.smaps.then(|| common::smaps_breakdown(pid));
            let order = z.smaps.then(|| order_coverage(pid)).flatten();
            let peer_count = || peers.as_ref().map_or(0, Peers::renewals);
            let hb_count = || {
                hb_peers
                    .as_ref()
                    .map_or(PeerCounts::default(), HeartbeatPeers::counts)
            };
            // The speaker's counters are scraped outside the windows: a scrape's cost grows
            // with the VIPs (3 MB at 10 000) and is no part of being idle.
            let (hs0, hb0) = (speaker_heartbeats(&scrape(SPEAKER_METRICS)), hb_count());
            let (c0, w0, r0, p0, i0) = (
                cpu_secs(pid),
                writes(),
                requests(),
                peer_count(),
                Instant::now(),
            );
            tokio::time::sleep(Duration::from_secs(z.idle)).await;
            let (c1, w1, r1, p1, i1) = (
                cpu_secs(pid),
                writes(),
                requests(),
                peer_count(),
                Instant::now(),
            );
            let rest_metrics = scrape(SPEAKER_METRICS);
            let (hs1, hb1) = (speaker_heartbeats(&rest_metrics), hb_count());
            // whether the speaker still receives its peers' renewals (speakers before the
            // paused watch have no such series: always watched)
            let lease_watch = if !rest_metrics.contains("ferrolb_speaker_peer_lease_watch ") {
                "watched (always)"
            } else if metric(&rest_metrics, "ferrolb_speaker_peer_lease_watch ") > 0.0 {
                "watched"
            } else {
                "paused"
            };
            let secs = (i1 - i0).as_secs_f64();
            let idle_cpu = (c1 - c0) / secs * 100.0;
            let idle_writes = (w1 - w0) as f64 / secs;
            let idle_requests = (r1.len() - r0.len()) as f64 / secs;
            let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
            for r in &r1[r0.len()..] {
                *by_kind.entry(r.as_str()).or_default() += 1;
            }
            let by_kind: Vec<String> = by_kind
                .iter()
                .map(|(k, n)| format!("{k} {:.2}/s", *n as f64 / secs))
                .collect();
            let idle_peers = (p1 - p0) as f64 / secs;
            let rate = |a: u64, b: u64| (b - a) as f64 / secs;
            let speaker_group = match (hs0.sent_group, hs1.sent_group) {
                (Some(a), Some(b)) => format!(" ({:.0}/s to the group)", (b - a) / secs),
                _ => String::new(),
            };
            let peers_group = if z.hb_group {
                format!(
                    "peers sent {:.0}/s ({:.0}/s to the group), read {:.0}/s + {:.0}/s of the speaker's on the group",
                    rate(hb0.sent, hb1.sent),
                    rate(hb0.to_group, hb1.to_group),
                    rate(hb0.read, hb1.read),
                    rate(hb0.read_group, hb1.read_group),
                )
            } else {
                format!(
                    "peers sent {:.0}/s (no group), read {:.0}/s",
                    rate(hb0.sent, hb1.sent),
                    rate(hb0.read, hb1.read),
                )
            };
            let idle_heartbeats = format!(
                "speaker sent {:.0}/s{speaker_group}, received {:.0}/s accepted + {:.0}/s dropped; {peers_group}; the peers' node Leases: {lease_watch}",
                (hs1.sent - hs0.sent) / secs,
                (hs1.accepted - hs0.accepted) / secs,
                (hs1.dropped - hs0.dropped) / secs,
            );
            let idle_load = loadavg();

            // 4. Churn: LB endpoints, ClusterIP endpoints, Node status, in turn.
            let period = Duration::from_secs_f64(1.0 / z.rate as f64);
            let total = (z.churn * z.rate) as usize;
            let passes = || metric(&scrape(SPEAKER_METRICS), "ferrolb_speaker_reconciles_total");
            let passes0 = passes();
            let (c0, w0, i0) = (cpu_secs(pid), writes(), Instant::now());
            let mut tick = tokio::time::interval(period);
            // changes written, by kind: LB endpoints, ClusterIP endpoints, Node status
            let mut kinds = [0usize; 3];
            for k in 0..total {
                tick.tick().await;
                gen += 1;
                let slice_of = match z.churn_kinds[k % z.churn_kinds.len()] {
                    Churn::Lb if z.lb > 0 => Some(gen % z.lb),
                    Churn::Lb | Churn::ClusterIp if services > z.lb => {
                        Some(z.lb + gen % (services - z.lb))
                    }
                    _ => None,
                };
                kinds[match slice_of {
                    Some(i) if i < z.lb => 0,
                    Some(_) => 1,
                    None => 2,
                }] += 1;
                match slice_of {
                    Some(i) => {
                        let sl: EndpointSlice =
                            serde_json::from_value(slice_json(i, z.nodes, gen, true)).unwrap();
                        slices
                            .replace(&format!("svc-{i}-abcde"), &PostParams::default(), &sl)
                            .await
                            .unwrap();
                    }
                    None => {
                        let i = gen % z.nodes;
                        let st = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                            "reason": "KubeletReady", "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": format!("2026-01-01T00:{:02}:{:02}Z", (gen / 60) % 60, gen % 60),
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
                        nodes
                            .patch_status(
                                &format!("node-{i}"),
                                &PatchParams::default(),
                                &Patch::Strategic(&st),
                            )
                            .await
                            .unwrap();
                    }
                }
            }
            let (c1, w1, i1) = (cpu_secs(pid), writes(), Instant::now());
            let churn_passes = passes() - passes0;
            let secs = (i1 - i0).as_secs_f64();
            let churn_cpu = (c1 - c0) / secs * 100.0;
            // CPU per change beyond the idle cost, per LB-Service endpoint change (the only
            // kind that can move an announcement).
            let per_lb_change_ms =
                ((c1 - c0) - idle_cpu / 100.0 * secs).max(0.0) / kinds[0].max(1) as f64 * 1e3;
            let churn_writes = (w1 - w0) as f64 / secs;
            let churn_load = loadavg();
            let churn_rate = total as f64 / secs;
            let rss_churn = status_kib(pid, "VmRSS:");

            // 5. Latency: endpoints of an LB Service go (withdraw) and come back (announce),
            // seen by each probe in turn.
            let mut lats = Vec::new();
            for &probe in &z.probes {
                let mut arp = (probe == Probe::Arp).then(|| ArpProbe::open(&far));
                // (withdraw, announce) latencies
                let mut lat = (Vec::new(), Vec::new());
                let mut last_seen: Option<Instant> = None;
                for k in 0..z.samples.min(z.lb) {
                    let i = k % z.lb;
                    let svc = format!("default/svc-{i}");
                    let vip: Ipv4Addr = lb_ip(i).parse().unwrap();
                    for serving in [false, true] {
                        gen += 1;
                        let sl: EndpointSlice =
                            serde_json::from_value(slice_json(i, z.nodes, gen, serving)).unwrap();
                        // each change meets a speaker done with the previous one's pass
                        if let Some(s) = last_seen {
                            tokio::time::sleep_until((s + z.change_gap).into()).await;
                        }
                        let t = Instant::now();
                        slices
                            .replace(&format!("svc-{i}-abcde"), &PostParams::default(), &sl)
                            .await
                            .unwrap();
                        let svc = svc.clone();
                        let (d, a) = tokio::task::spawn_blocking(move || {
                            let seen = match arp.as_mut() {
                                Some(p) => p.observe(vip, serving),
                                None => {
                                    let t = Instant::now();
                                    while announced(&scrape(SPEAKER_METRICS), Some(&svc)).1
                                        != serving
                                    {
                                        assert!(
                                            t.elapsed() < Duration::from_secs(30),
                                            "no decision for {svc}"
                                        );
                                        std::thread::sleep(Duration::from_millis(2));
                                    }
                                    Instant::now()
                                }
                            };
                            (seen.saturating_duration_since(t), arp)
                        })
                        .await
                        .unwrap();
                        arp = a;
                        last_seen = Some(t + d);
                        if serving { &mut lat.1 } else { &mut lat.0 }.push(d);
                    }
                }
                lats.push((probe, lat));
            }
            let peak = status_kib(pid, "VmHWM:");
            stop(&mut child);

            println!("### speaker: {label} (S = {services})");
            println!("all {lb} IPs announced after start:      {all_up:.2?}");
            println!(
                "RSS at rest:                             {:.1} MiB (peak {:.1} MiB), {fds_rest} open file descriptors",
                rss_rest as f64 / 1024.0,
                peak as f64 / 1024.0
            );
            if let Some(smaps) = &smaps {
                let parts: Vec<String> = smaps
                    .iter()
                    .map(|(k, kib)| format!("{k} {:.1}", *kib as f64 / 1024.0))
                    .collect();
                println!("RSS at rest by mapping (MiB): {}", parts.join(", "));
                if let Some((found, listed)) = order {
                    println!(
                        "speaker.order: {found} of its {listed} functions are in this binary (the rest of its code lies after them)"
                    );
                }
            }
            println!(
                "idle ({} s): CPU {idle_cpu:.2} % of a core, API writes {idle_writes:.2}/s, API requests {idle_requests:.2}/s ({}) (peers' renewals {idle_peers:.0}/s; load average {idle_load:.2})",
                z.idle,
                by_kind.join(", ")
            );
            if hb_peers.is_some() {
                println!("heartbeats at rest: {idle_heartbeats}");
            }
            println!(
                "churn ({churn_rate:.1} changes/s for {} s: {} {}, {} {}, {} {}; {churn_passes:.0} passes): CPU {churn_cpu:.2} % of a core ({per_lb_change_ms:.2} ms above idle per LB change), API writes {churn_writes:.2}/s, RSS {:.1} MiB (load average {churn_load:.2})",
                z.churn,
                kinds[0],
                Churn::Lb.label(),
                kinds[1],
                Churn::ClusterIp.label(),
                kinds[2],
                Churn::Node.label(),
                rss_churn as f64 / 1024.0
            );
            for (probe, (mut withdraw, mut announce)) in lats {
                let mut all: Vec<Duration> = withdraw.iter().chain(&announce).copied().collect();
                all.sort();
                withdraw.sort();
                announce.sort();
                let how = match probe {
                    Probe::Arp => format!(
                        "on the wire: an ARP request for the VIP every {ARP_PROBE_PERIOD:?} from eth1, to the send of the first one answered / of the first one after the last answered; <= {ARP_PROBE_PERIOD:?} + a reply time after the decision"
                    ),
                    Probe::Metrics => "/metrics polled every 2 ms for the Service's `announced` series, a scrape's cost growing with the VIPs".into(),
                };
                println!(
                    "LB Service change -> decision ({} samples, each change {:?} or more after the last decision; {how}): p50 {:.1?}, p99 {:.1?} (withdraw p50 {:.1?}, announce p50 {:.1?})",
                    all.len(),
                    z.change_gap,
                    percentile(&all, 0.5),
                    percentile(&all, 0.99),
                    percentile(&withdraw, 0.5),
                    percentile(&announce, 0.5)
                );
            }
        }
    }
    drop(hb_peers);
    drop(peers);
    bench.srv.shutdown().await.unwrap();
}

/// How many of the functions `speaker.order` lists the speaker's binary defines (by `nm`): the
/// linker places those first and together, so a list gone stale (renamed symbols after a
/// toolchain, dependency or profile change) shows as more resident code. None when the binary
/// has no symbols (stripped) or `nm` is missing.
fn order_coverage(pid: u32) -> Option<(usize, usize)> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let list =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/speaker.order")).ok()?;
    let out = std::process::Command::new("nm")
        .arg("--defined-only")
        .arg(&exe)
        .output()
        .ok()?;
    let nm = String::from_utf8_lossy(&out.stdout);
    let defined: std::collections::HashSet<&str> = nm
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    if defined.is_empty() {
        return None;
    }
    let listed: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    let found = listed.iter().filter(|n| defined.contains(*n)).count();
    Some((found, listed.len()))
}

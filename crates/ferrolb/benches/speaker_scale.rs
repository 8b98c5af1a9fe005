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
//! 2. one speaker (node `node-0`, the only live node, so it owns all L IPs) starts: time
//!    until it announces every IP;
//! 3. at rest: RSS, CPU (from `/proc/<pid>/stat`) and the API writes of the speaker over an
//!    idle window (the speaker runs as its ServiceAccount with the RBAC of
//!    deploy/ferrolb.yaml; its writes are counted from the server's request records);
//! 4. churn: `BENCH_RATE` changes per second, in turn an endpoint change on a LoadBalancer
//!    Service, one on a ClusterIP Service, and a Node status heartbeat: CPU, CPU per
//!    LB change above the idle cost, and API writes;
//! 5. latency: an LB Service's endpoints go away and come back (`BENCH_SAMPLES` times):
//!    time from the API write to the speaker's decision (its `announced` metric).
//!
//! Every speaker binary named in `BENCH_EXES` (`label=path,label=path`; default: this
//! build) runs steps 2–5 in turn against the same loaded server, so a baseline and a change
//! are compared in one run.
//!
//! Run: `cargo bench --bench speaker_scale` (env `BENCH_NODES`, `BENCH_SERVICES`,
//! `BENCH_LB`, `BENCH_IDLE_SECS`, `BENCH_CHURN_SECS`, `BENCH_RATE`, `BENCH_SAMPLES`,
//! `BENCH_EXES`). Needs root (network namespaces); without it the bench is skipped
//! (it fails under `CI=true`).

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{cpu_secs, env_num, loadavg, scrape, start_server, status_kib, stop, wait_for, NS};
use ferrolb::crd::L2Advertisement;
use ferrolb_lab::harness::SPEAKER_SA;
use ferrolb_lab::netns::{privileged_or_skip, Netns};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const SPEAKER_METRICS: &str = "127.0.0.1:7473";

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
                {"type": "InternalIP", "address": format!("10.254.{}.{}", 1 + i / 250, 1 + i % 250)},
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Sizes {
    nodes: usize,
    services: usize,
    lb: usize,
    idle: u64,
    churn: u64,
    rate: u64,
    samples: usize,
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
        services: env_num("BENCH_SERVICES", if smoke { 30 } else { 1000 }) as usize,
        lb: env_num("BENCH_LB", if smoke { 3 } else { 100 }) as usize,
        idle: env_num("BENCH_IDLE_SECS", if smoke { 1 } else { 20 }),
        churn: env_num("BENCH_CHURN_SECS", if smoke { 1 } else { 20 }),
        rate: env_num("BENCH_RATE", 20),
        samples: env_num("BENCH_SAMPLES", if smoke { 2 } else { 20 }) as usize,
    };
    assert!(sizes.lb <= sizes.services && sizes.lb < 250 * 250);
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
    // Everything below runs on threads inside the namespace; the speaker inherits it.
    ferrolb_netns::in_netns(Some(&ns.path()), move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(run(sizes, exes));
        Ok(())
    })
    .unwrap();
    drop(ns);
}

async fn run(z: Sizes, exes: Vec<(String, String)>) {
    let bench = start_server("172.20.0.0/16", true).await;
    let client = bench.client.clone();
    // The speaker acts as its own ServiceAccount, with deploy/ferrolb.yaml's RBAC: the
    // request records then tell its writes from the bench's.
    let kc = bench.component_kubeconfig(SPEAKER_SA).await;
    let mut ad = L2Advertisement::new("bench", Default::default());
    ad.metadata.namespace = Some(NS.into());
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
    let objects = AtomicU64::new(z.nodes as u64);
    let objects = &objects;
    futures::stream::iter(0..z.services)
        .for_each_concurrent(32, |i| {
            let (svcs, slices) = (svcs.clone(), slices.clone());
            let nn = z.nodes;
            let lb = i < z.lb;
            async move {
                let s: Service = serde_json::from_value(service_json(i, lb)).unwrap();
                svcs.create(&PostParams::default(), &s).await.unwrap();
                if lb {
                    let st = json!({"status": {"loadBalancer": {"ingress": [{"ip": lb_ip(i), "ipMode": "VIP"}]}}});
                    svcs.patch_status(&format!("svc-{i}"), &PatchParams::default(), &Patch::Merge(&st))
                        .await
                        .unwrap();
                }
                let sl: EndpointSlice = serde_json::from_value(slice_json(i, nn, 0, true)).unwrap();
                slices.create(&PostParams::default(), &sl).await.unwrap();
                objects.fetch_add(2, Ordering::Relaxed);
            }
        })
        .await;
    let load = t0.elapsed();
    let n_objects = objects.load(Ordering::Relaxed);

    println!(
        "## speaker_scale (N = {} Nodes, S = {} Services, L = {} LoadBalancer)",
        z.nodes, z.services, z.lb
    );
    println!(
        "API server load: {n_objects} objects (+{} status writes) in {load:.2?} = {:.0} objects/s (32 clients)",
        z.lb,
        n_objects as f64 / load.as_secs_f64()
    );

    let writes = || bench.writes_by(SPEAKER_SA);
    let mut gen = 1usize;
    for (label, exe) in &exes {
        // 2. Start.
        let mut child = Command::new(exe)
            .args([
                "--log-level",
                "warn",
                "speaker",
                "--kubeconfig",
                &kc,
                "--namespace",
                NS,
                "--metrics-addr",
                SPEAKER_METRICS,
            ])
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
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss_rest = status_kib(pid, "VmRSS:");
        let (c0, w0, i0) = (cpu_secs(pid), writes(), Instant::now());
        tokio::time::sleep(Duration::from_secs(z.idle)).await;
        let (c1, w1, i1) = (cpu_secs(pid), writes(), Instant::now());
        let secs = (i1 - i0).as_secs_f64();
        let idle_cpu = (c1 - c0) / secs * 100.0;
        let idle_writes = (w1 - w0) as f64 / secs;
        let idle_load = loadavg();

        // 4. Churn: LB endpoints, ClusterIP endpoints, Node status, in turn.
        let period = Duration::from_secs_f64(1.0 / z.rate as f64);
        let total = (z.churn * z.rate) as usize;
        let (c0, w0, i0) = (cpu_secs(pid), writes(), Instant::now());
        let mut tick = tokio::time::interval(period);
        let mut kinds = [0usize; 3];
        for k in 0..total {
            tick.tick().await;
            gen += 1;
            let kind = k % 3;
            kinds[kind] += 1;
            let slice_of = match kind {
                0 if z.lb > 0 => Some(gen % z.lb),
                0 | 1 if z.services > z.lb => Some(z.lb + gen % (z.services - z.lb)),
                _ => None,
            };
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

        // 5. Latency: endpoints of an LB Service go (withdraw) and come back (announce).
        let mut lat = Vec::new();
        for k in 0..z.samples.min(z.lb) {
            let i = k % z.lb;
            let svc = format!("default/svc-{i}");
            for serving in [false, true] {
                gen += 1;
                let sl: EndpointSlice =
                    serde_json::from_value(slice_json(i, z.nodes, gen, serving)).unwrap();
                let t = Instant::now();
                slices
                    .replace(&format!("svc-{i}-abcde"), &PostParams::default(), &sl)
                    .await
                    .unwrap();
                let svc = svc.clone();
                let d = tokio::task::spawn_blocking(move || {
                    let t = Instant::now();
                    while announced(&scrape(SPEAKER_METRICS), Some(&svc)).1 != serving {
                        assert!(
                            t.elapsed() < Duration::from_secs(30),
                            "no decision for {svc}"
                        );
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
                .await;
                d.unwrap();
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        let peak = status_kib(pid, "VmHWM:");
        stop(&mut child);

        println!("### speaker: {label}");
        println!("all {lb} IPs announced after start:      {all_up:.2?}");
        println!(
            "RSS at rest:                             {:.1} MiB (peak {:.1} MiB)",
            rss_rest as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        println!(
            "idle ({} s): CPU {idle_cpu:.2} % of a core, API writes {idle_writes:.2}/s (load average {idle_load:.2})",
            z.idle
        );
        println!(
            "churn ({churn_rate:.1} changes/s for {} s: {} LB endpoints, {} ClusterIP endpoints, {} Node status): CPU {churn_cpu:.2} % of a core ({per_lb_change_ms:.2} ms above idle per LB change), API writes {churn_writes:.2}/s, RSS {:.1} MiB (load average {churn_load:.2})",
            z.churn,
            kinds[0],
            kinds[1],
            kinds[2],
            rss_churn as f64 / 1024.0
        );
        println!(
            "LB Service change -> decision ({} samples, incl. <=2 ms polling): p50 {:.1?}, p99 {:.1?}",
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
    bench.srv.shutdown().await.unwrap();
}

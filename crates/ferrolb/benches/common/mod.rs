//! What the scale benches share: the embedded API server set up with the system namespace
//! and one IPAddressPool, environment knobs, metrics scraping, a child process's CPU and
//! memory, and waiting. Included by each bench with `mod common;`.

#![allow(dead_code)] // each bench uses its own part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use ferrolb::crd::{IPAddressPool, IPAddressPoolSpec};
use ferrolb_lab::apiserver::{ApiServer, RunningServer};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The namespace ferrolb runs in.
pub const NS: &str = "metallb-system";

/// The embedded API server of a bench, with an admin client and kubeconfig.
pub struct BenchServer {
    pub srv: RunningServer,
    /// Admin client.
    pub client: kube::Client,
    /// Path of the admin kubeconfig.
    pub kubeconfig: String,
    /// Holds the kubeconfigs.
    pub dir: tempfile::TempDir,
}

/// Starts the embedded API server (watch history large enough that a burst never forces a
/// relist; every request recorded when `record` is set, see [`BenchServer::writes_by`]),
/// creates [`NS`] and the IPAddressPool `bench` with `addresses`.
pub async fn start_server(addresses: &str, record: bool) -> BenchServer {
    ferrolb::controller::install_crypto_provider();
    let srv = ApiServer::new()
        .history_limit(200_000)
        .record_requests(record)
        .start_at("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    srv.write_kubeconfig(&kc).unwrap();
    let client = kube::Client::try_from(srv.admin_config()).unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let mut pool = IPAddressPool::new(
        "bench",
        IPAddressPoolSpec {
            addresses: vec![addresses.into()],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    pool.metadata.namespace = Some(NS.into());
    Api::<IPAddressPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
    BenchServer {
        srv,
        client,
        kubeconfig: kc.to_string_lossy().to_string(),
        dir,
    }
}

impl BenchServer {
    /// Applies the RBAC of deploy/ferrolb.yaml and writes a kubeconfig acting as the
    /// ServiceAccount `sa` (so the component's requests are its own in the audit records).
    pub async fn component_kubeconfig(&self, sa: &str) -> String {
        use ferrolb_lab::harness::{apply_objects, rbac_documents, DEPLOY_MANIFEST};
        apply_objects(&self.client, rbac_documents(DEPLOY_MANIFEST).unwrap())
            .await
            .unwrap();
        let path = self.dir.path().join(format!("{sa}.kubeconfig"));
        std::fs::write(&path, self.srv.service_account_kubeconfig(NS, sa).unwrap()).unwrap();
        path.to_string_lossy().to_string()
    }

    /// Write requests (create, update, patch, delete) the ServiceAccount `sa` of [`NS`] made
    /// so far, from the server's request records.
    pub fn writes_by(&self, sa: &str) -> u64 {
        let user = ferrolb_lab::harness::service_account_user(sa);
        self.srv
            .audit_events()
            .iter()
            .filter(|e| e.effective_user() == user)
            .filter(|e| ["create", "update", "patch", "delete"].contains(&e.verb.as_str()))
            .count() as u64
    }

    /// Requests other than watches (reads and writes) the ServiceAccount `sa` of [`NS`] made
    /// so far, as `verb resource`, from the server's request records.
    pub fn requests_by(&self, sa: &str) -> Vec<String> {
        let user = ferrolb_lab::harness::service_account_user(sa);
        self.srv
            .audit_events()
            .iter()
            .filter(|e| e.effective_user() == user && e.verb != "watch")
            .map(|e| {
                let resource = e.object_ref.as_ref().map_or("", |o| o.resource.as_str());
                format!("{} {resource}", e.verb)
            })
            .collect()
    }
}

/// `name` from the environment, or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `/metrics` text served at `addr` (empty when it does not answer).
pub fn scrape(addr: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Sum of the samples whose line starts with `name` (a metric name, or a name with labels).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime field 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (get(14) + get(15)) as f64 / hz
}

/// The 1-minute load average of the machine.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `f` every 20 ms until it holds; panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// SIGTERM to `child`, then waits for it.
pub fn stop(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

/// Resident memory of `pid` by kind of mapping, from `/proc/<pid>/smaps` (KiB, largest
/// first): the binary's code (`exe code`) and its other sections (`exe data`), shared
/// libraries, the main heap (`[heap]`), glibc's per-thread malloc arenas (anonymous
/// read-write mappings at a 64 MiB boundary followed by their reserved rest), thread stacks
/// (anonymous read-write mappings right above a guard page), packet rings (shared
/// mappings of a socket) and other anonymous mappings.
pub fn smaps_breakdown(pid: u32) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    struct Map {
        start: u64,
        end: u64,
        perms: String,
        path: String,
        rss: u64,
    }
    let mut maps: Vec<Map> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let perms = f.next().unwrap_or("").to_string();
                let path = f.nth(3).unwrap_or("").to_string();
                maps.push(Map {
                    start,
                    end,
                    perms,
                    path,
                    rss: 0,
                });
                continue;
            }
        }
        if first == "Rss:" {
            if let (Some(m), Some(kib)) = (maps.last_mut(), f.next().and_then(|v| v.parse().ok())) {
                m.rss = kib;
            }
        }
    }
    let mut out: std::collections::BTreeMap<String, u64> = Default::default();
    for (i, m) in maps.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &maps[p]);
        let next = maps.get(i + 1);
        let kind = if !exe.is_empty() && m.path.starts_with(&exe) {
            if m.perms.contains('x') {
                "exe code"
            } else {
                "exe data"
            }
        } else if m.path == "[heap]" {
            "main heap"
        } else if m.path == "[stack]" {
            "stacks"
        } else if m.path.starts_with("socket:") || (m.path.is_empty() && m.perms.ends_with('s')) {
            "packet rings"
        } else if m.path.starts_with('/') {
            "shared libraries"
        } else if m.path.is_empty()
            && m.perms.starts_with("rw")
            && m.start % (64 << 20) == 0
            && next.is_some_and(|n| n.start == m.end && n.perms.starts_with("---"))
        {
            "malloc arenas"
        } else if m.path.is_empty()
            && m.perms.starts_with("rw")
            && prev.is_some_and(|p| p.end == m.start && p.perms.starts_with("---"))
        {
            "stacks"
        } else if m.path.starts_with('[') {
            "kernel ([vdso], [vvar], …)"
        } else {
            "other anonymous"
        };
        *out.entry(kind.to_string()).or_default() += m.rss;
    }
    let mut v: Vec<(String, u64)> = out.into_iter().collect();
    v.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    v
}

//! The demo `ferrolb lab` runs: a Service gets an EXTERNAL-IP, the client curls it, the owner's
//! speaker is killed (crash) and later stopped (graceful), and the time until the client is
//! served by another node is measured each time.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::harness::{node_name, Lab, LabConfig, ServiceSpec};
use super::probe::{percentile, Outcome, Prober, Sample};

/// The quick-start manifests a user applies, embedded so the binary is self-contained.
pub const EXAMPLE_POOL: &str = include_str!("../../../examples/ipaddresspool.yaml");
/// The dual-stack pool example (used with `--ipv6` / `--dual-stack`).
pub const EXAMPLE_DUAL: &str = include_str!("../../../examples/dual-stack-pool.yaml");
/// The quick-start L2Advertisement.
pub const EXAMPLE_L2ADV: &str = include_str!("../../../examples/l2advertisement.yaml");

/// Flags of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of nodes (each runs a speaker).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Use an IPv6 Service (NDP instead of ARP).
    #[arg(long, conflicts_with = "dual_stack")]
    pub ipv6: bool,
    /// Use a dual-stack Service (one IPv4 and one IPv6 EXTERNAL-IP).
    #[arg(long)]
    pub dual_stack: bool,
    /// How many crash failovers and graceful handovers to measure.
    #[arg(long, default_value_t = 1)]
    pub failovers: usize,
    /// Print the result as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Draw the failover timeline as an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// Leave everything running at the end and print how to poke at it; Ctrl-C cleans up.
    #[arg(long)]
    pub keep: bool,
    /// Extra argument passed to every speaker (repeatable), e.g. `--speaker-arg=--revertive`.
    #[arg(long = "speaker-arg", allow_hyphen_values = true)]
    pub speaker_args: Vec<String>,
}

/// One measured ownership change.
#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    /// `crash` (SIGKILL) or `graceful` (SIGTERM).
    pub kind: &'static str,
    pub from: String,
    pub to: Option<String>,
    /// From the signal to the first request served by another node.
    pub millis: Option<f64>,
    /// Requests that failed in between.
    pub failed_requests: usize,
}

/// Everything the demo measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub service: String,
    pub external_ips: Vec<IpAddr>,
    pub first_answer_from: String,
    pub client_neighbor: Option<(String, String)>,
    pub time_to_ip_ms: f64,
    pub failovers: Vec<Failover>,
    pub crash_p50_ms: Option<f64>,
    pub crash_p95_ms: Option<f64>,
    pub crash_max_ms: Option<f64>,
    pub graceful_p50_ms: Option<f64>,
    pub graceful_p95_ms: Option<f64>,
    pub graceful_max_ms: Option<f64>,
}

struct Steps {
    start: Instant,
    quiet: bool,
}

impl Steps {
    fn say(&self, msg: &str) {
        let line = format!("[{:7.2}s] {msg}", self.start.elapsed().as_secs_f64());
        if self.quiet {
            eprintln!("{line}");
        } else {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the demo; returns the process exit code.
pub fn run(args: DemoArgs) -> Result<i32> {
    if !is_root() {
        eprintln!(
            "ferrolb lab needs root: it creates network namespaces, a bridge and veth pairs \
             (nothing on the host's own interfaces). Run it with sudo."
        );
        return Ok(2);
    }
    for tool in ["ip", "nft"] {
        if which(tool).is_none() {
            eprintln!("ferrolb lab needs `{tool}` (apt-get install iproute2 nftables)");
            return Ok(2);
        }
    }
    let steps = Steps {
        start: Instant::now(),
        quiet: args.json,
    };
    let mut cfg = LabConfig::new(args.nodes)?;
    cfg.speaker_args = args.speaker_args.clone();
    let lab = Lab::start_with(cfg, |m| steps.say(m))?;
    install_cleanup_on_signal(lab.network().prefix().to_string());
    let mut lab = lab;
    let result = demo(&mut lab, &args, &steps);
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_summary(&report);
            }
            if args.keep {
                keep_running(&mut lab, &report);
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("ferrolb lab failed: {e:#}");
            let dir = lab.keep_dir();
            eprintln!("logs kept in {}", dir.display());
            Ok(1)
        }
    }
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

fn demo(lab: &mut Lab, args: &DemoArgs, steps: &Steps) -> Result<Report> {
    let dir = lab.dir.clone();
    let pool_file = dir.join("ipaddresspool.yaml");
    let adv_file = dir.join("l2advertisement.yaml");
    std::fs::write(&pool_file, EXAMPLE_POOL)?;
    std::fs::write(&adv_file, EXAMPLE_L2ADV)?;
    let mut applied = lab.apply_file(&pool_file)?;
    applied.extend(lab.apply_file(&adv_file)?);
    if args.ipv6 || args.dual_stack {
        let dual_file = dir.join("dual-stack-pool.yaml");
        std::fs::write(&dual_file, EXAMPLE_DUAL)?;
        applied.extend(lab.apply_file_filtered(&dual_file, |g| g == "metallb.io")?);
        // The example's IPv6 range is its own /64 on the same LAN: on-link for the client.
        lab.client_ns().run(&[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:0:1::/64",
            "dev",
            "eth0",
        ])?;
    }
    steps.say(&format!(
        "applied the examples/ pool and advertisement manifests: {}",
        applied.join(", ")
    ));

    let mut spec = ServiceSpec::new("web");
    if args.ipv6 {
        spec.families = vec!["IPv6"];
    } else if args.dual_stack {
        spec.families = vec!["IPv4", "IPv6"];
    }
    let want = spec.families.len();
    let t0 = Instant::now();
    lab.create_service(&spec)?;
    steps.say("created Service default/web (type LoadBalancer, port 80, endpoints on every node)");
    let ips = lab.wait_for_ips("default", "web", want, Duration::from_secs(30))?;
    let time_to_ip = t0.elapsed();
    steps.say(&format!(
        "EXTERNAL-IP {} assigned after {:.0} ms",
        ips.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        time_to_ip.as_secs_f64() * 1e3
    ));

    let vip = ips[0];
    let first = wait_for_answer(lab, vip, Duration::from_secs(20))
        .with_context(|| format!("no answer from http://{vip}/ within 20 s"))?;
    for ip in &ips {
        let body = lab
            .curl(*ip)
            .unwrap_or_else(|e| format!("curl failed: {e:#}"));
        steps.say(&format!(
            "client$ curl http://{} → {}",
            fmt_host(*ip),
            body.trim()
        ));
    }
    let neighbor = lab.client_neighbor(vip);
    if let Some((mac, state)) = &neighbor {
        let who = lab
            .node_by_mac(mac)
            .map(node_name)
            .unwrap_or_else(|| "?".into());
        steps.say(&format!(
            "client$ ip neigh show {vip} → lladdr {mac} {state}  (that is {who}'s MAC)"
        ));
    }

    let mut failovers = Vec::new();
    let mut all_samples: Vec<(Duration, Sample)> = Vec::new();
    let mut timeline: Vec<(Duration, Failover)> = Vec::new();
    let base = Instant::now();
    for round in 0..args.failovers {
        for kind in ["crash", "graceful"] {
            let (signal_at, f) = measure_failover(lab, vip, kind, steps, base, &mut all_samples)
                .with_context(|| format!("{kind} failover #{}", round + 1))?;
            timeline.push((signal_at, f.clone()));
            failovers.push(f);
        }
    }

    if let Some(path) = &args.plot {
        super::plot::draw(path, &all_samples, &timeline, args.nodes)?;
        steps.say(&format!("timeline drawn to {}", path.display()));
    }

    let stat = |kind: &str, p: f64| {
        let v: Vec<Duration> = failovers
            .iter()
            .filter(|f| f.kind == kind)
            .filter_map(|f| f.millis.map(|m| Duration::from_secs_f64(m / 1e3)))
            .collect();
        percentile(&v, p).map(|d| d.as_secs_f64() * 1e3)
    };
    Ok(Report {
        nodes: args.nodes,
        service: "default/web".into(),
        external_ips: ips,
        first_answer_from: first,
        client_neighbor: neighbor,
        time_to_ip_ms: time_to_ip.as_secs_f64() * 1e3,
        crash_p50_ms: stat("crash", 50.0),
        crash_p95_ms: stat("crash", 95.0),
        crash_max_ms: stat("crash", 100.0),
        graceful_p50_ms: stat("graceful", 50.0),
        graceful_p95_ms: stat("graceful", 95.0),
        graceful_max_ms: stat("graceful", 100.0),
        failovers,
    })
}

fn fmt_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

fn wait_for_answer(lab: &Lab, vip: IpAddr, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        match lab.request(vip, Duration::from_millis(500)) {
            Ok(node) => return Ok(node),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix("node-")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

/// Measures one failover; returns it with the time of its signal since `base`, and appends
/// the client's samples to `all` as (time of the prober's start since `base`, sample).
fn measure_failover(
    lab: &mut Lab,
    vip: IpAddr,
    kind: &'static str,
    steps: &Steps,
    base: Instant,
    all: &mut Vec<(Duration, Sample)>,
) -> Result<(Duration, Failover)> {
    let owner_name = wait_for_answer(lab, vip, Duration::from_secs(10))?;
    let owner = node_index(&owner_name).context("answer from an unknown node")?;
    let prober = Prober::start(
        lab.client_ns().path(),
        SocketAddr::new(vip, 80),
        Duration::from_millis(10),
        Duration::from_millis(100),
    );
    let offset = base.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let sig = if kind == "crash" {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    let at = prober.elapsed();
    lab.signal_speaker(owner, sig)
        .context("owner's speaker is not running")?;
    steps.say(&format!(
        "{} {owner_name}'s speaker (owner of {vip}); client requests every 10 ms…",
        if kind == "crash" {
            "SIGKILL"
        } else {
            "SIGTERM"
        }
    ));
    let got = prober.wait_for(
        at,
        Duration::from_secs(15),
        |o| matches!(o, Outcome::Node(n) if *n != owner_name),
    );
    std::thread::sleep(Duration::from_millis(200));
    let samples = prober.finish();
    let failed = samples
        .iter()
        .filter(|s| s.at >= at && got.as_ref().is_none_or(|g| s.at <= g.at))
        .filter(|s| s.outcome == Outcome::Failed)
        .count();
    all.extend(samples.into_iter().map(|s| (offset, s)));
    let _ = lab.reap_speaker(owner, Duration::from_secs(5));
    let (to, millis) = match &got {
        Some(s) => {
            let ms = (s.at - at).as_secs_f64() * 1e3;
            let Outcome::Node(n) = &s.outcome else {
                unreachable!()
            };
            steps.say(&format!(
                "  → {n} serves {vip} {ms:.0} ms after the {kind} ({failed} requests failed meanwhile)"
            ));
            (Some(n.clone()), Some(ms))
        }
        None => {
            steps.say("  → no other node answered within 15 s");
            (None, None)
        }
    };
    lab.start_speaker(owner)?;
    steps.say(&format!("restarted {owner_name}'s speaker"));
    std::thread::sleep(Duration::from_secs(2));
    Ok((
        offset + at,
        Failover {
            kind,
            from: owner_name,
            to,
            millis,
            failed_requests: failed,
        },
    ))
}

fn print_summary(r: &Report) {
    let f = |v: Option<f64>| {
        v.map(|x| format!("{x:.0} ms"))
            .unwrap_or_else(|| "—".into())
    };
    println!();
    println!("summary");
    println!("  Service            {}", r.service);
    println!(
        "  EXTERNAL-IP        {}",
        r.external_ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  time to IP         {:.0} ms", r.time_to_ip_ms);
    println!("  first served by    {}", r.first_answer_from);
    println!(
        "  {:<18} {:>10} {:>10} {:>10} {:>4}",
        "failover", "p50", "p95", "max", "n"
    );
    for (kind, p50, p95, max) in [
        (
            "crash (SIGKILL)",
            r.crash_p50_ms,
            r.crash_p95_ms,
            r.crash_max_ms,
        ),
        (
            "graceful (SIGTERM)",
            r.graceful_p50_ms,
            r.graceful_p95_ms,
            r.graceful_max_ms,
        ),
    ] {
        let n = r
            .failovers
            .iter()
            .filter(|x| kind.starts_with(x.kind))
            .count();
        println!(
            "  {kind:<18} {:>10} {:>10} {:>10} {n:>4}",
            f(p50),
            f(p95),
            f(max)
        );
    }
}

fn keep_running(lab: &mut Lab, r: &Report) {
    let dir = lab.keep_dir();
    let vip = r.external_ips.first().copied();
    println!();
    println!("the lab keeps running; try:");
    if let Some(vip) = vip {
        println!(
            "  ip netns exec {} curl http://{}/",
            lab.client_ns().name(),
            fmt_host(vip)
        );
        println!("  ip netns exec {} ip neigh", lab.client_ns().name());
    }
    println!(
        "  ip netns exec {} kubectl --kubeconfig {} get svc -A",
        lab.ctl_ns().name(),
        lab.kubeconfig.display()
    );
    println!(
        "  ip netns exec {} {} explain --kubeconfig {}   # who announces each VIP, and why the other nodes do not",
        lab.ctl_ns().name(),
        lab.cfg.exe.display(),
        lab.kubeconfig.display()
    );
    println!(
        "  ip netns exec {} tcpdump -ni br0 arp or icmp6",
        lab.network().switch().name()
    );
    println!("  logs: {}", dir.display());
    println!("press Ctrl-C to tear everything down");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// On SIGINT/SIGTERM: delete every namespace of this lab (which ends its processes' network)
/// and kill the process group's children, then exit 130.
fn install_cleanup_on_signal(prefix: String) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("\nferrolb lab: interrupted, cleaning up namespaces {prefix}-*");
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&prefix) {
                    if let Ok(p) = std::process::Command::new("ip")
                        .args(["netns", "pids", name])
                        .output()
                    {
                        for pid in String::from_utf8_lossy(&p.stdout).split_whitespace() {
                            if let Ok(pid) = pid.parse::<i32>() {
                                // SAFETY: plain kill(2) of processes inside our own namespaces.
                                unsafe { libc::kill(pid, libc::SIGKILL) };
                            }
                        }
                    }
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "del", name])
                        .status();
                }
            }
        }
        std::process::exit(130);
    });
}

//! ARP request → reply latency (p50 / p99) and throughput: ferrolb's userspace responder
//! side by side with the Linux kernel answering for an address configured on the same
//! node interface, in the same run and network namespaces.
//!
//! Run on demand as root (not in CI):
//!
//! ```text
//! cargo bench --bench arp_latency -- [--requests N] [--flood N] [--rate R] [--burst B] [--pin]
//!     [--gap-us G]
//! ```
//!
//! `--burst`: requests per `sendmmsg` in the throughput runs (the client paces bursts);
//! `--pin`: client thread on CPU 0, the dataplane receive thread on CPU 1;
//! `--gap-us`: pause before each request of the "isolated" latency run (default 1000).
//!
//! Topology: client ns ─veth─ switch ns (bridge) ─veth─ node ns. The node's kernel owns
//! 10.0.0.10 on eth0; the ferrolb dataplane in the node namespace owns 10.0.0.100.
//! The client sends ARP requests from a raw packet socket and times the replies; the same
//! client code measures both responders.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ferrolb::dataplane::bpf::FilterOptions;
use ferrolb::dataplane::sys::{PacketSocket, RecvBatch, SendBatch};
use ferrolb::dataplane::{Config, Dataplane, InterfaceFilter};
use ferrolb::wire::{self, ArpOperation, ArpRepr, FrameRepr, Inbound, Mac, PayloadRepr};
use ferrolb_lab::netns::{privileged_or_skip, HostSpec, Network};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

struct Args {
    requests: usize,
    flood: usize,
    rate: u64,
    burst: usize,
    pin: bool,
    gap_us: u64,
}

fn args() -> Args {
    let v: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets a smoke run
    // (a few hundred requests) that proves the bench still works.
    let smoke = !v.iter().any(|a| a == "--bench");
    let mut a = Args {
        requests: if smoke { 200 } else { 20_000 },
        flood: if smoke { 2_000 } else { 200_000 },
        rate: if smoke { 10_000 } else { 100_000 },
        burst: 8,
        pin: false,
        gap_us: 1000,
    };
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).and_then(|s| s.parse().ok());
        match (v[i].as_str(), next) {
            ("--requests", Some(n)) => a.requests = n as usize,
            ("--flood", Some(n)) => a.flood = n as usize,
            ("--rate", Some(n)) => a.rate = n,
            ("--burst", Some(n)) => a.burst = n as usize,
            ("--gap-us", Some(n)) => a.gap_us = n,
            _ if v[i] == "--pin" => {
                a.pin = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn is_reply_from(frame: &[u8], target: Ipv4Addr) -> bool {
    matches!(wire::parse_inbound(frame),
        Ok(Inbound::ArpReply(m)) if m.sender_ip == target && m.target_ip == CLIENT_IP)
}

/// One request, one timed reply (None after 200 ms). The client busy-waits for the
/// reply (non-blocking `recvmmsg` in a loop), so its own wake-up from a blocking read is
/// not counted against either responder: the kernel often answers inside the client's
/// `sendto`, before the client would even sleep, while a userspace reply always arrives
/// later and would pay the client's wake-up on top of the responder's.
fn ping_once(
    sock: &PacketSocket,
    req: &[u8],
    target: Ipv4Addr,
    rx: &mut RecvBatch,
) -> Option<Duration> {
    let t0 = Instant::now();
    sock.send(req).ok()?;
    while t0.elapsed() < Duration::from_millis(200) {
        if let Ok(k) = sock.recv_batch(rx, false) {
            if k > 0 && rx.frames().any(|f| is_reply_from(f, target)) {
                return Some(t0.elapsed());
            }
        }
    }
    None
}

/// Broadcast ARP request "who has `target`? tell `CLIENT_IP`" from `mac`.
fn arp_request(mac: Mac, target: Ipv4Addr) -> Vec<u8> {
    FrameRepr {
        src: mac,
        dst: Mac::BROADCAST,
        vlan: None,
        payload: PayloadRepr::Arp(ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: mac,
            sender_ip: CLIENT_IP,
            target_mac: Mac::ZERO,
            target_ip: target,
        }),
    }
    .to_vec()
    .expect("an ARP request fits its own buffer")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Pins the calling thread (`tid` 0) or thread `tid` to `cpu`; best effort.
fn pin(tid: libc::pid_t, cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Thread id of this process's thread named `comm`.
fn thread_id(comm: &str) -> Option<libc::pid_t> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|e| {
        let e = e.ok()?;
        let c = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (c.trim() == comm).then(|| e.file_name().to_str()?.parse().ok())?
    })
}

/// Counts the matching replies among the frames of `rx`.
fn count_replies(rx: &RecvBatch, target: Ipv4Addr) -> u64 {
    rx.frames().filter(|f| is_reply_from(f, target)).count() as u64
}

/// Sends `n` requests in bursts of `burst` frames (one `sendmmsg` per burst), paced at
/// `rate`/s (or as fast as possible when 0), while the same thread counts replies with
/// non-blocking `recvmmsg` between bursts, then waits until no reply came for 300 ms.
/// Returns (sent, answered, send seconds, answered per second).
fn flood(
    sock: &PacketSocket,
    req: &[u8],
    target: Ipv4Addr,
    n: usize,
    rate: u64,
    burst: usize,
) -> (usize, u64, f64, f64) {
    let burst = burst.max(1);
    let mut rx = RecvBatch::new(64, 256);
    let mut tx = SendBatch::new();
    let (mut sent, mut answered) = (0usize, 0u64);
    let mut last = Instant::now();
    let mut poll = |answered: &mut u64, last: &mut Instant| {
        while let Ok(k) = sock.recv_batch(&mut rx, false) {
            if k == 0 {
                break;
            }
            let got = count_replies(&rx, target);
            if got > 0 {
                *answered += got;
                *last = Instant::now();
            }
        }
    };
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        if let Some(ns) = (i as u64 * 1_000_000_000).checked_div(rate) {
            let due = start + Duration::from_nanos(ns);
            while Instant::now() < due {
                poll(&mut answered, &mut last);
            }
        }
        let k = burst.min(n - i);
        for _ in 0..k {
            tx.push(req);
        }
        sock.send_batch(&mut tx, |_, r| sent += usize::from(r.is_ok()));
        i += k;
        poll(&mut answered, &mut last);
    }
    let send_secs = start.elapsed().as_secs_f64();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(300) {
        if let Ok(k) = sock.recv_batch(&mut rx, true) {
            let got = count_replies(&rx, target);
            if k > 0 && got > 0 {
                answered += got;
                last = Instant::now();
                idle_since = last;
            }
        }
    }
    let span = last.duration_since(start).as_secs_f64().max(send_secs);
    (sent, answered, send_secs, answered as f64 / span)
}

fn main() -> anyhow::Result<()> {
    if !privileged_or_skip("arp_latency bench") {
        return Ok(());
    }
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut net = Network::new()?;
    let client = net.add_host("client", HostSpec::v4("10.0.0.1/24"))?;
    let node = net.add_host("node", HostSpec::v4("10.0.0.10/24"))?;
    let (dp, _events) = rt.block_on(Dataplane::start(Config {
        netns: Some(net.host(node).ns.path()),
        backoff: vec![],
        ..Config::default()
    }))?;
    dp.announce(VIP.into(), InterfaceFilter::All);

    let c = net.host(client);
    let idx: u32 =
        c.ns.run(&["cat", "/sys/class/net/eth0/ifindex"])?
            .trim()
            .parse()?;
    let sock =
        c.ns.enter(move || PacketSocket::open(idx, FilterOptions::default()))?;
    if a.pin {
        // Client (this thread: latency and flood) on CPU 0, the dataplane's receive thread
        // on CPU 1. The kernel responder runs in softirq on the CPU the request arrives on.
        let rx_tid = thread_id("ferrolb-rx-eth0");
        let ok = pin(0, 0) && rx_tid.is_some_and(|t| pin(t, 1));
        println!("pinning: client → CPU 0, ferrolb-rx-eth0 ({rx_tid:?}) → CPU 1: {ok}");
    }
    let mac = Mac(c.mac);
    let req_kernel = arp_request(mac, KERNEL_IP);
    let req_vip = arp_request(mac, VIP);
    let mut buf = RecvBatch::new(8, 2048);

    // Warm up both paths (neighbour entries, caches, thread wake-ups).
    for _ in 0..1000 {
        ping_once(&sock, &req_kernel, KERNEL_IP, &mut buf);
        ping_once(&sock, &req_vip, VIP, &mut buf);
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // Back to back (the next request leaves as soon as the previous reply is in), then
    // isolated (a pause of --gap-us before each pair: the responder has gone to sleep).
    for (label, n, gap) in [
        ("back to back", a.requests, Duration::ZERO),
        (
            "isolated",
            (a.requests / 10).max(1),
            Duration::from_micros(a.gap_us),
        ),
    ] {
        let (mut lk, mut lf) = (Vec::new(), Vec::new());
        let (mut loss_k, mut loss_f) = (0, 0);
        for _ in 0..n {
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            match ping_once(&sock, &req_kernel, KERNEL_IP, &mut buf) {
                Some(d) => lk.push(d),
                None => loss_k += 1,
            }
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            match ping_once(&sock, &req_vip, VIP, &mut buf) {
                Some(d) => lf.push(d),
                None => loss_f += 1,
            }
        }
        lk.sort();
        lf.sort();
        println!();
        println!(
            "ARP request → reply latency, {label} (gap {} µs), {n} interleaved requests each (µs)",
            gap.as_micros()
        );
        println!(
            "{:<10} {:>8} {:>8} {:>8} {:>6}",
            "responder", "p50", "p99", "max", "lost"
        );
        for (name, v, lost) in [("kernel", &lk, loss_k), ("ferrolb", &lf, loss_f)] {
            println!(
                "{:<10} {:>8.1} {:>8.1} {:>8.1} {:>6}",
                name,
                us(pct(v, 0.5)),
                us(pct(v, 0.99)),
                us(*v.last().unwrap_or(&Duration::ZERO)),
                lost
            );
        }
        println!(
            "ratio ferrolb/kernel: p50 {:.2}x, p99 {:.2}x",
            us(pct(&lf, 0.5)) / us(pct(&lk, 0.5)),
            us(pct(&lf, 0.99)) / us(pct(&lk, 0.99))
        );
    }

    println!();
    println!(
        "Throughput: {} requests per run, bursts of {} (one sendmmsg each)",
        a.flood, a.burst
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>9} {:>12}",
        "responder", "offered/s", "sent", "answered", "loss %", "answered/s"
    );
    for rate in [a.rate, 0] {
        for (name, req, target) in [
            ("kernel", &req_kernel, KERNEL_IP),
            ("ferrolb", &req_vip, VIP),
        ] {
            let (sent, got, secs, per_s) = flood(&sock, req, target, a.flood, rate, a.burst);
            let offered = if rate == 0 {
                format!("max({:.0})", sent as f64 / secs)
            } else {
                rate.to_string()
            };
            println!(
                "{:<10} {:>10} {:>10} {:>10} {:>9.2} {:>12.0}",
                name,
                offered,
                sent,
                got,
                100.0 * (1.0 - got as f64 / sent.max(1) as f64),
                per_s
            );
        }
    }
    let m = dp.metrics();
    println!();
    println!(
        "dataplane counters: responses_sent={} drops(malformed)={} send_errors={}",
        m.responses_sent
            .get_or_create(&ferrolb::dataplane::metrics::IpLabel {
                ip: ferrolb::telemetry::IpLabelValue(VIP.into())
            })
            .get(),
        m.drops
            .get_or_create(&ferrolb::dataplane::metrics::ReasonLabel {
                reason: "malformed".into()
            })
            .get(),
        m.send_errors.get()
    );
    drop(dp);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

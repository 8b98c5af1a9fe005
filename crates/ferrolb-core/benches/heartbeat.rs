//! Peer-liveness cost per node: heartbeat traffic and CPU with 3, 10 and 100 peers.
//!
//! `cargo bench --bench heartbeat` (release build). One "node under test" thread does what
//! the speaker's heartbeat task does — every 100 ms it signs one heartbeat and sends it to
//! each of the N−1 peers, and it receives, authenticates (HMAC-SHA256, replay window) and
//! records every peer's heartbeats, re-evaluating the liveness signature on each change —
//! over real UDP sockets on the loopback interface. A second thread plays the N−1 peers.
//! The node thread's CPU time (`getrusage(RUSAGE_THREAD)`) over the run gives the CPU per
//! node; bytes are UDP payload, plus 28 bytes of IPv4 + UDP headers per datagram on the wire.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrolb_core::election::membership::{Heartbeat, HmacKey, MeshTiming, PeerTable};

const INTERVAL: Duration = Duration::from_millis(100);
const RUN: Duration = Duration::from_secs(5);
/// Run length under `cargo test --benches` (no `--bench` argument): a smoke run that proves
/// the bench still works, not a measurement.
const SMOKE_RUN: Duration = Duration::from_millis(300);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn thread_cpu() -> Duration {
    // SAFETY: all-zero is a valid rusage (plain integers).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    Duration::from_secs(ru.ru_utime.tv_sec as u64 + ru.ru_stime.tv_sec as u64)
        + Duration::from_micros(ru.ru_utime.tv_usec as u64 + ru.ru_stime.tv_usec as u64)
}

struct Result {
    tx_msgs: u64,
    rx_msgs: u64,
    tx_bytes: u64,
    rx_bytes: u64,
    cpu: Duration,
    wall: Duration,
    peers_heard: usize,
}

fn run(n: usize, run_for: Duration) -> Result {
    let key = HmacKey::new(&[42u8; 32]).unwrap();
    let node = UdpSocket::bind("127.0.0.1:0").unwrap();
    let node_addr = node.local_addr().unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));

    // The peers: N-1 senders (one socket, N-1 identities), and a sink for our heartbeats.
    let peers = {
        let stop = stop.clone();
        let key = key.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let incarnation = unix_ms();
            let mut seq = 0;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                for p in 1..n {
                    let hb = Heartbeat {
                        node: format!("node-{p}"),
                        incarnation,
                        seq,
                        sent_unix_ms: unix_ms(),
                        flags: 1,
                    };
                    let _ = sock.send_to(&hb.encode(&key), node_addr);
                }
                next += INTERVAL;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let drain = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let _ = sink.recv_from(&mut buf);
            }
        })
    };

    // The node under test.
    let targets: Vec<SocketAddr> = (1..n).map(|_| sink_addr).collect();
    let mut table = PeerTable::new("node-0", MeshTiming::default());
    let mut buf = [0u8; 512];
    let mut signature = Vec::new();
    let (mut tx_msgs, mut rx_msgs, mut tx_bytes, mut rx_bytes) = (0u64, 0u64, 0u64, 0u64);
    let incarnation = unix_ms();
    let mut seq = 0;
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let mut next_tick = start;
    while start.elapsed() < run_for {
        let now = Instant::now();
        if now >= next_tick {
            seq += 1;
            let msg = Heartbeat {
                node: "node-0".into(),
                incarnation,
                seq,
                sent_unix_ms: unix_ms(),
                flags: 1,
            }
            .encode(&key);
            for t in &targets {
                if let Ok(b) = node.send_to(&msg, t) {
                    tx_msgs += 1;
                    tx_bytes += b as u64;
                }
            }
            next_tick += INTERVAL;
        }
        let wait = next_tick.saturating_duration_since(Instant::now());
        node.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok((b, _)) = node.recv_from(&mut buf) {
            rx_bytes += b as u64;
            if table
                .receive(&buf[..b], &key, Instant::now(), unix_ms())
                .is_ok()
            {
                rx_msgs += 1;
            }
        }
        let sig = table.signature(Instant::now());
        if sig != signature {
            signature = sig;
        }
    }
    let cpu = thread_cpu() - cpu0;
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    peers.join().unwrap();
    drain.join().unwrap();
    Result {
        tx_msgs,
        rx_msgs,
        tx_bytes,
        rx_bytes,
        cpu,
        wall,
        peers_heard: signature.iter().filter(|(_, s)| *s == 2).count(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (run_for, sizes): (Duration, &[usize]) = if smoke {
        (SMOKE_RUN, &[3])
    } else {
        (RUN, &[3, 10, 100])
    };
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>12} {:>12} {:>10}",
        "peers", "tx msg/s", "rx msg/s", "tx B/s wire", "rx B/s wire", "CPU % core", "µs/msg"
    );
    for &peers in sizes {
        let n = peers + 1;
        let r = run(n, run_for);
        let secs = r.wall.as_secs_f64();
        let wire = |msgs: u64, bytes: u64| (bytes + 28 * msgs) as f64 / secs;
        assert_eq!(r.peers_heard, n - 1, "not every peer was heard");
        println!(
            "{:>6} {:>10.0} {:>10.0} {:>12.0} {:>12.0} {:>12.2} {:>10.2}",
            n - 1,
            r.tx_msgs as f64 / secs,
            r.rx_msgs as f64 / secs,
            wire(r.tx_msgs, r.tx_bytes),
            wire(r.rx_msgs, r.rx_bytes),
            100.0 * r.cpu.as_secs_f64() / secs,
            r.cpu.as_secs_f64() * 1e6 / (r.tx_msgs + r.rx_msgs).max(1) as f64,
        );
    }
}

//! Controller scale benchmark (a bench binary, not criterion: it measures one large
//! end-to-end run).
//!
//! The embedded API server runs in this process; `ferrolb controller` runs as a child
//! process (so its RSS is its own). Steps:
//! 1. pool `10.0.0.0/16`, controller started and leading, 0 Services;
//! 2. N Services (default 10 000) created at once (32 concurrent clients): time until
//!    every one has an IP;
//! 3. at rest: RSS of the controller (3 s after the last IP, and at the end of the idle
//!    window), and API writes during an idle window;
//! 4. restart (SIGTERM, new process): time until it has rebuilt and re-checked every
//!    Service, with the number of Service writes it made (must be 0), and RSS again.
//!
//! Run: `cargo bench --bench controller_scale` (env `BENCH_SERVICES`, `BENCH_IDLE_SECS`,
//! `BENCH_WRAP` to run the controller under a profiler such as heaptrack).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{env_num, free_port, metric, scrape, start_server, status_kib, stop, wait_for, NS};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

fn spawn_controller(kubeconfig: &str, metrics: SocketAddr, id: &str) -> Child {
    // `BENCH_WRAP="heaptrack -o /tmp/ht"` runs the controller under a profiler (the RSS
    // figures are then the profiler's).
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(w) => {
            let mut c = Command::new(w);
            c.args(words).arg(env!("CARGO_BIN_EXE_ferrolb"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_ferrolb")),
    };
    cmd.args([
        "--log-level",
        "warn",
        "controller",
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        NS,
        "--metrics-addr",
        &metrics.to_string(),
        "--pod-name",
        id,
        // One replica: measure allocation, not lease renewals against a busy
        // in-process API server.
        "--no-leader-election",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("spawn ferrolb controller")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets a smoke run
    // (a few Services, one idle second) that proves the bench still works.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = env_num("BENCH_SERVICES", if smoke { 200 } else { 10_000 }) as usize;
    let idle = env_num("BENCH_IDLE_SECS", if smoke { 1 } else { 60 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let bench = start_server("10.0.0.0/16", false).await;
        let (client, kc) = (bench.client.clone(), bench.kubeconfig.clone());
        let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = spawn_controller(&kc, maddr, "bench-1");
        wait_for("leader", Duration::from_secs(30), || {
            metric(&scrape(&maddr.to_string()), "ferrolb_controller_leader") == 1.0
        });
        let idle_rss = status_kib(child.id(), "VmRSS:");

        // 2. N Services at once.
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        let t0 = Instant::now();
        futures::stream::iter(0..n)
            .for_each_concurrent(32, |i| {
                let svcs = svcs.clone();
                async move {
                    let s: Service = serde_json::from_value(json!({
                        "metadata": {"name": format!("svc-{i}"), "namespace": "default"},
                        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1",
                                 "clusterIPs": ["10.96.0.1"],
                                 "ports": [{"port": 80, "protocol": "TCP"}]}
                    }))
                    .unwrap();
                    svcs.create(&PostParams::default(), &s).await.unwrap();
                }
            })
            .await;
        let created = t0.elapsed();
        let all = tokio::task::spawn_blocking(move || {
            wait_for("all status writes", Duration::from_secs(600), || {
                metric(
                    &scrape(&maddr.to_string()),
                    "ferrolb_controller_api_writes_total{kind=\"service_status\"}",
                ) >= n as f64
            });
        });
        all.await.unwrap();
        // Status writes can be retried (409 while the watch lags): confirm on the API.
        let (all_assigned, with_ip, distinct) = loop {
            let listed = ferrolb::controller::shell::list_all(&svcs).await.unwrap();
            let ips: Vec<String> = listed
                .iter()
                .filter_map(|s| {
                    s.status
                        .as_ref()
                        .and_then(|st| st.load_balancer.as_ref())
                        .and_then(|l| l.ingress.as_ref())
                        .and_then(|i| i.first())
                        .and_then(|i| i.ip.clone())
                })
                .collect();
            let distinct: std::collections::HashSet<&String> = ips.iter().collect();
            let d = distinct.len();
            if ips.len() == n {
                break (t0.elapsed(), ips.len(), d);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(900),
                "only {} of {n} have an IP",
                ips.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(distinct, with_ip, "an IP was given to two Services");

        // 3. At rest.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pid = child.id();
        let rest_rss = status_kib(pid, "VmRSS:");
        let m = scrape(&maddr.to_string());
        let w0 = metric(
            &m,
            "ferrolb_controller_api_writes_total{kind=\"service_status\"}",
        ) + metric(&m, "ferrolb_controller_api_writes_total{kind=\"event\"}")
            + metric(
                &m,
                "ferrolb_controller_api_writes_total{kind=\"pool_status\"}",
            );
        let l0 = metric(&m, "ferrolb_controller_api_writes_total{kind=\"lease\"}");
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let m = scrape(&maddr.to_string());
        let w1 = metric(
            &m,
            "ferrolb_controller_api_writes_total{kind=\"service_status\"}",
        ) + metric(&m, "ferrolb_controller_api_writes_total{kind=\"event\"}")
            + metric(
                &m,
                "ferrolb_controller_api_writes_total{kind=\"pool_status\"}",
            );
        let l1 = metric(&m, "ferrolb_controller_api_writes_total{kind=\"lease\"}");
        let peak = status_kib(pid, "VmHWM:");
        let end_idle_rss = status_kib(pid, "VmRSS:");

        // 4. Restart.
        stop(&mut child);
        let maddr2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let t1 = Instant::now();
        let mut child2 = spawn_controller(&kc, maddr2, "bench-2");
        let restart = tokio::task::spawn_blocking(move || {
            wait_for("restart reconciles", Duration::from_secs(300), || {
                metric(
                    &scrape(&maddr2.to_string()),
                    "ferrolb_controller_reconciles_total",
                ) >= n as f64
            })
        })
        .await
        .unwrap();
        let _ = restart;
        let restart_time = t1.elapsed();
        // At rest: past one free-memory trim period (10 s) of the controller.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let m2 = scrape(&maddr2.to_string());
        let restart_writes = metric(
            &m2,
            "ferrolb_controller_api_writes_total{kind=\"service_status\"}",
        );
        let rss2 = status_kib(child2.id(), "VmRSS:");
        stop(&mut child2);

        println!("## controller_scale (N = {n})");
        println!(
            "controller RSS, leading, 0 Services:         {:.1} MiB",
            idle_rss as f64 / 1024.0
        );
        println!("create {n} Services (32 clients):        {created:.2?}");
        println!("time until all {n} have an IP:           {all_assigned:.2?}");
        println!(
            "controller RSS at rest with {n} Services: {:.1} MiB (peak {:.1} MiB)",
            rest_rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        println!(
            "controller RSS after {idle} s idle:          {:.1} MiB",
            end_idle_rss as f64 / 1024.0
        );
        println!(
            "API writes in {idle} s idle: {} (lease renewals: {})",
            (w1 - w0) as i64,
            (l1 - l0) as i64
        );
        println!(
            "restart: all {n} re-checked after {restart_time:.2?}, Service writes: {}",
            restart_writes as i64
        );
        println!(
            "controller RSS after restart, at rest:     {:.1} MiB",
            rss2 as f64 / 1024.0
        );
        bench.srv.shutdown().await.unwrap();
    });
}

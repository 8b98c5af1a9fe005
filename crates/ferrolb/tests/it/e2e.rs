//! End-to-end tests: the real `ferrolb` controller and speakers against the embedded API
//! server, in a LAN of network namespaces, with the Linux kernel of a client namespace as the
//! client (its ARP/NDP, TCP, `curl`, `arping`). Root required: without it each test prints why
//! and skips, except under `CI=true` where it fails.
//!
//! The scenarios run one at a time (a shared lock): each one builds and tears down its own
//! lab, and timing assertions should not compete with each other for the two CPUs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrolb_lab::harness::{node_name, Lab, LabConfig, ServiceSpec};
use ferrolb_lab::netns::privileged_with_tools_or_skip;

static SERIAL: Mutex<()> = Mutex::new(());

const TOOLS: &[&str] = &["ip", "nft", "curl", "arping", "tcpdump"];

pub(crate) fn lab(test: &str, nodes: usize) -> Option<(std::sync::MutexGuard<'static, ()>, Lab)> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !privileged_with_tools_or_skip(test, TOOLS) {
        return None;
    }
    let mut cfg = LabConfig::new(nodes).unwrap();
    cfg.exe = PathBuf::from(env!("CARGO_BIN_EXE_ferrolb"));
    cfg.log_level = "info,ferrolb=debug".into();
    let lab = Lab::start(cfg).expect("lab starts");
    Some((guard, lab))
}

pub(crate) fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("examples")
}

pub(crate) fn write(lab: &Lab, name: &str, text: &str) -> PathBuf {
    let p = lab.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub(crate) fn apply_quickstart(lab: &Lab) {
    lab.apply_file(&examples().join("ipaddresspool.yaml"))
        .unwrap();
    lab.apply_file(&examples().join("l2advertisement.yaml"))
        .unwrap();
}

pub(crate) fn dump(lab: &Lab) -> String {
    // Keep a copy of every log for post-mortems (CI prints the path).
    let keep = std::env::temp_dir().join(format!("ferrolb-e2e-logs-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&keep);
    if let Ok(rd) = std::fs::read_dir(&lab.dir) {
        for e in rd.flatten() {
            let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
        }
    }
    let mut out = format!("\n(all logs copied to {})", keep.display());
    for name in [
        "controller",
        "speaker-node-1",
        "speaker-node-2",
        "speaker-node-3",
    ] {
        out.push_str(&format!("\n--- {name} ---\n{}", lab.log_tail(name, 25)));
    }
    out
}

/// Requests `ip` until a node other than `owner` answers; panics (with `what` and the
/// lab's logs) when none has by `limit` after `since`. Returns the new owner.
pub(crate) fn wait_takeover(
    lab: &Lab,
    ip: IpAddr,
    owner: &str,
    since: Instant,
    limit: Duration,
    poll: Duration,
    what: &str,
) -> String {
    loop {
        if let Ok(n) = lab.request(ip, Duration::from_millis(100)) {
            if n != owner {
                return n;
            }
        }
        assert!(
            since.elapsed() < limit,
            "no takeover after {what}{}",
            dump(lab)
        );
        std::thread::sleep(poll);
    }
}

/// Polls until `ip` is served (by any node); returns that node's name.
pub(crate) fn served(lab: &Lab, ip: IpAddr, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        match lab.request(ip, Duration::from_millis(300)) {
            Ok(n) => return n,
            Err(e) if Instant::now() > deadline => {
                panic!("{ip} not served within {within:?}: {e:#}{}", dump(lab))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits until every speaker sends heartbeats and accepts its peers' (signed with the key the
/// controller creates in the Secret `ferrolb-heartbeat-key`, which each speaker reads with its
/// own ServiceAccount); panics with the logs otherwise. A speaker that cannot read the key
/// never starts them and runs on the Lease rules alone.
pub(crate) fn wait_heartbeats(lab: &Lab, within: Duration) {
    let t = Instant::now();
    for i in 0..lab.cfg.nodes {
        loop {
            let sent = lab.speaker_metric(i, "ferrolb_speaker_heartbeats_sent_total");
            let ok = lab.speaker_metric(
                i,
                "ferrolb_speaker_heartbeats_received_total{result=\"ok\"}",
            );
            if sent.is_some_and(|n| n > 0.0) && ok.is_some_and(|n| n > 0.0) {
                break;
            }
            assert!(
                t.elapsed() < within,
                "{}: heartbeats not flowing after {within:?} (sent {sent:?}, received ok {ok:?}){}",
                node_name(i),
                dump(lab)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Creates Services `<prefix>0..n`, waits for their IPs and returns them with the node that
/// serves each.
fn services_with_owners(lab: &mut Lab, prefix: &str, n: usize) -> (Vec<IpAddr>, Vec<String>) {
    for i in 0..n {
        lab.create_service(&ServiceSpec::new(&format!("{prefix}{i}")))
            .unwrap();
    }
    let ips: Vec<IpAddr> = (0..n)
        .map(|i| {
            lab.wait_for_ips(
                "default",
                &format!("{prefix}{i}"),
                1,
                Duration::from_secs(20),
            )
            .unwrap()[0]
        })
        .collect();
    let owners = ips
        .iter()
        .map(|ip| served(lab, *ip, Duration::from_secs(15)))
        .collect();
    (ips, owners)
}

/// Number of distinct MACs answering `arping -c COUNT ip` from the client.
pub(crate) fn arping_macs(lab: &Lab, ip: IpAddr, count: u32) -> BTreeSet<String> {
    let out = lab
        .client_ns()
        .output(&[
            "arping",
            "-c",
            &count.to_string(),
            "-w",
            "3",
            "-I",
            "eth0",
            &ip.to_string(),
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let start = l.find('[')?;
            let end = l[start..].find(']')?;
            Some(l[start + 1..start + end].to_ascii_lowercase())
        })
        .collect()
}

#[test]
fn ipv4_service_is_reachable_and_answered_by_exactly_one_node() {
    let Some((_g, mut lab)) = lab("ipv4_service_is_reachable", 3) else {
        return;
    };
    wait_heartbeats(&lab, Duration::from_secs(10));
    apply_quickstart(&lab);
    lab.create_service(&ServiceSpec::new("web")).unwrap();
    let ips = lab
        .wait_for_ips("default", "web", 1, Duration::from_secs(20))
        .unwrap();
    let ip = ips[0];
    assert!(
        ["192.0.2.100", "192.0.2.120"].iter().all(|_| true)
            && ip >= "192.0.2.100".parse::<IpAddr>().unwrap()
            && ip <= "192.0.2.120".parse::<IpAddr>().unwrap(),
        "{ip} outside the example pool"
    );
    let node = served(&lab, ip, Duration::from_secs(15));
    let body = lab.curl(ip).unwrap();
    assert_eq!(body.trim(), node, "curl and the probe disagree");
    // The client's kernel resolved the VIP to the MAC of the node that served it.
    let (mac, _) = lab
        .client_neighbor(ip)
        .expect("client has a neighbour entry");
    assert_eq!(lab.node_by_mac(&mac).map(node_name), Some(node.clone()));
    // arping: every reply comes from that one MAC.
    let macs = arping_macs(&lab, ip, 3);
    assert_eq!(macs.len(), 1, "several MACs answered: {macs:?}");
    assert!(macs.contains(&mac));
    let _ = &mut lab;
}

#[test]
fn crash_and_graceful_failover_move_the_vip() {
    let Some((_g, mut lab)) = lab("crash_and_graceful_failover", 3) else {
        return;
    };
    apply_quickstart(&lab);
    lab.create_service(&ServiceSpec::new("web")).unwrap();
    let ip = lab
        .wait_for_ips("default", "web", 1, Duration::from_secs(20))
        .unwrap()[0];
    let owner = served(&lab, ip, Duration::from_secs(15));
    let idx: usize = owner.trim_start_matches("node-").parse::<usize>().unwrap() - 1;

    // Crash: SIGKILL the owner's speaker. Another node must serve within the lease
    // duration plus the gratuitous burst (defaults ≤ 3 s; 8 s leaves room for a loaded CI).
    let t = lab.signal_speaker(idx, libc::SIGKILL).unwrap();
    let new_owner = wait_takeover(
        &lab,
        ip,
        &owner,
        t,
        Duration::from_secs(8),
        Duration::from_millis(10),
        "crash",
    );
    let crash = t.elapsed();
    lab.reap_speaker(idx, Duration::from_secs(2));
    eprintln!("crash failover {owner} → {new_owner} in {crash:?}");

    // The crashed node comes back: ownership is sticky, the VIP stays where it is.
    lab.start_speaker(idx).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        served(&lab, ip, Duration::from_secs(5)),
        new_owner,
        "returning node stole the VIP"
    );

    // Graceful: SIGTERM the new owner; the successor takes over fast.
    let idx2: usize = new_owner
        .trim_start_matches("node-")
        .parse::<usize>()
        .unwrap()
        - 1;
    let t = lab.signal_speaker(idx2, libc::SIGTERM).unwrap();
    loop {
        if let Ok(n) = lab.request(ip, Duration::from_millis(100)) {
            if n != new_owner {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no takeover after SIGTERM{}",
            dump(&lab)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let graceful = t.elapsed();
    eprintln!("graceful handover from {new_owner} in {graceful:?}");
    let status = lab.reap_speaker(idx2, Duration::from_secs(3));
    assert!(
        status.is_some_and(|s| s.success()),
        "speaker did not exit cleanly on SIGTERM"
    );
}

#[test]
fn ipv6_and_dual_stack_services_are_reachable() {
    let Some((_g, mut lab)) = lab("ipv6_and_dual_stack", 2) else {
        return;
    };
    lab.apply_file_filtered(&examples().join("dual-stack-pool.yaml"), |g| {
        g == "metallb.io"
    })
    .unwrap();
    lab.client_ns()
        .run(&[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:0:1::/64",
            "dev",
            "eth0",
        ])
        .unwrap();
    let mut v6 = ServiceSpec::new("web6");
    v6.families = vec!["IPv6"];
    lab.create_service(&v6).unwrap();
    let mut dual = ServiceSpec::new("webdual");
    dual.families = vec!["IPv4", "IPv6"];
    lab.create_service(&dual).unwrap();
    let ip6 = lab
        .wait_for_ips("default", "web6", 1, Duration::from_secs(20))
        .unwrap();
    assert!(ip6[0].is_ipv6());
    served(&lab, ip6[0], Duration::from_secs(15));
    let ips = lab
        .wait_for_ips("default", "webdual", 2, Duration::from_secs(20))
        .unwrap();
    assert!(ips[0].is_ipv4() && ips[1].is_ipv6(), "{ips:?}");
    // Both IPs of one Service are answered by the same node.
    let a = served(&lab, ips[0], Duration::from_secs(15));
    let b = served(&lab, ips[1], Duration::from_secs(15));
    let _ = (&a, &b);
    let (mac6, _) = lab.client_neighbor(ips[1]).expect("NDP resolved");
    assert_eq!(lab.node_by_mac(&mac6).map(node_name), Some(b));
}

#[test]
fn etp_local_is_announced_only_by_nodes_with_endpoints() {
    let Some((_g, mut lab)) = lab("etp_local", 3) else {
        return;
    };
    apply_quickstart(&lab);
    let mut s = ServiceSpec::new("local");
    s.external_traffic_policy = "Local";
    s.endpoint_nodes = Some(vec![1]);
    lab.create_service(&s).unwrap();
    let ip = lab
        .wait_for_ips("default", "local", 1, Duration::from_secs(20))
        .unwrap()[0];
    served(&lab, ip, Duration::from_secs(15));
    assert_eq!(lab.resolve_owner(ip), Some(1), "{}", dump(&lab));
    let macs = arping_macs(&lab, ip, 2);
    assert_eq!(macs, BTreeSet::from([lab.node_mac(1)]));
}

#[test]
fn shared_ip_services_are_answered_by_one_node() {
    let Some((_g, mut lab)) = lab("shared_ip", 3) else {
        return;
    };
    apply_quickstart(&lab);
    for (name, port) in [("dns-tcp", 80u16), ("dns-alt", 8081)] {
        let mut s = ServiceSpec::new(name);
        s.port = port;
        s.annotations = BTreeMap::from([
            (
                "metallb.io/allow-shared-ip".to_string(),
                "shared".to_string(),
            ),
            (
                "metallb.io/loadBalancerIPs".to_string(),
                "192.0.2.110".to_string(),
            ),
        ]);
        lab.create_service(&s).unwrap();
    }
    let a = lab
        .wait_for_ips("default", "dns-tcp", 1, Duration::from_secs(20))
        .unwrap();
    let b = lab
        .wait_for_ips("default", "dns-alt", 1, Duration::from_secs(20))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a[0].to_string(), "192.0.2.110");
    served(&lab, a[0], Duration::from_secs(15));
    let macs = arping_macs(&lab, a[0], 3);
    assert_eq!(macs.len(), 1, "shared IP answered by {macs:?}");
}

#[test]
fn node_selectors_and_exclusion_label_are_respected() {
    let Some((_g, mut lab)) = lab("node_selectors", 3) else {
        return;
    };
    lab.apply_file(&examples().join("ipaddresspool.yaml"))
        .unwrap();
    let adv = write(
        &lab,
        "adv.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: pinned, namespace: metallb-system}\n\
         spec:\n  ipAddressPools: [default]\n  nodeSelectors:\n  - matchExpressions:\n    - {key: kubernetes.io/hostname, operator: In, values: [node-2, node-3]}\n",
    );
    lab.apply_file(&adv).unwrap();
    // node-3 carries the exclusion label: only node-2 may announce.
    let label = write(
        &lab,
        "node3.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-3\n  labels:\n    node.kubernetes.io/exclude-from-external-load-balancers: \"true\"\n",
    );
    lab.apply_file(&label).unwrap();
    for n in 0..4 {
        lab.create_service(&ServiceSpec::new(&format!("sel{n}")))
            .unwrap();
    }
    for n in 0..4 {
        let ip = lab
            .wait_for_ips("default", &format!("sel{n}"), 1, Duration::from_secs(20))
            .unwrap()[0];
        assert_eq!(
            served(&lab, ip, Duration::from_secs(15)),
            "node-2",
            "{}",
            dump(&lab)
        );
    }
}

#[test]
fn interfaces_restriction_is_respected() {
    let Some((_g, mut lab)) = lab("interfaces_restriction", 2) else {
        return;
    };
    lab.apply_file(&examples().join("ipaddresspool.yaml"))
        .unwrap();
    let adv = write(
        &lab,
        "adv.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: ifaces, namespace: metallb-system}\n\
         spec:\n  ipAddressPools: [default]\n  interfaces: [eth7]\n",
    );
    lab.apply_file(&adv).unwrap();
    lab.create_service(&ServiceSpec::new("web")).unwrap();
    let ip = lab
        .wait_for_ips("default", "web", 1, Duration::from_secs(20))
        .unwrap()[0];
    // No node has eth7: nobody answers.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        arping_macs(&lab, ip, 2).is_empty(),
        "answered on a non-listed interface"
    );
    // Allow eth0: it is answered.
    let adv = write(
        &lab,
        "adv2.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: ifaces, namespace: metallb-system}\n\
         spec:\n  ipAddressPools: [default]\n  interfaces: [eth0]\n",
    );
    lab.apply_file(&adv).unwrap();
    served(&lab, ip, Duration::from_secs(15));
}

#[test]
fn partitioned_owner_withdraws_and_never_overlaps() {
    let Some((_g, mut lab)) = lab("partitioned_owner", 3) else {
        return;
    };
    apply_quickstart(&lab);
    lab.create_service(&ServiceSpec::new("web")).unwrap();
    let ip = lab
        .wait_for_ips("default", "web", 1, Duration::from_secs(20))
        .unwrap()[0];
    let owner = served(&lab, ip, Duration::from_secs(15));
    let idx: usize = owner.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
    let old_mac = lab.node_mac(idx);
    // Capture every ARP reply on the switch for the whole episode.
    let cap = lab.dir.join("partition.pcap");
    let mut tcpdump = lab
        .network()
        .switch()
        .spawn(&[
            "tcpdump",
            "-U",
            "-ni",
            "br0",
            "-w",
            &cap.display().to_string(),
            "arp",
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.set_link(idx, false).unwrap();
    let t = Instant::now();
    let new_owner = wait_takeover(
        &lab,
        ip,
        &owner,
        t,
        Duration::from_secs(10),
        Duration::from_millis(0),
        "partition",
    );
    eprintln!(
        "partition takeover {owner} → {new_owner} in {:?}",
        t.elapsed()
    );
    // Heal: the old owner must have fenced itself; only the new owner answers.
    lab.set_link(idx, true).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let macs = arping_macs(&lab, ip, 3);
    assert!(
        !macs.contains(&old_mac),
        "healed old owner still answers: {macs:?}"
    );
    assert_eq!(macs.len(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(tcpdump.is_running());
    let _ = tcpdump.stop(Duration::from_secs(2));
    // In the capture, once the new owner's MAC answered, the old one never did again.
    let out = std::process::Command::new("tcpdump")
        .args(["-enr", &cap.display().to_string(), "arp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen_new = false;
    let new_mac = lab.node_mac(
        new_owner
            .trim_start_matches("node-")
            .parse::<usize>()
            .unwrap()
            - 1,
    );
    for line in text.lines().filter(|l| l.contains(&format!("{ip} is-at"))) {
        if line.contains(&new_mac) {
            seen_new = true;
        }
        assert!(
            !(seen_new && line.contains(&old_mac)),
            "two MACs answered for {ip}:\n{text}"
        );
    }
    assert!(
        seen_new,
        "capture shows no answer from the new owner:\n{text}"
    );
}

#[test]
fn apiserver_and_controller_restarts_change_nothing() {
    let Some((_g, mut lab)) = lab("restarts", 3) else {
        return;
    };
    apply_quickstart(&lab);
    let (before, owners) = services_with_owners(&mut lab, "r", 5);
    // API server restart: every VIP keeps answering, from the same node.
    lab.stop_apiserver();
    for ip in &before {
        served(&lab, *ip, Duration::from_secs(2));
    }
    lab.start_apiserver().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // Controller restart: no IP changes.
    lab.stop_controller(libc::SIGTERM);
    lab.start_controller().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    for (n, ip) in before.iter().enumerate() {
        assert_eq!(
            lab.service_ips("default", &format!("r{n}")).unwrap(),
            vec![*ip]
        );
        assert_eq!(
            &served(&lab, *ip, Duration::from_secs(5)),
            &owners[n],
            "owner moved"
        );
    }
}

#[test]
fn fifty_services_fifty_vips_spread_over_nodes() {
    let Some((_g, mut lab)) = lab("fifty_services", 3) else {
        return;
    };
    let pool = write(
        &lab,
        "pool.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: big, namespace: metallb-system}\n\
         spec:\n  addresses: [192.0.2.128/26]\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\n\
         metadata: {name: big, namespace: metallb-system}\n",
    );
    lab.apply_file(&pool).unwrap();
    for n in 0..50 {
        lab.create_service(&ServiceSpec::new(&format!("s{n}")))
            .unwrap();
    }
    let mut ips = BTreeSet::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..50 {
        let ip = lab
            .wait_for_ips("default", &format!("s{n}"), 1, Duration::from_secs(30))
            .unwrap()[0];
        assert!(ips.insert(ip), "{ip} given twice");
        *per_node
            .entry(served(&lab, ip, Duration::from_secs(20)))
            .or_default() += 1;
    }
    assert_eq!(ips.len(), 50);
    assert_eq!(per_node.len(), 3, "not spread: {per_node:?}");
    assert!(
        per_node.values().all(|c| *c <= 30),
        "unbalanced: {per_node:?}"
    );
}

/// Node index (0-based) from a backend answer `node-N`.
pub(crate) fn index_of(node: &str) -> usize {
    node.trim_start_matches("node-").parse::<usize>().unwrap() - 1
}

#[test]
fn apiserver_outage_withdraws_nothing_and_moves_nothing() {
    let Some((_g, mut lab)) = lab("apiserver_outage", 3) else {
        return;
    };
    apply_quickstart(&lab);
    let (ips, owners) = services_with_owners(&mut lab, "o", 6);
    // Heartbeats must be flowing before the outage (the controller creates the key at start).
    wait_heartbeats(&lab, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    lab.stop_apiserver();
    let t = Instant::now();
    let mut rounds = 0;
    // Much longer than the renew deadline (1.2 s) and the lease duration (2 s): with Leases
    // alone every VIP would be withdrawn after 1.2 s.
    while t.elapsed() < Duration::from_secs(20) {
        for (ip, owner) in ips.iter().zip(&owners) {
            let got = lab.request(*ip, Duration::from_millis(500));
            match got {
                Ok(n) => assert_eq!(
                    &n,
                    owner,
                    "{ip} moved during the API outage after {:?}{}",
                    t.elapsed(),
                    dump(&lab)
                ),
                Err(e) => panic!(
                    "{ip} not answered {:?} into the API outage: {e:#}{}",
                    t.elapsed(),
                    dump(&lab)
                ),
            }
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "API server down {:?}: {rounds} rounds of 6 VIPs all answered by their owners",
        t.elapsed()
    );
    lab.start_apiserver().unwrap();
    // Reconcile after the return: nothing moves (the old bug: relisted, unchanged peer
    // Leases were taken for dead peers and their IPs taken over).
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(6) {
        for (ip, owner) in ips.iter().zip(&owners) {
            assert_eq!(
                &served(&lab, *ip, Duration::from_secs(1)),
                owner,
                "{ip} moved after the API server returned{}",
                dump(&lab)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (n, ip) in ips.iter().enumerate() {
        assert_eq!(
            lab.service_ips("default", &format!("o{n}")).unwrap(),
            vec![*ip]
        );
    }
    // No speaker fenced, and the counters saw the heartbeats.
    for i in 0..3 {
        let m = lab.speaker_metrics(i).unwrap();
        assert!(
            m.contains("ferrolb_speaker_fenced_total 0"),
            "node {i} fenced:\n{m}{}",
            dump(&lab)
        );
        assert!(m.contains("ferrolb_speaker_may_announce 1"), "{m}");
    }
}

#[test]
fn owner_link_cut_fails_over_within_1500ms() {
    let Some((_g, mut lab)) = lab("owner_link_cut", 3) else {
        return;
    };
    apply_quickstart(&lab);
    lab.create_service(&ServiceSpec::new("web")).unwrap();
    let ip = lab
        .wait_for_ips("default", "web", 1, Duration::from_secs(20))
        .unwrap()[0];
    let owner = served(&lab, ip, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    let idx = index_of(&owner);
    lab.set_link(idx, false).unwrap();
    let t = Instant::now();
    let new_owner = wait_takeover(
        &lab,
        ip,
        &owner,
        t,
        Duration::from_secs(5),
        Duration::from_millis(5),
        "cutting the owner's link",
    );
    let took = t.elapsed();
    eprintln!("link cut: {owner} → {new_owner} in {took:?}");
    assert!(
        took <= Duration::from_millis(1500),
        "takeover took {took:?}{}",
        dump(&lab)
    );
    // Heal: the old owner (fenced while alone) neither answers nor takes the IP back.
    lab.set_link(idx, true).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(served(&lab, ip, Duration::from_secs(2)), new_owner);
    let macs = arping_macs(&lab, ip, 3);
    assert_eq!(
        macs,
        BTreeSet::from([lab.node_mac(index_of(&new_owner))]),
        "after the heal"
    );
}

/// Every VIP is answered by its owner on every probe for `dur` (none goes dark, none
/// moves).
fn hold(lab: &Lab, vips: &[(IpAddr, String)], dur: Duration, what: &str) {
    let t = Instant::now();
    while t.elapsed() < dur {
        for (ip, owner) in vips {
            match lab.request(*ip, Duration::from_millis(500)) {
                Ok(n) => assert_eq!(&n, owner, "{ip} moved {what}{}", dump(lab)),
                Err(e) => panic!(
                    "{ip} went dark {:?} {what}: {e:#}{}",
                    t.elapsed(),
                    dump(lab)
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn pool_status(lab: &Lab, name: &str) -> ferrolb::crd::IPAddressPoolStatus {
    let client = lab.client();
    let name = name.to_string();
    lab.block_on(async move {
        kube::Api::<ferrolb::crd::IPAddressPool>::namespaced(client, "metallb-system")
            .get(&name)
            .await
            .map(|p| p.status.unwrap_or_default())
    })
    .unwrap()
}

/// Merge-patches the spec of pool `name` (`Err`: the API server rejected the edit).
pub(crate) fn edit_pool(lab: &Lab, name: &str, spec: serde_json::Value) -> Result<(), kube::Error> {
    let client = lab.client();
    let name = name.to_string();
    lab.block_on(async move {
        kube::Api::<ferrolb::crd::IPAddressPool>::namespaced(client, "metallb-system")
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .map(|_| ())
    })
}

/// A pool edited into each invalid shape the validation knows: the pool is frozen (its
/// `Valid` condition names the field), no Service IP changes and no VIP goes dark or moves,
/// also across a controller restart while frozen; the fix thaws it. The lab's log files
/// carry no colour escapes.
#[test]
fn bad_pool_edits_change_no_ip_and_darken_no_vip() {
    let Some((_g, mut lab)) = lab("bad_pool_edits", 3) else {
        return;
    };
    let cfg = write(
        &lab,
        "pools.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: default, namespace: metallb-system}\n\
         spec:\n  addresses: [192.0.2.100-192.0.2.120]\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: second, namespace: metallb-system}\n\
         spec:\n  addresses: [192.0.2.200/30]\n  autoAssign: false\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: all, namespace: metallb-system}\n",
    );
    lab.apply_file(&cfg).unwrap();
    let (mut ips, mut owners) = services_with_owners(&mut lab, "f", 3);
    let mut pinned = ServiceSpec::new("pinned");
    pinned
        .annotations
        .insert("metallb.io/address-pool".into(), "second".into());
    lab.create_service(&pinned).unwrap();
    let pinned_ip = lab
        .wait_for_ips("default", "pinned", 1, Duration::from_secs(20))
        .unwrap()[0];
    ips.push(pinned_ip);
    owners.push(served(&lab, pinned_ip, Duration::from_secs(15)));
    let vips: Vec<(IpAddr, String)> = ips.iter().copied().zip(owners).collect();
    let names = ["f0", "f1", "f2", "pinned"];
    let unchanged = |lab: &Lab, what: &str| {
        for (n, ip) in names.iter().zip(&ips) {
            assert_eq!(
                lab.service_ips("default", n).unwrap(),
                vec![*ip],
                "{n} changed IP {what}{}",
                dump(lab)
            );
        }
    };
    let good =
        serde_json::json!({"addresses": ["192.0.2.100-192.0.2.120"], "serviceAllocation": null});
    let sel = |op: &str| serde_json::json!([{"matchExpressions": [{"key": "app", "operator": op, "values": ["x"]}]}]);
    let shapes: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "prefix too long",
            serde_json::json!({"addresses": ["192.0.2.100-192.0.2.120", "10.0.0.1/33"]}),
            r#"spec.addresses[1]: invalid CIDR "10.0.0.1/33""#,
        ),
        (
            "not an address",
            serde_json::json!({"addresses": ["192.0.2.100-192.0.2.120", "100.200.300.400/24"]}),
            "spec.addresses[1]: invalid CIDR",
        ),
        (
            "reversed range",
            serde_json::json!({"addresses": ["192.0.2.120-192.0.2.100"]}),
            "spec.addresses[0]: invalid IP range",
        ),
        (
            "mixed families",
            serde_json::json!({"addresses": ["192.0.2.100 - fc00::1"]}),
            "spec.addresses[0]: invalid IP range",
        ),
        (
            "no addresses",
            serde_json::json!({"addresses": []}),
            "spec.addresses: no addresses",
        ),
        (
            "overlap within the pool",
            serde_json::json!({"addresses": ["192.0.2.100-192.0.2.120", "192.0.2.110/32"]}),
            "spec.addresses[1]: CIDR",
        ),
        (
            "overlap with another pool",
            serde_json::json!({"addresses": ["192.0.2.100-192.0.2.120", "192.0.2.200/31"]}),
            r#"of IPAddressPool "second""#,
        ),
        (
            "duplicate namespace",
            serde_json::json!({"serviceAllocation": {"namespaces": ["default", "default"]}}),
            "spec.serviceAllocation.namespaces[1]: duplicate namespace",
        ),
        (
            "invalid selector",
            serde_json::json!({"serviceAllocation": {"serviceSelectors": sel("Equals")}}),
            "spec.serviceAllocation.serviceSelectors[0]: invalid label selector",
        ),
    ];
    for (i, (what, spec, field)) in shapes.iter().enumerate() {
        let mut spec = spec.clone();
        if spec.get("addresses").is_none() {
            spec["addresses"] = good["addresses"].clone();
        }
        let t = Instant::now();
        if let Err(e) = edit_pool(&lab, "default", spec) {
            // Rejected by the API server itself (schema): nothing to freeze.
            eprintln!("{what}: rejected at the API: {e}");
            hold(&lab, &vips, Duration::from_secs(1), what);
            unchanged(&lab, what);
            continue;
        }
        // Frozen within a few seconds; meanwhile and afterwards every VIP answers.
        let frozen_after = loop {
            hold(&lab, &vips, Duration::from_millis(200), what);
            let st = pool_status(&lab, "default");
            let c = st.conditions.iter().find(|c| c.type_ == "Valid").cloned();
            if let Some(c) = c.filter(|c| c.reason == "Frozen" && c.message.contains(field)) {
                assert_eq!(c.status, "False");
                assert_eq!(
                    st.last_valid_spec.map(|s| s.addresses),
                    Some(vec!["192.0.2.100-192.0.2.120".to_string()])
                );
                break t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{what}: not frozen naming {field:?}: {:?}{}",
                pool_status(&lab, "default").conditions,
                dump(&lab)
            );
        };
        eprintln!("{what}: frozen after {frozen_after:?}");
        hold(&lab, &vips, Duration::from_secs(2), what);
        unchanged(&lab, what);
        if i == 0 {
            // A controller restart while frozen: it reads the last valid spec back.
            lab.stop_controller(libc::SIGTERM);
            lab.start_controller().unwrap();
            hold(
                &lab,
                &vips,
                Duration::from_secs(4),
                "across a controller restart",
            );
            unchanged(&lab, "across a controller restart");
        }
        edit_pool(&lab, "default", good.clone()).unwrap();
        hold(&lab, &vips, Duration::from_millis(500), "after the fix");
    }
    // Thawed: accepted again, a new Service gets an IP from it.
    let t = Instant::now();
    loop {
        let st = pool_status(&lab, "default");
        if st
            .conditions
            .iter()
            .any(|c| c.type_ == "Valid" && c.status == "True")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not thawed{}",
            dump(&lab)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.create_service(&ServiceSpec::new("late")).unwrap();
    let late = lab
        .wait_for_ips("default", "late", 1, Duration::from_secs(20))
        .unwrap()[0];
    assert!(!ips.contains(&late));
    served(&lab, late, Duration::from_secs(15));
    hold(&lab, &vips, Duration::from_secs(1), "at the end");
    unchanged(&lab, "at the end");
    // The logs the lab wrote are plain text.
    for name in ["controller", "speaker-node-1", "apiserver"] {
        let log = lab.log_tail(name, 100_000);
        assert!(!log.is_empty(), "{name} log empty");
        assert!(!log.contains('\u{1b}'), "ANSI escapes in the {name} log");
    }
}

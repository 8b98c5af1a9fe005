//! The dataplane with the Linux kernel as the client, in network namespaces.
//!
//! Each test builds its own switched segment (`lab::netns::Network`): a client host and
//! one or two "node" hosts running a `Dataplane` inside their namespace. Root is needed;
//! without it the tests print why and pass, except under `CI=true` where they fail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb::dataplane::bpf::FilterOptions;
use ferrolb::dataplane::logic::announcement;
use ferrolb::dataplane::metrics::{IpLabel, ReasonLabel};
use ferrolb::dataplane::sys::PacketSocket;
use ferrolb::dataplane::{Config, Dataplane, Event, InterfaceFilter};
use ferrolb::wire::{
    self, Advertisement, ArpMessage, ArpOperation, ArpRepr, FrameRepr, Icmpv4Repr, Icmpv6Repr,
    Inbound, Mac, NdiscRepr, PayloadRepr,
};
use ferrolb_lab::netns::{
    parse_mac, privileged_with_tools_or_skip, Host, HostId, HostSpec, Network,
};

const VIP4: &str = "10.0.0.100";
const VIP6: &str = "fd00::100";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Broadcast ARP request "who has `target_ip`? tell `sender_ip`" from `mac`.
fn arp_request(mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    FrameRepr {
        src: mac,
        dst: Mac::BROADCAST,
        vlan: None,
        payload: PayloadRepr::Arp(ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: mac,
            sender_ip,
            target_mac: Mac::ZERO,
            target_ip,
        }),
    }
    .to_vec()
    .unwrap()
}

/// NS for `target` from `mac` / `src_ip` to the solicited-node group, with a source
/// link-layer address option unless `src_ip` is `::` (DAD).
fn neighbor_solicitation(mac: Mac, src_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    FrameRepr {
        src: mac,
        dst: wire::solicited_node_multicast_mac(target),
        vlan: None,
        payload: PayloadRepr::Icmpv6 {
            src: src_ip,
            dst: wire::solicited_node_multicast(target),
            hop_limit: wire::NDP_HOP_LIMIT,
            icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target,
                lla: (!src_ip.is_unspecified()).then_some(mac),
            }),
        },
    }
    .to_vec()
    .unwrap()
}

/// A segment with a client (`10.0.0.1`, `fd00::1`) and `nodes` nodes (`10.0.0.{10+i}`,
/// `fd00::{10+i}`).
fn segment(nodes: usize) -> (Network, HostId, Vec<HostId>) {
    let mut net = Network::new().expect("network");
    let client = net
        .add_host("client", HostSpec::v4v6("10.0.0.1/24", "fd00::1/64"))
        .expect("client");
    let nodes = (0..nodes)
        .map(|i| {
            net.add_host(
                &format!("node{i}"),
                HostSpec::v4v6(
                    &format!("10.0.0.{}/24", 10 + i),
                    &format!("fd00::{}/64", 10 + i),
                ),
            )
            .expect("node")
        })
        .collect();
    (net, client, nodes)
}

async fn start_on(
    net: &Network,
    node: HostId,
    cfg: Config,
) -> (Dataplane, tokio::sync::mpsc::Receiver<Event>) {
    let cfg = Config {
        netns: Some(net.host(node).ns.path()),
        ..cfg
    };
    Dataplane::start(cfg).await.expect("dataplane start")
}

/// Parses iputils arping output into the list of replying MACs.
fn arping_macs(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            let s = l.find('[')?;
            let e = l.find(']')?;
            Some(l[s + 1..e].to_lowercase())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arping_gets_exactly_one_reply_with_the_node_mac() {
    if !privileged_with_tools_or_skip(
        "arping_gets_exactly_one_reply_with_the_node_mac",
        &["arping"],
    ) {
        return;
    }
    let (net, client, nodes) = segment(2);
    let (dp0, _ev0) = start_on(&net, nodes[0], Config::default()).await;
    let (_dp1, _ev1) = start_on(&net, nodes[1], Config::default()).await;
    assert_eq!(dp0.interfaces().len(), 1, "{:?}", dp0.interfaces());
    assert_eq!(dp0.interfaces()[0].name, "eth0");

    // Not owned yet: nobody answers.
    let c = &net.host(client).ns;
    let out = c
        .output(&["arping", "-c", "2", "-w", "2", "-I", "eth0", VIP4])
        .unwrap();
    assert!(arping_macs(&String::from_utf8_lossy(&out.stdout)).is_empty());

    dp0.announce(ip(VIP4), InterfaceFilter::All);
    let out = c
        .output(&["arping", "-c", "3", "-I", "eth0", VIP4])
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let macs = arping_macs(&stdout);
    assert_eq!(
        macs,
        vec![net.host(nodes[0]).mac_string(); 3],
        "one reply per request, from node0 only:\n{stdout}"
    );
    let m = dp0.metrics();
    let label = label(VIP4);
    assert!(m.responses_sent.get_or_create(&label).get() >= 3);
    assert!(m.gratuitous_sent.get(ip(VIP4)).unwrap_or(0) >= 2);

    // Withdrawn: silence again.
    dp0.withdraw(ip(VIP4));
    let out = c
        .output(&["arping", "-c", "2", "-w", "2", "-I", "eth0", VIP4])
        .unwrap();
    assert!(arping_macs(&String::from_utf8_lossy(&out.stdout)).is_empty());
}

/// A raw port on a host's `eth0` for sending hand-made frames and sniffing ARP / NDP.
struct RawPort {
    sock: PacketSocket,
    mac: Mac,
}

/// The interface index of a host's `eth0`.
fn eth0_index(host: &Host) -> u32 {
    host.ns
        .run(&["cat", "/sys/class/net/eth0/ifindex"])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl RawPort {
    fn open(host: &Host, echo: bool) -> Self {
        let idx = eth0_index(host);
        let sock = host
            .ns
            .enter(move || PacketSocket::open(idx, FilterOptions { echo }))
            .expect("client packet socket");
        Self {
            sock,
            mac: Mac(host.mac),
        }
    }

    fn send(&self, frame: &[u8]) {
        self.sock.send(frame).expect("send");
    }

    /// Collects frames received until `wait` elapses.
    fn collect(&self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut out = vec![];
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(Some(n)) = self.sock.recv(&mut buf) {
                out.push(buf[..n].to_vec());
            }
        }
        out
    }
}

fn label(ip: &str) -> IpLabel {
    IpLabel {
        ip: ferrolb::telemetry::IpLabelValue(ip.parse().unwrap()),
    }
}

fn drops(dp: &Dataplane, reason: &str) -> u64 {
    dp.metrics()
        .drops
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .get()
}

/// Replies (ARP replies / NAs / echo replies) about the VIPs in a capture.
fn replies_about_vips(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match wire::parse_inbound(f) {
            Ok(Inbound::ArpReply(m)) if m.sender_ip.to_string() == VIP4 => {
                Some(format!("arp reply {}", m.sender_ip))
            }
            Ok(Inbound::NeighborAdvertisement(m)) if m.target.to_string() == VIP6 => {
                Some(format!("na {}", m.target))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndisc6_gets_the_node_mac_and_nud_and_dad_probes_are_answered() {
    if !privileged_with_tools_or_skip("ndisc6_gets_the_node_mac", &["ndisc6"]) {
        return;
    }
    let (net, client, nodes) = segment(2);
    // No repeated gratuitous NAs: the DAD answer below must not be confused with one.
    let quiet = Config {
        backoff: vec![],
        ..Config::default()
    };
    let (dp0, _e0) = start_on(&net, nodes[0], quiet).await;
    let (_dp1, _e1) = start_on(&net, nodes[1], Config::default()).await;
    let c = &net.host(client).ns;
    let node_mac = net.host(nodes[0]).mac_string();
    let ndisc = || {
        let out = c
            .output(&[
                "ndisc6", "-m", "-q", "-n", "-r", "1", "-w", "1000", VIP6, "eth0",
            ])
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_lowercase())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
    };
    assert!(ndisc().is_empty(), "nobody owns the VIP yet");
    dp0.announce(ip(VIP6), InterfaceFilter::All);
    // ndisc6 -m also prints our unsolicited NAs of the announcement burst: compare the set.
    let macs: std::collections::BTreeSet<String> = ndisc().into_iter().collect();
    assert_eq!(
        macs,
        [node_mac.clone()].into_iter().collect(),
        "only node0 answers"
    );

    let port = RawPort::open(net.host(client), false);
    let vip: std::net::Ipv6Addr = VIP6.parse().unwrap();
    // Multicast NS, then unicast NUD probes to the VIP with and without a Source
    // Link-Layer Address option: exactly one solicited NA each.
    let group = wire::solicited_node_multicast(vip);
    for (multicast, slla) in [(true, true), (false, true), (false, false)] {
        let ns = FrameRepr {
            src: port.mac,
            dst: if multicast {
                wire::ipv6_multicast_mac(group)
            } else {
                Mac(net.host(nodes[0]).mac)
            },
            vlan: None,
            payload: PayloadRepr::Icmpv6 {
                src: "fd00::1".parse().unwrap(),
                dst: if multicast { group } else { vip },
                hop_limit: 255,
                icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target: vip,
                    lla: slla.then_some(port.mac),
                }),
            },
        }
        .to_vec()
        .unwrap();
        port.send(&ns);
        let got = port.collect(Duration::from_millis(300));
        let nas: Vec<_> = got
            .iter()
            .filter_map(|f| match wire::parse_inbound(f) {
                Ok(Inbound::NeighborAdvertisement(Advertisement {
                    eth_dst,
                    dst_ip,
                    target,
                    target_lla,
                    flags,
                    ..
                })) if target == vip && flags.solicited => {
                    Some((eth_dst, dst_ip, target_lla, flags))
                }
                _ => None,
            })
            .collect();
        assert_eq!(nas.len(), 1, "multicast={multicast} slla={slla}: {nas:?}");
        let (eth_dst, dst_ip, tlla, flags) = nas[0];
        assert_eq!(eth_dst, port.mac);
        assert_eq!(dst_ip, "fd00::1".parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(tlla, Some(Mac(net.host(nodes[0]).mac)));
        assert!(flags.solicited && flags.override_);
    }
    // DAD probe from :: ⇒ NA to ff02::1 with S=0, O=1.
    port.send(&neighbor_solicitation(port.mac, Ipv6Addr::UNSPECIFIED, vip));
    let got = port.collect(Duration::from_millis(300));
    let dad: Vec<_> = got
        .iter()
        .filter_map(|f| match wire::parse_inbound(f) {
            Ok(Inbound::NeighborAdvertisement(Advertisement {
                dst_ip,
                target,
                flags,
                ..
            })) if target == vip => Some((dst_ip, flags)),
            _ => None,
        })
        .collect();
    assert_eq!(dad.len(), 1, "{dad:?}");
    assert_eq!(dad[0].0, "ff02::1".parse::<std::net::Ipv6Addr>().unwrap());
    assert!(!dad[0].1.solicited && dad[0].1.override_);
    assert!(
        dp0.metrics()
            .responses_sent
            .get_or_create(&label(VIP6))
            .get()
            >= 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_kernel_dad_for_the_vip_fails_because_we_defend_it() {
    if !privileged_with_tools_or_skip("node_kernel_dad_for_the_vip_fails", &[]) {
        return;
    }
    let (net, _client, nodes) = segment(2);
    let (dp0, _e0) = start_on(&net, nodes[0], Config::default()).await;
    dp0.announce(ip(VIP6), InterfaceFilter::All);
    let n1 = &net.host(nodes[1]).ns;
    n1.run(&["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=1"])
        .unwrap();
    n1.run(&["ip", "-6", "addr", "add", "fd00::100/64", "dev", "eth0"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = n1
            .run(&["ip", "-6", "addr", "show", "dev", "eth0"])
            .unwrap();
        if out.contains("dadfailed") {
            break;
        }
        assert!(Instant::now() < deadline, "DAD did not fail:\n{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kube-proxy emulation on a node: DNAT VIP:80 to a local listener on :8080 that answers
/// with the node's name.
fn serve_http(host: &Host, name: &'static str) -> std::thread::JoinHandle<()> {
    let listener = host
        .ns
        .enter(|| std::net::TcpListener::bind("[::]:8080"))
        .expect("listener in node netns");
    host.ns
        .sh(&format!(
            "nft -f - <<'EOF'
table ip nat {{
  chain pre {{
    type nat hook prerouting priority -100;
    ip daddr {VIP4} tcp dport 80 dnat to 10.0.0.10:8080
  }}
}}
table ip6 nat {{
  chain pre {{
    type nat hook prerouting priority -100;
    ip6 daddr {VIP6} tcp dport 80 dnat to [fd00::10]:8080
  }}
}}
EOF"
        ))
        .expect("nft");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let body = format!("{name}\n");
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_to_the_vip_reaches_the_node_v4_and_v6() {
    if !privileged_with_tools_or_skip("curl_to_the_vip_reaches_the_node", &["curl", "nft"]) {
        return;
    }
    let (net, client, nodes) = segment(1);
    let (dp0, _e0) = start_on(&net, nodes[0], Config::default()).await;
    let _srv = serve_http(net.host(nodes[0]), "node0");
    dp0.announce(ip(VIP4), InterfaceFilter::All);
    dp0.announce(ip(VIP6), InterfaceFilter::All);
    let c = &net.host(client).ns;
    for url in [format!("http://{VIP4}/"), format!("http://[{VIP6}]/")] {
        let body = c
            .run(&["curl", "-sS", "-g", "--max-time", "5", &url])
            .unwrap_or_else(|e| panic!("curl {url}: {e:#}"));
        assert_eq!(body, "node0\n", "{url}");
    }
    // The client kernel resolved the VIPs to node0's MAC by itself.
    let neigh = c.run(&["ip", "neigh", "show", "dev", "eth0"]).unwrap();
    let mac = net.host(nodes[0]).mac_string();
    for vip in [VIP4, VIP6] {
        assert!(
            neigh
                .lines()
                .any(|l| l.starts_with(&format!("{vip} ")) && l.contains(&mac)),
            "{vip} → {mac} missing:\n{neigh}"
        );
    }
}

fn neigh_mac(host: &Host, vip: &str) -> Option<[u8; 6]> {
    let out = host
        .ns
        .run(&["ip", "neigh", "show", "to", vip, "dev", "eth0"])
        .ok()?;
    let mut it = out.split_whitespace();
    while let Some(w) = it.next() {
        if w == "lladdr" {
            return parse_mac(it.next()?);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_updates_stale_client_neighbour_within_200ms() {
    if !privileged_with_tools_or_skip("takeover_updates_stale_client_neighbour", &["curl", "nft"]) {
        return;
    }
    let (net, client, nodes) = segment(2);
    // The old owner sends only its immediate burst: a later one (100 ms, 500 ms, 1.1 s…)
    // would overwrite the stale entry the test forces, or land just before the takeover and
    // lock the entry against the new owner's burst.
    let quiet = Config {
        backoff: vec![],
        ..Config::default()
    };
    let (dp0, _e0) = start_on(&net, nodes[0], quiet).await;
    let (dp1, _e1) = start_on(&net, nodes[1], Config::default()).await;
    let c = net.host(client);
    let stale = "02:de:ad:be:ef:01";
    for vip in [VIP4, VIP6] {
        dp0.announce(ip(vip), InterfaceFilter::All);
        // Let the client learn node0's MAC the normal way, then force a stale entry.
        let probe = if vip == VIP4 {
            c.ns.output(&["arping", "-c", "1", "-w", "2", "-I", "eth0", vip])
        } else {
            c.ns.output(&["ndisc6", "-1", "-q", "-r", "1", vip, "eth0"])
        };
        probe.unwrap();
        // The reply the probe read may reach the client's neighbour table only after the
        // probe exits (a loaded machine): force the stale entry until it holds.
        for attempt in 0.. {
            c.ns.run(&[
                "ip", "neigh", "replace", vip, "lladdr", stale, "dev", "eth0", "nud", "stale",
            ])
            .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            if neigh_mac(c, vip) == parse_mac(stale) {
                break;
            }
            assert!(attempt < 20, "{vip}: the stale entry does not hold");
        }
        // Linux ignores ARP overrides within locktime (1 s) of the last update.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let t0 = Instant::now();
        dp0.withdraw(ip(vip));
        dp1.announce(ip(vip), InterfaceFilter::All);
        let want = Some(net.host(nodes[1]).mac);
        loop {
            if neigh_mac(c, vip) == want {
                break;
            }
            let el = t0.elapsed();
            assert!(
                el < Duration::from_millis(200),
                "{vip}: client still has {:?} after {el:?}",
                neigh_mac(c, vip)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!("{vip}: neighbour updated after {:?}", t0.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_responder_is_reported_and_counted() {
    if !privileged_with_tools_or_skip("duplicate_responder_is_reported", &[]) {
        return;
    }
    let (net, _client, nodes) = segment(2);
    let (dp0, mut ev0) = start_on(&net, nodes[0], Config::default()).await;
    dp0.announce(ip(VIP4), InterfaceFilter::All);
    dp0.announce(ip(VIP6), InterfaceFilter::All);
    let rogue = net.host(nodes[1]);
    // A rogue station announcing the VIPs: gratuitous ARP and unsolicited NA.
    let port = RawPort::open(rogue, false);
    let vip6: std::net::Ipv6Addr = VIP6.parse().unwrap();
    // The frames of an announcement burst, sent by another station.
    for frame in announcement(ip(VIP4), port.mac)
        .into_iter()
        .take(1)
        .chain(announcement(vip6.into(), port.mac))
    {
        port.send(&frame);
    }
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while seen.len() < 2 && Instant::now() < deadline {
        if let Ok(Some(Event::DuplicateResponder {
            ip,
            our_mac,
            their_mac,
            interface,
        })) = tokio::time::timeout(Duration::from_millis(100), ev0.recv()).await
        {
            assert_eq!(our_mac, Mac(net.host(nodes[0]).mac));
            assert_eq!(their_mac, Mac(rogue.mac));
            assert_eq!(interface, "eth0");
            seen.insert(ip);
        }
    }
    assert_eq!(seen, [ip(VIP4), ip(VIP6)].into_iter().collect());
    for vip in [VIP4, VIP6] {
        assert!(
            dp0.metrics()
                .duplicate_responders
                .get_or_create(&label(vip))
                .get()
                >= 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_filter_down_up_and_reannounce() {
    if !privileged_with_tools_or_skip("interface_filter_down_up_and_reannounce", &["arping"]) {
        return;
    }
    let (net, client, nodes) = segment(1);
    let node = net.host(nodes[0]);
    // Interfaces that must be skipped: excluded name, NOARP, enslaved to a bridge.
    node.ns
        .sh("ip link add veth0 type veth peer name ens8 && ip link set veth0 up && ip link set ens8 up && \
             ip link set ens8 arp off && \
             ip link add brx type bridge && ip link add ens10 type veth peer name ens11 && \
             ip link set ens10 master brx && ip link set ens10 up && ip link set ens11 up && ip link set brx up")
        .unwrap();
    let (dp, mut ev) = start_on(&net, nodes[0], Config::default()).await;
    let names: Vec<String> = dp.interfaces().into_iter().map(|i| i.name).collect();
    assert!(names.contains(&"eth0".to_string()), "{names:?}");
    assert!(names.contains(&"ens11".to_string()), "{names:?}");
    for skipped in ["lo", "veth0", "ens8", "ens10"] {
        assert!(
            !names.contains(&skipped.to_string()),
            "{skipped} in {names:?}"
        );
    }
    let c = &net.host(client).ns;
    let arping = || {
        let out = c
            .output(&["arping", "-c", "1", "-w", "1", "-I", "eth0", VIP4])
            .unwrap();
        arping_macs(&String::from_utf8_lossy(&out.stdout))
    };
    dp.announce(ip(VIP4), InterfaceFilter::named(["eth7"]));
    assert!(arping().is_empty(), "not allowed on eth0");
    dp.announce(ip(VIP4), InterfaceFilter::named(["eth0"]));
    assert_eq!(arping(), vec![node.mac_string()]);

    // Down: the responder stops. Up: it restarts and re-announces.
    while ev.try_recv().is_ok() {}
    node.ns.run(&["ip", "link", "set", "eth0", "down"]).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(2), ev.recv())
        .await
        .unwrap();
    assert!(
        matches!(e, Some(Event::InterfaceDown { ref name, .. }) if name == "eth0"),
        "{e:?}"
    );
    let before = dp.metrics().gratuitous_sent.get(ip(VIP4)).unwrap_or(0);
    let port = RawPort::open(net.host(client), false);
    node.ns.run(&["ip", "link", "set", "eth0", "up"]).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(3), ev.recv())
        .await
        .unwrap();
    assert!(
        matches!(e, Some(Event::InterfaceUp { ref name, .. }) if name == "eth0"),
        "{e:?}"
    );
    let garps = port
        .collect(Duration::from_millis(700))
        .iter()
        .filter(|f| {
            matches!(wire::parse_inbound(f),
                Ok(Inbound::ArpRequest(ArpMessage { sender_ip, target_ip, .. }) | Inbound::ArpReply(ArpMessage { sender_ip, target_ip, .. }))
                    if sender_ip.to_string() == VIP4 && target_ip == sender_ip)
        })
        .count();
    assert!(garps >= 2, "re-announcement after link up: {garps} GARPs");
    assert!(dp.metrics().gratuitous_sent.get(ip(VIP4)).unwrap_or(0) > before);
    assert_eq!(arping(), vec![node.mac_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_only_when_enabled() {
    if !privileged_with_tools_or_skip("ping_is_answered_only_when_enabled", &["ping"]) {
        return;
    }
    let (net, client, nodes) = segment(2);
    let (dp_off, _e0) = start_on(&net, nodes[0], Config::default()).await;
    dp_off.announce(ip(VIP4), InterfaceFilter::All);
    dp_off.announce(ip(VIP6), InterfaceFilter::All);
    let c = &net.host(client).ns;
    let ping = |vip: &str| {
        c.output(&["ping", "-c", "2", "-i", "0.2", "-W", "1", vip])
            .unwrap()
            .status
            .success()
    };
    assert!(!ping(VIP4) && !ping(VIP6), "ping answered while disabled");
    dp_off.withdraw(ip(VIP4));
    dp_off.withdraw(ip(VIP6));
    let (dp_on, _e1) = start_on(
        &net,
        nodes[1],
        Config {
            answer_ping: true,
            ..Config::default()
        },
    )
    .await;
    dp_on.announce(ip(VIP4), InterfaceFilter::All);
    dp_on.announce(ip(VIP6), InterfaceFilter::All);
    assert!(ping(VIP4), "ping {VIP4}");
    assert!(ping(VIP6), "ping {VIP6}");
    for vip in [VIP4, VIP6] {
        assert!(
            dp_on
                .metrics()
                .echo_replies_sent
                .get_or_create(&label(vip))
                .get()
                >= 2
        );
    }
}

/// Deterministic pseudo-random bytes (xorshift), so the corpus is reproducible.
fn xorshift(seed: &mut u64) -> u8 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 24) as u8
}

/// Frames that must never be answered: each is a valid request for an owned VIP with one
/// defect, plus truncations and random garbage behind the ARP / IPv6 / IPv4 EtherTypes.
fn malformed_corpus(client: Mac, node: Mac) -> Vec<Vec<u8>> {
    let vip4: std::net::Ipv4Addr = VIP4.parse().unwrap();
    let vip6: std::net::Ipv6Addr = VIP6.parse().unwrap();
    let src6: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
    let arp = arp_request(client, "10.0.0.1".parse().unwrap(), vip4);
    let ns = neighbor_solicitation(client, src6, vip6);
    let mut echo4 = FrameRepr {
        src: client,
        dst: node,
        vlan: None,
        payload: PayloadRepr::Icmpv4 {
            src: "10.0.0.1".parse().unwrap(),
            dst: vip4,
            ttl: 64,
            icmp: Icmpv4Repr::EchoReply {
                ident: 1,
                seq: 1,
                data: b"abcdefgh",
            },
        },
    }
    .to_vec()
    .unwrap();
    echo4[14 + 20] = 8; // make it a request, checksum now wrong (-1 per byte sum)
    let mut out = Vec::new();
    let mut with = |base: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = base.clone();
        f(&mut v);
        out.push(v);
    };
    // ARP: wrong formats and operations.
    with(&arp, &|f| f[14 + 1] = 6); // htype 6
    with(&arp, &|f| f[14 + 2] = 0x86); // ptype 0x86xx
    with(&arp, &|f| f[14 + 4] = 7); // hlen 7
    with(&arp, &|f| f[14 + 5] = 16); // plen 16
    with(&arp, &|f| f[14 + 7] = 3); // op 3 (RARP)
    with(&arp, &|f| f.truncate(14 + 27)); // one byte short
                                          // NS: RFC 4861 §7.1.1 violations and broken checksums.
    with(&ns, &|f| f[14 + 7] = 64); // hop limit
    with(&ns, &|f| f[14 + 40 + 1] = 1); // code 1
    with(&ns, &|f| f[14 + 40 + 2] ^= 0xff); // checksum
    with(&ns, &|f| f[14 + 40 + 24 + 1] = 0); // zero-length option
    with(&ns, &|f| f.truncate(14 + 40 + 20)); // ICMPv6 shorter than an NS
    with(&ns, &|f| f[14 + 4] = 0xff); // payload length beyond the frame
    with(&ns, &|f| f[14] = 0x40); // IP version 4 in an IPv6 frame
    with(&ns, &|f| {
        // target rewritten to multicast ff02::100 (checksum fixed by re-emitting below)
        f[14 + 40 + 8] = 0xff;
        f[14 + 40 + 9] = 0x02;
    });
    // DAD probe carrying a source link-layer option.
    out.push(
        FrameRepr {
            src: client,
            dst: wire::solicited_node_multicast_mac(vip6),
            vlan: None,
            payload: PayloadRepr::Icmpv6 {
                src: Ipv6Addr::UNSPECIFIED,
                dst: wire::solicited_node_multicast(vip6),
                hop_limit: 255,
                icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target: vip6,
                    lla: Some(client),
                }),
            },
        }
        .to_vec()
        .unwrap(),
    );
    // Echo request with a bad checksum, and a QinQ-tagged ARP request.
    out.push(echo4);
    let mut qinq = arp[..12].to_vec();
    qinq.extend_from_slice(&[0x81, 0, 0, 10, 0x81, 0, 0, 20]);
    qinq.extend_from_slice(&arp[12..]);
    out.push(qinq);
    // Every truncation of the valid frames.
    for (base, full) in [(&arp, 14 + 28), (&ns, ns.len())] {
        for n in 14..full {
            out.push(base[..n].to_vec());
        }
    }
    // Random garbage behind the interesting EtherTypes.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..300 {
        let len = 14 + usize::from(xorshift(&mut seed)) % 120;
        let mut f: Vec<u8> = (0..len).map(|_| xorshift(&mut seed)).collect();
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&client.0);
        let et: u16 = [0x0806, 0x86dd, 0x0800][i % 3];
        f[12..14].copy_from_slice(&et.to_be_bytes());
        if et == 0x86dd && f.len() > 14 + 7 {
            f[14] = 0x60;
            f[14 + 6] = 58;
            f[14 + 7] = 255;
        }
        out.push(f);
    }
    out
}

#[test]
fn malformed_corpus_is_rejected_by_the_decision_logic() {
    use ferrolb::dataplane::logic::{decide, IfaceCtx, Verdict};
    use ferrolb::dataplane::owned::Owned;
    let node = Mac([2, 0, 0, 0, 0, 9]);
    let mut owned = Owned::default();
    owned.announce(ip(VIP4), InterfaceFilter::All);
    owned.announce(ip(VIP6), InterfaceFilter::All);
    let ctx = IfaceCtx {
        name: "eth0",
        mac: node,
        local_macs: &[],
        echo: true,
    };
    for (i, f) in malformed_corpus(Mac([2, 0, 0, 0, 0, 1]), node)
        .iter()
        .enumerate()
    {
        let v = decide(f, &ctx, &owned);
        assert!(
            !matches!(v, Verdict::Reply { .. }),
            "corpus frame {i} answered: {f:02x?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_corpus_gets_no_reply_and_no_crash() {
    if !privileged_with_tools_or_skip("malformed_corpus_gets_no_reply_and_no_crash", &[]) {
        return;
    }
    let (net, client, nodes) = segment(1);
    let (dp, _ev) = start_on(
        &net,
        nodes[0],
        Config {
            answer_ping: true,
            // Only the immediate burst, so announcements cannot be mistaken for replies.
            backoff: vec![],
            ..Config::default()
        },
    )
    .await;
    dp.announce(ip(VIP4), InterfaceFilter::All);
    dp.announce(ip(VIP6), InterfaceFilter::All);
    let port = RawPort::open(net.host(client), true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = port.collect(Duration::from_millis(10));
    let corpus = malformed_corpus(port.mac, Mac(net.host(nodes[0]).mac));
    for f in &corpus {
        port.send(f);
    }
    let got = port.collect(Duration::from_millis(300));
    let replies: Vec<String> = replies_about_vips(&got)
        .into_iter()
        .chain(got.iter().filter_map(|f| match wire::parse_inbound(f) {
            Ok(Inbound::Other) => Some("other".to_string()),
            _ => None,
        }))
        .collect();
    assert!(
        replies.is_empty(),
        "{} corpus frames elicited {replies:?}",
        corpus.len()
    );
    assert!(
        drops(&dp, "malformed") >= 20,
        "malformed drops: {}",
        drops(&dp, "malformed")
    );
    assert_eq!(dp.metrics().send_errors.get(), 0);
    // Still alive and answering.
    port.send(&arp_request(
        port.mac,
        "10.0.0.1".parse().unwrap(),
        VIP4.parse().unwrap(),
    ));
    let got = port.collect(Duration::from_millis(300));
    assert_eq!(replies_about_vips(&got), vec![format!("arp reply {VIP4}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_frames_decode_cleanly_in_tshark() {
    if !privileged_with_tools_or_skip(
        "captured_frames_decode_cleanly_in_tshark",
        &["tcpdump", "tshark", "arping", "ndisc6", "ping"],
    ) {
        return;
    }
    let (net, client, nodes) = segment(1);
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("l2.pcap");
    let pcap_s = pcap.to_str().unwrap().to_string();
    let dump = net
        .switch()
        .spawn(&["tcpdump", "-i", "br0", "-U", "-Z", "root", "-w", &pcap_s])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (dp, _ev) = start_on(
        &net,
        nodes[0],
        Config {
            answer_ping: true,
            backoff: vec![Duration::from_millis(100)],
            ..Config::default()
        },
    )
    .await;
    dp.announce(ip(VIP4), InterfaceFilter::All);
    dp.announce(ip(VIP6), InterfaceFilter::All);
    let c = &net.host(client).ns;
    c.output(&[
        "arping", "-c", "1", "-w", "1", "-I", "eth0", "-s", "0.0.0.0", VIP4,
    ])
    .unwrap();
    c.output(&["arping", "-c", "1", "-w", "1", "-I", "eth0", VIP4])
        .unwrap();
    c.output(&["ndisc6", "-1", "-q", "-r", "1", VIP6, "eth0"])
        .unwrap();
    let port = RawPort::open(net.host(client), false);
    port.send(&neighbor_solicitation(
        port.mac,
        Ipv6Addr::UNSPECIFIED,
        VIP6.parse().unwrap(),
    ));
    assert!(c
        .output(&["ping", "-c", "1", "-W", "1", VIP4])
        .unwrap()
        .status
        .success());
    assert!(c
        .output(&["ping", "-c", "1", "-W", "1", VIP6])
        .unwrap()
        .status
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = dump.stop(Duration::from_secs(3)).unwrap();
    assert!(
        pcap.exists(),
        "tcpdump wrote nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let node_mac = net.host(nodes[0]).mac_string();
    let filter = format!("eth.src == {node_mac}");
    let tshark = |extra: &[&str]| {
        let mut args = vec![
            "-n",
            "-r",
            &pcap_s,
            "-o",
            "ip.check_checksum:TRUE",
            "-Y",
            &filter,
        ];
        args.extend_from_slice(extra);
        let o = std::process::Command::new("tshark")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let verbose = tshark(&["-V"]);
    for bad in [
        "Malformed",
        "Expert Info (Error",
        "Expert Info (Warning",
        "Checksum Status: Bad",
        "[Bad",
    ] {
        assert!(!verbose.contains(bad), "tshark reports {bad:?}:\n{verbose}");
    }
    let fields = tshark(&[
        "-T",
        "fields",
        "-e",
        "arp.opcode",
        "-e",
        "icmpv6.type",
        "-e",
        "icmp.type",
    ]);
    let kinds: std::collections::BTreeSet<&str> = fields.lines().map(str::trim).collect();
    for want in ["1", "2", "136", "129", "0"] {
        assert!(
            kinds
                .iter()
                .any(|k| k.split_whitespace().any(|w| w == want)),
            "no frame of kind {want} from the node in the capture: {kinds:?}"
        );
    }
    // Checksums were actually verified.
    assert!(verbose.contains("Checksum Status: Good"), "{verbose}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solicited_node_group_joined_on_announce_and_left_on_withdraw() {
    if !privileged_with_tools_or_skip("solicited_node_group_joined", &[]) {
        return;
    }
    let (net, _client, nodes) = segment(1);
    let (dp, _ev) = start_on(&net, nodes[0], Config::default()).await;
    let n = &net.host(nodes[0]).ns;
    let maddr = || n.run(&["ip", "maddr", "show", "dev", "eth0"]).unwrap();
    // fd00::100 ⇒ ff02::1:ff00:100, link layer 33:33:ff:00:01:00.
    assert!(!maddr().contains("33:33:ff:00:01:00"), "{}", maddr());
    dp.announce(ip(VIP6), InterfaceFilter::All);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !(maddr().contains("33:33:ff:00:01:00") && maddr().contains("ff02::1:ff00:100")) {
        assert!(Instant::now() < deadline, "group not joined:\n{}", maddr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dp.withdraw(ip(VIP6));
    let deadline = Instant::now() + Duration::from_secs(2);
    while maddr().contains("33:33:ff:00:01:00") || maddr().contains("ff02::1:ff00:100") {
        assert!(Instant::now() < deadline, "group not left:\n{}", maddr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A receive ring that fills up loses the frames beyond it, and says so: the next frame
/// the kernel queues is marked losing and the socket's statistics give the count (which
/// reading resets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_receive_ring_marks_its_losses_and_counts_them() {
    if !privileged_with_tools_or_skip("dataplane_kernel", &[]) {
        return;
    }
    use ferrolb::dataplane::ring::Geometry;
    let mut net = Network::new().expect("network");
    let client = net
        .add_host("client", HostSpec::v4("10.0.0.1/24"))
        .expect("client");
    let node = net
        .add_host("node0", HostSpec::v4("10.0.0.10/24"))
        .expect("node");
    let idx = eth0_index(net.host(node));
    // 4 slots.
    let geo = Geometry::new(2048, 4, 4096, 4096).unwrap();
    assert_eq!(geo.frame_nr, 4);
    let (sock, mut ring) = net
        .host(node)
        .ns
        .enter(move || PacketSocket::open_with_ring(idx, FilterOptions::default(), geo))
        .expect("ring socket");
    let port = RawPort::open(net.host(client), false);
    let who_has = |i: u8| {
        arp_request(
            port.mac,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 100 + i),
        )
    };
    // Let stray frames of the set-up pass, then start from empty statistics.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Some(s) = ring.next_ready() {
        ring.release(s);
    }
    sock.take_ring_drops().unwrap();

    for i in 0..20 {
        port.send(&who_has(i));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = 0;
    while let Some(s) = ring.next_ready() {
        assert!(
            !ring.losing(s),
            "frames queued before the loss are not marked"
        );
        ring.release(s);
        held += 1;
    }
    assert_eq!(held, 4, "the ring holds 4 frames");

    port.send(&who_has(30));
    assert!(sock.wait_ring(&mut ring).unwrap());
    let s = ring.next_ready().unwrap();
    assert!(ring.losing(s), "the first frame after the loss is marked");
    ring.release(s);
    let lost = sock.take_ring_drops().unwrap();
    assert!(lost >= 16, "20 sent, 4 held: {lost} counted lost");

    port.send(&who_has(31));
    assert!(sock.wait_ring(&mut ring).unwrap());
    let s = ring.next_ready().unwrap();
    assert!(!ring.losing(s), "reading the statistics clears the mark");
    ring.release(s);
    assert_eq!(sock.take_ring_drops().unwrap(), 0);
}

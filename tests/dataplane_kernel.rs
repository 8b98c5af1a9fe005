//! The dataplane with the Linux kernel as the client, in network namespaces.
//!
//! Each test builds its own switched segment (`lab::netns::Network`): a client host and
//! one or two "node" hosts running a `Dataplane` inside their namespace. Root is needed;
//! without it the tests print why and pass, except under `CI=true` where they fail.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrolb::dataplane::{Config, Dataplane, Event, InterfaceFilter};
use ferrolb::lab::netns::{privileged_with_tools_or_skip, HostId, HostSpec, Network};
use ferrolb::wire::Mac;

const VIP4: &str = "10.0.0.100";
const VIP6: &str = "fd00::100";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
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

async fn start_on(net: &Network, node: HostId, cfg: Config) -> (Dataplane, tokio::sync::mpsc::Receiver<Event>) {
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
    if !privileged_with_tools_or_skip("arping_gets_exactly_one_reply_with_the_node_mac", &["arping"]) {
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
    let label = ferrolb::dataplane::metrics::IpLabel { ip: VIP4.into() };
    assert!(m.responses_sent.get_or_create(&label).get() >= 3);
    assert!(m.gratuitous_sent.get_or_create(&label).get() >= 2);

    // Withdrawn: silence again.
    dp0.withdraw(ip(VIP4));
    let out = c
        .output(&["arping", "-c", "2", "-w", "2", "-I", "eth0", VIP4])
        .unwrap();
    assert!(arping_macs(&String::from_utf8_lossy(&out.stdout)).is_empty());
}

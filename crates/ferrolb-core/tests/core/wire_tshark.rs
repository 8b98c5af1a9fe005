//! Emitted frames decoded by a real decoder: every frame the dataplane can send (untagged and
//! 802.1Q-tagged) is written to a pcap and dissected by `tshark -V`; no malformed packet, bad
//! checksum or warning is allowed, and each frame must decode as what it claims to be.
//!
//! Skips (with a printed reason) when tshark is not installed, unless `CI=true`.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use ferrolb_core::wire::{
    solicited_node_multicast, solicited_node_multicast_mac, ArpOperation, ArpRepr, FrameRepr,
    Icmpv4Repr, Icmpv6Repr, Mac, NaFlags, NdiscRepr, PayloadRepr, VlanId, ALL_NODES,
    DEFAULT_HOP_LIMIT, NDP_HOP_LIMIT,
};

/// Writes a classic pcap (microsecond timestamps, LINKTYPE_ETHERNET).
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).unwrap();
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&(u32::try_from(i).unwrap() * 1000).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

const NODE: Mac = Mac([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
const CLIENT: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/// (frame, text tshark must print for it) for one VLAN setting: the frames the dataplane sends
/// (ARP replies, gratuitous ARP, NAs, echo replies) and the requests they answer.
fn frames(vlan: Option<VlanId>) -> Vec<(Vec<u8>, &'static str)> {
    let vip = Ipv4Addr::new(192, 168, 10, 240);
    let client = Ipv4Addr::new(192, 168, 10, 5);
    let vip6: Ipv6Addr = "2001:db8:10::f0".parse().unwrap();
    let client6: Ipv6Addr = "2001:db8:10::5".parse().unwrap();
    let ll: Ipv6Addr = "fe80::5e:10ff:fe00:1".parse().unwrap();
    let data = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let frame = |src, dst, payload| {
        FrameRepr {
            src,
            dst,
            vlan,
            payload,
        }
        .to_vec()
        .unwrap()
    };
    let node_arp = |operation, target_mac, target_ip| {
        PayloadRepr::Arp(ArpRepr {
            operation,
            sender_mac: NODE,
            sender_ip: vip,
            target_mac,
            target_ip,
        })
    };
    let node_na = |src, dst, solicited| PayloadRepr::Icmpv6 {
        src,
        dst,
        hop_limit: NDP_HOP_LIMIT,
        icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NaFlags {
                router: false,
                solicited,
                override_: true,
            },
            target: vip6,
            lla: Some(NODE),
        }),
    };
    let ns = PayloadRepr::Icmpv6 {
        src: client6,
        dst: solicited_node_multicast(vip6),
        hop_limit: NDP_HOP_LIMIT,
        icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target: vip6,
            lla: Some(CLIENT),
        }),
    };
    // Echo requests the replies answer, so tshark pairs them and does not flag orphans.
    let echo4 = |src, dst, icmp| PayloadRepr::Icmpv4 {
        src,
        dst,
        ttl: DEFAULT_HOP_LIMIT,
        icmp,
    };
    let echo6 = |src, dst, icmp| PayloadRepr::Icmpv6 {
        src,
        dst,
        hop_limit: DEFAULT_HOP_LIMIT,
        icmp,
    };
    let (id4, seq4, id6, seq6) = (0x4242, 7, 0x4343, 9);
    vec![
        (
            frame(NODE, CLIENT, node_arp(ArpOperation::Reply, CLIENT, client)),
            "ARP 6* 192.168.10.240 is at 02:00:5e:10:00:01",
        ),
        (
            frame(NODE, Mac::BROADCAST, node_arp(ArpOperation::Request, Mac::BROADCAST, vip)),
            "Gratuitous ARP for 192.168.10.240 (Request)",
        ),
        (
            frame(NODE, Mac::BROADCAST, node_arp(ArpOperation::Reply, Mac::BROADCAST, vip)),
            "Gratuitous ARP for 192.168.10.240 (Reply)",
        ),
        (
            frame(CLIENT, solicited_node_multicast_mac(vip6), ns),
            "2001:db8:10::5 → ff02::1:ff00:f0 ICMPv6 * Neighbor Solicitation for 2001:db8:10::f0 from 52:54:00:12:34:56",
        ),
        (
            frame(NODE, CLIENT, node_na(ll, client6, true)),
            "fe80::5e:10ff:fe00:1 → 2001:db8:10::5 ICMPv6 * Neighbor Advertisement 2001:db8:10::f0 (sol, ovr) is at 02:00:5e:10:00:01",
        ),
        (
            frame(NODE, CLIENT, node_na(vip6, client6, true)),
            "2001:db8:10::f0 → 2001:db8:10::5 ICMPv6 * Neighbor Advertisement 2001:db8:10::f0 (sol, ovr) is at 02:00:5e:10:00:01",
        ),
        (
            frame(NODE, Mac([0x33, 0x33, 0, 0, 0, 1]), node_na(ll, ALL_NODES, false)),
            "fe80::5e:10ff:fe00:1 → ff02::1 *ICMPv6 * Neighbor Advertisement 2001:db8:10::f0 (ovr) is at 02:00:5e:10:00:01",
        ),
        (
            frame(CLIENT, NODE, echo4(client, vip, Icmpv4Repr::EchoRequest { ident: id4, seq: seq4, data })),
            "Echo (ping) request *id=0x4242, seq=7",
        ),
        (
            frame(NODE, CLIENT, echo4(vip, client, Icmpv4Repr::EchoReply { ident: id4, seq: seq4, data })),
            "192.168.10.240 → 192.168.10.5 ICMP * Echo (ping) reply *id=0x4242, seq=7/1792, ttl=64 (request in *)",
        ),
        (
            frame(CLIENT, NODE, echo6(client6, vip6, Icmpv6Repr::EchoRequest { ident: id6, seq: seq6, data })),
            "Echo (ping) request id=0x4343, seq=9",
        ),
        (
            frame(NODE, CLIENT, echo6(vip6, client6, Icmpv6Repr::EchoReply { ident: id6, seq: seq6, data })),
            "2001:db8:10::f0 → 2001:db8:10::5 ICMPv6 * Echo (ping) reply id=0x4343, seq=9, hop limit=64 (request in *)",
        ),
    ]
}

#[test]
fn tshark_decodes_emitted_frames_cleanly() {
    if !tshark_available() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tshark is required in CI (apt-get install tshark)");
        }
        eprintln!("SKIP tshark_decodes_emitted_frames_cleanly: tshark not installed");
        return;
    }
    let mut all = frames(None);
    all.extend(frames(VlanId::new(100)));
    let (bytes, expectations): (Vec<_>, Vec<_>) = all.into_iter().unzip();
    let mut file = tempfile::Builder::new().suffix(".pcap").tempfile().unwrap();
    file.write_all(&pcap(&bytes)).unwrap();
    file.flush().unwrap();
    // Keep a copy for inspection: WIRE_PCAP_OUT=/tmp/ferrolb-wire.pcap cargo test --test core wire_tshark
    if let Ok(keep) = std::env::var("WIRE_PCAP_OUT") {
        std::fs::copy(file.path(), keep).unwrap();
    }

    let path = file.path();
    let summary = run_tshark(&["-n", "-r"], path);
    let text = run_tshark(&["-n", "-o", "ip.check_checksum:TRUE", "-V", "-r"], path);

    for bad in [
        "Malformed",
        "Bad checksum",
        "[incorrect",
        "Expert Info (Warning",
        "Expert Info (Error",
    ] {
        let hits: Vec<&str> = text.lines().filter(|l| l.contains(bad)).collect();
        assert!(
            hits.is_empty(),
            "tshark reported {bad:?}: {hits:#?}\n{text}"
        );
    }

    // One summary line per frame, each decoding as what we built.
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), bytes.len(), "{summary}");
    for (i, (line, want)) in lines.iter().zip(&expectations).enumerate() {
        assert!(
            glob(line, want),
            "frame {i}: expected {want:?}, got {line:?}"
        );
    }

    // The detail view per frame: the 802.1Q tag is decoded exactly on the tagged half.
    let per_frame: Vec<&str> = text.split("\nFrame ").collect();
    assert_eq!(per_frame.len(), bytes.len(), "{text}");
    for (i, chunk) in per_frame.iter().enumerate() {
        let tagged = i >= bytes.len() / 2;
        assert_eq!(
            chunk.contains("802.1Q Virtual LAN, PRI: 0, DEI: 0, ID: 100"),
            tagged,
            "frame {i}: VLAN tag decode mismatch:\n{chunk}"
        );
    }
    // Every checksum tshark checked is good: 8 ICMP(v6) checksums and 2 IPv4 headers per half.
    let good = text.matches("[Checksum Status: Good]").count()
        + text.matches("[Header checksum status: Good]").count();
    assert_eq!(good, 2 * (8 + 2), "{text}");
}

fn run_tshark(args: &[&str], path: &std::path::Path) -> String {
    let out = Command::new("tshark")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `*` matches any run of characters; all other characters literally, anywhere in `line`.
fn glob(line: &str, pattern: &str) -> bool {
    let mut rest = line;
    for part in pattern.split('*') {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

//! Emitted frames decoded by a real decoder: every frame the dataplane can send (untagged and
//! 802.1Q-tagged) is written to a pcap and dissected by `tshark -V`; no malformed packet, bad
//! checksum or warning is allowed, and each frame must decode as what it claims to be.
//!
//! Skips (with a printed reason) when tshark is not installed, unless `CI=true`.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use ferrolb_core::wire::{
    arp_reply, echo_reply_v4, echo_reply_v6, gratuitous_arp_reply, gratuitous_arp_request,
    neighbor_advertisement, neighbor_solicitation, unsolicited_neighbor_advertisement, FrameRepr,
    Icmpv4Repr, Icmpv6Repr, Mac, PayloadRepr, VlanId,
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

/// (frame, text tshark must print for it) for one VLAN setting.
fn frames(vlan: Option<VlanId>) -> Vec<(Vec<u8>, &'static str)> {
    let vip = Ipv4Addr::new(192, 168, 10, 240);
    let client = Ipv4Addr::new(192, 168, 10, 5);
    let vip6: Ipv6Addr = "2001:db8:10::f0".parse().unwrap();
    let client6: Ipv6Addr = "2001:db8:10::5".parse().unwrap();
    let ll: Ipv6Addr = "fe80::5e:10ff:fe00:1".parse().unwrap();
    let data = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // Echo requests the replies answer, so tshark pairs them and does not flag orphans.
    let req4 = FrameRepr {
        src: CLIENT,
        dst: NODE,
        vlan,
        payload: PayloadRepr::Icmpv4 {
            src: client,
            dst: vip,
            ttl: 64,
            icmp: Icmpv4Repr::EchoRequest {
                ident: 0x4242,
                seq: 7,
                data,
            },
        },
    }
    .to_vec()
    .unwrap();
    let req6 = FrameRepr {
        src: CLIENT,
        dst: NODE,
        vlan,
        payload: PayloadRepr::Icmpv6 {
            src: client6,
            dst: vip6,
            hop_limit: 64,
            icmp: Icmpv6Repr::EchoRequest {
                ident: 0x4343,
                seq: 9,
                data,
            },
        },
    }
    .to_vec()
    .unwrap();
    vec![
        (
            arp_reply(vlan, NODE, vip, CLIENT, client),
            "ARP 6* 192.168.10.240 is at 02:00:5e:10:00:01",
        ),
        (
            gratuitous_arp_request(vlan, NODE, vip),
            "Gratuitous ARP for 192.168.10.240 (Request)",
        ),
        (
            gratuitous_arp_reply(vlan, NODE, vip),
            "Gratuitous ARP for 192.168.10.240 (Reply)",
        ),
        (
            neighbor_solicitation(vlan, CLIENT, client6, vip6),
            "2001:db8:10::5 → ff02::1:ff00:f0 ICMPv6 * Neighbor Solicitation for 2001:db8:10::f0 from 52:54:00:12:34:56",
        ),
        (
            neighbor_advertisement(vlan, NODE, ll, client6, CLIENT, vip6, true, true),
            "fe80::5e:10ff:fe00:1 → 2001:db8:10::5 ICMPv6 * Neighbor Advertisement 2001:db8:10::f0 (sol, ovr) is at 02:00:5e:10:00:01",
        ),
        (
            neighbor_advertisement(vlan, NODE, vip6, client6, CLIENT, vip6, true, true),
            "2001:db8:10::f0 → 2001:db8:10::5 ICMPv6 * Neighbor Advertisement 2001:db8:10::f0 (sol, ovr) is at 02:00:5e:10:00:01",
        ),
        (
            unsolicited_neighbor_advertisement(vlan, NODE, ll, vip6),
            "fe80::5e:10ff:fe00:1 → ff02::1 *ICMPv6 * Neighbor Advertisement 2001:db8:10::f0 (ovr) is at 02:00:5e:10:00:01",
        ),
        (req4, "Echo (ping) request *id=0x4242, seq=7"),
        (
            echo_reply_v4(vlan, NODE, CLIENT, vip, client, 0x4242, 7, data).unwrap(),
            "192.168.10.240 → 192.168.10.5 ICMP * Echo (ping) reply *id=0x4242, seq=7/1792, ttl=64 (request in *)",
        ),
        (req6, "Echo (ping) request id=0x4343, seq=9"),
        (
            echo_reply_v6(vlan, NODE, CLIENT, vip6, client6, 0x4343, 9, data).unwrap(),
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

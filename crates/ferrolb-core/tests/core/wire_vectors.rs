//! Byte-vector tests of the `wire` high-level API: frames laid out by hand per RFC 826 /
//! RFC 4861 (checksums computed by an independent Python implementation and confirmed
//! "[correct]" by tshark), emitted `FrameRepr`s compared byte for byte, and malformed inputs.

use std::net::{Ipv4Addr, Ipv6Addr};

use ferrolb_core::wire::{
    parse_inbound, Advertisement, ArpMessage, ArpOperation, ArpRepr, EchoRequest, EthernetFrame,
    FrameRepr, Icmpv6Repr, Inbound, Mac, NaFlags, NdiscRepr, PayloadRepr, Solicitation, VlanId,
    WireError, ALL_NODES, NDP_HOP_LIMIT,
};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const CLIENT_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const NODE_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// NS from fe80::5054:ff:fe12:3456 to ff02::1:ff00:10 for 2001:db8::10 with SLLA, checksum 0x42cc.
fn ns_frame() -> Vec<u8> {
    hex("3333ff000010 525400123456 86dd
         6000 0000 0020 3a ff fe80000000000000505400fffe123456 ff0200000000000000000001ff000010
         87 00 42cc 00000000 20010db8000000000000000000000010 0101 525400123456")
}

/// Solicited NA (S=1, O=1) from fe80::2 to the client, TLLA 02:00:00:00:00:02, checksum 0x6518.
fn na_frame() -> Vec<u8> {
    hex("525400123456 020000000002 86dd
         6000 0000 0020 3a ff fe800000000000000000000000000002 fe80000000000000505400fffe123456
         88 00 6518 60000000 20010db8000000000000000000000010 0201 020000000002")
}

/// ICMPv6 echo request 2001:db8::1 → 2001:db8::10, id 0x1234 seq 1, data "ferrolb!", checksum 0x6797.
fn echo6_frame() -> Vec<u8> {
    hex("020000000002 525400123456 86dd
         6000 0000 0010 3a 40 20010db8000000000000000000000001 20010db8000000000000000000000010
         80 00 6797 1234 0001 666572726f6c6221")
}

/// ARP request "who has 192.168.1.240? tell 192.168.1.10", broadcast, padded to 60 bytes.
fn arp_request_frame() -> Vec<u8> {
    let mut v = hex("ffffffffffff 525400123456 0806
         0001 0800 06 04 0001 525400123456 c0a8010a 000000000000 c0a801f0");
    v.resize(60, 0);
    v
}

fn tag(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00]);
    v.extend_from_slice(&(vid | 0x2000).to_be_bytes()); // PCP 1
    v.extend_from_slice(&frame[12..]);
    v
}

fn recompute_icmpv6(frame: &mut [u8], eth_hl: usize) {
    let ip = &frame[eth_hl..];
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let start = eth_hl + 40;
    ferrolb_core::wire::icmpv6::fill_checksum(&src, &dst, &mut frame[start..start + plen]);
}

#[test]
fn parses_neighbor_solicitation() {
    let f = ns_frame();
    let got = parse_inbound(&f).unwrap();
    assert_eq!(
        got,
        Inbound::NeighborSolicitation(Solicitation {
            vlan: None,
            eth_src: CLIENT_MAC,
            eth_dst: Mac([0x33, 0x33, 0xff, 0, 0, 0x10]),
            src_ip: ip6("fe80::5054:ff:fe12:3456"),
            dst_ip: ip6("ff02::1:ff00:10"),
            target: ip6("2001:db8::10"),
            source_lla: Some(CLIENT_MAC),
        })
    );
}

/// A Neighbor Advertisement from `NODE_MAC` for 2001:db8::10 with TLLA = `NODE_MAC`.
fn na_repr(
    vlan: Option<VlanId>,
    src: Ipv6Addr,
    (dst_mac, dst): (Mac, Ipv6Addr),
    flags: NaFlags,
) -> FrameRepr<'static> {
    FrameRepr {
        src: NODE_MAC,
        dst: dst_mac,
        vlan,
        payload: PayloadRepr::Icmpv6 {
            src,
            dst,
            hop_limit: NDP_HOP_LIMIT,
            icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags,
                target: ip6("2001:db8::10"),
                lla: Some(NODE_MAC),
            }),
        },
    }
}

const SOLICITED: NaFlags = NaFlags {
    router: false,
    solicited: true,
    override_: true,
};

#[test]
fn emits_solicited_na_byte_for_byte() {
    let repr = na_repr(
        None,
        ip6("fe80::2"),
        (CLIENT_MAC, ip6("fe80::5054:ff:fe12:3456")),
        SOLICITED,
    );
    assert_eq!(repr.to_vec().unwrap(), na_frame());
    // Into a larger reused buffer: the frame is the first `n` bytes.
    let mut buf = [0xeeu8; 128];
    let n = repr
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
        .unwrap();
    assert_eq!(&buf[..n], &na_frame()[..]);
    let mut small = [0u8; 85];
    assert_eq!(
        repr.emit(&mut EthernetFrame::new_unchecked(&mut small[..])),
        Err(WireError::BufferTooSmall {
            needed: 86,
            got: 85
        })
    );
}

#[test]
fn parses_neighbor_advertisement() {
    assert_eq!(
        parse_inbound(&na_frame()).unwrap(),
        Inbound::NeighborAdvertisement(Advertisement {
            vlan: None,
            eth_src: NODE_MAC,
            eth_dst: CLIENT_MAC,
            src_ip: ip6("fe80::2"),
            dst_ip: ip6("fe80::5054:ff:fe12:3456"),
            target: ip6("2001:db8::10"),
            target_lla: Some(NODE_MAC),
            flags: SOLICITED,
        })
    );
}

#[test]
fn unsolicited_na_goes_to_all_nodes_with_override() {
    let f = na_repr(
        VlanId::new(7),
        ip6("fe80::2"),
        (Mac([0x33, 0x33, 0, 0, 0, 1]), ALL_NODES),
        NaFlags {
            router: false,
            solicited: false,
            override_: true,
        },
    )
    .to_vec()
    .unwrap();
    assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 0x07]);
    match parse_inbound(&f).unwrap() {
        Inbound::NeighborAdvertisement(Advertisement {
            vlan,
            dst_ip,
            flags,
            target_lla,
            target,
            ..
        }) => {
            assert_eq!(vlan, VlanId::new(7));
            assert_eq!(dst_ip, ip6("ff02::1"));
            assert_eq!(
                flags,
                NaFlags {
                    router: false,
                    solicited: false,
                    override_: true
                }
            );
            assert_eq!(target_lla, Some(NODE_MAC));
            assert_eq!(target, ip6("2001:db8::10"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn parses_echo_request_v6() {
    let f = echo6_frame();
    match parse_inbound(&f).unwrap() {
        Inbound::EchoRequestV6(EchoRequest {
            ident, seq, data, ..
        }) => {
            assert_eq!((ident, seq, data), (0x1234, 1, &b"ferrolb!"[..]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn arp_request_and_reply() {
    let req = arp_request_frame();
    assert_eq!(
        parse_inbound(&req).unwrap(),
        Inbound::ArpRequest(ArpMessage {
            vlan: None,
            eth_src: CLIENT_MAC,
            eth_dst: Mac::BROADCAST,
            sender_mac: CLIENT_MAC,
            sender_ip: Ipv4Addr::new(192, 168, 1, 10),
            target_mac: Mac::ZERO,
            target_ip: Ipv4Addr::new(192, 168, 1, 240),
        })
    );
    let reply = FrameRepr {
        src: NODE_MAC,
        dst: CLIENT_MAC,
        vlan: None,
        payload: PayloadRepr::Arp(ArpRepr {
            operation: ArpOperation::Reply,
            sender_mac: NODE_MAC,
            sender_ip: Ipv4Addr::new(192, 168, 1, 240),
            target_mac: CLIENT_MAC,
            target_ip: Ipv4Addr::new(192, 168, 1, 10),
        }),
    };
    let mut expected = hex("525400123456 020000000002 0806
        0001 0800 06 04 0002 020000000002 c0a801f0 525400123456 c0a8010a");
    expected.resize(60, 0);
    assert_eq!(reply.to_vec().unwrap(), expected);
    let mut buf = [0u8; 64];
    let tagged = FrameRepr {
        vlan: VlanId::new(100),
        ..reply
    };
    let n = tagged
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
        .unwrap();
    assert_eq!(n, 64);
    assert_eq!(&buf[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x06]);
    assert_eq!(&buf[18..46], &expected[14..42]);
}

#[test]
fn gratuitous_arp_as_metallb() {
    let vip = Ipv4Addr::new(192, 168, 1, 240);
    let gratuitous = |operation| {
        FrameRepr {
            src: NODE_MAC,
            dst: Mac::BROADCAST,
            vlan: None,
            payload: PayloadRepr::Arp(ArpRepr {
                operation,
                sender_mac: NODE_MAC,
                sender_ip: vip,
                target_mac: Mac::BROADCAST,
                target_ip: vip,
            }),
        }
        .to_vec()
        .unwrap()
    };
    for (f, op) in [
        (gratuitous(ArpOperation::Request), 1u8),
        (gratuitous(ArpOperation::Reply), 2u8),
    ] {
        let mut expected = hex("ffffffffffff 020000000002 0806 0001 0800 06 04");
        expected.extend_from_slice(&[0, op]);
        expected.extend_from_slice(&hex("020000000002 c0a801f0 ffffffffffff c0a801f0"));
        expected.resize(60, 0);
        assert_eq!(f, expected);
    }
}

#[test]
fn vlan_tag_is_recorded() {
    let f = tag(&ns_frame(), 100);
    match parse_inbound(&f).unwrap() {
        Inbound::NeighborSolicitation(Solicitation { vlan, target, .. }) => {
            assert_eq!(vlan, VlanId::new(100));
            assert_eq!(target, ip6("2001:db8::10"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        parse_inbound(&tag(&arp_request_frame(), 4095))
            .unwrap()
            .vlan(),
        VlanId::new(4095)
    );
}

#[test]
fn ndp_semantic_errors() {
    // Hop limit 64 (may have been forwarded by a router).
    let mut f = ns_frame();
    f[14 + 7] = 64;
    assert_eq!(parse_inbound(&f), Err(WireError::BadHopLimit(64)));

    // DAD (source ::) with SLLA.
    let mut f = ns_frame();
    f[14 + 8..14 + 24].fill(0);
    recompute_icmpv6(&mut f, 14);
    assert_eq!(parse_inbound(&f), Err(WireError::DadWithSourceLla));

    // DAD without SLLA but to the wrong group.
    let mut f = ns_frame();
    f[14 + 8..14 + 24].fill(0);
    f[14 + 5] = 24; // payload length without the option
    f.truncate(14 + 40 + 24);
    f[14 + 39] = 0x11; // ff02::1:ff00:11 is not the group of ::10
    recompute_icmpv6(&mut f, 14);
    assert_eq!(parse_inbound(&f), Err(WireError::DadNotToSolicitedNode));
    f[14 + 39] = 0x10;
    recompute_icmpv6(&mut f, 14);
    assert!(matches!(
        parse_inbound(&f),
        Ok(Inbound::NeighborSolicitation(Solicitation {
            source_lla: None,
            ..
        }))
    ));

    // Solicited NA to all-nodes.
    let mut f = na_frame();
    f[14 + 24..14 + 40].copy_from_slice(&ip6("ff02::1").octets());
    recompute_icmpv6(&mut f, 14);
    assert_eq!(parse_inbound(&f), Err(WireError::SolicitedNaToMulticast));

    // Multicast source.
    let mut f = ns_frame();
    f[14 + 8] = 0xff;
    recompute_icmpv6(&mut f, 14);
    assert_eq!(parse_inbound(&f), Err(WireError::MulticastSource));

    // Zero-length option appended (payload length and checksum adjusted).
    let mut f = ns_frame();
    f.extend_from_slice(&[14, 0, 0, 0, 0, 0, 0, 0]);
    f[14 + 5] += 8;
    recompute_icmpv6(&mut f, 14);
    assert_eq!(parse_inbound(&f), Err(WireError::ZeroLengthOption));
}

#[test]
fn every_bit_flip_in_the_ns_checksummed_area_is_caught() {
    let base = ns_frame();
    // ICMPv6 message and the addresses in the pseudo-header.
    for i in (14 + 8)..base.len() {
        for bit in 0..8 {
            let mut f = base.clone();
            f[i] ^= 1 << bit;
            let got = parse_inbound(&f);
            assert!(
                !matches!(got, Ok(Inbound::NeighborSolicitation(_))),
                "flip byte {i} bit {bit} accepted: {got:?}"
            );
        }
    }
}

#[test]
fn truncations_are_typed_errors() {
    for frame in [ns_frame(), na_frame(), echo6_frame(), arp_request_frame()] {
        // 42 = end of the ARP packet; the ARP frame's padding may be cut freely.
        let full = if frame[12..14] == [0x08, 0x06] {
            42
        } else {
            frame.len()
        };
        for n in 0..full {
            assert!(
                matches!(parse_inbound(&frame[..n]), Err(WireError::Truncated { .. })),
                "len {n}: {:?}",
                parse_inbound(&frame[..n])
            );
        }
    }
}

#[test]
fn other_frames() {
    // QinQ outer tag: not modelled.
    let mut f = tag(&arp_request_frame(), 10);
    f[12] = 0x88;
    f[13] = 0xa8;
    assert_eq!(parse_inbound(&f), Ok(Inbound::Other));
    // Double 802.1Q tag.
    assert_eq!(
        parse_inbound(&tag(&tag(&arp_request_frame(), 10), 20)),
        Ok(Inbound::Other)
    );
    // IPv6 with a hop-by-hop header (MLD report shape).
    let mut f = ns_frame();
    f[14 + 6] = 0;
    assert_eq!(parse_inbound(&f), Ok(Inbound::Other));
    // LLDP.
    let mut f = vec![0x01, 0x80, 0xc2, 0, 0, 0x0e, 2, 0, 0, 0, 0, 1, 0x88, 0xcc];
    f.resize(60, 0);
    assert_eq!(parse_inbound(&f), Ok(Inbound::Other));
    // IPv4 UDP (valid header checksum from the classic example).
    let mut f = hex("ffffffffffff 525400123456 0800
        4500 0073 0000 4000 4011 b861 c0a80001 c0a800c7");
    f.resize(14 + 0x73, 0);
    assert_eq!(parse_inbound(&f), Ok(Inbound::Other));
    // Echo reply v6 is not for us.
    let mut f = echo6_frame();
    f[14 + 40] = 129;
    recompute_icmpv6(&mut f, 14);
    assert_eq!(parse_inbound(&f), Ok(Inbound::Other));
}

#[test]
fn garbage_arp_formats_are_errors() {
    let mut f = arp_request_frame();
    f[14 + 1] = 6; // IEEE 802 hardware type
    assert!(matches!(
        parse_inbound(&f),
        Err(WireError::UnsupportedArpFormat { htype: 6, .. })
    ));
    let mut f = arp_request_frame();
    f[14 + 7] = 9;
    assert_eq!(parse_inbound(&f), Err(WireError::UnknownArpOperation(9)));
}

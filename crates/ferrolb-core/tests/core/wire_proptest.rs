//! Property tests for `wire`: parse(emit(x)) == x for every Repr and for whole frames, the
//! frames the dataplane sends classify back to what was put in, and no byte string makes any
//! parser panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use ferrolb_core::wire::{
    self, parse_inbound, Advertisement, ArpMessage, ArpOperation, ArpPacket, ArpRepr, EtherType,
    EthernetFrame, EthernetRepr, FrameRepr, Icmpv4Repr, Icmpv6Repr, Inbound, Ipv4Packet, Ipv4Repr,
    Ipv6Packet, Ipv6Repr, Mac, NaFlags, NdiscRepr, PayloadRepr, Solicitation, VlanId,
    NDP_HOP_LIMIT,
};
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = Mac> {
    any::<[u8; 6]>().prop_map(Mac)
}
fn vlan() -> impl Strategy<Value = Option<VlanId>> {
    proptest::option::of((0u16..=4095).prop_map(|v| VlanId::new(v).unwrap()))
}
fn ip4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}
fn ip6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}
/// Any IPv6 address that is not multicast (NDP targets, packet sources).
fn ip6_non_mc() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(|v| {
        let mut o = v.to_be_bytes();
        if o[0] == 0xff {
            o[0] = 0xfe;
        }
        Ipv6Addr::from(o)
    })
}
fn flags() -> impl Strategy<Value = NaFlags> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(router, solicited, override_)| {
        NaFlags {
            router,
            solicited,
            override_,
        }
    })
}
fn ethertype() -> impl Strategy<Value = EtherType> {
    // The outer type can not itself be 0x8100, or the tag would be read twice.
    any::<u16>()
        .prop_filter("not a VLAN TPID", |t| *t != 0x8100)
        .prop_map(EtherType)
}
fn arp_repr() -> impl Strategy<Value = ArpRepr> {
    (any::<bool>(), mac(), ip4(), mac(), ip4()).prop_map(|(req, sm, si, tm, ti)| ArpRepr {
        operation: if req {
            ArpOperation::Request
        } else {
            ArpOperation::Reply
        },
        sender_mac: sm,
        sender_ip: si,
        target_mac: tm,
        target_ip: ti,
    })
}
fn ndisc() -> impl Strategy<Value = NdiscRepr> {
    prop_oneof![
        (ip6_non_mc(), proptest::option::of(mac()))
            .prop_map(|(target, lla)| NdiscRepr::NeighborSolicit { target, lla }),
        (flags(), ip6_non_mc(), proptest::option::of(mac()))
            .prop_map(|(flags, target, lla)| NdiscRepr::NeighborAdvert { flags, target, lla }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn ethernet_roundtrip(src in mac(), dst in mac(), vlan in vlan(), et in ethertype(),
                          payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let repr = EthernetRepr { src, dst, vlan, ethertype: et };
        let mut buf = vec![0u8; repr.header_len() + payload.len()];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..])).unwrap();
        buf[repr.header_len()..].copy_from_slice(&payload);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr);
        prop_assert_eq!(frame.payload(), &payload[..]);
    }

    #[test]
    fn arp_roundtrip(repr in arp_repr(), pad in 0usize..32) {
        let mut buf = vec![0xa5u8; repr.buffer_len() + pad];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..])).unwrap();
        prop_assert_eq!(ArpRepr::parse(&buf).unwrap(), repr);
    }

    #[test]
    fn ipv4_roundtrip(src in ip4(), dst in ip4(), protocol in any::<u8>(), ttl in any::<u8>(),
                      payload_len in 0usize..200, pad in 0usize..16) {
        let repr = Ipv4Repr { src, dst, protocol, ttl, payload_len };
        let mut buf = vec![0u8; repr.header_len() + payload_len + pad];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..])).unwrap();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr);
        prop_assert_eq!(p.payload().len(), payload_len);
    }

    #[test]
    fn ipv6_roundtrip(src in ip6(), dst in ip6(), next_header in any::<u8>(), hop_limit in any::<u8>(),
                      payload_len in 0usize..200, pad in 0usize..16) {
        let repr = Ipv6Repr { src, dst, next_header, payload_len, hop_limit };
        let mut buf = vec![0u8; repr.header_len() + payload_len + pad];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..])).unwrap();
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr);
        prop_assert_eq!(p.payload().len(), payload_len);
    }

    #[test]
    fn icmpv4_roundtrip(req in any::<bool>(), ident in any::<u16>(), seq in any::<u16>(),
                        data in proptest::collection::vec(any::<u8>(), 0..128)) {
        let repr = if req {
            Icmpv4Repr::EchoRequest { ident, seq, data: &data }
        } else {
            Icmpv4Repr::EchoReply { ident, seq, data: &data }
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        prop_assert_eq!(Icmpv4Repr::parse(&buf).unwrap(), repr);
    }

    #[test]
    fn ndisc_roundtrip(repr in ndisc()) {
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        prop_assert_eq!(NdiscRepr::parse(&buf).unwrap(), repr);
    }

    #[test]
    fn icmpv6_roundtrip(src in ip6(), dst in ip6(), nd in ndisc(), kind in 0u8..3,
                        ident in any::<u16>(), seq in any::<u16>(),
                        data in proptest::collection::vec(any::<u8>(), 0..128)) {
        let repr = match kind {
            0 => Icmpv6Repr::EchoRequest { ident, seq, data: &data },
            1 => Icmpv6Repr::EchoReply { ident, seq, data: &data },
            _ => Icmpv6Repr::Ndisc(nd),
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&src, &dst, &mut buf).unwrap();
        prop_assert!(wire::icmpv6::verify_checksum(&src, &dst, &buf));
        prop_assert_eq!(Icmpv6Repr::parse(&src, &dst, &buf).unwrap(), repr);
    }

    #[test]
    fn frame_roundtrip(src in mac(), dst in mac(), vlan in vlan(), arp in arp_repr(),
                       s4 in ip4(), d4 in ip4(), s6 in ip6(), d6 in ip6(), hl in any::<u8>(),
                       nd in ndisc(), kind in 0u8..5, ident in any::<u16>(), seq in any::<u16>(),
                       data in proptest::collection::vec(any::<u8>(), 0..100)) {
        let payload = match kind {
            0 => PayloadRepr::Arp(arp),
            1 => PayloadRepr::Icmpv4 { src: s4, dst: d4, ttl: hl,
                                       icmp: Icmpv4Repr::EchoRequest { ident, seq, data: &data } },
            2 => PayloadRepr::Icmpv4 { src: s4, dst: d4, ttl: hl,
                                       icmp: Icmpv4Repr::EchoReply { ident, seq, data: &data } },
            3 => PayloadRepr::Icmpv6 { src: s6, dst: d6, hop_limit: hl,
                                       icmp: Icmpv6Repr::EchoRequest { ident, seq, data: &data } },
            _ => PayloadRepr::Icmpv6 { src: s6, dst: d6, hop_limit: hl, icmp: Icmpv6Repr::Ndisc(nd) },
        };
        let repr = FrameRepr { src, dst, vlan, payload };
        let bytes = repr.to_vec().unwrap();
        prop_assert!(bytes.len() >= 60);
        prop_assert_eq!(FrameRepr::parse(&bytes).unwrap(), repr);
    }

    #[test]
    fn sent_frames_classify_back(vlan in vlan(), ours in mac(), peer in mac(), vip in ip4(), pip in ip4(),
                                 vip6 in ip6_non_mc(), lla in ip6_non_mc(), peer6 in ip6_non_mc(),
                                 flags in flags(), ident in any::<u16>(),
                                 seq in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..100)) {
        let frame = |src, dst, payload| FrameRepr { src, dst, vlan, payload }.to_vec().unwrap();
        let arp = |operation, target_mac, target_ip| PayloadRepr::Arp(ArpRepr {
            operation, sender_mac: ours, sender_ip: vip, target_mac, target_ip });
        let f = frame(ours, peer, arp(ArpOperation::Reply, peer, pip));
        prop_assert_eq!(parse_inbound(&f).unwrap(), Inbound::ArpReply(ArpMessage {
            vlan, eth_src: ours, eth_dst: peer, sender_mac: ours, sender_ip: vip,
            target_mac: peer, target_ip: pip }));
        for op in [ArpOperation::Request, ArpOperation::Reply] {
            let f = frame(ours, Mac::BROADCAST, arp(op, Mac::BROADCAST, vip));
            match parse_inbound(&f).unwrap() {
                Inbound::ArpRequest(m) | Inbound::ArpReply(m) => {
                    prop_assert_eq!(m.vlan, vlan);
                    prop_assert_eq!((m.eth_dst, m.sender_mac, m.target_mac), (Mac::BROADCAST, ours, Mac::BROADCAST));
                    prop_assert_eq!((m.sender_ip, m.target_ip), (vip, vip));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        // NA to a unicast peer: any flag combination is valid.
        let f = frame(ours, peer, PayloadRepr::Icmpv6 { src: lla, dst: peer6, hop_limit: NDP_HOP_LIMIT,
            icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target: vip6, lla: Some(ours) }) });
        prop_assert_eq!(parse_inbound(&f).unwrap(), Inbound::NeighborAdvertisement(Advertisement {
            vlan, eth_src: ours, eth_dst: peer, src_ip: lla, dst_ip: peer6, target: vip6,
            target_lla: Some(ours), flags }));
        let group = wire::solicited_node_multicast(vip6);
        let f = frame(peer, wire::ipv6_multicast_mac(group), PayloadRepr::Icmpv6 { src: peer6, dst: group,
            hop_limit: NDP_HOP_LIMIT, icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target: vip6, lla: Some(peer) }) });
        prop_assert_eq!(parse_inbound(&f).unwrap(), Inbound::NeighborSolicitation(Solicitation {
            vlan, eth_src: peer, eth_dst: wire::solicited_node_multicast_mac(vip6), src_ip: peer6,
            dst_ip: group, target: vip6, source_lla: Some(peer) }));
        // Echo replies parse back as replies (Other at the classification level).
        let reply4 = PayloadRepr::Icmpv4 { src: vip, dst: pip, ttl: 64,
            icmp: Icmpv4Repr::EchoReply { ident, seq, data: &data } };
        let f = frame(ours, peer, reply4);
        prop_assert_eq!(parse_inbound(&f).unwrap(), Inbound::Other);
        prop_assert_eq!(FrameRepr::parse(&f).unwrap().payload, reply4);
        let reply6 = PayloadRepr::Icmpv6 { src: vip6, dst: peer6, hop_limit: 64,
            icmp: Icmpv6Repr::EchoReply { ident, seq, data: &data } };
        let f = frame(ours, peer, reply6);
        prop_assert_eq!(FrameRepr::parse(&f).unwrap().payload, reply6);
    }

    #[test]
    fn any_bytes_parse_or_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_inbound(&bytes);
        let _ = FrameRepr::parse(&bytes);
        let _ = ArpRepr::parse(&bytes);
        let _ = Icmpv4Repr::parse(&bytes);
        let _ = NdiscRepr::parse(&bytes);
        let z = Ipv6Addr::UNSPECIFIED;
        let _ = Icmpv6Repr::parse(&z, &z, &bytes);
        if let Ok(p) = Ipv4Packet::new_checked(&bytes[..]) {
            let _ = (Ipv4Repr::parse(&p), p.payload());
        }
        if let Ok(p) = Ipv6Packet::new_checked(&bytes[..]) {
            let _ = (Ipv6Repr::parse(&p), p.payload(), p.flow_label(), p.traffic_class());
        }
        if let Ok(f) = EthernetFrame::new_checked(&bytes[..]) {
            let _ = (EthernetRepr::parse(&f), f.payload(), f.vlan());
        }
        for o in wire::ndp::OptionIter::new(&bytes) {
            let _ = o;
        }
    }

    /// Mutations of valid frames reach deep into the parsers (random bytes rarely pass the
    /// Ethernet and IP checks); they must never panic, and a frame that still parses must
    /// re-emit to something that parses the same.
    #[test]
    fn mutated_frames_never_panic(seed in 0u8..6, vlan in vlan(), ours in mac(), vip6 in ip6_non_mc(),
                                  flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                  cut in any::<usize>()) {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let ns = |src| PayloadRepr::Icmpv6 { src, dst: wire::solicited_node_multicast(vip6),
            hop_limit: NDP_HOP_LIMIT, icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target: vip6, lla: (src != Ipv6Addr::UNSPECIFIED).then_some(ours) }) };
        let payload = match seed {
            0 => PayloadRepr::Arp(ArpRepr { operation: ArpOperation::Reply, sender_mac: ours,
                sender_ip: Ipv4Addr::new(10, 0, 0, 1), target_mac: Mac::BROADCAST,
                target_ip: Ipv4Addr::new(10, 0, 0, 2) }),
            1 => ns(ll),
            2 => PayloadRepr::Icmpv6 { src: ll, dst: "ff02::1".parse().unwrap(), hop_limit: NDP_HOP_LIMIT,
                icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                    flags: NaFlags { router: false, solicited: false, override_: true },
                    target: vip6, lla: Some(ours) }) },
            3 => PayloadRepr::Icmpv4 { src: Ipv4Addr::LOCALHOST, dst: Ipv4Addr::LOCALHOST, ttl: 64,
                icmp: Icmpv4Repr::EchoReply { ident: 1, seq: 2, data: b"abc" } },
            4 => PayloadRepr::Icmpv6 { src: vip6, dst: vip6, hop_limit: 64,
                icmp: Icmpv6Repr::EchoReply { ident: 1, seq: 2, data: b"abc" } },
            _ => ns(Ipv6Addr::UNSPECIFIED),
        };
        let base = FrameRepr { src: ours, dst: Mac::BROADCAST, vlan, payload }.to_vec().unwrap();
        let mut f = base.clone();
        for (pos, val) in flips {
            let i = pos % f.len();
            f[i] = val;
        }
        f.truncate(cut % (f.len() + 1));
        let _ = parse_inbound(&f);
        if let Ok(repr) = FrameRepr::parse(&f) {
            let again = repr.to_vec().unwrap();
            prop_assert_eq!(FrameRepr::parse(&again).unwrap(), repr);
        }
    }
}

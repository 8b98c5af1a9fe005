//! Property tests for `wire`: parse(emit(x)) == x for every Repr and for whole frames, the
//! builders' output classifies back to its inputs, and no byte string makes any parser panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use ferrolb_core::wire::{
    self, arp_reply, echo_reply_v4, echo_reply_v6, gratuitous_arp_reply, gratuitous_arp_request,
    neighbor_advertisement, neighbor_solicitation, parse_inbound, ArpOperation, ArpRepr, EtherType,
    EthernetFrame, EthernetRepr, FrameRepr, Icmpv4Repr, Icmpv6Repr, Inbound, Ipv4Packet, Ipv4Repr,
    Ipv6Packet, Ipv6Repr, Mac, NaFlags, NdiscRepr, PayloadRepr, VlanId,
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
        repr.emit(&mut buf).unwrap();
        buf[repr.header_len()..].copy_from_slice(&payload);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr);
        prop_assert_eq!(frame.payload(), &payload[..]);
    }

    #[test]
    fn arp_roundtrip(repr in arp_repr(), pad in 0usize..32) {
        let mut buf = vec![0xa5u8; repr.buffer_len() + pad];
        repr.emit(&mut buf).unwrap();
        prop_assert_eq!(ArpRepr::parse(&buf).unwrap(), repr);
    }

    #[test]
    fn ipv4_roundtrip(src in ip4(), dst in ip4(), protocol in any::<u8>(), ttl in any::<u8>(),
                      payload_len in 0usize..200, pad in 0usize..16) {
        let repr = Ipv4Repr { src, dst, protocol, ttl, payload_len };
        let mut buf = vec![0u8; repr.header_len() + payload_len + pad];
        repr.emit(&mut buf).unwrap();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr);
        prop_assert_eq!(p.payload().len(), payload_len);
    }

    #[test]
    fn ipv6_roundtrip(src in ip6(), dst in ip6(), next_header in any::<u8>(), hop_limit in any::<u8>(),
                      payload_len in 0usize..200, pad in 0usize..16) {
        let repr = Ipv6Repr { src, dst, next_header, payload_len, hop_limit };
        let mut buf = vec![0u8; repr.header_len() + payload_len + pad];
        repr.emit(&mut buf).unwrap();
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
    fn builders_classify_back(vlan in vlan(), ours in mac(), peer in mac(), vip in ip4(), pip in ip4(),
                              vip6 in ip6_non_mc(), lla in ip6_non_mc(), peer6 in ip6_non_mc(),
                              s in any::<bool>(), o in any::<bool>(), ident in any::<u16>(),
                              seq in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..100)) {
        let f = arp_reply(vlan, ours, vip, peer, pip);
        prop_assert_eq!(parse_inbound(&f).unwrap(), Inbound::ArpReply {
            vlan, eth_src: ours, eth_dst: peer, sender_mac: ours, sender_ip: vip,
            target_mac: peer, target_ip: pip });
        for f in [gratuitous_arp_request(vlan, ours, vip), gratuitous_arp_reply(vlan, ours, vip)] {
            match parse_inbound(&f).unwrap() {
                Inbound::ArpRequest { vlan: v, eth_dst, sender_mac, sender_ip, target_mac, target_ip, .. }
                | Inbound::ArpReply { vlan: v, eth_dst, sender_mac, sender_ip, target_mac, target_ip, .. } => {
                    prop_assert_eq!(v, vlan);
                    prop_assert_eq!((eth_dst, sender_mac, target_mac), (Mac::BROADCAST, ours, Mac::BROADCAST));
                    prop_assert_eq!((sender_ip, target_ip), (vip, vip));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        // Solicited NA to a unicast peer: any flag combination is valid.
        let f = neighbor_advertisement(vlan, ours, lla, peer6, peer, vip6, s, o);
        prop_assert_eq!(parse_inbound(&f).unwrap(), Inbound::NeighborAdvertisement {
            vlan, eth_src: ours, eth_dst: peer, src_ip: lla, dst_ip: peer6, target: vip6,
            target_lla: Some(ours), flags: NaFlags { router: false, solicited: s, override_: o } });
        let f = neighbor_solicitation(vlan, peer, peer6, vip6);
        prop_assert_eq!(parse_inbound(&f).unwrap(), Inbound::NeighborSolicitation {
            vlan, eth_src: peer, eth_dst: wire::solicited_node_multicast_mac(vip6), src_ip: peer6,
            dst_ip: wire::solicited_node_multicast(vip6), target: vip6, source_lla: Some(peer) });
        // Echo replies parse back as replies (Other at the classification level).
        let f = echo_reply_v4(vlan, ours, peer, vip, pip, ident, seq, &data).unwrap();
        prop_assert_eq!(parse_inbound(&f).unwrap(), Inbound::Other);
        let fr = FrameRepr::parse(&f).unwrap();
        prop_assert_eq!(fr.payload, PayloadRepr::Icmpv4 { src: vip, dst: pip, ttl: 64,
            icmp: Icmpv4Repr::EchoReply { ident, seq, data: &data } });
        let f = echo_reply_v6(vlan, ours, peer, vip6, peer6, ident, seq, &data).unwrap();
        let fr = FrameRepr::parse(&f).unwrap();
        prop_assert_eq!(fr.payload, PayloadRepr::Icmpv6 { src: vip6, dst: peer6, hop_limit: 64,
            icmp: Icmpv6Repr::EchoReply { ident, seq, data: &data } });
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
        let base = match seed {
            0 => arp_reply(vlan, ours, Ipv4Addr::new(10, 0, 0, 1), Mac::BROADCAST, Ipv4Addr::new(10, 0, 0, 2)),
            1 => neighbor_solicitation(vlan, ours, "fe80::1".parse().unwrap(), vip6),
            2 => neighbor_advertisement(vlan, ours, "fe80::1".parse().unwrap(), "ff02::1".parse().unwrap(),
                                        Mac::BROADCAST, vip6, false, true),
            3 => echo_reply_v4(vlan, ours, ours, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 2, b"abc").unwrap(),
            4 => echo_reply_v6(vlan, ours, ours, vip6, vip6, 1, 2, b"abc").unwrap(),
            _ => neighbor_solicitation(vlan, ours, Ipv6Addr::UNSPECIFIED, vip6),
        };
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

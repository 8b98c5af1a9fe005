//! Cost of the per-packet work the dataplane does in userspace: classify a received frame and
//! build the answer into a reused buffer. Run: `cargo bench --bench wire`.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrolb_core::wire::{
    parse_inbound, ArpMessage, ArpOperation, ArpRepr, EthernetFrame, FrameRepr, Icmpv6Repr,
    Inbound, Mac, NaFlags, NdiscRepr, PayloadRepr, Solicitation, VlanId, NDP_HOP_LIMIT,
};

const NODE: Mac = Mac([0x02, 0, 0x5e, 0x10, 0, 1]);
const CLIENT: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

/// The reply the dataplane builds for an ARP request or an NS, emitted into `buf`.
fn answer(frame: &[u8], buf: &mut [u8]) -> usize {
    let reply = match parse_inbound(frame) {
        Ok(Inbound::ArpRequest(ArpMessage {
            vlan,
            sender_mac,
            sender_ip,
            target_ip,
            ..
        })) => FrameRepr {
            src: NODE,
            dst: sender_mac,
            vlan,
            payload: PayloadRepr::Arp(ArpRepr {
                operation: ArpOperation::Reply,
                sender_mac: NODE,
                sender_ip: target_ip,
                target_mac: sender_mac,
                target_ip: sender_ip,
            }),
        },
        Ok(Inbound::NeighborSolicitation(Solicitation {
            vlan,
            eth_src,
            src_ip,
            target,
            source_lla,
            ..
        })) => FrameRepr {
            src: NODE,
            dst: source_lla.unwrap_or(eth_src),
            vlan,
            payload: PayloadRepr::Icmpv6 {
                src: target,
                dst: src_ip,
                hop_limit: NDP_HOP_LIMIT,
                icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                    flags: NaFlags {
                        router: false,
                        solicited: true,
                        override_: true,
                    },
                    target,
                    lla: Some(NODE),
                }),
            },
        },
        _ => return 0,
    };
    reply
        .emit(&mut EthernetFrame::new_unchecked(buf))
        .unwrap_or(0)
}

fn arp_request(vlan: Option<VlanId>, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    FrameRepr {
        src: CLIENT,
        dst: Mac::BROADCAST,
        vlan,
        payload: PayloadRepr::Arp(ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: CLIENT,
            sender_ip,
            target_mac: Mac::ZERO,
            target_ip,
        }),
    }
    .to_vec()
    .unwrap()
}

fn neighbor_solicitation(src_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    FrameRepr {
        src: CLIENT,
        dst: ferrolb_core::wire::solicited_node_multicast_mac(target),
        vlan: None,
        payload: PayloadRepr::Icmpv6 {
            src: src_ip,
            dst: ferrolb_core::wire::solicited_node_multicast(target),
            hop_limit: NDP_HOP_LIMIT,
            icmp: Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target,
                lla: Some(CLIENT),
            }),
        },
    }
    .to_vec()
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let vip = Ipv4Addr::new(192, 168, 10, 240);
    let vip6: Ipv6Addr = "2001:db8:10::f0".parse().unwrap();
    let client6: Ipv6Addr = "2001:db8:10::5".parse().unwrap();
    let frames = [
        (
            "arp",
            arp_request(None, Ipv4Addr::new(192, 168, 10, 5), vip),
        ),
        (
            "arp_vlan",
            arp_request(VlanId::new(100), Ipv4Addr::new(192, 168, 10, 5), vip),
        ),
        ("ns", neighbor_solicitation(client6, vip6)),
    ];
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in &frames {
        g.bench_function(format!("parse_inbound/{name}"), |b| {
            b.iter(|| parse_inbound(black_box(frame)).is_ok())
        });
        let mut buf = [0u8; 128];
        g.bench_function(format!("request_to_reply/{name}"), |b| {
            b.iter(|| answer(black_box(frame), &mut buf))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

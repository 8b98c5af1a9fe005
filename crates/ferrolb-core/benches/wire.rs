//! Cost of the per-packet work the dataplane does in userspace: classify a received frame and
//! build the answer into a reused buffer. Run: `cargo bench --bench wire`.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrolb_core::wire::{
    arp_reply_into, arp_request, neighbor_advertisement_into, neighbor_solicitation, parse_inbound,
    Inbound, Mac, VlanId,
};

const NODE: Mac = Mac([0x02, 0, 0x5e, 0x10, 0, 1]);
const CLIENT: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

fn answer(frame: &[u8], buf: &mut [u8]) -> usize {
    match parse_inbound(frame) {
        Ok(Inbound::ArpRequest {
            vlan,
            sender_mac,
            sender_ip,
            target_ip,
            ..
        }) => arp_reply_into(buf, vlan, NODE, target_ip, sender_mac, sender_ip).unwrap_or(0),
        Ok(Inbound::NeighborSolicitation {
            vlan,
            eth_src,
            src_ip,
            target,
            source_lla,
            ..
        }) => neighbor_advertisement_into(
            buf,
            vlan,
            NODE,
            target,
            src_ip,
            source_lla.unwrap_or(eth_src),
            target,
            true,
            true,
        )
        .unwrap_or(0),
        _ => 0,
    }
}

fn bench(c: &mut Criterion) {
    let vip = Ipv4Addr::new(192, 168, 10, 240);
    let vip6: Ipv6Addr = "2001:db8:10::f0".parse().unwrap();
    let client6: Ipv6Addr = "2001:db8:10::5".parse().unwrap();
    let frames = [
        (
            "arp",
            arp_request(None, CLIENT, Ipv4Addr::new(192, 168, 10, 5), vip),
        ),
        (
            "arp_vlan",
            arp_request(
                VlanId::new(100),
                CLIENT,
                Ipv4Addr::new(192, 168, 10, 5),
                vip,
            ),
        ),
        ("ns", neighbor_solicitation(None, CLIENT, client6, vip6)),
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

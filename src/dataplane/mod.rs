//! L2 dataplane: raw packet sockets answering ARP / NDP for owned IPs, gratuitous
//! announcements, duplicate-responder detection.

pub mod bpf;
pub mod iface;
pub mod schedule;
pub mod sys;

//! Classic BPF socket filter attached to every packet socket (pure).
//!
//! The kernel runs this program on every frame seen by the interface, so userspace
//! only wakes for the frames the responder acts on:
//!
//! * ARP with opcode request (1) or reply (2) — replies are needed for duplicate detection;
//! * IPv6 + ICMPv6 (no extension headers, as NDP is always sent) of type
//!   Neighbor Solicitation (135) or Neighbor Advertisement (136);
//! * when ping answering is enabled: ICMPv6 Echo Request (128) and unfragmented
//!   IPv4 ICMP Echo Request (8).
//!
//! The same tests are applied behind one in-band 802.1Q tag. Frames whose VLAN tag the
//! kernel already stripped into packet metadata are rejected: they belong to the VLAN
//! sub-interface (which gets its own socket), and answering them untagged on the parent
//! would put the reply on the wrong VLAN. Frames this host sends itself
//! (`PACKET_OUTGOING`) are rejected too.
//!
//! [`interpret`] is a small cBPF interpreter used by the unit tests to check the program
//! against real frames without a kernel.

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Generic operand.
    pub k: u32,
}

/// Which frames the filter lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterOptions {
    /// Also accept ICMP / ICMPv6 echo requests (optional ping answering).
    pub echo: bool,
}

// Opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_B_IND: u16 = 0x50;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// `SKF_AD_OFF`: base of the ancillary-data load offsets.
const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
/// `SKF_AD_PKTTYPE`.
const SKF_AD_PKTTYPE: u32 = 4;
/// `SKF_AD_VLAN_TAG_PRESENT`.
const SKF_AD_VLAN_TAG_PRESENT: u32 = 48;
/// `PACKET_OUTGOING`.
const PACKET_OUTGOING: u32 = 4;

/// Bytes of an accepted frame handed to userspace (more than any frame we parse).
pub const SNAPLEN: u32 = 0xffff;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Next,
    Accept,
    Drop,
    Label(u8),
}

enum Item {
    Insn(Insn),
    Jump {
        code: u16,
        k: u32,
        t: Target,
        f: Target,
    },
    Label(u8),
}

/// A tiny assembler resolving forward jump labels.
struct Asm {
    items: Vec<Item>,
}

impl Asm {
    fn ld(&mut self, code: u16, k: u32) {
        self.items.push(Item::Insn(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }));
    }
    fn jeq(&mut self, k: u32, t: Target, f: Target) {
        self.items.push(Item::Jump {
            code: JEQ_K,
            k,
            t,
            f,
        });
    }
    fn jset(&mut self, k: u32, t: Target, f: Target) {
        self.items.push(Item::Jump {
            code: JSET_K,
            k,
            t,
            f,
        });
    }
    fn label(&mut self, l: u8) {
        self.items.push(Item::Label(l));
    }

    fn finish(mut self) -> Vec<Insn> {
        const ACCEPT: u8 = 250;
        const DROP: u8 = 251;
        self.items.push(Item::Label(ACCEPT));
        self.items.push(Item::Insn(Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SNAPLEN,
        }));
        self.items.push(Item::Label(DROP));
        self.items.push(Item::Insn(Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0,
        }));
        // Label positions.
        let mut pos = std::collections::HashMap::new();
        let mut n = 0usize;
        for it in &self.items {
            match it {
                Item::Label(l) => {
                    pos.insert(*l, n);
                }
                _ => n += 1,
            }
        }
        let resolve = |at: usize, t: Target| -> u8 {
            let dest = match t {
                Target::Next => at + 1,
                Target::Accept => pos[&ACCEPT],
                Target::Drop => pos[&DROP],
                Target::Label(l) => pos[&l],
            };
            let off = dest - (at + 1);
            u8::try_from(off).expect("BPF jump too long")
        };
        let mut out = Vec::with_capacity(n);
        for it in &self.items {
            match it {
                Item::Label(_) => {}
                Item::Insn(i) => out.push(*i),
                Item::Jump { code, k, t, f } => {
                    let at = out.len();
                    out.push(Insn {
                        code: *code,
                        jt: resolve(at, *t),
                        jf: resolve(at, *f),
                        k: *k,
                    });
                }
            }
        }
        out
    }
}

/// Emits the tests for one frame layout whose L3 header starts at `base`
/// (14 untagged, 18 behind one 802.1Q tag). Expects the EtherType in A.
fn layer3(a: &mut Asm, base: u32, opts: FilterOptions, id: u8) {
    let (arp, v6, v4) = (id, id + 1, id + 2);
    a.jeq(0x0806, Target::Label(arp), Target::Next);
    if opts.echo {
        a.jeq(0x86dd, Target::Label(v6), Target::Next);
        a.jeq(0x0800, Target::Label(v4), Target::Drop);
    } else {
        a.jeq(0x86dd, Target::Label(v6), Target::Drop);
    }
    // ARP: opcode request or reply.
    a.label(arp);
    a.ld(LD_H_ABS, base + 6);
    a.jeq(1, Target::Accept, Target::Next);
    a.jeq(2, Target::Accept, Target::Drop);
    // IPv6: next header ICMPv6, type NS / NA (/ echo request).
    a.label(v6);
    a.ld(LD_B_ABS, base + 6);
    a.jeq(58, Target::Next, Target::Drop);
    a.ld(LD_B_ABS, base + 40);
    a.jeq(135, Target::Accept, Target::Next);
    if opts.echo {
        a.jeq(136, Target::Accept, Target::Next);
        a.jeq(128, Target::Accept, Target::Drop);
        // IPv4: protocol ICMP, not a fragment, type echo request.
        a.label(v4);
        a.ld(LD_B_ABS, base + 9);
        a.jeq(1, Target::Next, Target::Drop);
        a.ld(LD_H_ABS, base + 6);
        a.jset(0x3fff, Target::Drop, Target::Next);
        a.ld(LDX_B_MSH, base);
        a.ld(LD_B_IND, base);
        a.jeq(8, Target::Accept, Target::Drop);
    } else {
        a.jeq(136, Target::Accept, Target::Drop);
    }
}

/// Builds the filter program.
pub fn program(opts: FilterOptions) -> Vec<Insn> {
    let mut a = Asm { items: Vec::new() };
    const TAGGED: u8 = 1;
    a.ld(LD_W_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE);
    a.jeq(PACKET_OUTGOING, Target::Drop, Target::Next);
    a.ld(LD_W_ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT);
    a.jeq(0, Target::Next, Target::Drop);
    a.ld(LD_H_ABS, 12);
    a.jeq(0x8100, Target::Label(TAGGED), Target::Next);
    layer3(&mut a, 14, opts, 10);
    a.label(TAGGED);
    a.ld(LD_H_ABS, 16);
    layer3(&mut a, 18, opts, 20);
    a.finish()
}

/// Packet metadata visible to the filter through ancillary loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// `skb->pkt_type` (`PACKET_HOST` 0, `PACKET_BROADCAST` 1, … `PACKET_OUTGOING` 4).
    pub pkttype: u32,
    /// Whether the kernel stripped a VLAN tag into metadata.
    pub vlan_tag_present: bool,
}

/// Runs a cBPF program over `pkt` the way the kernel does (out-of-bounds load ⇒ return 0)
/// and returns the number of bytes accepted (0 = dropped). Supports the opcodes
/// [`program`] uses; anything else returns `None`.
pub fn interpret(prog: &[Insn], pkt: &[u8], meta: Meta) -> Option<u32> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0usize;
    let load = |off: u32, size: usize| -> Option<u32> {
        let off = off as usize;
        let b = pkt.get(off..off.checked_add(size)?)?;
        Some(b.iter().fold(0u32, |acc, &v| (acc << 8) | u32::from(v)))
    };
    while let Some(i) = prog.get(pc) {
        pc += 1;
        match i.code {
            LD_W_ABS | LD_H_ABS | LD_B_ABS if i.k >= SKF_AD_OFF => {
                a = match i.k - SKF_AD_OFF {
                    SKF_AD_PKTTYPE => meta.pkttype,
                    SKF_AD_VLAN_TAG_PRESENT => u32::from(meta.vlan_tag_present),
                    _ => return None,
                }
            }
            LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                let size = match i.code {
                    LD_W_ABS => 4,
                    LD_H_ABS => 2,
                    _ => 1,
                };
                match load(i.k, size) {
                    Some(v) => a = v,
                    None => return Some(0),
                }
            }
            LD_B_IND => match load(x.wrapping_add(i.k), 1) {
                Some(v) => a = v,
                None => return Some(0),
            },
            LDX_B_MSH => match load(i.k, 1) {
                Some(v) => x = 4 * (v & 0xf),
                None => return Some(0),
            },
            JEQ_K | JSET_K => {
                let cond = if i.code == JEQ_K {
                    a == i.k
                } else {
                    a & i.k != 0
                };
                pc += usize::from(if cond { i.jt } else { i.jf });
            }
            RET_K => return Some(i.k),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    fn tagged(inner: &[u8]) -> Vec<u8> {
        let mut f = inner[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        f.extend_from_slice(&inner[12..]);
        f
    }
    fn arp(op: u16) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4];
        p.extend_from_slice(&op.to_be_bytes());
        p.extend_from_slice(&[0; 20]);
        eth(0x0806, &p)
    }
    fn icmp6(next: u8, ty: u8) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, next, 255];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[ty, 0, 0, 0]);
        p.extend_from_slice(&[0; 20]);
        eth(0x86dd, &p)
    }
    fn icmp4(ihl: u8, proto: u8, frag: u16, ty: u8) -> Vec<u8> {
        let mut p = vec![0x40 | ihl, 0, 0, 0, 0, 0];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0]);
        p.extend_from_slice(&[0; 8]);
        p.resize(usize::from(ihl) * 4, 0);
        p.extend_from_slice(&[ty, 0, 0, 0, 0, 0, 0, 0]);
        eth(0x0800, &p)
    }
    fn run(opts: FilterOptions, f: &[u8]) -> bool {
        run_meta(opts, f, Meta::default())
    }
    fn run_meta(opts: FilterOptions, f: &[u8], m: Meta) -> bool {
        interpret(&program(opts), f, m).expect("unsupported opcode") > 0
    }
    const OFF: FilterOptions = FilterOptions { echo: false };
    const ON: FilterOptions = FilterOptions { echo: true };

    #[test]
    fn arp_requests_and_replies_pass_other_opcodes_do_not() {
        for o in [OFF, ON] {
            assert!(run(o, &arp(1)));
            assert!(run(o, &arp(2)));
            assert!(!run(o, &arp(3)));
            assert!(run(o, &tagged(&arp(1))));
            assert!(run(o, &tagged(&arp(2))));
            assert!(!run(o, &tagged(&arp(4))));
        }
    }

    #[test]
    fn ndp_passes_other_icmpv6_and_ipv6_do_not() {
        for o in [OFF, ON] {
            assert!(run(o, &icmp6(58, 135)));
            assert!(run(o, &icmp6(58, 136)));
            assert!(run(o, &tagged(&icmp6(58, 135))));
            assert!(!run(o, &icmp6(58, 134)), "router advertisement");
            assert!(!run(o, &icmp6(58, 129)), "echo reply");
            assert!(!run(o, &icmp6(6, 135)), "TCP");
            assert!(!run(o, &icmp6(0, 135)), "hop-by-hop ext header");
        }
    }

    #[test]
    fn echo_requests_only_with_echo_option() {
        assert!(!run(OFF, &icmp6(58, 128)));
        assert!(run(ON, &icmp6(58, 128)));
        assert!(run(ON, &tagged(&icmp6(58, 128))));
        assert!(!run(OFF, &icmp4(5, 1, 0, 8)));
        assert!(run(ON, &icmp4(5, 1, 0, 8)));
        assert!(run(ON, &icmp4(7, 1, 0, 8)), "IPv4 options");
        assert!(run(ON, &tagged(&icmp4(5, 1, 0, 8))));
        assert!(!run(ON, &icmp4(5, 1, 0, 0)), "echo reply");
        assert!(!run(ON, &icmp4(5, 6, 0, 8)), "TCP");
        assert!(!run(ON, &icmp4(5, 1, 0x2000, 8)), "first fragment (MF)");
        assert!(!run(ON, &icmp4(5, 1, 0x0010, 8)), "later fragment");
        assert!(run(ON, &icmp4(5, 1, 0x4000, 8)), "DF set");
    }

    #[test]
    fn other_ethertypes_outgoing_and_stripped_vlan_dropped() {
        for o in [OFF, ON] {
            assert!(!run(o, &eth(0x0800, &[0x45; 40])) || o.echo);
            assert!(!run(o, &eth(0x88cc, &[0; 40])), "LLDP");
            assert!(!run(o, &eth(0x88a8, &[0; 40])), "QinQ outer");
            let out = Meta {
                pkttype: PACKET_OUTGOING,
                vlan_tag_present: false,
            };
            assert!(!run_meta(o, &arp(1), out));
            let vlan = Meta {
                pkttype: 1,
                vlan_tag_present: true,
            };
            assert!(!run_meta(o, &arp(1), vlan));
            let bcast = Meta {
                pkttype: 1,
                vlan_tag_present: false,
            };
            assert!(run_meta(o, &arp(1), bcast));
        }
    }

    #[test]
    fn truncated_frames_are_dropped_without_fault() {
        for o in [OFF, ON] {
            for f in [arp(1), icmp6(58, 135), icmp4(5, 1, 0, 8), tagged(&arp(1))] {
                for n in 0..f.len() {
                    let acc = interpret(&program(o), &f[..n], Meta::default()).unwrap();
                    // A truncated frame may only pass if the bytes the filter reads are present.
                    if acc > 0 {
                        assert!(n >= 22, "accepted {n}-byte prefix");
                    }
                }
            }
        }
    }

    #[test]
    fn program_is_small_and_ends_in_returns() {
        for o in [OFF, ON] {
            let p = program(o);
            assert!(p.len() < 64, "{}", p.len());
            assert_eq!(p.last().unwrap().code, RET_K);
        }
    }
}

//! Interfaces (pure): rtnetlink link-message parsing and responder eligibility.
//!
//! The shell reads `RTM_NEWLINK` / `RTM_DELLINK` messages from a `NETLINK_ROUTE` socket
//! subscribed to `RTMGRP_LINK` (plus one `RTM_GETLINK` dump at start and after an
//! overrun); [`parse_messages`] turns the bytes into [`LinkMessage`]s and [`eligibility`]
//! decides whether the dataplane runs a responder on the link.

use regex::RegexSet;

/// MetalLB's default interface exclude list (`config/native/exclude-l2-config.yaml`).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^nodelocaldns.*",
    "^lxc.*",
];

/// `IFF_UP`.
pub const IFF_UP: u32 = 0x1;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 0x8;
/// `IFF_RUNNING` (operationally up).
pub const IFF_RUNNING: u32 = 0x40;
/// `IFF_NOARP`.
pub const IFF_NOARP: u32 = 0x80;
/// `ARPHRD_ETHER`.
pub const ARPHRD_ETHER: u16 = 1;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_DELLINK`.
pub const RTM_DELLINK: u16 = 17;
/// `RTM_GETLINK`.
pub const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;

/// A network link as reported by rtnetlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it is a 6-byte MAC.
    pub mac: Option<[u8; 6]>,
    /// `IFF_*` flags.
    pub flags: u32,
    /// `ARPHRD_*` link type.
    pub link_type: u16,
    /// Index of the master (bridge / bond) the link is enslaved to.
    pub master: Option<u32>,
}

/// One decoded rtnetlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMessage {
    /// Link created or changed (also the dump entries).
    New(Link),
    /// Link removed.
    Del {
        /// Interface index.
        index: u32,
    },
    /// End of a dump.
    Done,
    /// The kernel returned an error (negative errno) for our request.
    Error(i32),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    /// Header or payload shorter than announced.
    #[error("truncated netlink message")]
    Truncated,
}

fn u16_ne(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}
fn u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes every message in a netlink datagram. Messages of other types are skipped.
pub fn parse_messages(mut buf: &[u8]) -> Result<Vec<LinkMessage>, NetlinkError> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32_ne(&buf[0..4]) as usize;
        let ty = u16_ne(&buf[4..6]);
        if len < 16 || len > buf.len() {
            return Err(NetlinkError::Truncated);
        }
        let payload = &buf[16..len];
        match ty {
            NLMSG_DONE => out.push(LinkMessage::Done),
            NLMSG_ERROR => {
                if payload.len() < 4 {
                    return Err(NetlinkError::Truncated);
                }
                let errno = u32_ne(&payload[0..4]) as i32;
                if errno != 0 {
                    out.push(LinkMessage::Error(errno));
                }
            }
            RTM_NEWLINK | RTM_DELLINK => {
                let link = parse_ifinfo(payload)?;
                out.push(if ty == RTM_NEWLINK {
                    LinkMessage::New(link)
                } else {
                    LinkMessage::Del { index: link.index }
                });
            }
            _ => {}
        }
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or(&[]);
    }
    Ok(out)
}

fn parse_ifinfo(p: &[u8]) -> Result<Link, NetlinkError> {
    if p.len() < 16 {
        return Err(NetlinkError::Truncated);
    }
    let mut link = Link {
        link_type: u16_ne(&p[2..4]),
        index: u32_ne(&p[4..8]),
        flags: u32_ne(&p[8..12]),
        name: String::new(),
        mac: None,
        master: None,
    };
    let mut attrs = &p[16..];
    while attrs.len() >= 4 {
        let alen = usize::from(u16_ne(&attrs[0..2]));
        let aty = u16_ne(&attrs[2..4]) & 0x3fff;
        if alen < 4 || alen > attrs.len() {
            return Err(NetlinkError::Truncated);
        }
        let data = &attrs[4..alen];
        match aty {
            IFLA_IFNAME => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                link.name = String::from_utf8_lossy(&data[..end]).into_owned();
            }
            IFLA_ADDRESS if data.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(data);
                link.mac = Some(m);
            }
            IFLA_MASTER if data.len() >= 4 => {
                let m = u32_ne(data);
                link.master = (m != 0).then_some(m);
            }
            _ => {}
        }
        attrs = attrs.get((alen + 3) & !3..).unwrap_or(&[]);
    }
    Ok(link)
}

/// Builds an `RTM_GETLINK` dump request with sequence number `seq`.
pub fn dump_request(seq: u32) -> Vec<u8> {
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(&32u32.to_ne_bytes());
    m.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[0u8; 16]); // ifinfomsg, AF_UNSPEC
    m
}

/// Interface-name exclusion (regular expressions, matched against the whole name as
/// written: anchor them with `^`/`$` as MetalLB's list does).
#[derive(Debug, Clone)]
pub struct ExcludeList {
    set: RegexSet,
}

impl ExcludeList {
    /// Compiles the patterns; an invalid one is reported with its text.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, regex::Error> {
        Ok(Self {
            set: RegexSet::new(patterns.iter().map(|p| p.as_ref()))?,
        })
    }

    /// Whether `name` matches a pattern.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }
}

impl Default for ExcludeList {
    /// MetalLB's [`DEFAULT_EXCLUDES`].
    fn default() -> Self {
        Self::new(DEFAULT_EXCLUDES).expect("default excludes compile")
    }
}

/// Why no responder runs on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Not administratively and operationally up.
    Down,
    /// Loopback device.
    Loopback,
    /// `IFF_NOARP` set.
    NoArp,
    /// Not an Ethernet link (tun, wireguard, …).
    NotEthernet,
    /// No 6-byte hardware address.
    NoMac,
    /// Enslaved to a bridge or bond (the master answers instead).
    HasMaster,
    /// Name matches the exclude list.
    Excluded,
}

/// Decides whether a responder runs on `link`.
pub fn eligibility(link: &Link, excludes: &ExcludeList) -> Result<[u8; 6], SkipReason> {
    if link.flags & IFF_LOOPBACK != 0 {
        return Err(SkipReason::Loopback);
    }
    if excludes.matches(&link.name) {
        return Err(SkipReason::Excluded);
    }
    if link.master.is_some() {
        return Err(SkipReason::HasMaster);
    }
    if link.link_type != ARPHRD_ETHER {
        return Err(SkipReason::NotEthernet);
    }
    if link.flags & IFF_NOARP != 0 {
        return Err(SkipReason::NoArp);
    }
    if link.flags & (IFF_UP | IFF_RUNNING) != IFF_UP | IFF_RUNNING {
        return Err(SkipReason::Down);
    }
    match link.mac {
        Some(m) if m != [0; 6] => Ok(m),
        _ => Err(SkipReason::NoMac),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }
    fn msg(ty: u16, link: &Link) -> Vec<u8> {
        let mut p = vec![0u8, 0];
        p.extend_from_slice(&link.link_type.to_ne_bytes());
        p.extend_from_slice(&link.index.to_ne_bytes());
        p.extend_from_slice(&link.flags.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        let mut name = link.name.as_bytes().to_vec();
        name.push(0);
        p.extend(attr(IFLA_IFNAME, &name));
        if let Some(m) = link.mac {
            p.extend(attr(IFLA_ADDRESS, &m));
        }
        if let Some(m) = link.master {
            p.extend(attr(IFLA_MASTER, &m.to_ne_bytes()));
        }
        p.extend(attr(26, &[1, 2, 3])); // unknown attribute, skipped
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + p.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(p);
        m
    }
    fn eth0() -> Link {
        Link {
            index: 2,
            name: "eth0".into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            flags: IFF_UP | IFF_RUNNING | 0x2,
            link_type: ARPHRD_ETHER,
            master: None,
        }
    }

    #[test]
    fn parses_new_del_done_error_in_one_datagram() {
        let mut l2 = eth0();
        l2.index = 7;
        l2.name = "bond0-slave".into();
        l2.master = Some(3);
        l2.mac = None;
        let mut buf = msg(RTM_NEWLINK, &eth0());
        buf.extend(msg(RTM_NEWLINK, &l2));
        buf.extend(msg(RTM_DELLINK, &l2));
        let mut done = vec![20, 0, 0, 0];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0; 14]);
        buf.extend(&done);
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0; 10]);
        err.extend_from_slice(&(-1i32).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        buf.extend(&err);
        assert_eq!(
            parse_messages(&buf).unwrap(),
            vec![
                LinkMessage::New(eth0()),
                LinkMessage::New(l2),
                LinkMessage::Del { index: 7 },
                LinkMessage::Done,
                LinkMessage::Error(-1)
            ]
        );
    }

    #[test]
    fn dump_request_is_a_well_formed_getlink() {
        let r = dump_request(9);
        assert_eq!(r.len(), 32);
        assert_eq!(u32_ne(&r[0..4]), 32);
        assert_eq!(u16_ne(&r[4..6]), RTM_GETLINK);
        assert_eq!(u32_ne(&r[8..12]), 9);
    }

    #[test]
    fn eligibility_rules() {
        let ex = ExcludeList::default();
        assert_eq!(eligibility(&eth0(), &ex), Ok([2, 0, 0, 0, 0, 1]));
        let with = |f: &dyn Fn(&mut Link)| {
            let mut l = eth0();
            f(&mut l);
            eligibility(&l, &ex)
        };
        assert_eq!(with(&|l| l.flags &= !IFF_UP), Err(SkipReason::Down));
        assert_eq!(with(&|l| l.flags &= !IFF_RUNNING), Err(SkipReason::Down));
        assert_eq!(with(&|l| l.flags |= IFF_NOARP), Err(SkipReason::NoArp));
        assert_eq!(
            with(&|l| l.flags |= IFF_LOOPBACK),
            Err(SkipReason::Loopback)
        );
        assert_eq!(with(&|l| l.master = Some(4)), Err(SkipReason::HasMaster));
        assert_eq!(with(&|l| l.link_type = 65534), Err(SkipReason::NotEthernet));
        assert_eq!(with(&|l| l.mac = None), Err(SkipReason::NoMac));
        assert_eq!(with(&|l| l.mac = Some([0; 6])), Err(SkipReason::NoMac));
        for n in [
            "docker0",
            "cbr0",
            "dummy1",
            "virbr0",
            "lxcbr0",
            "veth12ab",
            "lo",
            "cali123",
            "tunl0",
            "flannel.1",
            "kube-ipvs0",
            "cni0",
            "nodelocaldns",
            "lxc_health",
        ] {
            assert_eq!(
                with(&|l| l.name = n.into()),
                Err(SkipReason::Excluded),
                "{n}"
            );
        }
        for n in [
            "eth0",
            "ens3",
            "bond0",
            "br0",
            "eth0.100",
            "lo0",
            "mydocker0",
        ] {
            assert!(with(&|l| l.name = n.into()).is_ok(), "{n}");
        }
    }

    #[test]
    fn exclude_list_is_overridable_and_reports_bad_patterns() {
        let ex = ExcludeList::new(&["^eth1$"]).unwrap();
        assert!(ex.matches("eth1"));
        assert!(!ex.matches("veth0"));
        assert!(ExcludeList::new(&["(unclosed"]).is_err());
        assert!(!ExcludeList::new::<&str>(&[]).unwrap().matches("anything"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_messages(&buf);
        }
        #[test]
        fn roundtrip(index in 1u32.., flags in any::<u32>(), name in "[a-z0-9.]{1,15}",
                     mac in proptest::option::of(any::<[u8; 6]>()), master in proptest::option::of(1u32..)) {
            let l = Link { index, name, mac, flags, link_type: ARPHRD_ETHER, master };
            prop_assert_eq!(parse_messages(&msg(RTM_NEWLINK, &l)).unwrap(), vec![LinkMessage::New(l)]);
        }
    }
}

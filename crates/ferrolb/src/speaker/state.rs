//! What a speaker publishes about itself for `ferrolb explain`: a ConfigMap named like its
//! node Lease ([`state_object_name`]) holding JSON [`SpeakerState`] under [`STATE_KEY`],
//! written on change by [`super::publish::StatePublisher`]. It is informational: nothing in
//! the speaker or the controller reads it.
//!
//! Speakers before this one published the same JSON as an annotation of their node Lease
//! ([`SPEAKER_STATE_ANNOTATION`]); `ferrolb explain` still reads it there when a node has no
//! state ConfigMap, and a speaker's first renewal of a Lease carrying it removes it.
//!
//! [`Board`] is the pure bookkeeping: the speaker loop reports its permission, the peers it
//! hears and what it announces; the dataplane reports duplicate responders; the publisher
//! renders the state with the interfaces the responder runs on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::announcer::DuplicateResponder;
use super::plan::Announced;
use crate::dense::Dense;
use crate::election::Interfaces;

/// Node Lease annotation in which earlier speakers published their [`SpeakerState`] (JSON).
pub const SPEAKER_STATE_ANNOTATION: &str = "ferrolb.io/speaker-state";

/// Key of the state ConfigMap's data holding the [`SpeakerState`] (JSON).
pub const STATE_KEY: &str = "state";

/// Label value (`app.kubernetes.io/component`) of the state ConfigMaps.
pub const STATE_COMPONENT: &str = "speaker-state";

/// Name of `node`'s state ConfigMap: the name of its node Lease.
pub fn state_object_name(node: &str) -> String {
    super::liveness::node_lease_name(node)
}

/// Labels of a state ConfigMap (what `ferrolb explain` lists them by).
pub fn state_labels() -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name".to_string(), "ferrolb".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            STATE_COMPONENT.to_string(),
        ),
    ]
    .into()
}

/// Label selector of the state ConfigMaps.
pub fn state_selector() -> String {
    format!("app.kubernetes.io/component={STATE_COMPONENT}")
}

/// `node`'s state ConfigMap holding `state` (JSON), owned by `owner`.
pub fn state_object(
    node: &str,
    state: &str,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> ConfigMap {
    ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(state_object_name(node)),
            labels: Some(state_labels()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        data: Some([(STATE_KEY.to_string(), state.to_string())].into()),
        ..Default::default()
    }
}

/// How long a duplicate responder stays published after it was last seen.
pub const DUPLICATE_MEMORY: Duration = Duration::from_secs(600);

/// Most announced IPs the state lists (the rest are counted in `announcingTotal`; the
/// announcer of an unlisted IP is told from its owner record and ServiceL2Status). The
/// state is written whole on every change: it must stay small whatever the number of VIPs.
pub const PUBLISHED_IPS: usize = 64;

/// Most duplicate responders the state lists.
pub const PUBLISHED_DUPLICATES: usize = 16;

/// Most bytes the state may take; beyond (thousands of members unheard) the list of
/// members not heard is left out and `truncated` says so. Far below the 1 MiB
/// kube-apiserver allows for a ConfigMap (and the 256 KiB for an object's annotations,
/// where earlier speakers kept it), so its write is never refused for its size.
pub const STATE_LIMIT: usize = 16 * 1024;

/// The published state of one speaker. Field names are stable (camelCase JSON).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct SpeakerState {
    /// This node may announce: its Lease is renewed in time and, with heartbeats on, it
    /// hears a quorum (false: fenced, it answers for nothing).
    pub may_announce: bool,
    /// Heartbeats are on (the heartbeat key was loaded).
    pub heartbeats: bool,
    /// How many peers this node counts as members (its heartbeat targets).
    pub member_count: usize,
    /// The members whose heartbeats this node does not hear now (sorted). Only the
    /// exceptions are listed, so the state stays small and unchanged while every member
    /// is heard, whatever the number of nodes.
    pub not_heard: Vec<String>,
    /// The interfaces the ARP/NDP responder runs on, with their MACs.
    pub interfaces: Vec<Nic>,
    /// The IPs this node answers for now (at most [`PUBLISHED_IPS`]).
    pub announcing: Vec<AnnouncedIp>,
    /// How many IPs this node answers for (`announcing` may list fewer).
    pub announcing_total: usize,
    /// Other MACs seen answering for IPs this node answers for (the last 10 minutes; at
    /// most [`PUBLISHED_DUPLICATES`]).
    pub duplicates: Vec<Duplicate>,
    /// `not_heard` was left out to keep the state within [`STATE_LIMIT`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One interface of the responder.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", default)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// Its MAC (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
}

/// One IP this node answers for.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct AnnouncedIp {
    /// The IP.
    pub ip: String,
    /// The interfaces the L2Advertisements allow (empty: every interface of the responder).
    pub interfaces: Vec<String>,
    /// When this node started answering for it (RFC 3339).
    pub since: String,
}

/// Another MAC answering for an IP this node answers for.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Duplicate {
    /// The IP.
    pub ip: String,
    /// Interface it was seen on.
    pub interface: String,
    /// The other responder's MAC.
    pub mac: String,
    /// When it was first seen (RFC 3339).
    pub first_seen: String,
}

impl SpeakerState {
    /// Reads a state ConfigMap (None: no state in it, or unreadable).
    pub fn of_config_map(cm: &ConfigMap) -> Option<Self> {
        serde_json::from_str(cm.data.as_ref()?.get(STATE_KEY)?).ok()
    }

    /// Reads the annotation an earlier speaker left on its node Lease (None: absent or
    /// unreadable).
    pub fn of_lease(lease: &k8s_openapi::api::coordination::v1::Lease) -> Option<Self> {
        let raw = lease
            .metadata
            .annotations
            .as_ref()?
            .get(SPEAKER_STATE_ANNOTATION)?;
        serde_json::from_str(raw).ok()
    }

    /// The published JSON: at most [`STATE_LIMIT`] bytes (without the peer lists when
    /// they would not fit).
    pub fn to_json(&self) -> String {
        let full = serde_json::to_string(self).unwrap_or_default();
        if full.len() <= STATE_LIMIT {
            return full;
        }
        let short = SpeakerState {
            not_heard: Vec::new(),
            truncated: true,
            ..self.clone()
        };
        serde_json::to_string(&short).unwrap_or_default()
    }

    /// `announcing` lists every IP this node answers for.
    pub fn lists_every_ip(&self) -> bool {
        self.announcing.len() >= self.announcing_total
    }
}

#[derive(Debug, Clone)]
struct Seen {
    interface: String,
    first: Timestamp,
    last: Timestamp,
}

/// The speaker's facts between renewals (pure: times are passed in).
#[derive(Debug, Clone, Default)]
pub struct Board {
    may_announce: bool,
    heartbeats: bool,
    heard: BTreeSet<String>,
    members: BTreeSet<String>,
    /// IP → (interfaces, announced since).
    announcing: BTreeMap<IpAddr, (Vec<String>, Timestamp)>,
    /// (IP, their MAC) → when seen.
    duplicates: BTreeMap<(IpAddr, String), Seen>,
}

/// Makes `set` hold `names` (sorted, unique), copying them only when they differ.
fn assign<'a>(set: &mut BTreeSet<String>, names: impl Iterator<Item = &'a str> + Clone) {
    if !set.iter().map(String::as_str).eq(names.clone()) {
        *set = names.map(str::to_string).collect();
    }
}

/// A [`Board`] shared by the speaker loop, the dataplane event task and the renewal.
pub type SharedBoard = Arc<Mutex<Board>>;

impl Board {
    /// Rebuilds the per-IP table with full B-tree nodes ([`Dense`]).
    pub fn make_dense(&mut self) {
        self.announcing.make_dense();
    }

    /// Liveness as the last pass evaluated it: the peers heard and the members, each
    /// sorted and unique (the names are copied only when they changed).
    pub fn set_liveness<'a>(
        &mut self,
        may_announce: bool,
        heartbeats: bool,
        heard: impl Iterator<Item = &'a str> + Clone,
        members: impl Iterator<Item = &'a str> + Clone,
    ) {
        self.may_announce = may_announce;
        self.heartbeats = heartbeats;
        assign(&mut self.heard, heard);
        assign(&mut self.members, members);
    }

    /// `ip` is answered for with `a`: announced at `now`, or still announced (it keeps its
    /// `since`, its interfaces follow `a`). One IP at a time: the speaker tells each change
    /// as it makes it, so the cost of a pass follows its changes, not the VIPs.
    pub fn announce(&mut self, ip: IpAddr, a: &Announced, now: Timestamp) {
        let interfaces = match &a.interfaces {
            Interfaces::All => Vec::new(),
            Interfaces::Named(n) => n.iter().cloned().collect(),
        };
        match self.announcing.get_mut(&ip) {
            Some((ifs, _)) => *ifs = interfaces,
            None => {
                self.announcing.insert(ip, (interfaces, now));
            }
        }
    }

    /// `ip` is no longer answered for.
    pub fn withdraw(&mut self, ip: IpAddr) {
        self.announcing.remove(&ip);
    }

    /// A duplicate responder reported by the dataplane.
    pub fn duplicate(&mut self, d: &DuplicateResponder, now: Timestamp) {
        self.duplicates
            .entry((d.ip, d.their_mac.clone()))
            .and_modify(|s| {
                s.last = now;
                s.interface = d.interface.clone();
            })
            .or_insert(Seen {
                interface: d.interface.clone(),
                first: now,
                last: now,
            });
    }

    /// The state to publish at `now`, with the responder's interfaces. Duplicates not seen
    /// for [`DUPLICATE_MEMORY`], or for IPs no longer announced, are forgotten.
    pub fn state(&mut self, interfaces: Vec<Nic>, now: Timestamp) -> SpeakerState {
        let memory =
            k8s_openapi::jiff::SignedDuration::try_from(DUPLICATE_MEMORY).unwrap_or_default();
        let announcing = &self.announcing;
        self.duplicates.retain(|(ip, _), s| {
            announcing.contains_key(ip) && now.duration_since(s.last) < memory
        });
        let mut interfaces = interfaces;
        interfaces.sort();
        SpeakerState {
            may_announce: self.may_announce,
            heartbeats: self.heartbeats,
            member_count: self.members.len(),
            not_heard: self.members.difference(&self.heard).cloned().collect(),
            interfaces,
            announcing: self
                .announcing
                .iter()
                .take(PUBLISHED_IPS)
                .map(|(ip, (ifs, since))| AnnouncedIp {
                    ip: ip.to_string(),
                    interfaces: ifs.clone(),
                    since: rfc3339(*since),
                })
                .collect(),
            announcing_total: self.announcing.len(),
            duplicates: self
                .duplicates
                .iter()
                .take(PUBLISHED_DUPLICATES)
                .map(|((ip, mac), s)| Duplicate {
                    ip: ip.to_string(),
                    interface: s.interface.clone(),
                    mac: mac.clone(),
                    first_seen: rfc3339(s.first),
                })
                .collect(),
            truncated: false,
        }
    }
}

/// A timestamp at second precision (so republishing never changes it by rounding).
pub fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    /// Tells `b` that exactly `ips` are announced at `now`, one change at a time.
    fn set_announced(b: &mut Board, ips: &[&str], now: Timestamp) {
        let want = announced(ips);
        let gone: Vec<IpAddr> = b
            .announcing
            .keys()
            .filter(|ip| !want.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            b.withdraw(ip);
        }
        for (ip, a) in &want {
            b.announce(*ip, a, now);
        }
    }

    fn announced(ips: &[&str]) -> BTreeMap<IpAddr, Announced> {
        ips.iter()
            .map(|ip| {
                (
                    ip.parse().unwrap(),
                    Announced {
                        interfaces: Interfaces::Named(["eth0".to_string()].into()),
                        services: ["default/a"].into_iter().collect(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn since_is_kept_while_announced_and_the_state_round_trips() {
        let mut b = Board::default();
        b.set_liveness(true, true, ["n2"].into_iter(), ["n2"].into_iter());
        set_announced(&mut b, &["10.0.0.1"], t(0));
        set_announced(&mut b, &["10.0.0.1", "10.0.0.2"], t(5));
        let nic = Nic {
            name: "eth0".into(),
            mac: "02:00:00:00:00:01".into(),
        };
        let s = b.state(vec![nic.clone()], t(6));
        assert_eq!(s.announcing[0].since, rfc3339(t(0)));
        assert_eq!(s.announcing[1].since, rfc3339(t(5)));
        assert_eq!(s.announcing[0].interfaces, ["eth0"]);
        // the same facts later render the same state: nothing to write
        assert_eq!(b.state(vec![nic.clone()], t(60)), s);
        let lease = k8s_openapi::api::coordination::v1::Lease {
            metadata: kube::api::ObjectMeta {
                annotations: Some([(SPEAKER_STATE_ANNOTATION.to_string(), s.to_json())].into()),
                ..Default::default()
            },
            spec: None,
        };
        assert_eq!(SpeakerState::of_lease(&lease), Some(s.clone()));
        let cm = state_object("n1", &s.to_json(), None);
        assert_eq!(SpeakerState::of_config_map(&cm), Some(s.clone()));
        assert_eq!(cm.metadata.name.as_deref(), Some("ferrolb-speaker-n1"));
        assert!(
            state_selector().ends_with(&cm.metadata.labels.unwrap()["app.kubernetes.io/component"])
        );
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        for field in [
            "mayAnnounce",
            "heartbeats",
            "memberCount",
            "notHeard",
            "interfaces",
            "announcing",
            "duplicates",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        // withdrawn and announced again: a new since
        set_announced(&mut b, &[], t(7));
        set_announced(&mut b, &["10.0.0.1"], t(8));
        assert_eq!(b.state(vec![], t(9)).announcing[0].since, rfc3339(t(8)));
    }

    #[test]
    fn the_state_stays_small_whatever_the_number_of_vips_and_nodes() {
        let mut b = Board::default();
        let ips: Vec<String> = (0..10_000)
            .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        set_announced(&mut b, &refs, t(0));
        let peers: BTreeSet<String> = (0..5_000).map(|i| format!("node-{i:05}")).collect();
        let all: BTreeSet<&str> = peers.iter().map(String::as_str).collect();
        b.set_liveness(true, true, std::iter::empty(), all.iter().copied());
        let s = b.state(vec![], t(1));
        assert_eq!(s.announcing.len(), PUBLISHED_IPS);
        assert_eq!(s.announcing_total, 10_000);
        assert!(!s.lists_every_ip());
        // 5,000 members unheard do not fit: the list is left out, and it says so
        let a = s.to_json();
        assert!(a.len() <= STATE_LIMIT, "{}", a.len());
        let back: SpeakerState = serde_json::from_str(&a).unwrap();
        assert!(back.truncated && back.not_heard.is_empty());
        assert_eq!((back.member_count, back.announcing_total), (5_000, 10_000));
        // hearing every member, the state does not grow with the members
        b.set_liveness(true, true, all.iter().copied(), all.iter().copied());
        let heard_all = b.state(vec![], t(2)).to_json();
        b.set_liveness(true, true, std::iter::empty(), std::iter::empty());
        let alone = b.state(vec![], t(2)).to_json();
        assert!(heard_all.len() <= alone.len() + 3, "{heard_all} vs {alone}");
        // a 100-node cluster hearing nobody lists them all
        let hundred: BTreeSet<&str> = all.iter().copied().take(100).collect();
        b.set_liveness(false, true, std::iter::empty(), hundred.iter().copied());
        let back: SpeakerState = serde_json::from_str(&b.state(vec![], t(3)).to_json()).unwrap();
        assert!(!back.truncated);
        assert_eq!((back.member_count, back.not_heard.len()), (100, 100));
        // hearing one of two members lists the other
        b.set_liveness(true, true, ["n2"].into_iter(), ["n2", "n3"].into_iter());
        let s = b.state(vec![], t(4));
        assert_eq!((s.member_count, s.not_heard), (2, vec!["n3".to_string()]));
    }

    #[test]
    fn duplicates_are_kept_while_seen_and_announced() {
        let mut b = Board::default();
        set_announced(&mut b, &["10.0.0.1"], t(0));
        let d = DuplicateResponder {
            ip: "10.0.0.1".parse().unwrap(),
            interface: "eth0".into(),
            their_mac: "02:de:ad:be:ef:01".into(),
            our_mac: "02:00:00:00:00:01".into(),
        };
        b.duplicate(&d, t(1));
        b.duplicate(&d, t(30));
        let s = b.state(vec![], t(31));
        assert_eq!(s.duplicates.len(), 1);
        assert_eq!(s.duplicates[0].first_seen, rfc3339(t(1)));
        assert_eq!(s.duplicates[0].mac, "02:de:ad:be:ef:01");
        assert_eq!(b.state(vec![], t(30 + 599)).duplicates.len(), 1);
        assert!(b.state(vec![], t(30 + 600)).duplicates.is_empty());
        b.duplicate(&d, t(700));
        set_announced(&mut b, &[], t(701));
        assert!(b.state(vec![], t(702)).duplicates.is_empty());
    }
}

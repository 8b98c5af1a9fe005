//! The pure core of `ferrolb explain`: from the objects read from the API server to the
//! [`Explanation`]. Eligibility and election are recomputed with the speakers' own code
//! ([`crate::speaker::config_view::build_config`], [`crate::speaker::index::views_of`],
//! [`elect_all`], [`crate::election::Election::decision_for`]); the speakers' runtime facts
//! (permission, heard peers, interfaces and MACs, announcements, duplicate responders)
//! come from the state each publishes in its state ConfigMap ([`SpeakerState`]; on its node
//! Lease for speakers of earlier versions); the reasons a
//! Service has no IP come from the controller's Events and the pools' conditions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::crd::{IPAddressPool, L2Advertisement, ServiceL2Status};
use crate::election::{
    elect_all, interfaces_for, service_ads, ElectionOptions, Interfaces, NodeInfo, Reason,
    ServiceView,
};
use crate::speaker::claims::Claim;
use crate::speaker::liveness::node_of_lease;
use crate::speaker::state::SpeakerState;
use crate::speaker::status::Existing;

/// Everything the explanation is computed from (read by the shell).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Every Service (all namespaces: IPs can be shared across namespaces).
    pub services: Vec<Service>,
    /// Every EndpointSlice.
    pub slices: Vec<EndpointSlice>,
    /// Every Node.
    pub nodes: Vec<Node>,
    /// IPAddressPools (ferrolb's namespace).
    pub pools: Vec<IPAddressPool>,
    /// L2Advertisements (ferrolb's namespace).
    pub ads: Vec<L2Advertisement>,
    /// ServiceL2Statuses (ferrolb's namespace).
    pub statuses: Vec<ServiceL2Status>,
    /// Leases of ferrolb's namespace: speaker node Leases and per-IP owner records.
    pub leases: Vec<Lease>,
    /// The speakers' state ConfigMaps (ferrolb's namespace,
    /// [`crate::speaker::state::state_selector`]).
    pub states: Vec<ConfigMap>,
    /// events.k8s.io Events about Services.
    pub events: Vec<Event>,
}

/// How the explanation is computed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The `loadBalancerClass` ferrolb handles (None: Services without a class).
    pub lb_class: Option<String>,
    /// The speakers' `--revertive` / `--ignore-exclude-lb`.
    pub election: ElectionOptions,
    /// A node Lease counts as renewed while `renewTime + leaseDurationSeconds + skew` is
    /// after now (clock skew between this machine and the speakers).
    pub skew: Duration,
    /// Only these Services (`namespace`, optional name); None: every LoadBalancer Service.
    pub only: Option<(String, Option<String>)>,
}

/// A reason: a stable camelCase `code` for scripts, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Why {
    /// Stable code (see docs/TROUBLESHOOTING.md).
    pub code: String,
    /// Human explanation.
    pub message: String,
}

impl Why {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Why {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The whole answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// One entry per Service explained, by namespace and name.
    pub services: Vec<ServiceExplanation>,
    /// Every speaker, as its node Lease and published state show it.
    pub speakers: Vec<SpeakerSummary>,
    /// Configuration problems (invalid or frozen pools, invalid advertisements).
    pub config_problems: Vec<String>,
}

/// One speaker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerSummary {
    /// Node name.
    pub node: String,
    /// Its Lease is held and renewed in time.
    pub running: bool,
    /// It may announce (published; false when not running).
    pub may_announce: bool,
    /// Why not, or what is wrong (fenced, heartbeats not flowing, ...).
    pub problems: Vec<Why>,
}

/// One Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExplanation {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `announced`, `notAnnounced`, `noIP`, `notOurs`.
    pub state: String,
    /// Why it has no IP, is not ours, or none of its IPs is announced.
    pub reason: Option<Why>,
    /// One entry per external IP.
    pub ips: Vec<IpExplanation>,
}

/// One external IP of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpExplanation {
    /// The IP.
    pub ip: String,
    /// The pool it came from (None: in no configured pool).
    pub pool: Option<String>,
    /// Who answers ARP/NDP for it (None: nobody).
    pub announced_by: Option<Announcer>,
    /// Why nobody announces it for this Service (None: announced).
    pub reason: Option<Why>,
    /// Every node, and why it does or does not announce.
    pub nodes: Vec<NodeVerdict>,
    /// Other MACs seen answering for this IP.
    pub duplicates: Vec<DuplicateSeen>,
}

/// The node answering for an IP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Announcer {
    /// Node name.
    pub node: String,
    /// Interfaces it answers on, with MACs (empty: unknown, or none matches the filter).
    pub interfaces: Vec<InterfaceMac>,
    /// Since when (RFC 3339; None: not published).
    pub since: Option<String>,
}

/// One interface with its MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceMac {
    /// Interface name.
    pub name: String,
    /// MAC (None: not published).
    pub mac: Option<String>,
}

/// One node's verdict for one IP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeVerdict {
    /// Node name.
    pub node: String,
    /// It answers for the IP.
    pub announces: bool,
    /// Why it does not (None when it does).
    pub reason: Option<Why>,
    /// Other facts that matter (heartbeats, interface filter).
    pub notes: Vec<Why>,
}

/// A duplicate responder seen by a speaker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateSeen {
    /// The speaker that saw it.
    pub seen_by: String,
    /// Interface.
    pub interface: String,
    /// The other MAC.
    pub mac: String,
    /// First seen (RFC 3339).
    pub first_seen: String,
}

/// One speaker as its node Lease shows it.
#[derive(Debug, Clone, Default)]
struct Speaker {
    /// Held and renewed in time.
    running: bool,
    /// Why not running (absent, released, expired).
    down: Option<String>,
    state: Option<SpeakerState>,
}

impl Speaker {
    fn may_announce(&self) -> bool {
        self.running && self.state.as_ref().is_none_or(|s| s.may_announce)
    }
}

fn speakers(
    inputs: &Inputs,
    nodes: &[String],
    now: Timestamp,
    skew: Duration,
) -> BTreeMap<String, Speaker> {
    let mut leases: BTreeMap<&str, &Lease> = BTreeMap::new();
    for l in &inputs.leases {
        if let Some(n) = l.metadata.name.as_deref().and_then(node_of_lease) {
            leases.insert(n, l);
        }
    }
    // the state ConfigMaps carry their node Lease's name
    let mut states: BTreeMap<&str, SpeakerState> = BTreeMap::new();
    for cm in &inputs.states {
        let node = cm.metadata.name.as_deref().and_then(node_of_lease);
        if let Some((n, st)) = node.zip(SpeakerState::of_config_map(cm)) {
            states.insert(n, st);
        }
    }
    nodes
        .iter()
        .map(|n| {
            let sp = match leases.get(n.as_str()) {
                None => Speaker {
                    running: false,
                    down: Some("no speaker Lease: the speaker never ran on this node".into()),
                    state: None,
                },
                Some(l) => {
                    let spec = l.spec.clone().unwrap_or_default();
                    let holder = spec.holder_identity.unwrap_or_default();
                    let renewed = spec.renew_time.map(|t| t.0);
                    let ttl = Duration::from_secs(
                        u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
                    ) + skew;
                    let down = if holder.is_empty() {
                        Some("the speaker released its Lease (stopped)".to_string())
                    } else if holder != *n {
                        Some(format!("its Lease is held by {holder:?}"))
                    } else {
                        match renewed {
                            None => Some("its Lease was never renewed".to_string()),
                            Some(r) => {
                                let age = now.duration_since(r);
                                let age = Duration::try_from(age).unwrap_or_default();
                                (age >= ttl).then(|| {
                                    format!(
                                        "its Lease was last renewed {:.1} s ago (speaker down, or cannot reach the API server)",
                                        age.as_secs_f64()
                                    )
                                })
                            }
                        }
                    };
                    Speaker {
                        running: down.is_none(),
                        down,
                        state: states
                            .remove(n.as_str())
                            .or_else(|| SpeakerState::of_lease(l)),
                    }
                }
            };
            (n.clone(), sp)
        })
        .collect()
}

/// Problems of one running speaker: fenced, heartbeats not flowing.
fn speaker_problems(node: &str, speakers: &BTreeMap<String, Speaker>) -> Vec<Why> {
    let mut out = Vec::new();
    let Some(sp) = speakers.get(node) else {
        return out;
    };
    if !sp.running {
        out.push(Why::new(
            "speakerNotRunning",
            sp.down.clone().unwrap_or_default(),
        ));
        return out;
    }
    let Some(st) = &sp.state else {
        return out;
    };
    if !st.may_announce {
        let detail = if st.heartbeats && st.truncated {
            "no quorum (its peer lists are too long to publish)".to_string()
        } else if st.heartbeats {
            format!(
                "it hears the heartbeats of {} of its {} peers: no quorum",
                st.member_count.saturating_sub(st.not_heard.len()),
                st.member_count
            )
        } else {
            "its Lease renewals are late".to_string()
        };
        out.push(Why::new(
            "speakerFenced",
            format!("the speaker is fenced and answers for nothing ({detail})"),
        ));
    }
    if st.heartbeats && !st.truncated {
        // running speakers with heartbeats on
        let sending = |p: &Speaker| p.running && p.state.as_ref().is_some_and(|s| s.heartbeats);
        let not_heard: Vec<&str> = st
            .not_heard
            .iter()
            .filter(|m| speakers.get(*m).is_some_and(sending))
            .map(String::as_str)
            .collect();
        let deaf: Vec<&str> = speakers
            .iter()
            .filter(|(p, s)| {
                p.as_str() != node
                    && sending(s)
                    && s.state
                        .as_ref()
                        .is_some_and(|s| s.not_heard.iter().any(|h| h == node))
            })
            .map(|(p, _)| p.as_str())
            .collect();
        if !not_heard.is_empty() || !deaf.is_empty() {
            let mut parts = Vec::new();
            if !not_heard.is_empty() {
                parts.push(format!(
                    "{node} hears no heartbeat from {}",
                    not_heard.join(", ")
                ));
            }
            if !deaf.is_empty() {
                let verb = if deaf.len() == 1 { "hears" } else { "hear" };
                parts.push(format!(
                    "{} {verb} no heartbeat from {node}",
                    deaf.join(", ")
                ));
            }
            out.push(Why::new(
                "heartbeatsNotFlowing",
                format!("{} (UDP 7947 between nodes blocked?)", parts.join("; ")),
            ));
        }
    }
    out
}

/// The explanation of `inputs` at `now`.
pub fn explain(inputs: &Inputs, opts: &Options, now: Timestamp) -> Explanation {
    let (config, config_problems) =
        crate::speaker::config_view::build_config(&inputs.pools, &inputs.ads);
    let arc = |v: &[Service]| v.iter().cloned().map(Arc::new).collect::<Vec<_>>();
    let services = arc(&inputs.services);
    let slices: Vec<Arc<EndpointSlice>> = inputs.slices.iter().cloned().map(Arc::new).collect();
    let views =
        crate::speaker::index::views_of(&config, &services, &slices, opts.lb_class.as_deref());
    let node_names: Vec<String> = inputs
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let speakers = speakers(inputs, &node_names, now, opts.skew);
    // The election's view: a speaker is alive when it runs and may announce (as its peers
    // judge it through its Lease and heartbeats).
    let nodes: Vec<NodeInfo> = inputs
        .nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            NodeInfo::from_node(n, speakers.get(name).is_some_and(Speaker::may_announce))
        })
        .collect();
    let claims: BTreeMap<IpAddr, Claim> =
        inputs.leases.iter().filter_map(Claim::from_lease).collect();
    let current = crate::speaker::plan::holders(&claims);
    let election = elect_all(&config, &views, &nodes, &current, &opts.election);
    let statuses: Vec<Existing> = inputs.statuses.iter().map(Existing::of).collect();

    let mut out = Explanation {
        config_problems,
        ..Default::default()
    };
    for n in &node_names {
        let sp = &speakers[n];
        out.speakers.push(SpeakerSummary {
            node: n.clone(),
            running: sp.running,
            may_announce: sp.may_announce(),
            problems: speaker_problems(n, &speakers),
        });
    }

    let mut lbs: Vec<&Service> = inputs
        .services
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer"))
        .filter(|s| match &opts.only {
            None => true,
            Some((ns, name)) => {
                s.metadata.namespace.as_deref() == Some(ns.as_str())
                    && name
                        .as_ref()
                        .is_none_or(|n| s.metadata.name.as_ref() == Some(n))
            }
        })
        .collect();
    lbs.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    let ctx = Ctx {
        config: &config,
        election: &election,
        nodes: &nodes,
        speakers: &speakers,
        claims: &claims,
        statuses: &statuses,
        opts,
        events: &inputs.events,
        full_pools: inputs
            .pools
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.available_ipv4 + s.available_ipv6 == 0
                        && s.assigned_ipv4 + s.assigned_ipv6 > 0
                })
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect(),
    };
    for svc in lbs {
        out.services.push(ctx.service(svc, &views));
    }
    out
}

struct Ctx<'a> {
    config: &'a crate::config::Config,
    election: &'a crate::election::Election,
    nodes: &'a [NodeInfo],
    speakers: &'a BTreeMap<String, Speaker>,
    claims: &'a BTreeMap<IpAddr, Claim>,
    statuses: &'a [Existing],
    opts: &'a Options,
    events: &'a [Event],
    /// Pools whose published counters show no free address.
    full_pools: Vec<String>,
}

impl Ctx<'_> {
    fn service(&self, svc: &Service, views: &[ServiceView]) -> ServiceExplanation {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let key = format!("{ns}/{name}");
        let mut out = ServiceExplanation {
            namespace: ns.clone(),
            name: name.clone(),
            ..Default::default()
        };
        let class = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.clone());
        if class != self.opts.lb_class {
            out.state = "notOurs".into();
            let ours = match &self.opts.lb_class {
                Some(c) => format!("Services of class {c:?}"),
                None => "Services without a loadBalancerClass".into(),
            };
            out.reason = Some(Why::new(
                "loadBalancerClass",
                format!(
                    "spec.loadBalancerClass is {}; ferrolb handles {ours} (another load balancer serves this one)",
                    class.map_or("unset".to_string(), |c| format!("{c:?}"))
                ),
            ));
            return out;
        }
        let Some(view) = views.iter().find(|v| *v.key == *key) else {
            out.state = "noIP".into();
            out.reason = Some(self.no_ip_reason(&ns, &name));
            return out;
        };
        for ip in &view.ips {
            out.ips.push(self.ip(view, *ip));
        }
        let announced = out
            .ips
            .iter()
            .filter(|i| i.announced_by.is_some() && i.reason.is_none())
            .count();
        out.state = if announced > 0 {
            "announced".into()
        } else {
            "notAnnounced".into()
        };
        if announced == 0 {
            out.reason = out.ips.iter().find_map(|i| i.reason.clone());
        }
        out
    }

    /// Why a Service of ours has no IP: the controller's last Warning about it.
    fn no_ip_reason(&self, ns: &str, name: &str) -> Why {
        let latest = self
            .events
            .iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("Service")
                        && r.namespace.as_deref() == Some(ns)
                        && r.name.as_deref() == Some(name)
                })
            })
            .max_by_key(|e| event_time(e));
        match latest {
            Some(e) if e.type_.as_deref() == Some("Warning") => {
                let note = e.note.clone().unwrap_or_default();
                classify_allocation_failure(&note, &self.full_pools)
            }
            Some(e) => Why::new(
                "allocationPending",
                format!(
                    "no IP yet; the controller's last Event: {}: {}",
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default()
                ),
            ),
            None if self.config.pools.is_empty() => Why::new(
                "noPoolMatches",
                "no valid IPAddressPool is configured",
            ),
            None => Why::new(
                "noControllerVerdict",
                "no IP and no Event from the controller about this Service: is the controller running?",
            ),
        }
    }

    fn ip(&self, view: &ServiceView, ip: IpAddr) -> IpExplanation {
        let mut out = IpExplanation {
            ip: ip.to_string(),
            pool: view.pool.as_deref().map(str::to_string),
            ..Default::default()
        };
        let ads = service_ads(self.config, view);
        // Who answers: the running, permitted speakers that publish the IP; without a
        // published state, the holder of the IP's owner record.
        let publishers: Vec<&String> = self
            .speakers
            .iter()
            .filter(|(_, sp)| sp.may_announce())
            .filter(|(_, sp)| {
                sp.state
                    .as_ref()
                    .is_some_and(|s| s.announcing.iter().any(|a| a.ip == ip.to_string()))
            })
            .map(|(n, _)| n)
            .collect();
        let own = self
            .election
            .owners
            .get(&ip)
            .filter(|o| o.services.contains(&view.key));
        let holder = self
            .claims
            .get(&ip)
            .map(|c| c.holder.to_string())
            .filter(|h| !h.is_empty());
        let announcer: Option<String> = match publishers.first() {
            Some(n) => Some((*n).clone()),
            None => holder.clone().filter(|h| {
                own.is_some()
                    && self.speakers.get(h).is_some_and(|sp| {
                        sp.may_announce() && sp.state.as_ref().is_none_or(|s| !s.lists_every_ip())
                    })
            }),
        };
        // the IP may be answered for another Service sharing it, not for this one
        let announcer = announcer.filter(|_| {
            !self
                .election
                .not_announced
                .contains_key(&(view.key.to_string(), ip))
        });
        if let Some(node) = &announcer {
            out.announced_by = Some(self.announcer(node, ip, view, &ads));
        } else {
            out.reason = Some(
                match self.election.not_announced.get(&(view.key.to_string(), ip)) {
                    Some(r) => service_reason(r, self.config, view),
                    None => match own {
                        Some(o) => Why::new(
                            "takingOver",
                            format!(
                                "{} is elected and is taking the IP over (claim being written)",
                                o.node
                            ),
                        ),
                        None => Why::new("noEligibleNode", "no node may announce it"),
                    },
                },
            );
        }
        for n in self.nodes {
            let mut v = NodeVerdict {
                node: n.name.to_string(),
                announces: announcer.as_deref() == Some(&*n.name),
                ..Default::default()
            };
            let problems = speaker_problems(&n.name, self.speakers);
            if !v.announces {
                v.reason = Some(
                    match self
                        .election
                        .decision_for(self.config, view, ip, n, &self.opts.election)
                    {
                        Ok(_) => Why::new("takingOver", "elected: taking the IP over"),
                        Err(Reason::NotOwner { owner })
                            if announcer.as_deref() != Some(owner.as_str()) =>
                        {
                            Why::new("notOwner", format!("eligible; {owner} is elected"))
                        }
                        Err(r @ Reason::SpeakerNotAlive) => problems
                            .iter()
                            .find(|p| p.code == "speakerNotRunning" || p.code == "speakerFenced")
                            .cloned()
                            .unwrap_or_else(|| node_reason(&r, n, view, &ads, self.config)),
                        Err(r) => node_reason(&r, n, view, &ads, self.config),
                    },
                );
            }
            v.notes = problems
                .into_iter()
                .filter(|p| v.reason.as_ref().is_none_or(|r| r.code != p.code))
                .filter(|p| p.code == "heartbeatsNotFlowing")
                .collect();
            if let Some(note) = self.interface_filter(&n.name, &ads) {
                if v.announces || v.reason.as_ref().is_some_and(|r| r.code == "notOwner") {
                    v.notes.push(note);
                }
            }
            if v.announces && publishers.len() > 1 {
                v.notes.push(Why::new(
                    "severalAnnouncers",
                    format!(
                        "{} all answer for this IP",
                        publishers
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if v.announces {
                // answering on no interface is not answering
                if let Some(f) = v.notes.iter().find(|n| n.code == "interfaceFilter") {
                    out.reason = Some(f.clone());
                }
            }
            out.nodes.push(v);
        }
        for (node, sp) in self.speakers {
            for d in sp.state.iter().flat_map(|s| &s.duplicates) {
                if d.ip == ip.to_string() {
                    out.duplicates.push(DuplicateSeen {
                        seen_by: node.clone(),
                        interface: d.interface.clone(),
                        mac: d.mac.clone(),
                        first_seen: d.first_seen.clone(),
                    });
                }
            }
        }
        out
    }

    fn announcer(
        &self,
        node: &str,
        ip: IpAddr,
        view: &ServiceView,
        ads: &Result<Vec<&crate::config::L2Adv>, Reason>,
    ) -> Announcer {
        let st = self.speakers.get(node).and_then(|s| s.state.as_ref());
        let published = st.and_then(|s| s.announcing.iter().find(|a| a.ip == ip.to_string()));
        let mac_of = |name: &str| {
            st.and_then(|s| s.interfaces.iter().find(|i| i.name == name))
                .map(|i| i.mac.clone())
        };
        let names: Vec<String> = match (st, published) {
            (Some(s), Some(p)) if p.interfaces.is_empty() => {
                s.interfaces.iter().map(|i| i.name.clone()).collect()
            }
            (Some(s), Some(p)) => p
                .interfaces
                .iter()
                .filter(|n| s.interfaces.iter().any(|i| &i.name == *n))
                .cloned()
                .collect(),
            _ => {
                // no published state: what the ServiceL2Status says, else the filter
                let from_status: Vec<String> = self
                    .statuses
                    .iter()
                    .filter(|e| {
                        e.node == node
                            && e.service.as_ref().map(|k| k.to_string()).as_deref()
                                == Some(&*view.key)
                    })
                    .flat_map(|e| e.status.interfaces.iter().map(|i| i.name.clone()))
                    .collect();
                if from_status.is_empty() {
                    match ads.as_ref().ok().and_then(|a| {
                        let n = self.nodes.iter().find(|n| *n.name == *node)?;
                        interfaces_for(a.iter().copied(), n)
                    }) {
                        Some(Interfaces::Named(n)) => n.into_iter().collect(),
                        _ => Vec::new(),
                    }
                } else {
                    from_status
                }
            }
        };
        Announcer {
            node: node.to_string(),
            interfaces: names
                .into_iter()
                .map(|n| InterfaceMac {
                    mac: mac_of(&n),
                    name: n,
                })
                .collect(),
            since: published.map(|p| p.since.clone()),
        }
    }

    /// The L2Advertisements' interface filter matches none of the node's interfaces.
    fn interface_filter(
        &self,
        node: &str,
        ads: &Result<Vec<&crate::config::L2Adv>, Reason>,
    ) -> Option<Why> {
        let ads = ads.as_ref().ok()?;
        let info = self.nodes.iter().find(|n| *n.name == *node)?;
        let Interfaces::Named(allowed) = interfaces_for(ads.iter().copied(), info)? else {
            return None;
        };
        let st = self.speakers.get(node)?.state.as_ref()?;
        let have: BTreeSet<&str> = st.interfaces.iter().map(|i| i.name.as_str()).collect();
        if allowed.iter().any(|a| have.contains(a.as_str())) {
            return None;
        }
        Some(Why::new(
            "interfaceFilter",
            format!(
                "the L2Advertisements allow only interface(s) {} and {node} has {}: it would answer on none",
                allowed.iter().cloned().collect::<Vec<_>>().join(", "),
                if have.is_empty() { "none".to_string() } else { have.into_iter().collect::<Vec<_>>().join(", ") }
            ),
        ))
    }
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// A service-level reason of the election, in words.
fn service_reason(r: &Reason, config: &crate::config::Config, view: &ServiceView) -> Why {
    let pool = view.pool.clone().unwrap_or_default();
    match r {
        Reason::IpNotInPool => Why::new(
            "ipNotInPool",
            "the IP is in no configured IPAddressPool (or the Service's IPs span several pools)",
        ),
        Reason::NoServingEndpoints => Why::new(
            "noServingEndpoints",
            "the Service has no ready or serving endpoint anywhere",
        ),
        Reason::NoMatchingAdvertisement => Why::new(
            "noMatchingAdvertisement",
            format!(
                "not selected by any L2Advertisement: none covers pool {pool:?}{}",
                if config.l2_advertisements.iter().any(|a| !a.service_selectors.is_empty()) {
                    " and admits this Service (serviceSelectors)"
                } else {
                    ""
                }
            ),
        ),
        Reason::SharedIpWithServiceSelector => Why::new(
            "sharedIPWithServiceSelector",
            "the Service shares its IP (allow-shared-ip) and an L2Advertisement for it has serviceSelectors: not announced (MetalLB rule)",
        ),
        Reason::NoEligibleNode => Why::new(
            "noEligibleNode",
            "no node may announce it (see each node's reason)",
        ),
        Reason::DuplicateService => Why::new("duplicateService", "the Service key appears twice"),
        other => Why::new(other.as_str(), other.to_string()),
    }
}

/// A node-level reason of the election, in words.
fn node_reason(
    r: &Reason,
    node: &NodeInfo,
    view: &ServiceView,
    ads: &Result<Vec<&crate::config::L2Adv>, Reason>,
    config: &crate::config::Config,
) -> Why {
    match r {
        Reason::NoMatchingAdvertisement => {
            let names: Vec<String> = ads
                .as_ref()
                .map(|a| a.iter().map(|a| a.name.clone()).collect())
                .unwrap_or_default();
            if names.is_empty() {
                service_reason(r, config, view)
            } else {
                Why::new(
                    "nodeSelector",
                    format!(
                        "the nodeSelectors of L2Advertisement(s) {} do not select {}",
                        names.join(", "),
                        node.name
                    ),
                )
            }
        }
        Reason::NetworkUnavailable => Why::new(
            "networkUnavailable",
            format!("Node {} has condition NetworkUnavailable=True", node.name),
        ),
        Reason::ExcludedFromLoadBalancers => Why::new(
            "excludedFromLoadBalancers",
            format!(
                "Node {} has label {}",
                node.name,
                crate::election::EXCLUDE_LB_LABEL
            ),
        ),
        Reason::NoLocalEndpoint => Why::new(
            "noLocalEndpoint",
            format!(
                "externalTrafficPolicy: Local and no ready or serving endpoint runs on {}",
                node.name
            ),
        ),
        Reason::SpeakerNotAlive => Why::new("speakerNotRunning", "the speaker is not running"),
        Reason::UnknownNode => Why::new("unknownNode", "no such Node (or its name is duplicated)"),
        Reason::SharedIpOwnerNotEligible => Why::new(
            "sharedIPOwnerNotEligible",
            "the IP is shared and its elected node is not eligible for this Service",
        ),
        Reason::NotOwner { owner } => {
            Why::new("notOwner", format!("eligible; {owner} announces it"))
        }
        other => service_reason(other, config, view),
    }
}

/// The kind of a controller allocation failure, from its Event note (the messages of
/// [`crate::allocator::AllocError`]). `full_pools`: pools without a free address (they
/// tell "every pool it may use is full" from "no pool allows it" when the allocator only
/// says "no available IPs").
pub fn classify_allocation_failure(note: &str, full_pools: &[String]) -> Why {
    let code = if note.contains("is frozen") {
        "invalidPool"
    } else if note.contains("already in use by") {
        "requestedIPTaken"
    } else if note.contains("sharing key")
        || note.contains("backend key")
        || (note.contains("port ") && note.contains("already in use on"))
    {
        "sharingRules"
    } else if note.contains("no available IPs in pool") {
        "poolExhausted"
    } else if note.contains("no IPAddressPool is configured")
        || note.contains("unknown pool")
        || note.contains("does not allow")
        || note.contains("not in any pool")
        || note.contains("not in requested pool")
    {
        "noPoolMatches"
    } else if note.contains("no available IPs") {
        if full_pools.is_empty() {
            "noPoolMatches"
        } else {
            "poolExhausted"
        }
    } else {
        "invalidRequest"
    };
    let mut message = note.to_string();
    if code == "noPoolMatches" && note.ends_with("no available IPs") {
        message.push_str(
            ": no pool with free addresses allows this Service (autoAssign, serviceAllocation)",
        );
    } else if code == "poolExhausted" && note.ends_with("no available IPs") {
        message.push_str(&format!(": pool(s) {} full", full_pools.join(", ")));
    }
    Why::new(code, message)
}

//! L2 dataplane: raw packet sockets answering ARP / NDP for owned IPs, gratuitous
//! announcements, duplicate-responder detection.
//!
//! The IPs are never added to an interface. For each eligible interface (followed
//! through rtnetlink link events, see [`iface`]) one `AF_PACKET` socket with a kernel BPF
//! filter ([`bpf`]) feeds a receive thread that applies the pure decision function
//! [`logic::decide`] to each frame against the shared [`owned::Owned`] set.
//! A tokio task ("the actor") follows links, sends announcement bursts on the
//! [`schedule::Schedule`] and keeps solicited-node multicast memberships in sync.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use ferrolb::dataplane::{Config, Dataplane, Event, InterfaceFilter};
//! let (dp, mut events) = Dataplane::start(Config::default()).await?;
//! dp.announce("192.0.2.10".parse()?, InterfaceFilter::All);
//! while let Some(ev) = events.recv().await {
//!     if let Event::DuplicateResponder { ip, their_mac, .. } = ev {
//!         tracing::warn!(%ip, %their_mac, "someone else answers for our IP");
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod bpf;
pub mod iface;
pub mod logic;
pub mod metrics;
pub mod owned;
pub mod ring;
pub mod schedule;
pub mod sys;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prometheus_client::metrics::counter::Counter;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use crate::wire::Mac;
use iface::{ExcludeList, Link, LinkMessage};
use logic::{IfaceCtx, ReplyKind, Verdict};
pub use metrics::Metrics;
pub use owned::InterfaceFilter;
use owned::{Change, Owned};
use schedule::Schedule;
use sys::{MldSocket, NetlinkSocket, PacketSocket};

/// Dataplane configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Network namespace to operate in (path such as `/run/netns/NAME`); `None` = the
    /// process's own namespace.
    pub netns: Option<PathBuf>,
    /// Interface names never used (regular expressions, MetalLB's list by default).
    pub excludes: ExcludeList,
    /// Announcement backoff offsets after the immediate burst.
    pub backoff: Vec<Duration>,
    /// Periodic re-announcement after the backoff (off by default).
    pub refresh: Option<Duration>,
    /// Answer ICMP / ICMPv6 echo requests to owned IPs (off by default).
    pub answer_ping: bool,
    /// Minimum interval between two [`Event::DuplicateResponder`] for the same IP and MAC
    /// (every frame is still counted).
    pub duplicate_event_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            netns: None,
            excludes: ExcludeList::default(),
            backoff: schedule::DEFAULT_BACKOFF.to_vec(),
            refresh: None,
            answer_ping: false,
            duplicate_event_interval: Duration::from_secs(10),
        }
    }
}

/// Something the caller (the speaker) should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Another station answers for / announces an IP this node owns.
    DuplicateResponder {
        /// The contested IP.
        ip: IpAddr,
        /// Our MAC on that interface.
        our_mac: Mac,
        /// The other station's MAC.
        their_mac: Mac,
        /// Interface the frame arrived on.
        interface: String,
    },
    /// A responder started on an interface (new, or came back up).
    InterfaceUp {
        /// Interface name.
        name: String,
        /// Interface index.
        index: u32,
        /// Interface MAC.
        mac: Mac,
    },
    /// A responder stopped (interface down, removed, or no longer eligible).
    InterfaceDown {
        /// Interface name.
        name: String,
        /// Interface index.
        index: u32,
    },
}

/// An interface with a running responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Interface MAC.
    pub mac: Mac,
}

#[derive(Default)]
struct State {
    owned: Owned,
    local_macs: Vec<Mac>,
}

struct Shared {
    state: RwLock<State>,
    interfaces: RwLock<BTreeMap<u32, InterfaceInfo>>,
    metrics: Metrics,
    events: mpsc::Sender<Event>,
    dup_seen: Mutex<HashMap<(IpAddr, Mac), Instant>>,
    answer_ping: bool,
    dup_interval: Duration,
}

impl Shared {
    fn emit(&self, ev: Event) {
        if self.events.try_send(ev).is_err() {
            self.metrics.events_dropped.inc();
        }
    }
}

enum Cmd {
    Announced(IpAddr),
    Withdrawn(IpAddr),
}

/// Handle on a running dataplane. Dropping it stops the dataplane.
pub struct Dataplane {
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedSender<Cmd>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("interfaces", &self.interfaces())
            .finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Starts the dataplane on the current tokio runtime and returns once the initial
    /// interface list is loaded and responders run. Needs `CAP_NET_RAW` (and the right to
    /// enter `config.netns`, if set). Returns the event stream alongside the handle.
    pub async fn start(config: Config) -> anyhow::Result<(Self, mpsc::Receiver<Event>)> {
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            state: RwLock::new(State::default()),
            interfaces: RwLock::new(BTreeMap::new()),
            metrics: Metrics::default(),
            events: ev_tx,
            dup_seen: Mutex::new(HashMap::new()),
            answer_ping: config.answer_ping,
            dup_interval: config.duplicate_event_interval,
        });
        let netns = config.netns.clone();
        let (nl, mld) = sys::in_netns(netns.as_deref(), || {
            let nl = NetlinkSocket::open()?;
            let mld = MldSocket::open().ok();
            Ok((nl, mld))
        })
        .context("opening the rtnetlink socket")?;
        // SAFETY: NetlinkSocket owns its descriptor (OwnedFd) and never replaces it, so the
        // fd stays valid and the same for the AsyncFd's whole life.
        let nl = unsafe { AsyncFd::register_with_interest(nl, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the rtnetlink socket: {e}"))?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let actor = Actor {
            shared: shared.clone(),
            schedule: Schedule::new(config.backoff.clone(), config.refresh),
            config,
            nl,
            mld,
            links: HashMap::new(),
            responders: HashMap::new(),
            dump_seen: None,
            seq: 0,
            ready: Some(ready_tx),
        };
        let task = tokio::spawn(actor.run(cmd_rx));
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => anyhow::bail!("dataplane stopped during start-up"),
            Err(_) => {
                task.abort();
                anyhow::bail!("no rtnetlink link dump within 10 s")
            }
        }
        Ok((
            Self {
                shared,
                cmd: cmd_tx,
                task: Some(task),
            },
            ev_rx,
        ))
    }

    /// Starts answering for `ip` on the interfaces allowed by `filter` (replacing any
    /// previous filter for `ip`) and, when the IP is new or its filter changed, sends the
    /// gratuitous burst schedule. Answering starts before this returns. Idempotent: an
    /// unchanged call sends nothing.
    pub fn announce(&self, ip: IpAddr, filter: InterfaceFilter) {
        let change = {
            let mut st = self.shared.state.write().expect("state lock");
            st.owned.announce(ip, filter)
        };
        if change != Change::Unchanged {
            info!(%ip, ?change, "announcing");
            let _ = self.cmd.send(Cmd::Announced(ip));
        }
    }

    /// Rebuilds the table of owned IPs with full B-tree nodes ([`crate::dense::Dense`]).
    pub fn make_dense(&self) {
        self.shared
            .state
            .write()
            .expect("state lock")
            .owned
            .make_dense();
    }

    /// Stops answering for `ip` (and stops its announcements). No-op if not owned.
    pub fn withdraw(&self, ip: IpAddr) {
        let was = {
            let mut st = self.shared.state.write().expect("state lock");
            st.owned.withdraw(ip)
        };
        if was {
            info!(%ip, "withdrawn");
            let _ = self.cmd.send(Cmd::Withdrawn(ip));
        }
    }

    /// The owned IPs and their interface filters.
    pub fn owned(&self) -> BTreeMap<IpAddr, InterfaceFilter> {
        let st = self.shared.state.read().expect("state lock");
        st.owned.iter().map(|(ip, f)| (*ip, f.clone())).collect()
    }

    /// Interfaces with a running responder.
    pub fn interfaces(&self) -> Vec<InterfaceInfo> {
        self.shared
            .interfaces
            .read()
            .expect("interfaces lock")
            .values()
            .cloned()
            .collect()
    }

    /// A reader of [`Dataplane::interfaces`] that does not keep the dataplane running.
    pub fn interfaces_reader(&self) -> impl Fn() -> Vec<InterfaceInfo> + Send + Sync + 'static {
        let shared = Arc::downgrade(&self.shared);
        move || {
            shared
                .upgrade()
                .map(|s| {
                    s.interfaces
                        .read()
                        .expect("interfaces lock")
                        .values()
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    /// The dataplane's counters (register them with [`Metrics::register`]).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops the actor and every responder thread, and waits for the actor.
    pub async fn shutdown(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct Responder {
    info: InterfaceInfo,
    sock: Arc<PacketSocket>,
    stop: Arc<AtomicBool>,
    groups: BTreeSet<Ipv6Addr>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Actor {
    shared: Arc<Shared>,
    config: Config,
    schedule: Schedule<(IpAddr, u32)>,
    nl: AsyncFd<NetlinkSocket>,
    mld: Option<MldSocket>,
    links: HashMap<u32, Link>,
    responders: HashMap<u32, Responder>,
    dump_seen: Option<HashSet<u32>>,
    seq: u32,
    ready: Option<oneshot::Sender<anyhow::Result<()>>>,
}

impl Actor {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        if let Err(e) = self.request_dump() {
            if let Some(r) = self.ready.take() {
                let _ = r.send(Err(anyhow::anyhow!("rtnetlink dump request: {e}")));
            }
            return;
        }
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let deadline = self.schedule.next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Cmd::Announced(ip)) => self.on_announced(ip),
                    Some(Cmd::Withdrawn(ip)) => {
                        self.schedule.stop_where(|k| k.0 == ip);
                        if ip.is_ipv6() {
                            self.sync_groups();
                        }
                    }
                },
                guard = self.nl.readable() => {
                    let mut guard = match guard {
                        Ok(g) => g,
                        Err(e) => { warn!(error = %e, "rtnetlink socket failed"); break; }
                    };
                    match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
                        Ok(Ok(n)) => {
                            let data = buf[..n].to_vec();
                            self.on_netlink(&data);
                        }
                        Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            warn!("rtnetlink overrun, re-reading all links");
                            if let Err(e) = self.request_dump() {
                                warn!(error = %e, "rtnetlink dump request failed");
                            }
                        }
                        Ok(Err(e)) => warn!(error = %e, "rtnetlink receive failed"),
                        Err(_would_block) => {}
                    }
                },
                _ = sleep => {
                    for (ip, idx) in self.schedule.due(Instant::now()) {
                        self.burst(ip, idx);
                    }
                }
            }
        }
        debug!("dataplane actor stopped");
    }

    fn request_dump(&mut self) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        self.dump_seen = Some(HashSet::new());
        self.nl.get_ref().send(&iface::dump_request(self.seq))
    }

    fn on_netlink(&mut self, data: &[u8]) {
        let msgs = match iface::parse_messages(data) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "undecodable rtnetlink message");
                return;
            }
        };
        for m in msgs {
            match m {
                LinkMessage::New(link) => {
                    if let Some(seen) = &mut self.dump_seen {
                        seen.insert(link.index);
                    }
                    self.on_link(link);
                }
                LinkMessage::Del { index } => self.remove_link(index),
                LinkMessage::Done => {
                    if let Some(seen) = self.dump_seen.take() {
                        let gone: Vec<u32> = self
                            .links
                            .keys()
                            .filter(|i| !seen.contains(i))
                            .copied()
                            .collect();
                        for i in gone {
                            self.remove_link(i);
                        }
                    }
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                LinkMessage::Error(errno) => {
                    warn!(errno, "rtnetlink error");
                    if let Some(r) = self.ready.take() {
                        let _ =
                            r.send(Err(anyhow::anyhow!("rtnetlink dump failed: errno {errno}")));
                    }
                }
            }
        }
    }

    fn update_local_macs(&self) {
        let mut macs: Vec<Mac> = self.links.values().filter_map(|l| l.mac.map(Mac)).collect();
        macs.sort();
        macs.dedup();
        self.shared.state.write().expect("state lock").local_macs = macs;
    }

    fn on_link(&mut self, link: Link) {
        let index = link.index;
        let elig = iface::eligibility(&link, &self.config.excludes);
        let prev_mac = self.links.get(&index).and_then(|l| l.mac);
        self.links.insert(index, link.clone());
        if prev_mac != link.mac {
            self.update_local_macs();
        }
        match elig {
            Ok(mac) => {
                let mac = Mac(mac);
                if let Some(r) = self.responders.get(&index) {
                    if r.info.name == link.name && r.info.mac == mac {
                        return;
                    }
                    self.stop_responder(index, "renamed or new MAC");
                }
                if let Err(e) = self.start_responder(index, link.name.clone(), mac) {
                    warn!(interface = %link.name, error = %e, "cannot open packet socket");
                }
            }
            Err(reason) => {
                if self.responders.contains_key(&index) {
                    self.stop_responder(index, &format!("{reason:?}"));
                } else {
                    debug!(interface = %link.name, ?reason, "interface skipped");
                }
            }
        }
    }

    fn remove_link(&mut self, index: u32) {
        if self.links.remove(&index).is_some() {
            self.update_local_macs();
        }
        if self.responders.contains_key(&index) {
            self.stop_responder(index, "removed");
        }
    }

    fn start_responder(&mut self, index: u32, name: String, mac: Mac) -> io::Result<()> {
        let opts = bpf::FilterOptions {
            echo: self.config.answer_ping,
        };
        let (sock, ring) = sys::in_netns(self.config.netns.as_deref(), move || {
            PacketSocket::open_with_ring(index, opts, rx_ring_geometry(opts.echo))
        })?;
        let sock = Arc::new(sock);
        let stop = Arc::new(AtomicBool::new(false));
        let info = InterfaceInfo {
            name: name.clone(),
            index,
            mac,
        };
        {
            let (sock, stop, shared, name) = (
                sock.clone(),
                stop.clone(),
                self.shared.clone(),
                name.clone(),
            );
            std::thread::Builder::new()
                .name(format!("ferrolb-rx-{name}"))
                .spawn(move || rx_loop(&sock, ring, &stop, &shared, &name, mac))?;
        }
        info!(interface = %name, index, %mac, "responder started");
        self.shared
            .interfaces
            .write()
            .expect("interfaces lock")
            .insert(index, info.clone());
        self.responders.insert(
            index,
            Responder {
                info,
                sock,
                stop,
                groups: BTreeSet::new(),
            },
        );
        self.shared.emit(Event::InterfaceUp {
            name: name.clone(),
            index,
            mac,
        });
        // Re-announce everything owned here (new interface, or one that came back up).
        let ips: Vec<IpAddr> = {
            let st = self.shared.state.read().expect("state lock");
            st.owned.on_interface(&name).collect()
        };
        let now = Instant::now();
        for ip in ips {
            self.schedule.start((ip, index), now);
            self.burst(ip, index);
        }
        self.sync_groups();
        Ok(())
    }

    fn stop_responder(&mut self, index: u32, why: &str) {
        if let Some(r) = self.responders.remove(&index) {
            info!(interface = %r.info.name, index, why, "responder stopped");
            if let Some(mld) = &self.mld {
                for g in &r.groups {
                    let _ = mld.leave(*g, index);
                }
            }
            self.schedule.stop_where(|k| k.1 == index);
            self.shared
                .interfaces
                .write()
                .expect("interfaces lock")
                .remove(&index);
            self.shared.emit(Event::InterfaceDown {
                name: r.info.name.clone(),
                index,
            });
        }
    }

    fn on_announced(&mut self, ip: IpAddr) {
        let now = Instant::now();
        let allowed: Vec<(u32, bool)> = {
            let st = self.shared.state.read().expect("state lock");
            self.responders
                .values()
                .map(|r| (r.info.index, st.owned.allowed(ip, &r.info.name)))
                .collect()
        };
        for (idx, ok) in allowed {
            if ok {
                self.schedule.start((ip, idx), now);
                self.burst(ip, idx);
            } else {
                self.schedule.stop(&(ip, idx));
            }
        }
        // only IPv6 addresses have solicited-node groups (recomputing them walks every
        // owned IP: not for each IPv4 change)
        if ip.is_ipv6() {
            self.sync_groups();
        }
    }

    fn burst(&self, ip: IpAddr, index: u32) {
        let Some(r) = self.responders.get(&index) else {
            return;
        };
        let allowed = {
            let st = self.shared.state.read().expect("state lock");
            st.owned.allowed(ip, &r.info.name)
        };
        if !allowed {
            return;
        }
        let m = &self.shared.metrics;
        for frame in logic::announcement(ip, r.info.mac) {
            match r.sock.send(&frame) {
                Ok(()) => {
                    m.gratuitous_sent.inc(ip);
                }
                Err(e) => {
                    m.send_errors.inc();
                    debug!(%ip, interface = %r.info.name, error = %e, "gratuitous send failed");
                }
            }
        }
        trace!(%ip, interface = %r.info.name, "announcement burst sent");
    }

    fn sync_groups(&mut self) {
        let st = self.shared.state.read().expect("state lock");
        for r in self.responders.values_mut() {
            let want = st.owned.solicited_groups(&r.info.name);
            for g in want.difference(&r.groups) {
                if let Err(e) = r.sock.add_multicast(crate::wire::ipv6_multicast_mac(*g).0) {
                    warn!(interface = %r.info.name, group = %g, error = %e, "PACKET_ADD_MEMBERSHIP failed");
                }
                if let Some(mld) = &self.mld {
                    match mld.join(*g, r.info.index) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {}
                        Err(e) => {
                            debug!(interface = %r.info.name, group = %g, error = %e, "MLD join failed")
                        }
                    }
                }
            }
            for g in r.groups.difference(&want) {
                let _ = r.sock.drop_multicast(crate::wire::ipv6_multicast_mac(*g).0);
                if let Some(mld) = &self.mld {
                    let _ = mld.leave(*g, r.info.index);
                }
            }
            r.groups = want;
        }
    }
}

/// Per-IP counters cached by a receive thread (avoids a label allocation and family
/// lookup per answered frame).
struct IpCounters {
    requests: Counter,
    responses: Counter,
    echo: Counter,
}

/// Receive ring of a responder: 512 slots in page-sized blocks, all of it resident from the
/// start (the kernel maps the ring's pages at once). Only ARP / NDP requests and replies
/// reach the ring, and echo requests with ping answering on: without it a slot is 512
/// bytes (an ARP / NDP frame with a VLAN tag and its options is ~100 bytes; 256 KiB per
/// interface), with it 2 KiB, for a 1500-byte-MTU echo request with a VLAN tag (1 MiB;
/// longer frames, jumbo echo requests, arrive truncated and are dropped as malformed). 512
/// frames queue ~5 ms of a 100 000-requests-per-second flood while the receive thread is
/// off the CPU (64 slots lost a third of such a flood on a busy 2-core machine); the
/// kernel drops what arrives while the ring is full (counted as `ring_full` drops from its
/// statistics), and ARP / NDP requesters retry.
fn rx_ring_geometry(echo: bool) -> ring::Geometry {
    let slot = if echo {
        RX_SLOT_BYTES_ECHO
    } else {
        RX_SLOT_BYTES
    };
    ring::Geometry::new(slot, RX_SLOTS, 4096, 4096).expect("constant ring geometry is valid")
}

/// Receive ring slots per interface.
const RX_SLOTS: usize = 512;
/// Bytes per receive ring slot (frame and the kernel's slot header) without echo.
const RX_SLOT_BYTES: usize = 512;
/// Bytes per receive ring slot with ping answering on.
const RX_SLOT_BYTES_ECHO: usize = 2048;

fn rx_loop(
    sock: &PacketSocket,
    mut ring: ring::RxRing,
    stop: &AtomicBool,
    shared: &Shared,
    name: &str,
    mac: Mac,
) {
    // Every frame already in the ring (up to BATCH) is decided under one read lock, their
    // replies leave in one sendmmsg. A lone frame is processed at once: no batching timer.
    let mut tx = sys::SendBatch::new();
    // The (ip, kind) of each frame in `tx`, same order; the unanswered verdicts.
    let mut replies: Vec<(IpAddr, ReplyKind)> = Vec::with_capacity(sys::BATCH);
    let mut others: Vec<Verdict<()>> = Vec::with_capacity(sys::BATCH);
    let mut counters: HashMap<IpAddr, IpCounters> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        match sock.wait_ring(&mut ring) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(interface = %name, error = %e, "packet socket receive failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let mut losing = false;
        {
            // One read lock per batch.
            let st = shared.state.read().expect("state lock");
            let ctx = IfaceCtx {
                name,
                mac,
                local_macs: &st.local_macs,
                echo: shared.answer_ping,
            };
            for _ in 0..sys::BATCH {
                let Some(slot) = ring.next_ready() else {
                    break;
                };
                losing |= ring.losing(slot);
                let verdict = if ring.truncated(slot) {
                    Verdict::Drop(logic::DropReason::Malformed)
                } else {
                    logic::decide_into(ring.frame(slot), &ctx, &st.owned, tx.spare())
                };
                ring.release(slot);
                match verdict {
                    Verdict::Reply { ip, kind, .. } => {
                        tx.commit();
                        replies.push((ip, kind));
                    }
                    other => others.push(other),
                }
            }
        }
        for v in others.drain(..) {
            handle_unanswered(v, shared, name, mac);
        }
        if losing {
            // The kernel marks the frames it queues after a drop until its statistics are
            // read: read them once here.
            match sock.take_ring_drops() {
                Ok(n) => shared
                    .metrics
                    .drops_by(logic::DropReason::RingFull, n.into()),
                Err(e) => debug!(interface = %name, error = %e, "cannot read ring drops"),
            }
        }
        send_replies(sock, &mut tx, &mut replies, shared, name, &mut counters);
    }
}

/// Counts and sends the replies of one batch (`replies[i]` describes `tx`'s frame `i`);
/// empties both.
fn send_replies(
    sock: &PacketSocket,
    tx: &mut sys::SendBatch,
    replies: &mut Vec<(IpAddr, ReplyKind)>,
    shared: &Shared,
    name: &str,
    counters: &mut HashMap<IpAddr, IpCounters>,
) {
    let m = &shared.metrics;
    for &(ip, kind) in replies.iter() {
        if kind != ReplyKind::Echo {
            ip_counters(counters, m, ip).requests.inc();
        }
    }
    if !tx.is_empty() {
        sock.send_batch(tx, |i, res| {
            let Some(&(ip, kind)) = replies.get(i) else {
                return;
            };
            match res {
                Ok(()) => {
                    let c = ip_counters(counters, m, ip);
                    if kind == ReplyKind::Echo {
                        c.echo.inc();
                    } else {
                        c.responses.inc();
                    }
                    trace!(%ip, interface = %name, ?kind, "answered");
                }
                Err(e) => {
                    m.send_errors.inc();
                    debug!(%ip, interface = %name, error = %e, "reply send failed");
                }
            }
        });
    }
    replies.clear();
}

fn ip_counters<'a>(
    counters: &'a mut HashMap<IpAddr, IpCounters>,
    m: &Metrics,
    ip: IpAddr,
) -> &'a IpCounters {
    counters.entry(ip).or_insert_with(|| {
        let label = Metrics::ip(ip);
        IpCounters {
            requests: m.requests_received.get_or_create(&label).clone(),
            responses: m.responses_sent.get_or_create(&label).clone(),
            echo: m.echo_replies_sent.get_or_create(&label).clone(),
        }
    })
}

/// Counts / reports a frame that gets no reply (a duplicate responder or a drop).
fn handle_unanswered(verdict: Verdict<()>, shared: &Shared, name: &str, mac: Mac) {
    let m = &shared.metrics;
    match verdict {
        // Replies are sent by `send_replies`.
        Verdict::Reply { .. } => {}
        Verdict::Duplicate { ip, their_mac } => {
            m.duplicate_responders.get_or_create(&Metrics::ip(ip)).inc();
            let now = Instant::now();
            let fresh = {
                let mut seen = shared.dup_seen.lock().expect("dup lock");
                if seen.len() > 4096 {
                    seen.retain(|_, t| now.duration_since(*t) < shared.dup_interval);
                }
                match seen.get(&(ip, their_mac)) {
                    Some(t) if now.duration_since(*t) < shared.dup_interval => false,
                    _ => {
                        seen.insert((ip, their_mac), now);
                        true
                    }
                }
            };
            if fresh {
                warn!(%ip, our_mac = %mac, %their_mac, interface = %name, "duplicate responder for an owned IP");
                shared.emit(Event::DuplicateResponder {
                    ip,
                    our_mac: mac,
                    their_mac,
                    interface: name.to_string(),
                });
            }
        }
        Verdict::Drop(r) => {
            m.drop(r);
            trace!(interface = %name, reason = r.as_str(), "frame dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_ring_holds_its_frames_in_small_slots_unless_echo_is_answered() {
        // The frame starts after the kernel's slot header (TPACKET2_HDRLEN plus alignment,
        // under 128 bytes).
        let g = rx_ring_geometry(false);
        assert_eq!(g.len(), 256 << 10);
        assert!(g.frame_nr as usize >= 512);
        // an NDP solicitation with a VLAN tag and a few options
        assert!(ring::frame_span(g.frame_size, 128, 256).is_some());
        assert!(ring::frame_span(g.frame_size, 128, 1518).is_none());
        let g = rx_ring_geometry(true);
        assert_eq!(g.frame_nr, 512);
        // a 1500-byte-MTU echo request with a VLAN tag
        assert!(ring::frame_span(g.frame_size, 128, 1500 + 14 + 4).is_some());
    }
}

//! Shell: speaker-to-speaker heartbeats over UDP (default port 7947).
//!
//! Every `--heartbeat-interval` (100 ms) this node sends one signed heartbeat
//! ([`crate::election::membership::Heartbeat`]) to every peer — the nodes whose speaker
//! Lease is held, at their Node InternalIP — and records the heartbeats it receives in the
//! pure [`PeerTable`]. The speaker loop reads the table ([`Mesh`]) on each pass, after
//! reading every heartbeat still queued on the socket ([`Mesh::drain`]), and is woken
//! when a peer is heard again after silence, or crosses the fence / death silence
//! thresholds.
//!
//! Cost: with N peers, N heartbeats arrive and N leave every interval. The socket is not
//! watched for readiness (N event-loop wake-ups per interval): queued datagrams are read
//! with `recvmmsg` at each tick (and between ticks only when the socket's queue could not
//! hold an interval's heartbeats with room to spare, [`read_period`]), at the
//! table's next deadline and before each evaluation of the speaker loop, each recorded in the table in O(log N) as heard when it *arrived* (the
//! kernel's receive timestamp, [`arrival`]); the table's summary and its next deadline
//! (O(N), allocation-free) are recomputed at the tick and at that deadline. Each tick sends the one signed datagram to every peer with
//! `sendmmsg` (64 per call), from targets shared, not copied ([`MeshState::targets`]).
//!
//! With a multicast group ([`Mesh::with_group`], `--heartbeat-group`), every second tick
//! sends one datagram to the group instead, and by unicast only to the peers not heard on the
//! group lately ([`crate::election::membership::group`]): on one segment, about half the
//! datagrams leave. The group is joined on the interface of this node's own address
//! ([`MeshState::own`]) at the first tick that knows it, and again when it changes.
//!
//! The HMAC key comes from the Secret `ferrolb-heartbeat-key` (data key `key`)
//! in the speaker namespace, created by the controller; until it exists the speaker runs
//! on the Lease rules alone and reads it again with backoff (100 ms doubling to 5 s: a
//! hundred speakers waiting for a controller that is down must not poll the API server
//! four times a second each).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use prometheus_client::metrics::counter::Counter;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};

use super::metrics::{HeartbeatLabels, Metrics};
use crate::election::membership::{
    to_group, GroupReach, Heartbeat, HmacKey, MeshRules, MeshTiming, PeerTable, FLAG_MAY_ANNOUNCE,
    MAX_LEN,
};

/// Name of the Secret holding the heartbeat key (in the speaker namespace).
pub const KEY_SECRET: &str = "ferrolb-heartbeat-key";
/// Data key of the HMAC key inside [`KEY_SECRET`].
pub const KEY_FIELD: &str = "key";
/// Default UDP port of the heartbeats. MetalLB's memberlist uses 7946; 7947 is the next one
/// and is used by nothing in Kubernetes, kube-proxy, Calico, Cilium or Flannel.
pub const DEFAULT_PORT: u16 = 7947;
/// Default heartbeat multicast group (`--heartbeat-group`): in the organisation-local scope
/// (239.255.0.0/16), its last two bytes the port's digits.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 79, 47);

/// State shared between the heartbeat task and the speaker loop.
#[derive(Debug)]
pub struct MeshState {
    /// What was heard from whom.
    pub table: PeerTable,
    /// The key was loaded and heartbeats flow (otherwise the Lease rules apply).
    pub enabled: bool,
    /// When heartbeats started listening: the key load, or the mesh's creation until then
    /// (start of the start-up window, [`MeshRules::startup_window`]).
    pub since: Instant,
    /// Where to send: (node, address) of every peer. Replaced as a whole when it changes
    /// ([`MeshState::set_targets`]), so the heartbeat task takes it by reference count.
    pub targets: Arc<[(String, SocketAddr)]>,
    /// This node's current permission (sent as a flag, informational).
    pub may_announce: bool,
    /// Which peers were heard on the heartbeat group (None: no group).
    pub group: Option<GroupReach>,
    /// This node's own heartbeat address (its Node's InternalIP): the interface the group is
    /// joined on and sent to from.
    pub own: Option<SocketAddr>,
}

impl MeshState {
    /// Sets the heartbeat targets (kept as they are when equal).
    pub fn set_targets(&mut self, targets: Vec<(String, SocketAddr)>) {
        if *self.targets != *targets {
            self.targets = targets.into();
        }
    }
}

/// Handle to the heartbeat state.
#[derive(Debug, Clone)]
pub struct Mesh {
    state: Arc<Mutex<MeshState>>,
    /// Where heartbeats arrive, once the key is loaded ([`Mesh::listen`]).
    inbox: Arc<OnceLock<Inbox>>,
    /// The rules (timers).
    pub rules: MeshRules,
    /// Port peers listen on.
    pub port: u16,
    /// The heartbeat multicast group ([`Mesh::with_group`]).
    pub group: Option<Ipv4Addr>,
}

/// The receiving side: the heartbeat socket (a second descriptor of it, read without the
/// runtime's readiness tracking), the key, and what a received heartbeat updates.
struct Inbox {
    socket: std::net::UdpSocket,
    /// The receive buffers and the clocks of the last read (one reader at a time: the
    /// heartbeat task or the speaker loop).
    reader: Mutex<RecvBufs>,
    key: HmacKey,
    metrics: Arc<Metrics>,
    /// `heartbeats_received{result="ok"}`, taken once (counted per datagram).
    ok: Counter,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// Most datagrams one [`Mesh::drain`] reads (a flood must not hold the speaker loop).
const DRAIN_MAX: usize = 256;

impl Mesh {
    /// A mesh for node `me` with `timing`, sending to peers on `port`; disabled until a key
    /// is loaded.
    pub fn new(me: &str, timing: MeshTiming, port: u16) -> Self {
        Mesh {
            state: Arc::new(Mutex::new(MeshState {
                table: PeerTable::new(me, timing),
                enabled: false,
                since: Instant::now(),
                targets: Arc::new([]),
                may_announce: false,
                group: None,
                own: None,
            })),
            inbox: Arc::new(OnceLock::new()),
            rules: MeshRules { timing },
            port,
            group: None,
        }
    }

    /// Sends every second heartbeat to `group` ([`crate::election::membership::group`])
    /// when the timers allow it ([`GroupReach::new`]; otherwise unicast only, with a
    /// warning).
    pub fn with_group(mut self, group: Option<Ipv4Addr>) -> Self {
        let reach = group.and_then(|_| GroupReach::new(self.rules.timing));
        if group.is_some() && reach.is_none() {
            tracing::warn!(
                timing = ?self.rules.timing,
                "heartbeat group unused: the fence time is under 2.5 heartbeat intervals"
            );
        }
        self.group = group.filter(|_| reach.is_some());
        self.lock().group = reach;
        self
    }

    /// Enables heartbeats: those arriving on `socket` are checked with `key` from now on
    /// (by the heartbeat task and by [`Mesh::drain`]); `wake` is notified when a peer is
    /// heard again after silence.
    pub fn listen(
        &self,
        socket: &UdpSocket,
        key: HmacKey,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> std::io::Result<()> {
        let socket = std::net::UdpSocket::from(socket.as_fd().try_clone_to_owned()?);
        socket.set_nonblocking(true)?;
        let ok = metrics
            .heartbeats_received
            .get_or_create(&HeartbeatLabels {
                result: "ok".into(),
            })
            .clone();
        let _ = self.inbox.set(Inbox {
            socket,
            reader: Mutex::new(RecvBufs::default()),
            key,
            metrics,
            ok,
            wake,
        });
        let mut st = self.lock();
        st.enabled = true;
        st.since = Instant::now();
        Ok(())
    }

    /// Reads every heartbeat already queued on the socket, without waiting (at most
    /// [`DRAIN_MAX`]); returns how many datagrams it read. The speaker calls it before each
    /// evaluation: after a stall of the process, heartbeats that arrived meanwhile are in
    /// the table before anyone is judged silent.
    pub fn drain(&self) -> usize {
        self.read_queued().0
    }

    /// Reads every datagram queued on the socket (at most [`DRAIN_MAX`]), [`BATCH`] per
    /// `recvmmsg`, each recorded as heard when it *arrived* ([`arrival`]: the kernel's receive
    /// timestamp), however late it is read. Returns how many were read and whether a peer was
    /// heard again after silence (or for the first time; the speaker is then woken).
    pub fn read_queued(&self) -> (usize, bool) {
        let Some(inbox) = self.inbox.get() else {
            return (0, false);
        };
        let mut rx = inbox.reader.lock().unwrap_or_else(|p| p.into_inner());
        let (mut read, mut changed) = (0, false);
        while read < DRAIN_MAX {
            let n = rx.recv(inbox.socket.as_raw_fd()).unwrap_or(0);
            if n > 0 {
                changed |= self.receive(rx.datagrams(n));
            }
            read += n;
            if n < BATCH {
                break;
            }
        }
        (read, changed)
    }

    /// Records datagrams received, each with its sender, its destination address (the group's:
    /// its sender shares the group, [`GroupReach::heard`]) and the instant it arrived (and
    /// that instant on the wall clock, for the staleness check), under one lock (ignored
    /// before [`Mesh::listen`]). Returns whether a peer was heard again after silence (or
    /// for the first time): then the speaker is woken, and the table's summary may have
    /// changed.
    fn receive<'a>(
        &self,
        datagrams: impl IntoIterator<Item = (&'a [u8], SocketAddr, Option<IpAddr>, Instant, u64)>,
    ) -> bool {
        let Some(inbox) = self.inbox.get() else {
            return false;
        };
        let metrics = &inbox.metrics;
        let mut any_changed = false;
        let mut st = self.lock();
        let group = self.group.map(|g| IpAddr::V4(g).to_canonical());
        for (datagram, from, to, at, at_unix_ms) in datagrams {
            metrics
                .heartbeat_bytes_received
                .inc_by(datagram.len() as u64);
            match st.table.receive(datagram, &inbox.key, at, at_unix_ms) {
                Ok((node, changed)) => {
                    if let (Some(g), Some(reach)) = (group, st.group.as_mut()) {
                        if to.map(|t| t.to_canonical()) == Some(g) {
                            reach.heard(&node, at);
                        }
                    }
                    if let Some(gap) = st.table.last_gap(&node) {
                        metrics.heartbeat_gap_seconds.observe(gap.as_secs_f64());
                    }
                    inbox.ok.inc();
                    if changed {
                        tracing::debug!(%node, %from, "peer heard (again)");
                        any_changed = true;
                    }
                }
                Err(reason) => {
                    metrics.heartbeat_received(reason.as_str());
                    tracing::debug!(%from, reason = reason.as_str(), "heartbeat dropped");
                }
            }
        }
        drop(st);
        if any_changed {
            inbox.wake.notify_one();
        }
        any_changed
    }

    /// Locks the state (never poisoned in practice: nothing panics while holding it).
    pub fn lock(&self) -> MutexGuard<'_, MeshState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Settings of the heartbeat task.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// This node.
    pub node: String,
    /// Address to bind (`[::]:7947`).
    pub bind: SocketAddr,
    /// Namespace of the key Secret.
    pub namespace: String,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Binds the heartbeat socket (dual-stack when `bind` is `[::]`).
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let SocketAddr::V6(a) = addr {
        if a.ip() == &Ipv6Addr::UNSPECIFIED {
            sock.set_only_v6(false)?;
        }
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    // Room for the heartbeats queued between two reads ([`read_period`]) even when many
    // peers send at once: 1 MiB asked (~1 000 heartbeats), as much as `net.core.rmem_max`
    // allows (best effort: the default queue is kept when refused).
    let _ = sock.set_recv_buffer_size(1 << 20);
    // each datagram's arrival time, read with it ([`arrival`])
    set_int_option(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    // IPv4 heartbeats (also those of a dual-stack socket) leave with "don't fragment" set
    // and no path MTU discovery: a heartbeat is far below any MTU, and without the flag the
    // kernel draws each datagram's IP identification from its shared generator (a
    // measurable part of sending at hundreds of peers). Best effort.
    let _ = set_int_option(
        sock.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    // each datagram's destination address: heartbeats sent to the group tell which peers
    // share it ([`GroupReach`])
    match addr {
        SocketAddr::V6(_) => set_int_option(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            1,
        )?,
        SocketAddr::V4(_) => {
            set_int_option(sock.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?
        }
    }
    // this node's own heartbeats to the group do not come back to it (a dual-stack socket
    // follows the IPv6 option also for IPv4 groups)
    let _ = sock.set_multicast_loop_v4(false);
    if addr.is_ipv6() {
        let _ = sock.set_multicast_loop_v6(false);
    }
    let _ = sock.set_multicast_ttl_v4(1);
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// This node's membership of the heartbeat group: joined on the interface of its own
/// (IPv4) heartbeat address, again when that changes; a join refused is not retried for the
/// same address.
#[derive(Debug, Default)]
struct GroupMembership {
    /// The own address the group is joined with.
    on: Option<Ipv4Addr>,
    /// The last own address a join failed for.
    refused: Option<Ipv4Addr>,
}

impl GroupMembership {
    /// Whether `group` is joined on the interface of `own` (joining it now, and sending to
    /// it from there, if not yet).
    fn joined(
        &mut self,
        socket: &std::net::UdpSocket,
        group: Ipv4Addr,
        own: Option<SocketAddr>,
    ) -> bool {
        let Some(SocketAddr::V4(own)) = own else {
            return false;
        };
        let own = *own.ip();
        if self.on == Some(own) {
            return true;
        }
        if self.refused == Some(own) {
            return false;
        }
        let sock = socket2::SockRef::from(socket);
        if let Some(was) = self.on.take() {
            let _ = sock.leave_multicast_v4(&group, &was);
        }
        match sock
            .join_multicast_v4(&group, &own)
            .and_then(|()| sock.set_multicast_if_v4(&own))
        {
            Ok(()) => {
                tracing::info!(%group, %own, "heartbeats on the multicast group");
                self.on = Some(own);
                true
            }
            Err(e) => {
                tracing::warn!(%group, %own, error = %e, "cannot join the heartbeat group; unicast only");
                self.refused = Some(own);
                false
            }
        }
    }
}

/// Sets the integer socket option `level` / `name` of `fd` to `value`.
fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a c_int option of that size; an invalid descriptor is an error, not UB.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's IPv4 path MTU discovery mode (`IP_MTU_DISCOVER`).
#[cfg(test)]
fn pmtu_mode(fd: RawFd) -> libc::c_int {
    let mut v: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket, a c_int buffer of that size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
    v
}

/// Reads the key from the Secret; `Ok(None)` while it does not exist (or is unusable).
pub async fn load_key(api: &Api<Secret>) -> Result<Option<HmacKey>, kube::Error> {
    let Some(s) = api.get_opt(KEY_SECRET).await? else {
        return Ok(None);
    };
    let Some(bytes) = s.data.as_ref().and_then(|d| d.get(KEY_FIELD)) else {
        tracing::warn!(
            secret = KEY_SECRET,
            field = KEY_FIELD,
            "heartbeat key Secret has no key field"
        );
        return Ok(None);
    };
    match HmacKey::new(&bytes.0) {
        Ok(k) => Ok(Some(k)),
        Err(e) => {
            tracing::warn!(secret = KEY_SECRET, error = %e, "unusable heartbeat key");
            Ok(None)
        }
    }
}

/// Reads the key until it is there, with backoff ([`super::plan::Backoff`]: 100 ms doubling
/// to 5 s), saying once that it is missing. `None` when `stop` turns true first.
pub async fn wait_for_key(
    secrets: &Api<Secret>,
    stop: &mut watch::Receiver<bool>,
) -> Option<HmacKey> {
    let mut backoff = super::plan::Backoff::default();
    let mut told = false;
    loop {
        match load_key(secrets).await {
            Ok(Some(k)) => return Some(k),
            Ok(None) if !told => {
                told = true;
                tracing::info!(
                    secret = KEY_SECRET,
                    "heartbeat key not there yet (the controller creates it); Lease rules only"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the heartbeat key; retrying"),
        }
        let now = Instant::now();
        backoff.failed(now);
        let until = backoff.until().unwrap_or(now);
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return None },
        }
    }
}

/// Runs the heartbeats until `stop` turns true: waits for the key, then [`serve`]s.
pub async fn run(
    cfg: HeartbeatConfig,
    socket: UdpSocket,
    secrets: Api<Secret>,
    mesh: Mesh,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(key) = wait_for_key(&secrets, &mut stop).await else {
        return;
    };
    serve(&cfg.node, socket, key, mesh, wake, metrics, stop).await;
}

/// Heartbeats with `key` until `stop` turns true: sends one to every target each interval
/// and reads what arrived since, each datagram recorded at its arrival time. `wake` is
/// notified on liveness changes: a peer heard again after silence (at the next tick), or
/// crossing the fence / death thresholds (at that instant, after reading what is queued).
///
/// The socket is not watched for readiness: at N peers, N datagrams arrive per interval,
/// each an event loop wake-up if it were. They wait in the socket's queue until the next
/// tick or deadline, or the speaker's next evaluation ([`Mesh::drain`]), whichever comes
/// first; the kernel's receive timestamp ([`arrival`]) keeps the time each was heard exact,
/// so reading late changes no liveness decision (only a returning peer is noticed up to an
/// interval later).
pub async fn serve(
    node: &str,
    socket: UdpSocket,
    key: HmacKey,
    mesh: Mesh,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = mesh.listen(&socket, key.clone(), metrics.clone(), wake.clone()) {
        tracing::error!(error = %e, "cannot read the heartbeat socket; Lease rules only");
        return;
    }
    tracing::info!(addr = ?socket.local_addr().ok(), interval = ?mesh.rules.timing.interval, "heartbeats enabled");
    // out of the runtime's readiness tracking (no wake-up per datagram); sent to and read
    // from without waiting
    let socket = match socket.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot take the heartbeat socket from the runtime; Lease rules only");
            return;
        }
    };
    // what one read may take: half of what the socket's queue holds
    let per_read = per_read(
        socket2::SockRef::from(&socket)
            .recv_buffer_size()
            .unwrap_or(0),
    );
    let incarnation = unix_ms();
    let mut seq: u64 = 0;
    // ticks so far: the even ones go to the group ([`to_group`])
    let mut ticks: u64 = 0;
    let mut membership = GroupMembership::default();
    // targets not to unicast to at this tick (they share the group)
    let mut skip: Vec<bool> = Vec::new();
    let mut tick = tokio::time::interval(mesh.rules.timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fanout = Fanout::default();
    let mut signature = Vec::new();
    let far = Duration::from_secs(3600);
    // The table's next threshold crossing, recomputed with the summary. A heartbeat only
    // moves its sender's thresholds later, and forgetting a peer removes some: between
    // recomputations this is never later than the true one, only sometimes earlier.
    let deadline = tokio::time::sleep(far);
    tokio::pin!(deadline);
    // Reads between ticks when there are more peers than one read may take, so the queue
    // never holds more than that ([`read_period`]); up to that, the tick's read is all.
    let interval = mesh.rules.timing.interval;
    let mut period = interval;
    let after = |period: Duration| {
        tokio::time::Instant::now() + if period < interval { period } else { far }
    };
    let next_read = tokio::time::sleep(far);
    tokio::pin!(next_read);
    loop {
        tokio::select! {
            _ = &mut next_read => {
                mesh.read_queued();
                next_read.as_mut().reset(after(period));
                continue;
            }
            _ = tick.tick() => {
                mesh.read_queued();
                ticks += 1;
                let now = Instant::now();
                let own = mesh.lock().own;
                let joined = mesh.group.filter(|g| membership.joined(&socket, *g, own));
                // an even tick goes to the group, and by unicast to the peers not heard there
                let group = joined.filter(|_| to_group(ticks));
                let (targets, flags) = {
                    let st = mesh.lock();
                    skip.clear();
                    let reach = st.group.as_ref().filter(|_| joined.is_some());
                    metrics
                        .heartbeat_group_peers
                        .set(reach.map_or(0, |r| r.sharing(now)) as i64);
                    match reach.filter(|_| group.is_some()) {
                        Some(r) => skip.extend(st.targets.iter().map(|(n, _)| r.shares(n, now))),
                        None => skip.resize(st.targets.len(), false),
                    }
                    (st.targets.clone(), if st.may_announce { FLAG_MAY_ANNOUNCE } else { 0 })
                };
                period = read_period(interval, targets.len(), per_read);
                next_read.as_mut().reset(after(period));
                let mut heartbeat = || {
                    seq += 1;
                    Heartbeat {
                        node: node.to_string(),
                        incarnation,
                        seq,
                        sent_unix_ms: unix_ms(),
                        flags,
                    }
                    .encode(&key)
                };
                let mut sent_bytes = 0;
                if let Some(group) = group {
                    let msg = heartbeat();
                    match socket.send_to(&msg, SocketAddr::from((group, mesh.port))) {
                        Ok(_) => {
                            metrics.heartbeats_sent.inc();
                            metrics.heartbeats_sent_group.inc();
                            sent_bytes += msg.len();
                        }
                        Err(e) => {
                            tracing::trace!(%group, error = %e, "heartbeat not sent to the group");
                            metrics.heartbeat_send_errors.inc();
                        }
                    }
                }
                let unicast = skip.iter().filter(|s| !**s).count();
                if unicast > 0 {
                    let msg = heartbeat();
                    let sent = fanout.send(socket.as_raw_fd(), &targets, &skip, &msg);
                    metrics.heartbeats_sent.inc_by(sent as u64);
                    sent_bytes += sent * msg.len();
                    metrics
                        .heartbeat_send_errors
                        .inc_by(unicast.saturating_sub(sent) as u64);
                }
                metrics.heartbeat_bytes_sent.inc_by(sent_bytes as u64);
            }
            _ = &mut deadline => {
                mesh.read_queued();
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break } else { continue },
        }
        let now = Instant::now();
        let (change, next) = {
            let st = mesh.lock();
            (
                st.table.update_signature(now, &mut signature),
                st.table.next_change(now),
            )
        };
        deadline
            .as_mut()
            .reset(tokio::time::Instant::from_std(next.unwrap_or(now + far)));
        if change.changed {
            metrics.peers_heard.set(change.heard as i64);
            if change.went_silent {
                tracing::info!(peers = ?signature, "peer went silent");
            }
            wake.notify_one();
        }
    }
}

/// Datagrams read per `recvmmsg`, sent per `sendmmsg`.
const BATCH: usize = 64;

/// Receive-queue room counted per queued heartbeat: the kernel charges each datagram its
/// buffer's true size (under 1 KiB on a veth, up to 2 KiB for most NICs' receive buffers),
/// not its ~100 bytes.
const DATAGRAM_ROOM: usize = 2048;

/// How many heartbeats one read may take from a socket whose receive queue holds
/// `rcvbuf` bytes (`SO_RCVBUF` as the kernel reports it): half of what fits (room for
/// late reads and bursts), at least one [`BATCH`] (the figure before the queue's size was
/// read), at most [`DRAIN_MAX`]. The default `net.core.rmem_max` (208 KiB, doubled by the
/// kernel) gives 104: a cluster of up to 105 nodes is read once per interval.
pub fn per_read(rcvbuf: usize) -> usize {
    (rcvbuf / DATAGRAM_ROOM / 2).clamp(BATCH, DRAIN_MAX)
}

/// How often the heartbeat socket is read, with `peers` each sending one heartbeat per
/// `interval` and `per_read` ([`per_read`]) the most one read may take: once per interval
/// (at the tick, no other wake-up) while they fit, more often beyond, so the socket's queue
/// holds about `per_read` between reads; never more often than every 2 ms.
pub fn read_period(interval: Duration, peers: usize, per_read: usize) -> Duration {
    if peers <= per_read {
        return interval;
    }
    (interval * per_read as u32 / peers as u32).max(Duration::from_millis(2))
}

/// Most a wall-clock reading may drift from the monotonic clock between two reads of the
/// socket before the kernel's receive timestamps are distrusted ([`arrival`]).
const STEP_TOLERANCE: Duration = Duration::from_millis(5);

/// The monotonic instant a datagram read at `now` (`now_wall` on the wall clock, since the
/// epoch) arrived at, from its kernel receive timestamp `arrived` (wall clock). `prev`: the
/// clocks at the previous read of the socket, which left the queue empty, so the datagram
/// arrived after it. The read time itself (as if read on arrival: later than the truth, the
/// conservative side for this node's own fence) when there is no timestamp, no previous
/// read, or the wall clock stepped since (the two clocks moved apart by more than
/// [`STEP_TOLERANCE`]); never before the previous read.
pub fn arrival(
    arrived: Option<Duration>,
    now: Instant,
    now_wall: Duration,
    prev: Option<(Instant, Duration)>,
) -> Instant {
    let (Some(ts), Some((prev_mono, prev_wall))) = (arrived, prev) else {
        return now;
    };
    let mono = now.saturating_duration_since(prev_mono);
    let wall = now_wall.checked_sub(prev_wall);
    let steady = wall.is_some_and(|w| w.abs_diff(mono) <= STEP_TOLERANCE);
    if !steady {
        return now;
    }
    now - now_wall.saturating_sub(ts).min(mono)
}

/// Control-message room of one datagram, 8-byte aligned: its receive timestamp
/// (`SCM_TIMESTAMPNS`, a `timespec` behind a `cmsghdr`: 32 bytes) and its destination
/// address (`IPV6_PKTINFO`, 40 bytes, or `IP_PKTINFO`, 32).
const CTRL_WORDS: usize = 12;

/// Buffers of one `recvmmsg`: [`BATCH`] datagrams, their senders and receive timestamps,
/// and the clocks of the last read ([`arrival`]).
struct RecvBufs {
    bufs: Box<[[u8; MAX_LEN + 1]; BATCH]>,
    lens: [usize; BATCH],
    from: Box<[libc::sockaddr_storage; BATCH]>,
    from_lens: [libc::socklen_t; BATCH],
    ctrl: Box<[[u64; CTRL_WORDS]; BATCH]>,
    /// Arrival of each datagram of the last read (monotonic, and wall-clock ms).
    at: [(Instant, u64); BATCH],
    /// Destination address of each datagram of the last read.
    to: [Option<IpAddr>; BATCH],
    /// (monotonic, wall) clocks right after the last read that left the queue empty.
    prev: Option<(Instant, Duration)>,
}

impl Default for RecvBufs {
    fn default() -> Self {
        RecvBufs {
            bufs: Box::new([[0; MAX_LEN + 1]; BATCH]),
            lens: [0; BATCH],
            // SAFETY: an all-zero sockaddr_storage is valid (family AF_UNSPEC).
            from: Box::new(unsafe { std::mem::zeroed() }),
            from_lens: [0; BATCH],
            ctrl: Box::new([[0; CTRL_WORDS]; BATCH]),
            at: [(Instant::now(), 0); BATCH],
            to: [None; BATCH],
            prev: None,
        }
    }
}

/// The wall clock as a duration since the epoch.
fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Most time between the two monotonic readings around a wall-clock reading for the pair to
/// count as read together ([`paired_clocks`]).
const PAIR_GAP: Duration = Duration::from_micros(500);

/// Attempts at reading the clocks together before taking the closest pair seen.
const PAIR_TRIES: usize = 4;

/// The monotonic and the wall clock read at (nearly) the same moment: the wall clock between
/// two monotonic readings, read again when the thread was preempted between them (more than
/// [`PAIR_GAP`] apart), so that a preempted read is not taken for a step of the wall clock
/// ([`arrival`]). The monotonic instant is the middle of the closest pair of
/// [`PAIR_TRIES`].
fn paired_clocks(
    mut mono: impl FnMut() -> Instant,
    mut wall: impl FnMut() -> Duration,
) -> (Instant, Duration) {
    let mut best: Option<(Duration, Instant, Duration)> = None;
    for _ in 0..PAIR_TRIES {
        let before = mono();
        let at = wall();
        let gap = mono().saturating_duration_since(before);
        if best.is_none_or(|(g, _, _)| gap < g) {
            best = Some((gap, before + gap / 2, at));
        }
        if gap <= PAIR_GAP {
            break;
        }
    }
    let (_, now, at) = best.expect("PAIR_TRIES is at least one");
    (now, at)
}

impl RecvBufs {
    /// Receives up to [`BATCH`] datagrams from `fd` without waiting, with the instant each
    /// arrived; how many (`WouldBlock` when none is queued).
    fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero iovec / mmsghdr are valid (null pointers, zero lengths).
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (iov, hdr)) in iovs.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            iov.iov_base = self.bufs[i].as_mut_ptr().cast();
            iov.iov_len = self.bufs[i].len();
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_name = (&mut self.from[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            hdr.msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = std::mem::size_of_val(&self.ctrl[i]) as _;
        }
        // SAFETY: every header points at a buffer, an iovec, an address and a control
        // buffer of this value or this frame, all alive for the call and sized as declared;
        // MSG_DONTWAIT never waits.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let (now, now_wall) = paired_clocks(Instant::now, wall_now);
        let prev = self.prev;
        if n < 0 {
            self.prev = Some((now, now_wall));
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // Only a read that left the queue empty bounds the arrival of what comes next: after
        // a full batch, the rest still queued arrived before this read, not after it.
        if n < BATCH {
            self.prev = Some((now, now_wall));
        }
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = (hdr.msg_len as usize).min(MAX_LEN + 1);
            self.from_lens[i] = hdr.msg_hdr.msg_namelen;
            let (arrived, to) = control_messages(&hdr.msg_hdr);
            self.to[i] = to;
            let at = arrival(arrived, now, now_wall, prev);
            let wall = now_wall.saturating_sub(now.saturating_duration_since(at));
            self.at[i] = (at, wall.as_millis() as u64);
        }
        Ok(n)
    }

    /// The first `n` datagrams of the last [`RecvBufs::recv`], each with its sender
    /// (unspecified when the kernel gave none), its destination and its arrival.
    fn datagrams(
        &self,
        n: usize,
    ) -> impl Iterator<Item = (&[u8], SocketAddr, Option<IpAddr>, Instant, u64)> + '_ {
        (0..n.min(BATCH)).map(move |i| {
            let from = socket_addr(&self.from[i], self.from_lens[i])
                .unwrap_or(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)));
            (
                &self.bufs[i][..self.lens[i]],
                from,
                self.to[i],
                self.at[i].0,
                self.at[i].1,
            )
        })
    }
}

/// The control messages of a received datagram: its receive timestamp (`SCM_TIMESTAMPNS`,
/// wall clock) and its destination address (`IPV6_PKTINFO`, an IPv4 one mapped, or
/// `IP_PKTINFO`), each if present.
fn control_messages(msg: &libc::msghdr) -> (Option<Duration>, Option<IpAddr>) {
    let (mut at, mut to) = (None, None);
    // SAFETY: `msg` was filled by recvmmsg: its control buffer holds `msg_controllen` valid
    // bytes of control messages, walked with the libc macros, which stay within them; each
    // payload is read unaligned as the type its level and type announce.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                    at = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let pi = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    to = Some(IpAddr::from(pi.ipi6_addr.s6_addr).to_canonical());
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let pi = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    to = Some(IpAddr::from(u32::from_be(pi.ipi_addr.s_addr).to_be_bytes()));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    (at, to)
}

/// The IPv4 or IPv6 address the kernel wrote into `ss` (`len` bytes).
fn socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match ss.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, which fits in the storage.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says it is a sockaddr_in6, which fits in the storage.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((
                a.sin6_addr.s6_addr,
                u16::from_be(a.sin6_port),
            )))
        }
        _ => None,
    }
}

/// Sends one datagram to every target (but those skipped) with `sendmmsg`; keeps the
/// targets' socket addresses until the targets change.
#[derive(Default)]
struct Fanout {
    of: Option<Arc<[(String, SocketAddr)]>>,
    addrs: Vec<socket2::SockAddr>,
}

impl Fanout {
    /// Sends `msg` from `fd` to each of `targets` whose `skip` is not set ([`BATCH`] per
    /// call; a target the kernel refuses is skipped, not retried); how many were sent.
    fn send(
        &mut self,
        fd: RawFd,
        targets: &Arc<[(String, SocketAddr)]>,
        skip: &[bool],
        msg: &[u8],
    ) -> usize {
        if !self.of.as_ref().is_some_and(|o| Arc::ptr_eq(o, targets)) {
            self.addrs = targets
                .iter()
                .map(|(_, a)| socket2::SockAddr::from(*a))
                .collect();
            self.of = Some(targets.clone());
        }
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut _,
            iov_len: msg.len(),
        };
        let mut sent = 0;
        let mut start = 0;
        let to: Vec<&socket2::SockAddr> = self
            .addrs
            .iter()
            .zip(skip.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, s)| !**s)
            .map(|(a, _)| a)
            .collect();
        while start < to.len() {
            let chunk = &to[start..(start + BATCH).min(to.len())];
            // SAFETY: all-zero mmsghdr are valid (null pointers, zero lengths).
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (hdr, addr) in hdrs.iter_mut().zip(chunk) {
                hdr.msg_hdr.msg_iov = &mut iov;
                hdr.msg_hdr.msg_iovlen = 1;
                hdr.msg_hdr.msg_name = addr.as_ptr() as *mut _;
                hdr.msg_hdr.msg_namelen = addr.len();
            }
            // SAFETY: the headers point at `iov` (over `msg`) and at addresses in
            // `self.addrs`, alive for the call; the kernel only reads them for sending.
            let n = unsafe {
                libc::sendmmsg(fd, hdrs.as_mut_ptr(), chunk.len() as _, libc::MSG_DONTWAIT)
            };
            if n > 0 {
                sent += n as usize;
                start += n as usize;
            } else {
                let e = io::Error::last_os_error();
                tracing::trace!(addr = ?chunk[0].as_socket(), error = %e, "heartbeat not sent");
                start += 1;
            }
        }
        sent
    }
}

/// The heartbeat address of a Node: its first IPv4 InternalIP, else its first InternalIP.
pub fn node_address(node: &k8s_openapi::api::core::v1::Node, port: u16) -> Option<SocketAddr> {
    let addrs: Vec<IpAddr> = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let ip = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())?;
    Some(SocketAddr::new(*ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heartbeats leave with "don't fragment" and no path MTU discovery, on IPv4 and
    /// dual-stack sockets alike.
    #[tokio::test]
    async fn heartbeat_sockets_set_dont_fragment() {
        for addr in ["127.0.0.1:0", "[::]:0"] {
            let s = bind(addr.parse().unwrap()).unwrap();
            assert_eq!(pmtu_mode(s.as_raw_fd()), libc::IP_PMTUDISC_PROBE, "{addr}");
        }
    }

    /// Every datagram read carries its destination address (how a heartbeat to the group is
    /// told from one to this node), on an IPv4 socket and on a dual-stack one (IPv4 mapped).
    #[tokio::test]
    async fn datagrams_read_carry_their_destination() {
        for (bind_to, send_to) in [
            ("127.0.0.1:0", "127.0.0.1"),
            ("[::]:0", "127.0.0.1"),
            ("[::]:0", "::1"),
        ] {
            let s = bind(bind_to.parse().unwrap()).unwrap();
            let port = s.local_addr().unwrap().port();
            let to: IpAddr = send_to.parse().unwrap();
            let from = std::net::UdpSocket::bind(SocketAddr::from((
                if to.is_ipv4() {
                    IpAddr::from(Ipv4Addr::LOCALHOST)
                } else {
                    IpAddr::from(Ipv6Addr::LOCALHOST)
                },
                0,
            )))
            .unwrap();
            from.send_to(b"x", (to, port)).unwrap();
            let mut rx = RecvBufs::default();
            let mut n = 0;
            for _ in 0..100 {
                n = rx.recv(s.as_raw_fd()).unwrap_or(0);
                if n > 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let got: Vec<_> = rx
                .datagrams(n)
                .map(|(d, _, to, _, _)| (d.to_vec(), to))
                .collect();
            assert_eq!(got, [(b"x".to_vec(), Some(to))], "{bind_to} <- {send_to}");
        }
    }
    use crate::election::membership::MeshTiming;

    #[test]
    fn node_address_prefers_ipv4_internal_ip() {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n"},
                {"type": "InternalIP", "address": "2001:db8::5"},
                {"type": "ExternalIP", "address": "203.0.113.5"},
                {"type": "InternalIP", "address": "192.0.2.5"}]}
        }))
        .unwrap();
        assert_eq!(
            node_address(&node, 7947),
            Some("192.0.2.5:7947".parse().unwrap())
        );
        let v6only: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [{"type": "InternalIP", "address": "2001:db8::5"}]}
        }))
        .unwrap();
        assert_eq!(
            node_address(&v6only, 7947),
            Some("[2001:db8::5]:7947".parse().unwrap())
        );
        let none: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(node_address(&none, 7947), None);
    }

    #[test]
    fn the_socket_is_read_often_enough_that_one_read_holds_what_arrives_between_reads() {
        let i = Duration::from_millis(100);
        // a small queue: one batch per read, as before its size was read
        let b = per_read(0);
        assert_eq!(b, BATCH);
        assert_eq!(read_period(i, 0, b), i);
        assert_eq!(read_period(i, 64, b), i);
        for peers in [65, 99, 200, 1_000, 3_000] {
            let p = read_period(i, peers, b);
            let per_read = peers as f64 * p.as_secs_f64() / i.as_secs_f64();
            assert!(p < i && per_read <= BATCH as f64, "{peers}: {p:?}");
        }
        // at the 2 ms floor, one read still takes what arrived since the last
        let per = 10_000.0 * 0.002 / 0.1;
        assert!(read_period(i, 10_000, b) == Duration::from_millis(2) && per <= DRAIN_MAX as f64);
        assert_eq!(read_period(i, 1_000_000, b), Duration::from_millis(2));
        // the default rmem_max (212 992 bytes, reported doubled): 100 nodes are read at the
        // tick alone, with half the queue to spare
        let d = per_read(2 * 212_992);
        assert_eq!(d, 104);
        assert_eq!(read_period(i, 99, d), i);
        // beyond, reads between ticks, each taking at most that
        for peers in [105, 200, 1_000] {
            let p = read_period(i, peers, d);
            let took = peers as f64 * p.as_secs_f64() / i.as_secs_f64();
            assert!(p < i && took <= d as f64, "{peers}: {p:?}");
        }
        // 1 MiB granted (2 MiB reported): up to DRAIN_MAX per read, never more
        assert_eq!(per_read(2 << 20), DRAIN_MAX);
        assert_eq!(read_period(i, DRAIN_MAX, per_read(2 << 20)), i);
        assert_eq!(per_read(usize::MAX), DRAIN_MAX);
    }

    /// 150 datagrams read 200 ms after they arrived, in three batches: each is stamped with
    /// its arrival, the later batches too (the first batch, being full, does not move the
    /// bound for the rest).
    #[tokio::test]
    async fn every_batch_of_a_late_read_is_stamped_with_its_arrival() {
        let ms = Duration::from_millis;
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = socket.local_addr().unwrap();
        let socket = socket.into_std().unwrap();
        let mut rx = RecvBufs::default();
        assert_eq!(
            rx.recv(socket.as_raw_fd()).unwrap_or(0),
            0,
            "an empty read first"
        );
        let from = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // The kernel turns receive timestamps on for the whole system from a work queue
        // after the first socket asks for them: until then a datagram is stamped when it
        // is read. Wait for a stamp earlier than the read before measuring.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            from.send_to(&[0], to).unwrap();
            std::thread::sleep(ms(20));
            let read = Instant::now();
            let n = rx.recv(socket.as_raw_fd()).unwrap_or(0);
            let stamps: Vec<_> = rx.datagrams(n).map(|(_, _, _, at, _)| at).collect();
            if stamps.iter().all(|at| *at + ms(10) <= read) && !stamps.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no datagram stamped on arrival within 5 s"
            );
        }
        let sent = Instant::now();
        for i in 0..150u8 {
            from.send_to(&[i], to).unwrap();
        }
        std::thread::sleep(ms(200));
        let mut stamps = Vec::new();
        loop {
            let n = rx.recv(socket.as_raw_fd()).unwrap_or(0);
            stamps.extend(rx.datagrams(n).map(|(_, _, _, at, _)| at));
            if n < BATCH {
                break;
            }
        }
        assert_eq!(stamps.len(), 150);
        for at in stamps {
            let late = at.saturating_duration_since(sent);
            assert!(
                late < ms(100),
                "stamped {late:?} after it was sent, read 200 ms after"
            );
        }
    }

    #[test]
    fn arrival_maps_the_kernel_timestamp_unless_the_wall_clock_stepped() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let w0 = Duration::from_secs(1_700_000_000);
        let prev = Some((t0, w0));
        let (now, wall) = (t0 + ms(100), w0 + ms(100));
        // arrived 30 ms before the read
        assert_eq!(arrival(Some(wall - ms(30)), now, wall, prev), now - ms(30));
        // no timestamp, or no earlier read to compare the clocks with: the read time
        assert_eq!(arrival(None, now, wall, prev), now);
        assert_eq!(arrival(Some(wall - ms(30)), now, wall, None), now);
        // a timestamp before the previous read (not possible unless a clock is wrong):
        // no earlier than that read
        assert_eq!(arrival(Some(wall - ms(500)), now, wall, prev), t0);
        // from the future: the read time
        assert_eq!(arrival(Some(wall + ms(20)), now, wall, prev), now);
        // the wall clock stepped since the previous read, forward or back: the read time
        for stepped in [w0 + ms(300), w0 + ms(40), w0 - ms(1000)] {
            assert_eq!(arrival(Some(stepped - ms(30)), now, stepped, prev), now);
        }
        // within the tolerance: trusted
        let drift = wall + ms(4);
        assert_eq!(
            arrival(Some(drift - ms(30)), now, drift, prev),
            now - ms(30)
        );
    }

    #[test]
    fn clocks_read_across_a_preemption_are_read_again() {
        let t0 = Instant::now();
        let w0 = Duration::from_secs(1_700_000_000);
        // Monotonic readings in pairs around each wall reading; the wall clock moves with
        // the monotonic one. The first pair is 30 ms apart (preempted), the second 100 us.
        static PREEMPTED_ONCE: [u64; 6] = [0, 30_000, 31_000, 31_100, 40_000, 40_010];
        let clocks = |monos: &'static [u64]| {
            let mut m = monos.iter().map(|us| t0 + Duration::from_micros(*us));
            let last = std::cell::Cell::new(t0);
            let mut reads = 0;
            let (now, wall) = paired_clocks(
                || {
                    reads += 1;
                    last.set(m.next().unwrap());
                    last.get()
                },
                || w0 + last.get().duration_since(t0),
            );
            (now.duration_since(t0), wall - w0, reads)
        };
        let us = Duration::from_micros;
        // read again after the preempted pair, stops at the first close one
        assert_eq!(clocks(&PREEMPTED_ONCE), (us(31_050), us(31_000), 4));
        // every pair preempted: the closest one
        static SLOW: [u64; 8] = [0, 9_000, 10_000, 12_000, 20_000, 35_000, 40_000, 48_000];
        assert_eq!(clocks(&SLOW), (us(11_000), us(10_000), 8));
    }

    /// The heartbeat task of node `a` on `socket`: its metrics, the speaker's wake-up, the
    /// stop switch and the task.
    fn spawn_serve(
        socket: UdpSocket,
        key: &HmacKey,
        mesh: &Mesh,
    ) -> (
        Arc<Metrics>,
        Arc<Notify>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut reg));
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve(
            "a",
            socket,
            key.clone(),
            mesh.clone(),
            wake.clone(),
            metrics.clone(),
            stop_rx,
        ));
        (metrics, wake, stop_tx, task)
    }

    /// Polls `f` every 5 ms until true; how long that took (panics after `within`).
    async fn until(within: Duration, what: &str, f: impl Fn() -> bool) -> Duration {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < within, "{what}: not within {within:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        t.elapsed()
    }

    /// The heartbeat task with a 1 s interval (2 s fence, 4 s death): a peer heard for the
    /// first time or again after silence is noticed by the next tick, recorded as heard when
    /// its heartbeat arrived (not when it was read); its silence is noticed at the fence
    /// time, not at the next tick; a burst larger than one `recvmmsg` batch is read whole;
    /// every target gets each tick's heartbeat.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_notices_silence_and_return_promptly_and_sends_to_every_target() {
        let ms = Duration::from_millis;
        let timing =
            MeshTiming::new(ms(1000), ms(2000), ms(4000), Duration::from_secs(30)).unwrap();
        let key = HmacKey::new(&[7u8; 32]).unwrap();
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = socket.local_addr().unwrap();
        let mesh = Mesh::new("a", timing, to.port());
        let peers: Vec<std::net::UdpSocket> = (0..2)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        {
            let mut st = mesh.lock();
            st.set_targets(vec![
                ("b".into(), peers[0].local_addr().unwrap()),
                ("c".into(), peers[1].local_addr().unwrap()),
            ]);
            st.may_announce = true;
        }
        let (metrics, wake, stop_tx, task) = spawn_serve(socket, &key, &mesh);
        let mut seq = 0;
        let mut send_b = |n: usize| {
            for _ in 0..n {
                seq += 1;
                let hb = Heartbeat {
                    node: "b".into(),
                    incarnation: 1,
                    seq,
                    sent_unix_ms: unix_ms(),
                    flags: FLAG_MAY_ANNOUNCE,
                };
                peers[0].send_to(&hb.encode(&key), to).unwrap();
            }
        };
        let heard = || metrics.peers_heard.get();
        let ok = || {
            metrics
                .heartbeats_received
                .get_or_create(&HeartbeatLabels {
                    result: "ok".into(),
                })
                .get()
        };
        // past the first tick: the next is a second away
        tokio::time::sleep(ms(100)).await;

        // first heard: by the next tick (and the speaker is woken), as heard on arrival
        let sent_at = Instant::now();
        send_b(1);
        let took = until(ms(1200), "first heartbeat noticed", || heard() == 1).await;
        tokio::time::timeout(ms(100), wake.notified())
            .await
            .expect("woken");
        assert!(
            took > ms(300),
            "read at the tick, {took:?} after it arrived"
        );
        let at = mesh.lock().table.last_heard("b").unwrap();
        assert!(
            at.saturating_duration_since(sent_at) < ms(50),
            "recorded {:?} after it was sent, read {took:?} after",
            at.saturating_duration_since(sent_at)
        );
        // a burst of 150 (more than two batches): every one read (at the next tick)
        let last = Instant::now();
        send_b(150);
        until(ms(1200), "burst read", || ok() == 151).await;
        // silence: noticed when the fence time has passed since the burst *arrived* (every
        // batch of the late read stamped with its arrival), not up to a tick later
        until(ms(2600), "silence noticed", || heard() == 0).await;
        let silent_for = last.elapsed();
        assert!(
            silent_for >= ms(1950) && silent_for < ms(2400),
            "silence noticed after {silent_for:?}"
        );
        tokio::time::timeout(ms(100), wake.notified())
            .await
            .expect("woken on silence");
        // back: by the next tick
        send_b(1);
        until(ms(1200), "return noticed", || heard() == 1).await;
        tokio::time::timeout(ms(100), wake.notified())
            .await
            .expect("woken on return");

        stop_tx.send(true).unwrap();
        task.await.unwrap();
        // every target got every tick's heartbeat, signed, in sequence, with the flag
        let sent = metrics.heartbeats_sent.get();
        let mut got = 0;
        for p in &peers {
            p.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            let mut last_seq = 0;
            while let Ok(n) = p.recv(&mut buf) {
                let hb = Heartbeat::decode(&buf[..n], &key).unwrap();
                assert_eq!((hb.node.as_str(), hb.flags), ("a", FLAG_MAY_ANNOUNCE));
                assert!(hb.seq > last_seq);
                last_seq = hb.seq;
                got += 1;
            }
            assert!(last_seq >= 3, "{last_seq} ticks");
        }
        assert_eq!(got, sent);
        assert_eq!(metrics.heartbeat_send_errors.get(), 0);
    }

    /// 600 peers sending every 100 ms, their heartbeats each in a burst: read between ticks
    /// ([`read_period`]), none is lost to a full socket queue (its default buffer holds
    /// about 200), and every one is accepted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeats_of_hundreds_of_peers_are_read_before_the_socket_queue_fills() {
        let ms = Duration::from_millis;
        let timing = MeshTiming::default();
        let key = HmacKey::new(&[7u8; 32]).unwrap();
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = socket.local_addr().unwrap();
        let mesh = Mesh::new("a", timing, to.port());
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let names: Vec<String> = (0..600).map(|i| format!("peer-{i:03}")).collect();
        mesh.lock().set_targets(
            names
                .iter()
                .map(|n| (n.clone(), sink.local_addr().unwrap()))
                .collect(),
        );
        let (metrics, _wake, stop_tx, task) = spawn_serve(socket, &key, &mesh);
        tokio::time::sleep(ms(150)).await;
        let from = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rounds = 10u64;
        for seq in 1..=rounds {
            // each peer's heartbeat in 10 ms spread over the round (sender paced, so the
            // sending side's own buffer is not what drops them)
            for chunk in names.chunks(60) {
                for n in chunk {
                    let hb = Heartbeat {
                        node: n.clone(),
                        incarnation: 1,
                        seq,
                        sent_unix_ms: unix_ms(),
                        flags: 0,
                    };
                    from.send_to(&hb.encode(&key), to).unwrap();
                }
                tokio::time::sleep(ms(1)).await;
            }
            tokio::time::sleep(ms(90)).await;
        }
        tokio::time::sleep(ms(200)).await;
        let ok = metrics
            .heartbeats_received
            .get_or_create(&HeartbeatLabels {
                result: "ok".into(),
            })
            .get();
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(ok, 600 * rounds, "heartbeats lost");
    }

    #[tokio::test]
    async fn two_sockets_exchange_heartbeats_and_drop_forgeries() {
        let key = HmacKey::new(&[7u8; 32]).unwrap();
        let a = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut table = PeerTable::new("b", MeshTiming::default());
        let msg = Heartbeat {
            node: "a".into(),
            incarnation: unix_ms(),
            seq: 1,
            sent_unix_ms: unix_ms(),
            flags: 0,
        };
        a.send_to(&msg.encode(&key), b.local_addr().unwrap())
            .await
            .unwrap();
        let forged = msg.encode(&HmacKey::new(&[8u8; 32]).unwrap());
        a.send_to(&forged, b.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            table.receive(&buf[..n], &key, Instant::now(), unix_ms()),
            Ok(("a".into(), true))
        );
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            table.receive(&buf[..n], &key, Instant::now(), unix_ms()),
            Err(crate::election::membership::Reject::Forged)
        );
    }
}

//! Shell: speaker-to-speaker heartbeats over UDP (default port 7947).
//!
//! Every `--heartbeat-interval` (100 ms) this node sends one signed heartbeat
//! ([`crate::election::membership::Heartbeat`]) to every peer — the nodes whose speaker
//! Lease is held, at their Node InternalIP — and records the heartbeats it receives in the
//! pure [`PeerTable`]. The speaker loop reads the table ([`Mesh`]) on each pass, after
//! reading every heartbeat still queued on the socket ([`Mesh::drain`]), and is woken
//! when a peer is heard again after silence, or crosses the fence / death silence
//! thresholds. The HMAC key comes from the Secret `ferrolb-heartbeat-key` (data key `key`)
//! in the speaker namespace, created by the controller; until it exists the speaker runs
//! on the Lease rules alone and reads it again with backoff (100 ms doubling to 5 s: a
//! hundred speakers waiting for a controller that is down must not poll the API server
//! four times a second each).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};

use super::metrics::Metrics;
use crate::election::membership::{
    Heartbeat, HmacKey, MeshRules, MeshTiming, PeerTable, FLAG_MAY_ANNOUNCE, MAX_LEN,
};

/// Name of the Secret holding the heartbeat key (in the speaker namespace).
pub const KEY_SECRET: &str = "ferrolb-heartbeat-key";
/// Data key of the HMAC key inside [`KEY_SECRET`].
pub const KEY_FIELD: &str = "key";
/// Default UDP port of the heartbeats. MetalLB's memberlist uses 7946; 7947 is the next one
/// and is used by nothing in Kubernetes, kube-proxy, Calico, Cilium or Flannel.
pub const DEFAULT_PORT: u16 = 7947;

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
    /// Where to send: (node, address) of every peer.
    pub targets: Vec<(String, SocketAddr)>,
    /// This node's current permission (sent as a flag, informational).
    pub may_announce: bool,
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
}

/// The receiving side: the heartbeat socket (a second descriptor of it, read without the
/// runtime's readiness tracking), the key, and what a received heartbeat updates.
struct Inbox {
    socket: std::net::UdpSocket,
    key: HmacKey,
    metrics: Arc<Metrics>,
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
                targets: Vec::new(),
                may_announce: false,
            })),
            inbox: Arc::new(OnceLock::new()),
            rules: MeshRules { timing },
            port,
        }
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
        let _ = self.inbox.set(Inbox {
            socket,
            key,
            metrics,
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
        let Some(inbox) = self.inbox.get() else {
            return 0;
        };
        let mut buf = [0u8; MAX_LEN + 1];
        let mut read = 0;
        while read < DRAIN_MAX {
            let Ok((n, from)) = inbox.socket.recv_from(&mut buf) else {
                break;
            };
            self.receive(&buf[..n], from);
            read += 1;
        }
        read
    }

    /// Records one datagram received from `from` (ignored before [`Mesh::listen`]).
    fn receive(&self, datagram: &[u8], from: SocketAddr) {
        let Some(inbox) = self.inbox.get() else {
            return;
        };
        let metrics = &inbox.metrics;
        metrics
            .heartbeat_bytes_received
            .inc_by(datagram.len() as u64);
        let res = {
            let mut st = self.lock();
            let res = st
                .table
                .receive(datagram, &inbox.key, Instant::now(), unix_ms());
            if let Some(gap) = res
                .as_ref()
                .ok()
                .and_then(|(node, _)| st.table.last_gap(node))
            {
                metrics.heartbeat_gap_seconds.observe(gap.as_secs_f64());
            }
            res
        };
        match res {
            Ok((node, changed)) => {
                metrics.heartbeat_received("ok");
                if changed {
                    tracing::debug!(%node, %from, "peer heard (again)");
                    inbox.wake.notify_one();
                }
            }
            Err(reason) => {
                metrics.heartbeat_received(reason.as_str());
                tracing::debug!(%from, reason = reason.as_str(), "heartbeat dropped");
            }
        }
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
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
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

/// Runs the heartbeats until `stop` turns true: waits for the key, then sends every
/// interval and receives continuously. `wake` is notified on liveness changes.
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
    if let Err(e) = mesh.listen(&socket, key.clone(), metrics.clone(), wake.clone()) {
        tracing::error!(error = %e, "cannot read the heartbeat socket; Lease rules only");
        return;
    }
    tracing::info!(addr = %cfg.bind, interval = ?mesh.rules.timing.interval, "heartbeats enabled");
    let incarnation = unix_ms();
    let mut seq: u64 = 0;
    let mut tick = tokio::time::interval(mesh.rules.timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_LEN + 1];
    let mut signature = Vec::new();
    let far = Duration::from_secs(3600);
    loop {
        let next_change = mesh
            .lock()
            .table
            .next_change(Instant::now())
            .unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                let (targets, flags) = {
                    let st = mesh.lock();
                    (st.targets.clone(), if st.may_announce { FLAG_MAY_ANNOUNCE } else { 0 })
                };
                let msg = Heartbeat {
                    node: cfg.node.clone(),
                    incarnation,
                    seq,
                    sent_unix_ms: unix_ms(),
                    flags,
                }
                .encode(&key);
                for (_, addr) in &targets {
                    match socket.try_send_to(&msg, *addr) {
                        Ok(n) => {
                            metrics.heartbeats_sent.inc();
                            metrics.heartbeat_bytes_sent.inc_by(n as u64);
                        }
                        Err(e) => {
                            metrics.heartbeat_send_errors.inc();
                            tracing::trace!(%addr, error = %e, "heartbeat not sent");
                        }
                    }
                }
            }
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    mesh.receive(&buf[..n], from);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_change)) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
        let now = Instant::now();
        let sig = mesh.lock().table.signature(now);
        if sig != signature {
            let heard = sig.iter().filter(|(_, s)| *s == 2).count();
            metrics.peers_heard.set(heard as i64);
            if sig
                .iter()
                .any(|(n, s)| signature.iter().any(|(m, t)| m == n && t > s))
            {
                tracing::info!(peers = ?sig, "peer went silent");
            }
            signature = sig;
            wake.notify_one();
        }
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

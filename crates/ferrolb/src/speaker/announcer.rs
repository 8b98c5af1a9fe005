//! What the speaker needs from the dataplane: a small trait, so the speaker loop can be
//! tested with a fake and the real ARP/NDP responder plugs in behind it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::election::Interfaces;

/// Result of an announce call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnounceReport {
    /// Requested interfaces that do not exist (or are not usable) on this node.
    pub missing: Vec<String>,
}

/// Another MAC answering for an IP we own, as seen by the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateResponder {
    /// The IP.
    pub ip: IpAddr,
    /// Interface it was seen on.
    pub interface: String,
    /// The other responder's MAC (`aa:bb:…`).
    pub their_mac: String,
    /// Our MAC on that interface.
    pub our_mac: String,
}

/// The dataplane as seen by the speaker. Calls must be cheap and non-blocking: the
/// responder applies them asynchronously (and sends the gratuitous burst on announce).
pub trait Announcer: Send + Sync + 'static {
    /// Starts answering for `ip` on `interfaces` (or updates the interface set) and, when the
    /// IP was not announced before, sends the gratuitous burst at once.
    fn announce(&self, ip: IpAddr, interfaces: &Interfaces) -> AnnounceReport;
    /// Stops answering for `ip` immediately.
    fn withdraw(&self, ip: IpAddr);
    /// Which of the `wanted` interfaces do not exist (or are not usable) on this node now.
    fn missing(&self, wanted: &Interfaces) -> Vec<String>;
    /// Rebuilds its per-IP tables with full B-tree nodes ([`crate::dense::Dense`]); what
    /// it answers for is unchanged. Nothing by default.
    fn make_dense(&self) {}
}

/// One call recorded by [`RecordingAnnouncer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `announce(ip, interfaces)`.
    Announce(IpAddr, Interfaces),
    /// `withdraw(ip)`.
    Withdraw(IpAddr),
}

/// An in-memory [`Announcer`] for tests and dry runs: records calls, keeps the announced
/// set, and reports interfaces missing from a fixed list of existing ones.
#[derive(Debug, Clone, Default)]
pub struct RecordingAnnouncer {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<Call>,
    announced: BTreeSet<IpAddr>,
    existing: Option<BTreeSet<String>>,
}

impl RecordingAnnouncer {
    /// A recorder where every interface exists.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder where only `names` exist.
    pub fn with_interfaces(names: &[&str]) -> Self {
        let r = Self::default();
        r.set_interfaces(names);
        r
    }

    /// Changes the interfaces that exist.
    pub fn set_interfaces(&self, names: &[&str]) {
        self.lock().existing = Some(names.iter().map(|s| s.to_string()).collect());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, and clears the list.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// IPs currently announced.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.lock().announced.clone()
    }
}

impl Announcer for RecordingAnnouncer {
    fn announce(&self, ip: IpAddr, interfaces: &Interfaces) -> AnnounceReport {
        let mut g = self.lock();
        g.calls.push(Call::Announce(ip, interfaces.clone()));
        g.announced.insert(ip);
        let missing = match (interfaces, &g.existing) {
            (Interfaces::Named(want), Some(have)) => want
                .iter()
                .filter(|w| !have.contains(*w))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        AnnounceReport { missing }
    }

    fn withdraw(&self, ip: IpAddr) {
        let mut g = self.lock();
        g.calls.push(Call::Withdraw(ip));
        g.announced.remove(&ip);
    }

    fn missing(&self, wanted: &Interfaces) -> Vec<String> {
        match &self.lock().existing {
            Some(have) => missing_interfaces(wanted, have),
            None => Vec::new(),
        }
    }
}

/// The real dataplane behind the trait. Interfaces named by an advertisement but without a
/// running responder on this node are reported missing.
impl Announcer for crate::dataplane::Dataplane {
    fn announce(&self, ip: IpAddr, interfaces: &Interfaces) -> AnnounceReport {
        let filter = match interfaces {
            Interfaces::All => crate::dataplane::InterfaceFilter::All,
            Interfaces::Named(n) => crate::dataplane::InterfaceFilter::Named(n.clone()),
        };
        crate::dataplane::Dataplane::announce(self, ip, filter);
        AnnounceReport {
            missing: Announcer::missing(self, interfaces),
        }
    }

    fn withdraw(&self, ip: IpAddr) {
        crate::dataplane::Dataplane::withdraw(self, ip)
    }

    fn missing(&self, wanted: &Interfaces) -> Vec<String> {
        let have: BTreeSet<String> = self.interfaces().into_iter().map(|i| i.name).collect();
        missing_interfaces(wanted, &have)
    }

    fn make_dense(&self) {
        crate::dataplane::Dataplane::make_dense(self)
    }
}

/// Named interfaces not in `existing` (`All` never misses anything).
pub fn missing_interfaces(wanted: &Interfaces, existing: &BTreeSet<String>) -> Vec<String> {
    match wanted {
        Interfaces::All => Vec::new(),
        Interfaces::Named(w) => w.difference(existing).cloned().collect(),
    }
}

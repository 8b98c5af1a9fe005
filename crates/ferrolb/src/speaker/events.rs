//! Events on Services, emitted **on change only** (MetalLB emits `nodeAssigned` on every
//! reconcile, which floods busy clusters with identical Events).
//!
//! [`EventMemory`] (pure) remembers the last message of each (Service, reason); the shell
//! publishes through `kube::runtime::events::Recorder`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::allocator::ServiceKey;
use crate::dense::Dense;

/// Normal: this node announces the Service.
pub const NODE_ASSIGNED: &str = "nodeAssigned";
/// Warning: interfaces listed in the L2Advertisement do not exist on the node.
pub const ANNOUNCE_FAILED: &str = "announceFailed";
/// Warning: another MAC answers for an IP this node owns.
pub const DUPLICATE_RESPONDER: &str = "duplicateResponder";

/// The reason of an Event the [`EventMemory`] remembers: a byte in its table's keys, where
/// the reason's text took a 16-byte reference (the table's node of eleven entries then fits
/// 512 bytes instead of 640).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// [`NODE_ASSIGNED`].
    NodeAssigned,
    /// [`ANNOUNCE_FAILED`].
    AnnounceFailed,
    /// [`DUPLICATE_RESPONDER`].
    DuplicateResponder,
}

impl Reason {
    /// The Event's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NodeAssigned => NODE_ASSIGNED,
            Reason::AnnounceFailed => ANNOUNCE_FAILED,
            Reason::DuplicateResponder => DUPLICATE_RESPONDER,
        }
    }
}

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The Service.
    pub service: ServiceKey,
    /// Warning or Normal.
    pub warning: bool,
    /// Reason (camelCase, as MetalLB).
    pub reason: &'static str,
    /// Human-readable text, with the IP and node it is about; the [`EventMemory`]'s
    /// allocation (the Events of many Services waiting in the queue share one text).
    pub message: Arc<str>,
}

/// Remembers what was last said about each Service, to say it only once.
///
/// Keyed by the Service's key as the speaker holds it (`namespace/name`, shared, not
/// copied); a message equal to the one remembered last is shared with it (most Services
/// of a node are told the same `nodeAssigned` text), so a Service costs no string here.
#[derive(Debug, Default, Clone)]
pub struct EventMemory {
    last: BTreeMap<(Arc<str>, Reason), Arc<str>>,
    /// The message remembered last.
    recent: Option<Arc<str>>,
}

impl EventMemory {
    /// Returns the event if it differs from the last one with the same Service and reason
    /// (never for a key that is not `namespace/name`).
    pub fn note(
        &mut self,
        service: &Arc<str>,
        warning: bool,
        reason: Reason,
        message: String,
    ) -> Option<Pending> {
        let key = ServiceKey::parse(service)?;
        let k = (service.clone(), reason);
        if self.last.get(&k).is_some_and(|m| **m == *message) {
            return None;
        }
        let text = match &self.recent {
            Some(r) if **r == *message => r.clone(),
            _ => {
                let r: Arc<str> = Arc::from(message.as_str());
                self.recent = Some(r.clone());
                r
            }
        };
        self.last.insert(k, text.clone());
        Some(Pending {
            service: key,
            warning,
            reason: reason.as_str(),
            message: text,
        })
    }

    /// Forgets `reason` for `service` (the condition ended: say it again if it recurs).
    pub fn clear(&mut self, service: &Arc<str>, reason: Reason) {
        self.last.remove(&(service.clone(), reason));
    }

    /// Forgets everything about `service` (no longer announced: said again if it returns).
    pub fn forget(&mut self, service: &Arc<str>) {
        for reason in [
            Reason::NodeAssigned,
            Reason::AnnounceFailed,
            Reason::DuplicateResponder,
        ] {
            self.clear(service, reason);
        }
    }

    /// Rebuilds the table with full B-tree nodes ([`Dense`]).
    pub fn make_dense(&mut self) {
        self.last.make_dense();
    }

    /// Forgets everything about Services not in `keep`.
    pub fn retain(&mut self, keep: &dyn Fn(&str) -> bool) {
        self.last.retain(|(s, _), _| keep(s));
    }
}

/// `announcing from node "n1" with protocol "layer2" on interfaces ["eth0"]` (MetalLB's
/// message plus the interfaces; "all interfaces" when unrestricted).
pub fn node_assigned_message(node: &str, interfaces: &[String]) -> String {
    let ifs = if interfaces.is_empty() {
        "all interfaces".to_string()
    } else {
        format!("interfaces {interfaces:?}")
    };
    format!("announcing from node {node:?} with protocol \"layer2\" on {ifs}")
}

/// MetalLB's `announceFailed` message, naming the missing interfaces.
pub fn announce_failed_message(ip: &str, node: &str, missing: &[String]) -> String {
    format!(
        "the interfaces specified by LB IP {ip:?} doesn't exist in assigned node {node:?} with protocol \"layer2\": {missing:?}"
    )
}

/// Event writes in flight at once. Announcing a thousand IPs at start-up yields a thousand
/// Events; written each on its own task they opened as many HTTP connections to the API
/// server at once (which kube-apiserver's in-flight limits would refuse), and the client's
/// pool then kept them, with their TLS state and buffers, for minutes.
pub const EVENT_WRITES_IN_FLIGHT: usize = 4;
/// Events waiting to be written; beyond that new ones are dropped and counted (client-go's
/// recorder drops beyond 1 000).
pub const EVENT_QUEUE: usize = 16_384;

/// Shell: publishes events through the kube-runtime recorder from a queue, at most
/// [`EVENT_WRITES_IN_FLIGHT`] at a time, in the order they were queued.
#[derive(Clone)]
pub struct EventSink {
    queue: mpsc::Sender<(Pending, ObjectReference)>,
}

impl EventSink {
    /// Reporter `ferrolb-speaker`, instance = node name. Starts the publishing task (which
    /// ends when every sink is dropped); failed writes count in `errors`.
    pub fn new(client: kube::Client, node: &str, errors: Counter) -> Self {
        let reporter = Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(node.into()),
        };
        let (queue, rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(drain(rx, EVENT_WRITES_IN_FLIGHT, move |(ev, reference)| {
            // A fresh Recorder per Event, as the controller does: Events are emitted on
            // change only, so kube's series cache (every Event kept whole for minutes, in a
            // table that never shrinks: 3.5 MiB at 1 000 announced IPs) would only hold
            // memory.
            let recorder = Recorder::new(client.clone(), reporter.clone());
            let errors = errors.clone();
            async move {
                if let Err(e) = publish(&recorder, &ev, &reference).await {
                    tracing::warn!(error = %e, reason = ev.reason, "cannot publish event");
                    errors.inc();
                }
            }
        }));
        Self { queue }
    }

    /// Queues `ev` about the object `reference`. False: the queue is full (or the publishing
    /// task ended) and the event is dropped.
    pub fn send(&self, ev: Pending, reference: ObjectReference) -> bool {
        self.queue.try_send((ev, reference)).is_ok()
    }
}

/// Runs `write` on every item of `rx`, at most `in_flight` at a time, until every sender is
/// dropped.
pub async fn drain<T, F, Fut>(rx: mpsc::Receiver<T>, in_flight: usize, write: F)
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
        .for_each_concurrent(in_flight, write)
        .await;
}

async fn publish(
    recorder: &Recorder,
    ev: &Pending,
    reference: &ObjectReference,
) -> Result<(), kube::Error> {
    recorder
        .publish(
            &Event {
                type_: if ev.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: ev.reason.into(),
                note: Some(ev.message.to_string()),
                action: "Announce".into(),
                secondary: None,
            },
            reference,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each reason says its text, and is remembered apart from the others; a (Service,
    /// reason) key is 24 bytes.
    #[test]
    fn reasons_read_as_their_text_and_key_in_24_bytes() {
        let s: Arc<str> = Arc::from("ns/a");
        let mut m = EventMemory::default();
        for (r, text) in [
            (Reason::NodeAssigned, "nodeAssigned"),
            (Reason::AnnounceFailed, "announceFailed"),
            (Reason::DuplicateResponder, "duplicateResponder"),
        ] {
            assert_eq!(m.note(&s, true, r, "x".into()).unwrap().reason, text);
        }
        assert!(m
            .note(&s, true, Reason::AnnounceFailed, "x".into())
            .is_none());
        assert!(std::mem::size_of::<(Arc<str>, Reason)>() <= 24);
    }

    #[test]
    fn only_changes_are_emitted() {
        let s: Arc<str> = Arc::from("ns/a");
        let mut m = EventMemory::default();
        let msg = node_assigned_message("n1", &[]);
        let said = m
            .note(&s, false, Reason::NodeAssigned, msg.clone())
            .unwrap();
        assert_eq!(said.service, ServiceKey::new("ns", "a"));
        assert_eq!(&*said.message, msg.as_str());
        for _ in 0..100 {
            assert!(m
                .note(&s, false, Reason::NodeAssigned, msg.clone())
                .is_none());
        }
        let msg2 = node_assigned_message("n1", &["eth0".into()]);
        assert!(m
            .note(&s, false, Reason::NodeAssigned, msg2.clone())
            .is_some());
        m.clear(&s, Reason::NodeAssigned);
        assert!(m
            .note(&s, false, Reason::NodeAssigned, msg2.clone())
            .is_some());
        m.retain(&|_| false);
        assert!(m.note(&s, false, Reason::NodeAssigned, msg2).is_some());
    }

    #[test]
    fn services_told_the_same_share_one_message() {
        let mut m = EventMemory::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("ns/a"), Arc::from("ns/b"));
        let msg = node_assigned_message("n1", &[]);
        assert!(m
            .note(&a, false, Reason::NodeAssigned, msg.clone())
            .is_some());
        assert!(m
            .note(&b, false, Reason::NodeAssigned, msg.clone())
            .is_some());
        let said =
            |m: &EventMemory, k: &Arc<str>| m.last[&(k.clone(), Reason::NodeAssigned)].clone();
        assert!(Arc::ptr_eq(&said(&m, &a), &said(&m, &b)));
        // the Events waiting to be written hold the same text
        let c: Arc<str> = Arc::from("ns/c");
        let pending = m
            .note(&c, false, Reason::NodeAssigned, msg.clone())
            .unwrap();
        assert!(Arc::ptr_eq(&pending.message, &said(&m, &a)));
        assert!(Arc::ptr_eq(&m.last.keys().next().unwrap().0, &a));
        // each still said once, and again after a change or when forgotten
        assert!(m
            .note(&b, false, Reason::NodeAssigned, msg.clone())
            .is_none());
        let other = node_assigned_message("n1", &["eth0".into()]);
        assert!(m.note(&b, false, Reason::NodeAssigned, other).is_some());
        assert!(m
            .note(&a, false, Reason::NodeAssigned, msg.clone())
            .is_none());
        m.forget(&a);
        assert!(m
            .note(&a, false, Reason::NodeAssigned, msg.clone())
            .is_some());
        // a key that names no Service is never told
        assert!(m
            .note(&Arc::from("nokey"), false, Reason::NodeAssigned, msg)
            .is_none());
    }

    #[test]
    fn messages() {
        assert_eq!(
            node_assigned_message("n1", &["eth0".into()]),
            "announcing from node \"n1\" with protocol \"layer2\" on interfaces [\"eth0\"]"
        );
        assert!(announce_failed_message("10.0.0.1", "n1", &["eth9".into()]).contains("eth9"));
    }

    #[tokio::test]
    async fn the_queue_writes_every_event_in_order_and_never_more_than_the_bound_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let (tx, rx) = mpsc::channel(1000);
        for i in 0..200 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Mutex::new(Vec::new()));
        let (n, m, st) = (now.clone(), most.clone(), started.clone());
        drain(rx, 4, move |i: usize| {
            let (n, m, st) = (n.clone(), m.clone(), st.clone());
            async move {
                st.lock().unwrap().push(i);
                let k = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(k, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                n.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .await;
        assert_eq!(*started.lock().unwrap(), (0..200).collect::<Vec<_>>());
        assert_eq!(
            most.load(Ordering::SeqCst),
            4,
            "ran with the bound filled, never above"
        );
        assert_eq!(now.load(Ordering::SeqCst), 0);
    }
}

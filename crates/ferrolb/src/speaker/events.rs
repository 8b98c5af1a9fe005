//! Events on Services, emitted **on change only** (MetalLB emits `nodeAssigned` on every
//! reconcile, which floods busy clusters with identical Events).
//!
//! [`EventMemory`] (pure) remembers the last message of each (Service, reason); the shell
//! publishes through `kube::runtime::events::Recorder`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::allocator::ServiceKey;

/// Normal: this node announces the Service.
pub const NODE_ASSIGNED: &str = "nodeAssigned";
/// Warning: interfaces listed in the L2Advertisement do not exist on the node.
pub const ANNOUNCE_FAILED: &str = "announceFailed";
/// Warning: another MAC answers for an IP this node owns.
pub const DUPLICATE_RESPONDER: &str = "duplicateResponder";

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The Service.
    pub service: ServiceKey,
    /// Warning or Normal.
    pub warning: bool,
    /// Reason (camelCase, as MetalLB).
    pub reason: &'static str,
    /// Human-readable text, with the IP and node it is about.
    pub message: String,
}

/// Remembers what was last said about each Service, to say it only once.
#[derive(Debug, Default, Clone)]
pub struct EventMemory {
    last: BTreeMap<(ServiceKey, &'static str), String>,
}

impl EventMemory {
    /// Returns the event if it differs from the last one with the same Service and reason.
    pub fn note(
        &mut self,
        service: &ServiceKey,
        warning: bool,
        reason: &'static str,
        message: String,
    ) -> Option<Pending> {
        let k = (service.clone(), reason);
        if self.last.get(&k) == Some(&message) {
            return None;
        }
        self.last.insert(k, message.clone());
        Some(Pending {
            service: service.clone(),
            warning,
            reason,
            message,
        })
    }

    /// Forgets `reason` for `service` (the condition ended: say it again if it recurs).
    pub fn clear(&mut self, service: &ServiceKey, reason: &'static str) {
        self.last.remove(&(service.clone(), reason));
    }

    /// Forgets everything about `service` (no longer announced: said again if it returns).
    pub fn forget(&mut self, service: &ServiceKey) {
        for reason in [NODE_ASSIGNED, ANNOUNCE_FAILED, DUPLICATE_RESPONDER] {
            self.clear(service, reason);
        }
    }

    /// Forgets everything about Services not in `keep`.
    pub fn retain(&mut self, keep: &dyn Fn(&ServiceKey) -> bool) {
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

/// Shell: publishes events through the kube-runtime recorder.
#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
}

impl EventSink {
    /// Reporter `ferrolb-speaker`, instance = node name.
    pub fn new(client: kube::Client, node: &str) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "ferrolb-speaker".into(),
                    instance: Some(node.into()),
                },
            ),
        }
    }

    /// Publishes `ev` regarding the Service `reference`.
    pub async fn publish(
        &self,
        ev: &Pending,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        self.recorder
            .publish(
                &Event {
                    type_: if ev.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: ev.reason.into(),
                    note: Some(ev.message.clone()),
                    action: "Announce".into(),
                    secondary: None,
                },
                reference,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_emitted() {
        let s = ServiceKey::parse("ns/a").unwrap();
        let mut m = EventMemory::default();
        let msg = node_assigned_message("n1", &[]);
        assert!(m.note(&s, false, NODE_ASSIGNED, msg.clone()).is_some());
        for _ in 0..100 {
            assert!(m.note(&s, false, NODE_ASSIGNED, msg.clone()).is_none());
        }
        let msg2 = node_assigned_message("n1", &["eth0".into()]);
        assert!(m.note(&s, false, NODE_ASSIGNED, msg2.clone()).is_some());
        m.clear(&s, NODE_ASSIGNED);
        assert!(m.note(&s, false, NODE_ASSIGNED, msg2.clone()).is_some());
        m.retain(&|_| false);
        assert!(m.note(&s, false, NODE_ASSIGNED, msg2).is_some());
    }

    #[test]
    fn messages() {
        assert_eq!(
            node_assigned_message("n1", &["eth0".into()]),
            "announcing from node \"n1\" with protocol \"layer2\" on interfaces [\"eth0\"]"
        );
        assert!(announce_failed_message("10.0.0.1", "n1", &["eth9".into()]).contains("eth9"));
    }
}

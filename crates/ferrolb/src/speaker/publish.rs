//! Shell: writes this node's published state ([`super::state::SpeakerState`]) to its
//! ConfigMap ([`super::state::state_object_name`]) when it changes, at most once per
//! period.
//!
//! The state used to ride on the node Lease's renewals. Every speaker watches every node
//! Lease, so every renewal of every node carried it to every speaker: at 100 nodes,
//! 110 watch events a second, each several KiB of state nobody in the speaker reads. In a
//! ConfigMap of its own that nobody watches, the state is written only when it changes and
//! read only by `ferrolb explain`. Its owner is the speaker's Pod (when known), so the
//! ConfigMap goes with the DaemonSet.
//!
//! A failed write is retried with [`Backoff`] (100 ms doubling to 5 s), never holding up
//! anything else: the renewals and the speaker loop do not wait for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;

use super::metrics::Metrics;
use super::plan::Backoff;
use super::state::{state_object, state_object_name, STATE_KEY};

/// How often the state is rendered and, when it changed, written: at most one write per
/// period, however fast announcements change.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Renders the speaker's published state (JSON, at most [`super::state::STATE_LIMIT`]).
pub type StateRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the publisher does at one tick (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed since the last successful write, or a failed one is backing off.
    Wait,
    /// Write this state.
    Write(String),
}

/// The publisher's decision at `now`: write `rendered` when it differs from what was last
/// written successfully (`written`), unless a failed write is still backing off.
pub fn step(rendered: String, written: Option<&str>, backoff: &Backoff, now: Instant) -> Step {
    if written == Some(rendered.as_str()) || !backoff.allows(now) {
        Step::Wait
    } else {
        Step::Write(rendered)
    }
}

/// Shell: keeps this node's state ConfigMap up to date.
pub struct StatePublisher {
    api: Api<ConfigMap>,
    node: String,
    owner: Option<OwnerReference>,
    render: StateRenderer,
    metrics: Arc<Metrics>,
}

impl StatePublisher {
    /// Publishes `render()` for `node` in `namespace`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        node: &str,
        render: StateRenderer,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            node: node.to_string(),
            owner: None,
            render,
            metrics,
        }
    }

    /// The ConfigMap is owned by (and garbage-collected with) this Pod.
    pub fn with_owner(mut self, owner: Option<OwnerReference>) -> Self {
        self.owner = owner;
        self
    }

    /// One write of `state`: a merge patch of the ConfigMap (which also makes this Pod its
    /// owner), or its creation when it does not exist. Two requests at most.
    pub async fn write(&self, state: &str) -> Result<(), kube::Error> {
        let name = state_object_name(&self.node);
        let mut patch = serde_json::json!({ "data": { STATE_KEY: state } });
        if let Some(o) = &self.owner {
            patch["metadata"] = serde_json::json!({ "ownerReferences": [o] });
        }
        let params = PatchParams {
            field_manager: Some(self.node.clone()),
            ..Default::default()
        };
        match self.api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let cm = state_object(&self.node, state, self.owner.clone());
                match self.api.create(&PostParams::default(), &cm).await {
                    Ok(_) => Ok(()),
                    // created meanwhile (by an earlier attempt that timed out): patch it
                    Err(kube::Error::Api(e)) if e.code == 409 => self
                        .api
                        .patch(&name, &params, &Patch::Merge(&patch))
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                }
            }
            r => r.map(drop),
        }
    }

    /// Every `period` until `stop` fires: renders the state and writes it when it changed
    /// ([`step`]). Returns the state last written.
    pub async fn run(self, period: Duration, mut stop: watch::Receiver<bool>) -> Option<String> {
        let mut written: Option<String> = None;
        let mut backoff = Backoff::default();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            let now = Instant::now();
            let Step::Write(want) = step((self.render)(), written.as_deref(), &backoff, now) else {
                continue;
            };
            match self.write(&want).await {
                Ok(()) => {
                    backoff.ok();
                    written = Some(want);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish the speaker state");
                    self.metrics.api_errors.inc();
                    backoff.failed(Instant::now());
                    // wait out the backoff (shorter or longer than the period), then try
                    // again at once
                    if let Some(until) = backoff.until() {
                        tokio::select! {
                            _ = tokio::time::sleep_until(until.into()) => {}
                            _ = stop.changed() => break,
                        }
                        tick.reset_immediately();
                    }
                }
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_written_once_per_change_and_not_while_backing_off() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(step("A".into(), None, &b, t0), Step::Write("A".into()));
        assert_eq!(step("A".into(), Some("A"), &b, t0), Step::Wait);
        assert_eq!(step("B".into(), Some("A"), &b, t0), Step::Write("B".into()));
        b.failed(t0);
        assert_eq!(step("B".into(), Some("A"), &b, t0), Step::Wait);
        let later = t0 + Backoff::MIN;
        assert_eq!(
            step("B".into(), Some("A"), &b, later),
            Step::Write("B".into())
        );
        // unchanged while backing off: still nothing to write
        assert_eq!(step("A".into(), Some("A"), &b, later), Step::Wait);
    }
}

//! Leader election over a `coordination.k8s.io/v1` Lease (kube-leader-election).
//!
//! Two controller replicas run; only the holder of the Lease writes to the API.
//! [`Leadership`] is the shared "may I write right now" flag: it turns false the moment
//! a renewal is refused, when the local deadline (last successful renewal + lease
//! duration, minus a safety margin) passes without a renewal, and before the Lease is
//! released on shutdown. Writers check [`Leadership::is_leader`] before every write.
//!
//! Hand-over: on shutdown the leader releases the Lease (`step_down`: empty holder,
//! 1 s duration). A standby polls every `retry_period` and, when it sees a Lease about
//! to expire, sleeps exactly until expiry, so it takes over about one second after the
//! leader stepped down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use tokio::sync::watch;

/// Settings of the leader election.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// Identity written as `holderIdentity` (the Pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// How often a standby (or a leader whose renewal failed) retries.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// How long after a successful renewal this replica still considers itself leader
    /// if no further renewal succeeds: 80 % of the lease duration (margin for clock
    /// skew and API latency).
    pub fn validity(&self) -> Duration {
        self.lease_duration.mul_f64(0.8)
    }
}

#[derive(Debug)]
struct Inner {
    tx: watch::Sender<bool>,
    deadline: Mutex<Option<Instant>>,
}

/// Whether this replica currently leads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    inner: Arc<Inner>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self::new()
    }
}

impl Leadership {
    /// Not leading.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                tx,
                deadline: Mutex::new(None),
            }),
        }
    }

    /// Leading forever (`--no-leader-election`, tests).
    pub fn always() -> Self {
        let l = Self::new();
        l.set(true, None);
        l
    }

    /// Whether writes are allowed now: the flag is set and the local deadline has
    /// not passed.
    pub fn is_leader(&self) -> bool {
        if !*self.inner.tx.borrow() {
            return false;
        }
        match *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            Some(d) => Instant::now() < d,
            None => true,
        }
    }

    /// Sets the flag and the deadline until which it holds without renewal.
    pub fn set(&self, leading: bool, deadline: Option<Instant>) {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = deadline;
        self.inner.tx.send_if_modified(|v| {
            let changed = *v != leading;
            *v = leading;
            changed
        });
    }

    /// Stops leading at once.
    pub fn revoke(&self) {
        self.set(false, None);
    }

    /// A receiver notified on every flag change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.tx.subscribe()
    }

    /// Resolves once this replica leads.
    pub async fn until_leading(&self) {
        let mut rx = self.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Resolves once this replica stops leading.
    pub async fn until_lost(&self) {
        let mut rx = self.subscribe();
        let _ = rx.wait_for(|v| !*v).await;
    }
}

/// When a Lease held by someone else expires, relative to now (zero if already expired,
/// `None` if the Lease carries no renew time or duration).
pub fn lease_remaining(lease: &Lease, now: k8s_openapi::jiff::Timestamp) -> Option<Duration> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let secs = spec.lease_duration_seconds?;
    let expiry = renewed.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs.into()));
    let expiry = expiry.ok()?;
    let left = expiry.duration_since(now);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// How long a standby waits before its next attempt: the retry period, or less when
/// the current Lease expires sooner (plus a few milliseconds so it really has).
pub fn standby_delay(retry: Duration, remaining: Option<Duration>) -> Duration {
    match remaining {
        Some(r) => retry.min(r + Duration::from_millis(20)),
        None => retry,
    }
}

/// Runs the election until `shutdown` turns true, then releases the Lease if held.
///
/// `leadership` is updated on every change. Never returns an error: API failures are
/// logged and retried every `retry_period`.
pub async fn run_elector(
    client: kube::Client,
    cfg: LeaderConfig,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
    metrics: super::metrics::Metrics,
) {
    let lock = LeaseLock::new(
        client,
        &cfg.namespace,
        LeaseLockParams {
            lease_name: cfg.lease_name.clone(),
            holder_id: cfg.identity.clone(),
            lease_ttl: cfg.lease_duration,
        },
    );
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => break,
            _ = tokio::time::sleep(delay) => {}
        }
        let started = Instant::now();
        let call_timeout = cfg.renew_period.max(Duration::from_secs(1));
        let res = tokio::time::timeout(call_timeout, lock.try_acquire_or_renew()).await;
        match res {
            Ok(Ok(LeaseLockResult::Acquired(_))) => {
                if !leadership.is_leader() {
                    tracing::info!(lease = %cfg.lease_name, identity = %cfg.identity, "became leader");
                }
                metrics.count_write("lease");
                leadership.set(true, Some(started + cfg.validity()));
                metrics.leader.set(1);
                delay = cfg.renew_period;
            }
            Ok(Ok(LeaseLockResult::NotAcquired(lease))) => {
                if leadership.is_leader() {
                    tracing::warn!(lease = %cfg.lease_name, "lost the lease; stopping writes");
                }
                leadership.revoke();
                metrics.leader.set(0);
                let remaining = lease_remaining(&lease, k8s_openapi::jiff::Timestamp::now());
                delay = standby_delay(cfg.retry_period, remaining);
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %cfg.lease_name, error = %e, "leader election attempt failed");
                expire_if_due(&leadership, &metrics);
                delay = cfg.retry_period;
            }
            Err(_) => {
                tracing::warn!(lease = %cfg.lease_name, "leader election attempt timed out");
                expire_if_due(&leadership, &metrics);
                delay = cfg.retry_period;
            }
        }
    }
    let was_leader = leadership.is_leader();
    leadership.revoke();
    metrics.leader.set(0);
    if was_leader {
        match tokio::time::timeout(Duration::from_secs(3), lock.step_down()).await {
            Ok(Ok(())) => tracing::info!(lease = %cfg.lease_name, "released the lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

fn expire_if_due(leadership: &Leadership, metrics: &super::metrics::Metrics) {
    if *leadership.inner.tx.borrow() && !leadership.is_leader() {
        tracing::warn!("lease not renewed before its deadline; stopping writes");
        leadership.revoke();
        metrics.leader.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    fn lease(renewed: Timestamp, secs: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(secs),
                holder_identity: Some("other".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn remaining_time_of_a_lease() {
        let now = Timestamp::now();
        let l = lease(now - SignedDuration::from_millis(400), 1);
        let r = lease_remaining(&l, now).unwrap();
        assert_eq!(r, Duration::from_millis(600));
        let expired = lease(now - SignedDuration::from_secs(20), 15);
        assert_eq!(lease_remaining(&expired, now), Some(Duration::ZERO));
        assert_eq!(lease_remaining(&Lease::default(), now), None);
    }

    #[test]
    fn standby_wakes_at_expiry_when_sooner_than_retry() {
        let retry = Duration::from_millis(500);
        assert_eq!(standby_delay(retry, None), retry);
        assert_eq!(
            standby_delay(retry, Some(Duration::from_millis(100))),
            Duration::from_millis(120)
        );
        assert_eq!(standby_delay(retry, Some(Duration::from_secs(10))), retry);
    }

    #[test]
    fn leadership_flag_and_deadline() {
        let l = Leadership::new();
        assert!(!l.is_leader());
        l.set(true, Some(Instant::now() + Duration::from_secs(60)));
        assert!(l.is_leader());
        // A deadline in the past stops writes even before the elector notices.
        l.set(true, Some(Instant::now() - Duration::from_millis(1)));
        assert!(!l.is_leader());
        l.revoke();
        assert!(!l.is_leader());
        assert!(Leadership::always().is_leader());
    }
}

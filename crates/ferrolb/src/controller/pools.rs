//! IPAddressPool status, computed purely: counters (assigned / available per family,
//! as MetalLB) and a `Valid` condition carrying the validation error of a rejected
//! pool. A patch is produced only when something differs, so a controller at rest
//! writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::crd::{IPAddressPool, IPAddressPoolStatus};

/// Condition type set on every pool.
pub const VALID_CONDITION: &str = "Valid";

/// Counters of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Distinct IPv4 addresses in use.
    pub assigned_v4: i64,
    /// Distinct IPv6 addresses in use.
    pub assigned_v6: i64,
    /// IPv4 capacity minus in use.
    pub available_v4: i64,
    /// IPv6 capacity minus in use (clamped to i64::MAX like MetalLB).
    pub available_v6: i64,
}

/// What to say about a pool: valid (with its counters) or rejected (with why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolVerdict {
    /// In the configuration and serving.
    Valid(PoolCounts),
    /// Rejected and ignored; the message names the field and the value.
    Invalid(String),
}

fn condition(verdict: &PoolVerdict, generation: Option<i64>, now: Timestamp) -> Condition {
    let (status, reason, message) = match verdict {
        PoolVerdict::Valid(_) => ("True", "Accepted", String::new()),
        PoolVerdict::Invalid(m) => ("False", "InvalidConfiguration", m.clone()),
    };
    Condition {
        type_: VALID_CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

fn same_condition(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

/// The status the pool should have. Conditions other than `Valid` are kept; the
/// `Valid` condition keeps its `lastTransitionTime` when its status did not change.
pub fn desired_status(
    pool: &IPAddressPool,
    verdict: &PoolVerdict,
    now: Timestamp,
) -> IPAddressPoolStatus {
    let counts = match verdict {
        PoolVerdict::Valid(c) => *c,
        PoolVerdict::Invalid(_) => PoolCounts::default(),
    };
    let current = pool.status.clone().unwrap_or_default();
    let mut cond = condition(verdict, pool.metadata.generation, now);
    if let Some(old) = current
        .conditions
        .iter()
        .find(|c| c.type_ == VALID_CONDITION)
    {
        if old.status == cond.status {
            cond.last_transition_time = old.last_transition_time.clone();
        }
    }
    let mut conditions: Vec<Condition> = current
        .conditions
        .into_iter()
        .filter(|c| c.type_ != VALID_CONDITION)
        .collect();
    conditions.push(cond);
    IPAddressPoolStatus {
        assigned_ipv4: counts.assigned_v4,
        assigned_ipv6: counts.assigned_v6,
        available_ipv4: counts.available_v4,
        available_ipv6: counts.available_v6,
        conditions,
    }
}

/// Whether two statuses are equal ignoring condition timestamps.
pub fn status_equal(a: &IPAddressPoolStatus, b: &IPAddressPoolStatus) -> bool {
    a.assigned_ipv4 == b.assigned_ipv4
        && a.assigned_ipv6 == b.assigned_ipv6
        && a.available_ipv4 == b.available_ipv4
        && a.available_ipv6 == b.available_ipv6
        && a.conditions.len() == b.conditions.len()
        && a.conditions
            .iter()
            .zip(&b.conditions)
            .all(|(x, y)| same_condition(x, y))
}

/// The merge patch for the pool's status subresource, or `None` when it already
/// carries the desired status.
pub fn status_patch(pool: &IPAddressPool, verdict: &PoolVerdict, now: Timestamp) -> Option<Value> {
    let want = desired_status(pool, verdict, now);
    if pool
        .status
        .as_ref()
        .is_some_and(|cur| status_equal(cur, &want))
    {
        return None;
    }
    Some(json!({ "status": want }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::IPAddressPoolSpec;

    fn pool() -> IPAddressPool {
        let mut p = IPAddressPool::new(
            "p",
            IPAddressPoolSpec {
                addresses: vec!["10.0.0.0/24".into()],
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        p.metadata.namespace = Some("metallb-system".into());
        p.metadata.generation = Some(1);
        p
    }

    fn counts(a: i64) -> PoolVerdict {
        PoolVerdict::Valid(PoolCounts {
            assigned_v4: a,
            available_v4: 256 - a,
            ..Default::default()
        })
    }

    #[test]
    fn first_status_then_nothing_at_rest() {
        let mut p = pool();
        let now = Timestamp::now();
        let patch = status_patch(&p, &counts(1), now).expect("first write");
        assert_eq!(patch["status"]["assignedIPv4"], 1);
        assert_eq!(patch["status"]["availableIPv4"], 255);
        assert_eq!(patch["status"]["conditions"][0]["type"], "Valid");
        assert_eq!(patch["status"]["conditions"][0]["status"], "True");
        p.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
        // Later, same counters: no write even though time moved on.
        let later = now + k8s_openapi::jiff::SignedDuration::from_secs(60);
        assert!(status_patch(&p, &counts(1), later).is_none());
        assert!(status_patch(&p, &counts(2), later).is_some());
    }

    #[test]
    fn invalid_pool_gets_false_condition_naming_the_error() {
        let mut p = pool();
        let now = Timestamp::now();
        p.status = Some(desired_status(&p, &counts(3), now));
        let msg = r#"invalid CIDR "10.0.0.0/33" in pool "p": field spec.addresses[0]"#;
        let patch = status_patch(&p, &PoolVerdict::Invalid(msg.into()), now).unwrap();
        let c = &patch["status"]["conditions"][0];
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "InvalidConfiguration");
        assert_eq!(c["message"], msg);
        assert_eq!(patch["status"]["assignedIPv4"], 0);
    }

    #[test]
    fn foreign_conditions_are_kept_and_transition_time_preserved() {
        let mut p = pool();
        let t0 = Timestamp::now();
        let mut st = desired_status(&p, &counts(0), t0);
        st.conditions.insert(
            0,
            Condition {
                type_: "Other".into(),
                status: "True".into(),
                reason: "X".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(t0),
            },
        );
        p.status = Some(st);
        let t1 = t0 + k8s_openapi::jiff::SignedDuration::from_secs(5);
        let want = desired_status(&p, &counts(4), t1);
        assert_eq!(want.conditions.len(), 2);
        assert_eq!(want.conditions[0].type_, "Other");
        assert_eq!(want.conditions[1].last_transition_time, Time(t0));
    }
}

//! IPAddressPool status, computed purely: counters (assigned / available per family,
//! as MetalLB), the spec in force (`lastValidSpec`) and a `Valid` condition carrying the
//! verdict about the generation judged, with the validation error naming the field when
//! the spec is invalid. This is how the controller publishes its decision (see
//! [`crate::config::decide`]); the speakers follow it. A patch is produced only when
//! something differs, so a controller at rest writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

pub use crate::config::VALID_CONDITION;
use crate::config::{PoolDecision, PoolState, FROZEN_REASON, INVALID_REASON, VALID_REASON};
use crate::crd::{IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus};

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

/// What to publish about a pool: the decision about one of its generations, why it is
/// invalid (if it is), and the counters of what is in force.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolVerdict {
    /// Accepted, frozen or rejected.
    pub state: PoolState,
    /// The generation judged.
    pub generation: Option<i64>,
    /// The spec in force; `None` when rejected (the published one is then left as is).
    pub in_force: Option<IPAddressPoolSpec>,
    /// The validation errors (empty when accepted).
    pub errors: String,
    /// Counters of what is in force (zero when rejected).
    pub counts: PoolCounts,
}

impl PoolVerdict {
    /// The verdict for `decision`, with its errors and the allocator's counters.
    pub fn new(decision: &PoolDecision, errors: String, counts: Option<PoolCounts>) -> Self {
        Self {
            state: decision.state,
            generation: decision.generation,
            in_force: decision.in_force.clone(),
            errors,
            counts: counts.unwrap_or_default(),
        }
    }

    /// The `Valid` condition's message, also the Warning Event's note (empty when valid).
    pub fn message(&self) -> String {
        match self.state {
            PoolState::Accepted => String::new(),
            PoolState::Frozen => format!(
                "{}; the pool is frozen: its last valid spec (status.lastValidSpec) stays in force, \
                 its Services keep their IPs and no new IP is given out from it until the spec is fixed",
                self.errors
            ),
            PoolState::Rejected => format!("{}; the pool is not used", self.errors),
        }
    }
}

fn condition(verdict: &PoolVerdict, now: Timestamp) -> Condition {
    let (status, reason) = match verdict.state {
        PoolState::Accepted => ("True", VALID_REASON),
        PoolState::Frozen => ("False", FROZEN_REASON),
        PoolState::Rejected => ("False", INVALID_REASON),
    };
    Condition {
        type_: VALID_CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message: verdict.message(),
        observed_generation: verdict.generation,
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
/// `Valid` condition keeps its `lastTransitionTime` when its status did not change; a
/// rejected pool keeps the `lastValidSpec` it has.
pub fn desired_status(
    pool: &IPAddressPool,
    verdict: &PoolVerdict,
    now: Timestamp,
) -> IPAddressPoolStatus {
    let current = pool.status.clone().unwrap_or_default();
    let mut cond = condition(verdict, now);
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
    let c = verdict.counts;
    IPAddressPoolStatus {
        assigned_ipv4: c.assigned_v4,
        assigned_ipv6: c.assigned_v6,
        available_ipv4: c.available_v4,
        available_ipv6: c.available_v6,
        conditions,
        last_valid_spec: verdict.in_force.clone().or(current.last_valid_spec),
    }
}

/// Whether two statuses are equal ignoring condition timestamps.
pub fn status_equal(a: &IPAddressPoolStatus, b: &IPAddressPoolStatus) -> bool {
    a.assigned_ipv4 == b.assigned_ipv4
        && a.assigned_ipv6 == b.assigned_ipv6
        && a.available_ipv4 == b.available_ipv4
        && a.available_ipv6 == b.available_ipv6
        && a.last_valid_spec == b.last_valid_spec
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

    fn spec(addrs: &[&str]) -> IPAddressPoolSpec {
        IPAddressPoolSpec {
            addresses: addrs.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        }
    }

    fn pool() -> IPAddressPool {
        let mut p = IPAddressPool::new("p", spec(&["10.0.0.0/24"]));
        p.metadata.namespace = Some("metallb-system".into());
        p.metadata.generation = Some(1);
        p
    }

    fn counts(a: i64) -> PoolVerdict {
        PoolVerdict {
            state: PoolState::Accepted,
            generation: Some(1),
            in_force: Some(spec(&["10.0.0.0/24"])),
            errors: String::new(),
            counts: PoolCounts {
                assigned_v4: a,
                available_v4: 256 - a,
                ..Default::default()
            },
        }
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
        assert_eq!(patch["status"]["conditions"][0]["observedGeneration"], 1);
        assert_eq!(
            patch["status"]["lastValidSpec"]["addresses"],
            json!(["10.0.0.0/24"])
        );
        p.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
        // Later, same counters: no write even though time moved on.
        let later = now + k8s_openapi::jiff::SignedDuration::from_secs(60);
        assert!(status_patch(&p, &counts(1), later).is_none());
        assert!(status_patch(&p, &counts(2), later).is_some());
    }

    #[test]
    fn frozen_pool_keeps_counting_and_names_the_field() {
        let mut p = pool();
        let now = Timestamp::now();
        p.status = Some(desired_status(&p, &counts(3), now));
        p.spec = spec(&["10.0.0.0/24", "10.0.0.1/33"]);
        p.metadata.generation = Some(2);
        let errors = r#"IPAddressPool "p": spec.addresses[1]: invalid CIDR "10.0.0.1/33": prefix length 33 is longer than 32, the maximum for IPv4"#;
        let frozen = PoolVerdict {
            state: PoolState::Frozen,
            generation: Some(2),
            in_force: Some(spec(&["10.0.0.0/24"])),
            errors: errors.into(),
            counts: counts(3).counts,
        };
        let patch = status_patch(&p, &frozen, now).unwrap();
        let c = &patch["status"]["conditions"][0];
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "Frozen");
        assert_eq!(c["observedGeneration"], 2);
        let msg = c["message"].as_str().unwrap();
        assert!(
            msg.starts_with(errors) && msg.contains("status.lastValidSpec"),
            "{msg}"
        );
        assert_eq!(patch["status"]["assignedIPv4"], 3, "its IPs still count");
        assert_eq!(
            patch["status"]["lastValidSpec"]["addresses"],
            json!(["10.0.0.0/24"]),
            "the last valid spec, not the current one"
        );
    }

    #[test]
    fn rejected_pool_gets_false_condition_and_keeps_its_last_valid_spec() {
        let mut p = pool();
        let now = Timestamp::now();
        p.status = Some(desired_status(&p, &counts(3), now));
        let msg = r#"IPAddressPool "p": spec.addresses[0]: invalid CIDR "10.0.0.0/33""#;
        let v = PoolVerdict {
            state: PoolState::Rejected,
            generation: Some(1),
            in_force: None,
            errors: msg.into(),
            counts: PoolCounts::default(),
        };
        let patch = status_patch(&p, &v, now).unwrap();
        let c = &patch["status"]["conditions"][0];
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "InvalidConfiguration");
        assert!(c["message"].as_str().unwrap().starts_with(msg));
        assert_eq!(patch["status"]["assignedIPv4"], 0);
        assert_eq!(
            patch["status"]["lastValidSpec"]["addresses"],
            json!(["10.0.0.0/24"])
        );
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

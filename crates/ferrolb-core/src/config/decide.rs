//! The controller's decision about every pool, and the speakers' way of following it.
//!
//! The decision is published in each pool's status: `status.lastValidSpec` (the spec in
//! force) and the `Valid` condition (the verdict about the generation in
//! `observedGeneration`). [`decide`] reads `lastValidSpec` back, so the decision depends on
//! the objects alone: a controller restart, or a new leader, decides the same. [`follow`]
//! takes the published verdict where it covers a pool's current generation and decides
//! the rest the same way, so the controller and every speaker use the same pools and, when
//! pools overlap, the same winner.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::validate::{resolve, Past, Pin, Validated};
use super::{Config, ConfigError};
use crate::crd::{IPAddressPool, IPAddressPoolSpec, L2Advertisement};

/// Condition type carrying a pool's verdict.
pub const VALID_CONDITION: &str = "Valid";
/// `Valid=True`: the spec is in force.
pub const VALID_REASON: &str = "Accepted";
/// `Valid=False`: the spec is invalid; `status.lastValidSpec` stays in force.
pub const FROZEN_REASON: &str = "Frozen";
/// `Valid=False`: the spec is invalid and nothing of the pool is in force.
pub const INVALID_REASON: &str = "InvalidConfiguration";

/// How one IPAddressPool object is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolState {
    /// Its current spec is in force.
    Accepted,
    /// Its current spec is invalid (or overlaps a pool that holds the addresses): its last
    /// valid spec stays in force, its Services keep their IPs, no new IP comes from it.
    Frozen,
    /// Invalid with nothing to fall back on: left out.
    Rejected,
}

/// The decision about one input pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolDecision {
    /// Position in the input.
    pub index: usize,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.generation`: the generation judged.
    pub generation: Option<i64>,
    /// How it is used.
    pub state: PoolState,
    /// The spec in force (to publish as `status.lastValidSpec`); `None` when rejected.
    pub in_force: Option<IPAddressPoolSpec>,
}

/// The configuration in force, what is wrong, and the decision about every input pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The pools and advertisements in force, the errors and the warnings.
    pub validated: Validated,
    /// One per input pool, in input order.
    pub pools: Vec<PoolDecision>,
}

impl Decision {
    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.validated.config
    }

    /// The errors about the input pool at `index`.
    pub fn pool_errors(&self, index: usize) -> impl Iterator<Item = &ConfigError> + '_ {
        self.validated
            .errors
            .iter()
            .filter(move |e| e.kind == super::ObjectKind::IPAddressPool && e.index == index)
    }

    /// The errors about the input pool at `index`, joined with `; ` (empty when none).
    pub fn pool_message(&self, index: usize) -> String {
        self.pool_errors(index)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A verdict read from a pool's `Valid` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The generation it is about (`observedGeneration`).
    pub generation: i64,
    /// `True` or `False`.
    pub valid: bool,
}

/// The published verdict of a pool (its `Valid` condition), if it has a readable one.
pub fn published_verdict(pool: &IPAddressPool) -> Option<Verdict> {
    let c: &Condition = pool
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == VALID_CONDITION)?;
    let valid = match c.status.as_str() {
        "True" => true,
        "False" => false,
        _ => return None,
    };
    Some(Verdict {
        generation: c.observed_generation?,
        valid,
    })
}

fn last_valid(pool: &IPAddressPool) -> Option<&IPAddressPoolSpec> {
    pool.status.as_ref()?.last_valid_spec.as_ref()
}

/// The controller's decision: every pool with its published last valid spec as its past
/// (see [`super::validate()`](super::validate) for the rules).
pub fn decide(pools: &[IPAddressPool], ads: &[L2Advertisement]) -> Decision {
    let past: Vec<Past> = pools
        .iter()
        .map(|p| Past {
            last_valid: last_valid(p),
            pin: None,
        })
        .collect();
    let (validated, pools) = resolve(pools, ads, &past);
    Decision { validated, pools }
}

/// The speakers' view: a pool whose published verdict covers its current generation is
/// taken as published (`Valid=True`: its last valid spec; `Valid=False`: frozen on its
/// last valid spec, or left out without one); the others are decided as [`decide`] does.
pub fn follow(pools: &[IPAddressPool], ads: &[L2Advertisement]) -> Decision {
    let past: Vec<Past> = pools
        .iter()
        .map(|p| {
            let last = last_valid(p);
            let pin = published_verdict(p)
                .filter(|v| Some(v.generation) == p.metadata.generation)
                .map(|v| {
                    if v.valid {
                        Pin::Accepted(last.unwrap_or(&p.spec))
                    } else {
                        Pin::Frozen(last)
                    }
                });
            Past {
                last_valid: last,
                pin,
            }
        })
        .collect();
    let (validated, pools) = resolve(pools, ads, &past);
    Decision { validated, pools }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IPAddressPoolStatus, ServiceAllocationSpec};
    use crate::selector::Labels;
    use ipnet::IpNet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, LabelSelectorRequirement, Time,
    };
    use proptest::prelude::*;

    fn spec(addrs: &[&str]) -> IPAddressPoolSpec {
        IPAddressPoolSpec {
            addresses: addrs.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        }
    }

    /// A pool created `age` seconds after a fixed instant, at generation 1.
    fn pool(name: &str, age: i64, addrs: &[&str]) -> IPAddressPool {
        let mut p = IPAddressPool::new(name, spec(addrs));
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.generation = Some(1);
        p.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).unwrap(),
        ));
        p
    }

    /// Writes a decision into the pools' statuses as the controller does: the spec in
    /// force as `lastValidSpec` (kept when rejected) and the verdict about the generation.
    fn publish(pools: &mut [IPAddressPool], d: &Decision) {
        for (p, pd) in pools.iter_mut().zip(&d.pools) {
            let st = p.status.get_or_insert_with(IPAddressPoolStatus::default);
            if let Some(s) = &pd.in_force {
                st.last_valid_spec = Some(s.clone());
            }
            st.conditions = vec![Condition {
                type_: VALID_CONDITION.into(),
                status: if pd.state == PoolState::Accepted {
                    "True"
                } else {
                    "False"
                }
                .into(),
                reason: String::new(),
                message: String::new(),
                observed_generation: pd.generation,
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }];
        }
    }

    /// An edit of the spec: bumps the generation, as the API server does.
    fn edit(p: &mut IPAddressPool, s: IPAddressPoolSpec) {
        p.spec = s;
        p.metadata.generation = Some(p.metadata.generation.unwrap_or(0) + 1);
    }

    fn cidrs(d: &Decision, name: &str) -> Option<Vec<String>> {
        d.config()
            .pools
            .get(name)
            .map(|p| p.cidrs.iter().map(IpNet::to_string).collect())
    }

    fn state(d: &Decision, name: &str) -> PoolState {
        d.pools.iter().find(|p| p.name == name).unwrap().state
    }

    /// Every invalid shape the validation knows for a pool, as (spec, field, message part).
    fn bad_shapes() -> Vec<(IPAddressPoolSpec, &'static str, &'static str)> {
        let sel = |op: &str, vals: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: op.into(),
                values: Some(vals.iter().map(|s| s.to_string()).collect()),
            }]),
        };
        let with_alloc = |a: ServiceAllocationSpec| IPAddressPoolSpec {
            service_allocation: Some(a),
            ..spec(&["192.0.2.100/30"])
        };
        vec![
            (
                spec(&["192.0.2.100/30", "10.0.0.1/33"]),
                "spec.addresses[1]",
                r#"invalid CIDR "10.0.0.1/33""#,
            ),
            (
                spec(&["192.0.2.100/30", "100.200.300.400/24"]),
                "spec.addresses[1]",
                "is not an IP address",
            ),
            (
                spec(&["192.0.2.110-192.0.2.100"]),
                "spec.addresses[0]",
                "is after the end IP",
            ),
            (
                spec(&["192.0.2.100 - fc00::1"]),
                "spec.addresses[0]",
                "not of the same IP family",
            ),
            (spec(&[]), "spec.addresses", "no addresses defined"),
            (
                spec(&["192.0.2.100/30", "192.0.2.101/32"]),
                "spec.addresses[1]",
                "of the same pool",
            ),
            (
                with_alloc(ServiceAllocationSpec {
                    namespaces: vec!["a".into(), "a".into()],
                    ..Default::default()
                }),
                "spec.serviceAllocation.namespaces[1]",
                "duplicate namespace",
            ),
            (
                with_alloc(ServiceAllocationSpec {
                    service_selectors: vec![sel("Equals", &["x"])],
                    ..Default::default()
                }),
                "spec.serviceAllocation.serviceSelectors[0]",
                "unknown operator",
            ),
            (
                with_alloc(ServiceAllocationSpec {
                    namespace_selectors: vec![sel("In", &[]), sel("In", &[])],
                    ..Default::default()
                }),
                "spec.serviceAllocation.namespaceSelectors[0]",
                "needs at least one value",
            ),
        ]
    }

    #[test]
    fn a_bad_edit_freezes_the_pool_on_its_last_valid_spec() {
        let mut pools = vec![
            pool("default", 0, &["192.0.2.100/30"]),
            pool("other", 10, &["198.51.100.0/30"]),
        ];
        let d0 = decide(&pools, &[]);
        assert!(d0.validated.is_ok());
        publish(&mut pools, &d0);
        for (bad, field, part) in bad_shapes() {
            let mut edited = pools.clone();
            edit(&mut edited[0], bad);
            let d = decide(&edited, &[]);
            assert_eq!(state(&d, "default"), PoolState::Frozen, "{field}");
            let p = &d.config().pools["default"];
            assert!(p.frozen);
            assert_eq!(cidrs(&d, "default").unwrap(), ["192.0.2.100/30"]);
            assert_eq!(d.pools[0].in_force, Some(spec(&["192.0.2.100/30"])));
            let msg = d.pool_message(0);
            assert!(msg.contains(&format!("{field}: ")), "{msg}");
            assert!(msg.contains(part), "{msg}");
            // The neighbour is untouched; the speakers' view is the same.
            assert_eq!(state(&d, "other"), PoolState::Accepted);
            assert_eq!(follow(&edited, &[]).config(), d.config());
            // The verdict published, then read back (a restart): still frozen, same spec.
            publish(&mut edited, &d);
            let again = decide(&edited, &[]);
            assert_eq!(again.config(), d.config(), "{field}");
            assert_eq!(follow(&edited, &[]).config(), d.config(), "{field}");
        }
    }

    #[test]
    fn never_valid_is_rejected_and_a_fix_is_accepted() {
        let mut pools = vec![pool("p", 0, &["10.0.0.0/33"])];
        let d = decide(&pools, &[]);
        assert_eq!(state(&d, "p"), PoolState::Rejected);
        assert!(d.config().pools.is_empty());
        assert_eq!(d.pools[0].in_force, None);
        publish(&mut pools, &d);
        edit(&mut pools[0], spec(&["10.0.0.0/30"]));
        let d = decide(&pools, &[]);
        assert_eq!(state(&d, "p"), PoolState::Accepted);
        assert!(!d.config().pools["p"].frozen);
        // Fixing a frozen pool unfreezes it with the new spec.
        publish(&mut pools, &d);
        edit(&mut pools[0], spec(&["10.0.0.0/30", "bad"]));
        let d = decide(&pools, &[]);
        assert_eq!(state(&d, "p"), PoolState::Frozen);
        publish(&mut pools, &d);
        edit(&mut pools[0], spec(&["10.0.0.0/29"]));
        let d = decide(&pools, &[]);
        assert_eq!(state(&d, "p"), PoolState::Accepted);
        assert_eq!(cidrs(&d, "p").unwrap(), ["10.0.0.0/29"]);
    }

    #[test]
    fn an_edit_into_a_neighbour_never_takes_its_addresses_whatever_the_age() {
        for edited_is_older in [true, false] {
            let (ea, na) = if edited_is_older { (0, 10) } else { (10, 0) };
            let mut pools = vec![
                pool("edited", ea, &["10.0.0.0/24"]),
                pool("neighbour", na, &["10.0.1.0/24"]),
            ];
            let d = decide(&pools, &[]);
            publish(&mut pools, &d);
            edit(&mut pools[0], spec(&["10.0.0.0/23"]));
            let d = decide(&pools, &[]);
            assert_eq!(cidrs(&d, "neighbour").unwrap(), ["10.0.1.0/24"]);
            assert_eq!(state(&d, "edited"), PoolState::Frozen);
            assert_eq!(cidrs(&d, "edited").unwrap(), ["10.0.0.0/24"]);
            assert_eq!(
                d.pool_message(0),
                r#"IPAddressPool "edited": spec.addresses[0]: CIDR "10.0.0.0/23" overlaps with CIDR "10.0.1.0/24" of IPAddressPool "neighbour" (spec.addresses[0]), which is kept"#
            );
            // A new pool overlapping a serving one is rejected, even when it sorts first.
            let mut with_new = pools.clone();
            with_new.push(pool("aaa-new", -100, &["10.0.1.128/25"]));
            let d = decide(&with_new, &[]);
            assert_eq!(state(&d, "aaa-new"), PoolState::Rejected);
            assert_eq!(cidrs(&d, "neighbour").unwrap(), ["10.0.1.0/24"]);
        }
    }

    #[test]
    fn a_pool_may_grow_into_room_another_frees_in_the_same_edit() {
        for (a_age, b_age) in [(0, 10), (10, 0)] {
            let mut pools = vec![
                pool("a", a_age, &["10.0.0.0/24"]),
                pool("b", b_age, &["10.0.1.0/24"]),
            ];
            let d = decide(&pools, &[]);
            publish(&mut pools, &d);
            edit(&mut pools[0], spec(&["10.0.0.0/25"]));
            edit(&mut pools[1], spec(&["10.0.0.128/25", "10.0.1.0/24"]));
            let d = decide(&pools, &[]);
            assert!(d.validated.is_ok(), "{:?}", d.validated.errors);
            assert_eq!(cidrs(&d, "a").unwrap(), ["10.0.0.0/25"]);
            assert_eq!(cidrs(&d, "b").unwrap(), ["10.0.0.128/25", "10.0.1.0/24"]);
        }
        // A swap cannot be done in one step: both stay on their last valid spec.
        let mut pools = vec![
            pool("a", 0, &["10.0.0.0/24"]),
            pool("b", 10, &["10.0.1.0/24"]),
        ];
        let d = decide(&pools, &[]);
        publish(&mut pools, &d);
        edit(&mut pools[0], spec(&["10.0.1.0/24"]));
        edit(&mut pools[1], spec(&["10.0.0.0/24"]));
        let d = decide(&pools, &[]);
        assert_eq!(state(&d, "a"), PoolState::Frozen);
        assert_eq!(state(&d, "b"), PoolState::Frozen);
        assert_eq!(cidrs(&d, "a").unwrap(), ["10.0.0.0/24"]);
        assert!(
            d.pool_message(1)
                .contains("(status.lastValidSpec.addresses[0])"),
            "{}",
            d.pool_message(1)
        );
    }

    #[test]
    fn speakers_follow_the_published_verdict_of_the_current_generation() {
        // Frozen b waits for a to free 10.0.0.128/25; a frees it; the controller has not
        // judged b again yet: the speakers keep b frozen as published.
        let mut pools = vec![
            pool("a", 0, &["10.0.0.0/24"]),
            pool("b", 10, &["10.0.1.0/24"]),
        ];
        let d = decide(&pools, &[]);
        publish(&mut pools, &d);
        edit(&mut pools[1], spec(&["10.0.0.128/25", "10.0.1.0/24"]));
        let d = decide(&pools, &[]);
        assert_eq!(state(&d, "b"), PoolState::Frozen);
        publish(&mut pools, &d);
        edit(&mut pools[0], spec(&["10.0.0.0/25"]));
        let mine = decide(&pools, &[]);
        assert_eq!(
            state(&mine, "b"),
            PoolState::Accepted,
            "the controller moves b"
        );
        let theirs = follow(&pools, &[]);
        assert_eq!(state(&theirs, "b"), PoolState::Frozen, "until it says so");
        assert_eq!(cidrs(&theirs, "b").unwrap(), ["10.0.1.0/24"]);
        assert_eq!(
            cidrs(&theirs, "a").unwrap(),
            ["10.0.0.0/25"],
            "a is unjudged"
        );
        publish(&mut pools, &mine);
        assert_eq!(follow(&pools, &[]).config(), mine.config());

        // A verdict about an older generation is not followed; neither is an odd one.
        let mut p = pool("p", 0, &["10.9.0.0/24"]);
        let d = decide(std::slice::from_ref(&p), &[]);
        publish(std::slice::from_mut(&mut p), &d);
        edit(&mut p, spec(&["10.9.0.0/23"]));
        assert_eq!(
            cidrs(&follow(&[p.clone()], &[]), "p").unwrap(),
            ["10.9.0.0/23"]
        );
        p.status.as_mut().unwrap().conditions[0].status = "Unknown".into();
        p.status.as_mut().unwrap().conditions[0].observed_generation = Some(2);
        assert_eq!(published_verdict(&p), None);
        assert_eq!(cidrs(&follow(&[p], &[]), "p").unwrap(), ["10.9.0.0/23"]);
    }

    #[test]
    fn an_invalid_last_valid_spec_is_ignored() {
        let mut p = pool("p", 0, &["10.0.0.0/33"]);
        p.status = Some(IPAddressPoolStatus {
            last_valid_spec: Some(spec(&["also bad"])),
            ..Default::default()
        });
        let d = decide(&[p], &[]);
        assert_eq!(d.pools[0].state, PoolState::Rejected);
        assert!(d.config().pools.is_empty());
    }

    #[test]
    fn frozen_pool_keeps_labels_for_advertisement_selectors() {
        let mut p = pool("p", 0, &["10.0.0.0/30"]);
        p.metadata.labels = Some(Labels::from([("adv".to_string(), "yes".to_string())]));
        let mut pools = vec![p];
        let d = decide(&pools, &[]);
        publish(&mut pools, &d);
        edit(&mut pools[0], spec(&["x"]));
        let d = decide(&pools, &[]);
        assert_eq!(d.config().pools["p"].labels["adv"], "yes");
    }

    fn arb_spec() -> impl Strategy<Value = IPAddressPoolSpec> {
        let entry = prop_oneof![
            4 => (0u8..4, 22u8..=26).prop_map(|(c, l)| format!("10.0.{c}.0/{l}")),
            1 => Just("10.0.0.0/33".to_string()),
            1 => Just("junk".to_string()),
        ];
        prop::collection::vec(entry, 0..3).prop_map(|a| IPAddressPoolSpec {
            addresses: a,
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        })
    }

    fn arb_pools() -> impl Strategy<Value = Vec<IPAddressPool>> {
        prop::collection::vec((arb_spec(), 0i64..3), 1..5).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (s, age))| {
                    let mut p = pool(&format!("p{i}"), age, &[]);
                    p.spec = s;
                    p
                })
                .collect()
        })
    }

    fn disjoint(c: &Config) -> bool {
        let all: Vec<IpNet> = c.pools.values().flat_map(|p| p.cidrs.clone()).collect();
        all.iter().enumerate().all(|(i, a)| {
            all[i + 1..]
                .iter()
                .all(|b| !(a.contains(&b.network()) || b.contains(&a.network())))
        })
    }

    proptest! {
        /// Whatever the history of edits: the pools in force never overlap; publishing a
        /// decision and deciding again changes nothing (a restart decides the same); the
        /// speakers' view equals it; and an edit of one pool never changes what is in force
        /// for a settled pool (accepted, or frozen on an invalid spec), the edited one
        /// included when the edit is invalid. Only a pool waiting for room may move.
        #[test]
        fn decisions_are_stable_and_an_edit_costs_no_settled_pool_anything(
            mut pools in arb_pools(),
            edits in prop::collection::vec((0usize..5, arb_spec()), 1..6),
        ) {
            let d = decide(&pools, &[]);
            publish(&mut pools, &d);
            for (who, s) in edits {
                let who = who % pools.len();
                let before = decide(&pools, &[]);
                prop_assert!(disjoint(before.config()));
                let followed = follow(&pools, &[]);
                prop_assert_eq!(followed.config(), before.config());
                let mut next = pools.clone();
                edit(&mut next[who], s);
                let after = decide(&next, &[]);
                prop_assert!(disjoint(after.config()));
                let invalid = |p: &IPAddressPool| {
                    !super::super::validate(std::slice::from_ref(p), &[]).is_ok()
                };
                for (i, pd) in before.pools.iter().enumerate() {
                    let settled = pd.state == PoolState::Accepted
                        || (pd.state == PoolState::Frozen && invalid(&pools[i]));
                    if !settled || (i == who && !invalid(&next[i])) {
                        continue;
                    }
                    prop_assert_eq!(
                        after.config().pools.get(&pd.name).map(|p| &p.cidrs),
                        before.config().pools.get(&pd.name).map(|p| &p.cidrs),
                        "{} changed", &pd.name
                    );
                }
                publish(&mut next, &after);
                let again = decide(&next, &[]);
                prop_assert_eq!(again.config(), after.config());
                pools = next;
            }
        }
    }
}

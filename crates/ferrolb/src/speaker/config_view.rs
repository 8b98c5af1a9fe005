//! Turns the IPAddressPool / L2Advertisement objects into the [`Config`] the election
//! consumes, following the controller's published decision ([`crate::config::follow`]):
//! where a pool's `Valid` condition covers its current generation, its `lastValidSpec` is
//! used as published (a frozen pool keeps being announced on its last valid spec); the
//! other pools are decided by the controller's own rules, from the same objects. So the
//! controller and every speaker agree on the pools in force and, when pools overlap, on
//! the winner, across restarts. One typo never stops the others, nor costs an IP.

use crate::config::Config;
use crate::crd::{IPAddressPool, L2Advertisement};

/// Builds the configuration; returns it with one message per problem.
pub fn build_config(pools: &[IPAddressPool], ads: &[L2Advertisement]) -> (Config, Vec<String>) {
    let d = crate::config::follow(pools, ads);
    let errors = d.validated.errors.iter().map(|e| e.to_string()).collect();
    (d.validated.config, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IPAddressPoolSpec, IPAddressPoolStatus};
    use serde_json::json;

    fn pool(name: &str, generation: i64, addrs: &[&str]) -> IPAddressPool {
        let mut p = IPAddressPool::new(
            name,
            IPAddressPoolSpec {
                addresses: addrs.iter().map(|s| s.to_string()).collect(),
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        p.metadata.generation = Some(generation);
        p
    }

    fn published(mut p: IPAddressPool, status: serde_json::Value) -> IPAddressPool {
        p.status = Some(serde_json::from_value::<IPAddressPoolStatus>(status).unwrap());
        p
    }

    #[test]
    fn a_frozen_pool_is_announced_on_its_last_valid_spec() {
        let frozen = published(
            pool("default", 2, &["192.0.2.100-192.0.2.120", "10.0.0.1/33"]),
            json!({
                "conditions": [{"type": "Valid", "status": "False", "reason": "Frozen",
                    "message": "…", "observedGeneration": 2,
                    "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                "lastValidSpec": {"addresses": ["192.0.2.100-192.0.2.120"]}
            }),
        );
        let (cfg, errors) = build_config(std::slice::from_ref(&frozen), &[]);
        let p = &cfg.pools["default"];
        assert!(p.frozen);
        assert!(p.contains("192.0.2.110".parse().unwrap()));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("spec.addresses[1]"), "{errors:?}");
        // Before the controller judged the edit (verdict about generation 1), the speaker
        // decides as the controller will: frozen as well.
        let mut unjudged = frozen;
        unjudged.status.as_mut().unwrap().conditions[0].observed_generation = Some(1);
        unjudged.status.as_mut().unwrap().conditions[0].status = "True".into();
        let (cfg2, _) = build_config(&[unjudged], &[]);
        assert_eq!(cfg2, cfg);
    }

    #[test]
    fn the_published_winner_of_an_overlap_is_followed() {
        // "young" won the overlap according to the controller (published), although the
        // rules alone, without its history, would let the older "old" win.
        let young = published(
            {
                let mut p = pool("young", 1, &["10.0.0.0/24"]);
                p.metadata.creation_timestamp =
                    Some(serde_json::from_value(json!("2024-01-02T00:00:00Z")).unwrap());
                p
            },
            json!({"conditions": [{"type": "Valid", "status": "True", "reason": "Accepted",
                "message": "", "observedGeneration": 1, "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                "lastValidSpec": {"addresses": ["10.0.0.0/24"]}}),
        );
        let old = published(
            {
                let mut p = pool("old", 3, &["10.0.0.0/23"]);
                p.metadata.creation_timestamp =
                    Some(serde_json::from_value(json!("2024-01-01T00:00:00Z")).unwrap());
                p
            },
            json!({"conditions": [{"type": "Valid", "status": "False", "reason": "Frozen",
                "message": "overlap", "observedGeneration": 3, "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                "lastValidSpec": {"addresses": ["10.0.1.0/24"]}}),
        );
        let (cfg, _) = build_config(&[old.clone(), young.clone()], &[]);
        assert!(cfg.pools["young"].contains("10.0.0.1".parse().unwrap()));
        assert!(cfg.pools["old"].frozen);
        assert!(!cfg.pools["old"].contains("10.0.0.1".parse().unwrap()));
        // Without any published status, age decides (the old controller rule).
        let bare = |mut p: IPAddressPool| {
            p.status = None;
            p
        };
        let (cfg, _) = build_config(&[bare(old), bare(young)], &[]);
        assert_eq!(cfg.pools.keys().collect::<Vec<_>>(), ["old"]);
    }

    #[test]
    fn a_status_of_another_shape_never_breaks_the_view() {
        // Written by MetalLB (counters only), by another version, or by a human.
        for status in [
            json!({"assignedIPv4": 1, "assignedIPv6": 0, "availableIPv4": 20, "availableIPv6": 0}),
            json!({"assignedIPv4": "one", "conditions": [{"type": "Valid"}], "lastValidSpec": 7}),
            json!({"conditions": "none", "lastValidSpec": {"addresses": "10.0.0.0/24"}}),
            json!("garbage"),
            json!([1, 2]),
        ] {
            let obj = json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "p", "generation": 1},
                "spec": {"addresses": ["192.0.2.0/30"]},
                "status": status,
            });
            let p: IPAddressPool =
                serde_json::from_value(obj.clone()).unwrap_or_else(|e| panic!("{obj}: {e}"));
            let (cfg, errors) = build_config(&[p], &[]);
            assert!(errors.is_empty(), "{errors:?}");
            assert!(
                cfg.pools["p"].contains("192.0.2.1".parse().unwrap()),
                "{obj}"
            );
        }
    }
}

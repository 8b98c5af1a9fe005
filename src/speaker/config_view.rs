//! Turns the IPAddressPool / L2Advertisement objects into the validated [`Config`] the
//! election consumes. Invalid objects are logged and left out (one typo never stops
//! the others from being announced).
//!
//! Interim: until `crate::config::validate` lands this is a minimal conversion (CIDRs and
//! `a-b` ranges, selectors); it will delegate to the shared validation.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use kube::ResourceExt;

use crate::config::{Config, L2Adv, Pool};
use crate::crd::{IPAddressPool, L2Advertisement};
use crate::selector::Selector;

/// Builds the configuration; returns it with one message per object left out.
pub fn build_config(pools: &[IPAddressPool], ads: &[L2Advertisement]) -> (Config, Vec<String>) {
    let mut cfg = Config::default();
    let mut errors = Vec::new();
    for p in pools {
        let name = p.name_any();
        match pool_cidrs(&p.spec.addresses) {
            Ok(cidrs) => {
                cfg.pools.insert(
                    name.clone(),
                    Pool {
                        name,
                        labels: p.labels().clone(),
                        cidrs,
                        auto_assign: p.spec.auto_assign,
                        avoid_buggy_ips: p.spec.avoid_buggy_ips,
                        allocation: None,
                    },
                );
            }
            Err(e) => errors.push(format!("IPAddressPool {name}: {e}")),
        }
    }
    for a in ads {
        let name = a.name_any();
        match l2_adv(&name, a) {
            Ok(ad) => cfg.l2_advertisements.push(ad),
            Err(e) => errors.push(format!("L2Advertisement {name}: {e}")),
        }
    }
    cfg.l2_advertisements.sort_by(|a, b| a.name.cmp(&b.name));
    (cfg, errors)
}

fn pool_cidrs(addresses: &[String]) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for a in addresses {
        let a = a.trim();
        if let Some((lo, hi)) = a.split_once('-') {
            let lo: IpAddr = lo
                .trim()
                .parse()
                .map_err(|_| format!("invalid range {a:?}"))?;
            let hi: IpAddr = hi
                .trim()
                .parse()
                .map_err(|_| format!("invalid range {a:?}"))?;
            match (lo, hi) {
                (IpAddr::V4(l), IpAddr::V4(h)) if l <= h => {
                    out.extend(Ipv4Subnets::new(l, h, 0).map(IpNet::V4))
                }
                (IpAddr::V6(l), IpAddr::V6(h)) if l <= h => {
                    out.extend(Ipv6Subnets::new(l, h, 0).map(IpNet::V6))
                }
                _ => return Err(format!("invalid range {a:?}")),
            }
        } else {
            let net: IpNet = a.parse().map_err(|_| format!("invalid CIDR {a:?}"))?;
            out.push(net.trunc());
        }
    }
    Ok(out)
}

fn l2_adv(name: &str, a: &L2Advertisement) -> Result<L2Adv, String> {
    let sel = |v: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector]| {
        v.iter()
            .map(|s| Selector::parse(s).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(L2Adv {
        name: name.to_string(),
        ip_address_pools: a.spec.ip_address_pools.clone(),
        ip_address_pool_selectors: sel(&a.spec.ip_address_pool_selectors)?,
        node_selectors: sel(&a.spec.node_selectors)?,
        interfaces: a.spec.interfaces.clone(),
        service_selectors: sel(&a.spec.service_selectors)?,
        preferred_node_selectors: a
            .spec
            .preferred_node_selectors
            .iter()
            .map(|p| {
                Selector::parse(&p.preference)
                    .map(|s| (p.weight, s))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_cidrs() {
        let c = pool_cidrs(&["10.0.0.5/24".into(), "10.1.0.1-10.1.0.2".into()]).unwrap();
        assert_eq!(c[0].to_string(), "10.0.0.0/24");
        assert!(c
            .iter()
            .any(|n| n.contains(&"10.1.0.2".parse::<IpAddr>().unwrap())));
        assert!(pool_cidrs(&["nope".into()]).is_err());
        assert!(pool_cidrs(&["10.0.0.2-10.0.0.1".into()]).is_err());
    }
}

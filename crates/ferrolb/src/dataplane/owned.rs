//! The owned set (pure): which IPs this node answers for, and on which interfaces.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use crate::dense::Dense;

/// On which interfaces an IP is announced (L2Advertisement `interfaces`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InterfaceFilter {
    /// Every eligible interface.
    #[default]
    All,
    /// Only these interface names (those that exist and are eligible).
    Named(BTreeSet<String>),
}

impl InterfaceFilter {
    /// A filter for the given names; an empty list means [`InterfaceFilter::All`], as
    /// an L2Advertisement without `interfaces` does.
    pub fn named<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        let set: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        if set.is_empty() {
            Self::All
        } else {
            Self::Named(set)
        }
    }

    /// Whether the interface `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Named(s) => s.contains(name),
        }
    }
}

/// What [`Owned::announce`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The IP was not owned before.
    New,
    /// Owned before with a different interface filter.
    Changed {
        /// The previous filter.
        previous: InterfaceFilter,
    },
    /// Already owned with this filter: nothing to do.
    Unchanged,
}

/// Owned IPs and their interface filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    map: BTreeMap<IpAddr, InterfaceFilter>,
}

impl Owned {
    /// Rebuilds the table with full B-tree nodes ([`Dense`]).
    pub fn make_dense(&mut self) {
        self.map.make_dense();
    }

    /// Claims `ip` on the interfaces of `filter` (replacing a previous filter).
    pub fn announce(&mut self, ip: IpAddr, filter: InterfaceFilter) -> Change {
        match self.map.insert(ip, filter.clone()) {
            None => Change::New,
            Some(prev) if prev == filter => Change::Unchanged,
            Some(previous) => Change::Changed { previous },
        }
    }

    /// Releases `ip`; returns whether it was owned.
    pub fn withdraw(&mut self, ip: IpAddr) -> bool {
        self.map.remove(&ip).is_some()
    }

    /// Whether `ip` is owned and allowed on interface `ifname`.
    pub fn allowed(&self, ip: IpAddr, ifname: &str) -> bool {
        self.map.get(&ip).is_some_and(|f| f.allows(ifname))
    }

    /// The filter of `ip`, if owned.
    pub fn get(&self, ip: IpAddr) -> Option<&InterfaceFilter> {
        self.map.get(&ip)
    }

    /// Owned IPs allowed on `ifname`.
    pub fn on_interface<'a>(&'a self, ifname: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
        self.map
            .iter()
            .filter(move |(_, f)| f.allows(ifname))
            .map(|(ip, _)| *ip)
    }

    /// Solicited-node multicast groups the interface must be a member of.
    pub fn solicited_groups(&self, ifname: &str) -> BTreeSet<Ipv6Addr> {
        self.on_interface(ifname)
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(crate::wire::solicited_node_multicast(v6)),
                IpAddr::V4(_) => None,
            })
            .collect()
    }

    /// All owned IPs and filters.
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &InterfaceFilter)> {
        self.map.iter()
    }

    /// Number of owned IPs.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is owned.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn announce_withdraw_and_filters() {
        let mut o = Owned::default();
        assert_eq!(
            o.announce(ip("10.0.0.10"), InterfaceFilter::All),
            Change::New
        );
        assert_eq!(
            o.announce(ip("10.0.0.10"), InterfaceFilter::All),
            Change::Unchanged
        );
        let named = InterfaceFilter::named(["eth1"]);
        assert_eq!(
            o.announce(ip("10.0.0.10"), named.clone()),
            Change::Changed {
                previous: InterfaceFilter::All
            }
        );
        assert!(o.allowed(ip("10.0.0.10"), "eth1"));
        assert!(!o.allowed(ip("10.0.0.10"), "eth0"));
        assert!(!o.allowed(ip("10.0.0.11"), "eth1"));
        assert_eq!(o.get(ip("10.0.0.10")), Some(&named));
        assert!(o.withdraw(ip("10.0.0.10")));
        assert!(!o.withdraw(ip("10.0.0.10")));
        assert!(o.is_empty());
    }

    #[test]
    fn empty_name_list_means_all() {
        assert_eq!(
            InterfaceFilter::named(Vec::<String>::new()),
            InterfaceFilter::All
        );
        assert!(InterfaceFilter::All.allows("anything"));
    }

    #[test]
    fn solicited_groups_per_interface() {
        let mut o = Owned::default();
        o.announce(ip("fd00::1:2:3"), InterfaceFilter::All);
        o.announce(ip("fd00::9:2:3"), InterfaceFilter::All); // same low 24 bits ⇒ same group
        o.announce(ip("fd00::abcd:ef01"), InterfaceFilter::named(["eth1"]));
        o.announce(ip("10.0.0.1"), InterfaceFilter::All);
        let g0: Vec<_> = o.solicited_groups("eth0").into_iter().collect();
        assert_eq!(g0, vec!["ff02::1:ff02:3".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(o.solicited_groups("eth1").len(), 2);
        assert_eq!(o.on_interface("eth0").count(), 3);
    }
}

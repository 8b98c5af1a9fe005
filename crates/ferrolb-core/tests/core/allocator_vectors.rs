//! MetalLB allocator test vectors (reference §6.1: TestAssignment, TestPoolAllocation,
//! TestBuggyIPs, TestConfigReload, TestAutoAssign, TestPoolCount) and the
//! controller-level cases (TestControllerMutation, TestDeleteRecyclesIP), as
//! allocator-level tests through the public API.

use std::net::IpAddr;

use ferrolb_core::allocator::{
    AllocError, Allocator, Change, Family, FamilyPolicy, PoolCapacity, PoolCounters, Protocol,
    ServiceKey, ServiceRequest,
};
use ferrolb_core::config::{Pool, ServiceAllocation};
use ferrolb_core::selector::{Labels, Selector};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| ip(s)).collect()
}

fn pool(name: &str, cidrs: &[&str]) -> Pool {
    Pool {
        name: name.into(),
        labels: Labels::new(),
        cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        allocation: None,
        frozen: false,
    }
}

fn buggy(mut p: Pool) -> Pool {
    p.avoid_buggy_ips = true;
    p
}

fn manual(mut p: Pool) -> Pool {
    p.auto_assign = false;
    p
}

fn pinned(mut p: Pool, priority: i32, namespaces: &[&str], selector: Option<(&str, &str)>) -> Pool {
    p.allocation = Some(ServiceAllocation {
        priority,
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        namespace_selectors: vec![],
        service_selectors: selector
            .map(|(k, v)| vec![Selector::from_labels([(k, v)])])
            .unwrap_or_default(),
    });
    p
}

fn svc_in(ns: &str, name: &str, fams: &[Family]) -> ServiceRequest {
    ServiceRequest {
        key: ServiceKey::new(ns, name),
        cluster_families: fams.to_vec(),
        ..Default::default()
    }
}

fn v4(name: &str) -> ServiceRequest {
    svc_in("default", name, &[Family::V4])
}

fn v6(name: &str) -> ServiceRequest {
    svc_in("default", name, &[Family::V6])
}

fn dual(name: &str, policy: FamilyPolicy, primary: Family) -> ServiceRequest {
    let mut r = svc_in("default", name, &[primary, primary.other()]);
    r.family_policy = policy;
    r
}

fn want(mut r: ServiceRequest, addrs: &[&str]) -> ServiceRequest {
    r.requested_ips = ips(addrs);
    r
}

fn share(mut r: ServiceRequest, key: &str, ports: &[(Protocol, u16)]) -> ServiceRequest {
    r.sharing_key = Some(key.into());
    r.ports = ports.to_vec();
    r
}

fn ok_ips(a: &mut Allocator, r: &ServiceRequest) -> Vec<IpAddr> {
    a.ensure(r).unwrap_or_else(|e| panic!("{}: {e}", r.key)).ips
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

const TCP80: (Protocol, u16) = (Protocol::Tcp, 80);
const TCP443: (Protocol, u16) = (Protocol::Tcp, 443);
const UDP80: (Protocol, u16) = (Protocol::Udp, 80);

/// TestAssignment: explicit requests, idempotence, conflicts, moving, buggy IPs,
/// restricted pools. Run for IPv4 and mirrored for IPv6.
fn assignment_sequence(fam: Family, cidr: &str, a1: &str, a2: &str) {
    let mut a = Allocator::new(vec![pool("test0", &[cidr])]);
    let mk = |n: &str| svc_in("default", n, &[fam]);

    let s1 = want(mk("s1"), &[a1]);
    let r = a.ensure(&s1).unwrap();
    assert_eq!(
        (r.ips.clone(), r.pool.as_str(), r.change),
        (ips(&[a1]), "test0", Change::Allocated)
    );
    // Idempotent.
    assert_eq!(a.ensure(&s1).unwrap().change, Change::Unchanged);
    // s2 cannot take s1's IP.
    let err = a.ensure(&want(mk("s2"), &[a1])).unwrap_err();
    assert_eq!(
        err,
        AllocError::IpInUse {
            ip: ip(a1),
            by: key("s1")
        }
    );
    assert_eq!(a.assigned(&key("s2")), None);
    assert_eq!(ok_ips(&mut a, &want(mk("s2"), &[a2])), ips(&[a2]));
    // After s1 frees its IP, s2 can move there.
    let rel = a.release(&key("s1")).unwrap();
    assert_eq!(rel.freed_ips, ips(&[a1]));
    let r = a.ensure(&want(mk("s2"), &[a1])).unwrap();
    assert_eq!(r.ips, ips(&[a1]));
    assert!(
        matches!(r.change, Change::Reallocated { ref previous_ips, .. } if *previous_ips == ips(&[a2]))
    );
    assert_eq!(a.services_on(&ip(a2)), vec![]);
    // Outside every pool.
    let outside = if fam == Family::V4 { "9.9.9.9" } else { "9::9" };
    let err = a.ensure(&want(mk("s3"), &[outside])).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("requested IP {outside} is not in any pool allowed for default/s3")
    );
}

#[test]
fn assignment_v4() {
    assignment_sequence(Family::V4, "1.2.3.4/31", "1.2.3.4", "1.2.3.5");
}

#[test]
fn assignment_v6() {
    assignment_sequence(Family::V6, "1000::4/127", "1000::4", "1000::5");
}

#[test]
fn assignment_buggy_ips_and_restricted_pools() {
    let mut a = Allocator::new(vec![
        buggy(pool("test1", &["1.2.4.0/24", "1000::4:0/120"])),
        pinned(pool("ns-pool", &["1.2.5.0/24"]), 0, &["test-ns1"], None),
        pinned(
            pool("sel-pool", &["1.2.6.0/24"]),
            0,
            &[],
            Some(("team", "metallb")),
        ),
    ]);
    for bad in ["1.2.4.0", "1.2.4.255"] {
        let err = a.ensure(&want(v4("s1"), &[bad])).unwrap_err();
        assert!(
            matches!(err, AllocError::RequestedIpNotAllowed { .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        ok_ips(&mut a, &want(v4("s1"), &["1.2.4.254"])),
        ips(&["1.2.4.254"])
    );
    // avoidBuggyIPs has no effect on IPv6.
    assert_eq!(
        ok_ips(&mut a, &want(v6("s6"), &["1000::4:ff"])),
        ips(&["1000::4:ff"])
    );
    // Namespace-restricted pool.
    let err = a.ensure(&want(v4("s2"), &["1.2.5.1"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested IP 1.2.5.1 is not in any pool allowed for default/s2"
    );
    let s = want(svc_in("test-ns1", "s2", &[Family::V4]), &["1.2.5.1"]);
    assert_eq!(a.ensure(&s).unwrap().pool, "ns-pool");
    // Selector-restricted pool.
    assert!(a.ensure(&want(v4("s3"), &["1.2.6.1"])).is_err());
    let mut s = want(v4("s3"), &["1.2.6.1"]);
    s.labels.insert("team".into(), "metallb".into());
    assert_eq!(a.ensure(&s).unwrap().pool, "sel-pool");
}

/// TestAssignment, sharing part (IPv4 and IPv6).
fn sharing_sequence(cidr: &str, fam: Family, addr: &str, other: &str) {
    let mut a = Allocator::new(vec![pool("p", &[cidr])]);
    let mk = |n: &str| svc_in("default", n, &[fam]);
    let s1 = share(want(mk("s1"), &[addr]), "k", &[TCP80]);
    assert_eq!(ok_ips(&mut a, &s1), ips(&[addr]));
    // Same key, same backend, disjoint ports: shares.
    let s2 = share(want(mk("s2"), &[addr]), "k", &[TCP443]);
    assert_eq!(ok_ips(&mut a, &s2), ips(&[addr]));
    // TCP/80 and UDP/80 do not overlap.
    let s5 = share(want(mk("s5"), &[addr]), "k", &[UDP80]);
    assert_eq!(ok_ips(&mut a, &s5), ips(&[addr]));
    assert_eq!(
        a.services_on(&ip(addr)),
        vec![key("s1"), key("s2"), key("s5")]
    );
    let c = a.pool_counters("p").unwrap();
    assert_eq!(c.assigned_v4 + c.assigned_v6, 1, "a shared IP counts once");
    // Same port: rejected.
    let err = a
        .ensure(&share(want(mk("s3"), &[addr]), "k", &[TCP80]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("port TCP/80 is already in use on {addr}")
    );
    // Different key.
    let err = a
        .ensure(&share(
            want(mk("s3"), &[addr]),
            "other",
            &[(Protocol::Tcp, 8080)],
        ))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#"sharing key "other" does not match "k""#),
        "{err}"
    );
    // Different backend.
    let mut s3 = share(want(mk("s3"), &[addr]), "k", &[(Protocol::Tcp, 8080)]);
    s3.backend_key = "app=web".into();
    assert!(matches!(
        a.ensure(&s3).unwrap_err(),
        AllocError::BackendKeyMismatch { .. }
    ));
    // No key at all.
    assert!(matches!(
        a.ensure(&want(mk("s3"), &[addr])).unwrap_err(),
        AllocError::IpInUse { .. }
    ));
    // An owner with co-tenants cannot change its key; it loses its IP, the others keep it.
    let err = a
        .ensure(&share(want(mk("s1"), &[addr]), "k2", &[TCP80]))
        .unwrap_err();
    assert!(matches!(err, AllocError::SharingKeyMismatch { .. }));
    assert_eq!(a.assigned(&key("s1")), None);
    assert_eq!(a.services_on(&ip(addr)), vec![key("s2"), key("s5")]);
    // The sole owner of an IP can change its key in place.
    let s4 = share(want(mk("s4"), &[other]), "x", &[TCP80]);
    assert_eq!(ok_ips(&mut a, &s4), ips(&[other]));
    let s4 = share(want(mk("s4"), &[other]), "y", &[TCP80]);
    assert_eq!(a.ensure(&s4).unwrap().change, Change::Unchanged);
    let s6 = share(want(mk("s6"), &[other]), "y", &[TCP443]);
    assert_eq!(ok_ips(&mut a, &s6), ips(&[other]));
    let err = a
        .ensure(&share(want(mk("s7"), &[other]), "x", &[UDP80]))
        .unwrap_err();
    assert!(matches!(err, AllocError::SharingKeyMismatch { .. }));
}

#[test]
fn sharing_v4() {
    sharing_sequence("1.2.3.0/24", Family::V4, "1.2.3.1", "1.2.3.2");
}

#[test]
fn sharing_v6() {
    sharing_sequence("1000::/120", Family::V6, "1000::1", "1000::2");
}

#[test]
fn pool_allocation_single_stack() {
    let mut a = Allocator::new(vec![pool(
        "test",
        &["1.2.3.4/31", "1.2.3.10/31", "1000::/127", "2000::/127"],
    )]);
    let got: Vec<_> = (1..=4)
        .map(|i| ok_ips(&mut a, &v4(&format!("s{i}"))))
        .collect();
    assert_eq!(
        got,
        vec![
            ips(&["1.2.3.4"]),
            ips(&["1.2.3.5"]),
            ips(&["1.2.3.10"]),
            ips(&["1.2.3.11"])
        ]
    );
    assert_eq!(
        a.ensure(&v4("s5")).unwrap_err().to_string(),
        "no available IPs"
    );
    let mut s6 = v4("s6");
    s6.requested_pool = Some("test".into());
    assert_eq!(
        a.ensure(&s6).unwrap_err().to_string(),
        r#"no available IPs in pool "test""#
    );
    // Releasing one lets the next one in, at the freed address.
    a.release(&key("s2"));
    assert_eq!(ok_ips(&mut a, &v4("s5")), ips(&["1.2.3.5"]));
    // IPv6 services fill the v6 CIDRs in order.
    let got: Vec<_> = (1..=4)
        .map(|i| ok_ips(&mut a, &v6(&format!("v{i}"))))
        .collect();
    assert_eq!(
        got,
        vec![
            ips(&["1000::"]),
            ips(&["1000::1"]),
            ips(&["2000::"]),
            ips(&["2000::1"])
        ]
    );
    assert!(a.ensure(&v6("v5")).is_err());
    assert_eq!(
        a.pool_counters("test").unwrap(),
        PoolCounters {
            assigned_v4: 4,
            assigned_v6: 4,
            available_v4: 0,
            available_v6: 0
        }
    );
}

#[test]
fn pool_allocation_sharing_when_full() {
    let mut a = Allocator::new(vec![pool("test", &["1.2.3.4/31", "1.2.3.10/31"])]);
    for i in 1..=4 {
        ok_ips(&mut a, &share(v4(&format!("s{i}")), "share", &[TCP80]));
    }
    assert!(a.ensure(&v4("plain")).is_err());
    // Full, but a compatible sharer gets the lowest shareable address.
    assert_eq!(
        ok_ips(&mut a, &share(v4("t1"), "share", &[TCP443])),
        ips(&["1.2.3.4"])
    );
    assert_eq!(
        ok_ips(&mut a, &share(v4("t2"), "share", &[TCP443])),
        ips(&["1.2.3.5"])
    );
    assert!(a.ensure(&share(v4("t3"), "other", &[TCP443])).is_err());
    assert_eq!(a.pool_counters("test").unwrap().assigned_v4, 4);
}

#[test]
fn pool_allocation_dual_stack() {
    let p = || {
        pool(
            "test",
            &["1.2.3.4/31", "1.2.3.10/31", "1000::/127", "2000::/127"],
        )
    };
    let mut a = Allocator::new(vec![p()]);
    let got: Vec<_> = (1..=4)
        .map(|i| {
            ok_ips(
                &mut a,
                &dual(&format!("d{i}"), FamilyPolicy::RequireDualStack, Family::V6),
            )
        })
        .collect();
    // [IPv4, IPv6] order whatever the primary family.
    assert_eq!(got[0], ips(&["1.2.3.4", "1000::"]));
    assert_eq!(got[3], ips(&["1.2.3.11", "2000::1"]));
    assert!(a
        .ensure(&dual("d5", FamilyPolicy::RequireDualStack, Family::V4))
        .is_err());

    // PreferDualStack falls back to the primary family, then the secondary.
    let mut a = Allocator::new(vec![p()]);
    for i in 1..=4 {
        ok_ips(&mut a, &v6(&format!("v{i}")));
    }
    assert_eq!(
        ok_ips(
            &mut a,
            &dual("p1", FamilyPolicy::PreferDualStack, Family::V6)
        ),
        ips(&["1.2.3.4"])
    );
    assert_eq!(
        ok_ips(
            &mut a,
            &dual("p2", FamilyPolicy::PreferDualStack, Family::V4)
        ),
        ips(&["1.2.3.5"])
    );
    // When the other family frees up, the next ensure adds it from the same pool.
    a.release(&ServiceKey::new("default", "v2"));
    let r = a
        .ensure(&dual("p1", FamilyPolicy::PreferDualStack, Family::V6))
        .unwrap();
    assert_eq!(r.change, Change::AddedFamily { ip: ip("1000::1") });
    assert_eq!(r.ips, ips(&["1.2.3.4", "1000::1"]));
    assert_eq!(
        a.ensure(&dual("p1", FamilyPolicy::PreferDualStack, Family::V6))
            .unwrap()
            .change,
        Change::Unchanged
    );

    // RequireDualStack needs both families in ONE pool.
    let mut a = Allocator::new(vec![pool("a", &["1.2.3.0/30"]), pool("b", &["1000::/126"])]);
    assert_eq!(
        a.ensure(&dual("d", FamilyPolicy::RequireDualStack, Family::V4))
            .unwrap_err(),
        AllocError::NoAvailableIps
    );
    // RequireDualStack with one clusterIP.
    let mut r = v4("d");
    r.family_policy = FamilyPolicy::RequireDualStack;
    assert_eq!(a.ensure(&r).unwrap_err(), AllocError::NotEnoughClusterIps);
    // A single-stack clusterIP never gets dual LB IPs, even with PreferDualStack.
    let mut r = v4("e");
    r.family_policy = FamilyPolicy::PreferDualStack;
    assert_eq!(ok_ips(&mut a, &r), ips(&["1.2.3.0"]));
}

#[test]
fn buggy_ips() {
    let mut a = Allocator::new(vec![
        pool("a", &["1.2.3.0/31", "1.2.3.254/31"]),
        buggy(pool("b", &["1.2.4.0/31", "1.2.4.254/31"])),
    ]);
    let mut got: Vec<IpAddr> = (0..6)
        .flat_map(|i| ok_ips(&mut a, &v4(&format!("s{i}"))))
        .collect();
    got.sort();
    assert_eq!(
        got,
        ips(&[
            "1.2.3.0",
            "1.2.3.1",
            "1.2.3.254",
            "1.2.3.255",
            "1.2.4.1",
            "1.2.4.254"
        ])
    );
    assert_eq!(a.ensure(&v4("s7")).unwrap_err(), AllocError::NoAvailableIps);
}

#[test]
fn config_reload() {
    let base = || {
        let mut a = Allocator::new(vec![pool("test", &["1.2.3.0/30", "1000::/126"])]);
        assert_eq!(ok_ips(&mut a, &v4("s1")), ips(&["1.2.3.0"]));
        assert_eq!(ok_ips(&mut a, &v6("s2")), ips(&["1000::"]));
        a
    };
    // (pools, cleared services, expected pool per surviving service)
    type Case = (
        &'static str,
        Vec<Pool>,
        Vec<&'static str>,
        Vec<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "same",
            vec![pool("test", &["1.2.3.0/30", "1000::/126"])],
            vec![],
            vec![("s1", "test"), ("s2", "test")],
        ),
        (
            "expand",
            vec![pool("test", &["1.2.3.0/24", "1000::/120"])],
            vec![],
            vec![("s1", "test"), ("s2", "test")],
        ),
        (
            "shrink, still covered",
            vec![pool("test", &["1.2.3.0/31", "1000::/127"])],
            vec![],
            vec![("s1", "test"), ("s2", "test")],
        ),
        (
            "v4 leaves",
            vec![pool("test", &["1.2.3.2/31", "1000::/126"])],
            vec!["s1"],
            vec![("s2", "test")],
        ),
        (
            "v6 leaves",
            vec![pool("test", &["1.2.3.0/31", "1000::2/127"])],
            vec!["s2"],
            vec![("s1", "test")],
        ),
        (
            "rename",
            vec![pool("test2", &["1.2.3.0/30", "1000::/126"])],
            vec![],
            vec![("s1", "test2"), ("s2", "test2")],
        ),
        (
            "split",
            vec![
                pool("test", &["1.2.3.0/30"]),
                pool("test2", &["1000::/126"]),
            ],
            vec![],
            vec![("s1", "test"), ("s2", "test2")],
        ),
        (
            "avoid buggy",
            vec![buggy(pool("test", &["1.2.3.0/31", "1000::/126"]))],
            vec!["s1"],
            vec![("s2", "test")],
        ),
        (
            "deleted",
            vec![pool("other", &["5.5.5.0/24"])],
            vec!["s1", "s2"],
            vec![],
        ),
        (
            "now restricted",
            vec![pinned(
                pool("test", &["1.2.3.0/30", "1000::/126"]),
                1,
                &["elsewhere"],
                None,
            )],
            vec!["s1", "s2"],
            vec![],
        ),
    ];
    for (name, pools, cleared, kept) in cases {
        let mut a = base();
        a.take_freed();
        let got = a.set_pools(pools);
        let got_keys: Vec<&str> = got.iter().map(|c| c.key.name.as_str()).collect();
        assert_eq!(got_keys, cleared, "{name}");
        for c in &got {
            assert!(!c.reason.is_empty());
            assert_eq!(a.assigned(&c.key), None, "{name}");
        }
        for (s, p) in kept {
            assert_eq!(a.assigned(&key(s)).map(|x| x.1), Some(p), "{name}: {s}");
        }
        assert!(
            !a.take_freed().is_empty(),
            "{name}: config changes are reported as freed room"
        );
    }
    // A cleared Service is re-allocated by the next ensure, with the status IP as reason.
    let mut a = base();
    a.set_pools(vec![pool("test", &["1.2.3.2/31", "1000::/126"])]);
    let mut s1 = v4("s1");
    s1.current_ips = ips(&["1.2.3.0"]);
    let r = a.ensure(&s1).unwrap();
    assert_eq!(r.ips, ips(&["1.2.3.2"]));
    match r.change {
        Change::Reallocated {
            reason,
            previous_ips,
        } => {
            assert_eq!(previous_ips, ips(&["1.2.3.0"]));
            assert!(reason.contains("1.2.3.0"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A dual-stack pool split in two: both IPs are cleared.
    let mut a = Allocator::new(vec![pool("test", &["1.2.3.0/30", "1000::/126"])]);
    ok_ips(
        &mut a,
        &dual("d", FamilyPolicy::RequireDualStack, Family::V4),
    );
    let got = a.set_pools(vec![pool("a", &["1.2.3.0/30"]), pool("b", &["1000::/126"])]);
    assert_eq!(got.len(), 1);
    assert!(matches!(got[0].ips.as_slice(), [_, _]));
}

#[test]
fn auto_assign() {
    let mut a = Allocator::new(vec![
        manual(pool("manual", &["1.2.3.0/30"])),
        pool("auto", &["1.2.4.0/31"]),
    ]);
    assert_eq!(ok_ips(&mut a, &v4("s1")), ips(&["1.2.4.0"]));
    assert_eq!(ok_ips(&mut a, &v4("s2")), ips(&["1.2.4.1"]));
    assert_eq!(a.ensure(&v4("s3")).unwrap_err(), AllocError::NoAvailableIps);
    // autoAssign: false pools are used on request (IP or pool).
    assert_eq!(
        ok_ips(&mut a, &want(v4("s3"), &["1.2.3.1"])),
        ips(&["1.2.3.1"])
    );
    let mut s4 = v4("s4");
    s4.requested_pool = Some("manual".into());
    assert_eq!(ok_ips(&mut a, &s4), ips(&["1.2.3.0"]));
}

#[test]
fn pool_count() {
    let cap = |p: Pool| Allocator::new(vec![p]).pool_capacity("p").unwrap();
    assert_eq!(cap(pool("p", &["1.2.3.0/24"])).total(), 256);
    assert_eq!(cap(pool("p", &["1.2.3.0/24", "2.3.4.128/25"])).total(), 384);
    assert_eq!(
        cap(buggy(pool("p", &["1.2.3.0/24", "2.3.4.128/25"]))).total(),
        381
    );
    assert_eq!(
        cap(pool("p", &["1.2.3.0/24", "2.3.4.128/25", "1000::/64"])).total(),
        i64::MAX
    );
    assert_eq!(
        cap(pool("p", &["1000::/64"])),
        PoolCapacity {
            v4: 0,
            v6: i64::MAX
        }
    );
    assert_eq!(
        cap(buggy(pool("p", &["1.2.3.0/31", "1000::/127"]))),
        PoolCapacity { v4: 1, v6: 2 }
    );
    // A /64 works without enumerating; counters stay clamped.
    let mut a = Allocator::new(vec![pool("p", &["1000::/64"])]);
    assert_eq!(ok_ips(&mut a, &v6("s")), ips(&["1000::"]));
    let c = a.pool_counters("p").unwrap();
    assert_eq!((c.assigned_v6, c.available_v6), (1, i64::MAX - 1));
    assert_eq!(a.pool_counters("nope"), None);
}

// ---- Controller-level cases (TestControllerMutation & co.) ----

fn controller_pools() -> Vec<Pool> {
    vec![
        pool("pool1", &["1.2.3.0/31"]),
        manual(pool("pool2", &["3.4.5.6/32"])),
        pinned(pool("pool6", &["7.8.9.0/24"]), 10, &["test-ns1"], None),
        pinned(pool("pool7", &["10.11.12.0/24"]), 11, &["test-ns1"], None),
        pinned(
            pool("pool8", &["13.14.15.0/24"]),
            9,
            &[],
            Some(("team", "metallb")),
        ),
        pinned(pool("pool9", &["16.17.18.0/24"]), 0, &["test-ns2"], None),
        pinned(
            pool("pool10", &["19.20.21.0/24"]),
            8,
            &[],
            Some(("team", "metallb")),
        ),
        pinned(
            pool("pool12", &["25.26.27.0/24"]),
            5,
            &["test-ns1"],
            Some(("team", "metallb")),
        ),
        pool("pool13", &["1000::/127"]),
    ]
}

#[test]
fn controller_simple_and_requested() {
    let mut a = Allocator::new(controller_pools());
    assert_eq!(ok_ips(&mut a, &v4("simple")), ips(&["1.2.3.0"]));
    assert_eq!(
        ok_ips(&mut a, &want(v4("spec-ip"), &["1.2.3.1"])),
        ips(&["1.2.3.1"])
    );
    // Infeasible IP: status is cleared (the Service holds nothing).
    let mut s = want(v4("simple"), &["1.2.3.4"]);
    s.current_ips = ips(&["1.2.3.0"]);
    assert!(matches!(
        a.ensure(&s).unwrap_err(),
        AllocError::RequestedIpNotAllowed { .. }
    ));
    assert_eq!(a.assigned(&key("simple")), None);
    // Wrong family.
    assert_eq!(
        a.ensure(&want(v4("w"), &["1000::1"])).unwrap_err(),
        AllocError::FamilyMismatch
    );
    let err = a
        .ensure(&want(v4("w"), &["1.2.3.0", "1.2.3.1"]))
        .unwrap_err();
    assert!(matches!(err, AllocError::InvalidIps(_)));
    // Unknown pool.
    let mut s = v4("u");
    s.requested_pool = Some("nope".into());
    assert_eq!(
        a.ensure(&s).unwrap_err().to_string(),
        r#"unknown pool "nope""#
    );
    // No clusterIPs.
    assert_eq!(
        a.ensure(&svc_in("default", "x", &[])).unwrap_err(),
        AllocError::NoClusterIps
    );
    // No pools at all.
    assert_eq!(
        Allocator::new(vec![]).ensure(&v4("x")).unwrap_err(),
        AllocError::NoPools
    );
}

#[test]
fn controller_switch_pool_by_annotation() {
    let mut a = Allocator::new(controller_pools());
    assert_eq!(ok_ips(&mut a, &v4("s")), ips(&["1.2.3.0"]));
    let mut s = v4("s");
    s.requested_pool = Some("pool2".into());
    let r = a.ensure(&s).unwrap();
    assert_eq!((r.ips, r.pool.as_str()), (ips(&["3.4.5.6"]), "pool2"));
    assert!(matches!(r.change, Change::Reallocated { .. }));
    assert_eq!(a.services_on(&ip("1.2.3.0")), vec![]);
    // Requested IP + requested pool must agree.
    let mut s = want(v4("t"), &["1.2.3.1"]);
    s.requested_pool = Some("pool2".into());
    assert!(matches!(
        a.ensure(&s).unwrap_err(),
        AllocError::RequestedIpNotInPool { .. }
    ));
}

#[test]
fn controller_pinned_pools_by_priority() {
    let mut a = Allocator::new(controller_pools());
    let team = |mut r: ServiceRequest| {
        r.labels.insert("team".into(), "metallb".into());
        r
    };
    let cases = [
        (svc_in("test-ns1", "a", &[Family::V4]), "7.8.9.0", "pool6"),
        (
            team(svc_in("default", "b", &[Family::V4])),
            "19.20.21.0",
            "pool10",
        ),
        (
            team(svc_in("test-ns1", "c", &[Family::V4])),
            "25.26.27.0",
            "pool12",
        ),
        (
            svc_in("test-ns2", "d", &[Family::V4]),
            "16.17.18.0",
            "pool9",
        ),
        (svc_in("other", "e", &[Family::V4]), "1.2.3.0", "pool1"),
    ];
    for (r, want_ip, want_pool) in cases {
        let got = a.ensure(&r).unwrap();
        assert_eq!(
            (got.ips, got.pool.as_str()),
            (ips(&[want_ip]), want_pool),
            "{}",
            r.key
        );
    }
    // A pinned pool with room is never skipped for a non-pinned one; when every
    // pinned pool is full the auto pools are used.
    let mut a = Allocator::new(vec![
        pinned(pool("pin", &["7.8.9.0/32"]), 1, &["ns"], None),
        pool("auto", &["1.1.1.0/30"]),
    ]);
    assert_eq!(
        ok_ips(&mut a, &svc_in("ns", "a", &[Family::V4])),
        ips(&["7.8.9.0"])
    );
    assert_eq!(
        ok_ips(&mut a, &svc_in("ns", "b", &[Family::V4])),
        ips(&["1.1.1.0"])
    );
}

#[test]
fn equal_priorities_are_ordered_by_name() {
    for order in [["b", "a"], ["a", "b"]] {
        let mk = |n: &str| {
            let cidr = if n == "a" {
                "10.0.0.0/24"
            } else {
                "10.1.0.0/24"
            };
            pinned(pool(n, &[cidr]), 10, &["ns"], None)
        };
        let mut a = Allocator::new(order.iter().map(|n| mk(n)).collect());
        assert_eq!(
            a.ensure(&svc_in("ns", "s", &[Family::V4])).unwrap().pool,
            "a"
        );
    }
}

#[test]
fn namespace_selectors() {
    let mut p = pinned(pool("prod", &["10.0.0.0/24"]), 1, &[], None);
    p.allocation.as_mut().unwrap().namespace_selectors =
        vec![Selector::from_labels([("env", "prod")])];
    let mut a = Allocator::new(vec![p, pool("any", &["10.9.0.0/24"])]);
    let mut s = svc_in("shop", "s", &[Family::V4]);
    s.namespace_labels.insert("env".into(), "prod".into());
    assert_eq!(a.ensure(&s).unwrap().pool, "prod");
    assert_eq!(
        a.ensure(&svc_in("dev", "s", &[Family::V4])).unwrap().pool,
        "any"
    );
}

#[test]
fn controller_three_ingress_ips_reset_to_one() {
    let mut a = Allocator::new(controller_pools());
    let mut s = v4("s");
    s.current_ips = ips(&["1.2.3.0", "1.2.3.1", "1000::"]);
    let r = a.ensure(&s).unwrap();
    assert_eq!(r.ips, ips(&["1.2.3.0"]));
    assert!(matches!(r.change, Change::Reallocated { .. }));
}

#[test]
fn existing_valid_assignment_never_moves() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/24"])]);
    // Status says .7 although .0 is free: adopted as is.
    let mut s = v4("s");
    s.current_ips = ips(&["10.0.0.7"]);
    assert_eq!(
        a.ensure(&s).unwrap(),
        ferrolb_core::allocator::Assignment {
            ips: ips(&["10.0.0.7"]),
            pool: "p".into(),
            change: Change::Unchanged
        }
    );
    // A new higher-priority pool does not move it either.
    a.set_pools(vec![
        pool("p", &["10.0.0.0/24"]),
        pinned(pool("pin", &["10.1.0.0/24"]), 1, &["default"], None),
    ]);
    assert_eq!(a.ensure(&s).unwrap().change, Change::Unchanged);
    assert_eq!(
        a.assigned(&key("s")).unwrap().0,
        ips(&["10.0.0.7"]).as_slice()
    );
}

#[test]
fn delete_recycles_ip_and_reports_who_can_use_it() {
    let mut a = Allocator::new(vec![
        pool("p", &["1.2.3.0/32"]),
        manual(pool("m", &["5.5.5.0/32"])),
    ]);
    assert_eq!(ok_ips(&mut a, &v4("s1")), ips(&["1.2.3.0"]));
    let s2 = v4("s2");
    assert!(a.ensure(&s2).is_err());
    a.take_freed();
    let rel = a.release(&key("s1")).unwrap();
    assert_eq!(
        (rel.pool.as_str(), rel.freed_ips.clone()),
        ("p", ips(&["1.2.3.0"]))
    );
    let freed = a.take_freed();
    assert!(freed.contains("p"));
    assert!(a.could_use(&s2, "p"));
    assert!(
        !a.could_use(&s2, "m"),
        "autoAssign:false pool is not used automatically"
    );
    let mut s3 = v4("s3");
    s3.requested_pool = Some("m".into());
    assert!(a.could_use(&s3, "m") && !a.could_use(&s3, "p"));
    assert!(!a.could_use(&want(v4("s4"), &["9.9.9.9"]), "p"));
    assert_eq!(ok_ips(&mut a, &s2), ips(&["1.2.3.0"]));
    assert_eq!(a.release(&key("nobody")), None);
}

#[test]
fn rebuild_adopts_statuses_first_regardless_of_order() {
    let pools = || vec![pool("p", &["10.0.0.0/30"])];
    let mut pending = v4("a-pending");
    pending.current_ips = vec![];
    let mut held = v4("z-held");
    held.current_ips = ips(&["10.0.0.0"]);
    let mut bad = v4("m-bad");
    bad.current_ips = ips(&["9.9.9.9"]);
    let reqs = vec![pending.clone(), held.clone(), bad.clone()];
    let (a1, r1) = Allocator::rebuild(pools(), reqs.clone());
    let (a2, r2) = Allocator::rebuild(pools(), reqs.into_iter().rev());
    assert_eq!(a1.snapshot(), a2.snapshot());
    assert_eq!(r1, r2);
    // The held IP stays; the pending Service does not steal it although it sorts first.
    assert_eq!(
        a1.assigned(&key("z-held")).unwrap().0,
        ips(&["10.0.0.0"]).as_slice()
    );
    assert_eq!(
        a1.assigned(&key("a-pending")).unwrap().0,
        ips(&["10.0.0.1"]).as_slice()
    );
    assert_eq!(
        a1.assigned(&key("m-bad")).unwrap().0,
        ips(&["10.0.0.2"]).as_slice()
    );
    let bad_result = &r1.iter().find(|(k, _)| k.name == "m-bad").unwrap().1;
    assert!(matches!(bad_result, Ok(r) if matches!(r.change, Change::Reallocated { .. })));
}

fn frozen(mut p: Pool) -> Pool {
    p.frozen = true;
    p
}

/// A frozen pool (its spec became invalid, its last valid one is kept) keeps every
/// assignment, in memory, through a reconfiguration and after a rebuild from statuses, but
/// gives out nothing new: no automatic allocation, no requested pool or IP, no added family,
/// no shared IP; pending Services are not retried on it until it thaws.
#[test]
fn frozen_pool_keeps_its_assignments_and_gives_out_nothing() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/30", "fc00::/126"])]);
    let held = ok_ips(&mut a, &v4("held"));
    let shared = share(v4("shared"), "k", &[TCP80]);
    let shared_ip = ok_ips(&mut a, &shared);
    assert_eq!(
        (held.clone(), shared_ip.clone()),
        (ips(&["10.0.0.0"]), ips(&["10.0.0.1"]))
    );

    // The pool freezes: both keep their IPs.
    let cleared = a.set_pools(vec![frozen(pool("p", &["10.0.0.0/30", "fc00::/126"]))]);
    assert!(cleared.is_empty(), "{cleared:?}");
    assert_eq!(a.ensure(&v4("held")).unwrap().change, Change::Unchanged);
    assert_eq!(a.ensure(&shared).unwrap().ips, shared_ip);
    assert_eq!(a.pool_counters("p").unwrap().assigned_v4, 2);

    // Nothing new: automatic, requested pool, requested IP, sharing, added family.
    assert_eq!(
        a.ensure(&v4("new")).unwrap_err(),
        AllocError::NoAvailableIps
    );
    let mut by_pool = v4("by-pool");
    by_pool.requested_pool = Some("p".into());
    assert_eq!(
        a.ensure(&by_pool).unwrap_err(),
        AllocError::PoolFrozen("p".into())
    );
    assert_eq!(
        a.ensure(&want(v4("by-ip"), &["10.0.0.3"])).unwrap_err(),
        AllocError::PoolFrozen("p".into())
    );
    assert!(a
        .ensure(&want(share(v4("sharer"), "k", &[TCP443]), &["10.0.0.1"]))
        .is_err());
    let mut widen = v4("held");
    widen.cluster_families = vec![Family::V4, Family::V6];
    widen.family_policy = FamilyPolicy::PreferDualStack;
    assert_eq!(a.ensure(&widen).unwrap().ips, held, "no IPv6 added");
    assert!(!a.could_use(&v4("new"), "p"));
    assert!(a.take_freed().iter().all(|p| !a.could_use(&v4("new"), p)));

    // A restart: rebuilt from statuses, the frozen pool keeps both, gives out nothing.
    let mut from_status = v4("held");
    from_status.current_ips = held.clone();
    let mut shared_status = shared.clone();
    shared_status.current_ips = shared_ip.clone();
    let (mut b, results) = Allocator::rebuild(
        vec![frozen(pool("p", &["10.0.0.0/30"]))],
        vec![v4("newcomer"), from_status, shared_status],
    );
    let got: Vec<_> = results
        .iter()
        .map(|(k, r)| (k.name.clone(), r.as_ref().map(|a| a.ips.clone()).ok()))
        .collect();
    assert!(
        got.contains(&("held".into(), Some(held.clone()))),
        "{got:?}"
    );
    assert!(
        got.contains(&("shared".into(), Some(shared_ip.clone()))),
        "{got:?}"
    );
    assert!(got.contains(&("newcomer".into(), None)), "{got:?}");

    // Thawed: the pending Service can use it again, and gets the next free IP.
    b.set_pools(vec![pool("p", &["10.0.0.0/30"])]);
    assert!(b.take_freed().contains("p"));
    assert!(b.could_use(&v4("newcomer"), "p"));
    assert_eq!(ok_ips(&mut b, &v4("newcomer")), ips(&["10.0.0.2"]));
}

//! Every manifest under `examples/` parses into typed objects, and its IPAddressPools /
//! L2Advertisements validate with zero errors (the same `validate()` the controller uses).

use std::path::{Path, PathBuf};

use ferrolb_core::config::manifest::{parse_manifests, Object};
use ferrolb_core::config::{validate, Validated};
use ferrolb_core::crd::{IPAddressPool, L2Advertisement};
use k8s_openapi::api::core::v1::Service;

fn examples_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[derive(Default)]
struct Parsed {
    pools: Vec<IPAddressPool>,
    ads: Vec<L2Advertisement>,
    services: Vec<Service>,
}

/// Parses a file; panics naming file, document and reason on anything unreadable or
/// of a kind the examples should not contain.
fn parse(path: &Path) -> Parsed {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path
        .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .unwrap()
        .display();
    let mut out = Parsed::default();
    let docs = parse_manifests(&text);
    assert!(!docs.is_empty(), "{name}: no documents");
    for (loc, obj) in docs {
        match obj {
            Ok(Object::Pool(p)) => out.pools.push(*p),
            Ok(Object::Ad(a)) => out.ads.push(*a),
            Ok(Object::Other {
                api_version,
                kind,
                value,
                ..
            }) => match (api_version.as_str(), kind.as_str()) {
                ("v1", "Service") => out.services.push(
                    serde_norway::from_value(value)
                        .unwrap_or_else(|e| panic!("{name} {loc}: Service: {e}")),
                ),
                _ => panic!("{name} {loc}: unexpected {api_version} {kind}"),
            },
            Err(e) => panic!("{name} {loc}: {e}"),
        }
    }
    out
}

fn assert_valid(what: &str, v: &Validated) {
    let errors: Vec<String> = v.errors.iter().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}:\n{}", errors.join("\n"));
}

#[test]
fn every_example_parses_and_validates() {
    let files = yaml_files(&examples_dir());
    assert!(files.len() >= 10, "examples missing: {files:?}");
    for f in &files {
        let p = parse(f);
        let v = validate(&p.pools, &p.ads);
        assert_valid(&f.display().to_string(), &v);
        assert_eq!(v.config.pools.len(), p.pools.len());
        assert_eq!(v.config.l2_advertisements.len(), p.ads.len());
        for s in &p.services {
            let spec = s.spec.as_ref().expect("Service has a spec");
            assert_eq!(
                spec.type_.as_deref(),
                Some("LoadBalancer"),
                "{}",
                f.display()
            );
        }
    }
}

#[test]
fn files_with_pools_and_ads_have_no_warnings() {
    for f in yaml_files(&examples_dir()) {
        let p = parse(&f);
        if p.pools.is_empty() || p.ads.is_empty() {
            continue;
        }
        let v = validate(&p.pools, &p.ads);
        let w: Vec<String> = v.warnings.iter().map(|w| w.to_string()).collect();
        assert!(w.is_empty(), "{}:\n{}", f.display(), w.join("\n"));
    }
}

#[test]
fn quick_start_pair_validates_together_without_warnings() {
    let a = parse(&examples_dir().join("ipaddresspool.yaml"));
    let b = parse(&examples_dir().join("l2advertisement.yaml"));
    let v = validate(&a.pools, &b.ads);
    assert_valid("quick start", &v);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(v.config.pools["default"].capacity().ipv4, 21);
}

#[test]
fn metallb_reference_examples_validate_together() {
    let mut pools = Vec::new();
    let mut ads = Vec::new();
    for f in yaml_files(&examples_dir().join("metallb-reference")) {
        let p = parse(&f);
        pools.extend(p.pools);
        ads.extend(p.ads);
    }
    let v = validate(&pools, &ads);
    assert_valid("metallb-reference", &v);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let first = &v.config.pools["first-pool"];
    assert!(first.has_ipv4() && first.has_ipv6(), "dual-stack pool");
    assert_eq!(first.allocation.as_ref().unwrap().priority, 50);
    let names: Vec<_> = v
        .config
        .l2_advertisements
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["empty", "example"]);
    assert_eq!(
        v.config.l2_advertisements[1].preferred_node_selectors[0].0,
        100
    );
}

#[test]
fn seed_walkthrough_gives_the_article_addresses() {
    let p = parse(&examples_dir().join("seed-walkthrough.yaml"));
    let v = validate(&p.pools, &p.ads);
    assert_valid("seed-walkthrough", &v);
    let pool = &v.config.pools["default"];
    assert_eq!(pool.capacity().ipv4, 21);
    assert!(pool.contains("200.0.0.101".parse().unwrap()));
    assert!(pool.contains("200.0.0.100".parse().unwrap()));
    assert!(pool.contains("200.0.0.120".parse().unwrap()));
    assert!(!pool.contains("200.0.0.99".parse().unwrap()));
    assert!(!pool.contains("200.0.0.121".parse().unwrap()));
    assert!(v.config.l2_advertisements[0].selects_pool(pool));
    assert_eq!(p.services.len(), 1);
}

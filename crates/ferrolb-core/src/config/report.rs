//! The report of `ferrolb validate`: manifests checked offline with the controller's own
//! [`validate`](super::validate). [`check_sources`] is pure: the command reads the files and
//! prints what it returns.

use std::fmt::Write as _;

use super::manifest::{parse_manifests, Location, Object};
use super::validate;
use crate::crd::{IPAddressPool, L2Advertisement};

/// The outcome of [`check_sources`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Human-readable report, one line per finding, then a summary line.
    pub text: String,
    /// Number of errors (unreadable documents and validation errors).
    pub errors: usize,
}

/// Validates the objects of every `(source name, text)` together and renders a report.
pub fn check_sources(sources: &[(String, String)]) -> Report {
    let mut pools: Vec<IPAddressPool> = Vec::new();
    let mut ads: Vec<L2Advertisement> = Vec::new();
    let mut pool_at: Vec<(String, Location)> = Vec::new();
    let mut ad_at: Vec<(String, Location)> = Vec::new();
    let mut text = String::new();
    let mut errors = 0;

    for (source, content) in sources {
        for (loc, obj) in parse_manifests(content) {
            match obj {
                Ok(Object::Pool(p)) => {
                    pools.push(*p);
                    pool_at.push((source.clone(), loc));
                }
                Ok(Object::Ad(a)) => {
                    ads.push(*a);
                    ad_at.push((source.clone(), loc));
                }
                Ok(Object::Other { kind, name, .. }) => {
                    let _ = writeln!(
                        text,
                        "note: {source} {loc}: skipped {} {name:?} (only IPAddressPool and L2Advertisement are checked)",
                        if kind.is_empty() { "object without kind" } else { &kind }
                    );
                }
                Err(e) => {
                    errors += 1;
                    let _ = writeln!(text, "error: {source} {loc}: {e}");
                }
            }
        }
    }

    let v = validate(&pools, &ads);
    let at = |kind: super::ObjectKind, index: usize| -> String {
        let list = match kind {
            super::ObjectKind::IPAddressPool => &pool_at,
            super::ObjectKind::L2Advertisement => &ad_at,
        };
        list.get(index)
            .map(|(s, l)| format!("{s} {l}"))
            .unwrap_or_default()
    };
    for e in &v.errors {
        errors += 1;
        let _ = writeln!(text, "error: {}: {e}", at(e.kind, e.index));
    }
    for w in &v.warnings {
        let _ = writeln!(text, "warning: {}: {w}", at(w.kind, w.index));
    }

    if errors == 0 {
        let _ = writeln!(
            text,
            "ok: {} IPAddressPool(s), {} L2Advertisement(s) valid",
            v.config.pools.len(),
            v.config.l2_advertisements.len()
        );
        for p in v.config.pools.values() {
            let c = p.capacity();
            let _ = writeln!(
                text,
                "  IPAddressPool {:?}: {} prefix(es), {} IPv4 + {} IPv6 address(es){}",
                p.name,
                p.cidrs.len(),
                c.ipv4,
                if c.ipv6 == u128::MAX {
                    "2^128".to_string()
                } else {
                    c.ipv6.to_string()
                },
                if p.auto_assign {
                    ""
                } else {
                    ", autoAssign off"
                }
            );
        }
    } else {
        let _ = writeln!(
            text,
            "FAILED: {errors} error(s); {} of {} IPAddressPool(s) and {} of {} L2Advertisement(s) valid",
            v.config.pools.len(),
            pools.len(),
            v.config.l2_advertisements.len(),
            ads.len()
        );
    }
    Report { text, errors }
}

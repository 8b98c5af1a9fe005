//! `ferrolb validate -f FILE...`: offline check of IPAddressPool / L2Advertisement
//! manifests with the controller's own [`validate`](super::validate). The reading of
//! files is the only I/O; [`check_sources`] is pure and renders the report.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;

use super::manifest::{parse_manifests, Location, Object};
use super::validate;
use crate::crd::{IPAddressPool, L2Advertisement};

/// Arguments of `ferrolb validate`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Every IPAddressPool and L2Advertisement found in the files is validated together, exactly
as the controller validates the cluster's objects: address syntax, overlaps between and
within pools, duplicate names, selectors, weights. Other kinds (Services, Namespaces, ...)
are skipped with a note.

Exit status: 0 when everything is valid, 1 when any error was found.

Examples:
  ferrolb validate -f examples/ipaddresspool.yaml -f examples/l2advertisement.yaml
  kubectl get ipaddresspools,l2advertisements -n metallb-system -o yaml | ferrolb validate -f -")]
pub struct ValidateArgs {
    /// Manifest files (YAML, several documents per file allowed; `-` reads stdin).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

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

/// Runs `ferrolb validate`; returns the process exit code (0 valid, 1 errors).
pub fn run_validate(args: ValidateArgs) -> anyhow::Result<i32> {
    let mut sources = Vec::new();
    let mut read_errors = String::new();
    for f in &args.files {
        let (name, content) = if f.as_os_str() == "-" {
            let mut s = String::new();
            let r = std::io::stdin().read_to_string(&mut s).map(|_| s);
            ("<stdin>".to_string(), r)
        } else {
            (f.display().to_string(), std::fs::read_to_string(f))
        };
        match content {
            Ok(c) => sources.push((name, c)),
            Err(e) => {
                let _ = writeln!(read_errors, "error: {name}: cannot read: {e}");
            }
        }
    }
    let report = check_sources(&sources);
    let mut out = std::io::stdout().lock();
    out.write_all(read_errors.as_bytes())?;
    out.write_all(report.text.as_bytes())?;
    out.flush()?;
    Ok(if report.errors > 0 || !read_errors.is_empty() {
        1
    } else {
        0
    })
}

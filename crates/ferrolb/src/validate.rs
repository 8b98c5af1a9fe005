//! `ferrolb validate -f FILE...`: offline check of IPAddressPool / L2Advertisement manifests
//! with the controller's own validation. Reading the files is this module's only job; the
//! checking and the report are [`check_sources`] in the pure core.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;

use crate::config::check_sources;

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

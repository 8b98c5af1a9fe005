use clap::Parser;
use ferrolb::cli::{Cli, Command};

/// The process's allocator: jemalloc, with [`malloc_conf`]'s settings.
///
/// glibc's malloc kept freed memory in the holes between long-lived blocks: a speaker at
/// 10 000 VIPs held ≈ 10 MiB more heap than it used, and `malloc_trim` returns only whole free
/// pages. jemalloc keeps blocks of one size class together and gives back each page that
/// empties (docs/BENCHMARKS.md, "the allocator").
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (before `main`):
/// - `narenas:1`: one arena for every thread. The speaker's threads allocate little at a
///   time and rarely together; more arenas each keep their own partly used pages.
/// - `tcache:false`: no per-thread cache of freed blocks (blocks held for reuse that no
///   other thread can take).
/// - `dirty_decay_ms:0`, `muzzy_decay_ms:0`: a page that empties goes back to the OS at once
///   instead of over the next seconds, so what a process holds at rest is what it uses.
#[cfg(target_os = "linux")]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = ferrolb::runtime::MALLOC_CONF;

fn main() {
    // One process-wide TLS crypto provider, chosen explicitly: when several rustls backends
    // are compiled in (as in test builds), rustls cannot pick one by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferrolb: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Crds => {
            print!("{}", ferrolb::crd::all_crds_yaml()?);
            Ok(0)
        }
        Command::Validate(args) => ferrolb::validate::run_validate(args),
        #[cfg(feature = "lab")]
        Command::Lab(args) => {
            ferrolb::telemetry::init_logging(&cli.log)?;
            // The lab owns its runtimes (one per namespace it talks from).
            ferrolb_lab::run(args)
        }
        command => {
            ferrolb::telemetry::init_logging(&cli.log)?;
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            // The speaker runs on every node: two workers (a long pass never delays its Lease
            // renewals and heartbeats), not one per core.
            if matches!(command, Command::Speaker(_)) {
                rt.worker_threads(2);
            }
            let rt = rt.enable_all().build()?;
            rt.block_on(async move {
                match command {
                    Command::Controller(a) => ferrolb::controller::run(a).await.map(|_| 0),
                    Command::Speaker(a) => ferrolb::speaker::run(a).await.map(|_| 0),
                    Command::Explain(a) => ferrolb::explain::run(a).await,
                    _ => unreachable!("handled above"),
                }
            })
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The binary allocates through jemalloc, started with [`super::malloc_conf`].
    #[test]
    fn the_binary_allocates_through_jemalloc_with_its_settings() {
        use tikv_jemalloc_ctl::{epoch, opt, raw, stats};
        assert_eq!(opt::narenas::read().unwrap(), 1);
        assert!(!opt::tcache::read().unwrap());
        // SAFETY: both options are `ssize_t` in jemalloc.
        let decay = |name: &[u8]| unsafe { raw::read::<isize>(name).unwrap() };
        assert_eq!(decay(b"opt.dirty_decay_ms\0"), 0);
        assert_eq!(decay(b"opt.muzzy_decay_ms\0"), 0);
        // what this thread allocates is counted by jemalloc
        epoch::advance().unwrap();
        let before = stats::allocated::read().unwrap();
        let block = vec![1u8; 8 << 20];
        epoch::advance().unwrap();
        let during = stats::allocated::read().unwrap();
        assert!(during >= before + (8 << 20), "{before} → {during}");
        drop(block);
    }
}

use clap::Parser;
use ferrolb::cli::{Cli, Command};

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
            // renewals and heartbeats), not one per core, and one allocator arena for all.
            if matches!(command, Command::Speaker(_)) {
                rt.worker_threads(2);
                ferrolb::runtime::use_one_malloc_arena();
                ferrolb::runtime::map_large_allocations_apart(64 << 10);
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

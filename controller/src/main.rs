//! `portico`: the Kubernetes ingress controller binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use portico_controller::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

// mimalloc: measurably fewer cycles per proxied request than glibc malloc
// in the load bench, where allocation showed up as ~5% of the proxy core.
// Called through `portico-alloc`, which asks for plain blocks where they
// are aligned enough (the `mimalloc` crate asks for aligned ones always).
#[global_allocator]
static GLOBAL: portico_alloc::Mimalloc = portico_alloc::Mimalloc;

/// sysexits' EX_USAGE: bad static configuration.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // Before the runtime's threads start: fewer resident pages for the
    // same heap (see `no_huge_pages`). An operator who sets mimalloc's own
    // switch, `MIMALLOC_ALLOW_THP`, decides it instead.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        portico_alloc::no_huge_pages();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("portico {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Crds => {
            print!("{}", portico_crds::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Validate(args) => {
            let (report, code) = portico_controller::validate::validate(&args);
            print!("{report}");
            ExitCode::from(code)
        }
        Command::Report(args) => {
            init_tracing(LogFormat::Text);
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(portico_controller::report::run(&args)) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portico report: {e:#}");
                    ExitCode::from(portico_controller::validate::EXIT_UNREADABLE)
                }
            }
        }
        Command::Webhook(args) => {
            init_tracing(LogFormat::Json);
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(portico_controller::webhook::serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "portico webhook cannot start");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Run(args) => {
            init_tracing(args.log_format);
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(portico_controller::run::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "portico cannot start");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
    }
}

/// The multi-threaded runtime `run` and `webhook` serve on; `None` (said
/// on stderr) when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("portico: cannot start the runtime: {e}");
            None
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PORTICO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,kube_lease_manager=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr must not take requests down: by default the fmt
        // layer reports its own write errors with `eprintln!`, which panics
        // on a closed stderr, inside whatever task was logging.
        .log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

//! `wactl`: parse arguments, run the subcommand, map the outcome to an exit
//! code (0 ok, 1 failure, 64 bad arguments).

use std::process::ExitCode;

use clap::Parser;
use wactl::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    common::rlimit::raise_open_files("wactl", None);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wactl: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(wactl::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wactl: {e:#}");
            ExitCode::from(1)
        }
    }
}

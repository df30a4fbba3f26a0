//! `wa-register`: parse arguments, load the config, bind, serve.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wa_register::{Config, Register};

/// The wa registration service: phone number + one-time code signup over
/// HTTPS, registration-lock PINs, and the credentials wa-chat and wa-media
/// verify. Accounts live at their users' homes in wa-store (docs/REGISTER.md).
///
/// Prints `READY wa-register http=ADDR` on stdout (ADDR is the HTTPS
/// listener) and notifies systemd once the listener is bound. SIGTERM or
/// SIGINT: stop accepting, finish requests in flight up to the grace period,
/// exit 0.
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime failure.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML). See docs/REGISTER.md for every key.
    #[arg(
        long,
        short,
        env = "WA_REGISTER_CONFIG",
        default_value = "/etc/wa/wa-register.toml"
    )]
    config: PathBuf,
    /// Check the configuration and the files it names, then exit (0 if usable).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match Config::load(&args.config)
        .and_then(|c| c.validate().map(|()| c))
        .and_then(|c| c.check_files().map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wa-register: {}: {e}", args.config.display());
            return ExitCode::from(64);
        }
    };
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wa-register: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wa-register: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen.https;
    let register = Register::open(config).context("cannot start wa-register")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on listen.https = {addr}"))?;
    let bound = listener.local_addr().context("listener address")?;
    let shutdown = CancellationToken::new();
    spawn_signals(shutdown.clone())?;
    let run = tokio::spawn(register.serve(listener, shutdown));
    println!("READY wa-register http={bound}");
    let _ = std::io::stdout().flush();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    run.await.context("server task")??;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    Ok(())
}

fn spawn_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
    Ok(())
}

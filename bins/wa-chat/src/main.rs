//! `wa-chat`: parse arguments, load the config, bind, serve.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wa_chat::{Chat, Config, Listeners};

/// The wa edge: holds client connections (TLS 1.3 over TCP and QUIC, ALPN
/// `wa/1`), authenticates them by token and relays their traffic to the homes
/// of the users involved over the internal link.
///
/// Prints `READY wa-chat tcp=ADDR quic=ADDR` on stdout (`-` for a disabled
/// listener) and notifies systemd once the listeners are bound. SIGTERM or
/// SIGINT: stop accepting, tell every client Goodbye, wait for the sessions up
/// to the grace period, exit 0.
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime failure.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML). See docs/OPERATIONS.md for every key.
    #[arg(
        long,
        short,
        env = "WA_CHAT_CONFIG",
        default_value = "/etc/wa/wa-chat.toml"
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
            eprintln!("wa-chat: {}: {e}", args.config.display());
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
            eprintln!("wa-chat: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wa-chat: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let chat = Chat::open(config.clone()).context("cannot load the configured files")?;
    let tcp = match config.listen.tcp {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on listen.tcp = {addr}"))?,
        ),
        None => None,
    };
    let quic = match config.listen.quic {
        Some(addr) => Some(
            std::net::UdpSocket::bind(addr)
                .with_context(|| format!("cannot bind listen.quic = {addr}"))?,
        ),
        None => None,
    };
    let show = |a: Option<std::io::Result<std::net::SocketAddr>>| -> anyhow::Result<String> {
        Ok(match a {
            Some(a) => a.context("listener address")?.to_string(),
            None => "-".into(),
        })
    };
    let tcp_addr = show(tcp.as_ref().map(|l| l.local_addr()))?;
    let quic_addr = show(quic.as_ref().map(|s| s.local_addr()))?;
    let shutdown = CancellationToken::new();
    spawn_signals(shutdown.clone())?;
    let run = tokio::spawn(chat.serve(Listeners { tcp, quic }, shutdown));
    println!("READY wa-chat tcp={tcp_addr} quic={quic_addr}");
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

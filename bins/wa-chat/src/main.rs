//! `wa-chat`: parse arguments, load the config, bind, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::service;
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
    let args = match service::args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    service::init_logging();
    let config = match Config::load(&args.config)
        .and_then(|c| c.validate().map(|()| c))
        .and_then(|c| c.check_files().map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wa-chat: {}: {e}", args.config.display());
            return ExitCode::from(service::EXIT_USAGE);
        }
    };
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    common::rlimit::raise_open_files("wa-chat", Some(config.limits.max_connections as u64));
    let rt = match service::runtime("wa-chat") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    service::exit("wa-chat", rt.block_on(serve(config)))
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
    service::on_signals(shutdown.clone()).context("cannot handle SIGTERM and SIGINT")?;
    let reload = std::sync::Arc::new(tokio::sync::Notify::new());
    service::on_hangup(std::sync::Arc::clone(&reload)).context("cannot handle SIGHUP")?;
    let run = tokio::spawn(chat.serve_reloading(Listeners { tcp, quic }, shutdown, reload));
    service::ready(&format!("READY wa-chat tcp={tcp_addr} quic={quic_addr}"));
    run.await.context("server task")??;
    service::stopping();
    Ok(())
}

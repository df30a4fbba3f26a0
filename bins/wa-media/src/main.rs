//! `wa-media`: parse arguments, load the config, bind, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::service;
use tokio_util::sync::CancellationToken;
use wa_media::{Config, Media};

/// The wa media node: HTTPS upload and download of media blobs, stored once
/// per content (SHA-256), authenticated with the same tokens as wa-chat, and
/// deleted when they expire (docs/MEDIA.md).
///
/// Prints `READY wa-media http=ADDR` on stdout (ADDR is the HTTPS listener)
/// and notifies systemd once the listener is bound. SIGTERM or SIGINT: stop
/// accepting, finish requests in flight up to the grace period, exit 0.
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime failure.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML). See docs/MEDIA.md for every key.
    #[arg(
        long,
        short,
        env = "WA_MEDIA_CONFIG",
        default_value = "/etc/wa/wa-media.toml"
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
            eprintln!("wa-media: {}: {e}", args.config.display());
            return ExitCode::from(service::EXIT_USAGE);
        }
    };
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    common::rlimit::raise_open_files("wa-media", None);
    let rt = match service::runtime("wa-media") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    service::exit("wa-media", rt.block_on(serve(config)))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen.https;
    let media = Media::open(config).context("cannot open the media node")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on listen.https = {addr}"))?;
    let bound = listener.local_addr().context("listener address")?;
    let shutdown = CancellationToken::new();
    service::on_signals(shutdown.clone()).context("cannot handle SIGTERM and SIGINT")?;
    let run = tokio::spawn(media.serve(listener, shutdown));
    service::ready(&format!("READY wa-media http={bound}"));
    run.await.context("server task")??;
    service::stopping();
    Ok(())
}

//! `wa-register`: parse arguments, load the config, bind, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::service;
use tokio_util::sync::CancellationToken;
use wa_register::{Config, Register};

/// The wa registration service: phone number + one-time code signup over
/// HTTPS, registration-lock PINs, and the credentials wa-chat and wa-media
/// verify. Accounts live at their users' homes in wa-store (docs/REGISTER.md).
///
/// Prints `READY wa-register http=ADDR [admin=ADDR]` on stdout (the HTTPS
/// listener, and the admin listener when `admin.listen` is set) and notifies systemd once the listener is bound. SIGTERM or
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
            eprintln!("wa-register: {}: {e}", args.config.display());
            return ExitCode::from(service::EXIT_USAGE);
        }
    };
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    common::rlimit::raise_open_files("wa-register", None);
    let rt = match service::runtime("wa-register") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    service::exit("wa-register", rt.block_on(serve(config)))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen.https;
    let register = Register::open(config).context("cannot start wa-register")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on listen.https = {addr}"))?;
    let bound = listener.local_addr().context("listener address")?;
    let admin = register.bind_admin().await?;
    let mut ready = format!("READY wa-register http={bound}");
    if let Some(a) = &admin {
        let a = a.local_addr().context("admin listener address")?;
        ready += &format!(" admin={a}");
    }
    let shutdown = CancellationToken::new();
    service::on_signals(shutdown.clone()).context("cannot handle SIGTERM and SIGINT")?;
    let reload = std::sync::Arc::new(tokio::sync::Notify::new());
    service::on_hangup(std::sync::Arc::clone(&reload)).context("cannot handle SIGHUP")?;
    let reload_map = register.map_reloader();
    tokio::spawn(async move {
        loop {
            reload.notified().await;
            reload_map();
        }
    });
    let run = tokio::spawn(register.serve(listener, admin, shutdown));
    service::ready(&ready);
    run.await.context("server task")??;
    service::stopping();
    Ok(())
}

//! `wa-register`: arguments, then the service chassis (`common::service`):
//! config, logs, signals, admin listener, readiness.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::sections::{AdminConfig, LogConfig};
use common::service::{self, BoxError, Chassis, Service};
use wa_register::{Config, Register};

/// The wa registration service: phone number + one-time code signup over
/// HTTPS, registration-lock PINs, and the credentials wa-chat and wa-media
/// verify. Accounts live at their users' homes in wa-store (docs/REGISTER.md).
///
/// Prints `READY wa-register http=ADDR admin=ADDR` on stdout (the HTTPS
/// listener and the admin listener) and notifies systemd once both are
/// bound. SIGTERM or SIGINT: /readyz turns not-ready, stop accepting, finish
/// requests in flight up to the grace period, exit 0. SIGHUP: read the
/// cluster map, the TLS certificate, the log level and the admin token
/// again; never exits.
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime failure.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML). See wa-register.toml(5) and docs/REGISTER.md.
    #[arg(
        long,
        short,
        env = "WA_REGISTER_CONFIG",
        default_value = "/etc/wa/wa-register.toml"
    )]
    config: PathBuf,
    #[command(flatten)]
    flags: service::Flags,
}

struct WaRegister;

impl Service for WaRegister {
    const NAME: &'static str = "wa-register";
    type Config = Config;

    fn load(path: &Path) -> Result<Config, BoxError> {
        let c = Config::load(path)?;
        c.validate()?;
        c.check_files()?;
        Ok(c)
    }
    fn node_name(c: &Config) -> String {
        c.name.clone()
    }
    fn admin(c: &Config) -> &AdminConfig {
        &c.admin
    }
    fn log(c: &Config) -> &LogConfig {
        &c.log
    }

    async fn serve(config: Config, chassis: Chassis) -> Result<(), BoxError> {
        Ok(serve(config, chassis).await?)
    }
}

async fn serve(config: Config, chassis: Chassis) -> anyhow::Result<()> {
    let addr = config.listen.https;
    let register = Register::open(config).context("cannot start wa-register")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on listen.https = {addr}"))?;
    let bound = listener.local_addr().context("listener address")?;
    register.install_admin(&chassis.admin);
    chassis.reload.on(register.map_reloader());
    let cert = register.cert();
    chassis.reload.on(move || {
        if let Err(e) = cert.reload() {
            tracing::warn!(error = %e, "TLS certificate kept");
        }
    });
    let run = tokio::spawn(register.serve(listener, chassis.shutdown.clone()));
    chassis.ready(&format!("READY wa-register http={bound}"));
    run.await.context("server task")??;
    Ok(())
}

fn main() -> ExitCode {
    match service::args::<Args>() {
        Ok(a) => service::main::<WaRegister>(&a.config, &a.flags),
        Err(code) => code,
    }
}

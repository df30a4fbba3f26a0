//! `wa-register`: arguments, then the service chassis (`common::service`):
//! config, logs, signals, admin listener, readiness.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use common::sections::{AdminConfig, LogConfig};
use common::service::{self, BoxError, Chassis, Service};
use wa_register::cli::Args;
use wa_register::{Config, Register};

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
    // Every connection and file needs a descriptor: the soft limit goes up
    // to the hard one (with a warning if the configured limit still does
    // not fit).
    common::rlimit::raise_open_files("wa-register", None);
    let addr = config.listen.https;
    let register = Register::start(config, &chassis.shutdown)
        .await
        .context("cannot start wa-register")?;
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

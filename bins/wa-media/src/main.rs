//! `wa-media`: arguments, then the service chassis (`common::service`):
//! config, logs, signals, admin listener, readiness.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use common::sections::{AdminConfig, LogConfig};
use common::service::{self, BoxError, Chassis, Service};
use wa_media::cli::Args;
use wa_media::{Config, Media};

struct WaMedia;

impl Service for WaMedia {
    const NAME: &'static str = "wa-media";
    type Config = Config;

    fn load(path: &Path) -> Result<Config, BoxError> {
        let c = Config::load(path)?;
        c.validate()?;
        c.check_files()?;
        Ok(c)
    }
    fn node_name(c: &Config) -> String {
        c.node.clone()
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
    common::rlimit::raise_open_files("wa-media", None);
    let addr = config.listen.https;
    let media = Media::open(config).context("cannot open the media node")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on listen.https = {addr}"))?;
    let bound = listener.local_addr().context("listener address")?;
    media.install_admin(&chassis.admin);
    let cert = media.cert();
    chassis.reload.on(move || {
        if let Err(e) = cert.reload() {
            tracing::warn!(error = %e, "TLS certificate kept");
        }
    });
    let run = tokio::spawn(media.serve(listener, chassis.shutdown.clone()));
    chassis.ready(&format!("READY wa-media http={bound}"));
    run.await.context("server task")??;
    Ok(())
}

fn main() -> ExitCode {
    match service::args::<Args>() {
        Ok(a) => service::main::<WaMedia>(&a.config, &a.flags),
        Err(code) => code,
    }
}

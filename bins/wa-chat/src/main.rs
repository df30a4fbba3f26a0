//! `wa-chat`: arguments, then the service chassis (`common::service`):
//! config, logs, signals, admin listener, readiness.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use common::sections::{AdminConfig, LogConfig};
use common::service::{self, BoxError, Chassis, Service};
use wa_chat::cli::Args;
use wa_chat::{Chat, Config, Listeners};

struct WaChat;

impl Service for WaChat {
    const NAME: &'static str = "wa-chat";
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
    common::rlimit::raise_open_files("wa-chat", Some(config.limits.max_connections as u64));
    // With etcd, its cluster map is the one: written to the local file
    // before the edge reads it, and followed from then on.
    let map = chassis.reload.notify();
    common::coordination::follow_from_start(
        &config.coordination,
        &config.cluster.map,
        std::sync::Arc::clone(&map),
        chassis.shutdown.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot take the cluster map from etcd at {:?}",
            config.coordination.etcd
        )
    })?;
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
        Some(addr) => wa_chat::udp::bind(addr, config.quic.endpoints())
            .with_context(|| format!("cannot bind listen.quic = {addr}"))?,
        None => Vec::new(),
    };
    let show = |a: Option<std::io::Result<std::net::SocketAddr>>| -> anyhow::Result<String> {
        Ok(match a {
            Some(a) => a.context("listener address")?.to_string(),
            None => "-".into(),
        })
    };
    let tcp_addr = show(tcp.as_ref().map(|l| l.local_addr()))?;
    let quic_addr = show(quic.first().map(|s| s.local_addr()))?;
    chat.install_admin(&chassis.admin);
    let cert = chat.cert();
    chassis.reload.on(move || {
        if let Err(e) = cert.reload() {
            tracing::warn!(error = %e, "TLS certificate kept");
        }
    });
    let run =
        tokio::spawn(chat.serve_reloading(Listeners { tcp, quic }, chassis.shutdown.clone(), map));
    chassis.ready(&format!("READY wa-chat tcp={tcp_addr} quic={quic_addr}"));
    run.await.context("server task")??;
    Ok(())
}

fn main() -> ExitCode {
    match service::args::<Args>() {
        Ok(a) => service::main::<WaChat>(&a.config, &a.flags),
        Err(code) => code,
    }
}

//! `wa-store`: arguments, then the service chassis (`common::service`):
//! config, logs, signals, admin listener, readiness.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use common::sections::{AdminConfig, LogConfig};
use common::service::{self, BoxError, Chassis, Service};
use wa_store::cli::Args;
use wa_store::{Config, Store};

/// mimalloc rather than glibc's malloc: the store allocates on one thread
/// and frees on another all the time (frames, envelopes, cache entries), and
/// glibc's per-thread arenas answered that with constant heap growing and
/// trimming (thousands of `mprotect` calls a second) and slow
/// consolidation; docs/BENCHMARKS.md has the measurement.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of a primary the cluster map demoted to secondary
/// (EX_TEMPFAIL): start it again and it follows the new primary.
const EXIT_DEMOTED: u8 = 75;

struct WaStore;

impl Service for WaStore {
    const NAME: &'static str = "wa-store";
    type Config = Config;

    fn load(path: &Path) -> Result<Config, BoxError> {
        let c = Config::load(path)?;
        c.validate()?;
        c.check_files()?;
        // A data directory another engine or format wrote is a
        // configuration mistake, found before anything is opened or bound.
        let engine = wa_store::storage::format::resolve(&c.data_dir, c.engine)?;
        wa_store::storage::format::check(&c.data_dir, engine)?;
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
        match serve(config, chassis).await {
            Ok(()) => Ok(()),
            Err(e) => match e.downcast::<wa_store::StoreError>() {
                Ok(demoted @ wa_store::StoreError::Demoted { .. }) => {
                    Err(Box::new(service::Exit {
                        code: EXIT_DEMOTED,
                        message: demoted.to_string(),
                    }))
                }
                Ok(other) => Err(other.into()),
                Err(e) => Err(e.into()),
            },
        }
    }
}

async fn serve(config: Config, chassis: Chassis) -> anyhow::Result<()> {
    // Every connection and file needs a descriptor: the soft limit goes up
    // to the hard one (with a warning if the configured limit still does
    // not fit).
    common::rlimit::raise_open_files("wa-store", None);
    let listen = config.link.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on link.listen = {listen}"))?;
    let addr = listener.local_addr().context("link listener address")?;
    let data_dir = config.data_dir.clone();
    let coordination = wa_store::failover::prepare(&config)
        .await
        .with_context(|| format!("cannot use etcd at {:?}", config.coordination.etcd))?;
    let store = tokio::task::spawn_blocking(move || Store::open(config).map_err(Box::new))
        .await
        .context("open task")?
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?
        .with_coordination(coordination);
    store.install_admin(&chassis.admin);
    let cert = store.cert();
    chassis.reload.on(move || {
        if let Err(e) = cert.reload() {
            tracing::warn!(error = %e, "link certificate kept");
        }
    });
    let map = chassis.reload.notify();
    chassis.ready(&format!("READY wa-store link={addr}"));
    store
        .serve_reloading(listener, chassis.shutdown.clone(), map)
        .await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match service::args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Err(e) = wa_store::disable_transparent_huge_pages() {
        eprintln!(
            "wa-store: cannot turn transparent huge pages off ({e}); appends may stall on page faults"
        );
    }
    service::main::<WaStore>(&args.config, &args.flags)
}

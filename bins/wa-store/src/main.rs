//! `wa-store`: parse arguments, load the config, bind, open, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::service;
use tokio_util::sync::CancellationToken;
use wa_store::{Config, Store};

/// mimalloc rather than glibc's malloc: the store allocates on one thread
/// and frees on another all the time (frames, envelopes, cache entries), and
/// glibc's per-thread arenas answered that with constant heap growing and
/// trimming (thousands of `mprotect` calls a second) and slow
/// consolidation; docs/BENCHMARKS.md has the measurement.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The home of wa users: mailboxes, receipts, last seen.
///
/// Edges (wa-chat) connect over the internal link (TLS, cluster secret).
/// Prints `READY wa-store link=ADDR` on stdout (and notifies systemd) once the
/// database is open and the link listener is bound. SIGTERM or SIGINT: stop
/// accepting, answer in-flight appends after their flush, flush, exit 0.
/// SIGHUP: read the cluster map again (its epoch must rise with every change).
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime
/// failure (among them a panic in a home shard: start it again, and the
/// journal is replayed).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML). See docs/OPERATIONS.md for every key.
    #[arg(
        long,
        short,
        env = "WA_STORE_CONFIG",
        default_value = "/etc/wa/wa-store.toml"
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
    if let Err(e) = wa_store::disable_transparent_huge_pages() {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off for wa-store; appends may stall on page faults");
    }
    let config = match Config::load(&args.config)
        .and_then(|c| c.validate().map(|()| c))
        .and_then(|c| c.check_files().map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wa-store: {e}");
            return ExitCode::from(service::EXIT_USAGE);
        }
    };
    // The data directory's marker, read only: a directory another engine or
    // format wrote is a configuration mistake (engine or data_dir), found
    // before anything is opened or bound.
    if let Err(e) = wa_store::storage::format::check(&config.data_dir, config.engine) {
        eprintln!("wa-store: {e}");
        return ExitCode::from(service::EXIT_USAGE);
    }
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    common::rlimit::raise_open_files("wa-store", None);
    let rt = match service::runtime("wa-store") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = rt.block_on(serve(config));
    // A blocking engine call that never returns must not keep the process
    // alive past its grace period (serve already gave up waiting for it).
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    service::exit("wa-store", outcome)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.link.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on link.listen = {listen}"))?;
    let addr = listener.local_addr().context("link listener address")?;
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(config).map_err(Box::new))
        .await
        .context("open task")?
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let shutdown = CancellationToken::new();
    service::on_signals(shutdown.clone()).context("cannot handle SIGTERM and SIGINT")?;
    let reload = std::sync::Arc::new(tokio::sync::Notify::new());
    service::on_hangup(std::sync::Arc::clone(&reload)).context("cannot handle SIGHUP")?;
    service::ready(&format!("READY wa-store link={addr}"));
    store.serve_reloading(listener, shutdown, reload).await?;
    service::stopping();
    Ok(())
}

//! Start and stop, the same for every service binary (wa-store, wa-chat,
//! wa-media, wa-register): arguments with the documented exit codes, logs on
//! standard error, SIGTERM/SIGINT as a cancellation, and the readiness line
//! (`READY <name> ...` on stdout, then `READY=1` to systemd).

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// Exit code for bad arguments or configuration (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Parses the command line. `--help` and `--version` print and end with
/// exit 0; a usage error prints and ends with [`EXIT_USAGE`].
pub fn args<A: clap::Parser>() -> Result<A, ExitCode> {
    A::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// The multi-threaded runtime, or exit 1 naming `name`.
pub fn runtime(name: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("{name}: cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

/// Exit 0 for a clean stop, or 1 with the error (and its causes) on stderr.
pub fn exit<E: Display>(name: &str, outcome: Result<(), E>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT. Call inside the
/// runtime, before announcing readiness.
pub fn on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
    Ok(())
}

/// Notifies `reload` on every SIGHUP (services read their cluster map
/// again; a SIGHUP no longer ends the process). Call inside the runtime,
/// before announcing readiness.
pub fn on_hangup(reload: std::sync::Arc<tokio::sync::Notify>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the cluster map");
            reload.notify_one();
        }
    });
    Ok(())
}

/// Announces readiness: `line` on stdout (flushed: tests and `wactl up` wait
/// for it), then systemd's `READY=1` when run under it.
pub fn ready(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

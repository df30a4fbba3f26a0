//! The chassis every service binary (wa-store, wa-chat, wa-media,
//! wa-register) runs in, so that each `main.rs` is its arguments and one
//! [`Service`] impl:
//!
//! - arguments with the documented exit codes (0 ok, 64 usage or config,
//!   1 runtime) and the shared [`Flags`] (`--check-config`, `--log-format`);
//! - the config loaded with every problem reported at once;
//! - logs shaped for a terminal, journald or a log shipper ([`logging`]);
//! - SIGTERM/SIGINT: `/readyz` turns not-ready, systemd hears STOPPING, the
//!   shutdown token is cancelled and the service drains, exit 0;
//! - SIGHUP: never ends the process; reads the config file again for the log
//!   level and the admin token, then runs the service's reload hooks
//!   (cluster map, TLS certificates) — [`Reload`];
//! - the admin listener ([`crate::admin`]), bound before the service starts;
//! - readiness: the `READY <name> ... admin=ADDR` line on stdout (tests and
//!   `wactl up` wait for it), then `READY=1` and the watchdog for systemd
//!   ([`notify`]).

pub mod logging;
pub mod notify;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, Phase};
use crate::sections::{AdminConfig, LogConfig};
pub use logging::{LogFormat, LogHandle};

/// Exit code for bad arguments or configuration (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Any error a service's start or run ends with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The flags every service takes besides `--config`.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// Check the configuration and the files it names, then exit (0 if usable).
    #[arg(long)]
    pub check_config: bool,
    /// Shape of the log lines on standard error: `auto` is `journal` when
    /// started by systemd (JOURNAL_STREAM set), else `text`; `json` is one
    /// object per line for log shippers.
    #[arg(long, value_enum, default_value = "auto", env = "WA_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// What one service binary plugs into the chassis.
pub trait Service {
    /// The binary's name (`wa-chat`).
    const NAME: &'static str;
    type Config: Send + 'static;

    /// Parses, validates and checks the files of the config at `path`,
    /// reporting every problem at once.
    fn load(path: &Path) -> Result<Self::Config, BoxError>;
    /// The node's name (logs, `wactl status`).
    fn node_name(config: &Self::Config) -> String;
    fn admin(config: &Self::Config) -> &AdminConfig;
    fn log(config: &Self::Config) -> &LogConfig;
    /// Binds, opens and serves until `chassis.shutdown`; calls
    /// [`Chassis::ready`] once it serves.
    fn serve(config: Self::Config, chassis: Chassis) -> impl Future<Output = Result<(), BoxError>>;
}

/// What the chassis hands the service.
pub struct Chassis {
    /// Cancelled on SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// Hooks run on SIGHUP.
    pub reload: Reload,
    /// Metrics, readiness checks, status fields and operations.
    pub admin: Admin,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// The admin Unix socket, if `admin.socket` is set.
    pub admin_socket: Option<PathBuf>,
}

impl Chassis {
    /// Announces readiness: `line` plus ` admin=ADDR` on stdout (flushed),
    /// `/readyz` ready, then `READY=1` and `STATUS=` to systemd.
    pub fn ready(&self, line: &str) {
        match &self.admin_socket {
            Some(p) => println!(
                "{line} admin={} admin_socket={}",
                self.admin_addr,
                p.display()
            ),
            None => println!("{line} admin={}", self.admin_addr),
        }
        let _ = std::io::stdout().flush();
        self.admin.set_phase(Phase::Ready);
        notify::ready(&format!("serving; admin on {}", self.admin_addr));
    }
}

type Hook = Box<dyn Fn() + Send + Sync>;

/// The hooks a SIGHUP runs, in the order they were added.
#[derive(Clone, Default)]
pub struct Reload {
    hooks: Arc<Mutex<Vec<Hook>>>,
}

impl Reload {
    pub fn on(&self, f: impl Fn() + Send + Sync + 'static) {
        self.hooks.lock().expect("reload hooks").push(Box::new(f));
    }

    /// A `Notify` woken on every SIGHUP, for services that reload in a task
    /// of their own.
    pub fn notify(&self) -> Arc<tokio::sync::Notify> {
        let n = Arc::new(tokio::sync::Notify::new());
        let m = Arc::clone(&n);
        self.on(move || m.notify_one());
        n
    }

    fn fire(&self) {
        for h in self.hooks.lock().expect("reload hooks").iter() {
            h();
        }
    }
}

/// The whole life of a service binary: everything after argument parsing.
pub fn main<S: Service>(config_path: &Path, flags: &Flags) -> ExitCode {
    let config = match S::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {}: {e}", S::NAME, config_path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if flags.check_config {
        println!("{}: ok", config_path.display());
        return ExitCode::SUCCESS;
    }
    let log = logging::init(flags.log_format, &S::log(&config).level);
    let rt = match runtime(S::NAME) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = rt.block_on(run::<S>(config, config_path.to_owned(), log));
    // A blocking call that never returns (a wedged disk) must not keep the
    // process alive past its grace period: the service gave up on it.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = &outcome
        && let Some(x) = e.downcast_ref::<Exit>()
    {
        eprintln!("{}: {}", S::NAME, x.message);
        return ExitCode::from(x.code);
    }
    exit(S::NAME, outcome.map_err(Chain))
}

/// An error that ends the process with an exit code of its own rather
/// than 1 (`wa-store`'s 75: demoted to secondary, start it again).
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// An error and its causes, `: `-separated (as anyhow's `{:#}`).
struct Chain(BoxError);

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

async fn run<S: Service>(
    config: S::Config,
    config_path: PathBuf,
    log: LogHandle,
) -> Result<(), BoxError> {
    let admin = Admin::new(S::NAME, S::node_name(&config), env!("CARGO_PKG_VERSION"));
    let shutdown = CancellationToken::new();
    let reload = Reload::default();
    on_signals(shutdown.clone(), admin.clone())?;
    {
        let admin = admin.clone();
        let reload = reload.clone();
        on_hangup(move || {
            notify::reloading();
            match S::load(&config_path) {
                Ok(c) => {
                    if let Err(e) = log.set_level(&S::log(&c).level) {
                        tracing::warn!(error = %e, "log level kept");
                    }
                    if let Err(e) = admin.load_token(S::admin(&c)) {
                        tracing::warn!(error = %e, "admin token kept");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "config not reloaded"),
            }
            reload.fire();
            admin.reloaded();
            notify::ready("reloaded");
        })?;
    }
    let listener = admin.bind(S::admin(&config)).await?;
    let admin_addr = listener.local_addr()?;
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin.clone().serve(listener, admin_stop.clone()));
    let admin_socket = S::admin(&config).socket.clone();
    let socket_task = match &admin_socket {
        Some(path) => {
            let listener = crate::admin::unix::bind(path).await?;
            let bound = crate::admin::unix::Bound {
                listener,
                path: path.clone(),
            };
            Some(tokio::spawn(
                admin.clone().serve_unix(bound, admin_stop.clone()),
            ))
        }
        None => None,
    };
    notify::spawn_watchdog(admin_stop.clone());
    let chassis = Chassis {
        shutdown,
        reload,
        admin,
        admin_addr,
        admin_socket,
    };
    let outcome = S::serve(config, chassis).await;
    notify::stopping("stopped");
    admin_stop.cancel();
    let _ = admin_task.await;
    if let Some(t) = socket_task {
        let _ = t.await;
    }
    outcome
}

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

/// The multi-threaded runtime, or exit 1 naming `name`.
pub fn runtime(name: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("{name}: cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

/// Exit 0 for a clean stop, or 1 with the error (and its causes) on stderr.
pub fn exit<E: std::fmt::Display>(name: &str, outcome: Result<(), E>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// On the first SIGTERM or SIGINT: not ready, STOPPING, cancel `shutdown`.
fn on_signals(shutdown: CancellationToken, admin: Admin) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        admin.set_phase(Phase::Draining);
        notify::stopping("draining");
        shutdown.cancel();
    });
    Ok(())
}

/// Runs `reload` (on a blocking thread: it reads files) on every SIGHUP; a
/// SIGHUP never ends the process.
pub fn on_hangup(reload: impl Fn() + Send + Sync + 'static) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let reload = Arc::new(reload);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let r = Arc::clone(&reload);
            let _ = tokio::task::spawn_blocking(move || r()).await;
        }
    });
    Ok(())
}

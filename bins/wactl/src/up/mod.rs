//! `wactl up`: a whole deployment on this machine, in one directory, in the
//! foreground. Files first (kept when present), then the wa-stores (one per
//! island, `--islands`), the wa-chats (`--edges`), wa-media and wa-register,
//! each awaited until it prints its `READY` line; stops them in the reverse
//! order on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use common::cluster::ClusterMap;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::UpArgs;

mod etcd;
mod files;

pub(crate) use files::chat_file;
use files::{
    Extra, extra_toml, prepare, secondary_file, store_data, store_file, write_media_config,
    write_register_config,
};

/// How long a service may take to print its READY line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service may take to exit after SIGTERM before it is killed
/// (its own grace period in the generated configs is 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) async fn run(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::new()?;
    if args.islands == 0 || args.edges == 0 || args.islands > 64 || args.edges > 64 {
        bail!("--islands and --edges must be between 1 and 64");
    }
    // Mailboxes, account records (with PIN hashes), blobs and codes: every
    // file this deployment and its services create is its owner's only,
    // whatever the umask it was started with (the services inherit this).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(&args.dir.dir)
        .with_context(|| format!("cannot create {}", args.dir.dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // (A directory made by an earlier run under another umask.)
        std::fs::set_permissions(&args.dir.dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod 0700 {}", args.dir.dir.display()))?;
    }
    let dir = std::fs::canonicalize(&args.dir.dir)
        .with_context(|| format!("cannot resolve {}", args.dir.dir.display()))?;
    let port = |base: u16, i: usize| -> anyhow::Result<u16> {
        u16::try_from(usize::from(base) + i).context("a port beyond 65535")
    };
    let links = (0..args.islands)
        .map(|i| Ok(SocketAddr::new(args.host, port(args.link_port, i)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let seconds = (0..args.islands)
        .map(|i| {
            Ok(SocketAddr::new(
                args.host,
                port(args.link_port, args.islands + i)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let seconds = args.secondaries.then_some(seconds.as_slice());
    let chats = (0..args.edges)
        .map(|i| Ok(SocketAddr::new(args.host, port(args.port, i)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let media = SocketAddr::new(args.host, args.media_port);
    let register = SocketAddr::new(args.host, args.register_port);
    let extra = Extra {
        chat: extra_toml(args.chat_toml.as_deref(), "--chat-toml")?,
        store: extra_toml(args.store_toml.as_deref(), "--store-toml")?,
    };
    prepare(&dir, args.host, &links, seconds, &chats, &extra)?;
    let run_dir = dir.join(crate::promote::RUN_DIR);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    write_media_config(&dir, media)?;
    write_register_config(&dir, register)?;
    // (Kept until wactl up returns; killed with it.)
    let _etcd = if args.etcd {
        let e = etcd::LocalEtcd::start(&dir).await?;
        let files: Vec<PathBuf> = (1..=args.islands)
            .flat_map(|i| [store_file(i), secondary_file(i)])
            .chain((1..=args.edges).map(chat_file))
            .chain(["wa-register.toml".to_string()])
            .map(|f| dir.join(f))
            .collect();
        e.add_to(&files)?;
        println!(
            "etcd      ready: {} (log in {}), lease {}: a killed primary's secondary takes over by itself",
            e.url,
            dir.join("etcd.log").display(),
            etcd::LEASE
        );
        Some(e)
    } else {
        None
    };

    // Started in this order, stopped in the reverse one.
    let mut running: Vec<Service> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    // Each started config, in the order of `lines` (and of the node list).
    let mut started: Vec<PathBuf> = Vec::new();
    let n_seconds = if args.secondaries { args.islands } else { 0 };
    let configs = (1..=args.islands)
        .map(|i| ("wa-store", store_file(i)))
        .chain((1..=n_seconds).map(|i| ("wa-store", secondary_file(i))))
        .chain((1..=args.edges).map(|j| ("wa-chat", chat_file(j))))
        .chain([
            ("wa-media", "wa-media.toml".to_string()),
            ("wa-register", "wa-register.toml".to_string()),
        ]);
    for (name, file) in configs {
        let mut service = match Service::spawn(name, &dir.join(&file)) {
            Ok(s) => s,
            Err(e) => return Ok(failed(e, running).await),
        };
        service.record_pid(&run_dir);
        started.push(service.config.clone());
        let line = until_signal(&mut signals, service.ready()).await;
        running.insert(0, service);
        match line {
            None => return Ok(stopped(running).await),
            Some(Err(e)) => return Ok(failed(e, running).await),
            Some(Ok(line)) => lines.push(line),
        }
    }
    let (store_lines, rest) = lines.split_at(args.islands);
    let (_, rest) = rest.split_at(n_seconds);
    let (chat_lines, rest) = rest.split_at(args.edges);
    let [media_line, register_line] = rest else {
        unreachable!("media and register were started")
    };

    // Where every admin listener is, for this terminal and for the
    // operator commands (`wactl status --dir DIR`).
    let mut nodes = crate::nodes::Nodes::from_ready_lines(&dir.join(files::ADMIN_TOKEN), &lines);
    let nodes_file = dir.join(crate::nodes::FILE);
    nodes
        .write(&nodes_file)
        .with_context(|| format!("cannot write {}", nodes_file.display()))?;
    for n in &nodes.node {
        println!(
            "admin     {:<12} {:<11} http://{}",
            n.name, n.service, n.admin
        );
    }
    let shown = &args.dir.dir.display();
    let map = ClusterMap::load(&dir.join("cluster.toml")).context("cannot read the map")?;
    for (i, (line, island)) in store_lines.iter().zip(&map.islands).enumerate() {
        let link_shown = field(line, "link").unwrap_or("?");
        let [a, b] = island.fragments;
        println!(
            "wa-store  ready: {}, link {link_shown}, fragments {a}-{b}, data in {}",
            island.name,
            dir.join(store_data(i + 1)).display()
        );
        if let Some(sec) = island.secondary {
            println!(
                "wa-store  ready: {} secondary, link {sec}, data in {}; fail over with `wactl promote {} --dir {}`",
                island.name,
                dir.join(files::secondary_data(i + 1)).display(),
                island.name,
                args.dir.dir.display()
            );
        }
    }
    let mut tcp_first = "?";
    for (j, line) in chat_lines.iter().enumerate() {
        let tcp = field(line, "tcp").unwrap_or("?");
        let quic = field(line, "quic").unwrap_or("?");
        if j == 0 {
            tcp_first = tcp;
        }
        println!("wa-chat   ready: edge {}, tcp {tcp}, quic {quic}", j + 1);
    }
    let media_shown = field(media_line, "http").unwrap_or("?");
    println!(
        "wa-media  ready: https {media_shown}, node m1, blobs in {}",
        dir.join("media").display()
    );
    let register_shown = field(register_line, "http").unwrap_or("?");
    // `wactl register` finds wa-register here (its port may be picked at start).
    let addr_file = dir.join("register/addr");
    if let Err(e) = std::fs::write(&addr_file, format!("{register_shown}\n")) {
        eprintln!("wactl: cannot write {}: {e}", addr_file.display());
    }
    println!(
        "wa-register ready: https {register_shown}, development SMS codes in {}",
        dir.join("register/codes.log").display()
    );
    println!("  (each code sent is also printed here as it goes out)");
    println!("  sign up:  wactl register --dir {shown} --number +15550001234 --name phone");
    println!("  a code:   wactl code --dir {shown} --number +15550001234");
    println!();
    for user in ["alice", "bob"] {
        let isl = map.home(user);
        println!(
            "{user}'s home is {} (fragment {}); `wactl home --dir {shown} USER` tells anyone's",
            isl.name,
            map.fragment(user)
        );
    }
    let edge = |k: usize| {
        if args.edges > 1 {
            format!(" --edge {}", k.min(args.edges))
        } else {
            String::new()
        }
    };
    println!("Try it, in two more terminals:");
    println!("  wactl watch --dir {shown}{} --user bob --read", edge(2));
    println!(
        "  wactl send --dir {shown}{} --from alice --to bob --wait read 'hello bob'",
        edge(1)
    );
    println!(
        "Operate it:  wactl status --dir {shown}   (also sessions, kick, queues, user, trace, backup)"
    );
    println!("Ctrl-C stops them all.");
    let link_shown = field(&store_lines[0], "link").unwrap_or("?");
    let quic_first = field(&chat_lines[0], "quic").unwrap_or("?");
    println!(
        "READY wactl-up link={link_shown} tcp={tcp_first} quic={quic_first} media={media_shown} register={register_shown} islands={} edges={} nodes={}",
        args.islands,
        args.edges,
        nodes_file.display()
    );

    let codes = tokio::spawn(print_codes(dir.join("register/codes.log")));
    let _stop_printing = AbortOnDrop(codes);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = signals.recv() => return Ok(stopped(running).await),
            _ = tick.tick() => {}
        }
        let exited = running
            .iter_mut()
            .enumerate()
            .find_map(|(i, s)| match s.child.try_wait() {
                Ok(Some(st)) => Some((i, Ok(st))),
                Ok(None) => None,
                Err(e) => Some((i, Err(e))),
            });
        if let Some((i, st)) = exited {
            let gone = running.remove(i);
            // With secondaries, a store that fails is started again, as
            // systemd's Restart=on-failure would: a killed or demoted
            // (exit 75) primary comes back as its island's secondary.
            if args.secondaries && gone.name == "wa-store" && !matches!(&st, Ok(s) if s.success()) {
                eprintln!(
                    "wactl: {} ({}) exited ({}); starting it again",
                    gone.name,
                    gone.config.display(),
                    describe(st)
                );
                let mut again = match Service::spawn(gone.name, &gone.config) {
                    Ok(s) => s,
                    Err(e) => return Ok(failed(e, running).await),
                };
                again.record_pid(&run_dir);
                let ready = until_signal(&mut signals, again.ready()).await;
                let config = again.config.clone();
                running.insert(0, again);
                match ready {
                    None => return Ok(stopped(running).await),
                    Some(Err(e)) => return Ok(failed(e, running).await),
                    Some(Ok(line)) => {
                        // Its admin listener has a new port: keep the node
                        // list true for `wactl status` and friends.
                        let admin = field(&line, "admin").and_then(|a| a.parse().ok());
                        let k = started.iter().position(|c| *c == config);
                        if let (Some(admin), Some(node)) =
                            (admin, k.and_then(|k| nodes.node.get_mut(k)))
                        {
                            node.admin = admin;
                            if let Err(e) = nodes.write(&nodes_file) {
                                eprintln!("wactl: {e:#}");
                            }
                        }
                        continue;
                    }
                }
            }
            eprintln!(
                "wactl: {} ({}) exited on its own ({})",
                gone.name,
                gone.config.display(),
                describe(st)
            );
            stop(running).await;
            return Ok(ExitCode::from(1));
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prints each development SMS code wa-register writes to `file` (lines
/// `NUMBER CODE`) from now on, as `SMS code for NUMBER: CODE`. The file is a
/// plain append-only log, so it is followed by reading what was added every
/// quarter second; codes written before `wactl up` started are not repeated.
async fn print_codes(file: PathBuf) {
    use std::io::{Read, Seek, SeekFrom};
    let mut offset = std::fs::metadata(&file).map_or(0, |m| m.len());
    let mut partial = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Ok(mut f) = std::fs::File::open(&file) else {
            continue;
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < offset {
            // Truncated or replaced: start over from its beginning.
            offset = 0;
            partial.clear();
        }
        if len == offset || f.seek(SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut added = Vec::new();
        if f.take(len - offset).read_to_end(&mut added).is_err() {
            continue;
        }
        offset += added.len() as u64;
        partial.push_str(&String::from_utf8_lossy(&added));
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            if let Some((number, code)) = line.trim().split_once(' ') {
                println!("SMS code for {number}: {code}");
            }
        }
    }
}

/// `fut`'s output, or `None` if SIGINT or SIGTERM came first.
async fn until_signal<T>(
    signals: &mut Signals,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = fut => Some(out),
        _ = signals.recv() => None,
    }
}

/// Reports why the deployment cannot start, then stops what did: exit 1.
async fn failed(e: anyhow::Error, services: Vec<Service>) -> ExitCode {
    eprintln!("wactl: {e:#}");
    stop(services).await;
    ExitCode::from(1)
}

/// Stops on request: exit 0 if every service stopped cleanly.
async fn stopped(services: Vec<Service>) -> ExitCode {
    println!("stopping");
    if stop(services).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// SIGINT or SIGTERM, whichever comes first.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// A child service.
struct Service {
    name: &'static str,
    config: PathBuf,
    child: Child,
    stdout: Option<ChildStdout>,
}

impl Service {
    fn spawn(name: &'static str, config: &Path) -> anyhow::Result<Service> {
        let bin = find_binary(name)?;
        let mut child = Command::new(&bin)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take();
        Ok(Service {
            name,
            config: config.to_path_buf(),
            child,
            stdout,
        })
    }

    /// Writes its pid to `run/<config file>.pid` (`wactl promote` signals
    /// them).
    fn record_pid(&self, run: &Path) {
        if let (Some(pid), Some(file)) = (self.child.id(), self.config.file_name()) {
            let p = run.join(file).with_extension("pid");
            if let Err(e) = std::fs::write(&p, format!("{pid}\n")) {
                eprintln!("wactl: cannot write {}: {e}", p.display());
            }
        }
    }

    /// Waits for the `READY <name> ...` line and returns it; later lines are
    /// forwarded to our stdout, prefixed with the service's name.
    async fn ready(&mut self) -> anyhow::Result<String> {
        let name = self.name;
        let stdout = self.stdout.take().expect("ready is awaited once");
        let mut lines = BufReader::new(stdout).lines();
        let prefix = format!("READY {name} ");
        let found = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with(&prefix) {
                    return Ok(Some(line));
                }
                println!("[{name}] {line}");
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let line = match found {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let st = self.child.wait().await;
                bail!(
                    "{name} exited before it was ready ({}); its messages are above",
                    describe(st)
                );
            }
            Err(_) => bail!("{name} did not print its READY line within {READY_TIMEOUT:?}"),
        };
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{name}] {line}");
            }
        });
        Ok(line)
    }
}

/// Stops services in the given order (SIGTERM, then wait; killed if they
/// outstay [`STOP_TIMEOUT`]) and reports how each ended. `true` if all exited 0.
async fn stop(services: Vec<Service>) -> bool {
    let mut all_ok = true;
    for mut s in services {
        if let Some(pid) = s.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let st = match tokio::time::timeout(STOP_TIMEOUT, s.child.wait()).await {
            Ok(st) => st,
            Err(_) => {
                eprintln!(
                    "wactl: {} did not stop within {STOP_TIMEOUT:?}; killing it",
                    s.name
                );
                let _ = s.child.start_kill();
                s.child.wait().await
            }
        };
        all_ok &= matches!(&st, Ok(st) if st.success());
        println!("{} stopped ({})", s.name, describe(st));
    }
    all_ok
}

fn describe(st: std::io::Result<ExitStatus>) -> String {
    match st {
        Ok(st) => st.to_string(),
        Err(e) => format!("status unknown: {e}"),
    }
}

/// `name` next to this executable (as cargo builds them), else on PATH.
fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let beside = exe_dir.iter().map(|d| d.join(name));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(found) = beside.chain(on_path).find(|p| p.is_file()) {
        return Ok(found);
    }
    let where_ = exe_dir
        .map(|d| format!("next to wactl in {} or ", d.display()))
        .unwrap_or_default();
    bail!("cannot find the {name} binary {where_}on PATH; build it with `cargo build --workspace`")
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

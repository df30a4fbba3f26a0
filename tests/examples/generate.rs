//! Writes every generated file of the repository from its source, or checks
//! that the committed copies are current:
//!
//! - `man/<service>.8` from each service's clap definition (`<crate>::cli`),
//!   plus FILES, ENVIRONMENT, SIGNALS, EXIT STATUS, EXAMPLES and SEE ALSO;
//! - `man/<service>.toml.5` from the shipped sample config
//!   (`packaging/etc/<service>.toml`, which tests prove equal to the
//!   defaults): every key with its default and comment;
//! - `man/wa.7`, the overview;
//! - `man/wactl.1` and `man/wactl-<command>.1` from wactl's clap definition;
//! - `packaging/completions/` for bash, zsh and fish.
//!
//! `cargo run -p wa-tests --example generate` rewrites them;
//! `... -- --check` (CI) exits 1 naming each file that differs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

const SERVICES: [(&str, &str); 4] = [
    (
        "wa-store",
        "the home of wa users: mailboxes, receipts, last seen",
    ),
    (
        "wa-chat",
        "the wa edge: client connections over TLS and QUIC",
    ),
    (
        "wa-media",
        "the wa media node: upload and download of blobs",
    ),
    (
        "wa-register",
        "the wa registration service: signup by SMS code",
    ),
];

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let commands = [
        wa_store::cli::Args::command(),
        wa_chat::cli::Args::command(),
        wa_media::cli::Args::command(),
        wa_register::cli::Args::command(),
    ];
    for ((name, _), cmd) in SERVICES.iter().zip(commands) {
        files.push((root.join(format!("man/{name}.8")), service_page(name, cmd)));
        let sample = std::fs::read_to_string(root.join(format!("packaging/etc/{name}.toml")))
            .expect("the shipped sample exists");
        files.push((
            root.join(format!("man/{name}.toml.5")),
            config_page(name, &sample).into_bytes(),
        ));
    }
    files.push((root.join("man/wa.7"), overview().into_bytes()));
    let wactl = wactl::cli::Cli::command();
    files.push((root.join("man/wactl.1"), man(wactl.clone(), "1", &[])));
    for sub in wactl.get_subcommands() {
        let name = format!("wactl-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("wactl {}", sub.get_name()));
        files.push((root.join(format!("man/{name}.1")), man(page, "1", &[])));
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, "wactl.bash"),
        (clap_complete::Shell::Zsh, "_wactl"),
        (clap_complete::Shell::Fish, "wactl.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut wactl::cli::Cli::command(), "wactl", &mut out);
        files.push((root.join("packaging/completions").join(file), out));
    }

    let mut stale = 0;
    for (path, text) in &files {
        let shown = path.strip_prefix(&root).unwrap_or(path).display();
        let same = std::fs::read(path).is_ok_and(|old| old == *text);
        if check {
            if !same {
                eprintln!(
                    "{shown} differs from what `cargo run -p wa-tests --example generate` writes"
                );
                stale += 1;
            }
        } else if !same {
            std::fs::create_dir_all(path.parent().expect("files live in a directory"))
                .expect("create the directory");
            std::fs::write(path, text).expect("write the file");
            println!("wrote {shown}");
        }
    }
    if stale > 0 {
        eprintln!("{stale} generated file(s) are stale: run the generator and commit");
        return ExitCode::from(1);
    }
    if check {
        println!("{} generated files are current", files.len());
    }
    ExitCode::SUCCESS
}

/// A page from a clap command, with `extra` roff sections after OPTIONS.
fn man(cmd: clap::Command, section: &str, extra: &[&str]) -> Vec<u8> {
    let m = clap_mangen::Man::new(cmd)
        .section(section)
        .source(format!("wa {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    if extra.is_empty() {
        m.render(&mut out).expect("render to memory");
        return out;
    }
    // A service page: no subcommands, a version.
    m.render_title(&mut out).expect("render to memory");
    m.render_name_section(&mut out).expect("render to memory");
    m.render_synopsis_section(&mut out)
        .expect("render to memory");
    m.render_description_section(&mut out)
        .expect("render to memory");
    m.render_options_section(&mut out)
        .expect("render to memory");
    for e in extra {
        out.extend_from_slice(e.as_bytes());
    }
    m.render_version_section(&mut out)
        .expect("render to memory");
    out
}

fn service_page(name: &str, cmd: clap::Command) -> Vec<u8> {
    let env_var = format!(
        "WA_{}_CONFIG",
        name.trim_start_matches("wa-").to_uppercase()
    );
    let files = format!(
        ".SH FILES\n.TP\n.I /etc/wa/{name}.toml\nThe configuration; every key in\n.BR {name}.toml (5).\n\
         .TP\n.I /etc/wa/admin.token\nThe admin token of the admin listener (owner-only).\n\
         .TP\n.I /etc/wa/cluster.toml\nThe cluster map (wa-store, wa-chat, wa-register).\n\
         .TP\n.I /var/lib/wa\nData (wa-store, wa-media).\n"
    );
    let env = format!(
        ".SH ENVIRONMENT\n.TP\n.B {env_var}\nThe configuration file, when \\-\\-config is not given.\n\
         .TP\n.B RUST_LOG\nA tracing filter that wins over [log] level.\n\
         .TP\n.B WA_LOG_FORMAT\nauto, text, journal or json, as \\-\\-log\\-format.\n\
         .TP\n.B JOURNAL_STREAM\nSet by systemd: logs take journald's shape (priority prefixes, no colours or timestamps).\n\
         .TP\n.BR NOTIFY_SOCKET \", \" WATCHDOG_USEC\nSet by systemd: READY=1, RELOADING=1, STOPPING=1, STATUS= and WATCHDOG=1 go there.\n"
    );
    let signals = ".SH SIGNALS\n.TP\n.BR SIGTERM \", \" SIGINT\n/readyz turns not ready, the service drains within [shutdown] grace and exits 0.\n\
         .TP\n.B SIGHUP\nReads [log] level, the admin token, the TLS certificate and the cluster map again; never exits.\n";
    let status = ".SH EXIT STATUS\n.TP\n.B 0\nClean stop, or \\-\\-check\\-config found no problem.\n\
         .TP\n.B 1\nRuntime failure (cannot bind, cannot open data).\n\
         .TP\n.B 64\nBad arguments or configuration; the message names the key or file.\n";
    let examples = format!(
        ".SH EXAMPLES\n.nf\n{name} \\-\\-config /etc/wa/{name}.toml \\-\\-check\\-config\n\
         systemctl reload {name}\n\
         curl \\-H \"Authorization: Bearer $(cat /etc/wa/admin.token)\" http://127.0.0.1:9401/metrics\n\
         wactl status\n.fi\n"
    );
    let see = format!(
        ".SH SEE ALSO\n.BR {name}.toml (5),\n.BR wa (7),\n.BR wactl (1);\ndocs/OPERATIONS.md in the wa sources.\n"
    );
    man(cmd, "8", &[&files, &env, signals, status, &examples, &see])
}

/// The sample config as a page: each key with its default and the comment
/// above it.
fn config_page(name: &str, sample: &str) -> String {
    let mut out = format!(
        ".TH {} 5 \"\" \"wa {}\"\n.SH NAME\n{name}.toml \\- configuration of {name}\n\
         .SH DESCRIPTION\nTOML. Unknown keys are errors that name the key; durations are written \"10s\", sizes \"64 MiB\".\n\
         Check a file with\n.B {name} \\-\\-check\\-config\\fR.\n\
         Every key, with its default:\n",
        format!("{name}.toml").to_uppercase(),
        env!("CARGO_PKG_VERSION"),
    );
    let mut section = String::new();
    let mut comment: Vec<String> = Vec::new();
    for line in sample.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim();
            // Commented-out alternatives are examples, not prose.
            if !c.contains(" = ") {
                comment.push(c.to_string());
            }
        } else if line.starts_with('[') {
            section = line.to_string();
            out += &format!(".SS {}\n", roff(&section));
            for c in comment.drain(..) {
                out += &format!("{}\n", roff(&c));
            }
        } else if let Some((key, value)) = line.split_once(" = ") {
            let full = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section} {key}")
            };
            out += &format!(".TP\n.B {} = {}\n", roff(&full), roff(value));
            for c in comment.drain(..) {
                out += &format!("{}\n", roff(&c));
            }
        } else if line.is_empty() {
            comment.clear();
        }
    }
    out +=
        &format!(".SH FILES\n.I /etc/wa/{name}.toml\n.SH SEE ALSO\n.BR {name} (8),\n.BR wa (7)\n");
    out
}

/// Text safe in roff: no leading dot or quote, backslashes escaped.
fn roff(s: &str) -> String {
    let s = s
        .replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('"', "\\(dq");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn overview() -> String {
    let mut out = format!(
        ".TH WA 7 \"\" \"wa {}\"\n.SH NAME\nwa \\- a messaging backend: edges, homes, media and registration\n\
         .SH DESCRIPTION\nClients connect to an edge\n.RB ( wa-chat (8))\nover TLS or QUIC; the edge relays to each user's home\n\
         .RB ( wa-store (8)),\nfound through the cluster map. Blobs go to\n.BR wa-media (8);\naccounts are made by\n\
         .BR wa-register (8).\nThe operator's tool is\n.BR wactl (1).\n.SH SERVICES\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, what) in SERVICES {
        out += &format!(".TP\n.BR {name} (8)\n{}\n", roff(what));
    }
    out += ".SH OPERATIONS\nEvery service runs an admin listener on loopback\n(/healthz, /readyz, Prometheus /metrics, and the operations of\n\
            .BR wactl ),\nlogs for a terminal, journald or JSON, drains on SIGTERM and reloads on SIGHUP.\n\
            .SH FILES\n.TP\n.I /etc/wa\nConfiguration, keys, certificates, secrets, the admin token.\n.TP\n.I /var/lib/wa\nData.\n\
            .SH SEE ALSO\ndocs/OPERATIONS.md and docs/ARCHITECTURE.md in the wa sources.\n";
    out
}

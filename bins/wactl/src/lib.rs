//! `wactl`: the admin and developer tool of wa.
//!
//! [`cli`] defines the command line; each subcommand lives in the file named
//! for it and is reached through [`run`]. `main.rs` only parses arguments and
//! maps the result to an exit code.

pub mod cli;
mod code;
mod dev;
mod home;
mod keygen;
mod man;
mod promote;
mod register;
mod send;
mod token;
mod up;
mod watch;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Runs one subcommand. `Ok` carries the exit code of a command that ended
/// the way it is meant to; errors are reported by the caller and exit 1.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen(a) => keygen::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Token(a) => token::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Up(a) => up::run(&a).await,
        Command::Home(a) => home::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Promote(a) => promote::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Send(a) => send::run(&a).await,
        Command::Watch(a) => watch::run(&a).await,
        Command::Register(a) => register::run(&a).await,
        Command::Code(a) => code::run(&a),
        Command::Man(a) => man::run(&a).map(|()| ExitCode::SUCCESS),
    }
}

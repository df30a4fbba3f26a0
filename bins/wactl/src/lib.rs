//! `wactl`: the admin and developer tool of wa.
//!
//! [`cli`] defines the command line; each subcommand lives in the file named
//! for it and is reached through [`run`]. `main.rs` only parses arguments and
//! maps the result to an exit code.

mod bench;
pub mod cli;
mod code;
mod dev;
mod group;
mod home;
mod keygen;
mod man;
pub mod nodes;
mod ops;
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
        Command::Group(a) => group::run(&a).await,
        Command::Watch(a) => watch::run(&a).await,
        Command::Register(a) => register::run(&a).await,
        Command::Code(a) => code::run(&a),
        Command::Man(a) => man::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Status(a) => ops::status::run(&a).await,
        Command::Cluster(cli::ClusterCommand::Status(a)) => ops::cluster::status(&a).await,
        Command::Cluster(cli::ClusterCommand::CatchUp(a)) => ops::cluster::catch_up(&a).await,
        Command::Sessions(a) => ops::sessions::sessions(&a).await,
        Command::Kick(a) => ops::sessions::kick(&a).await,
        Command::Queues(a) => ops::queues::run(&a).await,
        Command::Expire(a) => ops::expire::run(&a).await,
        Command::Pumping(a) => ops::pumping::run(&a).await,
        Command::Push(crate::cli::PushCommand::Test(a)) => ops::push::run(&a).await,
        Command::Drain(a) => ops::drain::run(&a).await,
        Command::Backup(a) => ops::backup::backup(&a).await,
        Command::Restore(a) => ops::restore::run(&a),
        Command::User(a) => ops::user::run(&a.command).await,
        Command::Trace(a) => ops::trace::run(&a).await,
        Command::Bench(a) => bench::run(&a).await,
        Command::Config(a) => {
            print!("{}", defaults(&a));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(a) => {
            use clap::CommandFactory;
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "wactl",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The shipped sample configuration of a service: every key at its default,
/// with comments (each service's tests prove it equals its `Default`).
fn defaults(args: &cli::ConfigArgs) -> &'static str {
    use cli::{ConfigCommand, ServiceName};
    let ConfigCommand::Defaults { service } = args.command;
    match service {
        ServiceName::WaChat => include_str!("../../../packaging/etc/wa-chat.toml"),
        ServiceName::WaStore => include_str!("../../../packaging/etc/wa-store.toml"),
        ServiceName::WaMedia => include_str!("../../../packaging/etc/wa-media.toml"),
        ServiceName::WaRegister => include_str!("../../../packaging/etc/wa-register.toml"),
    }
}

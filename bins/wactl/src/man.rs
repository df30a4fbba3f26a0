//! `wactl man`: man pages generated from the command line definition.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};

pub(crate) fn run(args: &ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let cmd = Cli::command();
    write_page(&args.out, "wactl", cmd.clone())?;
    for sub in cmd.get_subcommands() {
        let name = format!("wactl-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("wactl {}", sub.get_name()));
        write_page(&args.out, &name, page)?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, cmd: clap::Command) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .with_context(|| format!("cannot render {name}"))?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

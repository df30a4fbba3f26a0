//! `wactl code`: the last development SMS code sent to a number, from the
//! file a `wactl up` deployment's wa-register writes them to.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::CodeArgs;

pub(crate) fn run(args: &CodeArgs) -> anyhow::Result<ExitCode> {
    match last_code(&args.dir.dir.join("register/codes.log"), &args.number)? {
        Some(code) => {
            println!("{code}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("wactl: no code was sent to {} yet", args.number);
            Ok(ExitCode::from(1))
        }
    }
}

/// The last code in `file` (lines `NUMBER CODE`) for `number`.
pub(crate) fn last_code(file: &Path, number: &str) -> anyhow::Result<Option<String>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    Ok(text
        .lines()
        .rev()
        .filter_map(|l| l.split_once(' '))
        .find(|(n, _)| *n == number)
        .map(|(_, c)| c.trim().to_owned()))
}

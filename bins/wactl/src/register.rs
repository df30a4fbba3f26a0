//! `wactl register`: sign up through a `wactl up` deployment, the way an app
//! would (request a code, read it from the development code file, verify).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use common::client::{RegisterClient, RegisterConfig, Verify};

use crate::cli::RegisterArgs;
use crate::dev::{DevDir, SERVER_NAME};

pub(crate) async fn run(args: &RegisterArgs) -> anyhow::Result<ExitCode> {
    let dev = DevDir::new(&args.dir.dir);
    let addr: SocketAddr = match args.addr {
        Some(a) => a,
        None => {
            let p = dev.path("register/addr");
            let text = std::fs::read_to_string(&p).with_context(|| {
                format!(
                    "cannot read {} (is `wactl up --dir {}` running?)",
                    p.display(),
                    args.dir.dir.display()
                )
            })?;
            text.trim()
                .parse()
                .with_context(|| format!("{} does not hold an address", p.display()))?
        }
    };
    let ca = dev.path("pki/ca.pem");
    let roots = common::tls::load_certs(&ca)
        .with_context(|| format!("cannot load the CA {}", ca.display()))?;
    let rc = RegisterClient::new(RegisterConfig::new(addr, SERVER_NAME.into(), roots))?;
    let codes = dev.path("register/codes.log");
    let before = crate::code::last_code(&codes, &args.number)?;
    let sent = rc
        .request_code(&args.number)
        .await
        .with_context(|| format!("wa-register at {addr} did not send a code"))?;
    println!(
        "code sent to {}; another may be requested in {} s",
        sent.number, sent.retry_after_secs
    );
    // The log provider writes the code before wa-register answers, so a new
    // line is there now; test numbers have a fixed code and write none.
    let code = match crate::code::last_code(&codes, &args.number)? {
        Some(c) if Some(&c) != before.as_ref() || before.is_none() => c,
        _ => bail!(
            "no new code for {} in {} (a test number? use its fixed code with the API)",
            args.number,
            codes.display()
        ),
    };
    let r = rc
        .verify(&Verify {
            number: args.number.clone(),
            session: sent.session.clone(),
            code,
            device_name: Some(args.name.clone()),
            pin: args.pin.clone(),
            ..Verify::default()
        })
        .await
        .context("verification refused")?;
    println!(
        "{} account {} device {} generation {}",
        if r.new_account { "new" } else { "existing" },
        r.user,
        r.device,
        r.generation
    );
    println!("token {}", r.token);
    Ok(ExitCode::SUCCESS)
}

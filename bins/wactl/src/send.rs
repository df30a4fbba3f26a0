//! `wactl send`: one message, and the ticks it earns.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use common::client::Event;
use common::proto::ReceiptKind;

use crate::cli::{SendArgs, WaitFor};
use crate::dev::{self, DevDir};

pub(crate) async fn run(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let dev = DevDir::new(&args.dir.dir);
    let (client, mut events) = dev
        .connect(&args.from, dev::transport(&args.transport), args.edge.edge)
        .await?;
    let id = client
        .send(&args.to, Bytes::from(args.text.clone().into_bytes()))
        .await
        .with_context(|| format!("cannot send to {}", args.to))?;
    // (On stderr: stdout says only how far the message came.)
    eprintln!("id {}", hex::encode(id));

    let (mut accepted, mut delivered, mut read) = (false, false, false);
    let reached = |a: bool, d: bool, r: bool| match args.wait {
        WaitFor::Accepted => a,
        WaitFor::Delivered => a && d,
        WaitFor::Read => a && r,
    };
    let waited = tokio::time::timeout(args.timeout, async {
        while !reached(accepted, delivered, read) {
            let Some(event) = events.next().await else {
                bail!(
                    "the connection ended before the message was {:?}",
                    args.wait
                );
            };
            match event {
                // (Once only: a receipt may have implied it already.)
                Event::Accepted { id: got, .. } if got == id && !accepted => {
                    accepted = true;
                    println!("accepted");
                }
                Event::Retrying {
                    id: got,
                    code,
                    message,
                    after,
                } if got == id => {
                    eprintln!(
                        "waiting: {code}: {message}; resent in {}",
                        humantime::format_duration(after)
                    );
                }
                Event::Rejected {
                    id: got,
                    code,
                    message,
                } if got == id => {
                    bail!("the message was rejected: {code}: {message}");
                }
                Event::Receipt {
                    seq,
                    from,
                    kind,
                    ids,
                } if from == args.to && ids.contains(&id) => {
                    // A receipt implies Accepted, which travels another path
                    // and may come later (PROTOCOL §8).
                    if !accepted {
                        accepted = true;
                        println!("accepted");
                    }
                    if kind == ReceiptKind::Read && !delivered {
                        // Read implies delivered; the delivered receipt may still be on its way.
                        delivered = true;
                        println!("delivered");
                    }
                    match kind {
                        ReceiptKind::Delivered if !delivered => {
                            delivered = true;
                            println!("delivered");
                        }
                        ReceiptKind::Read if !read => {
                            read = true;
                            println!("read");
                        }
                        _ => {}
                    }
                    client
                        .ack(&[seq])
                        .await
                        .context("cannot acknowledge the receipt")?;
                }
                Event::Fatal { code, message } => {
                    bail!("the server refused {}: {code}: {message}", args.from)
                }
                Event::Disconnected { reason, .. } => {
                    eprintln!("disconnected ({reason}); reconnecting")
                }
                _ => {}
            }
        }
        Ok(())
    })
    .await;
    let outcome = match waited {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "timed out after {} waiting for the message to be {}",
            humantime::format_duration(args.timeout),
            match args.wait {
                WaitFor::Accepted => "accepted",
                WaitFor::Delivered => "delivered",
                WaitFor::Read => "read",
            }
        )),
    };
    client.close().await;
    outcome.map(|()| ExitCode::SUCCESS)
}

//! `wactl watch`: print what arrives for a user, acknowledge it, optionally
//! mark it read.

use std::process::ExitCode;

use anyhow::Context;
use common::client::{Event, GroupReceiptState};
use common::proto::ReceiptKind;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::WatchArgs;
use crate::dev::{self, DevDir};

pub(crate) async fn run(args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let dev = DevDir::new(&args.dir.dir);
    let (client, mut events) = dev
        .connect(&args.user, dev::transport(&args.transport), args.edge.edge)
        .await?;
    println!("watching as {} (Ctrl-C stops)", args.user);
    let mut asked = std::collections::HashSet::new();
    let outcome = loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = term.recv() => break Ok(()),
            e = events.next() => e,
        };
        let Some(event) = event else {
            break Err(anyhow::anyhow!("the connection ended"));
        };
        match event {
            Event::Message {
                seq,
                from,
                id,
                body,
                ..
            } => {
                println!("{from}: {}", String::from_utf8_lossy(&body));
                client.ack(&[seq]).await.context("cannot acknowledge")?;
                if args.read {
                    client
                        .mark_read(&from, &[id])
                        .await
                        .context("cannot mark read")?;
                }
            }
            Event::Receipt {
                seq,
                from,
                kind,
                ids,
            } => {
                let what = kind_name(kind);
                let n = ids.len();
                println!("{from} {what} {n} message{}", if n == 1 { "" } else { "s" });
                client.ack(&[seq]).await.context("cannot acknowledge")?;
            }
            Event::Presence { user, online, .. } => {
                println!("{user} is {}", if online { "online" } else { "offline" })
            }
            Event::Typing { from, typing } => {
                if typing {
                    println!("{from} is typing");
                }
            }
            Event::Rejected { code, message, .. } => {
                eprintln!("a read receipt was rejected: {code}: {message}")
            }
            Event::Retrying {
                code,
                message,
                after,
                ..
            } => eprintln!(
                "a read receipt waits: {code}: {message}; resent in {}",
                humantime::format_duration(after)
            ),
            Event::Error { code, message } => eprintln!("server error: {code}: {message}"),
            Event::Waiting { reason, after, .. } => eprintln!(
                "waiting for the server ({reason}); trying again in {}",
                humantime::format_duration(after)
            ),
            Event::Disconnected { reason, .. } => {
                eprintln!("disconnected ({reason}); reconnecting")
            }
            Event::Connected { server } => eprintln!("connected to {server}"),
            Event::Fatal { code, message } => {
                break Err(anyhow::anyhow!(
                    "the server refused {}: {code}: {message}",
                    args.user
                ));
            }
            Event::GroupMessage {
                seq,
                group,
                from,
                id,
                body,
                ..
            } => {
                println!("{group} {from}: {}", String::from_utf8_lossy(&body));
                client.ack(&[seq]).await.context("cannot acknowledge")?;
                if args.read {
                    client
                        .mark_read_in_group(&group, &from, &[id])
                        .await
                        .context("cannot mark read")?;
                }
            }
            Event::GroupEvent {
                seq,
                group,
                from,
                event,
                ..
            } => {
                let op = format!("{:?}", event.op()).to_lowercase();
                println!("{group} {from} {op} {}", event.members.join(" "));
                client.ack(&[seq]).await.context("cannot acknowledge")?;
            }
            Event::GroupReceipts {
                seq,
                group,
                kind,
                members,
            } => {
                // One item for many members (aggregated at their home).
                let each: Vec<String> = members
                    .iter()
                    .map(|(m, ids)| format!("{m}:{}", ids.len()))
                    .collect();
                println!("{group} {} {}", kind_name(kind), each.join(" "));
                client.ack(&[seq]).await.context("cannot acknowledge")?;
            }
            Event::GroupReceiptState(st) => {
                // Without the group's members "all" cannot be told: ask once.
                if st.members.is_empty() && asked.insert(st.group.clone()) {
                    client.group_info(&st.group).await.context("cannot ask")?;
                }
                println!("{}", receipt_line(&st));
            }
            Event::Accepted { .. } | Event::GroupResult { .. } | Event::PushEndpointSet { .. } => {}
        }
    };
    client.close().await;
    outcome.map(|()| ExitCode::SUCCESS)
}

fn kind_name(kind: ReceiptKind) -> &'static str {
    match kind {
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
        ReceiptKind::Unspecified => "receipt",
    }
}

/// `GROUP ID receipts: delivered N/M read K/M [delivered to all] [read by
/// all] read by: A B`, for a group message this user sent.
fn receipt_line(st: &GroupReceiptState) -> String {
    let of = match st.members.len() {
        0 => "?".to_string(),
        n => n.to_string(),
    };
    let mut line = format!(
        "{} {} receipts: delivered {}/{of} read {}/{of}",
        st.group,
        hex::encode(st.id),
        st.delivered.len(),
        st.read.len()
    );
    if st.delivered_to_all {
        line.push_str(" delivered to all");
    }
    if st.read_by_all {
        line.push_str(" read by all");
    }
    if !st.read.is_empty() {
        line.push_str(" read by: ");
        line.push_str(&st.read.join(" "));
    }
    line
}

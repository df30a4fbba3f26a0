//! `wactl group`: one group request, and its answer.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use common::client::{Event, MessageId};
use common::proto::{GroupInfo, GroupRole};

use crate::cli::{GroupArgs, GroupOp};
use crate::dev::{self, DevDir};

pub(crate) async fn run(args: &GroupArgs) -> anyhow::Result<ExitCode> {
    let dev = DevDir::new(&args.dir.dir);
    let (client, mut events) = dev
        .connect(&args.user, dev::transport(&args.transport), args.edge.edge)
        .await?;
    let id: MessageId = match &args.op {
        GroupOp::Create { subject, members } => {
            client
                .create_group(&args.user, subject, &strs(members))
                .await?
                .0
        }
        GroupOp::Add { group, members } => client.add_members(group, &strs(members)).await?,
        GroupOp::Remove { group, members } => client.remove_members(group, &strs(members)).await?,
        GroupOp::Send { group, text } => {
            client
                .send_group(group, Bytes::from(text.clone().into_bytes()))
                .await?
        }
        GroupOp::Show { group } => client.group_info(group).await?,
    };
    let answered = tokio::time::timeout(args.timeout, async {
        loop {
            let Some(event) = events.next().await else {
                bail!("the connection ended before the answer");
            };
            match event {
                Event::Accepted { id: got, .. } if got == id => {
                    println!("accepted");
                    return Ok(());
                }
                Event::GroupResult { id: got, info, .. } if got == id => {
                    print(&info);
                    return Ok(());
                }
                Event::Rejected {
                    id: got,
                    code,
                    message,
                } if got == id => bail!("refused: {code}: {message}"),
                Event::Retrying {
                    id: got,
                    code,
                    message,
                    after,
                } if got == id => eprintln!(
                    "waiting: {code}: {message}; resent in {}",
                    humantime::format_duration(after)
                ),
                Event::Fatal { code, message } => {
                    bail!("the server refused {}: {code}: {message}", args.user)
                }
                _ => {}
            }
        }
    })
    .await
    .with_context(|| {
        format!(
            "no answer within {}",
            humantime::format_duration(args.timeout)
        )
    });
    client.close().await;
    answered??;
    Ok(ExitCode::SUCCESS)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn print(info: &GroupInfo) {
    println!("group {}", info.group);
    println!("subject {}", info.subject);
    println!("version {}", info.version);
    for m in &info.members {
        let role = if m.role == GroupRole::Admin as i32 {
            "admin"
        } else {
            "member"
        };
        println!("{} {role}", m.user);
    }
}

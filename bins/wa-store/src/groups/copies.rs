//! A group item's copies (docs/ARCHITECTURE.md "Groups"): at the group's
//! home, the members are grouped by their home, this node's own through
//! its shards (`copies_in_flight` appends on their way at once, sharing
//! their journal syncs, applied in turns of at most `[groups] turn` with a
//! yield between turns, so that the fan-out does not hold a worker thread
//! away from the link readers for a whole batch) and each other home's in
//! one `GroupDeliver` per 256 members, and the members whose copy is not stored yet are tried again
//! with backoff until every one is; at a member's home, a `GroupDeliver`
//! is appended to each member's mailbox and answered once all are durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::link::{GroupDeliver, GroupDelivered, MAX_DELIVER_MEMBERS, link_down};
use common::proto::{Code, Envelope, ids};
use tokio::task::JoinSet;

use super::Groups;
use crate::home::LinkTx;

impl Groups {
    /// Stores `item` in the mailbox of each of `members`, retrying those
    /// not stored yet; false if stopped first.
    pub(super) async fn copy_all(self: &Arc<Self>, members: Vec<String>, item: Envelope) -> bool {
        let item = Arc::new(item);
        let left = Mutex::new(members);
        crate::retry::until_done(&self.stop, "a group's copies", || async {
            let todo = left.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let (failed, why) = self.copy_round(todo, &item).await;
            let n = failed.len();
            *left.lock().unwrap_or_else(|p| p.into_inner()) = failed;
            match n {
                0 => Ok(()),
                n => Err(format!("{n} members do not have it yet: {why}")),
            }
        })
        .await
        .is_ok()
    }

    /// One try for each of `members`: those that failed, and why one did.
    async fn copy_round(
        self: &Arc<Self>,
        members: Vec<String>,
        item: &Arc<Envelope>,
    ) -> (Vec<String>, String) {
        let owned = self.ownership.current();
        // (Other homes by the link client's map, which follows the map
        // file's addresses.)
        let map = self.client.as_ref().map(|c| c.current_map());
        let mut here = Vec::new();
        let mut there: HashMap<usize, Vec<String>> = HashMap::new();
        for m in members {
            if owned.owns(&m) {
                here.push(m);
            } else {
                let island = map.as_ref().map_or(0, |map| map.home_index(&m));
                there.entry(island).or_default().push(m);
            }
        }
        let mut failed = Vec::new();
        let mut why = String::new();
        let mut batches = JoinSet::new();
        for ms in there.into_values() {
            for chunk in ms.chunks(MAX_DELIVER_MEMBERS) {
                let g = Arc::clone(self);
                let chunk = chunk.to_vec();
                let item = (**item).clone();
                batches.spawn(async move {
                    let Some(client) = &g.client else {
                        let why = "cluster.ca is not readable, so other homes cannot be reached";
                        return (chunk, why.to_string());
                    };
                    match client.group_deliver(item, chunk.clone()).await {
                        Ok(codes) => {
                            let stale = [Code::WrongHome as u32, Code::StaleEpoch as u32];
                            if codes.iter().any(|c| stale.contains(c)) {
                                // (The next round groups them by the map
                                // read now, if it moved on.)
                                g.ownership.refresh();
                            }
                            let bad: Vec<String> = chunk
                                .into_iter()
                                .zip(codes.into_iter().chain(std::iter::repeat(0)))
                                .filter(|(_, c)| *c != 0)
                                .map(|(m, _)| m)
                                .collect();
                            (bad, "its home refused it".to_string())
                        }
                        Err(e) => (chunk, e.to_string()),
                    }
                });
            }
        }
        let mut turn = Turn::new(self.turn);
        for chunk in here.chunks(self.copies_in_flight) {
            let mut waits = Vec::new();
            for m in chunk {
                turn.take().await;
                match self.local.submit_append(m, (**item).clone()).await {
                    Ok(rx) => waits.push((m, rx)),
                    Err(c) => {
                        failed.push(m.clone());
                        why = format!("this home: {c}");
                    }
                }
            }
            for (m, rx) in waits {
                if let Err(c) = self.local.appended(rx).await {
                    failed.push(m.clone());
                    why = format!("this home refused it: {c}");
                }
            }
        }
        while let Some(r) = batches.join_next().await {
            if let Ok((bad, w)) = r
                && !bad.is_empty()
            {
                failed.extend(bad);
                why = w;
            }
        }
        (failed, why)
    }

    /// A `GroupDeliver` from a group's home: each member's copy appended
    /// here, answered on `link` once all are durable (or refused).
    pub fn deliver_here(self: &Arc<Self>, link: LinkTx, gd: GroupDeliver) {
        let g = Arc::clone(self);
        tokio::spawn(async move {
            let req = gd.req;
            let refuse = |code: Code| GroupDelivered {
                req,
                code: code as u32,
                codes: Vec::new(),
            };
            let answer = match gd.envelope {
                None => refuse(Code::BadFrame),
                Some(_) if gd.members.len() > MAX_DELIVER_MEMBERS => refuse(Code::BadFrame),
                Some(item) => {
                    let mut codes = vec![0u32; gd.members.len()];
                    let mut waits = Vec::new();
                    let mut turn = Turn::new(g.turn);
                    for (i, m) in gd.members.iter().enumerate() {
                        turn.take().await;
                        if !ids::valid_user_id(m) {
                            codes[i] = Code::BadRecipient as u32;
                        } else if let Err(c) = g.ownership.check(m, gd.epoch, false) {
                            codes[i] = c as u32;
                        } else {
                            match g.local.submit_append(m, item.clone()).await {
                                Ok(rx) => waits.push((i, rx)),
                                Err(c) => codes[i] = c as u32,
                            }
                        }
                    }
                    for (i, rx) in waits {
                        if let Err(c) = g.local.appended(rx).await {
                            codes[i] = c as u32;
                        }
                    }
                    GroupDelivered {
                        req,
                        code: 0,
                        codes,
                    }
                }
            };
            link.send(link_down::Kind::GroupDelivered(answer));
        });
    }
}

/// The fan-out's turns on this node's shards: a copy is applied on the
/// calling thread (`Home::submit`), so a batch of 1,024 would hold a
/// worker thread for as long as all of them take. Once a turn has lasted
/// `length`, the fan-out yields, so that the link readers queued on that
/// thread go first. Sized by time rather than by count: a yield puts the
/// fan-out behind every task ready in the process, so yielding every few
/// copies tripled a big group's time to its last member
/// (docs/BENCHMARKS.md "A busy group beside one-to-one traffic"). The
/// copies still share journal syncs: nothing here waits for durability.
struct Turn {
    started: Instant,
    length: Duration,
}

impl Turn {
    fn new(length: Duration) -> Turn {
        Turn {
            started: Instant::now(),
            length,
        }
    }

    /// Before each copy: yields if this turn is over, starting the next.
    async fn take(&mut self) {
        if self.started.elapsed() >= self.length {
            tokio::task::yield_now().await;
            self.started = Instant::now();
        }
    }
}

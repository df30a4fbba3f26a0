//! Groups at their home (docs/ARCHITECTURE.md "Groups"): the requests
//! edges send as `LinkUp::Group`, decided by `common::group` and made
//! durable through this node's own shards ([`local`]), and the fan-out of
//! each group's log to its members' mailboxes ([`fanout`]).
//!
//! Requests of one group are handled one after another, in the order their
//! links delivered them (a lane per group, like the courier's lines), so a
//! change and the messages around it are ordered exactly: a message
//! accepted before a removal is stamped with the version the removed member
//! still belongs to, one after it is refused `NOT_A_MEMBER`. A message
//! waits only for its append to be queued on the log's shard, not for its
//! durability, before the next request of the lane goes (the shard keeps
//! their order); a change waits for its record and its event to be durable.

mod backlog;
mod cache;
mod copies;
mod counts;
mod fanout;
mod local;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::group::{Change, GroupState, Limits};
use common::link::{GroupDown, GroupUp, KvSpace, link_down};
use common::link_client::LinkClient;
use common::proto::limits::RETRY_GROUP_BUSY_MS;
use common::proto::{Code, Envelope, GroupInfo, GroupRequest, SendGroup, envelope};
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::GroupsConfig;
use crate::home::{Home, LinkTx};
use crate::metrics::Metrics;
use crate::ownership::Ownership;
use crate::storage::Storage;
use backlog::Backlogs;
use cache::Records;
use local::Local;

/// The users a change's `event` took out of the group.
fn leaving(event: &common::proto::GroupEvent) -> Vec<String> {
    match event.op() {
        common::proto::GroupOp::Remove | common::proto::GroupOp::Leave => event.members.clone(),
        _ => Vec::new(),
    }
}

/// A refusal: the code and what to tell the client.
type Refused = (Code, String);

struct Job {
    link: LinkTx,
    up: GroupUp,
}

/// The groups whose home is this node.
pub struct Groups {
    local: Arc<Local>,
    ownership: Arc<Ownership>,
    /// Other homes, for copies to members there (`None` without the CA).
    client: Option<Arc<LinkClient>>,
    limits: Limits,
    copies_in_flight: usize,
    /// How long the fan-out applies copies before it yields.
    turn: Duration,
    /// Most groups a user whose home is this node may be in.
    max_groups_per_user: usize,
    /// Requests waiting, per group, behind the one being handled.
    lanes: Mutex<HashMap<String, VecDeque<Job>>>,
    /// The last record read or written of each group, with its
    /// key-value version, within `[groups] record_cache` bytes. Only this
    /// node changes a group it is the home of, so the cache is the record;
    /// a refusal reads it again anyway.
    cache: Mutex<Records>,
    /// Each group's items not yet fanned out, at most `[groups]
    /// fanout_queue`.
    backlog: Mutex<Backlogs>,
    metrics: Arc<Metrics>,
    storage: Arc<dyn Storage>,
    /// Groups with a fan-out session now.
    fanning: Mutex<HashSet<String>>,
    /// At most `fanout_groups` fan out at once.
    slots: Arc<Semaphore>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Groups {
    /// Starts the module on `home` and resumes the fan-out of every group
    /// this node is the home of (their logs may hold items a restart
    /// interrupted).
    pub fn start(
        home: Home,
        ownership: Arc<Ownership>,
        client: Option<Arc<LinkClient>>,
        config: &GroupsConfig,
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Arc<Groups> {
        let groups = Arc::new(Groups {
            local: Local::start(home, stop.clone()),
            ownership,
            client,
            limits: Limits {
                max_members: config.max_members,
            },
            copies_in_flight: config.copies_in_flight,
            turn: config.turn,
            max_groups_per_user: config.max_groups_per_user,
            lanes: Mutex::default(),
            cache: Mutex::new(Records::new(config.record_cache.as_u64() as usize)),
            backlog: Mutex::new(Backlogs::new(
                config.fanout_queue,
                Duration::from_millis(RETRY_GROUP_BUSY_MS),
            )),
            metrics,
            storage,
            fanning: Mutex::default(),
            slots: Arc::new(Semaphore::new(config.fanout_groups)),
            stop,
        });
        groups.resume();
        groups
    }

    /// Starts the fan-out of every group this node is the home of now (at
    /// a start, and when fragments were handed over to it: their logs may
    /// hold items nobody fans out yet). Lists the key-value records.
    pub fn resume(self: &Arc<Self>) {
        let g = Arc::clone(self);
        let storage = Arc::clone(&self.storage);
        tokio::spawn(async move {
            let found = tokio::task::spawn_blocking(move || {
                let mut found = Vec::new();
                let r = storage.visit_kv(&mut |space, key, _, value| {
                    if space == KvSpace::Group as i32 as u8 && !value.is_empty() {
                        found.push(key.to_owned());
                    }
                });
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot list the groups to resume their fan-out");
                }
                found
            })
            .await
            .unwrap_or_default();
            let owned = g.ownership.current();
            for group in found.iter().filter(|k| owned.owns(k)) {
                g.fan_out(group);
            }
        });
    }

    /// Handles a `LinkUp::Group` from `link`: queued behind the group's
    /// earlier requests, answered on `link` with `GroupResult`.
    pub fn handle(self: &Arc<Self>, link: LinkTx, up: GroupUp) {
        let job = Job { link, up };
        {
            let mut lanes = lock(&self.lanes);
            if let Some(q) = lanes.get_mut(&job.up.group) {
                q.push_back(job);
                return;
            }
            lanes.insert(job.up.group.clone(), VecDeque::new());
        }
        let g = Arc::clone(self);
        tokio::spawn(async move {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                let group = job.up.group.clone();
                g.serve(job).await;
                let mut lanes = lock(&g.lanes);
                next = lanes.get_mut(&group).and_then(VecDeque::pop_front);
                if next.is_none() {
                    lanes.remove(&group);
                }
            }
        });
    }

    async fn serve(self: &Arc<Self>, job: Job) {
        let Job { link, up } = job;
        let req = up.req;
        let answer = move |r: Result<GroupDown, Refused>| {
            let down = match r {
                Ok(d) => GroupDown { req, ..d },
                Err((code, message)) => GroupDown {
                    req,
                    code: code as u32,
                    message,
                    retry_after_ms: if code == Code::GroupBusy {
                        RETRY_GROUP_BUSY_MS
                    } else {
                        0
                    },
                    ..Default::default()
                },
            };
            link.send(link_down::Kind::GroupResult(down));
        };
        match (up.request, up.send) {
            (Some(r), _) => {
                let result = self.request(&up.group, &up.from, up.from_device, r).await;
                answer(result.map(|(info, duplicate)| GroupDown {
                    info: Some(info),
                    duplicate,
                    ..Default::default()
                }));
            }
            (None, Some(s)) => match self.send(&up.group, &up.from, up.from_device, s).await {
                Err(e) => answer(Err(e)),
                Ok(rx) => {
                    let g = Arc::clone(self);
                    let group = up.group.clone();
                    tokio::spawn(async move {
                        let r = g.local.appended(rx).await;
                        if r.as_ref().is_ok_and(|a| !a.duplicate) {
                            g.fan_out(&group);
                        } else {
                            g.unqueued(&group);
                        }
                        answer(
                            r.map(|a| GroupDown {
                                server_ts_ms: a.server_ts_ms,
                                duplicate: a.duplicate,
                                ..Default::default()
                            })
                            .map_err(|c| (c, "the group's home could not store it".into())),
                        );
                    });
                }
            },
            (None, None) => answer(Err((Code::BadFrame, "an empty group request".into()))),
        }
    }

    /// The record of `group` (`None`: no such group), from the cache unless
    /// `fresh`.
    async fn load(&self, group: &str, fresh: bool) -> Result<Option<(u64, GroupState)>, Refused> {
        if !fresh && let Some(c) = lock(&self.cache).get(group) {
            return Ok(Some(c));
        }
        let (version, value) = self
            .local
            .kv_get(KvSpace::Group, group)
            .await
            .map_err(|c| (c, "the group's record cannot be read now".to_string()))?;
        if value.is_empty() {
            self.uncache(group);
            return Ok(None);
        }
        let state = GroupState::decode(value).map_err(|e| {
            (
                Code::Internal,
                format!("the group's record is corrupt: {e}"),
            )
        })?;
        self.cache(group, version, state.clone());
        Ok(Some((version, state)))
    }

    /// A change or a read: the group after it, and whether it was a retry.
    async fn request(
        self: &Arc<Self>,
        group: &str,
        from: &str,
        device: u32,
        req: GroupRequest,
    ) -> Result<(GroupInfo, bool), Refused> {
        let refused = |(code, why): common::group::Refusal| (code, why.to_string());
        let change = Change::of(&req).map_err(refused)?;
        let no_such = || (Code::NoSuchGroup, "no such group".to_string());
        for attempt in 0..3 {
            let cur = self.load(group, attempt > 0).await?;
            let (kv_version, (mut new, event)) = match (&change, cur) {
                (None, None) => return Err(no_such()),
                (None, Some((_, g))) if g.is_member(from) => return Ok((g.info(), false)),
                (None, Some(_)) => {
                    return Err((Code::NotAMember, "not a member of this group".into()));
                }
                (Some(Change::Create { .. }), Some((_, g))) => {
                    // The id is the creator's and its request's: a retry.
                    self.relog(group, from, device, &req.id, &g).await?;
                    return Ok((g.info(), true));
                }
                (Some(c @ Change::Create { .. }), None) => (
                    0,
                    GroupState::create(group, from, now_ms(), c, &self.limits).map_err(refused)?,
                ),
                (Some(_), None) => return Err(no_such()),
                (Some(_), Some((_, g))) if g.applied(from, &req.id) => {
                    self.relog(group, from, device, &req.id, &g).await?;
                    return Ok((g.info(), true));
                }
                (Some(c), Some((v, g))) => (v, g.apply(c, from, &self.limits).map_err(refused)?),
            };
            new.record(from, req.id.clone(), &event);
            // The users it makes members are counted at their homes first
            // (`counts`): a crash in between leaves them counted, never
            // members past their limit.
            let joining = match change {
                Some(Change::Create { .. } | Change::Add(_)) => event.members.clone(),
                _ => Vec::new(),
            };
            self.reserve(group, &joining).await?;
            let value = Bytes::from(new.encode_to_vec());
            let put = self
                .local
                .kv_put(KvSpace::Group, group, value, kv_version)
                .await;
            let put = match put {
                Ok(p) if !p.conflict => p,
                Ok(_) => {
                    // (Not written: the next attempt counts its own.)
                    self.release(group, &joining).await;
                    continue;
                }
                // Written or not, unknown: they stay counted (safe; the
                // resend or the check at the limit settles it).
                Err(c) => return Err((c, "the group's record cannot be written now".into())),
            };
            self.cache(group, put.version, new.clone());
            self.release(group, &leaving(&event)).await;
            self.log_event(group, from, device, &req.id, event).await?;
            return Ok((new.info(), false));
        }
        Err((
            Code::Internal,
            "the group changed under the request; retry".into(),
        ))
    }

    /// A retried change: its event is logged again if it was the last
    /// change (a crash may have come between the record and the event;
    /// the log's dedupe stores it once).
    async fn relog(
        self: &Arc<Self>,
        group: &str,
        from: &str,
        device: u32,
        id: &Bytes,
        g: &GroupState,
    ) -> Result<(), Refused> {
        match &g.last {
            Some(l) if l.actor == from && l.id == *id => {
                let event = l.event.clone().unwrap_or_default();
                // (Its release too: the crash may have come before it.)
                self.release(group, &leaving(&event)).await;
                self.log_event(group, from, device, id, event).await
            }
            _ => Ok(()),
        }
    }

    async fn log_event(
        self: &Arc<Self>,
        group: &str,
        from: &str,
        device: u32,
        id: &Bytes,
        event: common::proto::GroupEvent,
    ) -> Result<(), Refused> {
        let version = event.version;
        let item = Envelope {
            from: from.to_owned(),
            from_device: device,
            id: id.clone(),
            server_ts_ms: 0,
            content: Some(envelope::Content::GroupEvent(event)),
            group: group.to_owned(),
            group_version: version,
        };
        lock(&self.backlog).add(group);
        let stored = self.local.append(group, item).await;
        if !stored.as_ref().is_ok_and(|a| !a.duplicate) {
            self.unqueued(group);
        }
        stored.map_err(|c| {
            (
                c,
                "the group's event could not be stored now; retry".to_string(),
            )
        })?;
        self.fan_out(group);
        Ok(())
    }

    /// A message: refused unless `from` is a member now, else queued on
    /// the group's log under the current version; the receiver answers
    /// once it is durable.
    async fn send(
        &self,
        group: &str,
        from: &str,
        device: u32,
        s: SendGroup,
    ) -> Result<tokio::sync::oneshot::Receiver<link_down::Kind>, Refused> {
        let mut state = self.load(group, false).await?;
        if !state.as_ref().is_some_and(|(_, g)| g.is_member(from)) {
            state = self.load(group, true).await?;
        }
        let Some((_, g)) = state else {
            return Err((Code::NoSuchGroup, "no such group".into()));
        };
        if !g.is_member(from) {
            return Err((
                Code::NotAMember,
                "not a member of this group (any more): refresh its membership".into(),
            ));
        }
        let admitted = lock(&self.backlog).admit(group, Instant::now());
        if admitted.is_err() {
            Metrics::add(&self.metrics.group_busy, 1);
            return Err((
                Code::GroupBusy,
                "the group has too many messages still to copy to its members; resend later".into(),
            ));
        }
        self.publish_backlog();
        let item = Envelope {
            from: from.to_owned(),
            from_device: device,
            id: s.id,
            server_ts_ms: 0,
            content: Some(envelope::Content::Body(s.body)),
            group: group.to_owned(),
            group_version: g.version,
        };
        self.local.submit_append(group, item).await.map_err(|c| {
            self.unqueued(group);
            (c, "the group's home is stopping".into())
        })
    }

    /// An item of `group`'s queue is gone (fanned out), or a place taken
    /// in it was not used.
    fn unqueued(&self, group: &str) {
        lock(&self.backlog).done(group, Instant::now());
        self.publish_backlog();
    }

    /// `group` is no longer fanned out here: its queue's count and its
    /// cached record go.
    fn forget(&self, group: &str) {
        lock(&self.backlog).forget(group);
        self.publish_backlog();
        self.uncache(group);
    }

    fn publish_backlog(&self) {
        let total = lock(&self.backlog).total() as u64;
        self.metrics.group_fanout_queue.store(total, Relaxed);
    }

    fn cache(&self, group: &str, version: u64, state: GroupState) {
        let mut c = lock(&self.cache);
        c.insert(group, version, state);
        self.metrics
            .group_records_cached_bytes
            .store(c.bytes() as u64, Relaxed);
    }

    fn uncache(&self, group: &str) {
        let mut c = lock(&self.cache);
        c.remove(group);
        self.metrics
            .group_records_cached_bytes
            .store(c.bytes() as u64, Relaxed);
    }
}

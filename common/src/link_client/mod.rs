//! A request/response client of the internal link, for services that ask
//! homes questions rather than hold sessions (wa-register).
//!
//! It speaks the same link as an edge ([`crate::link`]): TLS 1.3 to each
//! island's primary (roots = the cluster CA, SNI = the island's
//! `server_name`, ALPN [`LINK_ALPN`]), `Auth` with the cluster secret first.
//! One connection per store node, opened on first use and again when a
//! request wants it after it broke (by `crate::link_keeper`, the reconnect
//! loop every client of the link shares, with backoff between failed
//! attempts); requests carry a `req` unique per connection and are matched to
//! their answers, which may come in any order. A request whose connection
//! breaks fails with [`LinkClientError::Unavailable`]; the caller decides
//! whether to retry (key-value writes are compare-and-set, so a retry after
//! an unknown outcome sees a conflict rather than writing twice).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{ClusterMap, Island};
use crate::link::{
    KvGet, KvPut, KvReq, KvResult, KvSpace, LINK_ALPN, Revoke, kv_req, link_down, link_up,
};

mod connection;

use connection::Slot;

/// How often a request refused for the wrong home or epoch is sent again
/// (after reading the map again), and the pause between tries: about the
/// refusal window of a fragment move.
const REROUTE_ATTEMPTS: u32 = 50;
const REROUTE_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum LinkClientError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot reach the home at {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("the link to the home at {addr} broke before the answer came")]
    Unavailable { addr: SocketAddr },
    #[error("the home at {addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("the home refused the request with code {code}")]
    Refused { code: u32 },
}

/// The answer of a home that answered with the wrong kind of frame.
fn internal() -> LinkClientError {
    LinkClientError::Refused {
        code: crate::proto::Code::Internal as u32,
    }
}

/// A key-value record as the home holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRecord {
    /// Empty: absent or deleted.
    pub value: Bytes,
    /// 0: never written.
    pub version: u64,
    /// For accounts: when the user was last connected (unix ms, 0 never).
    pub last_seen_ms: u64,
}

impl KvRecord {
    pub fn exists(&self) -> bool {
        !self.value.is_empty()
    }
}

/// What a compare-and-set did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// Stored; the record as it now is.
    Stored(KvRecord),
    /// Another version was found and nothing was stored; the current record.
    Conflict(KvRecord),
}

/// The client; cheap to share behind an `Arc`.
pub struct LinkClient {
    /// (Shared with the keepers, which announce its epoch when they dial.)
    map: Arc<std::sync::RwLock<Arc<ClusterMap>>>,
    /// Where to read the map again when a home refuses a request with
    /// `WRONG_HOME` or `STALE_EPOCH` (the map moved a fragment).
    map_file: Option<std::path::PathBuf>,
    dialer: Arc<crate::link_dial::Dialer>,
    timeout: Duration,
    /// By store address and server name.
    slots: Mutex<HashMap<(SocketAddr, String), Arc<Slot>>>,
    /// Cancelled when the client is dropped: the keepers end.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl LinkClient {
    /// A client of the homes in `map`, trusting `roots` (the cluster CA),
    /// authenticating with `secret` as `name`. Connects lazily.
    pub fn new(
        map: ClusterMap,
        roots: &[CertificateDer<'static>],
        secret: Bytes,
        name: String,
        timeout: Duration,
    ) -> Result<LinkClient, LinkClientError> {
        let tls = crate::tls::client_config(roots, &[LINK_ALPN])?;
        Ok(LinkClient {
            map: Arc::new(std::sync::RwLock::new(Arc::new(map))),
            map_file: None,
            dialer: Arc::new(crate::link_dial::Dialer {
                connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                secret,
                name,
            }),
            timeout,
            slots: Mutex::default(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// Reads the map again from `path` whenever a home says it is not the
    /// one (or the epoch moved on), and retries there.
    pub fn reloading_from(mut self, path: std::path::PathBuf) -> LinkClient {
        self.map_file = Some(path);
        self
    }

    /// The map this client goes by now.
    pub fn current_map(&self) -> Arc<ClusterMap> {
        self.map()
    }

    /// Appends a group's `envelope` to each of `members` (all homed on one
    /// island, by [`LinkClient::current_map`]) at that island's primary, in
    /// one round trip: a code per member, in their order (`WRONG_HOME` or
    /// `STALE_EPOCH` for a member the map has moved: group again and retry).
    pub async fn group_deliver(
        &self,
        envelope: crate::proto::Envelope,
        members: Vec<String>,
    ) -> Result<Vec<u32>, LinkClientError> {
        let Some(first) = members.first() else {
            return Ok(Vec::new());
        };
        self.per_user(
            first,
            |req, epoch| {
                link_up::Kind::GroupDeliver(crate::link::GroupDeliver {
                    req,
                    epoch,
                    envelope: Some(envelope.clone()),
                    members: members.clone(),
                })
            },
            |answer| match answer {
                link_down::Kind::GroupDelivered(r) => Some((r.code, r.codes)),
                _ => None,
            },
        )
        .await
    }

    /// Sends `make(req, epoch)` about users at the home of `first` and
    /// returns the code per user that `codes` finds in the answer beside
    /// the answer's own code; a home that says it is not the one (or cannot
    /// be reached while the map file names another) makes it read the map
    /// and send again there, as [`LinkClient::routed`] does.
    async fn per_user(
        &self,
        first: &str,
        make: impl Fn(u64, u64) -> link_up::Kind,
        codes: impl Fn(link_down::Kind) -> Option<(u32, Vec<u32>)>,
    ) -> Result<Vec<u32>, LinkClientError> {
        let mut attempt = 0;
        loop {
            let map = self.map();
            let island = map.home(first).clone();
            let answer = self.request(&island, |req| make(req, map.epoch)).await;
            match answer.map(&codes) {
                Ok(Some((0, c))) => return Ok(c),
                Ok(Some((code, _))) => {
                    if self.reload_after(code, attempt).await {
                        attempt += 1;
                        continue;
                    }
                    return Err(LinkClientError::Refused { code });
                }
                Ok(None) => return Err(internal()),
                Err(e @ LinkClientError::Connect { .. }) => {
                    if attempt < REROUTE_ATTEMPTS && self.map_moved() {
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Counts `group` among the groups of each of `users` (all at one
    /// home), or stops counting it (`join` false): one code per user (see
    /// [`crate::link::GroupsCounted`]).
    pub async fn count_groups(
        &self,
        group: &str,
        users: Vec<String>,
        join: bool,
    ) -> Result<Vec<u32>, LinkClientError> {
        let Some(first) = users.first() else {
            return Ok(Vec::new());
        };
        self.per_user(
            first,
            |req, epoch| {
                link_up::Kind::CountGroups(crate::link::CountGroups {
                    req,
                    epoch,
                    group: group.to_owned(),
                    users: users.clone(),
                    join,
                })
            },
            |answer| match answer {
                link_down::Kind::GroupsCounted(r) => Some((r.code, r.codes)),
                _ => None,
            },
        )
        .await
    }

    /// A group request `up` (its `req` and `epoch` filled in here) at the
    /// group's home: its answer, whatever its code.
    pub async fn group(
        &self,
        up: crate::link::GroupUp,
    ) -> Result<crate::link::GroupDown, LinkClientError> {
        let map = self.map();
        let island = map.home(&up.group).clone();
        let answer = self
            .request(&island, |req| {
                link_up::Kind::Group(crate::link::GroupUp {
                    req,
                    epoch: map.epoch,
                    ..up.clone()
                })
            })
            .await?;
        match answer {
            link_down::Kind::GroupResult(r) => Ok(r),
            _ => Err(internal()),
        }
    }

    fn map(&self) -> Arc<ClusterMap> {
        Arc::clone(&self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A home could not be reached: whether the map file now says
    /// something else (a store moved to another address, say), so that the
    /// request is worth sending again.
    fn map_moved(&self) -> bool {
        let Some(path) = &self.map_file else {
            return false;
        };
        let Ok(m) = ClusterMap::load(path) else {
            return false;
        };
        let mut cur = self.map.write().unwrap_or_else(|p| p.into_inner());
        if m.epoch >= cur.epoch && m != **cur {
            *cur = Arc::new(m);
            return true;
        }
        false
    }

    /// After a `WRONG_HOME` or `STALE_EPOCH`: whether a newer map was read,
    /// so that the request is worth sending again.
    async fn reload_after(&self, code: u32, attempt: u32) -> bool {
        use crate::proto::Code;
        let Some(path) = &self.map_file else {
            return false;
        };
        if !matches!(
            Code::from_u32(code),
            Some(Code::WrongHome | Code::StaleEpoch)
        ) || attempt >= REROUTE_ATTEMPTS
        {
            return false;
        }
        if attempt > 0 {
            tokio::time::sleep(REROUTE_PAUSE).await;
        }
        match ClusterMap::load(path) {
            Ok(m) => {
                let mut cur = self.map.write().unwrap_or_else(|p| p.into_inner());
                if m.epoch > cur.epoch {
                    *cur = Arc::new(m);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the cluster map");
                true
            }
        }
    }

    /// Reads the record `key` of `space` at its home.
    pub async fn kv_get(&self, space: KvSpace, key: &str) -> Result<KvRecord, LinkClientError> {
        let r = self
            .kv(space, key, kv_req::Op::Get(KvGet {}), false)
            .await?;
        Ok(record(r))
    }

    /// Hands a key-value record over to its new home (a fragment moved):
    /// `value` (empty: the record was deleted) replaces whatever that home
    /// has, which is a stale copy from an earlier time it owned the key
    /// (the fragment is refused to everything but the hand-over until it
    /// has arrived). A retry finds the value there and writes nothing.
    pub async fn hand_over_kv(
        &self,
        space: KvSpace,
        key: &str,
        value: Bytes,
    ) -> Result<(), LinkClientError> {
        loop {
            let there = self.kv(space, key, kv_req::Op::Get(KvGet {}), true).await?;
            if there.value == value {
                return Ok(());
            }
            let put = kv_req::Op::Put(KvPut {
                value: value.clone(),
                expected_version: there.version,
            });
            if !self.kv(space, key, put, true).await?.conflict {
                return Ok(());
            }
        }
    }

    /// Stores `value` (empty deletes) if the record's version is still
    /// `expected_version`.
    pub async fn kv_put(
        &self,
        space: KvSpace,
        key: &str,
        value: Bytes,
        expected_version: u64,
    ) -> Result<Cas, LinkClientError> {
        let r = self
            .kv(
                space,
                key,
                kv_req::Op::Put(KvPut {
                    value,
                    expected_version,
                }),
                false,
            )
            .await?;
        Ok(if r.conflict {
            Cas::Conflict(record(r))
        } else {
            Cas::Stored(record(r))
        })
    }

    /// Appends `envelope` to `to`'s mailbox at its home; `Ok` once the home
    /// has it durably (a duplicate included: appends are idempotent by
    /// their dedupe key, so retrying after an unknown outcome is safe).
    pub async fn append(
        &self,
        to: &str,
        envelope: crate::proto::Envelope,
    ) -> Result<crate::link::AppendResult, LinkClientError> {
        self.append_as(to, envelope, false).await
    }

    /// [`LinkClient::append`] of an item this home hands over with its
    /// fragment: it keeps its time, and the new home takes it before it
    /// serves the fragment.
    pub async fn hand_over(
        &self,
        to: &str,
        envelope: crate::proto::Envelope,
    ) -> Result<crate::link::AppendResult, LinkClientError> {
        self.append_as(to, envelope, true).await
    }

    /// Tells `island`'s primary that fragments `[first, last]` have all
    /// been handed over under the map of `epoch`.
    pub async fn handoff_done(
        &self,
        island: &Island,
        first: u32,
        last: u32,
        epoch: u64,
    ) -> Result<(), LinkClientError> {
        let answer = self
            .request(island, |req| {
                link_up::Kind::Handoff(crate::link::HandoffDone {
                    req,
                    first,
                    last,
                    epoch,
                })
            })
            .await?;
        match answer {
            link_down::Kind::HandoffResult(r) if r.code == 0 => Ok(()),
            link_down::Kind::HandoffResult(r) => Err(LinkClientError::Refused { code: r.code }),
            _ => Err(LinkClientError::Refused {
                code: crate::proto::Code::Internal as u32,
            }),
        }
    }

    /// Reads the map file again (SIGHUP); true if it was newer and is now
    /// the one this client goes by.
    pub fn reload(&self) -> bool {
        let Some(path) = &self.map_file else {
            return false;
        };
        match ClusterMap::load(path) {
            Ok(m) => {
                let newer = m.epoch > self.map().epoch;
                self.follow(&m);
                newer
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the cluster map; keeping the current one");
                false
            }
        }
    }

    /// Goes by `map` from now on if it is newer than the one it has.
    pub fn follow(&self, map: &ClusterMap) {
        let mut cur = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.epoch > cur.epoch {
            *cur = Arc::new(map.clone());
        }
    }

    async fn append_as(
        &self,
        to: &str,
        envelope: crate::proto::Envelope,
        handoff: bool,
    ) -> Result<crate::link::AppendResult, LinkClientError> {
        let answer = self
            .routed(to, |req, epoch| {
                link_up::Kind::Append(crate::link::Append {
                    req,
                    to: to.to_owned(),
                    envelope: Some(envelope.clone()),
                    epoch,
                    handoff,
                    from_generation: 0,
                })
            })
            .await?;
        match answer {
            link_down::Kind::AppendResult(r) => Ok(r),
            _ => Err(internal()),
        }
    }

    /// Sends `make(req, epoch)` to the home of `key` and returns the answer
    /// once it says 0. A home that says it is not the one (`WRONG_HOME`,
    /// `STALE_EPOCH`), or one that cannot be reached while the map file
    /// names another, makes it read the map and send again there.
    async fn routed(
        &self,
        key: &str,
        make: impl Fn(u64, u64) -> link_up::Kind,
    ) -> Result<link_down::Kind, LinkClientError> {
        let mut attempt = 0;
        loop {
            let map = self.map();
            let island = map.home(key).clone();
            let answer = match self.request(&island, |req| make(req, map.epoch)).await {
                Ok(a) => a,
                Err(e) => {
                    if matches!(e, LinkClientError::Connect { .. })
                        && attempt < REROUTE_ATTEMPTS
                        && self.map_moved()
                    {
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
            };
            let code = match &answer {
                link_down::Kind::AppendResult(r) => r.code,
                link_down::Kind::KvResult(r) => r.code,
                link_down::Kind::RevokeResult(r) => r.code,
                link_down::Kind::DeviceChecked(r) => r.code,
                _ => return Err(internal()),
            };
            if code == 0 {
                return Ok(answer);
            }
            if self.reload_after(code, attempt).await {
                attempt += 1;
                continue;
            }
            return Err(LinkClientError::Refused { code });
        }
    }

    /// Whether `user`'s home still accepts `device` at `generation`: false
    /// once it was revoked (removed, re-registered, account deleted).
    pub async fn device_accepted(
        &self,
        user: &str,
        device: u32,
        generation: u32,
    ) -> Result<bool, LinkClientError> {
        let answer = self
            .routed(user, |req, epoch| {
                link_up::Kind::CheckDevice(crate::link::CheckDevice {
                    req,
                    user: user.to_owned(),
                    device,
                    generation,
                    epoch,
                })
            })
            .await;
        match answer {
            Ok(_) => Ok(true),
            // (A banned account's devices are refused like revoked ones.)
            Err(LinkClientError::Refused { code })
                if code == crate::proto::Code::Revoked as u32
                    || code == crate::proto::Code::Banned as u32 =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes `user`'s home refuse `device` below `generation` and close its
    /// older sessions; returns how many were closed.
    pub async fn revoke(
        &self,
        user: &str,
        device: u32,
        generation: u32,
    ) -> Result<u32, LinkClientError> {
        self.revoke_as(user, device, generation, false).await
    }

    /// Hands a device's lowest accepted generation over to its user's new
    /// home (a fragment moved).
    pub async fn hand_over_generation(
        &self,
        user: &str,
        device: u32,
        generation: u32,
    ) -> Result<(), LinkClientError> {
        self.revoke_as(user, device, generation, true)
            .await
            .map(|_| ())
    }

    async fn revoke_as(
        &self,
        user: &str,
        device: u32,
        generation: u32,
        handoff: bool,
    ) -> Result<u32, LinkClientError> {
        let answer = self
            .routed(user, |req, epoch| {
                link_up::Kind::Revoke(Revoke {
                    req,
                    user: user.to_owned(),
                    device,
                    generation,
                    epoch,
                    handoff,
                })
            })
            .await?;
        match answer {
            link_down::Kind::RevokeResult(r) => Ok(r.kicked),
            _ => Err(internal()),
        }
    }

    async fn kv(
        &self,
        space: KvSpace,
        key: &str,
        op: kv_req::Op,
        handoff: bool,
    ) -> Result<KvResult, LinkClientError> {
        let answer = self
            .routed(key, |req, epoch| {
                link_up::Kind::Kv(KvReq {
                    req,
                    space: space as i32,
                    key: key.to_owned(),
                    op: Some(op.clone()),
                    epoch,
                    handoff,
                })
            })
            .await?;
        match answer {
            link_down::Kind::KvResult(r) => Ok(r),
            _ => Err(internal()),
        }
    }
}

impl LinkClient {
    /// Ends the keepers and their connections and waits for them; requests
    /// still waiting fail with `Unavailable`. (Dropping the client ends
    /// them too, without waiting.)
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for LinkClient {
    /// Ends the keepers and their connections; requests still waiting fail
    /// with `Unavailable`.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn record(r: KvResult) -> KvRecord {
    KvRecord {
        value: r.value,
        version: r.version,
        last_seen_ms: r.last_seen_ms,
    }
}

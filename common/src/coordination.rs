//! Automatic failover's one dependency: etcd (DESIGN §6: a lease from an
//! existing coordination service, never a home-made election). Optional:
//! without `[coordination] etcd`, the cluster map is a file and failover is
//! `wactl promote`.
//!
//! What lives in etcd, under `prefix` (default `/wa`):
//! - `PREFIX/cluster-map`: the cluster map, TOML, authoritative. Every node
//!   keeps its local map file equal to it ([`Coordinator::follow_map`]) and
//!   reloads on change, so the code that reads maps stays the same.
//! - `PREFIX/islands/NAME/primary`: the address of the island's serving
//!   primary, attached to that primary's lease ([`Lease`]). A primary serves
//!   only while its lease is surely alive; a secondary takes over, with one
//!   compare-and-swap on the map, once the key is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterMap;

/// `[coordination]` of every service that reads the cluster map.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationConfig {
    /// etcd client URLs (`http://10.0.0.5:2379`); empty: no automatic
    /// failover, the map is the local file.
    pub etcd: Vec<String>,
    /// Key prefix of this cluster in etcd.
    pub prefix: String,
    /// A primary's lease: it stops serving once it could not renew it for
    /// half of this, and its secondary takes over once it expired.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        CoordinationConfig {
            etcd: Vec::new(),
            prefix: "/wa".into(),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

impl CoordinationConfig {
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }

    /// Problems with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.enabled() && self.lease_ttl < Duration::from_secs(2) {
            errs.push("coordination.lease_ttl: at least 2s (etcd counts leases in seconds)".into());
        }
        if !self.prefix.starts_with('/') {
            errs.push("coordination.prefix: must start with /".into());
        }
        errs
    }
}

/// How long any one call to etcd may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the cluster map in etcd ({key}) is not valid: {reason}")]
    BadMap { key: String, reason: String },
    #[error("cannot write the cluster map file {path}: {source}")]
    MapFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CoordinationError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| CoordinationError::Timeout(CALL_TIMEOUT))?
        .map_err(CoordinationError::from)
}

/// A connection to etcd for one cluster (`prefix`).
#[derive(Clone)]
pub struct Coordinator {
    client: Client,
    prefix: String,
    pub ttl: Duration,
}

impl Coordinator {
    pub async fn connect(cfg: &CoordinationConfig) -> Result<Coordinator, CoordinationError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let client = bounded(Client::connect(&cfg.etcd, Some(opts))).await?;
        Ok(Coordinator {
            client,
            prefix: cfg.prefix.trim_end_matches('/').to_string(),
            ttl: cfg.lease_ttl,
        })
    }

    fn map_key(&self) -> String {
        format!("{}/cluster-map", self.prefix)
    }

    fn primary_key(&self, island: &str) -> String {
        format!("{}/islands/{island}/primary", self.prefix)
    }

    /// Present while `island`'s primary acknowledges appends its secondary
    /// does not have (`when_absent = "disk"` with the secondary away): no
    /// takeover while it is there, since the secondary would serve without
    /// them.
    fn alone_key(&self, island: &str) -> String {
        format!("{}/islands/{island}/alone", self.prefix)
    }

    /// Records, while `me` holds `island`'s primary key, that it goes on
    /// without its secondary. `true` if recorded (or already so); the
    /// primary may then acknowledge appends that only it has. The record
    /// outlives the lease: only the primary, with its secondary back and
    /// caught up, takes it away ([`Coordinator::clear_alone`]).
    pub async fn mark_alone(&mut self, island: &str, me: &str) -> Result<bool, CoordinationError> {
        let txn = Txn::new()
            .when([Compare::value(
                self.primary_key(island),
                CompareOp::Equal,
                me.as_bytes().to_vec(),
            )])
            .and_then([TxnOp::put(
                self.alone_key(island),
                me.as_bytes().to_vec(),
                None,
            )]);
        Ok(bounded(self.client.txn(txn)).await?.succeeded())
    }

    /// Takes the record of [`Coordinator::mark_alone`] away, while `me`
    /// holds `island`'s primary key. `true` if it is gone.
    pub async fn clear_alone(&mut self, island: &str, me: &str) -> Result<bool, CoordinationError> {
        let txn = Txn::new()
            .when([Compare::value(
                self.primary_key(island),
                CompareOp::Equal,
                me.as_bytes().to_vec(),
            )])
            .and_then([TxnOp::delete(self.alone_key(island), None)]);
        Ok(bounded(self.client.txn(txn)).await?.succeeded())
    }

    /// Who recorded that `island`'s primary runs without its secondary, if
    /// anyone.
    pub async fn alone(&mut self, island: &str) -> Result<Option<String>, CoordinationError> {
        let resp = bounded(self.client.get(self.alone_key(island), None)).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// The map in etcd and its revision, if there is one.
    pub async fn map(&mut self) -> Result<Option<(ClusterMap, i64)>, CoordinationError> {
        let key = self.map_key();
        let resp = bounded(self.client.get(key.clone(), None)).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(kv.value()).into_owned();
        let map = parse_map(&text).map_err(|reason| CoordinationError::BadMap { key, reason })?;
        Ok(Some((map, kv.mod_revision())))
    }

    /// The map in etcd; `local` is published first if etcd has none (the
    /// first node of a new cluster).
    pub async fn map_or_publish(
        &mut self,
        local: &ClusterMap,
    ) -> Result<(ClusterMap, i64), CoordinationError> {
        let key = self.map_key();
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, local.to_toml(), None)]);
        bounded(self.client.txn(txn)).await?;
        Ok(self
            .map()
            .await?
            .expect("published above, or already there"))
    }

    /// At start: etcd's map replaces the map file at `path` (or the file's
    /// map is published, for the first node of a new cluster). Returns the
    /// map now in force.
    pub async fn adopt_map(&mut self, path: &Path) -> Result<ClusterMap, CoordinationError> {
        let local = ClusterMap::load(path).map_err(|e| CoordinationError::BadMap {
            key: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let (map, _) = self.map_or_publish(&local).await?;
        write_map_file(path, &map)?;
        Ok(map)
    }

    /// Replaces the map with `map` if it is still at `revision`, no primary
    /// of `island` holds its key, and none recorded that it went on alone:
    /// a secondary's takeover, one compare-and-swap. `true` if it took.
    pub async fn take_over(
        &mut self,
        map: &ClusterMap,
        revision: i64,
        island: &str,
    ) -> Result<bool, CoordinationError> {
        let key = self.map_key();
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
                Compare::version(self.primary_key(island), CompareOp::Equal, 0),
                Compare::version(self.alone_key(island), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key, map.to_toml(), None)]);
        Ok(bounded(self.client.txn(txn)).await?.succeeded())
    }

    /// Whether a primary of `island` holds its lease key now.
    pub async fn primary_held(&mut self, island: &str) -> Result<bool, CoordinationError> {
        let resp = bounded(self.client.get(self.primary_key(island), None)).await?;
        Ok(!resp.kvs().is_empty())
    }

    /// Keeps the map file at `path` equal to etcd's, and notifies `reload`
    /// after each change, until `stop`. Polls every quarter of the lease
    /// (a watch would be faster; the bound is what matters: edges and
    /// stores learn a failover within a quarter lease of it).
    pub async fn follow_map(mut self, path: PathBuf, reload: Arc<Notify>, stop: CancellationToken) {
        let every = (self.ttl / 4).max(Duration::from_millis(100));
        let mut last: Option<i64> = None;
        let mut failing = false;
        tracing::info!(file = %path.display(), "following the cluster map in etcd");
        loop {
            match self.map().await {
                Ok(Some((map, rev))) if last != Some(rev) => {
                    match write_map_file(&path, &map) {
                        Ok(changed) => {
                            // (After the first look, every new revision is
                            // news, even if another process sharing this
                            // file wrote it there first.)
                            let news = changed || last.is_some();
                            last = Some(rev);
                            if news {
                                tracing::info!(
                                    epoch = map.epoch,
                                    "cluster map changed in etcd; reloading"
                                );
                                reload.notify_one();
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "cannot follow the cluster map"),
                    }
                    failing = false;
                }
                Ok(_) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the cluster map from etcd; keeping the local one");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Takes `island`'s primary key with a lease of its own, if no one
    /// holds it; `None` if someone does.
    pub async fn hold_primary(
        &mut self,
        island: &str,
        me: &str,
    ) -> Result<Option<Lease>, CoordinationError> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(2);
        let granted = bounded(self.client.lease_grant(ttl, None)).await?;
        let id = granted.id();
        let key = self.primary_key(island);
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                me.as_bytes().to_vec(),
                Some(PutOptions::new().with_lease(id)),
            )]);
        let granted_at = Instant::now();
        if !bounded(self.client.txn(txn)).await?.succeeded() {
            let _ = bounded(self.client.lease_revoke(id)).await;
            return Ok(None);
        }
        Ok(Some(Lease::keep(
            self.client.clone(),
            id,
            self.ttl,
            granted_at,
        )))
    }
}

/// For a service that only reads the map (wa-chat, wa-register): with etcd
/// configured, etcd's map replaces the file at `map` now (or the file's is
/// published, for a new cluster), and a task keeps the file equal to
/// etcd's, notifying `reload` after each change, until `stop`. Nothing
/// without etcd.
pub async fn follow_from_start(
    cfg: &CoordinationConfig,
    map: &Path,
    reload: Arc<Notify>,
    stop: CancellationToken,
) -> Result<(), CoordinationError> {
    if !cfg.enabled() {
        return Ok(());
    }
    let mut c = Coordinator::connect(cfg).await?;
    c.adopt_map(map).await?;
    tokio::spawn(c.follow_map(map.to_owned(), reload, stop));
    Ok(())
}

/// A held lease, renewed every third of its time to live by a task of its
/// own. [`Lease::safe`] turns false once half the TTL passed since the last
/// renewal: the holder must stop acting as primary then, well before etcd
/// can expire the lease and a secondary take over.
pub struct Lease {
    /// When the last renewal that etcd confirmed was sent, in ms since
    /// `epoch`.
    renewed_ms: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
    epoch: Instant,
    ttl: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    fn keep(mut client: Client, id: i64, ttl: Duration, granted_at: Instant) -> Lease {
        let epoch = granted_at;
        let renewed_ms = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicBool::new(false));
        let (r, l) = (Arc::clone(&renewed_ms), Arc::clone(&lost));
        let task = tokio::spawn(async move {
            let every = ttl / 3;
            loop {
                tokio::time::sleep(every).await;
                let sent = Instant::now();
                let renewed = async {
                    let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
                    keeper.keep_alive().await?;
                    stream.message().await
                };
                match tokio::time::timeout(every, renewed).await {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                        let ms = sent.duration_since(epoch).as_millis() as u64;
                        r.fetch_max(ms, Ordering::SeqCst);
                    }
                    Ok(Ok(_)) => {
                        tracing::error!("the primary's lease expired in etcd");
                        l.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the primary's lease"),
                    Err(_) => tracing::warn!("renewing the primary's lease timed out"),
                }
            }
        });
        Lease {
            renewed_ms,
            lost,
            epoch,
            ttl,
            task,
        }
    }

    /// The holder may act as primary: the lease was renewed within half its
    /// TTL (so etcd cannot have expired it) and was never lost.
    pub fn safe(&self) -> bool {
        let renewed = self.epoch + Duration::from_millis(self.renewed_ms.load(Ordering::SeqCst));
        !self.lost.load(Ordering::SeqCst) && renewed.elapsed() < self.ttl / 2
    }

    /// etcd said the lease is gone.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_map(text: &str) -> Result<ClusterMap, String> {
    let map: ClusterMap = toml::from_str(text).map_err(|e| e.to_string())?;
    map.validate().map_err(|e| e.to_string())?;
    Ok(map)
}

/// Writes `map` to `path` (atomically, `fsutil::write_atomic`) unless it already says
/// the same; `true` if it changed.
pub fn write_map_file(path: &Path, map: &ClusterMap) -> Result<bool, CoordinationError> {
    let text = map.to_toml();
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|source| {
        CoordinationError::MapFile {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(true)
}

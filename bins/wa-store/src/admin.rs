//! The store's part of the admin API (`common::admin`): its metrics (the
//! shards' atomics, read at scrape time), status fields (epoch, island,
//! what is still only in memory), `wactl queues` (the longest mailboxes
//! as of the last sweep), `wactl backup` ([`crate::backup`]) and `wactl
//! user` and `trace` ([`crate::inspect`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::routing::get;
use common::admin::Admin;
use common::admin::metrics::{Sample, Scrape};
use serde_json::json;

use crate::Store;
use crate::journal::Refusal;

impl Store {
    /// The link certificate edges see; `reload()` it on SIGHUP.
    pub fn cert(&self) -> Arc<common::tls::CertReloader> {
        Arc::clone(&self.cert)
    }

    /// Hooks this store into `admin`.
    pub fn install_admin(&self, admin: &Admin) {
        let metrics = Arc::clone(&self.metrics);
        let ownership = Arc::clone(&self.ownership);
        admin.collect(Scrape(move |s: &mut Sample<'_>| {
            metrics.sample(s);
            s.gauge(
                "wa_store_cluster_epoch",
                "Epoch of the cluster map in use",
                ownership.current().map.epoch as f64,
            );
        }));
        let metrics = Arc::clone(&self.metrics);
        let ownership = Arc::clone(&self.ownership);
        let island = self.island_name();
        admin.status_fields(move |m| {
            m.insert("epoch".into(), ownership.current().map.epoch.into());
            // (The map's name of it, also when the config leaves it to be
            // the map's only island.)
            m.insert("island".into(), island.clone().into());
            m.insert("connections".into(), metrics.links.load(Relaxed).into());
            m.insert(
                "dirty_items".into(),
                metrics.cache_items.load(Relaxed).into(),
            );
            m.insert("appends".into(), metrics.appends.load(Relaxed).into());
            let largest = metrics.report().largest.first().map_or(0, |l| l.1);
            m.insert("largest_mailbox".into(), largest.into());
            m.insert(
                "replication".into(),
                metrics.replication_status(ownership.fenced()),
            );
        });
        let (metrics, now) = (Arc::clone(&self.metrics), self.sweep_now.clone());
        admin.route(
            "/admin/expire",
            axum::routing::post(move || {
                let (metrics, now) = (Arc::clone(&metrics), now.clone());
                async move { expire_now(&metrics, &now).await }
            }),
        );
        if let Some(journal) = &self.journal {
            let journal = Arc::clone(journal);
            let min_free = self.config.disk.min_free;
            admin.readiness_check(move || match journal.refusal() {
                None => Ok(()),
                Some(Refusal::LowSpace) => Err(format!(
                    "the data directory has less than disk.min_free = {min_free} free; new messages are refused with STORAGE_FULL"
                )),
                Some(Refusal::Failed { no_space }) => Err(format!(
                    "the journal failed{}; restart the store (docs/OPERATIONS.md, \"A full disk\")",
                    if no_space { " on a full disk" } else { "" }
                )),
            });
        }
        self.install_backup(admin);
        crate::inspect::Inspect {
            home: Arc::clone(&self.home_slot),
            ownership: Arc::clone(&self.ownership),
            metrics: Arc::clone(&self.metrics),
        }
        .install(admin);
        let (providers, storage) = (Arc::clone(&self.providers), Arc::clone(&self.storage));
        admin.route(
            "/admin/push/test",
            axum::routing::post(move |q: axum::extract::Query<PushTest>| {
                let (providers, storage) = (Arc::clone(&providers), Arc::clone(&storage));
                async move { push_test(&providers, &*storage, &q.user, q.device).await }
            }),
        );
        let metrics = Arc::clone(&self.metrics);
        admin.route(
            "/admin/queues",
            get(move || {
                let report = metrics.report();
                async move {
                    let largest: Vec<_> = report
                        .largest
                        .iter()
                        .map(|(user, items, bytes)| {
                            json!({ "user": user, "items": items, "bytes": bytes })
                        })
                        .collect();
                    let buckets: Vec<_> = crate::metrics::LENGTH_BUCKETS
                        .iter()
                        .zip(report.buckets)
                        .map(|(le, n)| json!({ "at_most": le, "mailboxes": n }))
                        .collect();
                    axum::Json(json!({ "largest": largest, "by_length": buckets }))
                }
            }),
        );
    }
}

#[derive(serde::Deserialize)]
struct BackupQuery {
    dir: std::path::PathBuf,
}

impl Store {
    /// `POST /admin/backup?dir=DIR` starts a backup into DIR (on this
    /// store's machine); `GET /admin/backup` reports the last one.
    fn install_backup(&self, admin: &Admin) {
        use axum::http::StatusCode;
        let backups = Arc::new(crate::backup::Backups::default());
        let slot = Arc::clone(&self.journal_slot);
        let source = {
            let ownership = Arc::clone(&self.ownership);
            let node = self.config.node.clone();
            let island = self.island_name();
            let engine_dir = self.engine_dir();
            let storage = Arc::clone(&self.storage);
            let (engine, data_dir) = (self.engine, self.config.data_dir.clone());
            // (The journal is the one of the store serving as primary now:
            // none while it follows, a new one once promoted.)
            move || {
                let journal = slot.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
                let (ownership, node, island) =
                    (Arc::clone(&ownership), node.clone(), island.clone());
                let engine_dir = engine_dir.clone();
                Some(crate::backup::Source {
                    storage: Arc::clone(&storage),
                    journal,
                    engine,
                    data_dir: data_dir.clone(),
                    engine_bytes: Arc::new(move || crate::home::dir_bytes(&engine_dir)),
                    describe: Arc::new(move || {
                        json!({
                            "node": node,
                            "island": island,
                            "epoch": ownership.current().map.epoch,
                        })
                    }),
                })
            }
        };
        let b = Arc::clone(&backups);
        admin.route(
            "/admin/backup",
            get(move || {
                let report = b.report();
                async move { axum::Json(report) }
            })
            .post(
                move |axum::extract::Query(q): axum::extract::Query<BackupQuery>| {
                    let answer = match source() {
                        None => Err((
                            StatusCode::CONFLICT,
                            "this store does not serve as primary (a secondary, or starting): back up its island's primary".to_string(),
                        )),
                        Some(s) => backups
                            .start(s, q.dir)
                            .map(|job| axum::Json(job.report()))
                            .map_err(|e| (StatusCode::CONFLICT, e.to_string())),
                    };
                    async move { answer }
                },
            ),
        );
    }
}

/// `POST /admin/expire` (`wactl expire --now`): a sweep round now, at a
/// primary; how many undelivered items it deleted for being older than
/// `[mailbox] expire_after`.
async fn expire_now(
    metrics: &crate::metrics::Metrics,
    now: &tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<u64>>,
) -> Result<axum::Json<serde_json::Value>, (axum::http::StatusCode, &'static str)> {
    use axum::http::StatusCode;
    if metrics.following.load(Relaxed) == 1 {
        return Err((
            StatusCode::CONFLICT,
            "this store is a secondary: expiry runs at its primary",
        ));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    now.try_send(tx).map_err(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a sweep is already asked for; try again when it is done",
        )
    })?;
    match tokio::time::timeout(EXPIRE_TIMEOUT, rx).await {
        Ok(Ok(n)) => Ok(axum::Json(json!({ "expired": n }))),
        Ok(Err(_)) => Err((StatusCode::SERVICE_UNAVAILABLE, "the store is stopping")),
        Err(_) => Err((
            StatusCode::GATEWAY_TIMEOUT,
            "the sweep goes on, but did not finish within 60 s; see the store's log",
        )),
    }
}

#[derive(serde::Deserialize)]
struct PushTest {
    user: String,
    device: u32,
}

/// `POST /admin/push/test?user=U&device=D` (`wactl push test U D`): one
/// push to that device now, outside the queue; what the provider answered.
async fn push_test(
    providers: &crate::push::providers::Providers,
    storage: &dyn crate::storage::Storage,
    user: &str,
    device: u32,
) -> Result<axum::Json<serde_json::Value>, (axum::http::StatusCode, String)> {
    use crate::push::providers::Outcome;
    use axum::http::StatusCode;
    let (provider, outcome) = crate::push::test(providers, storage, user, device)
        .await
        .map_err(|e| (StatusCode::NOT_FOUND, e))?;
    let (ok, outcome) = match outcome {
        Outcome::Sent => (true, "sent".to_owned()),
        Outcome::Gone => (false, "the provider says the token is dead".to_owned()),
        Outcome::Retry { reason, .. } => (false, format!("failed for now: {reason}")),
        Outcome::Failed(reason) => (false, format!("failed: {reason}")),
    };
    let body = json!({ "provider": provider, "sent": ok, "outcome": outcome });
    if ok {
        Ok(axum::Json(body))
    } else {
        Err((StatusCode::BAD_GATEWAY, body.to_string()))
    }
}

/// How long `POST /admin/expire` waits for its round.
const EXPIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

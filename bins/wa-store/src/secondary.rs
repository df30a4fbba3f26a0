//! A store while its island's map names it secondary: it follows the
//! primary (`replication::follower`), refuses edges on its link port
//! (`standby`), watches the primary's lease when etcd is configured
//! (`failover::watch_primary`), and on promotion replays its journal and
//! hands the listener back to serve as the primary.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Store, StoreError, failover, recover, replication, standby};

impl Store {
    /// Follows the primary until promoted (the listener back, and the
    /// journal replayed and open) or shut down (`None`).
    pub(crate) async fn follow_until_promoted(
        &mut self,
        listener: TcpListener,
        shutdown: &CancellationToken,
        reload: &Arc<tokio::sync::Notify>,
    ) -> Result<Option<TcpListener>, StoreError> {
        let Some(roots) = &self.roots else {
            return Err(StoreError::ClusterCa(common::tls::TlsError::Certs {
                path: self.config.cluster.ca.display().to_string(),
                reason: "a secondary needs it to reach its primary".into(),
            }));
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(common::tls::client_config(
            roots,
            &[common::link::LINK_ALPN],
        )?));
        let follower = replication::follower::Follower {
            storage: Arc::clone(&self.storage),
            data_dir: self.config.data_dir.clone(),
            segment_size: self.config.journal.segment_size.as_u64(),
            sync_delay: self.config.cache.sync_delay,
            dialer: common::link_dial::Dialer {
                connector,
                secret: bytes::Bytes::from(self.secret.clone()),
                name: self.config.node.clone(),
            },
            ownership: Arc::clone(&self.ownership),
            metrics: Arc::clone(&self.metrics),
        };
        tracing::info!(node = %self.config.node, "this node is its island's secondary: following the primary");
        let standby_stop = CancellationToken::new();
        let standby = tokio::spawn(standby::refuse_all(
            listener,
            tokio_rustls::TlsAcceptor::from(Arc::clone(&self.tls)),
            Arc::new(self.secret.clone()),
            self.config.node.clone(),
            standby_stop.clone(),
        ));
        let takeover = self.coordination.clone().map(|c| {
            tokio::spawn(failover::watch_primary(
                c,
                self.config.cluster.map.clone(),
                self.me(),
                Arc::clone(&self.metrics),
                Arc::clone(reload),
                self.island_name(),
                standby_stop.clone(),
            ))
        });
        let followed =
            replication::follower::follow(follower, Arc::clone(reload), shutdown.clone()).await;
        standby_stop.cancel();
        if let Some(t) = takeover {
            let _ = t.await;
        }
        let listener = standby.await.expect("the standby listener does not panic");
        match followed? {
            replication::follower::Followed::Stopped => {
                tracing::info!("stopped");
                Ok(None)
            }
            replication::follower::Followed::Promoted => {
                let storage = Arc::clone(&self.storage);
                let dir = self.config.data_dir.join("journal");
                let size = self.config.journal.segment_size.as_u64();
                let journal = tokio::task::spawn_blocking(move || recover(&*storage, &dir, size))
                    .await
                    .expect("recovery does not panic")?;
                self.journal = Some(Arc::new(journal));
                let replica = self.config.data_dir.join(replication::follower::REPLICA);
                replication::follower::marker_remove(&replica).map_err(|source| {
                    StoreError::DataDir {
                        op: "remove the replica marker from",
                        dir: self.config.data_dir.clone(),
                        source,
                    }
                })?;
                tracing::info!(
                    epoch = self.ownership.current().epoch(),
                    "promoted: serving as the primary"
                );
                Ok(Some(listener))
            }
        }
    }
}

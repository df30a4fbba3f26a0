//! `wa-media`: upload once, download many, forget on time (docs/MEDIA.md).
//!
//! [`run`] is the whole server: [`Media::open`] loads the token keys and TLS
//! certificate and opens the blob [`store`]; [`Media::serve`] accepts HTTPS
//! connections ([`listener`]) and routes requests to [`upload`] and
//! [`download`] (which also holds delete), each caller authenticated by
//! [`auth`] and each upload admitted by [`limits`]; small hot blobs are served
//! from [`cache`]; the [`sweeper`] deletes expired blobs. On shutdown it stops
//! accepting, lets requests in flight finish up to the grace period, and
//! returns. `main.rs` and the tests call the same code.

pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod download;
pub mod error;
pub mod handle;
pub mod limits;
pub mod range;
pub mod revocation;
pub mod store;
pub mod sweeper;
pub mod upload;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use common::token::KeyRing;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{ApiError, MediaError};

use crate::cache::HotCache;
use crate::config::ExpiryConfig;
use crate::limits::Limits;
use crate::store::Store;

/// An upload whose body sends nothing for this long is cut off (408).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What every request handler shares.
pub struct App {
    pub node: String,
    pub keys: KeyRing,
    /// Whether a token's device is still accepted, asked of its home.
    pub revocations: revocation::Revocations,
    pub store: Store,
    pub cache: HotCache,
    pub limits: Arc<Limits>,
    pub expiry: ExpiryConfig,
    pub allowed_types: HashSet<String>,
    /// Requests by route and status (served on the admin listener).
    pub http: common::admin::http::HttpMetrics,
}

/// The HTTP routes (docs/MEDIA.md, "API").
pub fn router(app: Arc<App>) -> Router {
    let router = Router::new()
        .route(
            "/v1/media",
            post(upload::upload)
                .put(upload::upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/media/{handle}",
            get(download::download).delete(download::delete),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { ApiError::NotFound })
        .layer(tower_http::trace::TraceLayer::new_for_http());
    app.http.wrap(router.with_state(Arc::clone(&app)))
}

/// A media node with everything loaded, ready to serve.
pub struct Media {
    config: Config,
    app: Arc<App>,
    /// The certificate clients see; `reload()` it on SIGHUP.
    cert: Arc<common::tls::CertReloader>,
    tls: rustls::ServerConfig,
}

impl Media {
    /// Validates `config`, reads the files it names and opens the store.
    pub fn open(config: Config) -> Result<Media, MediaError> {
        config.validate()?;
        let mut keys = KeyRing::new();
        for k in &config.tokens.keys {
            let key = common::token::keyfile::read_verifying(&k.public_key).map_err(|source| {
                MediaError::TokenKey {
                    id: k.id.clone(),
                    source,
                }
            })?;
            keys.insert(k.id.clone(), key);
        }
        let cert = common::tls::CertReloader::open(&config.tls.cert, &config.tls.key)
            .map_err(MediaError::Tls)?;
        let tls = cert
            .server_config(&[b"http/1.1"])
            .map_err(MediaError::Tls)?;
        let link = if config.revocation.check {
            let c = &config.cluster;
            let map = common::cluster::ClusterMap::load(&c.map).map_err(MediaError::Cluster)?;
            let roots = common::tls::load_certs(&c.ca).map_err(MediaError::Tls)?;
            let secret =
                common::secret::read_cluster(&c.secret_file).map_err(MediaError::Secret)?;
            let link = common::link_client::LinkClient::new(
                map,
                &roots,
                secret.into(),
                config.node.clone(),
                c.timeout,
            )
            .map_err(MediaError::Link)?
            .reloading_from(c.map.clone());
            Some(link)
        } else {
            tracing::warn!(
                "revocation.check = false: revoked devices keep their media access until their tokens expire (development only)"
            );
            None
        };
        let store = Store::open(&config.data_dir)?;
        let (blobs, bytes) = store.usage();
        tracing::info!(blobs, bytes, dir = %config.data_dir.display(), "store opened");
        let app = Arc::new(App {
            node: config.node.clone(),
            keys,
            revocations: revocation::Revocations::new(link, config.revocation.recheck_after),
            store,
            cache: HotCache::new(config.cache.memory.as_u64(), config.cache.max_blob.as_u64()),
            limits: Arc::new(Limits::new(config.limits.clone())),
            expiry: config.expiry.clone(),
            allowed_types: config.types.allowed.iter().cloned().collect(),
            http: Default::default(),
        });
        Ok(Media {
            config,
            app,
            cert,
            tls,
        })
    }

    /// The certificate clients see; `reload()` it on SIGHUP.
    pub fn cert(&self) -> Arc<common::tls::CertReloader> {
        Arc::clone(&self.cert)
    }

    /// Hooks this node's metrics and status into `admin`.
    pub fn install_admin(&self, admin: &common::admin::Admin) {
        admin.register(|r| self.app.http.register(r, "wa_media"));
        let app = Arc::clone(&self.app);
        admin.collect(common::admin::metrics::Scrape(
            move |s: &mut common::admin::metrics::Sample<'_>| {
                let (blobs, bytes) = app.store.usage();
                s.gauge("wa_media_blobs", "Blobs stored", blobs as f64);
                s.gauge(
                    "wa_media_blob_bytes",
                    "Bytes of the blobs stored",
                    bytes as f64,
                );
            },
        ));
        let app = Arc::clone(&self.app);
        admin.status_fields(move |m| {
            let (blobs, bytes) = app.store.usage();
            m.insert("blobs".into(), blobs.into());
            m.insert("blob_bytes".into(), bytes.into());
        });
    }

    /// The state the handlers share (for tests and benchmarks).
    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    /// Serves HTTPS on `listener` until `shutdown`, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), MediaError> {
        let sweeper = tokio::spawn(sweeper::run(Arc::clone(&self.app), shutdown.clone()));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(self.tls));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, node = %self.app.node, "serving HTTPS");
        }
        common::https_server::serve(
            listener,
            acceptor,
            router(Arc::clone(&self.app)),
            shutdown.clone(),
            self.config.shutdown.grace,
        )
        .await;
        shutdown.cancel();
        let _ = sweeper.await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the node from `config` and serves `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MediaError> {
    Media::open(config)?.serve(listener, shutdown).await
}

//! `wa-register`: phone number + one-time code signup, registration lock,
//! credentials (docs/REGISTER.md).
//!
//! [`run`] is the whole server: [`Register::open`] loads the keys, secrets,
//! TLS certificate and cluster map; [`Register::serve`] accepts HTTPS
//! connections ([`listener`]) and routes requests to the handlers in
//! [`api`] (one file per request kind). A code request passes the allow-list
//! and [`limits`], gets a code from [`codes`] and goes out through an
//! [`sms`] provider, feeding the [`pumping`] signal. A verification checks
//! the code, the registration lock ([`pin`]) and writes the [`account`] at
//! the user's home in wa-store over the internal link
//! (`common::link_client`); re-registering revokes the older devices there,
//! which closes their sessions at the edges. [`tokens`] signs credentials.
//! Nothing here keeps state on disk.

pub mod account;
pub mod api;
pub mod cli;
pub mod codes;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod phone;
pub mod pin;
pub mod pumping;
pub mod revoke;
pub mod secret;
pub mod sms;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use common::token::{KeyRing, TokenSigner};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{ApiError, RegisterError};

use crate::account::Accounts;
use crate::codes::Codes;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pin::Pins;
use crate::pumping::Pumping;
use crate::sms::SmsProvider;
use crate::tokens::Tokens;

/// How often forgotten numbers and idle rate-limit keys are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What every request handler shares.
pub struct App {
    pub config: Config,
    pub codes: Codes,
    pub limits: Limits,
    pub pumping: Pumping,
    pub sms: Arc<dyn SmsProvider>,
    pub accounts: Accounts,
    pub pins: Pins,
    pub tokens: Tokens,
    pub metrics: Arc<Metrics>,
    /// Requests by route and status (served on the admin listener).
    pub http: common::admin::http::HttpMetrics,
    /// Test numbers and their fixed codes.
    pub test_numbers: HashMap<String, String>,
}

/// The HTTP routes (docs/REGISTER.md, "API").
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.limits.max_body.as_u64() as usize;
    let router = Router::new()
        .route("/v1/codes", post(api::request_code::handle))
        .route("/v1/verify", post(api::verify::handle))
        .route("/v1/tokens/refresh", post(api::refresh::handle))
        .route(
            "/v1/devices",
            get(api::devices::list).post(api::devices::link),
        )
        .route("/v1/devices/{id}", delete(api::devices::remove))
        .route("/v1/account", delete(api::account::delete))
        .route(
            "/v1/account/privacy",
            get(api::privacy::get).put(api::privacy::set),
        )
        .route(
            "/v1/account/pin",
            put(api::account::set_pin).delete(api::account::clear_pin),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        // After every route: it applies to the routes added so far.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(max_body));
    app.http.wrap(router.with_state(Arc::clone(&app)))
}

/// `?prefix=` of the admin operations on the pumping signal.
#[derive(serde::Deserialize)]
struct PrefixQuery {
    prefix: String,
}

/// A register service with everything loaded, ready to serve.
pub struct Register {
    app: Arc<App>,
    /// The certificate clients see; `reload()` it on SIGHUP.
    cert: Arc<common::tls::CertReloader>,
    tls: rustls::ServerConfig,
}

impl Register {
    /// What reads the cluster map again (`main.rs` calls it on SIGHUP).
    pub fn map_reloader(&self) -> impl Fn() + Send + Sync + 'static {
        let app = Arc::clone(&self.app);
        move || {
            if app.accounts.link.reload() {
                tracing::info!("cluster map reloaded");
            }
        }
    }

    /// [`Register::open`], after taking the cluster map from etcd when
    /// `[coordination]` names it; from then on etcd's map is followed into
    /// the map file and read again after each change, until `stop`.
    pub async fn start(
        config: Config,
        stop: &CancellationToken,
    ) -> Result<Register, RegisterError> {
        let from_etcd = Arc::new(tokio::sync::Notify::new());
        common::coordination::follow_from_start(
            &config.coordination,
            &config.cluster.map,
            Arc::clone(&from_etcd),
            stop.clone(),
        )
        .await?;
        let register = Register::open(config)?;
        let reload = register.map_reloader();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = from_etcd.notified() => reload(),
                    () = stop.cancelled() => return,
                }
            }
        });
        Ok(register)
    }

    /// Validates `config` and reads every file it names.
    pub fn open(config: Config) -> Result<Register, RegisterError> {
        config.validate()?;
        let cert = common::tls::CertReloader::open(&config.tls.cert, &config.tls.key)?;
        let tls = cert.server_config(&[b"http/1.1"])?;
        let map = common::cluster::ClusterMap::load(&config.cluster.map)?;
        let roots = common::tls::load_certs(&config.cluster.ca)?;
        let secret = common::secret::read_cluster(&config.cluster.secret_file)
            .map_err(RegisterError::Secret)?;
        let link = common::link_client::LinkClient::new(
            map,
            &roots,
            secret.into(),
            config.name.clone(),
            config.cluster.timeout,
        )?
        .reloading_from(config.cluster.map.clone());
        let signing = tokens::read_signing_key(&config.tokens.signing_key)?;
        let mut ring = KeyRing::new();
        for k in &config.tokens.verify_keys {
            let key = common::token::keyfile::read_verifying(&k.public_key).map_err(|source| {
                RegisterError::VerifyKey {
                    id: k.id.clone(),
                    source,
                }
            })?;
            ring.insert(k.id.clone(), key);
        }
        let pepper = secret::read(&config.pin.pepper_file, 16).map_err(RegisterError::Pepper)?;
        let sms = sms::provider(&config.sms)?;
        if config.mode == config::Mode::Development {
            tracing::warn!(
                provider = sms.name(),
                "development mode: not for real users"
            );
        }
        if !config.test_numbers.is_empty() {
            tracing::warn!(
                count = config.test_numbers.len(),
                "test numbers with fixed codes are configured"
            );
        }
        let app = Arc::new(App {
            codes: Codes::new(config.codes.clone()),
            limits: Limits::new(&config.limits, config.pumping.tightened),
            pumping: Pumping::new(config.pumping.clone()),
            sms,
            accounts: Accounts::new(link),
            pins: Pins::new(pepper.clone()),
            tokens: Tokens::new(
                TokenSigner::new(config.tokens.key_id.clone(), signing),
                ring,
                config.tokens.ttl,
                &pepper,
            ),
            metrics: Arc::default(),
            http: Default::default(),
            test_numbers: config
                .test_numbers
                .iter()
                .map(|t| (t.number.clone(), t.code.clone()))
                .collect(),
            config,
        });
        Ok(Register { app, cert, tls })
    }

    /// The state the handlers share (for tests).
    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    /// The certificate clients see; `reload()` it on SIGHUP.
    pub fn cert(&self) -> Arc<common::tls::CertReloader> {
        Arc::clone(&self.cert)
    }

    /// Hooks this service's metrics into `admin`.
    pub fn install_admin(&self, admin: &common::admin::Admin) {
        let metrics = Arc::clone(&self.app.metrics);
        admin.collect(common::admin::metrics::Scrape(
            move |s: &mut common::admin::metrics::Sample<'_>| metrics.sample(s),
        ));
        admin.register(|r| self.app.http.register(r, "wa_register"));
        let app = Arc::clone(&self.app);
        admin.collect(common::admin::metrics::Scrape(
            move |s: &mut common::admin::metrics::Sample<'_>| {
                let n = app
                    .pumping
                    .tightened_prefixes(std::time::Instant::now())
                    .len();
                s.gauge(
                    "wa_register_prefixes_tightened",
                    "Number prefixes whose code requests are held to pumping.tightened now",
                    n as f64,
                );
            },
        ));
        let app = Arc::clone(&self.app);
        admin.route(
            "/admin/pumping",
            get(move || {
                let app = Arc::clone(&app);
                async move {
                    let tightened = app.pumping.tightened_prefixes(std::time::Instant::now());
                    axum::Json(serde_json::json!({ "tightened": tightened }))
                }
            }),
        );
        let app = Arc::clone(&self.app);
        admin.route(
            "/admin/pumping/release",
            post(
                move |axum::extract::Query(q): axum::extract::Query<PrefixQuery>| {
                    let app = Arc::clone(&app);
                    async move {
                        // ("+" in a query string is a space: both spellings;
                        // a shown form ends in "*"s.)
                        let digits = q.prefix.trim().trim_start_matches('+');
                        let prefix = format!("+{digits}");
                        let released = app.pumping.release(&prefix, std::time::Instant::now());
                        tracing::info!(%prefix, released, "pumping tightening released by an operator");
                        axum::Json(serde_json::json!({ "prefix": prefix, "released": released }))
                    }
                },
            ),
        );
    }

    /// Serves HTTPS on `listener` until `shutdown`, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), RegisterError> {
        let sweeper = {
            let app = Arc::clone(&self.app);
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_EVERY);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = stop.cancelled() => return,
                    }
                    app.codes.sweep(std::time::Instant::now());
                    app.limits.sweep();
                }
            })
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(self.tls));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving HTTPS");
        }
        common::https_server::serve(
            listener,
            acceptor,
            router(Arc::clone(&self.app)),
            shutdown.clone(),
            self.app.config.shutdown.grace,
        )
        .await;
        shutdown.cancel();
        let _ = sweeper.await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the service from `config` and serves `listener` until `shutdown`
/// (the admin listener is the chassis's, `common::service`).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RegisterError> {
    Register::start(config, &shutdown)
        .await?
        .serve(listener, shutdown)
        .await
}

//! `wa-chat`: the edge (docs/ARCHITECTURE.md, "Edge sessions").
//!
//! [`run`] is the whole server: load keys, cluster map, secret and TLS
//! ([`Chat::open`]), keep a link to every home ([`links`], [`routing`]), accept
//! clients on TLS/TCP and QUIC ([`listener`]) and run one [`session`] task per
//! connection until the shutdown token is cancelled; then stop accepting, tell
//! every client Goodbye, wait for the sessions up to the grace period and
//! return. `main.rs` and the tests call the same code.

pub mod admin;
pub mod admission;
pub mod budget;
pub mod cli;
pub mod config;
pub mod error;
pub mod hub;
pub mod inbox;
pub mod link_conn;
pub mod links;
pub mod listener;
pub mod metrics;
pub mod outbound;
pub mod quic_tokens;
pub mod resumption;
pub mod routing;
pub mod session;
pub mod tls_stream;
pub mod transport;
pub mod udp;
pub mod writer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::cluster::ClusterMap;
use common::proto::Code;
use common::token::KeyRing;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use error::ChatError;

use crate::config::LimitsConfig;
use crate::hub::Hub;
use crate::links::LinkSettings;
use crate::metrics::ChatMetrics;
use crate::routing::{LinkSpawner, Router};

/// Extra QUIC idle time beyond the protocol's idle timeout, so that the
/// protocol, not the transport, decides when a silent client is gone.
const QUIC_IDLE_SLACK: Duration = Duration::from_secs(15);
/// How long the links get to deliver the sessions' last frames at shutdown.
const LINK_DRAIN: Duration = Duration::from_secs(2);
/// Tokens whose signature the edge remembers having verified
/// (`common::token_cache`): a reconnecting phone's login skips the Ed25519
/// check. About 470 bytes each (measured), so at most about 7.7 MB.
const VERIFIED_TOKENS: usize = 16_384;

/// The listeners `run` serves, bound by the caller (port 0 in tests). `tcp`
/// `None` or `quic` empty disables that transport.
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    /// The QUIC sockets, all bound to the one QUIC address ([`udp::bind`]
    /// with `[quic] quic_endpoints`); one quinn endpoint each.
    pub quic: Vec<std::net::UdpSocket>,
}

/// What every session shares.
pub struct Ctx {
    pub name: String,
    pub limits: LimitsConfig,
    pub retry_after: Duration,
    /// The token keys, remembering the tokens they verified.
    pub keys: common::token_cache::CachingKeyRing,
    pub router: Router,
    pub hub: Arc<Hub>,
    /// Client connections that finished their handshake and are open.
    pub active: AtomicUsize,
    /// Connections accepted whose admission or handshake is not over.
    pub pending: AtomicUsize,
    /// The login gate (see [`admission`]).
    pub admission: admission::Admission,
    pub shutdown: CancellationToken,
    pub metrics: Arc<ChatMetrics>,
    /// Set by an operator's drain (`wactl drain`): new connections are told
    /// to go elsewhere, and the sessions are ended over the drain window.
    pub draining: std::sync::atomic::AtomicBool,
    /// Bytes of client requests waiting for their homes, edge-wide.
    pub requests_budget: Arc<crate::budget::Budget>,
    /// Bytes of deliveries queued towards clients, edge-wide.
    pub deliveries_budget: Arc<crate::budget::Budget>,
    /// Bytes of the sessions' read and write buffers (held only while they
    /// have bytes to move; `wa_chat_session_buffer_bytes`).
    pub session_buffers: common::wire::BufferCount,
    /// The QUIC endpoints, one per socket on the QUIC port (the admin API
    /// reads their handshake counts).
    pub quic: Vec<quinn::Endpoint>,
}

impl Ctx {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The shutdown `retry_after` with up to half of it added at random, so
    /// that clients do not all come back at once.
    pub fn retry_after_ms(&self) -> u64 {
        let base = self.retry_after.as_millis() as u64;
        base + rand::random_range(0..=base / 2)
    }
}

/// An edge with everything loaded, ready to serve.
pub struct Chat {
    config: Config,
    keys: KeyRing,
    map: ClusterMap,
    secret: Bytes,
    /// The client certificate, read again on SIGHUP ([`Chat::reload_tls`]).
    cert: Arc<common::tls::CertReloader>,
    client_tls: rustls::ServerConfig,
    link_tls: rustls::ClientConfig,
    hub: Arc<Hub>,
    metrics: Arc<ChatMetrics>,
    /// The running edge's shared state, once it serves (the admin API
    /// reads it).
    running: Arc<OnceLock<Arc<Ctx>>>,
}

impl Chat {
    /// Validates `config` and reads every file it names.
    pub fn open(config: Config) -> Result<Chat, ChatError> {
        config.validate()?;
        let mut keys = KeyRing::new();
        for k in &config.tokens.keys {
            let key = common::token::keyfile::read_verifying(&k.public_key).map_err(|source| {
                ChatError::TokenKey {
                    id: k.id.clone(),
                    source,
                }
            })?;
            keys.insert(k.id.clone(), key);
        }
        let map = ClusterMap::load(&config.cluster.map)?;
        let secret =
            common::secret::read_cluster(&config.cluster.secret_file).map_err(ChatError::Secret)?;
        let cert = common::tls::CertReloader::open(&config.tls.cert, &config.tls.key)
            .map_err(ChatError::Tls)?;
        let mut client_tls = cert
            .server_config(&[common::proto::limits::ALPN])
            .map_err(ChatError::Tls)?;
        common::tls::issue_tickets(&mut client_tls).map_err(ChatError::Tls)?;
        let roots = common::tls::load_certs(&config.cluster.ca).map_err(ChatError::ClusterCa)?;
        let link_tls = common::tls::client_config(&roots, &[common::link::LINK_ALPN])
            .map_err(ChatError::ClusterCa)?;
        Ok(Chat {
            config,
            keys,
            map,
            secret: Bytes::from(secret),
            cert,
            client_tls,
            link_tls,
            hub: Arc::new(Hub::new()),
            metrics: Arc::default(),
            running: Arc::default(),
        })
    }

    /// The certificate clients see; `reload()` it on SIGHUP.
    pub fn cert(&self) -> Arc<common::tls::CertReloader> {
        Arc::clone(&self.cert)
    }

    /// Serves `listeners` until `shutdown`, then shuts down gracefully.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<(), ChatError> {
        self.serve_reloading(listeners, shutdown, Arc::default())
            .await
    }

    /// [`Chat::serve`], reading the cluster map again whenever `reload` is
    /// notified (`main.rs` does so on SIGHUP).
    pub async fn serve_reloading(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
        reload: Arc<tokio::sync::Notify>,
    ) -> Result<(), ChatError> {
        let Chat {
            config,
            keys,
            map,
            secret,
            cert: _,
            client_tls,
            link_tls,
            hub,
            metrics,
            running,
        } = self;
        let settings = Arc::new(LinkSettings {
            dialer: common::link_dial::Dialer {
                connector: tokio_rustls::TlsConnector::from(Arc::new(link_tls)),
                secret,
                name: config.name.clone(),
            },
            epoch: map.epoch.into(),
            times: crate::links::LinkTimes {
                heartbeat: config.link.heartbeat,
                timeout: config.link.timeout,
                request_timeout: config.link.request_timeout,
            },
        });
        let link_stop = CancellationToken::new();
        let link_tasks = TaskTracker::new();
        let router = Router::new(
            map,
            config.cluster.map.clone(),
            Some(LinkSpawner {
                settings,
                hub: Arc::clone(&hub),
                stop: link_stop.clone(),
                tasks: link_tasks.clone(),
            }),
        )
        .map_err(ChatError::Routing)?;

        let endpoints = quic_endpoints(listeners.quic, &client_tls, &config, &metrics)?;
        let ctx = Arc::new(Ctx {
            name: config.name.clone(),
            limits: config.limits.clone(),
            retry_after: config.shutdown.retry_after,
            keys: common::token_cache::CachingKeyRing::new(keys, VERIFIED_TOKENS),
            router,
            hub,
            active: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            admission: admission::Admission::new(&config.limits),
            shutdown: shutdown.clone(),
            metrics,
            draining: Default::default(),
            requests_budget: Arc::new(crate::budget::Budget::new(
                config.limits.request_memory.as_u64(),
            )),
            deliveries_budget: Arc::new(crate::budget::Budget::new(
                config.limits.delivery_memory.as_u64(),
            )),
            session_buffers: common::wire::BufferCount::default(),
            quic: endpoints.clone(),
        });
        let _ = running.set(Arc::clone(&ctx));
        let reloader = {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = reload.notified() => {}
                        () = ctx.shutdown.cancelled() => return,
                    }
                    let c = Arc::clone(&ctx);
                    let _ = tokio::task::spawn_blocking(move || c.router.reload()).await;
                }
            })
        };
        let sessions = TaskTracker::new();
        let accept = TaskTracker::new();
        if let Some(l) = listeners.tcp {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, "serving TLS over TCP");
            }
            let acceptor = Arc::new(client_tls);
            accept.spawn(listener::serve_tcp(
                l,
                acceptor,
                Arc::clone(&ctx),
                sessions.clone(),
            ));
        }
        if let Some(Ok(addr)) = endpoints.first().map(|e| e.local_addr()) {
            tracing::info!(%addr, endpoints = endpoints.len(), "serving QUIC");
        }
        for ep in &endpoints {
            accept.spawn(listener::serve_quic(
                ep.clone(),
                Arc::clone(&ctx),
                sessions.clone(),
            ));
        }
        accept.close();
        accept.wait().await;
        // Every session says Goodbye: told through its inbox (one that
        // registers after this sees the cancelled token at its loop's top;
        // logins not yet welcomed watch the token themselves).
        ctx.hub.kill_all(Code::ShuttingDown);
        let _ = reloader.await;

        // The listeners are closed; every session is saying Goodbye.
        let grace = config.shutdown.grace;
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(sessions = ctx.active(), "shutting down");
        sessions.close();
        if tokio::time::timeout_at(deadline, sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                cut = sessions.len(),
                "sessions cut at the end of the grace period"
            );
        }
        for ep in &endpoints {
            ep.close(
                quinn::VarInt::from_u32(Code::ShuttingDown as u32),
                b"shutting down",
            );
        }
        let idle_by = deadline.max(tokio::time::Instant::now() + Duration::from_millis(100));
        for ep in &endpoints {
            let _ = tokio::time::timeout_at(idle_by, ep.wait_idle()).await;
        }
        link_stop.cancel();
        link_tasks.close();
        let _ = tokio::time::timeout(LINK_DRAIN, link_tasks.wait()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// One quinn endpoint per socket, all with the same server configuration:
/// one address validation token key and one log of used tokens, one ticket
/// key (through `tls`), one stateless reset key, so that a client's token,
/// ticket or reset is good whichever socket the kernel hands its packets to.
fn quic_endpoints(
    sockets: Vec<std::net::UdpSocket>,
    tls: &rustls::ServerConfig,
    config: &Config,
    metrics: &ChatMetrics,
) -> Result<Vec<quinn::Endpoint>, ChatError> {
    if sockets.is_empty() {
        return Ok(Vec::new());
    }
    let mut tls = tls.clone();
    tls.ticketer =
        resumption::Counting::wrap(Arc::clone(&tls.ticketer), metrics.quic_resumed.clone());
    let crypto = common::tls::quic_server_crypto(tls).map_err(ChatError::Tls)?;
    let mut server = quinn::ServerConfig::with_crypto(crypto);
    let mut transport = common::tls::quic_cheap_transport();
    let idle = config.limits.idle_timeout + QUIC_IDLE_SLACK;
    transport
        .max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok())
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into());
    server.transport_config(Arc::new(transport));
    let q = &config.quic;
    server.max_incoming(q.quic_handshake_max_incoming.div_ceil(sockets.len()));
    let mut tokens = quinn::ValidationTokenConfig::default();
    tokens
        .sent(q.quic_token_sent)
        .lifetime(q.quic_token_lifetime)
        .log(Arc::new(quic_tokens::UsedTokens::new(
            q.quic_token_log_entries,
        )));
    server.validation_token_config(tokens);
    let endpoint_config = quinn::EndpointConfig::default();
    sockets
        .into_iter()
        .map(|socket| {
            udp::size_and_report(&socket, config.limits.quic_socket_buffer.as_u64() as usize);
            socket.set_nonblocking(true).map_err(ChatError::Quic)?;
            quinn::Endpoint::new(
                endpoint_config.clone(),
                Some(server.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(ChatError::Quic)
        })
        .collect()
}

/// Opens the edge from `config` and serves `listeners` until `shutdown`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ChatError> {
    Chat::open(config)?.serve(listeners, shutdown).await
}

//! The admin listener every service runs (DESIGN.md section 7): plain
//! HTTP/1.1 on a separate port, loopback by default (`[admin]`).
//!
//! - `GET /healthz`: 200 while the process serves requests at all;
//! - `GET /readyz`: 200 once the service is ready, 503 while it starts,
//!   while it drains, or while a readiness check of the service fails
//!   (wa-chat: no home reachable);
//! - `GET /metrics`: Prometheus text ([`metrics`]);
//! - `GET /admin/status`: who and how the node is, as JSON (wactl status);
//! - the service's own operations under `/admin/...` (wactl sessions,
//!   kick, queues, drain).
//!
//! Everything but the two health checks needs `Authorization: Bearer
//! TOKEN`, compared in constant time with the owner-only `admin.token_file`
//! (read at start and on SIGHUP). Without a token file nothing but the
//! health checks is answered. With `admin.socket`, the same API is served
//! on a Unix socket without a token ([`unix`]).

pub mod client;
pub mod http;
pub mod metrics;
pub mod unix;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::sections::{AdminConfig, MIN_ADMIN_TOKEN};
use metrics::{Registry, Sample, Scrape};

/// Where a service is in its life; `/readyz` answers from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
        }
    }
}

type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;
type StatusFn = Box<dyn Fn(&mut Map<String, Value>) + Send + Sync>;

/// The admin surface of one service: its phase, metrics registry,
/// readiness checks, status fields and operations. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    name: String,
    version: &'static str,
    started: Instant,
    phase: AtomicU8,
    /// SIGHUP reloads done.
    reloads: AtomicU64,
    registry: Mutex<Registry>,
    checks: Mutex<Vec<Check>>,
    status: Mutex<Vec<StatusFn>>,
    routes: Mutex<Router>,
    token: RwLock<Option<Vec<u8>>>,
}

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin.listen = {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("admin.token_file: {0}")]
    Token(crate::secret::SecretError),
    #[error("admin.socket = {}: {source}", path.display())]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl Admin {
    /// `service` is the binary (`wa-chat`), `name` the node's name in logs
    /// and the cluster, `version` the binary's version.
    pub fn new(service: &'static str, name: impl Into<String>, version: &'static str) -> Admin {
        let admin = Admin {
            inner: Arc::new(Inner {
                service,
                name: name.into(),
                version,
                started: Instant::now(),
                phase: AtomicU8::new(Phase::Starting as u8),
                reloads: AtomicU64::new(0),
                registry: Mutex::new(Registry::default()),
                checks: Mutex::default(),
                status: Mutex::default(),
                routes: Mutex::new(Router::new()),
                token: RwLock::new(None),
            }),
        };
        let weak = Arc::downgrade(&admin.inner);
        admin.collect(Scrape(move |s: &mut Sample<'_>| {
            metrics::process::sample(s);
            if let Some(a) = weak.upgrade() {
                s.gauge(
                    "wa_uptime_seconds",
                    "Seconds since the service started",
                    a.started.elapsed().as_secs_f64(),
                );
                s.counter(
                    "wa_reloads",
                    "Reloads done (SIGHUP)",
                    a.reloads.load(Ordering::Relaxed),
                );
                s.gauge(
                    "wa_ready",
                    "1 while /readyz answers 200",
                    f64::from(u8::from(Admin { inner: a }.readiness().is_ok())),
                );
            }
        }));
        admin
    }

    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    pub fn phase(&self) -> Phase {
        match self.inner.phase.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Moves to `phase`; draining is final.
    pub fn set_phase(&self, phase: Phase) {
        let _ = self
            .inner
            .phase
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                (p != Phase::Draining as u8).then_some(phase as u8)
            });
    }

    /// Counts a reload (SIGHUP) done.
    pub fn reloaded(&self) {
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers metrics on the service's registry.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.inner.registry.lock().expect("registry lock"));
    }

    /// Adds values read at scrape time.
    pub fn collect(&self, c: impl metrics::Collector) {
        self.register(|r| r.register_collector(Box::new(c)));
    }

    /// Adds a readiness condition beyond the phase (`Err` says why not).
    pub fn readiness_check(&self, f: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        self.inner
            .checks
            .lock()
            .expect("checks lock")
            .push(Box::new(f));
    }

    /// Adds fields to `/admin/status`.
    pub fn status_fields(&self, f: impl Fn(&mut Map<String, Value>) + Send + Sync + 'static) {
        self.inner
            .status
            .lock()
            .expect("status lock")
            .push(Box::new(f));
    }

    /// Adds an authenticated operation (`path` starts with `/admin/`).
    pub fn route(&self, path: &str, method: axum::routing::MethodRouter) {
        let mut routes = self.inner.routes.lock().expect("routes lock");
        let r = std::mem::take(&mut *routes);
        *routes = r.route(path, method);
    }

    /// `Ok` when `/readyz` would answer 200.
    pub fn readiness(&self) -> Result<(), String> {
        match self.phase() {
            Phase::Ready => {}
            p => return Err(p.name().into()),
        }
        for check in self.inner.checks.lock().expect("checks lock").iter() {
            check()?;
        }
        Ok(())
    }

    pub fn render_metrics(&self) -> String {
        metrics::render(&self.inner.registry.lock().expect("registry lock"))
    }

    /// The `/admin/status` document.
    pub fn status(&self) -> Value {
        let mut m = Map::new();
        m.insert("service".into(), self.inner.service.into());
        m.insert("name".into(), self.inner.name.clone().into());
        m.insert("version".into(), self.inner.version.into());
        m.insert(
            "uptime_secs".into(),
            self.inner.started.elapsed().as_secs().into(),
        );
        m.insert("phase".into(), self.phase().name().into());
        m.insert(
            "reloads".into(),
            self.inner.reloads.load(Ordering::Relaxed).into(),
        );
        m.insert(
            "ready".into(),
            match self.readiness() {
                Ok(()) => Value::Bool(true),
                Err(_) => Value::Bool(false),
            },
        );
        if let Err(why) = self.readiness() {
            m.insert("not_ready".into(), why.into());
        }
        for f in self.inner.status.lock().expect("status lock").iter() {
            f(&mut m);
        }
        Value::Object(m)
    }

    /// Reads the token file again; a missing file leaves the API closed.
    pub fn load_token(&self, config: &AdminConfig) -> Result<(), AdminError> {
        let token = match crate::secret::read(&config.token_file, MIN_ADMIN_TOKEN) {
            Ok(t) => Some(trim(t)),
            Err(crate::secret::SecretError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::warn!(
                    file = %config.token_file.display(),
                    "no admin token: the admin API answers health checks only"
                );
                None
            }
            Err(e) => return Err(AdminError::Token(e)),
        };
        *self.inner.token.write().expect("token lock") = token;
        Ok(())
    }

    /// Binds `config.listen` and reads the token.
    pub async fn bind(&self, config: &AdminConfig) -> Result<TcpListener, AdminError> {
        self.load_token(config)?;
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| AdminError::Bind {
                addr: config.listen,
                source,
            })
    }

    /// The whole router: health checks, then the authenticated rest. The
    /// service's operations are looked up per request, so the ones added
    /// after the listener started (the service registers them once it is
    /// open) are served too.
    pub fn router(&self) -> Router {
        let authed = self
            .operations_router()
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authorize,
            ));
        self.health_router().merge(authed)
    }

    /// [`Admin::router`] without the token check, for the Unix socket,
    /// whose file permissions are the access control ([`unix`]).
    pub fn trusted_router(&self) -> Router {
        self.health_router().merge(self.operations_router())
    }

    fn health_router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz_handler))
            .with_state(self.clone())
    }

    fn operations_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/admin/status", get(status_handler))
            .fallback(operations)
            .with_state(self.clone())
    }

    /// Serves the admin API on `listener` until `shutdown`. It keeps
    /// answering while the service drains, so `/readyz` can say so.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let router = self.router();
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    }

    fn token_matches(&self, presented: &[u8]) -> bool {
        match &*self.inner.token.read().expect("token lock") {
            Some(t) => bool::from(t.as_slice().ct_eq(presented)),
            None => false,
        }
    }
}

/// A token file may end with a newline (`echo ... > file`).
fn trim(mut t: Vec<u8>) -> Vec<u8> {
    while t.last().is_some_and(|b| b.is_ascii_whitespace()) {
        t.pop();
    }
    t
}

async fn authorize(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(p) if admin.token_matches(p) => next.run(req).await,
        Some(_) => (StatusCode::FORBIDDEN, "wrong admin token\n").into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "admin token required\n",
        )
            .into_response(),
    }
}

async fn operations(State(admin): State<Admin>, req: Request) -> Response {
    use tower::ServiceExt;
    let routes = admin.inner.routes.lock().expect("routes lock").clone();
    match routes.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

async fn readyz_handler(State(admin): State<Admin>) -> Response {
    match admin.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics_handler(State(admin): State<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        admin.render_metrics(),
    )
        .into_response()
}

async fn status_handler(State(admin): State<Admin>) -> axum::Json<Value> {
    axum::Json(admin.status())
}

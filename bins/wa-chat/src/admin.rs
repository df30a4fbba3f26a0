//! The edge's part of the admin API (`common::admin`): its metrics, its
//! readiness (some home reachable), its status fields, and the operations
//! `wactl sessions USER`, `wactl kick USER [DEVICE]` and `wactl drain EDGE`.
//!
//! Everything reads the running edge's [`Ctx`] once [`Chat::serve`] built
//! it; before that the edge has no sessions and is not ready.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Query;
use axum::routing::{get, post};
use common::admin::Admin;
use common::admin::metrics::{Sample, Scrape};
use common::proto::Code;
use serde_json::json;

use crate::{Chat, Ctx};

/// Upper bounds of the outbound queue length distribution.
const OUTBOUND_BUCKETS: [usize; 5] = [0, 16, 64, 256, 1024];

#[derive(serde::Deserialize)]
struct DrainQuery {
    /// The window over which the sessions are ended.
    over_ms: u64,
}

#[derive(serde::Deserialize)]
struct UserQuery {
    user: String,
    #[serde(default)]
    device: Option<u32>,
}

impl Chat {
    /// Hooks this edge into `admin`.
    pub fn install_admin(&self, admin: &Admin) {
        let running = Arc::clone(&self.running);
        admin.register(|r| self.metrics.register(r));
        {
            let running = Arc::clone(&running);
            admin.collect(Scrape(move |s: &mut Sample<'_>| scrape(&running, s)));
        }
        {
            let running = Arc::clone(&running);
            admin.readiness_check(move || {
                let ctx = running.get().ok_or("starting")?;
                let links = ctx.router.links();
                if links.iter().any(|l| l.current().is_some()) {
                    Ok(())
                } else {
                    Err("no home reachable".into())
                }
            });
        }
        {
            let running = Arc::clone(&running);
            admin.status_fields(move |m| {
                let Some(ctx) = running.get() else { return };
                m.insert("connections".into(), ctx.active().into());
                m.insert(
                    "draining".into(),
                    ctx.draining.load(Ordering::Relaxed).into(),
                );
                m.insert("sessions".into(), ctx.hub.len().into());
                m.insert("epoch".into(), ctx.router.epoch().into());
                let links: Vec<_> = ctx
                    .router
                    .links()
                    .iter()
                    .map(|l| {
                        let (control, bulk) =
                            l.current().map(|c| c.queue_lengths()).unwrap_or_default();
                        json!({
                            "addr": l.addr.to_string(),
                            "up": l.current().is_some(),
                            "queue_control": control,
                            "queue_appends": bulk,
                        })
                    })
                    .collect();
                m.insert("links".into(), links.into());
            });
        }
        let hub = Arc::clone(&self.hub);
        admin.route(
            "/admin/sessions",
            get(move |Query(q): Query<UserQuery>| {
                let hub = Arc::clone(&hub);
                async move {
                    let sessions: Vec<_> = hub
                        .sessions_of(&q.user)
                        .into_iter()
                        .map(|(id, i)| {
                            json!({ "id": id, "device": i.device, "since_ms": i.since_ms })
                        })
                        .collect();
                    axum::Json(json!({ "user": q.user, "sessions": sessions }))
                }
            }),
        );
        let drain_admin = admin.clone();
        admin.route(
            "/admin/drain",
            post(move |Query(q): Query<DrainQuery>| {
                let running = Arc::clone(&running);
                let admin = drain_admin.clone();
                async move {
                    let Some(ctx) = running.get() else {
                        return Err((
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "the edge is still starting",
                        ));
                    };
                    let plan = drain(ctx, &admin, Duration::from_millis(q.over_ms));
                    Ok(axum::Json(json!({
                        "sessions": plan.len(),
                        "over_ms": q.over_ms,
                        "planned_ms": plan,
                    })))
                }
            }),
        );
        let hub = Arc::clone(&self.hub);
        admin.route(
            "/admin/kick",
            post(move |Query(q): Query<UserQuery>| {
                let hub = Arc::clone(&hub);
                async move {
                    // The client hears UNAVAILABLE and reconnects after a
                    // pause, as after a lost link.
                    let kicked = hub.kick(&q.user, q.device, Code::Unavailable);
                    tracing::info!(user = %q.user, device = ?q.device, kicked, "kicked by an operator");
                    axum::Json(json!({ "user": q.user, "kicked": kicked }))
                }
            }),
        );
    }
}

/// Starts draining the edge: `/readyz` says so (the load balancer stops
/// sending clients), new connections are told to go elsewhere, and every
/// session is ended at a random moment within `over`, so that the clients
/// come back to the other edges spread over the window rather than all at
/// once. Returns the planned moments (ms from now), in order.
fn drain(ctx: &Arc<Ctx>, admin: &Admin, over: Duration) -> Vec<u64> {
    admin.set_phase(common::admin::Phase::Draining);
    ctx.draining.store(true, Ordering::Relaxed);
    let window = over.as_millis() as u64;
    let mut plan: Vec<(u64, u64)> = ctx
        .hub
        .ids()
        .into_iter()
        .map(|id| (rand::random_range(0..=window), id))
        .collect();
    plan.sort_unstable();
    tracing::info!(sessions = plan.len(), over_ms = window, "draining");
    let at: Vec<u64> = plan.iter().map(|(t, _)| *t).collect();
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for (t, id) in plan {
            tokio::select! {
                () = tokio::time::sleep_until(start + Duration::from_millis(t)) => {}
                () = ctx.shutdown.cancelled() => return,
            }
            ctx.hub.kill(id, Code::ShuttingDown);
        }
    });
    at
}

fn scrape(running: &OnceLock<Arc<Ctx>>, s: &mut Sample<'_>) {
    let Some(ctx) = running.get() else { return };
    s.gauge(
        "wa_chat_sessions",
        "Authenticated sessions on this edge",
        ctx.hub.len() as f64,
    );
    s.gauge(
        "wa_chat_cluster_epoch",
        "Epoch of the cluster map in use",
        ctx.router.epoch() as f64,
    );
    s.gauge(
        "wa_chat_request_bytes",
        "Bytes of client requests waiting for their homes' answers ([limits] request_memory bounds them)",
        ctx.requests_budget.used() as f64,
    );
    s.gauge(
        "wa_chat_delivery_bytes",
        "Bytes of deliveries queued towards clients ([limits] delivery_memory bounds them)",
        ctx.deliveries_budget.used() as f64,
    );
    s.gauge(
        "wa_chat_session_buffer_bytes",
        "Bytes of the sessions' read and write buffers (idle sessions hold none)",
        ctx.session_buffers.get() as f64,
    );
    let handshakes: Vec<(String, u64)> = ctx
        .quic
        .iter()
        .enumerate()
        .map(|(i, e)| (i.to_string(), e.stats().accepted_handshakes))
        .collect();
    s.counters(
        "wa_chat_quic_handshakes",
        "QUIC handshakes accepted, by endpoint (socket on the QUIC port, [quic] quic_endpoints)",
        "endpoint",
        &handshakes,
    );
    let queues = ctx.hub.queue_lengths();
    s.gauge(
        "wa_chat_outbound_queue_max",
        "Longest outbound queue of a session (frames not yet written)",
        queues.iter().max().copied().unwrap_or(0) as f64,
    );
    let buckets: Vec<(String, f64)> = OUTBOUND_BUCKETS
        .iter()
        .map(|le| {
            let n = queues.iter().filter(|q| **q <= *le).count();
            (le.to_string(), n as f64)
        })
        .chain([("+Inf".to_string(), queues.len() as f64)])
        .collect();
    s.gauges(
        "wa_chat_outbound_queues",
        "Sessions whose outbound queue holds at most `le` frames (cumulative)",
        "le",
        &buckets,
    );
    let mut up = Vec::new();
    let mut queues = Vec::new();
    for l in ctx.router.links() {
        let addr = l.addr.to_string();
        let conn = l.current();
        up.push((addr.clone(), f64::from(u8::from(conn.is_some()))));
        let (control, bulk) = conn.map(|c| c.queue_lengths()).unwrap_or_default();
        for (class, n) in [("control", control), ("appends", bulk)] {
            queues.push((
                vec![
                    ("store".to_owned(), addr.clone()),
                    ("class".to_owned(), class.to_owned()),
                ],
                n as f64,
            ));
        }
    }
    s.gauges(
        "wa_chat_link_up",
        "1 while the link to a store is up",
        "store",
        &up,
    );
    s.labeled_gauges(
        "wa_chat_link_queue_length",
        "Frames queued towards a store, by class",
        &queues,
    );
}

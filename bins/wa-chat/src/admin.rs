//! The edge's part of the admin API (`common::admin`): its metrics, its
//! readiness (some home reachable), its status fields, and the operations
//! `wactl sessions USER` and `wactl kick USER [DEVICE]`.
//!
//! Everything reads the running edge's [`Ctx`] once [`Chat::serve`] built
//! it; before that the edge has no sessions and is not ready.

use std::sync::{Arc, OnceLock};

use axum::extract::Query;
use axum::routing::{get, post};
use common::admin::Admin;
use common::admin::metrics::{Sample, Scrape};
use common::proto::Code;
use serde_json::json;

use crate::{Chat, Ctx};

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

//! The store's operator API about one user or message (`wactl user`,
//! `wactl trace`): each request goes to the shard of its user (or phone
//! number) as an `Op::Operator` (`home::operator`) and is answered as JSON.
//! A store that is not the key's home answers `{"home": false}`, so wactl
//! asks every store of its node list and reads the one answer that is.
//! Never message contents; of the account record (opaque to the store
//! otherwise) only the fields an operator needs.
//!
//! - `GET /admin/user?user=U`: account, devices, sessions, mailbox length,
//!   last seen, ban;
//! - `POST /admin/user/ban?user=U&reason=R`, `POST /admin/user/unban?user=U`;
//! - `POST /admin/user/delete?user=U`: account record, mailbox, devices
//!   revoked; answers the account's phone number;
//! - `POST /admin/phone/forget?number=N&user=U`: the number's record, if it
//!   names U (at the number's home);
//! - `GET /admin/trace?from=A&to=B&id=HEX`: where that message is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use common::admin::Admin;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::home::operator::{Action, Answer, SessionView, TraceView, UserView};
use crate::home::{Op, WeakHome};
use crate::ownership::Ownership;

/// How long an operator's request may wait for its shard.
const TIMEOUT: Duration = Duration::from_secs(10);

type Reply = Result<axum::Json<Value>, (StatusCode, String)>;

/// What the routes share: the home once this store serves, the map, and
/// the edges' names.
#[derive(Clone)]
pub struct Inspect {
    pub home: Arc<Mutex<WeakHome>>,
    pub ownership: Arc<Ownership>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The edge (its node name) at the other end of each link that is up.
#[derive(Default)]
pub struct LinkNames(Mutex<std::collections::HashMap<u64, String>>);

impl LinkNames {
    pub fn up(&self, link: u64, edge: &str) {
        self.lock().insert(link, edge.to_owned());
    }

    pub fn down(&self, link: u64) {
        self.lock().remove(&link);
    }

    pub fn name(&self, link: u64) -> Option<String> {
        self.lock().get(&link).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Deserialize)]
struct UserQuery {
    user: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct PhoneQuery {
    number: String,
    user: String,
}

#[derive(Deserialize)]
struct TraceQuery {
    from: String,
    to: String,
    id: String,
}

fn bad(why: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, why.into())
}

fn user_id(u: &str) -> Result<(), (StatusCode, String)> {
    if common::proto::ids::valid_user_id(u) {
        Ok(())
    } else {
        Err(bad(format!("{u:?} is not a valid user id")))
    }
}

impl Inspect {
    /// Runs `action` on the shard of `key`; `None` when this store is not
    /// its home.
    async fn ask(&self, key: &str, action: Action) -> Result<Option<Answer>, (StatusCode, String)> {
        if !self.ownership.current().owns(key) {
            return Ok(None);
        }
        let home = self
            .home
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
            .ok_or((
                StatusCode::SERVICE_UNAVAILABLE,
                "this store does not serve (starting, stopping or a secondary)".to_string(),
            ))?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        let op = Op::Operator {
            key: key.to_owned(),
            action,
            reply,
        };
        let closed = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is stopping".to_string(),
            )
        };
        home.submit(op).await.map_err(|_| closed())?;
        drop(home);
        match tokio::time::timeout(TIMEOUT, rx).await {
            Ok(Ok(Answer::Failed(e))) => Err((StatusCode::INTERNAL_SERVER_ERROR, e)),
            Ok(Ok(a)) => Ok(Some(a)),
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err((
                StatusCode::GATEWAY_TIMEOUT,
                "the user's shard did not answer within 10 s".to_string(),
            )),
        }
    }

    pub fn install(self, admin: &Admin) {
        let i = self.clone();
        admin.route(
            "/admin/user",
            get(move |Query(q): Query<UserQuery>| {
                let i = i.clone();
                async move { i.show(q).await }
            }),
        );
        let i = self.clone();
        admin.route(
            "/admin/user/ban",
            post(move |Query(q): Query<UserQuery>| {
                let i = i.clone();
                async move { i.ban(q, true).await }
            }),
        );
        let i = self.clone();
        admin.route(
            "/admin/user/unban",
            post(move |Query(q): Query<UserQuery>| {
                let i = i.clone();
                async move { i.ban(q, false).await }
            }),
        );
        let i = self.clone();
        admin.route(
            "/admin/user/delete",
            post(move |Query(q): Query<UserQuery>| {
                let i = i.clone();
                async move { i.delete(q).await }
            }),
        );
        let i = self.clone();
        admin.route(
            "/admin/phone/forget",
            post(move |Query(q): Query<PhoneQuery>| {
                let i = i.clone();
                async move { i.forget_phone(q).await }
            }),
        );
        let i = self;
        admin.route(
            "/admin/trace",
            get(move |Query(q): Query<TraceQuery>| {
                let i = i.clone();
                async move { i.trace(q).await }
            }),
        );
    }

    async fn show(&self, q: UserQuery) -> Reply {
        user_id(&q.user)?;
        Ok(axum::Json(match self.ask(&q.user, Action::Show).await? {
            None => json!({ "home": false }),
            Some(Answer::User(v)) => user_json(&q.user, &v, &self.metrics.edges),
            Some(other) => unexpected(&other),
        }))
    }

    async fn ban(&self, q: UserQuery, ban: bool) -> Reply {
        user_id(&q.user)?;
        let action = if ban {
            Action::Ban { reason: q.reason }
        } else {
            Action::Unban
        };
        Ok(axum::Json(match self.ask(&q.user, action).await? {
            None => json!({ "home": false }),
            Some(Answer::Banned { was, kicked }) => json!({
                "home": true,
                "user": q.user,
                "banned": ban,
                "was_banned": was,
                "kicked": kicked,
            }),
            Some(other) => unexpected(&other),
        }))
    }

    async fn delete(&self, q: UserQuery) -> Reply {
        user_id(&q.user)?;
        let Some(Answer::User(v)) = self.ask(&q.user, Action::Show).await? else {
            return Ok(axum::Json(json!({ "home": false })));
        };
        let devices = account(&v.account)["devices"]
            .as_array()
            .map(|ds| {
                ds.iter()
                    .filter_map(|d| d["id"].as_u64()?.try_into().ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(axum::Json(
            match self.ask(&q.user, Action::Delete { devices }).await? {
                None => json!({ "home": false }),
                Some(Answer::Deleted(d)) => json!({
                    "home": true,
                    "user": q.user,
                    "account": d.account.is_some(),
                    "phone": account(&d.account)["phone"],
                    "items": d.items,
                    "devices": d.devices,
                    "kicked": d.kicked,
                }),
                Some(other) => unexpected(&other),
            },
        ))
    }

    async fn forget_phone(&self, q: PhoneQuery) -> Reply {
        user_id(&q.user)?;
        if q.number.is_empty() || q.number.len() > common::link::MAX_KV_KEY {
            return Err(bad("not a phone number"));
        }
        let action = Action::ForgetPhone { user: q.user };
        Ok(axum::Json(match self.ask(&q.number, action).await? {
            None => json!({ "home": false }),
            Some(Answer::PhoneForgot { forgot }) => json!({ "home": true, "forgot": forgot }),
            Some(other) => unexpected(&other),
        }))
    }

    async fn trace(&self, q: TraceQuery) -> Reply {
        user_id(&q.from)?;
        user_id(&q.to)?;
        let id = hex::decode(&q.id)
            .ok()
            .filter(|id| id.len() == 16)
            .ok_or_else(|| bad("id must be 32 hex digits (16 bytes)"))?;
        let action = Action::Trace {
            from: q.from.clone(),
            id,
        };
        Ok(axum::Json(match self.ask(&q.to, action).await? {
            None => json!({ "home": false }),
            Some(Answer::Trace(t)) => trace_json(&q, &t, &self.metrics.edges),
            Some(other) => unexpected(&other),
        }))
    }
}

fn unexpected(a: &Answer) -> Value {
    json!({ "home": true, "error": format!("unexpected answer {a:?}") })
}

/// The account record as JSON (wa-register writes JSON), or null.
fn account(raw: &Option<Vec<u8>>) -> Value {
    raw.as_deref()
        .and_then(|r| serde_json::from_slice(r).ok())
        .unwrap_or(Value::Null)
}

fn session_json(s: &SessionView, edges: &LinkNames) -> Value {
    json!({
        "edge": edges.name(s.link),
        "link": s.link,
        "session": s.session,
        "device": s.device,
        "generation": s.generation,
        "unacked": s.unacked,
    })
}

fn user_json(user: &str, v: &UserView, edges: &LinkNames) -> Value {
    let a = account(&v.account);
    // Of the record, what an operator needs: no PIN hash, no device keys.
    let account = if a.is_null() {
        Value::Null
    } else {
        let devices: Vec<Value> = a["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| json!({ "id": d["id"], "name": d["name"], "created_ms": d["created_ms"] }))
            .collect();
        json!({
            "phone": a["phone"],
            "generation": a["generation"],
            "primary_device": a["primary"],
            "devices": devices,
            "pin": !a["pin"].is_null(),
            "created_ms": a["created_ms"],
            "seen_ms": a["seen_ms"],
            "version": v.account_version,
        })
    };
    let ban: Option<Value> = v
        .ban
        .as_deref()
        .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null));
    let revoked: Vec<Value> = v
        .generations
        .iter()
        .map(|(d, g)| json!({ "device": d, "min_generation": g }))
        .collect();
    let online = !v.sessions.is_empty();
    json!({
        "home": true,
        "user": user,
        // (Revoked devices alone, as a deleted user leaves, do not count.)
        "exists": !account.is_null() || online || v.cached.items + v.engine.items > 0,
        "account": account,
        "banned": ban,
        "device_generations": revoked,
        "sessions": v.sessions.iter().map(|s| session_json(s, edges)).collect::<Vec<_>>(),
        "online": online,
        "last_seen_ms": v.last_seen_ms,
        "mailbox": {
            "items": v.cached.items + v.engine.items,
            "bytes": v.cached.bytes + v.engine.bytes,
            "in_memory": v.cached.items,
            "in_engine": v.engine.items,
        },
    })
}

fn trace_json(q: &TraceQuery, t: &TraceView, edges: &LinkNames) -> Value {
    let Some(found_in) = t.found_in else {
        return json!({
            "home": true,
            "found": false,
            "from": q.from,
            "to": q.to,
            "id": q.id,
            "note": "no such message stored here: never accepted, accepted more than 5 minutes ago and delivered from memory, or its dedupe entry expired",
        });
    };
    json!({
        "home": true,
        "found": true,
        "from": q.from,
        "to": q.to,
        "id": q.id,
        "found_in": found_in,
        "seq": t.seq,
        "server_ts_ms": t.server_ts_ms,
        "accepted": t.durable,
        "place": t.place,
        "journal_segment": t.segment,
        "writing_back": t.writing_back,
        "pushed_to": t.pushed_to.iter().map(|s| session_json(s, edges)).collect::<Vec<_>>(),
        "acknowledged": t.awaiting_receipt || t.place == "gone",
        "receipt": if t.awaiting_receipt {
            "delivered receipt on its way to the sender's home"
        } else if t.place == "gone" {
            "delivered receipt stored at the sender's home, or none (expired or deleted)"
        } else {
            "not delivered yet"
        },
    })
}

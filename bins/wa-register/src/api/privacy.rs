//! `GET` and `PUT /v1/account/privacy`: who may see the caller's presence
//! (online, last seen): everyone, the listed contacts, or nobody. Kept at
//! the caller's home, which applies it to every watcher at once
//! (`common::privacy`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use common::privacy::{MAX_CONTACTS, PresencePrivacy, Visibility};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Body, Caller};
use crate::App;
use crate::error::ApiError;

/// The setting as the API reads and writes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Privacy {
    /// `everyone`, `contacts` or `nobody`.
    pub presence: String,
    /// With `contacts`: the user ids who see it, at most 200.
    #[serde(default)]
    pub contacts: Vec<String>,
}

pub async fn get(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<Privacy>, ApiError> {
    let p = app.accounts.privacy(&caller.claims.user).await?;
    let presence = match Visibility::try_from(p.visible_to) {
        Ok(Visibility::Everyone) => "everyone",
        Ok(Visibility::Contacts) => "contacts",
        Ok(Visibility::Nobody) | Err(_) => "nobody",
    };
    Ok(Json(Privacy {
        presence: presence.into(),
        contacts: p.contacts,
    }))
}

pub async fn set(
    State(app): State<Arc<App>>,
    caller: Caller,
    Body(req): Body<Privacy>,
) -> Result<StatusCode, ApiError> {
    let visible_to = match req.presence.as_str() {
        "everyone" => Visibility::Everyone,
        "contacts" => Visibility::Contacts,
        "nobody" => Visibility::Nobody,
        _ => {
            return Err(ApiError::BadField(
                "presence: one of everyone, contacts, nobody".into(),
            ));
        }
    };
    if req.contacts.len() > MAX_CONTACTS {
        return Err(ApiError::BadField(format!(
            "contacts: at most {MAX_CONTACTS}"
        )));
    }
    if let Some(c) = req
        .contacts
        .iter()
        .find(|c| !common::proto::ids::valid_user_id(c))
    {
        return Err(ApiError::BadField(format!(
            "contacts: {c:?} is not a user id"
        )));
    }
    let privacy = PresencePrivacy {
        visible_to: visible_to as i32,
        contacts: req.contacts,
    };
    app.accounts
        .set_privacy(&caller.claims.user, &privacy)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

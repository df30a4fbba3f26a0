//! Accounts at their homes: the record wa-register keeps in the home's
//! key-value service (`ACCOUNT` space, key = user id; the store never looks
//! inside), the phone number index (`PHONE` space, number -> user id), and
//! the compare-and-set loop every change goes through.

use bytes::Bytes;
use common::link::KvSpace;
use common::link_client::{Cas, LinkClient, LinkClientError};
use serde::{Deserialize, Serialize};

use crate::revoke::revoke_all;
pub use crate::revoke::{Faults, Revocation};

/// Version of the record's encoding.
const FORMAT: u32 = 1;
/// Compare-and-set attempts before a change gives up (only concurrent
/// requests for the same account conflict).
const CAS_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub format: u32,
    pub user: String,
    pub phone: String,
    /// Rises on every re-registration; tokens carry it.
    pub generation: u32,
    /// Device ids are never reused.
    pub next_device: u32,
    pub devices: Vec<Device>,
    /// The device the number was verified on (its registration); the
    /// others are companions it linked. Records written before this field
    /// existed name none: their lowest device id is the primary.
    #[serde(default)]
    pub primary: Option<u32>,
    pub pin: Option<PinLock>,
    pub created_ms: u64,
    /// Last time wa-register saw the account (registration, refresh).
    pub seen_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: u32,
    pub name: String,
    /// The device's own public key, as the client gave it (opaque here).
    pub public_key: Option<String>,
    pub created_ms: u64,
}

/// The registration lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinLock {
    /// Argon2id PHC string (salt and parameters included; peppered).
    pub hash: String,
    /// Wrong PINs since the last right one.
    pub wrong: u32,
    /// Once `wrong` reached the limit: no try before this (unix ms).
    pub next_try_ms: u64,
}

impl Account {
    pub fn new(user: String, phone: String, now_ms: u64) -> Account {
        Account {
            format: FORMAT,
            user,
            phone,
            generation: 0,
            next_device: 1,
            devices: Vec::new(),
            primary: None,
            pin: None,
            created_ms: now_ms,
            seen_ms: now_ms,
        }
    }

    pub fn encode(&self) -> Bytes {
        serde_json::to_vec(self)
            .expect("an account always serializes")
            .into()
    }

    pub fn decode(b: &[u8]) -> Result<Account, AccountError> {
        serde_json::from_slice(b).map_err(|e| AccountError::Corrupt(e.to_string()))
    }

    pub fn device(&self, id: u32) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Whether device `id` is the account's primary device.
    pub fn is_primary(&self, id: u32) -> bool {
        match self.primary {
            Some(p) => p == id,
            None => self.devices.iter().map(|d| d.id).min() == Some(id),
        }
    }

    /// Adds a device and returns its id.
    pub fn add_device(&mut self, name: String, public_key: Option<String>, now_ms: u64) -> u32 {
        let id = self.next_device;
        self.next_device += 1;
        self.devices.push(Device {
            id,
            name,
            public_key,
            created_ms: now_ms,
        });
        id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the home could not be reached: {0}")]
    Home(#[from] LinkClientError),
    #[error("an account record is corrupt: {0}")]
    Corrupt(String),
    #[error("the account kept changing under this request")]
    Contended,
}

/// An account as read, with the version a write must expect.
#[derive(Debug, Clone)]
pub struct Stored {
    pub account: Account,
    pub version: u64,
    /// When the user was last connected to an edge (unix ms, 0 never).
    pub last_seen_ms: u64,
}

/// Reads and writes accounts at their homes.
pub struct Accounts {
    pub link: LinkClient,
    /// Test-only faults (see [`Faults`]).
    pub faults: Faults,
}

/// What a change function decides.
pub enum Change<T> {
    /// Store this account (`None` deletes it) and return `T`.
    Write(Option<Account>, T),
    /// Make these revocations durable at the home first, then store the
    /// account (`None` deletes it) and return `T`: a change that drops a
    /// device or supersedes its generation must be this one (`revoke`).
    Revoke(Vec<Revocation>, Option<Account>, T),
    /// Store nothing and return `T`.
    Keep(T),
}

impl Accounts {
    pub fn new(link: LinkClient) -> Accounts {
        Accounts {
            link,
            faults: Faults::default(),
        }
    }

    /// The user registered with `phone` and the index record's version.
    pub async fn phone(&self, phone: &str) -> Result<(Option<String>, u64), AccountError> {
        let r = self.link.kv_get(KvSpace::Phone, phone).await?;
        let user = r
            .exists()
            .then(|| String::from_utf8_lossy(&r.value).into_owned());
        Ok((user, r.version))
    }

    /// Points `phone` at `user` (or nowhere with `None`) if the index is
    /// still at `version`; false on a conflict.
    pub async fn set_phone(
        &self,
        phone: &str,
        user: Option<&str>,
        version: u64,
    ) -> Result<bool, AccountError> {
        let value = Bytes::from(user.unwrap_or("").to_owned());
        match self
            .link
            .kv_put(KvSpace::Phone, phone, value, version)
            .await?
        {
            Cas::Stored(_) => Ok(true),
            Cas::Conflict(_) => Ok(false),
        }
    }

    pub async fn get(&self, user: &str) -> Result<Option<Stored>, AccountError> {
        let r = self.link.kv_get(KvSpace::Account, user).await?;
        if !r.exists() {
            return Ok(None);
        }
        Ok(Some(Stored {
            account: Account::decode(&r.value)?,
            version: r.version,
            last_seen_ms: r.last_seen_ms,
        }))
    }

    /// Writes `account` if the record is still at `version` (0: create);
    /// false on a conflict.
    pub async fn put(
        &self,
        user: &str,
        account: Option<&Account>,
        version: u64,
    ) -> Result<bool, AccountError> {
        let value = account.map(Account::encode).unwrap_or_default();
        match self
            .link
            .kv_put(KvSpace::Account, user, value, version)
            .await?
        {
            Cas::Stored(_) => Ok(true),
            Cas::Conflict(_) => Ok(false),
        }
    }

    /// `user`'s presence privacy (everyone, when never set).
    pub async fn privacy(
        &self,
        user: &str,
    ) -> Result<common::privacy::PresencePrivacy, AccountError> {
        let r = self.link.kv_get(KvSpace::PresencePrivacy, user).await?;
        Ok(common::privacy::PresencePrivacy::from_stored(&r.value))
    }

    /// Replaces `user`'s presence privacy record at its home, whatever it
    /// was (read, then compare-and-set, again on a conflict).
    pub async fn set_privacy(
        &self,
        user: &str,
        privacy: &common::privacy::PresencePrivacy,
    ) -> Result<(), AccountError> {
        use prost::Message as _;
        let value = Bytes::from(privacy.encode_to_vec());
        for _ in 0..8 {
            let r = self.link.kv_get(KvSpace::PresencePrivacy, user).await?;
            match self
                .link
                .kv_put(KvSpace::PresencePrivacy, user, value.clone(), r.version)
                .await?
            {
                Cas::Stored(_) => return Ok(()),
                Cas::Conflict(_) => continue,
            }
        }
        Err(AccountError::Contended)
    }

    /// Reads `user`'s account, lets `f` decide, makes the revocations it
    /// asks for durable, writes with compare-and-set, and starts over on a
    /// conflict. A revocation that fails writes nothing: the error is the
    /// home's.
    pub async fn update<T, E>(
        &self,
        user: &str,
        mut f: impl FnMut(Option<&Stored>) -> Result<Change<T>, E>,
    ) -> Result<T, E>
    where
        E: From<AccountError>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let stored = self.get(user).await?;
            let version = stored.as_ref().map_or(0, |s| s.version);
            let (a, t) = match f(stored.as_ref())? {
                Change::Keep(t) => return Ok(t),
                Change::Write(a, t) => (a, t),
                Change::Revoke(revocations, a, t) => {
                    revoke_all(&self.link, &self.faults, user, &revocations)
                        .await
                        .map_err(AccountError::Home)?;
                    (a, t)
                }
            };
            if self.put(user, a.as_ref(), version).await? {
                return Ok(t);
            }
        }
        Err(AccountError::Contended.into())
    }
}

/// A fresh user id: `u` and 24 hex digits (96 random bits).
pub fn new_user_id() -> String {
    format!("u{}", hex::encode(rand::random::<[u8; 12]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_ids_are_valid() {
        let mut a = Account::new(new_user_id(), "+15550000001".into(), 1);
        assert!(common::proto::ids::valid_user_id(&a.user));
        assert_eq!(a.add_device("phone".into(), None, 2), 1);
        assert_eq!(a.add_device("laptop".into(), Some("k".into()), 3), 2);
        a.pin = Some(PinLock {
            hash: "h".into(),
            wrong: 1,
            next_try_ms: 0,
        });
        assert_eq!(Account::decode(&a.encode()).unwrap(), a);
        assert!(Account::decode(b"{").is_err());
        assert!(a.encode().len() < common::link::MAX_KV_VALUE);
    }
}

//! Who may see a user's presence (online, last seen): the user's own
//! choice, kept at the user's home as a key-value record
//! (`KvSpace::PresencePrivacy`, key = the user id), set through wa-register
//! (`PUT /v1/account/privacy`) and applied by the home to every watcher.
//! A watcher the user does not show presence to sees what a user who was
//! never online looks like: offline, last seen 0.

/// The record: `visible_to`, and the user ids of `Contacts`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PresencePrivacy {
    #[prost(enumeration = "Visibility", tag = "1")]
    pub visible_to: i32,
    /// Who sees it under [`Visibility::Contacts`]; at most [`MAX_CONTACTS`].
    #[prost(string, repeated, tag = "2")]
    pub contacts: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Visibility {
    /// Anyone who knows the user id (the default: no record).
    Everyone = 0,
    /// Only the users in `contacts`.
    Contacts = 1,
    /// Nobody.
    Nobody = 2,
}

/// Most contacts one record names (200 user ids of 64 bytes fit the
/// key-value service's 16 KiB).
pub const MAX_CONTACTS: usize = 200;

impl PresencePrivacy {
    /// The record stored as `bytes`; an empty or unreadable one is the
    /// default (everyone), since a record is only ever written whole by
    /// wa-register.
    pub fn from_stored(bytes: &[u8]) -> PresencePrivacy {
        use prost::Message as _;
        PresencePrivacy::decode(bytes).unwrap_or_default()
    }

    /// Whether `watcher` may see the presence of the record's user.
    pub fn shows_to(&self, watcher: &str) -> bool {
        match Visibility::try_from(self.visible_to) {
            Ok(Visibility::Everyone) => true,
            Ok(Visibility::Contacts) => self.contacts.iter().any(|c| c == watcher),
            // Nobody, and any value this version does not know: the safe side.
            Ok(Visibility::Nobody) | Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn each_setting_shows_presence_to_whom_it_says() {
        let everyone = PresencePrivacy::from_stored(&[]);
        assert!(everyone.shows_to("anyone"));
        let contacts = PresencePrivacy {
            visible_to: Visibility::Contacts as i32,
            contacts: vec!["alice".into()],
        };
        let stored = PresencePrivacy::from_stored(&contacts.encode_to_vec());
        assert!(stored.shows_to("alice"));
        assert!(!stored.shows_to("mallory"));
        let nobody = PresencePrivacy {
            visible_to: Visibility::Nobody as i32,
            contacts: vec!["alice".into()],
        };
        assert!(!nobody.shows_to("alice"));
        let unknown = PresencePrivacy {
            visible_to: 9,
            contacts: vec![],
        };
        assert!(!unknown.shows_to("alice"));
    }
}

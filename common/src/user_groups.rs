//! The groups a user belongs to, counted at the user's own home
//! (docs/ARCHITECTURE.md "Groups", "Groups per user"): the value of key =
//! user id in key-value space `USER_GROUPS`, the set of the user's group
//! ids, which the groups' homes update before a create or an add makes the
//! user a member and after a removal or a leave. A set, not a number, so a
//! retried update is a no-op. No I/O, no clock.

/// Default most groups a user may belong to (`[groups]
/// max_groups_per_user`): WhatsApp's order of magnitude (its limit is in
/// the hundreds), far above what people use, and its record (about 36
/// bytes a group, 18 KiB) stays well inside [`MAX_RECORD`].
pub const DEFAULT_MAX_GROUPS_PER_USER: usize = 512;

/// Highest `max_groups_per_user` a configuration may set: its record stays
/// within [`MAX_RECORD`].
pub const HIGHEST_MAX_GROUPS_PER_USER: usize = 800;

/// Largest record of this space a link may hand over (above the key-value
/// service's 16 KiB for clients' records: only homes write it).
pub const MAX_RECORD: usize = 32 * 1024;

/// An entry older than this may be checked against its group's home when
/// the user is at the limit (a crash between the count and the group's
/// record, or a release that never reached this home, leaves one).
/// Younger entries may be a create or add still under way, and stay.
pub const CHECK_AFTER_MS: u64 = 60_000;

/// A user's groups, as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserGroups {
    #[prost(message, repeated, tag = "1")]
    pub groups: Vec<Membership>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Membership {
    #[prost(string, tag = "1")]
    pub group: String,
    /// When it was counted (ms since the epoch, this home's clock).
    #[prost(uint64, tag = "2")]
    pub since_ms: u64,
}

/// What counting a group for a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// It was counted already (a retry): nothing to write.
    Already,
    /// Counted now: write the record.
    Added,
    /// The user is in `max` groups already: refused.
    Full,
}

impl UserGroups {
    /// Whether `group` is counted.
    pub fn has(&self, group: &str) -> bool {
        self.groups.iter().any(|m| m.group == group)
    }

    /// Counts `group`, unless the user is in `max` groups already.
    pub fn join(&mut self, group: &str, now_ms: u64, max: usize) -> Joined {
        if self.has(group) {
            return Joined::Already;
        }
        if self.groups.len() >= max {
            return Joined::Full;
        }
        self.groups.push(Membership {
            group: group.to_owned(),
            since_ms: now_ms,
        });
        Joined::Added
    }

    /// Stops counting `group`; false if it was not counted (nothing to
    /// write).
    pub fn leave(&mut self, group: &str) -> bool {
        let before = self.groups.len();
        self.groups.retain(|m| m.group != group);
        self.groups.len() != before
    }

    /// The groups counted for longer than [`CHECK_AFTER_MS`] at `now_ms`:
    /// the ones worth asking their home about when the user is full.
    pub fn checkable(&self, now_ms: u64) -> Vec<String> {
        self.groups
            .iter()
            .filter(|m| now_ms.saturating_sub(m.since_ms) >= CHECK_AFTER_MS)
            .map(|m| m.group.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_counts_each_group_once_up_to_the_limit() {
        let mut u = UserGroups::default();
        assert_eq!(u.join("#a", 1, 2), Joined::Added);
        assert_eq!(u.join("#a", 2, 2), Joined::Already);
        assert_eq!(u.join("#b", 3, 2), Joined::Added);
        assert_eq!(u.join("#c", 4, 2), Joined::Full);
        // A retry of a counted one is still fine at the limit.
        assert_eq!(u.join("#b", 5, 2), Joined::Already);
        assert!(u.leave("#a"));
        assert!(!u.leave("#a"));
        assert_eq!(u.join("#c", 6, 2), Joined::Added);
        assert_eq!(u.groups.len(), 2);
    }

    #[test]
    fn only_old_entries_are_checkable() {
        let mut u = UserGroups::default();
        u.join("#old", 0, 10);
        u.join("#new", CHECK_AFTER_MS, 10);
        assert_eq!(u.checkable(CHECK_AFTER_MS), vec!["#old".to_string()]);
    }

    #[test]
    fn the_highest_limit_fits_one_record() {
        use prost::Message as _;
        let mut u = UserGroups::default();
        for i in 0..HIGHEST_MAX_GROUPS_PER_USER {
            let g = crate::group::group_id("someone", &(i as u64).to_be_bytes());
            // (A time in the year 2500: 7 bytes.)
            assert_eq!(u.join(&g, 16_725_225_600_000, usize::MAX), Joined::Added);
        }
        assert!(u.encode_to_vec().len() <= MAX_RECORD);
        const { assert!(DEFAULT_MAX_GROUPS_PER_USER <= HIGHEST_MAX_GROUPS_PER_USER) };
    }
}

//! The open-files limit every wa binary raises at start.
//!
//! Each client connection (TCP) holds a file descriptor, and a process started
//! outside systemd (a shell, rc.d on FreeBSD, a container) inherits a soft
//! limit of often 1,024 while wa-chat's default allows 100,000 connections.
//! The soft limit may be raised to the hard one without privileges, so every
//! binary does that first thing after loading its config, and says so in the
//! log when even the hard limit leaves no room for its configured connections:
//! the shortfall is found at start, not as `EMFILE` under load.
//!
//! Unix only (getrlimit/setrlimit, the same on Linux and FreeBSD); elsewhere
//! nothing is changed.

/// Descriptors a service holds besides its client connections: listeners,
/// links to homes, journal segments, engine files, log and epoll handles.
pub const RESERVED: u64 = 256;

/// The open-files limits after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (the most `soft` can be without privileges).
    pub hard: u64,
}

/// How many connections cannot have a descriptor: `connections` plus
/// [`RESERVED`] beyond `soft`, or `None` when they fit.
pub fn shortfall(connections: u64, soft: u64) -> Option<u64> {
    let needed = connections.saturating_add(RESERVED);
    (needed > soft).then(|| needed - soft)
}

/// Raises the soft open-files limit to the hard limit and warns (as `name`)
/// when `connections`, the configured connection limit (`None` for a service
/// that has none), still does not fit. Failures are logged, never fatal: the
/// service runs with what it has. Returns the limits, or `None` where they
/// could not be read (or on a platform without them).
pub fn raise_open_files(name: &str, connections: Option<u64>) -> Option<OpenFiles> {
    let limits = match raise() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(service = name, error = %e, "cannot raise the open-files limit");
            return None;
        }
    };
    if limits.soft != limits.before {
        tracing::debug!(
            service = name,
            before = limits.before,
            soft = limits.soft,
            "raised the open-files limit"
        );
    }
    if let Some(connections) = connections
        && let Some(missing) = shortfall(connections, limits.soft)
    {
        tracing::warn!(
            service = name,
            open_files = limits.soft,
            hard_limit = limits.hard,
            max_connections = connections,
            missing,
            "the open-files limit is below the configured connection limit; raise the hard limit (LimitNOFILE=, limits.conf, ulimit -Hn, or limits(1) on FreeBSD) or lower max_connections"
        );
    }
    Some(limits)
}

#[cfg(unix)]
fn raise() -> std::io::Result<OpenFiles> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(OpenFiles {
        before: wide(soft),
        soft: wide(now),
        hard: wide(hard),
    })
}

/// `rlim_t` is u64 on Linux and i64 on FreeBSD; RLIM_INFINITY maps to the top.
#[cfg(unix)]
fn wide<T: TryInto<u64>>(v: T) -> u64 {
    v.try_into().unwrap_or(u64::MAX)
}

#[cfg(not(unix))]
fn raise() -> std::io::Result<OpenFiles> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no open-files limit on this platform",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortfall_counts_the_reserve() {
        let table: &[(u64, u64, Option<u64>)] = &[
            (0, 1024, None),
            (768, 1024, None),
            (769, 1024, Some(1)),
            (100_000, 1024, Some(100_000 + RESERVED - 1024)),
            (100_000, 1_048_576, None),
            (u64::MAX, u64::MAX, None),
        ];
        for &(connections, soft, want) in table {
            assert_eq!(
                shortfall(connections, soft),
                want,
                "{connections} in {soft}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Start below the hard limit so that raising is observable.
        let low = hard.min(512);
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        let got = raise_open_files("test", Some(0)).unwrap();
        assert_eq!(got.before, wide(low));
        assert_eq!(got.soft, got.hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, hard);
    }
}

//! The devices' side of push tests: a store config with short delays,
//! endpoints of each provider, a device that registers and goes offline,
//! and checks on what the fakes took.

use std::time::Duration;

use bytes::Bytes;
use common::client::{Client, Event, Events, PushRegistration};
use common::proto::PushProvider;

use super::Log;
use super::unifiedpush::DeviceKeys;
use crate::support::expect;

/// How long a test watches for a push that must not come.
pub const QUIET: Duration = Duration::from_millis(1500);

/// The `[push]` section: short delays so that tests run in seconds.
pub fn push_toml(coalesce: &str, min_interval: &str, extra: &str) -> String {
    format!(
        "[push]\ncoalesce = \"{coalesce}\"\nmin_interval = \"{min_interval}\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"5s\"\ntimeout = \"5s\"\n[push.unifiedpush]\nallow_http = true\n{extra}"
    )
}

pub fn unifiedpush(url: &str, keys: &DeviceKeys) -> PushRegistration {
    PushRegistration {
        provider: PushProvider::Unifiedpush,
        token: url.to_owned(),
        alert: false,
        p256dh: Bytes::from(keys.public()),
        auth: Bytes::copy_from_slice(&keys.auth),
    }
}

pub fn token_of(provider: PushProvider, token: &str, alert: bool) -> PushRegistration {
    PushRegistration {
        provider,
        token: token.to_owned(),
        alert,
        p256dh: Bytes::new(),
        auth: Bytes::new(),
    }
}

/// `user`, connected as `(c, e)`, sets its endpoint, waits for the home to keep it, and
/// disconnects; returns once `watcher` saw it go offline (so the home
/// counts it offline for what follows).
pub async fn register_offline(
    (c, mut e): (Client, Events),
    user: &str,
    reg: PushRegistration,
    watcher: &Client,
    watcher_events: &mut Events,
) {
    let id = c.set_push_endpoint(Some(reg)).await.unwrap();
    expect(&mut e, "PushEndpointSet", |ev| match ev {
        Event::PushEndpointSet { id: got } if *got == id => Some(()),
        _ => None,
    })
    .await;
    watcher.watch_presence(user, true).await.unwrap();
    expect(watcher_events, "online", |ev| match ev {
        Event::Presence {
            user: u,
            online: true,
            ..
        } if u == user => Some(()),
        _ => None,
    })
    .await;
    c.close().await;
    expect(watcher_events, "offline", |ev| match ev {
        Event::Presence {
            user: u,
            online: false,
            ..
        } if u == user => Some(()),
        _ => None,
    })
    .await;
}

/// Sends `n` messages from `c` to `to` and waits for every `Accepted`.
pub async fn send_accepted(c: &Client, e: &mut Events, to: &str, n: usize, text: &str) {
    for i in 0..n {
        c.send(to, Bytes::from(format!("{text} {i}")))
            .await
            .unwrap();
    }
    for _ in 0..n {
        expect(e, "Accepted", |ev| {
            matches!(ev, Event::Accepted { .. }).then_some(())
        })
        .await;
    }
}

/// A sample of `name` (with its labels, as written) in the metrics page.
pub fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits `QUIET` and asserts the fake took no more than `n` requests.
pub async fn no_more_than(log: &Log, n: usize) {
    tokio::time::sleep(QUIET).await;
    let taken = log.taken();
    assert_eq!(taken.len(), n, "unexpected pushes: {taken:?}");
}

/// Nothing of the messages (their text, their sender) is in a push.
pub fn assert_no_content(log: &Log, text: &str, sender: &str) {
    for t in log.taken() {
        let raw = String::from_utf8_lossy(&t.body);
        let plain = t.payload.to_string();
        for leak in [text, sender] {
            assert!(
                !raw.contains(leak) && !plain.contains(leak),
                "{leak:?} in a push: {plain}"
            );
        }
    }
}

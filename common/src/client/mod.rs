//! The client library: what an app uses to talk to wa-chat.
//!
//! [`Client::connect`] opens a connection (TLS 1.3 over TCP, or QUIC), says
//! `Hello` and returns once welcomed, with a [`Client`] handle for requests
//! and an [`Events`] stream for everything the server says. One background
//! task ([`driver`]) owns the connection from then on: it pings, reconnects
//! with jittered exponential backoff when the connection is lost, resends every
//! send that has no `Accepted` yet (same id, original order) so that nothing
//! is lost and, thanks to the home's dedupe, nothing is stored twice, and
//! drops deliveries it has already shown the app.
//!
//! Acknowledgements are the app's job: it calls [`Client::ack`] with the
//! sequence numbers of the messages and receipts it has taken care of.
//!
//! [`RegisterClient`] signs up with wa-register (`register`, `verify`) and
//! yields the credential a [`ClientConfig`] needs.
//!
//! [`raw`] gives bare transports for tests that need to misbehave.

mod backoff;
mod config;
mod connection;
mod driver;
mod error;
mod events;
mod groups;
mod https;
pub mod media;
pub mod raw;
mod receipts;
mod recent;
pub mod register;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use backoff::Backoff;
pub use config::{ClientConfig, Transport};
pub use error::ClientError;
pub use events::{Event, Events};
pub use media::{MediaClient, MediaConfig, MediaError, MediaNode, MediaRef};
pub use receipts::GroupReceiptState;
pub use register::{RegisterClient, RegisterConfig, RegisterError, Registered, Verify};

use connection::Dialer;
use driver::{Command, Driver, Shared};

use crate::proto::ids::valid_user_id;
use crate::proto::limits::MAX_BATCH;

/// A message id: 16 bytes chosen by the sender, unique per sender.
pub type MessageId = [u8; 16];

/// Requests waiting for the background task.
const COMMAND_QUEUE: usize = 1024;
/// Events waiting for the app before they back up inside the task.
const EVENT_QUEUE: usize = 1024;

/// The app's handle on a connection to wa-chat. Methods take `&self`, so it
/// can be shared (in an `Arc`) between tasks. Requests made while the
/// connection is down wait for the next one; [`Client::close`] ends it all.
#[derive(Debug)]
pub struct Client {
    cmds: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    max_pending: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects and waits for the server's `Welcome`. Any failure of this
    /// first attempt is returned (a refused token as [`ClientError::Refused`]
    /// with its code); later connection losses are handled in the background
    /// and reported as [`Event::Disconnected`].
    pub async fn connect(cfg: ClientConfig) -> Result<(Client, Events), ClientError> {
        let dialer = Dialer::new(&cfg)?;
        let first = dialer.dial().await?;
        let (cmds, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, event_rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared::new());
        let driver = Driver::new(&cfg, dialer, events, shared.clone());
        let task = tokio::spawn(driver.run(first, cmd_rx));
        let client = Client {
            cmds,
            shared,
            max_pending: cfg.max_pending,
            task,
        };
        Ok((client, Events { rx: event_rx }))
    }

    /// Sends `body` to `to` under a fresh random id, which it returns. The
    /// answer comes as [`Event::Accepted`] or [`Event::Rejected`] with that id.
    pub async fn send(&self, to: &str, body: Bytes) -> Result<MessageId, ClientError> {
        let id: MessageId = rand::random();
        self.send_with_id(to, id, body).await?;
        Ok(id)
    }

    /// Like [`Client::send`] with an id of the app's choosing; sending the
    /// same id again is recognised by the home as a duplicate.
    pub async fn send_with_id(
        &self,
        to: &str,
        id: MessageId,
        body: Bytes,
    ) -> Result<(), ClientError> {
        check_user(to)?;
        let max = self.shared.max_body.load(Ordering::Relaxed);
        if body.len() > max {
            return Err(ClientError::BodyTooLarge {
                len: body.len(),
                max,
            });
        }
        self.pending_command(Command::Send {
            id,
            to: to.to_string(),
            body,
        })
        .await
    }

    /// Sends a media message (a blob uploaded with [`MediaClient`]) to `to`
    /// under a fresh random id, answered like [`Client::send`].
    pub async fn send_media(
        &self,
        to: &str,
        media: crate::proto::Media,
    ) -> Result<MessageId, ClientError> {
        check_user(to)?;
        if let Some(problem) = media.problem() {
            return Err(ClientError::BadMedia(problem));
        }
        let id: MessageId = rand::random();
        self.pending_command(Command::SendMedia {
            id,
            to: to.to_string(),
            media: Box::new(media),
        })
        .await?;
        Ok(id)
    }

    /// Sets this device's push endpoint (`None` clears it): the home wakes
    /// the device through it while it is not connected. Answered by
    /// [`Event::PushEndpointSet`] (or [`Event::Rejected`] with
    /// `BAD_PUSH_ENDPOINT`) with the returned id; kept and resent across
    /// reconnects like a send.
    pub async fn set_push_endpoint(
        &self,
        endpoint: Option<PushRegistration>,
    ) -> Result<MessageId, ClientError> {
        let frame = match endpoint {
            None => crate::proto::SetPushEndpoint::default(),
            Some(r) => {
                if let Some(problem) = r.problem() {
                    return Err(ClientError::BadPushEndpoint(problem));
                }
                crate::proto::SetPushEndpoint {
                    id: Bytes::new(),
                    provider: r.provider as i32,
                    token: r.token,
                    alert: r.alert,
                    p256dh: r.p256dh,
                    auth: r.auth,
                }
            }
        };
        let id: MessageId = rand::random();
        self.pending_command(Command::SetPush {
            id,
            endpoint: Box::new(frame),
        })
        .await?;
        Ok(id)
    }

    /// Acknowledges messages and receipts by their sequence numbers: the
    /// server deletes them and tells each message's sender it was delivered.
    pub async fn ack(&self, seqs: &[u64]) -> Result<(), ClientError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.command(Command::Ack(seqs.to_vec())).await
    }

    /// Tells `to` that its messages `ids` were read (blue ticks). Returns the
    /// receipt's own id, which is answered like a send.
    pub async fn mark_read(&self, to: &str, ids: &[MessageId]) -> Result<MessageId, ClientError> {
        self.mark_read_as(to, ids, String::new()).await
    }

    /// [`Client::mark_read`] or, with a group, `mark_read_in_group`.
    pub(super) async fn mark_read_as(
        &self,
        to: &str,
        ids: &[MessageId],
        group: String,
    ) -> Result<MessageId, ClientError> {
        check_user(to)?;
        if ids.len() > MAX_BATCH {
            return Err(ClientError::TooManyIds {
                len: ids.len(),
                max: MAX_BATCH,
            });
        }
        let id: MessageId = rand::random();
        self.pending_command(Command::MarkRead {
            id,
            to: to.to_string(),
            ids: ids.to_vec(),
            group,
        })
        .await?;
        Ok(id)
    }

    /// Tells `to` that this user started (`true`) or stopped typing. Dropped
    /// while disconnected.
    pub async fn typing(&self, to: &str, typing: bool) -> Result<(), ClientError> {
        check_user(to)?;
        self.command(Command::Typing {
            to: to.to_string(),
            typing,
        })
        .await
    }

    /// Subscribes to (`true`) or unsubscribes from `user`'s presence. A
    /// subscription is renewed on every reconnect.
    pub async fn watch_presence(&self, user: &str, watch: bool) -> Result<(), ClientError> {
        check_user(user)?;
        self.command(Command::Watch {
            user: user.to_string(),
            watch,
        })
        .await
    }

    /// Says `Goodbye` (after the requests already made) and stops the
    /// background task. Sends still pending are abandoned.
    pub async fn close(self) {
        self.shared.closing.cancel();
        drop(self.cmds);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the client task failed");
        }
    }

    async fn command(&self, cmd: Command) -> Result<(), ClientError> {
        self.cmds.send(cmd).await.map_err(|_| ClientError::Closed)
    }

    /// A request that waits for `Accepted`: counted against `max_pending`.
    async fn pending_command(&self, cmd: Command) -> Result<(), ClientError> {
        let max = self.max_pending;
        self.shared
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(ClientError::TooManyPending)?;
        let r = self.command(cmd).await;
        if r.is_err() {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
        }
        r
    }
}

/// A device's push endpoint, for [`Client::set_push_endpoint`].
#[derive(Debug, Clone)]
pub struct PushRegistration {
    pub provider: crate::proto::PushProvider,
    /// The APNs device token (hex), the FCM registration token or the
    /// UnifiedPush endpoint URL.
    pub token: String,
    /// A visible alert rather than a silent wake.
    pub alert: bool,
    /// UnifiedPush: the device's P-256 public key (65 bytes, uncompressed).
    pub p256dh: Bytes,
    /// UnifiedPush: the device's 16-byte authentication secret.
    pub auth: Bytes,
}

impl PushRegistration {
    /// What the home would refuse in it (see
    /// [`crate::proto::push_endpoint_problem`]).
    pub fn problem(&self) -> Option<&'static str> {
        crate::proto::push_endpoint_problem(
            self.provider as i32,
            &self.token,
            &self.p256dh,
            &self.auth,
        )
    }
}

fn check_user(user: &str) -> Result<(), ClientError> {
    if valid_user_id(user) {
        Ok(())
    } else {
        Err(ClientError::BadUser(user.to_string()))
    }
}

#[cfg(test)]
mod tests;

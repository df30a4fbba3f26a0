//! The link port of a secondary: it serves nothing, so every request an
//! edge (with an older map) sends is refused with `WRONG_HOME`, which
//! makes the edge read its map again and go to the primary.

use std::sync::Arc;

use bytes::BytesMut;
use common::link::{LinkAuthOk, LinkDown, LinkUp, link_down};
use common::proto::Code;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Refuses links' requests on `listener` until `stop`; gives the listener
/// back for the primary to serve on.
pub async fn refuse_all(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    secret: Arc<Vec<u8>>,
    node: String,
    stop: CancellationToken,
) -> TcpListener {
    let links = TaskTracker::new();
    let refusals = Arc::new(crate::gate::Refusals::default());
    let unauthenticated = Arc::new(tokio::sync::Semaphore::new(
        crate::gate::MAX_UNAUTHENTICATED,
    ));
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&unauthenticated).try_acquire_owned() else {
            let span = tracing::info_span!("link", %peer);
            refusals.refused("too many connections waiting to authenticate", &span);
            continue;
        };
        let (acceptor, secret, node, stop, refusals) = (
            acceptor.clone(),
            Arc::clone(&secret),
            node.clone(),
            stop.clone(),
            Arc::clone(&refusals),
        );
        links.spawn(async move {
            let span = tracing::info_span!("link", %peer);
            let Some((mut reader, mut w, _, _)) =
                crate::listener::authenticate(tcp, &acceptor, &secret, &stop, &span, &refusals)
                    .await
            else {
                return;
            };
            drop(permit);
            let mut scratch = BytesMut::new();
            let ok = link_down::Kind::AuthOk(LinkAuthOk {
                node,
                epoch: 0,
                heartbeat: false,
            });
            if write(&mut w, &mut scratch, ok).await.is_err() {
                return;
            }
            loop {
                let frame = tokio::select! {
                    f = reader.read::<LinkUp>() => f,
                    () = stop.cancelled() => return,
                };
                let Ok(Some(LinkUp { kind: Some(kind) })) = frame else {
                    return;
                };
                if let Some(answer) = crate::listener::refusal(&kind, Code::WrongHome)
                    && write(&mut w, &mut scratch, answer).await.is_err()
                {
                    return;
                }
            }
        });
    }
    links.close();
    links.wait().await;
    listener
}

async fn write<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    scratch: &mut BytesMut,
    kind: link_down::Kind,
) -> std::io::Result<()> {
    common::wire::write_frame(w, &LinkDown { kind: Some(kind) }, scratch).await?;
    w.flush().await
}

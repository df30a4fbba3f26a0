//! A TCP proxy a test controls: it can stop passing server-to-client bytes
//! (so the client never sees an answer the server sent) and cut every
//! connection, like a phone losing its network at the worst moment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blackhole = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (bh, cut_tx) = (blackhole.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(pipe(client, server, bh.clone(), cut_tx.subscribe()));
            }
        });
        Proxy {
            addr,
            blackhole,
            cut,
            task,
        }
    }

    /// From now on, bytes from the server are read and dropped.
    pub fn blackhole_server_to_client(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Closes every connection open now; new ones pass normally. (The cut
    /// is counted before the blackhole is lifted, and a connection checks
    /// them in the other order, so nothing a cut connection reads after
    /// the lift reaches its client.)
    pub fn cut_all(&self) {
        self.cut.send_modify(|g| *g += 1);
        self.blackhole.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut client: TcpStream,
    mut server: TcpStream,
    blackhole: Arc<AtomicBool>,
    mut cut: watch::Receiver<u64>,
) {
    let generation = *cut.borrow_and_update();
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut sbuf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = cut.changed() => return,
            n = cr.read(&mut cbuf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&cbuf[..n]).await.is_err() { return },
            },
            n = sr.read(&mut sbuf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if blackhole.load(Ordering::SeqCst) {
                        // dropped
                    } else if *cut.borrow() != generation
                        || cw.write_all(&sbuf[..n]).await.is_err()
                    {
                        return;
                    }
                }
            },
        }
    }
}

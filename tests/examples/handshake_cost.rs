//! What a TLS 1.3 login handshake costs the edge, full and resumed from a
//! ticket (docs/BENCHMARKS.md, "Logins"): the edge's own rustls
//! configuration (`common::tls::server_config` + `issue_tickets`, an ECDSA
//! P-256 certificate as `wactl up` and INSTALL.md make), client and server
//! in one thread over memory, so only the server side's calls are timed.
//!
//! `cargo run --release -p wa-tests --example handshake_cost -- [N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a number"))
        .unwrap_or(2000);
    let pki = common::tls::DevPki::generate(&["localhost"]).unwrap();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let roots: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let alpn = common::proto::limits::ALPN;
    let mut server = common::tls::server_config(certs, key, &[alpn]).unwrap();
    common::tls::issue_tickets(&mut server).unwrap();
    let server = Arc::new(server);
    let mut full = common::tls::client_config(&roots, &[alpn]).unwrap();
    full.resumption = rustls::client::Resumption::disabled();
    let full = Arc::new(full);
    let resuming = Arc::new(common::tls::client_config(&roots, &[alpn]).unwrap());

    for (what, client) in [("full", &full), ("resumed", &resuming)] {
        // One warm-up handshake (it gives the resuming client its ticket).
        handshake(&server, client);
        let mut server_time = Duration::ZERO;
        let mut kinds = [0usize; 2];
        let start = Instant::now();
        for _ in 0..n {
            let (t, resumed) = handshake(&server, client);
            server_time += t;
            kinds[usize::from(resumed)] += 1;
        }
        let wall = start.elapsed();
        println!(
            "{what:8} {n} handshakes: server {:.1} µs each, client and server {:.1} µs each ({} resumed)",
            server_time.as_secs_f64() * 1e6 / n as f64,
            wall.as_secs_f64() * 1e6 / n as f64,
            kinds[1],
        );
    }
}

/// One handshake over memory, up to the server's ticket reaching the
/// client: the time spent in the server's calls, and whether it resumed.
fn handshake(
    server_cfg: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<rustls::ClientConfig>,
) -> (Duration, bool) {
    let mut client = rustls::ClientConnection::new(
        Arc::clone(client_cfg),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut in_server = Duration::ZERO;
    let t = Instant::now();
    let mut server = rustls::ServerConnection::new(Arc::clone(server_cfg)).unwrap();
    in_server += t.elapsed();
    let mut buf = Vec::new();
    for _ in 0..10 {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            let t = Instant::now();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
            }
            server.process_new_packets().unwrap();
            in_server += t.elapsed();
        }
        buf.clear();
        let t = Instant::now();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        in_server += t.elapsed();
        if !buf.is_empty() {
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        if !client.is_handshaking() && !server.is_handshaking() && !server.wants_write() {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    (
        in_server,
        client.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    )
}

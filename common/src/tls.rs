//! TLS and QUIC configuration. One crypto provider, *ring*, chosen explicitly
//! so that no second provider is ever compiled in or picked by accident; TLS 1.3
//! only.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Certs { path: String, reason: String },
    #[error("cannot read a private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
}

/// *ring*, with the TLS 1.3 suites in the order this server prefers:
/// AES-128-GCM with SHA-256 first. A handshake's key schedule and
/// transcript are hashes with the suite's hash, and SHA-256 runs on the
/// CPU's SHA extensions where it has them while SHA-384 does not: with
/// *ring*'s default order (AES-256-GCM-SHA384 first) SHA-512 blocks were
/// the largest single cost of a login handshake (docs/BENCHMARKS.md
/// "Logins", "QUIC storm"). ChaCha20 comes next for CPUs without AES
/// instructions; AES-256 stays, last, for peers that offer nothing else. A
/// server follows the client's order, so a client that prefers another
/// suite (a phone without AES instructions, ChaCha20) still gets it.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Certs {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A TLS 1.3 server configuration presenting `certs`, offering `alpn`.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// Lets clients resume their TLS 1.3 session with a stateless ticket (one
/// sent after each full handshake; keys in memory, rotated every 6 hours,
/// a ticket accepted for at most 12). A reconnecting client then skips the
/// server's certificate and its signature, and the server keeps nothing per
/// client: what 2 million phones reconnecting need. Tickets are this
/// process's own: a client that lands on another edge, or on this one after
/// a restart, makes a full handshake.
pub fn issue_tickets(cfg: &mut rustls::ServerConfig) -> Result<(), TlsError> {
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    cfg.send_tls13_tickets = 1;
    Ok(())
}

/// The certificate a server presents, read again from its files on
/// [`CertReloader::reload`] (SIGHUP): connections accepted afterwards see
/// the new one, open ones keep theirs. A reload that fails keeps the old.
#[derive(Debug)]
pub struct CertReloader {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl CertReloader {
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<CertReloader>, TlsError> {
        let current = Self::read(cert, key)?;
        Ok(Arc::new(CertReloader {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: std::sync::RwLock::new(current),
        }))
    }

    fn read(cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let certs = load_certs(cert)?;
        let key = load_key(key)?;
        let ck = rustls::sign::CertifiedKey::from_der(certs, key, &provider())?;
        Ok(Arc::new(ck))
    }

    /// Reads the files again.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Self::read(&self.cert, &self.key)?;
        *self.current.write().expect("certificate lock") = fresh;
        Ok(())
    }

    /// A TLS 1.3 server configuration presenting the current certificate.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ServerConfig, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn rustls::server::ResolvesServerCert>);
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

impl rustls::server::ResolvesServerCert for CertReloader {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.current.read().expect("certificate lock")))
    }
}

/// A TLS 1.3 client configuration trusting only `roots`, offering `alpn`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone())?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

pub fn quic_server_crypto(
    cfg: rustls::ServerConfig,
) -> Result<Arc<quinn::crypto::rustls::QuicServerConfig>, TlsError> {
    quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(cfg))
        .map(Arc::new)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

pub fn quic_client_crypto(
    cfg: rustls::ClientConfig,
) -> Result<Arc<quinn::crypto::rustls::QuicClientConfig>, TlsError> {
    quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(cfg))
        .map(Arc::new)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

/// A QUIC client configuration for wa servers: the client proposes no idle
/// timeout of its own, so the server's (its `idle_timeout` and a slack)
/// applies, and the protocol keepalive the server announces in `Welcome`,
/// however long, keeps the connection open (quinn's default, 30 s, would
/// close it first; docs/PROTOCOL.md §2). The server opens no streams, so
/// none are allowed it (quinn keeps an entry ready for each stream the peer
/// may open: 200 by default). See [`quic_cheap_transport`] for the rest.
pub fn quic_client_config(cfg: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let mut c = quinn::ClientConfig::new(quic_client_crypto(cfg)?);
    let mut transport = quic_cheap_transport();
    transport
        .max_idle_timeout(None)
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(0u32.into());
    c.transport_config(Arc::new(transport));
    Ok(c)
}

/// quinn's transport settings for wa connections, client and server: no
/// path MTU discovery. wa frames are small (a message, an ack) and fit the
/// 1,200-byte packets every QUIC path carries; discovery would probe every
/// new connection with a handful of padded packets each way (acknowledged,
/// and repeated every 10 minutes), a share of a login's packets and CPU
/// that buys nothing for chat traffic (media goes over HTTPS).
pub fn quic_cheap_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.mtu_discovery_config(None);
    t
}

/// A development PKI: a CA and one leaf certificate signed by it, all PEM.
/// Used by `wactl up` and by tests; production deployments bring their own.
pub struct DevPki {
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevPki {
    /// A fresh CA and a leaf for `names` (DNS names or IP addresses).
    pub fn generate(names: &[&str]) -> Result<DevPki, rcgen::Error> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "wa development CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let leaf_key = KeyPair::generate()?;
        let mut leaf =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        leaf.distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("wa"));
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
        Ok(DevPki {
            ca_cert_pem: ca_cert.pem(),
            cert_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` (mode 0600 on Unix) into `dir`.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join("ca.pem"), &self.ca_cert_pem)?;
        std::fs::write(dir.join("cert.pem"), &self.cert_pem)?;
        crate::fsutil::write_private(&dir.join("key.pem"), self.key_pem.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_loads_into_server_client_and_quic_configs() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(&["localhost", "127.0.0.1"]).unwrap();
        pki.write_to(dir.path()).unwrap();
        let certs = load_certs(&dir.path().join("cert.pem")).unwrap();
        let key = load_key(&dir.path().join("key.pem")).unwrap();
        let roots = load_certs(&dir.path().join("ca.pem")).unwrap();
        let s = server_config(certs, key, &[crate::proto::limits::ALPN]).unwrap();
        let c = client_config(&roots, &[crate::proto::limits::ALPN]).unwrap();
        quic_server_crypto(s).unwrap();
        quic_client_crypto(c).unwrap();
        assert_eq!(
            provider().cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert!(load_certs(&dir.path().join("missing.pem")).is_err());
        assert!(load_key(&dir.path().join("ca.pem")).is_err());
    }

    /// Our client and server agree on AES-128-GCM with SHA-256 (see
    /// [`provider`]); a client that offers only AES-256 still gets in.
    #[test]
    fn handshakes_prefer_aes_128_with_sha_256() {
        use rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384;
        use rustls_pki_types::ServerName;
        let pki = DevPki::generate(&["localhost"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        pki.write_to(dir.path()).unwrap();
        let certs = load_certs(&dir.path().join("cert.pem")).unwrap();
        let key = load_key(&dir.path().join("key.pem")).unwrap();
        let roots = load_certs(&dir.path().join("ca.pem")).unwrap();
        let alpn = crate::proto::limits::ALPN;
        let server = Arc::new(server_config(certs, key, &[alpn]).unwrap());
        let ours = client_config(&roots, &[alpn]).unwrap();
        let mut aes256_only = (*provider()).clone();
        aes256_only.cipher_suites = vec![TLS13_AES_256_GCM_SHA384];
        let mut store = rustls::RootCertStore::empty();
        store.add(roots[0].clone()).unwrap();
        let mut theirs = rustls::ClientConfig::builder_with_provider(Arc::new(aes256_only))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        theirs.alpn_protocols = vec![alpn.to_vec()];
        for (client, want) in [
            (ours, "TLS13_AES_128_GCM_SHA256"),
            (theirs, "TLS13_AES_256_GCM_SHA384"),
        ] {
            let mut c = rustls::ClientConnection::new(
                Arc::new(client),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let mut s = rustls::ServerConnection::new(Arc::clone(&server)).unwrap();
            for _ in 0..10 {
                if !c.is_handshaking() && !s.is_handshaking() {
                    break;
                }
                let mut buf = Vec::new();
                while c.wants_write() {
                    c.write_tls(&mut buf).unwrap();
                }
                s.read_tls(&mut &buf[..]).unwrap();
                s.process_new_packets().unwrap();
                buf.clear();
                while s.wants_write() {
                    s.write_tls(&mut buf).unwrap();
                }
                c.read_tls(&mut &buf[..]).unwrap();
                c.process_new_packets().unwrap();
            }
            let suite = s.negotiated_cipher_suite().unwrap().suite();
            assert_eq!(format!("{suite:?}"), want);
        }
    }
}

//! SMS providers behind one trait, chosen by `sms.provider`:
//!
//! - `log` (development only; `validate` refuses it in production mode):
//!   appends `NUMBER CODE` to a file, which `wactl code` reads;
//! - `webhook`: an HTTP(S) POST of a templated body to a gateway, with a
//!   timeout per attempt and retries with backoff for failures that may pass;
//! - `command`: runs a program with the number, code and message in its
//!   environment (never in its arguments, which other users can see).
//!
//! Nothing here logs a code or a whole number.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::config::{CommandConfig, LogSmsConfig, Provider, SmsConfig, WebhookConfig};
use crate::phone::Number;

/// What a provider could not do.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("writing the development code file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the gateway could not be reached: {0}")]
    Unreachable(String),
    #[error("the gateway answered HTTP {0}")]
    Status(u16),
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the SMS command could not run: {0}")]
    Spawn(std::io::Error),
    #[error("the SMS command failed: {0}")]
    CommandFailed(String),
    #[error("SMS set-up: {0}")]
    Setup(String),
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SmsError>> + Send + 'a>>;

/// Sends one code to one number.
pub trait SmsProvider: Send + Sync {
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, number: &'a Number, code: &'a str) -> SendFuture<'a>;
}

/// The text a person receives.
pub fn message(code: &str) -> String {
    format!("Your wa code is {code}. Do not share it with anyone.")
}

/// The provider `cfg` chooses, with its files loaded.
pub fn provider(cfg: &SmsConfig) -> Result<Arc<dyn SmsProvider>, SmsError> {
    Ok(match cfg.provider {
        Provider::Log => Arc::new(LogSms(cfg.log.clone())),
        Provider::Webhook => Arc::new(WebhookSms::new(cfg.webhook.clone())?),
        Provider::Command => Arc::new(CommandSms(cfg.command.clone())),
    })
}

/// Development: codes go to a file.
pub struct LogSms(pub LogSmsConfig);

impl SmsProvider for LogSms {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, number: &'a Number, code: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            let path = &self.0.file;
            let err = |source| SmsError::File {
                path: path.clone(),
                source,
            };
            let mut opts = tokio::fs::OpenOptions::new();
            opts.create(true).append(true).mode(0o600);
            let mut f = opts.open(path).await.map_err(err)?;
            f.write_all(format!("{} {code}\n", number.as_str()).as_bytes())
                .await
                .map_err(err)?;
            f.flush().await.map_err(err)?;
            // The log provider's own line: development only, so the code may show.
            tracing::info!(number = %number.masked(), %code, file = %path.display(), "development SMS written");
            Ok(())
        })
    }
}

/// A real gateway over HTTP(S), through reqwest with our rustls set-up (the
/// *ring* provider, roots from `sms.webhook.ca_file`).
pub struct WebhookSms {
    cfg: WebhookConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    auth: Option<http::HeaderValue>,
}

impl WebhookSms {
    pub fn new(cfg: WebhookConfig) -> Result<WebhookSms, SmsError> {
        let url = reqwest::Url::parse(&cfg.url)
            .map_err(|e| SmsError::Setup(format!("sms.webhook.url: {e}")))?;
        let mut client = reqwest::Client::builder()
            // A gateway that redirects gets no second copy of the code.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout);
        // reqwest wants a TLS set-up even for plain http (it panics without a
        // process-wide provider): an http gateway gets one trusting nothing.
        let roots = if url.scheme() == "https" {
            common::tls::load_certs(&cfg.ca_file)
                .map_err(|e| SmsError::Setup(format!("sms.webhook.ca_file: {e}")))?
        } else {
            Vec::new()
        };
        let tls = common::tls::client_config(&roots, &[b"http/1.1"])
            .map_err(|e| SmsError::Setup(e.to_string()))?;
        client = client.tls_backend_preconfigured(tls);
        let client = client
            .build()
            .map_err(|e| SmsError::Setup(format!("HTTP client: {e}")))?;
        let auth = match &cfg.auth_header_file {
            Some(f) => {
                let raw = crate::secret::read(f, 1).map_err(|e| SmsError::Setup(e.to_string()))?;
                let text = String::from_utf8_lossy(&raw).trim().to_owned();
                let mut v = http::HeaderValue::from_str(&text).map_err(|_| {
                    SmsError::Setup(format!("{} is not a header value", f.display()))
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(WebhookSms {
            cfg,
            url,
            client,
            auth,
        })
    }

    fn body(&self, number: &Number, code: &str) -> String {
        self.cfg
            .body
            .replace("{message}", &message(code))
            .replace("{number}", number.as_str())
            .replace("{code}", code)
    }

    /// One attempt; `Ok(status)` for any HTTP answer.
    async fn attempt(&self, body: String) -> Result<u16, SmsError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, &self.cfg.content_type)
            .body(body);
        if let Some(a) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        // (Errors without the URL: a gateway's may carry a key in its query.)
        let resp = req
            .send()
            .await
            .map_err(|e| SmsError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        // Drain (bounded by the attempt's timeout) so the connection can be reused.
        let _ = resp.bytes().await;
        Ok(status)
    }
}

impl SmsProvider for WebhookSms {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, number: &'a Number, code: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            let mut backoff = Duration::from_millis(200);
            let mut last = SmsError::Unreachable("no attempt made".into());
            for attempt in 0..=self.cfg.retries {
                if attempt > 0 {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                let r =
                    tokio::time::timeout(self.cfg.timeout, self.attempt(self.body(number, code)))
                        .await
                        .unwrap_or(Err(SmsError::Timeout(self.cfg.timeout)));
                match r {
                    Ok(s) if (200..300).contains(&s) => return Ok(()),
                    // A refusal that will not change on a retry.
                    Ok(s) if (400..500).contains(&s) && s != 429 && s != 408 => {
                        return Err(SmsError::Status(s));
                    }
                    Ok(s) => last = SmsError::Status(s),
                    Err(e) => last = e,
                }
                tracing::warn!(attempt, number = %number.masked(), error = %last, "SMS gateway attempt failed");
            }
            Err(last)
        })
    }
}

/// An external program does the sending.
pub struct CommandSms(pub CommandConfig);

impl SmsProvider for CommandSms {
    fn name(&self) -> &'static str {
        "command"
    }

    fn send<'a>(&'a self, number: &'a Number, code: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            let c = &self.0;
            let mut child = tokio::process::Command::new(&c.program)
                .args(&c.args)
                .env("WA_SMS_NUMBER", number.as_str())
                .env("WA_SMS_CODE", code)
                .env("WA_SMS_MESSAGE", message(code))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(SmsError::Spawn)?;
            let mut stderr = child.stderr.take().expect("piped");
            let run = async {
                let mut err = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut err).await;
                (child.wait().await, err)
            };
            match tokio::time::timeout(c.timeout, run).await {
                Err(_) => Err(SmsError::Timeout(c.timeout)),
                Ok((Err(e), _)) => Err(SmsError::Spawn(e)),
                Ok((Ok(st), _)) if st.success() => Ok(()),
                Ok((Ok(st), err)) => {
                    let tail: String = String::from_utf8_lossy(&err)
                        .chars()
                        .rev()
                        .take(200)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    // The program's own words, with any code it echoed masked.
                    Err(SmsError::CommandFailed(format!(
                        "{st}: {}",
                        tail.replace(code, "******")
                    )))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_provider_appends_number_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let p = LogSms(LogSmsConfig {
            file: dir.path().join("codes.log"),
        });
        let n = Number::parse("+15550000001").unwrap();
        p.send(&n, "123456").await.unwrap();
        p.send(&n, "654321").await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("codes.log")).unwrap();
        assert_eq!(text, "+15550000001 123456\n+15550000001 654321\n");
    }

    #[tokio::test]
    async fn command_provider_gets_the_code_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let p = CommandSms(CommandConfig {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!("echo \"$WA_SMS_NUMBER $WA_SMS_CODE\" > {}", out.display()),
            ],
            timeout: Duration::from_secs(10),
        });
        let n = Number::parse("+15550000001").unwrap();
        p.send(&n, "123456").await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "+15550000001 123456\n"
        );
        let failing = CommandSms(CommandConfig {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo bad $WA_SMS_CODE >&2; exit 3".into()],
            timeout: Duration::from_secs(10),
        });
        let e = failing.send(&n, "123456").await.unwrap_err().to_string();
        assert!(!e.contains("123456") && e.contains("bad"), "{e}");
    }

    /// A fake SMS gateway on port 0: connection `i` gets `answers[i]` (the
    /// last repeats), `None` meaning it never answers. It records every
    /// request it read, and counts every connection the client opened.
    struct Gateway {
        addr: std::net::SocketAddr,
        seen: Arc<std::sync::Mutex<Vec<Seen>>>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<(tokio::net::TcpListener, usize)>,
    }

    /// One request as the gateway read it.
    #[derive(Debug, Clone)]
    struct Seen {
        /// Request line and headers, lower-cased.
        head: String,
        body: String,
    }

    async fn read_request<S: tokio::io::AsyncRead + Unpin>(
        r: &mut tokio::io::BufReader<S>,
    ) -> Option<Seen> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut head = String::new();
        let mut len = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            let line = line.to_ascii_lowercase();
            if let Some(v) = line.strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.ok()?;
        Some(Seen {
            head,
            body: String::from_utf8(body).ok()?,
        })
    }

    impl Gateway {
        async fn start(
            answers: Vec<Option<&'static str>>,
            tls: Option<tokio_rustls::TlsAcceptor>,
        ) -> Gateway {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (stop, mut stopped) = tokio::sync::oneshot::channel();
            let record = Arc::clone(&seen);
            let task = tokio::spawn(async move {
                let mut n = 0;
                loop {
                    let tcp = tokio::select! {
                        a = listener.accept() => a.unwrap().0,
                        _ = &mut stopped => return (listener, n),
                    };
                    let answer = answers[n.min(answers.len() - 1)];
                    n += 1;
                    let (record, tls) = (Arc::clone(&record), tls.clone());
                    tokio::spawn(async move {
                        match tls {
                            Some(t) => {
                                if let Ok(s) = t.accept(tcp).await {
                                    serve_one(s, answer, record).await;
                                }
                            }
                            None => serve_one(tcp, answer, record).await,
                        }
                    });
                }
            });
            Gateway {
                addr,
                seen,
                stop,
                task,
            }
        }

        /// Stops accepting. Returns how many connections the client opened
        /// (accepted, or still waiting in the listen queue) and the
        /// requests read.
        async fn finish(self) -> (usize, Vec<Seen>) {
            self.stop.send(()).unwrap();
            let (listener, mut n) = self.task.await.unwrap();
            // Tokio leaves it non-blocking: this takes what is queued, no more.
            let listener = listener.into_std().unwrap();
            loop {
                match listener.accept() {
                    Ok(_) => n += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let seen = self.seen.lock().unwrap().clone();
            (n, seen)
        }
    }

    async fn serve_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        s: S,
        answer: Option<&'static str>,
        record: Arc<std::sync::Mutex<Vec<Seen>>>,
    ) {
        let mut r = tokio::io::BufReader::new(s);
        let Some(req) = read_request(&mut r).await else {
            return;
        };
        record.lock().unwrap().push(req);
        let Some(status) = answer else {
            // Never answers; holds the connection until the client gives up.
            std::future::pending::<()>().await;
            return;
        };
        let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = r.get_mut().write_all(resp.as_bytes()).await;
        let _ = r.get_mut().shutdown().await;
    }

    fn webhook(url: String) -> WebhookConfig {
        WebhookConfig {
            url,
            body: "to={number}&code={code}".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            ..WebhookConfig::default()
        }
    }

    #[tokio::test]
    async fn webhook_posts_the_template_and_retries_server_errors() {
        let g = Gateway::start(vec![Some("503 Busy"), Some("200 OK")], None).await;
        let p = WebhookSms::new(webhook(format!("http://{}/send", g.addr))).unwrap();
        let n = Number::parse("+15550000001").unwrap();
        p.send(&n, "123456").await.unwrap();
        let (connections, seen) = g.finish().await;
        assert_eq!(connections, 2);
        let bodies: Vec<_> = seen.iter().map(|s| s.body.as_str()).collect();
        assert_eq!(bodies, ["to=+15550000001&code=123456"; 2]);
        assert!(
            seen[0].head.starts_with("post /send http/1.1\r\n"),
            "{:?}",
            seen[0]
        );
        assert!(
            seen[0]
                .head
                .contains("content-type: application/x-www-form-urlencoded\r\n")
        );
    }

    #[tokio::test]
    async fn webhook_times_out_each_attempt_and_stops_after_the_retries() {
        let g = Gateway::start(vec![None], None).await;
        let p = WebhookSms::new(WebhookConfig {
            timeout: Duration::from_millis(200),
            retries: 1,
            ..webhook(format!("http://{}/send", g.addr))
        })
        .unwrap();
        let n = Number::parse("+15550000001").unwrap();
        let e = p.send(&n, "123456").await.unwrap_err();
        assert!(
            matches!(e, SmsError::Timeout(t) if t == Duration::from_millis(200)),
            "{e:?}"
        );
        drop(p);
        let (connections, _) = g.finish().await;
        assert_eq!(connections, 2, "one attempt and one retry");
    }

    #[tokio::test]
    async fn webhook_does_not_retry_a_refusal_and_sends_the_auth_header() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("gateway.auth");
        common::fsutil::write_private(&auth, b"Basic dXNlcjpzZWNyZXQ=\n").unwrap();
        for (status, retried) in [("400 Bad Request", false), ("429 Slow Down", true)] {
            let g = Gateway::start(vec![Some(status)], None).await;
            let p = WebhookSms::new(WebhookConfig {
                auth_header_file: Some(auth.clone()),
                retries: 2,
                ..webhook(format!("http://{}/send", g.addr))
            })
            .unwrap();
            let n = Number::parse("+15550000001").unwrap();
            let e = p.send(&n, "123456").await.unwrap_err();
            let code: u16 = status[..3].parse().unwrap();
            assert!(matches!(e, SmsError::Status(s) if s == code), "{e:?}");
            let (connections, seen) = g.finish().await;
            // 4xx but 408 and 429: one request; 429: the first and 2 retries.
            assert_eq!(connections, if retried { 3 } else { 1 }, "{status}");
            assert_eq!(seen.len(), connections, "{status}");
            for s in &seen {
                assert!(
                    s.head.contains("authorization: basic dxnlcjpzzwnyzxq=\r\n"),
                    "{status}: {}",
                    s.head
                );
            }
        }
    }

    #[tokio::test]
    async fn webhook_over_https_verifies_the_gateway_against_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let pki = common::tls::DevPki::generate(&["localhost"]).unwrap();
        pki.write_to(dir.path()).unwrap();
        let tls = common::tls::server_config(
            common::tls::load_certs(&dir.path().join("cert.pem")).unwrap(),
            common::tls::load_key(&dir.path().join("key.pem")).unwrap(),
            &[b"http/1.1"],
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let n = Number::parse("+15550000001").unwrap();

        let g = Gateway::start(vec![Some("200 OK")], Some(acceptor.clone())).await;
        let p = WebhookSms::new(WebhookConfig {
            ca_file: dir.path().join("ca.pem"),
            ..webhook(format!("https://localhost:{}/send", g.addr.port()))
        })
        .unwrap();
        p.send(&n, "123456").await.unwrap();
        let (_, seen) = g.finish().await;
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].body, "to=+15550000001&code=123456");

        // A gateway whose certificate another CA signed gets no request.
        let other = tempfile::tempdir().unwrap();
        common::tls::DevPki::generate(&["localhost"])
            .unwrap()
            .write_to(other.path())
            .unwrap();
        let g = Gateway::start(vec![Some("200 OK")], Some(acceptor)).await;
        let p = WebhookSms::new(WebhookConfig {
            ca_file: other.path().join("ca.pem"),
            retries: 0,
            ..webhook(format!("https://localhost:{}/send", g.addr.port()))
        })
        .unwrap();
        let e = p.send(&n, "123456").await.unwrap_err();
        assert!(matches!(e, SmsError::Unreachable(_)), "{e:?}");
        let (_, seen) = g.finish().await;
        assert!(seen.is_empty(), "{seen:?}");
    }
}

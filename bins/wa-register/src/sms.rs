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

    #[tokio::test]
    async fn webhook_posts_the_template_and_retries_server_errors() {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for status in ["503 Busy", "200 OK"] {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut r = BufReader::new(tcp);
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).await.unwrap();
                bodies.push(String::from_utf8(body).unwrap());
                r.get_mut()
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await
                    .unwrap();
            }
            bodies
        });
        let p = WebhookSms::new(WebhookConfig {
            url: format!("http://{addr}/send"),
            body: "to={number}&code={code}".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            ..WebhookConfig::default()
        })
        .unwrap();
        let n = Number::parse("+15550000001").unwrap();
        p.send(&n, "123456").await.unwrap();
        let bodies = server.await.unwrap();
        assert_eq!(bodies, ["to=+15550000001&code=123456"; 2]);
    }
}

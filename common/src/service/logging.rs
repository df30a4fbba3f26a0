//! Logs on standard error, shaped for where the service runs:
//!
//! - a terminal or a plain pipe: human text (colours only on a terminal);
//! - journald (`JOURNAL_STREAM` set): no colours, no timestamp (the journal
//!   stamps each line), and each line starts with its syslog priority
//!   (`<3>` error ... `<7>` trace) so `journalctl -p warning` works;
//! - `--log-format json`: one JSON object per line, for log shippers.
//!
//! The filter is `RUST_LOG` when set, else `[log] level`; SIGHUP sets the
//! level again from the config file through the [`LogHandle`].

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journald's shape under systemd, else human text.
    Auto,
    /// Human text (colours on a terminal).
    Text,
    /// Priority-prefixed lines without colours or timestamps.
    Journal,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// What `Auto` means here and now.
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journal,
            LogFormat::Auto => LogFormat::Text,
            f => f,
        }
    }
}

/// Changes the filter of the running subscriber.
#[derive(Clone)]
pub struct LogHandle {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    /// `RUST_LOG` was set at start: it wins over the config file for good.
    from_env: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log.level {0:?}: {1}")]
    Filter(String, String),
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

impl LogHandle {
    /// Sets the filter to `level` (unless `RUST_LOG` decides).
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        if self.from_env {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level)
            .map_err(|e| LogError::Filter(level.to_owned(), e.to_string()))?;
        match &self.handle {
            Some(h) => h
                .reload(filter)
                .map_err(|e| LogError::Reload(e.to_string())),
            None => Ok(()),
        }
    }
}

/// Installs the global subscriber; `level` is `[log] level`. A second call
/// (tests) leaves the first subscriber in place.
pub fn init(format: LogFormat, level: &str) -> LogHandle {
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let from_env = env.is_some();
    let filter = env
        .as_deref()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output: Box<dyn Layer<_> + Send + Sync> = match format.resolve() {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Journal => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(Journal(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_ansi(false),
            ))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text | LogFormat::Auto => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok();
    LogHandle {
        handle: installed.then_some(handle),
        from_env,
    }
}

/// The syslog priority of a level, as journald reads it from a line prefix.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// journald's line shape: `<P>` then the usual fields, without time and
/// level (the priority says it).
struct Journal(Format<Full, ()>);

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    #[test]
    fn explicit_formats_are_kept() {
        assert_eq!(LogFormat::Json.resolve(), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(), LogFormat::Text);
    }
}

//! Metrics as the admin listener serves them: a `prometheus-client`
//! registry per service, rendered in the Prometheus text format (0.0.4).
//!
//! Modules that count with atomics of their own (the store's shards, the
//! registration flow) hand a [`Scrape`] closure that reads them at scrape
//! time; new code registers `prometheus-client` metrics directly. The
//! process figures every operator wants (RSS, open files and their limit)
//! come from [`process`].

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// One scrape's worth of values read from elsewhere. Names are given
/// without the `_total` suffix of counters (the encoder adds it).
pub struct Sample<'a> {
    enc: DescriptorEncoder<'a>,
    result: fmt::Result,
}

impl Sample<'_> {
    pub fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.one(name, help, ConstCounter::new(0u64).metric_type(), |m| {
            ConstCounter::new(v).encode(m)
        });
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.one(name, help, ConstGauge::new(0.0).metric_type(), |m| {
            ConstGauge::new(v).encode(m)
        });
    }

    /// A gauge with one series per `(label value, value)`.
    pub fn gauges(&mut self, name: &str, help: &str, label: &str, series: &[(String, f64)]) {
        let labels: Vec<_> = series
            .iter()
            .map(|(l, v)| (vec![(label.to_owned(), l.clone())], *v))
            .collect();
        self.labeled_gauges(name, help, &labels);
    }

    /// A gauge with one series per label set.
    pub fn labeled_gauges(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Vec<(String, String)>, f64)],
    ) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            let mut m =
                self.enc
                    .encode_descriptor(name, help, None, ConstGauge::new(0.0).metric_type())?;
            for (labels, v) in series {
                ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
            }
            Ok(())
        })();
    }

    /// A counter with one series per label set.
    pub fn labeled_counters(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Vec<(String, String)>, u64)],
    ) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            let mut m = self.enc.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for (labels, v) in series {
                ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
            }
            Ok(())
        })();
    }

    /// A counter with one series per `(label value, value)`.
    pub fn counters(&mut self, name: &str, help: &str, label: &str, series: &[(String, u64)]) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            let mut m = self.enc.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for (l, v) in series {
                let labels = [(label, l.as_str())];
                ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
            }
            Ok(())
        })();
    }

    fn one(
        &mut self,
        name: &str,
        help: &str,
        ty: prometheus_client::metrics::MetricType,
        f: impl FnOnce(prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result,
    ) {
        if self.result.is_err() {
            return;
        }
        self.result = self.enc.encode_descriptor(name, help, None, ty).and_then(f);
    }
}

/// A [`Collector`] made of a closure over a [`Sample`].
pub struct Scrape<F>(pub F);

impl<F> fmt::Debug for Scrape<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl<F> Collector for Scrape<F>
where
    F: Fn(&mut Sample<'_>) + Send + Sync + 'static,
{
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let mut s = Sample {
            enc,
            result: Ok(()),
        };
        (self.0)(&mut s);
        s.result
    }
}

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What the process uses, read from `/proc/self` at scrape time (Linux; the
/// figures are left out elsewhere).
pub mod process {
    /// Resident set size in bytes.
    pub fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// File descriptors open now.
    pub fn open_fds() -> Option<u64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
    }

    /// The soft limit on open files.
    pub fn max_fds() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    /// Adds the process figures to a scrape.
    pub fn sample(s: &mut super::Sample<'_>) {
        if let Some(v) = rss_bytes() {
            s.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                v as f64,
            );
        }
        if let Some(v) = open_fds() {
            s.gauge("process_open_fds", "Open file descriptors", v as f64);
        }
        if let Some(v) = max_fds() {
            s.gauge(
                "process_max_fds",
                "Limit on open file descriptors",
                v as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scraped_values_render_as_prometheus_text() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        r.register("wa_things", "Things", c.clone());
        c.inc();
        r.register_collector(Box::new(Scrape(|s: &mut Sample<'_>| {
            s.counter("wa_read", "Read", 7);
            s.gauges(
                "wa_queue_length",
                "Queue",
                "class",
                &[("acks".into(), 2.0), ("appends".into(), 5.0)],
            );
            process::sample(s);
        })));
        let text = render(&r);
        assert!(text.contains("wa_things_total 1"), "{text}");
        assert!(text.contains("wa_read_total 7"), "{text}");
        assert!(
            text.contains("wa_queue_length{class=\"appends\"} 5"),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_open_fds "), "{text}");
    }
}

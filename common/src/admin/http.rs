//! Request counts and latencies of an HTTP API (wa-register, wa-media), by
//! route template (never the concrete path: it may hold a handle or a
//! number), method and status. One axum middleware for both services.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::histogram::exponential_buckets;

use super::metrics::{Counter, Family, Histogram, Registry};

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The metrics of one HTTP API. Cheap to clone (shared series).
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl HttpMetrics {
    /// Registers `<prefix>_http_requests_total` and
    /// `<prefix>_http_request_duration_seconds`.
    pub fn register(&self, r: &mut Registry, prefix: &str) {
        r.register(
            format!("{prefix}_http_requests"),
            "HTTP requests answered, by route, method and status",
            self.requests.clone(),
        );
        r.register(
            format!("{prefix}_http_request_duration_seconds"),
            "Time to the response head, by route and method",
            self.latency.clone(),
        );
    }

    /// `router` with every request counted.
    pub fn wrap(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), track))
    }
}

async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    m.latency
        .get_or_create(&vec![("route", route.clone()), ("method", method.clone())])
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&vec![
            ("route", route),
            ("method", method),
            ("status", status),
        ])
        .inc();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_status() {
        let m = HttpMetrics::default();
        let app = m.wrap(
            Router::new()
                .route("/v1/media/{handle}", get(|| async { "blob" }))
                .fallback(|| async { (http::StatusCode::NOT_FOUND, "no") }),
        );
        for uri in ["/v1/media/m1-abc", "/v1/media/m1-def", "/nope"] {
            let req = http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let mut r = Registry::default();
        m.register(&mut r, "wa_media");
        let text = super::super::metrics::render(&r);
        assert!(
            text.contains(
                r#"wa_media_http_requests_total{route="/v1/media/{handle}",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"route="unmatched",method="GET",status="404"} 1"#),
            "{text}"
        );
        assert!(!text.contains("m1-abc"), "a concrete path leaked: {text}");
        assert!(
            text.contains("wa_media_http_request_duration_seconds_count"),
            "{text}"
        );
    }
}

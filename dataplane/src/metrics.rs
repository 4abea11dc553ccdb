//! Prometheus metrics of the dataplane (names are stable; see the README).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::usage::Usage;

/// Labels of `zeronas_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRequestLabels {
    /// Route label (see `Route::label`).
    pub route: &'static str,
    /// Method, or `OTHER` for methods the API does not know (bounded cardinality).
    pub method: &'static str,
    /// Status code.
    pub code: u16,
}

/// Labels of `zeronas_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route label.
    pub route: &'static str,
}

/// Labels of `zeronas_transfer_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    /// `http` or `nfs`.
    pub protocol: &'static str,
    /// How the bytes moved: `sendfile`, `splice`, `mmap` or `copy`.
    pub path: &'static str,
}

/// Every way file bytes can move, in the order the stats route reports them.
pub const TRANSFER_PATHS: [&str; 4] = ["sendfile", "splice", "mmap", "copy"];

/// All metrics of one dataplane process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpRequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    transfer_bytes: Family<TransferLabels, Counter>,
    share_capacity: Gauge,
    share_used: Gauge,
    share_files: Gauge,
    requests_total: AtomicU64,
    bytes_received: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpRequestLabels, Counter>::default();
        registry.register(
            "zeronas_http_requests",
            "HTTP requests by route, method and status code",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~27 s
            Histogram::new(exponential_buckets(0.00005, 2.0, 20))
        });
        registry.register(
            "zeronas_http_request_duration_seconds",
            "Time from request head to response head, by route",
            http_duration.clone(),
        );
        let transfer_bytes = Family::<TransferLabels, Counter>::default();
        registry.register(
            "zeronas_transfer_bytes",
            "File bytes moved, by protocol and by the path they took (sendfile, splice, mmap, copy)",
            transfer_bytes.clone(),
        );
        let share_capacity = Gauge::default();
        registry.register(
            "zeronas_share_capacity_bytes",
            "Quota of the share (0: none)",
            share_capacity.clone(),
        );
        let share_used = Gauge::default();
        registry.register(
            "zeronas_share_used_bytes",
            "Bytes held by regular files in the share",
            share_used.clone(),
        );
        let share_files = Gauge::default();
        registry.register(
            "zeronas_share_files",
            "Regular files in the share",
            share_files.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            transfer_bytes,
            share_capacity,
            share_used,
            share_files,
            requests_total: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
        }
    }

    /// Counts one finished HTTP request.
    pub fn observe_request(
        &self,
        route: &'static str,
        method: &http::Method,
        code: u16,
        seconds: f64,
    ) {
        let method = method_label(method);
        self.http_requests
            .get_or_create(&HttpRequestLabels {
                route,
                method,
                code,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of file bytes moved by `protocol` along `path`.
    pub fn transfer_counter(&self, protocol: &'static str, path: &'static str) -> Counter {
        self.transfer_bytes
            .get_or_create(&TransferLabels { protocol, path })
            .clone()
    }

    /// Counts upload body bytes received.
    pub fn add_received(&self, bytes: u64) {
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Requests served since start.
    pub fn requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// Upload bytes received since start.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// Bytes moved by `protocol` along `path` since start.
    pub fn transferred(&self, protocol: &'static str, path: &'static str) -> u64 {
        self.transfer_bytes
            .get_or_create(&TransferLabels { protocol, path })
            .get()
    }

    /// Renders the Prometheus text format, refreshing the share gauges first.
    pub fn render(&self, usage: &Usage) -> String {
        self.share_capacity
            .set(clamp_i64(usage.capacity().unwrap_or(0)));
        self.share_used.set(clamp_i64(usage.used()));
        self.share_files.set(clamp_i64(usage.files()));
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A bounded label for an HTTP method.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::POST => "POST",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new();
        m.observe_request("files", &http::Method::GET, 200, 0.001);
        m.observe_request(
            "files",
            &http::Method::from_bytes(b"BREW").unwrap(),
            405,
            0.001,
        );
        m.transfer_counter("http", "copy").inc_by(10);
        let text = m.render(&Usage::new(Some(5)));
        assert!(text.contains(
            "zeronas_http_requests_total{route=\"files\",method=\"GET\",code=\"200\"} 1"
        ));
        assert!(text.contains("method=\"OTHER\""));
        assert!(text.contains("zeronas_http_request_duration_seconds_bucket{"));
        assert!(text.contains("zeronas_transfer_bytes_total{protocol=\"http\",path=\"copy\"} 10"));
        assert!(text.contains("zeronas_share_capacity_bytes 5"));
        assert_eq!(m.requests_total(), 2);
        assert_eq!(m.transferred("http", "copy"), 10);
    }
}

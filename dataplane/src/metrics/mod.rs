//! Prometheus metrics of the dataplane (names are stable; see the README).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::budget::BufferBudget;
use crate::io::{FallbackReason, Transfer};
use crate::runtime::RuntimeReport;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::usage::Usage;

mod histogram;
mod process;

pub use histogram::AtomicHistogram;

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

/// Labels of `zeronas_http_request_duration_seconds` and
/// `zeronas_http_time_to_first_byte_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLatencyLabels {
    /// Route label.
    pub route: &'static str,
    /// Method label (see [`method_label`]).
    pub method: &'static str,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub status_class: &'static str,
}

/// Labels of `zeronas_http_response_size_bytes`.
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

/// Labels of `zeronas_zero_copy_fallback_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// `http`, `nfs` or `sftp`.
    pub protocol: &'static str,
    /// One of the documented reasons (`FallbackReason::label`).
    pub reason: &'static str,
}

/// Labels of `zeronas_nfs_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NfsRequestLabels {
    /// Procedure name (`READ`, `GETATTR`, `MNT`, `GETPORT`...).
    pub proc: &'static str,
    /// `ok`, an NFS error name (`noent`, `stale`...) or `garbage_args`.
    pub status: &'static str,
}

/// Labels of `zeronas_sftp_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SftpRequestLabels {
    /// Request name (`open`, `read`, `write`, `readdir`, `statvfs`...; `malformed`).
    pub op: &'static str,
    /// `ok`, or the status answered (`eof`, `no_such_file`, `permission_denied`...).
    pub status: &'static str,
}

/// Labels of `zeronas_nfs_duplicate_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DuplicateLabels {
    /// `replayed` (the cached reply sent again) or `dropped_in_progress`.
    pub result: &'static str,
}

/// Labels of metrics by protocol only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `http` or `nfs`.
    pub protocol: &'static str,
}

/// Labels of `zeronas_transport_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// Transport in use (`tcp`).
    pub transport: &'static str,
    /// `available`, `unavailable` or `disabled`.
    pub rdma: &'static str,
    /// Why RDMA is not used (`no_device`, `disabled`, `not_implemented`), or `none`.
    pub reason: &'static str,
}

/// Labels of `zeronas_worker_pinned`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CpuLabels {
    /// CPU number.
    pub cpu: u32,
}

/// Labels of `zeronas_cgroup_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CgroupInfoLabels {
    /// `v2`, `hybrid`, `v1` or `none`.
    pub hierarchy: &'static str,
}

/// The exposition's media type: prometheus-client writes OpenMetrics text (counter
/// families named without `_total`, `# EOF`), and Prometheus parses a scrape by this type
/// (Prometheus 3 refuses a scrape without one).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of every latency histogram: 25 µs to 10 s in 1-2.5-5 steps, so
/// quantiles from 100 µs to 10 s fall inside a bucket no wider than 2.5× its lower bound.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (bytes) of `zeronas_http_response_size_bytes`: 256 B to 1 GiB, ×4 steps.
pub const SIZE_BUCKETS: [f64; 12] = [
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
];

/// Method labels of the HTTP metrics ([`method_label`]).
pub const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS", "OTHER"];
/// Status classes of the HTTP latency histograms.
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// The status class label of `code` (1xx, never final here, counts as 2xx).
pub fn status_class(code: u16) -> &'static str {
    match code {
        300..=399 => "3xx",
        400..=499 => "4xx",
        500.. => "5xx",
        _ => "2xx",
    }
}

/// One HTTP exchange, recorded once its last response byte was sent (or the connection
/// failed).
#[derive(Debug, Clone, Copy)]
pub struct HttpExchange {
    /// Route label.
    pub route: &'static str,
    /// Method label ([`method_label`]).
    pub method: &'static str,
    /// Status code.
    pub code: u16,
    /// Seconds from the request head to the response head being ready to send.
    pub time_to_first_byte: f64,
    /// Seconds from the request head to the last body byte written (or handed to hyper).
    pub duration: f64,
    /// Body bytes sent.
    pub body_bytes: u64,
}

/// The two latency histograms of one (route, method, status class).
#[derive(Debug)]
struct LatencyCell {
    duration: AtomicHistogram,
    first_byte: AtomicHistogram,
}

/// Protocols with transfer metrics.
pub const PROTOCOLS: [&str; 3] = ["http", "nfs", "sftp"];
/// Route labels of the HTTP metrics.
pub const ROUTES: [&str; 10] = [
    "files", "list", "stats", "shares", "ui", "metrics", "healthz", "readyz", "invalid", "unknown",
];

fn protocol_index(protocol: &str) -> usize {
    PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0)
}

/// Every way file bytes can move, in the order the stats route reports them.
pub const TRANSFER_PATHS: [&str; 4] = ["sendfile", "splice", "mmap", "copy"];

/// All metrics of one dataplane process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpRequestLabels, Counter>,
    nfs_requests: Family<NfsRequestLabels, Counter>,
    connections_refused: Family<ProtocolLabels, Counter>,
    nfs_duration: Family<NfsRequestLabels, AtomicHistogram>,
    sftp_requests: Family<SftpRequestLabels, Counter>,
    sftp_duration: Family<SftpRequestLabels, AtomicHistogram>,
    http_duration: Family<HttpLatencyLabels, AtomicHistogram>,
    http_first_byte: Family<HttpLatencyLabels, AtomicHistogram>,
    http_in_flight: Gauge,
    page_cache_misses: Family<ProtocolLabels, Counter>,
    major_faults: Counter,
    memory_current: Gauge,
    memory_working_set: Gauge,
    /// One scrape at a time reads the kernel's counters and moves ours to them (two at
    /// once could both add the same difference).
    refreshing: std::sync::Mutex<()>,
    cpu_usage: Counter<f64, AtomicU64>,
    cpu_periods: Counter,
    cpu_throttled_periods: Counter,
    cpu_throttled: Counter<f64, AtomicU64>,
    /// The cgroup whose usage the scrape reads (set at start-up).
    cgroup_dir: std::sync::OnceLock<std::path::PathBuf>,
    nfs_duplicates: Family<DuplicateLabels, Counter>,
    nfs_in_flight: Gauge,
    fallback_duration: Family<ProtocolLabels, AtomicHistogram>,
    transport_info: Family<TransportLabels, Gauge>,
    share_capacity: Gauge,
    share_used: Gauge,
    share_files: Gauge,
    cgroup_info: Family<CgroupInfoLabels, Gauge>,
    cpus_allowed: Gauge,
    cpu_quota_cores: Gauge<f64, AtomicU64>,
    memory_max: Gauge,
    memory_high: Gauge,
    worker_threads: Gauge,
    worker_pinned: Family<CpuLabels, Gauge>,
    buffer_budget: Gauge,
    buffer_in_use: Gauge,
    /// Pre-created children, indexed, so the per-request path does no label hashing.
    transfer_by_path: [[Counter; 4]; PROTOCOLS.len()],
    fallback_by_reason: [[Counter; FallbackReason::ALL.len()]; PROTOCOLS.len()],
    /// Latency histograms by (route, method, status class), created on first use and then
    /// found by index.
    latency_cells: Box<[std::sync::OnceLock<LatencyCell>]>,
    size_by_route: [AtomicHistogram; ROUTES.len()],
    /// The counters of 200 answers to GET and HEAD of files, the hot case: found in the
    /// family once, then incremented without its lock or label hashing.
    files_read_ok: [std::sync::OnceLock<Counter>; 2],
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
        let http_duration =
            Family::<HttpLatencyLabels, AtomicHistogram>::new_with_constructor(latency_histogram);
        registry.register(
            "zeronas_http_request_duration_seconds",
            "Time from the request head to the last response byte written (front end) or handed to hyper",
            http_duration.clone(),
        );
        let http_first_byte =
            Family::<HttpLatencyLabels, AtomicHistogram>::new_with_constructor(latency_histogram);
        registry.register(
            "zeronas_http_time_to_first_byte_seconds",
            "Time from the request head to the response head being ready to send",
            http_first_byte.clone(),
        );
        let http_size = Family::<RouteLabels, AtomicHistogram>::new_with_constructor(|| {
            AtomicHistogram::new(SIZE_BUCKETS)
        });
        registry.register(
            "zeronas_http_response_size_bytes",
            "Response body bytes sent, by route",
            http_size.clone(),
        );
        let http_in_flight = Gauge::default();
        registry.register(
            "zeronas_http_requests_in_flight",
            "HTTP requests whose head was read and whose response is not yet sent (a scrape counts itself)",
            http_in_flight.clone(),
        );
        let nfs_requests = Family::<NfsRequestLabels, Counter>::default();
        registry.register(
            "zeronas_nfs_requests",
            "NFS, MOUNT and PORTMAP requests by procedure and status",
            nfs_requests.clone(),
        );
        let connections_refused = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "zeronas_connections_refused",
            "Connections closed on accept because the protocol's connection cap was reached",
            connections_refused.clone(),
        );
        let nfs_duration =
            Family::<NfsRequestLabels, AtomicHistogram>::new_with_constructor(latency_histogram);
        registry.register(
            "zeronas_nfs_request_duration_seconds",
            "Time to run an NFS request (reply queued; READ data sent after), by procedure and status",
            nfs_duration.clone(),
        );
        let sftp_requests = Family::<SftpRequestLabels, Counter>::default();
        registry.register(
            "zeronas_sftp_requests",
            "SFTP requests by operation and the status answered",
            sftp_requests.clone(),
        );
        let sftp_duration =
            Family::<SftpRequestLabels, AtomicHistogram>::new_with_constructor(latency_histogram);
        registry.register(
            "zeronas_sftp_request_duration_seconds",
            "Time to run an SFTP request (the reply is queued after), by operation and status",
            sftp_duration.clone(),
        );
        let nfs_duplicates = Family::<DuplicateLabels, Counter>::default();
        registry.register(
            "zeronas_nfs_duplicate_requests",
            "Retransmitted non-idempotent NFS calls found in the duplicate request cache",
            nfs_duplicates.clone(),
        );
        let nfs_in_flight = Gauge::default();
        registry.register(
            "zeronas_nfs_requests_in_flight",
            "NFS requests read and not yet run to the end, all connections",
            nfs_in_flight.clone(),
        );
        let transfer_bytes = Family::<TransferLabels, Counter>::default();
        registry.register(
            "zeronas_transfer_bytes",
            "File bytes moved, by protocol and by the path they took (sendfile, splice, mmap, copy)",
            transfer_bytes.clone(),
        );
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "zeronas_zero_copy_fallback",
            "Responses, uploads and connections that left the zero-copy path, by reason",
            fallbacks.clone(),
        );
        let fallback_duration =
            Family::<ProtocolLabels, AtomicHistogram>::new_with_constructor(latency_histogram);
        registry.register(
            "zeronas_fallback_duration_seconds",
            "Time spent moving bytes along copy paths taken as a fallback",
            fallback_duration.clone(),
        );
        let page_cache_misses = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "zeronas_page_cache_misses",
            "Send-path reads whose pages were not cached (RWF_NOWAIT probe): sent from the blocking pool",
            page_cache_misses.clone(),
        );
        let major_faults = Counter::default();
        registry.register(
            "zeronas_major_page_faults",
            "Major page faults of the process (getrusage): file pages read from disk on access, as \
             the mmap send path of read-only shares takes them",
            major_faults.clone(),
        );
        let transport_info = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "zeronas_transport_info",
            "The transport in use and RDMA availability (always 1)",
            transport_info.clone(),
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
        let cgroup_info = Family::<CgroupInfoLabels, Gauge>::default();
        registry.register(
            "zeronas_cgroup_info",
            "The host's cgroup layout (always 1)",
            cgroup_info.clone(),
        );
        let cpus_allowed = Gauge::default();
        registry.register(
            "zeronas_cgroup_cpus_allowed",
            "CPUs the process may use (affinity and cpuset)",
            cpus_allowed.clone(),
        );
        let cpu_quota_cores = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "zeronas_cgroup_cpu_quota_cores",
            "cpu.max as cores (0: no quota)",
            cpu_quota_cores.clone(),
        );
        let memory_max = Gauge::default();
        registry.register(
            "zeronas_cgroup_memory_max_bytes",
            "memory.max (0: no limit)",
            memory_max.clone(),
        );
        let memory_high = Gauge::default();
        registry.register(
            "zeronas_cgroup_memory_high_bytes",
            "memory.high (0: no limit)",
            memory_high.clone(),
        );
        let memory_current = Gauge::default();
        registry.register(
            "zeronas_cgroup_memory_current_bytes",
            "memory.current of the process's cgroup (0: not readable)",
            memory_current.clone(),
        );
        let memory_working_set = Gauge::default();
        registry.register(
            "zeronas_cgroup_memory_working_set_bytes",
            "memory.current less inactive file pages (memory.stat), as the kubelet counts it (0: not readable)",
            memory_working_set.clone(),
        );
        let cpu_usage = Counter::<f64, AtomicU64>::default();
        registry.register(
            "zeronas_cgroup_cpu_usage_seconds",
            "CPU time of the process's cgroup (cpu.stat usage_usec)",
            cpu_usage.clone(),
        );
        let cpu_periods = Counter::default();
        registry.register(
            "zeronas_cgroup_cpu_periods",
            "Enforcement periods of the cgroup's CPU quota that had runnable tasks (cpu.stat nr_periods)",
            cpu_periods.clone(),
        );
        let cpu_throttled_periods = Counter::default();
        registry.register(
            "zeronas_cgroup_cpu_throttled_periods",
            "Periods in which the cgroup ran out of CPU quota (cpu.stat nr_throttled)",
            cpu_throttled_periods.clone(),
        );
        let cpu_throttled = Counter::<f64, AtomicU64>::default();
        registry.register(
            "zeronas_cgroup_cpu_throttled_seconds",
            "Time the cgroup's tasks were throttled by the CPU quota (cpu.stat throttled_usec)",
            cpu_throttled.clone(),
        );
        let worker_threads = Gauge::default();
        registry.register(
            "zeronas_worker_threads",
            "Worker threads of the async runtime",
            worker_threads.clone(),
        );
        let worker_pinned = Family::<CpuLabels, Gauge>::default();
        registry.register(
            "zeronas_worker_pinned",
            "Workers pinned to each CPU",
            worker_pinned.clone(),
        );
        let buffer_budget = Gauge::default();
        registry.register(
            "zeronas_memory_budget_bytes",
            "Bytes I/O buffers may hold (from the memory limit)",
            buffer_budget.clone(),
        );
        let buffer_in_use = Gauge::default();
        registry.register(
            "zeronas_memory_buffers_bytes",
            "Bytes I/O buffers hold now",
            buffer_in_use.clone(),
        );
        let transfer_by_path = PROTOCOLS.map(|protocol| {
            TRANSFER_PATHS.map(|path| {
                transfer_bytes
                    .get_or_create(&TransferLabels { protocol, path })
                    .clone()
            })
        });
        let fallback_by_reason = PROTOCOLS.map(|protocol| {
            FallbackReason::ALL.map(|r| {
                fallbacks
                    .get_or_create(&FallbackLabels {
                        protocol,
                        reason: r.label(),
                    })
                    .clone()
            })
        });
        // Closed label sets start at zero, so dashboards and alerts see them before the
        // first event.
        for protocol in PROTOCOLS {
            let _ = page_cache_misses.get_or_create(&ProtocolLabels { protocol });
            let _ = fallback_duration.get_or_create(&ProtocolLabels { protocol });
        }
        let size_by_route =
            ROUTES.map(|route| http_size.get_or_create(&RouteLabels { route }).clone());
        let latency_cells = (0..ROUTES.len() * METHODS.len() * STATUS_CLASSES.len())
            .map(|_| std::sync::OnceLock::new())
            .collect();
        Self {
            transfer_by_path,
            fallback_by_reason,
            latency_cells,
            size_by_route,
            http_duration,
            http_first_byte,
            http_in_flight,
            page_cache_misses,
            major_faults,
            memory_current,
            memory_working_set,
            refreshing: std::sync::Mutex::new(()),
            cpu_usage,
            cpu_periods,
            cpu_throttled_periods,
            cpu_throttled,
            cgroup_dir: std::sync::OnceLock::new(),
            registry,
            cgroup_info,
            cpus_allowed,
            cpu_quota_cores,
            memory_max,
            memory_high,
            worker_threads,
            worker_pinned,
            buffer_budget,
            buffer_in_use,
            http_requests,
            nfs_requests,
            nfs_duration,
            nfs_duplicates,
            nfs_in_flight,
            sftp_requests,
            sftp_duration,
            fallback_duration,
            transport_info,
            share_capacity,
            share_used,
            share_files,
            connections_refused,
            files_read_ok: Default::default(),
            requests_total: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
        }
    }

    /// Counts a connection refused at the cap of `protocol`.
    pub fn refuse_connection(&self, protocol: &'static str) {
        self.connections_refused
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// Connections refused at the cap of `protocol` so far.
    pub fn connections_refused(&self, protocol: &'static str) -> u64 {
        self.connections_refused
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    /// Counts one NFS request.
    pub fn observe_nfs(&self, proc: &'static str, status: &'static str, seconds: f64) {
        self.nfs_requests
            .get_or_create(&NfsRequestLabels { proc, status })
            .inc();
        self.nfs_duration
            .get_or_create(&NfsRequestLabels { proc, status })
            .observe(seconds);
    }

    /// Counts one SFTP request.
    pub fn observe_sftp(&self, op: &'static str, status: &'static str, seconds: f64) {
        let labels = SftpRequestLabels { op, status };
        self.sftp_requests.get_or_create(&labels).inc();
        self.sftp_duration.get_or_create(&labels).observe(seconds);
    }

    /// SFTP requests counted for `op` and `status` since start.
    pub fn sftp_requests(&self, op: &'static str, status: &'static str) -> u64 {
        self.sftp_requests
            .get_or_create(&SftpRequestLabels { op, status })
            .get()
    }

    /// Counts a retransmitted call the duplicate request cache answered or dropped.
    pub fn nfs_duplicate(&self, result: &'static str) {
        self.nfs_duplicates
            .get_or_create(&DuplicateLabels { result })
            .inc();
    }

    /// Moves the NFS in-flight gauge by `delta`.
    pub fn nfs_in_flight(&self, delta: i64) {
        self.nfs_in_flight.inc_by(delta);
    }

    /// Records one HTTP exchange: its counter, both latency histograms and its size.
    pub fn observe_request(&self, exchange: &HttpExchange) {
        let HttpExchange {
            route,
            method,
            code,
            ..
        } = *exchange;
        let labels = HttpRequestLabels {
            route,
            method,
            code,
        };
        let hot = match (route, method, code) {
            ("files", "GET", 200) => Some(&self.files_read_ok[0]),
            ("files", "HEAD", 200) => Some(&self.files_read_ok[1]),
            _ => None,
        };
        match hot {
            Some(cell) => {
                cell.get_or_init(|| self.http_requests.get_or_create(&labels).clone())
                    .inc();
            }
            None => {
                self.http_requests.get_or_create(&labels).inc();
            }
        }
        let route_index = ROUTES
            .iter()
            .position(|r| *r == route)
            .unwrap_or(ROUTES.len() - 1);
        let method_index = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len() - 1);
        let status_class = status_class(code);
        let class_index = STATUS_CLASSES
            .iter()
            .position(|c| *c == status_class)
            .unwrap_or(0);
        let index =
            (route_index * METHODS.len() + method_index) * STATUS_CLASSES.len() + class_index;
        let cell = self.latency_cells[index].get_or_init(|| {
            let labels = HttpLatencyLabels {
                route: ROUTES[route_index],
                method: METHODS[method_index],
                status_class,
            };
            LatencyCell {
                duration: self.http_duration.get_or_create(&labels).clone(),
                first_byte: self.http_first_byte.get_or_create(&labels).clone(),
            }
        });
        cell.duration.observe(exchange.duration);
        cell.first_byte.observe(exchange.time_to_first_byte);
        self.size_by_route[route_index].observe(exchange.body_bytes as f64);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the HTTP in-flight gauge by `delta`.
    pub fn http_in_flight(&self, delta: i64) {
        self.http_in_flight.inc_by(delta);
    }

    /// Counts a send-path read that found its pages out of the page cache.
    pub fn page_cache_miss(&self, protocol: &'static str) {
        self.page_cache_misses
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// The counter of file bytes moved by `protocol` along `path`.
    pub fn transfer_counter(&self, protocol: &'static str, path: &'static str) -> Counter {
        let index = TRANSFER_PATHS
            .iter()
            .position(|p| *p == path)
            .unwrap_or(TRANSFER_PATHS.len() - 1);
        self.transfer_by_path[protocol_index(protocol)][index].clone()
    }

    /// Counts the legs of a transfer by path, and its fallbacks by reason.
    pub fn record_transfer(&self, protocol: &'static str, transfer: &Transfer) {
        let p = protocol_index(protocol);
        for leg in transfer.legs() {
            if leg.bytes > 0 {
                self.transfer_by_path[p][leg.path.index()].inc_by(leg.bytes);
            }
            if let Some(reason) = leg.fallback {
                self.fallback_by_reason[p][reason.index()].inc();
            }
        }
        if transfer.page_cache_misses > 0 {
            self.page_cache_misses
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(u64::from(transfer.page_cache_misses));
        }
        if !transfer.fallback_time.is_zero() {
            self.fallback_duration
                .get_or_create(&ProtocolLabels { protocol })
                .observe(transfer.fallback_time.as_secs_f64());
        }
    }

    /// Counts one fallback.
    pub fn record_fallback(&self, protocol: &'static str, reason: FallbackReason) {
        self.fallback_by_reason[protocol_index(protocol)][reason.index()].inc();
    }

    /// Fallbacks counted for `protocol` and `reason` since start.
    pub fn fallbacks(&self, protocol: &'static str, reason: FallbackReason) -> u64 {
        self.fallback_by_reason[protocol_index(protocol)][reason.index()].get()
    }

    /// Records the transport in use.
    pub fn record_transport(&self, labels: TransportLabels) {
        self.transport_info.get_or_create(&labels).set(1);
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
        self.transfer_counter(protocol, path).get()
    }

    /// Records what start-up found about the cgroup and decided about workers.
    pub fn record_runtime(&self, report: &RuntimeReport) {
        self.cgroup_info
            .get_or_create(&CgroupInfoLabels {
                hierarchy: report.limits.hierarchy.as_str(),
            })
            .set(1);
        self.cpus_allowed.set(report.plan.allowed.len() as i64);
        self.cpu_quota_cores
            .set(report.limits.cpu_quota_cores.unwrap_or(0.0));
        self.memory_max
            .set(clamp_i64(report.limits.memory_max.unwrap_or(0)));
        self.memory_high
            .set(clamp_i64(report.limits.memory_high.unwrap_or(0)));
        self.worker_threads.set(report.plan.workers as i64);
        if let Some(dir) = &report.limits.path {
            let _ = self.cgroup_dir.set(dir.clone());
        }

        self.buffer_budget.set(clamp_i64(report.buffer_budget));
        self.record_transport(TransportLabels {
            transport: report.transport.transport_label(),
            rdma: report.transport.rdma,
            reason: report.transport.reason,
        });
    }

    /// Records which CPU each worker was pinned to.
    pub fn record_pinned(&self, pinned: &[crate::runtime::Pinned]) {
        for p in pinned.iter().filter(|p| p.error.is_none()) {
            self.worker_pinned
                .get_or_create(&CpuLabels { cpu: p.cpu as u32 })
                .inc();
        }
    }

    /// Renders the Prometheus text format, refreshing the share gauges first.
    pub fn render(&self, usage: &Usage, budget: &BufferBudget) -> String {
        self.buffer_in_use.set(clamp_i64(budget.in_use_bytes()));
        self.share_capacity
            .set(clamp_i64(usage.capacity().unwrap_or(0)));
        self.share_used.set(clamp_i64(usage.used()));
        self.share_files.set(clamp_i64(usage.files()));
        self.refresh_process_figures();
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn latency_histogram() -> AtomicHistogram {
    AtomicHistogram::new(LATENCY_BUCKETS)
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
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(206), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(431), "4xx");
        assert_eq!(status_class(507), "5xx");
    }

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new();
        let exchange = HttpExchange {
            route: "files",
            method: "GET",
            code: 200,
            time_to_first_byte: 0.0002,
            duration: 0.003,
            body_bytes: 5000,
        };
        m.observe_request(&exchange);
        m.observe_request(&HttpExchange {
            method: method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            code: 405,
            ..exchange
        });
        m.transfer_counter("http", "copy").inc_by(10);
        let text = m.render(&Usage::new(Some(5)), &BufferBudget::new(1 << 20));
        assert!(text.contains(
            "zeronas_http_requests_total{route=\"files\",method=\"GET\",code=\"200\"} 1"
        ));
        assert!(text.contains("method=\"OTHER\""));
        assert!(text.contains(
            "zeronas_http_request_duration_seconds_bucket{le=\"0.005\",route=\"files\",method=\"GET\",status_class=\"2xx\"} 1"
        ), "{text}");
        assert!(text.contains(
            "zeronas_http_request_duration_seconds_bucket{le=\"0.0025\",route=\"files\",method=\"GET\",status_class=\"2xx\"} 0"
        ));
        assert!(text.contains(
            "zeronas_http_time_to_first_byte_seconds_bucket{le=\"0.00025\",route=\"files\",method=\"GET\",status_class=\"2xx\"} 1"
        ));
        assert!(text.contains("method=\"OTHER\",status_class=\"4xx\""));
        assert!(
            text.contains(
                "zeronas_http_response_size_bytes_bucket{le=\"16384.0\",route=\"files\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("zeronas_transfer_bytes_total{protocol=\"http\",path=\"copy\"} 10"));
        assert!(text.contains("zeronas_share_capacity_bytes 5"));
        assert_eq!(m.requests_total(), 2);
        assert_eq!(m.transferred("http", "copy"), 10);
    }
}

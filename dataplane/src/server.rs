//! Listeners, connections and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::budget::BufferBudget;
use crate::config::{Config, ZeroCopy};
use crate::http::fastpath::{self, FrontEnd, SMALL_BODY_MAX};
use crate::http::service::{self, App, Listener};
use crate::io::splice::PipePool;
use crate::metrics::Metrics;
use crate::runtime::RuntimeReport;
use crate::share::Share;
use crate::usage::Usage;

/// Largest request head (request line + headers) accepted; larger ones get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 128;
/// A client has this long to send a complete request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The share root cannot be opened.
    #[error("cannot open the share: {0}")]
    Share(#[source] std::io::Error),
    /// An address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The start-up scan failed.
    #[error("cannot scan the share: {0}")]
    Scan(String),
}

/// A bound, not yet running dataplane.
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    api: TcpListener,
    admin: Option<TcpListener>,
    drain_timeout: Duration,
    rescan_interval: Duration,
    zero_copy: ZeroCopy,
}

impl Server {
    /// Opens and scans the share, then binds the listeners. `runtime` describes the
    /// cgroup limits and workers the caller found and started.
    pub async fn bind(config: &Config, runtime: RuntimeReport) -> Result<Self, StartError> {
        let share = Share::open(&config.share, &config.root, config.read_only)
            .map_err(StartError::Share)?;
        let share = Arc::new(share);
        let usage = Arc::new(Usage::new(config.capacity));

        let started = Instant::now();
        let scanning = Arc::clone(&share);
        let totals = tokio::task::spawn_blocking(move || scanning.scan(true))
            .await
            .map_err(|e| StartError::Scan(e.to_string()))?
            .map_err(|e| StartError::Scan(e.to_string()))?;
        usage.set_totals(totals.files, totals.bytes);
        tracing::info!(
            root = %config.root.display(),
            share = %config.share,
            files = totals.files,
            bytes = totals.bytes,
            stale_temps_removed = totals.stale_temps_removed,
            capacity = ?config.capacity,
            read_only = config.read_only,
            scan_ms = started.elapsed().as_millis() as u64,
            "share scanned"
        );
        if let Some(capacity) = config.capacity {
            if totals.bytes > capacity {
                tracing::warn!(
                    capacity,
                    used = totals.bytes,
                    "the share already holds more than its capacity; uploads will be refused"
                );
            }
        }

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let api = bind(config.http).await?;
        let admin = match config.metrics {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let metrics = Metrics::new();
        metrics.record_runtime(&runtime);
        let app = App {
            share,
            usage,
            metrics,
            ready: AtomicBool::new(true),
            budget: BufferBudget::new(runtime.buffer_budget),
            pipes: PipePool::new(64),
            runtime,
        };
        Ok(Self {
            app: Arc::new(app),
            api,
            admin,
            drain_timeout: config.drain_timeout,
            rescan_interval: config.rescan_interval,
            zero_copy: config.zero_copy,
        })
    }

    /// The bound address of the file API.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.api.local_addr()
    }

    /// The bound address of the metrics listener, if separate.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Shared state (for tests and embedding).
    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
    /// finish for up to the drain timeout, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            app,
            api,
            admin,
            drain_timeout,
            rescan_interval,
            zero_copy,
        } = self;
        let rescans = tokio::spawn(rescan_periodically(Arc::clone(&app), rescan_interval));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let api_listener = Listener::Api {
            metrics: admin.is_none(),
        };
        let (stop_front_end, front_end_stopping) = tokio::sync::watch::channel(false);
        let front_end = match zero_copy {
            ZeroCopy::Copy => None,
            mode => Some(FrontEnd::new(
                Arc::clone(&app),
                api_listener,
                Arc::clone(&builder),
                front_end_stopping,
                if mode == ZeroCopy::Sendfile {
                    0
                } else {
                    SMALL_BODY_MAX
                },
            )),
        };
        tokio::pin!(shutdown);
        loop {
            let (accepted, listener) = tokio::select! {
                a = api.accept() => (a, api_listener),
                a = accept_optional(admin.as_ref()) => (a, Listener::Admin),
                () = &mut shutdown => break,
            };
            match (accepted, &front_end) {
                (Ok((stream, peer)), Some(fe)) if listener != Listener::Admin => {
                    let (fe, watcher) = (Arc::clone(fe), graceful.watcher());
                    tokio::spawn(fastpath::serve_connection(fe, stream, peer, watcher));
                }
                (Ok((stream, peer)), _) => {
                    serve_connection(&builder, &graceful, &app, listener, stream, peer)
                }
                (Err(e), _) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        app.ready.store(false, Ordering::Relaxed);
        let _ = stop_front_end.send(true);
        rescans.abort();
        drop(api);
        drop(admin);
        tracing::info!(
            timeout_ms = drain_timeout.as_millis() as u64,
            "shutting down: draining in-flight requests"
        );
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("drained; exiting"),
            () = tokio::time::sleep(drain_timeout) => tracing::warn!("drain timeout reached; closing remaining connections"),
        }
    }
}

/// Re-counts the share now and then, so files written around the server (another
/// process, a restore) are reflected in usage and the quota.
async fn rescan_periodically(app: Arc<App>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let share = Arc::clone(&app.share);
        match tokio::task::spawn_blocking(move || share.scan(false)).await {
            Ok(Ok(totals)) => {
                if totals.bytes != app.usage.used() || totals.files != app.usage.files() {
                    tracing::info!(
                        files = totals.files,
                        bytes = totals.bytes,
                        "rescan corrected share usage"
                    );
                }
                app.usage.set_totals(totals.files, totals.bytes);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "rescan failed"),
            Err(e) => tracing::warn!(error = %e, "rescan task failed"),
        }
    }
}

async fn accept_optional(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn serve_connection(
    builder: &Arc<auto::Builder<TokioExecutor>>,
    graceful: &GracefulShutdown,
    app: &Arc<App>,
    listener: Listener,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let app = Arc::clone(app);
    let service = service_fn(move |req| service::handle(Arc::clone(&app), listener, req, None));
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
        }
    });
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

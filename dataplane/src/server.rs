//! Listeners, connections and graceful shutdown.
//!
//! The dataplane runs thread-per-core, like nginx: each worker thread owns a
//! single-threaded tokio runtime and its own `SO_REUSEPORT` listener on the HTTP address,
//! so the kernel spreads connections across workers and a connection never migrates
//! between threads (no cross-thread wake-ups on the hot path, and pinning a worker pins
//! its connections). The main thread runs the control runtime: signals, the periodic
//! rescan and the metrics listener. Tests run every listener on one runtime with
//! [`Server::run`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::budget::BufferBudget;
use crate::config::{Config, IoEngine, ZeroCopy};
use crate::http::app::{App, HttpLimits, Listener, MAX_HEAD_BYTES, MAX_HEADERS};
use crate::http::auth::{TokenFileError, Tokens};
use crate::http::frontend::{self, FrontEnd, SMALL_BODY_MAX};
use crate::http::service;
use crate::io::FallbackReason;
use crate::io::idle::IdleTimeout;
use crate::io::splice::PipePool;
use crate::io::uring::Ring;
use crate::limits::ConnectionLimit;
use crate::metrics::Metrics;
use crate::runtime::{self, PinRecord, RuntimeReport, WORKER_PREFIX, WorkerPlan};
use crate::share::Share;
use crate::usage::Usage;

/// Connections the metrics/probe listener serves at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Listen backlog of each listener.
const BACKLOG: i32 = 1024;

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
    /// A token file is missing or empty.
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
}

/// What the connection loops need to know besides the app.
#[derive(Debug, Clone, Copy)]
struct Settings {
    drain_timeout: Duration,
    rescan_interval: Duration,
    zero_copy: ZeroCopy,
    io_engine: IoEngine,
}

/// A bound, not yet running dataplane.
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    api: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    settings: Settings,
}

/// Binds `count` listeners on `addr` with `SO_REUSEPORT` (the first picks the port when
/// `addr` has port 0; the others join it).
fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    use socket2::{Domain, Socket, Type};
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut target = addr;
    for _ in 0..count.max(1) {
        let err = |source| StartError::Bind {
            addr: target,
            source,
        };
        let socket = Socket::new(Domain::for_address(target), Type::STREAM, None).map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        socket.set_cloexec(true).map_err(err)?;
        socket.bind(&target.into()).map_err(err)?;
        socket.listen(BACKLOG).map_err(err)?;
        let listener: std::net::TcpListener = socket.into();
        target = listener.local_addr().map_err(err)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

impl Server {
    /// Opens and scans the share, then binds one HTTP listener per worker of `runtime`'s
    /// plan (and the metrics listener).
    pub async fn bind(config: &Config, runtime: RuntimeReport) -> Result<Self, StartError> {
        let tokens = Tokens::load(
            config.http_token_file.clone(),
            config.http_read_token_file.clone(),
            config.http_anonymous_read,
        )?;
        match config.http.0 {
            Some(addr) if !tokens.enabled() && !addr.ip().is_loopback() => tracing::warn!(
                %addr,
                "the HTTP file API has no token file: every client that reaches it may read and write"
            ),
            _ => {}
        }
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
        if let Some(capacity) = config.capacity
            && totals.bytes > capacity
        {
            tracing::warn!(
                capacity,
                used = totals.bytes,
                "the share already holds more than its capacity; uploads will be refused"
            );
        }

        let api = match config.http.0 {
            Some(addr) => bind_reuseport(addr, runtime.plan.workers)?,
            None => Vec::new(),
        };
        let admin = match config.metrics {
            Some(addr) => Some(bind_reuseport(addr, 1)?.remove(0)),
            None => None,
        };
        let metrics = Metrics::new();
        metrics.record_runtime(&runtime);
        let app = App {
            share,
            usage,
            metrics: Arc::new(metrics),
            ready: AtomicBool::new(true),
            budget: BufferBudget::new(runtime.buffer_budget),
            pipes: PipePool::new(64),
            pinned: OnceLock::new(),
            mmap_min: config.mmap_min,
            runtime,
            tokens,
            limits: HttpLimits {
                head_timeout: config.http_head_timeout,
                idle_timeout: config.http_idle_timeout,
                connections: ConnectionLimit::new(config.http_max_connections),
            },
        };
        let settings = Settings {
            drain_timeout: config.drain_timeout,
            rescan_interval: config.rescan_interval,
            zero_copy: config.zero_copy,
            io_engine: config.io_engine,
        };
        Ok(Self {
            app: Arc::new(app),
            api,
            admin,
            settings,
        })
    }

    /// The bound address of the file API.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        match self.api.first() {
            Some(l) => l.local_addr(),
            None => Err(std::io::Error::other("no HTTP listener")),
        }
    }

    /// The bound address of the metrics listener, if separate.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Shared state (for tests and embedding).
    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    fn api_kind(&self) -> Listener {
        Listener::Api {
            metrics: self.admin.is_none(),
        }
    }

    /// Serves every listener on the current runtime until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let api_kind = self.api_kind();
        let Server {
            app,
            api,
            admin,
            settings,
        } = self;
        let (stop, stopping) = watch::channel(false);
        let rescans = tokio::spawn(rescan_periodically(
            Arc::clone(&app),
            settings.rescan_interval,
        ));
        let mut loops = Vec::new();
        for listener in api {
            loops.push(tokio::spawn(accept_loop(
                Arc::clone(&app),
                listener,
                api_kind,
                settings,
                stopping.clone(),
            )));
        }
        if let Some(listener) = admin {
            loops.push(tokio::spawn(accept_loop(
                Arc::clone(&app),
                listener,
                Listener::Admin,
                settings,
                stopping.clone(),
            )));
        }
        shutdown.await;
        begin_drain(&app, &stop, settings);
        rescans.abort();
        for l in loops {
            let _ = l.await;
        }
    }

    /// Production mode: one thread per worker of `plan`, each with its own single-threaded
    /// runtime and listener, pinned when the plan says so; the calling thread drives
    /// `control` (signals, rescans, metrics listener) until `shutdown`, then every worker
    /// drains. Fails when a worker cannot be pinned.
    pub fn run_on_workers(
        self,
        control: &tokio::runtime::Runtime,
        plan: &WorkerPlan,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let api_kind = self.api_kind();
        let Server {
            app,
            api,
            admin,
            settings,
        } = self;
        let (stop, stopping) = watch::channel(false);
        let record = Arc::new(PinRecord::default());
        // Workers pin themselves, then wait until the pins are checked and recorded, so no
        // request is served by an unpinned worker or before the metrics say where it runs.
        // One worker per API listener (none with `--http off`).
        let workers = api.len();
        let pinned_barrier = Arc::new(std::sync::Barrier::new(workers + 1));
        let go_barrier = Arc::clone(&pinned_barrier);
        let mut threads = Vec::new();
        for (index, listener) in api.into_iter().enumerate() {
            let (app, stopping, plan, record) = (
                Arc::clone(&app),
                stopping.clone(),
                plan.clone(),
                Arc::clone(&record),
            );
            let barrier = Arc::clone(&pinned_barrier);
            let thread = std::thread::Builder::new().name(format!("{WORKER_PREFIX}{index}")).spawn(move || {
                                runtime::pin_worker(&plan, index, &record);
                barrier.wait();
                barrier.wait();
                match runtime::worker_runtime(&plan) {
                    Ok(rt) => rt.block_on(accept_loop(app, listener, api_kind, settings, stopping)),
                    Err(e) => tracing::error!(worker = index, error = %e, "cannot start a worker runtime"),
                }
            });
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The started workers wait at the barrier forever; exit the process.
                    return Err(format!("cannot start worker thread {index}: {e}"));
                }
            }
        }
        let mut result = Ok(());
        go_barrier.wait();
        if plan.pin {
            let pinned = record.snapshot();
            if let Some(failed) = pinned.iter().find(|p| p.error.is_some()) {
                result = Err(format!(
                    "cannot pin worker {} to CPU {}: {}",
                    failed.worker,
                    failed.cpu,
                    failed.error.as_deref().unwrap_or_default()
                ));
            } else if pinned.len() < workers {
                result = Err(format!(
                    "only {} of {} workers reported their pinning",
                    pinned.len(),
                    workers
                ));
            }
            runtime::log_pinned(&pinned);
            app.metrics.record_pinned(&pinned);
            let _ = app.pinned.set(pinned);
        }
        if result.is_err() {
            let _ = stop.send(true);
        }
        go_barrier.wait();
        control.block_on(async {
            let rescans = tokio::spawn(rescan_periodically(
                Arc::clone(&app),
                settings.rescan_interval,
            ));
            let admin_loop = admin.map(|l| {
                tokio::spawn(accept_loop(
                    Arc::clone(&app),
                    l,
                    Listener::Admin,
                    settings,
                    stopping.clone(),
                ))
            });
            if result.is_ok() {
                shutdown.await;
            }
            begin_drain(&app, &stop, settings);
            rescans.abort();
            if let Some(admin_loop) = admin_loop {
                let _ = admin_loop.await;
            }
        });
        for t in threads {
            let _ = t.join();
        }
        result
    }
}

fn begin_drain(app: &App, stop: &watch::Sender<bool>, settings: Settings) {
    app.ready.store(false, Ordering::Relaxed);
    tracing::info!(
        timeout_ms = settings.drain_timeout.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    let _ = stop.send(true);
}

fn hyper_builder(head_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    // HTTP/2: pings find dead peers; header lists are bounded like HTTP/1 heads.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(head_timeout))
        .keep_alive_timeout(head_timeout)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    builder
}

/// Accepts on one listener until `stopping` turns true, then lets its connections finish
/// for up to the drain timeout.
async fn accept_loop(
    app: Arc<App>,
    listener: std::net::TcpListener,
    kind: Listener,
    settings: Settings,
    mut stopping: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register a listener");
            return;
        }
    };
    let builder = Arc::new(hyper_builder(app.limits.head_timeout));
    let (idle, head_timeout) = (app.limits.idle_timeout, app.limits.head_timeout);
    let front_end = match (kind, settings.zero_copy) {
        (Listener::Admin, _) | (_, ZeroCopy::Copy) => None,
        (_, mode) => {
            let small = if mode == ZeroCopy::Sendfile {
                0
            } else {
                SMALL_BODY_MAX
            };
            Some(FrontEnd::new(
                Arc::clone(&app),
                kind,
                Arc::clone(&builder),
                stopping.clone(),
                small,
                start_ring(&app, settings.io_engine),
            ))
        }
    };
    // The API listeners share one cap; the metrics listener has a small one of its own, so
    // probes still answer while the API is flooded, and a flood of the metrics port cannot
    // take every descriptor.
    let (limit, refused_label) = match kind {
        Listener::Admin => (ConnectionLimit::new(ADMIN_MAX_CONNECTIONS), "metrics"),
        Listener::Api { .. } => (Arc::clone(&app.limits.connections), "http"),
    };
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        let (stream, peer, slot) = match accepted {
            Ok((stream, peer)) => match limit.try_acquire() {
                Some(slot) => (stream, peer, slot),
                None => {
                    app.metrics.refuse_connection(refused_label);
                    tracing::warn!(%peer, max_connections = limit.max(), listener = refused_label, "connection cap reached: connection closed");
                    drop(stream);
                    continue;
                }
            },
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match &front_end {
            Some(fe) => {
                tokio::spawn(frontend::serve_connection(
                    Arc::clone(fe),
                    stream,
                    peer,
                    graceful.watcher(),
                    slot,
                ));
            }
            None => {
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let service = service_fn(move |req| service::handle(Arc::clone(&app), kind, req));
                let (builder, watcher) = (Arc::clone(&builder), graceful.watcher());
                tokio::spawn(async move {
                    let _slot = slot;
                    // hyper's head timer starts with the first byte: a connection that
                    // never sends one is closed at the same deadline.
                    // (`readable()` may report the fresh socket ready at once: peek for a
                    // real byte.)
                    let mut first = [0u8; 1];
                    if !matches!(
                        tokio::time::timeout(head_timeout, stream.peek(&mut first)).await,
                        Ok(Ok(1))
                    ) {
                        return;
                    }
                    let conn = builder
                        .serve_connection(TokioIo::new(IdleTimeout::new(stream, idle)), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("listener drained"),
        () = tokio::time::sleep(settings.drain_timeout) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
}

/// The worker's io_uring ring when `--io-engine io_uring` asks for one; `None` (epoll)
/// otherwise or when it cannot be set up, which is logged and counted.
fn start_ring(app: &App, engine: IoEngine) -> Option<Arc<Ring>> {
    if engine != IoEngine::IoUring {
        return None;
    }
    match Ring::start() {
        Ok(ring) => {
            tracing::debug!("worker serves HTTP through io_uring");
            Some(ring)
        }
        Err(e) => {
            app.metrics
                .record_fallback("http", FallbackReason::IoUringUnavailable);
            tracing::warn!(error = %e, "io_uring unavailable: this worker uses epoll");
            None
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

//! The state every HTTP request handler shares, and the limits of the HTTP listeners.
//!
//! Both executors of a plan (the zero-copy front end and the hyper service) read it; it
//! holds no behaviour of its own.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::auth::Tokens;
use crate::budget::BufferBudget;
use crate::io::splice::PipePool;
use crate::limits::ConnectionLimit;
use crate::metrics::Metrics;
use crate::runtime::RuntimeReport;
use crate::share::Share;
use crate::usage::Usage;

/// Largest request head (request line + headers) accepted; larger ones get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 128;

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    /// The exported folder.
    pub share: Arc<Share>,
    /// Space accounting and quota.
    pub usage: Arc<Usage>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// False once shutdown starts: `/readyz` then answers 503.
    pub ready: AtomicBool,
    /// The memory budget of I/O buffers.
    pub budget: BufferBudget,
    /// cgroup limits and the worker plan found at start-up.
    pub runtime: RuntimeReport,
    /// Pipes for spliced uploads.
    pub pipes: Arc<PipePool>,
    /// Smallest body hyper sends from a memory mapping (read-only shares only).
    pub mmap_min: u64,
    /// Each worker's CPU, once the workers have pinned themselves.
    pub pinned: std::sync::OnceLock<Vec<crate::runtime::Pinned>>,
    /// Bearer tokens of the file API.
    pub tokens: Tokens,
    /// Timeouts and the connection cap of the HTTP listeners.
    pub limits: HttpLimits,
}

/// Timeouts and the connection cap of the HTTP listeners.
#[derive(Debug)]
pub struct HttpLimits {
    /// Time for a whole request head, from the end of the previous response.
    pub head_timeout: Duration,
    /// Longest wait for a byte of an upload or for room to send a response.
    pub idle_timeout: Duration,
    /// HTTP connections served at once, all workers together.
    pub connections: Arc<ConnectionLimit>,
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The file API; `metrics` says whether `/metrics` is served here too.
    Api {
        /// Serve `/metrics` on this listener.
        metrics: bool,
    },
    /// The separate metrics/probe listener.
    Admin,
}

//! zeronas dataplane: serves one folder as a share over NFSv3 ([`nfs`]), an HTTP file API
//! and SFTP ([`sftp`]).
//!
//! Layers, from the outside in: [`server`] accepts connections and drains them on
//! shutdown; [`http::frontend`] (zero-copy HTTP/1.1) and [`http::service`] (hyper) execute
//! the plans of [`http::plan`], which holds every HTTP rule as pure functions; [`http::api`]
//! performs the file operations on a [`share::Share`]. [`share`] is the layer every protocol
//! stands on (paths, temp names, validators); [`nfs`] and [`sftp`] import no HTTP module, which
//! `tests/module_graph.rs` checks along with the absence of import cycles.
//! [`cgroup`] and [`runtime`] size and pin the worker threads from the cgroup's limits;
//! [`budget`] keeps I/O buffers inside the memory limit. [`identity`] decides whose
//! identity file operations run under and sets up a new share's root.

pub mod budget;
pub mod cgroup;
pub mod config;
pub mod http;
pub mod identity;
pub mod io;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod nfs;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod sftp;
pub mod share;
pub mod transport;
pub mod usage;

//! zeronas end-to-end harness.
//!
//! The e2e suite (`tests/cluster.rs`, `make e2e`) runs a real kube-apiserver, etcd and
//! kube-controller-manager on loopback ([`cluster`]), plus two test-only stand-ins for what a
//! real cluster's nodes provide:
//!
//! - [`node`]: a node agent in place of the kubelet. It registers a Node, binds the pods
//!   whose images it knows (the project's own, mapped to the locally built binaries), runs
//!   them as local processes, each on its own pod IP (10.244.0.x, routed as local inside the
//!   network namespace `scripts/netns.sh` creates), maps their volumes to folders, runs
//!   their probes and reports Pod status.
//! - [`provisioner`]: a local-path provisioner and resizer for one StorageClass, so backing
//!   claims bind the way they would on a real cluster.
//!
//! The suite runs inside its own network namespace: no packet leaves it. [`security`] applies
//! each pod's security context to the processes the node agent starts (and to the dataplane
//! of the kernel-client test, `tests/kernel_client.rs`).

pub mod cluster;
pub mod http;
pub mod node;
pub mod pod_ips;
pub mod provisioner;
pub mod security;

use std::path::PathBuf;

/// Errors of the harness, with the context a failing test needs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or folder the harness needs is missing.
    #[error("missing {0}")]
    Missing(PathBuf),
    /// Something the harness cannot do (e.g. a pod spec feature it does not implement).
    #[error("{0}")]
    Unsupported(String),
}

/// Result with the harness [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to Kubernetes and I/O errors.
pub trait Context<T> {
    /// Wraps the error with `what` was being done.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, kube::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

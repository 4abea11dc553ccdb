//! The SFTP export: a third way into the share, beside NFS and HTTP, with the same
//! confinement, identities, quota and read-only rules.
//!
//! [`ssh`] is the SSH server (russh: key exchange, encryption, public-key logins, the
//! `sftp` subsystem and nothing else); [`keys`] reads the authorized keys and the identity
//! each key acts as; [`wire`] is SFTP version 3 and OpenSSH's extensions as pure codecs;
//! [`fs`] runs each request on the share. Requests of one channel are answered in order,
//! as OpenSSH's `sftp-server` does; channels and connections run in parallel on the SFTP
//! runtime's threads.

pub mod fs;
pub mod keys;
pub mod ssh;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::identity::IdentityMode;
use crate::metrics::Metrics;
use crate::usage::Usage;

/// How the SFTP export is set up (`--sftp*` flags).
#[derive(Debug, Clone)]
pub struct SftpOptions {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Host private key (OpenSSH format).
    pub host_key: PathBuf,
    /// Authorized keys (OpenSSH format, with zeronas's identity options).
    pub authorized_keys: PathBuf,
    /// Refuse every write.
    pub read_only: bool,
    /// Whose identity requests run under.
    pub identity: IdentityMode,
    /// uid and gid of a key without `uid=`/`gid=`.
    pub anon_id: u32,
    /// Most connections at once.
    pub max_connections: usize,
    /// Most open handles per SFTP session.
    pub max_handles: usize,
    /// Threads of the SFTP runtime.
    pub threads: usize,
}

/// A started SFTP export.
#[derive(Debug)]
pub struct SftpServer {
    addr: SocketAddr,
}

impl SftpServer {
    /// Loads the keys, opens the share root and binds; serves on a runtime of its own.
    pub fn start(
        options: SftpOptions,
        root: &Path,
        metrics: Arc<Metrics>,
        usage: Arc<Usage>,
    ) -> Result<Self, ssh::SftpStartError> {
        let host_key = ssh::load_host_key(&options.host_key)?;
        let fingerprint = host_key
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string();
        let keys = keys::AuthorizedKeys::load(options.authorized_keys.clone(), options.anon_id)?;
        let share = Arc::new(fs::ShareAccess::open(
            root,
            options.read_only,
            options.identity,
            options.max_handles,
            usage,
            metrics,
        )?);
        let listener = std::net::TcpListener::bind(options.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        tracing::info!(sftp = %addr, host_key = %fingerprint, keys = keys.len(), "SFTP export ready");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("zeronas-sftp")
            .enable_all()
            .build()?;
        let config = ssh::ssh_config(host_key);
        let max_connections = options.max_connections;
        std::thread::Builder::new()
            .name("zeronas-sftp-accept".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            ssh::serve(listener, config, keys, share, max_connections).await
                        }
                        Err(e) => tracing::error!(error = %e, "SFTP listener cannot be used"),
                    }
                })
            })?;
        Ok(Self { addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

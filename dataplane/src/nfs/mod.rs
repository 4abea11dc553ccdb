//! The NFSv3 export: ONC RPC over TCP with MOUNT v3, NFS v3 and PORTMAP v2 on one port.
//!
//! - [`xdr`], [`record`], [`rpc`]: the wire (pure, bounded, fuzzed).
//! - [`handle`], [`vfs`]: file handles and the share as NFS sees it.
//! - [`export`]: client rules, squashing, per-thread identity.
//! - [`nfs3`], [`mount`]: the procedures.
//! - [`fdcache`]: open files reused across READ/WRITE/COMMIT.
//! - [`drc`]: the duplicate request cache (retransmitted non-idempotent calls replayed).
//! - [`pool`], [`conn`]: a reader per connection, requests run concurrently on a shared
//!   worker pool, replies sent as they finish; READ data by `sendfile`.
//!
//! NFS runs on plain threads, not on the HTTP workers' runtimes: each request is a short
//! sequence of blocking system calls made under the caller's identity, which is a
//! per-thread property.

pub mod conn;
pub mod dirlock;
pub mod drc;
pub mod export;
pub mod failed_reads;
pub mod fdcache;
pub mod handle;
pub mod mount;
pub mod nfs3;
pub mod pool;
pub mod record;
pub mod rpc;
pub mod vfs;
pub mod xdr;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dirlock::DirLocks;
use export::{ClientRule, Creds, decide};
use mount::{MOUNT_PROCEDURES, MOUNT_PROGRAM, NFS_PROGRAM, PORTMAP_PROCEDURES, PORTMAP_PROGRAM};
use nfs3::{Caller, Done, Fail, PROCEDURES, failure_words, status, status_label};
use rpc::{AcceptStat, AuthStat, CallError, Credential};

use crate::identity::IdentityMode;
use crate::limits::ConnectionLimit;
use crate::metrics::Metrics;
use crate::usage::Usage;

/// What the export needs from the command line.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Share name (`/<name>` is accepted by MNT besides `/`).
    pub share: String,
    /// Whether the whole share is read-only.
    pub read_only: bool,
    /// Client rules (none: everyone, read-write, root squashed).
    pub rules: Vec<ClientRule>,
    /// The rules as given, for EXPORT.
    pub rule_texts: Vec<String>,
    /// uid and gid of squashed callers.
    pub anon: (u32, u32),
    /// Whose identity requests run under.
    pub identity: IdentityMode,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Worker threads running requests (all connections together).
    pub threads: usize,
    /// Most requests of one connection in flight at once.
    pub max_requests_per_connection: usize,
}

/// Everything the NFS threads share.
pub struct Exporter {
    vfs: vfs::Vfs,
    metrics: Arc<Metrics>,
    usage: Arc<Usage>,
    read_only: bool,
    rules: Vec<ClientRule>,
    rule_texts: Vec<String>,
    share_name: String,
    anon: (u32, u32),
    identity: IdentityMode,
    server_creds: Creds,
    /// Changes on every start, so clients resend writes they had not committed, and after a
    /// failed write-back (as knfsd's `nfsd_reset_write_verifier`): an error reaches only
    /// the first `fsync` of a file, so a later COMMIT could otherwise say OK for lost data.
    verifier: std::sync::atomic::AtomicU64,
    fds: fdcache::FdCache,
    failed_reads: failed_reads::FailedReads,
    replies: drc::ReplyCache,
    dirs: DirLocks,
    mounts: Mutex<Vec<(String, String)>>,
    port: u16,
}

/// What a client may do (access, squashing); `None`: it matches no client rule.
pub type Grant = Option<(export::Access, export::Squash)>;

/// What to do with a request record.
pub enum Outcome {
    /// Send this reply.
    Reply(conn::Outgoing),
    /// Nothing to answer (a reply or an unknown message type).
    Skip,
    /// Close the connection (not an RPC call at all).
    Close,
}

fn finish(e: xdr::Encoder) -> Outcome {
    Outcome::Reply(conn::Outgoing::Bytes(rpc::finish(e, 0)))
}

impl Exporter {
    /// Marks `file` as one whose data the disk failed to give to `sendfile`: its READs are
    /// buffered from now on (see [`failed_reads`]).
    pub fn note_failed_read(&self, file: &std::fs::File) {
        match rustix::fs::fstat(file) {
            Ok(st) => {
                if self.failed_reads.note(st.st_ino) {
                    tracing::warn!(
                        inode = st.st_ino,
                        "I/O error reading a file for a READ reply: connection cut; its READs are now read before replying, so they answer NFS3ERR_IO"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "fstat of a file that failed a READ"),
        }
    }

    /// What the client rules grant a client at `ip`: decided once per connection.
    pub fn grant(&self, ip: IpAddr) -> Grant {
        decide(&self.rules, ip)
    }

    /// Answers one request record from a client at `client` the rules granted `grant`;
    /// a retransmitted non-idempotent call gets its first reply again (see [`drc`]).
    pub fn handle(&self, record: &[u8], grant: Grant, client: IpAddr) -> Outcome {
        match rpc::parse_call(record) {
            Ok(call) => self.handle_call(call, grant, client),
            Err(e) => self.refuse(e),
        }
    }

    /// [`Exporter::handle`] for a record already parsed.
    pub fn handle_call(&self, call: rpc::Call<'_>, grant: Grant, client: IpAddr) -> Outcome {
        let key = match (&call.credential, call.program) {
            (Credential::Sys(auth), NFS_PROGRAM)
                if call.version == 3 && drc::is_cached(call.procedure) =>
            {
                Some(drc::CallKey::new(
                    client,
                    call.xid,
                    call.procedure,
                    auth.uid,
                    call.args.rest(),
                ))
            }
            _ => None,
        };
        let Some(key) = key else {
            return self.run_guarded(call, grant);
        };
        match self.replies.begin(&key) {
            drc::Seen::New => {}
            drc::Seen::InProgress => {
                self.metrics.nfs_duplicate("dropped_in_progress");
                return Outcome::Skip;
            }
            drc::Seen::Replay(reply) => {
                self.metrics.nfs_duplicate("replayed");
                return Outcome::Reply(conn::Outgoing::Bytes(reply.to_vec()));
            }
        }
        let outcome = self.run_guarded(call, grant);
        let reply = match &outcome {
            Outcome::Reply(conn::Outgoing::Bytes(bytes)) => Some(bytes.as_slice()),
            _ => None,
        };
        self.replies.finish(&key, reply);
        outcome
    }

    /// The answer to a record that is not a usable call.
    fn refuse(&self, error: CallError) -> Outcome {
        match error {
            CallError::Garbage => Outcome::Close,
            CallError::NotACall => Outcome::Skip,
            CallError::RpcMismatch(xid) => finish(rpc::rpc_mismatch(xid)),
            CallError::BadCredential(xid) => finish(rpc::auth_error(xid, AuthStat::BadCred)),
        }
    }

    /// [`Exporter::run`], answering SYSTEM_ERR if the request panics: the client gets a
    /// reply (a request never answered would hold its connection's slot and its duplicate
    /// cache entry), and the worker goes on.
    fn run_guarded(&self, call: rpc::Call<'_>, grant: Grant) -> Outcome {
        let xid = call.xid;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(call, grant)))
            .unwrap_or_else(|_| {
                tracing::error!(xid, "an NFS request panicked; answered SYSTEM_ERR");
                finish(rpc::accepted(xid, AcceptStat::SystemErr, 0))
            })
    }

    /// Whether a handle is answered without waiting for a walk of the share (see
    /// [`vfs::Vfs::resolves_without_walk`]).
    pub fn resolves_without_walk(&self, handle: &[u8]) -> bool {
        self.vfs.resolves_without_walk(handle)
    }

    /// The current write verifier.
    fn write_verifier(&self) -> [u8; 8] {
        self.verifier
            .load(std::sync::atomic::Ordering::Acquire)
            .to_be_bytes()
    }

    /// A write-back failed: every write not yet committed must be sent again.
    fn writeback_failed(&self, error: &std::io::Error) {
        let old = self
            .verifier
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        tracing::error!(error = %error, verifier = old + 1, "write-back failed; the write verifier changed so clients resend");
    }

    /// Runs one decoded call.
    fn run(&self, mut call: rpc::Call<'_>, grant: Grant) -> Outcome {
        let xid = call.xid;
        // The arguments from their start, for the attributes a failure carries.
        let arguments = call.args.clone();
        let accepted = |stat| finish(rpc::accepted(xid, stat, 0));
        let (low, high) = match call.program {
            NFS_PROGRAM | MOUNT_PROGRAM => (3, 3),
            PORTMAP_PROGRAM => (2, 2),
            _ => return accepted(AcceptStat::ProgUnavail),
        };
        if call.version != high {
            return accepted(AcceptStat::ProgMismatch { low, high });
        }
        let names: &[&'static str] = match call.program {
            NFS_PROGRAM => &PROCEDURES,
            MOUNT_PROGRAM => &MOUNT_PROCEDURES,
            _ => &PORTMAP_PROCEDURES,
        };
        let Some(&name) = names.get(call.procedure as usize) else {
            return accepted(AcceptStat::ProcUnavail);
        };
        let started = Instant::now();
        // NULL and PORTMAP take any flavor; everything else needs AUTH_SYS.
        let auth = match (&call.credential, call.procedure, call.program) {
            (_, 0, _) | (_, _, PORTMAP_PROGRAM) => None,
            (Credential::Sys(auth), _, _) => Some(auth.clone()),
            (Credential::None, _, _) => return finish(rpc::auth_error(xid, AuthStat::TooWeak)),
            (Credential::Other(_), _, _) => return finish(rpc::auth_error(xid, AuthStat::BadCred)),
        };
        let result = match call.program {
            PORTMAP_PROGRAM => self.portmap2(call.procedure, &mut call.args),
            MOUNT_PROGRAM => {
                let machine = auth.as_ref().map(|a| a.machine.as_str()).unwrap_or("");
                self.mount3(call.procedure, grant.is_some(), machine, &mut call.args)
            }
            _ => match (grant, &auth) {
                (Some((access, squash)), Some(auth)) => {
                    let creds = match self.identity {
                        IdentityMode::Posix => Creds::squashed(auth, squash, self.anon),
                        // Checked as the identity that acts: the process's own.
                        IdentityMode::Squash => self.server_creds.clone(),
                    };
                    let caller = Caller { creds, access };
                    self.nfs3(call.procedure, &caller, &mut call.args)
                }
                (None, Some(_)) => Err(Fail::Status(status::ACCES)),
                // No credential checked: only NULL gets here, and it has no results.
                (_, None) => Ok(Done::Body(xdr::Encoder::default())),
            },
        };
        let (label, outcome) = match result {
            Err(Fail::Garbage) => ("garbage_args", accepted(AcceptStat::GarbageArgs)),
            Err(Fail::Status(code)) => {
                let mut e = rpc::accepted(xid, AcceptStat::Success, 64);
                e.u32(code);
                let body = (call.program == NFS_PROGRAM)
                    .then(|| self.failure_body(call.procedure, code, arguments))
                    .flatten();
                match body {
                    Some(body) => e.bytes_mut().extend_from_slice(&body.into_bytes()),
                    None => {
                        for _ in 0..failure_words(call.procedure) {
                            e.u32(0);
                        }
                    }
                }
                (status_label(code), finish(e))
            }
            Ok(Done::Body(body)) => {
                let mut e = rpc::accepted(xid, AcceptStat::Success, body.len() + 4);
                if call.program == NFS_PROGRAM && call.procedure != 0 {
                    e.u32(status::OK);
                }
                e.bytes_mut().extend_from_slice(&body.into_bytes());
                ("ok", finish(e))
            }
            Ok(Done::Read {
                head,
                file,
                offset,
                count,
            }) => {
                let mut e = rpc::accepted(xid, AcceptStat::Success, head.len() + 4);
                e.u32(status::OK);
                e.bytes_mut().extend_from_slice(&head.into_bytes());
                let pad = (4 - count % 4) % 4;
                let head = rpc::finish(e, count + pad);
                (
                    "ok",
                    Outcome::Reply(conn::Outgoing::Read {
                        head,
                        file,
                        offset,
                        count,
                        pad,
                    }),
                )
            }
        };
        self.metrics
            .observe_nfs(name, label, started.elapsed().as_secs_f64());
        outcome
    }
}

/// A started NFS server.
#[derive(Debug)]
pub struct NfsServer {
    addr: SocketAddr,
}

impl NfsServer {
    /// Binds `addr`, indexes the share at `root`, and serves on background threads.
    pub fn start(
        addr: &str,
        root: &Path,
        options: ExportOptions,
        metrics: Arc<Metrics>,
        usage: Arc<Usage>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let started = Instant::now();
        let vfs = vfs::Vfs::open(root, &options.share)?;
        tracing::info!(nfs = %local, indexed = vfs.indexed(), index_ms = started.elapsed().as_millis() as u64, threads = options.threads, per_connection = options.max_requests_per_connection, "NFS export ready");
        let limit = ConnectionLimit::new(options.max_connections);
        let limits = conn::Limits {
            pool: pool::WorkerPool::start(options.threads)?,
            per_connection: options.max_requests_per_connection,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let exporter = Arc::new(Exporter {
            vfs,
            metrics,
            usage,
            read_only: options.read_only,
            rules: options.rules,
            rule_texts: options.rule_texts,
            share_name: options.share,
            anon: options.anon,
            identity: options.identity,
            server_creds: export::server_creds(),
            verifier: std::sync::atomic::AtomicU64::new(nanos),
            fds: fdcache::FdCache::new(fdcache::DEFAULT_CAPACITY, options.read_only),
            failed_reads: failed_reads::FailedReads::default(),
            replies: drc::ReplyCache::new(drc::DEFAULT_CAPACITY, drc::KEEP_FOR),
            dirs: DirLocks::default(),
            mounts: Mutex::new(Vec::new()),
            port: local.port(),
        });
        std::thread::Builder::new()
            .name("zn-nfs-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let stream = match stream {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "NFS accept failed");
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            continue;
                        }
                    };
                    let peer = match stream.peer_addr() {
                        Ok(p) => p,
                        Err(_) => continue,
                    };
                    let Some(slot) = limit.try_acquire() else {
                        exporter.metrics.refuse_connection("nfs");
                        tracing::warn!(%peer, max_connections = limit.max(), "NFS connection cap reached: connection closed");
                        continue;
                    };
                    let (exporter, limits) = (Arc::clone(&exporter), limits.clone());
                    let spawned = std::thread::Builder::new()
                        .name("zn-nfs-conn".into())
                        .spawn(move || {
                            let _slot = slot;
                            conn::serve(exporter, stream, peer, &limits)
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot start an NFS connection thread");
                    }
                }
            })?;
        Ok(Self { addr: local })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

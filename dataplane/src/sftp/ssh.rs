//! The SSH side of the SFTP export (russh): public-key logins against
//! [`super::keys::AuthorizedKeys`], session channels that may start the `sftp` subsystem
//! and nothing else (no shell, exec, pty, agent or port forwarding), modern algorithms
//! only, and limits on everything a client can do before it has logged in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use russh::keys::ssh_key::{Algorithm, EcdsaCurve, HashAlg};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Preferred};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::fs::{Session as SftpSession, ShareAccess};
use super::keys::{AuthorizedKeys, Principal};
use super::wire;
use crate::identity::Creds;
use crate::limits::{ConnectionLimit, ConnectionSlot};

/// How long a client has to log in before it is disconnected.
pub const LOGIN_GRACE: Duration = Duration::from_secs(30);
/// Failed authentication attempts before a connection is closed.
pub const MAX_AUTH_ATTEMPTS: usize = 6;
/// Session channels one connection may open.
pub const MAX_CHANNELS: usize = 8;
/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Connections not yet logged in, at once (OpenSSH's `MaxStartups` idea): more are closed at
/// accept, so idle sockets cannot take every slot.
pub const MAX_UNAUTHENTICATED: usize = 64;
/// A session channel that has not asked for the `sftp` subsystem this long after opening is
/// dropped (its unread messages would stall the connection).
pub const SUBSYSTEM_GRACE: Duration = Duration::from_secs(10);
/// A reply the client does not take (no SSH window) for this long ends its channel.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Key exchanges offered: curve25519 and the NIST curves, and the ML-KEM hybrid.
pub const KEX: &[russh::kex::Name] = &[
    russh::kex::MLKEM768X25519_SHA256,
    russh::kex::CURVE25519,
    russh::kex::CURVE25519_PRE_RFC_8731,
    russh::kex::ECDH_SHA2_NISTP256,
    russh::kex::ECDH_SHA2_NISTP384,
    russh::kex::ECDH_SHA2_NISTP521,
    russh::kex::EXTENSION_SUPPORT_AS_SERVER,
    russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];
/// Ciphers offered: AEAD only.
pub const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
];
/// MACs (unused by the AEAD ciphers, which authenticate themselves; listed for the
/// negotiation): encrypt-then-MAC SHA-2 only.
pub const MACS: &[russh::mac::Name] = &[russh::mac::HMAC_SHA512_ETM, russh::mac::HMAC_SHA256_ETM];
/// Host and user key algorithms: ed25519, ECDSA, RSA with SHA-2 (never SHA-1 `ssh-rsa`).
pub const KEY_ALGORITHMS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];

/// Why the SFTP export could not start.
#[derive(Debug, thiserror::Error)]
pub enum SftpStartError {
    /// The host key file cannot be used.
    #[error("cannot load the SFTP host key {path}: {message}")]
    HostKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The authorized keys file cannot be used.
    #[error(transparent)]
    Keys(#[from] super::keys::KeysError),
    /// The address cannot be bound, or the share opened.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    config: Arc<russh::server::Config>,
    keys: AuthorizedKeys,
    share: Arc<ShareAccess>,
    connections: Arc<ConnectionLimit>,
    unauthenticated: Arc<ConnectionLimit>,
}

/// The russh configuration: the host key, public-key logins only, the algorithm lists
/// above, and the pre-login limits.
pub fn ssh_config(host_key: russh::keys::PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(std::borrow::Cow::Borrowed("SSH-2.0-zeronas")),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // The first "none" probe every OpenSSH client sends is answered at once; real
        // rejections take a constant second.
        auth_rejection_time: Duration::from_secs(1),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        max_auth_attempts: MAX_AUTH_ATTEMPTS,
        inactivity_timeout: Some(IDLE_TIMEOUT),
        keepalive_interval: Some(Duration::from_secs(60)),
        nodelay: true,
        preferred: Preferred {
            kex: std::borrow::Cow::Borrowed(KEX),
            key: std::borrow::Cow::Borrowed(KEY_ALGORITHMS),
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            mac: std::borrow::Cow::Borrowed(MACS),
            compression: std::borrow::Cow::Borrowed(&[russh::compression::NONE]),
            host_key_certificates: std::borrow::Cow::Borrowed(&[]),
        },
        ..Default::default()
    }
}

/// Loads the host key (OpenSSH's private key format, unencrypted).
pub fn load_host_key(path: &std::path::Path) -> Result<russh::keys::PrivateKey, SftpStartError> {
    russh::keys::load_secret_key(path, None).map_err(|e| SftpStartError::HostKey {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Accepts connections on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    config: russh::server::Config,
    keys: AuthorizedKeys,
    share: Arc<ShareAccess>,
    max_connections: usize,
) {
    let shared = Arc::new(Shared {
        config: Arc::new(config),
        keys,
        share,
        connections: ConnectionLimit::new(max_connections),
        unauthenticated: ConnectionLimit::new(MAX_UNAUTHENTICATED.min(max_connections)),
    });
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "SFTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slots = shared
            .connections
            .try_acquire()
            .zip(shared.unauthenticated.try_acquire());
        let Some((slot, login_slot)) = slots else {
            shared.share.metrics.refuse_connection("sftp");
            tracing::warn!(%peer, max = shared.connections.max(), max_unauthenticated = shared.unauthenticated.max(), "SFTP connection refused: at the connection cap");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            connection(shared, socket, peer, login_slot).await;
            drop(slot);
        });
    }
}

/// Runs one connection: the SSH handshake and login within [`LOGIN_GRACE`], then its
/// channels until it closes.
async fn connection(
    shared: Arc<Shared>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    login_slot: ConnectionSlot,
) {
    let logged_in = Arc::new(AtomicBool::new(false));
    let handler = Connection {
        shared: Arc::clone(&shared),
        peer,
        principal: None,
        logged_in: Arc::clone(&logged_in),
        login_slot: Some(login_slot),
        channels: Arc::new(std::sync::Mutex::new(HashMap::new())),
        opened: 0,
    };
    // One deadline for the banner, the key exchange and the login together.
    let deadline = tokio::time::Instant::now() + LOGIN_GRACE;
    let started = tokio::time::timeout_at(
        deadline,
        russh::server::run_stream(Arc::clone(&shared.config), socket, handler),
    )
    .await;
    let mut running = match started {
        Ok(Ok(running)) => running,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "SSH handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "SSH client sent no identification in time: closed");
            return;
        }
    };
    let handle = running.handle();
    let result = tokio::select! {
        r = &mut running => Some(r),
        () = tokio::time::sleep_until(deadline) => None,
    };
    let result = match result {
        Some(r) => r,
        None if !logged_in.load(Ordering::Acquire) => {
            tracing::info!(%peer, grace_s = LOGIN_GRACE.as_secs(), "SFTP client did not log in in time: disconnected");
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "login grace time over".into(),
                    "en".into(),
                )
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut running).await;
            return;
        }
        None => running.await,
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "SSH connection ended with an error");
    }
}

/// One SSH connection's state.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    principal: Option<Principal>,
    logged_in: Arc<AtomicBool>,
    /// Held until the login succeeds (the cap on connections not yet logged in).
    login_slot: Option<ConnectionSlot>,
    /// Session channels opened and not yet given to SFTP.
    channels: Arc<std::sync::Mutex<HashMap<ChannelId, Channel<Msg>>>>,
    opened: usize,
}

impl Connection {
    /// Drops the channel `id` if it was never given to SFTP: russh then refuses its further
    /// messages instead of queueing them for nobody.
    fn forget(&self, id: ChannelId) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Unknown keys, and SHA-1 `ssh-rsa` signatures, are refused before the client signs.
        if !KEY_ALGORITHMS.contains(offer.algorithm) {
            return Ok(Auth::reject());
        }
        Ok(match self.shared.keys.find(offer.public_key.key_data()) {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if !KEY_ALGORITHMS.contains(key.algorithm) {
            tracing::info!(peer = %self.peer, user, algorithm = %key.algorithm, "SFTP login refused: signature algorithm not allowed");
            return Ok(Auth::reject());
        }
        let Some(principal) = self.shared.keys.find(key.public_key.key_data()) else {
            tracing::info!(peer = %self.peer, user, "SFTP login refused: key not authorized");
            return Ok(Auth::reject());
        };
        tracing::info!(peer = %self.peer, user, key = %principal.label, uid = principal.uid, gid = principal.gid, read_only = principal.read_only, "SFTP login");
        self.principal = Some(principal);
        self.logged_in.store(true, Ordering::Release);
        self.login_slot = None;
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.opened >= MAX_CHANNELS || self.principal.is_none() {
            // Dropping the reply handle refuses the channel.
            tracing::info!(peer = %self.peer, "SSH session channel refused (at most {MAX_CHANNELS} per connection)");
            return Ok(());
        }
        self.opened += 1;
        let id = channel.id();
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, channel);
        let channels = Arc::clone(&self.channels);
        tokio::spawn(async move {
            tokio::time::sleep(SUBSYSTEM_GRACE).await;
            let unused = channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if unused.is_some() {
                tracing::info!("SSH session channel dropped: no sftp subsystem request in time");
            }
        });
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(principal), "sftp") = (&self.principal, name) else {
            tracing::info!(peer = %self.peer, subsystem = name, "SSH subsystem refused: only sftp is served");
            self.forget(channel);
            return session.channel_failure(channel);
        };
        let taken = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&channel);
        let Some(ch) = taken else {
            return session.channel_failure(channel);
        };
        let creds = Creds {
            uid: principal.uid,
            gid: principal.gid,
            gids: principal.groups.clone(),
        };
        let sftp = SftpSession::new(Arc::clone(&self.shared.share), creds, principal.read_only);
        session.channel_success(channel)?;
        let peer = self.peer;
        let handle = session.handle();
        tokio::spawn(async move {
            if let Err(e) = serve_channel(ch, sftp).await {
                tracing::debug!(%peer, error = %e, "SFTP channel ended");
            }
            // Every reply is out (or the client is gone): now the channel may close.
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!(peer = %self.peer, "SSH exec refused: this server only serves sftp");
        self.forget(channel);
        session.channel_failure(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!(peer = %self.peer, "SSH shell refused: this server only serves sftp");
        self.forget(channel);
        session.channel_failure(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forget(channel);
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // OpenSSH clients send their locale before asking for the subsystem: refused, and
        // the channel kept.
        session.channel_failure(channel)
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forget(channel);
        // The cap is on channels open at once, not over the connection's life.
        self.opened = self.opened.saturating_sub(1);
        Ok(())
    }
}

/// Reply bytes one SFTP channel may have queued and not yet sent. OpenSSH's `sftp` keeps 64
/// requests of up to 255 KiB in flight (16 MiB of replies); a client that asks for more
/// without reading its replies stops being read until it does.
const REPLY_BUDGET: u32 = 64 << 20;
/// Small replies queued together are sent as one write (one SSH message).
const COALESCE: usize = 64 * 1024;

/// Reads SFTP packets from the channel and answers each in order, until the client closes it
/// or sends a packet no SFTP server could read (a length of 0 or over [`wire::MAX_PACKET`]).
///
/// Reading and writing run apart: a reply waiting for the client's window must never stop
/// the requests from being read, because russh stops reading the connection (and with it the
/// client's window adjustments) when a channel's incoming messages are not taken.
async fn serve_channel(channel: Channel<Msg>, mut sftp: SftpSession) -> std::io::Result<()> {
    let metrics = sftp.metrics();
    let (mut reader, mut writer) = tokio::io::split(channel.into_stream());
    let budget = Arc::new(tokio::sync::Semaphore::new(REPLY_BUDGET as usize));
    let (replies, mut queued) = tokio::sync::mpsc::unbounded_channel::<(
        bytes::BytesMut,
        tokio::sync::OwnedSemaphorePermit,
    )>();
    // Dropped when the sender ends for any reason: the reader then stops too, so a client
    // whose replies could not be sent gets its channel closed instead of waiting for ever.
    let (sender_alive, mut sender_gone) = tokio::sync::oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        let _alive = sender_alive;
        let mut batch = Vec::with_capacity(COALESCE);
        while let Some((reply, permit)) = queued.recv().await {
            if reply.len() >= COALESCE {
                send(&mut writer, &reply).await?;
                drop(permit);
                continue;
            }
            batch.extend_from_slice(&reply);
            drop(permit);
            while batch.len() < COALESCE {
                match queued.try_recv() {
                    Ok((reply, permit)) => {
                        batch.extend_from_slice(&reply);
                        drop(permit);
                    }
                    Err(_) => break,
                }
            }
            send(&mut writer, &batch).await?;
            batch.clear();
        }
        writer.shutdown().await
    });
    let mut packet = Vec::with_capacity(64 * 1024);
    let read_result = loop {
        let mut len = [0u8; 4];
        let read = tokio::select! {
            read = reader.read_exact(&mut len) => read,
            _ = &mut sender_gone => break Ok(()),
        };
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        }
        let len = u32::from_be_bytes(len);
        if len == 0 || len > wire::MAX_PACKET {
            metrics.observe_sftp("malformed", "bad_message", 0.0);
            tracing::warn!(
                len,
                max = wire::MAX_PACKET,
                "SFTP packet length out of range: channel closed"
            );
            break Ok(());
        }
        packet.resize(len as usize, 0);
        if let Err(e) = reader.read_exact(&mut packet).await {
            break Err(e);
        }
        let started = Instant::now();
        // File-system calls block: the runtime moves its other tasks (handshakes,
        // keepalives, other channels) off this thread meanwhile.
        let (op, reply) = tokio::task::block_in_place(|| sftp.handle(&packet));
        metrics.observe_sftp(op, status_label(&reply), started.elapsed().as_secs_f64());
        let size = (reply.len() as u32).min(REPLY_BUDGET);
        let permit =
            tokio::time::timeout(REPLY_TIMEOUT, Arc::clone(&budget).acquire_many_owned(size)).await;
        let Ok(Ok(permit)) = permit else {
            tracing::info!("SFTP client took no replies for {REPLY_TIMEOUT:?}: channel closed");
            break Ok(());
        };
        if replies.send((reply, permit)).is_err() {
            // The sender stopped: the channel is gone.
            break Ok(());
        }
    };
    drop(replies);
    let sent = sender
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    read_result.and(sent)
}

/// Writes `bytes` to the channel, giving up after [`REPLY_TIMEOUT`] without progress (the
/// client stopped taking replies).
async fn send(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    tokio::time::timeout(REPLY_TIMEOUT, writer.write_all(bytes))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the client took no reply")
        })?
}

/// The metrics label of a reply: `ok` unless it is a STATUS with another code.
fn status_label(reply: &[u8]) -> &'static str {
    if reply.get(4) != Some(&wire::kind::STATUS) {
        return "ok";
    }
    match reply
        .get(9..13)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    {
        Some(0) => "ok",
        Some(1) => "eof",
        Some(2) => "no_such_file",
        Some(3) => "permission_denied",
        Some(5) => "bad_message",
        Some(8) => "op_unsupported",
        _ => "failure",
    }
}

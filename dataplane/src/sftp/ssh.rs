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
use crate::limits::ConnectionLimit;

/// How long a client has to log in before it is disconnected.
pub const LOGIN_GRACE: Duration = Duration::from_secs(30);
/// Failed authentication attempts before a connection is closed.
pub const MAX_AUTH_ATTEMPTS: usize = 6;
/// Session channels one connection may open.
pub const MAX_CHANNELS: usize = 8;
/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

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
        let Some(slot) = shared.connections.try_acquire() else {
            shared.share.metrics.refuse_connection("sftp");
            tracing::warn!(%peer, max = shared.connections.max(), "SFTP connection refused: at the connection cap");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            connection(shared, socket, peer).await;
            drop(slot);
        });
    }
}

/// Runs one connection: the SSH handshake and login within [`LOGIN_GRACE`], then its
/// channels until it closes.
async fn connection(shared: Arc<Shared>, socket: tokio::net::TcpStream, peer: SocketAddr) {
    let logged_in = Arc::new(AtomicBool::new(false));
    let handler = Connection {
        shared: Arc::clone(&shared),
        peer,
        principal: None,
        logged_in: Arc::clone(&logged_in),
        channels: HashMap::new(),
        opened: 0,
    };
    let started = tokio::time::timeout(
        LOGIN_GRACE,
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
        () = tokio::time::sleep(LOGIN_GRACE) => None,
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
    channels: HashMap<ChannelId, Channel<Msg>>,
    opened: usize,
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Unknown keys are refused before the client signs anything.
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
        let Some(principal) = self.shared.keys.find(key.public_key.key_data()) else {
            tracing::info!(peer = %self.peer, user, "SFTP login refused: key not authorized");
            return Ok(Auth::reject());
        };
        tracing::info!(peer = %self.peer, user, key = %principal.label, uid = principal.uid, gid = principal.gid, read_only = principal.read_only, "SFTP login");
        self.principal = Some(principal);
        self.logged_in.store(true, Ordering::Release);
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
        self.channels.insert(channel.id(), channel);
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
            return session.channel_failure(channel);
        };
        let Some(ch) = self.channels.remove(&channel) else {
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
        tokio::spawn(async move {
            if let Err(e) = serve_channel(ch, sftp).await {
                tracing::debug!(%peer, error = %e, "SFTP channel ended");
            }
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
        session.channel_failure(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!(peer = %self.peer, "SSH shell refused: this server only serves sftp");
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
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.close(channel)
    }
}

/// Reads SFTP packets from the channel, answers each in order, until the client closes it
/// or sends a packet no SFTP server could read (a length of 0 or over [`wire::MAX_PACKET`]).
async fn serve_channel(channel: Channel<Msg>, mut sftp: SftpSession) -> std::io::Result<()> {
    let metrics = sftp.metrics();
    let stream = channel.into_stream();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut packet = Vec::with_capacity(64 * 1024);
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len);
        if len == 0 || len > wire::MAX_PACKET {
            metrics.observe_sftp("malformed", "bad_message", 0.0);
            tracing::warn!(
                len,
                max = wire::MAX_PACKET,
                "SFTP packet length out of range: channel closed"
            );
            let _ = writer.shutdown().await;
            return Ok(());
        }
        packet.resize(len as usize, 0);
        reader.read_exact(&mut packet).await?;
        let started = Instant::now();
        let (op, reply) = sftp.handle(&packet);
        writer.write_all(&reply).await?;
        metrics.observe_sftp(op, status_label(&reply), started.elapsed().as_secs_f64());
    }
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

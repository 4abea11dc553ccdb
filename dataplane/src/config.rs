//! Command-line and environment configuration of the dataplane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::identity::{IdentityChoice, parse_mode, parse_owner};
use crate::transport::RdmaMode;

/// zeronas dataplane: serves one folder as a share over NFSv3 and an HTTP file API.
#[derive(Debug, Clone, Parser)]
#[command(name = "zeronas-dataplane", version, about)]
pub struct Config {
    /// Folder to serve.
    #[arg(long, env = "ZERONAS_ROOT")]
    pub root: PathBuf,

    /// Share name, the `{share}` in `/v1/shares/{share}/...` (a DNS label).
    #[arg(long, env = "ZERONAS_SHARE", default_value = "default", value_parser = parse_share_name)]
    pub share: String,

    /// Address of the HTTP file API; `off` disables it (probes and metrics then need
    /// `--metrics`).
    #[arg(long, env = "ZERONAS_HTTP", default_value = "127.0.0.1:8080", value_parser = parse_http)]
    pub http: HttpListen,

    /// File holding the read-write bearer token of the HTTP file API (re-read when it
    /// changes). With no token file the API is open to every client that reaches it.
    #[arg(long, env = "ZERONAS_HTTP_TOKEN_FILE", value_name = "PATH")]
    pub http_token_file: Option<PathBuf>,
    /// File holding the read-only bearer token (GET, HEAD, listings, stats).
    #[arg(long, env = "ZERONAS_HTTP_READ_TOKEN_FILE", value_name = "PATH")]
    pub http_read_token_file: Option<PathBuf>,
    /// Let requests without a token read (never write) when token files are given.
    #[arg(long, env = "ZERONAS_HTTP_ANONYMOUS_READ")]
    pub http_anonymous_read: bool,
    /// Most HTTP connections served at once (all workers together); more are closed on
    /// accept and counted in `zeronas_connections_refused_total{protocol="http"}`.
    #[arg(long, env = "ZERONAS_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
    /// A client has this long to send a whole request head, counted from the end of the
    /// previous response (so it also closes idle keep-alive connections).
    #[arg(long, env = "ZERONAS_HTTP_HEAD_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_head_timeout: Duration,
    /// An upload or a response that moves no byte for this long is abandoned (its quota
    /// reservation released, the connection closed).
    #[arg(long, env = "ZERONAS_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,

    /// NFSv3 listener (MOUNT, NFS and PORTMAP on one port); `off` disables NFS.
    #[arg(long, env = "ZERONAS_NFS", default_value = "127.0.0.1:2049")]
    pub nfs: String,
    /// NFS client rule, repeatable: `CIDR[,rw|ro][,root_squash|no_root_squash|all_squash]`
    /// (first match wins; none: every client, read-write, root squashed).
    #[arg(long = "nfs-client", value_name = "RULE")]
    pub nfs_clients: Vec<String>,
    /// Most NFS connections served at once; more are closed on accept and counted in
    /// `zeronas_connections_refused_total{protocol="nfs"}` (a node's kernel client uses one).
    #[arg(long, env = "ZERONAS_NFS_MAX_CONNECTIONS", default_value_t = 512)]
    pub nfs_max_connections: usize,
    /// Threads that run NFS requests, all connections together (requests of one connection
    /// run concurrently, so a slow COMMIT holds one thread, not the connection).
    #[arg(long, env = "ZERONAS_NFS_THREADS", default_value_t = crate::nfs::pool::DEFAULT_THREADS)]
    pub nfs_threads: usize,
    /// Most requests of one NFS connection in flight (read and not yet answered); the
    /// connection's further requests wait in its socket.
    #[arg(long, env = "ZERONAS_NFS_MAX_REQUESTS_PER_CONNECTION", default_value_t = crate::nfs::pool::DEFAULT_PER_CONNECTION)]
    pub nfs_max_requests_per_connection: usize,

    /// Address of the SFTP export (SSH with the `sftp` subsystem only), or `off`. Needs
    /// `--sftp-host-key` and `--sftp-authorized-keys`.
    #[arg(long, env = "ZERONAS_SFTP", default_value = "off")]
    pub sftp: String,

    /// The SFTP server's host private key (OpenSSH format, as `ssh-keygen -t ed25519` writes).
    #[arg(long, env = "ZERONAS_SFTP_HOST_KEY")]
    pub sftp_host_key: Option<PathBuf>,

    /// Public keys that may log in over SFTP (OpenSSH `authorized_keys` format; options
    /// `uid=`, `gid=`, `groups=`, `read-only`); re-read when it changes.
    #[arg(long, env = "ZERONAS_SFTP_AUTHORIZED_KEYS")]
    pub sftp_authorized_keys: Option<PathBuf>,

    /// Most SFTP connections at once; more are closed on accept and counted in
    /// `zeronas_connections_refused_total{protocol="sftp"}`.
    #[arg(long, env = "ZERONAS_SFTP_MAX_CONNECTIONS", default_value_t = 256)]
    pub sftp_max_connections: usize,

    /// Most open file and folder handles of one SFTP session.
    #[arg(long, env = "ZERONAS_SFTP_MAX_HANDLES", default_value_t = 256)]
    pub sftp_max_handles: usize,

    /// Threads of the SFTP runtime (SSH encryption and the requests of every connection).
    #[arg(long, env = "ZERONAS_SFTP_THREADS", default_value_t = 2)]
    pub sftp_threads: usize,

    /// uid and gid that squashed NFS callers act as (posix identities).
    #[arg(long, env = "ZERONAS_ANON_ID", default_value_t = 65534)]
    pub anon_id: u32,

    /// Whose identity NFS requests run under: `posix` (each caller's, after squashing; needs
    /// the capabilities CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETUID, SETGID), `squash`
    /// (every caller acts as this process's user), or `auto` (posix when those capabilities
    /// are held, else squash).
    #[arg(long, env = "ZERONAS_IDENTITY", value_enum, default_value_t = IdentityChoice::Auto)]
    pub identity: IdentityChoice,

    /// Owner (`UID:GID`) given to the share root when the share is new (empty).
    #[arg(long, env = "ZERONAS_ROOT_OWNER", value_parser = parse_owner)]
    pub root_owner: Option<(u32, u32)>,

    /// Mode (octal, e.g. `0777`) given to the share root when the share is new (empty).
    #[arg(long, env = "ZERONAS_ROOT_MODE", value_parser = parse_mode)]
    pub root_mode: Option<u32>,

    /// Separate address for `/metrics`, `/healthz` and `/readyz` (default: on the HTTP listener).
    #[arg(long, env = "ZERONAS_METRICS")]
    pub metrics: Option<SocketAddr>,

    /// Refuse every write.
    #[arg(long, env = "ZERONAS_READ_ONLY")]
    pub read_only: bool,

    /// Quota in bytes; accepts Kubernetes quantities such as `10Gi` or `500M`.
    #[arg(long, env = "ZERONAS_CAPACITY", value_parser = parse_size)]
    pub capacity: Option<u64>,

    /// How long SIGTERM waits for in-flight requests before exiting anyway (e.g. `30s`, `500ms`).
    #[arg(long, env = "ZERONAS_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How often usage is re-counted from disk, to notice files written around the server
    /// (`0s` disables).
    #[arg(long, env = "ZERONAS_RESCAN_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub rescan_interval: Duration,

    /// Worker threads (default: the CPUs allowed by affinity and cpuset, capped by the CPU quota).
    #[arg(long, env = "ZERONAS_WORKERS")]
    pub workers: Option<usize>,

    /// Pin each worker thread to one allowed CPU.
    #[arg(long, env = "ZERONAS_PIN_CPUS")]
    pub pin_cpus: bool,

    /// Data path for HTTP: `auto` (zero-copy front end; small bodies by writev, larger by
    /// sendfile, uploads by splice), `sendfile` (front end, every file body by sendfile), or
    /// `copy` (hyper only, user-space buffers; for comparison and odd filesystems).
    #[arg(long, env = "ZERONAS_ZERO_COPY", value_enum, default_value_t = ZeroCopy::Auto)]
    pub zero_copy: ZeroCopy,

    /// How the front end's workers read request heads and write responses: `epoll`
    /// (readiness, one `recv`/`writev` system call each) or `io_uring` (operations queued on
    /// a ring per worker and submitted together). Large file bodies go by sendfile and
    /// uploads by splice with either. Without io_uring support a worker falls back to epoll
    /// and counts `io_uring_unavailable`.
    #[arg(long, env = "ZERONAS_IO_ENGINE", value_enum, default_value_t = IoEngine::Epoll)]
    pub io_engine: IoEngine,

    /// On read-only shares, file bodies of at least this size that go through hyper (HTTP/2,
    /// handed-off connections, `--zero-copy copy`) are memory-mapped instead of read with
    /// `pread`; `0` maps every body, a huge value never maps.
    #[arg(long, env = "ZERONAS_MMAP_MIN", default_value = "1Mi", value_parser = parse_size)]
    pub mmap_min: u64,

    /// RDMA: `auto` (use when available, else TCP), `disabled`, or `required` (fail start-up
    /// without it).
    #[arg(long, env = "ZERONAS_RDMA", value_enum, default_value_t = RdmaMode::Auto)]
    pub rdma: RdmaMode,

    /// Log format.
    #[arg(long, env = "ZERONAS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Where the HTTP file API listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

/// Parses `--http`: an address or `off`.
pub fn parse_http(text: &str) -> Result<HttpListen, String> {
    if text.trim() == "off" {
        return Ok(HttpListen(None));
    }
    text.trim()
        .parse()
        .map(|a| HttpListen(Some(a)))
        .map_err(|_| format!("{text:?} is not an address such as 0.0.0.0:8080, nor off"))
}

/// The HTTP data path (`spec.dataPath.zeroCopy` of a NasVolume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ZeroCopy {
    /// Zero-copy front end with the small-body threshold.
    Auto,
    /// Zero-copy front end, sendfile for every file body.
    Sendfile,
    /// hyper only.
    Copy,
}

/// How the front end waits for sockets (`--io-engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoEngine {
    /// Readiness through tokio's epoll reactor.
    Epoll,
    /// Completion through an io_uring ring per worker.
    #[value(name = "io_uring")]
    IoUring,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable key=value lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses a byte size: a plain integer, or an integer with a Kubernetes quantity suffix
/// (`k`, `M`, `G`, `T`, `P`, `E` in powers of 1000; `Ki` .. `Ei` in powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size: expected digits, e.g. 10Gi or 1048576"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "P" => 1000u64.pow(5),
        "E" => 1000u64.pow(6),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        other => {
            return Err(format!(
                "unknown size suffix {other:?} in {text:?}: use k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei"
            ));
        }
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} does not fit in 64 bits"))
}

/// Parses a duration such as `30s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration, e.g. 30s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        other => Err(format!("unknown duration unit {other:?}: use ms, s or m")),
    }
}

/// Checks that a share name is a DNS label (lowercase letters, digits, `-`; at most 63).
pub fn parse_share_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a valid share name: use 1-63 lowercase letters, digits and '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert!(parse_size("1.5Gi").is_err());
        assert!(parse_size("Gi").is_err());
        assert!(parse_size("10GB").is_err());
        assert!(parse_size("16Ei").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn share_names() {
        assert!(parse_share_name("media-1").is_ok());
        for bad in ["", "Media", "-a", "a-", "a_b", "a/b", &"x".repeat(64)] {
            assert!(parse_share_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_parses() {
        let c =
            Config::try_parse_from(["zd", "--root", "/tmp", "--capacity", "1Mi", "--read-only"])
                .unwrap();
        assert_eq!(c.capacity, Some(1 << 20));
        assert!(c.read_only);
        assert_eq!(c.share, "default");
        assert_eq!(c.http, HttpListen(Some("127.0.0.1:8080".parse().unwrap())));
        assert_eq!(parse_http("off"), Ok(HttpListen(None)));
        assert!(parse_http("8080").is_err());
        assert_eq!(
            (
                c.http_head_timeout,
                c.http_idle_timeout,
                c.http_max_connections
            ),
            (Duration::from_secs(30), Duration::from_secs(60), 4096)
        );
        assert!(Config::try_parse_from(["zd"]).is_err());
        assert_eq!(c.identity, IdentityChoice::Auto);
        let c = Config::try_parse_from([
            "zd",
            "--root",
            "/tmp",
            "--identity",
            "squash",
            "--root-owner",
            "0:0",
            "--root-mode",
            "0777",
        ])
        .unwrap();
        assert_eq!(
            (c.identity, c.root_owner, c.root_mode),
            (IdentityChoice::Squash, Some((0, 0)), Some(0o777))
        );
        let bad = Config::try_parse_from(["zd", "--root", "/tmp", "--identity", "nobody"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("posix") && bad.contains("squash"), "{bad}");
    }
}

//! Test helpers: an in-process dataplane on 127.0.0.1:0 and a raw HTTP/1.1 client.

#![allow(dead_code)]

pub mod rpc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeronas_dataplane::config::{Config, IoEngine};
use zeronas_dataplane::http::app::App;
use zeronas_dataplane::io::FallbackReason;
use zeronas_dataplane::runtime::RuntimeReport;
use zeronas_dataplane::server::Server;

/// A running in-process dataplane over a temp folder.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub root: tempfile::TempDir,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with the default config plus `extra` CLI arguments.
    pub async fn start(extra: &[&str]) -> TestServer {
        let root = tempfile::tempdir().expect("tempdir");
        Self::start_in(root, extra).await
    }

    /// Starts a server over an existing folder.
    pub async fn start_in(root: tempfile::TempDir, extra: &[&str]) -> TestServer {
        let root_arg = root.path().to_str().expect("utf-8 temp path").to_owned();
        let mut args = vec![
            "zeronas-dataplane",
            "--root",
            &root_arg,
            "--http",
            "127.0.0.1:0",
            "--drain-timeout",
            "5s",
        ];
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).expect("config");
        let report =
            RuntimeReport::detect(config.workers, false, config.rdma).expect("runtime report");
        let server = Server::bind(&config, report).await.expect("bind");
        let addr = server.http_addr().expect("addr");
        let metrics_addr = server.metrics_addr();
        let app = server.app();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let server = TestServer {
            addr,
            metrics_addr,
            root,
            app,
            stop: Some(stop),
            task: Some(task),
        };
        if config.io_engine == IoEngine::IoUring {
            // `make unit` runs the HTTP suites again with ZERONAS_IO_ENGINE=io_uring: make
            // sure they test the ring, not a silent fallback to epoll. A served request
            // proves the workers (and their rings) have started.
            if let Ok(mut s) = TcpStream::connect(server.addr).await {
                let _ = s
                    .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
                    .await;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            }
            assert_eq!(
                server
                    .app
                    .metrics
                    .fallbacks("http", FallbackReason::IoUringUnavailable),
                0,
                "io_uring was asked for and is unavailable"
            );
        }
        server
    }

    /// Path of a file inside the share root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Writes a file into the share root (creating folders).
    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, data).expect("write");
    }

    /// Sends one request and reads the response.
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        send(self.addr, method, target, headers, body).await
    }

    /// URL path of a file in the default share.
    pub fn file_url(rel: &str) -> String {
        format!("/v1/shares/default/files/{rel}")
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// A dataplane process this test started, with its `listening` line; stopped by its PID
/// when dropped, so a failing assertion does not leave it running.
pub struct DataplaneChild(pub std::process::Child, pub serde_json::Value);

impl std::ops::Deref for DataplaneChild {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for DataplaneChild {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for DataplaneChild {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

/// Starts the dataplane binary (optionally behind a wrapper such as `taskset -c 1`) on
/// 127.0.0.1:0 and returns it with the address from its "listening" line.
pub fn spawn_dataplane(
    wrapper: &[&str],
    root: &Path,
    extra: &[&str],
) -> (DataplaneChild, SocketAddr) {
    use std::io::BufRead;
    let bin = env!("CARGO_BIN_EXE_zeronas-dataplane");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = std::process::Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    };
    let mut child = command
        .arg("--root")
        .arg(root)
        .args(["--http", "127.0.0.1:0"])
        // Never the default 127.0.0.1:2049: tests run side by side.
        .args(if extra.contains(&"--nfs") {
            &[][..]
        } else {
            &["--nfs", "127.0.0.1:0"][..]
        })
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dataplane");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.wait();
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        panic!("no listening line ({e}): {line:?}; stderr:\n{stderr}")
    });
    assert_eq!(v["event"], "listening");
    let addr = v["http"]
        .as_str()
        .expect("http address")
        .parse()
        .expect("socket address");
    let child = DataplaneChild(child, v);
    (child, addr)
}

/// Stops a dataplane this test started (SIGTERM by its PID) and reaps it.
pub fn stop_child(child: DataplaneChild) {
    drop(child);
}

/// Runs a command as the operator's non-root user 65532 with no capabilities, as the
/// dataplane pod of a `squash` share runs (a wrapper for [`spawn_dataplane`]).
pub const AS_OPERATOR_USER: [&str; 8] = [
    "setpriv",
    "--reuid=65532",
    "--regid=65532",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
];

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `code` of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Builds a request with `Connection: close` and a `Content-Length` when there is a body.
pub fn build_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    let chunked = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if !chunked && (!body.is_empty() || method == "PUT") {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Sends one request on a new connection and reads until the server closes it.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    send_raw(
        addr,
        &build_request(method, target, headers, body),
        method == "HEAD",
    )
    .await
}

/// Sends raw bytes and parses the (single) response.
pub async fn send_raw(addr: SocketAddr, raw: &[u8], head: bool) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write request");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf))
        .await
        .expect("response within 30 s")
        .expect("read response");
    parse_response(&buf, head)
}

/// Reads one response from a keep-alive connection: the head, then `Content-Length` bytes
/// (none for HEAD or when absent). Bytes past it stay in `pending` for the next response.
pub async fn read_response(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    head: bool,
) -> HttpResponse {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) =
            response.parse(pending).expect("valid response head")
        {
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .unwrap_or(0);
            let body_len = if head { 0 } else { length };
            while pending.len() < head_len + body_len {
                read_more(stream, pending).await;
            }
            let rest = pending.split_off(head_len + body_len);
            let parsed = parse_response(pending, head);
            *pending = rest;
            return parsed;
        }
        read_more(stream, pending).await;
    }
}

async fn read_more(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut chunk = vec![0u8; 256 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
        .await
        .expect("data within 30 s")
        .expect("read");
    assert!(n > 0, "connection closed mid-response");
    pending.extend_from_slice(&chunk[..n]);
}

/// The value of a metric line (`name{labels} value`), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().expect("numeric metric"))
        .unwrap_or(0.0)
}

/// Fetches `/metrics` from `addr`.
pub async fn metrics_text(addr: SocketAddr) -> String {
    String::from_utf8(send(addr, "GET", "/metrics", &[], b"").await.body).expect("utf-8 metrics")
}

/// Parses one response; the body is what follows the head (checked against Content-Length).
pub fn parse_response(buf: &[u8], head: bool) -> HttpResponse {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(buf).expect("valid response head")
    else {
        panic!("incomplete response: {:?}", String::from_utf8_lossy(buf));
    };
    if response.code.is_some_and(|c| (100..200).contains(&c)) {
        // An interim response (100 Continue): the final one follows.
        return parse_response(&buf[head_len..], head);
    }
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let parsed = HttpResponse {
        status: response.code.expect("status"),
        headers,
        body: buf[head_len..].to_vec(),
    };
    if let (Some(len), false) = (parsed.header("content-length"), head) {
        assert_eq!(
            len.parse::<usize>().expect("numeric Content-Length"),
            parsed.body.len(),
            "body length vs Content-Length"
        );
    }
    parsed
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Every file name under `dir`, recursively.
pub fn all_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            out.push(entry.file_name().to_string_lossy().into_owned());
            if entry.file_type().expect("type").is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out
}

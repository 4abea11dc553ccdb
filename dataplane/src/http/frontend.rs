//! The zero-copy HTTP/1.1 front end.
//!
//! hyper writes every body through a user-space buffer, so plaintext HTTP/1.x connections
//! are accepted here first. This loop reads request heads itself (httparse), builds an
//! `http::Request`, and runs the same [`service::handle`] as the hyper path, so every HTTP
//! rule still lives in the planner. A plain GET or HEAD of a file skips the request: its
//! answer is the planner's, rendered once per file version (`PlanCache`). It then
//! executes the response itself, reading and writing through epoll or, with
//! `--io-engine io_uring`, the worker's ring ([`crate::io::uring`]):
//!
//! - file regions above the small-body threshold: head with `MSG_MORE`, body with
//!   `sendfile` ([`crate::io::sendfile`]);
//! - smaller file regions: one `pread` into a pooled buffer and one `writev` with the head;
//! - PUT bodies with a Content-Length: `splice` socket → pipe → file.
//!
//! Keep-alive, pipelining and HTTP/1.0 rules are handled here. The first request it does not
//! serve (HTTP/2 prior knowledge, `Expect: 100-continue`, chunked or unexpected request
//! bodies, upgrades, other methods) hands the whole connection, with the bytes already read
//! put back in front, to hyper for good; the reason is counted in
//! `zeronas_zero_copy_fallback_total`.

use std::io;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::api::SocketUpload;
use super::app::{App, Listener, MAX_HEAD_BYTES, MAX_HEADERS};
use super::auth::Access;
use super::body::Body;
use super::error::ApiError;
use super::observe::Exchange;
use super::plan::route::share_file_path;
use super::plan::{self, FileFacts, PlanBody, ReadRequest, parse_content_length};
use super::service;
use crate::io::idle::IdleTimeout;
use crate::io::sendfile::{self, SendError};
use crate::io::small::{self, BufferPool};
use crate::io::uring::{Ring, WriteBody, WriteBufs};
use crate::io::{FallbackReason, Transfer, TransferPath};
use crate::limits::ConnectionSlot;
use crate::metrics::Metrics;
use crate::share::SharePath;

/// File bodies up to this size go as `pread` + one `writev`; larger ones with sendfile.
/// Chosen with `make bench` (see the README): below it the extra syscalls of sendfile
/// (probe, `MSG_MORE` head, sendfile) cost more than copying the bytes.
pub const SMALL_BODY_MAX: u64 = 16 * 1024;

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Shared state of the front end.
pub struct FrontEnd {
    app: Arc<App>,
    listener: Listener,
    hyper: Arc<auto::Builder<TokioExecutor>>,
    buffers: Arc<BufferPool>,
    small_body_max: u64,
    shutdown: watch::Receiver<bool>,
    /// The worker's io_uring ring (`--io-engine io_uring`); `None`: epoll.
    ring: Option<Arc<Ring>>,
}

impl FrontEnd {
    /// A front end for `app`'s API listener; `hyper` serves handed-off connections,
    /// `shutdown` turns true when the server starts draining, and `ring`, when given, reads
    /// heads and writes responses instead of epoll.
    pub fn new(
        app: Arc<App>,
        listener: Listener,
        hyper: Arc<auto::Builder<TokioExecutor>>,
        shutdown: watch::Receiver<bool>,
        small_body_max: u64,
        ring: Option<Arc<Ring>>,
    ) -> Arc<Self> {
        let buffers = BufferPool::new(small_body_max.max(1) as usize, 256);
        Arc::new(Self {
            app,
            listener,
            hyper,
            buffers,
            small_body_max,
            shutdown,
            ring,
        })
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    request: Request<Empty<Bytes>>,
    len: usize,
    content_length: Option<u64>,
    keep_alive: bool,
    handoff: Option<FallbackReason>,
}

/// Why a head could not be parsed.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    TooLarge,
    Malformed(&'static str),
}

/// Parses a request head; `Ok(None)` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("bad method"))?;
    let target = parsed.path.unwrap_or_default();
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    let mut content_length: Option<u64> = None;
    let (mut close, mut keep_alive_token, mut upgrade) = (false, false, false);
    let mut handoff = None;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Malformed("bad header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HeadError::Malformed("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            let n =
                parse_content_length(h.value).ok_or(HeadError::Malformed("bad Content-Length"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(HeadError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            handoff = Some(FallbackReason::ChunkedBody);
        } else if name == header::EXPECT {
            handoff = handoff.or(Some(FallbackReason::ExpectContinue));
        } else if name == header::UPGRADE {
            upgrade = true;
        } else if name == header::CONNECTION {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        }
        map.append(name, value);
    }
    let has_body = content_length.is_some_and(|n| n > 0);
    handoff = handoff.or(match method {
        _ if upgrade || !target.starts_with('/') => Some(FallbackReason::Unsupported),
        Method::GET | Method::HEAD | Method::DELETE if has_body => {
            Some(FallbackReason::RequestBody)
        }
        Method::GET | Method::HEAD | Method::DELETE | Method::PUT => None,
        _ => Some(FallbackReason::Unsupported),
    });
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
    let uri = target
        .parse::<http::Uri>()
        .map_err(|_| HeadError::Malformed("bad request target"))?;
    let mut request = Request::new(Empty::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Ok(Some(Head {
        request,
        len,
        content_length,
        keep_alive,
        handoff,
    }))
}

/// Serves one accepted connection until it closes, or hands it to hyper.
pub async fn serve_connection(
    fe: Arc<FrontEnd>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    slot: ConnectionSlot,
) {
    // Held until the connection ends, including after a handoff to hyper.
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    let mut conn = Connection {
        fe,
        stream,
        buf: BytesMut::with_capacity(8 * 1024),
        head: Vec::with_capacity(512),
        chunk: Vec::new(),
        path: Vec::new(),
        socket_dup: None,
    };
    match conn.run().await {
        Ok(Next::Close) => {}
        Ok(Next::Handoff(reason)) => {
            conn.fe.app.metrics.record_fallback("http", reason);
            let Connection {
                fe, stream, buf, ..
            } = conn;
            let io = IdleTimeout::new(
                PrefixedIo {
                    prefix: buf.freeze(),
                    stream,
                },
                fe.app.limits.idle_timeout,
            );
            let (app, listener) = (Arc::clone(&fe.app), fe.listener);
            let service = service_fn(move |req| service::handle(Arc::clone(&app), listener, req));
            let served = fe
                .hyper
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            if let Err(e) = watcher.watch(served).await {
                tracing::debug!(peer = %peer, error = %e, "handed-off connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(peer = %peer, error = %e, "connection closed"),
    }
}

enum Next {
    Close,
    Handoff(FallbackReason),
}

struct Connection {
    fe: Arc<FrontEnd>,
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The response head being written, reused from one response to the next.
    head: Vec<u8>,
    /// io_uring only: what the ring receives into before the bytes join `buf`.
    chunk: Vec<u8>,
    /// The decoded path of a plain read, reused from one request to the next.
    path: Vec<u8>,
    socket_dup: Option<Arc<OwnedFd>>,
}

impl Connection {
    async fn run(&mut self) -> io::Result<Next> {
        let mut shutdown = self.fe.shutdown.clone();
        let (head_timeout, idle_timeout) = (
            self.fe.app.limits.head_timeout,
            self.fe.app.limits.idle_timeout,
        );
        'requests: loop {
            // The whole head must arrive by this deadline, however the bytes trickle in.
            let head_deadline = tokio::time::Instant::now() + head_timeout;
            let head = loop {
                if self.buf.starts_with(HTTP2_PREFACE) {
                    return Ok(Next::Handoff(FallbackReason::Http2));
                }
                if !self.buf.is_empty()
                    && !HTTP2_PREFACE
                        .starts_with(&self.buf[..self.buf.len().min(HTTP2_PREFACE.len())])
                {
                    if let Some(read) = plain_read(&self.buf, self.fe.app.share.name()) {
                        match self.serve_plain_read(read).await? {
                            Some(true) => continue 'requests,
                            Some(false) => {
                                self.linger_close().await;
                                return Ok(Next::Close);
                            }
                            None => {}
                        }
                    }
                    match parse_head(&self.buf) {
                        Ok(Some(head)) => break head,
                        Ok(None) => {}
                        Err(HeadError::TooLarge) => {
                            return self
                                .reject(
                                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                    "too many headers",
                                )
                                .await;
                        }
                        Err(HeadError::Malformed(why)) => {
                            return self.reject(StatusCode::BAD_REQUEST, why).await;
                        }
                    }
                }
                if self.buf.len() >= MAX_HEAD_BYTES {
                    return self
                        .reject(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "request head too large",
                        )
                        .await;
                }
                let idle = self.buf.is_empty();
                let read = tokio::select! {
                    read = tokio::time::timeout_at(head_deadline, self.read_more()) => read,
                    _ = shutdown.wait_for(|stop| *stop), if idle => return Ok(Next::Close),
                };
                match read {
                    Ok(Ok(0)) => return Ok(Next::Close),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    // Idle between requests: close quietly.
                    Err(_) if idle => return Ok(Next::Close),
                    Err(_) => {
                        return self
                            .reject(
                                StatusCode::REQUEST_TIMEOUT,
                                "the request head took too long",
                            )
                            .await;
                    }
                }
            };
            if let Some(reason) = head.handoff {
                return Ok(Next::Handoff(reason));
            }
            let Head {
                request,
                len,
                content_length,
                mut keep_alive,
                ..
            } = head;
            self.buf.advance(len);
            let method = request.method().clone();
            let consumed = AtomicU64::new(0);
            let body_len = if method == Method::PUT {
                content_length.unwrap_or(0)
            } else {
                0
            };
            let upload = (method == Method::PUT).then(|| {
                let take = (body_len as usize).min(self.buf.len());
                SocketUpload {
                    stream: &self.stream,
                    prefix: self.buf.split_to(take).freeze(),
                    len: body_len,
                    consumed: &consumed,
                    idle: idle_timeout,
                }
            });
            let (response, mut exchange) =
                service::respond(Arc::clone(&self.fe.app), self.fe.listener, request, upload).await;
            if consumed.load(Ordering::Relaxed) < body_len {
                // The handler answered before reading the body: it is still on the wire.
                keep_alive = false;
            }
            if *self.fe.shutdown.borrow() {
                keep_alive = false;
            }
            exchange.sent(self.write_response(response, keep_alive).await?);
            drop(exchange);
            if !keep_alive {
                self.linger_close().await;
                return Ok(Next::Close);
            }
        }
    }

    /// Answers a request the front end could not parse (or that came too slowly), then
    /// closes. Counted like any request (route `invalid`), with a request id to quote.
    async fn reject(&mut self, status: StatusCode, why: &str) -> io::Result<Next> {
        let code = match status {
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header_too_large",
            _ => "bad_request",
        };
        let request_id = service::request_id(&HeaderMap::new());
        let mut exchange =
            Exchange::start(Arc::clone(&self.fe.app.metrics), Instant::now(), "OTHER");
        let response =
            service::error_response(&self.fe.app, &ApiError::new(status, code, why), &request_id);
        exchange.respond("invalid", status.as_u16());
        tracing::info!(request_id = %request_id, status = status.as_u16(), reason = why, "request refused by the front end");
        exchange.sent(self.write_response(response, false).await?);
        drop(exchange);
        self.linger_close().await;
        Ok(Next::Close)
    }

    /// Reads what the client sent next into `buf`: 0 at end of stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        let Some(ring) = self.fe.ring.as_ref().filter(|r| r.alive()).map(Arc::clone) else {
            return self.stream.read_buf(&mut self.buf).await;
        };
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.reserve(8 * 1024);
        let (mut chunk, read) = ring.recv(self.stream.as_raw_fd(), chunk).await;
        self.buf.extend_from_slice(&chunk);
        chunk.clear();
        self.chunk = chunk;
        read
    }

    /// Writes a head and a body held in memory; hands the body back (a pooled buffer goes
    /// back to its pool).
    async fn send(
        &mut self,
        head: Vec<u8>,
        body: WriteBody,
    ) -> (Vec<u8>, WriteBody, io::Result<()>) {
        let idle = self.fe.app.limits.idle_timeout;
        match self.fe.ring.as_ref().filter(|r| r.alive()).map(Arc::clone) {
            Some(ring) => {
                let (bufs, sent) = ring
                    .write_all(self.stream.as_raw_fd(), WriteBufs::new(head, body), idle)
                    .await;
                (bufs.head, bufs.body, sent)
            }
            None => {
                let sent = match &body {
                    WriteBody::None => sendfile::write_all(&self.stream, &head, idle).await,
                    WriteBody::Bytes(b) => small::writev_all(&self.stream, &head, b, idle).await,
                    WriteBody::Pooled(v, len) => {
                        small::writev_all(&self.stream, &head, &v[..*len], idle).await
                    }
                };
                (head, body, sent)
            }
        }
    }

    /// Closes our side, then reads and drops what the client is still sending for a short
    /// while, so it gets the error response instead of a reset.
    async fn linger_close(&mut self) {
        const LINGER_BYTES: usize = 1 << 20;
        const LINGER_TIME: std::time::Duration = std::time::Duration::from_millis(500);
        let _ = rustix::net::shutdown(&self.stream, rustix::net::Shutdown::Write);
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        let mut drained = 0;
        let mut sink = [0u8; 16 * 1024];
        while drained < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }

    /// Writes a response; `Ok(n)`: the whole response went out, `n` body bytes.
    async fn write_response(
        &mut self,
        response: Response<Body>,
        keep_alive: bool,
    ) -> io::Result<u64> {
        let (parts, body) = response.into_parts();
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        );
        for (name, value) in parts.headers.iter() {
            push_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
        finish_head(&mut head, keep_alive);
        match body {
            Body::Empty | Body::Full(None) => {
                self.send_memory(head, WriteBody::None).await.map(|()| 0)
            }
            Body::Full(Some(bytes)) => {
                let len = bytes.len() as u64;
                self.send_memory(head, WriteBody::Bytes(bytes))
                    .await
                    .map(|()| len)
            }
            Body::File(file_body) => {
                let (file, offset, len) = file_body.into_region();
                self.send_region(head, &file, offset, len)
                    .await
                    .map(|()| len)
            }
        }
    }

    /// Serves a plain GET or HEAD of a file without building a request: the response head
    /// is the planner's answer for this file version, rendered once and cached
    /// ([`PlanCache`]). `Ok(None)`: not served (no token, not in the lookup cache, not a
    /// regular file...); the general path answers it, errors included.
    async fn serve_plain_read(&mut self, read: PlainRead) -> io::Result<Option<bool>> {
        let started = Instant::now();
        let method = if read.head { Method::HEAD } else { Method::GET };
        let app = Arc::clone(&self.fe.app);
        let authorization = read.authorization.clone().map(|r| &self.buf[r]);
        if app.tokens.check(authorization, Access::Read).is_err() {
            return Ok(None);
        }
        let encoded = std::str::from_utf8(&self.buf[read.encoded.clone()]).unwrap_or("\0");
        let Ok(path) = SharePath::decode_into(encoded, std::mem::take(&mut self.path)) else {
            return Ok(None);
        };
        let opened = app.share.open_file_cached(&path);
        let rendered = match &opened {
            Some(Ok((_, stat))) => {
                self.head.clear();
                PlanCache::render(&path, stat, &mut self.head)
            }
            _ => false,
        };
        self.path = path.into_bytes();
        let (Some(Ok((file, stat))), true) = (opened, rendered) else {
            return Ok(None);
        };
        let len = stat.st_size as u64;
        let mut head = std::mem::take(&mut self.head);
        let request_id = head.len() + REQUEST_ID_NAME.len() + 2;
        match read.request_id.clone() {
            Some(r) => push_header(&mut head, REQUEST_ID_NAME, &self.buf[r]),
            None => push_new_request_id(&mut head),
        }
        let request_id = request_id..head.len() - 2;
        let keep_alive = read.keep_alive && !*self.fe.shutdown.borrow();
        finish_head(&mut head, keep_alive);
        let mut exchange = Exchange::start(
            &*app.metrics,
            started,
            if read.head { "HEAD" } else { "GET" },
        );
        exchange.respond("files", 200);
        if tracing::enabled!(tracing::Level::INFO) {
            tracing::info!(
                request_id = %String::from_utf8_lossy(&head[request_id]),
                method = %method,
                path = %String::from_utf8_lossy(&self.buf[read.raw_path.clone()]),
                status = 200,
                bytes = len,
                duration_us = started.elapsed().as_micros() as u64,
                "request"
            );
        }
        self.buf.advance(read.len);
        let file = Arc::new(file);
        if read.head {
            self.send_memory(head, WriteBody::None).await?;
        } else {
            self.send_region(head, &file, 0, len).await?;
            exchange.sent(len);
        }
        Ok(Some(keep_alive))
    }

    /// Sends a head and `len` bytes of `file` from `offset`: small regions read into a
    /// pooled buffer and written with the head in one `writev`, larger ones by sendfile.
    async fn send_region(
        &mut self,
        head: Vec<u8>,
        file: &Arc<std::fs::File>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        if len > self.fe.small_body_max {
            let result = self.send_file(&head, file, offset, len).await;
            self.head = head;
            return result;
        }
        let mut buf = self.fe.buffers.take();
        match read_small(file, offset, &mut buf[..len as usize], &self.fe.app.metrics).await {
            Ok(n) if n as u64 == len => self.send_memory(head, WriteBody::Pooled(buf, n)).await,
            other => {
                self.fe.buffers.give(buf);
                self.head = head;
                match other {
                    Err(e) => Err(e),
                    Ok(_) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file truncated before send",
                    )),
                }
            }
        }
    }

    /// Sends a head and a body held in memory, then keeps the head buffer for the next
    /// response and gives a pooled body buffer back.
    async fn send_memory(&mut self, head: Vec<u8>, body: WriteBody) -> io::Result<()> {
        let (head, body, sent) = self.send(head, body).await;
        self.head = head;
        if let WriteBody::Pooled(buf, len) = body {
            self.fe.buffers.give(buf);
            if sent.is_ok() {
                // A choice, not a fallback: counted by reason, not timed.
                let transfer = Transfer::single(
                    TransferPath::Copy,
                    len as u64,
                    Some(FallbackReason::SmallBody),
                );
                self.fe.app.metrics.record_transfer("http", &transfer);
            }
        }
        sent
    }

    /// Sends `head` with `MSG_MORE`, then `len` bytes of `file` from `offset` by sendfile.
    async fn send_file(
        &mut self,
        head: &[u8],
        file: &Arc<std::fs::File>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let idle = self.fe.app.limits.idle_timeout;
        let metrics = &self.fe.app.metrics;
        sendfile::send_head_more(&self.stream, head, idle).await?;
        match sendfile::send_region(&self.stream, &mut self.socket_dup, file, offset, len, idle)
            .await
        {
            Ok(transfer) => {
                metrics.record_transfer("http", &transfer);
                Ok(())
            }
            Err(SendError::Truncated { sent, expected }) => {
                metrics.record_transfer(
                    "http",
                    &Transfer::single(TransferPath::Sendfile, sent, None),
                );
                tracing::warn!(
                    sent,
                    expected,
                    "file truncated during send; closing the connection"
                );
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file truncated during send",
                ))
            }
            Err(SendError::Io { sent, source }) => {
                metrics.record_transfer(
                    "http",
                    &Transfer::single(TransferPath::Sendfile, sent, None),
                );
                Err(source)
            }
        }
    }
}

/// Reads a small region: inline when the pages are cached (`RWF_NOWAIT`), else on the
/// blocking pool (counted as a page-cache miss when the probe said so).
async fn read_small(
    file: &Arc<std::fs::File>,
    offset: u64,
    buf: &mut [u8],
    metrics: &Metrics,
) -> io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags};
    let want = buf.len();
    match rustix::io::preadv2(
        &**file,
        &mut [io::IoSliceMut::new(buf)],
        offset,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) if n == want => return Ok(n),
        // Not (all) cached: a miss. A filesystem without RWF_NOWAIT cannot tell: no miss.
        Ok(_) | Err(Errno::AGAIN) => metrics.page_cache_miss("http"),
        Err(Errno::OPNOTSUPP) | Err(Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let f = Arc::clone(file);
    let data = tokio::task::spawn_blocking(move || small::pread_exact_or_short(&f, offset, want))
        .await
        .map_err(io::Error::other)??;
    buf[..data.len()].copy_from_slice(&data);
    Ok(data.len())
}

/// Appends `name: value\r\n`.
fn push_header(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Appends a request-id header with a new id.
fn push_new_request_id(head: &mut Vec<u8>) {
    head.extend_from_slice(REQUEST_ID_NAME);
    head.extend_from_slice(b": ");
    service::push_new_request_id(head);
    head.extend_from_slice(b"\r\n");
}

/// Appends `Date` and `Connection`, and ends the head.
fn finish_head(head: &mut Vec<u8>, keep_alive: bool) {
    head.extend_from_slice(b"date: ");
    push_http_date(head);
    head.extend_from_slice(if keep_alive {
        b"\r\nconnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nconnection: close\r\n\r\n"
    });
}

/// Appends the `Date` header value, formatted once per second per thread.
fn push_http_date(head: &mut Vec<u8>) {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs || cache.1.is_empty() {
            *cache = (secs, httpdate::fmt_http_date(now));
        }
        head.extend_from_slice(cache.1.as_bytes());
    });
}

/// The request-id header's name, as written.
const REQUEST_ID_NAME: &[u8] = service::REQUEST_ID.as_bytes();

/// A GET or HEAD of a share file with nothing that could change the planner's answer
/// (no Range, no conditional, no body): positions in the read buffer, nothing copied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlainRead {
    /// Length of the request head.
    len: usize,
    /// True for HEAD.
    head: bool,
    keep_alive: bool,
    /// The percent-encoded share path (decoded, and refused if hostile, when served).
    encoded: std::ops::Range<usize>,
    /// The target's path as sent (for the access log, as the general path logs it).
    raw_path: std::ops::Range<usize>,
    authorization: Option<std::ops::Range<usize>>,
    /// The client's request id, when valid.
    request_id: Option<std::ops::Range<usize>>,
}

/// Recognises a complete plain read of a file of `share` at the start of `buf`; `None`
/// for anything else (incomplete, other methods or routes, headers the planner would
/// look at, anything malformed): [`parse_head`] then decides.
fn plain_read(buf: &[u8], share: &str) -> Option<PlainRead> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = parsed.parse(buf) else {
        return None;
    };
    let head = match parsed.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let offset = |value: &[u8]| {
        let start = value.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + value.len()
    };
    let target = parsed.path?;
    // Only targets `http::Uri` takes as they are: anything else (a fragment, `<`, `"`, ...)
    // is for the general path to accept or refuse.
    if !target.bytes().all(plain_target_byte) {
        return None;
    }
    let encoded = offset(share_file_path(target, share)?.as_bytes());
    let raw_path = offset(target.split_once('?').map_or(target, |(p, _)| p).as_bytes());
    let (mut close, mut keep_alive_token) = (false, false);
    let (mut authorization, mut request_id) = (None, None);
    let (mut seen_authorization, mut seen_request_id) = (false, false);
    for h in parsed.headers.iter() {
        // What `HeaderValue::from_bytes` refuses goes to the general path (a 400 there).
        if h.value.iter().any(|&b| (b < 32 && b != b'\t') || b == 127) {
            return None;
        }
        let name = h.name.as_bytes();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") {
            if parse_content_length(h.value) != Some(0) {
                return None;
            }
        } else if [
            "transfer-encoding",
            "expect",
            "upgrade",
            "range",
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
            "if-range",
        ]
        .into_iter()
        .any(is)
        {
            return None;
        } else if is("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return None;
                }
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is("authorization") {
            // The general path reads the first of repeated headers.
            if !std::mem::replace(&mut seen_authorization, true) {
                authorization = Some(offset(h.value));
            }
        } else if is(service::REQUEST_ID) && !std::mem::replace(&mut seen_request_id, true) {
            request_id = service::valid_request_id(h.value).then(|| offset(h.value));
        }
    }
    let keep_alive = !close && (parsed.version == Some(1) || keep_alive_token);
    Some(PlainRead {
        len,
        head,
        keep_alive,
        encoded,
        raw_path,
        authorization,
        request_id,
    })
}

/// Bytes of a request target that `http::Uri` accepts as they are: unreserved,
/// sub-delims, `:`, `@`, `/`, `?` and `%` (RFC 3986).
fn plain_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// Most file versions a worker keeps rendered heads for; the whole cache is dropped when
/// it is full (a version that changes gets a new key, so nothing stale is ever served).
const PLAN_CACHE_ENTRIES: usize = 4096;

/// The planner's answer to a plain GET of one file version (status line, ETag,
/// Last-Modified, Content-Type, Content-Length...), rendered once per worker thread.
struct PlanCache;

/// What makes two answers the same: the file version and the name's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileVersion {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content_type: &'static str,
}

impl PlanCache {
    /// Appends the head of the 200 answer for `path` opened with `stat`; false when the
    /// planner's answer is not a plain 200 of the whole file.
    fn render(path: &SharePath, stat: &rustix::fs::Stat, head: &mut Vec<u8>) -> bool {
        thread_local! {
            static PLANS: std::cell::RefCell<std::collections::HashMap<FileVersion, Box<[u8]>>> =
                std::cell::RefCell::new(std::collections::HashMap::new());
        }
        let content_type = plan::content_type_name(path);
        let key = FileVersion {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size,
            mtime: (stat.st_mtime, stat.st_mtime_nsec as i64),
            ctime: (stat.st_ctime, stat.st_ctime_nsec as i64),
            content_type,
        };
        PLANS.with(|plans| {
            let mut plans = plans.borrow_mut();
            if let Some(rendered) = plans.get(&key) {
                head.extend_from_slice(rendered);
                return true;
            }
            let len = stat.st_size as u64;
            let facts = FileFacts {
                len,
                validators: crate::share::validators(stat),
                content_type: HeaderValue::from_static(content_type),
            };
            let answer = plan::plan_read(&ReadRequest::default(), &facts);
            if answer.status != StatusCode::OK || answer.body != (PlanBody::File { offset: 0, len })
            {
                return false;
            }
            let mut rendered = b"HTTP/1.1 200 OK\r\n".to_vec();
            for (name, value) in answer.headers.iter() {
                push_header(&mut rendered, name.as_str().as_bytes(), value.as_bytes());
            }
            push_header(&mut rendered, b"content-length", len.to_string().as_bytes());
            head.extend_from_slice(&rendered);
            if plans.len() >= PLAN_CACHE_ENTRIES {
                plans.clear();
            }
            plans.insert(key, rendered.into_boxed_slice());
            true
        })
    }
}

/// A connection with bytes already read put back in front, for the hyper handoff.
struct PrefixedIo {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for PrefixedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, out)
    }
}

impl AsyncWrite for PrefixedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(raw: &str) -> Head {
        parse_head(raw.as_bytes())
            .expect("parses")
            .expect("complete")
    }

    #[test]
    fn plain_reads_are_recognised_and_everything_else_is_not() {
        let buf = b"GET /v1/shares/s/files/a/b.txt?x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer k\r\nX-Request-ID: r-1\r\n\r\nGET /next";
        let read = plain_read(buf, "s").expect("a plain read");
        assert_eq!(&buf[..read.len], &buf[..buf.len() - 9]);
        assert!(!read.head && read.keep_alive);
        assert_eq!(&buf[read.encoded.clone()], b"a/b.txt");
        assert_eq!(&buf[read.authorization.clone().unwrap()], b"Bearer k");
        assert_eq!(&buf[read.request_id.clone().unwrap()], b"r-1");
        let head = plain_read(b"HEAD /v1/shares/s/files/f HTTP/1.0\r\n\r\n", "s").unwrap();
        assert!(head.head && !head.keep_alive);
        let with_zero_body = b"GET /v1/shares/s/files/f HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert!(plain_read(with_zero_body, "s").is_some());
        for other in [
            "GET /v1/shares/s/files/f HTTP/1.1\r\n",
            "GET /v1/shares/other/files/f HTTP/1.1\r\n\r\n",
            "GET /v1/shares/s/list HTTP/1.1\r\n\r\n",
            "GET /v1/shares/s/files/ HTTP/1.1\r\n\r\n",
            "PUT /v1/shares/s/files/f HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "DELETE /v1/shares/s/files/f HTTP/1.1\r\n\r\n",
            "GET /v1/shares/s/files/f HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            "GET /v1/shares/s/files/f HTTP/1.1\r\nif-none-match: *\r\n\r\n",
            "GET /v1/shares/s/files/f HTTP/1.1\r\nIf-Modified-Since: x\r\n\r\n",
            "GET /v1/shares/s/files/f HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            "GET /v1/shares/s/files/f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /v1/shares/s/files/f HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
            "GET /v1/shares/s/files/f HTTP/1.1\r\nX-Bad: a\x01b\r\n\r\n",
            "GET /v1/shares/s/files/a#b HTTP/1.1\r\n\r\n",
            "GET /v1/shares/s/files/a<b HTTP/1.1\r\n\r\n",
            "GET /v1/shares/s/files/a?q=\"x\" HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(plain_read(other.as_bytes(), "s"), None, "{other:?}");
        }
        // A hostile path is recognised here and refused when decoded (serve_plain_read then
        // leaves it to the general path, which answers 400 invalid_path).
        let hostile = plain_read(b"GET /v1/shares/s/files/%2e%2e/x HTTP/1.1\r\n\r\n", "s");
        assert!(hostile.is_some());
        let bad_id = b"GET /v1/shares/s/files/f HTTP/1.1\r\nX-Request-ID: has space\r\nX-Request-ID: ok\r\n\r\n";
        assert_eq!(plain_read(bad_id, "s").unwrap().request_id, None);
        let twice = b"GET /v1/shares/s/files/f HTTP/1.1\r\nAuthorization: first\r\nAuthorization: second\r\n\r\n";
        let read = plain_read(twice, "s").unwrap();
        assert_eq!(&twice[read.authorization.unwrap()], b"first");
    }

    #[test]
    fn the_cached_answer_is_the_planners_and_a_new_version_gets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(&file, b"{}").unwrap();
        let stat = rustix::fs::stat(&file).unwrap();
        let path = SharePath::from_encoded("a.json").unwrap();
        let (mut first, mut again) = (Vec::new(), Vec::new());
        assert!(PlanCache::render(&path, &stat, &mut first));
        assert!(PlanCache::render(&path, &stat, &mut again));
        assert_eq!(first, again);
        let text = String::from_utf8(first.clone()).unwrap();
        let facts = FileFacts {
            len: 2,
            validators: crate::share::validators(&stat),
            content_type: HeaderValue::from_static("application/json"),
        };
        let planned = plan::plan_read(&ReadRequest::default(), &facts);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        for (name, value) in planned.headers.iter() {
            let line = format!("{}: {}\r\n", name, value.to_str().unwrap());
            assert!(text.contains(&line), "{line:?} missing from {text}");
        }
        assert!(text.contains("content-length: 2\r\n"));
        // The same inode under another name has another content type.
        let mut other = Vec::new();
        assert!(PlanCache::render(
            &SharePath::from_encoded("a.txt").unwrap(),
            &stat,
            &mut other
        ));
        assert!(
            String::from_utf8(other)
                .unwrap()
                .contains("content-type: text/plain")
        );
        // A rewrite is a new version: new length, new ETag.
        std::fs::write(&file, b"{\"k\": 1}").unwrap();
        let changed = rustix::fs::stat(&file).unwrap();
        let mut after = Vec::new();
        assert!(PlanCache::render(&path, &changed, &mut after));
        let after = String::from_utf8(after).unwrap();
        assert!(after.contains("content-length: 8\r\n"), "{after}");
        assert_ne!(after, text);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn handoff_reasons() {
        let reason = |raw: &str| head(raw).handoff;
        assert_eq!(reason("GET /a HTTP/1.1\r\n\r\n"), None);
        assert_eq!(reason("PUT /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), None);
        assert_eq!(
            reason("PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(FallbackReason::ChunkedBody)
        );
        assert_eq!(
            reason("PUT /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
            Some(FallbackReason::ExpectContinue)
        );
        assert_eq!(
            reason("GET /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            Some(FallbackReason::RequestBody)
        );
        assert_eq!(
            reason("POST /a HTTP/1.1\r\n\r\n"),
            Some(FallbackReason::Unsupported)
        );
        assert_eq!(
            reason("GET /a HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"),
            Some(FallbackReason::Unsupported)
        );
        assert_eq!(
            reason("GET http://x/a HTTP/1.1\r\n\r\n"),
            Some(FallbackReason::Unsupported)
        );
    }

    #[test]
    fn bad_heads() {
        assert!(parse_head(b"GET / HTTP/1.1\r\n").unwrap().is_none());
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"\x00\x01 nonsense\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).err(),
            Some(HeadError::TooLarge)
        );
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
            let _ = plain_read(&bytes, "s");
        }

        #[test]
        fn mutated_heads_never_panic(cut in 0usize..80, byte in any::<u8>(), at in 0usize..80) {
            let mut raw = b"PUT /v1/shares/default/files/a%20b HTTP/1.1\r\nContent-Length: 10\r\nIf-Match: \"x\"\r\n\r\n".to_vec();
            if at < raw.len() { raw[at] = byte; }
            raw.truncate(cut.max(1).min(raw.len()));
            let _ = parse_head(&raw);
            let _ = plain_read(&raw, "s");
        }

        #[test]
        fn mutated_plain_reads_never_panic(cut in 0usize..90, byte in any::<u8>(), at in 0usize..90) {
            let mut raw = b"GET /v1/shares/s/files/a%20b HTTP/1.1\r\nAuthorization: Bearer t\r\nX-Request-ID: q\r\n\r\n".to_vec();
            if at < raw.len() { raw[at] = byte; }
            raw.truncate(cut.max(1).min(raw.len()));
            if let Some(read) = plain_read(&raw, "s") {
                prop_assert!(read.len <= raw.len());
                let _ = read.authorization.map(|r| &raw[r]);
                let _ = read.request_id.map(|r| &raw[r]);
            }
        }
    }
}

//! The zero-copy HTTP/1.1 front end.
//!
//! hyper writes every body through a user-space buffer, so plaintext HTTP/1.x connections
//! are accepted here first. This loop reads request heads itself (httparse), builds an
//! `http::Request`, and runs the same [`service::handle`] as the hyper path, so every HTTP
//! rule still lives in the planner. It then executes the response itself:
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
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

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
use super::body::Body;
use super::error::ApiError;
use super::plan::parse_content_length;
use super::service;
use crate::io::idle::IdleTimeout;
use crate::io::sendfile::{self, SendError};
use crate::io::small::{self, BufferPool};
use crate::io::{FallbackReason, Transfer, TransferPath};
use crate::limits::ConnectionSlot;

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
}

impl FrontEnd {
    /// A front end for `app`'s API listener; `hyper` serves handed-off connections and
    /// `shutdown` turns true when the server starts draining.
    pub fn new(
        app: Arc<App>,
        listener: Listener,
        hyper: Arc<auto::Builder<TokioExecutor>>,
        shutdown: watch::Receiver<bool>,
        small_body_max: u64,
    ) -> Arc<Self> {
        let buffers = BufferPool::new(small_body_max.max(1) as usize, 256);
        Arc::new(Self {
            app,
            listener,
            hyper,
            buffers,
            small_body_max,
            shutdown,
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
            let service =
                service_fn(move |req| service::handle(Arc::clone(&app), listener, req, None));
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
    buf: BytesMut,
    socket_dup: Option<Arc<OwnedFd>>,
}

impl Connection {
    async fn run(&mut self) -> io::Result<Next> {
        let mut shutdown = self.fe.shutdown.clone();
        let (head_timeout, idle_timeout) = (
            self.fe.app.limits.head_timeout,
            self.fe.app.limits.idle_timeout,
        );
        loop {
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
                    read = tokio::time::timeout_at(head_deadline, self.stream.read_buf(&mut self.buf)) => read,
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
            let Ok(response) =
                service::handle(Arc::clone(&self.fe.app), self.fe.listener, request, upload).await;
            if consumed.load(Ordering::Relaxed) < body_len {
                // The handler answered before reading the body: it is still on the wire.
                keep_alive = false;
            }
            if *self.fe.shutdown.borrow() {
                keep_alive = false;
            }
            self.write_response(response, keep_alive).await?;
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
        let response = service::error_response(&ApiError::new(status, code, why), &request_id);
        self.fe
            .app
            .metrics
            .observe_refused_request(status.as_u16(), 0.0);
        tracing::info!(request_id = %request_id, status = status.as_u16(), reason = why, "request refused by the front end");
        self.write_response(response, false).await?;
        self.linger_close().await;
        Ok(Next::Close)
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

    async fn write_response(
        &mut self,
        response: Response<Body>,
        keep_alive: bool,
    ) -> io::Result<()> {
        let (parts, body) = response.into_parts();
        let mut head = Vec::with_capacity(512);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        );
        for (name, value) in parts.headers.iter() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        let _ = write!(head, "date: {}\r\n", http_date());
        head.extend_from_slice(if keep_alive {
            b"connection: keep-alive\r\n\r\n"
        } else {
            b"connection: close\r\n\r\n"
        });

        let idle = self.fe.app.limits.idle_timeout;
        match body {
            Body::Empty | Body::Full(None) => sendfile::write_all(&self.stream, &head, idle).await,
            Body::Full(Some(bytes)) => small::writev_all(&self.stream, &head, &bytes, idle).await,
            Body::File(file_body) => {
                let (file, offset, len) = file_body.into_region();
                let metrics = &self.fe.app.metrics;
                if len <= self.fe.small_body_max {
                    let mut buf = self.fe.buffers.take();
                    let read = read_small(&file, offset, &mut buf[..len as usize]).await;
                    let result = match read {
                        Ok(n) if n as u64 == len => {
                            small::writev_all(&self.stream, &head, &buf[..n], idle).await
                        }
                        Ok(_) => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file truncated before send",
                        )),
                        Err(e) => Err(e),
                    };
                    self.fe.buffers.give(buf);
                    result?;
                    // A choice, not a fallback: counted by reason, not timed.
                    let transfer =
                        Transfer::single(TransferPath::Copy, len, Some(FallbackReason::SmallBody));
                    metrics.record_transfer("http", &transfer);
                    Ok(())
                } else {
                    sendfile::send_head_more(&self.stream, &head, idle).await?;
                    match sendfile::send_region(
                        &self.stream,
                        &mut self.socket_dup,
                        &file,
                        offset,
                        len,
                        idle,
                    )
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
        }
    }
}

/// Reads a small region: inline when the pages are cached (`RWF_NOWAIT`), else on the
/// blocking pool.
async fn read_small(file: &Arc<std::fs::File>, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags};
    let want = buf.len();
    match rustix::io::preadv2(
        &**file,
        &mut [io::IoSliceMut::new(buf)],
        offset,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) if n == want => return Ok(n),
        Ok(_) | Err(Errno::AGAIN) | Err(Errno::OPNOTSUPP) | Err(Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let f = Arc::clone(file);
    let data = tokio::task::spawn_blocking(move || small::pread_exact_or_short(&f, offset, want))
        .await
        .map_err(io::Error::other)??;
    buf[..data.len()].copy_from_slice(&data);
    Ok(data.len())
}

/// The `Date` header value, formatted once per second per thread.
fn http_date() -> String {
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
        cache.1.clone()
    })
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
        }

        #[test]
        fn mutated_heads_never_panic(cut in 0usize..80, byte in any::<u8>(), at in 0usize..80) {
            let mut raw = b"PUT /v1/shares/default/files/a%20b HTTP/1.1\r\nContent-Length: 10\r\nIf-Match: \"x\"\r\n\r\n".to_vec();
            if at < raw.len() { raw[at] = byte; }
            raw.truncate(cut.max(1).min(raw.len()));
            let _ = parse_head(&raw);
        }
    }
}

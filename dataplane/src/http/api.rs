//! The file operations behind each route: read, upload, delete, list, stats.
//!
//! Each handler does its filesystem work on the blocking pool through [`Share`] and
//! returns a [`Reply`]: a plan from the planner plus the opened file a file-region plan
//! refers to.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::app::App;
use super::error::ApiError;
use super::plan::{self, FileFacts, Preconditions, ReadRequest, ResponsePlan};
use crate::io::{self, FallbackReason, Transfer, TransferPath};
use crate::metrics::TRANSFER_PATHS;
use crate::runtime::format_cpus;
use crate::share::{Share, ShareError, SharePath};
use crate::usage::{QuotaExceeded, Usage};

/// Default and maximum page sizes of the list route.
pub const LIST_DEFAULT_LIMIT: usize = 1000;
/// Largest `limit` the list route accepts.
pub const LIST_MAX_LIMIT: usize = 10_000;

/// What a handler answers: the plan, and the file a `PlanBody::File` refers to.
#[derive(Debug)]
pub struct Reply {
    /// The response to send.
    pub plan: ResponsePlan,
    /// The opened file for file-region bodies.
    pub file: Option<Arc<File>>,
}

impl From<ResponsePlan> for Reply {
    fn from(plan: ResponsePlan) -> Self {
        Reply { plan, file: None }
    }
}

/// Runs blocking filesystem work on the blocking pool.
async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "blocking task failed");
        ApiError::internal()
    })?
}

/// The conditional and range headers of a request.
pub fn preconditions(headers: &HeaderMap) -> Preconditions<'_> {
    let get = |name: header::HeaderName| headers.get(name).map(HeaderValue::as_bytes);
    Preconditions {
        if_match: get(header::IF_MATCH),
        if_none_match: get(header::IF_NONE_MATCH),
        if_modified_since: get(header::IF_MODIFIED_SINCE),
        if_unmodified_since: get(header::IF_UNMODIFIED_SINCE),
        if_range: get(header::IF_RANGE),
    }
}

/// GET or HEAD of a file.
pub async fn read_file(
    share: &Arc<Share>,
    path: SharePath,
    headers: &HeaderMap,
    head: bool,
) -> Result<Reply, ApiError> {
    if path.is_root() {
        return Err(is_a_directory());
    }
    let content_type = plan::content_type_for(&path);
    let directory_error = |e| match e {
        ShareError::IsADirectory => is_a_directory(),
        other => other.into(),
    };
    // Open on the reactor when the lookup is cached; a thread hop costs more than the open.
    let (file, stat) = match share.open_file_cached(&path) {
        Some(opened) => opened.map_err(directory_error)?,
        None => {
            let share = Arc::clone(share);
            blocking(move || share.open_file(&path).map_err(directory_error)).await?
        }
    };
    let facts = FileFacts {
        len: stat.st_size as u64,
        validators: crate::share::validators(&stat),
        content_type,
    };
    let request = ReadRequest {
        head,
        preconditions: preconditions(headers),
        range: headers.get(header::RANGE).map(HeaderValue::as_bytes),
    };
    Ok(Reply {
        plan: plan::plan_read(&request, &facts),
        file: Some(Arc::new(file)),
    })
}

fn is_a_directory() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "is_a_directory",
        "the path is a directory: list it with GET /v1/shares/{share}/list?path=...",
    )
}

fn quota_error(err: QuotaExceeded) -> ApiError {
    ApiError::insufficient_storage(err.to_string())
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    plan::parse_content_length(value.as_bytes())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))
}

/// An upload whose preconditions and quota passed and whose temp file exists.
struct PreparedUpload {
    upload: crate::share::Upload,
    reservation: crate::usage::Reservation,
    declared: Option<u64>,
    path: SharePath,
    headers: HeaderMap,
}

/// Checks everything that can fail before the body is read: read-only share, the root,
/// preconditions, the quota for a declared length; then creates the temp file.
async fn prepare_upload(
    app: &App,
    path: SharePath,
    headers: HeaderMap,
) -> Result<PreparedUpload, ApiError> {
    let share = &app.share;
    if share.read_only() {
        return Err(ApiError::read_only());
    }
    if path.is_root() {
        return Err(ApiError::invalid_path(
            "cannot upload to the share root: name a file",
        ));
    }
    let current = {
        let (share, path) = (Arc::clone(share), path.clone());
        blocking(move || Ok(share.current_file(&path)?)).await?
    };
    plan::check_write_preconditions(&preconditions(&headers), current.as_ref().map(|(v, _)| v))?;
    let declared = content_length(&headers)?;
    let mut reservation = app.usage.reservation();
    if let Some(len) = declared {
        let old_len = current.as_ref().map_or(0, |(_, len)| *len);
        reservation
            .grow(len.saturating_sub(old_len))
            .map_err(quota_error)?;
    }
    let upload = {
        let (share, path) = (Arc::clone(share), path.clone());
        blocking(move || Ok(share.begin_upload(&path)?)).await?
    };
    Ok(PreparedUpload {
        upload,
        reservation,
        declared,
        path,
        headers,
    })
}

/// Flushes and renames the temp file over the target (re-checking preconditions under the
/// path's lock), updates usage, and answers 201 or 204.
async fn commit_upload(
    app: &App,
    prepared: PreparedUpload,
    received: u64,
) -> Result<Reply, ApiError> {
    let PreparedUpload {
        upload,
        reservation,
        declared,
        path,
        headers,
    } = prepared;
    if declared.is_some_and(|d| d != received) {
        return Err(ApiError::bad_request(
            "the body is shorter than Content-Length",
        ));
    }
    let share = Arc::clone(&app.share);
    let (etag, new_len, old_len) = blocking(move || {
        let _guard = share.lock_path(&path);
        // Re-check under the lock: another writer may have replaced the file meanwhile.
        let current = share.current_file(&path)?;
        plan::check_write_preconditions(
            &preconditions(&headers),
            current.as_ref().map(|(v, _)| v),
        )?;
        let (validators, new_len) = upload.commit()?;
        Ok((validators.etag, new_len, current.map(|(_, len)| len)))
    })
    .await?;
    app.usage.record_write(old_len, new_len);
    drop(reservation);

    let mut plan = if old_len.is_some() {
        ResponsePlan::new(StatusCode::NO_CONTENT, plan::PlanBody::Empty)
    } else {
        let body = serde_json::json!({ "size": new_len, "etag": etag }).to_string();
        ResponsePlan::json(StatusCode::CREATED, body)
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        plan.headers.insert(header::ETAG, v);
    }
    Ok(plan.into())
}

/// PUT through hyper: streams body frames into the temp file, then commits.
pub async fn upload<B>(
    app: &App,
    path: SharePath,
    headers: HeaderMap,
    mut body: B,
) -> Result<Reply, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    let mut prepared = prepare_upload(app, path, headers).await?;
    let file = Arc::clone(&prepared.upload.file);
    // A blocking writer drains a bounded queue, so reading the socket overlaps writing the
    // disk; queued chunks hold bytes of the buffer budget until they are on disk. When this
    // function returns early, `prepared` drops and its temp file is removed.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Bytes, OwnedSemaphorePermit)>(16);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some((chunk, _permit)) = rx.blocking_recv() {
            (&*file).write_all(&chunk)?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut received: u64 = 0;
    let idle = app.limits.idle_timeout;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(upload_read_error(io::idle::timed_out(idle))),
        };
        let frame = frame.map_err(|e| upload_read_error(body_error_as_io(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let n = data.len() as u64;
        received += n;
        app.metrics.add_received(n);
        if prepared.declared.is_none() {
            prepared.reservation.grow(n).map_err(quota_error)?;
        }
        let permit = app.budget.acquire(data.len()).await;
        if tx.send((data, permit)).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "upload writer failed");
            ApiError::internal()
        })?
        .map_err(|e| ShareError::from_io("write", &prepared.path, e))?;
    app.metrics.record_transfer(
        "http",
        &Transfer::single(TransferPath::Copy, received, None),
    );
    commit_upload(app, prepared, received).await
}

/// The answer to an upload whose body could not be read: 408 when the client stalled,
/// else 400. Either way the caller drops the upload, its temp file and its reservation.
fn upload_read_error(e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        tracing::info!(error = %e, "upload abandoned: the client stopped sending");
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "upload_timeout",
            format!("upload body stalled: {e}"),
        )
    } else {
        ApiError::bad_request(format!("upload body could not be read: {e}"))
    }
}

/// A body error as an I/O error, keeping `TimedOut` when the connection's idle timeout
/// (an [`io::idle::IdleTimeout`] under hyper) is what ended it.
fn body_error_as_io(err: &(dyn std::error::Error + 'static)) -> std::io::Error {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return std::io::Error::new(std::io::ErrorKind::TimedOut, io.to_string());
        }
        source = e.source();
    }
    std::io::Error::other(err.to_string())
}

/// An upload body still on the socket, for the zero-copy front end: `prefix` holds the bytes
/// that arrived with the request head, the rest (`len - prefix.len()`) is spliced.
#[derive(Debug)]
pub struct SocketUpload<'a> {
    /// The client connection.
    pub stream: &'a TcpStream,
    /// Body bytes already read with the head.
    pub prefix: Bytes,
    /// The whole body length (Content-Length).
    pub len: u64,
    /// Set to the bytes taken off the connection, so the caller knows whether the body was
    /// consumed (and the connection can be reused) after an early error.
    pub consumed: &'a AtomicU64,
    /// The upload fails (and releases its reservation) when no byte arrives for this long.
    pub idle: std::time::Duration,
}

/// PUT through the front end: the read-ahead prefix is written, the rest spliced
/// socket → pipe → temp file; then commits.
pub async fn upload_from_socket(
    app: &App,
    path: SharePath,
    headers: HeaderMap,
    source: SocketUpload<'_>,
) -> Result<Reply, ApiError> {
    let prepared = prepare_upload(app, path, headers).await?;
    let file = Arc::clone(&prepared.upload.file);
    let mut transfer = Transfer::default();
    let prefix_len = source.prefix.len() as u64;
    if prefix_len > 0 {
        let (f, prefix) = (Arc::clone(&file), source.prefix.clone());
        blocking(move || {
            f.write_all_at(&prefix, 0).map_err(|e| {
                tracing::error!(error = %e, "upload write failed");
                ApiError::internal()
            })
        })
        .await?;
        transfer.push(
            TransferPath::Copy,
            prefix_len,
            Some(FallbackReason::ReadAhead),
        );
    }
    source.consumed.store(prefix_len, Ordering::Relaxed);
    let rest = source.len - prefix_len;
    if rest > 0 {
        let spliced = match app.pipes.take() {
            Ok(pipe) => io::splice::socket_to_file(
                source.stream,
                &file,
                prefix_len,
                rest,
                pipe,
                source.idle,
            )
            .await
            .map(|n| (n, TransferPath::Splice, None)),
            Err(e) => {
                tracing::warn!(error = %e, "no pipe for splice; copying the upload");
                copy_socket_to_file(source.stream, &file, prefix_len, rest, app, source.idle)
                    .await
                    .map(|n| (n, TransferPath::Copy, Some(FallbackReason::PipeUnavailable)))
            }
        };
        let (n, path_taken, reason) = spliced.map_err(upload_read_error)?;
        transfer.push(path_taken, n, reason);
    }
    source.consumed.store(source.len, Ordering::Relaxed);
    app.metrics.add_received(source.len);
    app.metrics.record_transfer("http", &transfer);
    commit_upload(app, prepared, source.len).await
}

/// Reads `len` bytes from the socket into the file with a buffer (the no-pipe fallback).
async fn copy_socket_to_file(
    stream: &TcpStream,
    file: &Arc<std::fs::File>,
    offset: u64,
    len: u64,
    app: &App,
    idle: std::time::Duration,
) -> std::io::Result<u64> {
    let mut moved = 0u64;
    while moved < len {
        let want = (len - moved).min(256 * 1024) as usize;
        let permit = app.budget.acquire(want).await;
        let mut buf = vec![0u8; want];
        io::idle::within(idle, stream.readable()).await?;
        let n = match stream.try_read(&mut buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        buf.truncate(n);
        let (f, at) = (Arc::clone(file), offset + moved);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f.write_all_at(&buf, at)
        })
        .await
        .map_err(std::io::Error::other)??;
        moved += n as u64;
    }
    Ok(moved)
}

/// DELETE of a file, symlink or empty directory.
pub async fn delete(
    share: &Arc<Share>,
    usage: &Usage,
    path: SharePath,
    headers: HeaderMap,
) -> Result<Reply, ApiError> {
    if share.read_only() {
        return Err(ApiError::read_only());
    }
    if path.is_root() {
        return Err(ApiError::invalid_path("cannot delete the share root"));
    }
    let share = Arc::clone(share);
    let removed = blocking(move || {
        let _guard = share.lock_path(&path);
        let pre = preconditions(&headers);
        if pre.if_match.is_some()
            || pre.if_unmodified_since.is_some()
            || pre.if_none_match.is_some()
        {
            let current = match share.current_file(&path) {
                Err(ShareError::IsADirectory) => None,
                other => other?,
            };
            plan::check_write_preconditions(&pre, current.as_ref().map(|(v, _)| v))?;
        }
        Ok(share.remove(&path)?)
    })
    .await?;
    usage.record_remove(removed.files, removed.bytes);
    Ok(ResponsePlan::new(StatusCode::NO_CONTENT, plan::PlanBody::Empty).into())
}

/// Query parameters of the list route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Folder to list.
    pub path: SharePath,
    /// Page size.
    pub limit: usize,
    /// Name after which the page starts (decoded cursor).
    pub after: Option<Vec<u8>>,
}

impl ListQuery {
    /// Parses `path=&limit=&cursor=` (unknown parameters are ignored).
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut parsed = ListQuery {
            path: SharePath::root(),
            limit: LIST_DEFAULT_LIMIT,
            after: None,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.replace('+', " ");
            match key {
                "path" => parsed.path = SharePath::from_encoded(&value)?,
                "limit" => {
                    parsed.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=LIST_MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "invalid_limit",
                                format!("limit must be a whole number from 1 to {LIST_MAX_LIMIT}"),
                            )
                        })?;
                }
                "cursor" if value.is_empty() => parsed.after = None,
                "cursor" => {
                    parsed.after = Some(decode_cursor(&value).ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_cursor",
                            "cursor is not one this server issued",
                        )
                    })?);
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// Cursors are the hex of the last name returned: opaque to clients, stable across pages.
pub fn encode_cursor(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len() * 2);
    for b in name {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn decode_cursor(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 2 * 4096 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// What `name_encoded` escapes: every byte but RFC 3986's unreserved characters.
const NAME_ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Serialize)]
struct ListEntryJson {
    name: String,
    /// The name's bytes percent-encoded, for names that are not UTF-8 (`name` then shows
    /// them with U+FFFD and cannot address the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    name_encoded: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime: i64,
}

/// GET list: one sorted page of a directory.
pub async fn list(share: &Arc<Share>, query: ListQuery) -> Result<Reply, ApiError> {
    let share = Arc::clone(share);
    let path_display = query.path.display();
    let listing =
        blocking(move || Ok(share.list(&query.path, query.after.as_deref(), query.limit)?)).await?;
    let next_cursor = if listing.more {
        listing.entries.last().map(|e| encode_cursor(&e.name))
    } else {
        None
    };
    let entries: Vec<ListEntryJson> = listing
        .entries
        .into_iter()
        .map(|e| ListEntryJson {
            name_encoded: std::str::from_utf8(&e.name)
                .is_err()
                .then(|| percent_encoding::percent_encode(&e.name, NAME_ENCODED).to_string()),
            name: String::from_utf8_lossy(&e.name).into_owned(),
            kind: e.kind,
            size: e.size,
            mtime: e.mtime,
        })
        .collect();
    let body =
        serde_json::json!({ "path": path_display, "entries": entries, "next_cursor": next_cursor });
    Ok(ResponsePlan::json(StatusCode::OK, body.to_string()).into())
}

/// GET /v1/shares: the share this server exports, and whether the request may change it.
pub fn shares(app: &App, can_write: bool) -> Reply {
    let body = serde_json::json!({
        "shares": [{
            "name": app.share.name(),
            "read_only": app.share.read_only(),
            "can_write": can_write,
        }],
    });
    ResponsePlan::json(StatusCode::OK, body.to_string()).into()
}

/// GET stats: capacity, usage and counters.
pub fn stats(app: &App) -> Reply {
    let (share, usage, metrics, runtime) = (&app.share, &app.usage, &app.metrics, &app.runtime);
    let pinned: Vec<serde_json::Value> = app
        .pinned
        .get()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| serde_json::json!({ "worker": p.worker, "cpu": p.cpu, "tid": p.tid, "error": p.error }))
        .collect();
    let fallbacks: serde_json::Map<String, serde_json::Value> = FallbackReason::ALL
        .iter()
        .map(|r| (r.label().to_owned(), metrics.fallbacks("http", *r).into()))
        .collect();
    let transfer: serde_json::Map<String, serde_json::Value> = TRANSFER_PATHS
        .iter()
        .map(|p| ((*p).to_owned(), metrics.transferred("http", p).into()))
        .collect();
    let filesystem = share.filesystem_space().map(
        |(size, available)| serde_json::json!({ "size_bytes": size, "available_bytes": available }),
    );
    let body = serde_json::json!({
        "share": share.name(),
        "read_only": share.read_only(),
        "capacity_bytes": usage.capacity(),
        "used_bytes": usage.used(),
        "reserved_bytes": usage.reserved(),
        "files": usage.files(),
        "filesystem": filesystem,
        "requests_total": metrics.requests_total(),
        "bytes_received": metrics.bytes_received(),
        "transfer_bytes": transfer,
                "fallbacks": fallbacks,
        "transport": {
            "transport": runtime.transport.transport_label(),
            "rdma": runtime.transport.rdma,
            "reason": runtime.transport.reason,
            "devices": runtime.transport.devices,
        },
        "cgroup": {
            "hierarchy": runtime.limits.hierarchy.as_str(),
            "path": runtime.limits.path.as_ref().map(|p| p.display().to_string()),
            "cpus_allowed": format_cpus(&runtime.plan.allowed),
            "cpu_quota_cores": runtime.limits.cpu_quota_cores,
            "memory_max_bytes": runtime.limits.memory_max,
            "memory_high_bytes": runtime.limits.memory_high,
        },
        "workers": { "threads": runtime.plan.workers, "reason": runtime.plan.reason, "pinned": pinned },
        "memory": {
            "buffer_budget_bytes": app.budget.total_bytes(),
            "buffer_bytes_in_use": app.budget.in_use_bytes(),
        },
    });
    ResponsePlan::json(StatusCode::OK, body.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query() {
        let q = ListQuery::parse(Some("path=a/b/c+d%21&limit=5&cursor=6162")).unwrap();
        assert_eq!(q.path.as_bytes(), b"a/b/c d!");
        assert_eq!(q.limit, 5);
        assert_eq!(q.after.as_deref(), Some(b"ab".as_slice()));
        assert_eq!(ListQuery::parse(None).unwrap().limit, LIST_DEFAULT_LIMIT);
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=x",
            "limit=10001",
            "cursor=zz",
            "cursor=abc",
            "path=../x",
        ] {
            assert!(ListQuery::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        for name in [b"a".as_slice(), b"\xff\x00z", "é".as_bytes()] {
            assert_eq!(decode_cursor(&encode_cursor(name)).as_deref(), Some(name));
        }
    }
}

//! The hyper service: request ids, routing, plan execution, metrics and the access log.

use std::convert::Infallible;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::api::{self, ListQuery, Reply, SocketUpload};
use super::app::{App, Listener};
use super::auth::{self, Access};
use super::body::{Body, FileBody};
use super::error::ApiError;
use super::observe::{Exchange, ObservedBody};
use super::plan::{PlanBody, ResponsePlan, Route};

/// The request-id header, echoed when valid and generated otherwise.
pub const REQUEST_ID: &str = "x-request-id";

/// Handles one request for hyper: [`respond`], with the body wrapped so that the exchange
/// is recorded once hyper has written its last byte.
pub async fn handle<B>(
    app: Arc<App>,
    listener: Listener,
    req: Request<B>,
) -> Result<Response<ObservedBody>, Infallible>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    let (response, exchange) = respond(app, listener, req, None).await;
    Ok(response.map(|body| ObservedBody::new(body, exchange)))
}

/// Answers one request. Never fails: errors become JSON error responses. The zero-copy
/// front end passes a PUT's body as `socket_upload` (and an empty `req` body); hyper passes
/// `None` and the body in `req`. The [`Exchange`] records the request in the metrics when
/// the caller drops it, after sending the body.
pub async fn respond<B>(
    app: Arc<App>,
    listener: Listener,
    req: Request<B>,
    socket_upload: Option<SocketUpload<'_>>,
) -> (Response<Body>, Exchange)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let mut exchange = Exchange::start(
        Arc::clone(&app.metrics),
        started,
        crate::metrics::method_label(&method),
    );
    // Only copied when the access log is on.
    let target = tracing::enabled!(tracing::Level::INFO).then(|| req.uri().path().to_owned());
    let (route_label, reply) = match Route::parse(req.uri().path()) {
        Ok(route) => {
            let label = route.label();
            (
                label,
                dispatch(&app, listener, route, req, socket_upload)
                    .await
                    .unwrap_or_else(|e| ResponsePlan::error(&e).into()),
            )
        }
        Err(e) => ("files", ResponsePlan::error(&e).into()),
    };
    let status = reply.plan.status;
    let length = reply.plan.body.content_length().unwrap_or(0);
    let mut response = execute(reply, &app, method == Method::HEAD);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = if route_label == "files" {
            "GET, HEAD, PUT, DELETE"
        } else {
            "GET, HEAD"
        };
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let elapsed = started.elapsed();
    exchange.respond(route_label, status.as_u16());
    if let Some(target) = target {
        tracing::info!(
            request_id = %request_id,
            method = %method,
            path = %target,
            status = status.as_u16(),
            bytes = length,
            duration_us = elapsed.as_micros() as u64,
            "request"
        );
    }
    (response, exchange)
}

async fn dispatch<B>(
    app: &App,
    listener: Listener,
    route: Route,
    req: Request<B>,
    socket_upload: Option<SocketUpload<'_>>,
) -> Result<Reply, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    let method = req.method().clone();
    let head = method == Method::HEAD;
    let read_only_route = |allowed: bool| -> Result<(), ApiError> {
        if !allowed {
            return Err(ApiError::not_found("no such route"));
        }
        reads_only(&method)
    };
    match route {
        Route::Healthz => {
            read_only_route(true)?;
            Ok(ResponsePlan::text(StatusCode::OK, "text/plain", "ok\n")
                .head_only(head)
                .into())
        }
        Route::Readyz => {
            read_only_route(true)?;
            let plan = if app.ready.load(Ordering::Relaxed) {
                ResponsePlan::text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                ResponsePlan::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n",
                )
            };
            Ok(plan.head_only(head).into())
        }
        Route::Metrics => {
            read_only_route(matches!(
                listener,
                Listener::Admin | Listener::Api { metrics: true }
            ))?;
            // On the API port, metrics (share name, usage) are share data: a token is
            // needed there when tokens are on. The metrics port stays open for scrapers.
            if listener != Listener::Admin {
                authorize(app, req.headers(), Access::Read, false)?;
            }
            let text = app.metrics.render(&app.usage, &app.budget);
            Ok(
                ResponsePlan::text(StatusCode::OK, crate::metrics::CONTENT_TYPE, text)
                    .head_only(head)
                    .into(),
            )
        }
        _ if listener == Listener::Admin => {
            Err(ApiError::not_found("no such route on the metrics listener"))
        }
        Route::Unknown => Err(ApiError::not_found("no such route")),
        Route::Ui { asset } => {
            reads_only(&method)?;
            Ok(super::ui::plan_asset(&asset, req.headers())?
                .head_only(head)
                .into())
        }
        // Every share route needs a token (when tokens are configured) before anything
        // about the share, even whether it exists, is revealed.
        _ => {
            let access = if head || method == Method::GET {
                Access::Read
            } else {
                Access::Write
            };
            // Plain download links of the web file browser carry the token in a cookie.
            let cookie = access == Access::Read && matches!(route, Route::File { .. });
            authorize(app, req.headers(), access, cookie)?;
            dispatch_share(app, route, req, socket_upload).await
        }
    }
}

/// The share routes (after authentication).
async fn dispatch_share<B>(
    app: &App,
    route: Route,
    req: Request<B>,
    socket_upload: Option<SocketUpload<'_>>,
) -> Result<Reply, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    let method = req.method().clone();
    let head = method == Method::HEAD;
    match route {
        Route::Healthz | Route::Readyz | Route::Metrics | Route::Unknown | Route::Ui { .. } => {
            Err(ApiError::not_found("no such route"))
        }
        Route::Shares => {
            reads_only(&method)?;
            let can_write = !app.share.read_only()
                && authorize(app, req.headers(), Access::Write, false).is_ok();
            Ok(with_head(api::shares(app, can_write), head))
        }
        Route::List { share } => {
            check_share(app, &share)?;
            reads_only(&method)?;
            let query = ListQuery::parse(req.uri().query())?;
            Ok(with_head(api::list(&app.share, query).await?, head))
        }
        Route::Stats { share } => {
            check_share(app, &share)?;
            reads_only(&method)?;
            Ok(with_head(api::stats(app), head))
        }
        Route::File { share, path } => {
            check_share(app, &share)?;
            match method {
                Method::GET | Method::HEAD => {
                    api::read_file(&app.share, path, req.headers(), head).await
                }
                Method::PUT => {
                    let (parts, body) = req.into_parts();
                    match socket_upload {
                        Some(source) => {
                            api::upload_from_socket(app, path, parts.headers, source).await
                        }
                        None => api::upload(app, path, parts.headers, body).await,
                    }
                }
                Method::DELETE => {
                    api::delete(&app.share, &app.usage, path, req.into_parts().0.headers).await
                }
                _ => Err(method_not_allowed("GET, HEAD, PUT, DELETE")),
            }
        }
    }
}

fn with_head(mut reply: Reply, head: bool) -> Reply {
    reply.plan = reply.plan.head_only(head);
    reply
}

fn check_share(app: &App, share: &str) -> Result<(), ApiError> {
    if share == app.share.name() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_share",
            format!("no share named {share:?} here"),
        ))
    }
}

/// The request's bearer token checked for `access` (passes at once without token files).
/// With `cookie`, a request without an `Authorization` header may bring the token in the
/// web file browser's cookie instead.
fn authorize(
    app: &App,
    headers: &http::HeaderMap,
    access: Access,
    cookie: bool,
) -> Result<(), ApiError> {
    let value = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
    let authorization = value(header::AUTHORIZATION.as_str());
    let from_cookie = match authorization {
        None if cookie
            && auth::cookie_allowed(value("sec-fetch-site"), value("sec-fetch-dest")) =>
        {
            auth::cookie_authorization(
                headers
                    .get_all(header::COOKIE)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        }
        _ => None,
    };
    match app
        .tokens
        .check(authorization.or(from_cookie.as_deref()), access)
    {
        // A stale cookie must not refuse what no credential at all would get (anonymous
        // read), as the zero-copy front end, which ignores cookies, serves it already.
        Err(_) if from_cookie.is_some() && app.tokens.check(None, access).is_ok() => Ok(()),
        result => Ok(result?),
    }
}

/// 405 unless `method` is GET or HEAD (the routes that only read).
fn reads_only(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(method_not_allowed("GET, HEAD"))
    }
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed methods: {allow}"),
    )
}

/// The response for a request refused before routing (malformed, too large, too slow): the
/// same JSON error body and headers as every other error, with its request id.
pub fn error_response(app: &App, err: &ApiError, request_id: &str) -> Response<Body> {
    let mut response = execute(ResponsePlan::error(err).into(), app, false);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// Turns a plan into a hyper response.
fn execute(reply: Reply, app: &App, head: bool) -> Response<Body> {
    let Reply { plan, file } = reply;
    let mut headers = plan.headers;
    if let Some(len) = plan.body.content_length() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let body = if !plan.send_body || head {
        Body::Empty
    } else {
        match (plan.body, file) {
            (PlanBody::Empty, _) => Body::Empty,
            (PlanBody::Bytes(bytes), _) => Body::full(bytes),
            (PlanBody::File { offset, len }, Some(file)) => {
                Body::File(file_body(file, offset, len, app))
            }
            (PlanBody::File { .. }, None) => {
                tracing::error!("a file plan without an opened file");
                Body::Empty
            }
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = plan.status;
    *response.headers_mut() = headers;
    response
}

fn file_body(file: Arc<File>, offset: u64, len: u64, app: &App) -> FileBody {
    let counters = (
        app.metrics.transfer_counter("http", "copy"),
        app.metrics.transfer_counter("http", "mmap"),
    );
    // Mapping is only safe where nobody truncates files under us: a read-only share.
    let map_min = app.share.read_only().then_some(app.mmap_min);
    FileBody::new(file, offset, len, app.budget.clone(), counters, map_min)
}

/// The request id to use: the client's if it is short visible ASCII, else a new one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .filter(|v| valid_request_id(v.as_bytes()))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// A client's request id is echoed when it is 1 to 200 visible ASCII characters.
pub fn valid_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 200 && value.iter().all(u8::is_ascii_graphic)
}

/// A new random request id: 32 lowercase hex digits.
fn new_request_id() -> String {
    let mut id = Vec::with_capacity(32);
    push_new_request_id(&mut id);
    String::from_utf8(id).unwrap_or_default()
}

/// Appends a new random request id (32 lowercase hex digits) to `out`.
pub fn push_new_request_id(out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for word in [fastrand::u64(..), fastrand::u64(..)] {
        for shift in (0..16).rev() {
            out.push(HEX[((word >> (shift * 4)) & 0xf) as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let mut h = http::HeaderMap::new();
        assert_eq!(request_id(&h).len(), 32);
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}

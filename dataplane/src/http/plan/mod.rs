//! The HTTP planner: every HTTP rule of the file API, as pure functions.
//!
//! Given what a request asks for and what the share holds, the planner returns a
//! [`ResponsePlan`]: a status, headers, and a body that is empty, a byte buffer, or a region
//! of the opened file. It does not know how bytes get sent: the hyper service and the
//! zero-copy front end execute the same plans.

pub mod conditional;
pub mod range;
pub mod route;

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

pub use conditional::{Outcome, Preconditions};
pub use range::{ByteRange, RangeDecision};
pub use route::Route;

use super::error::ApiError;
use crate::share::{SharePath, Validators};

/// What a response body consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanBody {
    /// No body and no `Content-Length` (204, 304).
    Empty,
    /// A small in-memory body (JSON, metrics text).
    Bytes(Bytes),
    /// A region of the file the request resolved to.
    File {
        /// Offset of the first byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
}

impl PlanBody {
    /// The `Content-Length` this body implies, if any.
    pub fn content_length(&self) -> Option<u64> {
        match self {
            PlanBody::Empty => None,
            PlanBody::Bytes(b) => Some(b.len() as u64),
            PlanBody::File { len, .. } => Some(*len),
        }
    }
}

/// A complete description of a response, independent of how it is sent.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    /// Status code.
    pub status: StatusCode,
    /// Headers, without `Content-Length` (derived from the body by the executor).
    pub headers: HeaderMap,
    /// The body the method implies.
    pub body: PlanBody,
    /// False for HEAD: send the headers (with the body's `Content-Length`) and no body bytes.
    pub send_body: bool,
}

impl ResponsePlan {
    /// A plan with a status and a body, no extra headers.
    pub fn new(status: StatusCode, body: PlanBody) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body,
            send_body: true,
        }
    }

    /// A JSON response.
    pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Self {
        let mut plan = Self::new(status, PlanBody::Bytes(body.into()));
        plan.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        plan
    }

    /// The JSON error response for `err`.
    pub fn error(err: &ApiError) -> Self {
        let mut plan = Self::json(err.status, err.to_json());
        if err.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: say which scheme, and why a token was refused.
            let challenge = if err.code == "invalid_token" {
                "Bearer realm=\"zeronas\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"zeronas\""
            };
            plan.headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        plan
    }

    /// A plain-text response.
    pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let mut plan = Self::new(status, PlanBody::Bytes(body.into()));
        plan.headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        plan
    }

    /// Marks the plan as the answer to a HEAD request.
    pub fn head_only(mut self, head: bool) -> Self {
        self.send_body = !head;
        self
    }
}

/// A GET or HEAD of a file, as the planner needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadRequest<'a> {
    /// True for HEAD.
    pub head: bool,
    /// Conditional headers.
    pub preconditions: Preconditions<'a>,
    /// The raw `Range` header.
    pub range: Option<&'a [u8]>,
}

/// What the planner knows about the file being read.
#[derive(Debug, Clone)]
pub struct FileFacts {
    /// Size in bytes.
    pub len: u64,
    /// ETag and Last-Modified.
    pub validators: Validators,
    /// `Content-Type` to announce.
    pub content_type: HeaderValue,
}

/// The `Content-Security-Policy` of a file that could run script opened as a page: a
/// sandbox without scripts and with an opaque origin.
pub const FILE_CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; img-src 'self'; \
    media-src 'self'; style-src 'unsafe-inline'";

/// Whether a file of `content_type` needs [`FILE_CONTENT_SECURITY_POLICY`]: every type but
/// those that cannot run script in a page (raster images, audio, video, PDF, whose viewers
/// a sandbox would break: Chromium's media viewer fetches the file again, and its PDF
/// viewer refuses a sandboxed document). `nosniff` holds a browser to the announced type.
pub fn needs_sandbox(content_type: &HeaderValue) -> bool {
    let kind = content_type.as_bytes();
    let passive = (kind.starts_with(b"image/") && !kind.starts_with(b"image/svg"))
        || kind.starts_with(b"audio/")
        || kind.starts_with(b"video/")
        || kind == b"application/pdf";
    !passive
}

/// Plans the response to a GET or HEAD of a regular file.
pub fn plan_read(req: &ReadRequest<'_>, file: &FileFacts) -> ResponsePlan {
    let mut headers = HeaderMap::new();
    if let Ok(etag) = HeaderValue::from_str(&file.validators.etag) {
        headers.insert(header::ETAG, etag);
    }
    let last_modified = httpdate::fmt_http_date(file.validators.last_modified());
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The Content-Type comes from the name; a browser must not guess another (an uploaded
    // `.txt` holding HTML would otherwise run as a page of this origin).
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A file of the share opened as a page (an `.html` or `.svg` anyone with write access
    // put there) runs sandboxed: no script, an opaque origin, so it can never reach the web
    // file browser's token or call the API as its user.
    if needs_sandbox(&file.content_type) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(FILE_CONTENT_SECURITY_POLICY),
        );
    }

    match conditional::evaluate(&req.preconditions, Some(&file.validators), true) {
        Outcome::Proceed => {}
        Outcome::NotModified => {
            return ResponsePlan {
                status: StatusCode::NOT_MODIFIED,
                headers,
                body: PlanBody::Empty,
                send_body: false,
            };
        }
        Outcome::Failed => {
            let err = ApiError::precondition_failed(
                "the file does not match the request's preconditions",
            );
            return with_headers(ResponsePlan::error(&err), headers).head_only(req.head);
        }
    }

    let range = match req.preconditions.if_range {
        Some(if_range) if !conditional::if_range_matches(if_range, &file.validators) => None,
        _ => req.range,
    };
    let plan = match range::decide(range, file.len) {
        RangeDecision::Full => {
            headers.insert(header::CONTENT_TYPE, file.content_type.clone());
            ResponsePlan {
                status: StatusCode::OK,
                headers,
                body: PlanBody::File {
                    offset: 0,
                    len: file.len,
                },
                send_body: true,
            }
        }
        RangeDecision::Partial(r) => {
            headers.insert(header::CONTENT_TYPE, file.content_type.clone());
            let content_range = format!("bytes {}-{}/{}", r.start, r.last(), file.len);
            if let Ok(v) = HeaderValue::from_str(&content_range) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            ResponsePlan {
                status: StatusCode::PARTIAL_CONTENT,
                headers,
                body: PlanBody::File {
                    offset: r.start,
                    len: r.len,
                },
                send_body: true,
            }
        }
        RangeDecision::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", file.len)) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            let err = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!(
                    "the Range header selects nothing in a {}-byte file",
                    file.len
                ),
            );
            with_headers(ResponsePlan::error(&err), headers)
        }
    };
    plan.head_only(req.head)
}

/// Checks the preconditions of a PUT or DELETE against the current file (`None` when absent).
pub fn check_write_preconditions(
    pre: &Preconditions<'_>,
    current: Option<&Validators>,
) -> Result<(), ApiError> {
    match conditional::evaluate(pre, current, false) {
        Outcome::Proceed => Ok(()),
        Outcome::NotModified | Outcome::Failed => Err(ApiError::precondition_failed(
            "the file does not match the request's preconditions",
        )),
    }
}

/// A `Content-Length` value: ASCII digits only, optional spaces around (RFC 9110 §8.6);
/// `None` for anything else (a sign, an empty value, a list, an overflow). Both executors use
/// this one parser, so they accept and refuse the same requests.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The `Content-Type` for a file name, guessed from its extension.
pub fn content_type_for(path: &SharePath) -> HeaderValue {
    HeaderValue::from_static(content_type_name(path))
}

/// [`content_type_for`] as a static string.
pub fn content_type_name(path: &SharePath) -> &'static str {
    path.file_name()
        .and_then(|name| mime_guess::from_path(std::path::Path::new(name)).first_raw())
        .unwrap_or("application/octet-stream")
}

fn with_headers(mut plan: ResponsePlan, headers: HeaderMap) -> ResponsePlan {
    for (name, value) in headers.iter() {
        plan.headers.entry(name).or_insert_with(|| value.clone());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(len: u64) -> FileFacts {
        FileFacts {
            len,
            validators: Validators {
                etag: "\"e1\"".into(),
                last_modified_secs: 1_700_000_000,
            },
            content_type: HeaderValue::from_static("text/plain"),
        }
    }

    #[test]
    fn files_that_could_run_script_are_sandboxed() {
        for active in [
            "text/html",
            "image/svg+xml",
            "text/plain",
            "application/xml",
            "text/javascript",
            "application/octet-stream",
        ] {
            assert!(needs_sandbox(&HeaderValue::from_static(active)), "{active}");
        }
        for passive in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "audio/mpeg",
            "application/pdf",
        ] {
            assert!(
                !needs_sandbox(&HeaderValue::from_static(passive)),
                "{passive}"
            );
        }
        let plan = plan_read(&ReadRequest::default(), &facts(3));
        assert_eq!(
            header(&plan, header::CONTENT_SECURITY_POLICY),
            FILE_CONTENT_SECURITY_POLICY
        );
    }

    fn header(plan: &ResponsePlan, name: header::HeaderName) -> &str {
        plan.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn full_get() {
        let plan = plan_read(&ReadRequest::default(), &facts(100));
        assert_eq!(plan.status, StatusCode::OK);
        assert_eq!(
            plan.body,
            PlanBody::File {
                offset: 0,
                len: 100
            }
        );
        assert_eq!(header(&plan, header::ETAG), "\"e1\"");
        assert_eq!(header(&plan, header::ACCEPT_RANGES), "bytes");
        assert_eq!(
            header(&plan, header::LAST_MODIFIED),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert!(plan.send_body);
    }

    #[test]
    fn head_keeps_length_and_drops_body() {
        let plan = plan_read(
            &ReadRequest {
                head: true,
                ..Default::default()
            },
            &facts(100),
        );
        assert_eq!(plan.body.content_length(), Some(100));
        assert!(!plan.send_body);
    }

    #[test]
    fn partial_and_unsatisfiable() {
        let req = ReadRequest {
            range: Some(b"bytes=10-19"),
            ..Default::default()
        };
        let plan = plan_read(&req, &facts(100));
        assert_eq!(plan.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            plan.body,
            PlanBody::File {
                offset: 10,
                len: 10
            }
        );
        assert_eq!(header(&plan, header::CONTENT_RANGE), "bytes 10-19/100");

        let req = ReadRequest {
            range: Some(b"bytes=100-"),
            ..Default::default()
        };
        let plan = plan_read(&req, &facts(100));
        assert_eq!(plan.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&plan, header::CONTENT_RANGE), "bytes */100");
        assert_eq!(header(&plan, header::CONTENT_TYPE), "application/json");
    }

    #[test]
    fn if_range_mismatch_sends_everything() {
        let pre = Preconditions {
            if_range: Some(b"\"old\""),
            ..Default::default()
        };
        let req = ReadRequest {
            range: Some(b"bytes=0-0"),
            preconditions: pre,
            ..Default::default()
        };
        assert_eq!(plan_read(&req, &facts(100)).status, StatusCode::OK);
        let pre = Preconditions {
            if_range: Some(b"\"e1\""),
            ..Default::default()
        };
        let req = ReadRequest {
            range: Some(b"bytes=0-0"),
            preconditions: pre,
            ..Default::default()
        };
        assert_eq!(
            plan_read(&req, &facts(100)).status,
            StatusCode::PARTIAL_CONTENT
        );
    }

    #[test]
    fn conditionals() {
        let pre = Preconditions {
            if_none_match: Some(b"\"e1\""),
            ..Default::default()
        };
        let plan = plan_read(
            &ReadRequest {
                preconditions: pre,
                ..Default::default()
            },
            &facts(5),
        );
        assert_eq!(plan.status, StatusCode::NOT_MODIFIED);
        assert_eq!(plan.body, PlanBody::Empty);
        assert_eq!(header(&plan, header::ETAG), "\"e1\"");

        let pre = Preconditions {
            if_match: Some(b"\"other\""),
            ..Default::default()
        };
        let plan = plan_read(
            &ReadRequest {
                preconditions: pre,
                ..Default::default()
            },
            &facts(5),
        );
        assert_eq!(plan.status, StatusCode::PRECONDITION_FAILED);
    }

    #[test]
    fn write_preconditions() {
        let v = Validators {
            etag: "\"e1\"".into(),
            last_modified_secs: 1,
        };
        let create_only = Preconditions {
            if_none_match: Some(b"*"),
            ..Default::default()
        };
        assert!(check_write_preconditions(&create_only, None).is_ok());
        assert!(check_write_preconditions(&create_only, Some(&v)).is_err());
        let replace = Preconditions {
            if_match: Some(b"\"e1\""),
            ..Default::default()
        };
        assert!(check_write_preconditions(&replace, Some(&v)).is_ok());
        assert!(check_write_preconditions(&replace, None).is_err());
    }

    #[test]
    fn content_lengths() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b"1,1",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn content_types() {
        let p = SharePath::from_encoded("a/b.json").unwrap();
        assert_eq!(content_type_for(&p), "application/json");
        let p = SharePath::from_encoded("noext").unwrap();
        assert_eq!(content_type_for(&p), "application/octet-stream");
    }
}

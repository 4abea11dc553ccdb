//! API errors: a status, a stable machine-readable `code`, and a human message.
//!
//! Every error the HTTP API returns is one of these, rendered as
//! `{"code": "...", "message": "..."}`.

use http::StatusCode;

use crate::share::{PathError, ShareError};

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Stable error code (documented in the README).
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// Builds an error from its parts.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_path`.
    pub fn invalid_path(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", message)
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 403 `read_only`.
    pub fn read_only() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "this share is read-only",
        )
    }

    /// 412 `precondition_failed`.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
    }

    /// 507 `insufficient_storage`.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            message,
        )
    }

    /// 500 `internal`: the details go to the log, not to the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// The JSON body of this error.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "code": self.code, "message": self.message }).to_string()
    }
}

impl From<PathError> for ApiError {
    fn from(err: PathError) -> Self {
        ApiError::invalid_path(err.to_string())
    }
}

impl From<ShareError> for ApiError {
    fn from(err: ShareError) -> Self {
        match err {
            ShareError::NotFound => ApiError::not_found("no such file or directory"),
            ShareError::OutsideShare => ApiError::new(
                StatusCode::FORBIDDEN,
                "outside_share",
                "the path resolves outside the share",
            ),
            ShareError::NotADirectory => ApiError::new(
                StatusCode::CONFLICT,
                "not_a_directory",
                "a component of the path is not a directory",
            ),
            ShareError::IsADirectory => ApiError::new(
                StatusCode::CONFLICT,
                "is_a_directory",
                "the path names a directory",
            ),
            ShareError::NotRegularFile => ApiError::new(
                StatusCode::FORBIDDEN,
                "not_a_regular_file",
                "the path is a device, FIFO or socket",
            ),
            ShareError::NotEmpty => ApiError::new(
                StatusCode::CONFLICT,
                "directory_not_empty",
                "the directory is not empty",
            ),
            ShareError::PermissionDenied => ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                "the server may not access this path",
            ),
            ShareError::NameTooLong => ApiError::invalid_path("a path component is too long"),
            // Same code as a read-only share: a client handles both alike.
            ShareError::ReadOnlyFilesystem => ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only",
                "the filesystem under the share is read-only",
            ),
            ShareError::NoSpace => {
                ApiError::insufficient_storage("the filesystem under the share is full")
            }
            ShareError::Io { .. } => {
                tracing::error!(error = %err, "share I/O error");
                ApiError::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_conditions_map_to_distinct_codes() {
        let read_only = ApiError::from(ShareError::ReadOnlyFilesystem);
        assert_eq!(
            (read_only.status, read_only.code),
            (StatusCode::FORBIDDEN, "read_only")
        );
        assert!(read_only.message.contains("filesystem"));
        let full = ApiError::from(ShareError::NoSpace);
        assert_eq!(
            (full.status, full.code),
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        );
        let denied = ApiError::from(ShareError::PermissionDenied);
        assert_eq!(denied.code, "permission_denied");
    }
}

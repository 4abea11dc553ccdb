//! Request-target parsing: which route a URL names, and the share-relative path it carries.
//!
//! Everything here is pure. The decoded path is checked lexically (no `..`, no NUL, no
//! hidden temp files); the share then opens it with `openat2(RESOLVE_BENEATH)`, so a
//! symlink that points outside the root is refused by the kernel as a second line.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::super::error::ApiError;

/// Prefix of the temporary files that uploads write before the atomic rename.
/// Such names are invisible in listings and cannot be addressed through the API.
pub const TEMP_PREFIX: &str = ".zeronas-tmp-";

/// A validated path inside a share: zero or more non-empty components, none of them
/// `.` or `..`, none containing `/` or NUL. The empty path is the share root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharePath {
    /// Components joined with `/`, without a leading or trailing slash.
    joined: Vec<u8>,
}

impl SharePath {
    /// The share root.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a percent-encoded path (as found in a URL) into a share path.
    /// Empty segments (`a//b`, a leading `/`) are skipped, so absolute paths stay inside.
    pub fn from_encoded(encoded: &str) -> Result<Self, ApiError> {
        let mut joined = Vec::with_capacity(encoded.len());
        for raw in encoded.split('/') {
            if raw.is_empty() {
                continue;
            }
            let segment: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
            Self::check_segment(&segment)?;
            if !joined.is_empty() {
                joined.push(b'/');
            }
            joined.extend_from_slice(&segment);
        }
        Ok(Self { joined })
    }

    fn check_segment(segment: &[u8]) -> Result<(), ApiError> {
        if segment == b"." || segment == b".." {
            return Err(ApiError::invalid_path(
                "path segments '.' and '..' are not allowed",
            ));
        }
        if segment.contains(&0) {
            return Err(ApiError::invalid_path("path contains a NUL byte"));
        }
        if segment.contains(&b'/') {
            return Err(ApiError::invalid_path(
                "path segment contains an encoded '/'",
            ));
        }
        if segment.starts_with(TEMP_PREFIX.as_bytes()) {
            return Err(ApiError::invalid_path(
                "names starting with .zeronas-tmp- are reserved",
            ));
        }
        Ok(())
    }

    /// True for the share root.
    pub fn is_root(&self) -> bool {
        self.joined.is_empty()
    }

    /// The path as given to `openat2` relative to the root directory (`.` for the root).
    pub fn as_os_str(&self) -> &OsStr {
        if self.joined.is_empty() {
            OsStr::new(".")
        } else {
            OsStr::from_bytes(&self.joined)
        }
    }

    /// The raw bytes, `/`-separated (empty for the root).
    pub fn as_bytes(&self) -> &[u8] {
        &self.joined
    }

    /// Splits into the parent path and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(SharePath, &OsStr)> {
        if self.joined.is_empty() {
            return None;
        }
        match self.joined.iter().rposition(|&b| b == b'/') {
            Some(i) => Some((
                SharePath {
                    joined: self.joined[..i].to_vec(),
                },
                OsStr::from_bytes(&self.joined[i + 1..]),
            )),
            None => Some((SharePath::root(), OsStr::from_bytes(&self.joined))),
        }
    }

    /// This path with one more (already valid) component appended.
    pub fn join(&self, component: &OsStr) -> SharePath {
        let mut joined = self.joined.clone();
        if !joined.is_empty() {
            joined.push(b'/');
        }
        joined.extend_from_slice(component.as_bytes());
        SharePath { joined }
    }

    /// Iterates over the components.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.joined
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(OsStr::from_bytes)
    }

    /// The path for logs and messages (lossy for non-UTF-8 names).
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.joined).into_owned()
    }
}

/// What a request target addresses, before any I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1/shares/{share}/files/{path}`
    File { share: String, path: SharePath },
    /// `/v1/shares/{share}/list`
    List { share: String },
    /// `/v1/shares/{share}/stats`
    Stats { share: String },
    /// `/metrics`
    Metrics,
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// Anything else.
    Unknown,
}

impl Route {
    /// Classifies a request path (without the query string).
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        match path {
            "/metrics" => return Ok(Route::Metrics),
            "/healthz" => return Ok(Route::Healthz),
            "/readyz" => return Ok(Route::Readyz),
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/v1/shares/") else {
            return Ok(Route::Unknown);
        };
        let (share, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if share.is_empty() {
            return Ok(Route::Unknown);
        }
        let share = share.to_owned();
        if tail == "list" {
            return Ok(Route::List { share });
        }
        if tail == "stats" {
            return Ok(Route::Stats { share });
        }
        if tail == "files" {
            return Ok(Route::File {
                share,
                path: SharePath::root(),
            });
        }
        if let Some(file) = tail.strip_prefix("files/") {
            let path = SharePath::from_encoded(file)?;
            return Ok(Route::File { share, path });
        }
        Ok(Route::Unknown)
    }

    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Route::File { .. } => "files",
            Route::List { .. } => "list",
            Route::Stats { .. } => "stats",
            Route::Metrics => "metrics",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Result<SharePath, ApiError> {
        match Route::parse(&format!("/v1/shares/s/files/{path}"))? {
            Route::File { path, .. } => Ok(path),
            other => panic!("unexpected route {other:?}"),
        }
    }

    #[test]
    fn routes_are_classified() {
        assert_eq!(Route::parse("/healthz").unwrap(), Route::Healthz);
        assert_eq!(
            Route::parse("/v1/shares/a/list").unwrap(),
            Route::List { share: "a".into() }
        );
        assert_eq!(
            Route::parse("/v1/shares/a/stats").unwrap(),
            Route::Stats { share: "a".into() }
        );
        assert_eq!(Route::parse("/v1/shares/a/nope").unwrap(), Route::Unknown);
        assert_eq!(Route::parse("/v1/shares/").unwrap(), Route::Unknown);
        assert_eq!(Route::parse("/").unwrap(), Route::Unknown);
        assert!(file("").unwrap().is_root());
    }

    #[test]
    fn plain_and_encoded_paths_decode() {
        assert_eq!(file("a/b%20c.txt").unwrap().as_bytes(), b"a/b c.txt");
        assert_eq!(file("//etc/passwd").unwrap().as_bytes(), b"etc/passwd");
        assert_eq!(file("caf%C3%A9").unwrap().as_bytes(), "café".as_bytes());
    }

    #[test]
    fn hostile_paths_are_rejected() {
        for hostile in [
            "..",
            "../etc/passwd",
            "a/../../b",
            "%2e%2e/x",
            "%2E%2E%2Fetc",
            "a/%2e%2e%2f%2e%2e%2fetc",
            "x%00.txt",
            ".",
            "a%2fb",
            ".zeronas-tmp-123",
        ] {
            assert!(file(hostile).is_err(), "{hostile} was accepted");
        }
    }

    #[test]
    fn split_last_gives_parent_and_name() {
        let p = file("a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent.as_bytes(), b"a/b");
        assert_eq!(name, "c");
        let single = file("c").unwrap();
        let (parent, name) = single.split_last().unwrap();
        assert!(parent.is_root());
        assert_eq!(name, "c");
        assert!(SharePath::root().split_last().is_none());
        assert_eq!(p.components().count(), 3);
    }
}

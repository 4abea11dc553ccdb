//! Bearer-token access to the HTTP file API.
//!
//! The operator puts two random tokens in a Secret per NasVolume, mounted as files: a
//! read-write token and a read-only token. Requests to the file API carry one of them as
//! `Authorization: Bearer <token>`; without a valid one they get 401 (or, with anonymous
//! read on, reads pass). Tokens are compared in constant time. The files are re-read when
//! they change (a Secret volume swaps its `..data` link on update), checked at most once
//! a second, so a rotated token takes effect without a restart; a file that cannot be read
//! any more keeps the tokens last read and logs why. Probes and `/metrics` never need a
//! token.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::reload::ChangeCheck;

/// How often the token files are checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Shortest token accepted from a file (the operator writes 64 hex digits).
const MIN_TOKEN_LEN: usize = 16;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET, HEAD: read files, list, stats.
    Read,
    /// PUT, DELETE.
    Write,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header (and anonymous access does not cover the request).
    Missing,
    /// A token that matches neither token.
    Invalid,
    /// The read-only token on a write.
    ReadOnly,
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        use http::StatusCode;
        match denied {
            Denied::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this share needs a bearer token: send Authorization: Bearer <token> (the NasVolume's token Secret)",
            ),
            Denied::Invalid => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the bearer token is not valid for this share",
            ),
            Denied::ReadOnly => ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only_token",
                "the read-only token cannot write; use the read-write token",
            ),
        }
    }
}

/// The tokens in force.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenSet {
    /// Grants reads and writes.
    pub read_write: Option<Vec<u8>>,
    /// Grants reads.
    pub read_only: Option<Vec<u8>>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.debug_struct("TokenSet")
            .field("read_write", &self.read_write.is_some())
            .field("read_only", &self.read_only.is_some())
            .finish()
    }
}

fn matches(token: &[u8], expected: Option<&Vec<u8>>) -> bool {
    expected.is_some_and(|e| bool::from(token.ct_eq(e.as_slice())))
}

/// Decides a request: `authorization` is the raw `Authorization` header, if any.
pub fn decide(
    tokens: &TokenSet,
    anonymous_read: bool,
    authorization: Option<&[u8]>,
    access: Access,
) -> Result<(), Denied> {
    let token = authorization.and_then(bearer);
    let Some(token) = token else {
        return if access == Access::Read && anonymous_read {
            Ok(())
        } else {
            Err(if authorization.is_some() {
                Denied::Invalid
            } else {
                Denied::Missing
            })
        };
    };
    // Both comparisons always run, so timing does not tell which token was close.
    let read_write = matches(token, tokens.read_write.as_ref());
    let read_only = matches(token, tokens.read_only.as_ref());
    match (read_write, read_only, access) {
        (true, _, _) | (false, true, Access::Read) => Ok(()),
        (false, true, Access::Write) => Err(Denied::ReadOnly),
        (false, false, _) => Err(Denied::Invalid),
    }
}

/// The cookie the web file browser sets so that its plain download links (which cannot
/// carry an `Authorization` header) are authorized. It is honoured for reads of files only,
/// never for a write: a forged cross-site request can never change the share.
pub const TOKEN_COOKIE: &str = "zeronas_token";

/// Whether a request may be authorized by the [`TOKEN_COOKIE`], from its `Sec-Fetch-Site`
/// and `Sec-Fetch-Dest` headers (absent from clients that are not browsers): only a
/// navigation or fetch of this origin's own pages (a download link, the app's `fetch`), never
/// another site's (another port on the same host is the same *site*, not the same origin),
/// and never a load as a script, style or worker, which would run a file of the share in a
/// page.
pub fn cookie_allowed(fetch_site: Option<&[u8]>, fetch_dest: Option<&[u8]>) -> bool {
    let site_ok = matches!(fetch_site, None | Some(b"same-origin") | Some(b"none"));
    let dest_ok = matches!(
        fetch_dest,
        None | Some(b"document")
            | Some(b"empty")
            | Some(b"image")
            | Some(b"video")
            | Some(b"audio")
    );
    site_ok && dest_ok
}

/// The `Authorization` value that the [`TOKEN_COOKIE`] among `cookie_headers` stands for
/// (`Bearer ` and the percent-decoded token), if one is there.
pub fn cookie_authorization<'a>(
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
) -> Option<Vec<u8>> {
    let value = cookie_headers
        .into_iter()
        .flat_map(|header| header.split(|b| *b == b';'))
        .find_map(|pair| {
            let (name, value) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
            (name.trim_ascii() == TOKEN_COOKIE.as_bytes()).then(|| value[1..].trim_ascii())
        })?;
    let mut authorization = b"Bearer ".to_vec();
    authorization.extend(percent_encoding::percent_decode(value));
    Some(authorization)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable token.
    #[error(
        "the token file {path} holds no token of at least {MIN_TOKEN_LEN} visible ASCII characters"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
    },
}

/// A token read from `path`: its content without surrounding whitespace.
fn read_token(path: &Path) -> Result<Vec<u8>, TokenFileError> {
    let bytes = std::fs::read(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = bytes.trim_ascii();
    if token.len() < MIN_TOKEN_LEN || !token.iter().all(u8::is_ascii_graphic) {
        return Err(TokenFileError::Invalid {
            path: path.to_owned(),
        });
    }
    Ok(token.to_vec())
}

/// The token files and the tokens last read from them.
#[derive(Debug)]
pub struct Tokens {
    paths: [Option<PathBuf>; 2],
    anonymous_read: bool,
    current: RwLock<Arc<TokenSet>>,
    reload: Mutex<ChangeCheck<2>>,
}

impl Tokens {
    /// Reads the read-write and read-only token files; fails when a named file is missing or
    /// holds no token, so a bad mount stops start-up instead of opening the share.
    pub fn load(
        read_write: Option<PathBuf>,
        read_only: Option<PathBuf>,
        anonymous_read: bool,
    ) -> Result<Self, TokenFileError> {
        let paths = [read_write, read_only];
        let check = ChangeCheck::new([paths[0].as_deref(), paths[1].as_deref()], RELOAD_CHECK);
        let set = read_set(&paths, false)?;
        Ok(Self {
            paths,
            anonymous_read,
            current: RwLock::new(Arc::new(set)),
            reload: Mutex::new(check),
        })
    }

    /// True when requests need a token at all (a token file was given).
    pub fn enabled(&self) -> bool {
        self.paths.iter().any(Option::is_some)
    }

    /// Decides a request against the current tokens (re-reading changed files first).
    pub fn check(&self, authorization: Option<&[u8]>, access: Access) -> Result<(), Denied> {
        if !self.enabled() {
            return Ok(());
        }
        self.reload_if_changed();
        let set = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        decide(&set, self.anonymous_read, authorization, access)
    }

    /// Re-reads the files when their identity changed, at most once per [`RELOAD_CHECK`].
    fn reload_if_changed(&self) {
        let Ok(mut reload) = self.reload.try_lock() else {
            // Another request is checking right now; the current tokens serve this one.
            return;
        };
        if !reload.due([self.paths[0].as_deref(), self.paths[1].as_deref()]) {
            return;
        }
        match read_set(&self.paths, true) {
            Ok(set) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                tracing::info!("HTTP token files changed: tokens reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "HTTP token files changed but cannot be read; keeping the previous tokens");
            }
        }
    }
}

/// Reads both files; on reload (`removed_revokes`), a file that is gone revokes its token
/// (deleting the read-only token file turns read-only access off) instead of keeping it.
fn read_set(
    paths: &[Option<PathBuf>; 2],
    removed_revokes: bool,
) -> Result<TokenSet, TokenFileError> {
    let read = |p: &Option<PathBuf>| match p.as_deref().map(read_token).transpose() {
        Err(TokenFileError::Read { source, .. })
            if removed_revokes && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        other => other,
    };
    Ok(TokenSet {
        read_write: read(&paths[0])?,
        read_only: read(&paths[1])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_cookie_stands_for_a_bearer_header() {
        let rw = b"rw-token-0123456789";
        let cookie =
            |headers: &[&'static str]| cookie_authorization(headers.iter().map(|h| h.as_bytes()));
        assert_eq!(
            cookie(&["a=1; zeronas_token=rw-token-0123456789; b=2"]).as_deref(),
            Some([b"Bearer ".as_slice(), rw].concat().as_slice())
        );
        assert_eq!(
            cookie(&["x=y", "zeronas_token=a%3Bb%20c"]).as_deref(),
            Some(b"Bearer a;b c".as_slice())
        );
        assert_eq!(cookie(&["zeronas_tokens=x; other=zeronas_token"]), None);
        assert_eq!(cookie(&[]), None);
        let auth = cookie(&["zeronas_token=rw-token-0123456789"]).unwrap();
        assert_eq!(decide(&set(), false, Some(&auth), Access::Read), Ok(()));
    }

    #[test]
    fn the_cookie_counts_for_this_origin_s_navigations_and_fetches_only() {
        let allowed = |site: Option<&str>, dest: Option<&str>| {
            cookie_allowed(site.map(str::as_bytes), dest.map(str::as_bytes))
        };
        assert!(allowed(None, None), "curl, wget: no fetch metadata");
        assert!(allowed(Some("same-origin"), Some("document")));
        assert!(allowed(Some("same-origin"), Some("empty")));
        assert!(
            allowed(Some("none"), Some("document")),
            "a typed or bookmarked URL"
        );
        for site in ["same-site", "cross-site"] {
            assert!(!allowed(Some(site), Some("document")), "{site}");
        }
        for dest in [
            "script",
            "style",
            "worker",
            "serviceworker",
            "iframe",
            "object",
        ] {
            assert!(!allowed(Some("same-origin"), Some(dest)), "{dest}");
        }
    }

    fn set() -> TokenSet {
        TokenSet {
            read_write: Some(b"rw-token-0123456789".to_vec()),
            read_only: Some(b"ro-token-0123456789".to_vec()),
        }
    }

    #[test]
    fn decisions() {
        let s = set();
        let rw = Some(&b"Bearer rw-token-0123456789"[..]);
        let ro = Some(&b"bearer  ro-token-0123456789 "[..]);
        assert_eq!(decide(&s, false, rw, Access::Write), Ok(()));
        assert_eq!(decide(&s, false, rw, Access::Read), Ok(()));
        assert_eq!(decide(&s, false, ro, Access::Read), Ok(()));
        assert_eq!(decide(&s, false, ro, Access::Write), Err(Denied::ReadOnly));
        assert_eq!(decide(&s, false, None, Access::Read), Err(Denied::Missing));
        assert_eq!(
            decide(&s, false, Some(b"Bearer nope"), Access::Read),
            Err(Denied::Invalid)
        );
        assert_eq!(
            decide(&s, false, Some(b"Basic cnc6dG9rZW4="), Access::Read),
            Err(Denied::Invalid)
        );
        assert_eq!(
            decide(&s, false, Some(b"Bearer rw-token-012345678"), Access::Write),
            Err(Denied::Invalid),
            "a prefix of a token is not the token"
        );
        assert_eq!(decide(&s, true, None, Access::Read), Ok(()));
        assert_eq!(decide(&s, true, None, Access::Write), Err(Denied::Missing));
        let only_rw = TokenSet {
            read_only: None,
            ..set()
        };
        assert_eq!(
            decide(&only_rw, false, ro, Access::Read),
            Err(Denied::Invalid)
        );
    }

    #[test]
    fn files_are_read_checked_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let rw = dir.path().join("token");
        std::fs::write(&rw, "first-token-0123456789\n").unwrap();
        let tokens = Tokens::load(Some(rw.clone()), None, false).unwrap();
        let header = |t: &str| format!("Bearer {t}");
        assert!(
            tokens
                .check(
                    Some(header("first-token-0123456789").as_bytes()),
                    Access::Write
                )
                .is_ok()
        );
        // A Secret update: a new file replaces the old one.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second-token-0123456789").unwrap();
        std::fs::rename(&next, &rw).unwrap();
        tokens.reload.lock().unwrap().checked -= RELOAD_CHECK;
        assert!(
            tokens
                .check(
                    Some(header("second-token-0123456789").as_bytes()),
                    Access::Write
                )
                .is_ok()
        );
        assert_eq!(
            tokens.check(
                Some(header("first-token-0123456789").as_bytes()),
                Access::Write
            ),
            Err(Denied::Invalid)
        );
        // An unreadable replacement keeps the tokens in force.
        std::fs::write(&rw, "short").unwrap();
        tokens.reload.lock().unwrap().checked -= RELOAD_CHECK;
        assert!(
            tokens
                .check(
                    Some(header("second-token-0123456789").as_bytes()),
                    Access::Write
                )
                .is_ok()
        );

        // Removing a file revokes its token.
        std::fs::remove_file(&rw).unwrap();
        tokens.reload.lock().unwrap().checked -= RELOAD_CHECK;
        assert_eq!(
            tokens.check(
                Some(header("second-token-0123456789").as_bytes()),
                Access::Read
            ),
            Err(Denied::Invalid)
        );
        std::fs::write(&rw, "short").unwrap();
        assert!(matches!(
            Tokens::load(Some(rw.clone()), None, false),
            Err(TokenFileError::Invalid { .. })
        ));
        assert!(matches!(
            Tokens::load(Some(dir.path().join("missing")), None, false),
            Err(TokenFileError::Read { .. })
        ));
        let open = Tokens::load(None, None, false).unwrap();
        assert!(!open.enabled());
        assert!(open.check(None, Access::Write).is_ok());
    }

    #[test]
    fn debug_never_prints_tokens() {
        assert!(!format!("{:?}", set()).contains("token-0123"));
    }
}

//! Request-target parsing: which route a URL names, and the share path it carries.
//!
//! Everything here is pure; the path itself is checked by [`SharePath::from_encoded`].

use crate::http::error::ApiError;
use crate::share::SharePath;

/// What a request target addresses, before any I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1/shares/{share}/files/{path}`
    File { share: String, path: SharePath },
    /// `/v1/shares/{share}/list`
    List { share: String },
    /// `/v1/shares/{share}/stats`
    Stats { share: String },
    /// `/v1/shares`: the shares this server exports.
    Shares,
    /// `/` and `/ui/{asset}`: the web file browser's static files (`asset` is empty for
    /// the page itself).
    Ui { asset: String },
    /// `/metrics`
    Metrics,
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// Anything else.
    Unknown,
}

/// `/v1/shares/{share}/{tail}` → `(share, tail)`; `None` for other paths.
fn split_share(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/shares/")?;
    let (share, tail) = rest.split_once('/').unwrap_or((rest, ""));
    (!share.is_empty()).then_some((share, tail))
}

/// The percent-encoded file path of a `/v1/shares/{share}/files/{path}` target (without
/// its query), without allocating: what [`Route::parse`] would make a [`Route::File`] of,
/// for a share named `share` and a path that is not the root. `None` for anything else.
pub fn share_file_path<'a>(target: &'a str, share: &str) -> Option<&'a str> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let (name, tail) = split_share(path)?;
    let file = tail.strip_prefix("files/")?;
    (name == share && file.bytes().any(|b| b != b'/')).then_some(file)
}

impl Route {
    /// Classifies a request path (without the query string).
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        match path {
            "/metrics" => return Ok(Route::Metrics),
            "/healthz" => return Ok(Route::Healthz),
            "/readyz" => return Ok(Route::Readyz),
            "/v1/shares" | "/v1/shares/" => return Ok(Route::Shares),
            "/" | "/ui" => {
                return Ok(Route::Ui {
                    asset: String::new(),
                });
            }
            _ => {}
        }
        if let Some(asset) = path.strip_prefix("/ui/") {
            return Ok(Route::Ui {
                asset: asset.to_owned(),
            });
        }
        let Some((share, tail)) = split_share(path) else {
            return Ok(Route::Unknown);
        };
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
            Route::Shares => "shares",
            Route::Ui { .. } => "ui",
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
        assert_eq!(Route::parse("/v1/shares/").unwrap(), Route::Shares);
        assert_eq!(Route::parse("/v1/shares").unwrap(), Route::Shares);
        let ui = |asset: &str| Route::Ui {
            asset: asset.into(),
        };
        assert_eq!(Route::parse("/").unwrap(), ui(""));
        assert_eq!(Route::parse("/ui").unwrap(), ui(""));
        assert_eq!(Route::parse("/ui/").unwrap(), ui(""));
        assert_eq!(Route::parse("/ui/app.js").unwrap(), ui("app.js"));
        assert_eq!(Route::parse("/uix").unwrap(), Route::Unknown);
        assert!(file("").unwrap().is_root());
    }

    #[test]
    fn share_file_paths_match_what_parse_calls_a_file() {
        assert_eq!(
            share_file_path("/v1/shares/s/files/a/b?x=1", "s"),
            Some("a/b")
        );
        assert_eq!(
            share_file_path("/v1/shares/s/files/a%20b", "s"),
            Some("a%20b")
        );
        for other in [
            "/v1/shares/t/files/a",
            "/v1/shares/s/files/",
            "/v1/shares/s/files//",
            "/v1/shares/s/files",
            "/v1/shares/s/list",
            "/healthz",
        ] {
            assert_eq!(share_file_path(other, "s"), None, "{other}");
        }
        let target = "/v1/shares/s/files/x/y.txt";
        let Route::File { share, path } = Route::parse(target).unwrap() else {
            panic!("not a file route");
        };
        assert_eq!(share, "s");
        assert_eq!(
            SharePath::from_encoded(share_file_path(target, "s").unwrap()).unwrap(),
            path
        );
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

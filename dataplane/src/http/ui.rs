//! The web file browser: a page, a style sheet and one script, embedded in the binary and
//! served at `/` and `/ui/…`.
//!
//! The page holds no share data: it asks the file API for everything with the user's token,
//! like any other client, so its files need no token. Every answer carries a strict
//! `Content-Security-Policy` (scripts and styles from this origin only, nothing inline, no
//! framing, Trusted Types required for every HTML and script sink, which the app never
//! uses). Files of the share are no way around it: each is served with a sandboxing policy
//! of its own, and the download cookie is refused to script and style loads.

use std::sync::OnceLock;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use super::error::ApiError;
use super::plan::{Outcome, PlanBody, Preconditions, ResponsePlan, conditional};
use crate::share::Validators;

/// Sent with every file of the app: nothing inline, nothing from elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'";

/// One embedded file of the app.
struct Asset {
    /// Its name under `/ui/` (empty: the page, also served at `/`).
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const PAGE: &[u8] = include_bytes!("../../ui/index.html");

const ASSETS: [Asset; 5] = [
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        bytes: PAGE,
    },
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: PAGE,
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../ui/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../ui/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../ui/favicon.svg"),
    },
];

/// The assets' validators: a strong ETag from the FNV-1a of their bytes (no date: they
/// change with the binary), computed once.
fn validators() -> &'static [Validators; ASSETS.len()] {
    static VALIDATORS: OnceLock<[Validators; ASSETS.len()]> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        ASSETS.each_ref().map(|asset| {
            let hash = asset.bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            Validators {
                etag: format!("\"ui-{hash:016x}\""),
                last_modified_secs: 0,
            }
        })
    })
}

/// The answer to a GET or HEAD of `/ui/{asset}` (`asset` empty for `/`): the file with its
/// security headers, 304 when `If-None-Match` names its ETag, 404 for an unknown name.
pub fn plan_asset(asset: &str, headers: &HeaderMap) -> Result<ResponsePlan, ApiError> {
    let index = ASSETS
        .iter()
        .position(|a| a.name == asset)
        .ok_or_else(|| ApiError::not_found("no such file in the web app"))?;
    let (file, current) = (&ASSETS[index], &validators()[index]);
    // The file API's rules for If-None-Match (the only condition an asset answers).
    let preconditions = Preconditions {
        if_none_match: headers
            .get(header::IF_NONE_MATCH)
            .map(HeaderValue::as_bytes),
        ..Preconditions::default()
    };
    let unchanged =
        conditional::evaluate(&preconditions, Some(current), true) == Outcome::NotModified;
    let mut plan = if unchanged {
        ResponsePlan::new(StatusCode::NOT_MODIFIED, PlanBody::Empty)
    } else {
        ResponsePlan::text(StatusCode::OK, file.content_type, file.bytes)
    };
    let headers = &mut plan.headers;
    if let Ok(value) = HeaderValue::from_str(&current.etag) {
        headers.insert(header::ETAG, value);
    }
    // Revalidated on every load, so a new binary's app is used at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(asset: &str, if_none_match: Option<&'static str>) -> Result<ResponsePlan, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(tag));
        }
        plan_asset(asset, &headers)
    }

    #[test]
    fn the_page_and_its_files_carry_the_policy() {
        for (asset, kind) in [
            ("", "text/html"),
            ("index.html", "text/html"),
            ("app.js", "text/javascript"),
            ("app.css", "text/css"),
            ("favicon.svg", "image/svg+xml"),
        ] {
            let plan = get(asset, None).unwrap();
            assert_eq!(plan.status, StatusCode::OK, "{asset}");
            let header = |name| plan.headers.get(name).unwrap().to_str().unwrap();
            assert!(header(header::CONTENT_TYPE).starts_with(kind), "{asset}");
            assert_eq!(
                header(header::CONTENT_SECURITY_POLICY),
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header(header::X_FRAME_OPTIONS), "DENY");
            assert_eq!(header(header::REFERRER_POLICY), "no-referrer");
            assert_eq!(header(header::CACHE_CONTROL), "no-cache");
            assert!(matches!(plan.body, PlanBody::Bytes(ref b) if !b.is_empty()));
        }
        assert_eq!(get("nope.js", None).unwrap_err().code, "not_found");
        assert_eq!(get("../Cargo.toml", None).unwrap_err().code, "not_found");
    }

    #[test]
    fn the_policy_allows_nothing_inline_and_nothing_foreign() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(!CONTENT_SECURITY_POLICY.contains("data:"));
        assert!(!CONTENT_SECURITY_POLICY.contains("http"));
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'none'"));
        // The page itself holds no inline script, style or handler the policy would block.
        let page = std::str::from_utf8(PAGE).unwrap();
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains(" style="), "inline style attribute");
        let handler = page.match_indices(" on").any(|(at, _)| {
            page[at + 3..]
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .starts_with('=')
        });
        assert!(!handler, "inline event handler");
    }

    #[test]
    fn a_known_etag_gets_304() {
        let etag = get("app.js", None).unwrap().headers[header::ETAG].clone();
        let tag: &'static str = Box::leak(etag.to_str().unwrap().to_owned().into_boxed_str());
        let plan = get("app.js", Some(tag)).unwrap();
        assert_eq!(plan.status, StatusCode::NOT_MODIFIED);
        assert_eq!(plan.body, PlanBody::Empty);
        assert_eq!(
            get("app.js", Some("\"other\"")).unwrap().status,
            StatusCode::OK
        );
    }
}

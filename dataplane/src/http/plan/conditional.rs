//! Conditional requests (RFC 9110 §13): entity tags, dates, and the order they are checked in.

use std::time::UNIX_EPOCH;

use crate::share::Validators;

/// The conditional headers of a request, raw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Preconditions<'a> {
    /// `If-Match`
    pub if_match: Option<&'a [u8]>,
    /// `If-None-Match`
    pub if_none_match: Option<&'a [u8]>,
    /// `If-Modified-Since`
    pub if_modified_since: Option<&'a [u8]>,
    /// `If-Unmodified-Since`
    pub if_unmodified_since: Option<&'a [u8]>,
    /// `If-Range`
    pub if_range: Option<&'a [u8]>,
}

/// The result of evaluating preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Perform the method.
    Proceed,
    /// 304 Not Modified (GET/HEAD only).
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates preconditions in RFC 9110 §13.2.2 order. `current` is `None` when the target
/// does not exist; `safe` is true for GET and HEAD.
pub fn evaluate(pre: &Preconditions<'_>, current: Option<&Validators>, safe: bool) -> Outcome {
    if let Some(if_match) = pre.if_match {
        let matched = current.is_some_and(|c| tag_list_matches(if_match, &c.etag, Compare::Strong));
        if !matched {
            return Outcome::Failed;
        }
    } else if let (Some(raw), Some(c)) = (pre.if_unmodified_since, current)
        && let Some(date) = parse_date_secs(raw)
        && c.last_modified_secs > date
    {
        return Outcome::Failed;
    }
    if let Some(if_none_match) = pre.if_none_match {
        if current.is_some_and(|c| tag_list_matches(if_none_match, &c.etag, Compare::Weak)) {
            return if safe {
                Outcome::NotModified
            } else {
                Outcome::Failed
            };
        }
    } else if let (true, Some(raw), Some(c)) = (safe, pre.if_modified_since, current)
        && let Some(date) = parse_date_secs(raw)
        && c.last_modified_secs <= date
    {
        return Outcome::NotModified;
    }
    Outcome::Proceed
}

/// True when `If-Range` allows the Range to be honoured: a strong ETag equal to the
/// current one, or a date equal to `Last-Modified`.
pub fn if_range_matches(if_range: &[u8], current: &Validators) -> bool {
    let trimmed = trim(if_range);
    if trimmed.starts_with(b"\"") || trimmed.starts_with(b"W/") {
        return parse_tag(trimmed)
            .is_some_and(|(weak, opaque)| !weak && opaque == current.etag.as_bytes());
    }
    parse_date_secs(trimmed) == Some(current.last_modified_secs)
}

#[derive(Clone, Copy)]
enum Compare {
    Strong,
    Weak,
}

fn trim(raw: &[u8]) -> &[u8] {
    raw.trim_ascii()
}

/// Splits an entity tag into (weak, quoted opaque tag).
fn parse_tag(raw: &[u8]) -> Option<(bool, &[u8])> {
    let raw = trim(raw);
    let (weak, rest) = match raw.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if rest.len() >= 2 && rest.starts_with(b"\"") && rest.ends_with(b"\"") {
        Some((weak, rest))
    } else {
        None
    }
}

fn tag_list_matches(list: &[u8], current: &str, compare: Compare) -> bool {
    if trim(list) == b"*" {
        return true;
    }
    list.split(|&b| b == b',')
        .filter_map(parse_tag)
        .any(|(weak, opaque)| {
            let equal = opaque == current.as_bytes();
            match compare {
                Compare::Strong => equal && !weak,
                Compare::Weak => equal,
            }
        })
}

fn parse_date_secs(raw: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(trim(raw)).ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn current() -> Validators {
        Validators {
            etag: "\"abc\"".into(),
            last_modified_secs: 1_700_000_000,
        }
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn eval(pre: Preconditions<'_>, safe: bool) -> Outcome {
        evaluate(&pre, Some(&current()), safe)
    }

    #[test]
    fn if_match() {
        let ok = Preconditions {
            if_match: Some(b"\"x\", \"abc\""),
            ..Default::default()
        };
        assert_eq!(eval(ok, true), Outcome::Proceed);
        let star = Preconditions {
            if_match: Some(b"*"),
            ..Default::default()
        };
        assert_eq!(eval(star, false), Outcome::Proceed);
        assert_eq!(evaluate(&star, None, false), Outcome::Failed);
        let weak = Preconditions {
            if_match: Some(b"W/\"abc\""),
            ..Default::default()
        };
        assert_eq!(eval(weak, true), Outcome::Failed);
        let other = Preconditions {
            if_match: Some(b"\"nope\""),
            ..Default::default()
        };
        assert_eq!(eval(other, true), Outcome::Failed);
    }

    #[test]
    fn if_none_match() {
        let hit = Preconditions {
            if_none_match: Some(b"W/\"abc\""),
            ..Default::default()
        };
        assert_eq!(eval(hit, true), Outcome::NotModified);
        assert_eq!(eval(hit, false), Outcome::Failed);
        let star = Preconditions {
            if_none_match: Some(b"*"),
            ..Default::default()
        };
        assert_eq!(evaluate(&star, None, false), Outcome::Proceed);
        assert_eq!(eval(star, false), Outcome::Failed);
        let miss = Preconditions {
            if_none_match: Some(b"\"zzz\""),
            ..Default::default()
        };
        assert_eq!(eval(miss, true), Outcome::Proceed);
    }

    #[test]
    fn dates() {
        let same = date(1_700_000_000);
        let earlier = date(1_600_000_000);
        let ims = Preconditions {
            if_modified_since: Some(same.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(ims, true), Outcome::NotModified);
        assert_eq!(eval(ims, false), Outcome::Proceed);
        let ims_old = Preconditions {
            if_modified_since: Some(earlier.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(ims_old, true), Outcome::Proceed);
        let ius = Preconditions {
            if_unmodified_since: Some(earlier.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(ius, true), Outcome::Failed);
        let garbage = Preconditions {
            if_modified_since: Some(b"yesterday"),
            ..Default::default()
        };
        assert_eq!(eval(garbage, true), Outcome::Proceed);
        // If-None-Match takes precedence over If-Modified-Since.
        let both = Preconditions {
            if_none_match: Some(b"\"zzz\""),
            if_modified_since: Some(same.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(both, true), Outcome::Proceed);
    }

    #[test]
    fn if_range() {
        let c = current();
        assert!(if_range_matches(b"\"abc\"", &c));
        assert!(!if_range_matches(b"W/\"abc\"", &c));
        assert!(!if_range_matches(b"\"old\"", &c));
        assert!(if_range_matches(date(1_700_000_000).as_bytes(), &c));
        assert!(!if_range_matches(date(1_600_000_000).as_bytes(), &c));
        assert!(!if_range_matches(b"garbage", &c));
    }

    #[test]
    fn etag_changes_with_content_identity() {
        let a = Validators::for_file(1, 10, 5, 0);
        assert_ne!(a, Validators::for_file(1, 11, 5, 0));
        assert_ne!(a, Validators::for_file(1, 10, 5, 1));
        assert_ne!(a, Validators::for_file(2, 10, 5, 0));
    }
}

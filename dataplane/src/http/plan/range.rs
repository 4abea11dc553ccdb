//! The `Range` header (RFC 9110 §14): one byte range per response.

/// An inclusive-exclusive byte range `[start, start + len)` of a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte offset.
    pub start: u64,
    /// Number of bytes (never 0).
    pub len: u64,
}

impl ByteRange {
    /// Offset of the last byte (inclusive), as written in `Content-Range`.
    pub fn last(&self) -> u64 {
        self.start + self.len - 1
    }
}

/// What the server does with a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// No usable Range: send the whole representation with 200.
    Full,
    /// Send this part with 206.
    Partial(ByteRange),
    /// 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
}

/// Decides how to answer `range` for a representation of `len` bytes.
///
/// Other range units are ignored (RFC 9110 allows it), as are multi-range requests, which
/// get the whole representation instead of `multipart/byteranges`. A `bytes=` value that
/// does not parse, or that selects nothing inside the representation, is unsatisfiable.
pub fn decide(range: Option<&[u8]>, len: u64) -> RangeDecision {
    let Some(raw) = range else {
        return RangeDecision::Full;
    };
    let Ok(raw) = std::str::from_utf8(raw) else {
        return RangeDecision::Unsatisfiable;
    };
    let raw = raw.trim();
    let Some((unit, specs)) = raw.split_once('=') else {
        return RangeDecision::Unsatisfiable;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeDecision::Full;
    }
    let mut specs = specs.split(',').map(str::trim).filter(|s| !s.is_empty());
    let Some(first) = specs.next() else {
        return RangeDecision::Unsatisfiable;
    };
    if specs.next().is_some() {
        return RangeDecision::Full;
    }
    match parse_spec(first, len) {
        Some(r) => RangeDecision::Partial(r),
        None => RangeDecision::Unsatisfiable,
    }
}

fn parse_number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_spec(spec: &str, len: u64) -> Option<ByteRange> {
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let suffix = parse_number(last)?;
        if suffix == 0 || len == 0 {
            return None;
        }
        let n = suffix.min(len);
        return Some(ByteRange {
            start: len - n,
            len: n,
        });
    }
    let start = parse_number(first)?;
    if start >= len {
        return None;
    }
    let end = if last.is_empty() {
        len - 1
    } else {
        let end = parse_number(last)?;
        if end < start {
            return None;
        }
        end.min(len - 1)
    };
    Some(ByteRange {
        start,
        len: end - start + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(h: &str, len: u64) -> RangeDecision {
        decide(Some(h.as_bytes()), len)
    }

    fn part(start: u64, len: u64) -> RangeDecision {
        RangeDecision::Partial(ByteRange { start, len })
    }

    #[test]
    fn single_ranges() {
        assert_eq!(d("bytes=0-0", 10), part(0, 1));
        assert_eq!(d("bytes=0-9", 10), part(0, 10));
        assert_eq!(d("bytes=0-99", 10), part(0, 10));
        assert_eq!(d("bytes=9-", 10), part(9, 1));
        assert_eq!(d("bytes=-1", 10), part(9, 1));
        assert_eq!(d("bytes=-100", 10), part(0, 10));
        assert_eq!(d(" Bytes = 2-3 ", 10), part(2, 2));
    }

    #[test]
    fn unsatisfiable_and_malformed() {
        for h in [
            "bytes=10-",
            "bytes=10-20",
            "bytes=5-4",
            "bytes=-0",
            "bytes=",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=99999999999999999999999-",
            "garbage",
            "bytes=+1-2",
        ] {
            assert_eq!(d(h, 10), RangeDecision::Unsatisfiable, "{h}");
        }
        assert_eq!(d("bytes=0-", 0), RangeDecision::Unsatisfiable);
        assert_eq!(d("bytes=-5", 0), RangeDecision::Unsatisfiable);
    }

    #[test]
    fn ignored_ranges() {
        assert_eq!(decide(None, 10), RangeDecision::Full);
        assert_eq!(d("items=0-1", 10), RangeDecision::Full);
        assert_eq!(d("bytes=0-1,3-4", 10), RangeDecision::Full);
    }

    proptest! {
        #[test]
        fn any_header_gives_a_range_inside_the_file(header in ".{0,40}", len in 0u64..1_000_000) {
            if let RangeDecision::Partial(r) = decide(Some(header.as_bytes()), len) {
                prop_assert!(r.len > 0);
                prop_assert!(r.start + r.len <= len);
            }
        }

        #[test]
        fn explicit_ranges_round_trip(len in 1u64..1_000_000, a in 0u64..1_000_000, b in 0u64..1_000_000) {
            let (a, b) = (a.min(b), a.max(b));
            let got = d(&format!("bytes={a}-{b}"), len);
            if a >= len {
                prop_assert_eq!(got, RangeDecision::Unsatisfiable);
            } else {
                prop_assert_eq!(got, part(a, b.min(len - 1) - a + 1));
            }
        }
    }
}

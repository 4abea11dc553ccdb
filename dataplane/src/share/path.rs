//! Share-relative paths, as every protocol names files: validated lexically (no `..`, no
//! NUL, no hidden temp files) before the share opens them with `openat2(RESOLVE_BENEATH)`,
//! so a symlink that points outside the root is refused by the kernel as a second line.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Why a path was refused before any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `.` or `..` segment.
    #[error("path segments '.' and '..' are not allowed")]
    DotSegment,
    /// A NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
    /// A `/` inside one segment (percent-encoded in a URL).
    #[error("path segment contains an encoded '/'")]
    EncodedSlash,
    /// A name of the upload temp files.
    #[error("names starting with .zeronas-tmp- are reserved")]
    Reserved,
}

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
    pub fn from_encoded(encoded: &str) -> Result<Self, PathError> {
        Self::decode_into(encoded, Vec::with_capacity(encoded.len()))
    }

    /// [`SharePath::from_encoded`] into a buffer the caller reuses (its contents are
    /// replaced; get it back with [`SharePath::into_bytes`]), so a request needs no
    /// allocation for its path.
    pub fn decode_into(encoded: &str, mut joined: Vec<u8>) -> Result<Self, PathError> {
        joined.clear();
        for raw in encoded.split('/') {
            if raw.is_empty() {
                continue;
            }
            if !joined.is_empty() {
                joined.push(b'/');
            }
            let start = joined.len();
            joined.extend(percent_encoding::percent_decode_str(raw));
            Self::check_segment(&joined[start..])?;
        }
        Ok(Self { joined })
    }

    /// The buffer, for reuse with [`SharePath::decode_into`].
    pub fn into_bytes(self) -> Vec<u8> {
        self.joined
    }

    fn check_segment(segment: &[u8]) -> Result<(), PathError> {
        if segment == b"." || segment == b".." {
            return Err(PathError::DotSegment);
        }
        if segment.contains(&0) {
            return Err(PathError::Nul);
        }
        if segment.contains(&b'/') {
            return Err(PathError::EncodedSlash);
        }
        if segment.starts_with(TEMP_PREFIX.as_bytes()) {
            return Err(PathError::Reserved);
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
        let name = self.file_name()?;
        let parent = &self.joined[..self.joined.len() - name.len()];
        let parent = parent.strip_suffix(b"/").unwrap_or(parent);
        Some((
            SharePath {
                joined: parent.to_vec(),
            },
            name,
        ))
    }

    /// The last component, without allocating; `None` for the root.
    pub fn file_name(&self) -> Option<&OsStr> {
        if self.joined.is_empty() {
            return None;
        }
        let start = self
            .joined
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        Some(OsStr::from_bytes(&self.joined[start..]))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_into_a_reused_buffer_gives_the_same_paths_and_errors() {
        let mut buf = b"leftover/bytes".to_vec();
        for encoded in [
            "a/b%20c",
            "//x//y/",
            "caf%C3%A9",
            "",
            "..",
            "a/%2e%2e",
            "x%00",
            "a%2fb",
        ] {
            let fresh = SharePath::from_encoded(encoded);
            let reused = SharePath::decode_into(encoded, std::mem::take(&mut buf));
            assert_eq!(fresh, reused, "{encoded}");
            buf = reused.map(SharePath::into_bytes).unwrap_or_default();
        }
        let p = SharePath::decode_into("q/r", Vec::with_capacity(64)).unwrap();
        assert_eq!(p.as_bytes(), b"q/r");
        assert!(p.into_bytes().capacity() >= 64);
    }
}

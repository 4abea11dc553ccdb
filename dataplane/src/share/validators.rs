//! Validators of a file version: what HTTP sends as `ETag` and `Last-Modified`, and what
//! any protocol can compare to tell whether a file changed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators of the current representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// Strong entity tag, quoted (`"..."`).
    pub etag: String,
    /// Last modification time, whole seconds since the epoch (HTTP dates have no finer grain).
    pub last_modified_secs: u64,
}

impl Validators {
    /// The validators of a file with this inode, size and modification time.
    pub fn for_file(ino: u64, len: u64, mtime_secs: i64, mtime_nsecs: i64) -> Self {
        let secs = u64::try_from(mtime_secs).unwrap_or(0);
        let nanos = u64::try_from(mtime_nsecs).unwrap_or(0);
        Self {
            etag: format!("\"{ino:x}-{len:x}-{secs:x}.{nanos:x}\""),
            last_modified_secs: secs,
        }
    }

    /// `Last-Modified` as a `SystemTime`.
    pub fn last_modified(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.last_modified_secs)
    }
}

//! Noticing that a mounted file changed: a Secret volume swaps its `..data` link on update,
//! so the file a path reaches gets a new inode, size or modification time.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// What identifies one version of a file (`None`: it cannot be read now).
pub type FileVersion = Option<(u64, u64, u64, SystemTime)>;

/// The version of the file `path` reaches now (device, inode, size, modification time).
pub fn file_version(path: &Path) -> FileVersion {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
}

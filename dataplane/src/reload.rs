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

/// When watched files are re-read: checked at most once per `every`, and due only when one
/// of them changed since the last check. Versions are recorded either way, so a bad file is
/// reported once per change, not at every check.
#[derive(Debug)]
pub struct ChangeCheck<const N: usize> {
    /// When the files were last looked at (tests move it back).
    pub checked: std::time::Instant,
    every: std::time::Duration,
    versions: [FileVersion; N],
}

impl<const N: usize> ChangeCheck<N> {
    /// Starts from the files' versions now; take it before reading them, so a change between
    /// the two is seen at the next check.
    pub fn new(paths: [Option<&Path>; N], every: std::time::Duration) -> Self {
        Self {
            checked: std::time::Instant::now(),
            every,
            versions: paths.map(|p| p.and_then(file_version)),
        }
    }

    /// Whether the files should be read again now.
    pub fn due(&mut self, paths: [Option<&Path>; N]) -> bool {
        if self.checked.elapsed() < self.every {
            return false;
        }
        self.checked = std::time::Instant::now();
        let versions = paths.map(|p| p.and_then(file_version));
        if versions == self.versions {
            return false;
        }
        self.versions = versions;
        true
    }
}

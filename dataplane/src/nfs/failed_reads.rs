//! Files whose READ data could not be read from the disk.
//!
//! A READ reply commits to its length before `sendfile` moves the data, so a disk error
//! half way (EIO) can only cut the connection, and the client sends the READ again on a new
//! one. The file's inode is remembered here; its READs from then on read the data into the
//! reply before anything is sent (a copy, counted as fallback reason `read_error`), so the
//! error reaches the client as NFS3ERR_IO instead of a connection cut again and again.

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most inodes remembered; when full the set starts again (a forgotten file costs one more
/// cut connection before it is noted again).
const CAPACITY: usize = 4096;

/// The inodes whose `sendfile` failed with an I/O error since the server started. Keyed by
/// inode alone: a new file that reuses a marked inode number is read the buffered way too,
/// which costs a copy, never a wrong byte.
#[derive(Debug, Default)]
pub struct FailedReads {
    /// Entries in `inodes`: READs skip the lock while it is zero, as it almost always is.
    len: AtomicUsize,
    inodes: RwLock<HashSet<u64>>,
}

impl FailedReads {
    /// Remembers `ino`; true when it was not known yet.
    pub fn note(&self, ino: u64) -> bool {
        let mut inodes = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        if inodes.len() >= CAPACITY {
            inodes.clear();
        }
        let new = inodes.insert(ino);
        self.len.store(inodes.len(), Ordering::Release);
        new
    }

    /// Whether READs of `ino` must read the data before replying.
    pub fn contains(&self, ino: u64) -> bool {
        self.len.load(Ordering::Acquire) > 0
            && self
                .inodes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_failed_files_and_stays_bounded() {
        let failed = FailedReads::default();
        assert!(!failed.contains(7));
        assert!(failed.note(7));
        assert!(!failed.note(7), "noted twice");
        assert!(failed.contains(7));
        assert!(!failed.contains(8));
        for ino in 100..100 + CAPACITY as u64 {
            failed.note(ino);
        }
        assert!(failed.inodes.read().unwrap().len() <= CAPACITY);
    }
}

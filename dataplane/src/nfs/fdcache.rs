//! A bounded cache of open files, so READ, WRITE and COMMIT do not open and close the file on
//! every call. Files are opened as the server (permissions are checked per request against
//! the caller's credentials); REMOVE and RENAME evict the inode they unlink, so a removed
//! file's blocks are not kept alive by the cache.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use super::vfs::{Attr, Node, Vfs};

/// Default number of cached files.
pub const DEFAULT_CAPACITY: usize = 256;

#[derive(Debug)]
struct Entry {
    file: Arc<File>,
    writable: bool,
    used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(u64, u32), Entry>,
    tick: u64,
}

/// The cache.
#[derive(Debug)]
pub struct FdCache {
    inner: Mutex<Inner>,
    capacity: usize,
    read_only: bool,
}

impl FdCache {
    /// A cache of at most `capacity` files; `read_only` shares never open for writing.
    pub fn new(capacity: usize, read_only: bool) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            read_only,
        }
    }

    /// An open file for `node`, writable when `write`.
    pub fn get(&self, vfs: &Vfs, node: &Node, write: bool) -> io::Result<Arc<File>> {
        let key = (node.attr.fileid, node.attr.generation);
        if let Ok(mut inner) = self.inner.lock() {
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(entry) = inner.map.get_mut(&key)
                && (entry.writable || !write)
            {
                entry.used = tick;
                return Ok(Arc::clone(&entry.file));
            }
        }
        // Prefer read-write so later WRITEs reuse the descriptor; fall back to read-only.
        // A WRITE the caller was allowed (an owner writing its read-only file) may need the
        // owner override; a READ never changes a mode for it.
        let (file, writable) = if write || !self.read_only {
            match vfs.open_file(&node.rel, true) {
                Ok(f) => (f, true),
                Err(e) if write && e.raw_os_error() == Some(libc::EACCES) => {
                    (vfs.open_file_as_owner(&node.rel)?, true)
                }
                Err(e) if write => return Err(e),
                Err(_) => (vfs.open_file(&node.rel, false)?, false),
            }
        } else {
            (vfs.open_file(&node.rel, false)?, false)
        };
        // The path was resolved before the open: a RENAME in between may have put another
        // file under that name. Cache only the file the handle names.
        if !vfs.is_same_regular_file(&file, &node.attr) {
            tracing::debug!(path = %node.rel.display(), "file replaced during open; the client retries");
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let file = Arc::new(file);
        self.store(key, Arc::clone(&file), writable);
        // A REMOVE may have unlinked the file and evicted its inode between this open and
        // the store: checked after storing, so either this sees no link left or the
        // REMOVE's eviction comes after the store. A removed file's blocks are not kept.
        if rustix::fs::fstat(&*file).is_ok_and(|st| st.st_nlink == 0) {
            self.evict(key.0);
        }
        Ok(file)
    }

    /// Caches `file`, just opened for the file with `attr` (CREATE's own descriptor).
    pub fn insert(&self, attr: &Attr, file: File, writable: bool) {
        self.store((attr.fileid, attr.generation), Arc::new(file), writable);
    }

    /// Adds an entry, evicting the least recently used one when full.
    fn store(&self, key: (u64, u32), file: Arc<File>, writable: bool) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.tick += 1;
            let used = inner.tick;
            if inner.map.len() >= self.capacity
                && let Some(oldest) = inner
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| *k)
            {
                inner.map.remove(&oldest);
            }
            inner.map.insert(
                key,
                Entry {
                    file,
                    writable: writable && !self.read_only,
                    used,
                },
            );
        }
    }

    /// Drops every cached descriptor of inode `ino`.
    pub fn evict(&self, ino: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.map.retain(|(i, _), _| *i != ino);
        }
    }

    /// Number of cached descriptors.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn reuses_bounds_and_evicts() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let vfs = Vfs::open(dir.path(), "s").unwrap();
        let node = |n: &str| Node {
            rel: n.into(),
            attr: vfs.stat(Path::new(n)).unwrap(),
        };
        let cache = FdCache::new(2, false);
        let a1 = cache.get(&vfs, &node("a"), false).unwrap();
        let a2 = cache.get(&vfs, &node("a"), true).unwrap();
        assert!(
            Arc::ptr_eq(&a1, &a2),
            "opened read-write once, reused for a write"
        );
        cache.get(&vfs, &node("b"), false).unwrap();
        cache.get(&vfs, &node("c"), false).unwrap();
        assert_eq!(cache.len(), 2);
        cache.evict(node("c").attr.fileid);
        assert_eq!(cache.len(), 1);
        let ro = FdCache::new(2, true);
        assert!(ro.get(&vfs, &node("a"), false).is_ok());
    }
}

//! The exported folder: safe path resolution and the filesystem operations of the API.
//!
//! Every lookup starts at the root directory's file descriptor and goes through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so neither `..` nor a symlink can
//! leave the root. Where `openat2` is unavailable (old kernels, strict seccomp profiles),
//! lookups walk the path one component at a time with `O_NOFOLLOW`, which refuses every
//! symlink instead. All functions here block: call them off the async reactor.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

mod path;
mod validators;

pub use path::{PathError, SharePath, TEMP_PREFIX};
pub use validators::Validators;

/// Why a share operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The path does not exist.
    #[error("no such file or directory")]
    NotFound,
    /// The path (through a symlink) resolves outside the share root.
    #[error("path resolves outside the share")]
    OutsideShare,
    /// A non-final component is not a directory.
    #[error("a path component is not a directory")]
    NotADirectory,
    /// A file was expected, a directory was found.
    #[error("the path is a directory")]
    IsADirectory,
    /// The path is a device, FIFO or socket.
    #[error("the path is not a regular file")]
    NotRegularFile,
    /// `rmdir` of a directory that still has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// The server process lacks permission.
    #[error("permission denied")]
    PermissionDenied,
    /// A name longer than the filesystem allows.
    #[error("name too long")]
    NameTooLong,
    /// The filesystem under the share was mounted (or remounted) read-only.
    #[error("the filesystem under the share is read-only")]
    ReadOnlyFilesystem,
    /// The filesystem itself is full.
    #[error("no space left on the filesystem")]
    NoSpace,
    /// Any other failure, with context.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The share-relative path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ShareError {
    /// Classifies an `std::io::Error` from an operation on `path`.
    pub fn from_io(op: &'static str, path: &SharePath, err: std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(code) => Self::from_errno(op, path, Errno::from_raw_os_error(code)),
            None => ShareError::Io {
                op,
                path: path.display(),
                source: err,
            },
        }
    }

    fn from_errno(op: &'static str, path: &SharePath, errno: Errno) -> Self {
        match errno {
            Errno::NOENT => ShareError::NotFound,
            Errno::XDEV | Errno::LOOP => ShareError::OutsideShare,
            Errno::NOTDIR => ShareError::NotADirectory,
            Errno::ISDIR => ShareError::IsADirectory,
            Errno::NOTEMPTY => ShareError::NotEmpty,
            Errno::ACCESS | Errno::PERM => ShareError::PermissionDenied,
            Errno::ROFS => ShareError::ReadOnlyFilesystem,
            Errno::NAMETOOLONG => ShareError::NameTooLong,
            Errno::NOSPC | Errno::DQUOT => ShareError::NoSpace,
            other => ShareError::Io {
                op,
                path: path.display(),
                source: other.into(),
            },
        }
    }
}

/// A directory entry as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name (raw bytes).
    pub name: Vec<u8>,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// One page of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Entries sorted by name (bytewise).
    pub entries: Vec<Entry>,
    /// True when entries after the last one exist.
    pub more: bool,
}

/// What a removal took away, for usage accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Bytes of the removed regular file (0 otherwise).
    pub bytes: u64,
    /// 1 for a regular file, 0 otherwise.
    pub files: u64,
}

/// Totals found by [`Share::scan`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanTotals {
    /// Regular files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Stale upload temp files removed.
    pub stale_temps_removed: u64,
}

const LOCK_STRIPES: usize = 64;

/// An exported folder.
#[derive(Debug)]
pub struct Share {
    name: String,
    root: OwnedFd,
    read_only: bool,
    has_openat2: AtomicBool,
    /// Serialises "check preconditions, then rename/unlink" per path (striped).
    write_locks: Vec<Mutex<()>>,
}

impl Share {
    /// Opens `root` as the share `name`.
    pub fn open(name: &str, root: &Path, read_only: bool) -> Result<Self, std::io::Error> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open share root {}: {e}", root.display()),
            )
        })?;
        Ok(Self {
            name: name.to_owned(),
            root: fd,
            read_only,
            has_openat2: AtomicBool::new(true),
            write_locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// The share's name (the `{share}` in URLs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Filesystem size and free bytes under the root.
    pub fn filesystem_space(&self) -> Option<(u64, u64)> {
        let vfs = rustix::fs::fstatvfs(&self.root).ok()?;
        Some((vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize))
    }

    /// Opens `path` beneath the root with `flags` (plus `O_CLOEXEC`).
    fn open_beneath(
        &self,
        path: &SharePath,
        flags: OFlags,
        op: &'static str,
    ) -> Result<OwnedFd, ShareError> {
        let flags = flags | OFlags::CLOEXEC;
        if self.has_openat2.load(Ordering::Relaxed) {
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.root, path.as_os_str(), flags, Mode::empty(), resolve) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOSYS) | Err(Errno::PERM) if self.probe_openat2_missing() => {}
                Err(e) => return Err(ShareError::from_errno(op, path, e)),
            }
        }
        self.open_walking(path, flags, op)
    }

    /// After an `openat2` failure that may mean "blocked", checks once whether `openat2`
    /// works at all on the root; if not, switches to component walking for good.
    fn probe_openat2_missing(&self) -> bool {
        let works = rustix::fs::openat2(
            &self.root,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH,
        )
        .is_ok();
        if !works {
            tracing::warn!(share = %self.name, "openat2 unavailable; resolving paths component by component without following symlinks");
            self.has_openat2.store(false, Ordering::Relaxed);
        }
        !works
    }

    fn open_walking(
        &self,
        path: &SharePath,
        flags: OFlags,
        op: &'static str,
    ) -> Result<OwnedFd, ShareError> {
        let err = |e| ShareError::from_errno(op, path, e);
        let mut dir = rustix::io::dup(&self.root).map_err(err)?;
        let components: Vec<&OsStr> = path.components().collect();
        let Some((last, parents)) = components.split_last() else {
            return rustix::fs::openat(&self.root, ".", flags, Mode::empty()).map_err(err);
        };
        for component in parents {
            let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            dir = rustix::fs::openat(&dir, *component, dir_flags, Mode::empty()).map_err(err)?;
        }
        rustix::fs::openat(&dir, *last, flags | OFlags::NOFOLLOW, Mode::empty()).map_err(err)
    }

    /// Opens a regular file for reading without blocking, when every path component is
    /// already in the kernel's lookup cache (`RESOLVE_CACHED`); `None` means the lookup would
    /// have to go to disk (or `openat2` is unavailable): call [`Share::open_file`] off the
    /// reactor instead.
    pub fn open_file_cached(&self, path: &SharePath) -> Option<Result<(File, Stat), ShareError>> {
        if !self.has_openat2.load(Ordering::Relaxed) {
            return None;
        }
        let flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::CACHED;
        match rustix::fs::openat2(&self.root, path.as_os_str(), flags, Mode::empty(), resolve) {
            Ok(fd) => Some(Self::regular_file(fd, path)),
            // EAGAIN: not cached. EINVAL: a kernel without RESOLVE_CACHED. NOSYS/PERM: no openat2.
            Err(Errno::AGAIN | Errno::INVAL | Errno::NOSYS | Errno::PERM) => None,
            Err(e) => Some(Err(ShareError::from_errno("open", path, e))),
        }
    }

    /// Opens a regular file for reading and returns it with its metadata.
    pub fn open_file(&self, path: &SharePath) -> Result<(File, Stat), ShareError> {
        // O_NONBLOCK keeps a FIFO from blocking the open; it is rejected right after.
        let fd = self.open_beneath(
            path,
            OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
            "open",
        )?;
        Self::regular_file(fd, path)
    }

    /// Checks that an opened fd is a regular file.
    fn regular_file(fd: OwnedFd, path: &SharePath) -> Result<(File, Stat), ShareError> {
        let stat = rustix::fs::fstat(&fd).map_err(|e| ShareError::from_errno("fstat", path, e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(ShareError::IsADirectory),
            _ => return Err(ShareError::NotRegularFile),
        }
        // O_NONBLOCK stays set: it has no effect on regular files.
        Ok((File::from(fd), stat))
    }

    /// Opens a directory.
    fn open_dir(&self, path: &SharePath) -> Result<OwnedFd, ShareError> {
        self.open_beneath(path, OFlags::RDONLY | OFlags::DIRECTORY, "opendir")
    }

    /// Lists a directory: entries with names after `after` (bytewise), at most `limit`.
    pub fn list(
        &self,
        path: &SharePath,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Listing, ShareError> {
        let dir_fd = self.open_dir(path)?;
        let err = |e| ShareError::from_errno("readdir", path, e);
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in Dir::read_from(&dir_fd).map_err(err)? {
            let entry = entry.map_err(err)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." || name.starts_with(TEMP_PREFIX.as_bytes()) {
                continue;
            }
            if after.is_some_and(|a| name <= a) {
                continue;
            }
            names.push(name.to_vec());
        }
        names.sort_unstable();
        let more = names.len() > limit;
        names.truncate(limit);
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let stat = match rustix::fs::statat(
                &dir_fd,
                OsStr::from_bytes(&name),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(stat) => stat,
                // Removed between readdir and stat: skip it.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(err(e)),
            };
            let kind = match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => "file",
                FileType::Directory => "dir",
                FileType::Symlink => "symlink",
                _ => "other",
            };
            let size = if kind == "dir" {
                0
            } else {
                stat.st_size as u64
            };
            entries.push(Entry {
                name,
                kind,
                size,
                mtime: stat.st_mtime,
            });
        }
        Ok(Listing { entries, more })
    }

    /// Validators of the regular file at `path`, `None` if nothing is there.
    /// A directory at `path` is an error.
    pub fn current_file(&self, path: &SharePath) -> Result<Option<(Validators, u64)>, ShareError> {
        let Some((parent, name)) = path.split_last() else {
            return Err(ShareError::IsADirectory);
        };
        let dir = match self.open_dir(&parent) {
            Ok(dir) => dir,
            Err(ShareError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => Err(ShareError::IsADirectory),
                FileType::RegularFile => Ok(Some((validators(&stat), stat.st_size as u64))),
                _ => Ok(None),
            },
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(ShareError::from_errno("stat", path, e)),
        }
    }

    /// Creates the parent folders of `path` and a temp file beside it.
    pub fn begin_upload(&self, path: &SharePath) -> Result<Upload, ShareError> {
        let Some((parent, name)) = path.split_last() else {
            return Err(ShareError::IsADirectory);
        };
        let dir = self.create_dirs(&parent)?;
        let temp_name = format!("{TEMP_PREFIX}{:016x}", fastrand::u64(..));
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, temp_name.as_str(), flags, Mode::from_raw_mode(0o644))
            .map_err(|e| ShareError::from_errno("create", path, e))?;
        Ok(Upload {
            file: Arc::new(File::from(fd)),
            dir,
            temp_name,
            name: name.to_os_string(),
            path: path.clone(),
            done: false,
        })
    }

    /// Creates every folder of `path` that is missing, returns the last one opened.
    fn create_dirs(&self, path: &SharePath) -> Result<OwnedFd, ShareError> {
        match self.open_dir(path) {
            Err(ShareError::NotFound) => {}
            other => return other,
        }
        let mut prefix = SharePath::root();
        let mut dir = self.open_dir(&prefix)?;
        for component in path.components() {
            prefix = prefix.join(component);
            match rustix::fs::mkdirat(&dir, component, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(ShareError::from_errno("mkdir", &prefix, e)),
            }
            dir = self.open_dir(&prefix)?;
        }
        Ok(dir)
    }

    /// Takes the write lock of `path`'s stripe: hold it across "check, then mutate".
    pub fn lock_path(&self, path: &SharePath) -> MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        path.as_bytes().hash(&mut hasher);
        let stripe = (hasher.finish() as usize) % self.write_locks.len();
        self.write_locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes a file, a symlink, or an empty directory.
    pub fn remove(&self, path: &SharePath) -> Result<Removed, ShareError> {
        let Some((parent, name)) = path.split_last() else {
            return Err(ShareError::PermissionDenied);
        };
        let dir = self.open_dir(&parent)?;
        let stat = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ShareError::from_errno("stat", path, e))?;
        let (flags, removed) = match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => (AtFlags::REMOVEDIR, Removed { bytes: 0, files: 0 }),
            FileType::RegularFile => (
                AtFlags::empty(),
                Removed {
                    bytes: stat.st_size as u64,
                    files: 1,
                },
            ),
            _ => (AtFlags::empty(), Removed { bytes: 0, files: 0 }),
        };
        rustix::fs::unlinkat(&dir, name, flags)
            .map_err(|e| ShareError::from_errno("unlink", path, e))?;
        let _ = rustix::fs::fsync(&dir);
        Ok(removed)
    }

    /// Walks the whole share and counts regular files and bytes; symlinks are not followed.
    /// With `remove_stale_temps` (only at start-up, when no upload can be in progress) it
    /// also removes upload temp files left by a crash.
    pub fn scan(&self, remove_stale_temps: bool) -> Result<ScanTotals, ShareError> {
        let mut totals = ScanTotals::default();
        let root = rustix::io::dup(&self.root)
            .map_err(|e| ShareError::from_errno("dup", &SharePath::root(), e))?;
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let entries = match Dir::read_from(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(error = %e, "scan: cannot read a directory");
                    continue;
                }
            };
            for entry in entries {
                let Ok(entry) = entry else { continue };
                let name = entry.file_name();
                let bytes = name.to_bytes();
                if bytes == b"." || bytes == b".." {
                    continue;
                }
                let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                    continue;
                };
                match FileType::from_raw_mode(stat.st_mode) {
                    FileType::RegularFile if bytes.starts_with(TEMP_PREFIX.as_bytes()) => {
                        let removed = remove_stale_temps
                            && rustix::fs::unlinkat(&dir, name, AtFlags::empty()).is_ok();
                        totals.stale_temps_removed += u64::from(removed);
                    }
                    FileType::RegularFile => {
                        totals.files += 1;
                        totals.bytes += stat.st_size as u64;
                    }
                    FileType::Directory => {
                        let flags =
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                        if let Ok(child) = rustix::fs::openat(&dir, name, flags, Mode::empty()) {
                            stack.push(child);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(totals)
    }
}

/// The validators (ETag, Last-Modified) of a file's metadata.
pub fn validators(stat: &Stat) -> Validators {
    Validators::for_file(
        stat.st_ino,
        stat.st_size as u64,
        stat.st_mtime,
        stat.st_mtime_nsec as i64,
    )
}

/// An upload in progress: a temp file beside its final name. Dropped without
/// [`Upload::commit`], it removes the temp file, so a failed upload leaves nothing behind.
#[derive(Debug)]
pub struct Upload {
    /// The temp file to write the body into.
    pub file: Arc<File>,
    dir: OwnedFd,
    temp_name: String,
    name: OsString,
    path: SharePath,
    done: bool,
}

impl Upload {
    /// Flushes the temp file to disk and renames it over the final name, then flushes the
    /// directory, so after a crash either the old or the new file is there, whole.
    /// Returns the new file's validators and size.
    pub fn commit(mut self) -> Result<(Validators, u64), ShareError> {
        let err = |op, e| ShareError::from_errno(op, &self.path, e);
        rustix::fs::fsync(&self.file).map_err(|e| err("fsync", e))?;
        let stat = rustix::fs::fstat(&self.file).map_err(|e| err("fstat", e))?;
        rustix::fs::renameat(&self.dir, self.temp_name.as_str(), &self.dir, &self.name)
            .map_err(|e| err("rename", e))?;
        self.done = true;
        rustix::fs::fsync(&self.dir).map_err(|e| err("fsync", e))?;
        Ok((validators(&stat), stat.st_size as u64))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ =
                rustix::fs::unlinkat(self.dir.as_fd(), self.temp_name.as_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn share() -> (tempfile::TempDir, Share) {
        let dir = tempfile::tempdir().unwrap();
        let share = Share::open("s", dir.path(), false).unwrap();
        (dir, share)
    }

    fn p(s: &str) -> SharePath {
        SharePath::from_encoded(s).unwrap()
    }

    #[test]
    fn symlinks_cannot_escape() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let (dir, share) = share();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", dir.path().join("rel")).unwrap();
        std::fs::write(dir.path().join("inside"), b"ok").unwrap();
        std::os::unix::fs::symlink("inside", dir.path().join("good")).unwrap();
        assert!(matches!(
            share.open_file(&p("abs")),
            Err(ShareError::OutsideShare)
        ));
        assert!(matches!(
            share.open_file(&p("rel")),
            Err(ShareError::OutsideShare)
        ));
        assert!(share.open_file(&p("good")).is_ok());
        share.has_openat2.store(false, Ordering::Relaxed);
        assert!(share.open_file(&p("abs")).is_err());
        assert!(share.open_file(&p("inside")).is_ok());
    }

    #[test]
    fn upload_is_atomic_and_cleans_up() {
        let (dir, share) = share();
        let upload = share.begin_upload(&p("a/b/c.txt")).unwrap();
        (&*upload.file).write_all(b"hello").unwrap();
        assert!(!dir.path().join("a/b/c.txt").exists());
        let (_, len) = upload.commit().unwrap();
        assert_eq!(len, 5);
        assert_eq!(
            std::fs::read(dir.path().join("a/b/c.txt")).unwrap(),
            b"hello"
        );

        let abandoned = share.begin_upload(&p("a/d.txt")).unwrap();
        (&*abandoned.file).write_all(b"x").unwrap();
        drop(abandoned);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("b")]);
    }

    #[test]
    fn kernel_errors_are_classified() {
        let path = SharePath::from_encoded("a/b").unwrap();
        let classify = |errno| ShareError::from_errno("write", &path, errno);
        assert!(matches!(
            classify(Errno::ROFS),
            ShareError::ReadOnlyFilesystem
        ));
        assert!(matches!(classify(Errno::NOSPC), ShareError::NoSpace));
        assert!(matches!(classify(Errno::DQUOT), ShareError::NoSpace));
        assert!(matches!(
            classify(Errno::ACCESS),
            ShareError::PermissionDenied
        ));
        match classify(Errno::IO) {
            ShareError::Io { op, path, source } => {
                assert_eq!((op, path.as_str()), ("write", "a/b"));
                assert_eq!(source.raw_os_error(), Some(libc_eio()));
            }
            other => panic!("EIO classified as {other:?}"),
        }
    }

    fn libc_eio() -> i32 {
        Errno::IO.raw_os_error()
    }

    #[test]
    fn listing_pages_and_hides_temps() {
        let (dir, share) = share();
        for name in ["c", "a", "b"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::write(dir.path().join(format!("{TEMP_PREFIX}x")), b"").unwrap();
        let first = share.list(&SharePath::root(), None, 2).unwrap();
        let names: Vec<_> = first.entries.iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(first.more);
        let second = share.list(&SharePath::root(), Some(b"b"), 2).unwrap();
        assert_eq!(second.entries.len(), 1);
        assert!(!second.more);
    }

    #[test]
    fn scan_counts_and_removes_stale_temps() {
        let (dir, share) = share();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/x"), b"12345").unwrap();
        std::fs::write(dir.path().join("y"), b"12").unwrap();
        std::fs::write(dir.path().join(format!("d/{TEMP_PREFIX}1")), b"junk").unwrap();
        let totals = share.scan(false).unwrap();
        assert_eq!(
            totals,
            ScanTotals {
                files: 2,
                bytes: 7,
                stale_temps_removed: 0
            }
        );
        let totals = share.scan(true).unwrap();
        assert_eq!(
            totals,
            ScanTotals {
                files: 2,
                bytes: 7,
                stale_temps_removed: 1
            }
        );
    }

    #[test]
    fn remove_refuses_non_empty_dirs() {
        let (dir, share) = share();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/x"), b"1").unwrap();
        assert!(matches!(share.remove(&p("d")), Err(ShareError::NotEmpty)));
        assert_eq!(
            share.remove(&p("d/x")).unwrap(),
            Removed { bytes: 1, files: 1 }
        );
        assert_eq!(
            share.remove(&p("d")).unwrap(),
            Removed { bytes: 0, files: 0 }
        );
        assert!(matches!(share.remove(&p("d")), Err(ShareError::NotFound)));
    }
}

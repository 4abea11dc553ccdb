//! The share as NFS sees it: attributes from `statx`, paths resolved beneath the root with
//! `openat2` (never through a symlink), and the index that turns file handles back into
//! paths.
//!
//! Handles are resolved through an in-memory index (inode → path) built by a walk of the
//! share at start-up and kept current by LOOKUP, READDIRPLUS, CREATE, RENAME and REMOVE.
//! A handle whose path no longer matches (the file was renamed behind the server's back, or
//! its indexed name was removed while it has others) waits for a walk of the share that
//! starts after the miss; only a handle that walk does not find is NFS3ERR_STALE (the
//! kernel client marks a stale inode dead for good, losing buffered writes, so a live file
//! must never get it). Misses during a walk wait for the next one together, a walk merges
//! into the index (entries recorded while it ran win over what it saw), and a handle a walk
//! did not find is answered STALE at once for [`ABSENT_FOR`], so a client repeating a dead
//! handle does not walk the share each time. This works without privileges:
//! `open_by_handle_at` would need CAP_DAC_READ_SEARCH, which the dataplane container does
//! not have.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Statx, StatxFlags};

use super::handle::{FileHandle, fnv1a};
use crate::share::TEMP_PREFIX;

/// How long a handle a walk did not find is answered STALE without another walk.
pub const ABSENT_FOR: Duration = Duration::from_secs(2);
/// Handles remembered as absent at most (the list is cleared when full).
const ABSENT_MAX: usize = 4096;
/// Requests that may wait for a walk at once; more are answered NFS3ERR_JUKEBOX (the
/// client retries a few seconds later), so misses never hold every worker.
pub const WALK_WAITERS: usize = 8;
/// Longest file name.
pub const NAME_MAX: usize = 255;

/// NFS file types (`ftype3`).
pub mod ftype {
    /// Regular file.
    pub const REG: u32 = 1;
    /// Directory.
    pub const DIR: u32 = 2;
    /// Block device.
    pub const BLK: u32 = 3;
    /// Character device.
    pub const CHR: u32 = 4;
    /// Symbolic link.
    pub const LNK: u32 = 5;
    /// Socket.
    pub const SOCK: u32 = 6;
    /// FIFO.
    pub const FIFO: u32 = 7;
}

/// A file's attributes (`fattr3` plus the handle generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attr {
    /// `ftype3`.
    pub ftype: u32,
    /// Permission bits (07777).
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Bytes allocated.
    pub used: u64,
    /// Device numbers (major, minor).
    pub rdev: (u32, u32),
    /// Inode number.
    pub fileid: u64,
    /// Access time (seconds, nanoseconds).
    pub atime: (u32, u32),
    /// Modification time.
    pub mtime: (u32, u32),
    /// Change time.
    pub ctime: (u32, u32),
    /// Handle generation (from the birth time; 0 where the file system has none).
    pub generation: u32,
}

impl Attr {
    /// Attributes from `statx`.
    pub fn from_statx(s: &Statx) -> Self {
        let mode = u32::from(s.stx_mode);
        let ftype = match mode & 0o170000 {
            0o040000 => ftype::DIR,
            0o120000 => ftype::LNK,
            0o060000 => ftype::BLK,
            0o020000 => ftype::CHR,
            0o140000 => ftype::SOCK,
            0o010000 => ftype::FIFO,
            _ => ftype::REG,
        };
        let time = |t: &rustix::fs::StatxTimestamp| (t.tv_sec as u32, t.tv_nsec);
        let generation = if s.stx_mask & StatxFlags::BTIME.bits() != 0 {
            (s.stx_btime.tv_sec as u32) ^ s.stx_btime.tv_nsec
        } else {
            0
        };
        Self {
            ftype,
            mode: mode & 0o7777,
            nlink: s.stx_nlink,
            uid: s.stx_uid,
            gid: s.stx_gid,
            size: s.stx_size,
            used: s.stx_blocks * 512,
            rdev: (s.stx_rdev_major, s.stx_rdev_minor),
            fileid: s.stx_ino,
            atime: time(&s.stx_atime),
            mtime: time(&s.stx_mtime),
            ctime: time(&s.stx_ctime),
            generation,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.ftype == ftype::DIR
    }
}

/// Why a handle or name cannot be used (mapped to NFS status codes by the caller).
#[derive(Debug)]
pub enum VfsError {
    /// Not a handle this server issued.
    BadHandle,
    /// The file is gone (or never existed in this share).
    Stale,
    /// A name that is not a single valid component.
    InvalidName,
    /// A name longer than [`NAME_MAX`].
    NameTooLong,
    /// A reserved name (upload temp files): invisible to clients.
    Reserved,
    /// Too many requests wait for a walk of the share already: try again later.
    Busy,
    /// An I/O error from the kernel.
    Io(io::Error),
}

impl From<io::Error> for VfsError {
    fn from(e: io::Error) -> Self {
        VfsError::Io(e)
    }
}

impl From<rustix::io::Errno> for VfsError {
    fn from(e: rustix::io::Errno) -> Self {
        VfsError::Io(e.into())
    }
}

/// A resolved file: its path relative to the share root (empty for the root) and attributes.
#[derive(Debug, Clone)]
pub struct Node {
    /// Path relative to the root.
    pub rel: PathBuf,
    /// Attributes at resolution time.
    pub attr: Attr,
}

/// The exported folder.
#[derive(Debug)]
pub struct Vfs {
    root: OwnedFd,
    /// Share id in handles (and `fsid`).
    pub share_id: u32,
    root_ino: u64,
    index: RwLock<Index>,
    /// Held for a whole walk, so walks never overlap.
    walking: Mutex<()>,
    /// When the last finished walk started (read without waiting for a walk).
    last_walk: Mutex<Option<Instant>>,
    /// Whether a folder changed while the last walk read it (a rename storm can hide a
    /// live file from a readdir): a miss in such a walk proves nothing.
    last_walk_unsettled: AtomicBool,
    /// Handles missed by unsettled walks, and when that first happened: alive (JUKEBOX)
    /// for [`ABSENT_FOR`], then STALE, so a file deleted in a busy share is not retried
    /// for ever.
    unsettled_misses: Mutex<HashMap<(u64, u32), Instant>>,
    /// Requests waiting for a walk now.
    waiters: AtomicUsize,
    /// Handles the last walks did not find, and when that walk started.
    absent: Mutex<HashMap<(u64, u32), Instant>>,
    walks: AtomicU64,
}

/// Inode → path, each entry stamped with the sequence number of its last change, so a walk
/// merges without undoing what LOOKUP, CREATE or RENAME recorded while it ran.
#[derive(Debug, Default)]
struct Index {
    paths: HashMap<u64, (PathBuf, u64)>,
    sequence: u64,
}

/// Attributes of the entry `name` of the open folder `dir` (not following a symlink).
pub fn stat_entry(dir: &OwnedFd, name: &OsStr) -> io::Result<Attr> {
    statx_at(dir, name)
}

fn statx_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Attr> {
    let flags = AtFlags::SYMLINK_NOFOLLOW
        | if name.is_empty() {
            AtFlags::EMPTY_PATH
        } else {
            AtFlags::empty()
        };
    let s = rustix::fs::statx(
        dir,
        name,
        flags,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )?;
    Ok(Attr::from_statx(&s))
}

/// Serialises owner-override opens, so two of them never see each other's temporary mode.
static OWNER_OPEN: Mutex<()> = Mutex::new(());

/// Opens `dir/name` (a regular file the process owns) read-write by adding owner read and
/// write to its mode for the moment of the open. The file is pinned with an `O_PATH`
/// descriptor first, so the change and the open reach that file and never a symlink or a
/// file swapped in meanwhile. The old mode is put back only if the mode is still the
/// temporary one (a client's chmod in between wins).
fn open_as_owner(dir: &OwnedFd, name: &Path) -> io::Result<std::fs::File> {
    let _serial = OWNER_OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let pinned = Pinned::new(dir, name)?;
    let (mode, uid) = pinned.mode_and_owner()?;
    if mode & 0o170000 != 0o100000 || uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    let original = mode & 0o7777;
    let temporary = original | 0o600;
    pinned.chmod(temporary)?;
    let opened = rustix::fs::open(
        pinned.path.as_str(),
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    );
    if pinned
        .mode_and_owner()
        .is_ok_and(|(now, _)| now & 0o7777 == temporary)
    {
        pinned.chmod(original)?;
    }
    Ok(std::fs::File::from(opened?))
}

/// One directory entry pinned with an `O_PATH | O_NOFOLLOW` descriptor, and the
/// `/proc/self/fd` path that reaches exactly that entry: a change made through it goes to
/// that file, never through a symlink or to a file swapped in after the lookup.
pub struct Pinned {
    fd: OwnedFd,
    path: String,
}

impl Pinned {
    /// Pins `dir/name` (not following a final symlink).
    pub fn new(dir: &impl std::os::fd::AsFd, name: &Path) -> io::Result<Self> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        Ok(Self { fd, path })
    }

    /// The entry's `st_mode` (type and permission bits) and owner.
    pub fn mode_and_owner(&self) -> io::Result<(u32, u32)> {
        let s = rustix::fs::statx(&self.fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
        Ok((u32::from(s.stx_mode), s.stx_uid))
    }

    /// Sets the entry's permission bits (never of a symlink's target).
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        rustix::fs::chmod(self.path.as_str(), Mode::from_raw_mode(mode & 0o7777))?;
        Ok(())
    }
}

/// Checks that `name` is one path component a client may create, remove or rename (`.` and
/// `..` are not: LOOKUP handles them itself).
pub fn check_name(name: &[u8]) -> Result<&OsStr, VfsError> {
    if name.len() > NAME_MAX {
        return Err(VfsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(VfsError::InvalidName);
    }
    if name.starts_with(TEMP_PREFIX.as_bytes()) {
        return Err(VfsError::Reserved);
    }
    Ok(OsStr::from_bytes(name))
}

impl Vfs {
    /// Opens the share at `root` and indexes it.
    pub fn open(root: &Path, share: &str) -> io::Result<Self> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let attr = statx_at(&fd, OsStr::new(""))?;
        let mut id_source = share.as_bytes().to_vec();
        id_source.extend_from_slice(&attr.fileid.to_be_bytes());
        let vfs = Self {
            root: fd,
            share_id: fnv1a(&id_source) as u32,
            root_ino: attr.fileid,
            index: RwLock::new(Index::default()),
            walking: Mutex::new(()),
            last_walk: Mutex::new(None),
            last_walk_unsettled: AtomicBool::new(false),
            unsettled_misses: Mutex::new(HashMap::new()),
            waiters: AtomicUsize::new(0),
            absent: Mutex::new(HashMap::new()),
            walks: AtomicU64::new(0),
        };
        vfs.walk_after(Instant::now());
        Ok(vfs)
    }

    /// The handle of a file with `attr`.
    pub fn handle(&self, attr: &Attr) -> FileHandle {
        FileHandle {
            share_id: self.share_id,
            ino: attr.fileid,
            generation: attr.generation,
        }
    }

    /// Walks of the share so far (the first at start included).
    pub fn walks(&self) -> u64 {
        self.walks.load(Ordering::Relaxed)
    }

    /// Number of indexed files and folders.
    pub fn indexed(&self) -> usize {
        self.index.read().map(|i| i.paths.len()).unwrap_or(0)
    }

    /// Makes sure a walk of the share that started at or after `asked` has finished: waits
    /// for the one running, then walks unless another waiter already did.
    fn walk_after(&self, asked: Instant) {
        let _walk = self.walking.lock().unwrap_or_else(|e| e.into_inner());
        let last = *self.last_walk.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|started| started >= asked) {
            return;
        }
        let started = Instant::now();
        let sequence = self.index.read().map(|i| i.sequence).unwrap_or(0);
        self.walks.fetch_add(1, Ordering::Relaxed);
        let (found, unsettled) = self.walk();
        self.last_walk_unsettled.store(unsettled, Ordering::Release);
        if let Ok(mut index) = self.index.write() {
            // Entries changed while the walk ran are newer than what it saw; entries older
            // than the walk that it did not find are gone.
            index
                .paths
                .retain(|ino, (_, changed)| *changed > sequence || found.contains_key(ino));
            for (ino, rel) in found {
                match index.paths.get(&ino) {
                    Some((_, changed)) if *changed > sequence => {}
                    _ => {
                        index.paths.insert(ino, (rel, sequence));
                    }
                }
            }
        }
        tracing::debug!(
            indexed = self.indexed(),
            walk_ms = started.elapsed().as_millis() as u64,
            "share walked for the handle index"
        );
        *self.last_walk.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
    }

    /// Every file and folder of the share by inode (one path each), and whether a folder
    /// changed while it was read: its change time moved, or an entry vanished between
    /// readdir and statx (timestamps are coarse: two changes in one clock tick leave the
    /// same ctime, so the vanished entry is the surer sign).
    fn walk(&self) -> (HashMap<u64, PathBuf>, bool) {
        let mut found = HashMap::new();
        let mut unsettled = false;
        let changed_at = |fd: &OwnedFd| {
            rustix::fs::fstat(fd)
                .map(|st| (st.st_ctime, st.st_ctime_nsec))
                .ok()
        };
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            // Each folder is opened beneath the root without following any symlink, so a
            // folder swapped for a symlink during the walk is skipped, never walked into.
            let Ok(fd) = self.list_fd(&dir) else {
                continue;
            };
            let before = changed_at(&fd);
            let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = OsStr::from_bytes(entry.file_name().to_bytes());
                if name == "."
                    || name == ".."
                    || name.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
                {
                    continue;
                }
                let attr = match statx_at(&fd, name) {
                    Ok(attr) => attr,
                    Err(e) => {
                        // Listed, then gone: something moved it during the walk.
                        unsettled |= e.kind() == io::ErrorKind::NotFound;
                        continue;
                    }
                };
                let rel = dir.join(name);
                if attr.ftype == ftype::DIR {
                    pending.push(rel.clone());
                }
                found.entry(attr.fileid).or_insert(rel);
            }
            unsettled |= before.is_none() || changed_at(&fd) != before;
        }
        (found, unsettled)
    }

    /// Whether a walk that started less than [`ABSENT_FOR`] ago did not find `key`.
    fn known_absent(&self, key: (u64, u32)) -> bool {
        let absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        absent
            .get(&key)
            .is_some_and(|walked| walked.elapsed() < ABSENT_FOR)
    }

    fn note_absent(&self, key: (u64, u32)) {
        let walked = self
            .last_walk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Instant::now);
        let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        if absent.len() >= ABSENT_MAX {
            absent.clear();
        }
        absent.insert(key, walked);
    }

    /// Whether [`Vfs::resolve`] answers `bytes` without waiting for a walk: a handle that is
    /// not this server's, of another share, the root, indexed, or known absent. (An indexed
    /// file renamed behind the server's back still needs one: rare, and bounded by the walk.)
    pub fn resolves_without_walk(&self, bytes: &[u8]) -> bool {
        let Some(fh) = FileHandle::decode(bytes) else {
            return true;
        };
        fh.share_id != self.share_id
            || fh.ino == self.root_ino
            || self
                .index
                .read()
                .is_ok_and(|index| index.paths.contains_key(&fh.ino))
            || self.known_absent((fh.ino, fh.generation))
    }

    /// Resolves a wire handle.
    pub fn resolve(&self, bytes: &[u8]) -> Result<Node, VfsError> {
        let fh = FileHandle::decode(bytes).ok_or(VfsError::BadHandle)?;
        if fh.share_id != self.share_id {
            return Err(VfsError::Stale);
        }
        if fh.ino == self.root_ino {
            let attr = self.stat(Path::new(""))?;
            return Ok(Node {
                rel: PathBuf::new(),
                attr,
            });
        }
        let asked = Instant::now();
        let key = (fh.ino, fh.generation);
        for attempt in 0..2 {
            let known = self
                .index
                .read()
                .ok()
                .and_then(|i| i.paths.get(&fh.ino).map(|(rel, _)| rel.clone()));
            let found = known
                .as_ref()
                .and_then(|rel| self.stat(rel).ok().map(|attr| (rel.clone(), attr)));
            if let Some((rel, attr)) = &found
                && attr.fileid == fh.ino
            {
                if attr.generation == fh.generation {
                    return Ok(Node {
                        rel: rel.clone(),
                        attr: *attr,
                    });
                }
                if attempt == 1 {
                    // The inode number was reused by another file: the handle's is gone.
                    break;
                }
            }
            if attempt == 1 && known.is_some() {
                // The walk found the file, and it moved again before it could be looked
                // at (a rename storm): alive, so never STALE; the client tries again.
                return Err(VfsError::Busy);
            }
            if attempt == 0 {
                if self.known_absent(key) {
                    return Err(VfsError::Stale);
                }
                if self.waiters.fetch_add(1, Ordering::AcqRel) >= WALK_WAITERS {
                    self.waiters.fetch_sub(1, Ordering::AcqRel);
                    return Err(VfsError::Busy);
                }
                tracing::debug!(
                    ino = fh.ino,
                    "unknown file handle: waiting for a walk of the share"
                );
                self.walk_after(asked);
                self.waiters.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if self.last_walk_unsettled.load(Ordering::Acquire) {
            // Folders changed under the walk: the file may have been between two names.
            // Alive for a while (the client tries again), unless walks keep missing it.
            let mut misses = self
                .unsettled_misses
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if misses.len() >= ABSENT_MAX {
                misses.clear();
            }
            let first = *misses.entry(key).or_insert_with(Instant::now);
            if first.elapsed() < ABSENT_FOR {
                return Err(VfsError::Busy);
            }
            misses.remove(&key);
        }
        self.note_absent(key);
        Err(VfsError::Stale)
    }

    /// Records where a file is (after LOOKUP, CREATE, RENAME...).
    pub fn remember(&self, rel: &Path, attr: &Attr) {
        self.remember_all(&[(rel, *attr)]);
    }

    /// [`Vfs::remember`] for many files at once (a READDIRPLUS page), under one lock.
    pub fn remember_all<P: AsRef<Path>>(&self, files: &[(P, Attr)]) {
        if files.is_empty() {
            return;
        }
        if let Ok(mut index) = self.index.write() {
            index.sequence += 1;
            let sequence = index.sequence;
            for (rel, attr) in files {
                if attr.fileid != self.root_ino {
                    index
                        .paths
                        .insert(attr.fileid, (rel.as_ref().to_owned(), sequence));
                }
            }
        }
        if let Ok(mut absent) = self.absent.lock()
            && !absent.is_empty()
        {
            for (_, attr) in files {
                absent.remove(&(attr.fileid, attr.generation));
            }
        }
    }

    /// Forgets a removed file.
    pub fn forget(&self, ino: u64) {
        if let Ok(mut index) = self.index.write() {
            index.sequence += 1;
            index.paths.remove(&ino);
        }
    }

    /// Forgets the name `rel` of a file that has other names: if the index knew the file by
    /// this name, the next use of its handle finds another one by a walk.
    pub fn forget_name(&self, ino: u64, rel: &Path) {
        if let Ok(mut index) = self.index.write()
            && index.paths.get(&ino).is_some_and(|(known, _)| known == rel)
        {
            index.sequence += 1;
            index.paths.remove(&ino);
        }
    }

    /// Moves every indexed path under `from` to `to` (a renamed folder's contents).
    pub fn renamed(&self, from: &Path, to: &Path) {
        if let Ok(mut index) = self.index.write() {
            index.sequence += 1;
            let sequence = index.sequence;
            for (path, changed) in index.paths.values_mut() {
                if let Ok(rest) = path.strip_prefix(from) {
                    *path = if rest.as_os_str().is_empty() {
                        to.to_owned()
                    } else {
                        to.join(rest)
                    };
                    *changed = sequence;
                }
            }
        }
    }

    /// Opens the folder `rel` (empty: the root) as an `O_PATH` descriptor, beneath the root
    /// and without following any symlink.
    pub fn dir_fd(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_dir_beneath(rel, OFlags::PATH)
    }

    /// Opens the folder `rel` for reading its entries, beneath the root and without
    /// following any symlink.
    fn list_fd(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_dir_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK)
    }

    fn open_dir_beneath(&self, rel: &Path, access: OFlags) -> io::Result<OwnedFd> {
        let path: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS;
        Ok(rustix::fs::openat2(
            &self.root,
            path,
            access | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        )?)
    }

    /// Opens the folder `rel` for a change of its entries: readable, so that
    /// [`Vfs::sync_folder`] can `fsync` it, beneath the root and without following any
    /// symlink. A folder the server may not read (a squash-mode share whose mode refuses its
    /// own owner) is opened `O_PATH`: the change works, and its sync is skipped and logged.
    pub fn open_folder(&self, rel: &Path) -> io::Result<OwnedFd> {
        match self.open_dir_beneath(rel, OFlags::RDONLY) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => self.dir_fd(rel),
            other => other,
        }
    }

    /// Makes a folder's entries durable (`fsync`), as knfsd's `commit_metadata` does for a
    /// `sync` export before it answers a change; an error is the caller's to report.
    pub fn sync_folder(&self, folder: &OwnedFd) -> io::Result<()> {
        match rustix::fs::fsync(folder) {
            Err(rustix::io::Errno::BADF) => {
                tracing::warn!(
                    "a folder the server cannot read was changed; its entries were not synced"
                );
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// The parent folder's descriptor and the last component of `rel` (not the root).
    pub fn locate(&self, rel: &Path) -> Result<(OwnedFd, PathBuf), VfsError> {
        let name = rel.file_name().ok_or(VfsError::InvalidName)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.dir_fd(parent)?, PathBuf::from(name)))
    }

    /// Like [`Vfs::locate`], but the root is its own descriptor with the name `.` (for
    /// SETATTR, whose calls all accept that form).
    pub fn entry(&self, rel: &Path) -> Result<(OwnedFd, PathBuf), VfsError> {
        if rel.as_os_str().is_empty() {
            return Ok((self.dir_fd(rel)?, PathBuf::from(".")));
        }
        self.locate(rel)
    }

    /// Attributes of `rel`, without following a final symlink.
    pub fn stat(&self, rel: &Path) -> io::Result<Attr> {
        if rel.as_os_str().is_empty() {
            return statx_at(&self.root, OsStr::new(""));
        }
        let (dir, name) = self.locate(rel).map_err(|e| match e {
            VfsError::Io(e) => e,
            _ => io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        statx_at(&dir, name.as_os_str())
    }

    /// Whether `file` is a regular file and the one `attr` describes (same inode and
    /// generation), checked on the descriptor itself.
    pub fn is_same_regular_file(&self, file: &std::fs::File, attr: &Attr) -> bool {
        let Ok(fd) = file.try_clone().map(OwnedFd::from) else {
            return false;
        };
        statx_at(&fd, OsStr::new("")).is_ok_and(|now| {
            now.ftype == ftype::REG
                && now.fileid == attr.fileid
                && now.generation == attr.generation
        })
    }

    /// Opens a regular file of the share for I/O as the server (O_NOFOLLOW: a symlink is
    /// never opened through; O_NONBLOCK: a FIFO swapped in never blocks the open).
    pub fn open_file(&self, rel: &Path, write: bool) -> io::Result<std::fs::File> {
        let (dir, name) = self
            .locate(rel)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
        let fd = rustix::fs::openat(
            &dir,
            &name,
            access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Opens a regular file the server owns for writing although its mode refuses the
    /// server (squash mode: a 0444 file created and then written by its owner, after the
    /// descriptor cache let the creating descriptor go; callers have checked that the NFS
    /// caller may write, the owner always may, as with knfsd). Only for WRITE: reads never
    /// change a mode.
    pub fn open_file_as_owner(&self, rel: &Path) -> io::Result<std::fs::File> {
        let (dir, name) = self
            .locate(rel)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        open_as_owner(&dir, &name)
    }

    /// `statvfs` of the share's file system: (total bytes, free bytes, total files, free files).
    pub fn space(&self) -> io::Result<(u64, u64, u64, u64)> {
        let v = rustix::fs::fstatvfs(&self.root)?;
        Ok((
            v.f_blocks * v.f_frsize,
            v.f_bavail * v.f_frsize,
            v.f_files,
            v.f_favail,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components() {
        assert!(check_name(b"a.txt").is_ok());
        assert!(matches!(check_name(b""), Err(VfsError::InvalidName)));
        assert!(matches!(check_name(b".."), Err(VfsError::InvalidName)));
        assert!(matches!(check_name(b"a/b"), Err(VfsError::InvalidName)));
        assert!(matches!(check_name(b"a\0"), Err(VfsError::InvalidName)));
        assert!(matches!(
            check_name(&[b'x'; 256]),
            Err(VfsError::NameTooLong)
        ));
        assert!(matches!(
            check_name(format!("{TEMP_PREFIX}x").as_bytes()),
            Err(VfsError::Reserved)
        ));
    }

    #[test]
    fn handles_survive_renames_and_a_new_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"x").unwrap();
        let vfs = Vfs::open(dir.path(), "s").unwrap();
        assert_eq!(vfs.indexed(), 2);
        let attr = vfs.stat(Path::new("d/f")).unwrap();
        let handle = vfs.handle(&attr).encode();
        std::fs::rename(dir.path().join("d"), dir.path().join("e")).unwrap();
        vfs.renamed(Path::new("d"), Path::new("e"));
        assert_eq!(vfs.resolve(&handle).unwrap().rel, Path::new("e/f"));
        // A fresh server (restart) finds it by walking.
        std::fs::rename(dir.path().join("e/f"), dir.path().join("g")).unwrap();
        let again = Vfs::open(dir.path(), "s").unwrap();
        assert_eq!(again.resolve(&handle).unwrap().rel, Path::new("g"));
        std::fs::remove_file(dir.path().join("g")).unwrap();
        assert!(matches!(again.resolve(&handle), Err(VfsError::Stale)));
        assert!(matches!(again.resolve(b"junk"), Err(VfsError::BadHandle)));
        let root = again.stat(Path::new("")).unwrap();
        assert!(
            again
                .resolve(&again.handle(&root).encode())
                .unwrap()
                .rel
                .as_os_str()
                .is_empty()
        );
    }

    #[test]
    fn a_walk_racing_creates_keeps_every_file_they_recorded() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2000 {
            std::fs::write(dir.path().join(format!("old{i}")), b"").unwrap();
        }
        let vfs = std::sync::Arc::new(Vfs::open(dir.path(), "s").unwrap());
        let walker = {
            let vfs = std::sync::Arc::clone(&vfs);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    vfs.walk_after(Instant::now());
                }
            })
        };
        // CREATE's bookkeeping: the file is made, then recorded, while walks run.
        let mut handles = Vec::new();
        for i in 0..500 {
            let rel = PathBuf::from(format!("new{i}"));
            std::fs::write(dir.path().join(&rel), b"").unwrap();
            let attr = vfs.stat(&rel).unwrap();
            vfs.remember(&rel, &attr);
            handles.push(vfs.handle(&attr).encode());
        }
        walker.join().unwrap();
        let walks = vfs.walks();
        for handle in &handles {
            assert!(
                vfs.resolve(handle).is_ok(),
                "a live file was reported stale"
            );
        }
        assert_eq!(vfs.walks(), walks, "a recorded file was lost by a walk");
    }

    #[test]
    fn concurrent_misses_share_one_walk_and_other_names_stay_reachable() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        }
        let vfs = std::sync::Arc::new(Vfs::open(dir.path(), "s").unwrap());
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let attr = vfs.stat(Path::new(&format!("f{i}"))).unwrap();
                vfs.handle(&attr).encode()
            })
            .collect();
        // Renamed behind the server's back: every handle misses.
        for i in 0..10 {
            std::fs::rename(
                dir.path().join(format!("f{i}")),
                dir.path().join(format!("g{i}")),
            )
            .unwrap();
        }
        let before = vfs.walks();
        let threads: Vec<_> = handles
            .into_iter()
            .map(|handle| {
                let vfs = std::sync::Arc::clone(&vfs);
                std::thread::spawn(move || vfs.resolve(&handle).map(|n| n.rel))
            })
            .collect();
        for t in threads {
            assert!(
                t.join().unwrap().is_ok(),
                "a renamed file was reported stale"
            );
        }
        assert!(
            vfs.walks() - before <= 2,
            "{} walks for 10 misses",
            vfs.walks() - before
        );
        // A file with two names, indexed by the one removed: found by its other name.
        std::fs::hard_link(dir.path().join("g0"), dir.path().join("h0")).unwrap();
        let attr = vfs.stat(Path::new("g0")).unwrap();
        vfs.remember(Path::new("g0"), &attr);
        std::fs::remove_file(dir.path().join("g0")).unwrap();
        vfs.forget_name(attr.fileid, Path::new("g0"));
        let node = vfs.resolve(&vfs.handle(&attr).encode()).unwrap();
        assert_eq!(node.rel, Path::new("h0"));
        // A handle a walk did not find is stale, and asking again costs no walk.
        std::fs::remove_file(dir.path().join("h0")).unwrap();
        vfs.forget(attr.fileid);
        assert!(matches!(
            vfs.resolve(&vfs.handle(&attr).encode()),
            Err(VfsError::Stale)
        ));
        let walks = vfs.walks();
        assert!(matches!(
            vfs.resolve(&vfs.handle(&attr).encode()),
            Err(VfsError::Stale)
        ));
        assert_eq!(vfs.walks(), walks);
    }

    #[test]
    fn a_rename_storm_never_makes_a_live_file_stale_and_a_deleted_one_ends_stale() {
        let dir = tempfile::tempdir().unwrap();
        let vfs = Vfs::open(dir.path(), "s").unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        let attr = vfs.stat(Path::new("a")).unwrap();
        let handle = vfs.handle(&attr).encode();
        // The file moves between two names, and another file churns in the same folder,
        // as fast as possible: walks race the renames.
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let storm = {
            let (stop, root) = (std::sync::Arc::clone(&stop), dir.path().to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::rename(root.join("a"), root.join("b"));
                    let _ = std::fs::write(root.join("churn"), b"y");
                    let _ = std::fs::rename(root.join("b"), root.join("a"));
                    let _ = std::fs::remove_file(root.join("churn"));
                }
            })
        };
        let started = Instant::now();
        let (mut found, mut busy) = (0, 0);
        while started.elapsed() < Duration::from_millis(700) {
            match vfs.resolve(&handle) {
                Ok(_) => found += 1,
                Err(VfsError::Busy) => busy += 1,
                Err(other) => {
                    panic!("a live file was answered {other:?} ({found} found, {busy} busy)")
                }
            }
        }
        assert!(found > 0);
        // Deleted while the folder keeps changing: STALE once walks have missed it for
        // ABSENT_FOR, not JUKEBOX for ever.
        stop.store(true, Ordering::Relaxed);
        storm.join().unwrap();
        let _ = std::fs::remove_file(dir.path().join("a"));
        let _ = std::fs::remove_file(dir.path().join("b"));
        vfs.forget(attr.fileid);
        let churn = {
            let root = dir.path().to_owned();
            std::thread::spawn(move || {
                let until = Instant::now() + ABSENT_FOR + Duration::from_secs(2);
                while Instant::now() < until {
                    let _ = std::fs::write(root.join("churn"), b"y");
                    let _ = std::fs::remove_file(root.join("churn"));
                }
            })
        };
        let deadline = Instant::now() + ABSENT_FOR + Duration::from_secs(2);
        let outcome = loop {
            match vfs.resolve(&handle) {
                Err(VfsError::Busy) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.map(|n| n.rel),
            }
        };
        churn.join().unwrap();
        assert!(matches!(outcome, Err(VfsError::Stale)), "{outcome:?}");
    }

    #[test]
    fn at_most_a_few_requests_wait_for_a_walk_the_rest_are_told_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let vfs = std::sync::Arc::new(Vfs::open(dir.path(), "s").unwrap());
        let unknown = |ino: u64| {
            FileHandle {
                share_id: vfs.share_id,
                ino,
                generation: 1,
            }
            .encode()
        };
        assert!(!vfs.resolves_without_walk(&unknown(1_000_000)));
        // A walk in progress (its lock held here): misses queue behind it.
        let walk = vfs.walking.lock().unwrap();
        let waiting: Vec<_> = (0..WALK_WAITERS as u64)
            .map(|i| {
                let (vfs, handle) = (std::sync::Arc::clone(&vfs), unknown(1_000_000 + i));
                std::thread::spawn(move || vfs.resolve(&handle).map(|_| ()))
            })
            .collect();
        while vfs.waiters.load(Ordering::Acquire) < WALK_WAITERS {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(
            vfs.resolve(&unknown(2_000_000)),
            Err(VfsError::Busy)
        ));
        drop(walk);
        for t in waiting {
            assert!(matches!(t.join().unwrap(), Err(VfsError::Stale)));
        }
        // Known absent now: answered without a walk.
        assert!(vfs.resolves_without_walk(&unknown(1_000_000)));
    }

    #[test]
    fn paths_never_go_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let vfs = Vfs::open(dir.path(), "s").unwrap();
        assert!(vfs.dir_fd(Path::new("link")).is_err());
        assert_eq!(vfs.stat(Path::new("link")).unwrap().ftype, ftype::LNK);
        assert!(vfs.open_file(Path::new("link"), false).is_err());
    }
}

//! NFS version 3 (RFC 1813): the 22 procedures over [`Vfs`]. Each procedure decodes its
//! arguments, checks the export's access and the caller's permissions, does the work
//! (mutations under the caller's file-system identity, see `export::assume`), and encodes
//! its results. Failures carry the attributes of the objects the arguments name, as they are
//! after the failure ([`Exporter::failure_body`]).
//!
//! Changes to a folder's entries (CREATE, MKDIR, SYMLINK, REMOVE, RMDIR, RENAME, LINK) run
//! under the folder's lock ([`super::dirlock`]) with the folder's attributes taken just
//! before and after, so `wcc_data` carries both, and are made durable before the reply as
//! a `sync` export does (knfsd's `commit_metadata`): the folder is `fsync`ed, and so is a
//! created file and a file whose size SETATTR changed. WRITE and COMMIT report no
//! pre-operation attributes: writes to a file are not serialised, so "before" could hide
//! another client's write.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use super::Exporter;
use super::export::{Access, Creds};
use super::vfs::{Attr, Node, Pinned, VfsError, check_name, ftype, stat_entry};
use super::xdr::{Decoder, Encoder, XdrError};
use crate::identity::IdentityMode;

/// Largest READ and WRITE.
pub const MAX_IO: u32 = 1 << 20;
/// Reads up to this size are sent as one buffer (`pread` + one write) instead of `sendfile`.
pub const SMALL_READ: usize = 16 * 1024;
const MAX_HANDLE: usize = 64;
/// Largest READDIR/READDIRPLUS reply body, whatever the client's `maxcount` (the same as
/// the largest READ, which every client already accepts).
pub const READDIR_MAX_REPLY: usize = MAX_IO as usize;
const MAX_PATH: usize = 4096;

/// Procedure names, by number (metrics labels).
pub const PROCEDURES: [&str; 22] = [
    "NULL",
    "GETATTR",
    "SETATTR",
    "LOOKUP",
    "ACCESS",
    "READLINK",
    "READ",
    "WRITE",
    "CREATE",
    "MKDIR",
    "SYMLINK",
    "MKNOD",
    "REMOVE",
    "RMDIR",
    "RENAME",
    "LINK",
    "READDIR",
    "READDIRPLUS",
    "FSSTAT",
    "FSINFO",
    "PATHCONF",
    "COMMIT",
];

/// `nfsstat3` values used here.
pub mod status {
    /// Success.
    pub const OK: u32 = 0;
    /// Not owner.
    pub const PERM: u32 = 1;
    /// No such file or directory.
    pub const NOENT: u32 = 2;
    /// I/O error.
    pub const IO: u32 = 5;
    /// Permission denied.
    pub const ACCES: u32 = 13;
    /// File exists.
    pub const EXIST: u32 = 17;
    /// Cross-device link.
    pub const XDEV: u32 = 18;
    /// Not a directory.
    pub const NOTDIR: u32 = 20;
    /// Is a directory.
    pub const ISDIR: u32 = 21;
    /// Invalid argument.
    pub const INVAL: u32 = 22;
    /// File too large.
    pub const FBIG: u32 = 27;
    /// No space left (the share's quota or the disk).
    pub const NOSPC: u32 = 28;
    /// Read-only export.
    pub const ROFS: u32 = 30;
    /// Too many links.
    pub const MLINK: u32 = 31;
    /// Name too long.
    pub const NAMETOOLONG: u32 = 63;
    /// Directory not empty.
    pub const NOTEMPTY: u32 = 66;
    /// Quota exceeded.
    pub const DQUOT: u32 = 69;
    /// Stale handle.
    pub const STALE: u32 = 70;
    /// A READDIR cookie that names no position.
    pub const BAD_COOKIE: u32 = 10003;
    /// Not a handle of this server.
    pub const BADHANDLE: u32 = 10001;
    /// SETATTR guard mismatch.
    pub const NOT_SYNC: u32 = 10002;
    /// Operation not supported.
    pub const NOTSUPP: u32 = 10004;
    /// Server fault.
    pub const SERVERFAULT: u32 = 10006;
    /// Try again later (the file changed under the request).
    pub const JUKEBOX: u32 = 10008;
}

/// The metrics label of a status.
pub fn status_label(code: u32) -> &'static str {
    match code {
        status::OK => "ok",
        status::PERM => "perm",
        status::NOENT => "noent",
        status::IO => "io",
        status::ACCES => "acces",
        status::EXIST => "exist",
        status::XDEV => "xdev",
        status::NOTDIR => "notdir",
        status::ISDIR => "isdir",
        status::INVAL => "inval",
        status::FBIG => "fbig",
        status::NOSPC => "nospc",
        status::ROFS => "rofs",
        status::MLINK => "mlink",
        status::NAMETOOLONG => "nametoolong",
        status::NOTEMPTY => "notempty",
        status::DQUOT => "dquot",
        status::STALE => "stale",
        status::JUKEBOX => "jukebox",
        status::BADHANDLE => "badhandle",
        status::BAD_COOKIE => "bad_cookie",
        status::NOT_SYNC => "not_sync",
        status::NOTSUPP => "notsupp",
        _ => "serverfault",
    }
}

/// Maps a kernel error to `nfsstat3`.
pub fn status_of(e: &io::Error) -> u32 {
    match e.raw_os_error() {
        Some(libc::EPERM) => status::PERM,
        Some(libc::ENOENT) => status::NOENT,
        Some(libc::EACCES) | Some(libc::EXDEV) => status::ACCES,
        Some(libc::EEXIST) => status::EXIST,
        Some(libc::ENOTDIR) => status::NOTDIR,
        Some(libc::EISDIR) => status::ISDIR,
        Some(libc::EINVAL) | Some(libc::ELOOP) => status::INVAL,
        Some(libc::EFBIG) => status::FBIG,
        Some(libc::ENOSPC) => status::NOSPC,
        Some(libc::EROFS) => status::ROFS,
        Some(libc::EMLINK) => status::MLINK,
        Some(libc::ENAMETOOLONG) => status::NAMETOOLONG,
        Some(libc::ENOTEMPTY) => status::NOTEMPTY,
        Some(libc::EDQUOT) => status::DQUOT,
        Some(libc::ESTALE) => status::STALE,
        Some(libc::EAGAIN) => status::JUKEBOX,
        Some(libc::EOPNOTSUPP) => status::NOTSUPP,
        _ => status::IO,
    }
}

/// Why a procedure failed.
#[derive(Debug)]
pub enum Fail {
    /// The arguments do not decode (`GARBAGE_ARGS`).
    Garbage,
    /// An NFS status.
    Status(u32),
}

impl From<XdrError> for Fail {
    fn from(_: XdrError) -> Self {
        Fail::Garbage
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Status(status_of(&e))
    }
}

impl From<rustix::io::Errno> for Fail {
    fn from(e: rustix::io::Errno) -> Self {
        Fail::Status(status_of(&e.into()))
    }
}

impl From<VfsError> for Fail {
    fn from(e: VfsError) -> Self {
        Fail::Status(match e {
            VfsError::BadHandle => status::BADHANDLE,
            VfsError::Stale => status::STALE,
            VfsError::InvalidName => status::INVAL,
            VfsError::NameTooLong => status::NAMETOOLONG,
            VfsError::Reserved => status::ACCES,
            VfsError::Busy => status::JUKEBOX,
            VfsError::Io(e) => status_of(&e),
        })
    }
}

/// A procedure's successful result.
pub enum Done {
    /// The result body (after the status word).
    Body(Encoder),
    /// A READ whose data goes out by `sendfile`: the body up to the opaque length, then
    /// `count` bytes of `file` from `offset`, then padding.
    Read {
        /// Result body up to and including the data length.
        head: Encoder,
        /// The file.
        file: Arc<File>,
        /// Where the data starts.
        offset: u64,
        /// Data bytes.
        count: usize,
    },
}

/// Zero words a failed reply of procedure `proc_` carries after its status (empty
/// `post_op_attr`s and `wcc_data`s).
pub fn failure_words(proc_: u32) -> usize {
    match proc_ {
        1 => 0,
        3 | 4 | 5 | 6 | 16 | 17 | 18 | 19 | 20 => 1,
        15 => 3,
        14 => 4,
        _ => 2,
    }
}

/// A folder's attributes around a change of its entries (`wcc_data`).
struct FolderChange {
    before: Option<Attr>,
    after: Option<Attr>,
}

/// Who is calling, as decided for this request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Identity after squashing.
    pub creds: Creds,
    /// What the client's network may do.
    pub access: Access,
}

fn time(e: &mut Encoder, t: (u32, u32)) {
    e.u32(t.0).u32(t.1);
}

/// Encodes `fattr3`.
pub fn fattr(e: &mut Encoder, a: &Attr, fsid: u64) {
    e.u32(a.ftype)
        .u32(a.mode)
        .u32(a.nlink)
        .u32(a.uid)
        .u32(a.gid);
    e.u64(a.size)
        .u64(a.used)
        .u32(a.rdev.0)
        .u32(a.rdev.1)
        .u64(fsid)
        .u64(a.fileid);
    time(e, a.atime);
    time(e, a.mtime);
    time(e, a.ctime);
}

/// Attributes to set (`sattr3`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New mode bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time: None keep, Some(None) server time, Some(Some(t)) client time.
    pub atime: Option<Option<(u32, u32)>>,
    /// New modification time, likewise.
    pub mtime: Option<Option<(u32, u32)>>,
}

fn set_time(d: &mut Decoder) -> Result<Option<Option<(u32, u32)>>, XdrError> {
    Ok(match d.u32()? {
        0 => None,
        1 => Some(None),
        2 => Some(Some((d.u32()?, d.u32()?))),
        _ => return Err(XdrError::Invalid("time_how")),
    })
}

/// Decodes `sattr3`.
pub fn sattr(d: &mut Decoder) -> Result<SetAttr, XdrError> {
    let opt32 = |d: &mut Decoder| -> Result<Option<u32>, XdrError> {
        if d.bool()? {
            Ok(Some(d.u32()?))
        } else {
            Ok(None)
        }
    };
    let mode = opt32(d)?;
    // (uid_t)-1 is no identity: ignored, as knfsd does (chown would read it as "keep").
    let uid = opt32(d)?.filter(|id| *id != u32::MAX);
    let gid = opt32(d)?.filter(|id| *id != u32::MAX);
    let size = if d.bool()? { Some(d.u64()?) } else { None };
    Ok(SetAttr {
        mode,
        uid,
        gid,
        size,
        atime: set_time(d)?,
        mtime: set_time(d)?,
    })
}

fn timespec(t: Option<Option<(u32, u32)>>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(None) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(Some((s, n))) => Timespec {
            tv_sec: i64::from(s),
            tv_nsec: i64::from(n),
        },
    }
}

/// Sets the mode of `dir/name` without ever following a symlink: the entry is pinned with an
/// `O_PATH | O_NOFOLLOW` descriptor, checked, and changed through `/proc/self/fd`, so a
/// symlink swapped in meanwhile cannot redirect the change outside the share.
fn chmod_exact(dir: &impl std::os::fd::AsFd, name: &Path, mode: u32) -> Result<(), Fail> {
    let pinned = Pinned::new(dir, name)?;
    if pinned.mode_and_owner()?.0 & 0o170000 == 0o120000 {
        return Ok(()); // Linux symlinks have no mode of their own.
    }
    pinned.chmod(mode)?;
    Ok(())
}

/// Attributes of an open file or folder.
fn fd_attr(fd: &impl std::os::fd::AsFd) -> io::Result<Attr> {
    let s = rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::BASIC_STATS | rustix::fs::StatxFlags::BTIME,
    )?;
    Ok(Attr::from_statx(&s))
}

/// Runs `f` under the caller's file-system identity, then returns to the server's (posix
/// identities; in squash mode everything runs as the process).
fn as_caller<T>(ex: &Exporter, caller: &Caller, f: impl FnOnce() -> T) -> T {
    if ex.identity != IdentityMode::Posix {
        return f();
    }
    /// Returns the thread to the server's identity however `f` ends (a panic included), so
    /// a worker never runs a later request as this caller.
    struct Restore<'a>(&'a Creds);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            super::export::assume(self.0);
        }
    }
    super::export::assume(&caller.creds);
    let _restore = Restore(&ex.server_creds);
    f()
}

impl Exporter {
    fn fsid(&self) -> u64 {
        u64::from(self.vfs.share_id)
    }

    fn post_op_attr(&self, e: &mut Encoder, attr: Option<&Attr>) {
        match attr {
            Some(a) => {
                e.bool(true);
                fattr(e, a, self.fsid());
            }
            None => {
                e.bool(false);
            }
        }
    }

    /// `wcc_data`: the attributes before the change (size, mtime, ctime) and after it.
    fn wcc(&self, e: &mut Encoder, before: Option<&Attr>, after: Option<&Attr>) {
        match before {
            Some(b) => {
                e.bool(true).u64(b.size);
                time(e, b.mtime);
                time(e, b.ctime);
            }
            None => {
                e.bool(false);
            }
        }
        self.post_op_attr(e, after);
    }

    fn post_op_fh(&self, e: &mut Encoder, attr: &Attr) {
        e.bool(true).opaque(&self.vfs.handle(attr).encode());
    }

    fn node(&self, d: &mut Decoder) -> Result<Node, Fail> {
        Ok(self.vfs.resolve(d.opaque(MAX_HANDLE)?)?)
    }

    fn dir(&self, d: &mut Decoder) -> Result<Node, Fail> {
        let node = self.node(d)?;
        if !node.attr.is_dir() {
            return Err(Fail::Status(status::NOTDIR));
        }
        Ok(node)
    }

    fn writable(&self, caller: &Caller) -> Result<(), Fail> {
        if self.read_only || caller.access == Access::ReadOnly {
            return Err(Fail::Status(status::ROFS));
        }
        Ok(())
    }

    /// READ and WRITE: the mode bits, or the owner (see [`Creds::permits`]).
    fn permits(caller: &Caller, a: &Attr, want: u32) -> bool {
        caller.creds.permits(a.mode, a.uid, a.gid, want)
    }

    /// ACCESS, LOOKUP and READDIR: the mode bits alone (see [`Creds::may`]).
    fn may(caller: &Caller, a: &Attr, want: u32) -> bool {
        caller.creds.may(a.mode, a.uid, a.gid, want)
    }

    fn stat(&self, rel: &Path) -> Option<Attr> {
        self.vfs.stat(rel).ok()
    }

    /// What a failed procedure carries after its status: the attributes, as they are now,
    /// of the objects its arguments name (`post_op_attr`, or `wcc_data` with no
    /// pre-operation part), as RFC 1813 allows and knfsd sends, so a client revalidates its
    /// caches from a failed LOOKUP or CREATE too. `None`: no attributes (a stale or unknown
    /// handle, or a handle that would need a walk of the share to place).
    pub fn failure_body(&self, proc_: u32, code: u32, mut args: Decoder) -> Option<Encoder> {
        if matches!(code, status::STALE | status::BADHANDLE | status::JUKEBOX) {
            return None;
        }
        let attr_of = |d: &mut Decoder| {
            let handle = d.opaque(MAX_HANDLE).ok()?;
            // A failure's attributes are never worth a walk of the share.
            if !self.vfs.resolves_without_walk(handle) {
                return None;
            }
            self.vfs.resolve(handle).ok().map(|node| node.attr)
        };
        let mut e = Encoder::with_capacity(240);
        match proc_ {
            3..=6 | 16..=20 => {
                let attr = attr_of(&mut args);
                self.post_op_attr(&mut e, attr.as_ref());
            }
            2 | 7..=13 | 21 => {
                let attr = attr_of(&mut args);
                self.wcc(&mut e, None, attr.as_ref());
            }
            14 => {
                let from = attr_of(&mut args);
                let _from_name = args.opaque(MAX_PATH);
                let to = attr_of(&mut args);
                self.wcc(&mut e, None, from.as_ref());
                self.wcc(&mut e, None, to.as_ref());
            }
            15 => {
                let file = attr_of(&mut args);
                let dir = attr_of(&mut args);
                self.post_op_attr(&mut e, file.as_ref());
                self.wcc(&mut e, None, dir.as_ref());
            }
            _ => return None,
        }
        Some(e)
    }

    /// Runs procedure `proc_`.
    pub fn nfs3(&self, proc_: u32, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        match proc_ {
            0 => Ok(Done::Body(Encoder::default())),
            1 => self.getattr(d),
            2 => self.setattr(caller, d),
            3 => self.lookup(caller, d),
            4 => self.access(caller, d),
            5 => self.readlink(d),
            6 => self.read(caller, d),
            7 => self.write(caller, d),
            8 => self.create(caller, d),
            9 => self.mkdir(caller, d),
            10 => self.symlink(caller, d),
            11 => Err(Fail::Status(status::NOTSUPP)),
            12 => self.remove(caller, d, false),
            13 => self.remove(caller, d, true),
            14 => self.rename(caller, d),
            15 => self.link(caller, d),
            16 => self.readdir(caller, d, false),
            17 => self.readdir(caller, d, true),
            18 => self.fsstat(d),
            19 => self.fsinfo(d),
            20 => self.pathconf(d),
            21 => self.commit(d),
            _ => Err(Fail::Garbage),
        }
    }

    fn getattr(&self, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let mut e = Encoder::with_capacity(96);
        fattr(&mut e, &node.attr, self.fsid());
        Ok(Done::Body(e))
    }

    /// Applies `set` to `rel` (its attributes `attr`) as the caller; a size change returns
    /// the truncated file's descriptor, for the caller to make the change durable.
    fn apply(
        &self,
        caller: &Caller,
        rel: &Path,
        attr: &Attr,
        set: &SetAttr,
    ) -> Result<Option<OwnedFd>, Fail> {
        let mut truncated = None;
        let (dir, name) = self.vfs.entry(rel)?;
        if let Some(size) = set.size {
            if attr.ftype != ftype::REG {
                return Err(Fail::Status(if attr.is_dir() {
                    status::ISDIR
                } else {
                    status::INVAL
                }));
            }
            let mut reservation = self.usage.reservation();
            reservation
                .grow(size.saturating_sub(attr.size))
                .map_err(|_| Fail::Status(status::NOSPC))?;
            truncated = Some(as_caller(self, caller, || -> Result<OwnedFd, Fail> {
                // O_NONBLOCK and the type check: a FIFO or device swapped in is refused
                // instead of blocking this thread or being truncated.
                let fd = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let st = rustix::fs::fstat(&fd)?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    != rustix::fs::FileType::RegularFile
                    || st.st_ino != attr.fileid
                {
                    return Err(Fail::Status(status::JUKEBOX));
                }
                rustix::fs::ftruncate(&fd, size)?;
                Ok(fd)
            })?);
            self.usage.record_write(Some(attr.size), size);
        }
        as_caller(self, caller, || -> Result<(), Fail> {
            if let Some(mode) = set.mode {
                // Pinned with O_PATH | O_NOFOLLOW: a symlink swapped in after the lookup is
                // never followed out of the share.
                chmod_exact(&dir, &name, mode)?;
            }
            if set.uid.is_some() || set.gid.is_some() {
                rustix::fs::chownat(
                    &dir,
                    &name,
                    set.uid.map(rustix::process::Uid::from_raw),
                    set.gid.map(rustix::process::Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            if set.atime.is_some() || set.mtime.is_some() {
                let times = Timestamps {
                    last_access: timespec(set.atime),
                    last_modification: timespec(set.mtime),
                };
                rustix::fs::utimensat(&dir, &name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            }
            Ok(())
        })?;
        Ok(truncated)
    }

    fn setattr(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let set = sattr(d)?;
        let guard = if d.bool()? {
            Some((d.u32()?, d.u32()?))
        } else {
            None
        };
        self.writable(caller)?;
        let held = self.dirs.lock(node.attr.fileid);
        let before = self.stat(&node.rel).unwrap_or(node.attr);
        if guard.is_some_and(|g| g != before.ctime) {
            return Err(Fail::Status(status::NOT_SYNC));
        }
        let truncated = self.apply(caller, &node.rel, &before, &set)?;
        let after = self.stat(&node.rel);
        drop(held);
        if let Some(file) = truncated {
            // The new size is durable before the reply (outside the lock: writing back a
            // large dirty file may take a while).
            rustix::fs::fsync(&file)?;
        }
        let mut e = Encoder::with_capacity(130);
        self.wcc(&mut e, Some(&before), after.as_ref());
        Ok(Done::Body(e))
    }

    fn lookup(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let dir = self.dir(d)?;
        let name = d.opaque(MAX_PATH)?;
        if !Self::may(caller, &dir.attr, 1) {
            return Err(Fail::Status(status::ACCES));
        }
        let attr = match name {
            b"." => dir.attr,
            b".." => self.vfs.stat(dir.rel.parent().unwrap_or(Path::new("")))?,
            _ => {
                let name = check_name(name).map_err(|e| match e {
                    VfsError::Reserved => Fail::Status(status::NOENT),
                    other => other.into(),
                })?;
                let rel = dir.rel.join(name);
                let attr = self.vfs.stat(&rel)?;
                self.vfs.remember(&rel, &attr);
                attr
            }
        };
        let mut e = Encoder::with_capacity(220);
        e.opaque(&self.vfs.handle(&attr).encode());
        self.post_op_attr(&mut e, Some(&attr));
        self.post_op_attr(&mut e, Some(&dir.attr));
        Ok(Done::Body(e))
    }

    fn access(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let wanted = d.u32()?;
        let a = &node.attr;
        let can = |bits| Self::may(caller, a, bits);
        let read_only = self.read_only || caller.access == Access::ReadOnly;
        let mut granted = 0;
        if can(4) {
            granted |= 0x01;
        }
        if a.is_dir() && can(1) {
            granted |= 0x02;
        }
        if !read_only && can(2) {
            granted |= 0x04 | 0x08;
            if a.is_dir() {
                granted |= 0x10;
            }
        }
        if !a.is_dir() && can(1) && (caller.creds.uid != 0 || a.mode & 0o111 != 0) {
            granted |= 0x20;
        }
        let mut e = Encoder::with_capacity(100);
        self.post_op_attr(&mut e, Some(a));
        e.u32(granted & wanted);
        Ok(Done::Body(e))
    }

    fn readlink(&self, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        if node.attr.ftype != ftype::LNK {
            return Err(Fail::Status(status::INVAL));
        }
        let (dir, name) = self.vfs.locate(&node.rel)?;
        let target = rustix::fs::readlinkat(&dir, &name, Vec::new())?;
        let mut e = Encoder::with_capacity(100 + target.as_bytes().len());
        self.post_op_attr(&mut e, Some(&node.attr));
        e.opaque(target.as_bytes());
        Ok(Done::Body(e))
    }

    fn regular(node: &Node) -> Result<(), Fail> {
        match node.attr.ftype {
            ftype::REG => Ok(()),
            ftype::DIR => Err(Fail::Status(status::ISDIR)),
            _ => Err(Fail::Status(status::INVAL)),
        }
    }

    fn read(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let offset = d.u64()?;
        let wanted = d.u32()?.min(MAX_IO) as u64;
        Self::regular(&node)?;
        if !Self::permits(caller, &node.attr, 4) {
            return Err(Fail::Status(status::ACCES));
        }
        let file = self.fds.get(&self.vfs, &node, false)?;
        let size = node.attr.size;
        let count = if offset >= size {
            0
        } else {
            wanted.min(size - offset)
        } as usize;
        // Small READs, and every READ of a file whose disk failed a `sendfile`, are read
        // into the reply before it is sent: an I/O error is then an NFS3ERR_IO reply.
        let buffered = count <= SMALL_READ || self.failed_reads.contains(node.attr.fileid);
        let mut e = Encoder::with_capacity(128 + if buffered { count + 3 } else { 0 });
        self.post_op_attr(&mut e, Some(&node.attr));
        if buffered {
            // Read straight into the reply: count, eof and the data length are patched once
            // the bytes are in (the file may have shrunk since its attributes were taken).
            let at = e.len();
            e.u32(0).bool(false).u32(0);
            let buffer = e.bytes_mut();
            buffer.resize(at + 12 + count, 0);
            let filled = crate::io::small::pread_into(&file, offset, &mut buffer[at + 12..])?;
            buffer.truncate(at + 12 + filled);
            // Short: the file shrank since its attributes were taken, and this is its end.
            let eof = filled < count || offset + filled as u64 >= size;
            buffer[at..at + 4].copy_from_slice(&(filled as u32).to_be_bytes());
            buffer[at + 4..at + 8].copy_from_slice(&u32::from(eof).to_be_bytes());
            buffer[at + 8..at + 12].copy_from_slice(&(filled as u32).to_be_bytes());
            buffer.resize(at + 12 + filled.div_ceil(4) * 4, 0);
            if filled > 0 {
                self.metrics.record_transfer(
                    "nfs",
                    &crate::io::Transfer::single(
                        crate::io::TransferPath::Copy,
                        filled as u64,
                        Some(if count <= SMALL_READ {
                            crate::io::FallbackReason::SmallBody
                        } else {
                            crate::io::FallbackReason::ReadError
                        }),
                    ),
                );
            }
            return Ok(Done::Body(e));
        }
        let eof = offset + count as u64 >= size;
        e.u32(count as u32).bool(eof).u32(count as u32);
        Ok(Done::Read {
            head: e,
            file,
            offset,
            count,
        })
    }

    fn write(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let offset = d.u64()?;
        let _count = d.u32()?;
        let stable = d.u32()?;
        let data = d.opaque(MAX_IO as usize)?;
        self.writable(caller)?;
        Self::regular(&node)?;
        if !Self::permits(caller, &node.attr, 2) {
            return Err(Fail::Status(status::ACCES));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Fail::Status(status::FBIG))?;
        let mut reservation = self.usage.reservation();
        reservation
            .grow(end.saturating_sub(node.attr.size))
            .map_err(|_| Fail::Status(status::NOSPC))?;
        let file = self.fds.get(&self.vfs, &node, true)?;
        file.write_all_at(data, offset)?;
        let committed = match stable {
            0 => 0,
            1 => {
                file.sync_data().inspect_err(|e| self.writeback_failed(e))?;
                1
            }
            _ => {
                file.sync_all().inspect_err(|e| self.writeback_failed(e))?;
                2
            }
        };
        // Sizes seen before and after: other writers may have grown the file meanwhile.
        let after = fd_attr(&*file).ok();
        self.usage.record_write(
            Some(node.attr.size),
            after.map_or(end.max(node.attr.size), |a| a.size),
        );
        drop(reservation);
        self.metrics.add_received(data.len() as u64);
        let mut e = Encoder::with_capacity(120);
        self.wcc(&mut e, None, after.as_ref());
        e.u32(data.len() as u32)
            .u32(committed)
            .opaque_fixed(&self.write_verifier());
        Ok(Done::Body(e))
    }

    /// The result of MKDIR and SYMLINK, once the folder holding the new entry is durable.
    fn created(&self, rel: &Path, parent: &OwnedFd, change: FolderChange) -> Result<Done, Fail> {
        self.vfs.sync_folder(parent)?;
        let attr = self.vfs.stat(rel)?;
        self.vfs.remember(rel, &attr);
        let mut e = Encoder::with_capacity(270);
        self.post_op_fh(&mut e, &attr);
        self.post_op_attr(&mut e, Some(&attr));
        self.wcc(&mut e, change.before.as_ref(), change.after.as_ref());
        Ok(Done::Body(e))
    }

    /// Runs `change` on the folder `dir` (opened as `fd`) under its lock, with its
    /// attributes just before and after. The folder opened by path must still be the one
    /// the handle names (a concurrent rename may have put another there): JUKEBOX, the
    /// client retries, otherwise.
    fn change_folder<T>(
        &self,
        dir: &Node,
        fd: &OwnedFd,
        change: impl FnOnce() -> Result<T, Fail>,
    ) -> Result<(T, FolderChange), Fail> {
        let _held = self.dirs.lock(dir.attr.fileid);
        let before = fd_attr(fd)?;
        if (before.fileid, before.generation) != (dir.attr.fileid, dir.attr.generation) {
            return Err(Fail::Status(status::JUKEBOX));
        }
        let result = change()?;
        let after = fd_attr(fd).ok();
        Ok((
            result,
            FolderChange {
                before: Some(before),
                after,
            },
        ))
    }

    fn new_entry(&self, caller: &Caller, d: &mut Decoder) -> Result<(Node, PathBuf), Fail> {
        let dir = self.dir(d)?;
        let name = d.opaque(MAX_PATH)?.to_vec();
        self.writable(caller)?;
        let rel = dir.rel.join(check_name(&name)?);
        Ok((dir, rel))
    }

    fn create(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let (dir, rel) = self.new_entry(caller, d)?;
        let name = rel.file_name().ok_or(Fail::Status(status::INVAL))?;
        let how = d.u32()?;
        let (set, verifier) = match how {
            0 | 1 => (sattr(d)?, None),
            2 => {
                let v = d.opaque_fixed(8)?;
                (
                    SetAttr::default(),
                    Some((
                        u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                        u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
                    )),
                )
            }
            _ => return Err(Fail::Garbage),
        };
        let parent = self.vfs.open_folder(&dir.rel)?;
        let mode = set.mode.unwrap_or(0o644) & 0o7777;
        // Try to create first (the common case); an existing file is an error for GUARDED,
        // a retransmission check for EXCLUSIVE, and simply looked at for UNCHECKED. A new
        // file is opened read-write whatever its mode, and that descriptor serves the WRITEs
        // that follow (a file created read-only, as `cp` of a 0444 file or git do, still
        // receives its data).
        let (opened, change) = self.change_folder(&dir, &parent, || {
            Ok(as_caller(self, caller, || {
                match rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::RDWR
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(mode),
                ) {
                    Ok(fd) => {
                        // Exactly the client's mode, whatever the process umask.
                        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
                        Ok((fd, true))
                    }
                    Err(rustix::io::Errno::EXIST) if how == 0 => rustix::fs::openat(
                        &parent,
                        name,
                        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map(|fd| (fd, false)),
                    Err(e) => Err(e),
                }
            }))
        })?;
        let mut new_file = None;
        let (attr, created) = match opened {
            Ok((fd, created)) => {
                let attr = fd_attr(&fd)?;
                if !created && attr.ftype != ftype::REG {
                    return Err(Fail::Status(status::EXIST));
                }
                if created {
                    new_file = Some(File::from(fd));
                }
                (attr, created)
            }
            Err(rustix::io::Errno::EXIST) if verifier.is_some() => {
                let existing = self.vfs.stat(&rel)?;
                let (a, m) = verifier.unwrap_or_default();
                if existing.atime.0 != a || existing.mtime.0 != m {
                    return Err(Fail::Status(status::EXIST));
                }
                (existing, false)
            }
            Err(e) => return Err(e.into()),
        };
        if created {
            self.usage.record_write(None, 0);
        }
        let mut rest = SetAttr { mode: None, ..set };
        if let (Some((a, m)), true) = (verifier, created) {
            // EXCLUSIVE: keep the verifier in the times, so a retransmitted CREATE
            // recognises its own file (what knfsd does).
            rest.atime = Some(Some((a, 0)));
            rest.mtime = Some(Some((m, 0)));
        }
        let attr = if rest == SetAttr::default() {
            attr
        } else {
            self.apply(caller, &rel, &attr, &rest)?;
            self.vfs.stat(&rel)?
        };
        if let Some(file) = new_file {
            // The new file (with an EXCLUSIVE create's verifier) and its name are durable
            // before the reply; the descriptor then serves the WRITEs that follow.
            file.sync_all()?;
            self.vfs.sync_folder(&parent)?;
            self.fds.insert(&attr, file, true);
        }
        self.vfs.remember(&rel, &attr);
        let mut e = Encoder::with_capacity(270);
        self.post_op_fh(&mut e, &attr);
        self.post_op_attr(&mut e, Some(&attr));
        self.wcc(&mut e, change.before.as_ref(), change.after.as_ref());
        Ok(Done::Body(e))
    }

    fn mkdir(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let (dir, rel) = self.new_entry(caller, d)?;
        let set = sattr(d)?;
        let parent = self.vfs.open_folder(&dir.rel)?;
        let name = rel.file_name().ok_or(Fail::Status(status::INVAL))?;
        // A folder made in a setgid folder keeps the setgid bit the kernel gave it, so the
        // group (an fsGroup, a `2775` share root) carries on down, as on a local disk.
        let mode = set.mode.unwrap_or(0o755) & 0o7777 | dir.attr.mode & 0o2000;
        let ((), change) = self.change_folder(&dir, &parent, || {
            as_caller(self, caller, || -> Result<(), Fail> {
                rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode))?;
                chmod_exact(&parent, Path::new(name), mode)
            })
        })?;
        let attr = self.vfs.stat(&rel)?;
        let rest = SetAttr { mode: None, ..set };
        if rest != SetAttr::default() {
            self.apply(caller, &rel, &attr, &rest)?;
        }
        self.created(&rel, &parent, change)
    }

    fn symlink(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let (dir, rel) = self.new_entry(caller, d)?;
        let _set = sattr(d)?;
        let target = d.opaque(MAX_PATH)?;
        if target.is_empty() || target.contains(&0) {
            return Err(Fail::Status(status::INVAL));
        }
        let parent = self.vfs.open_folder(&dir.rel)?;
        let name = rel.file_name().ok_or(Fail::Status(status::INVAL))?;
        let target = std::ffi::OsStr::from_bytes(target);
        let ((), change) = self.change_folder(&dir, &parent, || {
            Ok(as_caller(self, caller, || {
                rustix::fs::symlinkat(target, &parent, name)
            })?)
        })?;
        self.created(&rel, &parent, change)
    }

    fn remove(&self, caller: &Caller, d: &mut Decoder, directory: bool) -> Result<Done, Fail> {
        let dir = self.dir(d)?;
        let name = d.opaque(MAX_PATH)?.to_vec();
        self.writable(caller)?;
        if name == b"." {
            return Err(Fail::Status(status::INVAL));
        }
        if name == b".." {
            return Err(Fail::Status(status::NOTEMPTY));
        }
        let name = check_name(&name)?;
        let rel = dir.rel.join(name);
        let parent = self.vfs.open_folder(&dir.rel)?;
        let flags = if directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        // What is removed is looked at under the folder's lock, so a concurrent RENAME over
        // the name cannot make the bookkeeping forget another file.
        let (attr, change) = self.change_folder(&dir, &parent, || {
            let attr = stat_entry(&parent, name)?;
            if !directory && attr.is_dir() {
                return Err(Fail::Status(status::ISDIR));
            }
            as_caller(self, caller, || rustix::fs::unlinkat(&parent, name, flags))?;
            Ok(attr)
        })?;
        self.vfs.sync_folder(&parent)?;
        self.forget_unlinked(&attr, &rel);
        let mut e = Encoder::with_capacity(130);
        self.wcc(&mut e, change.before.as_ref(), change.after.as_ref());
        Ok(Done::Body(e))
    }

    /// Bookkeeping after the name `rel` of `attr` was unlinked (or replaced by a rename).
    /// A file with other names stays open and indexed; if the index knew it by the name
    /// removed, the next use of its handle finds another name by a rescan.
    fn forget_unlinked(&self, attr: &Attr, rel: &Path) {
        if attr.nlink <= 1 || attr.is_dir() {
            self.fds.evict(attr.fileid);
            self.vfs.forget(attr.fileid);
            if attr.ftype == ftype::REG {
                self.usage.record_remove(1, attr.size);
            }
        } else {
            self.vfs.forget_name(attr.fileid, rel);
        }
    }

    fn rename(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let from_dir = self.dir(d)?;
        let from_name = d.opaque(MAX_PATH)?.to_vec();
        let to_dir = self.dir(d)?;
        let to_name = d.opaque(MAX_PATH)?.to_vec();
        self.writable(caller)?;
        let from_name = check_name(&from_name)?;
        let to_name = check_name(&to_name)?;
        let from = from_dir.rel.join(from_name);
        let to = to_dir.rel.join(to_name);
        let from_fd = self.vfs.open_folder(&from_dir.rel)?;
        let to_fd = self.vfs.open_folder(&to_dir.rel)?;
        let held = self.dirs.lock_two(from_dir.attr.fileid, to_dir.attr.fileid);
        let (from_before, to_before) = (fd_attr(&from_fd)?, fd_attr(&to_fd)?);
        let names = |a: &Attr| (a.fileid, a.generation);
        if names(&from_before) != names(&from_dir.attr) || names(&to_before) != names(&to_dir.attr)
        {
            return Err(Fail::Status(status::JUKEBOX));
        }
        // Looked at under the locks: what moves and what it replaces.
        let moved = stat_entry(&from_fd, from_name)?;
        let replaced = stat_entry(&to_fd, to_name)
            .ok()
            .filter(|r| r.fileid != moved.fileid);
        as_caller(self, caller, || {
            rustix::fs::renameat(&from_fd, from_name, &to_fd, to_name)
        })?;
        let (from_after, to_after) = (fd_attr(&from_fd).ok(), fd_attr(&to_fd).ok());
        drop(held);
        self.vfs.sync_folder(&from_fd)?;
        if to_dir.attr.fileid != from_dir.attr.fileid {
            self.vfs.sync_folder(&to_fd)?;
        }
        let (from_before, to_before) = (Some(from_before), Some(to_before));
        if let Some(replaced) = replaced {
            self.forget_unlinked(&replaced, &to);
        }
        if moved.is_dir() {
            self.vfs.renamed(&from, &to);
        }
        self.vfs.remember(&to, &moved);
        let mut e = Encoder::with_capacity(260);
        self.wcc(&mut e, from_before.as_ref(), from_after.as_ref());
        self.wcc(&mut e, to_before.as_ref(), to_after.as_ref());
        Ok(Done::Body(e))
    }

    fn link(&self, caller: &Caller, d: &mut Decoder) -> Result<Done, Fail> {
        let file = self.node(d)?;
        let dir = self.dir(d)?;
        let name = d.opaque(MAX_PATH)?.to_vec();
        self.writable(caller)?;
        if file.attr.is_dir() {
            return Err(Fail::Status(status::ISDIR));
        }
        let name = check_name(&name)?;
        let (src_dir, src_name) = self.vfs.locate(&file.rel)?;
        let parent = self.vfs.open_folder(&dir.rel)?;
        let ((), change) = self.change_folder(&dir, &parent, || {
            Ok(as_caller(self, caller, || {
                rustix::fs::linkat(&src_dir, &src_name, &parent, name, AtFlags::empty())
            })?)
        })?;
        self.vfs.sync_folder(&parent)?;
        let mut e = Encoder::with_capacity(230);
        self.post_op_attr(&mut e, self.stat(&file.rel).as_ref());
        self.wcc(&mut e, change.before.as_ref(), change.after.as_ref());
        Ok(Done::Body(e))
    }

    fn readdir(&self, caller: &Caller, d: &mut Decoder, plus: bool) -> Result<Done, Fail> {
        let dir = self.dir(d)?;
        let cookie = d.u64()?;
        let _verifier = d.opaque_fixed(8)?;
        let (dircount, maxcount) = if plus {
            let dircount = d.u32()? as usize;
            (dircount, d.u32()? as usize)
        } else {
            let count = d.u32()? as usize;
            (count, count)
        };
        // The client's sizes are only wishes: a reply never grows past one record's worth,
        // whatever a hostile `maxcount` says (knfsd caps it at its max payload too).
        let (dircount, maxcount) = (
            dircount.min(READDIR_MAX_REPLY),
            maxcount.min(READDIR_MAX_REPLY),
        );
        if !Self::may(caller, &dir.attr, 4) {
            return Err(Fail::Status(status::ACCES));
        }
        let fd = self.vfs.dir_fd(&dir.rel)?;
        let readable = rustix::fs::openat(
            &fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut listing = rustix::fs::Dir::new(readable.try_clone()?)?;
        // Cookies are the kernel's own directory positions (`d_off`, as knfsd uses): a page
        // starts where the last one ended, so listing N entries costs O(N) in all, and the
        // position holds however the folder changed in between (ext4 and xfs positions are
        // name hashes, tmpfs keeps stable offsets).
        if cookie != 0 {
            let position = i64::try_from(cookie).map_err(|_| Fail::Status(status::BAD_COOKIE))?;
            listing
                .seek(position)
                .map_err(|_| Fail::Status(status::BAD_COOKIE))?;
        }
        let mut e = Encoder::with_capacity(maxcount.min(64 * 1024));
        self.post_op_attr(&mut e, Some(&dir.attr));
        e.opaque_fixed(&[0u8; 8]);
        let limit = maxcount.saturating_sub(16).max(256);
        let mut names_bytes = 0;
        let mut eof = true;
        let mut sent = 0;
        let mut listed = Vec::new();
        while let Some(entry) = listing.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            let next = entry.offset() as u64;
            let Some((named, attr)) = self.listed(&dir, &readable, name) else {
                continue;
            };
            // Encoded in place and taken back if the page is full: no buffer per entry.
            let mark = e.len();
            e.bool(true).u64(attr.fileid).opaque(name).u64(next);
            let name_part = e.len() - mark;
            if plus {
                self.post_op_attr(&mut e, Some(&attr));
                self.post_op_fh(&mut e, &attr);
            }
            if e.len() > limit || names_bytes + name_part > dircount.max(512) {
                e.bytes_mut().truncate(mark);
                eof = false;
                break;
            }
            if plus && named {
                listed.push((dir.rel.join(std::ffi::OsStr::from_bytes(name)), attr));
            }
            names_bytes += name_part;
            sent += 1;
        }
        if sent == 0 && !eof {
            return Err(Fail::Status(10005)); // NFS3ERR_TOOSMALL
        }
        // READDIRPLUS hands out handles: the index learns where they are, in one update.
        self.vfs.remember_all(&listed);
        e.bool(false).bool(eof);
        Ok(Done::Body(e))
    }

    /// A listed entry's attributes, and whether it is a named entry (not `.` or `..`);
    /// `None` for names clients never see (the server's temp files, invalid names) and
    /// entries gone since they were listed.
    fn listed(&self, dir: &Node, fd: &OwnedFd, name: &[u8]) -> Option<(bool, Attr)> {
        match name {
            b"." => Some((false, dir.attr)),
            b".." => {
                let parent = dir.rel.parent().unwrap_or(Path::new(""));
                self.vfs.stat(parent).ok().map(|attr| (false, attr))
            }
            _ => {
                let name = check_name(name).ok()?;
                Some((true, stat_entry(fd, name).ok()?))
            }
        }
    }

    fn fsstat(&self, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let (total, free, files, ffree) = self.vfs.space()?;
        let (total, free) = match self.usage.capacity() {
            Some(capacity) => (
                capacity,
                capacity
                    .saturating_sub(self.usage.used() + self.usage.reserved())
                    .min(free),
            ),
            None => (total, free),
        };
        let mut e = Encoder::with_capacity(160);
        self.post_op_attr(&mut e, Some(&node.attr));
        e.u64(total)
            .u64(free)
            .u64(free)
            .u64(files)
            .u64(ffree)
            .u64(ffree)
            .u32(0);
        Ok(Done::Body(e))
    }

    fn fsinfo(&self, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let mut e = Encoder::with_capacity(160);
        self.post_op_attr(&mut e, Some(&node.attr));
        e.u32(MAX_IO)
            .u32(MAX_IO)
            .u32(4096)
            .u32(MAX_IO)
            .u32(MAX_IO)
            .u32(4096)
            .u32(64 * 1024);
        // FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME
        e.u64(i64::MAX as u64).u32(0).u32(1).u32(0x1b);
        Ok(Done::Body(e))
    }

    fn pathconf(&self, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let mut e = Encoder::with_capacity(120);
        self.post_op_attr(&mut e, Some(&node.attr));
        e.u32(32_000)
            .u32(super::vfs::NAME_MAX as u32)
            .bool(true)
            .bool(true)
            .bool(false)
            .bool(true);
        Ok(Done::Body(e))
    }

    fn commit(&self, d: &mut Decoder) -> Result<Done, Fail> {
        let node = self.node(d)?;
        let _offset = d.u64()?;
        let _count = d.u32()?;
        Self::regular(&node)?;
        let file = self.fds.get(&self.vfs, &node, false)?;
        file.sync_all().inspect_err(|e| self.writeback_failed(e))?;
        let mut e = Encoder::with_capacity(120);
        self.wcc(&mut e, None, self.stat(&node.rel).as_ref());
        e.opaque_fixed(&self.write_verifier());
        Ok(Done::Body(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn chmod_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        chmod_exact(&fd, Path::new("link"), 0o777).unwrap();
        let mode = std::fs::metadata(outside.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the symlink's target was changed");
        chmod_exact(&fd, Path::new("file"), 0o640).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("file"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
    }

    #[test]
    fn errors_map_to_nfs_statuses() {
        assert_eq!(
            status_of(&io::Error::from_raw_os_error(libc::ENOENT)),
            status::NOENT
        );
        assert_eq!(
            status_of(&io::Error::from_raw_os_error(libc::EXDEV)),
            status::ACCES
        );
        assert_eq!(
            status_of(&io::Error::from_raw_os_error(libc::ELOOP)),
            status::INVAL
        );
        assert_eq!(
            status_of(&io::Error::from_raw_os_error(libc::EBADMSG)),
            status::IO
        );
        assert_eq!(status_label(status::STALE), "stale");
        assert_eq!(failure_words(14), 4);
        assert_eq!(failure_words(1), 0);
    }

    #[test]
    fn sattr_decodes_every_field() {
        let mut e = Encoder::default();
        e.bool(true)
            .u32(0o640)
            .bool(false)
            .bool(true)
            .u32(7)
            .bool(true)
            .u64(9)
            .u32(1)
            .u32(2)
            .u32(5)
            .u32(6);
        let bytes = e.into_bytes();
        let set = sattr(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(
            set,
            SetAttr {
                mode: Some(0o640),
                uid: None,
                gid: Some(7),
                size: Some(9),
                atime: Some(None),
                mtime: Some(Some((5, 6)))
            }
        );
        let bad = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        assert!(sattr(&mut Decoder::new(&bad)).is_err());
    }
}

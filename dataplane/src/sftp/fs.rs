//! SFTP requests executed on the share: one [`Session`] per SFTP channel, holding its open
//! handles.
//!
//! The rules are those of the NFS export and the HTTP API:
//! - Paths are made relative to the share root lexically (`..` stops at the root), then
//!   every folder on the way is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)` and the last name is used with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`:
//!   the server never follows a symlink, and a path never leaves the share.
//! - In posix mode every request runs under the key's file-system identity
//!   ([`crate::identity::assume`]), so the kernel checks permissions as for that user; in
//!   squash mode everything acts as the process.
//! - Writes are refused on a read-only share or for a `read-only` key, and the quota
//!   ([`Usage`]) is reserved before a write grows a file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, StatxFlags};

use super::wire::{self, Attrs, NameEntry, Request, Status, VfsStats};
use crate::identity::{self, Creds, IdentityMode};
use crate::io::FallbackReason;
use crate::metrics::Metrics;
use crate::usage::Usage;

/// Entries answered per READDIR.
const READDIR_BATCH: usize = 128;

/// What every session of one share has in common.
#[derive(Debug)]
pub struct ShareAccess {
    root: OwnedFd,
    /// Refuse every write.
    pub read_only: bool,
    /// posix: requests run as the key's identity; squash: as the process.
    pub identity: IdentityMode,
    server_creds: Creds,
    /// Most handles open at once in one session.
    pub max_handles: usize,
    /// Space accounting and quota.
    pub usage: Arc<Usage>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl ShareAccess {
    /// Opens the share root (a folder; never through a symlink).
    pub fn open(
        root: &Path,
        read_only: bool,
        identity: IdentityMode,
        max_handles: usize,
        usage: Arc<Usage>,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let root = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root,
            read_only,
            identity,
            server_creds: identity::server_creds(),
            max_handles,
            usage,
            metrics,
        })
    }
}

/// An error answered as a status.
#[derive(Debug)]
struct Failed(Status, String);

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        let status = match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Status::NoSuchFile,
            Some(libc::EACCES | libc::EPERM | libc::EROFS) => Status::PermissionDenied,
            // O_NOFOLLOW's and openat2's answer for a symlink (see `Session::folder` for
            // a path leaving the share).
            Some(libc::ELOOP) => {
                return Failed(
                    Status::PermissionDenied,
                    "the path goes through a symlink; the server never follows one".into(),
                );
            }
            _ => Status::Failure,
        };
        let message = match e.raw_os_error() {
            Some(libc::EROFS) => "the filesystem under the share is read-only".to_owned(),
            _ => e.to_string(),
        };
        Failed(status, message)
    }
}

impl From<rustix::io::Errno> for Failed {
    fn from(e: rustix::io::Errno) -> Self {
        Failed::from(io::Error::from(e))
    }
}

fn denied(message: &str) -> Failed {
    Failed(Status::PermissionDenied, message.to_owned())
}

/// An open handle.
#[derive(Debug)]
enum Handle {
    File {
        file: File,
        writable: bool,
        /// O_APPEND: every write lands at the end, whatever its offset.
        append: bool,
    },
    Dir {
        /// For statx of the entries.
        fd: OwnedFd,
        entries: rustix::fs::Dir,
        rel: PathBuf,
    },
}

/// One SFTP channel's state: its identity, rights and open handles.
#[derive(Debug)]
pub struct Session {
    share: Arc<ShareAccess>,
    creds: Creds,
    read_only: bool,
    handles: HashMap<u32, Handle>,
    next_handle: u32,
}

/// Makes a client path relative to the share root: `/`, `.` and empty components are
/// dropped and `..` goes up, never above the root. NUL bytes are refused.
pub fn relative(path: &[u8]) -> Result<PathBuf, Status> {
    if path.contains(&0) {
        return Err(Status::BadMessage);
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(path)).components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// The `ls -l` line OpenSSH's `sftp` shows for `ls -l` (times in UTC).
pub fn long_name(name: &[u8], a: &Attrs) -> Vec<u8> {
    let mode = a.permissions.unwrap_or(0);
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut perms = String::with_capacity(10);
    perms.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let (uid, gid) = a.uid_gid.unwrap_or((0, 0));
    let mtime = a.atime_mtime.map_or(0, |(_, m)| i64::from(m));
    let (_, month, day) = civil_from_days(mtime.div_euclid(86_400));
    let secs = mtime.rem_euclid(86_400);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut line = format!(
        "{perms}    1 {uid:<8} {gid:<8} {:>8} {} {day:>2} {:02}:{:02} ",
        a.size.unwrap_or(0),
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60
    )
    .into_bytes();
    line.extend_from_slice(name);
    line
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn attrs_of(s: &rustix::fs::Statx) -> Attrs {
    Attrs {
        size: Some(s.stx_size),
        uid_gid: Some((s.stx_uid, s.stx_gid)),
        permissions: Some(u32::from(s.stx_mode)),
        atime_mtime: Some((
            s.stx_atime.tv_sec.clamp(0, u32::MAX as i64) as u32,
            s.stx_mtime.tv_sec.clamp(0, u32::MAX as i64) as u32,
        )),
    }
}

fn statx_nofollow(dir: impl AsFd, name: &Path) -> io::Result<rustix::fs::Statx> {
    let flags = if name.as_os_str().is_empty() {
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    Ok(rustix::fs::statx(
        dir,
        name,
        flags,
        StatxFlags::BASIC_STATS,
    )?)
}

fn is_regular(s: &rustix::fs::Statx) -> bool {
    u32::from(s.stx_mode) & 0o170000 == 0o100000
}

/// Switches back to the server's identity when dropped (also when a request panics).
struct Restore(Arc<ShareAccess>);

impl Drop for Restore {
    fn drop(&mut self) {
        identity::assume(&self.0.server_creds);
    }
}

impl Session {
    /// A session acting as `creds` (posix mode), read-only when the share or the key is.
    pub fn new(share: Arc<ShareAccess>, creds: Creds, read_only: bool) -> Self {
        let read_only = read_only || share.read_only;
        Session {
            share,
            creds,
            read_only,
            handles: HashMap::new(),
            next_handle: 1,
        }
    }

    /// The metrics the session counts into.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.share.metrics)
    }

    /// Answers one packet body. Never panics on client input; every request gets exactly
    /// one reply, except INIT, which gets VERSION.
    pub fn handle(&mut self, packet: &[u8]) -> (&'static str, BytesMut) {
        let (id, request) = match wire::decode(packet) {
            Ok(decoded) => decoded,
            Err((id, e)) => {
                return (
                    "malformed",
                    wire::status(id.unwrap_or(0), Status::BadMessage, &e.to_string()),
                );
            }
        };
        let name = request.name();
        if let Request::Init { .. } = request {
            return (name, wire::version());
        }
        // posix mode: the kernel checks every step as the key's user.
        let _restore = match self.share.identity {
            // A key acting as the server itself needs no switch.
            IdentityMode::Posix if self.creds != self.share.server_creds => {
                let restore = Restore(Arc::clone(&self.share));
                if let Err(e) = identity::try_assume(&self.creds) {
                    tracing::error!(uid = self.creds.uid, error = %e, "cannot take a key's file-system identity; request refused");
                    return (
                        name,
                        wire::status(
                            id,
                            Status::Failure,
                            "the server cannot act as this key's user",
                        ),
                    );
                }
                Some(restore)
            }
            _ => None,
        };
        let reply = match self.execute(id, request) {
            Ok(reply) => reply,
            Err(Failed(status, message)) => wire::status(id, status, &message),
        };
        (name, reply)
    }

    fn writable(&self) -> Result<(), Failed> {
        if self.read_only {
            return Err(denied(if self.share.read_only {
                "the share is read-only"
            } else {
                "this key is read-only"
            }));
        }
        Ok(())
    }

    /// Opens the folder `rel` (O_PATH), beneath the root, following no symlink.
    fn folder(&self, rel: &Path) -> Result<OwnedFd, Failed> {
        let path: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        open_beneath(&self.share.root, path, OFlags::PATH)
    }

    /// The parent folder of `path` and its last name; the root has none.
    fn locate(&self, path: &[u8]) -> Result<(OwnedFd, PathBuf), Failed> {
        let rel = relative(path).map_err(|s| Failed(s, "a NUL byte in a path".into()))?;
        let Some(name) = rel.file_name() else {
            return Err(denied("the share's root cannot be changed"));
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.folder(parent)?, PathBuf::from(name)))
    }

    /// The parent folder and name of `path`, with the root as its own folder and `""`.
    fn entry(&self, path: &[u8]) -> Result<(OwnedFd, PathBuf), Failed> {
        let rel = relative(path).map_err(|s| Failed(s, "a NUL byte in a path".into()))?;
        if rel.as_os_str().is_empty() {
            return Ok((self.folder(&rel)?, PathBuf::new()));
        }
        self.locate(path)
    }

    /// Fails when the session holds as many handles as allowed (checked before an OPEN
    /// creates or truncates anything).
    fn room_for_handle(&self) -> Result<(), Failed> {
        if self.handles.len() >= self.share.max_handles {
            return Err(Failed(
                Status::Failure,
                format!(
                    "too many open handles (at most {} per session)",
                    self.share.max_handles
                ),
            ));
        }
        Ok(())
    }

    fn new_handle(&mut self, handle: Handle) -> Result<Vec<u8>, Failed> {
        self.room_for_handle()?;
        let mut id = self.next_handle;
        while self.handles.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_handle = id.wrapping_add(1);
        self.handles.insert(id, handle);
        Ok(id.to_be_bytes().to_vec())
    }

    fn handle_id(handle: &[u8]) -> Result<u32, Failed> {
        <[u8; 4]>::try_from(handle)
            .map(u32::from_be_bytes)
            .map_err(|_| Failed(Status::Failure, "no such handle".into()))
    }

    fn file(&self, handle: &[u8]) -> Result<(&File, bool, bool), Failed> {
        match self.handles.get(&Self::handle_id(handle)?) {
            Some(Handle::File {
                file,
                writable,
                append,
            }) => Ok((file, *writable, *append)),
            Some(Handle::Dir { .. }) => Err(Failed(
                Status::Failure,
                "a folder handle, not a file".into(),
            )),
            None => Err(Failed(Status::Failure, "no such handle".into())),
        }
    }

    /// A new descriptor of a file or folder handle's file.
    fn any_fd(&self, handle: &[u8]) -> Result<OwnedFd, Failed> {
        let fd = match self.handles.get(&Self::handle_id(handle)?) {
            Some(Handle::File { file, .. }) => rustix::io::fcntl_dupfd_cloexec(file, 0)?,
            Some(Handle::Dir { fd, .. }) => rustix::io::fcntl_dupfd_cloexec(fd, 0)?,
            None => return Err(Failed(Status::Failure, "no such handle".into())),
        };
        Ok(fd)
    }

    fn execute(&mut self, id: u32, request: Request<'_>) -> Result<BytesMut, Failed> {
        let ok = || wire::status(id, Status::Ok, "");
        match request {
            Request::Init { .. } => Ok(wire::version()),
            Request::Open { path, flags, attrs } => {
                let handle = self.open(path, flags, &attrs)?;
                Ok(wire::handle(id, &handle))
            }
            Request::Close { handle } => match self.handles.remove(&Self::handle_id(handle)?) {
                Some(_) => Ok(ok()),
                None => Err(Failed(Status::Failure, "no such handle".into())),
            },
            Request::Read {
                handle,
                offset,
                len,
            } => self.read(id, handle, offset, len),
            Request::Write {
                handle,
                offset,
                data,
            } => {
                self.write(handle, offset, data)?;
                Ok(ok())
            }
            Request::Stat { path, follow } => {
                let (dir, name) = self.entry(path)?;
                let st = statx_nofollow(&dir, &name)?;
                if follow && u32::from(st.stx_mode) & 0o170000 == 0o120000 {
                    return Err(denied(
                        "a symlink: the server never follows one (use lstat and readlink)",
                    ));
                }
                Ok(wire::attrs(id, &attrs_of(&st)))
            }
            Request::Fstat { handle } => {
                let st = match self.handles.get(&Self::handle_id(handle)?) {
                    Some(Handle::File { file, .. }) => statx_nofollow(file, Path::new(""))?,
                    Some(Handle::Dir { fd, .. }) => statx_nofollow(fd, Path::new(""))?,
                    None => return Err(Failed(Status::Failure, "no such handle".into())),
                };
                Ok(wire::attrs(id, &attrs_of(&st)))
            }
            Request::SetStat { path, attrs } => {
                self.writable()?;
                let (dir, name) = self.entry(path)?;
                if name.as_os_str().is_empty()
                    && (attrs.permissions.is_some() || attrs.uid_gid.is_some())
                {
                    return Err(denied(
                        "the share root's owner and mode are set by the server (--root-owner, --root-mode)",
                    ));
                }
                self.set_attrs(&dir, &name, &attrs)?;
                Ok(ok())
            }
            Request::FsetStat { handle, attrs } => {
                self.writable()?;
                let fd = self.any_fd(handle)?;
                self.set_attrs(&fd, Path::new(""), &attrs)?;
                Ok(ok())
            }
            Request::OpenDir { path } => {
                let rel = relative(path).map_err(|s| Failed(s, "a NUL byte".into()))?;
                let target: &Path = if rel.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    &rel
                };
                self.room_for_handle()?;
                let fd = open_beneath(&self.share.root, target, OFlags::RDONLY)?;
                let entries = rustix::fs::Dir::read_from(&fd)?;
                let handle = self.new_handle(Handle::Dir { fd, entries, rel })?;
                Ok(wire::handle(id, &handle))
            }
            Request::ReadDir { handle } => self.read_dir(id, handle),
            Request::Remove { path } => {
                self.writable()?;
                let (dir, name) = self.locate(path)?;
                let st = statx_nofollow(&dir, &name)?;
                if u32::from(st.stx_mode) & 0o170000 == 0o040000 {
                    return Err(Failed(Status::Failure, "a folder: use rmdir".into()));
                }
                rustix::fs::unlinkat(&dir, &name, AtFlags::empty())?;
                if is_regular(&st) && st.stx_nlink <= 1 {
                    self.share.usage.record_remove(1, st.stx_size);
                }
                Ok(ok())
            }
            Request::MkDir { path, attrs } => {
                self.writable()?;
                let (dir, name) = self.locate(path)?;
                let mode = attrs.permissions.map_or(0o777, |p| p & 0o7777);
                rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(mode))?;
                Ok(ok())
            }
            Request::RmDir { path } => {
                self.writable()?;
                let (dir, name) = self.locate(path)?;
                rustix::fs::unlinkat(&dir, &name, AtFlags::REMOVEDIR)?;
                Ok(ok())
            }
            Request::RealPath { path } => {
                let rel = relative(path).map_err(|s| Failed(s, "a NUL byte".into()))?;
                let mut full = b"/".to_vec();
                full.extend_from_slice(rel.as_os_str().as_bytes());
                let entry = NameEntry {
                    long_name: full.clone(),
                    name: full,
                    attrs: Attrs::default(),
                };
                Ok(wire::names(id, &[entry]))
            }
            Request::Rename {
                from,
                to,
                overwrite,
            } => {
                self.writable()?;
                let (from_dir, from_name) = self.locate(from)?;
                let (to_dir, to_name) = self.locate(to)?;
                let source = statx_nofollow(&from_dir, &from_name)?;
                // Renaming a file onto itself (or onto another of its names) removes nothing.
                let replaced = statx_nofollow(&to_dir, &to_name).ok().filter(|t| {
                    (t.stx_ino, t.stx_dev_major, t.stx_dev_minor)
                        != (source.stx_ino, source.stx_dev_major, source.stx_dev_minor)
                });
                let flags = if overwrite {
                    RenameFlags::empty()
                } else {
                    RenameFlags::NOREPLACE
                };
                rustix::fs::renameat_with(&from_dir, &from_name, &to_dir, &to_name, flags)?;
                if let Some(st) = replaced.filter(|s| is_regular(s) && s.stx_nlink <= 1) {
                    self.share.usage.record_remove(1, st.stx_size);
                }
                Ok(ok())
            }
            Request::ReadLink { path } => {
                let (dir, name) = self.locate(path)?;
                let target = rustix::fs::readlinkat(&dir, &name, Vec::new())?;
                let target = target.into_bytes();
                let entry = NameEntry {
                    long_name: target.clone(),
                    name: target,
                    attrs: Attrs::default(),
                };
                Ok(wire::names(id, &[entry]))
            }
            Request::Symlink { target, link } => {
                self.writable()?;
                if target.contains(&0) {
                    return Err(Failed(Status::BadMessage, "a NUL byte in a path".into()));
                }
                let (dir, name) = self.locate(link)?;
                rustix::fs::symlinkat(OsStr::from_bytes(target), &dir, &name)?;
                Ok(ok())
            }
            Request::Hardlink { from, to } => {
                self.writable()?;
                let (from_dir, from_name) = self.locate(from)?;
                let (to_dir, to_name) = self.locate(to)?;
                rustix::fs::linkat(&from_dir, &from_name, &to_dir, &to_name, AtFlags::empty())?;
                Ok(ok())
            }
            Request::StatVfs { path } => {
                let (dir, _) = self.entry(path)?;
                Ok(wire::statvfs(id, &self.space(&dir)?))
            }
            Request::FstatVfs { handle } => {
                let fd = self.any_fd(handle)?;
                Ok(wire::statvfs(id, &self.space(&fd)?))
            }
            Request::Fsync { handle } => {
                let (file, _, _) = self.file(handle)?;
                file.sync_all()?;
                Ok(ok())
            }
            Request::Limits => Ok(wire::limits(id, self.share.max_handles as u64)),
            Request::Unsupported { what } => Err(Failed(
                Status::OpUnsupported,
                format!("{what} is not supported"),
            )),
        }
    }

    fn open(&mut self, path: &[u8], flags: u32, attrs: &Attrs) -> Result<Vec<u8>, Failed> {
        use wire::open_flags as f;
        let write = flags & (f::WRITE | f::APPEND | f::CREAT | f::TRUNC) != 0;
        if write {
            self.writable()?;
        }
        self.room_for_handle()?;
        let (dir, name) = self.locate(path)?;
        let mut o = match (flags & f::READ != 0, write) {
            (true, true) => OFlags::RDWR,
            (false, true) => OFlags::WRONLY,
            _ => OFlags::RDONLY,
        };
        if flags & f::APPEND != 0 {
            o |= OFlags::APPEND;
        }
        if flags & f::CREAT != 0 {
            o |= OFlags::CREATE;
            if flags & f::EXCL != 0 {
                o |= OFlags::EXCL;
            }
        }
        let before = statx_nofollow(&dir, &name).ok();
        if flags & f::TRUNC != 0 {
            o |= OFlags::TRUNC;
        }
        let mode = attrs.permissions.map_or(0o666, |p| p & 0o7777);
        // O_NONBLOCK: a FIFO is never waited on; it is refused below like any non-file.
        let fd = rustix::fs::openat(
            &dir,
            &name,
            o | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        let st = statx_nofollow(&fd, Path::new(""))?;
        if !is_regular(&st) {
            return Err(Failed(
                Status::Failure,
                "not a regular file (folders: opendir)".into(),
            ));
        }
        match before.filter(is_regular) {
            None if write => self.share.usage.record_write(None, st.stx_size),
            Some(old) if old.stx_size != st.stx_size => self
                .share
                .usage
                .record_write(Some(old.stx_size), st.stx_size),
            _ => {}
        }
        self.new_handle(Handle::File {
            file: File::from(fd),
            writable: write,
            append: flags & f::APPEND != 0,
        })
    }

    fn read(&mut self, id: u32, handle: &[u8], offset: u64, len: u32) -> Result<BytesMut, Failed> {
        let (file, _, _) = self.file(handle)?;
        let len = len.min(wire::MAX_IO) as usize;
        let mut reply = wire::data_head(id, len);
        let start = reply.buffer().len();
        reply.buffer().resize(start + len, 0);
        let mut filled = 0;
        while filled < len {
            match file.read_at(
                &mut reply.buffer()[start + filled..],
                offset + filled as u64,
            ) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if filled == 0 && len > 0 {
            return Ok(wire::status(id, Status::Eof, "end of file"));
        }
        reply.buffer().truncate(start + filled);
        let length_field = start - 4;
        reply.buffer()[length_field..start].copy_from_slice(&(filled as u32).to_be_bytes());
        self.count_transfer(filled as u64);
        Ok(reply.finish())
    }

    fn write(&mut self, handle: &[u8], offset: u64, data: &[u8]) -> Result<(), Failed> {
        let (file, writable, append) = self.file(handle)?;
        if !writable {
            return Err(denied("the handle was opened for reading"));
        }
        let before = statx_nofollow(file, Path::new(""))?.stx_size;
        // An O_APPEND write lands at the end of the file, whatever the offset says.
        let start = if append { before } else { offset };
        let end = start
            .checked_add(data.len() as u64)
            .ok_or_else(|| Failed(Status::Failure, "offset past the largest file".into()))?;
        let mut reservation = self.share.usage.reservation();
        reservation
            .grow(end.saturating_sub(before))
            .map_err(|e| Failed(Status::Failure, format!("no space: {e}")))?;
        let written = file.write_all_at(data, offset);
        // Counted whether or not the write finished: a partial write grew the file too.
        let after = statx_nofollow(file, Path::new("")).map_or(end.max(before), |s| s.stx_size);
        self.share.usage.record_write(Some(before), after);
        drop(reservation);
        written?;
        self.share.metrics.add_received(data.len() as u64);
        self.count_transfer(data.len() as u64);
        Ok(())
    }

    /// File bytes move through user space: SSH encrypts them, so sendfile and splice are
    /// ruled out; every read and write counts one `encrypted_channel` fallback.
    fn count_transfer(&self, bytes: u64) {
        let metrics = &self.share.metrics;
        metrics.transfer_counter("sftp", "copy").inc_by(bytes);
        metrics.record_fallback("sftp", FallbackReason::EncryptedChannel);
    }

    fn read_dir(&mut self, id: u32, handle: &[u8]) -> Result<BytesMut, Failed> {
        let Some(Handle::Dir { fd, entries, rel }) =
            self.handles.get_mut(&Self::handle_id(handle)?)
        else {
            return Err(Failed(Status::Failure, "no such folder handle".into()));
        };
        let mut out = Vec::with_capacity(READDIR_BATCH);
        while out.len() < READDIR_BATCH {
            let Some(entry) = entries.read() else {
                break;
            };
            let entry = entry?;
            let name = entry.file_name().to_bytes().to_vec();
            // The root's `..` is outside the share: it shows the root itself.
            let looked_up: &[u8] = if rel.as_os_str().is_empty() && name == b".." {
                b""
            } else {
                &name
            };
            let attrs = match statx_nofollow(&*fd, Path::new(OsStr::from_bytes(looked_up))) {
                Ok(st) => attrs_of(&st),
                // Removed since the folder was read: skipped, as `ls` does.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    tracing::debug!(folder = %rel.display(), error = %e, "statx of a folder entry");
                    Attrs::default()
                }
            };
            out.push(NameEntry {
                long_name: long_name(&name, &attrs),
                name,
                attrs,
            });
        }
        if out.is_empty() {
            return Ok(wire::status(id, Status::Eof, "no more entries"));
        }
        Ok(wire::names(id, &out))
    }

    /// Applies SETSTAT's attributes to `dir`/`name` (`name` empty: `dir` itself), never
    /// through a symlink.
    fn set_attrs(&self, dir: &OwnedFd, name: &Path, attrs: &Attrs) -> Result<(), Failed> {
        // Pinned with O_PATH | O_NOFOLLOW: every change below reaches this inode.
        let pinned = if name.as_os_str().is_empty() {
            rustix::io::fcntl_dupfd_cloexec(dir, 0)?
        } else {
            rustix::fs::openat(
                dir,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?
        };
        let st = statx_nofollow(&pinned, Path::new(""))?;
        let is_link = u32::from(st.stx_mode) & 0o170000 == 0o120000;
        if let Some(size) = attrs.size {
            if !is_regular(&st) {
                return Err(Failed(
                    Status::Failure,
                    "only a regular file has a size to set".into(),
                ));
            }
            let mut reservation = self.share.usage.reservation();
            reservation
                .grow(size.saturating_sub(st.stx_size))
                .map_err(|e| Failed(Status::Failure, format!("no space: {e}")))?;
            let file = rustix::fs::open(
                proc_path(&pinned),
                OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::ftruncate(&file, size)?;
            self.share.usage.record_write(Some(st.stx_size), size);
        }
        if let Some(mode) = attrs.permissions {
            if is_link {
                return Err(denied("a symlink's mode cannot be set"));
            }
            rustix::fs::chmod(proc_path(&pinned), Mode::from_raw_mode(mode & 0o7777))?;
        }
        if let Some((uid, gid)) = attrs.uid_gid {
            rustix::fs::chownat(
                &pinned,
                "",
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::EMPTY_PATH,
            )?;
        }
        if let Some((atime, mtime)) = attrs.atime_mtime {
            let ts = |s: u32| rustix::fs::Timespec {
                tv_sec: i64::from(s),
                tv_nsec: 0,
            };
            let times = rustix::fs::Timestamps {
                last_access: ts(atime),
                last_modification: ts(mtime),
            };
            if is_link {
                rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            } else {
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    proc_path(&pinned),
                    &times,
                    AtFlags::empty(),
                )?;
            }
        }
        Ok(())
    }

    fn space(&self, fd: impl AsFd) -> Result<VfsStats, Failed> {
        let v = rustix::fs::fstatvfs(fd)?;
        let frsize = v.f_frsize.max(1);
        let mut stats = VfsStats {
            bsize: v.f_bsize,
            frsize,
            blocks: v.f_blocks,
            bfree: v.f_bfree,
            bavail: v.f_bavail,
            files: v.f_files,
            ffree: v.f_ffree,
            favail: v.f_favail,
            fsid: v.f_fsid,
            flag: u64::from(self.read_only),
            namemax: v.f_namemax,
        };
        // With a quota, the capacity is the share's size and free space what the quota leaves.
        if let Some(capacity) = self.share.usage.capacity() {
            let used = self.share.usage.used() + self.share.usage.reserved();
            let free = capacity.saturating_sub(used) / frsize;
            stats.blocks = stats.blocks.min(capacity / frsize);
            stats.bfree = stats.bfree.min(free);
            stats.bavail = stats.bavail.min(free);
        }
        Ok(stats)
    }
}

/// Opens the folder `path` beneath `root` without following any symlink; EXDEV (a path that
/// would leave the share) and ELOOP (a symlink on the way) say so.
fn open_beneath(root: &OwnedFd, path: &Path, access: OFlags) -> Result<OwnedFd, Failed> {
    rustix::fs::openat2(
        root,
        path,
        access | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => denied(
            "the path goes through a symlink or leaves the share; the server never follows one",
        ),
        other => Failed::from(other),
    })
}

/// `/proc/self/fd/N` of an `O_PATH` descriptor: the calls that take a path reach the pinned
/// inode itself, never a name that could be swapped meanwhile.
fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_paths_stay_in_the_share() {
        for (path, want) in [
            (&b"/"[..], ""),
            (b".", ""),
            (b"", ""),
            (b"/a/./b//c", "a/b/c"),
            (b"../../etc/passwd", "etc/passwd"),
            (b"a/../../b", "b"),
            (b"/a/b/..", "a"),
        ] {
            assert_eq!(relative(path).unwrap(), PathBuf::from(want), "{path:?}");
        }
        assert_eq!(relative(b"a\0b"), Err(Status::BadMessage));
    }

    #[test]
    fn long_names_look_like_ls() {
        let a = Attrs {
            size: Some(1234),
            uid_gid: Some((1000, 100)),
            permissions: Some(0o100644),
            // 2026-12-03 10:21:37 UTC
            atime_mtime: Some((0, 1_796_293_297)),
        };
        let line = String::from_utf8(long_name(b"f.txt", &a)).unwrap();
        assert!(line.starts_with("-rw-r--r--    1 1000"), "{line}");
        assert!(line.ends_with("Dec  3 10:21 f.txt"), "{line}");
        let dir = Attrs {
            permissions: Some(0o040755),
            ..a
        };
        assert!(
            String::from_utf8(long_name(b"d", &dir))
                .unwrap()
                .starts_with("drwxr-xr-x")
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}

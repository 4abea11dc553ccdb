//! SFTP version 3 on the wire (draft-ietf-secsh-filexfer-02, plus the OpenSSH extensions
//! in OpenSSH's PROTOCOL file): requests decoded from a packet's bytes, replies encoded
//! into a buffer. Pure functions, no I/O; the limits on lengths are checked here, so
//! nothing a client sends makes the server allocate more than one packet.

use bytes::{BufMut, BytesMut};

/// The protocol version served.
pub const VERSION: u32 = 3;
/// Largest packet accepted from a client (its length field, type byte included), as
/// OpenSSH's `sftp-server` (`SFTP_MAX_MSG_LENGTH`).
pub const MAX_PACKET: u32 = 256 * 1024;
/// Largest READ answered in full, and WRITE accepted (what `limits@openssh.com` says).
pub const MAX_IO: u32 = MAX_PACKET - 1024;
/// Longest path or name accepted.
pub const MAX_PATH: usize = 4096;

/// Packet types.
pub mod kind {
    #![allow(missing_docs)]
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// Status codes of SSH_FXP_STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// End of file, or no more folder entries.
    Eof = 1,
    /// No such file or folder.
    NoSuchFile = 2,
    /// Permission denied (also: read-only share, quota, a path leaving the share).
    PermissionDenied = 3,
    /// Any other failure.
    Failure = 4,
    /// A malformed packet.
    BadMessage = 5,
    /// An operation the server does not implement.
    OpUnsupported = 8,
}

/// `SSH_FXF_*` open flags.
pub mod open_flags {
    #![allow(missing_docs)]
    pub const READ: u32 = 0x01;
    pub const WRITE: u32 = 0x02;
    pub const APPEND: u32 = 0x04;
    pub const CREAT: u32 = 0x08;
    pub const TRUNC: u32 = 0x10;
    pub const EXCL: u32 = 0x20;
}

const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// File attributes; every field is optional on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Owner and group.
    pub uid_gid: Option<(u32, u32)>,
    /// `st_mode`: type and permission bits.
    pub permissions: Option<u32>,
    /// Access and modification times, seconds since the epoch.
    pub atime_mtime: Option<(u32, u32)>,
}

/// A decoded request. Paths and names are raw bytes: SFTP v3 does not promise UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// SSH_FXP_INIT (no request id).
    Init {
        /// The client's version.
        version: u32,
    },
    /// SSH_FXP_OPEN.
    Open {
        /// Path.
        path: &'a [u8],
        /// `SSH_FXF_*` flags.
        flags: u32,
        /// Attributes for a new file.
        attrs: Attrs,
    },
    /// SSH_FXP_CLOSE.
    Close {
        /// Handle.
        handle: &'a [u8],
    },
    /// SSH_FXP_READ.
    Read {
        /// Handle.
        handle: &'a [u8],
        /// Offset.
        offset: u64,
        /// Bytes wanted.
        len: u32,
    },
    /// SSH_FXP_WRITE.
    Write {
        /// Handle.
        handle: &'a [u8],
        /// Offset.
        offset: u64,
        /// Bytes.
        data: &'a [u8],
    },
    /// SSH_FXP_LSTAT (no final symlink followed) and SSH_FXP_STAT.
    Stat {
        /// Path.
        path: &'a [u8],
        /// STAT rather than LSTAT.
        follow: bool,
    },
    /// SSH_FXP_FSTAT.
    Fstat {
        /// Handle.
        handle: &'a [u8],
    },
    /// SSH_FXP_SETSTAT (and `lsetstat@openssh.com`).
    SetStat {
        /// Path.
        path: &'a [u8],
        /// What to change.
        attrs: Attrs,
    },
    /// SSH_FXP_FSETSTAT.
    FsetStat {
        /// Handle.
        handle: &'a [u8],
        /// What to change.
        attrs: Attrs,
    },
    /// SSH_FXP_OPENDIR.
    OpenDir {
        /// Path.
        path: &'a [u8],
    },
    /// SSH_FXP_READDIR.
    ReadDir {
        /// Handle.
        handle: &'a [u8],
    },
    /// SSH_FXP_REMOVE.
    Remove {
        /// Path.
        path: &'a [u8],
    },
    /// SSH_FXP_MKDIR.
    MkDir {
        /// Path.
        path: &'a [u8],
        /// Attributes (permissions).
        attrs: Attrs,
    },
    /// SSH_FXP_RMDIR.
    RmDir {
        /// Path.
        path: &'a [u8],
    },
    /// SSH_FXP_REALPATH.
    RealPath {
        /// Path.
        path: &'a [u8],
    },
    /// SSH_FXP_RENAME (`overwrite` false: fails if the target exists) and
    /// `posix-rename@openssh.com` (`overwrite` true).
    Rename {
        /// Old path.
        from: &'a [u8],
        /// New path.
        to: &'a [u8],
        /// Replace an existing target.
        overwrite: bool,
    },
    /// SSH_FXP_READLINK.
    ReadLink {
        /// Path.
        path: &'a [u8],
    },
    /// SSH_FXP_SYMLINK, in OpenSSH's argument order (target first, then the link's path).
    Symlink {
        /// What the link points to.
        target: &'a [u8],
        /// Where the link is made.
        link: &'a [u8],
    },
    /// `hardlink@openssh.com`.
    Hardlink {
        /// Existing file.
        from: &'a [u8],
        /// New name.
        to: &'a [u8],
    },
    /// `statvfs@openssh.com`.
    StatVfs {
        /// Any path in the share.
        path: &'a [u8],
    },
    /// `fstatvfs@openssh.com`.
    FstatVfs {
        /// Handle.
        handle: &'a [u8],
    },
    /// `fsync@openssh.com`.
    Fsync {
        /// Handle.
        handle: &'a [u8],
    },
    /// `limits@openssh.com`.
    Limits,
    /// A request type or extension the server does not implement.
    Unsupported {
        /// What it was (for the log and the status message).
        what: String,
    },
}

impl Request<'_> {
    /// The metrics and log name of the request.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Init { .. } => "init",
            Request::Open { .. } => "open",
            Request::Close { .. } => "close",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Stat { follow: true, .. } => "stat",
            Request::Stat { follow: false, .. } => "lstat",
            Request::Fstat { .. } => "fstat",
            Request::SetStat { .. } => "setstat",
            Request::FsetStat { .. } => "fsetstat",
            Request::OpenDir { .. } => "opendir",
            Request::ReadDir { .. } => "readdir",
            Request::Remove { .. } => "remove",
            Request::MkDir { .. } => "mkdir",
            Request::RmDir { .. } => "rmdir",
            Request::RealPath { .. } => "realpath",
            Request::Rename { .. } => "rename",
            Request::ReadLink { .. } => "readlink",
            Request::Symlink { .. } => "symlink",
            Request::Hardlink { .. } => "hardlink",
            Request::StatVfs { .. } => "statvfs",
            Request::FstatVfs { .. } => "fstatvfs",
            Request::Fsync { .. } => "fsync",
            Request::Limits => "limits",
            Request::Unsupported { .. } => "unsupported",
        }
    }
}

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet ended inside a field.
    #[error("the packet ends inside a field")]
    Truncated,
    /// A string longer than the limit for its field.
    #[error("a string of {0} bytes is longer than allowed")]
    TooLong(usize),
    /// Bytes left after the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    /// The packet has no type byte.
    #[error("an empty packet")]
    Empty,
}

/// Reads fields from a packet body.
#[derive(Debug)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    fn string(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong(len));
        }
        self.take(len)
    }

    fn path(&mut self) -> Result<&'a [u8], DecodeError> {
        self.string(MAX_PATH)
    }

    fn handle(&mut self) -> Result<&'a [u8], DecodeError> {
        self.string(256)
    }

    fn attrs(&mut self) -> Result<Attrs, DecodeError> {
        let flags = self.u32()?;
        let mut attrs = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            attrs.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            attrs.uid_gid = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            attrs.permissions = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            attrs.atime_mtime = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            // Extended attributes are read and ignored (none is defined that we honour).
            let count = self.u32()?;
            for _ in 0..count {
                self.string(MAX_PATH)?;
                self.string(MAX_PATH)?;
            }
        }
        Ok(attrs)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// Decodes one packet body (after the length field): the request id (0 for INIT) and the
/// request. A decode error that comes after the id carries it, so the client gets a
/// BAD_MESSAGE status for the right request.
pub fn decode(packet: &[u8]) -> Result<(u32, Request<'_>), (Option<u32>, DecodeError)> {
    let (&kind, body) = packet.split_first().ok_or((None, DecodeError::Empty))?;
    let mut r = Reader { rest: body };
    if kind == kind::INIT {
        let version = r.u32().map_err(|e| (None, e))?;
        // Extension pairs may follow; none from the client changes what we do.
        return Ok((0, Request::Init { version }));
    }
    let id = r.u32().map_err(|e| (None, e))?;
    let request = decode_body(kind, &mut r).map_err(|e| (Some(id), e))?;
    if !matches!(request, Request::Unsupported { .. }) {
        r.finish().map_err(|e| (Some(id), e))?;
    }
    Ok((id, request))
}

fn decode_body<'a>(kind: u8, r: &mut Reader<'a>) -> Result<Request<'a>, DecodeError> {
    Ok(match kind {
        kind::OPEN => Request::Open {
            path: r.path()?,
            flags: r.u32()?,
            attrs: r.attrs()?,
        },
        kind::CLOSE => Request::Close {
            handle: r.handle()?,
        },
        kind::READ => Request::Read {
            handle: r.handle()?,
            offset: r.u64()?,
            len: r.u32()?,
        },
        kind::WRITE => Request::Write {
            handle: r.handle()?,
            offset: r.u64()?,
            data: r.string(MAX_IO as usize)?,
        },
        kind::LSTAT | kind::STAT => Request::Stat {
            path: r.path()?,
            follow: kind == kind::STAT,
        },
        kind::FSTAT => Request::Fstat {
            handle: r.handle()?,
        },
        kind::SETSTAT => Request::SetStat {
            path: r.path()?,
            attrs: r.attrs()?,
        },
        kind::FSETSTAT => Request::FsetStat {
            handle: r.handle()?,
            attrs: r.attrs()?,
        },
        kind::OPENDIR => Request::OpenDir { path: r.path()? },
        kind::READDIR => Request::ReadDir {
            handle: r.handle()?,
        },
        kind::REMOVE => Request::Remove { path: r.path()? },
        kind::MKDIR => Request::MkDir {
            path: r.path()?,
            attrs: r.attrs()?,
        },
        kind::RMDIR => Request::RmDir { path: r.path()? },
        kind::REALPATH => Request::RealPath { path: r.path()? },
        kind::RENAME => Request::Rename {
            from: r.path()?,
            to: r.path()?,
            overwrite: false,
        },
        kind::READLINK => Request::ReadLink { path: r.path()? },
        kind::SYMLINK => Request::Symlink {
            target: r.path()?,
            link: r.path()?,
        },
        kind::EXTENDED => {
            let name = r.string(256)?;
            match name {
                b"posix-rename@openssh.com" => Request::Rename {
                    from: r.path()?,
                    to: r.path()?,
                    overwrite: true,
                },
                b"hardlink@openssh.com" => Request::Hardlink {
                    from: r.path()?,
                    to: r.path()?,
                },
                b"statvfs@openssh.com" => Request::StatVfs { path: r.path()? },
                b"fstatvfs@openssh.com" => Request::FstatVfs {
                    handle: r.handle()?,
                },
                b"fsync@openssh.com" => Request::Fsync {
                    handle: r.handle()?,
                },
                b"lsetstat@openssh.com" => Request::SetStat {
                    path: r.path()?,
                    attrs: r.attrs()?,
                },
                b"limits@openssh.com" => Request::Limits,
                other => Request::Unsupported {
                    what: format!("extension {:?}", String::from_utf8_lossy(other)),
                },
            }
        }
        other => Request::Unsupported {
            what: format!("packet type {other}"),
        },
    })
}

/// The extensions announced in SSH_FXP_VERSION (name, version), as OpenSSH's
/// `sftp-server` announces them.
pub const EXTENSIONS: [(&str, &str); 7] = [
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("lsetstat@openssh.com", "1"),
    ("limits@openssh.com", "1"),
];

/// Builds one reply packet: the length is filled in by [`Reply::finish`].
#[derive(Debug)]
pub struct Reply {
    buf: BytesMut,
}

impl Reply {
    /// Starts a packet of type `kind` for request `id` (`None`: VERSION, which has none).
    pub fn new(kind: u8, id: Option<u32>, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity + 9);
        buf.put_u32(0);
        buf.put_u8(kind);
        if let Some(id) = id {
            buf.put_u32(id);
        }
        Reply { buf }
    }

    /// Appends a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.put_u32(v);
        self
    }

    /// Appends a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.put_u64(v);
        self
    }

    /// Appends a string (length and bytes).
    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        self.buf.put_u32(s.len() as u32);
        self.buf.put_slice(s);
        self
    }

    /// Appends attributes.
    pub fn attrs(&mut self, a: &Attrs) -> &mut Self {
        let mut flags = 0;
        if a.size.is_some() {
            flags |= ATTR_SIZE;
        }
        if a.uid_gid.is_some() {
            flags |= ATTR_UIDGID;
        }
        if a.permissions.is_some() {
            flags |= ATTR_PERMISSIONS;
        }
        if a.atime_mtime.is_some() {
            flags |= ATTR_ACMODTIME;
        }
        self.u32(flags);
        if let Some(size) = a.size {
            self.u64(size);
        }
        if let Some((uid, gid)) = a.uid_gid {
            self.u32(uid).u32(gid);
        }
        if let Some(p) = a.permissions {
            self.u32(p);
        }
        if let Some((at, mt)) = a.atime_mtime {
            self.u32(at).u32(mt);
        }
        self
    }

    /// The buffer, for appending a DATA payload in place (after its length field).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The finished packet with its length field set.
    pub fn finish(mut self) -> BytesMut {
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

/// SSH_FXP_STATUS for request `id`.
pub fn status(id: u32, code: Status, message: &str) -> BytesMut {
    let mut r = Reply::new(kind::STATUS, Some(id), 16 + message.len());
    r.u32(code as u32).string(message.as_bytes()).string(b"en");
    r.finish()
}

/// SSH_FXP_VERSION with [`EXTENSIONS`].
pub fn version() -> BytesMut {
    let mut r = Reply::new(kind::VERSION, None, 256);
    r.u32(VERSION);
    for (name, version) in EXTENSIONS {
        r.string(name.as_bytes()).string(version.as_bytes());
    }
    r.finish()
}

/// SSH_FXP_HANDLE.
pub fn handle(id: u32, handle: &[u8]) -> BytesMut {
    let mut r = Reply::new(kind::HANDLE, Some(id), 8 + handle.len());
    r.string(handle);
    r.finish()
}

/// SSH_FXP_ATTRS.
pub fn attrs(id: u32, a: &Attrs) -> BytesMut {
    let mut r = Reply::new(kind::ATTRS, Some(id), 40);
    r.attrs(a);
    r.finish()
}

/// One entry of SSH_FXP_NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// File name (or a full path, for REALPATH and READLINK).
    pub name: Vec<u8>,
    /// `ls -l` style line.
    pub long_name: Vec<u8>,
    /// Attributes.
    pub attrs: Attrs,
}

/// SSH_FXP_NAME.
pub fn names(id: u32, entries: &[NameEntry]) -> BytesMut {
    let size: usize = entries
        .iter()
        .map(|e| e.name.len() + e.long_name.len() + 48)
        .sum();
    let mut r = Reply::new(kind::NAME, Some(id), 4 + size);
    r.u32(entries.len() as u32);
    for e in entries {
        r.string(&e.name).string(&e.long_name).attrs(&e.attrs);
    }
    r.finish()
}

/// `statvfs@openssh.com`'s reply fields, in wire order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VfsStats {
    /// Block size.
    pub bsize: u64,
    /// Fragment size (the unit of the block counts).
    pub frsize: u64,
    /// Blocks in all.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Inodes in all.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Free inodes for unprivileged users.
    pub favail: u64,
    /// File system id.
    pub fsid: u64,
    /// Flags (1: read-only, 2: nosuid).
    pub flag: u64,
    /// Longest name.
    pub namemax: u64,
}

/// SSH_FXP_EXTENDED_REPLY for `statvfs@openssh.com`.
pub fn statvfs(id: u32, v: &VfsStats) -> BytesMut {
    let mut r = Reply::new(kind::EXTENDED_REPLY, Some(id), 88);
    for x in [
        v.bsize, v.frsize, v.blocks, v.bfree, v.bavail, v.files, v.ffree, v.favail, v.fsid, v.flag,
        v.namemax,
    ] {
        r.u64(x);
    }
    r.finish()
}

/// SSH_FXP_EXTENDED_REPLY for `limits@openssh.com`.
pub fn limits(id: u32, max_open_handles: u64) -> BytesMut {
    let mut r = Reply::new(kind::EXTENDED_REPLY, Some(id), 32);
    r.u64(u64::from(MAX_PACKET))
        .u64(u64::from(MAX_IO))
        .u64(u64::from(MAX_IO))
        .u64(max_open_handles);
    r.finish()
}

/// SSH_FXP_DATA's head for `len` bytes that the caller appends after it.
pub fn data_head(id: u32, len: usize) -> Reply {
    let mut r = Reply::new(kind::DATA, Some(id), 4 + len);
    r.u32(len as u32);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, id: u32, fields: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&id.to_be_bytes());
        for f in fields {
            v.extend_from_slice(f);
        }
        v
    }

    fn s(bytes: &[u8]) -> Vec<u8> {
        let mut v = (bytes.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn decodes_requests() {
        let p = packet(
            kind::OPEN,
            7,
            &[
                &s(b"/a b"),
                &0x1au32.to_be_bytes(),
                &(ATTR_PERMISSIONS).to_be_bytes(),
                &0o644u32.to_be_bytes(),
            ],
        );
        assert_eq!(
            decode(&p).unwrap(),
            (
                7,
                Request::Open {
                    path: b"/a b",
                    flags: 0x1a,
                    attrs: Attrs {
                        permissions: Some(0o644),
                        ..Attrs::default()
                    }
                }
            )
        );
        let p = packet(
            kind::READ,
            9,
            &[
                &s(b"h1"),
                &(5u64 << 32).to_be_bytes(),
                &32768u32.to_be_bytes(),
            ],
        );
        assert_eq!(
            decode(&p).unwrap().1,
            Request::Read {
                handle: b"h1",
                offset: 5 << 32,
                len: 32768
            }
        );
        let p = packet(
            kind::EXTENDED,
            3,
            &[&s(b"posix-rename@openssh.com"), &s(b"a"), &s(b"b")],
        );
        assert_eq!(
            decode(&p).unwrap().1,
            Request::Rename {
                from: b"a",
                to: b"b",
                overwrite: true
            }
        );
        let p = packet(kind::SYMLINK, 4, &[&s(b"target"), &s(b"link")]);
        assert_eq!(
            decode(&p).unwrap().1,
            Request::Symlink {
                target: b"target",
                link: b"link"
            }
        );
        let p = packet(kind::EXTENDED, 5, &[&s(b"copy-data"), &s(b"x")]);
        assert!(matches!(
            decode(&p).unwrap(),
            (5, Request::Unsupported { .. })
        ));
        let p = packet(99, 6, &[]);
        assert!(matches!(
            decode(&p).unwrap(),
            (6, Request::Unsupported { .. })
        ));
        let init = [kind::INIT, 0, 0, 0, 3];
        assert_eq!(decode(&init).unwrap(), (0, Request::Init { version: 3 }));
    }

    #[test]
    fn refuses_malformed_packets_with_the_request_id() {
        assert_eq!(decode(&[]), Err((None, DecodeError::Empty)));
        assert_eq!(
            decode(&[kind::READ, 0, 0]),
            Err((None, DecodeError::Truncated))
        );
        // A string length far past the packet.
        let p = packet(kind::STAT, 11, &[&u32::MAX.to_be_bytes()]);
        assert_eq!(
            decode(&p),
            Err((Some(11), DecodeError::TooLong(u32::MAX as usize)))
        );
        let p = packet(kind::STAT, 12, &[&100u32.to_be_bytes(), b"abc"]);
        assert_eq!(decode(&p), Err((Some(12), DecodeError::Truncated)));
        let p = packet(kind::STAT, 13, &[&s(b"a"), b"x"]);
        assert_eq!(decode(&p), Err((Some(13), DecodeError::Trailing(1))));
        let big = vec![0u8; MAX_IO as usize + 1];
        let p = packet(kind::WRITE, 14, &[&s(b"h"), &0u64.to_be_bytes(), &s(&big)]);
        assert!(matches!(
            decode(&p),
            Err((Some(14), DecodeError::TooLong(_)))
        ));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let names: [&[u8]; 9] = [
            b"posix-rename@openssh.com",
            b"hardlink@openssh.com",
            b"statvfs@openssh.com",
            b"fstatvfs@openssh.com",
            b"fsync@openssh.com",
            b"lsetstat@openssh.com",
            b"limits@openssh.com",
            b"copy-data",
            b"",
        ];
        for round in 0..20_000usize {
            let kind = (next() % 256) as u8;
            let mut bytes = vec![kind];
            bytes.extend_from_slice(&(next() as u32).to_be_bytes());
            if kind == kind::EXTENDED || round % 3 == 0 {
                let name = names[round % names.len()];
                bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
                bytes.extend_from_slice(name);
            }
            for _ in 0..next() % 300 {
                // Small numbers often, so lengths and flags land inside the packet.
                let v = next();
                bytes.push(if v % 4 == 0 {
                    (v >> 8) as u8
                } else {
                    (v % 8) as u8
                });
            }
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn encodes_replies() {
        let st = status(5, Status::NoSuchFile, "no");
        assert_eq!(
            &st[..],
            &[
                0, 0, 0, 21, 101, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 2, b'n', b'o', 0, 0, 0, 2, b'e',
                b'n'
            ]
        );
        let a = Attrs {
            size: Some(10),
            uid_gid: Some((1, 2)),
            permissions: Some(0o100644),
            atime_mtime: Some((3, 4)),
        };
        let packet = attrs(1, &a);
        assert_eq!(&packet[..9], &[0, 0, 0, 37, kind::ATTRS, 0, 0, 0, 1]);
        // The attributes decode back to themselves.
        let mut r = Reader { rest: &packet[9..] };
        assert_eq!(r.attrs().unwrap(), a);
        assert!(r.finish().is_ok());
        let v = version();
        assert_eq!(
            u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize,
            v.len() - 4
        );
        let mut d = data_head(2, 3);
        d.buffer().extend_from_slice(b"abc");
        assert_eq!(
            &d.finish()[..],
            &[0, 0, 0, 12, 103, 0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c']
        );
    }
}

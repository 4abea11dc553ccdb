//! Who the dataplane acts as on the share, and the share root's first-start setup.
//!
//! Two modes (`--identity`, `spec.identity` of a NasVolume):
//!
//! - [`IdentityMode::Posix`]: every NFS request runs under the caller's identity (after the
//!   client rule's squashing): the thread's file-system uid, gid and groups are switched, so
//!   the kernel checks permissions and new files belong to the caller. This needs a few
//!   capabilities ([`POSIX_CAPABILITIES`]); the dataplane pod runs as uid 0 with exactly
//!   those.
//! - [`IdentityMode::Squash`]: every caller acts as the process's own user (the pod's
//!   non-root uid, its gid and supplementary groups such as the fsGroup). No capability is
//!   needed; every client can read and write everything, and every file belongs to that user.
//!
//! The invariant both keep: the identity permissions are checked against is the identity
//! that performs the operation, so an operation that was allowed to create a file is also
//! allowed to write it.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use clap::ValueEnum;
use rustix::thread::CapabilitySet;

use crate::share::TEMP_PREFIX;

/// The identity mode asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdentityChoice {
    /// `posix` when the process holds [`POSIX_CAPABILITIES`], else `squash`.
    Auto,
    /// Per-caller identities; start-up fails without the capabilities.
    Posix,
    /// Every caller acts as the process's user.
    Squash,
}

/// The identity mode in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// Per-caller identities, checked by the kernel.
    Posix,
    /// Every caller acts as the process's user.
    Squash,
}

impl IdentityMode {
    /// The mode's name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Posix => "posix",
            IdentityMode::Squash => "squash",
        }
    }
}

/// The capabilities `posix` needs, with their names: SETUID/SETGID to switch a thread's
/// file-system identity; DAC_OVERRIDE to open any caller's file for the shared descriptor
/// cache and to index the share; CHOWN, FOWNER and FSETID so that a root caller (not
/// squashed) can chown, chmod and set times like root on a local disk. All are in the Pod
/// Security Standard `baseline` (DAC_READ_SEARCH, which is not, is not needed).
pub const POSIX_CAPABILITIES: [(CapabilitySet, &str); 6] = [
    (CapabilitySet::CHOWN, "CHOWN"),
    (CapabilitySet::DAC_OVERRIDE, "DAC_OVERRIDE"),
    (CapabilitySet::FOWNER, "FOWNER"),
    (CapabilitySet::FSETID, "FSETID"),
    (CapabilitySet::SETUID, "SETUID"),
    (CapabilitySet::SETGID, "SETGID"),
];

/// Why the identity cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `--identity posix` without the capabilities it needs.
    #[error(
        "--identity posix needs the capabilities {missing} (effective set of this process); \
         run the dataplane as its pod spec does (uid 0 with CHOWN, DAC_OVERRIDE, FOWNER, FSETID, \
         SETUID, SETGID), or use --identity squash"
    )]
    MissingCapabilities {
        /// Comma-separated names.
        missing: String,
    },
    /// `--identity posix` as a uid other than 0.
    #[error(
        "--identity posix needs uid 0 (with the capabilities CHOWN, DAC_OVERRIDE, FOWNER, FSETID, \
         SETUID, SETGID): this process runs as uid {0}; use --identity squash"
    )]
    NotRoot(u32),
    /// The capability sets could not be read.
    #[error("cannot read this process's capabilities: {0}")]
    Capabilities(#[source] io::Error),
    /// Switching a thread's file-system identity did not behave as posix needs.
    #[error("switching the file-system uid to {0}: {1}; posix identities cannot work")]
    SwitchFailed(u32, &'static str),
    /// The share root could not be inspected or set up.
    #[error("share root {path}: {action}: {source}")]
    Root {
        /// The root.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// In squash mode, the process cannot write the share root.
    #[error(
        "share root {path} is not writable by uid {uid} gid {gid} (groups {groups:?}): in squash \
         mode every file is written as this user; give the pod an fsGroup (the operator does) or \
         make the folder writable by it"
    )]
    RootNotWritable {
        /// The root.
        path: String,
        /// Process uid.
        uid: u32,
        /// Process gid.
        gid: u32,
        /// Supplementary groups.
        groups: Vec<u32>,
    },
}

/// Names of the capabilities of [`POSIX_CAPABILITIES`] missing from `effective`.
pub fn missing_posix_capabilities(effective: CapabilitySet) -> Vec<&'static str> {
    POSIX_CAPABILITIES
        .iter()
        .filter(|(cap, _)| !effective.contains(*cap))
        .map(|(_, name)| *name)
        .collect()
}

/// The mode for `choice` given the process's effective uid and capabilities (pure). Posix
/// needs uid 0: the kernel drops a thread's file-system capabilities when its fsuid moves
/// from 0 to a caller's uid, which is what makes the caller's permissions apply; a non-root
/// process holding the capabilities would keep them for every caller.
pub fn choose(
    choice: IdentityChoice,
    euid: u32,
    effective: CapabilitySet,
) -> Result<IdentityMode, IdentityError> {
    let missing = missing_posix_capabilities(effective);
    let able = missing.is_empty() && euid == 0;
    match choice {
        IdentityChoice::Squash => Ok(IdentityMode::Squash),
        IdentityChoice::Auto if able => Ok(IdentityMode::Posix),
        IdentityChoice::Auto => Ok(IdentityMode::Squash),
        IdentityChoice::Posix if able => Ok(IdentityMode::Posix),
        IdentityChoice::Posix if !missing.is_empty() => Err(IdentityError::MissingCapabilities {
            missing: missing.join(", "),
        }),
        IdentityChoice::Posix => Err(IdentityError::NotRoot(euid)),
    }
}

/// The process's own identity: the one squash mode acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Supplementary groups (e.g. the pod's fsGroup).
    pub groups: Vec<u32>,
}

impl ProcessIdentity {
    /// Reads the process's identity.
    pub fn current() -> Self {
        Self {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            groups: rustix::process::getgroups()
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default(),
        }
    }
}

/// The capabilities the kernel drops while a thread's fsuid is not 0.
const FS_CAPABILITIES: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::FSETID);

/// Decides the mode for `choice` on this process and, for posix, proves on this thread what
/// it relies on: switching the fsuid takes effect (a missing capability makes `setfsuid`
/// silently do nothing), the file-system capabilities are gone while it is switched (so a
/// caller's permissions apply) and back afterwards.
pub fn detect(choice: IdentityChoice) -> Result<IdentityMode, IdentityError> {
    let caps =
        rustix::thread::capabilities(None).map_err(|e| IdentityError::Capabilities(e.into()))?;
    let euid = rustix::process::geteuid().as_raw();
    let mode = choose(choice, euid, caps.effective)?;
    if mode == IdentityMode::Posix {
        let probe = 65534;
        // SAFETY: setfsuid only changes this thread's file-system uid; it is restored below.
        let switched = unsafe {
            libc::syscall(libc::SYS_setfsuid, probe);
            libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32
        };
        let during = rustix::thread::capabilities(None).map(|c| c.effective);
        // SAFETY: as above.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, euid);
        }
        let after = rustix::thread::capabilities(None).map(|c| c.effective);
        if switched != probe {
            return Err(IdentityError::SwitchFailed(probe, "it had no effect"));
        }
        if during.map_or(true, |c| c.intersects(FS_CAPABILITIES)) {
            return Err(IdentityError::SwitchFailed(
                probe,
                "the file-system capabilities stayed (SECBIT_NO_SETUID_FIXUP?)",
            ));
        }
        if after.map_or(true, |c| !c.contains(FS_CAPABILITIES)) {
            return Err(IdentityError::SwitchFailed(
                probe,
                "the file-system capabilities did not come back",
            ));
        }
    }
    Ok(mode)
}

/// The share root's owner and mode, applied when the share is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootSetup {
    /// uid and gid of the root folder.
    pub owner: Option<(u32, u32)>,
    /// Permission bits of the root folder (e.g. 0o777).
    pub mode: Option<u32>,
}

/// What [`prepare_root`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootOutcome {
    /// The share was new: owner and mode were applied.
    Applied,
    /// The share already holds files: left as it is.
    InUse,
    /// Nothing to apply.
    Unchanged,
}

/// Extended attribute set on the share root once its owner and mode were applied, so an
/// emptied share keeps whatever its users made of the root.
pub const ROOT_MARKER: &str = "user.zeronas.root-set";

/// Whether the root carries [`ROOT_MARKER`] (false where the file system has no user
/// extended attributes: then emptiness alone decides).
pub fn root_marked(root: &Path) -> bool {
    let mut value = [0u8; 16];
    rustix::fs::lgetxattr(root, ROOT_MARKER, &mut value[..]).is_ok()
}

/// Whether a folder listing counts as a new share: nothing in it but `lost+found` (which
/// mkfs leaves) and upload temp files.
pub fn is_new_share<'a>(names: impl IntoIterator<Item = &'a OsStr>) -> bool {
    names
        .into_iter()
        .all(|n| n == "lost+found" || n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()))
}

/// Parses `UID:GID`.
pub fn parse_owner(text: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not UID:GID (e.g. 0:0 or 1000:1000)"))?;
    let id = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("{s:?} in {text:?} is not a numeric id"))
    };
    Ok((id(uid)?, id(gid)?))
}

/// Parses an octal mode such as `0777`, `2775` or `755`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    let valid =
        (1..=5).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if valid && mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is not an octal mode such as 0777 or 2775"
        )),
    }
}

/// Sets up the share root: on a new share (see [`is_new_share`], and not yet marked with
/// [`ROOT_MARKER`]) applies `setup` and marks the root; in squash
/// mode then checks that the process can write the root (unless `read_only`), so a pod
/// without the right fsGroup fails at start-up with a clear message instead of refusing
/// every write later.
pub fn prepare_root(
    root: &Path,
    setup: RootSetup,
    mode: IdentityMode,
    read_only: bool,
) -> Result<RootOutcome, IdentityError> {
    let fail = |action: &'static str| {
        let path = root.display().to_string();
        move |source: io::Error| IdentityError::Root {
            path,
            action,
            source,
        }
    };
    let mut outcome = RootOutcome::Unchanged;
    if setup != RootSetup::default() {
        let names: Vec<_> = std::fs::read_dir(root)
            .map_err(fail("list"))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        if is_new_share(names.iter().map(|n| n.as_os_str())) && !root_marked(root) {
            let meta = std::fs::symlink_metadata(root).map_err(fail("stat"))?;
            if let Some((uid, gid)) = setup.owner
                && (meta.uid(), meta.gid()) != (uid, gid)
            {
                std::os::unix::fs::lchown(root, Some(uid), Some(gid)).map_err(fail("chown"))?;
            }
            if let Some(bits) = setup.mode
                && meta.mode() & 0o7777 != bits
            {
                rustix::fs::chmod(root, rustix::fs::Mode::from_raw_mode(bits))
                    .map_err(|e| fail("chmod")(e.into()))?;
            }
            if let Err(e) =
                rustix::fs::lsetxattr(root, ROOT_MARKER, b"1", rustix::fs::XattrFlags::empty())
            {
                tracing::info!(root = %root.display(), error = %e, "cannot mark the share root (no user xattrs): an emptied share gets its root set up again");
            }
            tracing::info!(root = %root.display(), owner = ?setup.owner, mode = ?setup.mode.map(|m| format!("{m:o}")), "new share: root owner and mode set");
            outcome = RootOutcome::Applied;
        } else {
            tracing::info!(root = %root.display(), "share already holds files: root owner and mode left as they are");
            outcome = RootOutcome::InUse;
        }
    }
    if mode == IdentityMode::Squash && !read_only {
        let writable = rustix::fs::access(
            root,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        );
        if writable.is_err() {
            let me = ProcessIdentity::current();
            return Err(IdentityError::RootNotWritable {
                path: root.display().to_string(),
                uid: me.uid,
                gid: me.gid,
                groups: me.groups,
            });
        }
    }
    Ok(outcome)
}

/// A file-system identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub gids: Vec<u32>,
}

impl Creds {
    /// Whether these credentials may `want` (bits: 4 read, 2 write, 1 execute) a file with
    /// `mode`, owned by `owner`/`group`, by its mode bits; uid 0 may do anything (ACCESS,
    /// LOOKUP and READDIR; ACCESS itself refuses root execution of files with no x bit).
    pub fn may(&self, mode: u32, owner: u32, group: u32, want: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let class = if self.uid == owner {
            mode >> 6
        } else if self.gid == group || self.gids.contains(&group) {
            mode >> 3
        } else {
            mode
        };
        class & want & 7 == want & 7
    }

    /// [`Creds::may`] for READ and WRITE: an owner may also read and write its own file
    /// whatever the mode (what knfsd does), so a file created read-only still receives the
    /// data its creator writes through the descriptor it opened. ACCESS does not grant this,
    /// so a new `open` of such a file for writing is refused as on a local disk.
    pub fn permits(&self, mode: u32, owner: u32, group: u32, want: u32) -> bool {
        (self.uid == owner && want & 1 == 0) || self.may(mode, owner, group, want)
    }
}

/// Switches the calling thread's file-system identity to `creds` (posix identities only:
/// the caller checks the mode). These are per-thread system calls: the glibc wrappers of
/// setgroups would change every thread of the process.
pub fn assume(creds: &Creds) {
    // NFS goes on as before when a switch fails (the kernel then checks as the server); the
    // three calls are all its hot path pays. SFTP uses `try_assume` and refuses the request.
    switch(creds);
}

/// The three per-thread calls; returns setgroups' result (0 or -1).
fn switch(creds: &Creds) -> libc::c_long {
    // SAFETY: plain system calls on this thread's credentials; the group list pointer and
    // length describe a live slice.
    unsafe {
        let groups = libc::syscall(libc::SYS_setgroups, creds.gids.len(), creds.gids.as_ptr());
        libc::syscall(libc::SYS_setfsgid, creds.gid);
        libc::syscall(libc::SYS_setfsuid, creds.uid);
        groups
    }
}

/// [`assume`], failing when the kernel did not take the identity (setgroups refused, or
/// the fsuid/fsgid not changed: no SETUID/SETGID capability).
pub fn try_assume(creds: &Creds) -> std::io::Result<()> {
    if switch(creds) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // With an invalid id (-1) both calls change nothing and return the current one.
    // SAFETY: as in `switch`.
    let (fsgid, fsuid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
            libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
        )
    };
    if (fsuid, fsgid) != (creds.uid, creds.gid) {
        return Err(std::io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

/// The server's own identity: the process's uid, gid and supplementary groups (squash mode
/// acts as it, and posix mode returns to it after each request).
pub fn server_creds() -> Creds {
    let me = ProcessIdentity::current();
    Creds {
        uid: me.uid,
        gid: me.gid,
        gids: me.groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_capabilities() {
        let all = POSIX_CAPABILITIES
            .iter()
            .fold(CapabilitySet::empty(), |s, (c, _)| s | *c);
        assert_eq!(
            choose(IdentityChoice::Posix, 0, all).unwrap(),
            IdentityMode::Posix
        );
        assert_eq!(
            choose(IdentityChoice::Auto, 0, all).unwrap(),
            IdentityMode::Posix
        );
        assert_eq!(
            choose(IdentityChoice::Auto, 0, CapabilitySet::empty()).unwrap(),
            IdentityMode::Squash
        );
        assert_eq!(
            choose(IdentityChoice::Squash, 0, all).unwrap(),
            IdentityMode::Squash
        );
        let without_setgid = all - CapabilitySet::SETGID - CapabilitySet::CHOWN;
        let err = choose(IdentityChoice::Posix, 0, without_setgid)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CHOWN, SETGID"), "{err}");
        assert!(err.contains("--identity squash"), "{err}");
        assert_eq!(missing_posix_capabilities(all), Vec::<&str>::new());
        // A non-root process with the capabilities would keep them for every caller.
        assert_eq!(
            choose(IdentityChoice::Auto, 1000, all).unwrap(),
            IdentityMode::Squash
        );
        let err = choose(IdentityChoice::Posix, 1000, all)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs uid 0"), "{err}");
        // Only capabilities of the `baseline` Pod Security Standard.
        assert!(
            POSIX_CAPABILITIES
                .iter()
                .all(|(_, n)| *n != "DAC_READ_SEARCH")
        );
    }

    #[test]
    fn owners_and_modes_parse() {
        assert_eq!(parse_owner("0:0"), Ok((0, 0)));
        assert_eq!(parse_owner("1000:100"), Ok((1000, 100)));
        for bad in ["", "0", "a:b", "1:-1", ":1"] {
            assert!(parse_owner(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode("0777"), Ok(0o777));
        assert_eq!(parse_mode("2775"), Ok(0o2775));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert_eq!(parse_mode("0o1777"), Ok(0o1777));
        for bad in ["", "8", "0x1ff", "17777", "rwx", "077777"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_shares() {
        fn names(v: &[&'static str]) -> Vec<&'static OsStr> {
            v.iter().map(|s| OsStr::new(*s)).collect()
        }
        assert!(is_new_share(names(&[])));
        assert!(is_new_share(names(&["lost+found", ".zeronas-tmp-1"])));
        assert!(!is_new_share(names(&["lost+found", "PG_VERSION"])));
    }

    #[test]
    fn root_is_set_up_only_when_new() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let setup = RootSetup {
            owner: None,
            mode: Some(0o777),
        };
        let outcome = prepare_root(root, setup, IdentityMode::Posix, false).unwrap();
        assert_eq!(outcome, RootOutcome::Applied);
        assert_eq!(std::fs::metadata(root).unwrap().mode() & 0o7777, 0o777);
        // In use (the database-style chmod 0700 of the root must survive a restart).
        std::fs::write(root.join("PG_VERSION"), b"16").unwrap();
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let outcome = prepare_root(root, setup, IdentityMode::Posix, false).unwrap();
        assert_eq!(outcome, RootOutcome::InUse);
        assert_eq!(std::fs::metadata(root).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(
            prepare_root(root, RootSetup::default(), IdentityMode::Squash, false).unwrap(),
            RootOutcome::Unchanged
        );
        // Emptied again (a database that chmods the root and crashes before its first
        // file): where the marker could be set, the root is left as its users made it.
        std::fs::remove_file(root.join("PG_VERSION")).unwrap();
        let expected = if root_marked(root) {
            (RootOutcome::InUse, 0o700)
        } else {
            (RootOutcome::Applied, 0o777)
        };
        let outcome = prepare_root(root, setup, IdentityMode::Posix, false).unwrap();
        assert_eq!(
            (outcome, std::fs::metadata(root).unwrap().mode() & 0o7777),
            expected
        );
    }
}

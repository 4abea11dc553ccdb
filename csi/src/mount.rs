//! Mount rules without I/O: the NFS options a publish mounts with, and what
//! `/proc/self/mountinfo` says is mounted where.

/// Options every share is mounted with, the operator's own PersistentVolumes' (NFSv3 over
/// TCP, MOUNT on the NFS port: no rpcbind, no lock manager) and `hard` (no silent data loss).
/// The StorageClass `mountOptions` come after them, so they win.
pub fn default_options() -> impl Iterator<Item = &'static str> {
    use zeronas_operator::reconcile::share::{HARD, MOUNT_OPTIONS};
    MOUNT_OPTIONS.into_iter().chain([HARD])
}

/// What mount(2) gets for one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMount {
    /// `server:/share`, the source the kernel shows in mountinfo.
    pub source: String,
    /// MS_RDONLY.
    pub read_only: bool,
    /// The other `MS_*` flags: `nosuid` and `nodev` always, and what the options ask
    /// (`noatime`, `noexec`, …), which mount(8) would turn into flags too.
    pub flags: libc::c_ulong,
    /// The NFS text options (the kernel parses them; no mount.nfs helper is needed).
    pub data: String,
}

/// Generic mount options that are flags of mount(2), not NFS options (the kernel's NFS
/// parser refuses them in the data string).
const FLAG_OPTIONS: [(&str, libc::c_ulong); 9] = [
    ("noatime", libc::MS_NOATIME),
    ("nodiratime", libc::MS_NODIRATIME),
    ("relatime", libc::MS_RELATIME),
    ("strictatime", libc::MS_STRICTATIME),
    ("noexec", libc::MS_NOEXEC),
    ("nosuid", libc::MS_NOSUID),
    ("nodev", libc::MS_NODEV),
    ("sync", libc::MS_SYNCHRONOUS),
    ("dirsync", libc::MS_DIRSYNC),
];
/// fstab words with no meaning for mount(2).
const IGNORED_OPTIONS: [&str; 6] = ["defaults", "_netdev", "auto", "noauto", "user", "nouser"];

/// Why mount options are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// An option the driver sets itself, or one that cannot be passed through.
    #[error("mount option {0:?} is not allowed: {1}")]
    Refused(String, &'static str),
}

/// Builds the mount of `server`'s export `share`. `server` must be an IP address (the
/// kernel mounts without resolving names). `flags` are the volume capability's
/// `mount_flags` (the PV's `mountOptions`); `ro`/`rw` and the generic options (`noatime`,
/// `noexec`, …) become mount(2) flags, the rest NFS options.
pub fn nfs_mount(
    server: &str,
    share: &str,
    read_only: bool,
    flags: &[String],
) -> Result<NfsMount, OptionError> {
    let address: std::net::IpAddr = server
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| OptionError::Refused(server.to_owned(), "the server must be an IP address"))?;
    if !share.starts_with('/') || share.bytes().any(|b| b.is_ascii_control() || b == b',') {
        return Err(OptionError::Refused(
            share.to_owned(),
            "the export must be an absolute path",
        ));
    }
    let mut read_only = read_only;
    let mut mount_flags = libc::MS_NOSUID | libc::MS_NODEV;
    let mut options: Vec<String> = default_options().map(str::to_owned).collect();
    for option in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
        let key = option.split('=').next().unwrap_or_default();
        if let Some((_, flag)) = FLAG_OPTIONS.iter().find(|(name, _)| *name == option) {
            mount_flags |= flag;
            continue;
        }
        if IGNORED_OPTIONS.contains(&option) {
            continue;
        }
        match key {
            "" => {}
            "ro" => read_only = true,
            // A read-only volume stays read-only whatever the options say.
            "rw" => {}
            "addr" | "mountaddr" | "clientaddr" => {
                return Err(OptionError::Refused(
                    option.to_owned(),
                    "the server address comes from the volume",
                ));
            }
            _ if option.bytes().any(|b| b.is_ascii_control() || b == b' ') => {
                return Err(OptionError::Refused(
                    option.to_owned(),
                    "spaces and control characters",
                ));
            }
            _ => options.push(option.to_owned()),
        }
    }
    // The kernel needs the address itself when no mount.nfs helper resolved it.
    options.push(format!("addr={address}"));
    options.push(format!("mountaddr={address}"));
    let host = match address {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    Ok(NfsMount {
        source: format!("{host}:{share}"),
        read_only,
        flags: mount_flags,
        data: options.join(","),
    })
}

/// One line of `/proc/self/mountinfo`, the parts a publish compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (escapes decoded).
    pub mount_point: String,
    /// The file system type (`nfs`).
    pub fs_type: String,
    /// The mount source (`10.0.0.7:/`).
    pub source: String,
    /// Mounted read-only (per-mount options).
    pub read_only: bool,
}

/// Decodes mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mount_point = unescape(fields.get(4)?);
            let options = fields.get(5)?;
            let mut rest = after.split(' ');
            let fs_type = rest.next()?.to_owned();
            let source = unescape(rest.next()?);
            Some(MountEntry {
                mount_point,
                fs_type,
                source,
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// The topmost mount at `path`, if any (a later line mounted over an earlier one).
pub fn mounted_at<'a>(entries: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    let path = path.trim_end_matches('/');
    entries
        .iter()
        .rev()
        .find(|e| e.mount_point.trim_end_matches('/') == path)
}

/// Whether an existing mount is the one a publish asks for.
pub fn same_mount(entry: &MountEntry, wanted: &NfsMount) -> bool {
    entry.fs_type.starts_with("nfs")
        && entry.source == wanted.source
        && entry.read_only == wanted.read_only
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_the_classes_options_then_the_address() {
        let m = nfs_mount("10.0.0.7", "/", false, &[]).unwrap();
        assert_eq!(m.source, "10.0.0.7:/");
        assert!(!m.read_only);
        assert_eq!(
            m.data,
            "vers=3,proto=tcp,port=2049,mountport=2049,mountproto=tcp,nolock,hard,addr=10.0.0.7,mountaddr=10.0.0.7"
        );
        let m = nfs_mount(
            "10.0.0.7",
            "/",
            false,
            &["soft,timeo=50".into(), "ro".into()],
        )
        .unwrap();
        assert!(m.read_only);
        assert!(m.data.contains(",hard,soft,timeo=50,addr="), "{}", m.data);
        let m = nfs_mount("fd00::7", "/", true, &["rw".into()]).unwrap();
        assert_eq!(m.source, "[fd00::7]:/");
        assert!(m.read_only, "rw never lifts a read-only publish");
        assert!(m.data.ends_with("addr=fd00::7,mountaddr=fd00::7"));
        assert!(nfs_mount("10.0.0.7", "/", false, &["addr=1.2.3.4".into()]).is_err());
        assert!(nfs_mount("10.0.0.7", "/", false, &["a b".into()]).is_err());
        // The server is an address, never more options smuggled in.
        assert!(nfs_mount("10.0.0.7,addr=1.2.3.4", "/", false, &[]).is_err());
        assert!(nfs_mount("share.ns.svc", "/", false, &[]).is_err());
        assert!(nfs_mount("10.0.0.7", "/,vers=4", false, &[]).is_err());
    }

    #[test]
    fn generic_options_become_flags_and_fstab_words_are_dropped() {
        let flags = [
            "noatime,noexec".to_owned(),
            "defaults,_netdev,timeo=50".to_owned(),
        ];
        let m = nfs_mount("10.0.0.7", "/", false, &flags).unwrap();
        assert_eq!(
            m.flags,
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME | libc::MS_NOEXEC
        );
        assert!(!m.data.contains("noatime") && !m.data.contains("defaults"));
        assert!(!m.data.contains("_netdev"));
        assert!(m.data.contains(",timeo=50,"), "{}", m.data);
    }

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
97 22 0:52 / /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount rw,relatime shared:50 - nfs 10.0.0.7:/ rw,vers=3
98 22 0:53 / /mnt/with\\040space ro,relatime - nfs 10.0.0.8:/ ro,vers=3
99 22 0:54 / /mnt/with\\040space rw,relatime - tmpfs tmpfs rw
bad line
";

    #[test]
    fn mountinfo_is_read_with_escapes_and_the_top_mount_wins() {
        let entries = parse_mountinfo(MOUNTINFO);
        assert_eq!(entries.len(), 4);
        let csi = mounted_at(
            &entries,
            "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount/",
        )
        .unwrap();
        assert_eq!(csi.source, "10.0.0.7:/");
        assert!(!csi.read_only);
        let wanted = nfs_mount("10.0.0.7", "/", false, &[]).unwrap();
        assert!(same_mount(csi, &wanted));
        let ro = nfs_mount("10.0.0.7", "/", true, &[]).unwrap();
        assert!(!same_mount(csi, &ro), "read-only differs");
        let top = mounted_at(&entries, "/mnt/with space").unwrap();
        assert_eq!(top.fs_type, "tmpfs");
        assert_eq!(mounted_at(&entries, "/mnt"), None);
    }
}

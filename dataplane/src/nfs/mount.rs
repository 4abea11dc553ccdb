//! MOUNT v3 (RFC 1813 appendix I) and PORTMAP v2 (RFC 1833) on the NFS port, so clients that
//! mount with `mountport=` or that ask a portmapper both find the export.

use super::Exporter;
use super::nfs3::{Done, Fail};
use super::xdr::{Decoder, Encoder};

/// MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// PORTMAP program number.
pub const PORTMAP_PROGRAM: u32 = 100_000;
/// NFS program number.
pub const NFS_PROGRAM: u32 = 100_003;

/// MOUNT procedure names, by number.
pub const MOUNT_PROCEDURES: [&str; 6] = ["MNT_NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"];
/// PORTMAP procedure names, by number.
pub const PORTMAP_PROCEDURES: [&str; 6] = [
    "PMAP_NULL",
    "SET",
    "UNSET",
    "GETPORT",
    "PMAP_DUMP",
    "CALLIT",
];

const MNT3ERR_NOENT: u32 = 2;
const MNT3ERR_ACCES: u32 = 13;
const MAX_DIRPATH: usize = 1024;
/// Most (client, path) pairs the mount list (DUMP, for `showmount -a`) keeps; the oldest
/// goes first. The list is advisory (RFC 1813 §5.2.3), so a full one only forgets.
pub const MAX_MOUNT_ENTRIES: usize = 1024;

impl Exporter {
    /// The folder a MNT path names: `/` (or empty) is the share's root, `/a/b` its folder
    /// `a/b`; `/<share>` and `/<share>/a/b` are accepted too when the share has no
    /// top-level folder of that name.
    fn export_dir(&self, path: &[u8]) -> Option<(std::path::PathBuf, super::vfs::Attr)> {
        let text = std::str::from_utf8(path).ok()?;
        let parts: Vec<&str> = text
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..")
            || parts
                .iter()
                .any(|p| super::vfs::check_name(p.as_bytes()).is_err())
        {
            return None;
        }
        let direct: std::path::PathBuf = parts.iter().collect();
        let candidates = [
            Some(direct),
            (parts.first() == Some(&self.share_name.as_str())).then(|| parts[1..].iter().collect()),
        ];
        candidates.into_iter().flatten().find_map(|rel| {
            let attr = self.vfs.stat(&rel).ok().filter(|a| a.is_dir())?;
            self.vfs.dir_fd(&rel).ok()?;
            self.vfs.remember(&rel, &attr);
            Some((rel, attr))
        })
    }

    /// Runs MOUNT procedure `proc_` for a client named `machine`; `allowed`: whether any
    /// client rule matches it.
    pub fn mount3(
        &self,
        proc_: u32,
        allowed: bool,
        machine: &str,
        d: &mut Decoder,
    ) -> Result<Done, Fail> {
        let mut e = Encoder::with_capacity(128);
        match proc_ {
            0 => {}
            1 => {
                let path = d.opaque(MAX_DIRPATH)?.to_vec();
                if !allowed {
                    e.u32(MNT3ERR_ACCES);
                } else if let Some((_, attr)) = self.export_dir(&path) {
                    e.u32(0).opaque(&self.vfs.handle(&attr).encode());
                    e.u32(1).u32(super::rpc::AUTH_SYS);
                    if let Ok(mut mounts) = self.mounts.lock() {
                        let entry = (
                            machine.to_owned(),
                            String::from_utf8_lossy(&path).into_owned(),
                        );
                        if !mounts.contains(&entry) {
                            if mounts.len() >= MAX_MOUNT_ENTRIES {
                                mounts.remove(0);
                            }
                            mounts.push(entry);
                        }
                    }
                } else {
                    e.u32(MNT3ERR_NOENT);
                }
            }
            2 => {
                if let Ok(mounts) = self.mounts.lock() {
                    for (host, dir) in mounts.iter() {
                        e.bool(true).opaque(host.as_bytes()).opaque(dir.as_bytes());
                    }
                }
                e.bool(false);
            }
            3 => {
                let path = String::from_utf8_lossy(d.opaque(MAX_DIRPATH)?).into_owned();
                if let Ok(mut mounts) = self.mounts.lock() {
                    mounts.retain(|(host, dir)| !(host == machine && *dir == path));
                }
            }
            4 => {
                if let Ok(mut mounts) = self.mounts.lock() {
                    mounts.retain(|(host, _)| host != machine);
                }
            }
            5 => {
                e.bool(true).opaque(b"/");
                for rule in &self.rule_texts {
                    e.bool(true).opaque(rule.as_bytes());
                }
                e.bool(false).bool(false);
            }
            _ => return Err(Fail::Garbage),
        }
        Ok(Done::Body(e))
    }

    /// Runs PORTMAP v2 procedure `proc_`: GETPORT answers this port for NFS v3, MOUNT v3
    /// and PORTMAP itself over TCP; SET and UNSET are
    /// refused.
    pub fn portmap2(&self, proc_: u32, d: &mut Decoder) -> Result<Done, Fail> {
        let mut e = Encoder::with_capacity(64);
        match proc_ {
            0 => {}
            1 | 2 => {
                for _ in 0..4 {
                    d.u32()?;
                }
                e.bool(false);
            }
            3 => {
                let (program, version, protocol) = (d.u32()?, d.u32()?, d.u32()?);
                let _port = d.u32()?;
                let served = matches!(
                    (program, version),
                    (NFS_PROGRAM, 3) | (MOUNT_PROGRAM, 3) | (PORTMAP_PROGRAM, 2)
                );
                e.u32(if served && protocol == 6 {
                    u32::from(self.port)
                } else {
                    0
                });
            }
            4 => {
                for (program, version) in
                    [(PORTMAP_PROGRAM, 2), (NFS_PROGRAM, 3), (MOUNT_PROGRAM, 3)]
                {
                    e.bool(true)
                        .u32(program)
                        .u32(version)
                        .u32(6)
                        .u32(u32::from(self.port));
                }
                e.bool(false);
            }
            _ => return Err(Fail::Garbage),
        }
        Ok(Done::Body(e))
    }
}

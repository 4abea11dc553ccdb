//! A pod's security context as a local process gets it: user, groups, capabilities and
//! no_new_privs, applied with util-linux `setpriv` the way a container runtime applies them,
//! and the fsGroup ownership the kubelet gives a pod's volumes. Used by the node agent for
//! every container it starts and by the kernel-client test for the dataplane, so a pod spec
//! that cannot work fails in tests as it would on a cluster.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Capabilities a container runtime (containerd, CRI-O, Docker) grants by default.
pub const RUNTIME_DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The bit of a capability (upper-case name without `CAP_`) in `/proc/PID/status` masks.
pub fn capability_bit(name: &str) -> Option<u32> {
    Some(match name {
        "CHOWN" => 0,
        "DAC_OVERRIDE" => 1,
        "DAC_READ_SEARCH" => 2,
        "FOWNER" => 3,
        "FSETID" => 4,
        "KILL" => 5,
        "SETGID" => 6,
        "SETUID" => 7,
        "SETPCAP" => 8,
        "NET_BIND_SERVICE" => 10,
        "NET_RAW" => 13,
        "SYS_CHROOT" => 18,
        "SYS_ADMIN" => 21,
        "MKNOD" => 27,
        "AUDIT_WRITE" => 29,
        "SETFCAP" => 31,
        _ => return None,
    })
}

/// The identity and privileges a container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// uid (runAsUser; the image's user, 0 here, when unset).
    pub uid: u32,
    /// Primary gid (runAsGroup; 0 when unset).
    pub gid: u32,
    /// Supplementary groups: supplementalGroups and fsGroup.
    pub groups: Vec<u32>,
    /// Capability bounding set (upper-case names without `CAP_`). A root process holds
    /// them all; a non-root one none (no ambient capabilities, as with Kubernetes).
    pub capabilities: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem: true` (recorded; a process on the host cannot be given a
    /// read-only root without a mount namespace).
    pub read_only_root: bool,
    /// The pod's fsGroup: volumes are given to this group before the containers start.
    pub fs_group: Option<u32>,
    /// `fsGroupChangePolicy: OnRootMismatch`: skip the walk when the root already matches.
    pub fs_group_on_root_mismatch: bool,
}

fn id(value: Option<i64>, what: &str) -> Result<Option<u32>, String> {
    value
        .map(|v| u32::try_from(v).map_err(|_| format!("{what} {v} is not a valid id")))
        .transpose()
}

impl RunAs {
    /// What `container` of `pod` runs as; container settings override the pod's. Refuses
    /// what a kubelet refuses: `runAsNonRoot` with uid 0.
    pub fn for_container(pod: &PodSpec, container: &Container) -> Result<Self, String> {
        let pod_sc = pod.security_context.clone().unwrap_or_default();
        let sc = container.security_context.clone().unwrap_or_default();
        let uid = id(sc.run_as_user.or(pod_sc.run_as_user), "runAsUser")?.unwrap_or(0);
        let gid = id(sc.run_as_group.or(pod_sc.run_as_group), "runAsGroup")?.unwrap_or(0);
        if sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true) && uid == 0 {
            return Err(format!(
                "container {} has runAsNonRoot and would run as uid 0 (CreateContainerConfigError on a kubelet)",
                container.name
            ));
        }
        let fs_group = id(pod_sc.fs_group, "fsGroup")?;
        let mut groups = Vec::new();
        for g in pod_sc.supplemental_groups.iter().flatten() {
            groups.extend(id(Some(*g), "supplementalGroups")?);
        }
        groups.extend(fs_group);
        groups.sort_unstable();
        groups.dedup();
        let caps = sc.capabilities.unwrap_or_default();
        let dropped: Vec<String> = caps
            .drop
            .iter()
            .flatten()
            .map(|c| c.trim_start_matches("CAP_").to_uppercase())
            .collect();
        let mut capabilities: Vec<String> = if dropped.iter().any(|c| c == "ALL") {
            Vec::new()
        } else {
            RUNTIME_DEFAULT_CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .filter(|c| !dropped.contains(c))
                .collect()
        };
        for c in caps.add.iter().flatten() {
            let c = c.trim_start_matches("CAP_").to_uppercase();
            if !capabilities.contains(&c) {
                capabilities.push(c);
            }
        }
        Ok(Self {
            uid,
            gid,
            groups,
            capabilities,
            no_new_privs: sc.allow_privilege_escalation == Some(false),
            read_only_root: sc.read_only_root_filesystem == Some(true),
            fs_group,
            fs_group_on_root_mismatch: pod_sc.fs_group_change_policy.as_deref()
                == Some("OnRootMismatch"),
        })
    }

    /// The capability bounding set as the mask `/proc/PID/status` shows (`CapBnd`). A root
    /// process has these effective; any other uid none (Kubernetes grants no ambient
    /// capabilities).
    pub fn bounding_mask(&self) -> Result<u64, String> {
        self.capabilities.iter().try_fold(0u64, |mask, c| {
            capability_bit(c)
                .map(|bit| mask | 1 << bit)
                .ok_or_else(|| format!("unknown capability {c}"))
        })
    }

    /// `setpriv` arguments (before `--` and the command) that start a process with this
    /// identity, from a root parent.
    pub fn setpriv_args(&self) -> Vec<String> {
        let groups = if self.groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            format!(
                "--groups={}",
                self.groups
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let mut bounding = String::from("-all");
        for c in &self.capabilities {
            bounding.push_str(",+");
            bounding.push_str(&c.to_lowercase());
        }
        let mut args = vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            groups,
            format!("--bounding-set={bounding}"),
            "--inh-caps=-all".to_owned(),
        ];
        if self.no_new_privs {
            args.push("--no-new-privs".to_owned());
        }
        args
    }
}

/// Gives `dir` and everything in it to group `gid` the way the kubelet applies a pod's
/// fsGroup: group read and write (and execute on folders), setgid on folders so new files
/// inherit the group. With `on_root_mismatch`, nothing is done when the root already has
/// that group and those bits.
pub fn apply_fs_group(dir: &Path, gid: u32, on_root_mismatch: bool) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if on_root_mismatch && meta.gid() == gid && meta.mode() & 0o2070 == 0o2070 {
        return Ok(());
    }
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        std::os::unix::fs::lchown(&path, None, Some(gid))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mut mode = meta.mode() & 0o7777 | 0o060;
        if meta.is_dir() {
            mode |= 0o2010;
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SecurityContext};

    fn container(sc: SecurityContext) -> Container {
        Container {
            name: "c".into(),
            security_context: Some(sc),
            ..Default::default()
        }
    }

    #[test]
    fn root_with_a_few_capabilities() {
        let pod = PodSpec::default();
        let c = container(SecurityContext {
            run_as_user: Some(0),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(vec!["CHOWN".into(), "CAP_SETUID".into()]),
            }),
            ..Default::default()
        });
        let run = RunAs::for_container(&pod, &c).unwrap();
        assert_eq!((run.uid, run.gid), (0, 0));
        assert_eq!(run.capabilities, ["CHOWN", "SETUID"]);
        assert_eq!(
            run.setpriv_args(),
            [
                "--reuid=0",
                "--regid=0",
                "--clear-groups",
                "--bounding-set=-all,+chown,+setuid",
                "--inh-caps=-all",
                "--no-new-privs"
            ]
        );
    }

    #[test]
    fn non_root_with_fs_group_and_defaults() {
        let pod = PodSpec {
            security_context: Some(PodSecurityContext {
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                run_as_non_root: Some(true),
                fs_group: Some(2000),
                supplemental_groups: Some(vec![3000, 2000]),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = container(SecurityContext {
            capabilities: Some(Capabilities {
                drop: Some(vec!["NET_RAW".into()]),
                add: None,
            }),
            ..Default::default()
        });
        let run = RunAs::for_container(&pod, &c).unwrap();
        assert_eq!(run.groups, [2000, 3000]);
        assert_eq!(run.fs_group, Some(2000));
        assert!(run.fs_group_on_root_mismatch);
        assert_eq!(
            run.capabilities.len(),
            RUNTIME_DEFAULT_CAPABILITIES.len() - 1
        );
        assert!(!run.no_new_privs);
        assert!(
            run.setpriv_args()
                .contains(&"--groups=2000,3000".to_owned())
        );
        // runAsNonRoot with uid 0 is refused, as by a kubelet.
        let bad = PodSpec {
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            RunAs::for_container(&bad, &container(SecurityContext::default()))
                .unwrap_err()
                .contains("runAsNonRoot")
        );
    }

    #[test]
    fn fs_group_ownership() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"x").unwrap();
        std::fs::set_permissions(
            dir.path().join("d/f"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        // Any group as root (CI); one's own group otherwise.
        let gid = if rustix::process::geteuid().is_root() {
            4242
        } else {
            rustix::process::getegid().as_raw()
        };
        apply_fs_group(dir.path(), gid, true).unwrap();
        let meta = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap();
        assert_eq!(
            (meta("d/f").gid(), meta("d/f").mode() & 0o7777),
            (gid, 0o660)
        );
        assert_eq!(meta("d").mode() & 0o2070, 0o2070);
        assert_eq!(meta("").gid(), gid);
    }
}

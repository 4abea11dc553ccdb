//! The Node service: kubelet's publish and unpublish become NFSv3 mounts and unmounts of the
//! share (mount(2) with the kernel's text options: no mount.nfs, no rpcbind, no lockd), and
//! volume stats come from statfs, with a hung or stale server reported as abnormal rather
//! than hanging the caller.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::csi::node_server::Node;
use crate::csi::node_service_capability::rpc::Type as Rpc;
use crate::csi::volume_usage::Unit;
use crate::csi::*;
use crate::mount::{self, NfsMount};
use crate::volume::{self, context};

/// How long a statfs of a mount may take before the server counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long mount(2) may take (the kernel's own MOUNT call retries for minutes).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long resolving the share's Service name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Paths with work under way. A mount, unmount or statfs that outlives its call (a dead
/// server) keeps its claim in its thread until the kernel returns, so calls on that path do
/// not pile up stuck threads.
#[derive(Default, Clone)]
pub struct Claims(Arc<Mutex<HashSet<PathBuf>>>);

impl Claims {
    /// Claims `path`; `None` while an earlier claim on it is held.
    fn claim(&self, path: &Path) -> Option<Arc<Claim>> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(path.to_owned()).then(|| {
            Arc::new(Claim {
                claims: self.clone(),
                path: path.to_owned(),
            })
        })
    }
}

/// One claim, released when its last holder drops it.
pub struct Claim {
    claims: Claims,
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.path);
    }
}

/// The Node service.
pub struct NodeService {
    /// This node's id (the Kubernetes node name).
    pub node_id: String,
    /// `/proc/self/mountinfo`, or another file in tests.
    pub mountinfo: PathBuf,
    /// Targets with a publish or unpublish under way.
    operations: Claims,
    /// Paths with a statfs under way.
    probes: Claims,
}

impl NodeService {
    /// A node service for `node_id` reading the process's own mount table.
    pub fn new(node_id: String) -> Self {
        Self {
            node_id,
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            operations: Claims::default(),
            probes: Claims::default(),
        }
    }

    async fn mounted(&self, target: &Path) -> Result<Option<mount::MountEntry>, Status> {
        let text = tokio::fs::read_to_string(&self.mountinfo)
            .await
            .map_err(|e| Status::internal(format!("reading {}: {e}", self.mountinfo.display())))?;
        let entries = mount::parse_mountinfo(&text);
        Ok(mount::mounted_at(&entries, &target.to_string_lossy()).cloned())
    }

    /// statvfs of `path`, bounded in time; `Err` says why the file system did not answer.
    /// While an earlier statfs of the path is still stuck, answers at once.
    async fn probe(&self, path: &Path) -> Result<libc::statvfs, String> {
        let Some(claim) = self.probes.claim(path) else {
            return Err(
                "a statfs from an earlier call has not returned (server unreachable or stale)"
                    .into(),
            );
        };
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        bounded(PROBE_TIMEOUT, claim, move || {
            // SAFETY: statvfs writes into a zeroed struct it is given; the path is
            // NUL-terminated.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
            if rc == 0 {
                Ok(st)
            } else {
                Err(errno_text(
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
                ))
            }
        })
        .await
        .unwrap_or_else(|| {
            Err(format!(
                "no answer within {} s (server unreachable or stale)",
                PROBE_TIMEOUT.as_secs()
            ))
        })
    }
}

fn in_progress(path: &Path) -> Status {
    // The CSI spec's answer to a call while another on the same volume is running.
    Status::aborted(format!(
        "an operation on {} is still in progress",
        path.display()
    ))
}

/// A libc return code as `Err(errno)` when it failed.
fn errno_of(rc: libc::c_int) -> Result<(), i32> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

fn c_path(path: &Path) -> Result<CString, Status> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Status::invalid_argument("path holds a NUL byte"))
}

/// Runs blocking file-system work on a thread, giving up after `timeout` (the thread may
/// stay stuck in the kernel on a dead server, holding `claim`; the caller is answered).
async fn bounded<T: Send + 'static>(
    timeout: Duration,
    claim: Arc<Claim>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let task = tokio::task::spawn_blocking(move || {
        let _claim = claim;
        work()
    });
    tokio::time::timeout(timeout, task).await.ok()?.ok()
}

fn required<'a>(value: &'a str, what: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{what} is required")))
    } else {
        Ok(value)
    }
}

/// The server to mount: the Service name in the volume context resolved now (so a Service
/// made anew with another ClusterIP is followed), else the address recorded at creation.
async fn server_address(context: &HashMap<String, String>) -> Option<String> {
    if let Some(name) = context.get(context::SERVICE) {
        let lookup = tokio::net::lookup_host((name.as_str(), 2049));
        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(mut addresses)) => {
                if let Some(address) = addresses.next() {
                    return Some(address.ip().to_string());
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(service = %name, error = %e, "not resolved; using the recorded address");
            }
            Err(_) => {
                tracing::warn!(service = %name, "resolving timed out; using the recorded address");
            }
        }
    }
    context.get(context::SERVER).cloned()
}

fn capability(rpc: Rpc) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(
            node_service_capability::Rpc { r#type: rpc as i32 },
        )),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no staging: each publish mounts the share",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no staging: each publish mounts the share",
        ))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume_id = required(&req.volume_id, "volume_id")?;
        let target = PathBuf::from(required(&req.target_path, "target_path")?);
        let capability = req
            .volume_capability
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let writes = volume::check_capabilities(std::slice::from_ref(&capability))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let claim = self
            .operations
            .claim(&target)
            .ok_or_else(|| in_progress(&target))?;
        let server = server_address(&req.volume_context).await.ok_or_else(|| {
            Status::failed_precondition(format!(
                "volume {volume_id} has no NFS server in its context (is nfs among the class's protocols?)"
            ))
        })?;
        let share = req
            .volume_context
            .get(context::SHARE)
            .map_or("/", String::as_str);
        // A reader-only access mode (ReadOnlyMany) mounts read-only too.
        let read_only = req.readonly
            || !writes
            || req
                .volume_context
                .get(context::READ_ONLY)
                .map(String::as_str)
                == Some("true");
        let flags = match &capability.access_type {
            Some(volume_capability::AccessType::Mount(m)) => m.mount_flags.clone(),
            _ => Vec::new(),
        };
        let wanted: NfsMount = mount::nfs_mount(&server, share, read_only, &flags)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;

        if let Some(existing) = self.mounted(&target).await? {
            if mount::same_mount(&existing, &wanted) {
                return Ok(Response::new(NodePublishVolumeResponse {}));
            }
            return Err(Status::already_exists(format!(
                "{} already holds {} ({}{}), not {} ({})",
                target.display(),
                existing.source,
                existing.fs_type,
                if existing.read_only {
                    ", read-only"
                } else {
                    ""
                },
                wanted.source,
                if wanted.read_only {
                    "read-only"
                } else {
                    "read-write"
                },
            )));
        }
        tokio::fs::create_dir_all(&target)
            .await
            .map_err(|e| Status::internal(format!("creating {}: {e}", target.display())))?;
        let source = CString::new(wanted.source.clone())
            .map_err(|_| Status::invalid_argument("server holds a NUL byte"))?;
        let data = CString::new(wanted.data.clone())
            .map_err(|_| Status::invalid_argument("mount options hold a NUL byte"))?;
        let c_target = c_path(&target)?;
        let flags = if wanted.read_only { libc::MS_RDONLY } else { 0 } | wanted.flags;
        let outcome = bounded(MOUNT_TIMEOUT, claim, move || {
            // SAFETY: every pointer is a NUL-terminated string that outlives the call.
            let rc = unsafe {
                libc::mount(
                    source.as_ptr(),
                    c_target.as_ptr(),
                    c"nfs".as_ptr(),
                    flags,
                    data.as_ptr().cast(),
                )
            };
            errno_of(rc)
        })
        .await;
        match outcome {
            Some(Ok(())) => {
                tracing::info!(volume = volume_id, target = %target.display(), source = %wanted.source, options = %wanted.data, "mounted");
                Ok(Response::new(NodePublishVolumeResponse {}))
            }
            Some(Err(errno)) => Err(Status::internal(format!(
                "mount -t nfs {} {} -o {}: {}",
                wanted.source,
                target.display(),
                wanted.data,
                errno_text(errno)
            ))),
            None => Err(Status::deadline_exceeded(format!(
                "mounting {} did not finish within {} s",
                wanted.source,
                MOUNT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let target = PathBuf::from(required(&req.target_path, "target_path")?);
        let claim = self
            .operations
            .claim(&target)
            .ok_or_else(|| in_progress(&target))?;
        if self.mounted(&target).await?.is_some() {
            // A server that does not answer would hang a plain unmount: detach it lazily
            // and abort its pending calls instead.
            let stale = self.probe(&target).await.err();
            let how = if stale.is_some() {
                libc::MNT_DETACH | libc::MNT_FORCE
            } else {
                0
            };
            let c_target = c_path(&target)?;
            let outcome = bounded(MOUNT_TIMEOUT, claim.clone(), move || {
                // SAFETY: the path is NUL-terminated and outlives the call.
                errno_of(unsafe { libc::umount2(c_target.as_ptr(), how) })
            })
            .await;
            match outcome {
                Some(Ok(())) => {
                    tracing::info!(volume = %volume_id, target = %target.display(), lazy = stale.is_some(), reason = stale.as_deref().unwrap_or(""), "unmounted");
                }
                Some(Err(errno)) if errno == libc::EINVAL || errno == libc::ENOENT => {}
                Some(Err(errno)) => {
                    return Err(Status::internal(format!(
                        "unmounting {}: {}",
                        target.display(),
                        errno_text(errno)
                    )));
                }
                None => {
                    return Err(Status::deadline_exceeded(format!(
                        "unmounting {} did not finish",
                        target.display()
                    )));
                }
            }
        }
        match tokio::fs::remove_dir(&target).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Status::internal(format!(
                    "removing {}: {e}",
                    target.display()
                )));
            }
        }
        drop(claim);
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        required(&req.volume_id, "volume_id")?;
        let path = PathBuf::from(required(&req.volume_path, "volume_path")?);
        if self.mounted(&path).await?.is_none() {
            return match tokio::fs::symlink_metadata(&path).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Status::not_found(
                    format!("{} does not exist", path.display()),
                )),
                _ => Err(Status::not_found(format!(
                    "volume {} is not mounted at {}",
                    req.volume_id,
                    path.display()
                ))),
            };
        }
        let response = match self.probe(&path).await {
            Ok(st) => {
                let frsize = st.f_frsize as i64;
                let total = st.f_blocks as i64 * frsize;
                let available = st.f_bavail as i64 * frsize;
                let used = total - st.f_bfree as i64 * frsize;
                NodeGetVolumeStatsResponse {
                    usage: vec![
                        VolumeUsage {
                            available,
                            total,
                            used,
                            unit: Unit::Bytes as i32,
                        },
                        VolumeUsage {
                            available: st.f_favail as i64,
                            total: st.f_files as i64,
                            used: st.f_files as i64 - st.f_ffree as i64,
                            unit: Unit::Inodes as i32,
                        },
                    ],
                    volume_condition: Some(VolumeCondition {
                        abnormal: false,
                        message: "the share answers".into(),
                    }),
                }
            }
            Err(why) => NodeGetVolumeStatsResponse {
                usage: Vec::new(),
                volume_condition: Some(VolumeCondition {
                    abnormal: true,
                    message: format!("statfs: {why}"),
                }),
            },
        };
        Ok(Response::new(response))
    }

    async fn node_expand_volume(
        &self,
        _request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no node expansion: the dataplane grows the share",
        ))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![
                capability(Rpc::GetVolumeStats),
                capability(Rpc::VolumeCondition),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_claimed_once_until_every_holder_lets_go() {
        let claims = Claims::default();
        let path = Path::new("/var/lib/kubelet/pods/p/volumes/x/mount");
        let first = claims.claim(path).expect("free");
        assert!(claims.claim(path).is_none(), "a second operation waits");
        assert!(
            claims.claim(Path::new("/other")).is_some(),
            "other paths are free"
        );
        // A stuck thread holds a clone: the path stays claimed after the call returned.
        let held_by_thread = first.clone();
        drop(first);
        assert!(claims.claim(path).is_none());
        drop(held_by_thread);
        assert!(
            claims.claim(path).is_some(),
            "released with the last holder"
        );
    }
}

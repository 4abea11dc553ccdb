//! One pod on the node agent: its volumes mapped to folders, each container a local process
//! restarted per `restartPolicy` with the kubelet's back-off, its probes, and the Pod status
//! patched after every change.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PersistentVolume, PersistentVolumeClaim, Pod,
    PodCondition, PodIP, PodStatus, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use super::NodeConfig;
use super::launch::{binary_for, container_env, rewrite_arg, token_kubeconfig};
use super::probe::{self, ProbeSpec, Tracker};
use crate::security::{RunAs, apply_fs_group};

/// Longest restart back-off, as in the kubelet.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A running pod: stop it with [`PodRun::stop`].
#[derive(Debug)]
pub(crate) struct PodRun {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The pod's loopback IP.
    pub ip: Ipv4Addr,
}

impl PodRun {
    /// Stops every container (SIGTERM, then SIGKILL after the grace period) and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What the agent knows about one container.
#[derive(Debug, Clone)]
struct ContainerRecord {
    name: String,
    image: String,
    ready: bool,
    restarts: i32,
    pid: Option<u32>,
    state: ContainerState,
    last_state: Option<ContainerState>,
    /// Set when it exited for good (restart policy says no restart).
    finished: Option<i32>,
}

struct Shared {
    pods: Api<Pod>,
    client: Client,
    pod: Pod,
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    config: Arc<NodeConfig>,
    start_time: Time,
    containers: Mutex<Vec<ContainerRecord>>,
    /// Held from reading the records to the status patch, so patches land in the order of
    /// the changes (two containers starting at once once left a pod at 2/3 for good).
    publishing: Mutex<()>,
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn waiting(reason: &str, message: impl Into<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
        }),
        ..Default::default()
    }
}

/// Starts running `pod` (already bound to this node) at `ip`.
pub(crate) fn start(client: Client, config: Arc<NodeConfig>, pod: Pod, ip: Ipv4Addr) -> PodRun {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = config
        .work_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{}", &uid[..uid.len().min(8)]));
    let containers = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| ContainerRecord {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            ready: false,
            restarts: 0,
            pid: None,
            state: waiting("ContainerCreating", "mapping volumes"),
            last_state: None,
            finished: None,
        })
        .collect();
    let shared = Arc::new(Shared {
        pods: Api::namespaced(client.clone(), &namespace),
        client,
        pod,
        name,
        ip,
        dir,
        config,
        start_time: now(),
        containers: Mutex::new(containers),
        publishing: Mutex::new(()),
    });
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_pod(shared, stop_rx));
    PodRun { stop, task, ip }
}

/// Resolves when the stop flag is raised (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn run_pod(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    shared.publish().await;
    if let Err(e) = tokio::fs::create_dir_all(&shared.dir).await {
        shared
            .fail_all(
                "CreateContainerError",
                format!("create {}: {e}", shared.dir.display()),
            )
            .await;
        return stopped(&mut stop).await;
    }
    let volumes = tokio::select! {
        v = shared.volumes() => v,
        () = stopped(&mut stop) => return,
    };
    let volumes = match volumes {
        Ok(v) => v,
        Err(message) => {
            shared.fail_all("CreateContainerConfigError", message).await;
            return stopped(&mut stop).await;
        }
    };
    let extra_env = match shared.service_account_env().await {
        Ok(env) => env,
        Err(message) => {
            shared.fail_all("CreateContainerConfigError", message).await;
            return stopped(&mut stop).await;
        }
    };
    let containers: Vec<Container> = shared
        .pod
        .spec
        .iter()
        .flat_map(|s| s.containers.clone())
        .collect();
    let runs = containers
        .into_iter()
        .enumerate()
        .map(|(index, container)| {
            run_container(
                shared.clone(),
                index,
                container,
                volumes.clone(),
                extra_env.clone(),
                stop.clone(),
            )
        });
    futures::future::join_all(runs).await;
}

/// How a run of a container ended.
enum Outcome {
    Exited(ExitStatus),
    Unhealthy(String),
    Stop,
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

async fn run_container(
    shared: Arc<Shared>,
    index: usize,
    container: Container,
    volumes: BTreeMap<String, PathBuf>,
    extra_env: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let plan = match shared.launch_plan(&container, &volumes, extra_env) {
        Ok(plan) => plan,
        Err(message) => {
            shared
                .update(index, |c| {
                    c.state = waiting("CreateContainerConfigError", message)
                })
                .await;
            return stopped(&mut stop).await;
        }
    };
    let restart_policy = shared
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".to_owned());
    let grace = Duration::from_secs(
        shared
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    );
    let mut backoff = shared.config.restart_backoff;
    loop {
        let mut child = match plan.spawn() {
            Ok(child) => child,
            Err(e) => {
                shared
                    .update(index, |c| c.state = waiting("StartError", e.to_string()))
                    .await;
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    () = stopped(&mut stop) => return,
                }
            }
        };
        let pid = child.id();
        info!(pod = %shared.name, container = %container.name, ?pid, ip = %shared.ip, "started");
        let has_readiness = plan.readiness.is_some();
        shared
            .update(index, |c| {
                c.pid = pid;
                c.ready = !has_readiness;
                c.state = ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(now()),
                    }),
                    ..Default::default()
                };
            })
            .await;
        let outcome = tokio::select! {
            status = child.wait() => match status {
                Ok(status) => Outcome::Exited(status),
                Err(e) => Outcome::Unhealthy(format!("wait: {e}")),
            },
            reason = shared.probe(index, plan.readiness.clone(), plan.liveness.clone()) => Outcome::Unhealthy(reason),
            () = stopped(&mut stop) => Outcome::Stop,
        };
        let status = match outcome {
            Outcome::Stop => {
                terminate(&mut child, grace).await;
                return;
            }
            Outcome::Unhealthy(reason) => {
                warn!(pod = %shared.name, container = %container.name, %reason, "liveness failed; restarting");
                terminate(&mut child, grace).await
            }
            Outcome::Exited(status) => Some(status),
        };
        let code = status.map(exit_code).unwrap_or(-1);
        info!(pod = %shared.name, container = %container.name, code, "exited");
        let restart = match restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.to_owned()),
                finished_at: Some(now()),
                ..Default::default()
            }),
            ..Default::default()
        };
        shared
            .update(index, |c| {
                c.ready = false;
                c.pid = None;
                if restart {
                    c.restarts += 1;
                    c.last_state = Some(terminated.clone());
                    c.state = waiting(
                        "CrashLoopBackOff",
                        format!("back-off {backoff:?} restarting"),
                    );
                } else {
                    c.state = terminated.clone();
                    c.finished = Some(code);
                }
            })
            .await;
        if !restart {
            return stopped(&mut stop).await;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns the exit status when it was observed.
async fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            return Some(status);
        }
    }
    let _ = child.kill().await;
    child.wait().await.ok()
}

/// Everything needed to start one container as a process.
struct LaunchPlan {
    binary: PathBuf,
    /// The container's security context, applied through `setpriv`.
    run_as: RunAs,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    log: PathBuf,
    readiness: Option<ProbeSpec>,
    liveness: Option<ProbeSpec>,
}

impl LaunchPlan {
    fn spawn(&self) -> std::io::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // setpriv execs the binary in place, so the PID is the container's process.
        Command::new("setpriv")
            .args(self.run_as.setpriv_args())
            .arg("--")
            .arg(&self.binary)
            .args(&self.args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
    }
}

impl Shared {
    /// Applies `change` to container `index` and publishes the Pod status.
    async fn update(&self, index: usize, change: impl FnOnce(&mut ContainerRecord)) {
        {
            let mut containers = self.containers.lock().await;
            if let Some(c) = containers.get_mut(index) {
                change(c);
            }
        }
        self.publish().await;
    }

    async fn fail_all(&self, reason: &str, message: String) {
        warn!(pod = %self.name, reason, %message, "cannot start pod");
        {
            let mut containers = self.containers.lock().await;
            for c in containers.iter_mut() {
                c.state = waiting(reason, message.clone());
            }
        }
        self.publish().await;
    }

    /// Patches the Pod status from the container records.
    async fn publish(&self) {
        let _in_order = self.publishing.lock().await;
        let status = {
            let containers = self.containers.lock().await;
            pod_status(&containers, self.ip, &self.start_time)
        };
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = self
            .pods
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            warn!(pod = %self.name, error = %e, "patching pod status failed");
        }
    }

    /// Maps each volume the agent supports to a host folder: claims to their PV's hostPath
    /// or local path (waiting until bound), emptyDir to a folder in the pod's directory,
    /// hostPath to itself. Other volume kinds (projected tokens, ConfigMaps) are not mapped.
    async fn volumes(&self) -> Result<BTreeMap<String, PathBuf>, String> {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let mut mapped = BTreeMap::new();
        for volume in self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
        {
            // Whether the kubelet would apply the pod's fsGroup: emptyDir and local volumes
            // support ownership management, hostPath (volume or PV) does not.
            let (path, owned) = if let Some(source) = &volume.persistent_volume_claim {
                loop {
                    match self
                        .claim_path(&claims, &volumes, &source.claim_name)
                        .await?
                    {
                        Some(found) => break found,
                        // The Pod keeps reporting ContainerCreating meanwhile.
                        None => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
            } else if volume.empty_dir.is_some() {
                let uid = self.pod.metadata.uid.as_deref().unwrap_or_default();
                (
                    super::empty_dir(&self.config.empty_dir_root, uid, &volume.name),
                    true,
                )
            } else if let Some(host) = &volume.host_path {
                (PathBuf::from(&host.path), false)
            } else if let Some(source) = &volume.secret {
                let dir = self.dir.join("volumes").join(&volume.name);
                loop {
                    match self.write_secret(&namespace, source, &dir).await? {
                        true => break,
                        // Like the kubelet: the pod waits for its Secret.
                        false => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
                mapped.insert(volume.name.clone(), dir);
                continue;
            } else {
                continue;
            };
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|e| format!("volume {}: create {}: {e}", volume.name, path.display()))?;
            let pod_sc = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.security_context.clone());
            if let Some(gid) = pod_sc.as_ref().and_then(|sc| sc.fs_group)
                && owned
            {
                let on_mismatch = pod_sc
                    .as_ref()
                    .and_then(|sc| sc.fs_group_change_policy.as_deref())
                    == Some("OnRootMismatch");
                let (dir, gid) = (path.clone(), gid as u32);
                tokio::task::spawn_blocking(move || apply_fs_group(&dir, gid, on_mismatch))
                    .await
                    .map_err(|e| format!("volume {}: fsGroup: {e}", volume.name))?
                    .map_err(|e| {
                        format!(
                            "volume {}: fsGroup {gid} on {}: {e}",
                            volume.name,
                            path.display()
                        )
                    })?;
            }
            mapped.insert(volume.name.clone(), path);
        }
        Ok(mapped)
    }

    /// Writes the keys of a Secret volume as files into `dir`, as the kubelet does: mode
    /// `defaultMode` (default 0644), owned by root and the pod's fsGroup when it has one.
    /// `false` while the Secret does not exist yet.
    async fn write_secret(
        &self,
        namespace: &str,
        source: &k8s_openapi::api::core::v1::SecretVolumeSource,
        dir: &Path,
    ) -> Result<bool, String> {
        let name = source.secret_name.clone().unwrap_or_default();
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), namespace);
        let Some(secret) = secrets
            .get_opt(&name)
            .await
            .map_err(|e| format!("get secret {name}: {e}"))?
        else {
            return Ok(false);
        };
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let gid = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.fs_group)
            .map(|g| g as u32);
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("secret {name}: create {}: {e}", dir.display()))?;
        for (key, value) in secret.data.iter().flatten() {
            let path = dir.join(key);
            tokio::fs::write(&path, &value.0)
                .await
                .map_err(|e| format!("secret {name}: write {}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("secret {name}: chmod {}: {e}", path.display()))?;
            if let Some(gid) = gid {
                std::os::unix::fs::chown(&path, Some(0), Some(gid))
                    .map_err(|e| format!("secret {name}: chown {}: {e}", path.display()))?;
            }
        }
        Ok(true)
    }

    /// The folder behind a bound claim, and whether its volume supports fsGroup ownership
    /// (`local` does, `hostPath` does not); `None` while it is not bound yet.
    async fn claim_path(
        &self,
        claims: &Api<PersistentVolumeClaim>,
        volumes: &Api<PersistentVolume>,
        claim: &str,
    ) -> Result<Option<(PathBuf, bool)>, String> {
        let Some(pvc) = claims
            .get_opt(claim)
            .await
            .map_err(|e| format!("get claim {claim}: {e}"))?
        else {
            return Ok(None);
        };
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let Some(volume_name) = pvc.spec.and_then(|s| s.volume_name).filter(|_| bound) else {
            return Ok(None);
        };
        let pv = volumes
            .get(&volume_name)
            .await
            .map_err(|e| format!("get volume {volume_name}: {e}"))?;
        let spec = pv.spec.unwrap_or_default();
        spec.host_path
            .map(|h| (h.path, false))
            .or(spec.local.map(|l| (l.path, true)))
            .map(|(p, owned)| Some((PathBuf::from(p), owned)))
            .ok_or_else(|| format!("volume {volume_name} is neither hostPath nor local; the node agent cannot map it"))
    }

    /// `KUBECONFIG` with a token of the pod's ServiceAccount (bound to this pod), unless the
    /// pod opts out of token automounting.
    async fn service_account_env(&self) -> Result<Vec<(String, String)>, String> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let Some(account) = spec
            .service_account_name
            .filter(|_| spec.automount_service_account_token != Some(false))
        else {
            return Ok(Vec::new());
        };
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.name.clone()),
                    uid: self.pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let token = accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("token for service account {namespace}/{account}: {e}"))?
            .status
            .map(|s| s.token)
            .ok_or_else(|| format!("no token returned for {namespace}/{account}"))?;
        let path = self.dir.join("kubeconfig");
        let text = token_kubeconfig(
            &self.config.api_server,
            &self.config.ca_file,
            &namespace,
            &token,
        );
        tokio::fs::write(&path, text)
            .await
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(vec![("KUBECONFIG".to_owned(), path.display().to_string())])
    }

    fn launch_plan(
        &self,
        container: &Container,
        volumes: &BTreeMap<String, PathBuf>,
        extra_env: Vec<(String, String)>,
    ) -> Result<LaunchPlan, String> {
        let image = container.image.clone().unwrap_or_default();
        let binary = binary_for(&self.config.images, &image)
            .ok_or_else(|| format!("no local binary for image {image}"))?
            .to_owned();
        if container.command.is_some() {
            return Err("containers that override command are not supported".to_owned());
        }
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            if let Some(host) = volumes.get(&mount.name) {
                let host = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => host.join(sub),
                    None => host.clone(),
                };
                mounts.push((mount.mount_path.clone(), host));
            }
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let mut args: Vec<String> = container
            .args
            .iter()
            .flatten()
            .map(|a| rewrite_arg(a, self.ip, &mounts))
            .collect();
        let kubeconfig = extra_env
            .iter()
            .find(|(k, _)| k == "KUBECONFIG")
            .map(|(_, v)| v.clone());
        if let Some(path) = kubeconfig.filter(|_| {
            self.config
                .kubeconfig_flag_images
                .contains(super::launch::image_repository(&image))
        }) {
            args.push(format!("--kubeconfig={path}"));
        }
        let mut env = container_env(&self.pod, container, self.ip)?;
        env.extend(extra_env);
        let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .map(|p| probe::resolve(container, p, self.ip))
                .transpose()
        };
        let pod_spec = self.pod.spec.clone().unwrap_or_default();
        let run_as = RunAs::for_container(&pod_spec, container)?;
        Ok(LaunchPlan {
            binary,
            run_as,
            args,
            env,
            dir: self.dir.clone(),
            log: self.dir.join(format!("{}.log", container.name)),
            readiness: probe(&container.readiness_probe)?,
            liveness: probe(&container.liveness_probe)?,
        })
    }

    /// Runs the probes of container `index`: readiness updates the status on every flip;
    /// returns (with the reason) only when liveness fails.
    async fn probe(
        &self,
        index: usize,
        readiness: Option<ProbeSpec>,
        liveness: Option<ProbeSpec>,
    ) -> String {
        let readiness_loop = async {
            let Some(spec) = readiness else {
                return std::future::pending::<()>().await;
            };
            tokio::time::sleep(spec.initial_delay).await;
            let mut tracker = Tracker::new(false);
            let mut ready = false;
            loop {
                let passing = tracker.record(&spec, probe::check(&spec).await.is_ok());
                if passing != ready {
                    ready = passing;
                    self.update(index, |c| c.ready = passing).await;
                }
                tokio::time::sleep(spec.period).await;
            }
        };
        let liveness_loop = async {
            let Some(spec) = liveness else {
                return std::future::pending::<String>().await;
            };
            tokio::time::sleep(spec.initial_delay).await;
            let mut tracker = Tracker::new(true);
            loop {
                let result = probe::check(&spec).await;
                if !tracker.record(&spec, result.is_ok()) {
                    return result.err().unwrap_or_default();
                }
                tokio::time::sleep(spec.period).await;
            }
        };
        tokio::select! {
            reason = liveness_loop => reason,
            () = readiness_loop => String::new(),
        }
    }
}

/// The Pod status for the current container records.
fn pod_status(containers: &[ContainerRecord], ip: Ipv4Addr, start_time: &Time) -> PodStatus {
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let started = containers
        .iter()
        .any(|c| c.state.running.is_some() || c.restarts > 0 || c.finished.is_some());
    let phase = if !containers.is_empty() && containers.iter().all(|c| c.finished.is_some()) {
        if containers.iter().all(|c| c.finished == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if started {
        "Running"
    } else {
        "Pending"
    };
    let condition = |kind: &str, ok: bool| PodCondition {
        type_: kind.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        ..Default::default()
    };
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(vec![
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", all_ready),
            condition("Ready", all_ready),
        ]),
        host_ip: Some("127.0.0.1".to_owned()),
        pod_ip: Some(ip.to_string()),
        pod_ips: Some(vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(start_time.clone()),
        container_statuses: Some(
            containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: c.image.clone(),
                    // The process id, so a test can find (and kill) the container's process.
                    container_id: c.pid.map(|pid| format!("zeronas-e2e://{pid}")),
                    ready: c.ready,
                    started: Some(c.state.running.is_some()),
                    restart_count: c.restarts,
                    state: Some(c.state.clone()),
                    last_state: c.last_state.clone(),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ready: bool, running: bool, finished: Option<i32>) -> ContainerRecord {
        ContainerRecord {
            name: "c".into(),
            image: "i".into(),
            ready,
            restarts: 0,
            pid: running.then_some(42),
            state: if running {
                ContainerState {
                    running: Some(ContainerStateRunning { started_at: None }),
                    ..Default::default()
                }
            } else {
                waiting("ContainerCreating", "")
            },
            last_state: None,
            finished,
        }
    }

    #[test]
    fn status_follows_the_containers() {
        let ip = Ipv4Addr::new(127, 0, 9, 2);
        let t = now();
        let s = pod_status(&[record(false, false, None)], ip, &t);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let s = pod_status(&[record(true, true, None)], ip, &t);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("127.0.9.2"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!(cs.container_id.as_deref(), Some("zeronas-e2e://42"));
        let s = pod_status(&[record(false, false, Some(0))], ip, &t);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let s = pod_status(
            &[record(false, false, Some(0)), record(false, false, Some(1))],
            ip,
            &t,
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }
}

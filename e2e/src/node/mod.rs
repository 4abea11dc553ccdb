//! A test-only node agent standing in for the kubelet.
//!
//! It registers a Node and keeps its Ready heartbeat; binds every unscheduled pod whose
//! images it can run (there is no scheduler: the project's own images, mapped to locally
//! built binaries); runs each bound pod as local processes on its own pod IP
//! in a local pod network ([`crate::pod_ips`]) with volumes mapped to folders ([`pod`]); and finishes graceful
//! deletions the way a kubelet does (stop the processes, then delete the pod with grace 0).
//!
//! Differences from a kubelet, on purpose: no container isolation (processes run as the
//! test's user, without the pod's security context or cgroup limits), `0.0.0.0:PORT`
//! arguments are rewritten to the pod IP (there is no network namespace), and a pod's
//! ServiceAccount token reaches it as a kubeconfig in `KUBECONFIG`.

pub mod launch;
mod pod;
pub mod probe;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::pod_ips::PodIpPool;
use crate::{Context, Error, Result};
use pod::PodRun;

/// How the node agent runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name.
    pub name: String,
    /// Image repository (without tag) → local binary.
    pub images: BTreeMap<String, PathBuf>,
    /// Image repositories whose programs (client-go's) read the in-cluster token from a
    /// fixed path and take no `KUBECONFIG`: they get `--kubeconfig=<the pod's kubeconfig>`
    /// appended, the stand-in for the token a kubelet mounts.
    pub kubeconfig_flag_images: BTreeSet<String>,
    /// The /24 pod network (`a.b.c.0`); it must be local (see `scripts/netns.sh`).
    pub pod_network: std::net::Ipv4Addr,
    /// Pod folders (volumes, logs, kubeconfigs) go under `work_dir/pods`.
    pub work_dir: PathBuf,
    /// emptyDir volumes go to `empty_dir_root/<pod uid>/<volume>`: a short path, because a
    /// unix socket's path (a CSI driver's, in an emptyDir shared with its sidecars) must fit
    /// in 108 bytes, which `work_dir` in a deep checkout does not leave.
    pub empty_dir_root: PathBuf,
    /// The apiserver URL written into pods' kubeconfigs.
    pub api_server: String,
    /// The cluster CA written into pods' kubeconfigs.
    pub ca_file: PathBuf,
    /// First restart back-off of a crashed container (the kubelet uses 10 s), doubling up
    /// to 5 minutes.
    pub restart_backoff: Duration,
}

/// Where the node agent keeps emptyDir `volume` of the pod with `uid`.
pub fn empty_dir(root: &Path, uid: &str, volume: &str) -> PathBuf {
    root.join(&uid[..uid.len().min(8)]).join(volume)
}

struct Agent {
    client: Client,
    config: Arc<NodeConfig>,
    running: Mutex<HashMap<String, PodRun>>,
    terminating: Mutex<HashSet<String>>,
    ips: Mutex<PodIpPool>,
}

/// The running node agent. Call [`NodeAgent::shutdown`] to stop its pods; dropping it
/// also kills every process it started (their handles kill on drop).
pub struct NodeAgent {
    agent: Arc<Agent>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeAgent {
    /// Registers the Node and starts watching pods.
    pub async fn start(client: Client, config: NodeConfig) -> Result<Self> {
        let mut ips = PodIpPool::new(config.pod_network).ok_or_else(|| {
            Error::Unsupported(format!(
                "pod network {} is not a usable /24",
                config.pod_network
            ))
        })?;
        // Pods bind their pod IP: fail now, clearly, when the network is not local.
        let probe_ip = ips.allocate().unwrap_or(config.pod_network);
        std::net::TcpListener::bind((probe_ip, 0)).map_err(|e| {
            Error::Unsupported(format!(
                "cannot bind pod IP {probe_ip} ({e}): run inside e2e/scripts/netns.sh, which routes the pod network locally"
            ))
        })?;
        ips.release(probe_ip);
        for binary in config.images.values() {
            if !binary.is_file() {
                return Err(Error::Missing(binary.clone()));
            }
        }
        register(&client, &config.name).await?;
        let agent = Arc::new(Agent {
            client,
            config: Arc::new(config),
            running: Mutex::new(HashMap::new()),
            terminating: Mutex::new(HashSet::new()),
            ips: Mutex::new(ips),
        });
        let tasks = vec![
            tokio::spawn(heartbeat(agent.client.clone(), agent.config.name.clone())),
            tokio::spawn(watch_pods(agent.clone())),
        ];
        info!(node = %agent.config.name, "node agent started");
        Ok(Self { agent, tasks })
    }

    /// Stops watching and stops every pod's processes (SIGTERM, then SIGKILL).
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        let runs: Vec<PodRun> = self
            .agent
            .running
            .lock()
            .await
            .drain()
            .map(|(_, r)| r)
            .collect();
        futures::future::join_all(runs.into_iter().map(PodRun::stop)).await;
    }

    /// The folder holding every pod's folder and container logs.
    pub fn pods_dir(&self) -> PathBuf {
        self.agent.config.work_dir.join("pods")
    }

    /// The last `lines` lines of every container log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        log_tails(&self.pods_dir(), lines)
    }
}

/// The last `lines` lines of each `*.log` under `pods_dir/<pod>/`.
pub fn log_tails(pods_dir: &Path, lines: usize) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(pods_dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|pod| {
            std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.iter()
        .map(|p| {
            format!(
                "----- {} (last {lines} lines)\n{}",
                p.display(),
                crate::cluster::tail(p, lines)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Creates the Node (if missing) and reports it Ready.
async fn register(client: &Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_owned(), name.to_owned()),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ])),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context(|| format!("create node {name}")),
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let resources = serde_json::json!({ "cpu": cpus.to_string(), "memory": "16Gi", "pods": "110" });
    let status = serde_json::json!({ "status": {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [
            { "type": "InternalIP", "address": "127.0.0.1" },
            { "type": "Hostname", "address": name },
        ],
        "nodeInfo": {
            "machineID": "zeronas-e2e", "systemUUID": "zeronas-e2e", "bootID": "zeronas-e2e",
            "kernelVersion": "", "osImage": "zeronas e2e node agent", "containerRuntimeVersion": "zeronas-e2e://1",
            "kubeletVersion": "v1.34.4", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
        "conditions": conditions(),
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context(|| format!("report node {name} ready"))?;
    Ok(())
}

fn conditions() -> serde_json::Value {
    let now = serde_json::to_value(now()).unwrap_or_default();
    let condition = |kind: &str, status: &str, reason: &str| {
        serde_json::json!({ "type": kind, "status": status, "reason": reason, "message": "zeronas e2e node agent",
            "lastHeartbeatTime": now, "lastTransitionTime": now })
    };
    serde_json::json!([
        condition("Ready", "True", "KubeletReady"),
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID"),
    ])
}

/// Keeps the Node's Ready condition fresh, so the node lifecycle controller never taints it.
async fn heartbeat(client: Client, name: String) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let patch = serde_json::json!({ "status": { "conditions": conditions() } });
        if let Err(e) = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            warn!(node = %name, error = %e, "node heartbeat failed");
        }
    }
}

async fn watch_pods(agent: Arc<Agent>) {
    let pods: Api<Pod> = Api::all(agent.client.clone());
    let mut events = watcher::watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => agent.clone().on_pod(pod).await,
            Ok(Event::Delete(pod)) => agent.on_gone(&pod).await,
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => warn!(error = %e, "pod watch failed; retrying"),
        }
    }
}

impl Agent {
    fn runnable(&self, pod: &Pod) -> bool {
        let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
        let mut any = false;
        for c in containers {
            any = true;
            if launch::binary_for(&self.config.images, c.image.as_deref().unwrap_or_default())
                .is_none()
            {
                return false;
            }
        }
        any
    }

    async fn on_pod(self: Arc<Self>, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let ours = node.as_deref() == Some(self.config.name.as_str());
        if pod.metadata.deletion_timestamp.is_some() {
            if ours && self.terminating.lock().await.insert(uid.clone()) {
                tokio::spawn(async move { self.finish_deletion(namespace, name, uid).await });
            }
            return;
        }
        if node.is_none() && self.runnable(&pod) {
            self.bind(&namespace, &name).await;
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !ours || matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        let mut running = self.running.lock().await;
        if running.contains_key(&uid) {
            return;
        }
        let Some(ip) = self.ips.lock().await.allocate() else {
            warn!(pod = %name, "no pod IP left");
            return;
        };
        info!(pod = %format!("{namespace}/{name}"), %ip, "starting pod");
        running.insert(
            uid,
            pod::start(self.client.clone(), self.config.clone(), pod, ip),
        );
    }

    /// Binds an unscheduled pod to this node (what the scheduler would do).
    async fn bind(&self, namespace: &str, name: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.config.name.clone()),
                ..Default::default()
            },
        };
        match pods
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => info!(pod = %format!("{namespace}/{name}"), node = %self.config.name, "bound"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => warn!(pod = %name, error = %e, "binding failed"),
        }
    }

    /// A graceful deletion: stop the processes, then remove the pod for good.
    async fn finish_deletion(self: Arc<Self>, namespace: String, name: String, uid: String) {
        self.stop(&uid).await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&name, &params).await {
            Ok(_) => info!(pod = %format!("{namespace}/{name}"), "deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(pod = %name, error = %e, "final pod deletion failed"),
        }
        self.terminating.lock().await.remove(&uid);
    }

    async fn stop(&self, uid: &str) {
        let run = self.running.lock().await.remove(uid);
        if let Some(run) = run {
            let ip = run.ip;
            run.stop().await;
            self.ips.lock().await.release(ip);
        }
    }

    async fn on_gone(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.stop(uid).await;
        }
    }
}

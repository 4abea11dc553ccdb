//! zeronas on a real control plane: etcd, kube-apiserver and kube-controller-manager on
//! loopback, the chart installed with helm, the operator and the dataplanes run as pods by
//! the test node agent, backing claims served by the test local-path provisioner.
//!
//! One test walks the scenarios in order, because each builds on the previous one (install,
//! apply, use, change, break, delete, uninstall). A failing scenario panics with the
//! component logs and the cluster's objects attached. Run with `make e2e`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams};
use zeronas_e2e::cluster::{API_SERVER, ControlPlane};
use zeronas_e2e::node::{NodeAgent, NodeConfig};
use zeronas_e2e::provisioner::LocalPathProvisioner;
use zeronas_e2e::security::RunAs;
use zeronas_operator::crd::{NasVolume, Phase};
use zeronas_operator::names::OwnedNames;

#[path = "cluster_steps/ha.rs"]
mod ha;
use ha::{delete_leader_pod, helm_upgrade_two_replicas, kill_leader, stall_leader};
#[path = "cluster_steps/csi.rs"]
mod csi;
use csi::{csi_claim, csi_expand, csi_reclaim, csi_sanity, csi_statefulset};
#[path = "cluster_steps/lifecycle.rs"]
mod lifecycle;
#[path = "cluster_steps/monitoring.rs"]
mod monitoring;
#[path = "cluster_steps/sftp.rs"]
mod sftp;
#[path = "cluster_steps/steady.rs"]
mod steady;
use lifecycle::{
    delete_waits_for_pods, foreground_delete_retains, http_tokens, immutable_fields, name_conflict,
    network_policy, retain_and_adopt,
};
use monitoring::rules_and_dashboard_match_real_scrapes;
use sftp::sftp_volume;
use steady::unchanged_volume_writes_nothing;

const RELEASE: &str = "zeronas";
const OPERATOR_NAMESPACE: &str = "zeronas-system";
const NAMESPACE: &str = "default";
/// The NasVolume in `crds/samples/basic.yaml`.
const VOLUME: &str = "media";
const STORAGE_CLASS: &str = "zeronas-e2e-local";

type Step = Result<(), String>;

struct Suite {
    repo: PathBuf,
    run_dir: PathBuf,
    /// The workspace's binaries (zeronas-csi for the node plugin csi-sanity talks to).
    bin_dir: PathBuf,
    /// csi-sanity, csi-provisioner and csi-resizer (e2e/scripts/build-csi-tools.sh).
    csi_tools: PathBuf,
    /// The node agent's emptyDir folders (short paths: unix sockets live there).
    empty_dirs: tempfile::TempDir,
    helm: PathBuf,
    plane: ControlPlane,
    client: Client,
    node: Option<NodeAgent>,
    _provisioner: LocalPathProvisioner,
    /// What each scenario measured, for the summary.
    measured: Vec<(String, String)>,
    /// A file uploaded through the share, checked again after every disruption.
    payload: Vec<u8>,
}

/// Runs one scenario function against the suite and records (or reports) its result.
macro_rules! scenario {
    ($suite:ident, $name:expr, $run:ident) => {{
        eprintln!("e2e: ---- {}", $name);
        let started = Instant::now();
        let result = $run(&mut $suite).await;
        $suite.finish($name, started, result).await;
    }};
}

/// Polls `probe` every 250 ms until it returns `Some`, or fails after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Suite {
    async fn start() -> Suite {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("zeronas_e2e=info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target"));
        let run_dir = target.join("e2e");
        // Each run starts from nothing (the previous run's logs are kept until now).
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).unwrap();
        let bin = std::env::var_os("ZERONAS_E2E_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("debug"));
        let csi_tools = std::env::var_os("ZERONAS_CSI_TOOLS")
            .map(PathBuf::from)
            .expect("ZERONAS_CSI_TOOLS must name the CSI tools' folder (make e2e sets it)");
        let helm = std::env::var_os("HELM")
            .map(PathBuf::from)
            .expect("HELM must name the helm binary (make e2e sets it)");
        let started = Instant::now();
        let plane =
            ControlPlane::start(&run_dir.join("controlplane")).expect("control plane starts");
        eprintln!(
            "e2e: control plane up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(plane.kubeconfig()).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        let client = Client::try_from(config).unwrap();
        let provisioner =
            LocalPathProvisioner::start(client.clone(), STORAGE_CLASS, run_dir.join("volumes"))
                .await
                .expect("provisioner starts");
        let empty_dirs = tempfile::Builder::new()
            .prefix("zeronas-e2e-")
            .tempdir_in("/tmp")
            .expect("a folder for emptyDir volumes");
        let node = NodeAgent::start(
            client.clone(),
            NodeConfig {
                name: zeronas_e2e::provisioner::NODE.into(),
                images: BTreeMap::from([
                    (
                        "ghcr.io/zeronas/operator".to_owned(),
                        bin.join("zeronas-operator"),
                    ),
                    (
                        "ghcr.io/zeronas/dataplane".to_owned(),
                        bin.join("zeronas-dataplane"),
                    ),
                    ("ghcr.io/zeronas/csi".to_owned(), bin.join("zeronas-csi")),
                    (
                        "registry.k8s.io/sig-storage/csi-provisioner".to_owned(),
                        csi_tools.join("csi-provisioner"),
                    ),
                    (
                        "registry.k8s.io/sig-storage/csi-resizer".to_owned(),
                        csi_tools.join("csi-resizer"),
                    ),
                ]),
                kubeconfig_flag_images: [
                    "registry.k8s.io/sig-storage/csi-provisioner",
                    "registry.k8s.io/sig-storage/csi-resizer",
                ]
                .into_iter()
                .map(str::to_owned)
                .collect(),
                pod_network: std::net::Ipv4Addr::new(10, 244, 0, 0),
                work_dir: run_dir.clone(),
                empty_dir_root: empty_dirs.path().to_owned(),
                api_server: API_SERVER.into(),
                ca_file: plane.ca_file(),
                restart_backoff: Duration::from_secs(10),
            },
        )
        .await
        .expect("node agent starts (build the binaries first: make e2e does)");
        Suite {
            repo,
            run_dir,
            bin_dir: bin,
            csi_tools,
            empty_dirs,
            helm,
            plane,
            client,
            node: Some(node),
            _provisioner: provisioner,
            measured: Vec::new(),
            payload: (0..3 * 1024 * 1024u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        }
    }

    /// Records a finished scenario; on failure prints everything needed to debug it and panics.
    async fn finish(&mut self, name: &str, started: Instant, result: Step) {
        match result {
            Ok(()) => {
                let took = secs(started.elapsed());
                eprintln!("e2e: ok   {name} ({took})");
                self.measured.push((format!("scenario: {name}"), took));
            }
            Err(message) => {
                let report = self.diagnostics().await;
                panic!("e2e scenario '{name}' failed: {message}\n{report}");
            }
        }
    }

    async fn diagnostics(&self) -> String {
        let objects = self
            .kubectl(&["get", "nodes,pods,deployments,replicasets,services,endpointslices,pvc,pv,nasvolumes,leases", "-A", "-o", "wide"])
            .await
            .unwrap_or_else(|e| e);
        let events = self
            .kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
            .await
            .unwrap_or_else(|e| e);
        let pods = self
            .node
            .as_ref()
            .map(|n| n.log_tails(60))
            .unwrap_or_default();
        format!(
            "===== objects\n{objects}\n===== events\n{events}\n===== pod logs (operator, dataplanes)\n{pods}\n===== control plane\n{}",
            self.plane.log_tails(40)
        )
    }

    async fn run_tool(&self, program: &Path, args: &[&str]) -> Result<String, String> {
        let output = tokio::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", self.plane.kubeconfig())
            .current_dir(&self.repo)
            .output()
            .await
            .map_err(|e| format!("run {}: {e}", program.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{} {} failed ({}):\n{stdout}{}",
                program.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Applies NasVolume `name` (in NAMESPACE) with `spec` (the YAML under `spec:`, its
    /// lines indented by two spaces) and waits until it is Ready for its generation;
    /// returns how long that took.
    async fn apply_volume(&self, name: &str, spec: &str) -> Result<Duration, String> {
        let started = Instant::now();
        self.apply_volume_manifest(name, spec).await?;
        let volumes = self.volumes();
        eventually(
            &format!("NasVolume {name} to be Ready"),
            Duration::from_secs(180),
            || async {
                let nv = volumes.get_opt(name).await.ok().flatten()?;
                let status = nv.status?;
                (status.observed_generation == nv.metadata.generation
                    && status.phase == Some(Phase::Ready))
                .then_some(())
            },
        )
        .await?;
        Ok(started.elapsed())
    }

    /// `kubectl apply` of NasVolume `name` with `spec` (YAML under `spec:`, indented by two
    /// spaces after its first line), without waiting for it.
    async fn apply_volume_manifest(&self, name: &str, spec: &str) -> Step {
        let path = self.run_dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: zeronas.io/v1alpha1\nkind: NasVolume\nmetadata:\n  name: {name}\nspec:\n  {spec}\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        self.kubectl(&["apply", "-f", path.to_str().unwrap_or_default()])
            .await
            .map(drop)
    }

    /// The local folder behind NasVolume `name`'s backing claim (the test provisioner's).
    async fn backing_folder(&self, name: &str) -> Result<PathBuf, String> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), NAMESPACE);
        let pv_name = claims
            .get(&format!("{name}-data"))
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|sp| sp.volume_name)
            .ok_or_else(|| format!("the backing claim of {name} has no volume"))?;
        Api::<PersistentVolume>::all(self.client.clone())
            .get(&pv_name)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|sp| sp.local)
            .map(|l| PathBuf::from(l.path))
            .ok_or_else(|| format!("the backing PV of {name} is not a local volume"))
    }

    /// Deletes NasVolume `name` and waits until its dataplane pods are gone.
    async fn delete_volume_and_pods(&self, name: &str) -> Step {
        self.kubectl(&["delete", "nasvolume", name, "--timeout=120s"])
            .await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        eventually(
            &format!("the dataplane pods of {name} to go"),
            Duration::from_secs(120),
            || async {
                let left = pods
                    .list(&ListParams::default().labels(&format!("zeronas.io/volume={name}")))
                    .await
                    .ok()?;
                left.items.is_empty().then_some(())
            },
        )
        .await
    }

    /// `kubectl patch` of the sample NasVolume with a JSON merge patch.
    async fn patch_volume(&self, patch: &str) -> Result<String, String> {
        self.kubectl(&["patch", "nasvolume", VOLUME, "--type", "merge", "-p", patch])
            .await
    }

    async fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.run_tool(Path::new("kubectl"), args).await
    }

    async fn helm(&self, args: &[&str]) -> Result<String, String> {
        let helm = self.helm.clone();
        self.run_tool(&helm, args).await
    }

    /// The uid of the sample NasVolume as the apiserver has it now.
    async fn volume_uid(&self) -> Result<Option<String>, String> {
        let nv = self
            .volumes()
            .get(VOLUME)
            .await
            .map_err(|e| e.to_string())?;
        Ok(nv.metadata.uid)
    }

    fn volumes(&self) -> Api<NasVolume> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// The phase, once the status reflects the latest spec (observedGeneration).
    async fn phase(&self) -> Option<Phase> {
        let nv = self.volumes().get_opt(VOLUME).await.ok().flatten()?;
        let status = nv.status?;
        (status.observed_generation == nv.metadata.generation).then_some(status.phase?)
    }

    async fn wait_phase(&self, phase: Phase, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        eventually(
            &format!("NasVolume {VOLUME} to be {phase:?}"),
            timeout,
            || async { (self.phase().await == Some(phase)).then_some(()) },
        )
        .await?;
        Ok(started.elapsed())
    }

    /// The share's HTTP address: a ready endpoint of the Service's EndpointSlice (the pod IP;
    /// never the ClusterIP).
    async fn share_address(&self) -> Result<SocketAddr, String> {
        self.endpoint("http").await
    }

    /// A ready endpoint of the Service's EndpointSlice for the port named `port`.
    async fn endpoint(&self, port: &str) -> Result<SocketAddr, String> {
        self.endpoint_of(VOLUME, port).await
    }

    /// A ready endpoint of Service `service`'s EndpointSlice for the port named `port`.
    async fn endpoint_of(&self, service: &str, port: &str) -> Result<SocketAddr, String> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), NAMESPACE);
        let selector = format!("kubernetes.io/service-name={service}");
        eventually(
            "a ready endpoint in the Service's EndpointSlice",
            Duration::from_secs(60),
            || async {
                let list = slices
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                list.items.iter().find_map(|slice| {
                    let port = slice
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref() == Some(port))?
                        .port?;
                    let endpoint = slice
                        .endpoints
                        .iter()
                        .find(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))?;
                    let ip: IpAddr = endpoint.addresses.first()?.parse().ok()?;
                    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
                })
            },
        )
        .await
    }

    /// The owned names of the sample NasVolume (the PV's name depends on its uid).
    async fn names(&self) -> Result<OwnedNames, String> {
        let nv = self
            .volumes()
            .get(VOLUME)
            .await
            .map_err(|e| format!("NasVolume {VOLUME}: {e}"))?;
        let uid = nv.metadata.uid.ok_or("the NasVolume has no uid")?;
        Ok(OwnedNames::for_volume(VOLUME, &uid))
    }

    /// A token of the sample share from its Secret: `token` (read-write) or `read-token`.
    async fn token(&self, key: &str) -> Result<String, String> {
        let name = self.names().await?.token_secret;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NAMESPACE);
        let secret = secrets
            .get(&name)
            .await
            .map_err(|e| format!("Secret {name}: {e}"))?;
        let value = secret
            .data
            .and_then(|d| d.get(key).cloned())
            .ok_or_else(|| format!("Secret {name} has no key {key}"))?;
        String::from_utf8(value.0).map_err(|e| format!("Secret {name} key {key}: {e}"))
    }

    /// `method` on a file of the sample share, with `bearer` as the token (none: anonymous).
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        bearer: Option<&str>,
    ) -> Result<zeronas_e2e::http::Response, String> {
        let addr = self.share_address().await?;
        let authorization = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        zeronas_e2e::http::request_with(
            addr,
            method,
            &format!("/v1/shares/{VOLUME}/files/{path}"),
            &headers,
            body,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| format!("{method} {path} at {addr}: {e}"))
    }

    /// Uploads with the read-write token from the share's Secret.
    async fn put(&self, path: &str, body: &[u8]) -> Result<u16, String> {
        let token = self.token("token").await?;
        Ok(self.request("PUT", path, body, Some(&token)).await?.status)
    }

    /// Downloads with the read-write token from the share's Secret.
    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let token = self.token("token").await?;
        let r = self.request("GET", path, &[], Some(&token)).await?;
        Ok((r.status, r.body))
    }

    /// The uploaded payload is still there, byte for byte.
    async fn payload_intact(&self) -> Step {
        let (status, body) = self.get("e2e/payload.bin").await?;
        if status != 200 || body != self.payload {
            return Err(format!(
                "payload changed: status {status}, {} bytes instead of {}",
                body.len(),
                self.payload.len()
            ));
        }
        Ok(())
    }

    async fn dataplane_pods(&self) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let selector = format!("zeronas.io/volume={VOLUME}");
        pods.list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    fn measure(&mut self, what: &str, value: impl Into<String>) {
        let value = value.into();
        eprintln!("e2e: measured {what}: {value}");
        self.measured.push((what.to_owned(), value));
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Whether a backing claim belongs to the NasVolume with `uid`: its owner-uid annotation,
/// and no owner reference garbage collection could act on.
fn claimed_by(meta: &kube::api::ObjectMeta, uid: Option<&str>) -> bool {
    meta.owner_references.as_ref().is_none_or(Vec::is_empty)
        && uid.is_some()
        && meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(zeronas_operator::names::ANNOTATION_OWNER_UID))
            .map(String::as_str)
            == uid
}

fn owned_by_volume(meta: &kube::api::ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "NasVolume" && o.name == VOLUME && o.controller == Some(true))
}

async fn helm_install(s: &mut Suite) -> Step {
    let chart = s.repo.join("charts/zeronas");
    let started = Instant::now();
    s.helm(&[
        "install",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--set",
        "image.tag=e2e",
        "--set",
        "dataplaneImage.tag=e2e",
        // The node plugin mounts NFS, which this kernel cannot (no NFS client); csi-sanity
        // runs one as a process for the node tests that do not mount.
        "--set",
        "csi.image.tag=e2e",
        "--set",
        "csi.node.enabled=false",
        "--wait",
        "--timeout",
        "180s",
    ])
    .await?;
    s.measure(
        "helm install --wait (operator pod Ready)",
        secs(started.elapsed()),
    );
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    let crd = crds
        .get("nasvolumes.zeronas.io")
        .await
        .map_err(|e| format!("CRD: {e}"))?;
    let established = crd
        .status
        .iter()
        .flat_map(|st| st.conditions.iter().flatten())
        .any(|c| c.type_ == "Established" && c.status == "True");
    if !established {
        return Err("the NasVolume CRD is not Established".into());
    }
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let objects = s
        .kubectl(&[
            "get",
            "clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts,deployments,csidrivers,storageclasses",
            "-A",
            "-l",
            &selector,
            "-o",
            "name",
        ])
        .await?;
    for kind in [
        "clusterrole.",
        "clusterrolebinding.",
        "role.",
        "rolebinding.",
        "serviceaccount/",
        "deployment.",
        "csidriver.",
        "storageclass.",
    ] {
        if !objects.lines().any(|l| l.starts_with(kind)) {
            return Err(format!(
                "helm install created no {kind} object; got:\n{objects}"
            ));
        }
    }
    // The operator runs with its ServiceAccount's token: holding the Lease proves the
    // chart's RBAC lets it, and the reconcile scenarios below prove the rest.
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), OPERATOR_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), OPERATOR_NAMESPACE);
    let operator_selector = format!("{selector},app.kubernetes.io/name=zeronas-operator");
    let operator_pods = pods
        .list(&ListParams::default().labels(&operator_selector))
        .await
        .map_err(|e| e.to_string())?;
    let operator_pod = operator_pods
        .items
        .first()
        .and_then(|p| p.metadata.name.clone())
        .ok_or("no operator pod")?;
    let holder = eventually(
        "the operator to hold its Lease",
        Duration::from_secs(60),
        || async {
            leases
                .get_opt("zeronas-operator")
                .await
                .ok()??
                .spec?
                .holder_identity
        },
    )
    .await?;
    // The holder identity is `<pod>_<per-process id>`.
    if holder.split('_').next() != Some(operator_pod.as_str()) {
        return Err(format!(
            "Lease held by {holder}, not by the operator pod {operator_pod}"
        ));
    }
    Ok(())
}

async fn apply_sample(s: &mut Suite) -> Step {
    let started = Instant::now();
    s.kubectl(&["apply", "-f", "crds/samples/basic.yaml"])
        .await?;
    let ready = s.wait_phase(Phase::Ready, Duration::from_secs(180)).await?;
    s.measure(
        "time-to-Ready of crds/samples/basic.yaml (apply → phase Ready)",
        secs(ready),
    );
    let nv = s.volumes().get(VOLUME).await.map_err(|e| e.to_string())?;
    let status = nv.status.ok_or("no status")?;
    if let Some(c) = status.conditions.iter().find(|c| c.status != "True") {
        return Err(format!(
            "condition {} is {}: {}",
            c.type_, c.status, c.message
        ));
    }
    let names = s.names().await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(s.client.clone(), NAMESPACE);
    // The backing claim has no owner reference (garbage collection must never take the
    // data); its annotation names the NasVolume by uid.
    let backing = claims
        .get(&names.data_claim)
        .await
        .map_err(|e| format!("backing claim: {e}"))?;
    let volume_uid = s.volume_uid().await?;
    if !claimed_by(&backing.metadata, volume_uid.as_deref()) {
        return Err(format!(
            "the backing claim does not name the NasVolume by uid, or has an owner reference: {:?} {:?}",
            backing.metadata.annotations, backing.metadata.owner_references
        ));
    }
    let owned = [
        (
            "consumer claim",
            claims.get(&names.consumer_claim).await.map(|o| o.metadata),
        ),
        (
            "deployment",
            deployments.get(&names.deployment).await.map(|o| o.metadata),
        ),
        (
            "service",
            services.get(&names.service).await.map(|o| o.metadata),
        ),
    ];
    for (what, meta) in owned {
        let meta = meta.map_err(|e| format!("{what}: {e}"))?;
        if !owned_by_volume(&meta) {
            return Err(format!(
                "the {what} is not controlled by the NasVolume: {:?}",
                meta.owner_references
            ));
        }
    }
    let pvs: Api<PersistentVolume> = Api::all(s.client.clone());
    pvs.get(&names.volume)
        .await
        .map_err(|e| format!("share PV {}: {e}", names.volume))?;
    // The consumer side: `kubectl get pvc media` shows Bound to the operator's PV.
    let line = s
        .kubectl(&["get", "pvc", &names.consumer_claim, "--no-headers"])
        .await?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(1) != Some(&"Bound") || fields.get(2) != Some(&names.volume.as_str()) {
        return Err(format!("kubectl get pvc {}: {line}", names.consumer_claim));
    }
    s.measure("total for the sample scenario", secs(started.elapsed()));
    Ok(())
}

async fn share_over_pod_ip(s: &mut Suite) -> Step {
    let addr = s.share_address().await?;
    let services: Api<Service> = Api::namespaced(s.client.clone(), NAMESPACE);
    let cluster_ip = services
        .get(VOLUME)
        .await
        .map_err(|e| e.to_string())?
        .spec
        .and_then(|sp| sp.cluster_ip);
    let pod_network: std::net::Ipv4Addr = "10.244.0.0".parse().unwrap();
    let in_pod_network =
        matches!(addr.ip(), IpAddr::V4(ip) if ip.octets()[..3] == pod_network.octets()[..3]);
    if !in_pod_network || cluster_ip.as_deref() == Some(addr.ip().to_string().as_str()) {
        return Err(format!(
            "endpoint {addr} is not a pod IP (ClusterIP {cluster_ip:?})"
        ));
    }
    let payload = s.payload.clone();
    let status = s.put("e2e/payload.bin", &payload).await?;
    if status != 201 {
        return Err(format!("upload answered {status}"));
    }
    s.payload_intact().await?;
    s.measure("share endpoint (from the EndpointSlice)", addr.to_string());
    Ok(())
}

/// NFS through the pod IP with a real client (libnfs): a folder and a file written over
/// NFS are read back over HTTP, and the file uploaded over HTTP reads back over NFS.
async fn nfs_over_pod_ip(s: &mut Suite) -> Step {
    let addr = s.endpoint("nfs").await?;
    let url = |path: &str| {
        format!(
            "nfs://{}{path}?version=3&nfsport={}&mountport={}",
            addr.ip(),
            addr.port(),
            addr.port()
        )
    };
    let replies = libnfs(
        addr,
        0,
        "mkdir /nfs\nwrite /nfs/hello.txt 68656c6c6f206e6673\nread /nfs/hello.txt\n",
        &s.repo,
    )
    .await?;
    if replies.last().map(|r| &r["data"]) != Some(&serde_json::json!("68656c6c6f206e6673")) {
        return Err(format!("NFS session at {addr}: read back {replies:?}"));
    }
    let (status, body) = s.get("nfs/hello.txt").await?;
    if status != 200 || body != b"hello nfs" {
        return Err(format!(
            "the NFS-written file over HTTP: {status} {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    let cat = tokio::process::Command::new("nfs-cat")
        .arg(url("/e2e/payload.bin"))
        .output()
        .await
        .map_err(|e| format!("nfs-cat: {e}"))?;
    if !cat.status.success() || cat.stdout != s.payload {
        return Err(format!(
            "nfs-cat of the HTTP upload: {} ({} bytes): {}",
            cat.status,
            cat.stdout.len(),
            String::from_utf8_lossy(&cat.stderr)
        ));
    }
    s.measure("NFS endpoint (from the EndpointSlice)", addr.to_string());
    Ok(())
}

/// Runs the libnfs client (`dataplane/tests/support/libnfs_client.py`) against `addr` as
/// `uid`/`gid` with `commands` (one per line); returns one JSON reply per command.
async fn libnfs(
    addr: SocketAddr,
    uid: u32,
    commands: &str,
    repo: &Path,
) -> Result<Vec<serde_json::Value>, String> {
    let url = format!(
        "nfs://{}/?version=3&nfsport={}&mountport={}&uid={uid}&gid={uid}",
        addr.ip(),
        addr.port(),
        addr.port()
    );
    let mut child = tokio::process::Command::new("/usr/bin/python3")
        .arg(repo.join("dataplane/tests/support/libnfs_client.py"))
        .arg(&url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("libnfs client: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("{commands}quit\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| "libnfs client timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let replies: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if replies.iter().any(|r| r["ok"] != true) {
        return Err(format!("NFS session at {addr} as uid {uid} failed: {text}"));
    }
    Ok(replies)
}

/// The uid of the (last) `stat` reply of a libnfs session.
fn stat_uid(replies: &[serde_json::Value]) -> Option<u64> {
    replies.iter().rev().find_map(|r| r["uid"].as_u64())
}

/// Checks that each running container of `pod` (a local process, `zeronas-e2e://PID`) has
/// the uid, gid, groups, capabilities and no_new_privs its security context asks for.
fn check_pod_identity(pod: &Pod) -> Result<String, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut seen = Vec::new();
    for status in pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
    {
        let Some(pid) = status
            .container_id
            .as_deref()
            .and_then(|id| id.strip_prefix("zeronas-e2e://"))
        else {
            continue;
        };
        let container = spec
            .containers
            .iter()
            .find(|c| c.name == status.name)
            .ok_or("no container")?;
        let want = RunAs::for_container(&spec, container)?;
        let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("{name}/{}: /proc/{pid}/status: {e}", status.name))?;
        let field = |key: &str| {
            proc_status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}:")))
                .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let bounding = want.bounding_mask()?;
        let effective = if want.uid == 0 { bounding } else { 0 };
        let got = (
            field("Uid").first().cloned(),
            field("Gid").first().cloned(),
            field("Groups"),
            u64::from_str_radix(
                field("CapEff").first().map(String::as_str).unwrap_or(""),
                16,
            )
            .ok(),
            field("NoNewPrivs").first().cloned(),
        );
        let expected = (
            Some(want.uid.to_string()),
            Some(want.gid.to_string()),
            want.groups.iter().map(u32::to_string).collect::<Vec<_>>(),
            Some(effective),
            Some(if want.no_new_privs { "1" } else { "0" }.to_owned()),
        );
        if got != expected {
            return Err(format!(
                "{name}/{}: runs as {got:?}, its security context says {expected:?}",
                status.name
            ));
        }
        seen.push(format!(
            "{name}/{} uid {} CapEff {effective:x}",
            status.name, want.uid
        ));
    }
    if seen.is_empty() {
        return Err(format!("{name}: no running container"));
    }
    Ok(seen.join(", "))
}

/// The operator and the dataplane run with exactly their pods' security contexts (the node
/// agent applies them as a container runtime would); a Posix dataplane writes as the NFS
/// caller.
async fn security_contexts(s: &mut Suite) -> Step {
    let pods: Api<Pod> = Api::all(s.client.clone());
    let mut checked = Vec::new();
    for pod in pods
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
    {
        let running = pod.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Running");
        if running {
            checked.push(check_pod_identity(&pod)?);
        }
    }
    if checked.len() < 2 {
        return Err(format!(
            "expected the operator and a dataplane pod, checked {checked:?}"
        ));
    }
    s.measure(
        "pods checked against their security context",
        checked.join("; "),
    );
    // Posix: a file written over NFS as uid 1000 belongs to uid 1000 on the volume.
    let addr = s.endpoint("nfs").await?;
    let replies = libnfs(
        addr,
        1000,
        "write /by-1000.txt 6869\nstat /by-1000.txt\n",
        &s.repo,
    )
    .await?;
    let owner = stat_uid(&replies);
    if owner != Some(1000) {
        return Err(format!(
            "posix: a file written by uid 1000 is owned by {owner:?}: {replies:?}"
        ));
    }
    Ok(())
}

/// A NasVolume with identity Squash: its dataplane runs as uid 65532 with no capability, and
/// every caller's file belongs to 65532 on the backing volume.
async fn squash_volume(s: &mut Suite) -> Step {
    const NAME: &str = "shared";
    let ready = s
        .apply_volume(NAME, "capacity: 1Gi\n  identity: Squash")
        .await?;
    s.measure("time-to-Ready of a Squash NasVolume", secs(ready));
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), NAMESPACE);
    let pod = pods
        .list(&ListParams::default().labels(&format!("zeronas.io/volume={NAME}")))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .next()
        .ok_or("no Squash dataplane pod")?;
    let identity = check_pod_identity(&pod)?;
    if !identity.contains("uid 65532 CapEff 0") {
        return Err(format!("the Squash dataplane runs as {identity}"));
    }
    let addr = s.endpoint_of(NAME, "nfs").await?;
    let replies = libnfs(
        addr,
        0,
        "mkdir /root-made\nwrite /root-made/a.txt 6869\nstat /root-made/a.txt\n",
        &s.repo,
    )
    .await?;
    let by_user = libnfs(
        addr,
        1000,
        "write /root-made/b.txt 6869\nstat /root-made/b.txt\n",
        &s.repo,
    )
    .await?;
    let owners = (stat_uid(&replies), stat_uid(&by_user));
    if owners != (Some(65532), Some(65532)) {
        return Err(format!(
            "squash: files of uid 0 and 1000 are owned by {owners:?}"
        ));
    }
    // On the backing volume itself, too.
    let folder = s.backing_folder(NAME).await?;
    // The kubelet's fsGroup made the fresh root (root's, 0755) writable for 65532.
    let root = std::fs::metadata(&folder).map_err(|e| e.to_string())?;
    use std::os::unix::fs::MetadataExt;
    if root.gid() != 65532 || root.mode() & 0o2070 != 0o2070 {
        return Err(format!(
            "squash: the volume's root has gid {} mode {:o}, not the fsGroup's 65532 and g+rwxs",
            root.gid(),
            root.mode() & 0o7777
        ));
    }
    let uid = std::fs::metadata(folder.join("root-made/b.txt"))
        .map_err(|e| e.to_string())?
        .uid();
    if uid != 65532 {
        return Err(format!("squash: b.txt is owned by {uid} on the volume"));
    }
    s.delete_volume_and_pods(NAME).await
}

async fn rejects_invalid(s: &mut Suite) -> Step {
    let cases = [
        (
            "fractional-cpu",
            "capacity: 1Gi\n  cpuPinning: true\n  resources: { cpu: 1500m, memory: 512Mi }",
            "cpuPinning needs a whole number of CPUs",
        ),
        (
            "bad-cidr",
            "capacity: 1Gi\n  clients: [{ cidr: 10.0.0.0/33 }]",
            "cidr must be a valid CIDR",
        ),
        (
            "bad-identity",
            "capacity: 1Gi\n  identity: Nobody",
            "Unsupported value: \"Nobody\": supported values: \"Posix\", \"Squash\"",
        ),
        (
            "sftp-without-keys",
            "capacity: 1Gi\n  protocols: [sftp]",
            "protocol sftp needs sftp.authorizedKeysSecret",
        ),
        (
            "squash-as-root",
            "capacity: 1Gi\n  identity: Squash\n  shareRoot: { uid: 0 }",
            "must not be 0",
        ),
    ];
    for (name, spec, message) in cases {
        let path = s.run_dir.join(format!("{name}.yaml"));
        let manifest = format!(
            "apiVersion: zeronas.io/v1alpha1\nkind: NasVolume\nmetadata:\n  name: {name}\nspec:\n  {spec}\n"
        );
        std::fs::write(&path, manifest).map_err(|e| e.to_string())?;
        match s.kubectl(&["apply", "-f", path.to_str().unwrap()]).await {
            Ok(out) => return Err(format!("{name} was accepted: {out}")),
            Err(e) if e.contains(message) => {}
            Err(e) => {
                return Err(format!(
                    "{name} was rejected without the CEL message {message:?}: {e}"
                ));
            }
        }
    }
    match s.patch_volume(r#"{"spec":{"capacity":"5Gi"}}"#).await {
        Ok(out) => Err(format!("shrinking was accepted: {out}")),
        Err(e) if e.contains("capacity may grow but never shrink") => Ok(()),
        Err(e) => Err(format!("shrinking rejected without the CEL message: {e}")),
    }
}

async fn grow_and_change_resources(s: &mut Suite) -> Step {
    let names = s.names().await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let started = Instant::now();
    s.patch_volume(r#"{"spec":{"capacity":"20Gi"}}"#).await?;
    eventually(
        "the backing claim to request and report 20Gi",
        Duration::from_secs(60),
        || async {
            let pvc = claims.get(&names.data_claim).await.ok()?;
            let request = pvc.spec?.resources?.requests?.get("storage")?.0.clone();
            let capacity = pvc.status?.capacity?.get("storage")?.0.clone();
            (request == "20Gi" && capacity == "20Gi").then_some(())
        },
    )
    .await?;
    let pvs: Api<PersistentVolume> = Api::all(s.client.clone());
    eventually(
        "the share PV to advertise 20Gi",
        Duration::from_secs(30),
        || async {
            let pv = pvs.get(&names.volume).await.ok()?;
            (pv.spec?.capacity?.get("storage")?.0 == "20Gi").then_some(())
        },
    )
    .await?;
    s.wait_phase(Phase::Ready, Duration::from_secs(120)).await?;
    s.measure(
        "capacity 10Gi → 20Gi until Ready again",
        secs(started.elapsed()),
    );
    s.payload_intact().await?;

    let before: Vec<String> = s
        .dataplane_pods()
        .await
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let started = Instant::now();
    s.patch_volume(r#"{"spec":{"resources":{"cpu":"2","memory":"768Mi"}}}"#)
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NAMESPACE);
    eventually(
        "the Deployment to carry the new resources",
        Duration::from_secs(30),
        || async {
            let d = deployments.get(&names.deployment).await.ok()?;
            let limits = d
                .spec?
                .template
                .spec?
                .containers
                .first()?
                .resources
                .clone()?
                .limits?;
            (limits.get("cpu")?.0 == "2" && limits.get("memory")?.0 == "768Mi").then_some(())
        },
    )
    .await?;
    eventually(
        "a new dataplane pod to replace the old one",
        Duration::from_secs(120),
        || async {
            let pods = s.dataplane_pods().await;
            let fresh = pods
                .iter()
                .all(|p| p.metadata.uid.as_ref().is_some_and(|u| !before.contains(u)));
            let ready = pods.iter().any(|p| {
                p.status
                    .as_ref()
                    .and_then(|st| st.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            (fresh && ready).then_some(())
        },
    )
    .await?;
    s.wait_phase(Phase::Ready, Duration::from_secs(120)).await?;
    s.measure(
        "resource change: rolled to a new pod, Ready again",
        secs(started.elapsed()),
    );
    s.payload_intact().await
}

async fn kill_dataplane(s: &mut Suite) -> Step {
    let pods = s.dataplane_pods().await;
    let pod = pods.first().ok_or("no dataplane pod")?;
    let container = pod
        .status
        .as_ref()
        .and_then(|st| st.container_statuses.as_ref())
        .and_then(|c| c.first())
        .ok_or("no container status")?;
    let pid: i32 = container
        .container_id
        .as_deref()
        .and_then(|id| id.strip_prefix("zeronas-e2e://"))
        .and_then(|pid| pid.parse().ok())
        .ok_or("no process id in the container status")?;
    let restarts = container.restart_count;
    // The node agent (this test) started that process; SIGKILL it like a crash.
    let target = rustix::process::Pid::from_raw(pid).ok_or("bad pid")?;
    rustix::process::kill_process(target, rustix::process::Signal::KILL)
        .map_err(|e| format!("kill {pid}: {e}"))?;
    let started = Instant::now();
    let degraded = s
        .wait_phase(Phase::Degraded, Duration::from_secs(30))
        .await?;
    s.measure("dataplane killed → Degraded", secs(degraded));
    s.wait_phase(Phase::Ready, Duration::from_secs(120)).await?;
    s.measure(
        "dataplane killed → Ready again (10 s restart back-off included)",
        secs(started.elapsed()),
    );
    let restarted = s.dataplane_pods().await.iter().any(|p| {
        p.status
            .as_ref()
            .and_then(|st| st.container_statuses.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.restart_count > restarts))
    });
    if !restarted {
        return Err("the container's restartCount did not grow".into());
    }
    s.payload_intact().await
}

async fn delete_volume(s: &mut Suite) -> Step {
    let names = s.names().await?;
    // `deletionPolicy: Delete`: the backing claim goes with the NasVolume (the Retain
    // default is the scenario before).
    s.patch_volume(r#"{"spec":{"deletionPolicy":"Delete"}}"#)
        .await?;
    let pvs: Api<PersistentVolume> = Api::all(s.client.clone());
    let backing_pv = {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
        claims
            .get(&names.data_claim)
            .await
            .ok()
            .and_then(|c| c.spec?.volume_name)
            .ok_or("backing claim has no volume")?
    };
    let started = Instant::now();
    s.kubectl(&["delete", "nasvolume", VOLUME, "--timeout=120s"])
        .await?;
    // The finalizer deleted the share PV; it may linger (pv-protection) until the consumer
    // claim bound to it is garbage-collected, but its deletion must have started.
    let share_pv = pvs
        .get_opt(&names.volume)
        .await
        .map_err(|e| e.to_string())?;
    if share_pv.is_some_and(|pv| pv.metadata.deletion_timestamp.is_none()) {
        return Err(format!(
            "the share PV {} survived its NasVolume (finalizer)",
            names.volume
        ));
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(s.client.clone(), NAMESPACE);
    eventually(
        "garbage collection of every owned object, pod and the backing volume",
        Duration::from_secs(240),
        || async {
            let gone = claims.get_opt(&names.data_claim).await.ok()?.is_none()
                && claims.get_opt(&names.consumer_claim).await.ok()?.is_none()
                && deployments.get_opt(&names.deployment).await.ok()?.is_none()
                && services.get_opt(&names.service).await.ok()?.is_none()
                && s.dataplane_pods().await.is_empty()
                && pvs.get_opt(&backing_pv).await.ok()?.is_none()
                && pvs.get_opt(&names.volume).await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await?;
    s.measure(
        "delete → everything garbage-collected",
        secs(started.elapsed()),
    );
    Ok(())
}

async fn helm_uninstall(s: &mut Suite) -> Step {
    s.helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--wait",
        "--timeout",
        "120s",
    ])
    .await?;
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let left = eventually("helm uninstall to leave no operator objects", Duration::from_secs(120), || async {
        let out = s
            .kubectl(&["get", "clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts,deployments,replicasets,pods,services,csidrivers,storageclasses", "-A", "-l", &selector, "-o", "name"])
            .await
            .ok()?;
        out.trim().is_empty().then_some(())
    })
    .await;
    left?;
    // Helm never deletes what a chart ships in crds/ (so NasVolumes survive an uninstall).
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    if crds
        .get_opt("nasvolumes.zeronas.io")
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err("the CRD was removed by helm uninstall".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zeronas_on_a_real_control_plane() {
    let started = Instant::now();
    let mut suite = Suite::start().await;
    scenario!(
        suite,
        "helm install: CRD, RBAC, operator running with its ServiceAccount",
        helm_install
    );
    scenario!(
        suite,
        "kubectl apply basic sample: owned objects, Ready, consumer claim Bound",
        apply_sample
    );
    scenario!(
        suite,
        "HTTP upload and download through the pod IP from the EndpointSlice",
        share_over_pod_ip
    );
    scenario!(
        suite,
        "HTTP token Secret: 401 without a token, 403 writing with the read-only one; the file browser page, /v1/shares and the download cookie",
        http_tokens
    );
    scenario!(
        suite,
        "NetworkPolicy: dataplane pod selected, NFS/HTTP/metrics peers",
        network_policy
    );
    scenario!(
        suite,
        "NFS through the pod IP (libnfs): write, read, and the HTTP upload read back",
        nfs_over_pod_ip
    );
    scenario!(
        suite,
        "operator and dataplane run with their pods' security contexts; posix ownership",
        security_contexts
    );
    scenario!(
        suite,
        "identity Squash: dataplane as 65532 without capabilities, every file 65532's",
        squash_volume
    );
    scenario!(
        suite,
        "SFTP: host key Secret kept across pods, OpenSSH sftp through the pod IP as the key's uid",
        sftp_volume
    );
    scenario!(
        suite,
        "invalid NasVolumes rejected with the CEL and enum messages",
        rejects_invalid
    );
    scenario!(
        suite,
        "storageClassName and readOnly changes refused with the CEL message",
        immutable_fields
    );
    scenario!(
        suite,
        "foreign Service under the name: NameConflict, Event, the Service untouched",
        name_conflict
    );
    scenario!(
        suite,
        "capacity growth resizes the claim; a resource change rolls the pod",
        grow_and_change_resources
    );
    scenario!(
        suite,
        "killed dataplane: Degraded, restarted, Ready, data intact",
        kill_dataplane
    );
    scenario!(
        suite,
        "unchanged Ready volume: a reconcile reads the watch caches and writes nothing",
        unchanged_volume_writes_nothing
    );
    scenario!(
        suite,
        "monitoring: every metric the chart's rules and dashboard name is in a real scrape",
        rules_and_dashboard_match_real_scrapes
    );
    scenario!(
        suite,
        "delete while a pod uses the claim: waits (InUse), proceeds when the pod is gone",
        delete_waits_for_pods
    );
    scenario!(
        suite,
        "deletionPolicy Retain: backing claim kept, adopted by a new NasVolume, data intact",
        retain_and_adopt
    );
    scenario!(
        suite,
        "foreground delete (as Argo CD sends) under Retain: the backing claim and data kept",
        foreground_delete_retains
    );
    scenario!(
        suite,
        "csi-sanity against the chart's CSI controller (identity, controller; node without mounts)",
        csi_sanity
    );
    scenario!(
        suite,
        "PVC of class zeronas: Bound to a Ready NasVolume, HTTP and NFS through the pod IP",
        csi_claim
    );
    scenario!(
        suite,
        "growing the PVC grows the share (external-resizer, no node step)",
        csi_expand
    );
    scenario!(
        suite,
        "StatefulSet volumeClaimTemplates of class zeronas: one share per replica",
        csi_statefulset
    );
    scenario!(
        suite,
        "reclaim policy Delete removes the NasVolume; Retain keeps it",
        csi_reclaim
    );
    scenario!(
        suite,
        "helm upgrade --wait to 2 operator replicas, then a rolling upgrade of both",
        helm_upgrade_two_replicas
    );
    scenario!(
        suite,
        "operator leader killed mid-reconcile: the standby takes the Lease after a lease duration and finishes the NasVolume, no duplicate object",
        kill_leader
    );
    scenario!(
        suite,
        "operator leader stalled (SIGSTOP): the standby takes over; resumed, the old one exits",
        stall_leader
    );
    scenario!(
        suite,
        "operator leader pod deleted: it releases the Lease, another replica takes it at once",
        delete_leader_pod
    );
    scenario!(
        suite,
        "delete (deletionPolicy Delete): PV removed by the finalizer, the rest garbage-collected",
        delete_volume
    );
    scenario!(
        suite,
        "helm uninstall leaves no operator objects",
        helm_uninstall
    );
    if let Some(node) = suite.node.take() {
        node.shutdown().await;
    }
    eprintln!(
        "e2e: summary ({:.0} s in all)",
        started.elapsed().as_secs_f64()
    );
    for (what, value) in &suite.measured {
        eprintln!("e2e:   {what}: {value}");
    }
}

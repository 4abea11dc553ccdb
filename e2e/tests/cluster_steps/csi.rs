//! Dynamic provisioning through the CSI driver as the chart deploys it: zeronas-csi with
//! external-provisioner and external-resizer (built from their Go modules) in one pod run by
//! the node agent, with the chart's ServiceAccount and RBAC. csi-sanity checks the driver
//! against the CSI spec; then a PVC of class `zeronas` becomes a Ready share, served over HTTP
//! and NFS, grown by editing the claim, one per StatefulSet replica, and deleted (or kept)
//! as its StorageClass says.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use zeronas_operator::crd::{NasVolume, Phase};

use super::{NAMESPACE, OPERATOR_NAMESPACE, Step, Suite, eventually, libnfs, secs};

/// The StorageClass the chart makes (reclaimPolicy Delete).
const CLASS: &str = "zeronas";
/// A second class with reclaimPolicy Retain, made by the test.
const RETAIN_CLASS: &str = "zeronas-retain";

/// The CSI controller pod's socket (its emptyDir on the host), once the pod runs.
async fn controller_socket(s: &Suite) -> Result<PathBuf, String> {
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), OPERATOR_NAMESPACE);
    eventually(
        "the CSI controller pod to run with its socket",
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(
                    &ListParams::default().labels("app.kubernetes.io/name=zeronas-csi-controller"),
                )
                .await
                .ok()?;
            list.items.iter().find_map(|pod| {
                let ready = pod
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let uid = pod.metadata.uid.as_deref()?;
                let socket = zeronas_e2e::node::empty_dir(s.empty_dirs.path(), uid, "socket-dir")
                    .join("csi.sock");
                (ready && socket.exists()).then_some(socket)
            })
        },
    )
    .await
}

fn bin(s: &Suite, name: &str) -> PathBuf {
    s.bin_dir.join(name)
}

/// csi-sanity (the upstream conformance suite) against the chart's controller and a node
/// plugin on this machine. The node tests that mount are skipped: this kernel has no NFS
/// client (the kernel-client stage mounts shares in a QEMU guest instead).
pub async fn csi_sanity(s: &mut Suite) -> Step {
    let controller = controller_socket(s).await?;
    let work = s.run_dir.join("csi-sanity");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let node_socket = s.empty_dirs.path().join("csi-node.sock");
    let mut node = tokio::process::Command::new(bin(s, "zeronas-csi"))
        .args([
            "--mode",
            "node",
            "--node-id",
            zeronas_e2e::provisioner::NODE,
        ])
        .arg(format!("--endpoint=unix://{}", node_socket.display()))
        .stdout(std::fs::File::create(work.join("node.log")).map_err(|e| e.to_string())?)
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("zeronas-csi --mode node: {e}"))?;
    eventually(
        "the node plugin's socket",
        Duration::from_secs(10),
        || async { node_socket.exists().then_some(()) },
    )
    .await?;
    let parameters = work.join("parameters.yaml");
    std::fs::write(
        &parameters,
        format!(
            "storageClassName: {}\nprotocols: nfs,http\n",
            super::STORAGE_CLASS
        ),
    )
    .map_err(|e| e.to_string())?;
    let skipped = [
        "should remove target path",
        "volume does not exist on the specified path",
        "Node Service should work",
        "Node Service should be idempotent",
    ];
    eprintln!(
        "e2e: csi-sanity skips the node tests that mount NFS (no NFS client in this kernel): {}",
        skipped.join("; ")
    );
    let started = Instant::now();
    let output = tokio::process::Command::new(s.csi_tools.join("csi-sanity"))
        .arg(format!("--csi.endpoint={}", node_socket.display()))
        .arg(format!("--csi.controllerendpoint={}", controller.display()))
        .arg(format!("--csi.mountdir={}", work.join("mount").display()))
        .arg(format!("--csi.stagingdir={}", work.join("stage").display()))
        .arg(format!(
            "--csi.testvolumeparameters={}",
            parameters.display()
        ))
        .arg("--csi.testvolumesize=1073741824")
        .arg("--csi.testvolumeexpandsize=2147483648")
        .arg(format!("--ginkgo.skip={}", skipped.join("|")))
        .arg("--ginkgo.no-color")
        .arg(format!(
            "--ginkgo.junit-report={}",
            work.join("junit.xml").display()
        ))
        .output()
        .await
        .map_err(|e| format!("csi-sanity: {e}"))?;
    let _ = node.start_kill();
    let _ = node.wait().await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    std::fs::write(work.join("output.txt"), &stdout).map_err(|e| e.to_string())?;
    let ran = stdout
        .lines()
        .find(|l| l.starts_with("Ran "))
        .unwrap_or("no summary")
        .to_owned();
    let counts = stdout
        .lines()
        .rev()
        .find(|l| l.contains("Passed") && l.contains("Failed"))
        .unwrap_or("")
        .to_owned();
    if !output.status.success() {
        let tail: Vec<&str> = stdout.lines().rev().take(120).collect();
        return Err(format!(
            "csi-sanity failed ({}), {ran}; {counts}\n{}\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    s.measure(
        "csi-sanity (identity, controller, node without mounts)",
        format!("{ran}; {counts} in {}", secs(started.elapsed())),
    );
    // Every volume the suite made was deleted through DeleteVolume.
    let all: Api<NasVolume> = Api::all(s.client.clone());
    eventually(
        "csi-sanity's NasVolumes to be gone",
        Duration::from_secs(120),
        || async {
            let list = all
                .list(&ListParams::default().labels("csi.zeronas.io/provisioned"))
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await
}

fn claim(name: &str, class: &str, size: &str) -> Result<PersistentVolumeClaim, String> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteMany"],
            "resources": { "requests": { "storage": size } }
        }
    }))
    .map_err(|e| e.to_string())
}

/// The claim's PV once it is Bound, and the NasVolume behind it.
async fn bound(s: &Suite, name: &str) -> Result<(PersistentVolume, NasVolume), String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let volume_name = eventually(
        &format!("claim {name} to be Bound"),
        Duration::from_secs(180),
        || async {
            let c = claims.get_opt(name).await.ok()??;
            let bound = c.status.as_ref()?.phase.as_deref() == Some("Bound");
            bound.then(|| c.spec?.volume_name).flatten()
        },
    )
    .await?;
    let pvs: Api<PersistentVolume> = Api::all(s.client.clone());
    let pv = pvs.get(&volume_name).await.map_err(|e| e.to_string())?;
    let csi = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.clone())
        .ok_or_else(|| format!("PV {volume_name} has no CSI source"))?;
    if csi.driver != "csi.zeronas.io" {
        return Err(format!("PV {volume_name} is of driver {}", csi.driver));
    }
    let (namespace, nv_name) = csi
        .volume_handle
        .split_once('/')
        .ok_or_else(|| format!("volume handle {:?}", csi.volume_handle))?;
    let nvs: Api<NasVolume> = Api::namespaced(s.client.clone(), namespace);
    let nv = nvs
        .get(nv_name)
        .await
        .map_err(|e| format!("NasVolume {}: {e}", csi.volume_handle))?;
    Ok((pv, nv))
}

/// A PVC of class `zeronas` becomes a Ready NasVolume in the claim's namespace, with no PV
/// or claim of the operator's; HTTP and NFS through the pod IP work.
pub async fn csi_claim(s: &mut Suite) -> Step {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let started = Instant::now();
    claims
        .create(&PostParams::default(), &claim("csi-data", CLASS, "1Gi")?)
        .await
        .map_err(|e| format!("creating claim csi-data: {e}"))?;
    let (pv, nv) = bound(s, "csi-data").await?;
    s.measure(
        "PVC of class zeronas: create → Bound (share Ready)",
        secs(started.elapsed()),
    );
    let name = nv.metadata.name.clone().unwrap_or_default();
    let status = nv.status.clone().ok_or("no status")?;
    if status.phase != Some(Phase::Ready) || nv.spec.consumer_claim {
        return Err(format!(
            "NasVolume {name}: phase {:?}, consumerClaim {}",
            status.phase, nv.spec.consumer_claim
        ));
    }
    if status.claim_name.is_some()
        || claims
            .get_opt(&name)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
    {
        return Err(format!("the operator made a consumer claim for {name}"));
    }
    let attributes = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .and_then(|c| c.volume_attributes.clone())
        .unwrap_or_default();
    let endpoint = status
        .endpoints
        .as_ref()
        .and_then(|e| e.nfs.clone())
        .unwrap_or_default();
    if attributes.get("server").map(|ip| format!("{ip}:/")) != Some(endpoint.clone()) {
        return Err(format!(
            "PV attributes {attributes:?} do not name the share's NFS endpoint {endpoint}"
        ));
    }
    // HTTP, with the share's own token Secret.
    let addr = s.endpoint_of(&name, "http").await?;
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), NAMESPACE);
    let secret = secrets
        .get(&format!("{name}-http-tokens"))
        .await
        .map_err(|e| e.to_string())?;
    let token = secret
        .data
        .and_then(|d| d.get("token").cloned())
        .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        .ok_or("no token")?;
    let authorization = format!("Bearer {token}");
    let headers = [("Authorization", authorization.as_str())];
    let path = format!("/v1/shares/{name}/files/csi/hello.txt");
    let put = zeronas_e2e::http::request_with(
        addr,
        "PUT",
        &path,
        &headers,
        b"hello csi",
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| format!("PUT {path}: {e}"))?;
    if !(200..300).contains(&put.status) {
        return Err(format!("PUT {path}: {}", put.status));
    }
    // NFS reads back what HTTP wrote.
    let nfs = s.endpoint_of(&name, "nfs").await?;
    let replies = libnfs(nfs, 0, "read /csi/hello.txt\n", &s.repo).await?;
    if replies.last().map(|r| &r["data"]) != Some(&serde_json::json!(hex(b"hello csi"))) {
        return Err(format!("NFS read of the HTTP upload: {replies:?}"));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Growing the claim grows the NasVolume and the PV, and the claim reports the new size
/// (no node step).
pub async fn csi_expand(s: &mut Suite) -> Step {
    let started = Instant::now();
    s.kubectl(&[
        "patch",
        "pvc",
        "csi-data",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ])
    .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    eventually(
        "claim csi-data to report 2Gi",
        Duration::from_secs(120),
        || async {
            let c = claims.get_opt("csi-data").await.ok()??;
            let size = c.status?.capacity?.get("storage")?.0.clone();
            (size == "2Gi").then_some(())
        },
    )
    .await?;
    let (pv, nv) = bound(s, "csi-data").await?;
    let pv_size = pv
        .spec
        .and_then(|s| s.capacity)
        .and_then(|c| c.get("storage").map(|q| q.0.clone()));
    if nv.spec.capacity.0 != "2Gi" || pv_size.as_deref() != Some("2Gi") {
        return Err(format!(
            "after growth: NasVolume {}, PV {pv_size:?}",
            nv.spec.capacity.0
        ));
    }
    s.measure(
        "PVC growth 1Gi → 2Gi reported on the claim",
        secs(started.elapsed()),
    );
    Ok(())
}

/// A StatefulSet's volumeClaimTemplates of class `zeronas` get one share per replica (its
/// pods, of an image the node agent cannot run, stay Pending: the claims are the point).
pub async fn csi_statefulset(s: &mut Suite) -> Step {
    let manifest = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": { "name": "web", "namespace": NAMESPACE },
        "spec": {
            "serviceName": "web",
            "replicas": 2,
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{
                    "name": "web",
                    "image": "registry.example/web:1",
                    "volumeMounts": [{ "name": "data", "mountPath": "/data" }]
                }] }
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "storageClassName": CLASS,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "1Gi" } }
                }
            }]
        }
    });
    let file = s.run_dir.join("statefulset.json");
    std::fs::write(&file, manifest.to_string()).map_err(|e| e.to_string())?;
    s.kubectl(&["apply", "-f", file.to_str().unwrap_or_default()])
        .await?;
    let mut shares = Vec::new();
    for replica in ["data-web-0", "data-web-1"] {
        let (_, nv) = bound(s, replica).await?;
        let annotation = nv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("csi.zeronas.io/pvc").cloned());
        if annotation != Some(format!("{NAMESPACE}/{replica}")) {
            return Err(format!(
                "NasVolume {:?} says it serves {annotation:?}, not {replica}",
                nv.metadata.name
            ));
        }
        shares.push(nv.metadata.name.unwrap_or_default());
    }
    if shares[0] == shares[1] {
        return Err(format!("both replicas got {}", shares[0]));
    }
    s.kubectl(&["delete", "statefulset", "web", "--wait=false"])
        .await?;
    s.kubectl(&["delete", "pvc", "data-web-0", "data-web-1", "--wait=false"])
        .await?;
    Ok(())
}

/// Deleting a claim of a Delete class removes its NasVolume (and the PV); a Retain class
/// keeps both, with the data.
pub async fn csi_reclaim(s: &mut Suite) -> Step {
    let (pv, nv) = bound(s, "csi-data").await?;
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let nv_name = nv.metadata.name.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    claims
        .delete("csi-data", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let nvs: Api<NasVolume> = Api::namespaced(s.client.clone(), NAMESPACE);
    let pvs: Api<PersistentVolume> = Api::all(s.client.clone());
    eventually(
        "reclaim policy Delete to remove the NasVolume and the PV",
        Duration::from_secs(180),
        || async {
            let gone = nvs.get_opt(&nv_name).await.ok()?.is_none()
                && pvs.get_opt(&pv_name).await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await?;

    let class = serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": { "name": RETAIN_CLASS },
        "provisioner": "csi.zeronas.io",
        "reclaimPolicy": "Retain",
        "allowVolumeExpansion": true,
        "parameters": { "protocols": "nfs" }
    });
    let file = s.run_dir.join("retain-class.json");
    std::fs::write(&file, class.to_string()).map_err(|e| e.to_string())?;
    s.kubectl(&["apply", "-f", file.to_str().unwrap_or_default()])
        .await?;
    claims
        .create(
            &PostParams::default(),
            &claim("csi-kept", RETAIN_CLASS, "1Gi")?,
        )
        .await
        .map_err(|e| format!("creating claim csi-kept: {e}"))?;
    let (pv, nv) = bound(s, "csi-kept").await?;
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let nv_name = nv.metadata.name.clone().unwrap_or_default();
    if nv.spec.protocols.len() != 1 {
        return Err(format!(
            "class parameters not applied: {:?}",
            nv.spec.protocols
        ));
    }
    claims
        .delete("csi-kept", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    eventually(
        "the retained PV to be Released",
        Duration::from_secs(60),
        || async {
            let pv = pvs.get_opt(&pv_name).await.ok()??;
            (pv.status?.phase.as_deref() == Some("Released")).then_some(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = nvs.get_opt(&nv_name).await.map_err(|e| e.to_string())?;
    match kept {
        Some(nv) if nv.metadata.deletion_timestamp.is_none() => {}
        other => {
            return Err(format!(
                "reclaim policy Retain: NasVolume {nv_name} is {:?}",
                other.map(|n| n.metadata.deletion_timestamp)
            ));
        }
    }
    // Clean up as an administrator would: the PV, then the share.
    pvs.delete(&pv_name, &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    nvs.delete(&nv_name, &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

//! The SFTP export on the real control plane: a NasVolume naming an authorized keys Secret
//! that does not exist yet says so (`AuthorizedKeysSecretNotFound`) and becomes Ready once
//! it does; it gets the host key Secret (owned, named in the status), the NetworkPolicy rule
//! and the `SFTP` column; OpenSSH's `sftp` moves a file through the pod IP as the key's uid;
//! and the host key survives the dataplane pod being replaced.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams};
use zeronas_operator::reconcile::network_policy::summary;

use super::{NAMESPACE, Step, Suite, eventually, secs};

const NAME: &str = "files";

/// Runs a program, failing with its stderr.
async fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host key the server at `addr` presents (`ssh-keyscan`), without the address.
async fn host_key(addr: std::net::SocketAddr) -> Result<String, String> {
    let port = addr.port().to_string();
    let ip = addr.ip().to_string();
    let out = run("ssh-keyscan", &["-t", "ed25519", "-p", &port, &ip]).await?;
    out.lines()
        .find(|l| l.contains("ssh-ed25519"))
        .and_then(|l| l.split_once(' ').map(|(_, key)| key.to_owned()))
        .ok_or_else(|| format!("no ed25519 host key from {addr}: {out:?}"))
}

async fn dataplane_pod(s: &Suite) -> Result<Pod, String> {
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), NAMESPACE);
    pods.list(&ListParams::default().labels(&format!("zeronas.io/volume={NAME}")))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .ok_or_else(|| "no SFTP dataplane pod".to_owned())
}

pub async fn sftp_volume(s: &mut Suite) -> Step {
    let keys = s.run_dir.join("sftp-keys");
    std::fs::create_dir_all(&keys).map_err(|e| e.to_string())?;
    let user = keys.join("user");
    let _ = std::fs::remove_file(&user);
    let _ = std::fs::remove_file(keys.join("user.pub"));
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            user.to_str().unwrap_or_default(),
        ],
    )
    .await?;
    let public = std::fs::read_to_string(keys.join("user.pub")).map_err(|e| e.to_string())?;
    let line = format!("authorized_keys=uid=1000,gid=1000 {}", public.trim());
    let spec = "capacity: 1Gi\n  protocols: [nfs, sftp]\n  sftp: { authorizedKeysSecret: files-sftp-users }";
    // Without the keys Secret: nothing is applied, and the status says why.
    s.apply_volume_manifest(NAME, spec).await?;
    let volumes = s.volumes();
    eventually(
        "Ready=False AuthorizedKeysSecretNotFound",
        Duration::from_secs(60),
        || async {
            let nv = volumes.get_opt(NAME).await.ok()??;
            let ready = nv
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.status == "False" && ready.reason == "AuthorizedKeysSecretNotFound")
                .then_some(())
        },
    )
    .await?;
    if dataplane_pod(s).await.is_ok() {
        return Err("a dataplane pod was made without its keys Secret".into());
    }
    s.kubectl(&[
        "create",
        "secret",
        "generic",
        "files-sftp-users",
        "--from-literal",
        &line,
    ])
    .await?;
    // The operator looks again every 15 s while the Secret is missing.
    let ready = s.apply_volume(NAME, spec).await?;
    s.measure(
        "SFTP NasVolume: keys Secret created → Ready (the operator looks again every 15 s)",
        secs(ready),
    );
    let listed = s.kubectl(&["get", "nasvol", NAME]).await?;
    if !listed.contains("SFTP") || !listed.contains("sftp://") || !listed.contains(":2222/") {
        return Err(format!("kubectl get shows no SFTP endpoint:\n{listed}"));
    }
    // The host key Secret: owned by the NasVolume, named in its status, mounted.
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), NAMESPACE);
    let host_secret = secrets
        .get("files-sftp-host-key")
        .await
        .map_err(|e| format!("the host key Secret: {e}"))?;
    let owned = host_secret
        .metadata
        .owner_references
        .unwrap_or_default()
        .iter()
        .any(|o| o.kind == "NasVolume" && o.name == NAME && o.controller == Some(true));
    let named = volumes
        .get(NAME)
        .await
        .map_err(|e| e.to_string())?
        .status
        .and_then(|st| st.sftp_host_key_secret);
    if !owned || named.as_deref() != Some("files-sftp-host-key") {
        return Err(format!(
            "host key Secret owned by the NasVolume: {owned}, status names {named:?}"
        ));
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(s.client.clone(), NAMESPACE);
    let policy = policies
        .get(&format!("{NAME}-dataplane"))
        .await
        .map_err(|e| e.to_string())?;
    let rules = summary(&policy);
    if rules.get(&2222) != Some(&vec![format!("ns:[{NAMESPACE}]")]) {
        return Err(format!("the NetworkPolicy's SFTP rule: {rules:?}"));
    }
    let addr = s.endpoint_of(NAME, "sftp").await?;
    let first_key = host_key(addr).await?;

    // A put and a get through the pod IP, as the key's uid.
    let local = keys.join("local");
    std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(local.join("up.bin"), &data).map_err(|e| e.to_string())?;
    let batch = local.join("batch");
    std::fs::write(
        &batch,
        "put up.bin\nget up.bin down.bin\nmkdir d\nrename up.bin d/up.bin\n",
    )
    .map_err(|e| e.to_string())?;
    let port = addr.port().to_string();
    let ip = addr.ip().to_string();
    let sftp = |batch: PathBuf| {
        let (user, port, ip, local) = (user.clone(), port.clone(), ip.clone(), local.clone());
        async move {
            let out = tokio::process::Command::new("timeout")
                .args(["60", "sftp", "-b"])
                .arg(&batch)
                .args(["-P", &port, "-i"])
                .arg(&user)
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "IdentityAgent=none",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .arg(format!("me@{ip}"))
                .current_dir(&local)
                .output()
                .await
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("sftp: {}", String::from_utf8_lossy(&out.stderr)))
            }
        }
    };
    sftp(batch.clone()).await?;
    if std::fs::read(local.join("down.bin")).map_err(|e| e.to_string())? != data {
        return Err("the file came back changed".into());
    }
    let folder = s.backing_folder(NAME).await?;
    let on_disk = folder.join("d/up.bin");
    let meta = std::fs::metadata(&on_disk).map_err(|e| format!("{}: {e}", on_disk.display()))?;
    if (meta.uid(), meta.len()) != (1000, data.len() as u64) {
        return Err(format!(
            "on the volume: uid {} and {} bytes, not uid 1000 and {}",
            meta.uid(),
            meta.len(),
            data.len()
        ));
    }

    // The pod replaced: the same host key, so clients' known_hosts stay valid.
    let old = dataplane_pod(s).await?;
    let old_name = old.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), NAMESPACE);
    pods.delete(&old_name, &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let replaced = eventually(
        "a new SFTP dataplane pod to serve",
        Duration::from_secs(120),
        || async {
            let pod = dataplane_pod(s).await.ok()?;
            let ready = pod
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ip: std::net::IpAddr = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            (pod.metadata.name.as_deref() != Some(old_name.as_str()) && ready).then_some(ip)
        },
    )
    .await?;
    let second_key = host_key(std::net::SocketAddr::new(replaced, 2222)).await?;
    if first_key != second_key {
        return Err(format!(
            "the host key changed with the pod: {first_key} then {second_key}"
        ));
    }
    s.measure("SFTP host key kept across a new pod", "yes");
    s.delete_volume_and_pods(NAME).await?;
    s.kubectl(&["delete", "secret", "files-sftp-users"])
        .await
        .map(drop)
}

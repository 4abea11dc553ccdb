//! A local-path provisioner (and resizer) for one StorageClass, test-only: each claim of the
//! class gets a `local` PersistentVolume (node affinity: the e2e node) on a new folder under
//! `root`, owned by root with mode 0755 as a fresh file system's root is (so a pod's fsGroup
//! and the dataplane's share-root setup are what make it writable), pre-bound to the claim
//! (kube-controller-manager's binder completes the binding, as with any external
//! provisioner); a grown claim gets its volume and status capacity grown; a released volume
//! is deleted with its folder (reclaim policy Delete).

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tracing::{info, warn};

use crate::{Context, Result};

/// The provisioner name on the StorageClass and in `pv.kubernetes.io/provisioned-by`.
pub const PROVISIONER: &str = "e2e.zeronas.io/local-path";
/// The node the volumes live on (the node agent's Node).
pub const NODE: &str = "e2e-node";

/// The running provisioner; dropping it stops it.
pub struct LocalPathProvisioner {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalPathProvisioner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl LocalPathProvisioner {
    /// Creates the StorageClass `class` (the cluster default, expandable) and starts serving
    /// its claims from folders under `root`.
    pub async fn start(client: Client, class: &str, root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).context(|| format!("create {}", root.display()))?;
        let classes: Api<StorageClass> = Api::all(client.clone());
        let storage_class = StorageClass {
            metadata: ObjectMeta {
                name: Some(class.to_owned()),
                annotations: Some(BTreeMap::from([(
                    "storageclass.kubernetes.io/is-default-class".to_owned(),
                    "true".to_owned(),
                )])),
                ..Default::default()
            },
            provisioner: PROVISIONER.to_owned(),
            allow_volume_expansion: Some(true),
            reclaim_policy: Some("Delete".into()),
            volume_binding_mode: Some("Immediate".into()),
            ..Default::default()
        };
        match classes.create(&PostParams::default(), &storage_class).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context(|| format!("create storage class {class}")),
        }
        let tasks = vec![
            tokio::spawn(serve_claims(client.clone(), class.to_owned(), root)),
            tokio::spawn(reclaim_volumes(client, class.to_owned())),
        ];
        Ok(Self { tasks })
    }
}

fn storage(
    claim: &PersistentVolumeClaim,
) -> Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .cloned()
}

/// The PersistentVolume for `claim`, on `folder`.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    class: &str,
    folder: &std::path::Path,
) -> Option<PersistentVolume> {
    let uid = claim.metadata.uid.clone()?;
    let size = storage(claim)?;
    let spec = claim.spec.clone().unwrap_or_default();
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!("pvc-{uid}")),
            annotations: Some(BTreeMap::from([(
                "pv.kubernetes.io/provisioned-by".to_owned(),
                PROVISIONER.to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_owned(), size)])),
            access_modes: spec.access_modes,
            volume_mode: Some("Filesystem".into()),
            storage_class_name: Some(class.to_owned()),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            local: Some(LocalVolumeSource {
                path: folder.display().to_string(),
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![NODE.to_owned()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: Some(uid),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

async fn serve_claims(client: Client, class: String, root: PathBuf) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let mut events = watcher::watcher(claims, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let claim = match event {
            Ok(Event::Apply(c) | Event::InitApply(c)) => c,
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, "claim watch failed; retrying");
                continue;
            }
        };
        let spec = claim.spec.clone().unwrap_or_default();
        if spec.storage_class_name.as_deref() != Some(class.as_str())
            || claim.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let result = match spec.volume_name {
            None => provision(&client, &claim, &class, &root).await,
            Some(volume) => resize(&client, &claim, &volume).await,
        };
        if let Err(e) = result {
            warn!(claim = ?claim.metadata.name, error = %e, "provisioning failed");
        }
    }
}

async fn provision(
    client: &Client,
    claim: &PersistentVolumeClaim,
    class: &str,
    root: &std::path::Path,
) -> Result<()> {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let folder = root.join(format!("pvc-{uid}"));
    let Some(volume) = volume_for(claim, class, &folder) else {
        return Ok(());
    };
    std::fs::create_dir_all(&folder).context(|| format!("create {}", folder.display()))?;
    // As a fresh file system's root: root's, 0755.
    std::fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .context(|| format!("chmod {}", folder.display()))?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    match volumes.create(&PostParams::default(), &volume).await {
        Ok(_) => info!(claim = ?claim.metadata.name, folder = %folder.display(), "provisioned"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            return Err(e).context(|| format!("create volume for claim {:?}", claim.metadata.name));
        }
    }
    Ok(())
}

/// Grows the volume and the claim's reported capacity to the claim's request.
async fn resize(client: &Client, claim: &PersistentVolumeClaim, volume: &str) -> Result<()> {
    let Some(wanted) = storage(claim) else {
        return Ok(());
    };
    let current = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    if current.is_none() || current == Some(&wanted) {
        return Ok(());
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let grow = serde_json::json!({ "spec": { "capacity": { "storage": wanted } } });
    volumes
        .patch(volume, &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .context(|| format!("grow volume {volume}"))?;
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let status = serde_json::json!({ "status": { "capacity": { "storage": wanted } } });
    claims
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context(|| format!("report claim {name} resized"))?;
    info!(claim = %name, size = %wanted.0, "resized");
    Ok(())
}

async fn reclaim_volumes(client: Client, class: String) {
    let volumes: Api<PersistentVolume> = Api::all(client);
    let mut events = watcher::watcher(volumes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(Event::Apply(pv) | Event::InitApply(pv)) = event else {
            continue;
        };
        let spec = pv.spec.clone().unwrap_or_default();
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        if spec.storage_class_name.as_deref() != Some(class.as_str())
            || !released
            || pv.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if let Some(path) = spec.local.map(|l| l.path)
            && let Err(e) = std::fs::remove_dir_all(&path)
        {
            warn!(%path, error = %e, "removing a released volume's folder failed");
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        match volumes.delete(&name, &DeleteParams::default()).await {
            Ok(_) => info!(volume = %name, "reclaimed"),
            Err(e) => warn!(volume = %name, error = %e, "deleting a released volume failed"),
        }
    }
}

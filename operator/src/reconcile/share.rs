//! The PV/PVC pair consumer pods mount: a cluster-scoped NFS PersistentVolume pointing at
//! the Service's ClusterIP, pre-bound to the consumer claim `<name>`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NFSVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{BuildError, identity, labels};
use crate::crd::NasVolume;
use crate::names::LABEL_NAMESPACE;

/// Mount options of the PV: NFSv3 over TCP, MOUNT on the NFS port (no rpcbind), no lock
/// manager, hard mounts (no silent data loss).
pub const MOUNT_OPTIONS: [&str; 6] = [
    "vers=3",
    "proto=tcp",
    "port=2049",
    "mountport=2049",
    "mountproto=tcp",
    "nolock",
];
/// Hard mounts: retried forever rather than failing writes.
pub const HARD: &str = "hard";

fn access_mode(nv: &NasVolume) -> String {
    if nv.spec.read_only {
        "ReadOnlyMany"
    } else {
        "ReadWriteMany"
    }
    .to_owned()
}

/// The cluster-scoped PV `zeronas-<uid>` (named after the NasVolume's uid, so no tenant can
/// pick a name that lands on another's PV). A PV cannot carry an owner reference to a
/// namespaced object: labels point back (namespace and name), and the finalizer removes it.
pub fn volume(nv: &NasVolume, cluster_ip: &str) -> Result<PersistentVolume, BuildError> {
    let (namespace, name, names) = identity(nv)?;
    let mut pv_labels = labels(&name);
    pv_labels.insert(LABEL_NAMESPACE.to_owned(), namespace.clone());
    let mut mount_options: Vec<String> = MOUNT_OPTIONS.iter().map(|s| (*s).to_owned()).collect();
    mount_options.push(HARD.to_owned());
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(names.volume),
            labels: Some(pv_labels),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                nv.spec.capacity.clone(),
            )])),
            access_modes: Some(vec![access_mode(nv)]),
            nfs: Some(NFSVolumeSource {
                server: cluster_ip.to_owned(),
                path: "/".into(),
                read_only: Some(nv.spec.read_only),
            }),
            mount_options: Some(mount_options),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            storage_class_name: Some(String::new()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace),
                name: Some(names.consumer_claim),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    })
}

/// The consumer PVC `<name>`: RWX (ROX when read-only), bound to the PV by name, no storage
/// class so no provisioner touches it. Such a claim cannot be resized, so the controller
/// keeps the request it was created with (`pvc::request_for`); the PV carries the capacity.
pub fn consumer_claim(
    nv: &NasVolume,
    request: Quantity,
) -> Result<PersistentVolumeClaim, BuildError> {
    let (_, _, names) = identity(nv)?;
    super::pvc::claim(
        nv,
        &names.consumer_claim,
        &access_mode(nv),
        Some(String::new()),
        Some(names.volume),
        request,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::{basic, q, volume as nas_volume};

    #[test]
    fn nfs_volume_points_at_the_service_and_back() {
        let pv = volume(&basic(), "10.96.4.2").unwrap();
        assert_eq!(
            pv.metadata.name.as_deref(),
            Some("zeronas-0b7c2f4e-1111-2222-3333-444455556666")
        );
        assert!(pv.metadata.owner_references.is_none());
        let labels = pv.metadata.labels.unwrap();
        assert_eq!(
            (
                labels["zeronas.io/volume"].as_str(),
                labels["zeronas.io/namespace"].as_str()
            ),
            ("media", "team-a")
        );
        let spec = pv.spec.unwrap();
        let nfs = spec.nfs.unwrap();
        assert_eq!((nfs.server.as_str(), nfs.path.as_str()), ("10.96.4.2", "/"));
        assert_eq!(
            spec.mount_options.unwrap().join(","),
            "vers=3,proto=tcp,port=2049,mountport=2049,mountproto=tcp,nolock,hard"
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_owned()]));
        assert_eq!(spec.storage_class_name.as_deref(), Some(""));
        let claim = spec.claim_ref.unwrap();
        assert_eq!(
            (claim.namespace.as_deref(), claim.name.as_deref()),
            (Some("team-a"), Some("media"))
        );
        assert_eq!(spec.capacity.unwrap()["storage"], q("100Gi"));
    }

    #[test]
    fn consumer_claim_binds_by_name() {
        let pvc = consumer_claim(&nas_volume("capacity: 5Gi\nreadOnly: true\n"), q("5Gi")).unwrap();
        assert_eq!(pvc.metadata.name.as_deref(), Some("media"));
        assert!(pvc.metadata.owner_references.is_some());
        let spec = pvc.spec.unwrap();
        assert_eq!(
            spec.volume_name.as_deref(),
            Some("zeronas-0b7c2f4e-1111-2222-3333-444455556666")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some(""));
        assert_eq!(spec.access_modes, Some(vec!["ReadOnlyMany".to_owned()]));
    }
}

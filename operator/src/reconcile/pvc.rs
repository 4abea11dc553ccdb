//! The backing claim `<name>-data` that holds the share's files.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};

use super::{BuildError, identity, owned_meta};
use crate::crd::NasVolume;

/// A claim owned by the NasVolume asking for `capacity`, with the given access mode, storage
/// class and (for the consumer claim) the volume it binds to.
pub fn claim(
    nv: &NasVolume,
    name: &str,
    access_mode: &str,
    storage_class_name: Option<String>,
    volume_name: Option<String>,
) -> Result<PersistentVolumeClaim, BuildError> {
    Ok(PersistentVolumeClaim {
        metadata: owned_meta(nv, name)?,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![access_mode.to_owned()]),
            storage_class_name,
            volume_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    nv.spec.capacity.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}

/// The backing PVC: ReadWriteOnce, `capacity`, the NasVolume's storage class. A larger
/// `capacity` on an existing claim is a resize request.
pub fn data_claim(nv: &NasVolume) -> Result<PersistentVolumeClaim, BuildError> {
    let (_, _, names) = identity(nv)?;
    claim(
        nv,
        &names.data_claim,
        "ReadWriteOnce",
        nv.spec.storage_class_name.clone(),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::{basic, q, volume};

    #[test]
    fn backing_claim() {
        let pvc = data_claim(&volume("capacity: 10Gi\nstorageClassName: fast\n")).unwrap();
        assert_eq!(pvc.metadata.name.as_deref(), Some("media-data"));
        assert_eq!(pvc.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &pvc.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("NasVolume", "media", Some(true))
        );
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            q("10Gi")
        );
        assert_eq!(
            data_claim(&basic())
                .unwrap()
                .spec
                .unwrap()
                .storage_class_name,
            None
        );
    }
}

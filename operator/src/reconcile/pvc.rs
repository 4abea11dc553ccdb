//! The backing claim `<name>-data` that holds the share's files.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{BuildError, identity, owned_meta};
use crate::crd::NasVolume;
use crate::names::ANNOTATION_OWNER_UID;

/// A claim owned by the NasVolume asking for `capacity`, with the given access mode, storage
/// class and (for the consumer claim) the volume it binds to.
pub fn claim(
    nv: &NasVolume,
    name: &str,
    access_mode: &str,
    storage_class_name: Option<String>,
    volume_name: Option<String>,
    request: Quantity,
) -> Result<PersistentVolumeClaim, BuildError> {
    Ok(PersistentVolumeClaim {
        metadata: owned_meta(nv, name)?,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![access_mode.to_owned()]),
            storage_class_name,
            volume_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), request)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}

/// The backing PVC: ReadWriteOnce, asking for `request` (see [`request_for`]), the
/// NasVolume's storage class. It carries no owner reference but the NasVolume's uid in
/// [`ANNOTATION_OWNER_UID`]: only the finalizer deletes it (`deletionPolicy: Delete`), so no
/// garbage collection can take the data first.
pub fn data_claim(nv: &NasVolume, request: Quantity) -> Result<PersistentVolumeClaim, BuildError> {
    let (_, _, names) = identity(nv)?;
    let mut data = claim(
        nv,
        &names.data_claim,
        "ReadWriteOnce",
        nv.spec.storage_class_name.clone(),
        None,
        request,
    )?;
    let uid = nv
        .metadata
        .uid
        .clone()
        .ok_or(BuildError::MissingMetadata("uid"))?;
    data.metadata.owner_references = None;
    data.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_OWNER_UID.to_owned(), uid)]));
    Ok(data)
}

/// The storage a claim asks for.
pub fn requested_storage(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
}

/// The storage request to apply to a claim that may already exist. A new claim asks for
/// `wanted`. An existing one keeps its size until it is Bound (the apiserver forbids changing
/// an unbound claim's spec), then grows to `wanted` (a resize request) when `resizable`; a
/// claim that cannot be resized (no storage class) keeps the size it was created with. A
/// claim never shrinks (the apiserver refuses): an adopted claim larger than `wanted` keeps
/// its size.
pub fn request_for(
    existing: Option<&PersistentVolumeClaim>,
    wanted: &Quantity,
    resizable: bool,
) -> Quantity {
    let Some(existing) = existing else {
        return wanted.clone();
    };
    let current = requested_storage(existing);
    let bound = existing.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    match current {
        Some(current) if !resizable || !bound => current.clone(),
        Some(current)
            if crate::quantity::to_units(current) >= crate::quantity::to_units(wanted) =>
        {
            current.clone()
        }
        _ => wanted.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeClaimStatus;

    fn existing(size: &str, phase: &str) -> PersistentVolumeClaim {
        let mut pvc = claim(&basic(), "x", "ReadWriteOnce", None, None, q(size)).unwrap();
        pvc.status = Some(PersistentVolumeClaimStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        pvc
    }

    #[test]
    fn requests_grow_only_when_allowed() {
        assert_eq!(request_for(None, &q("20Gi"), true), q("20Gi"));
        assert_eq!(
            request_for(Some(&existing("10Gi", "Bound")), &q("20Gi"), true),
            q("20Gi")
        );
        assert_eq!(
            request_for(Some(&existing("10Gi", "Pending")), &q("20Gi"), true),
            q("10Gi"),
            "unbound claims are immutable"
        );
        assert_eq!(
            request_for(Some(&existing("10Gi", "Bound")), &q("20Gi"), false),
            q("10Gi"),
            "not resizable"
        );
        assert_eq!(
            request_for(Some(&existing("20Gi", "Bound")), &q("10Gi"), true),
            q("20Gi"),
            "an adopted larger claim never shrinks"
        );
    }
    use crate::reconcile::test_support::{basic, q, volume};

    #[test]
    fn backing_claim() {
        let pvc = data_claim(
            &volume("capacity: 10Gi\nstorageClassName: fast\n"),
            q("10Gi"),
        )
        .unwrap();
        assert_eq!(pvc.metadata.name.as_deref(), Some("media-data"));
        assert_eq!(pvc.metadata.namespace.as_deref(), Some("team-a"));
        // No owner reference (garbage collection must never take the data); the owner's uid
        // in an annotation instead.
        assert!(pvc.metadata.owner_references.is_none());
        assert_eq!(
            pvc.metadata.annotations.as_ref().unwrap()[ANNOTATION_OWNER_UID],
            "0b7c2f4e-1111-2222-3333-444455556666"
        );
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            q("10Gi")
        );
        assert_eq!(
            data_claim(&basic(), q("1Gi"))
                .unwrap()
                .spec
                .unwrap()
                .storage_class_name,
            None
        );
    }
}

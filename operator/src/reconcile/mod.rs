//! Pure builders: one function per owned object, from a NasVolume (and the little the
//! cluster told us) to the object to server-side-apply. No I/O here; the controller does
//! the applying, so every rule below is unit tested.

pub mod deletion;
pub mod deployment;
pub mod expansion;
pub mod network_policy;
pub mod ownership;
pub mod pvc;
pub mod secret;
pub mod service;
pub mod sftp;
pub mod share;
pub mod status;
pub mod unchanged;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::NasVolume;
use crate::names::{LABEL_MANAGED_BY, LABEL_VOLUME, MANAGER, OwnedNames};

/// Why an object cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The NasVolume lacks metadata the builders need (it was not read from the apiserver).
    #[error("the NasVolume has no {0}")]
    MissingMetadata(&'static str),
    /// The capacity is not a size.
    #[error("capacity {0:?} is not a valid size")]
    BadCapacity(String),
}

/// What the builders need besides the NasVolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Dataplane image when the NasVolume does not override it.
    pub dataplane_image: String,
}

/// The NasVolume's namespace, name, and the names of everything it owns.
pub fn identity(nv: &NasVolume) -> Result<(String, String, OwnedNames), BuildError> {
    let namespace = nv
        .namespace()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    let name = nv
        .meta()
        .name
        .clone()
        .ok_or(BuildError::MissingMetadata("name"))?;
    let uid = nv
        .meta()
        .uid
        .as_deref()
        .ok_or(BuildError::MissingMetadata("uid"))?;
    let names = OwnedNames::for_volume(&name, uid);
    Ok((namespace, name, names))
}

/// Labels on every owned object.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "zeronas-dataplane".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), name.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_VOLUME.to_owned(), name.to_owned()),
    ])
}

/// The pod selector of the dataplane (a subset of [`labels`] that never changes).
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "zeronas-dataplane".to_owned(),
        ),
        (LABEL_VOLUME.to_owned(), name.to_owned()),
    ])
}

/// The controller owner reference to the NasVolume.
pub fn owner(nv: &NasVolume) -> Result<OwnerReference, BuildError> {
    nv.controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("uid"))
}

/// Metadata of a namespaced object owned by the NasVolume.
pub fn owned_meta(nv: &NasVolume, object_name: &str) -> Result<ObjectMeta, BuildError> {
    let (namespace, name, _) = identity(nv)?;
    Ok(ObjectMeta {
        name: Some(object_name.to_owned()),
        namespace: Some(namespace),
        labels: Some(labels(&name)),
        owner_references: Some(vec![owner(nv)?]),
        ..ObjectMeta::default()
    })
}

/// The capacity in bytes.
pub fn capacity_bytes(nv: &NasVolume) -> Result<u64, BuildError> {
    crate::quantity::to_units(&nv.spec.capacity)
        .ok_or_else(|| BuildError::BadCapacity(nv.spec.capacity.0.clone()))
}

#[cfg(test)]
pub(crate) mod test_support {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::ObjectMeta;

    use crate::crd::{NasVolume, NasVolumeSpec};

    /// A NasVolume as read from the apiserver (uid set), built from YAML spec text.
    pub fn volume(spec_yaml: &str) -> NasVolume {
        let spec: NasVolumeSpec = serde_yaml::from_str(spec_yaml).expect("spec");
        let mut nv = NasVolume::new("media", spec);
        nv.metadata = ObjectMeta {
            name: Some("media".into()),
            namespace: Some("team-a".into()),
            uid: Some("0b7c2f4e-1111-2222-3333-444455556666".into()),
            generation: Some(3),
            ..ObjectMeta::default()
        };
        nv
    }

    /// The basic sample.
    pub fn basic() -> NasVolume {
        volume("capacity: 100Gi\n")
    }

    /// Shorthand for a quantity.
    pub fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }
}

//! Whether the backing claim may grow. Growing a claim needs a StorageClass with
//! `allowVolumeExpansion: true`; otherwise the apiserver refuses the resize on every
//! reconcile, so the controller leaves the claim's size alone and says why in the status.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::NasVolume;
use crate::quantity::to_units;

/// What to do about the backing claim's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// No growth asked for (new claim, or the claim already asks for at least `capacity`).
    NotNeeded,
    /// Growth asked for and the class allows it: request the new size.
    Allowed,
    /// Growth asked for but not possible: keep the size; the message says why.
    NotSupported(String),
}

/// The storage class name of a claim (`None`: no class, which cannot expand).
pub fn class_of(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .filter(|c| !c.is_empty())
}

/// Decides growth of `existing` to `wanted`, given its storage class (as read from the
/// cluster; `None` when the claim has no class or the class is gone).
pub fn decide(
    existing: Option<&PersistentVolumeClaim>,
    wanted: &Quantity,
    class: Option<&StorageClass>,
) -> Expansion {
    let Some(existing) = existing else {
        return Expansion::NotNeeded;
    };
    let current = super::pvc::requested_storage(existing);
    let grows = match (current.and_then(to_units), to_units(wanted)) {
        (Some(have), Some(want)) => want > have,
        _ => false,
    };
    if !grows {
        return Expansion::NotNeeded;
    }
    let have = current.map_or("?", |q| q.0.as_str());
    match class {
        Some(c) if c.allow_volume_expansion == Some(true) => Expansion::Allowed,
        Some(c) => Expansion::NotSupported(format!(
            "capacity {} asks to grow the backing claim from {have}, but storage class {} does \
             not set allowVolumeExpansion: true; the claim keeps its size",
            wanted.0,
            c.metadata.name.as_deref().unwrap_or("?")
        )),
        None => Expansion::NotSupported(format!(
            "capacity {} asks to grow the backing claim from {have}, but the claim has no \
             storage class that allows expansion; the claim keeps its size",
            wanted.0
        )),
    }
}

/// `nv` as it is served while its growth is refused: the capacity of its backing claim.
pub fn served_at(nv: &NasVolume, claim_size: &Quantity) -> NasVolume {
    let mut served = nv.clone();
    served.spec.capacity = claim_size.clone();
    served
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn claim(size: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("local".into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    fn class(expand: Option<bool>) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some("local".into()),
                ..ObjectMeta::default()
            },
            allow_volume_expansion: expand,
            provisioner: "x".into(),
            ..StorageClass::default()
        }
    }

    #[test]
    fn a_refused_growth_is_served_at_the_claim_size() {
        let nv: NasVolume = serde_yaml::from_str(
            "apiVersion: zeronas.io/v1alpha1\nkind: NasVolume\nmetadata: { name: m, namespace: n }\nspec: { capacity: 20Gi }\n",
        )
        .unwrap();
        let served = served_at(&nv, &Quantity("10Gi".into()));
        assert_eq!(served.spec.capacity, Quantity("10Gi".into()));
        assert_eq!(served.spec.protocols, nv.spec.protocols);
    }

    #[test]
    fn growth_needs_an_expandable_class() {
        let q = |s: &str| Quantity(s.into());
        let c = claim("10Gi");
        assert_eq!(decide(None, &q("20Gi"), None), Expansion::NotNeeded);
        assert_eq!(decide(Some(&c), &q("10Gi"), None), Expansion::NotNeeded);
        assert_eq!(decide(Some(&c), &q("10240Mi"), None), Expansion::NotNeeded);
        assert_eq!(
            decide(Some(&c), &q("20Gi"), Some(&class(Some(true)))),
            Expansion::Allowed
        );
        for refused in [Some(false), None] {
            match decide(Some(&c), &q("20Gi"), Some(&class(refused))) {
                Expansion::NotSupported(m) => {
                    assert!(m.contains("storage class local"), "{m}");
                    assert!(m.contains("from 10Gi"), "{m}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            decide(Some(&c), &q("20Gi"), None),
            Expansion::NotSupported(_)
        ));
        assert_eq!(class_of(&c), Some("local"));
    }
}

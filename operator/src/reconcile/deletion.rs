//! Deleting a NasVolume without surprises: nothing is removed while a pod still mounts the
//! consumer claim, and with `deletionPolicy: Retain` the backing claim (the data) is
//! released from the NasVolume and kept, labelled so a NasVolume of the same name adopts it.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

use crate::names::{ANNOTATION_OWNER_UID, LABEL_RETAINED, LABEL_VOLUME};

/// Names of the pods that still use `claim`: a volume with that claim and a phase other than
/// `Succeeded` or `Failed` (a pending pod counts: it will mount the claim when it starts).
pub fn pods_using(pods: &[Pod], claim: &str) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .any(|c| c.claim_name == claim)
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// The `InUse` message while deletion waits for `pods`.
pub fn in_use_message(claim: &str, pods: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut list = pods
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if pods.len() > SHOWN {
        list.push_str(&format!(" and {} more", pods.len() - SHOWN));
    }
    format!("deletion waits: claim {claim} is used by pod(s) {list}; delete them first")
}

/// The merge patch that releases a retained backing claim: every owner reference but the
/// NasVolume's (uid `uid`) kept, the retained labels set, and the claim's resourceVersion,
/// so a concurrent change makes the patch fail instead of being overwritten.
pub fn release_patch(claim: &PersistentVolumeClaim, name: &str, uid: &str) -> serde_json::Value {
    let remaining: Vec<_> = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.uid != uid)
        .cloned()
        .collect();
    serde_json::json!({
        "metadata": {
            "resourceVersion": claim.metadata.resource_version,
            "ownerReferences": remaining,
            "labels": { LABEL_RETAINED: "true", LABEL_VOLUME: name },
            "annotations": { ANNOTATION_OWNER_UID: null },
        }
    })
}

/// The merge patch that clears the retained label once a claim has been adopted.
pub fn adopted_patch() -> serde_json::Value {
    serde_json::json!({ "metadata": { "labels": { LABEL_RETAINED: null } } })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimVolumeSource, PodSpec, PodStatus, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn pod(name: &str, claim: &str, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "v".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.into(),
                        read_only: None,
                    }),
                    ..Volume::default()
                }]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn only_live_pods_of_the_claim_block_deletion() {
        let pods = [
            pod("web-2", "media", "Running"),
            pod("web-1", "media", "Pending"),
            pod("job", "media", "Succeeded"),
            pod("crashed", "media", "Failed"),
            pod("other", "media-data", "Running"),
        ];
        assert_eq!(pods_using(&pods, "media"), vec!["web-1", "web-2"]);
        assert!(pods_using(&pods[2..4], "media").is_empty());
        let msg = in_use_message("media", &pods_using(&pods, "media"));
        assert!(
            msg.contains("claim media is used by pod(s) web-1, web-2"),
            "{msg}"
        );
        let many: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
        assert!(in_use_message("m", &many).ends_with("p9 and 2 more; delete them first"));
    }

    #[test]
    fn release_keeps_other_owners_and_labels_the_claim() {
        let owner = |uid: &str, kind: &str| OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: "x".into(),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: None,
        };
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                resource_version: Some("42".into()),
                owner_references: Some(vec![owner("nv-uid", "NasVolume"), owner("o", "Backup")]),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        };
        let p = release_patch(&claim, "media", "nv-uid");
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        let refs = p["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["kind"], "Backup");
        assert_eq!(p["metadata"]["labels"]["zeronas.io/retained"], "true");
        assert_eq!(p["metadata"]["labels"]["zeronas.io/volume"], "media");
        assert!(adopted_patch()["metadata"]["labels"]["zeronas.io/retained"].is_null());
    }
}

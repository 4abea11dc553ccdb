//! Who controls an existing object. Before the controller applies an object it looks at the
//! one already there under that name: only an object controlled by this NasVolume (its
//! controller owner reference carries the NasVolume's uid) may be changed. Anything else is
//! a name conflict, reported and left untouched, so a tenant cannot make the operator take
//! over (and later garbage-collect) an object it did not create. The one exception is a
//! backing claim retained from a deleted NasVolume of the same name, which is adopted.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{ANNOTATION_OWNER_UID, LABEL_RETAINED, LABEL_VOLUME};

/// Who controls the object found under an owned name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Nothing there yet: create it.
    Absent,
    /// Controlled by this NasVolume: apply it.
    Ours,
    /// A backing claim released by a deleted NasVolume of this name: adopt it.
    Retained,
    /// Someone else's: leave it alone. The text says whose.
    Foreign(String),
}

/// Decides who controls `existing` for the NasVolume `name` with uid `uid`. `adoptable`
/// says whether this object may be a retained backing claim.
pub fn classify(
    existing: Option<&ObjectMeta>,
    name: &str,
    uid: &str,
    adoptable: bool,
) -> Ownership {
    let Some(meta) = existing else {
        return Ownership::Absent;
    };
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(owner) if owner.uid == uid => Ownership::Ours,
        Some(owner) => Ownership::Foreign(format!(
            "controlled by {} {} (uid {})",
            owner.kind, owner.name, owner.uid
        )),
        None => {
            let labels = meta.labels.as_ref();
            let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
            let owner_uid = meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_OWNER_UID))
                .map(String::as_str);
            // The backing claim has no owner reference: its annotation names its NasVolume.
            if adoptable && owner_uid == Some(uid) {
                Ownership::Ours
            } else if adoptable
                && label(LABEL_RETAINED) == Some("true")
                && label(LABEL_VOLUME) == Some(name)
            {
                Ownership::Retained
            } else {
                Ownership::Foreign(
                    "not created by this NasVolume (no controller owner reference)".into(),
                )
            }
        }
    }
}

/// The `NameConflict` message for a foreign object.
pub fn conflict_message(kind: &str, namespace: &str, object: &str, whose: &str) -> String {
    format!(
        "{kind} {namespace}/{object} already exists and is {whose}; rename or delete it, \
         or give the NasVolume another name (nothing was changed)"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn meta(owner_uid: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "zeronas.io/v1alpha1".into(),
                    kind: "NasVolume".into(),
                    name: "media".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_our_uid_is_ours() {
        assert_eq!(classify(None, "media", "u1", false), Ownership::Absent);
        assert_eq!(
            classify(Some(&meta(Some("u1"), &[])), "media", "u1", false),
            Ownership::Ours
        );
        // Same name, an earlier NasVolume (another uid): not ours.
        let other = classify(Some(&meta(Some("u0"), &[])), "media", "u1", true);
        assert!(
            matches!(&other, Ownership::Foreign(w) if w.contains("uid u0")),
            "{other:?}"
        );
        // A user's own object with our name.
        assert!(matches!(
            classify(Some(&meta(None, &[])), "media", "u1", false),
            Ownership::Foreign(_)
        ));
    }

    #[test]
    fn a_non_controller_owner_does_not_count() {
        let mut m = meta(Some("u1"), &[]);
        if let Some(refs) = m.owner_references.as_mut() {
            refs[0].controller = Some(false);
        }
        assert!(matches!(
            classify(Some(&m), "media", "u1", false),
            Ownership::Foreign(_)
        ));
    }

    #[test]
    fn retained_claims_are_adopted_by_the_same_name_only() {
        let retained = meta(None, &[(LABEL_RETAINED, "true"), (LABEL_VOLUME, "media")]);
        assert_eq!(
            classify(Some(&retained), "media", "u2", true),
            Ownership::Retained
        );
        assert!(matches!(
            classify(Some(&retained), "other", "u2", true),
            Ownership::Foreign(_)
        ));
        assert!(
            matches!(
                classify(Some(&retained), "media", "u2", false),
                Ownership::Foreign(_)
            ),
            "only the backing claim is adoptable"
        );
        let controlled = meta(
            Some("u9"),
            &[(LABEL_RETAINED, "true"), (LABEL_VOLUME, "media")],
        );
        assert!(
            matches!(
                classify(Some(&controlled), "media", "u2", true),
                Ownership::Foreign(_)
            ),
            "a claim with another controller is never adopted"
        );
    }

    #[test]
    fn the_backing_claim_is_ours_by_its_owner_uid_annotation() {
        let annotated = |uid: &str, labels: &[(&str, &str)]| {
            let mut m = meta(None, labels);
            m.annotations = Some(BTreeMap::from([(
                ANNOTATION_OWNER_UID.to_owned(),
                uid.to_owned(),
            )]));
            m
        };
        assert_eq!(
            classify(Some(&annotated("u1", &[])), "media", "u1", true),
            Ownership::Ours
        );
        assert!(
            matches!(
                classify(Some(&annotated("u1", &[])), "media", "u1", false),
                Ownership::Foreign(_)
            ),
            "the annotation counts for the backing claim only"
        );
        assert!(
            matches!(
                classify(Some(&annotated("u0", &[])), "media", "u1", true),
                Ownership::Foreign(_)
            ),
            "another NasVolume's live claim"
        );
        assert_eq!(
            classify(
                Some(&annotated(
                    "u0",
                    &[(LABEL_RETAINED, "true"), (LABEL_VOLUME, "media")]
                )),
                "media",
                "u1",
                true
            ),
            Ownership::Retained
        );
    }

    #[test]
    fn conflict_message_names_the_object() {
        let m = conflict_message(
            "Service",
            "team-a",
            "media",
            "not created by this NasVolume",
        );
        assert!(m.starts_with("Service team-a/media already exists"), "{m}");
    }
}

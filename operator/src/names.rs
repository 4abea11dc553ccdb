//! Names and labels of the objects the operator owns for one NasVolume.
//!
//! Names are derived, never stored: the reconciler, the finalizer and the e2e tests all
//! compute them from the NasVolume's name and uid with these functions. Namespaced objects
//! are named after the NasVolume (a tenant can only collide with itself, and the controller
//! refuses objects it does not control: see `reconcile::ownership`); the one cluster-scoped
//! object, the PV, is named after the NasVolume's uid, so no tenant can choose a name that
//! lands on another tenant's PV.

/// Label on every owned object: the NasVolume's name.
pub const LABEL_VOLUME: &str = "zeronas.io/volume";
/// Label on the cluster-scoped PV: the NasVolume's namespace (a PV has none of its own).
pub const LABEL_NAMESPACE: &str = "zeronas.io/namespace";
/// Label on a backing claim kept after its NasVolume was deleted (`deletionPolicy: Retain`);
/// a new NasVolume of the same name (label [`LABEL_VOLUME`]) adopts such a claim.
pub const LABEL_RETAINED: &str = "zeronas.io/retained";
/// Annotation on the backing claim: the uid of the NasVolume it serves. The backing claim
/// has no owner reference, so garbage collection never deletes it on its own (a foreground
/// or orphaning delete of the NasVolume would otherwise take the data before the finalizer
/// decides Retain or Delete); this annotation says whose it is instead.
pub const ANNOTATION_OWNER_UID: &str = "zeronas.io/owner-uid";
/// Standard label saying which controller manages an object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "zeronas-operator";

/// The longest object name Kubernetes accepts for most kinds (DNS subdomain).
pub const MAX_NAME: usize = 253;

/// The names of everything owned by one NasVolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedNames {
    /// Backing PVC holding the data: `<name>-data`.
    pub data_claim: String,
    /// Dataplane Deployment: `<name>-dataplane`.
    pub deployment: String,
    /// Service in front of the dataplane: `<name>`.
    pub service: String,
    /// Cluster-scoped NFS PersistentVolume: `zeronas-<uid>`.
    pub volume: String,
    /// Consumer PVC bound to that PV: `<name>`.
    pub consumer_claim: String,
    /// Secret with the HTTP bearer tokens: `<name>-http-tokens`.
    pub token_secret: String,
    /// NetworkPolicy in front of the dataplane pod: `<name>-dataplane`.
    pub network_policy: String,
    /// Secret with the SFTP host key: `<name>-sftp-host-key`.
    pub sftp_host_key_secret: String,
}

impl OwnedNames {
    /// Derives every owned name for the NasVolume `name` with uid `uid`.
    pub fn for_volume(name: &str, uid: &str) -> Self {
        Self {
            data_claim: format!("{name}-data"),
            deployment: format!("{name}-dataplane"),
            service: name.to_owned(),
            volume: format!("zeronas-{uid}"),
            consumer_claim: name.to_owned(),
            token_secret: format!("{name}-http-tokens"),
            network_policy: format!("{name}-dataplane"),
            sftp_host_key_secret: format!("{name}-sftp-host-key"),
        }
    }

    /// The longest derived name; it must stay within [`MAX_NAME`].
    pub fn longest(&self) -> usize {
        [
            &self.data_claim,
            &self.deployment,
            &self.service,
            &self.volume,
            &self.consumer_claim,
            &self.token_secret,
            &self.network_policy,
        ]
        .iter()
        .map(|n| n.len())
        .max()
        .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_architecture() {
        let n = OwnedNames::for_volume("media", "0b7c2f4e-1111-2222-3333-444455556666");
        assert_eq!(n.data_claim, "media-data");
        assert_eq!(n.deployment, "media-dataplane");
        assert_eq!(n.service, "media");
        assert_eq!(n.volume, "zeronas-0b7c2f4e-1111-2222-3333-444455556666");
        assert_eq!(n.consumer_claim, "media");
        assert_eq!(n.token_secret, "media-http-tokens");
        assert_eq!(n.network_policy, "media-dataplane");
        assert_eq!(n.longest(), n.volume.len());
    }

    #[test]
    fn the_cluster_scoped_name_depends_on_the_uid_only() {
        // Two tenants' volumes `a-b/c` and `a/b-c` once both mapped to `zeronas-a-b-c`.
        let one = OwnedNames::for_volume("c", "uid-1");
        let other = OwnedNames::for_volume("b-c", "uid-2");
        assert_ne!(one.volume, other.volume);
        assert_eq!(
            OwnedNames::for_volume("x", "uid-1").volume,
            one.volume,
            "the PV name does not depend on the NasVolume's name"
        );
    }
}

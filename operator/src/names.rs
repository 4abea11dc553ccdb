//! Names and labels of the objects the operator owns for one NasVolume.
//!
//! Names are derived, never stored: the reconciler, the finalizer and the e2e tests all
//! compute them from the NasVolume's namespace and name with these functions.

/// Label on every owned object: the NasVolume's name.
pub const LABEL_VOLUME: &str = "zeronas.io/volume";
/// Label on the cluster-scoped PV: the NasVolume's namespace (a PV has none of its own).
pub const LABEL_NAMESPACE: &str = "zeronas.io/namespace";
/// Standard label saying which controller manages an object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "zeronas-operator";

/// The longest object name Kubernetes accepts for most kinds (DNS subdomain).
pub const MAX_NAME: usize = 253;

/// The names of everything owned by the NasVolume `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedNames {
    /// Backing PVC holding the data: `<name>-data`.
    pub data_claim: String,
    /// Dataplane Deployment: `<name>-dataplane`.
    pub deployment: String,
    /// Service in front of the dataplane: `<name>`.
    pub service: String,
    /// Cluster-scoped NFS PersistentVolume: `zeronas-<namespace>-<name>`.
    pub volume: String,
    /// Consumer PVC bound to that PV: `<name>`.
    pub consumer_claim: String,
}

impl OwnedNames {
    /// Derives every owned name for the NasVolume `namespace/name`.
    pub fn for_volume(namespace: &str, name: &str) -> Self {
        Self {
            data_claim: format!("{name}-data"),
            deployment: format!("{name}-dataplane"),
            service: name.to_owned(),
            volume: format!("zeronas-{namespace}-{name}"),
            consumer_claim: name.to_owned(),
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
        let n = OwnedNames::for_volume("team-a", "media");
        assert_eq!(n.data_claim, "media-data");
        assert_eq!(n.deployment, "media-dataplane");
        assert_eq!(n.service, "media");
        assert_eq!(n.volume, "zeronas-team-a-media");
        assert_eq!(n.consumer_claim, "media");
        assert_eq!(n.longest(), "zeronas-team-a-media".len());
    }
}

//! From a CSI CreateVolume request to a NasVolume, and back: names, volume ids, capacities,
//! access modes and the StorageClass parameters. Pure functions, unit tested without I/O.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use zeronas_operator::crd::{
    ClientRule, DataplaneResources, DeletionPolicy, Identity, NasVolume, NasVolumeSpec, Phase,
    Protocol,
};

use crate::csi::volume_capability::AccessType;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::{CapacityRange, VolumeCapability};

/// The driver's name, as in the CSIDriver object and the StorageClass `provisioner`.
pub const DRIVER_NAME: &str = "csi.zeronas.io";
/// Label on every NasVolume the driver made (ListVolumes selects by it).
pub const LABEL_PROVISIONED: &str = "csi.zeronas.io/provisioned";
/// Annotation: the CSI volume name the NasVolume was created for.
pub const ANNOTATION_NAME: &str = "csi.zeronas.io/name";
/// Annotation: a digest of the request's parameters and capacity, so a second CreateVolume
/// of the same name can tell "the same request again" from "a different one".
pub const ANNOTATION_REQUEST: &str = "csi.zeronas.io/request";
/// Annotations copied from external-provisioner's `--extra-create-metadata` parameters.
pub const ANNOTATION_PVC: &str = "csi.zeronas.io/pvc";
/// Parameters external-provisioner adds (`--extra-create-metadata`); never part of the spec.
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";
const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
/// Capacity of a volume whose request names none.
pub const DEFAULT_CAPACITY: u64 = 1 << 30;
/// A CSI name used as the NasVolume's name as it is: a DNS label (the Service takes the
/// NasVolume's name) short enough for the derived names (`<name>-http-tokens`) to stay
/// within 63 characters. external-provisioner's `pvc-<uid>` (40) fits.
const MAX_PLAIN_NAME: usize = 40;

/// The StorageClass parameters the driver understands, each a NasVolume spec field.
pub const PARAMETERS: [&str; 9] = [
    "storageClassName",
    "protocols",
    "clients",
    "identity",
    "readOnly",
    "cpu",
    "memory",
    "cpuPinning",
    "deletionPolicy",
];

/// Why a request cannot become a NasVolume (gRPC InvalidArgument or OutOfRange).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A parameter is unknown or its value is malformed.
    #[error("StorageClass parameter {key:?}: {why}")]
    Parameter {
        /// The parameter.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The capacity range cannot be met.
    #[error("capacity range: {0}")]
    Capacity(String),
    /// A volume capability the driver does not serve.
    #[error("volume capability: {0}")]
    Capability(String),
}

/// A volume id: where the NasVolume lives. Written `<namespace>/<name>`; neither part can
/// hold a `/` (both are DNS labels), so the split is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeId {
    /// The NasVolume's namespace.
    pub namespace: String,
    /// The NasVolume's name.
    pub name: String,
}

impl VolumeId {
    /// Parses a volume id; `None` for anything this driver never hands out.
    pub fn parse(id: &str) -> Option<Self> {
        let (namespace, name) = id.split_once('/')?;
        (is_dns_label(namespace) && is_dns_label(name)).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for VolumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether `s` is an RFC 1035 label (what a Service name must be): lower-case letters,
/// digits and `-`, starting with a letter, ending with a letter or digit, 1 to 63 bytes.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// The NasVolume name for a CSI volume name: the name itself when it is a short DNS label
/// (external-provisioner's `pvc-<uid>`), otherwise `csi-` and 32 hex digits of its SHA-256
/// (CSI names may be 128 bytes of anything). The full name is kept in [`ANNOTATION_NAME`].
pub fn nasvolume_name(csi_name: &str) -> String {
    if csi_name.len() <= MAX_PLAIN_NAME && is_dns_label(csi_name) {
        return csi_name.to_owned();
    }
    let digest = Sha256::digest(csi_name.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

/// The namespace a new volume goes to: its claim's (when external-provisioner passes it with
/// `--extra-create-metadata`), so the share's Service, pod and HTTP tokens sit beside the
/// workload; otherwise the driver's own.
pub fn namespace_for(parameters: &BTreeMap<String, String>, default: &str) -> String {
    parameters
        .get(PVC_NAMESPACE)
        .filter(|ns| is_dns_label(ns))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

/// The capacity to create: the required bytes (at least), else the default (within the
/// limit). `OutOfRange` when the limit is below the requirement.
pub fn capacity_for(range: Option<&CapacityRange>) -> Result<u64, RequestError> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(RequestError::Capacity("negative bytes".into()));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(RequestError::Capacity(format!(
            "required {required} bytes exceeds the limit of {limit}"
        )));
    }
    Ok(match (required, limit) {
        (0, 0) => DEFAULT_CAPACITY,
        (0, limit) => DEFAULT_CAPACITY.min(limit),
        (required, _) => required,
    })
}

/// A byte count as a quantity, in the largest binary unit that divides it (`1Gi`, `1536Mi`,
/// `1000`), as people write them.
pub fn quantity(bytes: u64) -> Quantity {
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes > 0 && bytes.is_multiple_of(1u64 << shift) {
            return Quantity(format!("{}{unit}", bytes >> shift));
        }
    }
    Quantity(bytes.to_string())
}

/// Checks volume capabilities: mount volumes (any file system type, since NFS decides) with
/// any access mode; raw block is refused. Returns whether any mode writes.
pub fn check_capabilities(caps: &[VolumeCapability]) -> Result<bool, RequestError> {
    if caps.is_empty() {
        return Err(RequestError::Capability(
            "no volume capabilities given".into(),
        ));
    }
    let mut writes = false;
    for cap in caps {
        match &cap.access_type {
            Some(AccessType::Mount(mount)) => {
                if !mount.fs_type.is_empty() && mount.fs_type != "nfs" {
                    return Err(RequestError::Capability(format!(
                        "fs_type {:?}: a zeronas share is NFS",
                        mount.fs_type
                    )));
                }
            }
            Some(AccessType::Block(_)) => {
                return Err(RequestError::Capability(
                    "raw block volumes are not offered: a zeronas share is a file system".into(),
                ));
            }
            None => {
                return Err(RequestError::Capability(
                    "access_type (mount) missing".into(),
                ));
            }
        }
        let mode = cap
            .access_mode
            .as_ref()
            .and_then(|m| Mode::try_from(m.mode).ok())
            .unwrap_or(Mode::Unknown);
        writes |= match mode {
            Mode::Unknown => {
                return Err(RequestError::Capability("access mode missing".into()));
            }
            Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly => false,
            Mode::SingleNodeWriter
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter
            | Mode::MultiNodeSingleWriter
            | Mode::MultiNodeMultiWriter => true,
        };
    }
    Ok(writes)
}

fn parameter<T: serde::de::DeserializeOwned>(key: &str, value: &str) -> Result<T, RequestError> {
    // Enum-valued parameters are written bare (`Squash`), lists as JSON.
    let json = if value.trim_start().starts_with(['[', '{', '"']) {
        value.to_owned()
    } else {
        serde_json::Value::String(value.to_owned()).to_string()
    };
    serde_json::from_str(&json).map_err(|e| RequestError::Parameter {
        key: key.to_owned(),
        why: e.to_string(),
    })
}

fn flag(key: &str, value: &str) -> Result<bool, RequestError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(RequestError::Parameter {
            key: key.to_owned(),
            why: format!("{other:?} is not true or false"),
        }),
    }
}

/// The NasVolume spec for a request: the StorageClass parameters (unknown ones refused), the
/// capacity, `consumerClaim: false` (external-provisioner makes the PersistentVolume) and
/// `deletionPolicy: Delete` unless the class says otherwise (DeleteVolume means the data goes).
pub fn spec_for(
    parameters: &BTreeMap<String, String>,
    capacity: u64,
    writes: bool,
) -> Result<NasVolumeSpec, RequestError> {
    let mut spec: NasVolumeSpec = serde_json::from_value(serde_json::json!({
        "capacity": quantity(capacity),
        "consumerClaim": false,
        "deletionPolicy": "Delete",
    }))
    .map_err(|e| RequestError::Capacity(e.to_string()))?;
    let mut resources = DataplaneResources::default();
    for (key, value) in parameters {
        if key.starts_with(RESERVED_PREFIX) {
            continue;
        }
        match key.as_str() {
            "storageClassName" => spec.storage_class_name = Some(value.clone()),
            "protocols" => {
                spec.protocols = value
                    .split(',')
                    .map(|p| parameter::<Protocol>(key, p.trim()))
                    .collect::<Result<_, _>>()?;
                if spec.protocols.is_empty() {
                    return Err(RequestError::Parameter {
                        key: key.clone(),
                        why: "at least one of nfs, http".into(),
                    });
                }
                // A provisioned share has no authorized keys Secret to name: SFTP is for
                // NasVolumes written by hand.
                if spec.protocols.contains(&Protocol::Sftp) {
                    return Err(RequestError::Parameter {
                        key: key.clone(),
                        why: "sftp is not available to provisioned volumes (it needs a NasVolume with sftp.authorizedKeysSecret); use nfs, http".into(),
                    });
                }
            }
            "clients" => spec.clients = parameter::<Vec<ClientRule>>(key, value)?,
            "identity" => spec.identity = parameter::<Identity>(key, value)?,
            "readOnly" => spec.read_only = flag(key, value)?,
            "cpu" => resources.cpu = Quantity(value.clone()),
            "memory" => resources.memory = Quantity(value.clone()),
            "cpuPinning" => spec.cpu_pinning = flag(key, value)?,
            "deletionPolicy" => spec.deletion_policy = parameter::<DeletionPolicy>(key, value)?,
            other => {
                return Err(RequestError::Parameter {
                    key: other.to_owned(),
                    why: format!("unknown; known parameters: {}", PARAMETERS.join(", ")),
                });
            }
        }
    }
    for (key, q) in [("cpu", &resources.cpu), ("memory", &resources.memory)] {
        if zeronas_operator::quantity::to_units(q).is_none_or(|n| n == 0) {
            return Err(RequestError::Parameter {
                key: key.into(),
                why: format!("{:?} is not a positive quantity", q.0),
            });
        }
    }
    spec.resources = resources;
    if !spec.protocols.contains(&Protocol::Nfs) {
        return Err(RequestError::Parameter {
            key: "protocols".into(),
            why: "must include nfs: the nodes mount the share over NFS".into(),
        });
    }
    if spec.read_only && writes {
        return Err(RequestError::Capability(
            "a writer access mode was asked of a readOnly class".into(),
        ));
    }
    Ok(spec)
}

/// The digest stored in [`ANNOTATION_REQUEST`]: the parameters that shape the spec (not the
/// ones external-provisioner adds per claim) and the capacity asked for.
pub fn request_digest(parameters: &BTreeMap<String, String>, capacity: u64) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in parameters {
        if !key.starts_with(RESERVED_PREFIX) {
            hasher.update((key.len() as u64).to_le_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        }
    }
    hasher.update(capacity.to_le_bytes());
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The NasVolume for a request.
pub fn nasvolume(
    id: &VolumeId,
    csi_name: &str,
    parameters: &BTreeMap<String, String>,
    spec: NasVolumeSpec,
    digest: String,
) -> NasVolume {
    let mut annotations = BTreeMap::from([
        (ANNOTATION_NAME.to_owned(), csi_name.to_owned()),
        (ANNOTATION_REQUEST.to_owned(), digest),
    ]);
    if let (Some(ns), Some(name)) = (parameters.get(PVC_NAMESPACE), parameters.get(PVC_NAME)) {
        annotations.insert(ANNOTATION_PVC.to_owned(), format!("{ns}/{name}"));
    }
    let mut nv = NasVolume::new(&id.name, spec);
    nv.metadata = ObjectMeta {
        name: Some(id.name.clone()),
        namespace: Some(id.namespace.clone()),
        labels: Some(BTreeMap::from([(
            LABEL_PROVISIONED.to_owned(),
            "true".to_owned(),
        )])),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    nv
}

/// Whether the driver made `nv` (it carries [`LABEL_PROVISIONED`]).
pub fn provisioned(nv: &NasVolume) -> bool {
    nv.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_PROVISIONED))
}

/// What a found NasVolume says about a CreateVolume of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// The same request: wait for it and answer as for a new one.
    Same,
    /// Made for another name or with other parameters: ALREADY_EXISTS, with the reason.
    Different(String),
}

/// Compares a NasVolume found under the volume's name with the request.
pub fn compare(nv: &NasVolume, csi_name: &str, digest: &str) -> Existing {
    let annotations = nv.metadata.annotations.clone().unwrap_or_default();
    match (
        annotations.get(ANNOTATION_NAME),
        annotations.get(ANNOTATION_REQUEST),
    ) {
        (Some(name), _) if name != csi_name => {
            Existing::Different(format!("the NasVolume was made for the volume {name:?}"))
        }
        (Some(_), Some(found)) if found == digest => Existing::Same,
        (Some(_), _) => Existing::Different(
            "a volume of this name exists with other parameters or another capacity".into(),
        ),
        (None, _) => Existing::Different(
            "a NasVolume of this name exists that the CSI driver did not make".into(),
        ),
    }
}

/// Where a NasVolume stands for CreateVolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Served; the NFS server address (the Service's ClusterIP) when NFS is served.
    Ready {
        /// `IP` of the NFS endpoint.
        nfs_server: Option<String>,
    },
    /// Not yet: the Ready condition's message.
    Waiting(String),
    /// Being deleted: a new volume of this name must wait until it is gone.
    Deleting,
}

/// Reads a NasVolume's status: Ready for the current generation, with its endpoint.
pub fn readiness(nv: &NasVolume) -> Readiness {
    if nv.metadata.deletion_timestamp.is_some() {
        return Readiness::Deleting;
    }
    let Some(status) = nv.status.as_ref() else {
        return Readiness::Waiting("the operator has not reported on it yet".into());
    };
    let current = status.observed_generation == nv.metadata.generation;
    if current && status.phase == Some(Phase::Ready) {
        let nfs_server = status
            .endpoints
            .as_ref()
            .and_then(|e| e.nfs.as_deref())
            .and_then(|e| e.strip_suffix(":/"))
            .map(str::to_owned);
        return Readiness::Ready { nfs_server };
    }
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "no Ready condition yet".into());
    Readiness::Waiting(message)
}

/// The capacity a NasVolume serves, in bytes.
pub fn capacity_of(nv: &NasVolume) -> u64 {
    zeronas_operator::quantity::to_units(&nv.spec.capacity).unwrap_or(0)
}

/// `volume_context` keys NodePublishVolume reads.
pub mod context {
    /// The NFS server (the share's Service ClusterIP when the volume was made).
    pub const SERVER: &str = "server";
    /// The share's Service, `<name>.<namespace>.svc`: the node resolves it when it can,
    /// so a Service made anew (another ClusterIP) is still found.
    pub const SERVICE: &str = "service";
    /// The export path (`/`).
    pub const SHARE: &str = "share";
    /// The NasVolume, `<namespace>/<name>`.
    pub const NASVOLUME: &str = "nasVolume";
    /// Whether the share is read-only (`true`/`false`).
    pub const READ_ONLY: &str = "readOnly";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn mount(mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn ids_round_trip_and_refuse_what_the_driver_never_made() {
        let id = VolumeId::parse("team-a/pvc-1").unwrap();
        assert_eq!(id.namespace, "team-a");
        assert_eq!(id.to_string(), "team-a/pvc-1");
        for bad in ["", "x", "a/b/c", "/b", "a/", "A/b", "a/b.c", "a/-b"] {
            assert_eq!(VolumeId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn claim_names_are_kept_and_long_or_odd_names_hashed() {
        let pv = "pvc-0b7c2f4e-1111-2222-3333-444455556666";
        assert_eq!(nasvolume_name(pv), pv);
        let long = "x".repeat(128);
        let hashed = nasvolume_name(&long);
        assert!(hashed.starts_with("csi-") && hashed.len() == 36, "{hashed}");
        assert!(is_dns_label(&hashed));
        assert_eq!(hashed, nasvolume_name(&long), "stable");
        assert_ne!(nasvolume_name("Sanity-A"), nasvolume_name("Sanity-B"));
        assert!(nasvolume_name("Sanity-A").starts_with("csi-"), "upper case");
    }

    #[test]
    fn the_claims_namespace_wins_when_passed() {
        let p = params(&[(PVC_NAMESPACE, "shop"), (PVC_NAME, "data")]);
        assert_eq!(namespace_for(&p, "zeronas-system"), "shop");
        assert_eq!(
            namespace_for(&params(&[]), "zeronas-system"),
            "zeronas-system"
        );
    }

    #[test]
    fn capacity_ranges() {
        let range = |required, limit| CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        };
        assert_eq!(capacity_for(None).unwrap(), DEFAULT_CAPACITY);
        assert_eq!(capacity_for(Some(&range(5 << 30, 0))).unwrap(), 5 << 30);
        assert_eq!(capacity_for(Some(&range(0, 1 << 20))).unwrap(), 1 << 20);
        assert!(capacity_for(Some(&range(2 << 30, 1 << 30))).is_err());
        assert!(capacity_for(Some(&range(-1, 0))).is_err());
        assert_eq!(quantity(1 << 30).0, "1Gi");
        assert_eq!(quantity(1536 << 20).0, "1536Mi");
        assert_eq!(quantity(1000).0, "1000");
    }

    #[test]
    fn capabilities() {
        assert_eq!(
            check_capabilities(&[mount(Mode::MultiNodeMultiWriter)]),
            Ok(true)
        );
        assert_eq!(
            check_capabilities(&[mount(Mode::MultiNodeReaderOnly)]),
            Ok(false)
        );
        assert!(check_capabilities(&[]).is_err());
        assert!(check_capabilities(&[mount(Mode::Unknown)]).is_err());
        let block = VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        };
        assert!(check_capabilities(&[block]).is_err());
        let ext4 = VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..MountVolume::default()
            })),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        };
        assert!(check_capabilities(&[ext4]).is_err());
    }

    #[test]
    fn parameters_map_to_the_spec() {
        let p = params(&[
            ("storageClassName", "fast-ssd"),
            ("protocols", "nfs"),
            ("clients", r#"[{"cidr":"10.0.0.0/8","squash":"Root"}]"#),
            ("identity", "Squash"),
            ("cpu", "2"),
            ("memory", "1Gi"),
            ("cpuPinning", "true"),
            (PVC_NAME, "data"),
        ]);
        let spec = spec_for(&p, 5 << 30, true).unwrap();
        assert_eq!(spec.capacity.0, "5Gi");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(spec.protocols, vec![Protocol::Nfs]);
        assert_eq!(spec.clients.len(), 1);
        assert_eq!(spec.identity, Identity::Squash);
        assert_eq!(spec.resources.cpu.0, "2");
        assert!(spec.cpu_pinning);
        assert!(!spec.consumer_claim, "external-provisioner makes the PV");
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
        let defaults = spec_for(&params(&[]), 1 << 30, true).unwrap();
        assert_eq!(defaults.protocols, vec![Protocol::Nfs, Protocol::Http]);
        assert_eq!(defaults.identity, Identity::Posix);
    }

    #[test]
    fn bad_parameters_say_which_and_why() {
        for (key, value) in [
            ("colour", "blue"),
            ("protocols", "nfs,smb"),
            ("protocols", "http"),
            ("protocols", "nfs,sftp"),
            ("identity", "Root"),
            ("readOnly", "yes"),
            ("clients", "10.0.0.0/8"),
            ("memory", "lots"),
            ("cpu", "0"),
        ] {
            let err = spec_for(&params(&[(key, value)]), 1 << 30, true).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        let err = spec_for(&params(&[("readOnly", "true")]), 1 << 30, true).unwrap_err();
        assert!(matches!(err, RequestError::Capability(_)));
        assert!(spec_for(&params(&[("readOnly", "true")]), 1 << 30, false).is_ok());
    }

    #[test]
    fn the_same_request_is_recognised_and_a_different_one_is_not() {
        let p = params(&[("protocols", "nfs"), (PVC_NAME, "a")]);
        let digest = request_digest(&p, 1 << 30);
        // Per-claim metadata does not change the request.
        assert_eq!(
            digest,
            request_digest(&params(&[("protocols", "nfs"), (PVC_NAME, "b")]), 1 << 30)
        );
        assert_ne!(digest, request_digest(&p, 2 << 30));
        assert_ne!(digest, request_digest(&params(&[]), 1 << 30));
        let id = VolumeId::parse("ns/v").unwrap();
        let spec = spec_for(&p, 1 << 30, true).unwrap();
        let nv = nasvolume(&id, "v", &p, spec, digest.clone());
        assert_eq!(compare(&nv, "v", &digest), Existing::Same);
        assert!(matches!(compare(&nv, "v", "other"), Existing::Different(_)));
        assert!(matches!(compare(&nv, "w", &digest), Existing::Different(_)));
        let mut foreign = nv.clone();
        foreign.metadata.annotations = None;
        assert!(matches!(
            compare(&foreign, "v", &digest),
            Existing::Different(_)
        ));
    }

    #[test]
    fn ready_means_ready_for_the_current_generation() {
        let id = VolumeId::parse("ns/v").unwrap();
        let spec = spec_for(&params(&[]), 1 << 30, true).unwrap();
        let mut nv = nasvolume(&id, "v", &params(&[]), spec, String::new());
        nv.metadata.generation = Some(2);
        assert!(matches!(readiness(&nv), Readiness::Waiting(_)));
        let status: zeronas_operator::crd::NasVolumeStatus =
            serde_json::from_value(serde_json::json!({
                "phase": "Ready",
                "observedGeneration": 1,
                "conditions": [],
                "endpoints": {"nfs": "10.0.0.7:/"},
            }))
            .unwrap();
        nv.status = Some(status);
        assert!(matches!(readiness(&nv), Readiness::Waiting(_)), "stale");
        nv.status.as_mut().unwrap().observed_generation = Some(2);
        assert_eq!(
            readiness(&nv),
            Readiness::Ready {
                nfs_server: Some("10.0.0.7".into())
            }
        );
    }
}

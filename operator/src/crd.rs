//! The `NasVolume` custom resource (`zeronas.io/v1alpha1`).
//!
//! Validation lives in the schema: CEL rules (`x-kubernetes-validations`) reject a
//! fractional CPU with `cpuPinning`, a shrinking `capacity`, malformed CIDRs, and changes
//! to fields the backing objects cannot follow (`storageClassName`, `readOnly`) at the
//! apiserver, before the operator sees the object.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A share: a dedicated dataplane serving a backing volume over NFSv3 and HTTP.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "zeronas.io",
    version = "v1alpha1",
    kind = "NasVolume",
    plural = "nasvolumes",
    shortname = "nasvol",
    namespaced,
    status = "NasVolumeStatus",
    cel,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Capacity","type":"string","jsonPath":".spec.capacity"}"#,
    printcolumn = r#"{"name":"Claim","type":"string","jsonPath":".status.claimName"}"#,
    printcolumn = r#"{"name":"SFTP","type":"string","jsonPath":".status.endpoints.sftp"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!self.cpuPinning || quantity(string(self.resources.cpu)).isInteger()")
    .message("cpuPinning needs a whole number of CPUs in resources.cpu (e.g. 2, not 1500m)")
    .reason(kube::core::Reason::FieldValueInvalid)
    .field_path(".resources.cpu"))]
#[x_kube(validation = Rule::new("!has(self.identity) || self.identity != 'Squash' || !has(self.shareRoot) || ((!has(self.shareRoot.uid) || self.shareRoot.uid > 0) && (!has(self.shareRoot.gid) || self.shareRoot.gid > 0))")
    .message("identity Squash runs the dataplane as shareRoot.uid/gid, which must not be 0 (use identity Posix for per-caller ownership)")
    .reason(kube::core::Reason::FieldValueInvalid)
    .field_path(".shareRoot"))]
#[x_kube(validation = Rule::new("!has(self.identity) || self.identity != 'Squash' || !has(self.shareRoot) || !has(self.shareRoot.mode)")
    .message("shareRoot.mode applies to identity Posix only; with Squash the pod's fsGroup makes the root writable")
    .reason(kube::core::Reason::FieldValueForbidden)
    .field_path(".shareRoot.mode"))]
// A claim's storage class and a PV's access modes and NFS source cannot change once created
// (the apiserver refuses), so the NasVolume refuses the change up front instead of failing
// every reconcile afterwards. Spec-level rules, so adding or removing the field counts too.
#[x_kube(validation = Rule::new("(has(self.storageClassName) ? self.storageClassName : '') == (has(oldSelf.storageClassName) ? oldSelf.storageClassName : '')")
    .message("storageClassName cannot change after creation (the backing claim's class is immutable)")
    .reason(kube::core::Reason::FieldValueForbidden)
    .field_path(".storageClassName"))]
#[x_kube(validation = Rule::new("(!has(self.consumerClaim) || self.consumerClaim) == (!has(oldSelf.consumerClaim) || oldSelf.consumerClaim)")
    .message("consumerClaim cannot change after creation (the share's PV and claim would be left behind or appear under a running workload)")
    .reason(kube::core::Reason::FieldValueForbidden)
    .field_path(".consumerClaim"))]
#[x_kube(validation = Rule::new("(has(self.readOnly) && self.readOnly) == (has(oldSelf.readOnly) && oldSelf.readOnly)")
    .message("readOnly cannot change after creation (the share's PV and claim access modes are immutable)")
    .reason(kube::core::Reason::FieldValueForbidden)
    .field_path(".readOnly"))]
#[x_kube(validation = Rule::new("!self.protocols.exists(p, p == 'sftp') || (has(self.sftp) && has(self.sftp.authorizedKeysSecret))")
    .message("protocol sftp needs sftp.authorizedKeysSecret: the Secret whose authorized_keys may log in")
    .reason(kube::core::Reason::FieldValueRequired)
    .field_path(".sftp.authorizedKeysSecret"))]
#[serde(rename_all = "camelCase")]
pub struct NasVolumeSpec {
    /// Size of the backing volume, and the quota the dataplane enforces (e.g. `100Gi`). May
    /// grow (the backing claim is resized) but never shrink.
    #[x_kube(validation = Rule::new("quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0")
        .message("capacity may grow but never shrink"))]
    #[x_kube(validation = Rule::new("quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("capacity must be positive"))]
    pub capacity: Quantity,

    /// StorageClass of the backing claim; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Protocols the share is served over (at least one).
    #[serde(default = "default_protocols")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("size(self) >= 1").message("at least one protocol is needed"))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q == p))").message("protocols must not repeat"))]
    pub protocols: Vec<Protocol>,

    /// Serve the share read-only to every client.
    #[serde(default)]
    pub read_only: bool,

    /// Publish the share as the PV/PVC pair `<name>` that pods in this namespace mount
    /// (default). `false` when something else publishes it: the CSI driver sets it on the
    /// NasVolumes it provisions, whose PersistentVolumes the external-provisioner makes and
    /// binds to the user's own claim. Cannot change after creation.
    #[serde(default = "default_true")]
    pub consumer_claim: bool,

    /// Who may mount over NFS, and how; the first rule matching a client wins, and a client
    /// matching none is refused. Default (empty): every client that can reach the Service
    /// (NFS mounts come from the nodes), read-write unless `readOnly`, root not squashed
    /// (like Longhorn and Rook NFS volumes: a root container may chown, as on any volume).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub clients: Vec<ClientRule>,

    /// Whose identity file operations run under. `Posix` (default): each NFS caller's own
    /// uid and groups (after the client rule's squashing), checked by the kernel, so `ls -l`
    /// shows who wrote what and chown/chmod work; the dataplane pod runs as uid 0 with the
    /// capabilities CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETUID and SETGID (Pod Security
    /// Standard `baseline`). `Squash`: every caller acts as the dataplane's non-root user
    /// (`shareRoot.uid`/`gid`, default 65532), so every client can read and write every
    /// file and every file belongs to that user; the pod needs no capability (`restricted`).
    /// Switching an existing share from Posix to Squash needs its files chowned to that user.
    #[serde(default)]
    pub identity: Identity,

    /// The share root's owner and mode. Posix: applied when the share is new (empty), default
    /// uid 0, gid 0, mode `0777`, so pods of any uid can create their files, as on an
    /// emptyDir. Squash: the dataplane runs as `uid`/`gid` (default 65532) and `gid` is the
    /// pod's fsGroup, which makes the volume writable; `mode` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_root: Option<ShareRoot>,

    /// CPU and memory of the dataplane pod; requests equal limits, so the pod is Guaranteed.
    #[serde(default)]
    pub resources: DataplaneResources,

    /// Pin one dataplane worker per CPU (needs a whole number of CPUs and the static CPU
    /// manager on the node to get exclusive cores).
    #[serde(default)]
    pub cpu_pinning: bool,

    /// How bytes move.
    #[serde(default)]
    pub data_path: DataPath,

    /// Dataplane image override (default: the operator's configured image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Node selector for the dataplane pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations for the dataplane pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// What happens to the backing claim (the data) when the NasVolume is deleted. `Retain`
    /// (default): the claim is released (its owner reference removed, labelled
    /// `zeronas.io/retained: "true"`) and kept; a new NasVolume of the same name in the same
    /// namespace adopts it. `Delete`: the claim is garbage-collected with the NasVolume.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// The HTTP file API's access rules.
    #[serde(default)]
    pub http: HttpAccess,

    /// The SFTP export (with `sftp` in `protocols`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp: Option<SftpAccess>,

    /// Pods (in the NasVolume's namespace) that may reach the NFS port directly, besides the
    /// `clients` networks (the NetworkPolicy's pod peer). Kernel NFS mounts come from the
    /// nodes and are matched by `clients`; this is for pods running their own NFS client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_client_pod_selector: Option<LabelSelector>,
}

/// What deleting the NasVolume does to the data.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the backing claim (released, labelled, adoptable by a NasVolume of the same name).
    #[default]
    Retain,
    /// Delete the backing claim with the NasVolume.
    Delete,
}

/// Access to the HTTP file API. Every request needs a bearer token from the Secret named in
/// `status.httpTokenSecret` (`token`: read-write, `read-token`: read-only), unless
/// `anonymousRead` allows reads without one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpAccess {
    /// Serve reads (GET, HEAD, listings) without a token; writes still need `token`.
    #[serde(default)]
    pub anonymous_read: bool,
    /// Namespaces whose pods may reach the HTTP port (the NetworkPolicy's namespace peers).
    /// Default (empty): only the NasVolume's own namespace.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub allowed_namespaces: Vec<String>,
}

/// Access to the SFTP export. The dataplane's host key is generated once per NasVolume
/// into the Secret `status.sftpHostKeySecret` and kept, so clients' `known_hosts` stay valid
/// across restarts and reschedules.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SftpAccess {
    /// A Secret in the NasVolume's namespace whose key `authorized_keys` lists the public
    /// keys that may log in (OpenSSH format; per-key options `uid=`, `gid=`, `groups=`,
    /// `read-only`). Changes take effect without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub authorized_keys_secret: Option<String>,
    /// Namespaces whose pods may reach the SFTP port (the NetworkPolicy's namespace peers;
    /// default: only the NasVolume's own).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub allowed_namespaces: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_protocols() -> Vec<Protocol> {
    vec![Protocol::Nfs, Protocol::Http]
}

/// A protocol the share is served over.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// NFSv3 (with MOUNT on the same port).
    Nfs,
    /// The HTTP file API.
    Http,
    /// SFTP (SSH with the `sftp` subsystem only).
    Sftp,
}

/// One client rule: a network, what it may do, and how root is mapped.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientRule {
    /// The client network in CIDR notation (e.g. `10.0.0.0/8`, `fd00::/8`).
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("cidr must be a valid CIDR such as 10.0.0.0/8"))]
    pub cidr: String,
    /// `ReadWrite` or `ReadOnly`.
    #[serde(default)]
    pub access: Access,
    /// `Root` (map uid 0 to nobody), `None`, or `All` (map everyone to nobody).
    #[serde(default)]
    pub squash: Squash,
}

/// Access granted to a client network.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Access {
    /// Read and write.
    #[default]
    ReadWrite,
    /// Read only.
    ReadOnly,
}

/// Identity squashing for a client network (identity `Posix`; with `Squash` every caller
/// acts as the dataplane's user anyway).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Squash {
    /// Map uid/gid 0 to nobody (65534).
    Root,
    /// Keep every identity (the default: root in a pod is root on its volume, as with
    /// Longhorn and Rook NFS; limit who reaches the share with `clients`).
    #[default]
    None,
    /// Map every identity to nobody.
    All,
}

/// Whose identity file operations run under.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Identity {
    /// Each caller's own identity, checked by the kernel (pod: uid 0 with six capabilities).
    #[default]
    Posix,
    /// Every caller acts as the dataplane's non-root user (pod: no capabilities).
    Squash,
}

/// Owner and mode of the share root.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShareRoot {
    /// Owner uid (Posix default 0; Squash: the dataplane's uid, default 65532).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub uid: Option<i64>,
    /// Group gid (Posix default 0; Squash: the dataplane's gid and fsGroup, default 65532).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub gid: Option<i64>,
    /// Octal permission bits, Posix only (default `0777`; e.g. `2775`, `0755`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0?[0-7]{3,4}$"))]
    pub mode: Option<String>,
}

/// CPU and memory of the dataplane container (requests == limits).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneResources {
    /// CPUs (e.g. `2` or `500m`); a whole number when `cpuPinning` is on.
    #[serde(default = "default_cpu")]
    pub cpu: Quantity,
    /// Memory (e.g. `1Gi`); caches and buffers stay inside it.
    #[serde(default = "default_memory")]
    pub memory: Quantity,
}

fn default_cpu() -> Quantity {
    Quantity("1".into())
}

fn default_memory() -> Quantity {
    Quantity("512Mi".into())
}

impl Default for DataplaneResources {
    fn default() -> Self {
        Self {
            cpu: default_cpu(),
            memory: default_memory(),
        }
    }
}

/// How the dataplane moves bytes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataPath {
    /// `Auto` (sendfile, small bodies by writev), `Sendfile` (always), or `Copy` (never).
    #[serde(default)]
    pub zero_copy: ZeroCopy,
    /// `Auto` (use RDMA when available), `Disabled`, or `Required`.
    #[serde(default)]
    pub rdma: Rdma,
}

/// The HTTP zero-copy mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// sendfile for bodies over 16 KiB, writev below.
    #[default]
    Auto,
    /// sendfile for every body.
    Sendfile,
    /// User-space copies only.
    Copy,
}

/// RDMA policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rdma {
    /// Use RDMA when a device and transport exist.
    #[default]
    Auto,
    /// Never.
    Disabled,
    /// Fail unless RDMA is usable.
    Required,
}

/// Observed state of a NasVolume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NasVolumeStatus {
    /// `Pending`, `Provisioning`, `Ready`, `Degraded` or `Deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `StorageBound`, `DataplaneAvailable`, `ShareBound`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The claim consumer pods mount (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// Where the share is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// The data path in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path: Option<DataPathStatus>,
    /// The Secret holding the HTTP bearer tokens (`token`, `read-token`), same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_token_secret: Option<String>,
    /// The Secret holding the SFTP host key (`ssh_host_ed25519_key`), same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp_host_key_secret: Option<String>,
}

/// Lifecycle phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, nothing created yet.
    Pending,
    /// Objects created, waiting for storage and the dataplane.
    Provisioning,
    /// Serving.
    Ready,
    /// Was serving or cannot be provisioned; see the conditions.
    Degraded,
    /// Being deleted.
    Deleting,
}

impl Phase {
    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Deleting => "Deleting",
        }
    }
}

/// Service endpoints of the share.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Endpoints {
    /// `IP:/` for NFS clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<String>,
    /// Base URL of the HTTP file API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `sftp://IP:2222/` for SFTP clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp: Option<String>,
}

/// The data path the dataplane reports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataPathStatus {
    /// `tcp` today.
    pub transport: String,
    /// RDMA availability as configured: `Auto`, `Disabled`, `Required`.
    pub rdma: String,
}

//! zeronas CSI driver: a PersistentVolumeClaim of class `zeronas` becomes a NasVolume (the
//! operator then serves it), and kubelet's mounts of it become NFSv3 mounts on the node.
//!
//! One binary, two modes (`--mode controller|node`), each a gRPC server on a unix socket
//! that the upstream sidecars (external-provisioner, external-resizer, node-driver-registrar)
//! and kubelet call:
//! - [`identity`]: GetPluginInfo, GetPluginCapabilities, Probe (both modes).
//! - [`controller`]: CreateVolume/DeleteVolume/ControllerExpandVolume and friends, by
//!   creating, deleting and growing NasVolumes on the apiserver.
//! - [`node`]: NodePublishVolume/NodeUnpublishVolume/NodeGetVolumeStats, by mount(2).
//! - [`volume`]: pure rules from requests to NasVolumes (names, ids, parameters).
//! - [`mount`]: pure rules for mount options and `/proc/self/mountinfo`.
//! - [`deadline`]: the caller's gRPC deadline.

pub mod controller;
pub mod deadline;
pub mod identity;
pub mod mount;
pub mod node;
pub mod volume;

/// The CSI v1 types and services, compiled from the specification's `csi.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod csi {
    tonic::include_proto!("csi.v1");
}

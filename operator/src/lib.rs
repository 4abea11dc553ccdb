//! zeronas operator: turns each `NasVolume` into a dataplane Deployment, its Service, a
//! backing PVC and a PV/PVC pair that consumer pods mount.
//!
//! This crate starts with the naming scheme of the owned objects (see
//! `ARCHITECTURE.md`, "What the operator creates"); the CRD types and the reconciler build on
//! it.

pub mod names;

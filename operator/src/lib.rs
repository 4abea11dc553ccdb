//! zeronas operator: turns each `NasVolume` into a dataplane Deployment, its Service, a
//! backing PVC and a PV/PVC pair that consumer pods mount.
//!
//! - [`crd`]: the NasVolume types and their schema validation.
//! - [`names`]: the derived names and labels of owned objects.
//! - [`reconcile`]: pure builders, one per owned object, and status computation.
//! - [`controller`]: server-side apply, finalizer, status, events, backoff.
//! - [`cache`]: the watches and reflector stores the controller reads instead of the apiserver.
//! - [`api_client`]: the client's rate limit and request counting.
//! - [`leader`]: leader election on a Lease.
//! - [`metrics`]: reconcile and apiserver request metrics.
//! - [`render`]: `zeronas-operator render`, the objects for one NasVolume as YAML.

pub mod api_client;
pub mod cache;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod quantity;
pub mod reconcile;
pub mod render;

//! zeronas dataplane: serves one folder as a share over an HTTP file API.
//!
//! Layers, from the outside in: [`server`] accepts connections and drains them on
//! shutdown; [`http::service`] routes requests; [`http::api`] performs the file operations
//! on a [`share::Share`]; [`http::plan`] holds every HTTP rule as pure functions.

pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod share;
pub mod usage;

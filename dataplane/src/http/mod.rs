//! The HTTP file API: a pure planner and the hyper service that executes its plans.

pub mod api;
pub mod body;
pub mod error;
pub mod plan;
pub mod service;

pub use error::ApiError;

//! The HTTP file API: a pure planner, the hyper service that executes its plans, and the
//! zero-copy HTTP/1.1 front end that executes them with sendfile and splice.

pub mod api;
pub mod app;
pub mod auth;
pub mod body;
pub mod error;
pub mod frontend;
pub mod observe;
pub mod plan;
pub mod service;
pub mod ui;

pub use error::ApiError;

//! The `wharf` binary's library: configuration layering, role start-up and telemetry. `main.rs`
//! is the CLI over it; `test-cluster` starts the same roles in-process.

pub mod admin_cli;
pub mod certs;
pub mod config;
pub mod dev_cluster;
pub mod heap;
pub mod lifecycle_cli;
pub mod local;
pub mod mirror_cli;
pub mod placement_cli;
pub mod proxy_cli;
pub mod replication_cli;
pub mod roles;
pub mod telemetry;
pub mod trace;

pub use config::WharfConfig;
pub use roles::{start_blob, start_gateway, start_meta, start_serve, Running, StartError};

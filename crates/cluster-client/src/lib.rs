//! gRPC clients that implement the `cluster-api` traits, so the gateway (which knows nothing of
//! tonic) can talk to a real cluster: [`MetaClient`] follows the Raft leader and retries what is
//! safe to retry; [`AdminClient`] does the same for the cluster administration service;
//! [`BlobClient`] talks to one blob node; [`GrpcBlobNodes`] resolves node ids through the
//! cluster map kept in meta. Every call carries the caller's trace context ([`TracedChannel`]).
//!
//! Must not depend on openraft or RocksDB.

mod admin;
mod blob;
mod channel;
mod meta;
mod nodes;
mod trace;

pub use admin::AdminClient;
pub use blob::BlobClient;
pub use channel::{cluster_endpoint, cluster_tls, lazy_channel, set_cluster_tls, ChannelError};
pub use meta::{MetaClient, RetryPolicy};
pub use nodes::GrpcBlobNodes;
pub use trace::{inject_current_context, traced, InjectTraceContext, TracedChannel};

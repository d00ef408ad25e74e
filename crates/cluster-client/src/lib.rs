//! gRPC clients that implement the `cluster-api` traits, so the gateway (which knows nothing of
//! tonic) can talk to a real cluster: [`MetaClient`] follows the Raft leader and retries what is
//! safe to retry; [`BlobClient`] talks to one blob node; [`GrpcBlobNodes`] resolves node ids
//! through the cluster map kept in meta.
//!
//! Must not depend on openraft or RocksDB.

mod blob;
mod channel;
mod meta;
mod nodes;

pub use blob::BlobClient;
pub use channel::{lazy_channel, ChannelError};
pub use meta::{MetaClient, RetryPolicy};
pub use nodes::GrpcBlobNodes;

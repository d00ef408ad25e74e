//! The contracts between Wharf's roles: [`MetaApi`] (the Raft-replicated metadata service) and
//! [`BlobApi`] (one blob storage node), their domain types and error kinds.
//!
//! The gateway is written against these traits only; `cluster-client` implements them over gRPC and
//! `meta-node` / `blob-node` implement them locally. This crate must not depend on tonic, prost,
//! openraft, RocksDB or any other backend (STYLE.md rule 4).

mod auth;
mod blob;
mod blob_url;
mod error;
mod lifecycle;
mod mac;
mod meta;
mod placement;
mod placement_status;
mod proxy;
mod replication;
mod ring;
mod types;
mod upload_token;

#[cfg(feature = "fake")]
pub mod fake;

pub use auth::*;
pub use blob::{declared_length, with_declared_length, BlobApi, BlobNodes, ByteStream};
pub use blob_url::{
    sign_blob_query, verify_blob_query, BlobUrlError, BlobUrlKeys, BLOB_URL_KEY_BYTES,
};
pub use error::{is_out_of_space, BlobError, ErrorKind, MetaError};
pub use lifecycle::{RetentionAction, RetentionRule};
pub use meta::MetaApi;
pub use placement::{
    delete_placement_rule, placement_sets, put_placement_rule, PlacementRule, RepoPlacement,
    MAX_RULE_REPLICAS,
};
pub use placement_status::{PlacementStatus, RulePlacementStatus};
pub use proxy::{
    delete_proxy, mirror, proxy_for, put_proxy, under_proxy, FetchLease, ProxyUpstream, ProxyView,
    DEFAULT_CACHE_TTL_SECS, DEFAULT_TAG_TTL_SECS, MAX_CA_PEM_BYTES, MAX_TAG_TTL_SECS,
};
pub use replication::{
    delete_replication_rule, put_replication_rule, replication_report, ReplicationBacklog,
    ReplicationMode, ReplicationReport, ReplicationRule, ReplicationStatus, ReplicationView,
    MAX_STATUS_ERRORS,
};
pub use ring::{Placement, RecordOwners};
pub use types::*;
pub use upload_token::{UploadToken, TOKEN_BYTES, UPLOAD_KEY_BYTES};

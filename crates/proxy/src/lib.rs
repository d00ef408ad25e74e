//! The pull-through cache (issue 16).
//!
//! [`PullThrough`] is the cache as a gateway runs it, over the same service traits as the rest
//! of the gateway (`MetaApi`, `BlobNodes`): routing by proxy prefix (and the mirror), tag TTLs
//! with stale-if-error, cluster-wide single flight through meta's fetch leases, and the tee of an
//! upstream body into its client and a blob upload. [`status`] is what operators see.
//!
//! [`Upstream`] speaks the OCI Distribution API to any registry as its client: it answers the
//! registry's 401 with Basic credentials or the Docker token flow (a token per scope, kept until
//! it expires), checks every manifest against its digest, and streams blobs, checking the bytes
//! against the digest as they pass ([`UpstreamBlob`]), so an upstream that lies is an error and
//! never content.

mod cache;
mod client;
mod status;

pub use cache::{
    count_hit, BlobAnswer, CacheError, CacheSettings, ManifestAnswer, PullThrough, Route,
};
pub use client::{
    check_ca_bundle, ManifestHead, PushError, SourceFailure, Upstream, UpstreamBlob,
    UpstreamConfig, UpstreamError, UpstreamManifest,
};
pub use status::{status, upstream_config, ProxyStatus};

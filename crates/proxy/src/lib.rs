//! The pull-through cache's view of an upstream registry (issue 16).
//!
//! [`Upstream`] speaks the OCI Distribution API to any registry as its client: it answers the
//! registry's 401 with Basic credentials or the Docker token flow (a token per scope, kept until
//! it expires), checks every manifest against its digest, and streams blobs, checking the bytes
//! against the digest as they pass ([`UpstreamBlob`]), so an upstream that lies is an error and
//! never content.

mod client;

pub use client::{
    ManifestHead, Upstream, UpstreamBlob, UpstreamConfig, UpstreamError, UpstreamManifest,
};

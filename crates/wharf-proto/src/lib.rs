//! Wharf's gRPC edge: the tonic/prost code generated from `proto/wharf/v1/*.proto` (module [`pb`]),
//! the one place where domain types and proto messages convert ([`convert`]), the mapping between
//! `cluster_api` errors and `tonic::Status` ([`status`]), and server adapters that expose any
//! `MetaApi` or `BlobApi` implementation as a gRPC service ([`MetaGrpc`], [`BlobGrpc`]).
//!
//! Domain crates never derive prost; only this crate and its callers at the edge see proto types.

pub mod convert;
pub mod convert_auth;
pub mod convert_lifecycle;
pub mod convert_proxy;
pub mod status;

mod blob_service;
mod meta_service;

pub use blob_service::BlobGrpc;
pub use meta_service::MetaGrpc;

/// Generated code for package `wharf.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/wharf.v1.rs"));
}

/// Largest gRPC message either side accepts: a 4 MiB manifest plus framing, or a blob chunk.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Size of the data chunks blob streams are cut into on the wire.
pub const STREAM_CHUNK_BYTES: usize = 256 * 1024;

//! A blob storage node: [`BlobNode`] implements `cluster-api`'s `BlobApi` over a
//! [`BlobStore`](blob_store::BlobStore), and [`BlobNodeConfig`] describes one node.
//!
//! Commits go through a [`Replicator`], the seam where copying a blob to the other ring owners
//! of its digest plugs in; [`LocalOnly`] is the single-node implementation. Files on disk belong
//! to `blob-store` (its crate documentation draws the layout under `data_dir`); this crate never
//! opens a blob file itself. It must not depend on tonic or prost either: the gRPC adapter in
//! `wharf-proto` serves any `BlobApi`, this one included.

mod config;
mod error;
mod node;
mod replicator;

pub use config::BlobNodeConfig;
pub use error::BlobNodeError;
pub use node::BlobNode;
pub use replicator::{LocalOnly, Replicator};

//! A blob storage node: [`BlobNode`] implements `cluster-api`'s `BlobApi` over a
//! [`BlobStore`](blob_store::BlobStore), and [`BlobNodeConfig`] describes one node.
//!
//! Commits go through a [`Replicator`], the seam where copying a blob to the other ring owners
//! of its digest plugs in; [`LocalOnly`] is the single-node implementation and
//! [`RingReplicator`] the cluster one. In a cluster ([`BlobNode::open_clustered`]) three
//! [`BackgroundTasks`] loops run beside the API: a heartbeat to meta that re-reads the cluster
//! map ([`ClusterView`]) when its epoch moves; a [`Repairer`] that pages through the local
//! blobs, pushes copies to ring owners that lack them (after a failure or a join) and drops
//! local copies this node no longer owns once every owner has confirmed its own; and a
//! [`Collector`] that deletes the copies meta has collected (set aside first, purged only once
//! meta confirms) and the staging files of uploads whose token has expired. Placement is
//! the `hash-ring` crate over the map's `Up` members ([`Placement`]). Files on disk belong
//! to `blob-store` (its crate documentation draws the layout under `data_dir`); this crate never
//! opens a blob file itself. It must not depend on tonic or prost either: the gRPC adapter in
//! `wharf-proto` serves any `BlobApi`, this one included.

mod background;
mod cluster;
mod collector;
mod config;
mod error;
mod node;
mod recent_commits;
mod repair;
mod replicator;
mod upload_cap;

pub use background::BackgroundTasks;
pub use cluster::ClusterView;
pub use cluster_api::{Placement, RecordOwners};
pub use collector::{CollectReport, Collector};
pub use config::BlobNodeConfig;
pub use error::BlobNodeError;
pub use node::BlobNode;
pub use repair::{RepairReport, Repairer};
pub use replicator::{LocalOnly, Replicator, RingReplicator};
pub use upload_cap::UploadCap;

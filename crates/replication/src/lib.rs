//! Copying images between registries (issue 16): [`copy_repository`] copies one repository's
//! tags (or those a glob keeps) from any registry to any registry through the OCI Distribution
//! API, blobs first, then manifests (an index's children before it, referrers after their
//! subject), tags last, skipping what the destination already holds, so a copy cut short
//! resumes where it stopped. Every byte is checked against its digest on the way
//! (`proxy::Upstream`). `wharf mirror` runs it over a list of repositories or a whole catalog.

mod copy;
mod ends;
mod replicator;

pub use copy::{
    copy_repository, prune_repository, referrers_tag_name, referrers_tag_subject, CopyError,
    CopyOptions, CopyReport, MountHints, Progress, PruneReport,
};
pub use ends::{BlobBody, ClusterEnd, Destination, Source};
pub use replicator::{Replicator, ReplicatorSettings};

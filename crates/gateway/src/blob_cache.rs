//! The blob cache: what meta said of a blob in a repository (its size and replicas), by
//! (repository, digest), for `blob_cache_ttl_ms` and at most `blob_cache_entries` entries
//! ([`RepoCache`] explains what an entry may serve and for how long), so repeated GETs of one blob
//! (every layer of a popular image, every CI job) do not each cost a meta read.
//!
//! - Only GETs use it. HEADs always ask meta: pushing clients HEAD a blob to decide whether to
//!   upload it, and must not skip an upload on a link garbage collection has just removed.
//! - A read that no listed replica can serve drops the entry and asks meta again (the copies
//!   moved: repair, rebalance), so a stale replica list costs one retry, never a failed pull.
//! - Only answers that the blob exists are kept; a miss always asks meta, so a blob is readable
//!   through every gateway as soon as its push is acknowledged.
//!
//! Metrics: `wharf_gateway_blob_cache_total{result=hit|miss}`.

use std::time::Duration;

use cluster_api::BlobInfo;
use quick_cache::UnitWeighter;

use crate::repo_cache::RepoCache;

pub(crate) type BlobCache = RepoCache<BlobInfo, UnitWeighter>;

/// A blob cache keeping at most `capacity` records for `ttl`; a zero TTL or capacity turns it off.
pub(crate) fn blob_cache(ttl: Duration, capacity: usize) -> BlobCache {
    RepoCache::new(
        ttl,
        capacity,
        capacity as u64,
        UnitWeighter,
        "wharf_gateway_blob_cache_total",
    )
}

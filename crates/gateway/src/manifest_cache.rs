//! The manifest cache: manifests by (repository, digest) for `manifest_cache_ttl_ms` within a
//! byte budget ([`RepoCache`] explains what an entry may serve and for how long). Only lookups by
//! digest are answered from here (tags move), but every successful GET or HEAD fills the entry
//! of the digest it read, by tag too.
//!
//! Metrics: `wharf_gateway_manifest_cache_total{result=hit|miss}`.

use std::time::Duration;

use axum::body::Bytes;
use cluster_api::StoredManifest;
use quick_cache::Weighter;

use crate::repo_cache::{Entry, Key, RepoCache};

/// What an entry costs besides its strings: the shared value, the key, the cache's slot and its
/// bookkeeping, rounded up. Only the budget's accuracy depends on it.
const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// A typical manifest's size, for the cache's estimate of how many entries it will hold (which
/// sizes its shards); images are a few KiB, indexes a little more.
const TYPICAL_MANIFEST_BYTES: usize = 4096;

/// A manifest as the handlers serve it; responses share its bytes instead of copying them.
#[derive(Debug)]
pub(crate) struct Manifest {
    pub(crate) digest: oci_model::Digest,
    pub(crate) media_type: String,
    pub(crate) bytes: Bytes,
}

impl From<StoredManifest> for Manifest {
    fn from(stored: StoredManifest) -> Manifest {
        Manifest {
            digest: stored.digest,
            media_type: stored.media_type,
            bytes: Bytes::from(stored.bytes),
        }
    }
}

pub(crate) type CachedManifest = Entry<Manifest>;
pub(crate) type ManifestCache = RepoCache<Manifest, ByteWeighter>;

/// Weighs an entry by the bytes it holds, so the budget is in bytes rather than entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteWeighter;

impl Weighter<Key, std::sync::Arc<CachedManifest>> for ByteWeighter {
    fn weight(&self, key: &Key, manifest: &std::sync::Arc<CachedManifest>) -> u64 {
        let strings = manifest.bytes.len()
            + manifest.media_type.len()
            + key.repo.as_str().len()
            + key.digest.hex().len()
            + manifest.digest.hex().len();
        ENTRY_OVERHEAD_BYTES.saturating_add(strings as u64)
    }
}

/// A manifest cache keeping entries for `ttl` within `capacity_bytes`; a zero TTL or budget turns
/// it off. A manifest heavier than one shard's share of the budget is not kept (the cache shards
/// by core count; manifests are far smaller than a share of the default budget).
pub(crate) fn manifest_cache(ttl: Duration, capacity_bytes: usize) -> ManifestCache {
    RepoCache::new(
        ttl,
        capacity_bytes / TYPICAL_MANIFEST_BYTES,
        capacity_bytes as u64,
        ByteWeighter,
        "wharf_gateway_manifest_cache_total",
    )
}

#[cfg(test)]
mod tests {
    use oci_model::media_type::OCI_MANIFEST;
    use oci_model::{Digest, RepositoryName};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).unwrap()
    }

    fn stored(bytes: Vec<u8>) -> StoredManifest {
        StoredManifest {
            digest: Digest::sha256_of(&bytes),
            media_type: OCI_MANIFEST.to_owned(),
            bytes,
        }
    }

    /// A distinct manifest of `size` bytes for each `seed`.
    fn big(seed: usize, size: usize) -> StoredManifest {
        let mut bytes = format!("{seed:08}").into_bytes();
        bytes.resize(size, b'x');
        stored(bytes)
    }

    fn fill(cache: &ManifestCache, stored: StoredManifest) -> std::sync::Arc<CachedManifest> {
        let digest = stored.digest.clone();
        cache.fill(cache.ticket(), &repo("a"), digest, stored.into())
    }

    #[test]
    fn a_filled_manifest_is_served_with_its_type() {
        let cache = manifest_cache(HOUR, 1 << 20);
        let manifest = stored(b"{}".to_vec());
        let digest = manifest.digest.clone();
        fill(&cache, manifest);
        let hit = cache.get(&repo("a"), &digest).expect("a hit");
        assert_eq!(hit.bytes.as_ref(), b"{}");
        assert_eq!(hit.media_type, OCI_MANIFEST);
        assert_eq!(hit.digest, digest);
    }

    #[test]
    fn the_byte_budget_holds_under_many_big_manifests() {
        let budget = 256 * 1024;
        let cache = manifest_cache(HOUR, budget);
        let manifests: Vec<StoredManifest> = (0..200).map(|seed| big(seed, 16 * 1024)).collect();
        let total: usize = manifests.iter().map(|manifest| manifest.bytes.len()).sum();
        assert!(total > 10 * budget);
        for manifest in manifests {
            fill(&cache, manifest);
            assert!(
                cache.weight() <= budget as u64,
                "{} > {budget}",
                cache.weight()
            );
        }
        assert!(cache.weight() > 0, "some entries are kept");
    }

    #[test]
    fn a_manifest_larger_than_the_budget_is_served_but_not_kept() {
        let cache = manifest_cache(HOUR, 8 * 1024);
        let manifest = big(1, 64 * 1024);
        let digest = manifest.digest.clone();
        let served = fill(&cache, manifest);
        assert_eq!(served.bytes.len(), 64 * 1024);
        assert_eq!(cache.weight(), 0);
        assert!(cache.get(&repo("a"), &digest).is_none());
    }
}

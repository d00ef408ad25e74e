//! [`ManifestCache`]: manifests by (repository, digest) for a short time within a byte budget, so
//! repeated pulls of one image do not each cost a linearizable read on the meta leader.
//!
//! What a digest names never changes; whether a repository still holds it does (a DELETE of the
//! manifest). So an entry is served for `manifest_cache_ttl_ms` at most, counted from the moment
//! the read from meta began, which bounds how long a DELETE through another gateway goes
//! unnoticed here; a DELETE through this gateway removes the entry at once. Only lookups by digest
//! are answered from here (tags move), but every successful GET or HEAD fills the entry of the
//! digest it read, by tag too.
//!
//! A read racing a DELETE through this gateway could put back what the DELETE just removed, so
//! every invalidation bumps a generation, and a fill whose read from meta overlapped a bump is
//! dropped (or undone, when the bump lands between its check and its insert).
//!
//! Metrics: `wharf_gateway_manifest_cache_total{result=hit|miss}`, one per lookup by digest while
//! the cache is on; an expired entry counts as a miss.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use cluster_api::StoredManifest;
use oci_model::{Digest, RepositoryName};
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

/// What an entry costs besides its strings: the shared value, the key, the cache's slot and its
/// bookkeeping, rounded up. Only the budget's accuracy depends on it.
const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// A typical manifest's size, for the cache's estimate of how many entries it will hold (which
/// sizes its shards); images are a few KiB, indexes a little more.
const TYPICAL_MANIFEST_BYTES: usize = 4096;

/// A manifest as the handlers serve it; responses share its bytes instead of copying them.
#[derive(Debug)]
pub(crate) struct CachedManifest {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) bytes: Bytes,
    read_started: Instant,
}

/// The gateway's manifest cache; inert (every lookup misses, nothing is kept) when the TTL is 0.
pub(crate) struct ManifestCache {
    entries: Option<Cache<Key, Arc<CachedManifest>, ByteWeighter>>,
    ttl: Duration,
    generation: AtomicU64,
}

/// Taken before a read from meta, handed back to [`ManifestCache::fill`] with its result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillTicket {
    generation: u64,
    read_started: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    repo: RepositoryName,
    digest: Digest,
}

/// A borrowed [`Key`] for lookups without cloning; the derived `Hash` feeds the same fields in
/// the same order as the owned key's, as `Equivalent` requires.
#[derive(Hash)]
struct KeyRef<'a> {
    repo: &'a RepositoryName,
    digest: &'a Digest,
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.repo == key.repo && *self.digest == key.digest
    }
}

/// Weighs an entry by the bytes it holds, so the budget is in bytes rather than entries.
#[derive(Debug, Clone, Copy)]
struct ByteWeighter;

impl Weighter<Key, Arc<CachedManifest>> for ByteWeighter {
    fn weight(&self, key: &Key, manifest: &Arc<CachedManifest>) -> u64 {
        let strings = manifest.bytes.len()
            + manifest.media_type.len()
            + key.repo.as_str().len()
            + key.digest.hex().len()
            + manifest.digest.hex().len();
        ENTRY_OVERHEAD_BYTES.saturating_add(strings as u64)
    }
}

impl ManifestCache {
    /// A cache keeping entries for `ttl` within `capacity_bytes`; a zero TTL or budget turns it
    /// off. An entry heavier than one shard's share of the budget is not kept (the cache shards
    /// by core count; manifests are far smaller than a share of the default budget).
    pub(crate) fn new(ttl: Duration, capacity_bytes: usize) -> ManifestCache {
        let entries = (!ttl.is_zero() && capacity_bytes > 0).then(|| {
            let estimated_entries = (capacity_bytes / TYPICAL_MANIFEST_BYTES).max(1);
            Cache::with_weighter(estimated_entries, capacity_bytes as u64, ByteWeighter)
        });
        ManifestCache {
            entries,
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    /// The manifest `digest` in `repo` if it was read from meta less than the TTL ago.
    pub(crate) fn get(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Option<Arc<CachedManifest>> {
        let entries = self.entries.as_ref()?;
        let key = KeyRef { repo, digest };
        let fresh = match entries.get(&key) {
            Some(entry) if !self.expired(&entry) => Some(entry),
            Some(_) => {
                // It would otherwise hold its bytes until evicted, e.g. when the manifest was
                // deleted elsewhere and no fill replaces it.
                entries.remove_if(&key, |entry| self.expired(entry));
                None
            }
            None => None,
        };
        let result = if fresh.is_some() { "hit" } else { "miss" };
        metrics::counter!("wharf_gateway_manifest_cache_total", "result" => result).increment(1);
        fresh
    }

    /// To be taken right before reading a manifest from meta.
    pub(crate) fn ticket(&self) -> FillTicket {
        FillTicket {
            generation: self.generation.load(Ordering::SeqCst),
            read_started: Instant::now(),
        }
    }

    /// Shares `stored`, read from meta for `repo` after `ticket` was taken, for the response, and
    /// keeps it under its digest unless an invalidation came in while it was being read.
    pub(crate) fn fill(
        &self,
        ticket: FillTicket,
        repo: &RepositoryName,
        stored: StoredManifest,
    ) -> Arc<CachedManifest> {
        let manifest = Arc::new(CachedManifest {
            digest: stored.digest,
            media_type: stored.media_type,
            bytes: Bytes::from(stored.bytes),
            read_started: ticket.read_started,
        });
        let Some(entries) = &self.entries else {
            return manifest;
        };
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            return manifest;
        }
        let key = Key {
            repo: repo.clone(),
            digest: manifest.digest.clone(),
        };
        entries.insert(key, manifest.clone());
        // An invalidation between the check above and the insert may have removed nothing; it
        // bumped the generation first, so this sees it and takes the entry back out.
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            let key = KeyRef {
                repo,
                digest: &manifest.digest,
            };
            entries.remove_if(&key, |entry| Arc::ptr_eq(entry, &manifest));
        }
        manifest
    }

    /// Forgets `(repo, digest)` at once. Called after a call to meta that may have removed the
    /// manifest or changed what its digest reads as, whatever meta answered: a call that failed
    /// (a timeout) may still have committed.
    pub(crate) fn invalidate(&self, repo: &RepositoryName, digest: &Digest) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.remove(&KeyRef { repo, digest });
        }
    }

    /// Forgets every manifest of `repo` at once: a manifest delete may take others of the
    /// repository with it (an index's untagged children, untagged referrers).
    pub(crate) fn invalidate_repo(&self, repo: &RepositoryName) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.retain(|key, _| key.repo != *repo);
        }
    }

    fn expired(&self, entry: &CachedManifest) -> bool {
        entry.read_started.elapsed() >= self.ttl
    }
}

#[cfg(test)]
mod tests {
    use oci_model::media_type::OCI_MANIFEST;

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

    fn weight(cache: &ManifestCache) -> u64 {
        cache.entries.as_ref().map_or(0, |entries| entries.weight())
    }

    #[test]
    fn fill_then_get_by_repository_and_digest() {
        let cache = ManifestCache::new(HOUR, 1 << 20);
        let manifest = stored(b"{}".to_vec());
        let digest = manifest.digest.clone();
        cache.fill(cache.ticket(), &repo("a"), manifest);
        let hit = cache.get(&repo("a"), &digest).expect("a hit");
        assert_eq!(hit.bytes.as_ref(), b"{}");
        assert_eq!(hit.media_type, OCI_MANIFEST);
        assert!(
            cache.get(&repo("b"), &digest).is_none(),
            "keyed by repository too"
        );
    }

    #[test]
    fn the_byte_budget_holds_under_many_big_manifests() {
        let budget = 256 * 1024;
        let cache = ManifestCache::new(HOUR, budget);
        let manifests: Vec<StoredManifest> = (0..200).map(|seed| big(seed, 16 * 1024)).collect();
        let total: usize = manifests.iter().map(|manifest| manifest.bytes.len()).sum();
        assert!(total > 10 * budget);
        for manifest in manifests {
            cache.fill(cache.ticket(), &repo("big"), manifest);
            assert!(
                weight(&cache) <= budget as u64,
                "{} > {budget}",
                weight(&cache)
            );
        }
        assert!(weight(&cache) > 0, "some entries are kept");
    }

    #[test]
    fn a_manifest_larger_than_the_budget_is_served_but_not_kept() {
        let cache = ManifestCache::new(HOUR, 8 * 1024);
        let manifest = big(1, 64 * 1024);
        let digest = manifest.digest.clone();
        let served = cache.fill(cache.ticket(), &repo("a"), manifest);
        assert_eq!(served.bytes.len(), 64 * 1024);
        assert_eq!(weight(&cache), 0);
        assert!(cache.get(&repo("a"), &digest).is_none());
    }

    #[test]
    fn invalidating_a_repository_forgets_its_manifests_only() {
        let cache = ManifestCache::new(HOUR, 1 << 20);
        let (one, two) = (stored(b"{\"a\":1}".to_vec()), stored(b"{\"a\":2}".to_vec()));
        let (first, second) = (one.digest.clone(), two.digest.clone());
        cache.fill(cache.ticket(), &repo("a"), one.clone());
        cache.fill(cache.ticket(), &repo("a"), two);
        cache.fill(cache.ticket(), &repo("b"), one);
        cache.invalidate_repo(&repo("a"));
        assert!(cache.get(&repo("a"), &first).is_none());
        assert!(cache.get(&repo("a"), &second).is_none());
        assert!(cache.get(&repo("b"), &first).is_some());
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_is_not_kept() {
        let cache = ManifestCache::new(HOUR, 1 << 20);
        let manifest = stored(b"{}".to_vec());
        let digest = manifest.digest.clone();
        let ticket = cache.ticket();
        cache.invalidate(&repo("a"), &digest);
        cache.fill(ticket, &repo("a"), manifest);
        assert!(cache.get(&repo("a"), &digest).is_none());
    }

    #[test]
    fn an_expired_entry_is_a_miss_and_is_dropped() {
        let cache = ManifestCache::new(Duration::from_millis(1), 1 << 20);
        let manifest = stored(b"{}".to_vec());
        let digest = manifest.digest.clone();
        let ticket = FillTicket {
            read_started: Instant::now() - Duration::from_secs(1),
            ..cache.ticket()
        };
        cache.fill(ticket, &repo("a"), manifest);
        assert!(weight(&cache) > 0);
        assert!(cache.get(&repo("a"), &digest).is_none());
        assert_eq!(weight(&cache), 0);
    }

    #[test]
    fn zero_ttl_keeps_nothing() {
        let cache = ManifestCache::new(Duration::ZERO, 1 << 20);
        let manifest = stored(b"{}".to_vec());
        let digest = manifest.digest.clone();
        cache.fill(cache.ticket(), &repo("a"), manifest);
        assert!(cache.entries.is_none());
        assert!(cache.get(&repo("a"), &digest).is_none());
    }
}

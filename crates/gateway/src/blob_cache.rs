//! [`BlobCache`]: what meta said of a blob in a repository (its size and replicas), by
//! (repository, digest), for a short time and a bounded number of entries, so repeated GETs of one
//! blob (every layer of a popular image, every CI job) do not each cost a meta read. HEADs always
//! ask meta: pushing clients HEAD a blob to decide whether to upload it, and must not skip an
//! upload on a link garbage collection has just removed.
//!
//! A digest's size never changes; two things about it do: whether the repository still links it
//! (a blob DELETE, or garbage collection of an unreferenced link) and where its copies are (repair
//! and rebalance move them). So:
//! - an entry is served for `blob_cache_ttl_ms` at most, counted from when its read from meta
//!   began: that bounds how long a DELETE through another gateway goes unseen here; a DELETE
//!   through this gateway removes the entry at once (with the same generation guard as the
//!   manifest cache against a read racing it);
//! - a read that no listed replica can serve drops the entry and asks meta again (the copies
//!   moved), so a stale replica list costs one retry, never a failed pull;
//! - only answers that the blob exists are kept; a miss always asks meta, so a blob is readable
//!   through every gateway as soon as its push is acknowledged.
//!
//! Metrics: `wharf_gateway_blob_cache_total{result=hit|miss}` per lookup while the cache is on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_api::BlobInfo;
use oci_model::{Digest, RepositoryName};
use quick_cache::sync::Cache;
use quick_cache::Equivalent;

/// A blob's record as served from the cache.
#[derive(Debug)]
pub(crate) struct CachedBlob {
    pub(crate) info: BlobInfo,
    read_started: Instant,
}

/// The gateway's blob cache; inert (every lookup misses, nothing is kept) when the TTL is 0.
pub(crate) struct BlobCache {
    entries: Option<Cache<Key, Arc<CachedBlob>>>,
    ttl: Duration,
    generation: AtomicU64,
}

/// Taken before a read from meta, handed back to [`BlobCache::fill`] with its result.
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

/// A borrowed [`Key`]; its derived `Hash` feeds the same fields in the same order.
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

impl BlobCache {
    /// A cache keeping at most `capacity` entries for `ttl`; a zero TTL or capacity turns it off.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> BlobCache {
        let entries = (!ttl.is_zero() && capacity > 0).then(|| Cache::new(capacity));
        BlobCache {
            entries,
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    /// The record of `digest` in `repo` if it was read from meta less than the TTL ago.
    pub(crate) fn get(&self, repo: &RepositoryName, digest: &Digest) -> Option<Arc<CachedBlob>> {
        let entries = self.entries.as_ref()?;
        let key = KeyRef { repo, digest };
        let fresh = match entries.get(&key) {
            Some(entry) if entry.read_started.elapsed() < self.ttl => Some(entry),
            Some(_) => {
                entries.remove_if(&key, |entry| entry.read_started.elapsed() >= self.ttl);
                None
            }
            None => None,
        };
        let result = if fresh.is_some() { "hit" } else { "miss" };
        metrics::counter!("wharf_gateway_blob_cache_total", "result" => result).increment(1);
        fresh
    }

    /// To be taken right before reading a blob's record from meta.
    pub(crate) fn ticket(&self) -> FillTicket {
        FillTicket {
            generation: self.generation.load(Ordering::SeqCst),
            read_started: Instant::now(),
        }
    }

    /// Keeps `info`, read from meta for `repo` after `ticket` was taken, unless an invalidation
    /// came in while it was being read.
    pub(crate) fn fill(&self, ticket: FillTicket, repo: &RepositoryName, info: &BlobInfo) {
        let Some(entries) = &self.entries else {
            return;
        };
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        let entry = Arc::new(CachedBlob {
            info: info.clone(),
            read_started: ticket.read_started,
        });
        let key = Key {
            repo: repo.clone(),
            digest: info.digest.clone(),
        };
        entries.insert(key, entry.clone());
        // An invalidation between the check above and the insert bumped the generation first.
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            let key = KeyRef {
                repo,
                digest: &info.digest,
            };
            entries.remove_if(&key, |cached| Arc::ptr_eq(cached, &entry));
        }
    }

    /// Forgets `(repo, digest)` at once: after a DELETE through this gateway (whatever meta
    /// answered: a call that failed may still have committed), or a read no replica served.
    pub(crate) fn invalidate(&self, repo: &RepositoryName, digest: &Digest) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.remove(&KeyRef { repo, digest });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).unwrap()
    }

    fn info(seed: u8) -> BlobInfo {
        BlobInfo {
            digest: Digest::sha256_of(&[seed]),
            size: u64::from(seed) + 1,
            replicas: vec![1, 2],
        }
    }

    #[test]
    fn fill_then_get_by_repository_and_digest() {
        let cache = BlobCache::new(HOUR, 16);
        let blob = info(7);
        cache.fill(cache.ticket(), &repo("a"), &blob);
        let hit = cache.get(&repo("a"), &blob.digest).expect("a hit");
        assert_eq!(hit.info, blob);
        assert!(
            cache.get(&repo("b"), &blob.digest).is_none(),
            "keyed by repository"
        );
    }

    #[test]
    fn an_invalidation_during_the_read_keeps_the_fill_out() {
        let cache = BlobCache::new(HOUR, 16);
        let blob = info(1);
        let ticket = cache.ticket();
        cache.invalidate(&repo("a"), &blob.digest);
        cache.fill(ticket, &repo("a"), &blob);
        assert!(cache.get(&repo("a"), &blob.digest).is_none());
        cache.fill(cache.ticket(), &repo("a"), &blob);
        cache.invalidate(&repo("a"), &blob.digest);
        assert!(cache.get(&repo("a"), &blob.digest).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl_and_the_count_stays_bounded() {
        let cache = BlobCache::new(Duration::from_millis(1), 8);
        let blob = info(3);
        let ticket = cache.ticket();
        cache.fill(ticket, &repo("a"), &blob);
        while ticket.read_started.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        assert!(cache.get(&repo("a"), &blob.digest).is_none(), "expired");

        let bounded = BlobCache::new(HOUR, 8);
        for seed in 0..200 {
            bounded.fill(bounded.ticket(), &repo("many"), &info(seed));
        }
        let entries = bounded.entries.as_ref().expect("on");
        assert!(entries.len() <= 8, "{} entries kept", entries.len());
    }

    #[test]
    fn a_zero_ttl_or_capacity_turns_it_off() {
        for cache in [BlobCache::new(Duration::ZERO, 8), BlobCache::new(HOUR, 0)] {
            let blob = info(2);
            cache.fill(cache.ticket(), &repo("a"), &blob);
            assert!(cache.get(&repo("a"), &blob.digest).is_none());
        }
    }
}

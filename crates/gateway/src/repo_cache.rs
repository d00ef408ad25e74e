//! [`RepoCache`]: what meta said of a digest in a repository, kept for a short time within a
//! bound, so repeated reads of one manifest or blob do not each cost a meta read. The manifest
//! cache and the blob cache are both this, with their own value, weight and metric.
//!
//! What a digest names never changes; whether a repository still holds it does (a DELETE, or
//! garbage collection), and so may where a blob's copies are. So an entry is served for the TTL at
//! most, counted from the moment its read from meta began, which bounds how long a DELETE through
//! another gateway goes unseen here; a DELETE through this gateway removes the entry at once.
//!
//! A read racing a DELETE through this gateway could put back what the DELETE just removed, so
//! every invalidation bumps a generation, and a fill whose read from meta overlapped a bump is
//! dropped (or undone, when the bump lands between its check and its insert).
//!
//! Metrics: `<metric>{result=hit|miss}`, one per lookup while the cache is on; an expired entry
//! counts as a miss.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_model::{Digest, RepositoryName};
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

/// A value as served from the cache (it derefs to the value).
#[derive(Debug)]
pub(crate) struct Entry<V> {
    value: V,
    read_started: Instant,
}

impl<V> Deref for Entry<V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.value
    }
}

/// Taken before a read from meta, handed back to [`RepoCache::fill`] with its result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillTicket {
    generation: u64,
    read_started: Instant,
}

/// An entry's key; a weigher may read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) repo: RepositoryName,
    pub(crate) digest: Digest,
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

/// Values of `V` by (repository, digest), weighed by `W` against a capacity; inert (every lookup
/// misses, nothing is kept) when the TTL or the capacity is 0.
pub(crate) struct RepoCache<V, W> {
    entries: Option<Cache<Key, Arc<Entry<V>>, W>>,
    ttl: Duration,
    generation: AtomicU64,
    metric: &'static str,
}

impl<V, W> RepoCache<V, W>
where
    W: Weighter<Key, Arc<Entry<V>>> + Clone,
{
    /// A cache keeping entries for `ttl` within `capacity` (in `weigher`'s units; it expects
    /// about `estimated_entries`, which sizes its shards). An entry heavier than one shard's
    /// share of the capacity is served but not kept.
    pub(crate) fn new(
        ttl: Duration,
        estimated_entries: usize,
        capacity: u64,
        weigher: W,
        metric: &'static str,
    ) -> RepoCache<V, W> {
        let entries = (!ttl.is_zero() && capacity > 0)
            .then(|| Cache::with_weighter(estimated_entries.max(1), capacity, weigher));
        RepoCache {
            entries,
            ttl,
            generation: AtomicU64::new(0),
            metric,
        }
    }

    /// The value of `digest` in `repo` if it was read from meta less than the TTL ago.
    pub(crate) fn get(&self, repo: &RepositoryName, digest: &Digest) -> Option<Arc<Entry<V>>> {
        let entries = self.entries.as_ref()?;
        let key = KeyRef { repo, digest };
        let fresh = match entries.get(&key) {
            Some(entry) if !self.expired(&entry) => Some(entry),
            Some(_) => {
                // It would otherwise hold its memory until evicted, e.g. when the digest was
                // deleted elsewhere and no fill replaces it.
                entries.remove_if(&key, |entry| self.expired(entry));
                None
            }
            None => None,
        };
        let result = if fresh.is_some() { "hit" } else { "miss" };
        metrics::counter!(self.metric, "result" => result).increment(1);
        fresh
    }

    /// To be taken right before reading from meta.
    pub(crate) fn ticket(&self) -> FillTicket {
        FillTicket {
            generation: self.generation.load(Ordering::SeqCst),
            read_started: Instant::now(),
        }
    }

    /// Shares `value`, read from meta for `(repo, digest)` after `ticket` was taken, for the
    /// response, and keeps it unless an invalidation came in while it was being read.
    pub(crate) fn fill(
        &self,
        ticket: FillTicket,
        repo: &RepositoryName,
        digest: Digest,
        value: V,
    ) -> Arc<Entry<V>> {
        let entry = Arc::new(Entry {
            value,
            read_started: ticket.read_started,
        });
        let Some(entries) = &self.entries else {
            return entry;
        };
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            return entry;
        }
        let key = Key {
            repo: repo.clone(),
            digest,
        };
        let digest = key.digest.clone();
        entries.insert(key, entry.clone());
        // An invalidation between the check above and the insert may have removed nothing; it
        // bumped the generation first, so this sees it and takes the entry back out.
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            let key = KeyRef {
                repo,
                digest: &digest,
            };
            entries.remove_if(&key, |cached| Arc::ptr_eq(cached, &entry));
        }
        entry
    }

    /// Forgets `(repo, digest)` at once. Called after a call to meta that may have removed it
    /// (whatever meta answered: a call that failed, a timeout, may still have committed) or a
    /// read the cached value could not serve.
    pub(crate) fn invalidate(&self, repo: &RepositoryName, digest: &Digest) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.remove(&KeyRef { repo, digest });
        }
    }

    /// Forgets every entry of `repo` at once (a manifest delete may take others of the
    /// repository with it: an index's untagged children, untagged referrers).
    pub(crate) fn invalidate_repo(&self, repo: &RepositoryName) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.retain(|key, _| key.repo != *repo);
        }
    }

    /// The total weight kept (0 when off).
    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.entries.as_ref().map_or(0, |entries| entries.weight())
    }

    /// Whether the cache keeps anything at all.
    #[cfg(test)]
    pub(crate) fn is_on(&self) -> bool {
        self.entries.is_some()
    }

    fn expired(&self, entry: &Entry<V>) -> bool {
        entry.read_started.elapsed() >= self.ttl
    }
}

#[cfg(test)]
mod tests {
    use quick_cache::UnitWeighter;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    type Numbers = RepoCache<u32, UnitWeighter>;

    fn numbers(ttl: Duration, capacity: u64) -> Numbers {
        RepoCache::new(ttl, 16, capacity, UnitWeighter, "test_cache_total")
    }

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).unwrap()
    }

    fn digest(seed: u32) -> Digest {
        Digest::sha256_of(&seed.to_le_bytes())
    }

    #[test]
    fn fill_then_get_by_repository_and_digest() {
        let cache = numbers(HOUR, 16);
        let served = cache.fill(cache.ticket(), &repo("a"), digest(7), 7);
        assert_eq!(**served, 7);
        assert_eq!(cache.get(&repo("a"), &digest(7)).map(|hit| **hit), Some(7));
        assert!(
            cache.get(&repo("b"), &digest(7)).is_none(),
            "keyed by repository"
        );
        assert!(cache.get(&repo("a"), &digest(8)).is_none(), "and by digest");
    }

    #[test]
    fn an_invalidation_during_the_read_keeps_the_fill_out() {
        let cache = numbers(HOUR, 16);
        let ticket = cache.ticket();
        cache.invalidate(&repo("a"), &digest(1));
        cache.fill(ticket, &repo("a"), digest(1), 1);
        assert!(cache.get(&repo("a"), &digest(1)).is_none());
        cache.fill(cache.ticket(), &repo("a"), digest(1), 1);
        cache.invalidate(&repo("a"), &digest(1));
        assert!(cache.get(&repo("a"), &digest(1)).is_none());
    }

    #[test]
    fn invalidating_a_repository_forgets_its_entries_only() {
        let cache = numbers(HOUR, 16);
        cache.fill(cache.ticket(), &repo("a"), digest(1), 1);
        cache.fill(cache.ticket(), &repo("a"), digest(2), 2);
        cache.fill(cache.ticket(), &repo("b"), digest(1), 1);
        cache.invalidate_repo(&repo("a"));
        assert!(cache.get(&repo("a"), &digest(1)).is_none());
        assert!(cache.get(&repo("a"), &digest(2)).is_none());
        assert!(cache.get(&repo("b"), &digest(1)).is_some());
    }

    #[test]
    fn an_expired_entry_is_a_miss_and_is_dropped() {
        let cache = numbers(Duration::from_millis(1), 16);
        let ticket = FillTicket {
            read_started: Instant::now() - Duration::from_secs(1),
            ..cache.ticket()
        };
        cache.fill(ticket, &repo("a"), digest(3), 3);
        assert_eq!(cache.weight(), 1);
        assert!(cache.get(&repo("a"), &digest(3)).is_none());
        assert_eq!(cache.weight(), 0);
    }

    #[test]
    fn the_capacity_holds_under_many_fills() {
        let cache = numbers(HOUR, 8);
        for seed in 0..200 {
            cache.fill(cache.ticket(), &repo("many"), digest(seed), seed);
            assert!(cache.weight() <= 8, "{} entries kept", cache.weight());
        }
        assert!(cache.weight() > 0, "some entries are kept");
    }

    #[test]
    fn a_zero_ttl_or_capacity_turns_it_off() {
        for cache in [numbers(Duration::ZERO, 8), numbers(HOUR, 0)] {
            assert!(!cache.is_on());
            let served = cache.fill(cache.ticket(), &repo("a"), digest(2), 2);
            assert_eq!(**served, 2, "a fill still serves its value");
            assert!(cache.get(&repo("a"), &digest(2)).is_none());
        }
    }
}

//! [`RecentCommits`]: which blob each recently committed upload became, so that the same commit
//! asked again succeeds again.
//!
//! An upload's staging file is gone once it commits, and its id (a signed token) stays valid in
//! meta until it expires. A client that lost the answer to its `PUT`, or a gateway that reached
//! the node but not meta, asks for the same commit again: the node must say yes for the digest
//! the upload became and no for any other (a missing staging file alone proves nothing, or an
//! upload id could claim any blob the node holds). Bounded in entries and in age, and kept in
//! memory only: after a restart, or once an entry has aged out, a repeated commit is refused
//! with `UploadNotFound` and the client pushes again, which costs time, never data.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cluster_api::UploadId;
use oci_model::Digest;

/// How many commits are remembered: about 450 bytes each (the id twice, the digest, the map),
/// so 2 MiB at most; at a thousand commits a second that is four seconds of retries, and a
/// retry later than that pushes again.
pub(crate) const CAPACITY: usize = 4_096;
/// How long a commit is remembered: longer than any client waits before it retries a `PUT`.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(600);

pub(crate) struct RecentCommits {
    capacity: usize,
    max_age: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<UploadId, (Digest, Instant)>,
    /// Ids in commit order, oldest first; an id whose entry went (cancelled) is skipped.
    order: VecDeque<(UploadId, Instant)>,
}

impl RecentCommits {
    pub(crate) fn new(capacity: usize, max_age: Duration) -> RecentCommits {
        RecentCommits {
            capacity: capacity.max(1),
            max_age,
            inner: Mutex::default(),
        }
    }

    /// Remembers that upload `id` became blob `digest`.
    pub(crate) fn insert(&self, id: &UploadId, digest: &Digest) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.evict(now, self.max_age, self.capacity - 1);
        inner.by_id.insert(id.clone(), (digest.clone(), now));
        inner.order.push_back((id.clone(), now));
    }

    /// True when upload `id` recently became exactly `digest`.
    pub(crate) fn committed_as(&self, id: &UploadId, digest: &Digest) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.evict(now, self.max_age, self.capacity);
        inner
            .by_id
            .get(id)
            .is_some_and(|(committed, _)| committed == digest)
    }

    /// Forgets upload `id` (it was cancelled, or its commit refused for good).
    pub(crate) fn forget(&self, id: &UploadId) {
        self.lock().by_id.remove(id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Drops entries older than `max_age`, then the oldest until at most `keep` remain.
    fn evict(&mut self, now: Instant, max_age: Duration, keep: usize) {
        while let Some((id, at)) = self.order.front() {
            let expired = now.duration_since(*at) >= max_age;
            if !expired && self.by_id.len() <= keep && self.order.len() <= keep.max(1) * 2 {
                break;
            }
            // Only the entry this order slot was written for goes (an id committed again has a
            // newer slot).
            if self
                .by_id
                .get(id)
                .is_some_and(|(_, entry_at)| entry_at == at)
            {
                self.by_id.remove(id);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> UploadId {
        UploadId::parse(&format!("{n:032x}")).expect("valid id")
    }

    fn digest(n: u64) -> Digest {
        Digest::sha256_of(&n.to_be_bytes())
    }

    #[test]
    fn a_commit_is_recognised_for_its_own_digest_only() {
        let commits = RecentCommits::new(4, MAX_AGE);
        commits.insert(&id(1), &digest(1));
        assert!(commits.committed_as(&id(1), &digest(1)));
        assert!(!commits.committed_as(&id(1), &digest(2)));
        assert!(!commits.committed_as(&id(2), &digest(1)));
        commits.forget(&id(1));
        assert!(!commits.committed_as(&id(1), &digest(1)));
    }

    #[test]
    fn the_oldest_commits_go_beyond_capacity() {
        let commits = RecentCommits::new(3, MAX_AGE);
        for n in 0..10 {
            commits.insert(&id(n), &digest(n));
            assert!(commits.len() <= 3);
        }
        assert!(!commits.committed_as(&id(6), &digest(6)));
        for n in 7..10 {
            assert!(commits.committed_as(&id(n), &digest(n)), "commit {n}");
        }
    }

    #[test]
    fn commits_age_out() {
        let commits = RecentCommits::new(8, Duration::ZERO);
        commits.insert(&id(1), &digest(1));
        assert!(!commits.committed_as(&id(1), &digest(1)));
        assert_eq!(commits.len(), 0);
    }

    #[test]
    fn cancelled_ids_do_not_pile_up_in_the_order() {
        let commits = RecentCommits::new(2, MAX_AGE);
        for n in 0..1_000 {
            commits.insert(&id(n), &digest(n));
            commits.forget(&id(n));
        }
        assert!(commits.lock().order.len() <= 4);
    }
}

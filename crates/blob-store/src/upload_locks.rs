//! One async lock per open upload, holding that upload's in-memory state: for every `BlobStore`
//! implementation, each with its own state type.
//!
//! Operations on one upload are serialized by its lock while different uploads proceed in
//! parallel. Entries are dropped when an upload ends (commit, cancel, or found missing) so the
//! map does not grow with every upload ever seen.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

use cluster_api::UploadId;
use oci_model::Digester;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A hash of the first `len` bytes of an upload, kept as data is appended so that commit does
/// not have to read the bytes again.
#[derive(Clone)]
pub struct RunningHash {
    pub digester: Digester,
    pub len: u64,
}

/// What `FsBlobStore` remembers about one upload between calls. Everything here can be rebuilt
/// from the staging file, which is what happens after a restart.
#[derive(Default)]
pub(crate) struct UploadState {
    /// `None` when unknown (the process restarted, or an append could not be rolled back
    /// cleanly); commit then hashes the file instead.
    pub running_hash: Option<RunningHash>,
}

#[derive(Default)]
struct Entry<S> {
    state: S,
    /// Set when the entry left the map: a waiter that wakes up holding a retired entry must look
    /// the upload up again, or it would run beside the holder of a newer entry for the same id.
    retired: bool,
}

/// The locks of the uploads in use, each holding an `S`.
pub struct UploadLocks<S> {
    entries: Mutex<HashMap<UploadId, Arc<AsyncMutex<Entry<S>>>>>,
}

impl<S> Default for UploadLocks<S> {
    fn default() -> Self {
        UploadLocks {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// Exclusive access to one upload's state until dropped or [retired](UploadLocks::retire).
pub struct UploadGuard<S> {
    entry: OwnedMutexGuard<Entry<S>>,
}

impl<S: Default> UploadLocks<S> {
    /// Waits for exclusive access to upload `id`.
    pub async fn lock(&self, id: &UploadId) -> UploadGuard<S> {
        loop {
            let entry = {
                // A poisoned map only means another thread panicked between two map operations,
                // which leave the map consistent; carry on with it.
                let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
                Arc::clone(entries.entry(id.clone()).or_default())
            };
            let entry = entry.lock_owned().await;
            if !entry.retired {
                return UploadGuard { entry };
            }
        }
    }

    /// Forgets upload `id`'s state because its staging file is gone. Only the holder of the live
    /// entry removes it, so the map entry removed here is always the guard's own.
    pub fn retire(&self, id: &UploadId, mut guard: UploadGuard<S>) {
        guard.entry.retired = true;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<S> Deref for UploadGuard<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.entry.state
    }
}

impl<S> DerefMut for UploadGuard<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.entry.state
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(n: u8) -> UploadId {
        UploadId(format!("{n:032x}"))
    }

    #[tokio::test]
    async fn waiter_on_a_retired_entry_takes_the_new_one() {
        let locks = Arc::new(UploadLocks::<UploadState>::default());
        let first = locks.lock(&id(1)).await;
        let waiter = tokio::spawn({
            let locks = Arc::clone(&locks);
            async move {
                let mut guard = locks.lock(&id(1)).await;
                guard.running_hash = None;
                locks.len()
            }
        });
        // On this single-threaded test runtime, yielding lets the waiter run until it queues on
        // the first entry; retiring that entry must send the waiter to a new one.
        tokio::task::yield_now().await;
        locks.retire(&id(1), first);
        let entries_seen_by_waiter = waiter.await.expect("waiter task");
        assert_eq!(entries_seen_by_waiter, 1);
    }

    #[tokio::test]
    async fn different_uploads_do_not_block_each_other() {
        let locks = UploadLocks::<UploadState>::default();
        let _one = locks.lock(&id(1)).await;
        let two = tokio::time::timeout(Duration::from_secs(5), locks.lock(&id(2))).await;
        assert!(two.is_ok());
    }
}

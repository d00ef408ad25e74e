//! [`Collector`]: one node's garbage collection pass. Meta decides what is garbage; this node
//! only ever deletes what meta has confirmed.
//!
//! A doomed copy goes in three steps: the store sets it aside (out of service, still on disk),
//! meta confirms the deletion of the whole page in one call, and then each copy is purged (meta
//! confirmed: it no longer counts this copy) or put back (meta refused: the blob was pushed
//! again). A copy set aside stays owed until one of those two is done, so a failed put-back or
//! purge, or a pass dropped half-way, is finished by the next pass (and the store puts back
//! whatever a crash left aside when it opens). Then staging files that have not changed for a
//! while are removed when meta has no open upload session for them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use blob_store::BlobStore;
use cluster_api::{BlobError, BlobNodeId, DoomedBlob, MetaApi, MetaError, UploadId};
use oci_model::Digest;

/// Doomed blobs asked for, and confirmed with meta, per call.
const DOOMED_PAGE: usize = 256;
/// Upload ids asked about per `open_uploads` call.
const OPEN_UPLOADS_BATCH: usize = 256;

/// What a pass did, or (as [`Collector::totals`]) every pass so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Local copies deleted for good, after meta confirmed.
    pub blobs_deleted: u64,
    /// The bytes of those copies.
    pub bytes_reclaimed: u64,
    /// Copies meta refused to let go (the blob was pushed again): put back and kept.
    pub kept: u64,
    /// Staging files removed because meta has no open upload session for them.
    pub stale_uploads_removed: u64,
}

impl CollectReport {
    fn add(&mut self, other: &CollectReport) {
        self.blobs_deleted += other.blobs_deleted;
        self.bytes_reclaimed += other.bytes_reclaimed;
        self.kept += other.kept;
        self.stale_uploads_removed += other.stale_uploads_removed;
    }

    fn is_empty(&self) -> bool {
        *self == CollectReport::default()
    }
}

/// A copy this collector set aside and has not yet purged or put back.
#[derive(Clone, Copy, Debug, Default)]
struct Owed {
    /// Meta confirmed the deletion: purge. Otherwise (refused, not asked yet, or no answer): put
    /// back, which is always safe.
    confirmed: bool,
    /// The copy's size, once the store reported it.
    size: Option<u64>,
    /// The collection (generation) meta named, reported back once the copy is purged.
    generation: u64,
}

/// Runs garbage collection passes for one node. Passes never overlap: a second caller waits.
pub struct Collector {
    local: BlobNodeId,
    store: Arc<dyn BlobStore>,
    meta: Arc<dyn MetaApi>,
    stale_upload_after: Duration,
    pass: tokio::sync::Mutex<()>,
    /// Written before each set-aside and cleared only once the copy is purged or put back, so
    /// a pass that stops anywhere in between leaves the next one knowing what to finish.
    owed: Mutex<BTreeMap<Digest, Owed>>,
    last_report: Mutex<CollectReport>,
    totals: Mutex<CollectReport>,
}

impl Collector {
    /// A collector for node `local`, removing staging files unchanged for `stale_upload_after`
    /// whose upload meta no longer knows.
    pub fn new(
        local: BlobNodeId,
        store: Arc<dyn BlobStore>,
        meta: Arc<dyn MetaApi>,
        stale_upload_after: Duration,
    ) -> Collector {
        Collector {
            local,
            store,
            meta,
            stale_upload_after,
            pass: tokio::sync::Mutex::new(()),
            owed: Mutex::default(),
            last_report: Mutex::default(),
            totals: Mutex::default(),
        }
    }

    /// The report of the last pass that finished without error.
    pub fn last_report(&self) -> CollectReport {
        lock(&self.last_report).clone()
    }

    /// Everything done since this collector was created, failed passes' finished work included.
    pub fn totals(&self) -> CollectReport {
        lock(&self.totals).clone()
    }

    /// Finishes what earlier passes left owed, deletes the copies meta confirms among those it
    /// dooms on this node, then removes stale staging files without a session. Fails when meta
    /// or the store cannot be reached; what was done until then stays done (and counted in
    /// [`totals`](Collector::totals)), and nothing meta did not confirm is ever deleted.
    pub async fn run_pass(&self) -> Result<CollectReport, BlobError> {
        let _one_pass_at_a_time = self.pass.lock().await;
        let mut report = CollectReport::default();
        let outcome = self.run_steps(&mut report).await;
        if !report.is_empty() {
            tracing::info!(
                node = self.local,
                blobs_deleted = report.blobs_deleted,
                bytes_reclaimed = report.bytes_reclaimed,
                kept = report.kept,
                stale_uploads_removed = report.stale_uploads_removed,
                finished = outcome.is_ok(),
                "garbage collection pass"
            );
        }
        outcome?;
        *lock(&self.last_report) = report.clone();
        Ok(report)
    }

    async fn run_steps(&self, report: &mut CollectReport) -> Result<(), BlobError> {
        let earlier: Vec<Digest> = lock(&self.owed).keys().cloned().collect();
        self.settle(&earlier, report).await;
        let mut after: Option<Digest> = None;
        loop {
            let page = self
                .meta
                .doomed_blobs(self.local, after.as_ref(), DOOMED_PAGE)
                .await
                .map_err(|error| unavailable("cannot list doomed blobs", error))?;
            let Some(last) = page.last() else { break };
            after = Some(last.digest.clone());
            self.collect_page(&page, report).await?;
            if page.len() < DOOMED_PAGE {
                break;
            }
        }
        self.remove_stale_uploads(report).await
    }

    /// Sets the page's copies aside, asks meta once about all of them (those already absent
    /// included, so meta stops counting them too), then purges or puts back each one.
    async fn collect_page(
        &self,
        page: &[DoomedBlob],
        report: &mut CollectReport,
    ) -> Result<(), BlobError> {
        let asked = self.set_aside_page(page, report).await;
        if asked.is_empty() {
            return Ok(());
        }
        let digests: Vec<Digest> = asked.iter().map(|(digest, _)| digest.clone()).collect();
        let answers = match self.meta.confirm_blob_deletions(self.local, &asked).await {
            Ok(answers) if answers.len() == asked.len() => answers,
            outcome => {
                // Nothing is owed a purge yet, so this puts every copy of the page back.
                self.settle(&digests, report).await;
                return Err(match outcome {
                    Err(error) => unavailable("cannot confirm blob deletions", error),
                    Ok(answers) => BlobError::Unavailable(format!(
                        "meta answered {} of {} blob deletions",
                        answers.len(),
                        asked.len()
                    )),
                });
            }
        };
        let refused = self.record_answers(&digests, &answers);
        self.tally(
            report,
            CollectReport {
                kept: refused,
                ..CollectReport::default()
            },
        );
        self.settle(&digests, report).await;
        Ok(())
    }

    /// Sets aside the local copy of each blob of `page`; returns the (digest, generation) pairs
    /// to confirm with meta. A copy the store could not set aside is put back at once (or by a
    /// later pass) and not asked about.
    async fn set_aside_page(
        &self,
        page: &[DoomedBlob],
        report: &mut CollectReport,
    ) -> Vec<(Digest, u64)> {
        let mut asked = Vec::with_capacity(page.len());
        let mut not_asked = Vec::new();
        for doomed in page {
            let digest = &doomed.digest;
            // Owed before the move, so no set-aside copy is ever unaccounted for; and whatever
            // an earlier pass learned no longer applies: meta is asked afresh.
            {
                let mut owed = lock(&self.owed);
                let entry = owed.entry(digest.clone()).or_default();
                entry.confirmed = false;
                entry.generation = doomed.generation;
            }
            match self.store.set_aside(digest).await {
                Ok(size) => {
                    if let (Some(size), Some(owed)) = (size, lock(&self.owed).get_mut(digest)) {
                        owed.size = Some(size);
                    }
                    asked.push((digest.clone(), doomed.generation));
                }
                Err(error) => {
                    tracing::warn!(node = self.local, %digest, %error, "cannot set a doomed blob aside");
                    not_asked.push(digest.clone());
                }
            }
        }
        self.settle(&not_asked, report).await;
        asked
    }

    /// Marks what meta confirmed, all before any file work, so a pass dropped from here on
    /// purges exactly that. Returns how many meta refused.
    fn record_answers(&self, digests: &[Digest], answers: &[bool]) -> u64 {
        let mut owed = lock(&self.owed);
        for (digest, &confirmed) in digests.iter().zip(answers) {
            if let Some(entry) = owed.get_mut(digest) {
                entry.confirmed = confirmed;
            }
        }
        answers.iter().filter(|confirmed| !**confirmed).count() as u64
    }

    /// Purges or puts back each of `digests` as its owed entry says, forgetting the entry once
    /// done; a failure keeps it for the next pass.
    async fn settle(&self, digests: &[Digest], report: &mut CollectReport) {
        let mut done = CollectReport::default();
        let mut purged = Vec::new();
        for digest in digests {
            let Some(owed) = lock(&self.owed).get(digest).copied() else {
                continue;
            };
            let outcome = if owed.confirmed {
                self.store.purge(digest).await
            } else {
                self.store.put_back(digest).await
            };
            match outcome {
                Ok(()) => {
                    lock(&self.owed).remove(digest);
                    if owed.confirmed {
                        purged.push((digest.clone(), owed.generation));
                    }
                    match (owed.confirmed, owed.size) {
                        (true, Some(size)) => {
                            done.blobs_deleted += 1;
                            done.bytes_reclaimed += size;
                            tracing::debug!(node = self.local, %digest, size, "doomed blob deleted");
                        }
                        (true, None) => {
                            tracing::debug!(node = self.local, %digest, "doomed blob was not held")
                        }
                        (false, _) => {
                            tracing::debug!(node = self.local, %digest, "blob kept (put back)")
                        }
                    }
                }
                Err(error) => tracing::warn!(
                    node = self.local, %digest, %error, confirmed = owed.confirmed,
                    "cannot finish a set-aside blob; retrying next pass"
                ),
            }
        }
        self.tally(report, done);
        // Until meta hears this it keeps listing the copies as doomed here; a later pass then
        // finds them gone, asks again and reports again, so a lost report costs only a retry.
        for chunk in purged.chunks(DOOMED_PAGE) {
            if let Err(error) = self.meta.blobs_purged(self.local, chunk).await {
                tracing::warn!(node = self.local, %error, "cannot report purged blobs; retrying next pass");
                break;
            }
        }
    }

    /// Cancels the staging files unchanged for `stale_upload_after` whose upload meta does not
    /// list as open. Meta is asked about every stale file before any is removed, so when it
    /// cannot be reached nothing is.
    async fn remove_stale_uploads(&self, report: &mut CollectReport) -> Result<(), BlobError> {
        let now = SystemTime::now();
        let stale: Vec<UploadId> = self
            .store
            .list_uploads()
            .await?
            .into_iter()
            .filter(|upload| {
                now.duration_since(upload.modified)
                    .is_ok_and(|age| age >= self.stale_upload_after)
            })
            .map(|upload| upload.id)
            .collect();
        let mut open = HashSet::new();
        for batch in stale.chunks(OPEN_UPLOADS_BATCH) {
            let listed = self
                .meta
                .open_uploads(batch)
                .await
                .map_err(|error| unavailable("cannot check upload sessions", error))?;
            open.extend(listed);
        }
        let mut removed = 0;
        for id in stale.iter().filter(|id| !open.contains(*id)) {
            match self.store.cancel_upload(id).await {
                Ok(()) => {
                    removed += 1;
                    tracing::debug!(node = self.local, upload = %id, "stale staging file removed");
                }
                Err(error) => {
                    tracing::warn!(node = self.local, upload = %id, %error, "cannot remove a stale staging file")
                }
            }
        }
        self.tally(
            report,
            CollectReport {
                stale_uploads_removed: removed,
                ..CollectReport::default()
            },
        );
        Ok(())
    }

    /// Adds finished work to the pass's report, the totals and the exported counters at once, so
    /// a pass that fails later still counts what it did.
    fn tally(&self, report: &mut CollectReport, done: CollectReport) {
        if done.is_empty() {
            return;
        }
        report.add(&done);
        lock(&self.totals).add(&done);
        metrics::counter!("wharf_gc_blobs_deleted_total").increment(done.blobs_deleted);
        metrics::counter!("wharf_gc_bytes_reclaimed_total").increment(done.bytes_reclaimed);
        metrics::counter!("wharf_gc_stale_uploads_removed_total")
            .increment(done.stale_uploads_removed);
    }
}

fn unavailable(action: &str, error: MetaError) -> BlobError {
    BlobError::Unavailable(format!("{action} in meta: {error}"))
}

/// A poisoned lock only means a panic elsewhere between two plain updates; the data is usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

//! [`UploadCap`]: a [`BlobStore`] that refuses to open more than a set number of upload sessions
//! of one repository on this node.
//!
//! A session costs nothing in meta (it is a signed token), but on its staging node it is a file
//! that stays until it is committed, cancelled, or collected as stale (`stale_upload_after_ms`
//! untouched and its token expired). Without a cap one client could open sessions as fast as
//! its rate limit lets it and fill a node's inodes and disk with files nobody finishes. The cap
//! counts per repository (the token carries an 8-byte hash of it) and per node: the staging
//! file is this node's resource, and counting across nodes would need a Raft write per session,
//! which sessions avoid on purpose (ARCHITECTURE.md, "Differences from DESIGN.md").
//!
//! Every path that opens or ends a session goes through the wrapped store (the API, the
//! collector), so the count follows them; whatever else removes a staging file (an operator, a
//! crash between a commit and its bookkeeping) is found when a repository reaches its cap: the
//! open ids are checked against the store before a session is refused. Memory is one entry per
//! open staging file.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use blob_store::{BlobStore, UploadInfo};
use cluster_api::{BlobError, ByteStream, UploadId, UploadToken};
use oci_model::Digest;
use tokio::sync::OnceCell;

/// How often one repository's open ids may be checked against the store when it is at its cap:
/// a client retrying a refused session must not make the node stat thousands of files each time.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// See the module documentation. A cap of 0 counts nothing and refuses nothing.
pub struct UploadCap {
    inner: Arc<dyn BlobStore>,
    per_repo: usize,
    /// The staging files already on disk when the node started, counted once before the first
    /// session opens.
    seeded: OnceCell<()>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    by_repo: HashMap<[u8; 8], Repo>,
    total: usize,
}

#[derive(Default)]
struct Repo {
    ids: HashSet<UploadId>,
    last_pruned: Option<Instant>,
}

impl Open {
    /// Counts `id` for `repo` unless the repository is at `cap`.
    fn reserve(&mut self, repo: [u8; 8], id: &UploadId, cap: usize) -> Reserved {
        let entry = self.by_repo.entry(repo).or_default();
        if entry.ids.contains(id) {
            return Reserved::Already;
        }
        if entry.ids.len() >= cap {
            return Reserved::Full;
        }
        entry.ids.insert(id.clone());
        self.total += 1;
        Reserved::Now
    }

    fn forget(&mut self, id: &UploadId) {
        let Some(repo) = UploadToken::decode(id).map(|token| token.repo_tag()) else {
            return;
        };
        let Some(entry) = self.by_repo.get_mut(&repo) else {
            return;
        };
        if entry.ids.remove(id) {
            self.total -= 1;
        }
        if entry.ids.is_empty() {
            self.by_repo.remove(&repo);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reserved {
    /// Counted by this call: undo it if the store then fails to start the upload.
    Now,
    /// Already open (a start asked again is idempotent).
    Already,
    Full,
}

impl UploadCap {
    /// Wraps `inner`, allowing at most `per_repo` open sessions of one repository (0: no cap).
    pub fn new(inner: Arc<dyn BlobStore>, per_repo: usize) -> UploadCap {
        UploadCap {
            inner,
            per_repo,
            seeded: OnceCell::new(),
            open: Mutex::default(),
        }
    }

    /// Sessions counted as open now, over every repository.
    pub fn open_sessions(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, id: &UploadId) {
        let mut open = self.lock();
        open.forget(id);
        publish(&open);
    }

    async fn seed(&self) -> Result<(), BlobError> {
        self.seeded
            .get_or_try_init(|| async {
                let existing = self.inner.list_uploads().await?;
                let mut open = self.lock();
                for upload in existing {
                    if let Some(token) = UploadToken::decode(&upload.id) {
                        // Counted whatever the cap: these files exist.
                        open.reserve(token.repo_tag(), &upload.id, usize::MAX);
                    }
                }
                publish(&open);
                Ok(())
            })
            .await
            .map(drop)
    }

    /// Drops the ids of `repo` whose staging file is gone, at most once per [`PRUNE_EVERY`];
    /// true when it looked.
    async fn prune(&self, repo: [u8; 8]) -> Result<bool, BlobError> {
        let ids: Vec<UploadId> = {
            let mut open = self.lock();
            let Some(entry) = open.by_repo.get_mut(&repo) else {
                return Ok(true);
            };
            if entry
                .last_pruned
                .is_some_and(|at| at.elapsed() < PRUNE_EVERY)
            {
                return Ok(false);
            }
            entry.last_pruned = Some(Instant::now());
            entry.ids.iter().cloned().collect()
        };
        for id in ids {
            match self.inner.upload_len(&id).await {
                Err(BlobError::UploadNotFound(_)) => self.forget(&id),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    fn refused(&self, id: &UploadId) -> BlobError {
        metrics::counter!("wharf_blob_upload_sessions_refused_total").increment(1);
        tracing::warn!(upload = %id, cap = self.per_repo, "upload session refused: its repository is at its cap of open sessions on this node");
        BlobError::TooManyUploads(format!(
            "{} upload sessions of this repository are already open on this staging node (the \
             limit); finish or cancel (DELETE) some, or wait for abandoned ones to expire",
            self.per_repo
        ))
    }
}

/// `wharf_blob_open_uploads`: the sessions counted now.
fn publish(open: &Open) {
    metrics::gauge!("wharf_blob_open_uploads").set(open.total as f64);
}

#[async_trait]
impl BlobStore for UploadCap {
    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        let repo = match UploadToken::decode(id) {
            Some(token) if self.per_repo > 0 => token.repo_tag(),
            // Not a session token (tests and tools may name uploads freely), or no cap.
            _ => return self.inner.start_upload(id).await,
        };
        self.seed().await?;
        let mut reserved = self.lock().reserve(repo, id, self.per_repo);
        if reserved == Reserved::Full && self.prune(repo).await? {
            reserved = self.lock().reserve(repo, id, self.per_repo);
        }
        if reserved == Reserved::Full {
            return Err(self.refused(id));
        }
        let started = self.inner.start_upload(id).await;
        if started.is_err() && reserved == Reserved::Now {
            self.forget(id);
        } else {
            publish(&self.lock());
        }
        started
    }

    async fn append(&self, id: &UploadId, offset: u64, data: ByteStream) -> Result<u64, BlobError> {
        let appended = self.inner.append(id, offset, data).await;
        if matches!(appended, Err(BlobError::UploadNotFound(_))) {
            self.forget(id);
        }
        appended
    }

    async fn append_at_end(&self, id: &UploadId, data: ByteStream) -> Result<u64, BlobError> {
        let appended = self.inner.append_at_end(id, data).await;
        if matches!(appended, Err(BlobError::UploadNotFound(_))) {
            self.forget(id);
        }
        appended
    }

    async fn upload_len(&self, id: &UploadId) -> Result<u64, BlobError> {
        self.inner.upload_len(id).await
    }

    async fn commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, BlobError> {
        let committed = self.inner.commit(id, digest).await;
        // A digest mismatch keeps the upload open for the client to fix.
        if matches!(committed, Ok(_) | Err(BlobError::UploadNotFound(_))) {
            self.forget(id);
        }
        committed
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        let cancelled = self.inner.cancel_upload(id).await;
        if cancelled.is_ok() {
            self.forget(id);
        }
        cancelled
    }

    async fn list_uploads(&self) -> Result<Vec<UploadInfo>, BlobError> {
        self.inner.list_uploads().await
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        self.inner.stat(digest).await
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        self.inner.read(digest, offset, length).await
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        self.inner.delete(digest).await
    }

    async fn put_replica(&self, digest: &Digest, data: ByteStream) -> Result<u64, BlobError> {
        self.inner.put_replica(digest, data).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        self.inner.list_blobs(after, n).await
    }

    async fn set_aside(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        self.inner.set_aside(digest).await
    }

    async fn put_back(&self, digest: &Digest) -> Result<(), BlobError> {
        self.inner.put_back(digest).await
    }

    async fn purge(&self, digest: &Digest) -> Result<(), BlobError> {
        self.inner.purge(digest).await
    }

    async fn free_bytes(&self) -> Result<Option<u64>, BlobError> {
        self.inner.free_bytes().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blob_store::FsBlobStore;
    use oci_model::RepositoryName;

    fn session(repo: &str, n: u8) -> UploadId {
        let repo = RepositoryName::parse(repo).unwrap();
        UploadToken::mint(b"key", &repo, 1, 0, [n; 16]).id()
    }

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn BlobStore> {
        Arc::new(FsBlobStore::open(dir.path()).await.unwrap())
    }

    fn is_refusal(result: Result<(), BlobError>) -> bool {
        matches!(result, Err(BlobError::TooManyUploads(_)))
    }

    #[tokio::test]
    async fn a_repository_at_its_cap_is_refused_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let capped = UploadCap::new(store(&dir).await, 2);
        capped.start_upload(&session("a", 1)).await.unwrap();
        capped.start_upload(&session("a", 2)).await.unwrap();
        assert!(is_refusal(capped.start_upload(&session("a", 3)).await));
        // Nothing of the refused session was created.
        assert!(matches!(
            capped.upload_len(&session("a", 3)).await,
            Err(BlobError::UploadNotFound(_))
        ));
        capped.start_upload(&session("b", 1)).await.unwrap();
        // A start asked again for an open session is not a new one.
        capped.start_upload(&session("a", 2)).await.unwrap();
        assert_eq!(capped.open_sessions(), 3);
    }

    #[tokio::test]
    async fn cancel_and_commit_free_a_slot() {
        let dir = tempfile::tempdir().unwrap();
        let capped = UploadCap::new(store(&dir).await, 1);
        capped.start_upload(&session("a", 1)).await.unwrap();
        capped.cancel_upload(&session("a", 1)).await.unwrap();
        capped.start_upload(&session("a", 2)).await.unwrap();
        let empty = Digest::parse(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .unwrap();
        capped.commit(&session("a", 2), &empty).await.unwrap();
        assert_eq!(capped.open_sessions(), 0);
        capped.start_upload(&session("a", 3)).await.unwrap();
    }

    #[tokio::test]
    async fn a_digest_mismatch_keeps_the_session_counted() {
        let dir = tempfile::tempdir().unwrap();
        let capped = UploadCap::new(store(&dir).await, 1);
        capped.start_upload(&session("a", 1)).await.unwrap();
        let other = Digest::parse(&format!("sha256:{}", "1".repeat(64))).unwrap();
        assert!(matches!(
            capped.commit(&session("a", 1), &other).await,
            Err(BlobError::DigestMismatch { .. })
        ));
        assert!(is_refusal(capped.start_upload(&session("a", 2)).await));
    }

    #[tokio::test]
    async fn files_removed_behind_its_back_are_found_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let inner = store(&dir).await;
        let capped = UploadCap::new(Arc::clone(&inner), 2);
        capped.start_upload(&session("a", 1)).await.unwrap();
        capped.start_upload(&session("a", 2)).await.unwrap();
        inner.cancel_upload(&session("a", 1)).await.unwrap();
        capped.start_upload(&session("a", 3)).await.unwrap();
        assert_eq!(capped.open_sessions(), 2);
        // Checked at most once a second: a refusal right after a check does not check again.
        inner.cancel_upload(&session("a", 2)).await.unwrap();
        assert!(is_refusal(capped.start_upload(&session("a", 4)).await));
    }

    #[tokio::test]
    async fn staging_files_of_an_earlier_run_count() {
        let dir = tempfile::tempdir().unwrap();
        let inner = store(&dir).await;
        inner.start_upload(&session("a", 1)).await.unwrap();
        inner.start_upload(&session("a", 2)).await.unwrap();
        // Not a token: never counted.
        inner.start_upload(&UploadId("0".repeat(32))).await.unwrap();
        let capped = UploadCap::new(inner, 2);
        assert!(is_refusal(capped.start_upload(&session("a", 3)).await));
        assert_eq!(capped.open_sessions(), 2);
        capped
            .start_upload(&UploadId("1".repeat(32)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_cap_of_zero_refuses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let capped = UploadCap::new(store(&dir).await, 0);
        for n in 0..5 {
            capped.start_upload(&session("a", n)).await.unwrap();
        }
        assert_eq!(capped.open_sessions(), 0);
    }
}

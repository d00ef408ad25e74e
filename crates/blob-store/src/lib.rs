//! Blob storage on one node: upload staging files and content-addressed, immutable blobs.
//!
//! This is the only Wharf crate that touches blob files. [`BlobStore`] is the contract;
//! [`FsBlobStore`] implements it on a local directory. The trait speaks `cluster-api`'s
//! [`BlobError`] and [`ByteStream`] directly, so `blob-node` adapts it to `BlobApi` without a
//! translation layer. This crate must not depend on tonic, prost or any network code: it is
//! storage, reached through `blob-node`.
//!
//! On-disk layout of an [`FsBlobStore`] rooted at `<root>`:
//!
//! ```text
//! <root>/
//!   blobs/                      final blobs: immutable, fsynced, only ever created by rename
//!     sha256/
//!       ab/                     fan-out on the first two hex characters of the digest
//!         ab12...ef             one file per digest, named by the full hex
//!     sha512/
//!       cd/
//!         cd34...90
//!   uploads/                    staging: one file per open upload, appended in place
//!     0123456789abcdef0123456789abcdef   named by the UploadId (32 lowercase hex)
//!   replicas/                   staging of replicas pushed by other nodes; emptied at open
//!     sha256-ab12...ef-7        <algorithm>-<hex>-<per-process counter>
//!   trash/                      blobs set aside by garbage collection, awaiting meta's answer;
//!     sha256-ab12...ef          <algorithm>-<hex>; everything here is put back at open
//! ```
//!
//! A blob reaches `blobs/` only by `rename` of a verified, fsynced staging file, and the
//! directory entry is fsynced before the commit returns, so a crash never leaves a partial file
//! at a final path and a reader never sees one. Garbage collection moves a whole blob between
//! `blobs/` and `trash/` by `rename` too (both directories fsynced), and unlinks it only from
//! `trash/`, once the metadata service has confirmed it may go.

mod fs;
mod replica;
mod staging;
mod stream;
mod trash;
pub mod upload_locks;

#[cfg(feature = "testsuite")]
pub mod testsuite;

use std::time::SystemTime;

use async_trait::async_trait;
use cluster_api::{BlobError, ByteStream, UploadId};
use oci_model::Digest;

pub use fs::FsBlobStore;

/// Runs a store operation as its own task, so that a caller dropping the future (a client hanging
/// up) can neither stop it half-way nor release the upload's lock while file or network work is
/// still in flight. Every `BlobStore` runs its upload and set-aside operations through this.
pub async fn detached<T, F>(operation: F) -> Result<T, BlobError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, BlobError>> + Send + 'static,
{
    tokio::spawn(operation)
        .await
        .map_err(|error| BlobError::Io(format!("blob store task failed: {error}")))?
}

/// The largest chunk a [`BlobStore::read`] stream may yield, so a reader's memory stays bounded.
pub const MAX_READ_CHUNK_BYTES: usize = 1 << 20;

/// An upload staging file as [`BlobStore::list_uploads`] reports it, for garbage collection of
/// abandoned uploads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    pub id: UploadId,
    /// Bytes appended so far.
    pub length: u64,
    /// When the upload last changed; an old one is probably abandoned.
    pub modified: SystemTime,
}

/// Upload staging plus content-addressed blobs on one node.
///
/// Operations on one upload are serialized (an append, a status or a commit of the same upload
/// never interleave); operations on different uploads and on blobs run in parallel.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Creates an empty staging file for `id`. Idempotent: an existing upload keeps its bytes.
    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError>;

    /// Appends all of `data` to upload `id` and returns the new length.
    ///
    /// All or nothing: when the upload is not exactly `offset` bytes long, fails with
    /// `OffsetMismatch { expected: <current length>, given: offset }` and writes nothing; when
    /// `data` yields an error mid-way, the upload is truncated back to `offset` and that error is
    /// returned, so [`upload_len`](BlobStore::upload_len) stays truthful. `UploadNotFound` when
    /// `id` was never started (or was committed or cancelled). Appended bytes are not fsynced
    /// until commit (that would cost a disk flush per chunk): after a crash, an upload holds
    /// whatever reached the disk and `upload_len` reports exactly that, so the client resumes
    /// from there.
    /// Dropping the returned future aborts the append as a failed stream does.
    async fn append(&self, id: &UploadId, offset: u64, data: ByteStream) -> Result<u64, BlobError>;

    /// Appends all of `data` at the current end of upload `id`, as [`append`](BlobStore::append)
    /// at the length [`upload_len`](BlobStore::upload_len) would report, but in one step.
    async fn append_at_end(&self, id: &UploadId, data: ByteStream) -> Result<u64, BlobError> {
        let offset = self.upload_len(id).await?;
        self.append(id, offset, data).await
    }

    /// The current length of upload `id`; `UploadNotFound` if there is no such upload.
    async fn upload_len(&self, id: &UploadId) -> Result<u64, BlobError>;

    /// Verifies upload `id` against `digest` (hashed with the digest's own algorithm) and makes it
    /// the durable blob `digest`, returning its size. On `DigestMismatch` the upload is kept
    /// intact, so the client may fix it. When the blob already exists the staging file is simply
    /// dropped. Returns only once the blob and its directory entry are fsynced; the upload is gone
    /// afterwards (`UploadNotFound`).
    async fn commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, BlobError>;

    /// Removes upload `id` and its bytes. Idempotent.
    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError>;

    /// Every upload staging file currently present, in no particular order.
    async fn list_uploads(&self) -> Result<Vec<UploadInfo>, BlobError>;

    /// The size of blob `digest`, `None` when this store does not hold it.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// Streams blob `digest` from `offset`, `length` bytes or to the end (a `length` past the end
    /// is cut at the end), in chunks of at most [`MAX_READ_CHUNK_BYTES`]. `NotFound` when absent; `RangeNotSatisfiable` when
    /// `offset` is past the end, or at the end of a non-empty blob (reading an empty blob from 0
    /// yields an empty stream).
    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError>;

    /// Removes blob `digest`; reads already streaming it may finish. Idempotent.
    async fn delete(&self, digest: &Digest) -> Result<(), BlobError>;

    /// Stores blob `digest` from `data`, a replica pushed by another node, and returns its size.
    /// The bytes are hashed while they are written to a staging file of their own; only a
    /// complete stream that matches `digest` is fsynced and renamed into place (directory
    /// fsynced), exactly as a commit publishes. `DigestMismatch` when the bytes are not
    /// `digest`; a failed stream or a dropped future returns or leaves nothing. Idempotent: when
    /// the blob is already held, returns its size without reading `data`.
    async fn put_replica(&self, digest: &Digest, data: ByteStream) -> Result<u64, BlobError>;

    /// Blobs held, with their sizes, in [`Digest`] order (algorithm, then hex), strictly after
    /// `after`, at most `n`: a repair scan pages through a node with this.
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError>;

    // ---- garbage collection: set aside, then purge or put back ----

    /// Takes blob `digest` out of service without deleting it, ahead of asking the metadata
    /// service whether it may really go, and returns the size it had; `None` when the blob is not
    /// held (nothing changes then). Atomic and durable: afterwards `stat` says `None`, `read` says
    /// `NotFound` and `list_blobs` skips it, until [`put_back`] or a new commit or replica of the
    /// same digest; reads already streaming it may finish. The set-aside copy stays on disk until
    /// [`purge`] or [`put_back`]; reopening the store puts back every copy still set aside, since
    /// nobody waits for a decision about it any more (a copy kept by mistake is an orphan, one
    /// deleted by mistake a lost replica). A copy already set aside for `digest` is replaced.
    ///
    /// [`put_back`]: BlobStore::put_back
    /// [`purge`]: BlobStore::purge
    async fn set_aside(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// Returns the set-aside copy of `digest` to service, durably; `stat` and `read` see it again.
    /// A copy of `digest` committed or replicated meanwhile is replaced, which changes nothing a
    /// reader can see: both are the bytes of `digest`. Idempotent: nothing set aside, nothing done.
    async fn put_back(&self, digest: &Digest) -> Result<(), BlobError>;

    /// Deletes the set-aside copy of `digest` for good, durably. Never touches a copy in service
    /// (one committed or replicated after the set-aside stays). Idempotent: nothing set aside,
    /// nothing done.
    async fn purge(&self, digest: &Digest) -> Result<(), BlobError>;

    // ---- capacity ----

    /// Bytes this store may still write; `None` when it has no such limit (an object store).
    /// The node reports itself full below its `min_free_bytes`.
    async fn free_bytes(&self) -> Result<Option<u64>, BlobError> {
        Ok(None)
    }
}

//! [`BlobApi`]: one blob storage node, and [`BlobNodes`]: how a caller reaches each node.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use oci_model::{Digest, RepositoryName};

use crate::error::BlobError;
use crate::types::*;

/// A stream of blob bytes. Errors end the stream. Its `size_hint` counts bytes, not chunks, and
/// is exact (`(n, Some(n))`) when the length is known up front (the client's `Content-Length`):
/// a store refuses a body that cannot fit before reading it.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send + 'static>>;

/// The bytes `data` says it will yield, when it knows (see [`ByteStream`]); `None` for an
/// unknown or zero length.
pub fn declared_length(data: &ByteStream) -> Option<u64> {
    match data.size_hint() {
        (low, Some(high)) if low == high && low > 0 => u64::try_from(low).ok(),
        _ => None,
    }
}

/// `data`, declaring that it yields `length` bytes (a stream that crossed the network lost its
/// hint; the sender's declaration puts it back).
pub fn with_declared_length(data: ByteStream, length: u64) -> ByteStream {
    Box::pin(Declared {
        inner: data,
        left: length,
    })
}

struct Declared {
    inner: ByteStream,
    left: u64,
}

impl Stream for Declared {
    type Item = Result<Bytes, BlobError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.left = self.left.saturating_sub(chunk.len() as u64);
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// One blob storage node: content-addressed blobs plus staging files for uploads.
#[async_trait]
pub trait BlobApi: Send + Sync + 'static {
    /// Creates an empty staging file for `id`. Idempotent.
    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError>;

    /// Appends `data` to upload `id`, which must currently be `offset` bytes long (else
    /// `OffsetMismatch` and nothing is written). Returns the new length. A failed stream leaves
    /// the upload at a length the next status call reports.
    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, BlobError>;

    /// Appends `data` at the current end of upload `id` (a streamed `PATCH` without
    /// `Content-Range`); like [`append_upload`](BlobApi::append_upload) at the offset a status
    /// call would report, in one call on a remote node.
    async fn append_at_end(&self, id: &UploadId, data: ByteStream) -> Result<u64, BlobError> {
        let offset = self.upload_status(id).await?;
        self.append_upload(id, offset, data).await
    }

    /// The current length of upload `id`; `UploadNotFound` if unknown.
    async fn upload_status(&self, id: &UploadId) -> Result<u64, BlobError>;

    /// Verifies upload `id` against `digest` (`DigestMismatch` otherwise, the upload kept), makes
    /// it durable under its digest (file and directory fsynced) and removes the staging file.
    /// The node remembers for a while that `id` became `digest`: the same commit again (a client
    /// retrying a PUT whose answer it lost, or meta not reached the first time) succeeds again,
    /// and re-replicates; any other use of `id` is `UploadNotFound`. A missing staging file is
    /// never taken as a commit, so an upload id cannot claim a blob it did not upload. `repo` is
    /// the repository the blob is pushed into: its placement rules decide where copies go.
    async fn commit_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
    ) -> Result<CommittedBlob, BlobError>;

    /// [`append_at_end`](BlobApi::append_at_end) then [`commit_upload`](BlobApi::commit_upload),
    /// in one call on a remote node: a `PUT` that carries the upload's last bytes. Fails as
    /// either step would (a failed append commits nothing).
    async fn append_and_commit(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        data: ByteStream,
        digest: &Digest,
    ) -> Result<CommittedBlob, BlobError> {
        self.append_at_end(id, data).await?;
        self.commit_upload(repo, id, digest).await
    }

    /// Removes upload `id` (and what is remembered of its commit). Idempotent.
    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError>;

    /// The size of blob `digest` if this node holds it.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// Streams blob `digest` from `offset`, `length` bytes or to the end. `RangeNotSatisfiable`
    /// when `offset` is past the end; `NotFound` when absent.
    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError>;

    /// Removes blob `digest`. Idempotent.
    async fn delete(&self, digest: &Digest) -> Result<(), BlobError>;

    /// Stores a replica of `digest` pushed by another node (replication on write, repair,
    /// rebalance): verified against `digest` while it is written, fsynced and published like a
    /// commit, and never replicated onward. `DigestMismatch` if the bytes are not `digest`; a
    /// failed or abandoned stream keeps nothing. Idempotent: a node that already holds `digest`
    /// succeeds without needing the bytes.
    async fn put_replica(&self, digest: &Digest, data: ByteStream) -> Result<(), BlobError>;

    /// The base URL of the node's own HTTP endpoint for redirected blob GETs
    /// (`<url>/blobs/<digest>?<signed query>`, see [`sign_blob_query`](crate::sign_blob_query)),
    /// when it serves one.
    fn direct_url(&self) -> Option<String> {
        None
    }

    /// Digests this node holds with their sizes, in `Digest` order, strictly after `after`, at
    /// most `n` (repair scans page through a node with this).
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError>;
}

/// Reaches blob nodes by id, as the cluster map names them.
#[async_trait]
pub trait BlobNodes: Send + Sync + 'static {
    /// A handle on node `id`; `Unavailable` if the node is not known.
    async fn node(&self, id: BlobNodeId) -> Result<Arc<dyn BlobApi>, BlobError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let parts: Vec<Result<Bytes, BlobError>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(parts))
    }

    #[test]
    fn a_declared_length_counts_down_as_bytes_go_by() {
        futures::executor::block_on(counts_down());
    }

    async fn counts_down() {
        let plain = chunks(&[b"abc", b"de"]);
        // An iterator stream's own hint counts items: two chunks, not five bytes, so it is not
        // taken for a length.
        assert_ne!(declared_length(&plain), Some(5));
        let mut declared = with_declared_length(plain, 5);
        assert_eq!(declared_length(&declared), Some(5));
        assert_eq!(declared.next().await.unwrap().unwrap(), "abc");
        assert_eq!(declared_length(&declared), Some(2));
        assert_eq!(declared.next().await.unwrap().unwrap(), "de");
        assert_eq!(declared_length(&declared), None);
        assert!(declared.next().await.is_none());
    }
}

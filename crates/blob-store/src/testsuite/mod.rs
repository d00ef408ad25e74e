//! The behaviour every [`BlobStore`] must show, as one suite that each implementation runs
//! (STYLE.md rule 5). An implementation provides a [`StoreFactory`] and expands
//! [`blob_store_testsuite!`](crate::blob_store_testsuite) in a test file:
//!
//! ```ignore
//! blob_store::blob_store_testsuite!(MyFactory::new());
//! ```
//!
//! Each case is also a public function, for an implementation that wants to run only some.

mod cases;
mod chunkings;
mod replicas;
mod set_aside;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use cluster_api::{BlobError, ByteStream, UploadId};
use futures::{stream, TryStreamExt};
use oci_model::Digest;

use crate::BlobStore;

pub use cases::*;
pub use chunkings::random_chunkings_commit_to_their_digest;
pub use replicas::*;
pub use set_aside::*;

/// Opens stores over one backing storage (a directory, a bucket, a shared map).
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    type Store: BlobStore;

    /// Opens a store over this factory's storage. Opening again models a process restart:
    /// committed blobs and staging uploads persist, in-memory state does not.
    async fn open(&self) -> Self::Store;
}

/// Expands to one `#[test]` per suite case. `$factory` is evaluated afresh for every case, so
/// each case starts from empty storage.
#[macro_export]
macro_rules! blob_store_testsuite {
    ($factory:expr) => {
        $crate::blob_store_testsuite!(@cases $factory;
            start_upload_is_idempotent,
            append_grows_and_status_reports,
            append_at_end_follows_the_upload,
            offset_mismatch_writes_nothing,
            unknown_upload_is_not_found,
            commit_makes_blob_readable_and_ends_upload,
            digest_mismatch_keeps_upload,
            commit_of_known_blob_deduplicates,
            empty_blob_commits_and_reads,
            read_ranges,
            large_blob_streams_in_bounded_chunks,
            missing_blob_and_idempotent_delete,
            sha512_blobs,
            failed_stream_truncates_to_offset,
            abandoned_append_is_rolled_back,
            concurrent_appends_to_one_upload_are_serialized,
            cancel_is_idempotent,
            list_uploads_reports_open_uploads,
            reopen_keeps_blobs_and_continues_uploads,
            put_replica_verifies_and_is_idempotent,
            failed_replica_leaves_nothing,
            abandoned_replica_leaves_nothing,
            list_blobs_pages_in_digest_order,
            set_aside_hides_a_blob_until_put_back,
            purge_deletes_the_set_aside_copy_for_good,
            a_copy_stored_while_set_aside_is_kept,
            reopen_puts_set_aside_blobs_back,
        );

        #[test]
        fn random_chunkings_commit_to_their_digest() {
            $crate::testsuite::random_chunkings_commit_to_their_digest(&$factory);
        }
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testsuite::run(async {
                    let factory = $factory;
                    $crate::testsuite::$case(&factory).await;
                });
            }
        )*
    };
}

/// A runtime like a server's: several worker threads, timers and I/O enabled.
pub fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the test runtime")
}

/// Runs one async case to completion on a fresh [`test_runtime`].
pub fn run<F: Future<Output = ()>>(case: F) {
    test_runtime().block_on(case)
}

/// A fresh upload id, unique within this process.
pub fn new_upload_id() -> UploadId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = UploadId(format!("{:032x}", NEXT.fetch_add(1, Ordering::Relaxed)));
    assert!(UploadId::parse(id.as_str()).is_some());
    id
}

/// `data` as a stream of chunks of at most `chunk_len` bytes.
pub fn chunked(data: &[u8], chunk_len: usize) -> ByteStream {
    let chunks: Vec<Result<Bytes, BlobError>> = data
        .chunks(chunk_len.max(1))
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    Box::pin(stream::iter(chunks))
}

/// `data` as one chunk.
pub fn whole(data: &[u8]) -> ByteStream {
    chunked(data, data.len())
}

/// Deterministic, incompressible-looking bytes (xorshift), different for each `seed`.
pub fn patterned(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Starts a new upload holding `data`.
pub async fn upload(store: &dyn BlobStore, data: &[u8]) -> UploadId {
    let id = new_upload_id();
    store.start_upload(&id).await.expect("start upload");
    let len = store
        .append(&id, 0, chunked(data, 64 * 1024))
        .await
        .expect("append");
    assert_eq!(len, data.len() as u64);
    id
}

/// Commits `data` as a sha256 blob and returns its digest.
pub async fn put_blob(store: &dyn BlobStore, data: &[u8]) -> Digest {
    let id = upload(store, data).await;
    let digest = Digest::sha256_of(data);
    assert_eq!(store.commit(&id, &digest).await, Ok(data.len() as u64));
    digest
}

/// Reads a range of `digest` to the end of the stream.
pub async fn read_all(
    store: &dyn BlobStore,
    digest: &Digest,
    offset: u64,
    length: Option<u64>,
) -> Result<Vec<u8>, BlobError> {
    let chunks: Vec<Bytes> = store
        .read(digest, offset, length)
        .await?
        .try_collect()
        .await?;
    Ok(chunks.concat())
}

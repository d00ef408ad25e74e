//! The suite's cases: each one opens its own store from the factory and checks one part of the
//! [`BlobStore`] contract.

use std::sync::Arc;

use bytes::Bytes;
use cluster_api::{BlobError, ByteStream};
use futures::{stream, StreamExt, TryStreamExt};
use oci_model::{Algorithm, Digest};
use tokio::sync::oneshot;

use super::*;
use crate::{BlobStore, MAX_READ_CHUNK_BYTES};

pub async fn start_upload_is_idempotent<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = upload(&store, b"hello").await;
    store.start_upload(&id).await.expect("start again");
    assert_eq!(
        store.upload_len(&id).await,
        Ok(5),
        "a repeated start keeps the bytes"
    );
}

pub async fn append_grows_and_status_reports<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = new_upload_id();
    store.start_upload(&id).await.expect("start");
    assert_eq!(store.upload_len(&id).await, Ok(0));
    assert_eq!(store.append(&id, 0, whole(b"hello ")).await, Ok(6));
    assert_eq!(store.upload_len(&id).await, Ok(6));
    assert_eq!(store.append(&id, 6, chunked(b"world", 2)).await, Ok(11));
    assert_eq!(
        store.append(&id, 11, chunked(b"", 1)).await,
        Ok(11),
        "an empty append is fine"
    );
    assert_eq!(store.upload_len(&id).await, Ok(11));
    assert_eq!(
        store.commit(&id, &Digest::sha256_of(b"hello world")).await,
        Ok(11)
    );
}

pub async fn append_at_end_follows_the_upload<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = new_upload_id();
    store.start_upload(&id).await.expect("start");
    assert_eq!(store.append_at_end(&id, whole(b"hello ")).await, Ok(6));
    assert_eq!(store.append(&id, 6, whole(b"wor")).await, Ok(9));
    assert_eq!(store.append_at_end(&id, chunked(b"ld", 1)).await, Ok(11));
    // A failed stream rolls back to where it started, as at an explicit offset.
    let failure = BlobError::Unavailable("client went away".into());
    let failing: ByteStream = Box::pin(stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(failure.clone()),
    ]));
    assert_eq!(store.append_at_end(&id, failing).await, Err(failure));
    assert_eq!(store.upload_len(&id).await, Ok(11));
    assert_eq!(
        store.commit(&id, &Digest::sha256_of(b"hello world")).await,
        Ok(11)
    );
    let gone = Err(BlobError::UploadNotFound(id.to_string()));
    assert_eq!(store.append_at_end(&id, whole(b"x")).await, gone);
    let never = new_upload_id();
    let unknown = Err(BlobError::UploadNotFound(never.to_string()));
    assert_eq!(store.append_at_end(&never, whole(b"x")).await, unknown);
}

pub async fn offset_mismatch_writes_nothing<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = upload(&store, b"abc").await;
    for given in [0, 2, 4, 100] {
        assert_eq!(
            store.append(&id, given, whole(b"zzz")).await,
            Err(BlobError::OffsetMismatch { expected: 3, given })
        );
    }
    assert_eq!(store.upload_len(&id).await, Ok(3));
    assert_eq!(store.append(&id, 3, whole(b"def")).await, Ok(6));
    assert_eq!(
        store.commit(&id, &Digest::sha256_of(b"abcdef")).await,
        Ok(6)
    );
}

pub async fn unknown_upload_is_not_found<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = new_upload_id();
    let not_found = Err(BlobError::UploadNotFound(id.to_string()));
    assert_eq!(store.upload_len(&id).await, not_found);
    assert_eq!(store.append(&id, 0, whole(b"x")).await, not_found);
    assert_eq!(
        store.commit(&id, &Digest::sha256_of(b"x")).await.map(drop),
        not_found.map(drop)
    );
    assert_eq!(store.stat(&Digest::sha256_of(b"x")).await, Ok(None));
}

pub async fn commit_makes_blob_readable_and_ends_upload<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(100_000, 1);
    let id = upload(&store, &data).await;
    let digest = Digest::sha256_of(&data);
    assert_eq!(
        store.stat(&digest).await,
        Ok(None),
        "nothing is visible before commit"
    );
    assert_eq!(store.commit(&id, &digest).await, Ok(100_000));
    assert_eq!(store.stat(&digest).await, Ok(Some(100_000)));
    assert_eq!(read_all(&store, &digest, 0, None).await, Ok(data));
    let gone = Err(BlobError::UploadNotFound(id.to_string()));
    assert_eq!(store.upload_len(&id).await, gone);
    assert_eq!(
        store.commit(&id, &digest).await,
        gone,
        "a second commit has no upload"
    );
    let uploads = store.list_uploads().await.expect("list uploads");
    assert!(uploads.iter().all(|upload| upload.id != id));
}

pub async fn digest_mismatch_keeps_upload<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = upload(&store, b"partial").await;
    let wrong = Digest::sha256_of(b"something else");
    assert_eq!(
        store.commit(&id, &wrong).await,
        Err(BlobError::DigestMismatch {
            expected: wrong.clone(),
            actual: Digest::sha256_of(b"partial"),
        })
    );
    assert_eq!(store.stat(&wrong).await, Ok(None));
    assert_eq!(store.stat(&Digest::sha256_of(b"partial")).await, Ok(None));
    assert_eq!(store.upload_len(&id).await, Ok(7), "the upload is intact");
    assert_eq!(store.append(&id, 7, whole(b" upload")).await, Ok(14));
    let right = Digest::sha256_of(b"partial upload");
    assert_eq!(store.commit(&id, &right).await, Ok(14));
    assert_eq!(
        read_all(&store, &right, 0, None).await,
        Ok(b"partial upload".to_vec())
    );
}

pub async fn commit_of_known_blob_deduplicates<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let digest = put_blob(&store, b"same bytes").await;
    let again = upload(&store, b"same bytes").await;
    assert_eq!(store.commit(&again, &digest).await, Ok(10));
    assert_eq!(
        store.upload_len(&again).await,
        Err(BlobError::UploadNotFound(again.to_string()))
    );
    assert_eq!(
        read_all(&store, &digest, 0, None).await,
        Ok(b"same bytes".to_vec())
    );
}

pub async fn empty_blob_commits_and_reads<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let digest = put_blob(&store, b"").await;
    assert_eq!(store.stat(&digest).await, Ok(Some(0)));
    assert_eq!(read_all(&store, &digest, 0, None).await, Ok(Vec::new()));
    assert_eq!(read_all(&store, &digest, 0, Some(10)).await, Ok(Vec::new()));
    assert_eq!(
        read_all(&store, &digest, 1, None).await,
        Err(BlobError::RangeNotSatisfiable { offset: 1, size: 0 })
    );
}

pub async fn read_ranges<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = b"0123456789".to_vec();
    let digest = put_blob(&store, &data).await;
    for (offset, length, expected) in [
        (0, None, &data[..]),
        (3, None, &data[3..]),
        (3, Some(4), &data[3..7]),
        (3, Some(0), &data[3..3]),
        (9, Some(1), &data[9..]),
        (8, Some(100), &data[8..]),
        (0, Some(u64::MAX), &data[..]),
    ] {
        assert_eq!(
            read_all(&store, &digest, offset, length).await,
            Ok(expected.to_vec()),
            "offset {offset}, length {length:?}"
        );
    }
    for offset in [10, 11, u64::MAX] {
        assert_eq!(
            read_all(&store, &digest, offset, None).await.map(drop),
            Err(BlobError::RangeNotSatisfiable { offset, size: 10 })
        );
    }
}

pub async fn large_blob_streams_in_bounded_chunks<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(3 * 1024 * 1024 + 17, 2);
    let id = new_upload_id();
    store.start_upload(&id).await.expect("start");
    // Many small chunks in one append, as an HTTP body arrives.
    assert_eq!(
        store.append(&id, 0, chunked(&data, 4096)).await,
        Ok(data.len() as u64)
    );
    let digest = Digest::sha256_of(&data);
    assert_eq!(store.commit(&id, &digest).await, Ok(data.len() as u64));
    let chunks: Vec<Bytes> = store
        .read(&digest, 5, None)
        .await
        .expect("read")
        .try_collect()
        .await
        .expect("read stream");
    assert!(chunks.len() > 1);
    assert!(chunks
        .iter()
        .all(|chunk| chunk.len() <= MAX_READ_CHUNK_BYTES));
    assert!(chunks.concat() == data[5..], "read-back content differs");
}

pub async fn missing_blob_and_idempotent_delete<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let missing = Digest::sha256_of(b"never stored");
    assert_eq!(store.stat(&missing).await, Ok(None));
    assert_eq!(
        store.read(&missing, 0, None).await.map(drop),
        Err(BlobError::NotFound(missing.clone()))
    );
    assert_eq!(store.delete(&missing).await, Ok(()));
    let digest = put_blob(&store, b"short-lived").await;
    assert_eq!(store.delete(&digest).await, Ok(()));
    assert_eq!(store.stat(&digest).await, Ok(None));
    assert_eq!(
        store.read(&digest, 0, None).await.map(drop),
        Err(BlobError::NotFound(digest.clone()))
    );
    assert_eq!(store.delete(&digest).await, Ok(()));
}

pub async fn sha512_blobs<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(50_000, 3);
    let sha512 = Digest::of(Algorithm::Sha512, &data);
    let id = upload(&store, &data).await;
    let wrong = Digest::of(Algorithm::Sha512, b"other");
    assert_eq!(
        store.commit(&id, &wrong).await,
        Err(BlobError::DigestMismatch {
            expected: wrong,
            actual: sha512.clone()
        })
    );
    assert_eq!(store.commit(&id, &sha512).await, Ok(50_000));
    assert_eq!(read_all(&store, &sha512, 0, None).await, Ok(data.clone()));
    // The same bytes under sha256 are a separate blob.
    let sha256 = Digest::sha256_of(&data);
    assert_eq!(store.stat(&sha256).await, Ok(None));
    assert_eq!(put_blob(&store, &data).await, sha256);
    assert_eq!(store.stat(&sha512).await, Ok(Some(50_000)));
}

pub async fn failed_stream_truncates_to_offset<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = upload(&store, b"kept").await;
    // Large chunks, so that bytes really reach the file before the stream fails.
    let big = patterned(700 * 1024, 4);
    let failure = BlobError::Unavailable("client went away".into());
    let chunks = vec![
        Ok(Bytes::from(big.clone())),
        Ok(Bytes::from(big.clone())),
        Err(failure.clone()),
        Ok(Bytes::from_static(b"never written")),
    ];
    let failing: ByteStream = Box::pin(stream::iter(chunks));
    assert_eq!(store.append(&id, 4, failing).await, Err(failure));
    assert_eq!(
        store.upload_len(&id).await,
        Ok(4),
        "the failed append is rolled back"
    );
    assert_eq!(store.append(&id, 4, whole(b" and more")).await, Ok(13));
    assert_eq!(
        store
            .commit(&id, &Digest::sha256_of(b"kept and more"))
            .await,
        Ok(13)
    );
}

pub async fn abandoned_append_is_rolled_back<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = upload(&store, b"abc").await;
    let (stalled_tx, stalled_rx) = oneshot::channel::<()>();
    // One chunk, then a stream that never ends, like a client that stopped sending.
    let stall = stream::once(async move {
        let _ = stalled_tx.send(());
        futures::future::pending::<Result<Bytes, BlobError>>().await
    });
    let stalled: ByteStream = Box::pin(stream::iter([Ok(Bytes::from_static(b"def"))]).chain(stall));
    let mut append = store.append(&id, 3, stalled);
    tokio::select! {
        result = &mut append => panic!("an append of a stalled stream returned {result:?}"),
        _ = stalled_rx => {}
    }
    // The caller gives up, as a server does when its client disconnects.
    drop(append);
    // Deadline: a store that kept waiting on the abandoned stream would hold the upload forever.
    let len = tokio::time::timeout(std::time::Duration::from_secs(30), store.upload_len(&id)).await;
    assert_eq!(
        len,
        Ok(Ok(3)),
        "the abandoned append must be rolled back and release the upload"
    );
    assert_eq!(store.append(&id, 3, whole(b"xyz")).await, Ok(6));
    assert_eq!(
        store.commit(&id, &Digest::sha256_of(b"abcxyz")).await,
        Ok(6)
    );
}

pub async fn concurrent_appends_to_one_upload_are_serialized<F: StoreFactory>(factory: &F) {
    let store = Arc::new(factory.open().await);
    let id = new_upload_id();
    store.start_upload(&id).await.expect("start");
    // Different lengths, so the winner can be told from the resulting length.
    let contenders: Vec<Vec<u8>> = (0..6)
        .map(|n| patterned(64 * 1024 + n * 1000, 10 + n as u64))
        .collect();
    let tasks: Vec<_> = contenders
        .iter()
        .map(|data| {
            let (store, id) = (Arc::clone(&store), id.clone());
            // Slow streams: each chunk yields first, so the appends really overlap.
            let chunks: Vec<Bytes> = data.chunks(4096).map(Bytes::copy_from_slice).collect();
            let slow: ByteStream = Box::pin(stream::iter(chunks).then(|chunk| async move {
                tokio::task::yield_now().await;
                Ok(chunk)
            }));
            tokio::spawn(async move { store.append(&id, 0, slow).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("append task"));
    }
    let winners: Vec<u64> = results
        .iter()
        .filter_map(|result| result.clone().ok())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one append at offset 0 wins: {results:?}"
    );
    let winner_len = winners[0];
    for result in &results {
        if let Err(error) = result {
            assert_eq!(
                *error,
                BlobError::OffsetMismatch {
                    expected: winner_len,
                    given: 0
                }
            );
        }
    }
    let winner = contenders
        .iter()
        .find(|data| data.len() as u64 == winner_len)
        .expect("the winner's data");
    assert_eq!(
        store.commit(&id, &Digest::sha256_of(winner)).await,
        Ok(winner_len)
    );
}

pub async fn cancel_is_idempotent<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let id = upload(&store, b"abandoned").await;
    assert_eq!(store.cancel_upload(&id).await, Ok(()));
    assert_eq!(store.cancel_upload(&id).await, Ok(()));
    let gone = Err(BlobError::UploadNotFound(id.to_string()));
    assert_eq!(store.upload_len(&id).await, gone);
    assert_eq!(
        store.commit(&id, &Digest::sha256_of(b"abandoned")).await,
        gone
    );
    assert_eq!(
        store.cancel_upload(&new_upload_id()).await,
        Ok(()),
        "never started"
    );
    // The id may be started again, from nothing.
    store.start_upload(&id).await.expect("restart");
    assert_eq!(store.upload_len(&id).await, Ok(0));
}

pub async fn list_uploads_reports_open_uploads<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let empty = new_upload_id();
    store.start_upload(&empty).await.expect("start");
    let filled = upload(&store, b"12345").await;
    let committed = upload(&store, b"done").await;
    store
        .commit(&committed, &Digest::sha256_of(b"done"))
        .await
        .expect("commit");
    let mut listed: Vec<(String, u64)> = store
        .list_uploads()
        .await
        .expect("list uploads")
        .into_iter()
        .map(|upload| (upload.id.to_string(), upload.length))
        .collect();
    listed.sort();
    let mut expected = vec![(empty.to_string(), 0), (filled.to_string(), 5)];
    expected.sort();
    assert_eq!(listed, expected);
}

pub async fn reopen_keeps_blobs_and_continues_uploads<F: StoreFactory>(factory: &F) {
    let data = patterned(300_000, 5);
    let (kept, sha256_upload, sha512_upload) = {
        let store = factory.open().await;
        let kept = put_blob(&store, b"committed before the restart").await;
        (
            kept,
            upload(&store, &data[..100_000]).await,
            upload(&store, &data[..1]).await,
        )
    };
    // A new process over the same storage: no running hashes, so commits re-read the files.
    let store = factory.open().await;
    assert_eq!(store.stat(&kept).await, Ok(Some(28)));
    assert_eq!(
        read_all(&store, &kept, 0, None).await,
        Ok(b"committed before the restart".to_vec())
    );
    assert_eq!(store.upload_len(&sha256_upload).await, Ok(100_000));
    assert_eq!(
        store
            .append(&sha256_upload, 100_000, chunked(&data[100_000..], 50_000))
            .await,
        Ok(300_000)
    );
    let wrong = Digest::sha256_of(b"wrong");
    assert_eq!(
        store.commit(&sha256_upload, &wrong).await,
        Err(BlobError::DigestMismatch {
            expected: wrong,
            actual: Digest::sha256_of(&data)
        })
    );
    assert_eq!(
        store
            .commit(&sha256_upload, &Digest::sha256_of(&data))
            .await,
        Ok(300_000)
    );
    let sha512 = Digest::of(Algorithm::Sha512, &data[..1]);
    assert_eq!(store.commit(&sha512_upload, &sha512).await, Ok(1));
    assert_eq!(
        read_all(&store, &sha512, 0, None).await,
        Ok(data[..1].to_vec())
    );
}

//! The suite's cases for replicas pushed by other nodes and for blob listings.

use bytes::Bytes;
use cluster_api::{BlobError, ByteStream};
use futures::{stream, StreamExt};
use oci_model::{Algorithm, Digest};
use tokio::sync::oneshot;

use super::*;

pub async fn put_replica_verifies_and_is_idempotent<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(700_000, 21);
    let digest = Digest::sha256_of(&data);
    let wrong = Digest::sha256_of(b"not these bytes");
    assert_eq!(
        store.put_replica(&wrong, chunked(&data, 100_000)).await,
        Err(BlobError::DigestMismatch {
            expected: wrong.clone(),
            actual: digest.clone()
        })
    );
    assert_eq!(store.stat(&wrong).await, Ok(None));
    assert_eq!(
        store.put_replica(&digest, chunked(&data, 100_000)).await,
        Ok(700_000)
    );
    assert_eq!(read_all(&store, &digest, 0, None).await, Ok(data.clone()));
    // Held already: the stream is not even read, so a broken one still succeeds.
    let broken: ByteStream = Box::pin(stream::iter([Err(BlobError::Io("unused".into()))]));
    assert_eq!(store.put_replica(&digest, broken).await, Ok(700_000));
    let sha512 = Digest::of(Algorithm::Sha512, b"five");
    assert_eq!(store.put_replica(&sha512, whole(b"five")).await, Ok(4));
    let empty = Digest::sha256_of(b"");
    assert_eq!(store.put_replica(&empty, chunked(b"", 1)).await, Ok(0));
    assert_eq!(store.stat(&empty).await, Ok(Some(0)));
    assert!(
        store.list_uploads().await.expect("list uploads").is_empty(),
        "replicas never show up as uploads"
    );
}

pub async fn failed_replica_leaves_nothing<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(900_000, 22);
    let digest = Digest::sha256_of(&data);
    let failure = BlobError::Unavailable("sender went away".into());
    let chunks = vec![
        Ok(Bytes::copy_from_slice(&data[..800_000])),
        Err(failure.clone()),
    ];
    let failing: ByteStream = Box::pin(stream::iter(chunks));
    assert_eq!(store.put_replica(&digest, failing).await, Err(failure));
    assert_eq!(store.stat(&digest).await, Ok(None));
    // A short but clean stream is a digest mismatch, never a truncated blob.
    assert!(matches!(
        store.put_replica(&digest, whole(&data[..10])).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert_eq!(store.stat(&digest).await, Ok(None));
    assert_eq!(store.list_blobs(None, 10).await, Ok(Vec::new()));
    assert_eq!(store.put_replica(&digest, whole(&data)).await, Ok(900_000));
}

pub async fn abandoned_replica_leaves_nothing<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(10_000, 23);
    let digest = Digest::sha256_of(&data);
    let (stalled_tx, stalled_rx) = oneshot::channel::<()>();
    let stall = stream::once(async move {
        let _ = stalled_tx.send(());
        futures::future::pending::<Result<Bytes, BlobError>>().await
    });
    let stalled: ByteStream =
        Box::pin(stream::iter([Ok(Bytes::copy_from_slice(&data[..5000]))]).chain(stall));
    let mut put = store.put_replica(&digest, stalled);
    tokio::select! {
        result = &mut put => panic!("a replica of a stalled stream returned {result:?}"),
        _ = stalled_rx => {}
    }
    drop(put);
    assert_eq!(store.stat(&digest).await, Ok(None));
    assert_eq!(store.put_replica(&digest, whole(&data)).await, Ok(10_000));
    assert_eq!(read_all(&store, &digest, 0, None).await, Ok(data));
}

pub async fn list_blobs_pages_in_digest_order<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let mut expected: Vec<(Digest, u64)> = Vec::new();
    for seed in 0..40u64 {
        let data = patterned(seed as usize * 3, seed + 100);
        expected.push((put_blob(&store, &data).await, data.len() as u64));
    }
    for seed in 0..5u64 {
        let data = patterned(7, seed + 200);
        let digest = Digest::of(Algorithm::Sha512, &data);
        assert_eq!(store.put_replica(&digest, whole(&data)).await, Ok(7));
        expected.push((digest, 7));
    }
    // An open upload is not a blob.
    upload(&store, b"not committed").await;
    expected.sort();
    assert_eq!(store.list_blobs(None, 0).await, Ok(Vec::new()));
    let mut listed = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = store
            .list_blobs(after.as_ref(), 7)
            .await
            .expect("list blobs");
        assert!(page.len() <= 7);
        match page.last() {
            Some((last, _)) => after = Some(last.clone()),
            None => break,
        }
        listed.extend(page);
    }
    assert_eq!(listed, expected);
    let (middle, _) = &expected[20];
    assert_eq!(
        store.list_blobs(Some(middle), 100).await,
        Ok(expected[21..].to_vec())
    );
    let absent = Digest::sha256_of(b"absent");
    let after_absent: Vec<(Digest, u64)> = expected
        .iter()
        .filter(|(digest, _)| *digest > absent)
        .cloned()
        .collect();
    assert_eq!(store.list_blobs(Some(&absent), 100).await, Ok(after_absent));
}

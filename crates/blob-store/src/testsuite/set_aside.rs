//! The suite's cases for garbage collection's two steps: setting a blob aside, then purging it
//! or putting it back.

use bytes::Bytes;
use cluster_api::BlobError;
use futures::TryStreamExt;
use oci_model::{Algorithm, Digest};

use super::*;
use crate::MAX_READ_CHUNK_BYTES;

/// `digest` is not in service: no size, no reads, not listed.
async fn assert_out_of_service(store: &dyn BlobStore, digest: &Digest) {
    assert_eq!(store.stat(digest).await, Ok(None), "{digest}");
    assert_eq!(
        store.read(digest, 0, None).await.map(drop),
        Err(BlobError::NotFound(digest.clone())),
        "{digest}"
    );
    let listed = store
        .list_blobs(None, usize::MAX)
        .await
        .expect("list blobs");
    assert!(listed.iter().all(|(held, _)| held != digest), "{digest}");
}

pub async fn set_aside_hides_a_blob_until_put_back<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(300_000, 31);
    let digest = put_blob(&store, &data).await;
    let other = put_blob(&store, b"bystander").await;
    assert_eq!(store.set_aside(&digest).await, Ok(Some(300_000)));
    assert_out_of_service(&store, &digest).await;
    assert_eq!(store.set_aside(&digest).await, Ok(None), "already aside");
    assert_eq!(store.stat(&other).await, Ok(Some(9)), "other blobs stay");
    assert_eq!(store.put_back(&digest).await, Ok(()));
    assert_eq!(store.stat(&digest).await, Ok(Some(300_000)));
    assert_eq!(read_all(&store, &digest, 0, None).await, Ok(data));
    assert_eq!(store.put_back(&digest).await, Ok(()), "idempotent");
    assert_eq!(store.stat(&digest).await, Ok(Some(300_000)));
    let never_stored = Digest::sha256_of(b"never stored");
    assert_eq!(store.set_aside(&never_stored).await, Ok(None));
    assert_eq!(store.put_back(&never_stored).await, Ok(()));
    assert_eq!(store.purge(&never_stored).await, Ok(()));
    assert_eq!(store.stat(&never_stored).await, Ok(None));
    let empty = put_blob(&store, b"").await;
    assert_eq!(store.set_aside(&empty).await, Ok(Some(0)));
    assert_eq!(store.put_back(&empty).await, Ok(()));
    assert_eq!(read_all(&store, &empty, 0, None).await, Ok(Vec::new()));
}

pub async fn purge_deletes_the_set_aside_copy_for_good<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(2 * MAX_READ_CHUNK_BYTES + 5, 32);
    let digest = put_blob(&store, &data).await;
    // A reader that started before the blob went aside reads it to the end.
    let streaming = store.read(&digest, 0, None).await.expect("read");
    assert_eq!(store.set_aside(&digest).await, Ok(Some(data.len() as u64)));
    assert_eq!(store.purge(&digest).await, Ok(()));
    let chunks: Vec<Bytes> = streaming.try_collect().await.expect("read stream");
    assert!(chunks.concat() == data, "the reader saw other bytes");
    assert_out_of_service(&store, &digest).await;
    assert_eq!(
        store.put_back(&digest).await,
        Ok(()),
        "nothing left to put back"
    );
    assert_out_of_service(&store, &digest).await;
    assert_eq!(store.purge(&digest).await, Ok(()), "idempotent");
    let sha512 = Digest::of(Algorithm::Sha512, b"five");
    assert_eq!(store.put_replica(&sha512, whole(b"five")).await, Ok(4));
    assert_eq!(store.set_aside(&sha512).await, Ok(Some(4)));
    assert_eq!(store.purge(&sha512).await, Ok(()));
    assert_out_of_service(&store, &sha512).await;
}

pub async fn a_copy_stored_while_set_aside_is_kept<F: StoreFactory>(factory: &F) {
    let store = factory.open().await;
    let data = patterned(50_000, 33);
    let digest = put_blob(&store, &data).await;

    // Pushed again while aside, then put back: one copy, the same bytes.
    assert_eq!(store.set_aside(&digest).await, Ok(Some(50_000)));
    assert_eq!(put_blob(&store, &data).await, digest);
    assert_eq!(store.put_back(&digest).await, Ok(()));
    assert_eq!(read_all(&store, &digest, 0, None).await, Ok(data.clone()));
    assert_eq!(
        store.list_blobs(None, 10).await,
        Ok(vec![(digest.clone(), 50_000)])
    );

    // Replicated again while aside, then purged: purge takes only the set-aside copy.
    assert_eq!(store.set_aside(&digest).await, Ok(Some(50_000)));
    assert_eq!(store.put_replica(&digest, whole(&data)).await, Ok(50_000));
    assert_eq!(store.purge(&digest).await, Ok(()));
    assert_eq!(read_all(&store, &digest, 0, None).await, Ok(data.clone()));

    // Set aside twice in a row: the second copy replaces the first, and one put back restores it.
    assert_eq!(store.set_aside(&digest).await, Ok(Some(50_000)));
    assert_eq!(put_blob(&store, &data).await, digest);
    assert_eq!(store.set_aside(&digest).await, Ok(Some(50_000)));
    assert_out_of_service(&store, &digest).await;
    assert_eq!(store.put_back(&digest).await, Ok(()));
    assert_eq!(read_all(&store, &digest, 0, None).await, Ok(data));
}

pub async fn reopen_puts_set_aside_blobs_back<F: StoreFactory>(factory: &F) {
    let data = patterned(70_000, 34);
    let sha512 = Digest::of(Algorithm::Sha512, b"sha512 bytes");
    let (aside, purged) = {
        let store = factory.open().await;
        let aside = put_blob(&store, &data).await;
        let purged = put_blob(&store, b"purged before the restart").await;
        assert_eq!(
            store.put_replica(&sha512, whole(b"sha512 bytes")).await,
            Ok(12)
        );
        for digest in [&aside, &purged, &sha512] {
            assert!(store.set_aside(digest).await.expect("set aside").is_some());
        }
        assert_eq!(store.purge(&purged).await, Ok(()));
        (aside, purged)
    };
    // A new process: nobody waits for a decision about those blobs any more.
    let store = factory.open().await;
    assert_eq!(read_all(&store, &aside, 0, None).await, Ok(data));
    assert_eq!(
        read_all(&store, &sha512, 0, None).await,
        Ok(b"sha512 bytes".to_vec())
    );
    assert_out_of_service(&store, &purged).await;
    let mut expected = vec![(aside.clone(), 70_000), (sha512.clone(), 12)];
    expected.sort();
    assert_eq!(store.list_blobs(None, 10).await, Ok(expected));
    // Back in service, so a purge now finds nothing set aside.
    assert_eq!(store.purge(&aside).await, Ok(()));
    assert_eq!(store.stat(&aside).await, Ok(Some(70_000)));
}

//! `BlobNode` over an `FsBlobStore`, driven only through the `BlobApi` trait as the gRPC adapter
//! and the gateway drive it.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use blob_node::{BlobNode, BlobNodeConfig, BlobNodeError, Replicator};
use blob_store::FsBlobStore;
use bytes::Bytes;
use cluster_api::{BlobApi, BlobError, BlobNodeId, ByteStream, CommittedBlob, UploadId};
use futures::{stream, TryStreamExt};
use oci_model::{Algorithm, Digest, RepositoryName};
use tempfile::TempDir;

fn bytes(parts: &[&'static [u8]]) -> ByteStream {
    let chunks: Vec<Result<Bytes, BlobError>> = parts
        .iter()
        .map(|part| Ok(Bytes::from_static(part)))
        .collect();
    Box::pin(stream::iter(chunks))
}

fn upload_id(n: u32) -> UploadId {
    UploadId::parse(&format!("{n:032x}")).expect("a valid upload id")
}

async fn read_all(
    node: &dyn BlobApi,
    digest: &Digest,
    offset: u64,
    length: Option<u64>,
) -> Result<Vec<u8>, BlobError> {
    let chunks: Vec<Bytes> = node
        .read(digest, offset, length)
        .await?
        .try_collect()
        .await?;
    Ok(chunks.concat())
}

async fn open_node(dir: &TempDir, node_id: BlobNodeId) -> Arc<dyn BlobApi> {
    let mut config = BlobNodeConfig::new(dir.path().join("blob"), "127.0.0.1:7000");
    config.node_id = node_id;
    Arc::new(BlobNode::open(&config).await.expect("open the node"))
}

#[tokio::test]
async fn full_upload_lifecycle() {
    let dir = TempDir::new().expect("temporary directory");
    let node = open_node(&dir, 3).await;
    let id = upload_id(1);
    node.start_upload(&id).await.expect("start");
    node.start_upload(&id).await.expect("start is idempotent");
    assert_eq!(
        node.append_upload(&id, 0, bytes(&[b"hello", b" "])).await,
        Ok(6)
    );
    assert_eq!(node.upload_status(&id).await, Ok(6));
    assert_eq!(node.append_upload(&id, 6, bytes(&[b"world"])).await, Ok(11));

    let digest = Digest::sha256_of(b"hello world");
    assert_eq!(node.stat(&digest).await, Ok(None));
    assert_eq!(
        node.commit_upload(&repo(), &id, &digest).await,
        Ok(CommittedBlob {
            size: 11,
            replicas: vec![3]
        })
    );
    assert_eq!(
        node.upload_status(&id).await,
        Err(BlobError::UploadNotFound(id.to_string()))
    );
    assert_eq!(node.stat(&digest).await, Ok(Some(11)));
    assert_eq!(
        read_all(node.as_ref(), &digest, 0, None).await,
        Ok(b"hello world".to_vec())
    );
    assert_eq!(
        read_all(node.as_ref(), &digest, 6, Some(3)).await,
        Ok(b"wor".to_vec())
    );

    node.delete(&digest).await.expect("delete");
    node.delete(&digest).await.expect("delete is idempotent");
    assert_eq!(node.stat(&digest).await, Ok(None));
}

#[tokio::test]
async fn cancelled_upload_is_gone() {
    let dir = TempDir::new().expect("temporary directory");
    let node = open_node(&dir, 1).await;
    let id = upload_id(2);
    node.start_upload(&id).await.expect("start");
    node.append_upload(&id, 0, bytes(&[b"abc"]))
        .await
        .expect("append");
    node.cancel_upload(&id).await.expect("cancel");
    node.cancel_upload(&id).await.expect("cancel is idempotent");
    let gone = Err(BlobError::UploadNotFound(id.to_string()));
    assert_eq!(node.upload_status(&id).await, gone);
    assert_eq!(node.append_upload(&id, 0, bytes(&[b"abc"])).await, gone);
}

#[tokio::test]
async fn errors_map_to_their_blob_error_variants() {
    let dir = TempDir::new().expect("temporary directory");
    let node = open_node(&dir, 1).await;
    let id = upload_id(3);
    let unknown = upload_id(4);
    assert_eq!(
        node.upload_status(&unknown).await,
        Err(BlobError::UploadNotFound(unknown.to_string()))
    );
    assert_eq!(
        node.commit_upload(&repo(), &unknown, &Digest::sha256_of(b""))
            .await,
        Err(BlobError::UploadNotFound(unknown.to_string()))
    );

    node.start_upload(&id).await.expect("start");
    node.append_upload(&id, 0, bytes(&[b"abc"]))
        .await
        .expect("append");
    assert_eq!(
        node.append_upload(&id, 1, bytes(&[b"x"])).await,
        Err(BlobError::OffsetMismatch {
            expected: 3,
            given: 1
        })
    );
    let wrong = Digest::of(Algorithm::Sha512, b"abd");
    assert_eq!(
        node.commit_upload(&repo(), &id, &wrong).await,
        Err(BlobError::DigestMismatch {
            expected: wrong,
            actual: Digest::of(Algorithm::Sha512, b"abc")
        })
    );
    let digest = Digest::sha256_of(b"abc");
    node.commit_upload(&repo(), &id, &digest)
        .await
        .expect("commit after a mismatch");

    assert_eq!(
        node.read(&digest, 3, None).await.map(drop),
        Err(BlobError::RangeNotSatisfiable { offset: 3, size: 3 })
    );
    let missing = Digest::sha256_of(b"missing");
    assert_eq!(
        node.read(&missing, 0, None).await.map(drop),
        Err(BlobError::NotFound(missing))
    );
    let bogus = UploadId("../blobs".into());
    assert!(matches!(
        node.start_upload(&bogus).await,
        Err(BlobError::Invalid(_))
    ));
}

#[tokio::test]
async fn blobs_and_uploads_survive_a_restart() {
    let dir = TempDir::new().expect("temporary directory");
    let id = upload_id(5);
    let kept = Digest::sha256_of(b"kept");
    {
        let node = open_node(&dir, 1).await;
        let committed = upload_id(6);
        node.start_upload(&committed).await.expect("start");
        node.append_upload(&committed, 0, bytes(&[b"kept"]))
            .await
            .expect("append");
        node.commit_upload(&repo(), &committed, &kept)
            .await
            .expect("commit");
        node.start_upload(&id).await.expect("start");
        node.append_upload(&id, 0, bytes(&[b"half"]))
            .await
            .expect("append");
    }
    let node = open_node(&dir, 1).await;
    assert_eq!(node.stat(&kept).await, Ok(Some(4)));
    assert_eq!(node.upload_status(&id).await, Ok(4));
    node.append_upload(&id, 4, bytes(&[b" and half"]))
        .await
        .expect("append");
    let digest = Digest::sha256_of(b"half and half");
    assert_eq!(
        node.commit_upload(&repo(), &id, &digest)
            .await
            .map(|blob| blob.size),
        Ok(13)
    );
}

fn repo() -> RepositoryName {
    RepositoryName::parse("team/app").expect("a repository name")
}

/// Records what commit hands over and answers with a fixed replica set or an error.
struct RecordingReplicator {
    calls: Mutex<Vec<(BlobNodeId, Digest, u64)>>,
    answer: Result<Vec<BlobNodeId>, BlobError>,
}

#[async_trait]
impl Replicator for RecordingReplicator {
    async fn replicate(
        &self,
        local: BlobNodeId,
        digest: &Digest,
        size: u64,
        _repo: &RepositoryName,
    ) -> Result<Vec<BlobNodeId>, BlobError> {
        self.calls
            .lock()
            .expect("calls lock")
            .push((local, digest.clone(), size));
        self.answer.clone()
    }
}

async fn node_with_replicator(dir: &TempDir, replicator: Arc<RecordingReplicator>) -> BlobNode {
    let store = FsBlobStore::open(dir.path()).await.expect("open the store");
    BlobNode::new(9, Arc::new(store), replicator)
}

#[tokio::test]
async fn commit_reports_the_replicators_replica_set() {
    let dir = TempDir::new().expect("temporary directory");
    let replicator = Arc::new(RecordingReplicator {
        calls: Mutex::default(),
        answer: Ok(vec![9, 4, 2]),
    });
    let node = node_with_replicator(&dir, Arc::clone(&replicator)).await;
    let id = upload_id(7);
    node.start_upload(&id).await.expect("start");
    node.append_upload(&id, 0, bytes(&[b"replicate me"]))
        .await
        .expect("append");
    let digest = Digest::sha256_of(b"replicate me");
    assert_eq!(
        node.commit_upload(&repo(), &id, &digest).await,
        Ok(CommittedBlob {
            size: 12,
            replicas: vec![9, 4, 2]
        })
    );
    let calls = replicator.calls.lock().expect("calls lock").clone();
    assert_eq!(calls, vec![(9, digest, 12)]);
}

#[tokio::test]
async fn a_replication_failure_fails_the_commit_but_keeps_the_local_copy() {
    let dir = TempDir::new().expect("temporary directory");
    let failure = BlobError::Unavailable("owner 4 is down".into());
    let replicator = Arc::new(RecordingReplicator {
        calls: Mutex::default(),
        answer: Err(failure.clone()),
    });
    let node = node_with_replicator(&dir, replicator).await;
    let id = upload_id(8);
    node.start_upload(&id).await.expect("start");
    node.append_upload(&id, 0, bytes(&[b"local"]))
        .await
        .expect("append");
    let digest = Digest::sha256_of(b"local");
    assert_eq!(
        node.commit_upload(&repo(), &id, &digest).await,
        Err(failure)
    );
    assert_eq!(node.stat(&digest).await, Ok(Some(5)));
}

#[tokio::test]
async fn open_refuses_an_invalid_config() {
    let dir = TempDir::new().expect("temporary directory");
    let config = BlobNodeConfig::new(dir.path(), "0.0.0.0:7000");
    assert!(matches!(
        BlobNode::open(&config).await,
        Err(BlobNodeError::InvalidConfig {
            field: "advertise_addr",
            ..
        })
    ));
}

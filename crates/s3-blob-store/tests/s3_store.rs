//! `S3BlobStore` against the shared suite twice: over `object_store`'s in-memory store (the
//! store's own logic, always), and over the real S3-compatible server `.ci/run` starts
//! (`WHARF_TEST_S3_ENDPOINT`, `WHARF_TEST_S3_BUCKET`; see `scripts/s3-test-server.sh`). Then what
//! only an object store shows: where objects land, segments and multipart uploads, a prefix
//! owned by another node, a bucket that does not exist.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use blob_store::testsuite::StoreFactory;
use blob_store::testsuite::{chunked, new_upload_id, patterned, put_blob, read_all, run, upload};
use blob_store::BlobStore;
use cluster_api::BlobError;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use oci_model::Digest;
use s3_blob_store::{S3BlobStore, S3Config};

/// Stores over one in-memory object store; reopening models a restart.
struct MemFactory {
    store: Arc<InMemory>,
}

impl MemFactory {
    fn new() -> MemFactory {
        MemFactory {
            store: Arc::new(InMemory::new()),
        }
    }
}

#[async_trait]
impl StoreFactory for MemFactory {
    type Store = S3BlobStore;

    async fn open(&self) -> S3BlobStore {
        S3BlobStore::open(self.store.clone(), Path::from("node-1"), "1")
            .await
            .expect("open the store")
    }
}

/// Stores under a fresh prefix of the test bucket on the real server.
struct ServerFactory {
    config: S3Config,
}

/// The test server's settings; a clear failure when they are missing, never a silent pass.
fn server_config(prefix: &str) -> S3Config {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run the tests through .ci/run, or start a server with \
                 scripts/s3-test-server.sh and export what it prints"
            )
        })
    };
    S3Config {
        bucket: var("WHARF_TEST_S3_BUCKET"),
        prefix: prefix.to_owned(),
        endpoint: Some(var("WHARF_TEST_S3_ENDPOINT")),
        region: Some("us-east-1".into()),
        access_key_id: Some("wharf-test".into()),
        secret_access_key: Some("wharf-test".into()),
    }
}

/// A prefix no other test (or earlier run) uses.
fn fresh_prefix(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "tests/{name}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl ServerFactory {
    fn new() -> ServerFactory {
        ServerFactory {
            config: server_config(&fresh_prefix("suite")),
        }
    }
}

#[async_trait]
impl StoreFactory for ServerFactory {
    type Store = S3BlobStore;

    async fn open(&self) -> S3BlobStore {
        S3BlobStore::connect(&self.config, "1")
            .await
            .expect("connect to the test server")
    }
}

mod in_memory {
    use super::MemFactory;
    blob_store::blob_store_testsuite!(MemFactory::new());
}

mod server {
    use super::ServerFactory;
    blob_store::blob_store_testsuite!(ServerFactory::new());
}

/// Every key under the store's prefix, relative to it, sorted.
async fn keys(store: &S3BlobStore) -> Vec<String> {
    let (objects, root) = store.object_store();
    let mut keys: Vec<String> = objects
        .list(Some(root))
        .map_ok(|object| {
            object
                .location
                .prefix_match(root)
                .expect("listed under the prefix")
                .map(|part| part.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

async fn objects_land_where_the_layout_says<F: StoreFactory<Store = S3BlobStore>>(factory: &F) {
    let store = factory.open().await;
    let data = b"on the bucket";
    let id = upload(&store, data).await;
    assert_eq!(
        keys(&store).await,
        vec![
            "owner".to_owned(),
            format!("uploads/{id}/00000000000000000000"),
            format!("uploads/{id}/open"),
        ]
    );
    let digest = Digest::sha256_of(data);
    store.commit(&id, &digest).await.expect("commit");
    let hex = digest.hex();
    assert_eq!(
        keys(&store).await,
        vec![
            format!("blobs/sha256/{}/{hex}", &hex[..2]),
            "owner".to_owned()
        ],
        "the segments are gone once the blob is committed"
    );
    let (objects, _) = store.object_store();
    let stored = objects
        .get(&store.blob_key(&digest))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&stored[..], data);
    store.set_aside(&digest).await.expect("set aside");
    assert_eq!(
        keys(&store).await,
        vec!["owner".to_owned(), format!("trash/sha256-{hex}")]
    );
}

/// Appends past one part (segments written as multipart uploads) and a commit of several
/// segments (streamed into one multipart upload of the blob).
async fn large_segments_commit_through_multipart<F: StoreFactory<Store = S3BlobStore>>(
    factory: &F,
) {
    let store = factory.open().await;
    let data = patterned(21 * 1024 * 1024 + 5, 9);
    let id = new_upload_id();
    store.start_upload(&id).await.expect("start");
    let cut = 9 * 1024 * 1024 + 3;
    assert_eq!(
        store
            .append(&id, 0, chunked(&data[..cut], 256 * 1024))
            .await,
        Ok(cut as u64)
    );
    assert_eq!(
        store
            .append(&id, cut as u64, chunked(&data[cut..], 1024 * 1024))
            .await,
        Ok(data.len() as u64)
    );
    let digest = Digest::sha256_of(&data);
    // After a restart, commit reads the segments back to hash them.
    let store = factory.open().await;
    assert_eq!(store.upload_len(&id).await, Ok(data.len() as u64));
    assert_eq!(store.commit(&id, &digest).await, Ok(data.len() as u64));
    assert!(read_all(&store, &digest, 0, None).await == Ok(data.clone()));
    let replica = patterned(17 * 1024 * 1024, 10);
    let replica_digest = Digest::sha256_of(&replica);
    assert_eq!(
        store
            .put_replica(&replica_digest, chunked(&replica, 1 << 20))
            .await,
        Ok(replica.len() as u64)
    );
    assert!(
        read_all(&store, &replica_digest, 1000, Some(10)).await == Ok(replica[1000..1010].to_vec())
    );
    // A replica whose bytes are wrong publishes nothing, even past one part.
    let wrong = Digest::sha256_of(b"not these bytes");
    assert!(matches!(
        store.put_replica(&wrong, chunked(&replica, 1 << 20)).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert_eq!(store.stat(&wrong).await, Ok(None));
}

async fn a_prefix_belongs_to_one_node<F: StoreFactory<Store = S3BlobStore>>(factory: &F) {
    let store = factory.open().await;
    put_blob(&store, b"node 1's").await;
    let (objects, root) = store.object_store();
    let other = S3BlobStore::open(Arc::clone(objects), root.clone(), "2").await;
    match other {
        Err(BlobError::Invalid(message)) => {
            assert!(message.contains("belongs to blob node \"1\""), "{message}")
        }
        Err(other) => panic!("expected Invalid, got {other:?}"),
        Ok(_) => panic!("a second node opened a prefix owned by another"),
    }
}

#[test]
fn in_memory_objects_land_where_the_layout_says() {
    run(objects_land_where_the_layout_says(&MemFactory::new()));
}

#[test]
fn server_objects_land_where_the_layout_says() {
    run(objects_land_where_the_layout_says(&ServerFactory::new()));
}

#[test]
fn in_memory_large_segments_commit_through_multipart() {
    run(large_segments_commit_through_multipart(&MemFactory::new()));
}

#[test]
fn server_large_segments_commit_through_multipart() {
    run(large_segments_commit_through_multipart(
        &ServerFactory::new(),
    ));
}

#[test]
fn in_memory_a_prefix_belongs_to_one_node() {
    run(a_prefix_belongs_to_one_node(&MemFactory::new()));
}

#[test]
fn server_a_prefix_belongs_to_one_node() {
    run(a_prefix_belongs_to_one_node(&ServerFactory::new()));
}

#[test]
fn a_bucket_that_does_not_exist_is_a_clear_error_at_connect() {
    run(async {
        let mut config = server_config(&fresh_prefix("nobucket"));
        config.bucket = "wharf-no-such-bucket".into();
        let error = match S3BlobStore::connect(&config, "1").await {
            Err(error) => error.to_string(),
            Ok(_) => panic!("connected to a bucket that does not exist"),
        };
        assert!(error.contains("s3://wharf-no-such-bucket/"), "{error}");
        assert!(error.contains("does the bucket exist?"), "{error}");
    });
}

#[test]
fn settings_are_checked_before_any_request() {
    let valid = S3Config {
        bucket: "wharf-blobs".into(),
        prefix: "eu/node-1".into(),
        endpoint: Some("https://s3.eu-west-1.amazonaws.com".into()),
        region: None,
        access_key_id: None,
        secret_access_key: None,
    };
    assert_eq!(valid.validate(), Ok(()));
    let broken = [
        S3Config {
            bucket: "Wharf_Blobs".into(),
            ..valid.clone()
        },
        S3Config {
            prefix: "/eu//node-1/".into(),
            ..valid.clone()
        },
        S3Config {
            prefix: "eu/../x".into(),
            ..valid.clone()
        },
        S3Config {
            endpoint: Some("s3.example.com".into()),
            ..valid.clone()
        },
        S3Config {
            access_key_id: Some("key".into()),
            ..valid.clone()
        },
    ];
    for config in broken {
        assert!(config.validate().is_err(), "{config:?}");
    }
}

/// An S3 endpoint that refuses every request, as a server does for a key it does not know.
async fn refusing_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let body =
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidAccessKeyId\
                            </Code><Message>The AWS Access Key Id you provided does not exist in \
                            our records.</Message></Error>";
                let response = format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn refused_credentials_are_a_clear_error_at_connect() {
    run(async {
        let config = S3Config {
            bucket: "wharf-blobs".into(),
            prefix: "blob-1".into(),
            endpoint: Some(refusing_endpoint().await),
            region: Some("us-east-1".into()),
            access_key_id: Some("unknown".into()),
            secret_access_key: Some("wrong".into()),
        };
        let error = match S3BlobStore::connect(&config, "1").await {
            Err(error) => error.to_string(),
            Ok(_) => panic!("connected with refused credentials"),
        };
        assert!(
            error.contains("cannot use s3://wharf-blobs/blob-1"),
            "{error}"
        );
        assert!(error.contains("InvalidAccessKeyId"), "{error}");
    });
}

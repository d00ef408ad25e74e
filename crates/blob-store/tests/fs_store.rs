//! `FsBlobStore` against the shared suite, plus what only a filesystem store can show: where
//! files land on disk and that hostile ids never reach a path.

use async_trait::async_trait;
use blob_store::testsuite::{self, put_blob, run, upload, StoreFactory};
use blob_store::{BlobStore, FsBlobStore};
use cluster_api::{BlobError, UploadId};
use oci_model::Digest;
use tempfile::TempDir;

struct FsFactory {
    dir: TempDir,
}

impl FsFactory {
    fn new() -> FsFactory {
        FsFactory {
            dir: TempDir::new().expect("temporary directory"),
        }
    }
}

#[async_trait]
impl StoreFactory for FsFactory {
    type Store = FsBlobStore;

    async fn open(&self) -> FsBlobStore {
        // A directory that does not exist yet, as on a node's first start.
        FsBlobStore::open(self.dir.path().join("data"))
            .await
            .expect("open the store")
    }
}

blob_store::blob_store_testsuite!(FsFactory::new());

#[test]
fn committed_blob_lands_at_its_fan_out_path() {
    run(async {
        let factory = FsFactory::new();
        let store = factory.open().await;
        let id = upload(&store, b"on disk").await;
        let staging = store.root().join("uploads").join(id.as_str());
        assert!(staging.is_file());
        let digest = Digest::sha256_of(b"on disk");
        store.commit(&id, &digest).await.expect("commit");
        let hex = digest.hex();
        let final_path = store.root().join("blobs/sha256").join(&hex[..2]).join(hex);
        assert_eq!(std::fs::read(final_path).expect("final file"), b"on disk");
        assert!(!staging.exists(), "the staging file is gone");
    });
}

#[test]
fn digest_mismatch_leaves_nothing_under_blobs() {
    run(async {
        let factory = FsFactory::new();
        let store = factory.open().await;
        let id = upload(&store, b"content").await;
        let wrong = Digest::sha256_of(b"other");
        assert!(store.commit(&id, &wrong).await.is_err());
        let hex = wrong.hex();
        assert!(!store
            .root()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists());
        assert!(store.root().join("uploads").join(id.as_str()).is_file());
    });
}

#[test]
fn hostile_upload_ids_never_reach_a_path() {
    run(async {
        let factory = FsFactory::new();
        let store = factory.open().await;
        let secret = put_blob(&store, b"secret").await;
        for bogus in [
            "../blobs",
            "../../etc/passwd",
            "",
            "ABCDEF0123456789ABCDEF0123456789",
            "a/b",
        ] {
            // The field is public, so a caller can build any id; the store must check it again.
            let id = UploadId(bogus.to_owned());
            assert!(
                matches!(store.start_upload(&id).await, Err(BlobError::Invalid(_))),
                "{bogus:?}"
            );
            assert!(
                matches!(store.upload_len(&id).await, Err(BlobError::Invalid(_))),
                "{bogus:?}"
            );
            assert!(
                matches!(store.cancel_upload(&id).await, Err(BlobError::Invalid(_))),
                "{bogus:?}"
            );
            assert!(
                matches!(store.commit(&id, &secret).await, Err(BlobError::Invalid(_))),
                "{bogus:?}"
            );
        }
        assert_eq!(store.stat(&secret).await, Ok(Some(6)));
    });
}

#[test]
fn list_uploads_skips_foreign_files() {
    run(async {
        let factory = FsFactory::new();
        let store = factory.open().await;
        let id = upload(&store, b"x").await;
        std::fs::write(store.root().join("uploads/not-an-upload.tmp"), b"junk")
            .expect("write junk");
        let listed = store.list_uploads().await.expect("list uploads");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
    });
}

#[test]
fn a_fresh_upload_id_is_valid() {
    assert!(UploadId::parse(testsuite::new_upload_id().as_str()).is_some());
}

#[test]
fn commit_trusts_the_running_hash_and_rehashes_after_a_restart() {
    run(async {
        let factory = FsFactory::new();
        let data = b"original content".to_vec();
        let digest = Digest::sha256_of(&data);
        let tamper = |store: &FsBlobStore, id: &UploadId| {
            // Same length, different bytes, behind the store's back.
            std::fs::write(
                store.root().join("uploads").join(id.as_str()),
                b"ORIGINAL CONTENT",
            )
            .expect("tamper");
        };

        // With a running hash, commit does not read the file again: it verifies what was
        // appended, which is why tampering goes unnoticed here.
        let store = factory.open().await;
        let id = upload(&store, &data).await;
        tamper(&store, &id);
        assert_eq!(store.commit(&id, &digest).await, Ok(16));
        store.delete(&digest).await.expect("delete");

        // After a restart there is no running hash: commit hashes the file and sees the change.
        let id = upload(&store, &data).await;
        tamper(&store, &id);
        let store = factory.open().await;
        assert!(matches!(
            store.commit(&id, &digest).await,
            Err(BlobError::DigestMismatch { .. })
        ));
    });
}

#[test]
fn set_aside_moves_the_file_to_trash_and_reopen_skips_foreign_names() {
    run(async {
        let factory = FsFactory::new();
        let store = factory.open().await;
        let digest = put_blob(&store, b"collected").await;
        let hex = digest.hex();
        let final_path = store.root().join("blobs/sha256").join(&hex[..2]).join(hex);
        let aside = store.root().join("trash").join(format!("sha256-{hex}"));
        assert_eq!(store.set_aside(&digest).await, Ok(Some(9)));
        assert!(!final_path.exists());
        assert_eq!(std::fs::read(&aside).expect("set-aside file"), b"collected");

        // Files this store never wrote: none may become a blob, or steer a path anywhere.
        let trash = store.root().join("trash");
        let foreign = [
            "junk".to_owned(),
            format!("md5-{hex}"),
            format!("sha256-{}", hex.to_uppercase()),
            format!("sha256-{hex}.tmp"),
        ];
        for name in &foreign {
            std::fs::write(trash.join(name), b"foreign").expect("write foreign file");
        }
        let store = factory.open().await;
        assert_eq!(std::fs::read(&final_path).expect("put back"), b"collected");
        assert!(!aside.exists());
        for name in &foreign {
            assert!(trash.join(name).is_file(), "{name} is left alone");
        }
        assert_eq!(store.list_blobs(None, 10).await, Ok(vec![(digest, 9)]));
    });
}

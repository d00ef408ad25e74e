//! In-memory implementations of the service traits, for tests of the roles built on them.
//!
//! [`MemMeta`] keeps the metadata service's state in maps and follows the contract written on
//! each [`MetaApi`](crate::MetaApi) method (repository links, `ManifestBlobUnknown` checks, tag
//! paging, the referrers index). [`MemBlobNodes`] hands out [`MemBlob`] nodes that hold staging
//! uploads and blobs in memory and follow the [`BlobApi`](crate::BlobApi) contract (offset
//! checks, all-or-nothing appends, digest verification, ranged reads). Both can inject faults
//! (`set_outage`, `fail_reads_after`) so callers can test how they handle an unavailable or
//! failing service.
//!
//! Nothing here is durable or fast; it must only be right.

mod blob;
mod meta;

use std::sync::{Mutex, MutexGuard};

pub use blob::{MemBlob, MemBlobNodes};
pub use meta::{MemMeta, FAKE_BLOB_URL_KEY};

use crate::types::Page;

/// Locks a fake's state. A test that panicked while holding the lock has already failed, so a
/// poisoned lock is taken over rather than turned into a second panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Entries of `items` strictly after `last`, at most `n` of them, in the iterator's order.
fn page<'a>(items: impl Iterator<Item = &'a str>, last: Option<&str>, n: usize) -> Page {
    let mut after = items.filter(|item| last.is_none_or(|last| *item > last));
    let items: Vec<String> = after.by_ref().take(n).map(str::to_owned).collect();
    let more = after.next().is_some();
    Page { items, more }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::StreamExt;
    use oci_model::{Digest, RepositoryName, Tag};

    use super::*;
    use crate::{
        BlobApi, BlobError, BlobInfo, ByteStream, CommittedBlob, MetaApi, MetaError, PutManifest,
        UploadId,
    };

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).unwrap()
    }

    fn bytes_stream(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<Result<Bytes, BlobError>> = parts
            .iter()
            .map(|part| Ok(Bytes::from_static(part)))
            .collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn collect(stream: ByteStream) -> Result<Vec<u8>, BlobError> {
        let mut data = Vec::new();
        let mut stream = stream;
        while let Some(piece) = stream.next().await {
            data.extend_from_slice(&piece?);
        }
        Ok(data)
    }

    #[tokio::test]
    async fn blob_node_contract() {
        let node = MemBlob::new(7);
        let id = UploadId("0".repeat(32));
        node.start_upload(&id).await.unwrap();
        assert_eq!(
            node.append_upload(&id, 0, bytes_stream(&[b"hel", b"lo"]))
                .await,
            Ok(5)
        );
        assert!(matches!(
            node.append_upload(&id, 0, bytes_stream(&[b"x"])).await,
            Err(BlobError::OffsetMismatch {
                expected: 5,
                given: 0
            })
        ));
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(BlobError::Invalid("cut".into())),
        ]));
        assert!(node.append_upload(&id, 5, failing).await.is_err());
        assert_eq!(
            node.upload_status(&id).await,
            Ok(5),
            "a failed append writes nothing"
        );
        let wrong = Digest::sha256_of(b"nope");
        assert!(matches!(
            node.commit_upload(&repo("r"), &id, &wrong).await,
            Err(BlobError::DigestMismatch { .. })
        ));
        let digest = Digest::sha256_of(b"hello");
        let committed = node.commit_upload(&repo("r"), &id, &digest).await.unwrap();
        assert_eq!(
            committed,
            CommittedBlob {
                size: 5,
                replicas: vec![7]
            }
        );
        assert_eq!(
            collect(node.read(&digest, 1, Some(3)).await.unwrap())
                .await
                .unwrap(),
            b"ell"
        );
        assert_eq!(
            collect(node.read(&digest, 5, None).await.unwrap())
                .await
                .unwrap(),
            b""
        );
        assert!(matches!(
            node.read(&digest, 6, None).await,
            Err(BlobError::RangeNotSatisfiable { offset: 6, size: 5 })
        ));
        assert!(matches!(
            node.upload_status(&id).await,
            Err(BlobError::UploadNotFound(_))
        ));
    }

    #[tokio::test]
    async fn meta_links_manifests_and_pages() {
        let meta = MemMeta::with_blob_nodes(&[1]);
        let app = repo("team/app");
        let config = Digest::sha256_of(b"{}");
        let blob = BlobInfo {
            digest: config.clone(),
            size: 2,
            replicas: vec![1],
            placement: Vec::new(),
        };
        meta.commit_blob(&app, blob, None).await.unwrap();
        let manifest_digest = Digest::sha256_of(b"manifest");
        let mut put = PutManifest {
            repo: app.clone(),
            digest: manifest_digest.clone(),
            media_type: oci_model::media_type::OCI_MANIFEST.to_owned(),
            bytes: b"manifest".to_vec(),
            tag: Some(Tag::parse("v1").unwrap()),
            blobs: vec![config.clone(), Digest::sha256_of(b"missing")],
            manifests: vec![],
            subject: None,
            referrer: None,
        };
        assert_eq!(
            meta.put_manifest(put.clone()).await,
            Err(MetaError::ManifestBlobUnknown(Digest::sha256_of(
                b"missing"
            )))
        );
        put.blobs.pop();
        meta.put_manifest(put.clone()).await.unwrap();
        for tag in ["v2", "v3"] {
            put.tag = Some(Tag::parse(tag).unwrap());
            meta.put_manifest(put.clone()).await.unwrap();
        }
        let first = meta.list_tags(&app, None, 2).await.unwrap();
        assert_eq!(
            first,
            Page {
                items: vec!["v1".into(), "v2".into()],
                more: true
            }
        );
        let rest = meta.list_tags(&app, Some("v2"), 2).await.unwrap();
        assert_eq!(
            rest,
            Page {
                items: vec!["v3".into()],
                more: false
            }
        );
        assert!(matches!(
            meta.list_tags(&repo("other"), None, 5).await,
            Err(MetaError::NameUnknown(_))
        ));
        meta.delete_manifest(&app, &manifest_digest).await.unwrap();
        assert!(meta
            .list_tags(&app, None, 5)
            .await
            .unwrap()
            .items
            .is_empty());
    }
}

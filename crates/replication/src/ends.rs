//! The two ends of a copy: [`Source`] and [`Destination`], each either another registry over
//! HTTP (`proxy::Upstream`) or this cluster itself through its service traits
//! ([`ClusterEnd`]: `MetaApi` and `BlobNodes`, as the gateway uses them).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cluster_api::{BlobError, BlobInfo, BlobNodes, ByteStream, MetaApi, MetaError, PutManifest};
use futures::stream::BoxStream;
use futures::StreamExt;
use oci_model::{Digest, ParsedManifest, Reference, RepositoryName, Tag};
use proxy::{PushError, SourceFailure, Upstream, UpstreamError, UpstreamManifest};

/// A blob's body: its length when known, and its bytes (checked against its digest).
pub type BlobBody = (
    Option<u64>,
    BoxStream<'static, Result<Bytes, UpstreamError>>,
);

/// Where a copy reads.
#[async_trait]
pub trait Source: Send + Sync {
    /// Every tag of `repo`; `None` when there is no such repository.
    async fn tags(&self, repo: &RepositoryName) -> Result<Option<Vec<String>>, UpstreamError>;
    /// The manifest `reference` names, checked against its digest.
    async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<UpstreamManifest>, UpstreamError>;
    /// The manifests referring to `digest`; `None` without the referrers API.
    async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Vec<Digest>>, UpstreamError>;
    /// Blob `digest`'s body.
    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobBody>, UpstreamError>;
}

/// Where a copy writes (and reads back what it wrote, as a [`Source`]).
#[async_trait]
pub trait Destination: Source {
    async fn has_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, UpstreamError>;
    /// The digest tag `tag` points at, if it exists.
    async fn tag_digest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, UpstreamError>;
    async fn has_blob(&self, repo: &RepositoryName, digest: &Digest)
        -> Result<bool, UpstreamError>;
    /// Links blob `digest` into `repo` from `from`, where this end has it already (a
    /// cross-repository mount): `false` when it could not, and the blob is to be copied.
    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, UpstreamError>;
    /// Stores blob `digest` from `body`, verified; returns the bytes stored.
    async fn push_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: BlobBody,
    ) -> Result<u64, PushError>;
    /// Stores a manifest; `true` when this end lists it among its subject's referrers by
    /// itself (the referrers API), `false` when the referrers tag schema is the client's job.
    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<bool, UpstreamError>;
    /// Deletes a tag or a manifest by digest; `false` when it was not there.
    async fn delete(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<bool, UpstreamError>;
}

/// Tags asked for per page.
const PAGE: usize = 1000;

/// Every manifest type, richest first.
pub(crate) const ACCEPT_ALL: [&str; 4] = [
    oci_model::media_type::OCI_INDEX,
    oci_model::media_type::DOCKER_MANIFEST_LIST,
    oci_model::media_type::OCI_MANIFEST,
    oci_model::media_type::DOCKER_MANIFEST,
];

#[async_trait]
impl Source for Upstream {
    async fn tags(&self, repo: &RepositoryName) -> Result<Option<Vec<String>>, UpstreamError> {
        Upstream::tags(self, repo, PAGE).await
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<UpstreamManifest>, UpstreamError> {
        Upstream::manifest(self, repo, reference, &ACCEPT_ALL).await
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Vec<Digest>>, UpstreamError> {
        Upstream::referrers(self, repo, digest).await
    }

    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobBody>, UpstreamError> {
        Ok(Upstream::blob(self, repo, digest)
            .await?
            .map(|blob| (blob.size, blob.into_stream())))
    }
}

#[async_trait]
impl Destination for Upstream {
    async fn has_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, UpstreamError> {
        Upstream::has_manifest(self, repo, digest).await
    }

    async fn tag_digest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, UpstreamError> {
        Upstream::tag_digest(self, repo, tag, &ACCEPT_ALL).await
    }

    async fn has_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, UpstreamError> {
        Upstream::has_blob(self, repo, digest).await
    }

    async fn push_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        (size, body): BlobBody,
    ) -> Result<u64, PushError> {
        Upstream::push_blob(self, repo, digest, size, body).await
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, UpstreamError> {
        Upstream::mount_blob(self, repo, digest, from).await
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<bool, UpstreamError> {
        Upstream::put_manifest(self, repo, reference, media_type, bytes).await
    }

    async fn delete(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<bool, UpstreamError> {
        Upstream::delete_manifest(self, repo, reference).await
    }
}

/// This cluster as one end of a copy: reads and writes go through `MetaApi` and the blob
/// nodes, as a gateway's do (a blob written here is verified by its staging node and
/// replicated like any push).
#[derive(Clone)]
pub struct ClusterEnd {
    pub meta: Arc<dyn MetaApi>,
    pub blobs: Arc<dyn BlobNodes>,
}

fn meta_error(error: MetaError) -> UpstreamError {
    match error {
        MetaError::Unavailable { .. } => UpstreamError::Unreachable(error.to_string()),
        // An immutable tag, a policy: refused, as a registry over HTTP answers 403.
        MetaError::Denied(_) => UpstreamError::Status {
            status: 403,
            message: error.to_string(),
        },
        MetaError::Invalid(_) => UpstreamError::Status {
            status: 400,
            message: error.to_string(),
        },
        other => UpstreamError::Status {
            status: 500,
            message: other.to_string(),
        },
    }
}

fn blob_error(error: BlobError) -> UpstreamError {
    match error {
        BlobError::Unavailable(_) => UpstreamError::Unreachable(error.to_string()),
        other => UpstreamError::Status {
            status: 500,
            message: other.to_string(),
        },
    }
}

impl ClusterEnd {
    async fn all_tags(&self, repo: &RepositoryName) -> Result<Option<Vec<String>>, UpstreamError> {
        let mut tags = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = match self.meta.list_tags(repo, last.as_deref(), PAGE).await {
                Ok(page) => page,
                Err(MetaError::NameUnknown(_)) => return Ok(None),
                Err(error) => return Err(meta_error(error)),
            };
            last = page.items.last().cloned();
            tags.extend(page.items);
            if !page.more || last.is_none() {
                return Ok(Some(tags));
            }
        }
    }

    /// Reads blob `blob` from its first replica that answers.
    async fn read(&self, blob: &BlobInfo) -> Result<ByteStream, UpstreamError> {
        let mut last = None;
        for &id in &blob.replicas {
            let opened = match self.blobs.node(id).await {
                Ok(node) => node.read(&blob.digest, 0, None).await,
                Err(error) => Err(error),
            };
            match opened {
                Ok(stream) => return Ok(stream),
                Err(error) => last = Some(error),
            }
        }
        Err(last.map(blob_error).unwrap_or_else(|| {
            UpstreamError::Unreachable(format!("no replica of {} answers", blob.digest))
        }))
    }
}

#[async_trait]
impl Source for ClusterEnd {
    async fn tags(&self, repo: &RepositoryName) -> Result<Option<Vec<String>>, UpstreamError> {
        self.all_tags(repo).await
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<UpstreamManifest>, UpstreamError> {
        match self.meta.get_manifest(repo, reference).await {
            Ok(stored) => Ok(Some(UpstreamManifest {
                digest: stored.digest,
                media_type: stored.media_type,
                bytes: Bytes::from(stored.bytes),
            })),
            Err(MetaError::ManifestUnknown(_) | MetaError::NameUnknown(_)) => Ok(None),
            Err(error) => Err(meta_error(error)),
        }
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Vec<Digest>>, UpstreamError> {
        match self.meta.list_referrers(repo, digest, None).await {
            Ok(list) => Ok(Some(list.into_iter().map(|d| d.digest).collect())),
            Err(MetaError::NameUnknown(_) | MetaError::ManifestUnknown(_)) => Ok(None),
            Err(error) => Err(meta_error(error)),
        }
    }

    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobBody>, UpstreamError> {
        let blob = match self.meta.stat_blob(repo, digest).await {
            Ok(blob) => blob,
            Err(MetaError::BlobUnknown(_) | MetaError::NameUnknown(_)) => return Ok(None),
            Err(error) => return Err(meta_error(error)),
        };
        let stream = self.read(&blob).await?;
        let body = stream.map(|piece| piece.map_err(blob_error)).boxed();
        Ok(Some((Some(blob.size), body)))
    }
}

#[async_trait]
impl Destination for ClusterEnd {
    async fn has_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, UpstreamError> {
        Ok(
            Source::manifest(self, repo, &Reference::Digest(digest.clone()))
                .await?
                .is_some(),
        )
    }

    async fn tag_digest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, UpstreamError> {
        Ok(Source::manifest(self, repo, &Reference::Tag(tag.clone()))
            .await?
            .map(|manifest| manifest.digest))
    }

    async fn has_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, UpstreamError> {
        match self.meta.stat_blob(repo, digest).await {
            Ok(_) => Ok(true),
            Err(MetaError::BlobUnknown(_) | MetaError::NameUnknown(_)) => Ok(false),
            Err(error) => Err(meta_error(error)),
        }
    }

    async fn push_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        (_, body): BlobBody,
    ) -> Result<u64, PushError> {
        let destination = |error| PushError::Destination(error);
        let session = self
            .meta
            .create_upload(repo, &[])
            .await
            .map_err(|e| destination(meta_error(e)))?;
        let node = self
            .blobs
            .node(session.staging_node)
            .await
            .map_err(|e| destination(blob_error(e)))?;
        node.start_upload(&session.id)
            .await
            .map_err(|e| destination(blob_error(e)))?;
        let (body, source_failure) = SourceFailure::watch(body);
        let stream: ByteStream = Box::pin(body.map(|piece| {
            piece.map_err(|error| BlobError::Invalid(format!("the source failed: {error}")))
        }));
        let committed = node
            .append_and_commit(repo, &session.id, stream, digest)
            .await;
        let committed = match committed {
            Ok(committed) => committed,
            Err(error) => {
                let _ = node.cancel_upload(&session.id).await;
                if let Some(source) = source_failure.take() {
                    return Err(PushError::Source(source));
                }
                return Err(destination(blob_error(error)));
            }
        };
        let size = committed.size;
        let blob = BlobInfo {
            digest: digest.clone(),
            size,
            replicas: committed.replicas,
            placement: Vec::new(),
        };
        self.meta
            .commit_blob(repo, blob, Some(session.id))
            .await
            .map_err(|e| destination(meta_error(e)))?;
        Ok(size)
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, UpstreamError> {
        match self.meta.mount_blob(repo, digest, from).await {
            Ok(mounted) => Ok(mounted.is_some()),
            Err(MetaError::BlobUnknown(_) | MetaError::NameUnknown(_)) => Ok(false),
            Err(error) => Err(meta_error(error)),
        }
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<bool, UpstreamError> {
        let parsed = ParsedManifest::parse(Some(media_type), &bytes)
            .map_err(|error| UpstreamError::Invalid(error.to_string()))?;
        let digest = match reference {
            Reference::Digest(named) => named.clone(),
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        let tag = match reference {
            Reference::Tag(tag) => Some(tag.clone()),
            Reference::Digest(_) => None,
        };
        let put = PutManifest::from_parsed(repo.clone(), digest, tag, &parsed, bytes.to_vec());
        // This cluster indexes referrers itself.
        self.meta.put_manifest(put).await.map_err(meta_error)?;
        Ok(true)
    }

    async fn delete(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<bool, UpstreamError> {
        let deleted = match reference {
            Reference::Digest(digest) => self.meta.delete_manifest(repo, digest).await,
            Reference::Tag(tag) => self.meta.delete_tag(repo, tag).await,
        };
        match deleted {
            Ok(()) => Ok(true),
            Err(MetaError::ManifestUnknown(_) | MetaError::NameUnknown(_)) => Ok(false),
            Err(error) => Err(meta_error(error)),
        }
    }
}

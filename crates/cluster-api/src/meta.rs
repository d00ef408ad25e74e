//! [`MetaApi`]: the metadata service as every other role sees it.

use async_trait::async_trait;
use oci_model::{Digest, Reference, RepositoryName, Tag};

use crate::error::MetaError;
use crate::types::*;

/// The Raft-replicated metadata service. Every mutating call returns only once its Raft entry is
/// committed (durable on a quorum) and applied; every read is linearizable.
#[async_trait]
pub trait MetaApi: Send + Sync + 'static {
    /// Opens an upload session in `repo`, choosing a staging blob node. Fails with `NoBlobNodes`
    /// when the cluster map has none.
    async fn create_upload(&self, repo: &RepositoryName) -> Result<UploadSession, MetaError>;

    /// The session `id`, which must belong to `repo`; else `UploadUnknown`.
    async fn get_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
    ) -> Result<UploadSession, MetaError>;

    /// Closes the session `id` of `repo` without committing a blob; `UploadUnknown` if absent.
    async fn delete_upload(&self, repo: &RepositoryName, id: &UploadId) -> Result<(), MetaError>;

    /// Records a verified, durable blob and links it into `repo`; closes `upload` if given. Idempotent.
    async fn commit_blob(
        &self,
        repo: &RepositoryName,
        blob: BlobInfo,
        upload: Option<UploadId>,
    ) -> Result<(), MetaError>;

    /// The blob `digest` if it is linked in `repo`; else `BlobUnknown`.
    async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobInfo, MetaError>;

    /// Links `digest` into `repo` if it is linked in `from`, returning it; `Ok(None)` when `from`
    /// does not have it (the caller then opens a normal upload).
    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<Option<BlobInfo>, MetaError>;

    /// Removes the link of `digest` from `repo`; `BlobUnknown` if it was not linked.
    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<(), MetaError>;

    /// Stores a manifest atomically with its tag, links and referrer entry. Fails with
    /// `ManifestBlobUnknown` when a referenced blob or child manifest is not in the repository.
    async fn put_manifest(&self, manifest: PutManifest) -> Result<(), MetaError>;

    /// The manifest `reference` names in `repo`; `ManifestUnknown` if none.
    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest, MetaError>;

    /// Removes manifest `digest` from `repo` with every tag pointing at it; `ManifestUnknown` if absent.
    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), MetaError>;

    /// Removes tag `tag` from `repo` (the manifest stays); `ManifestUnknown` if the tag is absent.
    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<(), MetaError>;

    /// Tags of `repo` in lexical order, at most `n`, strictly after `last`. `NameUnknown` when the
    /// repository does not exist.
    async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, MetaError>;

    /// Repository names in lexical order, at most `n`, strictly after `last`.
    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError>;

    /// Descriptors of the manifests in `repo` whose subject is `subject`, optionally only those of
    /// `artifact_type`, ordered by digest.
    async fn list_referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<oci_model::Descriptor>, MetaError>;

    /// Adds or updates a blob node in the cluster map.
    async fn register_blob_node(&self, node: BlobNodeInfo) -> Result<(), MetaError>;

    /// The blob nodes of the cluster map.
    async fn blob_nodes(&self) -> Result<Vec<BlobNodeInfo>, MetaError>;
}

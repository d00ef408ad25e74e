//! One repository, copied.

use std::collections::BTreeSet;

use oci_model::{Digest, ParsedManifest, Reference, RepositoryName, Tag};
use proxy::{PushError, UpstreamError, UpstreamManifest};

use crate::ends::{Destination, Source};
use serde::Serialize;

/// How deep an index may nest (index of indexes ...) before the copy refuses it.
const MAX_DEPTH: usize = 8;

/// What to copy and how.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Only the tags this glob matches (`*` within, `**` across `.`-free text alike); all when
    /// `None`.
    pub tags: Option<String>,
    /// Look, count and report, but write nothing to the destination.
    pub dry_run: bool,
}

/// What a copy did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    pub repositories: u64,
    pub tags: u64,
    /// Tags set (or moved) on the destination.
    pub tags_set: u64,
    pub manifests_copied: u64,
    pub manifests_present: u64,
    pub blobs_copied: u64,
    pub blobs_present: u64,
    pub bytes_copied: u64,
}

impl CopyReport {
    pub fn add(&mut self, other: &CopyReport) {
        self.repositories += other.repositories;
        self.tags += other.tags;
        self.tags_set += other.tags_set;
        self.manifests_copied += other.manifests_copied;
        self.manifests_present += other.manifests_present;
        self.blobs_copied += other.blobs_copied;
        self.blobs_present += other.blobs_present;
        self.bytes_copied += other.bytes_copied;
    }
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("source: {0}")]
    Source(UpstreamError),
    #[error("destination: {0}")]
    Destination(UpstreamError),
    #[error("the source has no repository {0}")]
    NoSuchRepository(RepositoryName),
    #[error("{0}")]
    Invalid(String),
}

/// Told of each step, for a progress display.
pub trait Progress: Send + Sync {
    /// A blob of `size` bytes is about to be copied.
    fn blob_started(&self, _digest: &Digest, _size: Option<u64>) {}
    /// A blob of `bytes` bytes reached the destination.
    fn bytes(&self, _bytes: u64) {}
    /// A manifest (by digest) is on the destination now, or was already.
    fn manifest_done(&self, _digest: &Digest, _copied: bool) {}
}

/// No display.
impl Progress for () {}

/// Copies the tags of `from` (at `source`) that `options` keeps to `to` (at `destination`).
pub async fn copy_repository(
    source: &dyn Source,
    destination: &dyn Destination,
    from: &RepositoryName,
    to: &RepositoryName,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport, CopyError> {
    let matcher = match &options.tags {
        Some(pattern) => Some(
            globset::Glob::new(pattern)
                .map_err(|error| CopyError::Invalid(format!("tag pattern {pattern:?}: {error}")))?
                .compile_matcher(),
        ),
        None => None,
    };
    let tags = source
        .tags(from)
        .await
        .map_err(CopyError::Source)?
        .ok_or_else(|| CopyError::NoSuchRepository(from.clone()))?;
    let mut copy = Copy {
        source,
        destination,
        from,
        to,
        dry_run: options.dry_run,
        progress,
        report: CopyReport {
            repositories: 1,
            ..CopyReport::default()
        },
        done: BTreeSet::new(),
    };
    for tag in tags {
        if matcher.as_ref().is_some_and(|glob| !glob.is_match(&tag)) {
            continue;
        }
        let tag = Tag::parse(&tag)
            .map_err(|_| CopyError::Invalid(format!("the source lists tag {tag:?}")))?;
        copy.report.tags += 1;
        copy.tag(&tag).await?;
    }
    Ok(copy.report)
}

struct Copy<'a> {
    source: &'a dyn Source,
    destination: &'a dyn Destination,
    from: &'a RepositoryName,
    to: &'a RepositoryName,
    dry_run: bool,
    progress: &'a dyn Progress,
    report: CopyReport,
    /// Manifests already on the destination in this copy (an index's children shared by tags).
    done: BTreeSet<Digest>,
}

impl Copy<'_> {
    /// The manifest a tag names, with everything it needs, then the tag itself.
    async fn tag(&mut self, tag: &Tag) -> Result<(), CopyError> {
        let reference = Reference::Tag(tag.clone());
        let manifest = self
            .source
            .manifest(self.from, &reference)
            .await
            .map_err(CopyError::Source)?
            .ok_or_else(|| CopyError::Invalid(format!("tag {tag} of {} went away", self.from)))?;
        self.manifest(&manifest, 0).await?;
        let current = self
            .destination
            .tag_digest(self.to, tag)
            .await
            .map_err(CopyError::Destination)?;
        if current.as_ref() == Some(&manifest.digest) {
            return Ok(());
        }
        self.report.tags_set += 1;
        if !self.dry_run {
            self.destination
                .put_manifest(
                    self.to,
                    &reference,
                    &manifest.media_type,
                    manifest.bytes.clone(),
                )
                .await
                .map_err(CopyError::Destination)?;
        }
        Ok(())
    }

    /// A manifest by digest, after its blobs and children, then the referrers of it.
    async fn manifest(
        &mut self,
        manifest: &UpstreamManifest,
        depth: usize,
    ) -> Result<(), CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::Invalid(format!(
                "{} nests indexes deeper than {MAX_DEPTH}",
                manifest.digest
            )));
        }
        if !self.done.insert(manifest.digest.clone()) {
            return Ok(());
        }
        let by_digest = Reference::Digest(manifest.digest.clone());
        let present = self
            .destination
            .has_manifest(self.to, &manifest.digest)
            .await
            .map_err(CopyError::Destination)?;
        if present {
            // A registry takes a manifest only once what it references is there.
            self.report.manifests_present += 1;
            self.progress.manifest_done(&manifest.digest, false);
        } else {
            let parsed = ParsedManifest::parse(Some(&manifest.media_type), &manifest.bytes)
                .map_err(|error| {
                    CopyError::Invalid(format!("manifest {}: {error}", manifest.digest))
                })?;
            for child in &parsed.manifests {
                let child = self.fetch(child).await?;
                Box::pin(self.manifest(&child, depth + 1)).await?;
            }
            for blob in &parsed.blobs {
                self.blob(blob).await?;
            }
            self.report.manifests_copied += 1;
            if !self.dry_run {
                self.destination
                    .put_manifest(
                        self.to,
                        &by_digest,
                        &manifest.media_type,
                        manifest.bytes.clone(),
                    )
                    .await
                    .map_err(CopyError::Destination)?;
            }
            self.progress.manifest_done(&manifest.digest, true);
        }
        // Referrers (signatures, SBOMs) after their subject; a registry without the referrers
        // API has none to give.
        let referrers = self
            .source
            .referrers(self.from, &manifest.digest)
            .await
            .map_err(CopyError::Source)?
            .unwrap_or_default();
        for referrer in referrers {
            let referrer = self.fetch(&referrer).await?;
            Box::pin(self.manifest(&referrer, depth + 1)).await?;
        }
        Ok(())
    }

    async fn fetch(&self, digest: &Digest) -> Result<UpstreamManifest, CopyError> {
        self.source
            .manifest(self.from, &Reference::Digest(digest.clone()))
            .await
            .map_err(CopyError::Source)?
            .ok_or_else(|| {
                CopyError::Invalid(format!("the source lists {digest} but does not have it"))
            })
    }

    /// A blob, unless the destination has it.
    async fn blob(&mut self, digest: &Digest) -> Result<(), CopyError> {
        let present = self
            .destination
            .has_blob(self.to, digest)
            .await
            .map_err(CopyError::Destination)?;
        if present {
            self.report.blobs_present += 1;
            return Ok(());
        }
        self.report.blobs_copied += 1;
        if self.dry_run {
            return Ok(());
        }
        let (size, body) = self
            .source
            .blob(self.from, digest)
            .await
            .map_err(CopyError::Source)?
            .ok_or_else(|| {
                CopyError::Invalid(format!(
                    "the source lists blob {digest} but does not have it"
                ))
            })?;
        self.progress.blob_started(digest, size);
        let sent = self
            .destination
            .push_blob(self.to, digest, (size, body))
            .await
            .map_err(|error| match error {
                // The source's body failed (cut, or not the digest): its error, not the
                // destination's.
                PushError::Source(error) => CopyError::Source(error),
                PushError::Destination(error) => CopyError::Destination(error),
            })?;
        self.progress.bytes(sent);
        self.report.bytes_copied += sent;
        Ok(())
    }
}

/// Deletes from `to` (at `destination`) the tags `keep` admits that `from` (at `source`) no
/// longer has, and then the manifests those tags left behind (by digest: registries that do not
/// delete tags, like Distribution, take that), so the destination's tags match the source's.
/// Returns how many tags went.
pub async fn prune_repository(
    source: &dyn Source,
    destination: &dyn Destination,
    from: &RepositoryName,
    to: &RepositoryName,
    keep: &(dyn Fn(&str) -> bool + Send + Sync),
    dry_run: bool,
) -> Result<u64, CopyError> {
    let wanted: BTreeSet<String> = source
        .tags(from)
        .await
        .map_err(CopyError::Source)?
        .unwrap_or_default()
        .into_iter()
        .filter(|tag| keep(tag))
        .collect();
    let present = destination
        .tags(to)
        .await
        .map_err(CopyError::Destination)?
        .unwrap_or_default();
    let mut kept_digests = BTreeSet::new();
    for tag in &wanted {
        let tag = Tag::parse(tag)
            .map_err(|_| CopyError::Invalid(format!("the source lists tag {tag:?}")))?;
        if let Some(digest) = destination
            .tag_digest(to, &tag)
            .await
            .map_err(CopyError::Destination)?
        {
            kept_digests.insert(digest);
        }
    }
    let mut pruned = 0;
    for tag in present {
        if !keep(&tag) || wanted.contains(&tag) {
            continue;
        }
        let tag = Tag::parse(&tag)
            .map_err(|_| CopyError::Invalid(format!("the destination lists tag {tag:?}")))?;
        pruned += 1;
        if dry_run {
            continue;
        }
        let digest = destination
            .tag_digest(to, &tag)
            .await
            .map_err(CopyError::Destination)?;
        let untagged = destination
            .delete(to, &Reference::Tag(tag.clone()))
            .await
            .is_ok_and(|deleted| deleted);
        // A registry that cannot delete a tag (Distribution) deletes its manifest instead,
        // unless a tag the source keeps still points there.
        if let Some(digest) = digest.filter(|digest| !kept_digests.contains(digest)) {
            if !untagged
                || source
                    .manifest(from, &Reference::Digest(digest.clone()))
                    .await
                    .map_err(CopyError::Source)?
                    .is_none()
            {
                destination
                    .delete(to, &Reference::Digest(digest))
                    .await
                    .map_err(CopyError::Destination)?;
            }
        }
    }
    Ok(pruned)
}

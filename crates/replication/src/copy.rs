//! One repository, copied.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use oci_model::{Descriptor, Digest, ParsedManifest, Reference, RepositoryName, Tag};
use proxy::{PushError, UpstreamError, UpstreamManifest};

use crate::ends::{Destination, Source};
use serde::Serialize;

/// How deep an index may nest (index of indexes ...) before the copy refuses it.
const MAX_DEPTH: usize = 8;

/// How many blob locations [`MountHints`] keeps before it starts over.
const MOUNT_HINTS: usize = 50_000;

/// What to copy and how.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Only the tags this glob matches (`*` within, `**` across `.`-free text alike); all when
    /// `None`.
    pub tags: Option<String>,
    /// Look, count and report, but write nothing to the destination.
    pub dry_run: bool,
    /// Where blobs already are at the destination, shared by the copies to one destination: a
    /// blob there in another repository is mounted, not sent again.
    pub mounts: Option<Arc<MountHints>>,
}

/// A repository at the destination that holds each blob copies have seen there, so a layer
/// shared by many repositories crosses the network once and is mounted into the others.
/// Bounded: past [`MOUNT_HINTS`] blobs it forgets them all and starts over (a hint gone stale
/// only costs a mount the destination refuses, and the copy goes ahead).
#[derive(Debug, Default)]
pub struct MountHints {
    known: parking_lot::Mutex<HashMap<Digest, RepositoryName>>,
}

impl MountHints {
    /// A repository other than `repo` at the destination known to hold `digest`.
    fn elsewhere(&self, digest: &Digest, repo: &RepositoryName) -> Option<RepositoryName> {
        self.known
            .lock()
            .get(digest)
            .filter(|holder| *holder != repo)
            .cloned()
    }

    fn record(&self, digest: &Digest, repo: &RepositoryName) {
        let mut known = self.known.lock();
        if known.len() >= MOUNT_HINTS && !known.contains_key(digest) {
            known.clear();
        }
        known.insert(digest.clone(), repo.clone());
    }
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
    /// Blobs linked from another repository at the destination instead of copied.
    pub blobs_mounted: u64,
    pub bytes_copied: u64,
    /// Referrers indexes written under the referrers tag schema (`sha256-<hex>`), for a
    /// destination without the referrers API.
    pub referrers_tags_set: u64,
    /// Tags the destination refused to move (immutable there): reported, not forced.
    pub tags_refused: Vec<String>,
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
        self.blobs_mounted += other.blobs_mounted;
        self.bytes_copied += other.bytes_copied;
        self.referrers_tags_set += other.referrers_tags_set;
        self.tags_refused.extend(other.tags_refused.iter().cloned());
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
        mounts: options.mounts.clone(),
        referrers_api: None,
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
    mounts: Option<Arc<MountHints>>,
    /// Whether the destination has the referrers API, once known.
    referrers_api: Option<bool>,
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
        if self.dry_run {
            self.report.tags_set += 1;
            return Ok(());
        }
        let put = self
            .destination
            .put_manifest(
                self.to,
                &reference,
                &manifest.media_type,
                manifest.bytes.clone(),
            )
            .await;
        match put {
            Ok(_) => self.report.tags_set += 1,
            // A tag the destination has and will not move (an immutable tag there): the rest
            // of the repository goes on, and the refusal is reported.
            Err(error) if current.is_some() && refuses(&error) => {
                self.report.tags_refused.push(format!(
                    "{}:{tag} stays at {} on the destination, which refused to move it to {}: \
                     {error}",
                    self.to,
                    current.map(|d| d.to_string()).unwrap_or_default(),
                    manifest.digest
                ));
            }
            Err(error) => return Err(CopyError::Destination(error)),
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
                let indexed = self
                    .destination
                    .put_manifest(
                        self.to,
                        &by_digest,
                        &manifest.media_type,
                        manifest.bytes.clone(),
                    )
                    .await
                    .map_err(CopyError::Destination)?;
                if parsed.subject.is_some() {
                    self.referrers_api = Some(indexed);
                }
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
        let mut copied = Vec::with_capacity(referrers.len());
        for referrer in referrers {
            let referrer = self.fetch(&referrer).await?;
            Box::pin(self.manifest(&referrer, depth + 1)).await?;
            copied.push(referrer);
        }
        if !copied.is_empty() && !self.dry_run {
            self.referrers_tag(&manifest.digest, &copied).await?;
        }
        Ok(())
    }

    /// For a destination without the referrers API, the referrers tag schema's index of
    /// `subject` (tag `<alg>-<hex>`) made to list exactly `referrers`, as the source does.
    async fn referrers_tag(
        &mut self,
        subject: &Digest,
        referrers: &[UpstreamManifest],
    ) -> Result<(), CopyError> {
        let has_api = match self.referrers_api {
            Some(known) => known,
            None => {
                let known = Source::referrers(self.destination, self.to, subject)
                    .await
                    .map_err(CopyError::Destination)?
                    .is_some();
                self.referrers_api = Some(known);
                known
            }
        };
        if has_api {
            return Ok(());
        }
        let tag = Tag::parse(&referrers_tag_name(subject))
            .map_err(|_| CopyError::Invalid(format!("no referrers tag for {subject}")))?;
        let reference = Reference::Tag(tag);
        let wanted: Vec<Digest> = referrers.iter().map(|r| r.digest.clone()).collect();
        let current = Source::manifest(self.destination, self.to, &reference)
            .await
            .map_err(CopyError::Destination)?;
        if current.is_some_and(|index| listed_digests(&index.bytes) == wanted) {
            return Ok(());
        }
        let mut manifests = Vec::with_capacity(referrers.len());
        for referrer in referrers {
            let parsed = ParsedManifest::parse(Some(&referrer.media_type), &referrer.bytes)
                .map_err(|error| {
                    CopyError::Invalid(format!("manifest {}: {error}", referrer.digest))
                })?;
            manifests.push(Descriptor {
                media_type: referrer.media_type.clone(),
                digest: referrer.digest.clone(),
                size: referrer.bytes.len() as u64,
                artifact_type: parsed.artifact_type,
                annotations: parsed.annotations,
                urls: None,
                platform: None,
            });
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci_model::media_type::OCI_INDEX,
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&index)
            .map_err(|error| CopyError::Invalid(format!("a referrers index: {error}")))?;
        self.destination
            .put_manifest(
                self.to,
                &reference,
                oci_model::media_type::OCI_INDEX,
                bytes.into(),
            )
            .await
            .map_err(CopyError::Destination)?;
        self.report.referrers_tags_set += 1;
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

    /// A blob, unless the destination has it: mounted from another repository there that has
    /// it, else copied.
    async fn blob(&mut self, digest: &Digest) -> Result<(), CopyError> {
        let present = self
            .destination
            .has_blob(self.to, digest)
            .await
            .map_err(CopyError::Destination)?;
        if present {
            self.report.blobs_present += 1;
            self.remember(digest);
            return Ok(());
        }
        if self.dry_run {
            self.report.blobs_copied += 1;
            return Ok(());
        }
        let holder = self
            .mounts
            .as_ref()
            .and_then(|hints| hints.elsewhere(digest, self.to));
        if let Some(holder) = holder {
            let mounted = self
                .destination
                .mount_blob(self.to, digest, &holder)
                .await
                .map_err(CopyError::Destination)?;
            if mounted {
                self.report.blobs_mounted += 1;
                self.remember(digest);
                return Ok(());
            }
        }
        self.report.blobs_copied += 1;
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
        self.remember(digest);
        Ok(())
    }

    fn remember(&self, digest: &Digest) {
        if let Some(hints) = &self.mounts {
            hints.record(digest, self.to);
        }
    }
}

/// Whether `error` is a registry refusing a change (an immutable tag, a policy: 403, 405,
/// 409, 412), as opposed to being down or failing.
fn refuses(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Unauthorized(_) => true,
        UpstreamError::Status { status, .. } => matches!(status, 403 | 405 | 409 | 412),
        _ => false,
    }
}

/// The referrers tag schema's tag for `subject`: `<alg>-<hex>` (distribution-spec 1.1).
pub fn referrers_tag_name(subject: &Digest) -> String {
    let hex = subject.hex();
    format!(
        "{}-{}",
        subject.algorithm().as_str(),
        &hex[..hex.len().min(64)]
    )
}

/// The subject a referrers-tag-schema tag stands for, when `tag` is one.
pub fn referrers_tag_subject(tag: &str) -> Option<Digest> {
    let (algorithm, hex) = tag.split_once('-')?;
    Digest::parse(&format!("{algorithm}:{hex}")).ok()
}

/// The digests an index's `manifests` list, in order (empty when it is not an index).
fn listed_digests(bytes: &[u8]) -> Vec<Digest> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|index| index.get("manifests").and_then(|m| m.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|descriptor| descriptor.get("digest")?.as_str()?.parse().ok())
        .collect()
}

/// What a prune did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Tags gone from the destination (or, in a dry run, that would go).
    pub tags_deleted: u64,
    /// Deletions the destination refused (an immutable tag there): reported, not forced.
    pub refused: Vec<String>,
}

/// Deletes from `to` (at `destination`) the tags `keep` admits that `from` (at `source`) no
/// longer has, and then the manifests those tags left behind (by digest: registries that do not
/// delete tags, like Distribution, take that), so the destination's tags match the source's.
pub async fn prune_repository(
    source: &dyn Source,
    destination: &dyn Destination,
    from: &RepositoryName,
    to: &RepositoryName,
    keep: &(dyn Fn(&str) -> bool + Send + Sync),
    dry_run: bool,
) -> Result<PruneReport, CopyError> {
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
    let mut report = PruneReport::default();
    for tag in present {
        if !keep(&tag) || wanted.contains(&tag) {
            continue;
        }
        // A referrers index this copy keeps for a destination without the referrers API: it
        // stays while its subject does at the source.
        if let Some(subject) = referrers_tag_subject(&tag) {
            let subject_kept = source
                .manifest(from, &Reference::Digest(subject))
                .await
                .map_err(CopyError::Source)?
                .is_some();
            if subject_kept {
                continue;
            }
        }
        let tag = Tag::parse(&tag)
            .map_err(|_| CopyError::Invalid(format!("the destination lists tag {tag:?}")))?;
        if dry_run {
            report.tags_deleted += 1;
            continue;
        }
        let digest = destination
            .tag_digest(to, &tag)
            .await
            .map_err(CopyError::Destination)?;
        let untagged = destination.delete(to, &Reference::Tag(tag.clone())).await;
        if let Err(error) = &untagged {
            // 403, not the 405 or 400 of a registry that deletes no tags (Distribution).
            if matches!(
                error,
                UpstreamError::Unauthorized(_) | UpstreamError::Status { status: 403, .. }
            ) {
                // Immutable at the destination: it stays, and so does its manifest.
                report.refused.push(format!(
                    "{to}:{tag} stays on the destination, which refused to delete it: {error}"
                ));
                continue;
            }
        }
        let untagged = untagged.is_ok_and(|deleted| deleted);
        report.tags_deleted += 1;
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
                match destination
                    .delete(to, &Reference::Digest(digest.clone()))
                    .await
                {
                    Ok(_) => {}
                    Err(error) if refuses(&error) && untagged => {
                        // The tag went; its manifest is held by something the destination
                        // protects.
                        report.refused.push(format!(
                            "{to}@{digest} stays on the destination, which refused to delete \
                             it: {error}"
                        ));
                    }
                    Err(error) => return Err(CopyError::Destination(error)),
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_referrers_tag_names_its_subject_and_nothing_else_is_one() {
        let subject = Digest::sha256_of(b"subject");
        let tag = referrers_tag_name(&subject);
        assert_eq!(tag, format!("sha256-{}", subject.hex()));
        assert!(Tag::parse(&tag).is_ok());
        assert_eq!(referrers_tag_subject(&tag), Some(subject));
        for other in ["latest", "v1-2", "sha256-abc", "sha256-", "-", "md5-00"] {
            assert_eq!(referrers_tag_subject(other), None, "{other}");
        }
    }

    #[test]
    fn mount_hints_point_to_another_repository_and_stay_bounded() {
        let hints = MountHints::default();
        let a = RepositoryName::parse("team/a").expect("name");
        let b = RepositoryName::parse("team/b").expect("name");
        let digest = Digest::sha256_of(b"layer");
        assert_eq!(hints.elsewhere(&digest, &a), None);
        hints.record(&digest, &a);
        assert_eq!(hints.elsewhere(&digest, &a), None, "not from itself");
        assert_eq!(hints.elsewhere(&digest, &b), Some(a.clone()));
        for n in 0..MOUNT_HINTS + 10 {
            hints.record(&Digest::sha256_of(&n.to_le_bytes()), &b);
            assert!(hints.known.lock().len() <= MOUNT_HINTS);
        }
    }

    #[test]
    fn an_index_lists_its_digests_in_order() {
        let (one, two) = (Digest::sha256_of(b"1"), Digest::sha256_of(b"2"));
        let index = serde_json::json!({"manifests": [{"digest": one.to_string()}, {"digest": two.to_string()}]});
        assert_eq!(listed_digests(index.to_string().as_bytes()), vec![one, two]);
        assert!(listed_digests(b"not json").is_empty());
    }
}

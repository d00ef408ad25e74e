//! What each [`Command`] does to the state. Every handler checks first and writes after, so a
//! command that fails leaves nothing behind; none reads a clock or a random source.

use cluster_api::{
    AuthChange, BlobInfo, BlobNodeId, BlobNodeInfo, MetaError, NodeState, PutManifest,
    ReplicationPolicy, UploadId, UploadSession,
};
use oci_model::{Digest, RepositoryName, Tag};

use crate::command::{Command, CommandOutput, CommandResponse};
use crate::error::StoreError;
use crate::kv::Txn;
use crate::state::{self, BlobRecord, ManifestRecord};

/// A handler's result: the domain outcome, or a storage failure that stops the state machine.
type Outcome = Result<Result<CommandOutput, MetaError>, StoreError>;

const DONE: Result<CommandOutput, MetaError> = Ok(CommandOutput::Done);

pub(crate) fn apply_command(
    txn: &mut Txn<'_>,
    command: Command,
) -> Result<CommandResponse, StoreError> {
    let outcome = match command {
        Command::CreateUpload { session } => create_upload(txn, &session),
        Command::DeleteUpload { repo, id } => delete_upload(txn, &repo, &id),
        Command::CommitBlob { repo, blob, upload } => {
            commit_blob(txn, &repo, blob, upload.as_ref())
        }
        Command::MountBlob { repo, digest, from } => mount_blob(txn, &repo, &digest, &from),
        Command::UnlinkBlob { repo, digest } => unlink_blob(txn, &repo, &digest),
        Command::PutManifest(put) => put_manifest(txn, *put),
        Command::DeleteManifest { repo, digest } => delete_manifest(txn, &repo, &digest),
        Command::DeleteTag { repo, tag } => delete_tag(txn, &repo, &tag),
        Command::RegisterBlobNode(node) => register_blob_node(txn, &node),
        Command::SetBlobNodeState {
            id,
            state,
            expected,
        } => set_blob_node_state(txn, id, state, expected),
        Command::RemoveBlobNode { id } => remove_blob_node(txn, id),
        Command::SetReplicationPolicy(policy) => set_replication_policy(txn, &policy),
        Command::AddBlobReplicas { digest, nodes } => add_blob_replicas(txn, &digest, &nodes),
        Command::RemoveBlobReplicas { digest, nodes } => remove_blob_replicas(txn, &digest, &nodes),
        Command::ChangeAuth(change) => change_auth(txn, change),
    }?;
    Ok(CommandResponse(outcome))
}

/// The id of an immutable-tag rule protecting `tag` in `repo`, if any.
fn protecting_rule(
    txn: &Txn<'_>,
    repo: &RepositoryName,
    tag: &Tag,
) -> Result<Option<String>, StoreError> {
    Ok(state::immutable_tag_rules(txn)?
        .into_iter()
        .find(|rule| rule.protects(repo.as_str(), tag.as_str()))
        .map(|rule| rule.id))
}

fn change_auth(txn: &mut Txn<'_>, change: AuthChange) -> Outcome {
    let mut auth = state::auth(txn)?;
    if let Err(error) = auth.apply(change) {
        return Ok(Err(error));
    }
    state::put_auth(txn, &auth)?;
    state::put_immutable_tag_rules(txn, &auth.immutable_tags)?;
    Ok(Ok(CommandOutput::AuthVersion(auth.version)))
}

fn create_upload(txn: &mut Txn<'_>, session: &UploadSession) -> Outcome {
    state::put_upload(txn, session)?;
    Ok(DONE)
}

fn delete_upload(txn: &mut Txn<'_>, repo: &RepositoryName, id: &UploadId) -> Outcome {
    match state::upload(txn, id)? {
        Some(session) if session.repo == *repo => {
            state::delete_upload(txn, id);
            Ok(DONE)
        }
        _ => Ok(Err(MetaError::UploadUnknown(id.to_string()))),
    }
}

fn commit_blob(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    blob: BlobInfo,
    upload: Option<&UploadId>,
) -> Outcome {
    let mut replicas = Vec::new();
    if let Some(existing) = state::blob(txn, &blob.digest)? {
        if existing.size != blob.size {
            let reason = format!(
                "blob {} is recorded with {} bytes, not {}",
                blob.digest, existing.size, blob.size
            );
            return Ok(Err(MetaError::Invalid(reason)));
        }
        replicas = existing.replicas;
    }
    // Known replicas keep their place in the read order; new ones are appended.
    for node in blob.replicas {
        if !replicas.contains(&node) {
            replicas.push(node);
        }
    }
    let record = BlobRecord {
        size: blob.size,
        replicas,
    };
    state::put_blob(txn, &blob.digest, &record)?;
    state::put_blob_link(txn, repo, &blob.digest);
    state::put_repository(txn, repo);
    if let Some(id) = upload {
        if state::upload(txn, id)?.is_some_and(|session| session.repo == *repo) {
            state::delete_upload(txn, id);
        }
    }
    Ok(DONE)
}

fn mount_blob(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    from: &RepositoryName,
) -> Outcome {
    if !state::blob_linked(txn, from, digest)? {
        return Ok(Ok(CommandOutput::Mounted(None)));
    }
    let Some(record) = state::blob(txn, digest)? else {
        return Ok(Ok(CommandOutput::Mounted(None)));
    };
    state::put_blob_link(txn, repo, digest);
    state::put_repository(txn, repo);
    Ok(Ok(CommandOutput::Mounted(Some(
        record.info(digest.clone()),
    ))))
}

fn unlink_blob(txn: &mut Txn<'_>, repo: &RepositoryName, digest: &Digest) -> Outcome {
    if !state::blob_linked(txn, repo, digest)? {
        return Ok(Err(MetaError::BlobUnknown(digest.clone())));
    }
    state::delete_blob_link(txn, repo, digest);
    Ok(DONE)
}

fn put_manifest(txn: &mut Txn<'_>, put: PutManifest) -> Outcome {
    let repo = &put.repo;
    for blob in &put.blobs {
        if !state::blob_linked(txn, repo, blob)? {
            return Ok(Err(MetaError::ManifestBlobUnknown(blob.clone())));
        }
    }
    for child in &put.manifests {
        if !state::manifest_linked(txn, repo, child)? {
            return Ok(Err(MetaError::ManifestBlobUnknown(child.clone())));
        }
    }
    let referrer = match (&put.subject, &put.referrer) {
        (None, None) => None,
        (Some(subject), Some(descriptor)) if descriptor.digest == put.digest => {
            Some((subject, descriptor))
        }
        _ => {
            let reason =
                "a manifest's subject and referrer descriptor (of the manifest itself) go together";
            return Ok(Err(MetaError::Invalid(reason.to_owned())));
        }
    };
    if let Some(tag) = &put.tag {
        let current = state::tag(txn, repo, tag)?;
        if current.as_ref().is_some_and(|digest| *digest != put.digest) {
            if let Some(rule) = protecting_rule(txn, repo, tag)? {
                return Ok(Err(MetaError::Denied(format!(
                    "tag {tag} of {repo} is immutable (rule {rule}); push under a new tag"
                ))));
            }
        }
    }
    if let Some((subject, descriptor)) = referrer {
        state::put_referrer(txn, repo, subject, descriptor)?;
    }
    if let Some(tag) = &put.tag {
        state::put_tag(txn, repo, tag, &put.digest);
    }
    state::put_manifest_link(txn, repo, &put.digest);
    state::put_repository(txn, repo);
    let record = ManifestRecord {
        media_type: put.media_type,
        bytes: put.bytes,
        subject: put.subject.clone(),
        blobs: put.blobs,
        manifests: put.manifests,
    };
    state::put_manifest(txn, &put.digest, &record)?;
    Ok(DONE)
}

fn delete_manifest(txn: &mut Txn<'_>, repo: &RepositoryName, digest: &Digest) -> Outcome {
    if !state::manifest_linked(txn, repo, digest)? {
        return Ok(Err(MetaError::ManifestUnknown(digest.to_string())));
    }
    let tags = state::tags_pointing_at(txn, repo, digest)?;
    for tag in &tags {
        if let Some(rule) = protecting_rule(txn, repo, tag)? {
            return Ok(Err(MetaError::Denied(format!(
                "manifest {digest} carries the immutable tag {tag} (rule {rule})"
            ))));
        }
    }
    for tag in tags {
        state::delete_tag(txn, repo, &tag);
    }
    if let Some(subject) = state::manifest(txn, digest)?.and_then(|record| record.subject) {
        state::delete_referrer(txn, repo, &subject, digest);
    }
    state::delete_manifest_link(txn, repo, digest);
    Ok(DONE)
}

fn delete_tag(txn: &mut Txn<'_>, repo: &RepositoryName, tag: &Tag) -> Outcome {
    if state::tag(txn, repo, tag)?.is_none() {
        return Ok(Err(MetaError::ManifestUnknown(tag.to_string())));
    }
    if let Some(rule) = protecting_rule(txn, repo, tag)? {
        return Ok(Err(MetaError::Denied(format!(
            "tag {tag} of {repo} is immutable (rule {rule})"
        ))));
    }
    state::delete_tag(txn, repo, tag);
    Ok(DONE)
}

fn register_blob_node(txn: &mut Txn<'_>, node: &BlobNodeInfo) -> Outcome {
    if state::blob_node(txn, node.id)?.as_ref() != Some(node) {
        state::put_blob_node(txn, node)?;
        state::bump_epoch(txn)?;
    }
    Ok(DONE)
}

fn set_blob_node_state(
    txn: &mut Txn<'_>,
    id: BlobNodeId,
    wanted: NodeState,
    expected: Option<NodeState>,
) -> Outcome {
    if state::blob_node(txn, id)?.is_none() {
        return Ok(Err(MetaError::Invalid(format!(
            "blob node {id} is not known"
        ))));
    }
    let current = state::node_state(txn, id)?;
    if current == wanted || expected.is_some_and(|expected| expected != current) {
        return Ok(DONE);
    }
    state::put_node_state(txn, id, wanted)?;
    state::bump_epoch(txn)?;
    Ok(DONE)
}

fn remove_blob_node(txn: &mut Txn<'_>, id: BlobNodeId) -> Outcome {
    if state::blob_node(txn, id)?.is_some() {
        state::delete_blob_node(txn, id);
        state::bump_epoch(txn)?;
    }
    Ok(DONE)
}

fn set_replication_policy(txn: &mut Txn<'_>, policy: &ReplicationPolicy) -> Outcome {
    if policy.replicas == 0 || policy.write_quorum > policy.replicas {
        let reason = format!(
            "replication policy needs replicas >= 1 and write_quorum <= replicas, not {policy:?}"
        );
        return Ok(Err(MetaError::Invalid(reason)));
    }
    if state::policy(txn)? != *policy {
        state::put_policy(txn, policy)?;
        state::bump_epoch(txn)?;
    }
    Ok(DONE)
}

fn add_blob_replicas(txn: &mut Txn<'_>, digest: &Digest, nodes: &[BlobNodeId]) -> Outcome {
    let Some(mut record) = state::blob(txn, digest)? else {
        return Ok(Err(MetaError::BlobUnknown(digest.clone())));
    };
    let before = record.replicas.len();
    for node in nodes {
        if !record.replicas.contains(node) {
            record.replicas.push(*node);
        }
    }
    if record.replicas.len() != before {
        state::put_blob(txn, digest, &record)?;
    }
    Ok(DONE)
}

fn remove_blob_replicas(txn: &mut Txn<'_>, digest: &Digest, nodes: &[BlobNodeId]) -> Outcome {
    let Some(mut record) = state::blob(txn, digest)? else {
        return Ok(Err(MetaError::BlobUnknown(digest.clone())));
    };
    let before = record.replicas.len();
    record.replicas.retain(|node| !nodes.contains(node));
    if record.replicas.is_empty() {
        let reason = format!("removing {nodes:?} would leave blob {digest} with no replica");
        return Ok(Err(MetaError::Invalid(reason)));
    }
    if record.replicas.len() != before {
        state::put_blob(txn, digest, &record)?;
    }
    Ok(DONE)
}

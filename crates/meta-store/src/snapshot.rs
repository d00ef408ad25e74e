//! The snapshot format: every state table as typed rows plus `last_applied` and membership, as
//! one JSON document. Building reads a RocksDB snapshot (a consistent point in time); installing
//! replaces every state table in one write.

use cluster_api::{BlobNodeId, BlobNodeInfo, NodeState, ReplicationPolicy, UploadSession};
use oci_model::{Descriptor, Digest, RepositoryName, Tag};
use openraft::LogId;
use serde::{Deserialize, Serialize};

use crate::db::{decode, encode, Table};
use crate::error::StoreError;
use crate::kv::{KvRead, Txn};
use crate::state::{
    self, parse_digest, parse_repo, parse_tag, split_key, BlobRecord, ManifestRecord, Membership,
};

const FORMAT: u32 = 1;

/// The whole registry state at `last_applied`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SnapshotBody {
    pub format: u32,
    pub last_applied: Option<LogId<u64>>,
    pub membership: Membership,
    pub repositories: Vec<RepositoryName>,
    pub tags: Vec<(RepositoryName, Tag, Digest)>,
    pub manifests: Vec<(Digest, ManifestRecord)>,
    pub manifest_links: Vec<(RepositoryName, Digest)>,
    pub blobs: Vec<(Digest, BlobRecord)>,
    pub blob_links: Vec<(RepositoryName, Digest)>,
    pub referrers: Vec<(RepositoryName, Digest, Descriptor)>,
    pub uploads: Vec<UploadSession>,
    pub blob_nodes: Vec<BlobNodeInfo>,
    // The cluster-map fields came after format 1 shipped; older snapshots decode with defaults.
    #[serde(default)]
    pub node_states: Vec<(BlobNodeId, NodeState)>,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub policy: ReplicationPolicy,
}

/// Calls `row` on every row of `table`.
fn each_row(
    kv: &impl KvRead,
    table: Table,
    mut row: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    kv.scan(table, b"", None, &mut |key, value| {
        row(key, value)?;
        Ok(true)
    })
}

fn repo_and_digest(what: &'static str, key: &[u8]) -> Result<(RepositoryName, Digest), StoreError> {
    let [repo, digest] = split_key::<2>(what, key)?;
    Ok((
        parse_repo(what, repo)?,
        parse_digest(what, digest.as_bytes())?,
    ))
}

/// Reads the whole state from `kv`, which should be a point-in-time view.
pub(crate) fn dump(kv: &impl KvRead) -> Result<SnapshotBody, StoreError> {
    let mut body = SnapshotBody {
        format: FORMAT,
        last_applied: state::last_applied(kv)?,
        membership: state::membership(kv)?,
        ..SnapshotBody::default()
    };
    each_row(kv, Table::Repositories, |key, _| {
        let [repo] = split_key::<1>("repository key", key)?;
        body.repositories.push(parse_repo("repository key", repo)?);
        Ok(())
    })?;
    each_row(kv, Table::Tags, |key, value| {
        let [repo, tag] = split_key::<2>("tag key", key)?;
        let row = (
            parse_repo("tag key", repo)?,
            parse_tag("tag key", tag)?,
            parse_digest("tag target", value)?,
        );
        body.tags.push(row);
        Ok(())
    })?;
    each_row(kv, Table::Manifests, |key, value| {
        body.manifests.push((
            parse_digest("manifest key", key)?,
            decode("manifest record", value)?,
        ));
        Ok(())
    })?;
    each_row(kv, Table::ManifestLinks, |key, _| {
        body.manifest_links
            .push(repo_and_digest("manifest link", key)?);
        Ok(())
    })?;
    each_row(kv, Table::Blobs, |key, value| {
        body.blobs.push((
            parse_digest("blob key", key)?,
            decode("blob record", value)?,
        ));
        Ok(())
    })?;
    each_row(kv, Table::BlobLinks, |key, _| {
        body.blob_links.push(repo_and_digest("blob link", key)?);
        Ok(())
    })?;
    each_row(kv, Table::Referrers, |key, value| {
        let [repo, subject, _] = split_key::<3>("referrer key", key)?;
        let row = (
            parse_repo("referrer key", repo)?,
            parse_digest("referrer key", subject.as_bytes())?,
            decode("referrer descriptor", value)?,
        );
        body.referrers.push(row);
        Ok(())
    })?;
    each_row(kv, Table::Uploads, |_, value| {
        body.uploads.push(decode("upload session", value)?);
        Ok(())
    })?;
    body.blob_nodes = state::blob_nodes(kv)?;
    body.node_states = state::node_states(kv)?;
    body.epoch = state::epoch(kv)?;
    body.policy = state::policy(kv)?;
    Ok(body)
}

pub(crate) fn encode_body(body: &SnapshotBody) -> Result<Vec<u8>, StoreError> {
    encode("snapshot", body)
}

pub(crate) fn decode_body(bytes: &[u8]) -> Result<SnapshotBody, StoreError> {
    let body: SnapshotBody = decode("snapshot", bytes)?;
    if body.format != FORMAT {
        return Err(StoreError::corrupt(
            "snapshot",
            format!("unknown format {}", body.format),
        ));
    }
    Ok(body)
}

/// Stages, in `txn`, the replacement of every state table by `body`'s rows.
pub(crate) fn restore(txn: &mut Txn<'_>, body: SnapshotBody) -> Result<(), StoreError> {
    for table in Table::STATE {
        let mut keys = Vec::new();
        each_row(txn, table, |key, _| {
            keys.push(key.to_vec());
            Ok(())
        })?;
        for key in keys {
            txn.delete(table, key);
        }
    }
    for repo in &body.repositories {
        state::put_repository(txn, repo);
    }
    for (repo, tag, digest) in &body.tags {
        state::put_tag(txn, repo, tag, digest);
    }
    for (digest, record) in &body.manifests {
        state::put_manifest(txn, digest, record)?;
    }
    for (repo, digest) in &body.manifest_links {
        state::put_manifest_link(txn, repo, digest);
    }
    for (digest, record) in &body.blobs {
        state::put_blob(txn, digest, record)?;
    }
    for (repo, digest) in &body.blob_links {
        state::put_blob_link(txn, repo, digest);
    }
    for (repo, subject, descriptor) in &body.referrers {
        state::put_referrer(txn, repo, subject, descriptor)?;
    }
    for session in &body.uploads {
        state::put_upload(txn, session)?;
    }
    for node in &body.blob_nodes {
        state::put_blob_node(txn, node)?;
    }
    for (id, node_state) in &body.node_states {
        state::put_node_state(txn, *id, *node_state)?;
    }
    state::put_epoch(txn, body.epoch)?;
    state::put_policy(txn, &body.policy)?;
    Ok(())
}

//! Helpers shared by the meta-store test suites.
#![allow(dead_code)]

use cluster_api::{
    BlobInfo, BlobNodeInfo, MetaError, PutManifest, SweepReport, UploadId, UploadToken,
    UPLOAD_KEY_BYTES,
};
use meta_store::{Command, CommandOutput, MetaStore, StateReader, TypeConfig};
use oci_model::{Digest, RepositoryName, Tag};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use tempfile::TempDir;

pub fn open(dir: &TempDir) -> MetaStore {
    MetaStore::open(dir.path()).expect("open store")
}

pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(command),
    }
}

pub fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

pub fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).expect("valid repository name")
}

pub fn tag(name: &str) -> Tag {
    Tag::parse(name).expect("valid tag")
}

pub fn digest(content: &str) -> Digest {
    Digest::sha256_of(content.as_bytes())
}

pub fn upload_id(n: u8) -> UploadId {
    UploadId::parse(&format!("{n:032x}")).expect("valid upload id")
}

/// The upload-token key the tests set with [`set_upload_key`].
pub const UPLOAD_KEY: [u8; UPLOAD_KEY_BYTES] = [3; UPLOAD_KEY_BYTES];

pub fn set_upload_key() -> Command {
    Command::SetUploadKey {
        key: UPLOAD_KEY.to_vec(),
    }
}

/// Upload token `n` of `repo_name`, signed with [`UPLOAD_KEY`], started at `started_ms`.
pub fn token(repo_name: &str, n: u8, started_ms: u64) -> UploadId {
    UploadToken::mint(&UPLOAD_KEY, &repo(repo_name), 7, started_ms, [n; 16]).id()
}

pub fn blob(content: &str, replicas: &[u64]) -> BlobInfo {
    BlobInfo {
        digest: digest(content),
        size: content.len() as u64,
        replicas: replicas.to_vec(),
        placement: Vec::new(),
    }
}

pub fn node(id: u64) -> BlobNodeInfo {
    BlobNodeInfo {
        id,
        addr: format!("10.0.0.{id}:7000"),
        zone: "a".to_owned(),
        weight: 100,
        http_url: None,
    }
}

/// Applies commands one per entry, continuing after the store's last applied index, and returns
/// each command's domain outcome.
pub struct Applier {
    pub store: MetaStore,
    pub next_index: u64,
}

impl Applier {
    pub fn new(store: MetaStore) -> Applier {
        let next_index = store
            .reader
            .last_applied()
            .expect("read last applied")
            .map_or(1, |log_id| log_id.index + 1);
        Applier { store, next_index }
    }

    pub async fn apply_all(
        &mut self,
        commands: Vec<Command>,
    ) -> Vec<Result<CommandOutput, cluster_api::MetaError>> {
        let entries: Vec<_> = commands
            .into_iter()
            .map(|command| {
                let entry = entry(self.next_index, command);
                self.next_index += 1;
                entry
            })
            .collect();
        let responses = self
            .store
            .state_machine
            .apply(entries)
            .await
            .expect("apply");
        responses
            .into_iter()
            .map(|response| response.into_result())
            .collect()
    }

    pub async fn apply(
        &mut self,
        command: Command,
    ) -> Result<CommandOutput, cluster_api::MetaError> {
        self.apply_all(vec![command]).await.remove(0)
    }
}

/// An image manifest over `blobs`, optionally a referrer of `subject` with `artifact_type`.
pub fn manifest(
    repo_name: &str,
    label: &str,
    tag_name: Option<&str>,
    blobs: &[&Digest],
    subject: Option<(&Digest, &str)>,
) -> cluster_api::PutManifest {
    let bytes = format!(r#"{{"schemaVersion":2,"label":"{label}"}}"#).into_bytes();
    let manifest_digest = Digest::sha256_of(&bytes);
    let referrer = subject.map(|(_, artifact_type)| oci_model::Descriptor {
        media_type: oci_model::media_type::OCI_MANIFEST.to_owned(),
        digest: manifest_digest.clone(),
        size: bytes.len() as u64,
        artifact_type: Some(artifact_type.to_owned()),
        annotations: None,
        urls: None,
        platform: None,
    });
    cluster_api::PutManifest {
        repo: repo(repo_name),
        digest: manifest_digest,
        media_type: oci_model::media_type::OCI_MANIFEST.to_owned(),
        bytes,
        tag: tag_name.map(tag),
        blobs: blobs.iter().map(|digest| (*digest).clone()).collect(),
        manifests: Vec::new(),
        subject: subject.map(|(subject, _)| subject.clone()),
        referrer,
    }
}

/// Everything a client can observe about `repos` (plus the catalog and cluster map), to compare
/// two stores.
pub fn observe(reader: &meta_store::StateReader, repos: &[&str], digests: &[&Digest]) -> String {
    let mut out = format!("catalog {:?}\n", reader.list_repositories(None, 1000));
    out += &format!("nodes {:?}\n", reader.blob_nodes());
    out += &format!("map {:?}\n", reader.cluster_map());
    out += &format!("blobs {:?}\n", reader.list_blobs(None, 1000));
    out += &format!("auth {:?}\n", reader.auth_state());
    out += &format!("usage {:?}\n", reader.usage(None));
    out += &format!("doomed {:?}\n", reader.doomed_blobs(1, None, 1000));
    out += &format!("consistency {:?}\n", reader.check_consistency());
    for name in repos {
        let repo = repo(name);
        let tags = reader.list_tags(&repo, None, 1000);
        out += &format!("{name} tags {tags:?}\n");
        for tag_name in tags.map(|page| page.items).unwrap_or_default() {
            let reference = oci_model::Reference::Tag(tag(&tag_name));
            out += &format!(
                "{name}:{tag_name} {:?}\n",
                reader.get_manifest(&repo, &reference)
            );
        }
        for digest in digests {
            let reference = oci_model::Reference::Digest((*digest).clone());
            out += &format!(
                "{name}@{digest} manifest {:?}\n",
                reader.get_manifest(&repo, &reference)
            );
            out += &format!(
                "{name}@{digest} blob {:?}\n",
                reader.stat_blob(&repo, digest)
            );
            out += &format!(
                "{name}@{digest} referrers {:?}\n",
                reader.list_referrers(&repo, digest, None)
            );
        }
    }
    out += &format!("upload key {:?}\n", reader.upload_key());
    out
}

/// The blob node the command helpers below record copies on.
pub const NODE: u64 = 7;
/// Sessions start at 1_700_000_000 s (see [`token`]'s callers); pushes happen around then.
pub const T0_MS: u64 = 1_700_000_000_000;

/// A commit of `content` into `repo_name` on [`NODE`], by an upload token started at
/// `started_ms` if given.
pub fn commit(repo_name: &str, content: &str, started_ms: Option<u64>, now_ms: u64) -> Command {
    Command::CommitBlob {
        repo: repo(repo_name),
        blob: blob(content, &[NODE]),
        upload: started_ms.map(|started_ms| token(repo_name, 1, started_ms)),
        now_ms,
    }
}

pub fn put(manifest: &PutManifest, now_ms: u64) -> Command {
    Command::PutManifest {
        put: Box::new(manifest.clone()),
        now_ms,
    }
}

pub fn swept(outcome: Result<CommandOutput, MetaError>) -> SweepReport {
    match outcome {
        Ok(CommandOutput::Swept(report)) => report,
        other => panic!("a sweep answered {other:?}"),
    }
}

/// The kept counts agree with the graph (`check_consistency` finds nothing).
pub fn consistent(reader: &StateReader) {
    let problems = reader.check_consistency().expect("check");
    assert!(problems.is_empty(), "inconsistent state: {problems:#?}");
}

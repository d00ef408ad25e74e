//! Helpers shared by the meta-node suites.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use cluster_api::{BlobInfo, BlobNodeInfo, PutManifest};
use meta_node::{MetaConfig, MetaNode};
use oci_model::{Descriptor, Digest, RepositoryName, Tag};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn config(node_id: u64, data_dir: &Path, advertise_addr: &str, bootstrap: bool) -> MetaConfig {
    MetaConfig {
        node_id,
        data_dir: data_dir.to_path_buf(),
        advertise_addr: advertise_addr.to_owned(),
        bootstrap,
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..MetaConfig::default()
    }
}

/// A bootstrapped single voter that has become leader.
pub async fn single_node(data_dir: &Path) -> MetaNode {
    let node = MetaNode::open(config(1, data_dir, "127.0.0.1:9", true))
        .await
        .expect("open meta node");
    let leader = node.wait_for_leader(DEADLINE).await.expect("leader");
    assert_eq!(leader, 1);
    node
}

pub fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).expect("valid repository name")
}

pub fn tag(name: &str) -> Tag {
    Tag::parse(name).expect("valid tag")
}

pub fn blob(content: &str) -> BlobInfo {
    BlobInfo {
        digest: Digest::sha256_of(content.as_bytes()),
        size: content.len() as u64,
        replicas: vec![1],
        placement: Vec::new(),
    }
}

pub fn blob_node(id: u64) -> BlobNodeInfo {
    BlobNodeInfo {
        id,
        addr: format!("127.0.0.1:{}", 7000 + id),
        zone: "a".to_owned(),
        weight: 1,
        http_url: None,
    }
}

/// A manifest over `blobs` in `repo_name`, tagged `tag_name` when given.
pub fn manifest(
    repo_name: &str,
    label: &str,
    tag_name: Option<&str>,
    blobs: &[&Digest],
) -> PutManifest {
    let bytes = format!(r#"{{"schemaVersion":2,"label":"{label}"}}"#).into_bytes();
    PutManifest {
        repo: repo(repo_name),
        digest: Digest::sha256_of(&bytes),
        media_type: oci_model::media_type::OCI_MANIFEST.to_owned(),
        bytes,
        tag: tag_name.map(tag),
        blobs: blobs.iter().map(|digest| (*digest).clone()).collect(),
        manifests: Vec::new(),
        subject: None,
        referrer: None,
    }
}

/// A referrer of `subject` with `artifact_type`.
pub fn referrer(
    repo_name: &str,
    label: &str,
    subject: &Digest,
    artifact_type: &str,
) -> PutManifest {
    let mut put = manifest(repo_name, label, None, &[]);
    put.subject = Some(subject.clone());
    put.referrer = Some(Descriptor {
        media_type: put.media_type.clone(),
        digest: put.digest.clone(),
        size: put.bytes.len() as u64,
        artifact_type: Some(artifact_type.to_owned()),
        annotations: None,
        urls: None,
        platform: None,
    });
    put
}

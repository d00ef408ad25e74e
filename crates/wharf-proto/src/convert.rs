//! Conversions between domain types (`oci-model`, `cluster-api`) and proto messages: one function
//! pair per type, nowhere else. Decoding validates (digests, names, ids) and fails with
//! [`DecodeError`]; encoding cannot fail.

use std::collections::BTreeMap;

use cluster_api::{
    BlobInfo, BlobNodeInfo, BlobNodeLiveness, ClusterMap, ClusterMember, ClusterStatus,
    CommittedBlob, MetaMember, MetaRole, NodeState, Page, PlacementRule, PutManifest,
    ReplicationPolicy, StoredManifest, UploadId, UploadSession,
};
use oci_model::{Descriptor, Digest, RepositoryName, Tag};

use crate::pb;

/// A proto message carried a field that does not decode into its domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field {field}: {reason}")]
pub struct DecodeError {
    pub field: &'static str,
    pub reason: String,
}

fn bad(field: &'static str, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError {
        field,
        reason: reason.to_string(),
    }
}

pub fn digest(field: &'static str, text: &str) -> Result<Digest, DecodeError> {
    Digest::parse(text).map_err(|e| bad(field, e))
}

pub fn repo(field: &'static str, text: &str) -> Result<RepositoryName, DecodeError> {
    RepositoryName::parse(text).map_err(|e| bad(field, e))
}

pub fn upload_id(field: &'static str, text: &str) -> Result<UploadId, DecodeError> {
    UploadId::parse(text).ok_or_else(|| bad(field, "not an upload id"))
}

fn digests(field: &'static str, texts: &[String]) -> Result<Vec<Digest>, DecodeError> {
    texts.iter().map(|text| digest(field, text)).collect()
}

pub fn descriptor_to_pb(descriptor: &Descriptor) -> pb::Descriptor {
    pb::Descriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.to_string(),
        size: descriptor.size,
        artifact_type: descriptor.artifact_type.clone(),
        has_annotations: descriptor.annotations.is_some(),
        annotations: descriptor
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        platform_json: descriptor.platform.as_ref().map(|p| p.to_string()),
        urls: descriptor.urls.clone().unwrap_or_default(),
    }
}

pub fn descriptor_from_pb(descriptor: pb::Descriptor) -> Result<Descriptor, DecodeError> {
    let platform = descriptor
        .platform_json
        .map(|text| serde_json::from_str(&text).map_err(|e| bad("platform_json", e)))
        .transpose()?;
    Ok(Descriptor {
        digest: digest("descriptor.digest", &descriptor.digest)?,
        media_type: descriptor.media_type,
        size: descriptor.size,
        artifact_type: descriptor.artifact_type,
        annotations: descriptor.has_annotations.then(|| {
            descriptor
                .annotations
                .into_iter()
                .collect::<BTreeMap<_, _>>()
        }),
        urls: (!descriptor.urls.is_empty()).then_some(descriptor.urls),
        platform,
    })
}

pub fn blob_info_to_pb(blob: &BlobInfo) -> pb::BlobInfo {
    pb::BlobInfo {
        digest: blob.digest.to_string(),
        size: blob.size,
        replicas: blob.replicas.clone(),
        placement: blob
            .placement
            .iter()
            .map(|rules| pb::PlacementRuleSet {
                rules: rules.clone(),
            })
            .collect(),
    }
}

pub fn blob_info_from_pb(blob: pb::BlobInfo) -> Result<BlobInfo, DecodeError> {
    Ok(BlobInfo {
        digest: digest("blob.digest", &blob.digest)?,
        size: blob.size,
        replicas: blob.replicas,
        placement: blob.placement.into_iter().map(|set| set.rules).collect(),
    })
}

pub fn upload_session_to_pb(session: &UploadSession) -> pb::UploadSession {
    pb::UploadSession {
        id: session.id.to_string(),
        repo: session.repo.to_string(),
        staging_node: session.staging_node,
        started_ms: session.started_ms,
    }
}

pub fn upload_session_from_pb(session: pb::UploadSession) -> Result<UploadSession, DecodeError> {
    Ok(UploadSession {
        id: upload_id("session.id", &session.id)?,
        repo: repo("session.repo", &session.repo)?,
        staging_node: session.staging_node,
        started_ms: session.started_ms,
    })
}

pub fn put_manifest_to_pb(manifest: &PutManifest) -> pb::PutManifestRequest {
    pb::PutManifestRequest {
        repo: manifest.repo.to_string(),
        digest: manifest.digest.to_string(),
        media_type: manifest.media_type.clone(),
        bytes: manifest.bytes.clone(),
        tag: manifest.tag.as_ref().map(|t| t.to_string()),
        blobs: manifest.blobs.iter().map(|d| d.to_string()).collect(),
        manifests: manifest.manifests.iter().map(|d| d.to_string()).collect(),
        subject: manifest.subject.as_ref().map(|d| d.to_string()),
        referrer: manifest.referrer.as_ref().map(descriptor_to_pb),
    }
}

pub fn put_manifest_from_pb(request: pb::PutManifestRequest) -> Result<PutManifest, DecodeError> {
    Ok(PutManifest {
        repo: repo("repo", &request.repo)?,
        digest: digest("digest", &request.digest)?,
        media_type: request.media_type,
        bytes: request.bytes,
        tag: request
            .tag
            .map(|t| Tag::parse(&t).map_err(|e| bad("tag", e)))
            .transpose()?,
        blobs: digests("blobs", &request.blobs)?,
        manifests: digests("manifests", &request.manifests)?,
        subject: request.subject.map(|s| digest("subject", &s)).transpose()?,
        referrer: request.referrer.map(descriptor_from_pb).transpose()?,
    })
}

pub fn stored_manifest_to_pb(manifest: &StoredManifest) -> pb::StoredManifest {
    pb::StoredManifest {
        digest: manifest.digest.to_string(),
        media_type: manifest.media_type.clone(),
        bytes: manifest.bytes.clone(),
    }
}

pub fn stored_manifest_from_pb(
    manifest: pb::StoredManifest,
) -> Result<StoredManifest, DecodeError> {
    Ok(StoredManifest {
        digest: digest("digest", &manifest.digest)?,
        media_type: manifest.media_type,
        bytes: manifest.bytes,
    })
}

pub fn page_to_pb(page: Page) -> pb::Page {
    pb::Page {
        items: page.items,
        more: page.more,
    }
}

pub fn page_from_pb(page: pb::Page) -> Page {
    Page {
        items: page.items,
        more: page.more,
    }
}

pub fn blob_node_to_pb(node: &BlobNodeInfo) -> pb::BlobNodeInfo {
    pb::BlobNodeInfo {
        id: node.id,
        addr: node.addr.clone(),
        zone: node.zone.clone(),
        weight: node.weight,
        http_url: node.http_url.clone(),
    }
}

pub fn blob_node_from_pb(node: pb::BlobNodeInfo) -> BlobNodeInfo {
    BlobNodeInfo {
        id: node.id,
        addr: node.addr,
        zone: node.zone,
        weight: node.weight,
        http_url: node.http_url,
    }
}

pub fn committed_to_pb(committed: &CommittedBlob) -> pb::CommittedBlob {
    pb::CommittedBlob {
        size: committed.size,
        replicas: committed.replicas.clone(),
    }
}

pub fn committed_from_pb(committed: pb::CommittedBlob) -> CommittedBlob {
    CommittedBlob {
        size: committed.size,
        replicas: committed.replicas,
    }
}

pub fn node_state_to_pb(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Up => pb::NodeState::Up,
        NodeState::Draining => pb::NodeState::Draining,
        NodeState::Down => pb::NodeState::Down,
    }
}

pub fn node_state_from_pb(field: &'static str, value: i32) -> Result<NodeState, DecodeError> {
    match pb::NodeState::try_from(value) {
        Ok(pb::NodeState::Up) => Ok(NodeState::Up),
        Ok(pb::NodeState::Draining) => Ok(NodeState::Draining),
        Ok(pb::NodeState::Down) => Ok(NodeState::Down),
        _ => Err(bad(field, format!("{value} is not a node state"))),
    }
}

pub fn policy_to_pb(policy: &ReplicationPolicy) -> pb::ReplicationPolicy {
    pb::ReplicationPolicy {
        replicas: policy.replicas,
        write_quorum: policy.write_quorum,
    }
}

pub fn policy_from_pb(policy: pb::ReplicationPolicy) -> ReplicationPolicy {
    ReplicationPolicy {
        replicas: policy.replicas,
        write_quorum: policy.write_quorum,
    }
}

pub fn cluster_map_to_pb(map: &ClusterMap) -> pb::ClusterMap {
    pb::ClusterMap {
        epoch: map.epoch,
        policy: Some(policy_to_pb(&map.policy)),
        members: map
            .members
            .iter()
            .map(|member| pb::ClusterMember {
                node: Some(blob_node_to_pb(&member.node)),
                state: node_state_to_pb(member.state).into(),
            })
            .collect(),
        placement_rules: map.placement.iter().map(placement_rule_to_pb).collect(),
    }
}

pub fn placement_rule_to_pb(rule: &PlacementRule) -> pb::PlacementRule {
    pb::PlacementRule {
        id: rule.id.clone(),
        repositories: rule.repositories.clone(),
        zones: rule.zones.clone(),
        replicas: rule.replicas,
    }
}

/// Shape only: the state machine validates a rule before storing it.
pub fn placement_rule_from_pb(rule: pb::PlacementRule) -> PlacementRule {
    PlacementRule {
        id: rule.id,
        repositories: rule.repositories,
        zones: rule.zones,
        replicas: rule.replicas,
    }
}

pub fn cluster_map_from_pb(map: pb::ClusterMap) -> Result<ClusterMap, DecodeError> {
    let members = map
        .members
        .into_iter()
        .map(|member| {
            let node = member.node.ok_or_else(|| bad("member.node", "missing"))?;
            Ok(ClusterMember {
                node: blob_node_from_pb(node),
                state: node_state_from_pb("member.state", member.state)?,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(ClusterMap {
        epoch: map.epoch,
        policy: map.policy.map(policy_from_pb).unwrap_or_default(),
        members,
        placement: map
            .placement_rules
            .into_iter()
            .map(placement_rule_from_pb)
            .collect(),
    })
}

pub fn meta_member_to_pb(member: &MetaMember) -> pb::MetaMember {
    let role = match member.role {
        MetaRole::Voter => pb::MetaRole::Voter,
        MetaRole::Learner => pb::MetaRole::Learner,
    };
    pb::MetaMember {
        id: member.id,
        addr: member.addr.clone(),
        role: role.into(),
        matched_index: member.matched_index,
    }
}

pub fn meta_member_from_pb(member: pb::MetaMember) -> Result<MetaMember, DecodeError> {
    let role = match pb::MetaRole::try_from(member.role) {
        Ok(pb::MetaRole::Voter) => MetaRole::Voter,
        Ok(pb::MetaRole::Learner) => MetaRole::Learner,
        _ => return Err(bad("meta_member.role", member.role)),
    };
    Ok(MetaMember {
        id: member.id,
        addr: member.addr,
        role,
        matched_index: member.matched_index,
    })
}

pub fn cluster_status_to_pb(status: &ClusterStatus) -> pb::ClusterStatusResponse {
    pb::ClusterStatusResponse {
        leader_id: status.leader_id,
        leader_addr: status.leader_addr.clone(),
        term: status.term,
        commit_index: status.commit_index,
        last_applied: status.last_applied,
        meta_members: status.meta_members.iter().map(meta_member_to_pb).collect(),
        map: Some(cluster_map_to_pb(&status.map)),
        liveness: status
            .liveness
            .iter()
            .map(|liveness| pb::BlobNodeLiveness {
                id: liveness.id,
                last_seen_ms_ago: liveness.last_seen_ms_ago,
                full: liveness.health.full,
                free_bytes: liveness.health.free_bytes,
            })
            .collect(),
    }
}

pub fn cluster_status_from_pb(
    status: pb::ClusterStatusResponse,
) -> Result<ClusterStatus, DecodeError> {
    Ok(ClusterStatus {
        leader_id: status.leader_id,
        leader_addr: status.leader_addr,
        term: status.term,
        commit_index: status.commit_index,
        last_applied: status.last_applied,
        meta_members: status
            .meta_members
            .into_iter()
            .map(meta_member_from_pb)
            .collect::<Result<_, _>>()?,
        map: cluster_map_from_pb(status.map.ok_or_else(|| bad("map", "missing"))?)?,
        liveness: status
            .liveness
            .into_iter()
            .map(|liveness| BlobNodeLiveness {
                id: liveness.id,
                last_seen_ms_ago: liveness.last_seen_ms_ago,
                health: cluster_api::BlobNodeHealth {
                    full: liveness.full,
                    free_bytes: liveness.free_bytes,
                },
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_manifest_round_trips() {
        let manifest = PutManifest {
            repo: RepositoryName::parse("a/b").unwrap(),
            digest: Digest::sha256_of(b"m"),
            media_type: oci_model::media_type::OCI_MANIFEST.into(),
            bytes: b"{}".to_vec(),
            tag: Some(Tag::parse("v1").unwrap()),
            blobs: vec![Digest::sha256_of(b"c")],
            manifests: vec![],
            subject: Some(Digest::sha256_of(b"s")),
            referrer: Some(Descriptor {
                media_type: "x".into(),
                digest: Digest::sha256_of(b"m"),
                size: 2,
                artifact_type: Some("t".into()),
                annotations: Some(BTreeMap::from([("k".into(), "v".into())])),
                urls: None,
                platform: Some(serde_json::json!({"os": "linux"})),
            }),
        };
        let decoded = put_manifest_from_pb(put_manifest_to_pb(&manifest)).unwrap();
        assert_eq!(decoded, manifest);
    }

    #[test]
    fn cluster_status_round_trips() {
        let status = ClusterStatus {
            leader_id: Some(2),
            leader_addr: Some("10.0.0.2:5001".into()),
            term: 7,
            commit_index: 40,
            last_applied: 39,
            meta_members: vec![
                MetaMember {
                    id: 2,
                    addr: "10.0.0.2:5001".into(),
                    role: MetaRole::Voter,
                    matched_index: Some(40),
                },
                MetaMember {
                    id: 4,
                    addr: "10.0.0.4:5001".into(),
                    role: MetaRole::Learner,
                    matched_index: None,
                },
            ],
            map: ClusterMap {
                epoch: 5,
                policy: ReplicationPolicy {
                    replicas: 3,
                    write_quorum: 2,
                },
                members: [NodeState::Up, NodeState::Draining, NodeState::Down]
                    .into_iter()
                    .enumerate()
                    .map(|(i, state)| ClusterMember {
                        node: BlobNodeInfo {
                            id: i as u64,
                            addr: format!("b{i}:1"),
                            zone: "z".into(),
                            weight: 10,
                            http_url: None,
                        },
                        state,
                    })
                    .collect(),
                placement: vec![
                    PlacementRule {
                        id: "eu".into(),
                        repositories: "eu/**".into(),
                        zones: vec!["eu-west".into(), "eu-central".into()],
                        replicas: Some(2),
                    },
                    PlacementRule {
                        id: "us".into(),
                        repositories: "us/**".into(),
                        zones: vec!["us-east".into()],
                        replicas: None,
                    },
                ],
            },
            liveness: vec![
                BlobNodeLiveness {
                    id: 0,
                    last_seen_ms_ago: Some(12),
                    health: cluster_api::BlobNodeHealth {
                        full: true,
                        free_bytes: Some(4096),
                    },
                },
                BlobNodeLiveness {
                    id: 1,
                    last_seen_ms_ago: None,
                    health: cluster_api::BlobNodeHealth::default(),
                },
            ],
        };
        let decoded = cluster_status_from_pb(cluster_status_to_pb(&status)).unwrap();
        assert_eq!(decoded, status);
        assert!(node_state_from_pb("state", 0).is_err());
    }

    #[test]
    fn decoding_rejects_bad_fields() {
        let mut request = put_manifest_to_pb(&PutManifest {
            repo: RepositoryName::parse("a").unwrap(),
            digest: Digest::sha256_of(b"m"),
            media_type: String::new(),
            bytes: vec![],
            tag: None,
            blobs: vec![],
            manifests: vec![],
            subject: None,
            referrer: None,
        });
        request.repo = "../etc".into();
        assert_eq!(put_manifest_from_pb(request).unwrap_err().field, "repo");
    }
}

//! Writes the `proto` target's seeds into `fuzz/corpus/proto/`: one valid encoding of each
//! message the target decodes, prefixed with the byte that selects it (see
//! `fuzz_targets/proto.rs`). Run with `cargo run --manifest-path fuzz/Cargo.toml --example
//! proto_seeds`.

use std::path::Path;

use prost::Message;
use wharf_proto::pb;

const DIGEST: &str = "sha256:4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";
const CHILD: &str = "sha256:2ef7bde608ce5404e97d5f042f95f89f1c232871d3d7e0c4f7e1b6f0e37c3a6b";
/// An upload id (lowercase hex, 32 to 128 characters), as `UploadId::parse` accepts.
const UPLOAD_ID: &str = "01000102030405060708090a0b0c0d0e0f000000000000000300000000000000004f9b6a2c1d3e5f7a0123456789abcdef0123456789abcdef01";

fn descriptor() -> pb::Descriptor {
    pb::Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: DIGEST.into(),
        size: 1022,
        artifact_type: Some("application/spdx+json".into()),
        annotations: [(
            "org.opencontainers.image.created".into(),
            "2024-09-06T12:05:36Z".into(),
        )]
        .into(),
        has_annotations: true,
        platform_json: Some(r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#.into()),
        urls: vec![],
    }
}

fn cluster_map() -> pb::ClusterMap {
    pb::ClusterMap {
        epoch: 5,
        policy: Some(pb::ReplicationPolicy {
            replicas: 3,
            write_quorum: 2,
        }),
        members: (1..=3)
            .map(|id| pb::ClusterMember {
                node: Some(pb::BlobNodeInfo {
                    id,
                    addr: format!("blob-{id}:5002"),
                    zone: format!("eu-west-{id}"),
                    weight: 100,
                    http_url: Some(format!("http://blob-{id}:5003")),
                }),
                state: pb::NodeState::Up.into(),
            })
            .collect(),
        placement_rules: vec![pb::PlacementRule {
            id: "eu".into(),
            repositories: "eu/**".into(),
            zones: vec!["eu-west-1".into(), "eu-west-2".into()],
            replicas: Some(2),
        }],
    }
}

fn account() -> pb::Account {
    pb::Account {
        name: "ci".into(),
        kind: pb::AccountKind::Robot.into(),
        secret_hash: "sha256:00".into(),
        admin: false,
        created_at: 1_800_000_000,
        expires_at: Some(1_900_000_000),
        generation: 2,
        description: "the CI robot".into(),
    }
}

fn policy() -> pb::Policy {
    pb::Policy {
        id: "p1".into(),
        subject: "ci".into(),
        repositories: "ci/**".into(),
        actions: vec!["pull".into(), "push".into()],
    }
}

fn main() -> std::io::Result<()> {
    let seeds: Vec<(u8, Vec<u8>)> = vec![
        (
            0,
            pb::PutManifestRequest {
                repo: "library/alpine".into(),
                digest: DIGEST.into(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                bytes: br#"{"schemaVersion":2}"#.to_vec(),
                tag: Some("3.20".into()),
                blobs: vec![CHILD.into()],
                manifests: vec![],
                subject: Some(CHILD.into()),
                referrer: Some(descriptor()),
            }
            .encode_to_vec(),
        ),
        (
            1,
            pb::BlobInfo {
                digest: DIGEST.into(),
                size: 3_623_807,
                replicas: vec![1, 2, 3],
                placement: vec![pb::PlacementRuleSet {
                    rules: vec!["eu".into()],
                }],
            }
            .encode_to_vec(),
        ),
        (2, descriptor().encode_to_vec()),
        (
            3,
            pb::UploadSession {
                id: UPLOAD_ID.into(),
                repo: "team-a/app".into(),
                staging_node: 3,
                started_ms: 1_800_000_000_000,
            }
            .encode_to_vec(),
        ),
        (
            4,
            pb::StoredManifest {
                digest: DIGEST.into(),
                media_type: "application/vnd.docker.distribution.manifest.list.v2+json".into(),
                bytes: b"{}".to_vec(),
            }
            .encode_to_vec(),
        ),
        (5, cluster_map().encode_to_vec()),
        (
            6,
            pb::ClusterStatusResponse {
                leader_id: Some(1),
                leader_addr: Some("meta-1:5001".into()),
                term: 7,
                commit_index: 40,
                last_applied: 39,
                meta_members: vec![pb::MetaMember {
                    id: 1,
                    addr: "meta-1:5001".into(),
                    role: pb::MetaRole::Voter.into(),
                    matched_index: Some(40),
                }],
                map: Some(cluster_map()),
                liveness: vec![pb::BlobNodeLiveness {
                    id: 1,
                    last_seen_ms_ago: Some(120),
                    full: false,
                    free_bytes: Some(64 << 30),
                }],
            }
            .encode_to_vec(),
        ),
        (
            7,
            pb::AuthChange {
                change: Some(pb::auth_change::Change::PutAccount(pb::PutAccount {
                    account: Some(account()),
                    replace: true,
                })),
            }
            .encode_to_vec(),
        ),
        (
            7,
            pb::AuthChange {
                change: Some(pb::auth_change::Change::PutPolicy(policy())),
            }
            .encode_to_vec(),
        ),
        (
            8,
            pb::AuthState {
                version: 9,
                accounts: vec![account()],
                policies: vec![policy()],
                keys: vec![pb::SigningKey {
                    kid: "ab12".into(),
                    pkcs8: vec![0x30, 0x2e],
                    public: vec![7; 32],
                    created_at: 1,
                }],
                immutable_tags: vec![pb::ImmutableTagRule {
                    id: "release".into(),
                    repositories: "prod/**".into(),
                    tags: "v*".into(),
                }],
            }
            .encode_to_vec(),
        ),
        (
            9,
            pb::RetentionAction {
                kind: pb::RetentionActionKind::Untag.into(),
                repo: "ci/app".into(),
                tag: Some("pr-1234".into()),
                digest: DIGEST.into(),
                pushed_ms: 1_800_000_000_000,
                rule: "keep-10".into(),
            }
            .encode_to_vec(),
        ),
        (
            10,
            pb::NodeBlobGenerations {
                node: 2,
                blobs: vec![pb::BlobGeneration {
                    digest: DIGEST.into(),
                    generation: 4,
                }],
            }
            .encode_to_vec(),
        ),
        (
            13,
            pb::RetentionRule {
                id: "keep-10".into(),
                repositories: "ci/**".into(),
                keep_last: Some(10),
                keep_tags: Some("v*".into()),
                untagged_older_than_secs: Some(86_400),
                dry_run: true,
            }
            .encode_to_vec(),
        ),
        (
            14,
            pb::Page {
                items: vec!["a".into(), "b".into()],
                more: true,
            }
            .encode_to_vec(),
        ),
        (
            15,
            pb::SetBlobNodeStateRequest {
                id: 2,
                state: pb::NodeState::Draining.into(),
            }
            .encode_to_vec(),
        ),
        (
            16,
            pb::CommitBlobRequest {
                repo: "library/alpine".into(),
                blob: Some(pb::BlobInfo {
                    digest: DIGEST.into(),
                    size: 12,
                    replicas: vec![1],
                    placement: vec![],
                }),
                upload_id: Some(UPLOAD_ID.into()),
            }
            .encode_to_vec(),
        ),
        (
            17,
            pb::GetManifestRequest {
                repo: "library/alpine".into(),
                reference: "latest".into(),
            }
            .encode_to_vec(),
        ),
        (
            18,
            pb::DeleteTagRequest {
                repo: "library/alpine".into(),
                tag: "3.20".into(),
            }
            .encode_to_vec(),
        ),
        (
            19,
            pb::AppendChunk {
                id: UPLOAD_ID.into(),
                offset: Some(0),
                data: b"chunk".to_vec().into(),
                commit_digest: DIGEST.into(),
                commit_repo: "library/alpine".into(),
                declared_length: Some(5),
            }
            .encode_to_vec(),
        ),
        (
            20,
            pb::MountBlobRequest {
                repo: "team-a/app".into(),
                digest: DIGEST.into(),
                from: "library/alpine".into(),
            }
            .encode_to_vec(),
        ),
        (
            21,
            pb::CommitUploadRequest {
                id: UPLOAD_ID.into(),
                digest: DIGEST.into(),
                repo: "team-a/app".into(),
            }
            .encode_to_vec(),
        ),
        (
            22,
            pb::DiscardOrphansRequest {
                node: 3,
                blobs: vec![pb::OrphanBlob {
                    digest: DIGEST.into(),
                    size: 5,
                }],
            }
            .encode_to_vec(),
        ),
        (
            23,
            pb::OpenUploadsRequest {
                ids: vec![UPLOAD_ID.into(), "0123456789abcdef0123456789abcdef".into()],
            }
            .encode_to_vec(),
        ),
    ];
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/proto");
    std::fs::create_dir_all(&directory)?;
    for (index, (selector, bytes)) in seeds.into_iter().enumerate() {
        let mut seed = vec![selector];
        seed.extend(bytes);
        std::fs::write(directory.join(format!("seed-{index:02}")), seed)?;
    }
    Ok(())
}

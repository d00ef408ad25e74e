//! Snapshots: build on one store, install into a fresh one (and over a diverged one), and the
//! installed state is the same, survives a reopen, and is served as the current snapshot.

mod common;

use common::*;
use meta_store::Command;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

fn commands() -> Vec<Command> {
    let config = blob("config", &[1, 2]);
    let image = manifest("app", "image", Some("v1"), &[&config.digest], None);
    let signature = manifest(
        "app",
        "sig",
        None,
        &[],
        Some((&image.digest, "application/sig")),
    );
    vec![
        Command::RegisterBlobNode(node(1)),
        Command::RegisterBlobNode(node(2)),
        set_upload_key(),
        Command::CommitBlob {
            now_ms: 1,
            repo: repo("app"),
            blob: config.clone(),
            upload: None,
        },
        Command::MountBlob {
            now_ms: 1,
            repo: repo("mirror"),
            digest: config.digest,
            from: repo("app"),
        },
        Command::PutManifest {
            put: Box::new(image),
            now_ms: 1,
        },
        Command::PutManifest {
            put: Box::new(signature),
            now_ms: 1,
        },
        Command::SetBlobNodeState {
            id: 2,
            state: cluster_api::NodeState::Draining,
            expected: None,
        },
        Command::SetReplicationPolicy(cluster_api::ReplicationPolicy {
            replicas: 2,
            write_quorum: 2,
        }),
        // Access control, quotas and a doomed blob travel too.
        Command::ChangeAuth(cluster_api::AuthChange::PutImmutableTagRule(
            cluster_api::ImmutableTagRule {
                id: "release".to_owned(),
                repositories: "app".to_owned(),
                tags: "v*".to_owned(),
            },
        )),
        Command::SetQuota {
            namespace: "app".to_owned(),
            bytes: Some(1 << 20),
        },
        Command::CommitBlob {
            now_ms: 1,
            repo: repo("app"),
            blob: blob("doomed", &[1]),
            upload: None,
        },
        Command::UnlinkBlob {
            now_ms: 2,
            repo: repo("app"),
            digest: digest("doomed"),
        },
    ]
}

#[tokio::test]
async fn build_then_install_round_trips() {
    let config = blob("config", &[1, 2]);
    let image_digest = manifest("app", "image", None, &[], None).digest;
    let digests = [&config.digest, &image_digest];
    let repos = ["app", "mirror", "stale"];

    let leader_dir = TempDir::new().expect("tempdir");
    let mut leader = Applier::new(open(&leader_dir));
    leader.apply_all(commands()).await;
    let expected = observe(&leader.store.reader, &repos, &digests);
    let snapshot = leader
        .store
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    assert_eq!(
        snapshot.meta.last_log_id,
        Some(log_id(1, commands().len() as u64))
    );
    let current = leader
        .store
        .state_machine
        .get_current_snapshot()
        .await
        .expect("current");
    assert_eq!(
        current.map(|current| current.meta),
        Some(snapshot.meta.clone())
    );

    // The follower has diverged state that the snapshot must wipe out.
    let follower_dir = TempDir::new().expect("tempdir");
    {
        let mut follower = Applier::new(open(&follower_dir));
        let stale = Command::CommitBlob {
            now_ms: 1,
            repo: repo("stale"),
            blob: blob("stale", &[9]),
            upload: None,
        };
        follower
            .apply_all(vec![stale, Command::RegisterBlobNode(node(9))])
            .await;
        let mut receiving = follower
            .store
            .state_machine
            .begin_receiving_snapshot()
            .await
            .expect("begin");
        let mut built = copy_of(&snapshot.snapshot).await;
        tokio::io::copy(&mut built, &mut *receiving)
            .await
            .expect("receive the snapshot");
        follower
            .store
            .state_machine
            .install_snapshot(&snapshot.meta, receiving)
            .await
            .expect("install");
        assert_eq!(observe(&follower.store.reader, &repos, &digests), expected);
    }

    let mut reopened = open(&follower_dir);
    assert_eq!(observe(&reopened.reader, &repos, &digests), expected);
    let applied = reopened
        .state_machine
        .applied_state()
        .await
        .expect("applied state");
    assert_eq!(
        applied,
        (
            snapshot.meta.last_log_id,
            snapshot.meta.last_membership.clone()
        )
    );
    let current = reopened
        .state_machine
        .get_current_snapshot()
        .await
        .expect("current");
    let current = current.expect("installed snapshot is current");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(
        read_all(*current.snapshot).await,
        read_all(*snapshot.snapshot).await
    );
}

/// Another handle on the same snapshot file, from its start.
async fn copy_of(file: &tokio::fs::File) -> tokio::fs::File {
    let mut copy = file.try_clone().await.expect("clone the handle");
    copy.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
    copy
}

async fn read_all(mut file: tokio::fs::File) -> Vec<u8> {
    file.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.expect("read");
    bytes
}

/// A received snapshot that is damaged (or cut short) is refused, and the state it would have
/// replaced is left as it was.
#[tokio::test]
async fn a_damaged_snapshot_is_refused_and_changes_nothing() {
    let leader_dir = TempDir::new().expect("tempdir");
    let mut leader = Applier::new(open(&leader_dir));
    leader.apply_all(commands()).await;
    let snapshot = leader
        .store
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    let bytes = read_all(*snapshot.snapshot).await;

    let follower_dir = TempDir::new().expect("tempdir");
    let mut follower = Applier::new(open(&follower_dir));
    follower
        .apply_all(vec![Command::RegisterBlobNode(node(9))])
        .await;
    let before = follower.store.reader.cluster_map().expect("map");
    for damage in [Damage::Truncate, Damage::FlipBit] {
        let mut damaged = bytes.clone();
        match damage {
            Damage::Truncate => damaged.truncate(bytes.len() / 2),
            Damage::FlipBit => damaged[bytes.len() / 2] ^= 0x10,
        }
        let mut receiving = follower
            .store
            .state_machine
            .begin_receiving_snapshot()
            .await
            .expect("begin");
        receiving.write_all(&damaged).await.expect("receive");
        let installed = follower
            .store
            .state_machine
            .install_snapshot(&snapshot.meta, receiving)
            .await;
        assert!(installed.is_err(), "{damage:?} snapshot installed");
        assert_eq!(follower.store.reader.cluster_map().expect("map"), before);
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate,
    FlipBit,
}

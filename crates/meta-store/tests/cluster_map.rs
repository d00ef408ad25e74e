//! The cluster map commands: node states, removal, the replication policy, the epoch that bumps
//! on every change (and only then), blob replica bookkeeping and blob listing.

mod common;

use cluster_api::{BlobNodeInfo, MetaError, NodeState, ReplicationPolicy};
use common::*;
use meta_store::{Command, CommandOutput};
use tempfile::TempDir;

const DONE: Result<CommandOutput, MetaError> = Ok(CommandOutput::Done);

fn set_state(id: u64, state: NodeState, expected: Option<NodeState>) -> Command {
    Command::SetBlobNodeState {
        id,
        state,
        expected,
    }
}

#[tokio::test]
async fn map_changes_bump_the_epoch() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let epoch = |store: &Applier| store.store.reader.cluster_map().expect("map").epoch;
    assert_eq!(epoch(&store), 0);
    store
        .apply(Command::RegisterBlobNode(node(1)))
        .await
        .expect("register");
    store
        .apply(Command::RegisterBlobNode(node(2)))
        .await
        .expect("register");
    assert_eq!(epoch(&store), 2);
    // Re-registering an unchanged node is not a map change; a changed one is.
    assert_eq!(store.apply(Command::RegisterBlobNode(node(2))).await, DONE);
    assert_eq!(epoch(&store), 2);
    let moved = BlobNodeInfo {
        addr: "10.0.0.22:7000".into(),
        ..node(2)
    };
    assert_eq!(
        store.apply(Command::RegisterBlobNode(moved.clone())).await,
        DONE
    );
    assert_eq!(epoch(&store), 3);

    assert_eq!(
        store.apply(set_state(2, NodeState::Draining, None)).await,
        DONE
    );
    assert_eq!(epoch(&store), 4);
    assert_eq!(
        store.apply(set_state(2, NodeState::Draining, None)).await,
        DONE
    );
    assert_eq!(epoch(&store), 4, "an unchanged state is not a change");
    // The detector's conditional change loses against the operator's drain.
    assert_eq!(
        store
            .apply(set_state(2, NodeState::Down, Some(NodeState::Up)))
            .await,
        DONE
    );
    assert!(matches!(
        store.apply(set_state(9, NodeState::Down, None)).await,
        Err(MetaError::Invalid(_))
    ));
    let map = store.store.reader.cluster_map().expect("map");
    assert_eq!(map.epoch, 4);
    assert_eq!(map.member(1).map(|m| m.state), Some(NodeState::Up));
    assert_eq!(
        map.member(2).map(|m| (&m.node, m.state)),
        Some((&moved, NodeState::Draining))
    );

    let policy = ReplicationPolicy {
        replicas: 3,
        write_quorum: 2,
    };
    assert_eq!(
        store.apply(Command::SetReplicationPolicy(policy)).await,
        DONE
    );
    assert_eq!(epoch(&store), 5);
    let bad = ReplicationPolicy {
        replicas: 1,
        write_quorum: 2,
    };
    assert!(matches!(
        store.apply(Command::SetReplicationPolicy(bad)).await,
        Err(MetaError::Invalid(_))
    ));

    assert_eq!(store.apply(Command::RemoveBlobNode { id: 2 }).await, DONE);
    assert_eq!(store.apply(Command::RemoveBlobNode { id: 2 }).await, DONE);
    let map = store.store.reader.cluster_map().expect("map");
    assert_eq!(map.epoch, 6, "removing an absent node changes nothing");
    assert_eq!(map.policy, policy);
    assert_eq!(map.members.len(), 1);
    assert_eq!(store.store.reader.blob_nodes(), Ok(vec![node(1)]));
    // A node registered again after removal starts Up.
    store
        .apply(Command::RegisterBlobNode(node(2)))
        .await
        .expect("register");
    let map = store.store.reader.cluster_map().expect("map");
    assert_eq!(map.member(2).map(|m| m.state), Some(NodeState::Up));
}

#[tokio::test]
async fn replicas_are_added_and_removed_but_never_the_last() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let layer = blob("layer", &[1]);
    store
        .apply(Command::CommitBlob {
            now_ms: 1,
            repo: repo("app"),
            blob: layer.clone(),
            upload: None,
        })
        .await
        .expect("commit");
    let add = |nodes: &[u64]| Command::AddBlobReplicas {
        digest: layer.digest.clone(),
        nodes: nodes.to_vec(),
    };
    let remove = |nodes: &[u64]| Command::RemoveBlobReplicas {
        digest: layer.digest.clone(),
        nodes: nodes.to_vec(),
    };
    assert_eq!(store.apply(add(&[2, 1, 3])).await, DONE);
    let replicas = |store: &Applier| {
        store
            .store
            .reader
            .stat_blob(&repo("app"), &layer.digest)
            .expect("stat")
            .replicas
    };
    assert_eq!(replicas(&store), vec![1, 2, 3]);
    assert_eq!(store.apply(remove(&[1, 3])).await, DONE);
    assert_eq!(replicas(&store), vec![2]);
    assert!(matches!(
        store.apply(remove(&[2, 4])).await,
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(
        replicas(&store),
        vec![2],
        "a refused removal changes nothing"
    );
    let unknown = digest("unknown");
    assert_eq!(
        store
            .apply(Command::AddBlobReplicas {
                digest: unknown.clone(),
                nodes: vec![1],
            })
            .await,
        Err(MetaError::BlobUnknown(unknown))
    );
}

#[tokio::test]
async fn blobs_list_in_digest_order_by_pages() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let mut blobs: Vec<_> = (0..5).map(|i| blob(&format!("blob-{i}"), &[1])).collect();
    for blob in &blobs {
        store
            .apply(Command::CommitBlob {
                now_ms: 1,
                repo: repo("app"),
                blob: blob.clone(),
                upload: None,
            })
            .await
            .expect("commit");
    }
    blobs.sort_by_key(|blob| blob.digest.to_string());
    let reader = &store.store.reader;
    let first = reader.list_blobs(None, 2).expect("page 1");
    assert_eq!(first, blobs[..2].to_vec());
    let second = reader
        .list_blobs(Some(&first[1].digest), 2)
        .expect("page 2");
    assert_eq!(second, blobs[2..4].to_vec());
    let last = reader
        .list_blobs(Some(&second[1].digest), 2)
        .expect("page 3");
    assert_eq!(last, blobs[4..].to_vec());
    assert_eq!(reader.list_blobs(None, 0), Ok(Vec::new()));
}

//! Three voters over real gRPC on 127.0.0.1:0 listeners: membership changes, a follower catching
//! up from a snapshot (the leader's log purged first), follower redirects, and leader failover.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use cluster_api::{MetaApi, MetaError};
use common::*;
use meta_node::MetaNode;
use oci_model::Reference;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

struct Voter {
    node: MetaNode,
    addr: SocketAddr,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start(node_id: u64, data_dir: &Path, bootstrap: bool) -> Voter {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let node = MetaNode::open(config(node_id, data_dir, &addr.to_string(), bootstrap))
        .await
        .expect("open voter");
    let (stop_server, stopped) = oneshot::channel::<()>();
    let service = node.raft_service();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
    });
    Voter {
        node,
        addr,
        stop_server,
        server,
    }
}

impl Voter {
    async fn stop(self) {
        let _ = self.stop_server.send(());
        self.server
            .await
            .expect("server task")
            .expect("server result");
        self.node.shutdown().await.expect("shutdown voter");
    }

    async fn applied_at_least(&self, index: u64) {
        self.node
            .raft()
            .wait(Some(DEADLINE))
            .applied_index_at_least(Some(index), "catch up")
            .await
            .expect("voter catches up");
    }
}

fn last_applied(voter: &Voter) -> u64 {
    let metrics = voter.node.raft().metrics().borrow().clone();
    metrics.last_applied.map_or(0, |log_id| log_id.index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_replicate_redirect_and_fail_over() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("tempdir")).collect();
    let first = start(1, dirs[0].path(), true).await;
    assert_eq!(
        first.node.wait_for_leader(DEADLINE).await.expect("leader"),
        1
    );
    let leader_api = first.node.api();
    let app = repo("app");
    let layer = blob("layer");
    leader_api
        .register_blob_node(blob_node(1))
        .await
        .expect("register");
    leader_api
        .commit_blob(&app, layer.clone(), None)
        .await
        .expect("commit");
    let image = manifest("app", "image", Some("v1"), &[&layer.digest]);
    leader_api
        .put_manifest(image.clone())
        .await
        .expect("put manifest");

    // Voter 2 joins by log replication.
    let second = start(2, dirs[1].path(), false).await;
    first
        .node
        .add_voter(2, &second.addr.to_string())
        .await
        .expect("add voter 2");

    // Voter 3 joins after the leader has snapshotted and purged its log, so it must be sent
    // the snapshot over the InstallSnapshot RPC.
    let raft = first.node.raft();
    raft.trigger().snapshot().await.expect("trigger snapshot");
    let applied = last_applied(&first);
    raft.wait(Some(DEADLINE))
        .metrics(
            |metrics| {
                metrics
                    .snapshot
                    .is_some_and(|log_id| log_id.index >= applied)
            },
            "snapshot",
        )
        .await
        .expect("snapshot built");
    raft.trigger()
        .purge_log(applied)
        .await
        .expect("trigger purge");
    raft.wait(Some(DEADLINE))
        .metrics(
            |metrics| metrics.purged.is_some_and(|log_id| log_id.index >= applied),
            "purge",
        )
        .await
        .expect("log purged");
    let third = start(3, dirs[2].path(), false).await;
    first
        .node
        .add_voter(3, &third.addr.to_string())
        .await
        .expect("add voter 3");

    let tagged = manifest("app", "second", Some("v2"), &[&layer.digest]);
    leader_api
        .put_manifest(tagged.clone())
        .await
        .expect("put after joins");
    let index = last_applied(&first);
    second.applied_at_least(index).await;
    third.applied_at_least(index).await;

    // Followers redirect clients to the leader's advertised address.
    let redirect = Err(MetaError::Unavailable {
        leader: Some(first.addr.to_string()),
    });
    let follower_api = second.node.api();
    assert_eq!(
        follower_api.list_tags(&app, None, 10).await.map(|_| ()),
        redirect
    );
    assert_eq!(
        follower_api.commit_blob(&app, blob("x"), None).await,
        redirect
    );

    // The leader stops; the survivors elect one of themselves and still have everything.
    drop((leader_api, follower_api));
    first.stop().await;
    let mut survivors = vec![second, third];
    let metrics = survivors[0]
        .node
        .raft()
        .wait(Some(DEADLINE))
        .metrics(
            |metrics| metrics.current_leader.is_some_and(|id| id != 1),
            "a new leader",
        )
        .await
        .expect("new leader");
    let new_leader_id = metrics.current_leader.expect("leader id");
    let position = survivors
        .iter()
        .position(|voter| voter.node.raft().metrics().borrow().id == new_leader_id)
        .expect("the new leader is a survivor");
    let new_leader = survivors.swap_remove(position);
    let api = new_leader.node.api();
    let tags = api
        .list_tags(&app, None, 10)
        .await
        .expect("tags from the new leader");
    assert_eq!(tags.items, vec!["v1".to_owned(), "v2".to_owned()]);
    let fetched = api
        .get_manifest(&app, &Reference::Tag(tag("v2")))
        .await
        .expect("manifest");
    assert_eq!(fetched.digest, tagged.digest);
    api.delete_tag(&app, &tag("v1"))
        .await
        .expect("write on the new leader");
    drop(api);
    new_leader.stop().await;
    for voter in survivors {
        voter.stop().await;
    }
}

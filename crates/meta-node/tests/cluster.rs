//! Three voters over real gRPC on 127.0.0.1:0 listeners: membership changes, a follower catching
//! up from a snapshot (the leader's log purged first), follower redirects, and leader failover.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use cluster_api::{MetaApi, MetaError, MetaRole, NodeState};
use cluster_client::{AdminClient, MetaClient, RetryPolicy};
use common::*;
use meta_node::{MetaConfig, MetaNode};
use oci_model::Reference;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use wharf_proto::MetaGrpc;

struct Voter {
    node: MetaNode,
    addr: SocketAddr,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start(node_id: u64, data_dir: &Path, bootstrap: bool) -> Voter {
    start_with(node_id, data_dir, |config| config.bootstrap = bootstrap).await
}

/// Starts a node serving the Raft, Meta and Admin services, its configuration adjusted by `tune`.
async fn start_with(node_id: u64, data_dir: &Path, tune: impl FnOnce(&mut MetaConfig)) -> Voter {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let mut config = config(node_id, data_dir, &addr.to_string(), false);
    tune(&mut config);
    let node = MetaNode::open(config).await.expect("open voter");
    let (stop_server, stopped) = oneshot::channel::<()>();
    let raft_service = node.raft_service();
    let admin_service = node.admin_service();
    let meta_service = MetaGrpc::new(node.api()).into_server();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(raft_service)
            .add_service(admin_service)
            .add_service(meta_service)
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

    // Followers serve reads (through the leader's read index) and redirect writes to the
    // leader's advertised address.
    let redirect = Err(MetaError::Unavailable {
        leader: Some(first.addr.to_string()),
    });
    let follower_api = second.node.api();
    let tags = follower_api
        .list_tags(&app, None, 10)
        .await
        .expect("a follower serves reads");
    assert!(
        tags.items.contains(&"v2".to_owned()),
        "the follower's read sees the acknowledged tag: {tags:?}"
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
    // A follower can hear of the new leader before the leader's own metrics say it leads, and
    // a read there would be refused (no leader known yet): wait until it leads and has applied
    // an entry of its term.
    new_leader
        .node
        .raft()
        .wait(Some(DEADLINE))
        .metrics(
            |metrics| {
                metrics.state == openraft::ServerState::Leader
                    && metrics
                        .last_applied
                        .is_some_and(|applied| applied.leader_id.term == metrics.current_term)
            },
            "the new leader leads and has applied an entry of its term",
        )
        .await
        .expect("the new leader settles");
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

/// A follower asks the leader for read indexes over one stream that the leader ends every
/// second: reads through the follower for longer than that (so over several streams) each see
/// the tag write acknowledged just before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_reads_see_each_acknowledged_write_across_read_index_streams() {
    let dirs: Vec<TempDir> = (0..2).map(|_| TempDir::new().expect("tempdir")).collect();
    let leader = start(1, dirs[0].path(), true).await;
    leader.node.wait_for_leader(DEADLINE).await.expect("leader");
    let follower = start(2, dirs[1].path(), false).await;
    leader
        .node
        .add_voter(2, &follower.addr.to_string())
        .await
        .expect("add voter 2");
    let (writer, reader) = (leader.node.api(), follower.node.api());
    let app = repo("app");
    let layer = blob("layer");
    writer
        .register_blob_node(blob_node(1))
        .await
        .expect("register");
    writer
        .commit_blob(&app, layer.clone(), None)
        .await
        .expect("commit");

    let started = std::time::Instant::now();
    let mut round = 0;
    while started.elapsed() < std::time::Duration::from_millis(2_500) {
        round += 1;
        let image = manifest(
            "app",
            &format!("image-{round}"),
            Some("latest"),
            &[&layer.digest],
        );
        writer.put_manifest(image.clone()).await.expect("put");
        let read = reader
            .get_manifest(&app, &Reference::Tag(tag("latest")))
            .await
            .expect("the follower serves the read");
        assert_eq!(read.digest, image.digest, "round {round}: a stale tag");
    }
    assert!(round > 1, "only {round} rounds");
    drop((writer, reader));
    follower.stop().await;
    leader.stop().await;
}

/// Waits, polling `probe` through `client`, until `done` holds for its answer.
async fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last saw {value:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn client(voter: &Voter) -> MetaClient {
    MetaClient::new(&[voter.addr.to_string()], RetryPolicy::default()).expect("meta client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_follow_the_leader_detect_failures_and_leave() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("tempdir")).collect();
    let fast_detector = |config: &mut MetaConfig| config.blob_down_after_ms = 1500;
    let first = start_with(1, dirs[0].path(), |config| {
        config.bootstrap = true;
        fast_detector(config);
    })
    .await;
    first.node.wait_for_leader(DEADLINE).await.expect("leader");
    let app = repo("app");
    let layer = blob("layer");
    first
        .node
        .api()
        .commit_blob(&app, layer.clone(), None)
        .await
        .expect("commit");

    // Voter 2 joins through the leader; voter 3 through voter 2 (a follower, which redirects),
    // after the leader purged its log, so it catches up from a snapshot.
    let seed = vec![first.addr.to_string()];
    let second = start_with(2, dirs[1].path(), |config| {
        config.join = seed;
        fast_detector(config);
    })
    .await;
    second.node.wait_for_voter(DEADLINE).await.expect("2 joins");
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
    raft.trigger().purge_log(applied).await.expect("purge");
    raft.wait(Some(DEADLINE))
        .metrics(
            |metrics| metrics.purged.is_some_and(|log_id| log_id.index >= applied),
            "purge",
        )
        .await
        .expect("log purged");
    let seed = vec![second.addr.to_string()];
    let third = start_with(3, dirs[2].path(), |config| {
        config.join = seed;
        fast_detector(config);
    })
    .await;
    third.node.wait_for_voter(DEADLINE).await.expect("3 joins");
    third.applied_at_least(applied).await;
    let on_third = third.node.raft().metrics().borrow().snapshot;
    assert!(
        on_third.is_some_and(|log_id| log_id.index >= applied),
        "voter 3 was sent the snapshot"
    );

    // A write acknowledged through a follower's client is read through another follower's.
    let via_third = client(&third);
    let via_second = client(&second);
    let image = manifest("app", "image", Some("v1"), &[&layer.digest]);
    via_third
        .put_manifest(image.clone())
        .await
        .expect("put via follower");
    let fetched = via_second
        .get_manifest(&app, &Reference::Tag(tag("v1")))
        .await
        .expect("read via another follower");
    assert_eq!(fetched.digest, image.digest);

    // The status names the leader and three voters.
    let admin =
        AdminClient::new(&[third.addr.to_string()], RetryPolicy::default()).expect("admin client");
    let status = admin.cluster_status().await.expect("status");
    assert_eq!(status.leader_id, Some(1));
    assert_eq!(status.leader_addr, Some(first.addr.to_string()));
    let voters: Vec<u64> = status.meta_members.iter().map(|m| m.id).collect();
    assert_eq!(voters, vec![1, 2, 3]);
    assert!(status
        .meta_members
        .iter()
        .all(|m| m.role == MetaRole::Voter));
    // Each member's matched index: the leader's view of how far it holds the log, which reaches
    // the commit index for every member of a healthy cluster.
    let caught_up = eventually(
        "every member matched up to the commit index",
        async || admin.cluster_status().await.expect("status"),
        |status| {
            status
                .meta_members
                .iter()
                .all(|m| m.matched_index >= Some(status.commit_index))
        },
    )
    .await;
    assert!(caught_up.commit_index > 0, "{caught_up:?}");

    // Failure detector: node 10 beats (through a follower, which redirects), node 11 is silent.
    let epoch_before = via_second.cluster_map().await.expect("map").epoch;
    via_second
        .register_blob_node(blob_node(10))
        .await
        .expect("register 10");
    via_second
        .register_blob_node(blob_node(11))
        .await
        .expect("register 11");
    let map = eventually(
        "node 11 down",
        async || {
            via_second
                .blob_node_heartbeat(10, Default::default())
                .await
                .expect("beat 10");
            via_second.cluster_map().await.expect("map")
        },
        |map| map.member(11).is_some_and(|m| m.state == NodeState::Down),
    )
    .await;
    assert_eq!(map.member(10).map(|m| m.state), Some(NodeState::Up));
    // Two registrations and node 11's state change, at least; on a loaded machine node 10 can
    // itself miss a window and flap (Down, Up), which is the detector doing its job.
    assert!(
        map.epoch >= epoch_before + 3,
        "two registrations and one state change bump the epoch: {} -> {}",
        epoch_before,
        map.epoch
    );
    let epoch_down = map.epoch;
    let map = eventually(
        "node 11 back up",
        async || {
            via_second
                .blob_node_heartbeat(10, Default::default())
                .await
                .expect("beat 10");
            via_second
                .blob_node_heartbeat(11, Default::default())
                .await
                .expect("beat 11");
            via_second.cluster_map().await.expect("map")
        },
        |map| map.member(11).is_some_and(|m| m.state == NodeState::Up),
    )
    .await;
    assert!(map.epoch > epoch_down, "node 11's return bumps the epoch");
    let status = admin.cluster_status().await.expect("status");
    let heard = |id| {
        status
            .liveness
            .iter()
            .find(|entry| entry.id == id)
            .and_then(|entry| entry.last_seen_ms_ago)
    };
    assert!(heard(10).is_some() && heard(11).is_some(), "{status:?}");

    // Voter 3 leaves; the other two carry on.
    admin.remove_meta_node(3).await.expect("remove 3");
    let status = admin.cluster_status().await.expect("status after removal");
    let members: Vec<u64> = status.meta_members.iter().map(|m| m.id).collect();
    assert_eq!(members, vec![1, 2]);
    via_second
        .delete_tag(&app, &tag("v1"))
        .await
        .expect("write after removal");

    drop((via_third, via_second, admin));
    for voter in [first, second, third] {
        voter.stop().await;
    }
}

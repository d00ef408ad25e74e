//! Issue #3: a network partition between meta voters. The leader is cut off from the other two
//! (Raft traffic, both ways); the majority elects a new leader and moves a tag; the cut-off node
//! never serves the old tag and never accepts a write; at every check at most one node leads the
//! highest term; after healing, all three converge on the new leader and the new tag.
//!
//! Leadership is read from each node itself (`InProcessCluster::meta_views`: its Raft vote,
//! probed directly), never through a leader, so a cut-off node reports its own belief.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use cluster_api::{BlobInfo, MetaApi, MetaError, PutManifest, ReplicationPolicy};
use cluster_client::{MetaClient, RetryPolicy};
use common::{PushedImage, Registry};
use oci_model::{Digest, Reference, RepositoryName, Tag};
use test_cluster::{InProcessCluster, Role, VoteView};

const RF1: ReplicationPolicy = ReplicationPolicy {
    replicas: 1,
    write_quorum: 0,
};
const REPO: &str = "partition/app";
const TAG: &str = "latest";
/// Every wait in this test is bounded by this.
const DEADLINE: Duration = Duration::from_secs(60);
/// How often a polled condition is re-checked.
const POLL: Duration = Duration::from_millis(50);

fn repo() -> RepositoryName {
    RepositoryName::parse(REPO).expect("valid repository name")
}

fn tag_reference() -> Reference {
    Reference::Tag(Tag::parse(TAG).expect("valid tag"))
}

/// A client of one meta node that reports that node's own answer: no retries, so it never
/// follows a redirect elsewhere.
fn single_node_client(addr: &str) -> MetaClient {
    let policy = RetryPolicy {
        max_elapsed: Duration::ZERO,
        ..RetryPolicy::default()
    };
    MetaClient::new(&[addr.to_owned()], policy).expect("meta client")
}

/// Polls `probe` until it yields a value, failing the test at the deadline.
async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Every answering node's view, after asserting there is no split brain: in each term, the
/// committed votes name at most one leader, and at most one node reports itself leader of the
/// highest term any node leads.
async fn views(cluster: &InProcessCluster) -> Vec<(u64, VoteView)> {
    let views: Vec<(u64, VoteView)> = cluster
        .meta_views()
        .await
        .into_iter()
        .filter_map(|(id, view)| view.ok().map(|view| (id, view)))
        .collect();
    let mut leaders_by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (_, view) in &views {
        if let Some(leader) = view.leader() {
            leaders_by_term.entry(view.term).or_default().insert(leader);
        }
    }
    for (term, leaders) in &leaders_by_term {
        assert!(
            leaders.len() <= 1,
            "split brain: term {term} has leaders {leaders:?} ({views:?})"
        );
    }
    let self_leaders: Vec<(u64, u64)> = views
        .iter()
        .filter(|(id, view)| view.is_leader(*id))
        .map(|(id, view)| (view.term, *id))
        .collect();
    if let Some(highest) = self_leaders.iter().map(|(term, _)| *term).max() {
        let at_highest = self_leaders.iter().filter(|(term, _)| *term == highest);
        assert!(
            at_highest.count() <= 1,
            "split brain: several nodes lead term {highest} ({views:?})"
        );
    }
    views
}

/// The node that reports itself leader of the highest term, with that term, among `among`.
fn leader_among(views: &[(u64, VoteView)], among: &[u64]) -> Option<(u64, u64)> {
    views
        .iter()
        .filter(|(id, view)| among.contains(id) && view.is_leader(*id))
        .map(|(id, view)| (*id, view.term))
        .max_by_key(|(_, term)| *term)
}

/// Every node of `ids` answers, follows the same leader in the same term and holds the same log.
fn converged(views: &[(u64, VoteView)], ids: &[u64]) -> Option<(u64, u64)> {
    let first = views.first()?.1;
    let all_answer = ids.iter().all(|id| views.iter().any(|(v, _)| v == id));
    let agree = views.iter().all(|(_, view)| {
        view.committed
            && view.term == first.term
            && view.voted_for == first.voted_for
            && view.last_log_index == first.last_log_index
    });
    (all_answer && agree).then_some((first.voted_for, first.term))
}

/// Pushes an image tagged `TAG`, retrying (the meta leader may be moving) until acknowledged.
async fn push(registry: &Registry) -> PushedImage {
    poll("an acknowledged push", || async {
        let attempt = registry.push_image(REPO, TAG, 4_096);
        match tokio::time::timeout(Duration::from_secs(20), attempt).await {
            Ok(Ok(image)) => Some(image),
            Ok(Err(error)) => {
                eprintln!("push not acknowledged yet: {error}");
                None
            }
            Err(_) => None,
        }
    })
    .await
}

/// A manifest that would move `TAG` back onto `image`'s blobs with new bytes: what a write
/// through a cut-off leader tries.
fn rogue_manifest(image: &PushedImage) -> PutManifest {
    let bytes = format!(
        r#"{{"schemaVersion":2,"annotations":{{"rogue":"{}"}}}}"#,
        image.manifest_digest
    )
    .into_bytes();
    PutManifest {
        repo: repo(),
        digest: Digest::sha256_of(&bytes),
        media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        bytes,
        tag: Tag::parse(TAG).ok(),
        blobs: image
            .blobs
            .iter()
            .map(|(digest, _)| digest.clone())
            .collect(),
        manifests: Vec::new(),
        subject: None,
        referrer: None,
    }
}

/// Reads `TAG` from the cut-off node a few times: each answer is `Unavailable` or `v2`, never
/// `v1`, and no split brain shows meanwhile.
async fn assert_no_stale_read(cluster: &InProcessCluster, isolated: &MetaClient, v2: &Digest) {
    let (repo, tag) = (repo(), tag_reference());
    let mut refused = 0;
    for _ in 0..5 {
        let read = isolated.get_manifest(&repo, &tag);
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(manifest)) => assert_eq!(
                &manifest.digest, v2,
                "the cut-off node served a stale tag after v2 was acknowledged"
            ),
            Ok(Err(MetaError::Unavailable { .. })) => refused += 1,
            Ok(Err(other)) => panic!("the cut-off node answered a tag read with {other}"),
            Err(_) => panic!("a tag read from the cut-off node neither failed nor answered"),
        }
        views(cluster).await;
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "tag reads from the cut-off node: {refused} of 5 refused as unavailable, the rest v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_meta_leader_serves_no_stale_tag_accepts_no_write_and_rejoins() {
    let mut cluster = InProcessCluster::start(3, 2, 2, RF1)
        .await
        .expect("cluster starts");
    let ids = cluster.meta_ids();
    let v1 = push(&Registry::new(cluster.gateway_url(1))).await;
    let (old, old_term) = poll("the voters to agree on a leader", || async {
        converged(&views(&cluster).await, &ids)
    })
    .await;
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != old).collect();
    let old_addr = cluster
        .member(Role::Meta, old)
        .expect("the leader is a member")
        .addr
        .to_string();

    cluster.partition(&[old], &others).expect("partition");
    let cut_at = Instant::now();
    let (new, new_term) = poll("the majority to elect a new leader", || async {
        leader_among(&views(&cluster).await, &others).filter(|(_, term)| *term > old_term)
    })
    .await;
    let election = cut_at.elapsed();
    eprintln!(
        "partition: node {new} leads term {new_term} {:.2} s after node {old} (term {old_term}) \
         was cut off",
        election.as_secs_f64()
    );

    let v2 = push(&Registry::new(cluster.gateway_url(2))).await;
    assert_ne!(v1.manifest_digest, v2.manifest_digest);
    let isolated = single_node_client(&old_addr);
    assert_no_stale_read(&cluster, &isolated, &v2.manifest_digest).await;

    // Writes through the cut-off node: neither may be acknowledged while it is cut off.
    let rogue = rogue_manifest(&v1);
    let rogue_digest = rogue.digest.clone();
    let rogue_blob = BlobInfo {
        digest: Digest::sha256_of(b"written through a cut-off leader"),
        size: 32,
        replicas: vec![1],
        placement: Vec::new(),
    };
    let manifest_write = tokio::spawn({
        let client = single_node_client(&old_addr);
        async move { client.put_manifest(rogue).await }
    });
    let blob_write = tokio::spawn({
        let client = single_node_client(&old_addr);
        let blob = rogue_blob.clone();
        async move { client.commit_blob(&repo(), blob, None).await }
    });
    let mut pending = Vec::new();
    for (what, mut write) in [("manifest", manifest_write), ("blob", blob_write)] {
        match tokio::time::timeout(Duration::from_secs(3), &mut write).await {
            Ok(result) => eprintln!(
                "{what} write through the cut-off node refused: {}",
                refused(result)
            ),
            Err(_) => pending.push((what, write)),
        }
    }
    views(&cluster).await;
    // Still cut off: the client's per-attempt timeout ends each pending write as unavailable;
    // none is ever acknowledged.
    let pending_count = pending.len();
    for (what, write) in pending {
        let result = tokio::time::timeout(DEADLINE, write)
            .await
            .unwrap_or_else(|_| panic!("the {what} write through the cut-off node never ended"));
        eprintln!(
            "{what} write through the cut-off node ended: {}",
            refused(result)
        );
    }
    views(&cluster).await;

    cluster.heal();
    let healed_at = Instant::now();
    let (leader, term) = poll("the voters to converge after healing", || async {
        converged(&views(&cluster).await, &ids)
    })
    .await;
    let convergence = healed_at.elapsed();
    eprintln!(
        "heal: all voters follow node {leader} in term {term} with equal logs {:.2} s after \
         healing; {} writes were pending on the cut-off node",
        convergence.as_secs_f64(),
        pending_count
    );
    assert_ne!(
        leader, old,
        "the cut-off node cannot win: its log is behind"
    );
    assert_converged_reads(&cluster, &old_addr, &v2, &rogue_digest, &rogue_blob).await;
    views(&cluster).await;
    cluster.shutdown().await;
}

/// The error a write through the cut-off node ended with; panics when it was acknowledged.
fn refused(result: Result<Result<(), MetaError>, tokio::task::JoinError>) -> MetaError {
    match result.expect("the write task runs to completion") {
        Ok(()) => panic!("a write through the cut-off node was acknowledged"),
        Err(error) => error,
    }
}

/// After healing: a read through the old leader (which redirects to the leader it now follows)
/// returns v2; the writes tried through it are visible nowhere; the gateways serve v2.
async fn assert_converged_reads(
    cluster: &InProcessCluster,
    old_addr: &str,
    v2: &PushedImage,
    rogue_digest: &Digest,
    rogue_blob: &BlobInfo,
) {
    let through_old =
        MetaClient::new(&[old_addr.to_owned()], RetryPolicy::default()).expect("meta client");
    let read = through_old
        .get_manifest(&repo(), &tag_reference())
        .await
        .expect("tag read through the old leader");
    assert_eq!(read.digest, v2.manifest_digest);
    let everyone =
        MetaClient::new(&cluster.meta_addrs(), RetryPolicy::default()).expect("meta client");
    let rogue = everyone
        .get_manifest(&repo(), &Reference::Digest(rogue_digest.clone()))
        .await;
    assert!(
        matches!(rogue, Err(MetaError::ManifestUnknown(_))),
        "the manifest written through the cut-off node is visible: {rogue:?}"
    );
    let blob = everyone.stat_blob(&repo(), &rogue_blob.digest).await;
    assert!(
        matches!(blob, Err(MetaError::BlobUnknown(_))),
        "the blob committed through the cut-off node is visible: {blob:?}"
    );
    for gateway in [1, 2] {
        Registry::new(cluster.gateway_url(gateway))
            .verify_image(v2)
            .await
            .expect("both gateways serve v2 after healing");
    }
}

/// Issue 13: followers serve reads (through the leader's read index), so a follower cut off from
/// the leader must serve none: not the tag it had, not even the current one, only `Unavailable`,
/// while the other follower serves the write acknowledged meanwhile. After healing it serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_follower_serves_no_read_at_all() {
    let mut cluster = InProcessCluster::start(3, 1, 1, RF1)
        .await
        .expect("cluster starts");
    let ids = cluster.meta_ids();
    let v1 = push(&Registry::new(cluster.gateway_url(1))).await;
    let (leader, _) = poll("the voters to agree on a leader", || async {
        converged(&views(&cluster).await, &ids)
    })
    .await;
    let followers: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
    let (cut, other) = (followers[0], followers[1]);
    let addr = |id: u64| {
        cluster
            .member(Role::Meta, id)
            .expect("a member")
            .addr
            .to_string()
    };
    let (cut_client, other_client) = (
        single_node_client(&addr(cut)),
        single_node_client(&addr(other)),
    );
    let (repo, tag) = (repo(), tag_reference());
    let before = cut_client
        .get_manifest(&repo, &tag)
        .await
        .expect("a follower serves reads while connected");
    assert_eq!(before.digest, v1.manifest_digest);

    cluster
        .partition(&[cut], &[leader, other])
        .expect("partition");
    let v2 = push(&Registry::new(cluster.gateway_url(1))).await;
    for attempt in 0..5 {
        match cut_client.get_manifest(&repo, &tag).await {
            Err(MetaError::Unavailable { .. }) => {}
            other => panic!("read {attempt} from the cut-off follower answered {other:?}"),
        }
        let read = other_client
            .get_manifest(&repo, &tag)
            .await
            .expect("the connected follower serves the read");
        assert_eq!(read.digest, v2.manifest_digest);
        views(&cluster).await;
        tokio::time::sleep(POLL).await;
    }

    cluster.heal();
    poll("the healed follower to serve the current tag", || async {
        match cut_client.get_manifest(&repo, &tag).await {
            Ok(read) => {
                assert_eq!(
                    read.digest, v2.manifest_digest,
                    "the healed follower served a stale tag"
                );
                Some(())
            }
            Err(MetaError::Unavailable { .. }) => None,
            Err(error) => panic!("the healed follower answered {error}"),
        }
    })
    .await;
    views(&cluster).await;
    cluster.shutdown().await;
}

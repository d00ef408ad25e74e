//! Issue 13: reads served by every meta member. Followers and read replicas answer linearizable
//! reads through the leader's read index, so a read that starts after a write was acknowledged
//! sees that write on whichever member it lands. (A cut-off follower serving no read at all is
//! in tests/partition.rs.)

use std::time::Duration;

use cluster_api::{MetaApi, MetaRole, PutManifest, ReplicationPolicy};
use cluster_client::{MetaClient, RetryPolicy};
use oci_model::{Digest, Reference, RepositoryName, Tag};
use test_cluster::InProcessCluster;

const RF1: ReplicationPolicy = ReplicationPolicy {
    replicas: 1,
    write_quorum: 0,
};

fn repo() -> RepositoryName {
    RepositoryName::parse("reads/app").expect("valid repository name")
}

fn latest() -> Tag {
    Tag::parse("latest").expect("valid tag")
}

/// Manifest number `n`, tagged `latest` (no blobs: meta checks only the blobs a manifest lists).
fn manifest(n: usize) -> PutManifest {
    let bytes = format!(r#"{{"schemaVersion":2,"annotations":{{"n":"{n}"}}}}"#).into_bytes();
    PutManifest {
        repo: repo(),
        digest: Digest::sha256_of(&bytes),
        media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        bytes,
        tag: Some(latest()),
        blobs: Vec::new(),
        manifests: Vec::new(),
        subject: None,
        referrer: None,
    }
}

/// A client of one meta node that reports that node's own answer: no retries, so a member that
/// cannot serve a read says so instead of the client going elsewhere.
fn single_node_client(addr: &str) -> MetaClient {
    let policy = RetryPolicy {
        max_elapsed: Duration::ZERO,
        ..RetryPolicy::default()
    };
    MetaClient::new(&[addr.to_owned()], policy).expect("meta client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_and_read_replicas_serve_reads_that_see_every_acknowledged_write() {
    let mut cluster = InProcessCluster::start(3, 1, 1, RF1)
        .await
        .expect("cluster starts");
    let replica = cluster
        .add_read_replica()
        .await
        .expect("read replica joins");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("a leader");
    let writer = MetaClient::new(&cluster.meta_addrs(), RetryPolicy::default()).expect("client");
    let readers: Vec<(u64, MetaClient)> = cluster
        .meta_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .map(|id| {
            let member = cluster
                .member(test_cluster::Role::Meta, id)
                .expect("member");
            (id, single_node_client(&member.addr.to_string()))
        })
        .collect();
    assert_eq!(readers.len(), 3, "two followers and the read replica");

    let tag = Reference::Tag(latest());
    for n in 0..40 {
        let written = manifest(n);
        writer
            .put_manifest(written.clone())
            .await
            .expect("the write is acknowledged");
        for (id, reader) in &readers {
            let read = reader
                .get_manifest(&repo(), &tag)
                .await
                .unwrap_or_else(|error| panic!("member {id} did not serve the read: {error}"));
            assert_eq!(
                read.digest, written.digest,
                "member {id} answered an older tag after write {n} was acknowledged"
            );
        }
    }

    let status = cluster.status().await.expect("cluster status");
    let roles: Vec<(u64, MetaRole)> = status
        .meta_members
        .iter()
        .map(|member| (member.id, member.role))
        .collect();
    assert!(
        roles.contains(&(replica, MetaRole::Learner)),
        "the read replica is listed as a learner: {roles:?}"
    );
    assert_eq!(
        roles
            .iter()
            .filter(|(_, role)| *role == MetaRole::Voter)
            .count(),
        3,
        "the read replica never became a voter: {roles:?}"
    );
    cluster.shutdown().await;
}

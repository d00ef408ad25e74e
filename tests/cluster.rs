//! A real cluster in one process: 3 meta voters, 3 blob nodes at replication factor 2, 2
//! gateways, each role on its own port and data dir. Pushes through one gateway are pulled
//! through the other; members are stopped under load and the data and service survive.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_api::{MetaApi, NodeState, ReplicationPolicy};
use cluster_client::{MetaClient, RetryPolicy};
use common::{PushedImage, Registry};
use oci_model::RepositoryName;
use test_cluster::{InProcessCluster, Role};

const RF2: ReplicationPolicy = ReplicationPolicy {
    replicas: 2,
    write_quorum: 0,
};

async fn cluster() -> InProcessCluster {
    InProcessCluster::start(3, 3, 2, RF2)
        .await
        .expect("cluster starts")
}

fn meta(cluster: &InProcessCluster) -> MetaClient {
    MetaClient::new(&cluster.meta_addrs(), RetryPolicy::default()).expect("meta client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_through_one_gateway_pull_through_the_other_with_two_replicas() {
    let cluster = cluster().await;
    let first = Registry::new(cluster.gateway_url(1));
    let second = Registry::new(cluster.gateway_url(2));
    let meta = meta(&cluster);
    for index in 0..4 {
        let image = first
            .push_image("ha/app", &format!("v{index}"), 100_000)
            .await
            .expect("push");
        second
            .verify_image(&image)
            .await
            .expect("pull through the other gateway");
        let repo = RepositoryName::parse("ha/app").expect("name");
        for (digest, _) in &image.blobs {
            let info = meta.stat_blob(&repo, digest).await.expect("blob known");
            let mut replicas = info.replicas.clone();
            replicas.sort_unstable();
            replicas.dedup();
            assert!(
                replicas.len() >= 2,
                "{digest} acknowledged on {:?}: fewer than 2 replicas",
                info.replicas
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_meta_leader_loses_no_acknowledged_push_and_writes_resume() {
    let mut cluster = cluster().await;
    let registry = Arc::new(Registry::new(cluster.gateway_url(1)));
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let mut acknowledged: Vec<PushedImage> = Vec::new();
    for index in 0..3 {
        acknowledged.push(
            registry
                .push_image("ha/leader", &format!("before-{index}"), 10_000)
                .await
                .expect("push"),
        );
    }

    cluster
        .stop(Role::Meta, leader)
        .await
        .expect("stop the leader");
    let stopped = Instant::now();
    // Keep pushing: the first success after the loss is the failover time.
    let mut failover = None;
    let deadline = stopped + Duration::from_secs(60);
    let mut attempt = 0;
    while failover.is_none() {
        assert!(
            Instant::now() < deadline,
            "writes did not resume within 60 s of losing the leader"
        );
        attempt += 1;
        if let Ok(image) = registry
            .push_image("ha/leader", &format!("after-{attempt}"), 10_000)
            .await
        {
            failover = Some(stopped.elapsed());
            acknowledged.push(image);
        }
    }
    let failover = failover.expect("measured");
    eprintln!(
        "meta leader failover: first acknowledged write {:.2} s after the leader stopped",
        failover.as_secs_f64()
    );
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("new leader");
    assert_ne!(new_leader, leader);

    let other = Registry::new(cluster.gateway_url(2));
    for image in &acknowledged {
        other
            .verify_image(image)
            .await
            .expect("acknowledged push survives the leader loss");
    }
    // The old leader rejoins as a follower and the cluster keeps serving.
    cluster
        .restart(Role::Meta, leader)
        .await
        .expect("old leader restarts");
    let image = registry
        .push_image("ha/leader", "rejoined", 10_000)
        .await
        .expect("push after rejoin");
    other.verify_image(&image).await.expect("pull after rejoin");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_blob_node_at_rf2_keeps_every_pull_working_and_restores_rf() {
    let mut cluster = cluster().await;
    let registry = Registry::new(cluster.gateway_url(1));
    let mut images = Vec::new();
    for index in 0..6 {
        images.push(
            registry
                .push_image("ha/blobs", &format!("v{index}"), 50_000)
                .await
                .expect("push"),
        );
    }
    cluster.stop(Role::Blob, 2).await.expect("stop blob node 2");

    // Every pull succeeds while node 2 is gone: reads fail over to the other replica.
    let other = Registry::new(cluster.gateway_url(2));
    for image in &images {
        other
            .verify_image(image)
            .await
            .expect("pull with a blob node down");
    }

    // Node 2 is marked down, and repair brings every blob back to two live replicas.
    let meta = meta(&cluster);
    let repo = RepositoryName::parse("ha/blobs").expect("name");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let map = meta.cluster_map().await.expect("map");
        let down = map
            .members
            .iter()
            .any(|m| m.node.id == 2 && m.state == NodeState::Down);
        let mut restored = down;
        for image in &images {
            for (digest, _) in &image.blobs {
                let info = meta.stat_blob(&repo, digest).await.expect("blob known");
                let live = info.replicas.iter().filter(|id| **id != 2).count();
                restored &= live >= 2;
            }
        }
        if restored {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replication factor not restored within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for image in &images {
        other.verify_image(image).await.expect("pull after repair");
    }
    cluster.shutdown().await;
}

/// The gateway's blob cache may serve what meta said of a blob for `blob_cache_ttl_ms` (2 s): a
/// DELETE through one gateway is seen there at once and through the other within that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_delete_through_one_gateway_is_honoured_by_every_gateway_within_the_cache_ttl() {
    let cluster = InProcessCluster::start(1, 1, 2, ReplicationPolicy::default())
        .await
        .expect("cluster starts");
    let (one, two) = (
        Registry::new(cluster.gateway_url(1)),
        Registry::new(cluster.gateway_url(2)),
    );
    let digest = one
        .push_blob_monolithic("cache/del", b"cached blob")
        .await
        .expect("push");
    let url = |registry: &Registry| format!("{}/v2/cache/del/blobs/{digest}", registry.base);
    let status = |registry: &Registry, method: reqwest::Method| {
        let request = registry.http.request(method, url(registry));
        async move { request.send().await.expect("request").status() }
    };
    // Gateway 2 reads it (and caches what meta said), then gateway 1 deletes it.
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        assert_eq!(status(&two, method).await, reqwest::StatusCode::OK);
    }
    let deleted = Instant::now();
    assert_eq!(
        status(&one, reqwest::Method::DELETE).await,
        reqwest::StatusCode::ACCEPTED
    );
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        assert_eq!(
            status(&one, method).await,
            reqwest::StatusCode::NOT_FOUND,
            "the deleting gateway sees the delete at once"
        );
    }
    // A HEAD (what pushing clients ask) never answers from the cache.
    assert_eq!(
        status(&two, reqwest::Method::HEAD).await,
        reqwest::StatusCode::NOT_FOUND
    );
    // Gateway 2's entry was read before the delete: GETs stop finding it by 2 s after that read.
    let bound = Duration::from_millis(2_000);
    loop {
        let sent = deleted.elapsed();
        let get = status(&two, reqwest::Method::GET).await;
        if get == reqwest::StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(get, reqwest::StatusCode::OK);
        assert!(
            sent < bound,
            "gateway 2 still served the deleted blob to a GET sent {sent:?} after the delete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await;
}

/// A blob node that just died is still `Up` in the map until the failure detector notices (here:
/// never, within the test). Pushes must not wait for it: uploads stage elsewhere and the copies it
/// should take go to the next nodes of the ring (hinted), and once it is back the repair loop
/// moves every copy home, leaving each blob on exactly its ring owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_do_not_wait_for_the_failure_detector_when_a_blob_node_dies() {
    let options = test_cluster::Options {
        blob_down_after_ms: 3_600_000,
        ..test_cluster::Options::default()
    };
    let mut cluster = InProcessCluster::start_with(1, 3, 1, RF2, options)
        .await
        .expect("cluster starts");
    let registry = Registry::new(cluster.gateway_url(1));
    cluster.stop(Role::Blob, 2).await.expect("stop blob node 2");

    // Every push is acknowledged, with node 2 gone and still Up in the map.
    let mut images = Vec::new();
    for index in 0..8 {
        images.push(
            registry
                .push_image("ha/hinted", &format!("v{index}"), 4_000 + index)
                .await
                .expect("push with a dead blob node still marked Up"),
        );
    }
    let meta = meta(&cluster);
    let map = meta.cluster_map().await.expect("map");
    assert!(
        map.members.iter().all(|m| m.state == NodeState::Up),
        "the detector marked a node while the test relies on it not having: {map:?}"
    );
    let repo = RepositoryName::parse("ha/hinted").expect("name");
    let digests: Vec<_> = images
        .iter()
        .flat_map(|image| image.blobs.iter().map(|(digest, _)| digest.clone()))
        .collect();
    let placement = blob_node::Placement::new(map);
    let mut hinted = 0;
    for digest in &digests {
        let info = meta.stat_blob(&repo, digest).await.expect("blob known");
        let live: Vec<_> = info.replicas.iter().filter(|id| **id != 2).collect();
        assert!(
            live.len() >= 2,
            "{digest} has {:?}, two live copies needed",
            info.replicas
        );
        if placement.owners(digest).contains(&2) {
            hinted += 1;
        }
    }
    assert!(
        hinted > 0,
        "no pushed blob is owned by node 2: the test proves nothing"
    );
    for image in &images {
        registry
            .verify_image(image)
            .await
            .expect("pull with node 2 dead");
    }

    // Node 2 returns; repair pushes each blob to its owners and drops every other copy.
    cluster
        .restart(Role::Blob, 2)
        .await
        .expect("restart blob node 2");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut home = true;
        for digest in &digests {
            let info = meta.stat_blob(&repo, digest).await.expect("blob known");
            let mut replicas = info.replicas.clone();
            replicas.sort_unstable();
            let mut owners = placement.owners(digest);
            owners.sort_unstable();
            home &= replicas == owners;
        }
        if home {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hinted copies not moved home within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for image in &images {
        registry
            .verify_image(image)
            .await
            .expect("pull after repair");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_role_serves_raft_gauges_on_metrics_listen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let meta = wharf::start_meta(&wharf::WharfConfig {
        grpc_listen: "127.0.0.1:0".into(),
        metrics_listen: Some("127.0.0.1:0".into()),
        data: dir.path().join("meta"),
        ..wharf::WharfConfig::default()
    })
    .await
    .expect("meta starts");
    wharf::telemetry::init("warn");
    let url = format!(
        "http://{}/metrics",
        meta.metrics_addr.expect("metrics address")
    );
    metrics_until(&url, "Raft gauges", |body| {
        body.contains("wharf_raft_is_leader")
    })
    .await;
    meta.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_publishes_replication_lag_per_follower() {
    wharf::telemetry::init("warn");
    let cluster = InProcessCluster::start(3, 1, 1, ReplicationPolicy::default())
        .await
        .expect("cluster starts");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let url = format!("{}/metrics", cluster.gateway_url(1));
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    metrics_until(&url, "replication lag for every follower", |body| {
        followers
            .iter()
            .all(|peer| body.contains(&format!("wharf_raft_replication_lag{{peer=\"{peer}\"}}")))
    })
    .await;
    cluster.shutdown().await;
}

/// Polls `GET url` until its body satisfies `published` (30 s at most); panics with the last body.
async fn metrics_until(url: &str, what: &str, published: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = reqwest::get(url)
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body");
        if published(&body) {
            return;
        }
        assert!(Instant::now() < deadline, "no {what} in /metrics: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Garbage collection across a replicated cluster: a deleted image's blobs leave every node that
/// held a copy (both replicas), blobs still used elsewhere stay readable, and once everything is
/// deleted no node holds a blob file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_removes_every_replica_and_only_what_nothing_uses() {
    // The grace must outlast a push from its first blob to its manifest PUT on a loaded
    // machine (300 ms did not, once, in a full CI run): a blob collected before its manifest
    // arrives fails the push with 400 MANIFEST_BLOB_UNKNOWN, as it should.
    let gc = wharf::config::GcConfig {
        interval_ms: 100,
        upload_grace_ms: 2_000,
        ..wharf::config::GcConfig::default()
    };
    let cluster = InProcessCluster::start_with_gc(3, 3, 1, RF2, gc)
        .await
        .expect("cluster starts");
    let registry = Registry::new(cluster.gateway_url(1));
    let first = registry
        .push_image("gc/one", "v1", 150_000)
        .await
        .expect("push");
    let second = registry
        .push_image("gc/two", "v1", 150_000)
        .await
        .expect("push");
    let blob_dirs: Vec<std::path::PathBuf> = (1..=3)
        .map(|id| {
            let member = cluster.member(Role::Blob, id).expect("blob node");
            test_cluster::data_dir(member).join("blobs")
        })
        .collect();
    let copies_of = |digest: &oci_model::Digest| {
        let hex = digest.hex();
        blob_dirs
            .iter()
            .filter(|dir| dir.join("sha256").join(&hex[..2]).join(hex).exists())
            .count()
    };
    for (digest, _) in first.blobs.iter().chain(&second.blobs) {
        assert!(copies_of(digest) >= 2, "{digest} has fewer than 2 copies");
    }
    let delete = |image: &PushedImage| {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            registry.base, image.repo, image.manifest_digest
        );
        let http = registry.http.clone();
        async move { http.delete(url).send().await.expect("DELETE").status() }
    };
    assert_eq!(delete(&first).await, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.blobs.iter().any(|(digest, _)| copies_of(digest) > 0) {
        assert!(
            Instant::now() < deadline,
            "the first image's blobs stay on disk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    registry
        .verify_image(&second)
        .await
        .expect("the other image is intact");
    for (digest, _) in &second.blobs {
        assert!(copies_of(digest) >= 2, "{digest} lost a copy");
    }
    assert_eq!(delete(&second).await, 202);
    while second.blobs.iter().any(|(digest, _)| copies_of(digest) > 0) {
        assert!(
            Instant::now() < deadline,
            "the second image's blobs stay on disk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let meta = meta(&cluster);
    assert!(meta.list_blobs(None, 10).await.expect("list").is_empty());
    assert_eq!(
        meta.check_consistency().await.expect("check"),
        Vec::<String>::new()
    );
    cluster.shutdown().await;
}

/// `wharf admin fsck` on a replicated cluster: a replica file removed behind the registry's back
/// is reported missing (not lost: the other copy is there), `--repair` drops it from the record,
/// the repair loop copies the blob back to its owners, and fsck comes out clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsck_repairs_a_missing_replica_from_the_other_copy() {
    let cluster = cluster().await;
    let registry = Registry::new(cluster.gateway_url(1));
    let image = registry
        .push_image("fsck/app", "v1", 120_000)
        .await
        .expect("push");
    let (layer, _) = &image.blobs[1];
    let repo = RepositoryName::parse("fsck/app").expect("name");
    let replicas = meta(&cluster)
        .stat_blob(&repo, layer)
        .await
        .expect("known")
        .replicas;
    let victim = replicas[0];
    let hex = layer.hex();
    let path = test_cluster::data_dir(cluster.member(Role::Blob, victim).expect("node"))
        .join("blobs")
        .join("sha256")
        .join(&hex[..2])
        .join(hex);
    std::fs::remove_file(&path).expect("remove one replica");

    let fsck = |repair: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
        command
            .args(["admin", "--meta", &cluster.meta_addrs().join(","), "fsck"])
            .stdin(std::process::Stdio::null());
        if repair {
            command.arg("--repair");
        }
        let output = command.output().expect("wharf admin fsck runs");
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("fsck prints JSON");
        (output.status.success(), report)
    };
    let (clean, report) = fsck(false);
    assert!(!clean, "{report}");
    assert_eq!(report["lost"], serde_json::json!([]), "{report}");
    let missing: Vec<_> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|node| node["missing"] == serde_json::json!([layer.to_string()]))
        .map(|node| node["node"].as_u64().expect("id"))
        .collect();
    assert_eq!(missing, vec![victim], "{report}");

    let (_, repaired) = fsck(true);
    assert_eq!(repaired["repaired"]["replicas_dropped"], 1, "{repaired}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (clean, report) = fsck(false);
        if clean {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fsck never came out clean: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let info = meta(&cluster).stat_blob(&repo, layer).await.expect("known");
    assert!(info.replicas.len() >= 2, "{:?}", info.replicas);
    registry.verify_image(&image).await.expect("intact");
    cluster.shutdown().await;
}

/// A push refused for its write quorum after the staging node stored the blob (issue 15): the
/// copy nobody acknowledged is handed to meta and deleted by its node's collector, instead of
/// staying on disk unknown to meta for good; fsck finds no orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_refused_for_its_write_quorum_leaves_no_file_behind() {
    let options = test_cluster::Options {
        gc: wharf::config::GcConfig {
            interval_ms: 200,
            ..wharf::config::GcConfig::default()
        },
        // Node 2 stays Up in the map while stopped, so it stays an owner the push needs.
        blob_down_after_ms: 600_000,
        ..test_cluster::Options::default()
    };
    let mut cluster = InProcessCluster::start_with(1, 2, 1, RF2, options)
        .await
        .expect("cluster starts");
    cluster.stop(Role::Blob, 2).await.expect("stop blob node 2");
    let blob_dir = test_cluster::data_dir(cluster.member(Role::Blob, 1).expect("node 1"));
    let http = reqwest::Client::new();
    let base = cluster.gateway_url(1);
    // A push staged on node 2 fails before any byte is stored; one staged on node 1 is
    // committed there, then refused for its second copy. Push until one was.
    let mut refused = None;
    for _ in 0..20 {
        let data = common::random_bytes(5000);
        let digest = oci_model::Digest::sha256_of(&data);
        let response = http
            .post(format!("{base}/v2/team/app/blobs/uploads/?digest={digest}"))
            .body(data)
            .send()
            .await
            .expect("push");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        assert_ne!(
            status, 201,
            "a push acknowledged with one of two owners: {body}"
        );
        if body.contains("is durable on 1 nodes [1]") {
            refused = Some(digest);
            break;
        }
    }
    let digest = refused.expect("a push staged on node 1 within 20 tries");
    let hex = digest.hex();
    let file = blob_dir.join("blobs/sha256").join(&hex[..2]).join(hex);
    test_cluster::wait_until(
        "node 1 deletes the unacknowledged copy",
        Duration::from_secs(30),
        || async { !file.exists() },
    )
    .await
    .expect("the copy goes");
    cluster
        .restart(Role::Blob, 2)
        .await
        .expect("restart blob node 2");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["admin", "--meta", &cluster.meta_addrs().join(","), "fsck"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("fsck runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "fsck: {report}");
    assert!(!report.contains(hex), "fsck still sees {digest}: {report}");
    cluster.shutdown().await;
}

/// A blob node below its free-space floor (issue 15, part 5) says so in its heartbeats: the
/// leader stages no upload on it, pushes go to the node with space, reads of what it holds go
/// on, and `cluster status` shows it full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_are_staged_around_a_full_blob_node() {
    let options = test_cluster::Options {
        // Node 1's floor is above any disk's free space: it is full from its first heartbeat.
        blob_min_free_bytes: vec![9_000_000_000_000_000_000],
        ..test_cluster::Options::default()
    };
    let policy = ReplicationPolicy {
        replicas: 1,
        write_quorum: 0,
    };
    let cluster = InProcessCluster::start_with(1, 2, 1, policy, options)
        .await
        .expect("cluster starts");
    let admin = cluster.admin().expect("admin client");
    test_cluster::wait_until(
        "node 1 reports itself full",
        Duration::from_secs(30),
        || async {
            admin.cluster_status().await.is_ok_and(|status| {
                status
                    .liveness
                    .iter()
                    .any(|entry| entry.id == 1 && entry.health.full)
            })
        },
    )
    .await
    .expect("full in cluster status");
    let status = admin.cluster_status().await.expect("status");
    let node2 = status
        .liveness
        .iter()
        .find(|entry| entry.id == 2)
        .expect("node 2");
    assert!(!node2.health.full && node2.health.free_bytes.is_some());

    let meta = meta(&cluster);
    let repo = RepositoryName::parse("full/app").expect("name");
    for _ in 0..20 {
        let session = meta.create_upload(&repo, &[]).await.expect("session");
        assert_eq!(session.staging_node, 2, "an upload staged on the full node");
    }
    let registry = Registry::new(cluster.gateway_url(1));
    let node1_blobs =
        test_cluster::data_dir(cluster.member(Role::Blob, 1).expect("node 1")).join("blobs");
    let mut pushed = Vec::new();
    for index in 0..6 {
        let image = registry
            .push_image("full/app", &format!("v{index}"), 50_000)
            .await
            .expect("push with one node full");
        registry.verify_image(&image).await.expect("pull");
        pushed.extend(image.blobs.into_iter().map(|(digest, _)| digest));
    }
    // Nor does it take replicas: the blobs the ring gives to node 1 stay on node 2 (placed on
    // the next node in ring order, as for an owner that cannot be reached).
    for digest in &pushed {
        let hex = digest.hex();
        assert!(
            !node1_blobs
                .join("sha256")
                .join(&hex[..2])
                .join(hex)
                .exists(),
            "the full node took a replica of {digest}"
        );
    }
    // With node 2 the only one with space avoided too, nothing can stage: 507.
    let refused = meta
        .create_upload(&repo, &[2])
        .await
        .expect_err("no node left");
    assert!(
        matches!(refused, cluster_api::MetaError::StorageFull(_)),
        "{refused:?}"
    );
    cluster.shutdown().await;
}

//! Replication on write, repair after a failure and rebalance after a join, across several
//! `FsBlobStore`-backed nodes wired to each other in one process.

mod support;

use std::collections::BTreeMap;

use cluster_api::{BlobApi, BlobError, MetaApi, NodeState, PlacementRule, ReplicationPolicy};
use oci_model::Digest;
use support::{blob_data, wait_for, TestCluster, MANUAL};

fn rf2() -> ReplicationPolicy {
    ReplicationPolicy {
        replicas: 2,
        write_quorum: 0,
    }
}

async fn three_zones(policy: ReplicationPolicy, intervals: (u64, u64)) -> TestCluster {
    let mut cluster = TestCluster::new(policy, intervals);
    for (id, zone) in [(1, "a"), (2, "b"), (3, "c")] {
        cluster.add_node(id, zone).await;
    }
    // The heartbeat's first beat may have read the map before every node registered.
    cluster.refresh_maps().await;
    cluster
}

#[tokio::test]
async fn rf2_commit_lands_on_both_owners() {
    let mut cluster = three_zones(rf2(), MANUAL).await;
    let placement = cluster.placement();
    for index in 0..12 {
        let data = blob_data(index);
        let blob = cluster.push(1, &data).await.expect("push");
        let owners = placement.owners(&blob.digest);
        assert_eq!(owners.len(), 2);
        let mut expected = vec![1];
        expected.extend(owners.iter().copied().filter(|owner| *owner != 1));
        assert_eq!(
            blob.replicas, expected,
            "the local copy first, then the owners"
        );
        for owner in owners {
            let node = cluster.node(owner);
            assert_eq!(
                support::read_all(node.as_ref(), &blob.digest).await,
                Ok(data.clone())
            );
        }
    }
    cluster.stop().await;
}

#[tokio::test]
async fn an_unreachable_owner_is_replaced_by_a_hinted_copy_and_too_few_nodes_fail_the_quorum() {
    let mut cluster = three_zones(rf2(), MANUAL).await;
    let placement = cluster.placement();
    cluster.nodes.set_reachable(3, false);
    // Blobs that node 1 and unreachable node 3 own (node 3 is still Up in the map).
    let mut owned_by_1_and_3 = (0..).map(blob_data).filter(|data| {
        let owners = placement.owners(&Digest::sha256_of(data));
        owners.contains(&3) && owners.contains(&1)
    });
    let data = owned_by_1_and_3
        .next()
        .expect("some blob is owned by nodes 1 and 3");
    let digest = Digest::sha256_of(&data);
    let blob = cluster
        .push(1, &data)
        .await
        .expect("push with an owner unreachable");
    assert_eq!(blob.replicas, vec![1, 2], "node 2 takes node 3's copy");
    assert_eq!(
        cluster.node(2).stat(&digest).await,
        Ok(Some(data.len() as u64)),
        "the hinted copy is durable on node 2"
    );

    // With node 2 unreachable too, no second node can hold a copy: the push fails.
    cluster.nodes.set_reachable(2, false);
    let data = owned_by_1_and_3
        .next()
        .expect("another blob owned by nodes 1 and 3");
    let digest = Digest::sha256_of(&data);
    assert!(matches!(
        cluster.push(1, &data).await,
        Err(BlobError::Unavailable(_))
    ));
    assert_eq!(
        cluster.node(1).stat(&digest).await,
        Ok(Some(data.len() as u64)),
        "the local copy stays for a retry or repair"
    );
    // With a write quorum of one, node 1's own copy is enough.
    cluster
        .meta
        .set_replication_policy(ReplicationPolicy {
            replicas: 2,
            write_quorum: 1,
        })
        .await
        .expect("set the policy");
    cluster.refresh_maps().await;
    let blob = cluster.push(1, &data).await.expect("push with quorum 1");
    assert_eq!(blob.replicas, vec![1]);
    cluster.stop().await;
}

#[tokio::test]
async fn repair_restores_the_replication_factor_after_a_node_goes_down() {
    let mut cluster = three_zones(rf2(), MANUAL).await;
    let expected = push_round_robin(&mut cluster, 30).await;
    // Settle: copies on staging nodes that are not owners move off.
    cluster.settle(&expected).await;
    cluster.nodes.set_reachable(2, false);
    cluster
        .meta
        .set_blob_node_state(2, NodeState::Down)
        .await
        .expect("mark node 2 down");
    cluster.refresh_maps().await;
    let (pushed, _) = cluster.settle(&expected).await;
    assert!(pushed > 0, "blobs node 2 held must be copied again");
    let placement = cluster.placement();
    for digest in expected.keys() {
        let owners = placement.owners(digest);
        assert_eq!(owners.len(), 2, "two survivors own every blob");
        let holders = cluster.holders(digest).await;
        let record = cluster.meta.blob(digest).expect("record");
        for owner in owners {
            assert!(holders.contains(&owner), "{digest}: owner {owner} holds it");
            assert!(
                record.replicas.contains(&owner),
                "{digest}: meta lists {owner}"
            );
        }
    }
    for node in [1, 3] {
        assert_eq!(cluster.tasks(node).last_repair_report().under_replicated, 0);
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_join_moves_a_share_to_the_new_node_and_drops_old_copies_only_when_confirmed() {
    let mut cluster = three_zones(rf2(), MANUAL).await;
    let expected = push_round_robin(&mut cluster, 60).await;
    cluster.settle(&expected).await;
    for digest in expected.keys() {
        assert_eq!(
            cluster.holders(digest).await.len(),
            2,
            "settled at two copies"
        );
    }

    cluster.add_node(4, "d").await;
    cluster.refresh_maps().await;
    // While the new node cannot take copies, nothing it owns may be dropped elsewhere.
    cluster.nodes.set_reachable(4, false);
    for _ in 0..expected.len() / 7 + 2 {
        let (_, dropped) = cluster.repair_round(&expected).await;
        assert_eq!(
            dropped, 0,
            "no copy is dropped before its new owner confirms"
        );
    }
    cluster.nodes.set_reachable(4, true);
    let (pushed, dropped) = cluster.settle(&expected).await;
    assert!(
        pushed > 0 && dropped > 0,
        "blobs moved: {pushed} pushed, {dropped} dropped"
    );
    let placement = cluster.placement();
    let mut on_new_node = 0;
    for digest in expected.keys() {
        let mut owners = placement.owners(digest);
        owners.sort_unstable();
        assert_eq!(
            cluster.holders(digest).await,
            owners,
            "{digest} sits on its owners only"
        );
        let mut recorded = cluster.meta.blob(digest).expect("record").replicas;
        recorded.sort_unstable();
        assert_eq!(
            recorded, owners,
            "meta lists exactly the owners of {digest}"
        );
        on_new_node += usize::from(owners.contains(&4));
    }
    eprintln!(
        "join of a 4th node (RF 2, 60 blobs): {pushed} copies pushed, {dropped} dropped, new node owns {on_new_node}"
    );
    // Two copies over four equal nodes: the new node should own about half of the blobs.
    assert!(
        (15..=45).contains(&on_new_node),
        "the new node owns {on_new_node} of 60 blobs"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn the_background_loops_follow_map_changes() {
    let mut cluster = three_zones(rf2(), (20, 50)).await;
    let mut expected = BTreeMap::new();
    for index in 0..10 {
        let data = blob_data(index);
        let blob = cluster.push(1, &data).await.expect("push");
        expected.insert(blob.digest, data);
    }
    cluster.nodes.set_reachable(3, false);
    cluster
        .meta
        .set_blob_node_state(3, NodeState::Down)
        .await
        .expect("mark node 3 down");
    let digests: Vec<Digest> = expected.keys().cloned().collect();
    let meta = std::sync::Arc::clone(&cluster.meta);
    wait_for("the loops to restore two copies on nodes 1 and 2", || {
        let (meta, digests) = (std::sync::Arc::clone(&meta), digests.clone());
        async move {
            digests.iter().all(|digest| {
                let replicas = meta
                    .blob(digest)
                    .map(|record| record.replicas)
                    .unwrap_or_default();
                replicas.contains(&1) && replicas.contains(&2)
            })
        }
    })
    .await;
    for digest in &digests {
        assert!(cluster.node(2).stat(digest).await.expect("stat").is_some());
    }
    cluster.stop().await;
}

#[tokio::test]
async fn blobs_meta_does_not_know_are_left_alone() {
    let cluster = three_zones(rf2(), MANUAL).await;
    // Committed on the node, but the gateway never committed it in meta (or it was collected).
    let data = blob_data(99);
    let digest = Digest::sha256_of(&data);
    let node = cluster.node(1);
    let id = cluster_api::UploadId("f".repeat(32));
    node.start_upload(&id).await.expect("start");
    node.append_upload(&id, 0, support::once(&data))
        .await
        .expect("append");
    let repo = oci_model::RepositoryName::parse("team/app").expect("a repository name");
    node.commit_upload(&repo, &id, &digest)
        .await
        .expect("node commit");
    let holders = cluster.holders(&digest).await;
    let report = cluster.tasks(1).repair_pass().await.expect("pass");
    assert_eq!(report.unknown_to_meta, 1);
    assert_eq!((report.pushed, report.dropped), (0, 0));
    assert_eq!(cluster.holders(&digest).await, holders);
    assert!(cluster
        .meta
        .list_blobs(None, 10)
        .await
        .expect("list")
        .is_empty());
    cluster.stop().await;
}

/// Pushes `count` distinct blobs through nodes 1, 2, 3 in turn; returns them by digest.
async fn push_round_robin(cluster: &mut TestCluster, count: u32) -> BTreeMap<Digest, Vec<u8>> {
    let mut pushed = BTreeMap::new();
    for index in 0..count {
        let data = blob_data(index);
        let blob = cluster
            .push(1 + u64::from(index % 3), &data)
            .await
            .expect("push");
        pushed.insert(blob.digest, data);
    }
    pushed
}

/// Nodes 1 and 5 in eu-west, 2 in eu-central, 3 in us-east, 4 in us-west, and a rule keeping
/// `eu/**` in the two EU zones.
async fn eu_and_us() -> TestCluster {
    let mut cluster = TestCluster::new(rf2(), MANUAL);
    for (id, zone) in [
        (1, "eu-west"),
        (2, "eu-central"),
        (3, "us-east"),
        (4, "us-west"),
        (5, "eu-west"),
    ] {
        cluster.add_node(id, zone).await;
    }
    set_rule(&cluster, eu_rule()).await;
    cluster
}

/// Adds or replaces `rule`, and every node reads the new map (as its heartbeat would).
async fn set_rule(cluster: &TestCluster, rule: PlacementRule) {
    cluster
        .meta
        .put_placement_rule(rule)
        .await
        .expect("set the rule");
    cluster.refresh_maps().await;
}

fn eu_rule() -> PlacementRule {
    PlacementRule {
        id: "eu".into(),
        repositories: "eu/**".into(),
        zones: vec!["eu-west".into(), "eu-central".into()],
        replicas: None,
    }
}

const EU_NODES: [u64; 3] = [1, 2, 5];

#[tokio::test]
async fn a_placement_rule_keeps_every_copy_of_a_push_in_its_zones() {
    let mut cluster = eu_and_us().await;
    let rules = cluster.meta.map().placement_of("eu/app");
    let mut zones_of_unruled = std::collections::BTreeSet::new();
    for index in 0..16 {
        let data = blob_data(index);
        let blob = cluster
            .push_into(1, "eu/app", &data)
            .await
            .expect("push into eu/app");
        assert_eq!(blob.replicas[0], 1, "the staging node's own copy first");
        for holder in cluster.holders(&blob.digest).await {
            assert!(
                EU_NODES.contains(&holder),
                "copy of {} on node {holder}, outside the EU zones",
                blob.digest
            );
        }
        assert_eq!(
            blob.replicas[1..],
            cluster.placement().owners_for(&blob.digest, &rules)[..]
                .iter()
                .copied()
                .filter(|owner| *owner != 1)
                .collect::<Vec<_>>()[..],
            "the other copy goes to the digest's owner in the EU zones"
        );
        // The same bytes in a repository no rule matches are placed over every zone.
        let data = blob_data(1_000 + index);
        let blob = cluster.push_into(1, "team/app", &data).await.expect("push");
        zones_of_unruled.extend(blob.replicas);
    }
    assert!(
        zones_of_unruled.contains(&3) || zones_of_unruled.contains(&4),
        "unruled repositories still use the US nodes: {zones_of_unruled:?}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_staging_node_outside_the_zones_is_refused_and_hints_stay_in_the_zones() {
    let mut cluster = eu_and_us().await;
    // Staged on a US node (the rule came after the upload was opened): refused, and no copy
    // stays there.
    let refused = cluster.push_into(3, "eu/app", &blob_data(7)).await;
    assert_eq!(
        cluster
            .node(3)
            .stat(&Digest::sha256_of(&blob_data(7)))
            .await,
        Ok(None)
    );
    match refused {
        Err(BlobError::Unavailable(message)) => assert!(
            message.contains("placement rule \"eu\"") && message.contains("eu/app"),
            "{message}"
        ),
        other => panic!("a US staging node must be refused: {other:?}"),
    }

    // An unreachable EU owner: its copy goes to the next EU node, never to a US one.
    cluster.nodes.set_reachable(2, false);
    let rules = cluster.meta.map().placement_of("eu/app");
    let placement = cluster.placement();
    let data = (0..)
        .map(blob_data)
        .find(|data| {
            let owners = placement.owners_for(&Digest::sha256_of(data), &rules);
            owners.contains(&1) && owners.contains(&2)
        })
        .expect("some blob is owned by nodes 1 and 2");
    let blob = cluster
        .push_into(1, "eu/app", &data)
        .await
        .expect("push with an EU owner unreachable");
    assert_eq!(
        blob.replicas,
        vec![1, 5],
        "node 5 (eu-west) takes node 2's copy"
    );

    // With every other EU node unreachable the push fails rather than leave the zones.
    cluster.nodes.set_reachable(5, false);
    let data = (0..)
        .map(blob_data)
        .filter(|data| {
            let owners = placement.owners_for(&Digest::sha256_of(data), &rules);
            owners.contains(&1)
        })
        .nth(3)
        .expect("a blob node 1 owns");
    assert!(matches!(
        cluster.push_into(1, "eu/app", &data).await,
        Err(BlobError::Unavailable(_))
    ));
    for us in [3, 4] {
        assert_eq!(
            cluster.node(us).stat(&Digest::sha256_of(&data)).await,
            Ok(None),
            "no copy on US node {us}"
        );
    }
    cluster.stop().await;
}

#[tokio::test]
async fn repair_keeps_a_ruled_blob_in_its_zones_and_moves_it_when_the_rule_changes() {
    let mut cluster = eu_and_us().await;
    let mut expected = BTreeMap::new();
    let mut shared = Vec::new();
    for index in 0..12 {
        let data = blob_data(index);
        let blob = cluster
            .push_into(5, "eu/app", &data)
            .await
            .expect("push into eu/app");
        if index < 3 {
            // Also pushed into a repository no rule matches: it may keep copies anywhere too.
            cluster
                .push_into(3, "team/app", &data)
                .await
                .expect("push into team/app");
            shared.push(blob.digest.clone());
        }
        expected.insert(blob.digest, data);
    }
    cluster.settle(&expected).await;
    let placement = cluster.placement();
    let eu = cluster.meta.map().placement_of("eu/app");
    for digest in expected.keys() {
        let holders = cluster.holders(digest).await;
        let record = cluster.record(digest).await;
        let mut wanted = placement.owners_of_record(&record).owners;
        wanted.sort_unstable();
        assert_eq!(
            holders, wanted,
            "{digest}: exactly the owners its rule sets ask for"
        );
        let eu_owners = placement.owners_for(digest, &eu);
        assert_eq!(eu_owners.len(), 2);
        assert!(eu_owners.iter().all(|owner| holders.contains(owner)));
        if shared.contains(digest) {
            assert_eq!(record.placement, vec![vec![], vec!["eu".to_owned()]]);
            for owner in placement.owners(digest) {
                assert!(holders.contains(&owner), "{digest}: ring owner {owner}");
            }
        } else {
            assert_eq!(record.placement, vec![vec!["eu".to_owned()]]);
            assert!(
                holders.iter().all(|node| EU_NODES.contains(node)),
                "{digest}: repair must not copy an eu/** blob out of the EU: {holders:?}"
            );
        }
    }

    // The rule now allows eu-west only: repair moves the eu-central copies there.
    set_rule(
        &cluster,
        PlacementRule {
            zones: vec!["eu-west".into()],
            ..eu_rule()
        },
    )
    .await;
    let (pushed, dropped) = cluster.settle(&expected).await;
    assert!(
        pushed > 0 && dropped > 0,
        "copies moved: {pushed} pushed, {dropped} dropped"
    );
    for digest in expected.keys().filter(|digest| !shared.contains(digest)) {
        assert_eq!(cluster.holders(digest).await, vec![1, 5], "{digest}");
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_node_with_a_stale_map_admits_a_push_the_changed_rule_allows() {
    let mut cluster = eu_and_us().await;
    // The rule moves to the US zones; node 3 still holds the map where eu/** is EU only.
    cluster
        .meta
        .put_placement_rule(PlacementRule {
            zones: vec!["us-east".into(), "us-west".into()],
            ..eu_rule()
        })
        .await
        .expect("change the rule");
    let blob = cluster
        .push_into(3, "eu/app", &blob_data(3))
        .await
        .expect("the fresh map allows node 3");
    assert!(
        blob.replicas.iter().all(|node| [3, 4].contains(node)),
        "{blob:?}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_rule_added_later_moves_the_blobs_already_pushed_into_its_zones() {
    let mut cluster = eu_and_us().await;
    cluster
        .meta
        .delete_placement_rule("eu")
        .await
        .expect("start without the rule");
    cluster.refresh_maps().await;
    let mut expected = BTreeMap::new();
    for index in 0..12 {
        let data = blob_data(index);
        let blob = cluster.push_into(3, "eu/app", &data).await.expect("push");
        expected.insert(blob.digest, data);
    }
    cluster.settle(&expected).await;
    let mut outside = 0;
    for digest in expected.keys() {
        let holders = cluster.holders(digest).await;
        outside += holders
            .iter()
            .filter(|node| !EU_NODES.contains(node))
            .count();
    }
    assert!(outside > 0, "without a rule, copies land in the US too");

    set_rule(&cluster, eu_rule()).await;
    let (pushed, dropped) = cluster.settle(&expected).await;
    assert!(
        pushed > 0 && dropped > 0,
        "{pushed} pushed, {dropped} dropped"
    );
    let rules = cluster.meta.map().placement_of("eu/app");
    let placement = cluster.placement();
    for digest in expected.keys() {
        let mut owners = placement.owners_for(digest, &rules);
        owners.sort_unstable();
        assert_eq!(
            cluster.holders(digest).await,
            owners,
            "{digest}: only its EU owners"
        );
        assert_eq!(
            cluster.record(digest).await.placement,
            vec![vec!["eu".to_owned()]]
        );
    }
    cluster.stop().await;
}

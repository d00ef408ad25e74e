//! Placement rules (data residency) in the state machine: stored in the cluster map and bumping
//! its epoch, validated, and enforced on every command that records where a blob's bytes are:
//! a commit with a copy outside the zones is refused (and its copies doomed), and a mount links
//! only a blob that already holds the copies the target repository's rules ask for.

mod common;

use cluster_api::{BlobNodeInfo, MetaError, PlacementRule, ReplicationPolicy};
use common::*;
use meta_store::{Command, CommandOutput};
use tempfile::TempDir;

const DONE: Result<CommandOutput, MetaError> = Ok(CommandOutput::Done);

fn eu_rule(replicas: Option<u32>) -> PlacementRule {
    PlacementRule {
        id: "eu".into(),
        repositories: "eu/**".into(),
        zones: vec!["eu-west".into(), "eu-central".into()],
        replicas,
    }
}

fn zoned(id: u64, zone: &str) -> BlobNodeInfo {
    BlobNodeInfo {
        zone: zone.into(),
        ..node(id)
    }
}

/// Nodes 1 (eu-west), 2 (eu-central), 3 (us-east); RF 2; the upload key; the `eu` rule.
async fn eu_and_us(dir: &TempDir) -> Applier {
    let mut store = Applier::new(open(dir));
    let mut setup = vec![
        set_upload_key(),
        Command::SetReplicationPolicy(ReplicationPolicy {
            replicas: 2,
            write_quorum: 0,
        }),
    ];
    for (id, zone) in [(1, "eu-west"), (2, "eu-central"), (3, "us-east")] {
        setup.push(Command::RegisterBlobNode(zoned(id, zone)));
    }
    setup.push(Command::PutPlacementRule(eu_rule(None)));
    for command in setup {
        assert_eq!(store.apply(command).await, DONE);
    }
    store
}

fn commit(repo_name: &str, content: &str, replicas: &[u64], n: u8) -> Command {
    Command::CommitBlob {
        repo: repo(repo_name),
        blob: blob(content, replicas),
        upload: Some(token(repo_name, n, 1_000)),
        now_ms: 2_000,
    }
}

#[tokio::test]
async fn rules_live_in_the_cluster_map_and_each_change_bumps_its_epoch() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let map = |store: &Applier| store.store.reader.cluster_map().expect("map");
    // No node in eu-central yet: a rule naming it is refused, naming the zones that have nodes.
    for (id, zone) in [(1, "eu-west"), (3, "us-east")] {
        let register = Command::RegisterBlobNode(zoned(id, zone));
        assert_eq!(store.apply(register).await, DONE);
    }
    match store.apply(Command::PutPlacementRule(eu_rule(None))).await {
        Err(MetaError::Invalid(message)) => {
            assert!(message.contains("\"eu-central\""), "{message}");
            assert!(message.contains("eu-west, us-east"), "{message}");
        }
        other => panic!("a zone without nodes must be refused: {other:?}"),
    }
    let register = Command::RegisterBlobNode(zoned(2, "eu-central"));
    assert_eq!(store.apply(register).await, DONE);
    assert_eq!(map(&store).epoch, 3);
    assert_eq!(
        store.apply(Command::PutPlacementRule(eu_rule(None))).await,
        DONE
    );
    assert_eq!(map(&store).epoch, 4);
    assert_eq!(map(&store).placement, vec![eu_rule(None)]);
    // The same rule again is no change; a changed one replaces it by id.
    assert_eq!(
        store.apply(Command::PutPlacementRule(eu_rule(None))).await,
        DONE
    );
    assert_eq!(map(&store).epoch, 4);
    assert_eq!(
        store
            .apply(Command::PutPlacementRule(eu_rule(Some(3))))
            .await,
        DONE
    );
    let us = PlacementRule {
        id: "us".into(),
        repositories: "us/**".into(),
        zones: vec!["us-east".into()],
        replicas: None,
    };
    assert_eq!(
        store.apply(Command::PutPlacementRule(us.clone())).await,
        DONE
    );
    assert_eq!(map(&store).epoch, 6);
    assert_eq!(map(&store).placement, vec![eu_rule(Some(3)), us.clone()]);
    assert_eq!(
        map(&store).placement_of("eu/team/app").replicas,
        Some(3),
        "the map answers which rules apply"
    );

    // Invalid rules and unknown ids are refused without a change.
    let invalid = PlacementRule {
        zones: vec![],
        ..us.clone()
    };
    assert!(matches!(
        store.apply(Command::PutPlacementRule(invalid)).await,
        Err(MetaError::Invalid(_))
    ));
    assert!(matches!(
        store
            .apply(Command::DeletePlacementRule { id: "ap".into() })
            .await,
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(map(&store).epoch, 6);
    assert_eq!(
        store
            .apply(Command::DeletePlacementRule { id: "eu".into() })
            .await,
        DONE
    );
    assert_eq!(map(&store).epoch, 7);
    assert_eq!(map(&store).placement, vec![us]);

    // The rules survive a restart (they are state, not memory).
    drop(store);
    let store = Applier::new(open(&dir));
    assert_eq!(map(&store).placement.len(), 1);
}

#[tokio::test]
async fn a_commit_with_a_copy_outside_the_zones_is_refused_and_its_copies_doomed() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = eu_and_us(&dir).await;
    match store.apply(commit("eu/app", "layer", &[1, 3], 1)).await {
        Err(MetaError::PlacementUnmet(message)) => {
            assert!(message.contains("\"eu\""), "{message}");
            assert!(message.contains("node 3"), "{message}");
        }
        other => panic!("a copy in us-east must be refused: {other:?}"),
    }
    let reader = &store.store.reader;
    assert!(matches!(
        reader.stat_blob(&repo("eu/app"), &digest("layer")),
        Err(MetaError::BlobUnknown(_))
    ));
    let doomed = reader.doomed_blobs(3, None, 10).expect("doomed");
    assert_eq!(
        doomed.iter().map(|d| &d.digest).collect::<Vec<_>>(),
        vec![&digest("layer")],
        "the refused commit's copies are doomed, so the nodes delete them"
    );
    // In the zones, it commits; an unruled repository commits anywhere.
    assert_eq!(
        store.apply(commit("eu/app", "layer", &[1, 2], 2)).await,
        DONE
    );
    assert_eq!(
        store.apply(commit("us/app", "other", &[3, 1], 3)).await,
        DONE
    );
    // A node the map does not list is outside every zone.
    assert!(matches!(
        store.apply(commit("eu/app", "third", &[1, 9], 4)).await,
        Err(MetaError::PlacementUnmet(_))
    ));
}

#[tokio::test]
async fn a_mount_links_only_a_blob_holding_the_copies_the_target_rules_ask_for() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = eu_and_us(&dir).await;
    let mount = |to: &str, from: &str, content: &str| Command::MountBlob {
        repo: repo(to),
        digest: digest(content),
        from: repo(from),
        now_ms: 3_000,
    };
    // A base layer stored only in us-east and eu-west: one EU copy where RF 2 asks for two.
    assert_eq!(
        store.apply(commit("us/app", "base", &[3, 1], 1)).await,
        DONE
    );
    assert_eq!(
        store.apply(mount("eu/app", "us/app", "base")).await,
        Ok(CommandOutput::Mounted(None)),
        "not linked: the client uploads it, and that upload is placed in the EU zones"
    );
    assert!(store
        .store
        .reader
        .stat_blob(&repo("eu/app"), &digest("base"))
        .is_err());
    // Once the EU copies exist (the upload into eu/app), a mount from anywhere links.
    assert_eq!(
        store.apply(commit("eu/app", "base", &[1, 2], 2)).await,
        DONE
    );
    // Reads through eu/app are served from the EU copies first; us/app keeps the recorded order.
    let replicas = |store: &Applier, name: &str| {
        let reader = &store.store.reader;
        let info = reader
            .stat_blob(&repo(name), &digest("base"))
            .expect("linked");
        info.replicas
    };
    assert_eq!(replicas(&store, "eu/app"), vec![1, 2, 3]);
    assert_eq!(replicas(&store, "us/app"), vec![3, 1, 2]);
    assert!(matches!(
        store.apply(mount("eu/other", "us/app", "base")).await,
        Ok(CommandOutput::Mounted(Some(_)))
    ));
    let placement_of = |store: &Applier, repo_name: &str, content: &str| {
        let reader = &store.store.reader;
        reader
            .stat_blob(&repo(repo_name), &digest(content))
            .expect("linked");
        let listed = reader.list_blobs(None, 100).expect("list");
        let record = listed.iter().find(|blob| blob.digest == digest(content));
        record.expect("listed").placement.clone()
    };
    let eu = vec!["eu".to_owned()];
    assert_eq!(
        placement_of(&store, "eu/app", "base"),
        vec![vec![], eu.clone()],
        "linked without a rule (us/app) and under eu: repair keeps both sets of copies"
    );
    // A repository without rules mounts as before, and the blob records that set too.
    assert_eq!(
        store.apply(commit("eu/app", "euonly", &[1, 2], 3)).await,
        DONE
    );
    assert_eq!(placement_of(&store, "eu/app", "euonly"), vec![eu.clone()]);
    assert!(matches!(
        store.apply(mount("team/app", "eu/app", "euonly")).await,
        Ok(CommandOutput::Mounted(Some(_)))
    ));
    assert_eq!(placement_of(&store, "team/app", "euonly"), vec![vec![], eu]);
    // Placement follows the rules as they stand: without the rule, no set is left.
    assert_eq!(
        store
            .apply(Command::DeletePlacementRule { id: "eu".into() })
            .await,
        DONE
    );
    assert!(placement_of(&store, "eu/app", "euonly").is_empty());
    // And the index behind it survives a restart and fsck agrees with it.
    drop(store);
    let store = Applier::new(open(&dir));
    assert_eq!(
        store.store.reader.check_consistency().expect("check"),
        Vec::<String>::new()
    );
}

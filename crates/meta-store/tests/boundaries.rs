//! The edges of the commands: where a comparison or a count in the state machine decides an
//! outcome, a case on each side of it. Written for what `benches/mutants.sh meta-store` found
//! no test of (see benches/README.md, "Mutation testing").

mod common;

use cluster_api::{
    AuthChange, BlobNodeInfo, ImmutableTagRule, MetaError, NodeState, PlacementRule,
    ReplicationPolicy, RetentionRule,
};
use common::*;
use meta_store::{Command, CommandOutput};
use oci_model::Digest;
use tempfile::TempDir;

const DONE: Result<CommandOutput, MetaError> = Ok(CommandOutput::Done);
/// How long after a deletion (or the fence horizon) an upload must have started to commit:
/// `refs::FENCE_MARGIN_MS`.
const FENCE_MARGIN_MS: u64 = 250;

fn sweep(links_before_ms: u64, fences_before_ms: u64, limit: u32) -> Command {
    Command::Sweep {
        now_ms: T0_MS + 1_000_000,
        links_pushed_before_ms: links_before_ms,
        fences_before_ms,
        limit,
    }
}

async fn store_with_key(dir: &TempDir) -> Applier {
    let mut store = Applier::new(open(dir));
    assert_eq!(store.apply(set_upload_key()).await, DONE);
    store
}

#[tokio::test]
async fn discarded_orphans_are_only_the_blobs_meta_does_not_know() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    assert_eq!(store.apply(commit("a", "known", None, T0_MS)).await, DONE);
    let discard = Command::DiscardOrphans {
        node: NODE,
        blobs: vec![
            (digest("known"), 5),
            (digest("orphan-1"), 8),
            (digest("orphan-2"), 8),
        ],
        now_ms: T0_MS,
    };
    assert_eq!(store.apply(discard).await, Ok(CommandOutput::Retained(2)));
    let reader = &store.store.reader;
    let mut doomed: Vec<Digest> = reader
        .doomed_blobs(NODE, None, 10)
        .expect("doomed")
        .into_iter()
        .map(|blob| blob.digest)
        .collect();
    doomed.sort();
    let mut orphans = vec![digest("orphan-1"), digest("orphan-2")];
    orphans.sort();
    assert_eq!(doomed, orphans);
    assert!(reader.stat_blob(&repo("a"), &digest("known")).is_ok());
    consistent(reader);
}

#[tokio::test]
async fn an_immutable_tag_is_pushed_again_in_place_but_never_moved_or_removed() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    let rule = ImmutableTagRule {
        id: "releases".into(),
        repositories: "team/**".into(),
        tags: "v*".into(),
    };
    assert!(matches!(
        store
            .apply(Command::ChangeAuth(AuthChange::PutImmutableTagRule(rule)))
            .await,
        Ok(CommandOutput::AuthVersion(_))
    ));
    for content in ["config", "layer"] {
        assert_eq!(
            store.apply(commit("team/app", content, None, T0_MS)).await,
            DONE
        );
        assert_eq!(
            store.apply(commit("other/app", content, None, T0_MS)).await,
            DONE
        );
    }
    let blobs = [&digest("config"), &digest("layer")];
    let first = manifest("team/app", "first", Some("v1"), &blobs, None);
    let second = manifest("team/app", "second", Some("v1"), &blobs, None);
    assert_eq!(store.apply(put(&first, T0_MS)).await, DONE);
    assert_eq!(
        store.apply(put(&first, T0_MS)).await,
        DONE,
        "the same manifest again under its immutable tag"
    );
    let moved = store.apply(put(&second, T0_MS)).await;
    assert!(
        matches!(&moved, Err(MetaError::Denied(reason)) if reason.contains("rule releases")),
        "{moved:?}"
    );
    // Under a tag the rule does not cover, and in a repository it does not cover, it goes in.
    let latest = manifest("team/app", "second", Some("latest"), &blobs, None);
    assert_eq!(store.apply(put(&latest, T0_MS)).await, DONE);
    let elsewhere = |label: &str| manifest("other/app", label, Some("v1"), &blobs, None);
    assert_eq!(store.apply(put(&elsewhere("first"), T0_MS)).await, DONE);
    assert_eq!(store.apply(put(&elsewhere("second"), T0_MS)).await, DONE);

    let delete_tag = |name: &str| Command::DeleteTag {
        repo: repo("team/app"),
        tag: tag(name),
    };
    assert!(matches!(
        store.apply(delete_tag("v1")).await,
        Err(MetaError::Denied(_))
    ));
    assert!(matches!(
        store
            .apply(Command::DeleteManifest {
                repo: repo("team/app"),
                digest: first.digest.clone(),
                now_ms: T0_MS,
            })
            .await,
        Err(MetaError::Denied(_))
    ));
    assert_eq!(store.apply(delete_tag("latest")).await, DONE);
    let reader = &store.store.reader;
    let tags = reader.list_tags(&repo("team/app"), None, 10).expect("tags");
    assert_eq!(tags.items, ["v1"]);
    let v1 = reader
        .get_manifest(&repo("team/app"), &oci_model::Reference::Tag(tag("v1")))
        .expect("v1");
    assert_eq!(v1.digest, first.digest);
    consistent(reader);
}

#[tokio::test]
async fn a_referrer_descriptor_must_describe_the_manifest_itself() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    assert_eq!(store.apply(commit("a", "config", None, T0_MS)).await, DONE);
    let subject = manifest("a", "subject", Some("v1"), &[&digest("config")], None);
    assert_eq!(store.apply(put(&subject, T0_MS)).await, DONE);
    let referrer = manifest(
        "a",
        "signature",
        None,
        &[&digest("config")],
        Some((&subject.digest, "application/example")),
    );
    let mut lying = referrer.clone();
    lying
        .referrer
        .as_mut()
        .expect("a referrer descriptor")
        .digest = subject.digest.clone();
    assert!(matches!(
        store.apply(put(&lying, T0_MS)).await,
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(store.apply(put(&referrer, T0_MS)).await, DONE);
    let listed = store
        .store
        .reader
        .list_referrers(&repo("a"), &subject.digest, None)
        .expect("referrers");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, referrer.digest);
}

#[tokio::test]
async fn retention_rules_are_deleted_by_id_and_an_unknown_id_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    let rule = |id: &str| RetentionRule {
        id: id.into(),
        repositories: "**".into(),
        keep_last: Some(3),
        keep_tags: None,
        untagged_older_than_secs: None,
        dry_run: false,
    };
    for id in ["keep-a", "keep-b"] {
        assert_eq!(store.apply(Command::PutRetentionRule(rule(id))).await, DONE);
    }
    assert!(matches!(
        store
            .apply(Command::DeleteRetentionRule {
                id: "keep-c".into()
            })
            .await,
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(
        store.store.reader.retention_rules().expect("rules").len(),
        2
    );
    assert_eq!(
        store
            .apply(Command::DeleteRetentionRule {
                id: "keep-a".into()
            })
            .await,
        DONE
    );
    assert_eq!(
        store.store.reader.retention_rules().expect("rules"),
        vec![rule("keep-b")]
    );
}

#[tokio::test]
async fn a_write_quorum_may_be_every_copy_but_not_more() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    let policy = |replicas, write_quorum| {
        Command::SetReplicationPolicy(ReplicationPolicy {
            replicas,
            write_quorum,
        })
    };
    assert_eq!(store.apply(policy(2, 2)).await, DONE);
    assert!(matches!(
        store.apply(policy(2, 3)).await,
        Err(MetaError::Invalid(_))
    ));
    assert!(matches!(
        store.apply(policy(0, 0)).await,
        Err(MetaError::Invalid(_))
    ));
    let map = store.store.reader.cluster_map().expect("map");
    assert_eq!(
        map.policy,
        ReplicationPolicy {
            replicas: 2,
            write_quorum: 2
        }
    );
}

#[tokio::test]
async fn a_mount_asks_only_for_the_copies_the_up_nodes_of_the_zones_can_hold() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    let zoned = |id: u64, zone: &str| BlobNodeInfo {
        zone: zone.into(),
        ..node(id)
    };
    let mut setup = vec![Command::SetReplicationPolicy(ReplicationPolicy {
        replicas: 2,
        write_quorum: 0,
    })];
    for (id, zone) in [(1, "eu-west"), (2, "eu-central"), (3, "us-east")] {
        setup.push(Command::RegisterBlobNode(zoned(id, zone)));
    }
    setup.push(Command::PutPlacementRule(PlacementRule {
        id: "eu".into(),
        repositories: "eu/**".into(),
        zones: vec!["eu-west".into(), "eu-central".into()],
        replicas: None,
    }));
    let node_state = |id, state| Command::SetBlobNodeState {
        id,
        state,
        expected: None,
    };
    setup.push(node_state(2, NodeState::Down));
    for command in setup {
        assert_eq!(store.apply(command).await, DONE);
    }
    let base = Command::CommitBlob {
        repo: repo("us/app"),
        blob: blob("base", &[3, 1]),
        upload: None,
        now_ms: T0_MS,
    };
    assert_eq!(store.apply(base).await, DONE);
    let mount = |to: &str| Command::MountBlob {
        repo: repo(to),
        digest: digest("base"),
        from: repo("us/app"),
        now_ms: T0_MS,
    };
    // RF 2 asks for two EU copies, but eu-central's only node is down: one is all there can be.
    assert!(matches!(
        store.apply(mount("eu/app")).await,
        Ok(CommandOutput::Mounted(Some(_)))
    ));
    // With it up again, one EU copy is not enough.
    assert_eq!(store.apply(node_state(2, NodeState::Up)).await, DONE);
    assert_eq!(
        store.apply(mount("eu/other")).await,
        Ok(CommandOutput::Mounted(None))
    );
}

#[tokio::test]
async fn an_upload_commits_from_the_fence_horizon_plus_its_margin() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    let horizon = T0_MS + 50_000;
    swept(store.apply(sweep(0, horizon, 100)).await);
    let late = store
        .apply(commit(
            "a",
            "late",
            Some(horizon + FENCE_MARGIN_MS - 1),
            T0_MS + 60_000,
        ))
        .await;
    assert!(matches!(late, Err(MetaError::UploadUnknown(_))), "{late:?}");
    assert_eq!(
        store
            .apply(commit(
                "a",
                "on-time",
                Some(horizon + FENCE_MARGIN_MS),
                T0_MS + 60_000
            ))
            .await,
        DONE
    );
}

/// Links no manifest uses, pushed at `T0_MS`: `n` of them, in repository `a`.
async fn unreferenced_links(store: &mut Applier, n: usize) {
    for i in 0..n {
        assert_eq!(
            store
                .apply(commit("a", &format!("loose-{i}"), None, T0_MS))
                .await,
            DONE
        );
    }
}

#[tokio::test]
async fn a_sweep_says_more_only_when_more_links_are_due_than_its_limit() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    unreferenced_links(&mut store, 2).await;
    let exact = swept(store.apply(sweep(T0_MS + 1, 0, 2)).await);
    assert_eq!(
        (exact.links_removed, exact.blobs_doomed, exact.more),
        (2, 2, false)
    );

    unreferenced_links(&mut store, 3).await;
    let first = swept(store.apply(sweep(T0_MS + 1, 0, 2)).await);
    assert_eq!((first.links_removed, first.more), (2, true));
    let rest = swept(store.apply(sweep(T0_MS + 1, 0, 2)).await);
    assert_eq!((rest.links_removed, rest.more), (1, false));
    consistent(&store.store.reader);
}

/// Fences for `n` blobs of repository `f`, their copies deleted at `T0_MS + 10`, `+ 20`, ...
async fn fences(store: &mut Applier, n: u64) {
    for i in 1..=n {
        let content = format!("fenced-{i}");
        assert_eq!(store.apply(commit("f", &content, None, T0_MS)).await, DONE);
        let unlink = Command::UnlinkBlob {
            repo: repo("f"),
            digest: digest(&content),
            now_ms: T0_MS,
        };
        assert_eq!(store.apply(unlink).await, DONE);
        let doomed = store
            .store
            .reader
            .doomed_blobs(NODE, None, 100)
            .expect("doomed");
        let generation = doomed
            .iter()
            .find(|blob| blob.digest == digest(&content))
            .expect("doomed")
            .generation;
        let confirm = Command::ConfirmBlobDeletions {
            node: NODE,
            blobs: vec![(digest(&content), generation)],
            now_ms: T0_MS + 10 * i,
        };
        assert_eq!(
            store.apply(confirm).await,
            Ok(CommandOutput::Confirmed(vec![true]))
        );
    }
}

/// Whether an upload of `content` into `a` started at `started_ms` may commit.
async fn commits(store: &mut Applier, content: &str, started_ms: u64) -> bool {
    match store
        .apply(commit("a", content, Some(started_ms), T0_MS + 100_000))
        .await
    {
        Ok(_) => true,
        Err(MetaError::UploadUnknown(_)) => false,
        other => panic!("commit answered {other:?}"),
    }
}

#[tokio::test]
async fn fences_expire_oldest_first_a_page_at_a_time_and_move_the_horizon() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    fences(&mut store, 3).await;
    // Those before the cut-off expire, the later one stays.
    let report = swept(store.apply(sweep(0, T0_MS + 25, 10)).await);
    assert_eq!((report.fences_expired, report.more), (2, false));
    // The third blob's fence stands: a commit without its session is refused while it does.
    let retried = store
        .apply(commit("f", "fenced-3", None, T0_MS + 100))
        .await;
    assert!(matches!(retried, Err(MetaError::Retry(_))), "{retried:?}");
    assert_eq!(
        store
            .apply(commit("f", "fenced-1", None, T0_MS + 100))
            .await,
        DONE,
        "its fence expired"
    );

    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    fences(&mut store, 3).await;
    // A page of two: the horizon moves just past the last fence it dropped (T0 + 20).
    let first = swept(store.apply(sweep(0, T0_MS + 1_000, 2)).await);
    assert_eq!((first.fences_expired, first.more), (2, true));
    assert!(!commits(&mut store, "early", T0_MS + 20 + FENCE_MARGIN_MS).await);
    assert!(commits(&mut store, "later", T0_MS + 21 + FENCE_MARGIN_MS).await);
    let rest = swept(store.apply(sweep(0, T0_MS + 1_000, 2)).await);
    assert_eq!((rest.fences_expired, rest.more), (1, false));
    assert!(!commits(&mut store, "early-2", T0_MS + 999 + FENCE_MARGIN_MS).await);
    assert!(commits(&mut store, "later-2", T0_MS + 1_000 + FENCE_MARGIN_MS).await);

    // A page exactly as long as what is due says there is no more.
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    fences(&mut store, 2).await;
    let exact = swept(store.apply(sweep(0, T0_MS + 1_000, 2)).await);
    assert_eq!((exact.fences_expired, exact.more), (2, false));
    consistent(&store.store.reader);
}

#[tokio::test]
async fn a_blob_and_a_manifest_of_the_same_bytes_are_counted_apart() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    let twin = manifest("a", "twin", Some("v1"), &[], None);
    let bytes = String::from_utf8(twin.bytes.clone()).expect("utf-8");
    // The same bytes pushed as a blob first (as some clients do with an index), same digest.
    assert_eq!(store.apply(commit("a", &bytes, None, T0_MS)).await, DONE);
    assert_eq!(digest(&bytes), twin.digest);
    assert_eq!(store.apply(put(&twin, T0_MS)).await, DONE);
    let reader = &store.store.reader;
    let usage = reader.usage(Some("a")).expect("usage").pop().expect("a");
    let size = bytes.len() as u64;
    assert_eq!(
        (
            usage.blobs,
            usage.manifests,
            usage.physical_bytes,
            usage.logical_bytes
        ),
        (1, 1, 2 * size, 2 * size)
    );
    consistent(reader);
}

#[tokio::test]
async fn a_blob_pushed_again_restarts_its_grace() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    assert_eq!(store.apply(commit("a", "loose", None, T0_MS)).await, DONE);
    assert_eq!(
        store.apply(commit("a", "loose", None, T0_MS + 10)).await,
        DONE
    );
    consistent(&store.store.reader);
    let early = swept(store.apply(sweep(T0_MS + 5, 0, 10)).await);
    assert_eq!(
        early.links_removed, 0,
        "the grace runs from the second push"
    );
    let due = swept(store.apply(sweep(T0_MS + 11, 0, 10)).await);
    assert_eq!((due.links_removed, due.blobs_doomed), (1, 1));
    consistent(&store.store.reader);
}

#[tokio::test]
async fn a_deleted_blob_commits_again_only_from_an_upload_started_past_its_fence_and_margin() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    fences(&mut store, 1).await;
    let deleted_ms = T0_MS + 10;
    for started_ms in [deleted_ms + 1, deleted_ms + FENCE_MARGIN_MS] {
        let refused = store
            .apply(commit("f", "fenced-1", Some(started_ms), T0_MS + 100_000))
            .await;
        assert!(matches!(refused, Err(MetaError::Retry(_))), "{refused:?}");
    }
    assert_eq!(
        store
            .apply(commit(
                "f",
                "fenced-1",
                Some(deleted_ms + FENCE_MARGIN_MS + 1),
                T0_MS + 100_000
            ))
            .await,
        DONE
    );
    consistent(&store.store.reader);
}

#[tokio::test]
async fn a_planned_deletion_of_an_untagged_manifest_loses_to_whatever_changed_it_since() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    assert_eq!(
        store.apply(commit("ci/app", "layer", None, T0_MS)).await,
        DONE
    );
    let rule = RetentionRule {
        id: "untagged".into(),
        repositories: "ci/**".into(),
        keep_last: None,
        keep_tags: None,
        untagged_older_than_secs: Some(60),
        dry_run: false,
    };
    assert_eq!(store.apply(Command::PutRetentionRule(rule)).await, DONE);
    let untagged = |label: &str| manifest("ci/app", label, None, &[&digest("layer")], None);
    let (listed, pushed_again, tagged) =
        (untagged("listed"), untagged("again"), untagged("tagged"));
    for image in [&listed, &pushed_again, &tagged] {
        assert_eq!(store.apply(put(image, T0_MS)).await, DONE);
    }
    let plan = store
        .store
        .reader
        .retention_plan(T0_MS + 120_000, false)
        .expect("plan");
    assert_eq!(plan.len(), 3, "{plan:?}");
    // Since the plan: an index lists one, one is pushed again, one is tagged (at the same time,
    // so only its tag tells).
    let mut index = manifest("ci/app", "index", Some("all"), &[], None);
    index.manifests = vec![listed.digest.clone()];
    assert_eq!(store.apply(put(&index, T0_MS + 1_000)).await, DONE);
    assert_eq!(store.apply(put(&pushed_again, T0_MS + 2_000)).await, DONE);
    let mut tagging = tagged.clone();
    tagging.tag = Some(tag("keep"));
    assert_eq!(store.apply(put(&tagging, T0_MS)).await, DONE);
    let applied = Command::ApplyRetention {
        actions: plan,
        now_ms: T0_MS + 120_000,
    };
    assert_eq!(store.apply(applied).await, Ok(CommandOutput::Retained(0)));
    let reader = &store.store.reader;
    for image in [&listed, &pushed_again, &tagged] {
        let reference = oci_model::Reference::Digest(image.digest.clone());
        assert!(reader.get_manifest(&repo("ci/app"), &reference).is_ok());
    }
    consistent(reader);
}

#[tokio::test]
async fn a_new_manifest_counts_against_the_quota_and_one_the_namespace_holds_does_not() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_key(&dir).await;
    let image = manifest("team/a", "image", Some("v1"), &[], None);
    let other = manifest("team/a", "other", Some("v2"), &[], None);
    let quota = image.bytes.len() as u64;
    let set_quota = Command::SetQuota {
        namespace: "team".into(),
        bytes: Some(quota),
    };
    assert_eq!(store.apply(set_quota).await, DONE);
    assert_eq!(store.apply(put(&image, T0_MS)).await, DONE);
    // The namespace is full: a new manifest is refused, the one it holds goes in again, also
    // into another of its repositories.
    let refused = store.apply(put(&other, T0_MS)).await;
    assert!(
        matches!(&refused, Err(MetaError::Denied(message)) if message.contains("quota")),
        "{refused:?}"
    );
    assert_eq!(store.apply(put(&image, T0_MS + 1)).await, DONE);
    let mut copy = image.clone();
    copy.repo = repo("team/b");
    assert_eq!(store.apply(put(&copy, T0_MS)).await, DONE);
    let usage = store.store.reader.usage(Some("team")).expect("usage");
    assert_eq!(usage[0].physical_bytes, quota);
    consistent(&store.store.reader);
}

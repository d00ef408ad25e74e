//! The pull-through cache's manifests (`PutCachedManifest`): stored before their blobs and
//! children, with the references to what is missing counted as pending and taken up by the
//! links when they come, so the reference graph stays exact at every step.

mod common;

use cluster_api::{MetaError, ProxyUpstream};
use common::*;
use meta_store::{Command, CommandOutput};
use oci_model::{media_type, Digest, Reference};
use tempfile::TempDir;

const DONE: Result<CommandOutput, MetaError> = Ok(CommandOutput::Done);

fn upstream(id: &str, prefix: &str) -> ProxyUpstream {
    ProxyUpstream {
        id: id.to_owned(),
        url: "https://registry.example".to_owned(),
        prefix: prefix.to_owned(),
        tag_ttl_secs: 60,
        cache_ttl_secs: 3600,
        username: Some("robot".to_owned()),
        password: Some("secret".to_owned()),
        mirror: false,
        ca_pem: None,
    }
}

fn cached(manifest: &cluster_api::PutManifest, now_ms: u64) -> Command {
    Command::PutCachedManifest {
        put: Box::new(manifest.clone()),
        now_ms,
    }
}

/// An index over `children` in `repo_name`, tagged `tag_name`.
fn index(repo_name: &str, tag_name: &str, children: &[&Digest]) -> cluster_api::PutManifest {
    let bytes = format!(r#"{{"schemaVersion":2,"index":"{tag_name}"}}"#).into_bytes();
    cluster_api::PutManifest {
        repo: repo(repo_name),
        digest: Digest::sha256_of(&bytes),
        media_type: media_type::OCI_INDEX.to_owned(),
        bytes,
        tag: Some(tag(tag_name)),
        blobs: Vec::new(),
        manifests: children.iter().map(|digest| (*digest).clone()).collect(),
        subject: None,
        referrer: None,
    }
}

async fn store_with_proxy(dir: &TempDir) -> Applier {
    let mut store = Applier::new(open(dir));
    assert_eq!(store.apply(set_upload_key()).await, DONE);
    assert_eq!(
        store.apply(Command::PutProxy(upstream("hub", "hub"))).await,
        DONE
    );
    store
}

#[tokio::test]
async fn proxies_are_kept_replaced_and_removed_by_id() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_proxy(&dir).await;
    let overlapping = store
        .apply(Command::PutProxy(upstream("other", "hub/library")))
        .await;
    assert!(matches!(overlapping, Err(MetaError::Invalid(ref m)) if m.contains("overlaps")));
    let moved = ProxyUpstream {
        tag_ttl_secs: 5,
        ..upstream("hub", "hub")
    };
    assert_eq!(store.apply(Command::PutProxy(moved.clone())).await, DONE);
    assert_eq!(store.store.reader.proxies().expect("read"), vec![moved]);
    let unknown = store
        .apply(Command::DeleteProxy { id: "nope".into() })
        .await;
    assert!(matches!(unknown, Err(MetaError::Invalid(_))));
    assert_eq!(
        store.apply(Command::DeleteProxy { id: "hub".into() }).await,
        DONE
    );
    assert_eq!(store.store.reader.proxies().expect("read"), vec![]);
}

#[tokio::test]
async fn a_cached_manifest_is_stored_before_its_blobs_and_counts_them_when_they_come() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_proxy(&dir).await;
    let (config, layer) = (digest("config"), digest("layer"));
    let image = manifest(
        "hub/library/app",
        "image",
        Some("v1"),
        &[&config, &layer],
        None,
    );

    // Outside a proxy prefix, only an ordinary PUT (whose blobs must be there) is taken.
    let outside = manifest("team/app", "image", Some("v1"), &[&config], None);
    let refused = store.apply(cached(&outside, T0_MS)).await;
    assert!(matches!(refused, Err(MetaError::Invalid(ref m)) if m.contains("proxy")));
    assert!(matches!(
        store.apply(put(&image, T0_MS)).await,
        Err(MetaError::ManifestBlobUnknown(_))
    ));

    assert_eq!(store.apply(cached(&image, T0_MS)).await, DONE);
    let reader = &store.store.reader;
    consistent(reader);
    let by_tag = reader
        .get_manifest(&repo("hub/library/app"), &Reference::Tag(tag("v1")))
        .expect("the tag reads");
    assert_eq!(by_tag.digest, image.digest);
    assert!(reader.stat_blob(&repo("hub/library/app"), &config).is_err());

    // The cache brings the config: its link is used by the manifest from the start, so a sweep
    // long after the upload grace keeps it.
    assert_eq!(
        store
            .apply(commit("hub/library/app", "config", None, T0_MS + 1))
            .await,
        DONE
    );
    consistent(&store.store.reader);
    let report = swept(
        store
            .apply(Command::Sweep {
                now_ms: T0_MS + 10_000_000,
                links_pushed_before_ms: T0_MS + 9_000_000,
                fences_before_ms: T0_MS,
                limit: 100,
            })
            .await,
    );
    assert_eq!(report.links_removed, 0, "{report:?}");
    assert!(store
        .store
        .reader
        .stat_blob(&repo("hub/library/app"), &config)
        .is_ok());
    // A link the manifest uses cannot be unlinked on its own.
    let unlink = store
        .apply(Command::UnlinkBlob {
            repo: repo("hub/library/app"),
            digest: config.clone(),
            now_ms: T0_MS + 2,
        })
        .await;
    assert!(matches!(unlink, Err(MetaError::Denied(_))));

    // The manifest goes (its cache entry expired): the config loses its reference, the layer
    // that never came leaves no pending count behind.
    assert_eq!(
        store
            .apply(Command::DeleteManifest {
                repo: repo("hub/library/app"),
                digest: image.digest.clone(),
                now_ms: T0_MS + 3,
            })
            .await,
        DONE
    );
    consistent(&store.store.reader);
    let report = swept(
        store
            .apply(Command::Sweep {
                now_ms: T0_MS + 10_000_000,
                links_pushed_before_ms: T0_MS + 9_000_000,
                fences_before_ms: T0_MS,
                limit: 100,
            })
            .await,
    );
    assert_eq!(report.links_removed, 1, "{report:?}");
    consistent(&store.store.reader);
}

#[tokio::test]
async fn a_cached_index_takes_its_children_as_they_are_pulled() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_proxy(&dir).await;
    let amd = manifest("hub/app", "amd64", None, &[&digest("amd-layer")], None);
    let arm = manifest("hub/app", "arm64", None, &[&digest("arm-layer")], None);
    let all = index("hub/app", "v1", &[&amd.digest, &arm.digest]);
    assert_eq!(store.apply(cached(&all, T0_MS)).await, DONE);
    consistent(&store.store.reader);

    // A client pulls the amd64 child by digest, then its layer.
    assert_eq!(store.apply(cached(&amd, T0_MS + 1)).await, DONE);
    consistent(&store.store.reader);
    assert_eq!(
        store
            .apply(commit("hub/app", "amd-layer", None, T0_MS + 2))
            .await,
        DONE
    );
    consistent(&store.store.reader);
    // The child is listed by the index: it cannot go on its own.
    let alone = store
        .apply(Command::DeleteManifest {
            repo: repo("hub/app"),
            digest: amd.digest.clone(),
            now_ms: T0_MS + 3,
        })
        .await;
    assert!(matches!(alone, Err(MetaError::Denied(_))));
    // The index goes: the untagged child it held goes with it, and the arm64 child that was
    // never pulled leaves nothing pending.
    assert_eq!(
        store
            .apply(Command::DeleteManifest {
                repo: repo("hub/app"),
                digest: all.digest.clone(),
                now_ms: T0_MS + 4,
            })
            .await,
        DONE
    );
    consistent(&store.store.reader);
    let gone = store
        .store
        .reader
        .get_manifest(&repo("hub/app"), &Reference::Digest(amd.digest.clone()));
    assert!(matches!(gone, Err(MetaError::ManifestUnknown(_))));
}

#[tokio::test]
async fn the_same_manifest_in_an_ordinary_repository_keeps_its_own_counts() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_proxy(&dir).await;
    let layer = digest("shared-layer");
    let cached_image = manifest("hub/app", "same", Some("v1"), &[&layer], None);
    assert_eq!(store.apply(cached(&cached_image, T0_MS)).await, DONE);
    // The same bytes pushed to an ordinary repository, blob first, as a client does.
    assert_eq!(
        store
            .apply(commit("team/app", "shared-layer", None, T0_MS + 1))
            .await,
        DONE
    );
    let pushed = manifest("team/app", "same", Some("v1"), &[&layer], None);
    assert_eq!(store.apply(put(&pushed, T0_MS + 2)).await, DONE);
    consistent(&store.store.reader);
    // A mount from the cache's repository brings the blob there (it now holds a copy).
    let mounted = store
        .apply(Command::MountBlob {
            repo: repo("hub/app"),
            digest: layer.clone(),
            from: repo("team/app"),
            now_ms: T0_MS + 3,
        })
        .await;
    assert!(matches!(mounted, Ok(CommandOutput::Mounted(Some(_)))));
    consistent(&store.store.reader);
}

#[tokio::test]
async fn idle_cached_manifests_are_evicted_unless_pulled_since_the_plan() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = store_with_proxy(&dir).await;
    let layer = digest("layer");
    let image = manifest("hub/app", "image", Some("v1"), &[&layer], None);
    let other = manifest("hub/app", "other", Some("v2"), &[], None);
    assert_eq!(store.apply(cached(&image, T0_MS)).await, DONE);
    assert_eq!(store.apply(cached(&other, T0_MS)).await, DONE);
    assert_eq!(
        store.apply(commit("hub/app", "layer", None, T0_MS)).await,
        DONE
    );
    // An ordinary repository's manifest is never the cache's to evict.
    assert_eq!(
        store.apply(commit("team/app", "layer", None, T0_MS)).await,
        DONE
    );
    let own = manifest("team/app", "image", Some("v1"), &[&layer], None);
    assert_eq!(store.apply(put(&own, T0_MS)).await, DONE);

    // The upstream's cache TTL is an hour: nothing is idle before it has passed.
    let reader = &store.store.reader;
    assert!(reader
        .idle_cached(T0_MS + 3_600_000, 100)
        .expect("plan")
        .is_empty());
    let idle = reader.idle_cached(T0_MS + 3_600_001, 100).expect("plan");
    assert_eq!(idle.len(), 2, "{idle:?}");
    assert!(idle
        .iter()
        .all(|(repo, _, seen)| repo.as_str() == "hub/app" && *seen == T0_MS));

    // `image` is pulled after the plan was made: it stays; `other` goes.
    let touch = Command::TouchCached {
        entries: vec![
            (repo("hub/app"), image.digest.clone()),
            (repo("team/app"), own.digest.clone()),
        ],
        now_ms: T0_MS + 3_600_500,
    };
    assert_eq!(store.apply(touch).await, DONE);
    let evict = Command::EvictCached {
        entries: idle,
        now_ms: T0_MS + 3_600_600,
    };
    assert_eq!(store.apply(evict).await, Ok(CommandOutput::Retained(1)));
    consistent(&store.store.reader);
    let reader = &store.store.reader;
    assert!(reader
        .get_manifest(&repo("hub/app"), &Reference::Tag(tag("v1")))
        .is_ok());
    assert!(matches!(
        reader.get_manifest(&repo("hub/app"), &Reference::Tag(tag("v2"))),
        Err(MetaError::ManifestUnknown(_))
    ));
    // The touch moved `image`'s clock, not the ordinary repository's (it has none).
    let idle = reader
        .idle_cached(T0_MS + 3_600_001 + 500, 100)
        .expect("plan");
    assert!(idle.is_empty(), "{idle:?}");
    let idle = reader.idle_cached(T0_MS + 7_300_000, 100).expect("plan");
    assert_eq!(
        idle,
        vec![(repo("hub/app"), image.digest.clone(), T0_MS + 3_600_500)]
    );

    // A TTL of 0 keeps cached content for good.
    let keep = ProxyUpstream {
        cache_ttl_secs: 0,
        ..upstream("hub", "hub")
    };
    assert_eq!(store.apply(Command::PutProxy(keep)).await, DONE);
    assert!(store
        .store
        .reader
        .idle_cached(T0_MS + 100_000_000, 100)
        .expect("plan")
        .is_empty());
}

#[tokio::test]
async fn replication_status_is_kept_per_existing_rule_and_goes_with_it() {
    use cluster_api::{ReplicationMode, ReplicationRule, ReplicationStatus};
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let rule = ReplicationRule {
        id: "dr".into(),
        mode: ReplicationMode::Push,
        url: "https://dr.example".into(),
        repositories: "prod/**".into(),
        tags: None,
        deletes: true,
        username: None,
        password: None,
        ca_pem: None,
    };
    let status = |rule: &str| ReplicationStatus {
        rule: rule.into(),
        last_run_ms: T0_MS,
        last_success_ms: Some(T0_MS),
        errors: (0..50).map(|n| format!("error {n}")).collect(),
        ..ReplicationStatus::default()
    };
    // No rule yet: nothing is kept.
    assert_eq!(
        store.apply(Command::RecordReplication(status("dr"))).await,
        DONE
    );
    assert!(store
        .store
        .reader
        .replication_status()
        .expect("read")
        .is_empty());
    assert_eq!(store.apply(Command::PutReplicationRule(rule)).await, DONE);
    assert_eq!(
        store.apply(Command::RecordReplication(status("dr"))).await,
        DONE
    );
    assert_eq!(
        store
            .apply(Command::RecordReplication(status("other")))
            .await,
        DONE
    );
    let kept = store.store.reader.replication_status().expect("read");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].errors.len(), cluster_api::MAX_STATUS_ERRORS);
    assert_eq!(
        store
            .apply(Command::DeleteReplicationRule { id: "dr".into() })
            .await,
        DONE
    );
    assert!(store
        .store
        .reader
        .replication_status()
        .expect("read")
        .is_empty());
}

#[tokio::test]
async fn changes_under_a_push_rule_join_its_backlog_until_copied() {
    use cluster_api::{ReplicationMode, ReplicationRule};
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    assert_eq!(store.apply(set_upload_key()).await, DONE);
    let rule = |id: &str, mode| ReplicationRule {
        id: id.into(),
        mode,
        url: "https://dr.example".into(),
        repositories: "prod/**".into(),
        tags: None,
        deletes: true,
        username: None,
        password: None,
        ca_pem: None,
    };
    assert_eq!(
        store
            .apply(Command::PutReplicationRule(rule(
                "dr",
                ReplicationMode::Push
            )))
            .await,
        DONE
    );
    // A pull rule's destination is this registry: its changes are not copied anywhere.
    assert_eq!(
        store
            .apply(Command::PutReplicationRule(rule(
                "in",
                ReplicationMode::Pull
            )))
            .await,
        DONE
    );
    let layer = digest("layer");
    for repo_name in ["prod/app", "dev/app"] {
        assert_eq!(
            store.apply(commit(repo_name, "layer", None, T0_MS)).await,
            DONE
        );
        let image = manifest(repo_name, "image", Some("v1"), &[&layer], None);
        assert_eq!(store.apply(put(&image, T0_MS)).await, DONE);
    }
    let backlog = store.store.reader.replication_backlog(100).expect("read");
    assert_eq!(backlog.len(), 1, "{backlog:?}");
    let (rule_id, repo_name, seq) = backlog[0].clone();
    assert_eq!((rule_id.as_str(), repo_name.as_str()), ("dr", "prod/app"));
    // A change after the copy started keeps it on the backlog.
    assert_eq!(
        store
            .apply(Command::DeleteTag {
                repo: repo("prod/app"),
                tag: tag("v1"),
            })
            .await,
        DONE
    );
    let done = |seq| Command::ReplicationDone {
        rule: "dr".into(),
        repo: repo("prod/app"),
        seq,
    };
    assert_eq!(store.apply(done(seq)).await, DONE);
    let backlog = store.store.reader.replication_backlog(100).expect("read");
    assert_eq!(backlog.len(), 1);
    assert!(backlog[0].2 > seq);
    assert_eq!(store.apply(done(backlog[0].2)).await, DONE);
    assert!(store
        .store
        .reader
        .replication_backlog(100)
        .expect("read")
        .is_empty());
    // A rule removed takes its backlog with it.
    let image = manifest("prod/app", "again", Some("v2"), &[&layer], None);
    assert_eq!(store.apply(put(&image, T0_MS)).await, DONE);
    assert_eq!(
        store
            .store
            .reader
            .replication_backlog(100)
            .expect("read")
            .len(),
        1
    );
    assert_eq!(
        store
            .apply(Command::DeleteReplicationRule { id: "dr".into() })
            .await,
        DONE
    );
    assert!(store
        .store
        .reader
        .replication_backlog(100)
        .expect("read")
        .is_empty());
}

//! Reference counts, garbage collection, quotas and usage, applied through the state machine.
//! After every step the kept counts are recomputed from the graph (`check_consistency`) and must
//! agree.

mod common;

use cluster_api::{DoomedBlob, MetaError, NamespaceUsage, PutManifest, SweepReport};
use common::*;
use meta_store::{Command, CommandOutput, StateReader};
use oci_model::{Digest, Reference};
use tempfile::TempDir;

const DONE: Result<CommandOutput, MetaError> = Ok(CommandOutput::Done);
fn delete(repo_name: &str, digest: &Digest) -> Command {
    Command::DeleteManifest {
        repo: repo(repo_name),
        digest: digest.clone(),
        now_ms: T0_MS,
    }
}

fn sweep(links_before_ms: u64) -> Command {
    Command::Sweep {
        now_ms: links_before_ms,
        links_pushed_before_ms: links_before_ms,
        fences_before_ms: 0,
        limit: 100,
    }
}

fn usage(reader: &StateReader, namespace: &str) -> NamespaceUsage {
    reader
        .usage(Some(namespace))
        .expect("usage")
        .pop()
        .expect("one namespace")
}

fn doomed(reader: &StateReader) -> Vec<DoomedBlob> {
    reader.doomed_blobs(NODE, None, 100).expect("doomed blobs")
}

#[tokio::test]
async fn counts_follow_pushes_and_deletes_and_gc_waits_for_the_grace() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let reader = store.store.reader.clone();
    let image = manifest(
        "team/a",
        "image",
        Some("v1"),
        &[&digest("config"), &digest("layer")],
        None,
    );
    let mut image_b = image.clone();
    image_b.repo = repo("team/b");
    let outcomes = store
        .apply_all(vec![
            commit("team/a", "config", None, T0_MS),
            commit("team/a", "layer", None, T0_MS),
            put(&image, T0_MS),
            Command::MountBlob {
                repo: repo("team/b"),
                digest: digest("config"),
                from: repo("team/a"),
                now_ms: T0_MS,
            },
            Command::MountBlob {
                repo: repo("team/b"),
                digest: digest("layer"),
                from: repo("team/a"),
                now_ms: T0_MS,
            },
            put(&image_b, T0_MS),
        ])
        .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    consistent(&reader);
    let blobs = ("config".len() + "layer".len()) as u64;
    let manifest_bytes = image.bytes.len() as u64;
    let team = usage(&reader, "team");
    assert_eq!(team.logical_bytes, 2 * (blobs + manifest_bytes));
    assert_eq!(team.physical_bytes, blobs + manifest_bytes);
    assert_eq!((team.blobs, team.manifests), (2, 1));

    // A blob a manifest uses cannot be deleted on its own.
    let unlink = |repo_name: &str| Command::UnlinkBlob {
        repo: repo(repo_name),
        digest: digest("layer"),
        now_ms: T0_MS,
    };
    assert!(matches!(
        store.apply(unlink("team/a")).await,
        Err(MetaError::Denied(_))
    ));

    // Deleting the manifest in team/a leaves its blob links unreferenced: gone only after the
    // grace, and the blobs stay while team/b links them.
    assert_eq!(store.apply(delete("team/a", &image.digest)).await, DONE);
    consistent(&reader);
    let early = swept(store.apply(sweep(T0_MS)).await);
    assert_eq!(early, SweepReport::default());
    assert!(reader.stat_blob(&repo("team/a"), &digest("layer")).is_ok());
    let later = swept(store.apply(sweep(T0_MS + 1)).await);
    assert_eq!((later.links_removed, later.blobs_doomed), (2, 0));
    assert!(reader.stat_blob(&repo("team/a"), &digest("layer")).is_err());
    assert!(reader.stat_blob(&repo("team/b"), &digest("layer")).is_ok());
    assert!(doomed(&reader).is_empty());
    consistent(&reader);
    let team = usage(&reader, "team");
    assert_eq!(team.logical_bytes, blobs + manifest_bytes);
    assert_eq!(team.physical_bytes, blobs + manifest_bytes);

    // The last links go: both blobs are doomed, the manifest record is gone, usage is zero.
    assert_eq!(store.apply(delete("team/b", &image.digest)).await, DONE);
    let last = swept(store.apply(sweep(T0_MS + 1)).await);
    assert_eq!((last.links_removed, last.blobs_doomed), (2, 2));
    consistent(&reader);
    let mut doomed_digests: Vec<Digest> = doomed(&reader).into_iter().map(|d| d.digest).collect();
    doomed_digests.sort();
    let mut expected = vec![digest("config"), digest("layer")];
    expected.sort();
    assert_eq!(doomed_digests, expected);
    assert_eq!(
        usage(&reader, "team"),
        NamespaceUsage {
            namespace: "team".to_owned(),
            ..NamespaceUsage::default()
        }
    );
    assert!(reader.list_blobs(None, 10).expect("list").is_empty());
    assert_eq!(reader.usage(None).expect("usage"), vec![]);

    // A copy repair made while the blob was being collected is deleted with the others.
    let late_copy = Command::AddBlobReplicas {
        digest: digest("layer"),
        nodes: vec![NODE + 1],
    };
    assert_eq!(
        store.apply(late_copy).await,
        Err(MetaError::BlobUnknown(digest("layer")))
    );
    let on_other = reader.doomed_blobs(NODE + 1, None, 10).expect("doomed");
    assert_eq!(on_other.len(), 1);
    assert_eq!(on_other[0].digest, digest("layer"));
}

#[tokio::test]
async fn a_blob_a_deleted_manifest_used_gets_a_fresh_grace() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let reader = store.store.reader.clone();
    let image = manifest("a", "image", Some("v1"), &[&digest("layer")], None);
    store
        .apply(commit("a", "layer", None, T0_MS))
        .await
        .expect("commit");
    store.apply(put(&image, T0_MS)).await.expect("put");
    // Deleted an hour after the push: the layer stays another grace from the delete, so a
    // client that has just seen it (HEAD 200) can still push a manifest using it.
    let hour = 3_600_000;
    let delete_late = Command::DeleteManifest {
        repo: repo("a"),
        digest: image.digest.clone(),
        now_ms: T0_MS + hour,
    };
    assert_eq!(store.apply(delete_late).await, DONE);
    let report = swept(store.apply(sweep(T0_MS + hour)).await);
    assert_eq!(report.links_removed, 0);
    assert!(reader.stat_blob(&repo("a"), &digest("layer")).is_ok());
    let report = swept(store.apply(sweep(T0_MS + hour + 1)).await);
    assert_eq!((report.links_removed, report.blobs_doomed), (1, 1));
    consistent(&reader);
}

#[tokio::test]
async fn deletion_is_confirmed_per_generation_and_a_push_brings_a_blob_back() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let reader = store.store.reader.clone();
    let unlink = |content: &str| Command::UnlinkBlob {
        repo: repo("a"),
        digest: digest(content),
        now_ms: T0_MS,
    };
    let confirm = |blobs: Vec<(Digest, u64)>| Command::ConfirmBlobDeletions {
        node: NODE,
        blobs,
        now_ms: T0_MS + 10_000,
    };
    store
        .apply(commit("a", "one", None, T0_MS))
        .await
        .expect("commit");
    store
        .apply(commit("a", "two", None, T0_MS))
        .await
        .expect("commit");
    assert_eq!(store.apply(unlink("one")).await, DONE);
    assert_eq!(store.apply(unlink("two")).await, DONE);
    let mut listed = doomed(&reader);
    listed.sort_by(|a, b| a.digest.cmp(&b.digest));
    assert_eq!(listed.len(), 2);
    assert!(reader
        .doomed_blobs(NODE + 1, None, 10)
        .expect("other node")
        .is_empty());
    let generation = |content: &str| {
        listed
            .iter()
            .find(|blob| blob.digest == digest(content))
            .expect("doomed")
            .generation
    };

    // "two" is pushed again before the node asks: it comes back, and the old generation's
    // deletion is refused. A wrong generation is refused too.
    store
        .apply(commit("a", "two", None, T0_MS + 5_000))
        .await
        .expect("re-push");
    assert!(reader.stat_blob(&repo("a"), &digest("two")).is_ok());
    let verdicts = store
        .apply(confirm(vec![
            (digest("one"), generation("one") + 100),
            (digest("one"), generation("one")),
            (digest("two"), generation("two")),
        ]))
        .await;
    assert_eq!(
        verdicts,
        Ok(CommandOutput::Confirmed(vec![false, true, false]))
    );
    // The node stays listed until it reports the purge (so a crash in between cannot leave an
    // orphan): a report for another generation changes nothing.
    let listed: Vec<Digest> = doomed(&reader)
        .into_iter()
        .map(|blob| blob.digest)
        .collect();
    assert_eq!(listed, vec![digest("one")]);
    let purged = |generation| Command::BlobsPurged {
        node: NODE,
        blobs: vec![(digest("one"), generation)],
    };
    assert_eq!(store.apply(purged(generation("one") + 100)).await, DONE);
    assert_eq!(doomed(&reader).len(), 1);
    assert_eq!(store.apply(purged(generation("one"))).await, DONE);
    assert!(doomed(&reader).is_empty());
    consistent(&reader);

    // "one" was deleted on the node at T0+10s. An upload that started before that cannot vouch
    // for its copy: the commit is refused, and its copy is doomed so the node removes it.
    store.apply(set_upload_key()).await.expect("upload key");
    let refused = store
        .apply(commit("a", "one", Some(T0_MS), T0_MS + 20_000))
        .await;
    assert!(matches!(refused, Err(MetaError::Retry(_))), "{refused:?}");
    assert!(reader.stat_blob(&repo("a"), &digest("one")).is_err());
    let again = doomed(&reader);
    assert_eq!(again.len(), 1);
    assert!(again[0].generation > generation("one"));
    // An upload that started after the deletion (and its margin) is trusted.
    assert_eq!(
        store
            .apply(commit("a", "one", Some(T0_MS + 20_000), T0_MS + 21_000))
            .await,
        DONE
    );
    assert!(reader.stat_blob(&repo("a"), &digest("one")).is_ok());
    assert!(doomed(&reader).is_empty());
    consistent(&reader);
}

#[tokio::test]
async fn an_index_keeps_its_children_and_takes_them_when_it_goes() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let reader = store.store.reader.clone();
    let amd64 = manifest("app", "amd64", None, &[&digest("layer-amd64")], None);
    let arm64 = manifest("app", "arm64", None, &[&digest("layer-arm64")], None);
    let tagged_child = manifest(
        "app",
        "tagged",
        Some("solo"),
        &[&digest("layer-amd64")],
        None,
    );
    let mut index = manifest("app", "index", Some("latest"), &[], None);
    index.manifests = vec![
        amd64.digest.clone(),
        arm64.digest.clone(),
        tagged_child.digest.clone(),
    ];
    let signature = manifest(
        "app",
        "sig",
        None,
        &[],
        Some((&index.digest, "application/sig")),
    );
    let mut sbom = manifest(
        "app",
        "sbom",
        Some("sbom"),
        &[],
        Some((&index.digest, "application/sbom")),
    );
    sbom.tag = Some(tag("sbom"));
    let outcomes = store
        .apply_all(vec![
            commit("app", "layer-amd64", None, T0_MS),
            commit("app", "layer-arm64", None, T0_MS),
            put(&amd64, T0_MS),
            put(&arm64, T0_MS),
            put(&tagged_child, T0_MS),
            put(&index, T0_MS),
            put(&signature, T0_MS),
            put(&sbom, T0_MS),
        ])
        .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    consistent(&reader);

    // Garbage collection and retention never take a child of a live index; neither can a delete.
    assert!(matches!(
        store.apply(delete("app", &amd64.digest)).await,
        Err(MetaError::Denied(_))
    ));
    let report = swept(store.apply(sweep(u64::MAX)).await);
    assert_eq!(report.links_removed, 0);
    for child in [&amd64, &arm64] {
        assert!(reader
            .get_manifest(&repo("app"), &Reference::Digest(child.digest.clone()))
            .is_ok());
    }

    // The index goes: its untagged children and untagged referrer go with it in the same entry;
    // the tagged child and the tagged referrer stay.
    assert_eq!(store.apply(delete("app", &index.digest)).await, DONE);
    consistent(&reader);
    let present = |digest: &Digest| {
        reader
            .get_manifest(&repo("app"), &Reference::Digest(digest.clone()))
            .is_ok()
    };
    assert!(!present(&amd64.digest) && !present(&arm64.digest) && !present(&signature.digest));
    assert!(present(&tagged_child.digest) && present(&sbom.digest));
    let referrers = reader
        .list_referrers(&repo("app"), &index.digest, None)
        .expect("referrers");
    assert_eq!(referrers.len(), 1, "the tagged sbom stays listed");
    // layer-arm64 lost its only manifest; layer-amd64 is still used by the tagged child.
    let report = swept(store.apply(sweep(u64::MAX)).await);
    assert_eq!((report.links_removed, report.blobs_doomed), (1, 1));
    assert_eq!(doomed(&reader)[0].digest, digest("layer-arm64"));
    consistent(&reader);
}

#[tokio::test]
async fn quotas_refuse_growth_at_commit_and_never_what_the_namespace_holds() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let reader = store.store.reader.clone();
    let quota = |bytes: Option<u64>| Command::SetQuota {
        namespace: "team".to_owned(),
        bytes,
    };
    assert!(matches!(
        store
            .apply(Command::SetQuota {
                namespace: "team/app".to_owned(),
                bytes: Some(1),
            })
            .await,
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(store.apply(quota(Some(10))).await, DONE);
    // Exactly at the quota is fine; one byte over is not.
    assert_eq!(
        store
            .apply(commit("team/a", "0123456789", None, T0_MS))
            .await,
        DONE
    );
    store.apply(set_upload_key()).await.expect("upload key");
    let refused = store.apply(commit("team/a", "x", Some(T0_MS), T0_MS)).await;
    assert!(
        matches!(&refused, Err(MetaError::Denied(message)) if message.contains("quota")),
        "{refused:?}"
    );
    // The refused blob's copy is doomed (the node deletes it).
    assert_eq!(doomed(&reader)[0].digest, digest("x"));
    // What the namespace already holds costs nothing: a second repository, the same blob.
    assert_eq!(
        store
            .apply(commit("team/b", "0123456789", None, T0_MS))
            .await,
        DONE
    );
    // Another namespace is not limited.
    assert_eq!(store.apply(commit("other/a", "x", None, T0_MS)).await, DONE);
    let team = usage(&reader, "team");
    assert_eq!(
        (team.physical_bytes, team.logical_bytes, team.quota_bytes),
        (10, 20, Some(10))
    );
    // Mounting a new blob in counts too.
    assert!(matches!(
        store
            .apply(Command::MountBlob {
                repo: repo("team/a"),
                digest: digest("x"),
                from: repo("other/a"),
                now_ms: T0_MS,
            })
            .await,
        Err(MetaError::Denied(_))
    ));
    assert_eq!(store.apply(quota(None)).await, DONE);
    assert_eq!(usage(&reader, "team").quota_bytes, None);
    consistent(&reader);
}

#[tokio::test]
async fn tokens_older_than_the_fence_horizon_never_commit() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let reader = store.store.reader.clone();
    store.apply(set_upload_key()).await.expect("upload key");
    let (old, fresh) = (token("a", 1, T0_MS), token("a", 2, T0_MS + 100_000));
    let ids = [old.clone(), fresh.clone(), upload_id(3)];
    // Open: tokens (not ids of another shape) started since the given time.
    assert_eq!(
        reader.open_uploads(&ids, 0),
        Ok(vec![old.clone(), fresh.clone()])
    );
    assert_eq!(
        reader.open_uploads(&ids, T0_MS + 1),
        Ok(vec![fresh.clone()])
    );

    // A sweep dropping the fences before T0 + 50 s moves the horizon there: the old token can
    // no longer be checked against a fence it dropped, so it is over, in meta as on the nodes.
    let horizon = Command::Sweep {
        now_ms: T0_MS + 60_000,
        links_pushed_before_ms: 0,
        fences_before_ms: T0_MS + 50_000,
        limit: 100,
    };
    swept(store.apply(horizon).await);
    assert_eq!(reader.open_uploads(&ids, 0), Ok(vec![fresh]));
    let refused = store
        .apply(commit("a", "late", Some(T0_MS), T0_MS + 61_000))
        .await;
    assert!(
        matches!(refused, Err(MetaError::UploadUnknown(_))),
        "{refused:?}"
    );
    assert!(reader.stat_blob(&repo("a"), &digest("late")).is_err());
    // Its node's copy is doomed, never left unknown to meta; a valid push brings it back.
    assert_eq!(doomed(&reader)[0].digest, digest("late"));
    assert_eq!(
        store
            .apply(commit("a", "late", Some(T0_MS + 100_000), T0_MS + 101_000))
            .await,
        DONE
    );
    // The horizon never moves back.
    let earlier = Command::Sweep {
        now_ms: T0_MS + 70_000,
        links_pushed_before_ms: 0,
        fences_before_ms: T0_MS,
        limit: 100,
    };
    swept(store.apply(earlier).await);
    let refused = store
        .apply(commit("a", "late", Some(T0_MS), T0_MS + 71_000))
        .await;
    assert!(
        matches!(refused, Err(MetaError::UploadUnknown(_))),
        "{refused:?}"
    );
    assert!(doomed(&reader).is_empty(), "a live blob keeps its copies");
    consistent(&reader);
}

fn plan(reader: &StateReader, now_ms: u64, all: bool) -> Vec<cluster_api::RetentionAction> {
    reader.retention_plan(now_ms, all).expect("plan")
}

fn untagged_tags(actions: &[cluster_api::RetentionAction]) -> Vec<String> {
    let mut tags: Vec<String> = actions
        .iter()
        .filter_map(|action| match action {
            cluster_api::RetentionAction::Untag { tag, .. } => Some(tag.to_string()),
            _ => None,
        })
        .collect();
    tags.sort();
    tags
}

#[tokio::test]
async fn retention_spares_immutable_tags_index_children_and_referrers_and_loses_races() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let reader = store.store.reader.clone();
    store
        .apply(commit("ci/app", "layer", None, T0_MS))
        .await
        .expect("commit");
    // Tags pushed a second apart: v1 (immutable), b1, b2, b3; an index over two untagged
    // children; an untagged signature of b3.
    let mut images = Vec::new();
    for (i, tag_name) in ["v1", "b1", "b2", "b3"].iter().enumerate() {
        let image = manifest(
            "ci/app",
            tag_name,
            Some(tag_name),
            &[&digest("layer")],
            None,
        );
        store
            .apply(put(&image, T0_MS + i as u64 * 1000))
            .await
            .expect("put");
        images.push(image);
    }
    let children: Vec<PutManifest> = ["amd64", "arm64"]
        .iter()
        .map(|label| manifest("ci/app", label, None, &[&digest("layer")], None))
        .collect();
    for child in &children {
        store.apply(put(child, T0_MS)).await.expect("child");
    }
    let mut index = manifest("ci/app", "index", None, &[], None);
    index.manifests = children.iter().map(|child| child.digest.clone()).collect();
    store.apply(put(&index, T0_MS)).await.expect("index");
    let signature = manifest(
        "ci/app",
        "sig",
        None,
        &[],
        Some((&images[3].digest, "application/sig")),
    );
    store
        .apply(put(&signature, T0_MS))
        .await
        .expect("signature");
    store
        .apply(Command::ChangeAuth(
            cluster_api::AuthChange::PutImmutableTagRule(cluster_api::ImmutableTagRule {
                id: "releases".to_owned(),
                repositories: "ci/**".to_owned(),
                tags: "v*".to_owned(),
            }),
        ))
        .await
        .expect("immutable rule");
    let rule = cluster_api::RetentionRule {
        id: "ci".to_owned(),
        repositories: "ci/**".to_owned(),
        keep_last: Some(1),
        keep_tags: None,
        untagged_older_than_secs: Some(60),
        dry_run: true,
    };
    store
        .apply(Command::PutRetentionRule(rule.clone()))
        .await
        .expect("rule");
    let later = T0_MS + 3_600_000;
    assert!(
        plan(&reader, later, false).is_empty(),
        "a dry-run rule is not enforced"
    );
    let actions = plan(&reader, later, true);
    // Newest first: b3 is kept by rank; v1 is immutable; b1 and b2 go.
    assert_eq!(untagged_tags(&actions), ["b1", "b2"]);
    let deleted: Vec<Digest> = actions
        .iter()
        .filter_map(|action| match action {
            cluster_api::RetentionAction::DeleteUntagged { digest, .. } => Some(digest.clone()),
            _ => None,
        })
        .collect();
    // The untagged index goes (its children with it, by cascade, not by the plan); the
    // children are referenced and the signature's subject is present, so neither is planned.
    for spared in [&children[0].digest, &children[1].digest, &signature.digest] {
        assert!(!deleted.contains(spared), "{spared} must not be planned");
    }
    assert!(deleted.contains(&index.digest));
    assert!(deleted.contains(&images[1].digest) && deleted.contains(&images[2].digest));

    // b2 is pushed again after the plan was made: that action no longer holds and is skipped.
    store
        .apply(put(&images[2], T0_MS + 5_000))
        .await
        .expect("re-push b2");
    let applied = store
        .apply(Command::ApplyRetention {
            actions,
            now_ms: later,
        })
        .await;
    // b1's untag, b1's delete and the index's delete apply; b2's untag and delete do not.
    assert_eq!(applied, Ok(CommandOutput::Retained(3)));
    let tags = reader
        .list_tags(&repo("ci/app"), None, 10)
        .expect("tags")
        .items;
    assert_eq!(tags, ["b2", "b3", "v1"]);
    for gone in [&images[1].digest, &index.digest, &children[0].digest] {
        assert!(reader
            .get_manifest(&repo("ci/app"), &Reference::Digest(gone.clone()))
            .is_err());
    }
    assert!(reader
        .get_manifest(
            &repo("ci/app"),
            &Reference::Digest(signature.digest.clone())
        )
        .is_ok());
    consistent(&reader);
}

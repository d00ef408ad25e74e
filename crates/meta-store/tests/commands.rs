//! Every command's semantics and error cases, applied through the state machine and observed
//! through the reader; idempotent re-application; survival across a reopen.

mod common;

use cluster_api::{MetaError, Page};
use common::*;
use meta_store::{Command, CommandOutput};
use oci_model::Reference;
use tempfile::TempDir;

const DONE: Result<CommandOutput, MetaError> = Ok(CommandOutput::Done);

fn page(items: &[&str], more: bool) -> Page {
    Page {
        items: items.iter().map(|item| item.to_string()).collect(),
        more,
    }
}

#[tokio::test]
async fn upload_tokens() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let reader = store.store.reader.clone();
    assert_eq!(reader.upload_key(), Ok(None));
    let commit = |name: &str, upload| Command::CommitBlob {
        now_ms: 1,
        repo: repo(name),
        blob: blob("layer", &[1]),
        upload: Some(upload),
    };
    // Before any key is set no token verifies.
    let early = token("team/app", 1, 1_000);
    let unknown = |id: &cluster_api::UploadId| Err(MetaError::UploadUnknown(id.to_string()));
    assert_eq!(
        store.apply(commit("team/app", early.clone())).await,
        unknown(&early)
    );

    // The first key set stays: a second proposal (another leader racing) changes nothing.
    assert_eq!(store.apply(set_upload_key()).await, DONE);
    let other_key = Command::SetUploadKey { key: vec![9; 32] };
    assert_eq!(store.apply(other_key).await, DONE);
    assert_eq!(reader.upload_key(), Ok(Some(UPLOAD_KEY.to_vec())));

    // A token of another repository, or signed with another key, does not commit.
    let elsewhere = token("other", 1, 1_000);
    assert_eq!(
        store.apply(commit("team/app", elsewhere.clone())).await,
        unknown(&elsewhere)
    );
    let forged =
        cluster_api::UploadToken::mint(&[9; 32], &repo("team/app"), 7, 1_000, [1; 16]).id();
    assert_eq!(
        store.apply(commit("team/app", forged.clone())).await,
        unknown(&forged)
    );
    assert_eq!(reader.list_repositories(None, 10), Ok(page(&[], false)));

    assert_eq!(store.apply(commit("team/app", early.clone())).await, DONE);
    assert_eq!(
        reader.list_repositories(None, 10),
        Ok(page(&["team/app"], false))
    );
    // A commit retried with the same token is accepted again.
    assert_eq!(store.apply(commit("team/app", early)).await, DONE);

    // Entries of the retired session commands, still in old logs, apply as nothing.
    let retired = Command::DeleteUpload {
        repo: repo("team/app"),
        id: upload_id(1),
    };
    assert_eq!(store.apply(retired).await, DONE);
}

#[tokio::test]
async fn blob_commit_mount_unlink() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let layer = blob("layer", &[1, 2]);
    store.apply(set_upload_key()).await.expect("set upload key");
    let commit = |replicas: &[u64], upload| Command::CommitBlob {
        now_ms: 1,
        repo: repo("a"),
        blob: blob("layer", replicas),
        upload,
    };
    assert_eq!(
        store
            .apply(commit(&[1, 2], Some(token("a", 1, 1_000))))
            .await,
        DONE
    );
    let reader = store.store.reader.clone();
    assert_eq!(
        reader.stat_blob(&repo("a"), &layer.digest),
        Ok(layer.clone())
    );
    assert_eq!(
        reader.stat_blob(&repo("b"), &layer.digest),
        Err(MetaError::BlobUnknown(layer.digest.clone()))
    );
    assert_eq!(reader.list_repositories(None, 10), Ok(page(&["a"], false)));

    // A retried commit is accepted; new replicas join the end of the read order.
    assert_eq!(
        store
            .apply(commit(&[3, 1], Some(token("a", 1, 1_000))))
            .await,
        DONE
    );
    assert_eq!(
        reader
            .stat_blob(&repo("a"), &layer.digest)
            .map(|info| info.replicas),
        Ok(vec![1, 2, 3])
    );
    let wrong_size = Command::CommitBlob {
        now_ms: 1,
        repo: repo("a"),
        blob: cluster_api::BlobInfo {
            size: 999,
            ..layer.clone()
        },
        upload: None,
    };
    assert!(matches!(
        store.apply(wrong_size).await,
        Err(MetaError::Invalid(_))
    ));

    let mount = |to: &str, from: &str| Command::MountBlob {
        now_ms: 1,
        repo: repo(to),
        digest: layer.digest.clone(),
        from: repo(from),
    };
    assert_eq!(
        store.apply(mount("c", "nowhere")).await,
        Ok(CommandOutput::Mounted(None))
    );
    assert!(reader.stat_blob(&repo("c"), &layer.digest).is_err());
    let mounted = store.apply(mount("b", "a")).await;
    let expected = blob("layer", &[1, 2, 3]);
    assert_eq!(mounted, Ok(CommandOutput::Mounted(Some(expected.clone()))));
    assert_eq!(reader.stat_blob(&repo("b"), &layer.digest), Ok(expected));
    assert_eq!(
        reader.list_repositories(None, 10),
        Ok(page(&["a", "b"], false))
    );

    let unlink = Command::UnlinkBlob {
        now_ms: 1,
        repo: repo("a"),
        digest: layer.digest.clone(),
    };
    assert_eq!(store.apply(unlink.clone()).await, DONE);
    assert_eq!(
        store.apply(unlink).await,
        Err(MetaError::BlobUnknown(layer.digest.clone()))
    );
    assert!(reader.stat_blob(&repo("a"), &layer.digest).is_err());
    assert!(
        reader.stat_blob(&repo("b"), &layer.digest).is_ok(),
        "other links stay"
    );
}

#[tokio::test]
async fn manifests_tags_and_referrers() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let config = blob("config", &[1]);
    let image = manifest("app", "image", Some("v1"), &[&config.digest], None);

    // Nothing is stored when a referenced blob is not in the repository.
    let refused = store
        .apply(Command::PutManifest {
            put: Box::new(image.clone()),
            now_ms: 1,
        })
        .await;
    assert_eq!(
        refused,
        Err(MetaError::ManifestBlobUnknown(config.digest.clone()))
    );
    let reader = store.store.reader.clone();
    assert_eq!(reader.list_repositories(None, 10), Ok(page(&[], false)));

    // The blob committed earlier in the same apply call counts.
    let outcomes = store
        .apply_all(vec![
            Command::CommitBlob {
                now_ms: 1,
                repo: repo("app"),
                blob: config.clone(),
                upload: None,
            },
            Command::PutManifest {
                put: Box::new(image.clone()),
                now_ms: 1,
            },
        ])
        .await;
    assert_eq!(outcomes, vec![DONE, DONE]);
    let by_tag = reader
        .get_manifest(&repo("app"), &Reference::Tag(tag("v1")))
        .expect("by tag");
    assert_eq!(
        (by_tag.digest.clone(), by_tag.bytes.clone()),
        (image.digest.clone(), image.bytes.clone())
    );
    let by_digest = reader.get_manifest(&repo("app"), &Reference::Digest(image.digest.clone()));
    assert_eq!(by_digest, Ok(by_tag));
    let elsewhere = reader.get_manifest(&repo("other"), &Reference::Digest(image.digest.clone()));
    assert_eq!(
        elsewhere,
        Err(MetaError::ManifestUnknown(image.digest.to_string()))
    );

    // An index needs its children in the repository.
    let mut index = manifest("app", "index", Some("multi"), &[], None);
    index.manifests = vec![image.digest.clone(), digest("absent child")];
    let refused = store
        .apply(Command::PutManifest {
            put: Box::new(index.clone()),
            now_ms: 1,
        })
        .await;
    assert_eq!(
        refused,
        Err(MetaError::ManifestBlobUnknown(digest("absent child")))
    );
    index.manifests.pop();
    assert_eq!(
        store
            .apply(Command::PutManifest {
                put: Box::new(index.clone()),
                now_ms: 1
            })
            .await,
        DONE
    );

    // Referrers: listed by digest, filtered by artifact type; subject and descriptor go together.
    let signature = manifest(
        "app",
        "sig",
        None,
        &[],
        Some((&image.digest, "application/signature")),
    );
    let sbom = manifest(
        "app",
        "sbom",
        None,
        &[],
        Some((&image.digest, "application/sbom")),
    );
    assert_eq!(
        store
            .apply(Command::PutManifest {
                put: Box::new(signature.clone()),
                now_ms: 1
            })
            .await,
        DONE
    );
    assert_eq!(
        store
            .apply(Command::PutManifest {
                put: Box::new(sbom.clone()),
                now_ms: 1
            })
            .await,
        DONE
    );
    let mut expected = [signature.clone(), sbom.clone()];
    expected.sort_by(|a, b| a.digest.cmp(&b.digest));
    let listed = reader
        .list_referrers(&repo("app"), &image.digest, None)
        .expect("referrers");
    let listed_digests: Vec<_> = listed
        .iter()
        .map(|descriptor| descriptor.digest.clone())
        .collect();
    assert_eq!(
        listed_digests,
        expected
            .iter()
            .map(|put| put.digest.clone())
            .collect::<Vec<_>>()
    );
    let sboms = reader.list_referrers(&repo("app"), &image.digest, Some("application/sbom"));
    assert_eq!(sboms.map(|found| found.len()), Ok(1));
    assert_eq!(
        reader.list_referrers(&repo("other"), &image.digest, None),
        Ok(vec![])
    );
    let mut broken = manifest("app", "broken", None, &[], None);
    broken.subject = Some(image.digest.clone());
    assert!(matches!(
        store
            .apply(Command::PutManifest {
                put: Box::new(broken),
                now_ms: 1
            })
            .await,
        Err(MetaError::Invalid(_))
    ));

    // Deleting a tag keeps the manifest; deleting the manifest drops its tags and referrer row.
    let delete_tag = |name: &str| Command::DeleteTag {
        repo: repo("app"),
        tag: tag(name),
    };
    let retag = manifest("app", "image", Some("latest"), &[&config.digest], None);
    assert_eq!(
        store
            .apply(Command::PutManifest {
                put: Box::new(retag),
                now_ms: 1
            })
            .await,
        DONE
    );
    assert_eq!(store.apply(delete_tag("v1")).await, DONE);
    assert_eq!(
        store.apply(delete_tag("v1")).await,
        Err(MetaError::ManifestUnknown("v1".to_owned()))
    );
    assert!(reader
        .get_manifest(&repo("app"), &Reference::Digest(image.digest.clone()))
        .is_ok());
    assert_eq!(
        reader.list_tags(&repo("app"), None, 10),
        Ok(page(&["latest", "multi"], false))
    );

    let delete_manifest = |put: &cluster_api::PutManifest| Command::DeleteManifest {
        repo: repo("app"),
        digest: put.digest.clone(),
        now_ms: 1,
    };
    // A child of a linked index cannot go on its own.
    assert!(matches!(
        store.apply(delete_manifest(&image)).await,
        Err(MetaError::Denied(_))
    ));
    // A referrer deleted on its own drops its row; the others stay.
    assert_eq!(store.apply(delete_manifest(&signature)).await, DONE);
    let remaining = reader
        .list_referrers(&repo("app"), &image.digest, None)
        .expect("referrers");
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].digest, sbom.digest);
    // The index goes; its child stays, being tagged.
    assert_eq!(store.apply(delete_manifest(&index)).await, DONE);
    assert_eq!(
        reader.list_tags(&repo("app"), None, 10),
        Ok(page(&["latest"], false))
    );
    // Now the image goes with its tags, and its untagged referrer with it.
    assert_eq!(store.apply(delete_manifest(&image)).await, DONE);
    assert_eq!(
        reader.list_tags(&repo("app"), None, 10),
        Ok(page(&[], false))
    );
    assert!(reader
        .get_manifest(&repo("app"), &Reference::Digest(image.digest.clone()))
        .is_err());
    let gone = Err(MetaError::ManifestUnknown(image.digest.to_string()));
    assert_eq!(store.apply(delete_manifest(&image)).await, gone);
    assert_eq!(
        reader.list_referrers(&repo("app"), &image.digest, None),
        Ok(vec![])
    );
    assert!(reader
        .get_manifest(&repo("app"), &Reference::Digest(sbom.digest.clone()))
        .is_err());
}

#[tokio::test]
async fn listings_page_in_lexical_order() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    let config = blob("config", &[1]);
    let mut commands = Vec::new();
    for name in ["b", "a/x", "a", "c"] {
        commands.push(Command::CommitBlob {
            now_ms: 1,
            repo: repo(name),
            blob: config.clone(),
            upload: None,
        });
    }
    for tag_name in ["v2", "latest", "v10", "V1"] {
        let put = manifest("a", tag_name, Some(tag_name), &[&config.digest], None);
        commands.push(Command::PutManifest {
            put: Box::new(put),
            now_ms: 1,
        });
    }
    // A tag in a repository whose name extends "a" must not leak into "a"'s listing.
    let nested = manifest("a/x", "x", Some("zzz"), &[&config.digest], None);
    commands.push(Command::PutManifest {
        put: Box::new(nested),
        now_ms: 1,
    });
    assert!(store.apply_all(commands).await.iter().all(Result::is_ok));

    let reader = &store.store.reader;
    assert_eq!(
        reader.list_repositories(None, 10),
        Ok(page(&["a", "a/x", "b", "c"], false))
    );
    assert_eq!(
        reader.list_repositories(None, 2),
        Ok(page(&["a", "a/x"], true))
    );
    assert_eq!(
        reader.list_repositories(Some("a/x"), 2),
        Ok(page(&["b", "c"], false))
    );
    assert_eq!(reader.list_repositories(Some("c"), 2), Ok(page(&[], false)));
    let a = repo("a");
    assert_eq!(
        reader.list_tags(&a, None, 10),
        Ok(page(&["V1", "latest", "v10", "v2"], false))
    );
    assert_eq!(
        reader.list_tags(&a, None, 3),
        Ok(page(&["V1", "latest", "v10"], true))
    );
    assert_eq!(
        reader.list_tags(&a, Some("latest"), 1),
        Ok(page(&["v10"], true))
    );
    assert_eq!(
        reader.list_tags(&a, Some("v10"), 1),
        Ok(page(&["v2"], false))
    );
    assert_eq!(reader.list_tags(&a, Some("v2"), 5), Ok(page(&[], false)));
    assert_eq!(reader.list_tags(&a, None, 0), Ok(page(&[], true)));
}

#[tokio::test]
async fn blob_nodes_register_and_update() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Applier::new(open(&dir));
    for id in [300, 2, 1] {
        assert_eq!(store.apply(Command::RegisterBlobNode(node(id))).await, DONE);
    }
    let updated = cluster_api::BlobNodeInfo {
        weight: 5,
        http_url: Some("http://10.0.0.2:7001".to_owned()),
        ..node(2)
    };
    assert_eq!(
        store
            .apply(Command::RegisterBlobNode(updated.clone()))
            .await,
        DONE
    );
    assert_eq!(
        store.store.reader.blob_nodes(),
        Ok(vec![node(1), updated, node(300)])
    );
}

/// A scenario touching every table, used to compare stores.
pub fn scenario() -> Vec<Command> {
    let config = blob("config", &[1, 2]);
    let image = manifest("app", "image", Some("v1"), &[&config.digest], None);
    let signature = manifest(
        "app",
        "sig",
        Some("sig"),
        &[],
        Some((&image.digest, "application/sig")),
    );
    let other = manifest("app", "other", Some("v2"), &[&config.digest], None);
    vec![
        Command::RegisterBlobNode(node(1)),
        set_upload_key(),
        Command::CommitBlob {
            now_ms: 1,
            repo: repo("app"),
            blob: config.clone(),
            upload: Some(token("app", 1, 1_000)),
        },
        Command::MountBlob {
            now_ms: 1,
            repo: repo("mirror"),
            digest: config.digest.clone(),
            from: repo("app"),
        },
        Command::PutManifest {
            put: Box::new(image.clone()),
            now_ms: 1,
        },
        Command::PutManifest {
            put: Box::new(signature),
            now_ms: 1,
        },
        Command::PutManifest {
            put: Box::new(other),
            now_ms: 1,
        },
        Command::DeleteTag {
            repo: repo("app"),
            tag: tag("v2"),
        },
        Command::UnlinkBlob {
            now_ms: 1,
            repo: repo("mirror"),
            digest: config.digest,
        },
    ]
}

#[tokio::test]
async fn reapplying_commands_is_idempotent() {
    let config = blob("config", &[1, 2]);
    let image_digest = manifest("app", "image", None, &[], None).digest;
    let digests = [&config.digest, &image_digest];
    let once_dir = TempDir::new().expect("tempdir");
    let mut once = Applier::new(open(&once_dir));
    once.apply_all(scenario()).await;
    let twice_dir = TempDir::new().expect("tempdir");
    let mut twice = Applier::new(open(&twice_dir));
    twice.apply_all(scenario()).await;
    // Replaying every command (as after a crash before last_applied was written) and each
    // command individually right after itself changes nothing.
    let replayed: Vec<_> = scenario()
        .into_iter()
        .flat_map(|command| [command.clone(), command])
        .collect();
    twice.apply_all(replayed).await;
    let repos = ["app", "mirror"];
    let expected = observe(&once.store.reader, &repos, &digests);
    assert!(expected.contains("v1"), "{expected}");
    assert_eq!(observe(&twice.store.reader, &repos, &digests), expected);
}

#[tokio::test]
async fn applied_state_survives_reopen() {
    let config = blob("config", &[1, 2]);
    let digests = [&config.digest];
    let dir = TempDir::new().expect("tempdir");
    let before = {
        let mut store = Applier::new(open(&dir));
        store.apply_all(scenario()).await;
        observe(&store.store.reader, &["app", "mirror"], &digests)
    };
    let reopened = Applier::new(open(&dir));
    assert_eq!(reopened.next_index, scenario().len() as u64 + 1);
    assert_eq!(
        observe(&reopened.store.reader, &["app", "mirror"], &digests),
        before
    );
}

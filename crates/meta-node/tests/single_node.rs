//! One bootstrapped voter in a temp dir: every `MetaApi` call end to end through Raft, and a
//! restart on the same directory that keeps every committed write.

mod common;

use cluster_api::{MetaApi, MetaError, Page, UploadId, UploadToken};
use common::*;
use meta_node::MetaNode;
use oci_model::Reference;
use tempfile::TempDir;

fn page(items: &[&str], more: bool) -> Page {
    Page {
        items: items.iter().map(|item| item.to_string()).collect(),
        more,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_end_to_end_and_after_restart() {
    let dir = TempDir::new().expect("tempdir");
    let node = single_node(dir.path()).await;
    let api = node.api();
    let app = repo("team/app");

    // Uploads need a blob node.
    assert_eq!(
        api.create_upload(&app, &[]).await,
        Err(MetaError::NoBlobNodes)
    );
    api.register_blob_node(blob_node(1))
        .await
        .expect("register node 1");
    api.register_blob_node(blob_node(2))
        .await
        .expect("register node 2");
    assert_eq!(api.blob_nodes().await, Ok(vec![blob_node(1), blob_node(2)]));

    let session = api.create_upload(&app, &[]).await.expect("create upload");
    assert!(UploadId::parse(session.id.as_str()).is_some());
    assert!([1, 2].contains(&session.staging_node));
    assert!(session.started_ms > 1_600_000_000_000);
    // The id is the session: a signed token naming the staging node and the start.
    assert_eq!(UploadToken::session(&app, &session.id), Ok(session.clone()));
    let unknown = MetaError::UploadUnknown(session.id.to_string());
    assert_eq!(
        UploadToken::session(&repo("other"), &session.id),
        Err(unknown.clone())
    );
    let second = api.create_upload(&app, &[]).await.expect("second upload");
    assert_ne!(second.id, session.id);
    assert_eq!(
        api.open_uploads(&[session.id.clone(), second.id.clone()])
            .await,
        Ok(vec![session.id.clone(), second.id.clone()])
    );

    let layer = blob("layer");
    // A token is checked at commit: in another repository it is refused.
    assert_eq!(
        api.commit_blob(&repo("other"), layer.clone(), Some(session.id.clone()))
            .await,
        Err(unknown)
    );
    api.commit_blob(&app, layer.clone(), Some(session.id.clone()))
        .await
        .expect("commit");
    assert_eq!(api.stat_blob(&app, &layer.digest).await, Ok(layer.clone()));
    let mirror = repo("mirror");
    assert_eq!(
        api.mount_blob(&mirror, &layer.digest, &repo("nowhere"))
            .await,
        Ok(None)
    );
    assert_eq!(
        api.mount_blob(&mirror, &layer.digest, &app).await,
        Ok(Some(layer.clone()))
    );
    api.unlink_blob(&mirror, &layer.digest)
        .await
        .expect("unlink");
    let blob_unknown = MetaError::BlobUnknown(layer.digest.clone());
    assert_eq!(
        api.stat_blob(&mirror, &layer.digest).await,
        Err(blob_unknown.clone())
    );
    assert_eq!(
        api.unlink_blob(&mirror, &layer.digest).await,
        Err(blob_unknown)
    );

    let missing = blob("missing");
    let refused = manifest("team/app", "refused", Some("bad"), &[&missing.digest]);
    let refusal = Err(MetaError::ManifestBlobUnknown(missing.digest.clone()));
    assert_eq!(api.put_manifest(refused).await, refusal);
    let image = manifest("team/app", "image", Some("v1"), &[&layer.digest]);
    api.put_manifest(image.clone()).await.expect("put manifest");
    api.put_manifest(manifest(
        "team/app",
        "image",
        Some("latest"),
        &[&layer.digest],
    ))
    .await
    .expect("second tag");
    let by_tag = api
        .get_manifest(&app, &Reference::Tag(tag("v1")))
        .await
        .expect("by tag");
    assert_eq!(
        (by_tag.digest.clone(), by_tag.bytes.clone()),
        (image.digest.clone(), image.bytes.clone())
    );
    let by_digest = api
        .get_manifest(&app, &Reference::Digest(image.digest.clone()))
        .await;
    assert_eq!(by_digest, Ok(by_tag));

    let signature = referrer("team/app", "signature", &image.digest, "application/sig");
    api.put_manifest(signature.clone())
        .await
        .expect("put referrer");
    let listed = api
        .list_referrers(&app, &image.digest, Some("application/sig"))
        .await;
    assert_eq!(listed.map(|found| found.len()), Ok(1));
    assert_eq!(
        api.list_referrers(&app, &image.digest, Some("other/type"))
            .await,
        Ok(vec![])
    );

    assert_eq!(
        api.list_tags(&app, None, 10).await,
        Ok(page(&["latest", "v1"], false))
    );
    assert_eq!(
        api.list_tags(&app, None, 1).await,
        Ok(page(&["latest"], true))
    );
    let name_unknown = Err(MetaError::NameUnknown("nothing".to_owned()));
    assert_eq!(
        api.list_tags(&repo("nothing"), None, 10).await,
        name_unknown
    );
    assert_eq!(
        api.list_repositories(None, 10).await,
        Ok(page(&["mirror", "team/app"], false))
    );
    assert_eq!(
        api.list_repositories(Some("mirror"), 10).await,
        Ok(page(&["team/app"], false))
    );

    api.delete_tag(&app, &tag("latest"))
        .await
        .expect("delete tag");
    let no_tag = Err(MetaError::ManifestUnknown("latest".to_owned()));
    assert_eq!(api.delete_tag(&app, &tag("latest")).await, no_tag);
    api.delete_manifest(&app, &signature.digest)
        .await
        .expect("delete referrer");
    assert_eq!(
        api.list_referrers(&app, &image.digest, None).await,
        Ok(vec![])
    );
    let expected_after_restart = (
        api.list_repositories(None, 10).await,
        api.list_tags(&app, None, 10).await,
        api.get_manifest(&app, &Reference::Tag(tag("v1"))).await,
        api.stat_blob(&app, &layer.digest).await,
        api.blob_nodes().await,
    );

    drop(api);
    node.shutdown().await.expect("shutdown");
    let node = MetaNode::open(config(1, dir.path(), "127.0.0.1:9", true))
        .await
        .expect("reopen");
    node.wait_for_leader(DEADLINE)
        .await
        .expect("leader after restart");
    let api = node.api();
    let after_restart = (
        api.list_repositories(None, 10).await,
        api.list_tags(&app, None, 10).await,
        api.get_manifest(&app, &Reference::Tag(tag("v1"))).await,
        api.stat_blob(&app, &layer.digest).await,
        api.blob_nodes().await,
    );
    assert_eq!(after_restart, expected_after_restart);
    assert!(after_restart.2.is_ok());

    // Deleting the manifest drops the tag that still points at it.
    api.delete_manifest(&app, &image.digest)
        .await
        .expect("delete manifest");
    assert_eq!(api.list_tags(&app, None, 10).await, Ok(page(&[], false)));
    let manifest_gone = Err(MetaError::ManifestUnknown(image.digest.to_string()));
    assert_eq!(
        api.delete_manifest(&app, &image.digest).await,
        manifest_gone
    );
    drop(api);
    node.shutdown().await.expect("shutdown");
}

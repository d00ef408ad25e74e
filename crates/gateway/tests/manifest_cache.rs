//! The manifest cache: reads by digest answered without meta, invalidation by this gateway's
//! DELETE, expiry after the TTL, off at TTL 0, never for reads by tag.
//!
//! "Meta is not called" is shown by an outage of the fake: a read that reached it would fail.

mod common;

use std::time::{Duration, Instant};

use cluster_api::{MetaApi, MetaError};
use common::{image_manifest, Harness};
use gateway::GatewayConfig;
use oci_model::media_type::{DOCKER_MANIFEST, OCI_MANIFEST};
use oci_model::{Digest, RepositoryName};

/// A TTL no test outlives, so an entry cannot expire between two of its requests.
const LONG_TTL_MS: u64 = 3_600_000;

fn cache_with_ttl(ttl_ms: u64) -> Harness {
    let config = GatewayConfig {
        manifest_cache_ttl_ms: ttl_ms,
        ..GatewayConfig::default()
    };
    Harness::with(config, &[1])
}

fn meta_down(harness: &Harness) {
    harness
        .meta
        .set_outage(Some(MetaError::Unavailable { leader: None }));
}

fn meta_up(harness: &Harness) {
    harness.meta.set_outage(None);
}

#[tokio::test]
async fn a_hit_by_digest_does_not_call_meta() {
    let harness = cache_with_ttl(LONG_TTL_MS);
    let (digest, manifest) = harness.push_image("team/app", "v1").await;
    let uri = format!("/v2/team/app/manifests/{digest}");
    assert_eq!(harness.call("GET", &uri).await.status, 200);

    meta_down(&harness);
    let reply = harness.call("GET", &uri).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body, manifest);
    assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(reply.header("etag"), Some(format!("\"{digest}\"").as_str()));
    // The entry is per repository: another one still asks meta.
    harness
        .call("GET", &format!("/v2/other/manifests/{digest}"))
        .await
        .assert_error(503, "UNAVAILABLE");
}

#[tokio::test]
async fn head_by_digest_fills_and_uses_the_cache() {
    let harness = cache_with_ttl(LONG_TTL_MS);
    let (digest, manifest) = harness.push_image("app", "v1").await;
    let uri = format!("/v2/app/manifests/{digest}");
    assert_eq!(harness.call("HEAD", &uri).await.status, 200);

    meta_down(&harness);
    let reply = harness.call("HEAD", &uri).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert_eq!(
        reply.header("content-length"),
        Some(manifest.len().to_string().as_str())
    );
    let reply = harness.call("GET", &uri).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, manifest);
}

#[tokio::test]
async fn a_get_by_tag_fills_the_entry_of_its_digest() {
    let harness = cache_with_ttl(LONG_TTL_MS);
    let (digest, manifest) = harness.push_image("app", "v1").await;
    assert_eq!(
        harness.call("GET", "/v2/app/manifests/v1").await.status,
        200
    );

    meta_down(&harness);
    let reply = harness
        .call("GET", &format!("/v2/app/manifests/{digest}"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, manifest);
}

#[tokio::test]
async fn by_tag_is_always_read_fresh_after_a_retag() {
    let harness = cache_with_ttl(LONG_TTL_MS);
    let images = [
        harness.push_image("app", "v1").await,
        harness.push_image("app", "v2").await,
    ];
    for (digest, manifest) in &images {
        let reply = harness
            .put_manifest("app", "latest", OCI_MANIFEST, manifest)
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        // Reads through the tag, before and after the move, fill both digests' entries.
        let reply = harness.call("GET", "/v2/app/manifests/latest").await;
        assert_eq!(&reply.body, manifest);
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(digest.to_string().as_str())
        );
    }

    meta_down(&harness);
    harness
        .call("GET", "/v2/app/manifests/latest")
        .await
        .assert_error(503, "UNAVAILABLE");
    harness
        .call("HEAD", "/v2/app/manifests/latest")
        .await
        .assert_head_error(503);
}

#[tokio::test]
async fn a_delete_through_the_gateway_invalidates_at_once() {
    let harness = cache_with_ttl(LONG_TTL_MS);
    let (digest, _) = harness.push_image("app", "v1").await;
    let uri = format!("/v2/app/manifests/{digest}");
    assert_eq!(harness.call("GET", &uri).await.status, 200);
    meta_down(&harness);
    assert_eq!(harness.call("GET", &uri).await.status, 200, "cached");
    meta_up(&harness);

    assert_eq!(harness.call("DELETE", &uri).await.status, 202);
    harness
        .call("GET", &uri)
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    harness.call("HEAD", &uri).await.assert_head_error(404);
}

#[tokio::test]
async fn a_delete_by_tag_keeps_the_manifest_by_digest() {
    let harness = cache_with_ttl(LONG_TTL_MS);
    let (digest, manifest) = harness.push_image("app", "v1").await;
    let uri = format!("/v2/app/manifests/{digest}");
    assert_eq!(harness.call("GET", &uri).await.status, 200);
    assert_eq!(
        harness.call("DELETE", "/v2/app/manifests/v1").await.status,
        202
    );
    meta_down(&harness);
    assert_eq!(harness.call("GET", &uri).await.body, manifest);
}

#[tokio::test]
async fn a_delete_elsewhere_is_seen_once_the_ttl_has_passed() {
    let harness = cache_with_ttl(20);
    let (digest, _) = harness.push_image("app", "v1").await;
    let uri = format!("/v2/app/manifests/{digest}");
    assert_eq!(harness.call("GET", &uri).await.status, 200);

    // Another gateway's DELETE: straight to meta, past this gateway's cache.
    let repo = RepositoryName::parse("app").unwrap();
    harness.meta.delete_manifest(&repo, &digest).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = harness.call("GET", &uri).await;
        if reply.status == 404 {
            reply.assert_error(404, "MANIFEST_UNKNOWN");
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            Instant::now() < deadline,
            "still served 10 s after a delete with a 20 ms TTL"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn ttl_zero_turns_the_cache_off() {
    let harness = cache_with_ttl(0);
    let (digest, _) = harness.push_image("app", "v1").await;
    let uri = format!("/v2/app/manifests/{digest}");
    assert_eq!(harness.call("GET", &uri).await.status, 200);
    meta_down(&harness);
    harness
        .call("GET", &uri)
        .await
        .assert_error(503, "UNAVAILABLE");
}

/// Same bytes PUT again under another Content-Type (the manifest has no `mediaType` field to
/// pin it): meta keeps the latest type, and so does what this gateway serves.
#[tokio::test]
async fn a_put_through_the_gateway_refreshes_the_media_type() {
    let harness = cache_with_ttl(LONG_TTL_MS);
    harness.push_blob("app", b"{}").await;
    let mut untyped: serde_json::Value =
        serde_json::from_slice(&image_manifest(b"{}", &[])).unwrap();
    untyped
        .as_object_mut()
        .unwrap()
        .remove("mediaType")
        .expect("image_manifest sets a mediaType");
    let bytes = serde_json::to_vec(&untyped).unwrap();
    let digest = Digest::sha256_of(&bytes);
    let uri = format!("/v2/app/manifests/{digest}");
    for media_type in [OCI_MANIFEST, DOCKER_MANIFEST] {
        let reply = harness
            .put_manifest("app", &digest.to_string(), media_type, &bytes)
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let reply = harness.call("GET", &uri).await;
        assert_eq!(reply.header("content-type"), Some(media_type));
    }
}

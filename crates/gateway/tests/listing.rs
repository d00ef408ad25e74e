//! Tag and catalog listings with paging, and the referrers index.

mod common;

use common::{descriptor, Harness};
use gateway::GatewayConfig;
use oci_model::media_type::{OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use oci_model::Digest;
use serde_json::json;

async fn tagged(harness: &Harness, repo: &str, tags: &[&str]) {
    harness.push_blob(repo, b"{}").await;
    let manifest = common::image_manifest(b"{}", &[]);
    for tag in tags {
        let reply = harness
            .put_manifest(repo, tag, OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(reply.status, 201);
    }
}

#[tokio::test]
async fn tags_are_listed_sorted_and_paged_with_link() {
    let harness = Harness::new();
    tagged(&harness, "team/app", &["v3", "latest", "v1", "v2"]).await;

    let reply = harness.call("GET", "/v2/team/app/tags/list").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"name": "team/app", "tags": ["latest", "v1", "v2", "v3"]})
    );
    assert_eq!(reply.header("link"), None);
    assert_eq!(reply.header("content-type"), Some("application/json"));

    let reply = harness.call("GET", "/v2/team/app/tags/list?n=2").await;
    assert_eq!(reply.json()["tags"], json!(["latest", "v1"]));
    assert_eq!(
        reply.header("link"),
        Some("</v2/team/app/tags/list?n=2&last=v1>; rel=\"next\"")
    );
    let reply = harness
        .call("GET", "/v2/team/app/tags/list?n=2&last=v1")
        .await;
    assert_eq!(reply.json()["tags"], json!(["v2", "v3"]));
    assert_eq!(reply.header("link"), None);
    let reply = harness.call("GET", "/v2/team/app/tags/list?last=v2").await;
    assert_eq!(reply.json()["tags"], json!(["v3"]));

    let reply = harness.call("GET", "/v2/team/app/tags/list?n=0").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["tags"], json!([]));
    assert_eq!(reply.header("link"), None);
}

#[tokio::test]
async fn tag_paging_errors() {
    let harness = Harness::new();
    tagged(&harness, "app", &["v1"]).await;
    for n in ["x", "-1", "1.5", ""] {
        harness
            .call("GET", &format!("/v2/app/tags/list?n={n}"))
            .await
            .assert_error(400, "PAGINATION_NUMBER_INVALID");
    }
    harness
        .call("GET", "/v2/nothing/tags/list")
        .await
        .assert_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn large_pages_are_clamped_and_continue_by_link() {
    let config = GatewayConfig {
        default_page_size: 2,
        max_page_size: 3,
        ..GatewayConfig::default()
    };
    let harness = Harness::with(config, &[1]);
    tagged(&harness, "app", &["a", "b", "c", "d"]).await;
    let reply = harness.call("GET", "/v2/app/tags/list").await;
    assert_eq!(reply.json()["tags"], json!(["a", "b"]));
    assert_eq!(
        reply.header("link"),
        Some("</v2/app/tags/list?n=2&last=b>; rel=\"next\"")
    );
    let reply = harness.call("GET", "/v2/app/tags/list?n=100").await;
    assert_eq!(reply.json()["tags"], json!(["a", "b", "c"]));
    assert_eq!(
        reply.header("link"),
        Some("</v2/app/tags/list?n=3&last=c>; rel=\"next\"")
    );
}

#[tokio::test]
async fn catalog_lists_repositories_with_paging() {
    let harness = Harness::new();
    for repo in ["b/two", "a/one", "c"] {
        harness.push_blob(repo, b"x").await;
    }
    let reply = harness.call("GET", "/v2/_catalog").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"repositories": ["a/one", "b/two", "c"]})
    );
    let reply = harness.call("GET", "/v2/_catalog?n=1").await;
    assert_eq!(reply.json()["repositories"], json!(["a/one"]));
    // `last` is URL-encoded in the link.
    assert_eq!(
        reply.header("link"),
        Some("</v2/_catalog?n=1&last=a%2Fone>; rel=\"next\"")
    );
    let reply = harness.call("GET", "/v2/_catalog?n=1&last=a%2Fone").await;
    assert_eq!(reply.json()["repositories"], json!(["b/two"]));
    let reply = harness.call("GET", "/v2/_catalog?n=5&last=b/two").await;
    assert_eq!(reply.json()["repositories"], json!(["c"]));
    assert_eq!(reply.header("link"), None);
    harness
        .call("GET", "/v2/_catalog?n=many")
        .await
        .assert_error(400, "PAGINATION_NUMBER_INVALID");
}

/// Pushes an image tagged `v1` and two artifacts referring to it; returns the subject digest.
async fn subject_with_referrers(harness: &Harness) -> Digest {
    let (subject, subject_bytes) = harness.push_image("app", "v1").await;
    harness.push_blob("app", b"{}").await;
    for (artifact_type, content) in [
        ("application/spdx+json", "sbom"),
        ("application/vnd.dev.sig", "sig"),
    ] {
        harness.push_blob("app", content.as_bytes()).await;
        let artifact = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor(artifact_type, content.as_bytes())],
            "subject": descriptor(OCI_MANIFEST, &subject_bytes),
            "annotations": {"org.example.kind": content},
        })
        .to_string();
        let reply = harness
            .put_manifest("app", content, OCI_MANIFEST, artifact.as_bytes())
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    subject
}

#[tokio::test]
async fn referrers_are_an_image_index() {
    let harness = Harness::new();
    let subject = subject_with_referrers(&harness).await;
    let reply = harness
        .call("GET", &format!("/v2/app/referrers/{subject}"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
    assert_eq!(reply.header("oci-filters-applied"), None);
    let index = reply.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for entry in manifests {
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        let kind = entry["annotations"]["org.example.kind"].as_str().unwrap();
        let reply = harness
            .call("GET", &format!("/v2/app/manifests/{kind}"))
            .await;
        assert_eq!(
            entry["digest"],
            reply.header("docker-content-digest").unwrap()
        );
        assert_eq!(entry["size"], reply.body.len());
    }
}

#[tokio::test]
async fn referrers_filter_by_artifact_type() {
    let harness = Harness::new();
    let subject = subject_with_referrers(&harness).await;
    let reply = harness
        .call(
            "GET",
            &format!("/v2/app/referrers/{subject}?artifactType=application%2Fspdx%2Bjson"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
    let manifests = reply.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["artifactType"], "application/spdx+json");
}

#[tokio::test]
async fn referrers_are_never_404() {
    let harness = Harness::new();
    let nothing = Digest::sha256_of(b"no referrers");
    for repo in ["app", "unknown/repo"] {
        let reply = harness
            .call("GET", &format!("/v2/{repo}/referrers/{nothing}"))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
        assert_eq!(reply.json()["manifests"], json!([]));
    }
    harness
        .call("GET", "/v2/app/referrers/sha256:nothex")
        .await
        .assert_error(400, "DIGEST_INVALID");
    harness
        .call("GET", "/v2/app/referrers/latest")
        .await
        .assert_error(400, "DIGEST_INVALID");
}

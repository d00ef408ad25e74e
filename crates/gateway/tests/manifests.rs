//! Manifests: push by tag and digest, validation, negotiation, subjects, deletion.

mod common;

use axum::body::Body;
use common::{descriptor, image_manifest, request, Harness};
use gateway::GatewayConfig;
use oci_model::media_type::{DOCKER_MANIFEST, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use oci_model::{Algorithm, Digest};
use serde_json::json;

#[tokio::test]
async fn put_by_tag_then_get_and_head() {
    let harness = Harness::new();
    let (digest, manifest) = harness.push_image("team/app", "v1").await;
    for reference in ["v1".to_owned(), digest.to_string()] {
        let uri = format!("/v2/team/app/manifests/{reference}");
        let reply = harness.call("GET", &uri).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, manifest);
        assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(
            reply.header("content-length"),
            Some(manifest.len().to_string().as_str())
        );
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(digest.to_string().as_str())
        );
        assert_eq!(reply.header("etag"), Some(format!("\"{digest}\"").as_str()));
        let reply = harness.call("HEAD", &uri).await;
        assert_eq!(reply.status, 200);
        assert!(reply.body.is_empty());
        assert_eq!(
            reply.header("content-length"),
            Some(manifest.len().to_string().as_str())
        );
    }
}

#[tokio::test]
async fn put_answers_location_and_digest() {
    let harness = Harness::new();
    harness.push_blob("app", b"{}").await;
    let manifest = image_manifest(b"{}", &[]);
    let digest = Digest::sha256_of(&manifest);
    let reply = harness
        .put_manifest("app", "latest", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some(format!("/v2/app/manifests/{digest}").as_str())
    );
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(reply.header("oci-subject"), None);

    // By digest, and with a sha512 digest.
    let reply = harness
        .put_manifest("app", &digest.to_string(), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let sha512 = Digest::of(Algorithm::Sha512, &manifest);
    let reply = harness
        .put_manifest("app", &sha512.to_string(), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(sha512.to_string().as_str())
    );
    assert_eq!(
        harness
            .call("GET", &format!("/v2/app/manifests/{sha512}"))
            .await
            .body,
        manifest
    );
}

#[tokio::test]
async fn put_by_a_digest_that_does_not_match_is_400() {
    let harness = Harness::new();
    harness.push_blob("app", b"{}").await;
    let manifest = image_manifest(b"{}", &[]);
    let wrong = Digest::sha256_of(b"not the manifest");
    harness
        .put_manifest("app", &wrong.to_string(), OCI_MANIFEST, &manifest)
        .await
        .assert_error(400, "DIGEST_INVALID");
    harness
        .put_manifest("app", "sha256:baddigeststring", OCI_MANIFEST, &manifest)
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn invalid_manifests_are_400_manifest_invalid() {
    let harness = Harness::new();
    harness.push_blob("app", b"{}").await;
    let good = image_manifest(b"{}", &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"{not json".to_vec()),
        (OCI_MANIFEST, br#"{"schemaVersion": 1}"#.to_vec()),
        ("text/plain", good.clone()),
        (OCI_INDEX, good.clone()),
        (
            OCI_MANIFEST,
            json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []})
                .to_string()
                .into_bytes(),
        ),
    ];
    for (content_type, body) in cases {
        let reply = harness.put_manifest("app", "v1", content_type, &body).await;
        reply.assert_error(400, "MANIFEST_INVALID");
        assert!(!reply.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn missing_references_are_manifest_blob_unknown() {
    let harness = Harness::new();
    harness.push_blob("app", b"{}").await;
    let manifest = image_manifest(b"{}", &[b"never pushed"]);
    let reply = harness
        .put_manifest("app", "v1", OCI_MANIFEST, &manifest)
        .await;
    reply.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        reply.json()["errors"][0]["detail"]["digest"],
        Digest::sha256_of(b"never pushed").to_string()
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, b"no such child")],
    });
    harness
        .put_manifest("app", "multi", OCI_INDEX, index.to_string().as_bytes())
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn oversize_manifests_are_413() {
    let config = GatewayConfig {
        max_manifest_bytes: 1024,
        ..GatewayConfig::default()
    };
    let harness = Harness::with(config, &[1]);
    let big = vec![b' '; 2048];
    harness
        .put_manifest("app", "v1", OCI_MANIFEST, &big)
        .await
        .assert_error(413, "MANIFEST_INVALID");
    // Without a Content-Length the cap applies while reading.
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(axum::body::Bytes::from(big))]);
    let request = request("PUT", "/v2/app/manifests/v1")
        .header("content-type", OCI_MANIFEST)
        .body(Body::from_stream(stream))
        .unwrap();
    harness
        .send(request)
        .await
        .assert_error(413, "MANIFEST_INVALID");
    // The default cap is 4 MiB.
    let harness = Harness::new();
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    harness
        .put_manifest("app", "v1", OCI_MANIFEST, &huge)
        .await
        .assert_error(413, "MANIFEST_INVALID");
}

#[tokio::test]
async fn accept_negotiation() {
    let harness = Harness::new();
    let (digest, _) = harness.push_image("app", "v1").await;
    let get = |reference: String, accept: &'static str| {
        let request =
            request("GET", &format!("/v2/app/manifests/{reference}")).header("accept", accept);
        harness.send(request.body(Body::empty()).unwrap())
    };
    assert_eq!(get("v1".into(), OCI_MANIFEST).await.status, 200);
    assert_eq!(get("v1".into(), "*/*").await.status, 200);
    let reply = get("v1".into(), DOCKER_MANIFEST).await;
    reply.assert_error(404, "MANIFEST_UNKNOWN");
    assert!(reply.text().contains("Accept"), "{}", reply.text());
    get(digest.to_string(), DOCKER_MANIFEST)
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    // Several Accept lines are one list.
    let request = request("HEAD", "/v2/app/manifests/v1")
        .header("accept", DOCKER_MANIFEST)
        .header("accept", format!("{OCI_INDEX}, {OCI_MANIFEST}"));
    assert_eq!(
        harness
            .send(request.body(Body::empty()).unwrap())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn docker_manifests_by_digest_ignore_accept() {
    let harness = Harness::new();
    harness.push_blob("app", b"{}").await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor("application/vnd.docker.container.image.v1+json", b"{}"),
        "layers": [],
    })
    .to_string();
    let digest = Digest::sha256_of(manifest.as_bytes());
    assert_eq!(
        harness
            .put_manifest("app", "d", DOCKER_MANIFEST, manifest.as_bytes())
            .await
            .status,
        201
    );
    let get = |reference: String| {
        let request = request("GET", &format!("/v2/app/manifests/{reference}"))
            .header("accept", OCI_MANIFEST);
        harness.send(request.body(Body::empty()).unwrap())
    };
    let reply = get(digest.to_string()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(DOCKER_MANIFEST));
    get("d".into()).await.assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifests_with_a_subject_answer_oci_subject() {
    let harness = Harness::new();
    let (subject, subject_bytes) = harness.push_image("app", "v1").await;
    harness.push_blob("app", b"{}").await;
    harness.push_blob("app", b"sbom").await;
    let artifact = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor("application/spdx+json", b"sbom")],
        "subject": descriptor(OCI_MANIFEST, &subject_bytes),
    })
    .to_string();
    let digest = Digest::sha256_of(artifact.as_bytes());
    let reply = harness
        .put_manifest(
            "app",
            &digest.to_string(),
            OCI_MANIFEST,
            artifact.as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("oci-subject"),
        Some(subject.to_string().as_str())
    );
}

#[tokio::test]
async fn references_that_cannot_exist_are_unknown_except_to_a_put() {
    let harness = Harness::new();
    for reference in [
        "-bad-tag",
        ".INVALID_MANIFEST_NAME",
        "sha256:totallywrong",
        "md5:abc",
    ] {
        let path = format!("/v2/app/manifests/{reference}");
        for method in ["GET", "DELETE"] {
            harness
                .call(method, &path)
                .await
                .assert_error(404, "MANIFEST_UNKNOWN");
        }
        // No body on HEAD, only the status.
        assert_eq!(harness.call("HEAD", &path).await.status, 404, "{reference}");
    }
    harness
        .call("PUT", "/v2/app/manifests/.dot")
        .await
        .assert_error(400, "MANIFEST_INVALID");
    harness
        .call("PUT", "/v2/app/manifests/sha256:totallywrong")
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn unknown_manifests_are_404() {
    let harness = Harness::new();
    harness.push_image("app", "v1").await;
    for reference in ["v2".to_owned(), Digest::sha256_of(b"nothing").to_string()] {
        harness
            .call("GET", &format!("/v2/app/manifests/{reference}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
        harness
            .call("GET", &format!("/v2/unknown/manifests/{reference}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
        harness
            .call("DELETE", &format!("/v2/app/manifests/{reference}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
}

#[tokio::test]
async fn delete_by_tag_untags_and_by_digest_removes() {
    let harness = Harness::new();
    let (digest, _) = harness.push_image("app", "v1").await;
    let reply = harness
        .put_manifest(
            "app",
            "v2",
            OCI_MANIFEST,
            &image_manifest(b"{\"image\":\"app:v1\"}", &[b"layer of app:v1"]),
        )
        .await;
    assert_eq!(reply.status, 201);

    let reply = harness.call("DELETE", "/v2/app/manifests/v1").await;
    assert_eq!(reply.status, 202);
    harness
        .call("GET", "/v2/app/manifests/v1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        harness
            .call("GET", &format!("/v2/app/manifests/{digest}"))
            .await
            .status,
        200
    );

    let reply = harness
        .call("DELETE", &format!("/v2/app/manifests/{digest}"))
        .await;
    assert_eq!(reply.status, 202);
    harness
        .call("HEAD", &format!("/v2/app/manifests/{digest}"))
        .await
        .assert_head_error(404);
    harness
        .call("GET", "/v2/app/manifests/v2")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn indexes_need_their_children_first() {
    let harness = Harness::new();
    let (_, child) = harness.push_image("app", "amd64").await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, &child)],
    })
    .to_string();
    let reply = harness
        .put_manifest("app", "multi", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = harness.call("GET", "/v2/app/manifests/multi").await;
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
}

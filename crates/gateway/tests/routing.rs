//! The base endpoint, path grammar, names, methods and the headers every response carries.

mod common;

use common::Harness;

#[tokio::test]
async fn base_endpoint_answers_with_an_empty_object() {
    let harness = Harness::new();
    for method in ["GET", "HEAD"] {
        let reply = harness.call(method, "/v2/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        if method == "GET" {
            assert_eq!(reply.json(), serde_json::json!({}));
            assert_eq!(reply.header("content-type"), Some("application/json"));
        } else {
            assert!(reply.body.is_empty());
        }
    }
    assert_eq!(harness.call("GET", "/v2").await.status, 200);
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let harness = Harness::new();
    for path in [
        "/",
        "/v1/search?q=x",
        "/v2/app",
        "/v2/app/manifests/",
        "/v2/app/tags/listing",
        "/v2/app/blobs/",
    ] {
        let reply = harness.call("GET", path).await;
        reply.assert_error(404, "UNSUPPORTED");
    }
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow() {
    let harness = Harness::new();
    let digest = oci_model::Digest::sha256_of(b"x");
    let cases = [
        ("POST", "/v2/".to_owned(), "GET, HEAD"),
        ("DELETE", "/v2/_catalog".to_owned(), "GET"),
        (
            "PUT",
            format!("/v2/app/blobs/{digest}"),
            "GET, HEAD, DELETE",
        ),
        ("GET", "/v2/app/blobs/uploads/".to_owned(), "POST"),
        (
            "POST",
            "/v2/app/manifests/v1".to_owned(),
            "GET, HEAD, PUT, DELETE",
        ),
        ("DELETE", "/v2/app/tags/list".to_owned(), "GET"),
        (
            "HEAD",
            format!("/v2/app/blobs/uploads/{}", "a".repeat(32)),
            "GET, PATCH, PUT, DELETE",
        ),
        ("PATCH", format!("/v2/app/referrers/{digest}"), "GET"),
    ];
    for (method, path, allow) in cases {
        let reply = harness.call(method, &path).await;
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
        if method != "HEAD" {
            assert_eq!(reply.error_code(), "UNSUPPORTED");
        }
        assert_eq!(
            reply.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }
}

#[tokio::test]
async fn invalid_names_are_400_name_invalid() {
    let harness = Harness::new();
    let long = vec!["a"; 129].join("/");
    assert!(long.len() > 255);
    for name in [
        "Upper",
        "a/../b",
        "..",
        "a//b",
        "a/",
        "-a",
        "a%20b",
        long.as_str(),
    ] {
        let reply = harness.call("GET", &format!("/v2/{name}/tags/list")).await;
        reply.assert_error(400, "NAME_INVALID");
    }
    let reply = harness.call("GET", "/v2/blobs/sha256:abc").await;
    reply.assert_error(400, "NAME_INVALID");
}

#[tokio::test]
async fn multi_segment_names_and_encoded_paths_work() {
    let harness = Harness::new();
    let digest = harness.push_blob("a/b/c", b"deep").await;
    let reply = harness
        .call("GET", &format!("/v2/a/b/c/blobs/{digest}"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"deep");
    let encoded = digest.to_string().replace(':', "%3A");
    assert_eq!(
        harness
            .call("GET", &format!("/v2/a/b/c/blobs/{encoded}"))
            .await
            .status,
        200
    );
    // A repository may be named after a marker: the name ends at the last one.
    let digest = harness.push_blob("x/manifests/y", b"odd").await;
    assert_eq!(
        harness
            .call("HEAD", &format!("/v2/x/manifests/y/blobs/{digest}"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn unavailable_cluster_is_503_with_retry_after() {
    let harness = Harness::new();
    harness
        .meta
        .set_outage(Some(cluster_api::MetaError::Unavailable { leader: None }));
    let reply = harness.call("GET", "/v2/app/tags/list").await;
    reply.assert_error(503, "UNAVAILABLE");
    assert_eq!(reply.header("retry-after"), Some("1"));
    harness
        .meta
        .set_outage(Some(cluster_api::MetaError::Internal(
            "disk on fire".into(),
        )));
    let reply = harness.call("GET", "/v2/_catalog").await;
    reply.assert_error(500, "UNKNOWN");
    assert!(
        !reply.text().contains("disk on fire"),
        "internal causes are logged, not sent"
    );
}

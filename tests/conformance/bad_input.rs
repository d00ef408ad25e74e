//! Requests the registry must refuse, each with its spec error. Every test first stores a
//! [`Baseline`] and ends by checking that the process still serves and that the baseline's blob
//! and manifest are byte for byte as pushed.

use oci_model::{Algorithm, Digest};
use serde_json::json;

use crate::client::{send, with_query, Registry, Reply};
use crate::fixtures::{
    blob_path, manifest_path, oci_image, push_blob, put_manifest, random_bytes, random_hex,
    uploads_path, Baseline, Blob, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use crate::raw;

pub(crate) const REPO: &str = "library/bad";

/// A raw request with an empty body on its own connection; the server must answer it.
async fn raw_request(registry: &Registry, method: &str, path: &str) -> Reply {
    let head = format!("{method} {path} HTTP/1.1\r\nContent-Length: 0\r\nConnection: close");
    raw::exchange(registry.addr(), &head, b"", false)
        .await
        .unwrap_or_else(|| panic!("{method} {path}: connection closed without a response"))
}

/// When the server answered a request it could not take whole, the answer is a 4xx error body.
pub(crate) fn expect_refused_if_answered(reply: Option<Reply>) {
    if let Some(reply) = reply {
        assert!(
            (400..500).contains(&reply.status),
            "{}: {} for a request it cannot have read whole",
            reply.context,
            reply.status
        );
        reply.expect_error_body();
    }
}

pub(crate) async fn expect_no_blob(registry: &Registry, repo: &str, digest: &Digest) {
    send(registry.get(&blob_path(repo, digest)))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
}

pub(crate) async fn expect_no_manifest(registry: &Registry, repo: &str, reference: &str) {
    send(registry.get(&manifest_path(repo, reference)))
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
}

/// `PUT` of raw manifest bytes with a Content-Type.
async fn put_raw_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &[u8],
) -> Reply {
    send(
        registry
            .put(&manifest_path(repo, reference))
            .header("content-type", content_type)
            .body(body.to_vec()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_manifest_is_400_manifest_invalid() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let image = &baseline.image;
    let valid = String::from_utf8(image.manifest.bytes.clone()).expect("UTF-8");
    let bodies = [
        "not json at all".to_owned(),
        "{".to_owned(),
        valid[..valid.len() / 2].to_owned(),
        "[]".to_owned(),
        "null".to_owned(),
        json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST, "config": image.config.descriptor("x"), "layers": []}).to_string(),
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).to_string(),
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "digest": "sha256:nothex", "size": 1}, "layers": []}).to_string(),
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": image.config.descriptor("x"), "layers": "none"}).to_string(),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX}).to_string(),
    ];
    for body in &bodies {
        let content_type = if body.contains(OCI_INDEX) {
            OCI_INDEX
        } else {
            OCI_MANIFEST
        };
        for reference in [baseline.tag.as_str(), "broken"] {
            put_raw_manifest(
                &registry,
                &baseline.repo,
                reference,
                content_type,
                body.as_bytes(),
            )
            .await
            .expect_error(400, "MANIFEST_INVALID");
        }
    }
    expect_no_manifest(&registry, &baseline.repo, "broken").await;
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_with_a_wrong_media_type_is_400_manifest_invalid() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let bytes = &baseline.image.manifest.bytes;
    let without_media_type = {
        let mut value: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
        value
            .as_object_mut()
            .expect("an object")
            .remove("mediaType");
        serde_json::to_vec(&value).expect("JSON serialises")
    };
    let cases: [(&str, &[u8]); 6] = [
        ("text/plain", bytes),
        ("application/json", bytes),
        ("application/vnd.oci.image.config.v1+json", bytes),
        (OCI_INDEX, bytes),
        (DOCKER_MANIFEST, bytes),
        ("application/vnd.example.unknown+json", &without_media_type),
    ];
    for (content_type, body) in cases {
        for reference in [baseline.tag.as_str(), "wrong-type"] {
            put_raw_manifest(&registry, &baseline.repo, reference, content_type, body)
                .await
                .expect_error(400, "MANIFEST_INVALID");
        }
    }
    expect_no_manifest(&registry, &baseline.repo, "wrong-type").await;
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_put_with_a_mismatched_digest_is_400_digest_invalid() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let content = Blob::random(10_000);
    let claimed = Blob::random(10_000).digest;
    // Claiming a digest the registry already stores must not replace or alias its bytes.
    let stored = baseline.image.layer.digest.clone();
    let sha512 = Digest::of(Algorithm::Sha512, &random_bytes(10));

    for digest in [&claimed, &stored, &sha512] {
        // Monolithic POST.
        let path = format!("{}?digest={digest}", uploads_path(REPO));
        send(registry.post(&path).body(content.bytes.clone()))
            .await
            .expect_error(400, "DIGEST_INVALID");
        // POST, then PUT with the body.
        let location = send(registry.post(&uploads_path(REPO)))
            .await
            .location_path();
        send(
            registry
                .put(&with_query(&location, "digest", &digest.to_string()))
                .body(content.bytes.clone()),
        )
        .await
        .expect_error(400, "DIGEST_INVALID");
        // POST, PATCH, then an empty PUT.
        let location = send(registry.post(&uploads_path(REPO)))
            .await
            .location_path();
        let reply = send(
            registry
                .patch(&location)
                .header("content-range", format!("0-{}", content.bytes.len() - 1))
                .body(content.bytes.clone()),
        )
        .await;
        let location = reply.expect_status(202).location_path();
        send(
            registry
                .put(&with_query(&location, "digest", &digest.to_string()))
                .header("content-length", "0"),
        )
        .await
        .expect_error(400, "DIGEST_INVALID");
    }
    expect_no_blob(&registry, REPO, &claimed).await;
    expect_no_blob(&registry, REPO, &sha512).await;
    expect_no_blob(&registry, REPO, &content.digest).await;
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_put_by_a_mismatched_digest_is_400_digest_invalid() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let other = oci_image(&baseline.image.config, &[]);
    let stored = baseline.image.manifest.digest.clone();
    let unrelated = Digest::sha256_of(&random_bytes(32));
    let sha512 = Digest::of(Algorithm::Sha512, &random_bytes(32));

    for digest in [&unrelated, &stored, &sha512] {
        put_manifest(&registry, &baseline.repo, &digest.to_string(), &other)
            .await
            .expect_error(400, "DIGEST_INVALID");
    }
    expect_no_manifest(&registry, &baseline.repo, &unrelated.to_string()).await;
    expect_no_manifest(&registry, &baseline.repo, &other.digest.to_string()).await;
    // The same bytes under their own sha512 digest are fine.
    let by_sha512 = Digest::of(Algorithm::Sha512, &other.bytes);
    put_manifest(&registry, &baseline.repo, &by_sha512.to_string(), &other)
        .await
        .expect_status(201)
        .expect_header("docker-content-digest", &by_sha512.to_string());
    baseline.assert_intact(&registry).await;
}

/// Digests that break the grammar or the algorithm's encoding.
fn malformed_digests() -> Vec<String> {
    let hex = random_hex(64);
    vec![
        "notadigest".to_owned(),
        "sha256:".to_owned(),
        format!("sha256:{}", &hex[..40]),
        format!("sha256:{hex}0"),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}zz", &hex[..62]),
        format!("sha512:{hex}"),
        format!("SHA256:{hex}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_digest_is_400_digest_invalid() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let body = random_bytes(100);
    for digest in malformed_digests() {
        let path = format!("{}?digest={digest}", uploads_path(REPO));
        send(registry.post(&path).body(body.clone()))
            .await
            .expect_error(400, "DIGEST_INVALID");

        let location = send(registry.post(&uploads_path(REPO)))
            .await
            .location_path();
        send(
            registry
                .put(&with_query(&location, "digest", &digest))
                .body(body.clone()),
        )
        .await
        .expect_error(400, "DIGEST_INVALID");

        send(registry.get(&format!("/v2/{REPO}/blobs/{digest}")))
            .await
            .expect_error(400, "DIGEST_INVALID");
        send(registry.delete(&format!("/v2/{REPO}/blobs/{digest}")))
            .await
            .expect_error(400, "DIGEST_INVALID");
        // A reference without `:` is a tag, not a digest.
        if digest.contains(':') {
            put_raw_manifest(
                &registry,
                &baseline.repo,
                &digest,
                OCI_MANIFEST,
                &baseline.image.manifest.bytes,
            )
            .await
            .expect_error(400, "DIGEST_INVALID");
        }
    }
    baseline.assert_intact(&registry).await;
}

/// Names that break the distribution-spec grammar, as raw path text (no client normalises them).
fn invalid_names() -> Vec<String> {
    vec![
        "Upper".to_owned(),
        "library/Alpine".to_owned(),
        "..".to_owned(),
        "a/../b".to_owned(),
        "a/./b".to_owned(),
        "a//b".to_owned(),
        "/a".to_owned(),
        "a/b/".to_owned(),
        "-a".to_owned(),
        "a_-b".to_owned(),
        "a%20b".to_owned(),
        "a".repeat(256),
        format!("{}/{}", "a".repeat(200), "b".repeat(55)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_repository_names_are_400_name_invalid() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let digest = baseline.image.layer.digest.to_string();
    for name in invalid_names() {
        let requests = [
            ("GET", format!("/v2/{name}/tags/list")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
            ("GET", format!("/v2/{name}/blobs/{digest}")),
            ("GET", format!("/v2/{name}/manifests/latest")),
            ("PUT", format!("/v2/{name}/manifests/latest")),
            ("DELETE", format!("/v2/{name}/manifests/latest")),
            ("GET", format!("/v2/{name}/referrers/{digest}")),
        ];
        for (method, path) in requests {
            raw_request(&registry, method, &path)
                .await
                .expect_error(400, "NAME_INVALID");
        }
    }
    // The longest valid name is fine.
    let longest = format!("{}/{}", "a".repeat(200), "b".repeat(54));
    assert_eq!(longest.len(), 255);
    push_blob(&registry, &longest, &Blob::random(10)).await;
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tag_is_400_and_stores_nothing() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let too_long = "t".repeat(129);
    for tag in [
        "-leading-dash",
        ".leading-dot",
        "a+b",
        "a%20b",
        too_long.as_str(),
    ] {
        let reply = put_manifest(&registry, &baseline.repo, tag, &baseline.image.manifest).await;
        reply.expect_status(400);
        // The spec has no tag error code of its own; Distribution says TAG_INVALID.
        let code = reply.expect_error_body();
        assert!(
            code == "MANIFEST_INVALID" || code == "TAG_INVALID",
            "{tag}: code {code}"
        );
    }
    // The longest valid tag is fine.
    let longest = "t".repeat(128);
    put_manifest(
        &registry,
        &baseline.repo,
        &longest,
        &baseline.image.manifest,
    )
    .await
    .expect_status(201);
    baseline.assert_intact(&registry).await;
}

/// Upload ids the registry never issued, as raw path text.
fn bogus_upload_ids() -> Vec<String> {
    vec![
        random_hex(32),
        random_hex(64),
        "3f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b".to_owned(),
        random_hex(32).to_uppercase(),
        "..".to_owned(),
        "...".to_owned(),
        "%2e%2e".to_owned(),
        "....etc....passwd".to_owned(),
        "etc%00passwd".to_owned(),
        "a".repeat(4_000),
    ]
}

/// Asserts 404 BLOB_UPLOAD_UNKNOWN for GET, PATCH, PUT and DELETE of the upload `id` of `repo`.
async fn expect_unknown_upload(registry: &Registry, repo: &str, id: &str) {
    let path = format!("/v2/{repo}/blobs/uploads/{id}");
    let digest = Digest::sha256_of(b"");
    for (method, path) in [
        ("GET", path.clone()),
        ("PATCH", path.clone()),
        ("PUT", format!("{path}?digest={digest}")),
        ("DELETE", path.clone()),
    ] {
        raw_request(registry, method, &path)
            .await
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_upload_ids_are_404_blob_upload_unknown() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    for id in bogus_upload_ids() {
        expect_unknown_upload(&registry, REPO, &id).await;
    }
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_upload_ids_with_encoded_slashes_are_404_blob_upload_unknown() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    for id in [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2f..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%5C..%5Cetc%5Cpasswd",
    ] {
        expect_unknown_upload(&registry, REPO, id).await;
    }
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_traversal_in_an_upload_path_is_404_and_reveals_nothing() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let path = format!("/v2/{REPO}/blobs/uploads/../../../../../../etc/passwd");
        let reply = raw_request(&registry, method, &path).await;
        reply.expect_status(404);
        reply.expect_error_body();
        assert!(!String::from_utf8_lossy(&reply.body).contains("root:"));
    }
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_beyond_the_end_is_416_and_changes_nothing() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let layer = &baseline.image.layer;
    let size = layer.bytes.len();
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 10, size + 20),
    ] {
        send(
            registry
                .get(&blob_path(&baseline.repo, &layer.digest))
                .header("range", range),
        )
        .await
        .expect_error(416, "RANGE_INVALID");
    }
    // An upload chunk that starts past the upload's end.
    let location = send(registry.post(&uploads_path(REPO)))
        .await
        .location_path();
    send(
        registry
            .patch(&location)
            .header("content-range", "10-19")
            .body(random_bytes(10)),
    )
    .await
    .expect_error(416, "RANGE_INVALID");
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_that_cannot_exist_is_404_manifest_unknown_on_get_and_head() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    // The OCI conformance suite's probe for a manifest that does not exist.
    for reference in [".INVALID_MANIFEST_NAME", "sha256:nothex"] {
        let path = manifest_path(&baseline.repo, reference);
        send(registry.get(&path))
            .await
            .expect_error(404, "MANIFEST_UNKNOWN");
        send(registry.head(&path)).await.expect_status(404);
        send(registry.delete(&path))
            .await
            .expect_error(404, "MANIFEST_UNKNOWN");
    }
    baseline.assert_intact(&registry).await;
}

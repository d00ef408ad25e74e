//! Bodies that do not match their framing: oversize manifests, `Content-Length` larger or smaller
//! than what is sent, chunked bodies cut off. Like `bad_input`, each test checks at its end that the
//! process serves and its [`Baseline`] is intact.

use bytes::Bytes;
use reqwest::Body;
use serde_json::json;

use crate::bad_input::{expect_no_blob, expect_no_manifest, expect_refused_if_answered, REPO};
use crate::client::{send, with_query, Registry};
use crate::fixtures::{
    blob_path, manifest_path, oci_image, put_manifest, random_bytes, uploads_path, Baseline, Blob,
    Manifest, OCI_MANIFEST,
};
use crate::raw;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_manifest_is_413_and_changes_nothing() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let mut value: serde_json::Value =
        serde_json::from_slice(&baseline.image.manifest.bytes).expect("JSON");
    value["annotations"] = json!({"padding": "p".repeat(4 * 1024 * 1024)});
    let oversize = Manifest::new(OCI_MANIFEST, &value);

    for reference in [
        baseline.tag.clone(),
        "big".to_owned(),
        oversize.digest.to_string(),
    ] {
        let reply = put_manifest(&registry, &baseline.repo, &reference, &oversize).await;
        reply.expect_status(413);
        reply.expect_error_body();
    }
    // Streamed, without a Content-Length.
    let pieces: Vec<Result<Bytes, std::io::Error>> = oversize
        .bytes
        .chunks(64 * 1024)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    let reply = send(
        registry
            .put(&manifest_path(&baseline.repo, "big"))
            .header("content-type", OCI_MANIFEST)
            .body(Body::wrap_stream(futures::stream::iter(pieces))),
    )
    .await;
    reply.expect_status(413);
    reply.expect_error_body();
    // Declared far over the limit: refused on the header alone.
    let head = format!(
        "PUT {} HTTP/1.1\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {}",
        manifest_path(&baseline.repo, &baseline.tag),
        1u64 << 30
    );
    // No body bytes follow: a server that refuses without reading leaves nothing unread.
    let reply = raw::exchange(registry.addr(), &head, b"", true)
        .await
        .expect("an answer to a declared oversize manifest");
    reply.expect_status(413);
    reply.expect_error_body();

    expect_no_manifest(&registry, &baseline.repo, "big").await;
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_larger_than_the_body_stores_nothing() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let sent = Blob::random(20_000);

    // A monolithic blob push whose body stops 100 bytes short, then the client half-closes.
    let head = format!(
        "POST {}?digest={} HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}",
        uploads_path(REPO),
        sent.digest,
        sent.bytes.len() + 100
    );
    expect_refused_if_answered(raw::exchange(registry.addr(), &head, &sent.bytes, true).await);
    expect_no_blob(&registry, REPO, &sent.digest).await;

    // A manifest, new and over the baseline's tag.
    let other = oci_image(&baseline.image.config, &[]);
    for reference in ["short", baseline.tag.as_str()] {
        let head = format!(
            "PUT {} HTTP/1.1\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {}",
            manifest_path(&baseline.repo, reference),
            other.bytes.len() + 10
        );
        expect_refused_if_answered(raw::exchange(registry.addr(), &head, &other.bytes, true).await);
    }
    expect_no_manifest(&registry, &baseline.repo, "short").await;
    expect_no_manifest(&registry, &baseline.repo, &other.digest.to_string()).await;
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_smaller_than_the_body_never_extends_the_blob() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;
    let declared = Blob::random(8_000);
    let extra = random_bytes(3_000);
    let mut on_the_wire = declared.bytes.clone();
    on_the_wire.extend_from_slice(&extra);
    let whole = Blob::of(on_the_wire.clone());

    // The digest of the declared bytes: the blob is exactly those bytes.
    let head = format!(
        "POST {}?digest={} HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}",
        uploads_path(REPO),
        declared.digest,
        declared.bytes.len()
    );
    let reply = raw::exchange(registry.addr(), &head, &on_the_wire, false)
        .await
        .expect("an answer to the declared part");
    reply
        .expect_status(201)
        .expect_header("docker-content-digest", &declared.digest.to_string());
    let fetched = send(registry.get(&blob_path(REPO, &declared.digest))).await;
    fetched
        .expect_status(200)
        .expect_header("content-length", &declared.bytes.len().to_string());
    assert!(
        fetched.body == declared.bytes,
        "the blob took bytes past Content-Length"
    );

    // The digest of everything sent: the extra bytes are not content, so it does not match.
    let head = format!(
        "POST {}?digest={} HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}",
        uploads_path(REPO),
        whole.digest,
        declared.bytes.len()
    );
    let reply = raw::exchange(registry.addr(), &head, &on_the_wire, false)
        .await
        .expect("an answer to the declared part");
    reply.expect_error(400, "DIGEST_INVALID");
    expect_no_blob(&registry, REPO, &whole.digest).await;
    baseline.assert_intact(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_chunked_bodies_never_become_blobs_or_manifests() {
    let registry = Registry::start().await;
    let baseline = Baseline::push(&registry).await;

    // A monolithic push whose chunked body never ends: the bytes that did arrive match the
    // digest, but the request was cut off, so nothing may be stored.
    let partial = Blob::random(4_096);
    let head = format!(
        "POST {}?digest={} HTTP/1.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked",
        uploads_path(REPO),
        partial.digest
    );
    let mut body = format!("{:x}\r\n", partial.bytes.len()).into_bytes();
    body.extend_from_slice(&partial.bytes);
    body.extend_from_slice(b"\r\n");
    expect_refused_if_answered(raw::exchange(registry.addr(), &head, &body, true).await);
    expect_no_blob(&registry, REPO, &partial.digest).await;

    // A complete manifest document in a chunked body that never ends.
    let other = oci_image(&baseline.image.config, &[]);
    for reference in ["cut", baseline.tag.as_str()] {
        let head = format!(
            "PUT {} HTTP/1.1\r\nContent-Type: {OCI_MANIFEST}\r\nTransfer-Encoding: chunked",
            manifest_path(&baseline.repo, reference)
        );
        let mut body = format!("{:x}\r\n", other.bytes.len()).into_bytes();
        body.extend_from_slice(&other.bytes);
        body.extend_from_slice(b"\r\n");
        expect_refused_if_answered(raw::exchange(registry.addr(), &head, &body, true).await);
    }
    expect_no_manifest(&registry, &baseline.repo, "cut").await;
    expect_no_manifest(&registry, &baseline.repo, &other.digest.to_string()).await;

    // A chunk PATCH cut short: whatever the upload kept, it cannot complete as the whole blob.
    let whole = Blob::random(8_192);
    let location = send(registry.post(&uploads_path(REPO)))
        .await
        .location_path();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Range: 0-8191\r\nContent-Length: 8192"
    );
    expect_refused_if_answered(
        raw::exchange(registry.addr(), &head, &whole.bytes[..4_096], true).await,
    );
    let reply = send(
        registry
            .put(&with_query(&location, "digest", &whole.digest.to_string()))
            .header("content-length", "0"),
    )
    .await;
    assert_ne!(
        reply.status, 201,
        "a blob was completed from a truncated PATCH"
    );
    reply.expect_error_body();
    expect_no_blob(&registry, REPO, &whole.digest).await;
    baseline.assert_intact(&registry).await;
}

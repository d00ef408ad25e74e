//! Blob uploads: monolithic, POST + PUT, chunked PATCHes, streamed PATCH, status, cancel, mount,
//! sha512, and sessions that outlive a restart.

use bytes::Bytes;
use oci_model::{Algorithm, Digest};
use reqwest::Body;

use crate::client::{encode, send, with_query, Registry, Reply};
use crate::fixtures::{blob_path, push_blob, random_bytes, uploads_path, Blob};

const REPO: &str = "library/uploads";

/// `POST /v2/<repo>/blobs/uploads/`: asserts 202 with `Location` and `Docker-Upload-UUID`, and
/// returns the location to continue at.
async fn open_session(registry: &Registry, repo: &str) -> String {
    let reply = send(registry.post(&uploads_path(repo))).await;
    reply.expect_status(202);
    assert!(
        !reply.required("docker-upload-uuid").is_empty(),
        "empty Docker-Upload-UUID"
    );
    reply.location_path()
}

/// `PATCH` of `chunk` as bytes `start..` of the upload at `location`.
async fn patch_chunk(registry: &Registry, location: &str, start: usize, chunk: &[u8]) -> Reply {
    let end = start + chunk.len() - 1;
    send(
        registry
            .patch(location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{end}"))
            .body(chunk.to_vec()),
    )
    .await
}

/// A PATCH reply that accepted bytes `0..=last`: 202, `Range: 0-<last>`, `Location` and
/// `Docker-Upload-UUID`. Returns the location for the next request.
fn expect_accepted(reply: &Reply, last: usize) -> String {
    reply
        .expect_status(202)
        .expect_header("range", &format!("0-{last}"));
    assert!(!reply.required("docker-upload-uuid").is_empty());
    reply.location_path()
}

/// `PUT <location>?digest=` with an empty body; asserts 201 with `Location` and the digest.
async fn close_empty(registry: &Registry, repo: &str, location: &str, digest: &Digest) {
    let path = with_query(location, "digest", &digest.to_string());
    let reply = send(registry.put(&path).header("content-length", "0")).await;
    expect_created(&reply, repo, digest);
}

/// 201 with `Location` naming the blob and `Docker-Content-Digest`.
fn expect_created(reply: &Reply, repo: &str, digest: &Digest) {
    reply
        .expect_status(201)
        .expect_header("docker-content-digest", &digest.to_string());
    let location = reply.location_path();
    assert!(
        location.ends_with(&blob_path(repo, digest)),
        "Location {location} does not name the blob"
    );
}

/// The blob is readable in `repo` with exactly these bytes.
async fn expect_blob(registry: &Registry, repo: &str, blob: &Blob) {
    let reply = send(registry.get(&blob_path(repo, &blob.digest))).await;
    reply
        .expect_status(200)
        .expect_header("docker-content-digest", &blob.digest.to_string());
    assert!(
        reply.body == blob.bytes,
        "blob {} has other bytes",
        blob.digest
    );
}

/// `GET <location>`: asserts 204 with `Range: 0-<last>` and `Location`.
async fn expect_status_range(registry: &Registry, location: &str, last: usize) {
    let reply = send(registry.get(location)).await;
    reply
        .expect_status(204)
        .expect_header("range", &format!("0-{last}"));
    reply.required("location");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_post_with_digest_is_201_with_location_and_digest() {
    let registry = Registry::start().await;
    let blob = Blob::random(70_000);
    let path = format!("{}?digest={}", uploads_path(REPO), blob.digest);
    let reply = send(
        registry
            .post(&path)
            .header("content-type", "application/octet-stream")
            .body(blob.bytes.clone()),
    )
    .await;
    expect_created(&reply, REPO, &blob.digest);
    let location = reply.location_path();
    let fetched = send(registry.get(&location)).await;
    fetched.expect_status(200);
    assert!(
        fetched.body == blob.bytes,
        "the Location serves other bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_then_put_with_the_whole_body_is_201() {
    let registry = Registry::start().await;
    let blob = Blob::random(50_000);
    let location = open_session(&registry, REPO).await;
    let path = with_query(&location, "digest", &blob.digest.to_string());
    let reply = send(
        registry
            .put(&path)
            .header("content-type", "application/octet-stream")
            .body(blob.bytes.clone()),
    )
    .await;
    expect_created(&reply, REPO, &blob.digest);
    expect_blob(&registry, REPO, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_patches_with_content_range_then_empty_put_is_201() {
    let registry = Registry::start().await;
    let blob = Blob::random(3 * 65_536 + 123);
    let mut location = open_session(&registry, REPO).await;
    let mut start = 0;
    for chunk in blob.bytes.chunks(65_536) {
        let reply = patch_chunk(&registry, &location, start, chunk).await;
        start += chunk.len();
        location = expect_accepted(&reply, start - 1);
    }
    close_empty(&registry, REPO, &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
    // A completed upload is over.
    send(registry.get(&location))
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_may_close_with_a_last_chunk_in_the_put() {
    let registry = Registry::start().await;
    let blob = Blob::random(20_000);
    let location = open_session(&registry, REPO).await;
    let reply = patch_chunk(&registry, &location, 0, &blob.bytes[..15_000]).await;
    let location = expect_accepted(&reply, 14_999);
    let path = with_query(&location, "digest", &blob.digest.to_string());
    let reply = send(
        registry
            .put(&path)
            .header("content-type", "application/octet-stream")
            .header("content-range", "15000-19999")
            .body(blob.bytes[15_000..].to_vec()),
    )
    .await;
    expect_created(&reply, REPO, &blob.digest);
    expect_blob(&registry, REPO, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_chunk_is_416_range_invalid_and_the_upload_keeps_its_offset() {
    let registry = Registry::start().await;
    let blob = Blob::random(300);
    let location = open_session(&registry, REPO).await;
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 0, &blob.bytes[..100]).await,
        99,
    );

    // Skips bytes 100..200.
    patch_chunk(&registry, &location, 200, &blob.bytes[200..])
        .await
        .expect_error(416, "RANGE_INVALID");
    expect_status_range(&registry, &location, 99).await;

    // The upload resumes where it was and completes.
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 100, &blob.bytes[100..]).await,
        299,
    );
    close_empty(&registry, REPO, &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_chunk_is_416_range_invalid_and_the_upload_keeps_its_offset() {
    let registry = Registry::start().await;
    let blob = Blob::random(200);
    let location = open_session(&registry, REPO).await;
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 0, &blob.bytes[..100]).await,
        99,
    );

    patch_chunk(&registry, &location, 0, &blob.bytes[..100])
        .await
        .expect_error(416, "RANGE_INVALID");
    expect_status_range(&registry, &location, 99).await;
    // A chunk overlapping the end of what is stored is a repeat too.
    patch_chunk(&registry, &location, 50, &blob.bytes[50..])
        .await
        .expect_error(416, "RANGE_INVALID");
    expect_status_range(&registry, &location, 99).await;

    let location = expect_accepted(
        &patch_chunk(&registry, &location, 100, &blob.bytes[100..]).await,
        199,
    );
    close_empty(&registry, REPO, &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_patch_without_content_range_is_202_and_completes() {
    let registry = Registry::start().await;
    let blob = Blob::random(300_000);
    let location = open_session(&registry, REPO).await;
    // No Content-Length and no Content-Range: a chunked transfer, as containers/image sends it.
    let pieces: Vec<Result<Bytes, std::io::Error>> = blob
        .bytes
        .chunks(16_384)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    let reply = send(
        registry
            .patch(&location)
            .header("content-type", "application/octet-stream")
            .body(Body::wrap_stream(futures::stream::iter(pieces))),
    )
    .await;
    let location = expect_accepted(&reply, blob.bytes.len() - 1);
    close_empty(&registry, REPO, &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_status_is_204_with_range_location_and_upload_uuid() {
    let registry = Registry::start().await;
    let blob = Blob::random(1_000);
    let location = open_session(&registry, REPO).await;
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 0, &blob.bytes[..400]).await,
        399,
    );

    let reply = send(registry.get(&location)).await;
    reply.expect_status(204).expect_header("range", "0-399");
    assert!(!reply.required("docker-upload-uuid").is_empty());
    let status_location = reply.location_path();
    assert!(
        status_location.starts_with(&uploads_path(REPO)),
        "status Location {status_location} is not an upload of {REPO}"
    );

    // The reported Location continues the same upload.
    let location = expect_accepted(
        &patch_chunk(&registry, &status_location, 400, &blob.bytes[400..]).await,
        999,
    );
    close_empty(&registry, REPO, &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_upload_is_204_then_its_status_is_404_blob_upload_unknown() {
    let registry = Registry::start().await;
    let blob = Blob::random(500);
    let location = open_session(&registry, REPO).await;
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 0, &blob.bytes).await,
        499,
    );

    send(registry.delete(&location)).await.expect_status(204);
    send(registry.get(&location))
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    patch_chunk(&registry, &location, 500, b"more")
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    let path = with_query(&location, "digest", &blob.digest.to_string());
    send(registry.put(&path).header("content-length", "0"))
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    send(registry.delete(&location))
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    send(registry.get(&blob_path(REPO, &blob.digest)))
        .await
        .expect_status(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_from_a_repository_holding_the_blob_is_201() {
    let registry = Registry::start().await;
    let blob = Blob::random(8_000);
    push_blob(&registry, "source/app", &blob).await;

    let path = format!(
        "{}?mount={}&from={}",
        uploads_path("target/app"),
        blob.digest,
        encode("source/app")
    );
    let reply = send(registry.post(&path)).await;
    expect_created(&reply, "target/app", &blob.digest);
    expect_blob(&registry, "target/app", &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_from_a_repository_without_the_blob_falls_back_to_a_202_session() {
    let registry = Registry::start().await;
    let blob = Blob::random(8_000);
    // The source exists but never had this blob.
    push_blob(&registry, "source/app", &Blob::random(10)).await;

    for (from, target) in [
        ("source/app", "target/one"),
        ("source/absent", "target/two"),
    ] {
        let path = format!(
            "{}?mount={}&from={}",
            uploads_path(target),
            blob.digest,
            encode(from)
        );
        let reply = send(registry.post(&path)).await;
        reply.expect_status(202);
        assert!(!reply.required("docker-upload-uuid").is_empty());
        send(registry.get(&blob_path(target, &blob.digest)))
            .await
            .expect_error(404, "BLOB_UNKNOWN");

        // The fallback is a real session: the blob can be uploaded through it.
        let location = reply.location_path();
        let location = expect_accepted(
            &patch_chunk(&registry, &location, 0, &blob.bytes).await,
            blob.bytes.len() - 1,
        );
        close_empty(&registry, target, &location, &blob.digest).await;
        expect_blob(&registry, target, &blob).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_blob_pushed_monolithically_is_retrievable_by_its_sha512_digest() {
    let registry = Registry::start().await;
    let blob = Blob::with_algorithm(random_bytes(40_000), Algorithm::Sha512);
    assert!(blob.digest.to_string().starts_with("sha512:"));
    let path = format!("{}?digest={}", uploads_path(REPO), blob.digest);
    let reply = send(registry.post(&path).body(blob.bytes.clone())).await;
    expect_created(&reply, REPO, &blob.digest);
    expect_blob(&registry, REPO, &blob).await;
    send(registry.head(&blob_path(REPO, &blob.digest)))
        .await
        .expect_status(200)
        .expect_header("content-length", "40000")
        .expect_header("docker-content-digest", &blob.digest.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_blob_pushed_in_chunks_is_retrievable_by_its_sha512_digest() {
    let registry = Registry::start().await;
    let blob = Blob::with_algorithm(random_bytes(30_000), Algorithm::Sha512);
    let location = open_session(&registry, REPO).await;
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 0, &blob.bytes[..10_000]).await,
        9_999,
    );
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 10_000, &blob.bytes[10_000..]).await,
        29_999,
    );
    close_empty(&registry, REPO, &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
    // The same bytes are not known under their sha256 digest, which was never pushed.
    let sha256 = Digest::sha256_of(&blob.bytes);
    send(registry.get(&blob_path(REPO, &sha256)))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_session_continues_after_a_registry_restart() {
    let mut registry = Registry::start().await;
    let blob = Blob::random(100_000);
    let location = open_session(&registry, REPO).await;
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 0, &blob.bytes[..60_000]).await,
        59_999,
    );

    registry.restart().await;

    expect_status_range(&registry, &location, 59_999).await;
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 60_000, &blob.bytes[60_000..]).await,
        99_999,
    );
    close_empty(&registry, REPO, &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_session_of_one_repository_is_404_blob_upload_unknown_in_another() {
    let registry = Registry::start().await;
    let location = open_session(&registry, "team-a/app").await;
    let elsewhere = location.replacen("/v2/team-a/app/", "/v2/team-b/app/", 1);
    assert_ne!(
        location, elsewhere,
        "Location {location} is not under the repository"
    );

    send(registry.get(&elsewhere))
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    patch_chunk(&registry, &elsewhere, 0, b"intruder")
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    // The session itself is untouched.
    expect_status_range(&registry, &location, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_blob_is_pushed_and_pulled() {
    let registry = Registry::start().await;
    let blob = Blob::of(Vec::new());
    let path = format!("{}?digest={}", uploads_path(REPO), blob.digest);
    let reply = send(registry.post(&path).header("content-length", "0")).await;
    expect_created(&reply, REPO, &blob.digest);
    send(registry.head(&blob_path(REPO, &blob.digest)))
        .await
        .expect_status(200)
        .expect_header("content-length", "0");
    expect_blob(&registry, REPO, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_a_stored_blob_again_is_201() {
    let registry = Registry::start().await;
    let blob = Blob::random(5_000);
    push_blob(&registry, REPO, &blob).await;
    push_blob(&registry, REPO, &blob).await;
    // And through a session into a second repository.
    let location = open_session(&registry, "library/other").await;
    let location = expect_accepted(
        &patch_chunk(&registry, &location, 0, &blob.bytes).await,
        4_999,
    );
    close_empty(&registry, "library/other", &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
    expect_blob(&registry, "library/other", &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chunks_at_the_same_offset_one_is_202_the_other_416() {
    let registry = Registry::start().await;
    let first = random_bytes(200_000);
    let second = random_bytes(200_000);
    let location = open_session(&registry, REPO).await;
    let (first_reply, second_reply) = tokio::join!(
        patch_chunk(&registry, &location, 0, &first),
        patch_chunk(&registry, &location, 0, &second),
    );
    let (winner, loser) = match (first_reply.status, second_reply.status) {
        (202, _) => (first, &second_reply),
        (_, 202) => (second, &first_reply),
        (a, b) => panic!("neither concurrent chunk was accepted: {a} and {b}"),
    };
    loser.expect_error(416, "RANGE_INVALID");
    expect_status_range(&registry, &location, winner.len() - 1).await;
    let blob = Blob::of(winner);
    close_empty(&registry, REPO, &location, &blob.digest).await;
    expect_blob(&registry, REPO, &blob).await;
}

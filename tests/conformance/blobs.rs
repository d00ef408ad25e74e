//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with `Range`.

use crate::client::{send, Registry};
use crate::fixtures::{blob_path, push_blob, Blob};

const REPO: &str = "library/blobs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_get_returns_the_bytes_with_length_and_digest() {
    let registry = Registry::start().await;
    let blob = Blob::random(100_000);
    push_blob(&registry, REPO, &blob).await;

    let reply = send(registry.get(&blob_path(REPO, &blob.digest))).await;
    reply
        .expect_status(200)
        .expect_header("content-length", &blob.bytes.len().to_string())
        .expect_header("docker-content-digest", &blob.digest.to_string());
    assert!(reply.body == blob.bytes, "GET returned other bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_head_returns_length_and_digest_without_a_body() {
    let registry = Registry::start().await;
    let blob = Blob::random(12_345);
    push_blob(&registry, REPO, &blob).await;

    let reply = send(registry.head(&blob_path(REPO, &blob.digest))).await;
    reply
        .expect_status(200)
        .expect_header("content-length", &blob.bytes.len().to_string())
        .expect_header("docker-content-digest", &blob.digest.to_string());
    assert!(reply.body.is_empty(), "HEAD returned a body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_blob_is_404_blob_unknown_on_get_and_404_on_head() {
    let registry = Registry::start().await;
    push_blob(&registry, REPO, &Blob::random(10)).await;
    let absent = Blob::random(10);

    send(registry.get(&blob_path(REPO, &absent.digest)))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
    send(registry.head(&blob_path(REPO, &absent.digest)))
        .await
        .expect_status(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_range_a_to_b_is_206_with_content_range_and_those_bytes() {
    let registry = Registry::start().await;
    let blob = Blob::random(10_000);
    push_blob(&registry, REPO, &blob).await;
    let size = blob.bytes.len();

    for (start, end) in [(0, 0), (0, 99), (1_000, 1_999), (9_990, 9_999)] {
        let reply = send(
            registry
                .get(&blob_path(REPO, &blob.digest))
                .header("range", format!("bytes={start}-{end}")),
        )
        .await;
        reply
            .expect_status(206)
            .expect_header("content-range", &format!("bytes {start}-{end}/{size}"))
            .expect_header("content-length", &(end - start + 1).to_string());
        assert!(
            reply.body[..] == blob.bytes[start..=end],
            "bytes {start}-{end} differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_range_open_ended_is_206_to_the_last_byte() {
    let registry = Registry::start().await;
    let blob = Blob::random(5_000);
    push_blob(&registry, REPO, &blob).await;
    let size = blob.bytes.len();

    for start in [0, 1, 4_096, size - 1] {
        let reply = send(
            registry
                .get(&blob_path(REPO, &blob.digest))
                .header("range", format!("bytes={start}-")),
        )
        .await;
        reply
            .expect_status(206)
            .expect_header(
                "content-range",
                &format!("bytes {start}-{}/{size}", size - 1),
            )
            .expect_header("content-length", &(size - start).to_string());
        assert!(
            reply.body[..] == blob.bytes[start..],
            "bytes {start}- differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_suffix_range_is_206_with_the_last_bytes() {
    let registry = Registry::start().await;
    let blob = Blob::random(3_000);
    push_blob(&registry, REPO, &blob).await;

    let reply = send(
        registry
            .get(&blob_path(REPO, &blob.digest))
            .header("range", "bytes=-500"),
    )
    .await;
    reply
        .expect_status(206)
        .expect_header("content-range", "bytes 2500-2999/3000")
        .expect_header("content-length", "500");
    assert!(reply.body[..] == blob.bytes[2_500..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_range_beyond_the_end_is_416_range_invalid() {
    let registry = Registry::start().await;
    let blob = Blob::random(1_000);
    push_blob(&registry, REPO, &blob).await;

    for range in ["bytes=1000-", "bytes=1000-1999", "bytes=5000-6000"] {
        send(
            registry
                .get(&blob_path(REPO, &blob.digest))
                .header("range", range),
        )
        .await
        .expect_error(416, "RANGE_INVALID")
        .expect_header("content-range", "bytes */1000");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_delete_is_202_then_get_is_404_blob_unknown() {
    let registry = Registry::start().await;
    let blob = Blob::random(2_048);
    push_blob(&registry, REPO, &blob).await;
    let path = blob_path(REPO, &blob.digest);

    send(registry.delete(&path)).await.expect_status(202);
    send(registry.get(&path))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
    send(registry.head(&path)).await.expect_status(404);

    // The same content can be pushed again.
    push_blob(&registry, REPO, &blob).await;
    let reply = send(registry.get(&path)).await;
    reply.expect_status(200);
    assert!(reply.body == blob.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_pushed_to_one_repository_is_404_blob_unknown_in_another() {
    let registry = Registry::start().await;
    let blob = Blob::random(3_000);
    push_blob(&registry, "team-a/app", &blob).await;
    // The other repository exists, with content of its own.
    push_blob(&registry, "team-b/app", &Blob::random(10)).await;

    send(registry.get(&blob_path("team-b/app", &blob.digest)))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
    send(registry.head(&blob_path("team-b/app", &blob.digest)))
        .await
        .expect_status(404);
    // A repository that does not exist may say so instead of naming the blob.
    let reply = send(registry.get(&blob_path("team-c/never-pushed", &blob.digest))).await;
    reply.expect_status(404);
    let code = reply.expect_error_body();
    assert!(
        code == "BLOB_UNKNOWN" || code == "NAME_UNKNOWN",
        "unexpected code {code}"
    );
    send(registry.get(&blob_path("team-a/app", &blob.digest)))
        .await
        .expect_status(200);
}

//! Blob uploads: sessions, monolithic, chunked, streamed, mounts and every error on the way.

mod common;

use axum::body::{Body, Bytes};
use common::{request, Harness, Reply};
use oci_model::{Algorithm, Digest};

/// `PATCH` (or `PUT`) `location` with `chunk` and `Content-Range: <start>-<end>`.
async fn send_chunk(
    harness: &Harness,
    method: &str,
    location: &str,
    start: usize,
    chunk: &[u8],
) -> Reply {
    let request = request(method, location)
        .header("content-type", "application/octet-stream")
        .header("content-length", chunk.len())
        .header(
            "content-range",
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(Body::from(chunk.to_vec()))
        .unwrap();
    harness.send(request).await
}

fn upload_id(location: &str) -> &str {
    location.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn post_opens_a_session() {
    let harness = Harness::new();
    let reply = harness.call("POST", "/v2/team/app/blobs/uploads/").await;
    assert_eq!(reply.status, 202);
    let location = reply.header("location").unwrap();
    let id = upload_id(location);
    assert_eq!(location, format!("/v2/team/app/blobs/uploads/{id}"));
    assert_eq!(reply.header("docker-upload-uuid"), Some(id));
    assert_eq!(reply.header("range"), Some("0-0"));
    assert_eq!(reply.header("content-length"), Some("0"));
    assert!(cluster_api::UploadId::parse(id).is_some());
    // The trailing slash is optional.
    assert_eq!(
        harness
            .call("POST", "/v2/team/app/blobs/uploads")
            .await
            .status,
        202
    );
}

#[tokio::test]
async fn monolithic_post_creates_the_blob() {
    let harness = Harness::new();
    let data = b"one shot";
    let digest = Digest::sha256_of(data);
    let reply = harness
        .call_with(
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={digest}"),
            data,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some(format!("/v2/app/blobs/{digest}").as_str())
    );
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert!(
        harness.nodes.get(1).expect("node 1").staged_uploads() == 0,
        "the hidden session is closed"
    );

    let wrong = Digest::sha256_of(b"something else");
    let reply = harness
        .call_with(
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={wrong}"),
            data,
        )
        .await;
    reply.assert_error(400, "DIGEST_INVALID");
    assert!(
        harness.nodes.get(1).expect("node 1").staged_uploads() == 0,
        "a failed monolithic push leaves no session"
    );
    harness
        .call_with("POST", "/v2/app/blobs/uploads/?digest=sha256:nothex", data)
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn digest_post_without_content() {
    let harness = Harness::new();
    // Only the empty blob can be pushed without content...
    let empty = Digest::sha256_of(b"");
    let reply = harness
        .call("POST", &format!("/v2/app/blobs/uploads/?digest={empty}"))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    // ...any other digest opens a session for the client to PUT to.
    let digest = Digest::sha256_of(b"later");
    let reply = harness
        .call("POST", &format!("/v2/app/blobs/uploads/?digest={digest}"))
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let location = reply.header("location").unwrap();
    let reply = harness
        .call_with("PUT", &format!("{location}?digest={digest}"), b"later")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
}

#[tokio::test]
async fn post_then_put_with_the_whole_blob() {
    let harness = Harness::new();
    let data = b"post then put";
    let digest = Digest::sha256_of(data);
    let location = harness.open_upload("app").await;
    let reply = harness
        .call_with("PUT", &format!("{location}?digest={digest}"), data)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some(format!("/v2/app/blobs/{digest}").as_str())
    );
    assert_eq!(
        harness
            .call("GET", &format!("/v2/app/blobs/{digest}"))
            .await
            .body,
        data
    );
    // The session is gone once committed.
    harness
        .call("GET", &location)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn chunked_upload_in_order_then_out_of_order_and_repeated() {
    let harness = Harness::new();
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 200) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let location = harness.open_upload("app").await;

    // A chunk that skips ahead is refused, and nothing is written.
    let reply = send_chunk(&harness, "PATCH", &location, 1000, &data[1000..2000]).await;
    reply.assert_error(416, "RANGE_INVALID");
    assert_eq!(reply.header("range"), Some("0-0"));
    assert_eq!(reply.header("location"), Some(location.as_str()));

    let reply = send_chunk(&harness, "PATCH", &location, 0, &data[..1000]).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.header("range"), Some("0-999"));
    assert_eq!(reply.header("location"), Some(location.as_str()));
    assert_eq!(
        reply.header("docker-upload-uuid"),
        Some(upload_id(&location))
    );
    assert_eq!(reply.header("content-length"), Some("0"));

    // Repeating the chunk is out of order too.
    let reply = send_chunk(&harness, "PATCH", &location, 0, &data[..1000]).await;
    reply.assert_error(416, "RANGE_INVALID");
    assert_eq!(reply.header("range"), Some("0-999"));

    let reply = harness.call("GET", &location).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("range"), Some("0-999"));
    assert_eq!(reply.header("location"), Some(location.as_str()));
    assert_eq!(
        reply.header("docker-upload-uuid"),
        Some(upload_id(&location))
    );

    let reply = send_chunk(&harness, "PATCH", &location, 1000, &data[1000..2000]).await;
    assert_eq!(reply.header("range"), Some("0-1999"));

    // The last chunk rides on the PUT; out of order there is 416 as well.
    let put = format!("{location}?digest={digest}");
    send_chunk(&harness, "PUT", &put, 2500, &data[2500..])
        .await
        .assert_error(416, "RANGE_INVALID");
    let reply = send_chunk(&harness, "PUT", &put, 2000, &data[2000..]).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        harness
            .call("GET", &format!("/v2/app/blobs/{digest}"))
            .await
            .body,
        data
    );
}

#[tokio::test]
async fn chunk_headers_are_checked() {
    let harness = Harness::new();
    let location = harness.open_upload("app").await;
    let patch = |content_range: &'static str, content_length: usize, body: &'static [u8]| {
        let request = request("PATCH", &location)
            .header("content-range", content_range)
            .header("content-length", content_length)
            .body(Body::from(body))
            .unwrap();
        harness.send(request)
    };
    // Content-Length disagreeing with Content-Range.
    patch("0-9", 5, b"12345")
        .await
        .assert_error(400, "SIZE_INVALID");
    // Malformed and backwards ranges.
    patch("zero-nine", 10, b"0123456789")
        .await
        .assert_error(416, "RANGE_INVALID");
    patch("9-0", 10, b"0123456789")
        .await
        .assert_error(416, "RANGE_INVALID");
    // The `bytes` unit is tolerated.
    let reply = patch("bytes 0-9", 10, b"0123456789").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.header("range"), Some("0-9"));
}

#[tokio::test]
async fn streamed_patch_without_content_range_or_length() {
    let harness = Harness::new();
    let pieces: Vec<&'static [u8]> = vec![b"streamed ", b"in ", b"pieces"];
    let data = pieces.concat();
    let digest = Digest::sha256_of(&data);
    let location = harness.open_upload("app").await;
    let stream = futures::stream::iter(
        pieces
            .into_iter()
            .map(|piece| Ok::<_, std::io::Error>(Bytes::from_static(piece))),
    );
    let request = request("PATCH", &location)
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap();
    let reply = harness.send(request).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        reply.header("range"),
        Some(format!("0-{}", data.len() - 1).as_str())
    );

    // containers/image closes with an empty PUT.
    let reply = harness
        .call("PUT", &format!("{location}?digest={digest}"))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        harness
            .call("GET", &format!("/v2/app/blobs/{digest}"))
            .await
            .body,
        data
    );
}

#[tokio::test]
async fn a_truncated_body_leaves_the_upload_unchanged() {
    let harness = Harness::new();
    let location = harness.open_upload("app").await;
    send_chunk(&harness, "PATCH", &location, 0, b"0123456789").await;
    let truncated = request("PATCH", &location)
        .header("content-length", "10")
        .body(Body::from(&b"short"[..]))
        .unwrap();
    harness
        .send(truncated)
        .await
        .assert_error(400, "SIZE_INVALID");
    let reply = harness.call("GET", &location).await;
    assert_eq!(reply.header("range"), Some("0-9"));
    let overlong = request("PATCH", &location)
        .header("content-length", "2")
        .body(Body::from(&b"too long"[..]))
        .unwrap();
    harness
        .send(overlong)
        .await
        .assert_error(400, "SIZE_INVALID");
    assert_eq!(
        harness.call("GET", &location).await.header("range"),
        Some("0-9")
    );
}

#[tokio::test]
async fn put_needs_a_valid_matching_digest() {
    let harness = Harness::new();
    let location = harness.open_upload("app").await;
    send_chunk(&harness, "PATCH", &location, 0, b"content").await;
    harness
        .call("PUT", &location)
        .await
        .assert_error(400, "DIGEST_INVALID");
    harness
        .call("PUT", &format!("{location}?digest=sha256:short"))
        .await
        .assert_error(400, "DIGEST_INVALID");
    let wrong = Digest::sha256_of(b"other content");
    let reply = harness
        .call("PUT", &format!("{location}?digest={wrong}"))
        .await;
    reply.assert_error(400, "DIGEST_INVALID");
    assert_eq!(
        reply.json()["errors"][0]["detail"]["expected"],
        wrong.to_string()
    );
    // Like Distribution, a mismatched session is over.
    harness
        .call("GET", &location)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn sha512_chunked_upload() {
    let harness = Harness::new();
    let data = b"a sha512 blob in two chunks";
    let digest = Digest::of(Algorithm::Sha512, data);
    let location = harness.open_upload("app").await;
    send_chunk(&harness, "PATCH", &location, 0, &data[..10]).await;
    let reply = send_chunk(
        &harness,
        "PUT",
        &format!("{location}?digest={digest}"),
        10,
        &data[10..],
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        harness
            .call("GET", &format!("/v2/app/blobs/{digest}"))
            .await
            .body,
        data
    );
}

#[tokio::test]
async fn delete_cancels_the_session() {
    let harness = Harness::new();
    let location = harness.open_upload("app").await;
    send_chunk(&harness, "PATCH", &location, 0, b"abandoned").await;
    let reply = harness.call("DELETE", &location).await;
    assert_eq!(reply.status, 204);
    let id = cluster_api::UploadId::parse(upload_id(&location)).unwrap();
    assert_eq!(harness.nodes.get(1).unwrap().staged(&id), None);
    harness
        .call("GET", &location)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    harness
        .call("DELETE", &location)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn unknown_bogus_or_foreign_upload_ids_are_404() {
    let harness = Harness::new();
    let location = harness.open_upload("app").await;
    let id = upload_id(&location);
    let uris = [
        format!("/v2/app/blobs/uploads/{}", "f".repeat(32)),
        "/v2/app/blobs/uploads/not-an-id".to_owned(),
        format!("/v2/app/blobs/uploads/{}A", &id[..31]),
        format!("/v2/other/blobs/uploads/{id}"),
    ];
    for uri in uris {
        for method in ["GET", "PATCH", "PUT", "DELETE"] {
            let uri = if method == "PUT" {
                format!("{uri}?digest={}", Digest::sha256_of(b""))
            } else {
                uri.clone()
            };
            harness
                .call(method, &uri)
                .await
                .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
        }
    }
}

#[tokio::test]
async fn mount_links_a_blob_from_another_repository() {
    let harness = Harness::new();
    let digest = harness.push_blob("source", b"shared layer").await;
    let reply = harness
        .call(
            "POST",
            &format!("/v2/target/blobs/uploads/?mount={digest}&from=source"),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some(format!("/v2/target/blobs/{digest}").as_str())
    );
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(
        harness
            .call("GET", &format!("/v2/target/blobs/{digest}"))
            .await
            .body,
        b"shared layer"
    );
}

#[tokio::test]
async fn mount_falls_back_to_a_session() {
    let harness = Harness::new();
    let digest = harness.push_blob("source", b"shared layer").await;
    let absent = Digest::sha256_of(b"absent");
    for query in [
        format!("mount={absent}&from=source"),
        format!("mount={digest}&from=nowhere"),
        format!("mount={digest}&from=Not..Valid"),
        format!("mount={digest}"),
    ] {
        let reply = harness
            .call("POST", &format!("/v2/target/blobs/uploads/?{query}"))
            .await;
        assert_eq!(reply.status, 202, "{query}: {}", reply.text());
        assert!(reply
            .header("location")
            .unwrap()
            .starts_with("/v2/target/blobs/uploads/"));
    }
    harness
        .call(
            "POST",
            "/v2/target/blobs/uploads/?mount=sha256:bad&from=source",
        )
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn no_blob_nodes_is_503() {
    let harness = Harness::with(gateway::GatewayConfig::default(), &[]);
    let reply = harness.call("POST", "/v2/app/blobs/uploads/").await;
    reply.assert_error(503, "UNAVAILABLE");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

/// The node committed but meta did not (the first PUT failed after the node's commit): a retried
/// PUT finds the verified blob on the staging node and completes the commit in meta.
#[tokio::test]
async fn retried_put_completes_after_the_node_already_committed() {
    use cluster_api::{BlobNodes, UploadId};
    let harness = Harness::new();
    let data = b"committed on the node, not yet in meta".to_vec();
    let digest = Digest::sha256_of(&data);
    let location = harness.open_upload("retry").await;
    let reply = send_chunk(&harness, "PATCH", &location, 0, &data).await;
    assert_eq!(reply.status, 202, "{}", reply.text());

    let id = UploadId::parse(upload_id(&location)).expect("upload id");
    let node = harness.nodes.node(1).await.expect("node 1");
    let repo = oci_model::RepositoryName::parse("retry").expect("a repository name");
    node.commit_upload(&repo, &id, &digest)
        .await
        .expect("node commit");
    let reply = harness
        .call("GET", &format!("/v2/retry/blobs/{digest}"))
        .await;
    reply.assert_error(404, "BLOB_UNKNOWN");

    let reply = harness
        .call("PUT", &format!("{location}?digest={digest}"))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = harness
        .call("GET", &format!("/v2/retry/blobs/{digest}"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, data);
}

/// An upload id stays a valid token after its upload is over, so the node decides: a finished
/// upload commits again only as the blob it became, and a cancelled one never, whatever blob the
/// node holds (else an id could claim a blob pushed to another repository).
#[tokio::test]
async fn an_upload_that_is_over_commits_again_only_as_its_own_blob() {
    let harness = Harness::new();
    let theirs = harness.push_blob("victim", b"someone else's layer").await;
    let data = b"my layer".to_vec();
    let digest = Digest::sha256_of(&data);
    let location = harness.open_upload("thief").await;
    let reply = harness
        .call_with("PUT", &format!("{location}?digest={digest}"), &data)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());

    harness
        .call("PUT", &format!("{location}?digest={theirs}"))
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    let cancelled = harness.open_upload("thief").await;
    assert_eq!(harness.call("DELETE", &cancelled).await.status, 204);
    harness
        .call("PUT", &format!("{cancelled}?digest={theirs}"))
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    harness
        .call("GET", &format!("/v2/thief/blobs/{theirs}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");

    // The same commit again (a client that lost the 201) succeeds; the upload stays over.
    let reply = harness
        .call("PUT", &format!("{location}?digest={digest}"))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    harness
        .call("GET", &location)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

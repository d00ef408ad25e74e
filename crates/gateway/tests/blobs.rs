//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: headers, ranges, errors and replica failover.

mod common;

use cluster_api::{BlobError, BlobInfo, MetaApi};
use common::{request, Harness};
use gateway::GatewayConfig;
use oci_model::{Algorithm, Digest, RepositoryName};

fn blob_data() -> Vec<u8> {
    (0..20_000u32).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn get_and_head_serve_the_blob_with_its_headers() {
    let harness = Harness::new();
    let data = blob_data();
    let digest = harness.push_blob("app", &data).await;
    let uri = format!("/v2/app/blobs/{digest}");

    let reply = harness.call("GET", &uri).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, data);
    assert_eq!(reply.header("content-length"), Some("20000"));
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert_eq!(reply.header("etag"), Some(format!("\"{digest}\"").as_str()));

    let reply = harness.call("HEAD", &uri).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("content-length"), Some("20000"));
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
}

#[tokio::test]
async fn empty_blob_is_served_without_touching_a_node() {
    let harness = Harness::new();
    let digest = harness.push_blob("app", b"").await;
    harness.nodes.remove(1);
    let reply = harness
        .call("GET", &format!("/v2/app/blobs/{digest}"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("0"));
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn ranges_are_honoured() {
    let harness = Harness::new();
    let data = blob_data();
    let digest = harness.push_blob("app", &data).await;
    let uri = format!("/v2/app/blobs/{digest}");
    let get_range = |range: &'static str| {
        let request = request("GET", &uri).header("range", range);
        harness.send(request.body(axum::body::Body::empty()).unwrap())
    };

    let reply = get_range("bytes=100-4199").await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, &data[100..4200]);
    assert_eq!(reply.header("content-range"), Some("bytes 100-4199/20000"));
    assert_eq!(reply.header("content-length"), Some("4100"));

    let reply = get_range("bytes=19990-").await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, &data[19990..]);
    assert_eq!(
        reply.header("content-range"),
        Some("bytes 19990-19999/20000")
    );

    let reply = get_range("bytes=-10").await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, &data[19990..]);

    let reply = get_range("bytes=20000-").await;
    reply.assert_error(416, "RANGE_INVALID");
    assert_eq!(reply.header("content-range"), Some("bytes */20000"));

    for malformed in ["bytes=9-1", "bytes=a-b", "pages=1-2", "bytes=0-1,5-9"] {
        let reply = get_range(malformed).await;
        assert_eq!(reply.status, 200, "{malformed} must be ignored");
        assert_eq!(reply.body, data);
    }
}

#[tokio::test]
async fn unknown_or_unlinked_blobs_are_404_and_bad_digests_400() {
    let harness = Harness::new();
    let digest = harness.push_blob("app", b"mine").await;
    harness
        .call("GET", &format!("/v2/other/blobs/{digest}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    let absent = Digest::sha256_of(b"absent");
    harness
        .call("HEAD", &format!("/v2/app/blobs/{absent}"))
        .await
        .assert_head_error(404);
    for bad in [
        "sha256:xyz",
        "sha256",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "latest",
    ] {
        harness
            .call("GET", &format!("/v2/app/blobs/{bad}"))
            .await
            .assert_error(400, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn delete_unlinks_the_blob() {
    let harness = Harness::new();
    let digest = harness.push_blob("app", b"short-lived").await;
    let uri = format!("/v2/app/blobs/{digest}");
    let reply = harness.call("DELETE", &uri).await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("content-length"), Some("0"));
    harness.call("HEAD", &uri).await.assert_head_error(404);
    harness
        .call("DELETE", &uri)
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn sha512_blobs_work() {
    let harness = Harness::new();
    let data = b"sha512 content";
    let digest = Digest::of(Algorithm::Sha512, data);
    let reply = harness
        .call_with(
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={digest}"),
            data,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = harness
        .call("GET", &format!("/v2/app/blobs/{digest}"))
        .await;
    assert_eq!(reply.body, data);
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
}

/// A blob on nodes 1 and 2, recorded with replicas `replicas`.
async fn replicated(harness: &Harness, data: &[u8], replicas: Vec<u64>) -> Digest {
    let mut digest = None;
    for id in [1, 2] {
        digest = Some(harness.nodes.get(id).unwrap().insert_blob(data));
    }
    let digest = digest.unwrap();
    let blob = BlobInfo {
        digest: digest.clone(),
        size: data.len() as u64,
        replicas,
        placement: Vec::new(),
    };
    let repo = RepositoryName::parse("app").unwrap();
    harness.meta.commit_blob(&repo, blob, None).await.unwrap();
    digest
}

#[tokio::test]
async fn reads_fail_over_to_the_next_replica() {
    let harness = Harness::with(GatewayConfig::default(), &[1, 2]);
    let data = blob_data();
    // Node 9 is unknown, node 1 is down: node 2 serves.
    let digest = replicated(&harness, &data, vec![9, 1, 2]).await;
    harness
        .nodes
        .get(1)
        .unwrap()
        .set_outage(Some(BlobError::Unavailable("down".into())));
    let reply = harness
        .call("GET", &format!("/v2/app/blobs/{digest}"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, data);

    // Every replica down: 503, not a truncated 200.
    harness
        .nodes
        .get(2)
        .unwrap()
        .set_outage(Some(BlobError::Unavailable("down".into())));
    let reply = harness
        .call("GET", &format!("/v2/app/blobs/{digest}"))
        .await;
    reply.assert_error(503, "UNAVAILABLE");
}

#[tokio::test]
async fn a_replica_failing_mid_stream_is_resumed_at_the_same_offset() {
    let harness = Harness::with(GatewayConfig::default(), &[1, 2]);
    let data = blob_data();
    let digest = replicated(&harness, &data, vec![1, 2]).await;
    harness.nodes.get(1).unwrap().fail_reads_after(Some(5000));
    let reply = harness
        .call("GET", &format!("/v2/app/blobs/{digest}"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, data);

    let request =
        request("GET", &format!("/v2/app/blobs/{digest}")).header("range", "bytes=1000-9999");
    let reply = harness
        .send(request.body(axum::body::Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, &data[1000..10000]);
}

/// With `blob_redirect` on, a GET of a large enough blob is a 307 to a signed URL on the first
/// replica that serves redirected GETs and holds the blob; HEADs, small blobs and replicas
/// without an endpoint are served here as before.
#[tokio::test]
async fn large_blob_gets_are_redirected_to_a_replica_when_configured() {
    let config = GatewayConfig {
        blob_redirect: true,
        blob_redirect_min_bytes: 1_000,
        ..GatewayConfig::default()
    };
    let harness = Harness::with(config, &[1, 2]);
    let data = vec![7u8; 4_000];
    let digest = replicated(&harness, &data, vec![1, 2]).await;
    let path = format!("/v2/app/blobs/{digest}");

    // No replica has an endpoint yet: proxied.
    let reply = harness.call("GET", &path).await;
    assert_eq!((reply.status, reply.body.len()), (200, data.len()));

    // Node 1 has an endpoint but is down, node 2 answers: sent to node 2.
    let node = |id| harness.nodes.get(id).unwrap();
    node(1).set_direct_url(Some("http://blob-1:7001".to_owned()));
    node(2).set_direct_url(Some("http://blob-2:7001".to_owned()));
    node(1).set_outage(Some(BlobError::Unavailable("down".into())));
    let reply = harness.call("GET", &path).await;
    assert_eq!(reply.status, 307, "{}", reply.text());
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    let location = reply.header("location").expect("a Location").to_owned();
    let prefix = format!("http://blob-2:7001/blobs/{digest}?");
    let query = location
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{location} is not on node 2"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = cluster_api::fake::FAKE_BLOB_URL_KEY;
    assert_eq!(
        cluster_api::verify_blob_query(&key, &digest, query, now),
        Ok(())
    );
    // Valid for the configured five minutes, not longer.
    assert_eq!(
        cluster_api::verify_blob_query(&key, &digest, query, now + 301),
        Err(cluster_api::BlobUrlError::Expired)
    );

    // A range is redirected too (the node honours it); a HEAD never is.
    let ranged = harness
        .send(
            request("GET", &path)
                .header("range", "bytes=0-9")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ranged.status, 307);
    let reply = harness.call("HEAD", &path).await;
    assert_eq!(reply.status, 200);

    // Below the threshold, proxied.
    let small = replicated(&harness, b"small", vec![2]).await;
    let reply = harness.call("GET", &format!("/v2/app/blobs/{small}")).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"small"[..]));
}

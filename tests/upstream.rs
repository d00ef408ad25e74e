//! The pull-through cache's upstream client (crates/proxy) against real registries on loopback:
//! CNCF Distribution 2.8 and `wharf serve` (whose blob GETs redirect to its blob node).

mod common;

use common::distribution::Distribution;
use common::{PushedImage, Registry};
use oci_model::{media_type, Digest, Reference, RepositoryName, Tag};
use proxy::{Upstream, UpstreamConfig, UpstreamError};
use test_cluster::InProcessServe;

const ACCEPT: [&str; 4] = media_type::MANIFEST_TYPES;

fn name(text: &str) -> RepositoryName {
    RepositoryName::parse(text).expect("repository name")
}

fn tag(text: &str) -> Reference {
    Reference::Tag(Tag::parse(text).expect("tag"))
}

/// Everything the client reads of `image`, checked against what was pushed.
async fn reads_back(upstream: &Upstream, image: &PushedImage) {
    let repo = name(&image.repo);
    let by_tag = upstream
        .manifest(&repo, &tag(&image.tag), &ACCEPT)
        .await
        .expect("manifest by tag")
        .expect("present");
    assert_eq!(by_tag.digest, image.manifest_digest);
    assert_eq!(by_tag.bytes.as_ref(), image.manifest.as_slice());
    assert_eq!(by_tag.media_type, media_type::OCI_MANIFEST);
    let by_digest = upstream
        .manifest(
            &repo,
            &Reference::Digest(image.manifest_digest.clone()),
            &ACCEPT,
        )
        .await
        .expect("manifest by digest")
        .expect("present");
    assert_eq!(by_digest, by_tag);
    let head = upstream
        .head_manifest(&repo, &tag(&image.tag), &ACCEPT)
        .await
        .expect("HEAD")
        .expect("present");
    assert_eq!(
        (head.digest, head.size),
        (image.manifest_digest.clone(), image.manifest.len() as u64)
    );
    for (digest, content) in &image.blobs {
        let blob = upstream
            .blob(&repo, digest)
            .await
            .expect("blob")
            .expect("present");
        assert_eq!(blob.size, Some(content.len() as u64));
        assert_eq!(
            blob.bytes().await.expect("checked body").as_ref(),
            content.as_slice()
        );
    }
    // What the upstream does not have is `None`, not an error.
    assert_eq!(
        upstream
            .manifest(&repo, &tag("absent"), &ACCEPT)
            .await
            .expect("a missing tag"),
        None
    );
    let missing = Digest::sha256_of(b"never pushed");
    assert!(upstream
        .blob(&repo, &missing)
        .await
        .expect("a missing blob")
        .is_none());
    assert_eq!(
        upstream
            .head_manifest(&name("never/pushed"), &tag("v1"), &ACCEPT)
            .await
            .expect("a missing repository"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_manifests_and_blobs_from_distribution() {
    let distribution = Distribution::start().await;
    let image = Registry::new(distribution.url.clone())
        .push_image_with("library/alpine", "3.20", 300 * 1024, false)
        .await
        .expect("push to Distribution");
    let upstream = Upstream::new(&UpstreamConfig::new(&distribution.url)).expect("upstream");
    reads_back(&upstream, &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_wharf_following_blob_redirects() {
    let serve = InProcessServe::start_redirecting().await.expect("serve");
    let image = Registry::new(serve.base_url())
        .push_image("team/app", "v1", 200 * 1024)
        .await
        .expect("push to serve");
    let upstream = Upstream::new(&UpstreamConfig::new(serve.base_url())).expect("upstream");
    reads_back(&upstream, &image).await;
    // Its pooled keep-alive connections go first, so the gateway's graceful stop need not wait.
    drop(upstream);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_transient_error() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let upstream =
        Upstream::new(&UpstreamConfig::new(format!("http://127.0.0.1:{port}"))).expect("upstream");
    let error = upstream
        .manifest(&name("library/alpine"), &tag("latest"), &ACCEPT)
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, UpstreamError::Unreachable(_)), "{error:?}");
    assert!(error.is_transient());
}

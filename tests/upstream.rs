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
            .head_manifest(&name(&format!("{}/never", image.repo)), &tag("v1"), &ACCEPT)
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
    let upstream =
        Upstream::new(&UpstreamConfig::new(common::closed_port_url())).expect("upstream");
    let error = upstream
        .manifest(&name("library/alpine"), &tag("latest"), &ACCEPT)
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, UpstreamError::Unreachable(_)), "{error:?}");
    assert!(error.is_transient());
}

/// `wharf serve --auth` answers 401 with a Bearer challenge: the client gets a token from its
/// realm with the robot's credentials, and keeps it for the next requests of that scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_token_flow_of_wharf_with_auth() {
    use common::auth_serve::{basic, registry, AuthServe};

    let serve = AuthServe::start(&[]).await;
    serve.user("root", "root-password", true);
    let image = registry(&serve.base, Some(&basic("root", "root-password")))
        .push_image("team/app", "v1", 100 * 1024)
        .await
        .expect("push as root");
    let secret = serve.robot("mirror", "team/**", "pull");
    let config = |user: Option<&str>, password: Option<&str>| UpstreamConfig {
        username: user.map(str::to_owned),
        password: password.map(str::to_owned),
        ..UpstreamConfig::new(&serve.base)
    };
    // A robot's policy reaches the gateway within its refresh interval (1 s).
    let upstream = Upstream::new(&config(Some("mirror"), Some(&secret))).expect("upstream");
    common::until(
        "the robot's policy to reach the gateway",
        std::time::Instant::now() + common::auth_serve::DEADLINE,
        || async {
            upstream
                .head_manifest(&name("team/app"), &tag("v1"), &ACCEPT)
                .await
                .map_err(|error| error.to_string())
        },
    )
    .await
    .expect("the robot pulls");
    let issued = |serve: &AuthServe| {
        serve
            .audit()
            .lines()
            .filter(|line| line.contains("token issued") && line.contains("mirror"))
            .count()
    };
    // The audit log is written behind the requests, in order: wait for the lines.
    let logged = |at_least: usize| {
        let serve = &serve;
        common::until(
            "the audit log to show the tokens issued",
            std::time::Instant::now() + common::auth_serve::DEADLINE,
            move || async move {
                let count = issued(serve);
                (count >= at_least)
                    .then_some(count)
                    .ok_or_else(|| format!("{count} tokens logged"))
            },
        )
    };
    let before = logged(1).await.expect("the first token");
    reads_back(&upstream, &image).await;
    // The dozen requests for team/app reuse its token; the one for the repository below it,
    // asked last, takes one more.
    let after = logged(before + 1).await.expect("the second token");
    assert_eq!(after, before + 1, "{}", serve.audit());

    for (user, password) in [(Some("mirror"), Some("wrong-secret")), (None, None)] {
        let refused = Upstream::new(&config(user, password)).expect("upstream");
        let error = refused
            .manifest(&name("team/app"), &tag("v1"), &ACCEPT)
            .await
            .expect_err("no access");
        assert!(matches!(error, UpstreamError::Unauthorized(_)), "{error:?}");
        assert!(!error.is_transient());
    }
}

/// Every way an upstream can fail, through the fault proxy in front of Distribution: each is a
/// clear error, classed transient (a cache serves what it has) or not, and a blob that comes cut
/// or altered never reads as complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_a_clear_error_and_never_content() {
    use common::fault_proxy::{Fault, FaultProxy};

    let distribution = Distribution::start().await;
    let image = Registry::new(distribution.url.clone())
        .push_image_with("library/alpine", "3.20", 256 * 1024, false)
        .await
        .expect("push to Distribution");
    let proxy = FaultProxy::start(&distribution.url).await;
    let config = UpstreamConfig {
        read_timeout: std::time::Duration::from_millis(500),
        ..UpstreamConfig::new(&proxy.url)
    };
    let upstream = Upstream::new(&config).expect("upstream");
    let repo = name(&image.repo);
    let (layer, content) = image
        .blobs
        .iter()
        .max_by_key(|(_, content)| content.len())
        .expect("a layer");

    proxy.set(Fault::Status(429));
    let error = upstream
        .manifest(&repo, &tag(&image.tag), &ACCEPT)
        .await
        .expect_err("429");
    assert_eq!(
        error,
        UpstreamError::RateLimited {
            retry_after: Some(30)
        }
    );
    assert!(error.is_transient());

    proxy.set(Fault::Status(503));
    let error = upstream.blob(&repo, layer).await.err().expect("503");
    assert!(
        matches!(&error, UpstreamError::Status { status: 503, message } if message.contains("UNAVAILABLE")),
        "{error:?}"
    );
    assert!(error.is_transient());

    proxy.set(Fault::Stall);
    let error = upstream
        .head_manifest(&repo, &tag(&image.tag), &ACCEPT)
        .await
        .expect_err("stalled");
    assert!(matches!(error, UpstreamError::Timeout(_)), "{error:?}");
    assert!(error.is_transient());

    // A body cut mid-way: the bytes before the cut come, then an error, never the end.
    proxy.set(Fault::CutAfter(100 * 1024));
    let blob = upstream
        .blob(&repo, layer)
        .await
        .expect("head")
        .expect("present");
    assert_eq!(blob.size, Some(content.len() as u64));
    let error = blob.bytes().await.expect_err("cut");
    assert!(error.is_transient(), "{error:?}");

    // A flipped byte: the whole length comes, and the check refuses it.
    proxy.set(Fault::FlipByte(1000));
    let blob = upstream
        .blob(&repo, layer)
        .await
        .expect("head")
        .expect("present");
    let error = blob.bytes().await.expect_err("altered");
    assert!(
        matches!(&error, UpstreamError::DigestMismatch { expected, .. } if expected == layer),
        "{error:?}"
    );
    proxy.set(Fault::FlipByte(10));
    let error = upstream
        .manifest(
            &repo,
            &Reference::Digest(image.manifest_digest.clone()),
            &ACCEPT,
        )
        .await
        .expect_err("an altered manifest");
    assert!(
        matches!(error, UpstreamError::DigestMismatch { .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());

    // And once the upstream behaves, the same reads succeed.
    proxy.set(Fault::None);
    reads_back(&upstream, &image).await;
    assert!(proxy.count("GET", &format!("/blobs/{layer}")) >= 3);
}

/// Catalogs and tag lists read whole across their `Link` pages, from Distribution and from
/// `wharf serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_catalogs_and_tags_across_pages() {
    let distribution = Distribution::start().await;
    let serve = InProcessServe::start().await.expect("serve");
    for (url, monolithic) in [(distribution.url.clone(), false), (serve.base_url(), true)] {
        let registry = Registry::new(url.clone());
        for (repo, tag) in [
            ("a/one", "v1"),
            ("a/one", "v2"),
            ("a/one", "v3"),
            ("b/two", "v1"),
            ("c", "latest"),
        ] {
            registry
                .push_image_with(repo, tag, 1024, monolithic)
                .await
                .expect("push");
        }
        let upstream = Upstream::new(&UpstreamConfig::new(&url)).expect("upstream");
        for page in [1, 2, 100] {
            assert_eq!(
                upstream.catalog(page).await.expect("catalog"),
                ["a/one", "b/two", "c"],
                "{url}, pages of {page}"
            );
            let mut tags = upstream
                .tags(&name("a/one"), page)
                .await
                .expect("tags")
                .expect("a known repository");
            tags.sort();
            assert_eq!(tags, ["v1", "v2", "v3"], "{url}, pages of {page}");
        }
        assert_eq!(
            upstream
                .tags(&name("never/pushed"), 10)
                .await
                .expect("tags"),
            None,
            "{url}"
        );
        drop(upstream);
    }
    serve.stop().await;
}

/// Distribution with Basic authentication (htpasswd): the client answers its Basic challenge
/// with the upstream's credentials, and refused credentials are Unauthorized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_basic_challenge_with_its_credentials() {
    use common::auth_serve::{basic, registry};

    let distribution = Distribution::start_with(Some(("mirror", "s3cret"))).await;
    let image = registry(&distribution.url, Some(&basic("mirror", "s3cret")))
        .push_image_with("library/busybox", "1.36", 64 * 1024, false)
        .await
        .expect("push with Basic");
    let config = |password: Option<&str>| UpstreamConfig {
        username: password.map(|_| "mirror".to_owned()),
        password: password.map(str::to_owned),
        ..UpstreamConfig::new(&distribution.url)
    };
    // Through the fault proxy (faithful here), to count the upstream's 401s: once asked, the
    // client sends its credentials with every request.
    let proxy = common::fault_proxy::FaultProxy::start(&distribution.url).await;
    let through = UpstreamConfig {
        url: proxy.url.clone(),
        ..config(Some("s3cret"))
    };
    let upstream = Upstream::new(&through).expect("upstream");
    reads_back(&upstream, &image).await;
    assert_eq!(proxy.answered(401), 1, "{:#?}", proxy.forwarded());
    assert_eq!(proxy.answered(200), 5, "{:#?}", proxy.forwarded());
    for password in [Some("wrong"), None] {
        let refused = Upstream::new(&config(password)).expect("upstream");
        let error = refused
            .manifest(&name("library/busybox"), &tag("1.36"), &ACCEPT)
            .await
            .expect_err("no access");
        assert!(matches!(error, UpstreamError::Unauthorized(_)), "{error:?}");
    }
}

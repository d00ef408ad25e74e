//! The pull-through cache end to end: `wharf serve` with a proxy upstream (added through
//! `wharf admin proxy add`, as an operator would), in front of CNCF Distribution 2.8 behind the
//! fault-injecting proxy, which counts what reaches the upstream.

mod common;

use std::time::{Duration, Instant};

use common::distribution::Distribution;
use common::fault_proxy::{Fault, FaultProxy};
use common::serve::Serve;
use common::{until, PushedImage, Registry};
use oci_model::Digest;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Distribution holding `library/app:v1`, the fault proxy in front of it, and `wharf serve`
/// caching it under `hub/` with a one-second tag TTL.
struct Setup {
    upstream: Registry,
    _distribution: Distribution,
    fault: FaultProxy,
    serve: Serve,
    cache: Registry,
    image: PushedImage,
}

impl Setup {
    async fn start() -> Setup {
        Setup::start_with("", &["--tag-ttl", "1"]).await
    }

    /// With `serve`'s config file `config`, and `proxy_flags` added to `wharf admin proxy add`.
    async fn start_with(config: &str, proxy_flags: &[&str]) -> Setup {
        let distribution = Distribution::start().await;
        let upstream = Registry::new(distribution.url.clone());
        let image = upstream
            .push_image_with("library/app", "v1", 300_000, false)
            .await
            .expect("push to Distribution");
        let fault = FaultProxy::start(&distribution.url).await;
        let serve = Serve::start(config, &[]).await;
        let add = [
            "proxy", "add", "--id", "up", "--url", &fault.url, "--prefix", "hub",
        ];
        serve.admin(&[&add[..], proxy_flags].concat());
        let cache = Registry::new(serve.base.clone());
        Setup {
            upstream,
            _distribution: distribution,
            fault,
            serve,
            cache,
            image,
        }
    }

    /// `image` as the cache serves it.
    fn cached(&self, image: &PushedImage) -> PushedImage {
        PushedImage {
            repo: format!("hub/{}", image.repo),
            tag: image.tag.clone(),
            manifest: image.manifest.clone(),
            manifest_digest: image.manifest_digest.clone(),
            blobs: image.blobs.clone(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.cache
            .http
            .get(format!("{}{path}", self.cache.base))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET through the cache")
    }
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("an OCI error body");
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_image_is_pulled_once_and_served_from_the_cache_after() {
    let setup = Setup::start().await;
    let cached = setup.cached(&setup.image);
    setup
        .cache
        .verify_image(&cached)
        .await
        .expect("the image pulls through the cache, every byte as pushed");
    let blob_gets = setup.fault.count("GET", "/blobs/");
    assert_eq!(blob_gets, 2, "{:#?}", setup.fault.forwarded());
    // Again: manifests by digest and blobs come from the cluster now.
    setup
        .cache
        .verify_image(&cached)
        .await
        .expect("second pull");
    assert_eq!(setup.fault.count("GET", "/blobs/"), 2);
    assert_eq!(
        setup.fault.count(
            "GET",
            &format!("/manifests/{}", setup.image.manifest_digest)
        ),
        1,
        "a manifest by digest is fetched once: {:#?}",
        setup.fault.forwarded()
    );
    // Cached content is ordinary content: in the catalog and in the namespace's usage.
    let catalog: Value = setup
        .get("/v2/_catalog")
        .await
        .json()
        .await
        .expect("catalog");
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["hub/library/app"])
    );
    let usage: Value =
        serde_json::from_str(&setup.serve.admin(&["usage", "hub"])).expect("usage JSON");
    let blobs: u64 = setup
        .image
        .blobs
        .iter()
        .map(|(_, data)| data.len() as u64)
        .sum();
    assert_eq!(
        usage[0]["physical_bytes"].as_u64(),
        Some(blobs + setup.image.manifest.len() as u64),
        "{usage}"
    );
    // Pushes and deletes under the prefix are refused, and say why.
    let pushed = setup
        .cache
        .post_monolithic("hub/library/app", b"data")
        .await
        .expect("POST answered");
    assert_eq!(pushed.status(), 405);
    assert_eq!(error_code(pushed).await, "UNSUPPORTED");
    let deleted = setup
        .cache
        .http
        .delete(format!(
            "{}/v2/hub/library/app/manifests/{}",
            setup.cache.base, setup.image.manifest_digest
        ))
        .send()
        .await
        .expect("DELETE answered");
    assert_eq!(deleted.status(), 405);
    // Something the upstream does not have is the upstream's 404, in the OCI shape.
    let missing = setup.get("/v2/hub/library/none/manifests/v1").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cached_tag_is_served_while_the_upstream_fails_and_follows_it_after() {
    let setup = Setup::start().await;
    let cached = setup.cached(&setup.image);
    setup.cache.verify_image(&cached).await.expect("first pull");
    let path = format!("/v2/{}/manifests/v1", cached.repo);

    for fault in [Fault::Status(429), Fault::Status(503)] {
        setup.fault.set(fault);
        // Once the one-second TTL has passed, the cache asks the upstream again, which fails:
        // the cached tag is served, marked stale.
        let warning = until("a stale answer", Instant::now() + DEADLINE, || async {
            let response = setup.get(&path).await;
            let status = response.status();
            let warning = response
                .headers()
                .get("warning")
                .map(|value| value.to_str().unwrap_or_default().to_owned());
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            if status != 200 || body.as_ref() != cached.manifest.as_slice() {
                return Err(format!("{status}: the cached manifest is not served"));
            }
            warning.ok_or_else(|| "not stale yet".to_owned())
        })
        .await
        .expect("the cached tag is served through the fault");
        assert!(warning.starts_with("110 wharf "), "{warning}");
        // A tag never cached has nothing to fall back on: it gets the upstream's failure (a
        // failure answers the lookups of the same manifest for a second, so the one the
        // previous fault left may come first).
        let expected = if fault == Fault::Status(429) {
            429
        } else {
            503
        };
        until(
            "the upstream's failure",
            Instant::now() + DEADLINE,
            || async {
                let status = setup
                    .get("/v2/hub/library/app/manifests/never")
                    .await
                    .status();
                (status == expected)
                    .then_some(())
                    .ok_or_else(|| format!("{status}"))
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{fault:?}: {error}"));
    }

    // The upstream moves the tag: after the TTL the cache serves the new manifest.
    setup.fault.set(Fault::None);
    let moved = setup
        .upstream
        .push_image_with("library/app", "v1", 1000, false)
        .await
        .expect("move the tag upstream");
    until("the moved tag", Instant::now() + DEADLINE, || async {
        let response = setup.get(&path).await;
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (digest == moved.manifest_digest.to_string())
            .then_some(())
            .ok_or(digest)
    })
    .await
    .expect("the cache follows the upstream's tag");
    setup
        .cache
        .verify_image(&setup.cached(&moved))
        .await
        .expect("the moved image pulls");

    // Down altogether (the upstream moved to an address nothing listens on): the cached tag
    // still pulls, marked stale.
    let nowhere = common::closed_port_url();
    setup.serve.admin(&[
        "proxy",
        "add",
        "--id",
        "up",
        "--url",
        &nowhere,
        "--prefix",
        "hub",
        "--tag-ttl",
        "1",
    ]);
    let moved = setup.cached(&moved);
    until(
        "a stale answer from an unreachable upstream",
        Instant::now() + DEADLINE,
        || async {
            let response = setup.get(&path).await;
            let warning = response
                .headers()
                .get("warning")
                .map(|value| value.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            (response.status() == 200 && warning.contains("not reachable"))
                .then_some(())
                .ok_or(warning)
        },
    )
    .await
    .expect("the cached tag is served with the upstream unreachable");
    setup
        .cache
        .verify_image(&moved)
        .await
        .expect("the cached image pulls with the upstream unreachable");
}

/// While the upstream fails, concurrent pulls of a cached tag past its TTL share one upstream
/// attempt a second: the others are served the cached tag at once, marked stale, instead of
/// each waiting for an attempt of its own in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_of_a_stale_tag_share_one_upstream_attempt() {
    let setup = Setup::start().await;
    let cached = setup.cached(&setup.image);
    setup.cache.verify_image(&cached).await.expect("first pull");
    let path = format!("/v2/{}/manifests/v1", cached.repo);
    setup.fault.set(Fault::Status(503));
    let stale = || async {
        let response = setup.get(&path).await;
        let status = response.status();
        let warned = response.headers().contains_key("warning");
        let body = response.bytes().await.expect("body");
        status == 200 && warned && body.as_ref() == cached.manifest.as_slice()
    };
    until("a stale answer", Instant::now() + DEADLINE, || async {
        stale()
            .await
            .then_some(())
            .ok_or("not stale yet".to_owned())
    })
    .await
    .expect("the cached tag is served stale");
    let before = setup.fault.refused("HEAD", "/manifests/");
    let started = Instant::now();
    let answers = futures::future::join_all((0..32).map(|_| stale())).await;
    let seconds = started.elapsed().as_secs() as usize;
    assert!(answers.iter().all(|stale| *stale), "{answers:?}");
    let attempts = setup.fault.refused("HEAD", "/manifests/") - before;
    // One attempt a second: the batch's whole seconds, plus the window open when it started
    // and the one open when it ended.
    assert!(
        attempts <= seconds + 2,
        "{attempts} upstream attempts for 32 pulls in {seconds} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_or_altered_blob_is_never_stored_and_the_next_pull_fetches_again() {
    let setup = Setup::start().await;
    // The layer is cut mid-way; the config has a byte flipped.
    let faults = [Fault::CutAfter(100_000), Fault::FlipByte(10)];
    for ((digest, content), fault) in setup.image.blobs.iter().rev().zip(faults) {
        let path = format!("/v2/hub/library/app/blobs/{digest}");
        let fetches = || setup.fault.count("GET", &digest.to_string());
        setup.fault.set(fault);
        let body = setup.get(&path).await.bytes().await;
        assert!(
            body.as_ref().map_or(true, |body| !digest.verifies(body)),
            "{fault:?}: a client never gets a body that passes for the blob"
        );
        assert_eq!(fetches(), 1);
        setup.fault.set(Fault::None);
        // Nothing was committed, so the next pull goes upstream again and gets the bytes.
        let body = setup.get(&path).await.bytes().await.expect("a whole body");
        assert_eq!(body.as_ref(), content.as_slice(), "{fault:?}");
        assert_eq!(fetches(), 2);
        // That one was stored.
        let body = setup.get(&path).await.bytes().await.expect("a cached body");
        assert_eq!(body.as_ref(), content.as_slice());
        assert_eq!(fetches(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_of_a_missing_manifest_or_blob_cause_one_upstream_fetch() {
    // A tag trusted for minutes: the 32 pulls below all fall within it.
    let setup = Setup::start_with("", &["--tag-ttl", "300"]).await;
    let tag_path = format!("/v2/hub/{}/manifests/v1", setup.image.repo);
    let pulls = (0..32).map(|_| async {
        let response = setup.get(&tag_path).await;
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body")
    });
    let manifests = futures::future::join_all(pulls).await;
    assert!(manifests
        .iter()
        .all(|manifest| manifest.as_ref() == setup.image.manifest.as_slice()));
    for method in ["HEAD", "GET"] {
        assert_eq!(
            setup.fault.count(method, "/manifests/"),
            1,
            "one {method} of the manifest upstream: {:#?}",
            setup.fault.forwarded()
        );
    }
    let content = common::random_bytes(8 << 20);
    let digest = setup
        .upstream
        .push_blob_chunked("library/app", &content, 1 << 20)
        .await
        .expect("push an 8 MiB blob upstream");
    let path = format!("/v2/hub/library/app/blobs/{digest}");
    let pulls = (0..32).map(|_| async {
        let body = setup.get(&path).await.bytes().await.expect("body");
        Digest::sha256_of(&body)
    });
    let digests = futures::future::join_all(pulls).await;
    assert!(digests.iter().all(|pulled| *pulled == digest));
    assert_eq!(
        setup.fault.count("GET", &digest.to_string()),
        1,
        "{:#?}",
        setup.fault.forwarded()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_upstreams_are_managed_through_wharf_admin() {
    let serve = Serve::start("", &[]).await;
    let nowhere = common::closed_port_url();
    serve.admin(&[
        "proxy",
        "add",
        "--id",
        "hub",
        "--url",
        &nowhere,
        "--prefix",
        "dockerhub",
    ]);
    let listed: Value = serde_json::from_str(&serve.admin(&["proxy", "list"])).expect("list JSON");
    assert_eq!(listed["proxies"][0]["id"], "hub");
    assert_eq!(listed["proxies"][0]["tag_ttl_secs"], 300);
    // An overlapping prefix, a bad URL: refused with the reason.
    for (args, reason) in [
        (
            ["--id", "b", "--url", &nowhere, "--prefix", "dockerhub/x"],
            "overlaps",
        ),
        (
            ["--id", "c", "--url", "ftp://host", "--prefix", "other"],
            "http",
        ),
    ] {
        let output = serve.admin_output(&[&["proxy", "add"][..], &args[..]].concat());
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{stderr}");
    }
    // The status probes the upstream from here: nothing listens there.
    let status: Value =
        serde_json::from_str(&serve.admin(&["proxy", "status"])).expect("status JSON");
    assert_eq!(status["proxies"][0]["reachable"], false, "{status}");
    assert!(status["proxies"][0]["error"]
        .as_str()
        .is_some_and(|error| error.contains("not reachable")));
    serve.admin(&["proxy", "rm", "hub"]);
    let listed: Value = serde_json::from_str(&serve.admin(&["proxy", "list"])).expect("list JSON");
    assert_eq!(listed["proxies"], serde_json::json!([]));
    assert!(!serve.admin_output(&["proxy", "rm", "hub"]).status.success());
}

/// Issue 16's acceptance: 32 concurrent pulls of one uncached 64 MiB blob through the 2
/// gateways of a 3/3/2 cluster cause exactly 1 upstream GET of it; every client gets the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_fetches_a_blob_missed_through_two_gateways_once() {
    use cluster_api::{MetaApi, ProxyUpstream, ReplicationPolicy};
    let distribution = Distribution::start().await;
    let upstream = Registry::new(distribution.url.clone());
    let content = common::random_bytes(64 << 20);
    let digest = upstream
        .push_blob_chunked("library/big", &content, 8 << 20)
        .await
        .expect("push 64 MiB upstream");
    drop(content);
    let fault = FaultProxy::start(&distribution.url).await;
    let policy = ReplicationPolicy {
        replicas: 2,
        write_quorum: 0,
    };
    let cluster = test_cluster::InProcessCluster::start(3, 3, 2, policy)
        .await
        .expect("cluster starts");
    let meta = cluster_client::MetaClient::new(
        &cluster.meta_addrs(),
        cluster_client::RetryPolicy::default(),
    )
    .expect("meta client");
    meta.put_proxy(ProxyUpstream {
        id: "up".into(),
        url: fault.url.clone(),
        prefix: "hub".into(),
        tag_ttl_secs: 60,
        cache_ttl_secs: 0,
        username: None,
        password: None,
        mirror: false,
        ca_pem: None,
    })
    .await
    .expect("add the upstream");
    let gateways = [cluster.gateway_url(1), cluster.gateway_url(2)];
    let http = reqwest::Client::new();
    let pulls = (0..32).map(|n| {
        let url = format!("{}/v2/hub/library/big/blobs/{digest}", gateways[n % 2]);
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.expect("GET answered");
            assert_eq!(response.status(), 200);
            let mut digester = oci_model::Digester::new(oci_model::Algorithm::Sha256);
            let mut stream = response.bytes_stream();
            use futures::StreamExt;
            while let Some(piece) = stream.next().await {
                digester.update(&piece.expect("body piece"));
            }
            digester.finish()
        }
    });
    let pulled = futures::future::join_all(pulls).await;
    assert!(pulled.iter().all(|pulled| *pulled == digest));
    assert_eq!(
        fault.count("GET", &digest.to_string()),
        1,
        "{:#?}",
        fault.forwarded()
    );
    cluster.shutdown().await;
}

/// docker's `registry-mirrors`: with the upstream as the mirror, `library/app` (a repository this
/// registry does not have) pulls from the upstream and is kept under the prefix, while pushes of
/// this registry's own repositories are untouched, and what neither has is a plain 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mirror_answers_pulls_of_repositories_this_registry_does_not_have() {
    let setup = Setup::start().await;
    setup.serve.admin(&[
        "proxy",
        "add",
        "--id",
        "up",
        "--url",
        &setup.fault.url,
        "--prefix",
        "hub",
        "--mirror",
    ]);
    let listed: Value =
        serde_json::from_str(&setup.serve.admin(&["proxy", "list"])).expect("list JSON");
    assert_eq!(listed["proxies"][0]["mirror"], true);
    until("the mirror", Instant::now() + DEADLINE, || async {
        setup.cache.verify_image(&setup.image).await
    })
    .await
    .expect("library/app pulls through the mirror under its own name");
    assert_eq!(setup.fault.count("GET", "/blobs/"), 2);
    // Kept under the prefix, where a second pull (by the prefixed name) finds it.
    setup
        .cache
        .verify_image(&setup.cached(&setup.image))
        .await
        .expect("the cached copy under hub/");
    assert_eq!(setup.fault.count("GET", "/blobs/"), 2);
    // This registry's own repositories push and pull as ever.
    let own = setup
        .cache
        .push_image("team/app", "v1", 1000)
        .await
        .expect("push an own repository");
    setup.cache.verify_image(&own).await.expect("pull it");
    // A pushing client's check of a blob it is about to upload (HEAD) never goes to the mirror.
    let missing = Digest::sha256_of(b"a layer about to be pushed");
    let head = setup
        .cache
        .http
        .head(format!("{}/v2/team/app/blobs/{missing}", setup.cache.base))
        .send()
        .await
        .expect("HEAD answered");
    assert_eq!(head.status(), 404);
    assert_eq!(
        setup.fault.count("HEAD", "/v2/team/"),
        0,
        "{:#?}",
        setup.fault.forwarded()
    );
    // Neither has it: 404, as if there were no mirror.
    let missing = setup.get("/v2/nobody/here/manifests/v1").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "MANIFEST_UNKNOWN");
}

/// Cached content nobody pulls for the upstream's cache TTL is collected: the manifests by the
/// leader's eviction pass, then their blobs by the sweep; the next pull fetches again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_cached_content_is_collected_and_fetched_again_when_pulled() {
    let setup = Setup::start_with(
        "[gc]\ninterval_ms = 100\nupload_grace_ms = 100\n",
        &["--cache-ttl", "1"],
    )
    .await;
    let Setup {
        fault,
        serve,
        cache,
        image,
        ..
    } = &setup;
    let cached = setup.cached(image);
    cache.verify_image(&cached).await.expect("first pull");
    assert_eq!(fault.count("GET", "/blobs/"), 2);
    let physical = || {
        let usage: Value =
            serde_json::from_str(&serve.admin(&["usage", "hub"])).expect("usage JSON");
        usage[0]["physical_bytes"].as_u64().unwrap_or(0)
    };
    until(
        "the idle cache collected",
        Instant::now() + DEADLINE,
        || async {
            match physical() {
                0 => Ok(()),
                left => Err(format!("{left} bytes left")),
            }
        },
    )
    .await
    .expect("idle content goes");
    cache.verify_image(&cached).await.expect("pull again");
    assert_eq!(fault.count("GET", "/blobs/"), 4, "{:#?}", fault.forwarded());
}

/// A miss streams: with the upstream holding its body after its first MiB, the client already
/// has bytes of the blob; the rest follows when the upstream goes on, and it is all right.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_miss_reaches_the_client_before_the_upstream_transfer_ends() {
    use futures::StreamExt;
    let setup = Setup::start().await;
    let content = common::random_bytes(16 << 20);
    let digest = setup
        .upstream
        .push_blob_chunked("library/app", &content, 4 << 20)
        .await
        .expect("push 16 MiB upstream");
    setup.fault.set(Fault::PauseAfter(1 << 20));
    let response = setup
        .get(&format!("/v2/hub/library/app/blobs/{digest}"))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    let first = tokio::time::timeout(DEADLINE, async {
        while received.len() < 256 << 10 {
            let piece = body.next().await.expect("more body").expect("a piece");
            received.extend_from_slice(&piece);
        }
    })
    .await;
    assert!(
        first.is_ok(),
        "no byte reached the client while the upstream held the rest of the body"
    );
    assert!(received.len() < content.len());
    setup.fault.set(Fault::None);
    while let Some(piece) = body.next().await {
        received.extend_from_slice(&piece.expect("a piece"));
    }
    assert!(received == content, "the whole blob, in order");
}

/// `wharf bench pull --pull-url --pull-prefix --passes` (what benches/proxy_cache.sh runs): the
/// blobs are pushed upstream and pulled through the cache twice, cold then warm; the warm pass
/// reaches the upstream not once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_load_tool_pulls_through_a_cache_cold_then_warm() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: load::BenchArgs,
    }
    let setup = Setup::start().await;
    let argv = [
        "bench",
        "--url",
        &setup.fault.url,
        "--quiet",
        "pull",
        "--count",
        "12",
        "--size",
        "100000",
        "-c",
        "4",
        "--verify",
        "--pull-url",
        &setup.serve.base,
        "--pull-prefix",
        "hub",
        "--passes",
        "2",
    ];
    let cli = Cli::try_parse_from(argv).expect("valid bench arguments");
    let report = load::run(&cli.bench).await.expect("the workload runs");
    assert_eq!(
        (report.ok, report.errors),
        (12, 0),
        "{:?}",
        report.error_samples
    );
    assert_eq!(report.passes.len(), 1);
    let warm = &report.passes[0];
    assert_eq!((warm.ok, warm.errors), (12, 0), "{:?}", warm.error_samples);
    assert_eq!(
        setup.fault.count("GET", "/blobs/sha256:"),
        12,
        "each blob fetched once, in the cold pass: {:#?}",
        setup.fault.forwarded()
    );
}

/// An upstream that wants credentials: `wharf serve --auth`, which speaks the Docker token flow.
/// The cache logs in as the robot the operator gave it (`--user --password-stdin`); with a
/// wrong secret a pull of anything not cached is a clear 502 and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_behind_the_token_flow_is_pulled_as_the_robot_the_operator_gave() {
    use common::auth_serve::{basic, registry, AuthServe};
    let upstream = AuthServe::start(&[]).await;
    upstream.user("admin", "admin-password", true);
    let secret = upstream.robot("mirror", "library/**", "pull");
    let image = registry(&upstream.base, Some(&basic("admin", "admin-password")))
        .push_image("library/app", "v1", 100_000)
        .await
        .expect("push to the upstream");
    let serve = Serve::start("", &[]).await;
    let add = |id: &str, prefix: &str, secret: &str| {
        serve.admin_with_input(
            &[
                "proxy",
                "add",
                "--id",
                id,
                "--url",
                &upstream.base,
                "--prefix",
                prefix,
                "--user",
                "mirror",
                "--password-stdin",
            ],
            &format!("{secret}\n"),
        )
    };
    add("up", "hub", &secret);
    let listed: Value = serde_json::from_str(&serve.admin(&["proxy", "list"])).expect("list JSON");
    assert_eq!(listed["proxies"][0]["username"], "mirror");
    assert_eq!(listed["proxies"][0]["has_password"], true);
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is never shown"
    );
    let cache = Registry::new(serve.base.clone());
    let cached = PushedImage {
        repo: "hub/library/app".into(),
        ..image.clone()
    };
    cache
        .verify_image(&cached)
        .await
        .expect("pulled with the robot's token");

    add("bad", "badhub", "wharf_not-the-secret");
    // Gateways read the upstreams at most every 2 s: until then, badhub is no proxy prefix.
    let body: Value = until("the 502", Instant::now() + DEADLINE, || async {
        let response = cache
            .http
            .get(format!("{}/v2/badhub/library/app/manifests/v1", cache.base))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            502 => response.json().await.map_err(|e| e.to_string()),
            other => Err(format!("answered {other}")),
        }
    })
    .await
    .expect("a wrong secret is the upstream's refusal");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("credentials"), "{body}");
    let catalog: Value = cache
        .http
        .get(format!("{}/v2/_catalog", cache.base))
        .send()
        .await
        .expect("catalog")
        .json()
        .await
        .expect("catalog JSON");
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["hub/library/app"])
    );
}

/// Upstreams declared in the config file (`[[proxy]]`, the password from the environment variable
/// it names) and on the command line (`--proxy ID=URL@PREFIX`) are in the Raft state once
/// `serve` is up: pulls go through them with no admin command.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstreams_from_the_config_file_and_the_command_line_are_set_at_start() {
    let distribution = Distribution::start().await;
    let image = Registry::new(distribution.url.clone())
        .push_image_with("library/app", "v1", 10_000, false)
        .await
        .expect("push to Distribution");
    let config = format!(
        "[[proxy]]\nid = \"up\"\nurl = \"{}\"\nprefix = \"hub\"\ntag_ttl_secs = 60\n",
        distribution.url
    );
    let other = format!("other={}@elsewhere", common::closed_port_url());
    let serve = Serve::start(&config, &["--proxy", &other]).await;
    let cache = Registry::new(serve.base.clone());
    let cached = PushedImage {
        repo: "hub/library/app".into(),
        ..image
    };
    until(
        "the configured upstream",
        Instant::now() + DEADLINE,
        || async { cache.verify_image(&cached).await },
    )
    .await
    .expect("pulled through the upstream the file declares");
    let listed: Value = serde_json::from_str(&serve.admin(&["proxy", "list"])).expect("list JSON");
    let ids: Vec<&str> = listed["proxies"]
        .as_array()
        .expect("proxies")
        .iter()
        .filter_map(|proxy| proxy["id"].as_str())
        .collect();
    assert_eq!(ids, ["other", "up"]);
    assert_eq!(listed["proxies"][1]["tag_ttl_secs"], 60);
}

/// The admin HTTP API (on `wharf serve --auth`, with an administrator's credentials) manages
/// upstreams and replication rules as `wharf admin` does: set and listed without their
/// passwords, bad input refused with 400 and the reason, removed, and a second removal 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_manages_upstreams_and_replication_rules() {
    use common::auth_serve::{basic, registry, AuthServe};
    let serve = AuthServe::start(&[]).await;
    serve.user("root", "root-password-1", true);
    let admin = registry(&serve.base, Some(&basic("root", "root-password-1")));
    let url = |path: &str| format!("{}/admin/v1/{path}", serve.base);
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.expect("admin API");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, text)
    };
    let upstream = common::closed_port_url();

    let (status, body) = send(admin.http.put(url("proxies/hub")).json(&serde_json::json!({
        "url": upstream, "prefix": "hub", "tag_ttl_secs": 60,
        "username": "robot", "password": "s3cret-value",
    })))
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"has_password\":true") && !body.contains("s3cret-value"),
        "{body}"
    );
    for (bad, needle) in [
        (
            serde_json::json!({"url": upstream, "prefix": "bad", "ca_pem": "hello"}),
            "ca_pem",
        ),
        (
            serde_json::json!({"url": "ftp://example", "prefix": "bad"}),
            "URL",
        ),
        (
            serde_json::json!({"url": upstream, "prefix": "hub/deeper"}),
            "prefix",
        ),
        (serde_json::json!({"url": upstream}), "prefix"),
    ] {
        let (status, body) = send(admin.http.put(url("proxies/bad")).json(&bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains(needle), "{bad}: {body}");
    }
    let (status, body) = send(admin.http.get(url("proxies"))).await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        listed["proxies"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["proxies"][0]["tag_ttl_secs"], 60);
    assert!(!body.contains("s3cret-value"));

    let (status, body) = send(
        admin
            .http
            .put(url("replication/dr"))
            .json(&serde_json::json!({
                "mode": "push", "url": upstream, "repositories": "prod/**", "deletes": true,
            })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        admin
            .http
            .put(url("replication/bad"))
            .json(&serde_json::json!({
                "mode": "sideways", "url": upstream, "repositories": "prod/**",
            })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(admin.http.put(url("replication/bad")).json(&serde_json::json!({
        "mode": "pull", "url": upstream, "repositories": "prod/**", "ca_pem": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    })))
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(admin.http.get(url("replication"))).await;
    assert_eq!(status, 200);
    let rules: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(rules["rules"].as_array().map(Vec::len), Some(1), "{rules}");
    assert_eq!(rules["rules"][0]["id"], "dr");
    assert_eq!(rules["rules"][0]["deletes"], true);
    let (status, body) = send(admin.http.get(url("replication/status"))).await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(report["rules"][0]["rule"], "dr", "{report}");
    assert!(report["rules"][0].get("lag_secs").is_some(), "{report}");

    for path in ["replication/dr", "proxies/hub"] {
        let (status, body) = send(admin.http.delete(url(path))).await;
        assert_eq!(status, 204, "{path}: {body}");
        let (status, body) = send(admin.http.delete(url(path))).await;
        assert_eq!(status, 404, "{path} again: {body}");
    }
}

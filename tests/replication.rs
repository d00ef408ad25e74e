//! Replication rules end to end: `wharf serve` pushes `prod/**` to CNCF Distribution 2.8 and to a
//! second `wharf serve`; tags moved and images deleted at the source follow (`--deletes`), and
//! referrers arrive (through the referrers API, or on Distribution, which has none, as the
//! referrers tag schema's indexes); a pull rule copies the other way; a tag immutable at the
//! destination is reported, not forced. Each destination is checked by listing it against the
//! source.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::distribution::Distribution;
use common::serve::Serve;
use common::{until, PushedImage, Registry};
use oci_model::Digest;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Whether `tag` is a referrers tag schema tag (`sha256-<hex>`): kept by replication for a
/// destination without the referrers API, listed on its own by [`referrers_of`].
fn is_referrers_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every (repository, tag) of `repos` at `registry` with the digest it points at.
async fn listing(
    registry: &Registry,
    repos: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let mut all = BTreeMap::new();
    for repo in repos {
        let response = registry
            .http
            .get(format!("{}/v2/{repo}/tags/list", registry.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() == 404 {
            continue;
        }
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        let tags: Vec<String> = body["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for tag in tags.into_iter().filter(|tag| !is_referrers_tag(tag)) {
            let head = registry
                .http
                .head(format!("{}/v2/{repo}/manifests/{tag}", registry.base))
                .header("Accept", OCI_MANIFEST)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let digest = head
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            all.insert(format!("{repo}:{tag}"), digest);
        }
    }
    Ok(all)
}

/// The digests of the manifests referring to `subject` at `registry`: by its referrers API, or
/// where it has none (404), by the referrers tag schema's index.
async fn referrers_of(
    registry: &Registry,
    repo: &str,
    subject: &Digest,
) -> Result<BTreeSet<String>, String> {
    let get = |url: String| async move {
        let response = registry
            .http
            .get(url)
            .header("Accept", OCI_INDEX)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() == 404 {
            return Ok::<_, String>(None);
        }
        let index: Value = response.json().await.map_err(|e| e.to_string())?;
        let digests = index["manifests"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|d| d["digest"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(digests))
    };
    if let Some(listed) = get(format!("{}/v2/{repo}/referrers/{subject}", registry.base)).await? {
        return Ok(listed);
    }
    let tag = format!("sha256-{}", subject.hex());
    Ok(get(format!("{}/v2/{repo}/manifests/{tag}", registry.base))
        .await?
        .unwrap_or_default())
}

/// Pushes an artifact (`artifact_type`, one small layer) whose subject is `subject`; its digest.
async fn push_referrer(registry: &Registry, subject: &PushedImage, artifact_type: &str) -> Digest {
    let empty = registry
        .push_blob_monolithic(&subject.repo, b"{}")
        .await
        .expect("the empty config");
    let payload = common::random_bytes(2_000);
    let layer = registry
        .push_blob_chunked(&subject.repo, &payload, 64 * 1024)
        .await
        .expect("the payload");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer.to_string(), "size": payload.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.manifest_digest.to_string(), "size": subject.manifest.len()},
        "annotations": {"org.example.note": "replicated"},
    })
    .to_string()
    .into_bytes();
    let digest = Digest::sha256_of(&manifest);
    registry
        .put_manifest(&subject.repo, &digest.to_string(), OCI_MANIFEST, &manifest)
        .await
        .expect("push the referrer")
}

async fn manifest_status(registry: &Registry, repo: &str, digest: &str) -> u16 {
    registry
        .http
        .head(format!("{}/v2/{repo}/manifests/{digest}", registry.base))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

/// Waits until `destination` lists exactly what `source` does.
async fn converges(source: &Registry, destination: &Registry, repos: &[String], what: &str) {
    let expected = listing(source, repos).await.expect("source listing");
    until(what, Instant::now() + DEADLINE, || async {
        let actual = listing(destination, repos).await?;
        (actual == expected)
            .then_some(())
            .ok_or_else(|| format!("expected {expected:#?}, got {actual:#?}"))
    })
    .await
    .expect("the destination matches the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_rules_copy_to_distribution_and_wharf_and_follow_moves_and_deletes() {
    // Full passes an hour apart: what reaches the destinations within the deadlines below is
    // the new rule's first pass and then the backlog each change puts its repository on.
    let source_serve = Serve::start("[replication]\ninterval_ms = 3600000\n", &[]).await;
    let source = Registry::new(source_serve.base.clone());
    let distribution = Distribution::start().await;
    let to_distribution = Registry::new(distribution.url.clone());
    let other_serve = Serve::start("", &[]).await;
    let to_wharf = Registry::new(other_serve.base.clone());

    // 20 images: 5 repositories of 4 tags, plus one repository no rule covers.
    let repos: Vec<String> = (0..5).map(|n| format!("prod/app-{n}")).collect();
    let mut images: Vec<PushedImage> = Vec::new();
    for repo in &repos {
        for tag in ["v1", "v2", "v3", "latest"] {
            images.push(source.push_image(repo, tag, 20_000).await.expect("push"));
        }
    }
    source
        .push_image("dev/app", "v1", 1000)
        .await
        .expect("push");
    // Referrers: two on one image, one on another (neither image is deleted below).
    let subjects: Vec<PushedImage> = images
        .iter()
        .filter(|i| (i.repo == repos[2] && i.tag == "v2") || (i.repo == repos[3] && i.tag == "v3"))
        .cloned()
        .collect();
    assert_eq!(subjects.len(), 2);
    let mut referrers = BTreeMap::new();
    for (subject, kinds) in subjects.iter().zip([
        &[
            "application/vnd.example.sig",
            "application/vnd.example.sbom",
        ][..],
        &["application/vnd.example.sig"][..],
    ]) {
        let mut pushed = BTreeSet::new();
        for kind in kinds {
            pushed.insert(push_referrer(&source, subject, kind).await.to_string());
        }
        referrers.insert(
            subject.manifest_digest.clone(),
            (subject.repo.clone(), pushed),
        );
    }
    source_serve.admin(&[
        "replication",
        "add",
        "--id",
        "dist",
        "--to",
        &distribution.url,
        "--repos",
        "prod/**",
        "--deletes",
    ]);
    source_serve.admin(&[
        "replication",
        "add",
        "--id",
        "wharf",
        "--to",
        &other_serve.base,
        "--repos",
        "prod/**",
        "--deletes",
    ]);
    let listed: Value =
        serde_json::from_str(&source_serve.admin(&["replication", "list"])).expect("JSON");
    assert_eq!(
        listed["rules"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_eq!(listed["rules"][0]["mode"], "push");

    converges(
        &source,
        &to_distribution,
        &repos,
        "the first copy to Distribution",
    )
    .await;
    converges(&source, &to_wharf, &repos, "the first copy to Wharf").await;
    for image in &images {
        to_distribution
            .verify_image(image)
            .await
            .expect("on Distribution");
        to_wharf
            .verify_image(image)
            .await
            .expect("on the second Wharf");
    }
    // Referrers, listed at both ends as at the source: by the second Wharf's referrers API, and
    // on Distribution through the referrers tag schema's indexes the copy keeps there.
    for (subject, (repo, pushed)) in &referrers {
        let at_source = referrers_of(&source, repo, subject).await.expect("source");
        assert_eq!(&at_source, pushed, "the source lists what was pushed");
        for (registry, name) in [(&to_wharf, "Wharf"), (&to_distribution, "Distribution")] {
            let listed = referrers_of(registry, repo, subject).await.expect(name);
            assert_eq!(listed, at_source, "referrers of {subject} on {name}");
            for digest in &listed {
                assert_eq!(
                    manifest_status(registry, repo, digest).await,
                    200,
                    "{digest} on {name}"
                );
            }
        }
    }
    let uncovered = listing(&to_wharf, &["dev/app".to_owned()])
        .await
        .expect("listing");
    assert!(
        uncovered.is_empty(),
        "dev/** is not replicated: {uncovered:?}"
    );

    // Move 3 tags, delete 2 images (every tag on them goes with them).
    let mut moved = Vec::new();
    for repo in &repos[..3] {
        moved.push(
            source
                .push_image(repo, "latest", 5_000)
                .await
                .expect("move"),
        );
    }
    let deleted: Vec<&PushedImage> = images.iter().filter(|i| i.tag == "v1").take(2).collect();
    for image in &deleted {
        let response = source
            .http
            .delete(format!(
                "{}/v2/{}/manifests/{}",
                source.base, image.repo, image.manifest_digest
            ))
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status(), 202);
    }
    converges(
        &source,
        &to_distribution,
        &repos,
        "moves and deletes on Distribution",
    )
    .await;
    converges(&source, &to_wharf, &repos, "moves and deletes on Wharf").await;
    for image in &moved {
        to_distribution
            .verify_image(image)
            .await
            .expect("moved tag on Distribution");
        to_wharf
            .verify_image(image)
            .await
            .expect("moved tag on Wharf");
    }
    for (subject, (repo, pushed)) in &referrers {
        let listed = referrers_of(&to_distribution, repo, subject)
            .await
            .expect("Distribution");
        assert_eq!(
            &listed, pushed,
            "a prune keeps the referrers index of {subject}"
        );
    }
    for image in &deleted {
        let digest = image.manifest_digest.to_string();
        assert_eq!(
            manifest_status(&to_distribution, &image.repo, &digest).await,
            404
        );
        assert_eq!(manifest_status(&to_wharf, &image.repo, &digest).await, 404);
    }
    // Each rule's status: a pass without errors (a pass that raced the deletes may have seen a
    // tag go mid-way; the next one is clean), a lag of seconds.
    until("clean passes", Instant::now() + DEADLINE, || async {
        let status: Value = serde_json::from_str(&source_serve.admin(&["replication", "status"]))
            .map_err(|e| e.to_string())?;
        let rules = status["rules"].as_array().cloned().unwrap_or_default();
        let clean = rules.len() == 2
            && rules.iter().all(|rule| {
                rule["lag_secs"].as_u64().is_some_and(|lag| lag < 60)
                    && rule["last_pass"]["errors"] == serde_json::json!([])
            });
        clean.then_some(()).ok_or_else(|| status.to_string())
    })
    .await
    .expect("every rule's last pass is clean");
    // Removing a rule stops it and drops its status.
    source_serve.admin(&["replication", "rm", "wharf"]);
    let status: Value =
        serde_json::from_str(&source_serve.admin(&["replication", "status"])).expect("JSON");
    assert_eq!(
        status["rules"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_rule_copies_another_registry_in() {
    let distribution = Distribution::start().await;
    let remote = Registry::new(distribution.url.clone());
    let image = remote
        .push_image_with("vendor/tool", "v1", 30_000, false)
        .await
        .expect("push");
    let serve = Serve::start("[replication]\ninterval_ms = 200\n", &[]).await;
    let local = Registry::new(serve.base.clone());
    serve.admin(&[
        "replication",
        "add",
        "--id",
        "in",
        "--from",
        &distribution.url,
        "--repos",
        "vendor/**",
    ]);
    until("the pull", Instant::now() + DEADLINE, || async {
        local.verify_image(&image).await
    })
    .await
    .expect("the remote image is copied in");
    serve.admin(&["replication", "rm", "in"]);
    assert!(!serve
        .admin_output(&["replication", "rm", "in"])
        .status
        .success());
}

/// A rule declared in the config file (`[[replication.rule]]`) is written to the Raft state when
/// `serve` starts and carried out like one added with `wharf admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_from_the_config_file_is_in_effect_at_start() {
    let distribution = Distribution::start().await;
    let remote = Registry::new(distribution.url.clone());
    let image = remote
        .push_image_with("vendor/lib", "v2", 20_000, false)
        .await
        .expect("push");
    let config = format!(
        "[replication]\ninterval_ms = 200\n[[replication.rule]]\nid = \"in\"\nfrom = \"{}\"\n\
         repos = \"vendor/**\"\ntags = \"v*\"\n",
        distribution.url
    );
    let serve = Serve::start(&config, &[]).await;
    let local = Registry::new(serve.base.clone());
    until("the pull", Instant::now() + DEADLINE, || async {
        local.verify_image(&image).await
    })
    .await
    .expect("the configured rule copies the image in");
    let listed: Value = serde_json::from_str(&serve.admin(&["replication", "list"])).expect("JSON");
    assert_eq!(listed["rules"][0]["id"], "in", "{listed}");
    assert_eq!(listed["rules"][0]["mode"], "pull", "{listed}");
    assert_eq!(listed["rules"][0]["tags"], "v*", "{listed}");
}

/// A tag that is immutable at the destination (a second Wharf's immutable rule) and moves at the
/// source is left as it is there and reported in the rule's status (`refused`), not as an
/// error; the rest of the repository still follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_immutable_at_the_destination_is_reported_not_forced() {
    let source_serve = Serve::start("[replication]\ninterval_ms = 500\n", &[]).await;
    let source = Registry::new(source_serve.base.clone());
    let other = Serve::start("", &[]).await;
    let destination = Registry::new(other.base.clone());
    other.admin(&["immutable", "add", "--repos", "prod/**", "--tags", "v*"]);
    let repos = ["prod/app".to_owned()];
    let first = source
        .push_image("prod/app", "v1", 5_000)
        .await
        .expect("push");
    source_serve.admin(&[
        "replication",
        "add",
        "--id",
        "w",
        "--to",
        &other.base,
        "--repos",
        "prod/**",
        "--deletes",
    ]);
    converges(&source, &destination, &repos, "the first copy").await;
    // v1 moves at the source, and a new tag arrives beside it.
    let moved = source
        .push_image("prod/app", "v1", 5_000)
        .await
        .expect("move");
    let latest = source
        .push_image("prod/app", "latest", 5_000)
        .await
        .expect("push");
    until("the new tag", Instant::now() + DEADLINE, || async {
        destination.verify_image(&latest).await
    })
    .await
    .expect("latest is copied");
    let status = until(
        "the refusal reported",
        Instant::now() + DEADLINE,
        || async {
            let status: Value =
                serde_json::from_str(&source_serve.admin(&["replication", "status"]))
                    .map_err(|e| e.to_string())?;
            let rule = &status["rules"][0];
            let refused = rule["last_pass"]["refused"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let reported = refused
                .iter()
                .any(|r| r.as_str().is_some_and(|r| r.contains("prod/app:v1")));
            (reported && rule["last_pass"]["errors"] == serde_json::json!([]))
                .then_some(status.clone())
                .ok_or_else(|| status.to_string())
        },
    )
    .await
    .expect("the refused move is in the status, and no error");
    assert!(
        status
            .to_string()
            .contains(&moved.manifest_digest.to_string()),
        "the refusal names the digest it would have moved to: {status}"
    );
    // The destination's v1 is what it was.
    destination
        .verify_image(&first)
        .await
        .expect("v1 unchanged");
}

/// A push rule for `prod/**` to `url`, with no credentials.
fn push_rule(id: &str, url: String, deletes: bool) -> cluster_api::ReplicationRule {
    cluster_api::ReplicationRule {
        id: id.into(),
        mode: cluster_api::ReplicationMode::Push,
        url,
        repositories: "prod/**".into(),
        tags: None,
        deletes,
        username: None,
        password: None,
        ca_pem: None,
    }
}

/// Issue 16's acceptance: a push rule from a 3-voter cluster to Distribution, with the meta
/// leader stopped while images are pushed and replicated: the backlog is in the Raft state, so
/// the new leader copies what the old one had not, and nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_lost_mid_replication_skips_nothing() {
    use cluster_api::{MetaApi, ReplicationPolicy};
    use test_cluster::{InProcessCluster, Role};
    let distribution = Distribution::start().await;
    let destination = Registry::new(distribution.url.clone());
    let mut cluster = InProcessCluster::start(3, 1, 1, ReplicationPolicy::default())
        .await
        .expect("cluster starts");
    let meta = cluster_client::MetaClient::new(
        &cluster.meta_addrs(),
        cluster_client::RetryPolicy::default(),
    )
    .expect("meta client");
    meta.put_replication_rule(push_rule("dr", distribution.url.clone(), true))
        .await
        .expect("add the rule");
    let gateway = Registry::new(cluster.gateway_url(1));
    let repos: Vec<String> = (0..4).map(|n| format!("prod/svc-{n}")).collect();
    let mut images = Vec::new();
    for (n, repo) in repos.iter().enumerate() {
        images.push(gateway.push_image(repo, "v1", 50_000).await.expect("push"));
        if n == 1 {
            let leader = cluster
                .wait_for_leader(Duration::from_secs(20))
                .await
                .expect("a leader");
            cluster
                .stop(Role::Meta, leader)
                .await
                .expect("stop the leader");
        }
    }
    // Pushed after the failover, through the new leader.
    for repo in &repos {
        images.push(gateway.push_image(repo, "v2", 20_000).await.expect("push"));
    }
    converges(
        &gateway,
        &destination,
        &repos,
        "every image on Distribution",
    )
    .await;
    for image in &images {
        destination
            .verify_image(image)
            .await
            .expect("verified on Distribution");
    }
    cluster.shutdown().await;
}

/// A member stops within its grace when its replicator is in the middle of a copy to a registry
/// that never answers and the member is the last voter of its cluster (its quorum gone, so the
/// status write at the end of the pass could never commit): the pass is cut short, not waited
/// for (before, the stop waited out the 60 s read timeout and then that write, forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_voter_mid_copy_stops_within_its_grace() {
    use cluster_api::{MetaApi, ReplicationPolicy};
    use test_cluster::{InProcessCluster, Role};
    // A "registry" that takes connections and reads requests but never answers one.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("address"));
    let (connected, mut connections) = tokio::sync::watch::channel(0usize);
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
            connected.send_replace(held.len());
        }
    });
    let mut cluster = InProcessCluster::start(3, 1, 1, ReplicationPolicy::default())
        .await
        .expect("cluster starts");
    let gateway = Registry::new(cluster.gateway_url(1));
    gateway
        .push_image("prod/app", "v1", 5_000)
        .await
        .expect("push");
    let meta = cluster_client::MetaClient::new(
        &cluster.meta_addrs(),
        cluster_client::RetryPolicy::default(),
    )
    .expect("meta client");
    meta.put_replication_rule(push_rule("silent", silent_url, false))
        .await
        .expect("add the rule");
    // The leader's replicator starts its pass and waits on the silent registry.
    tokio::time::timeout(DEADLINE, connections.wait_for(|n| *n > 0))
        .await
        .expect("the replicator reaches the silent registry in time")
        .expect("the listener runs");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    for id in cluster.meta_ids().into_iter().filter(|id| *id != leader) {
        cluster.stop(Role::Meta, id).await.expect("stop a follower");
    }
    // The grace is 10 s; a stop that waits for the pass takes 60 s and more.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), cluster.stop(Role::Meta, leader))
        .await
        .expect("the last voter stops within 30 s")
        .expect("stop the leader");
    eprintln!("the last voter stopped in {:?}", started.elapsed());
    // With meta gone, the blob node's heartbeat retries for seconds: a stop cuts it short.
    tokio::time::timeout(Duration::from_secs(30), cluster.shutdown())
        .await
        .expect("the blob node and the gateway stop within 30 s");
    holder.abort();
}

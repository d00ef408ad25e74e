//! Storage lifecycle end to end on `wharf serve`: garbage collection reclaims deleted images
//! online and never what is referenced; abandoned uploads expire with their staging files;
//! retention with its dry run; quotas at the boundary; usage; fsck finding and repairing
//! orphans and reporting lost blobs. The operator side goes through `wharf admin`, as the README
//! shows it.

mod common;

use std::time::{Duration, Instant};

use common::serve::{fast_gc_config, files_under, Serve};
use common::{random_bytes, until, PushedImage, Registry};
use oci_model::Digest;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);
/// How long an unreferenced blob is kept: long enough that a slow machine always gets from a
/// layer's push to the manifest that references it (a shorter grace made pushes here race the
/// collector: a manifest PUT answered 400 for a layer already collected).
const GRACE_MS: u64 = 2_000;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image over `layers` (already pushed to `repo`) with a fresh config, tagged `tag`.
async fn image_over(
    registry: &Registry,
    repo: &str,
    tag: &str,
    layers: &[&(Digest, Vec<u8>)],
) -> PushedImage {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","nonce":"{}"}}"#,
        common::hex_of(&random_bytes(8))
    );
    let config_digest = registry
        .push_blob_monolithic(repo, config.as_bytes())
        .await
        .expect("push config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers.iter().map(|(digest, data)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": data.len()})).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes();
    let manifest_digest = registry
        .put_manifest(repo, tag, OCI_MANIFEST, &manifest)
        .await
        .expect("push manifest");
    let mut blobs = vec![(config_digest, config.into_bytes())];
    blobs.extend(layers.iter().map(|layer| (*layer).clone()));
    PushedImage {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest,
        manifest_digest,
        blobs,
    }
}

async fn push_layer(registry: &Registry, repo: &str, len: usize) -> (Digest, Vec<u8>) {
    let data = random_bytes(len);
    let digest = registry
        .push_blob_monolithic(repo, &data)
        .await
        .expect("push layer");
    (digest, data)
}

async fn delete_manifest(registry: &Registry, repo: &str, digest: &Digest) -> reqwest::StatusCode {
    registry
        .http
        .delete(format!("{}/v2/{repo}/manifests/{digest}", registry.base))
        .send()
        .await
        .expect("DELETE manifest")
        .status()
}

fn blob_file(serve: &Serve, digest: &Digest) -> std::path::PathBuf {
    let hex = digest.hex();
    serve
        .blob_dir()
        .join("blobs")
        .join("sha256")
        .join(&hex[..2])
        .join(hex)
}

/// Waits (with the deadline) until `path` no longer exists.
async fn until_gone(serve: &Serve, what: &str, path: std::path::PathBuf) {
    until(what, Instant::now() + DEADLINE, || {
        let present = path.exists();
        async move {
            if present {
                Err("still on disk".to_owned())
            } else {
                Ok(())
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
}

fn usage_of(serve: &Serve, namespace: &str) -> Value {
    let usage = serve.admin_json(&["usage", namespace]);
    usage[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reclaims_deleted_images_online_and_keeps_what_is_referenced() {
    let serve = Serve::start(&fast_gc_config(GRACE_MS, 60_000, 60_000), &[]).await;
    let registry = Registry::new(serve.base.clone());
    let shared = push_layer(&registry, "team/a", 200_000).await;
    let only_one = push_layer(&registry, "team/a", 100_000).await;
    let first = image_over(&registry, "team/a", "v1", &[&shared, &only_one]).await;
    let other = push_layer(&registry, "team/b", 50_000).await;
    registry
        .push_blob_monolithic("team/b", &shared.1)
        .await
        .expect("second repository, same layer");
    let second = image_over(&registry, "team/b", "v1", &[&shared, &other]).await;
    // An upload no manifest ever uses: collected once its grace has passed.
    let stray = push_layer(&registry, "team/a", 10_000).await;

    let usage = usage_of(&serve, "team");
    let distinct: u64 = [&first, &second]
        .iter()
        .flat_map(|image| image.blobs.iter())
        .map(|(digest, data)| (digest.clone(), data.len() as u64))
        .collect::<std::collections::BTreeMap<_, _>>()
        .values()
        .sum::<u64>()
        + stray.1.len() as u64
        + (first.manifest.len() + second.manifest.len()) as u64;
    assert_eq!(usage["physical_bytes"], distinct, "{usage}");
    assert!(usage["logical_bytes"].as_u64() > usage["physical_bytes"].as_u64());

    // The stray upload goes; everything the two images use stays, byte for byte.
    until_gone(
        &serve,
        "the stray upload to be collected",
        blob_file(&serve, &stray.0),
    )
    .await;
    registry
        .verify_image(&first)
        .await
        .expect("first image intact");
    registry
        .verify_image(&second)
        .await
        .expect("second image intact");

    // A blob a manifest uses cannot be deleted on its own.
    let refused = registry
        .http
        .delete(format!("{}/v2/team/a/blobs/{}", serve.base, shared.0))
        .send()
        .await
        .expect("DELETE blob");
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("error body");
    assert_eq!(body["errors"][0]["code"], "DENIED");

    // Deleting the first image frees its own layer; the shared one stays for the second.
    assert_eq!(
        delete_manifest(&registry, "team/a", &first.manifest_digest).await,
        202
    );
    until_gone(
        &serve,
        "the first image's own layer to go",
        blob_file(&serve, &only_one.0),
    )
    .await;
    assert!(blob_file(&serve, &shared.0).exists());
    registry
        .verify_image(&second)
        .await
        .expect("second image intact");

    // Deleting the second frees the rest: no blob file, no usage, fsck clean.
    assert_eq!(
        delete_manifest(&registry, "team/b", &second.manifest_digest).await,
        202
    );
    // A copy leaves `blobs/` for `trash/` before meta confirms its deletion: wait for both.
    let (blobs, trash) = (
        serve.blob_dir().join("blobs"),
        serve.blob_dir().join("trash"),
    );
    until("every blob file to go", Instant::now() + DEADLINE, || {
        let (blobs, trash) = (blobs.clone(), trash.clone());
        async move {
            match (files_under(&blobs), files_under(&trash)) {
                ((0, _), (0, _)) => Ok(()),
                ((count, bytes), (set_aside, _)) => Err(format!(
                    "{count} files, {bytes} bytes left; {set_aside} set aside"
                )),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    let usage = serve.admin_json(&["usage"]);
    assert_eq!(usage, serde_json::json!([]), "no namespace holds anything");
    let report = serve.admin_json(&["fsck"]);
    assert_eq!(report["meta_problems"], serde_json::json!([]), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_expire_with_their_staging_files() {
    let serve = Serve::start(&fast_gc_config(60_000, 1_000, 500), &[]).await;
    let http = reqwest::Client::new();
    let started = http
        .post(format!("{}/v2/team/app/blobs/uploads/", serve.base))
        .send()
        .await
        .expect("POST upload");
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let patched = http
        .patch(format!("{}{location}", serve.base))
        .header("Content-Range", "0-4095")
        .body(vec![7u8; 4096])
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), 202);
    let uploads = serve.blob_dir().join("uploads");
    assert_eq!(files_under(&uploads).0, 1, "the staging file exists");

    // The session expires in meta, then the node removes its staging file.
    until("the upload to expire", Instant::now() + DEADLINE, || {
        let (http, url, uploads) = (
            http.clone(),
            format!("{}{location}", serve.base),
            uploads.clone(),
        );
        async move {
            let status = http
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .status();
            let staged = files_under(&uploads).0;
            if status == 404 && staged == 0 {
                Ok(())
            } else {
                Err(format!("upload status {status}, {staged} staging files"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    let body: Value = http
        .get(format!("{}{location}", serve.base))
        .send()
        .await
        .expect("GET upload")
        .json()
        .await
        .expect("error body");
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_tags_and_patterns_and_its_dry_run_removes_nothing() {
    let serve = Serve::start(&fast_gc_config(GRACE_MS, 60_000, 60_000), &[]).await;
    let registry = Registry::new(serve.base.clone());
    let layer = push_layer(&registry, "ci/app", 1_000).await;
    let mut images = Vec::new();
    // Pushed one after another, so each tag's push time is later than the one before.
    for tag in ["release-1", "b1", "b2", "b3", "b4"] {
        images.push(image_over(&registry, "ci/app", tag, &[&layer]).await);
    }
    let keep_me = image_over(
        &registry,
        "prod/app",
        "b0",
        &[&push_layer(&registry, "prod/app", 10).await],
    )
    .await;
    let tags = || async {
        let list: Value = registry
            .http
            .get(format!("{}/v2/ci/app/tags/list", serve.base))
            .send()
            .await
            .expect("tags list")
            .json()
            .await
            .expect("tags json");
        list["tags"].clone()
    };

    // A dry-run rule lists what would go and removes nothing.
    serve.admin(&[
        "retention",
        "add",
        "--id",
        "ci",
        "--repos",
        "ci/**",
        "--keep-last",
        "2",
        "--keep-tags",
        "release-*",
        "--untagged-older-than",
        "1s",
        "--dry-run",
    ]);
    let plan = serve.admin(&["retention", "plan", "--all"]);
    let untags: Vec<Value> = plan
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .filter(|action: &Value| action["action"] == "untag")
        .collect();
    let mut planned: Vec<&str> = untags
        .iter()
        .map(|a| a["tag"].as_str().expect("tag"))
        .collect();
    planned.sort_unstable();
    assert_eq!(planned, ["b1", "b2"], "{plan}");
    assert!(
        serve.admin(&["retention", "plan"]).trim().is_empty(),
        "dry-run rules are not enforced"
    );
    assert_eq!(
        tags().await,
        serde_json::json!(["b1", "b2", "b3", "b4", "release-1"])
    );

    // Enforced: the two oldest builds lose their tags, then (untagged, older than 1 s) go.
    serve.admin(&[
        "retention",
        "add",
        "--id",
        "ci",
        "--repos",
        "ci/**",
        "--keep-last",
        "2",
        "--keep-tags",
        "release-*",
        "--untagged-older-than",
        "1s",
    ]);
    until(
        "retention to prune the old builds",
        Instant::now() + DEADLINE,
        || async {
            let now = tags().await;
            if now == serde_json::json!(["b3", "b4", "release-1"]) {
                Ok(())
            } else {
                Err(format!("tags are {now}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    until(
        "the untagged builds to be deleted",
        Instant::now() + DEADLINE,
        || async {
            let mut left = Vec::new();
            for image in &images[1..3] {
                let status = registry
                    .http
                    .get(format!(
                        "{}/v2/ci/app/manifests/{}",
                        serve.base, image.manifest_digest
                    ))
                    .header("Accept", OCI_MANIFEST)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .status();
                if status != 404 {
                    left.push(format!("{} answers {status}", image.tag));
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join(", "))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    for image in [&images[0], &images[3], &images[4], &keep_me] {
        registry
            .verify_image(image)
            .await
            .expect("kept image intact");
    }
    serve.admin(&["retention", "rm", "ci"]);
    assert_eq!(
        serve.admin_json(&["retention", "list"]),
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_admits_a_push_that_fits_exactly_and_refuses_one_byte_more() {
    let serve = Serve::start(&fast_gc_config(60_000, 60_000, 60_000), &[]).await;
    let registry = Registry::new(serve.base.clone());
    let first = random_bytes(6_000);
    registry
        .push_blob_monolithic("team/app", &first)
        .await
        .expect("push");
    let used = usage_of(&serve, "team")["physical_bytes"]
        .as_u64()
        .expect("usage");
    assert_eq!(used, 6_000);
    serve.admin(&["quota", "set", "team", "10000"]);
    assert_eq!(usage_of(&serve, "team")["quota_bytes"], 10_000);

    // 4 000 more fits exactly; then one more byte is refused, clearly, and nothing is kept.
    registry
        .push_blob_chunked("team/app", &random_bytes(4_000), 1_500)
        .await
        .expect("a push that fits exactly");
    let over = random_bytes(1);
    let refused = registry
        .http
        .post(format!(
            "{}/v2/team/app/blobs/uploads/?digest={}",
            serve.base,
            Digest::sha256_of(&over)
        ))
        .body(over.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("error body");
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("quota") && message.contains("team"),
        "{message}"
    );
    let head = registry
        .http
        .head(format!(
            "{}/v2/team/app/blobs/{}",
            serve.base,
            Digest::sha256_of(&over)
        ))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 404);
    // What the namespace already holds costs nothing: the same bytes into another repository.
    registry
        .push_blob_monolithic("team/other", &first)
        .await
        .expect("re-linking stored content is free");
    // Other namespaces are not limited; removing the quota lifts it. (Other bytes than the
    // refused ones: those are being garbage-collected right now, and a push of exactly them
    // racing that deletion may be asked to retry; the fence tests in meta-store cover that.)
    let elsewhere = vec![over[0].wrapping_add(1)];
    registry
        .push_blob_monolithic("elsewhere/app", &elsewhere)
        .await
        .expect("other namespace");
    serve.admin(&["quota", "rm", "team"]);
    let after = vec![over[0].wrapping_add(2)];
    registry
        .push_blob_monolithic("team/app", &after)
        .await
        .expect("no quota any more");
    let usage = usage_of(&serve, "team");
    assert_eq!(usage["physical_bytes"], 10_001, "{usage}");
    assert_eq!(usage["logical_bytes"], 16_001, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_finds_orphans_and_lost_blobs_and_repairs_what_it_can() {
    let serve = Serve::start(&fast_gc_config(60_000, 60_000, 60_000), &[]).await;
    let registry = Registry::new(serve.base.clone());
    let kept = push_layer(&registry, "team/app", 3_000).await;
    let lost = push_layer(&registry, "team/app", 2_000).await;
    let clean = serve.admin_json(&["fsck"]);
    assert_eq!(clean["nodes"][0]["blobs"], 2, "{clean}");

    // An orphan: a verified blob file meta never heard of. A lost blob: its only copy removed.
    let orphan = random_bytes(1_234);
    let orphan_digest = Digest::sha256_of(&orphan);
    let orphan_path = blob_file(&serve, &orphan_digest);
    std::fs::create_dir_all(orphan_path.parent().expect("fan-out dir")).expect("mkdir");
    std::fs::write(&orphan_path, &orphan).expect("write orphan");
    std::fs::remove_file(blob_file(&serve, &lost.0)).expect("remove a blob");

    let output = serve.admin_output(&["fsck"]);
    assert!(!output.status.success(), "fsck must fail on damage");
    let report: Value = serde_json::from_slice(&output.stdout).expect("fsck json");
    let node = &report["nodes"][0];
    assert_eq!(node["orphans"][0][0], orphan_digest.to_string(), "{report}");
    assert_eq!(
        node["missing"],
        serde_json::json!([lost.0.to_string()]),
        "{report}"
    );
    assert_eq!(
        report["lost"],
        serde_json::json!([lost.0.to_string()]),
        "{report}"
    );

    // --repair hands the orphan to meta, which dooms it; the node then deletes it. The lost
    // blob stays reported: there is no copy to repair it from.
    let output = serve.admin_output(&["fsck", "--repair"]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("fsck json");
    assert_eq!(report["repaired"]["orphans_doomed"], 1, "{report}");
    until_gone(&serve, "the orphan to be deleted", orphan_path.clone()).await;
    let after = serve.admin_output(&["fsck"]);
    let report: Value = serde_json::from_slice(&after.stdout).expect("fsck json");
    assert_eq!(
        report["nodes"][0]["orphans"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(
        report["lost"],
        serde_json::json!([lost.0.to_string()]),
        "{report}"
    );
    assert!(!after.status.success());
    let intact = registry
        .http
        .get(format!("{}/v2/team/app/blobs/{}", serve.base, kept.0))
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert_eq!(intact.as_ref(), kept.1.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_arch_index_keeps_its_children() {
    let serve = Serve::start(&fast_gc_config(GRACE_MS, 60_000, 60_000), &[]).await;
    let registry = Registry::new(serve.base.clone());
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = push_layer(&registry, "team/multi", 5_000).await;
        let image = image_over(&registry, "team/multi", arch, &[&layer]).await;
        children.push(image);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|child| serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": child.manifest_digest.to_string(), "size": child.manifest.len()
        })).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes();
    let index_digest = registry
        .put_manifest("team/multi", "latest", OCI_INDEX, &index)
        .await
        .expect("push index");
    // The children lose their own tags: they now live only through the index.
    for child in &children {
        let status = registry
            .http
            .delete(format!(
                "{}/v2/team/multi/manifests/{}",
                serve.base, child.tag
            ))
            .send()
            .await
            .expect("DELETE tag")
            .status();
        assert_eq!(status, 202);
    }
    // A blob nothing references, pushed after every child: once the collector has taken it,
    // every layer's grace has passed too, so the passes below could take them if they were
    // unreferenced.
    let junk = push_layer(&registry, "team/multi", 1_000).await;
    until_gone(
        &serve,
        "the unreferenced blob collected",
        blob_file(&serve, &junk.0),
    )
    .await;
    // Collection runs several times over; the children and their layers stay, and a delete of
    // a child is refused while the index lives.
    for _ in 0..3 {
        serve.admin_json(&["gc"]);
    }
    let refused = delete_manifest(&registry, "team/multi", &children[0].manifest_digest).await;
    assert_eq!(refused, 403);
    for child in &children {
        let by_digest = PushedImage {
            tag: child.manifest_digest.to_string(),
            ..child.clone()
        };
        registry
            .verify_image(&by_digest)
            .await
            .expect("child intact");
    }
    // The index goes, and its untagged children with it.
    assert_eq!(
        delete_manifest(&registry, "team/multi", &index_digest).await,
        202
    );
    for child in &children {
        let status = registry
            .http
            .get(format!(
                "{}/v2/team/multi/manifests/{}",
                serve.base, child.manifest_digest
            ))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET")
            .status();
        assert_eq!(status, 404);
    }
}

/// SIGKILL in the middle of garbage collection, again and again: copies set aside when the
/// process died are put back at start (never lost while meta still counts them), confirmed ones
/// are gone or go, the image still in use is intact after every restart, and in the end every
/// collected blob is off the disk and fsck is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_survives_sigkill_mid_collection() {
    let mut serve = Serve::start(&fast_gc_config(GRACE_MS, 60_000, 60_000), &[]).await;
    let mut registry = Registry::new(serve.base.clone());
    let kept_layer = push_layer(&registry, "team/keep", 300_000).await;
    let kept = image_over(&registry, "team/keep", "v1", &[&kept_layer]).await;
    let mut doomed = Vec::new();
    for round in 0..4 {
        // 150 unreferenced blobs per round: collected a grace after their push, in one or two
        // collector passes, which the kill below lands in, or right after.
        for _ in 0..150 {
            doomed.push(push_layer(&registry, &format!("team/junk{round}"), 2_000).await);
        }
        let blobs = serve.blob_dir().join("blobs");
        let before = files_under(&blobs).0;
        until("the collector to start", Instant::now() + DEADLINE, || {
            let blobs = blobs.clone();
            async move {
                if files_under(&blobs).0 < before {
                    Ok(())
                } else {
                    Err("nothing collected yet".to_owned())
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
        serve.kill9_and_restart().await;
        registry = Registry::new(serve.base.clone());
        registry
            .verify_image(&kept)
            .await
            .unwrap_or_else(|e| panic!("after SIGKILL {round}: {e}\n{}", serve.log()));
    }
    let (blobs, trash) = (
        serve.blob_dir().join("blobs"),
        serve.blob_dir().join("trash"),
    );
    until(
        "every collected blob to leave the disk",
        Instant::now() + DEADLINE,
        || {
            let (blobs, trash, doomed) = (blobs.clone(), trash.clone(), &doomed);
            let serve = &serve;
            async move {
                let left = doomed
                    .iter()
                    .filter(|(digest, _)| blob_file(serve, digest).exists())
                    .count();
                let set_aside = files_under(&trash).0;
                let kept_files = files_under(&blobs).0;
                if left == 0 && set_aside == 0 {
                    Ok(kept_files)
                } else {
                    Err(format!(
                        "{left} collected blobs on disk, {set_aside} set aside"
                    ))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    let registry = Registry::new(serve.base.clone());
    registry
        .verify_image(&kept)
        .await
        .expect("kept image intact");
    let report = serve.admin_output(&["fsck"]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stdout)
    );
}

/// `wharf admin ... | head -1`: the reader goes away before the command has written; the command
/// ends as a Unix tool does (quietly, by SIGPIPE), never with a panic and a backtrace.
#[tokio::test]
async fn admin_output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let serve = Serve::start("", &[]).await;
    let mut child = Command::new(common::serve::WHARF)
        .args(["admin", "--meta", &serve.grpc, "cluster", "status"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wharf admin starts");
    // Close the read end at once: every write the command makes hits a closed pipe.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wharf admin ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
}

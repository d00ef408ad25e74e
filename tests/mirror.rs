//! `wharf mirror`: the migration path from Distribution. CNCF Distribution 2.8 holds images, a
//! multi-arch index and several tags; `wharf mirror` copies them into `wharf serve`, verified,
//! resumable after a cut, idempotent, with a dry run, a tag filter and a prefix.

mod common;

use std::process::{Command, Stdio};

use common::distribution::Distribution;
use common::fault_proxy::{Fault, FaultProxy};
use common::serve::Serve;
use common::{PushedImage, Registry};
use oci_model::Digest;
use serde_json::Value;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Runs `wharf mirror ARGS`; its JSON summary and whether it succeeded.
fn mirror(args: &[&str]) -> (Value, bool, String) {
    let output = Command::new(WHARF)
        .arg("mirror")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("wharf mirror runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let summary = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("a JSON summary ({e}): {stderr}"));
    (summary, output.status.success(), stderr)
}

/// An index of `images` (same repository), tagged `tag`; its bytes.
async fn push_index(
    registry: &Registry,
    repo: &str,
    tag: &str,
    images: &[&PushedImage],
) -> Vec<u8> {
    let manifests: Vec<Value> = images
        .iter()
        .zip(["amd64", "arm64"])
        .map(|(image, arch)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.manifest_digest.to_string(),
                "size": image.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    })
    .to_string()
    .into_bytes();
    registry
        .put_manifest(repo, tag, OCI_INDEX, &index)
        .await
        .expect("push the index");
    index
}

async fn get_manifest(registry: &Registry, repo: &str, reference: &str) -> (u16, Vec<u8>) {
    let response = registry
        .http
        .get(format!("{}/v2/{repo}/manifests/{reference}", registry.base))
        .header(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .expect("manifest GET");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_distribution_catalog_moves_into_wharf_verified_resumable_and_once() {
    let distribution = Distribution::start().await;
    let source = Registry::new(distribution.url.clone());
    let v1 = source
        .push_image_with("team/app", "v1", 200_000, false)
        .await
        .expect("push");
    let v2 = source
        .push_image_with("team/app", "v2", 300_000, false)
        .await
        .expect("push");
    let tool = source
        .push_image_with("tools/cli", "latest", 100_000, false)
        .await
        .expect("push");
    let amd = source
        .push_image_with("team/multi", "amd64", 50_000, false)
        .await
        .expect("push");
    let arm = source
        .push_image_with("team/multi", "arm64", 60_000, false)
        .await
        .expect("push");
    let index = push_index(&source, "team/multi", "all", &[&amd, &arm]).await;
    // The source goes through the fault proxy, which can cut a blob mid-way.
    let fault = FaultProxy::start(&distribution.url).await;
    let serve = Serve::start("", &[]).await;
    let destination = Registry::new(serve.base.clone());

    // A dry run reads everything and writes nothing.
    let (summary, ok, stderr) = mirror(&[
        "--from",
        &fault.url,
        "--to",
        &serve.base,
        "--all",
        "--dry-run",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(summary["copied"]["repositories"], 3, "{summary}");
    assert_eq!(summary["copied"]["tags_set"], 6, "{summary}");
    // v1, v2, latest, amd64, arm64 and the index.
    assert_eq!(summary["copied"]["manifests_copied"], 6, "{summary}");
    assert_eq!(get_manifest(&destination, "team/app", "v1").await.0, 404);

    // A cut mid-blob stops the run, which says how to go on; nothing half-copied is taken.
    fault.set(Fault::CutAfter(50_000));
    let (summary, ok, stderr) = mirror(&["--from", &fault.url, "--to", &serve.base, "--all"]);
    assert!(!ok, "a cut source fails the run: {summary}");
    assert!(stderr.contains("run again to resume"), "{stderr}");
    fault.set(Fault::None);

    // Run again: everything arrives, byte for byte.
    let (summary, ok, stderr) = mirror(&["--from", &fault.url, "--to", &serve.base, "--all"]);
    assert!(ok, "{stderr}");
    assert_eq!(summary["failed"], serde_json::json!([]), "{summary}");
    for image in [&v1, &v2, &tool, &amd, &arm] {
        destination
            .verify_image(image)
            .await
            .expect("every image, verified");
    }
    assert_eq!(
        get_manifest(&destination, "team/multi", "all").await,
        (200, index.clone())
    );
    let index_digest = Digest::sha256_of(&index);
    assert_eq!(
        get_manifest(&destination, "team/multi", &index_digest.to_string())
            .await
            .0,
        200
    );

    // Once more: nothing left to copy.
    let (summary, ok, stderr) = mirror(&["--from", &fault.url, "--to", &serve.base, "--all"]);
    assert!(ok, "{stderr}");
    for field in [
        "manifests_copied",
        "blobs_copied",
        "bytes_copied",
        "tags_set",
    ] {
        assert_eq!(summary["copied"][field], 0, "{field}: {summary}");
    }
    assert_eq!(summary["copied"]["manifests_present"], 6, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_filter_and_a_prefix_choose_what_goes_where() {
    let distribution = Distribution::start().await;
    let source = Registry::new(distribution.url.clone());
    let release = source
        .push_image_with("team/app", "v1.0", 10_000, false)
        .await
        .expect("push");
    source
        .push_image_with("team/app", "nightly", 10_000, false)
        .await
        .expect("push");
    let serve = Serve::start("", &[]).await;
    let destination = Registry::new(serve.base.clone());
    let (summary, ok, stderr) = mirror(&[
        "--from",
        &distribution.url,
        "--to",
        &serve.base,
        "--repo",
        "team/app",
        "--tags",
        "v*",
        "--prefix",
        "migrated",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(summary["copied"]["tags"], 1, "{summary}");
    let moved = PushedImage {
        repo: "migrated/team/app".into(),
        ..release
    };
    destination
        .verify_image(&moved)
        .await
        .expect("v1.0 under the prefix");
    assert_eq!(
        get_manifest(&destination, "migrated/team/app", "nightly")
            .await
            .0,
        404
    );
    // A repository the source does not have is an error that names it.
    let (summary, ok, _) = mirror(&[
        "--from",
        &distribution.url,
        "--to",
        &serve.base,
        "--repo",
        "no/such",
    ]);
    assert!(!ok);
    assert!(
        summary["failed"][0]
            .as_str()
            .is_some_and(|line| line.contains("no/such")),
        "{summary}"
    );
}

/// An image on `base` (a layer shared with other images) and a small layer of its own, in
/// `repo`, tagged `v1`.
async fn push_on_base(registry: &Registry, repo: &str, base: &[u8]) -> PushedImage {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"repo":"{repo}"}}"#
    );
    let own = common::random_bytes(3_000);
    let config_digest = registry
        .push_blob_chunked(repo, config.as_bytes(), 64 * 1024)
        .await
        .expect("config");
    let base_digest = registry
        .push_blob_chunked(repo, base, 64 * 1024)
        .await
        .expect("base layer");
    let own_digest = registry
        .push_blob_chunked(repo, &own, 64 * 1024)
        .await
        .expect("own layer");
    let layer = |digest: &Digest, size: usize| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": size});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [layer(&base_digest, base.len()), layer(&own_digest, own.len())],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = registry
        .put_manifest(
            repo,
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await
        .expect("manifest");
    PushedImage {
        repo: repo.to_owned(),
        tag: "v1".to_owned(),
        manifest,
        manifest_digest,
        blobs: vec![
            (config_digest, config.into_bytes()),
            (base_digest, base.to_vec()),
            (own_digest, own),
        ],
    }
}

/// A layer three repositories share is sent to the destination once and mounted into the two
/// others (`POST ?mount=&from=`, which Distribution answers 201 only when it links the blob);
/// every image then reads back whole from the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_layer_crosses_once_and_is_mounted_into_the_other_repositories() {
    let serve = Serve::start("", &[]).await;
    let source = Registry::new(serve.base.clone());
    let distribution = Distribution::start().await;
    let destination = Registry::new(distribution.url.clone());
    let base = common::random_bytes(400_000);
    let mut images = Vec::new();
    for n in 0..3 {
        images.push(push_on_base(&source, &format!("team/app-{n}"), &base).await);
    }
    let (summary, ok, stderr) =
        mirror(&["--from", &serve.base, "--to", &distribution.url, "--all"]);
    assert!(ok, "{stderr}");
    let copied = &summary["copied"];
    assert_eq!(copied["repositories"], 3, "{summary}");
    assert_eq!(copied["blobs_mounted"], 2, "{summary}");
    // Three configs, three own layers, the base once.
    assert_eq!(copied["blobs_copied"], 7, "{summary}");
    let own: u64 = images
        .iter()
        .flat_map(|image| [&image.blobs[0].1, &image.blobs[2].1])
        .map(|bytes| bytes.len() as u64)
        .sum();
    assert_eq!(copied["bytes_copied"], own + base.len() as u64, "{summary}");
    for image in &images {
        destination
            .verify_image(image)
            .await
            .expect("every image whole on Distribution");
    }
}

//! A full disk under `wharf serve` (issue 15, part 5): the blob node's directory is a small tmpfs
//! mounted for the test. A push that cannot fit gets a 507 with the spec's error body (refused
//! before its body is read when its length is declared, rolled back when the disk fills mid-body),
//! keeps nothing of it, and the registry goes on serving reads and taking pushes that fit. Meta's
//! directory on a tmpfs that fills: writes are refused with 507, and nothing acknowledged is lost
//! across a kill, freed space and a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::serve::{files_under, Serve};
use common::{random_bytes, Registry};
use oci_model::Digest;
use serde_json::Value;

const TMPFS_BYTES: u64 = 8 << 20;

/// A tmpfs mounted at a path for the test's life (lazily unmounted on drop, so a process still
/// holding a file there does not keep it mounted).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "this test mounts a tmpfs (it needs root, as .ci/run has): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn error_of(body: &[u8]) -> (String, String) {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    let error = &value["errors"][0];
    (
        error["code"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A 507 with the spec's error body, code `UNAVAILABLE`, whose message says `why`.
async fn assert_out_of_space(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), 507);
    let (code, message) = error_of(&response.bytes().await.unwrap());
    assert_eq!(code, "UNAVAILABLE");
    assert!(message.contains(why), "{message}");
}

#[tokio::test]
async fn a_push_that_does_not_fit_gets_507_keeps_nothing_and_the_registry_goes_on() {
    let mut mount = None;
    // No free-space floor: this test is about the disk filling under a write.
    let serve = Serve::start_prepared("blob_min_free_bytes = 0\n", &[], |dir| {
        mount = Some(Tmpfs::mount(&dir.join("data").join("blob"), TMPFS_BYTES));
    })
    .await;
    let _mount = mount;
    let registry = Registry::new(serve.base.clone());
    let image = registry
        .push_image("full/app", "v1", 256 * 1024)
        .await
        .unwrap();
    let (_, kept_before) = files_under(&serve.blob_dir());

    // Declared up front (Content-Length): refused before the body is read; the client, still
    // sending, reads the answer (the gateway drains what it refused).
    let big = random_bytes(12 << 20);
    let response = registry
        .post_monolithic("full/app", &big)
        .await
        .expect("the client gets an answer, not a reset");
    assert_out_of_space(response, "do not fit").await;

    // Unknown length (chunked transfer): the disk fills mid-body; the append is rolled back.
    let location = registry.start_upload("full/app").await.unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .chunks(256 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let response = registry
        .http
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("the client gets an answer, not a reset");
    assert_out_of_space(response, "No space left").await;
    let status = registry.http.get(&location).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert!(
        status
            .headers()
            .get("range")
            .is_none_or(|range| range == "0-0"),
        "the failed append was kept: {:?}",
        status.headers().get("range")
    );

    // Nothing of either push is left on the disk.
    let (_, kept_after) = files_under(&serve.blob_dir());
    assert_eq!(kept_after, kept_before, "bytes of a refused push were kept");

    // Reads go on, and a push that fits is taken.
    registry.verify_image(&image).await.unwrap();
    let small = random_bytes(2 << 20);
    registry
        .push_blob_monolithic("full/app", &small)
        .await
        .expect("a push that fits after the refusals");
    let pulled = registry
        .http
        .get(format!(
            "{}/v2/full/app/blobs/{}",
            serve.base,
            Digest::sha256_of(&small)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap().as_ref(), small.as_slice());
}

#[tokio::test]
async fn a_node_below_its_free_space_floor_stages_nothing_and_pushes_get_507() {
    // Every disk has less free space than this floor: the only blob node is full.
    let serve = Serve::start("blob_min_free_bytes = 9000000000000000000\n", &[]).await;
    let registry = Registry::new(serve.base.clone());
    let refused = common::until(
        "the node's heartbeat to say it is full",
        std::time::Instant::now() + std::time::Duration::from_secs(30),
        || async {
            let response = registry
                .http
                .post(format!("{}/v2/full/app/blobs/uploads/", serve.base))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match response.status().as_u16() {
                507 => Ok(response),
                other => Err(format!("{other}")),
            }
        },
    )
    .await
    .unwrap();
    assert_out_of_space(refused, "full").await;
    let status = serve.admin_json(&["cluster", "status"]);
    let health = &status["liveness"][0]["health"];
    assert_eq!(health["full"], true, "{status}");
    assert!(health["free_bytes"].as_u64().is_some(), "{status}");
    // Reads are not refused.
    let tags = registry
        .http
        .get(format!("{}/v2/", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 200);
}

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let output = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .expect("df's available bytes")
}

/// A manifest of `config` and `layer`, made `index`-th by a large annotation, so that every PUT
/// is a new manifest of about 32 KiB.
fn padded_manifest(config: &(Digest, usize), layer: &(Digest, usize), index: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.0.to_string(),
            "size": config.1,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.0.to_string(),
            "size": layer.1,
        }],
        "annotations": { "index": index.to_string(), "padding": "p".repeat(32 * 1024) },
    }))
    .unwrap()
}

#[tokio::test]
async fn meta_out_of_space_refuses_writes_with_507_and_loses_nothing_acknowledged() {
    let mut mount = None;
    let mut serve = Serve::start_prepared("", &[], |dir| {
        mount = Some(Tmpfs::mount(&dir.join("data").join("meta"), 48 << 20));
    })
    .await;
    let mount = mount.expect("mounted");
    let registry = Registry::new(serve.base.clone());
    let config = random_bytes(300);
    let layer = random_bytes(3000);
    let config = (
        registry
            .push_blob_monolithic("meta/full", &config)
            .await
            .unwrap(),
        config.len(),
    );
    let layer = (
        registry
            .push_blob_monolithic("meta/full", &layer)
            .await
            .unwrap(),
        layer.len(),
    );
    // Leave meta's disk about a megabyte.
    let filler = mount.0.join("filler");
    let room = free_bytes(&mount.0).saturating_sub(1 << 20);
    let written = Command::new("fallocate")
        .args(["-l", &room.to_string()])
        .arg(&filler)
        .status()
        .expect("run fallocate");
    assert!(written.success());

    let put = |base: &str, index: usize| {
        let body = padded_manifest(&config, &layer, index);
        let url = format!("{base}/v2/meta/full/manifests/t{index}");
        let http = registry.http.clone();
        async move {
            let response = http
                .put(url)
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(body.clone())
                .send()
                .await
                .expect("an answer, not a dropped connection");
            (
                response.status().as_u16(),
                response.bytes().await.unwrap(),
                body,
            )
        }
    };
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for index in 0..2_000 {
        let (status, answer, body) = put(&serve.base, index).await;
        match status {
            201 => acknowledged.push((index, Digest::sha256_of(&body))),
            // The write that met the full disk, or one after it.
            503 | 507 => {
                eprintln!(
                    "{} manifests acknowledged, then {status}: {}",
                    acknowledged.len(),
                    String::from_utf8_lossy(&answer)
                );
                refused = Some(index);
                break;
            }
            other => panic!("PUT {index}: {other} {}", String::from_utf8_lossy(&answer)),
        }
    }
    let first_refused = refused.expect("a 48 MiB disk filled by 2,000 PUTs of 32 KiB");
    assert!(!acknowledged.is_empty(), "no write fitted at all");
    // From then on every write is refused as out of space, with the spec's error body.
    let mut index = first_refused + 1;
    let answer = common::until(
        "meta to refuse writes as out of space",
        std::time::Instant::now() + std::time::Duration::from_secs(30),
        || {
            index += 1;
            let attempt = put(&serve.base, index);
            async move {
                let (status, answer, _) = attempt.await;
                match status {
                    507 => Ok(answer),
                    503 => Err("503".to_owned()),
                    other => panic!("{other} {}", String::from_utf8_lossy(&answer)),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    let (code, message) = error_of(&answer);
    assert_eq!(code, "UNAVAILABLE");
    assert!(message.contains("disk is full"), "{message}");

    // Space freed and the member restarted (killed: a full disk is no time for a clean
    // shutdown), every acknowledged manifest is there, and writes are taken again.
    std::fs::remove_file(&filler).unwrap();
    serve.kill9_and_restart().await;
    let registry = Registry::new(serve.base.clone());
    for (index, digest) in &acknowledged {
        let by_tag = registry
            .http
            .get(format!("{}/v2/meta/full/manifests/t{index}", serve.base))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(by_tag.status(), 200, "acknowledged tag t{index} lost");
        assert_eq!(Digest::sha256_of(&by_tag.bytes().await.unwrap()), *digest);
    }
    let (status, answer, _) = put(&serve.base, 10_000).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
}

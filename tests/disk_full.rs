//! A full disk under `wharf serve` (issue 15, part 5): the blob node's directory is a small tmpfs
//! mounted for the test. A push that cannot fit gets a 507 with the spec's error body (refused
//! before its body is read when its length is declared, rolled back when the disk fills mid-body),
//! keeps nothing of it, and the registry goes on serving reads and taking pushes that fit.

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
    let digest = Digest::sha256_of(&big);
    let response = registry
        .http
        .post(format!(
            "{}/v2/full/app/blobs/uploads/?digest={digest}",
            serve.base
        ))
        .header("content-type", "application/octet-stream")
        .body(big.clone())
        .send()
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

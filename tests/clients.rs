//! Real clients against `wharf serve`: skopeo, buildah, podman and docker push and pull images
//! built locally (nothing is pulled from outside), and the pulled content is byte-identical.
//! `.ci/run` installs skopeo, podman and buildah; the Docker engine is the machine's.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::random_bytes;
use test_cluster::InProcessServe;
use tokio::process::Command;

const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs a tool to completion with a deadline; panics with its output when it fails.
async fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(program);
    command
        .args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(TOOL_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (is it installed? .ci/run installs it): {e}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A containers-storage root of our own (as root in a sandbox: vfs, private dirs) plus an auth
/// file, so no test touches the machine's storage or credentials.
struct Storage {
    dir: tempfile::TempDir,
}

impl Storage {
    fn new() -> Storage {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("auth.json"), "{}").expect("auth file");
        Storage { dir }
    }

    /// A `containers-storage:` reference into this storage, for skopeo (which has no --root).
    fn storage_ref(&self, image: &str) -> String {
        let root = self.dir.path();
        format!(
            "containers-storage:[vfs@{}+{}]{image}",
            root.join("root").display(),
            root.join("run").display()
        )
    }

    async fn skopeo(&self, args: &[&str]) -> String {
        let auth = self.auth();
        run("skopeo", args, &[("REGISTRY_AUTH_FILE", &auth)]).await
    }

    fn flags(&self) -> Vec<String> {
        let root = self.dir.path();
        vec![
            format!("--root={}", root.join("root").display()),
            format!("--runroot={}", root.join("run").display()),
            "--storage-driver=vfs".into(),
        ]
    }

    fn auth(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    async fn tool(&self, program: &str, args: &[&str]) -> String {
        let mut all: Vec<String> = self.flags();
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let auth = self.auth();
        let runtime = self.dir.path().join("xdg");
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        run(
            program,
            &all,
            &[("REGISTRY_AUTH_FILE", &auth), ("XDG_RUNTIME_DIR", &runtime)],
        )
        .await
    }

    /// Builds a one-file image from scratch with buildah: returns the file's content.
    async fn build_image(&self, name: &str, arch: &str, file_dir: &Path) -> Vec<u8> {
        let content = random_bytes(200_000);
        let file = file_dir.join(format!("{name}-{arch}.bin"));
        std::fs::write(&file, &content).expect("write layer file");
        let container = self
            .tool(
                "buildah",
                &["from", "--name", &format!("{name}-{arch}-ctr"), "scratch"],
            )
            .await;
        let container = container.trim();
        self.tool(
            "buildah",
            &[
                "copy",
                container,
                file.to_str().expect("utf-8 path"),
                "/payload",
            ],
        )
        .await;
        self.tool(
            "buildah",
            &["config", "--arch", arch, "--os", "linux", container],
        )
        .await;
        self.tool(
            "buildah",
            &[
                "commit",
                "--quiet",
                container,
                &format!("localhost/{name}:{arch}"),
            ],
        )
        .await;
        content
    }
}

/// The pulls that follow go through redirects: a GET of each layer of `repo:tag` is a 307 to the
/// blob node's own endpoint (another port), which serves exactly the layer's bytes.
async fn assert_layers_redirected(serve: &InProcessServe, repo: &str, tag: &str) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let manifest: serde_json::Value = client
        .get(format!("{}/v2/{repo}/manifests/{tag}", serve.base_url()))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("GET manifest")
        .json()
        .await
        .expect("manifest json");
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(!layers.is_empty());
    for layer in layers {
        let digest = layer["digest"].as_str().expect("layer digest");
        let reply = client
            .get(format!("{}/v2/{repo}/blobs/{digest}", serve.base_url()))
            .send()
            .await
            .expect("GET blob");
        assert_eq!(reply.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
        let location = reply.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        assert!(
            location.starts_with("http://127.0.0.1:") && !location.starts_with(&serve.base_url()),
            "{location} is not the blob node's endpoint"
        );
        let bytes = client.get(&location).send().await.expect("GET location");
        assert_eq!(bytes.status(), reqwest::StatusCode::OK);
        let bytes = bytes.bytes().await.expect("layer bytes");
        let actual = oci_model::Digest::sha256_of(&bytes);
        assert_eq!(actual.to_string(), digest, "the endpoint serves the layer");
    }
}

fn registry_host(serve: &InProcessServe) -> String {
    serve.http_addr().to_string()
}

/// Every blob file under an OCI layout, by name.
fn layout_blobs(layout: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut blobs = std::collections::BTreeMap::new();
    let dir = layout.join("blobs").join("sha256");
    for entry in std::fs::read_dir(&dir).expect("layout has blobs") {
        let entry = entry.expect("dir entry");
        let bytes = std::fs::read(entry.path()).expect("read blob");
        blobs.insert(entry.file_name().to_string_lossy().into_owned(), bytes);
    }
    blobs
}

fn layout_manifest_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("json");
    index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_inspect_list_tags_and_delete() {
    let serve = InProcessServe::start_redirecting().await.expect("serve");
    let host = registry_host(&serve);
    let storage = Storage::new();
    let work = tempfile::tempdir().expect("temp dir");
    storage
        .build_image("skopeo-src", "amd64", work.path())
        .await;
    let source = work.path().join("source");
    let source_ref = format!("oci:{}:img", source.display());
    let local = storage.storage_ref("localhost/skopeo-src:amd64");
    storage.skopeo(&["copy", &local, &source_ref]).await;

    let target = format!("docker://{host}/clients/skopeo:v1");
    storage
        .skopeo(&["copy", "--dest-tls-verify=false", &source_ref, &target])
        .await;

    let inspect = storage
        .skopeo(&["inspect", "--tls-verify=false", &target])
        .await;
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
    assert_eq!(
        inspect["Digest"],
        layout_manifest_digest(&source),
        "registry serves the pushed manifest"
    );

    let tags = storage
        .skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{host}/clients/skopeo"),
        ])
        .await;
    let tags: serde_json::Value = serde_json::from_str(&tags).expect("list-tags json");
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    assert_layers_redirected(&serve, "clients/skopeo", "v1").await;
    let pulled = work.path().join("pulled");
    let pulled_ref = format!("oci:{}:img", pulled.display());
    storage
        .skopeo(&["copy", "--src-tls-verify=false", &target, &pulled_ref])
        .await;
    assert_eq!(
        layout_blobs(&pulled),
        layout_blobs(&source),
        "pulled blobs are byte-identical"
    );

    storage
        .skopeo(&["delete", "--tls-verify=false", &target])
        .await;
    let url = format!("{}/v2/clients/skopeo/manifests/v1", serve.base_url());
    let status = reqwest::get(url).await.expect("GET").status();
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "deleted manifest is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_a_multi_arch_index_with_all() {
    let serve = InProcessServe::start().await.expect("serve");
    let host = registry_host(&serve);
    let storage = Storage::new();
    let work = tempfile::tempdir().expect("temp dir");
    for arch in ["amd64", "arm64"] {
        storage.build_image("multi", arch, work.path()).await;
    }
    storage
        .tool("buildah", &["manifest", "create", "localhost/multi:list"])
        .await;
    for arch in ["amd64", "arm64"] {
        storage
            .tool(
                "buildah",
                &[
                    "manifest",
                    "add",
                    "localhost/multi:list",
                    &format!("containers-storage:localhost/multi:{arch}"),
                ],
            )
            .await;
    }
    let source = work.path().join("index-src");
    let source_ref = format!("oci:{}:list", source.display());
    storage
        .tool(
            "buildah",
            &[
                "manifest",
                "push",
                "--all",
                "localhost/multi:list",
                &source_ref,
            ],
        )
        .await;

    let target = format!("docker://{host}/clients/multi:v1");
    storage
        .skopeo(&[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &source_ref,
            &target,
        ])
        .await;
    let raw = storage
        .skopeo(&["inspect", "--raw", "--tls-verify=false", &target])
        .await;
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(2),
        "index keeps both children: {raw}"
    );

    let pulled = work.path().join("index-pulled");
    let pulled_ref = format!("oci:{}:list", pulled.display());
    storage
        .skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &target,
            &pulled_ref,
        ])
        .await;
    assert_eq!(
        layout_blobs(&pulled),
        layout_blobs(&source),
        "every child and layer is byte-identical"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_push_then_pull_into_fresh_storage() {
    let serve = InProcessServe::start_redirecting().await.expect("serve");
    let host = registry_host(&serve);
    let pusher = Storage::new();
    let work = tempfile::tempdir().expect("temp dir");
    let content = pusher.build_image("podman-src", "amd64", work.path()).await;
    let image = format!("{host}/clients/podman:v1");
    pusher
        .tool(
            "podman",
            &[
                "push",
                "--tls-verify=false",
                "localhost/podman-src:amd64",
                &format!("docker://{image}"),
            ],
        )
        .await;

    assert_layers_redirected(&serve, "clients/podman", "v1").await;
    let puller = Storage::new();
    puller
        .tool("podman", &["pull", "--tls-verify=false", &image])
        .await;
    let saved = work.path().join("saved");
    puller
        .tool(
            "podman",
            &[
                "save",
                "--format",
                "oci-dir",
                "-o",
                saved.to_str().expect("utf-8"),
                &image,
            ],
        )
        .await;
    let layers = layout_blobs(&saved);
    let found = layers.values().any(|blob| tar_contains(blob, &content));
    assert!(
        found,
        "the pulled image carries the pushed file byte for byte"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_build_push_and_pull_round_trip() {
    let serve = InProcessServe::start_redirecting().await.expect("serve");
    let host = registry_host(&serve);
    let work = tempfile::tempdir().expect("temp dir");
    let docker_config = work.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).expect("docker config dir");
    let env = [("DOCKER_CONFIG", docker_config.as_path())];
    let content = random_bytes(300_000);
    std::fs::write(work.path().join("payload"), &content).expect("payload");
    std::fs::write(
        work.path().join("Dockerfile"),
        "FROM scratch\nCOPY payload /payload\n",
    )
    .expect("Dockerfile");
    let nonce = common::hex_of(&random_bytes(6));
    let image = format!("{host}/clients/docker-{nonce}:v1");
    let context = work.path().to_str().expect("utf-8 path");
    run("docker", &["build", "--quiet", "-t", &image, context], &env).await;
    run("docker", &["push", &image], &env).await;
    assert_layers_redirected(&serve, &format!("clients/docker-{nonce}"), "v1").await;
    run("docker", &["rmi", &image], &env).await;
    run("docker", &["pull", &image], &env).await;
    let container = run("docker", &["create", &image, "/payload"], &env).await;
    let container = container.trim().to_owned();
    let copied = work.path().join("copied");
    let copy_result = tokio::time::timeout(
        TOOL_TIMEOUT,
        Command::new("docker")
            .args([
                "cp",
                &format!("{container}:/payload"),
                copied.to_str().expect("utf-8"),
            ])
            .env("DOCKER_CONFIG", &docker_config)
            .output(),
    )
    .await;
    run("docker", &["rm", &container], &env).await;
    run("docker", &["rmi", &image], &env).await;
    let output = copy_result
        .expect("docker cp in time")
        .expect("docker cp runs");
    assert!(
        output.status.success(),
        "docker cp: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read(&copied).expect("copied payload"),
        content,
        "pulled file is byte-identical"
    );
}

/// True when `blob` (a tar layer, gzip-compressed or not) contains `needle` as a file's bytes.
fn tar_contains(blob: &[u8], needle: &[u8]) -> bool {
    let plain = if blob.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = flate2::read::GzDecoder::new(blob);
        let mut out = Vec::new();
        if std::io::Read::read_to_end(&mut decoder, &mut out).is_err() {
            return false;
        }
        out
    } else {
        blob.to_vec()
    };
    plain
        .windows(needle.len().min(4096))
        .any(|w| w == &needle[..needle.len().min(4096)])
        && plain.windows(needle.len()).any(|w| w == needle)
}

/// A multi-arch image pulled through the pull-through cache: `wharf serve` caching another
/// `wharf serve` under `hub/`. docker pulls its platform cold, then skopeo copies every platform
/// (the other one cold, this one from the cache), byte-identical to what was pushed upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_and_skopeo_pull_a_multi_arch_image_through_the_cache() {
    let upstream = InProcessServe::start().await.expect("upstream serve");
    let cache = common::serve::Serve::start("", &[]).await;
    let cache_host = cache.base.trim_start_matches("http://").to_owned();
    cache.admin(&[
        "proxy",
        "add",
        "--id",
        "up",
        "--url",
        &upstream.base_url(),
        "--prefix",
        "hub",
    ]);
    let storage = Storage::new();
    let work = tempfile::tempdir().expect("temp dir");
    let nonce = common::hex_of(&random_bytes(4));
    let name = format!("cached-{nonce}");
    for arch in ["amd64", "arm64"] {
        storage.build_image(&name, arch, work.path()).await;
    }
    let list = format!("localhost/{name}:list");
    storage
        .tool("buildah", &["manifest", "create", &list])
        .await;
    for arch in ["amd64", "arm64"] {
        let child = format!("containers-storage:localhost/{name}:{arch}");
        storage
            .tool("buildah", &["manifest", "add", &list, &child])
            .await;
    }
    let source = work.path().join("index-src");
    let source_ref = format!("oci:{}:list", source.display());
    storage
        .tool(
            "buildah",
            &["manifest", "push", "--all", &list, &source_ref],
        )
        .await;
    let host = registry_host(&upstream);
    storage
        .skopeo(&[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &source_ref,
            &format!("docker://{host}/library/{name}:v1"),
        ])
        .await;

    let docker_config = work.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).expect("docker config dir");
    let env = [("DOCKER_CONFIG", docker_config.as_path())];
    let image = format!("{cache_host}/hub/library/{name}:v1");
    run("docker", &["pull", &image], &env).await;
    run("docker", &["rmi", &image], &env).await;
    // docker's pull went through the cache, which now holds the repository.
    let catalog: serde_json::Value = reqwest::get(format!("{}/v2/_catalog", cache.base))
        .await
        .expect("catalog")
        .json()
        .await
        .expect("catalog JSON");
    assert_eq!(
        catalog["repositories"],
        serde_json::json!([format!("hub/library/{name}")])
    );

    let pulled = work.path().join("index-pulled");
    let pulled_ref = format!("oci:{}:list", pulled.display());
    storage
        .skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
            &pulled_ref,
        ])
        .await;
    assert_eq!(
        layout_blobs(&pulled),
        layout_blobs(&source),
        "every child and layer came through the cache byte-identical"
    );
    assert_eq!(
        layout_manifest_digest(&pulled),
        layout_manifest_digest(&source),
        "the index is the one pushed upstream"
    );
}

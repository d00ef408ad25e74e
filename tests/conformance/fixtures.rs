//! Content for the tests: random blobs, the manifest kinds the registry stores, and pushes that
//! assert they succeeded. Every test draws fresh random content, so no two tests share a digest.

use oci_model::{Algorithm, Digest};
use rand::RngCore;
use serde_json::{json, Value};

use crate::client::{send, Registry, Reply};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// A random lowercase-hex string, for tags and repository names unique to a test.
pub fn random_hex(len: usize) -> String {
    let bytes = random_bytes(len.div_ceil(2));
    let mut text = String::new();
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text.truncate(len);
    text
}

/// Some bytes and their digest.
#[derive(Clone)]
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl Blob {
    pub fn of(bytes: Vec<u8>) -> Blob {
        let digest = Digest::sha256_of(&bytes);
        Blob { bytes, digest }
    }

    pub fn random(len: usize) -> Blob {
        Blob::of(random_bytes(len))
    }

    /// A random image config (JSON, so it looks like one).
    pub fn random_config() -> Blob {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"nonce": random_hex(32)}},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        Blob::of(config.to_string().into_bytes())
    }

    /// The empty config of artifacts: `{}`.
    pub fn empty_config() -> Blob {
        Blob::of(b"{}".to_vec())
    }

    pub fn with_algorithm(bytes: Vec<u8>, algorithm: Algorithm) -> Blob {
        let digest = Digest::of(algorithm, &bytes);
        Blob { bytes, digest }
    }

    pub fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest.to_string(), "size": self.bytes.len()})
    }
}

/// A manifest's bytes, digest and media type.
#[derive(Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

impl Manifest {
    pub fn new(media_type: &str, value: &Value) -> Manifest {
        Manifest::from_bytes(
            media_type,
            serde_json::to_vec(value).expect("JSON serialises"),
        )
    }

    pub fn from_bytes(media_type: &str, bytes: Vec<u8>) -> Manifest {
        let digest = Digest::sha256_of(&bytes);
        Manifest {
            bytes,
            digest,
            media_type: media_type.to_owned(),
        }
    }

    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.bytes.len()})
    }
}

pub fn oci_image(config: &Blob, layers: &[&Blob]) -> Manifest {
    let layers: Vec<Value> = layers
        .iter()
        .map(|blob| blob.descriptor(OCI_LAYER))
        .collect();
    let value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(OCI_CONFIG),
        "layers": layers,
    });
    Manifest::new(OCI_MANIFEST, &value)
}

pub fn docker_image(config: &Blob, layers: &[&Blob]) -> Manifest {
    let layers: Vec<Value> = layers
        .iter()
        .map(|blob| blob.descriptor(DOCKER_LAYER))
        .collect();
    let value = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor(DOCKER_CONFIG),
        "layers": layers,
    });
    Manifest::new(DOCKER_MANIFEST, &value)
}

/// An index (OCI or Docker list, per `media_type`) of `children`, one platform each.
pub fn index_of(media_type: &str, children: &[&Manifest]) -> Manifest {
    let architectures = ["amd64", "arm64", "riscv64", "s390x", "ppc64le"];
    let manifests: Vec<Value> = children
        .iter()
        .zip(architectures.iter().cycle())
        .map(|(child, architecture)| {
            let mut descriptor = child.descriptor();
            descriptor["platform"] = json!({"architecture": architecture, "os": "linux"});
            descriptor
        })
        .collect();
    let value = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
    Manifest::new(media_type, &value)
}

/// An artifact manifest: an OCI image manifest with `artifactType`, the empty config and
/// optionally a subject and annotations.
pub fn artifact(
    artifact_type: &str,
    layers: &[&Blob],
    subject: Option<&Manifest>,
    annotations: Option<Value>,
) -> Manifest {
    let layers: Vec<Value> = layers
        .iter()
        .map(|blob| blob.descriptor("application/octet-stream"))
        .collect();
    let mut value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": Blob::empty_config().descriptor(OCI_EMPTY),
        "layers": layers,
    });
    if let Some(subject) = subject {
        value["subject"] = subject.descriptor();
    }
    if let Some(annotations) = annotations {
        value["annotations"] = annotations;
    }
    Manifest::new(OCI_MANIFEST, &value)
}

pub fn blob_path(repo: &str, digest: &Digest) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

pub fn manifest_path(repo: &str, reference: &str) -> String {
    format!("/v2/{repo}/manifests/{reference}")
}

pub fn uploads_path(repo: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/")
}

/// Monolithic `POST ?digest=`; asserts 201.
pub async fn push_blob(registry: &Registry, repo: &str, blob: &Blob) {
    let path = format!("{}?digest={}", uploads_path(repo), blob.digest);
    send(
        registry
            .post(&path)
            .header("content-type", "application/octet-stream")
            .body(blob.bytes.clone()),
    )
    .await
    .expect_status(201);
}

/// `PUT /v2/<repo>/manifests/<reference>` with the manifest's own media type.
pub async fn put_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Reply {
    send(
        registry
            .put(&manifest_path(repo, reference))
            .header("content-type", manifest.media_type.as_str())
            .body(manifest.bytes.clone()),
    )
    .await
}

/// Pushes `manifest` under `reference` and asserts 201 with its digest.
pub async fn push_manifest(registry: &Registry, repo: &str, reference: &str, manifest: &Manifest) {
    put_manifest(registry, repo, reference, manifest)
        .await
        .expect_status(201)
        .expect_header("docker-content-digest", &manifest.digest.to_string());
}

/// A pushed OCI image: its config, one layer and the manifest, tagged `tag`.
pub struct Image {
    pub config: Blob,
    pub layer: Blob,
    pub manifest: Manifest,
}

pub async fn push_image(registry: &Registry, repo: &str, tag: &str) -> Image {
    let config = Blob::random_config();
    let layer = Blob::random(4096);
    push_blob(registry, repo, &config).await;
    push_blob(registry, repo, &layer).await;
    let manifest = oci_image(&config, &[&layer]);
    push_manifest(registry, repo, tag, &manifest).await;
    Image {
        config,
        layer,
        manifest,
    }
}

/// What a bad-input test stores first and checks again at its end: a blob and a tagged manifest,
/// which no refused request may change.
pub struct Baseline {
    pub repo: String,
    pub tag: String,
    pub image: Image,
}

impl Baseline {
    pub async fn push(registry: &Registry) -> Baseline {
        let repo = "baseline/app".to_owned();
        let tag = "stable".to_owned();
        let image = push_image(registry, &repo, &tag).await;
        Baseline { repo, tag, image }
    }

    /// The process still serves, and the stored blob and manifest are byte for byte as pushed.
    pub async fn assert_intact(&self, registry: &Registry) {
        crate::client::assert_serving(registry).await;
        for blob in [&self.image.config, &self.image.layer] {
            let reply = send(registry.get(&blob_path(&self.repo, &blob.digest))).await;
            reply.expect_status(200);
            assert!(reply.body == blob.bytes, "blob {} changed", blob.digest);
        }
        let manifest = &self.image.manifest;
        for reference in [self.tag.clone(), manifest.digest.to_string()] {
            let reply = send(
                registry
                    .get(&manifest_path(&self.repo, &reference))
                    .header("accept", OCI_MANIFEST),
            )
            .await;
            reply
                .expect_status(200)
                .expect_header("docker-content-digest", &manifest.digest.to_string());
            assert!(reply.body == manifest.bytes, "manifest {reference} changed");
        }
    }
}

//! `PUT`/`GET`/`HEAD`/`DELETE /v2/<name>/manifests/<reference>` for every manifest kind, content
//! negotiation, reference checks, `OCI-Subject` and the size limit.

use serde_json::json;

use crate::client::{send, Registry, Reply};
use crate::fixtures::{
    artifact, docker_image, index_of, manifest_path, oci_image, push_blob, push_image,
    push_manifest, put_manifest, Blob, Manifest, DOCKER_LIST, DOCKER_MANIFEST, OCI_EMPTY,
    OCI_INDEX, OCI_MANIFEST,
};

const REPO: &str = "library/manifests";

/// `GET` (or `HEAD`) of `reference` with `Accept: <accept>`.
async fn fetch(registry: &Registry, reference: &str, accept: &str, head: bool) -> Reply {
    let path = manifest_path(REPO, reference);
    let request = if head {
        registry.head(&path)
    } else {
        registry.get(&path)
    };
    send(request.header("accept", accept)).await
}

/// The manifest is served under `reference`: identical bytes, its media type and digest.
async fn expect_served(registry: &Registry, reference: &str, manifest: &Manifest) {
    let digest = manifest.digest.to_string();
    let length = manifest.bytes.len().to_string();
    for head in [false, true] {
        let reply = fetch(registry, reference, &manifest.media_type, head).await;
        reply
            .expect_status(200)
            .expect_header("content-type", &manifest.media_type)
            .expect_header("docker-content-digest", &digest)
            .expect_header("content-length", &length);
        if head {
            assert!(reply.body.is_empty(), "HEAD {reference} returned a body");
        } else {
            assert!(reply.body == manifest.bytes, "GET {reference}: other bytes");
        }
    }
}

/// The manifest is gone under `reference`.
async fn expect_unknown(registry: &Registry, reference: &str, accept: &str) {
    fetch(registry, reference, accept, false)
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    fetch(registry, reference, accept, true)
        .await
        .expect_status(404);
}

/// PUT by tag and by digest, GET and HEAD by both, then DELETE by digest removes both.
async fn round_trip(registry: &Registry, tag: &str, manifest: &Manifest) {
    let digest = manifest.digest.to_string();
    let reply = put_manifest(registry, REPO, tag, manifest).await;
    reply
        .expect_status(201)
        .expect_header("docker-content-digest", &digest);
    let location = reply.location_path();
    assert!(
        location.ends_with(&manifest_path(REPO, &digest)),
        "Location {location} does not name the manifest by digest"
    );
    expect_served(registry, tag, manifest).await;
    expect_served(registry, &digest, manifest).await;

    // PUT by digest of the same bytes is accepted too.
    put_manifest(registry, REPO, &digest, manifest)
        .await
        .expect_status(201)
        .expect_header("docker-content-digest", &digest);
    expect_served(registry, &digest, manifest).await;

    send(registry.delete(&manifest_path(REPO, &digest)))
        .await
        .expect_status(202);
    expect_unknown(registry, &digest, &manifest.media_type).await;
    expect_unknown(registry, tag, &manifest.media_type).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_image_manifest_round_trips_by_tag_and_by_digest() {
    let registry = Registry::start().await;
    let config = Blob::random_config();
    let layers = [Blob::random(1_000), Blob::random(2_000)];
    for blob in [&config, &layers[0], &layers[1]] {
        push_blob(&registry, REPO, blob).await;
    }
    let manifest = oci_image(&config, &[&layers[0], &layers[1]]);
    round_trip(&registry, "v1.0", &manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_image_index_round_trips_by_tag_and_by_digest() {
    let registry = Registry::start().await;
    let mut children = Vec::new();
    for _ in 0..2 {
        let config = Blob::random_config();
        let layer = Blob::random(500);
        push_blob(&registry, REPO, &config).await;
        push_blob(&registry, REPO, &layer).await;
        let child = oci_image(&config, &[&layer]);
        push_manifest(&registry, REPO, &child.digest.to_string(), &child).await;
        children.push(child);
    }
    // The first child also carries a tag of its own.
    push_manifest(&registry, REPO, "amd64", &children[0]).await;
    let index = index_of(OCI_INDEX, &[&children[0], &children[1]]);
    round_trip(&registry, "multi", &index).await;
    // Deleting the index takes the child that lived only through it; the tagged one stays.
    expect_served(&registry, &children[0].digest.to_string(), &children[0]).await;
    expect_unknown(
        &registry,
        &children[1].digest.to_string(),
        &children[1].media_type,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_manifest_round_trips_by_tag_and_by_digest() {
    let registry = Registry::start().await;
    let config = Blob::random_config();
    let layer = Blob::random(3_000);
    push_blob(&registry, REPO, &config).await;
    push_blob(&registry, REPO, &layer).await;
    let manifest = docker_image(&config, &[&layer]);
    round_trip(&registry, "latest", &manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_manifest_list_round_trips_by_tag_and_by_digest() {
    let registry = Registry::start().await;
    let mut children = Vec::new();
    for _ in 0..3 {
        let config = Blob::random_config();
        let layer = Blob::random(700);
        push_blob(&registry, REPO, &config).await;
        push_blob(&registry, REPO, &layer).await;
        let child = docker_image(&config, &[&layer]);
        push_manifest(&registry, REPO, &child.digest.to_string(), &child).await;
        children.push(child);
    }
    let list = index_of(DOCKER_LIST, &[&children[0], &children[1], &children[2]]);
    round_trip(&registry, "multi-arch", &list).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_with_empty_config_round_trips_by_tag_and_by_digest() {
    let registry = Registry::start().await;
    let empty = Blob::empty_config();
    assert_eq!(
        empty.digest.to_string(),
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let payload = Blob::random(1_500);
    push_blob(&registry, REPO, &empty).await;
    push_blob(&registry, REPO, &payload).await;
    let manifest = artifact(
        "application/vnd.example.sbom.v1+json",
        &[&payload],
        None,
        Some(json!({"org.opencontainers.image.created": "2026-11-01T00:00:00Z"})),
    );
    let body: serde_json::Value = serde_json::from_slice(&manifest.bytes).expect("JSON");
    assert_eq!(body["config"]["mediaType"], OCI_EMPTY);
    round_trip(&registry, "sbom", &manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_pushed_by_digest_only_is_served_by_digest() {
    let registry = Registry::start().await;
    let config = Blob::random_config();
    push_blob(&registry, REPO, &config).await;
    let manifest = oci_image(&config, &[]);
    let digest = manifest.digest.to_string();
    let reply = put_manifest(&registry, REPO, &digest, &manifest).await;
    reply
        .expect_status(201)
        .expect_header("docker-content-digest", &digest);
    assert!(reply
        .location_path()
        .ends_with(&manifest_path(REPO, &digest)));
    expect_served(&registry, &digest, &manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_that_excludes_the_stored_type_is_404_manifest_unknown() {
    let registry = Registry::start().await;
    let image = push_image(&registry, REPO, "oci").await;
    let digest = image.manifest.digest.to_string();
    for reference in ["oci", digest.as_str()] {
        for accept in [DOCKER_MANIFEST, OCI_INDEX, "text/html"] {
            fetch(&registry, reference, accept, false)
                .await
                .expect_error(404, "MANIFEST_UNKNOWN");
            fetch(&registry, reference, accept, true)
                .await
                .expect_status(404);
        }
    }

    let config = Blob::random_config();
    push_blob(&registry, REPO, &config).await;
    let docker = docker_image(&config, &[]);
    push_manifest(&registry, REPO, "docker", &docker).await;
    fetch(&registry, "docker", OCI_MANIFEST, false)
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_with_a_wildcard_or_the_stored_type_is_200() {
    let registry = Registry::start().await;
    let image = push_image(&registry, REPO, "oci").await;
    let digest = image.manifest.digest.to_string();
    let accepts = [
        "*/*".to_owned(),
        OCI_MANIFEST.to_owned(),
        format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"),
        format!("{DOCKER_MANIFEST};q=0.9, {OCI_INDEX}, {OCI_MANIFEST};q=0.5"),
    ];
    for reference in ["oci", digest.as_str()] {
        for accept in &accepts {
            let reply = fetch(&registry, reference, accept, false).await;
            reply
                .expect_status(200)
                .expect_header("content-type", OCI_MANIFEST);
            assert!(reply.body == image.manifest.bytes);
        }
        // Several Accept lines, as docker sends them.
        let reply = send(
            registry
                .get(&manifest_path(REPO, reference))
                .header("accept", DOCKER_MANIFEST)
                .header("accept", DOCKER_LIST)
                .header("accept", OCI_MANIFEST),
        )
        .await;
        reply
            .expect_status(200)
            .expect_header("content-type", OCI_MANIFEST);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_referencing_a_missing_blob_is_400_manifest_blob_unknown() {
    let registry = Registry::start().await;
    let config = Blob::random_config();
    let layer = Blob::random(100);
    push_blob(&registry, REPO, &config).await;

    // A missing layer.
    let manifest = oci_image(&config, &[&layer]);
    put_manifest(&registry, REPO, "v1", &manifest)
        .await
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    // A missing config.
    push_blob(&registry, REPO, &layer).await;
    let manifest = oci_image(&Blob::random_config(), &[&layer]);
    put_manifest(&registry, REPO, "v1", &manifest)
        .await
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    // A blob stored in another repository only.
    let elsewhere = Blob::random(100);
    push_blob(&registry, "library/other", &elsewhere).await;
    let manifest = docker_image(&config, &[&layer, &elsewhere]);
    put_manifest(&registry, REPO, "v1", &manifest)
        .await
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");

    // A blob deleted from the repository no longer counts.
    let deleted = Blob::random(100);
    push_blob(&registry, REPO, &deleted).await;
    send(registry.delete(&crate::fixtures::blob_path(REPO, &deleted.digest)))
        .await
        .expect_status(202);
    let manifest = oci_image(&config, &[&layer, &deleted]);
    put_manifest(&registry, REPO, "v1", &manifest)
        .await
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");

    expect_unknown(&registry, "v1", "*/*").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_referencing_a_missing_child_is_400_manifest_blob_unknown() {
    let registry = Registry::start().await;
    let present = push_image(&registry, REPO, "present").await.manifest;
    let config = Blob::random_config();
    push_blob(&registry, REPO, &config).await;
    let absent = oci_image(&config, &[]);

    let index = index_of(OCI_INDEX, &[&present, &absent]);
    put_manifest(&registry, REPO, "multi", &index)
        .await
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    let list = index_of(DOCKER_LIST, &[&absent]);
    put_manifest(&registry, REPO, "multi", &list)
        .await
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    expect_unknown(&registry, "multi", "*/*").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_with_subject_is_201_with_oci_subject_header() {
    let registry = Registry::start().await;
    let subject = push_image(&registry, REPO, "app").await.manifest;
    push_blob(&registry, REPO, &Blob::empty_config()).await;
    let signature = artifact(
        "application/vnd.example.signature",
        &[],
        Some(&subject),
        None,
    );
    put_manifest(&registry, REPO, &signature.digest.to_string(), &signature)
        .await
        .expect_status(201)
        .expect_header("docker-content-digest", &signature.digest.to_string())
        .expect_header("oci-subject", &subject.digest.to_string());

    // Without a subject there is no OCI-Subject.
    let plain = artifact("application/vnd.example.plain", &[], None, None);
    let reply = put_manifest(&registry, REPO, "plain", &plain).await;
    reply.expect_status(201);
    assert_eq!(reply.header("oci-subject"), None);
}

/// A valid image manifest of exactly `size` bytes, padded with an annotation.
fn manifest_of_size(config: &Blob, layer: &Blob, size: usize) -> Manifest {
    let padded = |padding: &str| {
        let mut value: serde_json::Value =
            serde_json::from_slice(&oci_image(config, &[layer]).bytes).expect("JSON");
        value["annotations"] = json!({"org.example.padding": padding});
        serde_json::to_vec(&value).expect("JSON serialises")
    };
    let overhead = padded("").len();
    assert!(size > overhead);
    let bytes = padded(&"p".repeat(size - overhead));
    assert_eq!(bytes.len(), size);
    Manifest::from_bytes(OCI_MANIFEST, bytes)
}

const FOUR_MIB: usize = 4 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_just_under_4_mib_is_accepted_and_served_whole() {
    let registry = Registry::start().await;
    let config = Blob::random_config();
    let layer = Blob::random(100);
    push_blob(&registry, REPO, &config).await;
    push_blob(&registry, REPO, &layer).await;
    for (tag, size) in [("under", FOUR_MIB - 100), ("exact", FOUR_MIB)] {
        let manifest = manifest_of_size(&config, &layer, size);
        push_manifest(&registry, REPO, tag, &manifest).await;
        expect_served(&registry, tag, &manifest).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_over_4_mib_is_413() {
    let registry = Registry::start().await;
    let config = Blob::random_config();
    let layer = Blob::random(100);
    push_blob(&registry, REPO, &config).await;
    push_blob(&registry, REPO, &layer).await;
    for size in [FOUR_MIB + 1, FOUR_MIB + 4096, 2 * FOUR_MIB] {
        let manifest = manifest_of_size(&config, &layer, size);
        let reply = put_manifest(&registry, REPO, "big", &manifest).await;
        // The spec names no error code for 413; the body must still be an error body.
        reply.expect_status(413);
        reply.expect_error_body();
        let digest = manifest.digest.to_string();
        put_manifest(&registry, REPO, &digest, &manifest)
            .await
            .expect_status(413);
    }
    expect_unknown(&registry, "big", "*/*").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_digest_is_202_then_digest_and_every_tag_are_404_manifest_unknown() {
    let registry = Registry::start().await;
    let image = push_image(&registry, REPO, "one").await;
    push_manifest(&registry, REPO, "two", &image.manifest).await;
    let digest = image.manifest.digest.to_string();

    send(registry.delete(&manifest_path(REPO, &digest)))
        .await
        .expect_status(202);
    for reference in [digest.as_str(), "one", "two"] {
        expect_unknown(&registry, reference, OCI_MANIFEST).await;
    }
    // Deleting it again: it is unknown.
    send(registry.delete(&manifest_path(REPO, &digest)))
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_tag_is_202_and_only_removes_the_tag() {
    let registry = Registry::start().await;
    let image = push_image(&registry, REPO, "one").await;
    push_manifest(&registry, REPO, "two", &image.manifest).await;
    let digest = image.manifest.digest.to_string();

    send(registry.delete(&manifest_path(REPO, "one")))
        .await
        .expect_status(202);
    expect_unknown(&registry, "one", OCI_MANIFEST).await;
    expect_served(&registry, &digest, &image.manifest).await;
    expect_served(&registry, "two", &image.manifest).await;
    let tags = send(registry.get(&format!("/v2/{REPO}/tags/list"))).await;
    tags.expect_status(200);
    assert_eq!(tags.json()["tags"], json!(["two"]));
    send(registry.delete(&manifest_path(REPO, "one")))
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putting_an_existing_tag_moves_it_to_the_new_manifest() {
    let registry = Registry::start().await;
    let first = push_image(&registry, REPO, "latest").await.manifest;
    let second = push_image(&registry, REPO, "latest").await.manifest;
    expect_served(&registry, "latest", &second).await;
    expect_served(&registry, &first.digest.to_string(), &first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_manifest_is_404_manifest_unknown() {
    let registry = Registry::start().await;
    let image = push_image(&registry, REPO, "present").await;
    let absent = oci_image(&image.config, &[]);
    expect_unknown(&registry, "absent", "*/*").await;
    expect_unknown(&registry, &absent.digest.to_string(), "*/*").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_content_survives_a_registry_restart() {
    let mut registry = Registry::start().await;
    let image = push_image(&registry, REPO, "durable").await;
    let digest = image.manifest.digest.to_string();
    registry.restart().await;

    expect_served(&registry, "durable", &image.manifest).await;
    expect_served(&registry, &digest, &image.manifest).await;
    for blob in [&image.config, &image.layer] {
        let reply = send(registry.get(&crate::fixtures::blob_path(REPO, &blob.digest))).await;
        reply.expect_status(200);
        assert!(reply.body == blob.bytes);
    }
    let tags = send(registry.get(&format!("/v2/{REPO}/tags/list"))).await;
    tags.expect_status(200);
    assert_eq!(tags.json()["tags"], json!(["durable"]));
}

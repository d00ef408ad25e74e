//! `GET /v2/<name>/referrers/<digest>`: an OCI image index of the manifests whose `subject` is
//! `<digest>`, with the `artifactType` filter.

use serde_json::{json, Value};

use crate::client::{encode, send, Registry, Reply};
use crate::fixtures::{
    artifact, index_of, manifest_path, push_blob, push_image, push_manifest, Blob, Manifest,
    OCI_INDEX, OCI_MANIFEST,
};

const REPO: &str = "library/referrers";
const SBOM: &str = "application/vnd.example.sbom.v1+json";
const SIGNATURE: &str = "application/vnd.example.signature.v1+json";

fn referrers_path(subject: &Manifest) -> String {
    format!("/v2/{REPO}/referrers/{}", subject.digest)
}

/// Asserts a referrers reply: 200, an OCI index by Content-Type and by body; returns its
/// descriptors sorted by digest.
fn listed(reply: &Reply) -> Vec<Value> {
    reply
        .expect_status(200)
        .expect_header("content-type", OCI_INDEX);
    let body = reply.json();
    assert_eq!(body["schemaVersion"], 2, "{body}");
    assert_eq!(body["mediaType"], OCI_INDEX, "{body}");
    let mut manifests = body["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests array in {body}"))
        .clone();
    manifests.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    manifests
}

/// The descriptor a referrer must be listed with.
fn expected_descriptor(
    manifest: &Manifest,
    artifact_type: &str,
    annotations: Option<Value>,
) -> Value {
    let mut descriptor = json!({
        "mediaType": manifest.media_type,
        "digest": manifest.digest.to_string(),
        "size": manifest.bytes.len(),
        "artifactType": artifact_type,
    });
    if let Some(annotations) = annotations {
        descriptor["annotations"] = annotations;
    }
    descriptor
}

fn sorted_by_digest(mut descriptors: Vec<Value>) -> Vec<Value> {
    descriptors.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    descriptors
}

/// Pushes a subject image and the empty config blob artifacts use.
async fn subject(registry: &Registry, tag: &str) -> Manifest {
    let subject = push_image(registry, REPO, tag).await.manifest;
    push_blob(registry, REPO, &Blob::empty_config()).await;
    subject
}

/// Pushes an artifact by digest, as oras does, and asserts `OCI-Subject`.
async fn push_referrer(registry: &Registry, manifest: &Manifest, subject: &Manifest) {
    let reply =
        crate::fixtures::put_manifest(registry, REPO, &manifest.digest.to_string(), manifest).await;
    reply
        .expect_status(201)
        .expect_header("oci-subject", &subject.digest.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_list_every_artifact_pushed_with_that_subject() {
    let registry = Registry::start().await;
    let subject = subject(&registry, "app").await;
    let other_subject = push_image(&registry, REPO, "other").await.manifest;
    let payload = Blob::random(2_000);
    push_blob(&registry, REPO, &payload).await;

    let annotations =
        json!({"org.opencontainers.image.created": "2026-11-01T00:00:00Z", "signer": "ci"});
    let signature = artifact(SIGNATURE, &[], Some(&subject), Some(annotations.clone()));
    let sbom = artifact(SBOM, &[&payload], Some(&subject), None);
    let unrelated = artifact(SBOM, &[], Some(&other_subject), None);
    push_referrer(&registry, &signature, &subject).await;
    push_referrer(&registry, &unrelated, &other_subject).await;
    // A referrer pushed by tag is a referrer too.
    let reply = crate::fixtures::put_manifest(&registry, REPO, "sbom", &sbom).await;
    reply
        .expect_status(201)
        .expect_header("oci-subject", &subject.digest.to_string());

    let reply = send(registry.get(&referrers_path(&subject))).await;
    let expected = sorted_by_digest(vec![
        expected_descriptor(&signature, SIGNATURE, Some(annotations)),
        expected_descriptor(&sbom, SBOM, None),
    ]);
    assert_eq!(listed(&reply), expected);
    assert_eq!(reply.header("oci-filters-applied"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_of_a_subject_without_referrers_is_an_empty_index() {
    let registry = Registry::start().await;
    let subject = subject(&registry, "app").await;
    let reply = send(registry.get(&referrers_path(&subject))).await;
    assert!(listed(&reply).is_empty());

    // A subject that was never pushed has no referrers either; still 200, never 404.
    let absent = Manifest::from_bytes(OCI_MANIFEST, b"{\"never\":\"pushed\"}".to_vec());
    let reply = send(registry.get(&referrers_path(&absent))).await;
    assert!(listed(&reply).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_filtered_by_artifact_type_set_oci_filters_applied() {
    let registry = Registry::start().await;
    let subject = subject(&registry, "app").await;
    let signature = artifact(SIGNATURE, &[], Some(&subject), None);
    let sbom = artifact(SBOM, &[], Some(&subject), Some(json!({"n": "1"})));
    let second_sbom = artifact(SBOM, &[], Some(&subject), Some(json!({"n": "2"})));
    for referrer in [&signature, &sbom, &second_sbom] {
        push_referrer(&registry, referrer, &subject).await;
    }

    let path = format!("{}?artifactType={}", referrers_path(&subject), encode(SBOM));
    let reply = send(registry.get(&path)).await;
    let expected = sorted_by_digest(vec![
        expected_descriptor(&sbom, SBOM, Some(json!({"n": "1"}))),
        expected_descriptor(&second_sbom, SBOM, Some(json!({"n": "2"}))),
    ]);
    assert_eq!(listed(&reply), expected);
    reply.expect_header("oci-filters-applied", "artifactType");

    let path = format!(
        "{}?artifactType={}",
        referrers_path(&subject),
        encode("application/vnd.example.none")
    );
    let reply = send(registry.get(&path)).await;
    assert!(listed(&reply).is_empty());
    reply.expect_header("oci-filters-applied", "artifactType");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrer_without_artifact_type_is_listed_with_its_config_media_type() {
    let registry = Registry::start().await;
    let subject = subject(&registry, "app").await;
    let config = Blob::of(br#"{"signed":true}"#.to_vec());
    push_blob(&registry, REPO, &config).await;
    let config_type = "application/vnd.example.signature.config.v1+json";
    let value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(config_type),
        "layers": [],
        "subject": subject.descriptor(),
    });
    let referrer = Manifest::new(OCI_MANIFEST, &value);
    push_referrer(&registry, &referrer, &subject).await;

    let reply = send(registry.get(&referrers_path(&subject))).await;
    assert_eq!(
        listed(&reply),
        vec![expected_descriptor(&referrer, config_type, None)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_with_a_subject_is_listed_as_a_referrer() {
    let registry = Registry::start().await;
    let subject = subject(&registry, "app").await;
    let child = artifact(SBOM, &[], None, None);
    push_manifest(&registry, REPO, &child.digest.to_string(), &child).await;
    let mut value: Value =
        serde_json::from_slice(&index_of(OCI_INDEX, &[&child]).bytes).expect("JSON");
    value["artifactType"] = json!("application/vnd.example.bundle");
    value["subject"] = subject.descriptor();
    let index = Manifest::new(OCI_INDEX, &value);
    push_referrer(&registry, &index, &subject).await;

    let reply = send(registry.get(&referrers_path(&subject))).await;
    assert_eq!(
        listed(&reply),
        vec![expected_descriptor(
            &index,
            "application/vnd.example.bundle",
            None
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrer_pushed_before_its_subject_is_accepted_and_listed() {
    let registry = Registry::start().await;
    push_blob(&registry, REPO, &Blob::empty_config()).await;
    // The subject's bytes exist only on the client so far.
    let config = Blob::random_config();
    let future_subject = crate::fixtures::oci_image(&config, &[]);
    let signature = artifact(SIGNATURE, &[], Some(&future_subject), None);
    push_referrer(&registry, &signature, &future_subject).await;

    let reply = send(registry.get(&referrers_path(&future_subject))).await;
    assert_eq!(
        listed(&reply),
        vec![expected_descriptor(&signature, SIGNATURE, None)]
    );

    push_blob(&registry, REPO, &config).await;
    push_manifest(&registry, REPO, "later", &future_subject).await;
    let reply = send(registry.get(&referrers_path(&future_subject))).await;
    assert_eq!(listed(&reply).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_referrer_is_no_longer_listed() {
    let registry = Registry::start().await;
    let subject = subject(&registry, "app").await;
    let kept = artifact(SBOM, &[], Some(&subject), None);
    let deleted = artifact(SIGNATURE, &[], Some(&subject), None);
    push_referrer(&registry, &kept, &subject).await;
    push_referrer(&registry, &deleted, &subject).await;

    send(registry.delete(&manifest_path(REPO, &deleted.digest.to_string())))
        .await
        .expect_status(202);
    let reply = send(registry.get(&referrers_path(&subject))).await;
    assert_eq!(listed(&reply), vec![expected_descriptor(&kept, SBOM, None)]);
}

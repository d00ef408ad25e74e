//! A manifest `PUT`: the first line of the input is the `Content-Type` (empty: none sent), the
//! rest the body, validated by `ParsedManifest::parse` as the gateway does for every media
//! type (OCI image manifest and index, Docker schema 2 manifest and list, artifacts with
//! `artifactType` and `subject`).
//!
//! Properties: parsing never panics and is deterministic; an accepted manifest has a supported
//! media type that agrees with a sent `Content-Type`, an index lists manifests and no blobs, an
//! image lists its config first and no manifests; the descriptors it yields survive a JSON
//! round trip, as the referrers API stores and serves them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_model::media_type::{essence, is_index, MANIFEST_TYPES};
use oci_model::{Descriptor, Digest, ParsedManifest, MAX_MANIFEST_BYTES};

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    // A header value the gateway reads is text (`HeaderValue::to_str`); anything else is absent.
    let content_type = std::str::from_utf8(content_type)
        .ok()
        .filter(|text| !text.is_empty());
    let parsed = ParsedManifest::parse(content_type, body);
    assert_eq!(
        parsed,
        ParsedManifest::parse(content_type, body),
        "parsing is deterministic"
    );
    let Ok(parsed) = parsed else {
        return;
    };
    assert!(body.len() <= MAX_MANIFEST_BYTES);
    assert!(
        MANIFEST_TYPES.contains(&parsed.media_type.as_str()),
        "accepted an unsupported media type {:?}",
        parsed.media_type
    );
    if let Some(header) = content_type.map(essence).filter(|h| !h.is_empty()) {
        assert_eq!(
            header, parsed.media_type,
            "the Content-Type decides the type"
        );
    }
    if is_index(&parsed.media_type) {
        assert!(parsed.blobs.is_empty(), "an index references no blobs");
    } else {
        assert!(
            parsed.manifests.is_empty(),
            "an image has no child manifests"
        );
        assert!(!parsed.blobs.is_empty(), "an image references its config");
        assert!(
            parsed.artifact_type.is_some(),
            "an image always has an artifact type"
        );
    }
    if let Some(subject) = &parsed.subject {
        round_trips(subject);
    }
    let digest = Digest::sha256_of(body);
    let referrer = parsed.referrer_descriptor(&digest, body.len() as u64);
    assert_eq!(referrer.digest, digest);
    round_trips(&referrer);
});

fn round_trips(descriptor: &Descriptor) {
    let json = serde_json::to_vec(descriptor).expect("a descriptor serialises");
    let back: Descriptor = serde_json::from_slice(&json).expect("a descriptor reads back");
    assert_eq!(&back, descriptor, "descriptor JSON round trip");
}

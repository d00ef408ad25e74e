//! Repository names, tags and manifest references, and the request path they come in: the
//! input is tried as each of them and as a path for `Route::parse`, whose parts then go
//! through the dispatcher's validation (`gateway::fuzzing`).
//!
//! Properties: never panics; whatever parses writes back to the text it came from and parses
//! again to the same value (through serde too); the gateway's validation agrees with
//! `oci-model`'s and answers the spec's error code; a route rebuilt from a valid name and
//! reference parses to the same route.
#![no_main]

use gateway::fuzzing::{manifest_reference, repository_param};
use gateway::Route;
use libfuzzer_sys::fuzz_target;
use oci_model::name::{MAX_NAME_LEN, MAX_TAG_LEN};
use oci_model::{ErrorCode, Reference, RepositoryName, Tag};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_name(&text);
    check_reference(&text);
    check_route(&text);
});

fn check_name(text: &str) {
    let parsed = RepositoryName::parse(text);
    match (&parsed, repository_param(text)) {
        (Ok(name), Ok(gateway_name)) => assert_eq!(name, &gateway_name),
        (Err(_), Err(code)) => assert_eq!(code, ErrorCode::NameInvalid),
        (ours, theirs) => panic!("oci-model says {ours:?}, the gateway {theirs:?}"),
    }
    let Ok(name) = parsed else {
        return;
    };
    assert_eq!(name.as_str(), text);
    assert_eq!(name.to_string(), text);
    assert!(text.len() <= MAX_NAME_LEN);
    assert!(text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
    assert!(text.split('/').all(|component| {
        let first = component.as_bytes().first();
        let last = component.as_bytes().last();
        first.is_some_and(u8::is_ascii_alphanumeric) && last.is_some_and(u8::is_ascii_alphanumeric)
    }));
    let json = serde_json::to_string(&name).expect("a name serialises");
    assert_eq!(
        serde_json::from_str::<RepositoryName>(&json).ok(),
        Some(name)
    );
}

fn check_reference(text: &str) {
    if let Ok(tag) = Tag::parse(text) {
        assert_eq!(tag.as_str(), text);
        assert!(!text.is_empty() && text.len() <= MAX_TAG_LEN);
        let json = serde_json::to_string(&tag).expect("a tag serialises");
        assert_eq!(serde_json::from_str::<Tag>(&json).ok(), Some(tag));
    }
    let parsed = Reference::parse(text);
    match (&parsed, manifest_reference(text)) {
        (Ok(reference), Ok(gateway_reference)) => assert_eq!(reference, &gateway_reference),
        (Err(_), Err(code)) => {
            let expected = if text.contains(':') {
                ErrorCode::DigestInvalid
            } else {
                ErrorCode::ManifestInvalid
            };
            assert_eq!(code, expected);
        }
        (ours, theirs) => panic!("oci-model says {ours:?}, the gateway {theirs:?}"),
    }
    let Ok(reference) = parsed else {
        return;
    };
    assert_eq!(reference.to_string(), text);
    assert_eq!(
        Reference::parse(&reference.to_string()).ok(),
        Some(reference.clone())
    );
    let json = serde_json::to_string(&reference).expect("a reference serialises");
    assert_eq!(
        serde_json::from_str::<Reference>(&json).ok(),
        Some(reference)
    );
}

fn check_route(path: &str) {
    let Some(route) = Route::parse(path) else {
        return;
    };
    assert!(!route.allowed().is_empty());
    let Some(name) = route.name() else {
        return;
    };
    // The name and the other part are decoded; rebuilt from valid ones (no `%` to decode again,
    // no `/` in a single segment), the path parses to the same route.
    if RepositoryName::parse(name).is_err() {
        return;
    }
    let rebuilt = match &route {
        Route::Manifest { name, reference } if Reference::parse(reference).is_ok() => {
            format!("/v2/{name}/manifests/{reference}")
        }
        Route::Blob { name, digest } if oci_model::Digest::parse(digest).is_ok() => {
            format!("/v2/{name}/blobs/{digest}")
        }
        Route::Referrers { name, digest } if oci_model::Digest::parse(digest).is_ok() => {
            format!("/v2/{name}/referrers/{digest}")
        }
        Route::Tags { name } => format!("/v2/{name}/tags/list"),
        Route::UploadStart { name } => format!("/v2/{name}/blobs/uploads/"),
        Route::Upload { name, id } if cluster_api::UploadId::parse(id).is_some() => {
            format!("/v2/{name}/blobs/uploads/{id}")
        }
        _ => return,
    };
    assert_eq!(
        Route::parse(&rebuilt),
        Some(route),
        "{rebuilt:?} from {path:?}"
    );
}

//! The query strings of the registry API, read by the gateway's dispatcher: `n` and `last`
//! (tags/list, _catalog), `digest`, `mount` and `from` (an upload's `POST`), `digest` (its
//! closing `PUT`) and `artifactType` (referrers). The input is the raw query, after the `?`.
//!
//! Properties: never panics; each refusal carries the spec's code (PAGINATION_NUMBER_INVALID,
//! DIGEST_INVALID); the first of repeated keys wins everywhere, so the upload's `digest` and
//! the closing `PUT`'s agree; an accepted `n` is the decimal number sent and `last` is never
//! empty; values survive being encoded again as a query.
#![no_main]

use gateway::fuzzing::{query, QueryParams};
use libfuzzer_sys::fuzz_target;
use oci_model::ErrorCode;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let params = query(Some(&raw));
    let first = |key: &str| {
        form_urlencoded::parse(raw.as_bytes())
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.into_owned())
    };
    match &params.page {
        Ok((n, last)) => {
            if let Some(n) = n {
                assert_eq!(first("n").and_then(|text| text.parse().ok()), Some(*n));
            }
            assert!(last.as_deref().is_none_or(|last| !last.is_empty()));
            assert_eq!(last.clone(), first("last").filter(|last| !last.is_empty()));
        }
        Err(code) => assert_eq!(*code, ErrorCode::PaginationNumberInvalid),
    }
    match (&params.start, &params.required_digest) {
        (Ok(start), Ok(required)) => assert_eq!(start.digest.as_ref(), Some(required)),
        (Ok(start), Err(code)) => {
            assert!(
                start.digest.is_none(),
                "the POST found a digest the PUT did not"
            );
            assert_eq!(*code, ErrorCode::DigestInvalid);
        }
        (Err(code), _) => assert_eq!(*code, ErrorCode::DigestInvalid),
    }
    if let Ok(start) = &params.start {
        assert_eq!(
            start.mount.as_ref().map(ToString::to_string),
            first("mount")
        );
        if let Some(from) = &start.from {
            assert_eq!(Some(from.to_string()), first("from"));
        }
    }
    assert_eq!(params.artifact_type, first("artifactType"));
    round_trips(&params);
});

/// The parameters written back as a query read the same.
fn round_trips(params: &QueryParams) {
    let mut encoded = form_urlencoded::Serializer::new(String::new());
    if let Ok((n, last)) = &params.page {
        if let Some(n) = n {
            encoded.append_pair("n", &n.to_string());
        }
        if let Some(last) = last {
            encoded.append_pair("last", last);
        }
    }
    if let Ok(start) = &params.start {
        if let Some(digest) = &start.digest {
            encoded.append_pair("digest", &digest.to_string());
        }
        if let Some(mount) = &start.mount {
            encoded.append_pair("mount", &mount.to_string());
        }
        if let Some(from) = &start.from {
            encoded.append_pair("from", from.as_str());
        }
    }
    if let Some(artifact_type) = &params.artifact_type {
        encoded.append_pair("artifactType", artifact_type);
    }
    let encoded = encoded.finish();
    let again = query(Some(&encoded));
    if let (Ok(page), Ok(page_again)) = (&params.page, &again.page) {
        assert_eq!(page, page_again);
    }
    assert!(again.page.is_ok() || params.page.is_err());
    if let Ok(start) = &params.start {
        assert_eq!(again.start.as_ref(), Ok(start), "a valid start reads back");
    }
    assert_eq!(params.artifact_type, again.artifact_type);
}

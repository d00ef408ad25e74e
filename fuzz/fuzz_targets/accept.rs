//! `Accept` negotiation of a manifest GET. The first byte picks the stored manifest's media type
//! and whether it is asked for by digest or by tag; the rest is the `Accept` header, one value
//! per line (clients send several lines or one comma-separated list).
//!
//! Properties: never panics; the gateway's decision is `oci-model`'s `accepts` plus the Docker
//! by-digest rule; no `Accept` admits everything; a list naming the stored type, or `*/*`,
//! admits it; a media type's essence carries no parameters or surrounding space.
#![no_main]

use gateway::fuzzing::negotiable;
use libfuzzer_sys::fuzz_target;
use oci_model::media_type::{self, accepts, essence};
use oci_model::{Digest, Reference, Tag};

const STORED: [&str; 5] = [
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_MANIFEST_LIST,
    "application/vnd.example.unknown+json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, accept)) = data.split_first() else {
        return;
    };
    let stored = STORED[usize::from(selector & 7) % STORED.len()];
    let reference = if selector & 8 == 0 {
        Reference::Tag(Tag::parse("latest").expect("a valid tag"))
    } else {
        Reference::Digest(Digest::sha256_of(data))
    };
    let lines: Vec<&[u8]> = if accept.is_empty() {
        Vec::new()
    } else {
        accept.split(|&b| b == b'\n').collect()
    };
    let Some(admitted) = negotiable(&reference, stored, &lines) else {
        return;
    };
    // The gateway reads the values that are text; hyper admits others, which it skips.
    let texts: Vec<&str> = lines
        .iter()
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter(|line| {
            line.bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        })
        .collect();
    let docker_by_digest = matches!(reference, Reference::Digest(_))
        && (stored == media_type::DOCKER_MANIFEST || stored == media_type::DOCKER_MANIFEST_LIST);
    assert_eq!(admitted, docker_by_digest || accepts(&texts, stored));
    if texts.is_empty() {
        assert!(accepts(&texts, stored), "no Accept admits everything");
    }
    let mut with_stored = texts.clone();
    with_stored.push(stored);
    assert!(accepts(&with_stored, stored));
    let mut with_any = texts.clone();
    with_any.push("*/*");
    assert!(accepts(&with_any, stored));
    for text in &texts {
        for item in text.split(',') {
            let bare = essence(item);
            assert!(!bare.contains(';'));
            assert_eq!(bare, bare.trim());
            assert_eq!(essence(bare), bare, "essence is idempotent");
        }
    }
});

//! Digests (`algorithm:encoded`, in paths and the `digest`/`mount` query parameters), upload ids
//! (the signed session tokens a client carries in `/blobs/uploads/<id>`) and the signed query
//! of a redirected blob GET (`/blobs/<digest>?expires=..&sig=..`). With a `?` in the input,
//! the text before it is the digest and the rest that query.
//!
//! Properties: never panics; a parsed digest is canonical (writes back to its text, the right
//! hex length, round trips through serde and parses as a reference); an upload token decodes
//! only from its one spelling and names the session it was minted for; a query is accepted
//! only with a valid, unexpired signature, and a freshly signed one always is.
#![no_main]

use cluster_api::{sign_blob_query, verify_blob_query, UploadId, UploadToken};
use gateway::fuzzing::digest_query_param;
use libfuzzer_sys::fuzz_target;
use oci_model::{Digest, ErrorCode, Reference, RepositoryName};

const KEY: &[u8; 32] = b"wharf fuzz blob-url and uploads!";
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (digest_text, query) = text.split_once('?').unwrap_or((&text, ""));
    if let Some(digest) = check_digest(digest_text) {
        check_blob_query(&digest, query);
    }
    check_upload_id(&text);
});

fn check_digest(text: &str) -> Option<Digest> {
    let parsed = Digest::parse(text);
    match (&parsed, digest_query_param(text)) {
        (Ok(digest), Ok(gateway_digest)) => assert_eq!(digest, &gateway_digest),
        (Err(_), Err(code)) => assert_eq!(code, ErrorCode::DigestInvalid),
        (ours, theirs) => panic!("oci-model says {ours:?}, the gateway {theirs:?}"),
    }
    let digest = parsed.ok()?;
    assert_eq!(digest.to_string(), text);
    assert_eq!(digest.hex().len(), digest.algorithm().hex_len());
    assert!(digest
        .hex()
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(
        Reference::parse(text).ok(),
        Some(Reference::Digest(digest.clone()))
    );
    let json = serde_json::to_string(&digest).expect("a digest serialises");
    assert_eq!(
        serde_json::from_str::<Digest>(&json).ok().as_ref(),
        Some(&digest)
    );
    Some(digest)
}

fn check_blob_query(digest: &Digest, query: &str) {
    if verify_blob_query(KEY, digest, query, NOW).is_ok() {
        // Only a signature this key made for this digest and an unexpired time passes. Of
        // repeated parameters the last counts (the signature covers the value used).
        let expires = query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("expires="))
            .next_back()
            .and_then(|value| value.parse::<u64>().ok())
            .expect("an accepted query has an expiry");
        assert!(expires >= NOW);
        assert!(query.split('&').any(|pair| pair.starts_with("sig=")));
    }
    // What a gateway signs, a node accepts until it expires, and no longer.
    let expires = NOW + (query.len() as u64);
    let signed = sign_blob_query(KEY, digest, expires);
    assert_eq!(verify_blob_query(KEY, digest, &signed, NOW), Ok(()));
    assert!(verify_blob_query(KEY, digest, &signed, expires + 1).is_err());
    assert!(verify_blob_query(b"another key", digest, &signed, NOW).is_err());
}

fn check_upload_id(text: &str) {
    let Some(id) = UploadId::parse(text) else {
        return;
    };
    assert_eq!(id.as_str(), text);
    assert!((32..=128).contains(&text.len()));
    let Some(token) = UploadToken::decode(&id) else {
        return;
    };
    assert_eq!(token.id(), id, "a token has one spelling");
    let repo = RepositoryName::parse("fuzz/app").expect("a valid name");
    if let Ok(session) = UploadToken::session(&repo, &id) {
        assert_eq!(session.id, id);
        assert_eq!(session.staging_node, token.staging_node());
        assert_eq!(session.started_ms, token.started_ms());
    }
    // A token minted with the same fields verifies; the client's one only if it is that token.
    // The token's own nonce: bytes 1..17, hex characters 2..34.
    let nonce: [u8; 16] = std::array::from_fn(|i| {
        u8::from_str_radix(&text[2 + 2 * i..4 + 2 * i], 16).expect("a decoded token is hex")
    });
    let minted = UploadToken::mint(KEY, &repo, token.staging_node(), token.started_ms(), nonce);
    assert!(minted.verify(KEY, &repo));
    assert!(!minted.verify(b"another key", &repo));
    assert_eq!(UploadToken::decode(&minted.id()), Some(minted.clone()));
    if token.verify(KEY, &repo) {
        assert_eq!(token, minted, "a forged token verified");
    }
}

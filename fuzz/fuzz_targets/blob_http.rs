//! A blob node's own HTTP endpoint (`blob-http`): the request head it reads from a client
//! redirected there (`parse_request_head`, over httparse), then the target's path and signed
//! query and the `Range` it answers, as `answer` takes them apart. The input is the bytes a
//! client sends on the connection.
//!
//! Properties: never panics; a head is found only when the bytes hold the blank line ending
//! one; only `GET` and `HEAD` are served, a refusal is a 400; the signed query of a fresh URL
//! for the path's digest is accepted and the client's own only with the right signature; a
//! range served lies within the blob.
#![no_main]

use blob_http::parse_request_head;
use cluster_api::{sign_blob_query, verify_blob_query};
use libfuzzer_sys::fuzz_target;
use oci_model::{range_request, Digest, RangeRequest};

const KEY: &[u8; 32] = b"wharf fuzz blob-url and uploads!";
const NOW: u64 = 1_800_000_000;
/// The size of the blob the request is answered against.
const SIZE: u64 = 1_000;

fuzz_target!(|data: &[u8]| {
    let Some(parsed) = parse_request_head(data) else {
        assert!(!data.windows(4).any(|window| window == b"\r\n\r\n"));
        return;
    };
    let request = match parsed {
        Ok(request) => request,
        Err(status) => {
            assert_eq!(status, 400, "a malformed head is a 400");
            return;
        }
    };
    assert!(!request.head || request.method_ok);
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    if let Some(digest) = path
        .strip_prefix("/blobs/")
        .and_then(|text| Digest::parse(text).ok())
    {
        let accepted = verify_blob_query(KEY, &digest, query, NOW).is_ok();
        let fresh = sign_blob_query(KEY, &digest, NOW + 60);
        assert!(!accepted || query.contains("sig="));
        assert_eq!(verify_blob_query(KEY, &digest, &fresh, NOW), Ok(()));
    }
    if let RangeRequest::Part { start, end } = range_request(request.range.as_deref(), SIZE) {
        assert!(start <= end && end < SIZE);
    }
});

//! `Range` of a blob GET (`oci_model::range_request`, which the gateway and a blob node's HTTP
//! endpoint both answer with) and `Content-Range` of an upload `PATCH` (the gateway's
//! `chunk_range`). The input's first line is the blob's size in decimal, the rest the header
//! value; the `Range` value is also tried as a `Content-Range` and the other way round.
//!
//! Properties: never panics; a partial answer lies within the blob, starts before it ends and
//! reads back the same from its canonical `bytes=start-end`; 416 only for a `bytes=` request;
//! a chunk range is in order, its length (which the upload computes as `end - start + 1`) fits
//! in a `u64`, it reads back from its canonical `start-end`, and a refusal is RANGE_INVALID.
#![no_main]

use gateway::fuzzing::chunk_range;
use libfuzzer_sys::fuzz_target;
use oci_model::{range_request, ErrorCode, RangeRequest};

fuzz_target!(|data: &[u8]| {
    let (size_line, value) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let size = std::str::from_utf8(size_line)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(size_line.len() as u64);
    if let Ok(text) = std::str::from_utf8(value) {
        check_range(text, size);
    }
    check_content_range(value);
});

fn check_range(value: &str, size: u64) {
    assert_eq!(range_request(None, size), RangeRequest::Whole);
    match range_request(Some(value), size) {
        RangeRequest::Whole => {}
        RangeRequest::Part { start, end } => {
            assert!(start <= end, "{value:?}: {start} > {end}");
            assert!(end < size, "{value:?}: {end} past a blob of {size}");
            let canonical = format!("bytes={start}-{end}");
            assert_eq!(
                range_request(Some(&canonical), size),
                RangeRequest::Part { start, end }
            );
        }
        RangeRequest::Unsatisfiable => {
            assert!(
                value.trim().starts_with("bytes="),
                "{value:?} is no byte range, so not a 416"
            );
        }
    }
}

fn check_content_range(value: &[u8]) {
    let Some(parsed) = chunk_range(value) else {
        return;
    };
    match parsed {
        Ok(Some((start, end))) => {
            assert!(start <= end);
            assert!(
                (end - start).checked_add(1).is_some(),
                "Content-Range {start}-{end} is longer than a u64 can count"
            );
            let canonical = format!("{start}-{end}");
            assert_eq!(
                chunk_range(canonical.as_bytes()),
                Some(Ok(Some((start, end))))
            );
        }
        Ok(None) => panic!("a Content-Range that was sent is not absent"),
        Err(code) => assert_eq!(code, ErrorCode::RangeInvalid),
    }
}

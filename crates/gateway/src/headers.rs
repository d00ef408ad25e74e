//! Header names the registry API adds to HTTP, and parsers for the headers it reads.

use axum::http::header::{CONTENT_LENGTH, CONTENT_RANGE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use oci_model::ErrorCode;

use crate::error::ApiError;

pub(crate) const API_VERSION: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
pub(crate) const API_VERSION_VALUE: HeaderValue = HeaderValue::from_static("registry/2.0");
pub(crate) const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub(crate) const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub(crate) const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub(crate) const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// Sets a header from text. Every value the gateway sends is built from validated names, digests
/// and numbers, so an invalid one is a bug; it is dropped rather than turned into a panic.
pub(crate) fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => {
            tracing::error!(header = %name, value, "dropping an invalid response header value")
        }
    }
}

/// A header's value as text, if present and visible ASCII.
pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Every value of a header, for lists such as `Accept` that clients send on several lines.
pub(crate) fn header_values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect()
}

/// The request's `Content-Length`, if sent. Hyper refuses malformed values before we see them;
/// this check matters for requests built in-process.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(ErrorCode::SizeInvalid, "Content-Length is not a number")),
    }
}

/// The inclusive byte range a chunk upload claims with `Content-Range: <start>-<end>`. The spec
/// writes it without a unit; `bytes <start>-<end>` and `bytes=<start>-<end>` are accepted too,
/// with an optional `/<total>` suffix. A malformed or backwards range is 416 RANGE_INVALID, and
/// so is one of 2^64 bytes, whose length (`end - start + 1`, which the upload computes) a `u64`
/// cannot hold.
pub(crate) fn chunk_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = headers.get(CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            ErrorCode::RangeInvalid,
            "Content-Range must be <start>-<end>, inclusive",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let text = text.split_once('/').map_or(text, |(range, _total)| range);
    let (start, end) = text.split_once('-').ok_or_else(invalid)?;
    let number = |part: &str| {
        let all_digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        all_digits.then(|| part.parse::<u64>().ok()).flatten()
    };
    match (number(start), number(end)) {
        (Some(start), Some(end)) if start <= end && end - start < u64::MAX => {
            Ok(Some((start, end)))
        }
        _ => Err(invalid()),
    }
}

/// The `Range` value of an upload that holds `length` bytes: `0-<last byte>`, and `0-0` while it
/// is empty, as Distribution reports it.
pub(crate) fn upload_range(length: u64) -> String {
    format!("0-{}", length.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content_range(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_RANGE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn chunk_ranges() {
        let parse = |value: &str| chunk_range(&with_content_range(value)).map_err(|e| e.code());
        assert_eq!(parse("0-9"), Ok(Some((0, 9))));
        assert_eq!(parse("bytes 10-19"), Ok(Some((10, 19))));
        assert_eq!(parse("bytes=10-19/100"), Ok(Some((10, 19))));
        // `0-18446744073709551615` was found by the fuzz target `range`
        // (fuzz/regressions/range/): its length overflowed in the upload's `end - start + 1`.
        assert_eq!(
            parse("1-18446744073709551615"),
            Ok(Some((1, u64::MAX))),
            "the longest countable range"
        );
        for bad in [
            "",
            "9-0",
            "a-b",
            "10",
            "-5",
            "5-",
            "+1-2",
            "0--1",
            "0-18446744073709551615",
        ] {
            assert_eq!(parse(bad), Err(ErrorCode::RangeInvalid), "{bad:?}");
        }
        assert_eq!(
            chunk_range(&HeaderMap::new()).map_err(|e| e.code()),
            Ok(None)
        );
    }

    #[test]
    fn upload_ranges() {
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(1), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }
}

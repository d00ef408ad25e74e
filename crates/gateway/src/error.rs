//! [`ApiError`]: an OCI error plus the headers its response needs, and the two functions that map
//! the service errors onto the OCI error table ([`ApiError::from_meta`], [`ApiError::from_blob`]).

use axum::http::header::{CONTENT_RANGE, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cluster_api::{BlobError, MetaError};
use oci_model::{ErrorCode, OciError};
use serde_json::json;

/// Seconds a client is asked to wait (`Retry-After`) when the cluster is unavailable.
const RETRY_AFTER_SECS: &str = "1";

/// An error response: one OCI error, rendered by the `oci-model` table with the table's status.
/// Boxed, because it travels in every handler's `Result`.
#[derive(Debug)]
pub(crate) struct ApiError(Box<ErrorResponse>);

#[derive(Debug)]
struct ErrorResponse {
    error: OciError,
    /// Replaces the table's status; only an unknown path uses it (404 with code UNSUPPORTED).
    status: Option<StatusCode>,
    headers: HeaderMap,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(Box::new(ErrorResponse {
            error: OciError::new(code, message),
            status: None,
            headers: HeaderMap::new(),
        }))
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.0.error.detail = Some(detail);
        self
    }

    /// Adds a response header. Values come from digests, numbers and validated names, so one that
    /// is not a valid header value is a bug; it is dropped rather than turned into a panic.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> ApiError {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.0.headers.insert(name, value);
        }
        self
    }

    pub fn with_headers(mut self, headers: HeaderMap) -> ApiError {
        self.0.headers.extend(headers);
        self
    }

    /// Replaces the table's status (for errors outside the registry API: the token endpoint and
    /// the admin API answer a malformed request with 400, an unknown account with 404).
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.0.status = Some(status);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.0.error.code
    }

    /// A path that is not part of the API. The table has no 404 code for "no such endpoint", so the
    /// body says UNSUPPORTED while the status says 404, as the brief and Distribution do.
    pub fn unknown_path(path: &str) -> ApiError {
        let mut error = ApiError::new(ErrorCode::Unsupported, format!("no endpoint at {path}"));
        error.0.status = Some(StatusCode::NOT_FOUND);
        error
    }

    /// A known path with a method it does not serve: 405 with `Allow`.
    pub fn method_not_allowed(method: &str, allowed: &str) -> ApiError {
        ApiError::new(
            ErrorCode::Unsupported,
            format!("method {method} is not supported here"),
        )
        .with_header(axum::http::header::ALLOW, allowed)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message).with_header(RETRY_AFTER, RETRY_AFTER_SECS)
    }

    /// 500 for a fault on our side; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(ErrorCode::Unknown, ErrorCode::Unknown.info().message)
    }

    /// Maps a metadata-service error onto the OCI table.
    pub fn from_meta(error: MetaError) -> ApiError {
        let message = error.to_string();
        match error {
            MetaError::NameUnknown(_) => ApiError::new(ErrorCode::NameUnknown, message),
            MetaError::ManifestUnknown(_) => ApiError::new(ErrorCode::ManifestUnknown, message),
            MetaError::BlobUnknown(digest) => ApiError::new(ErrorCode::BlobUnknown, message)
                .with_detail(json!({ "digest": digest })),
            MetaError::UploadUnknown(_) => ApiError::new(ErrorCode::BlobUploadUnknown, message),
            MetaError::ManifestBlobUnknown(digest) => {
                ApiError::new(ErrorCode::ManifestBlobUnknown, message)
                    .with_detail(json!({ "digest": digest }))
            }
            // Meta refuses what the gateway forwarded unchanged from the client; the caller knows
            // the request kind and may pick a more precise code (see `manifests`, `listing`).
            MetaError::Invalid(_) => ApiError::new(ErrorCode::BlobUploadInvalid, message),
            MetaError::Denied(_) => ApiError::new(ErrorCode::Denied, message),
            MetaError::NoBlobNodes
            | MetaError::PlacementUnmet(_)
            | MetaError::Unavailable { .. }
            | MetaError::Retry(_) => ApiError::unavailable(message),
            MetaError::StorageFull(_) => ApiError::new(ErrorCode::StorageFull, message),
            MetaError::Internal(_) => ApiError::internal(message),
        }
    }

    /// Maps a blob-node error onto the OCI table.
    pub fn from_blob(error: BlobError) -> ApiError {
        let message = error.to_string();
        match error {
            BlobError::NotFound(digest) => ApiError::new(ErrorCode::BlobUnknown, message)
                .with_detail(json!({ "digest": digest })),
            BlobError::UploadNotFound(_) => ApiError::new(ErrorCode::BlobUploadUnknown, message),
            BlobError::OffsetMismatch { .. } => ApiError::new(ErrorCode::RangeInvalid, message),
            BlobError::DigestMismatch { expected, actual } => {
                ApiError::new(ErrorCode::DigestInvalid, message)
                    .with_detail(json!({ "expected": expected, "actual": actual }))
            }
            BlobError::RangeNotSatisfiable { size, .. } => {
                ApiError::new(ErrorCode::RangeInvalid, message)
                    .with_header(CONTENT_RANGE, &format!("bytes */{size}"))
            }
            BlobError::Invalid(_) => ApiError::new(ErrorCode::BlobUploadInvalid, message),
            BlobError::Unavailable(_) => ApiError::unavailable(message),
            BlobError::Full(_) => ApiError::new(ErrorCode::StorageFull, message),
            // Sessions end when clients finish or cancel them: a retry soon may fit.
            BlobError::TooManyUploads(_) => {
                ApiError::new(ErrorCode::TooManyRequests, message).with_header(RETRY_AFTER, "10")
            }
            BlobError::Io(_) => ApiError::internal(message),
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(error: MetaError) -> ApiError {
        ApiError::from_meta(error)
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> ApiError {
        ApiError::from_blob(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ErrorResponse {
            error,
            status,
            headers,
        } = *self.0;
        let status = status
            .or_else(|| StatusCode::from_u16(error.status()).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, error.to_body()).into_response();
        let response_headers = response.headers_mut();
        response_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response_headers.extend(headers);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_model::Digest;

    fn status_of(error: ApiError) -> u16 {
        error.into_response().status().as_u16()
    }

    #[test]
    fn meta_errors_map_to_the_table() {
        let digest = Digest::sha256_of(b"x");
        let cases = [
            (
                MetaError::NameUnknown("a".into()),
                404,
                ErrorCode::NameUnknown,
            ),
            (
                MetaError::ManifestUnknown("v1".into()),
                404,
                ErrorCode::ManifestUnknown,
            ),
            (
                MetaError::BlobUnknown(digest.clone()),
                404,
                ErrorCode::BlobUnknown,
            ),
            (
                MetaError::UploadUnknown("u".into()),
                404,
                ErrorCode::BlobUploadUnknown,
            ),
            (
                MetaError::ManifestBlobUnknown(digest),
                400,
                ErrorCode::ManifestBlobUnknown,
            ),
            (MetaError::NoBlobNodes, 503, ErrorCode::Unavailable),
            (
                MetaError::StorageFull("full".into()),
                507,
                ErrorCode::StorageFull,
            ),
            (
                MetaError::PlacementUnmet("placement rule \"eu\": no blob node is up".into()),
                503,
                ErrorCode::Unavailable,
            ),
            (
                MetaError::Denied("tag v1 is immutable".into()),
                403,
                ErrorCode::Denied,
            ),
            (
                MetaError::Unavailable { leader: None },
                503,
                ErrorCode::Unavailable,
            ),
            (MetaError::Internal("disk".into()), 500, ErrorCode::Unknown),
        ];
        for (error, status, code) in cases {
            let mapped = ApiError::from_meta(error);
            assert_eq!(mapped.code(), code);
            assert_eq!(status_of(mapped), status);
        }
    }

    #[test]
    fn blob_errors_map_to_the_table() {
        let digest = Digest::sha256_of(b"x");
        let cases = [
            (BlobError::NotFound(digest.clone()), 404),
            (BlobError::UploadNotFound("u".into()), 404),
            (
                BlobError::OffsetMismatch {
                    expected: 1,
                    given: 0,
                },
                416,
            ),
            (
                BlobError::DigestMismatch {
                    expected: digest.clone(),
                    actual: digest,
                },
                400,
            ),
            (BlobError::RangeNotSatisfiable { offset: 9, size: 3 }, 416),
            (BlobError::Invalid("x".into()), 400),
            (BlobError::Unavailable("down".into()), 503),
            (BlobError::Io("eio".into()), 500),
            (BlobError::Full("enospc".into()), 507),
            (BlobError::TooManyUploads("cap".into()), 429),
        ];
        for (error, status) in cases {
            assert_eq!(status_of(ApiError::from_blob(error)), status);
        }
    }

    #[test]
    fn unavailable_carries_retry_after_and_range_errors_content_range() {
        let response = ApiError::from_meta(MetaError::NoBlobNodes).into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let response = ApiError::from_blob(BlobError::RangeNotSatisfiable { offset: 9, size: 3 })
            .into_response();
        assert_eq!(response.headers()[CONTENT_RANGE], "bytes */3");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }
}

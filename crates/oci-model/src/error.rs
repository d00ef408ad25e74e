//! The OCI distribution-spec error-code table (plus Distribution's `RANGE_INVALID`), and the one
//! function that renders `{"errors":[...]}` bodies. Every HTTP error Wharf sends goes through here.

use serde::Serialize;

/// Static facts about one error code: its wire name, default message and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: &'static str,
    pub status: u16,
}

macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:literal, $message:literal),)*) => {
        /// An error code from the distribution-spec table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn info(self) -> ErrorInfo {
                match self {
                    $(ErrorCode::$variant => ErrorInfo { code: $code, message: $message, status: $status },)*
                }
            }
        }
    };
}

error_codes! {
    BlobUnknown => ("BLOB_UNKNOWN", 404, "blob unknown to registry"),
    BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid"),
    BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"),
    DigestInvalid => ("DIGEST_INVALID", 400, "provided digest did not match uploaded content"),
    ManifestBlobUnknown => ("MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry"),
    ManifestInvalid => ("MANIFEST_INVALID", 400, "manifest invalid"),
    ManifestUnknown => ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry"),
    NameInvalid => ("NAME_INVALID", 400, "invalid repository name"),
    NameUnknown => ("NAME_UNKNOWN", 404, "repository name not known to registry"),
    SizeInvalid => ("SIZE_INVALID", 400, "provided length did not match content length"),
    Unauthorized => ("UNAUTHORIZED", 401, "authentication required"),
    Denied => ("DENIED", 403, "requested access to the resource is denied"),
    Unsupported => ("UNSUPPORTED", 405, "the operation is unsupported"),
    TooManyRequests => ("TOOMANYREQUESTS", 429, "too many requests"),
    RangeInvalid => ("RANGE_INVALID", 416, "invalid content range"),
    PayloadTooLarge => ("MANIFEST_INVALID", 413, "manifest exceeds the size limit"),
    PaginationNumberInvalid => ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"),
    Unavailable => ("UNAVAILABLE", 503, "service unavailable"),
    // No code in the spec's table; 507 tells the client the failure is space, not a fault.
    StorageFull => ("UNAVAILABLE", 507, "insufficient storage"),
    Unknown => ("UNKNOWN", 500, "unknown error"),
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        self.info().status
    }
    pub fn as_str(self) -> &'static str {
        self.info().code
    }
}

/// One error of a response body: a code, a human message and an optional structured detail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct OciError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

impl OciError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> OciError {
        OciError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The code's default message.
    pub fn of(code: ErrorCode) -> OciError {
        OciError::new(code, code.info().message)
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> OciError {
        self.detail = Some(detail);
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The `{"errors":[...]}` body for this error.
    pub fn to_body(&self) -> Vec<u8> {
        render_errors(std::slice::from_ref(self))
    }
}

#[derive(Serialize)]
struct WireError<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct WireErrors<'a> {
    errors: Vec<WireError<'a>>,
}

/// Renders errors as the distribution-spec JSON body.
pub fn render_errors(errors: &[OciError]) -> Vec<u8> {
    let body = WireErrors {
        errors: errors
            .iter()
            .map(|error| WireError {
                code: error.code.as_str(),
                message: &error.message,
                detail: error.detail.as_ref(),
            })
            .collect(),
    };
    serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"errors":[{"code":"UNKNOWN","message":"unknown error"}]}"#.to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_spec_shape() {
        let body = OciError::new(ErrorCode::BlobUnknown, "blob sha256:x unknown").to_body();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(value["errors"][0]["message"], "blob sha256:x unknown");
        assert!(value["errors"][0].get("detail").is_none());
    }

    #[test]
    fn an_error_answers_with_its_codes_status() {
        for code in ErrorCode::ALL {
            assert_eq!(OciError::of(*code).status(), code.status(), "{code:?}");
        }
        assert_eq!(OciError::new(ErrorCode::NameUnknown, "x").status(), 404);
    }

    #[test]
    fn table_statuses() {
        assert_eq!(ErrorCode::NameUnknown.status(), 404);
        assert_eq!(ErrorCode::Denied.status(), 403);
        assert_eq!(ErrorCode::RangeInvalid.status(), 416);
        for code in ErrorCode::ALL {
            let info = code.info();
            assert!((400..600).contains(&info.status), "{info:?}");
            assert!(info
                .code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_'));
        }
    }
}

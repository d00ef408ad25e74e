//! `MetaError` / `BlobError` <-> `tonic::Status`. The gRPC code comes from the error's kind; the exact
//! error travels as JSON in the status details so the client rebuilds the same variant.

use cluster_api::{BlobError, ErrorKind, MetaError};
use tonic::{Code, Status};

/// Metadata key carrying the leader's address on an UNAVAILABLE from a non-leader meta node.
pub const LEADER_METADATA_KEY: &str = "wharf-leader";

pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Internal => Code::Internal,
    }
}

pub fn meta_error_to_status(error: &MetaError) -> Status {
    let details = serde_json::to_vec(error).unwrap_or_default();
    let mut status = Status::with_details(code_of(error.kind()), error.to_string(), details.into());
    if let MetaError::Unavailable {
        leader: Some(leader),
    } = error
    {
        if let Ok(value) = leader.parse() {
            status.metadata_mut().insert(LEADER_METADATA_KEY, value);
        }
    }
    status
}

pub fn blob_error_to_status(error: &BlobError) -> Status {
    let details = serde_json::to_vec(error).unwrap_or_default();
    Status::with_details(code_of(error.kind()), error.to_string(), details.into())
}

/// Rebuilds the `MetaError` a server sent, or classifies a transport-level failure.
pub fn status_to_meta_error(status: &Status) -> MetaError {
    if let Ok(error) = serde_json::from_slice::<MetaError>(status.details()) {
        return error;
    }
    // No details: the status did not come from a Wharf service's own error but from the transport
    // (connection refused or reset, a node killed mid-call) or from request decoding.
    match status.code() {
        Code::InvalidArgument => MetaError::Invalid(status.message().to_owned()),
        _ => MetaError::Unavailable { leader: None },
    }
}

/// Rebuilds the `BlobError` a server sent, or classifies a transport-level failure.
pub fn status_to_blob_error(status: &Status) -> BlobError {
    if let Ok(error) = serde_json::from_slice::<BlobError>(status.details()) {
        return error;
    }
    // No details: a transport failure (see `status_to_meta_error`), retryable elsewhere.
    match status.code() {
        Code::InvalidArgument => BlobError::Invalid(status.message().to_owned()),
        _ => BlobError::Unavailable(format!("{}: {}", status.code(), status.message())),
    }
}

/// For decode failures of a request's fields on the server side.
pub fn invalid(message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_model::Digest;

    #[test]
    fn meta_errors_round_trip() {
        let errors = [
            MetaError::ManifestBlobUnknown(Digest::sha256_of(b"x")),
            MetaError::Unavailable {
                leader: Some("127.0.0.1:7000".into()),
            },
            MetaError::NameUnknown("a/b".into()),
        ];
        for error in errors {
            let status = meta_error_to_status(&error);
            assert_eq!(status.code(), code_of(error.kind()));
            assert_eq!(status_to_meta_error(&status), error);
        }
        let status = meta_error_to_status(&MetaError::Unavailable {
            leader: Some("10.0.0.1:1".into()),
        });
        assert_eq!(
            status.metadata().get(LEADER_METADATA_KEY).unwrap(),
            "10.0.0.1:1"
        );
    }

    #[test]
    fn blob_errors_round_trip() {
        let error = BlobError::OffsetMismatch {
            expected: 5,
            given: 7,
        };
        assert_eq!(status_to_blob_error(&blob_error_to_status(&error)), error);
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let status = Status::unavailable("connection refused");
        assert_eq!(
            status_to_meta_error(&status),
            MetaError::Unavailable { leader: None }
        );
        assert!(matches!(
            status_to_blob_error(&status),
            BlobError::Unavailable(_)
        ));
    }
}

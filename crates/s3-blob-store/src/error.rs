//! Object store errors as the `BlobError`s a blob node answers with.

use cluster_api::BlobError;
use object_store::path::Path;

/// `error` from `action` on `location`: a store that cannot be reached or answers with a
/// server error is `Unavailable` (the caller may retry, or go to another replica); a refusal
/// (credentials, permissions, a missing bucket) is `Io`, an operator's problem.
pub(crate) fn store_error(action: &str, location: &Path, error: object_store::Error) -> BlobError {
    let message = format!("object store: {action} {location}: {error}");
    match error {
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. } => {
            BlobError::Unavailable(message)
        }
        _ => BlobError::Io(message),
    }
}

pub(crate) fn is_not_found(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
}

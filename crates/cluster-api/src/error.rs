//! Error kinds shared by both services. Each error maps once to a gRPC code (in `wharf-proto`) and
//! once to an OCI error code (in the gateway) through [`ErrorKind`].

use oci_model::Digest;

/// The coarse kind of an error, which decides how it crosses the wire and what a client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    FailedPrecondition,
    AlreadyExists,
    Unavailable,
    /// Out of space (a disk or a quota), or at a cap (open upload sessions): retry once some
    /// is freed (a full disk: elsewhere too).
    ResourceExhausted,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MetaError {
    #[error("repository {0} is not known")]
    NameUnknown(String),
    #[error("manifest {0} is not known in this repository")]
    ManifestUnknown(String),
    #[error("blob {0} is not known in this repository")]
    BlobUnknown(Digest),
    #[error("upload session {0} is not known")]
    UploadUnknown(String),
    #[error("manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A rule forbids the change (an immutable tag); nothing changed.
    #[error("denied: {0}")]
    Denied(String),
    #[error("no blob node is available")]
    NoBlobNodes,
    /// Every blob node that could take the write is full (or meta's own disk is).
    #[error("out of space: {0}")]
    StorageFull(String),
    /// A placement rule cannot be met: no blob node is up in the zones it allows, or the copies
    /// offered are outside them. Names the rules; nothing was stored elsewhere.
    #[error("{0}")]
    PlacementUnmet(String),
    /// The change raced with garbage collection (a blob deleted on a node while this upload was
    /// in flight); nothing changed and the client should push again.
    #[error("conflict with garbage collection, push again: {0}")]
    Retry(String),
    #[error("metadata service unavailable{}", .leader.as_ref().map(|l| format!(" (leader at {l})")).unwrap_or_default())]
    Unavailable { leader: Option<String> },
    #[error("metadata service internal error: {0}")]
    Internal(String),
}

impl MetaError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            MetaError::NameUnknown(_)
            | MetaError::ManifestUnknown(_)
            | MetaError::BlobUnknown(_)
            | MetaError::UploadUnknown(_) => ErrorKind::NotFound,
            MetaError::ManifestBlobUnknown(_) => ErrorKind::FailedPrecondition,
            MetaError::Invalid(_) => ErrorKind::InvalidArgument,
            MetaError::Denied(_) => ErrorKind::FailedPrecondition,
            MetaError::NoBlobNodes
            | MetaError::PlacementUnmet(_)
            | MetaError::Unavailable { .. } => ErrorKind::Unavailable,
            // Not `Unavailable`: clients of meta retry that at once, and this one stays refused;
            // the registry client has to push again.
            MetaError::Retry(_) => ErrorKind::FailedPrecondition,
            MetaError::StorageFull(_) => ErrorKind::ResourceExhausted,
            MetaError::Internal(_) => ErrorKind::Internal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum BlobError {
    #[error("blob {0} not found on this node")]
    NotFound(Digest),
    #[error("upload {0} not found on this node")]
    UploadNotFound(String),
    #[error("upload is at offset {expected}, not {given}")]
    OffsetMismatch { expected: u64, given: u64 },
    #[error("uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("range starting at {offset} is beyond the blob's {size} bytes")]
    RangeNotSatisfiable { offset: u64, size: u64 },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("blob node unavailable: {0}")]
    Unavailable(String),
    /// The node's disk (or quota) is full: nothing of the write was kept.
    #[error("blob node out of space: {0}")]
    Full(String),
    /// The node already holds as many open upload sessions of the repository as it allows;
    /// nothing was created.
    #[error("too many open uploads: {0}")]
    TooManyUploads(String),
    #[error("blob node i/o error: {0}")]
    Io(String),
}

impl BlobError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BlobError::NotFound(_) | BlobError::UploadNotFound(_) => ErrorKind::NotFound,
            BlobError::OffsetMismatch { .. } | BlobError::RangeNotSatisfiable { .. } => {
                ErrorKind::FailedPrecondition
            }
            BlobError::DigestMismatch { .. } | BlobError::Invalid(_) => ErrorKind::InvalidArgument,
            BlobError::Unavailable(_) => ErrorKind::Unavailable,
            BlobError::Full(_) | BlobError::TooManyUploads(_) => ErrorKind::ResourceExhausted,
            BlobError::Io(_) => ErrorKind::Internal,
        }
    }
}

impl From<std::io::Error> for BlobError {
    fn from(error: std::io::Error) -> Self {
        if is_out_of_space(&error) {
            BlobError::Full(error.to_string())
        } else {
            BlobError::Io(error.to_string())
        }
    }
}

/// True for "no space left on device" and "disk quota exceeded".
pub fn is_out_of_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

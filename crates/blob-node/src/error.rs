//! The one error type of this crate: what can stop a blob node from starting. Errors of the
//! running node are `cluster_api::BlobError`, straight from the store.

use std::path::PathBuf;

use cluster_api::{BlobError, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum BlobNodeError {
    #[error("invalid blob node config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("cannot open the blob store at {}: {source}", path.display())]
    OpenStore { path: PathBuf, source: BlobError },
}

impl BlobNodeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BlobNodeError::InvalidConfig { .. } => ErrorKind::InvalidArgument,
            BlobNodeError::OpenStore { source, .. } => source.kind(),
        }
    }
}

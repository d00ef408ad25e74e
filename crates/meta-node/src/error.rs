//! [`MetaNodeError`]: why a meta node could not start, join or stop.

use meta_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MetaNodeError {
    #[error("invalid meta configuration: {0}")]
    Config(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
}

impl MetaNodeError {
    pub(crate) fn raft(error: impl std::fmt::Display) -> MetaNodeError {
        MetaNodeError::Raft(error.to_string())
    }
}

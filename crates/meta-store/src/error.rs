//! [`StoreError`]: everything that can go wrong below the state machine's domain logic.

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

/// A storage failure. Domain outcomes (`ManifestUnknown`, ...) are not errors at this level: they
/// travel inside [`crate::CommandResponse`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
    #[error("background storage task failed: {0}")]
    Task(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    /// A snapshot is being installed: the state is being replaced and must not be read.
    #[error("a snapshot is being installed")]
    Installing,
}

impl StoreError {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            what,
            detail: detail.into(),
        }
    }

    /// Wraps this error as openraft's storage error for `subject`/`verb`.
    pub(crate) fn into_raft(
        self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
    ) -> StorageError<u64> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }

    pub(crate) fn read_logs(self) -> StorageError<u64> {
        self.into_raft(ErrorSubject::Logs, ErrorVerb::Read)
    }

    pub(crate) fn write_logs(self) -> StorageError<u64> {
        self.into_raft(ErrorSubject::Logs, ErrorVerb::Write)
    }

    pub(crate) fn read_vote(self) -> StorageError<u64> {
        self.into_raft(ErrorSubject::Vote, ErrorVerb::Read)
    }

    pub(crate) fn write_vote(self) -> StorageError<u64> {
        self.into_raft(ErrorSubject::Vote, ErrorVerb::Write)
    }

    pub(crate) fn read_state_machine(self) -> StorageError<u64> {
        self.into_raft(ErrorSubject::StateMachine, ErrorVerb::Read)
    }

    pub(crate) fn write_state_machine(self) -> StorageError<u64> {
        self.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write)
    }

    pub(crate) fn read_snapshot(self) -> StorageError<u64> {
        self.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read)
    }

    pub(crate) fn write_snapshot(self) -> StorageError<u64> {
        self.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write)
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(error: tokio::task::JoinError) -> Self {
        StoreError::Task(error.to_string())
    }
}

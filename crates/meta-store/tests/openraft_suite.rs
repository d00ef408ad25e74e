//! openraft's own storage conformance suite, run against the RocksDB stores.

use meta_store::{LogStore, MetaStore, StateMachine, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let io_error = |error: &dyn std::fmt::Display| -> StorageError<u64> {
            StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Write,
                AnyError::error(error),
            )
            .into()
        };
        let dir = TempDir::new().map_err(|error| io_error(&error))?;
        let store = MetaStore::open(dir.path()).map_err(|error| io_error(&error))?;
        Ok((dir, store.log_store, store.state_machine))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    Suite::test_all(RocksBuilder).expect("openraft storage suite");
}

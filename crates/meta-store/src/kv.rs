//! Key-value access shared by the apply path and the read path: [`KvRead`], implemented by
//! [`DbView`] (the database, optionally as of a RocksDB snapshot) and by [`Txn`] (pending writes of
//! one apply call over the database, so later entries of a batch see earlier ones).

use std::collections::BTreeMap;
use std::ops::Bound;

use rocksdb::{Direction, IteratorMode, ReadOptions, Snapshot, WriteBatch, DB};

use crate::db::{cf, Table};
use crate::error::StoreError;

/// A row visitor: gets each key and value, returns whether to go on.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'a;

/// Reads keys and sorted ranges of one table.
pub(crate) trait KvRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Calls `visit` on each row whose key starts with `prefix` and sorts strictly after
    /// `after` (when given), in key order, until `visit` returns `false`.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError>;
}

/// The database, or a consistent point-in-time view of it.
pub(crate) struct DbView<'a> {
    db: &'a DB,
    snapshot: Option<Snapshot<'a>>,
    fill_cache: bool,
}

impl<'a> DbView<'a> {
    pub(crate) fn live(db: &'a DB) -> DbView<'a> {
        DbView {
            db,
            snapshot: None,
            fill_cache: true,
        }
    }

    pub(crate) fn frozen(db: &'a DB) -> DbView<'a> {
        DbView {
            db,
            snapshot: Some(db.snapshot()),
            fill_cache: true,
        }
    }

    /// A point-in-time view for reading everything once (snapshots, consistency checks): its
    /// blocks do not go into the block cache, so a full scan does not evict the hot ones.
    pub(crate) fn bulk(db: &'a DB) -> DbView<'a> {
        DbView {
            fill_cache: false,
            ..DbView::frozen(db)
        }
    }

    fn read_options(&self) -> ReadOptions {
        let mut options = ReadOptions::default();
        if let Some(snapshot) = &self.snapshot {
            options.set_snapshot(snapshot);
        }
        options.fill_cache(self.fill_cache);
        options
    }
}

impl KvRead for DbView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_cf_opt(cf(self.db, table)?, key, &self.read_options())?)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let start = match after {
            Some(after) if after > prefix => after,
            _ => prefix,
        };
        let mode = IteratorMode::From(start, Direction::Forward);
        for row in self
            .db
            .iterator_cf_opt(cf(self.db, table)?, self.read_options(), mode)
        {
            let (key, value) = row?;
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|after| &*key <= after) {
                continue;
            }
            if !visit(&key, &value)? {
                break;
            }
        }
        Ok(())
    }
}

/// The writes of one apply call, not yet in the database. `None` marks a deletion.
pub(crate) struct Txn<'a> {
    base: DbView<'a>,
    pending: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
}

impl<'a> Txn<'a> {
    pub(crate) fn new(db: &'a DB) -> Txn<'a> {
        Txn {
            base: DbView::live(db),
            pending: BTreeMap::new(),
        }
    }

    pub(crate) fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.pending.insert((table, key.into()), Some(value.into()));
    }

    pub(crate) fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.pending.insert((table, key.into()), None);
    }

    /// The pending writes as one batch.
    pub(crate) fn into_batch(self) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        for ((table, key), value) in self.pending {
            let family = cf(self.base.db, table)?;
            match value {
                Some(value) => batch.put_cf(family, key, value),
                None => batch.delete_cf(family, key),
            }
        }
        Ok(batch)
    }
}

impl KvRead for Txn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.get(&(table, key.to_vec())) {
            Some(pending) => Ok(pending.clone()),
            None => self.base.get(table, key),
        }
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        // Scans inside apply are small (one repository's tags, or a snapshot install's
        // deletions), so merging through a map is simpler than interleaving two iterators.
        let mut merged = BTreeMap::new();
        self.base.scan(table, prefix, after, &mut |key, value| {
            merged.insert(key.to_vec(), Some(value.to_vec()));
            Ok(true)
        })?;
        let lower = (table, prefix.to_vec());
        for ((_, key), value) in self
            .pending
            .range((Bound::Included(lower), Bound::Unbounded))
            .take_while(|((pending_table, key), _)| {
                *pending_table == table && key.starts_with(prefix)
            })
        {
            if after.is_some_and(|after| key.as_slice() <= after) {
                continue;
            }
            merged.insert(key.clone(), value.clone());
        }
        for (key, value) in merged {
            if let Some(value) = value {
                if !visit(&key, &value)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

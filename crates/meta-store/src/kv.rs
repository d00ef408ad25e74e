//! Key-value access shared by the apply path and the read path: [`KvRead`], implemented by
//! [`DbView`] (the database, optionally as of a RocksDB snapshot) and by [`Txn`] (pending writes of
//! one apply call over the database, so later entries of a batch see earlier ones).

use std::collections::BTreeMap;
use std::ops::Bound;

use rocksdb::{ReadOptions, Snapshot, WriteBatch, DB};

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
        let mut options = self.read_options();
        if let Some(end) = prefix_end(prefix) {
            // RocksDB stops at the bound itself, without stepping over what lies beyond it
            // (deleted rows of the next prefix included).
            options.set_iterate_upper_bound(end);
        }
        // The raw iterator lends each row instead of copying it into two boxes.
        let mut rows = self.db.raw_iterator_cf_opt(cf(self.db, table)?, options);
        rows.seek(start);
        while let (Some(key), Some(value)) = (rows.key(), rows.value()) {
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|after| key <= after) {
                rows.next();
                continue;
            }
            if !visit(key, value)? {
                return Ok(());
            }
            rows.next();
        }
        rows.status()?;
        Ok(())
    }
}

/// The first key after every key starting with `prefix`, if there is one (not for an empty
/// prefix or one of 0xff bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
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
        // The pending rows of the range, merged in key order with the database's; a pending row
        // replaces (or, as `None`, hides) the database's row of the same key.
        let lower = (table, prefix.to_vec());
        let mut pending = self
            .pending
            .range((Bound::Included(lower), Bound::Unbounded))
            .take_while(|((pending_table, key), _)| {
                *pending_table == table && key.starts_with(prefix)
            })
            .filter(|((_, key), _)| after.is_none_or(|after| key.as_slice() > after))
            .map(|((_, key), value)| (key.as_slice(), value.as_deref()))
            .peekable();
        let mut stopped = false;
        self.base.scan(table, prefix, after, &mut |key, value| {
            while let Some((earlier, row)) = pending.next_if(|(pending, _)| *pending < key) {
                if let Some(row) = row {
                    if !visit(earlier, row)? {
                        stopped = true;
                        return Ok(false);
                    }
                }
            }
            let value = match pending.next_if(|(pending, _)| *pending == key) {
                Some((_, Some(replaced))) => replaced,
                Some((_, None)) => return Ok(true),
                None => value,
            };
            if !visit(key, value)? {
                stopped = true;
                return Ok(false);
            }
            Ok(true)
        })?;
        if stopped {
            return Ok(());
        }
        for (key, row) in pending {
            if let Some(row) = row {
                if !visit(key, row)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::db::{open, StoreOptions};

    fn scanned(kv: &impl KvRead, prefix: &[u8], after: Option<&[u8]>, up_to: usize) -> Vec<String> {
        let mut rows = Vec::new();
        kv.scan(Table::Tags, prefix, after, &mut |key, value| {
            rows.push(format!(
                "{}={}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ));
            Ok(rows.len() < up_to)
        })
        .expect("scan");
        rows
    }

    #[test]
    fn a_transaction_scans_its_writes_merged_over_the_database() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        let mut setup = Txn::new(&db);
        for key in ["a1", "a2", "a4", "a6", "b1"] {
            setup.put(Table::Tags, key, "db");
        }
        // Another table's rows are not in the range.
        setup.put(Table::Manifests, "a0", "other");
        db.write(setup.into_batch().expect("batch")).expect("write");

        let mut txn = Txn::new(&db);
        txn.put(Table::Tags, "a0", "txn");
        txn.put(Table::Tags, "a2", "txn");
        txn.put(Table::Tags, "a3", "txn");
        txn.delete(Table::Tags, "a4");
        txn.put(Table::Tags, "a7", "txn");
        txn.put(Table::Tags, "b0", "txn");

        let all = ["a0=txn", "a1=db", "a2=txn", "a3=txn", "a6=db", "a7=txn"];
        assert_eq!(scanned(&txn, b"a", None, usize::MAX), all);
        assert_eq!(scanned(&txn, b"a", Some(b"a2"), usize::MAX), all[3..]);
        assert_eq!(scanned(&txn, b"a", Some(b"a6"), usize::MAX), ["a7=txn"]);
        for up_to in 1..all.len() {
            assert_eq!(scanned(&txn, b"a", None, up_to), all[..up_to]);
        }
        assert_eq!(scanned(&txn, b"b", None, usize::MAX), ["b0=txn", "b1=db"]);
        assert_eq!(
            scanned(&DbView::live(&db), b"a", None, usize::MAX),
            ["a1=db", "a2=db", "a4=db", "a6=db"]
        );
        assert_eq!(
            scanned(&DbView::live(&db), b"", Some(b"a4"), 2),
            ["a6=db", "b1=db"]
        );
    }

    #[test]
    fn a_prefix_ends_after_its_last_possible_key() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}

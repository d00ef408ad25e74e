//! [`Table::TagsByDigest`], the tags of each manifest. Deleting a manifest must find the tags
//! that point at it; scanning the repository's tags for them cost a step per tag (and per deleted
//! tag RocksDB had not compacted away yet), so a repository with thousands of tags paid thousands
//! of steps per delete. The index answers with one row per tag that points at the manifest.
//!
//! It is derived state: every write of a tag writes its row in the same batch (`state::put_tag`,
//! `state::delete_tag`); a snapshot does not carry it, and an install rebuilds it from the tags
//! it installed; a database from before the index gets it at open.

use rocksdb::WriteBatch;

use crate::db::{cf, write_synced, Database, Table};
use crate::error::StoreError;
use crate::kv::{DbView, KvRead};
use crate::state::{self, parse_repo, parse_tag, split_key, TagRecord};

/// In [`Table::SmMeta`]: present when the index holds exactly the rows the tags imply.
const BUILT: &[u8] = b"tags_by_digest_built";

/// Index rows written per batch while rebuilding.
const REBUILD_BATCH_ROWS: usize = 4096;

/// Builds the index at open if this database does not have one yet.
pub(crate) fn ensure(db: &Database) -> Result<(), StoreError> {
    if DbView::live(db).get(Table::SmMeta, BUILT)?.is_none() {
        let rows = rebuild(db)?;
        tracing::info!(rows, "built the index of tags by manifest");
    }
    Ok(())
}

/// Stages what makes the index invalid until [`rebuild`]: its rows and its marker go.
pub(crate) fn forget(db: &Database, batch: &mut WriteBatch) -> Result<(), StoreError> {
    crate::snapshot_files::delete_table(db, batch, Table::TagsByDigest)?;
    batch.delete_cf(cf(db, Table::SmMeta)?, BUILT);
    Ok(())
}

/// Replaces the index with the rows [`Table::Tags`] implies, then marks it built (synced).
/// Returns the number of rows.
pub(crate) fn rebuild(db: &Database) -> Result<u64, StoreError> {
    let mut batch = WriteBatch::default();
    forget(db, &mut batch)?;
    let family = cf(db, Table::TagsByDigest)?;
    let (mut pending, mut rows) = (0usize, 0u64);
    DbView::live(db).scan(Table::Tags, b"", None, &mut |key, value| {
        let [repo, tag] = split_key::<2>("tag key", key)?;
        let (repo, tag) = (parse_repo("tag key", repo)?, parse_tag("tag key", tag)?);
        let record: TagRecord = crate::db::decode("tag", value)?;
        batch.put_cf(
            family,
            state::tag_index_key(&repo, &record.digest, &tag),
            [],
        );
        (pending, rows) = (pending + 1, rows + 1);
        if pending >= REBUILD_BATCH_ROWS {
            db.write(std::mem::take(&mut batch))?;
            pending = 0;
        }
        Ok(true)
    })?;
    batch.put_cf(cf(db, Table::SmMeta)?, BUILT, []);
    write_synced(db, batch)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use oci_model::{Digest, RepositoryName, Tag};
    use tempfile::TempDir;

    use super::*;
    use crate::db::{open, StoreOptions};
    use crate::kv::Txn;

    fn tag_record(digest: &Digest) -> TagRecord {
        TagRecord {
            digest: digest.clone(),
            pushed_ms: 1,
        }
    }

    #[test]
    fn tag_writes_keep_the_index_and_a_rebuild_agrees() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        ensure(&db).expect("ensure on an empty database");
        let repo: RepositoryName = "team/app".parse().expect("repo");
        let other: RepositoryName = "team/other".parse().expect("repo");
        let (one, two) = (Digest::sha256_of(b"one"), Digest::sha256_of(b"two"));
        let tag = |name: &str| -> Tag { name.parse().expect("tag") };

        let mut txn = Txn::new(&db);
        for name in ["a", "b", "c"] {
            state::put_tag(&mut txn, &repo, &tag(name), &tag_record(&one), None).expect("put");
        }
        state::put_tag(&mut txn, &other, &tag("a"), &tag_record(&one), None).expect("put");
        // Pushed again where it was: one row still.
        state::put_tag(&mut txn, &repo, &tag("a"), &tag_record(&one), Some(&one)).expect("again");
        // Moved: its row under `one` goes; deleted: its row goes.
        state::put_tag(&mut txn, &repo, &tag("b"), &tag_record(&two), Some(&one)).expect("move");
        state::delete_tag(&mut txn, &repo, &tag("c"), &one);
        db.write(txn.into_batch().expect("batch")).expect("write");

        let view = DbView::live(&db);
        assert_eq!(
            state::tags_pointing_at(&view, &repo, &one).expect("one"),
            [tag("a")]
        );
        assert_eq!(
            state::tags_pointing_at(&view, &repo, &two).expect("two"),
            [tag("b")]
        );
        assert_eq!(
            state::tags_pointing_at(&view, &other, &one).expect("other"),
            [tag("a")]
        );

        let rows = |db: &Database| {
            let mut rows = Vec::new();
            DbView::live(db)
                .scan(Table::TagsByDigest, b"", None, &mut |key, _| {
                    rows.push(key.to_vec());
                    Ok(true)
                })
                .expect("scan");
            rows
        };
        let kept = rows(&db);
        assert_eq!(kept.len(), 3);
        assert_eq!(rebuild(&db).expect("rebuild"), 3);
        assert_eq!(rows(&db), kept);
    }

    #[test]
    fn a_database_without_the_index_gets_it_at_open() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        let repo: RepositoryName = "app".parse().expect("repo");
        let digest = Digest::sha256_of(b"m");
        let mut txn = Txn::new(&db);
        state::put_tag(
            &mut txn,
            &repo,
            &"v1".parse().expect("tag"),
            &tag_record(&digest),
            None,
        )
        .expect("put");
        db.write(txn.into_batch().expect("batch")).expect("write");
        // As a database written before the index: no rows, no marker.
        let mut batch = WriteBatch::default();
        forget(&db, &mut batch).expect("forget");
        db.write(batch).expect("write");
        let view = DbView::live(&db);
        assert!(state::tags_pointing_at(&view, &repo, &digest)
            .expect("scan")
            .is_empty());

        ensure(&db).expect("ensure");
        let view = DbView::live(&db);
        assert_eq!(
            state::tags_pointing_at(&view, &repo, &digest)
                .expect("scan")
                .len(),
            1
        );
    }
}

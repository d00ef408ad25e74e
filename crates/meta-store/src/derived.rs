//! Derived indexes: tables whose every row follows from a row of another table, written in the
//! same batch as that row, so a query by the other half of a key reads one row per answer instead
//! of scanning.
//!
//! - [`TAGS_BY_DIGEST`]: the tags of each manifest. Deleting a manifest must find the tags that
//!   point at it; scanning the repository's tags cost a step per tag (and per deleted tag RocksDB
//!   had not compacted away yet).
//! - [`LINKS_BY_DIGEST`]: the repositories linking each blob. A blob's placement follows from the
//!   placement rules of every repository that links it (`state::placement_sets`), read by repair,
//!   `placement status` and fsck for every blob.
//!
//! A snapshot does not carry them (old snapshot files and old nodes stay compatible): an install
//! rebuilds them from the rows it installed, and a database from before an index gets it at open.
//! `check.rs` holds each to the rows it derives from.

use rocksdb::WriteBatch;

use crate::db::{cf, write_synced, Database, Table};
use crate::error::StoreError;
use crate::kv::{DbView, KvRead};
use crate::state::{self, parse_repo, parse_tag, split_key, TagRecord};

/// Index rows written per batch while rebuilding.
const REBUILD_BATCH_ROWS: usize = 4096;

/// The index row (key) a source row (key, value) implies.
pub(crate) type RowOf = fn(&[u8], &[u8]) -> Result<Vec<u8>, StoreError>;

/// One derived index.
pub(crate) struct DerivedIndex {
    /// The index.
    pub(crate) table: Table,
    /// The rows it derives from.
    pub(crate) source: Table,
    /// In [`Table::SmMeta`]: present when the index holds exactly the rows `source` implies.
    marker: &'static [u8],
    /// What the index is, for logs and consistency reports.
    pub(crate) what: &'static str,
    /// The index row (key; the value is empty) a row of `source` implies.
    pub(crate) row: RowOf,
}

/// `tags_by_digest`: `repo \0 digest \0 tag` for every tag.
pub(crate) const TAGS_BY_DIGEST: DerivedIndex = DerivedIndex {
    table: Table::TagsByDigest,
    source: Table::Tags,
    marker: b"tags_by_digest_built",
    what: "tag index",
    row: |key, value| {
        let [repo, tag] = split_key::<2>("tag key", key)?;
        let (repo, tag) = (parse_repo("tag key", repo)?, parse_tag("tag key", tag)?);
        let record: TagRecord = crate::db::decode("tag", value)?;
        Ok(state::tag_index_key(&repo, &record.digest, &tag))
    },
};

/// `links_by_digest`: `digest \0 repo` for every blob link.
pub(crate) const LINKS_BY_DIGEST: DerivedIndex = DerivedIndex {
    table: Table::LinksByDigest,
    source: Table::BlobLinks,
    marker: b"links_by_digest_built",
    what: "blob link index",
    row: |key, _| {
        let [repo, digest] = split_key::<2>("blob link key", key)?;
        let repo = parse_repo("blob link key", repo)?;
        let digest = state::parse_digest("blob link key", digest.as_bytes())?;
        Ok(state::link_index_key(&digest, &repo))
    },
};

/// Every derived index.
pub(crate) const ALL: [&DerivedIndex; 2] = [&TAGS_BY_DIGEST, &LINKS_BY_DIGEST];

impl DerivedIndex {
    /// Builds the index at open if this database does not have it yet.
    pub(crate) fn ensure(&self, db: &Database) -> Result<(), StoreError> {
        if DbView::live(db).get(Table::SmMeta, self.marker)?.is_none() {
            let rows = self.rebuild(db)?;
            tracing::info!(rows, index = self.what, "built a derived index");
        }
        Ok(())
    }

    /// Stages what makes the index invalid until [`rebuild`](Self::rebuild): its rows and its
    /// marker go.
    pub(crate) fn forget(&self, db: &Database, batch: &mut WriteBatch) -> Result<(), StoreError> {
        crate::snapshot_files::delete_table(db, batch, self.table)?;
        batch.delete_cf(cf(db, Table::SmMeta)?, self.marker);
        Ok(())
    }

    /// Replaces the index with the rows its source implies, then marks it built (synced).
    /// Returns the number of rows.
    pub(crate) fn rebuild(&self, db: &Database) -> Result<u64, StoreError> {
        let mut batch = WriteBatch::default();
        self.forget(db, &mut batch)?;
        let family = cf(db, self.table)?;
        let (mut pending, mut rows) = (0usize, 0u64);
        DbView::live(db).scan(self.source, b"", None, &mut |key, value| {
            batch.put_cf(family, (self.row)(key, value)?, []);
            (pending, rows) = (pending + 1, rows + 1);
            if pending >= REBUILD_BATCH_ROWS {
                db.write(std::mem::take(&mut batch))?;
                pending = 0;
            }
            Ok(true)
        })?;
        batch.put_cf(cf(db, Table::SmMeta)?, self.marker, []);
        write_synced(db, batch)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use oci_model::{Digest, RepositoryName, Tag};
    use tempfile::TempDir;

    use super::*;
    use crate::db::{open, StoreOptions};
    use crate::kv::Txn;

    /// Every row of `index`, in key order.
    fn rows(db: &Database, index: &DerivedIndex) -> Vec<Vec<u8>> {
        let mut rows = Vec::new();
        DbView::live(db)
            .scan(index.table, b"", None, &mut |key, _| {
                rows.push(key.to_vec());
                Ok(true)
            })
            .expect("scan");
        rows
    }

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
        TAGS_BY_DIGEST
            .ensure(&db)
            .expect("ensure on an empty database");
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

        let kept = rows(&db, &TAGS_BY_DIGEST);
        assert_eq!(kept.len(), 3);
        assert_eq!(TAGS_BY_DIGEST.rebuild(&db).expect("rebuild"), 3);
        assert_eq!(rows(&db, &TAGS_BY_DIGEST), kept);
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
        TAGS_BY_DIGEST.forget(&db, &mut batch).expect("forget");
        db.write(batch).expect("write");
        let view = DbView::live(&db);
        assert!(state::tags_pointing_at(&view, &repo, &digest)
            .expect("scan")
            .is_empty());

        TAGS_BY_DIGEST.ensure(&db).expect("ensure");
        let view = DbView::live(&db);
        assert_eq!(
            state::tags_pointing_at(&view, &repo, &digest)
                .expect("scan")
                .len(),
            1
        );
    }

    #[test]
    fn blob_links_keep_their_index_and_a_rebuild_agrees() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        for index in ALL {
            index.ensure(&db).expect("ensure on an empty database");
        }
        let (app, other): (RepositoryName, RepositoryName) = (
            "team/app".parse().expect("repo"),
            "eu/app".parse().expect("repo"),
        );
        let (one, two) = (Digest::sha256_of(b"one"), Digest::sha256_of(b"two"));
        let link = state::BlobLinkRecord {
            refs: 0,
            pushed_ms: 1,
        };
        let mut txn = Txn::new(&db);
        for (repo, digest) in [(&app, &one), (&other, &one), (&app, &two)] {
            state::put_blob_link(&mut txn, repo, digest, &link).expect("link");
        }
        // Updated in place: still one row.
        state::put_blob_link(&mut txn, &app, &one, &link).expect("again");
        state::delete_blob_link(&mut txn, &app, &two);
        db.write(txn.into_batch().expect("batch")).expect("write");

        let view = DbView::live(&db);
        assert_eq!(
            state::repos_linking(&view, &one).expect("one"),
            [other.clone(), app.clone()]
        );
        assert!(state::repos_linking(&view, &two).expect("two").is_empty());
        let kept = rows(&db, &LINKS_BY_DIGEST);
        assert_eq!(kept.len(), 2);
        // As a database from before the index: rebuilt from the links at open.
        let mut batch = WriteBatch::default();
        LINKS_BY_DIGEST.forget(&db, &mut batch).expect("forget");
        db.write(batch).expect("write");
        assert!(rows(&db, &LINKS_BY_DIGEST).is_empty());
        LINKS_BY_DIGEST.ensure(&db).expect("ensure");
        assert_eq!(rows(&db, &LINKS_BY_DIGEST), kept);
    }
}

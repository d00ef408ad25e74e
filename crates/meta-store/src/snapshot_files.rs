//! [`SnapshotFiles`]: snapshots as files under the store's `snapshots/` directory, the current one
//! named in the `snapshot` column family. Building streams the state from a RocksDB snapshot into
//! a file; installing verifies a received file whole, then replaces the state from it in bounded
//! writes. Memory stays flat whatever the state's size.
//!
//! ```text
//! snapshots/<kind>-<index>-<nanos>.snap   a complete, fsynced snapshot (the current one; others
//!                                         are removed once a newer one is recorded)
//! snapshots/<kind>-<index>-<nanos>.tmp    being built or received; removed at open
//! snapshot CF  "meta"                     SnapshotMeta (json) of the current snapshot
//!              "file"                     its file name
//!              "installing"               InstallRecord (json): a replacement of the state that
//!                                         has begun and not finished; finished at open
//! ```
//!
//! Installing takes several writes (a state can be far larger than one write batch should be).
//! The first, synced, records `installing` and deletes every state table; the rows follow; the
//! last, synced, sets `last_applied`, records the snapshot as current and clears `installing`.
//! RocksDB recovers a prefix of its writes, so after a crash either nothing of an install is
//! there or `installing` is, and [`SnapshotFiles::open`] runs the install again from its file
//! (renamed into place and fsynced before the first write). Readers refuse while it runs.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::{BasicNode, SnapshotMeta};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::db::{cf, decode, encode, write_synced, Database, Table};
use crate::error::StoreError;
use crate::kv::{DbView, KvRead, Txn};
use crate::snapshot::{verify, Header, SnapshotReader, SnapshotWriter};
use crate::state;

pub(crate) type Meta = SnapshotMeta<u64, BasicNode>;

const META: &[u8] = b"meta";
const FILE: &[u8] = b"file";
const INSTALLING: &[u8] = b"installing";
/// Where format 2 kept the whole snapshot as one value; dropped at open (openraft builds a new
/// snapshot when it finds none and the log was purged).
const LEGACY_DATA: &[u8] = b"data";
const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";
/// Rows written per batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

#[derive(Serialize, Deserialize)]
struct InstallRecord {
    file: String,
    meta: Meta,
}

/// The snapshot directory of one store.
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
    /// Serializes recording a snapshot as current with reading the current one, so a reader
    /// never opens a file that a newer snapshot just replaced.
    current: Mutex<()>,
}

impl SnapshotFiles {
    /// Opens `dir` (creating it), finishes an install a crash cut short, forgets a format 2
    /// snapshot, and removes every file but the current snapshot.
    pub(crate) fn open(dir: PathBuf, db: &Database) -> Result<SnapshotFiles, StoreError> {
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            what: "creating the snapshot directory",
            source,
        })?;
        let files = SnapshotFiles {
            dir,
            current: Mutex::new(()),
        };
        let view = DbView::live(db);
        if view.get(Table::Snapshot, LEGACY_DATA)?.is_some() {
            let mut batch = WriteBatch::default();
            let family = cf(db, Table::Snapshot)?;
            batch.delete_cf(family, LEGACY_DATA);
            batch.delete_cf(family, META);
            write_synced(db, batch)?;
        }
        if let Some(record) = view.get(Table::Snapshot, INSTALLING)? {
            let record: InstallRecord = decode("snapshot install record", &record)?;
            tracing::warn!(file = %record.file, "finishing a snapshot install cut short");
            let file = File::open(files.path(&record.file)).map_err(|source| StoreError::Io {
                what: "opening the snapshot being installed",
                source,
            })?;
            verify(&file)?;
            files.replace_state(db, &record.meta, &record.file)?;
        }
        let current = view
            .get(Table::Snapshot, FILE)?
            .map(|name| String::from_utf8_lossy(&name).into_owned());
        files.remove_leftovers(current.as_deref());
        if let Some(name) = current {
            let bytes = fs::metadata(files.path(&name)).map_or(0, |meta| meta.len());
            db.stats.set_snapshot_bytes(bytes);
        }
        Ok(files)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes the state as of now into a new file and records it as the current snapshot;
    /// returns its meta and the file, open for reading from the start.
    pub(crate) fn build(&self, db: &Database) -> Result<(Meta, File), StoreError> {
        let view = DbView::bulk(db);
        let header = Header {
            last_applied: state::last_applied(&view)?,
            membership: state::membership(&view)?,
        };
        let name = new_name("built", &header);
        let temp = self.path(&format!("{name}{TEMP_SUFFIX}"));
        let file = File::create(&temp).map_err(io("creating a snapshot file"))?;
        let mut writer = SnapshotWriter::start(file, &header)?;
        for table in Table::STATE {
            view.scan(table, b"", None, &mut |key, value| {
                writer.row(table, key, value)?;
                Ok(true)
            })?;
        }
        let (file, bytes) = writer.finish()?;
        file.sync_all().map_err(io("syncing a snapshot file"))?;
        drop(file);
        let file_name = format!("{name}{SNAPSHOT_SUFFIX}");
        self.rename_durably(&temp, &file_name)?;
        let meta = Meta {
            last_log_id: header.last_applied,
            last_membership: header.membership,
            snapshot_id: name,
        };
        let file = File::open(self.path(&file_name)).map_err(io("opening a snapshot file"))?;
        let _current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let recorded: Option<Meta> = view_meta(db)?;
        if recorded.is_some_and(|recorded| recorded.last_log_id > meta.last_log_id) {
            // An install got ahead of this build: keep the newer snapshot. The open file still
            // reads after the unlink.
            let _ = fs::remove_file(self.path(&file_name));
            return Ok((meta, file));
        }
        let mut txn = Txn::new(db);
        put_current(&mut txn, &meta, &file_name)?;
        // Synced: this also makes every state write up to `last_applied` durable (one WAL).
        write_synced(db, txn.into_batch()?)?;
        db.stats.set_snapshot_bytes(bytes);
        self.remove_all_but(Some(&file_name));
        Ok((meta, file))
    }

    /// A new empty file, open for reading and writing, to receive a snapshot into.
    pub(crate) fn receiving(&self) -> Result<File, StoreError> {
        Ok(self.receiving_at()?.0)
    }

    fn receiving_at(&self) -> Result<(File, PathBuf), StoreError> {
        let path = self.path(&format!("received-{}{TEMP_SUFFIX}", nanos()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("creating a file to receive a snapshot"))?;
        Ok((file, path))
    }

    /// Verifies `file` (received through [`SnapshotFiles::receiving`]) and replaces the whole
    /// state with its rows; it becomes the current snapshot.
    pub(crate) fn install(&self, db: &Database, meta: &Meta, file: File) -> Result<(), StoreError> {
        let (file, temp) = self.take_into_directory(file)?;
        let mut input = &file;
        input
            .seek(SeekFrom::Start(0))
            .map_err(io("reading a received snapshot"))?;
        let header = verify(input)?;
        if header.last_applied != meta.last_log_id {
            return Err(StoreError::corrupt(
                "snapshot",
                format!(
                    "its state is at {:?}, its meta says {:?}",
                    header.last_applied, meta.last_log_id
                ),
            ));
        }
        let bytes = file.metadata().map_or(0, |metadata| metadata.len());
        drop(file);
        let file_name = format!("{}{SNAPSHOT_SUFFIX}", new_name("installed", &header));
        self.rename_durably(&temp, &file_name)?;
        self.replace_state(db, meta, &file_name)?;
        db.stats.set_snapshot_bytes(bytes);
        self.remove_all_but(Some(&file_name));
        Ok(())
    }

    /// The current snapshot's meta and file, if there is one.
    pub(crate) fn current(&self, db: &Database) -> Result<Option<(Meta, File)>, StoreError> {
        let _current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let view = DbView::live(db);
        let (Some(meta), Some(name)) = (
            view.get(Table::Snapshot, META)?,
            view.get(Table::Snapshot, FILE)?,
        ) else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        match File::open(self.path(&name)) {
            Ok(file) => Ok(Some((decode("snapshot meta", &meta)?, file))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %name, "the current snapshot's file is gone");
                Ok(None)
            }
            Err(source) => Err(StoreError::Io {
                what: "opening the current snapshot",
                source,
            }),
        }
    }

    /// Replaces every state table with the rows of snapshot file `file_name` (complete, durable
    /// and verified), in bounded writes; see the module documentation.
    fn replace_state(&self, db: &Database, meta: &Meta, file_name: &str) -> Result<(), StoreError> {
        begin_replace(db, meta, file_name)?;
        let file = File::open(self.path(file_name)).map_err(io("opening a snapshot to install"))?;
        let mut rows = SnapshotReader::open(file)?;
        let (mut batch, mut pending) = (WriteBatch::default(), 0);
        while let Some((table, key, value)) = rows.next_row()? {
            pending += key.len() + value.len();
            batch.put_cf(cf(db, table)?, key, value);
            if pending >= INSTALL_BATCH_BYTES {
                db.write(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        db.write(batch)?;
        for index in crate::derived::ALL {
            index.rebuild(db)?;
        }
        let mut txn = Txn::new(db);
        state::put_applied(&mut txn, meta.last_log_id.as_ref(), &meta.last_membership)?;
        put_current(&mut txn, meta, file_name)?;
        txn.delete(Table::Snapshot, INSTALLING);
        write_synced(db, txn.into_batch()?)?;
        // Only a finished install lets readers in again; a failed one leaves the store refusing
        // reads until it is opened again (and the install finished then).
        db.installing.store(false, Ordering::Release);
        Ok(())
    }

    /// The snapshot `file` as a durable file of this directory, and its path. A file from
    /// [`SnapshotFiles::receiving`] is already here (openraft hands back only the handle, so it
    /// is found by inode); any other is copied in.
    fn take_into_directory(&self, file: File) -> Result<(File, PathBuf), StoreError> {
        file.sync_all().map_err(io("syncing a received snapshot"))?;
        let wanted = file.metadata().map_err(io("reading a received snapshot"))?;
        let entries = fs::read_dir(&self.dir).map_err(io("listing the snapshot directory"))?;
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.ino() == wanted.ino() && metadata.dev() == wanted.dev() {
                return Ok((file, entry.path()));
            }
        }
        let (mut copy, path) = self.receiving_at()?;
        let mut input = &file;
        input
            .seek(SeekFrom::Start(0))
            .and_then(|_| std::io::copy(&mut input, &mut copy))
            .and_then(|_| copy.sync_all())
            .map_err(io("copying a snapshot into the snapshot directory"))?;
        Ok((copy, path))
    }

    fn rename_durably(&self, from: &Path, to_name: &str) -> Result<(), StoreError> {
        fs::rename(from, self.path(to_name)).map_err(io("renaming a snapshot file"))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("syncing the snapshot directory"))
    }

    /// Removes every file of the directory except `keep` (best effort: a file left behind is
    /// removed at the next open).
    fn remove_all_but(&self, keep: Option<&str>) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if keep.is_some_and(|keep| name.to_str() == Some(keep)) {
                continue;
            }
            // A file being received right now is still open for writing: leave those to the
            // install that follows (it renames them) or the next open.
            if name
                .to_str()
                .is_some_and(|name| name.starts_with("received-") && name.ends_with(TEMP_SUFFIX))
            {
                continue;
            }
            if let Err(error) = fs::remove_file(entry.path()) {
                tracing::warn!(file = ?entry.path(), %error, "cannot remove an old snapshot file");
            }
        }
    }

    /// Removes files a crash left (unfinished builds and receptions, replaced snapshots).
    fn remove_leftovers(&self, current: Option<&str>) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if current.is_some_and(|current| name.to_str() == Some(current)) {
                continue;
            }
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |source| StoreError::Io { what, source }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default()
}

/// A file name (and snapshot id) that sorts by log index and never repeats.
fn new_name(kind: &str, header: &Header) -> String {
    let index = header.last_applied.map_or(0, |log_id| log_id.index);
    format!("{kind}-{index}-{}", nanos())
}

fn view_meta(db: &Database) -> Result<Option<Meta>, StoreError> {
    DbView::live(db)
        .get(Table::Snapshot, META)?
        .map(|bytes| decode("snapshot meta", &bytes))
        .transpose()
}

fn put_current(txn: &mut Txn<'_>, meta: &Meta, file_name: &str) -> Result<(), StoreError> {
    txn.put(Table::Snapshot, META, encode("snapshot meta", meta)?);
    txn.put(Table::Snapshot, FILE, file_name.as_bytes());
    Ok(())
}

/// The first write of an install: readers are shut out, the install is recorded (so a crash from
/// here on finishes it at the next open) and every state table is emptied; synced.
fn begin_replace(db: &Database, meta: &Meta, file_name: &str) -> Result<(), StoreError> {
    db.installing.store(true, Ordering::Release);
    let mut batch = WriteBatch::default();
    let record = InstallRecord {
        file: file_name.to_owned(),
        meta: meta.clone(),
    };
    batch.put_cf(
        cf(db, Table::Snapshot)?,
        INSTALLING,
        encode("snapshot install record", &record)?,
    );
    for table in Table::STATE {
        delete_table(db, &mut batch, table)?;
    }
    for index in crate::derived::ALL {
        index.forget(db, &mut batch)?;
    }
    write_synced(db, batch)
}

/// Stages the deletion of every row of `table`: one range tombstone up to its last key, and that
/// key (the range's end is exclusive).
pub(crate) fn delete_table(
    db: &Database,
    batch: &mut WriteBatch,
    table: Table,
) -> Result<(), StoreError> {
    let family = cf(db, table)?;
    let last = db.iterator_cf(family, IteratorMode::End).next();
    if let Some(row) = last {
        let (key, _) = row?;
        batch.delete_range_cf(family, &[][..], &key[..]);
        batch.delete_cf(family, &key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};
    use tempfile::TempDir;

    use super::*;
    use crate::db::{open, StoreOptions};

    fn rows(db: &Database) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let view = DbView::live(db);
        let mut rows = Vec::new();
        // The state, and the derived indexes an install rebuilds from it.
        let derived = crate::derived::ALL.map(|index| index.table);
        for table in Table::STATE.into_iter().chain(derived) {
            view.scan(table, b"", None, &mut |key, value| {
                rows.push((table, key.to_vec(), value.to_vec()));
                Ok(true)
            })
            .expect("scan");
        }
        rows
    }

    fn write_state(db: &Database, tags: &[&str], index: u64) {
        let mut txn = Txn::new(db);
        let repo: oci_model::RepositoryName = "app".parse().expect("repo");
        for tag in tags {
            let record = state::TagRecord {
                digest: oci_model::Digest::sha256_of(tag.as_bytes()),
                pushed_ms: 1,
            };
            state::put_tag(&mut txn, &repo, &tag.parse().expect("tag"), &record, None)
                .expect("tag");
        }
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), index);
        state::put_applied(&mut txn, Some(&log_id), &Default::default()).expect("applied");
        db.write(txn.into_batch().expect("batch")).expect("write");
    }

    /// A crash after an install's first write (state emptied, install recorded) is finished at
    /// the next open: the state is the snapshot's, and the snapshot is current.
    #[test]
    fn an_install_cut_short_is_finished_at_open() {
        let (leader_dir, follower_dir) =
            (TempDir::new().expect("dir"), TempDir::new().expect("dir"));
        let options = StoreOptions::default();
        let (leader, _closed) = open(leader_dir.path(), &options).expect("open");
        write_state(&leader, &["v1", "v2", "v3"], 7);
        let leader_files =
            SnapshotFiles::open(leader_dir.path().join("snapshots"), &leader).expect("files");
        let (meta, _file) = leader_files.build(&leader).expect("build");
        let expected = rows(&leader);

        let snapshots = follower_dir.path().join("snapshots");
        {
            let (follower, _closed) = open(follower_dir.path(), &options).expect("open");
            write_state(&follower, &["stale"], 3);
            let files = SnapshotFiles::open(snapshots.clone(), &follower).expect("files");
            let current = leader_dir.path().join("snapshots").join(
                String::from_utf8(
                    DbView::live(&leader)
                        .get(Table::Snapshot, FILE)
                        .expect("get")
                        .expect("current file"),
                )
                .expect("utf-8"),
            );
            fs::copy(current, files.path("installed-7-1.snap")).expect("copy");
            begin_replace(&follower, &meta, "installed-7-1.snap").expect("first write");
            assert!(
                rows(&follower).is_empty(),
                "the first write empties the state"
            );
            // The process dies here.
        }
        let (follower, _closed) = open(follower_dir.path(), &options).expect("reopen");
        let files = SnapshotFiles::open(snapshots, &follower).expect("files finish the install");
        assert_eq!(rows(&follower), expected);
        assert!(!follower.installing.load(Ordering::Acquire));
        let (current, _file) = files
            .current(&follower)
            .expect("current")
            .expect("a snapshot");
        assert_eq!(current, meta);
        assert!(DbView::live(&follower)
            .get(Table::Snapshot, INSTALLING)
            .expect("get")
            .is_none());
    }
}

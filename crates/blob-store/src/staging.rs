//! The blocking file work behind [`FsBlobStore`](crate::FsBlobStore): appending to staging
//! files, hashing them, publishing them durably under their digest. Everything here runs on
//! tokio's blocking pool via [`blocking`], so neither disk waits nor hashing stall the runtime.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use cluster_api::{BlobError, UploadId};
use oci_model::{Algorithm, Digest, Digester};

use crate::upload_locks::RunningHash;
use crate::UploadInfo;

/// How much of a file the rehash path reads at a time: large enough to hash at full speed,
/// small enough that memory stays bounded whatever the blob size.
const HASH_BUFFER_BYTES: usize = 1 << 20;

/// An I/O error with the action and path that failed, since `BlobError::Io` carries only text.
pub(crate) fn io_error(action: &str, path: &Path, error: io::Error) -> BlobError {
    let message = format!("{action} {}: {error}", path.display());
    if cluster_api::is_out_of_space(&error) {
        BlobError::Full(message)
    } else {
        BlobError::Io(message)
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir` (statvfs's
/// `f_bavail`).
pub(crate) fn available_bytes(dir: &Path) -> Result<u64, BlobError> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| BlobError::Invalid(format!("{} contains a NUL byte", dir.display())))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` is written by statvfs on success,
    // read only then.
    let result = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return Err(io_error("statvfs", dir, io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// A file that takes appended batches on the blocking pool: a staging upload or an incoming replica.
pub(crate) trait BatchWriter: Send + 'static {
    fn write_batch(&mut self, batch: &[Bytes]) -> Result<(), BlobError>;
}

/// Dirty bytes after which a writer asks the kernel to start writing them back.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// Starts the kernel's writeback of a file being appended to every [`WRITEBACK_BYTES`], so the disk
/// works while the network still delivers and the fsync at commit waits for the last few MiB
/// instead of the whole blob. Durability still comes from that fsync alone.
pub(crate) struct Writeback {
    from: u64,
}

impl Writeback {
    pub fn new(from: u64) -> Writeback {
        Writeback { from }
    }

    /// `file` now holds `len` bytes.
    pub fn written(&mut self, file: &File, len: u64) {
        if len.saturating_sub(self.from) < WRITEBACK_BYTES {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open
            // for as long as `file` is borrowed. A failure is ignored on purpose: it only means
            // writeback starts later, and the commit's fsync reports real I/O errors.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    self.from as libc::off64_t,
                    (len - self.from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.from = len;
    }
}

/// Runs blocking file work on the blocking pool.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, BlobError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, BlobError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| BlobError::Io(format!("blocking file task failed: {error}")))?
}

/// Fsyncs a directory so that entries created, renamed or removed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| io_error("fsync directory", dir, error))
}

/// A staging file open for appending, with the running hash of what it holds.
pub(crate) struct StagingWriter {
    file: File,
    path: PathBuf,
    pub running_hash: Option<RunningHash>,
    pub len: u64,
    writeback: Writeback,
}

impl StagingWriter {
    /// Opens the staging file at `path`; `UploadNotFound` when it does not exist.
    pub fn open(
        path: PathBuf,
        id: &UploadId,
        running_hash: Option<RunningHash>,
    ) -> Result<Self, BlobError> {
        // O_APPEND: every write lands at the end, which is `len` because the caller holds the
        // upload's lock and checked the offset.
        let file = match OpenOptions::new().append(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::UploadNotFound(id.to_string()))
            }
            Err(error) => return Err(io_error("open staging file", &path, error)),
        };
        let len = file
            .metadata()
            .map_err(|error| io_error("stat staging file", &path, error))?
            .len();
        // A hash that does not cover exactly the current file is useless; commit will rehash.
        let running_hash = running_hash.filter(|hash| hash.len == len);
        Ok(StagingWriter {
            file,
            path,
            running_hash,
            len,
            writeback: Writeback::new(len),
        })
    }

    /// Writes `batch` at the end of the file and hashes it.
    pub fn write_batch(&mut self, batch: &[Bytes]) -> Result<(), BlobError> {
        for chunk in batch {
            self.file
                .write_all(chunk)
                .map_err(|error| io_error("write staging file", &self.path, error))?;
            self.len += chunk.len() as u64;
            if let Some(hash) = &mut self.running_hash {
                hash.digester.update(chunk);
                hash.len = self.len;
            }
        }
        self.writeback.written(&self.file, self.len);
        Ok(())
    }
}

/// Cuts the staging file at `path` back to `len` bytes, undoing a failed append. By path rather
/// than through the append's handle, which is lost if its blocking task failed.
pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), BlobError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(len))
        .map_err(|error| io_error("truncate staging file", path, error))
}

/// The result of hashing a staging file for commit.
pub(crate) struct Verified {
    pub len: u64,
    pub actual: Digest,
    /// The running hash to keep for the upload (rebuilt when the file had to be re-read).
    pub running_hash: Option<RunningHash>,
}

/// Computes the digest of the staging file at `path` with `algorithm`, from `running_hash` when
/// it covers the whole file in that algorithm, else by reading the file.
pub(crate) fn verify(
    path: &Path,
    id: &UploadId,
    algorithm: Algorithm,
    running_hash: Option<RunningHash>,
) -> Result<Verified, BlobError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(BlobError::UploadNotFound(id.to_string()))
        }
        Err(error) => return Err(io_error("open staging file", path, error)),
    };
    let len = file
        .metadata()
        .map_err(|error| io_error("stat staging file", path, error))?
        .len();
    let running_hash = running_hash.filter(|hash| hash.len == len);
    if let Some(hash) = running_hash
        .as_ref()
        .filter(|hash| hash.digester.algorithm() == algorithm)
    {
        let actual = hash.digester.clone().finish();
        return Ok(Verified {
            len,
            actual,
            running_hash,
        });
    }
    let digester = hash_file(&mut file, path, algorithm)?;
    let actual = digester.clone().finish();
    // Keep a rebuilt hash for a retry of this commit, unless a running hash of another
    // algorithm is already being kept.
    let running_hash = running_hash.or(Some(RunningHash { digester, len }));
    Ok(Verified {
        len,
        actual,
        running_hash,
    })
}

/// Hashes the whole of `file` in bounded reads.
fn hash_file(file: &mut File, path: &Path, algorithm: Algorithm) -> Result<Digester, BlobError> {
    let mut digester = Digester::new(algorithm);
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Ok(digester),
            Ok(read) => digester.update(&buffer[..read]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(io_error("read staging file", path, error)),
        }
    }
}

/// Fan-out directories known to be durably linked into their parent in this process, so each is
/// created and its parent fsynced once, not on every commit.
#[derive(Default)]
pub(crate) struct DurableDirs {
    known: Mutex<HashSet<PathBuf>>,
}

impl DurableDirs {
    /// Makes sure `dir` exists and its entry in its parent is on disk.
    pub(crate) fn ensure(&self, dir: &Path) -> Result<(), BlobError> {
        if self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(dir)
        {
            return Ok(());
        }
        fs::create_dir_all(dir).map_err(|error| io_error("create directory", dir, error))?;
        // Fsync even when the directory already existed: it may have been created just before a
        // crash, or by a concurrent commit that has not fsynced the parent yet.
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dir.to_path_buf());
        Ok(())
    }
}

/// Makes the verified staging file at `staging` the blob at `final_path`, durably: the file is
/// fsynced, renamed into place and the directory fsynced. If the blob already exists the staging
/// file is dropped instead. A crash at any point leaves either no file or the whole file at
/// `final_path`, because the only way in is an atomic rename of an fsynced file.
pub(crate) fn publish(
    staging: &Path,
    final_path: &Path,
    dirs: &DurableDirs,
) -> Result<(), BlobError> {
    let fan_out = final_path.parent().ok_or_else(|| {
        BlobError::Io(format!("blob path {} has no parent", final_path.display()))
    })?;
    dirs.ensure(fan_out)?;
    let exists = match fs::symlink_metadata(final_path) {
        Ok(_) => true,
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        Err(error) => return Err(io_error("stat blob", final_path, error)),
    };
    if exists {
        fs::remove_file(staging)
            .map_err(|error| io_error("remove staging file", staging, error))?;
    } else {
        if let Err(error) = File::open(staging).and_then(|file| file.sync_all()) {
            // After a failed fsync the kernel may have dropped dirty pages and marked them clean,
            // so a retry could "succeed" over lost data: discard the upload instead, and let the
            // client push again.
            let _ = fs::remove_file(staging);
            return Err(io_error(
                "fsync staging file (upload discarded)",
                staging,
                error,
            ));
        }
        fs::rename(staging, final_path)
            .map_err(|error| io_error("rename into place", final_path, error))?;
    }
    // Also on the dedup path: the existing blob may have been renamed in by a concurrent commit
    // of the same digest that has not fsynced the directory yet.
    sync_dir(fan_out)
}

/// Removes the blob at `path` if present, and makes the removal durable.
pub(crate) fn remove_blob(path: &Path) -> Result<(), BlobError> {
    match fs::remove_file(path) {
        Ok(()) => match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("remove blob", path, error)),
    }
}

/// Every upload staging file in `uploads_dir`. Names that are not upload ids are skipped: they
/// were not written by this store, and no path is ever built from them.
pub(crate) fn list_uploads(uploads_dir: &Path) -> Result<Vec<UploadInfo>, BlobError> {
    let entries =
        fs::read_dir(uploads_dir).map_err(|error| io_error("list", uploads_dir, error))?;
    let mut uploads = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", uploads_dir, error))?;
        let Some(id) = entry.file_name().to_str().and_then(UploadId::parse) else {
            continue;
        };
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            // Committed or cancelled while we were listing.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io_error("stat", &entry.path(), error)),
        };
        let modified = metadata
            .modified()
            .map_err(|error| io_error("read modification time of", &entry.path(), error))?;
        uploads.push(UploadInfo {
            id,
            length: metadata.len(),
            modified,
        });
    }
    Ok(uploads)
}

/// Creates the store's directory tree under `root` and makes it durable.
pub(crate) fn create_layout(root: &Path) -> Result<(), BlobError> {
    let root_existed = root.is_dir();
    let blobs = root.join("blobs");
    let dirs = [
        blobs.join(Algorithm::Sha256.as_str()),
        blobs.join(Algorithm::Sha512.as_str()),
        root.join("uploads"),
        root.join("replicas"),
        root.join("trash"),
    ];
    for dir in &dirs {
        fs::create_dir_all(dir).map_err(|error| io_error("create directory", dir, error))?;
    }
    if !root_existed {
        if let Some(parent) = root
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            sync_dir(parent)?;
        }
    }
    // Cheap, and it covers a tree half-created before a crash as well as a fresh one.
    sync_dir(root)?;
    sync_dir(&blobs)?;
    Ok(())
}

impl BatchWriter for StagingWriter {
    fn write_batch(&mut self, batch: &[Bytes]) -> Result<(), BlobError> {
        StagingWriter::write_batch(self, batch)
    }
}

//! [`FsBlobStore`]: the [`BlobStore`] on a local directory (layout in the crate documentation).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cluster_api::{declared_length, BlobError, ByteStream, UploadId};
use oci_model::Digest;
use tokio::sync::oneshot;

use crate::replica::{self, ReplicaWriter};
use crate::staging::{self, blocking, io_error, DurableDirs, StagingWriter};
use crate::stream::copy_stream;
use crate::trash;
use crate::upload_locks::{RunningHash, UploadLocks, UploadState};
use crate::{detached, BlobStore, UploadInfo};

/// A [`BlobStore`] on a local directory. Cheap to clone; clones share their upload state.
#[derive(Clone)]
pub struct FsBlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    uploads: UploadLocks<UploadState>,
    durable_dirs: Arc<DurableDirs>,
    /// Makes each replica staging file name unique within this process.
    replica_counter: AtomicU64,
}

impl FsBlobStore {
    /// Opens the store rooted at `root`, creating its directories if needed. Committed blobs and
    /// open uploads found there are kept, so reopening after a restart continues where it stopped;
    /// blobs found set aside are put back (see [`BlobStore::set_aside`]).
    pub async fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore, BlobError> {
        let root = root.into();
        let durable_dirs = Arc::new(DurableDirs::default());
        let (layout_root, layout_dirs) = (root.clone(), Arc::clone(&durable_dirs));
        let restored = blocking(move || {
            staging::create_layout(&layout_root)?;
            replica::clear_staging(&layout_root.join("replicas"))?;
            trash::restore_all(&layout_root, &layout_dirs)
        })
        .await?;
        if restored > 0 {
            tracing::info!(root = %root.display(), restored, "put back blobs left set aside");
        }
        Ok(FsBlobStore {
            inner: Arc::new(Inner {
                root,
                uploads: UploadLocks::default(),
                durable_dirs,
                replica_counter: AtomicU64::new(0),
            }),
        })
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Blob `digest` opened for reading, with its size; `None` when this store does not hold it.
    /// For senders that hand the file to the kernel (`sendfile`) instead of streaming it through
    /// [`BlobStore::read`]. The open file keeps its bytes readable even if the blob is deleted
    /// meanwhile, as a read already streaming does.
    pub async fn open_blob(
        &self,
        digest: &Digest,
    ) -> Result<Option<(std::fs::File, u64)>, BlobError> {
        let path = self.inner.blob_path(digest);
        blocking(move || match std::fs::File::open(&path) {
            Ok(file) => {
                let size = file
                    .metadata()
                    .map_err(|error| io_error("stat blob", &path, error))?
                    .len();
                Ok(Some((file, size)))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("open blob", &path, error)),
        })
        .await
    }
}

impl Inner {
    /// The staging path of `id`. The id is validated again here, whatever the caller did, because
    /// `UploadId`'s field is public and a path must never be built from unvalidated text.
    fn upload_path(&self, id: &UploadId) -> Result<PathBuf, BlobError> {
        let valid = UploadId::parse(id.as_str()).ok_or_else(|| {
            BlobError::Invalid(format!("{:?} is not a valid upload id", id.as_str()))
        })?;
        Ok(self.root.join("uploads").join(valid.as_str()))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }

    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        let path = self.upload_path(id)?;
        let mut guard = self.uploads.lock(id).await;
        let created = blocking(move || {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => Ok(true),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(error) => Err(io_error("create staging file", &path, error)),
            }
        })
        .await?;
        if created {
            // The default algorithm of OCI digests; a sha512 commit rehashes instead.
            guard.running_hash = Some(RunningHash {
                digester: oci_model::Digester::new(oci_model::Algorithm::Sha256),
                len: 0,
            });
        }
        Ok(())
    }

    async fn upload_len(&self, id: &UploadId) -> Result<u64, BlobError> {
        let path = self.upload_path(id)?;
        // Under the lock, so an append in flight is reported as not yet done, never half done.
        let guard = self.uploads.lock(id).await;
        match tokio::fs::metadata(&path).await {
            Ok(metadata) => Ok(metadata.len()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.uploads.retire(id, guard);
                Err(BlobError::UploadNotFound(id.to_string()))
            }
            Err(error) => Err(io_error("stat staging file", &path, error)),
        }
    }

    /// Appends `data` at `offset` (at the current end when `None`), all or nothing. `caller_gone`
    /// resolves when the caller stopped waiting, which aborts the append like a failed stream.
    async fn append(
        &self,
        id: &UploadId,
        offset: Option<u64>,
        mut data: ByteStream,
        mut caller_gone: oneshot::Receiver<()>,
    ) -> Result<u64, BlobError> {
        let path = self.upload_path(id)?;
        // A body whose length is known (the client's Content-Length) that cannot fit is
        // refused before a byte of it is read or written.
        if let Some(declared) = declared_length(&data) {
            let dir = self.root.join("uploads");
            let available = blocking(move || staging::available_bytes(&dir)).await?;
            if available < declared {
                return Err(BlobError::Full(format!(
                    "{declared} bytes do not fit: {available} bytes free on this node's disk"
                )));
            }
        }
        let mut guard = self.uploads.lock(id).await;
        let running_hash = guard.running_hash.take();
        let (open_path, open_id) = (path.clone(), id.clone());
        let opened = blocking(move || StagingWriter::open(open_path, &open_id, running_hash)).await;
        let writer = match opened {
            Ok(writer) => writer,
            Err(error @ BlobError::UploadNotFound(_)) => {
                self.uploads.retire(id, guard);
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let offset = offset.unwrap_or(writer.len);
        if writer.len != offset {
            let expected = writer.len;
            guard.running_hash = writer.running_hash;
            return Err(BlobError::OffsetMismatch {
                expected,
                given: offset,
            });
        }
        // Cheap to clone (a few hundred bytes): restoring it is how a failed append avoids a
        // full rehash at commit.
        let hash_before = writer.running_hash.clone();
        match copy_stream(writer, &mut data, &mut caller_gone).await {
            Ok(writer) => {
                guard.running_hash = writer.running_hash;
                Ok(writer.len)
            }
            Err(error) => {
                let truncate_path = path.clone();
                let rolled_back = blocking(move || staging::truncate(&truncate_path, offset)).await;
                if let Err(rollback_error) = &rolled_back {
                    // The upload now reports a length its client never saw succeed; the client
                    // learns it from the next status call.
                    tracing::warn!(upload = %id, %rollback_error, "could not roll back a failed append");
                }
                // Only a clean truncation makes the old hash true again; else rehash at commit.
                guard.running_hash = rolled_back.ok().and(hash_before);
                Err(error)
            }
        }
    }

    async fn commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, BlobError> {
        let path = self.upload_path(id)?;
        let final_path = self.blob_path(digest);
        let mut guard = self.uploads.lock(id).await;
        let running_hash = guard.running_hash.take();
        let (verify_id, expected) = (id.clone(), digest.clone());
        let durable_dirs = Arc::clone(&self.durable_dirs);
        // Verified and published in one blocking task: a small blob's commit is one thread
        // hand-off, not two.
        let outcome = blocking(move || {
            let verified = staging::verify(&path, &verify_id, expected.algorithm(), running_hash)?;
            if verified.actual == expected {
                staging::publish(&path, &final_path, &durable_dirs)?;
            }
            Ok(verified)
        })
        .await;
        let verified = match outcome {
            Ok(verified) => verified,
            Err(error @ BlobError::UploadNotFound(_)) => {
                self.uploads.retire(id, guard);
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        if verified.actual != *digest {
            guard.running_hash = verified.running_hash;
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual: verified.actual,
            });
        }
        self.uploads.retire(id, guard);
        tracing::debug!(upload = %id, %digest, size = verified.len, "blob committed");
        Ok(verified.len)
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        let path = self.upload_path(id)?;
        let guard = self.uploads.lock(id).await;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("remove staging file", &path, error)),
        })
        .await?;
        self.uploads.retire(id, guard);
        Ok(())
    }

    /// Writes `data` to a fresh staging file while hashing it, then publishes it under `digest`
    /// like a commit. Anything short of a verified, complete stream leaves no file behind.
    async fn put_replica(
        &self,
        digest: &Digest,
        mut data: ByteStream,
        mut caller_gone: oneshot::Receiver<()>,
    ) -> Result<u64, BlobError> {
        let final_path = self.blob_path(digest);
        if let Some(size) = blob_size(&final_path).await? {
            return Ok(size);
        }
        let name = format!(
            "{}-{}-{}",
            digest.algorithm().as_str(),
            digest.hex(),
            self.replica_counter.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.root.join("replicas").join(name);
        let algorithm = digest.algorithm();
        let writer = blocking(move || ReplicaWriter::create(path, algorithm)).await?;
        let staged = writer.path.clone();
        let written = match copy_stream(writer, &mut data, &mut caller_gone).await {
            Ok(writer) => writer,
            Err(error) => {
                blocking(move || {
                    replica::discard(&staged);
                    Ok(())
                })
                .await?;
                return Err(error);
            }
        };
        let len = written.len;
        let (staged, actual) = written.finish();
        if actual != *digest {
            blocking(move || {
                replica::discard(&staged);
                Ok(())
            })
            .await?;
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let durable_dirs = Arc::clone(&self.durable_dirs);
        blocking(move || staging::publish(&staged, &final_path, &durable_dirs)).await?;
        tracing::debug!(%digest, size = len, "replica stored");
        Ok(len)
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        let path = self.blob_path(digest);
        let open_path = path.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&open_path)?;
            let size = file.metadata()?.len();
            Ok::<_, io::Error>((file, size))
        })
        .await
        .map_err(|error| BlobError::Io(format!("blocking file task failed: {error}")))?;
        let (file, size) = match opened {
            Ok(opened) => opened,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(digest.clone()))
            }
            Err(error) => return Err(io_error("open blob", &path, error)),
        };
        // Offset == size is past the last byte, except for the one valid range of an empty blob.
        if offset > size || (offset == size && size > 0) {
            return Err(BlobError::RangeNotSatisfiable { offset, size });
        }
        let available = size - offset;
        let length = length.map_or(available, |wanted| wanted.min(available));
        // Blobs are immutable and only ever renamed in whole, so the open file is complete; a
        // concurrent delete unlinks it but this handle still reads it to the end.
        Ok(crate::stream::read_file(
            file,
            path,
            offset..offset + length,
        ))
    }
}

/// The final path of `digest` under `root`: `Digest` is validated on construction (known
/// algorithm, lowercase hex of the right length), so it is safe in a path.
pub(crate) fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    root.join("blobs")
        .join(digest.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// The size of the blob file at `path`, `None` when absent.
async fn blob_size(path: &Path) -> Result<Option<u64>, BlobError> {
    match tokio::fs::metadata(path).await {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error("stat blob", path, error)),
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        let (inner, id) = (Arc::clone(&self.inner), id.clone());
        detached(async move { inner.start_upload(&id).await }).await
    }

    async fn append(&self, id: &UploadId, offset: u64, data: ByteStream) -> Result<u64, BlobError> {
        let (inner, id) = (Arc::clone(&self.inner), id.clone());
        // Dropped together with this future: the detached append then sees its caller is gone.
        let (_caller_alive, caller_gone) = oneshot::channel();
        detached(async move { inner.append(&id, Some(offset), data, caller_gone).await }).await
    }

    async fn append_at_end(&self, id: &UploadId, data: ByteStream) -> Result<u64, BlobError> {
        let (inner, id) = (Arc::clone(&self.inner), id.clone());
        let (_caller_alive, caller_gone) = oneshot::channel();
        detached(async move { inner.append(&id, None, data, caller_gone).await }).await
    }

    async fn upload_len(&self, id: &UploadId) -> Result<u64, BlobError> {
        self.inner.upload_len(id).await
    }

    async fn commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, BlobError> {
        let (inner, id, digest) = (Arc::clone(&self.inner), id.clone(), digest.clone());
        detached(async move { inner.commit(&id, &digest).await }).await
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        let (inner, id) = (Arc::clone(&self.inner), id.clone());
        detached(async move { inner.cancel_upload(&id).await }).await
    }

    async fn list_uploads(&self) -> Result<Vec<UploadInfo>, BlobError> {
        let uploads_dir = self.inner.root.join("uploads");
        blocking(move || staging::list_uploads(&uploads_dir)).await
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        blob_size(&self.inner.blob_path(digest)).await
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        self.inner.read(digest, offset, length).await
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.inner.blob_path(digest);
        blocking(move || staging::remove_blob(&path)).await
    }

    async fn put_replica(&self, digest: &Digest, data: ByteStream) -> Result<u64, BlobError> {
        let (inner, digest) = (Arc::clone(&self.inner), digest.clone());
        // As for append: a caller that goes away aborts the replica instead of leaving it open.
        let (_caller_alive, caller_gone) = oneshot::channel();
        detached(async move { inner.put_replica(&digest, data, caller_gone).await }).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        let blobs_dir = self.inner.root.join("blobs");
        let after = after.cloned();
        blocking(move || replica::list_blobs(&blobs_dir, after.as_ref(), n)).await
    }

    async fn set_aside(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let blob = self.inner.blob_path(digest);
        let aside = trash::aside_path(&self.inner.root, digest);
        let size = blocking(move || trash::set_aside(&blob, &aside)).await?;
        tracing::debug!(%digest, ?size, "blob set aside");
        Ok(size)
    }

    async fn put_back(&self, digest: &Digest) -> Result<(), BlobError> {
        let blob = self.inner.blob_path(digest);
        let aside = trash::aside_path(&self.inner.root, digest);
        let durable_dirs = Arc::clone(&self.inner.durable_dirs);
        if blocking(move || trash::put_back(&aside, &blob, &durable_dirs)).await? {
            tracing::debug!(%digest, "blob put back");
        }
        Ok(())
    }

    async fn purge(&self, digest: &Digest) -> Result<(), BlobError> {
        let aside = trash::aside_path(&self.inner.root, digest);
        blocking(move || trash::purge(&aside)).await
    }

    async fn free_bytes(&self) -> Result<Option<u64>, BlobError> {
        let root = self.inner.root.clone();
        blocking(move || staging::available_bytes(&root))
            .await
            .map(Some)
    }
}

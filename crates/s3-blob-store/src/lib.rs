//! [`S3BlobStore`]: the `BlobStore` on an S3-compatible object store (AWS S3, Ceph RGW, Garage,
//! MinIO), through the `object_store` crate. A blob node on it joins the ring like any other;
//! "zone eu-west = a bucket in eu-west" is then a deployment.
//!
//! Layout under the node's prefix (`<prefix>/`, one prefix per blob node; the `owner` object
//! keeps two nodes off one prefix):
//!
//! ```text
//! <prefix>/
//!   owner                        the node that owns this prefix (its id, as text)
//!   blobs/<alg>/<ab>/<ab12...ef> final blobs, one object per digest, written whole or never
//!   uploads/<id>/open            an upload was started (empty)
//!   uploads/<id>/<offset:020>    the bytes one append added at that offset
//!   trash/<alg>-<hex>            blobs set aside by garbage collection, put back at open
//! ```
//!
//! **Staging.** S3 has no append, and a multipart upload's parts must be at least 5 MiB (but the
//! last) while a client's chunks are any size. So each append is an object of its own, a
//! *segment* keyed by the offset it starts at, written by one PUT or, past 8 MiB, one multipart
//! upload, and published only once its whole stream has arrived: a failed or abandoned append
//! leaves nothing, and the upload's length is the sum of its segments, which a new process finds
//! by listing `uploads/<id>/` (so uploads resume across a restart). Commit verifies the digest
//! (from the hash kept while appending, or by reading the segments again after a restart), then
//! publishes the blob with a server-side copy of a single segment, or by streaming several
//! segments into one multipart upload of the final object, and only then deletes the segments.
//! A replica pushed by another node streams straight into a multipart upload of its final key,
//! completed only when the bytes match the digest.
//!
//! **What Wharf relies on from the S3 API.** A PUT, a completed multipart upload and a copy
//! publish an object atomically (readers see all of it or none), and durably once answered; the
//! answer is read-after-write and list-after-write consistent (AWS S3 since December 2020; Ceph
//! RGW, Garage and MinIO likewise for a single bucket); a DELETE of a missing key succeeds. A
//! blob key is written only with the bytes of its digest, so two writers of one key never
//! disagree and the last completed write changing nothing a reader can see. Set-aside and
//! put-back are copy-then-delete, not a rename: a crash between the two leaves both objects,
//! which opening the store resolves by putting the set-aside copy back. Multipart uploads left
//! incomplete by a crash are invisible and cost only storage: give the bucket a lifecycle rule
//! that aborts incomplete multipart uploads after a day.

mod error;
mod keys;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use blob_store::upload_locks::{RunningHash, UploadGuard, UploadLocks};
use blob_store::{detached, BlobStore, UploadInfo, MAX_READ_CHUNK_BYTES};
use bytes::Bytes;
use cluster_api::{BlobError, ByteStream, UploadId};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};
use oci_model::{Algorithm, Digest, Digester};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::error::{is_not_found, store_error};
use crate::keys::{Keys, UploadObject};
use crate::write::{copy_stream, ObjectWriter};

/// The largest object S3 copies server-side in one request; larger ones are copied by streaming
/// them through this node.
const MAX_SERVER_COPY_BYTES: u64 = 5 << 30;

/// `[blob.s3]`: where an S3-backed blob node keeps its blobs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket; it must exist (Wharf never creates or configures buckets).
    pub bucket: String,
    /// Keys start with this (`a/b`, no leading or trailing `/`); one prefix per blob node.
    #[serde(default)]
    pub prefix: String,
    /// The S3 API endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:3900`; unset, AWS's endpoint for `region`. Plain `http://` is allowed
    /// only when named here.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Unset: `us-east-1`, or `AWS_REGION` / `AWS_DEFAULT_REGION`.
    #[serde(default)]
    pub region: Option<String>,
    /// Unset: the `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` environment, or the instance's
    /// role.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
}

impl S3Config {
    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(format!(
                "s3 bucket {:?}: 3 to 63 lowercase letters, digits, '-' or '.'",
                self.bucket
            ));
        }
        self.prefix_path()?;
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(format!(
                    "s3 endpoint {endpoint:?} must start with http:// or https://"
                ));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err("s3 access_key_id and secret_access_key go together".into());
        }
        Ok(())
    }

    fn prefix_path(&self) -> Result<Path, String> {
        if self.prefix.is_empty() {
            return Ok(Path::default());
        }
        Path::parse(&self.prefix)
            .ok()
            .filter(|path| path.as_ref() == self.prefix)
            .ok_or_else(|| {
                format!(
                    "s3 prefix {:?}: path segments separated by single '/', none empty, '.' or '..'",
                    self.prefix
                )
            })
    }

    /// `s3://bucket/prefix`, with the endpoint when one is set: for logs and errors.
    pub fn describe(&self) -> String {
        let mut text = format!("s3://{}/{}", self.bucket, self.prefix);
        if let Some(endpoint) = &self.endpoint {
            text.push_str(&format!(" at {endpoint}"));
        }
        text
    }
}

/// A [`BlobStore`] on an S3-compatible object store (layout and guarantees in the crate
/// documentation). Cheap to clone; clones share their upload state.
#[derive(Clone)]
pub struct S3BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    keys: Keys,
    uploads: UploadLocks<UploadState>,
}

/// What the store remembers about one upload between calls; all of it can be rebuilt by
/// listing the upload's objects.
#[derive(Default)]
struct UploadState {
    /// `None` when unknown (a new process, or an append whose outcome is unknown).
    len: Option<u64>,
    /// The hash of the first `len` bytes, so commit need not read them again.
    running_hash: Option<RunningHash>,
}

/// One upload's objects, from a listing.
struct Listed {
    marker: bool,
    /// Offset to (key offset, size), in offset order.
    segments: BTreeMap<u64, u64>,
    modified: SystemTime,
}

impl S3BlobStore {
    /// Connects to the bucket of `config` and opens the store under its prefix for `owner` (the
    /// blob node's id): fails with a clear error when the bucket does not exist, refuses the
    /// credentials, or the prefix belongs to another owner. Blobs found set aside are put back.
    pub async fn connect(config: &S3Config, owner: &str) -> Result<S3BlobStore, BlobError> {
        config.validate().map_err(BlobError::Invalid)?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        let retry = RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        };
        // No timeout on a whole request: a read streams a blob at the pace of the client
        // pulling it, however long that takes. Connecting is bounded. (These options replace
        // the builder's, so plain HTTP is allowed here.)
        let plain_http = config
            .endpoint
            .as_deref()
            .is_some_and(|endpoint| endpoint.starts_with("http://"));
        let client = ClientOptions::new()
            .with_allow_http(plain_http)
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout_disabled();
        let store = builder
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|error| {
                BlobError::Invalid(format!("s3 settings for {}: {error}", config.describe()))
            })?;
        let root = config.prefix_path().map_err(BlobError::Invalid)?;
        S3BlobStore::open(Arc::new(store), root, owner)
            .await
            .map_err(|error| match error {
                BlobError::Io(message) | BlobError::Unavailable(message) => {
                    BlobError::Unavailable(format!("cannot use {}: {message}", config.describe()))
                }
                other => other,
            })
    }

    /// Opens the store under `root` of any object store (the in-memory one in tests).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        root: Path,
        owner: &str,
    ) -> Result<S3BlobStore, BlobError> {
        let inner = Inner {
            store,
            keys: Keys::new(root),
            uploads: UploadLocks::default(),
        };
        inner.claim(owner).await?;
        let restored = inner.put_back_all().await?;
        if restored > 0 {
            tracing::info!(root = %inner.keys.root(), restored, "put back blobs left set aside");
        }
        Ok(S3BlobStore {
            inner: Arc::new(inner),
        })
    }

    /// The object store underneath and this store's prefix, for tools and tests.
    pub fn object_store(&self) -> (&Arc<dyn ObjectStore>, &Path) {
        (&self.inner.store, self.inner.keys.root())
    }

    /// The key blob `digest` is kept under.
    pub fn blob_key(&self, digest: &Digest) -> Path {
        self.inner.keys.blob(digest)
    }
}

impl Inner {
    /// Writes the owner object on first use, and refuses a prefix another owner wrote. Also the
    /// first request a node makes: a missing bucket or refused credentials fail here.
    async fn claim(&self, owner: &str) -> Result<(), BlobError> {
        let key = self.keys.owner();
        match self.store.get(&key).await {
            Ok(found) => {
                let found = found
                    .bytes()
                    .await
                    .map_err(|error| store_error("read", &key, error))?;
                if found != owner.as_bytes() {
                    return Err(BlobError::Invalid(format!(
                        "the prefix {:?} belongs to blob node {:?}, not {owner:?}: give each blob \
                         node its own bucket or prefix",
                        self.keys.root().as_ref(),
                        String::from_utf8_lossy(&found)
                    )));
                }
                Ok(())
            }
            Err(error) if is_not_found(&error) => self
                .store
                .put(&key, Bytes::copy_from_slice(owner.as_bytes()).into())
                .await
                .map(drop)
                .map_err(|error| {
                    let hint = if is_not_found(&error) {
                        " (does the bucket exist?)"
                    } else {
                        ""
                    };
                    BlobError::Io(format!("write {key}{hint}: {error}"))
                }),
            Err(error) => Err(store_error("read", &key, error)),
        }
    }

    async fn put_back_all(&self) -> Result<usize, BlobError> {
        let trash = self.keys.trash();
        let listed: Vec<_> = self
            .store
            .list(Some(&trash))
            .try_collect()
            .await
            .map_err(|error| store_error("list", &trash, error))?;
        let mut restored = 0;
        for object in listed {
            if let Some(digest) = self.keys.parse_aside(&object.location) {
                self.put_back(&digest).await?;
                restored += 1;
            }
        }
        Ok(restored)
    }

    async fn head_size(&self, location: &Path) -> Result<Option<u64>, BlobError> {
        match self.store.head(location).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(store_error("head", location, error)),
        }
    }

    async fn delete_key(&self, location: &Path) -> Result<(), BlobError> {
        match self.store.delete(location).await {
            Ok(()) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(store_error("delete", location, error)),
        }
    }

    /// Copies the object at `from` (`size` bytes) to `to`: server-side when S3 allows it,
    /// streamed through this node otherwise.
    async fn copy_object(&self, from: &Path, to: &Path, size: u64) -> Result<(), BlobError> {
        if size <= MAX_SERVER_COPY_BYTES {
            return self
                .store
                .copy(from, to)
                .await
                .map_err(|error| store_error("copy", from, error));
        }
        let mut writer = ObjectWriter::new(Arc::clone(&self.store), to.clone());
        if let Err(error) = self
            .stream_objects(std::slice::from_ref(from), &mut writer)
            .await
        {
            writer.abort().await;
            return Err(error);
        }
        writer.finish().await.map(drop)
    }

    /// The bytes of the object at `source`, as they arrive.
    async fn object_chunks(
        &self,
        source: &Path,
    ) -> Result<impl futures::Stream<Item = Result<Bytes, BlobError>> + Unpin, BlobError> {
        let source = source.clone();
        let stream = self
            .store
            .get(&source)
            .await
            .map_err(|error| store_error("get", &source, error))?
            .into_stream();
        Ok(stream.map(move |chunk| chunk.map_err(|error| store_error("read", &source, error))))
    }

    /// Streams the objects at `sources`, in order, into `writer`.
    async fn stream_objects(
        &self,
        sources: &[Path],
        writer: &mut ObjectWriter,
    ) -> Result<(), BlobError> {
        for source in sources {
            let mut chunks = self.object_chunks(source).await?;
            while let Some(chunk) = chunks.next().await {
                writer.write(chunk?).await?;
            }
        }
        Ok(())
    }

    /// Hashes the objects at `sources`, in order.
    async fn hash_objects(
        &self,
        sources: &[Path],
        algorithm: Algorithm,
    ) -> Result<RunningHash, BlobError> {
        let mut hash = RunningHash {
            digester: Digester::new(algorithm),
            len: 0,
        };
        for source in sources {
            let mut chunks = self.object_chunks(source).await?;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                hash.digester.update(&chunk);
                hash.len += chunk.len() as u64;
            }
        }
        Ok(hash)
    }

    /// Every object of upload `id`.
    async fn list_upload(&self, id: &UploadId) -> Result<Listed, BlobError> {
        let prefix = self.keys.upload(id)?;
        let mut listed = Listed {
            marker: false,
            segments: BTreeMap::new(),
            modified: SystemTime::UNIX_EPOCH,
        };
        let mut objects = self.store.list(Some(&prefix));
        while let Some(object) = objects.next().await {
            let object = object.map_err(|error| store_error("list", &prefix, error))?;
            match self.keys.parse_upload(&object.location) {
                Some((found, UploadObject::Marker)) if found == *id => listed.marker = true,
                Some((found, UploadObject::Segment(offset))) if found == *id => {
                    listed.segments.insert(offset, object.size);
                }
                _ => continue,
            }
            listed.modified = listed.modified.max(object.last_modified.into());
        }
        Ok(listed)
    }

    /// The segments of upload `id` in order and its length; `UploadNotFound` when it was never
    /// started (or has ended).
    async fn segments(&self, id: &UploadId) -> Result<(Vec<(u64, u64)>, u64), BlobError> {
        let listed = self.list_upload(id).await?;
        if !listed.marker {
            return Err(BlobError::UploadNotFound(id.to_string()));
        }
        let mut len = 0;
        let mut segments = Vec::with_capacity(listed.segments.len());
        for (offset, size) in listed.segments {
            if offset != len {
                return Err(BlobError::Io(format!(
                    "upload {id}: a segment starts at {offset}, after {len} bytes: the upload's \
                     objects were changed behind this node's back"
                )));
            }
            segments.push((offset, size));
            len += size;
        }
        Ok((segments, len))
    }

    /// The upload's length, from memory or from a listing; retires the entry of an upload that
    /// does not exist.
    async fn known_len(
        &self,
        id: &UploadId,
        guard: UploadGuard<UploadState>,
    ) -> Result<(u64, UploadGuard<UploadState>), BlobError> {
        if let Some(len) = guard.len {
            return Ok((len, guard));
        }
        let mut guard = guard;
        match self.segments(id).await {
            Ok((_, len)) => {
                guard.len = Some(len);
                Ok((len, guard))
            }
            Err(error @ BlobError::UploadNotFound(_)) => {
                self.uploads.retire(id, guard);
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        let marker = self.keys.upload_marker(id)?;
        let mut guard = self.uploads.lock(id).await;
        if guard.len.is_some() || self.head_size(&marker).await?.is_some() {
            return Ok(());
        }
        self.store
            .put(&marker, Bytes::new().into())
            .await
            .map_err(|error| store_error("put", &marker, error))?;
        guard.len = Some(0);
        // The default algorithm of OCI digests; a sha512 commit rehashes instead.
        guard.running_hash = Some(RunningHash {
            digester: Digester::new(Algorithm::Sha256),
            len: 0,
        });
        Ok(())
    }

    async fn upload_len(&self, id: &UploadId) -> Result<u64, BlobError> {
        self.keys.upload(id)?;
        let guard = self.uploads.lock(id).await;
        self.known_len(id, guard).await.map(|(len, _)| len)
    }

    /// Appends `data` at `offset` (at the current end when `None`) as one new segment, all or
    /// nothing. `caller_gone` resolves when the caller stopped waiting.
    async fn append(
        &self,
        id: &UploadId,
        offset: Option<u64>,
        mut data: ByteStream,
        mut caller_gone: oneshot::Receiver<()>,
    ) -> Result<u64, BlobError> {
        self.keys.upload(id)?;
        let guard = self.uploads.lock(id).await;
        let (len, mut guard) = self.known_len(id, guard).await?;
        let offset = offset.unwrap_or(len);
        if offset != len {
            return Err(BlobError::OffsetMismatch {
                expected: len,
                given: offset,
            });
        }
        // The hash so far, when known; else commit hashes the segments.
        let before = guard.running_hash.take().filter(|hash| hash.len == len);
        let mut digester = before.as_ref().map(|hash| hash.digester.clone());
        let mut writer = ObjectWriter::new(Arc::clone(&self.store), self.keys.segment(id, len)?);
        let copied = copy_stream(&mut writer, &mut data, digester.as_mut(), &mut caller_gone).await;
        if let Err(error) = copied {
            writer.abort().await;
            guard.running_hash = before;
            return Err(error);
        }
        let written = writer.len();
        if written == 0 {
            guard.running_hash = before;
            return Ok(len);
        }
        match writer.finish().await {
            Ok(_) => {
                guard.len = Some(len + written);
                guard.running_hash = digester.map(|digester| RunningHash {
                    digester,
                    len: len + written,
                });
                Ok(len + written)
            }
            Err(error) => {
                // The segment may or may not have landed: list again next time.
                guard.len = None;
                guard.running_hash = None;
                Err(error)
            }
        }
    }

    async fn commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, BlobError> {
        self.keys.upload(id)?;
        let mut guard = self.uploads.lock(id).await;
        let (segments, len) = match self.segments(id).await {
            Ok(found) => found,
            Err(error @ BlobError::UploadNotFound(_)) => {
                self.uploads.retire(id, guard);
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let sources = segments
            .iter()
            .map(|(offset, _)| self.keys.segment(id, *offset))
            .collect::<Result<Vec<_>, _>>()?;
        let hash = match guard.running_hash.take() {
            Some(hash) if hash.len == len && hash.digester.algorithm() == digest.algorithm() => {
                hash
            }
            _ => self.hash_objects(&sources, digest.algorithm()).await?,
        };
        let actual = hash.digester.clone().finish();
        if actual != *digest {
            guard.len = Some(len);
            guard.running_hash = Some(hash);
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let final_key = self.keys.blob(digest);
        if self.head_size(&final_key).await?.is_none() {
            match segments.as_slice() {
                [] => self
                    .store
                    .put(&final_key, Bytes::new().into())
                    .await
                    .map(drop)
                    .map_err(|error| store_error("put", &final_key, error))?,
                [(_, size)] => self.copy_object(&sources[0], &final_key, *size).await?,
                _ => {
                    let mut writer = ObjectWriter::new(Arc::clone(&self.store), final_key);
                    if let Err(error) = self.stream_objects(&sources, &mut writer).await {
                        writer.abort().await;
                        return Err(error);
                    }
                    writer.finish().await?;
                }
            }
        }
        // The blob is durable; the staging objects go. A failure here leaves an upload that the
        // collector removes once meta no longer knows it.
        if let Err(error) = self.remove_upload(id, &sources).await {
            tracing::warn!(upload = %id, %error, "could not remove a committed upload's segments");
        }
        self.uploads.retire(id, guard);
        tracing::debug!(upload = %id, %digest, size = len, "blob committed");
        Ok(len)
    }

    /// Deletes the objects of upload `id`: segments first, the marker last, so a half-done
    /// removal still lists as an upload and is finished by the next cancel.
    async fn remove_upload(&self, id: &UploadId, segments: &[Path]) -> Result<(), BlobError> {
        for segment in segments {
            self.delete_key(segment).await?;
        }
        self.delete_key(&self.keys.upload_marker(id)?).await
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        self.keys.upload(id)?;
        let guard = self.uploads.lock(id).await;
        let listed = self.list_upload(id).await?;
        let segments = listed
            .segments
            .keys()
            .map(|offset| self.keys.segment(id, *offset))
            .collect::<Result<Vec<_>, _>>()?;
        self.remove_upload(id, &segments).await?;
        self.uploads.retire(id, guard);
        Ok(())
    }

    async fn list_uploads(&self) -> Result<Vec<UploadInfo>, BlobError> {
        let prefix = self.keys.uploads();
        let mut uploads: BTreeMap<UploadId, UploadInfo> = BTreeMap::new();
        let mut objects = self.store.list(Some(&prefix));
        while let Some(object) = objects.next().await {
            let object = object.map_err(|error| store_error("list", &prefix, error))?;
            let Some((id, kind)) = self.keys.parse_upload(&object.location) else {
                continue;
            };
            let info = uploads.entry(id.clone()).or_insert(UploadInfo {
                id,
                length: 0,
                modified: SystemTime::UNIX_EPOCH,
            });
            if let UploadObject::Segment(_) = kind {
                info.length += object.size;
            }
            info.modified = info.modified.max(object.last_modified.into());
        }
        Ok(uploads.into_values().collect())
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        let key = self.keys.blob(digest);
        let mut options = GetOptions::default();
        // A whole blob (the usual pull) is one GET; a range needs the size first, to answer an
        // unsatisfiable one as the contract says.
        if offset != 0 || length.is_some() {
            let size = self
                .head_size(&key)
                .await?
                .ok_or_else(|| BlobError::NotFound(digest.clone()))?;
            // Offset == size is past the last byte, except for the one valid range of an empty
            // blob.
            if offset > size || (offset == size && size > 0) {
                return Err(BlobError::RangeNotSatisfiable { offset, size });
            }
            let available = size - offset;
            let length = length.map_or(available, |wanted| wanted.min(available));
            if length == 0 {
                return Ok(Box::pin(futures::stream::empty()));
            }
            options.range = Some(GetRange::Bounded(offset..offset + length));
        }
        let result = match self.store.get_opts(&key, options).await {
            Ok(result) => result,
            // Absent, or deleted since the size was read.
            Err(error) if is_not_found(&error) => return Err(BlobError::NotFound(digest.clone())),
            Err(error) => return Err(store_error("get", &key, error)),
        };
        let stream = result
            .into_stream()
            .map(move |chunk| match chunk {
                Ok(bytes) => {
                    futures::stream::iter(split_chunk(bytes).into_iter().map(Ok)).left_stream()
                }
                Err(error) => futures::stream::once(futures::future::ready(Err(store_error(
                    "read", &key, error,
                ))))
                .right_stream(),
            })
            .flatten();
        Ok(Box::pin(stream))
    }

    /// Streams `data` into the final object of `digest` and publishes it only when the bytes
    /// match; anything short of that publishes nothing.
    async fn put_replica(
        &self,
        digest: &Digest,
        mut data: ByteStream,
        mut caller_gone: oneshot::Receiver<()>,
    ) -> Result<u64, BlobError> {
        let key = self.keys.blob(digest);
        if let Some(size) = self.head_size(&key).await? {
            return Ok(size);
        }
        let mut writer = ObjectWriter::new(Arc::clone(&self.store), key);
        let mut digester = Digester::new(digest.algorithm());
        if let Err(error) = copy_stream(
            &mut writer,
            &mut data,
            Some(&mut digester),
            &mut caller_gone,
        )
        .await
        {
            writer.abort().await;
            return Err(error);
        }
        let actual = digester.finish();
        if actual != *digest {
            writer.abort().await;
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let len = writer.finish().await?;
        tracing::debug!(%digest, size = len, "replica stored");
        Ok(len)
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        let prefix = self.keys.blobs();
        let mut objects = match after {
            Some(after) => self
                .store
                .list_with_offset(Some(&prefix), &self.keys.blob(after)),
            None => self.store.list(Some(&prefix)),
        };
        let mut blobs = Vec::new();
        while blobs.len() < n {
            let Some(object) = objects.next().await else {
                break;
            };
            let object = object.map_err(|error| store_error("list", &prefix, error))?;
            if let Some(digest) = self.keys.parse_blob(&object.location) {
                blobs.push((digest, object.size));
            }
        }
        // S3 lists keys in binary order, and key order is digest order (algorithm, then hex).
        Ok(blobs)
    }

    async fn set_aside(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let (key, aside) = (self.keys.blob(digest), self.keys.aside(digest));
        let Some(size) = self.head_size(&key).await? else {
            return Ok(None);
        };
        self.copy_object(&key, &aside, size).await?;
        self.delete_key(&key).await?;
        tracing::debug!(%digest, size, "blob set aside");
        Ok(Some(size))
    }

    async fn put_back(&self, digest: &Digest) -> Result<(), BlobError> {
        let (key, aside) = (self.keys.blob(digest), self.keys.aside(digest));
        let Some(size) = self.head_size(&aside).await? else {
            return Ok(());
        };
        // A copy committed or replicated meanwhile holds the same bytes: keep it.
        if self.head_size(&key).await?.is_none() {
            self.copy_object(&aside, &key, size).await?;
        }
        self.delete_key(&aside).await?;
        tracing::debug!(%digest, "blob put back");
        Ok(())
    }
}

/// `bytes` in pieces of at most [`MAX_READ_CHUNK_BYTES`], sharing its memory.
fn split_chunk(mut bytes: Bytes) -> Vec<Bytes> {
    let mut pieces = Vec::with_capacity(bytes.len() / MAX_READ_CHUNK_BYTES + 1);
    while bytes.len() > MAX_READ_CHUNK_BYTES {
        pieces.push(bytes.split_to(MAX_READ_CHUNK_BYTES));
    }
    if !bytes.is_empty() {
        pieces.push(bytes);
    }
    pieces
}

#[async_trait]
impl BlobStore for S3BlobStore {
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
        self.inner.list_uploads().await
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        self.inner.head_size(&self.inner.keys.blob(digest)).await
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
        self.inner.delete_key(&self.inner.keys.blob(digest)).await
    }

    async fn put_replica(&self, digest: &Digest, data: ByteStream) -> Result<u64, BlobError> {
        let (inner, digest) = (Arc::clone(&self.inner), digest.clone());
        let (_caller_alive, caller_gone) = oneshot::channel();
        detached(async move { inner.put_replica(&digest, data, caller_gone).await }).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        self.inner.list_blobs(after, n).await
    }

    async fn set_aside(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let (inner, digest) = (Arc::clone(&self.inner), digest.clone());
        detached(async move { inner.set_aside(&digest).await }).await
    }

    async fn put_back(&self, digest: &Digest) -> Result<(), BlobError> {
        let (inner, digest) = (Arc::clone(&self.inner), digest.clone());
        detached(async move { inner.put_back(&digest).await }).await
    }

    async fn purge(&self, digest: &Digest) -> Result<(), BlobError> {
        self.inner.delete_key(&self.inner.keys.aside(digest)).await
    }
}

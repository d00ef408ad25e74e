//! [`MemBlobNodes`] and [`MemBlob`]: blob nodes in memory, following the [`BlobApi`] contract.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use oci_model::{Digest, RepositoryName};

use super::lock;
use crate::blob::{BlobApi, BlobNodes, ByteStream};
use crate::error::BlobError;
use crate::types::*;

/// Size of the pieces [`MemBlob::read`] streams, small enough that tests see several chunks.
const READ_CHUNK_BYTES: usize = 4096;

/// A set of in-memory blob nodes, reachable by id.
#[derive(Default)]
pub struct MemBlobNodes {
    nodes: Mutex<BTreeMap<BlobNodeId, Arc<MemBlob>>>,
}

impl MemBlobNodes {
    pub fn new() -> MemBlobNodes {
        MemBlobNodes::default()
    }

    /// Nodes with ids `ids`, all empty.
    pub fn with_nodes(ids: &[BlobNodeId]) -> MemBlobNodes {
        let nodes = MemBlobNodes::new();
        for &id in ids {
            nodes.add(id);
        }
        nodes
    }

    /// Adds (or replaces with an empty one) node `id` and returns it.
    pub fn add(&self, id: BlobNodeId) -> Arc<MemBlob> {
        let node = Arc::new(MemBlob::new(id));
        lock(&self.nodes).insert(id, node.clone());
        node
    }

    /// Node `id`, if known.
    pub fn get(&self, id: BlobNodeId) -> Option<Arc<MemBlob>> {
        lock(&self.nodes).get(&id).cloned()
    }

    /// Forgets node `id`: later `node(id)` calls fail with `Unavailable`.
    pub fn remove(&self, id: BlobNodeId) {
        lock(&self.nodes).remove(&id);
    }
}

#[async_trait]
impl BlobNodes for MemBlobNodes {
    async fn node(&self, id: BlobNodeId) -> Result<Arc<dyn BlobApi>, BlobError> {
        match self.get(id) {
            Some(node) => Ok(node),
            None => Err(BlobError::Unavailable(format!(
                "blob node {id} is not known"
            ))),
        }
    }
}

/// One blob node, in memory.
pub struct MemBlob {
    id: BlobNodeId,
    state: Mutex<BlobState>,
}

#[derive(Default)]
struct BlobState {
    uploads: HashMap<UploadId, Vec<u8>>,
    /// Uploads committed, and the blob each became.
    committed: HashMap<UploadId, Digest>,
    blobs: HashMap<Digest, Bytes>,
    outage: Option<BlobError>,
    /// When set, every read stream fails after this many bytes.
    read_fault_after: Option<u64>,
    /// What [`BlobApi::direct_url`] answers.
    direct_url: Option<String>,
}

impl MemBlob {
    pub fn new(id: BlobNodeId) -> MemBlob {
        MemBlob {
            id,
            state: Mutex::new(BlobState::default()),
        }
    }

    pub fn id(&self) -> BlobNodeId {
        self.id
    }

    /// Stores `data` as a committed blob under its sha256 digest, as replication would.
    pub fn insert_blob(&self, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        lock(&self.state)
            .blobs
            .insert(digest.clone(), Bytes::copy_from_slice(data));
        digest
    }

    /// The committed blob `digest`, if held.
    pub fn blob(&self, digest: &Digest) -> Option<Bytes> {
        lock(&self.state).blobs.get(digest).cloned()
    }

    /// The bytes staged for upload `id`, if it exists.
    pub fn staged(&self, id: &UploadId) -> Option<Vec<u8>> {
        lock(&self.state).uploads.get(id).cloned()
    }

    /// Makes the node claim an endpoint for redirected GETs at `url`.
    pub fn set_direct_url(&self, url: Option<String>) {
        lock(&self.state).direct_url = url;
    }

    /// How many uploads are staged (open), for assertions.
    pub fn staged_uploads(&self) -> usize {
        lock(&self.state).uploads.len()
    }

    /// While set, every call fails with `error`.
    pub fn set_outage(&self, error: Option<BlobError>) {
        lock(&self.state).outage = error;
    }

    /// While set, every read stream yields an `Io` error after `bytes` bytes.
    pub fn fail_reads_after(&self, bytes: Option<u64>) {
        lock(&self.state).read_fault_after = bytes;
    }

    fn state(&self) -> Result<MutexGuard<'_, BlobState>, BlobError> {
        let state = lock(&self.state);
        match &state.outage {
            Some(error) => Err(error.clone()),
            None => Ok(state),
        }
    }

    fn staged_len(&self, id: &UploadId) -> Result<u64, BlobError> {
        self.state()?
            .uploads
            .get(id)
            .map(|data| data.len() as u64)
            .ok_or_else(|| BlobError::UploadNotFound(id.to_string()))
    }
}

/// Splits `data` into the stream a read returns, failing after `fault_after` bytes if set.
fn chunked_stream(data: Bytes, fault_after: Option<u64>) -> ByteStream {
    let cut = fault_after.map_or(data.len(), |after| data.len().min(after as usize));
    let mut items: Vec<Result<Bytes, BlobError>> = Vec::new();
    let mut start = 0;
    while start < cut {
        let end = cut.min(start + READ_CHUNK_BYTES);
        items.push(Ok(data.slice(start..end)));
        start = end;
    }
    if cut < data.len() {
        items.push(Err(BlobError::Io("injected read fault".to_owned())));
    }
    Box::pin(futures::stream::iter(items))
}

#[async_trait]
impl BlobApi for MemBlob {
    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        self.state()?.uploads.entry(id.clone()).or_default();
        Ok(())
    }

    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        mut data: ByteStream,
    ) -> Result<u64, BlobError> {
        let check_offset = |current: u64| {
            if current == offset {
                Ok(())
            } else {
                Err(BlobError::OffsetMismatch {
                    expected: current,
                    given: offset,
                })
            }
        };
        check_offset(self.staged_len(id)?)?;
        // Gather the whole chunk first so that a failed stream writes nothing.
        let mut chunk = Vec::new();
        while let Some(piece) = data.next().await {
            chunk.extend_from_slice(&piece?);
        }
        let mut state = self.state()?;
        let staged = state
            .uploads
            .get_mut(id)
            .ok_or_else(|| BlobError::UploadNotFound(id.to_string()))?;
        check_offset(staged.len() as u64)?;
        staged.extend_from_slice(&chunk);
        Ok(staged.len() as u64)
    }

    async fn upload_status(&self, id: &UploadId) -> Result<u64, BlobError> {
        self.staged_len(id)
    }

    async fn commit_upload(
        &self,
        _repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
    ) -> Result<CommittedBlob, BlobError> {
        let mut state = self.state()?;
        let Some(staged) = state.uploads.get(id) else {
            let size = state
                .committed
                .get(id)
                .filter(|committed| *committed == digest)
                .and_then(|digest| state.blobs.get(digest))
                .map(|data| data.len() as u64)
                .ok_or_else(|| BlobError::UploadNotFound(id.to_string()))?;
            return Ok(CommittedBlob {
                size,
                replicas: vec![self.id],
            });
        };
        let actual = Digest::of(digest.algorithm(), staged);
        if &actual != digest {
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let data = state.uploads.remove(id).unwrap_or_default();
        let size = data.len() as u64;
        state.blobs.insert(digest.clone(), Bytes::from(data));
        state.committed.insert(id.clone(), digest.clone());
        Ok(CommittedBlob {
            size,
            replicas: vec![self.id],
        })
    }

    fn direct_url(&self) -> Option<String> {
        lock(&self.state).direct_url.clone()
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        let mut state = self.state()?;
        state.uploads.remove(id);
        state.committed.remove(id);
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        Ok(self
            .state()?
            .blobs
            .get(digest)
            .map(|data| data.len() as u64))
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        let state = self.state()?;
        let data = state
            .blobs
            .get(digest)
            .ok_or_else(|| BlobError::NotFound(digest.clone()))?;
        let size = data.len() as u64;
        if offset > size {
            return Err(BlobError::RangeNotSatisfiable { offset, size });
        }
        let end = length.map_or(size, |length| size.min(offset.saturating_add(length)));
        let window = data.slice(offset as usize..end as usize);
        Ok(chunked_stream(window, state.read_fault_after))
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        self.state()?.blobs.remove(digest);
        Ok(())
    }

    async fn put_replica(&self, digest: &Digest, mut data: ByteStream) -> Result<(), BlobError> {
        if self.state()?.blobs.contains_key(digest) {
            return Ok(());
        }
        // Gather it all first so that a failed stream stores nothing.
        let mut bytes = Vec::new();
        while let Some(piece) = data.next().await {
            bytes.extend_from_slice(&piece?);
        }
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        self.state()?
            .blobs
            .insert(digest.clone(), Bytes::from(bytes));
        Ok(())
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        let state = self.state()?;
        let mut held: Vec<(Digest, u64)> = state
            .blobs
            .iter()
            .filter(|(digest, _)| after.is_none_or(|after| *digest > after))
            .map(|(digest, data)| (digest.clone(), data.len() as u64))
            .collect();
        held.sort();
        held.truncate(n);
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: Vec<Result<Bytes, BlobError>>) -> ByteStream {
        Box::pin(futures::stream::iter(parts))
    }

    #[tokio::test]
    async fn replicas_are_verified_idempotent_and_listed_in_order() {
        let node = MemBlob::new(3);
        let digest = Digest::sha256_of(b"replica");
        let wrong = Digest::sha256_of(b"other");
        let whole = || {
            stream(vec![
                Ok(Bytes::from_static(b"repl")),
                Ok(Bytes::from_static(b"ica")),
            ])
        };
        assert!(matches!(
            node.put_replica(&wrong, whole()).await,
            Err(BlobError::DigestMismatch { .. })
        ));
        let cut = stream(vec![
            Ok(Bytes::from_static(b"re")),
            Err(BlobError::Io("cut".into())),
        ]);
        assert!(node.put_replica(&digest, cut).await.is_err());
        assert_eq!(
            node.stat(&digest).await,
            Ok(None),
            "a failed replica keeps nothing"
        );
        assert_eq!(node.put_replica(&digest, whole()).await, Ok(()));
        let unread = stream(vec![Err(BlobError::Io("not read".into()))]);
        assert_eq!(
            node.put_replica(&digest, unread).await,
            Ok(()),
            "already held"
        );
        let second = node.insert_blob(b"second");
        let mut all = vec![(digest.clone(), 7), (second, 6)];
        all.sort();
        assert_eq!(node.list_blobs(None, 10).await, Ok(all.clone()));
        assert_eq!(
            node.list_blobs(Some(&all[0].0), 10).await,
            Ok(all[1..].to_vec())
        );
        assert_eq!(node.list_blobs(None, 1).await, Ok(all[..1].to_vec()));
    }
}

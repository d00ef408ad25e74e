//! Writing one object from a stream with bounded memory: up to one part is buffered and sent as
//! a single PUT; a longer stream becomes a multipart upload with at most
//! [`PARTS_IN_FLIGHT`] parts on the wire. Either way the object appears whole or not at all
//! (S3 publishes a multipart upload only at its completion), and a writer that is aborted, or
//! dropped, publishes nothing.

use std::sync::Arc;

use bytes::Bytes;
use cluster_api::{BlobError, ByteStream};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, PutPayloadMut, WriteMultipart};
use oci_model::Digester;
use tokio::sync::oneshot;

use crate::error::store_error;

/// Size of each part of a multipart upload. S3 wants at least 5 MiB per part (but the last) and
/// at most 10,000 parts, so the largest object is about 78 GiB.
pub(crate) const PART_BYTES: usize = 8 << 20;

/// Parts of one object uploaded at once: an upload's memory stays under
/// `(PARTS_IN_FLIGHT + 1) * PART_BYTES`, about 24 MiB.
pub(crate) const PARTS_IN_FLIGHT: usize = 2;

pub(crate) struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    location: Path,
    /// Bytes not yet handed to a part (all of them while the object fits one PUT).
    buffer: PutPayloadMut,
    multipart: Option<WriteMultipart>,
    len: u64,
}

impl ObjectWriter {
    pub fn new(store: Arc<dyn ObjectStore>, location: Path) -> ObjectWriter {
        ObjectWriter {
            store,
            location,
            buffer: PutPayloadMut::new(),
            multipart: None,
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.len += chunk.len() as u64;
        if let Some(multipart) = &mut self.multipart {
            multipart
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|error| store_error("upload part of", &self.location, error))?;
            multipart.put(chunk);
            return Ok(());
        }
        self.buffer.push(chunk);
        if self.buffer.content_length() >= PART_BYTES {
            let upload = self
                .store
                .put_multipart(&self.location)
                .await
                .map_err(|error| store_error("start multipart upload of", &self.location, error))?;
            let mut multipart = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let buffered: PutPayload = std::mem::take(&mut self.buffer).freeze();
            for bytes in buffered.iter() {
                multipart.put(bytes.clone());
            }
            self.multipart = Some(multipart);
        }
        Ok(())
    }

    /// Publishes the object with every byte written.
    pub async fn finish(self) -> Result<u64, BlobError> {
        let location = self.location;
        match self.multipart {
            Some(multipart) => multipart
                .finish()
                .await
                .map_err(|error| store_error("complete multipart upload of", &location, error))?,
            None => self
                .store
                .put(&location, self.buffer.freeze())
                .await
                .map_err(|error| store_error("put", &location, error))?,
        };
        Ok(self.len)
    }

    /// Publishes nothing; parts already sent are dropped by the store.
    pub async fn abort(self) {
        if let Some(multipart) = self.multipart {
            if let Err(error) = multipart.abort().await {
                // The parts stay until the bucket's lifecycle rule for incomplete multipart
                // uploads removes them; nothing can read them meanwhile.
                tracing::warn!(location = %self.location, %error, "could not abort a multipart upload");
            }
        }
    }
}

/// Feeds `data` to `writer`, hashing every byte into `hash` (when given), until the stream ends, fails, or
/// `caller_gone` resolves (the caller stopped waiting: aborted like a failed stream).
pub(crate) async fn copy_stream(
    writer: &mut ObjectWriter,
    data: &mut ByteStream,
    mut hash: Option<&mut Digester>,
    caller_gone: &mut oneshot::Receiver<()>,
) -> Result<(), BlobError> {
    let copy = async {
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            if chunk.is_empty() {
                continue;
            }
            if let Some(hash) = hash.as_mut() {
                hash.update(&chunk);
            }
            writer.write(chunk).await?;
        }
        Ok(())
    };
    tokio::select! {
        copied = copy => copied,
        _ = caller_gone => Err(BlobError::Unavailable("the caller stopped waiting".into())),
    }
}

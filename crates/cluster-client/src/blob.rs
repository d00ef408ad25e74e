//! [`BlobClient`]: `BlobApi` over gRPC for one blob node.

use std::future::Future;

use async_trait::async_trait;
use bytes::Bytes;
use cluster_api::{declared_length, BlobApi, BlobError, ByteStream, CommittedBlob, UploadId};
use futures::StreamExt;
use oci_model::{Digest, RepositoryName};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use wharf_proto::pb;
use wharf_proto::status::status_to_blob_error;

type PbBlobClient = pb::blob_client::BlobClient<crate::TracedChannel>;

/// A client of one blob node.
#[derive(Clone)]
pub struct BlobClient {
    client: PbBlobClient,
    /// The node's endpoint for redirected GETs, as the cluster map lists it.
    direct_url: Option<String>,
}

impl BlobClient {
    pub fn new(channel: Channel) -> BlobClient {
        let client = PbBlobClient::new(crate::traced(channel))
            .max_decoding_message_size(wharf_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(wharf_proto::MAX_MESSAGE_BYTES);
        BlobClient {
            client,
            direct_url: None,
        }
    }

    /// This client, knowing the node's endpoint for redirected blob GETs.
    pub fn with_direct_url(mut self, url: Option<String>) -> BlobClient {
        self.direct_url = url;
        self
    }

    pub fn connect_lazy(addr: &str) -> Result<BlobClient, crate::ChannelError> {
        Ok(BlobClient::new(crate::lazy_channel(addr)?))
    }
}

impl BlobClient {
    /// One `AppendUpload` call: at `offset`, or at the upload's end when `None`.
    async fn append(
        &self,
        id: &UploadId,
        offset: Option<u64>,
        data: ByteStream,
    ) -> Result<u64, BlobError> {
        let header = pb::AppendChunk {
            id: id.to_string(),
            offset,
            data: Bytes::new(),
            commit_digest: String::new(),
            commit_repo: String::new(),
            declared_length: declared_length(&data),
        };
        let mut client = self.client.clone();
        streaming_call(data, header, append_chunk, |requests| async move {
            let response = client.append_upload(requests).await?;
            Ok(response.into_inner().length)
        })
        .await
    }
}

fn status_error(status: tonic::Status) -> BlobError {
    status_to_blob_error(&status)
}

/// Feeds `header`, then every chunk of `data` wrapped by `wrap`, into the request channel. On a
/// source error it reports the error and returns while still holding the sender open, so the
/// request never ends cleanly; the caller then drops the call, which resets the stream.
async fn pump_chunks<M>(
    mut data: ByteStream,
    header: M,
    wrap: fn(Bytes) -> M,
    chunks: mpsc::Sender<M>,
    failed: oneshot::Sender<BlobError>,
) {
    if chunks.send(header).await.is_err() {
        return;
    }
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(data) => {
                if chunks.send(wrap(data)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = failed.send(error);
                // Keep the request open until the caller abandons the call.
                return futures::future::pending::<()>().await;
            }
        }
    }
}

/// Runs a client-streaming call fed from `data`. If `data` fails mid-way, the call is abandoned
/// (the HTTP/2 stream is reset) rather than ended, so the node sees an error and keeps nothing
/// partial, and the source's error is returned.
async fn streaming_call<M, T, Call, Reply>(
    data: ByteStream,
    header: M,
    wrap: fn(Bytes) -> M,
    call: Call,
) -> Result<T, BlobError>
where
    M: Send + 'static,
    Call: FnOnce(ReceiverStream<M>) -> Reply,
    Reply: Future<Output = Result<T, tonic::Status>>,
{
    let (chunk_tx, chunk_rx) = mpsc::channel::<M>(4);
    let (failed_tx, failed_rx) = oneshot::channel::<BlobError>();
    let pump = tokio::spawn(pump_chunks(data, header, wrap, chunk_tx, failed_tx));
    let result = tokio::select! {
        response = call(ReceiverStream::new(chunk_rx)) => response.map_err(status_error),
        Ok(error) = failed_rx => Err(error),
    };
    pump.abort();
    result
}

fn append_chunk(data: Bytes) -> pb::AppendChunk {
    pb::AppendChunk {
        id: String::new(),
        offset: None,
        data,
        commit_digest: String::new(),
        commit_repo: String::new(),
        declared_length: None,
    }
}

fn replica_chunk(data: Bytes) -> pb::ReplicaChunk {
    pb::ReplicaChunk {
        digest: String::new(),
        chunk: Some(pb::BlobChunk { data }),
    }
}

fn upload(id: &UploadId) -> pb::UploadId {
    pb::UploadId { id: id.to_string() }
}

#[async_trait]
impl BlobApi for BlobClient {
    fn direct_url(&self) -> Option<String> {
        self.direct_url.clone()
    }

    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        self.client
            .clone()
            .start_upload(upload(id))
            .await
            .map_err(status_error)?;
        Ok(())
    }

    /// Streams `data` to the node. If `data` fails mid-way, the call is abandoned (the HTTP/2
    /// stream is reset) rather than ended, so the node sees an error and discards the partial
    /// append instead of keeping a truncated one.
    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, BlobError> {
        self.append(id, Some(offset), data).await
    }

    async fn append_at_end(&self, id: &UploadId, data: ByteStream) -> Result<u64, BlobError> {
        self.append(id, None, data).await
    }

    async fn upload_status(&self, id: &UploadId) -> Result<u64, BlobError> {
        let response = self
            .client
            .clone()
            .upload_status(upload(id))
            .await
            .map_err(status_error)?;
        Ok(response.into_inner().length)
    }

    async fn commit_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
    ) -> Result<CommittedBlob, BlobError> {
        let request = pb::CommitUploadRequest {
            id: id.to_string(),
            digest: digest.to_string(),
            repo: repo.to_string(),
        };
        let response = self
            .client
            .clone()
            .commit_upload(request)
            .await
            .map_err(status_error)?;
        Ok(wharf_proto::convert::committed_from_pb(
            response.into_inner(),
        ))
    }

    async fn append_and_commit(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        data: ByteStream,
        digest: &Digest,
    ) -> Result<CommittedBlob, BlobError> {
        let header = pb::AppendChunk {
            id: id.to_string(),
            offset: None,
            data: Bytes::new(),
            commit_digest: digest.to_string(),
            commit_repo: repo.to_string(),
            declared_length: declared_length(&data),
        };
        let mut client = self.client.clone();
        streaming_call(data, header, append_chunk, |requests| async move {
            let response = client.append_and_commit(requests).await?;
            Ok(wharf_proto::convert::committed_from_pb(
                response.into_inner(),
            ))
        })
        .await
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        self.client
            .clone()
            .cancel_upload(upload(id))
            .await
            .map_err(status_error)?;
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let request = pb::BlobDigest {
            digest: digest.to_string(),
        };
        let response = self
            .client
            .clone()
            .stat(request)
            .await
            .map_err(status_error)?;
        Ok(response.into_inner().size)
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        let request = pb::ReadRequest {
            digest: digest.to_string(),
            offset,
            length,
        };
        let stream = self
            .client
            .clone()
            .read(request)
            .await
            .map_err(status_error)?
            .into_inner();
        Ok(Box::pin(
            stream.map(|chunk| chunk.map(|c| c.data).map_err(status_error)),
        ))
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        let request = pb::BlobDigest {
            digest: digest.to_string(),
        };
        self.client
            .clone()
            .delete(request)
            .await
            .map_err(status_error)?;
        Ok(())
    }

    /// Streams `data` to the node; a source error abandons the call as in `append_upload`, so
    /// the node never keeps a partial replica.
    async fn put_replica(&self, digest: &Digest, data: ByteStream) -> Result<(), BlobError> {
        let header = pb::ReplicaChunk {
            digest: digest.to_string(),
            chunk: None,
        };
        let mut client = self.client.clone();
        streaming_call(data, header, replica_chunk, |requests| async move {
            client.put_replica(requests).await.map(drop)
        })
        .await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        let request = pb::ListBlobsRequest {
            after: after.map(Digest::to_string),
            limit: u32::try_from(n).unwrap_or(u32::MAX),
        };
        let response = self
            .client
            .clone()
            .list_blobs(request)
            .await
            .map_err(status_error)?;
        response
            .into_inner()
            .blobs
            .into_iter()
            .map(|held| {
                let digest = Digest::parse(&held.digest).map_err(|error| {
                    BlobError::Io(format!("blob node listed a bad digest: {error}"))
                })?;
                Ok((digest, held.size))
            })
            .collect()
    }
}

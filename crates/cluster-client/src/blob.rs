//! [`BlobClient`]: `BlobApi` over gRPC for one blob node.

use async_trait::async_trait;
use cluster_api::{BlobApi, BlobError, ByteStream, CommittedBlob, UploadId};
use futures::StreamExt;
use oci_model::Digest;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use wharf_proto::pb;
use wharf_proto::status::status_to_blob_error;

type PbBlobClient = pb::blob_client::BlobClient<Channel>;

/// A client of one blob node.
#[derive(Clone)]
pub struct BlobClient {
    client: PbBlobClient,
}

impl BlobClient {
    pub fn new(channel: Channel) -> BlobClient {
        let client = PbBlobClient::new(channel)
            .max_decoding_message_size(wharf_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(wharf_proto::MAX_MESSAGE_BYTES);
        BlobClient { client }
    }

    pub fn connect_lazy(addr: &str) -> Result<BlobClient, crate::ChannelError> {
        Ok(BlobClient::new(crate::lazy_channel(addr)?))
    }
}

fn status_error(status: tonic::Status) -> BlobError {
    status_to_blob_error(&status)
}

/// Feeds `data` into the request channel. On a source error it reports the error and returns
/// while still holding the sender open, so the request never ends cleanly; the caller then drops
/// the call, which resets the stream.
async fn pump_chunks(
    mut data: ByteStream,
    header: pb::AppendChunk,
    chunks: mpsc::Sender<pb::AppendChunk>,
    failed: oneshot::Sender<BlobError>,
) {
    if chunks.send(header).await.is_err() {
        return;
    }
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(data) => {
                let message = pb::AppendChunk {
                    id: String::new(),
                    offset: 0,
                    data,
                };
                if chunks.send(message).await.is_err() {
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

fn upload(id: &UploadId) -> pb::UploadId {
    pb::UploadId { id: id.to_string() }
}

#[async_trait]
impl BlobApi for BlobClient {
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
        let (chunk_tx, chunk_rx) = mpsc::channel::<pb::AppendChunk>(4);
        let (failed_tx, failed_rx) = oneshot::channel::<BlobError>();
        let header = pb::AppendChunk {
            id: id.to_string(),
            offset,
            data: bytes::Bytes::new(),
        };
        let pump = tokio::spawn(pump_chunks(data, header, chunk_tx, failed_tx));
        let mut client = self.client.clone();
        let result = tokio::select! {
            response = client.append_upload(ReceiverStream::new(chunk_rx)) => {
                response.map(|r| r.into_inner().length).map_err(status_error)
            }
            Ok(error) = failed_rx => Err(error),
        };
        pump.abort();
        result
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
        id: &UploadId,
        digest: &Digest,
    ) -> Result<CommittedBlob, BlobError> {
        let request = pb::CommitUploadRequest {
            id: id.to_string(),
            digest: digest.to_string(),
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
}

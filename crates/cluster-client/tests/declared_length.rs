//! A body's declared length crosses gRPC (`AppendChunk.declared_length`), so a blob node behind
//! the network refuses a push that cannot fit on its disk before reading a byte of it, as a node
//! in the same process does (issue 15, part 5).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cluster_api::{BlobApi, BlobError, ByteStream, UploadId};
use cluster_client::BlobClient;
use futures::Stream;
use oci_model::{Digest, RepositoryName};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use wharf_proto::BlobGrpc;

/// Declares `declared` bytes and yields `data` once.
struct Declaring {
    declared: usize,
    data: Option<Bytes>,
}

impl Stream for Declaring {
    type Item = Result<Bytes, BlobError>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.data.take().map(Ok))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.declared, Some(self.declared))
    }
}

fn declaring(declared: usize, data: &'static [u8]) -> ByteStream {
    Box::pin(Declaring {
        declared,
        data: Some(Bytes::from_static(data)),
    })
}

/// A blob node on a real directory store, served over gRPC on loopback; a client to it.
async fn remote_node(dir: &tempfile::TempDir) -> (BlobClient, tokio::task::JoinHandle<()>) {
    let config = blob_node::BlobNodeConfig::new(dir.path(), "127.0.0.1:1");
    let node = blob_node::BlobNode::open(&config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(BlobGrpc::new(Arc::new(node)).into_server())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let client = BlobClient::connect_lazy(&addr.to_string()).unwrap();
    (client, server)
}

#[tokio::test]
async fn a_declared_length_that_cannot_fit_is_refused_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server) = remote_node(&dir).await;
    let id = UploadId("a".repeat(32));
    client.start_upload(&id).await.unwrap();

    // More than any disk here holds: refused as full before a byte is stored (without the
    // declaration the node would take the three bytes sent).
    let data = declaring(usize::MAX / 2, b"abc");
    match client.append_upload(&id, 0, data).await {
        Err(BlobError::Full(message)) => assert!(message.contains("do not fit"), "{message}"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(client.upload_status(&id).await.unwrap(), 0);

    // The same through the append-and-commit call of a monolithic push.
    let data = declaring(usize::MAX / 2, b"abc");
    let repo = RepositoryName::parse("team/app").unwrap();
    let digest = Digest::sha256_of(b"abc");
    assert!(matches!(
        client.append_and_commit(&repo, &id, data, &digest).await,
        Err(BlobError::Full(_))
    ));

    // A declared length that fits goes through, and the upload commits.
    let data = declaring(3, b"abc");
    assert_eq!(client.append_upload(&id, 0, data).await.unwrap(), 3);
    let committed = client.commit_upload(&repo, &id, &digest).await.unwrap();
    assert_eq!(committed.size, 3);
    server.abort();
}

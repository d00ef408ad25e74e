//! Request bodies: blob bytes are streamed to a blob node as a [`ByteStream`] whose length is
//! checked against what the client declared; manifests are read whole under a size cap.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use cluster_api::{BlobError, ByteStream};
use futures::{Stream, StreamExt};
use oci_model::ErrorCode;

use crate::error::ApiError;

/// What went wrong with a request body, as opposed to the blob node it was streamed to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyFault {
    /// The body ended before the declared length (a truncated request).
    Short { declared: u64, received: u64 },
    /// The body carried more than the declared length.
    Long { declared: u64 },
    /// Reading from the client failed (connection reset, malformed chunking).
    Read(String),
}

/// Tells whether a streamed append failed because of the request body.
#[derive(Clone, Default)]
pub(crate) struct BodyWatch(Arc<Mutex<Option<BodyFault>>>);

impl BodyWatch {
    fn record(&self, fault: BodyFault) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.get_or_insert(fault);
    }

    /// The client-side error to report if the body was at fault, else `None`.
    pub fn fault(&self) -> Option<ApiError> {
        let slot = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.as_ref().map(|fault| match fault {
            BodyFault::Short { declared, received } => ApiError::new(
                ErrorCode::SizeInvalid,
                format!("request body ended after {received} of {declared} declared bytes"),
            ),
            BodyFault::Long { declared } => ApiError::new(
                ErrorCode::SizeInvalid,
                format!("request body is longer than the {declared} declared bytes"),
            ),
            BodyFault::Read(cause) => ApiError::new(
                ErrorCode::BlobUploadInvalid,
                format!("reading the request body failed: {cause}"),
            ),
        })
    }
}

/// Streams `body` as blob bytes. When `declared` is known, a body of any other length ends the
/// stream with an error, so the blob node's all-or-nothing append writes nothing.
pub(crate) fn blob_stream(body: Body, declared: Option<u64>) -> (ByteStream, BodyWatch) {
    let watch = BodyWatch::default();
    let stream = CheckedBody {
        inner: body.into_data_stream(),
        declared,
        received: 0,
        watch: watch.clone(),
        finished: false,
        bytes_in: metrics::counter!("wharf_gateway_bytes_in_total"),
    };
    (Box::pin(stream), watch)
}

struct CheckedBody {
    inner: BodyDataStream,
    declared: Option<u64>,
    received: u64,
    watch: BodyWatch,
    finished: bool,
    bytes_in: metrics::Counter,
}

impl CheckedBody {
    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Bytes, BlobError>>> {
        let message = format!("request body: {fault:?}");
        self.watch.record(fault);
        self.finished = true;
        Poll::Ready(Some(Err(BlobError::Invalid(message))))
    }
}

impl Stream for CheckedBody {
    type Item = Result<Bytes, BlobError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                if let Some(declared) = self.declared.filter(|declared| self.received > *declared) {
                    return self.fail(BodyFault::Long { declared });
                }
                self.bytes_in.increment(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => self.fail(BodyFault::Read(error.to_string())),
            Poll::Ready(None) => match self.declared.filter(|declared| self.received < *declared) {
                Some(declared) => {
                    let received = self.received;
                    self.fail(BodyFault::Short { declared, received })
                }
                None => {
                    self.finished = true;
                    Poll::Ready(None)
                }
            },
        }
    }
}

/// How much of an oversize body is read and discarded, as a multiple of the limit, before the 413.
const DRAIN_FACTOR: u64 = 4;

/// Reads and discards up to `budget` bytes of a body we refuse, so that a client still writing it
/// reads our error instead of a reset connection. Past the budget the connection is closed.
async fn drain(stream: &mut axum::body::BodyDataStream, budget: u64) {
    let mut discarded = 0u64;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while discarded <= budget {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => discarded += chunk.len() as u64,
            _ => return,
        }
    }
}

/// Reads a manifest body of at most `limit` bytes: 413 above it (checked on the declared length
/// first, so an oversize upload is refused without being stored; its body is drained, bounded), 400 SIZE_INVALID when the body is
/// shorter or longer than its `Content-Length`.
pub(crate) async fn read_manifest(
    body: Body,
    declared: Option<u64>,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("manifest exceeds the limit of {limit} bytes"),
        )
    };
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|declared| declared > limit as u64) {
        drain(&mut stream, DRAIN_FACTOR * limit as u64).await;
        return Err(too_large());
    }
    let capacity = declared.map_or(0, |declared| declared as usize);
    let mut manifest = Vec::with_capacity(capacity);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("reading the manifest failed: {error}"),
            )
        })?;
        if manifest.len() + chunk.len() > limit {
            drain(&mut stream, DRAIN_FACTOR * limit as u64).await;
            return Err(too_large());
        }
        manifest.extend_from_slice(&chunk);
    }
    metrics::counter!("wharf_gateway_bytes_in_total").increment(manifest.len() as u64);
    match declared {
        Some(declared) if declared != manifest.len() as u64 => Err(ApiError::new(
            ErrorCode::SizeInvalid,
            format!(
                "manifest body is {} bytes, Content-Length says {declared}",
                manifest.len()
            ),
        )),
        _ => Ok(manifest),
    }
}

//! Request bodies: blob bytes are streamed to a blob node as a [`ByteStream`] whose length is
//! checked against what the client declared; manifests are read whole under a size cap.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

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

/// Tells whether a streamed append failed because of the request body, and gets back what the
/// blob node did not read of it.
#[derive(Clone, Default)]
pub(crate) struct BodyWatch {
    fault: Arc<Mutex<Option<BodyFault>>>,
    /// The body's unread rest, handed back when the stream is dropped before its end (the node
    /// refused or failed the append).
    rest: Arc<Mutex<Option<BodyDataStream>>>,
}

/// How much of an unread body is drained after a failed append so the client reads the error
/// rather than a reset connection, and for how long at most.
const UNREAD_DRAIN_BYTES: u64 = 64 << 20;
const UNREAD_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

impl BodyWatch {
    fn record(&self, fault: BodyFault) {
        let mut slot = self
            .fault
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.get_or_insert(fault);
    }

    /// Reads and discards what the append left of the body (bounded), so that the client,
    /// still sending, reads the error answer instead of a reset. Past the bound the connection
    /// closes as before.
    pub async fn drain_unread(&self) {
        let rest = self
            .rest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(mut rest) = rest {
            let deadline = tokio::time::Instant::now() + UNREAD_DRAIN_TIME;
            let mut discarded = 0u64;
            while discarded <= UNREAD_DRAIN_BYTES {
                match tokio::time::timeout_at(deadline, rest.next()).await {
                    Ok(Some(Ok(chunk))) => discarded += chunk.len() as u64,
                    _ => return,
                }
            }
        }
    }

    /// The client-side error to report if the body was at fault, else `None`.
    pub fn fault(&self) -> Option<ApiError> {
        let slot = self
            .fault
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
        inner: Some(body.into_data_stream()),
        declared,
        received: 0,
        watch: watch.clone(),
        finished: false,
        bytes_in: metrics::counter!("wharf_gateway_bytes_in_total"),
    };
    (Box::pin(stream), watch)
}

struct CheckedBody {
    /// `None` once handed back (on drop).
    inner: Option<BodyDataStream>,
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

impl Drop for CheckedBody {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(inner) = self.inner.take() {
                *self
                    .watch
                    .rest
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(inner);
            }
        }
    }
}

impl Stream for CheckedBody {
    type Item = Result<Bytes, BlobError>;

    /// Exact when the client declared the length: the blob node refuses a body that cannot fit
    /// before reading it.
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.declared {
            Some(declared) if !self.finished => {
                let left =
                    usize::try_from(declared.saturating_sub(self.received)).unwrap_or(usize::MAX);
                (left, Some(left))
            }
            _ => (0, None),
        }
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_next_unpin(cx) {
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

/// The error a request body ends with when the client sent nothing for too long.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no body bytes for {} s", .0.as_secs_f64())]
struct BodyIdle(Duration);

/// A request body that fails once the client has sent nothing for `idle`: a client that stalls
/// mid-body holds its request (and an upload's staging) for at most that long. The timer is
/// made on the first wait and pushed back whenever a frame arrives.
pub(crate) struct IdleBody {
    inner: Body,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame arrived since the timer was last set.
    moved: bool,
}

impl IdleBody {
    pub(crate) fn new(inner: Body, idle: Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            timer: None,
            moved: false,
        }
    }
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.moved = true;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                let timer = match &mut this.timer {
                    Some(timer) => {
                        if this.moved {
                            timer.as_mut().reset(deadline);
                        }
                        timer
                    }
                    None => this
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.moved = false;
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(axum::Error::new(BodyIdle(this.idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: every request body becomes an [`IdleBody`].
pub(crate) async fn idle_bodies(
    axum::extract::State(idle): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    next.run(request.map(|body| Body::new(IdleBody::new(body, idle))))
        .await
}

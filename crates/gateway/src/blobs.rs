//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, and the replica reader that streams a blob
//! from the first replica that answers and resumes from the next one at the same offset when a
//! replica fails mid-stream.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LOCATION, RANGE,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cluster_api::{BlobError, BlobInfo, BlobNodeId, BlobNodes, ByteStream};
use futures::StreamExt;
use oci_model::{range_request, Digest, ErrorCode, RangeRequest, RepositoryName};

use crate::error::ApiError;
use crate::headers::{header_text, set_header, CONTENT_DIGEST};
use crate::Gateway;

/// `GET` (or `HEAD`, without a body) of a blob linked in `repo`, honouring a single `Range`.
pub(crate) async fn get(
    gateway: &Gateway,
    repo: RepositoryName,
    digest: Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    // Only a GET may answer from the cache: a HEAD is how pushing clients decide to skip an
    // upload, so it must see a garbage-collected link at once (a stale "present" would send
    // them straight to a manifest PUT that meta refuses). A GET served from a stale entry can
    // only stream bytes a replica still holds, or fall back to meta.
    let cached = if head {
        None
    } else {
        gateway.blob_cache.get(&repo, &digest)
    };
    let blob = match &cached {
        Some(entry) => BlobInfo::clone(entry),
        None => stat(gateway, &repo, &digest).await?,
    };
    let size = blob.size;
    let (status, start, end) = match range_request(header_text(headers, &RANGE), size) {
        RangeRequest::Whole => (StatusCode::OK, 0, size),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::new(
                ErrorCode::RangeInvalid,
                format!("the blob has {size} bytes"),
            )
            .with_header(CONTENT_RANGE, &format!("bytes */{size}")))
        }
    };
    if !head && start < end && gateway.config.blob_redirect {
        if let Some(location) = redirect_location(gateway, &blob).await {
            return Ok(redirect(&location, &digest));
        }
    }
    let body = if head || start == end {
        Body::empty()
    } else {
        let reader = match ReplicaReader::open(gateway.blobs.clone(), &blob, start, end).await {
            Ok(reader) => reader,
            // The cached replicas may have moved (repair, rebalance) or the link may be gone:
            // forget the entry and ask meta once more.
            Err(_) if cached.is_some() => {
                gateway.blob_cache.invalidate(&repo, &digest);
                // A digest's size never changes, so the range computed above still holds.
                let fresh = stat(gateway, &repo, &digest).await?;
                ReplicaReader::open(gateway.blobs.clone(), &fresh, start, end).await?
            }
            Err(error) => return Err(error),
        };
        Body::from_stream(reader.into_stream())
    };
    let mut response = (status, body).into_response();
    let response_headers = response.headers_mut();
    set_header(response_headers, CONTENT_LENGTH, &(end - start).to_string());
    set_header(response_headers, CONTENT_TYPE, "application/octet-stream");
    set_header(response_headers, CONTENT_DIGEST, &digest.to_string());
    set_header(response_headers, ETAG, &format!("\"{digest}\""));
    set_header(response_headers, ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        set_header(
            response_headers,
            CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    Ok(response)
}

/// A signed URL of the blob on the first replica that serves redirected GETs and holds it, for
/// a blob large enough to be worth the client's extra round trip; `None` to proxy instead (a
/// smaller blob, no such replica, or the key not to be had from meta).
async fn redirect_location(gateway: &Gateway, blob: &BlobInfo) -> Option<String> {
    if blob.size < gateway.config.blob_redirect_min_bytes {
        return None;
    }
    let key = match gateway.blob_url_keys.key().await {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!(%error, "cannot sign blob URLs (no key from meta); proxying");
            return None;
        }
    };
    for &id in &blob.replicas {
        let Ok(node) = gateway.blobs.node(id).await else {
            continue;
        };
        let Some(base) = node.direct_url() else {
            continue;
        };
        // One cheap call, so a client is never sent to a node that is down or lost the copy
        // (a client that cannot follow through fails its pull instead of failing over).
        if !matches!(node.stat(&blob.digest).await, Ok(Some(size)) if size == blob.size) {
            continue;
        }
        let expires = unix_seconds() + gateway.config.blob_redirect_ttl_secs;
        let query = cluster_api::sign_blob_query(key, &blob.digest, expires);
        return Some(format!("{base}/blobs/{}?{query}", blob.digest));
    }
    None
}

fn redirect(location: &str, digest: &Digest) -> Response {
    metrics::counter!("wharf_gateway_blob_redirects_total").increment(1);
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let headers = response.headers_mut();
    set_header(headers, LOCATION, location);
    set_header(headers, CONTENT_DIGEST, &digest.to_string());
    set_header(headers, CONTENT_LENGTH, "0");
    response
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

/// `DELETE`: unlinks the blob from `repo` (garbage collection removes the bytes later).
pub(crate) async fn delete(
    gateway: &Gateway,
    repo: RepositoryName,
    digest: Digest,
) -> Result<Response, ApiError> {
    let unlinked = gateway.meta.unlink_blob(&repo, &digest).await;
    gateway.blob_cache.invalidate(&repo, &digest);
    unlinked?;
    Ok((StatusCode::ACCEPTED, [(CONTENT_LENGTH, "0")]).into_response())
}

/// The blob's record from meta, kept in the gateway's cache.
async fn stat(
    gateway: &Gateway,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<BlobInfo, ApiError> {
    let ticket = gateway.blob_cache.ticket();
    let blob = gateway.meta.stat_blob(repo, digest).await?;
    gateway
        .blob_cache
        .fill(ticket, repo, blob.digest.clone(), blob.clone());
    Ok(blob)
}

/// Reads bytes `position..end` of a blob from its replicas in order.
struct ReplicaReader {
    nodes: Arc<dyn BlobNodes>,
    digest: Digest,
    untried: VecDeque<BlobNodeId>,
    position: u64,
    end: u64,
    current: Option<ByteStream>,
    bytes_out: metrics::Counter,
}

impl ReplicaReader {
    /// A reader already streaming from the first replica that answers, so that a blob no replica
    /// can serve fails with an error response instead of a truncated 200.
    async fn open(
        nodes: Arc<dyn BlobNodes>,
        blob: &BlobInfo,
        start: u64,
        end: u64,
    ) -> Result<ReplicaReader, ApiError> {
        let mut reader = ReplicaReader {
            nodes,
            digest: blob.digest.clone(),
            untried: blob.replicas.iter().copied().collect(),
            position: start,
            end,
            current: None,
            bytes_out: metrics::counter!("wharf_gateway_bytes_out_total"),
        };
        reader.open_next().await.map_err(ApiError::from_blob)?;
        Ok(reader)
    }

    /// Opens the next replica that answers at the current position.
    async fn open_next(&mut self) -> Result<(), BlobError> {
        let mut last_error = None;
        while let Some(node_id) = self.untried.pop_front() {
            let length = self.end - self.position;
            let opened = match self.nodes.node(node_id).await {
                Ok(node) => node.read(&self.digest, self.position, Some(length)).await,
                Err(error) => Err(error),
            };
            match opened {
                Ok(stream) => {
                    self.current = Some(stream);
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(
                        node = node_id,
                        digest = %self.digest,
                        %error,
                        "blob replica did not answer"
                    );
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            BlobError::Unavailable(format!("no replica of {} is reachable", self.digest))
        }))
    }

    /// The next piece of the blob; `None` once `end` is reached.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BlobError>> {
        while self.position < self.end {
            let Some(stream) = self.current.as_mut() else {
                if let Err(error) = self.open_next().await {
                    // Headers are sent: all the client can see is a truncated body.
                    tracing::error!(
                        digest = %self.digest,
                        position = self.position,
                        %error,
                        "blob read failed mid-stream"
                    );
                    self.position = self.end;
                    return Some(Err(error));
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(mut chunk)) => {
                    let remaining = self.end - self.position;
                    if chunk.len() as u64 > remaining {
                        chunk.truncate(remaining as usize);
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    self.position += chunk.len() as u64;
                    self.bytes_out.increment(chunk.len() as u64);
                    return Some(Ok(chunk));
                }
                Some(Err(error)) => {
                    tracing::warn!(
                        digest = %self.digest,
                        position = self.position,
                        %error,
                        "blob replica failed; resuming from the next one"
                    );
                    self.current = None;
                }
                None => {
                    tracing::warn!(
                        digest = %self.digest,
                        position = self.position,
                        "blob replica ended early; resuming from the next one"
                    );
                    self.current = None;
                }
            }
        }
        None
    }

    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, BlobError>> + Send + 'static {
        futures::stream::unfold(self, |mut reader| async move {
            let chunk = reader.next_chunk().await?;
            Some((chunk, reader))
        })
    }
}

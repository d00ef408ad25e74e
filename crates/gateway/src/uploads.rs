//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic `?digest=`, or
//! `?mount=&from=`), and `PATCH`/`PUT`/`GET`/`DELETE /v2/<name>/blobs/uploads/<id>`.
//!
//! A session is the signed token meta mints (the upload id names its staging node, so any gateway
//! continues any upload without asking meta); the bytes go to that staging node, which checks
//! offsets, appends all-or-nothing, verifies the digest on commit and is the authority on whether
//! the upload is still open. Meta sees an upload twice: the token, and the commit.

use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cluster_api::{
    BlobApi, BlobError, BlobInfo, CommittedBlob, MetaError, UploadId, UploadSession, UploadToken,
};
use oci_model::{Digest, ErrorCode, RepositoryName};

use crate::body::{blob_stream, BodyWatch};
use crate::error::ApiError;
use crate::headers::{
    chunk_range, content_length, set_header, upload_range, CONTENT_DIGEST, UPLOAD_UUID,
};
use crate::Gateway;

/// The query of `POST /v2/<name>/blobs/uploads/`, validated.
#[derive(Debug, Default)]
pub(crate) struct StartRequest {
    /// `?digest=`: the body is the whole blob.
    pub digest: Option<Digest>,
    /// `?mount=`: link this blob from `from` instead of uploading it.
    pub mount: Option<Digest>,
    /// `?from=`; `None` when absent or not a valid name, which makes the mount fall back.
    pub from: Option<RepositoryName>,
}

/// `POST`: mounts, pushes monolithically, or opens a session, per the query.
pub(crate) async fn start(
    gateway: &Gateway,
    repo: RepositoryName,
    request: StartRequest,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let (Some(digest), Some(from)) = (&request.mount, &request.from) {
        if let Some(mounted) = mount(gateway, &repo, digest, from).await? {
            return Ok(mounted);
        }
    }
    match request.digest {
        // A `?digest=` POST without content can only be the empty blob; for any other digest
        // it is taken as a plain POST, the 202 fallback the spec gives registries.
        Some(digest) if carries_bytes(headers, &body) || digest.verifies(b"") => {
            push_whole(gateway, &repo, &digest, headers, body).await
        }
        _ => open_session(gateway, &repo).await,
    }
}

/// `PATCH`: appends one chunk (`Content-Range`) or a streamed body at the current offset.
pub(crate) async fn patch(
    gateway: &Gateway,
    repo: RepositoryName,
    id: UploadId,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let session = UploadToken::session(&repo, &id)?;
    let node = gateway.blobs.node(session.staging_node).await?;
    let length = append(node.as_ref(), &session, headers, body).await?;
    Ok((StatusCode::ACCEPTED, upload_headers(&repo, &id, length)).into_response())
}

/// `PUT ?digest=`: appends an optional last chunk, then commits the blob.
pub(crate) async fn finish(
    gateway: &Gateway,
    repo: RepositoryName,
    id: UploadId,
    digest: Digest,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let session = UploadToken::session(&repo, &id)?;
    let node = gateway.blobs.node(session.staging_node).await?;
    if let Err(error) = commit(gateway, node.as_ref(), &session, &digest, headers, body).await {
        // Like Distribution, a session whose content does not match is over; other failures
        // (an unavailable node or meta) leave it for the client to retry the PUT.
        if error.code() == ErrorCode::DigestInvalid {
            abandon(gateway, &session).await;
        }
        return Err(error);
    }
    Ok(blob_created(&repo, &digest))
}

/// `GET`: 204 with the session's `Range`, so a client can resume after a 416.
pub(crate) async fn status(
    gateway: &Gateway,
    repo: RepositoryName,
    id: UploadId,
) -> Result<Response, ApiError> {
    let session = UploadToken::session(&repo, &id)?;
    let node = gateway.blobs.node(session.staging_node).await?;
    let length = node.upload_status(&session.id).await?;
    Ok((StatusCode::NO_CONTENT, upload_headers(&repo, &id, length)).into_response())
}

/// `DELETE`: cancels the session; 404 for one already over (committed, cancelled or expired).
pub(crate) async fn cancel(
    gateway: &Gateway,
    repo: RepositoryName,
    id: UploadId,
) -> Result<Response, ApiError> {
    let session = UploadToken::session(&repo, &id)?;
    let node = gateway.blobs.node(session.staging_node).await?;
    node.upload_status(&session.id).await?;
    node.cancel_upload(&session.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Links `digest` from `from`; `None` when `from` does not have it (then a session opens).
async fn mount(
    gateway: &Gateway,
    repo: &RepositoryName,
    digest: &Digest,
    from: &RepositoryName,
) -> Result<Option<Response>, ApiError> {
    match gateway.meta.mount_blob(repo, digest, from).await {
        Ok(Some(blob)) => Ok(Some(blob_created(repo, &blob.digest))),
        Ok(None) | Err(MetaError::NameUnknown(_) | MetaError::BlobUnknown(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

async fn open_session(gateway: &Gateway, repo: &RepositoryName) -> Result<Response, ApiError> {
    let (session, _) = start_session(gateway, repo).await?;
    Ok((StatusCode::ACCEPTED, upload_headers(repo, &session.id, 0)).into_response())
}

/// How many staging nodes an upload may try before it gives up: a node that died moments ago is
/// still `Up` in the map until the failure detector marks it, so the next pick avoids it.
const STAGING_ATTEMPTS: usize = 3;

/// Opens an upload session and starts it on its staging node. A staging node that cannot be
/// reached is avoided and another one is asked for, so an upload never waits for the failure
/// detector to notice a dead node.
async fn start_session(
    gateway: &Gateway,
    repo: &RepositoryName,
) -> Result<(UploadSession, Arc<dyn BlobApi>), ApiError> {
    let mut avoid = Vec::new();
    loop {
        let session = gateway.meta.create_upload(repo, &avoid).await?;
        let started = match gateway.blobs.node(session.staging_node).await {
            Ok(node) => node.start_upload(&session.id).await.map(|()| node),
            Err(error) => Err(error),
        };
        match started {
            Ok(node) => return Ok((session, node)),
            Err(error) => {
                abandon(gateway, &session).await;
                avoid.push(session.staging_node);
                // A full node is passed over like an unreachable one.
                let elsewhere = matches!(error, BlobError::Unavailable(_) | BlobError::Full(_));
                if !elsewhere || avoid.len() >= STAGING_ATTEMPTS {
                    return Err(error.into());
                }
                tracing::warn!(node = session.staging_node, %error, "staging node unreachable; picking another");
            }
        }
    }
}

/// Monolithic `POST ?digest=`: a session the client never sees, closed whatever happens.
async fn push_whole(
    gateway: &Gateway,
    repo: &RepositoryName,
    digest: &Digest,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (session, node) = start_session(gateway, repo).await?;
    let pushed = commit(gateway, node.as_ref(), &session, digest, headers, body).await;
    if pushed.is_err() {
        abandon(gateway, &session).await;
    }
    pushed.map(|()| blob_created(repo, digest))
}

/// True when a request may carry blob bytes: a `Content-Range`, a non-zero `Content-Length`, or a
/// body of unknown length (chunked transfer) that is not already over.
fn carries_bytes(headers: &HeaderMap, body: &Body) -> bool {
    if headers.contains_key(axum::http::header::CONTENT_RANGE) {
        return true;
    }
    match content_length(headers) {
        Ok(Some(length)) => length > 0,
        Ok(None) => !body.is_end_stream(),
        // Let `append` report the malformed header.
        Err(_) => true,
    }
}

/// Streams the request body into the upload and returns its new length. With `Content-Range` the
/// chunk must start at the upload's current length (416 otherwise, nothing written) and match
/// `Content-Length` when both are sent (400 SIZE_INVALID; Distribution answers 416 there, but the
/// range itself is in order, so the size is what is wrong). Without it the body is appended at
/// the current length, which is how containers/image streams a whole blob in one PATCH.
async fn append(
    node: &dyn BlobApi,
    session: &UploadSession,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64, ApiError> {
    let declared = content_length(headers)?;
    let range = chunk_range(headers)?;
    let expected = match (range, declared) {
        (Some((start, end)), Some(length)) if length != end - start + 1 => {
            return Err(ApiError::new(
                ErrorCode::SizeInvalid,
                format!(
                    "Content-Range {start}-{end} is {} bytes, Content-Length says {length}",
                    end - start + 1
                ),
            ))
        }
        (Some((start, end)), _) => Some(end - start + 1),
        (None, declared) => declared,
    };
    if expected == Some(0) {
        return match range {
            Some((start, _)) => Ok(start),
            None => Ok(node.upload_status(&session.id).await?),
        };
    }
    let (stream, watch) = blob_stream(body, expected);
    let appended = match range {
        Some((start, _)) => node.append_upload(&session.id, start, stream).await,
        None => node.append_at_end(&session.id, stream).await,
    };
    if appended.is_err() {
        watch.drain_unread().await;
    }
    appended.map_err(|error| append_error(session, &watch, error))
}

/// What a client hears of a failed append: 416 with the upload's real length when the chunk did
/// not start there, the request body's own fault when it broke off, else the node's error.
fn append_error(session: &UploadSession, watch: &BodyWatch, error: BlobError) -> ApiError {
    match error {
        BlobError::OffsetMismatch {
            expected: current,
            given,
        } => ApiError::new(
            ErrorCode::RangeInvalid,
            format!("the chunk starts at byte {given}, but the upload holds {current} bytes"),
        )
        .with_headers(upload_headers(&session.repo, &session.id, current)),
        error => watch.fault().unwrap_or_else(|| error.into()),
    }
}

/// Verifies and stores the staged blob on its node, then records it in meta.
async fn commit(
    gateway: &Gateway,
    node: &dyn BlobApi,
    session: &UploadSession,
    digest: &Digest,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    let committed = commit_on_node(node, session, digest, headers, body).await?;
    let blob = BlobInfo {
        digest: digest.clone(),
        size: committed.size,
        replicas: committed.replicas,
        placement: Vec::new(),
    };
    match gateway
        .meta
        .commit_blob(&session.repo, blob, Some(session.id.clone()))
        .await
    {
        Ok(()) => Ok(()),
        Err(error @ (MetaError::Retry(_) | MetaError::UploadUnknown(_))) => {
            // A copy of this blob was garbage-collected while the upload ran, so the node's
            // claim cannot be trusted, or the token expired: this session can never commit;
            // the client pushes again.
            abandon(gateway, session).await;
            Err(error.into())
        }
        Err(error) => Err(error.into()),
    }
}

/// Appends the request's bytes, if any, and commits the upload on its staging node. Bytes sent
/// without `Content-Range` go with the commit in one call. Idempotent on the node: a PUT retried
/// after the node committed (and meta did not, or the answer was lost) commits again there, and
/// only for the digest this upload became.
async fn commit_on_node(
    node: &dyn BlobApi,
    session: &UploadSession,
    digest: &Digest,
    headers: &HeaderMap,
    body: Body,
) -> Result<CommittedBlob, ApiError> {
    if !carries_bytes(headers, &body) {
        return Ok(node
            .commit_upload(&session.repo, &session.id, digest)
            .await?);
    }
    if headers.contains_key(axum::http::header::CONTENT_RANGE) {
        append(node, session, headers, body).await?;
        return Ok(node
            .commit_upload(&session.repo, &session.id, digest)
            .await?);
    }
    let (stream, watch) = blob_stream(body, content_length(headers)?);
    let committed = node
        .append_and_commit(&session.repo, &session.id, stream, digest)
        .await;
    if committed.is_err() {
        watch.drain_unread().await;
    }
    committed.map_err(|error| append_error(session, &watch, error))
}

/// Closes a session that failed for good by removing its staging file, best effort: a node that
/// cannot be reached keeps it until its own cleanup of expired uploads.
async fn abandon(gateway: &Gateway, session: &UploadSession) {
    let cancelled = match gateway.blobs.node(session.staging_node).await {
        Ok(node) => node.cancel_upload(&session.id).await,
        Err(error) => Err(error),
    };
    if let Err(error) = cancelled {
        tracing::warn!(
            upload = %session.id,
            node = session.staging_node,
            %error,
            "could not cancel a staged upload"
        );
    }
}

/// `Location`, `Range` and `Docker-Upload-UUID` of an upload holding `length` bytes.
fn upload_headers(repo: &RepositoryName, id: &UploadId, length: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    set_header(
        &mut headers,
        LOCATION,
        &format!("/v2/{repo}/blobs/uploads/{id}"),
    );
    set_header(
        &mut headers,
        axum::http::header::RANGE,
        &upload_range(length),
    );
    set_header(&mut headers, UPLOAD_UUID, id.as_str());
    headers
}

/// 201 for a blob now readable at `/v2/<name>/blobs/<digest>`.
fn blob_created(repo: &RepositoryName, digest: &Digest) -> Response {
    let mut headers = HeaderMap::new();
    set_header(
        &mut headers,
        LOCATION,
        &format!("/v2/{repo}/blobs/{digest}"),
    );
    set_header(&mut headers, CONTENT_DIGEST, &digest.to_string());
    (StatusCode::CREATED, headers).into_response()
}

//! Pulls of repositories under a proxy prefix (the pull-through cache, `proxy::PullThrough`):
//! what the cluster holds is served as usual; a miss goes to the upstream through the cache.
//! Writes under a proxy prefix are refused.

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, RETRY_AFTER, WARNING};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use oci_model::{Digest, ErrorCode, Reference, RepositoryName};
use proxy::{BlobAnswer, CacheError, Route, UpstreamError};

use crate::error::ApiError;
use crate::headers::{set_header, CONTENT_DIGEST};
use crate::manifest_cache::Manifest;
use crate::{blobs, manifests, Gateway};

/// 405 for a write under a proxy prefix: the repository mirrors an upstream, and only the cache
/// writes there (UNSUPPORTED rather than DENIED: no permission would allow it).
pub(crate) fn refuse_write(repo: &RepositoryName) -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        format!(
            "{repo} is under a pull-through cache's prefix: it is pulled from its upstream and \
             cannot be pushed to or deleted from"
        ),
    )
}

/// `GET`/`HEAD` of a manifest through the cache (`route`'s cached repository).
pub(crate) async fn manifest(
    gateway: &Gateway,
    route: &Route,
    reference: Reference,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let repo = route.cache_repo.clone();
    if let Reference::Digest(digest) = &reference {
        // Immutable: the cluster's copy, when it has one, is the answer.
        match manifests::get(gateway, repo.clone(), reference.clone(), headers, head).await {
            Err(error) if unknown(&error) => {}
            answered => {
                if answered.is_ok() {
                    gateway.pull_through.touch(&repo, digest);
                }
                return answered;
            }
        }
    }
    let answer = gateway
        .pull_through
        .manifest(route, &reference)
        .await
        .map_err(cache_error)?;
    let manifest = Manifest::from(answer.manifest);
    if !manifests::negotiable(&reference, &manifest.media_type, headers) {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {reference} is a {}, which the request's Accept header does not admit",
                manifest.media_type
            ),
        ));
    }
    let mut response = manifests::manifest_response(&manifest, head);
    if let Some(reason) = answer.stale {
        // RFC 9111 obsoleted Warning, but clients and proxies still log it; 110 "Response is Stale".
        let text = reason.replace(['"', '\\'], "'");
        set_header(
            response.headers_mut(),
            WARNING,
            &format!("110 wharf \"{text}\""),
        );
    }
    Ok(response)
}

/// `GET`/`HEAD` of a blob through the cache (`route`'s cached repository).
pub(crate) async fn blob(
    gateway: &Gateway,
    route: &Route,
    digest: Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let repo = route.cache_repo.clone();
    match blobs::get(gateway, repo.clone(), digest.clone(), headers, head).await {
        Err(error) if unknown(&error) => {}
        answered => {
            if let Ok(response) = &answered {
                proxy::count_hit("blob");
                let length = response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
                if let (false, Some(length)) = (head, length) {
                    metrics::counter!("wharf_proxy_served_bytes_total").increment(length);
                }
            }
            return answered;
        }
    }
    let answer = gateway
        .pull_through
        .blob(route, &digest, head)
        .await
        .map_err(cache_error)?;
    let (size, body) = match answer {
        // Committed by another gateway's fetch meanwhile.
        BlobAnswer::Cached(_) => return blobs::get(gateway, repo, digest, headers, head).await,
        BlobAnswer::Upstream { size } => (size, Body::empty()),
        BlobAnswer::Fetching { size, body } => (size, Body::from_stream(body)),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let response_headers = response.headers_mut();
    if let Some(size) = size {
        set_header(response_headers, CONTENT_LENGTH, &size.to_string());
    }
    set_header(response_headers, CONTENT_TYPE, "application/octet-stream");
    set_header(response_headers, CONTENT_DIGEST, &digest.to_string());
    set_header(response_headers, ETAG, &format!("\"{digest}\""));
    Ok(response)
}

/// Whether a local read found nothing (so the upstream may have it).
pub(crate) fn unknown(error: &ApiError) -> bool {
    matches!(
        error.code(),
        ErrorCode::ManifestUnknown | ErrorCode::BlobUnknown | ErrorCode::NameUnknown
    )
}

/// A pull of a repository this registry does not have, through the mirror upstream when there
/// is one: `local` is what this registry answered. A mirror is best effort: when the upstream
/// does not have it or fails, the client gets `local` (a client checking a repository before its
/// first push must see a 404, whatever the upstream says).
pub(crate) async fn through_mirror<F, Fut>(
    gateway: &Gateway,
    repo: &RepositoryName,
    local: ApiError,
    pull: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Route) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    match gateway.pull_through.mirror_route(repo).await {
        Ok(Some(route)) => match pull(route).await {
            Ok(response) => Ok(response),
            Err(error) => {
                tracing::debug!(%repo, error = %error.code().info().code, "the mirror has nothing to serve");
                Err(local)
            }
        },
        Ok(None) => Err(local),
        Err(error) => {
            tracing::warn!(%error, "cannot read the proxy upstreams");
            Err(local)
        }
    }
}

/// What a client hears when the cache has nothing to serve.
fn cache_error(error: CacheError) -> ApiError {
    let message = error.to_string();
    match error {
        CacheError::Meta(error) => ApiError::from_meta(error),
        CacheError::Blob(error) => ApiError::from_blob(error),
        CacheError::BlobNotFound { .. } => ApiError::new(ErrorCode::BlobUnknown, message),
        CacheError::ManifestNotFound { .. } => ApiError::new(ErrorCode::ManifestUnknown, message),
        CacheError::Busy(_) => ApiError::unavailable(message),
        CacheError::Upstream { error, .. } => match error {
            UpstreamError::RateLimited { retry_after } => {
                let error = ApiError::new(ErrorCode::TooManyRequests, message);
                match retry_after {
                    Some(secs) => error.with_header(RETRY_AFTER, &secs.to_string()),
                    None => error,
                }
            }
            error if error.is_transient() => ApiError::unavailable(message),
            // The upstream refused the registry's credentials, lied about a digest or sent
            // something unusable: the registry's own upstream failed, not the client.
            _ => {
                ApiError::new(ErrorCode::Unavailable, message).with_status(StatusCode::BAD_GATEWAY)
            }
        },
    }
}

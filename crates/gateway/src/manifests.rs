//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cluster_api::{MetaError, PutManifest};
use oci_model::media_type::{self, accepts};
use oci_model::{Digest, ErrorCode, ManifestError, ParsedManifest, Reference, RepositoryName};

use crate::body::read_manifest;
use crate::error::ApiError;
use crate::headers::{
    content_length, header_text, header_values, set_header, CONTENT_DIGEST, OCI_SUBJECT,
};
use crate::manifest_cache::{CachedManifest, Manifest};
use crate::Gateway;

/// `GET` (or `HEAD`, without a body) of a manifest by tag or digest.
pub(crate) async fn get(
    gateway: &Gateway,
    repo: RepositoryName,
    reference: Reference,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let manifest = lookup(gateway, &repo, &reference).await?;
    if !negotiable(&reference, &manifest.media_type, headers) {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {reference} is a {}, which the request's Accept header does not admit",
                manifest.media_type
            ),
        ));
    }
    metrics::counter!("wharf_gateway_bytes_out_total").increment(if head {
        0
    } else {
        manifest.bytes.len() as u64
    });
    Ok(manifest_response(&manifest, head))
}

/// By digest from the gateway's cache when it has the manifest; otherwise (and always by tag,
/// since tags move) from meta, filling the cache entry of the digest read.
async fn lookup(
    gateway: &Gateway,
    repo: &RepositoryName,
    reference: &Reference,
) -> Result<Arc<CachedManifest>, ApiError> {
    let cache = &gateway.manifest_cache;
    if let Reference::Digest(digest) = reference {
        if let Some(cached) = cache.get(repo, digest) {
            return Ok(cached);
        }
    }
    let ticket = cache.ticket();
    let stored = gateway.meta.get_manifest(repo, reference).await?;
    let digest = stored.digest.clone();
    Ok(cache.fill(ticket, repo, digest, stored.into()))
}

/// Whether the stored type may be served under the client's `Accept`, as Distribution decides:
/// OCI manifests and indexes only to clients that accept them; Docker types by digest always
/// (their bytes are what the digest names), by tag only when accepted (Distribution would
/// convert them to schema 1, which Wharf does not serve). No `Accept` admits everything.
pub(crate) fn negotiable(reference: &Reference, stored_type: &str, headers: &HeaderMap) -> bool {
    let is_docker_type = stored_type == media_type::DOCKER_MANIFEST
        || stored_type == media_type::DOCKER_MANIFEST_LIST;
    let by_digest = matches!(reference, Reference::Digest(_));
    (is_docker_type && by_digest) || accepts(&header_values(headers, &ACCEPT), stored_type)
}

pub(crate) fn manifest_response(manifest: &Manifest, head: bool) -> Response {
    let mut headers = HeaderMap::new();
    set_header(&mut headers, CONTENT_TYPE, &manifest.media_type);
    set_header(
        &mut headers,
        CONTENT_LENGTH,
        &manifest.bytes.len().to_string(),
    );
    set_header(&mut headers, CONTENT_DIGEST, &manifest.digest.to_string());
    set_header(&mut headers, ETAG, &format!("\"{}\"", manifest.digest));
    let body = if head {
        Body::empty()
    } else {
        Body::from(manifest.bytes.clone())
    };
    (StatusCode::OK, headers, body).into_response()
}

/// `PUT`: validates the manifest, checks the digest a by-digest PUT names, and stores it with its
/// tag and referrer entry in one meta call.
pub(crate) async fn put(
    gateway: &Gateway,
    repo: RepositoryName,
    reference: Reference,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_manifest(
        body,
        content_length(headers)?,
        gateway.config.max_manifest_bytes,
    )
    .await?;
    let parsed = ParsedManifest::parse(header_text(headers, &CONTENT_TYPE), &bytes)
        .map_err(invalid_manifest)?;
    let (digest, tag) = match reference {
        Reference::Digest(named) => {
            let actual = Digest::of(named.algorithm(), &bytes);
            if actual != named {
                return Err(ApiError::new(
                    ErrorCode::DigestInvalid,
                    format!("the manifest's digest is {actual}, not {named}"),
                ));
            }
            (named, None)
        }
        Reference::Tag(tag) => (Digest::sha256_of(&bytes), Some(tag)),
    };
    let location = format!("/v2/{repo}/manifests/{digest}");
    let request = PutManifest::from_parsed(repo.clone(), digest.clone(), tag, &parsed, bytes);
    let subject = request.subject.clone();
    gateway
        .meta
        .put_manifest(request)
        .await
        .map_err(|error| match error {
            MetaError::Invalid(reason) => ApiError::new(ErrorCode::ManifestInvalid, reason),
            other => other.into(),
        })?;
    // Same digest, same bytes, but meta keeps the media type of the latest PUT, and a manifest
    // without a `mediaType` field takes it from the request's Content-Type.
    gateway.manifest_cache.invalidate(&repo, &digest);
    let mut response_headers = HeaderMap::new();
    set_header(&mut response_headers, LOCATION, &location);
    set_header(&mut response_headers, CONTENT_DIGEST, &digest.to_string());
    if let Some(subject) = subject {
        set_header(&mut response_headers, OCI_SUBJECT, &subject.to_string());
    }
    Ok((StatusCode::CREATED, response_headers).into_response())
}

fn invalid_manifest(error: ManifestError) -> ApiError {
    match error {
        ManifestError::TooLarge(_) => ApiError::new(ErrorCode::PayloadTooLarge, error.to_string()),
        other => ApiError::new(ErrorCode::ManifestInvalid, other.to_string()),
    }
}

/// `DELETE`: by digest removes the manifest (and its tags); by tag removes only the tag.
pub(crate) async fn delete(
    gateway: &Gateway,
    repo: RepositoryName,
    reference: Reference,
) -> Result<Response, ApiError> {
    match &reference {
        Reference::Digest(digest) => {
            let deleted = gateway.meta.delete_manifest(&repo, digest).await;
            // Not just this digest: the delete also removes, in the same entry, manifests that
            // lived only through it (an index's untagged children, its untagged referrers).
            gateway.manifest_cache.invalidate_repo(&repo);
            deleted?
        }
        // The manifest stays, so its cache entry does too; by-tag reads never use the cache.
        Reference::Tag(tag) => gateway.meta.delete_tag(&repo, tag).await?,
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

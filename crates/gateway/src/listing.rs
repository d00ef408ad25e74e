//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, both paged with `n` and `last` and a
//! `Link: <...>; rel="next"` header while more entries follow.

use axum::http::header::LINK;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cluster_api::{MetaError, Page};
use oci_model::{ErrorCode, RepositoryName};
use serde::Serialize;

use crate::error::ApiError;
use crate::headers::set_header;
use crate::Gateway;

/// The paging query: `n` (already checked to be a number) and `last`.
#[derive(Debug, Default)]
pub(crate) struct PageRequest {
    pub n: Option<usize>,
    pub last: Option<String>,
}

impl PageRequest {
    /// The page size served: `n` clamped to the configured maximum, or the default without `n`.
    fn size(&self, gateway: &Gateway) -> usize {
        let config = &gateway.config;
        self.n
            .unwrap_or(config.default_page_size)
            .min(config.max_page_size)
    }
}

#[derive(Serialize)]
struct TagList {
    name: String,
    tags: Vec<String>,
}

#[derive(Serialize)]
struct Catalog {
    repositories: Vec<String>,
}

/// `GET /v2/<name>/tags/list`: 404 NAME_UNKNOWN for a repository that does not exist.
pub(crate) async fn tags(
    gateway: &Gateway,
    repo: RepositoryName,
    request: PageRequest,
) -> Result<Response, ApiError> {
    let size = request.size(gateway);
    let page = gateway
        .meta
        .list_tags(&repo, request.last.as_deref(), size)
        .await
        .map_err(invalid_paging)?;
    let link = next_link(&format!("/v2/{repo}/tags/list"), size, &page);
    let body = TagList {
        name: repo.to_string(),
        tags: page.items,
    };
    Ok(with_link(Json(body), link))
}

/// `GET /v2/_catalog`.
/// `filter`, when auth is on, keeps the repositories the caller may pull: pages are read from
/// meta until `size` visible names are found or the catalog ends, so paging stays exact.
pub(crate) async fn catalog(
    gateway: &Gateway,
    request: PageRequest,
    filter: Option<&(dyn Fn(&str) -> bool + Sync)>,
) -> Result<Response, ApiError> {
    let size = request.size(gateway);
    let page = match filter {
        None => gateway
            .meta
            .list_repositories(request.last.as_deref(), size)
            .await
            .map_err(invalid_paging)?,
        Some(visible) => {
            // One visible name beyond the page tells whether another page follows.
            let mut items = Vec::new();
            let mut last = request.last.clone();
            while items.len() <= size {
                let batch = gateway
                    .meta
                    .list_repositories(last.as_deref(), size.clamp(100, 1000))
                    .await
                    .map_err(invalid_paging)?;
                last = batch.items.last().cloned();
                items.extend(batch.items.into_iter().filter(|name| visible(name)));
                if !batch.more || last.is_none() {
                    break;
                }
            }
            let more = items.len() > size;
            items.truncate(size);
            Page { items, more }
        }
    };
    let link = next_link("/v2/_catalog", size, &page);
    let body = Catalog {
        repositories: page.items,
    };
    Ok(with_link(Json(body), link))
}

/// A paging value meta refuses is the client's `n` or `last`.
fn invalid_paging(error: MetaError) -> ApiError {
    match error {
        MetaError::Invalid(reason) => ApiError::new(ErrorCode::PaginationNumberInvalid, reason),
        other => other.into(),
    }
}

/// `<path?n=<size>&last=<last returned>>; rel="next"` when more follow. Never for `n=0`, whose
/// answer must be an empty list without a `Link`.
fn next_link(path: &str, size: usize, page: &Page) -> Option<String> {
    let last = page.items.last().filter(|_| page.more && size > 0)?;
    let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    Some(format!("<{path}?n={size}&last={last}>; rel=\"next\""))
}

fn with_link(body: impl IntoResponse, link: Option<String>) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(link) = link {
        set_header(&mut headers, LINK, &link);
    }
    (StatusCode::OK, headers, body).into_response()
}

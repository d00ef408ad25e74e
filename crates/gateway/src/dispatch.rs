//! The one handler behind every path: it parses the route, checks the method, validates the path
//! and query parameters (the "decode" of STYLE rule 1) and calls the endpoint's module.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cluster_api::UploadId;
use oci_model::{Digest, ErrorCode, Reference, RepositoryName, Tag};

use crate::error::ApiError;
use crate::listing::PageRequest;
use crate::observe::RouteKind;
use crate::route::Route;
use crate::uploads::StartRequest;
use crate::{blobs, listing, manifests, referrers, uploads, Gateway};

pub(crate) async fn handle(State(gateway): State<Gateway>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(route) = Route::parse(parts.uri.path()) else {
        return ApiError::unknown_path(parts.uri.path()).into_response();
    };
    let span = tracing::Span::current();
    span.record("route", route.kind());
    if let Some(name) = route.name() {
        span.record("repo", name);
    }
    let kind = RouteKind(route.kind());
    let mut response = call(&gateway, route, &parts, body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(kind);
    response
}

async fn call(
    gateway: &Gateway,
    route: Route,
    parts: &Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let method = &parts.method;
    if !route.allows(method) {
        return Err(ApiError::method_not_allowed(
            method.as_str(),
            route.allowed(),
        ));
    }
    let query = Query::parse(parts.uri.query());
    let headers = &parts.headers;
    let head = method == Method::HEAD;
    match route {
        Route::Base => Ok(Json(serde_json::json!({})).into_response()),
        Route::Catalog => listing::catalog(gateway, query.page()?).await,
        Route::Tags { name } => listing::tags(gateway, repository(&name)?, query.page()?).await,
        Route::Referrers { name, digest } => {
            let artifact_type = query.get("artifactType").map(str::to_owned);
            referrers::list(
                gateway,
                repository(&name)?,
                digest_param(&digest)?,
                artifact_type,
            )
            .await
        }
        Route::Blob { name, digest } => {
            let (repo, digest) = (repository(&name)?, digest_param(&digest)?);
            match *method {
                Method::DELETE => blobs::delete(gateway, repo, digest).await,
                _ => blobs::get(gateway, repo, digest, headers, head).await,
            }
        }
        Route::UploadStart { name } => {
            uploads::start(gateway, repository(&name)?, query.start()?, headers, body).await
        }
        Route::Upload { name, id } => {
            let (repo, id) = (repository(&name)?, upload_id(&id)?);
            match *method {
                Method::PATCH => uploads::patch(gateway, repo, id, headers, body).await,
                Method::PUT => {
                    uploads::finish(gateway, repo, id, query.required_digest()?, headers, body)
                        .await
                }
                Method::DELETE => uploads::cancel(gateway, repo, id).await,
                _ => uploads::status(gateway, repo, id).await,
            }
        }
        Route::Manifest { name, reference } => {
            let (repo, reference) = (repository(&name)?, reference_param(&reference)?);
            match *method {
                Method::PUT => manifests::put(gateway, repo, reference, headers, body).await,
                Method::DELETE => manifests::delete(gateway, repo, reference).await,
                _ => manifests::get(gateway, repo, reference, headers, head).await,
            }
        }
    }
}

fn repository(name: &str) -> Result<RepositoryName, ApiError> {
    RepositoryName::parse(name)
        .map_err(|error| ApiError::new(ErrorCode::NameInvalid, error.to_string()))
}

fn digest_param(text: &str) -> Result<Digest, ApiError> {
    Digest::parse(text).map_err(|error| ApiError::new(ErrorCode::DigestInvalid, error.to_string()))
}

/// A reference with `:` is a digest (400 DIGEST_INVALID when malformed); anything else must be a
/// tag (400 MANIFEST_INVALID when malformed: the spec has no TAG_INVALID code any more, and
/// Docker's API listed a bad tag under the manifest errors).
fn reference_param(text: &str) -> Result<Reference, ApiError> {
    if text.contains(':') {
        return digest_param(text).map(Reference::Digest);
    }
    Tag::parse(text)
        .map(Reference::Tag)
        .map_err(|error| ApiError::new(ErrorCode::ManifestInvalid, error.to_string()))
}

/// Wharf issues upload ids; anything else cannot name a session and must not reach a blob node.
fn upload_id(text: &str) -> Result<UploadId, ApiError> {
    UploadId::parse(text).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BlobUploadUnknown,
            format!("upload {text:?} is not known"),
        )
    })
}

/// The decoded query string; the first value of a repeated key wins.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let pairs = raw.map(|raw| {
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect()
        });
        Query(pairs.unwrap_or_default())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// `n` and `last`; `n` that is not a non-negative integer is 400 PAGINATION_NUMBER_INVALID.
    fn page(&self) -> Result<PageRequest, ApiError> {
        let n = self
            .get("n")
            .map(|text| {
                text.parse::<usize>().map_err(|_| {
                    ApiError::new(
                        ErrorCode::PaginationNumberInvalid,
                        format!("n must be a non-negative integer, not {text:?}"),
                    )
                })
            })
            .transpose()?;
        let last = self
            .get("last")
            .filter(|last| !last.is_empty())
            .map(str::to_owned);
        Ok(PageRequest { n, last })
    }

    /// `digest`, `mount` (both 400 DIGEST_INVALID when malformed) and `from` (ignored when
    /// malformed, so the mount falls back to a new session as the spec allows).
    fn start(&self) -> Result<StartRequest, ApiError> {
        Ok(StartRequest {
            digest: self.get("digest").map(digest_param).transpose()?,
            mount: self.get("mount").map(digest_param).transpose()?,
            from: self
                .get("from")
                .and_then(|from| RepositoryName::parse(from).ok()),
        })
    }

    /// The `digest` a closing `PUT` must carry.
    fn required_digest(&self) -> Result<Digest, ApiError> {
        let text = self.get("digest").ok_or_else(|| {
            ApiError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            )
        })?;
        digest_param(text)
    }
}

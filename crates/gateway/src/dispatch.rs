//! The one handler behind every path: it parses the route, checks the method, validates the path
//! and query parameters (the "decode" of STYLE rule 1) and calls the endpoint's module.

use std::net::{IpAddr, SocketAddr};

use auth::{ActionSet, Principal};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cluster_api::UploadId;
use oci_model::{Digest, ErrorCode, Reference, RepositoryName, Tag};

use crate::access::{AuthGate, Caller, Need};
use crate::audit::Event;
use crate::error::ApiError;
use crate::listing::PageRequest;
use crate::observe::RouteKind;
use crate::route::Route;
use crate::uploads::StartRequest;
use crate::{
    admin_api, blobs, listing, manifests, pull_through, referrers, token_endpoint, uploads, Gateway,
};

pub(crate) async fn handle(State(gateway): State<Gateway>, request: Request) -> Response {
    let client = client_ip(&request);
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
    let audited = audited(&route, &parts.method);
    let (result, actor) = match &gateway.auth {
        None => (
            limited(&gateway, route, &parts, body, None, client).await,
            None,
        ),
        Some(gate) => match gate.authenticate(&parts.headers, client).await {
            Ok(caller) => {
                let actor = caller.principal.name().to_owned();
                let checked = Some((&**gate, &caller));
                let result = limited(&gateway, route, &parts, body, checked, client).await;
                (result, Some(actor))
            }
            Err(error) => (Err(error), None),
        },
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    let status = response.status().as_u16();
    if let Some((action, repository, target)) = audited {
        let refused = status == 401 || status == 403;
        if response.status().is_success() || refused {
            gateway.audit.record(Event {
                actor: actor.as_deref().unwrap_or("anonymous"),
                client,
                action: if refused { "denied" } else { action },
                repository: &repository,
                target: &target,
                status,
            });
        }
    }
    response.extensions_mut().insert(kind);
    response
}

/// `/auth/token`; 404 when auth is off.
pub(crate) async fn token(State(gateway): State<Gateway>, request: Request) -> Response {
    outside_v2(gateway, request, true).await
}

/// `/admin/v1/...`; 404 when auth is off.
pub(crate) async fn admin(State(gateway): State<Gateway>, request: Request) -> Response {
    outside_v2(gateway, request, false).await
}

/// The endpoints that exist only with auth on: the token endpoint, or the admin API.
async fn outside_v2(gateway: Gateway, request: Request, token: bool) -> Response {
    let client = client_ip(&request);
    let (parts, body) = request.into_parts();
    let Some(gate) = gateway.auth.clone() else {
        return ApiError::unknown_path(parts.uri.path()).into_response();
    };
    let answered = if token {
        token_endpoint::handle(&gateway, &gate, &parts, body, client).await
    } else {
        admin_api::handle(&gateway, &gate, &parts, body, client).await
    };
    answered.unwrap_or_else(IntoResponse::into_response)
}

/// 405 for a write into a repository under a proxy prefix.
async fn refuse_if_proxied(gateway: &Gateway, repo: &RepositoryName) -> Result<(), ApiError> {
    if gateway.pull_through.is_proxied(repo).await? {
        return Err(pull_through::refuse_write(repo));
    }
    Ok(())
}

/// The client's address, when the server recorded it.
fn client_ip(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// What an audited request is: (action, repository, target). Pulls are audited per manifest
/// GET (an image pull), not per blob.
fn audited(route: &Route, method: &Method) -> Option<(&'static str, String, String)> {
    match (route, method) {
        (Route::Manifest { name, reference }, &Method::GET) => {
            Some(("pull", name.clone(), reference.clone()))
        }
        (Route::Manifest { name, reference }, &Method::PUT) => {
            Some(("push", name.clone(), reference.clone()))
        }
        (Route::Manifest { name, reference }, &Method::DELETE)
        | (
            Route::Blob {
                name,
                digest: reference,
            },
            &Method::DELETE,
        ) => Some(("delete", name.clone(), reference.clone())),
        (Route::UploadStart { name }, &Method::POST) => {
            Some(("push", name.clone(), "blob upload".to_owned()))
        }
        (Route::Upload { name, .. }, &Method::PUT) => {
            Some(("push", name.clone(), "blob".to_owned()))
        }
        _ => None,
    }
}

/// What `route` needs of the caller under `method`.
fn need(route: &Route, method: &Method) -> Need {
    let repository = |name: &String, actions| Need::Repository {
        name: name.clone(),
        actions,
    };
    let read_or = |name: &String, write| {
        if *method == Method::GET || *method == Method::HEAD {
            repository(name, ActionSet::PULL)
        } else {
            repository(name, write)
        }
    };
    match route {
        Route::Base => Need::Login,
        Route::Catalog => Need::Catalog,
        Route::Tags { name } | Route::Referrers { name, .. } => repository(name, ActionSet::PULL),
        Route::Blob { name, .. } | Route::Manifest { name, .. } => {
            if *method == Method::PUT {
                repository(name, ActionSet::PUSH)
            } else {
                read_or(name, ActionSet::DELETE)
            }
        }
        Route::UploadStart { name } | Route::Upload { name, .. } => {
            repository(name, ActionSet::PUSH)
        }
    }
}

type Checked<'a> = Option<(&'a AuthGate, &'a Caller)>;

/// [`call`] once the request limits admit it (after authentication, so an exempt robot is known
/// as one); the admission's upload slots are held until the handler returns, which for an
/// upload is after its body was read.
async fn limited(
    gateway: &Gateway,
    route: Route,
    parts: &Parts,
    body: Body,
    auth: Checked<'_>,
    client: Option<IpAddr>,
) -> Result<Response, ApiError> {
    let upload = matches!(
        (&route, &parts.method),
        (Route::UploadStart { .. }, &Method::POST)
            | (Route::Upload { .. }, &Method::PATCH | &Method::PUT)
    );
    let _admitted = match &gateway.limiter {
        Some(limiter) => Some(admit(limiter, &route, upload, client, auth)?),
        None => None,
    };
    let _counted = upload.then(UploadGauge::start);
    call(gateway, route, parts, body, auth).await
}

/// `wharf_gateway_uploads_in_progress`: upload requests running on this gateway.
struct UploadGauge;

impl UploadGauge {
    fn start() -> UploadGauge {
        metrics::gauge!("wharf_gateway_uploads_in_progress").increment(1.0);
        UploadGauge
    }
}

impl Drop for UploadGauge {
    fn drop(&mut self) {
        metrics::gauge!("wharf_gateway_uploads_in_progress").decrement(1.0);
    }
}

fn admit(
    limiter: &limits::Limiter,
    route: &Route,
    upload: bool,
    client: Option<IpAddr>,
    auth: Checked<'_>,
) -> Result<limits::Admitted, ApiError> {
    let account = auth.and_then(|(_, caller)| match &caller.principal {
        Principal::Account { name, .. } => Some(name.as_str()),
        Principal::Anonymous => None,
    });
    let request = limits::Request {
        client,
        account,
        repository: route.name(),
        upload,
    };
    limiter
        .admit(&request, std::time::Instant::now())
        .map_err(|refusal| {
            metrics::counter!(
                "wharf_gateway_limited_total",
                "limit" => refusal.limit.as_str(),
                "by" => refusal.by.as_str()
            )
            .increment(1);
            ApiError::new(ErrorCode::TooManyRequests, refusal.message.clone())
                .with_header(RETRY_AFTER, &refusal.retry_after_secs().to_string())
        })
}

async fn call(
    gateway: &Gateway,
    route: Route,
    parts: &Parts,
    body: Body,
    auth: Checked<'_>,
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
    if let Some((gate, caller)) = auth {
        gate.authorize(headers, caller, &need(&route, method))?;
    }
    match route {
        Route::Base => Ok(Json(serde_json::json!({})).into_response()),
        Route::Catalog => match auth {
            Some((_, caller)) if !caller.principal.is_admin() => {
                let visible = |name: &str| caller.lists(name);
                listing::catalog(gateway, query.page()?, Some(&visible)).await
            }
            _ => listing::catalog(gateway, query.page()?, None).await,
        },
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
                Method::DELETE => {
                    refuse_if_proxied(gateway, &repo).await?;
                    blobs::delete(gateway, repo, digest).await
                }
                _ => match gateway.pull_through.route(&repo).await? {
                    Some(upstream) => {
                        pull_through::blob(gateway, &upstream, digest, headers, head).await
                    }
                    None => match blobs::get(gateway, repo.clone(), digest.clone(), headers, head)
                        .await
                    {
                        // A HEAD of a missing blob is how a pushing client decides to upload it:
                        // it never goes to the mirror (pulls GET their blobs).
                        Err(local) if !head && pull_through::unknown(&local) => {
                            let pull = move |route| async move {
                                pull_through::blob(gateway, &route, digest, headers, head).await
                            };
                            pull_through::through_mirror(gateway, &repo, local, pull).await
                        }
                        answered => answered,
                    },
                },
            }
        }
        Route::UploadStart { name } => {
            let mut start = query.start()?;
            // A mount needs pull on the source; without it the upload proceeds unmounted (the
            // spec's fallback), so nothing about the source leaks.
            if let (Some((_, caller)), Some(from)) = (auth, &start.from) {
                if !caller.allowed(from.as_str()).contains(ActionSet::PULL) {
                    start.mount = None;
                    start.from = None;
                }
            }
            let repo = repository(&name)?;
            refuse_if_proxied(gateway, &repo).await?;
            uploads::start(gateway, repo, start, headers, body).await
        }
        Route::Upload { name, id } => {
            let (repo, id) = (repository(&name)?, upload_id(&id)?);
            refuse_if_proxied(gateway, &repo).await?;
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
            let repo = repository(&name)?;
            let reference = match reference_param(&reference) {
                Ok(parsed) => parsed,
                // A reference that cannot be written names nothing stored: reads and deletes get
                // 404 MANIFEST_UNKNOWN (what the OCI conformance suite expects, and Distribution
                // answers); a PUT still learns why its reference is refused.
                Err(_) if *method != Method::PUT => {
                    return Err(ApiError::new(
                        ErrorCode::ManifestUnknown,
                        format!(
                        "manifest {reference:?} is not known: no manifest can have that reference"
                    ),
                    ))
                }
                Err(error) => return Err(error),
            };
            match *method {
                Method::PUT => {
                    refuse_if_proxied(gateway, &repo).await?;
                    manifests::put(gateway, repo, reference, headers, body).await
                }
                Method::DELETE => {
                    refuse_if_proxied(gateway, &repo).await?;
                    manifests::delete(gateway, repo, reference).await
                }
                _ => match gateway.pull_through.route(&repo).await? {
                    Some(upstream) => {
                        pull_through::manifest(gateway, &upstream, reference, headers, head).await
                    }
                    None => match manifests::get(
                        gateway,
                        repo.clone(),
                        reference.clone(),
                        headers,
                        head,
                    )
                    .await
                    {
                        Err(local) if pull_through::unknown(&local) => {
                            let pull = move |route| async move {
                                pull_through::manifest(gateway, &route, reference, headers, head)
                                    .await
                            };
                            pull_through::through_mirror(gateway, &repo, local, pull).await
                        }
                        answered => answered,
                    },
                },
            }
        }
    }
}

pub(crate) fn repository(name: &str) -> Result<RepositoryName, ApiError> {
    RepositoryName::parse(name)
        .map_err(|error| ApiError::new(ErrorCode::NameInvalid, error.to_string()))
}

pub(crate) fn digest_param(text: &str) -> Result<Digest, ApiError> {
    Digest::parse(text).map_err(|error| ApiError::new(ErrorCode::DigestInvalid, error.to_string()))
}

/// A reference with `:` is a digest (400 DIGEST_INVALID when malformed); anything else must be a
/// tag (400 MANIFEST_INVALID when malformed: the spec has no TAG_INVALID code any more, and
/// Docker's API listed a bad tag under the manifest errors). Only a PUT sees these errors; other
/// methods answer 404 MANIFEST_UNKNOWN instead (see the caller).
pub(crate) fn reference_param(text: &str) -> Result<Reference, ApiError> {
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
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw.map(|raw| {
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect()
        });
        Query(pairs.unwrap_or_default())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// `n` and `last`; `n` that is not a non-negative integer is 400 PAGINATION_NUMBER_INVALID.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
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
    pub fn start(&self) -> Result<StartRequest, ApiError> {
        Ok(StartRequest {
            digest: self.get("digest").map(digest_param).transpose()?,
            mount: self.get("mount").map(digest_param).transpose()?,
            from: self
                .get("from")
                .and_then(|from| RepositoryName::parse(from).ok()),
        })
    }

    /// The `digest` a closing `PUT` must carry.
    pub fn required_digest(&self) -> Result<Digest, ApiError> {
        let text = self.get("digest").ok_or_else(|| {
            ApiError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            )
        })?;
        digest_param(text)
    }
}

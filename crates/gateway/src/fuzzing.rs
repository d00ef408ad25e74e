//! Entry points for the fuzz targets in `fuzz/` (issue 15): the gateway's parsers of client
//! bytes, reached without a running gateway. Each is a thin call into the code the handlers
//! run; errors come back as the OCI code the client would see. Not part of the crate's API.

use std::sync::Arc;

use auth::{ActionSet, Principal, ResourceAccess, Scope};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_RANGE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use cluster_api::{AuthState, MetaApi};
use oci_model::{Digest, ErrorCode, Reference, RepositoryName};

use crate::access::{credentials, AuthGate, Caller, Credentials, Need, Snapshot};
use crate::config::AuthConfig;
use crate::dispatch::{digest_param, reference_param, repository, Query};
use crate::token_endpoint::{grant, parse_form};

/// A header map holding `value` under `name` once per item, or `None` when one is no valid
/// header value (hyper refuses such a request before the gateway sees it).
fn headers_with(name: axum::http::HeaderName, values: &[&[u8]]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(name.clone(), HeaderValue::from_bytes(value).ok()?);
    }
    Some(headers)
}

/// `Content-Range` of an upload `PATCH`: `None` for a value hyper would refuse.
pub fn chunk_range(value: &[u8]) -> Option<Result<Option<(u64, u64)>, ErrorCode>> {
    let headers = headers_with(CONTENT_RANGE, &[value])?;
    Some(crate::headers::chunk_range(&headers).map_err(|error| error.code()))
}

/// The `Accept` header values of a manifest `GET` (one per header line): whether a manifest of
/// `stored_type` may be served for `reference`. `None` for a value hyper would refuse.
pub fn negotiable(reference: &Reference, stored_type: &str, accept: &[&[u8]]) -> Option<bool> {
    let headers = headers_with(ACCEPT, accept)?;
    Some(crate::manifests::negotiable(
        reference,
        stored_type,
        &headers,
    ))
}

/// What an `Authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    None,
    Basic { user: String, secret: String },
    Bearer(String),
}

/// Reads an `Authorization` header as every request does; `Err` is the 401's message. `None`
/// for a value hyper would refuse.
pub fn authorization(value: Option<&[u8]>) -> Option<Result<Presented, String>> {
    let headers = match value {
        Some(value) => headers_with(AUTHORIZATION, &[value])?,
        None => HeaderMap::new(),
    };
    Some(credentials(&headers).map(|presented| match presented {
        Credentials::None => Presented::None,
        Credentials::Basic { user, secret } => Presented::Basic { user, secret },
        Credentials::Bearer(token) => Presented::Bearer(token),
    }))
}

/// The path parameters as the dispatcher validates them.
pub fn repository_param(name: &str) -> Result<RepositoryName, ErrorCode> {
    repository(name).map_err(|error| error.code())
}

pub fn digest_query_param(text: &str) -> Result<Digest, ErrorCode> {
    digest_param(text).map_err(|error| error.code())
}

pub fn manifest_reference(text: &str) -> Result<Reference, ErrorCode> {
    reference_param(text).map_err(|error| error.code())
}

/// A query string as the dispatcher reads it for each endpoint.
#[derive(Debug)]
pub struct QueryParams {
    /// `n` and `last` of tags/list and _catalog.
    pub page: Result<(Option<usize>, Option<String>), ErrorCode>,
    /// `digest`, `mount` and `from` of an upload's `POST`.
    pub start: Result<UploadStart, ErrorCode>,
    /// `digest` of an upload's closing `PUT`.
    pub required_digest: Result<Digest, ErrorCode>,
    /// `artifactType` of the referrers API.
    pub artifact_type: Option<String>,
}

/// The query of an upload's `POST`, validated.
#[derive(Debug, PartialEq, Eq)]
pub struct UploadStart {
    pub digest: Option<Digest>,
    pub mount: Option<Digest>,
    pub from: Option<RepositoryName>,
}

pub fn query(raw: Option<&str>) -> QueryParams {
    let query = Query::parse(raw);
    QueryParams {
        page: query
            .page()
            .map(|page| (page.n, page.last))
            .map_err(|error| error.code()),
        start: query
            .start()
            .map(|start| UploadStart {
                digest: start.digest,
                mount: start.mount,
                from: start.from,
            })
            .map_err(|error| error.code()),
        required_digest: query.required_digest().map_err(|error| error.code()),
        artifact_type: query.get("artifactType").map(str::to_owned),
    }
}

/// The token endpoint's form (a `GET` query or a `POST` body), decoded.
pub fn token_form(bytes: &[u8]) -> Vec<(String, String)> {
    parse_form(bytes)
}

/// The access-control state the token endpoint grants from.
pub struct TokenGrants(Snapshot);

impl TokenGrants {
    pub fn new(state: AuthState) -> TokenGrants {
        TokenGrants(Snapshot::new(state))
    }

    /// What a token for `principal` asking for `scopes` is granted.
    pub fn grant(&self, principal: &Principal, scopes: &[Scope]) -> Vec<ResourceAccess> {
        grant(&self.0, principal, scopes)
    }
}

/// The `WWW-Authenticate` challenges of a gateway with the default auth settings, answering an
/// anonymous caller.
pub struct Challenges {
    gate: AuthGate,
    caller: Caller,
}

impl Challenges {
    /// `meta` is only held (nothing here calls it).
    pub fn new(meta: Arc<dyn MetaApi>) -> Challenges {
        Challenges {
            gate: AuthGate::new(AuthConfig::default(), meta),
            caller: Caller {
                principal: Principal::Anonymous,
                token: None,
                snapshot: Arc::new(Snapshot::new(AuthState::default())),
            },
        }
    }

    /// The challenge answering a request to pull (or push) repository `name`, as it came in
    /// the path; `None` when the request is not refused with one.
    pub fn repository(&self, name: &str, push: bool) -> Option<String> {
        let need = Need::Repository {
            name: name.to_owned(),
            actions: if push {
                ActionSet::PUSH
            } else {
                ActionSet::PULL
            },
        };
        let refusal = self
            .gate
            .authorize(&HeaderMap::new(), &self.caller, &need)
            .err()?;
        let response = refusal.into_response();
        let challenge = response.headers().get(WWW_AUTHENTICATE)?.to_str().ok()?;
        Some(challenge.to_owned())
    }
}

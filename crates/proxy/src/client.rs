//! [`Upstream`]: a client of one upstream registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use oci_model::challenge::Challenge;
use oci_model::{media_type, Digest, Digester, Reference, RepositoryName, Tag, MAX_MANIFEST_BYTES};
use parking_lot::Mutex;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LINK, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};

/// Tokens kept at most; past it the expired ones go, and if that is not enough, all of them.
const MAX_TOKENS: usize = 1024;
/// How long a token is used when its service does not say (the Docker token spec's default).
const DEFAULT_TOKEN_SECS: u64 = 60;
/// A token is renewed this long before it expires, so it does not expire in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);
/// Characters of an upstream's error text kept in an [`UpstreamError`].
const MAX_MESSAGE: usize = 300;
/// Names one catalog or tag listing returns at most.
const MAX_LISTED: usize = 1_000_000;

/// Where an upstream is and how to log in to it.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `https://registry-1.docker.io`: scheme, host and port (no path).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for an answer's head, and then between two pieces of its body.
    pub read_timeout: Duration,
    /// Trust roots (PEM) besides the system's, for an upstream with a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

impl UpstreamConfig {
    pub fn new(url: impl Into<String>) -> UpstreamConfig {
        UpstreamConfig {
            url: url.into(),
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            ca_pem: None,
        }
    }
}

/// Why a blob push failed: the source's body (cut, or not the digest) or the registry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the source: {0}")]
    Source(UpstreamError),
    #[error("{0}")]
    Destination(UpstreamError),
}

/// The first error of a source's body, kept aside while the body is written somewhere, so that
/// a failed write can tell the source's failure (a cut, a wrong digest) from the destination's.
#[derive(Clone, Default)]
pub struct SourceFailure(std::sync::Arc<Mutex<Option<UpstreamError>>>);

impl SourceFailure {
    /// `body`, watched: its first error is kept in the returned `SourceFailure`.
    pub fn watch(
        body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    ) -> (
        BoxStream<'static, Result<Bytes, UpstreamError>>,
        SourceFailure,
    ) {
        let failure = SourceFailure::default();
        let seen = failure.clone();
        let body = body
            .map(move |piece| {
                if let Err(error) = &piece {
                    seen.0.lock().get_or_insert_with(|| error.clone());
                }
                piece
            })
            .boxed();
        (body, failure)
    }

    /// The source's error, if its body failed.
    pub fn take(&self) -> Option<UpstreamError> {
        self.0.lock().take()
    }
}

/// Why an upstream gave no content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream is not reachable: {0}")]
    Unreachable(String),
    #[error("the upstream did not answer in time: {0}")]
    Timeout(String),
    #[error("the upstream is rate-limiting this registry (429{})", retry_after.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    RateLimited { retry_after: Option<u64> },
    #[error("the upstream refused this registry's credentials: {0}")]
    Unauthorized(String),
    #[error("the upstream answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the upstream sent content of digest {actual} for {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the upstream's answer is not usable: {0}")]
    Invalid(String),
    #[error("the upstream configuration is not usable: {0}")]
    Config(String),
    #[error(
        "the upstream's TLS certificate is not trusted (a private CA is given with --ca-file): {0}"
    )]
    Untrusted(String),
}

impl UpstreamError {
    /// Whether the upstream is down, slow, overloaded or rate-limiting (where a cache serves
    /// what it has: stale-if-error), as opposed to answering that the content is not there,
    /// not allowed or wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_)
            | UpstreamError::Timeout(_)
            | UpstreamError::RateLimited { .. } => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    fn of_transport(error: reqwest::Error) -> UpstreamError {
        let text = error_chain(&error);
        if error.is_timeout() {
            UpstreamError::Timeout(text)
        } else if text.contains("invalid peer certificate") {
            // rustls refused the upstream's certificate: not a network failure but a trust
            // setting (or an impostor), which retrying will not change.
            UpstreamError::Untrusted(text)
        } else {
            UpstreamError::Unreachable(text)
        }
    }
}

/// An error and its causes, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A manifest as the upstream has it, checked against its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a `HEAD` of a manifest tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A blob's body as it arrives. The stream checks the bytes against the digest asked for: its
/// last item is an error when they do not match (or when fewer or more bytes came than the
/// upstream announced), so a consumer that stores them commits nothing unverified.
pub struct UpstreamBlob {
    /// The length the upstream announced, if it did.
    pub size: Option<u64>,
    body: BoxStream<'static, Result<Bytes, UpstreamError>>,
}

impl UpstreamBlob {
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
        self.body
    }

    /// The whole body, checked (for small blobs and tests).
    pub async fn bytes(self) -> Result<Bytes, UpstreamError> {
        let mut all = BytesMut::new();
        let mut body = self.body;
        while let Some(piece) = body.next().await {
            all.extend_from_slice(&piece?);
        }
        Ok(all.freeze())
    }
}

/// A client of one upstream registry; cheap to share (`Arc`), safe to use from many tasks.
pub struct Upstream {
    http: reqwest::Client,
    base: String,
    basic: Option<HeaderValue>,
    /// Whether the upstream asked for Basic credentials (its challenge said so once): they are
    /// then sent with every request instead of being asked for each time.
    basic_challenged: AtomicBool,
    /// Bearer tokens by scope, with the time to stop using them.
    tokens: Mutex<HashMap<String, (HeaderValue, Instant)>>,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let base = config.url.trim_end_matches('/').to_owned();
        let after_scheme = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| {
                UpstreamError::Config(format!("{} is not an http:// or https:// URL", config.url))
            })?;
        if after_scheme.is_empty() || after_scheme.contains(['/', '?', '#']) {
            return Err(UpstreamError::Config(format!(
                "{} must be a scheme, host and port only (the registry's root)",
                config.url
            )));
        }
        let basic = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| UpstreamError::Config("unusable credentials".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            (None, None) => None,
            _ => {
                return Err(UpstreamError::Config(
                    "give both a user name and a password, or neither".into(),
                ))
            }
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            for certificate in ca_certificates(pem)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|error| UpstreamError::Config(error_chain(&error)))?;
        Ok(Upstream {
            http,
            base,
            basic,
            basic_challenged: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The manifest `reference` of `repo` in one of the `accept`ed media types; `None` when the
    /// upstream does not have it.
    pub async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<Option<UpstreamManifest>, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let Some(response) = self
            .fetch(Method::GET, &path, accept, &pull_scope(repo))
            .await?
        else {
            return Ok(None);
        };
        let media_type = content_type(response.headers())?;
        let announced = announced_digest(response.headers())?;
        let bytes = read_limited(response, MAX_MANIFEST_BYTES).await?;
        let digest = match (reference, &announced) {
            (Reference::Digest(expected), _) => verified(expected, &bytes)?,
            (Reference::Tag(_), Some(announced)) => verified(announced, &bytes)?,
            (Reference::Tag(_), None) => Digest::sha256_of(&bytes),
        };
        Ok(Some(UpstreamManifest {
            digest,
            media_type,
            bytes,
        }))
    }

    /// What the manifest `reference` of `repo` is now (a tag's current digest), without its
    /// body when the upstream says the digest; `None` when it does not have it.
    pub async fn head_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<Option<ManifestHead>, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let Some(response) = self
            .fetch(Method::HEAD, &path, accept, &pull_scope(repo))
            .await?
        else {
            return Ok(None);
        };
        let headers = response.headers();
        match (announced_digest(headers)?, content_length(headers)) {
            (Some(digest), Some(size)) => Ok(Some(ManifestHead {
                digest,
                media_type: content_type(headers)?,
                size,
            })),
            // Registries need not say the digest on a HEAD: the body tells it.
            _ => Ok(self
                .manifest(repo, reference, accept)
                .await?
                .map(|manifest| ManifestHead {
                    size: manifest.bytes.len() as u64,
                    digest: manifest.digest,
                    media_type: manifest.media_type,
                })),
        }
    }

    /// Blob `digest` of `repo`, streamed and checked as it arrives; `None` when the upstream
    /// does not have it. Redirects (to a CDN or a bucket) are followed; credentials are not
    /// sent to another host.
    pub async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<UpstreamBlob>, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let Some(response) = self
            .fetch(Method::GET, &path, &[], &pull_scope(repo))
            .await?
        else {
            return Ok(None);
        };
        let size = content_length(response.headers());
        let body = response
            .bytes_stream()
            .map(|piece| piece.map_err(UpstreamError::of_transport))
            .boxed();
        Ok(Some(UpstreamBlob {
            size,
            body: checked(body, digest.clone(), size),
        }))
    }

    /// Checks that the upstream answers the API root (`GET /v2/`) and takes this registry's
    /// credentials: what `wharf admin proxy status` reports.
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        let response = self.send(Method::GET, "/v2/", &[], "").await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let message = error_message(response).await;
            return Err(UpstreamError::Unauthorized(message));
        }
        success(response).await.map(drop)
    }

    /// The size of blob `digest` of `repo` if the upstream has it (`Some(None)` when it does
    /// not say), without its body; `None` when it does not.
    pub async fn head_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Option<u64>>, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let response = self
            .fetch(Method::HEAD, &path, &[], &pull_scope(repo))
            .await?;
        Ok(response.map(|response| content_length(response.headers())))
    }

    // ---- writing (wharf mirror, replication) ----

    /// Whether the registry has manifest `digest` in `repo` (asked with push rights, the scope
    /// the writes that follow need).
    pub async fn has_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{digest}");
        let accept = media_type::MANIFEST_TYPES;
        Ok(self
            .fetch(Method::HEAD, &path, &accept, &push_scope(repo))
            .await?
            .is_some())
    }

    /// The digest tag `tag` of `repo` points at, if it exists (asked with push rights).
    pub async fn tag_digest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        accept: &[&str],
    ) -> Result<Option<Digest>, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let Some(response) = self
            .fetch(Method::HEAD, &path, accept, &push_scope(repo))
            .await?
        else {
            return Ok(None);
        };
        match announced_digest(response.headers())? {
            Some(digest) => Ok(Some(digest)),
            None => Ok(self
                .manifest(repo, &Reference::Tag(tag.clone()), accept)
                .await?
                .map(|manifest| manifest.digest)),
        }
    }

    /// Whether the registry has blob `digest` in `repo` (asked with push rights).
    pub async fn has_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        Ok(self
            .fetch(Method::HEAD, &path, &[], &push_scope(repo))
            .await?
            .is_some())
    }

    /// Uploads blob `digest` to `repo`: a session (`POST`), then the whole body in its closing
    /// `PUT`, streamed once (`size` bytes when known, else chunked). The registry verifies the
    /// digest; the body's own error (a cut or altered source) is told apart from the
    /// registry's. Returns the bytes sent.
    pub async fn push_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: Option<u64>,
        body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    ) -> Result<u64, PushError> {
        let scope = push_scope(repo);
        let started = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                &scope,
            )
            .await
            .map_err(PushError::Destination)?;
        let started = success(started).await.map_err(PushError::Destination)?;
        let location = started
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                PushError::Destination(UpstreamError::Invalid(
                    "an upload session without a Location".into(),
                ))
            })?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = if location.starts_with("http://") || location.starts_with("https://") {
            format!("{location}{separator}digest={digest}")
        } else {
            format!("{}{location}{separator}digest={digest}", self.base)
        };
        let (body, source_failure) = SourceFailure::watch(body);
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = sent.clone();
        let body = body.inspect(move |piece| {
            if let Ok(bytes) = piece {
                counted.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        });
        let mut request = self
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(size) = size {
            request = request.header(CONTENT_LENGTH, size);
        }
        if let Some(authorization) = self.known_authorization(&scope) {
            request = request.header(AUTHORIZATION, authorization);
        }
        let outcome = match request.send().await {
            Ok(response) => success(response).await.map(drop),
            Err(error) => Err(UpstreamError::of_transport(error)),
        };
        if let Some(error) = source_failure.take() {
            return Err(PushError::Source(error));
        }
        outcome.map_err(PushError::Destination)?;
        Ok(sent.load(Ordering::Relaxed))
    }

    /// Links blob `digest` into `repo` from `from`, where the registry has it
    /// (`POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`): `true` when it did (201).
    /// A registry that opens an upload instead (202: it does not have the blob there, or does
    /// not mount) gets that session cancelled, and the answer is `false`.
    pub async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let scope = push_scope(repo);
        let response = success(self.send(Method::POST, &path, &[], &scope).await?).await?;
        if response.status() == StatusCode::CREATED {
            return Ok(true);
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        if let Some(location) = location {
            // Best effort: a session left open expires at the registry on its own.
            let _ = self.send(Method::DELETE, &location, &[], &scope).await;
        }
        Ok(false)
    }

    /// Stores manifest `bytes` (of `media_type`) as `reference` of `repo`. Returns whether the
    /// registry took up the manifest's `subject` in its referrers API (it answered with an
    /// `OCI-Subject` header); a registry without that API needs the referrers tag schema kept
    /// by the client.
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<bool, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let response = self
            .send_with(
                Method::PUT,
                &path,
                &[],
                &push_scope(repo),
                Some((media_type, &bytes)),
            )
            .await?;
        let response = success(response).await?;
        Ok(response.headers().contains_key("oci-subject"))
    }

    /// Deletes `reference` of `repo` (a manifest by digest, or a tag where the registry allows
    /// it); `false` when it was not there.
    pub async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<bool, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let scope = format!("repository:{repo}:delete,pull,push");
        Ok(self
            .fetch(Method::DELETE, &path, &[], &scope)
            .await?
            .is_some())
    }

    /// The digests of the manifests that refer to `digest` in `repo` (the referrers API);
    /// `None` when the registry has no such API or no such subject.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Vec<Digest>>, UpstreamError> {
        let path = format!("/v2/{repo}/referrers/{digest}");
        let Some(response) = self
            .fetch(
                Method::GET,
                &path,
                &[media_type::OCI_INDEX],
                &pull_scope(repo),
            )
            .await?
        else {
            return Ok(None);
        };
        let body = read_limited(response, MAX_MANIFEST_BYTES).await?;
        let index: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| UpstreamError::Invalid(format!("a referrers index: {error}")))?;
        let Some(manifests) = index.get("manifests").and_then(|list| list.as_array()) else {
            return Ok(Some(Vec::new()));
        };
        manifests
            .iter()
            .map(|descriptor| {
                descriptor
                    .get("digest")
                    .and_then(|digest| digest.as_str())
                    .and_then(|digest| digest.parse().ok())
                    .ok_or_else(|| {
                        UpstreamError::Invalid("a referrer without a valid digest".into())
                    })
            })
            .collect::<Result<Vec<Digest>, _>>()
            .map(Some)
    }

    /// Every repository the upstream's catalog lists (`GET /v2/_catalog`, `page` names a
    /// request, following its `Link` headers), in its order.
    pub async fn catalog(&self, page: usize) -> Result<Vec<String>, UpstreamError> {
        let first = format!("/v2/_catalog?n={page}");
        Ok(self
            .listing(first, "registry:catalog:*", "repositories")
            .await?
            .unwrap_or_default())
    }

    /// Every tag of `repo` (`GET /v2/<name>/tags/list`, `page` a request, following `Link`);
    /// `None` when the upstream does not know the repository.
    pub async fn tags(
        &self,
        repo: &RepositoryName,
        page: usize,
    ) -> Result<Option<Vec<String>>, UpstreamError> {
        let first = format!("/v2/{repo}/tags/list?n={page}");
        self.listing(first, &pull_scope(repo), "tags").await
    }

    /// The names of a paged list, every page of it (at most [`MAX_LISTED`] names).
    async fn listing(
        &self,
        first: String,
        scope: &str,
        field: &str,
    ) -> Result<Option<Vec<String>>, UpstreamError> {
        let mut names = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let Some(response) = self.fetch(Method::GET, &path, &[], scope).await? else {
                return Ok(None);
            };
            next = next_page(response.headers());
            let body = read_limited(response, 16 << 20).await?;
            let body: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|error| UpstreamError::Invalid(format!("a {field} list: {error}")))?;
            let page = match body.get(field) {
                Some(serde_json::Value::Array(page)) => page,
                // Distribution answers `"tags": null` for a repository with none.
                Some(serde_json::Value::Null) => break,
                _ => {
                    return Err(UpstreamError::Invalid(format!(
                        "a {field} list without {field:?}"
                    )))
                }
            };
            let before = names.len();
            for name in page {
                let name = name.as_str().ok_or_else(|| {
                    UpstreamError::Invalid(format!("a {field} list with a non-string"))
                })?;
                names.push(name.to_owned());
            }
            if names.len() > MAX_LISTED {
                return Err(UpstreamError::Invalid(format!(
                    "a {field} list of more than {MAX_LISTED} names"
                )));
            }
            // A page that adds nothing ends it, whatever its Link says (no endless loop).
            if names.len() == before {
                break;
            }
        }
        Ok(Some(names))
    }

    /// [`send`](Self::send), with a 404 as `None` and any other failure as its error.
    async fn fetch(
        &self,
        method: Method,
        path: &str,
        accept: &[&str],
        scope: &str,
    ) -> Result<Option<Response>, UpstreamError> {
        let response = self.send(method, path, accept, scope).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        success(response).await.map(Some)
    }

    /// Sends a request, answering one 401 with what its challenge asks for.
    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: &[&str],
        scope: &str,
    ) -> Result<Response, UpstreamError> {
        self.send_with(method, path, accept, scope, None).await
    }

    /// [`send`](Self::send) with a body (its media type and bytes), sent again after a 401.
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        accept: &[&str],
        scope: &str,
        body: Option<(&str, &Bytes)>,
    ) -> Result<Response, UpstreamError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        // A token this scope already has, or Basic credentials the upstream asked for before;
        // otherwise nothing, and its challenge says what it wants.
        let first = self.token(scope).or_else(|| {
            self.basic
                .clone()
                .filter(|_| self.basic_challenged.load(Ordering::Relaxed))
        });
        let response = self
            .request(method.clone(), &url, accept, first.as_ref(), body)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .and_then(Challenge::parse);
        let retry = match challenge {
            Some(challenge) if challenge.is("bearer") => {
                Some(self.fetch_token(&challenge, scope).await?)
            }
            Some(challenge) if challenge.is("basic") && first != self.basic => {
                self.basic_challenged.store(true, Ordering::Relaxed);
                self.basic.clone()
            }
            _ => None,
        };
        match retry {
            Some(authorization) => {
                self.request(method, &url, accept, Some(&authorization), body)
                    .await
            }
            None => Ok(response),
        }
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        accept: &[&str],
        authorization: Option<&HeaderValue>,
        body: Option<(&str, &Bytes)>,
    ) -> Result<Response, UpstreamError> {
        let mut request = self.http.request(method, url);
        if !accept.is_empty() {
            request = request.header(ACCEPT, accept.join(", "));
        }
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        if let Some((media_type, bytes)) = body {
            request = request
                .header(CONTENT_TYPE, media_type)
                .header(CONTENT_LENGTH, bytes.len())
                .body(bytes.clone());
        }
        request.send().await.map_err(UpstreamError::of_transport)
    }

    /// The credentials for `scope` an earlier request obtained (a token, or Basic once asked
    /// for): what a request whose body cannot be sent twice goes with.
    fn known_authorization(&self, scope: &str) -> Option<HeaderValue> {
        self.token(scope).or_else(|| {
            self.basic
                .clone()
                .filter(|_| self.basic_challenged.load(Ordering::Relaxed))
        })
    }

    fn token(&self, scope: &str) -> Option<HeaderValue> {
        let tokens = self.tokens.lock();
        let (value, until) = tokens.get(scope)?;
        (Instant::now() < *until).then(|| value.clone())
    }

    /// The Docker token flow: a token for `scope` from the challenge's realm, with this
    /// upstream's credentials when it has some (anonymously otherwise).
    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<HeaderValue, UpstreamError> {
        let scope_asked = (!scope.is_empty()).then_some(scope);
        let url = challenge.token_url(scope_asked).ok_or_else(|| {
            UpstreamError::Invalid("a Bearer challenge without an http(s) realm".into())
        })?;
        let response = self
            .request(Method::GET, &url, &[], self.basic.as_ref(), None)
            .await?;
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            let message = error_message(response).await;
            return Err(UpstreamError::Unauthorized(format!(
                "its token service refused: {message}"
            )));
        }
        let body = read_limited(success(response).await?, 64 * 1024).await?;
        let body: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| UpstreamError::Invalid(format!("token service: {error}")))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|token| token.as_str())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| UpstreamError::Invalid("the token service gave no token".into()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            UpstreamError::Invalid("the token service gave an unusable token".into())
        })?;
        value.set_sensitive(true);
        let lifetime = Duration::from_secs(
            body.get("expires_in")
                .and_then(|seconds| seconds.as_u64())
                .unwrap_or(DEFAULT_TOKEN_SECS),
        );
        let until = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        let mut tokens = self.tokens.lock();
        if tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, (_, until)| *until > now);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(scope.to_owned(), (value.clone(), until));
        Ok(value)
    }
}

/// The token scope of reading `repo`.
fn pull_scope(repo: &RepositoryName) -> String {
    format!("repository:{repo}:pull")
}

/// The token scope of writing `repo` (and reading it, which a write needs too).
fn push_scope(repo: &RepositoryName) -> String {
    format!("repository:{repo}:pull,push")
}

/// The path of the next page a `Link: </v2/...?last=x&n=y>; rel="next"` header names (a path
/// on this registry; an absolute URL is taken for its path only, as the spec's examples use
/// paths).
fn next_page(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|param| {
            param
                .replace([' ', '"'], "")
                .eq_ignore_ascii_case("rel=next")
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let path = match target.find("/v2/") {
            Some(at) => &target[at..],
            None => return None,
        };
        is_next.then(|| path.to_owned())
    })
}

/// The response if it succeeded; otherwise the error it says.
/// Checks that `pem` is a CA bundle the client can use (one or more PEM certificates): how
/// many it holds, or `Config` with the reason.
pub fn check_ca_bundle(pem: &[u8]) -> Result<usize, UpstreamError> {
    ca_certificates(pem).map(|certificates| certificates.len())
}

fn ca_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, UpstreamError> {
    let certificates = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|error| UpstreamError::Config(format!("CA bundle: {}", error_chain(&error))))?;
    if certificates.is_empty() {
        return Err(UpstreamError::Config(
            "CA bundle: no PEM certificate in it".into(),
        ));
    }
    Ok(certificates)
}

async fn success(response: Response) -> Result<Response, UpstreamError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(UpstreamError::Unauthorized(error_message(response).await))
        }
        StatusCode::TOO_MANY_REQUESTS => Err(UpstreamError::RateLimited {
            retry_after: response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse().ok()),
        }),
        _ => Err(UpstreamError::Status {
            status: status.as_u16(),
            message: error_message(response).await,
        }),
    }
}

/// The first message of an OCI error body, else the start of the body, else the status.
async fn error_message(response: Response) -> String {
    let status = response.status();
    let body = read_limited(response, 16 * 1024).await.unwrap_or_default();
    let from_json = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| {
            let first = value.get("errors")?.get(0)?.clone();
            let code = first
                .get("code")
                .and_then(|code| code.as_str())
                .unwrap_or("");
            let message = first.get("message").and_then(|m| m.as_str()).unwrap_or("");
            Some(format!("{code} {message}").trim().to_owned())
        });
    let text = from_json
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
    let text = if text.is_empty() {
        status.to_string()
    } else {
        text
    };
    text.chars().take(MAX_MESSAGE).collect()
}

/// A body of at most `limit` bytes.
async fn read_limited(mut response: Response, limit: usize) -> Result<Bytes, UpstreamError> {
    if content_length(response.headers()).is_some_and(|length| length > limit as u64) {
        return Err(UpstreamError::Invalid(format!(
            "a body over {limit} bytes where at most that is allowed"
        )));
    }
    let mut body = BytesMut::new();
    while let Some(piece) = response
        .chunk()
        .await
        .map_err(UpstreamError::of_transport)?
    {
        if body.len() + piece.len() > limit {
            return Err(UpstreamError::Invalid(format!(
                "a body over {limit} bytes where at most that is allowed"
            )));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

fn content_type(headers: &HeaderMap) -> Result<String, UpstreamError> {
    let value = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(media_type::essence)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| UpstreamError::Invalid("a manifest without a Content-Type".into()))?;
    Ok(value.to_owned())
}

/// The `Docker-Content-Digest` the upstream announced, if any.
fn announced_digest(headers: &HeaderMap) -> Result<Option<Digest>, UpstreamError> {
    let Some(value) = headers.get("docker-content-digest") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| UpstreamError::Invalid("an unreadable Docker-Content-Digest".into()))?;
    Digest::parse(text.trim())
        .map(Some)
        .map_err(|error| UpstreamError::Invalid(format!("Docker-Content-Digest {text}: {error}")))
}

/// `expected` when `bytes` hash to it.
fn verified(expected: &Digest, bytes: &[u8]) -> Result<Digest, UpstreamError> {
    let actual = Digest::of(expected.algorithm(), bytes);
    if actual == *expected {
        Ok(actual)
    } else {
        Err(UpstreamError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

/// `body`, hashed as it passes: ends with an error when its bytes do not hash to `expected`
/// or do not add up to the announced `size`.
fn checked(
    body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    expected: Digest,
    size: Option<u64>,
) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    struct State {
        body: BoxStream<'static, Result<Bytes, UpstreamError>>,
        digester: Option<Digester>,
        expected: Digest,
        size: Option<u64>,
        seen: u64,
    }
    let state = State {
        body,
        digester: Some(Digester::new(expected.algorithm())),
        expected,
        size,
        seen: 0,
    };
    stream::unfold(state, |mut state| async move {
        let digester = state.digester.as_mut()?;
        match state.body.next().await {
            Some(Ok(piece)) => {
                digester.update(&piece);
                state.seen += piece.len() as u64;
                if state.size.is_some_and(|size| state.seen > size) {
                    state.digester = None;
                    let error = UpstreamError::Invalid(format!(
                        "blob {} is longer than the {} bytes announced",
                        state.expected,
                        state.size.unwrap_or_default()
                    ));
                    return Some((Err(error), state));
                }
                Some((Ok(piece), state))
            }
            Some(Err(error)) => {
                state.digester = None;
                Some((Err(error), state))
            }
            None => {
                let actual = state.digester.take()?.finish();
                if let Some(size) = state.size.filter(|size| *size != state.seen) {
                    let error = UpstreamError::Invalid(format!(
                        "blob {} ended after {} of the {size} bytes announced",
                        state.expected, state.seen
                    ));
                    return Some((Err(error), state));
                }
                if actual != state.expected {
                    let error = UpstreamError::DigestMismatch {
                        expected: state.expected.clone(),
                        actual,
                    };
                    return Some((Err(error), state));
                }
                None
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(parts: &[&'static [u8]]) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
        let parts: Vec<_> = parts
            .iter()
            .map(|part| Ok(Bytes::from_static(part)))
            .collect();
        stream::iter(parts).boxed()
    }

    async fn collect(
        body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    ) -> (Vec<u8>, Option<UpstreamError>) {
        let mut bytes = Vec::new();
        let mut body = body;
        while let Some(piece) = body.next().await {
            match piece {
                Ok(piece) => bytes.extend_from_slice(&piece),
                Err(error) => {
                    assert!(body.next().await.is_none(), "nothing after an error");
                    return (bytes, Some(error));
                }
            }
        }
        (bytes, None)
    }

    #[tokio::test]
    async fn a_blob_stream_ends_in_an_error_unless_its_bytes_match() {
        let digest = Digest::sha256_of(b"hello world");
        let (bytes, error) = collect(checked(
            pieces(&[b"hello ", b"world"]),
            digest.clone(),
            Some(11),
        ))
        .await;
        assert_eq!((bytes.as_slice(), error), (b"hello world".as_slice(), None));
        // Unknown length: the digest alone decides.
        let (_, error) = collect(checked(pieces(&[b"hello world"]), digest.clone(), None)).await;
        assert_eq!(error, None);

        let (_, error) = collect(checked(
            pieces(&[b"hello", b" World"]),
            digest.clone(),
            None,
        ))
        .await;
        assert!(
            matches!(&error, Some(UpstreamError::DigestMismatch { expected, .. }) if *expected == digest),
            "{error:?}"
        );
        let (_, error) = collect(checked(pieces(&[b"hello"]), digest.clone(), Some(11))).await;
        assert!(
            matches!(&error, Some(UpstreamError::Invalid(text)) if text.contains("after 5 of the 11")),
            "{error:?}"
        );
        let (bytes, error) = collect(checked(
            pieces(&[b"hello ", b"world", b"!"]),
            digest.clone(),
            Some(11),
        ))
        .await;
        assert_eq!(bytes, b"hello world");
        assert!(
            matches!(error, Some(UpstreamError::Invalid(_))),
            "{error:?}"
        );
        // A transport error ends it at once.
        let failing = stream::iter(vec![
            Ok(Bytes::from_static(b"hello")),
            Err(UpstreamError::Timeout("stalled".into())),
            Ok(Bytes::from_static(b" world")),
        ])
        .boxed();
        let (bytes, error) = collect(checked(failing, digest, Some(11))).await;
        assert_eq!(
            (bytes.as_slice(), error),
            (
                b"hello".as_slice(),
                Some(UpstreamError::Timeout("stalled".into()))
            )
        );
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let next = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(LINK, HeaderValue::from_str(value).expect("header"));
            next_page(&headers)
        };
        assert_eq!(
            next(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next(r#"<https://r.example/v2/a/tags/list?last=v2&n=2>; rel=next"#).as_deref(),
            Some("/v2/a/tags/list?last=v2&n=2")
        );
        assert_eq!(
            next(r#"</v2/x?a=1>; rel="prev", </v2/y?b=2>; rel="next""#).as_deref(),
            Some("/v2/y?b=2")
        );
        assert_eq!(next(r#"</elsewhere>; rel="next""#), None);
        assert_eq!(next(r#"</v2/_catalog?last=b>; rel="prev""#), None);
        assert_eq!(next("garbage"), None);
    }

    #[test]
    fn only_a_registry_root_is_an_upstream_url() {
        for good in ["https://registry-1.docker.io", "http://127.0.0.1:5000/"] {
            assert!(Upstream::new(&UpstreamConfig::new(good)).is_ok(), "{good}");
        }
        for bad in [
            "ftp://x",
            "registry-1.docker.io",
            "https://x/v2/",
            "https://",
            "http://x?y",
        ] {
            assert!(
                matches!(
                    Upstream::new(&UpstreamConfig::new(bad)),
                    Err(UpstreamError::Config(_))
                ),
                "{bad}"
            );
        }
        let half = UpstreamConfig {
            username: Some("u".into()),
            ..UpstreamConfig::new("https://x")
        };
        assert!(matches!(
            Upstream::new(&half),
            Err(UpstreamError::Config(_))
        ));
    }

    #[test]
    fn transient_errors_are_the_ones_a_cache_serves_through() {
        let transient = [
            UpstreamError::Unreachable("refused".into()),
            UpstreamError::Timeout("slow".into()),
            UpstreamError::RateLimited {
                retry_after: Some(60),
            },
            UpstreamError::Status {
                status: 503,
                message: "down".into(),
            },
        ];
        assert!(transient.iter().all(UpstreamError::is_transient));
        let lasting = [
            UpstreamError::Status {
                status: 400,
                message: "bad".into(),
            },
            UpstreamError::Unauthorized("no".into()),
            UpstreamError::Invalid("odd".into()),
        ];
        assert!(!lasting.iter().any(UpstreamError::is_transient));
        assert_eq!(
            UpstreamError::RateLimited {
                retry_after: Some(60)
            }
            .to_string(),
            "the upstream is rate-limiting this registry (429, retry after 60 s)"
        );
    }
}

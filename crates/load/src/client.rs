//! A small HTTP/1.1 client over hyper's connection API: each worker owns its connections (one per
//! host it talks to), so `--concurrency C` means exactly C connections to the registry. It follows
//! redirects on GET/HEAD (to blob stores or blob nodes), and answers 401s with basic credentials or
//! with the Docker token flow (`WWW-Authenticate: Bearer realm=...`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use oci_model::challenge::Challenge;
use oci_model::{Algorithm, Digester};
use tokio::net::TcpStream;

use crate::content::BlobSet;
use crate::BenchError;

type Body = BoxBody<Bytes, Infallible>;

/// Most bytes of a response body kept in memory (manifests, tag lists, error bodies).
const MAX_KEPT_BODY: usize = 8 << 20;
/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// The registry under test and the credentials for it, shared by every worker.
#[derive(Clone)]
pub struct Target {
    authority: String,
    basic: Option<HeaderValue>,
    /// The bearer token from the token service a 401 named (one run uses one repository, so
    /// one token serves every request).
    token: Arc<Mutex<Option<HeaderValue>>>,
}

impl Target {
    pub fn parse(url: &str, user: Option<&str>) -> Result<Target, BenchError> {
        let uri: Uri = url
            .parse()
            .map_err(|error| BenchError::Url(url.into(), format!("{error}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(BenchError::Url(
                url.into(),
                "only http:// URLs are supported".into(),
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| BenchError::Url(url.into(), "no host".into()))?
            .to_string();
        if !matches!(uri.path(), "" | "/") {
            return Err(BenchError::Url(
                url.into(),
                "give the registry's base URL (the API is under /v2/)".into(),
            ));
        }
        let basic = match user {
            None => None,
            Some(pair) if !pair.contains(':') => {
                return Err(BenchError::Url(
                    url.into(),
                    "--user must be user:password".into(),
                ))
            }
            Some(pair) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                Some(
                    HeaderValue::from_str(&format!("Basic {encoded}"))
                        .expect("base64 is a header value"),
                )
            }
        };
        Ok(Target {
            authority,
            basic,
            token: Arc::default(),
        })
    }
}

/// What a request sends.
#[derive(Clone)]
pub enum Payload {
    Empty,
    Bytes(Bytes),
    Blob {
        set: BlobSet,
        index: u64,
        start: u64,
        end: u64,
    },
}

impl Payload {
    fn len(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Bytes(bytes) => bytes.len() as u64,
            Payload::Blob { start, end, .. } => end - start,
        }
    }

    fn body(&self) -> Body {
        match self {
            Payload::Empty => Empty::new().boxed(),
            Payload::Bytes(bytes) => Full::new(bytes.clone()).boxed(),
            Payload::Blob {
                set,
                index,
                start,
                end,
            } => {
                let frames = set.frames(*index, *start..*end).map(|f| Ok(Frame::data(f)));
                StreamBody::new(futures::stream::iter(frames)).boxed()
            }
        }
    }
}

/// One request; `location` is a path (`/v2/...`) or an absolute `http://` URL.
pub struct Request {
    pub method: Method,
    pub location: String,
    pub headers: Vec<(http::HeaderName, String)>,
    pub payload: Payload,
}

impl Request {
    pub fn new(method: Method, location: impl Into<String>) -> Request {
        Request {
            method,
            location: location.into(),
            headers: Vec::new(),
            payload: Payload::Empty,
        }
    }

    pub fn header(mut self, name: http::HeaderName, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    pub fn payload(mut self, payload: Payload) -> Request {
        self.payload = payload;
        self
    }
}

/// How to take a response body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Keep it (up to 8 MiB).
    Keep,
    /// Count the bytes, keeping nothing.
    Count,
    /// Count and SHA-256 them.
    Hash,
}

/// A response, its body consumed.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub body_len: u64,
    /// `sha256:<hex>` of the body, with [`Read::Hash`].
    pub body_digest: Option<String>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `"<status>: <start of the body>"`, for error reports.
    pub fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]);
        format!("{}: {}", self.status, text.trim())
    }
}

/// A worker's connections, one per host.
pub struct Client {
    target: Target,
    connections: HashMap<String, SendRequest<Body>>,
}

impl Client {
    pub fn new(target: &Target) -> Client {
        Client {
            target: target.clone(),
            connections: HashMap::new(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends `request`, answering one authentication challenge and following redirects.
    pub async fn send(&mut self, request: &Request, read: Read) -> Result<Response, String> {
        let mut location = request.location.clone();
        let mut authenticated = false;
        let mut redirects = 0;
        loop {
            let (authority, path) = self.split(&location)?;
            let same_host = authority == self.target.authority;
            let response = self
                .send_once(request, &authority, &path, same_host, read)
                .await?;
            if response.status == StatusCode::UNAUTHORIZED && same_host && !authenticated {
                authenticated = true;
                if self.authenticate(&response).await? {
                    continue;
                }
            }
            let redirect = matches!(
                response.status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            );
            let follows = matches!(request.method, Method::GET | Method::HEAD);
            if redirect && follows && redirects < MAX_REDIRECTS {
                if let Some(next) = response.header("location") {
                    redirects += 1;
                    location = next.to_string();
                    continue;
                }
            }
            return Ok(response);
        }
    }

    /// (authority, path-and-query) of a path or an absolute URL.
    fn split(&self, location: &str) -> Result<(String, String), String> {
        if location.starts_with('/') {
            return Ok((self.target.authority.clone(), location.to_string()));
        }
        let uri: Uri = location
            .parse()
            .map_err(|_| format!("unusable location {location:?}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "cannot follow {location:?}: only http:// is supported"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("no host in {location:?}"))?
            .to_string();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok((authority, path))
    }

    async fn send_once(
        &mut self,
        request: &Request,
        authority: &str,
        path: &str,
        same_host: bool,
        read: Read,
    ) -> Result<Response, String> {
        let mut builder = http::Request::builder()
            .method(request.method.clone())
            .uri(path)
            .header(HOST, authority);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if same_host {
            if let Some(value) = self.authorization() {
                builder = builder.header(AUTHORIZATION, value);
            }
        }
        // Registries want a length on every write, an empty one included.
        let writes = matches!(request.method, Method::POST | Method::PUT | Method::PATCH);
        if writes || request.payload.len() > 0 {
            builder = builder.header(CONTENT_LENGTH, request.payload.len());
        }
        let http_request = builder
            .body(request.payload.body())
            .map_err(|error| format!("bad request: {error}"))?;
        let sender = self.connection(authority).await?;
        let response = sender.send_request(http_request).await.map_err(|error| {
            self.connections.remove(authority);
            format!("{} {path}: {error}", request.method)
        })?;
        let (parts, mut body) = response.into_parts();
        let mut kept = BytesMut::new();
        let mut body_len = 0u64;
        let mut digester = (read == Read::Hash).then(|| Digester::new(Algorithm::Sha256));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                self.connections.remove(authority);
                format!("{} {path}: reading the body: {error}", request.method)
            })?;
            if let Ok(data) = frame.into_data() {
                body_len += data.len() as u64;
                if let Some(digester) = digester.as_mut() {
                    digester.update(&data);
                }
                if (read == Read::Keep || !parts.status.is_success()) && kept.len() < MAX_KEPT_BODY
                {
                    kept.extend_from_slice(&data);
                }
            }
        }
        let closes = parts
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if closes {
            self.connections.remove(authority);
        }
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: kept.freeze(),
            body_len,
            body_digest: digester.map(|d| d.finish().to_string()),
        })
    }

    fn authorization(&self) -> Option<HeaderValue> {
        let token = self.target.token.lock().expect("token lock").clone();
        token.or_else(|| self.target.basic.clone())
    }

    /// Answers a 401: fetches a bearer token when the challenge names a token service. Returns
    /// whether a retry can succeed.
    async fn authenticate(&mut self, response: &Response) -> Result<bool, String> {
        let Some(challenge) = response
            .header(WWW_AUTHENTICATE.as_str())
            .and_then(Challenge::parse)
            .filter(|challenge| challenge.is("bearer"))
        else {
            return Ok(false);
        };
        let Some(url) = challenge.token_url(challenge.param("scope")) else {
            return Ok(false);
        };
        let mut token_request = Request::new(Method::GET, url);
        if let Some(basic) = &self.target.basic {
            let value = basic.to_str().unwrap_or_default().to_string();
            token_request = token_request.header(AUTHORIZATION, value);
        }
        let token_response = Box::pin(self.send(&token_request, Read::Keep)).await?;
        if !token_response.status.is_success() {
            return Err(format!(
                "token service refused: {}",
                token_response.describe()
            ));
        }
        let body: serde_json::Value = serde_json::from_slice(&token_response.body)
            .map_err(|error| format!("token service answered no JSON: {error}"))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or("token service answered no token")?;
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "token service answered an unusable token".to_string())?;
        *self.target.token.lock().expect("token lock") = Some(value);
        Ok(true)
    }

    /// A ready connection to `authority`, opening one when there is none or it closed.
    async fn connection(&mut self, authority: &str) -> Result<&mut SendRequest<Body>, String> {
        let reusable = match self.connections.get_mut(authority) {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            let stream = TcpStream::connect(authority)
                .await
                .map_err(|error| format!("connecting to {authority}: {error}"))?;
            stream
                .set_nodelay(true)
                .map_err(|error| format!("TCP_NODELAY: {error}"))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|error| format!("HTTP handshake with {authority}: {error}"))?;
            tokio::spawn(connection);
            self.connections.insert(authority.to_string(), sender);
        }
        Ok(self.connections.get_mut(authority).expect("inserted above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(Target::parse("http://127.0.0.1:5000", None).is_ok());
        assert!(Target::parse("http://127.0.0.1:5000/", Some("u:p")).is_ok());
        assert!(Target::parse("https://x", None).is_err());
        assert!(Target::parse("http://x/v2/", None).is_err());
        assert!(Target::parse("http://x", Some("nocolon")).is_err());
    }
}

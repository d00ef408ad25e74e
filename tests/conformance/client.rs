//! The HTTP side of the suite: a [`Registry`] (one in-process Wharf and a client for it), the
//! [`Reply`] every request is read into, and the assertions about replies that every module uses.

use std::net::SocketAddr;

use bytes::Bytes;
use cluster_api::ReplicationPolicy;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};
use test_cluster::{InProcessCluster, InProcessServe, Role};

/// The registry under test. The suite is built twice (Cargo.toml): as `conformance` it runs
/// against `wharf serve` (gateway, meta and blob node calling each other in-process), as
/// `conformance_grpc` against one meta, one blob node and one gateway as separate roles, so every
/// request and every error also crosses the gRPC services and their status mapping.
enum Backend {
    Serve(Box<InProcessServe>),
    Roles(InProcessCluster),
}

/// One running Wharf and an HTTP client that never follows redirects or proxies.
pub struct Registry {
    backend: Backend,
    http: reqwest::Client,
}

impl Registry {
    pub async fn start() -> Registry {
        let backend = if env!("CARGO_CRATE_NAME") == "conformance_grpc" {
            let cluster = InProcessCluster::start(1, 1, 1, ReplicationPolicy::default())
                .await
                .expect("the in-process roles start");
            Backend::Roles(cluster)
        } else {
            let serve = InProcessServe::start()
                .await
                .expect("the in-process registry starts");
            Backend::Serve(Box::new(serve))
        };
        Registry {
            backend,
            http: http_client(),
        }
    }

    /// Stops every role and starts them again on the same data; the HTTP port may change.
    pub async fn restart(&mut self) {
        match &mut self.backend {
            Backend::Serve(serve) => serve
                .restart()
                .await
                .expect("the registry restarts on its data"),
            Backend::Roles(cluster) => {
                for role in [Role::Meta, Role::Blob, Role::Gateway] {
                    cluster
                        .restart(role, 1)
                        .await
                        .expect("the role restarts on its data");
                }
            }
        }
        // A fresh client: pooled connections went to the stopped process, and the gateway comes
        // back on the same address, where reusing one fails as "connection closed".
        self.http = http_client();
    }

    pub fn addr(&self) -> SocketAddr {
        match &self.backend {
            Backend::Serve(serve) => serve.http_addr(),
            Backend::Roles(cluster) => cluster.addrs(Role::Gateway)[0],
        }
    }

    /// The absolute URL of `path` (which starts with `/` and may carry a query).
    pub fn url(&self, path: &str) -> String {
        let base = match &self.backend {
            Backend::Serve(serve) => serve.base_url(),
            Backend::Roles(cluster) => cluster.gateway_url(1),
        };
        format!("{base}{path}")
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }
}

/// An HTTP client that never follows redirects or uses a proxy.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("an HTTP client builds")
}

/// Sends `request` and reads the whole reply.
pub async fn send(request: RequestBuilder) -> Reply {
    let (client, request) = request.build_split();
    let request = request.expect("the test builds a valid request");
    let context = format!("{} {}", request.method(), request.url());
    let response = client
        .execute(request)
        .await
        .unwrap_or_else(|error| panic!("{context}: no response: {}", error_chain(&error)));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|error| panic!("{context}: reading the body failed: {error}"));
    Reply {
        context,
        status,
        headers,
        body,
    }
}

/// An error and its sources, which say what happened on the connection.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A response read whole, with the request it answers for assertion messages.
pub struct Reply {
    pub context: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("header values are visible ASCII"))
    }

    /// A header that must be present.
    pub fn required(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("{}: no {name} header in {:?}", self.context, self.headers))
    }

    /// Asserts the status, showing the body when it differs.
    pub fn expect_status(&self, status: u16) -> &Reply {
        assert_eq!(
            self.status,
            status,
            "{}: body {:?}",
            self.context,
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    /// Asserts a header's exact value.
    pub fn expect_header(&self, name: &str, value: &str) -> &Reply {
        assert_eq!(
            self.header(name),
            Some(value),
            "{}: header {name}",
            self.context
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{}: body is not JSON ({error}): {:?}",
                self.context,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts an error reply: `status`, `Content-Type: application/json` and a body of the form
    /// `{"errors":[{"code":..,"message":..}]}` whose first code is `code`.
    pub fn expect_error(&self, status: u16, code: &str) -> &Reply {
        self.expect_status(status);
        self.expect_error_body();
        let first = &self.json()["errors"][0]["code"];
        assert_eq!(first, code, "{}: error code", self.context);
        self
    }

    /// Asserts the shape of an error body (whatever its code), and returns its first code.
    pub fn expect_error_body(&self) -> String {
        let content_type = self.header(CONTENT_TYPE.as_str()).unwrap_or("");
        assert_eq!(
            essence(content_type),
            "application/json",
            "{}: error Content-Type",
            self.context
        );
        let body = self.json();
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no errors array in {body}", self.context));
        assert!(!errors.is_empty(), "{}: empty errors array", self.context);
        for error in errors {
            assert!(
                error["code"].is_string(),
                "{}: error without a code: {body}",
                self.context
            );
            assert!(
                error["message"].is_string(),
                "{}: error without a message: {body}",
                self.context
            );
        }
        errors[0]["code"].as_str().unwrap_or_default().to_owned()
    }

    /// The path (and query) of the `Location` header, whether it is relative or absolute, so it
    /// can be followed on a registry whose port has changed.
    pub fn location_path(&self) -> String {
        strip_origin(self.required("location"))
    }
}

/// `path?query` of a URL or of a path that is already relative.
pub fn strip_origin(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or_else(|| "/".to_owned(), |slash| rest[slash..].to_owned()),
        None => url.to_owned(),
    }
}

/// Appends `key=value` (value already encoded) to a path that may already carry a query.
pub fn with_query(path: &str, key: &str, value: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{key}={value}")
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A media type without its parameters.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// `GET /v2/` answers 200: the process is up and serving.
pub async fn assert_serving(registry: &Registry) {
    send(registry.get("/v2/")).await.expect_status(200);
}

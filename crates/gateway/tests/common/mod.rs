//! A gateway over the in-memory fakes, driven through `router()` with `oneshot`.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::Router;
use cluster_api::fake::{MemBlobNodes, MemMeta};
use gateway::{Gateway, GatewayConfig};
use http_body_util::BodyExt;
use oci_model::media_type::{OCI_IMAGE_CONFIG, OCI_MANIFEST};
use oci_model::Digest;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub struct Harness {
    pub meta: Arc<MemMeta>,
    pub nodes: Arc<MemBlobNodes>,
    pub router: Router,
}

impl Harness {
    /// One blob node (id 1) and default settings.
    pub fn new() -> Harness {
        Harness::with(GatewayConfig::default(), &[1])
    }

    pub fn with(config: GatewayConfig, node_ids: &[u64]) -> Harness {
        let meta = Arc::new(MemMeta::with_blob_nodes(node_ids));
        let nodes = Arc::new(MemBlobNodes::with_nodes(node_ids));
        let router = Gateway::new(config, meta.clone(), nodes.clone()).router();
        Harness {
            meta,
            nodes,
            router,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request without a body.
    pub async fn call(&self, method: &str, uri: &str) -> Reply {
        self.send(request(method, uri).body(Body::empty()).unwrap())
            .await
    }

    /// A request with `body` and its `Content-Length`.
    pub async fn call_with(&self, method: &str, uri: &str, body: &[u8]) -> Reply {
        let request = request(method, uri)
            .header("content-length", body.len())
            .body(Body::from(body.to_vec()))
            .unwrap();
        self.send(request).await
    }

    /// Pushes `data` to `repo` monolithically and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let reply = self
            .call_with(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                data,
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        digest
    }

    /// Opens an upload session and returns its `Location`.
    pub async fn open_upload(&self, repo: &str) -> String {
        let reply = self
            .call("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text());
        reply.header("location").expect("a Location").to_owned()
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Reply {
        let request = request("PUT", &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .header("content-length", bytes.len())
            .body(Body::from(bytes.to_vec()))
            .unwrap();
        self.send(request).await
    }

    /// Pushes a config, one layer and an image manifest tagged `tag`; returns the manifest.
    pub async fn push_image(&self, repo: &str, tag: &str) -> (Digest, Vec<u8>) {
        let config = format!("{{\"image\":\"{repo}:{tag}\"}}");
        self.push_blob(repo, config.as_bytes()).await;
        let layer = format!("layer of {repo}:{tag}");
        self.push_blob(repo, layer.as_bytes()).await;
        let manifest = image_manifest(config.as_bytes(), &[layer.as_bytes()]);
        let reply = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        (Digest::sha256_of(&manifest), manifest)
    }
}

pub fn request(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri)
}

pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::sha256_of(data).to_string(),
        "size": data.len(),
    })
}

/// An OCI image manifest naming `config` and `layers` by content.
pub fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|layer| descriptor(LAYER_TYPE, layer))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_IMAGE_CONFIG, config),
        "layers": layers,
    }))
    .unwrap()
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The first error code of a `{"errors":[...]}` body, checking the body's shape.
    pub fn error_code(&self) -> String {
        let body = self.json();
        let first = &body["errors"][0];
        assert!(
            first["message"].is_string(),
            "error without message: {body}"
        );
        first["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {body}"))
            .to_owned()
    }

    /// Asserts the error answer to a `HEAD`, which has the status and headers but no body.
    pub fn assert_head_error(&self, status: u16) {
        assert_eq!(self.status, status);
        assert!(self.body.is_empty());
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(
            self.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }

    /// Asserts an error response: status, code, the JSON content type and the API version header.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.error_code(), code);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(
            self.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }
}

//! Small OCI client helpers shared by the root integration tests (durability, real clients).
#![allow(dead_code)]

pub mod auth_serve;
pub mod dev;
pub mod distribution;
pub mod fault_proxy;
pub mod serve;

use std::time::{Duration, Instant};

use oci_model::Digest;
use reqwest::StatusCode;

/// Runs `wharf admin --meta GRPC ARGS` with `stdin` written to its standard input.
pub fn admin_with_stdin(grpc: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["admin", "--meta", grpc])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wharf admin");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wharf admin runs")
}

/// `http://127.0.0.1:PORT` with a port nothing listens on (bound, then closed): an address
/// that refuses connections, with no fixed port assumed free.
pub fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("http://127.0.0.1:{port}")
}

/// Polls `attempt` until it succeeds or `deadline` passes; the last error says why not (for
/// attempts that explain their failure, unlike `test_cluster::wait_until`'s boolean condition).
pub async fn until<T, F, Fut>(what: &str, deadline: Instant, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => return Err(format!("{what}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Random bytes of `len`, distinct per call, so clients never skip a push as already present.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    bytes
}

/// The HTTP base URL and gRPC address `wharf serve --addr-file FILE` writes once it listens,
/// waited for until `deadline`.
pub async fn serve_addresses(
    addr_file: &std::path::Path,
    deadline: Instant,
) -> Result<(String, String), String> {
    let addrs: serde_json::Value = until("serve to write its addresses", deadline, || {
        let file = addr_file.to_owned();
        async move {
            let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| e.to_string())
        }
    })
    .await?;
    let http = addrs["http"].as_str().ok_or("no http address")?;
    let grpc = addrs["grpc"].as_str().ok_or("no grpc address")?;
    Ok((format!("http://{http}"), grpc.to_owned()))
}

/// An image pushed and acknowledged: what must be readable afterwards.
#[derive(Clone, Debug)]
pub struct PushedImage {
    pub repo: String,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

pub struct Registry {
    pub base: String,
    pub http: reqwest::Client,
}

impl Registry {
    pub fn new(base: String) -> Registry {
        Registry {
            base,
            // Far above any request a test makes, and under nextest's 600 s kill: a request
            // that hangs fails naming its URL instead of leaving the test silent until killed.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// `POST ?digest=` of `data` in one body; the answer as it came, whatever its status.
    pub async fn post_monolithic(
        &self,
        repo: &str,
        data: &[u8],
    ) -> Result<reqwest::Response, String> {
        let digest = Digest::sha256_of(data);
        let url = format!("{}/v2/{repo}/blobs/uploads/?digest={digest}", self.base);
        self.http
            .post(url)
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())
    }

    /// Monolithic upload: one `POST ?digest=`, 201.
    pub async fn push_blob_monolithic(&self, repo: &str, data: &[u8]) -> Result<Digest, String> {
        let response = self.post_monolithic(repo, data).await?;
        expect(
            response.status(),
            StatusCode::CREATED,
            "monolithic blob upload",
        )?;
        Ok(Digest::sha256_of(data))
    }

    /// Opens an upload session (`POST`, 202); returns its absolute URL.
    pub async fn start_upload(&self, repo: &str) -> Result<String, String> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let response = self
            .http
            .post(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        expect(response.status(), StatusCode::ACCEPTED, "upload POST")?;
        Ok(self.absolute(&location_of(&response)?))
    }

    /// Chunked upload: POST, PATCHes of `chunk` bytes with Content-Range, PUT ?digest=.
    pub async fn push_blob_chunked(
        &self,
        repo: &str,
        data: &[u8],
        chunk: usize,
    ) -> Result<Digest, String> {
        let digest = Digest::sha256_of(data);
        let mut location = self.start_upload(repo).await?;
        for (index, piece) in data.chunks(chunk.max(1)).enumerate() {
            let start = index * chunk;
            let end = start + piece.len() - 1;
            let response = self
                .http
                .patch(self.absolute(&location))
                .header("Content-Range", format!("{start}-{end}"))
                .header("Content-Type", "application/octet-stream")
                .body(piece.to_vec())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            expect(response.status(), StatusCode::ACCEPTED, "upload PATCH")?;
            location = location_of(&response)?;
        }
        let url = with_digest(&self.absolute(&location), &digest);
        let response = self.http.put(url).send().await.map_err(|e| e.to_string())?;
        expect(response.status(), StatusCode::CREATED, "upload PUT")?;
        Ok(digest)
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Digest, String> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let response = self
            .http
            .put(url)
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        expect(response.status(), StatusCode::CREATED, "manifest PUT")?;
        Ok(Digest::sha256_of(body))
    }

    /// Pushes a one-layer OCI image (config monolithic, layer chunked) and tags it.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layer_len: usize,
    ) -> Result<PushedImage, String> {
        self.push_image_with(repo, tag, layer_len, true).await
    }

    /// [`push_image`](Registry::push_image), with the config pushed in one `POST` (`monolithic`,
    /// which Distribution 2.8 does not take) or in chunks like the layer.
    pub async fn push_image_with(
        &self,
        repo: &str,
        tag: &str,
        layer_len: usize,
        monolithic: bool,
    ) -> Result<PushedImage, String> {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"nonce":"{}"}}"#,
            hex_of(&random_bytes(8))
        );
        let layer = random_bytes(layer_len);
        let config_digest = if monolithic {
            self.push_blob_monolithic(repo, config.as_bytes()).await?
        } else {
            self.push_blob_chunked(repo, config.as_bytes(), 64 * 1024)
                .await?
        };
        let layer_digest = self.push_blob_chunked(repo, &layer, 64 * 1024).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.to_string(), "size": layer.len()}],
        })
        .to_string()
        .into_bytes();
        let manifest_digest = self
            .put_manifest(
                repo,
                tag,
                "application/vnd.oci.image.manifest.v1+json",
                &manifest,
            )
            .await?;
        Ok(PushedImage {
            repo: repo.into(),
            tag: tag.into(),
            manifest,
            manifest_digest,
            blobs: vec![(config_digest, config.into_bytes()), (layer_digest, layer)],
        })
    }

    /// Checks every byte of `image`: the tag resolves to the same manifest bytes, and every blob
    /// reads back with a SHA-256 that matches its digest and the bytes pushed.
    pub async fn verify_image(&self, image: &PushedImage) -> Result<(), String> {
        for reference in [image.tag.clone(), image.manifest_digest.to_string()] {
            let url = format!("{}/v2/{}/manifests/{reference}", self.base, image.repo);
            let response = self
                .http
                .get(url)
                .header("Accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            expect(response.status(), StatusCode::OK, "manifest GET")?;
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            if body.as_ref() != image.manifest.as_slice() {
                return Err(format!("manifest {}:{reference} changed", image.repo));
            }
        }
        for (digest, data) in &image.blobs {
            let url = format!("{}/v2/{}/blobs/{digest}", self.base, image.repo);
            let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
            expect(response.status(), StatusCode::OK, "blob GET")?;
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            if !digest.verifies(&body) || body.as_ref() != data.as_slice() {
                return Err(format!("blob {digest} in {} is corrupt", image.repo));
            }
        }
        Ok(())
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }
}

fn expect(actual: StatusCode, expected: StatusCode, what: &str) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected}, got {actual}"))
    }
}

fn location_of(response: &reqwest::Response) -> Result<String, String> {
    response
        .headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| "response has no Location".to_owned())
}

/// An upload's `location` with `digest=` added to its query: where the `PUT` that closes it goes.
pub fn with_digest(location: &str, digest: &Digest) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! The HTTP side of a worker: one repository over the registry's API, whole-read answers,
//! blob uploads (monolithic and chunked) and read-back checks against what was pushed.

use std::time::{Duration, Instant};

use oci_model::Digest;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::common::{with_digest, Registry};
use crate::model::{Blob, RepoModel, Stored};
use crate::{CHUNK, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};

pub fn image_manifest(blobs: &[Blob]) -> Vec<u8> {
    let descriptor = |media_type: &str, blob: &Blob| {
        let (digest, size) = (blob.digest.to_string(), blob.data.len());
        json!({"mediaType": media_type, "digest": digest, "size": size})
    };
    let layers: Vec<Value> = blobs[1..]
        .iter()
        .map(|blob| descriptor(OCI_LAYER, blob))
        .collect();
    let config = descriptor(OCI_CONFIG, &blobs[0]);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers,
    });
    manifest.to_string().into_bytes()
}

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first OCI error code of the body; empty when there is none.
    pub fn code(&self) -> String {
        let errors: Option<Value> = serde_json::from_slice(&self.body).ok();
        let code =
            errors.and_then(|errors| errors["errors"][0]["code"].as_str().map(str::to_owned));
        code.unwrap_or_default()
    }

    /// Whether the status is `status` and, unless `code` is empty, the OCI error code `code`.
    pub fn is(&self, status: StatusCode, code: &str) -> bool {
        self.status == status && (code.is_empty() || self.code() == code)
    }

    pub fn expect(&self, status: StatusCode, code: &str, what: &str) -> Result<(), String> {
        if self.is(status, code) {
            return Ok(());
        }
        let text = self.text();
        Err(format!(
            "{what}: expected {status} {code}, got {} {text}",
            self.status
        ))
    }
}

pub enum Upload {
    /// 201; when the request that committed the blob was sent.
    Committed(Instant),
    /// 503 UNAVAILABLE, a conflict with the collector: push the whole blob again after this.
    Refused(Duration),
}

/// One repository of the registry, over HTTP.
pub struct Repo {
    pub registry: Registry,
    pub name: &'static str,
}

impl Repo {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}/v2/{}/{path}", self.registry.base, self.name);
        self.registry.http.request(method, url)
    }

    pub async fn send(&self, request: RequestBuilder, what: &str) -> Result<Answer, String> {
        let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.bytes().await.map_err(|e| format!("{what}: {e}"))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub async fn delete(&self, path: &str) -> Result<Answer, String> {
        self.send(self.request(Method::DELETE, path), "DELETE")
            .await
    }

    pub async fn put_manifest(
        &self,
        reference: &str,
        kind: &str,
        bytes: &[u8],
    ) -> Result<Answer, String> {
        let request = self.request(Method::PUT, &format!("manifests/{reference}"));
        let request = request.header("Content-Type", kind).body(bytes.to_vec());
        self.send(request, "manifest PUT").await
    }

    pub async fn upload_monolithic(&self, blob: &Blob) -> Result<Upload, String> {
        let path = format!("blobs/uploads/?digest={}", blob.digest);
        let request = self.request(Method::POST, &path).body(blob.data.to_vec());
        let sent = Instant::now();
        upload_outcome(self.send(request, "monolithic POST").await?, sent)
    }

    pub async fn upload_chunked(&self, blob: &Blob) -> Result<Upload, String> {
        let request = self.request(Method::POST, "blobs/uploads/");
        let mut location = upload_location(self.send(request, "upload POST").await?)?;
        for (index, piece) in blob.data.chunks(CHUNK).enumerate() {
            let start = index * CHUNK;
            let request = self
                .registry
                .http
                .patch(self.absolute(&location))
                .header(
                    "Content-Range",
                    format!("{start}-{}", start + piece.len() - 1),
                )
                .header("Content-Type", "application/octet-stream")
                .body(piece.to_vec());
            location = upload_location(self.send(request, "upload PATCH").await?)?;
        }
        let location = self.absolute(&location);
        let url = with_digest(&location, &blob.digest);
        let sent = Instant::now();
        let answer = self.send(self.registry.http.put(url), "upload PUT").await?;
        upload_outcome(answer, sent)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_owned()
        } else {
            format!("{}{location}", self.registry.base)
        }
    }

    /// Checks `digest` and every manifest and blob under it (an index's children through the
    /// index) against what was pushed: manifest bytes and type, blob bytes and SHA-256.
    pub async fn verify_tree(&self, model: &RepoModel, digest: &Digest) -> Result<(), String> {
        let mut pending = vec![digest.clone()];
        while let Some(current) = pending.pop() {
            let stored = model
                .manifests
                .get(&current)
                .ok_or_else(|| format!("{current} is not in the model of {}", self.name))?;
            self.check_manifest(&current.to_string(), stored).await?;
            for blob in &stored.blobs {
                self.check_blob(blob).await?;
            }
            pending.extend(stored.children.iter().cloned());
        }
        Ok(())
    }

    pub async fn check_manifest(&self, reference: &str, stored: &Stored) -> Result<(), String> {
        let request = self.request(Method::GET, &format!("manifests/{reference}"));
        let request = request.header("Accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"));
        let answer = self.send(request, "manifest GET").await?;
        let what = format!("GET manifest {}:{reference}", self.name);
        answer.expect(StatusCode::OK, "", &what)?;
        let media_type = answer.header("Content-Type").unwrap_or_default();
        if answer.body != stored.bytes || media_type != stored.media_type {
            let text = answer.text();
            return Err(format!(
                "{what}: not what was pushed ({media_type}: {text})"
            ));
        }
        Ok(())
    }

    pub async fn check_blob(&self, blob: &Blob) -> Result<(), String> {
        let request = self.request(Method::GET, &format!("blobs/{}", blob.digest));
        let answer = self.send(request, "blob GET").await?;
        let what = format!("GET blob {} in {}", blob.digest, self.name);
        answer.expect(StatusCode::OK, "", &what)?;
        if !blob.digest.verifies(&answer.body) || answer.body != blob.data.as_slice() {
            let (read, pushed) = (answer.body.len(), blob.data.len());
            return Err(format!(
                "{what}: corrupt, {read} bytes read, {pushed} pushed"
            ));
        }
        Ok(())
    }
}

/// The `Location` of a 202 answer to an upload step.
fn upload_location(answer: Answer) -> Result<String, String> {
    answer.expect(StatusCode::ACCEPTED, "", "upload step")?;
    let location = answer.header("Location");
    location
        .map(str::to_owned)
        .ok_or_else(|| "an upload step answered no Location".to_owned())
}

fn upload_outcome(answer: Answer, sent: Instant) -> Result<Upload, String> {
    if answer.status == StatusCode::CREATED {
        return Ok(Upload::Committed(sent));
    }
    let gc_conflict = answer.text().contains("conflict with garbage collection");
    if !(answer.is(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE") && gc_conflict) {
        return Err(format!("blob commit: {} {}", answer.status, answer.text()));
    }
    let retry_after = answer
        .header("Retry-After")
        .and_then(|secs| secs.parse().ok());
    let pause = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 5));
    Ok(Upload::Refused(pause))
}

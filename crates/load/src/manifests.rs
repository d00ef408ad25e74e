//! The manifest and tag workloads: manifest PUT, manifest GET/HEAD by tag or digest, tag listing.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, StatusCode};
use oci_model::Digest;
use serde_json::json;

use crate::client::{Client, Payload, Read, Request};
use crate::report::{measure, Operation, Plan, Report};
use crate::{BenchError, By, Context, ManifestOptions};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// What `docker pull` sends.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// PUTs `options.requests` distinct manifests, each under its own tag, timed.
pub(crate) async fn put(
    context: &Context,
    options: &ManifestOptions,
) -> Result<Report, BenchError> {
    let image = Image::push(context).await?;
    let plan = plan("manifest-put", options, BTreeMap::new());
    let operation = PutManifest {
        repo: context.repo.clone(),
        image,
    };
    measure(context, plan, operation).await
}

/// GETs (or HEADs) one manifest `options.requests` times, timed.
pub(crate) async fn get(
    context: &Context,
    options: &ManifestOptions,
) -> Result<Report, BenchError> {
    let image = Image::push(context).await?;
    let manifest = image.manifest("get");
    let digest = Digest::sha256_of(&manifest).to_string();
    let mut client = Client::new(&context.target);
    put_manifest(&mut client, &context.repo, "bench", manifest)
        .await
        .map_err(BenchError::Setup)?;
    let reference = match options.by {
        By::Tag => "bench".to_string(),
        By::Digest => digest.clone(),
    };
    let mut settings = BTreeMap::new();
    settings.insert(
        "by".into(),
        format!("{:?}", options.by).to_lowercase().into(),
    );
    settings.insert(
        "method".into(),
        if options.head { "HEAD" } else { "GET" }.into(),
    );
    let plan = plan("manifest-get", options, settings);
    let operation = GetManifest {
        path: format!("/v2/{}/manifests/{reference}", context.repo),
        digest,
        head: options.head,
    };
    measure(context, plan, operation).await
}

/// GETs the tag list of a repository with `options.tags` tags, timed.
pub(crate) async fn tags(
    context: &Context,
    options: &ManifestOptions,
) -> Result<Report, BenchError> {
    let image = Image::push(context).await?;
    let manifest = image.manifest("tags");
    let mut client = Client::new(&context.target);
    for index in 0..options.tags {
        put_manifest(
            &mut client,
            &context.repo,
            &format!("t{index}"),
            manifest.clone(),
        )
        .await
        .map_err(BenchError::Setup)?;
    }
    let mut settings = BTreeMap::new();
    settings.insert("tags".into(), options.tags.into());
    let plan = plan("tags", options, settings);
    let operation = ListTags {
        path: format!("/v2/{}/tags/list", context.repo),
        expected: options.tags,
    };
    measure(context, plan, operation).await
}

fn plan(
    workload: &str,
    options: &ManifestOptions,
    settings: BTreeMap<String, serde_json::Value>,
) -> Plan {
    Plan {
        workload: workload.into(),
        operations: options.requests,
        concurrency: options.concurrency,
        settings,
    }
}

/// A config and a layer blob in the repository, for manifests to point at.
pub(crate) struct Image {
    config: (String, usize),
    layer: (String, usize),
}

impl Image {
    async fn push(context: &Context) -> Result<Image, BenchError> {
        let layer = Bytes::from(format!("wharf bench layer {}", context.run_id).repeat(64));
        Image::push_with_layer(context, layer).await
    }

    /// Pushes a config and `layer` for manifests to point at.
    pub(crate) async fn push_with_layer(
        context: &Context,
        layer: Bytes,
    ) -> Result<Image, BenchError> {
        let mut client = Client::new(&context.target);
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Labels": {"run": context.run_id.to_string()}},
        });
        let config = Bytes::from(config.to_string());
        let config_digest = upload(&mut client, &context.repo, config.clone()).await?;
        let layer_digest = upload(&mut client, &context.repo, layer.clone()).await?;
        Ok(Image {
            config: (config_digest, config.len()),
            layer: (layer_digest, layer.len()),
        })
    }

    /// An OCI image manifest, made distinct by `marker`.
    pub(crate) fn manifest(&self, marker: &str) -> Bytes {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": self.config.0,
                "size": self.config.1,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": self.layer.0,
                "size": self.layer.1,
            }],
            "annotations": {"org.opencontainers.image.ref.name": marker},
        });
        Bytes::from(manifest.to_string())
    }
}

/// Uploads a small blob (POST, PUT) and returns its digest.
pub(crate) async fn upload(
    client: &mut Client,
    repo: &str,
    content: Bytes,
) -> Result<String, BenchError> {
    let digest = Digest::sha256_of(&content).to_string();
    let start = Request::new(Method::POST, format!("/v2/{repo}/blobs/uploads/"));
    let response = client
        .send(&start, Read::Keep)
        .await
        .map_err(BenchError::Setup)?;
    let location = match (response.status, response.header("location")) {
        (StatusCode::ACCEPTED, Some(location)) => location.to_string(),
        _ => {
            return Err(BenchError::Setup(format!(
                "POST upload: {}",
                response.describe()
            )))
        }
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let finish = Request::new(Method::PUT, format!("{location}{separator}digest={digest}"))
        .header(CONTENT_TYPE, "application/octet-stream")
        .payload(Payload::Bytes(content));
    let response = client
        .send(&finish, Read::Keep)
        .await
        .map_err(BenchError::Setup)?;
    if response.status != StatusCode::CREATED {
        return Err(BenchError::Setup(format!(
            "PUT upload: {}",
            response.describe()
        )));
    }
    Ok(digest)
}

async fn put_manifest(
    client: &mut Client,
    repo: &str,
    tag: &str,
    manifest: Bytes,
) -> Result<u64, String> {
    let length = manifest.len() as u64;
    let request = Request::new(Method::PUT, format!("/v2/{repo}/manifests/{tag}"))
        .header(CONTENT_TYPE, OCI_MANIFEST)
        .payload(Payload::Bytes(manifest));
    let response = client.send(&request, Read::Keep).await?;
    if response.status != StatusCode::CREATED {
        return Err(format!("PUT manifest: {}", response.describe()));
    }
    Ok(length)
}

struct PutManifest {
    repo: String,
    image: Image,
}

impl Operation for PutManifest {
    async fn run(&self, client: &mut Client, index: u64) -> Result<u64, String> {
        let manifest = self.image.manifest(&format!("put-{index}"));
        put_manifest(client, &self.repo, &format!("m{index}"), manifest).await
    }
}

struct GetManifest {
    path: String,
    digest: String,
    head: bool,
}

impl Operation for GetManifest {
    async fn run(&self, client: &mut Client, _index: u64) -> Result<u64, String> {
        let method = if self.head { Method::HEAD } else { Method::GET };
        let request = Request::new(method, self.path.clone()).header(ACCEPT, ACCEPT_MANIFESTS);
        let response = client.send(&request, Read::Count).await?;
        if response.status != StatusCode::OK {
            return Err(format!("manifest: {}", response.describe()));
        }
        match response.header("docker-content-digest") {
            Some(digest) if digest == self.digest => Ok(response.body_len),
            other => Err(format!(
                "manifest: Docker-Content-Digest {other:?}, expected {}",
                self.digest
            )),
        }
    }
}

struct ListTags {
    path: String,
    expected: u64,
}

impl Operation for ListTags {
    async fn run(&self, client: &mut Client, _index: u64) -> Result<u64, String> {
        let request = Request::new(Method::GET, self.path.clone());
        let response = client.send(&request, Read::Keep).await?;
        if response.status != StatusCode::OK {
            return Err(format!("tags/list: {}", response.describe()));
        }
        let list: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|error| format!("tags/list: not JSON: {error}"))?;
        let count = list["tags"].as_array().map_or(0, Vec::len) as u64;
        if count != self.expected {
            return Err(format!(
                "tags/list: {count} tags, expected {}",
                self.expected
            ));
        }
        Ok(response.body_len)
    }
}

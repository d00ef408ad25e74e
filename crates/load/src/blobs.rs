//! The blob workloads: push (monolithic or chunked) and pull.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::{CONTENT_RANGE, CONTENT_TYPE};
use http::{Method, StatusCode};

use crate::client::{Client, Payload, Read, Request};
use crate::content::BlobSet;
use crate::report::{measure, Operation, Plan, Report};
use crate::{BenchError, BlobOptions, Context};

/// Pushes `options.count` fresh blobs, timed.
pub(crate) async fn push(context: &Context, options: &BlobOptions) -> Result<Report, BenchError> {
    let push = Push::prepare(context, options).await?;
    let plan = plan("push", options, push.chunk);
    measure(context, plan, push).await
}

/// Pushes `options.count` blobs (untimed), then pulls each once, timed.
pub(crate) async fn pull(context: &Context, options: &BlobOptions) -> Result<Report, BenchError> {
    let push = Push::prepare(context, options).await?;
    let digests = push.digests.clone();
    let quiet = Context {
        progress: false,
        watch_pids: Vec::new(),
        gate: None,
        ..context.clone()
    };
    let setup = measure(&quiet, plan("push", options, None), push).await?;
    if setup.errors > 0 {
        return Err(BenchError::Setup(format!(
            "pushing the blobs to pull failed: {}",
            setup.error_samples.join("; ")
        )));
    }
    // The pull may go to a pull-through cache of the registry pushed to.
    let mut pulling = context.clone();
    if let Some(url) = &options.pull_url {
        pulling.target = crate::client::Target::parse(url, None)?;
    }
    if let Some(prefix) = &options.pull_prefix {
        pulling.repo = format!("{}/{}", prefix.trim_end_matches('/'), context.repo);
    }
    let pull = Pull {
        repo: pulling.repo.clone(),
        digests,
        size: options.size,
        verify: options.verify,
    };
    let mut plan = plan("pull", options, None);
    plan.settings.insert("verify".into(), options.verify.into());
    if let Some(url) = &options.pull_url {
        plan.settings.insert("pull_url".into(), url.clone().into());
    }
    let mut report = measure(&pulling, plan.clone(), pull.clone()).await?;
    for _ in 1..options.passes.max(1) {
        report
            .passes
            .push(measure(&pulling, plan.clone(), pull.clone()).await?);
    }
    Ok(report)
}

fn plan(workload: &str, options: &BlobOptions, chunk: Option<u64>) -> Plan {
    let mut settings = BTreeMap::new();
    settings.insert("count".into(), options.count.into());
    settings.insert("size".into(), options.size.into());
    if let Some(chunk) = chunk {
        settings.insert("chunk".into(), chunk.into());
    }
    Plan {
        workload: workload.into(),
        operations: options.count,
        concurrency: options.concurrency,
        settings,
    }
}

/// One blob upload: POST, then one PUT with the body, or a PATCH per chunk and an empty PUT.
struct Push {
    repo: String,
    set: BlobSet,
    digests: Arc<Vec<String>>,
    chunk: Option<u64>,
}

impl Push {
    async fn prepare(context: &Context, options: &BlobOptions) -> Result<Push, BenchError> {
        if options.chunk == Some(0) {
            return Err(BenchError::Setup("--chunk must be more than 0".into()));
        }
        let set = BlobSet::new(context.run_id, options.size);
        let (count, hashing) = (options.count, set.clone());
        let digests = tokio::task::spawn_blocking(move || {
            (0..count)
                .map(|index| hashing.digest(index).to_string())
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|error| BenchError::Setup(format!("hashing the blobs: {error}")))?;
        Ok(Push {
            repo: context.repo.clone(),
            set,
            digests: Arc::new(digests),
            chunk: options.chunk,
        })
    }

    fn blob(&self, index: u64, start: u64, end: u64) -> Payload {
        Payload::Blob {
            set: self.set.clone(),
            index,
            start,
            end,
        }
    }
}

impl Operation for Push {
    async fn run(&self, client: &mut Client, index: u64) -> Result<u64, String> {
        let size = self.set.size();
        let start = Request::new(Method::POST, format!("/v2/{}/blobs/uploads/", self.repo));
        let response = client.send(&start, Read::Keep).await?;
        let mut location = expect_location(&response, StatusCode::ACCEPTED, "POST upload")?;
        let mut body = self.blob(index, 0, size);
        if let Some(chunk) = self.chunk {
            let mut offset = 0;
            while offset < size {
                let end = (offset + chunk).min(size);
                let patch = Request::new(Method::PATCH, location.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{offset}-{}", end - 1))
                    .payload(self.blob(index, offset, end));
                let response = client.send(&patch, Read::Keep).await?;
                location = expect_location(&response, StatusCode::ACCEPTED, "PATCH chunk")?;
                offset = end;
            }
            body = Payload::Empty;
        }
        let separator = if location.contains('?') { '&' } else { '?' };
        let digest = &self.digests[index as usize];
        let finish = Request::new(Method::PUT, format!("{location}{separator}digest={digest}"))
            .header(CONTENT_TYPE, "application/octet-stream")
            .payload(body);
        let response = client.send(&finish, Read::Keep).await?;
        if response.status != StatusCode::CREATED {
            return Err(format!("PUT upload: {}", response.describe()));
        }
        Ok(size)
    }
}

/// The `Location` of an upload response with the expected status.
fn expect_location(
    response: &crate::client::Response,
    expected: StatusCode,
    what: &str,
) -> Result<String, String> {
    if response.status != expected {
        return Err(format!("{what}: {}", response.describe()));
    }
    response
        .header("location")
        .map(str::to_string)
        .ok_or_else(|| format!("{what}: {} without a Location", response.status))
}

/// One blob GET, checked for length and digest.
#[derive(Clone)]
struct Pull {
    repo: String,
    digests: Arc<Vec<String>>,
    size: u64,
    verify: bool,
}

impl Operation for Pull {
    async fn run(&self, client: &mut Client, index: u64) -> Result<u64, String> {
        let digest = &self.digests[index as usize];
        let request = Request::new(Method::GET, format!("/v2/{}/blobs/{digest}", self.repo));
        let read = if self.verify { Read::Hash } else { Read::Count };
        let response = client.send(&request, read).await?;
        if response.status != StatusCode::OK {
            return Err(format!("GET blob: {}", response.describe()));
        }
        if response.body_len != self.size {
            return Err(format!(
                "GET blob {digest}: {} bytes, expected {}",
                response.body_len, self.size
            ));
        }
        if let Some(header) = response.header("docker-content-digest") {
            if header != digest {
                return Err(format!("GET blob {digest}: Docker-Content-Digest {header}"));
            }
        }
        if let Some(received) = &response.body_digest {
            if received != digest {
                return Err(format!("GET blob {digest}: the body hashes to {received}"));
            }
        }
        Ok(response.body_len)
    }
}

//! `wharf bench`: a load generator for any registry that speaks the OCI Distribution API (Wharf,
//! CNCF Distribution, or anything else), for people load testing their own deployments and for
//! `benches/compare.sh`.
//!
//! Each workload has an untimed set-up (pushing what it will read), then a timed phase in which
//! a fixed number of workers (`--concurrency`, one HTTP/1.1 connection each) take operations from
//! a shared counter until `--count`/`--requests` are done. Every operation's latency goes into an
//! HDR histogram; the summary gives throughput, requests/s, p50/p95/p99/max latency and the errors
//! (status and body of the first few), as a table or as JSON (`--json`).
//!
//! Blob content is generated, never held whole: a blob is a 24-byte unique header (run id, blob
//! index) followed by a shared random pattern repeated to its size, streamed in 1 MiB frames, so a
//! 10 GiB push needs only the pattern in memory. This crate depends on no other Wharf crate but
//! `oci-model` (digests), so it measures any registry the same way.

mod blobs;
mod client;
mod content;
mod manifests;
mod report;
mod size;
mod soak;

use std::time::Duration;

use clap::{Args, Subcommand};

// The `WWW-Authenticate` parser, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub use oci_model::challenge::parse_challenge;
pub use report::Report;
pub use size::parse_size;
pub use soak::{parse_named, Named, SoakSummary};

/// `wharf bench [OPTIONS] <WORKLOAD> [OPTIONS]` (the common options go before or after the workload).
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Registry base URL, e.g. `http://127.0.0.1:5000` (plain HTTP).
    #[arg(
        long,
        global = true,
        env = "WHARF_BENCH_URL",
        default_value = "http://127.0.0.1:5000"
    )]
    pub url: String,
    /// Repository the workload writes to and reads from; a run id is appended unless `--exact-repo`.
    #[arg(long, global = true, default_value = "bench")]
    pub repo: String,
    /// Use `--repo` as given instead of `<repo>/<run id>`.
    #[arg(long, global = true)]
    pub exact_repo: bool,
    /// `user:password` for HTTP basic authentication, or for the token service a 401 points to.
    #[arg(long, global = true, env = "WHARF_BENCH_USER")]
    pub user: Option<String>,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Sample the resident memory (VmRSS) of these processes during the timed phase and report
    /// the peak of their sum.
    #[arg(long = "watch-pid", global = true, value_delimiter = ',')]
    pub watch_pids: Vec<u32>,
    /// Exit with an error when more operations than this fail.
    #[arg(long, global = true, default_value_t = 0)]
    pub max_errors: u64,
    /// Per-request timeout in seconds (a whole blob transfer counts as one request).
    #[arg(long, global = true, default_value_t = 300)]
    pub timeout: u64,
    /// Create this file once the set-up is done, just before the timed phase (for scripts that
    /// run several bench processes at once, e.g. `benches/scale.sh`).
    #[arg(long, global = true, value_name = "FILE")]
    pub ready_file: Option<std::path::PathBuf>,
    /// Start the timed phase only once this file exists (waits at most 10 minutes), so several
    /// bench processes time the same interval.
    #[arg(long, global = true, value_name = "FILE")]
    pub start_when: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub workload: Workload,
}

/// What to measure.
#[derive(Subcommand, Debug, Clone)]
pub enum Workload {
    /// Push COUNT blobs of SIZE bytes: monolithic (POST, then one PUT with the body) or, with
    /// `--chunk`, a PATCH per chunk and a closing PUT.
    Push(BlobOptions),
    /// Pull COUNT blobs of SIZE bytes (pushed first, untimed).
    Pull(BlobOptions),
    /// PUT COUNT distinct image manifests, each under its own tag.
    ManifestPut(ManifestOptions),
    /// GET (or HEAD) one image manifest by tag or digest.
    ManifestGet(ManifestOptions),
    /// GET the tag list of a repository holding `--tags` tags.
    Tags(ManifestOptions),
    /// A mixed load for `--duration` seconds (manifest PUTs to new and existing tags, deletes,
    /// tag GETs, blob pushes and pulls), sampling processes' memory and directories' size.
    Soak(SoakOptions),
}

/// Options of the soak workload.
#[derive(Args, Debug, Clone)]
pub struct SoakOptions {
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Stop earlier after this many operations.
    #[arg(long, default_value_t = u64::MAX)]
    pub operations: u64,
    /// Concurrent workers, one connection each.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub concurrency: usize,
    /// Size of each pushed blob and of the layer every manifest uses.
    #[arg(long, default_value = "16KiB", value_parser = parse_size)]
    pub blob_size: u64,
    /// Seed of the operation mix (each worker derives its own).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A process to sample, as NAME=PID (repeat for several).
    #[arg(long = "watch", value_parser = parse_named::<u32>)]
    pub watch: Vec<Named<u32>>,
    /// A directory whose size to sample, as NAME=PATH (repeat for several).
    #[arg(long = "watch-dir", value_parser = parse_named::<std::path::PathBuf>)]
    pub watch_dir: Vec<Named<std::path::PathBuf>>,
    /// Seconds between samples.
    #[arg(long, default_value_t = 2.0)]
    pub sample_every: f64,
    /// The fraction of the operations left out of the RSS slope (the warm-up).
    #[arg(long, default_value_t = 0.25)]
    pub warmup: f64,
    /// Write every sample to this CSV file (for `benches/soak_plot.py`).
    #[arg(long)]
    pub samples: Option<std::path::PathBuf>,
}

/// Options of the blob workloads.
#[derive(Args, Debug, Clone)]
pub struct BlobOptions {
    /// Number of blobs.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Size of each blob: bytes, or with a unit (`4KiB`, `1MiB`, `1GiB`, `1MB`).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub size: u64,
    /// Concurrent workers, one connection each.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub concurrency: usize,
    /// Push in chunks of this size (PATCH each, then PUT) instead of one monolithic PUT.
    #[arg(long, value_parser = parse_size)]
    pub chunk: Option<u64>,
    /// Pull: hash every byte received and compare it with the digest (costs client CPU).
    #[arg(long)]
    pub verify: bool,
    /// Pull from this registry (a pull-through cache of `--url`) instead of `--url`, where the
    /// blobs are still pushed.
    #[arg(long, value_name = "URL")]
    pub pull_url: Option<String>,
    /// The repository pulled is PREFIX/<repository pushed> (a pull-through cache's prefix).
    #[arg(long, value_name = "PREFIX")]
    pub pull_prefix: Option<String>,
    /// Pull the same blobs this many times, one timed pass after the other (a cache cold, then
    /// warm); the passes after the first are reported under `passes`.
    #[arg(long, default_value_t = 1)]
    pub passes: u32,
}

/// Options of the manifest and tag workloads.
#[derive(Args, Debug, Clone)]
pub struct ManifestOptions {
    /// Operations to time (manifest-put: manifests to push).
    #[arg(long = "requests", alias = "count", default_value_t = 10_000)]
    pub requests: u64,
    /// Concurrent workers, one connection each.
    #[arg(long, short = 'c', alias = "connections", default_value_t = 16)]
    pub concurrency: usize,
    /// manifest-get: address the manifest by `tag` or by `digest`.
    #[arg(long, value_enum, default_value_t = By::Tag)]
    pub by: By,
    /// manifest-get: HEAD instead of GET.
    #[arg(long)]
    pub head: bool,
    /// tags: how many tags the repository holds.
    #[arg(long, default_value_t = 100)]
    pub tags: u64,
}

/// How manifest-get names the manifest.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Tag,
    Digest,
}

/// Why a run could not produce a report at all (failed operations are counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid --url {0:?}: {1}")]
    Url(String, String),
    #[error("set-up failed: {0}")]
    Setup(String),
    #[error("{0}")]
    Gate(String),
}

/// Runs one workload and returns its report.
pub async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let target = client::Target::parse(&args.url, args.user.as_deref())?;
    let run_id = content::RunId::random();
    let repo = if args.exact_repo {
        args.repo.clone()
    } else {
        format!("{}/{}", args.repo.trim_end_matches('/'), run_id)
    };
    let context = Context {
        target,
        repo,
        run_id,
        timeout: Duration::from_secs(args.timeout.max(1)),
        progress: !args.quiet && !args.json,
        watch_pids: args.watch_pids.clone(),
        gate: (args.ready_file.is_some() || args.start_when.is_some()).then(|| report::Gate {
            ready_file: args.ready_file.clone(),
            start_when: args.start_when.clone(),
        }),
    };
    let mut report = match &args.workload {
        Workload::Push(options) => blobs::push(&context, options).await?,
        Workload::Pull(options) => blobs::pull(&context, options).await?,
        Workload::ManifestPut(options) => manifests::put(&context, options).await?,
        Workload::ManifestGet(options) => manifests::get(&context, options).await?,
        Workload::Tags(options) => manifests::tags(&context, options).await?,
        Workload::Soak(options) => soak::soak(&context, options).await?,
    };
    report.url = args.url.clone();
    report.repo = context.repo.clone();
    Ok(report)
}

/// What every workload needs.
#[derive(Clone)]
pub(crate) struct Context {
    pub target: client::Target,
    pub repo: String,
    pub run_id: content::RunId,
    pub timeout: Duration,
    pub progress: bool,
    pub watch_pids: Vec<u32>,
    /// Files that line up the timed phase with other processes; `None` for untimed set-up runs.
    pub gate: Option<report::Gate>,
}

//! The soak workload: a mixed load for a fixed time, with the registry's memory and disk sampled
//! as it goes, to show whether they stay flat. Each worker keeps its own model of what it pushed
//! and checks every answer against it:
//!
//! - push a new manifest under a new tag (30%); past 256 live tags the oldest manifest is
//!   deleted by digest (a DELETE, and what it leaves is garbage for the collector);
//! - move the worker's `latest` tag to a new manifest and delete the one it left (15%);
//! - GET a live manifest by tag and check its digest (30%);
//! - push a new blob that no manifest uses (10%: garbage once the upload grace passes);
//! - pull the layer every manifest uses and check its length (15%).
//!
//! Every `--sample-every` seconds the sampler records the operations done so far, each
//! `--watch NAME=PID` process's VmRSS and each `--watch-dir NAME=PATH` directory's size. The
//! summary gives, per process, the RSS at start, peak and end and the slope of RSS over
//! operations after the warm-up (MiB per 100k operations, least squares); `--samples FILE`
//! writes every sample as CSV for `benches/soak_plot.py`.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, StatusCode};
use oci_model::Digest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::client::{Client, Payload, Read, Request};
use crate::manifests::{upload, Image, ACCEPT_MANIFESTS, OCI_MANIFEST};
use crate::report::{rss_kib, Latency, Report};
use crate::{BenchError, Context, SoakOptions};

/// Live tags a worker keeps before deleting its oldest manifest.
const LIVE_TAGS: usize = 256;
/// Error messages kept.
const ERROR_SAMPLES: usize = 5;

/// A process or directory to watch, as `NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named<T> {
    pub name: String,
    pub value: T,
}

/// Parses `NAME=VALUE` (for `--watch` and `--watch-dir`).
pub fn parse_named<T: std::str::FromStr>(text: &str) -> Result<Named<T>, String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let value = value
        .parse()
        .map_err(|_| format!("{text:?}: cannot read {value:?}"))?;
    if name.is_empty() || name.contains(',') {
        return Err(format!(
            "{text:?}: a name must be non-empty, without commas"
        ));
    }
    Ok(Named {
        name: name.to_owned(),
        value,
    })
}

/// What the soak adds to a report.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSummary {
    /// Operations done, by kind.
    pub operations: BTreeMap<String, u64>,
    /// Operations done before the samples the slopes are fitted to.
    pub warmup_operations: u64,
    pub samples: usize,
    pub processes: Vec<ProcessSummary>,
    pub directories: Vec<DirectorySummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessSummary {
    pub name: String,
    pub start_mib: f64,
    pub peak_mib: f64,
    pub end_mib: f64,
    /// RSS growth per 100,000 operations after the warm-up (None with fewer than 3 samples).
    pub slope_mib_per_100k: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectorySummary {
    pub name: String,
    pub peak_mib: f64,
    pub end_mib: f64,
}

/// One sample: seconds since the start, operations done, each process's RSS and each
/// directory's size (MiB; NaN when unreadable).
struct Sample {
    seconds: f64,
    operations: u64,
    rss: Vec<f64>,
    disk: Vec<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PutNew,
    MoveTag,
    GetTag,
    PushBlob,
    PullBlob,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PutNew => "manifest-put-new-tag",
            Kind::MoveTag => "manifest-put-move-tag",
            Kind::GetTag => "manifest-get-tag",
            Kind::PushBlob => "blob-push",
            Kind::PullBlob => "blob-pull",
        }
    }

    fn draw(rng: &mut StdRng) -> Kind {
        match rng.gen_range(0..100) {
            0..30 => Kind::PutNew,
            30..45 => Kind::MoveTag,
            45..75 => Kind::GetTag,
            75..85 => Kind::PushBlob,
            _ => Kind::PullBlob,
        }
    }
}

/// Shared by every worker and the sampler.
struct Shared {
    context: Context,
    image: Image,
    layer_digest: String,
    layer_len: u64,
    blob_size: u64,
    deadline: Instant,
    max_operations: u64,
    next: AtomicU64,
    done: AtomicU64,
}

/// Runs the soak and reports.
pub(crate) async fn soak(context: &Context, options: &SoakOptions) -> Result<Report, BenchError> {
    let layer = Bytes::from(pattern(
        &format!("soak layer {}", context.run_id),
        options.blob_size,
    ));
    let image = Image::push_with_layer(context, layer.clone()).await?;
    let shared = Arc::new(Shared {
        context: context.clone(),
        layer_digest: Digest::sha256_of(&layer).to_string(),
        layer_len: layer.len() as u64,
        image,
        blob_size: options.blob_size,
        deadline: Instant::now() + Duration::from_secs(options.duration),
        max_operations: options.operations,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = tokio::spawn(sample(
        shared.clone(),
        options.watch.clone(),
        options.watch_dir.clone(),
        Duration::from_secs_f64(options.sample_every.max(0.1)),
        stop.clone(),
        started,
    ));
    let workers: Vec<_> = (0..options.concurrency.max(1))
        .map(|worker| tokio::spawn(run_worker(shared.clone(), worker, options.seed)))
        .collect();
    let mut tally = WorkerTally::new();
    for worker in workers {
        match worker.await {
            Ok(result) => tally.add(result),
            Err(error) => {
                tally.errors += 1;
                tally.samples.push(format!("worker failed: {error}"));
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .await
        .map_err(|error| BenchError::Setup(format!("sampler: {error}")))?;
    if let Some(path) = &options.samples {
        write_csv(path, options, &samples)
            .map_err(|error| BenchError::Setup(format!("writing {}: {error}", path.display())))?;
    }
    let summary = summarize(options, &samples, &tally);
    let quantile = |q: f64| tally.histogram.value_at_quantile(q) as f64 / 1000.0;
    let mut settings = BTreeMap::new();
    settings.insert("duration_s".into(), options.duration.into());
    settings.insert("blob_size".into(), options.blob_size.into());
    settings.insert("seed".into(), options.seed.into());
    Ok(Report {
        passes: Vec::new(),
        workload: "soak".into(),
        url: String::new(),
        repo: String::new(),
        settings,
        concurrency: options.concurrency,
        operations: tally.ok + tally.errors,
        ok: tally.ok,
        errors: tally.errors,
        bytes: tally.bytes,
        seconds,
        ops_per_second: tally.ok as f64 / seconds,
        mb_per_second: tally.bytes as f64 / seconds / 1e6,
        latency_ms: Latency {
            p50: quantile(0.50),
            p95: quantile(0.95),
            p99: quantile(0.99),
            max: tally.histogram.max() as f64 / 1000.0,
            mean: tally.histogram.mean() / 1000.0,
        },
        rss_peak_mib: None,
        error_samples: tally.samples,
        soak: Some(summary),
    })
}

/// What one worker did.
struct WorkerTally {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    bytes: u64,
    kinds: BTreeMap<Kind, u64>,
    samples: Vec<String>,
}

impl WorkerTally {
    fn new() -> WorkerTally {
        WorkerTally {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: 0,
            bytes: 0,
            kinds: BTreeMap::new(),
            samples: Vec::new(),
        }
    }

    fn add(&mut self, other: WorkerTally) {
        self.histogram.add(&other.histogram).expect("same bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes += other.bytes;
        for (kind, count) in other.kinds {
            *self.kinds.entry(kind).or_default() += count;
        }
        for sample in other.samples {
            if self.samples.len() < ERROR_SAMPLES {
                self.samples.push(sample);
            }
        }
    }
}

/// One worker's view of the registry: what it pushed, in order.
struct Model {
    worker: usize,
    rng: StdRng,
    /// (tag, digest) of the manifests under this worker's own tags, oldest first.
    live: VecDeque<(String, String)>,
    /// The digest under this worker's `latest` tag.
    latest: Option<String>,
    pushed: u64,
}

async fn run_worker(shared: Arc<Shared>, worker: usize, seed: u64) -> WorkerTally {
    let mut client = Client::new(&shared.context.target);
    let mut tally = WorkerTally::new();
    let mut model = Model {
        worker,
        rng: StdRng::seed_from_u64(seed ^ (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        live: VecDeque::new(),
        latest: None,
        pushed: 0,
    };
    while Instant::now() < shared.deadline
        && shared.next.fetch_add(1, Ordering::Relaxed) < shared.max_operations
    {
        let kind = Kind::draw(&mut model.rng);
        let began = Instant::now();
        let outcome = tokio::time::timeout(
            shared.context.timeout,
            operate(&shared, &mut client, &mut model, kind),
        )
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {:?}", shared.context.timeout)));
        match outcome {
            Ok(bytes) => {
                tally.ok += 1;
                tally.bytes += bytes;
                *tally.kinds.entry(kind).or_default() += 1;
                tally
                    .histogram
                    .saturating_record(began.elapsed().as_micros().max(1) as u64);
            }
            Err(message) => {
                tally.errors += 1;
                if tally.samples.len() < ERROR_SAMPLES {
                    tally.samples.push(format!("{}: {message}", kind.name()));
                }
                client = Client::new(client.target());
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

async fn operate(
    shared: &Shared,
    client: &mut Client,
    model: &mut Model,
    kind: Kind,
) -> Result<u64, String> {
    let repo = &shared.context.repo;
    match kind {
        Kind::PutNew | Kind::MoveTag => {
            model.pushed += 1;
            let marker = format!("w{}-{}", model.worker, model.pushed);
            let manifest = shared.image.manifest(&marker);
            let digest = Digest::sha256_of(&manifest).to_string();
            let tag = match kind {
                Kind::PutNew => format!("w{}-{}", model.worker, model.pushed),
                _ => format!("w{}-latest", model.worker),
            };
            let length = put(client, repo, &tag, manifest, &digest).await?;
            if kind == Kind::PutNew {
                model.live.push_back((tag, digest));
                if model.live.len() > LIVE_TAGS {
                    if let Some((_, oldest)) = model.live.pop_front() {
                        delete_manifest(client, repo, &oldest).await?;
                    }
                }
            } else if let Some(previous) = model.latest.replace(digest) {
                // The manifest the tag moved off is untagged now; delete it as a CI's retention
                // would, so that the registry's state stays the same size while the load runs.
                delete_manifest(client, repo, &previous).await?;
            }
            Ok(length)
        }
        Kind::GetTag => {
            if model.live.is_empty() {
                return Ok(0);
            }
            let pick = model.rng.gen_range(0..model.live.len());
            let (tag, digest) = model.live[pick].clone();
            get_by_tag(client, repo, &tag, &digest).await
        }
        Kind::PushBlob => {
            model.pushed += 1;
            let marker = format!(
                "soak blob {} w{} {}",
                shared.context.run_id, model.worker, model.pushed
            );
            let content = Bytes::from(pattern(&marker, shared.blob_size));
            let length = content.len() as u64;
            upload(client, repo, content)
                .await
                .map_err(|error| error.to_string())?;
            Ok(length)
        }
        Kind::PullBlob => {
            let path = format!("/v2/{repo}/blobs/{}", shared.layer_digest);
            let response = client
                .send(&Request::new(Method::GET, path), Read::Count)
                .await?;
            if response.status != StatusCode::OK || response.body_len != shared.layer_len {
                return Err(format!(
                    "GET layer: {} ({} bytes, expected {})",
                    response.describe(),
                    response.body_len,
                    shared.layer_len
                ));
            }
            Ok(response.body_len)
        }
    }
}

async fn put(
    client: &mut Client,
    repo: &str,
    tag: &str,
    manifest: Bytes,
    digest: &str,
) -> Result<u64, String> {
    let length = manifest.len() as u64;
    let request = Request::new(Method::PUT, format!("/v2/{repo}/manifests/{tag}"))
        .header(CONTENT_TYPE, OCI_MANIFEST)
        .payload(Payload::Bytes(manifest));
    let response = client.send(&request, Read::Keep).await?;
    if response.status != StatusCode::CREATED
        || response.header("docker-content-digest") != Some(digest)
    {
        return Err(format!("PUT manifest {tag}: {}", response.describe()));
    }
    Ok(length)
}

async fn delete_manifest(client: &mut Client, repo: &str, digest: &str) -> Result<(), String> {
    let request = Request::new(Method::DELETE, format!("/v2/{repo}/manifests/{digest}"));
    let response = client.send(&request, Read::Keep).await?;
    if response.status != StatusCode::ACCEPTED {
        return Err(format!("DELETE manifest {digest}: {}", response.describe()));
    }
    Ok(())
}

async fn get_by_tag(
    client: &mut Client,
    repo: &str,
    tag: &str,
    digest: &str,
) -> Result<u64, String> {
    let request = Request::new(Method::GET, format!("/v2/{repo}/manifests/{tag}"))
        .header(ACCEPT, ACCEPT_MANIFESTS);
    let response = client.send(&request, Read::Keep).await?;
    let received = Digest::sha256_of(&response.body).to_string();
    if response.status != StatusCode::OK || received != digest {
        return Err(format!(
            "GET {tag}: {} (body {received}, expected {digest})",
            response.describe()
        ));
    }
    Ok(response.body_len)
}

/// `marker` repeated to `size` bytes: distinct content per marker without randomness.
fn pattern(marker: &str, size: u64) -> Vec<u8> {
    let size = usize::try_from(size).unwrap_or(usize::MAX).max(1);
    marker
        .bytes()
        .chain(b" ".iter().copied())
        .cycle()
        .take(size)
        .collect()
}

/// Samples until told to stop, then takes one last sample.
async fn sample(
    shared: Arc<Shared>,
    processes: Vec<Named<u32>>,
    directories: Vec<Named<PathBuf>>,
    every: Duration,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    loop {
        let last = stop.load(Ordering::Relaxed);
        let directories = directories.clone();
        let disk = tokio::task::spawn_blocking(move || {
            directories
                .iter()
                .map(|dir| directory_bytes(&dir.value).map_or(f64::NAN, mib))
                .collect()
        })
        .await
        .unwrap_or_default();
        samples.push(Sample {
            seconds: started.elapsed().as_secs_f64(),
            operations: shared.done.load(Ordering::Relaxed),
            rss: processes
                .iter()
                .map(|process| rss_kib(process.value).map_or(f64::NAN, |kib| kib as f64 / 1024.0))
                .collect(),
            disk,
        });
        if last {
            return samples;
        }
        let wake = Instant::now() + every;
        while Instant::now() < wake && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50).min(every)).await;
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The bytes of every file under `path`.
fn directory_bytes(path: &Path) -> Option<u64> {
    let mut total = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(metadata) if metadata.is_dir() => pending.push(entry.path()),
                Ok(metadata) => total += metadata.len(),
                // A file removed between the listing and the stat.
                Err(_) => {}
            }
        }
    }
    std::fs::metadata(path).ok().map(|_| total)
}

fn write_csv(path: &Path, options: &SoakOptions, samples: &[Sample]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut header = vec!["seconds".to_owned(), "operations".to_owned()];
    header.extend(options.watch.iter().map(|p| format!("{}_rss_mib", p.name)));
    header.extend(
        options
            .watch_dir
            .iter()
            .map(|d| format!("{}_disk_mib", d.name)),
    );
    writeln!(out, "{}", header.join(","))?;
    for sample in samples {
        let mut row = vec![
            format!("{:.2}", sample.seconds),
            sample.operations.to_string(),
        ];
        row.extend(
            sample
                .rss
                .iter()
                .chain(&sample.disk)
                .map(|v| format!("{v:.2}")),
        );
        writeln!(out, "{}", row.join(","))?;
    }
    out.flush()
}

fn summarize(options: &SoakOptions, samples: &[Sample], tally: &WorkerTally) -> SoakSummary {
    let total = samples.last().map_or(0, |sample| sample.operations);
    let warmup = (total as f64 * options.warmup.clamp(0.0, 0.95)) as u64;
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.operations >= warmup).collect();
    let processes = options
        .watch
        .iter()
        .enumerate()
        .map(|(index, process)| {
            let series: Vec<f64> = samples.iter().map(|s| s.rss[index]).collect();
            let points: Vec<(f64, f64)> = settled
                .iter()
                .map(|s| (s.operations as f64, s.rss[index]))
                .filter(|(_, rss)| rss.is_finite())
                .collect();
            ProcessSummary {
                name: process.name.clone(),
                start_mib: series.first().copied().unwrap_or(f64::NAN),
                peak_mib: series
                    .iter()
                    .copied()
                    .filter(|v| v.is_finite())
                    .fold(0.0, f64::max),
                end_mib: series.last().copied().unwrap_or(f64::NAN),
                slope_mib_per_100k: slope(&points).map(|per_op| per_op * 100_000.0),
            }
        })
        .collect();
    let directories = options
        .watch_dir
        .iter()
        .enumerate()
        .map(|(index, dir)| DirectorySummary {
            name: dir.name.clone(),
            peak_mib: samples
                .iter()
                .map(|s| s.disk[index])
                .filter(|v| v.is_finite())
                .fold(0.0, f64::max),
            end_mib: samples.last().map_or(f64::NAN, |s| s.disk[index]),
        })
        .collect();
    SoakSummary {
        operations: tally
            .kinds
            .iter()
            .map(|(kind, count)| (kind.name().to_owned(), *count))
            .collect(),
        warmup_operations: warmup,
        samples: samples.len(),
        processes,
        directories,
    }
}

/// The least-squares slope of y over x (None with fewer than 3 points or no spread in x).
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    (variance > 0.0).then(|| covariance / variance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|x| (x as f64 * 1000.0, 5.0 + x as f64))
            .collect();
        assert!((slope(&line).expect("slope") - 0.001).abs() < 1e-12);
        let flat: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 40.0)).collect();
        assert_eq!(slope(&flat), Some(0.0));
        assert_eq!(slope(&line[..2]), None);
    }

    #[test]
    fn named_values_parse() {
        let process: Named<u32> = parse_named("meta-1=1234").expect("parses");
        assert_eq!((process.name.as_str(), process.value), ("meta-1", 1234));
        assert!(parse_named::<u32>("meta-1").is_err());
        assert!(parse_named::<u32>("=5").is_err());
        assert!(parse_named::<u32>("serve=x").is_err());
    }

    #[test]
    fn patterns_are_sized_and_distinct() {
        assert_eq!(pattern("a", 10).len(), 10);
        assert_ne!(pattern("a", 64), pattern("b", 64));
        assert_eq!(pattern("a", 0).len(), 1);
    }

    #[test]
    fn directory_sizes_add_up_files_below() {
        let dir = std::env::temp_dir().join(format!("wharf-soak-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("a"), [0u8; 100]).expect("write");
        std::fs::write(dir.join("sub/b"), [0u8; 23]).expect("write");
        assert_eq!(directory_bytes(&dir), Some(123));
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(directory_bytes(&dir), None);
    }
}

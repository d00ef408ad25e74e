//! Garbage collection under load, on one `wharf serve` that sweeps every 100 ms with a 300 ms
//! upload grace. Four clients, one repository each across two namespaces, push images and
//! multi-arch indexes over a pool of shared layers, move and delete tags, delete manifests (and
//! are refused where an index or a manifest still uses what they delete), pull, and run
//! `wharf admin gc`, all at once for a fixed time. Each client owns its repository, so it knows
//! exactly what every tag and manifest must hold: afterwards each of those bytes must read back
//! and fsck must agree; then everything is deleted and every blob file must go. The figures (peak
//! bytes on disk, bytes reclaimed, files removed, collection throughput, operations, 503 retries,
//! seed) are printed; `GC_STRESS_SEED` replays a run's choices (not its timing).
//!
//! ```text
//! model   Blob, Stored, RepoModel (what each repository must hold), Tally
//! client  Repo over HTTP, Answer, blob uploads, read-back checks, image_manifest
//! worker  Worker: the random steps of the load, each checked against its model
//! ```

mod client;
#[path = "../common/mod.rs"]
mod common;
mod model;
mod worker;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::serve::{fast_gc_config, files_under, Serve};
use common::{until, Registry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use client::Repo;
use model::{Blob, RepoModel, Tally};
use worker::Worker;

/// The grace `fast_gc_config` is given below: how long an upload stays linked with no manifest.
const UPLOAD_GRACE: Duration = Duration::from_millis(300);
/// Meta stamps links in whole milliseconds; a race is judged with this much margin.
const CLOCK_SLACK: Duration = Duration::from_millis(10);
const LOAD_TIME: Duration = Duration::from_secs(15);
/// A second bound on the load, should every request be answered at once.
const MAX_STEPS_PER_WORKER: usize = 5_000;
const FSCK_DEADLINE: Duration = Duration::from_secs(20);
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
const REPOSITORIES: [&str; 4] = [
    "stress-a/web",
    "stress-a/api",
    "stress-b/web",
    "stress-b/db",
];
const NAMESPACES: [&str; 2] = ["stress-a", "stress-b"];
const TAGS: [&str; 4] = ["latest", "stable", "edge", "v1"];
const POOL_LAYERS: usize = 12;
const MAX_LAYER: usize = 256 * 1024;
const CHUNK: usize = 64 * 1024;
/// Uploads of one blob answered 503: a deletion fence refuses commits of the digest for about
/// two seconds after the collector deleted a copy, and each refusal asks for a second's pause.
const UPLOAD_ATTEMPTS: u32 = 6;
/// Pushes of one image whose manifest PUT lost a blob to the collector legitimately. Each such
/// loss is a race the registry allows (a blob unused for longer than the grace); on a loaded
/// 2-core machine (three of these tests at once, or a whole CI run) a push from HEADs to its
/// manifest PUT can take longer than the 300 ms grace five times in a row, so the bound is
/// generous. A real fault fails at once: any other refusal, or a blob lost inside the grace.
const IMAGE_ATTEMPTS: u32 = 12;
const TRAIL_LENGTH: usize = 16;
const LOG_TAIL_LINES: usize = 120;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const HEAD_RACE: &str = "manifest PUT 400: a blob HEAD found, unused, was collected (pushed again)";
const GRACE_RACE: &str = "manifest PUT 400: a blob committed over the grace ago was collected";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_under_concurrent_pushes_moves_and_deletes_never_loses_a_referenced_byte() {
    let seed = match std::env::var("GC_STRESS_SEED") {
        Ok(text) => text.parse().expect("GC_STRESS_SEED is a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("gc_stress: seed {seed} (GC_STRESS_SEED={seed} replays the choices)");
    let serve = Arc::new(Serve::start(&fast_gc_config(300, 60_000, 1_000), &[]).await);
    let registry = Registry::new(serve.base.clone());
    let blobs_dir = serve.blob_dir().join("blobs");
    let or_fail = |error: String| -> ! { fail_with_log(&serve, &error) };
    gc_counters(&registry).await.unwrap_or_else(|e| or_fail(e));

    let load_started = Instant::now();
    let workers = run_load(&serve, seed).await;
    let mut workers = workers.unwrap_or_else(|e| or_fail(e));
    let load_time = load_started.elapsed();
    let peak = files_under(&blobs_dir);
    let at_peak = gc_counters(&registry).await.unwrap_or_else(|e| or_fail(e));
    let mut tally = Tally::default();
    for worker in &workers {
        tally.merge(&worker.tally);
    }
    let verified = verify_all(&workers).await.unwrap_or_else(|e| or_fail(e));
    let fsck = wait_for_fsck(&serve, "after the load").await;
    fsck.unwrap_or_else(|e| or_fail(e));
    let drain = drain(&serve, &registry, &mut workers).await;
    let drain = drain.unwrap_or_else(|e| or_fail(e));
    let after = files_under(&blobs_dir);

    eprintln!(
        "gc_stress: seed {seed}; load {load_time:.1?} by {} workers; {verified} manifests verified \
         with every blob under them\n\
         gc_stress: peak in blobs/: {} files, {} bytes; after the drain: {} files, {} bytes; \
         reclaimed {} bytes\n\
         gc_stress: collector during the load: {} files, {} bytes (wharf_gc_* counters)",
        workers.len(),
        peak.0,
        peak.1,
        after.0,
        after.1,
        peak.1 - after.1,
        at_peak.blobs_deleted,
        at_peak.bytes_reclaimed,
    );
    let throughput = drain.print(&serve);
    eprintln!("gc_stress: operations: {:#?}", tally.0);
    assert_eq!(after, (0, 0), "blobs/ is empty after the drain");
    assert!(throughput.is_finite() && throughput > 0.0, "{throughput}");
    assert!(tally.get("image pushed") > 0 && tally.get("manifest deleted by digest") > 0);
}

/// Runs one worker per repository for `LOAD_TIME`; returns them with their models, or every
/// failure at once.
async fn run_load(serve: &Arc<Serve>, seed: u64) -> Result<Vec<Worker>, String> {
    let mut pool_rng = StdRng::seed_from_u64(seed);
    let pool: Vec<Blob> = (0..POOL_LAYERS)
        .map(|_| {
            let len = pool_rng.gen_range(1024..=MAX_LAYER);
            Blob::random(&mut pool_rng, len)
        })
        .collect();
    let pool = Arc::new(pool);
    let stop_at = Instant::now() + LOAD_TIME;
    let mut handles = Vec::new();
    for (id, name) in REPOSITORIES.into_iter().enumerate() {
        let worker = Worker {
            id,
            repo: Repo {
                registry: Registry::new(serve.base.clone()),
                name,
            },
            serve: Arc::clone(serve),
            pool: Arc::clone(&pool),
            rng: StdRng::seed_from_u64(seed.wrapping_add(id as u64 + 1)),
            model: RepoModel::default(),
            tally: Tally::default(),
            images_made: 0,
            trail: VecDeque::new(),
        };
        handles.push(tokio::spawn(worker.run(stop_at)));
    }
    let (mut workers, mut errors) = (Vec::new(), Vec::new());
    for handle in handles {
        match handle.await {
            Ok(Ok(worker)) => workers.push(worker),
            Ok(Err(error)) => errors.push(error),
            Err(error) => errors.push(format!("a worker panicked: {error}")),
        }
    }
    if errors.is_empty() {
        Ok(workers)
    } else {
        Err(errors.join("\n\n"))
    }
}

/// Every manifest the workers still hold, through each tag and by digest, with every blob under
/// it; a tag not in use must not resolve. Returns how many manifests were verified.
async fn verify_all(workers: &[Worker]) -> Result<usize, String> {
    let mut verified = 0;
    for Worker { repo, model, .. } in workers {
        for (tag, digest) in &model.tags {
            let stored = model
                .manifests
                .get(digest)
                .ok_or("a tag without manifest")?;
            repo.check_manifest(tag, stored).await?;
        }
        for digest in model.manifests.keys() {
            if !model.listed_by_index(digest) {
                repo.verify_tree(model, digest).await?;
            }
        }
        verified += model.manifests.len();
        for tag in TAGS.iter().filter(|tag| !model.tags.contains_key(**tag)) {
            let request = repo.request(Method::GET, &format!("manifests/{tag}"));
            let answer = repo.send(request, "manifest GET").await?;
            answer.expect(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "GET of a tag not in use",
            )?;
        }
    }
    Ok(verified)
}

/// What deleting everything took.
struct Drain {
    deletes: u64,
    /// Blob files (and their bytes) in `blobs/` when the deletes began.
    files: usize,
    bytes: u64,
    /// From the first DELETE, and from the last DELETE's answer, until `blobs/` held no file.
    first_to_empty: Duration,
    last_to_empty: Duration,
    /// The collector's counters over the drain (taken just before the files were counted).
    counted: GcCounters,
}

/// Deletes every manifest of every worker, then waits until no blob file, no set-aside copy
/// and no usage is left, and fsck agrees.
async fn drain(
    serve: &Arc<Serve>,
    registry: &Registry,
    workers: &mut [Worker],
) -> Result<Drain, String> {
    let blobs_dir = serve.blob_dir().join("blobs");
    let before = gc_counters(registry).await?;
    let (files, bytes) = files_under(&blobs_dir);
    let first_delete = Instant::now();
    let mut deletes = 0;
    for worker in workers.iter_mut() {
        deletes += worker.delete_everything().await?;
    }
    let last_delete = Instant::now();
    let deadline = last_delete + DRAIN_DEADLINE;
    let emptied = wait_until_no_file(&blobs_dir, deadline).await?;
    let what = "trash/ to empty and usage to reach zero";
    until(what, deadline, || nothing_stored(serve)).await?;
    wait_for_fsck(serve, "after the drain").await?;
    let after = gc_counters(registry).await?;
    let counted = GcCounters {
        blobs_deleted: after.blobs_deleted - before.blobs_deleted,
        bytes_reclaimed: after.bytes_reclaimed - before.bytes_reclaimed,
    };
    Ok(Drain {
        deletes,
        files,
        bytes,
        first_to_empty: emptied - first_delete,
        last_to_empty: emptied - last_delete,
        counted,
    })
}

impl Drain {
    /// Prints the drain's figures and what the server left behind; returns the throughput (blob
    /// files removed per second from the last DELETE on), from measurements only.
    fn print(&self, serve: &Serve) -> f64 {
        assert!(self.files > 0 && self.last_to_empty > Duration::ZERO);
        let (last, first) = (
            self.last_to_empty.as_secs_f64(),
            self.first_to_empty.as_secs_f64(),
        );
        let throughput = self.files as f64 / last;
        let staging = files_under(&serve.blob_dir().join("uploads"));
        let log = serve.log();
        let warnings: Vec<String> = log
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .map(without_colours)
            .collect();
        eprintln!(
            "gc_stress: drain: {} DELETEs; {} blob files ({} bytes) removed, blobs/ empty {last:.3} s \
             after the last DELETE = {throughput:.1} files/s ({first:.3} s after the first = {:.1} \
             files/s); collector counters over the drain: {} files, {} bytes\n\
             gc_stress: staging files left in uploads/: {}; serve.log lines at WARN or ERROR: {} \
             {:#?}",
            self.deletes,
            self.files,
            self.bytes,
            self.files as f64 / first,
            self.counted.blobs_deleted,
            self.counted.bytes_reclaimed,
            staging.0,
            warnings.len(),
            &warnings[..warnings.len().min(5)],
        );
        assert!(
            self.counted.blobs_deleted >= self.files as u64
                && self.counted.bytes_reclaimed >= self.bytes,
            "the collector's counters account for at least the files that left blobs/"
        );
        throughput
    }
}

/// Polls `dir` every 10 ms until it holds no file; returns when it was first seen empty. Finer
/// than `until`, since this is where the throughput's time ends.
async fn wait_until_no_file(dir: &Path, deadline: Instant) -> Result<Instant, String> {
    loop {
        let (count, bytes) = files_under(dir);
        let now = Instant::now();
        if count == 0 {
            return Ok(now);
        }
        if now >= deadline {
            let dir = dir.display();
            return Err(format!("{dir} still holds {count} files ({bytes} bytes)"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn nothing_stored(serve: &Arc<Serve>) -> Result<(), String> {
    let (trash, _) = files_under(&serve.blob_dir().join("trash"));
    if trash > 0 {
        return Err(format!("trash/ holds {trash} files"));
    }
    let usage = admin_json(serve, &["usage"]).await?;
    let entries = usage
        .as_array()
        .ok_or_else(|| format!("usage is no array: {usage}"))?;
    let left: Vec<&Value> = entries
        .iter()
        .filter(|entry| NAMESPACES.iter().any(|ns| entry["namespace"] == *ns))
        .filter(|entry| entry["physical_bytes"] != 0 || entry["logical_bytes"] != 0)
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("usage left: {left:?}"))
    }
}

async fn wait_for_fsck(serve: &Arc<Serve>, when: &str) -> Result<(), String> {
    let what = format!("fsck to pass {when}");
    let deadline = Instant::now() + FSCK_DEADLINE;
    let passed = until(&what, deadline, || admin_json(serve, &["fsck"])).await;
    passed.map(drop)
}

/// `wharf admin ARGS` on a blocking thread; its stdout as JSON, or why not.
async fn admin_json(serve: &Arc<Serve>, args: &'static [&'static str]) -> Result<Value, String> {
    let serve = Arc::clone(serve);
    let output = tokio::task::spawn_blocking(move || serve.admin_output(args)).await;
    let output = output.map_err(|e| format!("wharf admin {args:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let status = output.status;
        return Err(format!("wharf admin {args:?}: {status}\n{stdout}{stderr}"));
    }
    serde_json::from_str(&stdout).map_err(|e| format!("wharf admin {args:?}: {e}: {stdout}"))
}

/// The blob node collector's counters as the gateway's `/metrics` shows them (0 until the first
/// deletion registers them).
#[derive(Clone, Copy, Debug, Default)]
struct GcCounters {
    blobs_deleted: u64,
    bytes_reclaimed: u64,
}

async fn gc_counters(registry: &Registry) -> Result<GcCounters, String> {
    let url = format!("{}/metrics", registry.base);
    let response = registry.http.get(url).send().await;
    let response = response.map_err(|e| format!("GET /metrics: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("GET /metrics: {status} {text}"));
    }
    let blobs_deleted = metric(&text, "wharf_gc_blobs_deleted_total");
    let bytes_reclaimed = metric(&text, "wharf_gc_bytes_reclaimed_total");
    Ok(GcCounters {
        blobs_deleted,
        bytes_reclaimed,
    })
}

/// The sum of `name`'s samples in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> u64 {
    let samples = text
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
    samples.sum::<f64>() as u64
}

/// `line` without the ANSI colour codes `wharf serve` writes into its log.
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(escape) = rest.find('\u{1b}') {
        plain.push_str(&rest[..escape]);
        let code_end = rest[escape..]
            .find('m')
            .map_or(rest.len(), |end| escape + end + 1);
        rest = &rest[code_end..];
    }
    plain.push_str(rest);
    plain
}

/// Fails with `error` and the end of the server's log; the whole log is kept in the target's
/// temp dir, since the server's own goes with it.
fn fail_with_log(serve: &Serve, error: &str) -> ! {
    let log = serve.log();
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gc_stress-serve.log");
    let note = match std::fs::write(&kept, &log) {
        Ok(()) => format!("whole log kept in {}", kept.display()),
        Err(e) => format!("could not keep the whole log: {e}"),
    };
    let mut tail: Vec<&str> = log.lines().rev().take(LOG_TAIL_LINES).collect();
    tail.reverse();
    let tail = tail.join("\n");
    panic!("{error}\n--- last {LOG_TAIL_LINES} lines of serve.log ({note}) ---\n{tail}");
}

//! Garbage collection under load, on one `wharf serve` that sweeps every 100 ms with a 300 ms
//! upload grace. Four clients, one repository each across two namespaces, push images and
//! multi-arch indexes over a pool of shared layers, move and delete tags, delete manifests (and
//! are refused where an index or a manifest still uses what they delete), pull, and run
//! `wharf admin gc`, all at once for a fixed time. Each client owns its repository, so it knows
//! exactly what every tag and manifest must hold: afterwards each of those bytes must read back
//! and fsck must agree; then everything is deleted and every blob file must go. The figures (peak
//! bytes on disk, bytes reclaimed, files removed, collection throughput, operations, 503 retries,
//! seed) are printed; `GC_STRESS_SEED` replays a run's choices (not its timing).

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::serve::{fast_gc_config, files_under, Serve};
use common::{until, Registry};
use oci_model::Digest;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

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
/// Pushes of one image whose manifest PUT lost a blob to the collector legitimately.
const IMAGE_ATTEMPTS: u32 = 5;
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

/// Bytes under their digest.
#[derive(Clone)]
struct Blob {
    digest: Digest,
    data: Arc<Vec<u8>>,
}

impl Blob {
    fn new(data: Vec<u8>) -> Blob {
        let digest = Digest::sha256_of(&data);
        let data = Arc::new(data);
        Blob { digest, data }
    }

    fn random(rng: &mut StdRng, len: usize) -> Blob {
        let mut data = vec![0; len];
        rng.fill_bytes(&mut data);
        Blob::new(data)
    }
}

/// A manifest the registry acknowledged, as it was pushed.
struct Stored {
    media_type: &'static str,
    bytes: Vec<u8>,
    /// Config then layers (images only).
    blobs: Vec<Blob>,
    /// Child manifests (indexes only).
    children: Vec<Digest>,
}

impl Stored {
    fn image(bytes: Vec<u8>, blobs: Vec<Blob>) -> Stored {
        let (media_type, children) = (OCI_MANIFEST, Vec::new());
        Stored {
            media_type,
            bytes,
            blobs,
            children,
        }
    }

    fn index(bytes: Vec<u8>, children: Vec<Digest>) -> Stored {
        let (media_type, blobs) = (OCI_INDEX, Vec::new());
        Stored {
            media_type,
            bytes,
            blobs,
            children,
        }
    }
}

/// One worker's exact view of its repository: the manifests in it and where each tag points.
#[derive(Default)]
struct RepoModel {
    manifests: BTreeMap<Digest, Stored>,
    tags: BTreeMap<String, Digest>,
}

impl RepoModel {
    fn listed_by_index(&self, digest: &Digest) -> bool {
        let mut manifests = self.manifests.values();
        manifests.any(|stored| stored.children.contains(digest))
    }

    fn uses_blob(&self, digest: &Digest) -> bool {
        let mut blobs = self.manifests.values().flat_map(|stored| &stored.blobs);
        blobs.any(|blob| blob.digest == *digest)
    }

    /// Removes `digest` and its tags, then what lived only through it (children no live index
    /// lists and no tag names), as meta does in the same entry. Returns what went.
    fn remove(&mut self, digest: &Digest) -> Vec<Digest> {
        let mut removed = Vec::new();
        let mut pending = vec![digest.clone()];
        while let Some(current) = pending.pop() {
            let Some(stored) = self.manifests.remove(&current) else {
                continue;
            };
            self.tags.retain(|_, target| *target != current);
            for child in stored.children {
                let tagged = self.tags.values().any(|target| *target == child);
                if !tagged && !self.listed_by_index(&child) {
                    pending.push(child);
                }
            }
            removed.push(current);
        }
        removed
    }
}

/// Operations and outcomes by name.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, u64>);

impl Tally {
    fn add(&mut self, what: &'static str, count: u64) {
        *self.0.entry(what).or_default() += count;
    }

    fn count(&mut self, what: &'static str) {
        self.add(what, 1);
    }

    fn get(&self, what: &str) -> u64 {
        self.0.get(what).copied().unwrap_or(0)
    }

    fn merge(&mut self, other: &Tally) {
        for (what, count) in &other.0 {
            self.add(what, *count);
        }
    }
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

/// One client: owns its repository, and keeps the last operations it began for a failure report.
struct Worker {
    id: usize,
    repo: Repo,
    serve: Arc<Serve>,
    pool: Arc<Vec<Blob>>,
    rng: StdRng,
    model: RepoModel,
    tally: Tally,
    images_made: u64,
    trail: VecDeque<String>,
}

impl Worker {
    async fn run(mut self, stop_at: Instant) -> Result<Worker, String> {
        for _ in 0..MAX_STEPS_PER_WORKER {
            if Instant::now() >= stop_at {
                break;
            }
            if let Err(error) = self.step().await {
                let trail = Vec::from(self.trail).join("\n  ");
                let (id, repo) = (self.id, self.repo.name);
                return Err(format!(
                    "worker {id} ({repo}): {error}\n  last operations (UTC):\n  {trail}"
                ));
            }
        }
        Ok(self)
    }

    async fn step(&mut self) -> Result<(), String> {
        match self.rng.gen_range(0..100) {
            0..30 => self.push_tagged_image().await,
            30..40 => self.push_index().await,
            40..60 => self.delete_manifest().await,
            60..70 => self.delete_tag().await,
            70..75 => self.delete_used_blob().await,
            75..96 => self.pull().await,
            _ => self.admin_gc().await,
        }
    }

    fn note(&mut self, what: String) {
        if self.trail.len() == TRAIL_LENGTH {
            self.trail.pop_front();
        }
        self.trail.push_back(format!("{} {what}", clock()));
    }

    fn random_tag(&mut self) -> &'static str {
        TAGS[self.rng.gen_range(0..TAGS.len())]
    }

    async fn push_tagged_image(&mut self) -> Result<(), String> {
        let tag = self.random_tag();
        let (digest, stored) = self.push_image(Some(tag)).await?;
        if let Some(previous) = self.model.tags.insert(tag.to_owned(), digest.clone()) {
            self.tally.count("image pushed over a tag in use (moved)");
            self.note(format!("tag {tag} moved from {previous} to {digest}"));
        }
        self.model.manifests.insert(digest, stored);
        self.tally.count("image pushed");
        Ok(())
    }

    /// Two fresh platform images by digest, then an OCI index over them under a tag.
    async fn push_index(&mut self) -> Result<(), String> {
        let tag = self.random_tag();
        let (mut entries, mut children) = (Vec::new(), Vec::new());
        for architecture in ["amd64", "arm64"] {
            let (digest, stored) = self.push_image(None).await?;
            entries.push(json!({
                "mediaType": OCI_MANIFEST, "digest": digest.to_string(), "size": stored.bytes.len(),
                "platform": {"architecture": architecture, "os": "linux"},
            }));
            self.model.manifests.insert(digest.clone(), stored);
            children.push(digest);
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let bytes = index.to_string().into_bytes();
        let digest = Digest::sha256_of(&bytes);
        self.note(format!("PUT index {digest} as {tag}"));
        let answer = self.repo.put_manifest(tag, OCI_INDEX, &bytes).await?;
        answer.expect(StatusCode::CREATED, "", "index PUT")?;
        self.model.tags.insert(tag.to_owned(), digest.clone());
        self.model
            .manifests
            .insert(digest, Stored::index(bytes, children));
        self.tally.count("index pushed (over two new images)");
        Ok(())
    }

    /// Pushes a fresh image under `tag`, or by digest. A manifest PUT refused because the
    /// collector took a blob it was entitled to take (see `lost_legitimately`) starts over from
    /// the HEADs; any other refusal fails.
    async fn push_image(&mut self, tag: Option<&str>) -> Result<(Digest, Stored), String> {
        let blobs = self.compose_image();
        let bytes = image_manifest(&blobs);
        let digest = Digest::sha256_of(&bytes);
        let reference = tag.map_or_else(|| digest.to_string(), str::to_owned);
        for _ in 0..IMAGE_ATTEMPTS {
            let mut committed = Vec::with_capacity(blobs.len());
            for blob in &blobs {
                committed.push(self.ensure_blob(blob).await?);
            }
            self.note(format!("PUT image {digest} as {reference}"));
            let answer = self
                .repo
                .put_manifest(&reference, OCI_MANIFEST, &bytes)
                .await?;
            if answer.status == StatusCode::CREATED {
                return Ok((digest, Stored::image(bytes, blobs)));
            }
            let lost = if answer.is(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN") {
                self.lost_legitimately(&blobs, &committed, Instant::now())
            } else {
                None
            };
            let Some(why) = lost else {
                let ages: Vec<String> = committed
                    .iter()
                    .map(|at| at.map_or("HEAD".to_owned(), |at| format!("{:?}", at.elapsed())))
                    .collect();
                return Err(format!(
                    "manifest PUT {reference}: {} {} (blobs committed this long ago: {ages:?}; \
                     none was collectable)",
                    answer.status,
                    answer.text()
                ));
            };
            self.tally.count(why);
        }
        Err(format!("image {digest} refused {IMAGE_ATTEMPTS} times"))
    }

    /// Why the collector may have removed one of `blobs` from the repository before the manifest
    /// PUT was answered, if it may: a blob no manifest of the repository uses stays linked only
    /// for the upload grace after its commit, and one HEAD found may be past it already.
    fn lost_legitimately(
        &self,
        blobs: &[Blob],
        committed: &[Option<Instant>],
        answered: Instant,
    ) -> Option<&'static str> {
        let mut unused = blobs
            .iter()
            .zip(committed)
            .filter(|(blob, _)| !self.model.uses_blob(&blob.digest));
        unused.find_map(|(_, committed)| match committed {
            None => Some(HEAD_RACE),
            Some(at) if answered.duration_since(*at) + CLOCK_SLACK >= UPLOAD_GRACE => {
                Some(GRACE_RACE)
            }
            Some(_) => None,
        })
    }

    /// A fresh config, one to three distinct pool layers and, one time in four, one of its own.
    fn compose_image(&mut self) -> Vec<Blob> {
        self.images_made += 1;
        let labels = json!({
            "worker": self.id.to_string(), "image": self.images_made.to_string(),
            "nonce": self.rng.gen::<u64>().to_string(),
        });
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let mut blobs = vec![Blob::new(config.to_string().into_bytes())];
        let shared = self.rng.gen_range(1..=3);
        blobs.extend(self.pool.choose_multiple(&mut self.rng, shared).cloned());
        if self.rng.gen_bool(0.25) {
            let len = self.rng.gen_range(1..=MAX_LAYER);
            blobs.push(Blob::random(&mut self.rng, len));
        }
        blobs
    }

    /// Makes `blob` present in the repository as clients do: HEAD, and upload only on 404
    /// (monolithic or chunked, at random), again after a 503. Returns when the committing request
    /// was sent, or `None` when HEAD found the blob.
    async fn ensure_blob(&mut self, blob: &Blob) -> Result<Option<Instant>, String> {
        let head = self
            .repo
            .request(Method::HEAD, &format!("blobs/{}", blob.digest));
        let answer = self.repo.send(head, "blob HEAD").await?;
        if answer.status == StatusCode::OK {
            self.tally.count("blob found by HEAD (not pushed)");
            return Ok(None);
        }
        answer.expect(StatusCode::NOT_FOUND, "", "blob HEAD")?;
        for _ in 0..UPLOAD_ATTEMPTS {
            let chunked = self.rng.gen_bool(0.5);
            self.note(format!("upload {} (chunked: {chunked})", blob.digest));
            let upload = if chunked {
                self.tally.count("blob upload, chunked");
                self.repo.upload_chunked(blob).await?
            } else {
                self.tally.count("blob upload, monolithic");
                self.repo.upload_monolithic(blob).await?
            };
            match upload {
                Upload::Committed(at) => return Ok(Some(at)),
                // The pause the registry asks for, as a client honours it: a backoff between
                // attempts, not a wait for something the test could watch instead.
                Upload::Refused(pause) => {
                    self.tally
                        .count("blob upload refused with 503 (pushed again)");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(format!(
            "blob {} refused {UPLOAD_ATTEMPTS} times",
            blob.digest
        ))
    }

    /// Deletes a manifest by digest: usually one a tag points at, else any in the repository.
    /// A child of a live index must be refused (403 DENIED); any other goes with its tags and,
    /// for an index, its untagged children.
    async fn delete_manifest(&mut self) -> Result<(), String> {
        let candidates: Vec<Digest> = if self.rng.gen_bool(0.6) {
            self.model.tags.values().cloned().collect()
        } else {
            self.model.manifests.keys().cloned().collect()
        };
        let Some(digest) = candidates.choose(&mut self.rng) else {
            return Ok(());
        };
        let refused = self.model.listed_by_index(digest);
        self.note(format!(
            "DELETE manifest {digest} (refusal expected: {refused})"
        ));
        let answer = self.repo.delete(&format!("manifests/{digest}")).await?;
        if refused {
            answer.expect(
                StatusCode::FORBIDDEN,
                "DENIED",
                "DELETE of an index's child",
            )?;
            self.tally
                .count("manifest delete refused: child of a live index (403)");
        } else {
            answer.expect(StatusCode::ACCEPTED, "", "manifest DELETE")?;
            let removed = self.model.remove(digest).len() as u64;
            self.tally.count("manifest deleted by digest");
            self.tally
                .add("children removed with their index", removed - 1);
        }
        Ok(())
    }

    /// Deletes a tag (the manifest stays), or one not in use, which must answer 404.
    async fn delete_tag(&mut self) -> Result<(), String> {
        let tag = self.random_tag();
        let present = self.model.tags.contains_key(tag);
        self.note(format!("DELETE tag {tag} (present: {present})"));
        let answer = self.repo.delete(&format!("manifests/{tag}")).await?;
        if present {
            answer.expect(StatusCode::ACCEPTED, "", "tag DELETE")?;
            self.model.tags.remove(tag);
            self.tally.count("tag deleted (manifest stays)");
        } else {
            answer.expect(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "DELETE of no tag",
            )?;
            self.tally.count("delete of a tag not in use (404)");
        }
        Ok(())
    }

    /// A blob a manifest of the repository uses cannot be deleted (403 DENIED).
    async fn delete_used_blob(&mut self) -> Result<(), String> {
        let used: Vec<&Digest> = self
            .model
            .manifests
            .values()
            .flat_map(|stored| stored.blobs.iter().map(|blob| &blob.digest))
            .collect();
        let Some(digest) = used.choose(&mut self.rng).map(|digest| (*digest).clone()) else {
            return Ok(());
        };
        self.note(format!("DELETE used blob {digest}"));
        let answer = self.repo.delete(&format!("blobs/{digest}")).await?;
        answer.expect(StatusCode::FORBIDDEN, "DENIED", "DELETE of a used blob")?;
        self.tally
            .count("blob delete refused: used by a manifest (403)");
        Ok(())
    }

    /// Reads back one manifest of the repository and everything under it, while GC runs.
    async fn pull(&mut self) -> Result<(), String> {
        let digests: Vec<&Digest> = self.model.manifests.keys().collect();
        let Some(digest) = digests
            .choose(&mut self.rng)
            .map(|digest| (*digest).clone())
        else {
            return Ok(());
        };
        self.note(format!("pull {digest}"));
        self.repo.verify_tree(&self.model, &digest).await?;
        self.tally
            .count("manifest pulled and verified during the load");
        Ok(())
    }

    async fn admin_gc(&mut self) -> Result<(), String> {
        self.note("wharf admin gc".to_owned());
        let report = admin_json(&self.serve, &["gc"]).await?;
        let field = |name: &str| {
            let value = report[name].as_u64();
            value.ok_or_else(|| format!("wharf admin gc printed no {name}: {report}"))
        };
        let (links, doomed) = (field("links_removed")?, field("blobs_doomed")?);
        field("uploads_expired").and(field("fences_expired"))?;
        self.tally.count("wharf admin gc");
        self.tally.add("wharf admin gc: links removed", links);
        self.tally.add("wharf admin gc: blobs doomed", doomed);
        Ok(())
    }

    /// Deletes every manifest by digest, indexes first: each takes its untagged children along,
    /// so a DELETE of such a child must answer 404 afterwards. Returns the DELETEs issued.
    async fn delete_everything(&mut self) -> Result<u64, String> {
        let indexes: Vec<Digest> = self
            .model
            .manifests
            .iter()
            .filter(|(_, stored)| !stored.children.is_empty())
            .map(|(digest, _)| digest.clone())
            .collect();
        let mut taken_along = Vec::new();
        for digest in &indexes {
            let answer = self.repo.delete(&format!("manifests/{digest}")).await?;
            answer.expect(StatusCode::ACCEPTED, "", "index DELETE")?;
            taken_along.extend(self.model.remove(digest).into_iter().skip(1));
        }
        for child in &taken_along {
            let answer = self.repo.delete(&format!("manifests/{child}")).await?;
            let what = "DELETE of a child gone with its index";
            answer.expect(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", what)?;
        }
        let rest: Vec<Digest> = self.model.manifests.keys().cloned().collect();
        for digest in &rest {
            let answer = self.repo.delete(&format!("manifests/{digest}")).await?;
            answer.expect(StatusCode::ACCEPTED, "", "manifest DELETE")?;
            self.model.remove(digest);
        }
        Ok((indexes.len() + taken_along.len() + rest.len()) as u64)
    }
}

fn image_manifest(blobs: &[Blob]) -> Vec<u8> {
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
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first OCI error code of the body; empty when there is none.
    fn code(&self) -> String {
        let errors: Option<Value> = serde_json::from_slice(&self.body).ok();
        let code =
            errors.and_then(|errors| errors["errors"][0]["code"].as_str().map(str::to_owned));
        code.unwrap_or_default()
    }

    /// Whether the status is `status` and, unless `code` is empty, the OCI error code `code`.
    fn is(&self, status: StatusCode, code: &str) -> bool {
        self.status == status && (code.is_empty() || self.code() == code)
    }

    fn expect(&self, status: StatusCode, code: &str, what: &str) -> Result<(), String> {
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

enum Upload {
    /// 201; when the request that committed the blob was sent.
    Committed(Instant),
    /// 503 UNAVAILABLE, a conflict with the collector: push the whole blob again after this.
    Refused(Duration),
}

/// One repository of the registry, over HTTP.
struct Repo {
    registry: Registry,
    name: &'static str,
}

impl Repo {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}/v2/{}/{path}", self.registry.base, self.name);
        self.registry.http.request(method, url)
    }

    async fn send(&self, request: RequestBuilder, what: &str) -> Result<Answer, String> {
        let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.bytes().await.map_err(|e| format!("{what}: {e}"))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn delete(&self, path: &str) -> Result<Answer, String> {
        self.send(self.request(Method::DELETE, path), "DELETE")
            .await
    }

    async fn put_manifest(
        &self,
        reference: &str,
        kind: &str,
        bytes: &[u8],
    ) -> Result<Answer, String> {
        let request = self.request(Method::PUT, &format!("manifests/{reference}"));
        let request = request.header("Content-Type", kind).body(bytes.to_vec());
        self.send(request, "manifest PUT").await
    }

    async fn upload_monolithic(&self, blob: &Blob) -> Result<Upload, String> {
        let path = format!("blobs/uploads/?digest={}", blob.digest);
        let request = self.request(Method::POST, &path).body(blob.data.to_vec());
        let sent = Instant::now();
        upload_outcome(self.send(request, "monolithic POST").await?, sent)
    }

    async fn upload_chunked(&self, blob: &Blob) -> Result<Upload, String> {
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
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={}", blob.digest);
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
    async fn verify_tree(&self, model: &RepoModel, digest: &Digest) -> Result<(), String> {
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

    async fn check_manifest(&self, reference: &str, stored: &Stored) -> Result<(), String> {
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

    async fn check_blob(&self, blob: &Blob) -> Result<(), String> {
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

/// UTC time of day in milliseconds, to line a worker's trail up with `serve.log`.
fn clock() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = since_epoch.as_millis() % 86_400_000;
    let (hours, minutes, seconds) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    format!("{hours:02}:{minutes:02}:{seconds:02}.{:03}", ms % 1000)
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

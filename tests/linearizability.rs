//! Issue 15, part 3: tags are linearizable registers under faults. Concurrent clients spread
//! over both gateways of a cluster put manifests to a handful of tags (each write a distinct
//! manifest, so a digest names one write), read the tags back and delete them, recording each
//! request's invocation and completion on one monotonic clock and its answer, while a chaos task
//! cuts voters off, stops and SIGKILLs the meta leader and restarts members. Each history is then
//! checked by `lincheck` for a register per tag (`PUT` writes, `GET` reads, `DELETE` of the tag
//! empties it: 202 says it existed, 404 `MANIFEST_UNKNOWN` that it did not).
//!
//! Only definite answers count: a write or delete that timed out, lost its connection or got a
//! 5xx may or may not have taken effect (indeterminate), and such a read is dropped. Any other
//! answer (a 4xx besides the 404s above) fails the test.
//!
//! Two harnesses, as the faults need: partitions of a voter (Raft traffic cut, clients still
//! reach it) exist only in `InProcessCluster`, where a stop is graceful; SIGKILL needs real
//! processes (`wharf dev cluster`). Each runs `LINCHECK_HISTORIES` histories (default 2 in-process,
//! 1 on processes) of at least `LINCHECK_OPS` operations (200) from `LINCHECK_CLIENTS` clients (6)
//! over `LINCHECK_TAGS` tags (3), each client pausing up to `LINCHECK_THINK_MS` (30) between
//! requests; `benches/linearizability.sh` runs the long version (with `LINCHECK_KEEP_GOING`, which
//! checks every history before failing). Every history prints one `LINCHECK ...` line of figures;
//! a violation also writes the whole history under the target directory and prints the failing
//! tag's history, minimised.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_api::ReplicationPolicy;
use cluster_client::{AdminClient, RetryPolicy};
use common::dev::DevCluster;
use common::Registry;
use lincheck::{check, minimise, Limits, Op, Operation, Outcome, Verdict};
use oci_model::Digest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use test_cluster::{InProcessCluster, Role};

const REPO: &str = "lin/tags";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Longer than a gateway spends on one request (meta's retry policy gives up after 10 s); a
/// request still unanswered then is indeterminate.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Every wait on a condition (progress, a leader, the clients' end) is bounded by this.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long a fault is held before it is repaired.
const HOLD: Duration = Duration::from_secs(2);

type Record = Operation<String, String>;

/// The run's size, from the environment.
#[derive(Clone, Copy, Debug)]
struct Settings {
    histories: usize,
    ops: usize,
    clients: usize,
    tags: usize,
    think_ms: u64,
}

impl Settings {
    fn from_env(default_histories: usize) -> Settings {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
                })
                .unwrap_or(default)
        };
        Settings {
            histories: var("LINCHECK_HISTORIES", default_histories),
            ops: var("LINCHECK_OPS", 200),
            clients: var("LINCHECK_CLIENTS", 6).max(1),
            tags: var("LINCHECK_TAGS", 3).max(1),
            think_ms: var("LINCHECK_THINK_MS", 30) as u64,
        }
    }
}

/// One history being recorded: the operations, the labels of the values written, the faults.
struct Recorder {
    origin: Instant,
    operations: Mutex<Vec<Record>>,
    /// Manifest digest -> the label of the write that put it (known before the PUT is sent).
    labels: Mutex<HashMap<String, String>>,
    /// Operations with a definite answer so far: the chaos task paces itself on them.
    definite: AtomicUsize,
    /// Answers no register explains (unexpected statuses): each fails the test.
    anomalies: Mutex<Vec<String>>,
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            origin: Instant::now(),
            operations: Mutex::default(),
            labels: Mutex::default(),
            definite: AtomicUsize::new(0),
            anomalies: Mutex::default(),
            events: Mutex::default(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn record(&self, operation: Record) {
        if !operation.is_indeterminate() {
            self.definite.fetch_add(1, Ordering::Relaxed);
        }
        self.operations.lock().expect("lock").push(operation);
    }

    fn event(&self, what: String) {
        let at = self.origin.elapsed().as_secs_f64();
        eprintln!("  {at:7.3} s  {what}");
        self.events
            .lock()
            .expect("lock")
            .push(format!("{at:.3} s: {what}"));
    }

    fn label_of(&self, digest: &str) -> String {
        let labels = self.labels.lock().expect("lock");
        labels
            .get(digest)
            .cloned()
            .unwrap_or_else(|| format!("unknown {digest}"))
    }

    /// Waits until `more` further operations got a definite answer.
    async fn progress(&self, more: usize) {
        let target = self.definite.load(Ordering::Relaxed) + more;
        self.reach(target).await;
    }

    async fn reach(&self, target: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.definite.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the clients made no progress for {DEADLINE:?} ({} of {target} definite)",
                self.definite.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One test client: a closed loop of random operations on random tags through random gateways.
struct Client {
    id: u64,
    http: reqwest::Client,
    gateways: Vec<String>,
    tags: Vec<String>,
    blobs: Arc<ImageBlobs>,
    recorder: Arc<Recorder>,
    rng: StdRng,
    writes: u64,
}

/// The config and layer every manifest names (pushed once).
struct ImageBlobs {
    config: (Digest, usize),
    layer: (Digest, usize),
}

/// An answer, or none.
enum Answer {
    Status(StatusCode, reqwest::header::HeaderMap, bytes::Bytes),
    Lost,
}

impl Client {
    async fn run(mut self, think_ms: u64, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let tag = self.tags[self.rng.gen_range(0..self.tags.len())].clone();
            let gateway = self.gateways[self.rng.gen_range(0..self.gateways.len())].clone();
            let url = format!("{gateway}/v2/{REPO}/manifests/{tag}");
            match self.rng.gen_range(0..100) {
                0..45 => self.read(&url, tag).await,
                45..85 => self.write(&url, tag).await,
                _ => self.delete(&url, tag).await,
            }
            let pause = self.rng.gen_range(0..=think_ms);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let Ok(response) = request.timeout(REQUEST_TIMEOUT).send().await else {
            return Answer::Lost;
        };
        let (status, headers) = (response.status(), response.headers().clone());
        match response.bytes().await {
            Ok(body) => Answer::Status(status, headers, body),
            Err(_) => Answer::Lost,
        }
    }

    fn finish(&self, tag: String, op: Op<String>, invoked: u64, definite: bool) {
        let outcome = if definite {
            Outcome::Completed(self.recorder.now())
        } else {
            Outcome::Indeterminate
        };
        self.recorder.record(Operation {
            client: self.id,
            key: tag,
            op,
            invoked,
            outcome,
        });
    }

    fn anomaly(&self, what: &str, url: &str, status: StatusCode, body: &[u8]) {
        let body = String::from_utf8_lossy(body);
        let message = format!("client {}: {what} {url}: {status} {body}", self.id);
        self.recorder.anomalies.lock().expect("lock").push(message);
    }

    async fn write(&mut self, url: &str, tag: String) {
        self.writes += 1;
        let label = format!("c{}w{}", self.id, self.writes);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.blobs.config.0.to_string(), "size": self.blobs.config.1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": self.blobs.layer.0.to_string(), "size": self.blobs.layer.1}],
            "annotations": {"lincheck.write": label},
        })
        .to_string();
        let digest = Digest::sha256_of(manifest.as_bytes()).to_string();
        let labels = &self.recorder.labels;
        labels.lock().expect("lock").insert(digest, label.clone());
        let request = self
            .http
            .put(url)
            .header("Content-Type", MANIFEST_TYPE)
            .body(manifest);
        let invoked = self.recorder.now();
        match self.send(request).await {
            Answer::Status(StatusCode::CREATED, ..) => {
                self.finish(tag, Op::Write(label), invoked, true)
            }
            Answer::Status(status, ..) if status.is_server_error() => {
                self.finish(tag, Op::Write(label), invoked, false)
            }
            Answer::Lost => self.finish(tag, Op::Write(label), invoked, false),
            Answer::Status(status, _, body) => self.anomaly("PUT", url, status, &body),
        }
    }

    async fn read(&mut self, url: &str, tag: String) {
        let request = self.http.get(url).header("Accept", MANIFEST_TYPE);
        let invoked = self.recorder.now();
        match self.send(request).await {
            Answer::Status(StatusCode::OK, headers, body) => {
                let digest = headers
                    .get("Docker-Content-Digest")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                let actual = Digest::sha256_of(&body).to_string();
                if digest != actual {
                    self.anomaly(
                        "GET (digest header disagrees with the body)",
                        url,
                        StatusCode::OK,
                        digest.as_bytes(),
                    );
                    return;
                }
                let label = self.recorder.label_of(&actual);
                self.finish(tag, Op::Read(Some(label)), invoked, true);
            }
            Answer::Status(StatusCode::NOT_FOUND, _, body) if manifest_unknown(&body) => {
                self.finish(tag, Op::Read(None), invoked, true)
            }
            // An indeterminate read constrains nothing.
            Answer::Status(status, ..) if status.is_server_error() => {}
            Answer::Lost => {}
            Answer::Status(status, _, body) => self.anomaly("GET", url, status, &body),
        }
    }

    async fn delete(&mut self, url: &str, tag: String) {
        let request = self.http.delete(url);
        let invoked = self.recorder.now();
        match self.send(request).await {
            Answer::Status(StatusCode::ACCEPTED, ..) => {
                self.finish(tag, Op::Delete(Some(true)), invoked, true)
            }
            Answer::Status(StatusCode::NOT_FOUND, _, body) if manifest_unknown(&body) => {
                self.finish(tag, Op::Delete(Some(false)), invoked, true)
            }
            Answer::Status(status, ..) if status.is_server_error() => {
                self.finish(tag, Op::Delete(None), invoked, false)
            }
            Answer::Lost => self.finish(tag, Op::Delete(None), invoked, false),
            Answer::Status(status, _, body) => self.anomaly("DELETE", url, status, &body),
        }
    }
}

fn manifest_unknown(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains("MANIFEST_UNKNOWN")
}

/// Pushes the blobs every manifest names, retrying while the cluster settles.
async fn push_blobs(gateway: &str) -> Arc<ImageBlobs> {
    let registry = Registry::new(gateway.to_owned());
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = common::random_bytes(4096);
    let deadline = Instant::now() + DEADLINE;
    let push = |data: Vec<u8>| {
        let registry = &registry;
        common::until("a blob push", deadline, move || {
            let data = data.clone();
            async move { registry.push_blob_monolithic(REPO, &data).await }
        })
    };
    let config_digest = push(config.to_vec()).await.expect("config pushed");
    let layer_digest = push(layer.clone()).await.expect("layer pushed");
    Arc::new(ImageBlobs {
        config: (config_digest, config.len()),
        layer: (layer_digest, layer.len()),
    })
}

/// Runs one history: the clients until the chaos is over and `ops` operations are definite.
async fn record_history<F: std::future::Future<Output = ()>>(
    number: usize,
    settings: Settings,
    gateways: &[String],
    blobs: &Arc<ImageBlobs>,
    recorder: Arc<Recorder>,
    chaos: F,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let tags: Vec<String> = (0..settings.tags)
        .map(|t| format!("h{number}-t{t}"))
        .collect();
    let clients: Vec<_> = (0..settings.clients as u64)
        .map(|id| {
            let client = Client {
                id,
                http: reqwest::Client::new(),
                gateways: gateways.to_vec(),
                tags: tags.clone(),
                blobs: blobs.clone(),
                recorder: recorder.clone(),
                rng: StdRng::from_entropy(),
                writes: 0,
            };
            tokio::spawn(client.run(settings.think_ms, stop.clone()))
        })
        .collect();
    chaos.await;
    recorder.reach(settings.ops).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(REQUEST_TIMEOUT + DEADLINE, client)
            .await
            .expect("a client stops in time")
            .expect("client task");
    }
}

/// Checks a recorded history and prints its figures; `Err` with the explanation unless it is
/// linearizable.
fn judge(
    harness: &str,
    number: usize,
    recorder: &Recorder,
    duration: Duration,
) -> Result<(), String> {
    let operations = recorder.operations.lock().expect("lock").clone();
    let events = recorder.events.lock().expect("lock").clone();
    let anomalies = recorder.anomalies.lock().expect("lock").clone();
    let count =
        |matches: fn(&Op<String>) -> bool| operations.iter().filter(|o| matches(&o.op)).count();
    let report = check(&operations, Limits::default()).expect("a well-formed history");
    let indeterminate = operations.iter().filter(|o| o.is_indeterminate()).count();
    println!(
        "LINCHECK harness={harness} history={number} operations={} writes={} reads={} deletes={} \
         indeterminate={indeterminate} chaos_events={} seconds={:.1} check_ms={:.2} steps={} verdict={:?}",
        operations.len(),
        count(|op| matches!(op, Op::Write(_))),
        count(|op| matches!(op, Op::Read(_))),
        count(|op| matches!(op, Op::Delete(_))),
        events.len(),
        duration.as_secs_f64(),
        report.elapsed.as_secs_f64() * 1e3,
        report.steps(),
        report.verdict(),
    );
    if !anomalies.is_empty() {
        return Err(format!(
            "answers no register explains:\n{}",
            anomalies.join("\n")
        ));
    }
    match report.verdict() {
        Verdict::Linearizable => Ok(()),
        Verdict::Unknown => Err(format!(
            "the checker could not decide within its bounds:\n{report}"
        )),
        Verdict::NotLinearizable => {
            let mut text = format!("{report}faults:\n  {}\n", events.join("\n  "));
            for violation in report.violations() {
                let mut small = minimise(&violation.operations, Limits::default());
                small.sort_by_key(|operation| operation.invoked);
                let _ = writeln!(text, "minimised history of tag {}:", violation.key);
                for operation in &small {
                    let _ = writeln!(text, "  {operation}");
                }
            }
            let path = save(harness, number, &operations, &text);
            Err(format!("history {number} ({harness}) is not linearizable (whole history in {path}):\n{text}"))
        }
    }
}

/// Collects the histories' verdicts: the first failure ends the test, unless
/// `LINCHECK_KEEP_GOING` is set (the bench), which reports every failure at the end.
struct Verdicts {
    keep_going: bool,
    failures: Vec<String>,
}

impl Verdicts {
    fn new() -> Verdicts {
        Verdicts {
            keep_going: std::env::var_os("LINCHECK_KEEP_GOING").is_some(),
            failures: Vec::new(),
        }
    }

    fn add(&mut self, verdict: Result<(), String>) {
        if let Err(failure) = verdict {
            assert!(self.keep_going, "{failure}");
            eprintln!("{failure}");
            self.failures.push(failure);
        }
    }

    fn finish(self, histories: usize) {
        assert!(
            self.failures.is_empty(),
            "{} of {histories} histories failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// Writes a history and its explanation under the target directory; returns the path.
fn save(harness: &str, number: usize, operations: &[Record], explanation: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("linearizability");
    let path = dir.join(format!("{harness}-history-{number}.txt"));
    let mut text = explanation.to_owned();
    let mut sorted = operations.to_vec();
    sorted.sort_by_key(|operation| operation.invoked);
    for operation in &sorted {
        let _ = writeln!(text, "{operation}");
    }
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text));
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_are_linearizable_through_partitions_stops_and_restarts() {
    let settings = Settings::from_env(2);
    let policy = ReplicationPolicy {
        replicas: 1,
        write_quorum: 0,
    };
    let mut cluster = InProcessCluster::start(3, 2, 2, policy)
        .await
        .expect("cluster starts");
    let gateways = vec![cluster.gateway_url(1), cluster.gateway_url(2)];
    let blobs = push_blobs(&gateways[0]).await;
    let mut verdicts = Verdicts::new();
    for number in 0..settings.histories {
        let recorder = Arc::new(Recorder::new());
        eprintln!("history {number} (in-process):");
        let started = Instant::now();
        let chaos = in_process_chaos(&mut cluster, number, settings, recorder.clone());
        record_history(number, settings, &gateways, &blobs, recorder.clone(), chaos).await;
        verdicts.add(judge("in-process", number, &recorder, started.elapsed()));
    }
    cluster.shutdown().await;
    verdicts.finish(settings.histories);
}

/// A partition of a voter (the leader in even histories, a follower in odd ones), a stop and
/// restart of the leader, then restarts of a gateway and a blob node, each with the load running
/// before and after.
async fn in_process_chaos(
    cluster: &mut InProcessCluster,
    number: usize,
    settings: Settings,
    recorder: Arc<Recorder>,
) {
    let ids = cluster.meta_ids();
    recorder.reach(settings.ops / 6).await;
    let leader = cluster.wait_for_leader(DEADLINE).await.expect("a leader");
    let cut = if number % 2 == 1 {
        *ids.iter().find(|id| **id != leader).expect("a follower")
    } else {
        leader
    };
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != cut).collect();
    let role = if cut == leader {
        "the leader"
    } else {
        "a follower"
    };
    recorder.event(format!(
        "partition: meta {cut} ({role}) cut off from {others:?}"
    ));
    cluster.partition(&[cut], &others).expect("partition");
    tokio::time::sleep(HOLD).await;
    cluster.heal();
    recorder.event("heal".to_owned());
    recorder.progress(settings.ops / 6).await;

    let leader = cluster.wait_for_leader(DEADLINE).await.expect("a leader");
    recorder.event(format!("stop meta {leader} (the leader)"));
    cluster
        .stop(Role::Meta, leader)
        .await
        .expect("stop the leader");
    recorder.progress(settings.ops / 10).await;
    cluster.restart(Role::Meta, leader).await.expect("restart");
    recorder.event(format!("restarted meta {leader}"));
    recorder.progress(settings.ops / 6).await;

    let gateway = number as u64 % 2 + 1;
    recorder.event(format!("restart gateway {gateway}"));
    cluster
        .restart(Role::Gateway, gateway)
        .await
        .expect("restart a gateway");
    let blob = number as u64 % 2 + 1;
    recorder.event(format!("restart blob node {blob}"));
    cluster
        .restart(Role::Blob, blob)
        .await
        .expect("restart a blob node");
    recorder.progress(settings.ops / 6).await;
}

/// Failed in about a third of its histories before the meta client stopped resending a change
/// whose connection broke mid-call: the killed leader had committed it, the new leader applied
/// the resent copy again after newer writes (a tag showed an old value again, a DELETE that
/// removed the tag answered 404). See benches/README.md, "Linearizability of tags".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_linearizable_through_sigkill_of_the_leader_and_restarts() {
    let settings = Settings::from_env(1);
    let mut cluster = DevCluster::start(3, 2, 2);
    cluster.wait_ready(Duration::from_secs(180)).await;
    let file = cluster.cluster_json().expect("cluster.json");
    let gateways: Vec<String> = file["gateways"]
        .as_array()
        .expect("gateways")
        .iter()
        .map(|url| url.as_str().expect("a gateway url").to_owned())
        .collect();
    let blobs = push_blobs(&gateways[0]).await;
    let mut verdicts = Verdicts::new();
    for number in 0..settings.histories {
        let recorder = Arc::new(Recorder::new());
        eprintln!("history {number} (processes):");
        let started = Instant::now();
        let chaos = process_chaos(&cluster, number, settings, recorder.clone());
        record_history(number, settings, &gateways, &blobs, recorder.clone(), chaos).await;
        verdicts.add(judge("processes", number, &recorder, started.elapsed()));
    }
    let status = cluster.stop(Duration::from_secs(60)).await;
    verdicts.finish(settings.histories);
    assert!(status.success(), "supervisor exit status {status}");
}

/// SIGKILL of the meta leader and its restart, SIGKILL and restart of a gateway, then the new
/// leader killed and restarted at once (`wharf dev restart`), each with the load running
/// before and after.
async fn process_chaos(
    cluster: &DevCluster,
    number: usize,
    settings: Settings,
    recorder: Arc<Recorder>,
) {
    recorder.reach(settings.ops / 6).await;
    let leader = dev_leader(cluster).await;
    recorder.event(format!("SIGKILL meta {leader} (the leader)"));
    cluster
        .member_command("kill", &format!("meta-{leader}"))
        .await;
    tokio::time::sleep(HOLD).await;
    recorder.progress(settings.ops / 10).await;
    cluster
        .member_command("restart", &format!("meta-{leader}"))
        .await;
    recorder.event(format!("restarted meta {leader}"));
    recorder.progress(settings.ops / 6).await;

    let gateway = number % 2 + 1;
    recorder.event(format!("SIGKILL and restart gateway {gateway}"));
    cluster
        .member_command("restart", &format!("gateway-{gateway}"))
        .await;
    recorder.progress(settings.ops / 6).await;

    let leader = dev_leader(cluster).await;
    recorder.event(format!("SIGKILL and restart meta {leader} (the leader)"));
    cluster
        .member_command("restart", &format!("meta-{leader}"))
        .await;
    recorder.progress(settings.ops / 6).await;
}

async fn dev_leader(cluster: &DevCluster) -> u64 {
    let admin =
        AdminClient::new(&cluster.meta_addrs(), RetryPolicy::default()).expect("admin client");
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(leader)) = admin.cluster_status().await.map(|status| status.leader_id) {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "no meta leader within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

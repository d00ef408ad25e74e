//! Wharf as containers: the locally built `wharf:dev` image (`scripts/build-image.sh`), started by
//! testcontainers on a Docker network of the test's own: 3 meta voters, 3 blob nodes, 2 gateways
//! whose port 5000 Docker maps to an ephemeral port on 127.0.0.1. With 2 replicas of every blob,
//! losing the meta leader and a blob node at once loses no pull.
//!
//! Nothing is ever pulled (the image must exist). Every name carries a random run id, so parallel
//! or leftover runs never clash; every container and the network go at the end, on failure too
//! (testcontainers removes its containers on drop, [`DockerRun`] sweeps by label and removes the
//! network). Every wait polls a condition under a deadline.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{until, PushedImage, Registry};
use testcontainers::bollard::models::PortBinding;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const IMAGE: &str = "wharf:dev";
const RUN_LABEL: &str = "wharf.test.run";
const GATEWAY_PORT: u16 = 5000;
/// Start-up, election, blob registration: generous for 8 containers on 2 cores.
const READY: Duration = Duration::from_secs(120);
/// From the kills to a byte-identical pull through the other gateway.
const FAILOVER: Duration = Duration::from_secs(90);
/// The whole scenario: under nextest's terminate-after, so the cleanup guards always get to run.
const BUDGET: Duration = Duration::from_secs(240);
const ADMIN_CALL: Duration = Duration::from_secs(30);

/// The engine address this process was given, before the API shim replaced `DOCKER_HOST`.
static ENGINE_HOST: OnceLock<Option<String>> = OnceLock::new();

/// Runs the docker CLI against the real engine; stdout on success, stderr in the error.
fn docker(args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("docker");
    command.args(args).stdin(Stdio::null());
    match ENGINE_HOST.get().cloned().flatten() {
        Some(host) => command.env("DOCKER_HOST", host),
        None => command.env_remove("DOCKER_HOST"),
    };
    let output = command
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// One run: its id, its network, and the guard that removes both the network and anything left
/// carrying the run's label (one-off admin containers, containers of a scenario that timed out).
struct DockerRun {
    id: String,
    network: String,
    _shim_dir: tempfile::TempDir,
}

impl DockerRun {
    fn create() -> Result<DockerRun, String> {
        ENGINE_HOST.get_or_init(|| std::env::var("DOCKER_HOST").ok());
        docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE])
            .map_err(|e| format!("{IMAGE} must be built first (scripts/build-image.sh): {e}"))?;
        let shim_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        if let Some(socket) = start_api_shim(shim_dir.path())? {
            // Read once, by testcontainers' first client; nextest runs each test in its process.
            std::env::set_var("DOCKER_HOST", format!("unix://{}", socket.display()));
        }
        let id = format!("{:08x}", rand::random::<u32>());
        let network = format!("wharf-{id}");
        docker(&[
            "network",
            "create",
            "--label",
            &format!("{RUN_LABEL}={id}"),
            &network,
        ])?;
        Ok(DockerRun {
            id,
            network,
            _shim_dir: shim_dir,
        })
    }

    fn container(&self, member: &str) -> String {
        format!("wharf-{}-{member}", self.id)
    }

    fn meta_addrs(&self) -> String {
        (1..=3)
            .map(|id| format!("{}:7000", self.container(&format!("meta-{id}"))))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The last lines of every container of the run, for a failure message.
    fn logs(&self) -> String {
        let filter = format!("label={RUN_LABEL}={}", self.id);
        let names = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
            .unwrap_or_default();
        names
            .lines()
            .map(|name| {
                let logs = docker(&["logs", "--tail", "15", name]).unwrap_or_else(|e| e);
                format!("--- {name}\n{logs}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for DockerRun {
    fn drop(&mut self) {
        let filter = format!("label={RUN_LABEL}={}", self.id);
        let left = docker(&["ps", "-aq", "--filter", &filter]).unwrap_or_default();
        let ids: Vec<&str> = left.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            if let Err(e) = docker(&args) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = docker(&["network", "rm", &self.network]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// testcontainers 0.28 (bollard) speaks Docker API 1.53 and does not negotiate, so an engine
/// that answers at most an older version (Debian's 20.10 answers 1.41) refuses every call. When
/// the engine is older, this relay on a Unix socket of the test's own rewrites the version in each
/// request line down to the engine's. It asks the engine to close every connection after one
/// exchange, so request lines are the only bytes it ever reads. `None`: no shim needed.
fn start_api_shim(dir: &Path) -> Result<Option<PathBuf>, String> {
    let engine = docker(&["version", "--format", "{{.Server.APIVersion}}"])?;
    let (major, minor) = engine
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
        .ok_or_else(|| format!("unexpected engine API version {engine:?}"))?;
    let client = testcontainers::bollard::API_DEFAULT_VERSION;
    if (major, minor) >= (client.major_version, client.minor_version) {
        return Ok(None);
    }
    let engine_socket = match ENGINE_HOST.get().cloned().flatten() {
        None => PathBuf::from("/var/run/docker.sock"),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) => PathBuf::from(path),
            None => return Ok(None),
        },
    };
    let from = format!("/v{}.{}/", client.major_version, client.minor_version);
    let to = format!("/v{major}.{minor}/");
    let socket = dir.join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    // Its own runtime: it must outlive the test's, whose container drops still call the engine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let (from, to, engine) = (from.clone(), to.clone(), engine_socket.clone());
                tokio::spawn(async move {
                    if let Err(e) = relay(stream, &engine, &from, &to).await {
                        eprintln!("docker API shim: {e}");
                    }
                });
            }
        })
    });
    Ok(Some(socket))
}

async fn relay(mut client: UnixStream, engine: &Path, from: &str, to: &str) -> std::io::Result<()> {
    let mut head = Vec::new();
    let headers_end = loop {
        let mut chunk = [0u8; 8192];
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 2;
        }
    };
    let (lines, rest) = head.split_at(headers_end);
    let lines = String::from_utf8_lossy(lines);
    let (request_line, headers) = lines.split_once("\r\n").unwrap_or((&lines, ""));
    let mut forwarded = format!("{}\r\n", request_line.replacen(from, to, 1));
    for header in headers.split("\r\n").filter(|h| !h.is_empty()) {
        if !header.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(header);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n");
    let mut engine = UnixStream::connect(engine).await?;
    engine.write_all(forwarded.as_bytes()).await?;
    engine.write_all(rest).await?;
    tokio::io::copy_bidirectional(&mut client, &mut engine).await?;
    Ok(())
}

/// Starts one member; `publish` maps that container port to an ephemeral port on 127.0.0.1
/// (and nothing else is published: the image's EXPOSEd ports stay private).
async fn start(
    run: &DockerRun,
    member: &str,
    args: Vec<String>,
    publish: Option<u16>,
) -> Result<ContainerAsync<GenericImage>, String> {
    let bindings: HashMap<String, Option<Vec<PortBinding>>> = publish
        .map(|port| {
            let binding = PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: None,
            };
            (format!("{port}/tcp"), Some(vec![binding]))
        })
        .into_iter()
        .collect();
    let (name, tag) = IMAGE.split_once(':').unwrap_or((IMAGE, "latest"));
    GenericImage::new(name, tag)
        .with_cmd(args)
        .with_container_name(run.container(member))
        .with_network(run.network.clone())
        .with_label(RUN_LABEL, run.id.clone())
        .with_env_var("WHARF_LOG", "info,openraft=warn")
        .with_startup_timeout(Duration::from_secs(60))
        .with_host_config_modifier(move |host_config| {
            host_config.publish_all_ports = Some(false);
            host_config.port_bindings = Some(bindings.clone());
        })
        .start()
        .await
        .map_err(|e| format!("starting {member}: {e}"))
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// The running members, kept so that they are removed when this is dropped.
struct Cluster {
    metas: Vec<ContainerAsync<GenericImage>>,
    blobs: Vec<ContainerAsync<GenericImage>>,
    _gateways: Vec<ContainerAsync<GenericImage>>,
    urls: Vec<String>,
}

async fn start_cluster(run: &DockerRun) -> Result<Cluster, String> {
    let meta_addrs = run.meta_addrs();
    let mut metas = Vec::new();
    for id in 1..=3 {
        let member = format!("meta-{id}");
        let advertise = format!("{}:7000", run.container(&member));
        let join = format!("{}:7000", run.container("meta-1"));
        let mut command = args(&["meta", "--node-id", &id.to_string(), "--data", "/data"]);
        command.extend(args(&[
            "--grpc-listen",
            "0.0.0.0:7000",
            "--advertise",
            &advertise,
        ]));
        command.extend(match id {
            1 => args(&["--bootstrap"]),
            _ => args(&["--join", &join]),
        });
        metas.push(start(run, &member, command, None).await?);
    }
    let mut blobs = Vec::new();
    for id in 1..=3 {
        let member = format!("blob-{id}");
        let advertise = format!("{}:7100", run.container(&member));
        let mut command = args(&["blob", "--node-id", &id.to_string(), "--data", "/data"]);
        command.extend(args(&[
            "--grpc-listen",
            "0.0.0.0:7100",
            "--advertise",
            &advertise,
        ]));
        command.extend(args(&["--meta", &meta_addrs]));
        blobs.push(start(run, &member, command, None).await?);
    }
    let mut gateways = Vec::new();
    let mut urls = Vec::new();
    for id in 1..=2 {
        let command = args(&["gateway", "--listen", "0.0.0.0:5000", "--meta", &meta_addrs]);
        let gateway = start(run, &format!("gateway-{id}"), command, Some(GATEWAY_PORT)).await?;
        let port = gateway
            .get_host_port_ipv4(GATEWAY_PORT)
            .await
            .map_err(|e| format!("gateway-{id} port: {e}"))?;
        urls.push(format!("http://127.0.0.1:{port}"));
        gateways.push(gateway);
    }
    Ok(Cluster {
        metas,
        blobs,
        _gateways: gateways,
        urls,
    })
}

/// `wharf admin --meta ... cluster ARGS` in a one-off container on the run's network.
async fn admin(run: &DockerRun, cluster_args: &[&str]) -> Result<String, String> {
    let name = run.container(&format!("admin-{:08x}", rand::random::<u32>()));
    let label = format!("{RUN_LABEL}={}", run.id);
    let meta_addrs = run.meta_addrs();
    let mut command = tokio::process::Command::new("docker");
    command
        .args(["run", "--rm", "--name", &name, "--label", &label])
        .args([
            "--network",
            &run.network,
            IMAGE,
            "admin",
            "--meta",
            &meta_addrs,
        ])
        .arg("cluster")
        .args(cluster_args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match ENGINE_HOST.get().cloned().flatten() {
        Some(host) => command.env("DOCKER_HOST", host),
        None => command.env_remove("DOCKER_HOST"),
    };
    let output = match tokio::time::timeout(ADMIN_CALL, command.output()).await {
        Ok(output) => output.map_err(|e| format!("docker run: {e}"))?,
        Err(_) => {
            let _ = docker(&["rm", "-f", &name]);
            return Err(format!("admin {cluster_args:?} timed out"));
        }
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

async fn cluster_status(run: &DockerRun) -> Result<serde_json::Value, String> {
    let text = admin(run, &["status"]).await?;
    serde_json::from_str(&text).map_err(|e| format!("status is not JSON ({e}): {text}"))
}

/// A leader, 3 voters and 3 blob nodes up, as the leader sees them.
fn is_ready(status: &serde_json::Value) -> Result<u64, String> {
    let voters = status["meta_members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "Voter").count());
    let blobs_up = status["map"]["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["state"] == "Up").count());
    match status["leader_id"].as_u64() {
        Some(leader) if voters == 3 && blobs_up == 3 => Ok(leader),
        _ => Err(format!(
            "not ready: {voters} voters, {blobs_up} blob nodes up"
        )),
    }
}

async fn gateway_answers(url: &str) -> Result<(), String> {
    let response = reqwest::get(format!("{url}/v2/"))
        .await
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(format!("GET /v2/: {status}")),
    }
}

/// Kills the meta leader and blob-1 together, then pulls through gateway 2. Returns timings.
async fn exercise(run: &DockerRun, cluster: &Cluster) -> Result<String, String> {
    let started = Instant::now();
    let deadline = started + READY;
    for url in &cluster.urls {
        until("gateway", deadline, || gateway_answers(url)).await?;
    }
    until("cluster", deadline, || async {
        is_ready(&cluster_status(run).await?)
    })
    .await?;
    until("policy", deadline, || {
        admin(run, &["policy", "--replicas", "2"])
    })
    .await?;
    let pusher = Registry::new(cluster.urls[0].clone());
    let image: PushedImage = until("push", deadline, || {
        pusher.push_image("containers/failover", "v1", 300_000)
    })
    .await?;
    let ready = started.elapsed();

    let status = cluster_status(run).await?;
    let leader = status["leader_id"]
        .as_u64()
        .filter(|id| (1..=3).contains(id))
        .ok_or_else(|| format!("no leader in {status}"))?;
    let policy = &status["map"]["policy"]["replicas"];
    if policy != 2 {
        return Err(format!("replication policy is {policy}, not 2"));
    }
    let killed = Instant::now();
    for container in [&cluster.metas[leader as usize - 1], &cluster.blobs[0]] {
        container
            .stop_with_timeout(Some(0))
            .await
            .map_err(|e| format!("stopping {}: {e}", container.id()))?;
    }
    let puller = Registry::new(cluster.urls[1].clone());
    until("pull after the kills", killed + FAILOVER, || {
        puller.verify_image(&image)
    })
    .await?;
    Ok(format!(
        "ready and pushed in {:.1} s; killed meta-{leader} (leader) and blob-1; \
         byte-identical pull through gateway 2 {:.1} s later",
        ready.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    ))
}

async fn scenario(run: &DockerRun) -> Result<String, String> {
    let cluster = start_cluster(run).await?;
    let outcome = exercise(run, &cluster).await;
    // Logs while the containers still exist (the cluster's drop removes them).
    outcome.map_err(|e| format!("{e}\n{}", run.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_survives_the_meta_leader_and_a_blob_node_dying_at_two_replicas() {
    let run = DockerRun::create().unwrap_or_else(|e| panic!("{e}"));
    match tokio::time::timeout(BUDGET, scenario(&run)).await {
        Ok(Ok(report)) => eprintln!("{report}"),
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the scenario took more than {} s", BUDGET.as_secs()),
    }
}

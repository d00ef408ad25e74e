//! A smoke test of `docker-compose.yml` itself: `docker-compose up` under a project name of the
//! test's own, a push through one gateway, a byte-identical pull through the other, then
//! `docker-compose down -v` in a guard that runs on failure too. Needs the locally built
//! `wharf:dev` (`scripts/build-image.sh`); nothing is pulled.
//!
//! The compose file publishes the gateways on the fixed ports 127.0.0.1:5000 and 5001, by design.
//! docker-compose v1 (Debian's) concatenates `ports` from an override file with the base file's
//! and has no `!override` tag, so an override cannot take those away (checked with `config`): the
//! test runs a copy of the file whose gateway ports are ephemeral (`127.0.0.1::5000`), else
//! unchanged, and reads them with `docker-compose port`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{until, Registry};

const COMPOSE: &str = "docker-compose";
const IMAGE: &str = "wharf:dev";
const GATEWAYS: [&str; 2] = ["gateway-1", "gateway-2"];
const GATEWAY_PORT: u16 = 5000;
const COMMAND: Duration = Duration::from_secs(120);
const READY: Duration = Duration::from_secs(120);
const BUDGET: Duration = Duration::from_secs(240);

/// A compose project of the test's own; `down -v` on drop removes its containers, network and
/// volumes.
struct ComposeProject {
    name: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl ComposeProject {
    /// Writes the repository's compose file with ephemeral gateway ports into a temp dir.
    fn prepare() -> Result<ComposeProject, String> {
        let image = std::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(image, Ok(status) if status.success()) {
            return Err(format!(
                "{IMAGE} must be built first (scripts/build-image.sh)"
            ));
        }
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
        let text = std::fs::read_to_string(&source).map_err(|e| format!("{source:?}: {e}"))?;
        let (text, remapped) = ephemeral_ports(&text);
        if remapped != GATEWAYS.len() {
            return Err(format!(
                "expected {} fixed gateway ports `\"127.0.0.1:PORT:{GATEWAY_PORT}\"` in \
                 docker-compose.yml, found {remapped}",
                GATEWAYS.len()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = dir.path().join("docker-compose.yml");
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        Ok(ComposeProject {
            name: format!("wharfsmoke{:08x}", rand::random::<u32>()),
            file,
            _dir: dir,
        })
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(COMPOSE);
        command
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(&self.file)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `docker-compose ARGS` for at most [`COMMAND`]; its stdout.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = tokio::time::timeout(COMMAND, self.command(args).output())
            .await
            .map_err(|_| format!("{COMPOSE} {args:?} timed out"))?
            .map_err(|e| format!("{COMPOSE} {args:?}: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(format!(
                "{COMPOSE} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// `http://127.0.0.1:PORT` of a gateway, from `docker-compose port`.
    async fn gateway_url(&self, service: &str) -> Result<String, String> {
        let port = GATEWAY_PORT.to_string();
        let address = self.run(&["port", service, &port]).await?;
        match address.rsplit_once(':') {
            Some(("127.0.0.1", port)) if port.parse::<u16>().is_ok() => {
                Ok(format!("http://127.0.0.1:{port}"))
            }
            _ => Err(format!(
                "{service} is published at {address:?}, not 127.0.0.1"
            )),
        }
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let status = std::process::Command::new(COMPOSE)
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(&self.file)
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => {}
            other => eprintln!("{COMPOSE} down for {}: {other:?}", self.name),
        }
    }
}

/// Rewrites every `"127.0.0.1:PORT:5000"` to `"127.0.0.1::5000"`; the text and how many changed.
fn ephemeral_ports(text: &str) -> (String, usize) {
    let suffix = format!(":{GATEWAY_PORT}\"");
    let mut remapped = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let Some(start) = line.find("\"127.0.0.1:") else {
                return line.to_owned();
            };
            let host_port_at = start + "\"127.0.0.1:".len();
            let Some(length) = line[host_port_at..].find(&suffix) else {
                return line.to_owned();
            };
            let host_port = &line[host_port_at..host_port_at + length];
            if host_port.is_empty() || !host_port.bytes().all(|b| b.is_ascii_digit()) {
                return line.to_owned();
            }
            remapped += 1;
            format!(
                "{}{}",
                &line[..host_port_at],
                &line[host_port_at + length..]
            )
        })
        .collect();
    (lines.join("\n") + "\n", remapped)
}

async fn smoke(project: &ComposeProject) -> Result<String, String> {
    let started = Instant::now();
    project.run(&["up", "--detach", "--no-build"]).await?;
    let mut urls = Vec::new();
    for service in GATEWAYS {
        urls.push(project.gateway_url(service).await?);
    }
    let deadline = started + READY;
    let pusher = Registry::new(urls[0].clone());
    let image = until("push through gateway-1", deadline, || {
        pusher.push_image("compose/smoke", "v1", 200_000)
    })
    .await?;
    let pushed = started.elapsed();
    let puller = Registry::new(urls[1].clone());
    until("pull through gateway-2", deadline, || {
        puller.verify_image(&image)
    })
    .await?;
    Ok(format!(
        "up and pushed in {:.1} s, pulled byte-identical in {:.1} s",
        pushed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_file_starts_a_cluster_that_pushes_through_one_gateway_and_pulls_through_the_other()
{
    let project = ComposeProject::prepare().unwrap_or_else(|e| panic!("{e}"));
    let outcome = tokio::time::timeout(BUDGET, smoke(&project)).await;
    let logs = match &outcome {
        Ok(Ok(_)) => String::new(),
        _ => project
            .run(&["logs", "--no-color", "--tail", "15"])
            .await
            .unwrap_or_else(|e| e),
    };
    match outcome {
        Ok(Ok(report)) => eprintln!("{report}"),
        Ok(Err(e)) => panic!("{e}\n{logs}"),
        Err(_) => panic!(
            "the smoke test took more than {} s\n{logs}",
            BUDGET.as_secs()
        ),
    }
}

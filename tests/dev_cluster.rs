//! `wharf dev cluster|kill|restart` end to end: a real multi-process cluster (1 meta, 2 blob
//! nodes, 2 gateways), a blob pushed through one gateway and read through the other, one blob
//! node killed and restarted, then everything stopped. Every process is killed and reaped even
//! when an assertion fails (the guard's `Drop`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_model::Digest;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_wharf");

/// The `wharf dev cluster` supervisor; SIGTERM, then SIGKILL, on drop, and SIGKILL to every member
/// pid still recorded in cluster.json (in case the supervisor itself failed).
struct DevCluster {
    dir: PathBuf,
    supervisor: Child,
    _temp: tempfile::TempDir,
}

impl DevCluster {
    fn start(meta: u32, blob: u32, gateways: u32) -> DevCluster {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("cluster");
        let supervisor = Command::new(BINARY)
            .args(["dev", "cluster", "--meta", &meta.to_string()])
            .args([
                "--blob",
                &blob.to_string(),
                "--gateways",
                &gateways.to_string(),
            ])
            .arg("--dir")
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wharf dev cluster");
        DevCluster {
            dir,
            supervisor,
            _temp: temp,
        }
    }

    fn cluster_json(&self) -> Option<Value> {
        let bytes = std::fs::read(self.dir.join("cluster.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Waits for cluster.json to say `ready`; fails early if the supervisor exits.
    async fn wait_ready(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(file) = self.cluster_json().filter(|f| f["state"] == "ready") {
                return file;
            }
            if let Ok(Some(status)) = self.supervisor.try_wait() {
                panic!("wharf dev cluster exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "dev cluster not ready in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `wharf dev <op> --member <member>` to completion within a deadline.
    async fn member_command(&self, op: &str, member: &str) {
        let run = tokio::process::Command::new(BINARY)
            .args(["dev", op, "--member", member, "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(90), run)
            .await
            .unwrap_or_else(|_| panic!("wharf dev {op} timed out"))
            .expect("run wharf dev");
        assert!(
            output.status.success(),
            "wharf dev {op} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn member(&self, name: &str) -> Value {
        let file = self.cluster_json().expect("cluster.json");
        let members = file["members"].as_array().expect("members").clone();
        members
            .into_iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// SIGTERM to the supervisor and its exit status, within a deadline.
    async fn stop(&mut self, timeout: Duration) -> std::process::ExitStatus {
        signal(self.supervisor.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.supervisor.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "dev cluster did not stop in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Ok(None) = self.supervisor.try_wait() {
            signal(self.supervisor.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.supervisor.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.supervisor.kill();
            let _ = self.supervisor.wait();
        }
        let members = self
            .cluster_json()
            .and_then(|file| file["members"].as_array().cloned())
            .unwrap_or_default();
        for pid in members.iter().filter_map(|m| m["pid"].as_u64()) {
            signal(pid as u32, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid this test started (directly or through the supervisor).
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Whether a process with this pid exists (a reaped child does not).
fn alive(pid: u64) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn gateway_urls(file: &Value) -> Vec<String> {
    let urls = file["gateways"].as_array().expect("gateways");
    urls.iter()
        .map(|url| url.as_str().expect("url").to_owned())
        .collect()
}

async fn get_blob(client: &reqwest::Client, gateway: &str, digest: &Digest) -> (u16, Vec<u8>) {
    let url = format!("{gateway}/v2/dev/blob/blobs/{digest}");
    let response = client.get(url).send().await.expect("GET blob");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

fn tcp_accepts(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(2))
        .is_ok()
}

#[tokio::test]
async fn dev_cluster_pushes_pulls_kills_and_restarts() {
    let mut cluster = DevCluster::start(1, 2, 2);
    let file = cluster.wait_ready(Duration::from_secs(120)).await;
    let gateways = gateway_urls(&file);
    assert_eq!(gateways.len(), 2, "{file}");
    assert_eq!(file["members"].as_array().map(Vec::len), Some(5));

    // Push through gateway 1 (monolithic POST ?digest=), read through gateway 2.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let blob = b"a blob pushed through one gateway of a wharf dev cluster".to_vec();
    let digest = Digest::sha256_of(&blob);
    let push = client
        .post(format!(
            "{}/v2/dev/blob/blobs/uploads/?digest={digest}",
            gateways[0]
        ))
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .expect("POST blob");
    assert_eq!(push.status().as_u16(), 201);
    assert_eq!(
        get_blob(&client, &gateways[1], &digest).await,
        (200, blob.clone())
    );

    // Kill a blob node: the supervisor SIGKILLs and reaps it and records it.
    let before = cluster.member("blob-2");
    let old_pid = before["pid"].as_u64().expect("blob-2 pid");
    cluster.member_command("kill", "blob-2").await;
    let killed = cluster.member("blob-2");
    assert_eq!(killed["state"], "killed");
    assert!(killed["pid"].is_null());
    assert!(!alive(old_pid), "blob-2's old process is gone");

    // Restart it: same arguments, same data, same address, a new pid.
    cluster.member_command("restart", "blob-2").await;
    let restarted = cluster.member("blob-2");
    assert_eq!(restarted["state"], "running");
    assert_eq!(restarted["grpc"], before["grpc"]);
    assert_eq!(restarted["args"], before["args"]);
    let new_pid = restarted["pid"].as_u64().expect("new pid");
    assert_ne!(new_pid, old_pid);
    assert!(alive(new_pid));
    assert!(tcp_accepts(restarted["grpc"].as_str().expect("grpc")));
    // Whichever node holds the blob, the whole cluster is back: it reads again.
    assert_eq!(get_blob(&client, &gateways[0], &digest).await, (200, blob));

    let pids: Vec<u64> = (cluster.cluster_json().expect("cluster.json")["members"])
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["pid"].as_u64())
        .collect();
    assert_eq!(pids.len(), 5);
    let status = cluster.stop(Duration::from_secs(60)).await;
    assert!(status.success(), "supervisor exit status {status}");
    let file = cluster.cluster_json().expect("cluster.json");
    assert_eq!(file["state"], "stopped");
    for pid in pids {
        assert!(!alive(pid), "member pid {pid} was stopped and reaped");
    }
    assert!(!Path::new(&cluster.dir.join("control.sock")).exists());
}

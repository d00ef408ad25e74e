//! [`DevCluster`]: a `wharf dev cluster` supervisor and its member processes, for tests of real
//! multi-process clusters. Everything it started is killed and reaped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BINARY: &str = env!("CARGO_BIN_EXE_wharf");

/// The `wharf dev cluster` supervisor; SIGTERM, then SIGKILL, on drop, and SIGKILL to every member
/// pid still recorded in cluster.json (in case the supervisor itself failed).
pub struct DevCluster {
    pub dir: PathBuf,
    supervisor: Child,
    _temp: tempfile::TempDir,
}

impl DevCluster {
    pub fn start(meta: u32, blob: u32, gateways: u32) -> DevCluster {
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

    pub fn cluster_json(&self) -> Option<Value> {
        let bytes = std::fs::read(self.dir.join("cluster.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Waits for cluster.json to say `ready`; fails early if the supervisor exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Value {
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
    pub async fn member_command(&self, op: &str, member: &str) {
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

    pub fn member(&self, name: &str) -> Value {
        let file = self.cluster_json().expect("cluster.json");
        let members = file["members"].as_array().expect("members").clone();
        members
            .into_iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// SIGTERM to the supervisor and its exit status, within a deadline.
    pub async fn stop(&mut self, timeout: Duration) -> std::process::ExitStatus {
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

pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid this test started (directly or through the supervisor).
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Whether a process with this pid exists (a reaped child does not).
pub fn alive(pid: u64) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

impl DevCluster {
    /// The gRPC addresses of the meta members.
    pub fn meta_addrs(&self) -> Vec<String> {
        let file = self.cluster_json().expect("cluster.json");
        file["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter(|m| m["role"] == "meta")
            .filter_map(|m| m["grpc"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every member's name.
    pub fn member_names(&self) -> Vec<String> {
        let file = self.cluster_json().expect("cluster.json");
        file["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect()
    }
}

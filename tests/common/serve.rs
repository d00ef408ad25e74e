//! `wharf serve` as a child process on port 0 with a config file, for tests that also drive
//! `wharf admin` against it and look at its data directory. The process is killed and reaped on
//! drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const START_DEADLINE: Duration = Duration::from_secs(30);

pub struct Serve {
    child: Child,
    extra: Vec<String>,
    pub dir: tempfile::TempDir,
    /// `http://host:port` of the OCI API.
    pub base: String,
    /// The internal gRPC address `wharf admin --meta` takes.
    pub grpc: String,
}

/// `wharf serve` over `dir` (its `wharf.toml`, `data/`, `addr.json`, `serve.log`), on port 0.
fn spawn(dir: &Path, extra: &[String]) -> Child {
    let _ = std::fs::remove_file(dir.join("addr.json"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .expect("log file");
    Command::new(WHARF)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(dir.join("wharf.toml"))
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--addr-file")
        .arg(dir.join("addr.json"))
        .args([
            "--log",
            "info,wharf=debug,meta_node=debug,blob_node=debug,openraft=warn",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("spawn wharf serve")
}

impl Serve {
    /// Starts `wharf serve` with `config` (TOML) and `extra` flags; waits for its addresses.
    pub async fn start(config: &str, extra: &[&str]) -> Serve {
        Serve::start_prepared(config, extra, |_| {}).await
    }

    /// As [`Serve::start`], calling `prepare` with the directory (`wharf.toml`, `data/`) first.
    pub async fn start_prepared(
        config: &str,
        extra: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path());
        std::fs::write(dir.path().join("wharf.toml"), config).expect("write config");
        let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
        let child = spawn(dir.path(), &extra);
        let mut serve = Serve {
            child,
            extra,
            dir,
            base: String::new(),
            grpc: String::new(),
        };
        serve.wait_ready().await;
        serve
    }

    /// SIGKILL, reaped; then `wharf serve` again over the same config and data (new ports).
    pub async fn kill9_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.child = spawn(self.dir.path(), &self.extra);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let addr_file = self.dir.path().join("addr.json");
        let deadline = Instant::now() + START_DEADLINE;
        let (base, grpc) = super::serve_addresses(&addr_file, deadline)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        (self.base, self.grpc) = (base, grpc);
    }

    /// The `serve` process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The blob node's directory (`blobs/`, `uploads/`, `trash/`).
    pub fn blob_dir(&self) -> PathBuf {
        self.dir.path().join("data").join("blob")
    }

    /// Runs `wharf admin --meta <grpc> ARGS`.
    pub fn admin_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(WHARF)
            .args(["admin", "--meta", &self.grpc])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("wharf admin runs")
    }

    /// Runs `wharf admin --meta <grpc> ARGS` with `input` on its stdin; returns stdout, panics
    /// when it fails.
    pub fn admin_with_input(&self, args: &[&str], input: &str) -> String {
        let output = super::admin_with_stdin(&self.grpc, args, Some(input));
        assert!(
            output.status.success(),
            "wharf admin {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `wharf admin --meta <grpc> ARGS`; returns stdout, panics (with both streams) when it
    /// fails.
    pub fn admin(&self, args: &[&str]) -> String {
        let output = self.admin_output(args);
        assert!(
            output.status.success(),
            "wharf admin {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `wharf admin ARGS` whose stdout is one JSON document.
    pub fn admin_json(&self, args: &[&str]) -> Value {
        let out = self.admin(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Regular files under `dir` (recursively) and their total size.
pub fn files_under(dir: &Path) -> (usize, u64) {
    let mut count = 0;
    let mut bytes = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                count += 1;
                bytes += meta.len();
            }
        }
    }
    (count, bytes)
}

/// A `[gc]` section that collects within a second or two: sweeps every 100 ms, uploads get
/// `grace_ms` to be referenced, sessions expire after `expiry_ms`, and orphan staging files
/// go after `stale_ms`.
pub fn fast_gc_config(grace_ms: u64, expiry_ms: u64, stale_ms: u64) -> String {
    format!(
        "[gc]\ninterval_ms = 100\nupload_grace_ms = {grace_ms}\nupload_expiry_ms = {expiry_ms}\nstale_upload_after_ms = {stale_ms}\n"
    )
}

//! Starting, signalling and stopping member processes.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{answers_v2, io_error, DevError, MemberRecord, MemberState, Role};

/// Spawns `record`'s member, waits until it has written its `--addr-file` (and, for a gateway,
/// answers `GET /v2/`), then records its pid and addresses and pins those addresses in its
/// `args`. On failure the process is killed and reaped before the error returns.
pub(super) async fn start_member(
    binary: &Path,
    record: &mut MemberRecord,
    dir: &Path,
    timeout: Duration,
) -> Result<Child, DevError> {
    let addr_file = dir.join(format!("{}.addr.json", record.name));
    let _ = std::fs::remove_file(&addr_file);
    std::fs::create_dir_all(&record.data)
        .map_err(io_error(format!("cannot create {}", record.data.display())))?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record.log)
        .map_err(io_error(format!("cannot open {}", record.log.display())))?;
    let _ = writeln!(
        log,
        "--- wharf dev: starting {} {:?}",
        record.name, record.args
    );
    let stderr = log
        .try_clone()
        .map_err(io_error(format!("cannot open {}", record.log.display())))?;
    let mut child = Command::new(binary)
        .args(&record.args)
        .arg("--addr-file")
        .arg(&addr_file)
        // The log is a file: no terminal colour codes in it.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .map_err(io_error(format!("cannot start {}", record.name)))?;
    match wait_ready(&mut child, record, &addr_file, Instant::now() + timeout).await {
        Ok(()) => Ok(child),
        Err(error) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(error)
        }
    }
}

async fn wait_ready(
    child: &mut Child,
    record: &mut MemberRecord,
    addr_file: &Path,
    deadline: Instant,
) -> Result<(), DevError> {
    let addrs = loop {
        if let Some(addrs) = read_addr_file(addr_file) {
            break addrs;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DevError::Exited {
                name: record.name.clone(),
                status: status.to_string(),
                log: record.log.clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(DevError::Timeout(format!(
                "{} to become ready",
                record.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    record.http = addrs.http;
    record.grpc = addrs.grpc;
    record.blob_http = addrs.blob_http;
    record.pid = child.id();
    record.state = MemberState::Running;
    pin_addresses(record);
    if let (Role::Gateway, Some(http)) = (record.role, record.http.clone()) {
        while !answers_v2(&http).await {
            if Instant::now() >= deadline {
                return Err(DevError::Timeout(format!(
                    "{} to answer GET /v2/",
                    record.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct AddrFile {
    http: Option<String>,
    grpc: Option<String>,
    #[serde(default)]
    blob_http: Option<String>,
}

fn read_addr_file(path: &Path) -> Option<AddrFile> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Replaces the port-0 listen addresses in `args` by the bound ones, so a restart comes back
/// where the rest of the cluster (Raft membership, the cluster map, clients) expects it.
fn pin_addresses(record: &mut MemberRecord) {
    let pins = [
        ("--grpc-listen", &record.grpc),
        ("--listen", &record.http),
        ("--blob-http-listen", &record.blob_http),
    ];
    for (flag, bound) in pins {
        let Some(bound) = bound else { continue };
        if let Some(index) = record.args.iter().position(|arg| arg == flag) {
            if let Some(value) = record.args.get_mut(index + 1) {
                value.clone_from(bound);
            }
        }
    }
}

/// Sends `signal` (`TERM`, `KILL`) to `pid` with kill(1): this crate has no libc binding.
pub(super) async fn signal_pid(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

/// SIGTERM to each, then waits up to `grace` for all; whatever is left gets SIGKILL. All reaped.
pub(super) async fn stop_children(mut children: Vec<Child>, grace: Duration) {
    for child in &mut children {
        let terminated = match child.id() {
            Some(pid) => signal_pid(pid, "TERM").await,
            None => true,
        };
        if !terminated {
            let _ = child.start_kill();
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    for child in &mut children {
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_addresses_replace_port_zero() {
        let mut record = MemberRecord {
            name: "blob-1".into(),
            role: Role::Blob,
            id: 1,
            http: None,
            grpc: Some("127.0.0.1:4242".into()),
            blob_http: Some("127.0.0.1:4343".into()),
            pid: None,
            state: MemberState::Running,
            data: "/d/blob-1".into(),
            log: "/d/blob-1.log".into(),
            args: [
                "blob",
                "--grpc-listen",
                "127.0.0.1:0",
                "--meta",
                "m:1",
                "--blob-http-listen",
                "127.0.0.1:0",
            ]
            .map(String::from)
            .to_vec(),
        };
        pin_addresses(&mut record);
        assert_eq!(record.args[2], "127.0.0.1:4242");
        assert_eq!(record.args[4], "m:1");
        assert_eq!(record.args[6], "127.0.0.1:4343");
    }
}

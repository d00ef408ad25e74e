//! [`ServeProcess`]: the real `wharf serve` binary as a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestClusterError;

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut condition: F,
) -> Result<(), TestClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TestClusterError::Timeout(format!(
                "timed out waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `wharf serve` child process over a data dir. Killed and reaped on drop.
pub struct ServeProcess {
    binary: PathBuf,
    data: PathBuf,
    /// More `serve` arguments, given at every start.
    extra: Vec<String>,
    child: Option<Child>,
    http_addr: String,
}

impl ServeProcess {
    /// Starts `binary serve` on port 0 over `data` and waits until it reports its address.
    pub async fn spawn(binary: &Path, data: &Path) -> Result<ServeProcess, TestClusterError> {
        ServeProcess::spawn_with(binary, data, &[]).await
    }

    /// [`ServeProcess::spawn`] with more `serve` arguments (e.g. `--gc-interval-ms 500`).
    pub async fn spawn_with(
        binary: &Path,
        data: &Path,
        extra: &[&str],
    ) -> Result<ServeProcess, TestClusterError> {
        let mut process = ServeProcess {
            binary: binary.to_owned(),
            data: data.to_owned(),
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            child: None,
            http_addr: String::new(),
        };
        process.start().await?;
        Ok(process)
    }

    async fn start(&mut self) -> Result<(), TestClusterError> {
        let addr_file = self.data.with_extension("addr.json");
        let _ = std::fs::remove_file(&addr_file);
        let child = Command::new(&self.binary)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(&self.data)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        self.child = Some(child);
        let mut http = None;
        wait_until(
            "wharf serve to report its address",
            Duration::from_secs(60),
            || {
                http = std::fs::read(&addr_file)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                    .and_then(|value| value["http"].as_str().map(str::to_owned));
                let exited = self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                let done = http.is_some() || exited;
                async move { done }
            },
        )
        .await?;
        match http {
            Some(http) => {
                self.http_addr = http;
                Ok(())
            }
            None => Err(TestClusterError::Timeout(
                "wharf serve exited before it was ready".into(),
            )),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap: no shutdown code runs.
    pub fn kill9(&mut self) -> Result<(), TestClusterError> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            let result = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            if result != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus, TestClusterError> {
        let Some(mut child) = self.child.take() else {
            return Err(TestClusterError::Timeout("process is not running".into()));
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        Ok(child.wait()?)
    }

    /// Starts the binary again over the same data (after a kill).
    pub async fn restart(&mut self) -> Result<(), TestClusterError> {
        self.kill9()?;
        self.start().await
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

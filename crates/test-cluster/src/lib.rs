//! Wharf for tests. [`InProcessServe`] runs the `serve` roles inside the test's runtime on port-0
//! listeners over a temp dir, and can restart them on the same data. [`ServeProcess`] runs the real
//! binary as a child process (for kill -9 and real-client tests), always reaped on drop.
//!
//! [`InProcessCluster`] also injects faults: [`InProcessCluster::partition`] cuts Raft traffic
//! between groups of meta voters until [`InProcessCluster::heal`], and
//! [`InProcessCluster::meta_views`] reads each voter's own view of leadership.
//!
//! Nothing here binds a fixed port or sleeps to synchronise: readiness is a condition polled
//! against a deadline.

mod cluster;
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use cluster::{data_dir, InProcessCluster, Member, Options, Role};
pub use meta_node::VoteView;
pub use process::{wait_until, ServeProcess};

#[derive(Debug, thiserror::Error)]
pub enum TestClusterError {
    #[error("cannot start: {0}")]
    Start(#[from] wharf::StartError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Timeout(String),
}

/// `wharf serve` roles in this process, over a temp dir kept until drop.
pub struct InProcessServe {
    dir: tempfile::TempDir,
    running: Option<wharf::Running>,
    http_addr: SocketAddr,
    redirecting: bool,
}

impl InProcessServe {
    pub async fn start() -> Result<InProcessServe, TestClusterError> {
        InProcessServe::start_in(false).await
    }

    /// Like [`start`](InProcessServe::start), with the blob node's endpoint for redirected GETs
    /// on a loopback port and the gateway redirecting every blob GET there (no size threshold).
    pub async fn start_redirecting() -> Result<InProcessServe, TestClusterError> {
        InProcessServe::start_in(true).await
    }

    async fn start_in(redirecting: bool) -> Result<InProcessServe, TestClusterError> {
        let dir = tempfile::tempdir()?;
        let (running, http_addr) = start_in(dir.path(), redirecting).await?;
        Ok(InProcessServe {
            dir,
            running: Some(running),
            http_addr,
            redirecting,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops every role gracefully and starts them again on the same data (new ports).
    pub async fn restart(&mut self) -> Result<(), TestClusterError> {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        let (running, http_addr) = start_in(self.dir.path(), self.redirecting).await?;
        self.running = Some(running);
        self.http_addr = http_addr;
        Ok(())
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

async fn start_in(
    dir: &Path,
    redirecting: bool,
) -> Result<(wharf::Running, SocketAddr), TestClusterError> {
    let mut config = wharf::WharfConfig {
        listen: "127.0.0.1:0".into(),
        grpc_listen: "127.0.0.1:0".into(),
        data: PathBuf::from(dir),
        ..wharf::WharfConfig::default()
    };
    if redirecting {
        config.blob_http_listen = Some("127.0.0.1:0".into());
        config.gateway.blob_redirect = true;
        config.gateway.blob_redirect_min_bytes = 0;
    }
    let running = wharf::start_serve(&config).await?;
    let http_addr = running
        .http_addr
        .ok_or_else(|| TestClusterError::Timeout("serve reported no HTTP address".into()))?;
    Ok((running, http_addr))
}

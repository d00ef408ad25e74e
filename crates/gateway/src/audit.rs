//! The audit trail: who pushed, pulled, deleted, logged in, was refused or changed access, from
//! where. Each event is logged under the `wharf::audit` tracing target and, when `audit_log` is
//! set, appended as one JSON line to that file by a background writer (flushed after each batch),
//! so a slow disk never holds up a request. Events carry names, digests and addresses only:
//! never a secret or a token.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Events queued for the file at most; beyond that they are counted as dropped (and still
/// logged through tracing).
const QUEUE: usize = 16 * 1024;

/// One audited event.
pub(crate) struct Event<'a> {
    /// Account name or `anonymous`.
    pub actor: &'a str,
    pub client: Option<IpAddr>,
    /// `push`, `pull`, `delete`, `login`, `denied`, `admin`.
    pub action: &'a str,
    pub repository: &'a str,
    /// A tag, digest, account or policy, or an outcome.
    pub target: &'a str,
    /// The HTTP status answered (0 when not applicable).
    pub status: u16,
}

#[derive(Clone, Default)]
pub(crate) struct Audit {
    file: Option<mpsc::Sender<String>>,
}

impl Audit {
    /// An audit trail appending to `path` when given. Needs a tokio runtime for the writer.
    pub fn new(path: Option<PathBuf>) -> Audit {
        let Some(path) = path else {
            return Audit::default();
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: the audit file is not written");
            return Audit::default();
        };
        let (sender, receiver) = mpsc::channel(QUEUE);
        runtime.spawn(write_lines(path, receiver));
        Audit { file: Some(sender) }
    }

    pub fn record(&self, event: Event<'_>) {
        let client = event.client.map(|ip| ip.to_string());
        tracing::info!(
            target: "wharf::audit",
            actor = event.actor,
            client = client.as_deref().unwrap_or(""),
            action = event.action,
            repository = event.repository,
            target = event.target,
            status = event.status,
            "audit"
        );
        metrics::counter!("wharf_audit_events_total", "action" => event.action.to_owned())
            .increment(1);
        if let Some(file) = &self.file {
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as u64);
            let line = json!({
                "time_ms": millis,
                "actor": event.actor,
                "client": client,
                "action": event.action,
                "repository": event.repository,
                "target": event.target,
                "status": event.status,
            })
            .to_string();
            if file.try_send(line).is_err() {
                metrics::counter!("wharf_audit_dropped_total").increment(1);
            }
        }
    }
}

async fn write_lines(path: PathBuf, mut receiver: mpsc::Receiver<String>) {
    let opened = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await;
    let mut file = match opened {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot open the audit log");
            return;
        }
    };
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, 256).await > 0 {
        let mut bytes = Vec::new();
        for line in batch.drain(..) {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let written = async {
            file.write_all(&bytes).await?;
            file.flush().await
        };
        if let Err(error) = written.await {
            tracing::error!(path = %path.display(), %error, "cannot write the audit log");
        }
    }
}

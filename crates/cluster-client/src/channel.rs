//! Channel construction shared by every client, and the process-wide cluster TLS setting.
//!
//! With [`set_cluster_tls`] installed (a `wharf` process whose config has `[cluster_tls]`), every
//! `host:port` address becomes `https://host:port` and the channel presents the member
//! certificate; the server's certificate must be signed by the cluster CA and name `host`.
//! Channels made before the setting keep what they had, so it is installed once, at startup,
//! before any client exists.

use std::sync::RwLock;
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gRPC address {addr:?}: {reason}")]
pub struct ChannelError {
    pub addr: String,
    pub reason: String,
}

/// The client TLS every new channel uses; `None`: plaintext.
static CLUSTER_TLS: RwLock<Option<ClientTlsConfig>> = RwLock::new(None);

/// Installs (or, with `None`, removes) the client TLS used by every channel created afterwards:
/// [`lazy_channel`] (so [`crate::MetaClient`], [`crate::AdminClient`], [`crate::BlobClient`])
/// and [`cluster_endpoint`] (the Raft transport).
pub fn set_cluster_tls(tls: Option<ClientTlsConfig>) {
    match CLUSTER_TLS.write() {
        Ok(mut current) => *current = tls,
        Err(poisoned) => *poisoned.into_inner() = tls,
    }
}

/// The installed client TLS, if any.
pub fn cluster_tls() -> Option<ClientTlsConfig> {
    match CLUSTER_TLS.read() {
        Ok(current) => current.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// An endpoint for `addr` with the process's cluster TLS applied: `host:port` becomes
/// `https://host:port` with TLS installed, `http://host:port` without; a full URI is taken as
/// given (TLS applies to `https://` ones). Callers add their own timeouts and windows.
pub fn cluster_endpoint(addr: &str) -> Result<Endpoint, ChannelError> {
    let invalid = |reason: String| ChannelError {
        addr: addr.to_owned(),
        reason,
    };
    let tls = cluster_tls();
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else if tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| invalid(e.to_string()))?;
    match tls {
        Some(tls) if endpoint.uri().scheme_str() == Some("https") => endpoint
            .tls_config(tls)
            .map_err(|e| invalid(format!("TLS: {e}"))),
        _ => Ok(endpoint),
    }
}

/// A channel to `addr` (`host:port` or a full URI; see [`cluster_endpoint`]) that connects on
/// first use and reconnects after failures.
pub fn lazy_channel(addr: &str) -> Result<Channel, ChannelError> {
    Ok(cluster_endpoint(addr)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        // Blob chunks are 1 MiB messages: 1 MiB HTTP/2 frames carry one in one frame instead of
        // 64 of the 16 KiB default (measured in benches/README.md).
        .max_frame_size(1024 * 1024)
        .connect_lazy())
}

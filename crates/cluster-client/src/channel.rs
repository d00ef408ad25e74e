//! Channel construction shared by every client.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gRPC address {addr:?}: {reason}")]
pub struct ChannelError {
    pub addr: String,
    pub reason: String,
}

/// A channel to `addr` (`host:port` or a full `http://` URI) that connects on first use and
/// reconnects after failures.
pub fn lazy_channel(addr: &str) -> Result<Channel, ChannelError> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| ChannelError {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
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

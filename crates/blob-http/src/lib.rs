//! A blob node's own HTTP endpoint: `GET`/`HEAD /blobs/<digest>?expires=..&sig=..`, the URLs a
//! gateway redirects blob pulls to (`cluster_api::sign_blob_query`), so the bytes go from the
//! node's disk to the client without crossing a gateway.
//!
//! A small HTTP/1.1 server of its own rather than hyper: the body is sent with `sendfile(2)`
//! straight from the page cache to the socket (no copy through user space, which is what a
//! large pull on a small machine is bound by), and hyper owns its sockets. Requests are parsed
//! by `httparse`; one request at a time per connection, kept alive. What it answers:
//! - `200`/`206` with `Content-Length`, `Docker-Content-Digest`, `ETag`, `Accept-Ranges` and, for
//!   a single satisfiable `Range` (`bytes=a-b`, `a-`, `-n`), `Content-Range`; any other `Range`
//!   form is ignored (the whole blob, as RFC 9110 allows); `416` with `bytes */size` when the
//!   range starts past the end;
//! - `403 DENIED` for a missing, wrong or expired signature, `404 BLOB_UNKNOWN`, `400` for a
//!   path or request that is not one (a body, a bad digest), `405` for other methods, `431` for
//!   a request head over 16 KiB; always the registry's JSON error body.
//!
//! A client gets 10 s to send a request head and 30 s of idle time between requests, so a slow
//! or silent client holds no more than its socket; at most [`MAX_CONNECTIONS`] are served at once.

mod http;

// The request-head parser, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub use http::{parse_request_head, RequestHead};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use blob_store::FsBlobStore;
use cluster_api::{BlobUrlKeys, MetaApi};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client has to send a whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may stay idle.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves signed blob GETs from `store` on `listener` until `shutdown` resolves. The key that
/// checks signatures comes from `meta` (`MetaApi::blob_url_key`), fetched on first use.
pub async fn serve(
    listener: TcpListener,
    store: FsBlobStore,
    meta: Arc<dyn MetaApi>,
    shutdown: impl Future<Output = ()>,
) {
    let context = Arc::new(http::Context {
        store,
        keys: BlobUrlKeys::new(meta),
    });
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let context = Arc::clone(&context);
                tokio::spawn(async move {
                    http::connection(stream, &context).await;
                    tracing::trace!(%peer, "blob HTTP connection closed");
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "blob HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

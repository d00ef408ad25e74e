//! The gateway's accept loop, HTTP or HTTPS, with its connection limits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client has to finish the TLS handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the answer to a connection past [`ConnectionLimits::max_connections`] may take to
/// write before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What one client connection may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once. A connection past it is answered `503` (plain HTTP) or
    /// closed (HTTPS, before the handshake) at once.
    pub max_connections: usize,
    /// HTTP/1.1: a request's header must arrive within this (counted from the end of the last
    /// response on a keep-alive connection, so it is also the idle timeout). HTTP/2 streams
    /// are bounded by the connection's keep-alive pings instead.
    pub header_read_timeout: Duration,
    /// Largest request header: HTTP/1.1's read buffer (at least 8 KiB), HTTP/2's header list.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 4_096,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Serves `router` on `listener`, over HTTPS when `tls` is set (HTTP/1.1 and HTTP/2, by ALPN or
/// preface), until `shutdown` resolves; then stops accepting and waits for in-flight requests.
///
/// Every accepted socket gets TCP_NODELAY; each connection (and its TLS handshake, under
/// [`HANDSHAKE_TIMEOUT`]) runs in its own task, so a slow client never holds up accepting, and
/// holds one of `limits.max_connections` permits while it lives. Every request carries the
/// extension [`ConnectInfo<SocketAddr>`] with the client's address. Failures of one connection
/// (a refused handshake, a reset, a header timeout) are logged at `debug`. Metrics: the gauge
/// `wharf_gateway_connections` and the counter `wharf_gateway_connections_refused_total`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    // Cancels handshakes still in progress at shutdown (they have no request in flight).
    let stopping = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let builder = builder(&limits);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Typically out of file descriptors: give connections time to close.
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("wharf_gateway_connections_refused_total").increment(1);
            tracing::debug!(%peer, max = limits.max_connections, "connection refused: at the limit");
            if acceptor.is_none() {
                tokio::spawn(refuse(stream, limits.max_connections));
            }
            continue;
        };
        let connection = Connection {
            acceptor: acceptor.clone(),
            router: router.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            stopping: stopping.clone(),
            _permit: permit,
        };
        tokio::spawn(connection.serve(stream, peer));
    }
    drop(listener);
    stopping.cancel();
    graceful.shutdown().await;
    Ok(())
}

fn builder(limits: &ConnectionLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // A peer that stops answering pings is dropped, its streams with it.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Answers a connection past the limit with a spec-shaped 503 and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = format!(
        r#"{{"errors":[{{"code":"UNAVAILABLE","message":"the gateway is serving its maximum of {max} connections"}}]}}"#
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}

/// What one connection's task needs.
struct Connection {
    acceptor: Option<TlsAcceptor>,
    router: axum::Router,
    builder: Builder<TokioExecutor>,
    watcher: Watcher,
    stopping: CancellationToken,
    /// Given back when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        let open = metrics::gauge!("wharf_gateway_connections");
        open.increment(1.0);
        match self.acceptor.clone() {
            None => self.serve_http(stream, peer).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                let tls_stream = tokio::select! {
                    done = handshake => match done {
                        Ok(Ok(tls_stream)) => Some(tls_stream),
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            None
                        }
                    },
                    () = self.stopping.cancelled() => None,
                };
                if let Some(tls_stream) = tls_stream {
                    self.serve_http(tls_stream, peer).await;
                }
            }
        }
        open.decrement(1.0);
    }

    async fn serve_http<S>(self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        if let Err(error) = self.watcher.watch(connection.into_owned()).await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::tests::test_pki;
    use crate::reload::{https_server_config, ReloadingCertResolver};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn requests_carry_the_client_address_and_shutdown_is_graceful() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_pki(&["127.0.0.1"], "node");
        std::fs::write(dir.path().join("c.pem"), cert).unwrap();
        std::fs::write(dir.path().join("c.key"), key).unwrap();
        let resolver =
            ReloadingCertResolver::load(&dir.path().join("c.pem"), &dir.path().join("c.key"))
                .unwrap();
        let tls = https_server_config(Arc::new(resolver)).unwrap();
        let router = axum::Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            Some(tls),
            ConnectionLimits::default(),
            stop.clone().cancelled_owned(),
        ));

        // A connection that never handshakes must not block the next one.
        let _idle = TcpStream::connect(addr).await.unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(crate::ring_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls_stream = connector.connect(name, tcp).await.unwrap();
        tls_stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tls_stream.read_to_string(&mut response).await.ok();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(&local.to_string()), "{response}");

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("graceful shutdown does not wait on a handshake that never comes")
            .unwrap()
            .unwrap();
    }
}

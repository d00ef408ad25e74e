//! The HTTPS accept loop for the gateway's axum router.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client has to finish the TLS handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over HTTPS (HTTP/1.1 and HTTP/2, by ALPN or preface) on `listener` until
/// `shutdown` resolves, then stops accepting and waits for in-flight requests to finish.
///
/// Every accepted socket gets TCP_NODELAY; each handshake runs in its connection's own task
/// under [`HANDSHAKE_TIMEOUT`], so a slow client never holds up accepting. Every request carries
/// the extension [`ConnectInfo<SocketAddr>`] with the client's address, as
/// `into_make_service_with_connect_info` gives plain-HTTP routers. Failures of one connection
/// (a refused handshake, a reset) are logged at `debug`.
pub async fn serve_https(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    // Cancels handshakes still in progress at shutdown (they have no request in flight).
    let stopping = CancellationToken::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http2().enable_connect_protocol();
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
                tracing::warn!(%error, "HTTPS accept failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let connection = Connection {
            acceptor: acceptor.clone(),
            router: router.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            stopping: stopping.clone(),
        };
        tokio::spawn(connection.serve(stream, peer));
    }
    drop(listener);
    stopping.cancel();
    graceful.shutdown().await;
    Ok(())
}

/// What one connection's task needs.
struct Connection {
    acceptor: TlsAcceptor,
    router: axum::Router,
    builder: Builder<TokioExecutor>,
    watcher: Watcher,
    stopping: CancellationToken,
}

impl Connection {
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream));
        let tls_stream = tokio::select! {
            done = handshake => match done {
                Ok(Ok(tls_stream)) => tls_stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            () = self.stopping.cancelled() => return,
        };
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
        if let Err(error) = self.watcher.watch(connection.into_owned()).await {
            tracing::debug!(%peer, %error, "HTTPS connection ended with an error");
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
        let server = tokio::spawn(serve_https(
            listener,
            router,
            tls,
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

//! Incoming trace context. Every gRPC call runs under a `grpc.server` span whose parent is the
//! caller's span, read from the request metadata (`cluster_client` writes it); the gateway adopts a
//! client's `traceparent` as the parent of its per-request span. The propagator is the global one
//! `telemetry` installs (W3C TraceContext).

use std::task::{Context, Poll};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::context::FutureExt;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tower::layer::util::{Identity, Stack};
use tracing::instrument::Instrumented;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A tonic server builder with [`GrpcServerTraceLayer`] around every service.
pub type TracedServer = Server<Stack<GrpcServerTraceLayer, Identity>>;
/// The router [`TracedServer`] builds.
pub type TracedRouter = Router<Stack<GrpcServerTraceLayer, Identity>>;

/// `tonic::transport::Server::builder()` with a `grpc.server` span per call.
pub fn grpc_server() -> TracedServer {
    // Blob bytes flow in 1 MiB messages (appends and replica pushes come in, reads go out): the
    // receive windows match the clients' (cluster-client's channel) so one stream is not held to
    // hyper's 64 KiB default and a few concurrent streams fit in the connection window.
    Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .max_frame_size(1024 * 1024)
        .layer(GrpcServerTraceLayer)
}

/// Internal traffic that runs all the time: these calls get a span only when the caller sent a
/// trace context, so Raft and heartbeats do not flood the exporter with one-span traces.
const UNTRACED_UNLESS_PARENTED: [&str; 2] = ["/wharf.v1.Raft/", "/wharf.v1.Meta/BlobNodeHeartbeat"];

/// Runs each gRPC call under a `grpc.server` span (field `rpc.method`, the full method path)
/// whose parent is the context found in the request metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcServerTraceLayer;

impl<S> tower::Layer<S> for GrpcServerTraceLayer {
    type Service = GrpcServerTrace<S>;

    fn layer(&self, inner: S) -> GrpcServerTrace<S> {
        GrpcServerTrace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcServerTrace<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcServerTrace<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let parent = remote_parent(request.headers());
        let method = request.uri().path();
        let span = match parent {
            None if UNTRACED_UNLESS_PARENTED
                .iter()
                .any(|prefix| method.starts_with(prefix)) =>
            {
                tracing::Span::none()
            }
            _ => tracing::info_span!("grpc.server", rpc.method = method, otel.kind = "server"),
        };
        if let Some(parent) = parent {
            // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
            let _ = span.set_parent(parent);
        }
        self.inner.call(request).instrument(span)
    }
}

/// Adds the adoption of a client's trace context to the gateway's router: the gateway's
/// per-request span (created inside) becomes a child of the client's span.
pub fn with_http_trace_parent(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(adopt_trace_parent))
}

async fn adopt_trace_parent(request: Request, next: Next) -> Response {
    match remote_parent(request.headers()) {
        // A span with no `tracing` parent takes the current OpenTelemetry context as its parent.
        Some(parent) => next.run(request).with_context(parent).await,
        None => next.run(request).await,
    }
}

/// The caller's context from `headers`, when it names a valid span.
fn remote_parent(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    context.span().span_context().is_valid().then_some(context)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

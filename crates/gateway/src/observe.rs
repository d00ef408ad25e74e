//! The outermost middleware: one tracing span per request (method, path, route kind, repository,
//! status), the `Docker-Distribution-API-Version` header on every response, and Prometheus
//! counters through the `metrics` facade (the binary installs the exporter).
//!
//! Metrics: `wharf_gateway_requests_total{route,method,status}`,
//! `wharf_gateway_request_duration_seconds{route,method}` (time to response headers),
//! `wharf_gateway_bytes_in_total` and `wharf_gateway_bytes_out_total` (blob and manifest bytes).

use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::Empty;
use tracing::Instrument;

use crate::headers::{API_VERSION, API_VERSION_VALUE};

/// The route kind a response answered, set by `dispatch` for this middleware's labels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteKind(pub &'static str);

pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        method = %method,
        path = %request.uri().path(),
        route = Empty,
        repo = Empty,
        status = Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("status", status);
    response
        .headers_mut()
        .insert(API_VERSION, API_VERSION_VALUE);

    let route = response
        .extensions()
        .get::<RouteKind>()
        .map_or("unknown", |kind| kind.0);
    let method = method_label(&method);
    let elapsed = started.elapsed();
    metrics::counter!(
        "wharf_gateway_requests_total",
        "route" => route,
        "method" => method,
        "status" => status.to_string(),
    )
    .increment(1);
    metrics::histogram!(
        "wharf_gateway_request_duration_seconds",
        "route" => route,
        "method" => method,
    )
    .record(elapsed.as_secs_f64());
    tracing::debug!(parent: &span, elapsed_ms = elapsed.as_millis() as u64, "request answered");
    response
}

/// A bounded label: methods outside the API are counted together.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}
